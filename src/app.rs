//! The reference server assembled from a [`Config`]: store, hasher, keys,
//! throttle, the four account methods and the Bearer security function.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::password::{HasherConfig, PasswordError, PasswordHasher};
use crate::auth::token::{TokenError, TokenKeys};
use crate::bearer::BearerSecurity;
use crate::config::{load_secret, prepare_data_dir, Config, ConfigError, SecretSource};
use crate::keys::{jwks_resource, open_key_set, watch_key_file, KeyAlg, KEYS_FILE_NAME};
#[cfg(feature = "postgres")]
use crate::keys::{watch_key_table, DbKeySet, Import, StoredKey};
use crate::methods::accounts::{self, Accounts};
use crate::store::{self, CachedStore, SharedStore, StoreError, UserStore};
use crate::throttle::{RefreshThrottle, SignInThrottle};
use rpcguard::api::{Api, ApiError};
#[cfg(feature = "oidc")]
use rpcguard::security::oidc::{IssuerRouter, OidcSecurity};
use rpcguard::security::SharedSecurity;
use rpcguard::server::{ReadinessCheck, RunningServer, ServerError};

/// Errors of starting the reference server.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// Configuration (key, data dir) is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store could not be opened. (Causes are in the messages, not
    /// `source`s, here and below: a chain printed whole names each once.)
    #[error("cannot open the user store: {0}")]
    Store(StoreError),
    /// The token keys could not be built.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The password hasher could not start.
    #[error("cannot start the password hasher: {0}")]
    Password(PasswordError),
    /// The external issuer cannot be used. (Its cause is in the message,
    /// not a `source`: an error chain printed whole names it once.)
    #[cfg(feature = "oidc")]
    #[error("external issuer: {0}")]
    Oidc(rpcguard::security::oidc::OidcError),
    /// Methods could not be declared.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The server could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// An admin command found no database where it looked.
    #[error("no rpcguard database at {0}: run `rpcguard serve` once there, or pass the right --data-dir or --database-url")]
    NoStore(String),
    /// An admin command may not read the database (run it as the server's
    /// user).
    #[error("cannot open the rpcguard database at {path}: {cause} (run this as the user the server runs as)")]
    StoreUnreadable {
        /// The database file.
        path: String,
        /// Why, once.
        cause: String,
    },
}

impl From<StoreError> for AppError {
    fn from(err: StoreError) -> Self {
        AppError::Store(err)
    }
}

impl From<PasswordError> for AppError {
    fn from(err: PasswordError) -> Self {
        AppError::Password(err)
    }
}

#[cfg(feature = "oidc")]
impl From<rpcguard::security::oidc::OidcError> for AppError {
    fn from(err: rpcguard::security::oidc::OidcError) -> Self {
        AppError::Oidc(err)
    }
}

/// The reference server's parts, before serving.
pub struct Reference {
    /// The store every part uses, with its exact in-memory auth state.
    pub users: Arc<CachedStore>,
    /// The declared methods.
    pub api: Api<Accounts>,
    /// Their state.
    pub state: Arc<Accounts>,
    /// The Bearer security function.
    pub security: SharedSecurity,
    /// The token keys (signing, verification, the JWKS).
    pub keys: TokenKeys,
}

/// Opens the configured store only if it exists (admin commands never
/// create one: run from the wrong directory they would otherwise make an
/// empty database and report "no such user").
pub async fn open_existing_store(config: &Config) -> Result<SharedStore, AppError> {
    if config.database_url.is_none() {
        let path = config.database();
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Err(err) if err.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(AppError::StoreUnreadable {
                    cause: rpcguard::error::io_cause(&err),
                    path,
                })
            }
            _ => return Err(AppError::NoStore(path)),
        }
        // Readable too (a file the server's user alone may open).
        if let Err(err) = std::fs::File::open(&path) {
            return Err(AppError::StoreUnreadable {
                cause: rpcguard::error::io_cause(&err),
                path,
            });
        }
    }
    Ok(store::open(&config.database(), config.db_pool_size).await?)
}

/// Accounts for a service of your own: the state the account methods
/// need, and the Bearer security function over the same store and keys.
pub struct AccountsKit {
    /// The store, with its exact in-memory auth state.
    pub users: Arc<CachedStore>,
    /// What [`accounts::methods`]'s methods need (put it in your state and
    /// `impl AsRef<Accounts>`).
    pub accounts: Arc<Accounts>,
    /// The Bearer security function (`Authorization: Bearer <jwt>`).
    pub security: SharedSecurity,
    /// The token keys the account methods sign with and the Bearer check
    /// verifies with; serve their JWKS with
    /// [`jwks_resource`].
    pub keys: TokenKeys,
}

