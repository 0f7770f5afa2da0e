//! Who is at the other end: the TCP peer, and which peers are our own reverse proxies.
//!
//! The rule: a header is the word of whoever sent it. Forwarding headers (`Forwarded`, `X-Forwarded-For`)
//! and the identity proxy header are believed only when the TCP peer is a configured trusted proxy; from
//! anyone else they are ignored. Nothing signed (enrollment profiles) ever takes a URL from a request.

use actix_web::http::header::HeaderMap;
use std::net::IpAddr;

/// `http.trusted_proxies`: addresses and CIDR blocks.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parse `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8`. An error names the entry.
    pub fn parse(list: &[String]) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(list.len());
        for entry in list {
            let bad = || format!("{entry:?} is not an IP address or CIDR block");
            let (addr, len) = match entry.trim().split_once('/') {
                Some((a, l)) => (a, Some(l)),
                None => (entry.trim(), None),
            };
            let ip: IpAddr = addr.parse().map_err(|_| bad())?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len = match len {
                Some(l) => l.parse::<u8>().ok().filter(|l| *l <= max).ok_or_else(bad)?,
                None => max,
            };
            nets.push((ip, len));
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is one of the trusted proxies (an IPv4-mapped IPv6 peer counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|(net, len)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(n.to_bits().into(), a.to_bits().into(), 32, *len)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(n.to_bits(), a.to_bits(), 128, *len),
            _ => false,
        })
    }

    /// Whether the TCP peer may speak for others (unknown peer: no).
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        peer.is_some_and(|p| self.contains(p))
    }
}

fn prefix_eq(a: u128, b: u128, bits: u8, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = u32::from(bits - len);
    (a >> shift) == (b >> shift)
}

/// The client's address. The TCP peer, unless it is a trusted proxy: then the address that proxy says it
/// got the request from, read right to left through the chain of forwarding headers and stopping at the
/// first address that is not itself a trusted proxy (entries further left were written by the client and
/// prove nothing). `Forwarded` (RFC 7239) wins over `X-Forwarded-For` when both are present.
pub fn client_ip(
    peer: Option<IpAddr>,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> Option<IpAddr> {
    let peer = peer.map(|p| p.to_canonical());
    if !trusted.trusts(peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = if headers.contains_key("forwarded") {
        headers
            .get_all("forwarded")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_node(v))?
                })
            })
            .collect()
    } else {
        headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(parse_node)
            .collect()
    };
    let mut client = peer;
    for ip in chain.into_iter().rev() {
        client = Some(ip);
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// One node of a forwarding header: `192.0.2.1`, `"[2001:db8::1]:443"`, `192.0.2.1:8080`.
fn parse_node(v: &str) -> Option<IpAddr> {
    let v = v.trim().trim_matches('"');
    if let Some(rest) = v.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    if let Ok(ip) = v.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    let (host, _port) = v.rsplit_once(':')?;
    host.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_blocks_and_name_a_bad_entry() {
        let t =
            TrustedProxies::parse(&["10.0.0.0/8".into(), "192.0.2.7".into(), "fd00::/8".into()])
                .unwrap();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(t.contains("192.0.2.7".parse().unwrap()));
        assert!(!t.contains("192.0.2.8".parse().unwrap()));
        assert!(t.contains("fd12::1".parse().unwrap()));
        assert!(!t.contains("fe80::1".parse().unwrap()));
        assert!(!t.trusts(None));
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/x", "::/129"] {
            let e = TrustedProxies::parse(&[bad.into()]).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert!(TrustedProxies::parse(&["0.0.0.0/0".into()])
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    /// Forwarding headers from a peer that is not a trusted proxy (or with none configured) are ignored.
    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        let none = TrustedProxies::default();
        let proxy = TrustedProxies::parse(&["10.0.0.1".into()]).unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        let fwd = headers(&[("forwarded", "for=203.0.113.9;host=evil.example;proto=https")]);
        for h in [&xff, &fwd] {
            assert_eq!(client_ip(ip("198.51.100.1"), h, &none), ip("198.51.100.1"));
            assert_eq!(client_ip(ip("198.51.100.1"), h, &proxy), ip("198.51.100.1"));
            assert_eq!(client_ip(ip("10.0.0.1"), h, &none), ip("10.0.0.1"));
            assert_eq!(client_ip(ip("10.0.0.1"), h, &proxy), ip("203.0.113.9"));
        }
        // A client-written entry to the left of what the proxy appended proves nothing.
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &spoofed, &proxy),
            ip("203.0.113.9")
        );
        // Through two trusted proxies, the first untrusted address from the right.
        let two = TrustedProxies::parse(&["10.0.0.0/24".into()]).unwrap();
        let chain = headers(&[("x-forwarded-for", "1.2.3.4, 203.0.113.9, 10.0.0.2")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &chain, &two), ip("203.0.113.9"));
        // RFC 7239 quoting and ports; Forwarded wins over X-Forwarded-For.
        let v6 = headers(&[
            ("forwarded", "for=\"[2001:db8::1]:4711\""),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        assert_eq!(client_ip(ip("10.0.0.1"), &v6, &proxy), ip("2001:db8::1"));
        // A trusted proxy that forwarded nothing is the client.
        assert_eq!(
            client_ip(ip("10.0.0.1"), &HeaderMap::new(), &proxy),
            ip("10.0.0.1")
        );
        assert_eq!(client_ip(None, &xff, &proxy), None);
    }
}
