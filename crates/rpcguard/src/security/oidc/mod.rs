//! Bearer tokens of an external identity provider (OpenID Connect: Keycloak,
//! Auth0, Entra ID, another rpcguard): [`OidcSecurity`], and
//! [`IssuerRouter`] to accept them beside a server's own tokens.
//!
//! Needs the cargo feature `oidc`.
//!
//! A token is accepted when:
//!
//! - its JOSE header has no `crit` member (RFC 7515 §4.1.11: no extension
//!   is understood here, so any `crit` is refused, whatever it lists);
//! - its header names a `kid` of the provider's JWKS ([`JwksSource`]; see
//!   `jwks.rs` for which keys are used and when the set is fetched again),
//!   and its `alg` is that key's one algorithm (asymmetric only: `RS*`,
//!   `PS*`, `ES256`, `ES384`, `EdDSA`, or RFC 9864's `Ed25519` as a name of
//!   `EdDSA`). `alg: none`, an HMAC "signed" with a public key, and anything
//!   the header points at (`jku`, `x5u`, `x5c`, an embedded `jwk`) are never
//!   used: `invalid_token`;
//! - its signature verifies, its `iss` is the configured issuer and its
//!   `aud` (a string or a list) holds the configured audience; `exp`, `iss`,
//!   `aud` and `sub` are present; `exp` has not passed, `nbf` (when present)
//!   has (with [`OidcConfig::leeway`], zero by default), and `iat` (when
//!   present) is not more than 60 s (or the leeway, if larger) in the
//!   future; each time is a number;
//! - it is an access token, not an OpenID Connect ID token (signed by the
//!   same key for the same issuer, and naming this service in `aud` when
//!   the configured audience is a client id), by every signal it gives:
//!   - the header's `typ` (RFC 9068 §2.1, compared without case, with or
//!     without `application/`): `at+jwt` is an access token; `JWT` or no
//!     `typ` says nothing (see below); any other value (`id_token+jwt`,
//!     `logout+jwt`, …) and a `typ` that is not a string (`null`, a number)
//!     are refused;
//!   - a `typ` claim (Keycloak's), when present, must be the string
//!     `Bearer` or `at+jwt` (Keycloak's ID tokens say `ID`);
//!   - a token that neither says `at+jwt` in its header nor `Bearer` in a
//!     `typ` claim is refused when it carries a claim only ID tokens carry:
//!     `nonce`, `at_hash`, `c_hash` or `s_hash`; or `auth_time` together
//!     with an `azp` equal to the configured audience (an ID token is
//!     issued *to* its client and says when the user signed in; an access
//!     token's `azp` names the client that asked for it, not this service);
//!   - with [`OidcConfig::require_at_jwt`] (`--oidc-require-at-jwt`), only
//!     `typ: at+jwt` in the header is accepted.
//!
//!   An untyped ID token without any of those claims (oidc-provider's, from
//!   a code flow without `nonce`: `iss sub aud exp iat` only) cannot be told
//!   from an access token: against such a provider, make the audience the
//!   API's resource identifier (ID tokens name the client), or require
//!   `at+jwt` when it types its access tokens.
//!
//! Refusals: an expired token is `expired_token`, anything else
//! `invalid_token` (the contract's reasons; a wrong issuer or audience is
//! `invalid_token`, as for the server's own tokens).
//!
//! The caller ([`Caller`]) is the `sub` claim, in the Bearer scheme (or
//! [`OidcConfig::scheme`]), with the scopes of the claim
//! [`OidcConfig::scopes_claim`] names, and an [`ExternalIdentity`] detail
//! with the issuer and every claim, for handlers that need more (`email`,
//! `name`).
//!
//! ```no_run
//! use std::sync::Arc;
//! use rpcguard::security::oidc::{IssuerRouter, JwksSource, OidcConfig, OidcSecurity};
//! use rpcguard::SharedSecurity;
//!
//! # async fn run(own_tokens: SharedSecurity) -> Result<(), Box<dyn std::error::Error>> {
//! let mut keycloak = OidcConfig::new(
//!     "https://kc.example/realms/acme",
//!     "rpc",
//!     JwksSource::parse("https://kc.example/realms/acme/protocol/openid-connect/certs"),
//! );
//! keycloak.scopes_claim = "realm_access.roles".to_owned();
//! let keycloak = OidcSecurity::connect(keycloak).await?;
//! // Keycloak's tokens and the server's own, both as `Authorization: Bearer`.
//! let security: SharedSecurity = Arc::new(IssuerRouter::new(Some(own_tokens)).issuer(keycloak));
//! # let _ = security; Ok(()) }
//! ```

