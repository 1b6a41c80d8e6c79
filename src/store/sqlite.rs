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
        let pool = SqlitePool::connect_with(options).await.expect("open");
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
