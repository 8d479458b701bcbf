//! iptables backend: read with one `iptables-save`, write with one
//! `iptables-restore --noflush` batch per namespace (atomic per table).

use std::collections::BTreeMap;
use std::fs::File;

use super::render::{self, Syntax};
use super::rules::{Hook, Policy, Rule, Table, Verdict};
use super::{CHAIN_PREFIX, Chain, Driver, FirewallState, FwChange, IptState, Ruleset};
use crate::error::Result;
use crate::profile::{Ipv4Cidr, Proto};

/// True when `iptables-save` is installed.
pub fn available() -> bool {
    super::in_path("iptables-save")
}

/// Reads the owned chains, owner-marked jumps and a count of foreign rules.
pub fn observe(ns: Option<&File>, where_: &str) -> Result<IptState> {
    Ok(parse_save(&super::tool::read("iptables-save", &[], ns, where_)?))
}

pub fn parse_save(text: &str) -> IptState {
    let mut st = IptState::default();
    let mut table = String::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_string();
        } else if let Some(decl) = line.strip_prefix(':') {
            let mut words = decl.split_whitespace();
            let name = words.next().unwrap_or("");
            if table == "filter"
                && let Some(policy) = words.next().filter(|p| *p != "-")
            {
                st.policies.insert(name.to_string(), policy.to_string());
            }
            if name.starts_with(CHAIN_PREFIX) {
                st.chains.entry((table.clone(), name.to_string())).or_default();
            }
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let (chain, rule) = rest.split_once(' ').unwrap_or((rest, ""));
            if chain.starts_with(CHAIN_PREFIX) {
                st.chains.entry((table.clone(), chain.to_string())).or_default().push(rule.to_string());
            } else if rule.contains("--comment \"vxrouter:") && rule.contains(&format!("-j {CHAIN_PREFIX}")) {
                st.jumps.entry((table.clone(), chain.to_string())).or_default().push(rule.to_string());
            } else {
                *st.foreign.entry(table.clone()).or_default() += 1;
            }
        }
    }
    st
}

/// iptables-save's words.
pub struct IptSyntax;

impl Syntax for IptSyntax {
    fn src(&self, c: &Ipv4Cidr) -> String {
        format!("-s {c}")
    }
    fn dst(&self, c: &Ipv4Cidr) -> String {
        format!("-d {c}")
    }
    fn iif(&self, name: &str) -> String {
        format!("-i {name}")
    }
    fn oif(&self, name: &str) -> String {
        format!("-o {name}")
    }
    fn port(&self, proto: Proto, port: u16) -> String {
        let p = proto.as_str();
        format!("-p {p} -m {p} --dport {port}")
    }
    fn icmp_echo(&self) -> String {
        "-p icmp -m icmp --icmp-type 8".into()
    }
    fn established(&self) -> String {
        "-m conntrack --ctstate RELATED,ESTABLISHED".into()
    }
    fn invalid(&self) -> String {
        "-m conntrack --ctstate INVALID".into()
    }
    fn dnatted(&self) -> String {
        "-m conntrack --ctstate DNAT".into()
    }
    fn verdict(&self, v: &Verdict) -> String {
        match v {
            Verdict::Accept => "-j ACCEPT".into(),
            Verdict::Drop => "-j DROP".into(),
            Verdict::Return => "-j RETURN".into(),
            Verdict::Snat(a) => format!("-j SNAT --to-source {a}"),
            Verdict::Masquerade => "-j MASQUERADE".into(),
            Verdict::Dnat(a, p) => format!("-j DNAT --to-destination {a}:{p}"),
        }
    }
}

/// Rules as `iptables-save` prints them (without "-A <chain> ").
pub fn render_rules(rules: &[Rule]) -> Vec<String> {
    render::rules(rules, &IptSyntax)
}

