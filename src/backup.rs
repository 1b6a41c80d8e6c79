//! `rpcguard backup DIR`: a consistent copy of a live SQLite store and the
//! key set, safe while the server writes.
//!
//! - The database is copied with SQLite's online backup API (through
//!   rusqlite), which copies pages in steps and restarts a step when a
//!   writer changed the source meanwhile: the copy is one committed state,
//!   WAL included, never a torn file (a plain `cp` of a live WAL database
//!   can be). Every `sign_up` acknowledged before the backup started is in
//!   it.
//! - The key set (`keys.json`, and a legacy `secret.key`) is copied beside
//!   it: the database's accounts and sessions are useless without the keys
//!   that signed their tokens (a restore without them signs everyone out
//!   and, with `--secret-file`, needs that file instead).
//! - `DIR` is created mode 0700 (or must be empty of our files); every file
//!   is written mode 0600 before any byte, as the data dir's own.
//!
//! On PostgreSQL the key set lives in the database (`signing_keys`), so
//! `pg_dump` of the database is the whole backup; this command says so and
//! copies nothing.

use std::path::{Path, PathBuf};

use crate::config::{DATABASE_FILE_NAME, SECRET_FILE_NAME};
use crate::keys::KEYS_FILE_NAME;

/// Errors of a backup.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// There is no database in the data dir.
    #[error("no rpcguard database at {0}; is --data-dir right?")]
    NoDatabase(PathBuf),
    /// The store is PostgreSQL: `pg_dump` is the tool.
    #[error(
        "the store is PostgreSQL: back it up with `pg_dump` (the key set is in the database's \
         signing_keys table, so the dump holds everything; keep it as private as the database)"
    )]
    Postgres,
    /// The target already holds a backup.
    #[error("{0} exists; back up into a new directory")]
    Exists(PathBuf),
    /// A file could not be written or read.
    #[error("{}: {}", path.display(), rpcguard::error::io_cause(cause))]
    Io {
        /// The file.
        path: PathBuf,
        /// Why (said once: not a `source`).
        cause: std::io::Error,
    },
    /// SQLite's backup failed.
    #[error("backing up {}: {cause}", path.display())]
    Sqlite {
        /// The database.
        path: PathBuf,
        /// Why (said once: not a `source`).
        cause: rusqlite::Error,
    },
}

/// What a backup wrote.
#[derive(Debug)]
pub struct Backup {
    /// The files written, in `DIR`.
    pub files: Vec<PathBuf>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |cause| BackupError::Io {
        path: path.to_owned(),
        cause,
    }
}

/// Backs up the SQLite store and key set of `data_dir` into `target`.
pub fn backup_sqlite(data_dir: &Path, target: &Path) -> Result<Backup, BackupError> {
    let database = data_dir.join(DATABASE_FILE_NAME);
    if !database.is_file() {
        return Err(BackupError::NoDatabase(database));
    }
    make_private_dir(target)?;
    let mut files = Vec::new();
    let copy = target.join(DATABASE_FILE_NAME);
    if copy.exists() {
        return Err(BackupError::Exists(copy));
    }
    create_private(&copy)?;
    let sqlite = |cause| BackupError::Sqlite {
        path: database.clone(),
        cause,
    };
    let source = rusqlite::Connection::open_with_flags(
        &database,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    source
        .busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sqlite)?;
    let mut destination = rusqlite::Connection::open(&copy).map_err(sqlite)?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut destination).map_err(sqlite)?;
        // 256 pages a step, no pause: a writer waits at most one step.
        backup
            .run_to_completion(256, std::time::Duration::ZERO, None)
            .map_err(sqlite)?;
    }
    // One self-contained file (the copy is in rollback-journal mode).
    destination
        .pragma_update(None, "journal_mode", "DELETE")
        .map_err(sqlite)?;
    drop(destination);
    files.push(copy);
    for name in [KEYS_FILE_NAME, SECRET_FILE_NAME] {
        let from = data_dir.join(name);
        if !from.is_file() {
            continue;
        }
        let to = target.join(name);
        if to.exists() {
            return Err(BackupError::Exists(to));
        }
        let bytes = std::fs::read(&from).map_err(io(&from))?;
        create_private(&to)?;
        std::fs::write(&to, bytes).map_err(io(&to))?;
        files.push(to);
    }
    Ok(Backup { files })
}

/// Creates `dir` (and its parents) mode 0700, or tightens an existing one.
fn make_private_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    }
    Ok(())
}

/// Creates an empty file mode 0600 (before anything is written to it).
fn create_private(path: &Path) -> Result<(), BackupError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(io(path))?;
    Ok(())
}
