//! A security scheme: one value, declared once, that names the scheme in
//! the document, requires scopes of methods, builds callers and reads the
//! credential it carries.

use std::borrow::Cow;
use std::collections::BTreeMap;

use super::{Caller, IntoScopes, MethodSecurity};

/// The kind of a security scheme, as the document's
/// `x-securitySchemes[..].type` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SchemeKind {
    /// `Authorization: Bearer <token>` (`"bearer"`).
    Bearer,
    /// A key in a header of the scheme's own (`"apiKey"`).
    ApiKey,
}

impl SchemeKind {
    /// The document's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemeKind::Bearer => "bearer",
            SchemeKind::ApiKey => "apiKey",
        }
    }
}

/// Where a scheme's credential travels (`x-securitySchemes[..].in`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CredentialLocation {
    /// A request header (for WebSocket: a header of the upgrade).
    Header,
}

impl CredentialLocation {
    /// The document's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialLocation::Header => "header",
        }
    }
}

/// A security scheme: its name, kind, the header its credential travels
/// in, and how the document describes it.
///
/// Declare each scheme once and use the value everywhere: to require
/// scopes of a method ([`Scheme::require`]), in the security function
/// that serves it ([`crate::SecurityFn::new`],
/// [`crate::ApiKeySecurity::new`]), to build its callers
/// ([`Scheme::caller`]) and to read its credential
/// ([`crate::Credentials::get`]). A string typed in three places cannot
/// drift apart.
///
/// ```
/// use rpcguard::Scheme;
/// const KEY: Scheme = Scheme::api_key("ApiKey", "x-api-key");
/// let admin = KEY.require(["admin"]);
/// let anyone_with_a_key = KEY.require(());
/// assert_eq!(admin.schemes().collect::<Vec<_>>(), ["ApiKey"]);
/// assert!(anyone_with_a_key.alternatives()[0].scopes.is_empty());
/// let bot = KEY.caller("bot", ["admin"]);
/// assert!(admin.admits(&bot));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    name: Cow<'static, str>,
    kind: SchemeKind,
    header: Cow<'static, str>,
    bearer_format: Option<Cow<'static, str>>,
    description: Cow<'static, str>,
    extensions: BTreeMap<String, serde_json::Value>,
}

impl Scheme {
    /// A bearer scheme named `name`: `Authorization: Bearer <token>` (or a
    /// WebSocket upgrade's `access_token`), tokens in the JWT format
    /// ([`Scheme::bearer_format`] changes it).
    pub const fn bearer(name: &'static str) -> Self {
        Scheme {
            name: Cow::Borrowed(name),
            kind: SchemeKind::Bearer,
            header: Cow::Borrowed("Authorization"),
            bearer_format: Some(Cow::Borrowed("JWT")),
            description: Cow::Borrowed(""),
            extensions: BTreeMap::new(),
        }
    }

    /// An API-key scheme named `name`, its key in the header `header`
    /// (matched without regard to case).
    pub const fn api_key(name: &'static str, header: &'static str) -> Self {
        Scheme {
            name: Cow::Borrowed(name),
            kind: SchemeKind::ApiKey,
            header: Cow::Borrowed(header),
            bearer_format: None,
            description: Cow::Borrowed(""),
            extensions: BTreeMap::new(),
        }
    }

    /// The same scheme under a name built at run time.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Cow::Owned(name.into());
        self
    }

    /// What the scheme is and how to obtain a credential (CommonMark), for
    /// the document and the `/docs` page.
    #[must_use]
    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.description = Cow::Owned(description.into());
        self
    }

    /// The token format of a bearer scheme (`"JWT"` unless set).
    #[must_use]
    pub fn bearer_format(mut self, format: impl Into<String>) -> Self {
        if self.kind == SchemeKind::Bearer {
            self.bearer_format = Some(Cow::Owned(format.into()));
        }
        self
    }

    /// Adds the extra field `name` (which should start with `x-`) to the
    /// scheme's entry in the document (e.g. `x-issuers`).
    #[must_use]
    pub fn with_extension(mut self, name: &str, value: serde_json::Value) -> Self {
        self.extensions.insert(name.to_owned(), value);
        self
    }

    /// Adds `text` to the description unless it is there already.
    #[cfg(feature = "oidc")]
    pub(crate) fn append_description(&mut self, text: &str) {
        if !self.description.contains(text) {
            self.description.to_mut().push_str(text);
        }
    }

    /// The extra fields of the document's entry, to change.
    #[cfg(feature = "oidc")]
    pub(crate) fn extensions_mut(&mut self) -> &mut BTreeMap<String, serde_json::Value> {
        &mut self.extensions
    }

    /// The scheme's name, as requirements and callers carry it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bearer or API key.
    pub fn kind(&self) -> SchemeKind {
        self.kind
    }

    /// Where the credential travels.
    pub fn location(&self) -> CredentialLocation {
        CredentialLocation::Header
    }

    /// The header the credential travels in (`Authorization` for bearer
    /// schemes).
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The token format of a bearer scheme.
    pub fn token_format(&self) -> Option<&str> {
        self.bearer_format.as_deref()
    }

    /// The description given with [`Scheme::describe`].
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The extra fields of the document's entry.
    pub fn extensions(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.extensions
    }

    /// A requirement: a caller authenticated in this scheme holding every
    /// one of `scopes` (`()` or `[]`: any caller of this scheme). Combine
    /// alternatives with [`MethodSecurity::or`].
    pub fn require(&self, scopes: impl IntoScopes) -> MethodSecurity {
        MethodSecurity::any_of([super::Requirement::new(self.name(), scopes)])
    }

    /// A caller authenticated in this scheme, for a security function to
    /// return.
    pub fn caller(&self, subject: impl Into<String>, scopes: impl IntoScopes) -> Caller {
        Caller::new(subject, self.name(), scopes)
    }
}
