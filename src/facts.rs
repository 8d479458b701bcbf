//! What the host says that the profile leaves open: read once, before
//! anything is derived, so that deriving the desired state stays pure.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Result};
use crate::model::Ns;
use crate::observe::NsView;
use crate::profile::Profile;

pub const IGMP_MAX_SYSCTL: &str = "net/ipv4/igmp_max_memberships";
/// Bounds a socket's IPv6 multicast memberships (see `preflight`).
pub const OPTMEM_MAX_SYSCTL: &str = "net/core/optmem_max";
pub const IP_FORWARD_SYSCTL: &str = "net/ipv4/ip_forward";
/// Present only when br_netfilter is loaded.
pub const BRIDGE_NF_SYSCTL: &str = "net/bridge/bridge-nf-call-iptables";

/// The host's sysctls that preflight looks at.
const HOST_SYSCTLS: &[&str] = &[IP_FORWARD_SYSCTL, IGMP_MAX_SYSCTL, OPTMEM_MAX_SYSCTL, BRIDGE_NF_SYSCTL];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    /// The profile's underlay device as found here (None: no underlay, or
    /// the device is missing — preflight says so).
    pub underlay: Option<UnderlayFacts>,
    /// The `nft` tool is installed: `firewall = "auto"` means nftables.
    pub nft: bool,
    /// Where vxrouter keeps its files (/run/vxrouter).
    pub run_dir: PathBuf,
    /// Host sysctls under /proc/sys that preflight checks.
    pub sysctls: BTreeMap<String, String>,
    /// Programs the profile needs that are not on PATH (empty: all there).
    pub missing_tools: Vec<String>,
    /// What is wrong with FRR for `[evpn]` (read only when it is wanted).
    pub frr_problems: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnderlayFacts {
    pub mtu: u32,
    /// First IPv4 address of the underlay device, if any.
    pub address: Option<Ipv4Addr>,
}

impl Facts {
    /// The facts for `p`, given the host's view and its sysctls.
    pub fn of(p: &Profile, host: &NsView, sysctls: BTreeMap<String, String>, nft: bool, run_dir: PathBuf) -> Facts {
        let underlay = p
            .underlay
            .as_ref()
            .and_then(|u| host.link(&u.device))
            .map(|dev| UnderlayFacts { mtu: dev.mtu, address: host.addrs_of(dev.index).find_map(|a| v4(a.cidr.addr())) });
        Facts { underlay, nft, run_dir, sysctls, missing_tools: Vec::new(), frr_problems: Vec::new() }
    }
}

/// The programs a profile makes vxrouter run: dnsmasq for DHCP or DNS on a
/// leg, and the chosen firewall backend's tools.
pub fn tools_needed(p: &Profile, nft: bool) -> Vec<&'static str> {
    let mut out = Vec::new();
    let Some(r) = &p.router else { return out };
    if r.private.iter().any(|l| l.dhcp.is_some() || l.dns) {
        out.push("dnsmasq");
    }
    if let Some(ha) = &r.ha {
        out.push("keepalived");
        if ha.conntrack_sync {
            out.push("conntrackd");
        }
    }
    match crate::firewall::resolve(r.firewall, nft) {
        crate::firewall::Backend::Nftables => out.push("nft"),
        crate::firewall::Backend::Iptables => {
            out.extend(["iptables-restore", "iptables-save", "ip6tables-restore", "ip6tables-save"])
        }
    }
    out
}

fn v4(a: std::net::IpAddr) -> Option<Ipv4Addr> {
    match a {
        std::net::IpAddr::V4(a) => Some(a),
        std::net::IpAddr::V6(_) => None,
    }
}

/// Reads the facts from this host.
pub fn read(p: &Profile, host: &NsView) -> Result<Facts> {
    let sysctls = crate::kinds::sysctl::read(None, HOST_SYSCTLS).with_context(|| format!("read sysctls in {}", Ns::Host))?;
    let nft = crate::firewall::nft::available();
    let mut f = Facts::of(p, host, sysctls, nft, crate::state::run_dir());
    f.missing_tools = tools_needed(p, nft).into_iter().filter(|t| !crate::firewall::in_path(t)).map(String::from).collect();
    if p.evpn.is_some() {
        f.frr_problems = crate::kinds::frr::preflight();
    }
    Ok(f)
}
