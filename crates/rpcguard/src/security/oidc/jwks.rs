//! The identity provider's public keys (its JWKS, RFC 7517): where they
//! come from, which of them are used, and when they are fetched again.
//!
//! - **Which keys.** A key is used only when it has a `kid`, is meant for
//!   signatures (`use` absent or `sig`, `key_ops` absent or with `verify`)
//!   and is asymmetric: RSA (`RS256`, `RS384`, `RS512`, `PS256`, `PS384`,
//!   `PS512`; 2048 bits at least), EC P-256 (`ES256`), EC P-384 (`ES384`)
//!   or Ed25519 (`EdDSA`, also when its `alg` is RFC 9864's `Ed25519`). The
//!   key's own `alg` (or, without one, its type and curve: RSA → `RS256`)
//!   is the one algorithm it verifies. Symmetric
//!   (`oct`) keys, encryption keys and anything unknown are skipped (and
//!   logged at debug level), never used: a symmetric key in a public set
//!   would let anyone who read the set sign tokens.
//! - **When fetched.** At start; again when a token names a `kid` the set
//!   does not have, at most once per cooldown (concurrent misses wait for
//!   the one fetch in flight and share its result), so a flood of made-up
//!   `kid`s costs one fetch per cooldown; and in the background every
//!   `refresh_every`, so that a key the provider withdrew stops verifying.
//! - **When it fails** (provider down, an answer that is not a JWKS, a file
//!   that cannot be read): the last good set stays in use and the failure
//!   is logged as a warning.
//!
//! Fetches are asynchronous (the HTTP client, or the file read on tokio's
//! blocking pool): they never hold up a worker thread. Only the URL or file
//! the configuration names is ever read: nothing a token says (`jku`,
//! `x5u`, an embedded `jwk`) is fetched or used.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations};
use jsonwebtoken::jwk::{PublicKeyUse, RSAKeyParameters};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// Largest JWKS document read (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Smallest RSA modulus accepted, in bytes (2048 bits).
const MIN_RSA_BYTES: usize = 256;

/// Where an identity provider's JWKS is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    /// An `https://` (or, for tests and in-cluster providers, `http://`)
    /// URL, e.g. Keycloak's
    /// `https://kc.example/realms/acme/protocol/openid-connect/certs`.
    Url(String),
    /// A local file holding the JWKS (re-read like a URL is re-fetched).
    File(PathBuf),
}

impl JwksSource {
    /// `http://…` or `https://…` is a URL, anything else a file path.
    pub fn parse(raw: &str) -> Self {
        let lower = raw.trim().to_ascii_lowercase();
        if lower.starts_with("https://") || lower.starts_with("http://") {
            JwksSource::Url(raw.trim().to_owned())
        } else {
            JwksSource::File(PathBuf::from(raw))
        }
    }

    /// The URL, for a URL source.
    pub fn url(&self) -> Option<&str> {
        match self {
            JwksSource::Url(url) => Some(url),
            JwksSource::File(_) => None,
        }
    }
}

impl std::fmt::Display for JwksSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwksSource::Url(url) => f.write_str(url),
            JwksSource::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// Why a JWKS could not be loaded (the keys in use, if any, stay).
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The HTTP request failed (connection, TLS, timeout).
    #[error("cannot fetch the JWKS from {source_name}: {reason}")]
    Fetch {
        /// The URL.
        source_name: String,
        /// What went wrong.
        reason: String,
    },
    /// The provider answered with another status than 200.
    #[error("the JWKS at {0} answered HTTP {1}")]
    Status(String, u16),
    /// The file could not be read.
    #[error("cannot read the JWKS file {0}: {1}")]
    File(String, std::io::Error),
    /// Larger than 1 MiB.
    #[error("the JWKS at {0} is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge(String),
    /// Not a JSON object with a `keys` list.
    #[error("the JWKS at {0} is not a JSON object with a \"keys\" list")]
    NotJwks(String),
}

impl JwksError {
    /// A fixed word for the failure (audit events, never a URL's content).
    pub fn kind(&self) -> &'static str {
        match self {
            JwksError::Fetch { .. } => "fetch_failed",
            JwksError::Status(..) => "http_status",
            JwksError::File(..) => "file_unreadable",
            JwksError::TooLarge(_) => "too_large",
            JwksError::NotJwks(_) => "not_a_jwks",
        }
    }
}

