//! Where accounts live: the [`UserStore`] trait and its two implementations,
//! SQLite (embedded default) and PostgreSQL (several server instances).
//!
//! Rules every implementation keeps:
//! - usernames are unique case-insensitively, by a database constraint on
//!   the lower-cased key (never check-then-insert), and a violation is
//!   reported as [`StoreError::UsernameTaken`];
//! - an acknowledged `create_user` is durable (it survives `kill -9`);
//! - every account gets an id of its own ([`StoredUser::account_id`]), never
//!   reused, even for a later account of the same name;
//! - the schema is created or migrated when the store is opened.

mod cached;
mod metered;
#[cfg(feature = "postgres")]
mod postgres;
mod session_sql;
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(feature = "sqlite")]
mod wal_index;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::format_rfc3339;
use crate::session::{NewSession, RefreshRecord, Rotation, SessionState};
use crate::user::{Scope, User, Username, BEARER};
use rpcguard::error::RpcError;
use rpcguard::security::Caller;

pub use cached::{
    CachedStore, CHANGES_CHANNEL, CHANGE_LOG_RETENTION, DEFAULT_CAPACITY, KEYS_CHANGED_KEY,
    SESSION_KEY_PREFIX,
};
pub use metered::MeteredStore;
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;

/// Errors of a user store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The username (case-insensitively) already exists.
    #[error("username taken")]
    UsernameTaken,
    /// No such user.
    #[error("no such user")]
    NotFound,
    /// The database failed; the detail is for the log only.
    #[error("database error: {0}")]
    Database(sqlx::Error),
    /// The SQLite change watch (WAL-index and change log) could not be set up.
    #[error("cannot watch the SQLite database for changes: {0}")]
    Probe(String),
    /// Migrating the schema failed.
    #[error("migration failed: {0}")]
    Migrate(sqlx::migrate::MigrateError),
    /// The database was migrated by a newer rpcguard than this one.
    #[error(
        "the database was written by a newer rpcguard (it has migration {migration}, which this \
         version {version} does not know); run the newer version, or restore a backup made with this one"
    )]
    NewerSchema {
        /// The migration this version does not know.
        migration: i64,
        /// This version.
        version: &'static str,
    },
    /// The URL names a database this build has no store for (the crate's
    /// cargo feature `sqlite` or `postgres` is off).
    #[error("this build has no {} store (rpcguard-accounts' cargo feature `{}` is off)", .0.name(), .0.feature())]
    NotBuiltIn(Backend),
    /// A database file could not be created or made private (mode 0600).
    #[error("cannot make the database file {} private (mode 0600): {}", path.display(), rpcguard::error::io_cause(cause))]
    Files {
        /// The file.
        path: std::path::PathBuf,
        /// Why (in the message, not a `source`: said once).
        cause: std::io::Error,
    },
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Database(err)
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        match err {
            sqlx::migrate::MigrateError::VersionMissing(migration) => StoreError::NewerSchema {
                migration,
                version: env!("CARGO_PKG_VERSION"),
            },
            other => StoreError::Migrate(other),
        }
    }
}

impl StoreError {
    /// The error a caller gets: `-32003` for a taken name, else `-32603`
    /// (the detail logged where the call is answered). Explicit rather
    /// than `?`: `?` would make every store error `-32603`.
    pub fn into_rpc(self) -> RpcError {
        match self {
            StoreError::UsernameTaken => crate::methods::errors::username_taken(),
            other => RpcError::internal(other),
        }
    }
}

/// A user as stored, including the password hash. Never sent to a caller;
/// [`StoredUser::public`] gives the view that is.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredUser {
    /// The username as chosen at sign-up.
    pub username: String,
    /// The account's own id: 128 random bits as 32 hex digits, set by
    /// [`UserStore::create_user`] and unique in the store. Tokens name it
    /// (claim `uid`), so a token of a deleted account never passes for a
    /// new account of the same name.
    pub account_id: String,
    /// The bcrypt hash.
    pub password_hash: String,
    /// Granted Bearer scopes, sorted.
    pub scopes: Vec<String>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Disabled by an operator (`rpcguard user disable`): `sign_in` answers
    /// -32004 after a correct password, and the account's tokens stop.
    pub disabled: bool,
    /// The credentials epoch: moves on with every password change, disable
    /// and end of every session of the account. A session is opened only
    /// against the epoch its password was verified in
    /// ([`NewSession::epoch`]).
    pub epoch: i64,
}

