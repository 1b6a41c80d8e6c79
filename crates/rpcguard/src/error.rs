//! The wire contract's error objects, in one place.
//!
//! Every module has its own error enum; each converts into [`RpcError`], and
//! [`RpcError`] is turned into a JSON-RPC error object by exactly one
//! conversion (`impl From<RpcError> for ErrorObjectOwned`). Details of
//! internal failures go to the log, never to the caller.
//!
//! Handlers return their own application errors with [`RpcError::custom`],
//! and declare them (code, message and the type of their `data`) with
//! [`Method::error`](crate::Method::error) so that the OpenRPC document
//! lists them. An application code is an [`ErrorCode`]: anything but the
//! codes JSON-RPC 2.0 predefines (`-32768..=-32100`) and the framework's
//! own (`-32001`, `-32005`, `-32099`), see [`is_reserved`]. The rest of
//! `-32099..=-32000` is JSON-RPC's range for implementation-defined server
//! errors, open to the application (`rpcguard-accounts` uses `-32002` to
//! `-32004`).
//!
//! `?` works on any [`std::error::Error`] in a handler: it becomes
//! `-32603 Internal error`, its text logged with the method and request id
//! and never sent.

use std::borrow::Cow;
use std::collections::BTreeMap;

use jsonrpsee::types::{ErrorObject, ErrorObjectOwned};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// `-32001 Unauthenticated`.
pub const UNAUTHENTICATED: i32 = -32001;
/// `-32005 Too many requests`.
pub const TOO_MANY_REQUESTS: i32 = -32005;
/// `-32099 Permission error` (signed in, a declared scope is missing).
pub const PERMISSION_ERROR: i32 = -32099;
/// `-32602 Invalid params`.
pub const INVALID_PARAMS: i32 = -32602;
/// `-32603 Internal error`.
pub const INTERNAL_ERROR: i32 = -32603;

/// True when `code` is not available to an application: one JSON-RPC 2.0
/// predefines or reserves (`-32768..=-32100`: parse error, invalid
/// request, method not found, invalid params, internal error, …) or one of
/// the framework's own (`-32001`, `-32005`, `-32099`), which only the
/// framework may send, so that a handler cannot impersonate it.
pub const fn is_reserved(code: i32) -> bool {
    (code >= -32768 && code <= -32100)
        || code == UNAUTHENTICATED
        || code == TOO_MANY_REQUESTS
        || code == PERMISSION_ERROR
}

/// An application's error code: checked once, where it is made, never to
/// be one [`is_reserved`] refuses.
///
/// Made in a `const`, a reserved code does not compile:
///
/// ```compile_fail
/// const MINE: rpcguard::ErrorCode = rpcguard::ErrorCode::new(-32001);
/// # let _ = MINE;
/// ```
///
/// ```
/// use rpcguard::ErrorCode;
/// const QUOTA_EXCEEDED: ErrorCode = ErrorCode::new(4001);
/// assert_eq!(QUOTA_EXCEEDED.get(), 4001);
/// assert!(ErrorCode::try_new(-32603).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ErrorCode(i32);

impl ErrorCode {
    /// The code `code`. Panics when it is reserved ([`is_reserved`]):
    /// in a `const` that is a compile error; for a code known only at run
    /// time use [`ErrorCode::try_new`].
    pub const fn new(code: i32) -> Self {
        if is_reserved(code) {
            panic!("this error code is reserved by JSON-RPC or by rpcguard: pick one outside -32768..=-32100 that is not -32001, -32005 or -32099");
        }
        ErrorCode(code)
    }

    /// The code `code`, or `None` when it is reserved.
    pub const fn try_new(code: i32) -> Option<Self> {
        if is_reserved(code) {
            None
        } else {
            Some(ErrorCode(code))
        }
    }

    /// The number.
    pub const fn get(self) -> i32 {
        self.0
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
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
/// use rpcguard::{ErrorCode, RpcError};
/// use serde_json::json;
///
/// const QUOTA_EXCEEDED: ErrorCode = ErrorCode::new(4001);
/// let err = RpcError::custom(QUOTA_EXCEEDED, "Quota exceeded", json!({"limit": 10}));
/// assert_eq!(err.code(), 4001);
/// assert_eq!(err.message(), "Quota exceeded");
/// // No data: `()`.
/// let bare = RpcError::custom(QUOTA_EXCEEDED, "Quota exceeded", ());
/// # let _ = bare;
/// ```
///
/// Any [`std::error::Error`] converts into [`RpcError::Internal`], so `?`
/// works on it in a handler (the reason `RpcError` itself does not
/// implement `std::error::Error`, as with `anyhow::Error`):
///
/// ```
/// use rpcguard::RpcError;
/// fn read() -> Result<String, RpcError> {
///     Ok(std::fs::read_to_string("/nonexistent/file")?)
/// }
/// assert_eq!(read().unwrap_err().code(), -32603);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum RpcError {
    /// `-32001`: credentials missing or not acceptable.
    Unauthenticated(AuthFailure),
    /// `-32099`: authenticated, but the declared scopes are not all held.
    PermissionDenied(MissingScopes),
    /// `-32005`: throttled; retry after this many seconds.
    TooManyRequests {
        /// Seconds after which a retry may succeed.
        retry_after_s: u64,
    },
    /// `-32602`: what is wrong with the params (never the input itself).
    InvalidParams(String),
    /// `-32603`: anything unexpected. The string is logged (with the
    /// method and request id, where the call is answered), never sent.
    Internal(String),
    /// An application error of the handler's own, sent as it is: `code`,
    /// `message` and (when present) `data`. Declare it on the method with
    /// [`Method::error`](crate::Method::error) so the document lists it.
    /// `data` is sent to the caller: never put secrets or internals in it.
    Custom {
        /// The application's code.
        code: ErrorCode,
        /// The message sent with it.
        message: Cow<'static, str>,
        /// Extra JSON sent as the error's `data`.
        data: Option<Value>,
    },
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RpcError::Unauthenticated(reason) => write!(f, "unauthenticated: {}", reason.as_str()),
            RpcError::PermissionDenied(_) => f.write_str("permission error"),
            RpcError::TooManyRequests { .. } => f.write_str("too many requests"),
            RpcError::InvalidParams(what) => write!(f, "invalid params: {what}"),
            RpcError::Internal(detail) => write!(f, "internal error: {detail}"),
            RpcError::Custom { code, message, .. } => {
                write!(f, "application error {code}: {message}")
            }
        }
    }
}

