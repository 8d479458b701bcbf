//! Links: what every link kind shares. The kinds (`bridge`, `vxlan`,
//! `veth`, `loopback`) say what they want and what about them differs or
//! forces a recreate; this module compares the common attributes (owner
//! mark, MTU, master, MAC, IPv6 address generation, state), removes owned
//! links the profile no longer names, and creates, changes, deletes and
//! restores links.
//!
//! Every link vxrouter creates carries the owner mark `vxrouter:<host>` as
//! its alias (IFLA_IFALIAS). The kernel ignores IFLA_IFALIAS at creation, so
//! the mark is set by the first RTM_SETLINK after it.

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Kind, bridge, ha_link, loopback, veth, vxlan};
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::{BridgeSpec, Link, LinkKind, LinkSpec, Ns, PortFlags, Route, fmt_mac};
use crate::netlink::{CreateCtx, IfExists, LinkRef, SetLink};
use crate::observe::Observed;
use crate::plan::{Diff, Order, Planner, Step, Verb, in_ns};
use crate::profile::Profile;

mod group;
pub use group::{MIN_BATCH, delete_all};

/// rtm_protocol of routes the kernel adds for an address's subnet.
const RTPROT_KERNEL: u8 = 2;

pub struct Links;

impl Kind for Links {
    const NAME: &'static str = "links";
    type Item = (Ns, LinkSpec);
    type Seen = ();

    /// In creation order: bridges, VXLAN links (ports of the bridges), the
    /// router namespace's loopback, then the legs.
    fn desire(p: &Profile, f: &Facts) -> Vec<(Ns, LinkSpec)> {
        let mut out = Vec::new();
        bridge::desire(p, f, &mut out);
        vxlan::desire(p, f, &mut out);
        loopback::desire(p, f, &mut out);
        veth::desire(p, f, &mut out);
        ha_link::desire(p, f, &mut out);
        out
    }

    fn plan(p: &mut Planner<'_>, want: &[(Ns, LinkSpec)], _: &()) {
        wanted(p, want);
        extra(p);
    }
}

/// In-place changes to an existing link; `None` fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LinkChange {
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    /// Some(None) releases from the master.
    pub master: Option<Option<String>>,
    pub up: Option<bool>,
    pub mac: Option<[u8; 6]>,
    pub no_ipv6: Option<bool>,
    pub bridge: Option<BridgeSpec>,
    pub vxlan_group: Option<std::net::IpAddr>,
    pub vxlan_ageing: Option<u32>,
    pub vxlan_ttl: Option<u8>,
    pub vxlan_learning: Option<bool>,
    /// Bridge port flags (set after the master).
    pub port: Option<PortFlags>,
    /// Back to the default group: a transient group left by a removal that
    /// was interrupted (see `group`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<u32>,
}

fn master_name(p: &Planner<'_>, ns: &Ns, l: &Link) -> Option<String> {
    let v = p.view(ns)?;
    l.master.and_then(|m| v.by_index(m)).map(|b| b.name.clone())
}

/// Every wanted link: created, recreated, changed, or left alone.
fn wanted(p: &mut Planner<'_>, want: &[(Ns, LinkSpec)]) {
    let d = p.d;
    for (ns, spec) in want {
        if let LinkKind::VethPeer { .. } = spec.kind {
            continue; // handled with its Veth end
        }
        let peer = match &spec.kind {
            LinkKind::Veth(v) => d.link(&v.peer_ns, &v.peer).map(|s| (v.peer_ns.clone(), s.clone())),
            _ => None,
        };
        let Some(found) = p.view(ns).and_then(|v| v.link(&spec.name)) else {
            if spec.kind == LinkKind::Loopback {
                change(p, ns, spec, &loopback::fresh());
                continue;
            }
            let replace = peer.as_ref().map(|pr| veth::stale_peer(p, pr)).unwrap_or_default();
            p.push(Order::Create, CreateLink { ns: ns.clone(), spec: spec.clone(), peer, replace, reason: None });
            continue;
        };
        if !p.owned(found) && !p.adoptable(ns, found) && spec.kind != LinkKind::Loopback {
            let at = match ns {
                Ns::Host => String::new(),
                Ns::Named(n) => format!(" in namespace {n}"),
            };
            p.conflict(format!(
                "{} {} exists{at} but is not owned by vxrouter for {} (alias: {}); rename it in the profile or remove it",
                found.kind.as_deref().unwrap_or("link"),
                spec.name,
                d.host,
                found.alias.as_deref().unwrap_or("none")
            ));
            continue;
        }
        if let Some(reason) = recreate_reason(p, spec, found, &peer) {
            p.replaced.insert((ns.clone(), spec.name.clone()));
            let mut replace = vec![(ns.clone(), spec.name.clone())];
            replace.extend(peer.as_ref().map(|pr| veth::stale_peer(p, pr)).unwrap_or_default());
            p.push(Order::Create, CreateLink { ns: ns.clone(), spec: spec.clone(), peer, replace, reason: Some(reason) });
            continue;
        }
        change(p, ns, spec, found);
        if let Some((pns, pspec)) = &peer
            && let Some(pfound) = p.view(pns).and_then(|v| v.link(&pspec.name))
        {
            change(p, pns, pspec, pfound);
        }
    }
}

