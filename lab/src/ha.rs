//! The router high-availability cells: run by `lab check` after the matrix
//! when the lab has exactly two router hosts whose profiles have a
//! `[router.ha]`. A VM on another host probes the internet server every
//! 10 ms (probe.rs) and holds TCP conversations through SNAT while the lab
//! takes the active router host away (failover, sessions), brings it back
//! like a reboot (return), hands over on purpose (handover) and watches a
//! minute of idle under CPU load (idle).
//!
//! Which router is active is read from the ground truth: the router
//! namespace that holds the public address and the private gateway
//! addresses. keepalived's transitions file is a secondary report.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::checks::CheckResult;
use crate::interrupt;
use crate::nodes::{self, LabDir, Node, SELF_EXE};
use crate::probe::{ProbeReport, TalkReport};
use crate::spec::{Lab, LabVm, VmKind};

/// The port of the HA server (UDP echo and TCP conversations).
pub const HA_PORT: u16 = 7002;
/// Unplanned failover with the default timers.
pub const FAILOVER_GOAL_MS: f64 = 500.0;
/// Unplanned failover when the routers advertise every 0.03 s or faster.
pub const FAST_FAILOVER_GOAL_MS: f64 = 100.0;
pub const FAST_ADVERT: f64 = 0.03;
/// Planned handover, and the return of a router (either way).
pub const PLANNED_GOAL_MS: f64 = 100.0;
pub const RETURN_GOAL_MS: f64 = 100.0;
/// After a partition heals: one active router again, and no gap above this.
pub const HEAL_GOAL_MS: f64 = 500.0;
/// A conversation that stalled longer than this counts as timed out.
pub const SESSION_STALL_MS: f64 = 3000.0;
/// Idle: at most this share of the probes lost, no gap above this. The gap
/// bound is the failover goal: what idle must not show is an outage, and on
/// a two-core machine running two CPU hogs (and other labs) a probe is
/// sometimes answered 100-150 ms late with nothing lost and no router state
/// change (seen: 122 ms) — scheduling, not VRRP. A spurious failover shows
/// as a state change, which fails the cell on its own.
pub const IDLE_LOSS: f64 = 0.001;
pub const IDLE_GAP_MS: f64 = 500.0;
/// How long after the takeover the prober keeps going (a path that did not
/// come back shows as a gap running to the end).
const SETTLE: Duration = Duration::from_millis(1000);

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("ha: {}", msg.as_ref());
}

/// `[router.ha]` of a profile, read from its text (defaults as documented
/// in docs/profile.md).
#[derive(Debug, Clone, PartialEq)]
pub struct HaSettings {
    pub vrid: i64,
    pub priority: i64,
    pub peer: String,
    pub advert_interval: f64,
    pub preempt_delay: f64,
    pub conntrack_sync: bool,
    pub track_uplink: bool,
}

pub fn settings(profile_text: &str) -> Option<HaSettings> {
    let v: toml::Value = toml::from_str(profile_text).ok()?;
    let ha = v.get("router")?.get("ha")?.as_table()?;
    let num = |k: &str, d: f64| ha.get(k).and_then(|x| x.as_float().or(x.as_integer().map(|i| i as f64))).unwrap_or(d);
    let flag = |k: &str| ha.get(k).and_then(toml::Value::as_bool).unwrap_or(true);
    Some(HaSettings {
        vrid: ha.get("vrid")?.as_integer()?,
        priority: ha.get("priority")?.as_integer()?,
        peer: ha.get("peer").and_then(toml::Value::as_str).unwrap_or("").to_string(),
        advert_interval: num("advert_interval", 0.1),
        preempt_delay: num("preempt_delay", 5.0),
        conntrack_sync: flag("conntrack_sync"),
        track_uplink: flag("track_uplink"),
    })
}

/// One of the two HA router hosts.
#[derive(Debug, Clone)]
pub struct HaRouter {
    /// Its index among the lab's hosts: its cables are u<idx> and p<idx>.
    pub idx: usize,
    pub name: String,
    pub profile: PathBuf,
    pub ns: String,
    pub public: Ipv4Addr,
    pub gateways: Vec<Ipv4Addr>,
    /// The bridge ends of its router's legs, in the host namespace.
    pub host_legs: Vec<String>,
    pub ha: HaSettings,
}

#[derive(Debug, Clone)]
pub struct Pair {
    pub r: [HaRouter; 2],
    pub failover_goal_ms: f64,
}

impl Pair {
    fn fast(&self) -> bool {
        self.r.iter().all(|r| r.ha.advert_interval <= FAST_ADVERT + 1e-9)
    }
    fn preempt(&self) -> Duration {
        Duration::from_secs_f64(self.r.iter().map(|r| r.ha.preempt_delay).fold(0.0, f64::max))
    }
}

/// The HA pair of a lab: exactly two router hosts with `[router.ha]`.
pub fn pair(lab: &Lab) -> Option<Pair> {
    let mut rs = Vec::new();
    for (idx, h) in lab.hosts.iter().enumerate() {
        let Some(r) = &h.profile.router else { continue };
        let Some(ha) = std::fs::read_to_string(&h.profile_path).ok().and_then(|t| settings(&t)) else { continue };
        let mut host_legs = vec![r.public.leg.veth[0].clone()];
        host_legs.extend(r.private.iter().map(|l| l.veth[0].clone()));
        rs.push(HaRouter {
            idx,
            name: h.name.clone(),
            profile: h.profile_path.clone(),
            ns: r.namespace.clone(),
            public: r.public.leg.address.addr(),
            gateways: r.private.iter().map(|l| l.address.addr()).collect(),
            host_legs,
            ha,
        });
    }
    let r: [HaRouter; 2] = rs.try_into().ok()?;
    let fast = r.iter().all(|r| r.ha.advert_interval <= FAST_ADVERT + 1e-9);
    Some(Pair { r, failover_goal_ms: if fast { FAST_FAILOVER_GOAL_MS } else { FAILOVER_GOAL_MS } })
}

// ---------------------------------------------------------------- ground truth

/// What a router namespace holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The public address and every private gateway address.
    Active,
    /// None of them.
    Backup,
    /// Some but not all: a takeover half done, or a bug.
    Partial,
    /// No router namespace.
    Down,
}

impl Role {
    fn word(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Backup => "backup",
            Role::Partial => "partial",
            Role::Down => "down",
        }
    }
}

/// The role of a router host, from the addresses of its router namespace.
pub fn role(dir: &LabDir, r: &HaRouter) -> Result<Role> {
    let path = dir.host_root(&r.name)?.join("run/netns").join(&r.ns);
    let f = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Role::Down),
        Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
    };
    // A namespace file that is not (or no longer) a namespace: down.
    let Ok(mut nl) = vxrouter::netlink::Netlink::open_in(f.as_fd()) else { return Ok(Role::Down) };
    let addrs = nl.addrs().map_err(|e| anyhow!("addresses of {} in {}: {e}", r.ns, r.name))?;
    let has = |a: Ipv4Addr| addrs.iter().any(|x| x.cidr.addr() == std::net::IpAddr::V4(a));
    let held = std::iter::once(r.public).chain(r.gateways.iter().copied()).filter(|a| has(*a)).count();
    Ok(match held {
        0 => Role::Backup,
        n if n == 1 + r.gateways.len() => Role::Active,
        _ => Role::Partial,
    })
}

