//! One Bearer scheme, several issuers: a token goes to the verifier of the
//! issuer it names.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::OidcSecurity;
use crate::error::{AuthFailure, RpcError};
use crate::security::{
    Caller, Credentials, Identities, SchemeDoc, SecurityFunction, SharedSecurity,
};

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
        self.issuers
            .first()
            .map_or_else(|| crate::BEARER.to_owned(), |i| i.config().scheme.clone())
    }
}

#[async_trait]
impl SecurityFunction for IssuerRouter {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError> {
        Ok(self
            .authenticate_shared(credentials)
            .await?
            .map(|caller| (*caller).clone()))
    }

    async fn authenticate_shared(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        match self.route(credentials) {
            Route::External(issuer) => issuer.authenticate_shared(credentials).await,
            Route::Local(local) => local.authenticate_shared(credentials).await,
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

    fn schemes(&self) -> Vec<SchemeDoc> {
        let mut docs = self.local.as_ref().map(|l| l.schemes()).unwrap_or_default();
        for issuer in &self.issuers {
            let theirs = issuer.scheme_doc();
            match docs.iter_mut().find(|doc| doc.name == theirs.name) {
                None => docs.push(theirs),
                Some(ours) => {
                    const ALSO: &str = " Also accepted: JWT access tokens of the identity \
                                        providers in `x-issuers` (each with its `iss`, `aud` \
                                        and JWKS; asymmetric algorithms only).";
                    if !ours.description.contains(ALSO) {
                        ours.description.push_str(ALSO);
                    }
                    let list = ours
                        .extensions
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
