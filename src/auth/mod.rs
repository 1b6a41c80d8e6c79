//! Credentials: password hashing ([`password`]) and access tokens ([`token`]).

pub mod password;
pub mod token;
