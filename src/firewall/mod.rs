//! Firewall rules vxrouter owns, behind one [`Driver`] trait with two
//! backends:
//!
//! - iptables: a few chains of its own per namespace (`VXROUTER-*`), each
//!   hooked into a built-in chain by one jump rule carrying the owner comment;
//!   nothing outside those chains and jumps is read for diffing or written;
//!   changed by one `iptables-restore --noflush` batch per namespace.
//! - nftables: one table of its own (`table ip vxrouter`), replaced as a
//!   whole in one `nft -f` transaction.
//!
//! `rules.rs` says what the rules are, independent of the backend;
//! `render.rs` writes a rule in either tool's canonical syntax (the form
//! `iptables-save` and `nft list` print), so observed rules compare to
//! wanted ones as plain strings.

pub mod iptables;
pub mod nft;
pub mod render;
pub mod rules;
pub mod tool;

use std::collections::BTreeMap;
use std::fs::File;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use rules::{Family, Policy};
pub use tool::in_path;

/// Which tool writes a namespace's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Iptables,
    Nftables,
}

pub const BACKENDS: [Backend; 2] = [Backend::Iptables, Backend::Nftables];

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

    pub fn driver(self) -> &'static dyn Driver {
        match self {
            Backend::Iptables => &iptables::Iptables,
            Backend::Nftables => &nft::Nftables,
        }
    }
}

/// One firewall tool, as vxrouter uses it.
pub trait Driver: Sync {
    /// Reads what this backend holds in a namespace (None: here) into `st`.
    /// `recorded`: the nftables ruleset vxrouter last verified there (see
    /// `nft::Verified`), which stands in for a listing while the
    /// namespace's nftables generation is unchanged.
    fn read(&self, ns: Option<&File>, where_: &str, recorded: Option<&nft::Verified>, st: &mut FirewallState) -> Result<()>;
    /// Starts the listing `read` makes, when it is slow enough to be worth
    /// running alongside the rest of the observation (see `prefetch`).
    fn prefetch(&self, _ns: Option<File>, _recorded: Option<&nft::Verified>) {}
    /// The changes that make this backend hold exactly `want` (None:
    /// nothing of vxrouter's). Err: what stands in the way.
    fn diff(&self, mark: &str, want: Option<&Policy>, have: &FirewallState) -> Result<Vec<FwChange>, String>;
    /// Applies this backend's changes among `changes`, in one batch.
    fn write(&self, ns: Option<&File>, where_: &str, changes: &[FwChange]) -> Result<()>;
    /// The changes that put back what this backend's `changes` changed.
    fn inverse(&self, changes: &[FwChange], before: &FirewallState) -> Vec<FwChange>;
    /// The changes that make a namespace without rules hold `state`'s again.
    fn recreate(&self, state: &FirewallState) -> Vec<FwChange>;
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
    /// (table, built-in chain) → its first rule, whoever's: vxrouter's jump
    /// must be it.
    #[serde(with = "crate::model::pair_keys")]
    pub heads: BTreeMap<(String, String), String>,
}

/// A namespace's firewall as read through the backends that were looked at
/// (None: not read).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct FirewallState {
    /// IPv4 (iptables-save).
    pub ipt: Option<IptState>,
    /// IPv6 (ip6tables-save).
    pub ip6t: Option<IptState>,
    pub nft: Option<nft::NftState>,
    /// The namespace instance and nftables generation `nft` was read at
    /// (None: not known, e.g. the generation changed during the listing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nft_at: Option<crate::netlink::nfgen::Stamp>,
}

impl FirewallState {
    pub fn ipt_of(&self, family: Family) -> Option<&IptState> {
        match family {
            Family::V4 => self.ipt.as_ref(),
            Family::V6 => self.ip6t.as_ref(),
        }
    }

    /// Rules someone else put in this namespace.
    pub fn foreign(&self) -> usize {
        let ipt: usize =
            [&self.ipt, &self.ip6t].iter().filter_map(|i| i.as_ref()).map(|i| i.foreign.values().sum::<usize>()).sum();
        // iptables-nft rules show up in `nft list ruleset` too: count once.
        let nft = self.nft.as_ref().map(|n| n.foreign).unwrap_or(0);
        ipt.max(nft)
    }
}

