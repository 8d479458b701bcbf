//! Planner unit tests on hand-built hosts (the golden tests in tests/plan/
//! use hosts captured from a real kernel).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::*;
use crate::facts::{Facts, UnderlayFacts};
use crate::firewall::iptables::{self, jump_rule};
use crate::firewall::rules::Family;
use crate::firewall::{Backend, FirewallState, IptState};
use crate::kinds::Kind;
use crate::kinds::fdb::{Fdb, Peer};
use crate::kinds::firewall::{self as fwkind, Firewall};
use crate::kinds::sysctl::Sysctls;
use crate::kinds::uplink::{Uplink, Uplinks};
use crate::model::{Addr, FdbEntry, Link, LinkKind, ObservedVxlan, Route};
use crate::profile::Profile;
use crate::state::{Pending, State};

pub const SEED_A: &str = include_str!("../../profiles/host-a.toml");

pub fn facts(nft: bool) -> Facts {
    Facts {
        frr_problems: Vec::new(),
        underlay: Some(UnderlayFacts { mtu: 1500, address: Some(Ipv4Addr::new(10, 0, 0, 1)) }),
        nft,
        run_dir: "/run/vxrouter".into(),
        sysctls: BTreeMap::new(),
        missing_tools: Vec::new(),
    }
}

pub fn desired_with(text: &str, nft: bool) -> Desired {
    Desired::derive(&Profile::parse("p.toml", text).unwrap(), &facts(nft))
}

pub fn desired(text: &str) -> Desired {
    desired_with(text, false)
}

/// A bare host: loopback, eth0 (10.0.0.1/24), eth1.
pub fn bare() -> Observed {
    let mut o = Observed { facts: facts(false), ..Observed::default() };
    o.host.links = vec![
        Link { index: 1, name: "lo".into(), loopback: true, mtu: 65536, up: true, ..Link::default() },
        Link { index: 2, name: "eth0".into(), mtu: 1500, up: true, ..Link::default() },
        Link { index: 3, name: "eth1".into(), mtu: 1500, up: true, ..Link::default() },
    ];
    o.host.addrs = vec![Addr { index: 2, cidr: "10.0.0.1/24".parse().unwrap() }];
    o
}

/// Replaces what kind `K` saw.
fn set_seen<K: Kind>(o: &mut Observed, seen: K::Seen) {
    o.parts.insert::<K, K::Seen>(seen);
}

fn seen<K: Kind>(o: &Observed) -> K::Seen {
    o.seen::<K>().cloned().unwrap_or_default()
}

/// What the kernel shows after `d` was applied to `bare()`.
pub fn converged(d: &Desired) -> Observed {
    let mut o = bare();
    let mut next: BTreeMap<Ns, u32> = BTreeMap::new();
    next.insert(Ns::Host, 10);
    let mut sysctls: Vec<(Ns, BTreeMap<String, String>)> = Vec::new();
    if let Some(r) = d.router_ns() {
        o.netns.insert(r.to_string());
        o.state.namespaces.insert(r.to_string());
        o.named.insert(r.to_string(), NsView::default());
        next.insert(Ns::Named(r.to_string()), 2);
    }
    fn view<'a>(o: &'a mut Observed, ns: &Ns) -> &'a mut NsView {
        match ns {
            Ns::Host => &mut o.host,
            Ns::Named(n) => o.named.get_mut(n).unwrap(),
        }
    }
    for (ns, spec) in d.links() {
        let index = if spec.kind == LinkKind::Loopback {
            1
        } else {
            let n = next.get_mut(ns).unwrap();
            *n += 1;
            *n
        };
        let v = view(&mut o, ns);
        let master = spec.master.as_ref().map(|m| v.link(m).unwrap().index);
        let mut l = Link {
            index,
            name: spec.name.clone(),
            kind: Some(spec.kind.name().to_string()),
            mtu: spec.mtu.unwrap_or(1500),
            master,
            up: spec.up,
            alias: Some(d.mark.clone()),
            mac: spec.mac,
            no_ipv6: spec.no_ipv6,
            loopback: spec.kind == LinkKind::Loopback,
            port: spec.port,
            ..Link::default()
        };
        match &spec.kind {
            LinkKind::Bridge(b) => l.bridge = Some(b.clone()),
            LinkKind::Vxlan(x) => {
                l.vxlan = Some(ObservedVxlan {
                    learning: x.learning,
                    vni: x.vni,
                    group: x.group,
                    dev: Some(2),
                    local: Some(x.local),
                    port: x.port,
                    ageing: x.ageing,
                    ttl: x.ttl,
                })
            }
            LinkKind::Loopback => l.kind = None,
            _ => {}
        }
        v.links.push(l);
    }
    // Pair veth ends.
    for (ns, spec) in d.links() {
        if let LinkKind::Veth(p) = &spec.kind {
            let a = o.view(ns).unwrap().link(&spec.name).unwrap().index;
            let b = o.view(&p.peer_ns).unwrap().link(&p.peer).unwrap().index;
            view(&mut o, ns).links.iter_mut().find(|l| l.index == a).unwrap().link = Some(b);
            view(&mut o, &p.peer_ns).links.iter_mut().find(|l| l.index == b).unwrap().link = Some(a);
        }
    }
    for a in d.of::<crate::kinds::address::Addresses>() {
        let v = view(&mut o, &a.ns);
        let index = v.link(&a.link).unwrap().index;
        v.addrs.push(Addr { index, cidr: a.addr });
    }
    for r in d.of::<crate::kinds::route::Routes>() {
        let v = view(&mut o, &r.ns);
        let oif = v.link(&r.dev).map(|l| l.index);
        v.routes.push(Route { dst: r.dst, gateway: Some(r.gateway), oif, protocol: r.protocol });
    }
    for s in d.of::<Sysctls>() {
        match sysctls.iter_mut().find(|(ns, _)| *ns == s.ns) {
            Some((_, values)) => {
                values.insert(s.key.clone(), s.value.clone());
            }
            None => sysctls.push((s.ns.clone(), BTreeMap::from([(s.key.clone(), s.value.clone())]))),
        }
    }
    set_seen::<Sysctls>(&mut o, sysctls);
    let mut fw = fwkind::Seen::default();
    for r in d.of::<Firewall>() {
        let state = |family| {
            let mut ipt = IptState::default();
            for c in &iptables::ruleset(&r.policy, family).chains {
                ipt.chains.insert((c.table.clone(), c.name.clone()), c.rules.clone());
                ipt.jumps.entry((c.table.clone(), c.hook.clone())).or_default().push(jump_rule(&d.mark, &c.name));
            }
            ipt
        };
        let st = FirewallState { ipt: Some(state(Family::V4)), ip6t: Some(state(Family::V6)), nft: None, nft_at: None };
        fw.namespaces.push((r.ns.clone(), st));
        o.state.firewall.entry(crate::state::fw_key(&r.ns)).or_default().insert(Backend::Iptables);
    }
    set_seen::<Firewall>(&mut o, fw);
    let mut fdb = Vec::new();
    for p in d.of::<Fdb>() {
        fdb.push(FdbEntry { index: o.host.link(&p.vxlan).unwrap().index, dst: p.peer });
    }
    set_seen::<Fdb>(&mut o, Some(fdb));
    for u in d.of::<Uplinks>() {
        let bi = o.host.link(&u.bridge).unwrap().index;
        o.host.links.iter_mut().find(|l| l.name == u.uplink).unwrap().master = Some(bi);
        o.state.uplinks.insert(u.uplink.clone(), u.bridge.clone());
    }
    o
}