/// Opens the store, loads the key and starts the bcrypt pool as `config`
/// says: everything the account methods and the Bearer check need, for an
/// embedder's own [`Api`] (see `examples/embedding.rs`).
pub async fn accounts(config: &Config) -> Result<AccountsKit, AppError> {
    accounts_kit(config, false).await
}

/// The setting under which the server publishes its bcrypt cost.
pub const BCRYPT_COST_SETTING: &str = "bcrypt_cost";

/// [`accounts()`]; with `publishing_jwks`, the Bearer scheme's document
/// entry names the server's JWKS (the reference server serves it).
async fn accounts_kit(config: &Config, publishing_jwks: bool) -> Result<AccountsKit, AppError> {
    let database = config.database();
    let metrics = crate::metrics::AccountMetrics::register(&config.server.metrics);
    let open_store = || {
        store::open_cached(
            &database,
            config.db_pool_size,
            config.auth_cache_users,
            metrics.clone(),
        )
    };
    let (keys, users) = match &config.database_url {
        // The key set lives in the database: the store (which migrates
        // it, and whose change feed announces rotations) comes first.
        #[cfg(feature = "postgres")]
        Some(url) => {
            let users = open_store().await?;
            (
                database_token_keys(config, url, &users, &metrics).await?,
                users,
            )
        }
        #[cfg(not(feature = "postgres"))]
        Some(_) => return Err(StoreError::NotBuiltIn(store::Backend::Postgres).into()),
        None => {
            let keys = token_keys(config, &metrics).await?;
            (keys, open_store().await?)
        }
    };
    let store: SharedStore = users.clone();
    if config.bcrypt_cost >= 14 {
        // One bcrypt run at this cost takes seconds: say why nothing happens.
        tracing::info!(
            cost = config.bcrypt_cost,
            "preparing bcrypt (one hash at this cost; about {} s)",
            1u64 << config.bcrypt_cost.saturating_sub(14)
        );
    }
    let hasher = PasswordHasher::start(HasherConfig {
        cost: config.bcrypt_cost,
        workers: config.bcrypt_workers,
        verify_queue: config.bcrypt_queue,
        hash_queue: config.signup_queue(),
    })
    .await?;
    if let Some(share) = &config.server.cpu_share {
        hasher.share_cpu(share.clone());
    }
    // `rpcguard user add` hashes at this cost on a store with no hashes
    // yet, so a new account never answers at another cost than the dummy.
    store
        .put_setting(BCRYPT_COST_SETTING, &config.bcrypt_cost.to_string())
        .await?;
    #[cfg(feature = "oidc")]
    let external = external_issuer(config).await?;
    hasher.record_into(crate::auth::password::QueueMetrics {
        depth: metrics.bcrypt_queue_depth.clone(),
        wait: metrics.bcrypt_wait.clone(),
    });
    let state = Arc::new(Accounts {
        store: store.clone(),
        hasher,
        keys: keys.clone(),
        throttle: SignInThrottle::with_limits(
            config.throttle,
            config.sign_up_per_ip,
            config.throttle_max_keys,
        ),
        refresh_throttle: RefreshThrottle::new(config.refresh_throttle, config.throttle_max_keys),
        limits: config.session_limits,
        metrics: metrics.clone(),
        refresh_ttl: config.refresh_ttl,
        clock: config.clock.clone(),
        #[cfg(feature = "oidc")]
        external: external.clone(),
    });
    // Unknown users are verified at the cost most stored hashes have.
    accounts::refresh_dummy_cost(&state).await?;
    let mut bearer = BearerSecurity::new(keys.clone(), store);
    if publishing_jwks {
        bearer = bearer.publishing_jwks(&config.issuer, &config.server.openrpc_info.server_url);
    }
    let bearer: SharedSecurity = Arc::new(bearer);
    // A token goes to the issuer its `iss` names (IssuerRouter's docs).
    #[cfg(feature = "oidc")]
    let security: SharedSecurity = match external {
        Some(external) => Arc::new(IssuerRouter::new(Some(bearer)).issuer(external)),
        None => bearer,
    };
    #[cfg(not(feature = "oidc"))]
    let security = bearer;
    Ok(AccountsKit {
        users,
        accounts: state,
        security,
        keys,
    })
}

