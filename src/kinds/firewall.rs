//! The firewall: the rules vxrouter owns in each namespace (the router's
//! policy; on the host, underlay protection), written by the backend the
//! profile chooses (`firewall::Driver`). A backend switch removes the old
//! backend's rules in the same step; namespaces kept for their foreign
//! objects, and the host once protection is dropped, are emptied of
//! vxrouter's rules.

use ipnet::IpNet;
use serde::Serialize;

use super::{Kind, ObserveCx};
use crate::apply::Apply;
use crate::desired::Desired;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::firewall::rules::{Policy, router_policy, underlay_policy};
use crate::firewall::{self, BACKENDS, Backend, FirewallState, FwChange};
use crate::journal::Undo;
use crate::model::Ns;
use crate::observe::Observed;
use crate::plan::{Order, Planner, Step, Verb, in_ns};
use crate::profile::{FirewallChoice, Profile};
use crate::scope::Depth;
use crate::state::{self, State};

pub struct Firewall;

/// The rules wanted in one namespace, and the tool that writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rules {
    pub ns: Ns,
    pub policy: Policy,
    pub backend: Backend,
}

/// Each namespace's firewall as read, through the backends looked at.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Seen {
    pub namespaces: Vec<(Ns, FirewallState)>,
    /// Verification after an apply: the rules were not read again (each
    /// batch is atomic), so nothing is planned.
    pub skipped: bool,
}

impl Kind for Firewall {
    const NAME: &'static str = "firewall";
    type Item = Rules;
    type Seen = Seen;

    fn desire(p: &Profile, f: &Facts) -> Vec<Rules> {
        let mut out = Vec::new();
        if let Some(r) = &p.router {
            out.push(Rules {
                ns: Ns::Named(r.namespace.clone()),
                policy: router_policy(r),
                backend: firewall::resolve(r.firewall, f.nft),
            });
        }
        if let Some(u) = &p.underlay
            && let Some(allow) = &u.allow
        {
            let mut ports: Vec<u16> = p.segments.iter().map(|s| s.port).collect();
            let mut allow = allow.clone();
            // The HA link is VXLAN from the peer router host.
            if let Some(ha) = p.router.as_ref().and_then(|r| r.ha.as_ref()) {
                ports.push(crate::profile::DEFAULT_VXLAN_PORT);
                if !allow.iter().any(|a| a.contains(&ha.peer)) {
                    allow.push(IpNet::from(ha.peer));
                }
            }
            ports.sort();
            ports.dedup();
            let choice = p.router.as_ref().map(|r| r.firewall).unwrap_or(FirewallChoice::Auto);
            out.push(Rules {
                ns: Ns::Host,
                policy: underlay_policy(&ports, &allow, u.ipv6()),
                backend: firewall::resolve(choice, f.nft),
            });
        }
        out
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Seen> {
        let o = cx.observed;
        let mut seen = Seen { skipped: cx.scope.depth == Depth::Verify, ..Seen::default() };
        let spaces = std::iter::once(Ns::Host).chain(o.named.keys().map(|n| Ns::Named(n.clone())));
        for ns in spaces {
            let backends = reads(&ns, cx.desired, &o.state, cx.scope.depth);
            if backends.is_empty() {
                continue;
            }
            let where_ = if ns == Ns::Host { "the host".to_string() } else { format!("namespace {ns}") };
            let st = firewall::read(cx.session.file(&ns)?, &where_, &backends)?;
            seen.namespaces.push((ns, st));
        }
        Ok(seen)
    }

    fn plan(p: &mut Planner<'_>, want: &[Rules], seen: &Seen) {
        if seen.skipped {
            return;
        }
        let empty = Policy::default();
        let mut todo: Vec<(Ns, &Policy, Backend)> = want.iter().map(|r| (r.ns.clone(), &r.policy, r.backend)).collect();
        // Rules vxrouter no longer wants: in namespaces it keeps for their
        // foreign objects, and on the host when underlay protection is gone.
        // (Named after the backend that held the rules, for the plan line.)
        let held = |ns: &Ns| {
            p.o.state.firewall.get(&state::fw_key(ns)).and_then(|b| b.iter().next_back().copied()).unwrap_or(Backend::Iptables)
        };
        todo.extend(p.kept_ns.iter().map(|n| (Ns::Named(n.clone()), &empty, held(&Ns::Named(n.clone())))));
        if p.o.state.firewall.contains_key(&state::fw_key(&Ns::Host)) && !todo.iter().any(|(ns, _, _)| *ns == Ns::Host) {
            todo.push((Ns::Host, &empty, held(&Ns::Host)));
        }
        for (ns, policy, backend) in todo {
            let have = p.view(&ns).and(found(p.o, &ns)).cloned().unwrap_or_default();
            match firewall::changes(&p.d.mark, policy, backend, &have) {
                Ok(changes) if changes.is_empty() => {}
                Ok(changes) => p.push(Order::Late, WriteRules { ns, backend, changes }),
                Err(conflict) => p.conflict(format!("{conflict} (in {ns}); refusing to replace it")),
            }
        }
    }
}

/// Which backends to read in a namespace: the one its rules should be in
/// (skipped when verifying), and every one vxrouter left rules in before (a
/// backend switch removes those).
fn reads(ns: &Ns, desired: &Desired, st: &State, depth: Depth) -> Vec<Backend> {
    let wanted = desired.of::<Firewall>().iter().find(|r| r.ns == *ns);
    if depth == Depth::Verify && wanted.is_some() {
        return vec![];
    }
    let mut out: Vec<Backend> = st.firewall.get(&state::fw_key(ns)).map(|s| s.iter().copied().collect()).unwrap_or_default();
    if depth == Depth::Full
        && let Some(r) = wanted
    {
        out.push(r.backend);
    }
    out.sort();
    out.dedup();
    out
}

/// A namespace's firewall as it was observed.
pub fn found<'a>(o: &'a Observed, ns: &Ns) -> Option<&'a FirewallState> {
    o.seen::<Firewall>()?.namespaces.iter().find(|(n, _)| n == ns).map(|(_, st)| st)
}

