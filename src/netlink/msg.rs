//! Encoding vxrouter's model into rtnetlink messages and decoding the
//! kernel's replies back into it. Private to the netlink layer: everything
//! else goes through the typed operations in `ops.rs`.

use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{DefaultNla, Emitable, NLA_F_NESTED};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope, CacheInfo};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, BridgeStpState, In6AddrGenMode, InfoBridge, InfoBridgePort, InfoData, InfoKind,
    InfoPortData, InfoPortKind, InfoVeth, InfoVxlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::ops::{CreateCtx, SetLink};
use crate::model::{Addr, BridgeSpec, FdbEntry, HostAddr, HostRoute, Link, LinkKind, LinkSpec, ObservedVxlan, PortFlags, Route};
use crate::profile::cidr;
use ipnet::IpNet;

/// A link dump. IFLA_EXT_MASK with RTEXT_FILTER_SKIP_STATS drops the IPv6
/// statistics in IFLA_AF_SPEC (measured here: 101 links, 151 kB → 114 kB of
/// replies); IFLA_STATS and IFLA_STATS64 (~300 bytes a link) are sent
/// whatever the mask says.
pub fn get_links() -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    RouteNetlinkMessage::GetLink(m)
}

/// One link by name (RTM_GETLINK with IFLA_IFNAME).
pub fn get_link(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    RouteNetlinkMessage::GetLink(m)
}

/// IPv4 and IPv6 addresses (AF_UNSPEC).
pub fn get_addresses() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetAddress(AddressMessage::default())
}

/// Routes of the main table (IPv4, or IPv6 with `v6`): with strict
/// checking the kernel walks that table only (a router namespace with 1000
/// legs has over 2000 local and broadcast routes in its local table, which
/// `parse_route` drops).
pub fn get_routes(v6: bool) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if v6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    RouteNetlinkMessage::GetRoute(m)
}

fn up_flags(msg: &mut LinkMessage, up: bool) {
    msg.header.change_mask = LinkFlags::Up;
    if up {
        msg.header.flags = LinkFlags::Up;
    }
}

/// RTM_NEWLINK for a new link. Links that must not get an IPv6 link-local
/// address are created down: address generation can only be switched off
/// before the link first comes up (see `kinds::link::create`).
pub fn create(spec: &LinkSpec, ctx: &CreateCtx) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = ctx.index.unwrap_or(0);
    up_flags(&mut msg, spec.up && !spec.no_ipv6);
    msg.attributes.push(LinkAttribute::IfName(spec.name.clone()));
    if let Some(mtu) = spec.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(mac) = spec.mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(m) = ctx.master {
        msg.attributes.push(LinkAttribute::Controller(m));
    }
    if let Some(fd) = ctx.ns {
        msg.attributes.push(LinkAttribute::NetNsFd(fd));
    }
    let (kind, data) = match &spec.kind {
        LinkKind::Bridge(b) => (InfoKind::Bridge, Some(InfoData::Bridge(bridge_attrs(b)))),
        LinkKind::Vxlan(v) => {
            let mut attrs = vec![InfoVxlan::Id(v.vni)];
            if let Some(g) = v.group {
                attrs.push(vxlan_group(g));
            }
            attrs.push(match v.local {
                IpAddr::V4(a) => InfoVxlan::Local(a),
                IpAddr::V6(a) => InfoVxlan::Local6(a),
            });
            attrs.extend([
                InfoVxlan::Port(v.port),
                InfoVxlan::Ageing(v.ageing),
                InfoVxlan::Ttl(v.ttl),
                InfoVxlan::Learning(v.learning),
            ]);
            if let Some(d) = ctx.vxlan_dev {
                attrs.push(InfoVxlan::Link(d));
            }
            (InfoKind::Vxlan, Some(InfoData::Vxlan(attrs)))
        }
        LinkKind::Veth(_) => {
            let mut peer = LinkMessage::default();
            if let Some(p) = &ctx.peer {
                // The peer cannot come up inside the create request (veth_open
                // finds no peer yet: ENOTCONN); `mark_new` raises it.
                peer.attributes.push(LinkAttribute::IfName(p.name.clone()));
                if let Some(mtu) = p.mtu {
                    peer.attributes.push(LinkAttribute::Mtu(mtu));
                }
                if let Some(mac) = p.mac {
                    peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
                }
            }
            if let Some(fd) = ctx.peer_ns {
                peer.attributes.push(LinkAttribute::NetNsFd(fd));
            }
            peer.header.index = ctx.peer_index.unwrap_or(0);
            (InfoKind::Veth, Some(InfoData::Veth(InfoVeth::Peer(peer))))
        }
        // Loopback and peers are never created on their own.
        LinkKind::VethPeer { .. } | LinkKind::Loopback => (InfoKind::Veth, None),
    };
    let mut info = vec![LinkInfo::Kind(kind)];
    if let Some(d) = data {
        info.push(LinkInfo::Data(d));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(info));
    RouteNetlinkMessage::NewLink(msg)
}

