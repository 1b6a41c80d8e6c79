//! The state the account and session methods share: [`Accounts`] (the
//! store, the hasher, the token keys, the budgets). Each method takes it
//! from the service's own state through `AsRef<Accounts>`.

use crate::auth::password::PasswordHasher;
use crate::auth::token::TokenKeys;
use crate::session::SessionLimits;
use crate::store::SharedStore;
use crate::throttle::{RefreshThrottle, SignInThrottle};

/// What the account methods need: the store, the hasher, the token keys and
/// the sign-in throttle.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// Where users live.
    pub store: SharedStore,
    /// bcrypt on its bounded pool of low-priority threads.
    pub hasher: PasswordHasher,
    /// JWT signing and verification.
    pub keys: TokenKeys,
    /// Brute-force protection for `sign_in`, and the `sign_up` budget.
    pub throttle: SignInThrottle,
    /// The `refresh` budgets (per client address and per session).
    pub refresh_throttle: RefreshThrottle,
    /// What a caller can make the server keep per session and account.
    pub limits: SessionLimits,
    /// Sign-ins, sessions, bcrypt and the store, in the server's metrics.
    pub metrics: crate::metrics::AccountMetrics,
    /// Lifetime of a refresh token (each `refresh` issues one that lives
    /// this long).
    pub refresh_ttl: std::time::Duration,
    /// The external issuer whose tokens are accepted beside ours, if any
    /// (`authenticate` binds its tokens to a WebSocket session too).
    #[cfg(feature = "oidc")]
    pub external: Option<rpcguard::security::oidc::OidcSecurity>,
}

impl AsRef<Accounts> for Accounts {
    fn as_ref(&self) -> &Accounts {
        self
    }
}
