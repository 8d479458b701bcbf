//! The kernel's current state, read with one dump per object kind per
//! namespace (never a request per object), through one socket per namespace.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsFd;

use anyhow::{Context, Result, anyhow};
use netlink_packet_route::RouteNetlinkMessage;

use crate::firewall::{self, Backend, FirewallState};
use crate::model::{Addr, Link, Ns, Route};
use crate::netlink::{Netlink, msg};
use crate::netns;
use crate::state::State;

/// Open sockets (and namespace handles) for every namespace a run touches.
pub struct Session {
    host: Netlink,
    named: BTreeMap<String, (File, Netlink)>,
}

impl Session {
    pub fn new() -> Result<Session> {
        Ok(Session { host: Netlink::open().context("open netlink socket")?, named: BTreeMap::new() })
    }

    /// Opens a named namespace if it exists; false when it does not.
    pub fn attach(&mut self, name: &str) -> Result<bool> {
        if self.named.contains_key(name) {
            return Ok(true);
        }
        let Some(file) = netns::open(name)? else { return Ok(false) };
        if !netns::is_namespace(&file) {
            return Ok(false);
        }
        let sock = Netlink::open_in(file.as_fd()).with_context(|| format!("open netlink socket in namespace {name}"))?;
        self.named.insert(name.to_string(), (file, sock));
        Ok(true)
    }

    pub fn detach(&mut self, name: &str) {
        self.named.remove(name);
    }

    pub fn sock(&mut self, ns: &Ns) -> Result<&mut Netlink> {
        match ns {
            Ns::Host => Ok(&mut self.host),
            Ns::Named(n) => self.named.get_mut(n).map(|(_, s)| s).ok_or_else(|| anyhow!("namespace {n} is not open")),
        }
    }

    /// The nsfs handle of a named namespace; None for the host.
    pub fn file(&self, ns: &Ns) -> Result<Option<&File>> {
        match ns {
            Ns::Host => Ok(None),
            Ns::Named(n) => self.named.get(n).map(|(f, _)| Some(f)).ok_or_else(|| anyhow!("namespace {n} is not open")),
        }
    }
}

/// One namespace as the kernel shows it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct NsView {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    /// Sysctls under /proc/sys/net that were asked for.
    pub sysctls: BTreeMap<String, String>,
    pub firewall: Option<FirewallState>,
    /// All-zero-MAC FDB entries: (VXLAN link index, remote).
    pub fdb: Vec<(u32, std::net::Ipv4Addr)>,
}

impl NsView {
    pub fn link(&self, name: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.name == name)
    }
    pub fn by_index(&self, index: u32) -> Option<&Link> {
        self.links.iter().find(|l| l.index == index)
    }
    pub fn addrs_of(&self, index: u32) -> impl Iterator<Item = &Addr> {
        self.addrs.iter().filter(move |a| a.index == index)
    }
    /// The namespace's loopback carries the owner mark of a router namespace.
    pub fn loopback_mark(&self) -> Option<&str> {
        self.links.iter().find(|l| l.loopback).and_then(|l| l.alias.as_deref())
    }
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Observed {
    pub host: NsView,
    /// Named namespaces that exist and were looked into.
    pub named: BTreeMap<String, NsView>,
    /// Every name under /run/netns.
    pub netns: BTreeSet<String>,
    /// Names of ours under /run/netns with no namespace behind them (a run
    /// was killed while creating it).
    pub stale_netns: BTreeSet<String>,
    /// dnsmasq instances this host's vxrouter started.
    pub dhcp: Vec<crate::dhcp::Running>,
    pub state: State,
}

impl Observed {
    pub fn view(&self, ns: &Ns) -> Option<&NsView> {
        match ns {
            Ns::Host => Some(&self.host),
            Ns::Named(n) => self.named.get(n),
        }
    }
}