fn bridge_attrs(b: &BridgeSpec) -> Vec<InfoBridge> {
    vec![
        InfoBridge::StpState(if b.stp { BridgeStpState::KernelStp } else { BridgeStpState::Disabled }),
        InfoBridge::ForwardDelay(b.forward_delay),
    ]
}

/// A bridge without multicast snooping: group traffic floods as on a dumb
/// switch (the lab's underlay and public segments).
pub fn create_switch(name: &str) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::MulticastSnooping(false)])),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

pub fn set_link(index: u32, name: &str, s: &SetLink) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if index == 0 {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    if let Some(up) = s.up {
        up_flags(&mut msg, up);
    }
    if let Some(a) = &s.alias {
        msg.attributes.push(LinkAttribute::IfAlias(a.clone()));
    }
    if let Some(mtu) = s.mtu {
        msg.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(m) = s.master {
        msg.attributes.push(LinkAttribute::Controller(m));
    }
    if let Some(mac) = s.mac {
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
    }
    if let Some(g) = s.group {
        msg.attributes.push(LinkAttribute::Group(g));
    }
    if let Some(off) = s.no_ipv6 {
        let mode = if off { In6AddrGenMode::None } else { In6AddrGenMode::Eui64 };
        msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(mode)])]));
    }
    let mut vx = Vec::new();
    if let Some(g) = s.vxlan_group {
        vx.push(vxlan_group(g));
    }
    if let Some(a) = s.vxlan_ageing {
        vx.push(InfoVxlan::Ageing(a));
    }
    if let Some(t) = s.vxlan_ttl {
        vx.push(InfoVxlan::Ttl(t));
    }
    if let Some(l) = s.vxlan_learning {
        vx.push(InfoVxlan::Learning(l));
    }
    let data = match (&s.bridge, vx.is_empty()) {
        (Some(b), _) => Some((InfoKind::Bridge, InfoData::Bridge(bridge_attrs(b)))),
        (None, false) => Some((InfoKind::Vxlan, InfoData::Vxlan(vx))),
        _ => None,
    };
    if let Some((kind, data)) = data {
        msg.attributes.push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind), LinkInfo::Data(data)]));
        // Changing link-kind attributes goes through RTM_NEWLINK without
        // NLM_F_CREATE ("changelink"); RTM_SETLINK ignores IFLA_LINKINFO.
        return RouteNetlinkMessage::NewLink(msg);
    }
    RouteNetlinkMessage::SetLink(msg)
}

/// Sets one IPv4 setting of a link (`net.ipv4.conf.<link>.<setting>`) the
/// way the kernel's `inet_set_link_af` reads it: IFLA_INET_CONF holding one
/// attribute per setting, typed by its IPV4_DEVCONF_* id (1-based), a u32.
/// The crate's `DevConfRequest` leaves out every setting whose value is 0,
/// so the nested attribute is built here.
pub fn set_ipv4_conf(index: u32, name: &str, id: u16, value: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if index == 0 {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    let setting = DefaultNla::new(id, value.to_ne_bytes().to_vec());
    let mut nested = vec![0u8; setting.buffer_len()];
    setting.emit(&mut nested);
    let conf = DefaultNla::new(super::linkdump::IFLA_INET_CONF | NLA_F_NESTED, nested);
    msg.attributes.push(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet(vec![AfSpecInet::Other(conf)])]));
    RouteNetlinkMessage::SetLink(msg)
}

pub fn del_link(index: u32, name: &str) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if index == 0 {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    RouteNetlinkMessage::DelLink(msg)
}

