//! Throttling of the account methods, on `governor`'s GCRA limiters.
//!
//! Budgets, each a burst that refills evenly over a minute (`0` disables
//! one):
//!
//! | method | key | default per minute |
//! |---|---|---|
//! | `sign_in` | client address | 30 |
//! | `sign_in` | (account, client address) | 5 |
//! | `sign_in` | account, any client | 30 |
//! | `sign_up` | client address | 10 |
//! | `refresh` | client address | 120 |
//! | `refresh` | session | 6 |
//!
//! An empty budget gives `-32005` with `retry_after_s`. Every check happens
//! before any bcrypt work, and no budget is drawn for an attempt the bcrypt
//! queue refuses (the handler reserves its place in the queue first).
//!
//! **Order of the `sign_in` budgets**, stopping at the first empty one:
//! 1. the client address: the caller's own widest budget. An attempt refused
//!    here draws nothing else and creates no key in the other two limiters,
//!    so a flood of fresh usernames from one address costs one key;
//! 2. (account, client address);
//! 3. the account, which it shares with every other client of that account.
//!
//! So a refused attempt has drawn only from budgets of the caller's own
//! address (those checked before the one that refused it); the account-wide
//! budget, the only one another client depends on, is drawn only by attempts
//! that passed both of the caller's own budgets: one address can take at
//! most 5 a minute of an account's 30.
//!
//! **Keys.** The client address is the client's IP (the TCP peer's, or behind a
//! trusted proxy the one it names, see `--trusted-proxies`): IPv4 as is, an
//! IPv4-mapped IPv6 address as its IPv4 address, any other IPv6 address by
//! its /64 prefix (one host usually holds a whole /64, so keying by the full
//! address would give it 2^64 budgets). Usernames are case-folded. Neither
//! packing calls into one batch nor spreading them over WebSocket sessions
//! gets around the budgets.
//!
//! **Several instances.** On PostgreSQL these budgets are shared by every
//! instance on the database: an attempt that this server's own budgets let
//! through also draws, in the same order, from the same budgets kept in the
//! database ([`SignInThrottle::shared_sign_in`],
//! [`UserStore::draw_shared`]: one upsert per budget on an unlogged table,
//! GCRA on the database's clock), so N instances allow what one allows, not
//! N times the guesses. It stays cheap: only attempts that already hold a
//! place in the bcrypt queue get there (so at most about three small writes
//! per bcrypt verification, which costs a thousand times more), and the
//! minute's upkeep deletes the keys that have refilled. This server's own
//! budgets stay in front, so a flood refused locally never reaches the
//! database. On SQLite (one server) the local budgets are the whole truth.
//!
//! **Memory.** Each limiter is a [`rpcguard::limit::Budget`]: at most
//! `max_keys` keys, swept by [`SignInThrottle::retain_recent`] every minute
//! and early when full, and new keys sharing one overflow budget once it is
//! full (failing closed). A key costs about 200 bytes (measured with
//! 60-character usernames), so with the default cap of 100,000 keys per
//! limiter the four limiters stay under about 80 MiB whatever the clients
//! do.

use std::net::IpAddr;
use std::sync::Arc;

use rpcguard::error::RpcError;
use rpcguard::limit::{draw, Budget, Rate};
use rpcguard::server::client_key;

use crate::store::{SharedDraw, StoreError, UserStore};
use crate::user::Username;

/// Default most keys per limiter.
pub const DEFAULT_MAX_KEYS: usize = rpcguard::limit::DEFAULT_MAX_KEYS;
/// Default `sign_up` budget per client address and minute.
pub const DEFAULT_SIGN_UP_PER_IP: u32 = 10;

/// `sign_in` budgets per minute; `0` disables that budget.
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

/// The shared throttle of `sign_in` and `sign_up`.
#[derive(Clone)]
pub struct SignInThrottle {
    inner: Arc<Limiters>,
}

struct Limiters {
    config: ThrottleConfig,
    sign_up_per_ip: u32,
    ip: Option<Budget<Option<IpAddr>>>,
    pair: Option<Budget<(String, Option<IpAddr>)>>,
    account: Option<Budget<String>>,
    sign_up_ip: Option<Budget<Option<IpAddr>>>,
}

