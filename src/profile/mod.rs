//! Per-host profiles: the TOML contract, parsed and validated into [`Profile`].
//!
//! Nothing here touches the kernel. Checks that need the host (does the
//! underlay device exist, what is its MTU) live in `preflight`.

pub mod cidr;
pub mod error;
pub mod names;
mod raw;
mod validate;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;

use serde::Serialize;

pub use cidr::Ipv4Cidr;
pub use error::{ProfileError, ProfileErrors};

/// IANA's VXLAN port; the kernel's default (8472) predates the assignment.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;
/// The same over IPv6: its header is 20 bytes longer (40).
pub const VXLAN6_OVERHEAD: u32 = 70;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    /// Path the profile was read from, for messages.
    pub source: String,
    pub host: String,
    pub underlay: Option<Underlay>,
    pub segments: Vec<Segment>,
    pub router: Option<Router>,
    /// `[evpn]`: BGP EVPN through FRR (kinds/frr.rs).
    pub evpn: Option<Evpn>,
    /// The text it was parsed from: the messages that need the host (so
    /// come after validation) locate their keys in it, not in the file as
    /// it may be by then.
    #[serde(skip)]
    pub text: String,
}

/// The BGP EVPN control plane: every host peers (iBGP) with the route
/// reflectors only; a reflector accepts clients from `listen` (dynamic
/// neighbours), so a new host needs no change elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evpn {
    pub asn: u32,
    /// The reflectors' underlay addresses (this host's own is skipped).
    pub reflectors: Vec<Ipv4Addr>,
    pub reflector: bool,
    /// On a reflector: the underlay range clients connect from.
    pub listen: Option<Ipv4Cidr>,
    /// On a reflector: clients `check` expects to see established (a dead
    /// client silently leaves the reflector's summary).
    pub expect_clients: Vec<Ipv4Addr>,
    /// BGP hold time, seconds; keepalives every third of it.
    pub hold_time: u16,
}

/// More dynamic neighbours than FRR's default of 100 (FRR refuses the
/// 101st silently).
pub const EVPN_LISTEN_LIMIT: u32 = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Underlay {
    pub device: String,
    /// The VXLAN source address; an IPv6 one makes every segment's VXLAN
    /// run over IPv6 (None: the device's first IPv4 address).
    pub local: Option<IpAddr>,
    /// When set, VXLAN packets are accepted on the device only from these
    /// sources (an owned chain on the host firewall drops the rest); of the
    /// underlay's family.
    pub allow: Option<Vec<IpNet>>,
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
    /// EVPN segments only: the VXLAN port answers ARP/ND from the bridge's
    /// neighbour table (off where a router's gateway address can move).
    pub neigh_suppress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flood {
    /// Flood-and-learn through a multicast group.
    Multicast(IpAddr),
    /// Head-end replication to these underlay addresses (all-zero FDB
    /// entries), for underlays without multicast.
    Unicast(Vec<IpAddr>),
    /// BGP EVPN (FRR): remote MACs and flood lists come from BGP.
    Evpn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Router {
    pub namespace: String,
    pub nat: Nat,
    /// How the private IPv6 prefixes leave (default: routed, no NAT).
    pub nat6: Nat6,
    /// Which tool writes the rules (default: auto).
    pub firewall: FirewallChoice,
    /// Forward between this router's private segments (default: no).
    pub route_between_segments: bool,
    pub public: Public,
    pub private: Vec<Leg>,
    pub forwards: Vec<Forward>,
    /// `[router.ha]`: this router is one of two (kinds/ha_*.rs).
    pub ha: Option<Ha>,
}

/// Router high availability: VRRPv3 (keepalived) between this router and
/// its peer over a VXLAN HA link on the underlay, connection state synced by
/// conntrackd. The active router holds the public and gateway addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ha {
    pub vrid: u8,
    /// 1-254; the higher one holds the addresses while both are healthy.
    pub priority: u8,
    /// The other router host's underlay address (the underlay's family).
    pub peer: IpAddr,
    /// VRRP advert interval in centiseconds (VRRPv3's unit).
    pub advert_centis: u32,
    /// Seconds a higher-priority router waits after it starts before it
    /// takes over (its connection table is synced meanwhile).
    pub preempt_delay: u32,
    pub conntrack_sync: bool,
    pub track_uplink: bool,
    /// The HA link's VNI and name (in the router namespace).
    pub vni: u32,
    pub link: String,
}

/// The default VNI of the HA link: the top of the VNI space, one per VRID,
/// away from the low numbers segments use.
pub fn default_ha_vni(vrid: u8) -> u32 {
    0xFF_FF00 | u32::from(vrid)
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

/// `[router] nat6`: IPv6 is routed by default (upstream routes the
/// segments' prefixes to the router's public IPv6 address, as Neutron does);
/// `masquerade` is NAT66 to the public IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Nat6 {
    #[default]
    None,
    Masquerade,
}

/// A port forward: DNAT of `proto`/`port` on the public address to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    pub proto: Proto,
    pub port: u16,
    pub to: Ipv4Addr,
    pub to_port: u16,
    /// The same service's IPv6 address and port (`to6 = "[ADDR]:PORT"`),
    /// on a leg with an `address6`.
    pub to6: Option<(Ipv6Addr, u16)>,
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
    /// The upstream IPv6 gateway (with `leg.address6`): an address of the
    /// public prefix or a link-local one.
    pub gateway6: Option<std::net::Ipv6Addr>,
    /// What to do with the host's own addresses and routes on the uplink
    /// when it is enslaved (default: refuse).
    pub uplink_addresses: UplinkAddresses,
}

