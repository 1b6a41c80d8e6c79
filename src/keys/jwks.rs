//! `GET /.well-known/jwks.json`: the public keys (RFC 7517) of the
//! asymmetric keys in the set, for services that verify rpcguard's tokens
//! without holding a secret.
//!
//! Only public halves of EdDSA, ES256 and RS256 keys that still verify are
//! listed, each with `kid`, `alg` and `use: sig`; HS256 keys never are (an
//! HS256-only set answers `{"keys":[]}`). The body is built from the keys
//! in use on every request, so a rotation shows at once.
//!
//! Caching: `Cache-Control: public, max-age=60` with an `ETag`. A new key
//! signs from the moment of `rpcguard key rotate`, so a verifier holding a
//! copy up to a minute old meets an unknown `kid`: common JWKS clients
//! (PyJWT's `PyJWKClient`, `jose`'s `createRemoteJWKSet`) fetch the set again
//! then.

use rpcguard::server::ExtraResource;

use crate::auth::token::TokenKeys;

/// The path the JWKS is served at.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// What the JWKS answer's `Cache-Control` says.
pub const JWKS_CACHE_CONTROL: &str = "public, max-age=60";

/// The JWKS of `keys` as a resource for
/// [`ServerConfig::resources`](rpcguard::server::ServerConfig::resources).
pub fn jwks_resource(keys: TokenKeys) -> ExtraResource {
    ExtraResource::new(
        JWKS_PATH,
        "application/json",
        JWKS_CACHE_CONTROL,
        move || {
            serde_json::to_vec(&keys.jwks()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot serialize the JWKS");
                br#"{"keys":[]}"#.to_vec()
            })
        },
    )
}
