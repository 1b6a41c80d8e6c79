//! The wall clock, in the one form the server uses: whole seconds since
//! the Unix epoch (token `iat`/`exp`, session times, purges). One place to
//! read it, so that no module imports the token module for the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, `None` if the clock is before it.
pub fn unix_now() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}