/// What to read besides links, addresses and routes (the bridge FDB is
/// read apart, by `read_fdb`, only where unicast peers are involved).
pub struct Wants<'a> {
    pub sysctls: &'a [&'a str],
    /// Firewall backends to read.
    pub firewall: &'a [Backend],
}

/// Every link of the socket's namespace, in one dump.
pub fn read_links(sock: &mut Netlink) -> Result<Vec<Link>, crate::netlink::NlError> {
    let mut links = Vec::new();
    sock.dump_map(
        msg::get_links(),
        |m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(msg::parse_link(&l)),
            _ => None,
        },
        &mut links,
    )?;
    Ok(links)
}

/// Every IPv4 address of the socket's namespace, in one dump.
pub fn read_addrs(sock: &mut Netlink) -> Result<Vec<Addr>, crate::netlink::NlError> {
    let mut addrs = Vec::new();
    sock.dump_map(
        msg::get_addresses(),
        |m| match m {
            RouteNetlinkMessage::NewAddress(a) => msg::parse_addr(&a),
            _ => None,
        },
        &mut addrs,
    )?;
    Ok(addrs)
}

/// The bridge FDB entries of a namespace (head-end replication peers).
pub fn read_fdb(session: &mut Session, ns: &Ns) -> Result<Vec<(u32, std::net::Ipv4Addr)>> {
    let mut fdb = Vec::new();
    session
        .sock(ns)?
        .dump_map(
            msg::get_fdb(),
            |m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => msg::parse_fdb(&n),
                _ => None,
            },
            &mut fdb,
        )
        .with_context(|| format!("list bridge FDB in {ns}"))?;
    Ok(fdb)
}

pub fn read_ns(session: &mut Session, ns: &Ns, wants: &Wants<'_>) -> Result<NsView> {
    let sock = session.sock(ns)?;
    let mut view = NsView {
        links: read_links(sock).with_context(|| format!("list links in {ns}"))?,
        addrs: read_addrs(sock).with_context(|| format!("list addresses in {ns}"))?,
        ..NsView::default()
    };
    sock.dump_map(
        msg::get_routes(),
        |m| match m {
            RouteNetlinkMessage::NewRoute(r) => msg::parse_route(&r),
            _ => None,
        },
        &mut view.routes,
    )
    .with_context(|| format!("list routes in {ns}"))?;
    let file = session.file(ns)?;
    view.sysctls = read_sysctls(file, wants.sysctls).with_context(|| format!("read sysctls in {ns}"))?;
    if !wants.firewall.is_empty() {
        view.firewall = Some(read_firewall(file, &format!("namespace {ns}"), wants.firewall)?);
    }
    Ok(view)
}

/// Reads a namespace's firewall through the given backends.
pub fn read_firewall(ns: Option<&File>, where_: &str, backends: &[Backend]) -> Result<FirewallState> {
    let mut st = FirewallState::default();
    if backends.contains(&Backend::Iptables) {
        st.ipt = Some(firewall::iptables::observe(ns, where_)?);
    }
    if backends.contains(&Backend::Nftables) {
        st.nft = Some(firewall::nft::observe(ns, where_)?);
    }
    Ok(st)
}

/// Reads `/proc/sys/net/<key>` as seen from the namespace.
pub fn read_sysctls(ns: Option<&File>, keys: &[&str]) -> Result<BTreeMap<String, String>> {
    let read = || -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for k in keys {
            let path = format!("/proc/sys/{k}");
            match std::fs::read_to_string(&path) {
                Ok(v) => {
                    out.insert(k.to_string(), v.trim().to_string());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("read {path}")),
            }
        }
        Ok(out)
    };
    netns::within(ns, read)?
}

pub fn write_sysctl(ns: Option<&File>, key: &str, value: &str) -> Result<()> {
    crate::testhooks::point();
    let write = || -> Result<()> {
        let path = format!("/proc/sys/{key}");
        std::fs::write(&path, value).with_context(|| format!("write {value} to {path}"))
    };
    netns::within(ns, write)?
}