/// The MAC a link should have: vxrouter's stable one, unless the link was
/// adopted with its own (kept, and recorded in the state file). Adopting
/// keeps the MAC because a new one on a router leg leaves every VM's ARP
/// entry for the gateway pointing at a MAC that no longer exists until it
/// is refreshed: replies would be lost, which adopting must not cause.
fn wanted_mac(p: &mut Planner<'_>, ns: &Ns, spec: &LinkSpec, found: &Link) -> Option<[u8; 6]> {
    if spec.kind == LinkKind::Loopback {
        return spec.mac;
    }
    let key = format!("{}/{}", crate::state::fw_key(ns), spec.name);
    let kept = p.o.state.kept_macs.get(&key).and_then(|m| crate::model::parse_mac(m));
    let adopting = p.opts.adopt && found.alias.is_none();
    let mac = match (kept, adopting) {
        (_, true) => found.mac,
        (Some(k), false) => Some(k),
        (None, false) => None,
    };
    match mac {
        Some(m) if spec.mac != Some(m) => {
            p.kept_macs.insert(key, fmt_mac(&m));
            Some(m)
        }
        _ => spec.mac,
    }
}

/// Immutable attributes differ: the link has to be deleted and created again.
fn recreate_reason(p: &Planner<'_>, spec: &LinkSpec, found: &Link, peer: &Option<(Ns, LinkSpec)>) -> Option<String> {
    let kind = spec.kind.name();
    if spec.kind != LinkKind::Loopback && found.kind.as_deref() != Some(kind) {
        return Some(format!("kind {kind} (found {})", found.kind.as_deref().unwrap_or("none")));
    }
    match &spec.kind {
        LinkKind::Vxlan(v) => vxlan::recreate_reason(v, found, p.o),
        LinkKind::Veth(_) => veth::recreate_reason(p, found, peer.as_ref()?),
        _ => None,
    }
}

