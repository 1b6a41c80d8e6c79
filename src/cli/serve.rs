//! `rpcguard serve`: its flags, the [`Config`] they make, and the running
//! server (the lines it prints, the policy reloaded at each SIGHUP).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use rpcguard::policy::{Discover, Policy};
use rpcguard::security::oidc::{JwksSource, OidcConfig};
use rpcguard::server::{ForwardedHeader, ProxyListError, TrustedProxies};
use rpcguard_accounts::app;
use rpcguard_accounts::config::{reference_doc, Config, SecretSource};
use rpcguard_accounts::keys::KeyAlg;
use rpcguard_accounts::session::SessionLimits;
use rpcguard_accounts::throttle::{RefreshConfig, ThrottleConfig};

use super::key::parse_alg;
use super::log::{LogFormat, Say};
use super::store::{store_config, StoreArgs};

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

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
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
        reference_doc(&args.public_url.unwrap_or_else(|| format!("http://{addr}/")));
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

pub(crate) async fn serve(
    args: ServeArgs,
    log_format: LogFormat,
    out: rpcguard_accounts::logging::BatchedStderr,
) -> anyhow::Result<()> {
    let say = Say::new(out, log_format);
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
