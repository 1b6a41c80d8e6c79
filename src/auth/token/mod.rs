//! Access tokens: JWT signed by the key set ([`crate::keys`]), with pinned
//! verification rules.
//!
//! Claims are `sub uid sid iat exp iss aud jti`, and `scope` (the scopes
//! the token may use when issued, for services that verify it with the JWKS
//! alone; never read here) when it has any. Every token's header carries
//! the `kid` of the key that signed it. Verification takes the key from the
//! local key set by that `kid` (a token without `kid` only from the `legacy`
//! key, the one that signed tokens before key sets) and accepts only that
//! key's own algorithm: `alg: none`, an algorithm other than the key's (an
//! HS256 token "signed" with an asymmetric key's public half, for one), an
//! unknown `kid` and a retired key past its grace are all `invalid_token`.
//! Header fields such as `jku`, `x5u`, `x5c` or an embedded `jwk` are
//! ignored; nothing is ever fetched. A header with a `crit` member (RFC
//! 7515 §4.1.11: extensions the recipient must understand; rpcguard
//! understands none, and never writes one) is `invalid_token`. It needs `exp`, `iss`, `aud`, `sub`,
//! `uid` and `sid`, checks `nbf` when present, and refuses an `iat` in the
//! future. Leeway is zero: a token expired by one second is expired.
//!
//! Every time is read from the keys' [`Clock`] (the system clock unless
//! [`TokenKeys::with_clock`] gives another): `iat` and `exp` of issued
//! tokens, and `exp`, `nbf` and `iat` of presented ones. So jsonwebtoken,
//! which would read the system clock, checks the signature, the claims'
//! form and that the required ones are there; the times, the issuer and
//! the audience are checked here, in jsonwebtoken's order (an expired
//! token of another issuer is `expired_token`, as it was when jsonwebtoken
//! checked them).
//!
//! `sid` names the session the token was issued in ([`crate::session`]):
//! the Bearer check refuses a token whose session has ended
//! (`revoked_token`). Tokens without one (issued before sessions existed)
//! are refused as `invalid_token`, like tokens without `uid`.
//!
//! `uid` is the account id ([`StoredUser::account_id`](crate::store::StoredUser::account_id)):
//! random, 128 bits, never reused, so a token names one account and never
//! passes for a later account of the same name. Tokens issued before `uid`
//! existed (rpcguard 0.1 before issue 16) carry none and are refused as
//! `invalid_token`: their holders sign in again, at most once and at the
//! latest when the token would have expired anyway (`--token-ttl`). Keeping
//! the old rule (issued after the account's creation, in whole seconds) for
//! them would keep the same-second hole open for as long as they live.
//!
//! A token that passed verification is remembered (by its exact text, in a
//! bounded map), so that the next call with the same token skips the base64,
//! JSON and signature work; only its `exp` is checked again. The same text
//! always verifies the same way while the key set stays the same, so this
//! changes no answer; a new key set ([`TokenKeys::replace_keys`]) forgets
//! every remembered token.

mod claims;
mod keys;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use hashlink::LruCache;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, Header, Validation};

pub use claims::Claims;
use keys::{decode_set, ActiveKeys};

use crate::clock::Clock;
use crate::front::{self, Front, Slots};
use crate::keys::{KeyAlg, KeySet, StoredKey};

use rpcguard::error::AuthFailure;

/// The smallest accepted signing key: 256 bits (RFC 7518 §3.2 for HS256).
pub const MIN_KEY_BYTES: usize = 32;
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest `scope` claim put in a token; a longer list of scopes is
/// left out of the token (rpcguard does not read it; a service verifying
/// with the JWKS alone then sees no scope).
pub const MAX_SCOPE_CLAIM_BYTES: usize = 2048;

