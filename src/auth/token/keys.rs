//! The key set in use, decoded once: the keys that sign (each from its
//! time), the keys that verify by `kid` (each until its time), and the
//! decoding of a stored set.
//!
//! Decoding reads no clock: every key of the set is decoded with its times,
//! and which key signs or verifies is decided at each use, by the clock of
//! the [`TokenKeys`](super::TokenKeys) (so a set loaded once answers right
//! however far that clock moves). Keys past their grace still decode, and
//! verify nothing; they leave the set at the next rotation or start.

use std::collections::HashMap;
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};

use super::{TokenError, MIN_KEY_BYTES};
use crate::keys::{KeyAlg, KeySet, StoredKey};

/// The decoded key set in use.
pub(super) struct ActiveKeys {
    /// The keys that sign now or will (a key published ahead of its
    /// switch, and the one it replaces until then), oldest first.
    pub(super) signers: Vec<Signer>,
    pub(super) by_kid: HashMap<String, VerifyingKey>,
    /// The `kid` of the key that verifies tokens without one.
    pub(super) legacy: Option<String>,
}

/// A key that signs from `from` until `until` (Unix seconds).
pub(super) struct Signer {
    pub(super) from: u64,
    pub(super) until: Option<u64>,
    pub(super) header: Header,
    pub(super) key: EncodingKey,
}

impl ActiveKeys {
    /// The key that signs at `now`: the newest whose time it is (if, by
    /// the clock, none's is: the newest not retired at `now`, else the
    /// newest of all).
    pub(super) fn signer(&self, now: u64) -> Option<&Signer> {
        let unretired = |s: &&Signer| s.until.is_none_or(|until| now < until);
        self.signers
            .iter()
            .rev()
            .find(|s| s.from <= now && unretired(s))
            .or_else(|| self.signers.iter().rev().find(unretired))
            .or_else(|| self.signers.last())
    }
}

pub(super) struct VerifyingKey {
    pub(super) alg: Algorithm,
    pub(super) decoding: DecodingKey,
    pub(super) validation: Validation,
    /// The last second its tokens are accepted (retired keys).
    pub(super) until: Option<u64>,
    /// The public key, for asymmetric keys.
    pub(super) public: Option<Jwk>,
}

/// Decodes every key of `set`, each with the times it signs and verifies
/// (for tokens living `ttl`).
pub(super) fn decode_set(
    set: &KeySet,
    template: &Validation,
    ttl: Duration,
) -> Result<ActiveKeys, TokenError> {
    set.signing()?;
    let mut signers = Vec::new();
    let mut by_kid = HashMap::new();
    let mut legacy = None;
    for stored in &set.keys {
        // Retired keys verify the tokens they signed until their grace
        // ends; the others without end.
        let until = stored.verifies_until(ttl);
        let (encoding, decoding, public) = decode_key(stored)?;
        let mut validation = template.clone();
        validation.algorithms = vec![stored.alg.algorithm()];
        if stored.legacy {
            legacy = Some(stored.kid.clone());
        }
        // Every key signs in its time: from `signs_from` until retired.
        let mut header = Header::new(stored.alg.algorithm());
        header.kid = Some(stored.kid.clone());
        signers.push(Signer {
            from: stored.signs_from.unwrap_or(0),
            until: stored.retired,
            header,
            key: encoding,
        });
        by_kid.insert(
            stored.kid.clone(),
            VerifyingKey {
                alg: stored.alg.algorithm(),
                decoding,
                validation,
                until,
                public,
            },
        );
    }
    if signers.is_empty() {
        return Err(TokenError::Keys(crate::keys::set::KeyError::NoSigningKey));
    }
    Ok(ActiveKeys {
        signers,
        by_kid,
        legacy,
    })
}

/// A stored key's signing and verifying halves, and its public JWK when it
/// has one (the verifying key is made from that JWK, so what the JWKS
/// publishes is exactly what verifies here).
pub(super) fn decode_key(
    stored: &StoredKey,
) -> Result<(EncodingKey, DecodingKey, Option<Jwk>), TokenError> {
    let bad = |reason: String| TokenError::BadKey {
        kid: stored.kid.clone(),
        alg: stored.alg,
        reason,
    };
    let material = stored.material().map_err(|e| bad(e.to_string()))?;
    let encoding = match stored.alg {
        KeyAlg::HS256 => {
            if material.len() < MIN_KEY_BYTES {
                return Err(bad(format!("shorter than {MIN_KEY_BYTES} bytes")));
            }
            let decoding = DecodingKey::from_secret(&material);
            return Ok((EncodingKey::from_secret(&material), decoding, None));
        }
        KeyAlg::EdDSA => EncodingKey::from_ed_der(&material),
        KeyAlg::ES256 => EncodingKey::from_ec_der(&material),
        KeyAlg::RS256 => EncodingKey::from_rsa_der(&material),
    };
    let mut jwk = Jwk::from_encoding_key(&encoding, stored.alg.algorithm())
        .map_err(|e| bad(format!("{:?}", e.kind())))?;
    jwk.common.key_id = Some(stored.kid.clone());
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| bad(format!("{:?}", e.kind())))?;
    Ok((encoding, decoding, Some(jwk)))
}
