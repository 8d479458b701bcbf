//! Desired + observed → the ordered actions that converge the host. Pure:
//! golden-tested without a kernel.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;

use serde::Serialize;

use crate::desired::{Desired, DesiredRoute};
use crate::firewall::rules::Policy;
use crate::firewall::{self, Backend, FwChange};
use crate::model::{BridgeSpec, Link, LinkKind, LinkSpec, Ns, Route, fmt_mac};
use crate::observe::{NsView, Observed};
use crate::profile::Ipv4Cidr;

/// One attribute that differs: what the profile wants and what was found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    pub field: &'static str,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Diff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (found {})", self.field, self.expected, self.found)
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
    /// VXLAN attributes changed in place (group, ageing, ttl).
    pub vxlan_group: Option<Ipv4Addr>,
    pub vxlan_ageing: Option<u32>,
    pub vxlan_ttl: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    CreateNetns {
        name: String,
    },
    /// Deleting a namespace also takes the veth pairs with an end in it
    /// (`contents` says what, to put it all back if the run fails).
    DeleteNetns {
        name: String,
        #[serde(skip)]
        contents: Box<NsContents>,
    },
    /// Create a link (a veth pair when `spec` is a `Veth` end, `peer` being
    /// the other end). `replace` lists owned links to delete first; with a
    /// `reason` this is a recreate.
    CreateLink {
        ns: Ns,
        spec: LinkSpec,
        peer: Option<(Ns, LinkSpec)>,
        replace: Vec<(Ns, String)>,
        reason: Option<String>,
        #[serde(skip)]
        old: Option<Box<Snapshot>>,
    },
    DeleteLink {
        ns: Ns,
        name: String,
        kind: String,
        #[serde(skip)]
        old: Box<Snapshot>,
    },
    ChangeLink {
        ns: Ns,
        name: String,
        kind: String,
        change: LinkChange,
        diffs: Vec<Diff>,
        #[serde(skip)]
        old: Link,
        #[serde(skip)]
        old_master: Option<String>,
    },
    AddAddr {
        ns: Ns,
        link: String,
        addr: Ipv4Cidr,
    },
    DelAddr {
        ns: Ns,
        link: String,
        addr: Ipv4Cidr,
    },
    SetRoute {
        ns: Ns,
        route: DesiredRoute,
        #[serde(skip)]
        old: Vec<Route>,
        found: Option<String>,
    },
    SetSysctl {
        ns: Ns,
        key: String,
        value: String,
        old: Option<String>,
    },
    Firewall {
        ns: Ns,
        backend: Backend,
        changes: Vec<FwChange>,
        #[serde(skip)]
        old: Box<firewall::FirewallState>,
    },
    Enslave {
        uplink: String,
        bridge: String,
        from: Option<String>,
    },
    Release {
        uplink: String,
        bridge: String,
    },
    /// Start, restart (new config) or stop (`config` None) the dnsmasq of a
    /// router leg.
    Dhcp {
        ns: String,
        leg: String,
        config: Option<String>,
        /// The config it runs with now, if it runs.
        #[serde(skip)]
        running: Option<String>,
    },
    /// Head-end replication to a unicast peer.
    AddFdb {
        vxlan: String,
        peer: Ipv4Addr,
    },
    DelFdb {
        vxlan: String,
        peer: Ipv4Addr,
    },
}

/// A link as it was before the plan deletes it: enough to put it back if
/// the run fails later (its veth peer included, with addresses and routes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub ns: Ns,
    pub link: Link,
    pub master: Option<String>,
    pub addrs: Vec<Ipv4Cidr>,
    /// Routes through the link other than those the kernel derives from
    /// addresses.
    pub routes: Vec<Route>,
    pub peer: Option<Box<Snapshot>>,
}

/// What a namespace held, to recreate it as it was.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsContents {
    pub mark: Option<String>,
    /// Host ends (with their peers inside the namespace) of veth pairs.
    pub legs: Vec<Snapshot>,
    pub sysctls: std::collections::BTreeMap<String, String>,
    pub firewall: Option<firewall::FirewallState>,
}

/// How a difference reads in `plan` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Create,
    Change,
    Recreate,
    Remove,
}

impl Action {
    pub fn verb(&self) -> Verb {
        match self {
            Action::CreateNetns { .. } | Action::AddAddr { .. } | Action::AddFdb { .. } => Verb::Create,
            Action::DelFdb { .. } | Action::Dhcp { config: None, .. } => Verb::Remove,
            Action::Dhcp { running: None, .. } => Verb::Create,
            Action::Dhcp { .. } => Verb::Change,
            Action::CreateLink { reason: Some(_), .. } => Verb::Recreate,
            Action::CreateLink { .. } => Verb::Create,
            Action::DeleteNetns { .. } | Action::DeleteLink { .. } | Action::DelAddr { .. } | Action::Release { .. } => {
                Verb::Remove
            }
            Action::SetRoute { old, .. } if old.is_empty() => Verb::Create,
            Action::Firewall { changes, .. } if changes.iter().all(FwChange::is_creation) => Verb::Create,
            Action::Enslave { .. } => Verb::Change,
            Action::ChangeLink { .. } | Action::SetRoute { .. } | Action::SetSysctl { .. } | Action::Firewall { .. } => {
                Verb::Change
            }
        }
    }

    /// "bridge br-pr", "vxlan vxlan1070", "address 192.168.10.3/24 on veth17.1 in ns1", …
    pub fn object(&self) -> String {
        let at = |ns: &Ns| match ns {
            Ns::Host => String::new(),
            Ns::Named(n) => format!(" in {n}"),
        };
        match self {
            Action::CreateNetns { name } | Action::DeleteNetns { name, .. } => format!("namespace {name}"),
            Action::CreateLink { ns, spec, .. } => format!("{} {}{}", spec.kind.name(), spec.name, at(ns)),
            Action::DeleteLink { ns, name, kind, .. } | Action::ChangeLink { ns, name, kind, .. } => {
                format!("{kind} {name}{}", at(ns))
            }
            Action::AddAddr { ns, link, addr } | Action::DelAddr { ns, link, addr } => {
                format!("address {addr} on {link}{}", at(ns))
            }
            Action::SetRoute { ns, route, .. } => {
                format!("route {} via {} dev {}{}", route_dst(&route.dst), route.gateway, route.dev, at(ns))
            }
            Action::SetSysctl { ns, key, .. } => format!("sysctl {}{}", key.replace('/', "."), at(ns)),
            Action::Firewall { ns, backend, .. } => format!("firewall{} ({})", at(ns), backend.name()),
            Action::Enslave { uplink, bridge, .. } | Action::Release { uplink, bridge } => format!("uplink {uplink} in {bridge}"),
            Action::AddFdb { vxlan, peer } | Action::DelFdb { vxlan, peer } => format!("peer {peer} on {vxlan}"),
            Action::Dhcp { ns, leg, .. } => format!("dhcp/dns server on {leg} in {ns}"),
        }
    }