/// One usable key: the only algorithm it verifies, and the key.
pub(crate) struct VerifyingKey {
    pub(crate) alg: Algorithm,
    pub(crate) decoding: DecodingKey,
}

/// A loaded set, and when.
#[derive(Default)]
struct Loaded {
    keys: HashMap<String, Arc<VerifyingKey>>,
    /// Counts successful loads: a waiting miss sees that a load happened.
    generation: u64,
}

/// The cached key set of one provider.
pub(crate) struct JwksCache {
    source: JwksSource,
    http: Option<reqwest::Client>,
    loaded: ArcSwap<Loaded>,
    /// Held while fetching; holds when the last fetch for a miss began.
    fetching: tokio::sync::Mutex<Option<Instant>>,
    cooldown: Duration,
    /// The issuer, and where its fetches are counted.
    observed: (String, crate::metrics::Metrics),
}

impl JwksCache {
    /// An empty cache over `source` (`http` is needed for a URL).
    pub(crate) fn new(
        source: JwksSource,
        http: Option<reqwest::Client>,
        cooldown: Duration,
        observed: (String, crate::metrics::Metrics),
    ) -> Self {
        JwksCache {
            source,
            http,
            loaded: ArcSwap::from_pointee(Loaded::default()),
            fetching: tokio::sync::Mutex::new(None),
            cooldown,
            observed,
        }
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded.load_full()
    }

    /// The key `kid` of the set in use.
    pub(crate) fn get(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        self.current().keys.get(kid).cloned()
    }

    /// How many keys are in use.
    pub(crate) fn len(&self) -> usize {
        self.current().keys.len()
    }

    /// The key `kid` after fetching the set again, if the cooldown allows
    /// (else, or if it is still not there: `None`). Concurrent calls share
    /// one fetch: a call that waited for another's fetch takes its result.
    pub(crate) async fn refetch_for(&self, kid: &str) -> Option<Arc<VerifyingKey>> {
        let seen = self.current().generation;
        let mut last_fetch = self.fetching.lock().await;
        let now = self.current();
        if now.generation != seen {
            return now.keys.get(kid).cloned();
        }
        if last_fetch.is_some_and(|at| at.elapsed() < self.cooldown) {
            tracing::debug!(jwks = %self.source, "unknown kid; JWKS fetched less than a cooldown ago, not again");
            return None;
        }
        *last_fetch = Some(Instant::now());
        tracing::info!(jwks = %self.source, "a token names a kid the JWKS does not have: fetching it again");
        if let Err(err) = self.load_now().await {
            tracing::warn!(error = %err, "keeping the keys in use");
        }
        self.get(kid)
    }

    /// Loads the set now (holding no lock; callers serialise through
    /// `fetching` where that matters). On success the new set is in use.
    pub(crate) async fn load_now(&self) -> Result<usize, JwksError> {
        use crate::audit::{Audit, Event};
        let loaded = self.fetch_and_use().await;
        let (issuer, metrics) = &self.observed;
        metrics.jwks_fetch(issuer, loaded.is_ok());
        match &loaded {
            Ok(_) => Audit::new(Event::JwksFetched).issuer(issuer).emit(),
            Err(err) => Audit::new(Event::JwksFailed)
                .issuer(issuer)
                .reason(err.kind())
                .emit(),
        }
        loaded
    }

    async fn fetch_and_use(&self) -> Result<usize, JwksError> {
        let body = self.read_source().await?;
        let keys = usable_keys(&body).ok_or_else(|| JwksError::NotJwks(self.source.to_string()))?;
        let count = keys.len();
        if count == 0 {
            tracing::warn!(jwks = %self.source, "the JWKS has no usable signing key");
        }
        self.loaded.rcu(|old| Loaded {
            keys: keys.clone(),
            generation: old.generation + 1,
        });
        tracing::debug!(jwks = %self.source, keys = count, "JWKS loaded");
        Ok(count)
    }

    /// A background refresh: like a miss's fetch, but ignoring the
    /// cooldown (it runs every `refresh_every`).
    pub(crate) async fn refresh(&self) {
        let mut last_fetch = self.fetching.lock().await;
        *last_fetch = Some(Instant::now());
        if let Err(err) = self.load_now().await {
            tracing::warn!(error = %err, "JWKS refresh failed; keeping the keys in use");
        }
    }

