//! Connection slots: how many TCP connections the server holds, in all and
//! per client address.
//!
//! Admission happens at `accept`, before a byte is read:
//!
//! - an address that already holds `per_ip` connections is refused (one
//!   client cannot take every slot; IPv6 addresses count by their /64, the
//!   block one subscriber usually gets);
//! - below `max` connections everyone else is admitted;
//! - past `max`, a small `reserve` admits only addresses that hold no
//!   connection yet, so a health check or a new client still gets in while
//!   the slots are taken by someone else;
//! - everything else is refused: the socket gets a one-line
//!   `503 Service Unavailable` and is closed at once. Accepting and closing
//!   (rather than leaving connections in the kernel's backlog) keeps the
//!   backlog moving, so refusals are fast and visible to the client.
//!
//! A [`Slot`] is held for the connection's whole life, WebSocket session
//! included, and given back when dropped.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// The key of a client address for per-client limits: IPv4 as is
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

/// Limits of [`ConnectionSlots`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotLimits {
    /// Connections admitted to anyone.
    pub max: usize,
    /// Extra connections for addresses that hold none.
    pub reserve: usize,
    /// Connections one address may hold (0: no per-address limit).
    pub per_ip: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The address holds its share already.
    PerAddress,
    /// Every slot, reserve included, is taken.
    Full,
}

/// The server's connection slots.
#[derive(Debug)]
pub(crate) struct ConnectionSlots {
    limits: SlotLimits,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl ConnectionSlots {
    /// Slots with these limits.
    pub(crate) fn new(limits: SlotLimits) -> Arc<Self> {
        Arc::new(ConnectionSlots {
            limits,
            held: Mutex::new(Held::default()),
        })
    }

    /// Admits a connection from `ip`, or says why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = client_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let of_address = held.by_address.get(&key).copied().unwrap_or(0);
        if self.limits.per_ip > 0 && of_address >= self.limits.per_ip {
            return Err(Refused::PerAddress);
        }
        let admitted = held.total < self.limits.max
            || (held.total < self.limits.max + self.limits.reserve && of_address == 0);
        if !admitted {
            return Err(Refused::Full);
        }
        held.total += 1;
        *held.by_address.entry(key).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// Connections held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.held.lock().map_or(0, |h| h.total)
    }
}

/// One admitted connection; gives its slot back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    slots: Arc<ConnectionSlots>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(count) = held.by_address.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.by_address.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn per_address_cap_and_reserve() {
        let slots = ConnectionSlots::new(SlotLimits {
            max: 3,
            reserve: 1,
            per_ip: 2,
        });
        let a1 = slots.admit(ip("10.0.0.1")).expect("first");
        let _a2 = slots.admit(ip("10.0.0.1")).expect("second");
        assert_eq!(
            slots.admit(ip("10.0.0.1")).unwrap_err(),
            Refused::PerAddress
        );
        let _b1 = slots.admit(ip("10.0.0.2")).expect("b");
        // Full: the reserve admits only an address holding nothing.
        let b2 = slots.admit(ip("10.0.0.2")).unwrap_err();
        assert_eq!(b2, Refused::Full);
        let _c1 = slots.admit(ip("10.0.0.3")).expect("reserve");
        assert_eq!(slots.admit(ip("10.0.0.4")).unwrap_err(), Refused::Full);
        drop(a1);
        assert_eq!(slots.held(), 3);
        let _d = slots.admit(ip("10.0.0.4")).expect("freed slot");
    }

    #[test]
    fn ipv6_counts_by_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(client_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_key(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        let slots = ConnectionSlots::new(SlotLimits {
            max: 10,
            reserve: 0,
            per_ip: 1,
        });
        let _a = slots.admit(ip("2001:db8::1")).expect("first");
        assert!(slots.admit(ip("2001:db8::ffff:2")).is_err(), "same /64");
        let _b = slots.admit(ip("2001:db8:0:1::1")).expect("other /64");
    }
}