/// RTM_SETLINK putting one link into interface group `group` (IFLA_GROUP),
/// what `ip link set DEV group G` sends.
pub fn set_group(index: u32, name: &str, group: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if index == 0 {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    msg.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::SetLink(msg)
}

/// RTM_DELLINK with no index or name but IFLA_GROUP: the kernel deletes
/// every link of the namespace in that group and unregisters them all in
/// one batch (`rtnl_group_dellink`), what `ip link del group G` sends.
pub fn del_group(group: u32) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.attributes.push(LinkAttribute::Group(group));
    RouteNetlinkMessage::DelLink(msg)
}

fn addr_msg(index: u32, cidr: IpNet) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = if cidr.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.prefix_len = cidr.prefix_len();
    m.header.index = index;
    m.header.scope = AddressScope::Universe;
    if let IpNet::V4(c) = cidr {
        m.attributes.push(AddressAttribute::Local(IpAddr::V4(c.addr())));
        if c.prefix_len() < 31 {
            m.attributes.push(AddressAttribute::Broadcast(c.broadcast()));
        }
    }
    m.attributes.push(AddressAttribute::Address(cidr.addr()));
    m
}

pub fn add_addr(index: u32, cidr: IpNet) -> RouteNetlinkMessage {
    let mut m = addr_msg(index, cidr);
    // A router's own IPv6 address is usable at once: duplicate address
    // detection would hold it tentative (unusable as a source, no answer to
    // neighbour solicitations) for a second after every apply. Link-local
    // addresses are the kernel's own (a rollback puts one back as it was).
    if matches!(cidr, IpNet::V6(n) if n.addr().segments()[0] & 0xffc0 != 0xfe80) {
        m.attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    RouteNetlinkMessage::NewAddress(m)
}

pub fn del_addr(index: u32, cidr: IpNet) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelAddress(addr_msg(index, cidr))
}

fn route_msg(r: &Route) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if r.dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(r.protocol);
    // IPv6 routes are always universe scope (the kernel refuses others).
    m.header.scope = if r.gateway.is_some() || !r.dst.addr().is_ipv4() { RouteScope::Universe } else { RouteScope::Link };
    m.header.kind = RouteType::Unicast;
    if r.dst.prefix_len() > 0 {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::from(r.dst.network())));
    }
    if let Some(g) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    if let Some(o) = r.oif {
        m.attributes.push(RouteAttribute::Oif(o));
    }
    m
}

/// RTM_NEWROUTE with NLM_F_REPLACE|NLM_F_CREATE: flags are the caller's.
pub fn new_route(r: &Route) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewRoute(route_msg(r))
}

pub fn del_route(r: &Route) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelRoute(route_msg(r))
}

/// A head-end replication entry: frames for unknown destinations on the
/// VXLAN link are also sent to `dst` (all-zero MAC, NTF_SELF, permanent).
fn fdb_msg(e: FdbEntry) -> NeighbourMessage {
    let (vxlan_index, dst) = (e.index, e.dst);
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = vxlan_index;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Own;
    m.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![0; 6]));
    m.attributes.push(NeighbourAttribute::Destination(match dst {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    }));
    m
}

/// IFLA_VXLAN_GROUP or IFLA_VXLAN_GROUP6 (for unicast, the remote).
fn vxlan_group(g: IpAddr) -> InfoVxlan {
    match g {
        IpAddr::V4(a) => InfoVxlan::Group(a),
        IpAddr::V6(a) => InfoVxlan::Group6(a),
    }
}

/// RTM_NEWNEIGH; send with NLM_F_CREATE|NLM_F_APPEND (several entries share
/// the all-zero MAC).
pub fn add_fdb(e: FdbEntry) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewNeighbour(fdb_msg(e))
}

pub fn del_fdb(e: FdbEntry) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelNeighbour(fdb_msg(e))
}

pub fn get_fdb() -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    RouteNetlinkMessage::GetNeighbour(m)
}

