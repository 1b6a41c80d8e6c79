//! The server: one port for JSON-RPC over HTTP POST and over WebSocket,
//! plus `GET /health` (liveness), `GET /ready` (readiness, [`READY_PATH`]),
//! `GET /openrpc.json` (the document `rpc.discover` answers, for tools that
//! fetch it by URL), `GET /docs` (an interactive page built from that
//! document, [`docs`]; [`ServerConfig::docs_page`] turns it off; `GET /`
//! redirects there, or answers a small JSON pointer to the API when it is
//! off), and the embedder's own plain-HTTP resources
//! ([`ServerConfig::resources`], [`ExtraResource`]: a JWKS, for one).
//!
//! Behind a reverse proxy, the client's address comes from the proxy's
//! header when the proxy is trusted ([`TrustedProxies`],
//! [`ServerConfig::trusted_proxies`]); browser applications on other
//! origins are allowed with [`ServerConfig::cors_origins`].
//!
//! The caller binds the listener (tests bind `127.0.0.1:0`) and the server
//! runs its own accept loop, so that it knows each peer's address (for the
//! throttles and the per-address connection cap) and bounds what every
//! connection may cost:
//!
//! | resource | bound | setting |
//! |---|---|---|
//! | connections | in all, per address (IPv6 by /64), plus a reserve for new addresses | `max_connections`, `max_connections_per_ip`, `connection_reserve` |
//! | open files | connections capped below the soft limit in force (`rpcguard-accounts` raises it to the hard limit at start) | — |
//! | a connection before its request head | HTTP/1.1 header deadline from accept, also between keep-alive requests and while an answer waits to be read | `header_timeout` |
//! | a request body | size, and a deadline from the end of the head | `max_body_bytes`, `body_timeout` |
//! | a WebSocket session | calls in flight, message size, ping and idle timeout | `ws_max_in_flight`, `ws_ping_interval`, `ws_idle_timeout` |
//!
//! HTTP/2 is off: JSON-RPC clients speak HTTP/1.1 (and WebSocket over it),
//! and every HTTP/2 connection would need the same deadlines and stream
//! limits again. A client that opens with the HTTP/2 preface gets a
//! protocol error and is closed.
//!
//! Shutdown is graceful ([`lifecycle`]): on stop the server first drains
//! (`/ready` answers 503, everything else is served for
//! [`ServerConfig::drain_delay`]), then closes its listener, lets requests
//! in flight (WebSocket calls included) finish within
//! [`ServerConfig::shutdown_grace`], and answers the calls still running
//! then with a JSON-RPC error (WebSocket sessions close with 1001).

mod connection;
mod cors;
pub(crate) mod dispatch;
pub mod docs;
pub(crate) mod document;
mod enforce;
mod extra;
mod gateway;
mod guard;
mod ids;
pub mod lifecycle;
mod pipeline;
pub mod proxy;
mod reply;
pub(crate) mod resource;
mod serve;
pub mod share;
mod slots;
mod woken;
mod ws;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION};
use hyper::Request;
use hyper_util::rt::TokioIo;
use jsonrpsee::server::{stop_channel, ServerHandle};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Layer;

pub use docs::DOCS_PATH;
pub use document::DOCUMENT_PATH;
pub use enforce::{document_with_policy, PolicyHandle};
pub use extra::ExtraResource;
pub use gateway::{HEALTH_PATH, RPC_PATHS};
pub use lifecycle::{Draining, Readiness, ReadinessCheck, READY_PATH};
pub use proxy::{ForwardedHeader, ProxyListError, TrustedProxies};
pub use serve::{serve, NoState, Serve, StateSource};
pub use share::CpuShare;

use crate::api::{Api, ApiError};
use crate::openrpc::DocInfo;
use crate::policy::{Discover, Policy, PolicyError};
use crate::security::ConnectionInfo;
use crate::security::Scheme;
use crate::security::SharedSecurity;
use connection::{Connection, Shared, WsSettings};
use dispatch::Executor;
use docs::DocsPage;
use enforce::{Base, PolicyCell};
use guard::SecurityLayer;
use lifecycle::{DrainSwitch, Ready};
use pipeline::Pipeline;
use proxy::ClientAddrs;
use slots::{ConnectionSlots, Refused, SlotLimits};