/// The owned chains for a policy: `VXROUTER-<NAME>`, hooked from the
/// built-in chain of its table and hook.
pub fn ruleset(p: &Policy) -> Ruleset {
    Ruleset {
        chains: p
            .chains
            .iter()
            .map(|c| Chain {
                table: match c.table {
                    Table::Filter => "filter",
                    Table::Nat => "nat",
                }
                .into(),
                name: format!("{CHAIN_PREFIX}{}", c.name.to_uppercase()),
                hook: match c.hook {
                    Hook::Input => "INPUT",
                    Hook::Forward => "FORWARD",
                    Hook::Prerouting => "PREROUTING",
                    Hook::Postrouting => "POSTROUTING",
                }
                .into(),
                rules: render_rules(&c.rules),
            })
            .collect(),
    }
}

/// Lines of one table's batch: chain declarations, rules, deletions.
type TableBatch = (Vec<String>, Vec<String>, Vec<String>);

/// The `iptables-restore --noflush` input for a set of changes (nftables
/// changes among them are ignored).
pub fn render(changes: &[FwChange]) -> String {
    let mut by_table: BTreeMap<&str, TableBatch> = BTreeMap::new();
    for c in changes {
        match c {
            FwChange::NftReplace { .. } | FwChange::NftDelete => {}
            FwChange::SetChain { table, chain, rules, .. } => {
                let (decl, body, _) = by_table.entry(table).or_default();
                // Declaring a chain under --noflush creates or empties it.
                decl.push(format!(":{chain} - [0:0]"));
                body.extend(rules.iter().map(|r| format!("-A {chain} {r}")));
            }
            FwChange::AddJump { table, hook, rule } => {
                by_table.entry(table).or_default().1.push(format!("-I {hook} 1 {rule}"));
            }
            FwChange::DelJump { table, hook, rule } => {
                by_table.entry(table).or_default().1.push(format!("-D {hook} {rule}"));
            }
            FwChange::DelChain { table, chain } => {
                let tail = &mut by_table.entry(table).or_default().2;
                tail.push(format!("-F {chain}"));
                tail.push(format!("-X {chain}"));
            }
        }
    }
    let mut out = String::new();
    for (table, (decl, body, tail)) in by_table {
        out.push_str(&format!("*{table}\n"));
        for l in decl.iter().chain(&body).chain(&tail) {
            out.push_str(l);
            out.push('\n');
        }
        out.push_str("COMMIT\n");
    }
    out
}

/// Applies a batch in one `iptables-restore` process.
pub fn restore(ns: Option<&File>, where_: &str, batch: &str) -> Result<()> {
    super::tool::feed("iptables-restore", &["--noflush", "--wait", "10"], ns, where_, batch)
}

pub fn jump_rule(mark: &str, chain: &str) -> String {
    format!("-m comment --comment \"{mark}\" -j {chain}")
}

/// The iptables backend.
pub struct Iptables;

impl Driver for Iptables {
    fn read(&self, ns: Option<&File>, where_: &str, st: &mut FirewallState) -> Result<()> {
        st.ipt = Some(observe(ns, where_)?);
        Ok(())
    }

    fn diff(&self, mark: &str, want: Option<&Policy>, have: &FirewallState) -> Result<Vec<FwChange>, String> {
        let want_ipt = want.map(ruleset).unwrap_or_default();
        Ok(match &have.ipt {
            Some(ipt) => diff(mark, &want_ipt, ipt),
            None if want.is_some() => diff(mark, &want_ipt, &IptState::default()),
            None => vec![],
        })
    }

    fn write(&self, ns: Option<&File>, where_: &str, changes: &[FwChange]) -> Result<()> {
        restore(ns, where_, &render(changes))
    }

