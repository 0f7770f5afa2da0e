//! `http.trusted_proxies`, parsed once when the configuration is read: the addresses and CIDR blocks of
//! the reverse proxies whose forwarding and identity headers are believed (see `http::peer`).

use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;

/// Addresses and CIDR blocks, each as (network address, prefix length).
#[derive(Clone, Default, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

/// An entry of `http.trusted_proxies` that is neither an IP address nor a CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR block")]
pub struct ProxyEntryError(pub String);

impl TrustedProxies {
    /// Parse `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8`. An error names the entry.
    pub fn parse(list: &[String]) -> Result<Self, ProxyEntryError> {
        list.iter()
            .map(|entry| parse_entry(entry))
            .collect::<Result<_, _>>()
            .map(Self)
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

/// As it is written: an address, or a CIDR block when the prefix is shorter than the address.
impl serde::Serialize for TrustedProxies {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(ip, len)| {
            let full = if ip.is_ipv4() { 32 } else { 128 };
            if *len == full {
                ip.to_string()
            } else {
                format!("{ip}/{len}")
            }
        }))
    }
}

fn parse_entry(entry: &str) -> Result<(IpAddr, u8), ProxyEntryError> {
    let bad = || ProxyEntryError(entry.to_string());
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
    Ok((ip, len))
}

fn prefix_eq(a: u128, b: u128, bits: u8, len: u8) -> bool {
    if len == 0 {
        return true;
    }
    let shift = u32::from(bits - len);
    (a >> shift) == (b >> shift)
}

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = ProxyEntryError;

    fn try_from(list: Vec<String>) -> Result<Self, Self::Error> {
        Self::parse(&list)
    }
}

/// As written in the configuration: `["10.0.0.0/8", "192.0.2.7/32"]`.
impl fmt::Debug for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(ip, len)| format!("{ip}/{len}")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            format!("{t:?}"),
            r#"["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]"#
        );
        for bad in ["10.0.0.0/33", "example.com", "10.0.0.1/x", "::/129"] {
            let e = TrustedProxies::parse(&[bad.into()]).unwrap_err();
            assert_eq!(e, ProxyEntryError(bad.into()));
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!(TrustedProxies::parse(&["0.0.0.0/0".into()])
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
    }

    /// Read from the configuration's list of strings, refused there with the entry named.
    #[test]
    fn trusted_proxies_deserialize_from_their_list() {
        let t: TrustedProxies = serde_json::from_str(r#"["10.0.0.1"]"#).unwrap();
        assert!(t.contains("10.0.0.1".parse().unwrap()));
        let err = serde_json::from_str::<TrustedProxies>(r#"["proxy.internal"]"#).unwrap_err();
        assert!(
            err.to_string().contains("\"proxy.internal\" is not"),
            "{err}"
        );
    }
}
