//! The client's address behind a reverse proxy.
//!
//! Behind a proxy every TCP peer is the proxy, so the per-address defences
//! (sign-in and sign-up budgets, policy `per_ip` limits, connection caps)
//! would count every client as one. When the TCP peer is in
//! [`ServerConfig::trusted_proxies`](super::ServerConfig::trusted_proxies),
//! the client's address is read from the header the proxy writes
//! ([`ForwardedHeader`]: `X-Forwarded-For`, or RFC 7239 `Forwarded`'s
//! `for=`): the right-most address in it that is not itself a trusted
//! proxy. Every address to the right of it was written by a proxy we trust;
//! everything to its left was written by the client and proves nothing.
//!
//! From any other peer those headers are ignored: a client that connects
//! directly cannot choose its address by sending one.
//!
//! Only one header is read, the one the operator names: a proxy that
//! appends to `X-Forwarded-For` passes a client's forged `Forwarded` through
//! untouched (and the other way round), so reading whichever is present
//! would let a client pick its own address.
//!
//! Resolution runs only for requests of a trusted peer; from any other
//! peer the address is the TCP peer's and nothing is parsed or allocated.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use http::header::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// The networks whose connections are proxies allowed to say who the
/// client is (`--trusted-proxies CIDR[,CIDR…]` in the `rpcguard` server).
///
/// ```
/// use rpcguard::server::TrustedProxies;
///
/// let trusted: TrustedProxies = "127.0.0.1, 10.0.0.0/8, fd00::/8".parse()?;
/// assert!(trusted.contains("10.1.2.3".parse()?));
/// assert!(!trusted.contains("192.0.2.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

/// A trusted-proxy list entry that is neither an address nor a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an IP address or CIDR block: {0:?}")]
pub struct ProxyListError(String);

impl TrustedProxies {
    /// No trusted proxy (the default): the client is always the TCP peer.
    pub fn none() -> Self {
        TrustedProxies::default()
    }

    /// True when no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The entries, as CIDR blocks (an address given alone is its /32 or
    /// /128).
    pub fn entries(&self) -> impl Iterator<Item = String> + '_ {
        self.nets.iter().map(ToString::to_string)
    }
}

impl FromStr for TrustedProxies {
    type Err = ProxyListError;

    /// A comma-separated list of addresses and CIDR blocks
    /// (`127.0.0.1,10.0.0.0/8,fd00::/8`); blanks around entries and empty
    /// entries are ignored.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut nets = Vec::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match entry.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(canonical(ip)),
                    Err(_) => return Err(ProxyListError(entry.to_owned())),
                },
            };
            nets.push(net);
        }
        Ok(TrustedProxies { nets })
    }
}

