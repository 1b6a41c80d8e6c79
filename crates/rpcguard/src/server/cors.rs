//! CORS for browser applications on other origins
//! ([`ServerConfig::cors_origins`](super::ServerConfig::cors_origins); off
//! by default), with tower-http's [`CorsLayer`] around the HTTP front.
//!
//! Only the origins listed, exactly, get CORS headers: a preflight for
//! `POST` with `Authorization` and `Content-Type` (and the headers of the
//! server's other security schemes) is answered, and `GET`
//! (`/openrpc.json`, `/health`, `/ready`) is readable. A request with any
//! other `Origin` (or none) does not go through the layer at all: it gets
//! no `Access-Control-*` header (tower-http would answer every preflight
//! with the allowed methods and headers, whatever its origin), only
//! `Vary: Origin`, so a cache keeps the answers apart; its browser refuses
//! to hand the answer to the page, and a preflight is answered as any
//! `OPTIONS` is (405). No credentials mode: the API's credentials are
//! headers the page sets, never cookies.
//!
//! tower-http's layer fits the stack as it is: the HTTP front is a hyper
//! service, and the layer wraps it per connection only when origins are
//! configured, so a server without CORS runs exactly the code it ran
//! before.

use std::sync::Arc;
use std::time::Duration;

use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, ORIGIN};
use hyper::Method;
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::ServerError;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: Duration = Duration::from_secs(600);

/// The server's CORS rules: the listed origins and the layer that answers
/// them.
#[derive(Debug, Clone)]
pub(crate) struct Cors {
    /// tower-http's layer, for requests from a listed origin.
    pub layer: CorsLayer,
    origins: Arc<[HeaderValue]>,
}

impl Cors {
    /// The rules for `origins` (none: CORS off), allowing `POST` with
    /// `credential_headers` and `Content-Type`, and `GET`.
    pub(crate) fn new(
        origins: &[String],
        credential_headers: &[HeaderName],
    ) -> Result<Option<Cors>, ServerError> {
        if origins.is_empty() {
            return Ok(None);
        }
        let origins = origins
            .iter()
            .map(|origin| parse_origin(origin))
            .collect::<Result<Vec<_>, _>>()?;
        let mut headers = credential_headers.to_vec();
        headers.push(CONTENT_TYPE);
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.clone()))
            .allow_methods([Method::GET, Method::HEAD, Method::POST])
            .allow_headers(headers)
            .max_age(PREFLIGHT_MAX_AGE);
        Ok(Some(Cors {
            layer,
            origins: origins.into(),
        }))
    }

    /// Whether the request comes from a listed origin.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        headers
            .get(ORIGIN)
            .is_some_and(|origin| self.origins.contains(origin))
    }
}

/// An origin as browsers send it: `scheme://host[:port]`, lower case, no
/// path (a trailing `/` is dropped). `*`, `null` and anything with a path,
/// query or user info are refused.
fn parse_origin(origin: &str) -> Result<HeaderValue, ServerError> {
    let refused = || ServerError::CorsOrigin(origin.to_owned());
    let trimmed = origin.trim().trim_end_matches('/');
    let uri: hyper::Uri = trimmed.parse().map_err(|_| refused())?;
    let scheme = uri.scheme_str().ok_or_else(refused)?;
    let authority = uri.authority().ok_or_else(refused)?;
    let has_path = uri.path_and_query().is_some_and(|p| p.as_str() != "/");
    if !matches!(scheme, "http" | "https") || has_path || authority.as_str().contains('@') {
        return Err(refused());
    }
    let exact = format!("{scheme}://{authority}").to_ascii_lowercase();
    HeaderValue::from_str(&exact).map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::parse_origin;

    #[test]
    fn origins_are_exact() {
        for (given, kept) in [
            ("https://app.example.com", "https://app.example.com"),
            ("https://App.Example.com/", "https://app.example.com"),
            ("http://127.0.0.1:5173", "http://127.0.0.1:5173"),
        ] {
            assert_eq!(parse_origin(given).expect(given), kept);
        }
        for bad in [
            "*",
            "null",
            "app.example.com",
            "https://app.example.com/path",
            "https://app.example.com?q=1",
            "ftp://app.example.com",
            "https://user@app.example.com",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
    }
}
