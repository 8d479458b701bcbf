//! What vxrouter remembers between runs, under /run/vxrouter (tmpfs: it goes
//! away at reboot together with the kernel objects it describes).
//!
//! Links carry their ownership in the kernel (the alias mark). The state file
//! holds what cannot be marked there: the router namespaces created, the
//! uplinks enslaved (a foreign NIC must not get a mark), and, while a run is in
//! progress, the names it may create — so a run killed between creating a
//! link and marking it is recognised and finished by the next one.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::firewall::Backend;
use crate::model::Ns;

/// The state file's key for a namespace's firewall.
pub fn fw_key(ns: &Ns) -> String {
    match ns {
        Ns::Host => "@host".into(),
        Ns::Named(n) => n.clone(),
    }
}

pub fn run_dir() -> PathBuf {
    // Tests and the lab point this elsewhere only through a mount namespace;
    // the override exists for unprivileged unit tests of this module.
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
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub pid: u32,
    /// Links the run may create: (namespace, name).
    pub links: Vec<(Ns, String)>,
    pub namespaces: Vec<String>,
}

impl State {
    fn path_in(dir: &Path, host: &str) -> PathBuf {
        dir.join(format!("{host}.state.json"))
    }

    pub fn path(host: &str) -> PathBuf {
        Self::path_in(&run_dir(), host)
    }

    pub fn load(host: &str) -> Result<State> {
        let path = Self::path(host);
        match fs::read(&path) {
            Ok(bytes) => {
                let st: State = serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))?;
                Ok(st)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State { host: host.to_string(), ..State::default() }),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Writes atomically (temporary file + rename), or removes the file when
    /// there is nothing left to remember.
    pub fn save(&self) -> Result<()> {
        crate::testhooks::point();
        let dir = run_dir();
        let path = Self::path_in(&dir, &self.host);
        if self.is_empty() {
            return match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e).with_context(|| format!("remove {}", path.display())),
            };
        }
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let tmp = path.with_extension("json.tmp");
        let bytes = serde_json::to_vec_pretty(self).context("encode state")?;
        fs::write(&tmp, bytes).with_context(|| format!("write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("rename {} to {}", tmp.display(), path.display()))
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.uplinks.is_empty() && self.pending.is_none() && self.firewall.is_empty()
    }

    /// True when a run was interrupted while it may have been creating `name`.
    pub fn pending_link(&self, ns: &Ns, name: &str) -> bool {
        self.pending.as_ref().is_some_and(|p| p.links.iter().any(|(n, l)| n == ns && l == name))
    }

    pub fn pending_namespace(&self, name: &str) -> bool {
        self.pending.as_ref().is_some_and(|p| p.namespaces.iter().any(|n| n == name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_roundtrip_and_empty_removes() {
        let dir = std::env::temp_dir().join(format!("vxr-state-{}", std::process::id()));
        // SAFETY: single-threaded use of this variable within this test binary.
        unsafe { std::env::set_var("VXROUTER_RUN_DIR", &dir) };
        let mut st = State::load("h").unwrap();
        assert!(st.is_empty());
        st.namespaces.insert("ns1".into());
        st.pending = Some(Pending { pid: 1, links: vec![(Ns::Host, "br0".into())], namespaces: vec![] });
        st.save().unwrap();
        let back = State::load("h").unwrap();
        assert_eq!(back, st);
        assert!(back.pending_link(&Ns::Host, "br0"));
        assert!(!back.pending_link(&Ns::Named("ns1".into()), "br0"));
        let empty = State { host: "h".into(), ..State::default() };
        empty.save().unwrap();
        assert!(!State::path("h").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
