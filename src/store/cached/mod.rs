//! The exact in-memory auth state: a [`UserStore`] that answers
//! `find_user` from memory for the users active callers use, and is never
//! stale.
//!
//! Every secured call needs its caller's account (scopes, account id; an
//! [`Account`], never the password hash). Reading
//! it from the store on each call is what made revocation immediate, and it
//! cost most of a call's time (sqlx hands every SQLite query to another
//! thread and back). Here the users recently asked for are kept in a
//! bounded LRU map, and the map is kept exact:
//!
//! - **writes through this store** (sign_up, the re-hash after sign_in, and
//!   grant/revoke/delete through any code path of this process) drop the
//!   user's entry before the write returns, so the very next call reads it
//!   again;
//! - **SQLite, other processes** (`rpcguard user …` while the server runs,
//!   or another server on the same file): before each lookup, the
//!   WAL-index header is compared with the last one seen — a few memory
//!   reads, no system call, no lock (`store/wal_index.rs`; the feed is in
//!   `cached/sqlite.rs`). It changes
//!   with every commit of any process, and then (once per commit, not per
//!   call) the change log is read: triggers (migration 0003) append the
//!   name of every account whose row or scopes changed, and just those
//!   users are dropped. So the first call that starts after the CLI
//!   command returned reads that user from the store, and the other users
//!   stay in memory. If entries were purged before this process read them,
//!   the whole map is dropped instead. Entries older than
//!   [`CHANGE_LOG_RETENTION`] are purged every minute;
//! - **PostgreSQL, other instances and the CLI**: triggers announce every
//!   change of an account or its scopes on the channel `rpcguard_users`
//!   (migration 0003) and a background task LISTENs and drops that user.
//!   The answer is then exact once the notification has arrived (the
//!   README gives the measured delay). While the listening connection is
//!   down, the map is not used at all: every lookup reads the store, and the
//!   map starts empty once the connection is back.
//!
//! **Sessions** are kept the same way, beside the accounts, in a second
//! LRU map of the same capacity keyed by session id: whether each has
//! ended, its account and its scope limit (never a refresh token or its
//! hash). Ending a session through this store drops its entry before the
//! write returns; the change log (SQLite) and the NOTIFY channel
//! (PostgreSQL) carry the end of a session made by any other process as
//! the key `s:<session id>` (migration 0004), and that entry is dropped.
//! So `sign_out`, reuse detection, `change_password`, `user disable` and
//! `user sign-out` stop the session's access tokens at the next call, with
//! no store read per call. Rotation changes nothing the auth check reads,
//! so it invalidates nothing.
//!
//! **Key set** (PostgreSQL only): the same channel carries `k:` when the
//! key set in the database changed (migration 0005); the listener wakes
//! [`CachedStore::key_changes`], and the key watcher
//! ([`crate::keys::db::watch_key_table`]) reads the set again. A reconnect
//! wakes it too.
//!
//! A race between a lookup that reads the store and a write that drops the
//! entry is settled by a generation counter: a read is kept only if no
//! invalidation happened while it was in flight.
//!
//! Memory: at most `capacity` users (least recently used go first), each a
//! few hundred bytes; unknown names are never kept. A restart starts empty
//! and costs one store read per active user.

#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hashlink::LruCache;

use crate::front::{self, Front, Slots};

use super::{Account, AdminChange, SharedDraw, SharedStore, StoreError, StoredUser, UserStore};
use crate::session::{NewSession, RefreshRecord, Rotation, SessionState};
use crate::user::{Scope, Username};

/// The PostgreSQL channel the triggers of migration 0003 notify.
pub const CHANGES_CHANNEL: &str = "rpcguard_users";

/// Users kept in memory by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// How long SQLite change-log entries are kept: far longer than any
/// server goes without looking (it looks before every call); one that has
/// been idle longer drops its whole map instead.
pub const CHANGE_LOG_RETENTION: Duration = Duration::from_secs(600);

/// The prefix of a change-log key (or NOTIFY payload) that names a session.
pub const SESSION_KEY_PREFIX: &str = "s:";

