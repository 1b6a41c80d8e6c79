//! The wire contract's error objects, in one place.
//!
//! Every module has its own error enum; each converts into [`RpcError`], and
//! [`RpcError`] is turned into a JSON-RPC error object by exactly one
//! conversion (`impl From<RpcError> for ErrorObjectOwned`). Details of
//! internal failures go to the log, never to the caller.
//!
//! Handlers return their own application errors with [`RpcError::custom`],
//! and declare them (code and message) with
//! [`Method::error`](crate::Method::error) so that the OpenRPC document
//! lists them. Application codes live outside the range JSON-RPC 2.0
//! reserves (`-32768..=-32000`, see [`is_reserved`]), which holds every code
//! of the contract above.

use std::collections::BTreeMap;

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `-32001 Unauthenticated`.
pub const UNAUTHENTICATED: i32 = -32001;
/// `-32002 Authentication failed` (sign_in: unknown user or wrong password).
pub const AUTHENTICATION_FAILED: i32 = -32002;
/// `-32003 Username taken`.
pub const USERNAME_TAKEN: i32 = -32003;
/// `-32004 Account disabled` (sign_in with the right password on a
/// disabled account).
pub const ACCOUNT_DISABLED: i32 = -32004;
/// `-32005 Too many requests`.
pub const TOO_MANY_REQUESTS: i32 = -32005;
/// `-32099 Permission error` (signed in, a declared scope is missing).
pub const PERMISSION_ERROR: i32 = -32099;
/// `-32602 Invalid params`.
pub const INVALID_PARAMS: i32 = -32602;
/// `-32603 Internal error`.
pub const INTERNAL_ERROR: i32 = -32603;

/// The codes JSON-RPC 2.0 reserves for itself and for server errors (§5.1):
/// every code of the wire contract is in here, no application error may be.
pub const RESERVED_CODES: std::ops::RangeInclusive<i32> = -32768..=-32000;

/// True when `code` is reserved by JSON-RPC 2.0 (and so by the contract),
/// i.e. not available to [`RpcError::custom`] and
/// [`Method::error`](crate::Method::error).
pub fn is_reserved(code: i32) -> bool {
    RESERVED_CODES.contains(&code)
}

/// Why a secured call was refused with `-32001`; its
/// [`as_str`](AuthFailure::as_str) is the `reason` of the error's `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(description = "Why a secured call was refused with -32001 Unauthenticated.")]
#[non_exhaustive]
pub enum AuthFailure {
    /// No credentials were presented.
    MissingToken,
    /// Malformed, bad signature, wrong algorithm, audience or issuer, or a
    /// token whose user no longer exists.
    InvalidToken,
    /// The token's `exp` has passed.
    ExpiredToken,
    /// The caller is authenticated, but only in schemes the method does
    /// not accept (e.g. an API key on a Bearer-only method): it should
    /// present a credential of one of the method's schemes (its
    /// `x-security` in the document). `{"reason":"wrong_scheme"}`.
    WrongScheme,
    /// The token is genuine and unexpired, but the session it belongs to
    /// was ended (sign-out, refresh-token reuse, password change, disabled
    /// account, an operator's sign-out). `{"reason":"revoked_token"}`.
    RevokedToken,
}

impl AuthFailure {
    /// The `reason` string sent in the error's `data`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::InvalidToken => "invalid_token",
            AuthFailure::ExpiredToken => "expired_token",
            AuthFailure::WrongScheme => "wrong_scheme",
            AuthFailure::RevokedToken => "revoked_token",
        }
    }
}

/// Scopes missing per security scheme, as sent in `-32099`'s data.
pub type MissingScopes = BTreeMap<String, Vec<String>>;

// The `data` of the contract's errors. The error conversion below
// serializes these types and the OpenRPC document describes each error's
// `data` with their schemas (`data_schema_for`), so the wire and the
// document cannot drift apart. Their `schemars(description)` is the text the
// document shows; the doc comments are for Rust callers.