fn roles(dir: &LabDir, p: &Pair) -> Result<[Role; 2]> {
    Ok([role(dir, &p.r[0])?, role(dir, &p.r[1])?])
}

fn describe(p: &Pair, rs: [Role; 2]) -> String {
    format!("{} {}, {} {}", p.r[0].name, rs[0].word(), p.r[1].name, rs[1].word())
}

/// Polls the roles every 10 ms until `want` holds: Ok(elapsed), or
/// Err(the last roles seen) after `timeout`.
fn wait_roles(
    dir: &LabDir,
    p: &Pair,
    want: impl Fn([Role; 2]) -> bool,
    timeout: Duration,
) -> Result<Result<Duration, [Role; 2]>> {
    let start = Instant::now();
    loop {
        interrupt::check()?;
        let rs = roles(dir, p)?;
        if want(rs) {
            return Ok(Ok(start.elapsed()));
        }
        if start.elapsed() > timeout {
            return Ok(Err(rs));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// keepalived's notify log of a router host: (unix time, state) lines.
/// None when there is no such file.
pub fn transitions(dir: &LabDir, r: &HaRouter) -> Result<Option<Vec<(f64, String)>>> {
    let base = dir.host_root(&r.name)?.join("run/vxrouter/keepalived");
    let mut candidates = vec![base.join(&r.name).join(format!("{}.transitions", r.ns))];
    // Wherever under that directory vxrouter keeps it.
    if let Ok(d) = std::fs::read_dir(&base) {
        for e in d.flatten() {
            candidates.push(e.path().join(format!("{}.transitions", r.ns)));
        }
    }
    candidates.push(base.join(format!("{}.transitions", r.ns)));
    for c in candidates {
        if let Ok(text) = std::fs::read_to_string(&c) {
            return Ok(Some(parse_transitions(&text)));
        }
    }
    Ok(None)
}

pub fn parse_transitions(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.to_string()))
        })
        .collect()
}

/// State changes (MASTER, BACKUP, FAULT) logged at or after `since`.
fn changes_since(log: &[(f64, String)], since: f64) -> Vec<(f64, String)> {
    log.iter().filter(|(t, s)| *t >= since && matches!(s.as_str(), "MASTER" | "BACKUP" | "FAULT")).cloned().collect()
}

// ---------------------------------------------------------------- agents

/// A prober or conversation running in a lab node: its stdout lines come
/// through a channel; closing its stdin tells it to stop and report.
struct Agent {
    what: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    fn start(node: &Node, what: &str, args: &[String]) -> Result<Agent> {
        let mut child = node
            .command(SELF_EXE)
            .arg("__agent")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("start {what} in {}", node.name))?;
        let (tx, lines) = std::sync::mpsc::channel();
        let out = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let stderr: Arc<Mutex<String>> = Arc::default();
        if let Some(mut e) = child.stderr.take() {
            let s = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = String::new();
                let _ = std::io::Read::read_to_string(&mut e, &mut buf);
                if let Ok(mut s) = s.lock() {
                    s.push_str(&buf);
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Agent { what: format!("{what} in {}", node.name), child, stdin, lines, stderr })
    }

    fn why(&self) -> String {
        // Let the stderr reader catch up with an agent that just ended.
        std::thread::sleep(Duration::from_millis(50));
        let e = self.stderr.lock().map(|s| s.trim().to_string()).unwrap_or_default();
        if e.is_empty() { "it said nothing".into() } else { e.lines().last().unwrap_or("").to_string() }
    }

    /// The next line starting with `prefix`, within `timeout`.
    fn expect(&self, prefix: &str, timeout: Duration) -> Result<String> {
        let start = Instant::now();
        loop {
            interrupt::check()?;
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.starts_with(prefix) => return Ok(l),
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("{} ended without {prefix:?}: {}", self.what, self.why()),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if start.elapsed() > timeout {
                bail!("{} said no {prefix:?} within {} s", self.what, timeout.as_secs());
            }
        }
    }

    fn json<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        let l = self.expect("{", timeout)?;
        serde_json::from_str(&l).with_context(|| format!("report of {}: {l}", self.what))
    }

    fn tell(&mut self, line: &str) -> Result<()> {
        let what = &self.what;
        let i = self.stdin.as_mut().ok_or_else(|| anyhow!("{what} was told to stop"))?;
        writeln!(i, "{line}").and_then(|()| i.flush()).with_context(|| format!("talk to {what}"))
    }

    /// Closes stdin (stop) and reads the final report.
    fn finish<T: DeserializeOwned>(mut self, timeout: Duration) -> Result<T> {
        self.stdin = None;
        self.json(timeout)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prober(vm: &Node, server: Ipv4Addr, seconds: Option<u32>) -> Result<Agent> {
    let mut args = vec!["probe".to_string(), format!("{server}:{HA_PORT}")];
    if let Some(s) = seconds {
        args.extend(["--seconds".into(), s.to_string()]);
    }
    let a = Agent::start(vm, "the prober", &args)?;
    let first = a.expect("", Duration::from_secs(8))?;
    if first != "ready" {
        bail!("the prober in {} gets no answer from {server}: the path is down before the measurement", vm.name);
    }
    Ok(a)
}

/// A TCP conversation from the VM through SNAT, and what it reported.
struct Session {
    mode: &'static str,
    agent: Agent,
    peer: String,
    /// (phase, longest stall in it, quiet at its end)
    stalls: Vec<(String, f64, f64)>,
}

impl Session {
    fn open(vm: &Node, server: Ipv4Addr, mode: &'static str) -> Result<Session> {
        let agent = Agent::start(
            vm,
            &format!("the {mode} conversation"),
            &["talk".into(), format!("{server}:{HA_PORT}"), "--mode".into(), mode.into()],
        )?;
        let l = agent.expect("connected", Duration::from_secs(8))?;
        let peer = l.split("peer=").nth(1).unwrap_or("").trim().to_string();
        Ok(Session { mode, agent, peer, stalls: Vec::new() })
    }

    /// Ends a phase: the longest stall in it.
    fn mark(&mut self, phase: &str) -> Result<()> {
        self.agent.tell("report")?;
        let r: TalkReport = self.agent.json(Duration::from_secs(5))?;
        self.stalls.push((phase.to_string(), r.longest_stall_ms, r.quiet_ms));
        Ok(())
    }

    fn end(mut self, phase: &str) -> SessionOutcome {
        let mut out = SessionOutcome { mode: self.mode, peer: self.peer.clone(), ..SessionOutcome::default() };
        // Closing stdin says "bye"; the final report follows.
        self.agent.stdin = None;
        match self.agent.json::<TalkReport>(Duration::from_secs(10)) {
            Ok(r) => {
                out.survived = r.survived;
                out.error = r.error;
                self.stalls.push((phase.to_string(), r.longest_stall_ms, r.quiet_ms));
            }
            Err(e) => out.error = Some(format!("{e:#}")),
        }
        out.stalls = self.stalls;
        out
    }
}

#[derive(Debug, Clone, Default)]
struct SessionOutcome {
    mode: &'static str,
    /// Where it ran: "round 2", "handover".
    when: String,
    peer: String,
    survived: bool,
    error: Option<String>,
    stalls: Vec<(String, f64, f64)>,
}

/// The source address the server sees for a new connection now.
fn fresh_source(vm: &Node, server: Ipv4Addr) -> Result<String> {
    let s = Session::open(vm, server, "speak")?;
    Ok(s.peer.clone())
}

// ---------------------------------------------------------------- taking a host away

/// Processes whose network namespace is one of `nss`, but `except`:
/// (pid, name).
fn processes_in(nss: &[(u64, u64)], except: &[u32]) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if except.contains(&pid) || pid == std::process::id() {
            continue;
        }
        let Ok(m) = std::fs::metadata(p.path().join("ns/net")) else { continue };
        if nss.contains(&(m.dev(), m.ino())) && nodes::alive(pid) {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default().trim().to_string();
            out.push((pid, comm));
        }
    }
    out
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
}

