//! Executes a plan: steps run in order, each recording its inverse in the
//! journal; if a step fails, the steps already taken are undone in reverse
//! order and the original error is returned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::journal::{Journal, Undo};
use crate::model::{Link, Ns};
use crate::netlink::{Netlink, Session};
use crate::observe::Observed;
use crate::plan::Step;
use crate::testhooks;

/// Everything a step needs to act: sockets, the host as it was observed
/// before the run (to know what to put back), the journal.
pub struct Apply<'a> {
    pub session: &'a mut Session,
    /// The host before this run.
    pub before: &'a Observed,
    pub mark: String,
    /// The profile's host name (files of its dnsmasq instances).
    pub host: String,
    pub run_dir: PathBuf,
    pub journal: Journal,
    index: HashMap<(Ns, String), u32>,
    /// Links whose addresses get a gratuitous ARP once the run has succeeded.
    announcements: BTreeSet<(Ns, String)>,
    /// Host ends of the veth pairs of namespaces this run deleted, which the
    /// kernel removes on its own time (see `await_vanished`).
    vanishing: Vec<String>,
    /// Problems found after the last step that undoing would not fix.
    pub warnings: Vec<String>,
}

/// How long a deleted namespace may take to release its veth pairs.
const VANISH_TIMEOUT: Duration = Duration::from_secs(30);

impl<'a> Apply<'a> {
    pub fn new(session: &'a mut Session, before: &'a Observed, mark: &str, host: &str) -> Apply<'a> {
        Apply {
            session,
            before,
            mark: mark.to_string(),
            host: host.to_string(),
            run_dir: before.facts.run_dir.clone(),
            journal: Journal::default(),
            index: HashMap::new(),
            announcements: BTreeSet::new(),
            vanishing: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub fn sock(&mut self, ns: &Ns) -> Result<&mut Netlink> {
        self.session.sock(ns)
    }

    pub fn file(&self, ns: &Ns) -> Result<Option<&File>> {
        self.session.file(ns)
    }

    /// Records how to undo what was just done.
    pub fn undo_with(&mut self, u: impl Undo + 'static) {
        self.journal.record(u);
    }

    /// A link's ifindex in a namespace (cached for the run).
    pub fn resolve(&mut self, ns: &Ns, name: &str) -> Result<u32> {
        if let Some(i) = self.index.get(&(ns.clone(), name.to_string())) {
            return Ok(*i);
        }
        let link = self.sock(ns)?.link(name).with_context(|| format!("find link {name} in {ns}"))?;
        let index = link.ok_or_else(|| crate::error!(Kernel, "link {name} not found in {ns}"))?.index;
        self.index.insert((ns.clone(), name.to_string()), index);
        Ok(index)
    }

    /// Forgets a cached ifindex (the link was deleted or recreated).
    pub fn forget(&mut self, ns: &Ns, name: &str) {
        self.index.remove(&(ns.clone(), name.to_string()));
    }

    /// A link as it was before the run.
    pub fn link_before(&self, ns: &Ns, name: &str) -> Option<&'a Link> {
        self.before.view(ns).and_then(|v| v.link(name))
    }

    /// Queues gratuitous ARPs for the addresses `link` holds, sent when the
    /// run has succeeded.
    pub fn announce(&mut self, ns: &Ns, link: &str) {
        self.announcements.insert((ns.clone(), link.to_string()));
    }

    /// A host link the kernel removes on its own (with a deleted namespace).
    pub fn vanishing(&mut self, name: &str) {
        self.forget(&Ns::Host, name);
        self.vanishing.push(name.to_string());
    }

