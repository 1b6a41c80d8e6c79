//! The store for several server instances: one PostgreSQL database.
//!
//! Every instance is stateless apart from its WebSocket sessions; all of
//! them share this database. Migrations run at start-up under sqlx's
//! advisory lock, so instances starting together do not race. A lost
//! connection fails the calls in flight with `-32603`; the pool reconnects by
//! itself once the database is back.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::session_sql::insert_session_sql;
use super::sql::{select_user_sql, Dialect, SqlStore};
use super::{SharedDraw, StoreError};

/// PostgreSQL's ways ([`Dialect`]): `string_agg`, `FOR SHARE` on the
/// account while a session opens, changes announced with `pg_notify`, and
/// sign-in budgets shared by every instance on the database.
#[derive(Debug)]
pub struct Postgres;

impl Dialect for Postgres {
    type Db = sqlx::Postgres;
    const NAME: &'static str = "PostgresStore";
    const FIND_USER: &'static str =
        select_user_sql!("string_agg(s.scope, ' ')", "WHERE u.username_key = $1");
    const LIST_USERS: &'static str =
        select_user_sql!("string_agg(s.scope, ' ')", "ORDER BY u.username_key");
    const INSERT_SESSION: &'static str = insert_session_sql!("FOR SHARE");
    const ANNOUNCE: &'static str = "SELECT pg_notify('rpcguard_users', $1)";

    fn rows_affected(result: &sqlx::postgres::PgQueryResult) -> u64 {
        result.rows_affected()
    }

    /// One upsert per draw, on an unlogged table (0006_shared_budgets.sql).
    async fn draw_shared(pool: &PgPool, draws: &[SharedDraw]) -> Result<Option<u64>, StoreError> {
        for draw in draws {
            let interval = draw.rate.per() / draw.rate.count();
            let emission = micros(interval).max(1);
            let tolerance = emission.saturating_mul(i64::from(draw.rate.count()));
            let drawn: Option<i64> = sqlx::query_scalar(DRAW_SHARED)
                .bind(&draw.key)
                .bind(emission)
                .bind(tolerance)
                .fetch_optional(pool)
                .await?;
            if drawn.is_none() {
                let wait: Option<i64> = sqlx::query_scalar(SHARED_WAIT)
                    .bind(&draw.key)
                    .bind(emission)
                    .bind(tolerance)
                    .fetch_optional(pool)
                    .await?;
                let wait_us = u64::try_from(wait.unwrap_or(0)).unwrap_or(0);
                return Ok(Some(wait_us.div_ceil(1_000_000).max(1)));
            }
        }
        Ok(None)
    }

    async fn purge_shared_budgets(pool: &PgPool) -> Result<u64, StoreError> {
        Ok(sqlx::query(PURGE_SHARED)
            .execute(pool)
            .await?
            .rows_affected())
    }
}

/// A [`UserStore`](super::UserStore) on a PostgreSQL database.
pub type PostgresStore = SqlStore<Postgres>;

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
        Ok(SqlStore::new(pool))
    }
}

/// The database's clock, in microseconds since the epoch: every instance
/// measures shared budgets by the same clock.
macro_rules! db_now_us {
    () => {
        "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT"
    };
}

/// One GCRA draw (`$1` key, `$2` emission interval, `$3` burst × interval,
/// both µs): the new arrival time, or no row when the budget is empty.
const DRAW_SHARED: &str = concat!(
    "INSERT INTO shared_budgets AS b (key, tat) VALUES ($1, ",
    db_now_us!(),
    " + $2) ON CONFLICT (key) DO UPDATE SET tat = GREATEST(b.tat, EXCLUDED.tat - $2) + $2 \
     WHERE GREATEST(b.tat, EXCLUDED.tat - $2) + $2 - (EXCLUDED.tat - $2) <= $3 RETURNING tat"
);

/// How long until an empty budget (`$1`) takes one more draw, µs, given
/// `$2` emission interval and `$3` burst × interval.
const SHARED_WAIT: &str = concat!(
    "SELECT GREATEST(tat, ",
    db_now_us!(),
    ") + $2 - $3 - ",
    db_now_us!(),
    " FROM shared_budgets WHERE key = $1"
);

const PURGE_SHARED: &str = concat!("DELETE FROM shared_budgets WHERE tat < ", db_now_us!());

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}
