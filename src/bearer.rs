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
//! Loading the user on each call (one indexed read) is what makes a revoked
//! scope or a deleted user stop working at once. The token itself is
//! verified on every call, which is what makes a WebSocket session stop
//! authorizing calls at its token's `exp`.
//!
//! An optional user cache ([`BearerSecurity::with_user_cache`], flag
//! `--user-cache-ms`) trades that "at once" for speed: a user read is then
//! reused for at most the cache's TTL, so a revoked scope or a deleted user
//! keeps working for at most that long. It is off by default.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use rpcguard::error::{AuthFailure, RpcError};
use rpcguard::security::{Caller, Credentials, SchemeDoc, SecurityFunction, BEARER};

use crate::auth::token::TokenKeys;
use crate::store::{SharedStore, StoredUser};

/// Verifies `Authorization: Bearer <jwt>` and loads the user it names.
#[derive(Clone)]
pub struct BearerSecurity {
    keys: TokenKeys,
    store: SharedStore,
    cache: Option<Arc<UserCache>>,
}

/// Users read recently, by lower-cased name, each with the time it was read.
struct UserCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, StoredUser)>>,
}

impl UserCache {
    /// At most this many users are cached; past it the cache starts over.
    const MAX_ENTRIES: usize = 100_000;

    fn get(&self, key: &str) -> Option<StoredUser> {
        let entries = self.entries.lock().ok()?;
        let (read_at, user) = entries.get(key)?;
        (read_at.elapsed() < self.ttl).then(|| user.clone())
    }

    fn put(&self, key: String, user: StoredUser) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
            entries.insert(key, (Instant::now(), user));
        }
    }
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
            cache: None,
        }
    }

    /// Reuses each user read for up to `ttl` (zero turns the cache off).
    /// Revocations and deletions then take effect within `ttl`, not at once.
    pub fn with_user_cache(mut self, ttl: Duration) -> Self {
        self.cache = (!ttl.is_zero()).then(|| {
            Arc::new(UserCache {
                ttl,
                entries: Mutex::new(HashMap::new()),
            })
        });
        self
    }

    /// The user a token names, from the cache when one is configured. A
    /// cached user of another account id than `account_id` is read again,
    /// so a new account of a re-used name is seen at once.
    async fn load_user(
        &self,
        subject: &str,
        account_id: &str,
    ) -> Result<Option<StoredUser>, RpcError> {
        let Some(cache) = &self.cache else {
            return Ok(self.store.find_user(subject).await?);
        };
        let key = subject.to_ascii_lowercase();
        if let Some(user) = cache.get(&key) {
            if user.account_id == account_id {
                return Ok(Some(user));
            }
        }
        let user = self.store.find_user(subject).await?;
        if let Some(user) = &user {
            cache.put(key, user.clone());
        }
        Ok(user)
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
            .load_user(&claims.sub, &claims.uid)
            .await?
            .ok_or(RpcError::Unauthenticated(AuthFailure::InvalidToken))?;
        // Another account id: the token's account was deleted and this is a
        // later account of the same name.
        if user.account_id != claims.uid {
            return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
        }
        let public = user.public();
        Ok(Some(
            Caller::new(public.username.clone(), BEARER, user.scopes).with_detail(public),
        ))
    }

    fn schemes(&self) -> Vec<SchemeDoc> {
        vec![Self::scheme_doc()]
    }
}