    /// Waits until none of `names` is left in the host namespace. Deleting a
    /// namespace only drops its name: the kernel tears it down, veth pairs
    /// included, later on a workqueue, and not at all while a process (even
    /// a short-lived helper) is still inside. Verification, or recreating
    /// the pairs on undo, must not run before that.
    pub fn await_vanished(&mut self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        self.vanishing.retain(|v| !names.contains(v));
        let deadline = Instant::now() + VANISH_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        loop {
            let links = self.sock(&Ns::Host)?.links().context("list links")?;
            let left: Vec<String> = links.into_iter().map(|l| l.name).filter(|n| names.contains(n)).collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                crate::bail!(
                    Kernel,
                    "a deleted namespace's veth pairs ({}) are still here after {} s: a process may still be \
                     running inside that namespace (find it with `lsns -t net`)",
                    left.join(", "),
                    VANISH_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Undoes every journaled step in reverse order; returns what failed.
    pub fn rollback(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(u) = self.journal.pop() {
            if testhooks::fail_undo() {
                errors.push(format!("undo: injected fault ({u:?})"));
                continue;
            }
            if let Err(e) = u.undo(self) {
                errors.push(format!("undo: {e}"));
            }
        }
        errors
    }

    /// Best effort: an announcement that cannot be sent (link without
    /// carrier yet) only delays neighbours until they ask. One link dump and
    /// one address dump per namespace; sent from one packet socket per
    /// namespace by a detached helper (closing a packet socket waits for an
    /// RCU grace period, ~15 ms, which stays off the run).
    fn send_announcements(&mut self) {
        let mut by_ns: BTreeMap<Ns, Vec<String>> = BTreeMap::new();
        for (ns, link) in std::mem::take(&mut self.announcements) {
            by_ns.entry(ns).or_default().push(link);
        }
        for (ns, names) in by_ns {
            let Ok(sock) = self.sock(&ns) else { continue };
            let (Ok(links), Ok(addrs)) = (sock.links(), sock.addrs()) else { continue };
            let frames: Vec<(u32, [u8; 6], Ipv4Addr)> = links
                .iter()
                .filter(|l| l.up && names.contains(&l.name))
                .filter_map(|l| Some((l.index, l.mac?)))
                .flat_map(|(index, mac)| {
                    addrs.iter().filter(move |a| a.index == index).filter_map(move |a| match a.cidr.addr() {
                        std::net::IpAddr::V4(ip) => Some((index, mac, ip)),
                        std::net::IpAddr::V6(_) => None,
                    })
                })
                .collect();
            if let Ok(file) = self.file(&ns) {
                let _ = crate::garp::announce_detached(file, &frames);
            }
        }
    }
}

/// Runs every step, calling `progress` after each. On failure, undoes what
/// this run did and returns the original error, saying whether the host is
/// as before (kind of the error) or not (`IncompleteRollback`). Link
/// deletions next to each other in one namespace run as one batch
/// (`kinds::link::delete_all`): one unregistration instead of one per link.
pub fn run(steps: &[Box<dyn Step>], cx: &mut Apply<'_>, mut progress: impl FnMut(&dyn Step)) -> Result<()> {
    let mut i = 0;
    while i < steps.len() {
        let step = &steps[i];
        let n = i + 1;
        testhooks::signal_step(n);
        if let Some(sig) = crate::signals::caught() {
            let e = crate::error!(Interrupted, "interrupted by {sig} before step {n} ({})", step.title());
            return Err(rolled_back(e, cx.rollback()));
        }
        if let Some((ns, batch)) = deletion_batch(steps, i).filter(|(_, b)| b.len() >= crate::kinds::link::MIN_BATCH) {
            let names: Vec<&str> = batch.iter().filter_map(|s| s.deletes_link().map(|(_, name)| name)).collect();
            if let Err(e) = crate::kinds::link::delete_all(cx, ns, &names) {
                let e = e.context(format!("remove {} links in {ns} ({} …)", names.len(), step.title()));
                return Err(rolled_back(e, cx.rollback()));
            }
            for s in batch {
                progress(s.as_ref());
            }
            i += batch.len();
            continue;
        }
        i += 1;
        let result = if testhooks::fail_step(n) {
            Err(crate::error!(Internal, "injected fault before step {n}"))
        } else if testhooks::skip_step(n) {
            Ok(())
        } else {
            step.apply(cx)
        };
        if let Err(e) = result {
            return Err(rolled_back(e.context(step.title()), cx.rollback()));
        }
        progress(step.as_ref());
    }
    let gone = std::mem::take(&mut cx.vanishing);
    if let Err(e) = cx.await_vanished(&gone) {
        cx.warnings.push(e.to_string());
    }
    cx.send_announcements();
    Ok(())
}

/// The link deletions in one namespace from step `i` on, up to the first
/// other step (or a step a fault-injection hook aims at, which must run on
/// its own).
fn deletion_batch(steps: &[Box<dyn Step>], i: usize) -> Option<(&Ns, &[Box<dyn Step>])> {
    let (ns, _) = steps[i].deletes_link()?;
    let len = steps[i..]
        .iter()
        .enumerate()
        .take_while(|(k, s)| s.deletes_link().is_some_and(|(other, _)| other == ns) && !testhooks::targets_step(i + k + 1))
        .count();
    Some((ns, &steps[i..i + len]))
}

/// The error of a failed run, with what its rollback achieved.
pub fn rolled_back(e: Error, undo_errors: Vec<String>) -> Error {
    if undo_errors.is_empty() {
        let kind = e.kind();
        return crate::error::Error::new(kind, format!("{e}\nrolled back: the host is as it was before this run"));
    }
    Error::new(
        ErrorKind::IncompleteRollback,
        format!("{e}\nrollback was incomplete, the host may differ from before this run:\n  {}", undo_errors.join("\n  ")),
    )
}
