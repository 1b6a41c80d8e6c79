//! The HTTP front of every request, before its calls are executed.
//!
//! - routes `GET /health` (liveness), `GET /ready` (readiness,
//!   [`super::lifecycle`]), `GET /openrpc.json` (the OpenRPC document,
//!   [`super::document`]), `GET /docs` and its files (the docs page,
//!   [`super::docs`], unless turned off), `GET /` (a redirect to `/docs`,
//!   or a JSON pointer to the API when the page is off) and refuses
//!   unknown paths with 404;
//! - takes the client's address: the TCP peer's, or, from a trusted proxy
//!   only, the one its header names ([`super::proxy`]), with a slot of that
//!   client's for as long as the request (or WebSocket session) lasts;
//! - reads a JSON-RPC request body itself, under the size limit and a
//!   deadline (`body_timeout`), so a client that announces a body and never
//!   sends it cannot hold a connection slot; a body over the limit (up to
//!   twice the limit) gets 413 after it has been drained, so the client
//!   reads the 413 instead of a reset;
//! - copies what the caller presented into the request extensions as
//!   [`Credentials`]: only the headers the security schemes name (and the
//!   WebSocket upgrade's `access_token` query parameter), never the whole
//!   header map, so a WebSocket session keeps a few hundred bytes of its
//!   upgrade rather than every header;
//! - hands WebSocket upgrades to [`super::ws`];
//! - refuses a method other than `POST` (405) and a body that is not JSON
//!   by its `Content-Type` (415), with jsonrpsee's texts;
//! - hands the body to [`super::pipeline`] ([`execute`]), after giving
//!   requests whose id jsonrpsee cannot carry an answer ([`super::ids`]);
//! - gives every JSON-RPC answer HTTP 200 (jsonrpsee's own HTTP service
//!   sends a parse error with 400) and a notification-only request 204;
//! - while the server drains, asks the client to close the connection
//!   after each answer (`Connection: close`), so keep-alive clients move to
//!   another instance before the listener closes.
//!
//! Every call of a message carries the message's extensions (the
//! credentials, the client's and the peer's address); a WebSocket session
//! puts the upgrade's into every call it makes (see [`super::ws`]), so the
//! security middleware reads one place on both transports.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, StatusCode};
use jsonrpsee::server::http::response;
use jsonrpsee::server::{HttpBody, HttpResponse};
use jsonrpsee::Extensions;

use super::connection::{Connection, Shared};
use super::docs::DocsPage;
use super::document::DOCUMENT_PATH;
use super::lifecycle::READY_PATH;
use super::pipeline::{execute, Outcome};
use super::reply::plain;
use super::ws;
use crate::security::{Credentials, RemoteAddr, RequestId};

/// The paths that speak JSON-RPC (HTTP POST and WebSocket upgrade); a
/// trailing slash is accepted too.
pub const RPC_PATHS: [&str; 2] = ["/", "/api/v1"];
/// The health-check path (`GET` → 200).
pub const HEALTH_PATH: &str = "/health";

