//! One Bearer scheme, several issuers: a token goes to the verifier of the
//! issuer it names.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::OidcSecurity;
use crate::error::{AuthFailure, RpcError};
use crate::security::{Caller, Credentials, Identities, Scheme, SecurityFunction, SharedSecurity};

/// Accepts the tokens of external issuers ([`OidcSecurity`]) beside a
/// server's own (`local`, e.g. `rpcguard_accounts::BearerSecurity`), all as
/// `Authorization: Bearer <token>`.
///
/// **Routing.** A bearer token goes to the external issuer whose `iss` it
/// names, read from its payload *before* anything is verified; every other
/// token (and every request without one) goes to `local`. The `iss` only
/// picks the verifier, which then checks everything, `iss` included: a
/// forged `iss` sends a token to a verifier that refuses it. Routing by
/// `iss` rather than trying every verifier means a token is verified once,
/// its refusal has the reason its own verifier gives (an expired Keycloak
/// token is `expired_token`, not the local verifier's `invalid_token`), and
/// the server's own tokens never make us fetch a provider's JWKS (their
/// `kid` is unknown there). Routing by `kid` would not work for tokens
/// without one, nor when two issuers use the same `kid`. So an external
/// issuer must not have the same `iss` as the local tokens (the reference
/// server refuses to start then).
///
/// Without `local`, a token naming no configured issuer is `invalid_token`.
///
/// The document shows one scheme per name: the local scheme's entry gains
/// the external issuers in `x-issuers` and a sentence in its description.
#[derive(Clone)]
pub struct IssuerRouter {
    local: Option<SharedSecurity>,
    issuers: Vec<OidcSecurity>,
}

impl std::fmt::Debug for IssuerRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerRouter")
            .field("local", &self.local.is_some())
            .field("issuers", &self.issuers)
            .finish()
    }
}

/// Where a request's credentials go.
enum Route<'a> {
    External(&'a OidcSecurity),
    Local(&'a SharedSecurity),
    /// Nothing presented and no local function.
    Nobody,
    /// A token of no issuer we know, and no local function.
    Refused,
}

impl IssuerRouter {
    /// A router whose tokens of no external issuer go to `local`.
    pub fn new(local: Option<SharedSecurity>) -> Self {
        IssuerRouter {
            local,
            issuers: Vec::new(),
        }
    }

    /// Accepts the tokens of `issuer` as well.
    #[must_use]
    pub fn issuer(mut self, issuer: OidcSecurity) -> Self {
        self.issuers.push(issuer);
        self
    }

    /// The external issuers, in the order added.
    pub fn issuers(&self) -> &[OidcSecurity] {
        &self.issuers
    }

    fn route(&self, credentials: &Credentials) -> Route<'_> {
        let presented = credentials.bearer_token();
        let external = match presented {
            Ok(Some(token)) => self.issuers.iter().find(|i| i.names_this_issuer(token)),
            // Malformed or absent: the local function says what it says.
            Ok(None) | Err(_) => None,
        };
        match (external, &self.local, presented) {
            (Some(issuer), _, _) => Route::External(issuer),
            (None, Some(local), _) => Route::Local(local),
            (None, None, Ok(None)) => Route::Nobody,
            (None, None, _) => Route::Refused,
        }
    }

    fn scheme_name(&self) -> String {
        self.issuers.first().map_or_else(
            || crate::BEARER.name().to_owned(),
            |i| i.config().scheme.clone(),
        )
    }
}