/// `[router.public] uplink_addresses`: an uplink that carries the host's
/// own addresses or routes (the NIC an SSH session may use) would lose them
/// as a bridge port. `Refuse` stops the plan, naming them; `Move` moves them
/// to the public bridge in the same transaction (as Proxmox's vmbr0 carries
/// the host address) and back when the bridge goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkAddresses {
    #[default]
    Refuse,
    Move,
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
    /// The leg's IPv6 address with its prefix: the public address, or the
    /// VMs' gateway, announced with router advertisements (SLAAC, /64).
    pub address6: Option<ipnet::Ipv6Net>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dhcp {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    /// As dnsmasq takes it: "12h", "45m", "3600", "infinite".
    pub lease: String,
}

impl Underlay {
    /// Whether the segments' VXLAN runs over IPv6 (an IPv6 `local`).
    pub fn ipv6(&self) -> bool {
        matches!(self.local, Some(IpAddr::V6(_)))
    }

    /// VXLAN's encapsulation overhead on this underlay.
    pub fn overhead(&self) -> u32 {
        if self.ipv6() { VXLAN6_OVERHEAD } else { VXLAN_OVERHEAD }
    }
}

impl Profile {
    /// Reads and validates a profile file. Every problem found is reported,
    /// each with its file, line:column and key. The file must be a regular
    /// file of at most [`MAX_PROFILE_BYTES`] (see [`read_profile`]).
    pub fn load(path: &Path) -> Result<Profile, ProfileErrors> {
        let file = path.display().to_string();
        let bytes = read_profile(path).map_err(|reason| ProfileErrors(vec![error::file_error(&file, reason)]))?;
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

impl Profile {
    /// "file:line:column" of `key` in the table `[table]` as the text that
    /// was validated writes it, for the errors and warnings that need the
    /// host and so come after validation (the parsed profile keeps no
    /// positions). The file alone when the key is not written that way (a
    /// dotted key).
    pub fn key_location(&self, table: &str, key: &str) -> String {
        locate_key(&self.text, table, key).map(|(l, c)| format!("{}:{l}:{c}", self.source)).unwrap_or_else(|| self.source.clone())
    }
}

/// Line and column (from 1) of `key = …` under the header `[table]` (or
/// `[[table]]`, the first one).
fn locate_key(text: &str, table: &str, key: &str) -> Option<(usize, usize)> {
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim_start();
        if let Some(h) = t.strip_prefix('[') {
            current = h.trim_start_matches('[').split(']').next().unwrap_or("").trim().to_string();
            continue;
        }
        if current == table
            && let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let column = line[..line.len() - t.len()].chars().count() + 1;
            return Some((n + 1, column));
        }
    }
    None
}