/// An all-zero-MAC FDB entry with a remote.
pub fn parse_fdb(m: &NeighbourMessage) -> Option<FdbEntry> {
    if m.header.family != AddressFamily::Bridge {
        return None;
    }
    let mut zero = false;
    let mut dst = None;
    for a in &m.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(b) => zero = b.iter().all(|x| *x == 0),
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(IpAddr::V4(*d)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) => dst = Some(IpAddr::V6(*d)),
            // For AF_BRIDGE entries the crate cannot tell the address family
            // of NDA_DST and hands back the raw bytes (4 or 16 of them).
            NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                dst = match b.len() {
                    4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
                    16 => <[u8; 16]>::try_from(&b[..]).ok().map(|o| IpAddr::V6(o.into())),
                    _ => None,
                }
            }
            _ => {}
        }
    }
    if zero { dst.map(|d| FdbEntry { index: m.header.ifindex, dst: d }) } else { None }
}

// ---- decoding -------------------------------------------------------------

pub fn parse_link(m: &LinkMessage) -> Link {
    let mut l = Link {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        loopback: m.header.flags.contains(LinkFlags::Loopback),
        ..Link::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name = n.clone(),
            LinkAttribute::Mtu(v) => l.mtu = *v,
            LinkAttribute::Controller(v) if *v != 0 => l.master = Some(*v),
            LinkAttribute::IfAlias(s) if !s.is_empty() => l.alias = Some(s.clone()),
            LinkAttribute::Address(b) if b.len() == 6 => l.mac = Some([b[0], b[1], b[2], b[3], b[4], b[5]]),
            LinkAttribute::Link(v) if *v != 0 => l.link = Some(*v),
            LinkAttribute::Group(g) => l.group = *g,
            LinkAttribute::AfSpecUnspec(specs) => {
                for s in specs {
                    match s {
                        AfSpecUnspec::Inet6(v6) => {
                            for x in v6 {
                                match x {
                                    AfSpecInet6::AddrGenMode(mode) => l.no_ipv6 = *mode == In6AddrGenMode::None,
                                    AfSpecInet6::DevConf(c) => l.ipv6_disabled = Some(c.disable_ipv6 != 0),
                                    _ => {}
                                }
                            }
                        }
                        AfSpecUnspec::Inet(v4) => {
                            for x in v4 {
                                if let AfSpecInet::DevConf(c) = x {
                                    l.send_redirects = Some(c.send_redirects != 0);
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    match i {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Bridge(b)) => l.bridge = Some(parse_bridge(b)),
                        LinkInfo::Data(InfoData::Vxlan(v)) => l.vxlan = Some(parse_vxlan(v)),
                        LinkInfo::PortData(InfoPortData::BridgePort(p)) => l.port = Some(parse_port(p)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

/// A bridge port's flags (the kernel sends them with every port's link).
fn parse_port(attrs: &[InfoBridgePort]) -> PortFlags {
    let mut f = PortFlags { learning: true, neigh_suppress: false };
    for a in attrs {
        match a {
            InfoBridgePort::Learning(x) => f.learning = *x,
            InfoBridgePort::NeighSupress(x) => f.neigh_suppress = *x,
            _ => {}
        }
    }
    f
}

/// RTM_NEWLINK changing a bridge port's flags ("bridge_slave" data): the
/// link must already be a port of a bridge.
pub fn set_port(index: u32, name: &str, f: PortFlags) -> RouteNetlinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    if index == 0 {
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
    }
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::PortKind(InfoPortKind::Bridge),
        LinkInfo::PortData(InfoPortData::BridgePort(vec![
            InfoBridgePort::Learning(f.learning),
            InfoBridgePort::NeighSupress(f.neigh_suppress),
        ])),
    ]));
    RouteNetlinkMessage::NewLink(msg)
}

fn parse_bridge(attrs: &[InfoBridge]) -> BridgeSpec {
    let mut b = BridgeSpec { stp: false, forward_delay: 0 };
    for a in attrs {
        match a {
            InfoBridge::StpState(s) => b.stp = !matches!(s, BridgeStpState::Disabled),
            InfoBridge::ForwardDelay(d) => b.forward_delay = *d,
            _ => {}
        }
    }
    b
}

fn parse_vxlan(attrs: &[InfoVxlan]) -> ObservedVxlan {
    let mut v = ObservedVxlan { learning: true, ..ObservedVxlan::default() };
    for a in attrs {
        match a {
            InfoVxlan::Id(x) => v.vni = *x,
            InfoVxlan::Group(g) if !g.is_unspecified() => v.group = Some(IpAddr::V4(*g)),
            InfoVxlan::Group6(g) if !g.is_unspecified() => v.group = Some(IpAddr::V6(*g)),
            InfoVxlan::Link(d) if *d != 0 => v.dev = Some(*d),
            InfoVxlan::Local(x) if !x.is_unspecified() => v.local = Some(IpAddr::V4(*x)),
            InfoVxlan::Local6(x) if !x.is_unspecified() => v.local = Some(IpAddr::V6(*x)),
            InfoVxlan::Port(p) => v.port = *p,
            InfoVxlan::Ageing(x) => v.ageing = *x,
            InfoVxlan::Ttl(x) => v.ttl = *x,
            InfoVxlan::Learning(x) => v.learning = *x,
            _ => {}
        }
    }
    v
}

/// An IPv4 or IPv6 address. For IPv4 the local address is the interface's
/// own (IFA_ADDRESS is the peer's on point-to-point links).
pub fn parse_addr(m: &AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(x) => local = Some(*x),
            AddressAttribute::Address(x) => address = Some(*x),
            _ => {}
        }
    }
    let addr: IpAddr = match m.header.family {
        AddressFamily::Inet => local.or(address)?,
        AddressFamily::Inet6 => address.or(local)?,
        _ => return None,
    };
    Some(Addr { index: m.header.index, cidr: IpNet::new(addr, m.header.prefix_len).ok()? })
}

/// Main-table IPv4 unicast routes only: the ones vxrouter may manage.
pub fn parse_route(m: &RouteMessage) -> Option<Route> {
    let v4 = match m.header.address_family {
        AddressFamily::Inet => true,
        AddressFamily::Inet6 => false,
        _ => return None,
    };
    if m.header.table != RouteHeader::RT_TABLE_MAIN || m.header.kind != RouteType::Unicast {
        return None;
    }
    let mut dst: IpAddr = if v4 { Ipv4Addr::UNSPECIFIED.into() } else { std::net::Ipv6Addr::UNSPECIFIED.into() };
    let mut r = Route { dst: cidr::any().into(), gateway: None, oif: None, protocol: u8::from(m.header.protocol) };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = (*d).into(),
            RouteAttribute::Destination(RouteAddress::Inet6(d)) => dst = (*d).into(),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => r.gateway = Some((*g).into()),
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => r.gateway = Some((*g).into()),
            RouteAttribute::Oif(o) => r.oif = Some(*o),
            _ => {}
        }
    }
    r.dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    Some(r)
}

// ---- full addresses and routes (moving the host's own between links) ------

/// IPv4 and IPv6 routes (AF_UNSPEC).
pub fn get_all_routes() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetRoute(RouteMessage::default())
}

