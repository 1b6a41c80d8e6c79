//! # rpcguard-accounts
//!
//! The reference server of [`rpcguard`]: accounts with bcrypt-hashed
//! passwords, JWT bearer tokens checked against the user store on every
//! call, sign-in throttling, and the four reference methods (`sign_up`,
//! `sign_in`, `get_caller`, `require_scopes`), on SQLite (embedded
//! default) or PostgreSQL (several instances). The `rpcguard` binary of
//! this crate runs it; embedders use [`BearerSecurity`] and
//! [`methods::accounts`] to secure their own methods with the same
//! accounts. Every `sign_in` opens a [`session`]: refresh tokens, sign-out,
//! and an exact in-memory record of which sessions have ended.
//!
//! ## Cargo features
//!
//! All four are on by default; turn off the default features to compile
//! only what your service uses, at least one store:
//!
//! | feature | what it brings |
//! |---|---|
//! | `sqlite` | the embedded store (a SQLite file in the data dir) and `backup` |
//! | `postgres` | the store for several instances: PostgreSQL, with the key set, the change feed and the sign-in budgets shared in the database |
//! | `oidc` | Bearer tokens of an external identity provider accepted beside the server's own (`Config::oidc`; the framework's `oidc`: an HTTPS client on rustls) |
//! | `cli` | the `rpcguard` binary and its command line (clap); turns on the other three |
//!
//! ```toml
//! # SQLite accounts only: no command-line parser, no PostgreSQL driver, no HTTPS client.
//! rpcguard-accounts = { version = "0.1", default-features = false, features = ["sqlite"] }
//! ```
//!
//! A store URL whose backend is not built (`postgres://…` without
//! `postgres`, a file path without `sqlite`) is refused when the store is
//! opened ([`store::StoreError::NotBuiltIn`]).

pub mod app;
pub mod auth;
#[cfg(feature = "sqlite")]
pub mod backup;
pub mod bearer;
pub mod clock;
pub mod config;
mod files;
mod front;
pub mod keys;
pub mod logging;
pub mod memory;
pub mod methods;
pub mod metrics;
pub mod process;
pub mod session;
pub mod store;
pub mod throttle;
pub mod user;

#[cfg(not(any(feature = "sqlite", feature = "postgres")))]
compile_error!(
    "rpcguard-accounts needs a store: turn on its cargo feature `sqlite` or `postgres` (or both)"
);

pub use bearer::BearerSecurity;
pub use user::{Password, Scope, Token, User, Username};