impl std::fmt::Debug for SignInThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignInThrottle")
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl SignInThrottle {
    /// A throttle with these `sign_in` budgets, no `sign_up` budget and the
    /// default cap of keys.
    pub fn new(config: ThrottleConfig) -> Self {
        Self::with_limits(config, 0, DEFAULT_MAX_KEYS)
    }

    /// A throttle with these `sign_in` budgets, `sign_up_per_ip` `sign_up`
    /// attempts per client address and minute (`0`: no limit) and at most
    /// `max_keys` keys in each limiter.
    pub fn with_limits(config: ThrottleConfig, sign_up_per_ip: u32, max_keys: usize) -> Self {
        SignInThrottle {
            inner: Arc::new(Limiters {
                config,
                sign_up_per_ip,
                ip: Budget::per_minute(config.per_ip, max_keys),
                pair: Budget::per_minute(config.per_account_and_ip, max_keys),
                account: Budget::per_minute(config.per_account, max_keys),
                sign_up_ip: Budget::per_minute(sign_up_per_ip, max_keys),
            }),
        }
    }

    /// Draws one `sign_in` attempt for `username` from `client`, in the
    /// order of the module docs; `-32005` with the wait when a budget is
    /// empty.
    pub fn check(&self, username: &Username, client: Option<IpAddr>) -> Result<(), RpcError> {
        let l = &self.inner;
        let client = client.map(client_key);
        draw(l.ip.as_ref(), &client)?;
        let account = username.key();
        draw(l.pair.as_ref(), &(account.clone(), client))?;
        draw(l.account.as_ref(), &account)
    }

    /// Draws one `sign_up` attempt from `client`; `-32005` with the wait
    /// when its budget is empty.
    pub fn check_sign_up(&self, client: Option<IpAddr>) -> Result<(), RpcError> {
        let l = &self.inner;
        draw(l.sign_up_ip.as_ref(), &client.map(client_key))
    }

    /// The draws of one `sign_in` attempt from the budgets every server on
    /// the store shares, in the order of [`SignInThrottle::check`]; the
    /// caller gives them to [`UserStore::draw_shared`] after this server's
    /// own budgets let the attempt through.
    pub fn shared_sign_in(&self, username: &Username, client: Option<IpAddr>) -> Vec<SharedDraw> {
        let c = &self.inner.config;
        let client = address(client);
        let account = username.key();
        [
            (c.per_ip, format!("signin.ip:{client}")),
            (
                c.per_account_and_ip,
                format!("signin.pair:{client}|{account}"),
            ),
            (c.per_account, format!("signin.account:{account}")),
        ]
        .into_iter()
        .filter_map(|(per_minute, key)| {
            Rate::per_minute(per_minute).map(|rate| SharedDraw { key, rate })
        })
        .collect()
    }

    /// The draw of one `sign_up` attempt from the shared budget of its
    /// client address (none when that budget is off).
    pub fn shared_sign_up(&self, client: Option<IpAddr>) -> Vec<SharedDraw> {
        Rate::per_minute(self.inner.sign_up_per_ip)
            .map(|rate| SharedDraw {
                key: format!("signup.ip:{}", address(client)),
                rate,
            })
            .into_iter()
            .collect()
    }

    /// Drops keys whose budget has fully refilled, bounding memory.
    pub fn retain_recent(&self) {
        let l = &self.inner;
        if let Some(b) = &l.ip {
            b.sweep();
        }
        if let Some(b) = &l.pair {
            b.sweep();
        }
        if let Some(b) = &l.account {
            b.sweep();
        }
        if let Some(b) = &l.sign_up_ip {
            b.sweep();
        }
    }

    /// The number of keys currently tracked (all budgets together).
    pub fn tracked(&self) -> usize {
        let l = &self.inner;
        l.ip.as_ref().map_or(0, Budget::len)
            + l.pair.as_ref().map_or(0, Budget::len)
            + l.account.as_ref().map_or(0, Budget::len)
            + l.sign_up_ip.as_ref().map_or(0, Budget::len)
    }
}

/// `refresh` budgets per minute; `0` disables that budget.
///
/// A client refreshes once per access-token lifetime (15 minutes by
/// default), so 6 a minute per session leaves room for retries and clock
/// skew while a loop that rotates one session as fast as it can is held to
/// one rotation (and one stored row) every 10 s. The address budget is
/// checked first, before the token is even looked up; the session's once
/// the token names one (see [`RefreshThrottle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshConfig {
    /// Refreshes per client address over all sessions.
    pub per_ip: u32,
    /// Refreshes per session.
    pub per_session: u32,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            per_ip: 120,
            per_session: 6,
        }
    }
}

/// The throttle of `refresh`: a budget per client address, drawn before
/// the presented token is looked up (so a flood of made-up tokens is
/// refused without a read once it is spent), and one per session, drawn
/// once the token is found. On PostgreSQL both are also drawn from the
/// budgets every instance shares ([`RefreshThrottle::shared`]), like the
/// sign-in budgets.
#[derive(Clone)]
pub struct RefreshThrottle {
    inner: Arc<RefreshLimiters>,
}

