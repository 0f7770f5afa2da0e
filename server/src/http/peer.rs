//! Who is at the other end: the TCP peer, and which peers are our own reverse proxies.
//!
//! The rule: a header is the word of whoever sent it. Forwarding headers (`Forwarded`, `X-Forwarded-For`)
//! and the identity proxy header are believed only when the TCP peer is a configured trusted proxy; from
//! anyone else they are ignored. Nothing signed (enrollment profiles) ever takes a URL from a request.

use crate::config::TrustedProxies;
use actix_web::http::header::HeaderMap;
use std::net::IpAddr;

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
