//! The host's own addresses and routes on the uplink NIC (the uplink-address
//! rule, docs/operations.md).
//!
//! A NIC that becomes a bridge port stops being an interface of the host:
//! its addresses no longer receive, and routes through it lead nowhere. If
//! the uplink the profile names carries the host's own addresses (IPv4, or
//! IPv6 other than link-local) or main-table routes, enslaving it would cut
//! the host off that network — and the operator's SSH session with it. So:
//!
//! - `uplink_addresses = "refuse"` (default): the plan stops before any
//!   change, naming the addresses and routes, the consequence and the fix;
//! - `uplink_addresses = "move"`: they move to the public bridge in the same
//!   transaction (each step journals its inverse), and on the bridge they are
//!   the host's, not drift (`kinds::address` leaves that bridge alone);
//! - when the uplink is released (destroy, router removed), whatever host
//!   addresses and routes the public bridge carries move back to the uplink
//!   before the bridge goes, so a bridge with the host's addresses is never
//!   deleted with them.
//!
//! Routes the kernel makes from addresses (protocol "kernel": the prefix
//! route, IPv6 fe80::/64) are not moved: they come and go with the address.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::Kind;
use super::ObserveCx;
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::{HostAddr, HostRoute, Ns};
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::{Profile, UplinkAddresses};

/// rtm_protocol of the routes the kernel derives from addresses.
const RTPROT_KERNEL: u8 = 2;

pub struct UplinkAddrs;

/// The router's uplink, its public bridge, and what to do with the host's
/// addresses on the uplink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Policy {
    pub uplink: String,
    pub bridge: String,
    pub mode: UplinkAddresses,
}

/// The host namespace's addresses and main-table routes in full (flags,
/// lifetimes, metrics): what moving them needs and the views do not keep.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HostNet {
    pub addrs: Vec<HostAddr>,
    pub routes: Vec<HostRoute>,
}

/// fe80::/10: the kernel's own on every IPv6 link; never the host's
/// reachable address, never moved.
fn link_local(a: &IpNet) -> bool {
    matches!(a, IpNet::V6(n) if n.addr().segments()[0] & 0xffc0 == 0xfe80)
}

impl HostNet {
    /// The host's own addresses on link `index`, in dump order (IPv4
    /// primaries before their secondaries).
    pub fn addrs_on(&self, index: u32) -> Vec<HostAddr> {
        self.addrs.iter().filter(|a| a.index == index && !link_local(&a.cidr)).cloned().collect()
    }

    /// The main-table routes through link `index` that are not derived
    /// from an address by the kernel.
    pub fn routes_via(&self, index: u32) -> Vec<HostRoute> {
        self.routes.iter().filter(|r| r.oif == Some(index) && r.protocol != RTPROT_KERNEL).cloned().collect()
    }
}

/// The bridge `bridge` holds the host's addresses by the profile's choice
/// ("move"): they are not drift there.
pub fn holds_host_addresses(want: &[Policy], bridge: &str) -> bool {
    want.iter().any(|p| p.bridge == bridge && p.mode == UplinkAddresses::Move)
}

/// "default via 203.0.113.1 metric 100", as `ip route` says it.
pub fn route_text(r: &HostRoute) -> String {
    let mut s = if r.dst.prefix_len() == 0 { "default".to_string() } else { r.dst.trunc().to_string() };
    if let Some(g) = r.gateway {
        s.push_str(&format!(" via {g}"));
    }
    if r.metric != 0 {
        s.push_str(&format!(" metric {}", r.metric));
    }
    s
}

/// The refusal: what the uplink carries, what enslaving it would do, and
/// the two ways out.
pub fn refusal(uplink: &str, bridge: &str, addrs: &[HostAddr], routes: &[HostRoute]) -> String {
    let mut carries = Vec::new();
    if !addrs.is_empty() {
        let list: Vec<String> = addrs.iter().map(|a| a.cidr.to_string()).collect();
        carries.push(format!("address{} {}", if list.len() == 1 { "" } else { "es" }, list.join(", ")));
    }
    if !routes.is_empty() {
        let list: Vec<String> = routes.iter().map(route_text).collect();
        carries.push(format!("route{} {}", if list.len() == 1 { "" } else { "s" }, list.join(", ")));
    }
    format!(
        "uplink {uplink} carries this host's own {}: making it a port of {bridge} would take them out of service and \
         cut the host off that network (a session through {uplink}, such as SSH, would hang). Either set \
         [router.public] uplink_addresses = \"move\" to move them to {bridge} in the same transaction (with \
         rollback), or remove them from {uplink} (or name another uplink) first",
        carries.join(" and ")
    )
}