/// IPv4 and IPv6 addresses of link `index` only: with strict checking
/// (see `socket`) the kernel filters the dump by ifa_index.
pub fn get_addresses_of(index: u32) -> RouteNetlinkMessage {
    let mut m = AddressMessage::default();
    m.header.index = index;
    RouteNetlinkMessage::GetAddress(m)
}

/// IPv4 and IPv6 main-table routes through link `oif` only: with strict
/// checking the kernel filters the dump by RTA_OIF, and walks the main
/// table only (without it, every IPv6 route of the host — a link-local and
/// a multicast route per link with IPv6, thousands at N = 1000 — was walked
/// twice per no-op for the two links this is asked about).
pub fn get_all_routes_via(oif: u32) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.attributes.push(RouteAttribute::Oif(oif));
    RouteNetlinkMessage::GetRoute(m)
}

/// Flags RTM_NEWADDR takes from userspace; the others (secondary,
/// tentative, permanent, deprecated, …) are the kernel's own bookkeeping.
const SETTABLE_ADDR_FLAGS: u32 = 0x02 | 0x04 | 0x10 | 0x100 | 0x200 | 0x400;
/// "forever" in IFA_CACHEINFO.
const INFINITY_LIFE_TIME: u32 = u32::MAX;

/// An address with its flags, scope and lifetimes.
pub fn parse_host_addr(m: &AddressMessage) -> Option<HostAddr> {
    let base = parse_addr(m)?;
    let mut flags = u32::from(m.header.flags.bits());
    let (mut valid, mut preferred, mut broadcast) = (None, None, None);
    for a in &m.attributes {
        match a {
            AddressAttribute::Flags(f) => flags = f.bits(),
            AddressAttribute::Broadcast(b) => broadcast = Some(*b),
            AddressAttribute::CacheInfo(c) => {
                valid = (c.ifa_valid != INFINITY_LIFE_TIME).then_some(c.ifa_valid);
                preferred = (c.ifa_preferred != INFINITY_LIFE_TIME).then_some(c.ifa_preferred);
            }
            _ => {}
        }
    }
    Some(HostAddr { index: base.index, cidr: base.cidr, flags, scope: u8::from(m.header.scope), valid, preferred, broadcast })
}