struct RefreshLimiters {
    config: RefreshConfig,
    ip: Option<Budget<Option<IpAddr>>>,
    session: Option<Budget<String>>,
}

impl std::fmt::Debug for RefreshThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefreshThrottle")
            .field("config", &self.inner.config)
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl RefreshThrottle {
    /// A throttle with these budgets and at most `max_keys` keys per
    /// limiter.
    pub fn new(config: RefreshConfig, max_keys: usize) -> Self {
        RefreshThrottle {
            inner: Arc::new(RefreshLimiters {
                config,
                ip: Budget::per_minute(config.per_ip, max_keys),
                session: Budget::per_minute(config.per_session, max_keys),
            }),
        }
    }

    /// Draws one `refresh` from `client`'s budget: `-32005` when empty.
    pub fn check_address(&self, client: Option<IpAddr>) -> Result<(), RpcError> {
        draw(self.inner.ip.as_ref(), &client.map(client_key))
    }

    /// Draws one `refresh` from the session's budget: `-32005` when empty.
    pub fn check_session(&self, session_id: &str) -> Result<(), RpcError> {
        match &self.inner.session {
            Some(budget) => draw(Some(budget), &session_id.to_owned()),
            None => Ok(()),
        }
    }

    /// The draws of one `refresh` from the budgets every server on the
    /// store shares: the address's, then the session's.
    pub fn shared(&self, client: Option<IpAddr>, session_id: &str) -> Vec<SharedDraw> {
        let c = &self.inner.config;
        [
            (c.per_ip, format!("refresh.ip:{}", address(client))),
            (c.per_session, format!("refresh.session:{session_id}")),
        ]
        .into_iter()
        .filter_map(|(per_minute, key)| {
            Rate::per_minute(per_minute).map(|rate| SharedDraw { key, rate })
        })
        .collect()
    }

    /// Drops keys whose budget has fully refilled, bounding memory.
    pub fn retain_recent(&self) {
        if let Some(b) = &self.inner.ip {
            b.sweep();
        }
        if let Some(b) = &self.inner.session {
            b.sweep();
        }
    }

    /// The number of keys currently tracked.
    pub fn tracked(&self) -> usize {
        self.inner.ip.as_ref().map_or(0, Budget::len)
            + self.inner.session.as_ref().map_or(0, Budget::len)
    }
}

/// A client address as a budget key: IPv6 by /64, unknown as `-`.
fn address(client: Option<IpAddr>) -> String {
    client
        .map(|ip| client_key(ip).to_string())
        .unwrap_or_else(|| "-".to_owned())
}