/// The NOTIFY payload that announces a change of the key set in the
/// database (migration 0005; see [`crate::keys::db`]).
pub const KEYS_CHANGED_KEY: &str = "k:";

thread_local! {
    /// This thread's copies of cached accounts (see [`crate::front`]).
    static ACCOUNTS: std::cell::RefCell<Slots<Arc<Account>>> = std::cell::RefCell::default();
    /// This thread's copies of cached sessions.
    static SESSIONS: std::cell::RefCell<Slots<Arc<SessionState>>> = std::cell::RefCell::default();
}

/// A [`UserStore`] with an exact in-memory copy of recently used users and
/// sessions.
pub struct CachedStore {
    inner: SharedStore,
    users: Mutex<LruCache<String, Arc<Account>>>,
    sessions: Mutex<LruCache<String, Arc<SessionState>>>,
    /// The generation of `users` and `sessions`, moved before and after
    /// every change of either map (see [`CachedStore::change_maps`]), and
    /// the per-thread copies it makes stale (see [`crate::front`]).
    front: Front,
    freshness: Freshness,
    /// Woken when the PostgreSQL feed announces a change of the key set
    /// (or reconnects, when anything may have changed).
    keys_changed: Arc<tokio::sync::Notify>,
}

/// How the map learns of writes made outside this process.
enum Freshness {
    /// The WAL-index header and the change log.
    #[cfg(feature = "sqlite")]
    Sqlite(sqlite::SqliteFeed),
    /// A LISTEN task; the map is used only while it is connected.
    #[cfg(feature = "postgres")]
    Postgres(postgres::PgFeed),
}

impl std::fmt::Debug for CachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedStore")
            .field("inner", &self.inner)
            .field("cached", &self.cached_users())
            .finish()
    }
}

