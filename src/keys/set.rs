//! The key set: which key signs, which older keys still verify, and until
//! when.
//!
//! Every key has a `kid` (put into the header of every token it signs) and
//! one algorithm; a token is verified only with the key its `kid` names and
//! only with that key's algorithm (RFC 8725 §3.1). The newest key that is
//! not retired signs. `rotate` retires it (stamps `retired` with the time)
//! and adds a new one; a retired key keeps verifying until the longest-lived
//! token it can have signed has expired — `retired + token TTL +`
//! [`RELOAD_SLACK`] — and then drops out (it is removed from the file at the
//! next rotation or start).
//!
//! Key material is generated with the RustCrypto crates jsonwebtoken's
//! `rust_crypto` backend itself uses (`ed25519-dalek`, `p256`, `rsa`), and
//! stored in the form that backend reads: PKCS#8 DER for EdDSA and ES256,
//! PKCS#1 DER for RS256, the raw secret for HS256.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How long after a rotation the previous signing key may still be signing
/// on a running server that has not yet re-read the key file (it checks
/// every second): its tokens can expire this much later than `retired +
/// TTL`, so it verifies this much longer.
pub const RELOAD_SLACK: Duration = Duration::from_secs(5);

/// RSA modulus size of generated RS256 keys.
pub const RSA_BITS: usize = 2048;

/// The algorithms a key may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeyAlg {
    /// HMAC with SHA-256: one shared secret signs and verifies. Not
    /// published in the JWKS.
    HS256,
    /// Ed25519 signatures.
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    RS256,
}

impl KeyAlg {
    /// Every algorithm, in the order the CLI lists them.
    pub const ALL: [KeyAlg; 4] = [KeyAlg::HS256, KeyAlg::EdDSA, KeyAlg::ES256, KeyAlg::RS256];

    /// The JWT `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::HS256 => "HS256",
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
            KeyAlg::RS256 => "RS256",
        }
    }

    /// jsonwebtoken's name for it.
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyAlg::HS256 => Algorithm::HS256,
            KeyAlg::EdDSA => Algorithm::EdDSA,
            KeyAlg::ES256 => Algorithm::ES256,
            KeyAlg::RS256 => Algorithm::RS256,
        }
    }

    /// Whether the key has a public half (and so appears in the JWKS).
    pub fn is_asymmetric(self) -> bool {
        self != KeyAlg::HS256
    }
}

impl std::fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An algorithm name that is not one of [`KeyAlg`].
#[derive(Debug, thiserror::Error)]
#[error("unknown JWT algorithm {0:?}: use HS256, EdDSA, ES256 or RS256")]
pub struct UnknownAlg(String);

impl std::str::FromStr for KeyAlg {
    type Err = UnknownAlg;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyAlg::ALL
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownAlg(s.to_owned()))
    }
}

/// Errors of generating or decoding key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Key generation failed.
    #[error("cannot generate a {0} key: {1}")]
    Generate(KeyAlg, String),
    /// A stored key's material is not valid base64url.
    #[error("key {0}: its material is not valid base64url")]
    Encoding(String),
    /// Two keys share a `kid`.
    #[error("two keys have the kid {0:?}")]
    DuplicateKid(String),
    /// No key of the set may sign.
    #[error("the key set has no signing key (every key is retired): run `rpcguard key rotate`")]
    NoSigningKey,
}

/// One key of the set, as stored in `keys.json`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Key id, put into the header of every token this key signs.
    pub kid: String,
    /// The key's only algorithm.
    pub alg: KeyAlg,
    /// Unix seconds the key was made (or imported).
    pub created: u64,
    /// Unix seconds the key stopped (or stops) signing; `None` while it
    /// signs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<u64>,
    /// Unix seconds from which the key signs, when that is after it was
    /// made: a key rotated in on PostgreSQL is published first, so that
    /// every instance verifies its tokens before any instance signs with
    /// it (see [`KeySet::rotate_at`]). `None`: from its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signs_from: Option<u64>,
    /// Whether this key also verifies tokens without a `kid`: the key
    /// imported from `secret.key` (or given in `RPCGUARD_SECRET` /
    /// `--secret-file`), which signed tokens before key sets existed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub legacy: bool,
    /// The private material, base64url without padding: the HMAC secret
    /// (HS256), PKCS#8 DER (EdDSA, ES256) or PKCS#1 DER (RS256).
    material: String,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created", &self.created)
            .field("retired", &self.retired)
            .field("signs_from", &self.signs_from)
            .field("legacy", &self.legacy)
            .field("material", &"<redacted>")
            .finish()
    }
}

