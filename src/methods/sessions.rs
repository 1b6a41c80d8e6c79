//! The session methods: `refresh`, `sign_out`, `change_password` and
//! `authenticate` (`sign_in`, which opens a session, is declared with the
//! account methods). See [`crate::session`] for what a session is.
//!
//! - `refresh(refresh_token)`: public; a hash and one indexed read before
//!   any answer (never bcrypt), so a flood of made-up tokens costs little
//!   and changes nothing. Rotation and reuse detection are the store's
//!   ([`UserStore::rotate_refresh`](crate::store::UserStore::rotate_refresh)).
//! - `sign_out(everywhere?)`: ends the caller's session, or all of the
//!   user's sessions.
//! - `change_password(old_password, new_password)`: the sign-in path's
//!   queue place and budgets first (same order as `sign_in`), then bcrypt
//!   verify; a new hash, and every other session ends; the caller's own
//!   session goes on.
//! - `authenticate(access_token)`: binds the token to the WebSocket
//!   session ([`rpcguard::SessionCredentials`]); on HTTP, -32602.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::errors::*;
use super::state::Accounts;
use crate::auth::password::PasswordError;
use crate::bearer::{caller_for_token, presented_claims};
use crate::metrics::EndCause;
use crate::session::{self, join_scopes, NewSession, Rotation};
use crate::store::{StoreError, StoredUser};
use crate::user::{Password, Token, User, Username};
use rpcguard::api::{Api, ApiError, CallContext, Example, Method};
use rpcguard::audit::{Audit, Event};
use rpcguard::error::{self, AuthFailure, RpcError};
#[cfg(feature = "oidc")]
use rpcguard::security::oidc::ExternalIdentity;
use rpcguard::BEARER;

/// Params of `refresh`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshParams {
    /// The refresh token of the last `sign_in` or `refresh` (43
    /// characters; anything else is refused as `invalid_token`).
    pub refresh_token: String,
}

/// Params of `sign_out`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignOutParams {
    /// `true`: end every session of the user, not only this one.
    #[serde(default)]
    pub everywhere: Option<bool>,
}

/// Params of `change_password`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordParams {
    /// The password now.
    pub old_password: Password,
    /// The new password.
    pub new_password: Password,
}

/// Params of `authenticate`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticateParams {
    /// An access token (from `sign_in` or `refresh`).
    pub access_token: String,
}

/// An example `Token` for the document.
pub(crate) fn token_example() -> serde_json::Value {
    json!({
        "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.signature",
        "token_type": "bearer",
        "expires_in": 900,
        "refresh_token": "q8V3nqf0m2x5Hb9LwN7cZs1TgYk4RjEoPuA6dDiWlMe",
        "scope": "scope1"
    })
}

/// Declares `refresh`, `sign_out`, `change_password` and `authenticate`.
pub(crate) fn declare<S>(api: &mut Api<S>) -> Result<(), ApiError>
where
    S: AsRef<Accounts> + Send + Sync + 'static,
{
    let user_example = json!({
        "username": "alice",
        "scopes": { "Bearer": ["scope1"] },
        "created_at": "2026-11-27T12:00:00Z"
    });
    api.method(
        Method::new("refresh")
            .summary("Renews a session: a new access token and a new refresh token")
            .description(
                "Takes the refresh token of the last sign_in or refresh and answers a new Token; \
                 the presented refresh token is dead from then on. Presenting a refresh token that \
                 was already used ends the whole session (-32001 revoked_token), its access tokens \
                 too. Unknown or malformed: -32001 invalid_token; expired: expired_token.",
            )
            .public()
            .errors([error::UNAUTHENTICATED])
            .example(Example::new(
                "rotate",
                json!({ "refresh_token": "Xr4l0N2bVq9sT1yKc8ZmH5dWj3uPaE7gFoLiBnQe6Ch" }),
                token_example(),
            )),
        refresh::<S>,
    )?
    .method(
        Method::new("sign_out")
            .summary("Ends this session, or every session of the user")
            .description(
                "Ends the session of the token that calls it (everywhere: true ends every session \
                 of the user). Its access tokens are refused from the very next call on, over HTTP \
                 and on every open WebSocket session (-32001 revoked_token), and its refresh token \
                 is dead.",
            )
            .security(BEARER.require(()))
            .example(Example::new("this session", json!({}), json!(true)))
            .example(Example::new(
                "every session",
                json!({ "everywhere": true }),
                json!(true),
            )),
        sign_out::<S>,
    )?
    .method(
        Method::new("change_password")
            .summary("Changes the caller's password and ends its other sessions")
            .description(
                "Checks the old password (-32002 when wrong; throttled like sign_in with -32005), \
                 stores the new one and ends every other session of the user. The session that \
                 calls it goes on.",
            )
            .security(BEARER.require(()))
            .error(AUTHENTICATION_FAILED, AUTHENTICATION_FAILED_MESSAGE)
            .errors([error::TOO_MANY_REQUESTS])
            .example(Example::new(
                "change",
                json!({
                    "old_password": "correct horse battery",
                    "new_password": "battery staple horse"
                }),
                json!(true),
            )),
        change_password::<S>,
    )?
    .method(
        Method::new("authenticate")
            .summary("Binds an access token to this WebSocket session")
            .description(
                "WebSocket only: later calls of this session are authorized with this token instead \
                 of the upgrade's; calling it again with a newer token (from refresh) replaces it, \
                 so a session outlives one token's exp. Answers the token's user. Over HTTP \
                 (no session to bind): -32602.",
            )
            .public()
            .errors([error::UNAUTHENTICATED])
            .example(Example::new(
                "bind",
                json!({ "access_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.e30.signature" }),
                user_example,
            )),
        authenticate::<S>,
    )?;
    Ok(())
}