impl Kind for UplinkAddrs {
    const NAME: &'static str = "uplink_addrs";
    type Item = Policy;
    type Seen = HostNet;

    fn desire(p: &Profile, _f: &Facts) -> Vec<Policy> {
        p.router
            .iter()
            .map(|r| Policy {
                uplink: r.public.uplink.clone(),
                bridge: r.public.leg.bridge.clone(),
                mode: r.public.uplink_addresses,
            })
            .collect()
    }

    /// One address dump and one route dump of the host, only when there is
    /// an uplink wanted or one enslaved before.
    fn observe(cx: &mut ObserveCx<'_>) -> Result<HostNet> {
        if cx.desired.of::<UplinkAddrs>().is_empty() && cx.observed.state.uplinks.is_empty() {
            return Ok(HostNet::default());
        }
        // Only the links `plan` asks about (the bridges of released uplinks,
        // the uplinks to enslave), each a dump the kernel filters: the
        // host's whole address and route tables were most of this kind's
        // time at N = 1000.
        let host = &cx.observed.host;
        let mut links: Vec<u32> = cx.observed.state.uplinks.values().filter_map(|b| host.link(b)).map(|l| l.index).collect();
        links.extend(cx.desired.of::<UplinkAddrs>().iter().filter_map(|w| host.link(&w.uplink)).map(|l| l.index));
        links.sort_unstable();
        links.dedup();
        let sock = cx.session.sock(&Ns::Host)?;
        let mut seen = HostNet::default();
        for index in links {
            seen.addrs.extend(sock.host_addrs_on(index).context("list the host's addresses")?);
            seen.routes.extend(sock.host_routes_via(index).context("list the host's routes")?);
        }
        Ok(seen)
    }

    fn plan(p: &mut Planner<'_>, want: &[Policy], seen: &HostNet) {
        let host = &p.o.host;
        // Back to the uplink, for uplinks released (the uplink kind pushes
        // the release): at the very start of the run, while the uplink is
        // still a port, so that the host's address is never absent — the
        // bridge passes the uplink's frames up until the release.
        for (uplink, bridge) in &p.o.state.uplinks {
            if want.iter().any(|w| &w.uplink == uplink) || holds_host_addresses(want, bridge) {
                continue;
            }
            let Some(br) = host.link(bridge).filter(|b| p.owned(b)) else { continue };
            let (addrs, routes) = (seen.addrs_on(br.index), seen.routes_via(br.index));
            if addrs.is_empty() && routes.is_empty() {
                continue;
            }
            if host.link(uplink).is_none() {
                p.conflict(format!(
                    "{bridge} carries this host's own addresses or routes ({}), and its uplink {uplink} is gone: \
                     deleting {bridge} would take them with it; move them to another link first",
                    describe(&addrs, &routes)
                ));
                continue;
            }
            push_moves(p, Order::StopDaemons, bridge, uplink, addrs, routes);
        }
        // To the bridge, for uplinks about to be enslaved.
        for w in want {
            let Some(nic) = host.link(&w.uplink) else { continue };
            let master = nic.master.and_then(|m| host.by_index(m));
            let enslaved = master.is_some_and(|b| b.name == w.bridge) && !p.replaced.contains(&(Ns::Host, w.bridge.clone()));
            if master.is_some_and(|b| !p.owned(b)) {
                continue; // the uplink kind refuses a foreign master
            }
            let (addrs, routes) = (seen.addrs_on(nic.index), seen.routes_via(nic.index));
            if addrs.is_empty() && routes.is_empty() {
                continue;
            }
            match w.mode {
                // Already a port (addresses added later by hand): enslaving
                // is not what cuts them off, and there is nothing to refuse.
                UplinkAddresses::Refuse if enslaved => {}
                UplinkAddresses::Refuse => p.conflict(refusal(&w.uplink, &w.bridge, &addrs, &routes)),
                // After the enslavement (the uplink kind's step comes first
                // in the same stage): each address is on both links for an
                // instant, and each route is swapped in place.
                UplinkAddresses::Move => push_moves(p, Order::Late, &w.uplink, &w.bridge, addrs, routes),
            }
        }
    }
}