/// Prefix of every chain vxrouter creates.
pub const CHAIN_PREFIX: &str = "VXROUTER-";

/// One change to the firewall of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FwChange {
    /// Create or refill an iptables chain with these rules.
    SetChain { family: Family, table: String, chain: String, rules: Vec<String>, found: Option<Vec<String>> },
    /// Insert the jump at the top of the hook chain.
    AddJump { family: Family, table: String, hook: String, rule: String },
    /// Move vxrouter's jump back to the top: `above` was placed before it.
    RaiseJump { family: Family, table: String, hook: String, rule: String, above: String },
    /// Remove one jump rule.
    DelJump { family: Family, table: String, hook: String, rule: String },
    /// Remove an owned chain no longer wanted.
    DelChain { family: Family, table: String, chain: String },
    /// Replace vxrouter's nftables table of the table's family with this one.
    /// `fresh`: no table is there, so create it (failing if one appeared)
    /// rather than replace it: deleting a table makes the kernel wait for an
    /// RCU grace period.
    NftReplace { table: nft::NftTable, why: Vec<String>, fresh: bool },
    /// Remove vxrouter's nftables table of that family.
    NftDelete { family: Family },
}

impl FwChange {
    pub fn describe(&self) -> String {
        let f = |family: &Family| if *family == Family::V6 { "ip6 " } else { "" };
        match self {
            FwChange::SetChain { family, table, chain, rules, found: None } => {
                format!("{}{table}/{chain} with {} rule(s)", f(family), rules.len())
            }
            FwChange::SetChain { family, table, chain, rules, found: Some(have) } => {
                format!("{}{table}/{chain}: {}", f(family), rule_diff(rules, have))
            }
            FwChange::AddJump { family, table, hook, .. } => format!("{}{table}/{hook} jump", f(family)),
            FwChange::RaiseJump { family, table, hook, above, .. } => {
                format!("{}{table}/{hook}: `{above}` was placed before vxrouter's jump", f(family))
            }
            FwChange::DelJump { family, table, hook, rule } => format!("{}{table}/{hook} stray jump `{rule}`", f(family)),
            FwChange::DelChain { family, table, chain } => format!("{}{table}/{chain}", f(family)),
            FwChange::NftReplace { table, fresh: true, .. } => format!("nft table {} {}", table.family_word(), nft::TABLE),
            FwChange::NftReplace { table, why, .. } => {
                format!("nft table {} {}: {}", table.family_word(), nft::TABLE, why.join(", "))
            }
            FwChange::NftDelete { family } => format!("nft table {} {}", nft::family_word(*family), nft::TABLE),
        }
    }

    /// The backend whose tool carries out this change.
    pub fn backend(&self) -> Backend {
        match self {
            FwChange::NftReplace { .. } | FwChange::NftDelete { .. } => Backend::Nftables,
            _ => Backend::Iptables,
        }
    }

    /// The family of an iptables change (None: an nftables change).
    pub fn ipt_family(&self) -> Option<Family> {
        match self {
            FwChange::SetChain { family, .. }
            | FwChange::AddJump { family, .. }
            | FwChange::RaiseJump { family, .. }
            | FwChange::DelJump { family, .. }
            | FwChange::DelChain { family, .. } => Some(*family),
            FwChange::NftReplace { .. } | FwChange::NftDelete { .. } => None,
        }
    }

    /// True when the change only adds what is missing.
    pub fn is_creation(&self) -> bool {
        matches!(self, FwChange::SetChain { found: None, .. } | FwChange::AddJump { .. })
            || matches!(self, FwChange::NftReplace { fresh: true, .. })
    }
}

/// How the rules found differ from the rules wanted, for drift messages:
/// the missing and the extra ones, or where the order differs.
pub fn rule_diff(want: &[String], have: &[String]) -> String {
    let mut extra: Vec<&String> = have.iter().collect();
    let mut missing = Vec::new();
    for w in want {
        match extra.iter().position(|h| *h == w) {
            Some(i) => {
                extra.remove(i);
            }
            None => missing.push(w),
        }
    }
    let mut parts: Vec<String> = missing.iter().map(|r| format!("missing `{r}`")).collect();
    parts.extend(extra.iter().map(|r| format!("extra `{r}`")));
    if parts.is_empty()
        && let Some(i) = want.iter().zip(have).position(|(w, h)| w != h)
    {
        parts.push(format!("reordered: rule {} is `{}` (expected `{}`)", i + 1, have[i], want[i]));
    }
    parts.join(", ")
}

