//! Signing keys: a set of keys, each with a `kid` and exactly one algorithm,
//! kept in `<data-dir>/keys.json` (mode 0600) on SQLite, or in the database
//! on PostgreSQL, where every instance shares it.
//!
//! - [`set`]: the key set itself — algorithms, generation, rotation, which
//!   key signs and until when each older key still verifies.
//! - [`file`](mod@file): reading and writing `keys.json` (private, replaced
//!   atomically), the upgrade from `secret.key`, and watching the file so a
//!   running server sees `rpcguard key rotate` without a restart.
//! - [`db`]: the set in PostgreSQL (table `signing_keys`): created or
//!   imported on the first start, rotated under an advisory lock, watched
//!   through the change feed and a poll.
//! - [`jwks`]: `GET /.well-known/jwks.json`, the public keys.
//!
//! Verification itself lives in [`crate::auth::token`]: it picks the key by
//! the token's `kid` from this set only and accepts only that key's
//! algorithm.

#[cfg(feature = "postgres")]
pub mod db;
pub mod file;
pub mod jwks;
pub mod set;

#[cfg(feature = "postgres")]
pub use db::{watch_key_table, DbKeySet, Import, PUBLISH_DELAY};
pub use file::{open_key_set, rotate_key_set, watch_key_file, KEYS_FILE_NAME};
pub use jwks::{jwks_resource, JWKS_PATH};
pub use set::{KeyAlg, KeySet, KeyState, StoredKey, RELOAD_SLACK};
