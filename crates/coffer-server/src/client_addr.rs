//! Where a request comes from: the TCP peer, or, when the peer is a proxy the operator named
//! as trusted, the client address that proxy reports in a header (`X-Forwarded-For` by
//! default).
//!
//! The address keys the failed-authentication limit and is recorded in the audit log, so a
//! header is believed only from a trusted peer: anyone else could write any address into it
//! and both dodge the limit and lock out someone else. Behind a chain of proxies each appends
//! the address it was connected from, so the header is read from the right: trusted hops are
//! skipped, and the first address that is not a trusted proxy is the client.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use axum::http::{HeaderMap, HeaderName};

/// An address range in CIDR form (`10.0.0.0/8`, `2001:db8::/32`); a bare address is a /32 or
/// a /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR range"))?;
        let addr = canonical(addr);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack listener's view of an IPv4 peer) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose client-address header is believed. None by default: the TCP peer is the
/// client.
#[derive(Debug, Clone)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
    header: HeaderName,
}

impl Default for TrustedProxies {
    fn default() -> TrustedProxies {
        TrustedProxies::new(Vec::new(), TrustedProxies::DEFAULT_HEADER)
    }
}

impl TrustedProxies {
    pub const DEFAULT_HEADER: HeaderName = HeaderName::from_static("x-forwarded-for");

    pub fn new(nets: Vec<IpNet>, header: HeaderName) -> TrustedProxies {
        TrustedProxies { nets, header }
    }

    /// As [`TrustedProxies::new`], with the header named in text (a flag's value).
    pub fn with_header(nets: Vec<IpNet>, header: &str) -> Result<TrustedProxies, String> {
        let header = HeaderName::try_from(header)
            .map_err(|_| format!("{header:?} is not a valid HTTP header name"))?;
        Ok(TrustedProxies::new(nets, header))
    }

    /// Whether no proxy is trusted (the default).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(ip))
    }

    /// True if a request that arrived from `peer`, a trusted proxy, says the browser used
    /// HTTPS: `X-Forwarded-Proto: https` (its last value: the one the nearest proxy set), or,
    /// without that header, RFC 7239's `Forwarded` whose last element says `proto=https`.
    pub fn forwarded_https(&self, peer: IpAddr, headers: &HeaderMap) -> bool {
        if !self.trusts(canonical(peer)) {
            return false;
        }
        let last = |name: &str| {
            headers
                .get_all(name)
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .next_back()
        };
        if let Some(proto) = last("x-forwarded-proto") {
            return proto.trim_ascii().eq_ignore_ascii_case(b"https");
        }
        last("forwarded").is_some_and(|element| {
            element.split(|b| *b == b';').any(|pair| {
                let pair = pair.trim_ascii();
                let Some(value) = pair
                    .get(..6)
                    .filter(|name| name.eq_ignore_ascii_case(b"proto="))
                    .map(|_| pair[6..].trim_ascii())
                else {
                    return false;
                };
                let value = value
                    .strip_prefix(b"\"")
                    .and_then(|v| v.strip_suffix(b"\""))
                    .unwrap_or(value);
                value.eq_ignore_ascii_case(b"https")
            })
        })
    }

    /// The client of a request that arrived from `peer`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Every line of the header, in order, as one list; read from the right. Split as bytes:
        // a client's own non-ASCII garbage at the left of a line must not hide the hops its
        // proxies appended to the same line.
        let hops = headers
            .get_all(&self.header)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','));
        let mut client = peer;
        for hop in hops.rev() {
            match std::str::from_utf8(hop).ok().and_then(parse_hop) {
                Some(ip) => {
                    client = ip;
                    if !self.trusts(ip) {
                        break;
                    }
                }
                // What a trusted proxy reports is unreadable: stop at the last hop known.
                None => break,
            }
        }
        client
    }
}

