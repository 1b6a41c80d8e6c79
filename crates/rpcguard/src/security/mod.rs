//! Who may call what.
//!
//! - [`MethodSecurity`]: what a method declares, `{scheme: [scopes]}`. No
//!   requirement means public; several schemes mean any one suffices (OR);
//!   the scopes inside a scheme are all needed (AND).
//! - [`Credentials`]: what the caller presented (the request headers its
//!   schemes read, or those of the WebSocket upgrade and its `access_token`
//!   query parameter), put in the request extensions by the server's HTTP
//!   front.
//! - [`SessionCredentials`]: what a WebSocket session bound after its
//!   upgrade (replacing the upgrade's credentials for its later calls).
//! - [`SecurityFunction`]: the pluggable function that turns credentials
//!   into a [`Caller`] per scheme ([`Identities`]). The default is
//!   `BearerSecurity` of `rpcguard-accounts` (JWT + user store);
//!   [`ApiKeySecurity`] and [`AnySecurity`] are here.
//! - the RPC layer (`server/guard.rs`, the server's wiring of this module
//!   and the method registry) runs the security function for secured methods only,
//!   picks the one identity that meets the declared requirement
//!   ([`MethodSecurity::check`]), and hands that caller to the handler.
//!
//! # One identity per call
//!
//! A caller may present credentials of several schemes at once (a Bearer
//! token and an API key). Each scheme yields its own identity, and the
//! handler sees exactly one: the identity of the first alternative, in the
//! order the method declares them, whose scheme authenticated the caller
//! with every scope it requires. Identities are never merged: a user's
//! token sent along with a service's API key runs a method as the user if
//! the user's identity meets the requirement, as the service if the
//! service's does, and never as the user with the service's scopes.

mod api_key;
pub mod jose;
#[cfg(feature = "oidc")]
pub mod oidc;
mod session;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use hyper::header::{HeaderMap, HeaderName, AUTHORIZATION};

use crate::error::{AuthFailure, MissingScopes, RpcError};

pub use api_key::{AnySecurity, ApiKeySecurity};
pub(crate) use session::presented;
pub use session::SessionCredentials;

/// The name of the bearer-token scheme (`Authorization: Bearer <token>`),
/// as methods declare it and the document's `x-securitySchemes` lists it.
pub const BEARER: &str = "Bearer";

/// The security requirement a method declares: a list of alternatives,
/// each a scheme and the scopes all needed in it; any one alternative
/// suffices. No alternative means public.
///
/// ```
/// use rpcguard::MethodSecurity;
/// let any_signed_in = MethodSecurity::signed_in();
/// let admins = MethodSecurity::bearer(["admin"]).or("ApiKey", ["admin"]);
/// let any_bot = MethodSecurity::authenticated("ApiKey");
/// // Any of several scope sets in one scheme.
/// let either = MethodSecurity::bearer(["admin"]).or("Bearer", ["scope1", "scope2"]);
/// assert!(MethodSecurity::public().is_public());
/// assert!(!any_signed_in.is_public());
/// assert_eq!(admins.alternatives().len(), 2);
/// assert_eq!(admins.schemes().collect::<Vec<_>>(), ["Bearer", "ApiKey"]);
/// assert!(any_bot.alternatives()[0].scopes.is_empty());
/// // The document's `x-security`: an object when each scheme appears once,
/// // else a list of one-scheme objects.
/// assert_eq!(admins.x_security(), serde_json::json!({"ApiKey": ["admin"], "Bearer": ["admin"]}));
/// assert_eq!(
///     either.x_security(),
///     serde_json::json!([{"Bearer": ["admin"]}, {"Bearer": ["scope1", "scope2"]}])
/// );
/// ```
///
/// Every scheme a method names must be one the server's
/// [`SecurityFunction::schemes`] lists: [`crate::server::spawn`] refuses to
/// start otherwise, so a misspelt scheme cannot lock a method for good.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[must_use]
pub struct MethodSecurity {
    /// In the order declared: the order alternatives are tried.
    alternatives: Vec<Requirement>,
}

/// One alternative of a [`MethodSecurity`]: a caller authenticated in
/// `scheme` holding every one of `scopes`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    /// The scheme the caller must be authenticated in.
    pub scheme: String,
    /// The scopes all needed, sorted and without repeats (none: any caller
    /// authenticated in the scheme).
    pub scopes: Vec<String>,
}

