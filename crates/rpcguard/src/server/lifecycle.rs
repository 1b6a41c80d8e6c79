//! Readiness and the shutdown drain.
//!
//! `GET /health` is liveness: 200 while the process runs, draining
//! included. `GET /ready` ([`READY_PATH`]) is readiness: 200
//! `{"ready":true}` only when the application's [`ReadinessCheck`] passes
//! within [`ServerConfig::ready_timeout`](super::ServerConfig::ready_timeout)
//! and the server is not draining; otherwise 503
//! `{"ready":false,"why":[…]}`, each entry naming what is wrong
//! (`"draining"`, `"timeout"`, or what the check reported, e.g. `"store"`).
//! A check's result is reused for one second, and one check runs at a
//! time, so a flood of `/ready` costs the store at most one query a second.
//!
//! Stopping ([`RunningServer::stop`](super::RunningServer::stop)) goes:
//!
//! 1. draining: `/ready` answers 503 at once ([`Draining`] turns true,
//!    HTTP answers carry `Connection: close`), everything else is served
//!    as before, for [`ServerConfig::drain_delay`](super::ServerConfig::drain_delay),
//!    so a load balancer notices and sends new clients elsewhere;
//! 2. the listener is closed: new connections are refused by the kernel
//!    (not accepted and reset); idle keep-alive connections are closed;
//!    WebSocket sessions read no more messages;
//! 3. calls in flight, HTTP and WebSocket alike, get
//!    [`ServerConfig::shutdown_grace`](super::ServerConfig::shutdown_grace)
//!    to finish (one deadline for all). A call still running then is
//!    answered `-32603 Internal error` with `data {"reason":"shutting_down"}`
//!    and its request id (its handler is dropped); each WebSocket session
//!    closes with code 1001 (Going Away) once its answers are written.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use hyper::StatusCode;
use jsonrpsee::server::HttpResponse;
use tokio::sync::watch;

use super::reply::plain;

/// The readiness path (`GET` → 200 or 503).
pub const READY_PATH: &str = "/ready";

/// How long a readiness result is reused.
const READY_REUSE: Duration = Duration::from_secs(1);

/// Whether the server is draining (shutting down): cheap to clone, read it
/// in a handler through [`CallContext::draining`](crate::CallContext::draining)
/// or from [`RunningServer::draining`](super::RunningServer::draining).
///
/// A long-running handler (a long poll, a batch job) can end early once it
/// turns true, instead of being cut off at the shutdown deadline:
///
/// ```
/// # async fn poll(draining: rpcguard::server::Draining) {
/// tokio::select! {
///     _ = tokio::time::sleep(std::time::Duration::from_secs(30)) => {}
///     _ = draining.wait() => {} // answer now; the server is going away
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Draining(watch::Receiver<bool>);

impl Draining {
    /// A signal that never turns true (for a context outside a server).
    pub fn never() -> Self {
        Draining(watch::channel(false).1)
    }

    /// True once the server has begun to drain.
    pub fn is_draining(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the server has begun to drain (at once if it has).
    /// If the server is gone without draining, it never resolves.
    pub async fn wait(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|draining| *draining).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The sending side of [`Draining`], shared by the server's parts (every
/// call's extensions hold it, so a handler's [`Draining`] is made only
/// when it asks).
#[derive(Debug)]
pub(crate) struct DrainSwitch {
    signal: watch::Sender<bool>,
    /// The same fact, for the per-request check of the HTTP front.
    now: AtomicBool,
}

impl DrainSwitch {
    pub(crate) fn new() -> Self {
        DrainSwitch {
            signal: watch::channel(false).0,
            now: AtomicBool::new(false),
        }
    }

    /// A [`Draining`] that follows this switch.
    pub(crate) fn signal(&self) -> Draining {
        Draining(self.signal.subscribe())
    }

    /// True once draining has begun.
    pub(crate) fn is_draining(&self) -> bool {
        self.now.load(Ordering::Relaxed)
    }

    /// Begins draining (once; later calls change nothing).
    pub(crate) fn start(&self) {
        self.now.store(true, Ordering::Relaxed);
        self.signal.send_replace(true);
    }
}

/// What the application says about its readiness: `Ok(())`, or the names
/// of what is not ready (`"store"`, `"keys"`, …), which `GET /ready`
/// lists in its `why`.
pub type Readiness = Result<(), Vec<String>>;

/// The application's readiness check for `GET /ready`
/// ([`ServerConfig::readiness`](super::ServerConfig::readiness)): a cheap
/// query to its store and whatever else must be in place before it can
/// answer calls. The server bounds it with
/// [`ServerConfig::ready_timeout`](super::ServerConfig::ready_timeout).
///
/// ```
/// use rpcguard::server::ReadinessCheck;
///
/// let check = ReadinessCheck::new(|| async {
///     let store_answers = true; // e.g. `SELECT 1` within a deadline
///     if store_answers { Ok(()) } else { Err(vec!["store".to_owned()]) }
/// });
/// # let _ = check;
/// ```
#[derive(Clone)]
pub struct ReadinessCheck(Arc<dyn Fn() -> BoxFuture<'static, Readiness> + Send + Sync>);

impl ReadinessCheck {
    /// A check that runs `check` on each (uncached) `GET /ready`.
    pub fn new<F, Fut>(check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Readiness> + Send + 'static,
    {
        ReadinessCheck(Arc::new(move || Box::pin(check())))
    }

    fn run(&self) -> BoxFuture<'static, Readiness> {
        (self.0)()
    }
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadinessCheck(..)")
    }
}

/// What `GET /ready` consults.
#[derive(Debug)]
pub(crate) struct Ready {
    check: Option<ReadinessCheck>,
    timeout: Duration,
    drain: Arc<DrainSwitch>,
    last: tokio::sync::Mutex<Option<(Instant, Readiness)>>,
}

impl Ready {
    pub(crate) fn new(
        check: Option<ReadinessCheck>,
        timeout: Duration,
        drain: Arc<DrainSwitch>,
    ) -> Self {
        Ready {
            check,
            timeout,
            drain,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// Answers `GET /ready`.
    pub(crate) async fn respond(&self, method: &hyper::Method) -> HttpResponse {
        if method != hyper::Method::GET {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "");
        }
        let mut why = Vec::new();
        if self.drain.is_draining() {
            why.push("draining".to_owned());
        } else if let Err(problems) = self.check().await {
            why = problems;
        }
        let (status, body) = if why.is_empty() {
            (StatusCode::OK, serde_json::json!({ "ready": true }))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({ "ready": false, "why": why }),
            )
        };
        let mut response = HttpResponse::new(body.to_string().into());
        *response.status_mut() = status;
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        response.headers_mut().insert(
            hyper::header::CACHE_CONTROL,
            hyper::header::HeaderValue::from_static("no-store"),
        );
        response
    }

    /// The application's check, bounded by the timeout; one at a time,
    /// its result reused for [`READY_REUSE`].
    async fn check(&self) -> Readiness {
        let Some(check) = &self.check else {
            return Ok(());
        };
        let mut last = self.last.lock().await;
        if let Some((at, result)) = last.as_ref() {
            if at.elapsed() < READY_REUSE {
                return result.clone();
            }
        }
        let result = match tokio::time::timeout(self.timeout, check.run()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(problems)) if problems.is_empty() => Err(vec!["not_ready".to_owned()]),
            Ok(Err(problems)) => Err(problems),
            Err(_) => Err(vec!["timeout".to_owned()]),
        };
        if let Err(problems) = &result {
            tracing::warn!(why = ?problems, "not ready");
        }
        *last = Some((Instant::now(), result.clone()));
        result
    }
}
