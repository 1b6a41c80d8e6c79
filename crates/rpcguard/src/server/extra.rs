//! Extra HTTP resources: bodies an embedder serves with plain `GET`/`HEAD`
//! on the server's port beside the JSON-RPC paths, such as a JWKS at
//! `/.well-known/jwks.json`.
//!
//! The body is produced on each request by the embedder's function, so it
//! may change while the server runs (a JWKS after a key rotation). It is
//! served like the OpenRPC document ([`super::resource`]): a strong `ETag`
//! of the bytes, `304` to a matching `If-None-Match`, `405` to other methods,
//! `X-Content-Type-Options: nosniff`, and the `Cache-Control` the embedder
//! chose.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderMap;
use hyper::Method;
use jsonrpsee::server::HttpResponse;

use super::resource::Resource;

/// Produces a resource's current body.
type Source = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

/// A body served at a fixed path (see the module docs). Put it in
/// [`ServerConfig::resources`](super::ServerConfig::resources).
///
/// ```
/// use rpcguard::server::{ExtraResource, ServerConfig};
///
/// let jwks = ExtraResource::new(
///     "/.well-known/jwks.json",
///     "application/json",
///     "public, max-age=60",
///     || br#"{"keys":[]}"#.to_vec(),
/// );
/// let config = ServerConfig { resources: vec![jwks], ..ServerConfig::default() };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct ExtraResource {
    path: String,
    content_type: &'static str,
    cache_control: &'static str,
    source: Source,
}

impl std::fmt::Debug for ExtraResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExtraResource")
            .field("path", &self.path)
            .field("content_type", &self.content_type)
            .field("cache_control", &self.cache_control)
            .finish_non_exhaustive()
    }
}

impl ExtraResource {
    /// Serves what `source` returns at `path` (exact match, starting with
    /// `/`) as `content_type`, with this `Cache-Control` value.
    pub fn new(
        path: impl Into<String>,
        content_type: &'static str,
        cache_control: &'static str,
        source: impl Fn() -> Vec<u8> + Send + Sync + 'static,
    ) -> Self {
        ExtraResource {
            path: path.into(),
            content_type,
            cache_control,
            source: Arc::new(source),
        }
    }

    /// The path it is served at.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Answers a request for it.
    pub(crate) fn respond(&self, method: &Method, headers: &HeaderMap) -> HttpResponse {
        Resource::new(Bytes::from((self.source)()), self.content_type)
            .with_cache_control(self.cache_control)
            .respond(method, headers)
    }
}