fn describe(addrs: &[HostAddr], routes: &[HostRoute]) -> String {
    addrs.iter().map(|a| a.cidr.to_string()).chain(routes.iter().map(route_text)).collect::<Vec<_>>().join(", ")
}

/// One step per address, then one per route. The order keeps the host
/// reachable throughout, and its rollback exact: each address is added to
/// `to`, each route is swapped onto `to` in place, and only then are the
/// addresses removed from `from` (by the last route's step; by each
/// address's own step when there are no routes) — removing an address
/// makes the kernel drop the routes through its subnet, so removing it
/// earlier would lose the routes for a moment and, on undo, re-adding a
/// route through a link without the address fails ("invalid gateway").
fn push_moves(p: &mut Planner<'_>, order: Order, from: &str, to: &str, addrs: Vec<HostAddr>, routes: Vec<HostRoute>) {
    let release_now = routes.is_empty();
    for addr in addrs.clone() {
        p.push(order, MoveAddress { addr, from: from.to_string(), to: to.to_string(), release_now });
    }
    let last = routes.len().saturating_sub(1);
    for (i, route) in routes.into_iter().enumerate() {
        let release = if i == last { addrs.clone() } else { vec![] };
        p.push(order, MoveRoute { route, from: from.to_string(), to: to.to_string(), release });
    }
}

/// Adds `a` to `link`; false when it was there already.
fn add(cx: &mut Apply<'_>, link: &str, a: &HostAddr) -> Result<bool> {
    let index = cx.resolve(&Ns::Host, link)?;
    cx.sock(&Ns::Host)?.add_host_addr(index, a).with_context(|| format!("add address {} to {link}", a.cidr))
}

/// Removes `a` from `link`; false when it was not there.
fn remove(cx: &mut Apply<'_>, link: &str, a: &HostAddr) -> Result<bool> {
    let index = cx.resolve(&Ns::Host, link)?;
    cx.sock(&Ns::Host)?.del_addr(index, a.cidr).with_context(|| format!("remove address {} from {link}", a.cidr))
}

/// Removes the moved addresses from `from`, each journaled (undo adds it
/// back, before the routes go back through `from`).
fn release(cx: &mut Apply<'_>, addrs: &[HostAddr], from: &str, to: &str) -> Result<()> {
    for a in addrs {
        let removed = remove(cx, from, a).with_context(|| format!("move address {} from {from} to {to}", a.cidr))?;
        if removed {
            cx.undo_with(AddBack { addr: a.clone(), link: from.to_string() });
        }
    }
    Ok(())
}

/// `r` through `link`.
fn via(cx: &mut Apply<'_>, r: &HostRoute, link: &str) -> Result<HostRoute> {
    Ok(HostRoute { oif: Some(cx.resolve(&Ns::Host, link)?), ..r.clone() })
}

/// Moves one of the host's addresses from `from` to `to`: added there
/// (flags, scope, broadcast and lifetimes kept); removed from `from` once
/// the routes are on `to` (see `push_moves`), so the host holds it
/// throughout.
#[derive(Debug, Serialize)]
pub struct MoveAddress {
    pub addr: HostAddr,
    pub from: String,
    pub to: String,
    /// No route moves after it: this step removes it from `from` itself.
    #[serde(skip)]
    pub release_now: bool,
}

impl Step for MoveAddress {
    fn action(&self) -> &'static str {
        "move_address"
    }
    fn verb(&self) -> Verb {
        Verb::Change
    }
    fn object(&self) -> String {
        format!("host address {} on {}", self.addr.cidr, self.from)
    }
    fn detail(&self) -> String {
        format!("move to {} (the uplink-address rule)", self.to)
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let what = || format!("move address {} from {} to {}", self.addr.cidr, self.from, self.to);
        if add(cx, &self.to, &self.addr).with_context(what)? {
            cx.undo_with(TakeOff { addr: self.addr.clone(), link: self.to.clone() });
        }
        if self.addr.cidr.addr().is_ipv4() {
            // Neighbours learn the address's new MAC (the bridge's) at once.
            cx.announce(&Ns::Host, &self.to);
        }
        if self.release_now {
            release(cx, std::slice::from_ref(&self.addr), &self.from, &self.to)?;
        }
        Ok(())
    }
}

/// Undo: removes an address a move added.
#[derive(Debug)]
struct TakeOff {
    addr: HostAddr,
    link: String,
}

impl Undo for TakeOff {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        remove(cx, &self.link, &self.addr).with_context(|| format!("undo the move of address {}", self.addr.cidr)).map(drop)
    }
}

