//! The one [`UserStore`] implementation both SQL stores share:
//! [`SqlStore`], generic over a [`Dialect`], with the accounts' SQL (the
//! sessions' SQL and methods are in `session_sql.rs`).
//!
//! SQLite and PostgreSQL both take `$N` placeholders and `ON CONFLICT DO
//! NOTHING`. A [`Dialect`] says what differs: the sqlx database, how scopes
//! are aggregated into one column, the session insert's row lock, how a
//! change is announced to the servers, and the budgets only PostgreSQL
//! shares between instances.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Type};

use super::{AdminChange, SharedDraw, StoreError, StoredUser, UserStore};
use crate::session::{NewSession, RefreshRecord, Rotation, SessionState};
use crate::user::{Scope, Username};

/// What one SQL backend does its own way; everything else [`SqlStore`]
/// does once for both.
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx database.
    type Db: Database;
    /// The store's name (in `Debug`).
    const NAME: &'static str;
    /// One user with its scopes, by lower-cased name `$1`
    /// ([`select_user_sql`] with the backend's string aggregate).
    const FIND_USER: &'static str;
    /// Every user with its scopes, by name.
    const LIST_USERS: &'static str;
    /// A new session ([`insert_session_sql`](super::session_sql::insert_session_sql)
    /// with the backend's row lock).
    const INSERT_SESSION: &'static str;
    /// Announces a change-log key `$1` to the servers (see [`AdminChange`]).
    const ANNOUNCE: &'static str;

    /// The rows a statement changed.
    fn rows_affected(result: &<Self::Db as Database>::QueryResult) -> u64;

    /// Draws from budgets shared by every server on the database
    /// ([`UserStore::draw_shared`]); by default nothing is shared.
    fn draw_shared(
        pool: &Pool<Self::Db>,
        draws: &[SharedDraw],
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        let _ = (pool, draws);
        async { Ok(None) }
    }

    /// Deletes the shared budgets that have refilled
    /// ([`UserStore::purge_shared_budgets`]); by default there are none.
    fn purge_shared_budgets(
        pool: &Pool<Self::Db>,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let _ = pool;
        async { Ok(0) }
    }
}

/// A value the stores bind and read back, on the database `DB`.
pub trait Value<DB: Database>:
    Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send
{
}

impl<DB: Database, T> Value<DB> for T where
    T: Type<DB> + for<'q> Encode<'q, DB> + for<'r> Decode<'r, DB> + Send
{
}

/// A [`UserStore`] on a sqlx pool of the [`Dialect`] `D`'s database.
pub struct SqlStore<D: Dialect> {
    pub(super) pool: Pool<D::Db>,
    dialect: PhantomData<D>,
}

impl<D: Dialect> SqlStore<D> {
    /// The store on `pool` (already migrated).
    pub(super) fn new(pool: Pool<D::Db>) -> Self {
        SqlStore {
            pool,
            dialect: PhantomData,
        }
    }
}

impl<D: Dialect> Clone for SqlStore<D> {
    fn clone(&self) -> Self {
        SqlStore::new(self.pool.clone())
    }
}

impl<D: Dialect> std::fmt::Debug for SqlStore<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(D::NAME).field("pool", &self.pool).finish()
    }
}

/// `SELECT` of one user with its scopes joined by spaces; `{agg}` is the
/// backend's string aggregate over `s.scope`.
macro_rules! select_user_sql {
    ($agg:literal, $where:literal) => {
        concat!(
            "SELECT u.username, u.account_id, u.password_hash, u.created_at, u.disabled, u.credentials_epoch, ",
            "(SELECT ",
            $agg,
            " FROM user_scopes s WHERE s.user_id = u.id) AS scopes ",
            "FROM users u ",
            $where
        )
    };
}
pub(crate) use select_user_sql;

const INSERT_USER: &str = "INSERT INTO users \
     (username, username_key, password_hash, created_at, account_id) VALUES ($1, $2, $3, $4, $5)";
const GRANT_SCOPE: &str = "INSERT INTO user_scopes (user_id, scope) \
     SELECT id, $2 FROM users WHERE username_key = $1 ON CONFLICT DO NOTHING";
