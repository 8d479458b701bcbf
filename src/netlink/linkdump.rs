//! Decoding link dumps straight from the receive buffer, reading only the
//! attributes vxrouter's `Link` keeps.
//!
//! Written here instead of using `netlink-packet-route`'s `LinkMessage`
//! parser, which every other reply still goes through: that parser turns
//! every attribute of every link into owned values — statistics, the IPv4
//! and IPv6 configuration arrays, bridge-port and bridge options (~50
//! each) — and at N = 1000 (~4000 links, ~5 MB of replies) that was 12 % of
//! a no-op run's samples, as much as the kernel's own dump. Here a link is
//! the 16-byte `ifinfomsg` and a walk over its attributes with the core
//! crate's zero-copy `NlasIterator`, descending only into IFLA_LINKINFO and
//! IFLA_AF_SPEC. The unit tests check it against the crate's parser.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{NlaBuffer, NlasIterator};

use crate::model::{BridgeSpec, Link, ObservedVxlan, PortFlags};

// if_link.h
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_IFALIAS: u16 = 20;
const IFLA_AF_SPEC: u16 = 26;
const IFLA_GROUP: u16 = 27;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const IFLA_INFO_SLAVE_KIND: u16 = 4;
const IFLA_INFO_SLAVE_DATA: u16 = 5;
const IFLA_BRPORT_LEARNING: u16 = 8;
const IFLA_BRPORT_NEIGH_SUPPRESS: u16 = 32;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
/// IFLA_INET_CONF inside IFLA_AF_SPEC's AF_INET (include/uapi/linux/if_link.h).
pub(super) const IFLA_INET_CONF: u16 = 1;
/// IPV4_DEVCONF_SEND_REDIRECTS (include/uapi/linux/ip.h, 1-based): the
/// setting's attribute type in a request, and one more than its place in a
/// dump's IFLA_INET_CONF array of u32.
pub(super) const IPV4_DEVCONF_SEND_REDIRECTS: u16 = 6;
const IFLA_INET6_CONF: u16 = 2;
const IFLA_INET6_ADDR_GEN_MODE: u16 = 8;
/// DEVCONF_DISABLE_IPV6: the index of `disable_ipv6` in IFLA_INET6_CONF's
/// array of s32 (include/uapi/linux/ipv6.h).
const DEVCONF_DISABLE_IPV6: usize = 26;
const IN6_ADDR_GEN_MODE_NONE: u8 = 1;
const IFLA_BR_FORWARD_DELAY: u16 = 1;
const IFLA_BR_STP_STATE: u16 = 5;
const IFLA_VXLAN_ID: u16 = 1;
const IFLA_VXLAN_GROUP: u16 = 2;
const IFLA_VXLAN_LINK: u16 = 3;
const IFLA_VXLAN_LOCAL: u16 = 4;
const IFLA_VXLAN_TTL: u16 = 5;
const IFLA_VXLAN_LEARNING: u16 = 7;
const IFLA_VXLAN_AGEING: u16 = 8;
const IFLA_VXLAN_PORT: u16 = 15;
const IFLA_VXLAN_GROUP6: u16 = 16;
const IFLA_VXLAN_LOCAL6: u16 = 17;
const IFF_UP: u32 = 0x1;
const IFF_LOOPBACK: u32 = 0x8;
/// sizeof(struct ifinfomsg)
const IFINFOMSG_LEN: usize = 16;

fn attrs(bytes: &[u8]) -> impl Iterator<Item = NlaBuffer<&[u8]>> {
    // A malformed attribute ends the walk; the kernel does not send one.
    NlasIterator::new(bytes).map_while(Result::ok)
}

