//! nftables backend: vxrouter's rules are a table of its own per family and
//! namespace (`table ip vxrouter`, `table ip6 vxrouter`, commented with the
//! owner mark), written in one atomic `nft -f` transaction per namespace and
//! read back with one `nft list ruleset`. Its base chains hook in directly: a
//! `drop` there is final whatever other tables say, and an `accept` in
//! another table cannot let past what vxrouter drops (unlike iptables, where
//! a rule inserted before vxrouter's jump decides first).

use std::collections::BTreeMap;
use std::fs::File;

use serde::{Deserialize, Serialize};

use ipnet::IpNet;

use super::render::{self, Syntax};
use super::rules::{Chain, Family, Hook, Policy, Table, Verdict};
use super::{Driver, FirewallState, FwChange};
use crate::error::Result;
use crate::profile::Proto;

pub const TABLE: &str = "vxrouter";

/// vxrouter's table as `nft list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NftTable {
    pub family: Family,
    pub comment: Option<String>,
    /// chain name → (header line "type … policy accept;", rules).
    pub chains: BTreeMap<String, (String, Vec<String>)>,
}

/// What `nft list ruleset` shows in a namespace, as far as vxrouter cares.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NftState {
    /// `table ip vxrouter`.
    pub ours: Option<NftTable>,
    /// `table ip6 vxrouter`.
    pub ours6: Option<NftTable>,
    /// Rules in other tables that are not vxrouter's iptables chains or jumps.
    pub foreign: usize,
}

impl NftState {
    pub fn table(&self, family: Family) -> Option<&NftTable> {
        match family {
            Family::V4 => self.ours.as_ref(),
            Family::V6 => self.ours6.as_ref(),
        }
    }
}

/// nft's word for a family.
pub fn family_word(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

impl NftTable {
    pub fn family_word(&self) -> &'static str {
        family_word(self.family)
    }
}

/// True when the `nft` tool is installed (looked up once per process).
pub fn available() -> bool {
    static FOUND: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FOUND.get_or_init(|| super::in_path("nft"))
}

/// nft chain names: the hook's own word ("fwd" etc. are nft keywords).
fn chain_name(c: &Chain) -> String {
    match c.name {
        "in" => "input",
        "fwd" => "forward",
        "pre" => "prerouting",
        "post" => "postrouting",
        other => other,
    }
    .to_string()
}

fn header(c: &Chain) -> String {
    let (kind, hook, prio) = match (c.table, c.hook) {
        (Table::Nat, Hook::Prerouting) => ("nat", "prerouting", "dstnat"),
        (Table::Nat, Hook::Postrouting) => ("nat", "postrouting", "srcnat"),
        (Table::Nat, Hook::Input) => ("nat", "input", "100"),
        (Table::Nat, Hook::Forward) => ("filter", "forward", "filter"),
        (Table::Filter, Hook::Input) => ("filter", "input", "filter"),
        (Table::Filter, Hook::Forward) => ("filter", "forward", "filter"),
        (Table::Filter, Hook::Prerouting) => ("filter", "prerouting", "filter"),
        (Table::Filter, Hook::Postrouting) => ("filter", "postrouting", "filter"),
    };
    format!("type {kind} hook {hook} priority {prio}; policy accept;")
}

/// `nft list`'s words.
pub struct NftSyntax;