const REVOKE_SCOPE: &str = "DELETE FROM user_scopes \
     WHERE scope = $2 AND user_id = (SELECT id FROM users WHERE username_key = $1)";
const DELETE_USER: &str = "DELETE FROM users WHERE username_key = $1";
const COUNT_USERS: &str = "SELECT COUNT(*) FROM users";
const PUT_SETTING: &str = "INSERT INTO settings (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const GET_SETTING: &str = "SELECT value FROM settings WHERE key = $1";
/// Replaces a hash only if it is still the one that was read (`$2`), so a
/// concurrent change of password is never overwritten.
pub(super) const REPLACE_HASH: &str =
    "UPDATE users SET password_hash = $3 WHERE username_key = $1 AND password_hash = $2";
/// Stored hashes by bcrypt cost (`$2b$CC$…`: characters 5 and 6).
const HASH_COSTS: &str =
    "SELECT substr(password_hash, 5, 2) AS cost, COUNT(*) AS n FROM users GROUP BY substr(password_hash, 5, 2)";

/// A user read back from a row of [`Dialect::FIND_USER`] or
/// [`Dialect::LIST_USERS`].
fn user_of_row<R: Row>(row: &R) -> Result<StoredUser, sqlx::Error>
where
    for<'a> &'a str: ColumnIndex<R>,
    String: Value<R::Database>,
    i64: Value<R::Database>,
    Option<String>: Value<R::Database>,
{
    Ok(StoredUser {
        username: row.try_get("username")?,
        account_id: row.try_get("account_id")?,
        password_hash: row.try_get("password_hash")?,
        created_at: row.try_get("created_at")?,
        scopes: super::split_scopes(row.try_get("scopes")?),
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        epoch: row.try_get("credentials_epoch")?,
    })
}

/// Runs `sql` (`$1` = username key, `$2` = scope) once per scope.
async fn for_each_scope<'e, E>(
    db: E,
    sql: &'static str,
    username: &Username,
    scopes: &[Scope],
) -> Result<(), sqlx::Error>
where
    E: Executor<'e> + Copy,
    <E::Database as Database>::Arguments: IntoArguments<E::Database>,
    for<'q> &'q str: Encode<'q, E::Database> + Type<E::Database>,
    String: Value<E::Database>,
{
    for scope in scopes {
        sqlx::query(sql)
            .bind(username.key())
            .bind(scope.as_str())
            .execute(db)
            .await?;
    }
    Ok(())
}