/// Puts `state`'s rules back into a namespace that was just made again.
pub fn restore_fresh(cx: &mut Apply<'_>, ns: &Ns, state: &FirewallState) -> Result<()> {
    let changes: Vec<FwChange> = BACKENDS.iter().flat_map(|b| b.driver().recreate(state)).collect();
    firewall::write(cx.file(ns)?, &format!("namespace {ns}"), &changes)
}

/// One batch per backend: `iptables-restore` for the owned chains, one
/// `nft -f` transaction for the owned table.
#[derive(Debug, Serialize)]
pub struct WriteRules {
    pub ns: Ns,
    pub backend: Backend,
    pub changes: Vec<FwChange>,
}

impl Step for WriteRules {
    fn action(&self) -> &'static str {
        "firewall"
    }
    fn verb(&self) -> Verb {
        if self.changes.iter().all(FwChange::is_creation) { Verb::Create } else { Verb::Change }
    }
    fn object(&self) -> String {
        format!("firewall{} ({})", in_ns(&self.ns), self.backend.name())
    }
    fn detail(&self) -> String {
        self.changes.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; ")
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let before = found(cx.before, &self.ns).cloned().unwrap_or_default();
        firewall::write(cx.file(&self.ns)?, &format!("namespace {}", self.ns), &self.changes)?;
        cx.undo_with(Revert { ns: self.ns.clone(), changes: firewall::inverse(&self.changes, &before) });
        Ok(())
    }
}

#[derive(Debug)]
struct Revert {
    ns: Ns,
    changes: Vec<FwChange>,
}

impl Undo for Revert {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        firewall::write(cx.file(&self.ns)?, &format!("namespace {}", self.ns), &self.changes)
            .with_context(|| format!("firewall in {}", self.ns))
    }
}
