//! Checks that need the host but change nothing: the underlay device and
//! uplink exist, the underlay has an address to send from, the kernel will
//! let us join every multicast group, and warnings an operator should see.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::desired::segment_mtu;
use crate::facts::{BRIDGE_NF_SYSCTL, Facts, IGMP_MAX_SYSCTL, IP_FORWARD_SYSCTL, OPTMEM_MAX_SYSCTL};
use crate::firewall::FirewallState;
use crate::observe::NsView;
use crate::profile::{Flood, Profile};

/// br_netfilter is loaded and passes bridged IPv4 through iptables.
pub fn bridge_nf_on(f: &Facts) -> bool {
    f.sysctls.get(BRIDGE_NF_SYSCTL).map(String::as_str) == Some("1")
}

/// Warnings that need the host's firewall (read only when relevant).
pub fn host_firewall_warnings(f: &Facts, host_fw: &FirewallState) -> Vec<String> {
    let mut out = Vec::new();
    if bridge_nf_on(f) && host_fw.ipt.as_ref().is_some_and(|i| i.policies.get("FORWARD").map(String::as_str) == Some("DROP")) {
        out.push(
            "br_netfilter is loaded with net.bridge.bridge-nf-call-iptables=1 and the host's FORWARD policy is DROP \
             (as Docker leaves it): frames bridged between VMs and VXLAN go through iptables FORWARD and are silently dropped. \
             Fix one of: sysctl -w net.bridge.bridge-nf-call-iptables=0; or iptables -I FORWARD -m physdev --physdev-is-bridged -j ACCEPT"
                .into(),
        );
    }
    out
}