/// The header a trusted proxy writes the client's address in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx's
    /// `$proxy_add_x_forwarded_for`, HAProxy's `option forwardfor`, most
    /// load balancers). The default.
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=client, for="[2001:db8::1]:4711"`: the
    /// `for=` parameter of each element.
    Forwarded,
}

impl ForwardedHeader {
    fn name(self) -> HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            ForwardedHeader::Forwarded => http::header::FORWARDED,
        }
    }
}

impl FromStr for ForwardedHeader {
    type Err = String;

    /// `x-forwarded-for` or `forwarded` (any case).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ForwardedHeader::XForwardedFor),
            "forwarded" => Ok(ForwardedHeader::Forwarded),
            other => Err(format!(
                "{other:?}: expected `x-forwarded-for` or `forwarded`"
            )),
        }
    }
}

/// How a server finds its clients' addresses.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientAddrs {
    pub trusted: TrustedProxies,
    pub header: ForwardedHeader,
}

impl ClientAddrs {
    /// Whether connections from `peer` are a trusted proxy's (decided once
    /// per connection, at accept).
    pub(crate) fn trusts(&self, peer: SocketAddr) -> bool {
        !self.trusted.is_empty() && self.trusted.contains(peer.ip())
    }

    /// The client of a request that a trusted proxy `peer` forwarded: the
    /// right-most address of the header that is not a trusted proxy; the
    /// left-most when all are trusted; `peer` itself when the header is
    /// missing or the entry to read is not an address (`unknown`, an
    /// obfuscated name), so that such requests share the proxy's budgets
    /// rather than escape them. The port is the one the header gives
    /// (`Forwarded: for="[::1]:4711"`), else 0.
    pub(crate) fn resolve(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        let mut client = peer;
        // Header values from the last to the first, and each list from its
        // right end: the order the proxies appended in, reversed.
        for value in headers.get_all(self.header.name()).iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for element in value.rsplit(',') {
                let node = match self.header {
                    ForwardedHeader::XForwardedFor => Some(element.trim()),
                    ForwardedHeader::Forwarded => forwarded_for(element),
                };
                let Some(addr) = node.and_then(parse_node) else {
                    return client;
                };
                client = addr;
                if !self.trusted.contains(addr.ip()) {
                    return client;
                }
            }
        }
        client
    }
}

/// The `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`),
/// unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("for")
            .then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<SocketAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(SocketAddr::new(canonical(ip), 0));
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(SocketAddr::new(canonical(addr.ip()), addr.port()));
    }
    let ip = node.strip_prefix('[')?.strip_suffix(']')?.parse().ok()?;
    Some(SocketAddr::new(canonical(ip), 0))
}

/// IPv4-mapped IPv6 addresses as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn addrs(trusted: &str, header: ForwardedHeader) -> ClientAddrs {
        ClientAddrs {
            trusted: trusted.parse().expect("list"),
            header,
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    fn peer(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().expect("ip"), 40000)
    }

    #[test]
    fn parses_lists() {
        let list: TrustedProxies = " 10.0.0.0/8 ,,127.0.0.1, ::1, 2001:db8::/32 "
            .parse()
            .unwrap();
        assert_eq!(
            list.entries().collect::<Vec<_>>(),
            ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "2001:db8::/32"]
        );
        assert!(list.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!list.contains("127.0.0.2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.example".parse::<TrustedProxies>().is_err());
        assert!("".parse::<TrustedProxies>().unwrap().is_empty());
        // Host bits are dropped: 10.1.2.3/8 is 10.0.0.0/8.
        let list: TrustedProxies = "10.1.2.3/8".parse().unwrap();
        assert!(list.contains("10.200.0.1".parse().unwrap()));
    }

    #[test]
    fn right_most_untrusted_x_forwarded_for() {
        let a = addrs("127.0.0.1,10.0.0.0/8", ForwardedHeader::XForwardedFor);
        let proxy = peer("127.0.0.1");
        assert!(a.trusts(proxy));
        let h = headers("x-forwarded-for", &["6.6.6.6, 203.0.113.7, 10.0.0.2"]);
        assert_eq!(
            a.resolve(proxy, &h).ip(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // Several header lines are one list, in order.
        let h = headers("x-forwarded-for", &["6.6.6.6", "203.0.113.7", "10.0.0.2"]);
        assert_eq!(
            a.resolve(proxy, &h).ip(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        // Every hop trusted: the left-most.
        let h = headers("x-forwarded-for", &["10.9.9.9, 10.0.0.2"]);
        assert_eq!(
            a.resolve(proxy, &h).ip(),
            "10.9.9.9".parse::<IpAddr>().unwrap()
        );
        // No header: the proxy itself.
        assert_eq!(a.resolve(proxy, &HeaderMap::new()), proxy);
        // Garbage where the client should be: the last trusted hop.
        let h = headers("x-forwarded-for", &["203.0.113.7, unknown, 10.0.0.2"]);
        assert_eq!(
            a.resolve(proxy, &h).ip(),
            "10.0.0.2".parse::<IpAddr>().unwrap()
        );
        let h = headers("x-forwarded-for", &["203.0.113.7, garbage"]);
        assert_eq!(a.resolve(proxy, &h), proxy);
        // A port and IPv6 forms.
        let h = headers("x-forwarded-for", &["[2001:db8::5]:443"]);
        assert_eq!(a.resolve(proxy, &h), "[2001:db8::5]:443".parse().unwrap());
        let h = headers("x-forwarded-for", &["2001:db8::5"]);
        assert_eq!(
            a.resolve(proxy, &h).ip(),
            "2001:db8::5".parse::<IpAddr>().unwrap()
        );
        // The other header is not read.
        let h = headers("forwarded", &["for=6.6.6.6"]);
        assert_eq!(a.resolve(proxy, &h), proxy);
    }

    #[test]
    fn untrusted_peers_are_not_asked() {
        let a = addrs("127.0.0.1", ForwardedHeader::XForwardedFor);
        assert!(!a.trusts(peer("127.0.0.2")));
        assert!(!ClientAddrs::default().trusts(peer("127.0.0.1")));
    }

    #[test]
    fn rfc_7239_for() {
        let a = addrs("127.0.0.1", ForwardedHeader::Forwarded);
        let proxy = peer("127.0.0.1");
        let h = headers(
            "forwarded",
            &["for=6.6.6.6;proto=http, For=\"[2001:db8:cafe::17]:4711\";by=127.0.0.1"],
        );
        assert_eq!(
            a.resolve(proxy, &h),
            "[2001:db8:cafe::17]:4711".parse().unwrap()
        );
        let h = headers("forwarded", &["for=192.0.2.60;proto=https;by=203.0.113.43"]);
        assert_eq!(
            a.resolve(proxy, &h).ip(),
            "192.0.2.60".parse::<IpAddr>().unwrap()
        );
        let h = headers("forwarded", &["for=_hidden"]);
        assert_eq!(a.resolve(proxy, &h), proxy);
        let h = headers("forwarded", &["proto=https"]);
        assert_eq!(a.resolve(proxy, &h), proxy);
        let h = headers("x-forwarded-for", &["6.6.6.6"]);
        assert_eq!(a.resolve(proxy, &h), proxy);
    }
}
