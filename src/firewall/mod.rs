//! Firewall rules vxrouter owns, with two backends:
//!
//! - iptables: a few chains of its own per namespace (`VXROUTER-*`), each
//!   hooked into a built-in chain by one jump rule carrying the owner comment;
//!   nothing outside those chains and jumps is read for diffing or written.
//! - nftables: one table of its own (`table ip vxrouter`), replaced as a
//!   whole in one transaction.
//!
//! `rules.rs` says what the rules are, independent of the backend.

pub mod iptables;
pub mod nft;
pub mod rules;
mod tool;

use tool::in_path;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use rules::Policy;

/// Which tool writes a namespace's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Iptables,
    Nftables,
}

/// What `[router] firewall` means here: auto is nftables when the `nft`
/// tool can run, else iptables.
pub fn resolve(choice: crate::profile::FirewallChoice, nft_available: bool) -> Backend {
    use crate::profile::FirewallChoice as C;
    match choice {
        C::Iptables => Backend::Iptables,
        C::Nftables => Backend::Nftables,
        C::Auto if nft_available => Backend::Nftables,
        C::Auto => Backend::Iptables,
    }
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Iptables => "iptables",
            Backend::Nftables => "nftables",
        }
    }
}

/// One owned iptables chain, rules in `iptables-save` canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Chain {
    pub table: String,
    pub name: String,
    /// Built-in chain the jump rule lives in.
    pub hook: String,
    /// Rules without "-A <chain> ".
    pub rules: Vec<String>,
}

/// The owned iptables chains of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct Ruleset {
    pub chains: Vec<Chain>,
}

/// What `iptables-save` shows, as far as vxrouter cares.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct IptState {
    /// (table, chain) → rules, for chains with vxrouter's prefix.
    #[serde(with = "crate::model::pair_keys")]
    pub chains: BTreeMap<(String, String), Vec<String>>,
    /// (table, hook) → jump rules carrying an owner comment (any owner).
    #[serde(with = "crate::model::pair_keys")]
    pub jumps: BTreeMap<(String, String), Vec<String>>,
    /// Rules that are not vxrouter's, per table (to decide whether a
    /// namespace can be deleted without destroying someone else's rules).
    pub foreign: BTreeMap<String, usize>,
    /// Policies of the filter table's built-in chains ("FORWARD" → "DROP").
    pub policies: BTreeMap<String, String>,
}

/// A namespace's firewall as read through the backends that were looked at
/// (None: not read).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FirewallState {
    pub ipt: Option<IptState>,
    pub nft: Option<nft::NftState>,
}

impl FirewallState {
    /// Rules someone else put in this namespace.
    pub fn foreign(&self) -> usize {
        let ipt: usize = self.ipt.as_ref().map(|i| i.foreign.values().sum()).unwrap_or(0);
        // iptables-nft rules show up in `nft list ruleset` too: count once.
        let nft = self.nft.as_ref().map(|n| n.foreign).unwrap_or(0);
        ipt.max(nft)
    }
}

/// Prefix of every chain vxrouter creates.
pub const CHAIN_PREFIX: &str = "VXROUTER-";

pub fn jump_rule(mark: &str, chain: &str) -> String {
    format!("-m comment --comment \"{mark}\" -j {chain}")
}

/// One change to the firewall of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FwChange {
    /// Create or refill a chain with these rules.
    SetChain { table: String, chain: String, rules: Vec<String>, found: Option<usize> },
    /// Insert the jump at the top of the hook chain.
    AddJump { table: String, hook: String, rule: String },
    /// Remove one jump rule.
    DelJump { table: String, hook: String, rule: String },
    /// Remove an owned chain no longer wanted.
    DelChain { table: String, chain: String },
    /// Replace vxrouter's nftables table with this one. `fresh`: no table is
    /// there, so create it (failing if one appeared) rather than replace it:
    /// deleting a table makes the kernel wait for an RCU grace period.
    NftReplace { table: nft::NftTable, why: Vec<String>, fresh: bool },
    /// Remove vxrouter's nftables table.
    NftDelete,
}