/// The attributes of an existing link that differ from the wanted ones.
fn change(p: &mut Planner<'_>, ns: &Ns, spec: &LinkSpec, found: &Link) {
    let mark = p.d.mark.clone();
    let mut c = LinkChange::default();
    let mut diffs = Vec::new();
    let mut diff = |field: &'static str, expected: String, found: String| diffs.push(Diff { field, expected, found });
    if found.alias.as_deref() != Some(mark.as_str()) {
        c.alias = Some(mark.clone());
        diff("alias", mark, found.alias.clone().unwrap_or("none".into()));
    }
    if let Some(mtu) = spec.mtu
        && mtu != found.mtu
    {
        c.mtu = Some(mtu);
        diff("mtu", mtu.to_string(), found.mtu.to_string());
    }
    let old_master = master_name(p, ns, found);
    if spec.kind != LinkKind::Loopback && spec.master != old_master {
        c.master = Some(spec.master.clone());
        diff("master", spec.master.clone().unwrap_or("none".into()), old_master.clone().unwrap_or("none".into()));
    } else if let Some(m) = &spec.master
        && p.replaced.contains(&(ns.clone(), m.clone()))
    {
        // A master that is being recreated has a new index: re-enslave.
        c.master = Some(spec.master.clone());
        diff("master", m.clone(), format!("{m} (being recreated)"));
    }
    if let Some(mac) = wanted_mac(p, ns, spec, found)
        && found.mac != Some(mac)
    {
        c.mac = Some(mac);
        diff("mac", fmt_mac(&mac), found.mac.map(|m| fmt_mac(&m)).unwrap_or("none".into()));
    }
    if spec.no_ipv6 && !found.no_ipv6 {
        c.no_ipv6 = Some(true);
        diff("addrgenmode", "none".into(), "eui64".into());
    }
    if group::is_transient(found.group) {
        c.group = Some(0);
        diff("group", "default".into(), format!("{} (left by an interrupted removal)", found.group));
    }
    match &spec.kind {
        LinkKind::Bridge(b) => bridge::diff(b, found, &mut c, &mut diffs),
        LinkKind::Vxlan(v) => vxlan::diff(v, found, &mut c, &mut diffs),
        _ => {}
    }
    // Port flags: compared as found; a link that changes master starts
    // over with the kernel's defaults, so they are set again.
    if let Some(w) = spec.port {
        let f = found.port;
        if c.master.is_some()
            || f.map(|f| f.learning) != Some(w.learning)
            || f.map(|f| f.neigh_suppress) != Some(w.neigh_suppress)
        {
            c.port = Some(w);
        }
        let show = |b: Option<bool>| b.map(|b| if b { "on" } else { "off" }).unwrap_or("none").to_string();
        if f.map(|f| f.learning) != Some(w.learning) {
            diffs.push(Diff { field: "port learning", expected: show(Some(w.learning)), found: show(f.map(|f| f.learning)) });
        }
        if f.map(|f| f.neigh_suppress) != Some(w.neigh_suppress) {
            diffs.push(Diff {
                field: "neigh_suppress",
                expected: show(Some(w.neigh_suppress)),
                found: show(f.map(|f| f.neigh_suppress)),
            });
        }
    }
    // State last: a group change is applied with a down/up flap.
    if spec.up != found.up {
        c.up = Some(spec.up);
        diffs.push(Diff { field: "state", expected: up_down(spec.up), found: up_down(found.up) });
    }
    if !diffs.is_empty() {
        let found_values = inverse(&c, found, &old_master);
        p.push(
            Order::Create,
            ChangeLink {
                ns: ns.clone(),
                name: spec.name.clone(),
                kind: spec.kind.name(),
                change: c,
                found: found_values,
                diffs,
                leg: *ns != Ns::Host && !found.loopback,
            },
        );
    }
}

/// The values `found` has for the attributes `c` changes: the change that
/// puts them back.
fn inverse(c: &LinkChange, old: &Link, old_master: &Option<String>) -> LinkChange {
    let ov = old.vxlan.clone().unwrap_or_default();
    LinkChange {
        alias: c.alias.as_ref().map(|_| old.alias.clone().unwrap_or_default()),
        mtu: c.mtu.map(|_| old.mtu),
        master: c.master.as_ref().map(|_| old_master.clone()),
        up: c.up.map(|_| old.up).or(c.vxlan_group.map(|_| old.up)),
        mac: c.mac.and(old.mac),
        no_ipv6: c.no_ipv6.map(|_| old.no_ipv6),
        bridge: c.bridge.as_ref().and(old.bridge.clone()),
        vxlan_group: c.vxlan_group.and(ov.group),
        vxlan_ageing: c.vxlan_ageing.map(|_| ov.ageing),
        vxlan_ttl: c.vxlan_ttl.map(|_| ov.ttl),
        vxlan_learning: c.vxlan_learning.map(|_| ov.learning),
        port: c.port.and(old.port),
        group: c.group.map(|_| old.group),
    }
}

