//! BGP EVPN through FRR: vxrouter's part of the host's FRR configuration.
//!
//! FRR is the host's own service. vxrouter owns exactly one thing in it: the
//! default-VRF `router bgp <asn>` instance whose peer-group `VXROUTER`
//! carries the description `vxrouter:<host>` (FRR keeps descriptions in its
//! running configuration; it keeps no comments). It reads the running
//! configuration with `vtysh -c 'show running-config'`, compares its
//! instance line by line with the one it renders, and changes it with
//! `vtysh -f` (FRR's own configuration reader, the one `vtysh -b` and
//! frr-reload.py use): a script that enters `router bgp <asn>` and adds or
//! negates only the lines that differ, so sessions stay up through a change.
//! The same block is kept, between marker comments, in
//! /etc/frr/frr.conf, so FRR has it after a restart; nothing else in that
//! file is touched. A `router bgp` that is not marked is never changed: the
//! plan stops with a conflict. `destroy` runs `no router bgp <asn>` and
//! removes the marked block.
//!
//! `check` also reads vtysh's JSON: BGP sessions not established (to the
//! reflectors; on a reflector, to the clients it expects), and EVPN VNIs
//! zebra does not know.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::{Kind, ObserveCx, vxlan};
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::{EVPN_LISTEN_LIMIT, Flood, Profile};

pub struct Frr;

/// The peer-group of the sessions to the reflectors; its description marks
/// the instance as vxrouter's.
pub const GROUP: &str = "VXROUTER";
/// On a reflector: the peer-group of its dynamic clients.
pub const CLIENTS: &str = "VXROUTER-CLIENTS";
const AF: &str = "address-family l2vpn evpn";

/// FRR's configuration file (integrated configuration).
pub fn conf_path() -> PathBuf {
    std::env::var_os("VXROUTER_FRR_CONF").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/etc/frr/frr.conf"))
}

/// The instance vxrouter wants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Want {
    pub asn: u32,
    /// (context, line) as FRR shows them; context "" or the address family.
    pub lines: Vec<(String, String)>,
    pub vnis: Vec<(u32, String)>,
    pub reflectors: Vec<Ipv4Addr>,
    pub expect_clients: Vec<Ipv4Addr>,
}

/// What was read of FRR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seen {
    /// Where FRR's configuration file was looked for (read once, by
    /// observe: planning reads no environment).
    pub conf: PathBuf,
    /// bgpd answered vtysh.
    pub running: bool,
    /// The default-VRF BGP instance, if any.
    pub instance: Option<Instance>,
    /// The marked block in frr.conf (None: none there).
    pub file_block: Option<String>,
    /// frr.conf exists (else the configuration is not persisted).
    pub file: bool,
    /// Session states by neighbour address (l2vpn evpn).
    pub sessions: BTreeMap<String, String>,
    /// VNIs zebra knows.
    pub vnis: Vec<u32>,
}