/// Answers one HTTP request of `conn`; while the server drains, with
/// `Connection: close`.
pub(crate) async fn handle(req: Request<Incoming>, conn: Arc<Connection>) -> HttpResponse {
    let request_id = request_id(&req, conn.trusted);
    let echo = HeaderValue::from_str(request_id.as_str()).ok();
    let mut response = route(req, &conn, request_id).await;
    if let Some(echo) = echo {
        response.headers_mut().insert(X_REQUEST_ID, echo);
    }
    if conn.shared.drain.is_draining() && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// The request id header, taken from a trusted proxy and echoed on every
/// answer.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id: a trusted proxy's `X-Request-Id` when it is a sane
/// token (1 to 128 of `A-Za-z0-9-_.:/`), else a new one (a per-process
/// random prefix and a counter: unique, cheap, never secret). Each thread
/// takes the counter's values by blocks of [`ID_BLOCK`], so that the cores
/// do not all write one atomic per request.
fn request_id<B>(req: &Request<B>, trusted: bool) -> RequestId {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    thread_local! {
        /// The next value of this thread's block, and the block's end.
        static BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    if trusted {
        let given = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| {
                (1..=128).contains(&v.len())
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/".contains(&b))
            });
        if let Some(given) = given {
            return RequestId::given(given);
        }
    }
    let prefix = *PREFIX.get_or_init(rand::random::<u32>);
    let n = BLOCK.with(|block| {
        let (mut next, mut end) = block.get();
        if next == end {
            next = NEXT.fetch_add(ID_BLOCK, std::sync::atomic::Ordering::Relaxed);
            end = next + ID_BLOCK;
        }
        block.set((next + 1, end));
        next
    });
    RequestId::made(prefix, n)
}

/// Request ids a thread takes at a time.
const ID_BLOCK: u64 = 1024;

/// The answer of the path's owner.
async fn route(
    req: Request<Incoming>,
    conn: &Arc<Connection>,
    request_id: RequestId,
) -> HttpResponse {
    let path = req.uri().path();
    if path == HEALTH_PATH {
        return if req.method() == Method::GET {
            plain(StatusCode::OK, "{\"status\":\"ok\"}")
        } else {
            plain(StatusCode::METHOD_NOT_ALLOWED, "")
        };
    }
    if path == READY_PATH {
        return conn.shared.ready.respond(req.method()).await;
    }
    if path == DOCUMENT_PATH {
        return conn
            .shared
            .policy
            .load()
            .resource()
            .respond(req.method(), req.headers());
    }
    if let Some(extra) = conn.shared.resources.iter().find(|r| r.path() == path) {
        return extra.respond(req.method(), req.headers());
    }
    if let Some(docs) = conn.shared.docs.as_ref().filter(|_| DocsPage::owns(path)) {
        return docs.respond(path, req.method(), req.headers());
    }
    if !is_rpc_path(path) {
        return plain(StatusCode::NOT_FOUND, "");
    }
    let is_upgrade = jsonrpsee::server::ws::is_upgrade_request(&req);
    if path == "/" && !is_upgrade && req.method() == Method::GET {
        return root(conn.shared.docs.is_some());
    }
    // The client: the peer, or the one a trusted proxy names, who then
    // holds a slot of its own while this request (or session) lasts.
    let (client, client_slot) = if conn.trusted {
        let client = conn.shared.clients.resolve(conn.peer, req.headers());
        match conn.shared.slots.admit_client(client.ip()) {
            Ok(slot) => (client, Some(slot)),
            Err(why) => {
                tracing::debug!(%client, proxy = %conn.peer, ?why, "request refused");
                return plain(StatusCode::SERVICE_UNAVAILABLE, "");
            }
        }
    } else {
        (conn.peer, None)
    };
    let query_token = if is_upgrade {
        req.uri()
            .query()
            .and_then(access_token_param)
            .map(str::to_owned)
    } else {
        None
    };
    let credentials = Credentials::from_headers(
        req.headers(),
        &conn.shared.credential_headers,
        query_token,
        Some(client),
    );
    let mut extensions = Extensions::new();
    extensions.insert(credentials);
    extensions.insert(RemoteAddr {
        client,
        conn: conn.info.clone(),
        request_id,
    });
    if is_upgrade {
        return ws::upgrade(req, extensions, conn.clone(), client_slot);
    }
    if req.method() != Method::POST {
        return response::method_not_allowed();
    }
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts.headers, body, &conn.shared).await {
        Ok(body) => body,
        Err(refusal) => return refusal.response(conn.shared.max_body_bytes),
    };
    if !jsonrpsee::server::http::is_json(parts.headers.get(CONTENT_TYPE)) {
        return response::unsupported_content_type();
    }
    let response = match execute(&conn.shared.pipeline, body, extensions).await {
        Outcome::Answer(answer) => json(answer),
        Outcome::Document(answer) => json_pieces(answer.into_pieces()),
        Outcome::Refused(answer) => plain(StatusCode::OK, answer),
        Outcome::Nothing => plain(StatusCode::NO_CONTENT, ""),
    };
    drop(client_slot);
    response
}

/// `GET /`: to the docs page when it is on, else where the API is.
fn root(docs_on: bool) -> HttpResponse {
    if docs_on {
        let mut response = plain(StatusCode::TEMPORARY_REDIRECT, "");
        response.headers_mut().insert(
            hyper::header::LOCATION,
            HeaderValue::from_static(super::DOCS_PATH),
        );
        return response;
    }
    plain(
        StatusCode::OK,
        "{\"docs\":null,\"openrpc\":\"/openrpc.json\",\"rpc\":\"POST /\"}",
    )
}

fn is_rpc_path(path: &str) -> bool {
    let trimmed = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty() && !p.ends_with('/'));
    RPC_PATHS.contains(&trimmed.unwrap_or(path))
}