/// The changes that make a namespace's firewall hold exactly `policy` (empty:
/// nothing of vxrouter's) through `backend`, removing what the other
/// backend holds. Err: something of another owner stands in the way.
pub fn changes(mark: &str, policy: &Policy, backend: Backend, have: &FirewallState) -> Result<Vec<FwChange>, String> {
    let mut out = Vec::new();
    for b in BACKENDS {
        let want = (b == backend && !policy.chains.is_empty()).then_some(policy);
        out.extend(b.driver().diff(mark, want, have)?);
    }
    Ok(out)
}

/// Applies changes backend by backend: one batch each.
pub fn write(ns: Option<&File>, where_: &str, changes: &[FwChange]) -> Result<()> {
    for b in BACKENDS {
        let mine: Vec<FwChange> = changes.iter().filter(|c| c.backend() == b).cloned().collect();
        if !mine.is_empty() {
            b.driver().write(ns, where_, &mine)?;
        }
    }
    Ok(())
}

/// The changes that undo `changes`, given the state before them.
pub fn inverse(changes: &[FwChange], before: &FirewallState) -> Vec<FwChange> {
    let mut out = Vec::new();
    for b in BACKENDS {
        let mine: Vec<FwChange> = changes.iter().filter(|c| c.backend() == b).cloned().collect();
        if !mine.is_empty() {
            out.extend(b.driver().inverse(&mine, before));
        }
    }
    out
}

/// Reads a namespace's firewall through the given backends.
/// Starts, ahead of the observation, the listings the firewall kind will
/// read: those of the backends the state file says hold rules, per
/// namespace. Best effort: what is not prefetched is read as usual.
pub fn prefetch(st: &crate::state::State) {
    for (key, backends) in &st.firewall {
        let ns = if key == "@host" { None } else { crate::netns::open(key).ok().flatten() };
        if key != "@host" && !ns.as_ref().is_some_and(crate::netns::is_namespace) {
            continue;
        }
        let recorded = st.nft_verified.get(key);
        for b in backends {
            b.driver().prefetch(ns.as_ref().and_then(|f| f.try_clone().ok()), recorded);
        }
    }
}

/// Reads a namespace's firewall through the given backends (`recorded`: see
/// `Driver::read`).
pub fn read(ns: Option<&File>, where_: &str, backends: &[Backend], recorded: Option<&nft::Verified>) -> Result<FirewallState> {
    let mut st = FirewallState::default();
    for b in backends {
        b.driver().read(ns, where_, recorded, &mut st)?;
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::rule_diff;

    fn v(rules: &[&str]) -> Vec<String> {
        rules.iter().map(|r| r.to_string()).collect()
    }

    /// Drift is told as the rules that differ: missing and extra ones by
    /// their text, and only when the same rules are there in another order,
    /// the first position where the order differs.
    #[test]
    fn rule_diffs_name_missing_extra_and_reordered_rules() {
        let want = v(&["a accept", "b accept", "drop"]);
        assert_eq!(rule_diff(&want, &want), "");
        assert_eq!(rule_diff(&want, &v(&["a accept", "drop"])), "missing `b accept`");
        assert_eq!(
            rule_diff(&want, &v(&["accept", "a accept", "b accept", "drop"])),
            "extra `accept`",
            "an extra rule is told as such, not as a reordering"
        );
        assert_eq!(rule_diff(&want, &v(&["a accept", "c accept", "drop"])), "missing `b accept`, extra `c accept`");
        assert_eq!(rule_diff(&want, &v(&["drop", "a accept", "b accept"])), "reordered: rule 1 is `drop` (expected `a accept`)");
        // A duplicate counts once per occurrence.
        assert_eq!(rule_diff(&want, &v(&["a accept", "a accept", "b accept", "drop"])), "extra `a accept`");
    }
}