/// A fresh access token in `session` and the `Token` around it.
pub(crate) fn token_in_session(
    accounts: &Accounts,
    username: &str,
    account_id: &str,
    session_id: &str,
    refresh_token: String,
    scope: String,
) -> Result<Token, RpcError> {
    let (access_token, _claims) = accounts
        .keys
        .issue_with_scope(username, account_id, session_id, &scope)
        .map_err(RpcError::internal)?;
    Ok(Token {
        access_token,
        token_type: "bearer".to_owned(),
        expires_in: accounts.keys.ttl().as_secs(),
        refresh_token,
        scope,
    })
}

/// Opens a session for a user whose password was just checked (in the
/// credentials epoch `user.epoch`), limited to `limit` when given; answers
/// its first `Token` and the session's id. `-32002` when the account
/// changed since it was read (deleted, disabled, password changed, every
/// session ended).
pub(crate) async fn open(
    accounts: &Accounts,
    user: &StoredUser,
    limit: Option<Vec<String>>,
) -> Result<(Token, String), RpcError> {
    let now = accounts.now()?;
    let session_id = session::new_session_id();
    let (refresh_token, refresh_hash) = session::new_refresh_token();
    let limit = limit.map(|mut scopes| {
        scopes.sort();
        scopes.dedup();
        scopes
    });
    let expires = now.saturating_add(refresh_ttl_secs(accounts));
    let new = NewSession {
        username: &user.username,
        account_id: &user.account_id,
        session_id: &session_id,
        scope_limit: limit.as_deref(),
        refresh_hash: &refresh_hash,
        now,
        refresh_expires_at: expires,
        epoch: user.epoch,
        max_sessions: accounts.limits.max_sessions,
    };
    match accounts.store.open_session(new).await {
        Ok(ended) if !ended.is_empty() => {
            accounts
                .metrics
                .sessions_ended(EndCause::SessionLimit, ended.len());
            for id in &ended {
                Audit::new(Event::SessionsEnded)
                    .username(&user.username)
                    .session(id)
                    .reason("session_limit")
                    .emit();
            }
        }
        Ok(_) => {}
        // Deleted, disabled, or its credentials changed between the
        // password check and now: what was verified is not the account's
        // password any more.
        Err(StoreError::NotFound) => {
            tracing::debug!(username = %user.username, "sign_in: the account changed since its password was verified");
            return Err(authentication_failed());
        }
        Err(other) => return Err(other.into_rpc()),
    }
    let state = session::SessionState {
        id: session_id.clone(),
        account_id: user.account_id.clone(),
        username_key: user.username.to_ascii_lowercase(),
        scope_limit: limit,
        ended: false,
    };
    let scope = join_scopes(state.scopes_in_force(&user.scopes));
    let token = token_in_session(
        accounts,
        &user.username,
        &user.account_id,
        &session_id,
        refresh_token,
        scope,
    )?;
    Ok((token, session_id))
}

