//! Desired + observed → the ordered steps that converge the host. Pure:
//! golden-tested without a kernel (tests/plan/). Each kind compares its own
//! objects (`kinds::Kind::plan`); the planner only keeps what kinds tell
//! later kinds, and puts the steps in order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::apply::Apply;
use crate::desired::Desired;
use crate::error::Result;
use crate::kinds::KINDS;
use crate::model::{Link, Ns};
use crate::observe::{NsView, Observed};

/// One thing to do to the host: it says how it reads in `plan` and `check`
/// output, and does itself (recording its inverse in the journal).
pub trait Step: fmt::Debug + Send + Sync + StepJson {
    /// The step's name in `plan --json` ("create_link").
    fn action(&self) -> &'static str;
    fn verb(&self) -> Verb;
    /// "bridge br-pr", "address 192.168.10.3/24 on veth17.1 in ns1", …
    fn object(&self) -> String;
    /// What is created, what differs and what was found, why.
    fn detail(&self) -> String {
        String::new()
    }
    /// Links (namespace, name) and namespaces this step may create: recorded
    /// before a run, so that a run killed halfway is finished by the next.
    fn creates(&self) -> (Vec<(Ns, String)>, Vec<String>) {
        (vec![], vec![])
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()>;

    /// The link (namespace, name) this step deletes, and nothing else: the
    /// executor may merge such steps next to each other into one batched
    /// unregistration (`kinds::link::delete_all`).
    fn deletes_link(&self) -> Option<(&Ns, &str)> {
        None
    }

    /// "create vxlan vxlan1070": verb and object.
    fn title(&self) -> String {
        format!("{} {}", self.verb().word(), self.object())
    }

    /// The plan line: title and detail.
    fn line(&self) -> String {
        let detail = self.detail();
        if detail.is_empty() { self.title() } else { format!("{}: {detail}", self.title()) }
    }
}

/// A step as JSON: its own fields (every step type derives `Serialize`).
pub trait StepJson {
    fn fields(&self) -> serde_json::Value;
}

impl<T: Serialize> StepJson for T {
    fn fields(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
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

impl Verb {
    pub fn word(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Change => "change",
            Verb::Recreate => "recreate",
            Verb::Remove => "remove",
        }
    }

    /// The word `check` uses.
    pub fn status(self) -> &'static str {
        match self {
            Verb::Create => "missing",
            Verb::Change | Verb::Recreate => "different",
            Verb::Remove => "extra",
        }
    }
}

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

/// When a step runs. Removals that free names come first, daemons before
/// the namespaces they run in, ports before their bridges; then creations
/// and changes in dependency order; then what needs the links in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Order {
    StopDaemons,
    RemoveNamespaces,
    RemovePorts,
    RemoveBridges,
    Create,
    Late,
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

/// The steps, plus things the operator should know that are not steps
/// (objects kept on purpose, and why).
#[derive(Debug, Default)]
pub struct Plan {
    pub steps: Vec<Box<dyn Step>>,
    pub notes: Vec<String>,
    /// Links that keep a MAC other than vxrouter's own ("ns/name" → MAC):
    /// adopted with it. The state file keeps the list, so that later runs
    /// see that MAC as intended, not as drift.
    pub kept_macs: BTreeMap<String, String>,
    /// Problems that are not changes apply could make (a BGP session down):
    /// `check` reports them and fails.
    pub health: Vec<String>,
}

/// Options that change what a plan may remove.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanOptions {
    /// Delete owned bridges even when foreign ports (VM taps) are attached:
    /// the kernel then releases those ports; they are never deleted.
    pub force: bool,
    /// `adopt`: take over unmarked objects the profile names (a host built
    /// by hand), keeping what can stay as it is (a link's MAC) so that
    /// traffic through them does not stop.
    pub adopt: bool,
}

