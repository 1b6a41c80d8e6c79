//! Who may call what.
//!
//! - [`MethodSecurity`]: what a method declares, `{scheme: [scopes]}`. No
//!   requirement means public; several schemes mean any one suffices (OR);
//!   the scopes inside a scheme are all needed (AND).
//! - [`Credentials`]: what the caller presented (the request headers its
//!   schemes read, or those of the WebSocket upgrade and its `access_token`
//!   query parameter), put in the request extensions by the server's HTTP
//!   front.
//! - [`SecurityFunction`]: the pluggable function that turns credentials
//!   into a [`Caller`] and the scopes it holds per scheme. The default is
//!   `BearerSecurity` of `rpcguard-accounts` (JWT + user store).
//! - the RPC layer ([`rpc`]) runs the security function for secured methods
//!   only, checks the declared scopes, and hands the caller to the handler.

mod api_key;
pub mod rpc;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use hyper::header::{HeaderMap, HeaderName, AUTHORIZATION};

use crate::error::{AuthFailure, MissingScopes, RpcError};

pub use api_key::{AnySecurity, ApiKeySecurity};

/// The name of the bearer-token scheme (`Authorization: Bearer <token>`),
/// as methods declare it and the document's `x-securitySchemes` lists it.
pub const BEARER: &str = "Bearer";

/// The security requirement a method declares.
///
/// ```
/// use rpcguard::MethodSecurity;
/// let any_signed_in = MethodSecurity::bearer([] as [&str; 0]);
/// let admins = MethodSecurity::bearer(["admin"]).or("ApiKey", ["admin"]);
/// assert!(MethodSecurity::public().is_public());
/// assert!(!any_signed_in.is_public());
/// assert_eq!(admins.requirements().len(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodSecurity {
    requirements: BTreeMap<String, Vec<String>>,
}

impl MethodSecurity {
    /// No requirement: anyone may call.
    pub fn public() -> Self {
        Self::default()
    }

    /// Requires the Bearer scheme with all of `scopes` (none = any signed-in
    /// caller).
    pub fn bearer<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::public().or(BEARER, scopes)
    }

    /// Requires `scheme` with all of `scopes`.
    pub fn scheme<I, S>(scheme: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::public().or(scheme, scopes)
    }

    /// Adds an alternative: `scheme` with all of `scopes` also suffices.
    pub fn or<I, S>(mut self, scheme: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        scopes.sort();
        scopes.dedup();
        self.requirements.insert(scheme.to_owned(), scopes);
        self
    }

    /// True when the method needs no credentials.
    pub fn is_public(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The alternatives, scheme name to required scopes (the document's
    /// `x-security`).
    pub fn requirements(&self) -> &BTreeMap<String, Vec<String>> {
        &self.requirements
    }

    /// Checks a resolved caller against this requirement: `Ok` if one
    /// alternative is fully met; `-32099` with the missing scopes of the
    /// schemes the caller is authenticated in; `-32001 missing_token` when it
    /// is authenticated in none of them.
    pub fn check(&self, caller: &Caller) -> Result<(), RpcError> {
        let mut missing = MissingScopes::new();
        for (scheme, required) in &self.requirements {
            let Some(held) = caller.scopes.get(scheme) else {
                continue;
            };
            let lacking: Vec<String> = required
                .iter()
                .filter(|scope| !held.contains(*scope))
                .cloned()
                .collect();
            if lacking.is_empty() {
                return Ok(());
            }
            missing.insert(scheme.clone(), lacking);
        }
        if missing.is_empty() {
            Err(RpcError::Unauthenticated(AuthFailure::MissingToken))
        } else {
            Err(RpcError::PermissionDenied(missing))
        }
    }
}

/// The authenticated caller of a method, as the security function resolved
/// it. Handlers receive it like FastAPI's `Depends(get_user)`.
///
/// Besides its subject and scopes, a security function may attach typed
/// details ([`Caller::with_detail`]), e.g. the user record it loaded, so
/// that handlers need not load it again ([`Caller::detail`]).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is calling (for Bearer: the username).
    pub subject: String,
    /// The scopes held, per scheme the caller authenticated in.
    pub scopes: BTreeMap<String, BTreeSet<String>>,
    details: jsonrpsee::Extensions,
}

impl Caller {
    /// A caller authenticated in one scheme with the given scopes.
    pub fn new<I, S>(subject: impl Into<String>, scheme: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut map = BTreeMap::new();
        map.insert(
            scheme.to_owned(),
            scopes.into_iter().map(Into::into).collect(),
        );
        Caller {
            subject: subject.into(),
            scopes: map,
            details: jsonrpsee::Extensions::new(),
        }
    }

