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
//!
//! Behind a trusted proxy ([`super::proxy`]) every connection comes from
//! the proxy, so the per-address cap means something else there:
//!
//! - a trusted proxy's connections are exempt from the per-address cap
//!   (they still count towards `max`, and never use the reserve);
//! - each request it forwards, and each WebSocket session it carries, takes
//!   a slot of the resolved client's address for as long as it lasts
//!   ([`ConnectionSlots::admit_client`]): per-address cap only, counted
//!   together with that address's direct connections. Over the cap the
//!   request (or upgrade) is answered 503. With no per-address cap
//!   (`per_ip` 0) nothing is counted per request: the slot is empty, and
//!   taking and dropping it touches no shared memory.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::limit::client_key;
use std::sync::{Arc, Mutex};

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
            slots: Some(self.clone()),
            key: Some(key),
            counted: true,
        })
    }

    /// Admits a connection of a trusted proxy: no per-address cap, and
    /// none of the reserve.
    pub(crate) fn admit_proxy(self: &Arc<Self>) -> Result<Slot, Refused> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.total >= self.limits.max {
            return Err(Refused::Full);
        }
        held.total += 1;
        Ok(Slot {
            slots: Some(self.clone()),
            key: None,
            counted: true,
        })
    }

    /// Admits a request or WebSocket session that a trusted proxy forwarded
    /// for `ip`: the per-address cap only (the proxy's connection holds the
    /// slot counted in all).
    pub(crate) fn admit_client(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        if self.limits.per_ip == 0 {
            // Nothing to count (see the module documentation).
            return Ok(Slot {
                slots: None,
                key: None,
                counted: false,
            });
        }
        let key = client_key(ip);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let of_address = held.by_address.get(&key).copied().unwrap_or(0);
        if self.limits.per_ip > 0 && of_address >= self.limits.per_ip {
            return Err(Refused::PerAddress);
        }
        *held.by_address.entry(key).or_insert(0) += 1;
        Ok(Slot {
            slots: Some(self.clone()),
            key: Some(key),
            counted: false,
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
    /// The slots to give it back to (none: it counts nowhere).
    slots: Option<Arc<ConnectionSlots>>,
    /// The address it counts for (none: a trusted proxy's connection).
    key: Option<IpAddr>,
    /// Whether it counts towards `max`.
    counted: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(slots) = &self.slots else {
            return;
        };
        let mut held = slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if self.counted {
            held.total = held.total.saturating_sub(1);
        }
        if let Some(key) = &self.key {
            if let Some(count) = held.by_address.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    held.by_address.remove(key);
                }
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
    fn without_a_per_address_cap_forwarded_requests_count_nowhere() {
        let slots = ConnectionSlots::new(SlotLimits {
            max: 2,
            reserve: 0,
            per_ip: 0,
        });
        let _proxy = slots.admit_proxy().expect("proxy");
        let requests: Vec<_> = (0..100)
            .map(|_| slots.admit_client(ip("10.0.0.1")).expect("no cap"))
            .collect();
        assert!(requests.iter().all(|slot| slot.slots.is_none()));
        assert_eq!(
            Arc::strong_count(&slots),
            2,
            "only the proxy's slot holds them"
        );
        drop(requests);
        assert_eq!(slots.held(), 1);
        let _direct = slots.admit(ip("10.0.0.1")).expect("the last slot");
        assert_eq!(slots.admit(ip("10.0.0.2")).unwrap_err(), Refused::Full);
    }

    #[test]
    fn proxies_are_exempt_and_their_clients_counted() {
        let slots = ConnectionSlots::new(SlotLimits {
            max: 3,
            reserve: 1,
            per_ip: 1,
        });
        let p1 = slots.admit_proxy().expect("proxy 1");
        let _p2 = slots.admit_proxy().expect("proxy 2: no per-address cap");
        let c1 = slots
            .admit_client(ip("10.0.0.1"))
            .expect("client via proxy");
        assert_eq!(
            slots.admit_client(ip("10.0.0.1")).unwrap_err(),
            Refused::PerAddress
        );
        // The same client connecting directly shares its count.
        assert_eq!(
            slots.admit(ip("10.0.0.1")).unwrap_err(),
            Refused::PerAddress
        );
        let _c2 = slots.admit_client(ip("10.0.0.2")).expect("another client");
        assert_eq!(slots.held(), 2, "client slots do not count in all");
        let _p3 = slots.admit_proxy().expect("proxy 3");
        assert_eq!(
            slots.admit_proxy().unwrap_err(),
            Refused::Full,
            "no reserve"
        );
        drop(c1);
        drop(p1);
        let _c1 = slots.admit_client(ip("10.0.0.1")).expect("freed");
        let _p4 = slots.admit_proxy().expect("freed");
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
