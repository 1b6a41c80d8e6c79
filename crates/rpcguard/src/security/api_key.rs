//! A ready API-key security function, and a combinator that lets several
//! security functions serve one server (so a method can accept Bearer OR
//! an API key).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::{
    Caller, Credentials, Identities, IntoScopes, Scheme, SecurityFunction, SharedSecurity,
};
use crate::error::{AuthFailure, RpcError};

/// Authenticates a static set of API keys sent in the header of an
/// API-key [`Scheme`].
///
/// Keys are kept only as SHA-256 digests, and looked up by digest, so the
/// lookup's timing says nothing about how much of a key matched. Each
/// key's caller is built once and shared.
///
/// ```
/// use rpcguard::{ApiKeySecurity, Scheme};
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
/// let keys = ApiKeySecurity::new(&KEY).key("k-123-secret", "reporting-bot", ["notes:read"]);
/// # let _ = keys;
/// ```
#[derive(Debug, Clone)]
pub struct ApiKeySecurity {
    scheme: Scheme,
    keys: HashMap<[u8; 32], Arc<Caller>>,
}

impl ApiKeySecurity {
    /// Serves `scheme` (an API-key scheme; described in the document as
    /// "A static API key sent in the `…` header." unless it says more).
    pub fn new(scheme: &Scheme) -> Self {
        let mut scheme = scheme.clone();
        if scheme.description().is_empty() {
            let text = format!("A static API key sent in the `{}` header.", scheme.header());
            scheme = scheme.describe(text);
        }
        ApiKeySecurity {
            scheme,
            keys: HashMap::new(),
        }
    }

    /// Adds a key: who it authenticates and the scopes it holds.
    #[must_use]
    pub fn key(mut self, key: &str, subject: &str, scopes: impl IntoScopes) -> Self {
        let caller = Arc::new(self.scheme.caller(subject, scopes));
        self.keys.insert(digest(key.as_bytes()), caller);
        self
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[async_trait]
impl SecurityFunction for ApiKeySecurity {
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        let Some(key) = credentials.get(&self.scheme)? else {
            return Ok(None);
        };
        match self.keys.get(&digest(key.as_bytes())) {
            Some(caller) => Ok(Some(caller.clone())),
            None => Err(RpcError::Unauthenticated(AuthFailure::InvalidToken)),
        }
    }

    fn schemes(&self) -> Vec<Scheme> {
        vec![self.scheme.clone()]
    }
}

/// Runs several security functions for one server, so that a method can
/// accept Bearer OR an API key.
///
/// Each function's findings stay in their own scheme ([`Identities`]); the
/// middleware then gives the handler the one identity that meets the
/// method's requirement, trying its alternatives in declared order (see
/// [`MethodSecurity::check`](super::MethodSecurity::check)). Identities are
/// never merged: a caller who sends a user's Bearer token together with a
/// service's API key is either the user or the service, with that one's
/// scopes only.
///
/// ```
/// use std::sync::Arc;
/// use rpcguard::{AnySecurity, ApiKeySecurity, Scheme, SharedSecurity};
/// const OPS: Scheme = Scheme::api_key("Ops", "x-ops-key");
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
/// let ops: SharedSecurity = Arc::new(ApiKeySecurity::new(&OPS).key("k1", "ops", ["deploy"]));
/// let bots: SharedSecurity = Arc::new(ApiKeySecurity::new(&KEY).key("k2", "bot", ["read"]));
/// let security = AnySecurity::new(vec![ops, bots]);
/// # let _ = security;
/// ```
#[derive(Clone)]
pub struct AnySecurity(Vec<SharedSecurity>);

impl std::fmt::Debug for AnySecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AnySecurity").field(&self.0.len()).finish()
    }
}

impl AnySecurity {
    /// Combines these security functions (their order is the order of
    /// [`Identities`] when a public method asks for an optional caller).
    pub fn new(functions: Vec<SharedSecurity>) -> Self {
        AnySecurity(functions)
    }
}