/// Undo: puts an address a move removed back where it was.
#[derive(Debug)]
struct AddBack {
    addr: HostAddr,
    link: String,
}

impl Undo for AddBack {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        add(cx, &self.link, &self.addr).with_context(|| format!("put address {} back on {}", self.addr.cidr, self.link)).map(drop)
    }
}

/// Moves one of the host's routes from `from` to `to`: replaced in place
/// (same destination, gateway, metric, protocol, scope, source), so lookups
/// never find it missing; a copy left on `from` is removed.
#[derive(Debug, Serialize)]
pub struct MoveRoute {
    pub route: HostRoute,
    pub from: String,
    pub to: String,
    /// The last route's step removes the moved addresses from `from`.
    #[serde(skip)]
    pub release: Vec<HostAddr>,
}

impl Step for MoveRoute {
    fn action(&self) -> &'static str {
        "move_route"
    }
    fn verb(&self) -> Verb {
        Verb::Change
    }
    fn object(&self) -> String {
        format!("host route {} dev {}", route_text(&self.route), self.from)
    }
    fn detail(&self) -> String {
        format!("move to {} (the uplink-address rule)", self.to)
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let what = || format!("move route {} from {} to {}", route_text(&self.route), self.from, self.to);
        let old = via(cx, &self.route, &self.from).with_context(what)?;
        let new = via(cx, &self.route, &self.to).with_context(what)?;
        cx.sock(&Ns::Host)?.replace_host_route(&new).with_context(what)?;
        cx.undo_with(PutRouteBack { old: old.clone(), new });
        // NLM_F_REPLACE swapped the first route with this destination and
        // metric; one through `from` may remain (an older duplicate).
        cx.sock(&Ns::Host)?.del_host_route(&old).with_context(what)?;
        release(cx, &self.release, &self.from, &self.to)
    }
}

/// Undo: the route back through `from` (whose addresses are back by then).
#[derive(Debug)]
struct PutRouteBack {
    old: HostRoute,
    new: HostRoute,
}

impl Undo for PutRouteBack {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        let what = || format!("move route {} back", route_text(&self.old));
        let sock = cx.sock(&Ns::Host)?;
        sock.replace_host_route(&self.old).with_context(what)?;
        sock.del_host_route(&self.new).with_context(what).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desired::Desired;
    use crate::kinds::uplink::{Uplink, Uplinks};
    use crate::model::Link;
    use crate::observe::Observed;
    use crate::plan::{PlanOptions, plan};

    const MARK: &str = "vxrouter:host-a";

    fn addr(index: u32, cidr: &str) -> HostAddr {
        HostAddr { index, cidr: cidr.parse().unwrap(), flags: 0x80, scope: 0, valid: None, preferred: None, broadcast: None }
    }

    fn route(dst: &str, gw: Option<&str>, oif: u32, protocol: u8) -> HostRoute {
        HostRoute {
            dst: dst.parse().unwrap(),
            gateway: gw.map(|g| g.parse().unwrap()),
            oif: Some(oif),
            protocol,
            scope: 0,
            metric: 0,
            prefsrc: None,
            onlink: false,
        }
    }

    fn link(index: u32, name: &str, master: Option<u32>, owned: bool) -> Link {
        Link { index, name: name.into(), master, alias: owned.then(|| MARK.to_string()), up: true, ..Link::default() }
    }

    /// eth1 (2) carrying 203.0.113.50/24, link-local, a kernel prefix route
    /// and a default route; br-pu (3) owned, empty.
    fn host_net() -> HostNet {
        HostNet {
            addrs: vec![addr(2, "203.0.113.50/24"), addr(2, "fe80::1/64"), addr(2, "2001:db8::5/64")],
            routes: vec![
                route("203.0.113.0/24", None, 2, RTPROT_KERNEL),
                route("0.0.0.0/0", Some("203.0.113.1"), 2, 3),
                route("198.51.100.0/24", Some("203.0.113.1"), 1, 3),
            ],
        }
    }