/// Owned links the profile no longer names.
fn extra(p: &mut Planner<'_>) {
    let mut namespaces = vec![Ns::Host];
    if let Some(r) = p.d.router_ns()
        && !p.fresh_ns.contains(r)
    {
        namespaces.push(Ns::Named(r.to_string()));
    }
    namespaces.extend(p.kept_ns.iter().map(|n| Ns::Named(n.clone())));
    let mut gone: BTreeSet<(Ns, u32)> = BTreeSet::new();
    for ns in namespaces.clone() {
        let Some(view) = p.view(&ns) else { continue };
        for l in &view.links {
            // Never `adoptable`: adopting takes only what the profile names.
            let ours = p.owned(l) || p.interrupted(&ns, l);
            if ns == Ns::Host && p.dies_with_ns.contains(&l.index) {
                continue;
            }
            if !ours || l.loopback || p.d.link(&ns, &l.name).is_some() || gone.contains(&(ns.clone(), l.index)) {
                continue;
            }
            let is_bridge = l.kind.as_deref() == Some("bridge");
            if is_bridge && !p.opts.force {
                let uplinks: Vec<&String> = p.o.state.uplinks.keys().collect();
                let foreign: Vec<&str> = view
                    .links
                    .iter()
                    .filter(|port| {
                        port.master == Some(l.index)
                            && !p.owned(port)
                            && !p.interrupted(&ns, port)
                            && !uplinks.contains(&&port.name)
                    })
                    .map(|port| port.name.as_str())
                    .collect();
                if !foreign.is_empty() {
                    p.note(format!(
                        "kept bridge {}: ports vxrouter did not create are still attached ({}); detach them (VM taps?) and run again, or destroy --force to delete the bridge and release them",
                        l.name,
                        foreign.join(", ")
                    ));
                    continue;
                }
            }
            // A veth's other end disappears with it.
            if l.kind.as_deref() == Some("veth")
                && let Some(peer) = l.link
            {
                for other in namespaces.iter().filter(|o| **o != ns) {
                    gone.insert((other.clone(), peer));
                }
            }
            let order = if is_bridge { Order::RemoveBridges } else { Order::RemovePorts };
            p.push(order, DeleteLink { ns: ns.clone(), name: l.name.clone(), kind: l.kind.clone().unwrap_or("link".into()) });
        }
    }
}

fn up_down(b: bool) -> String {
    if b { "up".into() } else { "down".into() }
}

// ---- snapshots: a link as it was, to put it back -------------------------

/// A link as it was before the run deleted it: enough to put it back (its
/// veth peer included, with addresses and routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub ns: Ns,
    pub link: Link,
    pub master: Option<String>,
    pub addrs: Vec<ipnet::IpNet>,
    /// Routes through the link other than those the kernel derives from
    /// addresses.
    pub routes: Vec<Route>,
    pub peer: Option<Box<Snapshot>>,
    /// Its per-link sysctls (`sysctl::PER_LINK`), read right before the
    /// deletion: the kernel forgets them with the link.
    pub sysctls: Vec<(String, String)>,
}

/// What it takes to put `l` (in `ns`, as observed in `o`) back.
pub fn snapshot(o: &Observed, ns: &Ns, l: &Link) -> Snapshot {
    let one = |ns: &Ns, l: &Link| {
        let v = o.view(ns);
        Snapshot {
            ns: ns.clone(),
            link: l.clone(),
            master: l.master.and_then(|m| v.and_then(|v| v.by_index(m))).map(|b| b.name.clone()),
            addrs: v.map(|v| v.addrs_of(l.index).map(|a| a.cidr).collect()).unwrap_or_default(),
            routes: v
                .map(|v| v.routes.iter().filter(|r| r.oif == Some(l.index) && r.protocol != RTPROT_KERNEL).cloned().collect())
                .unwrap_or_default(),
            peer: None,
            sysctls: Vec::new(),
        }
    };
    let mut s = one(ns, l);
    if l.kind.as_deref() == Some("veth")
        && let Some(pi) = l.link
    {
        let mut spaces = vec![Ns::Host];
        spaces.extend(o.named.keys().map(|n| Ns::Named(n.clone())));
        for pns in spaces.into_iter().filter(|x| x != ns) {
            if let Some(peer) = o.view(&pns).and_then(|v| v.by_index(pi)).filter(|x| x.link == Some(l.index)) {
                s.peer = Some(Box::new(one(&pns, peer)));
                break;
            }
        }
    }
    s
}

// ---- steps ----------------------------------------------------------------

/// Create a link (a veth pair when `spec` is a `Veth` end, `peer` being the
/// other end). `replace` lists owned links to delete first; with a `reason`
/// this is a recreate.
#[derive(Debug, Serialize)]
pub struct CreateLink {
    pub ns: Ns,
    pub spec: LinkSpec,
    pub peer: Option<(Ns, LinkSpec)>,
    pub replace: Vec<(Ns, String)>,
    pub reason: Option<String>,
}

