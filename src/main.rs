//! The `rpcguard` command: `serve`, `openrpc`, and
//! `user add|grant|revoke|delete|list|disable|enable|sign-out`.
//!
//! Every flag can also be set from the environment as `RPCGUARD_<FLAG>`
//! (e.g. `--data-dir` ↔ `RPCGUARD_DATA_DIR`). The signing key may be given
//! as `RPCGUARD_SECRET` (never as a flag, so it stays out of `ps`).

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rpcguard::audit::Event;
use rpcguard::openrpc::DocInfo;
use rpcguard::policy::{Discover, Policy};
use rpcguard::security::oidc::{JwksSource, OidcConfig};
use rpcguard::server::{ForwardedHeader, ProxyListError, TrustedProxies};
use rpcguard_accounts::app;
use rpcguard_accounts::config::{Config, SecretSource};
use rpcguard_accounts::keys::KeyAlg;
use rpcguard_accounts::session::SessionLimits;
use rpcguard_accounts::throttle::{RefreshConfig, ThrottleConfig};
use rpcguard_accounts::user::{Password, Scope, Username};
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "rpcguard",
    version,
    about = "A JSON-RPC 2.0 server with bcrypt accounts, JWT scopes and OpenRPC"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on standard error: text (for a person) or json (one JSON object per line:
    /// timestamp, level, target, message and the event's fields).
    #[arg(long, global = true, env = "RPCGUARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

/// The plain lines `serve` prints for people and scripts (where it
/// listens, a policy reload), in text format only, after every log line
/// written before them.
#[derive(Clone)]
struct Say {
    out: rpcguard_accounts::logging::BatchedStderr,
    on: bool,
}

impl Say {
    fn line(&self, line: String) {
        if self.on {
            self.out.say(&line);
        }
    }
}

/// The log's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the server (HTTP + WebSocket on one port).
    Serve(Box<ServeArgs>),
    /// Prints the OpenRPC document (the content of openrpc.json).
    Openrpc(OpenrpcArgs),
    /// Manages accounts directly in the store.
    #[command(subcommand)]
    User(UserCommand),
    /// Manages the token signing keys (`<data-dir>/keys.json`, or the database's with
    /// --database-url).
    #[command(subcommand)]
    Key(KeyCommand),
    /// Backs up a live SQLite store and its key set into DIR (SQLite's online backup: safe
    /// while the server writes; files mode 0600). On PostgreSQL, use pg_dump.
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
struct BackupArgs {
    /// A new directory for the backup (created mode 0700).
    dir: PathBuf,
    /// The server's data dir (rpcguard.db and keys.json).
    #[arg(long, env = "RPCGUARD_DATA_DIR", default_value = "./rpcguard-data")]
    data_dir: PathBuf,
    /// A PostgreSQL store is backed up with pg_dump instead (this only says so).
    #[arg(long, env = "RPCGUARD_DATABASE_URL")]
    database_url: Option<String>,
}

#[derive(Debug, Args)]
struct KeyArgs {
    /// Directory of the key set (keys.json), for a server on SQLite.
    #[arg(long, env = "RPCGUARD_DATA_DIR", default_value = "./rpcguard-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…): the key set every instance on that database shares.
    #[arg(long, env = "RPCGUARD_DATABASE_URL")]
    database_url: Option<String>,
    /// Token lifetime in seconds, as the server runs with: a retired key verifies this long
    /// (plus 5 s) after its rotation, then drops out.
    #[arg(long, env = "RPCGUARD_TOKEN_TTL", default_value_t = rpcguard_accounts::config::DEFAULT_TOKEN_TTL_SECS)]
    token_ttl: u64,
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Makes a new signing key; older keys verify their tokens until those expire. A running
    /// server on the same data dir, or every instance on the same database, sees the new key
    /// within seconds.
    Rotate {
        /// Algorithm of the new key (default: the current signing key's).
        #[arg(long, value_parser = parse_alg)]
        alg: Option<KeyAlg>,
        #[command(flatten)]
        keys: KeyArgs,
    },
    /// Lists the keys: kid, algorithm and state (signing, verifying until, expired).
    List {
        #[command(flatten)]
        keys: KeyArgs,
    },
}

/// `IP:PORT`, or `HOST:PORT` resolved now (the first address, IPv4 first).
fn parse_listen_addr(raw: &str) -> Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    if let Ok(addr) = raw.parse() {
        return Ok(addr);
    }
    let hint = "give IP:PORT (127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080) or HOST:PORT";
    if raw
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(format!("{raw:?} has no port: {hint}"));
    }
    let mut found: Vec<SocketAddr> = raw
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {raw:?} ({err}): {hint}"))?
        .collect();
    found.sort_by_key(|addr| addr.is_ipv6());
    found
        .into_iter()
        .next()
        .ok_or_else(|| format!("{raw:?} resolves to no address: {hint}"))
}

fn backup(args: BackupArgs) -> anyhow::Result<()> {
    use rpcguard_accounts::backup::{backup_sqlite, BackupError};
    if args.database_url.is_some() {
        return Err(BackupError::Postgres.into());
    }
    let done = backup_sqlite(&args.data_dir, &args.dir)?;
    for file in &done.files {
        println!("{}", file.display());
    }
    Ok(())
}

fn parse_alg(raw: &str) -> Result<KeyAlg, String> {
    raw.parse()
        .map_err(|e: rpcguard_accounts::keys::set::UnknownAlg| e.to_string())
}