/// Limits and identity of a server. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body (and WebSocket message) accepted, bytes
    /// (default 1 MiB).
    pub max_body_bytes: u32,
    /// Largest response, bytes (default 10 MiB).
    pub max_response_bytes: u32,
    /// Most calls in one batch (default 100).
    pub max_batch_len: u32,
    /// Most open connections, HTTP and WebSocket together (default 20,000;
    /// lowered at start to what the open-file limit allows).
    pub max_connections: u32,
    /// Most open connections from one client address, IPv6 counted by /64
    /// (default 1,000; 0 = no per-address limit). Behind a trusted proxy
    /// it caps each client's requests in flight and WebSocket sessions,
    /// and the proxy's own connections are exempt (see
    /// [`trusted_proxies`](Self::trusted_proxies)).
    pub max_connections_per_ip: u32,
    /// Connections admitted past `max_connections` for addresses that hold
    /// none yet, so a health check gets in while the slots are taken
    /// (default 32).
    pub connection_reserve: u32,
    /// Time from accept (or from the previous answer on a keep-alive
    /// connection) to a complete request head (default 10 s). A client
    /// that does not read its answer within it is cut off too. Checked
    /// every quarter of it, so a connection is closed between 1 and 1.25
    /// times the timeout after its last request.
    pub header_timeout: Duration,
    /// Time a request body has to arrive after its head (default 10 s).
    pub body_timeout: Duration,
    /// Calls one WebSocket session may have in flight, answers not yet
    /// written included (default 16).
    pub ws_max_in_flight: u32,
    /// Time between pings on a WebSocket session (default 30 s).
    pub ws_ping_interval: Duration,
    /// A WebSocket session that sends nothing (not even a pong) for this
    /// long is closed (default 90 s).
    pub ws_idle_timeout: Duration,
    /// Time in-flight calls (HTTP and WebSocket alike) get to finish once
    /// the listener is closed on shutdown (default 10 s); a call still
    /// running then is answered `-32603` with `data
    /// {"reason":"shutting_down"}` ([`lifecycle`]).
    pub shutdown_grace: Duration,
    /// Time the server keeps serving after a stop began, with `GET /ready`
    /// answering 503, before it closes its listener, so a load balancer
    /// sees it leave before connections are refused (default 0; the
    /// `rpcguard` server's `--drain-delay` defaults to 5 s).
    pub drain_delay: Duration,
    /// What `GET /ready` asks the application (its store answers, its keys
    /// are loaded, …); `None` (the default): ready while not draining.
    pub readiness: Option<ReadinessCheck>,
    /// Longest time the readiness check may take; past it `GET /ready`
    /// answers 503 with `"why":["timeout"]` (default 2 s).
    pub ready_timeout: Duration,
    /// The reverse proxies whose `X-Forwarded-For` (or `Forwarded`, see
    /// [`forwarded_header`](Self::forwarded_header)) names the client
    /// (default none: the client is always the TCP peer). Only a
    /// connection from one of these networks is asked; the client is the
    /// right-most address of the header that is not itself a trusted proxy
    /// ([`proxy`]). [`CallContext::remote_addr`](crate::CallContext::remote_addr),
    /// the policy's `per_ip` limits and the per-address connection cap all
    /// use that address.
    pub trusted_proxies: TrustedProxies,
    /// Which header a trusted proxy writes the client in (default
    /// `X-Forwarded-For`); the other one is ignored.
    pub forwarded_header: ForwardedHeader,
    /// Origins (`https://app.example.com`, exact) whose browser pages may
    /// call the API and read `GET /openrpc.json` (CORS; default none,
    /// CORS off). A malformed origin, `*` or `null` is refused at start
    /// ([`ServerError::CorsOrigin`]).
    pub cors_origins: Vec<String>,
    /// What the OpenRPC document says about this server: set your own title
    /// and version (the default is "JSON-RPC API" 0.0.0); an empty
    /// `server_url` (the default) becomes `http://<bound address>/`.
    pub openrpc_info: DocInfo,
    /// Whether `GET /docs` serves the interactive docs page ([`docs`];
    /// default `true`). Off, every path under `/docs` answers 404.
    pub docs_page: bool,
    /// Plain-HTTP resources served beside the JSON-RPC paths (default
    /// none); a path the server itself uses is refused at start
    /// ([`ServerError::ResourcePath`]).
    pub resources: Vec<ExtraResource>,
    /// The operator's policy: requirements, disabled methods, rate limits
    /// ([`crate::policy`]; default: none). Replace it while the server runs
    /// with [`RunningServer::policy`].
    pub policy: Policy,
    /// What `rpc.discover` answers: the whole document (default) or only
    /// what the caller may call.
    pub discover: Discover,
    /// Where the server records its calls, connections and refusals
    /// ([`crate::metrics`]; default: a fresh registry). Serve it with
    /// [`crate::metrics::serve`] on a listener of its own.
    pub metrics: crate::metrics::Metrics,
    /// A share of the cores for the application's long CPU-bound jobs
    /// ([`CpuShare`]): while one waits or runs, connection code runs on at
    /// most [`CpuShare::api_workers`] workers at once. `None` (default):
    /// connections are never held back.
    pub cpu_share: Option<CpuShare>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 1024 * 1024,
            max_response_bytes: 10 * 1024 * 1024,
            max_batch_len: 100,
            max_connections: 20_000,
            max_connections_per_ip: 1_000,
            connection_reserve: 32,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            ws_max_in_flight: 16,
            ws_ping_interval: Duration::from_secs(30),
            ws_idle_timeout: Duration::from_secs(90),
            shutdown_grace: Duration::from_secs(10),
            drain_delay: Duration::ZERO,
            readiness: None,
            ready_timeout: Duration::from_secs(2),
            trusted_proxies: TrustedProxies::none(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            cors_origins: Vec::new(),
            openrpc_info: DocInfo::new("JSON-RPC API", "0.0.0"),
            docs_page: true,
            resources: Vec::new(),
            policy: Policy::default(),
            discover: Discover::All,
            metrics: crate::metrics::Metrics::default(),
            cpu_share: None,
        }
    }
}

