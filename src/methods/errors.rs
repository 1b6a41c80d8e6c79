//! The accounts' own error codes (`-32002` to `-32004`) and the errors
//! that carry them. They are the application's, not the framework's:
//! JSON-RPC leaves `-32099..=-32000` to the implementation, and
//! [`rpcguard::ErrorCode`] accepts these three.

use rpcguard::{ErrorCode, RpcError};

/// `-32002 Authentication failed`: sign_in with an unknown user or a wrong
/// password (the same answer for both), or a wrong old password.
pub const AUTHENTICATION_FAILED: ErrorCode = ErrorCode::new(-32002);
/// `-32003 Username taken`: sign_up with a name that exists in any letter
/// case.
pub const USERNAME_TAKEN: ErrorCode = ErrorCode::new(-32003);
/// `-32004 Account disabled`: sign_in with the right password on a
/// disabled account.
pub const ACCOUNT_DISABLED: ErrorCode = ErrorCode::new(-32004);

/// The message of `-32002`.
pub const AUTHENTICATION_FAILED_MESSAGE: &str = "Authentication failed";
/// The message of `-32003`.
pub const USERNAME_TAKEN_MESSAGE: &str = "Username taken";
/// The message of `-32004`.
pub const ACCOUNT_DISABLED_MESSAGE: &str = "Account disabled";

/// `-32002 Authentication failed`, no data.
pub fn authentication_failed() -> RpcError {
    RpcError::custom(AUTHENTICATION_FAILED, AUTHENTICATION_FAILED_MESSAGE, ())
}

/// `-32003 Username taken`, no data.
pub fn username_taken() -> RpcError {
    RpcError::custom(USERNAME_TAKEN, USERNAME_TAKEN_MESSAGE, ())
}

/// `-32004 Account disabled`, no data.
pub fn account_disabled() -> RpcError {
    RpcError::custom(ACCOUNT_DISABLED, ACCOUNT_DISABLED_MESSAGE, ())
}