/// SIGKILLs every process of a host (keepalived's parent and child first,
/// at once, so neither can send a last advert), but the holder of its mount
/// namespace. Returns what was killed.
fn kill_host(dir: &LabDir, r: &HaRouter) -> Result<Vec<(u32, String)>> {
    let nss = dir.host_namespaces(&r.name)?;
    let holder = dir.holder_pid(&r.name)?;
    let procs = processes_in(&nss, &[holder]);
    for (pid, _) in procs.iter().filter(|(_, c)| c == "keepalived") {
        kill(*pid);
    }
    for (pid, _) in procs.iter().filter(|(_, c)| c != "keepalived") {
        kill(*pid);
    }
    let start = Instant::now();
    while procs.iter().any(|(p, _)| nodes::alive(*p)) && start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(procs)
}

/// Takes a router host away as a crash would: kills its processes, then
/// pulls its underlay and uplink cables (the fabric's ends go down).
fn take_away(dir: &LabDir, r: &HaRouter) -> Result<Vec<(u32, String)>> {
    let killed = kill_host(dir, r)?;
    let fabric = dir.node("fabric")?;
    nodes::set_down(&fabric, &format!("u{}", r.idx))?;
    nodes::set_down(&fabric, &format!("p{}", r.idx))?;
    Ok(killed)
}