#[derive(Debug, Default)]
pub struct Preflight {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

pub fn check(p: &Profile, f: &Facts, host: &NsView) -> Preflight {
    let mut out = Preflight::default();
    if p.evpn.is_some() {
        out.errors.extend(f.frr_problems.iter().map(|e| format!("{}: {e}", p.key_location("evpn", "asn"))));
    }
    if let Some(u) = &p.underlay {
        match host.link(&u.device) {
            None => out.errors.push(format!(
                "{}: underlay device {} does not exist on this host",
                p.key_location("underlay", "device"),
                u.device
            )),
            Some(dev) => {
                let address = host.addrs_of(dev.index).find(|a| a.cidr.addr().is_ipv4());
                if u.local.is_none() && address.is_none() && !p.segments.is_empty() {
                    out.errors.push(format!(
                        "{}: underlay device {} has no IPv4 address to send VXLAN from; give it one or set underlay.local",
                        p.source, u.device
                    ));
                }
                if let Some(local) = u.local
                    && !host.addrs.iter().any(|a| a.cidr.addr() == local)
                {
                    out.warnings.push(format!(
                        "{}: underlay.local {local} is not an address of this host; VXLAN packets will carry it as source anyway",
                        p.key_location("underlay", "local")
                    ));
                }
                let overhead = u.overhead();
                for s in &p.segments {
                    let mtu = segment_mtu(s.mtu, dev.mtu, overhead);
                    if mtu + overhead > dev.mtu {
                        out.errors.push(format!(
                            "{}: segment {} has mtu {mtu}, but VXLAN over {} (MTU {}) carries at most {} (the {overhead}-byte VXLAN \
                             header{} must fit); lower the segment mtu or raise the underlay MTU",
                            p.source,
                            s.bridge,
                            u.device,
                            dev.mtu,
                            dev.mtu.saturating_sub(overhead),
                            if u.ipv6() { " over IPv6" } else { "" },
                        ));
                    }
                }
            }
        }
    }
    if let Some(ha) = p.router.as_ref().and_then(|r| r.ha.as_ref())
        && host.addrs.iter().any(|a| a.cidr.addr() == ha.peer)
    {
        out.errors.push(format!(
            "{}: router.ha.peer {} is an address of this host; name the other router host's underlay address",
            p.key_location("router.ha", "peer"),
            ha.peer
        ));
    }
    if let Some(r) = &p.router
        && host.link(&r.public.uplink).is_none()
    {
        out.errors.push(format!(
            "{}: uplink {} does not exist on this host",
            p.key_location("router.public", "uplink"),
            r.public.uplink
        ));
    }

    multicast_limits(p, f, host, &mut out);
    for tool in &f.missing_tools {
        let package = match tool.as_str() {
            "dnsmasq" => "dnsmasq-base (DHCP/DNS on a private leg)",
            "nft" => "nftables",
            _ => "iptables",
        };
        out.errors.push(format!("{}: {tool} is not installed (no {tool} on PATH); install {package}", p.source));
    }
    if f.sysctls.get(IP_FORWARD_SYSCTL).map(String::as_str) == Some("1") {
        out.warnings.push(
            "IP forwarding is enabled on the host itself (net.ipv4.ip_forward=1): vxrouter routes only inside its router \
             namespace and does not need it; make sure the host's own firewall does not route traffic it should not"
                .into(),
        );
    }
    out
}

/// sizeof(struct ipv6_mc_socklist) on a 64-bit kernel: what one IPv6 group
/// membership charges against the socket's option memory. Measured on 6.18:
/// 365 groups joined at optmem_max 20480, 73 at 4096.
const MLD_MEMBERSHIP_BYTES: usize = 56;

/// Each VXLAN UDP port has one socket per namespace and family, which joins
/// the groups of the up links on that port. Over IPv4 a join past
/// `net.ipv4.igmp_max_memberships` fails with ENOBUFS; over IPv6 there is no
/// such count, but each membership is charged to the socket's option memory
/// and a join fails with ENOMEM once `net.core.optmem_max` is used up. Groups
/// already joined (by up links, ours included) need nothing new: a lowered
/// limit then only threatens the next re-join, which is a warning.
fn multicast_limits(p: &Profile, f: &Facts, host: &NsView, out: &mut Preflight) {
    let v6 = p.underlay.as_ref().is_some_and(|u| u.ipv6());
    let (limit, sysctl, raise): (usize, &str, Box<dyn Fn(usize) -> usize>) = if v6 {
        let optmem: usize = f.sysctls.get(OPTMEM_MAX_SYSCTL).and_then(|v| v.parse().ok()).unwrap_or(20480);
        (optmem.saturating_sub(1) / MLD_MEMBERSHIP_BYTES, "net.core.optmem_max", Box::new(|n| (n + 1) * MLD_MEMBERSHIP_BYTES + 1))
    } else {
        let max: usize = f.sysctls.get(IGMP_MAX_SYSCTL).and_then(|v| v.parse().ok()).unwrap_or(20);
        (max, "net.ipv4.igmp_max_memberships", Box::new(|n| n))
    };
    let ports: BTreeSet<u16> = p.segments.iter().map(|s| s.port).collect();
    for port in ports {
        let joined: BTreeSet<IpAddr> = host
            .links
            .iter()
            .filter(|l| l.up)
            .filter_map(|l| l.vxlan.as_ref())
            .filter(|v| v.port == port)
            .filter_map(|v| v.group.filter(|g| g.is_multicast() && g.is_ipv6() == v6))
            .collect();
        let wanted: BTreeSet<IpAddr> = p
            .segments
            .iter()
            .filter(|s| s.port == port)
            .filter_map(|s| match s.flood {
                Flood::Multicast(g) => Some(g),
                Flood::Unicast(_) | Flood::Evpn => None,
            })
            .collect();
        let needed = joined.union(&wanted).count();
        if needed <= limit {
            continue;
        }
        let what = if v6 { "IPv6 " } else { "" };
        if wanted.is_subset(&joined) {
            out.warnings.push(format!(
                "{needed} {what}multicast groups are joined on VXLAN port {port} but {sysctl} allows {limit}: \
                 a VXLAN link that is set down and up again will fail to rejoin; raise it (sysctl -w {sysctl}={})",
                raise(needed)
            ));
        } else {
            out.errors.push(format!(
                "{needed} distinct {what}multicast groups are needed on VXLAN port {port} on this host but {sysctl} allows {limit}; \
                 raise it first (sysctl -w {sysctl}={}) or share groups between segments",
                raise(needed.max(limit * 2))
            ));
        }
    }
}