impl Syntax for NftSyntax {
    fn src(&self, c: &IpNet) -> String {
        format!("{} saddr {}", addr_word(c), render::net(c))
    }
    fn dst(&self, c: &IpNet) -> String {
        format!("{} daddr {}", addr_word(c), render::net(c))
    }
    fn iif(&self, name: &str) -> String {
        format!("iifname \"{name}\"")
    }
    fn oif(&self, name: &str) -> String {
        format!("oifname \"{name}\"")
    }
    fn port(&self, proto: Proto, port: u16) -> String {
        format!("{} dport {port}", proto.as_str())
    }
    fn icmp_echo(&self, family: Family) -> String {
        match family {
            Family::V4 => "icmp type echo-request".into(),
            Family::V6 => "icmpv6 type echo-request".into(),
        }
    }
    fn icmp6(&self, t: u8) -> String {
        // As `nft list` prints them: known types by name.
        let name = match t {
            1 => "destination-unreachable",
            2 => "packet-too-big",
            3 => "time-exceeded",
            4 => "parameter-problem",
            133 => "nd-router-solicit",
            134 => "nd-router-advert",
            135 => "nd-neighbor-solicit",
            136 => "nd-neighbor-advert",
            _ => return format!("icmpv6 type {t}"),
        };
        format!("icmpv6 type {name}")
    }
    fn vrrp(&self) -> String {
        "ip protocol vrrp".into()
    }
    fn established(&self) -> String {
        "ct state established,related".into()
    }
    fn invalid(&self) -> String {
        "ct state invalid".into()
    }
    fn dnatted(&self) -> String {
        "ct status dnat".into()
    }
    fn verdict(&self, v: &Verdict) -> String {
        match v {
            Verdict::Accept => "accept".into(),
            Verdict::Drop => "drop".into(),
            Verdict::Return => "return".into(),
            Verdict::Snat(a) => format!("snat to {a}"),
            Verdict::Masquerade => "masquerade".into(),
            Verdict::Dnat(std::net::IpAddr::V4(a), p) => format!("dnat to {a}:{p}"),
            Verdict::Dnat(std::net::IpAddr::V6(a), p) => format!("dnat to [{a}]:{p}"),
        }
    }
}

fn addr_word(c: &IpNet) -> &'static str {
    match c {
        IpNet::V4(_) => "ip",
        IpNet::V6(_) => "ip6",
    }
}

/// The table of one family vxrouter wants, in the form `nft list` shows
/// (None: the policy has no chains of that family).
pub fn desired(mark: &str, p: &Policy, family: Family) -> Option<NftTable> {
    let chains: BTreeMap<String, (String, Vec<String>)> = p
        .chains
        .iter()
        .filter(|c| c.family == family)
        .map(|c| (chain_name(c), (header(c), render::rules(&c.rules, family, &NftSyntax))))
        .collect();
    (!chains.is_empty()).then(|| NftTable { family, comment: Some(mark.to_string()), chains })
}

/// The table as nft source text.
pub fn render(t: &NftTable) -> String {
    render_with(t, true)
}

/// `render`, with or without the table's comment line.
fn render_with(t: &NftTable, comment: bool) -> String {
    let mut s = format!("table {} {TABLE} {{\n", t.family_word());
    if let Some(c) = t.comment.as_ref().filter(|_| comment) {
        s.push_str(&format!("\tcomment \"{c}\"\n"));
    }
    for (name, (head, rules)) in &t.chains {
        s.push_str(&format!("\tchain {name} {{\n\t\t{head}\n"));
        for r in rules {
            s.push_str(&format!("\t\t{r}\n"));
        }
        s.push_str("\t}\n");
    }
    s.push_str("}\n");
    s
}

/// Chains whose rules or hook differ (for messages).
pub fn differing(want: &NftTable, have: &NftTable) -> Vec<String> {
    let mut out = Vec::new();
    for (name, w) in &want.chains {
        match have.chains.get(name) {
            None => out.push(format!("chain {name} missing")),
            Some(h) if h.0 != w.0 => out.push(format!("chain {name}: hook `{}` (found `{}`)", w.0, h.0)),
            Some(h) if h != w => out.push(format!("chain {name}: {}", super::rule_diff(&w.1, &h.1))),
            Some(_) => {}
        }
    }
    for name in have.chains.keys().filter(|n| !want.chains.contains_key(*n)) {
        out.push(format!("extra chain {name}"));
    }
    if want.comment != have.comment {
        out.push(format!(
            "owner {} (found {})",
            want.comment.as_deref().unwrap_or("none"),
            have.comment.as_deref().unwrap_or("none")
        ));
    }
    out
}