impl Default for Seen {
    fn default() -> Self {
        Seen {
            conf: PathBuf::from("/etc/frr/frr.conf"),
            running: false,
            instance: None,
            file_block: None,
            file: false,
            sessions: BTreeMap::new(),
            vnis: vec![],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub asn: u32,
    pub lines: Vec<(String, String)>,
    /// The host named by its vxrouter mark, if any.
    pub owner: Option<String>,
}

fn mark_line(host: &str) -> String {
    format!("neighbor {GROUP} description vxrouter:{host}")
}

/// The instance's lines in the order they are entered.
pub fn render(p: &Profile, f: &Facts) -> Option<Want> {
    let e = p.evpn.as_ref()?;
    let local = vxlan::local_address(p, f);
    let (asn, hold) = (e.asn, e.hold_time);
    let mut top = vec![
        format!("bgp router-id {local}"),
        "no bgp default ipv4-unicast".to_string(),
        // Flood lists and MACs are sent after 50 ms instead of FRR's 1 s
        // (the reference: a new host's entries everywhere 1.2 s after its
        // FRR started instead of 2.2 s).
        "coalesce-time 50".to_string(),
    ];
    if e.reflector {
        // One cluster for both reflectors: a route one reflects is not
        // reflected again by the other (each client has both sessions).
        top.push(format!("bgp cluster-id {}", e.reflectors[0]));
    }
    top.push(format!("timers bgp {} {hold}", (hold / 3).max(1)));
    let group = |g: &str, what: &str| {
        vec![
            format!("neighbor {g} peer-group"),
            format!("neighbor {g} remote-as {asn}"),
            if what.is_empty() { mark_line(&p.host) } else { format!("neighbor {g} description vxrouter:{}{what}", p.host) },
            format!("neighbor {g} update-source {local}"),
            format!("neighbor {g} timers connect 2"),
        ]
    };
    top.extend(group(GROUP, ""));
    if e.reflector {
        top.extend(group(CLIENTS, " clients"));
    }
    let reflectors: Vec<Ipv4Addr> = e.reflectors.iter().copied().filter(|r| *r != local).collect();
    top.extend(reflectors.iter().map(|r| format!("neighbor {r} peer-group {GROUP}")));
    if let (true, Some(l)) = (e.reflector, e.listen) {
        top.push(format!("bgp listen limit {EVPN_LISTEN_LIMIT}"));
        top.push(format!("bgp listen range {l} peer-group {CLIENTS}"));
    }
    let mut af = vec![format!("neighbor {GROUP} activate")];
    if e.reflector {
        af.push(format!("neighbor {CLIENTS} activate"));
        af.push(format!("neighbor {CLIENTS} route-reflector-client"));
    }
    af.push("advertise-all-vni".to_string());
    let mut lines: Vec<(String, String)> = top.into_iter().map(|l| (String::new(), l)).collect();
    lines.extend(af.into_iter().map(|l| (AF.to_string(), l)));
    let vnis = p.segments.iter().filter(|s| s.flood == Flood::Evpn).map(|s| (s.vni, s.vxlan.clone())).collect();
    Some(Want { asn, lines, vnis, reflectors, expect_clients: e.expect_clients.clone() })
}

/// The block as a configuration file writes it.
pub fn block_text(asn: u32, lines: &[(String, String)]) -> String {
    let mut out = format!("router bgp {asn}\n");
    for (_, l) in lines.iter().filter(|(c, _)| c.is_empty()) {
        out.push_str(&format!(" {l}\n"));
    }
    for ctx in contexts(lines) {
        out.push_str(&format!(" {ctx}\n"));
        for (_, l) in lines.iter().filter(|(c, _)| *c == ctx) {
            out.push_str(&format!("  {l}\n"));
        }
        out.push_str(" exit-address-family\n");
    }
    out.push_str("exit\n");
    out
}

fn contexts(lines: &[(String, String)]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (c, _) in lines {
        if !c.is_empty() && !out.contains(c) {
            out.push(c.clone());
        }
    }
    out
}

/// The default-VRF `router bgp` instance of a running configuration.
pub fn parse_instance(config: &str) -> Option<Instance> {
    let mut it = config.lines();
    let asn = loop {
        let l = it.next()?;
        if let Some(rest) = l.strip_prefix("router bgp ") {
            let mut words = rest.split_whitespace();
            if let (Some(n), None) = (words.next(), words.next()) {
                break n.parse().ok()?;
            }
        }
    };
    let mut lines = Vec::new();
    let mut ctx = String::new();
    for l in it {
        if !l.starts_with(' ') {
            break; // "exit", or the next stanza (FRR before 8.0 wrote no exit)
        }
        let t = l.trim();
        if t == "!" || t.is_empty() {
            continue;
        }
        if t.starts_with("address-family ") {
            ctx = t.to_string();
        } else if t == "exit-address-family" {
            ctx.clear();
        } else {
            lines.push((ctx.clone(), t.to_string()));
        }
    }
    let prefix = format!("neighbor {GROUP} description vxrouter:");
    let owner = lines.iter().find_map(|(c, l)| if c.is_empty() { l.strip_prefix(&prefix).map(str::to_string) } else { None });
    Some(Instance { asn, lines, owner })
}

/// The block between vxrouter's markers in a configuration file.
fn markers(host: &str) -> (String, String) {
    (format!("! vxrouter:{host} begin (written by vxrouter apply; changed and removed by it)"), format!("! vxrouter:{host} end"))
}

pub fn file_block(text: &str, host: &str) -> Option<String> {
    let (begin, end) = markers(host);
    let start = text.lines().position(|l| l == begin)?;
    let lines: Vec<&str> = text.lines().skip(start + 1).take_while(|l| *l != end).collect();
    Some(lines.iter().map(|l| format!("{l}\n")).collect())
}

/// `text` with the marked block replaced by `block` (None: removed, Some:
/// put where it was, or appended); every other line as it was.
pub fn with_block(text: &str, host: &str, block: Option<&str>) -> String {
    let (begin, end) = markers(host);
    let mut out = String::new();
    let mut inside = false;
    let mut placed = false;
    for l in text.lines() {
        if l == begin {
            inside = true;
            continue;
        }
        if inside {
            if l == end {
                inside = false;
                if let (Some(b), false) = (block, placed) {
                    out.push_str(&format!("{begin}\n{b}{end}\n"));
                    placed = true;
                }
            }
            continue;
        }
        out.push_str(l);
        out.push('\n');
    }
    if let (Some(b), false) = (block, placed) {
        out.push_str(&format!("{begin}\n{b}{end}\n"));
    }
    out
}

/// The vtysh script that turns instance lines `from` into `to` (same AS):
/// negations first (address families, then the instance, last line first,
/// members before their peer-group), then additions in order.
pub fn script(asn: u32, from: &[(String, String)], to: &[(String, String)]) -> String {
    let gone: Vec<&(String, String)> = from.iter().filter(|l| !to.contains(l)).collect();
    let new: Vec<&(String, String)> = to.iter().filter(|l| !from.contains(l)).collect();
    // A peer-group or neighbour being deleted takes its other lines along.
    let deleted: Vec<String> = gone
        .iter()
        .filter(|(c, _)| c.is_empty())
        .filter_map(|(_, l)| {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                ["neighbor", n, "peer-group"] | ["neighbor", n, "peer-group", _] => Some(n.to_string()),
                _ => None,
            }
        })
        .collect();
    let negate = |l: &str| -> Option<String> {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["neighbor", n, "peer-group", _] => Some(format!("no neighbor {n}")),
            ["neighbor", n, "peer-group"] => Some(format!("no neighbor {n} peer-group")),
            ["neighbor", n, ..] if deleted.iter().any(|d| d == n) => None,
            _ => Some(l.strip_prefix("no ").map(str::to_string).unwrap_or_else(|| format!("no {l}"))),
        }
    };
    let mut out = format!("router bgp {asn}\n");
    let all: Vec<(String, String)> = from.iter().chain(to).cloned().collect();
    let ctxs = contexts(&all);
    for ctx in &ctxs {
        let lines: Vec<String> = gone.iter().rev().filter(|(c, _)| c == ctx).filter_map(|(_, l)| negate(l)).collect();
        if !lines.is_empty() {
            out.push_str(&format!(" {ctx}\n"));
            lines.iter().for_each(|l| out.push_str(&format!("  {l}\n")));
            out.push_str(" exit-address-family\n");
        }
    }
    // Members before their group: the group's own line comes last.
    let mut top: Vec<String> = gone.iter().rev().filter(|(c, _)| c.is_empty()).filter_map(|(_, l)| negate(l)).collect();
    top.sort_by_key(|l| l.ends_with(" peer-group"));
    top.iter().for_each(|l| out.push_str(&format!(" {l}\n")));
    new.iter().filter(|(c, _)| c.is_empty()).for_each(|(_, l)| out.push_str(&format!(" {l}\n")));
    for ctx in &ctxs {
        let lines: Vec<&String> = new.iter().filter(|(c, _)| c == ctx).map(|(_, l)| l).collect();
        if !lines.is_empty() {
            out.push_str(&format!(" {ctx}\n"));
            lines.iter().for_each(|l| out.push_str(&format!("  {l}\n")));
            out.push_str(" exit-address-family\n");
        }
    }
    out.push_str("exit\n");
    out
}