impl Requirement {
    /// `scheme` with all of `scopes` (sorted, repeats dropped).
    pub fn new<I, S>(scheme: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut scopes: Vec<String> = scopes.into_iter().map(Into::into).collect();
        scopes.sort();
        scopes.dedup();
        Requirement {
            scheme: scheme.to_owned(),
            scopes,
        }
    }

    /// The scopes of this alternative `caller` lacks (none: it is met),
    /// `None` when `caller` is of another scheme.
    pub fn lacking(&self, caller: &Caller) -> Option<Vec<String>> {
        (caller.scheme == self.scheme).then(|| {
            self.scopes
                .iter()
                .filter(|scope| !caller.scopes.contains(*scope))
                .cloned()
                .collect()
        })
    }
}

impl MethodSecurity {
    /// No requirement: anyone may call.
    pub fn public() -> Self {
        Self::default()
    }

    /// Any caller signed in with the Bearer scheme, whatever its scopes
    /// (`{"Bearer": []}`).
    pub fn signed_in() -> Self {
        Self::authenticated(BEARER)
    }

    /// Any caller authenticated in `scheme`, whatever its scopes
    /// (`{scheme: []}`).
    pub fn authenticated(scheme: &str) -> Self {
        Self::public().or_authenticated(scheme)
    }

    /// Requires the Bearer scheme with all of `scopes` (for none, use
    /// [`MethodSecurity::signed_in`]).
    pub fn bearer<I, S>(scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::public().or(BEARER, scopes)
    }

    /// Requires `scheme` with all of `scopes` (for none, use
    /// [`MethodSecurity::authenticated`]).
    pub fn scheme<I, S>(scheme: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::public().or(scheme, scopes)
    }

    /// Any one of `alternatives` (in order); none: public.
    pub fn any_of(alternatives: impl IntoIterator<Item = Requirement>) -> Self {
        alternatives
            .into_iter()
            .fold(Self::public(), |security, alt| security.or_requirement(alt))
    }

    /// Adds an alternative: `scheme` with all of `scopes` also suffices.
    /// Alternatives are tried in the order they are added; a scheme may
    /// have several (any one of several scope sets); adding one that is
    /// already there changes nothing.
    pub fn or<I, S>(self, scheme: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.or_requirement(Requirement::new(scheme, scopes))
    }

    fn or_requirement(mut self, alternative: Requirement) -> Self {
        if !self.alternatives.contains(&alternative) {
            self.alternatives.push(alternative);
        }
        self
    }

    /// Adds an alternative: any caller authenticated in `scheme` also
    /// suffices.
    pub fn or_authenticated(self, scheme: &str) -> Self {
        self.or(scheme, Vec::<String>::new())
    }

    /// True when the method needs no credentials.
    pub fn is_public(&self) -> bool {
        self.alternatives.is_empty()
    }

    /// The alternatives, in the order they are tried.
    pub fn alternatives(&self) -> &[Requirement] {
        &self.alternatives
    }

