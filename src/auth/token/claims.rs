//! The claims of an access token.

use serde::{Deserialize, Serialize};

/// The claims of an rpcguard access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// The account id the token was issued to (32 hex digits). Absent
    /// (empty) only in tokens of older versions, which
    /// [`TokenKeys::verify`](super::TokenKeys::verify) refuses.
    #[serde(default)]
    pub uid: String,
    /// The session the token was issued in (32 hex digits). Absent (empty)
    /// only in tokens of older versions, which [`TokenKeys::verify`](super::TokenKeys::verify)
    /// refuses.
    #[serde(default)]
    pub sid: String,
    /// Issued at (Unix seconds).
    pub iat: u64,
    /// Expires at (Unix seconds).
    pub exp: u64,
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Unique token id.
    pub jti: String,
    /// The Bearer scopes the token may use when issued, space-separated
    /// (absent when none). rpcguard itself never reads it (it checks the
    /// scopes held *now* on every call); it is for services that verify
    /// the token with the JWKS alone (`examples/resource_server.rs`), for
    /// which it holds until the token's `exp`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
}
