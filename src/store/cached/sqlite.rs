//! The SQLite change feed of the [`CachedStore`]: the WAL-index header,
//! compared before each lookup, and the change log read once per commit of
//! any process (see the parent module).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{CachedStore, Freshness, CHANGE_LOG_RETENTION};
use crate::store::wal_index::{SeenStamp, WalIndex};
use crate::store::{AdminChange, SharedStore, StoreError, ADMIN_KEY_PREFIX};

pub(super) struct SqliteFeed {
    pub(super) wal: WalIndex,
    /// The header the map has caught up with.
    pub(super) seen: SeenStamp,
    /// The last change-log entry read (changed only while holding the
    /// WAL connection).
    last_seq: AtomicI64,
    /// Purges the change log (stopped when the store is dropped).
    purge: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for SqliteFeed {
    fn drop(&mut self) {
        if let Some(task) = &self.purge {
            task.abort();
        }
    }
}

impl CachedStore {
    /// Wraps the SQLite store at `path` (already opened and migrated by
    /// `inner`), watching its WAL-index on a connection of its own. Within
    /// a Tokio runtime, a task purges old change-log entries every minute.
    pub fn sqlite(
        inner: SharedStore,
        path: &Path,
        capacity: usize,
    ) -> Result<Arc<Self>, StoreError> {
        let wal = WalIndex::open(path).map_err(StoreError::Probe)?;
        let seen = SeenStamp::default();
        let last_seq = {
            let conn = wal
                .connection()
                .ok_or_else(|| StoreError::Probe("connection poisoned".to_owned()))?;
            seen.store(wal.stamp());
            last_change(&conn).map_err(|e| StoreError::Probe(e.to_string()))?
        };
        purge_change_log(path);
        let purge = tokio::runtime::Handle::try_current()
            .ok()
            .map(|runtime| runtime.spawn(purge_every_minute(path.to_owned())));
        let feed = SqliteFeed {
            wal,
            seen,
            last_seq: AtomicI64::new(last_seq),
            purge,
        };
        Ok(Arc::new(Self::new(
            inner,
            capacity,
            Freshness::Sqlite(feed),
        )))
    }

    /// Reads the change log after a commit and drops the users it names;
    /// `false` (read the store) if it cannot be read.
    pub(super) fn catch_up(&self, feed: &SqliteFeed) -> bool {
        let Some(conn) = feed.wal.connection() else {
            return false;
        };
        // Read before the log: a commit after this read changes the header
        // again, so the next call comes back here.
        let stamp = feed.wal.stamp();
        if feed.seen.matches(stamp) {
            return true; // another call caught up meanwhile
        }
        match read_changes(&conn, feed.last_seq.load(Ordering::Acquire)) {
            Ok(changes) => {
                if changes.lost {
                    self.forget_all();
                } else {
                    for key in &changes.keys {
                        if key.starts_with(ADMIN_KEY_PREFIX) {
                            AdminChange::emit_from_key(key);
                        } else {
                            self.forget(key);
                        }
                    }
                }
                feed.last_seq.store(changes.last, Ordering::Release);
                feed.seen.store(stamp);
                true
            }
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the change log; reading the store");
                false
            }
        }
    }
}

/// What the change log says since an entry.
#[derive(Debug, PartialEq, Eq)]
struct Changes {
    /// The changed users (lower-cased names), oldest first.
    keys: Vec<String>,
    /// The last entry ever written.
    last: i64,
    /// Entries after the asked-for one were purged unread.
    lost: bool,
}

/// The number of the last change-log entry ever written (0 for none).
fn last_change(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    use rusqlite::OptionalExtension;
    Ok(conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")?
        .query_row([], |row| row.get(0))
        .optional()?
        .unwrap_or(0))
}

/// The entries after `after`, read in one transaction. Entry numbers are
/// consecutive (AUTOINCREMENT, and a rolled-back insert gives its number
/// back), so fewer entries than numbers means some were purged unread.
fn read_changes(conn: &rusqlite::Connection, after: i64) -> rusqlite::Result<Changes> {
    let tx = conn.unchecked_transaction()?;
    let last = last_change(&tx)?;
    let keys = tx
        .prepare_cached("SELECT key FROM changes WHERE seq > ?1 ORDER BY seq")?
        .query_map([after], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.finish()?;
    let expected = last.saturating_sub(after).max(0);
    let lost = i64::try_from(keys.len()).map_or(true, |n| n < expected);
    Ok(Changes { keys, last, lost })
}

/// Deletes change-log entries older than [`CHANGE_LOG_RETENTION`], on a
/// connection of its own (a write may wait for another writer).
fn purge_change_log(path: &Path) {
    let purge = || -> rusqlite::Result<usize> {
        let conn = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        // SQLite stamps the entries (`at`) with the system time: compared
        // with that, whatever clock the server runs on.
        let now = crate::clock::unix_now().unwrap_or(0);
        let horizon = now.saturating_sub(CHANGE_LOG_RETENTION.as_secs());
        conn.execute(
            "DELETE FROM changes WHERE at < ?1",
            [i64::try_from(horizon).unwrap_or(i64::MAX)],
        )
    };
    match purge() {
        Ok(0) => {}
        Ok(purged) => tracing::debug!(purged, "purged old change-log entries"),
        Err(err) => tracing::warn!(error = %err, "cannot purge the change log"),
    }
}

/// Purges the change log every minute, off the async workers.
async fn purge_every_minute(path: PathBuf) {
    let mut every = tokio::time::interval(Duration::from_secs(60));
    every.tick().await; // the first tick is now, and opening just purged
    loop {
        every.tick().await;
        let path = path.clone();
        let _ = tokio::task::spawn_blocking(move || purge_change_log(&path)).await;
    }
}
