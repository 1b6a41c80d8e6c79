//! The default security function: a JWT bearer token, checked against the
//! user store on every call.
//!
//! A token names its account twice: by username (`sub`, to find the user)
//! and by account id (`uid`). A user whose
//! [`account_id`](crate::store::StoredUser::account_id) differs from the
//! token's `uid` is a different account of the same name (the token's
//! account was deleted and the name taken again): `invalid_token`. Account
//! ids are random and never reused, so this holds however quickly the name
//! is taken again (the earlier rule compared the token's `iat` with the
//! account's `created_at` in whole seconds, and a re-creation within the
//! same second revived the old token). Tokens without `uid` (issued by
//! versions before it) are refused by [`TokenKeys::verify`].
//!
//! The user is looked up on every call, which is what makes a revoked scope
//! or a deleted user stop working at once; with the server's store (a
//! [`CachedStore`](crate::store::CachedStore)) that lookup is answered
//! from an exact in-memory copy, without a database round trip. The token
//! itself is verified on every call, which is what makes a WebSocket
//! session stop authorizing calls at its token's `exp`.

use std::sync::Arc;

use async_trait::async_trait;

use rpcguard::error::{AuthFailure, RpcError};
use rpcguard::security::{Caller, Credentials, Scheme, SecurityFunction, BEARER};

use crate::auth::token::{Claims, TokenKeys};
use crate::store::{SharedStore, StoreError};

/// Verifies `Authorization: Bearer <jwt>` and loads the user it names.
#[derive(Clone)]
pub struct BearerSecurity {
    keys: TokenKeys,
    store: SharedStore,
    /// The scheme's description in the document.
    doc: Scheme,
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
        BearerSecurity {
            keys,
            store,
            doc: Self::scheme(),
        }
    }

    /// The same function, its scheme's entry in the document naming the
    /// server as a token issuer (`x-issuers`) whose public keys are at
    /// `server_url` + `.well-known/jwks.json`: for a server that serves
    /// them ([`jwks_resource`](crate::keys::jwks_resource)).
    #[must_use]
    pub fn publishing_jwks(mut self, issuer: &str, server_url: &str) -> Self {
        self.doc = Self::published_scheme(issuer, server_url);
        self
    }

    /// [`scheme`](Self::scheme) with the server named as a token
    /// issuer in `x-issuers`: its `iss` and `aud` (`issuer`), the URL of its
    /// JWKS (under `server_url`), and the claim its tokens carry their
    /// scopes in (`scope`).
    pub fn published_scheme(issuer: &str, server_url: &str) -> Scheme {
        let jwks_uri = format!(
            "{}{}",
            server_url.trim_end_matches('/'),
            crate::keys::JWKS_PATH
        );
        Self::scheme().with_extension(
            "x-issuers",
            serde_json::json!([{
                "issuer": issuer,
                "audience": issuer,
                "jwks_uri": jwks_uri,
                "scopes_claim": "scope",
            }]),
        )
    }

    /// The Bearer scheme, as the document describes it.
    pub fn scheme() -> Scheme {
        BEARER.describe(
            "The access token `sign_in` (or `refresh`) answers, sent as `Authorization: \
             Bearer <token>`; a WebSocket connection may send it as its `access_token` query \
             parameter instead.\n\nOther services can check these tokens themselves with the \
             public keys at `/.well-known/jwks.json`.",
        )
    }
}

/// The caller an access token proves, checked as on every call: signature
/// and claims, the account (same id as the token's `uid`, not disabled),
/// the session (live, of that account), and the scopes in force. A token of
/// a session without a scope limit gets the account's own caller, built
/// when the account was loaded; a scope-limited one gets a caller built
/// here with the scopes in force, and a user view (what `get_caller`
/// answers) showing those.
pub async fn caller_for_token(
    keys: &TokenKeys,
    store: &SharedStore,
    token: &str,
) -> Result<Arc<Caller>, RpcError> {
    let claims = keys.verify(token).map_err(RpcError::Unauthenticated)?;
    let account = store
        .find_account(&claims.sub)
        .await
        .map_err(StoreError::into_rpc)?
        .ok_or(RpcError::Unauthenticated(AuthFailure::InvalidToken))?;
    // Another account id: the token's account was deleted and this is a
    // later account of the same name.
    if account.account_id != claims.uid {
        return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
    }
    // A session that is gone (purged after it ended or expired) is as
    // ended as one still stored.
    let session = store
        .find_session(&claims.sid)
        .await
        .map_err(StoreError::into_rpc)?
        .ok_or(RpcError::Unauthenticated(AuthFailure::RevokedToken))?;
    if session.account_id != claims.uid {
        return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
    }
    if session.ended || account.disabled {
        return Err(RpcError::Unauthenticated(AuthFailure::RevokedToken));
    }
    if session.scope_limit.is_none() {
        return Ok(account.caller.clone());
    }
    let in_force: Vec<String> = session
        .scopes_in_force(&account.scopes)
        .map(str::to_owned)
        .collect();
    // What `get_caller` shows is what this token may use.
    let mut user = (*account.user).clone();
    user.scopes
        .insert(BEARER.name().to_owned(), in_force.clone());
    Ok(Arc::new(
        BEARER
            .caller(account.user.username.as_str(), in_force)
            .with_detail(Arc::new(user)),
    ))
}

/// The claims of the access token a call presented (its session is
/// `sid`), for the methods that act on the caller's own session
/// (`sign_out`, `change_password`). The token was verified by the Bearer
/// check before the method ran; this reads it again (from the keys' memory
/// of verified tokens, no signature work).
pub fn presented_claims(
    keys: &TokenKeys,
    credentials: Option<&Credentials>,
) -> Result<Arc<Claims>, RpcError> {
    let token = credentials
        .ok_or(RpcError::Unauthenticated(AuthFailure::MissingToken))?
        .bearer_token()
        .map_err(RpcError::Unauthenticated)?
        .ok_or(RpcError::Unauthenticated(AuthFailure::MissingToken))?;
    keys.verify(token).map_err(RpcError::Unauthenticated)
}

#[async_trait]
impl SecurityFunction for BearerSecurity {
    /// The account's own caller, built when the account was loaded.
    async fn authenticate(
        &self,
        credentials: &Credentials,
    ) -> Result<Option<Arc<Caller>>, RpcError> {
        let Some(token) = credentials.bearer_token()? else {
            return Ok(None);
        };
        caller_for_token(&self.keys, &self.store, token)
            .await
            .map(Some)
    }

    fn schemes(&self) -> Vec<Scheme> {
        vec![self.doc.clone()]
    }
}
