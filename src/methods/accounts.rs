//! The reference methods: `sign_up`, `sign_in`, `get_caller`,
//! `require_scopes`, and (declared from [`super::sessions`]) `refresh`,
//! `sign_out`, `change_password`, `authenticate`.
//!
//! The sign-in path, in the order each call takes it (nothing later runs
//! for a call refused earlier):
//!
//! `sign_up`: params checked (`-32602`) → a place in the bcrypt *hash*
//! queue reserved (full: `-32005`, no budget drawn) → the client address's
//! sign-up budget (empty: `-32005`, the place given back) → bcrypt hash →
//! insert (`-32003` for a taken name).
//!
//! `sign_in`: params checked → a place in the bcrypt *verification* queue
//! reserved (full: `-32005`, no budget drawn; sign-up work never fills it)
//! → the budgets of [`crate::throttle`], the caller's own address first
//! (empty: `-32005`, the place given back) → user read → bcrypt verify
//! (against the dummy hash for an unknown user) → `-32002` → `-32004` for a
//! disabled account (only now, after a correct password, so a guesser
//! learns nothing) → a new session and its token. A
//! correct password whose stored hash has another cost than the configured
//! one is then re-hashed at the configured cost in the background (hash
//! queue; skipped when it is full, and tried again at the next sign-in).
//!
//! Timing: the dummy hash follows the cost most stored hashes have
//! ([`refresh_dummy_cost`], at start and every minute), so that right after
//! a change of `--bcrypt-cost` an unknown user still takes as long as most
//! existing ones. What is left: until every account has signed in once
//! after a change of cost, the accounts whose hash is *not* at the
//! prevailing cost (the minority: those re-hashed already, or those not
//! yet, whichever are fewer) answer a wrong password faster or slower than
//! an unknown user; and for up to a minute after the prevailing cost flips.

use std::sync::Arc;

use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

use super::errors::*;
use crate::auth::password::{prevailing_cost, PasswordError};
use crate::store::StoreError;
use crate::throttle::draw_shared;
use crate::user::{Password, Scope, Token, User, Username};
use rpcguard::api::{Api, ApiError, CallContext, Example, Method, NoParams};
use rpcguard::audit::{Audit, Event};
use rpcguard::error::{self, AuthFailure, RpcError};
#[cfg(feature = "oidc")]
use rpcguard::security::oidc::ExternalIdentity;
use rpcguard::BEARER;

pub use super::state::Accounts;

/// The scope `require_scopes` demands.
pub const DEMO_SCOPE: &str = "scope1";

/// Params of `sign_up` and `sign_in`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountParams {
    /// The account's name.
    pub username: Username,
    /// The account's password.
    pub password: Password,
}

/// Params of `sign_in`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SignInParams {
    /// The account's name.
    pub username: Username,
    /// The account's password.
    pub password: Password,
    /// Limits the token to these Bearer scopes (those of them the user
    /// holds, now and at every later call). Absent: no limit; empty: no
    /// scope at all (methods that only need a signed-in caller still work).
    #[serde(default)]
    pub scopes: Option<Vec<Scope>>,
}

/// The account methods, to merge into your API (`api.merge(accounts::methods()?)`):
/// `sign_up`, `sign_in` and `get_caller`, and the session methods of
/// [`super::sessions`] (`refresh`, `sign_out`, `change_password`,
/// `authenticate`). The demo method `require_scopes` is apart
/// ([`demo_methods`]): the reference server adds it, an embedder need not.
///
/// The state is yours: any type that holds the [`Accounts`]
/// (`impl AsRef<Accounts>`), so a service can offer these methods beside
/// its own, on one state (see `examples/embedding.rs`).
pub fn methods<S>() -> Result<Api<S>, ApiError>
where
    S: AsRef<Accounts> + Send + Sync + 'static,
{
    let mut api = Api::new();
    declare(&mut api)?;
    super::sessions::declare(&mut api)?;
    Ok(api)
}

/// The demo method `require_scopes` (succeeds only for a caller holding
/// the Bearer scope `scope1`): the reference server's example of a scoped
/// method.
pub fn demo_methods<S>() -> Result<Api<S>, ApiError>
where
    S: AsRef<Accounts> + Send + Sync + 'static,
{
    let mut api = Api::new();
    api.method(
        Method::new("require_scopes")
            .summary("Succeeds only for callers holding scope1")
            .description("Demonstrates a scoped method: needs the Bearer scope `scope1`.")
            .security(BEARER.require([DEMO_SCOPE]))
            .example(Example::new("allowed", json!({}), json!(true))),
        require_scopes::<S>,
    )?;
    Ok(api)
}