    fn run(mode: Option<UplinkAddresses>, links: Vec<Link>, seen: HostNet, state_uplinks: bool) -> Result<Vec<String>, String> {
        let mut d = Desired::nothing("host-a", MARK);
        if let Some(mode) = mode {
            d.parts.insert::<UplinkAddrs, _>(vec![Policy { uplink: "eth1".into(), bridge: "br-pu".into(), mode }]);
            d.parts.insert::<Uplinks, _>(vec![Uplink { uplink: "eth1".into(), bridge: "br-pu".into() }]);
        }
        let mut o = Observed::default();
        o.host.links = links;
        o.parts.insert::<UplinkAddrs, _>(seen);
        if state_uplinks {
            o.state.uplinks.insert("eth1".into(), "br-pu".into());
        }
        plan(&d, &o, PlanOptions::default())
            .map(|p| {
                p.steps
                    .iter()
                    .filter(|s| s.action().starts_with("move_") || s.action() == "enslave" || s.action() == "release")
                    .map(|s| s.line())
                    .collect()
            })
            .map_err(|c| c.to_string())
    }

    fn fresh() -> Vec<Link> {
        vec![link(1, "eth0", None, false), link(2, "eth1", None, false), link(3, "br-pu", None, true)]
    }

    #[test]
    fn refuses_naming_addresses_routes_and_the_fix() {
        let e = run(Some(UplinkAddresses::Refuse), fresh(), host_net(), false).unwrap_err();
        assert!(e.contains("uplink eth1 carries this host's own addresses 203.0.113.50/24, 2001:db8::5/64"), "{e}");
        assert!(e.contains("route default via 203.0.113.1"), "{e}");
        assert!(!e.contains("fe80") && !e.contains("198.51.100.0/24") && !e.contains("203.0.113.0/24"), "{e}");
        assert!(e.contains("uplink_addresses = \"move\"") && e.contains("SSH"), "{e}");
    }

    #[test]
    fn an_uplink_without_host_addresses_is_enslaved_as_before() {
        let mut seen = host_net();
        seen.addrs.retain(|a| link_local(&a.cidr));
        seen.routes.retain(|r| r.protocol == RTPROT_KERNEL || r.oif != Some(2));
        let steps = run(Some(UplinkAddresses::Refuse), fresh(), seen, false).unwrap();
        assert_eq!(steps, vec!["change uplink eth1 in br-pu: master br-pu (found none)"]);
    }

    #[test]
    fn move_enslaves_then_moves_addresses_then_routes() {
        let steps = run(Some(UplinkAddresses::Move), fresh(), host_net(), false).unwrap();
        assert_eq!(
            steps,
            vec![
                "change uplink eth1 in br-pu: master br-pu (found none)",
                "change host address 203.0.113.50/24 on eth1: move to br-pu (the uplink-address rule)",
                "change host address 2001:db8::5/64 on eth1: move to br-pu (the uplink-address rule)",
                "change host route default via 203.0.113.1 dev eth1: move to br-pu (the uplink-address rule)",
            ]
        );
    }

    #[test]
    fn moved_addresses_on_the_bridge_are_not_drift() {
        let links = vec![link(1, "eth0", None, false), link(2, "eth1", Some(3), false), link(3, "br-pu", None, true)];
        let seen =
            HostNet { addrs: vec![addr(3, "203.0.113.50/24")], routes: vec![route("0.0.0.0/0", Some("203.0.113.1"), 3, 3)] };
        assert_eq!(run(Some(UplinkAddresses::Move), links, seen, true).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn releasing_moves_them_back_first() {
        let links = vec![link(1, "eth0", None, false), link(2, "eth1", Some(3), false), link(3, "br-pu", None, true)];
        let seen = HostNet {
            addrs: vec![addr(3, "203.0.113.50/24")],
            routes: vec![route("203.0.113.0/24", None, 3, RTPROT_KERNEL), route("0.0.0.0/0", Some("203.0.113.1"), 3, 3)],
        };
        let steps = run(None, links, seen, true).unwrap();
        assert_eq!(
            steps,
            vec![
                "change host address 203.0.113.50/24 on br-pu: move to eth1 (the uplink-address rule)",
                "change host route default via 203.0.113.1 dev br-pu: move to eth1 (the uplink-address rule)",
                "remove uplink eth1 in br-pu",
            ]
        );
    }

    #[test]
    fn a_bridge_with_host_addresses_and_no_uplink_is_not_deleted() {
        let links = vec![link(1, "eth0", None, false), link(3, "br-pu", None, true)];
        let seen = HostNet { addrs: vec![addr(3, "203.0.113.50/24")], routes: vec![] };
        let e = run(None, links, seen, true).unwrap_err();
        assert!(e.contains("br-pu carries this host's own addresses or routes (203.0.113.50/24)"), "{e}");
    }
}
