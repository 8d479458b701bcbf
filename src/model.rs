//! The vocabulary shared by desired state, observed state and the plan: what
//! a link, an address or a route is, independent of netlink encoding.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// A network namespace vxrouter works in: the host's own (the one vxrouter
/// runs in) or a named one under /run/netns.
/// Serialised as null (host) or the namespace name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ns {
    Host,
    Named(String),
}

impl Ns {
    pub fn label(&self) -> &str {
        match self {
            Ns::Host => "host",
            Ns::Named(n) => n,
        }
    }
}

impl fmt::Display for Ns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

pub type Mac = [u8; 6];

/// rtm_protocol vxrouter stamps on its routes ('v'), so they are
/// recognisable in `ip route` output as "proto 118".
pub const RTPROT_VXROUTER: u8 = 118;

pub fn fmt_mac(m: &Mac) -> String {
    m.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// "aa:bb:cc:dd:ee:ff" (as [`fmt_mac`] writes it).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A link vxrouter creates and owns (its kind-specific part comes from the
/// link kind's own module under `kinds/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkSpec {
    pub name: String,
    pub kind: LinkKind,
    /// None: not managed (kernel default at creation).
    pub mtu: Option<u32>,
    /// Bridge (in the same namespace) this link is a port of.
    pub master: Option<String>,
    pub up: bool,
    pub mac: Option<Mac>,
    /// IPv6 address generation off: the host gets no link-local address on
    /// the segment, so VMs cannot reach the hypervisor through it.
    pub no_ipv6: bool,
    /// Bridge port flags to keep (None: not managed, kernel defaults).
    #[serde(default)]
    pub port: Option<PortFlags>,
}

/// The bridge port flags vxrouter manages (IFLA_BRPORT_LEARNING,
/// IFLA_BRPORT_NEIGH_SUPPRESS): an EVPN segment's VXLAN port learns nothing
/// (FRR installs remote MACs) and, unless a moving gateway address is on the
/// segment, answers ARP/ND from the bridge's neighbour table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortFlags {
    pub learning: bool,
    pub neigh_suppress: bool,
}

pub fn yes() -> bool {
    true
}

/// The link kinds: one variant per kind module (`kinds/bridge.rs`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum LinkKind {
    Bridge(BridgeSpec),
    Vxlan(VxlanSpec),
    /// The end of a veth pair that creates the pair; `peer` is the other end.
    Veth(VethPeer),
    /// The other end of a pair, created together with its `Veth` end.
    VethPeer {
        peer: String,
    },
    /// The namespace's loopback: not created, only brought up and marked.
    Loopback,
}