/// One element of a forwarding header: an address, with or without a port (`192.0.2.1:4711`,
/// `[2001:db8::1]:4711`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim().trim_matches('"');
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip.parse().ok().map(canonical);
    }
    let (ip, port) = hop.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {

    use super::*;
    use axum::http::HeaderValue;

    fn proxies(nets: &[&str]) -> TrustedProxies {
        TrustedProxies::new(
            nets.iter().map(|n| n.parse().unwrap()).collect(),
            TrustedProxies::DEFAULT_HEADER,
        )
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append("x-forwarded-for", HeaderValue::from_str(l).unwrap());
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn https_is_believed_from_a_trusted_proxy_by_either_header() {
        let proxies = proxies(&["10.0.0.1"]);
        let trusted: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, v.parse().unwrap());
            }
            h
        };
        for (pairs, https) in [
            (vec![("x-forwarded-proto", "https")], true),
            (vec![("x-forwarded-proto", "https, http")], false),
            (vec![("forwarded", "for=1.2.3.4;proto=https")], true),
            (vec![("forwarded", "for=1.2.3.4; Proto=\"HTTPS\"")], true),
            (
                vec![("forwarded", "proto=https, for=5.6.7.8;proto=http")],
                false,
            ),
            (vec![("forwarded", "for=1.2.3.4;by=proto=https")], false),
            // X-Forwarded-Proto, when sent, decides.
            (
                vec![("x-forwarded-proto", "http"), ("forwarded", "proto=https")],
                false,
            ),
            (vec![], false),
        ] {
            let h = with(&pairs);
            assert_eq!(proxies.forwarded_https(trusted, &h), https, "{pairs:?}");
            assert!(
                !proxies.forwarded_https(other, &h),
                "untrusted peer: {pairs:?}"
            );
        }
    }

    #[test]
    fn ranges_parse_and_match() {
        let net: IpNet = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains(ip("10.1.200.3")));
        assert!(!net.contains(ip("10.2.0.1")));
        assert!(net.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        let net: IpNet = "2001:db8::/32".parse().unwrap();
        assert!(net.contains(ip("2001:db8:ffff::1")));
        assert!(!net.contains(ip("2001:db9::1")));
        let one: IpNet = "192.0.2.7".parse().unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let all: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.1")) && !all.contains(ip("::1")));
        assert_eq!(one.to_string(), "192.0.2.7/32");
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "proxy",
            "10.0.0.0/x",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_header_is_believed_only_from_a_trusted_peer() {
        let p = proxies(&["10.0.0.0/8"]);
        let h = headers(&["198.51.100.9"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.9"));
        // Anyone else writing the header is ignored: their own address counts.
        assert_eq!(p.client(ip("203.0.113.5"), &h), ip("203.0.113.5"));
        // Nobody is trusted by default.
        let none = TrustedProxies::default();
        assert_eq!(none.client(ip("10.0.0.2"), &h), ip("10.0.0.2"));
        // A trusted peer without the header is itself the client.
        assert_eq!(p.client(ip("10.0.0.2"), &HeaderMap::new()), ip("10.0.0.2"));
    }

    #[test]
    fn the_client_is_the_first_untrusted_hop_from_the_right() {
        let p = proxies(&["10.0.0.0/8", "2001:db8::/32"]);
        // What the client wrote itself (the leftmost "1.2.3.4") is not believed.
        let h = headers(&["1.2.3.4, 198.51.100.9, 10.0.0.7"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.9"));
        // Several header lines are one list.
        let h = headers(&["1.2.3.4", "198.51.100.9", "10.0.0.7"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.9"));
        // Ports and brackets.
        let h = headers(&["198.51.100.9:4711, [2001:db8::3]:443"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.9"));
        // Every hop trusted: the leftmost is the client.
        let h = headers(&["10.9.9.9, 10.0.0.7"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.9.9.9"));
        // Garbage where a trusted proxy's report should be: the last hop known.
        let h = headers(&["198.51.100.9, garbage, 10.0.0.7"]);
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("10.0.0.7"));
        // A client's non-ASCII bytes on the line its proxy appended to do not hide the client.
        let mut h = HeaderMap::new();
        h.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"\x80\xff, 198.51.100.9").unwrap(),
        );
        assert_eq!(p.client(ip("10.0.0.2"), &h), ip("198.51.100.9"));
    }
}