/// Errors of token issuing and of key set-up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The signing key is shorter than [`MIN_KEY_BYTES`].
    #[error("signing key must be at least {MIN_KEY_BYTES} bytes (256 bits), got {0}")]
    KeyTooShort(usize),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    /// A key of the set cannot be used (its material does not decode as a
    /// key of its algorithm).
    #[error("key {kid} ({alg}) is unusable: {reason}")]
    BadKey {
        /// The key's id.
        kid: String,
        /// Its algorithm.
        alg: KeyAlg,
        /// Why (never the material).
        reason: String,
    },
    /// The key set has no signing key.
    #[error(transparent)]
    Keys(#[from] crate::keys::set::KeyError),
    /// The clock is before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
}

/// Signs and verifies access tokens with a key set. Keys are decoded once,
/// when the set is loaded or replaced.
#[derive(Clone)]
pub struct TokenKeys {
    verified: Arc<Mutex<LruCache<String, Remembered>>>,
    /// Per-thread copies of `verified` (see [`crate::front`]), stale once
    /// the key set is replaced.
    front: Arc<Front>,
    active: Arc<ArcSwap<ActiveKeys>>,
    template: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
    clock: Clock,
}

/// What verification reads of a token's claims: the claims, and `nbf`
/// (not kept: checked once, when the token is first verified).
#[derive(serde::Deserialize)]
struct Presented {
    #[serde(flatten)]
    claims: Claims,
    #[serde(default)]
    nbf: NotBefore,
}

/// A token's `nbf` as sent: absent, or any JSON value (`null` included,
/// which is not absent).
#[derive(Default)]
enum NotBefore {
    #[default]
    Absent,
    Given(serde_json::Value),
}

impl<'de> serde::Deserialize<'de> for NotBefore {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        serde_json::Value::deserialize(deserializer).map(NotBefore::Given)
    }
}

impl Presented {
    /// `nbf` in whole seconds, read as jsonwebtoken reads it: a whole or
    /// fractional number of seconds (rounded); anything else refuses the
    /// token.
    fn not_before(&self) -> Result<Option<u64>, AuthFailure> {
        let nbf = match &self.nbf {
            NotBefore::Absent => return Ok(None),
            NotBefore::Given(serde_json::Value::Number(nbf)) => nbf,
            NotBefore::Given(_) => return Err(AuthFailure::InvalidToken),
        };
        if let Some(whole) = nbf.as_u64() {
            return Ok(Some(whole));
        }
        match nbf.as_f64() {
            Some(secs) if secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64 => {
                Ok(Some(secs.round() as u64))
            }
            _ => Err(AuthFailure::InvalidToken),
        }
    }
}

thread_local! {
    /// This thread's copies of remembered tokens (see [`crate::front`]).
    static REMEMBERED: std::cell::RefCell<Slots<Remembered>> = std::cell::RefCell::default();
}

/// A verified token's claims and the last second its key verifies
/// (`None`: the signing key).
type Remembered = (Arc<Claims>, Option<u64>);

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("keys", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .field("clock", &self.clock)
            .finish()
    }
}

impl TokenKeys {
    /// Most verified tokens remembered (least recently used go first).
    const MAX_REMEMBERED: usize = 50_000;

    /// Default issuer and audience.
    pub const DEFAULT_ISSUER: &'static str = "rpcguard";