/// An attribute's value, borrowed from the receive buffer itself (not from
/// the `NlaBuffer`, so that it can outlive the loop that found it).
fn value(a: NlaBuffer<&[u8]>) -> &[u8] {
    let len = usize::from(a.length());
    let bytes = a.into_inner();
    bytes.get(4..len.min(bytes.len())).unwrap_or_default()
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

fn ipv4_of(v: &[u8]) -> Option<Ipv4Addr> {
    let b: [u8; 4] = v.get(..4)?.try_into().ok()?;
    Some(Ipv4Addr::from(b))
}

fn ipv6_of(v: &[u8]) -> Option<Ipv6Addr> {
    let b: [u8; 16] = v.get(..16)?.try_into().ok()?;
    Some(Ipv6Addr::from(b))
}

/// A VXLAN address attribute; the all-zero address means none.
fn ip_of(v: &[u8], v6: bool) -> Option<IpAddr> {
    let a = if v6 { ipv6_of(v).map(IpAddr::V6) } else { ipv4_of(v).map(IpAddr::V4) };
    a.filter(|a| !a.is_unspecified())
}

fn text_of(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// One RTM_NEWLINK payload (after the netlink header); None when it is too
/// short to be one.
pub fn parse(payload: &[u8]) -> Option<Link> {
    let header = payload.get(..IFINFOMSG_LEN)?;
    let flags = u32_of(&header[8..12])?;
    let mut l =
        Link { index: u32_of(&header[4..8])?, up: flags & IFF_UP != 0, loopback: flags & IFF_LOOPBACK != 0, ..Link::default() };
    for a in attrs(&payload[IFINFOMSG_LEN..]) {
        let v = a.value();
        match a.kind() {
            IFLA_IFNAME => l.name = text_of(v),
            IFLA_MTU => l.mtu = u32_of(v).unwrap_or_default(),
            IFLA_MASTER => l.master = u32_of(v).filter(|m| *m != 0),
            IFLA_IFALIAS => l.alias = Some(text_of(v)).filter(|s| !s.is_empty()),
            IFLA_ADDRESS if v.len() == 6 => l.mac = Some([v[0], v[1], v[2], v[3], v[4], v[5]]),
            IFLA_LINK => l.link = u32_of(v).filter(|i| *i != 0),
            IFLA_GROUP => l.group = u32_of(v).unwrap_or_default(),
            IFLA_AF_SPEC => {
                for x in attrs(v).filter(|f| f.kind() == AF_INET).flat_map(|f| attrs(value(f))) {
                    if x.kind() == IFLA_INET_CONF {
                        let at = usize::from(IPV4_DEVCONF_SEND_REDIRECTS - 1) * 4;
                        l.send_redirects = x.value().get(at..at + 4).and_then(u32_of).map(|v| v != 0);
                    }
                }
                for family in attrs(v).filter(|f| f.kind() == AF_INET6) {
                    for x in attrs(family.value()) {
                        match x.kind() {
                            IFLA_INET6_ADDR_GEN_MODE => l.no_ipv6 = x.value().first() == Some(&IN6_ADDR_GEN_MODE_NONE),
                            IFLA_INET6_CONF => {
                                let at = DEVCONF_DISABLE_IPV6 * 4;
                                l.ipv6_disabled = x.value().get(at..at + 4).and_then(u32_of).map(|v| v != 0);
                            }
                            _ => {}
                        }
                    }
                }
            }
            IFLA_LINKINFO => link_info(v, &mut l),
            _ => {}
        }
    }
    Some(l)
}

/// IFLA_LINKINFO: the kind, for bridges and VXLAN links their data, and for
/// a bridge's port its flags (learning, neigh_suppress).
fn link_info(v: &[u8], l: &mut Link) {
    let mut data = None;
    let mut port_kind = None;
    let mut port_data = None;
    for i in attrs(v) {
        match i.kind() {
            IFLA_INFO_KIND => l.kind = Some(text_of(i.value())),
            IFLA_INFO_DATA => data = Some(value(i)),
            IFLA_INFO_SLAVE_KIND => port_kind = Some(text_of(i.value())),
            IFLA_INFO_SLAVE_DATA => port_data = Some(value(i)),
            _ => {}
        }
    }
    if let (Some("bridge"), Some(pd)) = (port_kind.as_deref(), port_data) {
        let mut f = PortFlags { learning: true, neigh_suppress: false };
        for x in attrs(pd) {
            match x.kind() {
                IFLA_BRPORT_LEARNING => f.learning = x.value().first().is_some_and(|b| *b != 0),
                IFLA_BRPORT_NEIGH_SUPPRESS => f.neigh_suppress = x.value().first().is_some_and(|b| *b != 0),
                _ => {}
            }
        }
        l.port = Some(f);
    }
    let Some(data) = data else { return };
    match l.kind.as_deref() {
        Some("bridge") => {
            let mut b = BridgeSpec { stp: false, forward_delay: 0 };
            for x in attrs(data) {
                match x.kind() {
                    IFLA_BR_STP_STATE => b.stp = u32_of(x.value()).is_some_and(|s| s != 0),
                    IFLA_BR_FORWARD_DELAY => b.forward_delay = u32_of(x.value()).unwrap_or_default(),
                    _ => {}
                }
            }
            l.bridge = Some(b);
        }
        Some("vxlan") => {
            // The kernel always sends IFLA_VXLAN_LEARNING; on by default.
            let mut o = ObservedVxlan { learning: true, ..ObservedVxlan::default() };
            for x in attrs(data) {
                let v = x.value();
                match x.kind() {
                    IFLA_VXLAN_ID => o.vni = u32_of(v).unwrap_or_default(),
                    // The kernel sends only the family it has (group and
                    // local share one).
                    IFLA_VXLAN_GROUP | IFLA_VXLAN_GROUP6 => o.group = ip_of(v, x.kind() == IFLA_VXLAN_GROUP6),
                    IFLA_VXLAN_LINK => o.dev = u32_of(v).filter(|d| *d != 0),
                    IFLA_VXLAN_LOCAL | IFLA_VXLAN_LOCAL6 => o.local = ip_of(v, x.kind() == IFLA_VXLAN_LOCAL6),
                    IFLA_VXLAN_TTL => o.ttl = v.first().copied().unwrap_or_default(),
                    IFLA_VXLAN_LEARNING => o.learning = v.first().is_some_and(|b| *b != 0),
                    IFLA_VXLAN_AGEING => o.ageing = u32_of(v).unwrap_or_default(),
                    // Network byte order, as on the wire.
                    IFLA_VXLAN_PORT => o.port = v.get(..2).map(|p| u16::from_be_bytes([p[0], p[1]])).unwrap_or_default(),
                    _ => {}
                }
            }
            l.vxlan = Some(o);
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_core::Emitable;
    use netlink_packet_route::link::{
        AfSpecInet, AfSpecInet6, AfSpecUnspec, BridgeStpState, In6AddrGenMode, InetDevConf, InfoBridge, InfoBridgePort, InfoData,
        InfoKind, InfoPortData, InfoPortKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, Stats64,
    };

    fn both(m: &LinkMessage) -> (Link, Link) {
        let mut bytes = vec![0; m.buffer_len()];
        m.emit(&mut bytes);
        (super::super::msg::parse_link(m), parse(&bytes).expect("parses"))
    }

    #[test]
    fn agrees_with_the_crate_on_bridges_vxlan_links_and_veths() {
        let mut br = LinkMessage::default();
        br.header.index = 7;
        br.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        br.attributes = vec![
            LinkAttribute::IfName("br-pr".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Group(0x5658_0001),
            LinkAttribute::IfAlias("vxrouter:host-a".into()),
            LinkAttribute::Address(vec![0x52, 0x54, 0, 1, 2, 3]),
            LinkAttribute::Stats64(Stats64::default()),
            LinkAttribute::AfSpecUnspec(vec![
                AfSpecUnspec::Inet(vec![AfSpecInet::DevConf({
                    let mut c = InetDevConf::default();
                    c.forwarding = 1;
                    c.send_redirects = 1;
                    c.rp_filter = 2;
                    c
                })]),
                AfSpecUnspec::Inet6(vec![
                    AfSpecInet6::DevConf({
                        let mut c = netlink_packet_route::link::Inet6DevConf::default();
                        c.disable_ipv6 = 1;
                        c.forwarding = 1;
                        c
                    }),
                    AfSpecInet6::AddrGenMode(In6AddrGenMode::None),
                ]),
            ]),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Bridge),
                LinkInfo::Data(InfoData::Bridge(vec![
                    InfoBridge::ForwardDelay(1500),
                    InfoBridge::HelloTime(200),
                    InfoBridge::StpState(BridgeStpState::KernelStp),
                ])),
            ]),
        ];
        let (a, b) = both(&br);
        assert_eq!(a, b);
        assert!(b.up && b.no_ipv6 && b.group == 0x5658_0001 && b.bridge.as_ref().is_some_and(|x| x.stp));
        assert_eq!(b.ipv6_disabled, Some(true));
        assert_eq!(b.send_redirects, Some(true));

        let mut vx = LinkMessage::default();
        vx.header.index = 8;
        vx.attributes = vec![
            LinkAttribute::IfName("vxlan1070".into()),
            LinkAttribute::Mtu(1450),
            LinkAttribute::Controller(7),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(1070),
                    InfoVxlan::Group(Ipv4Addr::new(239, 1, 1, 1)),
                    InfoVxlan::Link(2),
                    InfoVxlan::Local(Ipv4Addr::new(10, 0, 0, 1)),
                    InfoVxlan::Ttl(16),
                    InfoVxlan::Ageing(300),
                    InfoVxlan::Port(4789),
                    InfoVxlan::Learning(true),
                ])),
            ]),
        ];
        let (a, b) = both(&vx);
        assert_eq!(a, b);
        assert_eq!(b.vxlan.as_ref().map(|v| (v.port, v.vni, v.dev)), Some((4789, 1070, Some(2))));

        // VXLAN over IPv6: the kernel sends GROUP6/LOCAL6 instead.
        vx.attributes[3] = LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(1070),
                InfoVxlan::Group6("ff05::4:46".parse().unwrap()),
                InfoVxlan::Local6("fd00::1".parse().unwrap()),
                InfoVxlan::Port(4789),
            ])),
        ]);
        let (a, b) = both(&vx);
        assert_eq!(a, b);
        let v = b.vxlan.as_ref().unwrap();
        assert_eq!((v.group, v.local), (Some("ff05::4:46".parse().unwrap()), Some("fd00::1".parse().unwrap())));

        let mut veth = LinkMessage::default();
        veth.header.index = 9;
        veth.header.flags = LinkFlags::Loopback;
        veth.attributes = vec![
            LinkAttribute::IfName("rt-br1".into()),
            LinkAttribute::Link(12),
            LinkAttribute::IfAlias(String::new()),
            LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Veth)]),
        ];
        let (a, b) = both(&veth);
        assert_eq!(a, b);
        assert!(b.loopback && b.link == Some(12) && b.alias.is_none() && b.kind.as_deref() == Some("veth"));
    }

    #[test]
    fn agrees_with_the_crate_on_evpn_ports_and_vxlan_learning() {
        // An EVPN segment's VXLAN link: learning off, a bridge port with
        // learning off and neigh_suppress on.
        let mut vx = LinkMessage::default();
        vx.header.index = 10;
        vx.attributes = vec![
            LinkAttribute::IfName("vxlan1070".into()),
            LinkAttribute::Controller(7),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Vxlan),
                LinkInfo::Data(InfoData::Vxlan(vec![
                    InfoVxlan::Id(1070),
                    InfoVxlan::Local(Ipv4Addr::new(10, 0, 0, 1)),
                    InfoVxlan::Learning(false),
                    InfoVxlan::Port(4789),
                ])),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![
                    InfoBridgePort::Priority(32),
                    InfoBridgePort::Learning(false),
                    InfoBridgePort::UnicastFlood(true),
                    InfoBridgePort::NeighSupress(true),
                ])),
            ]),
        ];
        let (a, b) = both(&vx);
        assert_eq!(a, b);
        assert_eq!(b.vxlan.as_ref().map(|v| v.learning), Some(false));
        assert_eq!(b.port, Some(PortFlags { learning: false, neigh_suppress: true }));

        // A plain port: the kernel's defaults (learning on, no suppression).
        let mut leg = LinkMessage::default();
        leg.header.index = 11;
        leg.attributes = vec![
            LinkAttribute::IfName("vm1".into()),
            LinkAttribute::Controller(7),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortKind(InfoPortKind::Bridge),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![
                    InfoBridgePort::Learning(true),
                    InfoBridgePort::NeighSupress(false),
                ])),
            ]),
        ];
        let (a, b) = both(&leg);
        assert_eq!(a, b);
        assert_eq!(b.port, Some(PortFlags { learning: true, neigh_suppress: false }));
    }

    #[test]
    fn short_or_truncated_input_is_no_link_or_a_partial_one() {
        assert!(parse(&[0; 8]).is_none());
        let mut bytes = vec![0; IFINFOMSG_LEN];
        bytes.extend_from_slice(&[200, 0, 3, 0, b'x']); // attribute longer than the buffer
        assert_eq!(parse(&bytes).map(|l| l.name), Some(String::new()));
    }

    /// The request that sets a link's `send_redirects` carries what the
    /// kernel's inet_set_link_af reads: IFLA_AF_SPEC → AF_INET →
    /// IFLA_INET_CONF (nested) → one attribute typed IPV4_DEVCONF_SEND_REDIRECTS
    /// holding the u32 value — 0 included, which the crate's own request
    /// type would leave out.
    #[test]
    fn an_ipv4_setting_request_nests_one_attribute_per_setting() {
        let msg = super::super::msg::set_ipv4_conf(0, "gw-br1", 6, 0);
        let netlink_packet_route::RouteNetlinkMessage::SetLink(m) = msg else { panic!("a SetLink request") };
        let mut bytes = vec![0; m.buffer_len()];
        m.emit(&mut bytes);
        let spec = attrs(&bytes[IFINFOMSG_LEN..]).find(|a| a.kind() == IFLA_AF_SPEC).expect("IFLA_AF_SPEC");
        let inet: Vec<_> = attrs(value(spec)).collect();
        assert_eq!(inet.len(), 1);
        assert_eq!(inet[0].kind(), AF_INET);
        let conf: Vec<_> = attrs(value(inet[0])).collect();
        assert_eq!(conf.len(), 1);
        assert_eq!(conf[0].kind() & 0x3fff, IFLA_INET_CONF);
        let settings: Vec<(u16, Option<u32>)> = attrs(value(conf[0])).map(|x| (x.kind(), u32_of(value(x)))).collect();
        assert_eq!(settings, vec![(IPV4_DEVCONF_SEND_REDIRECTS, Some(0))]);
        let name = attrs(&bytes[IFINFOMSG_LEN..]).find(|a| a.kind() == IFLA_IFNAME).map(|a| text_of(value(a)));
        assert_eq!(name.as_deref(), Some("gw-br1"));
    }
}
