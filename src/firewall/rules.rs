//! The rules vxrouter owns, derived from the profile. Rule text is in
//! `iptables-save` canonical form so observed and desired chains compare
//! as plain strings.
//!
//! Router policy: forwarding allows new connections from each private segment
//! out of the public leg (with the segment's own source addresses only), port
//! forwards, replies, and — only with `route_between_segments` — traffic
//! between private segments; everything else forwarded is dropped. The router
//! itself answers ping and nothing else. Private subnets leave with SNAT to
//! the public address (or MASQUERADE, or no NAT).

use std::collections::BTreeSet;

use super::{Chain, Ruleset};
use crate::profile::{Ipv4Cidr, Nat, Router};

pub const NAT_CHAIN: &str = "VXROUTER-POST";
pub const DNAT_CHAIN: &str = "VXROUTER-PRE";
pub const FORWARD_CHAIN: &str = "VXROUTER-FWD";
pub const INPUT_CHAIN: &str = "VXROUTER-IN";
pub const UNDERLAY_CHAIN: &str = "VXROUTER-UNDERLAY";

fn chain(table: &str, name: &str, hook: &str, rules: Vec<String>) -> Chain {
    Chain { table: table.into(), name: name.into(), hook: hook.into(), rules }
}

pub fn router_ruleset(r: &Router) -> Ruleset {
    let public = &r.public.leg.veth[1];
    let public_addr = r.public.leg.address.addr;

    let nat: Vec<String> = r
        .private
        .iter()
        .filter_map(|leg| {
            let net = leg.address.network();
            match r.nat {
                Nat::Snat => Some(format!("-s {net} -o {public} -j SNAT --to-source {public_addr}")),
                Nat::Masquerade => Some(format!("-s {net} -o {public} -j MASQUERADE")),
                Nat::None => None,
            }
        })
        .collect();

    let dnat: Vec<String> = r
        .forwards
        .iter()
        .map(|f| {
            let p = f.proto.as_str();
            format!(
                "-d {public_addr}/32 -i {public} -p {p} -m {p} --dport {} -j DNAT --to-destination {}:{}",
                f.port, f.to, f.to_port
            )
        })
        .collect();

    let mut forward = vec![
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-m conntrack --ctstate INVALID -j DROP".to_string(),
    ];
    for f in &r.forwards {
        let p = f.proto.as_str();
        if let Some(leg) = r.private.iter().find(|l| l.address.contains(f.to)) {
            forward.push(format!(
                "-d {}/32 -i {public} -o {} -p {p} -m {p} --dport {} -m conntrack --ctstate DNAT -j ACCEPT",
                f.to, leg.veth[1], f.to_port
            ));
        }
    }
    for leg in &r.private {
        forward.push(format!("-s {} -i {} -o {public} -j ACCEPT", leg.address.network(), leg.veth[1]));
    }
    if r.route_between_segments {
        for a in &r.private {
            for b in r.private.iter().filter(|b| b.bridge != a.bridge) {
                forward.push(format!("-s {} -i {} -o {} -j ACCEPT", a.address.network(), a.veth[1], b.veth[1]));
            }
        }
    }
    forward.push("-j DROP".to_string());

    let input = vec![
        "-i lo -j ACCEPT".to_string(),
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-p icmp -m icmp --icmp-type 8 -j ACCEPT".to_string(),
        "-j DROP".to_string(),
    ];

    let mut chains = vec![chain("filter", INPUT_CHAIN, "INPUT", input), chain("filter", FORWARD_CHAIN, "FORWARD", forward)];
    if !dnat.is_empty() {
        chains.push(chain("nat", DNAT_CHAIN, "PREROUTING", dnat));
    }
    if !nat.is_empty() {
        chains.push(chain("nat", NAT_CHAIN, "POSTROUTING", nat));
    }
    Ruleset { chains }
}