    /// The schemes of the alternatives, in the order they are first tried,
    /// each once.
    pub fn schemes(&self) -> impl Iterator<Item = &str> + '_ {
        self.alternatives
            .iter()
            .enumerate()
            .filter(|(i, alt)| {
                !self.alternatives[..*i]
                    .iter()
                    .any(|earlier| earlier.scheme == alt.scheme)
            })
            .map(|(_, alt)| alt.scheme.as_str())
    }

    /// True when some alternative asks for at least one scope.
    pub fn needs_scopes(&self) -> bool {
        self.alternatives.iter().any(|alt| !alt.scopes.is_empty())
    }

    /// The document's `x-security`: `{scheme: [scopes], …}` (the schemes
    /// are alternatives) when every scheme has one alternative; otherwise a
    /// list of one-scheme objects, `[{scheme: [scopes]}, …]`, in the order
    /// they are tried (OpenAPI's `security` form).
    pub fn x_security(&self) -> serde_json::Value {
        use serde_json::{Map, Value};
        let one = |alt: &Requirement| {
            let scopes = alt.scopes.iter().cloned().map(Value::String).collect();
            (alt.scheme.clone(), Value::Array(scopes))
        };
        if self.schemes().count() == self.alternatives.len() {
            // Sorted by scheme, as the object form has always been written.
            let mut sorted: Vec<&Requirement> = self.alternatives.iter().collect();
            sorted.sort_by(|a, b| a.scheme.cmp(&b.scheme));
            Value::Object(sorted.into_iter().map(one).collect())
        } else {
            Value::Array(
                self.alternatives
                    .iter()
                    .map(|alt| Value::Object(Map::from_iter([one(alt)])))
                    .collect(),
            )
        }
    }

    /// True when `caller` meets some alternative.
    pub fn admits(&self, caller: &Caller) -> bool {
        self.alternatives
            .iter()
            .any(|alt| alt.lacking(caller).is_some_and(|l| l.is_empty()))
    }

    /// The one caller this requirement lets in, from the identities a
    /// security function found.
    ///
    /// For a secured method: the identity of the first alternative (in
    /// declared order) whose scheme authenticated the caller with all its
    /// scopes. Otherwise, in this order: `-32099` with the scopes missing
    /// in each required scheme the caller is authenticated in (when a
    /// scheme has several alternatives: those of the alternative that lacks
    /// the fewest, the first of equals); `-32001` with the reason a
    /// required scheme's credential was refused; `-32001 wrong_scheme` when
    /// the caller is authenticated only in schemes the method does not
    /// accept; `-32001 missing_token`.
    ///
    /// For a public method: `Ok` with the first identity found, if any
    /// (what a handler declared with
    /// [`Method::optional_caller`](crate::Method::optional_caller) gets).
    pub fn check<'i>(&self, identities: &'i Identities) -> Result<Option<&'i Caller>, RpcError> {
        if self.is_public() {
            return Ok(identities.callers().next());
        }
        let mut missing = MissingScopes::new();
        let mut refused = None;
        for alt in &self.alternatives {
            match identities.get(&alt.scheme) {
                Some(Ok(caller)) => {
                    let lacking = alt.lacking(caller).unwrap_or_default();
                    if lacking.is_empty() {
                        return Ok(Some(caller));
                    }
                    match missing.get(&alt.scheme) {
                        Some(fewer) if fewer.len() <= lacking.len() => {}
                        _ => {
                            missing.insert(alt.scheme.clone(), lacking);
                        }
                    }
                }
                Some(Err(reason)) => {
                    refused.get_or_insert(reason);
                }
                None => {}
            }
        }
        let failure = if !missing.is_empty() {
            return Err(RpcError::PermissionDenied(missing));
        } else if let Some(reason) = refused {
            reason
        } else if identities.callers().next().is_some() {
            AuthFailure::WrongScheme
        } else {
            AuthFailure::MissingToken
        };
        Err(RpcError::Unauthenticated(failure))
    }
}

/// The authenticated caller of a method, as the security function resolved
/// it in one scheme. Handlers receive it like FastAPI's `Depends(get_user)`.
///
/// Besides its subject and scopes, a security function may attach typed
/// details ([`Caller::with_detail`]), e.g. the user record it loaded, so
/// that handlers need not load it again ([`Caller::detail`]).
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who is calling (for Bearer: the username).
    pub subject: String,
    /// The scheme the caller authenticated in.
    pub scheme: String,
    /// The scopes it holds in that scheme.
    pub scopes: BTreeSet<String>,
    details: jsonrpsee::Extensions,
}

impl Caller {
    /// A caller authenticated in `scheme` with the given scopes.
    pub fn new<I, S>(subject: impl Into<String>, scheme: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Caller {
            subject: subject.into(),
            scheme: scheme.to_owned(),
            scopes: scopes.into_iter().map(Into::into).collect(),
            details: jsonrpsee::Extensions::new(),
        }
    }

    /// Attaches a detail of type `T` (one per type; a second replaces it).
    #[must_use]
    pub fn with_detail<T: Clone + Send + Sync + 'static>(mut self, detail: T) -> Self {
        self.details.insert(detail);
        self
    }

    /// The attached detail of type `T`, if any.
    pub fn detail<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.details.get::<T>()
    }

    /// True when the caller holds `scope` (in its scheme).
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.contains(scope)
    }
}

