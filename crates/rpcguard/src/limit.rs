//! Rate limits: a [`Rate`] (`"600/min"`) and a keyed [`Budget`] on
//! `governor`'s GCRA limiter with a bounded number of keys.
//!
//! A budget is a burst of `count` calls that refills evenly over `per`: a
//! key that has spent it gets one more call every `per / count`. An empty
//! budget answers `-32005` with `retry_after_s`
//! ([`RpcError::TooManyRequests`]).
//!
//! **Memory.** A budget holds at most `max_keys` keys (plus a few when
//! threads race at the limit). Keys whose budget has refilled are dropped by
//! [`Budget::sweep`] (the owner calls it periodically), and early (at most
//! once a second) when the budget reaches its cap. When it is still full
//! after that, every *new* key shares one overflow budget of the same size:
//! the fallback fails closed — a flood of fresh keys gets no more calls than
//! one key would, while keys not yet tracked may wait (`-32005`) until the
//! next sweep frees room. Keys already tracked keep their own budgets. A
//! key costs about 200 bytes with 60-byte string keys.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::nanos::Nanos;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};
use governor::state::{InMemoryState, NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

use crate::error::RpcError;

/// Default most keys per budget.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Shortest time between two early sweeps of one full budget.
const EARLY_SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A rate: `count` calls per `per`, as a burst that refills evenly.
///
/// Written `COUNT/UNIT` with the unit `s`, `sec`, `second`, `min`,
/// `minute`, `h`, `hour`, `day`, or `COUNT/Ns` … for a multiple (`"5/10s"`).
///
/// ```
/// use rpcguard::limit::Rate;
/// use std::time::Duration;
/// let rate: Rate = "600/min".parse().unwrap();
/// assert_eq!((rate.count(), rate.per()), (600, Duration::from_secs(60)));
/// assert_eq!("5/10s".parse::<Rate>().unwrap().per(), Duration::from_secs(10));
/// assert!("0/min".parse::<Rate>().is_err());
/// assert!("ten/min".parse::<Rate>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    count: u32,
    per: Duration,
    quota: Quota,
}

impl Rate {
    /// `count` calls per `per`; `None` when that is no call at all or more
    /// than one call a nanosecond.
    pub fn new(count: u32, per: Duration) -> Option<Rate> {
        let burst = NonZeroU32::new(count)?;
        let period = per.checked_div(count)?;
        let quota = Quota::with_period(period)?.allow_burst(burst);
        Some(Rate { count, per, quota })
    }

    /// `count` calls per minute; `None` for 0.
    pub fn per_minute(count: u32) -> Option<Rate> {
        Rate::new(count, Duration::from_secs(60))
    }

    /// Calls in one period (the burst), at least 1.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period over which the burst refills.
    pub fn per(&self) -> Duration {
        self.per
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.per.as_secs();
        match secs {
            1 => write!(f, "{}/s", self.count),
            60 => write!(f, "{}/min", self.count),
            3600 => write!(f, "{}/hour", self.count),
            86_400 => write!(f, "{}/day", self.count),
            _ => write!(f, "{}/{}s", self.count, secs),
        }
    }
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a rate is COUNT/UNIT with COUNT > 0 and UNIT one of s, min, hour, day (or Ns, Nmin): {0}")]
pub struct BadRate(&'static str);

impl FromStr for Rate {
    type Err = BadRate;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (count, unit) = text.trim().split_once('/').ok_or(BadRate("no `/` in it"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| BadRate("the count is not a whole number"))?;
        if count == 0 {
            return Err(BadRate("the count is 0 (leave the limit out for none)"));
        }
        let unit = unit.trim();
        let digits = unit.bytes().take_while(u8::is_ascii_digit).count();
        let (multiple, unit) = unit.split_at(digits);
        let multiple: u64 = if multiple.is_empty() {
            1
        } else {
            multiple
                .parse()
                .map_err(|_| BadRate("the period's multiple is too large"))?
        };
        let seconds: u64 = match unit {
            "s" | "sec" | "second" => 1,
            "m" | "min" | "minute" => 60,
            "h" | "hour" => 3600,
            "d" | "day" => 86_400,
            _ => return Err(BadRate("unknown unit")),
        };
        let per = multiple
            .checked_mul(seconds)
            .filter(|s| (1..=366 * 86_400).contains(s))
            .ok_or(BadRate("the period is 0 or longer than a year"))?;
        Rate::new(count, Duration::from_secs(per))
            .ok_or(BadRate("more than one call per nanosecond"))
    }
}

/// A keyed state store with at most `max_keys` keys: a new key arriving
/// when it is full shares the one `overflow` state.
struct CappedStore<K: Hash + Eq + Clone> {
    map: DashMapStateStore<K>,
    overflow: InMemoryState,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> StateStore for CappedStore<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        // Two threads may both see room for the last key: the cap can be
        // passed by at most the number of threads checking at once.
        if self.map.contains_key(key) || self.map.len() < self.max_keys {
            self.map.measure_and_replace(key, f)
        } else {
            self.overflow.measure_and_replace(&NotKeyed::NonKey, f)
        }
    }
}

impl<K: Hash + Eq + Clone> ShrinkableKeyedStateStore<K> for CappedStore<K> {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&self.map, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&self.map);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&self.map)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&self.map)
    }
}

