//! What to observe: which named namespaces to look into, and how deeply.

use crate::desired::Desired;
use crate::state::State;

/// How much to read: everything (plan, check, apply), or what verification
/// after an apply needs. Verification does not plan firewalls again: each
/// batch was committed atomically by its tool (a failure is an error with
/// rollback). It reads the nftables rulesets only to record them (the
/// recorded one when the generation is unchanged; see
/// `kinds::firewall::verified`); `check` reads them in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Depth {
    #[default]
    Full,
    Verify,
}

#[derive(Debug, Clone, Default)]
pub struct Scope {
    pub depth: Depth,
    /// Named namespaces to look into: the profile's, and every one this
    /// host's vxrouter created or was creating.
    pub namespaces: Vec<String>,
    /// Adopting a host built by hand: kinds that replace hand-made objects
    /// (NAT rules) read them (otherwise nothing reads them).
    pub adopt: bool,
}

pub fn of(desired: &Desired, state: &State, depth: Depth) -> Scope {
    let mut namespaces: Vec<String> = state.namespaces.iter().cloned().collect();
    namespaces.extend(state.pending.iter().flat_map(|p| p.namespaces.clone()));
    namespaces.extend(desired.router_ns().map(str::to_string));
    namespaces.sort();
    namespaces.dedup();
    Scope { depth, namespaces, adopt: false }
}