mod claims;
mod jwks;
mod router;
mod validate;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use jsonwebtoken::Algorithm;
use serde_json::{json, Map, Value};

use super::jose::{self, JoseHeader};
use super::{Caller, Credentials, Scheme, SecurityFunction, BEARER};
use crate::error::{AuthFailure, RpcError};

pub use jwks::{JwksError, JwksSource};
pub use router::IssuerRouter;

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The algorithms an external issuer's keys may have (`Ed25519`, RFC
/// 9864's name for EdDSA on Ed25519, is accepted as `EdDSA` too).
pub const ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// The algorithm a token header's or a JWK's `alg` names, if it is one of
/// [`ALGORITHMS`] or `Ed25519`.
fn algorithm_named(name: &str) -> Option<Algorithm> {
    if name == "Ed25519" {
        return Some(Algorithm::EdDSA);
    }
    if !ALGORITHMS.contains(&name) {
        return None;
    }
    name.parse().ok()
}

/// One external issuer: whose tokens, for whom, verified with which keys.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OidcConfig {
    /// The exact `iss` of its tokens (`https://kc.example/realms/acme`).
    pub issuer: String,
    /// The audience its tokens must name in `aud` (this service's client
    /// id at the provider).
    pub audience: String,
    /// Where its public keys are.
    pub jwks: JwksSource,
    /// The claim holding the caller's scopes: a space-separated string
    /// (`scope`), a list (`scp`, `roles`), or a dotted path into objects
    /// (`realm_access.roles`). Default `scope`.
    pub scopes_claim: String,
    /// The scheme its callers are in (default `Bearer`, so that methods
    /// declared with [`BEARER.require`](crate::Scheme::require)
    /// accept them).
    pub scheme: String,
    /// Least time between two fetches made because a token named an unknown
    /// `kid` (default 30 s): a flood of made-up `kid`s costs one fetch per
    /// cooldown, and a key the provider has just rotated in is found within
    /// one.
    pub cooldown: Duration,
    /// How often the set is fetched in the background (default 15 min), so
    /// that a key the provider withdrew stops verifying.
    pub refresh_every: Duration,
    /// Time allowed for one fetch (default 5 s).
    pub fetch_timeout: Duration,
    /// Clock skew allowed on `exp` and `nbf` (default zero); an `iat` may
    /// be this much, or 60 s when that is more, in the future.
    pub leeway: Duration,
    /// Accept only tokens whose JOSE header says `typ: at+jwt` (RFC 9068),
    /// for providers that always set it (default false: an untyped token
    /// is accepted when nothing in it says ID token; see the
    /// [module](self) docs).
    pub require_at_jwt: bool,
    /// Where JWKS fetches are counted (`rpcguard_jwks_fetches_total
    /// {issuer,outcome}`; default: a registry of its own, not served). Give
    /// it the server's ([`ServerConfig::metrics`](crate::ServerConfig::metrics)).
    pub metrics: crate::metrics::Metrics,
}

impl OidcConfig {
    /// The issuer `issuer`, audience `audience`, keys from `jwks`, with the
    /// defaults above.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>, jwks: JwksSource) -> Self {
        OidcConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks,
            scopes_claim: "scope".to_owned(),
            scheme: BEARER.name().to_owned(),
            cooldown: Duration::from_secs(30),
            refresh_every: Duration::from_secs(15 * 60),
            fetch_timeout: Duration::from_secs(5),
            leeway: Duration::ZERO,
            require_at_jwt: false,
            metrics: crate::metrics::Metrics::default(),
        }
    }

    /// The same configuration, accepting only tokens typed `at+jwt`
    /// ([`require_at_jwt`](Self::require_at_jwt)).
    #[must_use]
    pub fn requiring_at_jwt(mut self) -> Self {
        self.require_at_jwt = true;
        self
    }
}

/// Why an external issuer cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The issuer or audience is empty.
    #[error("an external issuer needs a non-empty issuer and audience")]
    Incomplete,
    /// The JWKS URL is not a URL.
    #[error("the JWKS URL {0} is not a valid URL")]
    BadUrl(String),
    /// The HTTP client could not be built (TLS set-up).
    #[error("cannot set up the HTTP client: {0}")]
    Client(String),
    /// The JWKS file could not be loaded at start.
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

