//! # rpcguard
//!
//! A JSON-RPC 2.0 server framework with real authentication and a generated
//! OpenRPC document, on jsonrpsee.
//!
//! - Declare a method once ([`Method`] + [`Api::method`]): name, typed params
//!   and result, security requirement ([`MethodSecurity`]), docs, examples.
//! - A pluggable [`SecurityFunction`] turns the caller's headers into a
//!   [`Caller`]; the middleware checks the declared scopes before the
//!   handler runs, on HTTP and WebSocket alike, for every call of a batch.
//! - The handler receives the caller through its [`CallContext`].
//! - `rpc.discover` serves an OpenRPC 1.3.2 document built from the
//!   declarations with schemars.
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
pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod methods;
pub mod openrpc;
pub mod security;
pub mod server;
pub mod store;
pub mod throttle;
pub mod user;

pub use api::{Api, CallContext, Example, Method, NoParams};
pub use error::{AuthFailure, RpcError};
pub use security::{
    BearerSecurity, Caller, Credentials, MethodSecurity, SchemeDoc, SecurityFunction,
    SharedSecurity,
};
pub use server::{RunningServer, ServerConfig};
pub use user::{Password, Scope, Token, User, Username};