fn refresh_ttl_secs(accounts: &Accounts) -> i64 {
    i64::try_from(accounts.refresh_ttl.as_secs()).unwrap_or(i64::MAX)
}

async fn refresh<S: AsRef<Accounts>>(
    params: RefreshParams,
    ctx: CallContext<S>,
) -> Result<Token, RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let client = ctx.remote_addr().map(|a| a.ip());
    let refreshed = rotate(params, &ctx).await;
    match &refreshed {
        Ok((_, session, username)) => Audit::new(Event::Refresh)
            .username(username)
            .client(client)
            .request_id(ctx.request_id())
            .session(session)
            .emit(),
        Err(RpcError::TooManyRequests { .. }) => {
            accounts.metrics.throttled("refresh");
            Audit::new(Event::Throttled)
                .client(client)
                .request_id(ctx.request_id())
                .reason("refresh")
                .emit();
        }
        Err(_) => {}
    }
    refreshed.map(|(token, _, _)| token)
}

/// `refresh` without its metrics and events: the new token, its session
/// and its user.
async fn rotate<S: AsRef<Accounts>>(
    params: RefreshParams,
    ctx: &CallContext<S>,
) -> Result<(Token, String, String), RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let client = ctx.remote_addr().map(|a| a.ip());
    accounts.refresh_throttle.check_address(client)?;
    let Some(old_hash) = session::refresh_token_hash(&params.refresh_token) else {
        return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
    };
    let Some(record) = accounts
        .store
        .find_refresh(&old_hash)
        .await
        .map_err(StoreError::into_rpc)?
    else {
        return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken));
    };
    accounts
        .refresh_throttle
        .check_session(&record.session_id)?;
    crate::throttle::draw_shared(
        &*accounts.store,
        &accounts.refresh_throttle.shared(client, &record.session_id),
    )
    .await?;
    let now = accounts.now()?;
    let (next, next_hash) = session::new_refresh_token();
    let expires = now.saturating_add(refresh_ttl_secs(accounts));
    let session = match accounts
        .store
        .rotate_refresh(
            &record,
            &next_hash,
            now,
            expires,
            accounts.limits.refresh_history,
        )
        .await
        .map_err(StoreError::into_rpc)?
    {
        Rotation::Rotated(session) => session,
        Rotation::Unknown => return Err(RpcError::Unauthenticated(AuthFailure::InvalidToken)),
        Rotation::Expired => return Err(RpcError::Unauthenticated(AuthFailure::ExpiredToken)),
        Rotation::Ended => return Err(RpcError::Unauthenticated(AuthFailure::RevokedToken)),
        Rotation::Reused {
            username_key,
            session_id,
        } => {
            accounts.metrics.refresh_reuse();
            Audit::new(Event::RefreshReuse)
                .username(&username_key)
                .client(client)
                .request_id(ctx.request_id())
                .session(&session_id)
                .reason("rotated_token_presented")
                .emit();
            tracing::warn!(username = %username_key, "refresh token reused: session ended");
            return Err(RpcError::Unauthenticated(AuthFailure::RevokedToken));
        }
    };
    let account = accounts
        .store
        .find_account(&session.username_key)
        .await
        .map_err(StoreError::into_rpc)?
        .filter(|account| account.account_id == session.account_id)
        .ok_or(RpcError::Unauthenticated(AuthFailure::InvalidToken))?;
    if account.disabled {
        return Err(RpcError::Unauthenticated(AuthFailure::RevokedToken));
    }
    let scope = join_scopes(session.scopes_in_force(&account.scopes));
    let token = token_in_session(
        accounts,
        &account.user.username,
        &session.account_id,
        &session.id,
        next,
        scope,
    )?;
    Ok((token, session.id, account.user.username.clone()))
}

