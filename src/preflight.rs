//! Checks that need the host but change nothing: the underlay device and
//! uplink exist, the underlay has an address to send from, the kernel will
//! let us join every multicast group, and warnings an operator should see.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use crate::desired::{UnderlayFacts, segment_mtu};
use crate::observe::NsView;
use crate::profile::{Flood, Profile, VXLAN_OVERHEAD};

pub const IGMP_MAX_SYSCTL: &str = "net/ipv4/igmp_max_memberships";
pub const IP_FORWARD_SYSCTL: &str = "net/ipv4/ip_forward";
/// Present only when br_netfilter is loaded.
pub const BRIDGE_NF_SYSCTL: &str = "net/bridge/bridge-nf-call-iptables";

/// br_netfilter is loaded and passes bridged IPv4 through iptables.
pub fn bridge_nf_on(host: &NsView) -> bool {
    host.sysctls.get(BRIDGE_NF_SYSCTL).map(String::as_str) == Some("1")
}

/// Warnings that need the host's firewall (read only when relevant).
pub fn host_firewall_warnings(host: &NsView) -> Vec<String> {
    let mut out = Vec::new();
    if bridge_nf_on(host)
        && host
            .firewall
            .as_ref()
            .and_then(|f| f.ipt.as_ref())
            .is_some_and(|f| f.policies.get("FORWARD").map(String::as_str) == Some("DROP"))
    {
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
    pub underlay: Option<UnderlayFacts>,
}

pub fn check(p: &Profile, host: &NsView) -> Preflight {
    let mut out = Preflight::default();
    if let Some(u) = &p.underlay {
        match host.link(&u.device) {
            None => out.errors.push(format!("{}: underlay device {} does not exist on this host", p.source, u.device)),
            Some(dev) => {
                let address = host.addrs_of(dev.index).map(|a| a.cidr.addr).next();
                if u.local.is_none() && address.is_none() && !p.segments.is_empty() {
                    out.errors.push(format!(
                        "{}: underlay device {} has no IPv4 address to send VXLAN from; give it one or set underlay.local",
                        p.source, u.device
                    ));
                }
                if let Some(local) = u.local
                    && !host.addrs.iter().any(|a| a.cidr.addr == local)
                {
                    out.warnings.push(format!(
                        "underlay.local {local} is not an address of this host; VXLAN packets will carry it as source anyway"
                    ));
                }
                for s in &p.segments {
                    let mtu = segment_mtu(s.mtu, dev.mtu);
                    if mtu + VXLAN_OVERHEAD > dev.mtu {
                        out.errors.push(format!(
                            "{}: segment {} has mtu {mtu}, but VXLAN over {} (MTU {}) carries at most {} (the 50-byte VXLAN header must fit); \
                             lower the segment mtu or raise the underlay MTU",
                            p.source,
                            s.bridge,
                            u.device,
                            dev.mtu,
                            dev.mtu.saturating_sub(VXLAN_OVERHEAD)
                        ));
                    }
                }
                out.underlay = Some(UnderlayFacts { mtu: dev.mtu, address });
            }
        }
    }
    if let Some(r) = &p.router
        && host.link(&r.public.uplink).is_none()
    {
        out.errors.push(format!("{}: uplink {} does not exist on this host", p.source, r.public.uplink));
    }

    // The kernel's VXLAN driver joins each group once per namespace; past
    // igmp_max_memberships the join fails with ENOBUFS.
    let mut groups: BTreeSet<Ipv4Addr> = p
        .segments
        .iter()
        .filter_map(|s| match s.flood {
            Flood::Multicast(g) => Some(g),
            Flood::Unicast(_) => None,
        })
        .collect();
    let ours: BTreeSet<&str> = p.segments.iter().map(|s| s.vxlan.as_str()).collect();
    for l in &host.links {
        if let Some(v) = &l.vxlan
            && !ours.contains(l.name.as_str())
            && let Some(g) = v.group.filter(|g| g.is_multicast())
        {
            groups.insert(g);
        }
    }
    let limit: usize = host.sysctls.get(IGMP_MAX_SYSCTL).and_then(|v| v.parse().ok()).unwrap_or(20);
    if groups.len() > limit {
        out.errors.push(format!(
            "{} distinct multicast groups are needed on this host but net.ipv4.igmp_max_memberships is {limit}; \
             raise it first (sysctl -w net.ipv4.igmp_max_memberships={}) or share groups between segments",
            groups.len(),
            groups.len().max(limit * 2)
        ));
    }
    if host.sysctls.get(IP_FORWARD_SYSCTL).map(String::as_str) == Some("1") {
        out.warnings.push(
            "IP forwarding is enabled on the host itself (net.ipv4.ip_forward=1): vxrouter routes only inside its router \
             namespace and does not need it; make sure the host's own firewall does not route traffic it should not"
                .into(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::tests::{SEED_A, bare};

    fn profile(text: &str) -> Profile {
        Profile::parse("p.toml", text).unwrap()
    }

    #[test]
    fn seed_router_passes_on_a_host_with_its_nics() {
        let pf = check(&profile(SEED_A), &bare().host);
        assert!(pf.errors.is_empty(), "{:?}", pf.errors);
        assert_eq!(pf.underlay, Some(UnderlayFacts { mtu: 1500, address: Some(Ipv4Addr::new(10, 0, 0, 1)) }));
    }

    #[test]
    fn missing_nics_and_oversized_mtu_are_errors() {
        let mut host = bare().host;
        host.links.retain(|l| l.name != "eth1");
        let pf = check(&profile(&SEED_A.replace("# mtu = 1450", "mtu = 1451")), &host);
        assert!(pf.errors.iter().any(|e| e.contains("uplink eth1 does not exist")), "{:?}", pf.errors);
        assert!(pf.errors.iter().any(|e| e.contains("mtu 1451") && e.contains("carries at most 1450")), "{:?}", pf.errors);
        let pf = check(&profile(&SEED_A.replace("device = \"eth0\"", "device = \"eth7\"")), &host);
        assert!(pf.errors.iter().any(|e| e.contains("underlay device eth7 does not exist")), "{:?}", pf.errors);
    }

    #[test]
    fn multicast_groups_beyond_the_kernel_limit_name_the_sysctl() {
        let mut text = SEED_A.to_string();
        for i in 0..20 {
            text = text.replace(
                "[router]\n",
                &format!("[[segment]]\nbridge = \"b{i}\"\nvni = {}\ngroup = \"239.1.1.{i}\"\n\n[router]\n", 3000 + i),
            );
        }
        let mut host = bare().host;
        host.sysctls.insert(IGMP_MAX_SYSCTL.into(), "20".into());
        let pf = check(&profile(&text), &host);
        assert!(
            pf.errors.iter().any(|e| e.contains("21 distinct multicast groups") && e.contains("net.ipv4.igmp_max_memberships")),
            "{:?}",
            pf.errors
        );
        host.sysctls.insert(IGMP_MAX_SYSCTL.into(), "21".into());
        assert!(check(&profile(&text), &host).errors.is_empty());
    }
}
