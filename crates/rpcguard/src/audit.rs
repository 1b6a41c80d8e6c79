//! Security events: one `INFO` line per event on the tracing target
//! `rpcguard::audit`, with a fixed set of fields, so an operator can route
//! them apart from the call log (`RUST_LOG=rpcguard::audit=info`, or a
//! filter on `target` in the JSON log) and a SIEM can parse them.
//!
//! Fields, always all present (`-` when not known): `event` (one of
//! [`Event`]'s names), `username` (or the external subject), `issuer`
//! (external tokens only, else `-`), `client_addr`, `session`,
//! `request_id`, `reason`. Never a password, hash, token or refresh token:
//! the values are names, ids and fixed words.
//!
//! Unknown user and wrong password are one event (`sign_in_failed`,
//! reason `bad_credentials`), so the audit log is no enumeration oracle;
//! which of the two it was is logged at `DEBUG` only.

use std::net::IpAddr;

/// The security events (the contract's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An account was created.
    SignUp,
    /// A sign-in opened a session.
    SignIn,
    /// A sign-in was refused (reason: `bad_credentials`, `disabled`,
    /// `credentials_changed`).
    SignInFailed,
    /// A call was refused by a budget (reason: the budget).
    Throttled,
    /// A credential was refused (reason: `missing_token`, `invalid_token`,
    /// `expired_token`, `revoked_token`, `wrong_scheme`).
    TokenRefused,
    /// A session was refreshed.
    Refresh,
    /// A rotated refresh token was presented again; its session ended.
    RefreshReuse,
    /// A session ended by `sign_out` (reason `everywhere` when all of the
    /// user's did).
    SignOut,
    /// A password was changed.
    PasswordChanged,
    /// An account was disabled.
    AccountDisabled,
    /// An account was enabled.
    AccountEnabled,
    /// An account was deleted.
    AccountDeleted,
    /// Scopes were granted.
    ScopesGranted,
    /// Scopes were revoked.
    ScopesRevoked,
    /// Sessions were ended by an operator or a limit (reason says which).
    SessionsEnded,
    /// A new signing key joined the key set (reason: its `kid`).
    KeyRotated,
    /// A policy was put in force.
    PolicyReloaded,
    /// A policy was refused (the old one stays).
    PolicyRefused,
    /// An external issuer's keys were fetched.
    JwksFetched,
    /// Fetching an external issuer's keys failed.
    JwksFailed,
}

impl Event {
    /// The event's name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::SignUp => "sign_up",
            Event::SignIn => "sign_in",
            Event::SignInFailed => "sign_in_failed",
            Event::Throttled => "throttled",
            Event::TokenRefused => "token_refused",
            Event::Refresh => "refresh",
            Event::RefreshReuse => "refresh_reuse",
            Event::SignOut => "sign_out",
            Event::PasswordChanged => "password_changed",
            Event::AccountDisabled => "account_disabled",
            Event::AccountEnabled => "account_enabled",
            Event::AccountDeleted => "account_deleted",
            Event::ScopesGranted => "scopes_granted",
            Event::ScopesRevoked => "scopes_revoked",
            Event::SessionsEnded => "sessions_ended",
            Event::KeyRotated => "key_rotated",
            Event::PolicyReloaded => "policy_reloaded",
            Event::PolicyRefused => "policy_refused",
            Event::JwksFetched => "jwks_fetched",
            Event::JwksFailed => "jwks_failed",
        }
    }
}

impl Event {
    /// The event of this name ([`Event::as_str`]).
    pub fn from_name(name: &str) -> Option<Event> {
        const ALL: [Event; 20] = [
            Event::SignUp,
            Event::SignIn,
            Event::SignInFailed,
            Event::Throttled,
            Event::TokenRefused,
            Event::Refresh,
            Event::RefreshReuse,
            Event::SignOut,
            Event::PasswordChanged,
            Event::AccountDisabled,
            Event::AccountEnabled,
            Event::AccountDeleted,
            Event::ScopesGranted,
            Event::ScopesRevoked,
            Event::SessionsEnded,
            Event::KeyRotated,
            Event::PolicyReloaded,
            Event::PolicyRefused,
            Event::JwksFetched,
            Event::JwksFailed,
        ];
        ALL.into_iter().find(|event| event.as_str() == name)
    }
}

/// One security event, built field by field and written with
/// [`Audit::emit`].
#[derive(Debug, Clone, Copy)]
#[must_use = "an audit event is written by `emit`"]
pub struct Audit<'a> {
    event: Event,
    username: Option<&'a str>,
    issuer: Option<&'a str>,
    client: Option<IpAddr>,
    session: Option<&'a str>,
    request_id: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> Audit<'a> {
    /// An event with no field set yet.
    pub fn new(event: Event) -> Self {
        Audit {
            event,
            username: None,
            issuer: None,
            client: None,
            session: None,
            request_id: None,
            reason: None,
        }
    }

    /// The account (or external subject) concerned.
    pub fn username(mut self, username: &'a str) -> Self {
        self.username = Some(username);
        self
    }

    /// The external issuer of the subject.
    pub fn issuer(mut self, issuer: &'a str) -> Self {
        self.issuer = Some(issuer);
        self
    }

    /// The client's address (resolved behind trusted proxies).
    pub fn client(mut self, client: Option<IpAddr>) -> Self {
        self.client = client;
        self
    }

    /// The session concerned.
    pub fn session(mut self, session: &'a str) -> Self {
        self.session = Some(session);
        self
    }

    /// The request that caused it.
    pub fn request_id(mut self, request_id: Option<&'a str>) -> Self {
        self.request_id = request_id;
        self
    }

    /// Why (a fixed word).
    pub fn reason(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Writes the event.
    pub fn emit(self) {
        let client = self.client.map(|ip| ip.to_string());
        tracing::info!(
            target: "rpcguard::audit",
            event = self.event.as_str(),
            username = self.username.unwrap_or("-"),
            issuer = self.issuer.unwrap_or("-"),
            client_addr = client.as_deref().unwrap_or("-"),
            session = self.session.unwrap_or("-"),
            request_id = self.request_id.unwrap_or("-"),
            reason = self.reason.unwrap_or("-"),
            "security event"
        );
    }
}