impl<E: std::error::Error> From<E> for RpcError {
    /// `-32603`; the error's text (and its sources') is logged where the
    /// call is answered, never sent.
    fn from(err: E) -> Self {
        let mut detail = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            detail.push_str(": ");
            detail.push_str(&cause.to_string());
            source = cause.source();
        }
        RpcError::Internal(detail)
    }
}

impl RpcError {
    /// An internal error (`-32603`); the detail is logged where the call is
    /// answered, with the method and request id, and only the contract's
    /// `Internal error` reaches the caller.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        RpcError::Internal(detail.to_string())
    }

    /// An application error with the handler's own `code`, `message` and
    /// `data` (any `Serialize`; `()` for none), see [`RpcError::Custom`].
    /// Data that does not serialize is logged and left out.
    pub fn custom(
        code: ErrorCode,
        message: impl Into<Cow<'static, str>>,
        data: impl Serialize,
    ) -> Self {
        let data = match serde_json::to_value(data) {
            Ok(Value::Null) => None,
            Ok(value) => Some(value),
            Err(err) => {
                tracing::error!(code = code.get(), error = %err, "an application error's data does not serialize; sent without it");
                None
            }
        };
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
            RpcError::TooManyRequests { .. } => TOO_MANY_REQUESTS,
            RpcError::InvalidParams(_) => INVALID_PARAMS,
            RpcError::Internal(_) => INTERNAL_ERROR,
            RpcError::Custom { code, .. } => code.get(),
        }
    }

    /// The message the caller receives: the contract's for its codes, the
    /// application's own for [`RpcError::Custom`].
    pub fn message(&self) -> &str {
        match self {
            RpcError::Custom { message, .. } => message,
            _ => message_for(self.code()),
        }
    }
}

/// Logs an internal error's detail where the call is answered: the
/// method and request id with it, at error level. Other errors are the
/// caller's business and are not logged here.
pub(crate) fn log_internal(err: &RpcError, method: &str, request_id: Option<&str>) {
    if let RpcError::Internal(detail) = err {
        tracing::error!(
            method,
            request_id = request_id.unwrap_or("-"),
            error = %detail,
            "internal error"
        );
    }
}

/// The contract's message for one of its codes (`""` for a foreign code).
pub(crate) fn message_for(code: i32) -> &'static str {
    match code {
        UNAUTHENTICATED => "Unauthenticated",
        PERMISSION_ERROR => "Permission error",
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
                code,
                message,
                data,
            } => {
                return ErrorObject::owned(code.get(), message, data);
            }
            RpcError::Unauthenticated(reason) => Some(json!(UnauthenticatedData { reason })),
            RpcError::PermissionDenied(missing_scopes) => {
                Some(json!(PermissionErrorData { missing_scopes }))
            }
            RpcError::TooManyRequests { retry_after_s } => {
                Some(json!(TooManyRequestsData { retry_after_s }))
            }
            RpcError::InvalidParams(what) => Some(json!(InvalidParamsData(what))),
            RpcError::Internal(_) => None,
        };
        ErrorObject::owned(code, message_for(code), data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_errors_keep_their_code_message_and_data() {
        let err = RpcError::custom(ErrorCode::new(4001), "Quota exceeded", json!({"limit": 10}));
        let object = ErrorObjectOwned::from(err);
        assert_eq!(object.code(), 4001);
        assert_eq!(object.message(), "Quota exceeded");
        assert_eq!(object.data().map(|d| d.get()), Some(r#"{"limit":10}"#));
        let bare = ErrorObjectOwned::from(RpcError::custom(ErrorCode::new(-1), "Nope", ()));
        assert_eq!((bare.code(), bare.data().is_none()), (-1, true));
    }

    #[test]
    fn reserved_codes_cannot_be_made() {
        for code in [
            -32001, -32005, -32099, -32602, -32603, -32700, -32768, -32100,
        ] {
            assert!(ErrorCode::try_new(code).is_none(), "{code}");
        }
        for code in [-32000, -32002, -32098, -31999, -32769, 0, 4001] {
            assert_eq!(ErrorCode::try_new(code).map(ErrorCode::get), Some(code));
        }
    }

    #[test]
    fn question_mark_on_any_error_is_internal_and_keeps_the_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("loading notes")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let err = RpcError::from(Outer(std::io::Error::other("disk gone")));
        assert!(matches!(&err, RpcError::Internal(d) if d == "loading notes: disk gone"));
        let object = ErrorObjectOwned::from(err);
        assert_eq!(
            (object.code(), object.message()),
            (INTERNAL_ERROR, "Internal error")
        );
        assert!(object.data().is_none());
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
        for code in [-32002, INTERNAL_ERROR, 4001] {
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