fn lines(p: &Plan) -> Vec<String> {
    p.steps.iter().map(|s| s.title()).collect()
}

fn host_link<'a>(o: &'a mut Observed, name: &str) -> &'a mut Link {
    o.host.links.iter_mut().find(|l| l.name == name).unwrap()
}

#[test]
fn bare_host_gets_everything_in_dependency_order() {
    let d = desired(SEED_A);
    let p = plan(&d, &bare(), PlanOptions::default()).unwrap();
    assert_eq!(
        lines(&p),
        [
            "create namespace ns1",
            "create bridge br-pr",
            "create bridge br-pu",
            "create vxlan vxlan1070",
            "change loopback lo in ns1",
            "create veth veth15.0",
            "create veth veth17.0",
            "change uplink eth1 in br-pu",
            "create address 203.0.113.123/24 on veth15.1 in ns1",
            "create address 192.168.10.3/24 on veth17.1 in ns1",
            "create route default via 203.0.113.1 dev veth15.1 in ns1",
            "change sysctl net.ipv6.conf.br-pr.disable_ipv6",
            "change sysctl net.ipv6.conf.br-pu.disable_ipv6",
            "change sysctl net.ipv4.ip_forward in ns1",
            "change sysctl net.ipv6.conf.all.disable_ipv6 in ns1",
            "change sysctl net.ipv6.conf.default.disable_ipv6 in ns1",
            "change sysctl net.ipv4.conf.all.arp_ignore in ns1",
            "change sysctl net.ipv4.conf.all.arp_announce in ns1",
            "change sysctl net.ipv4.conf.all.send_redirects in ns1",
            "change sysctl net.ipv4.conf.default.send_redirects in ns1",
            "change sysctl net.ipv4.conf.all.rp_filter in ns1",
            "change sysctl net.ipv4.conf.default.rp_filter in ns1",
            "change sysctl net.ipv4.conf.veth15.1.send_redirects in ns1",
            "change sysctl net.ipv4.conf.veth17.1.send_redirects in ns1",
            "create firewall in ns1 (iptables)",
        ]
    );
}

#[test]
fn converged_host_needs_nothing() {
    let d = desired(SEED_A);
    let p = plan(&d, &converged(&d), PlanOptions::default()).unwrap();
    assert!(p.steps.is_empty(), "{:#?}", p.steps);
    assert!(p.notes.is_empty());
}

