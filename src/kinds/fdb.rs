//! Unicast peers: a segment with `peers` gets a VXLAN link without a group
//! and, per peer, an all-zero bridge FDB entry (`RTM_NEWNEIGH`, AF_BRIDGE,
//! NTF_SELF, permanent, appended): broadcast, unknown unicast and multicast
//! frames are copied to every peer (head-end replication). The host's own
//! address may be listed (one list for all hosts): a tunnel to itself is
//! skipped. Entries are read with one FDB dump, only where unicast peers
//! are wanted or were used. An EVPN segment's entries are FRR's (zebra
//! installs the flood list it learns from BGP): never judged or removed.

use std::net::IpAddr;

use serde::Serialize;

use super::{Kind, ObserveCx, vxlan};
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::{FdbEntry, LinkKind, Ns};
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::{Flood, Profile};

pub struct Fdb;

/// A peer of a VXLAN link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    pub vxlan: String,
    pub peer: IpAddr,
}

impl Kind for Fdb {
    const NAME: &'static str = "fdb";
    type Item = Peer;
    /// The host's all-zero-MAC entries (None: not read, nothing needs them).
    type Seen = Option<Vec<FdbEntry>>;

    fn desire(p: &Profile, f: &Facts) -> Vec<Peer> {
        let local = vxlan::local_address(p, f);
        let mut out = Vec::new();
        for s in &p.segments {
            if let Flood::Unicast(peers) = &s.flood {
                out.extend(peers.iter().filter(|a| **a != local).map(|a| Peer { vxlan: s.vxlan.clone(), peer: *a }));
            }
        }
        out
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Self::Seen> {
        let mark = cx.desired.mark.as_str();
        let unicast_before = cx
            .observed
            .host
            .links
            .iter()
            .any(|l| l.alias.as_deref() == Some(mark) && l.vxlan.as_ref().is_some_and(|v| v.group.is_none()));
        if cx.desired.of::<Fdb>().is_empty() && !unicast_before {
            return Ok(None);
        }
        Ok(Some(cx.session.sock(&Ns::Host)?.fdb().context("list bridge FDB in host")?))
    }

    fn plan(p: &mut Planner<'_>, want: &[Peer], seen: &Self::Seen) {
        let found: &[FdbEntry] = seen.as_deref().unwrap_or_default();
        let host = &p.o.host;
        let mut vxlans: Vec<&str> = want.iter().map(|w| w.vxlan.as_str()).collect();
        // Owned VXLAN links whose peers may have to go.
        vxlans.extend(host.links.iter().filter(|l| l.vxlan.is_some() && p.owned(l)).map(|l| l.name.as_str()));
        vxlans.sort();
        vxlans.dedup();
        for vx in vxlans {
            let Some(spec) = p.d.link(&Ns::Host, vx) else {
                continue; // the link itself goes, with its entries
            };
            if matches!(&spec.kind, LinkKind::Vxlan(v) if !v.learning) {
                // An EVPN segment (the only VXLAN without learning): its
                // flood list is zebra's, from BGP, not vxrouter's to judge
                // or to remove.
                continue;
            }
            let wanted: Vec<IpAddr> = want.iter().filter(|w| w.vxlan == vx).map(|w| w.peer).collect();
            // A link with a group has the kernel's own all-zero entry for
            // it (dst = the group): not a peer (a profile mixing group and
            // peer segments reads the FDB of both kinds of link).
            let have: Vec<IpAddr> = match p.live(&Ns::Host, vx) {
                Some(l) => {
                    let group = l.vxlan.as_ref().and_then(|v| v.group);
                    found.iter().filter(|e| e.index == l.index && Some(e.dst) != group).map(|e| e.dst).collect()
                }
                None => vec![],
            };
            for a in have.iter().filter(|a| !wanted.contains(a)) {
                p.push(Order::Late, DelPeer(Peer { vxlan: vx.to_string(), peer: *a }));
            }
            for a in wanted.iter().filter(|a| !have.contains(a)) {
                p.push(Order::Late, AddPeer(Peer { vxlan: vx.to_string(), peer: *a }));
            }
        }
    }
}

impl Peer {
    fn set(&self, cx: &mut Apply<'_>, add: bool) -> Result<bool> {
        let index = cx.resolve(&Ns::Host, &self.vxlan)?;
        let e = FdbEntry { index, dst: self.peer };
        let sock = cx.sock(&Ns::Host)?;
        let done = if add { sock.append_fdb(e).map(|()| true) } else { sock.del_fdb(e) };
        done.with_context(|| format!("{} peer {} on {}", if add { "add" } else { "remove" }, self.peer, self.vxlan))
    }
}

#[derive(Debug, Serialize)]
pub struct AddPeer(pub Peer);

impl Step for AddPeer {
    fn action(&self) -> &'static str {
        "add_fdb"
    }
    fn verb(&self) -> Verb {
        Verb::Create
    }
    fn object(&self) -> String {
        format!("peer {} on {}", self.0.peer, self.0.vxlan)
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        self.0.set(cx, true)?;
        cx.undo_with(Toggle { peer: self.0.clone(), add: false });
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct DelPeer(pub Peer);

impl Step for DelPeer {
    fn action(&self) -> &'static str {
        "del_fdb"
    }
    fn verb(&self) -> Verb {
        Verb::Remove
    }
    fn object(&self) -> String {
        format!("peer {} on {}", self.0.peer, self.0.vxlan)
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        if self.0.set(cx, false)? {
            cx.undo_with(Toggle { peer: self.0.clone(), add: true });
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Toggle {
    peer: Peer,
    add: bool,
}

impl Undo for Toggle {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        self.peer.set(cx, self.add).map(drop)
    }
}
