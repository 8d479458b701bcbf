//! The rules vxrouter owns, derived from the profile, independent of the
//! backend: `iptables.rs` and `nft.rs` render them in each tool's own
//! canonical form, so observed and desired rules compare as plain strings.
//!
//! Router policy: forwarding allows new connections from each private segment
//! out of the public leg (with the segment's own source addresses only), port
//! forwards, replies, and — only with `route_between_segments` — traffic
//! between private segments; everything else forwarded is dropped. The router
//! itself answers ping — on the public leg only at the public address, so a
//! private gateway address routed to via the public side stays silent — and
//! offers DHCP and DNS on the legs that ask for them; nothing else. Private
//! subnets leave with SNAT to the public address (or MASQUERADE, or no NAT).
//! IPv6 mirrors this for the legs with an `address6` (`router_policy6`),
//! plus the ICMPv6 IPv6 needs; without any, IPv6 input and forwarding drop
//! everything (and the namespace keeps IPv6 off, see `kinds::sysctl`).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::IpNet;
use serde::Serialize;

use crate::profile::{Ipv4Cidr, Nat, Proto, Router, cidr};

/// Which IP version a chain filters: iptables or ip6tables, nft family `ip`
/// or `ip6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    pub const ALL: [Family; 2] = [Family::V4, Family::V6];
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    Input,
    Forward,
    Prerouting,
    Postrouting,
}

/// One condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Match {
    Src(IpNet),
    Dst(IpNet),
    In(String),
    Out(String),
    /// Protocol and destination port.
    Port(Proto, u16),
    Established,
    Invalid,
    /// Connections a DNAT rule created.
    Dnatted,
    IcmpEcho,
    /// VRRP (IP protocol 112): keepalived's adverts on the HA link.
    Vrrp,
    /// One ICMPv6 type (neighbour discovery, errors).
    Icmp6(u8),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Verdict {
    Accept,
    Drop,
    /// Leave this chain (iptables RETURN; nftables `return` from a base
    /// chain lets the packet continue to other chains).
    Return,
    Snat(Ipv4Addr),
    Masquerade,
    Dnat(IpAddr, u16),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub verdict: Verdict,
}

fn rule(matches: Vec<Match>, verdict: Verdict) -> Rule {
    Rule { matches, verdict }
}

/// One owned chain: hooked into `hook` of `table`. `name` is the nftables
/// chain name; iptables uses `VXROUTER-<NAME>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub name: &'static str,
    pub family: Family,
    pub table: Table,
    pub hook: Hook,
    pub rules: Vec<Rule>,
}

/// Everything vxrouter owns in one namespace's firewall.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Policy {
    pub chains: Vec<Chain>,
}

fn net(c: Ipv4Cidr) -> IpNet {
    IpNet::V4(c)
}

fn host(a: Ipv4Addr) -> IpNet {
    IpNet::V4(cidr::host(a))
}

/// conntrackd's sync port (VyOS and Neutron use the same).
pub const CONNTRACK_SYNC_PORT: u16 = 3780;