#[test]
fn an_unowned_name_is_a_conflict_and_nothing_is_planned() {
    let d = desired(SEED_A);
    let mut o = bare();
    o.host.links.push(Link { index: 9, name: "br-pr".into(), kind: Some("bridge".into()), ..Link::default() });
    let err = plan(&d, &o, PlanOptions::default()).unwrap_err();
    assert!(err.to_string().contains("bridge br-pr exists but is not owned by vxrouter for host-a"), "{err}");
    // A namespace of the same name, not made by us, is refused too.
    let mut o = bare();
    o.netns.insert("ns1".into());
    o.named.insert("ns1".into(), NsView::default());
    assert!(plan(&d, &o, PlanOptions::default()).unwrap_err().to_string().contains("namespace ns1 exists but was not created"));
}

/// An uplink found in a bridge of someone else is not taken from it: the
/// conflict names that bridge (in one of ours it is drift, moved back).
#[test]
fn an_uplink_in_a_foreign_bridge_is_a_conflict_naming_it() {
    let d = desired(SEED_A);
    let mut o = converged(&d);
    o.host.links.push(Link { index: 99, name: "br-x".into(), kind: Some("bridge".into()), ..Link::default() });
    host_link(&mut o, "eth1").master = Some(99);
    let err = plan(&d, &o, PlanOptions::default()).unwrap_err().to_string();
    assert!(err.contains("uplink eth1 is a port of br-x, which vxrouter does not own; release it first"), "{err}");
    let pr = host_link(&mut o, "br-pr").index;
    host_link(&mut o, "eth1").master = Some(pr);
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    let lines: Vec<String> = p.steps.iter().map(|s| s.line()).collect();
    assert_eq!(lines, ["change uplink eth1 in br-pu: master br-pu (found br-pr)"], "{lines:#?}");
}

#[test]
fn an_interrupted_run_is_finished_by_adopting_its_unmarked_links() {
    let d = desired(SEED_A);
    let mut o = converged(&d);
    host_link(&mut o, "br-pr").alias = None;
    let p = plan(&d, &o, PlanOptions::default());
    assert!(p.is_err(), "without a pending record, an unmarked link is foreign");
    o.state.pending = Some(Pending { pid: 1, links: vec![(Ns::Host, "br-pr".into())], namespaces: vec![] });
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(p.steps.len(), 1);
    assert_eq!(p.steps[0].line(), "change bridge br-pr: alias vxrouter:host-a (found none)");
}

/// A converged host as hand-built: nothing marked, its own MACs, VXLAN
/// without a local address (what the seed document's commands make).
fn hand_built(d: &Desired) -> Observed {
    let mut o = converged(d);
    let strip = |l: &mut Link| {
        if l.alias.is_some() {
            l.alias = None;
            l.mac = Some([0x52, 0x54, 0, 0, 0, l.index as u8]);
        }
        if let Some(v) = l.vxlan.as_mut() {
            v.local = None;
        }
    };
    o.host.links.iter_mut().for_each(strip);
    for v in o.named.values_mut() {
        v.links.iter_mut().for_each(strip);
    }
    o.state = State::default();
    o
}

#[test]
fn adopt_marks_hand_built_links_keeps_their_macs_and_recreates_nothing() {
    let d = desired(SEED_A);
    let o = hand_built(&d);
    let err = plan(&d, &o, PlanOptions::default()).unwrap_err().to_string();
    assert!(err.contains("exists but is not owned") && err.contains("namespace ns1 exists but was not created"), "{err}");
    let adopt = PlanOptions { adopt: true, ..PlanOptions::default() };
    let p = plan(&d, &o, adopt).unwrap();
    let lines: Vec<String> = p.steps.iter().map(|s| s.line()).collect();
    assert!(
        !lines.is_empty() && lines.iter().all(|l| l.starts_with("change ") && l.contains(": alias vxrouter:host-a (found none)")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("mac") || l.contains("recreate")), "{lines:#?}");
    assert!(p.kept_macs.contains_key("@host/br-pr") && p.kept_macs.contains_key("ns1/veth15.1"), "{:?}", p.kept_macs);
    // Once adopted (marked, MACs recorded), the next plan is empty, and a
    // MAC changed afterwards is drift back to the adopted one.
    let mut after = converged(&d);
    for l in after.host.links.iter_mut().chain(after.named.values_mut().flat_map(|v| v.links.iter_mut())) {
        if let Some(m) = o.host.links.iter().chain(o.named.values().flat_map(|v| v.links.iter())).find(|x| x.name == l.name) {
            l.mac = m.mac;
            if let Some(v) = l.vxlan.as_mut() {
                v.local = None;
            }
        }
    }
    after.state.kept_macs = p.kept_macs.clone();
    let again = plan(&d, &after, PlanOptions::default()).unwrap();
    assert!(again.steps.is_empty(), "{:#?}", again.steps.iter().map(|s| s.line()).collect::<Vec<_>>());
    host_link(&mut after, "br-pr").mac = Some([2, 0, 0, 0, 0, 1]);
    let drift: Vec<String> = plan(&d, &after, PlanOptions::default()).unwrap().steps.iter().map(|s| s.line()).collect();
    assert_eq!(drift.len(), 1);
    assert!(
        drift[0].starts_with("change bridge br-pr: mac 52:54:00:00:00:") && drift[0].ends_with("(found 02:00:00:00:00:01)"),
        "{drift:?}"
    );
    // A profile that pins underlay.local recreates a VXLAN link without it.
    let pinned = desired(&SEED_A.replace("device = \"eth0\"", "device = \"eth0\"\nlocal = \"10.0.0.1\""));
    let p = plan(&pinned, &hand_built(&pinned), adopt).unwrap();
    assert!(
        p.steps.iter().any(|s| s.line().contains("vxlan1070") && s.line().contains("local 10.0.0.1 (found none)")),
        "{:#?}",
        p.steps.iter().map(|s| s.line()).collect::<Vec<_>>()
    );
}