    fn inverse(&self, changes: &[FwChange], before: &FirewallState) -> Vec<FwChange> {
        let mut inv = Vec::new();
        let old = before.ipt.clone().unwrap_or_default();
        for c in changes.iter().rev() {
            match c {
                FwChange::SetChain { table, chain, .. } | FwChange::DelChain { table, chain } => {
                    match old.chains.get(&(table.clone(), chain.clone())) {
                        Some(rules) => inv.push(FwChange::SetChain {
                            table: table.clone(),
                            chain: chain.clone(),
                            rules: rules.clone(),
                            found: None,
                        }),
                        None => inv.push(FwChange::DelChain { table: table.clone(), chain: chain.clone() }),
                    }
                }
                FwChange::AddJump { table, hook, rule } => {
                    inv.push(FwChange::DelJump { table: table.clone(), hook: hook.clone(), rule: rule.clone() })
                }
                FwChange::DelJump { table, hook, rule } => {
                    inv.push(FwChange::AddJump { table: table.clone(), hook: hook.clone(), rule: rule.clone() })
                }
                FwChange::NftReplace { .. } | FwChange::NftDelete => {}
            }
        }
        // Jumps must go before the chains they point to are deleted.
        inv.sort_by_key(|c| matches!(c, FwChange::DelChain { .. }));
        inv
    }

    fn recreate(&self, state: &FirewallState) -> Vec<FwChange> {
        let Some(ipt) = &state.ipt else { return vec![] };
        let mut out: Vec<FwChange> = ipt
            .chains
            .iter()
            .map(|((table, chain), rules)| FwChange::SetChain {
                table: table.clone(),
                chain: chain.clone(),
                rules: rules.clone(),
                found: None,
            })
            .collect();
        for ((table, hook), jumps) in &ipt.jumps {
            out.extend(jumps.iter().map(|rule| FwChange::AddJump {
                table: table.clone(),
                hook: hook.clone(),
                rule: rule.clone(),
            }));
        }
        out
    }
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

    fn one_chain() -> Ruleset {
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
        let d = diff("vxrouter:a", &one_chain(), &IptState::default());
        assert_eq!(d.len(), 2);
        assert!(matches!(&d[0], FwChange::SetChain { found: None, .. }));
        assert!(matches!(&d[1], FwChange::AddJump { hook, .. } if hook == "POSTROUTING"));
    }

    #[test]
    fn matching_firewall_needs_nothing_and_extra_chains_go() {
        let want = one_chain();
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

    const SAVE: &str = r#"# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:VXROUTER-POST - [0:0]
:VXROUTER-EMPTY - [0:0]
-A POSTROUTING -s 10.9.0.0/16 -j MASQUERADE
-A POSTROUTING -m comment --comment "vxrouter:host-a" -j VXROUTER-POST
-A VXROUTER-POST -s 192.168.10.0/24 -o veth15.1 -j SNAT --to-source 203.0.113.123
COMMIT
"#;

    #[test]
    fn parses_owned_chains_jumps_and_foreign_rules() {
        let st = parse_save(SAVE);
        assert_eq!(
            st.chains.get(&("nat".into(), "VXROUTER-POST".into())).unwrap(),
            &vec!["-s 192.168.10.0/24 -o veth15.1 -j SNAT --to-source 203.0.113.123".to_string()]
        );
        assert!(st.chains.get(&("nat".into(), "VXROUTER-EMPTY".into())).unwrap().is_empty());
        assert_eq!(st.jumps.get(&("nat".into(), "POSTROUTING".into())).unwrap().len(), 1);
        assert_eq!(st.foreign.get("nat"), Some(&1));
    }

    #[test]
    fn renders_declarations_before_rules_and_deletions_last() {
        let batch = render(&[
            FwChange::DelChain { table: "nat".into(), chain: "VXROUTER-OLD".into() },
            FwChange::AddJump { table: "nat".into(), hook: "POSTROUTING".into(), rule: "-j VXROUTER-POST".into() },
            FwChange::SetChain {
                table: "nat".into(),
                chain: "VXROUTER-POST".into(),
                rules: vec!["-j MASQUERADE".into()],
                found: None,
            },
        ]);
        assert_eq!(
            batch,
            "*nat\n:VXROUTER-POST - [0:0]\n-I POSTROUTING 1 -j VXROUTER-POST\n-A VXROUTER-POST -j MASQUERADE\n-F VXROUTER-OLD\n-X VXROUTER-OLD\nCOMMIT\n"
        );
    }
}