pub fn router_policy(r: &Router) -> Policy {
    let public = r.public.leg.veth[1].clone();
    let public_addr = r.public.leg.address.addr();

    let nat: Vec<Rule> = r
        .private
        .iter()
        .filter_map(|leg| {
            let m = vec![Match::Src(net(leg.address.trunc())), Match::Out(public.clone())];
            match r.nat {
                Nat::Snat => Some(rule(m, Verdict::Snat(public_addr))),
                Nat::Masquerade => Some(rule(m, Verdict::Masquerade)),
                Nat::None => None,
            }
        })
        .collect();

    let dnat: Vec<Rule> = r
        .forwards
        .iter()
        .map(|f| {
            rule(
                vec![Match::Dst(host(public_addr)), Match::In(public.clone()), Match::Port(f.proto, f.port)],
                Verdict::Dnat(IpAddr::V4(f.to), f.to_port),
            )
        })
        .collect();

    let mut forward = vec![rule(vec![Match::Established], Verdict::Accept), rule(vec![Match::Invalid], Verdict::Drop)];
    for f in &r.forwards {
        if let Some(leg) = r.private.iter().find(|l| l.address.contains(&f.to)) {
            forward.push(rule(
                vec![
                    Match::Dst(host(f.to)),
                    Match::In(public.clone()),
                    Match::Out(leg.veth[1].clone()),
                    Match::Port(f.proto, f.to_port),
                    Match::Dnatted,
                ],
                Verdict::Accept,
            ));
        }
    }
    for leg in &r.private {
        forward.push(rule(
            vec![Match::Src(net(leg.address.trunc())), Match::In(leg.veth[1].clone()), Match::Out(public.clone())],
            Verdict::Accept,
        ));
    }
    if r.route_between_segments {
        for a in &r.private {
            for b in r.private.iter().filter(|b| b.bridge != a.bridge) {
                forward.push(rule(
                    vec![Match::Src(net(a.address.trunc())), Match::In(a.veth[1].clone()), Match::Out(b.veth[1].clone())],
                    Verdict::Accept,
                ));
            }
        }
    }
    forward.push(rule(vec![], Verdict::Drop));

    let mut input = vec![
        rule(vec![Match::In("lo".into())], Verdict::Accept),
        rule(vec![Match::Established], Verdict::Accept),
        // Ping from the public side only at the public address: the private
        // gateway addresses must not answer to packets routed to them there.
        rule(vec![Match::Dst(host(public_addr)), Match::In(public.clone()), Match::IcmpEcho], Verdict::Accept),
    ];
    // The router's services for its segments: ping, DHCP and DNS, on their legs.
    for leg in &r.private {
        input.push(rule(vec![Match::In(leg.veth[1].clone()), Match::IcmpEcho], Verdict::Accept));
    }
    for leg in &r.private {
        let on = |proto, port| rule(vec![Match::In(leg.veth[1].clone()), Match::Port(proto, port)], Verdict::Accept);
        if leg.dhcp.is_some() {
            input.push(on(Proto::Udp, 67));
        }
        if leg.dns {
            input.push(on(Proto::Udp, 53));
            input.push(on(Proto::Tcp, 53));
        }
    }
    // Router HA: VRRP adverts and connection-state sync from the peer,
    // only on the HA link (kinds/ha_link.rs); nothing is forwarded there.
    if let Some(ha) = &r.ha {
        input.push(rule(vec![Match::In(ha.link.clone()), Match::Vrrp], Verdict::Accept));
        if ha.conntrack_sync {
            input.push(rule(vec![Match::In(ha.link.clone()), Match::Port(Proto::Udp, CONNTRACK_SYNC_PORT)], Verdict::Accept));
        }
    }
    input.push(rule(vec![], Verdict::Drop));

    let v4 = |name, table, hook, rules| Chain { name, family: Family::V4, table, hook, rules };
    let mut chains = vec![v4("in", Table::Filter, Hook::Input, input), v4("fwd", Table::Filter, Hook::Forward, forward)];
    if !dnat.is_empty() {
        chains.push(v4("pre", Table::Nat, Hook::Prerouting, dnat));
    }
    if !nat.is_empty() {
        chains.push(v4("post", Table::Nat, Hook::Postrouting, nat));
    }
    chains.extend(router_policy6(r));
    Policy { chains }
}

/// ICMPv6 IPv6 cannot work without (RFC 4890): the error messages
/// (destination unreachable, packet too big — path MTU discovery —, time
/// exceeded, parameter problem) and, addressed to the router, router
/// solicitation and neighbour solicitation and advertisement.
const ICMP6_ERRORS: [u8; 4] = [1, 2, 3, 4];
const ICMP6_NEIGHBOUR_DISCOVERY: [u8; 3] = [133, 135, 136];