    async fn read_source(&self) -> Result<Vec<u8>, JwksError> {
        match &self.source {
            JwksSource::File(path) => {
                let bytes = tokio::fs::read(path)
                    .await
                    .map_err(|e| JwksError::File(path.display().to_string(), e))?;
                if bytes.len() > MAX_JWKS_BYTES {
                    return Err(JwksError::TooLarge(path.display().to_string()));
                }
                Ok(bytes)
            }
            JwksSource::Url(url) => {
                let fetch_error = |e: reqwest::Error| JwksError::Fetch {
                    source_name: url.clone(),
                    reason: e.to_string(),
                };
                let http = self.http.as_ref().ok_or_else(|| JwksError::Fetch {
                    source_name: url.clone(),
                    reason: "no HTTP client".to_owned(),
                })?;
                let mut response = http
                    .get(url)
                    .header("accept", "application/json")
                    .send()
                    .await
                    .map_err(fetch_error)?;
                if response.status() != reqwest::StatusCode::OK {
                    return Err(JwksError::Status(url.clone(), response.status().as_u16()));
                }
                let mut body = Vec::new();
                while let Some(chunk) = response.chunk().await.map_err(fetch_error)? {
                    if body.len() + chunk.len() > MAX_JWKS_BYTES {
                        return Err(JwksError::TooLarge(url.clone()));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(body)
            }
        }
    }
}

/// The usable keys of a JWKS document, by `kid`; `None` when it is not a
/// JSON object with a `keys` list. One odd key never spoils the others.
fn usable_keys(body: &[u8]) -> Option<HashMap<String, Arc<VerifyingKey>>> {
    let document: Value = serde_json::from_slice(body).ok()?;
    let entries = document.get("keys")?.as_array()?;
    let mut keys = HashMap::new();
    for entry in entries {
        let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
        match usable_key(entry) {
            Ok((kid, key)) => match keys.entry(kid) {
                std::collections::hash_map::Entry::Occupied(first) => {
                    tracing::debug!(kid = %first.key(), "JWKS key skipped: a key with this kid came first");
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert(Arc::new(key));
                }
            },
            Err(why) => tracing::debug!(%kid, why, "JWKS key skipped"),
        }
    }
    Some(keys)
}

/// One JWK as a usable key, or why it is skipped.
fn usable_key(entry: &Value) -> Result<(String, VerifyingKey), &'static str> {
    let jwk: Jwk = serde_json::from_value(entry.clone()).map_err(|_| "not a JWK we read")?;
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|kid| !kid.is_empty())
        .ok_or("no kid")?;
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|u| *u != PublicKeyUse::Signature)
    {
        return Err("not a signature key (use)");
    }
    if jwk
        .common
        .key_operations
        .as_ref()
        .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
    {
        return Err("not a verification key (key_ops)");
    }
    // RFC 9864 names EdDSA on Ed25519 `Ed25519`; jsonwebtoken reads that
    // name as an unknown algorithm.
    let declared = match entry.get("alg").and_then(Value::as_str) {
        Some("Ed25519") => Some(KeyAlgorithm::EdDSA),
        _ => jwk.common.key_algorithm,
    };
    let alg = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => rsa_algorithm(rsa, declared)?,
        AlgorithmParameters::EllipticCurve(ec) => match (&ec.curve, declared) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            _ => return Err("EC key of an unsupported curve or algorithm"),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match (&okp.curve, declared) {
            (EllipticCurve::Ed25519, None | Some(KeyAlgorithm::EdDSA)) => Algorithm::EdDSA,
            _ => return Err("OKP key of an unsupported curve or algorithm"),
        },
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (oct) key: never used"),
        _ => return Err("unknown key type"),
    };
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|_| "key material does not decode")?;
    Ok((kid, VerifyingKey { alg, decoding }))
}

