//! The SQL both stores share, and the one `UserStore` implementation written
//! once for any sqlx pool.
//!
//! SQLite and PostgreSQL both take `$N` placeholders and `ON CONFLICT DO
//! NOTHING`; they differ only in how scopes are aggregated into one column,
//! so each store passes its own `SELECT` list and the macro below writes the
//! same trait implementation for both.

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

pub(crate) const INSERT_USER: &str = "INSERT INTO users \
     (username, username_key, password_hash, created_at, account_id) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const GRANT_SCOPE: &str = "INSERT INTO user_scopes (user_id, scope) \
     SELECT id, $2 FROM users WHERE username_key = $1 ON CONFLICT DO NOTHING";
pub(crate) const REVOKE_SCOPE: &str = "DELETE FROM user_scopes \
     WHERE scope = $2 AND user_id = (SELECT id FROM users WHERE username_key = $1)";
pub(crate) const DELETE_USER: &str = "DELETE FROM users WHERE username_key = $1";
pub(crate) const COUNT_USERS: &str = "SELECT COUNT(*) FROM users";
pub(crate) const PUT_SETTING: &str = "INSERT INTO settings (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";
pub(crate) const GET_SETTING: &str = "SELECT value FROM settings WHERE key = $1";
/// Replaces a hash only if it is still the one that was read (`$2`), so a
/// concurrent change of password is never overwritten.
pub(crate) const REPLACE_HASH: &str =
    "UPDATE users SET password_hash = $3 WHERE username_key = $1 AND password_hash = $2";
/// Stored hashes by bcrypt cost (`$2b$CC$…`: characters 5 and 6).
pub(crate) const HASH_COSTS: &str =
    "SELECT substr(password_hash, 5, 2) AS cost, COUNT(*) AS n FROM users GROUP BY substr(password_hash, 5, 2)";