/// The `data` of a `-32001 Unauthenticated` error, e.g.
/// `{"reason":"missing_token"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "The data of a -32001 Unauthenticated error.")]
pub struct UnauthenticatedData {
    /// Why the call was not authenticated.
    pub reason: AuthFailure,
}

/// The `data` of a `-32099 Permission error`, e.g.
/// `{"missing_scopes":{"Bearer":["scope1"]}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "The data of a -32099 Permission error.")]
pub struct PermissionErrorData {
    /// The scopes the caller lacks, per security scheme.
    pub missing_scopes: MissingScopes,
}

/// The `data` of a `-32005 Too many requests`, e.g. `{"retry_after_s":12}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "The data of a -32005 Too many requests error.")]
pub struct TooManyRequestsData {
    /// Seconds after which a retry may succeed.
    pub retry_after_s: u64,
}

/// The `data` of a `-32602 Invalid params`: what is wrong with the params,
/// never the input itself, e.g. `"too many positional params: this method
/// takes at most 2"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
#[schemars(
    description = "The data of a -32602 Invalid params error: what is wrong with the params (never the input itself)."
)]
pub struct InvalidParamsData(pub String);

/// Every error a caller can see. Converting it into a JSON-RPC error object
/// is the only place where codes, messages and `data` are chosen.
///
/// A handler's own errors are [`RpcError::Custom`], made with
/// [`RpcError::custom`]:
///
/// ```
/// use rpcguard::RpcError;
/// use serde_json::json;
///
/// const QUOTA_EXCEEDED: i32 = 4001;
/// let err = RpcError::custom(QUOTA_EXCEEDED, "Quota exceeded", Some(json!({"limit": 10})));
/// assert_eq!(err.code(), 4001);
/// assert_eq!(err.message(), "Quota exceeded");
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
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
    /// `-32004`: the password was right but the account is disabled.
    #[error("account disabled")]
    AccountDisabled,
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
    /// An application error of the handler's own, sent as it is: `code`,
    /// `message` and (when present) `data`. Declare it on the method with
    /// [`Method::error`](crate::Method::error) so the document lists it.
    ///
    /// The code must be outside JSON-RPC's reserved range
    /// (`-32768..=-32000`, [`is_reserved`]): a reserved code would let a
    /// handler impersonate the framework (a fake `-32001`), so such an
    /// error is logged and answered as `-32603 Internal error` instead.
    /// `data` is sent to the caller: never put secrets or internals in it.
    #[error("application error {code}: {message}")]
    Custom {
        /// The application's code (outside `-32768..=-32000`).
        code: i32,
        /// The message sent with it.
        message: String,
        /// Extra JSON sent as the error's `data`.
        data: Option<Value>,
    },
}

impl RpcError {
    /// An internal error; the detail is logged here at error level and only
    /// the contract's `Internal error` reaches the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let detail = detail.to_string();
        tracing::error!(error = %detail, "internal error");
        RpcError::Internal(detail)
    }

    /// An application error with the handler's own `code`, `message` and
    /// optional `data` (see [`RpcError::Custom`]; reserved codes are
    /// answered as `-32603`).
    pub fn custom(code: i32, message: impl Into<String>, data: Option<Value>) -> Self {
        RpcError::Custom {
            code,
            message: message.into(),
            data,
        }
    }

    /// The JSON-RPC error code the caller receives.
    pub fn code(&self) -> i32 {
        match self {
            RpcError::Unauthenticated(_) => UNAUTHENTICATED,
            RpcError::PermissionDenied(_) => PERMISSION_ERROR,
            RpcError::AuthenticationFailed => AUTHENTICATION_FAILED,
            RpcError::UsernameTaken => USERNAME_TAKEN,
            RpcError::AccountDisabled => ACCOUNT_DISABLED,
            RpcError::TooManyRequests { .. } => TOO_MANY_REQUESTS,
            RpcError::InvalidParams(_) => INVALID_PARAMS,
            RpcError::Internal(_) => INTERNAL_ERROR,
            RpcError::Custom { code, .. } if is_reserved(*code) => INTERNAL_ERROR,
            RpcError::Custom { code, .. } => *code,
        }
    }

    /// The message the caller receives: the contract's for its codes, the
    /// application's own for [`RpcError::Custom`].
    pub fn message(&self) -> &str {
        match self {
            RpcError::Custom { code, message, .. } if !is_reserved(*code) => message,
            _ => message_for(self.code()),
        }
    }
}

