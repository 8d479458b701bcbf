//! conntrackd of a high-availability router (`[router.ha]` with
//! `conntrack_sync`, the default): one per router namespace, running inside
//! it, sending every connection-table change to the peer router over the HA
//! link (FTFW: acknowledged, resent when lost) and keeping the peer's in its
//! external cache. When keepalived makes this router active, its notify
//! script commits that cache to the kernel (kinds/keepalived.rs), so
//! connections through source NAT keep their mapping and the same public
//! source address after a failover.
//!
//! Supervised like dnsmasq: config, lock, socket and log under
//! <run dir>/conntrackd/<host>/; started, restarted when its config changes
//! (conntrackd cannot reload), started again if it died, stopped when the
//! profile no longer asks for it. It has no pid file: the process is found
//! by its command line (`-C PATH`) inside the router namespace.

use std::fs::{self, File};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Kind, ObserveCx, ha_link};
use crate::apply::Apply;
use crate::daemon;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::firewall::rules::CONNTRACK_SYNC_PORT;
use crate::journal::Undo;
use crate::model::Ns;
use crate::netns;
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::{Ha, Profile};

pub struct Conntrackd;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub ns: String,
    pub config: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Running {
    pub ns: String,
    pub config: String,
    pub pid: Option<u32>,
}

impl Kind for Conntrackd {
    const NAME: &'static str = "conntrackd";
    type Item = Instance;
    type Seen = Vec<Running>;

    fn desire(p: &Profile, f: &Facts) -> Vec<Instance> {
        let Some(r) = &p.router else { return vec![] };
        let Some(ha) = r.ha.as_ref().filter(|h| h.conntrack_sync) else { return vec![] };
        let files = Files::new(&f.run_dir, &p.host);
        let local = super::vxlan::local_address(p, f);
        vec![Instance { ns: r.namespace.clone(), config: config(&files, &p.host, &r.namespace, ha, local) }]
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Vec<Running>> {
        let files = Files::new(&cx.observed.facts.run_dir, &cx.desired.host);
        observe(&files)
    }

    fn plan(p: &mut Planner<'_>, want: &[Instance], seen: &Vec<Running>) {
        for r in seen {
            if !want.iter().any(|w| w.ns == r.ns) {
                let step = Supervise { ns: r.ns.clone(), config: None, running: r.pid.map(|_| r.config.clone()), pid: r.pid };
                p.push(Order::StopDaemons, step);
            }
        }
        for w in want {
            let found = seen.iter().find(|r| r.ns == w.ns);
            let fresh = p.fresh_ns.contains(&w.ns);
            let running = found.filter(|r| r.pid.is_some() && !fresh).map(|r| r.config.clone());
            // One serving a namespace deleted under it keeps that namespace
            // (and its HA link) alive: it stops first of all.
            if let Some(pid) = found.and_then(|r| r.pid).filter(|_| fresh) {
                p.push(Order::StopDaemons, Supervise { ns: w.ns.clone(), config: None, running: None, pid: Some(pid) });
            }
            if running.as_deref() != Some(w.config.as_str()) {
                let pid = found.and_then(|r| r.pid).filter(|_| !fresh);
                p.push(Order::Late, Supervise { ns: w.ns.clone(), config: Some(w.config.clone()), running, pid });
            }
        }
    }
}

/// Start, restart (new config) or stop (`config` None).
#[derive(Debug, Serialize)]
pub struct Supervise {
    pub ns: String,
    pub config: Option<String>,
    pub running: Option<String>,
    pub pid: Option<u32>,
}

impl Step for Supervise {
    fn action(&self) -> &'static str {
        "conntrackd"
    }
    fn verb(&self) -> Verb {
        match (&self.config, &self.running) {
            (None, _) => Verb::Remove,
            (Some(_), None) => Verb::Create,
            (Some(_), Some(_)) => Verb::Change,
        }
    }
    fn object(&self) -> String {
        format!("conntrackd (connection sync) in {}", self.ns)
    }
    fn detail(&self) -> String {
        match (&self.config, &self.running) {
            (Some(new), Some(old)) => {
                let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
                format!("config changed: restart ({})", crate::firewall::rule_diff(&lines(new), &lines(old)))
            }
            (Some(_), None) => "not running".into(),
            (None, _) => String::new(),
        }
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        run(cx, &self.ns, self.config.as_deref(), self.pid)?;
        cx.undo_with(Revert { ns: self.ns.clone(), config: self.running.clone() });
        Ok(())
    }
}

#[derive(Debug)]
struct Revert {
    ns: String,
    config: Option<String>,
}

impl Undo for Revert {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        run(cx, &self.ns, self.config.as_deref(), None)
    }
}

fn run(cx: &mut Apply<'_>, ns: &str, config: Option<&str>, pid: Option<u32>) -> Result<()> {
    let files = Files::new(&cx.run_dir, &cx.host);
    stop(&files, ns, pid)?;
    if let Some(c) = config {
        cx.session.attach(ns)?;
        let file = cx.file(&Ns::Named(ns.to_string()))?.ok_or_else(|| crate::error!(Internal, "namespace {ns} is not open"))?;
        start(&files, ns, file, c)?;
    }
    Ok(())
}

/// Where a host's conntrackd files live.
pub struct Files(daemon::NsFiles);

impl Files {
    pub fn new(run_dir: &Path, host: &str) -> Files {
        Files(daemon::NsFiles::new(run_dir, "conntrackd", host))
    }
    fn path(&self, ns: &str, ext: &str) -> PathBuf {
        self.0.path(ns, ext)
    }
    pub fn conf(&self, ns: &str) -> PathBuf {
        self.path(ns, "conf")
    }
    fn lock(&self, ns: &str) -> PathBuf {
        self.path(ns, "lock")
    }
    fn socket(&self, ns: &str) -> PathBuf {
        self.path(ns, "ctl")
    }
    fn log(&self, ns: &str) -> PathBuf {
        self.path(ns, "log")
    }
}

