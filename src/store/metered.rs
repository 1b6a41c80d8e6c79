//! A [`UserStore`] that times every operation of the store it wraps into
//! the server's metrics (`rpcguard_store_duration_seconds{op}`,
//! `rpcguard_store_errors_total`). It sits below the in-memory auth state
//! ([`CachedStore`](super::CachedStore)), so only real database round trips
//! are counted, never a call answered from memory.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{Account, SharedDraw, SharedStore, StoreError, StoredUser, UserStore};
use crate::metrics::AccountMetrics;
use crate::session::{NewSession, RefreshRecord, Rotation, SessionState};
use crate::user::{Scope, Username};

/// The decorator.
#[derive(Debug)]
pub struct MeteredStore {
    inner: SharedStore,
    metrics: AccountMetrics,
}

impl MeteredStore {
    /// Times every operation of `inner` into `metrics`.
    pub fn new(inner: SharedStore, metrics: AccountMetrics) -> Self {
        MeteredStore { inner, metrics }
    }

    async fn time<T>(
        &self,
        op: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = work.await;
        // A refused insert (a taken name) is an answer, not a failure.
        let failed = matches!(&result, Err(e) if !matches!(e, StoreError::UsernameTaken | StoreError::NotFound));
        self.metrics.store_op(op, started.elapsed(), failed);
        result
    }
}

#[async_trait]
impl UserStore for MeteredStore {
    async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
        created_at: i64,
    ) -> Result<StoredUser, StoreError> {
        let work = self.inner.create_user(username, password_hash, created_at);
        self.time("create_user", work).await
    }

    async fn find_user(&self, username: &str) -> Result<Option<StoredUser>, StoreError> {
        self.time("find_user", self.inner.find_user(username)).await
    }

    async fn find_account(&self, username: &str) -> Result<Option<Arc<Account>>, StoreError> {
        self.time("find_account", self.inner.find_account(username))
            .await
    }

    async fn grant(&self, username: &Username, scopes: &[Scope]) -> Result<StoredUser, StoreError> {
        self.time("grant", self.inner.grant(username, scopes)).await
    }

    async fn revoke(
        &self,
        username: &Username,
        scopes: &[Scope],
    ) -> Result<StoredUser, StoreError> {
        self.time("revoke", self.inner.revoke(username, scopes))
            .await
    }

    async fn delete_user(&self, username: &Username) -> Result<bool, StoreError> {
        self.time("delete_user", self.inner.delete_user(username))
            .await
    }

    async fn list_users(&self) -> Result<Vec<StoredUser>, StoreError> {
        self.time("list_users", self.inner.list_users()).await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.time("count_users", self.inner.count_users()).await
    }

    async fn replace_password_hash(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        let work = self
            .inner
            .replace_password_hash(username, old_hash, new_hash);
        self.time("replace_password_hash", work).await
    }

    async fn password_hash_costs(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.time("password_hash_costs", self.inner.password_hash_costs())
            .await
    }

    async fn set_disabled(
        &self,
        username: &Username,
        disabled: bool,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let work = self.inner.set_disabled(username, disabled, now);
        self.time("set_disabled", work).await
    }

    async fn open_session(&self, new: NewSession<'_>) -> Result<Vec<String>, StoreError> {
        self.time("open_session", self.inner.open_session(new))
            .await
    }

    async fn find_session(
        &self,
        session_id: &str,
    ) -> Result<Option<Arc<SessionState>>, StoreError> {
        self.time("find_session", self.inner.find_session(session_id))
            .await
    }

    async fn find_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.time("find_refresh", self.inner.find_refresh(hash))
            .await
    }

    async fn rotate_refresh(
        &self,
        record: &RefreshRecord,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
        history: u32,
    ) -> Result<Rotation, StoreError> {
        let work = self
            .inner
            .rotate_refresh(record, new_hash, now, new_expires_at, history);
        self.time("rotate_refresh", work).await
    }

    async fn end_session(&self, session_id: &str, now: i64) -> Result<bool, StoreError> {
        self.time("end_session", self.inner.end_session(session_id, now))
            .await
    }

    async fn end_sessions(
        &self,
        username: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let work = self.inner.end_sessions(username, keep, now);
        self.time("end_sessions", work).await
    }

    async fn change_password(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let work = self
            .inner
            .change_password(username, old_hash, new_hash, keep, now);
        self.time("change_password", work).await
    }

    async fn live_session_counts(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.time("live_session_counts", self.inner.live_session_counts(now))
            .await
    }

    async fn purge_sessions(&self, horizon: i64) -> Result<u64, StoreError> {
        self.time("purge_sessions", self.inner.purge_sessions(horizon))
            .await
    }

    async fn session_rows(&self) -> Result<(u64, u64), StoreError> {
        self.time("session_rows", self.inner.session_rows()).await
    }

    async fn draw_shared(&self, draws: &[SharedDraw]) -> Result<Option<u64>, StoreError> {
        self.time("draw_shared", self.inner.draw_shared(draws))
            .await
    }

    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.time("put_setting", self.inner.put_setting(key, value))
            .await
    }

    async fn announce(&self, change: &super::AdminChange<'_>) -> Result<(), StoreError> {
        self.time("announce", self.inner.announce(change)).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.time("setting", self.inner.setting(key)).await
    }

    async fn purge_shared_budgets(&self) -> Result<u64, StoreError> {
        self.time("purge_shared_budgets", self.inner.purge_shared_budgets())
            .await
    }
}