/// One keyed budget with a capped number of keys (see the module docs).
pub struct Budget<K: Hash + Eq + Clone> {
    limiter: RateLimiter<K, CappedStore<K>, DefaultClock>,
    rate: Rate,
    max_keys: usize,
    last_early_sweep: Mutex<Option<Instant>>,
    early_sweep_every: Duration,
}

impl<K: Hash + Eq + Clone> std::fmt::Debug for Budget<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("rate", &self.rate)
            .field("max_keys", &self.max_keys)
            .field("tracked", &self.len())
            .finish()
    }
}

impl<K: Hash + Eq + Clone> Budget<K> {
    /// A budget of `rate` for each key, tracking at most `max_keys` keys.
    pub fn new(rate: Rate, max_keys: usize) -> Self {
        let max_keys = max_keys.max(1);
        let store = CappedStore {
            map: DashMapStateStore::default(),
            overflow: InMemoryState::default(),
            max_keys,
        };
        Budget {
            limiter: RateLimiter::new(rate.quota, store, DefaultClock::default()),
            rate,
            max_keys,
            last_early_sweep: Mutex::new(None),
            early_sweep_every: EARLY_SWEEP_EVERY,
        }
    }

    /// `per_minute` calls a minute for each key; `None` when it is 0
    /// (no limit).
    pub fn per_minute(per_minute: u32, max_keys: usize) -> Option<Self> {
        Rate::per_minute(per_minute).map(|rate| Self::new(rate, max_keys))
    }

    /// The rate of each key.
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// The most keys it tracks.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Draws one call for `key`: `-32005` with the wait when its budget is
    /// empty. Sweeps first when the budget is full (at most once a second;
    /// a sweep already running elsewhere is not waited for).
    pub fn check(&self, key: &K) -> Result<(), RpcError> {
        if self.limiter.len() >= self.max_keys {
            if let Ok(mut last) = self.last_early_sweep.try_lock() {
                if last.is_none_or(|at| at.elapsed() >= self.early_sweep_every) {
                    *last = Some(Instant::now());
                    self.limiter.retain_recent();
                }
            }
        }
        self.limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RpcError::TooManyRequests {
                retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }

    /// Drops the keys whose budget has fully refilled and frees their
    /// memory.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// The number of keys tracked.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    /// True when no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[cfg(test)]
    fn sweep_early_always(&mut self) {
        self.early_sweep_every = Duration::ZERO;
    }
}

/// The key a per-address budget counts a client address by: IPv4 as is
/// (IPv4-mapped IPv6 as IPv4), other IPv6 by its /64 prefix, the block one
/// subscriber usually gets, so that one host cannot count as 2^64 clients.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_minute(n: u32, max_keys: usize) -> Budget<u32> {
        Budget::per_minute(n, max_keys).expect("non-zero")
    }

    #[test]
    fn rates_parse_and_print() {
        for (text, count, secs) in [
            ("600/min", 600, 60),
            (" 5 / s ", 5, 1),
            ("10/hour", 10, 3600),
            ("1/day", 1, 86_400),
            ("5/10s", 5, 10),
            ("7/2min", 7, 120),
        ] {
            let rate: Rate = text.parse().expect(text);
            assert_eq!(
                (rate.count(), rate.per().as_secs()),
                (count, secs),
                "{text}"
            );
            assert_eq!(rate.to_string().parse::<Rate>(), Ok(rate));
        }
        for bad in [
            "", "600", "0/min", "-1/min", "x/min", "5/", "5/week", "5/0s", "5/400d", "5/min/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_spent_budget_answers_retry_after() {
        let budget = per_minute(3, 10);
        for _ in 0..3 {
            budget.check(&1).expect("within budget");
        }
        let err = budget.check(&1).unwrap_err();
        assert!(
            matches!(err, RpcError::TooManyRequests { retry_after_s } if (1..=20).contains(&retry_after_s))
        );
        budget.check(&2).expect("another key");
    }

    #[test]
    fn refilled_keys_are_swept() {
        let budget = per_minute(60_000, 10_000);
        for i in 0..1000 {
            budget.check(&i).expect("within budget");
        }
        assert_eq!(budget.len(), 1000);
        std::thread::sleep(Duration::from_millis(20));
        budget.sweep();
        assert!(budget.is_empty());
    }

    #[test]
    fn keys_are_capped_and_new_ones_share_an_overflow_budget() {
        let budget = per_minute(5, 100);
        for i in 0..100 {
            budget.check(&i).expect("own budget");
        }
        let passed = (100..1100).filter(|i| budget.check(i).is_ok()).count();
        assert_eq!(passed, 5, "the overflow budget");
        assert_eq!(budget.len(), 100);
        budget.check(&0).expect("a tracked key keeps its own");
    }

    #[test]
    fn a_full_budget_is_swept_early() {
        let mut budget = per_minute(60_000, 100);
        budget.sweep_early_always();
        for i in 0..100 {
            budget.check(&i).expect("own budget");
        }
        std::thread::sleep(Duration::from_millis(20));
        budget.check(&100).expect("room after the sweep");
        assert_eq!(budget.len(), 1);
    }
}
