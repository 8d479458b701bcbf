//! iptables backend: read with one `iptables-save`, write with one
//! `iptables-restore --noflush` batch per namespace (atomic per table).

use std::collections::BTreeMap;
use std::fs::File;

use anyhow::Result;

use super::rules::{Hook, Match, Policy, Rule, Table, Verdict};
use super::{CHAIN_PREFIX, Chain, FwChange, IptState, Ruleset};
use crate::profile::Proto;

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

/// A rule as `iptables-save` prints it (without "-A <chain> ").
pub fn render_rule(r: &Rule) -> String {
    let mut w: Vec<String> = Vec::new();
    let net = |c: &crate::profile::Ipv4Cidr| c.to_string();
    for m in &r.matches {
        if let Match::Src(c) = m {
            w.push(format!("-s {}", net(c)));
        }
    }
    for m in &r.matches {
        if let Match::Dst(c) = m {
            w.push(format!("-d {}", net(c)));
        }
    }
    for m in &r.matches {
        match m {
            Match::In(i) => w.push(format!("-i {i}")),
            Match::Out(o) => w.push(format!("-o {o}")),
            _ => {}
        }
    }
    for m in &r.matches {
        match m {
            Match::Port(Proto::Tcp, p) => w.push(format!("-p tcp -m tcp --dport {p}")),
            Match::Port(Proto::Udp, p) => w.push(format!("-p udp -m udp --dport {p}")),
            Match::IcmpEcho => w.push("-p icmp -m icmp --icmp-type 8".into()),
            _ => {}
        }
    }
    for m in &r.matches {
        match m {
            Match::Established => w.push("-m conntrack --ctstate RELATED,ESTABLISHED".into()),
            Match::Invalid => w.push("-m conntrack --ctstate INVALID".into()),
            Match::Dnatted => w.push("-m conntrack --ctstate DNAT".into()),
            _ => {}
        }
    }
    w.push(match &r.verdict {
        Verdict::Accept => "-j ACCEPT".into(),
        Verdict::Drop => "-j DROP".into(),
        Verdict::Return => "-j RETURN".into(),
        Verdict::Snat(a) => format!("-j SNAT --to-source {a}"),
        Verdict::Masquerade => "-j MASQUERADE".into(),
        Verdict::Dnat(a, p) => format!("-j DNAT --to-destination {a}:{p}"),
    });
    w.join(" ")
}

pub fn render_rules(rules: &[Rule]) -> Vec<String> {
    rules.iter().map(render_rule).collect()
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

#[cfg(test)]
mod tests {
    use super::*;

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
