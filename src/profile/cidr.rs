//! IPv4 address-with-prefix, as written in profiles ("192.168.10.3/24"):
//! `ipnet::Ipv4Net`, which keeps the address as written (a router leg's
//! `address` is the gateway's own address; its subnet is `trunc()`), with
//! the profile's own parse messages and the few questions ipnet does not
//! answer directly.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

pub use ipnet::Ipv4Net as Ipv4Cidr;

/// Parses "A.B.C.D/N", saying what is wrong in the profile's words.
pub fn parse(s: &str) -> Result<Ipv4Cidr, String> {
    let (addr, prefix) =
        s.split_once('/').ok_or_else(|| format!("{s:?} is not in CIDR form (expected e.g. \"192.168.10.3/24\")"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let prefix: u8 =
        prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("prefix length {prefix:?} is not a number 0-32"))?;
    Ipv4Cidr::new(addr, prefix).map_err(|e| e.to_string())
}

/// `addr/prefix` for a prefix known to be valid (0-32).
pub fn cidr(addr: Ipv4Addr, prefix: u8) -> Ipv4Cidr {
    Ipv4Cidr::new(addr, prefix.min(32)).unwrap_or_else(|_| host(addr))
}

/// A single address (/32).
pub fn host(addr: Ipv4Addr) -> Ipv4Cidr {
    Ipv4Cidr::from(addr)
}

/// 0.0.0.0/0, the default route's destination.
pub fn any() -> Ipv4Cidr {
    Ipv4Cidr::default()
}

/// Questions about subnets the profile rules ask.
pub trait CidrExt {
    /// The two subnets share at least one address.
    fn overlaps(&self, other: &Ipv4Cidr) -> bool;
    /// The address is usable by a host on its subnet: neither the network
    /// nor the broadcast address (both are usable on /31 and /32).
    fn is_host_address(&self) -> bool;
}

impl CidrExt for Ipv4Cidr {
    fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(&other.network()) || other.contains(&self.network())
    }

    fn is_host_address(&self) -> bool {
        self.prefix_len() >= 31 || (self.addr() != self.network() && self.addr() != self.broadcast())
    }
}

/// Subnets, each with a value, answering "which of them overlaps this one"
/// and "which contains this address" without comparing against every one
/// (pairwise checks made validation quadratic in the number of legs).
///
/// Two CIDR blocks overlap exactly when one contains the other, so the
/// blocks overlapping `net` are those containing it, found by looking up
/// each of its at most 33 supernets by exact network and prefix, and those
/// inside it, found by start address in an ordered map.
pub struct SubnetIndex<T> {
    /// Per (network, prefix): the first subnet added, in insertion order.
    exact: HashMap<(u32, u8), (usize, Ipv4Cidr, T)>,
    /// Per network start address: the first subnet added.
    starts: BTreeMap<u32, (usize, Ipv4Cidr, T)>,
    added: usize,
}

impl<T: Clone> Default for SubnetIndex<T> {
    fn default() -> Self {
        SubnetIndex { exact: HashMap::new(), starts: BTreeMap::new(), added: 0 }
    }
}

impl<T: Clone> SubnetIndex<T> {
    /// Adds a subnet (the address's host bits are ignored). When the same
    /// subnet is added again, the first one stays the answer.
    pub fn insert(&mut self, net: Ipv4Cidr, value: T) {
        let net = net.trunc();
        let entry = (self.added, net, value);
        self.added += 1;
        self.starts.entry(u32::from(net.network())).or_insert_with(|| entry.clone());
        self.exact.entry((u32::from(net.network()), net.prefix_len())).or_insert(entry);
    }

