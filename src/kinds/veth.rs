//! Router legs: veth pairs with one end in a bridge on the host and the
//! other in the router namespace. The pair is created in one request with
//! its peer already inside the namespace (IFLA_NET_NS_FD in the peer); the
//! peer cannot come up in that request (it has no peer yet: ENOTCONN), so
//! marking it raises it. Each end has a stable MAC, so a leg that is
//! recreated keeps the gateway MAC VMs have cached.

use crate::desired::{overhead, segment_mtu, underlay_mtu};
use crate::facts::Facts;
use crate::model::{Link, LinkKind, LinkSpec, Ns, VethPeer};
use crate::plan::Planner;
use crate::profile::names::stable_mac;
use crate::profile::{Leg, Profile};

/// The public leg, then one leg per private segment: each as its host end
/// (a `Veth`) followed by its namespace end (a `VethPeer`).
pub fn desire(p: &Profile, f: &Facts, out: &mut Vec<(Ns, LinkSpec)>) {
    let Some(r) = &p.router else { return };
    let rns = Ns::Named(r.namespace.clone());
    // A high-availability router's private leg with IPv6 gets no link-local
    // address of its own: the VMs' IPv6 gateway is the link-local address
    // keepalived moves with the other addresses (kinds/keepalived.rs), so
    // router advertisements come from it and the VMs' default route follows
    // the active router.
    let moving_ll = |l: &Leg| r.ha.is_some() && l.address6.is_some() && l.bridge != r.public.leg.bridge;
    let mut leg = |l: &Leg, mtu: Option<u32>| {
        out.push((
            Ns::Host,
            LinkSpec {
                name: l.veth[0].clone(),
                kind: LinkKind::Veth(VethPeer { peer: l.veth[1].clone(), peer_ns: rns.clone() }),
                mtu,
                master: Some(l.bridge.clone()),
                up: true,
                mac: Some(stable_mac(&p.host, "", &l.veth[0])),
                no_ipv6: false,
                port: None,
            },
        ));
        out.push((
            rns.clone(),
            LinkSpec {
                name: l.veth[1].clone(),
                kind: LinkKind::VethPeer { peer: l.veth[0].clone() },
                mtu,
                master: None,
                up: true,
                mac: Some(stable_mac(&p.host, &r.namespace, &l.veth[1])),
                no_ipv6: moving_ll(l),
                port: None,
            },
        ));
    };
    leg(&r.public.leg, None);
    for l in &r.private {
        let mtu = p.segments.iter().find(|s| s.bridge == l.bridge).map(|s| segment_mtu(s.mtu, underlay_mtu(f), overhead(p)));
        leg(l, mtu);
    }
}

/// The pair must be made again when its namespace end is missing or is not
/// this end's peer.
pub fn recreate_reason(p: &Planner<'_>, found: &Link, peer: &(Ns, LinkSpec)) -> Option<String> {
    let (pns, spec) = peer;
    match p.view(pns).and_then(|v| v.link(&spec.name)) {
        None => Some(format!("peer {} missing in {pns}", spec.name)),
        Some(pl) if Some(pl.index) != found.link || pl.link != Some(found.index) => {
            Some(format!("peer {} in {pns} is not this veth's other end", spec.name))
        }
        Some(_) => None,
    }
}

/// A veth's other end that exists (in its namespace) but is not paired
/// with the end being created: it must go first, or its name is taken.
pub fn stale_peer(p: &Planner<'_>, peer: &(Ns, LinkSpec)) -> Vec<(Ns, String)> {
    let (pns, spec) = peer;
    match p.view(pns).and_then(|v| v.link(&spec.name)) {
        Some(_) => vec![(pns.clone(), spec.name.clone())],
        None => vec![],
    }
}