impl Step for CreateLink {
    fn action(&self) -> &'static str {
        "create_link"
    }
    fn verb(&self) -> Verb {
        if self.reason.is_some() { Verb::Recreate } else { Verb::Create }
    }
    fn object(&self) -> String {
        format!("{} {}{}", self.spec.kind.name(), self.spec.name, in_ns(&self.ns))
    }
    fn detail(&self) -> String {
        let spec = &self.spec;
        let mut parts = Vec::new();
        parts.extend(self.reason.clone());
        match &spec.kind {
            LinkKind::Vxlan(v) => parts.push(vxlan::describe(v)),
            LinkKind::Bridge(b) => parts.extend(bridge::describe(b)),
            _ => {}
        }
        if let Some((pns, peer)) = &self.peer {
            parts.push(format!("peer {} in {pns}", peer.name));
        }
        if let Some(m) = &spec.master {
            parts.push(format!("master {m}"));
        }
        if let Some(mtu) = spec.mtu {
            parts.push(format!("mtu {mtu}"));
        }
        parts.join(", ")
    }
    fn creates(&self) -> (Vec<(Ns, String)>, Vec<String>) {
        let mut links = vec![(self.ns.clone(), self.spec.name.clone())];
        links.extend(self.peer.iter().map(|(pns, ps)| (pns.clone(), ps.name.clone())));
        (links, vec![])
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        for (rns, rname) in &self.replace {
            // A recreated link comes back as it was if the run fails.
            let restore = (*rns == self.ns && *rname == self.spec.name)
                .then(|| cx.link_before(rns, rname).map(|l| snapshot(cx.before, rns, l)))
                .flatten();
            delete(cx, rns, rname, restore)?;
        }
        create(cx, &self.ns, &self.spec, self.peer.as_ref())
    }
}

#[derive(Debug, Serialize)]
pub struct DeleteLink {
    pub ns: Ns,
    pub name: String,
    pub kind: String,
}

impl Step for DeleteLink {
    fn action(&self) -> &'static str {
        "delete_link"
    }
    fn verb(&self) -> Verb {
        Verb::Remove
    }
    fn object(&self) -> String {
        format!("{} {}{}", self.kind, self.name, in_ns(&self.ns))
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let restore = cx.link_before(&self.ns, &self.name).map(|l| snapshot(cx.before, &self.ns, l));
        delete(cx, &self.ns, &self.name, restore)
    }
    fn deletes_link(&self) -> Option<(&Ns, &str)> {
        Some((&self.ns, &self.name))
    }
}

#[derive(Debug, Serialize)]
pub struct ChangeLink {
    pub ns: Ns,
    pub name: String,
    pub kind: &'static str,
    pub change: LinkChange,
    /// The values found for what `change` changes (what undo puts back).
    pub found: LinkChange,
    pub diffs: Vec<Diff>,
    /// A router leg (inside the namespace): announce its address when its
    /// MAC came back or it came up.
    #[serde(skip)]
    pub leg: bool,
}

impl Step for ChangeLink {
    fn action(&self) -> &'static str {
        "change_link"
    }
    fn verb(&self) -> Verb {
        Verb::Change
    }
    fn object(&self) -> String {
        format!("{} {}{}", self.kind, self.name, in_ns(&self.ns))
    }
    fn detail(&self) -> String {
        self.diffs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        set(cx, &self.ns, &self.name, &self.change)?;
        cx.undo_with(SetBack { ns: self.ns.clone(), name: self.name.clone(), change: self.found.clone() });
        if self.leg && (self.change.mac.is_some() || self.change.up == Some(true)) {
            cx.announce(&self.ns, &self.name);
        }
        Ok(())
    }
}

// ---- undo -----------------------------------------------------------------

#[derive(Debug)]
struct DeleteCreated {
    ns: Ns,
    name: String,
}

impl Undo for DeleteCreated {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        delete(cx, &self.ns, &self.name, None)
    }
}

#[derive(Debug)]
struct Restore(Snapshot);

impl Undo for Restore {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        restore(cx, &self.0)
    }
}