    /// Builds the keys from one HS256 secret of at least 256 bits (a key
    /// set of that one key, which also verifies tokens without `kid`).
    pub fn new(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, TokenError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(TokenError::KeyTooShort(secret.len()));
        }
        let set = KeySet::of(vec![StoredKey::legacy_hs256(secret, 0)]);
        Self::from_key_set(&set, issuer, audience, ttl)
    }

    /// Builds the keys from a key set: its signing key signs, and every key
    /// within its grace verifies. They read the system clock (see
    /// [`with_clock`](Self::with_clock)).
    pub fn from_key_set(
        set: &KeySet,
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, TokenError> {
        // jsonwebtoken checks the signature, the form of the claims and
        // that the required ones are there; it would check the times on
        // the system clock, so they are checked in `verify`, with the
        // issuer and the audience after them (jsonwebtoken's order).
        let mut template = Validation::new(Algorithm::HS256);
        template.leeway = 0;
        template.validate_exp = false;
        template.validate_nbf = false;
        template.validate_aud = false;
        template.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let active = decode_set(set, &template, ttl)?;
        Ok(TokenKeys {
            verified: Arc::new(Mutex::new(LruCache::new(Self::MAX_REMEMBERED))),
            front: Arc::default(),
            active: Arc::new(ArcSwap::from_pointee(active)),
            template,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
            clock: Clock::System,
        })
    }

    /// The same keys, reading the time from `clock`: the `iat` and `exp`
    /// of the tokens they issue, the expiry and `nbf` of the tokens they
    /// verify, which key signs and which keys verify. For a test, a
    /// [`ManualClock`](crate::clock::ManualClock) expires tokens without
    /// waiting. Clones made before keep the clock they had.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The clock these keys read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Puts a new key set in use (after `rpcguard key rotate`): every clone
    /// of these keys signs and verifies with it from now on, and remembered
    /// tokens are forgotten. On error the keys in use stay.
    pub fn replace_keys(&self, set: &KeySet) -> Result<(), TokenError> {
        let active = Arc::new(decode_set(set, &self.template, self.ttl)?);
        // Swapped whole, with no lock to poison: a rotation reported done
        // is done. The memory of verified tokens is one assignment too, so
        // it is cleared through a poisoned lock.
        self.active.store(active);
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
        self.front.invalidate();
        Ok(())
    }

    /// Whether this is the last holder of these keys (a watcher stops then).
    pub(crate) fn unused_elsewhere(&self) -> bool {
        Arc::strong_count(&self.active) == 1
    }

    fn current(&self) -> Option<Arc<ActiveKeys>> {
        Some(self.active.load_full())
    }

    /// The lifetime of issued tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The `kid` of the key that signs now.
    pub fn signing_kid(&self) -> Option<String> {
        let now = self.clock.unix_now()?;
        self.current()?.signer(now)?.header.kid.clone()
    }

    /// The public keys (RFC 7517) of the asymmetric keys that verify now,
    /// each with its `kid`, `alg` and `use: sig`. Never a private or a
    /// symmetric key: a set of HS256 keys only gives an empty set.
    pub fn jwks(&self) -> JwkSet {
        let now = self.clock.unix_now().unwrap_or(0);
        let mut keys: Vec<Jwk> = self
            .current()
            .map(|active| {
                active
                    .by_kid
                    .values()
                    .filter(|key| key.until.is_none_or(|until| now <= until))
                    .filter_map(|key| key.public.clone())
                    .collect()
            })
            .unwrap_or_default();
        keys.sort_by(|a, b| a.common.key_id.cmp(&b.common.key_id));
        JwkSet { keys }
    }

    /// Issues a token for `subject`, the account whose id is `account_id`,
    /// in the session `session_id`, valid from now for the configured TTL,
    /// signed by the signing key (its `kid` in the header), without a
    /// `scope` claim.
    pub fn issue(
        &self,
        subject: &str,
        account_id: &str,
        session_id: &str,
    ) -> Result<(String, Claims), TokenError> {
        self.issue_with_scope(subject, account_id, session_id, "")
    }

    /// [`issue`](Self::issue), with `scope` (space-separated) as the
    /// token's `scope` claim: what a service verifying it with the JWKS
    /// alone takes as its scopes.
    pub fn issue_with_scope(
        &self,
        subject: &str,
        account_id: &str,
        session_id: &str,
        scope: &str,
    ) -> Result<(String, Claims), TokenError> {
        let now = self.clock.unix_now().ok_or(TokenError::Clock)?;
        let claims = Claims {
            sub: subject.to_owned(),
            uid: account_id.to_owned(),
            sid: session_id.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
            // A token must stay well within MAX_TOKEN_BYTES: a longer list
            // is left out (a service reading it then sees no scope: it
            // fails closed).
            scope: if scope.len() <= MAX_SCOPE_CLAIM_BYTES {
                scope.to_owned()
            } else {
                String::new()
            },
        };
        let active = self
            .current()
            .ok_or(TokenError::Keys(crate::keys::set::KeyError::NoSigningKey))?;
        let signer = active
            .signer(now)
            .ok_or(TokenError::Keys(crate::keys::set::KeyError::NoSigningKey))?;
        let token = jsonwebtoken::encode(&signer.header, &claims, &signer.key)?;
        Ok((token, claims))
    }

    /// Verifies a token and returns its claims, or why it is not acceptable.
    pub fn verify(&self, token: &str) -> Result<Arc<Claims>, AuthFailure> {
        if token.is_empty() {
            return Err(AuthFailure::MissingToken);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::InvalidToken);
        }
        let now = self.clock.unix_now().ok_or(AuthFailure::InvalidToken)?;
        if let Some((claims, until)) = self.remembered(token) {
            return if now > claims.exp {
                Err(AuthFailure::ExpiredToken)
            } else if until.is_some_and(|until| now > until) {
                Err(AuthFailure::InvalidToken)
            } else {
                Ok(claims)
            };
        }
        // The header, decoded once. No JOSE extension is understood here
        // (RFC 7515 §4.1.11): a `crit` member refuses the token (a scan of
        // the bytes, only for a token not remembered). `alg: none` and
        // unknown algorithms fail to parse.
        let header_json =
            rpcguard::security::jose::header_json(token).ok_or(AuthFailure::InvalidToken)?;
        if !rpcguard::security::jose::crit_free_json(&header_json) {
            return Err(AuthFailure::InvalidToken);
        }
        let header: Header =
            serde_json::from_slice(&header_json).map_err(|_| AuthFailure::InvalidToken)?;
        let active = self.current().ok_or(AuthFailure::InvalidToken)?;
        let kid = match header.kid.as_deref() {
            Some(kid) => Some(kid),
            None => active.legacy.as_deref(),
        };
        let key = kid
            .and_then(|kid| active.by_kid.get(kid))
            .ok_or(AuthFailure::InvalidToken)?;
        if header.alg != key.alg {
            return Err(AuthFailure::InvalidToken);
        }
        let presented = jsonwebtoken::decode::<Presented>(token, &key.decoding, &key.validation)
            .map_err(|_| AuthFailure::InvalidToken)?
            .claims;
        // The times by our clock, then issuer and audience (jsonwebtoken's
        // order), with no leeway: expired once `now` is past `exp`.
        if now > presented.claims.exp {
            return Err(AuthFailure::ExpiredToken);
        }
        if presented.not_before()?.is_some_and(|nbf| nbf > now)
            || presented.claims.iss != self.issuer
            || presented.claims.aud != self.audience
        {
            return Err(AuthFailure::InvalidToken);
        }
        let claims = presented.claims;
        // `uid`, `sid` and the key's grace are checked here, after expiry,
        // so that an expired token (of an older version, or of a retired
        // key) answers `expired_token` whether or not it is remembered. A
        // retired key past its grace verifies nothing else.
        if claims.iat > now
            || claims.uid.is_empty()
            || claims.sid.is_empty()
            || key.until.is_some_and(|until| now > until)
        {
            return Err(AuthFailure::InvalidToken);
        }
        let claims = Arc::new(claims);
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(token.to_owned(), (claims.clone(), key.until));
        }
        Ok(claims)
    }

    fn remembered(&self, token: &str) -> Option<Remembered> {
        let shared = || self.verified.lock().ok()?.get(token).cloned();
        front::through(
            &REMEMBERED,
            self.front.generation(),
            token,
            shared,
            |(claims, until)| (Arc::new(Claims::clone(claims)), *until),
        )
    }
}

#[cfg(test)]
mod tests;
