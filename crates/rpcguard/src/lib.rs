//! # rpcguard
//!
//! A JSON-RPC 2.0 server framework on jsonrpsee, with security declared per
//! method and an OpenRPC document generated from the same declarations.
//!
//! - Declare a method once ([`Method`] + [`Api::method`]): name, typed params
//!   and result, security requirement ([`MethodSecurity`]), docs, errors,
//!   examples.
//! - A pluggable [`SecurityFunction`] turns what the caller presented
//!   ([`Credentials`]) into a [`Caller`]; the middleware checks the declared
//!   scopes before the handler runs, on HTTP and WebSocket alike, for every
//!   call of a batch.
//! - The handler receives the caller through its [`CallContext`].
//! - `rpc.discover` serves an OpenRPC 1.3.2 document built from the
//!   declarations with schemars.
//! - One port for HTTP and WebSocket, with a bound on what every connection
//!   may cost ([`server`]).
//! - `GET /docs`: an interactive page built from that document, with an
//!   Authorize dialog and a form per method ([`server::docs`]; off with
//!   [`ServerConfig::docs`]).
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
//! use std::sync::Arc;
//! use rpcguard::{Api, CallContext, Method, MethodSecurity, NoParams, RpcError, ServerConfig};
//!
//! # async fn run(security: rpcguard::SharedSecurity) -> Result<(), Box<dyn std::error::Error>> {
//! let mut api: Api<()> = Api::new();
//! api.method(
//!     Method::new("whoami")
//!         .summary("The caller's name")
//!         .security(MethodSecurity::bearer(["profile"])),
//!     |_: NoParams, ctx: CallContext<()>| async move {
//!         Ok::<_, RpcError>(ctx.caller()?.subject.clone())
//!     },
//! )?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = rpcguard::server::spawn(listener, api, Arc::new(()), security, ServerConfig::default())?;
//! println!("listening on {}", server.local_addr());
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

pub use api::{Api, ApiError, CallContext, Example, Method, NoParams};
pub use async_trait::async_trait;
pub use error::{AuthFailure, RpcError};
#[cfg(feature = "oidc")]
pub use security::oidc::{IssuerRouter, OidcConfig, OidcSecurity};
pub use security::{
    AnySecurity, ApiKeySecurity, Caller, Credentials, Identities, MethodSecurity, Requirement,
    SchemeDoc, SecurityFunction, SessionCredentials, SharedSecurity, BEARER,
};
pub use server::ServerError;
pub use server::{RunningServer, ServerConfig};