pub fn parse_ruleset(text: &str) -> NftState {
    let mut st = NftState::default();
    let mut in_ours: Option<Family> = None;
    let mut table_depth = 0usize;
    let mut chain: Option<(String, String, Vec<String>, bool)> = None; // name, header, rules, is_vxrouter_ipt_chain
    let mut ours = NftTable::default();
    for raw in text.lines() {
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("table ") {
            let name = rest.trim_end_matches(" {").trim();
            in_ours = Family::ALL.into_iter().find(|f| name == format!("{} {TABLE}", family_word(*f)));
            table_depth = 1;
            continue;
        }
        if table_depth == 0 {
            continue;
        }
        if let Some(rest) = line.strip_prefix("chain ") {
            let name = rest.trim_end_matches(" {").trim().to_string();
            let ipt_ours = name.starts_with(super::CHAIN_PREFIX);
            chain = Some((name, String::new(), Vec::new(), ipt_ours));
            continue;
        }
        if line == "}" {
            match chain.take() {
                Some((name, head, rules, _)) => {
                    if in_ours.is_some() {
                        ours.chains.insert(name, (head, rules));
                    }
                }
                None => {
                    table_depth = 0;
                    if let Some(family) = in_ours {
                        let table = NftTable { family, ..std::mem::take(&mut ours) };
                        match family {
                            Family::V4 => st.ours = Some(table),
                            Family::V6 => st.ours6 = Some(table),
                        }
                    }
                    in_ours = None;
                }
            }
            continue;
        }
        match &mut chain {
            Some((_, head, rules, ipt_ours)) => {
                if line.starts_with("type ") && head.is_empty() && rules.is_empty() {
                    *head = line.to_string();
                } else if in_ours.is_some() {
                    rules.push(line.to_string());
                } else if !*ipt_ours
                    && !line.contains("\"vxrouter:")
                    && !line.contains(&format!("jump {}", super::CHAIN_PREFIX))
                    && !line.starts_with("policy ")
                {
                    // nft shows iptables-nft's jumps without their comment:
                    // a jump to a VXROUTER- chain is vxrouter's.
                    st.foreign += 1;
                }
            }
            None => {
                if in_ours.is_some()
                    && let Some(c) = line.strip_prefix("comment ")
                {
                    ours.comment = Some(c.trim_matches('"').to_string());
                }
            }
        }
    }
    st
}

pub fn observe(ns: Option<&File>, where_: &str) -> Result<NftState> {
    Ok(parse_ruleset(&super::tool::read("nft", LIST, ns, where_)?))
}

/// The part of an `nft -f` transaction that makes vxrouter's table of
/// `family` be `table` (None: removes it). `fresh`: there is no table yet.
pub fn batch(family: Family, table: Option<&NftTable>, fresh: bool) -> String {
    let f = family_word(family);
    match table {
        // `create` fails if a table appeared since it was observed. It must
        // carry the comment itself: nft 1.0 drops the chains of a `create`
        // block, and a later `table` block cannot set a comment.
        Some(t) if fresh => {
            let comment = t.comment.as_ref().map(|c| format!(" comment \"{c}\";")).unwrap_or_default();
            format!("create table {f} {TABLE} {{{comment} }}\n{}", render_with(t, false))
        }
        // Declaring the table first makes the delete valid when it is absent.
        _ => {
            let mut batch = format!("table {f} {TABLE}\ndelete table {f} {TABLE}\n");
            if let Some(t) = table {
                batch.push_str(&render(t));
            }
            batch
        }
    }
}

/// Applies nftables changes in one transaction (one `nft -f` process).
pub fn apply(ns: Option<&File>, where_: &str, changes: &[FwChange]) -> Result<()> {
    let mut text = String::new();
    for c in changes {
        match c {
            FwChange::NftReplace { table, fresh, .. } => text.push_str(&batch(table.family, Some(table), *fresh)),
            FwChange::NftDelete { family } => text.push_str(&batch(*family, None, false)),
            _ => {}
        }
    }
    if text.is_empty() {
        return Ok(());
    }
    super::tool::feed("nft", &["-f", "-"], ns, where_, &text)
}

/// The nftables backend.
pub struct Nftables;

/// The listing `observe` parses.
const LIST: &[&str] = &["list", "ruleset"];

impl Driver for Nftables {
    fn prefetch(&self, ns: Option<File>) {
        super::tool::prefetch("nft", LIST, ns);
    }

    fn read(&self, ns: Option<&File>, where_: &str, st: &mut FirewallState) -> Result<()> {
        st.nft = Some(observe(ns, where_)?);
        Ok(())
    }

    fn diff(&self, mark: &str, want: Option<&Policy>, have: &FirewallState) -> Result<Vec<FwChange>, String> {
        let mut out = Vec::new();
        for family in Family::ALL {
            let ours = have.nft.as_ref().and_then(|n| n.table(family));
            if let Some(t) = ours
                && let Some(owner) = t.comment.as_deref()
                && owner != mark
            {
                return Err(format!("nftables table {} {TABLE} belongs to {owner}", family_word(family)));
            }
            match (want.and_then(|p| desired(mark, p, family)), ours) {
                (Some(w), Some(h)) if &w == h => {}
                (Some(w), Some(h)) => {
                    let why = differing(&w, h);
                    out.push(FwChange::NftReplace { table: w, why, fresh: false });
                }
                (Some(w), None) => out.push(FwChange::NftReplace { table: w, why: vec![], fresh: true }),
                (None, Some(_)) => out.push(FwChange::NftDelete { family }),
                (None, None) => {}
            }
        }
        Ok(out)
    }

