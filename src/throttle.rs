//! Brute-force protection for `sign_in`, on `governor`'s GCRA limiters.
//!
//! Policy: every `sign_in` attempt (checked before any bcrypt work, so a
//! throttled attempt costs nothing) draws from three keyed budgets, each a
//! burst that refills evenly over a minute:
//!
//! | key | default per minute |
//! |---|---|
//! | (account, client IP) | 5 |
//! | client IP, any account | 30 |
//! | account, any client | 30 |
//!
//! When one is empty the call gets `-32005` with `retry_after_s`. The keys
//! are the case-folded username and the TCP peer's IP, so neither packing
//! calls into one batch, nor spreading them over WebSocket sessions or over
//! HTTP and WebSocket, gets around them. The real user signing in from
//! another address has its own (account, IP) budget; only an attacker who
//! empties the account-wide budget delays it, and only until it refills —
//! never a permanent lock-out. State is bounded: entries whose budget has
//! refilled are dropped by [`SignInThrottle::retain_recent`], which the
//! server calls every minute.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::RpcError;
use crate::user::Username;

/// Budgets per minute; `0` disables that budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleConfig {
    /// Attempts per (account, client IP).
    pub per_account_and_ip: u32,
    /// Attempts per client IP over all accounts.
    pub per_ip: u32,
    /// Attempts per account over all clients.
    pub per_account: u32,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        ThrottleConfig {
            per_account_and_ip: 5,
            per_ip: 30,
            per_account: 30,
        }
    }
}

type Limiter<K> = Option<DefaultKeyedRateLimiter<K>>;

/// The shared sign-in throttle.
#[derive(Clone)]
pub struct SignInThrottle {
    inner: Arc<Limiters>,
}

struct Limiters {
    pair: Limiter<(String, Option<IpAddr>)>,
    ip: Limiter<Option<IpAddr>>,
    account: Limiter<String>,
    clock: DefaultClock,
}

impl std::fmt::Debug for SignInThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInThrottle")
            .field("tracked", &self.tracked())
            .finish()
    }
}

fn limiter<K: std::hash::Hash + Eq + Clone>(per_minute: u32) -> Limiter<K> {
    let burst = NonZeroU32::new(per_minute)?;
    let period = Duration::from_secs(60) / per_minute;
    let quota = Quota::with_period(period)?.allow_burst(burst);
    Some(RateLimiter::keyed(quota))
}

impl SignInThrottle {
    /// A throttle with these budgets.
    pub fn new(config: ThrottleConfig) -> Self {
        SignInThrottle {
            inner: Arc::new(Limiters {
                pair: limiter(config.per_account_and_ip),
                ip: limiter(config.per_ip),
                account: limiter(config.per_account),
                clock: DefaultClock::default(),
            }),
        }
    }

    /// Draws one attempt for `username` from `client`; `-32005` with the
    /// wait when a budget is empty.
    pub fn check(&self, username: &Username, client: Option<IpAddr>) -> Result<(), RpcError> {
        let account = username.key();
        let l = &self.inner;
        // Checked in order and stopped at the first empty budget, so that a
        // refused attempt does not also drain the wider budgets: one address
        // hammering an account spends only its own (account, IP) budget.
        let refused = l
            .pair
            .as_ref()
            .and_then(|r| r.check_key(&(account.clone(), client)).err())
            .or_else(|| l.ip.as_ref().and_then(|r| r.check_key(&client).err()))
            .or_else(|| l.account.as_ref().and_then(|r| r.check_key(&account).err()));
        match refused {
            None => Ok(()),
            Some(not_until) => {
                let wait = not_until.wait_time_from(l.clock.now());
                Err(RpcError::TooManyRequests {
                    retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
        }
    }

    /// Drops entries whose budget has fully refilled, bounding memory.
    pub fn retain_recent(&self) {
        let l = &self.inner;
        if let Some(r) = &l.pair {
            r.retain_recent();
            r.shrink_to_fit();
        }
        if let Some(r) = &l.ip {
            r.retain_recent();
            r.shrink_to_fit();
        }
        if let Some(r) = &l.account {
            r.retain_recent();
            r.shrink_to_fit();
        }
    }

    /// The number of keys currently tracked (all budgets together).
    pub fn tracked(&self) -> usize {
        let l = &self.inner;
        l.pair.as_ref().map_or(0, |r| r.len())
            + l.ip.as_ref().map_or(0, |r| r.len())
            + l.account.as_ref().map_or(0, |r| r.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixth_attempt_is_throttled() {
        let throttle = SignInThrottle::new(ThrottleConfig::default());
        let name = Username::parse("alice").expect("valid");
        let ip = Some(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..5 {
            throttle.check(&name, ip).expect("within budget");
        }
        let err = throttle.check(&name, ip).unwrap_err();
        assert!(matches!(err, RpcError::TooManyRequests { retry_after_s } if retry_after_s >= 1));
        // Another address has its own (account, IP) budget.
        throttle
            .check(&name, Some(IpAddr::from([127, 0, 0, 2])))
            .expect("other address");
    }

    #[test]
    fn refreshed_entries_are_dropped() {
        let throttle = SignInThrottle::new(ThrottleConfig {
            per_account_and_ip: 60_000,
            per_ip: 0,
            per_account: 0,
        });
        for i in 0..1000 {
            let name = Username::parse(format!("user{i}")).expect("valid");
            throttle.check(&name, None).expect("within budget");
        }
        assert_eq!(throttle.tracked(), 1000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        throttle.retain_recent();
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn refused_attempts_do_not_drain_wider_budgets() {
        let throttle = SignInThrottle::new(ThrottleConfig::default());
        let name = Username::parse("victim").expect("valid");
        let attacker = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..100 {
            let _ = throttle.check(&name, attacker);
        }
        // Only 5 reached the account-wide budget of 30.
        throttle
            .check(&name, Some(IpAddr::from([10, 0, 0, 2])))
            .expect("the real user");
    }

    #[test]
    fn zero_disables() {
        let throttle = SignInThrottle::new(ThrottleConfig {
            per_account_and_ip: 0,
            per_ip: 0,
            per_account: 0,
        });
        let name = Username::parse("alice").expect("valid");
        for _ in 0..100 {
            throttle.check(&name, None).expect("no budget");
        }
        assert_eq!(throttle.tracked(), 0);
    }
}
