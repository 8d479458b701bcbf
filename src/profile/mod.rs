//! Per-host profiles: the TOML contract, parsed and validated into [`Profile`].
//!
//! Nothing here touches the kernel. Checks that need the host (does the
//! underlay device exist, what is its MTU) live in `preflight`.

pub mod cidr;
pub mod error;
pub mod names;
mod raw;
mod validate;

use std::net::Ipv4Addr;
use std::path::Path;

use serde::Serialize;

pub use cidr::Ipv4Cidr;
pub use error::{ProfileError, ProfileErrors};

/// IANA's VXLAN port; the kernel's default (8472) predates the assignment.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// Path the profile was read from, for messages.
    pub source: String,
    pub host: String,
    pub underlay: Option<Underlay>,
    pub segments: Vec<Segment>,
    pub router: Option<Router>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Underlay {
    pub device: String,
    pub local: Option<Ipv4Addr>,
    /// When set, VXLAN packets are accepted on the device only from these
    /// sources (an owned chain on the host firewall drops the rest).
    pub allow: Option<Vec<Ipv4Cidr>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Segment {
    pub bridge: String,
    pub vni: u32,
    pub flood: Flood,
    pub vxlan: String,
    /// FDB ageing of the VXLAN link, seconds (kernel default 300).
    pub ageing: u32,
    pub port: u16,
    /// None: derived from the underlay MTU at apply time.
    pub mtu: Option<u32>,
    /// None: kernel default (1 for multicast, inherit for unicast).
    pub ttl: Option<u8>,
    pub stp: bool,
    /// Seconds; None: kernel default (15).
    pub forward_delay: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flood {
    /// Flood-and-learn through a multicast group.
    Multicast(Ipv4Addr),
    /// Head-end replication to these underlay addresses (all-zero FDB
    /// entries), for underlays without multicast.
    Unicast(Vec<Ipv4Addr>),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Router {
    pub namespace: String,
    pub nat: Nat,
    /// Which tool writes the rules (default: auto).
    pub firewall: FirewallChoice,
    /// Forward between this router's private segments (default: no).
    pub route_between_segments: bool,
    pub public: Public,
    pub private: Vec<Leg>,
    pub forwards: Vec<Forward>,
}

/// `[router] firewall`: auto picks nftables when the `nft` tool is there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FirewallChoice {
    Auto,
    Nftables,
    Iptables,
}

/// How private subnets leave through the public leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Nat {
    /// SNAT to the fixed public address (default).
    Snat,
    /// MASQUERADE: follows the public leg's address if it changes.
    Masquerade,
    /// No address translation (routed setups).
    None,
}

/// A port forward: DNAT of `proto`/`port` on the public address to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    pub proto: Proto,
    pub port: u16,
    pub to: Ipv4Addr,
    pub to_port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Public {
    pub leg: Leg,
    /// The physical NIC enslaved to the public bridge (never modified else).
    pub uplink: String,
    /// The upstream default gateway.
    pub gateway: Ipv4Addr,
}

/// A veth pair between a bridge on the host and the router namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Leg {
    pub bridge: String,
    /// Address of the namespace end, with the prefix of its network.
    pub address: Ipv4Cidr,
    /// [bridge end, namespace end].
    pub veth: [String; 2],
    /// DHCP for the segment's VMs (private legs only).
    pub dhcp: Option<Dhcp>,
    /// A DNS forwarder on the gateway address (private legs only).
    pub dns: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dhcp {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// As dnsmasq takes it: "12h", "45m", "3600", "infinite".
    pub lease: String,
}

impl Profile {
    /// Reads and validates a profile file. Every problem found is reported,
    /// each with its file, line:column and key.
    pub fn load(path: &Path) -> Result<Profile, ProfileErrors> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ProfileErrors(vec![error::Locator::new("").error(&file, 0..0, "", format!("cannot read profile: {e}"))])
        })?;
        Self::parse_bytes(&file, &bytes)
    }

    /// Parses and validates profile text; `file` is used in messages only.
    pub fn parse_bytes(file: &str, bytes: &[u8]) -> Result<Profile, ProfileErrors> {
        validate::parse(file, bytes)
    }

    pub fn parse(file: &str, text: &str) -> Result<Profile, ProfileErrors> {
        validate::parse(file, text.as_bytes())
    }

    /// The ownership mark written on everything this profile creates.
    pub fn owner_mark(&self) -> String {
        owner_mark(&self.host)
    }
}

/// "vxrouter:<host>", stored as the interface alias (IFLA_IFALIAS).
pub fn owner_mark(host: &str) -> String {
    format!("vxrouter:{host}")
}