impl StoredKey {
    /// Generates a new key of `alg`, made at `now`.
    pub fn generate(alg: KeyAlg, now: u64) -> Result<Self, KeyError> {
        let material = generate_material(alg)?;
        Ok(StoredKey {
            kid: format!(
                "{}-{}",
                alg.as_str().to_ascii_lowercase(),
                hex::encode(rand::random::<[u8; 6]>())
            ),
            alg,
            created: now,
            retired: None,
            signs_from: None,
            legacy: false,
            material: URL_SAFE_NO_PAD.encode(material),
        })
    }

    /// An HS256 key holding `secret` as it was used before key sets (it
    /// also verifies tokens without a `kid`). Its `kid` is derived from the
    /// secret (`hs256-` and 48 bits of its SHA-256), so every instance given
    /// the same secret names it alike.
    pub fn legacy_hs256(secret: &[u8], now: u64) -> Self {
        let digest = Sha256::digest(secret);
        StoredKey {
            kid: format!("hs256-{}", hex::encode(&digest[..6])),
            alg: KeyAlg::HS256,
            created: now,
            retired: None,
            signs_from: None,
            legacy: true,
            material: URL_SAFE_NO_PAD.encode(secret),
        }
    }

    /// A key read back from where it is stored (the database), its
    /// material in the stored form (base64url, see the field's docs).
    #[cfg(feature = "postgres")]
    pub(crate) fn from_stored(
        kid: String,
        alg: KeyAlg,
        (created, retired, signs_from): (u64, Option<u64>, Option<u64>),
        legacy: bool,
        material: String,
    ) -> Self {
        StoredKey {
            kid,
            alg,
            created,
            retired,
            signs_from,
            legacy,
            material,
        }
    }

    /// The material in its stored form (base64url), for writing it back.
    #[cfg(feature = "postgres")]
    pub(crate) fn stored_material(&self) -> &str {
        &self.material
    }

    /// The private material (see the field's docs for its form).
    pub fn material(&self) -> Result<Vec<u8>, KeyError> {
        URL_SAFE_NO_PAD
            .decode(&self.material)
            .map_err(|_| KeyError::Encoding(self.kid.clone()))
    }

    /// The last second a token signed by this key is accepted, when the set
    /// runs with tokens living `ttl`; `None` while the key signs.
    pub fn verifies_until(&self, ttl: Duration) -> Option<u64> {
        self.retired
            .map(|retired| retired + ttl.as_secs() + RELOAD_SLACK.as_secs())
    }

    /// Whether the key signs at `now` (it is past its `signs_from` and
    /// not yet retired).
    pub fn signs_at(&self, now: u64) -> bool {
        self.signs_from.is_none_or(|from| from <= now)
            && self.retired.is_none_or(|retired| now < retired)
    }

    /// Where the key stands at `now`.
    pub fn state(&self, now: u64, ttl: Duration) -> KeyState {
        if let Some(from) = self.signs_from.filter(|from| now < *from) {
            return KeyState::Next { from };
        }
        match self.verifies_until(ttl) {
            None => KeyState::Signing,
            Some(until) if now <= until => KeyState::Verifying { until },
            Some(until) => KeyState::Expired { since: until },
        }
    }
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// Published: verifies already, signs from `from` (Unix seconds).
    Next {
        /// When it starts signing.
        from: u64,
    },
    /// Signs new tokens (and verifies them).
    Signing,
    /// Retired: verifies the tokens it signed until `until` (Unix seconds).
    Verifying {
        /// The last second its tokens are accepted.
        until: u64,
    },
    /// Retired and past its grace: verifies nothing; removed from the file
    /// at the next rotation or start.
    Expired {
        /// When its grace ended.
        since: u64,
    },
}

impl std::fmt::Display for KeyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyState::Next { from } => write!(f, "next, signs from {}", rfc3339(*from)),
            KeyState::Signing => f.write_str("signing"),
            KeyState::Verifying { until } => write!(f, "verifying until {}", rfc3339(*until)),
            KeyState::Expired { since } => write!(f, "expired since {}", rfc3339(*since)),
        }
    }
}

fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// A key set: the content of `keys.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeySet {
    /// Format version (1).
    pub version: u32,
    /// The keys, oldest first.
    pub keys: Vec<StoredKey>,
}

impl KeySet {
    /// A set of one new key of `alg`.
    pub fn generate(alg: KeyAlg, now: u64) -> Result<Self, KeyError> {
        Ok(KeySet::of(vec![StoredKey::generate(alg, now)?]))
    }

    /// A set of these keys.
    pub fn of(keys: Vec<StoredKey>) -> Self {
        KeySet { version: 1, keys }
    }

    /// The key that signs, or will once a pending switch is done: the
    /// newest one not retired.
    pub fn signing(&self) -> Result<&StoredKey, KeyError> {
        self.keys
            .iter()
            .rev()
            .find(|key| key.retired.is_none())
            .ok_or(KeyError::NoSigningKey)
    }

    /// Checks what loading relies on: a signing key, distinct `kid`s.
    pub fn check(&self) -> Result<(), KeyError> {
        self.signing()?;
        let mut seen = std::collections::HashSet::new();
        for key in &self.keys {
            if !seen.insert(key.kid.as_str()) {
                return Err(KeyError::DuplicateKid(key.kid.clone()));
            }
        }
        Ok(())
    }

    /// Retires every signing key at `now` and adds a new key of `alg`,
    /// which signs from now on; returns it.
    pub fn rotate(&mut self, alg: KeyAlg, now: u64) -> Result<&StoredKey, KeyError> {
        self.rotate_at(alg, now, now)
    }

    /// Adds a new key of `alg`, made at `now`, that signs from `switch`
    /// (not before `now`), and retires every signing key at `switch`:
    /// until then the old key signs and the new one only verifies, so
    /// that every holder of the set can learn the new key before any
    /// token of it exists. Returns the new key.
    pub fn rotate_at(
        &mut self,
        alg: KeyAlg,
        now: u64,
        switch: u64,
    ) -> Result<&StoredKey, KeyError> {
        let switch = switch.max(now);
        let mut new = StoredKey::generate(alg, now)?;
        new.signs_from = (switch > now).then_some(switch);
        for key in &mut self.keys {
            key.retired.get_or_insert(switch);
        }
        self.keys.push(new);
        self.signing()
    }

    /// What a start with `--jwt-alg` (`alg`, when given) does to the set:
    /// rotates to a new key of `alg` if the signing key has another
    /// algorithm (one that signs `publish` later, see
    /// [`KeySet::rotate_at`]), then removes the keys whose grace (for
    /// tokens living `ttl`) has ended. Whether the set changed.
    pub fn settle(
        &mut self,
        alg: Option<KeyAlg>,
        now: u64,
        ttl: Duration,
        publish: Duration,
    ) -> Result<bool, KeyError> {
        let mut changed = false;
        if let Some(alg) = alg {
            if self.signing()?.alg != alg {
                let switch = now + publish.as_secs();
                let kid = self.rotate_at(alg, now, switch)?.kid.clone();
                tracing::info!(%kid, %alg, "--jwt-alg differs from the signing key's: rotated to a new key");
                changed = true;
            }
        }
        Ok(self.prune(now, ttl) || changed)
    }

    /// Removes the keys whose grace ended before `now`; whether any was.
    pub fn prune(&mut self, now: u64, ttl: Duration) -> bool {
        let before = self.keys.len();
        self.keys
            .retain(|key| !matches!(key.state(now, ttl), KeyState::Expired { .. }));
        self.keys.len() != before
    }
}

