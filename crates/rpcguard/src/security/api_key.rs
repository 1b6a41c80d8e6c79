//! A ready API-key security function, and a combinator that lets several
//! security functions serve one server (so a method can accept Bearer OR
//! an API key).

use std::collections::HashMap;

use async_trait::async_trait;
use hyper::header::HeaderName;
use sha2::{Digest, Sha256};

use super::{Caller, Credentials, Identities, SchemeDoc, SecurityFunction, SharedSecurity};
use crate::error::{AuthFailure, RpcError};

/// Authenticates a static set of API keys sent in a header.
///
/// Keys are kept only as SHA-256 digests, and looked up by digest, so the
/// lookup's timing says nothing about how much of a key matched.
///
/// ```
/// use rpcguard::security::ApiKeySecurity;
/// let keys = ApiKeySecurity::new("ApiKey", "x-api-key")
///     .key("k-123-secret", "reporting-bot", ["notes:read"]);
/// # let _ = keys;
/// ```
#[derive(Debug, Clone)]
pub struct ApiKeySecurity {
    scheme: String,
    header: HeaderName,
    keys: HashMap<[u8; 32], (String, Vec<String>)>,
}

impl ApiKeySecurity {
    /// A scheme named `scheme` reading keys from `header` (must be a valid
    /// header name; an invalid one falls back to `x-api-key`).
    pub fn new(scheme: &str, header: &str) -> Self {
        ApiKeySecurity {
            scheme: scheme.to_owned(),
            header: HeaderName::from_bytes(header.as_bytes())
                .unwrap_or(HeaderName::from_static("x-api-key")),
            keys: HashMap::new(),
        }
    }

    /// Adds a key: who it authenticates and the scopes it holds.
    #[must_use]
    pub fn key<I, S>(mut self, key: &str, subject: &str, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes = scopes.into_iter().map(Into::into).collect();
        self.keys
            .insert(digest(key.as_bytes()), (subject.to_owned(), scopes));
        self
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

#[async_trait]
impl SecurityFunction for ApiKeySecurity {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError> {
        let mut values = credentials.headers().get_all(&self.header).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
        }
        match self.keys.get(&digest(value.as_bytes())) {
            Some((subject, scopes)) => Ok(Some(Caller::new(
                subject.clone(),
                &self.scheme,
                scopes.clone(),
            ))),
            None => Err(RpcError::Unauthenticated(AuthFailure::InvalidToken)),
        }
    }

    fn schemes(&self) -> Vec<SchemeDoc> {
        vec![SchemeDoc::api_key(
            &self.scheme,
            self.header.as_str(),
            &format!("A static API key sent in the `{}` header.", self.header),
        )]
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
/// use rpcguard::{AnySecurity, ApiKeySecurity, SharedSecurity};
/// let ops: SharedSecurity = Arc::new(ApiKeySecurity::new("Ops", "x-ops-key").key("k1", "ops", ["deploy"]));
/// let bots: SharedSecurity = Arc::new(ApiKeySecurity::new("ApiKey", "x-api-key").key("k2", "bot", ["read"]));
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
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError> {
        let found = self.identities(credentials).await?;
        if let Some(caller) = found.callers().next() {
            return Ok(Some(caller.clone()));
        }
        let first_refusal = found.refusals().next().map(|(_, reason)| reason);
        match first_refusal {
            Some(reason) => Err(RpcError::Unauthenticated(reason)),
            None => Ok(None),
        }
    }

    fn schemes(&self) -> Vec<SchemeDoc> {
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
    use std::sync::Arc;

    use hyper::header::{HeaderMap, HeaderValue};

    use super::*;

    fn any() -> AnySecurity {
        let ops = ApiKeySecurity::new("Ops", "x-ops-key").key("ops-key", "ops-bot", ["deploy"]);
        let users = ApiKeySecurity::new("User", "x-user-key").key("bob-key", "bob", ["profile"]);
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