fn vtysh(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("vtysh");
    // Not in the terminal's process group: Ctrl-C stops vxrouter at a step
    // boundary, never vtysh halfway through a configuration.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    for a in args {
        cmd.arg(a);
    }
    let out = cmd.output().context("run vtysh")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        crate::bail!(
            Tool,
            "vtysh {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            text.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(text)
}

/// bgpd's vty socket is there and its pid file names a live bgpd.
pub fn bgpd_running() -> bool {
    ["/run/frr/bgpd.pid", "/var/run/frr/bgpd.pid"].iter().any(|p| {
        crate::daemon::read_pid(Path::new(p))
            .is_some_and(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "bgpd"))
    })
}

fn json(cmd: &str) -> Option<serde_json::Value> {
    serde_json::from_str(&vtysh(&["-c", cmd]).ok()?).ok()
}

impl Kind for Frr {
    const NAME: &'static str = "frr";
    type Item = Want;
    type Seen = Seen;

    fn desire(p: &Profile, f: &Facts) -> Vec<Want> {
        render(p, f).into_iter().collect()
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Seen> {
        let want = cx.desired.of::<Frr>().first();
        let mut seen = Seen { conf: conf_path(), ..Seen::default() };
        if let Ok(text) = std::fs::read_to_string(&seen.conf) {
            seen.file = true;
            seen.file_block = file_block(&text, &cx.desired.host);
        }
        if !bgpd_running() {
            return Ok(seen);
        }
        let Ok(config) = vtysh(&["-c", "show running-config"]) else { return Ok(seen) };
        seen.running = true;
        seen.instance = parse_instance(&config);
        let ours = seen.instance.as_ref().is_some_and(|i| i.owner.as_deref() == Some(cx.desired.host.as_str()));
        if let (Some(_), true) = (want, ours) {
            if let Some(peers) = json("show bgp l2vpn evpn summary json").and_then(|v| v.get("peers").cloned())
                && let Some(m) = peers.as_object()
            {
                for (addr, p) in m {
                    let state = p.get("state").and_then(|s| s.as_str()).unwrap_or("unknown");
                    seen.sessions.insert(addr.clone(), state.to_string());
                }
            }
            if let Some(v) = json("show evpn vni json").and_then(|v| v.as_object().cloned()) {
                seen.vnis = v.keys().filter_map(|k| k.parse().ok()).collect();
            }
        }
        Ok(seen)
    }

    fn plan(p: &mut Planner<'_>, want: &[Want], seen: &Seen) {
        let host = p.d.host.clone();
        let want = want.first();
        let found = seen.instance.as_ref();
        let ours = found.filter(|i| i.owner.as_deref() == Some(host.as_str()));
        if want.is_some() && !seen.running {
            p.conflict(
                "FRR's bgpd is not running (or vtysh cannot reach it); start FRR (systemctl start frr) with bgpd=yes in \
                 /etc/frr/daemons"
                    .to_string(),
            );
            return;
        }
        if let (Some(w), Some(i)) = (want, found)
            && ours.is_none()
        {
            let whose = i.owner.as_ref().map(|o| format!("vxrouter for host {o}")).unwrap_or("someone else".into());
            p.conflict(format!(
                "FRR already has `router bgp {}` (written by {whose}); vxrouter keeps the default BGP instance for EVPN \
                 (AS {}) and changes no instance it did not write: remove it, or run without [evpn]",
                i.asn, w.asn
            ));
            return;
        }
        match (want, ours) {
            (Some(w), None) => {
                p.push(Order::Late, SetBgp { asn: w.asn, from: None, to: Some(w.clone()), lines: w.lines.clone() })
            }
            (Some(w), Some(i)) => {
                if i.asn != w.asn || w.lines.iter().any(|l| !i.lines.contains(l)) || i.lines.iter().any(|l| !w.lines.contains(l))
                {
                    p.push(
                        Order::Late,
                        SetBgp { asn: w.asn, from: Some(i.clone()), to: Some(w.clone()), lines: w.lines.clone() },
                    );
                }
            }
            (None, Some(i)) => p.push(Order::StopDaemons, SetBgp { asn: i.asn, from: Some(i.clone()), to: None, lines: vec![] }),
            (None, None) => {}
        }
        // The persisted block, where FRR's configuration file is.
        let block = want.map(|w| block_text(w.asn, &w.lines));
        if seen.file && seen.file_block != block {
            let order = if block.is_some() { Order::Late } else { Order::StopDaemons };
            p.push(order, WriteConf { path: seen.conf.clone(), host: host.clone(), block, found: seen.file_block.clone() });
        } else if want.is_some() && !seen.file && seen.running {
            p.note(format!(
                "{} does not exist: FRR loses vxrouter's BGP instance when it restarts, until the next apply",
                seen.conf.display()
            ));
        }
        // Health: not changes, but `check` fails on them.
        if let (Some(w), Some(_), true) = (want, ours, seen.running) {
            for r in &w.reflectors {
                match seen.sessions.get(&r.to_string()).map(String::as_str) {
                    Some("Established") => {}
                    Some(state) => p.unhealthy(format!("BGP session to reflector {r} is {state}, not Established")),
                    None => p.unhealthy(format!("no BGP session to reflector {r}")),
                }
            }
            for c in &w.expect_clients {
                match seen.sessions.get(&c.to_string()).map(String::as_str) {
                    Some("Established") => {}
                    Some(state) => p.unhealthy(format!("expected client {c} is {state}, not Established")),
                    None => p.unhealthy(format!("expected client {c} has no BGP session with this reflector")),
                }
            }
            for (vni, link) in &w.vnis {
                if !seen.vnis.contains(vni) {
                    p.unhealthy(format!("FRR does not know VNI {vni} ({link}): zebra has not seen the link, or it is down"));
                }
            }
        }
    }
}

/// Adds, changes or removes the BGP instance.
#[derive(Debug, Serialize)]
pub struct SetBgp {
    pub asn: u32,
    pub from: Option<Instance>,
    #[serde(skip)]
    pub to: Option<Want>,
    pub lines: Vec<(String, String)>,
}

impl Step for SetBgp {
    fn action(&self) -> &'static str {
        "frr_bgp"
    }
    fn verb(&self) -> Verb {
        match (&self.from, &self.to) {
            (None, _) => Verb::Create,
            (Some(_), None) => Verb::Remove,
            (Some(f), Some(_)) if f.asn != self.asn => Verb::Recreate,
            _ => Verb::Change,
        }
    }
    fn object(&self) -> String {
        format!("frr router bgp {}", self.asn)
    }
    fn detail(&self) -> String {
        let show = |l: &(String, String)| if l.0.is_empty() { l.1.clone() } else { format!("{}: {}", l.0, l.1) };
        match (&self.from, &self.to) {
            (None, Some(w)) => {
                let peers: Vec<String> = w.reflectors.iter().map(|r| r.to_string()).collect();
                let listen =
                    w.lines.iter().find_map(|(_, l)| l.strip_prefix("bgp listen range ")).map(|l| format!(", listen {l}"));
                format!(
                    "l2vpn evpn advertise-all-vni, reflectors [{}]{}, {}",
                    peers.join(", "),
                    listen.unwrap_or_default(),
                    w.lines.iter().find(|(_, l)| l.starts_with("timers bgp")).map(|(_, l)| l.as_str()).unwrap_or("")
                )
            }
            (Some(f), None) => format!("{} lines", f.lines.len()),
            (Some(f), Some(w)) if f.asn != w.asn => format!("AS {} (found {})", w.asn, f.asn),
            (Some(f), Some(w)) => {
                let mut d: Vec<String> =
                    w.lines.iter().filter(|l| !f.lines.contains(l)).map(|l| format!("+{}", show(l))).collect();
                d.extend(f.lines.iter().filter(|l| !w.lines.contains(l)).map(|l| format!("-{}", show(l))));
                d.join(", ")
            }
            (None, None) => String::new(),
        }
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let from = self.from.as_ref().map(|i| (i.asn, i.lines.clone()));
        let to = self.to.as_ref().map(|w| (w.asn, w.lines.clone()));
        converge(cx, &from, &to).with_context(|| format!("{} {}", self.verb().word(), self.object()))?;
        cx.undo_with(Converge { from: to, to: from });
        Ok(())
    }
}

