//! Profile + facts about the host → every object that should exist. Pure.

use std::net::Ipv4Addr;

use serde::Serialize;

use crate::firewall::rules::{Policy, router_policy, underlay_policy};
use crate::model::{BridgeSpec, LinkKind, LinkSpec, Ns, VethPeer, VxlanSpec};
use crate::netlink::msg::RTPROT_VXROUTER;
use crate::profile::names::stable_mac;
use crate::profile::{FirewallChoice, Flood, Ipv4Cidr, Profile, VXLAN_OVERHEAD};

/// Kernel default bridge forward delay: 15 s, in centiseconds.
pub const DEFAULT_FORWARD_DELAY_CS: u32 = 1500;

/// What the host tells us that the profile leaves open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnderlayFacts {
    pub mtu: u32,
    /// First IPv4 address of the underlay device, if any.
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DesiredRoute {
    pub dst: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub dev: String,
    pub protocol: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desired {
    pub host: String,
    pub mark: String,
    pub router_ns: Option<String>,
    /// In creation order: every master before its ports, every `Veth` end
    /// before its `VethPeer`.
    pub links: Vec<(Ns, LinkSpec)>,
    pub addrs: Vec<(Ns, String, Ipv4Cidr)>,
    pub routes: Vec<(Ns, DesiredRoute)>,
    pub sysctls: Vec<(Ns, String, String)>,
    /// Owned rules per namespace, and which tool should write them.
    pub firewall: Vec<(Ns, Policy, FirewallChoice)>,
    /// (uplink NIC, public bridge).
    pub uplinks: Vec<(String, String)>,
    /// Head-end replication entries: (VXLAN link, peer underlay address).
    pub fdb: Vec<(String, Ipv4Addr)>,
    /// dnsmasq instances for router legs with DHCP or DNS.
    pub dhcp: Vec<crate::dhcp::Server>,
}

impl Desired {
    /// Nothing at all under this owner: what `destroy` converges to.
    pub fn nothing(host: &str, mark: &str) -> Desired {
        Desired {
            host: host.to_string(),
            mark: mark.to_string(),
            router_ns: None,
            links: vec![],
            addrs: vec![],
            routes: vec![],
            sysctls: vec![],
            firewall: vec![],
            uplinks: vec![],
            fdb: vec![],
            dhcp: vec![],
        }
    }

    pub fn link(&self, ns: &Ns, name: &str) -> Option<&LinkSpec> {
        self.links.iter().find(|(n, l)| n == ns && l.name == name).map(|(_, l)| l)
    }
}

/// The MTU of a segment: as written, or the underlay's minus VXLAN overhead.
pub fn segment_mtu(profile_mtu: Option<u32>, underlay_mtu: u32) -> u32 {
    profile_mtu.unwrap_or_else(|| underlay_mtu.saturating_sub(VXLAN_OVERHEAD).max(68))
}

pub fn derive(p: &Profile, underlay: Option<&UnderlayFacts>) -> Desired {
    let host = p.host.clone();
    let mac = |ns: &Ns, link: &str| {
        let ns = match ns {
            Ns::Host => "",
            Ns::Named(n) => n.as_str(),
        };
        Some(stable_mac(&host, ns, link))
    };
    let mut links = Vec::new();
    let mut addrs = Vec::new();
    let mut routes = Vec::new();
    let mut sysctls = Vec::new();
    let mut firewall = Vec::new();
    let mut uplinks = Vec::new();
    let mut dhcp = Vec::new();

    let underlay_mtu = underlay.map(|u| u.mtu).unwrap_or(1500);
    let local =
        p.underlay.as_ref().and_then(|u| u.local).or_else(|| underlay.and_then(|u| u.address)).unwrap_or(Ipv4Addr::UNSPECIFIED);
    let dev = p.underlay.as_ref().map(|u| u.device.clone()).unwrap_or_default();

    // Bridges first: everything else may be a port of one.
    for s in &p.segments {
        let mtu = segment_mtu(s.mtu, underlay_mtu);
        links.push((
            Ns::Host,
            LinkSpec {
                name: s.bridge.clone(),
                kind: LinkKind::Bridge(BridgeSpec {
                    stp: s.stp,
                    forward_delay: s.forward_delay.map(|d| d * 100).unwrap_or(DEFAULT_FORWARD_DELAY_CS),
                }),
                mtu: Some(mtu),
                master: None,
                up: true,
                mac: mac(&Ns::Host, &s.bridge),
                no_ipv6: true,
            },
        ));
    }
    if let Some(r) = &p.router {
        links.push((
            Ns::Host,
            LinkSpec {
                name: r.public.leg.bridge.clone(),
                kind: LinkKind::Bridge(BridgeSpec { stp: false, forward_delay: DEFAULT_FORWARD_DELAY_CS }),
                mtu: None,
                master: None,
                up: true,
                mac: mac(&Ns::Host, &r.public.leg.bridge),
                no_ipv6: true,
            },
        ));
    }
    let mut fdb = Vec::new();
    for s in &p.segments {
        let group = match &s.flood {
            Flood::Multicast(g) => Some(*g),
            Flood::Unicast(peers) => {
                // The host's own address may be listed (one list for all
                // hosts); a tunnel to itself is skipped.
                fdb.extend(peers.iter().filter(|a| **a != local).map(|a| (s.vxlan.clone(), *a)));
                None
            }
        };
        links.push((
            Ns::Host,
            LinkSpec {
                name: s.vxlan.clone(),
                kind: LinkKind::Vxlan(VxlanSpec {
                    vni: s.vni,
                    group,
                    dev: dev.clone(),
                    local,
                    port: s.port,
                    ageing: s.ageing,
                    ttl: s.ttl.unwrap_or(0),
                }),
                mtu: Some(segment_mtu(s.mtu, underlay_mtu)),
                master: Some(s.bridge.clone()),
                up: true,
                mac: mac(&Ns::Host, &s.vxlan),
                no_ipv6: false,
            },
        ));
    }

    let router_ns = p.router.as_ref().map(|r| r.namespace.clone());
    if let Some(r) = &p.router {
        let rns = Ns::Named(r.namespace.clone());
        links.push((
            rns.clone(),
            LinkSpec {
                name: "lo".into(),
                kind: LinkKind::Loopback,
                mtu: None,
                master: None,
                up: true,
                mac: None,
                no_ipv6: false,
            },
        ));
        let mut leg = |bridge: &str, veth: &[String; 2], mtu: Option<u32>, address: Ipv4Cidr| {
            links.push((
                Ns::Host,
                LinkSpec {
                    name: veth[0].clone(),
                    kind: LinkKind::Veth(VethPeer { peer: veth[1].clone(), peer_ns: rns.clone() }),
                    mtu,
                    master: Some(bridge.to_string()),
                    up: true,
                    mac: mac(&Ns::Host, &veth[0]),
                    no_ipv6: false,
                },
            ));
            links.push((
                rns.clone(),
                LinkSpec {
                    name: veth[1].clone(),
                    kind: LinkKind::VethPeer { peer: veth[0].clone() },
                    mtu,
                    master: None,
                    up: true,
                    mac: mac(&rns, &veth[1]),
                    no_ipv6: false,
                },
            ));
            addrs.push((rns.clone(), veth[1].clone(), address));
        };
        leg(&r.public.leg.bridge, &r.public.leg.veth, None, r.public.leg.address);
        for l in &r.private {
            let seg_mtu = p.segments.iter().find(|s| s.bridge == l.bridge).map(|s| segment_mtu(s.mtu, underlay_mtu));
            leg(&l.bridge, &l.veth, seg_mtu, l.address);
        }
        routes.push((
            rns.clone(),
            DesiredRoute {
                dst: Ipv4Cidr { addr: Ipv4Addr::UNSPECIFIED, prefix: 0 },
                gateway: r.public.gateway,
                dev: r.public.leg.veth[1].clone(),
                protocol: RTPROT_VXROUTER,
            },
        ));
        sysctls.push((rns.clone(), "net/ipv4/ip_forward".to_string(), "1".to_string()));
        firewall.push((rns.clone(), router_policy(r), r.firewall));
        for l in r.private.iter().filter(|l| l.dhcp.is_some() || l.dns) {
            let mtu = p.segments.iter().find(|s| s.bridge == l.bridge).map(|s| segment_mtu(s.mtu, underlay_mtu)).unwrap_or(1500);
            dhcp.push(crate::dhcp::Server {
                ns: r.namespace.clone(),
                leg: l.veth[1].clone(),
                config: crate::dhcp::config(&host, &r.namespace, l, mtu),
            });
        }
        uplinks.push((r.public.uplink.clone(), r.public.leg.bridge.clone()));
    }

    if let Some(allow) = p.underlay.as_ref().and_then(|u| u.allow.as_ref()) {
        let mut ports: Vec<u16> = p.segments.iter().map(|s| s.port).collect();
        ports.sort();
        ports.dedup();
        let choice = p.router.as_ref().map(|r| r.firewall).unwrap_or(FirewallChoice::Auto);
        firewall.push((Ns::Host, underlay_policy(&dev, &ports, allow), choice));
    }

    Desired { mark: p.owner_mark(), host, router_ns, links, addrs, routes, sysctls, firewall, uplinks, fdb, dhcp }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const SEED_A: &str = include_str!("../profiles/host-a.toml");

    #[test]
    fn seed_router_derives_the_seed_topology_with_safe_defaults() {
        let p = Profile::parse("host-a.toml", SEED_A).unwrap();
        let d = derive(&p, Some(&UnderlayFacts { mtu: 1500, address: Some(Ipv4Addr::new(10, 0, 0, 1)) }));
        let names: Vec<String> = d.links.iter().map(|(ns, l)| format!("{ns}/{}", l.name)).collect();
        assert_eq!(
            names,
            [
                "host/br-pr",
                "host/br-pu",
                "host/vxlan1070",
                "ns1/lo",
                "host/veth15.0",
                "ns1/veth15.1",
                "host/veth17.0",
                "ns1/veth17.1"
            ]
        );
        let vx = d.link(&Ns::Host, "vxlan1070").unwrap();
        assert_eq!(vx.mtu, Some(1450));
        assert_eq!(vx.master.as_deref(), Some("br-pr"));
        let LinkKind::Vxlan(v) = &vx.kind else { panic!() };
        assert_eq!((v.vni, v.port, v.dev.as_str(), v.local), (1070, 4789, "eth0", Ipv4Addr::new(10, 0, 0, 1)));
        // The seed's mistake: the private leg goes into the private bridge.
        assert_eq!(d.link(&Ns::Host, "veth17.0").unwrap().master.as_deref(), Some("br-pr"));
        assert_eq!(d.link(&Ns::Host, "veth15.0").unwrap().master.as_deref(), Some("br-pu"));
        assert_eq!(d.link(&Ns::Named("ns1".into()), "veth17.1").unwrap().mtu, Some(1450));
        assert_eq!(d.uplinks, vec![("eth1".to_string(), "br-pu".to_string())]);
        // NAT names the namespace end of the public leg, which exists.
        let nat = crate::firewall::iptables::ruleset(&d.firewall[0].1);
        let post = &nat.chains.iter().find(|c| c.table == "nat").unwrap().rules;
        assert_eq!(post, &vec!["-s 192.168.10.0/24 -o veth15.1 -j SNAT --to-source 203.0.113.123".to_string()]);
    }

    #[test]
    fn segment_mtu_defaults_to_underlay_minus_overhead() {
        assert_eq!(segment_mtu(None, 9000), 8950);
        assert_eq!(segment_mtu(Some(1400), 9000), 1400);
    }
}
