//! Credentials bound to a WebSocket session after its upgrade.
//!
//! A WebSocket session is authorized by what its upgrade request carried
//! (the `Authorization` header or the `access_token` query parameter).
//! Tokens expire, and a session may outlive many of them. So every
//! WebSocket session also has a [`SessionCredentials`] slot, shared by all
//! its calls: a method may *bind* new credentials into it (the accounts
//! crate's `authenticate(access_token)` does, after checking the token),
//! and from then on the security middleware authorizes the session's later
//! calls with the bound credentials instead of the upgrade's. Binding again
//! replaces them, so a client that refreshes its token keeps its session.
//!
//! The bound credentials are checked on every call exactly like the
//! upgrade's: binding a token grants nothing by itself, it only changes
//! what the security function is given. An HTTP request has no session and
//! no slot: [`CallContext::session`](crate::CallContext::session) is `None`
//! there.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION};

use super::Credentials;
use crate::error::AuthFailure;

/// The replaceable credentials of one WebSocket session (see the module
/// docs). Cheap to clone: every clone is the same slot.
#[derive(Clone, Default)]
pub struct SessionCredentials(Arc<RwLock<Option<Credentials>>>);

impl std::fmt::Debug for SessionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCredentials")
            .field("bound", &self.current().is_some())
            .finish()
    }
}

impl SessionCredentials {
    /// Binds `credentials` to the session: its later calls are authorized
    /// with them instead of the upgrade's (or of what was bound before).
    pub fn bind(&self, credentials: Credentials) {
        if let Ok(mut slot) = self.0.write() {
            *slot = Some(credentials);
        }
    }

    /// Binds a bearer token, as if the session's calls carried
    /// `Authorization: Bearer <token>` from now on. `invalid_token` when the
    /// token cannot be a header value.
    pub fn bind_bearer(
        &self,
        token: &str,
        remote_addr: Option<SocketAddr>,
    ) -> Result<(), AuthFailure> {
        let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| AuthFailure::InvalidToken)?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        self.bind(Credentials::new(headers, None, remote_addr));
        Ok(())
    }

    /// Drops what was bound: the upgrade's credentials apply again.
    pub fn clear(&self) {
        if let Ok(mut slot) = self.0.write() {
            *slot = None;
        }
    }

    /// The credentials bound now, if any.
    pub fn current(&self) -> Option<Credentials> {
        self.0.read().ok().and_then(|slot| slot.clone())
    }
}

/// The credentials a call presents: those its WebSocket session bound, if
/// any, else the request's (the upgrade's, on a WebSocket session). The
/// security middleware and [`CallContext::credentials`](crate::CallContext::credentials)
/// both read them here, so they cannot disagree.
pub(crate) fn presented(
    extensions: &jsonrpsee::Extensions,
) -> Option<std::borrow::Cow<'_, Credentials>> {
    if let Some(bound) = extensions
        .get::<SessionCredentials>()
        .and_then(SessionCredentials::current)
    {
        return Some(std::borrow::Cow::Owned(bound));
    }
    extensions
        .get::<Credentials>()
        .map(std::borrow::Cow::Borrowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_replaces_and_clear_forgets() {
        let slot = SessionCredentials::default();
        assert!(slot.current().is_none());
        let shared = slot.clone();
        slot.bind_bearer("first", None).expect("bind");
        assert_eq!(
            shared
                .current()
                .and_then(|c| c.bearer_token().ok().flatten().map(str::to_owned)),
            Some("first".to_owned())
        );
        shared.bind_bearer("second", None).expect("bind");
        assert_eq!(
            slot.current()
                .and_then(|c| c.bearer_token().ok().flatten().map(str::to_owned)),
            Some("second".to_owned())
        );
        assert!(slot.bind_bearer("bad\nvalue", None).is_err());
        slot.clear();
        assert!(shared.current().is_none());
    }
}
