//! What vxrouter remembers between runs, under /run/vxrouter (tmpfs: it goes
//! away at reboot together with the kernel objects it describes).
//!
//! Links carry their ownership in the kernel (the alias mark). The state file
//! holds what cannot be marked there: the router namespaces created, the
//! uplinks enslaved (a foreign NIC must not get a mark), the firewall
//! backends used, and, while a run is in progress, the names it may create —
//! so a run killed between creating a link and marking it is recognised and
//! finished by the next one. What the file says before, during and after a
//! run is computed here and nowhere else.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::desired::Desired;
use crate::error::{Context, Result};
use crate::firewall::Backend;
use crate::kinds::{firewall::Firewall, uplink::Uplinks};
use crate::model::Ns;
use crate::observe::Observed;
use crate::plan::Plan;

/// The state file's key for a namespace's firewall.
pub fn fw_key(ns: &Ns) -> String {
    match ns {
        Ns::Host => "@host".into(),
        Ns::Named(n) => n.clone(),
    }
}

/// Where vxrouter keeps its files. Tests and the lab point this elsewhere
/// through a mount namespace; `VXROUTER_RUN_DIR` exists for unprivileged
/// experiments. Read once per run, with the other facts.
pub fn run_dir() -> PathBuf {
    std::env::var_os("VXROUTER_RUN_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/run/vxrouter"))
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub host: String,
    /// Router namespaces this host's profile created.
    #[serde(default)]
    pub namespaces: BTreeSet<String>,
    /// Uplink NIC → the public bridge vxrouter enslaved it to.
    #[serde(default)]
    pub uplinks: BTreeMap<String, String>,
    /// Firewall backends vxrouter has rules in, per namespace ("@host" for
    /// the host's own), so a switch of backend finds the old rules.
    #[serde(default)]
    pub firewall: BTreeMap<String, BTreeSet<Backend>>,
    /// Set while a run is changing the host; cleared when it finishes.
    #[serde(default)]
    pub pending: Option<Pending>,
    /// The profile (absolute path) that owns this host name: another
    /// profile with the same `host.name` is refused (`--take-over`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The router's public address, so that another profile on this
    /// machine cannot claim the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public: Option<String>,
    /// When the profile was last applied (seconds since the epoch) and a
    /// hash of its text then (FNV-1a), so `status` can say whether the file
    /// changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile_hash: Option<String>,
    /// Links adopted with a MAC of their own, kept ("ns/name" → MAC; the
    /// host is "@host"): that MAC is the wanted one, not drift.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kept_macs: BTreeMap<String, String>,
    /// The nftables ruleset vxrouter last verified in a namespace, with the
    /// namespace instance and generation it was read at: while both are
    /// unchanged the ruleset is the same, and is not listed again
    /// (`firewall::nft::reusable`). Only a cache: a missing or stale record
    /// costs a listing.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nft_verified: BTreeMap<String, crate::firewall::nft::Verified>,
    /// This state was rebuilt from the kernel (the file was missing or
    /// unreadable), not read from the file.
    #[serde(skip)]
    pub recovered: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub pid: u32,
    /// Links the run may create: (namespace, name).
    pub links: Vec<(Ns, String)>,
    pub namespaces: Vec<String>,
}

impl State {
    pub fn path(dir: &Path, host: &str) -> PathBuf {
        dir.join(format!("{host}.state.json"))
    }

    /// The state file; an empty state when there is none.
    pub fn load(dir: &Path, host: &str) -> Result<State> {
        Ok(Self::read(dir, host)?.unwrap_or_else(|| State { host: host.to_string(), ..State::default() }))
    }

    /// The state file, None when there is none. An unparsable file is an
    /// error of kind `Conflict` (see `engine` for what is done about it).
    pub fn read(dir: &Path, host: &str) -> Result<Option<State>> {
        let path = Self::path(dir, host);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(st) => Ok(Some(st)),
                Err(e) => crate::bail!(Conflict, "{} is not a vxrouter state file: {e}", path.display()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// The state files of the other host names applied on this machine.
    pub fn others(dir: &Path, host: &str) -> Vec<State> {
        let Ok(entries) = fs::read_dir(dir) else { return vec![] };
        let mut out: Vec<State> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".state.json").map(str::to_string))
            .filter(|h| h != host)
            .filter_map(|h| Self::read(dir, &h).ok().flatten())
            .collect();
        out.sort_by(|a, b| a.host.cmp(&b.host));
        out
    }

    /// Writes atomically (temporary file + rename), or removes the file when
    /// there is nothing left to remember.
    pub fn save(&self, dir: &Path) -> Result<()> {
        crate::testhooks::point();
        let path = Self::path(dir, &self.host);
        if self.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
            };
        }
        crate::fsutil::private_dir(dir)?;
        crate::fsutil::write_private(&path, &serde_json::to_vec_pretty(self)?)
    }

    /// Nothing of this host is left to remember (the profile and public
    /// address are only claims on behalf of what is there).
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.uplinks.is_empty()
            && self.pending.is_none()
            && self.firewall.is_empty()
            && self.kept_macs.is_empty()
    }

    /// True when a run was interrupted while it may have been creating `name`.
    pub fn pending_link(&self, ns: &Ns, name: &str) -> bool {
        self.pending.as_ref().is_some_and(|p| p.links.iter().any(|(n, l)| n == ns && l == name))
    }

    pub fn pending_namespace(&self, name: &str) -> bool {
        self.pending.as_ref().is_some_and(|p| p.namespaces.iter().any(|n| n == name))
    }
}