/// The planning of one run: what is wanted and found, the steps so far, and
/// what earlier kinds established for later ones.
pub struct Planner<'a> {
    pub d: &'a Desired,
    pub o: &'a Observed,
    pub opts: PlanOptions,
    conflicts: Vec<String>,
    notes: Vec<String>,
    health: Vec<String>,
    steps: Vec<(Order, Box<dyn Step>)>,
    /// Namespaces that do not exist yet, or will be deleted.
    pub fresh_ns: BTreeSet<String>,
    /// Owned namespaces no longer wanted but holding foreign objects: they
    /// are emptied of vxrouter's objects and kept.
    pub kept_ns: Vec<String>,
    /// Host links (ifindex) that disappear with a namespace being deleted.
    pub dies_with_ns: BTreeSet<u32>,
    /// Links the plan deletes or recreates: their observed state is gone.
    pub replaced: BTreeSet<(Ns, String)>,
    /// Links that lose an address (the kernel drops the routes through it).
    pub readdressed: BTreeSet<(Ns, String)>,
    /// See [`Plan::kept_macs`].
    pub kept_macs: BTreeMap<String, String>,
}

/// Computes the steps; fails without any step when an object with a wanted
/// name exists but is not owned.
pub fn plan(d: &Desired, o: &Observed, opts: PlanOptions) -> Result<Plan, Conflicts> {
    let mut p = Planner {
        d,
        o,
        opts,
        conflicts: Vec::new(),
        notes: Vec::new(),
        health: Vec::new(),
        steps: Vec::new(),
        fresh_ns: BTreeSet::new(),
        kept_ns: Vec::new(),
        dies_with_ns: BTreeSet::new(),
        replaced: BTreeSet::new(),
        readdressed: BTreeSet::new(),
        kept_macs: BTreeMap::new(),
    };
    for k in KINDS {
        k.plan(&mut p);
    }
    if !p.conflicts.is_empty() {
        return Err(Conflicts(p.conflicts));
    }
    // Stable: within a stage, steps keep the registry's (and each kind's) order.
    p.steps.sort_by_key(|(order, _)| *order);
    Ok(Plan { steps: p.steps.into_iter().map(|(_, s)| s).collect(), notes: p.notes, kept_macs: p.kept_macs, health: p.health })
}

impl<'a> Planner<'a> {
    pub fn push(&mut self, order: Order, step: impl Step + 'static) {
        self.steps.push((order, Box::new(step)));
    }

    pub fn conflict(&mut self, what: String) {
        self.conflicts.push(what);
    }

    pub fn note(&mut self, what: String) {
        self.notes.push(what);
    }

    /// Something `check` must fail on that is not a step.
    pub fn unhealthy(&mut self, what: String) {
        self.health.push(what);
    }

    /// A namespace's view, unless the plan creates or deletes it.
    pub fn view(&self, ns: &Ns) -> Option<&'a NsView> {
        match ns {
            Ns::Named(n) if self.fresh_ns.contains(n) => None,
            _ => self.o.view(ns),
        }
    }

    /// The link carries this host's owner mark.
    pub fn owned(&self, l: &Link) -> bool {
        l.alias.as_deref() == Some(self.d.mark.as_str())
    }

    /// Not marked, but a run that was creating it was interrupted, or the
    /// operator asked to adopt unmarked objects. Only called for links the
    /// profile names: adopting never takes a link the profile does not.
    pub fn adoptable(&self, ns: &Ns, l: &Link) -> bool {
        self.interrupted(ns, l) || (self.opts.adopt && l.alias.is_none())
    }

    /// Not marked, but a run that was creating it was interrupted: it is
    /// vxrouter's, whether the profile still names it or not.
    pub fn interrupted(&self, ns: &Ns, l: &Link) -> bool {
        l.alias.is_none() && self.o.state.pending_link(ns, &l.name)
    }

    /// A link's observed state, unless this plan replaces it.
    pub fn live(&self, ns: &Ns, name: &str) -> Option<&'a Link> {
        if self.replaced.contains(&(ns.clone(), name.to_string())) {
            return None;
        }
        self.view(ns).and_then(|v| v.link(name))
    }
}

/// " in ns1" for a named namespace, nothing for the host.
pub fn in_ns(ns: &Ns) -> String {
    match ns {
        Ns::Host => String::new(),
        Ns::Named(n) => format!(" in {n}"),
    }
}

#[cfg(test)]
pub(crate) mod tests;