/// IPv6: the IPv4 policy for the legs with an `address6` — new
/// connections only from each segment's prefix out of the public leg, none
/// inbound (with routed prefixes this is what keeps the internet from
/// every VM), ping to the public address only, DNS on legs that ask for it —
/// plus the ICMPv6 IPv6 needs. Without any `address6`: nothing in, nothing
/// through (the loopback keeps working).
fn router_policy6(r: &crate::profile::Router) -> Vec<Chain> {
    let v6 = |name, table, hook, rules| Chain { name, family: Family::V6, table, hook, rules };
    let public = r.public.leg.veth[1].clone();
    let legs: Vec<&crate::profile::Leg> = r.private.iter().filter(|l| l.address6.is_some()).collect();
    // Validation lets a private leg have an address6 only when the public
    // leg has one.
    let Some(public6) = r.public.leg.address6 else {
        return vec![
            v6(
                "in",
                Table::Filter,
                Hook::Input,
                vec![rule(vec![Match::In("lo".into())], Verdict::Accept), rule(vec![], Verdict::Drop)],
            ),
            v6("fwd", Table::Filter, Hook::Forward, vec![rule(vec![], Verdict::Drop)]),
        ];
    };
    let prefix = |l: &crate::profile::Leg| IpNet::V6(l.address6.map(|a| a.trunc()).unwrap_or_default());

    let mut input = vec![rule(vec![Match::In("lo".into())], Verdict::Accept), rule(vec![Match::Established], Verdict::Accept)];
    for t in ICMP6_ERRORS.into_iter().chain(ICMP6_NEIGHBOUR_DISCOVERY) {
        input.push(rule(vec![Match::Icmp6(t)], Verdict::Accept));
    }
    input.push(rule(
        vec![Match::Dst(IpNet::V6(ipnet::Ipv6Net::from(public6.addr()))), Match::In(public.clone()), Match::IcmpEcho],
        Verdict::Accept,
    ));
    for l in &legs {
        input.push(rule(vec![Match::In(l.veth[1].clone()), Match::IcmpEcho], Verdict::Accept));
    }
    for l in legs.iter().filter(|l| l.dns) {
        input.push(rule(vec![Match::In(l.veth[1].clone()), Match::Port(Proto::Udp, 53)], Verdict::Accept));
        input.push(rule(vec![Match::In(l.veth[1].clone()), Match::Port(Proto::Tcp, 53)], Verdict::Accept));
    }
    input.push(rule(vec![], Verdict::Drop));

    let mut forward = vec![rule(vec![Match::Established], Verdict::Accept), rule(vec![Match::Invalid], Verdict::Drop)];
    // Errors about a connection are RELATED already; these also carry path
    // MTU discovery for traffic the router has no state for.
    for t in ICMP6_ERRORS {
        forward.push(rule(vec![Match::Icmp6(t)], Verdict::Accept));
    }
    // Port forwards with a `to6`: the public address's port is translated
    // to the VM's, as for IPv4. With routed prefixes the VM's own address
    // and port are reachable directly too (that is what routing them
    // means); with NAT66 only what the router translated.
    let mut dnat = Vec::new();
    for f in &r.forwards {
        let Some((to6, to_port)) = f.to6 else { continue };
        let Some(leg) = legs.iter().find(|l| l.address6.is_some_and(|n| n.contains(&to6))) else { continue };
        dnat.push(rule(
            vec![
                Match::Dst(IpNet::V6(ipnet::Ipv6Net::from(public6.addr()))),
                Match::In(public.clone()),
                Match::Port(f.proto, f.port),
            ],
            Verdict::Dnat(IpAddr::V6(to6), to_port),
        ));
        let mut m = vec![
            Match::Dst(IpNet::V6(ipnet::Ipv6Net::from(to6))),
            Match::In(public.clone()),
            Match::Out(leg.veth[1].clone()),
            Match::Port(f.proto, to_port),
        ];
        if r.nat6 == crate::profile::Nat6::Masquerade {
            m.push(Match::Dnatted);
        }
        forward.push(rule(m, Verdict::Accept));
    }
    for l in &legs {
        forward
            .push(rule(vec![Match::Src(prefix(l)), Match::In(l.veth[1].clone()), Match::Out(public.clone())], Verdict::Accept));
    }
    if r.route_between_segments {
        for a in &legs {
            for b in legs.iter().filter(|b| b.bridge != a.bridge) {
                forward.push(rule(
                    vec![Match::Src(prefix(a)), Match::In(a.veth[1].clone()), Match::Out(b.veth[1].clone())],
                    Verdict::Accept,
                ));
            }
        }
    }
    forward.push(rule(vec![], Verdict::Drop));

    let mut chains = vec![v6("in", Table::Filter, Hook::Input, input), v6("fwd", Table::Filter, Hook::Forward, forward)];
    if !dnat.is_empty() {
        chains.push(v6("pre", Table::Nat, Hook::Prerouting, dnat));
    }
    if r.nat6 == crate::profile::Nat6::Masquerade {
        let post =
            legs.iter().map(|l| rule(vec![Match::Src(prefix(l)), Match::Out(public.clone())], Verdict::Masquerade)).collect();
        chains.push(v6("post", Table::Nat, Hook::Postrouting, post));
    }
    chains
}

