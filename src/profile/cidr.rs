//! IPv4 address-with-prefix, as written in profiles ("192.168.10.3/24"):
//! `ipnet::Ipv4Net`, which keeps the address as written (a router leg's
//! `address` is the gateway's own address; its subnet is `trunc()`), with
//! the profile's own parse messages and the few questions ipnet does not
//! answer directly.

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
}