fn generate_material(alg: KeyAlg) -> Result<Vec<u8>, KeyError> {
    let failed = |e: &dyn std::fmt::Display| KeyError::Generate(alg, e.to_string());
    match alg {
        KeyAlg::HS256 => Ok(rand::random::<[u8; 32]>().to_vec()),
        KeyAlg::EdDSA => {
            use ed25519_dalek::pkcs8::{EncodePrivateKey, KeypairBytes};
            // PKCS#8 v1 (the seed alone, 48 bytes): the form jsonwebtoken
            // derives the public key from.
            let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
            let pair = KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            };
            Ok(pair
                .to_pkcs8_der()
                .map_err(|e| failed(&e))?
                .as_bytes()
                .to_vec())
        }
        KeyAlg::ES256 => {
            use p256::pkcs8::EncodePrivateKey;
            // A random 256-bit string is a valid scalar unless it is zero
            // or at least the group order (probability about 2^-32).
            let key = (0..8)
                .find_map(|_| p256::ecdsa::SigningKey::from_slice(&rand::random::<[u8; 32]>()).ok())
                .ok_or_else(|| failed(&"no valid scalar drawn"))?;
            Ok(key
                .to_pkcs8_der()
                .map_err(|e| failed(&e))?
                .as_bytes()
                .to_vec())
        }
        KeyAlg::RS256 => {
            use rsa::pkcs1::EncodeRsaPrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                .map_err(|e| failed(&e))?;
            Ok(key
                .to_pkcs1_der()
                .map_err(|e| failed(&e))?
                .as_bytes()
                .to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    #[test]
    fn algorithms_parse_case_insensitively() {
        for alg in KeyAlg::ALL {
            assert_eq!(alg.as_str().parse::<KeyAlg>().expect("parse"), alg);
            assert_eq!(
                alg.as_str()
                    .to_lowercase()
                    .parse::<KeyAlg>()
                    .expect("parse"),
                alg
            );
        }
        assert!("none".parse::<KeyAlg>().is_err());
        assert!("HS512".parse::<KeyAlg>().is_err());
    }

    #[test]
    fn rotation_retires_the_signing_key_and_grace_ends() {
        let mut set = KeySet::generate(KeyAlg::HS256, 1000).expect("set");
        let first = set.signing().expect("signing").kid.clone();
        let second = set.rotate(KeyAlg::EdDSA, 2000).expect("rotate").kid.clone();
        assert_ne!(first, second);
        assert!(second.starts_with("eddsa-"));
        set.check().expect("valid");
        let old = &set.keys[0];
        assert_eq!(old.retired, Some(2000));
        let until = 2000 + 60 + RELOAD_SLACK.as_secs();
        assert_eq!(old.state(2001, TTL), KeyState::Verifying { until });
        assert_eq!(
            old.state(until + 1, TTL),
            KeyState::Expired { since: until }
        );
        assert!(!set.prune(until, TTL));
        assert!(set.prune(until + 1, TTL));
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.signing().expect("signing").kid, second);
    }

    #[test]
    fn a_published_key_verifies_before_it_signs() {
        let mut set = KeySet::generate(KeyAlg::HS256, 1000).expect("set");
        let new = set
            .rotate_at(KeyAlg::ES256, 1000, 1003)
            .expect("rotate")
            .clone();
        let old = &set.keys[0];
        assert_eq!(new.state(1000, TTL), KeyState::Next { from: 1003 });
        assert!(old.signs_at(1002) && !new.signs_at(1002));
        assert!(!old.signs_at(1003) && new.signs_at(1003));
        assert_eq!(new.state(1003, TTL), KeyState::Signing);
        let until = 1003 + 60 + RELOAD_SLACK.as_secs();
        assert_eq!(old.state(1001, TTL), KeyState::Verifying { until });
    }

    #[test]
    fn legacy_kid_is_derived_from_the_secret() {
        let a = StoredKey::legacy_hs256(b"0123456789abcdef0123456789abcdef", 1);
        let b = StoredKey::legacy_hs256(b"0123456789abcdef0123456789abcdef", 2);
        assert_eq!(a.kid, b.kid);
        assert!(a.legacy && a.kid.starts_with("hs256-"));
        assert_eq!(
            a.material().expect("material"),
            b"0123456789abcdef0123456789abcdef"
        );
    }

    #[test]
    fn debug_never_shows_material() {
        let key = StoredKey::generate(KeyAlg::ES256, 1).expect("key");
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.material), "{shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn a_set_without_signing_key_or_with_twin_kids_is_refused() {
        let mut set = KeySet::generate(KeyAlg::HS256, 1).expect("set");
        set.keys[0].retired = Some(2);
        assert!(matches!(set.check(), Err(KeyError::NoSigningKey)));
        let mut set = KeySet::generate(KeyAlg::HS256, 1).expect("set");
        let twin = set.keys[0].clone();
        set.keys.insert(
            0,
            StoredKey {
                retired: Some(1),
                ..twin
            },
        );
        assert!(matches!(set.check(), Err(KeyError::DuplicateKid(_))));
    }
}