type Lines = Option<(u32, Vec<(String, String)>)>;

/// Runs the vtysh script from one instance to another, then reads the
/// running configuration back: FRR must show exactly the lines wanted.
fn converge(cx: &mut Apply<'_>, from: &Lines, to: &Lines) -> Result<()> {
    let mut text = String::new();
    match (from, to) {
        (Some((fa, _)), Some((ta, tl))) if fa != ta => {
            text.push_str(&format!("no router bgp {fa}\n"));
            text.push_str(&block_text(*ta, tl));
        }
        (Some((_, fl)), Some((ta, tl))) => text.push_str(&script(*ta, fl, tl)),
        (None, Some((ta, tl))) => text.push_str(&block_text(*ta, tl)),
        (Some((fa, _)), None) => text.push_str(&format!("no router bgp {fa}\n")),
        (None, None) => return Ok(()),
    }
    let dir = cx.run_dir.join("frr");
    crate::fsutil::private_dir(&dir)?;
    let file = dir.join(format!("{}.vtysh", cx.host));
    crate::fsutil::write_private(&file, text.as_bytes())?;
    let run = vtysh(&["-f", &file.display().to_string()]);
    let _ = std::fs::remove_file(&file);
    let config = vtysh(&["-c", "show running-config"])?;
    let now = parse_instance(&config);
    let ok = match (to, &now) {
        (None, None) => true,
        (Some((ta, tl)), Some(i)) => {
            i.asn == *ta && tl.iter().all(|l| i.lines.contains(l)) && i.lines.iter().all(|l| tl.contains(l))
        }
        _ => false,
    };
    if !ok {
        let why = run.err().map(|e| format!(": {e}")).unwrap_or_default();
        crate::bail!(Tool, "FRR does not show the BGP instance as configured{why}");
    }
    Ok(())
}

