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

pub mod app;
pub mod auth;
pub mod backup;
pub mod bearer;
pub mod clock;
pub mod config;
mod files;
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

pub use bearer::BearerSecurity;
pub use user::{Password, Scope, Token, User, Username};