impl FwChange {
    pub fn describe(&self) -> String {
        match self {
            FwChange::SetChain { table, chain, rules, found: None } => format!("{table}/{chain} with {} rule(s)", rules.len()),
            FwChange::SetChain { table, chain, rules, found: Some(n) } => {
                format!("{table}/{chain}: expected {} rule(s), found {n} that differ", rules.len())
            }
            FwChange::AddJump { table, hook, .. } => format!("{table}/{hook} jump"),
            FwChange::DelJump { table, hook, rule } => format!("{table}/{hook} stray jump `{rule}`"),
            FwChange::DelChain { table, chain } => format!("{table}/{chain}"),
            FwChange::NftReplace { fresh: true, .. } => format!("nft table ip {}", nft::TABLE),
            FwChange::NftReplace { why, .. } => format!("nft table ip {}: {}", nft::TABLE, why.join(", ")),
            FwChange::NftDelete => format!("nft table ip {}", nft::TABLE),
        }
    }

    pub fn is_nft(&self) -> bool {
        matches!(self, FwChange::NftReplace { .. } | FwChange::NftDelete)
    }

    /// True when the change only adds what is missing.
    pub fn is_creation(&self) -> bool {
        matches!(self, FwChange::SetChain { found: None, .. } | FwChange::AddJump { .. })
            || matches!(self, FwChange::NftReplace { fresh: true, .. })
    }
}

/// The changes that make a namespace's firewall hold exactly `policy` (empty:
/// nothing of vxrouter's) through `backend`, removing what the other backend
/// holds. Err: the nftables table belongs to another owner.
pub fn changes(mark: &str, policy: &Policy, backend: Backend, have: &FirewallState) -> Result<Vec<FwChange>, String> {
    let mut out = Vec::new();
    let want_ipt = match backend {
        Backend::Iptables => iptables::ruleset(policy),
        Backend::Nftables => Ruleset::default(),
    };
    if let Some(ipt) = &have.ipt {
        out.extend(diff(mark, &want_ipt, ipt));
    } else if backend == Backend::Iptables {
        out.extend(diff(mark, &want_ipt, &IptState::default()));
    }
    let ours = have.nft.as_ref().and_then(|n| n.ours.as_ref());
    if let Some(t) = ours
        && t.comment.as_deref() != Some(mark)
        && t.comment.is_some()
    {
        return Err(format!("nftables table ip {} belongs to {}", nft::TABLE, t.comment.as_deref().unwrap_or("someone else")));
    }
    let want_nft = (backend == Backend::Nftables && !policy.chains.is_empty()).then(|| nft::desired(mark, policy));
    match (want_nft, ours) {
        (Some(w), Some(h)) if &w == h => {}
        (Some(w), Some(h)) => {
            let why = nft::differing(&w, h);
            out.push(FwChange::NftReplace { table: w, why, fresh: false });
        }
        (Some(w), None) => out.push(FwChange::NftReplace { table: w, why: vec![], fresh: true }),
        (None, Some(_)) => out.push(FwChange::NftDelete),
        (None, None) => {}
    }
    Ok(out)
}

