//! The router namespace: a named network namespace made the way `ip netns
//! add` makes it. It is recognised as vxrouter's by its loopback's owner
//! mark (and, while a run creates it, by the state file). A namespace that is
//! no longer wanted is deleted with everything in it — one kernel teardown,
//! its veth pairs included — unless it holds objects vxrouter did not
//! create: then it is emptied of vxrouter's objects and kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::link::{self, Snapshot};
use super::{Kind, firewall, sysctl};
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::firewall::FirewallState;
use crate::journal::Undo;
use crate::model::Ns;
use crate::netlink::{LinkRef, SetLink};
use crate::netns;
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::Profile;

pub struct Namespace;

impl Kind for Namespace {
    const NAME: &'static str = "namespace";
    type Item = String;
    type Seen = ();

    fn desire(p: &Profile, _f: &Facts) -> Vec<String> {
        p.router.iter().map(|r| r.namespace.clone()).collect()
    }

    fn plan(p: &mut Planner<'_>, want: &[String], _: &()) {
        let (d, o) = (p.d, p.o);
        for r in want {
            if !o.netns.contains(r) {
                p.fresh_ns.insert(r.clone());
                p.push(Order::Create, CreateNetns { name: r.clone() });
            } else if !(owns(p, r) || (p.opts.adopt && unmarked(p, r))) {
                let who = o.named.get(r).and_then(|v| v.loopback_mark()).unwrap_or("nobody vxrouter knows");
                p.conflict(format!(
                    "namespace {r} exists but was not created by vxrouter for {} (marked: {who}); refusing to use it",
                    d.host
                ));
            }
        }
        for name in &o.stale_netns {
            if !want.contains(name) {
                p.push(Order::RemoveNamespaces, DeleteNetns { name: name.clone(), legs: vec![] });
            }
        }
        for name in &o.state.namespaces {
            if want.contains(name) || !o.netns.contains(name) || !owns(p, name) {
                continue;
            }
            let view = &o.named[name];
            // A link an interrupted run was creating is not foreign: it
            // may be unmarked still (a veth's inner end is marked after the
            // pair is made).
            let ns = Ns::Named(name.clone());
            let foreign_links: Vec<&str> = view
                .links
                .iter()
                .filter(|l| !l.loopback && !p.owned(l) && !p.interrupted(&ns, l))
                .map(|l| l.name.as_str())
                .collect();
            let foreign_rules = firewall::found(o, &Ns::Named(name.clone())).map(FirewallState::foreign).unwrap_or(0);
            if foreign_links.is_empty() && foreign_rules == 0 {
                // Host ends of pairs with an end inside go with the namespace
                // (one kernel batch, not one deletion each).
                let inside: BTreeSet<u32> = view.links.iter().map(|l| l.index).collect();
                let legs: Vec<(u32, String)> = o
                    .host
                    .links
                    .iter()
                    .filter(|l| {
                        (p.owned(l) || p.interrupted(&Ns::Host, l))
                            && l.kind.as_deref() == Some("veth")
                            && l.link.is_some_and(|x| inside.contains(&x))
                    })
                    .filter(|l| link::snapshot(o, &Ns::Host, l).peer.is_some())
                    .map(|l| (l.index, l.name.clone()))
                    .collect();
                p.dies_with_ns.extend(legs.iter().map(|(i, _)| *i));
                p.push(
                    Order::RemoveNamespaces,
                    DeleteNetns { name: name.clone(), legs: legs.into_iter().map(|(_, n)| n).collect() },
                );
                p.fresh_ns.insert(name.clone());
            } else {
                let mut what = Vec::new();
                if !foreign_links.is_empty() {
                    what.push(format!("links {}", foreign_links.join(", ")));
                }
                if foreign_rules > 0 {
                    what.push(format!("{foreign_rules} firewall rule(s)"));
                }
                p.note(format!(
                    "kept namespace {name}: it holds objects vxrouter did not create ({}); removed only vxrouter's objects from it",
                    what.join(" and ")
                ));
                p.kept_ns.push(name.clone());
            }
        }
    }
}

/// Nobody marked the namespace (made by hand): `adopt` may take it.
fn unmarked(p: &Planner<'_>, name: &str) -> bool {
    p.o.named.get(name).is_some_and(|v| v.loopback_mark().is_none())
}

/// The namespace is this host's: marked so, or being created by a run that
/// was interrupted.
fn owns(p: &Planner<'_>, name: &str) -> bool {
    match p.o.named.get(name) {
        Some(v) => match v.loopback_mark() {
            Some(m) => m == p.d.mark,
            None => p.o.state.pending_namespace(name),
        },
        None => false,
    }
}

#[derive(Debug, Serialize)]
pub struct CreateNetns {
    pub name: String,
}

