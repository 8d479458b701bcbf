//! The host as it is: one view per network namespace (links, addresses,
//! routes — one dump each, never a request per object), plus what each kind
//! reads of its own (`kinds::Kind::observe`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::desired::Desired;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::kinds::{KINDS, Kind, ObserveCx, Parts};
use crate::model::{Addr, Link, Ns, Route};
use crate::netlink::{Netlink, Session};
use crate::scope::{Depth, Scope};
use crate::state::State;

/// One namespace as the kernel shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NsView {
    pub links: Vec<Link>,
    pub addrs: Vec<Addr>,
    pub routes: Vec<Route>,
    #[serde(skip)]
    index: LinkIndex,
    #[serde(skip)]
    addr_index: AddrIndex,
}

/// Addresses by link, like `LinkIndex` (planning asks for each leg's).
#[derive(Debug, Clone, Default)]
struct AddrIndex(std::sync::OnceLock<(usize, HashMap<u32, Vec<usize>>)>);

/// Links by name and by ifindex, built on first lookup. Planning looks
/// links up by name and index for every wanted and every observed link; a
/// scan each time made a plan at N = 1000 (~4000 links) quadratic. Views
/// are not changed once observed; the index remembers how many links it
/// covered and is bypassed (a scan) if links were added after it was built
/// (unit tests assemble views by hand), and a hit is always checked.
#[derive(Debug, Clone, Default)]
struct LinkIndex(std::sync::OnceLock<Built>);

#[derive(Debug, Clone)]
struct Built {
    /// How many links it covers.
    covers: usize,
    by_name: HashMap<String, usize>,
    by_index: HashMap<u32, usize>,
}

impl NsView {
    pub fn new(links: Vec<Link>, addrs: Vec<Addr>, routes: Vec<Route>) -> NsView {
        NsView { links, addrs, routes, index: LinkIndex::default(), addr_index: AddrIndex::default() }
    }

    fn indexed(&self) -> Option<&Built> {
        let built = self.index.0.get_or_init(|| {
            let by_name = self.links.iter().enumerate().map(|(i, l)| (l.name.clone(), i)).collect();
            let by_index = self.links.iter().enumerate().map(|(i, l)| (l.index, i)).collect();
            Built { covers: self.links.len(), by_name, by_index }
        });
        (built.covers == self.links.len()).then_some(built)
    }

    pub fn link(&self, name: &str) -> Option<&Link> {
        match self.indexed().map(|b| b.by_name.get(name).and_then(|i| self.links.get(*i))) {
            Some(None) => None,
            Some(Some(l)) if l.name == name => Some(l),
            _ => self.links.iter().find(|l| l.name == name),
        }
    }
    pub fn by_index(&self, index: u32) -> Option<&Link> {
        match self.indexed().map(|b| b.by_index.get(&index).and_then(|i| self.links.get(*i))) {
            Some(None) => None,
            Some(Some(l)) if l.index == index => Some(l),
            _ => self.links.iter().find(|l| l.index == index),
        }
    }
    pub fn addrs_of(&self, index: u32) -> impl Iterator<Item = &Addr> {
        let built = self.addr_index.0.get_or_init(|| {
            let mut by_link: HashMap<u32, Vec<usize>> = HashMap::new();
            for (i, a) in self.addrs.iter().enumerate() {
                by_link.entry(a.index).or_default().push(i);
            }
            (self.addrs.len(), by_link)
        });
        // Indexed unless addresses were added after it was built (tests).
        let (indexed, scan) = if built.0 == self.addrs.len() {
            (built.1.get(&index).map(Vec::as_slice).unwrap_or_default(), &[][..])
        } else {
            (&[][..], &self.addrs[..])
        };
        indexed.iter().filter_map(|i| self.addrs.get(*i)).chain(scan.iter()).filter(move |a| a.index == index)
    }
    /// The namespace's loopback carries the owner mark of a router namespace.
    pub fn loopback_mark(&self) -> Option<&str> {
        self.links.iter().find(|l| l.loopback).and_then(|l| l.alias.as_deref())
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
struct Core {
    facts: Facts,
    host: NsView,
    named: BTreeMap<String, NsView>,
    netns: BTreeSet<String>,
    stale_netns: BTreeSet<String>,
    state: State,
}

#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub facts: Facts,
    pub host: NsView,
    /// Named namespaces that exist and were looked into.
    pub named: BTreeMap<String, NsView>,
    /// Every name under /run/netns.
    pub netns: BTreeSet<String>,
    /// Names of ours under /run/netns with no namespace behind them (a run
    /// was killed while creating it).
    pub stale_netns: BTreeSet<String>,
    pub state: State,
    pub depth: Depth,
    /// What each kind read of its own.
    pub parts: Parts,
}

impl Observed {
    pub fn view(&self, ns: &Ns) -> Option<&NsView> {
        match ns {
            Ns::Host => Some(&self.host),
            Ns::Named(n) => self.named.get(n),
        }
    }

