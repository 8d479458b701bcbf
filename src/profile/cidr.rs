//! IPv4 address-with-prefix, as written in profiles ("192.168.10.3/24").
//!
//! Unlike a network type, the address part is kept as written: a router leg's
//! `address` is the gateway's own address, and its subnet is derived from it.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Cidr {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Self> {
        (prefix <= 32).then_some(Self { addr, prefix })
    }

    pub fn mask(&self) -> u32 {
        if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) }
    }

    /// The network this address belongs to ("192.168.10.0/24").
    pub fn network(&self) -> Ipv4Cidr {
        Ipv4Cidr { addr: Ipv4Addr::from(u32::from(self.addr) & self.mask()), prefix: self.prefix }
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !self.mask())
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let shorter = self.prefix.min(other.prefix);
        let mask = Ipv4Cidr { addr: self.addr, prefix: shorter }.mask();
        u32::from(self.addr) & mask == u32::from(other.addr) & mask
    }

    /// True when the address is usable by a host on its subnet: neither the
    /// network nor the broadcast address (both are usable on /31 and /32).
    pub fn is_host_address(&self) -> bool {
        self.prefix >= 31 || (self.addr != self.network().addr && self.addr != self.broadcast())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) =
            s.split_once('/').ok_or_else(|| format!("{s:?} is not in CIDR form (expected e.g. \"192.168.10.3/24\")"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("prefix length {prefix:?} is not a number 0-32"))?;
        Ok(Ipv4Cidr { addr, prefix })
    }
}

impl<'de> serde::Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_derives_network() {
        let a = c("192.168.10.3/24");
        assert_eq!(a.network().to_string(), "192.168.10.0/24");
        assert_eq!(a.broadcast(), Ipv4Addr::new(192, 168, 10, 255));
        assert!(a.contains(Ipv4Addr::new(192, 168, 10, 200)));
        assert!(!a.contains(Ipv4Addr::new(192, 168, 11, 1)));
        assert_eq!(c("10.0.0.1/0").mask(), 0);
        assert_eq!(c("10.0.0.1/32").mask(), u32::MAX);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["192.168.10.3", "192.168.10.3/33", "192.168.10/24", "x/24", "1.2.3.4/-1", "1.2.3.4/"] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad} should not parse");
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
