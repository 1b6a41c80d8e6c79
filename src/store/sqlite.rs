//! The embedded default store: one SQLite file in the data dir.
//!
//! WAL mode lets readers run beside the one writer; `synchronous = FULL`
//! makes every acknowledged `sign_up` durable before it is answered, so it
//! survives `kill -9` (and power loss). The schema is migrated on open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::sql::{impl_user_store, select_user_sql};
use super::StoreError;

const FIND_USER: &str = select_user_sql!("group_concat(s.scope, ' ')", "WHERE u.username_key = $1");
const LIST_USERS: &str = select_user_sql!("group_concat(s.scope, ' ')", "ORDER BY u.username_key");

/// A [`UserStore`](super::UserStore) on a SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and migrates
    /// its schema. `pool_size` bounds the open connections.
    pub async fn open(path: &Path, pool_size: u32) -> Result<Self, StoreError> {
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
        Ok(SqliteStore { pool })
    }
}

impl_user_store!(SqliteStore, sqlx::sqlite::SqliteRow, FIND_USER, LIST_USERS);
