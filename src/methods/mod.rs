//! The reference server's methods. (`rpc.discover` is added by the server
//! to every API; see [`rpcguard::server`].)

pub mod accounts;
pub mod errors;
pub mod sessions;
mod state;
