//! What the caller presented ([`Credentials`]): the headers its schemes
//! read, a WebSocket upgrade's `access_token`, and the client's address.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{HeaderMap, HeaderName, AUTHORIZATION};

use super::{Scheme, SchemeKind};
use crate::error::AuthFailure;

/// What the caller presented: the request headers its security schemes
/// read (for WebSocket, those of the upgrade request) and, on a WebSocket
/// upgrade only, the `access_token` query parameter (RFC 6750 §2.3; never
/// logged).
///
/// Only the headers that some scheme names in its [`Scheme::header`]
/// (and `Authorization`) are kept, so that a WebSocket session holds a few
/// hundred bytes of its upgrade, not every header it came with. Its `Debug`
/// output never shows a value.
///
/// Cheap to clone (shared): jsonrpsee clones a call's extensions for its
/// handler.
#[derive(Clone, Default)]
pub struct Credentials(Arc<Presented>);

#[derive(Default)]
struct Presented {
    headers: HeaderMap,
    query_token: Option<String>,
    remote_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("headers", &self.0.headers.keys().collect::<Vec<_>>())
            .field(
                "query_token",
                &self.0.query_token.as_ref().map(|_| "<redacted>"),
            )
            .field("remote_addr", &self.0.remote_addr)
            .finish()
    }
}

impl Credentials {
    /// Credentials from headers, an optional query token and the peer address.
    pub fn new(
        headers: HeaderMap,
        query_token: Option<String>,
        remote_addr: Option<SocketAddr>,
    ) -> Self {
        Credentials(Arc::new(Presented {
            headers,
            query_token,
            remote_addr,
        }))
    }

    /// Credentials keeping only the headers named in `keep` (every value of
    /// each, so that a repeated header is still seen as repeated).
    pub(crate) fn from_headers(
        headers: &HeaderMap,
        keep: &[HeaderName],
        query_token: Option<String>,
        remote_addr: Option<SocketAddr>,
    ) -> Self {
        let mut kept = HeaderMap::new();
        for name in keep {
            for value in headers.get_all(name) {
                let mut value = value.clone();
                value.set_sensitive(true);
                kept.append(name.clone(), value);
            }
        }
        Self::new(kept, query_token, remote_addr)
    }

    /// The request headers the security schemes read: only those some
    /// served scheme names ([`Scheme::header`]) and `Authorization` are
    /// kept, so a header no scheme declares is never here. Prefer
    /// [`Credentials::get`], which reads the scheme's own.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// The `access_token` query parameter of a WebSocket upgrade, if any.
    pub fn query_token(&self) -> Option<&str> {
        self.0.query_token.as_deref()
    }

    /// The client's address, when known: the TCP peer's, or behind a
    /// trusted proxy the address it forwarded for
    /// ([`crate::server::TrustedProxies`]).
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.0.remote_addr
    }

    /// The credential presented for `scheme`, if any: for a bearer scheme
    /// the token ([`Credentials::bearer_token`]), for an API-key scheme
    /// the value of its header. `Ok(None)` when nothing was presented;
    /// `Err(invalid_token)` for a header sent twice or a value that is not
    /// visible ASCII.
    ///
    /// ```
    /// use rpcguard::{Credentials, Scheme};
    /// const KEY: Scheme = Scheme::api_key("ApiKey", "X-Api-Key");
    /// let mut headers = http::HeaderMap::new();
    /// headers.insert("x-api-key", http::HeaderValue::from_static("k-1"));
    /// let presented = Credentials::new(headers, None, None);
    /// assert_eq!(presented.get(&KEY), Ok(Some("k-1")));
    /// assert_eq!(Credentials::default().get(&KEY), Ok(None));
    /// ```
    pub fn get(&self, scheme: &Scheme) -> Result<Option<&str>, AuthFailure> {
        if scheme.kind() == SchemeKind::Bearer {
            return self.bearer_token();
        }
        let mut values = self.0.headers.get_all(scheme.header()).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(AuthFailure::InvalidToken);
        }
        value
            .to_str()
            .map(Some)
            .map_err(|_| AuthFailure::InvalidToken)
    }

    /// The bearer token presented, if any, per RFC 6750: `Authorization:
    /// Bearer <token>` (scheme word case-insensitive, exactly one space) or
    /// the upgrade's `access_token`. `Ok(None)` when nothing was presented;
    /// `Err(invalid_token)` for two `Authorization` headers, another scheme
    /// (`Basic …`), a token without the `Bearer ` prefix, an empty token, or
    /// a token sent both ways at once.
    pub fn bearer_token(&self) -> Result<Option<&str>, AuthFailure> {
        let mut values = self.0.headers.get_all(AUTHORIZATION).iter();
        let header = values.next();
        if values.next().is_some() {
            return Err(AuthFailure::InvalidToken);
        }
        let from_header = match header {
            None => None,
            Some(value) => Some(parse_bearer(value.as_bytes())?),
        };
        match (from_header, self.query_token()) {
            (Some(_), Some(_)) => Err(AuthFailure::InvalidToken),
            (Some(token), None) => Ok(Some(token)),
            (None, Some("")) => Err(AuthFailure::MissingToken),
            (None, Some(token)) => Ok(Some(token)),
            (None, None) => Ok(None),
        }
    }
}

/// True when `token` is RFC 6750's `b64token`: letters, digits,
/// `-._~+/=`, at least one. Every byte is looked at (no early exit), which
/// lets the compiler check many at once: this runs on every secured call.
fn is_b64token(token: &[u8]) -> bool {
    !token.is_empty()
        && token.iter().fold(true, |ok, &b| {
            ok & (b.is_ascii_alphanumeric()
                | (b == b'-')
                | (b == b'.')
                | (b == b'_')
                | (b == b'~')
                | (b == b'+')
                | (b == b'/')
                | (b == b'='))
        })
}

/// Parses `Bearer <token>` (the scheme word in any case, one space); the
/// token is RFC 6750's `b64token`.
pub(crate) fn parse_bearer(value: &[u8]) -> Result<&str, AuthFailure> {
    const SCHEME: &[u8] = b"bearer ";
    let (scheme, token) = value
        .split_at_checked(SCHEME.len())
        .ok_or(AuthFailure::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case(SCHEME) || !is_b64token(token) {
        return Err(AuthFailure::InvalidToken);
    }
    // All ASCII, so this cannot fail.
    std::str::from_utf8(token).map_err(|_| AuthFailure::InvalidToken)
}
