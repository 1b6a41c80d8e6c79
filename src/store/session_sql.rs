//! The sessions' SQL, shared by both stores, and their part of the
//! [`UserStore`](crate::store::UserStore) implementation (inherent methods
//! that the trait implementation of `sql.rs` calls).
//!
//! The one statement that matters most is [`ROTATE`]: it moves a session's
//! generation on only if it is still the presented token's, so of two
//! `refresh` calls racing with one token exactly one changes a row.

/// The session and its account, by session id.
pub(crate) const FIND_SESSION: &str = "SELECT s.id, s.scope_limit, s.ended_at, \
     u.account_id, u.username_key FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id = $1";
pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions \
     (id, user_id, scope_limit, generation, created_at, refresh_expires_at) \
     SELECT $1, id, $2, 0, $3, $4 FROM users WHERE username_key = $5 AND account_id = $6";
pub(crate) const INSERT_REFRESH: &str =
    "INSERT INTO refresh_tokens (hash, session_id, generation, expires_at) VALUES ($1, $2, $3, $4)";
/// What a presented refresh token belongs to.
pub(crate) const FIND_REFRESH: &str = "SELECT r.session_id, r.generation, r.expires_at, \
     s.generation AS current, s.ended_at, u.username_key \
     FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id JOIN users u ON u.id = s.user_id \
     WHERE r.hash = $1";
/// Rotation: only if the session is live and still at the presented generation.
pub(crate) const ROTATE: &str = "UPDATE sessions SET generation = generation + 1, \
     refresh_expires_at = $3 WHERE id = $1 AND generation = $2 AND ended_at IS NULL";
pub(crate) const END_SESSION: &str =
    "UPDATE sessions SET ended_at = $2 WHERE id = $1 AND ended_at IS NULL";
/// Every live session of a user but one (`$3`, '' for none).
pub(crate) const END_SESSIONS: &str = "UPDATE sessions SET ended_at = $2 \
     WHERE user_id = (SELECT id FROM users WHERE username_key = $1) \
     AND ended_at IS NULL AND id <> $3 RETURNING id";
pub(crate) const SET_DISABLED: &str = "UPDATE users SET disabled = $2 WHERE username_key = $1";
pub(crate) const REPLACE_HASH: &str =
    "UPDATE users SET password_hash = $3 WHERE username_key = $1 AND password_hash = $2";
pub(crate) const LIVE_SESSIONS: &str = "SELECT u.username_key, COUNT(*) AS n \
     FROM sessions s JOIN users u ON u.id = s.user_id \
     WHERE s.ended_at IS NULL AND s.refresh_expires_at >= $1 GROUP BY u.username_key";
pub(crate) const PURGE_SESSIONS: &str =
    "DELETE FROM sessions WHERE COALESCE(ended_at, refresh_expires_at) < $1";
pub(crate) const PURGE_REFRESH: &str = "DELETE FROM refresh_tokens WHERE expires_at < $1";
pub(crate) const COUNT_SESSIONS: &str = "SELECT COUNT(*) FROM sessions";
pub(crate) const COUNT_REFRESH: &str = "SELECT COUNT(*) FROM refresh_tokens";

