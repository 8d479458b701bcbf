//! Removing many links at once: batched unregistration through a transient
//! interface group.
//!
//! Deleting links one `RTM_DELLINK` at a time unregisters each on its own,
//! and every unregistration waits for RCU grace periods (~30 ms per link
//! here: 59 s to destroy N = 1000). The kernel deletes a whole interface
//! group with one request and unregisters all of it in one batch
//! (`rtnl_group_dellink` → `unregister_netdevice_many`), what
//! `ip link del group G` sends: measured here for 200 segments, 15.3 s one
//! by one → 3.4 s as one group (bridges still pay an `rcu_barrier` each in
//! `br_multicast_dev_del`, ~17 ms; their ports cost almost nothing).
//!
//! So the links to remove are put into a group just before, then that group
//! is deleted:
//! - The group is taken from a range of its own (`FIRST`, 256 numbers) and
//!   only if no link in any namespace the run looked at carries it, checked
//!   again in a fresh dump of the namespace before it is taken and, once the
//!   links are in it, that exactly they are: a foreign link in the group
//!   aborts the run (rolled back) before anything is deleted.
//! - Crash safety: a run killed between the two steps leaves owned links in
//!   a group of that range. The next run deletes them if the profile no
//!   longer wants them, or (the profile wants them again) moves them back to
//!   the default group — the planner treats a transient group on a link the
//!   profile names as drift (`link::change`), which needs neither the state
//!   file nor the killed run's memory.
//! - Undo: every group change records its inverse, every deleted link the
//!   snapshot that recreates it (`link::restore`), as one-by-one deletion
//!   does.

use std::collections::{BTreeMap, BTreeSet};

use super::{Restore, snapshot};
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::journal::Undo;
use crate::model::{Link, Ns};
use crate::netlink::LinkRef;

/// The first of the interface groups vxrouter uses for a moment ("VX" in
/// the high bytes: far from the small numbers operators give groups).
pub const FIRST: u32 = 0x5658_0000;
const COUNT: u32 = 256;

/// Below this many links, a plain delete per link is as fast (setting the
/// group and the two checks cost two dumps of the namespace).
pub const MIN_BATCH: usize = 2;

/// A group vxrouter uses only while removing links.
pub fn is_transient(group: u32) -> bool {
    (FIRST..FIRST + COUNT).contains(&group)
}

/// The first transient group none of `used` is.
fn free(used: &BTreeSet<u32>) -> Option<u32> {
    (FIRST..FIRST + COUNT).find(|g| !used.contains(g))
}

/// Deletes the links `names` of namespace `ns` (those still there) in one
/// batched unregistration. Links already gone (a veth whose other end or
/// namespace took it along) are fine, as with one-by-one deletion.
pub fn delete_all(cx: &mut Apply<'_>, ns: &Ns, names: &[&str]) -> Result<()> {
    let current = cx.sock(ns)?.links().with_context(|| format!("list links in {ns}"))?;
    let by_name: BTreeMap<&str, &Link> = current.iter().map(|l| (l.name.as_str(), l)).collect();
    let doomed: Vec<&Link> = names.iter().filter_map(|n| by_name.get(n).copied()).collect();
    if doomed.is_empty() {
        return Ok(());
    }
    // Unused in this namespace now and in every namespace the run observed.
    let mut used: BTreeSet<u32> = current.iter().map(|l| l.group).collect();
    used.extend(cx.before.host.links.iter().map(|l| l.group));
    used.extend(cx.before.named.values().flat_map(|v| v.links.iter().map(|l| l.group)));
    let Some(group) = free(&used) else {
        crate::bail!(
            Conflict,
            "cannot remove links in {ns} in one batch: every interface group {FIRST}–{} is in use",
            FIRST + COUNT - 1
        );
    };
    for l in &doomed {
        cx.sock(ns)?
            .set_group(LinkRef::Index(l.index), group)
            .with_context(|| format!("put {} in {ns} into interface group {group} (to delete it)", l.name))?;
        cx.undo_with(GroupBack { ns: ns.clone(), name: l.name.clone(), group: l.group });
    }
    crate::testhooks::named_point("group-set");
    // Exactly our links carry the group: nothing foreign may go with them.
    let now = cx.sock(ns)?.links().with_context(|| format!("list links in {ns}"))?;
    let ours: BTreeSet<u32> = doomed.iter().map(|l| l.index).collect();
    let foreign: Vec<&str> =
        now.iter().filter(|l| l.group == group && !ours.contains(&l.index)).map(|l| l.name.as_str()).collect();
    if !foreign.is_empty() {
        crate::bail!(
            Conflict,
            "interface group {group} in {ns} also holds {} (not vxrouter's): nothing deleted",
            foreign.join(", ")
        );
    }
    let restores: Vec<_> =
        doomed.iter().map(|l| cx.before.view(ns).and_then(|v| v.link(&l.name)).map(|b| snapshot(cx.before, ns, b))).collect();
    let restores: Vec<_> =
        restores.into_iter().map(|r| r.map(|s| super::with_sysctls(cx, s)).transpose()).collect::<Result<_>>()?;
    let deleted = cx
        .sock(ns)?
        .delete_group(group)
        .with_context(|| format!("delete interface group {group} in {ns} ({} links)", doomed.len()))?;
    crate::testhooks::named_point("group-deleted");
    for (l, restore) in doomed.iter().zip(restores) {
        if let Some(p) = restore.as_ref().and_then(|s| s.peer.as_ref()) {
            cx.forget(&p.ns, &p.link.name);
        }
        if deleted && let Some(s) = restore {
            cx.undo_with(Restore(s));
        }
        cx.forget(ns, &l.name);
    }
    Ok(())
}

/// Puts a link back into the group it was in (undoing a failed batch that
/// did not get as far as deleting it; harmless on a recreated link).
#[derive(Debug)]
struct GroupBack {
    ns: Ns,
    name: String,
    group: u32,
}

impl Undo for GroupBack {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        match cx.sock(&self.ns)?.set_group(LinkRef::Name(&self.name), self.group) {
            Ok(()) => Ok(()),
            // Deleted after all (by the group delete): its Restore has put it
            // back with its group already.
            Err(e) if e.is(libc::ENODEV) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("put {} in {} back into group {}", self.name, self.ns, self.group)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transient_range_is_its_own() {
        assert!(is_transient(FIRST) && is_transient(FIRST + 255));
        assert!(!is_transient(0) && !is_transient(FIRST - 1) && !is_transient(FIRST + 256));
        let used: BTreeSet<u32> = [0, FIRST, FIRST + 1].into();
        assert_eq!(free(&used), Some(FIRST + 2));
        let all: BTreeSet<u32> = (FIRST..FIRST + COUNT).collect();
        assert_eq!(free(&all), None);
    }
}