    /// What kind `K` read of its own.
    pub fn seen<K: Kind>(&self) -> Option<&K::Seen> {
        self.parts.get::<K, K::Seen>()
    }

    /// As in `observed.json` (`vxrouter __observed`, the golden plan tests):
    /// the views, and each kind's part under its name.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        let core = Core {
            facts: self.facts.clone(),
            host: self.host.clone(),
            named: self.named.clone(),
            netns: self.netns.clone(),
            stale_netns: self.stale_netns.clone(),
            state: self.state.clone(),
        };
        let mut doc = serde_json::to_value(core)?;
        for k in KINDS {
            doc[k.name()] = k.seen_json(&self.parts)?;
        }
        Ok(doc)
    }

    pub fn from_json(mut doc: serde_json::Value) -> Result<Observed> {
        let mut parts = Parts::default();
        for k in KINDS {
            let v = doc.get_mut(k.name()).map(serde_json::Value::take).unwrap_or_default();
            parts.insert_part(k.key(), k.seen_from_json(v)?);
        }
        let c: Core = serde_json::from_value(doc)?;
        Ok(Observed {
            facts: c.facts,
            host: c.host,
            named: c.named,
            netns: c.netns,
            stale_netns: c.stale_netns,
            state: c.state,
            depth: Depth::Full,
            parts,
        })
    }
}

/// Links, addresses and routes of the socket's namespace: IPv4 routes, and
/// in a router namespace IPv6 routes too (vxrouter routes nothing else over
/// IPv6, and the host's may be many).
pub fn read_view(sock: &mut Netlink, ns: &Ns) -> Result<NsView> {
    let mut routes = sock.routes(false).with_context(|| format!("list routes in {ns}"))?;
    if *ns != Ns::Host {
        routes.extend(sock.routes(true).with_context(|| format!("list IPv6 routes in {ns}"))?);
    }
    Ok(NsView::new(
        sock.links().with_context(|| format!("list links in {ns}"))?,
        sock.addrs().with_context(|| format!("list addresses in {ns}"))?,
        routes,
    ))
}

/// Observes everything in `scope`: the named namespaces' views, then each
/// kind's own part, in registry order. `host` is the host's view, already
/// read for the facts.
pub fn read(
    session: &mut Session,
    facts: Facts,
    host: NsView,
    state: State,
    scope: &Scope,
    desired: &Desired,
) -> Result<Observed> {
    let mut o = Observed {
        facts,
        host,
        netns: crate::netns::list()?.into_iter().collect(),
        state,
        depth: scope.depth,
        ..Observed::default()
    };
    for name in &scope.namespaces {
        if session.attach(name)? {
            let ns = Ns::Named(name.clone());
            let view = read_view(session.sock(&ns)?, &ns)?;
            o.named.insert(name.clone(), view);
        } else if o.netns.contains(name) && (o.state.namespaces.contains(name) || o.state.pending_namespace(name)) {
            o.netns.remove(name);
            o.stale_netns.insert(name.clone());
        }
    }
    for k in KINDS {
        let part = k.observe(&mut ObserveCx { session, scope, desired, observed: &o })?;
        o.parts.insert_part(k.key(), part);
    }
    Ok(o)
}
