//! The JSON-RPC middleware that enforces each method's declared security.
//!
//! For every call — alone, inside a batch, or as a notification — it looks
//! up the method's declaration, runs the security function only when the
//! method is secured (or asks for an optional caller), picks the one
//! identity that meets the declared requirement
//! ([`MethodSecurity::check`](crate::MethodSecurity::check)), and answers
//! `-32001`/`-32099` with the request's `id` before the handler runs. That
//! [`Caller`] goes into the call's extensions, where the handler finds it.
//!
//! The credentials are the request's, except on a WebSocket session that
//! bound credentials of its own after the upgrade
//! ([`SessionCredentials`](crate::security::SessionCredentials)): those
//! replace the upgrade's.
//!
//! jsonrpsee's own `batch` calls the inner service directly, bypassing any
//! `call` logic above it, so this layer implements `batch` itself by running
//! each entry through its own `call`.
//!
//! It also writes the one log line per call (target `rpcguard::call`:
//! method, caller, outcome code, latency, client address; never params,
//! never headers) and records the call in the server's [`Metrics`]
//! (calls by method and outcome, latency, refused credentials by reason,
//! calls refused by a policy budget).

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use jsonrpsee::core::middleware::{Batch, Notification, RpcServiceT};
use jsonrpsee::server::MethodResponse;
use jsonrpsee::types::{ErrorCode, ErrorObjectOwned, Request};
use jsonrpsee::Extensions;
use tower::Layer;

use super::dispatch::{each_entry, Answer};
use super::enforce::{Enforced, Enforcement, PolicyCell};
use crate::api::DISCOVER;
use crate::audit::{Audit, Event};
use crate::error::{AuthFailure, RpcError};
use crate::metrics::{MethodMetrics, Metrics};
use crate::security::{self, Caller, RemoteAddr, RequestId, SharedSecurity};

/// Layer that adds [`SecurityService`] to the RPC middleware stack.
#[derive(Clone)]
pub(crate) struct SecurityLayer {
    shared: Arc<Shared>,
}

struct Shared {
    policy: Arc<PolicyCell>,
    security: SharedSecurity,
    max_response_bytes: usize,
    metrics: Metrics,
    /// Where calls to undeclared (or disabled) methods are recorded.
    unknown: Option<Arc<MethodMetrics>>,
    /// The names of the schemes the security function serves.
    served: Vec<String>,
    /// Set once a caller of a scheme not served has been warned about.
    warned_foreign: std::sync::atomic::AtomicBool,
}