#[derive(Debug)]
struct SetBack {
    ns: Ns,
    name: String,
    change: LinkChange,
}

impl Undo for SetBack {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        cx.forget(&self.ns, &self.name);
        set(cx, &self.ns, &self.name, &self.change)
    }
}

// ---- acting on the kernel -------------------------------------------------

fn describe_create(spec: &LinkSpec, peer: Option<&(Ns, LinkSpec)>) -> String {
    match (&spec.kind, peer) {
        (LinkKind::Vxlan(v), _) => format!("vxlan {} on {}", spec.name, v.dev),
        (LinkKind::Veth(_), Some((pns, p))) => format!("veth {} (peer {} in {pns})", spec.name, p.name),
        (k, _) => format!("{} {}", k.name(), spec.name),
    }
}

/// Creates a link (or veth pair), then marks it as owned. A link that must
/// not get IPv6 link-local addresses is created down, marked, then raised:
/// address generation can only be switched off before a link first comes up.
pub fn create(cx: &mut Apply<'_>, ns: &Ns, spec: &LinkSpec, peer: Option<&(Ns, LinkSpec)>) -> Result<()> {
    let master = match &spec.master {
        Some(m) => Some(cx.resolve(ns, m)?),
        None => None,
    };
    let vxlan_dev = match &spec.kind {
        LinkKind::Vxlan(v) => Some(cx.resolve(&Ns::Host, &v.dev)?),
        _ => None,
    };
    // Kept open until the request is answered: the kernel resolves the fd then.
    let peer_file = match peer {
        Some((pns, _)) if pns != ns => cx.file(pns)?.map(|f| f.try_clone()).transpose()?,
        _ => None,
    };
    // A VXLAN link that lives in a router namespace (the HA link) is created
    // from the host, moved there by the same request: its UDP socket and
    // underlay device stay the host's.
    let target_file = match &spec.kind {
        LinkKind::Vxlan(_) if *ns != Ns::Host => cx.file(ns)?.map(|f| f.try_clone()).transpose()?,
        _ => None,
    };
    let ctx = CreateCtx {
        master,
        vxlan_dev,
        peer_ns: peer_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        ns: target_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        peer: peer.map(|(_, p)| p.clone()),
        ..CreateCtx::default()
    };
    let what = describe_create(spec, peer);
    let from = if target_file.is_some() { &Ns::Host } else { ns };
    // The same link of a namespace that was deleted under its daemons is
    // unregistered by the kernel on its own time once they have stopped
    // (StopDaemons): until then its VNI is taken on the underlay.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match cx.sock(from)?.create_link(spec, &ctx) {
            Err(e) if target_file.is_some() && e.is(libc::EEXIST) && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            r => {
                r.with_context(|| format!("create {what}{}", in_ns(ns)))?;
                break;
            }
        }
    }
    drop(peer_file);
    drop(target_file);
    cx.undo_with(DeleteCreated { ns: ns.clone(), name: spec.name.clone() });
    mark_new(cx, ns, spec, false)?;
    if let (Some(f), Some(_)) = (spec.port, &spec.master) {
        let name = spec.name.as_str();
        cx.sock(ns)?.set_port(LinkRef::Name(name), f).with_context(|| format!("set bridge port flags of {name} in {ns}"))?;
    }
    if let Some((pns, p)) = peer {
        mark_new(cx, pns, p, true)?;
    }
    Ok(())
}

/// Sets the owner mark on a link just created, and raises it if it was
/// created down (`created_down`: a veth peer, which cannot start up).
fn mark_new(cx: &mut Apply<'_>, ns: &Ns, spec: &LinkSpec, created_down: bool) -> Result<()> {
    let set = SetLink {
        alias: Some(cx.mark.clone()),
        no_ipv6: spec.no_ipv6.then_some(true),
        up: (created_down && spec.up && !spec.no_ipv6).then_some(true),
        ..SetLink::default()
    };
    let name = spec.name.as_str();
    cx.sock(ns)?.set_link(LinkRef::Name(name), &set).with_context(|| format!("mark {name} in {ns} as owned"))?;
    if spec.no_ipv6 && spec.up {
        let up = SetLink { up: Some(true), ..SetLink::default() };
        cx.sock(ns)?.set_link(LinkRef::Name(name), &up).with_context(|| format!("set {name} up in {ns}"))?;
    }
    Ok(())
}