/// Who an external token says the caller is: attached to its [`Caller`]
/// (read it with `caller.detail::<ExternalIdentity>()`).
#[derive(Debug, Clone)]
pub struct ExternalIdentity {
    /// The token's issuer (`iss`).
    pub issuer: String,
    /// The token's subject (`sub`), also the caller's
    /// [`subject`](Caller::subject).
    pub subject: String,
    /// When the token was issued (`iat`, Unix seconds), if it says.
    pub issued_at: Option<u64>,
    /// When it expires (`exp`, Unix seconds).
    pub expires_at: u64,
    /// Every claim of the token.
    pub claims: Arc<Map<String, Value>>,
}

/// Accepts the Bearer tokens of one external issuer (see the
/// [module](self) for the rules). Cloning shares the key cache.
#[derive(Clone)]
pub struct OidcSecurity {
    inner: Arc<Inner>,
}

struct Inner {
    config: OidcConfig,
    keys: jwks::JwksCache,
}

impl std::fmt::Debug for OidcSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSecurity")
            .field("issuer", &self.inner.config.issuer)
            .field("audience", &self.inner.config.audience)
            .field("jwks", &self.inner.config.jwks)
            .finish()
    }
}

impl OidcSecurity {
    /// Sets the issuer up and loads its keys once. A JWKS file that cannot
    /// be loaded is an error; a URL that cannot be fetched now is logged
    /// and fetched again when a token needs it (so the server starts, and
    /// its own tokens work, while the provider is down). Keeps the set
    /// fresh in the background (every [`OidcConfig::refresh_every`]) until
    /// the last clone is dropped.
    pub async fn connect(config: OidcConfig) -> Result<Self, OidcError> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(OidcError::Incomplete);
        }
        let http = match &config.jwks {
            JwksSource::Url(url) => {
                let parsed =
                    reqwest::Url::parse(url).map_err(|_| OidcError::BadUrl(url.clone()))?;
                if parsed.scheme() == "http"
                    && !matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
                {
                    tracing::warn!(jwks = %url, "the JWKS is fetched over plain HTTP: anyone on the path can swap the keys; use https");
                }
                let timeout = config.fetch_timeout;
                // Loading the system's trust store reads files: not on a
                // worker thread.
                let client = tokio::task::spawn_blocking(move || {
                    reqwest::Client::builder()
                        .timeout(timeout)
                        .connect_timeout(timeout)
                        .redirect(reqwest::redirect::Policy::limited(3))
                        .user_agent(concat!("rpcguard/", env!("CARGO_PKG_VERSION")))
                        .build()
                })
                .await
                .map_err(|e| OidcError::Client(e.to_string()))?
                .map_err(|e| OidcError::Client(e.to_string()))?;
                Some(client)
            }
            JwksSource::File(_) => None,
        };
        let keys = jwks::JwksCache::new(
            config.jwks.clone(),
            http,
            config.cooldown,
            (config.issuer.clone(), config.metrics.clone()),
        );
        match keys.load_now().await {
            Ok(count) => {
                tracing::info!(issuer = %config.issuer, jwks = %config.jwks, keys = count, "external issuer keys loaded");
            }
            // A file is configuration: unreadable at start is an error.
            Err(err) if config.jwks.url().is_none() => return Err(err.into()),
            Err(err) => {
                tracing::warn!(issuer = %config.issuer, error = %err, "external issuer keys not loaded yet; fetched again when a token needs them");
            }
        }
        let security = OidcSecurity {
            inner: Arc::new(Inner { config, keys }),
        };
        security.spawn_refresh();
        Ok(security)
    }

    /// Fetches the set every `refresh_every` while a clone is alive.
    fn spawn_refresh(&self) {
        let weak = Arc::downgrade(&self.inner);
        let every = self.inner.config.refresh_every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await; // the first tick is now; the set was just loaded
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else {
                    return;
                };
                inner.keys.refresh().await;
            }
        });
    }

    /// The configuration in use.
    pub fn config(&self) -> &OidcConfig {
        &self.inner.config
    }

    /// How many of the provider's keys are in use now.
    pub fn key_count(&self) -> usize {
        self.inner.keys.len()
    }

    /// True when `token` names this issuer in `iss` (read without
    /// verifying: only to choose a verifier, see [`IssuerRouter`]).
    pub fn names_this_issuer(&self, token: &str) -> bool {
        token.len() <= MAX_TOKEN_BYTES
            && claims::unverified_issuer(token).as_deref()
                == Some(self.inner.config.issuer.as_str())
    }

    /// Verifies `token` and returns its caller, or why it is refused.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthFailure> {
        let invalid = AuthFailure::InvalidToken;
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid);
        }
        let (header_b64, payload_b64, signature) = jose::segments(token).ok_or(invalid)?;
        let header = JoseHeader::of_token(token).ok_or(invalid)?;
        // No extension is understood here (RFC 7515 §4.1.11).
        if header.crit {
            return Err(invalid);
        }
        // `alg: none`, HMAC and unknown algorithms are no algorithm here.
        let alg = algorithm_named(&header.alg).ok_or(invalid)?;
        let kid = header.kid.as_deref().ok_or(invalid)?;
        let key = match self.inner.keys.get(kid) {
            Some(key) => key,
            None => self.inner.keys.refetch_for(kid).await.ok_or(invalid)?,
        };
        if alg != key.alg {
            return Err(invalid);
        }
        // The signing input is the token's own two first segments, as sent.
        let signing_input = &token[..header_b64.len() + 1 + payload_b64.len()];
        let signed =
            jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), &key.decoding, alg);
        if !matches!(signed, Ok(true)) {
            return Err(invalid);
        }
        let claims = claims::payload(payload_b64).ok_or(invalid)?;
        let config = &self.inner.config;
        let expected = validate::Expected {
            issuer: &config.issuer,
            audience: &config.audience,
            leeway: config.leeway.as_secs(),
            require_at_jwt: config.require_at_jwt,
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| invalid)?
            .as_secs();
        validate::check(&header.typ, &claims, &expected, now)?;
        self.caller_of(claims)
    }

    fn caller_of(&self, claims: Map<String, Value>) -> Result<Caller, AuthFailure> {
        let config = &self.inner.config;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|sub| !sub.is_empty())
            .ok_or(AuthFailure::InvalidToken)?
            .to_owned();
        let scopes = claims::scopes_at(&claims, &config.scopes_claim);
        let identity = ExternalIdentity {
            issuer: config.issuer.clone(),
            subject: subject.clone(),
            issued_at: claims.get("iat").and_then(Value::as_u64),
            expires_at: claims.get("exp").and_then(Value::as_u64).unwrap_or(0),
            claims: Arc::new(claims),
        };
        Ok(Caller::new(subject, &config.scheme, scopes).with_detail(identity))
    }

    /// What the document says about this issuer: an entry of the scheme's
    /// `x-issuers` list.
    pub fn issuer_doc(&self) -> Value {
        let config = &self.inner.config;
        let mut doc = json!({
            "issuer": config.issuer,
            "audience": config.audience,
            "algorithms": ALGORITHMS,
            "scopes_claim": config.scopes_claim,
        });
        if let (Some(url), Some(map)) = (config.jwks.url(), doc.as_object_mut()) {
            map.insert("jwks_uri".to_owned(), json!(url));
        }
        doc
    }

    /// This issuer's scheme, for the document: a JWT bearer scheme whose
    /// `x-issuers` names the issuer, its audience and its JWKS URL.
    pub fn scheme_doc(&self) -> Scheme {
        let config = &self.inner.config;
        BEARER
            .named(config.scheme.clone())
            .describe(format!(
                "A JWT access token of the identity provider `{}` (audience `{}`, asymmetric \
                 algorithms only, keys from its JWKS), sent as `Authorization: Bearer <token>` \
                 (or, for a WebSocket upgrade, as the `access_token` query parameter). \
                 Scopes come from its `{}` claim.",
                config.issuer, config.audience, config.scopes_claim
            ))
            .with_extension("x-issuers", json!([self.issuer_doc()]))
    }
}

#[async_trait]
impl SecurityFunction for OidcSecurity {
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        let Some(token) = credentials.bearer_token()? else {
            return Ok(None);
        };
        Ok(Some(Arc::new(self.verify(token).await?)))
    }

    fn schemes(&self) -> Vec<Scheme> {
        vec![self.scheme_doc()]
    }
}