    /// Attaches a detail of type `T` (one per type; a second replaces it).
    pub fn with_detail<T: Clone + Send + Sync + 'static>(mut self, detail: T) -> Self {
        self.details.insert(detail);
        self
    }

    /// The attached detail of type `T`, if any.
    pub fn detail<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.details.get::<T>()
    }

    /// Takes the details of `other` that this caller lacks.
    pub(crate) fn absorb_details(&mut self, other: Caller) {
        let mut details = other.details;
        details.extend(std::mem::take(&mut self.details));
        self.details = details;
    }
}

/// The TCP peer of a connection, in the request extensions of every call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteAddr(pub SocketAddr);

/// What the caller presented: the request headers its security schemes
/// read (for WebSocket, those of the upgrade request) and, on a WebSocket
/// upgrade only, the `access_token` query parameter (RFC 6750 §2.3; never
/// logged).
///
/// Only the headers that some scheme names in its [`SchemeDoc::header`]
/// (and `Authorization`) are kept, so that a WebSocket session holds a few
/// hundred bytes of its upgrade, not every header it came with. Its `Debug`
/// output never shows a value.
#[derive(Clone, Default)]
pub struct Credentials {
    headers: HeaderMap,
    query_token: Option<String>,
    remote_addr: Option<SocketAddr>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field(
                "query_token",
                &self.query_token.as_ref().map(|_| "<redacted>"),
            )
            .field("remote_addr", &self.remote_addr)
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
        Credentials {
            headers,
            query_token,
            remote_addr,
        }
    }

    /// Credentials keeping only the headers named in `keep` (every value of
    /// each, so that a repeated header is still seen as repeated).
    pub fn from_headers(
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

    /// The request headers the security schemes read.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The `access_token` query parameter of a WebSocket upgrade, if any.
    pub fn query_token(&self) -> Option<&str> {
        self.query_token.as_deref()
    }

    /// The TCP peer's address, when known.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.remote_addr
    }

    /// The bearer token presented, if any, per RFC 6750: `Authorization:
    /// Bearer <token>` (scheme word case-insensitive, exactly one space) or
    /// the upgrade's `access_token`. `Ok(None)` when nothing was presented;
    /// `Err(invalid_token)` for two `Authorization` headers, another scheme
    /// (`Basic …`), a token without the `Bearer ` prefix, an empty token, or
    /// a token sent both ways at once.
    pub fn bearer_token(&self) -> Result<Option<&str>, AuthFailure> {
        let mut values = self.headers.get_all(AUTHORIZATION).iter();
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

/// Parses `Bearer <token>`; the token is RFC 6750's `b64token`.
fn parse_bearer(value: &[u8]) -> Result<&str, AuthFailure> {
    let text = std::str::from_utf8(value).map_err(|_| AuthFailure::InvalidToken)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthFailure::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::InvalidToken);
    }
    let b64token = |b: u8| b.is_ascii_alphanumeric() || b"-._~+/=".contains(&b);
    if token.is_empty() || !token.bytes().all(b64token) {
        return Err(AuthFailure::InvalidToken);
    }
    Ok(token)
}

/// How a security scheme is described in the OpenRPC document's
/// `components["x-securitySchemes"]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemeDoc {
    /// The scheme's name, as methods use it in their requirement.
    pub name: String,
    /// `"bearer"` or `"apiKey"`.
    pub kind: String,
    /// Where the credential travels (`"header"`).
    pub location: String,
    /// The header's name (`"Authorization"`, `"X-API-Key"`, …).
    pub header: String,
    /// Token format for bearer schemes (`"JWT"`).
    pub bearer_format: Option<String>,
    /// What the scheme is and how to obtain a credential.
    pub description: String,
}

/// The pluggable security function: credentials in, caller out.
///
/// It runs only for secured methods (and for public methods that ask for an
/// optional caller). Return `Ok(None)` when the request carries no
/// credentials this function understands, `Ok(Some(caller))` with the scopes
/// held per scheme, or an error (`RpcError::Unauthenticated(..)` for bad
/// credentials, anything else becomes `-32603`).
#[async_trait]
pub trait SecurityFunction: Send + Sync + 'static {
    /// Resolves the caller from what it presented.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError>;

    /// The schemes this function authenticates, for the OpenRPC document.
    fn schemes(&self) -> Vec<SchemeDoc>;
}

/// A shared security function.
pub type SharedSecurity = Arc<dyn SecurityFunction>;