/// Underlay protection on the host: VXLAN UDP to the segments' ports is
/// accepted on the underlay device only from the allowed sources.
pub fn underlay_ruleset(device: &str, ports: &[u16], allow: &[Ipv4Cidr]) -> Ruleset {
    let mut rules = Vec::new();
    let ports: BTreeSet<u16> = ports.iter().copied().collect();
    for port in ports {
        for a in allow {
            rules.push(format!("-s {} -i {device} -p udp -m udp --dport {port} -j RETURN", a.network()));
        }
        rules.push(format!("-i {device} -p udp -m udp --dport {port} -j DROP"));
    }
    Ruleset { chains: vec![chain("filter", UNDERLAY_CHAIN, "INPUT", rules)] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    fn router(extra: &str, router_keys: &str) -> Router {
        let text = include_str!("../../profiles/three-hosts/host-a.toml")
            .replace("namespace = \"ns1\"", &format!("namespace = \"ns1\"\n{router_keys}"))
            + extra;
        Profile::parse("p.toml", &text).unwrap().router.unwrap()
    }

    fn rules(r: &Ruleset, name: &str) -> Vec<String> {
        r.chains.iter().find(|c| c.name == name).map(|c| c.rules.clone()).unwrap_or_default()
    }

    #[test]
    fn default_router_snats_and_isolates_segments() {
        let r = router_ruleset(&router("", ""));
        assert_eq!(
            rules(&r, NAT_CHAIN),
            [
                "-s 192.168.10.0/24 -o gw-br-pu -j SNAT --to-source 203.0.113.123",
                "-s 192.168.20.0/24 -o gw-br-pu -j SNAT --to-source 203.0.113.123"
            ]
        );
        let fwd = rules(&r, FORWARD_CHAIN);
        assert!(!fwd.iter().any(|x| x.contains("-o gw-br-db") || x.contains("-o gw-br-web")), "{fwd:?}");
        assert_eq!(fwd.last().unwrap(), "-j DROP");
        assert!(rules(&r, DNAT_CHAIN).is_empty());
    }

    #[test]
    fn nat_modes_and_routing_between_segments() {
        let r = router_ruleset(&router("", "nat = \"masquerade\"\nroute_between_segments = true"));
        assert!(rules(&r, NAT_CHAIN).iter().all(|x| x.ends_with("-j MASQUERADE")));
        let fwd = rules(&r, FORWARD_CHAIN);
        assert!(fwd.contains(&"-s 192.168.10.0/24 -i gw-br-web -o gw-br-db -j ACCEPT".to_string()), "{fwd:?}");
        assert!(fwd.contains(&"-s 192.168.20.0/24 -i gw-br-db -o gw-br-web -j ACCEPT".to_string()), "{fwd:?}");
        let r = router_ruleset(&router("", "nat = \"none\""));
        assert!(r.chains.iter().all(|c| c.table != "nat"));
    }

    #[test]
    fn port_forward_is_dnat_plus_a_matching_forward_accept() {
        let r = router_ruleset(&router("\n[[router.forward]]\nproto = \"tcp\"\nport = 2222\nto = \"192.168.10.11:22\"\n", ""));
        assert_eq!(
            rules(&r, DNAT_CHAIN),
            ["-d 203.0.113.123/32 -i gw-br-pu -p tcp -m tcp --dport 2222 -j DNAT --to-destination 192.168.10.11:22"]
        );
        assert!(
            rules(&r, FORWARD_CHAIN).contains(
                &"-d 192.168.10.11/32 -i gw-br-pu -o gw-br-web -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT -j ACCEPT"
                    .to_string()
            )
        );
    }

    #[test]
    fn underlay_protection_returns_allowed_sources_then_drops() {
        let r = underlay_ruleset("eth0", &[4789, 4789], &["10.0.0.0/24".parse().unwrap()]);
        assert_eq!(
            rules(&r, UNDERLAY_CHAIN),
            ["-s 10.0.0.0/24 -i eth0 -p udp -m udp --dport 4789 -j RETURN", "-i eth0 -p udp -m udp --dport 4789 -j DROP"]
        );
    }
}