impl std::fmt::Debug for StoredUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredUser")
            .field("username", &self.username)
            .field("account_id", &self.account_id)
            .field("password_hash", &"<redacted>")
            .field("scopes", &self.scopes)
            .field("created_at", &self.created_at)
            .field("disabled", &self.disabled)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl StoredUser {
    /// The caller-facing view: no hash.
    pub fn public(&self) -> User {
        let mut scopes = BTreeMap::new();
        scopes.insert(BEARER.name().to_owned(), self.scopes.clone());
        User {
            username: self.username.clone(),
            scopes,
            created_at: format_rfc3339(self.created_at),
        }
    }
}

/// What authenticating a call needs of an account, shared and free of the
/// password hash: the account id (checked against the token's `uid`), the
/// granted Bearer scopes, and the caller-facing view. The in-memory auth
/// state ([`CachedStore`]) keeps these, never a [`StoredUser`].
#[derive(Debug, Clone)]
pub struct Account {
    /// See [`StoredUser::account_id`].
    pub account_id: String,
    /// Granted Bearer scopes, sorted.
    pub scopes: Vec<String>,
    /// The view `get_caller` answers.
    pub user: Arc<User>,
    /// See [`StoredUser::disabled`].
    pub disabled: bool,
    /// The Bearer caller this account is, built once: its scopes, with
    /// [`user`](Account::user) attached as a detail. The Bearer check hands
    /// it to every call the account's tokens make, without a copy (except
    /// for tokens of a scope-limited session, whose caller is built per
    /// call with the scopes in force).
    pub caller: Arc<Caller>,
}

impl Account {
    /// A copy that shares no reference count with this one (its user and
    /// caller copied too), for a thread to hand out without touching
    /// memory other threads write (see [`crate::front`]).
    pub(crate) fn private_copy(&self) -> Account {
        let user = Arc::new(User::clone(&self.user));
        Account {
            account_id: self.account_id.clone(),
            scopes: self.scopes.clone(),
            caller: Arc::new(Caller::clone(&self.caller).with_detail(user.clone())),
            user,
            disabled: self.disabled,
        }
    }
}

impl From<&StoredUser> for Account {
    fn from(stored: &StoredUser) -> Self {
        let user = Arc::new(stored.public());
        let caller = BEARER
            .caller(stored.username.as_str(), &stored.scopes)
            .with_detail(user.clone());
        Account {
            account_id: stored.account_id.clone(),
            scopes: stored.scopes.clone(),
            user,
            disabled: stored.disabled,
            caller: Arc::new(caller),
        }
    }
}

/// A fresh account id: 128 bits from the thread's CSPRNG (seeded by the
/// OS), as 32 lower-case hex digits.
pub fn new_account_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Splits the space-joined scope aggregate of a query into a sorted list.
fn split_scopes(joined: Option<String>) -> Vec<String> {
    let mut scopes: Vec<String> = joined
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    scopes.sort();
    scopes
}

