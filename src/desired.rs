//! Profile + facts → every object that should exist, kind by kind. Pure: no
//! environment reads and no I/O (the facts carry what the host says).

use crate::facts::Facts;
use crate::kinds::{KINDS, Kind, Parts};
use crate::kinds::{link::Links, namespace::Namespace};
use crate::model::{LinkSpec, Ns};
use crate::profile::{Profile, VXLAN_OVERHEAD};

/// Kernel default bridge forward delay: 15 s, in centiseconds.
pub const DEFAULT_FORWARD_DELAY_CS: u32 = 1500;

#[derive(Debug, Clone)]
pub struct Desired {
    pub host: String,
    /// The owner mark on everything this host's profile creates.
    pub mark: String,
    /// What each kind wants (see `kinds::Kind::desire`).
    pub parts: Parts,
    /// Wanted links by (namespace, name), built on first use: planning
    /// looks a wanted link up for every observed one, and a scan each time
    /// made planning N = 1000 quadratic (~16 million name comparisons).
    link_index: std::sync::OnceLock<std::collections::HashMap<(Ns, String), usize>>,
}

impl Desired {
    pub fn derive(p: &Profile, f: &Facts) -> Desired {
        let mut parts = Parts::default();
        for k in KINDS {
            k.desire(p, f, &mut parts);
        }
        Desired { host: p.host.clone(), mark: p.owner_mark(), parts, link_index: Default::default() }
    }

    /// Nothing at all under this owner: what `destroy` converges to.
    pub fn nothing(host: &str, mark: &str) -> Desired {
        let mut parts = Parts::default();
        for k in KINDS {
            k.nothing(&mut parts);
        }
        Desired { host: host.to_string(), mark: mark.to_string(), parts, link_index: Default::default() }
    }

    /// The objects of kind `K` that are wanted.
    pub fn of<K: Kind>(&self) -> &[K::Item] {
        self.parts.get::<K, Vec<K::Item>>().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Wanted links in creation order: every master before its ports, every
    /// veth end before its peer.
    pub fn links(&self) -> &[(Ns, LinkSpec)] {
        self.of::<Links>()
    }

    pub fn link(&self, ns: &Ns, name: &str) -> Option<&LinkSpec> {
        let index = self
            .link_index
            .get_or_init(|| self.links().iter().enumerate().map(|(i, (n, l))| ((n.clone(), l.name.clone()), i)).collect());
        // (A clone lookup key: HashMap cannot borrow-look-up a tuple.)
        index.get(&(ns.clone(), name.to_string())).and_then(|i| self.links().get(*i)).map(|(_, l)| l)
    }

    /// The router's public address, if the profile has a router.
    pub fn public_address(&self) -> Option<std::net::IpAddr> {
        let legs = self.of::<crate::kinds::route::Routes>().first()?;
        self.of::<crate::kinds::address::Addresses>()
            .iter()
            .find(|a| a.ns == legs.ns && a.link == legs.dev)
            .map(|a| a.addr.addr())
    }

    /// The router namespace, if the profile has a router.
    pub fn router_ns(&self) -> Option<&str> {
        self.of::<Namespace>().first().map(String::as_str)
    }
}

/// The MTU of a segment: as written, or the underlay's minus VXLAN overhead.
pub fn segment_mtu(profile_mtu: Option<u32>, underlay_mtu: u32, overhead: u32) -> u32 {
    profile_mtu.unwrap_or_else(|| underlay_mtu.saturating_sub(overhead).max(68))
}

/// VXLAN's overhead on the profile's underlay (50 bytes over IPv4, 70 over
/// IPv6).
pub fn overhead(p: &Profile) -> u32 {
    p.underlay.as_ref().map(|u| u.overhead()).unwrap_or(VXLAN_OVERHEAD)
}

/// The underlay MTU the facts give (1500 when the device is missing:
/// preflight refuses that case before anything is applied).
pub fn underlay_mtu(f: &Facts) -> u32 {
    f.underlay.as_ref().map(|u| u.mtu).unwrap_or(1500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_mtu_defaults_to_underlay_minus_overhead() {
        assert_eq!(segment_mtu(None, 9000, 50), 8950);
        assert_eq!(segment_mtu(None, 1500, 70), 1430);
        assert_eq!(segment_mtu(Some(1400), 9000, 50), 1400);
    }
}
