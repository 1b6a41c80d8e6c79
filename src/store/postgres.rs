//! The store for several server instances: one PostgreSQL database.
//!
//! Every instance is stateless apart from its WebSocket sessions; all of
//! them share this database. Migrations run at start-up under sqlx's
//! advisory lock, so instances starting together do not race. A lost
//! connection fails the calls in flight with `-32603`; the pool reconnects by
//! itself once the database is back.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::session_sql::{impl_session_store, HasDb};
use super::sql::{impl_user_store, select_user_sql};
use super::StoreError;

const FIND_USER: &str = select_user_sql!("string_agg(s.scope, ' ')", "WHERE u.username_key = $1");
const LIST_USERS: &str = select_user_sql!("string_agg(s.scope, ' ')", "ORDER BY u.username_key");

/// A [`UserStore`](super::UserStore) on a PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects a pool of `pool_size` connections to `url` and migrates the
    /// schema.
    pub async fn connect(url: &str, pool_size: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(pool_size.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

impl HasDb for PostgresStore {
    type Db = sqlx::Postgres;
}

impl_session_store!(PostgresStore);
impl_user_store!(PostgresStore, sqlx::postgres::PgRow, FIND_USER, LIST_USERS);