fn host_addr_msg(index: u32, a: &HostAddr) -> AddressMessage {
    let mut m = addr_msg(index, a.cidr);
    m.header.scope = AddressScope::from(a.scope);
    // The broadcast address as it was, not the one `addr_msg` derives.
    m.attributes.retain(|x| !matches!(x, AddressAttribute::Broadcast(_)));
    if let Some(b) = a.broadcast {
        m.attributes.push(AddressAttribute::Broadcast(b));
    }
    m.attributes.push(AddressAttribute::Flags(AddressFlags::from_bits_retain(a.flags & SETTABLE_ADDR_FLAGS)));
    if a.valid.is_some() || a.preferred.is_some() {
        let mut c = CacheInfo::default();
        c.ifa_preferred = a.preferred.unwrap_or(INFINITY_LIFE_TIME);
        c.ifa_valid = a.valid.unwrap_or(INFINITY_LIFE_TIME);
        m.attributes.push(AddressAttribute::CacheInfo(c));
    }
    m
}

/// RTM_NEWADDR of `a` on link `index` (flags and lifetimes kept).
pub fn add_host_addr(index: u32, a: &HostAddr) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewAddress(host_addr_msg(index, a))
}

/// Main-table unicast routes of either family.
pub fn parse_host_route(m: &RouteMessage) -> Option<HostRoute> {
    let family = m.header.address_family;
    if (family != AddressFamily::Inet && family != AddressFamily::Inet6)
        || m.header.table != RouteHeader::RT_TABLE_MAIN
        || m.header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut dst: Option<IpAddr> = None;
    let mut r = HostRoute {
        dst: IpNet::V4(Default::default()),
        gateway: None,
        oif: None,
        protocol: u8::from(m.header.protocol),
        scope: u8::from(m.header.scope),
        metric: 0,
        prefsrc: None,
        onlink: m.header.flags.contains(RouteFlags::Onlink),
    };
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(x) => Some(IpAddr::V4(*x)),
        RouteAddress::Inet6(x) => Some(IpAddr::V6(*x)),
        _ => None,
    };
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d),
            RouteAttribute::Gateway(g) => r.gateway = ip(g),
            RouteAttribute::Oif(o) => r.oif = Some(*o),
            RouteAttribute::Priority(p) => r.metric = *p,
            RouteAttribute::PrefSource(s) => r.prefsrc = ip(s),
            _ => {}
        }
    }
    let dst = dst.unwrap_or(if family == AddressFamily::Inet6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    });
    r.dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
    Some(r)
}

fn host_route_msg(r: &HostRoute) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = if r.dst.addr().is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    m.header.destination_prefix_length = r.dst.prefix_len();
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::from(r.protocol);
    m.header.scope = RouteScope::from(r.scope);
    m.header.kind = RouteType::Unicast;
    if r.onlink {
        m.header.flags = RouteFlags::Onlink;
    }
    if r.dst.prefix_len() > 0 {
        m.attributes.push(RouteAttribute::Destination(RouteAddress::from(r.dst.network())));
    }
    if let Some(g) = r.gateway {
        m.attributes.push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    if let Some(o) = r.oif {
        m.attributes.push(RouteAttribute::Oif(o));
    }
    if r.metric != 0 {
        m.attributes.push(RouteAttribute::Priority(r.metric));
    }
    if let Some(s) = r.prefsrc {
        m.attributes.push(RouteAttribute::PrefSource(RouteAddress::from(s)));
    }
    m
}

/// RTM_NEWROUTE; flags are the caller's.
pub fn new_host_route(r: &HostRoute) -> RouteNetlinkMessage {
    RouteNetlinkMessage::NewRoute(host_route_msg(r))
}

pub fn del_host_route(r: &HostRoute) -> RouteNetlinkMessage {
    RouteNetlinkMessage::DelRoute(host_route_msg(r))
}