/// The contract's message for one of its codes (`""` for a foreign code).
pub(crate) fn message_for(code: i32) -> &'static str {
    match code {
        UNAUTHENTICATED => "Unauthenticated",
        PERMISSION_ERROR => "Permission error",
        AUTHENTICATION_FAILED => "Authentication failed",
        USERNAME_TAKEN => "Username taken",
        ACCOUNT_DISABLED => "Account disabled",
        TOO_MANY_REQUESTS => "Too many requests",
        INVALID_PARAMS => "Invalid params",
        INTERNAL_ERROR => "Internal error",
        _ => "",
    }
}

/// The schema of the `data` the contract sends with one of its codes (a
/// `$ref` into the document's components), `None` for a code sent without
/// `data` or a code that is not the contract's.
pub(crate) fn data_schema_for(code: i32, generator: &mut SchemaGenerator) -> Option<Schema> {
    match code {
        UNAUTHENTICATED => Some(generator.subschema_for::<UnauthenticatedData>()),
        PERMISSION_ERROR => Some(generator.subschema_for::<PermissionErrorData>()),
        TOO_MANY_REQUESTS => Some(generator.subschema_for::<TooManyRequestsData>()),
        INVALID_PARAMS => Some(generator.subschema_for::<InvalidParamsData>()),
        _ => None,
    }
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(err: RpcError) -> Self {
        let code = err.code();
        let data = match err {
            RpcError::Custom {
                code: reserved,
                message,
                ..
            } if is_reserved(reserved) => {
                tracing::error!(
                    code = reserved,
                    message = %message,
                    "a handler returned an application error with a code reserved by JSON-RPC; answering -32603"
                );
                None
            }
            RpcError::Custom {
                code,
                message,
                data,
            } => {
                return ErrorObject::owned(code, message, data);
            }
            RpcError::Unauthenticated(reason) => Some(json!(UnauthenticatedData { reason })),
            RpcError::PermissionDenied(missing_scopes) => {
                Some(json!(PermissionErrorData { missing_scopes }))
            }
            RpcError::TooManyRequests { retry_after_s } => {
                Some(json!(TooManyRequestsData { retry_after_s }))
            }
            RpcError::InvalidParams(what) => Some(json!(InvalidParamsData(what))),
            RpcError::AuthenticationFailed
            | RpcError::UsernameTaken
            | RpcError::AccountDisabled
            | RpcError::Internal(_) => None,
        };
        ErrorObject::owned(code, message_for(code), data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_errors_keep_their_code_message_and_data() {
        let err = RpcError::custom(4001, "Quota exceeded", Some(json!({"limit": 10})));
        let object = ErrorObjectOwned::from(err);
        assert_eq!(object.code(), 4001);
        assert_eq!(object.message(), "Quota exceeded");
        assert_eq!(object.data().map(|d| d.get()), Some(r#"{"limit":10}"#));
        let bare = ErrorObjectOwned::from(RpcError::custom(-1, "Nope", None));
        assert_eq!((bare.code(), bare.data().is_none()), (-1, true));
    }

    #[test]
    fn reserved_codes_cannot_impersonate_the_framework() {
        for code in [-32001, -32099, -32602, -32768, -32000] {
            let err = RpcError::custom(code, "Unauthenticated", Some(json!({"reason": "x"})));
            assert_eq!(
                (err.code(), err.message()),
                (INTERNAL_ERROR, "Internal error")
            );
            let object = ErrorObjectOwned::from(err);
            assert_eq!(object.code(), INTERNAL_ERROR);
            assert_eq!(object.message(), "Internal error");
            assert!(object.data().is_none());
        }
        assert!(!is_reserved(-31999) && !is_reserved(-32769));
    }

    #[test]
    fn data_is_what_the_data_types_serialize() {
        let data = |err: RpcError| {
            let object = ErrorObjectOwned::from(err);
            serde_json::from_str::<Value>(object.data().expect("data").get()).expect("JSON")
        };
        for reason in [
            AuthFailure::MissingToken,
            AuthFailure::InvalidToken,
            AuthFailure::ExpiredToken,
            AuthFailure::WrongScheme,
            AuthFailure::RevokedToken,
        ] {
            assert_eq!(
                data(RpcError::Unauthenticated(reason)),
                json!({ "reason": reason.as_str() })
            );
        }
        let missing = MissingScopes::from([("Bearer".to_owned(), vec!["scope1".to_owned()])]);
        assert_eq!(
            data(RpcError::PermissionDenied(missing)),
            json!({ "missing_scopes": { "Bearer": ["scope1"] } })
        );
        assert_eq!(
            data(RpcError::TooManyRequests { retry_after_s: 7 }),
            json!({ "retry_after_s": 7 })
        );
        assert_eq!(
            data(RpcError::InvalidParams("unknown param".into())),
            json!("unknown param")
        );
    }

    #[test]
    fn data_schemas_describe_the_contracts_codes_with_data() {
        let mut generator = crate::schema::schema_settings().into_generator();
        let with_data = [
            (UNAUTHENTICATED, "UnauthenticatedData"),
            (PERMISSION_ERROR, "PermissionErrorData"),
            (TOO_MANY_REQUESTS, "TooManyRequestsData"),
            (INVALID_PARAMS, "InvalidParamsData"),
        ];
        for (code, name) in with_data {
            let schema = data_schema_for(code, &mut generator).expect("a data schema");
            assert_eq!(
                schema.get("$ref").and_then(Value::as_str),
                Some(format!("#/components/schemas/{name}").as_str())
            );
        }
        for code in [AUTHENTICATION_FAILED, USERNAME_TAKEN, INTERNAL_ERROR, 4001] {
            assert!(data_schema_for(code, &mut generator).is_none(), "{code}");
        }
        let definitions = generator.take_definitions(true);
        let reasons: Vec<&str> = definitions["AuthFailure"]["oneOf"]
            .as_array()
            .expect("one entry per reason")
            .iter()
            .filter_map(|variant| variant["const"].as_str())
            .collect();
        assert_eq!(
            reasons,
            [
                "missing_token",
                "invalid_token",
                "expired_token",
                "wrong_scheme",
                "revoked_token"
            ]
        );
    }

    #[test]
    fn wrong_scheme_has_its_own_reason() {
        let object = ErrorObjectOwned::from(RpcError::Unauthenticated(AuthFailure::WrongScheme));
        assert_eq!(
            object.data().map(|d| d.get()),
            Some(r#"{"reason":"wrong_scheme"}"#)
        );
    }
}

/// What went wrong with a file, said once and plainly: "no such file",
/// "permission denied", or the system's own words for anything else (never
/// the `(os error N)` suffix repeated by a wrapping error).
pub fn io_cause(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        std::io::ErrorKind::IsADirectory => "it is a directory".to_owned(),
        _ => {
            let text = err.to_string();
            match text.find(" (os error") {
                Some(at) => text[..at].to_owned(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod io_cause_tests {
    use super::io_cause;
    use std::io::{Error, ErrorKind};

    #[test]
    fn each_cause_is_said_once_without_the_os_code() {
        assert_eq!(io_cause(&Error::from(ErrorKind::NotFound)), "no such file");
        assert_eq!(
            io_cause(&Error::from(ErrorKind::PermissionDenied)),
            "permission denied"
        );
        assert_eq!(
            io_cause(&Error::from_raw_os_error(28)),
            "No space left on device"
        );
    }
}