impl CachedStore {
    fn new(inner: SharedStore, capacity: usize, freshness: Freshness) -> Self {
        CachedStore {
            inner,
            users: Mutex::new(LruCache::new(capacity.max(1))),
            sessions: Mutex::new(LruCache::new(capacity.max(1))),
            front: Front::default(),
            freshness,
            keys_changed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// What the change feed wakes when the key set in the database changed
    /// (PostgreSQL only; on SQLite it is never woken): the key watcher
    /// ([`crate::keys::db::watch_key_table`]) reads the set again then.
    pub fn key_changes(&self) -> Arc<tokio::sync::Notify> {
        self.keys_changed.clone()
    }

    /// The number of users held in memory now.
    pub fn cached_users(&self) -> usize {
        self.users.lock().map_or(0, |u| u.len())
    }

    /// Whether the PostgreSQL change feed is connected (always true on
    /// SQLite).
    pub fn is_live(&self) -> bool {
        match &self.freshness {
            #[cfg(feature = "sqlite")]
            Freshness::Sqlite(_) => true,
            #[cfg(feature = "postgres")]
            Freshness::Postgres(feed) => feed.live.load(Ordering::Acquire),
        }
    }

    /// The number of sessions held in memory now.
    pub fn cached_sessions(&self) -> usize {
        self.sessions.lock().map_or(0, |s| s.len())
    }

    /// Runs `change`, which removes entries of the maps. The generation
    /// moves before it, so that a store read in flight does not put back
    /// what it read, and after it, so that every thread's copy read before
    /// the change has landed is stale.
    fn change_maps(&self, change: impl FnOnce()) {
        self.front.invalidate();
        change();
        self.front.invalidate();
    }

    /// Drops `key`'s entry: a user's lower-cased name, or a session as
    /// `s:<id>` (and makes reads in flight not keep theirs).
    fn forget(&self, key: &str) {
        self.change_maps(|| {
            if let Some(session) = key.strip_prefix(SESSION_KEY_PREFIX) {
                if let Ok(mut sessions) = self.sessions.lock() {
                    sessions.remove(session);
                }
            } else if let Ok(mut users) = self.users.lock() {
                users.remove(key);
            }
        });
    }

    /// Drops the entries of these sessions.
    fn forget_sessions(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        self.change_maps(|| {
            if let Ok(mut sessions) = self.sessions.lock() {
                for id in ids {
                    sessions.remove(id);
                }
            }
        });
    }

    /// Drops every user held in memory, so the next lookup of each reads the
    /// store. Row changes reach the copy by themselves; this is for changes
    /// that are not row changes, such as a database restored behind the
    /// server's back on PostgreSQL (no trigger fires for that).
    pub fn clear(&self) {
        self.forget_all();
    }

    /// Drops every session entry (after a write that failed half-way may
    /// have ended some).
    fn forget_all_sessions(&self) {
        self.change_maps(|| {
            if let Ok(mut sessions) = self.sessions.lock() {
                sessions.clear();
            }
        });
    }

    /// Drops every entry.
    fn forget_all(&self) {
        self.change_maps(|| {
            if let Ok(mut users) = self.users.lock() {
                users.clear();
            }
            if let Ok(mut sessions) = self.sessions.lock() {
                sessions.clear();
            }
        });
    }

    /// Whether the map may answer now; on SQLite, the users changed by
    /// commits since the last look are dropped first.
    fn usable(&self) -> bool {
        match &self.freshness {
            #[cfg(feature = "sqlite")]
            Freshness::Sqlite(feed) => feed.seen.matches(feed.wal.stamp()) || self.catch_up(feed),
            #[cfg(feature = "postgres")]
            Freshness::Postgres(feed) => feed.live.load(Ordering::Acquire),
        }
    }
}

#[async_trait]
impl UserStore for CachedStore {
    async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
        created_at: i64,
    ) -> Result<StoredUser, StoreError> {
        let created = self
            .inner
            .create_user(username, password_hash, created_at)
            .await;
        self.forget(&username.key());
        created
    }

    /// Always reads the store: `sign_in` needs the password hash, which is
    /// never kept in memory.
    async fn find_user(&self, username: &str) -> Result<Option<StoredUser>, StoreError> {
        self.inner.find_user(username).await
    }

    async fn find_account(&self, username: &str) -> Result<Option<Arc<Account>>, StoreError> {
        if !self.usable() {
            return self.inner.find_account(username).await;
        }
        let key = if username.bytes().any(|b| b.is_ascii_uppercase()) {
            std::borrow::Cow::Owned(username.to_ascii_lowercase())
        } else {
            std::borrow::Cow::Borrowed(username)
        };
        let seen = self.front.generation();
        let shared = || self.users.lock().ok()?.get(key.as_ref()).cloned();
        if let Some(account) = front::through(&ACCOUNTS, seen, &key, shared, |a| {
            Arc::new(a.private_copy())
        }) {
            return Ok(Some(account));
        }
        let account = self.inner.find_account(username).await?;
        if let Some(account) = &account {
            if let Ok(mut users) = self.users.lock() {
                if self.front.generation() == seen {
                    users.insert(key.into_owned(), account.clone());
                }
            }
        }
        Ok(account)
    }

    async fn grant(&self, username: &Username, scopes: &[Scope]) -> Result<StoredUser, StoreError> {
        let granted = self.inner.grant(username, scopes).await;
        self.forget(&username.key());
        granted
    }

    async fn revoke(
        &self,
        username: &Username,
        scopes: &[Scope],
    ) -> Result<StoredUser, StoreError> {
        let revoked = self.inner.revoke(username, scopes).await;
        self.forget(&username.key());
        revoked
    }

    async fn delete_user(&self, username: &Username) -> Result<bool, StoreError> {
        let deleted = self.inner.delete_user(username).await;
        self.forget(&username.key());
        deleted
    }

    async fn list_users(&self) -> Result<Vec<StoredUser>, StoreError> {
        self.inner.list_users().await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        self.inner.count_users().await
    }

    async fn replace_password_hash(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        let replaced = self
            .inner
            .replace_password_hash(username, old_hash, new_hash)
            .await;
        self.forget(&username.to_ascii_lowercase());
        replaced
    }

    async fn password_hash_costs(&self) -> Result<Vec<(u32, u64)>, StoreError> {
        self.inner.password_hash_costs().await
    }

    async fn set_disabled(
        &self,
        username: &Username,
        disabled: bool,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let changed = self.inner.set_disabled(username, disabled, now).await;
        self.forget(&username.key());
        match &changed {
            Ok(ended) => self.forget_sessions(ended),
            Err(_) => self.forget_all_sessions(),
        }
        changed
    }

    async fn open_session(&self, new: NewSession<'_>) -> Result<Vec<String>, StoreError> {
        let opened = self.inner.open_session(new).await;
        match &opened {
            // The oldest sessions beyond the bound ended.
            Ok(ended) => self.forget_sessions(ended),
            Err(StoreError::NotFound) => {}
            Err(_) => self.forget_all_sessions(),
        }
        opened
    }

    async fn find_session(
        &self,
        session_id: &str,
    ) -> Result<Option<Arc<SessionState>>, StoreError> {
        if !self.usable() {
            return self.inner.find_session(session_id).await;
        }
        let seen = self.front.generation();
        let shared = || self.sessions.lock().ok()?.get(session_id).cloned();
        if let Some(session) = front::through(&SESSIONS, seen, session_id, shared, |s| {
            Arc::new(SessionState::clone(s))
        }) {
            return Ok(Some(session));
        }
        let session = self.inner.find_session(session_id).await?;
        if let Some(session) = &session {
            if let Ok(mut sessions) = self.sessions.lock() {
                if self.front.generation() == seen {
                    sessions.insert(session_id.to_owned(), session.clone());
                }
            }
        }
        Ok(session)
    }

    async fn find_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError> {
        self.inner.find_refresh(hash).await
    }

    async fn rotate_refresh(
        &self,
        record: &RefreshRecord,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
        history: u32,
    ) -> Result<Rotation, StoreError> {
        let rotation = self
            .inner
            .rotate_refresh(record, new_hash, now, new_expires_at, history)
            .await;
        match &rotation {
            // Reuse ended the session.
            Ok(Rotation::Reused { session_id, .. }) => {
                self.forget_sessions(std::slice::from_ref(session_id))
            }
            Ok(_) => {}
            // It may have ended a session before failing.
            Err(_) => self.forget_all_sessions(),
        }
        rotation
    }

    async fn end_session(&self, session_id: &str, now: i64) -> Result<bool, StoreError> {
        let ended = self.inner.end_session(session_id, now).await;
        self.forget_sessions(&[session_id.to_owned()]);
        ended
    }

    async fn end_sessions(
        &self,
        username: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        let ended = self.inner.end_sessions(username, keep, now).await;
        match &ended {
            Ok(ids) => self.forget_sessions(ids),
            Err(_) => self.forget_all_sessions(),
        }
        ended
    }

    async fn change_password(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let changed = self
            .inner
            .change_password(username, old_hash, new_hash, keep, now)
            .await;
        self.forget(&username.to_ascii_lowercase());
        match &changed {
            Ok(Some(ids)) => self.forget_sessions(ids),
            Ok(None) => {}
            Err(_) => self.forget_all_sessions(),
        }
        changed
    }

    async fn live_session_counts(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.live_session_counts(now).await
    }

    async fn purge_sessions(&self, horizon: i64) -> Result<u64, StoreError> {
        self.inner.purge_sessions(horizon).await
    }

    async fn session_rows(&self) -> Result<(u64, u64), StoreError> {
        self.inner.session_rows().await
    }

    async fn draw_shared(&self, draws: &[SharedDraw]) -> Result<Option<u64>, StoreError> {
        self.inner.draw_shared(draws).await
    }

    async fn purge_shared_budgets(&self) -> Result<u64, StoreError> {
        self.inner.purge_shared_budgets().await
    }

    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.inner.put_setting(key, value).await
    }

    async fn announce(&self, change: &AdminChange<'_>) -> Result<(), StoreError> {
        self.inner.announce(change).await
    }

    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.inner.setting(key).await
    }
}
