//! A ready API-key security function, and a combinator that lets several
//! security functions serve one server (so a method can accept Bearer OR
//! an API key).

use std::collections::HashMap;

use async_trait::async_trait;
use hyper::header::HeaderName;
use sha2::{Digest, Sha256};

use super::{Caller, Credentials, SchemeDoc, SecurityFunction, SharedSecurity};
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
        vec![SchemeDoc {
            name: self.scheme.clone(),
            kind: "apiKey".to_owned(),
            location: "header".to_owned(),
            header: self.header.as_str().to_owned(),
            bearer_format: None,
            description: format!("A static API key sent in the `{}` header.", self.header),
        }]
    }
}

/// Runs several security functions and merges what they find: the caller
/// holds the scopes of every scheme it authenticated in. If none
/// authenticates, the first error (if any) is the answer.
#[derive(Clone)]
pub struct AnySecurity(Vec<SharedSecurity>);

impl std::fmt::Debug for AnySecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("AnySecurity").field(&self.0.len()).finish()
    }
}

impl AnySecurity {
    /// Combines these security functions.
    pub fn new(functions: Vec<SharedSecurity>) -> Self {
        AnySecurity(functions)
    }
}

#[async_trait]
impl SecurityFunction for AnySecurity {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError> {
        let mut merged: Option<Caller> = None;
        let mut first_error = None;
        for function in &self.0 {
            match function.authenticate(credentials).await {
                Ok(Some(mut caller)) => match &mut merged {
                    None => merged = Some(caller),
                    Some(into) => {
                        into.scopes.extend(std::mem::take(&mut caller.scopes));
                        into.absorb_details(caller);
                    }
                },
                Ok(None) => {}
                Err(err @ RpcError::Unauthenticated(_)) => {
                    first_error.get_or_insert(err);
                }
                Err(other) => return Err(other),
            }
        }
        match (merged, first_error) {
            (Some(caller), _) => Ok(Some(caller)),
            (None, Some(err)) => Err(err),
            (None, None) => Ok(None),
        }
    }

    fn schemes(&self) -> Vec<SchemeDoc> {
        self.0.iter().flat_map(|f| f.schemes()).collect()
    }
}