impl SecurityLayer {
    /// Enforces the declarations under the policy in force in `policy` with
    /// `security`; batch answers are capped at `max_response_bytes`.
    /// Calls are recorded in `metrics`.
    pub(crate) fn new(
        policy: Arc<PolicyCell>,
        security: SharedSecurity,
        max_response_bytes: usize,
        metrics: Metrics,
    ) -> Self {
        let unknown = policy.recorders().shared(crate::metrics::UNKNOWN_METHOD);
        let served = security
            .schemes()
            .iter()
            .map(|s| s.name().to_owned())
            .collect();
        SecurityLayer {
            shared: Arc::new(Shared {
                policy,
                security,
                max_response_bytes,
                metrics,
                unknown,
                served,
                warned_foreign: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }
}

impl<S> Layer<S> for SecurityLayer {
    type Service = SecurityService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SecurityService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The RPC service of [`SecurityLayer`].
#[derive(Clone)]
pub(crate) struct SecurityService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SecurityService<S> {
    /// Resolves and checks the caller of a declared method, and draws the
    /// call from its rate budget: `Ok(Some(caller))` for a secured method
    /// that may run (or a public one that wants its caller and got one),
    /// `Ok(None)` for a public call.
    async fn admit(
        &self,
        enforced: &Enforced,
        extensions: &Extensions,
    ) -> Result<Option<Arc<Caller>>, Denied> {
        let admitted = self.authorize(enforced, extensions).await;
        // Which budget the call draws from (see `crate::policy`): the
        // caller's when it is authenticated in a secured method, else the
        // client address's.
        let drawn = match &admitted {
            Ok(Some(caller)) if !enforced.decl.security.is_public() => enforced.draw_caller(caller),
            Err(Denied {
                caller: Some(caller),
                ..
            }) => enforced.draw_caller(caller),
            _ => enforced.draw_ip(extensions.get::<RemoteAddr>().map(|a| a.client.ip())),
        };
        match drawn {
            Ok(()) => admitted,
            Err(error) => {
                self.shared.metrics.throttled("policy");
                Err(Denied {
                    error,
                    caller: admitted.unwrap_or_else(|denied| denied.caller),
                })
            }
        }
    }

    async fn authorize(
        &self,
        enforced: &Enforced,
        extensions: &Extensions,
    ) -> Result<Option<Arc<Caller>>, Denied> {
        let decl = &enforced.decl;
        // A WebSocket session's bound credentials replace its upgrade's.
        let presented = security::presented(extensions);
        let credentials = presented.as_deref();
        if decl.security.is_public() {
            if !decl.optional_caller {
                return Ok(None);
            }
            let Some(credentials) = credentials else {
                return Ok(None);
            };
            // A bad credential on a public method is the same as none.
            let found = match self.shared.security.identities(credentials).await {
                Ok(found) => found,
                Err(_) => return Ok(None),
            };
            return Ok(decl
                .security
                .check(&found)
                .ok()
                .flatten()
                .and_then(|caller| found.shared(&caller.scheme).cloned()));
        }
        let credentials =
            credentials.ok_or(RpcError::Unauthenticated(AuthFailure::MissingToken))?;
        let request_id = || {
            extensions
                .get::<RemoteAddr>()
                .map(|r| r.request_id.as_str())
        };
        let found = self
            .shared
            .security
            .identities(credentials)
            .await
            .inspect_err(|err| crate::error::log_internal(err, &decl.name, request_id()))?;
        match decl.security.check(&found) {
            Ok(Some(caller)) => Ok(found.shared(&caller.scheme).cloned()),
            Ok(None) => {
                let err = RpcError::internal("a secured method let in no caller");
                crate::error::log_internal(&err, &decl.name, request_id());
                Err(err.into())
            }
            Err(error) => Err(Denied {
                caller: match &error {
                    // Authenticated, lacking scopes: the caller's budget.
                    RpcError::PermissionDenied(_) => found
                        .callers()
                        .next()
                        .and_then(|c| found.shared(&c.scheme).cloned()),
                    RpcError::Unauthenticated(AuthFailure::WrongScheme) => {
                        self.warn_foreign(&found);
                        None
                    }
                    _ => None,
                },
                error,
            }),
        }
    }

    /// Warns, once per server, about a caller in a scheme the security
    /// function does not serve (built with a misspelt name): no method can
    /// ever accept it.
    fn warn_foreign(&self, found: &crate::security::Identities) {
        use std::sync::atomic::Ordering;
        let Some(foreign) = found
            .callers()
            .find(|c| !self.shared.served.contains(&c.scheme))
        else {
            return;
        };
        if !self.shared.warned_foreign.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                scheme = %foreign.scheme,
                served = ?self.shared.served,
                "the security function returned a caller of a scheme it does not serve: no method accepts it (build callers with `Scheme::caller`)"
            );
        }
    }
}

impl<S> SecurityService<S>
where
    S: RpcServiceT<MethodResponse = Answer, NotificationResponse = MethodResponse> + Send + Sync,
{
    /// The answer to one call, the service borrowed for as long as the
    /// call runs: the pipeline's own calls clone nothing (the trait's
    /// `call` must clone the service, whose `Arc`s every core shares).
    pub(crate) async fn answer(&self, mut req: Request<'_>) -> Answer {
        let started = Instant::now();
        let logging = tracing::enabled!(target: "rpcguard::call", tracing::Level::INFO);
        let remote = req.extensions().get::<RemoteAddr>();
        let client = remote.map(|a| a.client.ip());
        let request_id = remote.filter(|_| logging).map(|a| a.request_id.clone());
        // One snapshot of the policy for the whole call, held without
        // touching its count (which every core would write): arc-swap's
        // guard borrows one of the thread's debt slots, and falls back to
        // a counted copy when they are all taken.
        let policy = self.shared.policy.load();
        let enforced = policy.get(&req.method).filter(|e| e.enabled);
        let (response, subject) = match enforced {
            // Unknown (or disabled): jsonrpsee's own -32601.
            None => (
                MethodResponse::error(
                    req.id.clone(),
                    ErrorObjectOwned::from(ErrorCode::MethodNotFound),
                )
                .into(),
                None,
            ),
            Some(enforced) => match self.admit(enforced, req.extensions()).await {
                Ok(caller) => {
                    // Kept for the log line only.
                    let subject = caller
                        .as_ref()
                        .filter(|_| logging)
                        .map(|c| c.subject.clone());
                    let answer = if enforced.decl.name.as_ref() == DISCOVER {
                        discover(
                            &policy,
                            req.id.clone(),
                            caller.as_deref(),
                            self.shared.max_response_bytes,
                        )
                    } else {
                        if let Some(caller) = caller {
                            req.extensions_mut().insert(caller);
                        }
                        self.inner.call(req).await
                    };
                    (answer, subject)
                }
                Err(denied) => {
                    if let RpcError::Unauthenticated(reason) = &denied.error {
                        self.shared.metrics.auth_failure(*reason);
                        Audit::new(Event::TokenRefused)
                            .client(client)
                            .request_id(
                                req.extensions()
                                    .get::<RemoteAddr>()
                                    .map(|a| a.request_id.as_str()),
                            )
                            .reason(reason.as_str())
                            .emit();
                    }
                    let subject = denied
                        .caller
                        .as_ref()
                        .filter(|_| logging)
                        .map(|c| c.subject.clone());
                    let error = ErrorObjectOwned::from(denied.error);
                    (MethodResponse::error(req.id.clone(), error).into(), subject)
                }
            },
        };
        // Only declared names: a caller's made-up name is not logged
        // nor counted under its own label.
        let method = match enforced {
            Some(e) => e.decl.name.as_ref(),
            None => crate::metrics::UNKNOWN_METHOD,
        };
        let elapsed = started.elapsed();
        let outcome = response.as_error_code();
        let recorder = match enforced {
            Some(e) => e.recorder.as_ref(),
            None => self.shared.unknown.as_ref(),
        };
        if let Some(recorder) = recorder {
            recorder.record(outcome, elapsed);
        }
        if logging {
            log_call(CallLine {
                method,
                caller: subject.as_deref(),
                outcome: outcome.unwrap_or(0),
                elapsed,
                client,
                request_id: request_id.as_ref().map(RequestId::as_str),
            });
        }
        response
    }
}

impl<S> RpcServiceT for SecurityService<S>
where
    S: RpcServiceT<MethodResponse = Answer, NotificationResponse = MethodResponse>
        + Clone
        + Send
        + Sync
        + 'static,
{
    type MethodResponse = Answer;
    type BatchResponse = Answer;
    type NotificationResponse = MethodResponse;

    fn call<'a>(&self, req: Request<'a>) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let this = self.clone();
        async move { this.answer(req).await }
    }

