//! Noticing commits to a SQLite database from any process, in nanoseconds.
//!
//! In WAL mode every connection to a database, in any process, shares the
//! *wal-index*: the `-shm` file, mapped into memory. Its first 48 bytes are
//! the wal-index header, which a writer rewrites as the very step that
//! makes a commit visible (`walIndexWriteHdr`: copy 1, a memory barrier,
//! then copy 0; readers begin every transaction by reading it). The header
//! holds `iChange`, incremented by every commit, `mxFrame`, the last valid
//! frame, the WAL salts (changed when the WAL restarts) and a checksum of
//! the rest. The format is documented and stable
//! (<https://www.sqlite.org/walformat.html>, section 2.1).
//!
//! So reading copy 0 of the header and comparing it with the last copy seen
//! tells, without a system call or a lock, whether anything has committed
//! since: once a commit has returned in any process, the next read here
//! shows the new header. A torn read (a writer half-way through copy 0)
//! looks like a change; the caller then reads what changed in a
//! transaction, which SQLite begins only on a consistent header (it
//! compares both copies), so it sees that commit.
//!
//! The header is reached through SQLite's own mapping of the wal-index, on
//! a connection of ours that stays open as long as the [`WalIndex`]: its
//! file handle's `xShmMap` (the VFS interface, public for VFS authors)
//! gives the address of region 0. While that connection is open its
//! process holds a shared lock on the wal-index, so no other process may
//! truncate or recreate it and the mapping stays valid.

use std::ffi::{c_int, c_void};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{ffi, Connection, OpenFlags};

/// The wal-index region SQLite maps (32 KiB; the header is at its start).
const REGION_BYTES: c_int = 32 * 1024;

/// A snapshot of the fields of the wal-index header that change on commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    /// `iChange` (high half) and `mxFrame` (low half).
    change: u64,
    /// `aSalt[0..2]`.
    salt: u64,
    /// `aCksum[0..2]`, the checksum of the header's other fields.
    checksum: u64,
}

/// The last [`Stamp`] the caller has caught up with, readable without a
/// lock. Stored field by field: a reader that sees fields of two stamps
/// mixed finds no match and takes the slow path, which is always correct.
#[derive(Debug, Default)]
pub(super) struct SeenStamp {
    change: AtomicU64,
    salt: AtomicU64,
    checksum: AtomicU64,
}

impl SeenStamp {
    /// Whether `stamp` is the one last stored.
    pub(super) fn matches(&self, stamp: Stamp) -> bool {
        self.change.load(Ordering::Acquire) == stamp.change
            && self.salt.load(Ordering::Acquire) == stamp.salt
            && self.checksum.load(Ordering::Acquire) == stamp.checksum
    }

    /// Records `stamp` as caught up with.
    pub(super) fn store(&self, stamp: Stamp) {
        self.change.store(stamp.change, Ordering::Release);
        self.salt.store(stamp.salt, Ordering::Release);
        self.checksum.store(stamp.checksum, Ordering::Release);
    }
}

/// A connection to a WAL-mode database and the address of its wal-index
/// header.
pub(super) struct WalIndex {
    header: NonNull<u32>,
    /// Owns the mapping `header` points into.
    conn: Mutex<Connection>,
}

// SAFETY: `header` points into a shared-memory mapping that stays valid
// while `conn` is open, i.e. as long as `self`. It is only ever read, with
// volatile reads of aligned `u32`s (other processes write it concurrently,
// as SQLite's own readers expect). The connection is behind a `Mutex`.
unsafe impl Send for WalIndex {}
// SAFETY: see `Send`.
unsafe impl Sync for WalIndex {}

impl std::fmt::Debug for WalIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalIndex").finish_non_exhaustive()
    }
}