#[test]
fn drift_is_reported_per_attribute_and_immutable_ones_recreate() {
    let d = desired(SEED_A);
    let mut o = converged(&d);
    host_link(&mut o, "br-pr").mtu = 1500;
    host_link(&mut o, "vxlan1070").up = false;
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    let l: Vec<String> = p.steps.iter().map(|a| a.line()).collect();
    assert_eq!(l, ["change bridge br-pr: mtu 1450 (found 1500)", "change vxlan vxlan1070: state up (found down)"]);

    let mut o = converged(&d);
    host_link(&mut o, "vxlan1070").vxlan.as_mut().unwrap().vni = 99;
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(p.steps.len(), 1);
    assert_eq!(p.steps[0].verb(), Verb::Recreate);
    assert!(p.steps[0].line().contains("vni 1070 (found 99) cannot change in place"), "{}", p.steps[0].line());

    let mut o = converged(&d);
    host_link(&mut o, "vxlan1070").vxlan.as_mut().unwrap().group = Some(Ipv4Addr::new(239, 9, 9, 9).into());
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(p.steps[0].line(), "change vxlan vxlan1070: group 239.0.4.46 (found 239.9.9.9)");
}

#[test]
fn a_veth_without_its_peer_is_recreated() {
    let d = desired(SEED_A);
    let mut o = converged(&d);
    o.named.get_mut("ns1").unwrap().links.retain(|l| l.name != "veth17.1");
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(lines(&p), ["recreate veth veth17.0", "create address 192.168.10.3/24 on veth17.1 in ns1"]);
}

#[test]
fn removing_a_segment_removes_its_owned_links_only() {
    let two = SEED_A.replace("[router]", "[[segment]]\nbridge = \"br-x\"\nvni = 2000\ngroup = \"239.0.4.47\"\n\n[router]");
    let mut o = converged(&desired(&two));
    // A VM tap in br-x keeps that bridge alive; the VXLAN link goes.
    let bx = host_link(&mut o, "br-x").index;
    o.host.links.push(Link { index: 99, name: "vnet0".into(), kind: Some("tun".into()), master: Some(bx), ..Link::default() });
    let p = plan(&desired(SEED_A), &o, PlanOptions::default()).unwrap();
    assert_eq!(lines(&p), ["remove vxlan vxlan2000"]);
    assert!(p.notes[0].contains("kept bridge br-x") && p.notes[0].contains("vnet0"), "{:?}", p.notes);
    let p = plan(&desired(SEED_A), &o, PlanOptions { force: true, ..PlanOptions::default() }).unwrap();
    assert_eq!(lines(&p), ["remove vxlan vxlan2000", "remove bridge br-x"]);
}

#[test]
fn destroy_plan_releases_the_uplink_and_removes_everything_owned() {
    let d = desired(SEED_A);
    let o = converged(&d);
    let empty = Desired::nothing(&d.host, &d.mark);
    let p = plan(&empty, &o, PlanOptions::default()).unwrap();
    assert_eq!(
        lines(&p),
        [
            "remove namespace ns1",
            "remove uplink eth1 in br-pu",
            "remove vxlan vxlan1070",
            "remove bridge br-pr",
            "remove bridge br-pu",
        ]
    );
    assert_eq!(p.steps[0].line(), "remove namespace ns1: with the veth pairs of veth15.0, veth17.0");
    assert_eq!(lines(&p).len(), 5);
}

#[test]
fn a_namespace_with_foreign_objects_is_emptied_not_deleted() {
    let d = desired(SEED_A);
    let mut o = converged(&d);
    o.named.get_mut("ns1").unwrap().links.push(Link {
        index: 50,
        name: "mine0".into(),
        kind: Some("dummy".into()),
        ..Link::default()
    });
    let empty = Desired::nothing(&d.host, &d.mark);
    let p = plan(&empty, &o, PlanOptions::default()).unwrap();
    assert!(!lines(&p).contains(&"remove namespace ns1".to_string()), "{:?}", lines(&p));
    assert!(
        lines(&p).contains(&"remove veth veth17.1 in ns1".to_string()) || lines(&p).contains(&"remove veth veth17.0".to_string())
    );
    assert!(lines(&p).contains(&"change firewall in ns1 (iptables)".to_string()), "{:?}", lines(&p));
    assert!(p.notes.iter().any(|n| n.contains("kept namespace ns1") && n.contains("mine0")), "{:?}", p.notes);
}

const UNICAST: &str =
    "[[segment]]\nbridge = \"br-u\"\nvni = 3000\npeers = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\"]\n\n[router]";