impl LinkKind {
    pub fn name(&self) -> &'static str {
        match self {
            LinkKind::Bridge(_) => "bridge",
            LinkKind::Vxlan(_) => "vxlan",
            LinkKind::Veth(_) | LinkKind::VethPeer { .. } => "veth",
            LinkKind::Loopback => "loopback",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSpec {
    pub stp: bool,
    /// Centiseconds, as the kernel stores it.
    pub forward_delay: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSpec {
    pub vni: u32,
    /// Multicast group; None for unicast peers (FDB entries). IPv4 or
    /// IPv6, the family of `local`.
    pub group: Option<IpAddr>,
    /// Underlay device name.
    pub dev: String,
    pub local: IpAddr,
    pub port: u16,
    pub ageing: u32,
    /// 0: kernel default.
    pub ttl: u8,
    /// The profile names `underlay.local`: a link without that local
    /// address is recreated. Otherwise a link with no local address (made by
    /// hand: the kernel picks the source by route) is accepted as it is.
    #[serde(default)]
    pub pin_local: bool,
    /// Learning of remote MACs from received packets (off for EVPN: FRR
    /// installs them).
    #[serde(default = "yes")]
    pub learning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethPeer {
    pub peer: String,
    pub peer_ns: Ns,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND; None for physical NICs and loopback.
    pub kind: Option<String>,
    pub mtu: u32,
    pub master: Option<u32>,
    pub up: bool,
    pub alias: Option<String>,
    pub mac: Option<Mac>,
    /// IFLA_LINK: for a veth, the peer's ifindex (in the peer's namespace).
    pub link: Option<u32>,
    pub no_ipv6: bool,
    /// `net.ipv6.conf.<link>.disable_ipv6`, as the link dump carries it
    /// (IFLA_INET6_CONF): read from there, not from /proc, by the sysctl
    /// kind. None when the dump has no IPv6 data for the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv6_disabled: Option<bool>,
    /// `net.ipv4.conf.<link>.send_redirects`, as the link dump carries it
    /// (IFLA_INET_CONF). None when the dump has no IPv4 data for the link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_redirects: Option<bool>,
    pub bridge: Option<BridgeSpec>,
    pub vxlan: Option<ObservedVxlan>,
    pub loopback: bool,
    /// A bridge port's flags (None: not a bridge port, or not read).
    pub port: Option<PortFlags>,
    /// IFLA_GROUP, the interface group (0: "default"). vxrouter sets one
    /// only on links it is about to delete (see `kinds::link::group`).
    #[serde(skip_serializing_if = "is_zero")]
    pub group: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

/// VXLAN attributes as read back: `dev` is an ifindex here.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ObservedVxlan {
    pub vni: u32,
    pub group: Option<IpAddr>,
    pub dev: Option<u32>,
    pub local: Option<IpAddr>,
    pub port: u16,
    pub ageing: u32,
    pub ttl: u8,
    #[serde(default = "yes")]
    pub learning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addr {
    pub index: u32,
    pub cidr: ipnet::IpNet,
}

/// An all-zero-MAC bridge FDB entry: frames for unknown destinations on the
/// VXLAN link `index` are also sent to `dst` (head-end replication).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    pub index: u32,
    pub dst: IpAddr,
}

/// A unicast route in the main table (IPv4, or IPv6 in router namespaces).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: ipnet::IpNet,
    pub gateway: Option<std::net::IpAddr>,
    pub oif: Option<u32>,
    pub protocol: u8,
}

/// Serde for maps keyed by a pair of strings (iptables table and chain), as
/// a JSON object keyed "first/second".
pub mod pair_keys {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<V: Serialize, S: Serializer>(m: &BTreeMap<(String, String), V>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(m.iter().map(|((a, b), v)| (format!("{a}/{b}"), v)))
    }

    pub fn deserialize<'de, V: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<(String, String), V>, D::Error> {
        let flat = BTreeMap::<String, V>::deserialize(d)?;
        flat.into_iter()
            .map(|(k, v)| match k.split_once('/') {
                Some((a, b)) => Ok(((a.to_string(), b.to_string()), v)),
                None => Err(serde::de::Error::custom(format!("key {k:?} is not \"table/chain\""))),
            })
            .collect()
    }
}

/// An address with what moving it to another link must keep: its flags
/// (IFA_FLAGS: noprefixroute, nodad, …), scope and, for a dynamic address
/// (DHCP, SLAAC), its remaining lifetimes in seconds (None: forever).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAddr {
    pub index: u32,
    pub cidr: ipnet::IpNet,
    #[serde(default)]
    pub flags: u32,
    #[serde(default)]
    pub scope: u8,
    #[serde(default)]
    pub valid: Option<u32>,
    #[serde(default)]
    pub preferred: Option<u32>,
    /// IPv4 only; kept as found (`ip addr add` sets none unless asked).
    #[serde(default)]
    pub broadcast: Option<Ipv4Addr>,
}

/// A main-table unicast route, IPv4 or IPv6, with what re-adding it through
/// another link must keep (metric, scope, preferred source, on-link flag).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRoute {
    pub dst: ipnet::IpNet,
    pub gateway: Option<std::net::IpAddr>,
    pub oif: Option<u32>,
    pub protocol: u8,
    #[serde(default)]
    pub scope: u8,
    /// RTA_PRIORITY; 0 when the kernel sent none (IPv4's default).
    #[serde(default)]
    pub metric: u32,
    #[serde(default)]
    pub prefsrc: Option<std::net::IpAddr>,
    #[serde(default)]
    pub onlink: bool,
}
