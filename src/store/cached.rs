//! The exact in-memory auth state: a [`UserStore`] that answers
//! `find_user` from memory for the users active callers use, and is never
//! stale.
//!
//! Every secured call needs its caller's user (scopes, account id). Reading
//! it from the store on each call is what made revocation immediate, and it
//! cost most of a call's time (sqlx hands every SQLite query to another
//! thread and back). Here the users recently asked for are kept in a
//! bounded LRU map, and the map is kept exact:
//!
//! - **writes through this store** (sign_up, the re-hash after sign_in, and
//!   grant/revoke/delete through any code path of this process) drop the
//!   user's entry before the write returns, so the very next call reads it
//!   again;
//! - **SQLite, other processes** (`rpcguard user …` while the server runs):
//!   before each lookup, `PRAGMA data_version` is read on a connection
//!   opened directly (rusqlite, in the caller's thread; one connection per
//!   core, so calls do not queue for it). It changes whenever another
//!   connection has committed, so the map is emptied and the first call
//!   that starts after the CLI command returned reads the store;
//! - **PostgreSQL, other instances and the CLI**: triggers announce every
//!   change of an account or its scopes on the channel `rpcguard_users`
//!   (migration 0003) and a background task LISTENs and drops that user.
//!   The answer is then exact once the notification has arrived (the
//!   README gives the measured delay). While the listening connection is
//!   down, the map is not used at all: every lookup reads the store, and the
//!   map starts empty once the connection is back.
//!
//! A race between a lookup that reads the store and a write that drops the
//! entry is settled by a generation counter: a read is kept only if no
//! invalidation happened while it was in flight.
//!
//! Memory: at most `capacity` users (least recently used go first), each a
//! few hundred bytes; unknown names are never kept. A restart starts empty
//! and costs one store read per active user.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use hashlink::LruCache;

use super::{SharedStore, StoreError, StoredUser, UserStore};
use crate::user::{Scope, Username};

/// The PostgreSQL channel the triggers of migration 0003 notify.
pub const CHANGES_CHANNEL: &str = "rpcguard_users";

/// Users kept in memory by default.
pub const DEFAULT_CAPACITY: usize = 100_000;

/// A [`UserStore`] with an exact in-memory copy of recently used users.
pub struct CachedStore {
    inner: SharedStore,
    users: Mutex<LruCache<String, StoredUser>>,
    generation: AtomicU64,
    freshness: Freshness,
}

/// How the map learns of writes made outside this process.
enum Freshness {
    /// `PRAGMA data_version` on dedicated SQLite connections, one per core
    /// so that the async workers do not queue for one. Each connection
    /// sees every commit made since its own last look, so whichever a call
    /// uses, a commit before the call is noticed.
    Sqlite(Vec<Mutex<DataVersion>>),
    /// A LISTEN task; the map is used only while it is connected.
    Postgres(PgFeed),
}

struct DataVersion {
    conn: rusqlite::Connection,
    last: i64,
}

struct PgFeed {
    live: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PgFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
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
    /// Wraps the SQLite store at `path`, reading its `data_version` on a
    /// connection of its own.
    pub fn sqlite(
        inner: SharedStore,
        path: &std::path::Path,
        capacity: usize,
    ) -> Result<Arc<Self>, StoreError> {
        use rusqlite::OpenFlags;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let probes = (0..cores.clamp(1, 16))
            .map(|_| {
                let conn = rusqlite::Connection::open_with_flags(path, flags)?;
                let last = read_data_version(&conn)?;
                Ok(Mutex::new(DataVersion { conn, last }))
            })
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(|e| StoreError::Probe(e.to_string()))?;
        Ok(Arc::new(Self::new(
            inner,
            capacity,
            Freshness::Sqlite(probes),
        )))
    }

    /// Wraps the PostgreSQL store at `url`, listening for changes on
    /// [`CHANGES_CHANNEL`] in a background task (stopped when the store is
    /// dropped).
    pub fn postgres(inner: SharedStore, url: &str, capacity: usize) -> Arc<Self> {
        let live = Arc::new(AtomicBool::new(false));
        let url = url.to_owned();
        Arc::new_cyclic(|me: &Weak<CachedStore>| {
            let task = tokio::spawn(listen(url, me.clone(), live.clone()));
            Self::new(inner, capacity, Freshness::Postgres(PgFeed { live, task }))
        })
    }

