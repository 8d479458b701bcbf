//! VXLAN links: one per segment, a port of its bridge, on the underlay
//! device. VNI, port, device, local address and the flood mode (multicast
//! group or unicast peers) cannot change in place: the link is recreated.
//! Group, ageing and TTL change in place (a group change flaps the link so
//! the new group is joined). An IPv6 `underlay.local` makes every link use
//! IPv6 endpoints (local, group or peers): the kernel's VXLAN device has one
//! family, that of its local and remote addresses, and opens only that
//! family's socket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::desired::{overhead, segment_mtu, underlay_mtu};
use crate::facts::Facts;
use crate::model::{Link, LinkKind, LinkSpec, Ns, PortFlags, VxlanSpec};
use crate::observe::Observed;
use crate::plan::Diff;
use crate::profile::names::stable_mac;
use crate::profile::{Flood, Profile};

use super::link::LinkChange;

/// The address VXLAN packets leave from: the profile's, or the underlay
/// device's first IPv4 address.
pub fn local_address(p: &Profile, f: &Facts) -> IpAddr {
    p.underlay
        .as_ref()
        .and_then(|u| u.local)
        .or_else(|| f.underlay.as_ref().and_then(|u| u.address).map(IpAddr::V4))
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// The unspecified address of `like`'s family: a link without a local
/// address still has a family, and the kernel refuses a local and a remote
/// of different families.
fn unspecified_like(like: Option<IpAddr>) -> IpAddr {
    match like {
        Some(IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    }
}

pub fn desire(p: &Profile, f: &Facts, out: &mut Vec<(Ns, LinkSpec)>) {
    let dev = p.underlay.as_ref().map(|u| u.device.clone()).unwrap_or_default();
    let local = local_address(p, f);
    for s in &p.segments {
        let group = match &s.flood {
            Flood::Multicast(g) => Some(*g),
            Flood::Unicast(_) | Flood::Evpn => None,
        };
        let evpn = s.flood == Flood::Evpn;
        let spec = VxlanSpec {
            vni: s.vni,
            group,
            dev: dev.clone(),
            local,
            port: s.port,
            ageing: s.ageing,
            ttl: s.ttl.unwrap_or(0),
            pin_local: p.underlay.as_ref().is_some_and(|u| u.local.is_some()),
            learning: !evpn,
        };
        out.push((
            Ns::Host,
            LinkSpec {
                name: s.vxlan.clone(),
                kind: LinkKind::Vxlan(spec),
                mtu: Some(segment_mtu(s.mtu, underlay_mtu(f), overhead(p))),
                master: Some(s.bridge.clone()),
                up: true,
                mac: Some(stable_mac(&p.host, "", &s.vxlan)),
                no_ipv6: false,
                port: evpn.then_some(PortFlags { learning: false, neigh_suppress: s.neigh_suppress }),
            },
        ));
    }
}

/// Why the link must be deleted and created again, if it must.
pub fn recreate_reason(want: &VxlanSpec, found: &Link, o: &Observed) -> Option<String> {
    let f = found.vxlan.clone().unwrap_or_default();
    if f.vni != want.vni {
        return Some(format!("vni {} (found {}) cannot change in place", want.vni, f.vni));
    }
    if f.port != want.port {
        return Some(format!("port {} (found {}) cannot change in place", want.port, f.port));
    }
    let dev = o.host.link(&want.dev).map(|l| l.index);
    if f.dev != dev {
        let found_dev = f.dev.and_then(|i| o.host.by_index(i)).map(|l| l.name.clone()).unwrap_or("none".into());
        return Some(format!("dev {} (found {found_dev})", want.dev));
    }
    match (want.group, f.group) {
        (None, Some(g)) => return Some(format!("unicast peers (found multicast group {g})")),
        (Some(g), None) => return Some(format!("multicast group {g} (found unicast peers)")),
        (Some(w), Some(h)) if w.is_ipv6() != h.is_ipv6() => {
            return Some(format!("group {w} (found {h}): the address family cannot change in place"));
        }
        _ => {}
    }
    if let Some(l) = f.local
        && l.is_ipv6() != want.local.is_ipv6()
    {
        return Some(format!("local {} (found {l}): the address family cannot change in place", want.local));
    }
    // No local address on a link the profile does not pin one for (a host
    // built by hand): the kernel sends from the underlay's address by
    // route, which is what vxrouter would set; recreating it would cost
    // every VM on the segment its connectivity for nothing.
    let unpinned = f.local.is_none() && !want.pin_local;
    if !unpinned && f.local.unwrap_or(unspecified_like(Some(want.local))) != want.local {
        return Some(format!("local {} (found {})", want.local, f.local.map(|a| a.to_string()).unwrap_or("none".into())));
    }
    None
}

/// Group, ageing and TTL change in place.
pub fn diff(want: &VxlanSpec, found: &Link, change: &mut LinkChange, diffs: &mut Vec<Diff>) {
    let f = found.vxlan.clone().unwrap_or_default();
    if let (Some(w), Some(h)) = (want.group, f.group)
        && w != h
    {
        change.vxlan_group = Some(w);
        diffs.push(Diff { field: "group", expected: w.to_string(), found: h.to_string() });
    }
    if f.ageing != want.ageing {
        change.vxlan_ageing = Some(want.ageing);
        diffs.push(Diff { field: "ageing", expected: want.ageing.to_string(), found: f.ageing.to_string() });
    }
    if f.learning != want.learning {
        change.vxlan_learning = Some(want.learning);
        let show = |b: bool| if b { "on" } else { "off" }.to_string();
        diffs.push(Diff { field: "learning", expected: show(want.learning), found: show(f.learning) });
    }
    if f.ttl != want.ttl {
        change.vxlan_ttl = Some(want.ttl);
        diffs.push(Diff { field: "ttl", expected: want.ttl.to_string(), found: f.ttl.to_string() });
    }
}

pub fn describe(v: &VxlanSpec) -> String {
    format!(
        "vni {}, {}, dev {}, local {}, port {}",
        v.vni,
        match v.group {
            // A unicast address there is the default remote (the HA link).
            Some(g) if !g.is_multicast() => format!("remote {g}"),
            Some(g) => format!("group {g}"),
            None if !v.learning => "no group (evpn), nolearning".into(),
            None => "unicast peers".into(),
        },
        v.dev,
        v.local,
        v.port
    )
}

/// The specification to recreate a deleted VXLAN link as it was (its
/// underlay device is given by index when it is created).
pub fn as_found(l: &Link) -> LinkKind {
    let v = l.vxlan.clone().unwrap_or_default();
    LinkKind::Vxlan(VxlanSpec {
        vni: v.vni,
        group: v.group,
        dev: String::new(),
        local: v.local.unwrap_or(unspecified_like(v.group)),
        port: v.port,
        ageing: v.ageing,
        ttl: v.ttl,
        pin_local: v.local.is_some(),
        learning: v.learning,
    })
}