#[derive(Debug, Args)]
struct StoreArgs {
    /// Directory of the SQLite database and the generated signing key.
    #[arg(long, env = "RPCGUARD_DATA_DIR", default_value = "./rpcguard-data")]
    data_dir: PathBuf,
    /// PostgreSQL URL (postgres://…); without it the embedded SQLite store is used.
    #[arg(long, env = "RPCGUARD_DATABASE_URL")]
    database_url: Option<String>,
    /// Database connections in the pool.
    #[arg(long, env = "RPCGUARD_DB_POOL_SIZE", default_value_t = 8)]
    db_pool_size: u32,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on: IP:PORT, or HOST:PORT (resolved at start, e.g. localhost:8080).
    #[arg(long, env = "RPCGUARD_ADDR", default_value = "127.0.0.1:8080", value_parser = parse_listen_addr)]
    addr: SocketAddr,
    #[command(flatten)]
    store: StoreArgs,
    /// File holding the JWT signing key (at least 32 bytes): a regular file (not a symlink)
    /// owned by this user, mode 0600. Default: RPCGUARD_SECRET, else a key generated in the data dir.
    #[arg(long, env = "RPCGUARD_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// Algorithm of new tokens: HS256, EdDSA, ES256 or RS256. Default: the key set's signing
    /// key (HS256 for a new set); another one rotates the set to a new key of it at start.
    #[arg(long, env = "RPCGUARD_JWT_ALG", value_parser = parse_alg)]
    jwt_alg: Option<KeyAlg>,
    /// An external identity provider whose Bearer tokens are accepted too: the exact `iss` of
    /// its tokens (e.g. https://kc.example/realms/acme). Needs --oidc-audience and --oidc-jwks.
    #[arg(long, env = "RPCGUARD_OIDC_ISSUER", requires_all = ["oidc_audience", "oidc_jwks"])]
    oidc_issuer: Option<String>,
    /// The audience the external issuer's tokens must name in `aud` (this service's client id).
    #[arg(long, env = "RPCGUARD_OIDC_AUDIENCE", requires = "oidc_issuer")]
    oidc_audience: Option<String>,
    /// The external issuer's public keys: an https:// URL of its JWKS (http:// is accepted, with
    /// a warning unless on loopback), or a file.
    #[arg(long, env = "RPCGUARD_OIDC_JWKS", requires = "oidc_issuer")]
    oidc_jwks: Option<String>,
    /// Accept only external tokens whose JOSE header says `typ: at+jwt` (RFC 9068), for
    /// providers that always set it. Without it, an untyped token is accepted unless it
    /// carries a claim only ID tokens carry.
    #[arg(long, env = "RPCGUARD_OIDC_REQUIRE_AT_JWT")]
    oidc_require_at_jwt: bool,
    /// The claim of external tokens holding the scopes: a space-separated string (scope), a
    /// list (scp, roles), or a dotted path (realm_access.roles).
    #[arg(long, env = "RPCGUARD_OIDC_SCOPES_CLAIM", default_value = "scope")]
    oidc_scopes_claim: String,
    /// Least seconds between two fetches of the external JWKS caused by tokens naming an
    /// unknown kid.
    #[arg(long, env = "RPCGUARD_OIDC_JWKS_COOLDOWN", default_value_t = 30)]
    oidc_jwks_cooldown: u64,
    /// Access-token lifetime in seconds (1 to 604800, a week).
    #[arg(long, env = "RPCGUARD_TOKEN_TTL", default_value_t = rpcguard_accounts::config::DEFAULT_TOKEN_TTL_SECS, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    token_ttl: u64,
    /// Refresh-token lifetime in seconds (each refresh issues one that lives this long).
    #[arg(long, env = "RPCGUARD_REFRESH_TTL", default_value_t = rpcguard_accounts::config::DEFAULT_REFRESH_TTL_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    refresh_ttl: u64,
    /// Deprecated, ignored: the auth state is now exact and in memory by default.
    #[arg(long, env = "RPCGUARD_USER_CACHE_MS", default_value_t = 0, hide = true)]
    user_cache_ms: u64,
    /// Users the in-memory auth state keeps at most (least recently used go first).
    #[arg(long, env = "RPCGUARD_AUTH_CACHE_USERS", default_value_t = rpcguard_accounts::store::DEFAULT_CAPACITY, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    auth_cache_users: usize,
    /// bcrypt cost (4..=31).
    #[arg(long, env = "RPCGUARD_BCRYPT_COST", default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
    bcrypt_cost: u32,
    /// bcrypt jobs running at once (default: number of cores).
    #[arg(long, env = "RPCGUARD_BCRYPT_WORKERS")]
    bcrypt_workers: Option<usize>,
    /// Share of the cores bcrypt gets while sign-ins wait or run: the API's
    /// connections give way to it meanwhile (0 = never; 1 = all but one
    /// worker).
    #[arg(long, env = "RPCGUARD_BCRYPT_SHARE", default_value_t = rpcguard_accounts::config::DEFAULT_BCRYPT_SHARE)]
    bcrypt_share: f64,
    /// bcrypt verifications (sign_in) allowed to wait before -32005.
    #[arg(long, env = "RPCGUARD_BCRYPT_QUEUE", default_value_t = 256)]
    bcrypt_queue: usize,
    /// bcrypt hashes (sign_up) allowed to wait before -32005 (default: as --bcrypt-queue).
    #[arg(long, env = "RPCGUARD_BCRYPT_SIGNUP_QUEUE")]
    bcrypt_signup_queue: Option<usize>,
    /// Largest request body in bytes (256 to 1073741824).
    #[arg(long, env = "RPCGUARD_MAX_BODY_BYTES", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u32).range(256..=1_073_741_824))]
    max_body_bytes: u32,
    /// Most calls in one batch (1 to 10000).
    #[arg(long, env = "RPCGUARD_MAX_BATCH_LEN", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    max_batch_len: u32,
    /// Most open connections (HTTP and WebSocket).
    #[arg(long, env = "RPCGUARD_MAX_CONNECTIONS", default_value_t = 20_000)]
    max_connections: u32,
    /// Most open connections from one client address (IPv6: per /64); 0 = no limit. Behind a
    /// trusted proxy: requests in flight and WebSocket sessions per client (the proxy is exempt).
    #[arg(long, env = "RPCGUARD_MAX_CONNECTIONS_PER_IP", default_value_t = 1_000)]
    max_connections_per_ip: u32,
    /// Reverse proxies (addresses or CIDR blocks, comma-separated) whose X-Forwarded-For (or
    /// Forwarded) names the client: the right-most address that is not a trusted proxy. From any
    /// other peer those headers are ignored.
    #[arg(long, env = "RPCGUARD_TRUSTED_PROXIES", default_value = "", value_parser = parse_trusted_proxies)]
    trusted_proxies: TrustedProxies,
    /// The header the trusted proxies write the client in: `x-forwarded-for` or `forwarded`
    /// (RFC 7239); the other one is ignored.
    #[arg(long, env = "RPCGUARD_FORWARDED_HEADER", default_value = "x-forwarded-for", value_parser = parse_forwarded_header)]
    forwarded_header: ForwardedHeader,
    /// Seconds the server keeps serving after SIGTERM (with GET /ready answering 503) before it
    /// closes its listener.
    #[arg(long, env = "RPCGUARD_DRAIN_DELAY", default_value_t = 5)]
    drain_delay: u64,
    /// Seconds in-flight calls (HTTP and WebSocket) get to finish once the listener is closed;
    /// calls still running then are answered -32603 {"reason":"shutting_down"}.
    #[arg(long, env = "RPCGUARD_SHUTDOWN_GRACE", default_value_t = 10)]
    shutdown_grace: u64,
    /// Browser origins (exact, e.g. https://app.example.com; repeat or comma-separate) allowed
    /// to call the API and read /openrpc.json (CORS). Off by default.
    #[arg(long = "cors-origin", env = "RPCGUARD_CORS_ORIGIN", value_delimiter = ',', num_args = 1..)]
    cors_origins: Vec<String>,
    /// Seconds a client has from connecting (or from its previous answer) to a complete request head.
    #[arg(long, env = "RPCGUARD_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout: u64,
    /// Seconds a request body has to arrive after its head.
    #[arg(long, env = "RPCGUARD_BODY_TIMEOUT", default_value_t = 10)]
    body_timeout: u64,
    /// Calls one WebSocket session may have in flight (answers not yet written included).
    #[arg(long, env = "RPCGUARD_WS_MAX_IN_FLIGHT", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    ws_max_in_flight: u32,
    /// Seconds between pings on a WebSocket session.
    #[arg(long, env = "RPCGUARD_WS_PING_INTERVAL", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    ws_ping_interval: u64,
    /// Seconds without any frame (message or pong) after which a WebSocket session is closed.
    #[arg(long, env = "RPCGUARD_WS_IDLE_TIMEOUT", default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    ws_idle_timeout: u64,
    /// sign_in attempts per minute per (account, client IP); 0 disables.
    #[arg(long, env = "RPCGUARD_SIGNIN_PER_ACCOUNT_IP", default_value_t = 5)]
    signin_per_account_ip: u32,
    /// sign_in attempts per minute per client IP; 0 disables.
    #[arg(long, env = "RPCGUARD_SIGNIN_PER_IP", default_value_t = 30)]
    signin_per_ip: u32,
    /// sign_in attempts per minute per account; 0 disables.
    #[arg(long, env = "RPCGUARD_SIGNIN_PER_ACCOUNT", default_value_t = 30)]
    signin_per_account: u32,
    /// sign_up attempts per minute per client IP (IPv6: per /64); 0 disables.
    #[arg(long, env = "RPCGUARD_SIGNUP_PER_IP", default_value_t = rpcguard_accounts::throttle::DEFAULT_SIGN_UP_PER_IP)]
    signup_per_ip: u32,
    /// Most keys each throttle limiter keeps (memory bound); when full, new keys share one budget.
    #[arg(long, env = "RPCGUARD_THROTTLE_MAX_KEYS", default_value_t = rpcguard_accounts::throttle::DEFAULT_MAX_KEYS)]
    throttle_max_keys: usize,
    /// refresh calls per minute per client IP (IPv6: per /64); 0 disables.
    #[arg(long, env = "RPCGUARD_REFRESH_PER_IP", default_value_t = RefreshConfig::default().per_ip)]
    refresh_per_ip: u32,
    /// refresh calls per minute per session; 0 disables.
    #[arg(long, env = "RPCGUARD_REFRESH_PER_SESSION", default_value_t = RefreshConfig::default().per_session)]
    refresh_per_session: u32,
    /// Most scopes one sign_in may ask for (more: -32602).
    #[arg(long, env = "RPCGUARD_MAX_SIGN_IN_SCOPES", default_value_t = SessionLimits::DEFAULT_MAX_SCOPES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    max_sign_in_scopes: usize,
    /// Most bytes of the scopes one sign_in asks for, spaces counted (more: -32602).
    #[arg(long, env = "RPCGUARD_MAX_SIGN_IN_SCOPE_BYTES", default_value_t = SessionLimits::DEFAULT_MAX_SCOPE_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_048_576))]
    max_sign_in_scope_bytes: usize,
    /// Most live sessions per account; a sign_in beyond it ends the oldest. 0 = no bound.
    #[arg(long, env = "RPCGUARD_MAX_SESSIONS_PER_ACCOUNT", default_value_t = SessionLimits::DEFAULT_MAX_SESSIONS)]
    max_sessions_per_account: u32,
    /// Rotated refresh tokens kept per session for reuse detection (between N and 2N); 0 = all.
    #[arg(long, env = "RPCGUARD_REFRESH_HISTORY", default_value_t = SessionLimits::DEFAULT_REFRESH_HISTORY)]
    refresh_history: u32,
    /// URL the OpenRPC document gives in `servers` (default: http://ADDR/).
    #[arg(long, env = "RPCGUARD_PUBLIC_URL")]
    public_url: Option<String>,
    /// The interactive docs page at GET /docs (off: 404).
    #[arg(long, env = "RPCGUARD_DOCS", value_enum, default_value_t = OnOff::On)]
    docs: OnOff,
    /// Operator policy (TOML): per-method scopes, any-of alternatives, disabled methods and
    /// rate limits (README, "Policy"). Checked at start; SIGHUP reloads it.
    #[arg(long, env = "RPCGUARD_POLICY")]
    policy: Option<PathBuf>,
    /// Serve Prometheus metrics at GET /metrics on this address (a listener of its own, e.g.
    /// 127.0.0.1:9464; never the API's port, so the public side cannot reach it). Default: off.
    #[arg(long, env = "RPCGUARD_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    /// What rpc.discover answers: `all` (the whole document) or `caller` (only the methods the
    /// caller may call).
    #[arg(long, env = "RPCGUARD_DISCOVER", default_value = "all", value_parser = parse_discover)]
    discover: Discover,
}