/// What a security function found in one request: per scheme, the
/// identity its credential proved, or why that credential was refused.
/// Schemes the caller presented nothing for are absent.
///
/// One scheme holds one outcome. Adding a second for a scheme (two
/// functions of one scheme, combined with [`AnySecurity`]) keeps an
/// identity over a refusal, and the first of two identities or two
/// refusals.
///
/// ```
/// use rpcguard::{AuthFailure, Caller, Identities};
/// let found = Identities::new()
///     .found(Caller::new("bot", "ApiKey", ["reports"]))
///     .refused("Bearer", AuthFailure::ExpiredToken);
/// assert_eq!(found.get("ApiKey").and_then(Result::ok).map(|c| c.subject.as_str()), Some("bot"));
/// assert_eq!(found.get("Bearer").and_then(Result::err), Some(AuthFailure::ExpiredToken));
/// assert!(found.get("Other").is_none());
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct Identities {
    /// In the order found (for [`AnySecurity`]: the order of its functions).
    by_scheme: Vec<Outcome>,
}

/// What one scheme yielded. An identity carries its scheme's name, so
/// finding one copies no string.
#[derive(Debug, Clone)]
enum Outcome {
    Found(Arc<Caller>),
    Refused(String, AuthFailure),
}

impl Outcome {
    fn scheme(&self) -> &str {
        match self {
            Outcome::Found(caller) => &caller.scheme,
            Outcome::Refused(scheme, _) => scheme,
        }
    }
}

impl Identities {
    /// Nothing presented.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the identity `caller` proved in its scheme.
    pub fn found(self, caller: Caller) -> Self {
        self.found_shared(Arc::new(caller))
    }

    /// Adds the identity `caller` proved in its scheme, shared: a security
    /// function that keeps its callers built (one per account, say) hands
    /// them out without a copy per call, and the handler gets this `Arc`.
    pub fn found_shared(mut self, caller: Arc<Caller>) -> Self {
        self.add(Outcome::Found(caller));
        self
    }

    /// Adds a refused credential of `scheme`.
    pub fn refused(mut self, scheme: &str, reason: AuthFailure) -> Self {
        self.add(Outcome::Refused(scheme.to_owned(), reason));
        self
    }

    /// Adds everything `other` found, scheme by scheme.
    pub fn merge(mut self, other: Identities) -> Self {
        for outcome in other.by_scheme {
            self.add(outcome);
        }
        self
    }

    fn add(&mut self, outcome: Outcome) {
        match self
            .by_scheme
            .iter_mut()
            .find(|held| held.scheme() == outcome.scheme())
        {
            None => self.by_scheme.push(outcome),
            Some(held @ Outcome::Refused(..)) if matches!(outcome, Outcome::Found(_)) => {
                *held = outcome
            }
            Some(_) => {}
        }
    }

    fn outcome(&self, scheme: &str) -> Option<&Outcome> {
        self.by_scheme.iter().find(|o| o.scheme() == scheme)
    }

    /// The outcome in `scheme`: its identity, why its credential was
    /// refused, or `None` when nothing of that scheme was presented.
    pub fn get(&self, scheme: &str) -> Option<Result<&Caller, AuthFailure>> {
        self.outcome(scheme).map(|outcome| match outcome {
            Outcome::Found(caller) => Ok(&**caller),
            Outcome::Refused(_, reason) => Err(*reason),
        })
    }

    /// The identity found in `scheme`, shared (what the handler gets).
    pub fn shared(&self, scheme: &str) -> Option<&Arc<Caller>> {
        match self.outcome(scheme)? {
            Outcome::Found(caller) => Some(caller),
            Outcome::Refused(..) => None,
        }
    }

    /// Every identity found, in the order found.
    pub fn callers(&self) -> impl Iterator<Item = &Caller> + '_ {
        self.by_scheme.iter().filter_map(|outcome| match outcome {
            Outcome::Found(caller) => Some(&**caller),
            Outcome::Refused(..) => None,
        })
    }

    /// Every refusal, in the order found.
    pub fn refusals(&self) -> impl Iterator<Item = (&str, AuthFailure)> + '_ {
        self.by_scheme.iter().filter_map(|outcome| match outcome {
            Outcome::Found(_) => None,
            Outcome::Refused(scheme, reason) => Some((scheme.as_str(), *reason)),
        })
    }

    /// True when nothing was presented in any scheme.
    pub fn is_empty(&self) -> bool {
        self.by_scheme.is_empty()
    }
}