#[derive(Debug)]
struct Converge {
    from: Lines,
    to: Lines,
}

impl Undo for Converge {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        converge(cx, &self.from, &self.to)
    }
}

/// Writes (or removes) vxrouter's block in FRR's configuration file.
#[derive(Debug, Serialize)]
pub struct WriteConf {
    pub path: PathBuf,
    pub host: String,
    pub block: Option<String>,
    pub found: Option<String>,
}

impl Step for WriteConf {
    fn action(&self) -> &'static str {
        "frr_conf"
    }
    fn verb(&self) -> Verb {
        match (&self.found, &self.block) {
            (None, _) => Verb::Create,
            (Some(_), None) => Verb::Remove,
            _ => Verb::Change,
        }
    }
    fn object(&self) -> String {
        format!("vxrouter's block in {}", self.path.display())
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        put_block(&self.path, &self.host, self.block.as_deref())?;
        let _ = cx;
        cx.undo_with(PutBlock { path: self.path.clone(), host: self.host.clone(), block: self.found.clone() });
        Ok(())
    }
}

/// Rewrites the file with the block replaced, keeping its owner and mode.
fn put_block(path: &Path, host: &str, block: Option<&str>) -> Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let meta = std::fs::metadata(path)?;
    let new = with_block(&text, host, block);
    let tmp = path.with_extension("vxrouter-tmp");
    std::fs::write(&tmp, new).with_context(|| format!("write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(meta.mode() & 0o7777))?;
    let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
    std::fs::rename(&tmp, path).with_context(|| format!("replace {}", path.display()))?;
    Ok(())
}

#[derive(Debug)]
struct PutBlock {
    path: PathBuf,
    host: String,
    block: Option<String>,
}

impl Undo for PutBlock {
    fn undo(&self, _cx: &mut Apply<'_>) -> Result<()> {
        put_block(&self.path, &self.host, self.block.as_deref())
    }
}

// ---- preflight ------------------------------------------------------------

/// The oldest FRR vxrouter drives (per-VNI devices, `bgp listen range` with
/// `listen limit`, `advertise-all-vni`, JSON summaries: 8.x, tested 8.4).
pub const MIN_FRR: (u32, u32) = (8, 0);

/// What is wrong with this host's FRR for EVPN (empty: nothing).
pub fn preflight() -> Vec<String> {
    let mut out = Vec::new();
    if !crate::firewall::in_path("vtysh") {
        out.push("[evpn] needs FRR: vtysh not found (install the frr package)".to_string());
        return out;
    }
    let version = ["/usr/lib/frr/bgpd", "/usr/sbin/bgpd"]
        .iter()
        .filter(|p| Path::new(p).exists())
        .find_map(|p| Command::new(p).arg("--version").output().ok().filter(|o| o.status.success()));
    let Some(v) = version else {
        out.push("[evpn] needs FRR's bgpd: not found in /usr/lib/frr (install the frr package)".to_string());
        return out;
    };
    let text = String::from_utf8_lossy(&v.stdout).to_string();
    let ver = text.split_whitespace().skip_while(|w| *w != "version").nth(1).unwrap_or("").to_string();
    let mut nums = ver.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    match (nums.next(), nums.next()) {
        (Some(a), Some(b)) if (a, b) >= MIN_FRR => {}
        _ => out.push(format!("FRR {ver:?} is not supported: [evpn] needs FRR {}.{} or later", MIN_FRR.0, MIN_FRR.1)),
    }
    let daemons = std::fs::read_to_string("/etc/frr/daemons").unwrap_or_default();
    if !daemons.lines().any(|l| l.trim() == "bgpd=yes") {
        out.push("bgpd is not enabled in /etc/frr/daemons: set bgpd=yes and restart FRR (systemctl restart frr)".to_string());
    }
    if bgp_port_taken() && !bgpd_running() {
        out.push("TCP port 179 (BGP) is held by a program that is not FRR's bgpd: stop it".to_string());
    }
    out
}

/// Something listens on TCP port 179 in this network namespace.
fn bgp_port_taken() -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).unwrap_or_default().lines().skip(1).any(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 3 && w[1].ends_with(":00B3") && w[3] == "0A"
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNING: &str = "frr version 8.4.4\n!\nrouter bgp 65000\n bgp router-id 10.0.1.1\n neighbor VXROUTER peer-group\n \
                           neighbor VXROUTER description vxrouter:h1\n neighbor 10.0.1.2 peer-group VXROUTER\n !\n \
                           address-family l2vpn evpn\n  neighbor VXROUTER activate\n  advertise-all-vni\n \
                           exit-address-family\nexit\n!\nrouter bgp 65000 vrf red\n bgp router-id 1.1.1.1\nexit\n!\nroute-map X permit 10\nexit\n";

    #[test]
    fn parses_the_default_instance_and_its_owner() {
        let i = parse_instance(RUNNING).unwrap();
        assert_eq!(i.asn, 65000);
        assert_eq!(i.owner.as_deref(), Some("h1"));
        assert_eq!(i.lines.len(), 6);
        assert!(i.lines.contains(&(AF.to_string(), "advertise-all-vni".to_string())));
        assert!(!i.lines.iter().any(|(_, l)| l.contains("1.1.1.1")), "the vrf instance is not read");
        assert!(parse_instance("router bgp 1 vrf x\n bgp router-id 1.1.1.1\nexit\n").is_none());
    }

    #[test]
    fn the_file_block_is_replaced_and_nothing_else() {
        let text = "hostname h\n!\nroute-map X permit 10\nexit\n";
        let with = with_block(text, "h1", Some("router bgp 1\nexit\n"));
        assert!(with.starts_with(text));
        assert_eq!(file_block(&with, "h1").as_deref(), Some("router bgp 1\nexit\n"));
        assert_eq!(file_block(&with, "h2"), None);
        let changed = with_block(&with, "h1", Some("router bgp 2\nexit\n"));
        assert_eq!(file_block(&changed, "h1").as_deref(), Some("router bgp 2\nexit\n"));
        assert_eq!(with_block(&changed, "h1", None), text);
    }

    #[test]
    fn a_change_negates_members_before_their_group() {
        let l = |c: &str, s: &str| (c.to_string(), s.to_string());
        let from = vec![
            l("", "neighbor VXROUTER-CLIENTS peer-group"),
            l("", "neighbor VXROUTER-CLIENTS remote-as 1"),
            l("", "neighbor 10.0.0.2 peer-group VXROUTER"),
            l("", "bgp listen range 10.0.0.0/16 peer-group VXROUTER-CLIENTS"),
            l(AF, "neighbor VXROUTER-CLIENTS activate"),
            l(AF, "advertise-all-vni"),
        ];
        let to = vec![l("", "neighbor 10.0.0.3 peer-group VXROUTER"), l(AF, "advertise-all-vni")];
        let s = script(1, &from, &to);
        // The group's address-family lines go with the group itself.
        let want = "router bgp 1\n no bgp listen range 10.0.0.0/16 peer-group VXROUTER-CLIENTS\n no neighbor 10.0.0.2\n \
                    no neighbor VXROUTER-CLIENTS peer-group\n neighbor 10.0.0.3 peer-group VXROUTER\nexit\n";
        assert_eq!(s, want);
    }
}
