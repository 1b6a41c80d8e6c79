//! Access tokens: JWT, HS256, with pinned verification rules.
//!
//! Claims are `sub uid sid iat exp iss aud jti`. Verification accepts HS256 only
//! (`alg: none`, HS384/512 and every asymmetric algorithm are refused), needs
//! `exp`, `iss`, `aud`, `sub` and `uid`, checks `nbf` when present, and
//! refuses an `iat` in the future. Leeway is zero: a token expired by one second is
//! expired. Header fields such as `kid`, `jku` or `x5u` are ignored; nothing
//! is ever fetched.
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
//! JSON and HMAC work; only its `exp` is checked again. The same text always
//! verifies the same way, so this changes no answer.

use hashlink::LruCache;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use rpcguard::error::AuthFailure;

/// The smallest accepted signing key: 256 bits (RFC 7518 §3.2 for HS256).
pub const MIN_KEY_BYTES: usize = 32;
/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Errors of token issuing and of key set-up.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The signing key is shorter than [`MIN_KEY_BYTES`].
    #[error("signing key must be at least {MIN_KEY_BYTES} bytes (256 bits), got {0}")]
    KeyTooShort(usize),
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
    /// The system clock is before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
}

/// The claims of an rpcguard access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// The account id the token was issued to (32 hex digits). Absent
    /// (empty) only in tokens of older versions, which
    /// [`TokenKeys::verify`] refuses.
    #[serde(default)]
    pub uid: String,
    /// The session the token was issued in (32 hex digits). Absent (empty)
    /// only in tokens of older versions, which [`TokenKeys::verify`]
    /// refuses.
    #[serde(default)]
    pub sid: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Unique token id.
    pub jti: String,
}

/// Signs and verifies access tokens. Keys are decoded once, here.
#[derive(Clone)]
pub struct TokenKeys {
    verified: Arc<Mutex<LruCache<String, Arc<Claims>>>>,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("key", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TokenKeys {
    /// Most verified tokens remembered (least recently used go first).
    const MAX_REMEMBERED: usize = 50_000;

    /// Default issuer and audience.
    pub const DEFAULT_ISSUER: &'static str = "rpcguard";

    /// Builds the keys from a secret of at least 256 bits.
    pub fn new(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Self, TokenError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(TokenError::KeyTooShort(secret.len()));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        Ok(TokenKeys {
            verified: Arc::new(Mutex::new(LruCache::new(Self::MAX_REMEMBERED))),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl,
        })
    }

    /// The lifetime of issued tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `subject`, the account whose id is `account_id`,
    /// in the session `session_id`, valid from now for the configured TTL.
    pub fn issue(
        &self,
        subject: &str,
        account_id: &str,
        session_id: &str,
    ) -> Result<(String, Claims), TokenError> {
        let now = unix_now().ok_or(TokenError::Clock)?;
        let claims = Claims {
            sub: subject.to_owned(),
            uid: account_id.to_owned(),
            sid: session_id.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs(),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
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
        let now = unix_now().ok_or(AuthFailure::InvalidToken)?;
        if let Some(claims) = self.remembered(token) {
            return if now > claims.exp {
                Err(AuthFailure::ExpiredToken)
            } else {
                Ok(claims)
            };
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthFailure::ExpiredToken,
                _ => AuthFailure::InvalidToken,
            })?;
        // `uid` and `sid` are checked here, after the library's checks, so that an
        // expired token of an older version still answers `expired_token`.
        if data.claims.iat > now || data.claims.uid.is_empty() || data.claims.sid.is_empty() {
            return Err(AuthFailure::InvalidToken);
        }
        let claims = Arc::new(data.claims);
        if let Ok(mut verified) = self.verified.lock() {
            verified.insert(token.to_owned(), claims.clone());
        }
        Ok(claims)
    }

    fn remembered(&self, token: &str) -> Option<Arc<Claims>> {
        self.verified.lock().ok()?.get(token).cloned()
    }
}

/// Seconds since the Unix epoch, `None` if the clock is before it.
pub fn unix_now() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0123456789abcdef0123456789abcdef";
    const SID: &str = "fedcba9876543210fedcba9876543210";

    fn keys() -> TokenKeys {
        TokenKeys::new(&[7u8; 32], "rpcguard", "rpcguard", Duration::from_secs(60)).expect("keys")
    }

    #[test]
    fn issued_token_verifies() {
        let keys = keys();
        let (token, claims) = keys.issue("alice", UID, SID).expect("issue");
        assert_eq!(keys.verify(&token), Ok(Arc::new(claims)));
    }

    #[test]
    fn short_key_is_refused() {
        let err = TokenKeys::new(&[1u8; 31], "i", "a", Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, TokenError::KeyTooShort(31)));
    }

    #[test]
    fn other_key_is_invalid() {
        let (token, _) = keys().issue("alice", UID, SID).expect("issue");
        let other = TokenKeys::new(&[8u8; 32], "rpcguard", "rpcguard", Duration::from_secs(60))
            .expect("keys");
        assert_eq!(other.verify(&token), Err(AuthFailure::InvalidToken));
    }

    #[test]
    fn expired_token_is_expired() {
        let keys =
            TokenKeys::new(&[7u8; 32], "rpcguard", "rpcguard", Duration::ZERO).expect("keys");
        let (token, claims) = keys.issue("alice", UID, SID).expect("issue");
        // exp == iat == now; wait until now > exp.
        while unix_now().expect("clock") <= claims.exp {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(keys.verify(&token), Err(AuthFailure::ExpiredToken));
    }

    #[test]
    fn token_names_the_account_id() {
        let keys = keys();
        let (token, claims) = keys.issue("alice", UID, SID).expect("issue");
        assert_eq!(claims.uid, UID);
        assert_eq!(keys.verify(&token).expect("valid").uid, UID);
        let (other, _) = keys.issue("alice", "another-account", SID).expect("issue");
        assert_eq!(keys.verify(&other).expect("valid").uid, "another-account");
    }

    #[test]
    fn token_without_account_id_is_invalid() {
        let keys = keys();
        let now = unix_now().expect("clock");
        let no_sid = serde_json::json!({
            "sub": "alice", "uid": UID, "iat": now, "exp": now + 60,
            "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
        });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &no_sid,
            &EncodingKey::from_secret(&[7u8; 32]),
        )
        .expect("encode");
        assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken));
        let legacy = serde_json::json!({
            "sub": "alice", "sid": SID, "iat": now, "exp": now + 60,
            "iss": "rpcguard", "aud": "rpcguard", "jti": "x"
        });
        let key = EncodingKey::from_secret(&[7u8; 32]);
        let header = Header::new(Algorithm::HS256);
        let token = jsonwebtoken::encode(&header, &legacy, &key).expect("encode");
        assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken));
        let mut empty = legacy.clone();
        empty["uid"] = serde_json::json!("");
        let token = jsonwebtoken::encode(&header, &empty, &key).expect("encode");
        assert_eq!(keys.verify(&token), Err(AuthFailure::InvalidToken));
        // Expired stays expired, with or without `uid`.
        let mut expired = legacy;
        expired["iat"] = serde_json::json!(now - 60);
        expired["exp"] = serde_json::json!(now - 1);
        let token = jsonwebtoken::encode(&header, &expired, &key).expect("encode");
        assert_eq!(keys.verify(&token), Err(AuthFailure::ExpiredToken));
    }
}