#[test]
fn unicast_peers_become_fdb_entries_without_the_own_address() {
    let d = desired(&SEED_A.replace("[router]", UNICAST));
    let peer = |a| Peer { vxlan: "vxlan3000".to_string(), peer: a };
    assert_eq!(d.of::<Fdb>(), [peer(Ipv4Addr::new(10, 0, 0, 2).into()), peer(Ipv4Addr::new(10, 0, 0, 3).into())]);
    let mut o = converged(&d);
    assert!(plan(&d, &o, PlanOptions::default()).unwrap().steps.is_empty());
    // A peer removed by hand comes back; a stray one goes.
    let vx = o.host.link("vxlan3000").unwrap().index;
    let mut fdb = seen::<Fdb>(&o).unwrap();
    fdb.retain(|e| e.dst != Ipv4Addr::new(10, 0, 0, 3));
    fdb.push(FdbEntry { index: vx, dst: Ipv4Addr::new(10, 0, 0, 9).into() });
    set_seen::<Fdb>(&mut o, Some(fdb));
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(lines(&p), ["remove peer 10.0.0.9 on vxlan3000", "create peer 10.0.0.3 on vxlan3000"]);
}

#[test]
fn the_kernels_group_entry_of_a_multicast_segment_is_no_peer() {
    // A profile mixing a group segment (seed's vxlan1070) and a peer
    // segment reads the FDB of both links; the kernel's all-zero entry
    // for the group (dst = the group) must not be planned away.
    let d = desired(&SEED_A.replace("[router]", UNICAST));
    let mut o = converged(&d);
    let vx = o.host.link("vxlan1070").unwrap().index;
    let group = o.host.link("vxlan1070").unwrap().vxlan.as_ref().unwrap().group.unwrap();
    let mut fdb = seen::<Fdb>(&o).unwrap();
    fdb.push(FdbEntry { index: vx, dst: group });
    set_seen::<Fdb>(&mut o, Some(fdb));
    assert!(plan(&d, &o, PlanOptions::default()).unwrap().steps.is_empty());
}

#[test]
fn switching_a_segment_from_multicast_to_unicast_recreates_its_vxlan() {
    let multicast = SEED_A.replace("[router]", "[[segment]]\nbridge = \"br-u\"\nvni = 3000\ngroup = \"239.1.1.1\"\n\n[router]");
    let o = converged(&desired(&multicast));
    let d = desired(&SEED_A.replace("[router]", UNICAST));
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    assert_eq!(p.steps[0].line().split(':').next().unwrap(), "recreate vxlan vxlan3000");
    assert!(p.steps[0].line().contains("unicast peers (found multicast group 239.1.1.1)"));
    assert_eq!(lines(&p)[1..], ["create peer 10.0.0.2 on vxlan3000", "create peer 10.0.0.3 on vxlan3000"]);
}

#[test]
fn an_ipv6_local_moves_every_segment_onto_ipv6_and_recreates_its_links() {
    let v6 =
        SEED_A.replacen("device = \"eth0\"", "device = \"eth0\"\nlocal = \"fd00::1\"", 1).replace("239.0.4.46", "ff05::4:46");
    let d = desired(&v6);
    let vx = d.link(&Ns::Host, "vxlan1070").unwrap();
    let LinkKind::Vxlan(spec) = &vx.kind else { panic!("{vx:?}") };
    assert_eq!((spec.local.to_string(), spec.group.map(|g| g.to_string())), ("fd00::1".into(), Some("ff05::4:46".into())));
    // The IPv6 header is 20 bytes longer than the IPv4 one.
    assert_eq!(vx.mtu, Some(1430));
    assert!(plan(&d, &converged(&d), PlanOptions::default()).unwrap().steps.is_empty());
    // A host converged over IPv4: family changes cannot happen in place.
    let p = plan(&d, &converged(&desired(SEED_A)), PlanOptions::default()).unwrap();
    let vx_line = lines(&p).into_iter().find(|l| l.contains("vxlan vxlan1070")).unwrap();
    assert!(vx_line.starts_with("recreate vxlan vxlan1070"), "{vx_line}");
    let step = p.steps.iter().find(|s| s.title().contains("vxlan vxlan1070")).unwrap().line();
    assert!(step.contains("the address family cannot change in place"), "{step}");
    // IPv6 peers are IPv6 flood entries, the own address left out.
    let peers = v6.replace("group = \"ff05::4:46\"", "peers = [\"fd00::1\", \"fd00::2\"]");
    let d = desired(&peers);
    assert_eq!(d.of::<Fdb>(), [Peer { vxlan: "vxlan1070".into(), peer: "fd00::2".parse().unwrap() }]);
}