/// Deletes a link by name; a link already gone (its veth peer or its
/// namespace took it along) is fine. `restore` makes it undoable.
pub fn delete(cx: &mut Apply<'_>, ns: &Ns, name: &str, restore: Option<Snapshot>) -> Result<()> {
    let restore = restore.map(|s| with_sysctls(cx, s)).transpose()?;
    if let Some(p) = restore.as_ref().and_then(|s| s.peer.as_ref()) {
        cx.forget(&p.ns, &p.link.name);
    }
    let deleted = cx.sock(ns)?.delete_link(LinkRef::Name(name)).with_context(|| format!("delete {name} in {ns}"))?;
    if deleted && let Some(s) = restore {
        cx.undo_with(Restore(s));
    }
    cx.forget(ns, name);
    Ok(())
}

/// Applies an in-place change: kind attributes, then the common ones, then
/// the state. A new multicast group is joined when the link opens: flap it.
pub fn set(cx: &mut Apply<'_>, ns: &Ns, name: &str, c: &LinkChange) -> Result<()> {
    let index = cx.resolve(ns, name)?;
    let master = match &c.master {
        Some(Some(m)) => Some(cx.resolve(ns, m)?),
        Some(None) => Some(0),
        None => None,
    };
    let flap = c.vxlan_group.is_some() && c.up != Some(false);
    let link = LinkRef::Index(index);
    let sock = cx.sock(ns)?;
    if flap {
        let down = SetLink { up: Some(false), ..SetLink::default() };
        sock.set_link(link, &down).with_context(|| format!("set {name} down in {ns}"))?;
    }
    let kind_change = SetLink {
        bridge: c.bridge.clone(),
        vxlan_group: c.vxlan_group,
        vxlan_ageing: c.vxlan_ageing,
        vxlan_ttl: c.vxlan_ttl,
        vxlan_learning: c.vxlan_learning,
        ..SetLink::default()
    };
    // Nothing to send when nothing is set.
    if kind_change != SetLink::default() {
        sock.set_link(link, &kind_change).with_context(|| format!("change {name} in {ns}"))?;
    }
    let plain = SetLink {
        alias: c.alias.clone(),
        mtu: c.mtu,
        master,
        mac: c.mac,
        no_ipv6: c.no_ipv6,
        group: c.group,
        ..SetLink::default()
    };
    if plain != SetLink::default() {
        sock.set_link(link, &plain).with_context(|| format!("change {name} in {ns}"))?;
    }
    if let Some(f) = c.port
        && c.master != Some(None)
    {
        sock.set_port(link, f).with_context(|| format!("set bridge port flags of {name} in {ns}"))?;
    }
    if let Some(up) = c.up.or(flap.then_some(true)) {
        let s = SetLink { up: Some(up), ..SetLink::default() };
        sock.set_link(link, &s).with_context(|| format!("set {name} {} in {ns}", if up { "up" } else { "down" }))?;
    }
    Ok(())
}

/// Recreates a deleted link as it was: same kind, attributes, ifindex, MAC,
/// master, state, alias, addresses and routes; a veth comes back as the same
/// pair, its peer in the same namespace with its own index.
pub fn restore(cx: &mut Apply<'_>, s: &Snapshot) -> Result<()> {
    restore_link(cx, s)?;
    restore_addresses(cx, s)
}

/// `s` with the per-link sysctls of both its ends as they are now. Best
/// effort: an end whose namespace is gone already (deleted earlier in the
/// run) keeps none, and comes back with the kernel's defaults if at all.
pub fn with_sysctls(cx: &mut Apply<'_>, mut s: Snapshot) -> Result<Snapshot> {
    let read = |cx: &mut Apply<'_>, e: &Snapshot| -> Vec<(String, String)> {
        let keys = super::sysctl::per_link_keys(&e.link.name);
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        match cx.file(&e.ns) {
            Ok(f) => super::sysctl::read(f, &keys).map(|m| m.into_iter().collect()).unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    };
    s.sysctls = read(cx, &s);
    if let Some(mut p) = s.peer.take() {
        p.sysctls = read(cx, &p);
        s.peer = Some(p);
    }
    Ok(s)
}