/// Errors of building a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A method could not be registered.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A method requires a scheme the security function does not provide
    /// (a misspelt name would otherwise refuse every call with `-32001`).
    #[error(
        "method `{method}` requires security scheme `{scheme}`, which the security function does not provide (it provides: {known})"
    )]
    UnknownScheme {
        /// The method.
        method: String,
        /// The scheme it names.
        scheme: String,
        /// The schemes the security function provides, comma-separated.
        known: String,
    },
    /// A security scheme's header is not a valid header name, so its
    /// credential could never be presented.
    #[error(
        "security scheme `{scheme}` reads header {header:?}, which is not a valid header name"
    )]
    SchemeHeader {
        /// The scheme.
        scheme: String,
        /// Its header.
        header: String,
    },
    /// The OpenRPC document could not be serialized.
    #[error("building the OpenRPC document failed: {0}")]
    Document(#[from] serde_json::Error),
    /// An extra resource's path is one the server uses itself (a JSON-RPC
    /// path, `/health`, `/ready`, `/openrpc.json`, `/docs…`), is taken twice, or does
    /// not start with `/`.
    #[error("extra resource path {0:?} is taken or not a path")]
    ResourcePath(String),
    /// The policy names a method or scheme the server does not have.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// A CORS origin is not `scheme://host[:port]` (or is `*` or `null`).
    #[error("CORS origin {0:?} is not an exact origin such as https://app.example.com")]
    CorsOrigin(String),
    /// The listener failed.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

/// A server running in the background. Dropping it stops the server: keep
/// it, and end with [`RunningServer::run_until`] or [`RunningServer::stop`].
#[derive(Debug)]
#[must_use = "dropping the server stops it; keep it until `run_until` or `stop`"]
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<()>,
    policy: PolicyHandle,
    drain: Arc<DrainSwitch>,
    drain_delay: Duration,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The handle that replaces the server's policy while it runs (what
    /// `SIGHUP` does in the `rpcguard` server).
    pub fn policy(&self) -> PolicyHandle {
        self.policy.clone()
    }

    /// Whether the server is draining: turns true when [`stop`](Self::stop)
    /// begins.
    pub fn draining(&self) -> Draining {
        self.drain.signal()
    }

    /// Runs until `shutdown` resolves (e.g. [`shutdown_signal`]), then
    /// [`stop`](Self::stop)s.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) {
        shutdown.await;
        tracing::info!("shutting down");
        self.stop().await;
    }

    /// Stops gracefully: `/ready` turns 503 at once, the server keeps
    /// serving for [`ServerConfig::drain_delay`], then closes its listener,
    /// lets running HTTP and WebSocket calls finish within
    /// [`ServerConfig::shutdown_grace`] (one deadline for both), answers
    /// the calls still running then with `-32603` (`data
    /// {"reason":"shutting_down"}`) and closes WebSocket sessions with
    /// 1001, and returns once all are answered.
    pub async fn stop(self) {
        self.drain.start();
        if !self.drain_delay.is_zero() {
            tracing::info!(
                drain_delay_ms = self.drain_delay.as_millis() as u64,
                "draining: /ready answers 503, still serving"
            );
            tokio::time::sleep(self.drain_delay).await;
        }
        let _ = self.handle.stop();
        let _ = self.task.await;
    }
}