fn declare<S>(api: &mut Api<S>) -> Result<(), ApiError>
where
    S: AsRef<Accounts> + Send + Sync + 'static,
{
    let user_example = json!({
        "username": "alice",
        "scopes": { "Bearer": [] },
        "created_at": "2026-11-27T12:00:00Z"
    });
    let credentials_example = json!({ "username": "alice", "password": "correct horse battery" });
    let limited_example = json!({
        "username": "alice",
        "password": "correct horse battery",
        "scopes": ["scope1"]
    });
    api.method(
        Method::new("sign_up")
            .summary("Creates an account")
            .description(
                "Creates a user with a bcrypt-hashed password. Never overwrites an account: \
                 a name taken in any letter case gives -32003.",
            )
            .public()
            .error(USERNAME_TAKEN, USERNAME_TAKEN_MESSAGE)
            .errors([error::TOO_MANY_REQUESTS])
            .example(Example::new(
                "new account",
                credentials_example.clone(),
                user_example.clone(),
            )),
        sign_up::<S>,
    )?
    .method(
        Method::new("sign_in")
            .summary("Signs in: opens a session and returns its tokens")
            .description(
                "Checks the password, opens a session and returns a JWT access token and a refresh \
                 token. With scopes, the token may use only those of them the user holds. An \
                 unknown user and a wrong password give the same -32002 after about the same time; \
                 -32004 only after a correct password; repeated failures are throttled with -32005.",
            )
            .public()
            .error(AUTHENTICATION_FAILED, AUTHENTICATION_FAILED_MESSAGE)
            .error(ACCOUNT_DISABLED, ACCOUNT_DISABLED_MESSAGE)
            .errors([error::TOO_MANY_REQUESTS])
            .example(Example::new(
                "sign in",
                credentials_example,
                super::sessions::token_example(),
            ))
            .example(Example::new(
                "least privilege",
                limited_example,
                super::sessions::token_example(),
            )),
        sign_in::<S>,
    )?
    .method(
        Method::new("get_caller")
            .summary("Returns the signed-in caller")
            .description(
                "The user the bearer token belongs to, with its scopes. Never the password hash.",
            )
            .security(BEARER.require(()))
            .example(Example::new("who am I", json!({}), user_example)),
        get_caller::<S>,
    )?;
    Ok(())
}

/// Sets the hasher's dummy cost to the cost most stored hashes have (the
/// configured cost when there are none).
pub async fn refresh_dummy_cost(accounts: &Accounts) -> Result<u32, StoreError> {
    let costs = accounts.store.password_hash_costs().await?;
    let cost = prevailing_cost(&costs, accounts.hasher.cost());
    if cost != accounts.hasher.dummy_cost() {
        tracing::info!(
            cost,
            "unknown users are now verified at the prevailing stored cost"
        );
    }
    accounts.hasher.set_dummy_cost(cost);
    Ok(cost)
}

async fn sign_up<S: AsRef<Accounts>>(
    params: AccountParams,
    ctx: CallContext<S>,
) -> Result<User, RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let client = ctx.remote_addr().map(|a| a.ip());
    let username = params.username.clone();
    let created = create_account(params, &ctx).await;
    match &created {
        Ok(_) => Audit::new(Event::SignUp)
            .username(username.as_str())
            .client(client)
            .request_id(ctx.request_id())
            .emit(),
        Err(RpcError::TooManyRequests { .. }) => {
            accounts.metrics.throttled("sign_up");
            Audit::new(Event::Throttled)
                .username(username.as_str())
                .client(client)
                .request_id(ctx.request_id())
                .reason("sign_up")
                .emit();
        }
        Err(_) => {}
    }
    created
}

async fn create_account<S: AsRef<Accounts>>(
    params: AccountParams,
    ctx: &CallContext<S>,
) -> Result<User, RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let client = ctx.remote_addr().map(|a| a.ip());
    let place = accounts
        .hasher
        .reserve_hash()
        .map_err(PasswordError::into_rpc)?;
    accounts.throttle.check_sign_up(client)?;
    draw_shared(&*accounts.store, &accounts.throttle.shared_sign_up(client)).await?;
    let hash = place
        .hash(&params.password)
        .await
        .map_err(PasswordError::into_rpc)?;
    let created_at = accounts.now()?;
    let user = accounts
        .store
        .create_user(&params.username, &hash, created_at)
        .await
        .map_err(StoreError::into_rpc)?;
    tracing::info!(username = %params.username, "account created");
    Ok(user.public())
}

async fn sign_in<S: AsRef<Accounts>>(
    params: SignInParams,
    ctx: CallContext<S>,
) -> Result<Token, RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    let client = ctx.remote_addr().map(|a| a.ip());
    let username = params.username.clone();
    let signed_in = open_session(params, &ctx).await;
    let audit = Audit::new(Event::SignInFailed)
        .username(username.as_str())
        .client(client)
        .request_id(ctx.request_id());
    match &signed_in {
        Ok((_, session)) => {
            accounts.metrics.sign_in("ok");
            accounts.metrics.session_opened();
            Audit::new(Event::SignIn)
                .username(username.as_str())
                .client(client)
                .request_id(ctx.request_id())
                .session(session)
                .emit();
        }
        // Unknown user and wrong password are one event (no enumeration
        // oracle in the audit log); the debug line says which.
        Err(RpcError::Custom { code, .. }) if *code == AUTHENTICATION_FAILED => {
            accounts.metrics.sign_in("failed");
            audit.reason("bad_credentials").emit();
        }
        Err(RpcError::Custom { code, .. }) if *code == ACCOUNT_DISABLED => {
            accounts.metrics.sign_in("disabled");
            audit.reason("disabled").emit();
        }
        Err(RpcError::TooManyRequests { .. }) => {
            accounts.metrics.sign_in("throttled");
            accounts.metrics.throttled("sign_in");
            Audit::new(Event::Throttled)
                .username(username.as_str())
                .client(client)
                .request_id(ctx.request_id())
                .reason("sign_in")
                .emit();
        }
        Err(_) => {}
    }
    signed_in.map(|(token, _)| token)
}