    fn write(&self, ns: Option<&File>, where_: &str, changes: &[FwChange]) -> Result<()> {
        apply(ns, where_, changes)
    }

    fn inverse(&self, changes: &[FwChange], before: &FirewallState) -> Vec<FwChange> {
        let mut inv = Vec::new();
        for c in changes {
            let family = match c {
                FwChange::NftReplace { table, .. } => table.family,
                FwChange::NftDelete { family } => *family,
                _ => continue,
            };
            match before.nft.as_ref().and_then(|n| n.table(family)).cloned() {
                Some(t) => inv.push(FwChange::NftReplace { table: t, why: vec![], fresh: false }),
                None => inv.push(FwChange::NftDelete { family }),
            }
        }
        inv
    }

    /// The namespace was just made again: it holds no table, so create it.
    fn recreate(&self, state: &FirewallState) -> Vec<FwChange> {
        let Some(n) = &state.nft else { return vec![] };
        [&n.ours, &n.ours6]
            .into_iter()
            .flatten()
            .map(|t| FwChange::NftReplace { table: t.clone(), why: vec![], fresh: true })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::rules::router_policy;
    use crate::profile::Profile;

    #[test]
    fn render_then_parse_round_trips() {
        let p = Profile::parse("p.toml", include_str!("../../profiles/unicast/host-a.toml")).unwrap();
        let want = desired("vxrouter:host-a", &router_policy(p.router.as_ref().unwrap()), Family::V4).unwrap();
        let text = render(&want);
        assert!(
            text.contains("\t\tip daddr 203.0.113.123 iifname \"gw-br-pu\" tcp dport 2222 dnat to 192.168.10.12:22\n"),
            "{text}"
        );
        assert!(text.contains("ct state established,related accept"));
        let seen = parse_ruleset(
            &(text.clone()
                + "table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy accept;\n\t\tip saddr 10.9.0.0/16 accept\n\t\tcomment \"vxrouter:host-a\" jump VXROUTER-FWD\n\t}\n\tchain VXROUTER-FWD {\n\t\tdrop\n\t}\n}\n"),
        );
        assert_eq!(seen.ours.as_ref(), Some(&want));
        assert_eq!(seen.foreign, 1, "only the foreign rule counts");
        // As iptables-nft rules really show in nft: the comment is not shown.
        assert!(differing(&want, seen.ours.as_ref().unwrap()).is_empty());
        let ipt_nft = parse_ruleset(
            "table ip filter {\n\tchain INPUT {\n\t\ttype filter hook input priority filter; policy accept;\n\t\t counter packets 0 bytes 0 jump VXROUTER-IN\n\t}\n}\n",
        );
        assert_eq!(ipt_nft.foreign, 0);
    }

    #[test]
    fn a_fresh_table_is_created_not_replaced() {
        let p = Profile::parse("p.toml", include_str!("../../profiles/host-a.toml")).unwrap();
        let want = desired("vxrouter:host-a", &router_policy(p.router.as_ref().unwrap()), Family::V4).unwrap();
        let fresh = batch(Family::V4, Some(&want), true);
        assert!(fresh.starts_with("create table ip vxrouter { comment \"vxrouter:host-a\"; }\ntable ip vxrouter {\n"), "{fresh}");
        assert!(!fresh.contains("delete"), "{fresh}");
        assert_eq!(fresh.matches("comment").count(), 1, "{fresh}");
        let replace = batch(Family::V4, Some(&want), false);
        assert!(replace.starts_with("table ip vxrouter\ndelete table ip vxrouter\ntable ip vxrouter {\n\tcomment"), "{replace}");
        assert_eq!(batch(Family::V4, None, false), "table ip vxrouter\ndelete table ip vxrouter\n");
        assert_eq!(batch(Family::V6, None, false), "table ip6 vxrouter\ndelete table ip6 vxrouter\n");
    }
}