/// Open files kept free for everything that is not a connection (the
/// database, the listener, logs).
const FILES_RESERVED: u64 = 64;

/// The open-file soft limit in force.
fn open_file_limit() -> u64 {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            return limit.rlim_cur;
        }
    }
    u64::MAX
}

/// The connection slots `config` asks for, capped so that connections
/// (reserve included) never use the files the rest of the server needs.
fn slot_limits(config: &ServerConfig) -> SlotLimits {
    let limit = open_file_limit();
    let files = limit.saturating_sub(FILES_RESERVED);
    let reserve = u64::from(config.connection_reserve).min(files / 2);
    let max = u64::from(config.max_connections).min(files - reserve);
    if max < u64::from(config.max_connections) {
        tracing::info!(
            asked = config.max_connections,
            allowed = max,
            open_file_limit = limit,
            "connections capped below the open-file limit"
        );
    }
    SlotLimits {
        max: usize::try_from(max).unwrap_or(usize::MAX),
        reserve: usize::try_from(reserve).unwrap_or(usize::MAX),
        per_ip: config.max_connections_per_ip as usize,
    }
}

/// The headers the security function's schemes read; always
/// `Authorization`. A scheme whose header is not a valid header name could
/// never be presented: refused.
fn credential_headers(schemes: &[Scheme]) -> Result<Vec<HeaderName>, ServerError> {
    let mut names = vec![AUTHORIZATION];
    for scheme in schemes {
        let name = HeaderName::from_bytes(scheme.header().as_bytes()).map_err(|_| {
            ServerError::SchemeHeader {
                scheme: scheme.name().to_owned(),
                header: scheme.header().to_owned(),
            }
        })?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// Refuses a method that names a scheme `schemes` does not list.
/// A served scheme that no method accepts (and no public method reads for
/// an optional caller) is read from no request: most likely a method
/// forgot its requirement, so the start says so.
fn check_schemes<S: Send + Sync + 'static>(
    api: &Api<S>,
    schemes: &[Scheme],
) -> Result<(), ServerError> {
    for scheme in api.unrequired_schemes(schemes) {
        tracing::warn!(
            scheme,
            "no method requires this security scheme, so its credential is never read: give a method `.security(..)` with it, or drop it from the security function"
        );
    }
    match api.unknown_scheme(schemes) {
        None => Ok(()),
        Some((method, scheme)) => Err(ServerError::UnknownScheme {
            method: method.to_owned(),
            scheme: scheme.to_owned(),
            known: schemes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn check_resource_paths(resources: &[ExtraResource]) -> Result<(), ServerError> {
    let mut seen = std::collections::HashSet::new();
    for resource in resources {
        let path = resource.path();
        let taken = !path.starts_with('/')
            || RPC_PATHS
                .iter()
                .any(|rpc| path.trim_end_matches('/') == rpc.trim_end_matches('/'))
            || path == HEALTH_PATH
            || path == READY_PATH
            || path == DOCUMENT_PATH
            || DocsPage::owns(path)
            || !seen.insert(path);
        if taken {
            return Err(ServerError::ResourcePath(path.to_owned()));
        }
    }
    Ok(())
}

/// Starts serving `api` on `listener` in the background ([`serve()`]'s
/// work).
///
/// Every scheme a method's [`MethodSecurity`](crate::MethodSecurity) names
/// must be one of `security`'s [`schemes`](crate::SecurityFunction::schemes),
/// else [`ServerError::UnknownScheme`] names the method and the scheme.
/// The OpenRPC document is built here, once, and `rpc.discover` and
/// `GET /openrpc.json` ([`DOCUMENT_PATH`]) serve it from memory.
pub(crate) fn spawn<S: Send + Sync + 'static>(
    listener: TcpListener,
    api: Api<S>,
    state: Arc<S>,
    security: SharedSecurity,
    config: ServerConfig,
) -> Result<RunningServer, ServerError> {
    check_schemes(&api, &security.schemes())?;
    check_resource_paths(&config.resources)?;
    let addr = listener.local_addr()?;
    let mut info = config.openrpc_info.clone();
    if info.server_url.is_empty() {
        info.server_url = format!("http://{addr}/");
    }
    let (handlers, decls) = api.into_parts(state)?;
    let recorders = config
        .metrics
        .methods(decls.iter().map(|d| d.name.as_ref()));
    let policy = Arc::new(PolicyCell::new(
        Base {
            decls,
            schemes: security.schemes(),
            info,
            discover: config.discover,
            recorders,
        },
        config.policy.clone(),
    )?);
    let docs = config.docs_page.then(DocsPage::new);
    if let Some(page) = &docs {
        tracing::debug!(bytes = page.size(), path = DOCS_PATH, "docs page on");
    }
    // `rpc.discover` has no handler in the table: the security layer
    // answers it with the document's prepared text (see `guard`).

    let credential_headers = credential_headers(&security.schemes())?;
    let cors = cors::Cors::new(&config.cors_origins, &credential_headers)?;
    // Cancelled at the shutdown deadline: calls still running are cut off.
    let deadline = CancellationToken::new();
    let security = SecurityLayer::new(
        policy.clone(),
        security,
        config.max_response_bytes as usize,
        config.metrics.clone(),
    )
    .layer(Executor::new(handlers, config.max_response_bytes as usize));
    let drain = Arc::new(DrainSwitch::new());
    let slots = ConnectionSlots::new(slot_limits(&config));
    let shared = Arc::new(Shared {
        credential_headers,
        max_body_bytes: config.max_body_bytes as usize,
        body_timeout: config.body_timeout,
        ws: WsSettings {
            max_message_bytes: config.max_body_bytes as usize,
            max_in_flight: config.ws_max_in_flight as usize,
            ping_interval: config.ws_ping_interval,
            idle_timeout: config.ws_idle_timeout,
        },
        cpu_share: config.cpu_share.clone(),
        policy: policy.clone(),
        pipeline: Pipeline::new(security, config.max_batch_len as usize),
        docs,
        resources: config.resources.clone(),
        metrics: config.metrics.clone(),
        clients: ClientAddrs {
            trusted: config.trusted_proxies.clone(),
            header: config.forwarded_header,
        },
        slots: slots.clone(),
        ready: Ready::new(
            config.readiness.clone(),
            config.ready_timeout,
            drain.clone(),
        ),
        drain: drain.clone(),
    });
    if !config.trusted_proxies.is_empty() {
        let trusted: Vec<String> = config.trusted_proxies.entries().collect();
        tracing::info!(?trusted, header = ?config.forwarded_header, "trusted proxies");
    }
    let (stop, handle) = stop_channel();
    let tasks = TaskTracker::new();
    // Rate budgets drop the keys that have refilled, once a minute.
    let sweeper = {
        let policy = Arc::downgrade(&policy);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            every.tick().await;
            loop {
                every.tick().await;
                match policy.upgrade() {
                    Some(policy) => policy.load().sweep(),
                    None => break,
                }
            }
        })
    };
    let handle_policy = PolicyHandle::new(policy);
    let drain_switch = drain.clone();
    let settings = ConnectionSettings {
        header_timeout: config.header_timeout,
        deadline: deadline.clone(),
        cors,
        cpu_share: config.cpu_share.clone(),
    };
    let task = tokio::spawn(async move {
        loop {
            let (socket, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stop.clone().shutdown() => break,
            };
            // A trusted proxy's connections are exempt from the
            // per-address cap; its clients are counted per request.
            let trusted = shared.clients.trusts(peer);
            let admitted = if trusted {
                slots.admit_proxy()
            } else {
                slots.admit(peer.ip())
            };
            let slot = match admitted {
                Ok(slot) => slot,
                Err(why) => {
                    refuse(socket, peer, why);
                    continue;
                }
            };
            let info = Arc::new(ConnectionInfo {
                peer,
                drain: drain_switch.clone(),
                deadline: settings.deadline.clone(),
            });
            let conn = Arc::new(Connection {
                peer,
                trusted,
                info,
                _slot: slot,
                _counted: config.metrics.connection(),
                shared: shared.clone(),
                tasks: tasks.clone(),
                stop: stop.clone(),
            });
            let serving = serve_connection(socket, conn, settings.clone());
            match &settings.cpu_share {
                Some(share) => tasks.spawn(share.gate(serving)),
                None => tasks.spawn(serving),
            };
        }
        // Closed now, not when the last connection ends: new connections
        // are refused by the kernel instead of waiting in its backlog.
        drop(listener);
        tracing::info!("server stopped accepting connections");
        tasks.close();
        let grace = config.shutdown_grace;
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            let running = tasks.len();
            tracing::warn!(
                connections = running,
                "shutdown grace period over: answering the calls still running with an error"
            );
            deadline.cancel();
            if tokio::time::timeout(FLUSH_TIME, tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!("some connections did not take their last answer in time");
            }
        }
        sweeper.abort();
    });
    Ok(RunningServer {
        addr,
        handle,
        task,
        policy: handle_policy,
        drain,
        drain_delay: config.drain_delay,
    })
}

/// Time the answers to calls cut off at the shutdown deadline (and the
/// WebSocket close frames) get to be written.
const FLUSH_TIME: Duration = Duration::from_secs(1);

/// What every connection task needs besides its [`Connection`].
#[derive(Clone)]
struct ConnectionSettings {
    /// Time to a complete request head.
    header_timeout: Duration,
    /// Cancelled at the shutdown deadline.
    deadline: CancellationToken,
    /// The CORS rules, when origins are configured.
    cors: Option<cors::Cors>,
    /// The share of the cores connections give way to, if any.
    cpu_share: Option<CpuShare>,
}

/// Answers a refused connection with a one-line 503 (if the socket takes
/// it at once) and closes it.
fn refuse(socket: TcpStream, peer: SocketAddr, why: Refused) {
    tracing::debug!(%peer, ?why, "connection refused");
    tokio::spawn(async move {
        let mut socket = socket;
        let answer =
            b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let _ = tokio::time::timeout(Duration::from_millis(100), socket.write_all(answer)).await;
    });
}

/// Serves one TCP connection (HTTP/1.1, possibly upgraded to a WebSocket
/// session) until it closes or the server stops, through the CORS layer
/// when there is one.
async fn serve_connection(socket: TcpStream, conn: Arc<Connection>, settings: ConnectionSettings) {
    let _ = socket.set_nodelay(true);
    let stop = conn.stop.clone();
    let heads = Arc::new(HeadWatch::default());
    let front = {
        let (conn, heads) = (conn.clone(), heads.clone());
        move |req| {
            let (conn, answering) = (conn.clone(), heads.answering());
            async move {
                let response = gateway::handle(req, conn).await;
                drop(answering);
                Ok::<_, std::convert::Infallible>(response)
            }
        }
    };
    drop(conn);
    match settings.cors.clone() {
        None => {
            let service = hyper::service::service_fn(front);
            serve_http(socket, service, stop, settings, &heads).await;
        }
        Some(cors) => {
            // Only requests from a listed origin go through the layer.
            let with_cors = cors.layer.layer(tower::service_fn(front.clone()));
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let listed = cors.allows(req.headers());
                let (with_cors, front) = (with_cors.clone(), front.clone());
                async move {
                    if listed {
                        return tower::ServiceExt::oneshot(with_cors, req).await;
                    }
                    let mut response = front(req).await?;
                    response
                        .headers_mut()
                        .append(hyper::header::VARY, HeaderValue::from_static("origin"));
                    Ok(response)
                }
            });
            serve_http(socket, service, stop, settings, &heads).await;
        }
    }
}

