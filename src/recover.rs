//! Rebuilding the state file from the kernel, which is the source of truth,
//! when the file is gone (a reboot clears /run, so does an operator) or
//! cannot be parsed, while vxrouter's objects are still there. Without it,
//! `apply` would find nothing to record and `destroy` would leave the router
//! namespace, the enslaved uplink and running daemons behind.
//!
//! What is found again: router namespaces (their loopback carries the owner
//! mark), the uplink (a port of an owned bridge: the profile's uplink, or
//! without a profile every physical NIC in one), and the firewall backends
//! holding vxrouter's rules (read through both tools). dnsmasq instances are
//! found by the dhcp kind from their command lines when the state was
//! recovered.

use crate::error::{Context, Result};
use crate::firewall::{self, Backend, FirewallState};
use crate::model::Ns;
use crate::netlink::Session;
use crate::observe::NsView;
use crate::profile::{Profile, owner_mark};
use crate::state::{self, State};

/// The state this host's objects imply, and what was found, for a note.
pub fn rediscover(session: &mut Session, host: &str, profile: Option<&Profile>, view: &NsView) -> Result<(State, Vec<String>)> {
    let mark = owner_mark(host);
    let mut st = State { host: host.to_string(), recovered: true, ..State::default() };
    let mut found = Vec::new();
    for name in crate::netns::list()? {
        if !session.attach(&name)? {
            continue;
        }
        let ns = Ns::Named(name.clone());
        let lo = session.sock(&ns)?.link("lo").with_context(|| format!("look at lo in {ns}"))?;
        if lo.and_then(|l| l.alias).as_deref() == Some(mark.as_str()) {
            st.namespaces.insert(name);
        } else {
            session.detach(&name);
        }
    }
    if !st.namespaces.is_empty() {
        found.push(format!("namespace(s) {}", st.namespaces.iter().cloned().collect::<Vec<_>>().join(", ")));
    }
    let owned_bridge = |index: u32| {
        view.by_index(index).filter(|b| b.kind.as_deref() == Some("bridge") && b.alias.as_deref() == Some(mark.as_str()))
    };
    let wanted_uplink = profile.and_then(|p| p.router.as_ref()).map(|r| r.public.uplink.as_str());
    for l in &view.links {
        let Some(bridge) = l.master.and_then(owned_bridge) else { continue };
        let is_uplink = match wanted_uplink {
            Some(u) => l.name == u,
            // Without a profile: a NIC (no link kind), never a VM's tap.
            None => l.kind.is_none() && l.alias.as_deref() != Some(mark.as_str()),
        };
        if is_uplink {
            found.push(format!("uplink {} in {}", l.name, bridge.name));
            st.uplinks.insert(l.name.clone(), bridge.name.clone());
        }
    }
    let mut backends: Vec<Backend> = Vec::new();
    if firewall::iptables::available() {
        backends.push(Backend::Iptables);
    }
    if firewall::nft::available() {
        backends.push(Backend::Nftables);
    }
    let spaces: Vec<Ns> = std::iter::once(Ns::Host).chain(st.namespaces.iter().map(|n| Ns::Named(n.clone()))).collect();
    for ns in spaces {
        let where_ = if ns == Ns::Host { "the host".to_string() } else { format!("namespace {ns}") };
        let fw = firewall::read(session.file(&ns)?, &where_, &backends, None)?;
        for b in holding(&fw, &mark) {
            found.push(format!("{} rules in {ns}", b.name()));
            st.firewall.entry(state::fw_key(&ns)).or_default().insert(b);
        }
    }
    Ok((st, found))
}

/// The backends in which `fw` holds rules of `mark`'s.
fn holding(fw: &FirewallState, mark: &str) -> Vec<Backend> {
    let ours = format!("\"{mark}\"");
    let mut out = Vec::new();
    let ipt = [&fw.ipt, &fw.ip6t].into_iter().flatten().any(|i| i.jumps.values().flatten().any(|r| r.contains(&ours)));
    if ipt {
        out.push(Backend::Iptables);
    }
    let nft =
        fw.nft.as_ref().is_some_and(|n| [&n.ours, &n.ours6].into_iter().flatten().any(|t| t.comment.as_deref() == Some(mark)));
    if nft {
        out.push(Backend::Nftables);
    }
    out
}
