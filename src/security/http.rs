//! The HTTP (tower) layer in front of jsonrpsee.
//!
//! It routes the few non-JSON-RPC paths (`GET /health`, 404 for unknown
//! paths) and copies what the caller presented into the request's
//! extensions as [`Credentials`]. jsonrpsee hands those extensions to every
//! call of a plain HTTP request and, for a WebSocket session, clones the
//! upgrade request's extensions into every call of the session, so this one
//! layer serves both transports.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::{Method, Request, StatusCode};
use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpResponse};
use tower::{Layer, Service};

use super::rpc::NotificationOnly;
use super::Credentials;

/// The paths that speak JSON-RPC (HTTP POST and WebSocket upgrade).
pub const RPC_PATHS: [&str; 2] = ["/", "/api/v1"];
/// The health-check path (`GET` → 200).
pub const HEALTH_PATH: &str = "/health";

/// The TCP peer of a connection, put in the request extensions by the
/// accept loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// Routes health checks and unknown paths, and attaches [`Credentials`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CredentialsLayer;

impl<S> Layer<S> for CredentialsLayer {
    type Service = CredentialsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CredentialsService { inner }
    }
}

/// The service of [`CredentialsLayer`].
#[derive(Debug, Clone)]
pub struct CredentialsService<S> {
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> Service<Request<B>> for CredentialsService<S>
where
    S: Service<Request<B>, Response = HttpResponse, Error = BoxError>,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = BoxFuture<Result<HttpResponse, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let path = req.uri().path();
        if path == HEALTH_PATH {
            let response = if req.method() == Method::GET {
                plain(StatusCode::OK, "{\"status\":\"ok\"}")
            } else {
                plain(StatusCode::METHOD_NOT_ALLOWED, "")
            };
            return Box::pin(async move { Ok(response) });
        }
        if !RPC_PATHS.contains(&path) {
            return Box::pin(async move { Ok(plain(StatusCode::NOT_FOUND, "")) });
        }
        let query_token = if jsonrpsee::server::ws::is_upgrade_request(&req) {
            req.uri()
                .query()
                .and_then(access_token_param)
                .map(str::to_owned)
        } else {
            None
        };
        let remote = req.extensions().get::<RemoteAddr>().map(|r| r.0);
        let credentials = Credentials::new(req.headers().clone(), query_token, remote);
        req.extensions_mut().insert(credentials);
        let response = self.inner.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            if response.extensions().get::<NotificationOnly>().is_some() {
                return Ok(plain(StatusCode::NO_CONTENT, ""));
            }
            // jsonrpsee answers a body that is not a JSON object or array
            // with a JSON-RPC parse error (-32700) under HTTP 400; the
            // contract sends every JSON-RPC answer with 200.
            if response.status() == StatusCode::BAD_REQUEST {
                *response.status_mut() = StatusCode::OK;
            }
            Ok(response)
        })
    }
}

/// The `access_token` parameter of a query string.
fn access_token_param(query: &str) -> Option<&str> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "access_token")
        .map(|(_, value)| value)
}

fn plain(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut response = HttpResponse::new(HttpBody::from(body));
    *response.status_mut() = status;
    if !body.is_empty() {
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::access_token_param;

    #[test]
    fn finds_access_token() {
        assert_eq!(access_token_param("a=1&access_token=xyz"), Some("xyz"));
        assert_eq!(access_token_param("access_token="), Some(""));
        assert_eq!(access_token_param("token=xyz"), None);
    }
}