impl From<Caller> for Identities {
    fn from(caller: Caller) -> Self {
        Identities::new().found(caller)
    }
}

impl From<Option<Caller>> for Identities {
    fn from(caller: Option<Caller>) -> Self {
        caller.map(Identities::from).unwrap_or_default()
    }
}

/// Where a call came from, in the request extensions of every call: the
/// client's address (resolved behind a trusted proxy, see
/// [`crate::server::TrustedProxies`]) and its connection's
/// [`ConnectionInfo`].
#[derive(Debug, Clone)]
pub(crate) struct RemoteAddr {
    /// The client: the TCP peer, or the address a trusted proxy named.
    pub client: SocketAddr,
    /// The connection it came on.
    pub conn: Arc<ConnectionInfo>,
    /// The id of the HTTP request (or WebSocket upgrade). Kept here rather
    /// than as an extension of its own: one more entry would make every
    /// call's extension map grow (rehash) when the guard adds the caller.
    pub request_id: RequestId,
}

/// What a connection's calls share, made once at accept: a request clones
/// this connection's own handle, never a counter every connection shares.
#[derive(Debug)]
pub(crate) struct ConnectionInfo {
    /// The TCP peer (the proxy, behind one).
    pub peer: SocketAddr,
    /// The server's drain switch.
    pub drain: Arc<crate::server::lifecycle::DrainSwitch>,
    /// Cancelled at the shutdown deadline: calls still running are cut
    /// off.
    pub deadline: tokio_util::sync::CancellationToken,
}

/// The id of the HTTP request (or WebSocket upgrade) a call came in:
/// taken from a trusted proxy's `X-Request-Id`, else made by the server;
/// echoed in the answer's `X-Request-Id` header and written in the call's
/// log line and audit events ([`crate::CallContext::request_id`]).
///
/// An id the server makes is held inline (no allocation per request); one
/// a proxy gave is shared.
#[derive(Clone, PartialEq, Eq)]
pub struct RequestId(IdText);

/// The longest id the server makes: 8 hex digits, `-`, 16 hex digits.
const MADE_MAX: usize = 25;

#[derive(Clone, PartialEq, Eq)]
enum IdText {
    /// Made by the server: ASCII, `len` bytes of `bytes`.
    Made { len: u8, bytes: [u8; MADE_MAX] },
    /// Taken from a trusted proxy.
    Given(Arc<str>),
}

impl RequestId {
    /// The id `PREFIX-N` (`prefix` as 8 hex digits, `n` in hex), made
    /// without an allocation.
    pub(crate) fn made(prefix: u32, n: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut bytes = [0u8; MADE_MAX];
        for (i, byte) in bytes.iter_mut().take(8).enumerate() {
            *byte = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
        }
        bytes[8] = b'-';
        let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in 0..digits {
            let shift = 4 * (digits - 1 - i);
            bytes[9 + i] = HEX[((n >> shift) & 0xf) as usize];
        }
        RequestId(IdText::Made {
            len: (9 + digits) as u8,
            bytes,
        })
    }

    /// An id given by a trusted proxy (already checked to be a sane token).
    pub(crate) fn given(text: &str) -> Self {
        RequestId(IdText::Given(Arc::from(text)))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            IdText::Made { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or("-")
            }
            IdText::Given(text) => text,
        }
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RequestId").field(&self.as_str()).finish()
    }
}

/// What the caller presented: the request headers its security schemes
/// read (for WebSocket, those of the upgrade request) and, on a WebSocket
/// upgrade only, the `access_token` query parameter (RFC 6750 §2.3; never
/// logged).
///
/// Only the headers that some scheme names in its [`SchemeDoc::header`]
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

    /// The request headers the security schemes read.
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
fn parse_bearer(value: &[u8]) -> Result<&str, AuthFailure> {
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
    /// Extra fields of the scheme's entry, each named `x-…` (e.g.
    /// `x-issuers`: the token issuers a bearer scheme accepts).
    pub extensions: BTreeMap<String, serde_json::Value>,
}