    fn new(inner: SharedStore, capacity: usize, freshness: Freshness) -> Self {
        CachedStore {
            inner,
            users: Mutex::new(LruCache::new(capacity.max(1))),
            generation: AtomicU64::new(0),
            freshness,
        }
    }

    /// The number of users held in memory now.
    pub fn cached_users(&self) -> usize {
        self.users.lock().map_or(0, |u| u.len())
    }

    /// Whether the PostgreSQL change feed is connected (always true on
    /// SQLite).
    pub fn is_live(&self) -> bool {
        match &self.freshness {
            Freshness::Sqlite(_) => true,
            Freshness::Postgres(feed) => feed.live.load(Ordering::Acquire),
        }
    }

    /// Drops `key`'s entry (and makes reads in flight not keep theirs).
    fn forget(&self, key: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut users) = self.users.lock() {
            users.remove(key);
        }
    }

    /// Drops every user held in memory, so the next lookup of each reads the
    /// store. Row changes reach the copy by themselves; this is for changes
    /// that are not row changes, such as a database restored behind the
    /// server's back on PostgreSQL (no trigger fires for that).
    pub fn clear(&self) {
        self.forget_all();
    }

    /// Drops every entry.
    fn forget_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut users) = self.users.lock() {
            users.clear();
        }
    }

    /// Whether the map may answer now; on SQLite it is emptied first when
    /// another connection has committed since the last look.
    fn usable(&self) -> bool {
        match &self.freshness {
            Freshness::Sqlite(probes) => {
                let Some(mut probe) = any_probe(probes) else {
                    return false;
                };
                match read_data_version(&probe.conn) {
                    Ok(version) if version == probe.last => true,
                    Ok(version) => {
                        probe.last = version;
                        self.forget_all();
                        true
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot read data_version; reading the store");
                        false
                    }
                }
            }
            Freshness::Postgres(feed) => feed.live.load(Ordering::Acquire),
        }
    }
}

/// A free probe connection, or (all busy) the first one once it is free.
fn any_probe(probes: &[Mutex<DataVersion>]) -> Option<std::sync::MutexGuard<'_, DataVersion>> {
    probes
        .iter()
        .find_map(|probe| probe.try_lock().ok())
        .or_else(|| probes.first()?.lock().ok())
}

fn read_data_version(conn: &rusqlite::Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("PRAGMA data_version")?
        .query_row([], |row| row.get(0))
}

/// Listens for changes until the store is dropped, reconnecting with a
/// growing pause (100 ms to 2 s) after a lost connection.
async fn listen(url: String, store: Weak<CachedStore>, live: Arc<AtomicBool>) {
    let mut pause = Duration::from_millis(100);
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => match listener.listen(CHANGES_CHANNEL).await {
                Ok(()) => {
                    // Anything may have changed while nobody listened.
                    let Some(cache) = store.upgrade() else { return };
                    cache.forget_all();
                    live.store(true, Ordering::Release);
                    drop(cache);
                    pause = Duration::from_millis(100);
                    tracing::debug!("listening for account changes");
                    // `Ok(None)` or an error: the connection is gone.
                    while let Ok(Some(note)) = listener.try_recv().await {
                        let Some(cache) = store.upgrade() else { return };
                        match note.payload() {
                            "" => cache.forget_all(),
                            key => cache.forget(key),
                        }
                    }
                }
                Err(err) => tracing::warn!(error = %err, "cannot LISTEN for account changes"),
            },
            Err(err) => {
                tracing::warn!(error = %err, "cannot connect to LISTEN for account changes")
            }
        }
        live.store(false, Ordering::Release);
        match store.upgrade() {
            Some(cache) => cache.forget_all(),
            None => return,
        }
        tracing::warn!(
            "lost the account-change feed; reading the store on every call until it is back"
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
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

    async fn find_user(&self, username: &str) -> Result<Option<StoredUser>, StoreError> {
        if !self.usable() {
            return self.inner.find_user(username).await;
        }
        let key = username.to_ascii_lowercase();
        if let Ok(mut users) = self.users.lock() {
            if let Some(user) = users.get(&key) {
                return Ok(Some(user.clone()));
            }
        }
        let generation = self.generation.load(Ordering::Acquire);
        let user = self.inner.find_user(username).await?;
        if let Some(user) = &user {
            if let Ok(mut users) = self.users.lock() {
                if self.generation.load(Ordering::Acquire) == generation {
                    users.insert(key, user.clone());
                }
            }
        }
        Ok(user)
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
}