/// Storage of accounts and their granted scopes.
#[async_trait]
pub trait UserStore: std::fmt::Debug + Send + Sync + 'static {
    /// Creates a user with a fresh [`StoredUser::account_id`];
    /// [`StoreError::UsernameTaken`] if the name exists in any letter case.
    /// Never overwrites an account.
    async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
        created_at: i64,
    ) -> Result<StoredUser, StoreError>;

    /// Finds a user by name, case-insensitively.
    async fn find_user(&self, username: &str) -> Result<Option<StoredUser>, StoreError>;

    /// The [`Account`] of a user, found like [`Self::find_user`]: what every
    /// secured call asks for. [`CachedStore`] answers it from memory.
    async fn find_account(&self, username: &str) -> Result<Option<Arc<Account>>, StoreError> {
        Ok(self
            .find_user(username)
            .await?
            .map(|user| Arc::new(Account::from(&user))))
    }

    /// Grants Bearer scopes (already held ones are kept once).
    async fn grant(&self, username: &Username, scopes: &[Scope]) -> Result<StoredUser, StoreError>;

    /// Revokes Bearer scopes (scopes not held are ignored).
    async fn revoke(&self, username: &Username, scopes: &[Scope])
        -> Result<StoredUser, StoreError>;

    /// Deletes a user; `false` if there was none.
    async fn delete_user(&self, username: &Username) -> Result<bool, StoreError>;

    /// Every user, ordered by name.
    async fn list_users(&self) -> Result<Vec<StoredUser>, StoreError>;

    /// The number of users.
    async fn count_users(&self) -> Result<u64, StoreError>;

    /// Replaces `username`'s password hash by `new_hash` if it is still
    /// `old_hash` (re-hashing at another bcrypt cost must never undo a
    /// concurrent change of password); `false` when nothing was replaced.
    async fn replace_password_hash(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError>;

    /// How many stored hashes have each bcrypt cost, as (cost, count).
    async fn password_hash_costs(&self) -> Result<Vec<(u32, u64)>, StoreError>;

    /// Disables (`true`) or enables an account. Disabling also ends every
    /// session of the account. Returns the ids of the sessions it ended;
    /// [`StoreError::NotFound`] when there is no such user.
    async fn set_disabled(
        &self,
        username: &Username,
        disabled: bool,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// Opens a session of the account `new.account_id` (named
    /// `new.username`, any case) with its first refresh token (stored as
    /// its hash), only if the account's credentials epoch is still
    /// `new.epoch` and it is not disabled, in one conditional insert;
    /// [`StoreError::NotFound`] otherwise (gone, disabled, or a password
    /// change / disable / end of every session committed since the
    /// password was verified). Then ends the account's oldest live sessions
    /// beyond `new.max_sessions`, in the same transaction, and returns
    /// their ids.
    async fn open_session(&self, new: NewSession<'_>) -> Result<Vec<String>, StoreError>;

    /// A session by id, with its account's id and name. What every
    /// secured call asks for; [`CachedStore`] answers it from memory.
    async fn find_session(&self, session_id: &str)
        -> Result<Option<Arc<SessionState>>, StoreError>;

    /// The refresh token whose hash is `hash`, with its session's state;
    /// `None` when there is none (never issued, trimmed or purged). One
    /// indexed read; nothing changes.
    async fn find_refresh(&self, hash: &str) -> Result<Option<RefreshRecord>, StoreError>;

    /// Presents the refresh token `record` (from [`Self::find_refresh`]):
    /// rotates it to `new_hash` (valid until `new_expires_at`) if it is its
    /// session's current one and unexpired, and ends the session if it was
    /// already rotated. Of two concurrent calls with one token exactly one
    /// rotates (a conditional `UPDATE`); the other counts as reuse. Keeps
    /// between `history` and twice as many rotated-out tokens per session
    /// (`0`: all, until they expire).
    async fn rotate_refresh(
        &self,
        record: &RefreshRecord,
        new_hash: &str,
        now: i64,
        new_expires_at: i64,
        history: u32,
    ) -> Result<Rotation, StoreError>;

    /// Ends one session; `false` when it was already ended or unknown.
    async fn end_session(&self, session_id: &str, now: i64) -> Result<bool, StoreError>;

    /// Ends every live session of `username` (any case) except `keep`;
    /// returns the ids it ended.
    async fn end_sessions(
        &self,
        username: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Vec<String>, StoreError>;

    /// Replaces the password hash if it is still `old_hash` and ends every
    /// other session of the user than `keep`, in one transaction. `None`
    /// when the hash had changed meanwhile (nothing done); else the ids of
    /// the sessions it ended.
    async fn change_password(
        &self,
        username: &str,
        old_hash: &str,
        new_hash: &str,
        keep: Option<&str>,
        now: i64,
    ) -> Result<Option<Vec<String>>, StoreError>;

    /// Live sessions (not ended, refresh token not expired at `now`) per
    /// user, as (lower-cased name, count).
    async fn live_session_counts(&self, now: i64) -> Result<Vec<(String, u64)>, StoreError>;

    /// Deletes what no call can use any more: sessions ended or whose
    /// refresh token expired before `horizon` (with their refresh tokens),
    /// and rotated refresh tokens that expired before `horizon`. Returns
    /// the sessions and refresh tokens deleted (not counting the refresh
    /// tokens deleted with their session).
    async fn purge_sessions(&self, horizon: i64) -> Result<u64, StoreError>;

    /// Rows stored now: (sessions, refresh tokens).
    async fn session_rows(&self) -> Result<(u64, u64), StoreError>;

    /// Draws one call from each of `draws`, budgets shared by every server
    /// on this store, in order, stopping at the first that is empty:
    /// `Some(retry_after_s)` then. A store that one server owns alone
    /// (SQLite) shares nothing: its servers' own budgets are the whole
    /// truth, and this answers `None` without doing anything.
    async fn draw_shared(&self, draws: &[SharedDraw]) -> Result<Option<u64>, StoreError> {
        let _ = draws;
        Ok(None)
    }

    /// Publishes a setting for the CLI and the other instances
    /// (`bcrypt_cost`, see `0005_integrity.sql`).
    async fn put_setting(&self, key: &str, value: &str) -> Result<(), StoreError>;

    /// A setting published with [`Self::put_setting`], if any.
    async fn setting(&self, key: &str) -> Result<Option<String>, StoreError>;

    /// Tells the servers on this store that an operator changed an account
    /// ([`AdminChange`]): they write it to their audit stream when they
    /// see it (SQLite: the change log; PostgreSQL: the change channel). A
    /// store no server watches ignores it.
    async fn announce(&self, change: &AdminChange<'_>) -> Result<(), StoreError> {
        let _ = change;
        Ok(())
    }

    /// Deletes the shared budgets that have refilled; returns how many.
    async fn purge_shared_budgets(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// A change an operator made with `rpcguard user …`, announced to the
/// running servers ([`UserStore::announce`]) so that it is in their audit
/// stream. Carried as the change-log key `a:<event>:<username>:<detail>`
/// (a username never holds `:`; the detail, last, may).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminChange<'a> {
    /// The audit event.
    pub event: rpcguard::audit::Event,
    /// The account.
    pub username: &'a str,
    /// What changed (the scopes granted or revoked, the sessions ended).
    pub detail: &'a str,
}

/// The change-log key prefix of an [`AdminChange`].
pub const ADMIN_KEY_PREFIX: &str = "a:";

impl AdminChange<'_> {
    /// Its change-log key.
    pub fn key(&self) -> String {
        format!(
            "{ADMIN_KEY_PREFIX}{}:{}:{}",
            self.event.as_str(),
            self.username,
            self.detail
        )
    }

    /// Writes the audit event a change-log key `key` (`a:…`) announces.
    pub fn emit_from_key(key: &str) {
        let Some(rest) = key.strip_prefix(ADMIN_KEY_PREFIX) else {
            return;
        };
        let mut parts = rest.splitn(3, ':');
        let (Some(event), Some(username)) = (parts.next(), parts.next()) else {
            return;
        };
        let detail = parts.next().unwrap_or_default();
        let Some(event) = rpcguard::audit::Event::from_name(event) else {
            return;
        };
        // `reason`: "admin", then what changed.
        let reason = format!("admin {detail}");
        rpcguard::audit::Audit::new(event)
            .username(username)
            .reason(reason.trim_end())
            .emit();
    }
}

/// One draw from a budget shared by the servers of a store
/// ([`UserStore::draw_shared`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDraw {
    /// The budget's key (e.g. `signin.ip:192.0.2.7`).
    pub key: String,
    /// Its rate: a burst of `count` that refills evenly over `per`.
    pub rate: rpcguard::limit::Rate,
}

/// A shared handle to any store.
pub type SharedStore = Arc<dyn UserStore>;

/// The databases a store can live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (cargo feature `sqlite`).
    Sqlite,
    /// A PostgreSQL database (cargo feature `postgres`).
    Postgres,
}

impl Backend {
    /// The backend a URL names: `postgres://…`/`postgresql://…` for
    /// PostgreSQL, anything else is the path of a SQLite file.
    pub fn of(url_or_path: &str) -> Backend {
        if url_or_path.starts_with("postgres://") || url_or_path.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        }
    }

    /// The cargo feature that builds its store.
    pub fn feature(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Opens the store a URL names ([`Backend::of`]): PostgreSQL with a pool
/// of `pool_size` connections, or a SQLite file;
/// [`StoreError::NotBuiltIn`] when this build has no store for it.
pub async fn open(url_or_path: &str, pool_size: u32) -> Result<SharedStore, StoreError> {
    open_uncached(url_or_path, pool_size).await
}

/// Opens the store a URL names (see [`open`]), timed into `metrics`
/// ([`MeteredStore`]) and wrapped in a [`CachedStore`] of `capacity` users:
/// what the server uses.
pub async fn open_cached(
    url_or_path: &str,
    pool_size: u32,
    capacity: usize,
    metrics: crate::metrics::AccountMetrics,
) -> Result<Arc<CachedStore>, StoreError> {
    let inner: SharedStore = Arc::new(MeteredStore::new(
        open_uncached(url_or_path, pool_size).await?,
        metrics,
    ));
    match Backend::of(url_or_path) {
        #[cfg(feature = "postgres")]
        Backend::Postgres => Ok(CachedStore::postgres(inner, url_or_path, capacity)),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => CachedStore::sqlite(inner, std::path::Path::new(url_or_path), capacity),
        // Refused by `open_uncached` already.
        #[allow(unreachable_patterns)]
        missing => Err(StoreError::NotBuiltIn(missing)),
    }
}

async fn open_uncached(url_or_path: &str, pool_size: u32) -> Result<SharedStore, StoreError> {
    match Backend::of(url_or_path) {
        #[cfg(feature = "postgres")]
        Backend::Postgres => Ok(Arc::new(
            PostgresStore::connect(url_or_path, pool_size).await?,
        )),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Ok(Arc::new(
            SqliteStore::open(std::path::Path::new(url_or_path), pool_size).await?,
        )),
        #[allow(unreachable_patterns)]
        missing => Err(StoreError::NotBuiltIn(missing)),
    }
}
