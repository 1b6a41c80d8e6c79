//! Who may call what.
//!
//! - [`Scheme`]: one value per security scheme (its name, kind and header),
//!   declared once and used everywhere below (`scheme.rs`).
//! - [`MethodSecurity`]: what a method declares, `{scheme: [scopes]}`
//!   ([`Scheme::require`]). No requirement means public; several schemes
//!   mean any one suffices (OR); the scopes inside a scheme are all needed
//!   (AND) (`requirement.rs`).
//! - [`Credentials`]: what the caller presented (the request headers its
//!   schemes read, or those of the WebSocket upgrade and its `access_token`
//!   query parameter), put in the request extensions by the server's HTTP
//!   front.
//! - [`SessionCredentials`]: what a WebSocket session bound after its
//!   upgrade (replacing the upgrade's credentials for its later calls).
//!   (`credentials.rs`, `session.rs`)
//! - [`SecurityFunction`]: the pluggable function that turns credentials
//!   into a [`Caller`] per scheme ([`Identities`], `caller.rs`);
//!   [`SecurityFn`] makes one from a closure (`function.rs`).
//!   [`ApiKeySecurity`] and [`AnySecurity`] are ready ones (`api_key.rs`);
//!   `rpcguard-accounts` has a JWT one backed by a user store.
//! - the server's RPC layer runs the security function for secured
//!   methods only,
//!   picks the one identity that meets the declared requirement
//!   ([`MethodSecurity::check`]), and hands that caller to the handler.
//!
//! # One identity per call
//!
//! A caller may present credentials of several schemes at once (a Bearer
//! token and an API key). Each scheme yields its own identity, and the
//! handler sees exactly one: the identity of the first alternative, in the
//! order the method declares them, whose scheme authenticated the caller
//! with every scope it requires. Identities are never merged: a user's
//! token sent along with a service's API key runs a method as the user if
//! the user's identity meets the requirement, as the service if the
//! service's does, and never as the user with the service's scopes.

mod api_key;
mod caller;
mod credentials;
mod function;
pub mod jose;
#[cfg(feature = "oidc")]
pub mod oidc;
mod origin;
mod requirement;
mod scheme;
mod session;

pub use api_key::{AnySecurity, ApiKeySecurity};
pub use caller::{Caller, Identities};
pub use credentials::Credentials;
pub use function::{SecurityFn, SecurityFunction, SharedSecurity};
pub use origin::RequestId;
pub(crate) use origin::{ConnectionInfo, RemoteAddr};
pub use requirement::{IntoScopes, MethodSecurity, Requirement};
pub use scheme::{CredentialLocation, Scheme, SchemeKind};
pub(crate) use session::presented;
pub use session::SessionCredentials;

/// The bearer-token scheme named `Bearer` (`Authorization: Bearer
/// <token>`, tokens in the JWT format): the scheme of `rpcguard-accounts`'
/// tokens and of [`oidc`](self#)'s external tokens.
pub const BEARER: Scheme = Scheme::bearer("Bearer");

#[cfg(test)]
mod tests;