impl Step for CreateNetns {
    fn action(&self) -> &'static str {
        "create_netns"
    }
    fn verb(&self) -> Verb {
        Verb::Create
    }
    fn object(&self) -> String {
        format!("namespace {}", self.name)
    }
    fn creates(&self) -> (Vec<(Ns, String)>, Vec<String>) {
        (vec![], vec![self.name.clone()])
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        netns::create(&self.name)?;
        cx.undo_with(Delete(self.name.clone()));
        cx.session.attach(&self.name)?;
        Ok(())
    }
}

/// Deleting a namespace also takes the veth pairs with an end in it
/// (`legs`, their host ends).
#[derive(Debug, Serialize)]
pub struct DeleteNetns {
    pub name: String,
    pub legs: Vec<String>,
}

impl Step for DeleteNetns {
    fn action(&self) -> &'static str {
        "delete_netns"
    }
    fn verb(&self) -> Verb {
        Verb::Remove
    }
    fn object(&self) -> String {
        format!("namespace {}", self.name)
    }
    fn detail(&self) -> String {
        if self.legs.is_empty() { String::new() } else { format!("with the veth pairs of {}", self.legs.join(", ")) }
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let contents = contents(cx, &self.name, &self.legs);
        cx.session.detach(&self.name);
        netns::delete(&self.name).with_context(|| format!("delete namespace {}", self.name))?;
        for leg in &self.legs {
            cx.vanishing(leg);
        }
        cx.undo_with(Recreate { name: self.name.clone(), contents });
        Ok(())
    }
}

/// What a namespace held, to recreate it as it was.
#[derive(Debug, Clone, Default)]
struct Contents {
    mark: Option<String>,
    /// Host ends (with their peers inside the namespace) of veth pairs.
    legs: Vec<Snapshot>,
    sysctls: BTreeMap<String, String>,
    firewall: Option<FirewallState>,
}

fn contents(cx: &Apply<'_>, name: &str, legs: &[String]) -> Contents {
    let before = cx.before;
    let ns = Ns::Named(name.to_string());
    Contents {
        mark: before.named.get(name).and_then(|v| v.loopback_mark()).map(str::to_string),
        legs: legs
            .iter()
            .filter_map(|l| before.host.link(l))
            .map(|l| link::snapshot(before, &Ns::Host, l))
            .filter(|s| s.peer.is_some())
            .collect(),
        sysctls: sysctl::found(before, &ns),
        firewall: firewall::found(before, &ns).cloned(),
    }
}

#[derive(Debug)]
struct Delete(String);

impl Undo for Delete {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        cx.session.detach(&self.0);
        netns::delete(&self.0).with_context(|| format!("delete namespace {}", self.0))
    }
}

#[derive(Debug)]
struct Recreate {
    name: String,
    contents: Contents,
}

impl Undo for Recreate {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        let (name, c) = (&self.name, &self.contents);
        let legs: Vec<String> = c.legs.iter().map(|l| l.link.name.clone()).collect();
        cx.await_vanished(&legs)?;
        netns::create(name).with_context(|| format!("recreate namespace {name}"))?;
        cx.session.attach(name)?;
        let ns = Ns::Named(name.clone());
        let set = SetLink { alias: c.mark.clone(), up: Some(true), ..SetLink::default() };
        cx.sock(&ns)?.set_link(LinkRef::Name("lo"), &set).with_context(|| format!("mark lo in {name}"))?;
        for leg in &c.legs {
            link::restore_link(cx, leg)?;
        }
        // Before the addresses: writing IPv6 switches drops a link's IPv6
        // addresses, and `all`/`default` reset every link's, so they go
        // first and the per-link ones after them.
        // Per-link ones only for the links that came back (a link the
        // namespace held that is not one of these legs' ends went with it).
        let global = |k: &str| k.contains("/conf/all/") || k.contains("/conf/default/");
        let back: Vec<&str> = c.legs.iter().filter_map(|l| l.peer.as_ref()).map(|p| p.link.name.as_str()).collect();
        let per_link_of_a_leg = |k: &str| back.iter().any(|l| k.contains(&format!("/conf/{l}/")));
        let ordered = c.sysctls.iter().filter(|(k, _)| global(k)).chain(c.sysctls.iter().filter(|(k, _)| !global(k)));
        for (k, v) in ordered.filter(|(k, _)| global(k) || !k.contains("/conf/") || per_link_of_a_leg(k)) {
            sysctl::write(cx.file(&ns)?, k, v)?;
        }
        for leg in &c.legs {
            link::restore_addresses(cx, leg)?;
        }
        if let Some(fw) = &c.firewall {
            firewall::restore_fresh(cx, &ns, fw)?;
        }
        Ok(())
    }
}
