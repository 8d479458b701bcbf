//! Typed rtnetlink operations: what the rest of vxrouter asks of the kernel,
//! in its own vocabulary (`model.rs`). Request flags, and which errors mean
//! "already so" rather than failure, are decided here and nowhere else.

use std::net::IpAddr;
use std::os::fd::RawFd;

use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;

use super::msg;
use super::socket::{Netlink, NlError};
use crate::model::{Addr, BridgeSpec, FdbEntry, HostAddr, HostRoute, Link, LinkSpec, Mac, PortFlags, Route};
use ipnet::IpNet;

/// A link to act on: by index (known), or by name (just created, or only
/// known by name).
#[derive(Debug, Clone, Copy)]
pub enum LinkRef<'a> {
    Index(u32),
    Name(&'a str),
}

/// A per-link IPv4 setting that [`Netlink::set_ipv4_conf`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Conf {
    SendRedirects,
}

impl Ipv4Conf {
    /// Its name under `net/ipv4/conf/<link>/`.
    pub fn from_name(name: &str) -> Option<Ipv4Conf> {
        match name {
            "send_redirects" => Some(Ipv4Conf::SendRedirects),
            _ => None,
        }
    }

    /// IPV4_DEVCONF_* (include/uapi/linux/ip.h).
    fn id(self) -> u16 {
        match self {
            Ipv4Conf::SendRedirects => super::linkdump::IPV4_DEVCONF_SEND_REDIRECTS,
        }
    }
}

impl LinkRef<'_> {
    fn parts(&self) -> (u32, &str) {
        match self {
            LinkRef::Index(i) => (*i, ""),
            LinkRef::Name(n) => (0, n),
        }
    }
}

/// What creating a link needs besides its specification.
#[derive(Debug, Default)]
pub struct CreateCtx {
    /// The bridge it becomes a port of.
    pub master: Option<u32>,
    /// The underlay device of a VXLAN link.
    pub vxlan_dev: Option<u32>,
    /// The namespace of a veth's peer (an open nsfs fd); None: the same.
    pub peer_ns: Option<RawFd>,
    /// The namespace the link itself goes to (an open nsfs fd), when the
    /// request is sent from another: a VXLAN link in a router namespace is
    /// created from the host, so its socket stays on the host's underlay.
    pub ns: Option<RawFd>,
    /// The veth's other end.
    pub peer: Option<LinkSpec>,
    /// Ask for these ifindexes (restoring a deleted link as it was).
    pub index: Option<u32>,
    pub peer_index: Option<u32>,
}

/// Attributes of an existing link to change; `None` leaves one as it is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SetLink {
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    /// Some(0) releases the link from its master.
    pub master: Option<u32>,
    pub up: Option<bool>,
    pub mac: Option<Mac>,
    /// IPv6 address generation off (true) or EUI-64 (false).
    pub no_ipv6: Option<bool>,
    pub bridge: Option<BridgeSpec>,
    pub vxlan_group: Option<IpAddr>,
    pub vxlan_ageing: Option<u32>,
    pub vxlan_ttl: Option<u8>,
    pub vxlan_learning: Option<bool>,
    /// The interface group (IFLA_GROUP).
    pub group: Option<u32>,
}

/// What to do when an address to add is already there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfExists {
    Fail,
    Replace,
    Keep,
}

impl Netlink {
    /// Every link of the namespace, in one dump.
    pub fn links(&mut self) -> Result<Vec<Link>, NlError> {
        self.dump_raw(msg::get_links(), libc::RTM_NEWLINK, super::linkdump::parse)
    }