impl SchemeDoc {
    /// An API-key scheme named `name`, read from the header `header`.
    pub fn api_key(name: &str, header: &str, description: &str) -> Self {
        SchemeDoc {
            name: name.to_owned(),
            kind: "apiKey".to_owned(),
            location: "header".to_owned(),
            header: header.to_owned(),
            bearer_format: None,
            description: description.to_owned(),
            extensions: BTreeMap::new(),
        }
    }

    /// A bearer scheme named `name` (`Authorization: Bearer <token>`),
    /// whose tokens have the format `bearer_format` (e.g. `"JWT"`).
    pub fn bearer(name: &str, bearer_format: &str, description: &str) -> Self {
        SchemeDoc {
            name: name.to_owned(),
            kind: "bearer".to_owned(),
            location: "header".to_owned(),
            header: "Authorization".to_owned(),
            bearer_format: Some(bearer_format.to_owned()),
            description: description.to_owned(),
            extensions: BTreeMap::new(),
        }
    }

    /// Adds the extra field `name` (which should start with `x-`) to the
    /// scheme's entry in the document.
    #[must_use]
    pub fn with_extension(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }
}

/// The pluggable security function: credentials in, caller out.
///
/// It runs only for secured methods (and for public methods that ask for an
/// optional caller). Implement two methods:
///
/// - [`authenticate`](SecurityFunction::authenticate): `Ok(None)` when the
///   request carries no credential this function understands,
///   `Ok(Some(caller))` with the scheme and scopes it proved, or
///   `Err(RpcError::Unauthenticated(..))` for a credential it refuses
///   (any other error becomes `-32603`);
/// - [`schemes`](SecurityFunction::schemes): the schemes it authenticates,
///   for the OpenRPC document, for [`crate::server::spawn`]'s check that
///   every scheme a method declares exists, and for the headers the server
///   keeps as [`Credentials`].
///
/// A function that proves several identities at once (one per scheme, like
/// [`AnySecurity`]) overrides
/// [`identities`](SecurityFunction::identities) as well; the middleware
/// calls only that one, and picks one identity per call from it
/// ([`MethodSecurity::check`]).
///
/// The trait is an [`async_trait`](crate::async_trait): rustdoc shows its
/// methods as returning `Pin<Box<dyn Future ...>>`, but you write `async
/// fn` under `#[rpcguard::async_trait]` (re-exported, so no dependency of
/// your own is needed). Without the attribute the compiler reports E0195
/// "lifetime parameters or bounds on method do not match".
///
/// A security function written from scratch, accepting a shared secret in
/// an `X-Partner-Key` header:
///
/// ```
/// use rpcguard::{AuthFailure, Caller, Credentials, RpcError, SchemeDoc, SecurityFunction};
///
/// struct PartnerKey {
///     secret: String,
/// }
///
/// #[rpcguard::async_trait]
/// impl SecurityFunction for PartnerKey {
///     async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError> {
///         let Some(value) = credentials.headers().get("x-partner-key") else {
///             return Ok(None); // nothing of ours: another scheme may apply
///         };
///         // (compare digests in constant time in real code, see ApiKeySecurity)
///         if value.as_bytes() != self.secret.as_bytes() {
///             return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
///         }
///         Ok(Some(Caller::new("partner", "Partner", ["orders:read"])))
///     }
///
///     fn schemes(&self) -> Vec<SchemeDoc> {
///         vec![SchemeDoc::api_key("Partner", "x-partner-key", "The key our partners were given.")]
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let partner = PartnerKey { secret: "s3cret".to_owned() };
/// let mut headers = http::HeaderMap::new();
/// headers.insert("x-partner-key", http::HeaderValue::from_static("s3cret"));
/// let caller = partner
///     .authenticate(&Credentials::new(headers, None, None))
///     .await
///     .expect("accepted")
///     .expect("a caller");
/// assert_eq!((caller.subject.as_str(), caller.scheme.as_str()), ("partner", "Partner"));
/// // Serve it with `rpcguard::server::spawn(listener, api, state, Arc::new(partner), config)`,
/// // methods declaring `MethodSecurity::scheme("Partner", ["orders:read"])`.
/// # }
/// ```
#[async_trait]
pub trait SecurityFunction: Send + Sync + 'static {
    /// Resolves the caller from what it presented, in one of this
    /// function's schemes.
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError>;

    /// [`authenticate`](SecurityFunction::authenticate), for a function
    /// that keeps its callers built and shares them: the default wraps
    /// `authenticate`'s caller in an `Arc`. Override it (and have
    /// `authenticate` clone out of it) to save building a caller on every
    /// call.
    async fn authenticate_shared(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        Ok(self.authenticate(credentials).await?.map(Arc::new))
    }

    /// The schemes this function authenticates.
    fn schemes(&self) -> Vec<SchemeDoc>;

    /// Every identity the credentials prove, one per scheme. The middleware
    /// calls this, never [`authenticate`](SecurityFunction::authenticate)
    /// directly.
    ///
    /// The default runs
    /// [`authenticate_shared`](SecurityFunction::authenticate_shared): its
    /// caller is the identity in the caller's scheme, and an
    /// `Unauthenticated` refusal counts against every scheme of
    /// [`schemes`](SecurityFunction::schemes).
    async fn identities(&self, credentials: &Credentials) -> Result<Identities, RpcError> {
        match self.authenticate_shared(credentials).await {
            Ok(caller) => {
                Ok(caller.map_or_else(Identities::new, |c| Identities::new().found_shared(c)))
            }
            Err(RpcError::Unauthenticated(reason)) => {
                let schemes = self.schemes();
                if schemes.is_empty() {
                    return Err(RpcError::Unauthenticated(reason));
                }
                Ok(schemes.iter().fold(Identities::new(), |found, scheme| {
                    found.refused(&scheme.name, reason)
                }))
            }
            Err(other) => Err(other),
        }
    }
}