async fn sign_out<S: AsRef<Accounts>>(
    params: SignOutParams,
    ctx: CallContext<S>,
) -> Result<bool, RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let caller = ctx.caller()?;
    let claims = presented_claims(&accounts.keys, ctx.credentials().as_ref())?;
    let now = accounts.now()?;
    let audit = Audit::new(Event::SignOut)
        .username(&caller.subject)
        .client(ctx.remote_addr().map(|a| a.ip()))
        .request_id(ctx.request_id())
        .session(&claims.sid);
    if params.everywhere.unwrap_or(false) {
        let ended = accounts
            .store
            .end_sessions(&caller.subject, None, now)
            .await
            .map_err(StoreError::into_rpc)?;
        accounts
            .metrics
            .sessions_ended(EndCause::SignOutEverywhere, ended.len());
        audit.reason("everywhere").emit();
    } else {
        if accounts
            .store
            .end_session(&claims.sid, now)
            .await
            .map_err(StoreError::into_rpc)?
        {
            accounts.metrics.sessions_ended(EndCause::SignOut, 1);
        }
        audit.reason("this_session").emit();
    }
    Ok(true)
}

async fn change_password<S: AsRef<Accounts>>(
    params: ChangePasswordParams,
    ctx: CallContext<S>,
) -> Result<bool, RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let caller = ctx.caller()?;
    let keep = presented_claims(&accounts.keys, ctx.credentials().as_ref())?
        .sid
        .clone();
    let username = Username::parse(caller.subject.as_str()).map_err(RpcError::internal)?;
    let client = ctx.remote_addr().map(|a| a.ip());
    let place = accounts
        .hasher
        .reserve_verify()
        .map_err(PasswordError::into_rpc)?;
    accounts.throttle.check(&username, client)?;
    let shared = accounts.throttle.shared_sign_in(&username, client);
    crate::throttle::draw_shared(&*accounts.store, &shared).await?;
    let user = accounts
        .store
        .find_user(username.as_str())
        .await
        .map_err(StoreError::into_rpc)?;
    let hash = user.as_ref().map(|u| u.password_hash.as_str());
    let valid = place
        .verify(&params.old_password, hash)
        .await
        .map_err(PasswordError::into_rpc)?;
    let user = match user {
        Some(user) if valid => user,
        _ => return Err(authentication_failed()),
    };
    let new_hash = accounts
        .hasher
        .reserve_hash()
        .map_err(PasswordError::into_rpc)?
        .hash(&params.new_password)
        .await
        .map_err(PasswordError::into_rpc)?;
    let ended = accounts
        .store
        .change_password(
            username.as_str(),
            &user.password_hash,
            &new_hash,
            Some(&keep),
            accounts.now()?,
        )
        .await
        .map_err(StoreError::into_rpc)?
        // Changed by someone else meanwhile: the old password is not the
        // password any more.
        .ok_or_else(authentication_failed)?;
    accounts
        .metrics
        .sessions_ended(EndCause::PasswordChange, ended.len());
    Audit::new(Event::PasswordChanged)
        .username(username.as_str())
        .client(client)
        .request_id(ctx.request_id())
        .session(&keep)
        .emit();
    Ok(true)
}

async fn authenticate<S: AsRef<Accounts>>(
    params: AuthenticateParams,
    ctx: CallContext<S>,
) -> Result<Arc<User>, RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let Some(slot) = ctx.session() else {
        return Err(RpcError::InvalidParams(
            "authenticate binds a token to a WebSocket session; over HTTP send it as \
             `Authorization: Bearer <token>`"
                .into(),
        ));
    };
    // A token of the external issuer (routed by its `iss`, as every call's
    // is): bound like ours, its caller shown as `get_caller` shows it.
    #[cfg(feature = "oidc")]
    if let Some(external) = accounts
        .external
        .as_ref()
        .filter(|external| external.names_this_issuer(&params.access_token))
    {
        let caller = external
            .verify(&params.access_token)
            .await
            .map_err(RpcError::Unauthenticated)?;
        let identity = caller
            .detail::<ExternalIdentity>()
            .ok_or_else(|| RpcError::internal("an external caller without its identity"))?;
        let user = Arc::new(User::external(&caller, identity, accounts.clock.unix_now()));
        slot.bind_bearer(&params.access_token, ctx.remote_addr())
            .map_err(RpcError::Unauthenticated)?;
        return Ok(user);
    }
    let caller = caller_for_token(&accounts.keys, &accounts.store, &params.access_token).await?;
    slot.bind_bearer(&params.access_token, ctx.remote_addr())
        .map_err(RpcError::Unauthenticated)?;
    caller
        .detail::<Arc<User>>()
        .cloned()
        .ok_or_else(|| RpcError::internal("a Bearer caller without its user"))
}