    /// A subnet added earlier that overlaps `net`: the first added among
    /// those containing it and the lowest one inside it.
    pub fn overlapping(&self, net: &Ipv4Cidr) -> Option<(Ipv4Cidr, &T)> {
        let net = net.trunc();
        let (start, end) = (u32::from(net.network()), u32::from(net.broadcast()));
        let inside = self.starts.range(start..=end).next().map(|(_, e)| e);
        self.supernets(net.network(), net.prefix_len()).chain(inside).min_by_key(|(order, _, _)| *order).map(|(_, n, v)| (*n, v))
    }

    /// The first subnet added that contains `addr`.
    pub fn containing(&self, addr: Ipv4Addr) -> Option<(Ipv4Cidr, &T)> {
        self.supernets(addr, 32).min_by_key(|(order, _, _)| *order).map(|(_, n, v)| (*n, v))
    }

    /// The added subnets that contain `addr/prefix` (itself included).
    fn supernets(&self, addr: Ipv4Addr, prefix: u8) -> impl Iterator<Item = &(usize, Ipv4Cidr, T)> {
        (0..=prefix.min(32)).filter_map(move |p| self.exact.get(&(u32::from(cidr(addr, p).network()), p)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        parse(s).unwrap()
    }

    #[test]
    fn parses_and_derives_network() {
        let a = c("192.168.10.3/24");
        assert_eq!(a.addr(), Ipv4Addr::new(192, 168, 10, 3));
        assert_eq!(a.trunc().to_string(), "192.168.10.0/24");
        assert_eq!(a.broadcast(), Ipv4Addr::new(192, 168, 10, 255));
        assert!(a.contains(&Ipv4Addr::new(192, 168, 10, 200)));
        assert!(!a.contains(&Ipv4Addr::new(192, 168, 11, 1)));
        assert_eq!(u32::from(c("10.0.0.1/0").netmask()), 0);
        assert_eq!(u32::from(c("10.0.0.1/32").netmask()), u32::MAX);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["192.168.10.3", "192.168.10.3/33", "192.168.10/24", "x/24", "1.2.3.4/-1", "1.2.3.4/"] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn overlap_and_host_address() {
        assert!(c("192.168.0.1/16").overlaps(&c("192.168.10.3/24")));
        assert!(c("192.168.10.3/24").overlaps(&c("192.168.0.1/16")));
        assert!(!c("192.168.10.3/24").overlaps(&c("192.168.11.3/24")));
        assert!(!c("192.168.10.0/24").is_host_address());
        assert!(!c("192.168.10.255/24").is_host_address());
        assert!(c("192.168.10.0/31").is_host_address());
    }

    #[test]
    fn subnet_index_agrees_with_pairwise_overlap() {
        let nets: Vec<Ipv4Cidr> =
            ["10.0.0.1/8", "10.1.2.3/24", "10.1.0.0/16", "192.168.1.1/24", "192.168.0.0/23", "172.16.0.1/32"]
                .iter()
                .map(|s| c(s))
                .collect();
        let probes =
            ["10.1.2.0/25", "10.2.0.0/16", "192.168.0.0/16", "172.16.0.0/24", "172.16.0.2/31", "8.8.8.8/32", "0.0.0.0/0"];
        let mut index = SubnetIndex::default();
        for (i, n) in nets.iter().enumerate() {
            index.insert(*n, i);
        }
        for probe in probes.iter().map(|s| c(s)) {
            let first = nets.iter().position(|n| n.overlaps(&probe));
            let got = index.overlapping(&probe).map(|(_, i)| *i);
            assert_eq!(got.is_some(), first.is_some(), "{probe}");
            if let Some(i) = got {
                assert!(nets[i].overlaps(&probe), "{probe} vs {}", nets[i]);
            }
            let addr = probe.addr();
            assert_eq!(index.containing(addr).map(|(_, i)| *i), nets.iter().position(|n| n.contains(&addr)), "{addr}");
        }
        // Containing subnets come first in declaration order.
        assert_eq!(index.overlapping(&c("10.1.2.0/26")).map(|(n, i)| (n.to_string(), *i)), Some(("10.0.0.0/8".into(), 0)));
    }
}