/// An RSA key's one algorithm: its declared `alg` if that is an RSA
/// signature algorithm, else `RS256` when it declares none.
fn rsa_algorithm(
    rsa: &RSAKeyParameters,
    declared: Option<KeyAlgorithm>,
) -> Result<Algorithm, &'static str> {
    let modulus = URL_SAFE_NO_PAD
        .decode(rsa.n.trim_end_matches('='))
        .map_err(|_| "RSA modulus is not base64url")?;
    let significant = modulus.iter().skip_while(|b| **b == 0).count();
    if significant < MIN_RSA_BYTES {
        return Err("RSA key shorter than 2048 bits");
    }
    Ok(match declared {
        None | Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::RS384) => Algorithm::RS384,
        Some(KeyAlgorithm::RS512) => Algorithm::RS512,
        Some(KeyAlgorithm::PS256) => Algorithm::PS256,
        Some(KeyAlgorithm::PS384) => Algorithm::PS384,
        Some(KeyAlgorithm::PS512) => Algorithm::PS512,
        Some(_) => return Err("RSA key for another algorithm (encryption?)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A 2048-bit modulus (its bytes do not matter to the selection).
    fn modulus(bytes: usize) -> String {
        URL_SAFE_NO_PAD.encode(vec![0xc5u8; bytes])
    }

    fn ec(crv: &str) -> Value {
        // A valid P-256 point (the generator); selection is what is tested.
        json!({
            "kty": "EC", "crv": crv,
            "x": "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
            "y": "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"
        })
    }

    fn with(mut key: Value, extra: Value) -> Value {
        if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
            key.extend(extra.clone());
        }
        key
    }

    fn algs(document: Value) -> Vec<(String, Algorithm)> {
        let keys = usable_keys(document.to_string().as_bytes()).expect("a JWKS");
        let mut out: Vec<_> = keys.into_iter().map(|(kid, key)| (kid, key.alg)).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn the_keys_own_algorithm_is_the_one_it_verifies() {
        let rsa = json!({ "kty": "RSA", "n": modulus(256), "e": "AQAB" });
        let document = json!({ "keys": [
            with(rsa.clone(), json!({ "kid": "a-rsa-default" })),
            with(rsa.clone(), json!({ "kid": "b-ps256", "alg": "PS256", "use": "sig" })),
            with(ec("P-256"), json!({ "kid": "c-es256" })),
            with(json!({ "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }), json!({ "kid": "d-eddsa", "alg": "EdDSA" })),
            with(json!({ "kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo" }), json!({ "kid": "e-ed25519", "alg": "Ed25519" })),
        ]});
        assert_eq!(
            algs(document),
            [
                ("a-rsa-default".to_owned(), Algorithm::RS256),
                ("b-ps256".to_owned(), Algorithm::PS256),
                ("c-es256".to_owned(), Algorithm::ES256),
                ("d-eddsa".to_owned(), Algorithm::EdDSA),
                ("e-ed25519".to_owned(), Algorithm::EdDSA),
            ]
        );
    }

    #[test]
    fn symmetric_encryption_weak_and_odd_keys_are_skipped() {
        let rsa = json!({ "kty": "RSA", "n": modulus(256), "e": "AQAB" });
        let document = json!({ "keys": [
            { "kty": "oct", "kid": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "alg": "HS256" },
            with(rsa.clone(), json!({ "kid": "enc", "use": "enc", "alg": "RSA-OAEP" })),
            with(rsa.clone(), json!({ "kid": "oaep", "alg": "RSA-OAEP" })),
            with(rsa.clone(), json!({ "kid": "hs-claimed", "alg": "HS256" })),
            with(rsa.clone(), json!({ "kid": "ops", "key_ops": ["encrypt"] })),
            with(rsa.clone(), json!({})),
            with(json!({ "kty": "RSA", "n": modulus(128), "e": "AQAB" }), json!({ "kid": "short" })),
            with(ec("P-256"), json!({ "kid": "ec-wrong-alg", "alg": "ES384" })),
            with(ec("P-521"), json!({ "kid": "p521" })),
            with(ec("P-256"), json!({ "kid": "ec-ed25519", "alg": "Ed25519" })),
            { "kty": "XYZ", "kid": "unknown" },
            "not an object",
            with(rsa, json!({ "kid": "good" })),
        ]});
        assert_eq!(algs(document), [("good".to_owned(), Algorithm::RS256)]);
        for not_a_set in [json!([]), json!({}), json!({ "keys": {} })] {
            assert!(usable_keys(not_a_set.to_string().as_bytes()).is_none());
        }
        assert!(usable_keys(b"<html>").is_none());
    }

    #[test]
    fn sources_are_urls_or_files() {
        assert_eq!(
            JwksSource::parse("https://kc.example/certs"),
            JwksSource::Url("https://kc.example/certs".to_owned())
        );
        assert!(JwksSource::parse("HTTP://127.0.0.1:1/x").url().is_some());
        assert_eq!(
            JwksSource::parse("/etc/rpcguard/idp.json"),
            JwksSource::File(PathBuf::from("/etc/rpcguard/idp.json"))
        );
    }
}
