//! The state the account and session methods share: [`Accounts`] (the
//! store, the hasher, the token keys, the budgets). Each method takes it
//! from the service's own state through `AsRef<Accounts>`.

use rpcguard::audit::{Audit, Event};
use rpcguard::RpcError;

use crate::auth::password::PasswordHasher;
use crate::auth::token::TokenKeys;
use crate::session::SessionLimits;
use crate::store::{SharedStore, StoreError};
use crate::throttle::{RefreshThrottle, SignInThrottle};
use crate::user::{Scope, Username};

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
    /// Where the methods read the time (sessions, refresh tokens, account
    /// creation, password changes): the clock [`keys`](Self::keys) read
    /// too.
    pub clock: crate::clock::Clock,
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

impl Accounts {
    /// The time by [`clock`](Self::clock), in the seconds the store keeps;
    /// `-32603` when the clock is before 1970.
    pub(crate) fn now(&self) -> Result<i64, RpcError> {
        self.clock
            .unix_now()
            .and_then(|now| i64::try_from(now).ok())
            .ok_or_else(|| RpcError::internal("clock before 1970"))
    }

    /// Grants `scopes` (in the Bearer scheme) to the account `username`
    /// from the application's own code, as `rpcguard user grant` does from
    /// the command line: the account's tokens hold them from their next
    /// call on, on every instance, and a `scopes_granted` event is written
    /// (`reason` `app <scopes>`). A name or scope that is not valid, or an
    /// account that does not exist, is the application's mistake:
    /// `-32603`, logged. Answers the scopes the account holds now.
    pub async fn grant(&self, username: &str, scopes: &[&str]) -> Result<Vec<String>, RpcError> {
        let name = Username::parse(username).map_err(RpcError::internal)?;
        let scopes = scopes
            .iter()
            .map(|s| Scope::parse(*s).map_err(RpcError::internal))
            .collect::<Result<Vec<_>, _>>()?;
        let user = self
            .store
            .grant(&name, &scopes)
            .await
            .map_err(StoreError::into_rpc)?;
        let granted: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
        let reason = format!("app {}", granted.join(" "));
        Audit::new(Event::ScopesGranted)
            .username(name.as_str())
            .reason(&reason)
            .emit();
        Ok(user.scopes)
    }
}