fn parse_discover(value: &str) -> Result<Discover, String> {
    value.parse()
}

fn parse_trusted_proxies(value: &str) -> Result<TrustedProxies, String> {
    value.parse().map_err(|err: ProxyListError| err.to_string())
}

fn parse_forwarded_header(value: &str) -> Result<ForwardedHeader, String> {
    value.parse()
}

/// A feature switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnOff {
    /// Turned on.
    On,
    /// Turned off.
    Off,
}

#[derive(Debug, Args)]
struct OpenrpcArgs {
    /// URL the document gives in `servers`.
    #[arg(
        long,
        env = "RPCGUARD_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080/"
    )]
    public_url: String,
    /// Show the document as a server with this policy file serves it.
    #[arg(long, env = "RPCGUARD_POLICY")]
    policy: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct ScopeArgs {
    /// Username.
    name: String,
    /// Scopes.
    #[arg(required = true)]
    scopes: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Creates a user; the password is read from the first line of stdin.
    ///
    /// The hash is made at the cost most stored hashes have (the cost the
    /// server verifies unknown users at), so that the account answers a
    /// wrong password as fast as every other one and as an unknown name; on
    /// a store with no hashes yet, at the cost the server last started with
    /// (it publishes it in the store), else 12.
    Add {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
        /// bcrypt cost (default: the cost most stored hashes have, else the server's, else 12).
        #[arg(long, env = "RPCGUARD_BCRYPT_COST", value_parser = clap::value_parser!(u32).range(4..=31))]
        bcrypt_cost: Option<u32>,
    },
    /// Grants Bearer scopes to a user.
    Grant(ScopeArgs),
    /// Revokes Bearer scopes from a user.
    Revoke(ScopeArgs),
    /// Deletes a user (its tokens stop working at once).
    Delete {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lists users: name, creation time, scopes, `disabled` or `enabled`,
    /// and the number of live sessions, under a header line.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// One JSON object per user and line, for scripts
        /// (`{"username","created_at","scopes","disabled","sessions"}`).
        #[arg(long)]
        json: bool,
    },
    /// Disables a user: sign_in answers -32004 (after a correct password)
    /// and every session ends at once.
    Disable {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Enables a disabled user (ended sessions stay ended).
    Enable {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Ends every session of a user: its access and refresh tokens stop at once.
    SignOut {
        /// Username.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

fn doc_info(public_url: String) -> DocInfo {
    rpcguard_accounts::config::reference_doc(&public_url)
}

fn store_config(store: StoreArgs) -> Config {
    let mut config = Config::new(store.data_dir);
    config.database_url = store.database_url;
    config.db_pool_size = store.db_pool_size;
    config
}

fn serve_config(args: ServeArgs) -> Config {
    let addr = args.addr;
    let mut config = store_config(args.store);
    config.secret = match (args.secret_file, std::env::var_os("RPCGUARD_SECRET")) {
        (Some(path), _) => SecretSource::File(path),
        (None, Some(value)) => SecretSource::Value(value.into_encoded_bytes()),
        (None, None) => SecretSource::DataDir,
    };
    config.token_ttl = Duration::from_secs(args.token_ttl);
    config.jwt_alg = args.jwt_alg;
    if let (Some(issuer), Some(audience), Some(jwks)) =
        (args.oidc_issuer, args.oidc_audience, args.oidc_jwks)
    {
        let mut oidc = OidcConfig::new(issuer, audience, JwksSource::parse(&jwks));
        oidc.scopes_claim = args.oidc_scopes_claim;
        oidc.cooldown = Duration::from_secs(args.oidc_jwks_cooldown);
        oidc.require_at_jwt = args.oidc_require_at_jwt;
        config.oidc = Some(oidc);
    }
    config.refresh_ttl = Duration::from_secs(args.refresh_ttl);
    if args.user_cache_ms != 0 {
        tracing::warn!("--user-cache-ms is deprecated and ignored: users are kept in memory, exactly, by default");
    }
    config.auth_cache_users = args.auth_cache_users;
    config.bcrypt_cost = args.bcrypt_cost;
    if let Some(workers) = args.bcrypt_workers {
        config.bcrypt_workers = workers;
    }
    config.bcrypt_queue = args.bcrypt_queue;
    config.server.cpu_share = (args.bcrypt_share > 0.0)
        .then(|| rpcguard_accounts::config::bcrypt_share(args.bcrypt_share));
    config.bcrypt_signup_queue = args.bcrypt_signup_queue;
    config.throttle = ThrottleConfig {
        per_account_and_ip: args.signin_per_account_ip,
        per_ip: args.signin_per_ip,
        per_account: args.signin_per_account,
    };
    config.sign_up_per_ip = args.signup_per_ip;
    config.throttle_max_keys = args.throttle_max_keys;
    config.refresh_throttle = RefreshConfig {
        per_ip: args.refresh_per_ip,
        per_session: args.refresh_per_session,
    };
    config.session_limits = SessionLimits {
        max_scopes: args.max_sign_in_scopes,
        max_scope_bytes: args.max_sign_in_scope_bytes,
        max_sessions: args.max_sessions_per_account,
        refresh_history: args.refresh_history,
    };
    config.server.max_body_bytes = args.max_body_bytes;
    config.server.max_batch_len = args.max_batch_len;
    config.server.max_connections = args.max_connections;
    config.server.max_connections_per_ip = args.max_connections_per_ip;
    config.server.header_timeout = Duration::from_secs(args.header_timeout);
    config.server.body_timeout = Duration::from_secs(args.body_timeout);
    config.server.ws_max_in_flight = args.ws_max_in_flight;
    config.server.ws_ping_interval = Duration::from_secs(args.ws_ping_interval);
    config.server.ws_idle_timeout = Duration::from_secs(args.ws_idle_timeout);
    config.server.openrpc_info =
        doc_info(args.public_url.unwrap_or_else(|| format!("http://{addr}/")));
    config.server.docs_page = args.docs == OnOff::On;
    config.server.discover = args.discover;
    config.server.trusted_proxies = args.trusted_proxies;
    config.server.forwarded_header = args.forwarded_header;
    config.server.drain_delay = Duration::from_secs(args.drain_delay);
    config.server.shutdown_grace = Duration::from_secs(args.shutdown_grace);
    config.server.cors_origins = args
        .cors_origins
        .into_iter()
        .filter(|origin| !origin.trim().is_empty())
        .collect();
    config
}

async fn serve(
    args: ServeArgs,
    log_format: LogFormat,
    out: rpcguard_accounts::logging::BatchedStderr,
) -> anyhow::Result<()> {
    let say = Say {
        out,
        on: log_format == LogFormat::Text,
    };
    let docs_on = args.docs == OnOff::On;
    let addr = args.addr;
    let policy_file = args.policy.clone();
    let metrics_addr = args.metrics_addr;
    let mut config = serve_config(args);
    if let Some(path) = &policy_file {
        config.server.policy = Policy::load(path).map_err(|err| anyhow::anyhow!("{err}"))?;
    }
    if let Err(err) = rpcguard_accounts::process::raise_open_file_limit() {
        tracing::warn!(error = %err, "cannot raise the open-file limit");
    }
    // Everything is checked (key, data dir, store) before the port is
    // bound, so a busy port never hides a configuration error; a first
    // start that fails leaves no data dir behind.
    let fresh_data_dir = config.database_url.is_none() && !config.data_dir.exists();
    let started = async {
        let parts = app::reference(&config).await?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        anyhow::Ok(app::serve(parts, &config, listener)?)
    };
    let server = match started.await {
        Ok(server) => server,
        Err(err) => {
            if fresh_data_dir {
                let _ = std::fs::remove_dir_all(&config.data_dir);
            }
            return Err(err);
        }
    };
    let bound = server.local_addr();
    tracing::info!(addr = %bound, store = %if config.database_url.is_some() { "postgres" } else { "sqlite" }, "rpcguard listening");
    // Taken before the "listening" line, so that no SIGHUP after it can
    // end the server.
    tokio::spawn(reload_policy_on_sighup(
        hangups(),
        policy_file,
        server.policy(),
        config.server.metrics.clone(),
        say.clone(),
    ));
    if let Some(metrics_addr) = metrics_addr {
        let listener = tokio::net::TcpListener::bind(metrics_addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {metrics_addr}"))?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, path = rpcguard::metrics::METRICS_PATH, "metrics listening");
        say.line(format!(
            "rpcguard metrics on http://{bound}{}",
            rpcguard::metrics::METRICS_PATH
        ));
        tokio::spawn(rpcguard::metrics::serve(
            listener,
            config.server.metrics.clone(),
            std::future::pending(),
        ));
    }
    // Tests and scripts read this line to learn the port when --addr ends
    // in :0 (in JSON, the "rpcguard listening" object's `addr`).
    say.line(format!("rpcguard listening on http://{bound}/"));
    if docs_on {
        say.line(format!(
            "rpcguard docs on http://{bound}{}",
            rpcguard::server::DOCS_PATH
        ));
    }
    // What only the start needed leaves this process's memory.
    let released = rpcguard_accounts::memory::release_startup_pages();
    tracing::debug!(kib = released, "start-up pages released");
    server.run_until(rpcguard::server::shutdown_signal()).await;
    Ok(())
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

/// This process's SIGHUPs, from now on (the default action, ending the
/// process, no longer applies).
fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGHUP: the policy will not reload");
                None
            }
        }
    }
    #[cfg(not(unix))]
    None
}

/// Re-reads the policy file at each SIGHUP and puts it in force; a file
/// that does not read or check is refused with a log line, and the policy
/// in force stays. Without `--policy`, a SIGHUP is logged and changes
/// nothing (it does not end the server, as it would by default).
#[cfg_attr(not(unix), allow(unused_variables, unused_mut))]
async fn reload_policy_on_sighup(
    mut hangups: Hangups,
    path: Option<PathBuf>,
    handle: rpcguard::server::PolicyHandle,
    metrics: rpcguard::metrics::Metrics,
    say: Say,
) {
    use rpcguard::audit::{Audit, Event};
    #[cfg(unix)]
    while let Some(Some(())) = match hangups.as_mut() {
        Some(hangups) => Some(hangups.recv().await),
        None => None,
    } {
        let Some(path) = &path else {
            tracing::info!("SIGHUP: no --policy file to reload");
            continue;
        };
        match Policy::load(path).and_then(|policy| handle.replace(policy)) {
            Ok(()) => {
                metrics.policy_reload(true);
                Audit::new(Event::PolicyReloaded).emit();
                tracing::info!(file = %path.display(), "policy reloaded");
                // Tests and scripts wait for this line.
                say.line("rpcguard policy reloaded".to_owned());
            }
            Err(err) => {
                metrics.policy_reload(false);
                Audit::new(Event::PolicyRefused).reason("invalid").emit();
                tracing::error!(error = %err, "policy reload refused; the policy in force stays");
                say.line(format!("rpcguard policy reload refused: {err}"));
            }
        }
    }
}

fn openrpc(args: OpenrpcArgs) -> anyhow::Result<()> {
    let api: rpcguard::Api<rpcguard_accounts::methods::accounts::Accounts> =
        rpcguard_accounts::app::reference_api()?;
    let schemes = [rpcguard_accounts::BearerSecurity::published_scheme(
        rpcguard_accounts::auth::token::TokenKeys::DEFAULT_ISSUER,
        &args.public_url,
    )];
    let info = doc_info(args.public_url.clone());
    let document = match &args.policy {
        None => rpcguard::openrpc::document(&api, &schemes, &info)?,
        Some(path) => {
            let policy = Policy::load(path).map_err(|err| anyhow::anyhow!("{err}"))?;
            rpcguard::server::document_with_policy(&api, &schemes, &info, &policy)
                .map_err(|err| anyhow::anyhow!("{err}"))?
        }
    };
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &document)?;
    writeln!(out)?;
    Ok(())
}

fn parse_scopes(raw: Vec<String>) -> anyhow::Result<Vec<Scope>> {
    raw.into_iter()
        .map(|s| Scope::parse(s).map_err(anyhow::Error::msg))
        .collect()
}

/// Where an admin command looked for users (never a password in a URL).
fn where_users_live(config: &Config) -> String {
    match &config.database_url {
        Some(url) => match url.rsplit_once('@') {
            Some((_, host_and_db)) => format!("the PostgreSQL database {host_and_db}"),
            None => "the PostgreSQL database".to_owned(),
        },
        None => config.database(),
    }
}

/// `user grant` (`grant = true`) or `user revoke`.
async fn change_scopes(args: ScopeArgs, grant: bool) -> anyhow::Result<()> {
    let username = Username::parse(args.name).map_err(anyhow::Error::msg)?;
    let scopes = parse_scopes(args.scopes)?;
    let config = store_config(args.store);
    let store = app::open_existing_store(&config).await?;
    let changed = if grant {
        store.grant(&username, &scopes).await
    } else {
        store.revoke(&username, &scopes).await
    };
    let user = match changed {
        Err(rpcguard_accounts::store::StoreError::NotFound) => {
            bail!("no user {username} in {}", where_users_live(&config))
        }
        other => other?,
    };
    let changed: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
    let event = if grant {
        Event::ScopesGranted
    } else {
        Event::ScopesRevoked
    };
    announce(&*store, event, &user.username, &changed.join(" ")).await;
    if user.scopes.is_empty() {
        println!("{}: no scopes", user.username);
    } else {
        println!("{}: {}", user.username, user.scopes.join(" "));
    }
    Ok(())
}

/// Tells the running servers what an operator changed, for their audit
/// stream; the change itself is done whatever happens here.
async fn announce(
    store: &dyn rpcguard_accounts::store::UserStore,
    event: Event,
    username: &str,
    detail: &str,
) {
    let change = rpcguard_accounts::store::AdminChange {
        event,
        username,
        detail,
    };
    if let Err(err) = store.announce(&change).await {
        tracing::warn!(error = %err, "the change is done, but the servers' audit stream will not show it");
    }
}

/// `user disable` (`disabled = true`) or `user enable`.
async fn set_disabled(name: String, store: StoreArgs, disabled: bool) -> anyhow::Result<()> {
    let username = Username::parse(name).map_err(anyhow::Error::msg)?;
    let config = store_config(store);
    let store = app::open_existing_store(&config).await?;
    let now = rpcguard_accounts::clock::unix_now().context("clock before 1970")?;
    match store
        .set_disabled(&username, disabled, i64::try_from(now)?)
        .await
    {
        Err(rpcguard_accounts::store::StoreError::NotFound) => {
            bail!("no user {username} in {}", where_users_live(&config))
        }
        Err(other) => return Err(other.into()),
        Ok(ended) if disabled => {
            let detail = format!("{} sessions ended", ended.len());
            announce(&*store, Event::AccountDisabled, username.as_str(), &detail).await;
            println!("{username}: disabled, {} sessions ended", ended.len())
        }
        Ok(_) => {
            announce(&*store, Event::AccountEnabled, username.as_str(), "").await;
            println!("{username}: enabled")
        }
    }
    Ok(())
}

async fn user(command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            store,
            bcrypt_cost,
        } => {
            let username = Username::parse(name).map_err(anyhow::Error::msg)?;
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line)?;
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                bail!("no password on standard input: echo 'a password' | rpcguard user add {username}");
            }
            let password = Password::parse(line).map_err(anyhow::Error::msg)?;
            let store = app::open_existing_store(&store_config(store)).await?;
            let bcrypt_cost = match bcrypt_cost {
                Some(cost) => cost,
                None => {
                    let servers = store
                        .setting(app::BCRYPT_COST_SETTING)
                        .await?
                        .and_then(|cost| cost.parse().ok())
                        .unwrap_or(Config::new(".").bcrypt_cost);
                    rpcguard_accounts::auth::password::prevailing_cost(
                        &store.password_hash_costs().await?,
                        servers,
                    )
                }
            };
            let hasher =
                rpcguard_accounts::auth::password::PasswordHasher::new(bcrypt_cost, 1, 1).await?;
            let hash = hasher.hash(&password).await?;
            let now = rpcguard_accounts::clock::unix_now().context("clock before 1970")?;
            match store
                .create_user(&username, &hash, i64::try_from(now)?)
                .await
            {
                Ok(user) => println!("created {}", user.username),
                Err(rpcguard_accounts::store::StoreError::UsernameTaken) => {
                    bail!("username {username} is taken")
                }
                Err(other) => return Err(other.into()),
            }
        }
        UserCommand::Grant(args) => change_scopes(args, true).await?,
        UserCommand::Revoke(args) => change_scopes(args, false).await?,
        UserCommand::Delete { name, store } => {
            let username = Username::parse(name).map_err(anyhow::Error::msg)?;
            let config = store_config(store);
            let store = app::open_existing_store(&config).await?;
            if !store.delete_user(&username).await? {
                bail!("no user {username} in {}", where_users_live(&config));
            }
            announce(&*store, Event::AccountDeleted, username.as_str(), "").await;
            println!("deleted {username}");
        }
        UserCommand::List { store, json } => {
            let store = app::open_existing_store(&store_config(store)).await?;
            let now =
                i64::try_from(rpcguard_accounts::clock::unix_now().context("clock before 1970")?)?;
            let sessions: std::collections::HashMap<String, u64> =
                store.live_session_counts(now).await?.into_iter().collect();
            if !json {
                println!("USERNAME\tCREATED\tSCOPES\tSTATE\tSESSIONS");
            }
            for user in store.list_users().await? {
                let public = user.public();
                let live = sessions
                    .get(&user.username.to_ascii_lowercase())
                    .copied()
                    .unwrap_or(0);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "username": public.username,
                            "created_at": public.created_at,
                            "scopes": user.scopes,
                            "disabled": user.disabled,
                            "sessions": live,
                        })
                    );
                } else {
                    println!(
                        "{}\t{}\t{}\t{}\t{live}",
                        public.username,
                        public.created_at,
                        if user.scopes.is_empty() {
                            "-".to_owned()
                        } else {
                            user.scopes.join(" ")
                        },
                        if user.disabled { "disabled" } else { "enabled" },
                    );
                }
            }
        }
        UserCommand::Disable { name, store } => set_disabled(name, store, true).await?,
        UserCommand::Enable { name, store } => set_disabled(name, store, false).await?,
        UserCommand::SignOut { name, store } => {
            let username = Username::parse(name).map_err(anyhow::Error::msg)?;
            let config = store_config(store);
            let store = app::open_existing_store(&config).await?;
            if store.find_user(username.as_str()).await?.is_none() {
                bail!("no user {username} in {}", where_users_live(&config));
            }
            let now = rpcguard_accounts::clock::unix_now().context("clock before 1970")?;
            let ended = store
                .end_sessions(username.as_str(), None, i64::try_from(now)?)
                .await?;
            let detail = format!("{} sessions ended", ended.len());
            announce(&*store, Event::SessionsEnded, username.as_str(), &detail).await;
            println!("{username}: {} sessions ended", ended.len());
        }
    }
    Ok(())
}

