//! The wall clock, in the one form the server uses: whole seconds since
//! the Unix epoch (token `iat`/`exp`, session times, purges), and the one
//! text form callers see (RFC 3339, `created_at`). One place to read it,
//! so that no module imports the token module or the store for the time.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, `None` if the clock is before it.
pub fn unix_now() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-27T14:46:18Z`).
pub fn format_rfc3339(unix: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}
