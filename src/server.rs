//! The server: one port for JSON-RPC over HTTP POST and over WebSocket,
//! plus `GET /health`.
//!
//! The caller binds the listener (tests bind `127.0.0.1:0`) and the server
//! runs its own accept loop, so that it knows each peer's address (for the
//! sign-in throttle), bounds connections with a semaphore (back-pressure on
//! `accept`, as in mini-redis), times out slow request headers (slow-loris),
//! and shuts down gracefully: on stop it accepts nothing new, lets requests
//! in flight finish, and gives up on stragglers after a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::AUTHORIZATION;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jsonrpsee::core::middleware::RpcServiceBuilder;
use jsonrpsee::server::{
    stop_channel, BatchRequestConfig, HttpBody, ServerConfig as RpcConfig, ServerHandle, StopHandle,
};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tower::Service;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;

use crate::api::{Api, ApiError, DISCOVER};
use crate::error::RpcError;
use crate::openrpc::{self, DocInfo, OpenRpcDocument};
use crate::security::http::{CredentialsLayer, RemoteAddr};
use crate::security::rpc::SecurityLayer;
use crate::security::SharedSecurity;

/// Limits and identity of a server. `Default` gives the documented defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body accepted, bytes (default 1 MiB).
    pub max_body_bytes: u32,
    /// Largest response, bytes (default 10 MiB).
    pub max_response_bytes: u32,
    /// Most calls in one batch (default 100).
    pub max_batch_len: u32,
    /// Most open connections, HTTP and WebSocket together (default 20,000).
    pub max_connections: u32,
    /// Time allowed to send a request's headers (default 10 s).
    pub header_timeout: Duration,
    /// Time in-flight requests get to finish on shutdown (default 10 s).
    pub shutdown_grace: Duration,
    /// What the OpenRPC document says about this server.
    pub doc: DocInfo,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body_bytes: 1024 * 1024,
            max_response_bytes: 10 * 1024 * 1024,
            max_batch_len: 100,
            max_connections: 20_000,
            header_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            doc: DocInfo {
                title: "rpcguard".to_owned(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                description: env!("CARGO_PKG_DESCRIPTION").to_owned(),
                server_url: "http://127.0.0.1:8080/".to_owned(),
            },
        }
    }
}

/// Errors of building a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A method could not be registered.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The OpenRPC document could not be serialized.
    #[error("building the OpenRPC document failed: {0}")]
    Document(#[from] serde_json::Error),
    /// The listener failed.
    #[error("listener error: {0}")]
    Io(#[from] std::io::Error),
}

/// A server running in the background.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    handle: ServerHandle,
    task: JoinHandle<()>,
}

impl RunningServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace
    /// period) and waits until they are answered.
    pub async fn stop(self) {
        let _ = self.handle.stop();
        let _ = self.task.await;
    }
}

/// The OpenRPC document the server built from `api`, `security` and `doc`.
pub fn document<S: Send + Sync + 'static>(
    api: &Api<S>,
    security: &SharedSecurity,
    doc: &DocInfo,
) -> serde_json::Value {
    openrpc::document(api.declarations(), &security.schemes(), doc)
}

/// Starts serving `api` on `listener` in the background.
///
/// The OpenRPC document is built here, once, and `rpc.discover` serves it
/// from memory.
pub fn spawn<S: Send + Sync + 'static>(
    listener: TcpListener,
    api: Api<S>,
    state: Arc<S>,
    security: SharedSecurity,
    config: ServerConfig,
) -> Result<RunningServer, ServerError> {
    let addr = listener.local_addr()?;
    let doc = OpenRpcDocument::new(&document(&api, &security, &config.doc))?;
    let (mut module, registry) = api.into_parts(state)?;
    module
        .register_method(DISCOVER, move |_, _, _| Ok::<_, RpcError>(doc.clone()))
        .map_err(ApiError::from)?;

    let rpc_middleware = RpcServiceBuilder::new().layer(SecurityLayer::new(
        Arc::new(registry),
        security,
        config.max_response_bytes as usize,
    ));
    let http_middleware = tower::ServiceBuilder::new()
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
        .layer(CredentialsLayer);
    let rpc_config = RpcConfig::builder()
        .max_request_body_size(config.max_body_bytes)
        .max_response_body_size(config.max_response_bytes)
        .max_connections(config.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(config.max_batch_len))
        .build();
    let builder = jsonrpsee::server::Server::builder()
        .set_config(rpc_config)
        .set_rpc_middleware(rpc_middleware)
        .set_http_middleware(http_middleware)
        .to_service_builder();

    let (stop, handle) = stop_channel();
    let methods: jsonrpsee::Methods = module.into();
    let connections = Arc::new(Semaphore::new(config.max_connections as usize));
    let task = tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                permit = connections.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
                _ = stop.clone().shutdown() => break,
            };
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
            let service = builder.clone().build(methods.clone(), stop.clone());
            let stop = stop.clone();
            let header_timeout = config.header_timeout;
            let grace = config.shutdown_grace;
            tokio::spawn(async move {
                serve_connection(socket, peer, service, stop, header_timeout, grace).await;
                drop(permit);
            });
        }
        tracing::info!("server stopped accepting connections");
        // Every connection task holds a permit: having them all back means
        // the calls in flight have been answered (or the grace period ran out).
        let all = config.max_connections;
        let drained = tokio::time::timeout(
            config.shutdown_grace + Duration::from_secs(1),
            connections.acquire_many(all),
        );
        if drained.await.is_err() {
            tracing::warn!("some connections were still open at the end of the grace period");
        }
    });
    Ok(RunningServer { addr, handle, task })
}

/// Serves one TCP connection until it closes or the server stops.
async fn serve_connection<T>(
    socket: tokio::net::TcpStream,
    peer: SocketAddr,
    service: T,
    stop: StopHandle,
    header_timeout: Duration,
    grace: Duration,
) where
    T: Service<
            hyper::Request<HttpBody>,
            Response = jsonrpsee::server::HttpResponse,
            Error = jsonrpsee::core::BoxError,
        > + Clone
        + Send
        + 'static,
    T::Future: Send + 'static,
{
    let _ = socket.set_nodelay(true);
    let hyper_service =
        hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let mut req = req.map(HttpBody::new);
            req.extensions_mut().insert(RemoteAddr(peer));
            let mut service = service.clone();
            async move { service.call(req).await.map_err(std::io::Error::other) }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(socket), hyper_service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        }
        _ = stop.shutdown() => {
            connection.as_mut().graceful_shutdown();
            if tokio::time::timeout(grace, connection).await.is_err() {
                tracing::warn!("connection did not finish within the shutdown grace period");
            }
        }
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

/// Runs until `shutdown` resolves, then stops gracefully.
pub async fn run_until(server: RunningServer, shutdown: impl Future<Output = ()>) {
    shutdown.await;
    tracing::info!("shutting down");
    server.stop().await;
}