/// Logs to standard error in batches ([`rpcguard_accounts::logging`]), so
/// that the per-call log line costs no system call on the request path.
/// The returned guard writes what is left when dropped, at the end of
/// `main`.
/// Refuses a data dir that is missing, unreadable or holds no key set.
fn existing_key_set(dir: &std::path::Path) -> anyhow::Result<()> {
    use rpcguard::error::io_cause;
    use rpcguard_accounts::keys::KEYS_FILE_NAME;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => bail!("{} is not a directory", dir.display()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "no data dir {}: pass the server's --data-dir (`rpcguard serve` creates it at its first start)",
            dir.display()
        ),
        Err(err) => bail!("cannot open the data dir {}: {}", dir.display(), io_cause(&err)),
    }
    let keys = dir.join(KEYS_FILE_NAME);
    let legacy = dir.join(rpcguard_accounts::config::SECRET_FILE_NAME);
    match (std::fs::metadata(&keys), legacy.is_file()) {
        (Ok(_), _) | (_, true) => Ok(()),
        (Err(err), false) if err.kind() == std::io::ErrorKind::NotFound => bail!(
            "no key set in {} ({KEYS_FILE_NAME}): `rpcguard serve` makes one at its first start",
            dir.display()
        ),
        (Err(err), false) => bail!(
            "cannot read {}: {} (run this as the user the server runs as)",
            keys.display(),
            io_cause(&err)
        ),
    }
}