#[async_trait]
impl SecurityFunction for AnySecurity {
    /// The identity of the first function (in the order given) that finds
    /// one, else the first refusal: one identity, never a merge. The
    /// middleware does not call this; it calls
    /// [`identities`](SecurityFunction::identities) and picks per method.
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        let found = self.identities(credentials).await?;
        if let Some(caller) = found.shared_callers().next() {
            return Ok(Some(caller.clone()));
        }
        let first_refusal = found.refusals().next().map(|(_, reason)| reason);
        match first_refusal {
            Some(reason) => Err(RpcError::Unauthenticated(reason)),
            None => Ok(None),
        }
    }

    fn schemes(&self) -> Vec<Scheme> {
        self.0.iter().flat_map(|f| f.schemes()).collect()
    }

    /// What every function finds, each in its own schemes.
    async fn identities(&self, credentials: &Credentials) -> Result<Identities, RpcError> {
        let mut found = Identities::new();
        let mut refused_without_scheme = None;
        for function in &self.0 {
            match function.identities(credentials).await {
                Ok(more) => found = found.merge(more),
                // Only a function that names no scheme refuses this way.
                Err(RpcError::Unauthenticated(reason)) => {
                    refused_without_scheme.get_or_insert(reason);
                }
                Err(other) => return Err(other),
            }
        }
        match refused_without_scheme {
            Some(reason) if found.is_empty() => Err(RpcError::Unauthenticated(reason)),
            _ => Ok(found),
        }
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::{HeaderMap, HeaderValue};

    use super::*;

    fn any() -> AnySecurity {
        let ops = ApiKeySecurity::new(&Scheme::api_key("Ops", "x-ops-key")).key(
            "ops-key",
            "ops-bot",
            ["deploy"],
        );
        let users = ApiKeySecurity::new(&Scheme::api_key("User", "x-user-key")).key(
            "bob-key",
            "bob",
            ["profile"],
        );
        AnySecurity::new(vec![Arc::new(users), Arc::new(ops)])
    }

    fn credentials(headers: &[(&'static str, &'static str)]) -> Credentials {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, HeaderValue::from_static(value));
        }
        Credentials::new(map, None, None)
    }

    #[tokio::test]
    async fn each_function_keeps_its_own_identity() {
        let found = any()
            .identities(&credentials(&[
                ("x-user-key", "bob-key"),
                ("x-ops-key", "ops-key"),
            ]))
            .await
            .expect("both");
        let subject = |scheme| {
            found
                .get(scheme)
                .and_then(Result::ok)
                .map(|c| c.subject.clone())
        };
        assert_eq!(subject("User").as_deref(), Some("bob"));
        assert_eq!(subject("Ops").as_deref(), Some("ops-bot"));
        let bob = found.get("User").and_then(Result::ok).expect("bob");
        assert_eq!(bob.scopes.iter().collect::<Vec<_>>(), ["profile"]);
    }

    #[tokio::test]
    async fn a_refused_key_stays_in_its_scheme() {
        let found = any()
            .identities(&credentials(&[
                ("x-user-key", "nope"),
                ("x-ops-key", "ops-key"),
            ]))
            .await
            .expect("one good");
        assert_eq!(
            found.get("User").and_then(Result::err),
            Some(AuthFailure::InvalidToken)
        );
        assert!(found.get("Ops").is_some_and(|o| o.is_ok()));
        // `authenticate` answers one identity, not a merge.
        let one = any()
            .authenticate(&credentials(&[
                ("x-user-key", "bob-key"),
                ("x-ops-key", "ops-key"),
            ]))
            .await
            .expect("ok")
            .expect("caller");
        assert_eq!((one.subject.as_str(), one.scheme.as_str()), ("bob", "User"));
        assert!(!one.has_scope("deploy"));
        let refused = any()
            .authenticate(&credentials(&[("x-ops-key", "nope")]))
            .await;
        assert!(matches!(
            refused,
            Err(RpcError::Unauthenticated(AuthFailure::InvalidToken))
        ));
        assert!(any()
            .authenticate(&credentials(&[]))
            .await
            .expect("none")
            .is_none());
    }
}