#[test]
fn switching_to_nftables_replaces_the_iptables_chains_by_one_table() {
    let d = desired_with(SEED_A, true);
    let mut o = converged(&desired(SEED_A));
    // auto with nft available: the chains go, the table comes.
    let mut fw = seen::<Firewall>(&o);
    fw.namespaces[0].1.nft = Some(crate::firewall::nft::NftState::default());
    set_seen::<Firewall>(&mut o, fw.clone());
    let p = plan(&d, &o, PlanOptions::default()).unwrap();
    let step = p.steps[0].fields();
    assert_eq!(step["backend"], "nftables", "{step}");
    let changes = step["changes"].to_string();
    assert!(changes.contains("NftReplace"), "{changes}");
    assert!(changes.contains("\"DelChain\":{\"chain\":\"VXROUTER-FWD\""), "{changes}");
    // Once the table is there and the chains gone, nothing is left to do.
    let table = |f| crate::firewall::nft::desired(&d.mark, &d.of::<Firewall>()[0].policy, f);
    fw.namespaces[0].1.ipt = Some(IptState::default());
    fw.namespaces[0].1.ip6t = Some(IptState::default());
    fw.namespaces[0].1.nft =
        Some(crate::firewall::nft::NftState { ours: table(Family::V4), ours6: table(Family::V6), foreign: 0 });
    set_seen::<Firewall>(&mut o, fw);
    assert!(plan(&d, &o, PlanOptions::default()).unwrap().steps.is_empty());
}

#[test]
fn state_default_is_empty() {
    assert!(State::default().is_empty());
}

#[test]
fn seed_router_derives_the_seed_topology_with_safe_defaults() {
    let d = desired(SEED_A);
    let names: Vec<String> = d.links().iter().map(|(ns, l)| format!("{ns}/{}", l.name)).collect();
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
    assert_eq!((v.vni, v.port, v.dev.as_str(), v.local), (1070, 4789, "eth0", Ipv4Addr::new(10, 0, 0, 1).into()));
    // The seed's mistake: the private leg goes into the private bridge.
    assert_eq!(d.link(&Ns::Host, "veth17.0").unwrap().master.as_deref(), Some("br-pr"));
    assert_eq!(d.link(&Ns::Host, "veth15.0").unwrap().master.as_deref(), Some("br-pu"));
    assert_eq!(d.link(&Ns::Named("ns1".into()), "veth17.1").unwrap().mtu, Some(1450));
    assert_eq!(d.of::<Uplinks>(), [Uplink { uplink: "eth1".to_string(), bridge: "br-pu".to_string() }]);
    // NAT names the namespace end of the public leg, which exists.
    let nat = iptables::ruleset(&d.of::<Firewall>()[0].policy, Family::V4);
    let post = &nat.chains.iter().find(|c| c.table == "nat").unwrap().rules;
    assert_eq!(post, &vec!["-s 192.168.10.0/24 -o veth15.1 -j SNAT --to-source 203.0.113.123".to_string()]);
}

mod preflight {
    use super::*;
    use crate::facts::IGMP_MAX_SYSCTL;
    use crate::preflight::check;

    fn profile(text: &str) -> Profile {
        Profile::parse("p.toml", text).unwrap()
    }

    #[test]
    fn seed_router_passes_on_a_host_with_its_nics() {
        let o = bare();
        let pf = check(&profile(SEED_A), &o.facts, &o.host);
        assert!(pf.errors.is_empty(), "{:?}", pf.errors);
        let f = Facts::of(&profile(SEED_A), &o.host, BTreeMap::new(), false, "/run/vxrouter".into());
        assert_eq!(f.underlay, Some(UnderlayFacts { mtu: 1500, address: Some(Ipv4Addr::new(10, 0, 0, 1)) }));
    }

    #[test]
    fn tools_the_profile_needs_are_named_when_missing() {
        let dhcp = SEED_A.replace(
            "veth = [\"veth17.0\", \"veth17.1\"]  # optional, as above",
            "veth = [\"veth17.0\", \"veth17.1\"]\ndhcp = { range = \"192.168.10.100-192.168.10.150\" }",
        );
        assert_ne!(dhcp, SEED_A);
        assert_eq!(crate::facts::tools_needed(&profile(SEED_A), true), ["nft"]);
        assert_eq!(crate::facts::tools_needed(&profile(&dhcp), true), ["dnsmasq", "nft"]);
        assert_eq!(crate::facts::tools_needed(&profile(SEED_A), false)[0], "iptables-restore");
        let mut o = bare();
        o.facts.missing_tools = vec!["dnsmasq".into()];
        let pf = check(&profile(&dhcp), &o.facts, &o.host);
        assert!(
            pf.errors.iter().any(|e| e.contains("dnsmasq is not installed") && e.contains("dnsmasq-base")),
            "{:?}",
            pf.errors
        );
    }

    /// `underlay.local` must be an address of this host. It may sit on
    /// another interface than the device (a routed underlay keeps it on
    /// `lo`), so only an address held nowhere is warned about, at its key.
    #[test]
    fn an_underlay_local_this_host_does_not_hold_is_warned_about_at_its_key() {
        let with_local = |a: &str| SEED_A.replace("device = \"eth0\"", &format!("device = \"eth0\"\nlocal = \"{a}\""));
        let mut o = bare();
        let pf = check(&profile(&with_local("10.0.0.1")), &o.facts, &o.host);
        assert!(pf.warnings.iter().all(|w| !w.contains("underlay.local")), "{:?}", pf.warnings);
        o.host.addrs.push(Addr { index: 1, cidr: "10.0.9.1/32".parse().unwrap() });
        let pf = check(&profile(&with_local("10.0.9.1")), &o.facts, &o.host);
        assert!(pf.warnings.iter().all(|w| !w.contains("underlay.local")), "{:?}", pf.warnings);
        let pf = check(&profile(&with_local("10.0.0.9")), &o.facts, &o.host);
        assert!(pf.errors.is_empty(), "{:?}", pf.errors);
        assert!(
            pf.warnings
                .iter()
                .any(|w| w.starts_with("p.toml:10:1: underlay.local") && w.contains("10.0.0.9 is not an address of this host")),
            "{:?}",
            pf.warnings
        );
    }