async fn key(command: KeyCommand) -> anyhow::Result<()> {
    use rpcguard_accounts::config::ConfigError;
    use rpcguard_accounts::keys::DbKeySet;
    // The key set must exist already: a mistyped --data-dir is an error,
    // never a new data dir with a new key set.
    let prepare = |args: &KeyArgs| -> anyhow::Result<Duration> {
        if args.database_url.is_none() {
            existing_key_set(&args.data_dir)?;
            rpcguard_accounts::config::prepare_data_dir(&args.data_dir)?;
        }
        Ok(Duration::from_secs(args.token_ttl))
    };
    match command {
        KeyCommand::Rotate { alg, keys } => {
            let ttl = prepare(&keys)?;
            let set = match &keys.database_url {
                Some(url) => DbKeySet::connect(url).await?.rotate(alg, ttl).await?,
                None => rpcguard_accounts::keys::rotate_key_set(&keys.data_dir, alg, ttl)?,
            };
            let signing = set.signing()?;
            let now = rpcguard_accounts::clock::unix_now().unwrap_or(0);
            match signing.state(now, ttl) {
                rpcguard_accounts::keys::KeyState::Next { .. } => println!(
                    "new signing key: {} ({}), published; {}",
                    signing.kid,
                    signing.alg,
                    signing.state(now, ttl)
                ),
                _ => println!("new signing key: {} ({})", signing.kid, signing.alg),
            }
        }
        KeyCommand::List { keys } => {
            let ttl = prepare(&keys)?;
            let set = match &keys.database_url {
                Some(url) => DbKeySet::connect(url)
                    .await?
                    .load()
                    .await?
                    .ok_or(ConfigError::NoKeySet)?,
                None => rpcguard_accounts::keys::open_key_set(&keys.data_dir, None, ttl)?,
            };
            let now = rpcguard_accounts::clock::unix_now().unwrap_or(0);
            for key in &set.keys {
                println!("{}\t{}\t{}", key.kid, key.alg, key.state(now, ttl));
            }
        }
    }
    Ok(())
}