/// [`restore`] without the addresses and routes: for a namespace recreated
/// around its links, whose IPv6 switches must be set (which drops IPv6
/// addresses) before the addresses come back.
pub fn restore_link(cx: &mut Apply<'_>, s: &Snapshot) -> Result<()> {
    let l = &s.link;
    let ns = &s.ns;
    let kind = match l.kind.as_deref() {
        Some("bridge") => bridge::as_found(l),
        Some("vxlan") => vxlan::as_found(l),
        Some("veth") if s.peer.is_some() => LinkKind::Veth(crate::model::VethPeer { peer: String::new(), peer_ns: Ns::Host }),
        other => crate::bail!(Internal, "cannot restore deleted {} {} in {ns}", other.unwrap_or("link"), l.name),
    };
    let as_spec = |l: &Link, kind: LinkKind| LinkSpec {
        name: l.name.clone(),
        kind,
        mtu: Some(l.mtu),
        master: None,
        up: false,
        mac: l.mac,
        no_ipv6: false,
        port: None,
    };
    let master = match &s.master {
        Some(m) => Some(cx.resolve(ns, m)?),
        None => None,
    };
    let peer_file = match &s.peer {
        Some(p) if &p.ns != ns => cx.file(&p.ns)?.map(|f| f.try_clone()).transpose()?,
        _ => None,
    };
    let target_file = match &kind {
        LinkKind::Vxlan(_) if *ns != Ns::Host => cx.file(ns)?.map(|f| f.try_clone()).transpose()?,
        _ => None,
    };
    let ctx = CreateCtx {
        master,
        vxlan_dev: l.vxlan.as_ref().and_then(|v| v.dev),
        peer_ns: peer_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        ns: target_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
        peer: s.peer.as_ref().map(|p| as_spec(&p.link, LinkKind::VethPeer { peer: l.name.clone() })),
        index: Some(l.index),
        peer_index: s.peer.as_ref().map(|p| p.link.index),
    };
    let from = if target_file.is_some() { &Ns::Host } else { ns };
    cx.sock(from)?.create_link(&as_spec(l, kind), &ctx).with_context(|| format!("recreate {} in {ns}", l.name))?;
    drop(peer_file);
    drop(target_file);
    let ends: Vec<&Snapshot> = std::iter::once(s).chain(s.peer.as_deref()).collect();
    for e in ends {
        let (index, name) = (e.link.index, e.link.name.as_str());
        let sock = cx.sock(&e.ns)?;
        let set = SetLink {
            alias: e.link.alias.clone(),
            no_ipv6: e.link.no_ipv6.then_some(true),
            group: (e.link.group != 0).then_some(e.link.group),
            ..SetLink::default()
        };
        sock.set_link(LinkRef::Index(index), &set).with_context(|| format!("mark {name}"))?;
        if e.link.up {
            let up = SetLink { up: Some(true), ..SetLink::default() };
            sock.set_link(LinkRef::Index(index), &up).with_context(|| format!("set {name} up"))?;
        }
        // Its IPv6 switch first: writing it drops nothing yet (no IPv6
        // address is back), and the others need IPv6 on to be written.
        let mut sysctls: Vec<&(String, String)> = e.sysctls.iter().collect();
        sysctls.sort_by_key(|(k, _)| !k.ends_with("/disable_ipv6"));
        for (k, v) in sysctls {
            super::sysctl::write(cx.file(&e.ns)?, k, v)?;
        }
    }
    Ok(())
}

/// The addresses and routes of a link [`restore_link`] brought back (and of
/// its veth peer).
pub fn restore_addresses(cx: &mut Apply<'_>, s: &Snapshot) -> Result<()> {
    for e in std::iter::once(s).chain(s.peer.as_deref()) {
        let (index, name) = (e.link.index, e.link.name.as_str());
        let sock = cx.sock(&e.ns)?;
        for a in &e.addrs {
            sock.add_addr(index, *a, IfExists::Replace).with_context(|| format!("address {a} on {name}"))?;
        }
        for r in &e.routes {
            sock.replace_route(r).with_context(|| format!("route {} on {name}", r.dst))?;
        }
    }
    Ok(())
}
