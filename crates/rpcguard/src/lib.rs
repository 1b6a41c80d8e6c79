//! # rpcguard
//!
//! A JSON-RPC 2.0 server framework on jsonrpsee, with security declared per
//! method and an OpenRPC document generated from the same declarations.
//!
//! - Declare each security [`Scheme`] once (`Scheme::api_key("ApiKey",
//!   "X-Api-Key")`, `Scheme::bearer("Bearer")`) and require scopes with it
//!   ([`Scheme::require`]).
//! - Declare a method once ([`Method`] + [`Api::method`]): name, typed
//!   params and result, security, docs, errors (with typed `data`),
//!   examples. Secure by default: an [`Api`] gives its default security
//!   ([`Api::secured_by`]) to every method that does not declare its own
//!   or say [`Method::public`], and a method with neither refuses to
//!   start. Compose with [`Api::merge`] and [`Api::nest`].
//! - A pluggable security function turns what the caller presented
//!   ([`Credentials`]) into a [`Caller`]: a closure ([`SecurityFn`]),
//!   [`ApiKeySecurity`], or your own [`SecurityFunction`]. The middleware
//!   checks the declared scopes before the handler runs, on HTTP and
//!   WebSocket alike, for every call of a batch.
//! - The handler receives the caller through its [`CallContext`]; `?`
//!   works on any error ([`RpcError`]).
//! - `rpc.discover` serves an OpenRPC 1.3.2 document built from the
//!   declarations with schemars.
//! - One port for HTTP and WebSocket, with a bound on what every connection
//!   may cost, and a graceful shutdown with one deadline ([`serve()`],
//!   [`server`]).
//! - `GET /docs`: an interactive page built from that document, with an
//!   Authorize dialog and a form per method ([`server::docs`]; off with
//!   [`ServerConfig::docs_page`]).
//!
//! - With the cargo feature `oidc`: Bearer tokens of external identity
//!   providers (Keycloak, Auth0, Entra ID, another rpcguard), verified with
//!   their JWKS alone ([`security::oidc`]).
//!
//! This crate is the framework only: it compiles no database, no bcrypt
//! and no command-line parser. Accounts with bcrypt passwords, JWT bearer
//! tokens and a SQLite/PostgreSQL store are in `rpcguard-accounts`, which
//! also holds the ready-to-run `rpcguard` server.
//!
//! ```no_run
//! use rpcguard::{Api, AuthFailure, Method, NoParams, RpcError, Scheme, SecurityFn};
//!
//! const KEY: Scheme = Scheme::api_key("ApiKey", "X-Api-Key");
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut api: Api<()> = Api::new();
//! api.secured_by(KEY.require(["profile"]));
//! api.method(Method::new("whoami").summary("The caller's name"), |_: NoParams, ctx| async move {
//!     Ok::<_, RpcError>(ctx.caller()?.subject.clone())
//! })?;
//! let security = SecurityFn::new(&KEY, |key, _| async move {
//!     match key.as_str() {
//!         "k-alice" => Ok(KEY.caller("alice", ["profile"])),
//!         _ => Err(AuthFailure::InvalidToken.into()),
//!     }
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! rpcguard::serve(listener, api)
//!     .security(security)
//!     .with_graceful_shutdown(rpcguard::server::shutdown_signal())
//!     .await?;
//! # Ok(()) }
//! ```

pub mod api;
pub mod audit;
pub mod error;
pub mod limit;
pub mod metrics;
pub mod openrpc;
pub mod policy;
mod schema;
pub mod security;
pub mod server;

/// The embedding guide (the repository's `docs/embedding.md`): schemes,
/// secure-by-default APIs, composing them, security functions, errors,
/// serving and shutdown.
#[doc = include_str!("../../../docs/embedding.md")]
pub mod guide {}

pub use api::{Api, ApiError, CallContext, Example, Method, NoParams};
pub use async_trait::async_trait;
pub use error::{AuthFailure, ErrorCode, RpcError};
#[cfg(feature = "oidc")]
pub use security::oidc::{IssuerRouter, OidcConfig, OidcSecurity};
pub use security::{
    AnySecurity, ApiKeySecurity, Caller, Credentials, Identities, IntoScopes, MethodSecurity,
    Requirement, Scheme, SecurityFn, SecurityFunction, SessionCredentials, SharedSecurity, BEARER,
};
pub use server::{serve, RunningServer, Serve, ServerConfig, ServerError};