impl WalIndex {
    /// Opens a connection to the database at `path` (which must exist and
    /// be in WAL mode) and maps its wal-index.
    pub(super) fn open(path: &Path) -> Result<Self, String> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(|e| e.to_string())?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| e.to_string())?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(|e| e.to_string())?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(format!(
                "the database is in journal mode {mode:?}, not WAL; rpcguard needs WAL"
            ));
        }
        // One read transaction opens the WAL and maps the wal-index.
        conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))
            .map_err(|e| e.to_string())?;
        let header = map_region_zero(&conn)?;
        // From now on it only reads the change log, on the call path (a
        // tokio worker): never wait for a lock; a busy database makes that
        // call read the store instead (asynchronously).
        conn.busy_timeout(std::time::Duration::ZERO)
            .map_err(|e| e.to_string())?;
        Ok(WalIndex {
            header,
            conn: Mutex::new(conn),
        })
    }

    /// The header as it is now (copy 0, the one written last).
    pub(super) fn stamp(&self) -> Stamp {
        let mut words = [0u32; 12];
        for (i, word) in words.iter_mut().enumerate() {
            // SAFETY: the header is 12 aligned `u32`s at the start of a
            // mapping of at least 32 KiB that outlives `self` (see `Send`).
            *word = unsafe { self.header.as_ptr().add(i).read_volatile() };
        }
        fence(Ordering::Acquire);
        let pair = |hi: u32, lo: u32| (u64::from(hi) << 32) | u64::from(lo);
        Stamp {
            change: pair(words[2], words[4]),
            salt: pair(words[8], words[9]),
            checksum: pair(words[10], words[11]),
        }
    }

    /// The connection (for reading what changed), or `None` when another
    /// call is reading with it (or a thread panicked holding it): the caller
    /// then reads the store instead of blocking its worker on the mutex.
    pub(super) fn connection(&self) -> Option<MutexGuard<'_, Connection>> {
        self.conn.try_lock().ok()
    }
}

/// The address of region 0 of `conn`'s wal-index, from SQLite's VFS.
fn map_region_zero(conn: &Connection) -> Result<NonNull<u32>, String> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `conn.handle()` is a live connection; SQLITE_FCNTL_FILE_POINTER
    // writes the `sqlite3_file*` of its main database into `file`.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_FILE_POINTER,
            (&mut file as *mut *mut ffi::sqlite3_file).cast::<c_void>(),
        )
    };
    if rc != ffi::SQLITE_OK || file.is_null() {
        return Err(format!("cannot reach the database file (SQLite code {rc})"));
    }
    // SAFETY: `file` is the open main-database file of `conn`; its methods
    // table lives as long as the file.
    let methods = unsafe { (*file).pMethods };
    // SAFETY: non-null checked first; `iVersion >= 2` means the table has
    // the shared-memory methods.
    let map = unsafe { methods.as_ref() }
        .filter(|m| m.iVersion >= 2)
        .and_then(|m| m.xShmMap)
        .ok_or("the SQLite VFS has no shared memory")?;
    let mut region: *mut c_void = std::ptr::null_mut();
    // SAFETY: the wal-index is open (a read transaction ran on `conn`), so
    // region 0 exists; `bExtend = 0` maps it without changing the file.
    let rc = unsafe { map(file, 0, REGION_BYTES, 0, &mut region) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("cannot map the wal-index (SQLite code {rc})"));
    }
    NonNull::new(region.cast::<u32>()).ok_or_else(|| "the wal-index is not mapped".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_db(dir: &Path) -> (std::path::PathBuf, Connection) {
        let path = dir.join("t.db");
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "journal_mode", "WAL")
            .expect("wal");
        conn.execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("table");
        (path, conn)
    }

    /// Every commit on another connection changes the stamp; reads do not.
    #[test]
    fn every_commit_changes_the_stamp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = wal_db(dir.path());
        let index = WalIndex::open(&path).expect("wal index");
        let mut last = index.stamp();
        for i in 0..200 {
            writer
                .execute("INSERT INTO t VALUES (?1)", [i])
                .expect("insert");
            let now = index.stamp();
            assert_ne!(now, last, "commit {i} not seen");
            writer
                .query_row("SELECT count(*) FROM t", [], |_| Ok(()))
                .expect("read");
            assert_eq!(index.stamp(), now, "a read changed the stamp");
            last = now;
        }
        // A checkpoint that restarts the WAL is a change too, never a miss.
        writer
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
        writer
            .execute("INSERT INTO t VALUES (1)", [])
            .expect("insert");
        assert_ne!(index.stamp(), last);
    }

    #[test]
    fn seen_stamp_matches_only_what_was_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, writer) = wal_db(dir.path());
        let index = WalIndex::open(&path).expect("wal index");
        let seen = SeenStamp::default();
        let first = index.stamp();
        assert!(!seen.matches(first));
        seen.store(first);
        assert!(seen.matches(first));
        writer
            .execute("INSERT INTO t VALUES (1)", [])
            .expect("insert");
        assert!(!seen.matches(index.stamp()));
    }

    #[test]
    fn a_database_not_in_wal_mode_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("rollback.db");
        Connection::open(&path)
            .expect("open")
            .execute_batch("CREATE TABLE t (x INTEGER)")
            .expect("table");
        let err = WalIndex::open(&path).expect_err("not WAL");
        assert!(err.contains("not WAL"), "{err}");
    }
}
