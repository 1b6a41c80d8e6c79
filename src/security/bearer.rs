//! The default security function: a JWT bearer token, checked against the
//! user store on every call.
//!
//! Loading the user on each call (one indexed read) is what makes a revoked
//! scope or a deleted user stop working at once, and what makes a WebSocket
//! session stop authorizing calls at its token's `exp`.

use async_trait::async_trait;

use super::{Caller, Credentials, SchemeDoc, SecurityFunction};
use crate::auth::token::TokenKeys;
use crate::error::{AuthFailure, RpcError};
use crate::store::SharedStore;
use crate::user::BEARER;

/// Verifies `Authorization: Bearer <jwt>` and loads the user it names.
#[derive(Clone)]
pub struct BearerSecurity {
    keys: TokenKeys,
    store: SharedStore,
}

impl std::fmt::Debug for BearerSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BearerSecurity")
            .field("keys", &self.keys)
            .finish()
    }
}

impl BearerSecurity {
    /// A bearer security function over these keys and this store.
    pub fn new(keys: TokenKeys, store: SharedStore) -> Self {
        BearerSecurity { keys, store }
    }

    /// The Bearer scheme's description.
    pub fn scheme_doc() -> SchemeDoc {
        SchemeDoc {
            name: BEARER.to_owned(),
            kind: "bearer".to_owned(),
            location: "header".to_owned(),
            header: "Authorization".to_owned(),
            bearer_format: Some("JWT".to_owned()),
            description:
                "A JWT access token from `sign_in`, sent as `Authorization: Bearer <token>` \
                          (or, for a WebSocket upgrade, as the `access_token` query parameter)."
                    .to_owned(),
        }
    }
}

#[async_trait]
impl SecurityFunction for BearerSecurity {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Option<Caller>, RpcError> {
        let Some(token) = credentials
            .bearer_token()
            .map_err(RpcError::Unauthenticated)?
        else {
            return Ok(None);
        };
        let claims = self.keys.verify(token).map_err(RpcError::Unauthenticated)?;
        let user = self
            .store
            .find_user(&claims.sub)
            .await?
            .ok_or(RpcError::Unauthenticated(AuthFailure::InvalidToken))?;
        // A token issued before the account was created belongs to an
        // earlier, deleted account of the same name.
        if i64::try_from(claims.iat).unwrap_or(i64::MAX) < user.created_at {
            return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
        }
        let public = user.public();
        Ok(Some(
            Caller::new(public.username.clone(), BEARER, user.scopes).with_user(public),
        ))
    }

    fn schemes(&self) -> Vec<SchemeDoc> {
        vec![Self::scheme_doc()]
    }
}