/// Writes the session methods for a store with a `pool` field.
macro_rules! impl_session_store {
    ($store:ty) => {
        impl $store {
            async fn sessions_open(
                &self,
                new: $crate::session::NewSession<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::session_sql as q;
                let limit = new.scope_limit.map(|s| s.join(" "));
                let mut tx = self.pool.begin().await?;
                let inserted = sqlx::query(q::INSERT_SESSION)
                    .bind(new.session_id)
                    .bind(limit)
                    .bind(new.now)
                    .bind(new.refresh_expires_at)
                    .bind(new.username.to_ascii_lowercase())
                    .bind(new.account_id)
                    .execute(&mut *tx)
                    .await?;
                if inserted.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                sqlx::query(q::INSERT_REFRESH)
                    .bind(new.refresh_hash)
                    .bind(new.session_id)
                    .bind(0_i64)
                    .bind(new.refresh_expires_at)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn sessions_find(
                &self,
                session_id: &str,
            ) -> Result<
                Option<std::sync::Arc<$crate::session::SessionState>>,
                $crate::store::StoreError,
            > {
                use sqlx::Row;
                let Some(row) = sqlx::query($crate::store::session_sql::FIND_SESSION)
                    .bind(session_id)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(None);
                };
                let limit: Option<String> = row.try_get("scope_limit")?;
                let ended_at: Option<i64> = row.try_get("ended_at")?;
                Ok(Some(std::sync::Arc::new($crate::session::SessionState {
                    id: row.try_get("id")?,
                    account_id: row.try_get("account_id")?,
                    username_key: row.try_get("username_key")?,
                    scope_limit: limit.map(|l| $crate::store::split_scopes(Some(l))),
                    ended: ended_at.is_some(),
                })))
            }

            async fn sessions_rotate(
                &self,
                old_hash: &str,
                new_hash: &str,
                now: i64,
                new_expires_at: i64,
            ) -> Result<$crate::session::Rotation, $crate::store::StoreError> {
                use sqlx::Row;
                use $crate::session::Rotation;
                use $crate::store::session_sql as q;
                let Some(row) = sqlx::query(q::FIND_REFRESH)
                    .bind(old_hash)
                    .fetch_optional(&self.pool)
                    .await?
                else {
                    return Ok(Rotation::Unknown);
                };
                let session_id: String = row.try_get("session_id")?;
                let generation: i64 = row.try_get("generation")?;
                let expires_at: i64 = row.try_get("expires_at")?;
                let current: i64 = row.try_get("current")?;
                let ended_at: Option<i64> = row.try_get("ended_at")?;
                let username_key: String = row.try_get("username_key")?;
                if ended_at.is_some() {
                    return Ok(Rotation::Ended);
                }
                if generation == current {
                    if expires_at < now {
                        return Ok(Rotation::Expired);
                    }
                    let mut tx = self.pool.begin().await?;
                    let moved = sqlx::query(q::ROTATE)
                        .bind(session_id.as_str())
                        .bind(generation)
                        .bind(new_expires_at)
                        .execute(&mut *tx)
                        .await?;
                    if moved.rows_affected() == 1 {
                        sqlx::query(q::INSERT_REFRESH)
                            .bind(new_hash)
                            .bind(session_id.as_str())
                            .bind(generation + 1)
                            .bind(new_expires_at)
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await?;
                        return match self.sessions_find(&session_id).await? {
                            Some(session) => Ok(Rotation::Rotated((*session).clone())),
                            None => Ok(Rotation::Unknown),
                        };
                    }
                    tx.rollback().await?;
                    // Another call rotated this token first (or the
                    // session ended meanwhile): this one is reuse.
                }
                sqlx::query(q::END_SESSION)
                    .bind(session_id.as_str())
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(Rotation::Reused {
                    session_id,
                    username_key,
                })
            }

            async fn sessions_end(
                &self,
                session_id: &str,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::session_sql::END_SESSION)
                    .bind(session_id)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn sessions_end_all<'e, E>(
                executor: E,
                username: &str,
                keep: Option<&str>,
                now: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError>
            where
                E: sqlx::Executor<'e, Database = <$store as $crate::store::session_sql::HasDb>::Db>,
            {
                use sqlx::Row;
                let rows = sqlx::query($crate::store::session_sql::END_SESSIONS)
                    .bind(username.to_ascii_lowercase())
                    .bind(now)
                    .bind(keep.unwrap_or(""))
                    .fetch_all(executor)
                    .await?;
                Ok(rows
                    .iter()
                    .map(|row| row.try_get::<String, _>("id"))
                    .collect::<Result<Vec<_>, _>>()?)
            }

            async fn sessions_set_disabled(
                &self,
                username: &$crate::user::Username,
                disabled: bool,
                now: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query($crate::store::session_sql::SET_DISABLED)
                    .bind(username.key())
                    .bind(i64::from(disabled))
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err($crate::store::StoreError::NotFound);
                }
                let ended = if disabled {
                    Self::sessions_end_all(&mut *tx, username.as_str(), None, now).await?
                } else {
                    Vec::new()
                };
                tx.commit().await?;
                Ok(ended)
            }

            async fn sessions_change_password(
                &self,
                username: &str,
                old_hash: &str,
                new_hash: &str,
                keep: Option<&str>,
                now: i64,
            ) -> Result<Option<Vec<String>>, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query($crate::store::session_sql::REPLACE_HASH)
                    .bind(username.to_ascii_lowercase())
                    .bind(old_hash)
                    .bind(new_hash)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() == 0 {
                    return Ok(None);
                }
                let ended = Self::sessions_end_all(&mut *tx, username, keep, now).await?;
                tx.commit().await?;
                Ok(Some(ended))
            }

            async fn sessions_live_counts(
                &self,
                now: i64,
            ) -> Result<Vec<(String, u64)>, $crate::store::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query($crate::store::session_sql::LIVE_SESSIONS)
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

            async fn sessions_purge(&self, horizon: i64) -> Result<u64, $crate::store::StoreError> {
                use $crate::store::session_sql as q;
                let sessions = sqlx::query(q::PURGE_SESSIONS)
                    .bind(horizon)
                    .execute(&self.pool)
                    .await?;
                let tokens = sqlx::query(q::PURGE_REFRESH)
                    .bind(horizon)
                    .execute(&self.pool)
                    .await?;
                Ok(sessions.rows_affected() + tokens.rows_affected())
            }

            async fn sessions_rows(&self) -> Result<(u64, u64), $crate::store::StoreError> {
                use $crate::store::session_sql as q;
                let sessions: i64 = sqlx::query_scalar(q::COUNT_SESSIONS)
                    .fetch_one(&self.pool)
                    .await?;
                let tokens: i64 = sqlx::query_scalar(q::COUNT_REFRESH)
                    .fetch_one(&self.pool)
                    .await?;
                Ok((
                    u64::try_from(sessions).unwrap_or(0),
                    u64::try_from(tokens).unwrap_or(0),
                ))
            }
        }
    };
}
pub(crate) use impl_session_store;

/// The sqlx database of a store, for the executor-generic helpers above.
pub(crate) trait HasDb {
    /// The sqlx database.
    type Db: sqlx::Database;
}
