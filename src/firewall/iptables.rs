//! iptables backend: IPv4 through `iptables-save`/`iptables-restore`, IPv6
//! through `ip6tables-save`/`ip6tables-restore`; read with one save per
//! family, written with one `restore --noflush` batch per family and
//! namespace (atomic per table).
//!
//! vxrouter's chains are reached through one jump per hooked built-in chain,
//! inserted first. A rule someone places above that jump (`iptables -I
//! FORWARD 1 -j ACCEPT`) would decide before vxrouter's policy is ever
//! consulted, so a jump that is not first is drift, and repair moves it back
//! to the top.

use std::collections::BTreeMap;
use std::fs::File;

use ipnet::IpNet;

use super::render::{self, Syntax};
use super::rules::{Family, Hook, Policy, Rule, Table, Verdict};
use super::{CHAIN_PREFIX, Chain, Driver, FirewallState, FwChange, IptState, Ruleset};
use crate::error::Result;
use crate::profile::Proto;

/// True when `iptables-save` is installed.
pub fn available() -> bool {
    super::in_path("iptables-save")
}

fn tool(family: Family, what: &str) -> String {
    match family {
        Family::V4 => format!("iptables-{what}"),
        Family::V6 => format!("ip6tables-{what}"),
    }
}

/// Reads the owned chains, owner-marked jumps and a count of foreign rules.
pub fn observe(family: Family, ns: Option<&File>, where_: &str) -> Result<IptState> {
    Ok(parse_save(&super::tool::read(&tool(family, "save"), &[], ns, where_)?))
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
            if !chain.starts_with(CHAIN_PREFIX) {
                st.heads.entry((table.clone(), chain.to_string())).or_insert_with(|| rule.to_string());
            }
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
    fn src(&self, c: &IpNet) -> String {
        format!("-s {c}")
    }
    fn dst(&self, c: &IpNet) -> String {
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
    fn icmp_echo(&self, family: Family) -> String {
        match family {
            Family::V4 => "-p icmp -m icmp --icmp-type 8".into(),
            Family::V6 => "-p ipv6-icmp -m icmp6 --icmpv6-type 128".into(),
        }
    }
    fn icmp6(&self, t: u8) -> String {
        format!("-p ipv6-icmp -m icmp6 --icmpv6-type {t}")
    }
    fn vrrp(&self) -> String {
        "-p vrrp".into()
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
            Verdict::Dnat(std::net::IpAddr::V4(a), p) => format!("-j DNAT --to-destination {a}:{p}"),
            Verdict::Dnat(std::net::IpAddr::V6(a), p) => format!("-j DNAT --to-destination [{a}]:{p}"),
        }
    }
}

/// Rules as `iptables-save` prints them (without "-A <chain> ").
pub fn render_rules(rules: &[Rule], family: Family) -> Vec<String> {
    render::rules(rules, family, &IptSyntax)
}

/// The owned chains of one family: `VXROUTER-<NAME>`, hooked from the
/// built-in chain of their table and hook.
pub fn ruleset(p: &Policy, family: Family) -> Ruleset {
    Ruleset {
        chains: p
            .chains
            .iter()
            .filter(|c| c.family == family)
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
                rules: render_rules(&c.rules, family),
            })
            .collect(),
    }
}

/// Lines of one table's batch: chain declarations, rules, deletions.
type TableBatch = (Vec<String>, Vec<String>, Vec<String>);

