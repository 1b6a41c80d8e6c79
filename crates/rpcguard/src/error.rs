//! The wire contract's error objects, in one place.
//!
//! Every module has its own error enum; each converts into [`RpcError`], and
//! [`RpcError`] is turned into a JSON-RPC error object by exactly one
//! conversion (`impl From<RpcError> for ErrorObjectOwned`). Details of
//! internal failures go to the log, never to the caller.

use std::collections::BTreeMap;

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use serde::Serialize;
use serde_json::json;

/// `-32001 Unauthenticated`.
pub const UNAUTHENTICATED: i32 = -32001;
/// `-32002 Authentication failed` (sign_in: unknown user or wrong password).
pub const AUTHENTICATION_FAILED: i32 = -32002;
/// `-32003 Username taken`.
pub const USERNAME_TAKEN: i32 = -32003;
/// `-32005 Too many requests`.
pub const TOO_MANY_REQUESTS: i32 = -32005;
/// `-32099 Permission error` (signed in, a declared scope is missing).
pub const PERMISSION_ERROR: i32 = -32099;
/// `-32602 Invalid params`.
pub const INVALID_PARAMS: i32 = -32602;
/// `-32603 Internal error`.
pub const INTERNAL_ERROR: i32 = -32603;

/// Why a secured call was refused with `-32001`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailure {
    /// No credentials were presented.
    MissingToken,
    /// Malformed, bad signature, wrong algorithm, audience or issuer, or a
    /// token whose user no longer exists.
    InvalidToken,
    /// The token's `exp` has passed.
    ExpiredToken,
}

impl AuthFailure {
    /// The `reason` string sent in the error's `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::ExpiredToken => "expired_token",
        }
    }
}

/// Scopes missing per security scheme, as sent in `-32099`'s data.
pub type MissingScopes = BTreeMap<String, Vec<String>>;

/// Every error a caller can see. Converting it into a JSON-RPC error object
/// is the only place where codes, messages and `data` are chosen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// `-32001`: credentials missing or not acceptable.
    #[error("unauthenticated: {}", .0.as_str())]
    Unauthenticated(AuthFailure),
    /// `-32099`: authenticated, but the declared scopes are not all held.
    #[error("permission error")]
    PermissionDenied(MissingScopes),
    /// `-32002`: sign-in failed (unknown user or wrong password, same answer).
    #[error("authentication failed")]
    AuthenticationFailed,
    /// `-32003`: the username already exists.
    #[error("username taken")]
    UsernameTaken,
    /// `-32005`: throttled; retry after this many seconds.
    #[error("too many requests")]
    TooManyRequests {
        /// Seconds after which a retry may succeed.
        retry_after_s: u64,
    },
    /// `-32602`: what is wrong with the params (never the input itself).
    #[error("invalid params: {0}")]
    InvalidParams(String),
    /// `-32603`: anything unexpected. The string is logged, never sent.
    #[error("internal error: {0}")]
    Internal(String),
}

impl RpcError {
    /// An internal error; the detail is logged here at error level and only
    /// the contract's `Internal error` reaches the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let detail = detail.to_string();
        tracing::error!(error = %detail, "internal error");
        RpcError::Internal(detail)
    }

    /// The JSON-RPC error code of this error.
    pub fn code(&self) -> i32 {
        match self {
            RpcError::Unauthenticated(_) => UNAUTHENTICATED,
            RpcError::PermissionDenied(_) => PERMISSION_ERROR,
            RpcError::AuthenticationFailed => AUTHENTICATION_FAILED,
            RpcError::UsernameTaken => USERNAME_TAKEN,
            RpcError::TooManyRequests { .. } => TOO_MANY_REQUESTS,
            RpcError::InvalidParams(_) => INVALID_PARAMS,
            RpcError::Internal(_) => INTERNAL_ERROR,
        }
    }

    /// The contract's message for this error's code.
    pub fn message(&self) -> &'static str {
        message_for(self.code())
    }
}

/// The contract's message for one of its codes (`""` for a foreign code).
pub fn message_for(code: i32) -> &'static str {
    match code {
        UNAUTHENTICATED => "Unauthenticated",
        PERMISSION_ERROR => "Permission error",
        AUTHENTICATION_FAILED => "Authentication failed",
        USERNAME_TAKEN => "Username taken",
        TOO_MANY_REQUESTS => "Too many requests",
        INVALID_PARAMS => "Invalid params",
        INTERNAL_ERROR => "Internal error",
        _ => "",
    }
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(err: RpcError) -> Self {
        let code = err.code();
        let message = message_for(code);
        let data = match err {
            RpcError::Unauthenticated(reason) => Some(json!({ "reason": reason.as_str() })),
            RpcError::PermissionDenied(missing) => Some(json!({ "missing_scopes": missing })),
            RpcError::TooManyRequests { retry_after_s } => {
                Some(json!({ "retry_after_s": retry_after_s }))
            }
            RpcError::InvalidParams(what) => Some(json!(what)),
            RpcError::AuthenticationFailed | RpcError::UsernameTaken | RpcError::Internal(_) => {
                None
            }
        };
        ErrorObject::owned(code, message, data)
    }
}
