//! The sessions' SQL, shared by both stores, and their part of the
//! [`UserStore`](crate::store::UserStore) implementation of
//! [`SqlStore`] (methods that the trait implementation in `sql.rs` calls).
//!
//! The one statement that matters most is [`ROTATE`]: it moves a session's
//! generation on only if it is still the presented token's, so of two
//! `refresh` calls racing with one token exactly one changes a row.

use std::sync::Arc;

use sqlx::{ColumnIndex, Database, Encode, Executor, IntoArguments, Row, Type};

use super::sql::{Dialect, SqlStore, Value, REPLACE_HASH};
use super::{split_scopes, StoreError};
use crate::session::{NewSession, RefreshRecord, Rotation, SessionState};
use crate::user::Username;

/// The session and its account, by session id.
const FIND_SESSION: &str = "SELECT s.id, s.scope_limit, s.ended_at, \
     u.account_id, u.username_key FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1";
/// A new session, only for the account verified and only if its
/// credentials epoch is still the one verified and it is not disabled
/// (`$7`). `{lock}` is the backend's row lock (PostgreSQL: `FOR SHARE`, so a
/// concurrent change of the account is waited for and re-checked; SQLite
/// has one writer at a time and needs none).
macro_rules! insert_session_sql {
    ($lock:literal) => {
        concat!(
            "INSERT INTO sessions ",
            "(id, user_id, scope_limit, generation, created_at, refresh_expires_at) ",
            "SELECT $1, id, $2, 0, $3, $4 FROM users WHERE username_key = $5 AND account_id = $6 ",
            "AND credentials_epoch = $7 AND disabled = 0 ",
            $lock
        )
    };
}
pub(crate) use insert_session_sql;
/// Ends the account's live sessions beyond the newest `$3` (not counting
/// the new session `$1`, which is kept); returns their ids.
const END_OLDEST: &str = "UPDATE sessions SET ended_at = $2 WHERE id IN \
     (SELECT id FROM sessions WHERE user_id = (SELECT user_id FROM sessions WHERE id = $1) \
     AND id <> $1 AND ended_at IS NULL AND refresh_expires_at >= $2 \
     ORDER BY created_at DESC, id DESC LIMIT 1000000000 OFFSET $3) RETURNING id";
/// Moves an account's credentials epoch on (see `0005_integrity.sql`).
const BUMP_EPOCH: &str =
    "UPDATE users SET credentials_epoch = credentials_epoch + 1 WHERE username_key = $1";
/// Deletes a session's rotated-out refresh tokens older than generation `$2`.
const TRIM_REFRESH: &str = "DELETE FROM refresh_tokens WHERE session_id = $1 AND generation < $2";
const INSERT_REFRESH: &str =
    "INSERT INTO refresh_tokens (hash, session_id, generation, expires_at) VALUES ($1, $2, $3, $4)";
/// What a presented refresh token belongs to.
const FIND_REFRESH: &str = "SELECT r.session_id, r.generation, r.expires_at, \
     s.generation AS current, s.ended_at, u.username_key \
     FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id \
     WHERE r.hash = $1";
/// Rotation: only if the session is live and still at the presented generation.
const ROTATE: &str = "UPDATE sessions SET generation = generation + 1, \
     refresh_expires_at = $3 WHERE id = $1 AND generation = $2 AND ended_at IS NULL";
const END_SESSION: &str = "UPDATE sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL";
/// Every live session of a user but one (`$3`, '' for none).
const END_SESSIONS: &str = "UPDATE sessions SET ended_at = $2 \
     WHERE user_id = (SELECT id FROM users WHERE username_key = $1) \
     AND ended_at IS NULL AND id <> $3 RETURNING id";
const SET_DISABLED: &str = "UPDATE users SET disabled = $2 WHERE username_key = $1";
const LIVE_SESSIONS: &str = "SELECT u.username_key, COUNT(*) AS n \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.ended_at IS NULL AND s.refresh_expires_at >= $1 GROUP BY u.username_key";
const PURGE_SESSIONS: &str =
    "DELETE FROM sessions WHERE COALESCE(ended_at, refresh_expires_at) < $1";