    #[test]
    fn missing_nics_and_oversized_mtu_are_errors() {
        let mut o = bare();
        o.host.links.retain(|l| l.name != "eth1");
        let pf = check(&profile(&SEED_A.replace("# mtu = 1450", "mtu = 1451")), &o.facts, &o.host);
        assert!(pf.errors.iter().any(|e| e.contains("uplink eth1 does not exist")), "{:?}", pf.errors);
        assert!(pf.errors.iter().any(|e| e.contains("mtu 1451") && e.contains("carries at most 1450")), "{:?}", pf.errors);
        let pf = check(&profile(&SEED_A.replace("device = \"eth0\"", "device = \"eth7\"")), &o.facts, &o.host);
        assert!(pf.errors.iter().any(|e| e.contains("underlay device eth7 does not exist")), "{:?}", pf.errors);
    }

    #[test]
    fn an_ha_peer_that_is_this_host_is_an_error_at_its_key() {
        let o = bare();
        let text = include_str!("../../profiles/ha/router-a.toml").replace("peer = \"10.0.0.2\"", "peer = \"10.0.0.1\"");
        let pf = check(&profile(&text), &o.facts, &o.host);
        assert!(
            pf.errors
                .iter()
                .any(|e| e.contains("router.ha.peer") && e.contains("router.ha.peer 10.0.0.1 is an address of this host")),
            "{:?}",
            pf.errors
        );
        let ok = check(&profile(include_str!("../../profiles/ha/router-a.toml")), &o.facts, &o.host);
        assert!(!ok.errors.iter().any(|e| e.contains("peer")), "{:?}", ok.errors);
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
        let mut o = bare();
        o.facts.sysctls.insert(IGMP_MAX_SYSCTL.into(), "20".into());
        let pf = check(&profile(&text), &o.facts, &o.host);
        assert!(
            pf.errors.iter().any(|e| e.contains("21 distinct multicast groups are needed on VXLAN port 4789")
                && e.contains("net.ipv4.igmp_max_memberships")),
            "{:?}",
            pf.errors
        );
        o.facts.sysctls.insert(IGMP_MAX_SYSCTL.into(), "21".into());
        assert!(check(&profile(&text), &o.facts, &o.host).errors.is_empty());
        // Groups of down links and of other ports do not count (the limit is
        // per socket, and only up links join).
        for (i, (port, up)) in [(4789, false), (8472, true)].into_iter().enumerate() {
            o.host.links.push(Link {
                index: 100 + i as u32,
                name: format!("other{i}"),
                kind: Some("vxlan".into()),
                up,
                vxlan: Some(ObservedVxlan {
                    learning: true,
                    vni: 9000 + i as u32,
                    group: Some(Ipv4Addr::new(239, 9, 9, i as u8).into()),
                    port,
                    ..ObservedVxlan::default()
                }),
                ..Link::default()
            });
        }
        assert!(check(&profile(&text), &o.facts, &o.host).errors.is_empty());
    }

    #[test]
    fn ipv6_groups_are_bounded_by_the_sockets_option_memory() {
        let mut text =
            SEED_A.replacen("device = \"eth0\"", "device = \"eth0\"\nlocal = \"fd00::1\"", 1).replace("239.0.4.46", "ff05::4:46");
        for i in 0..3 {
            text = text.replace(
                "[router]\n",
                &format!("[[segment]]\nbridge = \"b{i}\"\nvni = {}\ngroup = \"ff05::1:{i}\"\n\n[router]\n", 3000 + i),
            );
        }
        let mut o = bare();
        o.host.addrs.push(Addr { index: o.host.link("eth0").unwrap().index, cidr: "fd00::1/64".parse().unwrap() });
        // 4 groups need 4 * 56 bytes; 200 bytes hold 3. The IPv4 limit is
        // not what counts here.
        o.facts.sysctls.insert(crate::facts::OPTMEM_MAX_SYSCTL.into(), "200".into());
        o.facts.sysctls.insert(IGMP_MAX_SYSCTL.into(), "0".into());
        let pf = check(&profile(&text), &o.facts, &o.host);
        assert!(
            pf.errors
                .iter()
                .any(|e| e.contains("4 distinct IPv6 multicast groups are needed") && e.contains("net.core.optmem_max allows 3")),
            "{:?}",
            pf.errors
        );
        o.facts.sysctls.insert(crate::facts::OPTMEM_MAX_SYSCTL.into(), "225".into());
        let pf = check(&profile(&text), &o.facts, &o.host);
        assert!(pf.errors.is_empty() && pf.warnings.is_empty(), "{:?} {:?}", pf.errors, pf.warnings);
    }