/// `sign_in` without its metrics and events: the token and its session.
async fn open_session<S: AsRef<Accounts>>(
    params: SignInParams,
    ctx: &CallContext<S>,
) -> Result<(Token, String), RpcError> {
    let accounts: &Accounts = (*ctx.state).as_ref();
    if let Some(scopes) = &params.scopes {
        accounts
            .limits
            .check_scopes(scopes)
            .map_err(RpcError::InvalidParams)?;
    }
    let client = ctx.remote_addr().map(|a| a.ip());
    let place = accounts
        .hasher
        .reserve_verify()
        .map_err(PasswordError::into_rpc)?;
    accounts.throttle.check(&params.username, client)?;
    let shared = accounts.throttle.shared_sign_in(&params.username, client);
    draw_shared(&*accounts.store, &shared).await?;
    let user = accounts
        .store
        .find_user(params.username.as_str())
        .await
        .map_err(StoreError::into_rpc)?;
    let hash = user.as_ref().map(|u| u.password_hash.as_str());
    let valid = place
        .verify(&params.password, hash)
        .await
        .map_err(PasswordError::into_rpc)?;
    let user = match user {
        Some(user) if valid => user,
        Some(_) => {
            tracing::debug!(username = %params.username, "sign_in: wrong password");
            return Err(authentication_failed());
        }
        None => {
            tracing::debug!(username = %params.username, "sign_in: no such user");
            return Err(authentication_failed());
        }
    };
    if user.disabled {
        return Err(account_disabled());
    }
    if accounts.hasher.needs_rehash(&user.password_hash) {
        rehash_in_background(
            accounts,
            &user.username,
            &user.password_hash,
            params.password,
        );
    }
    let limit = params
        .scopes
        .map(|scopes| scopes.into_iter().map(String::from).collect());
    super::sessions::open(accounts, &user, limit).await
}

/// Re-hashes a correct password at the configured cost and stores it, unless
/// the hash changed meanwhile. Best effort: a full hash queue or a store
/// error leaves the old hash, which the next sign-in tries again.
fn rehash_in_background(accounts: &Accounts, username: &str, old_hash: &str, password: Password) {
    let (hasher, store) = (accounts.hasher.clone(), accounts.store.clone());
    let (username, old_hash) = (username.to_owned(), old_hash.to_owned());
    tokio::spawn(async move {
        let new_hash = match hasher.hash(&password).await {
            Ok(hash) => hash,
            Err(err) => {
                tracing::debug!(%username, error = %err, "re-hash postponed");
                return;
            }
        };
        match store
            .replace_password_hash(&username, &old_hash, &new_hash)
            .await
        {
            Ok(true) => {
                tracing::info!(%username, cost = hasher.cost(), "password re-hashed at the configured cost")
            }
            Ok(false) => tracing::debug!(%username, "hash changed meanwhile; re-hash dropped"),
            Err(err) => tracing::warn!(%username, error = %err, "re-hash not stored"),
        }
    });
}

async fn get_caller<S: AsRef<Accounts>>(
    _: NoParams,
    ctx: CallContext<S>,
) -> Result<Arc<User>, RpcError> {
    let caller = ctx.caller()?;
    if let Some(user) = caller.detail::<Arc<User>>() {
        return Ok(user.clone());
    }
    // A caller of an external issuer is not in the store, whatever its
    // `sub` (a local user of that name is someone else).
    let accounts: &Accounts = (*ctx.state).as_ref();
    #[cfg(feature = "oidc")]
    if let Some(external) = caller.detail::<ExternalIdentity>() {
        let now = accounts.clock.unix_now();
        return Ok(Arc::new(User::external(caller, external, now)));
    }
    // A custom security function may not attach the user: look it up.
    accounts
        .store
        .find_account(&caller.subject)
        .await
        .map_err(StoreError::into_rpc)?
        .map(|account| account.user.clone())
        .ok_or(RpcError::Unauthenticated(AuthFailure::InvalidToken))
}

async fn require_scopes<S: AsRef<Accounts>>(
    _: NoParams,
    ctx: CallContext<S>,
) -> Result<bool, RpcError> {
    ctx.caller()?;
    Ok(true)
}