#[async_trait]
impl SecurityFunction for IssuerRouter {
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        match self.route(credentials) {
            Route::External(issuer) => issuer.authenticate(credentials).await,
            Route::Local(local) => local.authenticate(credentials).await,
            Route::Nobody => Ok(None),
            Route::Refused => Err(RpcError::Unauthenticated(AuthFailure::InvalidToken)),
        }
    }

    async fn identities(&self, credentials: &Credentials) -> Result<Identities, RpcError> {
        match self.route(credentials) {
            Route::External(issuer) => issuer.identities(credentials).await,
            Route::Local(local) => local.identities(credentials).await,
            Route::Nobody => Ok(Identities::new()),
            Route::Refused => {
                Ok(Identities::new().refused(&self.scheme_name(), AuthFailure::InvalidToken))
            }
        }
    }

    fn schemes(&self) -> Vec<Scheme> {
        let mut docs = self.local.as_ref().map(|l| l.schemes()).unwrap_or_default();
        for issuer in &self.issuers {
            let theirs = issuer.scheme_doc();
            match docs.iter_mut().find(|doc| doc.name() == theirs.name()) {
                None => docs.push(theirs),
                Some(ours) => {
                    const ALSO: &str = " Also accepted: JWT access tokens of the identity \
                                        providers in `x-issuers` (each with its `iss`, `aud` \
                                        and JWKS; asymmetric algorithms only).";
                    ours.append_description(ALSO);
                    let list = ours
                        .extensions_mut()
                        .entry("x-issuers".to_owned())
                        .or_insert_with(|| Value::Array(Vec::new()));
                    if let Value::Array(list) = list {
                        list.push(issuer.issuer_doc());
                    }
                }
            }
        }
        docs
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};
    use jsonwebtoken::jwk::Jwk;
    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::json;

    use super::*;
    use crate::security::oidc::{ExternalIdentity, JwksSource, OidcConfig};
    use crate::BEARER;

    /// A test-only Ed25519 key (PKCS#8 DER), made for these tests.
    const TEST_KEY: &str = "302e020100300506032b657004220420928760ac93fb8c2702b0f3ff740a72fa7cf36b09986689a7e5547a3779c0a3de";
    const ISSUER: &str = "https://idp.test/realms/acme";

    /// Accepts any bearer token as the caller `local`.
    struct Local;

    #[async_trait]
    impl SecurityFunction for Local {
        async fn authenticate(
            &self,
            credentials: &Credentials,
        ) -> Result<Option<Arc<Caller>>, RpcError> {
            Ok(credentials
                .get(&BEARER)?
                .map(|_| Arc::new(BEARER.caller("local", ["mine"]))))
        }

        fn schemes(&self) -> Vec<Scheme> {
            vec![BEARER.describe("Our own tokens.")]
        }
    }

    fn key() -> EncodingKey {
        EncodingKey::from_ed_der(&hex::decode(TEST_KEY).expect("hex"))
    }

    /// An issuer whose JWKS (a file in the temp dir) holds the test key.
    async fn issuer(issuer: &str) -> OidcSecurity {
        let mut jwk = Jwk::from_encoding_key(&key(), Algorithm::EdDSA).expect("jwk");
        jwk.common.key_id = Some("k1".to_owned());
        let path = std::env::temp_dir().join(format!(
            "rpcguard-router-{}-{}.json",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::write(&path, json!({ "keys": [jwk] }).to_string()).expect("write JWKS");
        let security = OidcSecurity::connect(OidcConfig::new(
            issuer,
            "rpc",
            JwksSource::File(path.clone()),
        ))
        .await
        .expect("connect");
        let _ = std::fs::remove_file(path);
        security
    }

    fn token(iss: &str) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".to_owned());
        let claims = json!({ "iss": iss, "aud": "rpc", "sub": "carol", "exp": 4_000_000_000u64, "scope": "a b" });
        jsonwebtoken::encode(&header, &claims, &key()).expect("sign")
    }

    fn bearer(token: &str) -> Credentials {
        let mut headers = HeaderMap::new();
        let value = HeaderValue::from_str(&format!("Bearer {token}")).expect("header");
        headers.insert(AUTHORIZATION, value);
        Credentials::new(headers, None, None)
    }

    #[tokio::test]
    async fn tokens_go_to_the_issuer_they_name() {
        let local: SharedSecurity = Arc::new(Local);
        let router = IssuerRouter::new(Some(local)).issuer(issuer(ISSUER).await);
        let theirs = router
            .authenticate(&bearer(&token(ISSUER)))
            .await
            .expect("verified")
            .expect("a caller");
        assert_eq!(theirs.subject, "carol");
        assert_eq!(theirs.scopes.iter().collect::<Vec<_>>(), ["a", "b"]);
        let identity = theirs.detail::<ExternalIdentity>().expect("identity");
        assert_eq!(identity.issuer, ISSUER);
        // Another issuer (ours, say), or a token that is no JWT: local.
        for other in [token("rpcguard"), "opaque".to_owned()] {
            let caller = router
                .authenticate(&bearer(&other))
                .await
                .expect("ok")
                .expect("caller");
            assert_eq!(caller.subject, "local");
        }
        // Nothing presented: nobody.
        let none = Credentials::new(HeaderMap::new(), None, None);
        assert!(router.identities(&none).await.expect("ok").is_empty());
    }

    #[tokio::test]
    async fn without_local_tokens_of_other_issuers_are_refused() {
        let router = IssuerRouter::new(None).issuer(issuer(ISSUER).await);
        let found = router
            .identities(&bearer(&token("https://elsewhere")))
            .await
            .expect("ok");
        assert_eq!(
            found.get(BEARER.name()).and_then(Result::err),
            Some(AuthFailure::InvalidToken)
        );
        // A token naming the issuer, its signature spoilt.
        let mut forged = token(ISSUER);
        forged.push('A');
        let found = router.identities(&bearer(&forged)).await.expect("ok");
        assert_eq!(
            found.get(BEARER.name()).and_then(Result::err),
            Some(AuthFailure::InvalidToken)
        );
    }

    #[tokio::test]
    async fn the_document_shows_one_bearer_scheme_with_every_issuer() {
        let local: SharedSecurity = Arc::new(Local);
        let router = IssuerRouter::new(Some(local))
            .issuer(issuer(ISSUER).await)
            .issuer(issuer("https://second.test").await);
        let schemes = router.schemes();
        assert_eq!(schemes.len(), 1);
        let doc = &schemes[0];
        assert!(doc.description().starts_with("Our own tokens."));
        assert_eq!(doc.description().matches("Also accepted").count(), 1);
        let issuers: Vec<&str> = doc.extensions()["x-issuers"]
            .as_array()
            .expect("a list")
            .iter()
            .filter_map(|i| i["issuer"].as_str())
            .collect();
        assert_eq!(issuers, [ISSUER, "https://second.test"]);
        assert!(
            doc.extensions()["x-issuers"][0].get("jwks_uri").is_none(),
            "a file has no URL"
        );
        let alone = IssuerRouter::new(None)
            .issuer(issuer(ISSUER).await)
            .schemes();
        assert_eq!(alone.len(), 1);
        assert_eq!(
            alone[0].extensions().keys().collect::<Vec<_>>(),
            ["x-issuers"]
        );
    }
}