/// Draws `draws` from the store's shared budgets: `-32005` when one is
/// empty.
pub async fn draw_shared(store: &dyn UserStore, draws: &[SharedDraw]) -> Result<(), RpcError> {
    if draws.is_empty() {
        return Ok(());
    }
    match store
        .draw_shared(draws)
        .await
        .map_err(StoreError::into_rpc)?
    {
        None => Ok(()),
        Some(retry_after_s) => Err(RpcError::TooManyRequests { retry_after_s }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(octets: [u8; 4]) -> Option<IpAddr> {
        Some(IpAddr::from(octets))
    }

    fn name(n: impl std::fmt::Display) -> Username {
        Username::parse(format!("user{n}")).expect("valid")
    }

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
            throttle.check(&name(i), None).expect("within budget");
        }
        assert_eq!(throttle.tracked(), 1000);
        std::thread::sleep(std::time::Duration::from_millis(20));
        throttle.retain_recent();
        assert_eq!(throttle.tracked(), 0);
    }

    #[test]
    fn refused_attempts_do_not_drain_the_account_budget() {
        let throttle = SignInThrottle::new(ThrottleConfig::default());
        let name = Username::parse("victim").expect("valid");
        let attacker = ip([10, 0, 0, 1]);
        for _ in 0..100 {
            let _ = throttle.check(&name, attacker);
        }
        // Only 5 reached the account-wide budget of 30.
        throttle
            .check(&name, ip([10, 0, 0, 2]))
            .expect("the real user");
    }

    #[test]
    fn the_address_budget_is_checked_first() {
        // Fresh usernames from one address: once its 30 are spent, nothing
        // else is drawn and no (account, IP) or account key is created.
        let throttle = SignInThrottle::new(ThrottleConfig::default());
        let attacker = ip([10, 0, 0, 1]);
        let refused = (0..10_000)
            .filter(|i| throttle.check(&name(i), attacker).is_err())
            .count();
        assert_eq!(refused, 10_000 - 30);
        // 1 address key + 30 pair keys + 30 account keys.
        assert_eq!(throttle.tracked(), 61);
    }

    #[test]
    fn keys_are_capped_and_new_ones_share_an_overflow_budget() {
        let throttle = SignInThrottle::with_limits(
            ThrottleConfig {
                per_account_and_ip: 0,
                per_ip: 0,
                per_account: 5,
            },
            0,
            100,
        );
        for i in 0..100 {
            throttle.check(&name(i), None).expect("own budget");
        }
        assert_eq!(throttle.tracked(), 100);
        // Full, and nothing has refilled: new accounts share one budget of
        // 5, and the cap holds.
        let passed = (100..1100)
            .filter(|i| throttle.check(&name(i), None).is_ok())
            .count();
        assert_eq!(passed, 5, "the overflow budget");
        assert_eq!(throttle.tracked(), 100);
        // Accounts already tracked keep their own budget.
        throttle.check(&name(0), None).expect("tracked key");
    }

    #[test]
    fn ipv6_is_keyed_by_its_64_prefix_and_mapped_ipv4_as_ipv4() {
        let v6 = |s: &str| Some(s.parse::<IpAddr>().expect("address"));
        assert_eq!(
            v6("2001:db8:1:2:aaaa:bbbb:cccc:dddd").map(client_key),
            v6("2001:db8:1:2::")
        );
        assert_eq!(v6("::ffff:192.0.2.7").map(client_key), ip([192, 0, 2, 7]));
        assert_eq!(ip([192, 0, 2, 7]).map(client_key), ip([192, 0, 2, 7]));

        let throttle = SignInThrottle::new(ThrottleConfig::default());
        let victim = Username::parse("victim").expect("valid");
        // Five addresses of one /64 share one (account, IP) budget of 5 ...
        for host in 1..=5 {
            throttle
                .check(&victim, v6(&format!("2001:db8:1:2::{host}")))
                .expect("within the /64's budget");
        }
        let err = throttle.check(&victim, v6("2001:db8:1:2:ffff::1"));
        assert!(err.is_err(), "same /64");
        // ... another /64 has its own.
        throttle
            .check(&victim, v6("2001:db8:1:3::1"))
            .expect("another /64");
        // A mapped address shares its IPv4 address's budget.
        for _ in 0..5 {
            throttle
                .check(&victim, ip([192, 0, 2, 7]))
                .expect("within budget");
        }
        assert!(throttle.check(&victim, v6("::ffff:192.0.2.7")).is_err());
    }

    #[test]
    fn sign_up_has_its_own_budget_per_address() {
        let throttle = SignInThrottle::with_limits(ThrottleConfig::default(), 10, 100);
        let attacker = ip([10, 0, 0, 1]);
        for _ in 0..10 {
            throttle.check_sign_up(attacker).expect("within budget");
        }
        let err = throttle.check_sign_up(attacker).unwrap_err();
        assert!(matches!(err, RpcError::TooManyRequests { retry_after_s } if retry_after_s >= 1));
        throttle
            .check_sign_up(ip([10, 0, 0, 2]))
            .expect("another address");
        // The sign_in budgets of the flooding address are untouched.
        throttle
            .check(&name(1), attacker)
            .expect("sign_in from the address");
    }

    #[test]
    fn refresh_budgets_are_per_address_and_per_session() {
        let throttle = RefreshThrottle::new(
            RefreshConfig {
                per_ip: 10,
                per_session: 3,
            },
            100,
        );
        for _ in 0..3 {
            throttle.check_session("s1").expect("within budget");
        }
        assert!(throttle.check_session("s1").is_err());
        throttle.check_session("s2").expect("another session");
        let client = ip([10, 0, 0, 1]);
        for _ in 0..10 {
            throttle.check_address(client).expect("within budget");
        }
        assert!(throttle.check_address(client).is_err());
        throttle.check_address(ip([10, 0, 0, 2])).expect("another");
        let shared = throttle.shared(client, "s1");
        assert_eq!(shared.len(), 2);
        assert_eq!(shared[0].key, "refresh.ip:10.0.0.1");
        assert_eq!(shared[1].key, "refresh.session:s1");
        let off = RefreshThrottle::new(
            RefreshConfig {
                per_ip: 0,
                per_session: 0,
            },
            100,
        );
        for _ in 0..100 {
            off.check_session("s").expect("off");
            off.check_address(client).expect("off");
        }
        assert!(off.shared(client, "s").is_empty());
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
            throttle.check_sign_up(None).expect("no budget");
        }
        assert_eq!(throttle.tracked(), 0);
    }
}
