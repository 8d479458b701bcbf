//! The HA link of a high-availability router (`[router.ha]`): a VXLAN link
//! between the two router hosts, created from the host on the underlay and
//! living in the router namespace, so keepalived's VRRP adverts and
//! conntrackd's sync messages travel between the two router namespaces and
//! nowhere else (no VM segment carries them, no second public address is
//! needed). Its default remote is the peer's underlay address (unicast, no
//! multicast in the underlay). Each end has a link-local address,
//! 169.254.<vrid>.1 or .2: the host with the lower underlay address takes
//! .1, so the two profiles need not say which; keepalived needs an IPv4
//! address on its VRRP interface (without one both sit in FAULT), and
//! conntrackd sends from it.
//!
//! The link is an ordinary owned link of the link kinds (created, checked,
//! repaired and removed like a segment's VXLAN link); this module says what
//! it is and which addresses go on it.

use std::net::{IpAddr, Ipv4Addr};

use crate::desired::underlay_mtu;
use crate::facts::Facts;
use crate::model::{LinkKind, LinkSpec, Ns, VxlanSpec};
use crate::profile::names::stable_mac;
use crate::profile::{DEFAULT_VXLAN_PORT, Ha, Ipv4Cidr, Profile, cidr};

use super::vxlan::local_address;

pub fn desire(p: &Profile, f: &Facts, out: &mut Vec<(Ns, LinkSpec)>) {
    let (Some(r), Some(u)) = (&p.router, &p.underlay) else { return };
    let Some(ha) = &r.ha else { return };
    let spec = VxlanSpec {
        learning: true,
        vni: ha.vni,
        // A unicast address in the group attribute is the link's default
        // remote (`ip link … remote PEER`): every frame goes to the peer.
        group: Some(ha.peer),
        dev: u.device.clone(),
        local: local_address(p, f),
        port: DEFAULT_VXLAN_PORT,
        ageing: 300,
        ttl: 0,
        pin_local: u.local.is_some(),
    };
    out.push((
        Ns::Named(r.namespace.clone()),
        LinkSpec {
            name: ha.link.clone(),
            kind: LinkKind::Vxlan(spec),
            mtu: Some(underlay_mtu(f).saturating_sub(u.overhead()).max(68)),
            master: None,
            up: true,
            mac: Some(stable_mac(&p.host, &r.namespace, &ha.link)),
            // VRRPv3 for IPv4 and conntrackd need no IPv6 on the link.
            no_ipv6: true,
            port: None,
        },
    ));
}

/// This end's address on the HA link: .1 for the host with the lower
/// underlay address, .2 for the other (both of one family).
pub fn address(ha: &Ha, local: IpAddr) -> Ipv4Cidr {
    let last = if local < ha.peer { 1 } else { 2 };
    cidr::cidr(Ipv4Addr::new(169, 254, ha.vrid, last), 24)
}

/// The peer's address on the HA link.
pub fn peer_address(ha: &Ha, local: IpAddr) -> Ipv4Addr {
    let mine = address(ha, local).addr().octets()[3];
    Ipv4Addr::new(169, 254, ha.vrid, 3 - mine)
}

/// The virtual address keepalived keeps on the HA link of the active
/// router (the one address its adverts carry; the others are "excluded").
pub fn virtual_address(ha: &Ha) -> Ipv4Cidr {
    cidr::cidr(Ipv4Addr::new(169, 254, ha.vrid, 254), 24)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ha(peer: &str) -> Ha {
        let text = include_str!("../../profiles/ha/router-a.toml").replace("peer = \"10.0.0.2\"", &format!("peer = \"{peer}\""));
        crate::profile::Profile::parse("p.toml", &text).unwrap().router.unwrap().ha.unwrap()
    }

    #[test]
    fn the_two_ends_take_different_addresses_without_being_told() {
        let a = ha("10.0.0.2");
        let b = ha("10.0.0.1");
        assert_eq!(address(&a, "10.0.0.1".parse().unwrap()).to_string(), "169.254.51.1/24");
        assert_eq!(address(&b, "10.0.0.2".parse().unwrap()).to_string(), "169.254.51.2/24");
        assert_eq!(peer_address(&a, "10.0.0.1".parse().unwrap()), "169.254.51.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(peer_address(&b, "10.0.0.2".parse().unwrap()), "169.254.51.1".parse::<Ipv4Addr>().unwrap());
        assert_eq!(virtual_address(&a).to_string(), "169.254.51.254/24");
    }
}