fn start_logging(
    format: LogFormat,
) -> (
    rpcguard_accounts::logging::BatchedStderr,
    rpcguard_accounts::logging::FlushGuard,
) {
    use rpcguard_accounts::logging::{BatchedStderr, CallLines, LineFormat};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    let (writer, guard) = BatchedStderr::start();
    let out = writer.clone();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let layer = tracing_subscriber::fmt::layer().with_writer(writer.clone());
    match format {
        // Colours only for a person at a terminal, never in a file or pipe;
        // the per-call line is written by `CallLines` (the same bytes,
        // for a fraction of the cost) unless colours are on.
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            let layer = layer.with_ansi(ansi);
            if ansi {
                registry.with(layer).init();
            } else {
                registry
                    .with(CallLines::new(layer, writer, LineFormat::Text))
                    .init();
            }
        }
        // The event's fields beside timestamp, level, target and message;
        // no span list (calls log no spans).
        LogFormat::Json => {
            let layer = layer
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false);
            registry
                .with(CallLines::new(layer, writer, LineFormat::Json))
                .init();
        }
    }
    (out, guard)
}

/// The command line, or an error that names the environment variable when
/// the bad value came from one (clap names only the flag).
fn parse_cli() -> Cli {
    let err = match Cli::try_parse() {
        Ok(cli) => return cli,
        Err(err) => err,
    };
    let flag = match err.get(clap::error::ContextKind::InvalidArg) {
        Some(clap::error::ContextValue::String(arg)) => arg.split(' ').next().map(str::to_owned),
        _ => None,
    };
    let given_on_the_line =
        |flag: &str| std::env::args().any(|a| a == flag || a.starts_with(&format!("{flag}=")));
    if let Some(flag) = flag.filter(|f| f.starts_with("--") && !given_on_the_line(f)) {
        let mut command = <Cli as clap::CommandFactory>::command();
        command.build();
        let var = std::iter::once(&command)
            .chain(command.get_subcommands())
            .flat_map(|c| c.get_arguments())
            .find(|a| a.get_long() == flag.strip_prefix("--"))
            .and_then(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned())
            .filter(|var| std::env::var_os(var).is_some());
        if let Some(var) = var {
            let text = err.to_string();
            let first = text.lines().next().unwrap_or_default();
            let named = match first.split_once(&format!("for '{flag}")) {
                Some((before, after)) => {
                    let rest = after.split_once("':").map_or("", |(_, rest)| rest);
                    format!("{before}in {var} (the environment variable of {flag}):{rest}")
                }
                None => format!("{first} (from {var})"),
            };
            eprintln!("{named}");
            std::process::exit(2);
        }
    }
    err.exit()
}

fn main() -> ExitCode {
    let cli = parse_cli();
    let cli_log_format = cli.log_format;
    let (out, flush_log_at_exit) = start_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let serve_out = out.clone();
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(*args, cli.log_format, serve_out).await,
            Command::Openrpc(args) => openrpc(args),
            Command::User(command) => user(command).await,
            Command::Key(command) => key(command).await,
            Command::Backup(args) => backup(args),
        }
    });
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if cli_log_format == LogFormat::Json {
                tracing::error!(error = %format!("{err:#}"), "rpcguard stopped");
            }
            // After every log line written before it.
            if cli_log_format == LogFormat::Text {
                out.say(&format!("error: {err:#}"));
            }
            drop(flush_log_at_exit);
            return ExitCode::FAILURE;
        }
    };
    drop(flush_log_at_exit);
    code
}