/// The `restore --noflush` input for the changes of one family (others
/// among them are ignored).
pub fn render(family: Family, changes: &[FwChange]) -> String {
    let mut by_table: BTreeMap<&str, TableBatch> = BTreeMap::new();
    for c in changes.iter().filter(|c| c.ipt_family() == Some(family)) {
        match c {
            FwChange::SetChain { table, chain, rules, .. } => {
                let (decl, body, _) = by_table.entry(table).or_default();
                // Declaring a chain under --noflush creates or empties it.
                decl.push(format!(":{chain} - [0:0]"));
                body.extend(rules.iter().map(|r| format!("-A {chain} {r}")));
            }
            FwChange::AddJump { table, hook, rule, .. } => {
                by_table.entry(table).or_default().1.push(format!("-I {hook} 1 {rule}"));
            }
            FwChange::RaiseJump { table, hook, rule, .. } => {
                let body = &mut by_table.entry(table).or_default().1;
                body.push(format!("-D {hook} {rule}"));
                body.push(format!("-I {hook} 1 {rule}"));
            }
            FwChange::DelJump { table, hook, rule, .. } => {
                by_table.entry(table).or_default().1.push(format!("-D {hook} {rule}"));
            }
            FwChange::DelChain { table, chain, .. } => {
                let tail = &mut by_table.entry(table).or_default().2;
                tail.push(format!("-F {chain}"));
                tail.push(format!("-X {chain}"));
            }
            FwChange::NftReplace { .. } | FwChange::NftDelete { .. } => {}
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

/// Applies a batch in one `iptables-restore` (or `ip6tables-restore`) process.
pub fn restore(family: Family, ns: Option<&File>, where_: &str, batch: &str) -> Result<()> {
    super::tool::feed(&tool(family, "restore"), &["--noflush", "--wait", "10"], ns, where_, batch)
}

pub fn jump_rule(mark: &str, chain: &str) -> String {
    format!("-m comment --comment \"{mark}\" -j {chain}")
}

/// The iptables backend.
pub struct Iptables;

impl Driver for Iptables {
    fn read(&self, ns: Option<&File>, where_: &str, st: &mut FirewallState) -> Result<()> {
        st.ipt = Some(observe(Family::V4, ns, where_)?);
        st.ip6t = Some(observe(Family::V6, ns, where_)?);
        Ok(())
    }

    fn diff(&self, mark: &str, want: Option<&Policy>, have: &FirewallState) -> Result<Vec<FwChange>, String> {
        let mut out = Vec::new();
        for family in Family::ALL {
            let want_ipt = want.map(|p| ruleset(p, family)).unwrap_or_default();
            match have.ipt_of(family) {
                Some(ipt) => out.extend(diff(family, mark, &want_ipt, ipt)),
                None if want.is_some() => out.extend(diff(family, mark, &want_ipt, &IptState::default())),
                None => {}
            }
        }
        Ok(out)
    }

    fn write(&self, ns: Option<&File>, where_: &str, changes: &[FwChange]) -> Result<()> {
        for family in Family::ALL {
            let batch = render(family, changes);
            if !batch.is_empty() {
                restore(family, ns, where_, &batch)?;
            }
        }
        Ok(())
    }

    fn inverse(&self, changes: &[FwChange], before: &FirewallState) -> Vec<FwChange> {
        let mut inv = Vec::new();
        for c in changes.iter().rev() {
            let Some(family) = c.ipt_family() else { continue };
            let old = before.ipt_of(family).cloned().unwrap_or_default();
            match c {
                FwChange::SetChain { table, chain, .. } | FwChange::DelChain { table, chain, .. } => {
                    match old.chains.get(&(table.clone(), chain.clone())) {
                        Some(rules) => inv.push(FwChange::SetChain {
                            family,
                            table: table.clone(),
                            chain: chain.clone(),
                            rules: rules.clone(),
                            found: None,
                        }),
                        None => inv.push(FwChange::DelChain { family, table: table.clone(), chain: chain.clone() }),
                    }
                }
                FwChange::AddJump { table, hook, rule, .. } => {
                    inv.push(FwChange::DelJump { family, table: table.clone(), hook: hook.clone(), rule: rule.clone() })
                }
                FwChange::DelJump { table, hook, rule, .. } => {
                    inv.push(FwChange::AddJump { family, table: table.clone(), hook: hook.clone(), rule: rule.clone() })
                }
                // Moving vxrouter's own jump back under a foreign rule would
                // only reopen what it closes: undo leaves it first.
                FwChange::RaiseJump { .. } | FwChange::NftReplace { .. } | FwChange::NftDelete { .. } => {}
            }
        }
        // Jumps must go before the chains they point to are deleted.
        inv.sort_by_key(|c| matches!(c, FwChange::DelChain { .. }));
        inv
    }

    fn recreate(&self, state: &FirewallState) -> Vec<FwChange> {
        let mut out = Vec::new();
        for family in Family::ALL {
            let Some(ipt) = state.ipt_of(family) else { continue };
            out.extend(ipt.chains.iter().map(|((table, chain), rules)| FwChange::SetChain {
                family,
                table: table.clone(),
                chain: chain.clone(),
                rules: rules.clone(),
                found: None,
            }));
            for ((table, hook), jumps) in &ipt.jumps {
                out.extend(jumps.iter().map(|rule| FwChange::AddJump {
                    family,
                    table: table.clone(),
                    hook: hook.clone(),
                    rule: rule.clone(),
                }));
            }
        }
        out
    }
}

/// Diff desired owned chains of one family against what the namespace holds.
pub fn diff(family: Family, mark: &str, want: &Ruleset, have: &IptState) -> Vec<FwChange> {
    let mut changes = Vec::new();
    for c in &want.chains {
        let key = (c.table.clone(), c.name.clone());
        match have.chains.get(&key) {
            Some(rules) if *rules == c.rules => {}
            found => changes.push(FwChange::SetChain {
                family,
                table: c.table.clone(),
                chain: c.name.clone(),
                rules: c.rules.clone(),
                found: found.cloned(),
            }),
        }
        let jump = jump_rule(mark, &c.name);
        let hook_key = (c.table.clone(), c.hook.clone());
        let existing = have.jumps.get(&hook_key).map(|j| j.iter().filter(|r| **r == jump).count()).unwrap_or(0);
        let (table, hook) = (c.table.clone(), c.hook.clone());
        if existing == 0 {
            changes.push(FwChange::AddJump { family, table: table.clone(), hook: hook.clone(), rule: jump.clone() });
        } else if let Some(first) = have.heads.get(&hook_key).filter(|first| **first != jump) {
            changes.push(FwChange::RaiseJump {
                family,
                table: table.clone(),
                hook: hook.clone(),
                rule: jump.clone(),
                above: first.clone(),
            });
        }
        for _ in 1..existing {
            changes.push(FwChange::DelJump { family, table: table.clone(), hook: hook.clone(), rule: jump.clone() });
        }
    }
    // Our jumps to chains we no longer want, and those chains.
    let wanted = |t: &str, n: &str| want.chains.iter().any(|c| c.table == t && c.name == n);
    let ours = format!("--comment \"{mark}\" ");
    for ((table, hook), rules) in &have.jumps {
        for r in rules {
            let target = r.rsplit(" -j ").next().unwrap_or("");
            if r.contains(&ours) && !wanted(table, target) {
                changes.push(FwChange::DelJump { family, table: table.clone(), hook: hook.clone(), rule: r.clone() });
            }
        }
    }
    for (table, chain) in have.chains.keys() {
        if !wanted(table, chain) && owned_chain_of(mark, have, table, chain) {
            changes.push(FwChange::DelChain { family, table: table.clone(), chain: chain.clone() });
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

    const V4: Family = Family::V4;

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
        let d = diff(V4, "vxrouter:a", &one_chain(), &IptState::default());
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
        assert!(diff(V4, "vxrouter:a", &want, &have).is_empty());

        have.chains.insert(("filter".into(), "VXROUTER-FWD".into()), vec!["-j DROP".into()]);
        have.jumps.insert(("filter".into(), "FORWARD".into()), vec![jump_rule("vxrouter:a", "VXROUTER-FWD")]);
        let d = diff(V4, "vxrouter:a", &want, &have);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(matches!(&d[0], FwChange::DelJump { hook, .. } if hook == "FORWARD"));
        assert!(matches!(&d[1], FwChange::DelChain { chain, .. } if chain == "VXROUTER-FWD"));
    }

    #[test]
    fn another_owners_chain_is_left_alone() {
        let mut have = IptState::default();
        have.chains.insert(("filter".into(), "VXROUTER-FWD".into()), vec!["-j DROP".into()]);
        have.jumps.insert(("filter".into(), "FORWARD".into()), vec![jump_rule("vxrouter:b", "VXROUTER-FWD")]);
        assert!(diff(V4, "vxrouter:a", &Ruleset::default(), &have).is_empty());
    }

    #[test]
    fn a_rule_above_the_jump_is_drift_and_repair_moves_the_jump_first() {
        let save = "*nat\n:POSTROUTING ACCEPT [0:0]\n:VXROUTER-POST - [0:0]\n-A POSTROUTING -j ACCEPT\n\
                    -A POSTROUTING -m comment --comment \"vxrouter:a\" -j VXROUTER-POST\n\
                    -A VXROUTER-POST -s 192.168.10.0/24 -o pub -j SNAT --to-source 203.0.113.123\nCOMMIT\n";
        let d = diff(V4, "vxrouter:a", &one_chain(), &parse_save(save));
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].describe(), "nat/POSTROUTING: `-j ACCEPT` was placed before vxrouter's jump");
        assert_eq!(
            render(V4, &d),
            "*nat\n-D POSTROUTING -m comment --comment \"vxrouter:a\" -j VXROUTER-POST\n\
             -I POSTROUTING 1 -m comment --comment \"vxrouter:a\" -j VXROUTER-POST\nCOMMIT\n"
        );
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
        let batch = render(
            V4,
            &[
                FwChange::DelChain { family: V4, table: "nat".into(), chain: "VXROUTER-OLD".into() },
                FwChange::AddJump {
                    family: V4,
                    table: "nat".into(),
                    hook: "POSTROUTING".into(),
                    rule: "-j VXROUTER-POST".into(),
                },
                FwChange::SetChain {
                    family: V4,
                    table: "nat".into(),
                    chain: "VXROUTER-POST".into(),
                    rules: vec!["-j MASQUERADE".into()],
                    found: None,
                },
            ],
        );
        assert_eq!(
            batch,
            "*nat\n:VXROUTER-POST - [0:0]\n-I POSTROUTING 1 -j VXROUTER-POST\n-A VXROUTER-POST -j MASQUERADE\n-F VXROUTER-OLD\n-X VXROUTER-OLD\nCOMMIT\n"
        );
    }
}