    fn batch<'a>(&self, batch: Batch<'a>) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let this = self.clone();
        async move { each_entry(&this, batch, this.shared.max_response_bytes).await }
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        let this = self.clone();
        async move {
            let policy = this.shared.policy.load_full();
            let Some(enforced) = policy.get(n.method_name()).filter(|e| e.enabled) else {
                return MethodResponse::notification();
            };
            match this.admit(enforced, n.extensions()).await {
                Ok(_) => this.inner.notification(n).await,
                Err(_) => MethodResponse::notification(),
            }
        }
    }
}

/// The answer of `rpc.discover` for `caller` under `policy`: the document
/// (or the caller's view of it) as prepared text, not re-parsed by
/// jsonrpsee (see [`Answer`]).
fn discover(
    policy: &Enforcement,
    id: jsonrpsee::types::Id<'_>,
    caller: Option<&Caller>,
    max_response_bytes: usize,
) -> Answer {
    match policy.document_for(caller) {
        Ok(document) => Answer::prepared(id, &document, max_response_bytes),
        Err(error) => MethodResponse::error(id, ErrorObjectOwned::from(error)).into(),
    }
}

/// A refused call: the error, and who was refused when that is known.
struct Denied {
    error: RpcError,
    caller: Option<Arc<Caller>>,
}

impl From<RpcError> for Denied {
    fn from(error: RpcError) -> Self {
        Denied {
            error,
            caller: None,
        }
    }
}

/// What the per-call log line says.
struct CallLine<'a> {
    method: &'a str,
    caller: Option<&'a str>,
    outcome: i32,
    elapsed: std::time::Duration,
    client: Option<std::net::IpAddr>,
    request_id: Option<&'a str>,
}

fn log_call(line: CallLine<'_>) {
    let latency_us = u64::try_from(line.elapsed.as_micros()).unwrap_or(u64::MAX);
    // The message as a plain string field (first, where the macro puts a
    // message): written as `"call"` would be, without formatting machinery.
    tracing::info!(
        target: "rpcguard::call",
        message = "call",
        method = line.method,
        caller = line.caller.unwrap_or("-"),
        outcome = line.outcome,
        latency_us,
        client_addr = %Addr(line.client),
        request_id = line.request_id.unwrap_or("-"),
    );
}

/// An address written without an allocation (`-` when unknown).
struct Addr(Option<std::net::IpAddr>);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            // The common address, written as one string (std's own goes
            // through the formatting machinery octet by octet).
            Some(std::net::IpAddr::V4(ip)) => {
                let mut text = [0u8; 15];
                let mut len = 0;
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        text[len] = b'.';
                        len += 1;
                    }
                    let digits = [octet / 100, octet / 10 % 10, octet % 10];
                    let skip = if octet >= 100 {
                        0
                    } else if octet >= 10 {
                        1
                    } else {
                        2
                    };
                    for digit in &digits[skip..] {
                        text[len] = b'0' + digit;
                        len += 1;
                    }
                }
                f.write_str(std::str::from_utf8(&text[..len]).unwrap_or("-"))
            }
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Addr;

    #[test]
    fn addresses_are_written_as_std_writes_them() {
        for text in [
            "127.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "10.20.100.9",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = text.parse().expect("address");
            assert_eq!(Addr(Some(ip)).to_string(), ip.to_string());
        }
        assert_eq!(Addr(None).to_string(), "-");
    }
}
