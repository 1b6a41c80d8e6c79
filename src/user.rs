//! The account domain: parsed usernames, passwords and scopes, and the public
//! view of a user.
//!
//! Parse, don't validate: each newtype's constructor is the only place its
//! rules live, and the params of `sign_up`/`sign_in` deserialize straight into
//! these types, so a handler never sees an unchecked value.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// Name of the built-in Bearer (JWT) security scheme.
pub use rpcguard::security::BEARER;

/// A username: 3 to 64 ASCII letters, digits, `_`, `.` or `-`.
///
/// Only ASCII is accepted, so Unicode look-alikes (Cyrillic `а` for Latin
/// `a`, full-width letters, …) are refused rather than normalised. Names are
/// unique case-insensitively: [`Username::key`] is the lower-cased form that
/// the store's unique constraint is built on.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    /// Shortest accepted username, in characters.
    pub const MIN_LEN: usize = 3;
    /// Longest accepted username, in characters.
    pub const MAX_LEN: usize = 64;

    /// Parses a username, saying what is wrong without echoing the input.
    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        let len = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(format!(
                "username must be {} to {} characters long",
                Self::MIN_LEN,
                Self::MAX_LEN
            ));
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        {
            return Err("username may contain only ASCII letters, digits, '_', '.' and '-'".into());
        }
        Ok(Username(raw))
    }

    /// The name as the user chose it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-folded key that makes `Alice` and `alice` one account.
    pub fn key(&self) -> String {
        self.0.to_ascii_lowercase()
    }
}

impl TryFrom<String> for Username {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Username::parse(raw)
    }
}

impl From<Username> for String {
    fn from(name: Username) -> String {
        name.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({})", self.0)
    }
}

impl JsonSchema for Username {
    fn schema_name() -> Cow<'static, str> {
        "Username".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "3 to 64 ASCII letters, digits, '_', '.' or '-'; unique case-insensitively.",
            "minLength": 3,
            "maxLength": 64,
            "pattern": "^[A-Za-z0-9_.-]{3,64}$"
        })
    }
}

/// A password: 8 to 72 bytes of UTF-8, no NUL byte.
///
/// bcrypt ignores every byte past the 72nd, so a longer password is refused
/// instead of being silently truncated; NUL ends a C string in some bcrypt
/// implementations, so it is refused too. `Debug` never shows the value.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Password(String);

impl Password {
    /// Fewest accepted bytes.
    pub const MIN_BYTES: usize = 8;
    /// Most accepted bytes (bcrypt's limit).
    pub const MAX_BYTES: usize = 72;

    /// Parses a password, saying what is wrong without echoing it.
    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        if raw.len() < Self::MIN_BYTES || raw.len() > Self::MAX_BYTES {
            return Err(format!(
                "password must be {} to {} bytes long (UTF-8)",
                Self::MIN_BYTES,
                Self::MAX_BYTES
            ));
        }
        if raw.contains('\0') {
            return Err("password must not contain NUL bytes".into());
        }
        Ok(Password(raw))
    }

    /// The secret itself; only the password hasher should read it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Password {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Password::parse(raw)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl JsonSchema for Password {
    fn schema_name() -> Cow<'static, str> {
        "Password".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "8 to 72 bytes of UTF-8 (bcrypt's limit), no NUL byte.",
            "minLength": 8,
            "maxLength": 72
        })
    }
}

/// A scope name: 1 to 64 ASCII letters, digits, `_`, `.`, `:` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    /// Parses a scope name.
    pub fn parse(raw: impl Into<String>) -> Result<Self, String> {
        let raw = raw.into();
        let ok_chars = raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b));
        if raw.is_empty() || raw.len() > 64 || !ok_chars {
            return Err("scope must be 1 to 64 ASCII letters, digits, '_', '.', ':' or '-'".into());
        }
        Ok(Scope(raw))
    }

    /// The scope name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Scope {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, String> {
        Scope::parse(raw)
    }
}

impl From<Scope> for String {
    fn from(scope: Scope) -> String {
        scope.0
    }
}

impl JsonSchema for Scope {
    fn schema_name() -> Cow<'static, str> {
        "Scope".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A scope name: 1 to 64 ASCII letters, digits, '_', '.', ':' or '-'.",
            "minLength": 1,
            "maxLength": 64,
            "pattern": "^[A-Za-z0-9_.:-]{1,64}$"
        })
    }
}

impl AsRef<str> for Scope {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user as callers see it. It never carries the password hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct User {
    /// The username as chosen at sign-up (for a caller of an external identity provider: its token's `sub`).
    pub username: String,
    /// Granted scopes per security scheme, e.g. `{"Bearer": ["scope1"]}`.
    pub scopes: BTreeMap<String, Vec<String>>,
    /// When the account was created (RFC 3339, UTC; for a caller of an external identity provider: when its token was issued).
    pub created_at: String,
}

#[cfg(feature = "oidc")]
impl User {
    /// What `get_caller` shows for a caller of an external identity
    /// provider, who has no account here: its `sub` as the username, the
    /// scopes its token grants (in the caller's scheme), and the token's
    /// `iat` (`now`, the time of the call, when it has none) as
    /// `created_at`.
    pub fn external(
        caller: &rpcguard::Caller,
        identity: &rpcguard::security::oidc::ExternalIdentity,
        now: Option<u64>,
    ) -> Self {
        let issued = identity.issued_at.or(now).unwrap_or(0);
        User {
            username: identity.subject.clone(),
            scopes: BTreeMap::from([(
                caller.scheme.clone(),
                caller.scopes.iter().cloned().collect(),
            )]),
            created_at: crate::clock::format_rfc3339(i64::try_from(issued).unwrap_or(0)),
        }
    }
}

/// The answer of `sign_in` and `refresh`: an OAuth2-style bearer token
/// (RFC 6749 §5.1) and the refresh token that renews it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Token {
    /// The signed JWT to send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `"bearer"`.
    pub token_type: String,
    /// Seconds until the access token expires.
    #[schemars(range(min = 0))]
    pub expires_in: u64,
    /// Opaque, single use: `refresh` takes it and answers a new `Token`
    /// (with a new refresh token). Presenting it a second time ends the
    /// session.
    pub refresh_token: String,
    /// The Bearer scopes the token may use now, space-separated (RFC 6749
    /// §3.3): those the user holds within the limit `sign_in` asked for.
    pub scope: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &"<redacted>")
            .field("scope", &self.scope)
            .finish()
    }
}