/// FTFW over UDP on the HA link, from this end's address to the peer's.
/// The HA link's own addresses are not synced (they are each router's own).
fn config(files: &Files, host: &str, ns: &str, ha: &Ha, local: IpAddr) -> String {
    let me = ha_link::address(ha, local).addr();
    let peer = ha_link::peer_address(ha, local);
    let vip = ha_link::virtual_address(ha).addr();
    format!(
        "# vxrouter:{host}: connection sync for {ns} (written by vxrouter; edits are replaced)\n\
         Sync {{\n\
         \tMode FTFW {{\n\
         \t\tDisableExternalCache Off\n\
         \t\tStartupResync on\n\
         \t}}\n\
         \tUDP {{\n\
         \t\tIPv4_address {me}\n\
         \t\tIPv4_Destination_Address {peer}\n\
         \t\tPort {CONNTRACK_SYNC_PORT}\n\
         \t\tInterface {link}\n\
         \t\tSndSocketBuffer 1249280\n\
         \t\tRcvSocketBuffer 1249280\n\
         \t\tChecksum on\n\
         \t}}\n\
         }}\n\
         General {{\n\
         \tHashSize 32768\n\
         \tHashLimit 131072\n\
         \tLogFile {log}\n\
         \tSyslog off\n\
         \tLockFile {lock}\n\
         \tUNIX {{\n\
         \t\tPath {socket}\n\
         \t}}\n\
         \tNetlinkBufferSize 2097152\n\
         \tNetlinkBufferSizeMaxGrowth 8388608\n\
         \tFilter From Userspace {{\n\
         \t\tAddress Ignore {{\n\
         \t\t\tIPv4_address 127.0.0.1\n\
         \t\t\tIPv4_address {me}\n\
         \t\t\tIPv4_address {peer}\n\
         \t\t\tIPv4_address {vip}\n\
         \t\t}}\n\
         \t}}\n\
         }}\n",
        link = ha.link,
        log = files.log(ns).display(),
        lock = files.lock(ns).display(),
        socket = files.socket(ns).display(),
    )
}

fn arg(files: &Files, ns: &str) -> String {
    files.conf(ns).display().to_string()
}

/// conntrackd processes started with this config (it has no pid file).
fn find(files: &Files, ns: &str) -> Option<u32> {
    daemon::find("conntrackd", &arg(files, ns)).into_iter().next()
}

fn observe(files: &Files) -> Result<Vec<Running>> {
    Ok(files.0.configs()?.into_iter().map(|(ns, config)| Running { pid: find(files, &ns), ns, config }).collect())
}

fn start(files: &Files, ns: &str, ns_file: &File, config: &str) -> Result<()> {
    crate::testhooks::point();
    files.0.make_dirs()?;
    crate::fsutil::write_private(&files.conf(ns), config.as_bytes())?;
    // A conntrackd killed outright leaves its lock behind and the next one
    // refuses to start; none runs now (stopped before), so it is stale.
    daemon::remove_files([files.lock(ns).as_path(), &files.socket(ns)])?;
    let mut cmd = Command::new("conntrackd");
    // Ctrl-C at the terminal must not reach it before it has daemonized.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.arg("-C").arg(files.conf(ns)).arg("-d").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    netns::command_in(&mut cmd, ns_file);
    let out = cmd.output().with_context(|| format!("run conntrackd in {ns} (is conntrackd installed?)"))?;
    if !out.status.success() {
        let log = fs::read_to_string(files.log(ns)).unwrap_or_default();
        let last = log.lines().rev().find(|l| l.contains("ERROR")).unwrap_or("");
        crate::bail!(Tool, "conntrackd in {ns} did not start: {} {last}", String::from_utf8_lossy(&out.stderr).trim());
    }
    // Its control socket is there once it serves (the notify script uses it).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !files.socket(ns).exists() || find(files, ns).is_none() {
        if std::time::Instant::now() > deadline {
            crate::bail!(Tool, "conntrackd in {ns} did not start (no control socket after 5 s; see {})", files.log(ns).display());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn stop(files: &Files, ns: &str, found: Option<u32>) -> Result<()> {
    crate::testhooks::point();
    let conf = arg(files, ns);
    if let Some(pid) = found.filter(|p| daemon::alive(*p, &conf)).or_else(|| find(files, ns)) {
        daemon::terminate(pid, &format!("conntrackd in {ns}"), Duration::from_secs(5))?;
    }
    daemon::remove_files([files.conf(ns).as_path(), &files.lock(ns), &files.socket(ns), &files.log(ns)])?;
    files.0.remove_empty_dirs();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_syncs_over_the_ha_link_to_the_peer() {
        let text = include_str!("../../profiles/ha/router-b.toml");
        let r = crate::profile::Profile::parse("p.toml", text).unwrap().router.unwrap();
        let ha = r.ha.unwrap();
        let c = config(&Files::new(Path::new("/run/vxrouter"), "router-b"), "router-b", "ns1", &ha, "10.0.0.2".parse().unwrap());
        for line in [
            "\t\tIPv4_address 169.254.51.2",
            "\t\tIPv4_Destination_Address 169.254.51.1",
            "\t\tPort 3780",
            "\t\tInterface vxha51",
            "\tLockFile /run/vxrouter/conntrackd/router-b/ns1.lock",
            "\t\tPath /run/vxrouter/conntrackd/router-b/ns1.ctl",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing from:\n{c}");
        }
    }
}