/// Brings a taken-away host back like a reboot: whatever still runs is
/// killed, its router namespace deleted and its /run/vxrouter wiped (a
/// reboot loses both), its cables plugged back, then `vxrouter apply` of
/// its profile, as its boot unit does.
fn bring_back(dir: &LabDir, r: &HaRouter) -> Result<()> {
    kill_host(dir, r)?;
    let host = dir.node(&r.name)?;
    let root = dir.host_root(&r.name)?;
    if root.join("run/netns").join(&r.ns).exists() {
        let out = interrupt::output(
            host.command("ip").args(["netns", "del", &r.ns]),
            &format!("ip netns del {} in {}", r.ns, r.name),
            Duration::from_secs(30),
        )?;
        if !out.status.success() {
            bail!("ip netns del {} in {}: {}", r.ns, r.name, String::from_utf8_lossy(&out.stderr).trim());
        }
    }
    // The namespace is torn down in the background: wait until its legs'
    // bridge ends are gone (a teardown still running can stall the next
    // apply's address changes).
    let start = Instant::now();
    loop {
        interrupt::check()?;
        let mut nl = host.netlink()?;
        let left: Vec<&String> = r.host_legs.iter().filter(|l| nl.link(l).ok().flatten().is_some()).collect();
        if left.is_empty() {
            break;
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("{}: the router namespace's legs {left:?} are still there 30 s after ip netns del", r.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = root.join("run/vxrouter");
    if let Ok(d) = std::fs::read_dir(&run) {
        for e in d.flatten() {
            let p = e.path();
            let _ = if p.is_dir() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
        }
    }
    let fabric = dir.node("fabric")?;
    nodes::set_up(&fabric, &format!("u{}", r.idx))?;
    nodes::set_up(&fabric, &format!("p{}", r.idx))?;
    apply(dir, r)
}

fn apply(dir: &LabDir, r: &HaRouter) -> Result<()> {
    vx(dir, r, &["apply", "--quiet"])
}

/// vxrouter in a router host, with the host's profile as last argument.
fn vx(dir: &LabDir, r: &HaRouter, args: &[&str]) -> Result<()> {
    let host = dir.node(&r.name)?;
    let mut cmd = host.command(nodes::vxrouter_bin());
    cmd.args(args).arg(&r.profile);
    let what = format!("vxrouter {} in {}", args.join(" "), r.name);
    let out = interrupt::output(&mut cmd, &what, Duration::from_secs(300))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// What `vxrouter status --json` says the host's HA role is.
fn status_role(dir: &LabDir, r: &HaRouter) -> Result<Option<String>> {
    let host = dir.node(&r.name)?;
    let mut cmd = host.command(nodes::vxrouter_bin());
    // Exit 2 says "drifted"; the document is printed either way.
    cmd.args(["status", "--json"]);
    let out = interrupt::output(&mut cmd, &format!("vxrouter status in {}", r.name), Duration::from_secs(60))?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(ha_role_in(&v))
}

/// The first `"ha": {"role": …}` anywhere in a status document.
fn ha_role_in(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Object(m) => {
            if let Some(r) = m.get("ha").and_then(|h| h.get("role")).and_then(|r| r.as_str()) {
                return Some(r.to_string());
            }
            m.values().find_map(ha_role_in)
        }
        serde_json::Value::Array(a) => a.iter().find_map(ha_role_in),
        _ => None,
    }
}

// ---------------------------------------------------------------- serialising labs

/// Two labs measuring at once on one machine would disturb each other's
/// timings: the measuring cells hold this lock (an flock on a file under
/// /run/lock). The idle cells of two labs may share it (the machine then
/// runs two CPU hogs for both: see `Hogs`); failover, return and handover
/// hold it alone; an HA lab's traffic matrix shares it too (see
/// `matrix_lock`).
pub struct MeasureLock(#[allow(dead_code)] File);

/// Held (shared) by a lab with an HA pair while its traffic matrix runs:
/// its bulk transfers on the same two cores would delay the keepalived and
/// the probes of another lab's failover rounds, which are judged in 10 ms
/// steps against a 100 ms goal (seen: a 100 ms gap under three labs at
/// once). The rounds wait for running matrices, and a matrix for running
/// rounds. Labs without HA take nothing.
pub fn matrix_lock(lab: &Lab) -> Result<Option<MeasureLock>> {
    if pair(lab).is_none() {
        return Ok(None);
    }
    measure_lock(true).map(Some)
}

/// An flock on /run/lock/<name>: Ok(None) when `wait` is false and
/// someone else holds it.
fn flock(name: &str, shared: bool, wait: bool) -> Result<Option<File>> {
    use std::os::fd::AsRawFd;
    let _ = std::fs::create_dir_all("/run/lock");
    let path = format!("/run/lock/{name}");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {path}"))?;
    let how = if shared { libc::LOCK_SH } else { libc::LOCK_EX };
    let mut said = false;
    loop {
        // SAFETY: flock on an fd this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) } == 0 {
            return Ok(Some(f));
        }
        if !wait {
            return Ok(None);
        }
        if !said {
            progress("waiting for another lab's HA measurements to finish");
            said = true;
        }
        interrupt::check()?;
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn measure_lock(shared: bool) -> Result<MeasureLock> {
    Ok(MeasureLock(flock("vxrouter-lab-ha.lock", shared, true)?.ok_or_else(|| anyhow!("no measuring lock"))?))
}

/// The idle cell's two CPU hogs (`sh -c 'while :; do :; done'` in the lab's
/// fabric node), killed when dropped. Two CPU hogs on the machine, not per
/// lab: when the idle cells of two labs overlap, the hogs run in whichever
/// holds the hog lock, and the other takes over (within 0.5 s) when that
/// one's idle cell ends.
struct Hogs {
    lock: Option<File>,
    procs: Vec<Child>,
    since: Option<Instant>,
    own: Duration,
}

impl Hogs {
    fn new() -> Hogs {
        Hogs { lock: None, procs: Vec::new(), since: None, own: Duration::ZERO }
    }

    /// Starts the hogs here unless another lab runs them.
    fn ensure(&mut self, fabric: &Node) -> Result<()> {
        if self.lock.is_some() {
            return Ok(());
        }
        let Some(lock) = flock("vxrouter-lab-hogs.lock", false, false)? else { return Ok(()) };
        self.lock = Some(lock);
        for _ in 0..2 {
            let hog = fabric.command("sh").args(["-c", "while :; do :; done"]).stdin(Stdio::null()).spawn();
            self.procs.push(hog.context("start a CPU hog")?);
        }
        self.since = Some(Instant::now());
        Ok(())
    }

    /// How long this lab ran them.
    fn stop(&mut self) -> Duration {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.procs.clear();
        self.lock = None;
        if let Some(s) = self.since.take() {
            self.own += s.elapsed();
        }
        self.own
    }
}

impl Drop for Hogs {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------- the cells

fn cell(check: &'static str, from: &str, ok: bool, detail: String, measure: serde_json::Value) -> CheckResult {
    CheckResult { check, from: from.to_string(), to: "ha".into(), ok, detail, measure: Some(measure) }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 }
}

fn worst(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn ms(v: f64) -> String {
    format!("{v:.0} ms")
}

/// The VM the HA cells probe from: a namespace VM with a static address on
/// a host that is neither router (its path survives either router host).
fn prober_vm<'a>(lab: &Lab, vms: &'a [LabVm], p: &Pair) -> Option<&'a LabVm> {
    vms.iter().find(|v| {
        v.kind == VmKind::Namespace
            && !v.dhcp
            && p.r.iter().all(|r| r.name != v.host)
            && p.r[0].gateways.contains(&v.gateway)
            && lab.hosts.iter().any(|h| h.name == v.host)
    })
}

/// The HA cells of a lab (none without an HA pair).
pub fn run(lab: &Lab, dir: &LabDir, vms: &[LabVm]) -> Result<Vec<CheckResult>> {
    let Some(p) = pair(lab) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    let Some(vm) = prober_vm(lab, vms, &p) else {
        out.push(cell(
            "ha-roles",
            &p.r[0].name,
            false,
            "the HA cells need a namespace VM with a static address on a host that is not a router host".into(),
            json!({}),
        ));
        return Ok(out);
    };
    let node = dir.vm(&vm.name, &vm.host)?;
    let server = Agent::start(&dir.node("server")?, "the HA server", &["serve".into(), format!("{}:{HA_PORT}", lab.server)])?;
    server.expect("listening", Duration::from_secs(5))?;
    let ctx = Ctx { dir, p: &p, vm: &node, server: lab.server };

    let (settled, roles_cell) = ctx.roles_cell()?;
    out.push(roles_cell);
    if !settled {
        for c in ["idle", "handover", "failover", "return", "partition", "sessions"] {
            out.push(cell(c, &vm.name, false, "not run: the routers' roles did not settle (see ha-roles)".into(), json!({})));
        }
        return Ok(out);
    }
    if lab.ha_idle_seconds > 0 {
        let _shared = measure_lock(true)?;
        out.push(ctx.guard("idle", |c| c.idle(lab.ha_idle_seconds))?);
    }
    let _lock = measure_lock(false)?;
    let mut sessions = Vec::new();
    out.push(ctx.guard("handover", |c| c.handover(&mut sessions))?);
    if lab.ha_rounds > 0 {
        let (failover, ret) = ctx.rounds(lab.ha_rounds, &mut sessions)?;
        out.push(failover);
        out.push(ret);
    }
    if lab.ha_partition_seconds > 0 {
        out.push(ctx.guard("partition", |c| c.partition(lab.ha_partition_seconds))?);
    }
    out.push(ctx.sessions_cell(&sessions));
    drop(server);
    Ok(out)
}

struct Ctx<'a> {
    dir: &'a LabDir,
    p: &'a Pair,
    vm: &'a Node,
    server: Ipv4Addr,
}

/// A round's numbers.
#[derive(Debug, Default, Clone)]
struct Round {
    failover_ms: Option<f64>,
    return_ms: Option<f64>,
    notify_ms: Option<f64>,
    problem: Option<String>,
    /// keepalived's state changes in each phase, relative to its start.
    failover_log: Vec<String>,
    return_log: Vec<String>,
}

impl Ctx<'_> {
    /// A cell that could not be measured fails with the reason (an
    /// interruption stops the lab instead).
    fn guard(&self, name: &'static str, f: impl FnOnce(&Self) -> Result<CheckResult>) -> Result<CheckResult> {
        match f(self) {
            Ok(c) => Ok(c),
            Err(e) if interrupt::of(&e).is_some() => Err(e),
            Err(e) => Ok(cell(name, &self.vm.name, false, format!("{e:#}"), json!({}))),
        }
    }

    /// Both routers' logged state changes since `since`, as
    /// "router-b MASTER +0.31 s".
    fn log_since(&self, since: f64) -> Result<Vec<String>> {
        let mut all = Vec::new();
        for r in &self.p.r {
            for (t, st) in transitions(self.dir, r)?.unwrap_or_default() {
                if t >= since {
                    all.push((t, format!("{} {st} {:+.2} s", r.name, t - since)));
                }
            }
        }
        all.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(all.into_iter().map(|(_, l)| l).collect())
    }

    /// The index of the active router, the other's; None unless exactly
    /// one is active and the other backup.
    /// Which router is active and which backup; waits up to 5 s for one of
    /// each (a loaded machine can show a router between the two for a
    /// moment, e.g. while keepalived re-adds its addresses).
    fn active(&self) -> Result<Option<(usize, usize)>> {
        let one_each = |rs: [Role; 2]| matches!(rs, [Role::Active, Role::Backup] | [Role::Backup, Role::Active]);
        if wait_roles(self.dir, self.p, one_each, Duration::from_secs(5))?.is_err() {
            return Ok(None);
        }
        Ok(match roles(self.dir, self.p)? {
            [Role::Active, Role::Backup] => Some((0, 1)),
            [Role::Backup, Role::Active] => Some((1, 0)),
            _ => None,
        })
    }

    /// Both routers up, the higher priority active: the state every cell
    /// starts from. Waits for it (a fresh lab: the second router may still
    /// be in its preempt delay).
    fn wait_settled(&self, timeout: Duration) -> Result<Result<(usize, usize), [Role; 2]>> {
        let hi = if self.p.r[0].ha.priority >= self.p.r[1].ha.priority { 0 } else { 1 };
        let want = |rs: [Role; 2]| rs[hi] == Role::Active && rs[1 - hi] == Role::Backup;
        Ok(wait_roles(self.dir, self.p, want, timeout)?.map(|_| (hi, 1 - hi)))
    }

    /// (the roles settled, the cell)
    fn roles_cell(&self) -> Result<(bool, CheckResult)> {
        let wait = self.p.preempt() + Duration::from_secs(20);
        let settled = self.wait_settled(wait)?;
        let rs = roles(self.dir, self.p)?;
        let mut problems = Vec::new();
        if let Err(seen) = settled {
            problems.push(format!(
                "after {} s the roles are: {} (expected the higher priority active, the other backup)",
                wait.as_secs(),
                describe(self.p, seen)
            ));
        }
        let mut said = Vec::new();
        for (r, role) in self.p.r.iter().zip(rs) {
            match status_role(self.dir, r)? {
                Some(s) if s == role.word() => said.push(format!("{} {s}", r.name)),
                Some(s) => problems.push(format!("`vxrouter status` in {} says {s}, its addresses say {}", r.name, role.word())),
                None => problems.push(format!("`vxrouter status --json` in {} reports no ha.role", r.name)),
            }
        }
        for r in &self.p.r {
            if transitions(self.dir, r)?.is_none() {
                problems.push(format!("{} has no keepalived transitions file under /run/vxrouter/keepalived", r.name));
            }
        }
        let ok = problems.is_empty();
        let settled = settled.is_ok();
        let detail = if ok {
            format!("{} (status agrees)", describe(self.p, rs))
        } else {
            format!("{}; {}", describe(self.p, rs), problems.join("; "))
        };
        progress(format!("roles: {detail}"));
        Ok((
            settled,
            cell(
                "ha-roles",
                &self.vm.name,
                ok,
                detail,
                json!({"roles": [rs[0].word(), rs[1].word()], "status": said, "fast": self.p.fast()}),
            ),
        ))
    }

    /// `ha_idle_seconds` of probing with two CPU hogs running: no state
    /// change, no lost probes beyond 0.1 %, no gap above 100 ms.
    fn idle(&self, seconds: u32) -> Result<CheckResult> {
        let Some((act, _)) = self.active()? else { bail!("not run: {}", describe(self.p, roles(self.dir, self.p)?)) };
        progress(format!("idle: {seconds} s with two CPU hogs and the 10 ms prober"));
        let since = unix_now();
        let fabric = self.dir.node("fabric")?;
        let mut hogs = Hogs::new();
        hogs.ensure(&fabric)?;
        let prober = start_prober(self.vm, self.server, Some(seconds))?;
        let start = Instant::now();
        let mut role_changes = Vec::new();
        let report: ProbeReport = loop {
            interrupt::check()?;
            match prober.lines.recv_timeout(Duration::from_millis(500)) {
                Ok(l) if l.starts_with('{') => break serde_json::from_str(&l).context("the prober's report")?,
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => bail!("the prober ended without a report: {}", prober.why()),
                Err(RecvTimeoutError::Timeout) => {}
            }
            if start.elapsed() > Duration::from_secs(u64::from(seconds) + 30) {
                bail!("the prober did not report within {} s", seconds + 30);
            }
            hogs.ensure(&fabric)?;
            if self.active()? != Some((act, 1 - act)) {
                role_changes.push(format!(
                    "{:.1} s: {}",
                    start.elapsed().as_secs_f64(),
                    describe(self.p, roles(self.dir, self.p)?)
                ));
            }
        };
        let own = hogs.stop();
        let mut changes = Vec::new();
        for r in &self.p.r {
            match transitions(self.dir, r)? {
                Some(log) => changes.extend(
                    changes_since(&log, since).into_iter().map(|(t, s)| format!("{} {s} at +{:.1} s", r.name, t - since)),
                ),
                None => changes.push(format!("{}: no transitions file", r.name)),
            }
        }
        let allowed = ((report.sent as f64) * IDLE_LOSS).floor() as u64;
        let mut problems = Vec::new();
        if !changes.is_empty() {
            problems.push(format!("state changes: {}", changes.join(", ")));
        }
        if !role_changes.is_empty() {
            problems.push(format!("the addresses moved: {}", role_changes.join(", ")));
        }
        if report.lost > allowed {
            problems.push(format!("{} of {} probes lost (at most {allowed} allowed)", report.lost, report.sent));
        }
        if report.outage_ms() > IDLE_GAP_MS {
            problems.push(format!("a gap of {} (at most {} allowed)", ms(report.outage_ms()), ms(IDLE_GAP_MS)));
        }
        let summary = format!(
            "{seconds} s under two CPU hogs{}: {} state changes, {} of {} probes lost, longest gap {}{}",
            if own.as_secs_f64() + 1.0 < f64::from(seconds) {
                format!(" ({:.0} s of them another lab's)", f64::from(seconds) - own.as_secs_f64())
            } else {
                String::new()
            },
            changes.len(),
            report.lost,
            report.sent,
            ms(report.outage_ms()),
            if report.longest_sender_stall_ms > IDLE_GAP_MS {
                format!(" (the prober itself was kept from running for up to {})", ms(report.longest_sender_stall_ms))
            } else {
                String::new()
            }
        );
        progress(format!("idle: {summary}"));
        let ok = problems.is_empty();
        Ok(cell(
            "idle",
            &self.vm.name,
            ok,
            if ok { summary } else { format!("{summary}: {}", problems.join("; ")) },
            json!({"seconds": seconds, "state_changes": changes.len(), "sent": report.sent, "lost": report.lost,
                   "allowed_lost": allowed, "own_hog_seconds": own.as_secs_f64(), "sender_stall_ms": report.longest_sender_stall_ms, "longest_gap_ms": report.longest_gap_ms, "gaps": report.gaps}),
        ))
    }

    /// `vxrouter ha handover` in the active host while probing; then
    /// `vxrouter apply` there returns it. Both gaps ≤ 100 ms.
    fn handover(&self, sessions: &mut Vec<SessionOutcome>) -> Result<CheckResult> {
        let Some((act, bak)) = self.active()? else { bail!("not run: {}", describe(self.p, roles(self.dir, self.p)?)) };
        let r = self.handover_from(act, bak, sessions);
        if r.as_ref().map(|c| !c.ok).unwrap_or(true) {
            // Whatever went wrong, the next cells start from the profile's
            // priorities again.
            let _ = apply(self.dir, &self.p.r[act]);
        }
        r
    }

    fn handover_from(&self, act: usize, bak: usize, sessions: &mut Vec<SessionOutcome>) -> Result<CheckResult> {
        let (a, b) = (&self.p.r[act], &self.p.r[bak]);
        let mut talks = vec![Session::open(self.vm, self.server, "speak")?, Session::open(self.vm, self.server, "push")?];
        let prober = start_prober(self.vm, self.server, None)?;
        std::thread::sleep(Duration::from_millis(300));
        vx(self.dir, a, &["ha", "handover"])?;
        let moved =
            wait_roles(self.dir, self.p, |rs| rs[bak] == Role::Active && rs[act] == Role::Backup, Duration::from_secs(10))?;
        if let Err(seen) = moved {
            bail!("`vxrouter ha handover` in {}: after 10 s {}", a.name, describe(self.p, seen));
        }
        std::thread::sleep(SETTLE);
        let over: ProbeReport = prober.finish(Duration::from_secs(5))?;
        for t in &mut talks {
            t.mark("handover")?;
        }
        progress(format!("handover: {} → {}: gap {}", a.name, b.name, ms(over.outage_ms())));
        let prober = start_prober(self.vm, self.server, None)?;
        std::thread::sleep(Duration::from_millis(300));
        apply(self.dir, a)?;
        let wait = self.p.preempt() + Duration::from_secs(20);
        let back = wait_roles(self.dir, self.p, |rs| rs[act] == Role::Active && rs[bak] == Role::Backup, wait)?;
        if let Err(seen) = back {
            bail!(
                "handover gap {}; but after `vxrouter apply` in {} and {} s: {}",
                ms(over.outage_ms()),
                a.name,
                wait.as_secs(),
                describe(self.p, seen)
            );
        }
        std::thread::sleep(SETTLE);
        let ret: ProbeReport = prober.finish(Duration::from_secs(5))?;
        progress(format!("handover: back to {} after apply: gap {}", a.name, ms(ret.outage_ms())));
        for t in talks {
            let mut o = t.end("back");
            o.when = "handover".into();
            sessions.push(o);
        }
        let ok = over.outage_ms() <= PLANNED_GOAL_MS && ret.outage_ms() <= RETURN_GOAL_MS;
        Ok(cell(
            "handover",
            &self.vm.name,
            ok,
            format!(
                "{} → {}: gap {} (goal ≤ {}); back after apply: gap {} (goal ≤ {})",
                a.name,
                b.name,
                ms(over.outage_ms()),
                ms(PLANNED_GOAL_MS),
                ms(ret.outage_ms()),
                ms(RETURN_GOAL_MS)
            ),
            json!({"handover_ms": over.outage_ms(), "back_ms": ret.outage_ms(),
                   "goal_ms": PLANNED_GOAL_MS, "return_goal_ms": RETURN_GOAL_MS,
                   "lost": [over.lost, ret.lost]}),
        ))
    }

    /// One failover + return round. Errors stop the rounds.
    fn round(&self, n: u32, sessions: &mut Vec<SessionOutcome>) -> Result<Round> {
        let mut round = Round::default();
        let Some((act, bak)) = self.wait_settled(self.p.preempt() + Duration::from_secs(20))?.ok() else {
            bail!("round {n}: not started: {}", describe(self.p, roles(self.dir, self.p)?));
        };
        let (a, b) = (&self.p.r[act], &self.p.r[bak]);
        let mut talks = vec![Session::open(self.vm, self.server, "speak")?, Session::open(self.vm, self.server, "push")?];
        std::thread::sleep(Duration::from_millis(200));
        let prober = start_prober(self.vm, self.server, None)?;
        std::thread::sleep(Duration::from_millis(500));
        let cut = unix_now();
        let killed = take_away(self.dir, a)?;
        if !killed.iter().any(|(_, c)| c == "keepalived") {
            round.problem = Some(format!("no keepalived ran in {}", a.name));
        }
        let took = wait_roles(self.dir, self.p, |rs| rs[bak] == Role::Active, Duration::from_secs(10))?;
        if let Err(seen) = took {
            bail!("round {n}: {} did not take over within 10 s of {}'s loss: {}", b.name, a.name, describe(self.p, seen));
        }
        std::thread::sleep(SETTLE);
        let over: ProbeReport = prober.finish(Duration::from_secs(5))?;
        round.failover_ms = Some(over.outage_ms());
        round.notify_ms = transitions(self.dir, b)?
            .and_then(|log| log.iter().find(|(t, s)| *t >= cut && s == "MASTER").map(|(t, _)| (t - cut) * 1000.0));
        round.failover_log = self.log_since(cut)?;
        for t in &mut talks {
            t.mark("failover")?;
        }
        let prober = start_prober(self.vm, self.server, None)?;
        std::thread::sleep(Duration::from_millis(300));
        let back_at = unix_now();
        bring_back(self.dir, a)?;
        let wait = self.p.preempt() + Duration::from_secs(20);
        let back = wait_roles(self.dir, self.p, |rs| rs[act] == Role::Active && rs[bak] == Role::Backup, wait)?;
        if let Err(seen) = back {
            bail!(
                "round {n}: {} did not take over again within {} s of its apply: {}",
                a.name,
                wait.as_secs(),
                describe(self.p, seen)
            );
        }
        std::thread::sleep(SETTLE);
        let ret: ProbeReport = prober.finish(Duration::from_secs(5))?;
        round.return_ms = Some(ret.outage_ms());
        round.return_log = self.log_since(back_at)?;
        for t in talks {
            let mut o = t.end("return");
            o.when = format!("round {n}");
            sessions.push(o);
        }
        // A new connection leaves from the same public address.
        let fresh = fresh_source(self.vm, self.server)?;
        if fresh != a.public.to_string() {
            sessions.push(SessionOutcome {
                mode: "new",
                when: format!("round {n}"),
                peer: fresh,
                survived: true,
                ..SessionOutcome::default()
            });
        }
        progress(format!(
            "round {n}: {} lost → {} took over: gap {}{}; {} back: gap {}",
            a.name,
            b.name,
            ms(over.outage_ms()),
            round.notify_ms.map(|m| format!(" (its notify: MASTER after {})", ms(m))).unwrap_or_default(),
            a.name,
            ms(ret.outage_ms())
        ));
        // What keepalived did in a phase that missed its goal.
        if over.outage_ms() > self.p.failover_goal_ms {
            progress(format!("round {n}: failover state changes: {}", round.failover_log.join(", ")));
        }
        if ret.outage_ms() > RETURN_GOAL_MS {
            progress(format!("round {n}: return state changes: {}", round.return_log.join(", ")));
        }
        Ok(round)
    }

    fn rounds(&self, count: u32, sessions: &mut Vec<SessionOutcome>) -> Result<(CheckResult, CheckResult)> {
        let mut rounds = Vec::new();
        let mut stopped = None;
        for n in 1..=count {
            match self.round(n, sessions) {
                Ok(r) => rounds.push(r),
                Err(e) if interrupt::of(&e).is_some() => return Err(e),
                Err(e) => {
                    stopped = Some(format!("{e:#}"));
                    break;
                }
            }
        }
        let fo: Vec<f64> = rounds.iter().filter_map(|r| r.failover_ms).collect();
        let rt: Vec<f64> = rounds.iter().filter_map(|r| r.return_ms).collect();
        let notify: Vec<f64> = rounds.iter().filter_map(|r| r.notify_ms).collect();
        let problems: Vec<String> = rounds.iter().filter_map(|r| r.problem.clone()).chain(stopped.clone()).collect();
        let goal = self.p.failover_goal_ms;
        let timers = if self.p.fast() { "fast timers" } else { "default timers" };
        let fo_ok = problems.is_empty() && fo.len() == count as usize && worst(&fo) <= goal;
        let rt_ok = stopped.is_none() && rt.len() == count as usize && worst(&rt) <= RETURN_GOAL_MS;
        let list = |v: &[f64]| v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
        let mut fo_detail = format!(
            "{} of {count} rounds: median {}, worst {} (goal ≤ {}, {timers}); gaps ms: {}",
            fo.len(),
            ms(median(&fo)),
            ms(worst(&fo)),
            ms(goal),
            list(&fo)
        );
        if !notify.is_empty() {
            fo_detail.push_str(&format!("; notify MASTER after median {}", ms(median(&notify))));
        }
        if !problems.is_empty() {
            fo_detail.push_str(&format!("; {}", problems.join("; ")));
        }
        let mut rt_detail = format!(
            "{} of {count} returns: median {}, worst {} (goal ≤ {}); gaps ms: {}",
            rt.len(),
            ms(median(&rt)),
            ms(worst(&rt)),
            ms(RETURN_GOAL_MS),
            list(&rt)
        );
        if let Some(s) = &stopped {
            rt_detail.push_str(&format!("; {s}"));
        }
        progress(format!("failover: {fo_detail}"));
        progress(format!("return: {rt_detail}"));
        Ok((
            cell(
                "failover",
                &self.vm.name,
                fo_ok,
                fo_detail,
                json!({"rounds": count, "gaps_ms": fo, "median_ms": median(&fo), "worst_ms": worst(&fo),
                       "goal_ms": goal, "fast": self.p.fast(), "notify_ms": notify,
                       "state_changes": rounds.iter().map(|r| r.failover_log.clone()).collect::<Vec<_>>()}),
            ),
            cell(
                "return",
                &self.vm.name,
                rt_ok,
                rt_detail,
                json!({"rounds": count, "gaps_ms": rt, "median_ms": median(&rt), "worst_ms": worst(&rt), "goal_ms": RETURN_GOAL_MS,
                       "state_changes": rounds.iter().map(|r| r.return_log.clone()).collect::<Vec<_>>()}),
            ),
        ))
    }

    /// Split brain: the underlay between the two router hosts cut (the
    /// fabric drops what goes between their underlay ports; both still
    /// reach the other hosts and their uplinks stay up) for `seconds`, then
    /// healed, while probing. Both routers must become active (the control:
    /// the cut did separate them); after the heal one must be active again
    /// within 5 s, the higher priority, with no gap above 0.5 s; and when
    /// the pair syncs connections, both conversations opened before the cut
    /// must survive it.
    fn partition(&self, seconds: u32) -> Result<CheckResult> {
        let Some((act, bak)) = self.wait_settled(self.p.preempt() + Duration::from_secs(20))?.ok() else {
            bail!("not run: {}", describe(self.p, roles(self.dir, self.p)?));
        };
        let (a, b) = (&self.p.r[act], &self.p.r[bak]);
        // Conversations across it: with connection sync they must survive
        // (the entries a router made itself are out of date after the split:
        // vxrouter's liberal TCP tracking, kinds/conntrack.rs, keeps them
        // going); without it, reported only.
        let talks = vec![Session::open(self.vm, self.server, "speak")?, Session::open(self.vm, self.server, "push")?];
        let prober = start_prober(self.vm, self.server, None)?;
        std::thread::sleep(Duration::from_millis(300));
        let split = unix_now();
        let cut = Partition::cut(self.dir, a, b)?;
        let start = Instant::now();
        let mut both: Option<Duration> = None;
        while start.elapsed() < Duration::from_secs(u64::from(seconds)) {
            interrupt::check()?;
            if both.is_none() && roles(self.dir, self.p)? == [Role::Active, Role::Active] {
                both = Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let heal = unix_now();
        drop(cut);
        let settled =
            wait_roles(self.dir, self.p, |rs| rs[act] == Role::Active && rs[bak] == Role::Backup, Duration::from_secs(5))?;
        std::thread::sleep(SETTLE);
        let report: ProbeReport = prober.finish(Duration::from_secs(5))?;
        let log = self.log_since(split)?;
        let talked: Vec<SessionOutcome> = talks.into_iter().map(|t| t.end("partition")).collect();
        let survived = |mode: &str| talked.iter().any(|t| t.mode == mode && t.survived);
        let fate = |mode: &str| match talked.iter().find(|t| t.mode == mode) {
            Some(t) if t.survived => "survived".to_string(),
            Some(t) => format!("died ({})", t.error.as_deref().unwrap_or("?")),
            None => "not held".into(),
        };
        let conversations = format!("conversations across it: client speaks {}, server pushes {}", fate("speak"), fate("push"));
        // Gaps that began before the heal and ended before it, and those
        // still going on at the heal or later.
        let split_gap = report.gaps.iter().filter(|g| g.at + g.ms / 1000.0 <= heal).map(|g| g.ms).fold(10.0, f64::max);
        let heal_gap = report.gaps.iter().filter(|g| g.at + g.ms / 1000.0 > heal).map(|g| g.ms).fold(10.0, f64::max);
        let mut problems = Vec::new();
        if both.is_none() {
            problems.push(format!("control failed: {} never became active while cut off from {}", b.name, a.name));
        }
        let back = match settled {
            Ok(t) => format!("{} alone active {:.2} s after the heal", a.name, t.as_secs_f64()),
            Err(seen) => {
                problems.push(format!("5 s after the heal: {}", describe(self.p, seen)));
                "no single active router after the heal".into()
            }
        };
        if heal_gap > HEAL_GOAL_MS {
            problems.push(format!("a gap of {} after the heal (goal ≤ {})", ms(heal_gap), ms(HEAL_GOAL_MS)));
        }
        if a.ha.conntrack_sync && b.ha.conntrack_sync {
            for (mode, what) in [("speak", "client speaks"), ("push", "server pushes")] {
                if !survived(mode) {
                    problems.push(format!(
                        "the {what} conversation did not survive the split ({}), although connections are synced",
                        fate(mode)
                    ));
                }
            }
        }
        let summary = format!(
            "{seconds} s cut between {} and {}: both active after {}, longest gap while split {}; {back}, gap {} (goal ≤ {}); {conversations}",
            a.name,
            b.name,
            both.map(|d| format!("{:.2} s", d.as_secs_f64())).unwrap_or_else(|| "never".into()),
            ms(split_gap),
            ms(heal_gap),
            ms(HEAL_GOAL_MS)
        );
        progress(format!("partition: {summary}"));
        if !problems.is_empty() {
            progress(format!("partition: state changes: {}", log.join(", ")));
        }
        let ok = problems.is_empty();
        Ok(cell(
            "partition",
            &self.vm.name,
            ok,
            if ok { summary } else { format!("{summary}: {}", problems.join("; ")) },
            json!({"seconds": seconds, "both_active_after_s": both.map(|d| d.as_secs_f64()),
                   "split_gap_ms": split_gap, "heal_gap_ms": heal_gap, "goal_ms": HEAL_GOAL_MS,
                   "settled_after_s": settled.ok().map(|d| d.as_secs_f64()), "lost": report.lost,
                   "state_changes": log, "speak_survived": survived("speak"), "push_survived": survived("push")}),
        ))
    }

    fn sessions_cell(&self, sessions: &[SessionOutcome]) -> CheckResult {
        let public = self.p.r[0].public.to_string();
        let talks: Vec<&SessionOutcome> = sessions.iter().filter(|s| s.mode != "new").collect();
        let mut problems = Vec::new();
        for s in sessions {
            if s.peer != public {
                problems.push(format!("{} {}: the server saw {} (expected {public})", s.when, s.mode, s.peer));
            }
            if !s.survived {
                problems.push(format!("{} {} died: {}", s.when, s.mode, s.error.as_deref().unwrap_or("?")));
            } else if let Some((phase, stall, _)) = s.stalls.iter().find(|(_, m, _)| *m > SESSION_STALL_MS) {
                problems.push(format!(
                    "{} {} stalled {:.1} s ({phase}): a timeout for most applications (at most {:.0} s allowed)",
                    s.when,
                    s.mode,
                    stall / 1000.0,
                    SESSION_STALL_MS / 1000.0
                ));
            }
        }
        let stall = |mode: &str, phase: &str| -> f64 {
            talks
                .iter()
                .filter(|s| s.mode == mode)
                .flat_map(|s| s.stalls.iter())
                .filter(|(p, _, _)| p == phase)
                .map(|(_, m, _)| *m)
                .fold(0.0, f64::max)
        };
        // Kept: no reset, nothing lost, "bye" answered, and never stalled
        // longer than an application waits.
        let kept = |s: &SessionOutcome| s.survived && s.stalls.iter().all(|(_, m, _)| *m <= SESSION_STALL_MS);
        let survived = |mode: &str| {
            (talks.iter().filter(|s| s.mode == mode && kept(s)).count(), talks.iter().filter(|s| s.mode == mode).count())
        };
        let (sp, spn) = survived("speak");
        let (pu, pun) = survived("push");
        let summary = format!(
            "client speaks {sp}/{spn} survived, server pushes {pu}/{pun} survived; source {public} throughout; longest stall: failover {} / {}, return {} / {}, handover {} / {} (speak / push)",
            ms(stall("speak", "failover")),
            ms(stall("push", "failover")),
            ms(stall("speak", "return")),
            ms(stall("push", "return")),
            ms(stall("speak", "handover").max(stall("speak", "back"))),
            ms(stall("push", "handover").max(stall("push", "back"))),
        );
        progress(format!("sessions: {summary}"));
        let ok = problems.is_empty() && !talks.is_empty();
        CheckResult {
            check: "sessions",
            from: self.vm.name.clone(),
            to: "ha".into(),
            ok,
            detail: if ok {
                summary
            } else if talks.is_empty() {
                "no conversation was held".into()
            } else {
                format!("{summary}: {}", problems.join("; "))
            },
            measure: Some(json!({
                "speak": {"survived": sp, "of": spn, "failover_stall_ms": stall("speak", "failover"), "return_stall_ms": stall("speak", "return")},
                "push": {"survived": pu, "of": pun, "failover_stall_ms": stall("push", "failover"), "return_stall_ms": stall("push", "return")},
                "public": public,
            })),
        }
    }
}

/// The underlay between two router hosts cut in the lab switch: an
/// nftables bridge table in the fabric node dropping what goes from one's
/// underlay port to the other's. Removed (healed) when dropped.
struct Partition<'a> {
    fabric: Node,
    _hosts: (&'a HaRouter, &'a HaRouter),
}

const PARTITION_TABLE: &str = "vxrouter_lab_partition";

impl<'a> Partition<'a> {
    fn cut(dir: &LabDir, a: &'a HaRouter, b: &'a HaRouter) -> Result<Partition<'a>> {
        let fabric = dir.node("fabric")?;
        let (ua, ub) = (format!("u{}", a.idx), format!("u{}", b.idx));
        let rules = format!(
            "table bridge {PARTITION_TABLE} {{\n chain forward {{\n  type filter hook forward priority -10; policy accept;\n  iifname \"{ua}\" oifname \"{ub}\" drop\n  iifname \"{ub}\" oifname \"{ua}\" drop\n }}\n}}\n"
        );
        nft(&fabric, &rules)?;
        Ok(Partition { fabric, _hosts: (a, b) })
    }
}

impl Drop for Partition<'_> {
    fn drop(&mut self) {
        let _ = nft(&self.fabric, &format!("delete table bridge {PARTITION_TABLE}\n"));
    }
}

fn nft(node: &Node, rules: &str) -> Result<()> {
    let mut child = node
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("run nft in the lab switch")?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(rules.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("nft in {}: {}", node.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_with_defaults() {
        let s = settings("[router]\nnamespace = \"ns1\"\n[router.ha]\nvrid = 51\npriority = 200\npeer = \"10.0.0.2\"\n").unwrap();
        assert_eq!(
            s,
            HaSettings {
                vrid: 51,
                priority: 200,
                peer: "10.0.0.2".into(),
                advert_interval: 0.1,
                preempt_delay: 5.0,
                conntrack_sync: true,
                track_uplink: true
            }
        );
        let s = settings("[router.ha]\nvrid = 51\npriority = 254\npeer = \"x\"\nadvert_interval = 0.03\npreempt_delay = 2\nconntrack_sync = false\n")
            .unwrap();
        assert_eq!((s.advert_interval, s.preempt_delay, s.conntrack_sync), (0.03, 2.0, false));
        assert_eq!(settings("[router]\nnamespace = \"ns1\"\n"), None);
    }

    #[test]
    fn the_shipped_ha_profiles_parse() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for (dir, adv, prio) in [("ha", 0.1, 200), ("ha-fast", 0.03, 254)] {
            let t = std::fs::read_to_string(root.join(format!("profiles/{dir}/router-a.toml"))).unwrap();
            let s = settings(&t).unwrap();
            assert_eq!((s.vrid, s.priority, s.advert_interval), (51, prio, adv), "{dir}");
            let t = std::fs::read_to_string(root.join(format!("profiles/{dir}/compute-c.toml"))).unwrap();
            assert_eq!(settings(&t), None);
        }
    }

    #[test]
    fn transitions_since() {
        let log = parse_transitions("100.5 BACKUP\n101.25 MASTER\ngarbage\n105 STOP\n106.0 FAULT\n");
        assert_eq!(log.len(), 4);
        let c = changes_since(&log, 101.0);
        assert_eq!(c, vec![(101.25, "MASTER".to_string()), (106.0, "FAULT".to_string())]);
    }

    #[test]
    fn role_anywhere_in_status() {
        let v = json!({"host": "a", "router": {"namespace": "ns1", "ha": {"role": "backup", "vrid": 51}}});
        assert_eq!(ha_role_in(&v).as_deref(), Some("backup"));
        assert_eq!(ha_role_in(&json!({"router": {"ha": null}})), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&[310.0, 350.0, 290.0, 300.0, 330.0]), 310.0);
        assert_eq!(median(&[10.0, 30.0]), 20.0);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(worst(&[10.0, 30.0, 20.0]), 30.0);
    }
}