/// Diff desired owned iptables chains against what the namespace holds.
pub fn diff(mark: &str, want: &Ruleset, have: &IptState) -> Vec<FwChange> {
    let mut changes = Vec::new();
    for c in &want.chains {
        let key = (c.table.clone(), c.name.clone());
        match have.chains.get(&key) {
            Some(rules) if *rules == c.rules => {}
            found => changes.push(FwChange::SetChain {
                table: c.table.clone(),
                chain: c.name.clone(),
                rules: c.rules.clone(),
                found: found.map(|r| r.len()),
            }),
        }
        let jump = jump_rule(mark, &c.name);
        let hook_key = (c.table.clone(), c.hook.clone());
        let existing = have.jumps.get(&hook_key).map(|j| j.iter().filter(|r| **r == jump).count()).unwrap_or(0);
        if existing == 0 {
            changes.push(FwChange::AddJump { table: c.table.clone(), hook: c.hook.clone(), rule: jump.clone() });
        }
        for _ in 1..existing {
            changes.push(FwChange::DelJump { table: c.table.clone(), hook: c.hook.clone(), rule: jump.clone() });
        }
    }
    // Our jumps to chains we no longer want, and those chains.
    let wanted = |t: &str, n: &str| want.chains.iter().any(|c| c.table == t && c.name == n);
    let ours = format!("--comment \"{mark}\" ");
    for ((table, hook), rules) in &have.jumps {
        for r in rules {
            let target = r.rsplit(" -j ").next().unwrap_or("");
            if r.contains(&ours) && !wanted(table, target) {
                changes.push(FwChange::DelJump { table: table.clone(), hook: hook.clone(), rule: r.clone() });
            }
        }
    }
    for (table, chain) in have.chains.keys() {
        if !wanted(table, chain) && owned_chain_of(mark, have, table, chain) {
            changes.push(FwChange::DelChain { table: table.clone(), chain: chain.clone() });
        }
    }
    changes
}

/// A chain with our prefix is ours to delete when nothing but our own jumps
/// lead to it (another owner's jump keeps it alive).
fn owned_chain_of(mark: &str, have: &IptState, table: &str, chain: &str) -> bool {
    let target = format!("-j {chain}");
    let theirs = have
        .jumps
        .iter()
        .filter(|((t, _), _)| t == table)
        .flat_map(|(_, rules)| rules)
        .any(|r| r.ends_with(&target) && !r.contains(&format!("\"{mark}\"")));
    !theirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ruleset() -> Ruleset {
        Ruleset {
            chains: vec![Chain {
                table: "nat".into(),
                name: "VXROUTER-POST".into(),
                hook: "POSTROUTING".into(),
                rules: vec!["-s 192.168.10.0/24 -o pub -j SNAT --to-source 203.0.113.123".into()],
            }],
        }
    }

    #[test]
    fn empty_firewall_needs_chain_and_jump() {
        let d = diff("vxrouter:a", &ruleset(), &IptState::default());
        assert_eq!(d.len(), 2);
        assert!(matches!(&d[0], FwChange::SetChain { found: None, .. }));
        assert!(matches!(&d[1], FwChange::AddJump { hook, .. } if hook == "POSTROUTING"));
    }

    #[test]
    fn matching_firewall_needs_nothing_and_extra_chains_go() {
        let want = ruleset();
        let mut have = IptState::default();
        have.chains.insert(("nat".into(), "VXROUTER-POST".into()), want.chains[0].rules.clone());
        have.jumps.insert(("nat".into(), "POSTROUTING".into()), vec![jump_rule("vxrouter:a", "VXROUTER-POST")]);
        assert!(diff("vxrouter:a", &want, &have).is_empty());

        have.chains.insert(("filter".into(), "VXROUTER-FWD".into()), vec!["-j DROP".into()]);
        have.jumps.insert(("filter".into(), "FORWARD".into()), vec![jump_rule("vxrouter:a", "VXROUTER-FWD")]);
        let d = diff("vxrouter:a", &want, &have);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(matches!(&d[0], FwChange::DelJump { hook, .. } if hook == "FORWARD"));
        assert!(matches!(&d[1], FwChange::DelChain { chain, .. } if chain == "VXROUTER-FWD"));
    }

    #[test]
    fn another_owners_chain_is_left_alone() {
        let mut have = IptState::default();
        have.chains.insert(("filter".into(), "VXROUTER-FWD".into()), vec!["-j DROP".into()]);
        have.jumps.insert(("filter".into(), "FORWARD".into()), vec![jump_rule("vxrouter:b", "VXROUTER-FWD")]);
        assert!(diff("vxrouter:a", &Ruleset::default(), &have).is_empty());
    }
}