    #[test]
    fn a_lowered_limit_on_an_applied_host_is_a_warning_not_an_error() {
        let d = desired(SEED_A);
        let mut o = converged(&d);
        o.facts.sysctls.insert(IGMP_MAX_SYSCTL.into(), "0".into());
        let pf = check(&profile(SEED_A), &o.facts, &o.host);
        assert!(pf.errors.is_empty(), "{:?}", pf.errors);
        assert!(pf.warnings.iter().any(|w| w.contains("fail to rejoin")), "{:?}", pf.warnings);
        // Not applied yet, the same limit is an error.
        assert!(!check(&profile(SEED_A), &o.facts, &bare().host).errors.is_empty());
    }
}

mod evpn {
    use super::*;
    use crate::model::PortFlags;

    const EVPN: &str = "[host]\nname = \"host-a\"\n[underlay]\ndevice = \"eth0\"\nlocal = \"10.0.0.1\"\n\
        [evpn]\nasn = 65000\nreflectors = [\"10.0.0.1\", \"10.0.0.2\"]\nreflector = true\nlisten = \"10.0.0.0/16\"\n\
        [[segment]]\nbridge = \"br-pr\"\nvni = 1070\ncontrol = \"evpn\"\n";

    fn desired(text: &str) -> Desired {
        let p = Profile::parse("p.toml", text).unwrap();
        Desired::derive(&p, &facts(true))
    }

    fn vxlan(d: &Desired) -> &crate::model::LinkSpec {
        d.links().iter().find(|(_, s)| s.name == "vxlan1070").map(|(_, s)| s).unwrap()
    }

    #[test]
    fn an_evpn_segment_learns_nothing_and_suppresses_neighbours() {
        let d = desired(EVPN);
        let v = vxlan(&d);
        let LinkKind::Vxlan(x) = &v.kind else { panic!() };
        assert!(!x.learning && x.group.is_none());
        assert_eq!(v.port, Some(PortFlags { learning: false, neigh_suppress: true }));
        assert_eq!(v.mtu, Some(1450));
    }

    #[test]
    fn port_flags_that_drifted_are_repaired_in_place() {
        let d = desired(EVPN);
        let mut o = converged(&d);
        use crate::kinds::frr::{Frr, Instance, Seen};
        let w = d.of::<Frr>()[0].clone();
        let instance = Instance { asn: w.asn, lines: w.lines.clone(), owner: Some("host-a".into()) };
        o.parts.insert::<Frr, _>(Seen { running: true, instance: Some(instance), ..Seen::default() });
        let lines = |o: &Observed| -> Vec<String> {
            plan(&d, o, PlanOptions::default())
                .unwrap()
                .steps
                .iter()
                .map(|s| s.line())
                .filter(|l| l.contains("vxlan1070"))
                .collect()
        };
        assert!(lines(&o).is_empty(), "{:?}", lines(&o));
        for l in o.host.links.iter_mut().filter(|l| l.name == "vxlan1070") {
            l.port = Some(PortFlags { learning: true, neigh_suppress: false });
            l.vxlan.as_mut().unwrap().learning = true;
        }
        let got = lines(&o);
        assert_eq!(got.len(), 1, "{got:?}");
        for want in ["learning off (found on)", "port learning off (found on)", "neigh_suppress on (found off)"] {
            assert!(got[0].contains(want), "{got:?} lacks {want}");
        }
        assert!(got[0].starts_with("change vxlan vxlan1070"), "{got:?}");
    }

    #[test]
    fn a_segment_of_an_ha_router_does_not_suppress_neighbours() {
        let ha = format!(
            "{EVPN}[router]\nnamespace = \"ns1\"\n[router.public]\nbridge = \"br-pu\"\nuplink = \"eth1\"\n\
             address = \"203.0.113.2/24\"\ngateway = \"203.0.113.1\"\n[[router.private]]\nbridge = \"br-pr\"\n\
             address = \"192.168.0.1/24\"\n[router.ha]\nvrid = 7\npriority = 200\npeer = \"10.0.0.2\"\n"
        );
        let d = desired(&ha);
        assert_eq!(vxlan(&d).port, Some(PortFlags { learning: false, neigh_suppress: false }));
        let explicit = ha.replace("control = \"evpn\"\n", "control = \"evpn\"\nneigh_suppress = true\n");
        let e = Profile::parse("p.toml", &explicit).unwrap_err().to_string();
        assert!(e.contains("segment[0].neigh_suppress: this segment carries the HA router's gateway address"), "{e}");
    }

    #[test]
    fn the_frr_instance_is_rendered_with_dc_timers_and_a_listen_limit() {
        let d = desired(EVPN);
        let w = &d.of::<crate::kinds::frr::Frr>()[0];
        let text = crate::kinds::frr::block_text(w.asn, &w.lines);
        for want in [
            "router bgp 65000\n",
            " timers bgp 3 9\n",
            " neighbor 10.0.0.2 peer-group VXROUTER\n",
            " bgp listen limit 1000\n",
            " bgp listen range 10.0.0.0/16 peer-group VXROUTER-CLIENTS\n",
            "  neighbor VXROUTER-CLIENTS route-reflector-client\n",
            "  advertise-all-vni\n",
        ] {
            assert!(text.contains(want), "{text} lacks {want:?}");
        }
        assert!(!text.contains("neighbor 10.0.0.1 "), "no session to itself: {text}");
    }
}