const PURGE_REFRESH: &str = "DELETE FROM refresh_tokens WHERE expires_at < $1";
const COUNT_SESSIONS: &str = "SELECT COUNT(*) FROM sessions";
const COUNT_REFRESH: &str = "SELECT COUNT(*) FROM refresh_tokens";

// The bounds of `sql.rs`'s `UserStore` implementation, which calls these
// (Rust does not carry an impl's where-clause over to another impl).
impl<D: Dialect> SqlStore<D>
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
    pub(super) async fn sessions_open(
        &self,
        new: NewSession<'_>,
    ) -> Result<Vec<String>, StoreError> {
        let limit = new.scope_limit.map(|s| s.join(" "));
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(D::INSERT_SESSION)
            .bind(new.session_id)
            .bind(limit)
            .bind(new.now)
            .bind(new.refresh_expires_at)
            .bind(new.username.to_ascii_lowercase())
            .bind(new.account_id)
            .bind(new.epoch)
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&inserted) == 0 {
            // Deleted, disabled, or its credentials changed since
            // they were verified.
            return Err(StoreError::NotFound);
        }
        sqlx::query(INSERT_REFRESH)
            .bind(new.refresh_hash)
            .bind(new.session_id)
            .bind(0_i64)
            .bind(new.refresh_expires_at)
            .execute(&mut *tx)
            .await?;
        let ended = if new.max_sessions > 0 {
            let rows = sqlx::query(END_OLDEST)
                .bind(new.session_id)
                .bind(new.now)
                .bind(i64::from(new.max_sessions) - 1)
                .fetch_all(&mut *tx)
                .await?;
            rows.iter()
                .map(|row| row.try_get::<String, _>("id"))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(ended)
    }

    pub(super) async fn sessions_find(
        &self,
        session_id: &str,
    ) -> Result<Option<Arc<SessionState>>, StoreError> {
        let Some(row) = sqlx::query(FIND_SESSION)
            .bind(session_id)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let limit: Option<String> = row.try_get("scope_limit")?;
        let ended_at: Option<i64> = row.try_get("ended_at")?;
        Ok(Some(Arc::new(SessionState {
            id: row.try_get("id")?,
            account_id: row.try_get("account_id")?,
            username_key: row.try_get("username_key")?,
            scope_limit: limit.map(|l| split_scopes(Some(l))),
            ended: ended_at.is_some(),
        })))
    }

    pub(super) async fn sessions_find_refresh(
        &self,
        hash: &str,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let Some(row) = sqlx::query(FIND_REFRESH)
            .bind(hash)
            .fetch_optional(&self.pool)
            .await?
        else {
            return Ok(None);
        };
        let ended_at: Option<i64> = row.try_get("ended_at")?;
        Ok(Some(RefreshRecord {
            session_id: row.try_get("session_id")?,
            generation: row.try_get("generation")?,
            expires_at: row.try_get("expires_at")?,
            current: row.try_get("current")?,
            ended: ended_at.is_some(),
            username_key: row.try_get("username_key")?,
        }))
    }

    pub(super) async fn sessions_rotate(
        &self,
        record: &RefreshRecord,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
        history: u32,
    ) -> Result<Rotation, StoreError> {
        if record.ended {
            return Ok(Rotation::Ended);
        }
        let session_id = record.session_id.as_str();
        if record.generation == record.current {
            if record.expires_at < now {
                return Ok(Rotation::Expired);
            }
            let next = record.generation + 1;
            let mut tx = self.pool.begin().await?;
            let moved = sqlx::query(ROTATE)
                .bind(session_id)
                .bind(record.generation)
                .bind(new_expires_at)
                .execute(&mut *tx)
                .await?;
            if D::rows_affected(&moved) == 1 {
                sqlx::query(INSERT_REFRESH)
                    .bind(new_hash)
                    .bind(session_id)
                    .bind(next)
                    .bind(new_expires_at)
                    .execute(&mut *tx)
                    .await?;
                // Every `history` rotations, the tokens older than
                // the last `history` go (between history and
                // 2 x history rotated tokens are kept).
                let history = i64::from(history);
                if history > 0 && next % history == 0 {
                    sqlx::query(TRIM_REFRESH)
                        .bind(session_id)
                        .bind(next - history)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                return match self.sessions_find(session_id).await? {
                    Some(session) => Ok(Rotation::Rotated((*session).clone())),
                    None => Ok(Rotation::Unknown),
                };
            }
            tx.rollback().await?;
            // Another call rotated this token first (or the
            // session ended meanwhile): this one is reuse.
        }
        sqlx::query(END_SESSION)
            .bind(session_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(Rotation::Reused {
            session_id: record.session_id.clone(),
            username_key: record.username_key.clone(),
        })
    }

    pub(super) async fn sessions_end(
        &self,
        session_id: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(END_SESSION)
            .bind(session_id)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&done) > 0)
    }

    /// Ends every live session of `username` but `keep`, and
    /// moves its credentials epoch on first (which, on PostgreSQL,
    /// takes the account row's lock: a `sign_in` inserting a session
    /// meanwhile either waits and is refused, or commits first and
    /// its session is ended here).
    async fn sessions_end_all(
        conn: &mut <D::Db as Database>::Connection,
        username: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let key = username.to_ascii_lowercase();
        sqlx::query(BUMP_EPOCH)
            .bind(key.as_str())
            .execute(&mut *conn)
            .await?;
        let rows = sqlx::query(END_SESSIONS)
            .bind(key.as_str())
            .bind(now)
            .bind(keep.unwrap_or(""))
            .fetch_all(&mut *conn)
            .await?;
        Ok(rows
            .iter()
            .map(|row| row.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()?)
    }

    pub(super) async fn sessions_end_everywhere(
        &self,
        username: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let ended = Self::sessions_end_all(&mut *tx, username, keep, now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    pub(super) async fn sessions_set_disabled(
        &self,
        username: &Username,
        disabled: bool,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(SET_DISABLED)
            .bind(username.key())
            .bind(i64::from(disabled))
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&done) == 0 {
            return Err(StoreError::NotFound);
        }
        let ended = if disabled {
            Self::sessions_end_all(&mut *tx, username.as_str(), None, now).await?
        } else {
            Vec::new()
        };
        tx.commit().await?;
        Ok(ended)
    }

    pub(super) async fn sessions_change_password(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(REPLACE_HASH)
            .bind(username.to_ascii_lowercase())
            .bind(old_hash)
            .bind(new_hash)
            .execute(&mut *tx)
            .await?;
        if D::rows_affected(&done) == 0 {
            return Ok(None);
        }
        let ended = Self::sessions_end_all(&mut *tx, username, keep, now).await?;
        tx.commit().await?;
        Ok(Some(ended))
    }

    pub(super) async fn sessions_live_counts(
        &self,
        now: i64,
    ) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query(LIVE_SESSIONS)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in &rows {
            let n: i64 = row.try_get("n")?;
            counts.push((row.try_get("username_key")?, u64::try_from(n).unwrap_or(0)));
        }
        Ok(counts)
    }

    pub(super) async fn sessions_purge(&self, horizon: i64) -> Result<u64, StoreError> {
        let sessions = sqlx::query(PURGE_SESSIONS)
            .bind(horizon)
            .execute(&self.pool)
            .await?;
        let tokens = sqlx::query(PURGE_REFRESH)
            .bind(horizon)
            .execute(&self.pool)
            .await?;
        Ok(D::rows_affected(&sessions) + D::rows_affected(&tokens))
    }

    pub(super) async fn sessions_rows(&self) -> Result<(u64, u64), StoreError> {
        let sessions: i64 = sqlx::query_scalar(COUNT_SESSIONS)
            .fetch_one(&self.pool)
            .await?;
        let tokens: i64 = sqlx::query_scalar(COUNT_REFRESH)
            .fetch_one(&self.pool)
            .await?;
        Ok((
            u64::try_from(sessions).unwrap_or(0),
            u64::try_from(tokens).unwrap_or(0),
        ))
    }
}