/// Runs hyper's HTTP/1.1 connection with `service` until it ends, or until
/// `heads` shows no request head for `header_timeout`; on stop, lets the
/// request in flight finish (its calls are cut off at the shutdown
/// deadline, then it has [`FLUSH_TIME`] to be written).
async fn serve_http<S>(
    socket: TcpStream,
    service: S,
    stop: jsonrpsee::server::StopHandle,
    settings: ConnectionSettings,
    heads: &HeadWatch,
) where
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = jsonrpsee::server::HttpBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connection = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(socket), service)
        .with_upgrades();
    tokio::pin!(connection);
    // The deadline and the stop signal are polled only when one of them
    // fired, not on every wake of the connection (see `woken`).
    let side = woken::WhenWoken::new(async {
        tokio::select! {
            () = heads.overdue(settings.header_timeout) => Side::Overdue,
            _ = stop.shutdown() => Side::Stop,
        }
    });
    tokio::select! {
        biased;
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            return;
        }
        side = side => match side {
            Side::Overdue => {
                tracing::debug!(timeout = ?settings.header_timeout, "no request head in time: connection closed");
                return;
            }
            Side::Stop => connection.as_mut().graceful_shutdown(),
        },
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        () = settings.deadline.cancelled() => {
            if tokio::time::timeout(FLUSH_TIME, connection).await.is_err() {
                tracing::warn!("connection did not take its last answer in time");
            }
        }
    }
}

