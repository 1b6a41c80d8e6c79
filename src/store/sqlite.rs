//! The embedded default store: one SQLite file in the data dir.
//!
//! WAL mode lets readers run beside the one writer; `synchronous = FULL`
//! makes every acknowledged `sign_up` durable before it is answered, so it
//! survives `kill -9` (and power loss). The schema is migrated on open.
//!
//! The file holds the password hashes, so it is private: it is created mode
//! 0600 before SQLite opens it (SQLite gives the `-wal` and `-shm` files it
//! creates the mode of the database file), and an existing database, WAL,
//! shared-memory or rollback-journal file that group or others may open is
//! tightened to 0600 first, with a warning in the log.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::session_sql::insert_session_sql;
use super::sql::{select_user_sql, Dialect, SqlStore};
use super::StoreError;

/// SQLite's ways ([`Dialect`]): `group_concat`, no row locks (one writer
/// at a time), changes announced in the change log.
#[derive(Debug)]
pub struct Sqlite;

impl Dialect for Sqlite {
    type Db = sqlx::Sqlite;
    const NAME: &'static str = "SqliteStore";
    const FIND_USER: &'static str =
        select_user_sql!("group_concat(s.scope, ' ')", "WHERE u.username_key = $1");
    const LIST_USERS: &'static str =
        select_user_sql!("group_concat(s.scope, ' ')", "ORDER BY u.username_key");
    const INSERT_SESSION: &'static str = insert_session_sql!("");
    const ANNOUNCE: &'static str = "INSERT INTO changes (key) VALUES ($1)";

    fn rows_affected(result: &sqlx::sqlite::SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

/// A [`UserStore`](super::UserStore) on a SQLite file.
pub type SqliteStore = SqlStore<Sqlite>;

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates
    /// its schema. `pool_size` bounds the open connections.
    pub async fn open(path: &Path, pool_size: u32) -> Result<Self, StoreError> {
        make_private(path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(pool_size.max(1))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
        Ok(SqlStore::new(pool))
    }
}

/// Creates the database file with mode 0600 if it is missing, and tightens
/// the database and its companion files to 0600 where they exist.
fn make_private(path: &Path) -> Result<(), StoreError> {
    let failed = |path: &Path| {
        let path = path.to_owned();
        move |cause| StoreError::Files { path, cause }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(failed(path))?;
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let file = Path::new(&name);
        match crate::files::tighten_mode(file, 0o600, "database file") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            other => other.map_err(failed(file))?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::UserStore;

    /// Accounts stored before `account_id` existed get one each, distinct,
    /// when the store is opened by this version.
    #[tokio::test]
    async fn migration_gives_existing_accounts_their_own_ids() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("old.db");
        let options = SqliteConnectOptions::from_str("sqlite://")
            .expect("options")
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.expect("open");
        let mut first = sqlx::migrate!("./migrations/sqlite");
        first.migrations = std::borrow::Cow::Owned(first.migrations[..1].to_vec());
        first.run(&pool).await.expect("migration 0001 only");
        for name in ["alice", "bob"] {
            sqlx::query("INSERT INTO users (username, username_key, password_hash, created_at) VALUES ($1, $1, 'h', 1)")
                .bind(name)
                .execute(&pool)
                .await
                .expect("old-style insert");
        }
        pool.close().await;

        let store = SqliteStore::open(&path, 1).await.expect("migrate");
        let users = store.list_users().await.expect("list");
        assert_eq!(users.len(), 2);
        for user in &users {
            assert_eq!(user.account_id.len(), 32, "{user:?}");
            assert!(user.account_id.bytes().all(|b| b.is_ascii_hexdigit()));
        }
        assert_ne!(users[0].account_id, users[1].account_id);
        // An insert that names no id is refused rather than stored empty.
        let bare = sqlx::query("INSERT INTO users (username, username_key, password_hash, created_at) VALUES ('c', 'c', 'h', 1)")
            .execute(&store.pool)
            .await;
        assert!(bare.is_err());
    }
}