/// The largest profile `Profile::load` reads. Real profiles are a few kB; a
/// cap keeps a mistaken path (`/dev/zero`, a log file) from being read until
/// memory runs out.
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// The bytes of a profile file, or why not (the reason for the error).
///
/// Only a regular file is read: a FIFO would block the command until some
/// writer comes along, and a device may never end. The path is checked with
/// `stat` before it is opened, so nothing else is even opened (opening some
/// devices has effects). It is opened non-blocking, so a FIFO put there
/// after the check cannot block the open (nor a read), and the check is
/// repeated with `fstat` on the opened file, which is what is actually
/// read. At most `MAX_PROFILE_BYTES + 1` bytes are read whatever the size
/// said, so a file that grows meanwhile is refused rather than read without
/// end.
fn read_profile(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let cannot = |e: std::io::Error| format!("cannot read profile: {e}");
    let regular = |meta: &std::fs::Metadata| -> Result<(), String> {
        let ft = meta.file_type();
        if ft.is_file() {
            return Ok(());
        }
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO (named pipe)"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_block_device() {
            "a block device"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        Err(format!("cannot read profile: it is {what}; a profile must be a regular file"))
    };
    let too_big =
        |size: u64| format!("cannot read profile: it is {size} bytes; a profile may have at most {MAX_PROFILE_BYTES} (1 MiB)");

    regular(&std::fs::metadata(path).map_err(cannot)?)?;
    let file =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY).open(path).map_err(cannot)?;
    let meta = file.metadata().map_err(cannot)?;
    regular(&meta)?;
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(too_big(meta.len()));
    }
    // O_NONBLOCK stays on: it changes nothing for files on disk, and the
    // pseudo-files that are "regular" but wait for data (/proc/kmsg,
    // tracefs's trace_pipe) then fail with EAGAIN instead of blocking.
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_PROFILE_BYTES + 1).read_to_end(&mut bytes).map_err(|e| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            "cannot read profile: it waits for data to be written (like /proc/kmsg); a profile must be a file on disk".to_string()
        } else {
            cannot(e)
        }
    })?;
    if bytes.len() as u64 > MAX_PROFILE_BYTES {
        return Err(format!(
            "cannot read profile: it grew past {MAX_PROFILE_BYTES} bytes while being read; a profile may have at most \
             {MAX_PROFILE_BYTES} (1 MiB)"
        ));
    }
    Ok(bytes)
}

/// "vxrouter:<host>", stored as the interface alias (IFLA_IFALIAS).
pub fn owner_mark(host: &str) -> String {
    format!("vxrouter:{host}")
}

#[cfg(test)]
mod locate_tests {
    #[test]
    fn finds_a_key_under_its_table() {
        let text = "[host]\nname = \"a\"\n\n[underlay]\ndevice = \"eth0\"\n  local = \"10.0.0.9\"\n[[segment]]\nlocal = 1\n";
        assert_eq!(super::locate_key(text, "underlay", "local"), Some((6, 3)));
        assert_eq!(super::locate_key(text, "underlay", "device"), Some((5, 1)));
        assert_eq!(super::locate_key(text, "segment", "local"), Some((8, 1)));
        assert_eq!(super::locate_key(text, "router.public", "address"), None);
        assert_eq!(super::locate_key("[underlay]\nlocalx = 1\n", "underlay", "local"), None);
    }
}
