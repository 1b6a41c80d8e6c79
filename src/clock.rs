//! The wall clock, in the one form the server uses: whole seconds since
//! the Unix epoch (token `iat`/`exp`, session times, purges, key
//! rotations), and the one text form callers see (RFC 3339, `created_at`).
//!
//! The server reads the time through a [`Clock`] given in its
//! [`Config`](crate::config::Config): the system clock unless a test puts
//! a [`ManualClock`] there, which stands still until the test moves it —
//! the way `tokio::time::pause` and `advance` let a test skip a timer, and
//! the way quanta's mock clock stands in for the real one. A test then
//! expires a token, ends a refresh token's life or orders two sessions by
//! their creation second without sleeping.
//!
//! Only wall time is read here. Intervals (rate-limit windows, timeouts,
//! latencies) are measured with [`std::time::Instant`] and tokio's timers,
//! and times that a database stamps itself (SQLite's change log) are
//! compared with the system clock, whichever clock the server runs on.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch by the system clock, `None` if the clock
/// is before it. What [`Clock::System`] reads; the server reads its
/// [`Clock`] instead, so that a test can move it.
pub fn unix_now() -> Option<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// Where the server reads the time: the system clock (the default), or a
/// [`ManualClock`] that a test sets and advances.
///
/// Cheap to clone (a manual clock is shared: every clone reads the same
/// time), and reading the system clock costs what
/// [`SystemTime::now`] costs: no allocation, no lock.
///
/// ```
/// use std::time::Duration;
/// use rpcguard_accounts::clock::{Clock, ManualClock};
///
/// let manual = ManualClock::new(1_700_000_000);
/// let clock = Clock::Manual(manual.clone());
/// assert_eq!(clock.unix_now(), Some(1_700_000_000));
/// manual.advance(Duration::from_secs(901));
/// assert_eq!(clock.unix_now(), Some(1_700_000_901));
/// assert!(Clock::system().unix_now().is_some());
/// ```
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system's wall clock.
    #[default]
    System,
    /// A clock that moves only when told to (tests).
    Manual(ManualClock),
}

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock::System
    }

    /// A manual clock standing at `start_unix_secs`; move it through the
    /// [`ManualClock`] that [`Clock::as_manual`] gives back, or make the
    /// [`ManualClock`] first and wrap it in [`Clock::Manual`].
    pub fn manual(start_unix_secs: u64) -> Clock {
        Clock::Manual(ManualClock::new(start_unix_secs))
    }

    /// Seconds since the Unix epoch by this clock; `None` when the system
    /// clock is before the epoch (a manual clock always answers).
    pub fn unix_now(&self) -> Option<u64> {
        match self {
            Clock::System => unix_now(),
            Clock::Manual(manual) => Some(manual.unix_now()),
        }
    }

    /// The manual clock behind this one, `None` for the system clock: for
    /// a test that holds only the [`Config`](crate::config::Config).
    pub fn as_manual(&self) -> Option<&ManualClock> {
        match self {
            Clock::System => None,
            Clock::Manual(manual) => Some(manual),
        }
    }
}

/// A clock that stands still until it is moved ([`advance`](Self::advance),
/// [`set`](Self::set)). Clones share the time: the test keeps one, the
/// server reads another (through [`Clock::Manual`]).
///
/// Kept in nanoseconds since the Unix epoch (one atomic integer, read and
/// moved without a lock), so that small steps add up: two advances of
/// half a second move it by one second. It reaches past the year 2500.
#[derive(Clone)]
pub struct ManualClock(Arc<AtomicU64>);

const NANOS_PER_SEC: u64 = 1_000_000_000;

impl ManualClock {
    /// A manual clock standing at `start_unix_secs`.
    pub fn new(start_unix_secs: u64) -> ManualClock {
        ManualClock(Arc::new(AtomicU64::new(
            start_unix_secs.saturating_mul(NANOS_PER_SEC),
        )))
    }

    /// A manual clock standing at the system clock's second now (the
    /// epoch if the system clock is before it), so that times it gives
    /// and times read elsewhere (a command line run by the test, a token
    /// made by hand) are close.
    pub fn starting_now() -> ManualClock {
        ManualClock::new(unix_now().unwrap_or(0))
    }

    /// Its time, in whole seconds since the Unix epoch.
    pub fn unix_now(&self) -> u64 {
        self.0.load(Ordering::SeqCst) / NANOS_PER_SEC
    }

    /// Moves it forward by `by` (it stops at its end, in the year 2554).
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // `fetch_update` with a closure that always answers `Some` cannot
        // fail; the result says nothing more.
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Puts it at `unix_secs` (back in time too).
    pub fn set(&self, unix_secs: u64) {
        self.0
            .store(unix_secs.saturating_mul(NANOS_PER_SEC), Ordering::SeqCst);
    }
}

impl std::fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ManualClock")
            .field(&self.unix_now())
            .finish()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let manual = ManualClock::new(100);
        let clock = Clock::Manual(manual.clone());
        let copy = clock.clone();
        assert_eq!(clock.unix_now(), Some(100));
        manual.advance(Duration::from_millis(600));
        assert_eq!(copy.unix_now(), Some(100), "whole seconds only");
        manual.advance(Duration::from_millis(400));
        assert_eq!(copy.unix_now(), Some(101), "small steps add up");
        manual.set(50);
        assert_eq!(clock.unix_now(), Some(50), "set goes back too");
        manual.advance(Duration::MAX);
        assert_eq!(clock.unix_now(), Some(u64::MAX / NANOS_PER_SEC));
        assert!(clock.as_manual().is_some());
    }

    #[test]
    fn the_system_clock_is_the_default_and_reads_the_system_time() {
        let clock = Clock::default();
        assert!(clock.as_manual().is_none());
        let before = unix_now().expect("clock");
        let read = clock.unix_now().expect("clock");
        assert!(before <= read && read <= unix_now().expect("clock"));
    }
}