/// A shared security function.
pub type SharedSecurity = Arc<dyn SecurityFunction>;

#[cfg(test)]
mod tests {
    use super::*;

    fn bob() -> Caller {
        Caller::new("bob", BEARER, ["profile"])
    }

    fn ops_bot() -> Caller {
        Caller::new("ops-bot", "Ops", ["deploy"])
    }

    fn reason(result: Result<Option<&Caller>, RpcError>) -> &'static str {
        match result {
            Err(RpcError::Unauthenticated(failure)) => failure.as_str(),
            other => panic!("expected -32001, got {other:?}"),
        }
    }

    #[test]
    fn made_request_ids_read_as_the_prefix_and_the_counter_in_hex() {
        assert_eq!(RequestId::made(0x0a1b_2c3d, 0).as_str(), "0a1b2c3d-0");
        assert_eq!(RequestId::made(0xffff_ffff, 0x2f).as_str(), "ffffffff-2f");
        assert_eq!(
            RequestId::made(1, u64::MAX).to_string(),
            "00000001-ffffffffffffffff"
        );
        assert_eq!(RequestId::given("req-1").as_str(), "req-1");
    }

    #[test]
    fn the_alternative_that_is_met_gives_the_caller_never_a_merge() {
        let both = Identities::new().found(bob()).found(ops_bot());
        let ops_only = MethodSecurity::scheme("Ops", ["deploy"]);
        let caller = ops_only.check(&both).expect("ops key").expect("caller");
        assert_eq!(
            (caller.subject.as_str(), caller.scheme.as_str()),
            ("ops-bot", "Ops")
        );
        assert!(!caller.has_scope("profile"));
        // Bob's token cannot borrow the key's scope for a Bearer requirement.
        let bearer_deploy = MethodSecurity::bearer(["deploy"]);
        assert!(matches!(
            bearer_deploy.check(&both),
            Err(RpcError::PermissionDenied(missing)) if missing[BEARER] == ["deploy"]
        ));
    }

    #[test]
    fn alternatives_are_tried_in_declared_order() {
        let both = Identities::new()
            .found(Caller::new("bob", BEARER, ["deploy"]))
            .found(ops_bot());
        let bearer_first = MethodSecurity::bearer(["deploy"]).or("Ops", ["deploy"]);
        let ops_first = MethodSecurity::scheme("Ops", ["deploy"]).or(BEARER, ["deploy"]);
        let subject = |s: &MethodSecurity| s.check(&both).ok().flatten().map(|c| c.subject.clone());
        assert_eq!(subject(&bearer_first).as_deref(), Some("bob"));
        assert_eq!(subject(&ops_first).as_deref(), Some("ops-bot"));
        // Only one met: that one, whatever the order.
        let lacking = Identities::new().found(bob()).found(ops_bot());
        assert_eq!(
            bearer_first
                .check(&lacking)
                .ok()
                .flatten()
                .map(|c| c.subject.as_str()),
            Some("ops-bot")
        );
    }

    #[test]
    fn refusals_say_why() {
        let signed_in = MethodSecurity::signed_in();
        assert_eq!(reason(signed_in.check(&Identities::new())), "missing_token");
        let key_only = Identities::new().found(ops_bot());
        assert_eq!(reason(signed_in.check(&key_only)), "wrong_scheme");
        let expired = key_only.clone().refused(BEARER, AuthFailure::ExpiredToken);
        assert_eq!(reason(signed_in.check(&expired)), "expired_token");
        // A refused credential of a scheme the method does not accept is
        // not the method's business.
        let bad_key = Identities::new().refused("Ops", AuthFailure::InvalidToken);
        assert_eq!(reason(signed_in.check(&bad_key)), "missing_token");
        let bad_key_good_token = bad_key.found(bob());
        assert!(signed_in.check(&bad_key_good_token).is_ok());
    }

    #[test]
    fn public_methods_get_the_first_identity() {
        let found = Identities::new().found(ops_bot()).found(bob());
        let caller = MethodSecurity::public().check(&found).expect("public");
        assert_eq!(caller.map(|c| c.subject.as_str()), Some("ops-bot"));
        assert!(MethodSecurity::public()
            .check(&Identities::new())
            .expect("public")
            .is_none());
    }

    #[test]
    fn one_outcome_per_scheme_identity_first() {
        let found = Identities::new()
            .refused(BEARER, AuthFailure::InvalidToken)
            .found(bob())
            .found(Caller::new("eve", BEARER, ["admin"]))
            .refused(BEARER, AuthFailure::ExpiredToken);
        let caller = found.get(BEARER).and_then(Result::ok).expect("bob");
        assert_eq!(caller.subject, "bob");
        assert_eq!(found.callers().count(), 1);
    }

    #[test]
    fn bearer_header_is_the_scheme_one_space_and_a_b64token() {
        for good in ["Bearer abc.DEF-_~+/=", "bearer x", "BEARER 0"] {
            assert!(parse_bearer(good.as_bytes()).is_ok(), "{good}");
        }
        assert_eq!(parse_bearer(b"Bearer a.b.c"), Ok("a.b.c"));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer  abc",
            b"Bearer\tabc",
            b"Basic abc",
            b"Bearerabc",
            b"Bearer ab c",
            b"Bearer ab\"c",
            b"Bearer \xc3\xa9",
            b"Bearer a,b",
        ] {
            assert_eq!(
                parse_bearer(bad),
                Err(AuthFailure::InvalidToken),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn signed_in_is_bearer_with_no_scopes() {
        assert_eq!(
            MethodSecurity::signed_in(),
            MethodSecurity::bearer(Vec::<String>::new())
        );
        assert_eq!(
            MethodSecurity::authenticated("Ops").alternatives(),
            [Requirement::new("Ops", Vec::<String>::new())]
        );
    }

    #[test]
    fn any_of_several_scope_sets_in_one_scheme() {
        let either = MethodSecurity::bearer(["admin", "root"]).or(BEARER, ["scope1", "scope2"]);
        assert_eq!(either.schemes().collect::<Vec<_>>(), [BEARER]);
        let admit = |scopes: &[&str]| {
            let found = Identities::new().found(Caller::new("bob", BEARER, scopes.iter().copied()));
            either.check(&found).map(|c| c.is_some())
        };
        assert!(matches!(admit(&["admin", "root"]), Ok(true)));
        assert!(matches!(admit(&["scope1", "scope2"]), Ok(true)));
        // Partial scopes of both: the alternative lacking the fewest is named.
        match admit(&["scope1"]) {
            Err(RpcError::PermissionDenied(missing)) => assert_eq!(missing[BEARER], ["scope2"]),
            other => panic!("{other:?}"),
        }
        // Equals: the first declared.
        match admit(&[]) {
            Err(RpcError::PermissionDenied(missing)) => {
                assert_eq!(missing[BEARER], ["admin", "root"])
            }
            other => panic!("{other:?}"),
        }
        // Adding an alternative twice changes nothing.
        assert_eq!(either.clone().or(BEARER, ["scope2", "scope1"]), either);
    }
}