/// Implements [`UserStore`](crate::store::UserStore) for a struct with a
/// `pool` field, given its row type and the backend's "find one" and "list all" queries.
macro_rules! impl_user_store {
    ($store:ty, $row:ty, $find_sql:expr, $list_sql:expr $(, { $($own:item)* })?) => {
        impl $store {
            fn row_to_user(row: &$row) -> Result<$crate::store::StoredUser, sqlx::Error> {
                use sqlx::Row;
                Ok($crate::store::StoredUser {
                    username: row.try_get("username")?,
                    account_id: row.try_get("account_id")?,
                    password_hash: row.try_get("password_hash")?,
                    created_at: row.try_get("created_at")?,
                    scopes: $crate::store::split_scopes(row.try_get("scopes")?),
                    disabled: row.try_get::<i64, _>("disabled")? != 0,
                    epoch: row.try_get("credentials_epoch")?,
                })
            }

            /// Runs `sql` (`$1` = username key, `$2` = scope) for each scope
            /// of an existing user, then returns the user as it now is.
            async fn apply_to_scopes(
                &self,
                sql: &'static str,
                username: &$crate::user::Username,
                scopes: &[$crate::user::Scope],
            ) -> Result<$crate::store::StoredUser, $crate::store::StoreError> {
                self.require_user(username).await?;
                for scope in scopes {
                    sqlx::query(sql)
                        .bind(username.key())
                        .bind(scope.as_str())
                        .execute(&self.pool)
                        .await?;
                }
                self.require_user(username).await
            }

            async fn require_user(
                &self,
                username: &$crate::user::Username,
            ) -> Result<$crate::store::StoredUser, $crate::store::StoreError> {
                use $crate::store::UserStore;
                self.find_user(username.as_str())
                    .await?
                    .ok_or($crate::store::StoreError::NotFound)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::UserStore for $store {
            async fn create_user(
                &self,
                username: &$crate::user::Username,
                password_hash: &str,
                created_at: i64,
            ) -> Result<$crate::store::StoredUser, $crate::store::StoreError> {
                let account_id = $crate::store::new_account_id();
                let inserted = sqlx::query($crate::store::sql::INSERT_USER)
                    .bind(username.as_str())
                    .bind(username.key())
                    .bind(password_hash)
                    .bind(created_at)
                    .bind(account_id.as_str())
                    .execute(&self.pool)
                    .await;
                match inserted {
                    Ok(_) => Ok($crate::store::StoredUser {
                        username: username.as_str().to_owned(),
                        account_id,
                        password_hash: password_hash.to_owned(),
                        scopes: Vec::new(),
                        created_at,
                        disabled: false,
                        epoch: 0,
                    }),
                    Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                        Err($crate::store::StoreError::UsernameTaken)
                    }
                    Err(e) => Err(e.into()),
                }
            }

            async fn find_user(
                &self,
                username: &str,
            ) -> Result<Option<$crate::store::StoredUser>, $crate::store::StoreError> {
                let row = sqlx::query($find_sql)
                    .bind(username.to_ascii_lowercase())
                    .fetch_optional(&self.pool)
                    .await?;
                Ok(row.as_ref().map(Self::row_to_user).transpose()?)
            }

            async fn grant(
                &self,
                username: &$crate::user::Username,
                scopes: &[$crate::user::Scope],
            ) -> Result<$crate::store::StoredUser, $crate::store::StoreError> {
                self.apply_to_scopes($crate::store::sql::GRANT_SCOPE, username, scopes)
                    .await
            }

            async fn revoke(
                &self,
                username: &$crate::user::Username,
                scopes: &[$crate::user::Scope],
            ) -> Result<$crate::store::StoredUser, $crate::store::StoreError> {
                self.apply_to_scopes($crate::store::sql::REVOKE_SCOPE, username, scopes)
                    .await
            }

            async fn delete_user(
                &self,
                username: &$crate::user::Username,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::DELETE_USER)
                    .bind(username.key())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn list_users(
                &self,
            ) -> Result<Vec<$crate::store::StoredUser>, $crate::store::StoreError> {
                let rows = sqlx::query($list_sql).fetch_all(&self.pool).await?;
                Ok(rows
                    .iter()
                    .map(Self::row_to_user)
                    .collect::<Result<Vec<_>, _>>()?)
            }

            async fn count_users(&self) -> Result<u64, $crate::store::StoreError> {
                let count: i64 = sqlx::query_scalar($crate::store::sql::COUNT_USERS)
                    .fetch_one(&self.pool)
                    .await?;
                Ok(u64::try_from(count).unwrap_or(0))
            }

            async fn replace_password_hash(
                &self,
                username: &str,
                old_hash: &str,
                new_hash: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query($crate::store::sql::REPLACE_HASH)
                    .bind(username.to_ascii_lowercase())
                    .bind(old_hash)
                    .bind(new_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() > 0)
            }

            async fn password_hash_costs(
                &self,
            ) -> Result<Vec<(u32, u64)>, $crate::store::StoreError> {
                use sqlx::Row;
                let rows = sqlx::query($crate::store::sql::HASH_COSTS)
                    .fetch_all(&self.pool)
                    .await?;
                let mut costs = Vec::with_capacity(rows.len());
                for row in &rows {
                    let cost: Option<String> = row.try_get("cost")?;
                    let n: i64 = row.try_get("n")?;
                    if let (Some(cost), Ok(n)) =
                        (cost.and_then(|c| c.parse().ok()), u64::try_from(n))
                    {
                        costs.push((cost, n));
                    }
                }
                Ok(costs)
            }

            async fn set_disabled(
                &self,
                username: &$crate::user::Username,
                disabled: bool,
                now: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                self.sessions_set_disabled(username, disabled, now).await
            }

            async fn open_session(
                &self,
                new: $crate::session::NewSession<'_>,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                self.sessions_open(new).await
            }

            async fn find_session(
                &self,
                session_id: &str,
            ) -> Result<
                Option<std::sync::Arc<$crate::session::SessionState>>,
                $crate::store::StoreError,
            > {
                self.sessions_find(session_id).await
            }

            async fn find_refresh(
                &self,
                hash: &str,
            ) -> Result<Option<$crate::session::RefreshRecord>, $crate::store::StoreError> {
                self.sessions_find_refresh(hash).await
            }

            async fn rotate_refresh(
                &self,
                record: &$crate::session::RefreshRecord,
                new_hash: &str,
                now: i64,
                new_expires_at: i64,
                history: u32,
            ) -> Result<$crate::session::Rotation, $crate::store::StoreError> {
                self.sessions_rotate(record, new_hash, now, new_expires_at, history)
                    .await
            }

            async fn end_session(
                &self,
                session_id: &str,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                self.sessions_end(session_id, now).await
            }

            async fn end_sessions(
                &self,
                username: &str,
                keep: Option<&str>,
                now: i64,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                self.sessions_end_everywhere(username, keep, now).await
            }

            async fn change_password(
                &self,
                username: &str,
                old_hash: &str,
                new_hash: &str,
                keep: Option<&str>,
                now: i64,
            ) -> Result<Option<Vec<String>>, $crate::store::StoreError> {
                self.sessions_change_password(username, old_hash, new_hash, keep, now)
                    .await
            }

            async fn live_session_counts(
                &self,
                now: i64,
            ) -> Result<Vec<(String, u64)>, $crate::store::StoreError> {
                self.sessions_live_counts(now).await
            }

            async fn purge_sessions(&self, horizon: i64) -> Result<u64, $crate::store::StoreError> {
                self.sessions_purge(horizon).await
            }

            async fn session_rows(&self) -> Result<(u64, u64), $crate::store::StoreError> {
                self.sessions_rows().await
            }

            async fn put_setting(
                &self,
                key: &str,
                value: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::sql::PUT_SETTING)
                    .bind(key)
                    .bind(value)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn announce(
                &self,
                change: &$crate::store::AdminChange<'_>,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::session_sql::HasDb;
                sqlx::query(<$store as HasDb>::ANNOUNCE)
                    .bind(change.key())
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn setting(
                &self,
                key: &str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                Ok(sqlx::query_scalar($crate::store::sql::GET_SETTING)
                    .bind(key)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            $($($own)*)?
        }
    };
}
pub(crate) use impl_user_store;