    /// Details after the object: what is created, what differs, why.
    pub fn detail(&self) -> String {
        match self {
            Action::CreateLink { spec, peer, reason, .. } => {
                let mut parts = Vec::new();
                if let Some(r) = reason {
                    parts.push(r.clone());
                }
                match &spec.kind {
                    LinkKind::Vxlan(v) => parts.push(format!(
                        "vni {}, {}, dev {}, local {}, port {}",
                        v.vni,
                        v.group.map(|g| format!("group {g}")).unwrap_or("unicast peers".into()),
                        v.dev,
                        v.local,
                        v.port
                    )),
                    LinkKind::Bridge(b) if b.stp => parts.push(format!("stp on, forward_delay {}s", b.forward_delay / 100)),
                    _ => {}
                }
                if let Some((pns, p)) = peer {
                    parts.push(format!("peer {} in {pns}", p.name));
                }
                if let Some(m) = &spec.master {
                    parts.push(format!("master {m}"));
                }
                if let Some(mtu) = spec.mtu {
                    parts.push(format!("mtu {mtu}"));
                }
                parts.join(", ")
            }
            Action::ChangeLink { diffs, .. } => diffs.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
            Action::Dhcp { config: Some(_), running: Some(_), .. } => "config changed: restart".into(),
            Action::DeleteNetns { contents, .. } if !contents.legs.is_empty() => {
                let legs: Vec<&str> = contents.legs.iter().map(|l| l.link.name.as_str()).collect();
                format!("with the veth pairs of {}", legs.join(", "))
            }
            Action::SetRoute { found, .. } => found.as_ref().map(|f| format!("found {f}")).unwrap_or_default(),
            Action::SetSysctl { value, old, .. } => format!("{} (found {})", value, old.as_deref().unwrap_or("none")),
            Action::Firewall { changes, .. } => changes.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; "),
            Action::Enslave { from: Some(f), .. } => format!("found in {f}"),
            _ => String::new(),
        }
    }

    /// "create vxlan vxlan1070": verb and object, without details.
    pub fn title(&self) -> String {
        let verb = match self.verb() {
            Verb::Create => "create",
            Verb::Change => "change",
            Verb::Recreate => "recreate",
            Verb::Remove => "remove",
        };
        format!("{verb} {}", self.object())
    }

    pub fn line(&self) -> String {
        let detail = self.detail();
        if detail.is_empty() { self.title() } else { format!("{}: {detail}", self.title()) }
    }
}

fn route_dst(d: &Ipv4Cidr) -> String {
    if d.prefix == 0 { "default".into() } else { d.network().to_string() }
}

/// A name that exists but is not vxrouter's: nothing may be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<String>);

impl fmt::Display for Conflicts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Conflicts {}

/// The actions, plus things the operator should know that are not actions
/// (objects kept on purpose, and why).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub notes: Vec<String>,
}

/// Options that change what a plan may remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Delete owned bridges even when foreign ports (VM taps) are attached:
    /// the kernel then releases those ports; they are never deleted.
    pub force: bool,
    /// The `nft` tool is available (`firewall = "auto"` picks nftables).
    pub nft: bool,
}

struct Planner<'a> {
    d: &'a Desired,
    o: &'a Observed,
    opts: PlanOptions,
    conflicts: Vec<String>,
    notes: Vec<String>,
    /// Owned namespaces no longer wanted but holding foreign objects: they
    /// are emptied of vxrouter's objects and kept.
    kept_ns: Vec<String>,
    removals: Vec<Action>,
    creates: Vec<Action>,
    late: Vec<Action>,
    /// Links the plan deletes or recreates: their old state is gone.
    replaced: BTreeSet<(Ns, String)>,
    /// Namespaces that do not exist yet (or will be deleted).
    fresh_ns: BTreeSet<String>,
    /// Host links (ifindex) that disappear with a namespace being deleted.
    dies_with_ns: BTreeSet<u32>,
}

/// Computes the actions; fails without any action when an object with a
/// wanted name exists but is not owned.
pub fn plan(d: &Desired, o: &Observed, opts: PlanOptions) -> Result<Plan, Conflicts> {
    let mut p = Planner {
        d,
        o,
        opts,
        conflicts: Vec::new(),
        notes: Vec::new(),
        kept_ns: Vec::new(),
        removals: Vec::new(),
        creates: Vec::new(),
        late: Vec::new(),
        replaced: BTreeSet::new(),
        fresh_ns: BTreeSet::new(),
        dies_with_ns: BTreeSet::new(),
    };
    p.namespaces();
    p.uplinks_released();
    p.links();
    p.extra_links();
    p.uplinks();
    p.addresses();
    p.routes();
    p.fdb();
    p.sysctls();
    p.dhcp();
    p.firewall();
    if !p.conflicts.is_empty() {
        return Err(Conflicts(p.conflicts));
    }
    let mut actions = p.removals;
    actions.extend(p.creates);
    actions.extend(p.late);
    Ok(Plan { actions, notes: p.notes })
}