/// Why a request body was not read.
#[derive(Debug)]
enum BodyRefusal {
    /// Over the limit (announced, or found while reading).
    TooLarge,
    /// Not complete within the body timeout.
    TimedOut,
    /// The client went away or sent a malformed body.
    Aborted,
}

impl BodyRefusal {
    fn response(self, limit: usize) -> HttpResponse {
        let mut response = match self {
            BodyRefusal::TooLarge => {
                let limit = u32::try_from(limit).unwrap_or(u32::MAX);
                jsonrpsee::server::http::response::too_large(limit)
            }
            BodyRefusal::TimedOut => plain(StatusCode::REQUEST_TIMEOUT, ""),
            BodyRefusal::Aborted => plain(StatusCode::BAD_REQUEST, ""),
        };
        // The rest of the body is not read: the connection cannot be reused.
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
        response
    }
}

/// Reads a request body of at most `max_body_bytes` within `body_timeout`.
///
/// A body over the limit gets 413. If it is at most twice the limit it is
/// drained first (never past the deadline), so that a client that is still
/// sending reads the 413 rather than a connection reset; a body announced
/// larger than that is refused before it is read.
async fn read_body(
    headers: &hyper::HeaderMap,
    mut body: Incoming,
    shared: &Shared,
) -> Result<Bytes, BodyRefusal> {
    let limit = shared.max_body_bytes;
    let drain_limit = limit.saturating_mul(2);
    let announced = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > drain_limit as u64) {
        return Err(BodyRefusal::TooLarge);
    }
    // The clock is read (and a timer armed) only when a frame is not
    // there yet; a body that came with its head costs neither.
    let mut deadline = None;
    let capacity = announced.map_or(0, |n| (n as usize).min(limit));
    // The common body is one frame: kept as it is, copied only when a
    // second frame comes.
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let mut seen: usize = 0;
    loop {
        let next = match body.frame().now_or_never() {
            Some(next) => Ok(next),
            None => {
                let deadline = *deadline
                    .get_or_insert_with(|| tokio::time::Instant::now() + shared.body_timeout);
                tokio::time::timeout_at(deadline, body.frame()).await
            }
        };
        let frame = match next {
            Err(_) if seen > limit => return Err(BodyRefusal::TooLarge),
            Err(_) => return Err(BodyRefusal::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                tracing::debug!(error = %err, "request body aborted");
                return Err(if seen > limit {
                    BodyRefusal::TooLarge
                } else {
                    BodyRefusal::Aborted
                });
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen > drain_limit {
            return Err(BodyRefusal::TooLarge);
        }
        if seen > limit {
            // Draining: keep nothing.
            first = None;
            buf = BytesMut::new();
        } else if first.is_none() && buf.is_empty() {
            first = Some(data);
        } else {
            if let Some(head) = first.take() {
                buf.reserve(capacity.max(head.len() + data.len()));
                buf.extend_from_slice(&head);
            }
            buf.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(BodyRefusal::TooLarge);
    }
    Ok(first.unwrap_or_else(|| buf.freeze()))
}

/// The `access_token` parameter of a query string.
fn access_token_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "access_token")
        .map(|(_, value)| value)
}

/// A JSON-RPC answer: HTTP 200 with jsonrpsee's content type.
fn json(answer: String) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(answer));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// A JSON-RPC answer made of `pieces`, sent as they are: hyper queues
/// each one and writes them together (`writev`), so a shared piece (the
/// OpenRPC document) is never copied into a new buffer.
fn json_pieces(pieces: [Bytes; 3]) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::new(Pieces(pieces.into_iter().collect())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

/// A body sent frame by frame, its length known (`Content-Length`).
struct Pieces(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|piece| Ok(hyper::body::Frame::data(piece))),
        )
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.iter().map(|piece| piece.len() as u64).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::{access_token_param, is_rpc_path};

    #[test]
    fn finds_access_token() {
        assert_eq!(access_token_param("a=1&access_token=xyz"), Some("xyz"));
        assert_eq!(access_token_param("access_token="), Some(""));
        assert_eq!(access_token_param("token=xyz"), None);
    }

    #[test]
    fn rpc_paths_with_and_without_trailing_slash() {
        for path in ["/", "/api/v1", "/api/v1/"] {
            assert!(is_rpc_path(path), "{path}");
        }
        for path in ["/api", "/api/v1//", "/x", "//"] {
            assert!(!is_rpc_path(path), "{path}");
        }
    }
}