    /// One link by name; None when there is none.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>, NlError> {
        match self.request(msg::get_link(name), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(msg::parse_link(l)),
                _ => None,
            })),
            Err(e) if e.is(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every address (IPv4 and IPv6) of the namespace, in one dump.
    pub fn addrs(&mut self) -> Result<Vec<Addr>, NlError> {
        self.dump(msg::get_addresses(), |m| match m {
            RouteNetlinkMessage::NewAddress(a) => msg::parse_addr(&a),
            _ => None,
        })
    }

    /// The main table's IPv4 unicast routes, in one dump.
    /// Main-table unicast routes of one family, in one dump.
    pub fn routes(&mut self, v6: bool) -> Result<Vec<Route>, NlError> {
        self.dump(msg::get_routes(v6), |m| match m {
            RouteNetlinkMessage::NewRoute(r) => msg::parse_route(&r),
            _ => None,
        })
    }

    /// The all-zero-MAC bridge FDB entries (head-end replication peers).
    pub fn fdb(&mut self) -> Result<Vec<FdbEntry>, NlError> {
        self.dump(msg::get_fdb(), |m| match m {
            RouteNetlinkMessage::NewNeighbour(n) => msg::parse_fdb(&n),
            _ => None,
        })
    }

    /// Creates a link (with `ctx.peer`, a veth pair); fails if the name is taken.
    pub fn create_link(&mut self, spec: &LinkSpec, ctx: &CreateCtx) -> Result<(), NlError> {
        self.request(msg::create(spec, ctx), NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    /// A bridge that floods multicast like a dumb switch (no snooping).
    pub fn create_switch(&mut self, name: &str) -> Result<(), NlError> {
        self.request(msg::create_switch(name), NLM_F_CREATE | NLM_F_EXCL).map(drop)
    }

    pub fn set_link(&mut self, link: LinkRef<'_>, change: &SetLink) -> Result<(), NlError> {
        let (index, name) = link.parts();
        self.request(msg::set_link(index, name, change), 0).map(drop)
    }

    /// Sets `net.ipv4.conf.<link>.<setting>` with one request on the
    /// namespace's socket, where writing /proc/sys would need a thread that
    /// enters the namespace (~0.18 ms a write at N = 1000 legs).
    pub fn set_ipv4_conf(&mut self, link: LinkRef<'_>, setting: Ipv4Conf, value: u32) -> Result<(), NlError> {
        let (index, name) = link.parts();
        self.request(msg::set_ipv4_conf(index, name, setting.id(), value), 0).map(drop)
    }

    /// Sets a bridge port's learning and neighbour-suppression flags.
    pub fn set_port(&mut self, link: LinkRef<'_>, flags: PortFlags) -> Result<(), NlError> {
        let (index, name) = link.parts();
        self.request(msg::set_port(index, name, flags), 0).map(drop)
    }

    /// Deletes a link; false when it was already gone.
    pub fn delete_link(&mut self, link: LinkRef<'_>) -> Result<bool, NlError> {
        let (index, name) = link.parts();
        match self.request(msg::del_link(index, name), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Puts a link into interface group `group`.
    pub fn set_group(&mut self, link: LinkRef<'_>, group: u32) -> Result<(), NlError> {
        let (index, name) = link.parts();
        self.request(msg::set_group(index, name, group), 0).map(drop)
    }

    /// Deletes every link of the namespace in interface group `group` in one
    /// batched unregistration; false when no link was in it.
    pub fn delete_group(&mut self, group: u32) -> Result<bool, NlError> {
        match self.request(msg::del_group(group), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ENODEV) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn add_addr(&mut self, index: u32, cidr: impl Into<IpNet>, if_exists: IfExists) -> Result<(), NlError> {
        let cidr = cidr.into();
        let flags = match if_exists {
            IfExists::Replace => NLM_F_CREATE | NLM_F_REPLACE,
            IfExists::Fail | IfExists::Keep => NLM_F_CREATE | NLM_F_EXCL,
        };
        match self.request(msg::add_addr(index, cidr), flags) {
            Err(e) if if_exists == IfExists::Keep && e.is(libc::EEXIST) => Ok(()),
            r => r.map(drop),
        }
    }

    /// Removes an address; false when it was not there.
    pub fn del_addr(&mut self, index: u32, cidr: impl Into<IpNet>) -> Result<bool, NlError> {
        let cidr = cidr.into();
        match self.request(msg::del_addr(index, cidr), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::EADDRNOTAVAIL) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds a route, replacing one to the same destination.
    pub fn replace_route(&mut self, r: &Route) -> Result<(), NlError> {
        self.request(msg::new_route(r), NLM_F_CREATE | NLM_F_REPLACE).map(drop)
    }

    /// Removes a route; false when it was not there.
    pub fn del_route(&mut self, r: &Route) -> Result<bool, NlError> {
        match self.request(msg::del_route(r), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds a head-end replication entry beside the link's others (they all
    /// share the all-zero MAC, hence append).
    pub fn append_fdb(&mut self, e: FdbEntry) -> Result<(), NlError> {
        self.request(msg::add_fdb(e), NLM_F_CREATE | NLM_F_APPEND).map(drop)
    }

    /// Removes an entry; false when it was not there.
    pub fn del_fdb(&mut self, e: FdbEntry) -> Result<bool, NlError> {
        match self.request(msg::del_fdb(e), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
    /// Every address with its flags and lifetimes, in one dump.
    pub fn host_addrs(&mut self) -> Result<Vec<HostAddr>, NlError> {
        self.dump(msg::get_addresses(), |m| match m {
            RouteNetlinkMessage::NewAddress(a) => msg::parse_host_addr(&a),
            _ => None,
        })
    }

    /// The main table's unicast routes of both families, with metrics, in
    /// one dump.
    pub fn host_routes(&mut self) -> Result<Vec<HostRoute>, NlError> {
        self.dump(msg::get_all_routes(), |m| match m {
            RouteNetlinkMessage::NewRoute(r) => msg::parse_host_route(&r),
            _ => None,
        })
    }

    /// The addresses of link `index`, with flags and lifetimes (filtered by
    /// the kernel where it checks dump requests strictly, and here anyway).
    pub fn host_addrs_on(&mut self, index: u32) -> Result<Vec<HostAddr>, NlError> {
        self.dump(msg::get_addresses_of(index), |m| match m {
            RouteNetlinkMessage::NewAddress(a) => msg::parse_host_addr(&a).filter(|a| a.index == index),
            _ => None,
        })
    }

    /// The main table's unicast routes of both families through link
    /// `oif` (filtered by the kernel where it can, and here anyway).
    pub fn host_routes_via(&mut self, oif: u32) -> Result<Vec<HostRoute>, NlError> {
        self.dump(msg::get_all_routes_via(oif), |m| match m {
            RouteNetlinkMessage::NewRoute(r) => msg::parse_host_route(&r).filter(|r| r.oif == Some(oif)),
            _ => None,
        })
    }

    /// Adds `a` (its flags, scope and lifetimes) to link `index`; false
    /// when the link already has that address (nothing was added).
    pub fn add_host_addr(&mut self, index: u32, a: &HostAddr) -> Result<bool, NlError> {
        match self.request(msg::add_host_addr(index, a), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::EEXIST) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds a route, replacing the one with the same destination and metric
    /// (so a route moves to another device without a moment without it).
    pub fn replace_host_route(&mut self, r: &HostRoute) -> Result<(), NlError> {
        self.request(msg::new_host_route(r), NLM_F_CREATE | NLM_F_REPLACE).map(drop)
    }

    /// Removes a route; false when it was not there.
    pub fn del_host_route(&mut self, r: &HostRoute) -> Result<bool, NlError> {
        match self.request(msg::del_host_route(r), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is(libc::ESRCH) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