/// The external issuer of `config`, connected (its keys loaded), if any.
#[cfg(feature = "oidc")]
async fn external_issuer(config: &Config) -> Result<Option<OidcSecurity>, AppError> {
    let Some(oidc) = &config.oidc else {
        return Ok(None);
    };
    // Tokens are routed by `iss`: ours and theirs must differ.
    if oidc.issuer == config.issuer {
        return Err(ConfigError::OidcIssuerIsOurs(oidc.issuer.clone()).into());
    }
    let mut oidc = oidc.clone();
    oidc.metrics = config.server.metrics.clone();
    Ok(Some(OidcSecurity::connect(oidc).await?))
}

/// The token keys on SQLite: from a given secret (one HS256 key), else from
/// the data dir's key set, watched for rotations.
async fn token_keys(
    config: &Config,
    metrics: &crate::metrics::AccountMetrics,
) -> Result<TokenKeys, AppError> {
    let (issuer, ttl) = (&config.issuer, config.token_ttl);
    if config.secret != SecretSource::DataDir {
        // A given key is checked before anything is created.
        if let Some(alg) = config.jwt_alg.filter(|alg| *alg != KeyAlg::HS256) {
            return Err(ConfigError::GivenSecretIsHs256(alg).into());
        }
        let secret = load_secret(&config.secret, &config.data_dir)?;
        prepare_data_dir(&config.data_dir)?;
        let keys = TokenKeys::new(&secret, issuer, issuer, ttl)?;
        return Ok(keys.with_clock(config.clock.clone()));
    }
    prepare_data_dir(&config.data_dir)?;
    let set = open_key_set(&config.data_dir, config.jwt_alg, ttl, &config.clock)?;
    let keys = TokenKeys::from_key_set(&set, issuer, issuer, ttl)?.with_clock(config.clock.clone());
    if let Ok(signing) = set.signing() {
        tracing::info!(kid = %signing.kid, alg = %signing.alg, keys = set.keys.len(), "token keys loaded");
    }
    watch_key_file(
        config.data_dir.join(KEYS_FILE_NAME),
        keys.clone(),
        config.keys_check_every,
        metrics.clone(),
    );
    Ok(keys)
}

/// The token keys of instances on PostgreSQL: the database's key set
/// (created, or imported from the given secret, `keys.json` or
/// `secret.key`, on the first start; see [`crate::keys::db`]), watched
/// through `users`' change feed and a poll.
#[cfg(feature = "postgres")]
async fn database_token_keys(
    config: &Config,
    url: &str,
    users: &CachedStore,
    metrics: &crate::metrics::AccountMetrics,
) -> Result<TokenKeys, AppError> {
    let (issuer, ttl) = (&config.issuer, config.token_ttl);
    // A given secret is checked even when the database has a set already.
    let given_secret = match config.secret {
        SecretSource::DataDir => None,
        _ => Some(load_secret(&config.secret, &config.data_dir)?),
    };
    let db = DbKeySet::connect(url)
        .await?
        .with_clock(config.clock.clone());
    let import = Import {
        given_secret: given_secret.as_deref(),
        data_dir: &config.data_dir,
    };
    let set = db.open(config.jwt_alg, ttl, import).await?;
    if let Some(secret) = &given_secret {
        let kid = StoredKey::legacy_hs256(secret, 0).kid;
        if !set.keys.iter().any(|key| key.kid == kid) {
            tracing::warn!(%kid, "the given secret (RPCGUARD_SECRET or --secret-file) is not in the database's key set, which signs and verifies instead: drop it from this instance's configuration");
        }
    }
    let keys = TokenKeys::from_key_set(&set, issuer, issuer, ttl)?.with_clock(config.clock.clone());
    if let Ok(signing) = set.signing() {
        tracing::info!(kid = %signing.kid, alg = %signing.alg, keys = set.keys.len(), store = "postgres", "token keys loaded");
    }
    watch_key_table(
        db,
        keys.clone(),
        &set,
        config.keys_check_every,
        users.key_changes(),
        metrics.clone(),
    );
    Ok(keys)
}

/// The reference server's methods: [`accounts::methods`] and the demo
/// method ([`accounts::demo_methods`]).
pub fn reference_api<S>() -> Result<Api<S>, ApiError>
where
    S: AsRef<Accounts> + Send + Sync + 'static,
{
    let mut api = accounts::methods()?;
    api.merge(accounts::demo_methods()?)?;
    Ok(api)
}