/// Underlay protection on the host: VXLAN UDP to the segments' ports is
/// accepted only from the allowed sources, whatever interface it arrives on
/// (the VXLAN socket listens on every address, and Linux accepts packets for
/// the underlay address on any NIC).
///
/// The chain is of the underlay's family, `v6` (the allowed sources are
/// validated to be of it): a VXLAN link over IPv6 opens only an IPv6 socket.
pub fn underlay_policy(ports: &[u16], allow: &[IpNet], v6: bool) -> Policy {
    let mut rules = Vec::new();
    let ports: BTreeSet<u16> = ports.iter().copied().collect();
    for port in ports {
        for a in allow.iter().filter(|a| matches!(a, IpNet::V6(_)) == v6) {
            rules.push(rule(vec![Match::Src(a.trunc()), Match::Port(Proto::Udp, port)], Verdict::Return));
        }
        rules.push(rule(vec![Match::Port(Proto::Udp, port)], Verdict::Drop));
    }
    let family = if v6 { Family::V6 } else { Family::V4 };
    Policy { chains: vec![Chain { name: "underlay", family, table: Table::Filter, hook: Hook::Input, rules }] }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::iptables::render_rules;
    use crate::profile::Profile;

    fn router(extra: &str, router_keys: &str) -> Router {
        let text = include_str!("../../profiles/three-hosts/host-a.toml")
            .replace("namespace = \"ns1\"", &format!("namespace = \"ns1\"\n{router_keys}"))
            + extra;
        Profile::parse("p.toml", &text).unwrap().router.unwrap()
    }

    /// The rules of a hook, as iptables-save prints them.
    fn rules(p: &Policy, hook: Hook) -> Vec<String> {
        p.chains
            .iter()
            .find(|c| c.hook == hook && c.family == Family::V4)
            .map(|c| render_rules(&c.rules, c.family))
            .unwrap_or_default()
    }

    #[test]
    fn default_router_snats_and_isolates_segments() {
        let r = router_policy(&router("", ""));
        assert_eq!(
            rules(&r, Hook::Postrouting),
            [
                "-s 192.168.10.0/24 -o gw-br-pu -j SNAT --to-source 203.0.113.123",
                "-s 192.168.20.0/24 -o gw-br-pu -j SNAT --to-source 203.0.113.123"
            ]
        );
        let fwd = rules(&r, Hook::Forward);
        assert!(!fwd.iter().any(|x| x.contains("-o gw-br-db") || x.contains("-o gw-br-web")), "{fwd:?}");
        assert_eq!(fwd.last().unwrap(), "-j DROP");
        assert!(rules(&r, Hook::Prerouting).is_empty());
    }

    #[test]
    fn nat_modes_and_routing_between_segments() {
        let r = router_policy(&router("", "nat = \"masquerade\"\nroute_between_segments = true"));
        assert!(rules(&r, Hook::Postrouting).iter().all(|x| x.ends_with("-j MASQUERADE")));
        let fwd = rules(&r, Hook::Forward);
        assert!(fwd.contains(&"-s 192.168.10.0/24 -i gw-br-web -o gw-br-db -j ACCEPT".to_string()), "{fwd:?}");
        assert!(fwd.contains(&"-s 192.168.20.0/24 -i gw-br-db -o gw-br-web -j ACCEPT".to_string()), "{fwd:?}");
        let r = router_policy(&router("", "nat = \"none\""));
        assert!(r.chains.iter().all(|c| c.table != Table::Nat));
    }

    #[test]
    fn port_forward_is_dnat_plus_a_matching_forward_accept() {
        let r = router_policy(&router("\n[[router.forward]]\nproto = \"tcp\"\nport = 2222\nto = \"192.168.10.11:22\"\n", ""));
        assert_eq!(
            rules(&r, Hook::Prerouting),
            ["-d 203.0.113.123/32 -i gw-br-pu -p tcp -m tcp --dport 2222 -j DNAT --to-destination 192.168.10.11:22"]
        );
        assert!(
            rules(&r, Hook::Forward).contains(
                &"-d 192.168.10.11/32 -i gw-br-pu -o gw-br-web -p tcp -m tcp --dport 22 -m conntrack --ctstate DNAT -j ACCEPT"
                    .to_string()
            )
        );
    }

    #[test]
    fn an_ipv6_port_forward_translates_and_routed_prefixes_also_reach_the_vm_directly() {
        let text = include_str!("../../profiles/dual-stack/host-a.toml").to_string()
            + "\n[[router.forward]]\nproto = \"tcp\"\nport = 2222\nto = \"192.168.10.11:22\"\nto6 = \"[2001:db8:10::11]:22\"\n";
        let six = |r: &Router, hook: Hook| {
            let p = router_policy(r);
            p.chains
                .iter()
                .find(|c| c.hook == hook && c.family == Family::V6)
                .map(|c| render_rules(&c.rules, Family::V6))
                .unwrap_or_default()
        };
        let routed = Profile::parse("p.toml", &text).unwrap().router.unwrap();
        assert_eq!(
            six(&routed, Hook::Prerouting),
            ["-d 2001:db8:ff::123/128 -i veth15.1 -p tcp -m tcp --dport 2222 -j DNAT --to-destination [2001:db8:10::11]:22"]
        );
        let direct = "-d 2001:db8:10::11/128 -i veth15.1 -o veth17.1 -p tcp -m tcp --dport 22 -j ACCEPT";
        assert!(six(&routed, Hook::Forward).iter().any(|r| r == direct), "{:?}", six(&routed, Hook::Forward));
        // With NAT66 only what the router translated passes.
        let nat66 = Profile::parse("p.toml", &text.replace("namespace = \"ns1\"", "namespace = \"ns1\"\nnat6 = \"masquerade\""))
            .unwrap()
            .router
            .unwrap();
        let fwd = six(&nat66, Hook::Forward);
        assert!(!fwd.iter().any(|r| r == direct), "{fwd:?}");
        assert!(fwd.iter().any(|r| r.starts_with("-d 2001:db8:10::11/128") && r.contains("--ctstate DNAT -j ACCEPT")), "{fwd:?}");
        // Without to6 there is no IPv6 forward at all.
        let v4_only = Profile::parse("p.toml", &text.replace("to6 = \"[2001:db8:10::11]:22\"\n", "")).unwrap().router.unwrap();
        assert!(six(&v4_only, Hook::Prerouting).is_empty());
        assert!(!six(&v4_only, Hook::Forward).iter().any(|r| r.contains("2001:db8:10::11")));
    }

    #[test]
    fn underlay_protection_returns_allowed_sources_then_drops() {
        let r = underlay_policy(&[4789, 4789], &["10.0.0.0/24".parse().unwrap()], false);
        assert_eq!(
            rules(&r, Hook::Input),
            ["-s 10.0.0.0/24 -p udp -m udp --dport 4789 -j RETURN", "-p udp -m udp --dport 4789 -j DROP"]
        );
        assert_eq!(r.chains[0].family, Family::V4);
        // Every segment port is filtered, each with the same sources.
        let r = underlay_policy(&[4789, 8472], &["10.0.0.0/24".parse().unwrap()], false);
        assert_eq!(
            rules(&r, Hook::Input),
            [
                "-s 10.0.0.0/24 -p udp -m udp --dport 4789 -j RETURN",
                "-p udp -m udp --dport 4789 -j DROP",
                "-s 10.0.0.0/24 -p udp -m udp --dport 8472 -j RETURN",
                "-p udp -m udp --dport 8472 -j DROP"
            ]
        );
        // Over an IPv6 underlay the chain is an IPv6 one (ip6tables, nft ip6).
        let r = underlay_policy(&[4789], &["fd00::/64".parse().unwrap()], true);
        assert_eq!(r.chains[0].family, Family::V6);
        assert_eq!(
            render_rules(&r.chains[0].rules, Family::V6),
            ["-s fd00::/64 -p udp -m udp --dport 4789 -j RETURN", "-p udp -m udp --dport 4789 -j DROP"]
        );
    }
}