/// A hash of a profile file's text (FNV-1a, hex): enough to tell whether it
/// changed since it was applied.
pub fn profile_hash(path: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    Some(format!("{:016x}", crate::profile::names::fnv1a(&[&text])))
}

/// The state file while a run changes the host: what it said before, the
/// names the plan may create (and those an interrupted earlier run may have
/// left unmarked: this run may be killed too before it adopts them), and
/// what the profile will own.
pub fn during(before: &State, host: &str, profile: Option<&str>, desired: &Desired, plan: &Plan) -> State {
    let mut st = before.clone();
    st.host = host.to_string();
    st.profile = profile.map(str::to_string).or(st.profile);
    st.public = desired.public_address().map(|a| a.to_string()).or(st.public);
    let mut pend = Pending { pid: std::process::id(), links: vec![], namespaces: vec![] };
    for s in &plan.steps {
        let (links, namespaces) = s.creates();
        pend.links.extend(links);
        pend.namespaces.extend(namespaces);
    }
    if let Some(old) = &before.pending {
        pend.links.extend(old.links.iter().filter(|l| !pend.links.contains(l)).cloned().collect::<Vec<_>>());
        pend.namespaces.extend(old.namespaces.iter().filter(|n| !pend.namespaces.contains(n)).cloned().collect::<Vec<_>>());
    }
    st.pending = Some(pend);
    st.kept_macs = plan.kept_macs.clone();
    st.namespaces.extend(desired.router_ns().map(str::to_string));
    for u in desired.of::<Uplinks>() {
        st.uplinks.insert(u.uplink.clone(), u.bridge.clone());
    }
    for r in desired.of::<Firewall>() {
        st.firewall.entry(fw_key(&r.ns)).or_default().insert(r.backend);
    }
    st
}

/// The state file after a run, from what is wanted and what verification
/// observed: owned namespaces (also those kept for their foreign objects,
/// whose firewall records stay so the next run looks again), uplinks, and
/// the backends holding rules.
pub fn after(desired: &Desired, observed: &Observed, during: &State) -> State {
    let mut st = State { host: during.host.clone(), profile: during.profile.clone(), ..State::default() };
    st.applied = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs());
    st.profile_hash = st.profile.as_deref().and_then(profile_hash);
    st.public = desired.public_address().map(|a| a.to_string());
    st.kept_macs = during.kept_macs.clone();
    st.namespaces.extend(desired.router_ns().map(str::to_string));
    for name in &during.namespaces {
        if observed.named.get(name).and_then(|v| v.loopback_mark()) == Some(desired.mark.as_str()) {
            st.namespaces.insert(name.clone());
        }
    }
    for u in desired.of::<Uplinks>() {
        st.uplinks.insert(u.uplink.clone(), u.bridge.clone());
    }
    for r in desired.of::<Firewall>() {
        if !r.policy.chains.is_empty() {
            st.firewall.entry(fw_key(&r.ns)).or_default().insert(r.backend);
        }
    }
    st.nft_verified = crate::kinds::firewall::verified(desired, observed);
    for name in &st.namespaces.clone() {
        if Some(name.as_str()) != desired.router_ns()
            && let Some(b) = during.firewall.get(name)
        {
            st.firewall.insert(name.clone(), b.clone());
        }
    }
    st
}

/// The state file after an apply that found nothing to change, or `None`
/// when the recorded one is still true. It drops a stale `pending` left by
/// an interrupted run, records a state rebuilt from the kernel
/// (`recovered`), the profile now owning the host name, and the rulesets
/// verified at their generation (so the next runs need not list them).
pub fn unchanged(before: &State, recovered: bool, profile: &str, desired: &Desired, observed: &Observed) -> Option<State> {
    let hash = profile_hash(profile);
    let stale_claim = !before.is_empty() && (before.profile.as_deref() != Some(profile) || before.profile_hash != hash);
    let verified = crate::kinds::firewall::verified(desired, observed);
    let records = !before.is_empty() && verified != before.nft_verified;
    if before.pending.is_none() && !recovered && !stale_claim && !records {
        return None;
    }
    let mut st = before.clone();
    st.nft_verified = verified;
    st.pending = None;
    st.profile = Some(profile.to_string());
    st.profile_hash = hash;
    st.public = desired.public_address().map(|a| a.to_string());
    Some(st)
}

/// The state file after a destroy that found nothing to remove: only the
/// namespaces kept for their foreign objects (still carrying our mark)
/// stay recorded.
pub fn nothing_removed(before: &State, host: &str, desired: &Desired, observed: &Observed) -> State {
    let namespaces = before
        .namespaces
        .iter()
        .filter(|n| observed.named.get(*n).and_then(|v| v.loopback_mark()) == Some(desired.mark.as_str()))
        .cloned()
        .collect();
    State { host: host.to_string(), namespaces, ..State::default() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_empty_removes() {
        let dir = std::env::temp_dir().join(format!("vxr-state-{}", std::process::id()));
        let mut st = State::load(&dir, "h").unwrap();
        assert!(st.is_empty());
        st.host = "h".into();
        st.namespaces.insert("ns1".into());
        st.pending = Some(Pending { pid: 1, links: vec![(Ns::Host, "br0".into())], namespaces: vec![] });
        st.save(&dir).unwrap();
        let back = State::load(&dir, "h").unwrap();
        assert_eq!(back, st);
        assert!(back.pending_link(&Ns::Host, "br0"));
        assert!(!back.pending_link(&Ns::Named("ns1".into()), "br0"));
        let empty = State { host: "h".into(), ..State::default() };
        empty.save(&dir).unwrap();
        assert!(!State::path(&dir, "h").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