/// What sqlx needs to run these statements on `D`'s database (both
/// backends have it; `session_sql.rs` repeats it for the sessions' part).
#[async_trait]
impl<D: Dialect> UserStore for SqlStore<D>
where
    for<'c> &'c mut <D::Db as Database>::Connection: Executor<'c, Database = D::Db>,
    <D::Db as Database>::Arguments: IntoArguments<D::Db>,
    for<'q> &'q str: Encode<'q, D::Db> + Type<D::Db> + ColumnIndex<<D::Db as Database>::Row>,
    usize: ColumnIndex<<D::Db as Database>::Row>,
    String: Value<D::Db>,
    i64: Value<D::Db>,
    Option<String>: Value<D::Db>,
    Option<i64>: Value<D::Db>,
{
    async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
        created_at: i64,
    ) -> Result<StoredUser, StoreError> {
        let account_id = super::new_account_id();
        let inserted = sqlx::query(INSERT_USER)
            .bind(username.as_str())
            .bind(username.key())
            .bind(password_hash)
            .bind(created_at)
            .bind(account_id.as_str())
            .execute(&self.pool)
            .await;
        match inserted {
            Ok(_) => Ok(StoredUser {
                username: username.as_str().to_owned(),
                account_id,
                password_hash: password_hash.to_owned(),
                scopes: Vec::new(),
                created_at,
                disabled: false,
                epoch: 0,
            }),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::UsernameTaken)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn find_user(&self, username: &str) -> Result<Option<StoredUser>, StoreError> {
        let row = sqlx::query(D::FIND_USER)
            .bind(username.to_ascii_lowercase())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(user_of_row).transpose()?)
    }

    /// Scopes are granted to an existing user only; the answer is the
    /// user as it now is (the same for `revoke`).
    async fn grant(&self, username: &Username, scopes: &[Scope]) -> Result<StoredUser, StoreError> {
        let name = username.as_str();
        self.find_user(name).await?.ok_or(StoreError::NotFound)?;
        for_each_scope(&self.pool, GRANT_SCOPE, username, scopes).await?;
        self.find_user(name).await?.ok_or(StoreError::NotFound)
    }

    async fn revoke(
        &self,
        username: &Username,
        scopes: &[Scope],
    ) -> Result<StoredUser, StoreError> {
        let name = username.as_str();
        self.find_user(name).await?.ok_or(StoreError::NotFound)?;
        for_each_scope(&self.pool, REVOKE_SCOPE, username, scopes).await?;
        self.find_user(name).await?.ok_or(StoreError::NotFound)
    }

    async fn delete_user(&self, username: &Username) -> Result<bool, StoreError> {
        let done = sqlx::query(DELETE_USER)
            .bind(username.key())
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn list_users(&self) -> Result<Vec<StoredUser>, StoreError> {
        let rows = sqlx::query(D::LIST_USERS).fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .map(user_of_row)
            .collect::<Result<Vec<_>, _>>()?)
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        let count: i64 = sqlx::query_scalar(COUNT_USERS)
            .fetch_one(&self.pool)
            .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn replace_password_hash(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(REPLACE_HASH)
            .bind(username.to_ascii_lowercase())
            .bind(old_hash)
            .bind(new_hash)
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&done) > 0)
    }

    async fn password_hash_costs(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        let rows = sqlx::query(HASH_COSTS).fetch_all(&self.pool).await?;
        let mut costs = Vec::with_capacity(rows.len());
        for row in &rows {
            let cost: Option<String> = row.try_get("cost")?;
            let n: i64 = row.try_get("n")?;
            if let (Some(cost), Ok(n)) = (cost.and_then(|c| c.parse().ok()), u64::try_from(n)) {
                costs.push((cost, n));
            }
        }
        Ok(costs)
    }

    async fn set_disabled(
        &self,
        username: &Username,
        disabled: bool,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.sessions_set_disabled(username, disabled, now).await
    }

    async fn open_session(&self, new: NewSession<'_>) -> Result<Vec<String>, StoreError> {
        self.sessions_open(new).await
    }

    async fn find_session(
        &self,
        session_id: &str,
    ) -> Result<Option<Arc<SessionState>>, StoreError> {
        self.sessions_find(session_id).await
    }

    async fn find_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.sessions_find_refresh(hash).await
    }

    async fn rotate_refresh(
        &self,
        record: &RefreshRecord,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
        history: u32,
    ) -> Result<Rotation, StoreError> {
        self.sessions_rotate(record, new_hash, now, new_expires_at, history)
            .await
    }

    async fn end_session(&self, session_id: &str, now: i64) -> Result<bool, StoreError> {
        self.sessions_end(session_id, now).await
    }

    async fn end_sessions(
        &self,
        username: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        self.sessions_end_everywhere(username, keep, now).await
    }

    async fn change_password(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        self.sessions_change_password(username, old_hash, new_hash, keep, now)
            .await
    }

    async fn live_session_counts(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.sessions_live_counts(now).await
    }

    async fn purge_sessions(&self, horizon: i64) -> Result<u64, StoreError> {
        self.sessions_purge(horizon).await
    }

    async fn session_rows(&self) -> Result<(u64, u64), StoreError> {
        self.sessions_rows().await
    }

    async fn draw_shared(&self, draws: &[SharedDraw]) -> Result<Option<u64>, StoreError> {
        D::draw_shared(&self.pool, draws).await
    }

    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(PUT_SETTING)
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(GET_SETTING)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    async fn announce(&self, change: &AdminChange<'_>) -> Result<(), StoreError> {
        sqlx::query(D::ANNOUNCE)
            .bind(change.key())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn purge_shared_budgets(&self) -> Result<u64, StoreError> {
        D::purge_shared_budgets(&self.pool).await
    }
}