impl<'a> Planner<'a> {
    fn view(&self, ns: &Ns) -> Option<&'a NsView> {
        match ns {
            Ns::Named(n) if self.fresh_ns.contains(n) => None,
            _ => self.o.view(ns),
        }
    }

    fn owns_namespace(&self, name: &str) -> bool {
        match self.o.named.get(name) {
            Some(v) => match v.loopback_mark() {
                Some(m) => m == self.d.mark,
                None => self.o.state.pending_namespace(name),
            },
            None => false,
        }
    }

    fn namespaces(&mut self) {
        if let Some(r) = &self.d.router_ns {
            if !self.o.netns.contains(r) {
                self.fresh_ns.insert(r.clone());
                self.creates.push(Action::CreateNetns { name: r.clone() });
            } else if !self.owns_namespace(r) {
                let who = self.o.named.get(r).and_then(|v| v.loopback_mark()).unwrap_or("nobody vxrouter knows");
                self.conflicts.push(format!(
                    "namespace {r} exists but was not created by vxrouter for {} (marked: {who}); refusing to use it",
                    self.d.host
                ));
            }
        }
        for name in &self.o.stale_netns {
            if Some(name) != self.d.router_ns.as_ref() {
                self.removals.push(Action::DeleteNetns { name: name.clone(), contents: Box::default() });
            }
        }
        for name in &self.o.state.namespaces {
            if Some(name) == self.d.router_ns.as_ref() || !self.o.netns.contains(name) || !self.owns_namespace(name) {
                continue;
            }
            let view = &self.o.named[name];
            let foreign_links: Vec<&str> =
                view.links.iter().filter(|l| !l.loopback && !self.owned(l)).map(|l| l.name.as_str()).collect();
            let foreign_rules: usize = view.firewall.as_ref().map(|f| f.foreign()).unwrap_or(0);
            if foreign_links.is_empty() && foreign_rules == 0 {
                // Host ends of pairs with an end inside go with the namespace
                // (one kernel batch, not one deletion each).
                let inside: BTreeSet<u32> = view.links.iter().map(|l| l.index).collect();
                let legs: Vec<Snapshot> = self
                    .o
                    .host
                    .links
                    .iter()
                    .filter(|l| self.owned(l) && l.kind.as_deref() == Some("veth") && l.link.is_some_and(|p| inside.contains(&p)))
                    .map(|l| self.snapshot(&Ns::Host, l))
                    .filter(|s| s.peer.is_some())
                    .collect();
                self.dies_with_ns.extend(legs.iter().map(|s| s.link.index));
                let contents = NsContents {
                    mark: view.loopback_mark().map(str::to_string),
                    legs,
                    sysctls: view.sysctls.clone(),
                    firewall: view.firewall.clone(),
                };
                self.removals.push(Action::DeleteNetns { name: name.clone(), contents: Box::new(contents) });
                self.fresh_ns.insert(name.clone());
            } else {
                let mut what = Vec::new();
                if !foreign_links.is_empty() {
                    what.push(format!("links {}", foreign_links.join(", ")));
                }
                if foreign_rules > 0 {
                    what.push(format!("{foreign_rules} firewall rule(s)"));
                }
                self.notes.push(format!(
                    "kept namespace {name}: it holds objects vxrouter did not create ({}); removed only vxrouter's objects from it",
                    what.join(" and ")
                ));
                self.kept_ns.push(name.clone());
            }
        }
    }

    fn owned(&self, l: &Link) -> bool {
        l.alias.as_deref() == Some(self.d.mark.as_str())
    }

    /// Not marked, but a run that was creating it was interrupted.
    fn adoptable(&self, ns: &Ns, l: &Link) -> bool {
        l.alias.is_none() && self.o.state.pending_link(ns, &l.name)
    }

    fn links(&mut self) {
        let d = self.d;
        for (ns, spec) in &d.links {
            if let LinkKind::VethPeer { .. } = spec.kind {
                continue; // handled with its Veth end
            }
            let peer = match &spec.kind {
                LinkKind::Veth(v) => d.link(&v.peer_ns, &v.peer).map(|p| (v.peer_ns.clone(), p.clone())),
                _ => None,
            };
            let found = self.view(ns).and_then(|v| v.link(&spec.name)).cloned();
            let Some(found) = found else {
                if spec.kind == LinkKind::Loopback {
                    // A new namespace has its loopback down and unmarked.
                    let lo = Link { index: 1, name: "lo".into(), loopback: true, ..Link::default() };
                    self.change(ns, spec, &lo);
                    continue;
                }
                let replace = self.stale_peer(&peer);
                self.creates.push(Action::CreateLink {
                    ns: ns.clone(),
                    spec: spec.clone(),
                    peer,
                    replace,
                    reason: None,
                    old: None,
                });
                continue;
            };
            if !self.owned(&found) && !self.adoptable(ns, &found) && spec.kind != LinkKind::Loopback {
                self.conflicts.push(format!(
                    "{} {} exists{} but is not owned by vxrouter for {} (alias: {}); rename it in the profile or remove it",
                    found.kind.as_deref().unwrap_or("link"),
                    spec.name,
                    match ns {
                        Ns::Host => String::new(),
                        Ns::Named(n) => format!(" in namespace {n}"),
                    },
                    d.host,
                    found.alias.as_deref().unwrap_or("none")
                ));
                continue;
            }
            if let Some(reason) = self.must_recreate(spec, &found, &peer) {
                self.replaced.insert((ns.clone(), spec.name.clone()));
                let mut replace = vec![(ns.clone(), spec.name.clone())];
                replace.extend(self.stale_peer(&peer));
                self.creates.push(Action::CreateLink {
                    ns: ns.clone(),
                    spec: spec.clone(),
                    peer,
                    replace,
                    reason: Some(reason),
                    old: Some(Box::new(self.snapshot(ns, &found))),
                });
                continue;
            }
            self.change(ns, spec, &found);
            if let Some((pns, pspec)) = &peer
                && let Some(pfound) = self.view(pns).and_then(|v| v.link(&pspec.name)).cloned()
            {
                self.change(pns, pspec, &pfound);
            }
        }
    }

    /// A veth's other end that exists (in its namespace) but is not paired
    /// with the end being created: it must go first, or its name is taken.
    fn stale_peer(&self, peer: &Option<(Ns, LinkSpec)>) -> Vec<(Ns, String)> {
        match peer {
            Some((pns, p)) if self.view(pns).and_then(|v| v.link(&p.name)).is_some() => vec![(pns.clone(), p.name.clone())],
            _ => vec![],
        }
    }

    /// Immutable attributes: the link has to be deleted and created again.
    fn must_recreate(&self, spec: &LinkSpec, found: &Link, peer: &Option<(Ns, LinkSpec)>) -> Option<String> {
        let kind = spec.kind.name();
        if spec.kind != LinkKind::Loopback && found.kind.as_deref() != Some(kind) {
            return Some(format!("kind {kind} (found {})", found.kind.as_deref().unwrap_or("none")));
        }
        match &spec.kind {
            LinkKind::Vxlan(v) => {
                let f = found.vxlan.clone().unwrap_or_default();
                if f.vni != v.vni {
                    return Some(format!("vni {} (found {}) cannot change in place", v.vni, f.vni));
                }
                if f.port != v.port {
                    return Some(format!("port {} (found {}) cannot change in place", v.port, f.port));
                }
                let dev = self.o.host.link(&v.dev).map(|l| l.index);
                if f.dev != dev {
                    let found_dev = f.dev.and_then(|i| self.o.host.by_index(i)).map(|l| l.name.clone()).unwrap_or("none".into());
                    return Some(format!("dev {} (found {found_dev})", v.dev));
                }
                match (v.group, f.group) {
                    (None, Some(g)) => return Some(format!("unicast peers (found multicast group {g})")),
                    (Some(g), None) => return Some(format!("multicast group {g} (found unicast peers)")),
                    _ => {}
                }
                if f.local.unwrap_or(Ipv4Addr::UNSPECIFIED) != v.local {
                    return Some(format!(
                        "local {} (found {})",
                        v.local,
                        f.local.map(|a| a.to_string()).unwrap_or("none".into())
                    ));
                }
                None
            }
            LinkKind::Veth(_) => {
                let (pns, p) = peer.as_ref()?;
                let pview = self.view(pns);
                let pfound = pview.and_then(|v| v.link(&p.name));
                match pfound {
                    None => Some(format!("peer {} missing in {pns}", p.name)),
                    Some(pl) if Some(pl.index) != found.link || pl.link != Some(found.index) => {
                        Some(format!("peer {} in {pns} is not this veth's other end", p.name))
                    }
                    Some(_) => None,
                }
            }
            _ => None,
        }
    }

    /// What it takes to put a link back as it is now.
    fn snapshot(&self, ns: &Ns, l: &Link) -> Snapshot {
        let one = |ns: &Ns, l: &Link| {
            let v = self.o.view(ns);
            Snapshot {
                ns: ns.clone(),
                link: l.clone(),
                master: l.master.and_then(|m| v.and_then(|v| v.by_index(m))).map(|b| b.name.clone()),
                addrs: v.map(|v| v.addrs_of(l.index).map(|a| a.cidr).collect()).unwrap_or_default(),
                routes: v
                    .map(|v| v.routes.iter().filter(|r| r.oif == Some(l.index) && r.protocol != RTPROT_KERNEL).cloned().collect())
                    .unwrap_or_default(),
                peer: None,
            }
        };
        let mut s = one(ns, l);
        if l.kind.as_deref() == Some("veth")
            && let Some(pi) = l.link
        {
            let mut spaces = vec![Ns::Host];
            spaces.extend(self.o.named.keys().map(|n| Ns::Named(n.clone())));
            for pns in spaces.into_iter().filter(|p| p != ns) {
                if let Some(p) = self.o.view(&pns).and_then(|v| v.by_index(pi)).filter(|p| p.link == Some(l.index)) {
                    s.peer = Some(Box::new(one(&pns, p)));
                    break;
                }
            }
        }
        s
    }

    fn master_name(&self, ns: &Ns, l: &Link) -> Option<String> {
        let v = self.view(ns)?;
        l.master.and_then(|m| v.by_index(m)).map(|b| b.name.clone())
    }

    fn change(&mut self, ns: &Ns, spec: &LinkSpec, found: &Link) {
        let mut c = LinkChange::default();
        let mut diffs = Vec::new();
        let mut diff = |field: &'static str, expected: String, found: String| diffs.push(Diff { field, expected, found });
        if found.alias.as_deref() != Some(self.d.mark.as_str()) {
            c.alias = Some(self.d.mark.clone());
            diff("alias", self.d.mark.clone(), found.alias.clone().unwrap_or("none".into()));
        }
        if let Some(mtu) = spec.mtu
            && mtu != found.mtu
        {
            c.mtu = Some(mtu);
            diff("mtu", mtu.to_string(), found.mtu.to_string());
        }
        let old_master = self.master_name(ns, found);
        if spec.kind != LinkKind::Loopback && spec.master != old_master {
            // A master that is being recreated has a new index: re-enslave.
            c.master = Some(spec.master.clone());
            diff("master", spec.master.clone().unwrap_or("none".into()), old_master.clone().unwrap_or("none".into()));
        } else if let Some(m) = &spec.master
            && self.replaced.contains(&(ns.clone(), m.clone()))
        {
            c.master = Some(spec.master.clone());
            diff("master", m.clone(), format!("{m} (being recreated)"));
        }
        if let Some(mac) = spec.mac
            && found.mac != Some(mac)
        {
            c.mac = Some(mac);
            diff("mac", fmt_mac(&mac), found.mac.map(|m| fmt_mac(&m)).unwrap_or("none".into()));
        }
        if spec.no_ipv6 && !found.no_ipv6 {
            c.no_ipv6 = Some(true);
            diff("addrgenmode", "none".into(), "eui64".into());
        }
        match &spec.kind {
            LinkKind::Bridge(b) => {
                let fb = found.bridge.clone().unwrap_or(BridgeSpec { stp: false, forward_delay: 0 });
                if fb != *b {
                    c.bridge = Some(b.clone());
                    if fb.stp != b.stp {
                        diff("stp", on_off(b.stp), on_off(fb.stp));
                    }
                    if fb.forward_delay != b.forward_delay {
                        diff("forward_delay", format!("{}s", b.forward_delay / 100), format!("{}s", fb.forward_delay / 100));
                    }
                }
            }
            LinkKind::Vxlan(v) => {
                let f = found.vxlan.clone().unwrap_or_default();
                if let (Some(want), Some(have)) = (v.group, f.group)
                    && want != have
                {
                    c.vxlan_group = Some(want);
                    diff("group", want.to_string(), have.to_string());
                }
                if f.ageing != v.ageing {
                    c.vxlan_ageing = Some(v.ageing);
                    diff("ageing", v.ageing.to_string(), f.ageing.to_string());
                }
                if f.ttl != v.ttl {
                    c.vxlan_ttl = Some(v.ttl);
                    diff("ttl", v.ttl.to_string(), f.ttl.to_string());
                }
            }
            _ => {}
        }
        // Up last: a group change is applied with a down/up flap (see apply).
        if spec.up != found.up {
            c.up = Some(spec.up);
            diff("state", up_down(spec.up), up_down(found.up));
        }
        if !diffs.is_empty() {
            self.creates.push(Action::ChangeLink {
                ns: ns.clone(),
                name: spec.name.clone(),
                kind: spec.kind.name().to_string(),
                change: c,
                diffs,
                old: found.clone(),
                old_master,
            });
        }
    }

    /// Owned links the profile no longer names.
    fn extra_links(&mut self) {
        let mut namespaces = vec![Ns::Host];
        if let Some(r) = &self.d.router_ns
            && !self.fresh_ns.contains(r)
        {
            namespaces.push(Ns::Named(r.clone()));
        }
        namespaces.extend(self.kept_ns.iter().map(|n| Ns::Named(n.clone())));
        let mut gone: BTreeSet<(Ns, u32)> = BTreeSet::new();
        for ns in namespaces.clone() {
            let Some(view) = self.view(&ns) else { continue };
            for l in &view.links {
                let ours = self.owned(l) || self.adoptable(&ns, l);
                if ns == Ns::Host && self.dies_with_ns.contains(&l.index) {
                    continue;
                }
                if !ours || l.loopback || self.d.link(&ns, &l.name).is_some() || gone.contains(&(ns.clone(), l.index)) {
                    continue;
                }
                if l.kind.as_deref() == Some("bridge") && !self.opts.force {
                    let uplinks: Vec<&String> = self.o.state.uplinks.keys().collect();
                    let foreign: Vec<&str> = view
                        .links
                        .iter()
                        .filter(|p| p.master == Some(l.index) && !self.owned(p) && !uplinks.contains(&&p.name))
                        .map(|p| p.name.as_str())
                        .collect();
                    if !foreign.is_empty() {
                        self.notes.push(format!(
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
                    for other in namespaces.iter() {
                        if *other != ns {
                            gone.insert((other.clone(), peer));
                        }
                    }
                }
                self.removals.push(Action::DeleteLink {
                    ns: ns.clone(),
                    name: l.name.clone(),
                    kind: l.kind.clone().unwrap_or("link".into()),
                    old: Box::new(self.snapshot(&ns, l)),
                });
            }
        }
        // Ports before the bridges they are in.
        self.removals.sort_by_key(|a| match a {
            Action::DeleteLink { kind, .. } if kind == "bridge" => 2,
            Action::DeleteLink { .. } => 1,
            Action::DeleteNetns { .. } => 0,
            _ => 0,
        });
    }

    fn uplinks_released(&mut self) {
        let wanted: BTreeSet<&String> = self.d.uplinks.iter().map(|(u, _)| u).collect();
        for (uplink, bridge) in &self.o.state.uplinks {
            if wanted.contains(uplink) {
                continue;
            }
            let host = &self.o.host;
            let in_bridge = host
                .link(uplink)
                .and_then(|u| u.master)
                .and_then(|m| host.by_index(m))
                .is_some_and(|b| &b.name == bridge && self.owned(b));
            if in_bridge {
                self.removals.push(Action::Release { uplink: uplink.clone(), bridge: bridge.clone() });
            }
        }
    }

    fn uplinks(&mut self) {
        for (uplink, bridge) in &self.d.uplinks {
            let host = &self.o.host;
            let Some(u) = host.link(uplink) else {
                self.conflicts.push(format!("uplink {uplink} does not exist on this host"));
                continue;
            };
            let current = u.master.and_then(|m| host.by_index(m));
            let ok = current.is_some_and(|b| &b.name == bridge) && !self.replaced.contains(&(Ns::Host, bridge.clone()));
            if ok {
                continue;
            }
            match current {
                Some(b) if !self.owned(b) => self
                    .conflicts
                    .push(format!("uplink {uplink} is a port of {}, which vxrouter does not own; release it first", b.name)),
                _ => self.late.push(Action::Enslave {
                    uplink: uplink.clone(),
                    bridge: bridge.clone(),
                    from: current.map(|b| b.name.clone()),
                }),
            }
        }
    }

    /// A link's observed state, unless this plan replaces it.
    fn live(&self, ns: &Ns, name: &str) -> Option<&'a Link> {
        if self.replaced.contains(&(ns.clone(), name.to_string())) {
            return None;
        }
        self.view(ns).and_then(|v| v.link(name))
    }

    fn addresses(&mut self) {
        let d = self.d;
        let mut per_link: Vec<(Ns, String, Vec<Ipv4Cidr>)> = Vec::new();
        for (ns, link, addr) in &d.addrs {
            match per_link.iter_mut().find(|(n, l, _)| n == ns && l == link) {
                Some(e) => e.2.push(*addr),
                None => per_link.push((ns.clone(), link.clone(), vec![*addr])),
            }
        }
        for (ns, link, want) in per_link {
            let have: Vec<Ipv4Cidr> = match (self.live(&ns, &link), self.view(&ns)) {
                (Some(l), Some(v)) => v.addrs_of(l.index).map(|a| a.cidr).collect(),
                _ => vec![],
            };
            for a in &have {
                if !want.contains(a) {
                    self.late.push(Action::DelAddr { ns: ns.clone(), link: link.clone(), addr: *a });
                }
            }
            for a in &want {
                if !have.contains(a) {
                    self.late.push(Action::AddAddr { ns: ns.clone(), link: link.clone(), addr: *a });
                }
            }
        }
    }

    fn routes(&mut self) {
        for (ns, r) in &self.d.routes {
            let view = self.view(ns);
            let dev = self.live(ns, &r.dev).map(|l| l.index);
            let existing: Vec<Route> =
                view.map(|v| v.routes.iter().filter(|x| x.dst == r.dst).cloned().collect()).unwrap_or_default();
            let matches = existing.len() == 1
                && existing[0].gateway == Some(r.gateway)
                && dev.is_some()
                && existing[0].oif == dev
                && existing[0].protocol == r.protocol;
            // Removing an address takes the routes through its subnet with
            // it: a route whose device loses an address is added again.
            let readd = self.late.iter().any(|a| matches!(a, Action::DelAddr { ns: n, link, .. } if n == ns && *link == r.dev));
            if !matches || readd {
                let found = if matches {
                    Some(format!("the same, re-added as the addresses of {} change", r.dev))
                } else {
                    existing.first().map(|x| {
                        let dev =
                            x.oif.and_then(|i| view.and_then(|v| v.by_index(i))).map(|l| l.name.clone()).unwrap_or("?".into());
                        match x.gateway {
                            Some(g) => format!("via {g} dev {dev} proto {}", x.protocol),
                            None => format!("dev {dev} proto {}", x.protocol),
                        }
                    })
                };
                self.late.push(Action::SetRoute { ns: ns.clone(), route: r.clone(), old: existing, found });
            }
        }
    }

    /// dnsmasq per leg: running with exactly the desired config. Stopping
    /// comes first of all (before its namespace may go).
    fn dhcp(&mut self) {
        let mut stops = Vec::new();
        for r in &self.o.dhcp {
            if !self.d.dhcp.iter().any(|s| s.ns == r.ns && s.leg == r.leg) {
                stops.push(Action::Dhcp {
                    ns: r.ns.clone(),
                    leg: r.leg.clone(),
                    config: None,
                    running: r.pid.map(|_| r.config.clone()),
                });
            }
        }
        self.removals.splice(0..0, stops);
        for s in &self.d.dhcp {
            let found = self.o.dhcp.iter().find(|r| r.ns == s.ns && r.leg == s.leg);
            // A namespace or leg made in this run has no server yet.
            let fresh = self.fresh_ns.contains(&s.ns) || self.live(&Ns::Named(s.ns.clone()), &s.leg).is_none();
            let running = found.filter(|r| r.pid.is_some() && !fresh).map(|r| r.config.clone());
            if running.as_deref() != Some(s.config.as_str()) {
                self.late.push(Action::Dhcp { ns: s.ns.clone(), leg: s.leg.clone(), config: Some(s.config.clone()), running });
            }
        }
    }

    /// Unicast peers: all-zero FDB entries on each VXLAN link, in sync with
    /// the profile's list.
    fn fdb(&mut self) {
        let host = &self.o.host;
        let mut vxlans: Vec<&str> = self.d.fdb.iter().map(|(v, _)| v.as_str()).collect();
        // Owned VXLAN links whose peers may have to go.
        vxlans.extend(host.links.iter().filter(|l| l.vxlan.is_some() && self.owned(l)).map(|l| l.name.as_str()));
        vxlans.sort();
        vxlans.dedup();
        for vx in vxlans {
            if self.d.link(&Ns::Host, vx).is_none() {
                continue; // the link itself goes, with its entries
            }
            let want: Vec<Ipv4Addr> = self.d.fdb.iter().filter(|(v, _)| v == vx).map(|(_, a)| *a).collect();
            let have: Vec<Ipv4Addr> = match self.live(&Ns::Host, vx) {
                Some(l) => host.fdb.iter().filter(|(i, _)| *i == l.index).map(|(_, a)| *a).collect(),
                None => vec![],
            };
            for a in &have {
                if !want.contains(a) {
                    self.late.push(Action::DelFdb { vxlan: vx.to_string(), peer: *a });
                }
            }
            for a in &want {
                if !have.contains(a) {
                    self.late.push(Action::AddFdb { vxlan: vx.to_string(), peer: *a });
                }
            }
        }
    }

    fn sysctls(&mut self) {
        for (ns, key, value) in &self.d.sysctls {
            let old = self.view(ns).and_then(|v| v.sysctls.get(key)).cloned();
            if old.as_deref() != Some(value.as_str()) {
                self.late.push(Action::SetSysctl { ns: ns.clone(), key: key.clone(), value: value.clone(), old });
            }
        }
    }

    fn firewall(&mut self) {
        let empty = Policy::default();
        let nft = self.opts.nft;
        let mut todo: Vec<(Ns, &Policy, Backend)> =
            self.d.firewall.iter().map(|(ns, p, choice)| (ns.clone(), p, firewall::resolve(*choice, nft))).collect();
        // Rules vxrouter no longer wants: in namespaces it keeps for their
        // foreign objects, and on the host when underlay protection is gone.
        todo.extend(self.kept_ns.iter().map(|n| (Ns::Named(n.clone()), &empty, Backend::Iptables)));
        if self.o.state.firewall.contains_key(&crate::state::fw_key(&Ns::Host)) && !todo.iter().any(|(ns, _, _)| *ns == Ns::Host)
        {
            todo.push((Ns::Host, &empty, Backend::Iptables));
        }
        for (ns, want, backend) in todo {
            let have = self.view(&ns).and_then(|v| v.firewall.clone()).unwrap_or_default();
            match firewall::changes(&self.d.mark, want, backend, &have) {
                Ok(changes) if changes.is_empty() => {}
                Ok(changes) => self.late.push(Action::Firewall { ns, backend, changes, old: Box::new(have) }),
                Err(conflict) => self.conflicts.push(format!("{conflict} (in {ns}); refusing to replace it")),
            }
        }
    }
}

/// rtm_protocol of routes the kernel adds for an address's subnet.
const RTPROT_KERNEL: u8 = 2;

fn on_off(b: bool) -> String {
    if b { "on".into() } else { "off".into() }
}

fn up_down(b: bool) -> String {
    if b { "up".into() } else { "down".into() }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::desired::{UnderlayFacts, derive};
    use crate::firewall::{FirewallState, IptState, jump_rule};
    use crate::model::{Addr, Link, ObservedVxlan};
    use crate::profile::Profile;
    use crate::state::{Pending, State};

    pub const SEED_A: &str = include_str!("../profiles/host-a.toml");

    pub fn desired(text: &str) -> Desired {
        let p = Profile::parse("p.toml", text).unwrap();
        derive(&p, Some(&UnderlayFacts { mtu: 1500, address: Some(Ipv4Addr::new(10, 0, 0, 1)) }))
    }

    /// A bare host: loopback, eth0 (10.0.0.1/24), eth1.
    pub fn bare() -> Observed {
        let mut o = Observed::default();
        o.host.links = vec![
            Link { index: 1, name: "lo".into(), loopback: true, mtu: 65536, up: true, ..Link::default() },
            Link { index: 2, name: "eth0".into(), mtu: 1500, up: true, ..Link::default() },
            Link { index: 3, name: "eth1".into(), mtu: 1500, up: true, ..Link::default() },
        ];
        o.host.addrs = vec![Addr { index: 2, cidr: "10.0.0.1/24".parse().unwrap() }];
        o
    }

    /// What the kernel shows after `d` was applied to `bare()`.
    pub fn converged(d: &Desired) -> Observed {
        let mut o = bare();
        let mut next: BTreeMap<Ns, u32> = BTreeMap::new();
        next.insert(Ns::Host, 10);
        if let Some(r) = &d.router_ns {
            o.netns.insert(r.clone());
            o.state.namespaces.insert(r.clone());
            o.named.insert(r.clone(), NsView::default());
            next.insert(Ns::Named(r.clone()), 2);
        }
        fn view<'a>(o: &'a mut Observed, ns: &Ns) -> &'a mut NsView {
            match ns {
                Ns::Host => &mut o.host,
                Ns::Named(n) => o.named.get_mut(n).unwrap(),
            }
        }
        for (ns, spec) in &d.links {
            let index = if spec.kind == LinkKind::Loopback {
                1
            } else {
                let n = next.get_mut(ns).unwrap();
                *n += 1;
                *n
            };
            let v = view(&mut o, ns);
            let master = spec.master.as_ref().map(|m| v.link(m).unwrap().index);
            let mut l = Link {
                index,
                name: spec.name.clone(),
                kind: Some(spec.kind.name().to_string()),
                mtu: spec.mtu.unwrap_or(1500),
                master,
                up: spec.up,
                alias: Some(d.mark.clone()),
                mac: spec.mac,
                no_ipv6: spec.no_ipv6,
                loopback: spec.kind == LinkKind::Loopback,
                ..Link::default()
            };
            match &spec.kind {
                LinkKind::Bridge(b) => l.bridge = Some(b.clone()),
                LinkKind::Vxlan(x) => {
                    l.vxlan = Some(ObservedVxlan {
                        vni: x.vni,
                        group: x.group,
                        dev: Some(2),
                        local: Some(x.local),
                        port: x.port,
                        ageing: x.ageing,
                        ttl: x.ttl,
                    })
                }
                LinkKind::Loopback => l.kind = None,
                _ => {}
            }
            v.links.push(l);
        }
        // Pair veth ends.
        for (ns, spec) in &d.links {
            if let LinkKind::Veth(p) = &spec.kind {
                let a = o.view(ns).unwrap().link(&spec.name).unwrap().index;
                let b = o.view(&p.peer_ns).unwrap().link(&p.peer).unwrap().index;
                view(&mut o, ns).links.iter_mut().find(|l| l.index == a).unwrap().link = Some(b);
                view(&mut o, &p.peer_ns).links.iter_mut().find(|l| l.index == b).unwrap().link = Some(a);
            }
        }
        for (ns, link, cidr) in &d.addrs {
            let v = view(&mut o, ns);
            let index = v.link(link).unwrap().index;
            v.addrs.push(Addr { index, cidr: *cidr });
        }
        for (ns, r) in &d.routes {
            let v = view(&mut o, ns);
            let oif = v.link(&r.dev).map(|l| l.index);
            v.routes.push(Route { dst: r.dst, gateway: Some(r.gateway), oif, protocol: r.protocol });
        }
        for (ns, k, val) in &d.sysctls {
            view(&mut o, ns).sysctls.insert(k.clone(), val.clone());
        }
        for (ns, policy, _) in &d.firewall {
            let mut ipt = IptState::default();
            for c in &crate::firewall::iptables::ruleset(policy).chains {
                ipt.chains.insert((c.table.clone(), c.name.clone()), c.rules.clone());
                ipt.jumps.entry((c.table.clone(), c.hook.clone())).or_default().push(jump_rule(&d.mark, &c.name));
            }
            view(&mut o, ns).firewall = Some(FirewallState { ipt: Some(ipt), nft: None });
            o.state.firewall.entry(crate::state::fw_key(ns)).or_default().insert(Backend::Iptables);
        }
        for (vx, peer) in &d.fdb {
            let i = o.host.link(vx).unwrap().index;
            o.host.fdb.push((i, *peer));
        }
        for (u, b) in &d.uplinks {
            let bi = o.host.link(b).unwrap().index;
            o.host.links.iter_mut().find(|l| &l.name == u).unwrap().master = Some(bi);
            o.state.uplinks.insert(u.clone(), b.clone());
        }
        o
    }

    fn lines(p: &Plan) -> Vec<String> {
        p.actions.iter().map(|a| a.title()).collect()
    }

    fn host_link<'a>(o: &'a mut Observed, name: &str) -> &'a mut Link {
        o.host.links.iter_mut().find(|l| l.name == name).unwrap()
    }

    #[test]
    fn bare_host_gets_everything_in_dependency_order() {
        let d = desired(SEED_A);
        let p = plan(&d, &bare(), PlanOptions::default()).unwrap();
        assert_eq!(
            lines(&p),
            [
                "create namespace ns1",
                "create bridge br-pr",
                "create bridge br-pu",
                "create vxlan vxlan1070",
                "change loopback lo in ns1",
                "create veth veth15.0",
                "create veth veth17.0",
                "change uplink eth1 in br-pu",
                "create address 203.0.113.123/24 on veth15.1 in ns1",
                "create address 192.168.10.3/24 on veth17.1 in ns1",
                "create route default via 203.0.113.1 dev veth15.1 in ns1",
                "change sysctl net.ipv4.ip_forward in ns1",
                "create firewall in ns1 (iptables)",
            ]
        );
    }

    #[test]
    fn converged_host_needs_nothing() {
        let d = desired(SEED_A);
        let p = plan(&d, &converged(&d), PlanOptions::default()).unwrap();
        assert!(p.actions.is_empty(), "{:#?}", p.actions);
        assert!(p.notes.is_empty());
    }

    #[test]
    fn an_unowned_name_is_a_conflict_and_nothing_is_planned() {
        let d = desired(SEED_A);
        let mut o = bare();
        o.host.links.push(Link { index: 9, name: "br-pr".into(), kind: Some("bridge".into()), ..Link::default() });
        let err = plan(&d, &o, PlanOptions::default()).unwrap_err();
        assert!(err.to_string().contains("bridge br-pr exists but is not owned by vxrouter for host-a"), "{err}");
        // A namespace of the same name, not made by us, is refused too.
        let mut o = bare();
        o.netns.insert("ns1".into());
        o.named.insert("ns1".into(), NsView::default());
        assert!(
            plan(&d, &o, PlanOptions::default()).unwrap_err().to_string().contains("namespace ns1 exists but was not created")
        );
    }

    #[test]
    fn an_interrupted_run_is_finished_by_adopting_its_unmarked_links() {
        let d = desired(SEED_A);
        let mut o = converged(&d);
        host_link(&mut o, "br-pr").alias = None;
        let p = plan(&d, &o, PlanOptions::default());
        assert!(p.is_err(), "without a pending record, an unmarked link is foreign");
        o.state.pending = Some(Pending { pid: 1, links: vec![(Ns::Host, "br-pr".into())], namespaces: vec![] });
        let p = plan(&d, &o, PlanOptions::default()).unwrap();
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.actions[0].line(), "change bridge br-pr: alias vxrouter:host-a (found none)");
    }

    #[test]
    fn drift_is_reported_per_attribute_and_immutable_ones_recreate() {
        let d = desired(SEED_A);
        let mut o = converged(&d);
        host_link(&mut o, "br-pr").mtu = 1500;
        host_link(&mut o, "vxlan1070").up = false;
        let p = plan(&d, &o, PlanOptions::default()).unwrap();
        let l: Vec<String> = p.actions.iter().map(|a| a.line()).collect();
        assert_eq!(l, ["change bridge br-pr: mtu 1450 (found 1500)", "change vxlan vxlan1070: state up (found down)"]);

        let mut o = converged(&d);
        host_link(&mut o, "vxlan1070").vxlan.as_mut().unwrap().vni = 99;
        let p = plan(&d, &o, PlanOptions::default()).unwrap();
        assert_eq!(p.actions.len(), 1);
        assert_eq!(p.actions[0].verb(), Verb::Recreate);
        assert!(p.actions[0].line().contains("vni 1070 (found 99) cannot change in place"), "{}", p.actions[0].line());

        let mut o = converged(&d);
        host_link(&mut o, "vxlan1070").vxlan.as_mut().unwrap().group = Some(Ipv4Addr::new(239, 9, 9, 9));
        let p = plan(&d, &o, PlanOptions::default()).unwrap();
        assert_eq!(p.actions[0].line(), "change vxlan vxlan1070: group 239.0.4.46 (found 239.9.9.9)");
    }

    #[test]
    fn a_veth_without_its_peer_is_recreated() {
        let d = desired(SEED_A);
        let mut o = converged(&d);
        o.named.get_mut("ns1").unwrap().links.retain(|l| l.name != "veth17.1");
        let p = plan(&d, &o, PlanOptions::default()).unwrap();
        assert_eq!(lines(&p), ["recreate veth veth17.0", "create address 192.168.10.3/24 on veth17.1 in ns1"]);
    }

    #[test]
    fn removing_a_segment_removes_its_owned_links_only() {
        let two = SEED_A.replace("[router]", "[[segment]]\nbridge = \"br-x\"\nvni = 2000\ngroup = \"239.0.4.47\"\n\n[router]");
        let o = converged(&desired(&two));
        let mut o = o;
        // A VM tap in br-x keeps that bridge alive; the VXLAN link goes.
        let bx = host_link(&mut o, "br-x").index;
        o.host.links.push(Link {
            index: 99,
            name: "vnet0".into(),
            kind: Some("tun".into()),
            master: Some(bx),
            ..Link::default()
        });
        let p = plan(&desired(SEED_A), &o, PlanOptions::default()).unwrap();
        assert_eq!(lines(&p), ["remove vxlan vxlan2000"]);
        assert!(p.notes[0].contains("kept bridge br-x") && p.notes[0].contains("vnet0"), "{:?}", p.notes);
        let p = plan(&desired(SEED_A), &o, PlanOptions { force: true, nft: false }).unwrap();
        assert_eq!(lines(&p), ["remove vxlan vxlan2000", "remove bridge br-x"]);
    }

    #[test]
    fn destroy_plan_releases_the_uplink_and_removes_everything_owned() {
        let d = desired(SEED_A);
        let o = converged(&d);
        let empty = Desired::nothing(&d.host, &d.mark);
        let p = plan(&empty, &o, PlanOptions::default()).unwrap();
        assert_eq!(
            lines(&p),
            [
                "remove namespace ns1",
                "remove uplink eth1 in br-pu",
                "remove vxlan vxlan1070",
                "remove bridge br-pr",
                "remove bridge br-pu",
            ]
        );
        assert_eq!(p.actions[0].line(), "remove namespace ns1: with the veth pairs of veth15.0, veth17.0");
        assert_eq!(lines(&p).len(), 5);
    }

    #[test]
    fn a_namespace_with_foreign_objects_is_emptied_not_deleted() {
        let d = desired(SEED_A);
        let mut o = converged(&d);
        o.named.get_mut("ns1").unwrap().links.push(Link {
            index: 50,
            name: "mine0".into(),
            kind: Some("dummy".into()),
            ..Link::default()
        });
        let empty = Desired::nothing(&d.host, &d.mark);
        let p = plan(&empty, &o, PlanOptions::default()).unwrap();
        assert!(!lines(&p).contains(&"remove namespace ns1".to_string()), "{:?}", lines(&p));
        assert!(
            lines(&p).contains(&"remove veth veth17.1 in ns1".to_string())
                || lines(&p).contains(&"remove veth veth17.0".to_string())
        );
        assert!(lines(&p).contains(&"change firewall in ns1 (iptables)".to_string()), "{:?}", lines(&p));
        assert!(p.notes.iter().any(|n| n.contains("kept namespace ns1") && n.contains("mine0")), "{:?}", p.notes);
    }

    const UNICAST: &str =
        "[[segment]]\nbridge = \"br-u\"\nvni = 3000\npeers = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\"]\n\n[router]";

    #[test]
    fn unicast_peers_become_fdb_entries_without_the_own_address() {
        let d = desired(&SEED_A.replace("[router]", UNICAST));
        assert_eq!(
            d.fdb,
            vec![("vxlan3000".to_string(), Ipv4Addr::new(10, 0, 0, 2)), ("vxlan3000".to_string(), Ipv4Addr::new(10, 0, 0, 3))]
        );
        let mut o = converged(&d);
        assert!(plan(&d, &o, PlanOptions::default()).unwrap().actions.is_empty());
        // A peer removed by hand comes back; a stray one goes.
        let vx = o.host.link("vxlan3000").unwrap().index;
        o.host.fdb.retain(|(_, a)| *a != Ipv4Addr::new(10, 0, 0, 3));
        o.host.fdb.push((vx, Ipv4Addr::new(10, 0, 0, 9)));
        let p = plan(&d, &o, PlanOptions::default()).unwrap();
        assert_eq!(lines(&p), ["remove peer 10.0.0.9 on vxlan3000", "create peer 10.0.0.3 on vxlan3000"]);
    }

    #[test]
    fn switching_a_segment_from_multicast_to_unicast_recreates_its_vxlan() {
        let multicast =
            SEED_A.replace("[router]", "[[segment]]\nbridge = \"br-u\"\nvni = 3000\ngroup = \"239.1.1.1\"\n\n[router]");
        let o = converged(&desired(&multicast));
        let d = desired(&SEED_A.replace("[router]", UNICAST));
        let p = plan(&d, &o, PlanOptions::default()).unwrap();
        assert_eq!(p.actions[0].line().split(':').next().unwrap(), "recreate vxlan vxlan3000");
        assert!(p.actions[0].line().contains("unicast peers (found multicast group 239.1.1.1)"));
        assert_eq!(lines(&p)[1..], ["create peer 10.0.0.2 on vxlan3000", "create peer 10.0.0.3 on vxlan3000"]);
    }

    #[test]
    fn switching_to_nftables_replaces_the_iptables_chains_by_one_table() {
        let d = desired(SEED_A);
        let mut o = converged(&d);
        let opts = PlanOptions { force: false, nft: true };
        // auto with nft available: the chains go, the table comes.
        let ns1 = o.named.get_mut("ns1").unwrap();
        ns1.firewall.as_mut().unwrap().nft = Some(crate::firewall::nft::NftState::default());
        let p = plan(&d, &o, opts).unwrap();
        let Action::Firewall { backend, changes, .. } = &p.actions[0] else { panic!("{:?}", p.actions) };
        assert_eq!(*backend, Backend::Nftables);
        assert!(changes.iter().any(|c| matches!(c, FwChange::NftReplace { .. })));
        assert!(changes.iter().any(|c| matches!(c, FwChange::DelChain { chain, .. } if chain == "VXROUTER-FWD")));
        // Once the table is there and the chains gone, nothing is left to do.
        let table = crate::firewall::nft::desired(&d.mark, &d.firewall[0].1);
        let fw = o.named.get_mut("ns1").unwrap().firewall.as_mut().unwrap();
        fw.ipt = Some(IptState::default());
        fw.nft = Some(crate::firewall::nft::NftState { ours: Some(table), foreign: 0 });
        assert!(plan(&d, &o, opts).unwrap().actions.is_empty());
    }

    #[test]
    fn state_default_is_empty() {
        assert!(State::default().is_empty());
    }
}