/// What ended the wait beside an HTTP connection.
enum Side {
    /// No request head in time.
    Overdue,
    /// The server stops.
    Stop,
}

/// The header deadline of one HTTP/1.1 connection: how many requests it
/// has started and how many are being answered.
///
/// hyper's own `header_read_timeout` arms (and drops) a timer for every
/// request head, which cost about 3 % of a keep-alive call's CPU. Here a
/// request costs two atomic additions, and one check every quarter of the
/// timeout looks at the counts: a connection that started no request and
/// answered none for `header_timeout` (a head never finished, or a
/// keep-alive connection left idle) is closed, at the latest a quarter of
/// the timeout later than the deadline itself.
#[derive(Debug, Default)]
struct HeadWatch {
    /// Requests whose head arrived.
    started: std::sync::atomic::AtomicU64,
    /// Requests being answered now.
    answering: std::sync::atomic::AtomicU32,
}

impl HeadWatch {
    /// Counts a request from its head to the end of its answer (the guard).
    fn answering(self: &Arc<Self>) -> Answering {
        use std::sync::atomic::Ordering::Relaxed;
        self.started.fetch_add(1, Relaxed);
        self.answering.fetch_add(1, Relaxed);
        Answering(self.clone())
    }

    /// Resolves once the connection has had no request head and no answer
    /// in progress for `timeout`.
    async fn overdue(&self, timeout: Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        let period = (timeout / 4).max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen = self.started.load(Relaxed);
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let now = ticks.tick().await;
            let started = self.started.load(Relaxed);
            if started != seen || self.answering.load(Relaxed) > 0 {
                seen = started;
                quiet_since = now;
            } else if now.duration_since(quiet_since) >= timeout {
                return;
            }
        }
    }
}

/// A request being answered ([`HeadWatch::answering`]).
struct Answering(Arc<HeadWatch>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0
            .answering
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Resolves when the process gets SIGINT (ctrl-c) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