/// Builds the reference server's parts from `config`: [`accounts()`] and the
/// reference methods ([`reference_api`]).
pub async fn reference(config: &Config) -> Result<Reference, AppError> {
    let kit = accounts_kit(config, true).await?;
    let api = reference_api()?;
    Ok(Reference {
        users: kit.users,
        api,
        state: kit.accounts,
        security: kit.security,
        keys: kit.keys,
    })
}

/// Builds and starts the reference server on `listener`, with a background
/// task that, every minute, keeps the throttle's memory bounded and points
/// the dummy hash at the cost most stored hashes have.
pub async fn start(config: &Config, listener: TcpListener) -> Result<RunningServer, AppError> {
    serve(reference(config).await?, config, listener)
}

/// Starts serving parts built by [`reference()`] on `listener` (so that a
/// binary can check its whole configuration before it binds the port).
pub fn serve(
    parts: Reference,
    config: &Config,
    listener: TcpListener,
) -> Result<RunningServer, AppError> {
    let Reference {
        users,
        api,
        state,
        security,
        keys,
    } = parts;
    spawn_upkeep(Arc::downgrade(&state));
    let mut server_config = config.server.clone();
    server_config.readiness = Some(readiness(users, keys.clone()));
    server_config.resources.push(jwks_resource(keys));
    Ok(rpcguard::serve(listener, api)
        .state(state)
        .shared_security(security)
        .config(server_config)
        .spawn()?)
}

/// How long the store has to answer the readiness query.
const STORE_PING: Duration = Duration::from_secs(1);

/// `GET /ready`'s check: the store answers a cheap query (an indexed
/// look-up of a name no account has) within one second (else
/// `"store"`), and the key set has a signing key (else `"keys"`).
pub fn readiness(users: Arc<CachedStore>, keys: TokenKeys) -> ReadinessCheck {
    ReadinessCheck::new(move || {
        let (users, keys) = (users.clone(), keys.clone());
        async move {
            let mut why = Vec::new();
            match tokio::time::timeout(STORE_PING, users.find_user("")).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "readiness: the store failed");
                    why.push("store".to_owned());
                }
                Err(_) => why.push("store".to_owned()),
            }
            if keys.signing_kid().is_none() {
                why.push("keys".to_owned());
            }
            if why.is_empty() {
                Ok(())
            } else {
                Err(why)
            }
        }
    })
}

/// Every minute: keeps the throttle's memory bounded, points the dummy
/// hash at the cost most stored hashes have, and purges sessions and
/// refresh tokens no call can use any more ([`purge_sessions`]). Ends once
/// the server that owns the accounts is gone.
fn spawn_upkeep(accounts: std::sync::Weak<Accounts>) {
    tokio::spawn(async move {
        let mut every_minute = tokio::time::interval(Duration::from_secs(60));
        every_minute.tick().await; // the first tick is now; the census just ran
        loop {
            every_minute.tick().await;
            let Some(accounts) = accounts.upgrade() else {
                return;
            };
            accounts.throttle.retain_recent();
            accounts.refresh_throttle.retain_recent();
            if let Err(err) = accounts.store.purge_shared_budgets().await {
                tracing::warn!(error = %err, "cannot purge refilled shared budgets");
            }
            if let Err(err) = accounts::refresh_dummy_cost(&accounts).await {
                tracing::warn!(error = %err, "cannot count stored hash costs");
            }
            if let Err(err) = purge_sessions(&accounts).await {
                tracing::warn!(error = %err, "cannot purge old sessions");
            }
        }
    });
}

/// Deletes the sessions that ended, and the refresh tokens (rotated or
/// not) that expired, more than one access-token lifetime ago: by then no
/// access token of theirs is still valid, so nothing answers differently
/// (a token naming a purged session is refused as `revoked_token`, like
/// one naming an ended session). A rotated refresh token presented after
/// its purge is `invalid_token` rather than a reuse; it had expired
/// anyway. Storage is so bounded by the sessions opened, and the refreshes
/// made, within one refresh-token lifetime. "Ago" by the accounts' clock.
/// Returns the rows deleted.
pub async fn purge_sessions(accounts: &Accounts) -> Result<u64, StoreError> {
    let now = accounts.clock.unix_now().unwrap_or(0);
    let horizon = now.saturating_sub(accounts.keys.ttl().as_secs());
    let purged = accounts
        .store
        .purge_sessions(i64::try_from(horizon).unwrap_or(i64::MAX))
        .await?;
    if purged > 0 {
        tracing::debug!(purged, "purged ended and expired sessions");
    }
    Ok(purged)
}
