//! DHCP and DNS for the VMs of a segment: one dnsmasq per router leg that
//! asks for it, running inside the router namespace, with its own config,
//! pid and lease files under <run dir>/dnsmasq/<host>/. vxrouter starts it,
//! restarts it only when its config changes, starts it again if it died,
//! and stops it when the profile no longer asks for it (first of all, before
//! its namespace may go) and on destroy. A process is recognised by its pid
//! file plus its command line (`--conf-file=PATH`), so a recycled pid is
//! never mistaken for it.

use std::fs::{self, File};
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Kind, ObserveCx};
use crate::apply::Apply;
use crate::daemon;
use crate::desired::{overhead, segment_mtu, underlay_mtu};
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::Ns;
use crate::netns;
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::{Leg, Profile};

pub struct Dhcp;

/// A dnsmasq the profile asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub ns: String,
    /// The router leg (namespace end) it serves.
    pub leg: String,
    pub config: String,
}

/// A dnsmasq vxrouter started (its config file exists).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Running {
    pub ns: String,
    pub leg: String,
    pub config: String,
    /// Its process, if it is alive.
    pub pid: Option<u32>,
}

impl Kind for Dhcp {
    const NAME: &'static str = "dhcp";
    type Item = Server;
    type Seen = Vec<Running>;

    fn desire(p: &Profile, f: &Facts) -> Vec<Server> {
        let Some(r) = &p.router else { return vec![] };
        let files = Files::new(&f.run_dir, &p.host);
        r.private
            .iter()
            .filter(|l| l.dhcp.is_some() || l.dns || l.address6.is_some())
            .map(|l| {
                let mtu =
                    p.segments.iter().find(|s| s.bridge == l.bridge).map(|s| segment_mtu(s.mtu, underlay_mtu(f), overhead(p)));
                Server {
                    ns: r.namespace.clone(),
                    leg: l.veth[1].clone(),
                    config: config(&files, &p.host, &r.namespace, l, mtu.unwrap_or(1500), r.ha.is_some()),
                }
            })
            .collect()
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Vec<Running>> {
        let o = cx.observed;
        let files = Files::new(&o.facts.run_dir, &cx.desired.host);
        let mut found = observe(&files)?;
        // Without a state file, the config files may be gone too, while the
        // daemons still hold their legs: find them by command line.
        if o.state.recovered {
            for r in running_without_config(&files, o.named.keys()) {
                if !found.iter().any(|f| f.ns == r.ns && f.leg == r.leg) {
                    found.push(r);
                }
            }
        }
        Ok(found)
    }

    fn plan(p: &mut Planner<'_>, want: &[Server], seen: &Vec<Running>) {
        for r in seen {
            if !want.iter().any(|s| s.ns == r.ns && s.leg == r.leg) {
                let running = r.pid.map(|_| r.config.clone());
                let stop = Supervise { ns: r.ns.clone(), leg: r.leg.clone(), config: None, running, pid: r.pid };
                p.push(Order::StopDaemons, stop);
            }
        }
        for s in want {
            let found = seen.iter().find(|r| r.ns == s.ns && r.leg == s.leg);
            // A namespace or leg made in this run has no server yet.
            let fresh = p.fresh_ns.contains(&s.ns) || p.live(&Ns::Named(s.ns.clone()), &s.leg).is_none();
            let running = found.filter(|r| r.pid.is_some() && !fresh).map(|r| r.config.clone());
            // One serving a namespace deleted under it keeps that namespace
            // alive (and with it an HA link's VNI): it stops first of all.
            if p.fresh_ns.contains(&s.ns)
                && let Some(pid) = found.and_then(|r| r.pid)
            {
                let stop = Supervise { ns: s.ns.clone(), leg: s.leg.clone(), config: None, running: None, pid: Some(pid) };
                p.push(Order::StopDaemons, stop);
            }
            if running.as_deref() != Some(s.config.as_str()) {
                let pid = found.and_then(|r| r.pid);
                let start = Supervise { ns: s.ns.clone(), leg: s.leg.clone(), config: Some(s.config.clone()), running, pid };
                p.push(Order::Late, start);
            }
        }
    }
}

/// Start, restart (new config) or stop (`config` None) the dnsmasq of a
/// router leg; `running` is the config it runs with now, if it runs.
#[derive(Debug, Serialize)]
pub struct Supervise {
    pub ns: String,
    pub leg: String,
    pub config: Option<String>,
    pub running: Option<String>,
    /// The process found running (stopped first).
    pub pid: Option<u32>,
}

impl Step for Supervise {
    fn action(&self) -> &'static str {
        "dhcp"
    }
    fn verb(&self) -> Verb {
        match (&self.config, &self.running) {
            (None, _) => Verb::Remove,
            (Some(_), None) => Verb::Create,
            (Some(_), Some(_)) => Verb::Change,
        }
    }
    fn object(&self) -> String {
        format!("dhcp/dns server on {} in {}", self.leg, self.ns)
    }
    fn detail(&self) -> String {
        match (&self.config, &self.running) {
            (Some(_), Some(old)) if old.is_empty() => "running without its config file: restart".into(),
            (Some(new), Some(old)) => {
                let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
                format!("config changed: restart ({})", crate::firewall::rule_diff(&lines(new), &lines(old)))
            }
            (Some(_), None) => "not running".into(),
            (None, _) => String::new(),
        }
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        run(cx, &self.ns, &self.leg, self.config.as_deref(), self.pid)?;
        cx.undo_with(Revert { ns: self.ns.clone(), leg: self.leg.clone(), config: self.running.clone() });
        Ok(())
    }
}

#[derive(Debug)]
struct Revert {
    ns: String,
    leg: String,
    config: Option<String>,
}

impl Undo for Revert {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        run(cx, &self.ns, &self.leg, self.config.as_deref(), None)
    }
}

/// (Re)starts a leg's dnsmasq with `config`, or stops it (None).
fn run(cx: &mut Apply<'_>, ns: &str, leg: &str, config: Option<&str>, pid: Option<u32>) -> Result<()> {
    let files = Files::new(&cx.run_dir, &cx.host);
    stop(&files, ns, leg, pid)?;
    if let Some(c) = config {
        cx.session.attach(ns)?;
        let file = cx.file(&Ns::Named(ns.to_string()))?.ok_or_else(|| crate::error!(Internal, "namespace {ns} is not open"))?;
        start(&files, ns, file, leg, c)?;
    }
    Ok(())
}

/// Where a host's dnsmasq files live.
struct Files {
    dir: PathBuf,
}

impl Files {
    fn new(run_dir: &Path, host: &str) -> Files {
        Files { dir: run_dir.join("dnsmasq").join(host) }
    }
    /// '@' occurs in neither namespace nor interface names.
    fn path(&self, ns: &str, leg: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{ns}@{leg}.{ext}"))
    }
    fn conf(&self, ns: &str, leg: &str) -> PathBuf {
        self.path(ns, leg, "conf")
    }
    fn pid(&self, ns: &str, leg: &str) -> PathBuf {
        self.path(ns, leg, "pid")
    }
    fn leases(&self, ns: &str, leg: &str) -> PathBuf {
        self.path(ns, leg, "leases")
    }
}

/// The dnsmasq configuration for one private leg: DHCP with the gateway,
/// the segment MTU (option 26) and, with `dns`, the gateway as DNS server;
/// DNS off otherwise.
///
/// On a high-availability router (`ha`) the gateway address is keepalived's
/// and only the active router has it: dnsmasq runs on both routers with
/// `bind-dynamic`, listens for DNS when the address arrives, and answers
/// DHCP only while its leg holds an address in the range's subnet — so only
/// the active router hands out leases, and both hand the same address to
/// the same MAC (dnsmasq derives it from the MAC), which a lease renewed
/// with the new active router keeps (dhcp-authoritative).
fn config(files: &Files, host: &str, ns: &str, leg: &Leg, mtu: u32, ha: bool) -> String {
    let name = &leg.veth[1];
    let bind = if ha { "bind-dynamic" } else { "bind-interfaces" };
    let mut c = format!(
        "# vxrouter:{host}: DHCP/DNS for segment bridge {} (written by vxrouter; edits are replaced)\n\
         interface={name}\n{bind}\nexcept-interface=lo\nno-hosts\n\
         pid-file={}\n",
        leg.bridge,
        files.pid(ns, name).display()
    );
    if leg.dns {
        c.push_str("domain-needed\nbogus-priv\n");
    } else {
        c.push_str("port=0\n");
    }
    if let Some(a6) = leg.address6 {
        // Router advertisements: the prefix for SLAAC (no DHCPv6), the
        // segment MTU, the gateway's address as DNS server (RDNSS) with
        // `dns`, none without.
        c.push_str(&format!("enable-ra\ndhcp-range={},ra-only,64\nra-param={name},mtu:{mtu},0\n", a6.network()));
        if leg.dns {
            c.push_str(&format!("dhcp-option=option6:dns-server,[{}]\n", a6.addr()));
        } else {
            c.push_str("dhcp-option=option6:dns-server\n");
        }
    }
    if let Some(d) = &leg.dhcp {
        let mask: Ipv4Addr = leg.address.netmask();
        c.push_str(&format!(
            "dhcp-authoritative\ndhcp-leasefile={}\ndhcp-range={},{},{mask},{}\n\
             dhcp-option=option:router,{}\ndhcp-option=option:mtu,{mtu}\n",
            files.leases(ns, name).display(),
            d.first,
            d.last,
            d.lease,
            leg.address.addr()
        ));
        if leg.dns {
            c.push_str(&format!("dhcp-option=option:dns-server,{}\n", leg.address.addr()));
        } else {
            c.push_str("dhcp-option=option:dns-server\n");
        }
    }
    c
}

fn alive(pid: u32, conf: &Path) -> bool {
    daemon::alive(pid, &format!("--conf-file={}", conf.display()))
}

/// The dnsmasq instances this host's vxrouter started.
fn observe(files: &Files) -> Result<Vec<Running>> {
    let entries = match fs::read_dir(&files.dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("read {}", files.dir.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".conf") else { continue };
        let Some((ns, leg)) = stem.split_once('@') else { continue };
        let conf = e.path();
        let config = fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
        let pid = daemon::read_pid(&files.pid(ns, leg)).filter(|p| alive(*p, &conf));
        out.push(Running { ns: ns.to_string(), leg: leg.to_string(), config, pid });
    }
    out.sort_by(|a, b| (&a.ns, &a.leg).cmp(&(&b.ns, &b.leg)));
    Ok(out)
}

/// dnsmasq processes started with a config file of this host's (by their
/// command line) and running in the router namespace that file names,
/// whatever files are left. The namespace check matters: the same path may
/// exist in another mount namespace (a container, another lab host).
fn running_without_config<'a>(files: &Files, namespaces: impl Iterator<Item = &'a String>) -> Vec<Running> {
    use std::os::unix::fs::MetadataExt;
    let inode = |p: &Path| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let spaces: Vec<(String, (u64, u64))> =
        namespaces.filter_map(|n| Some((n.clone(), inode(&crate::netns::path(n))?))).collect();
    let prefix = format!("--conf-file={}/", files.dir.display());
    let Ok(procs) = fs::read_dir("/proc") else { return vec![] };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if fs::read_to_string(p.path().join("comm")).map(|c| c.trim() != "dnsmasq").unwrap_or(true) {
            continue;
        }
        let Ok(cmdline) = fs::read(p.path().join("cmdline")) else { continue };
        for arg in cmdline.split(|b| *b == 0) {
            let arg = String::from_utf8_lossy(arg);
            if let Some(stem) = arg.strip_prefix(&prefix).and_then(|f| f.strip_suffix(".conf"))
                && let Some((ns, leg)) = stem.split_once('@')
                && spaces.iter().any(|(n, id)| n == ns && inode(&p.path().join("ns/net")) == Some(*id))
            {
                out.push(Running { ns: ns.to_string(), leg: leg.to_string(), config: String::new(), pid: Some(pid) });
            }
        }
    }
    out
}

/// Writes the config and starts dnsmasq in the namespace; returns when it
/// has started serving (dnsmasq's parent exits after its daemon is ready).
fn start(files: &Files, ns: &str, ns_file: &File, leg: &str, config: &str) -> Result<()> {
    crate::testhooks::point();
    let conf = files.conf(ns, leg);
    if let Some(run_dir) = files.dir.parent().and_then(Path::parent) {
        crate::fsutil::private_dir(run_dir)?;
    }
    crate::fsutil::private_dir(&files.dir)?;
    crate::fsutil::write_private(&conf, config.as_bytes())?;
    let mut cmd = Command::new("dnsmasq");
    // Ctrl-C at the terminal must not reach it before it has daemonized.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd.arg(format!("--conf-file={}", conf.display())).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    netns::command_in(&mut cmd, ns_file);
    let out = cmd.output().with_context(|| format!("run dnsmasq in {ns} (is dnsmasq-base installed?)"))?;
    if !out.status.success() {
        crate::bail!(Tool, "dnsmasq for {leg} in {ns} did not start: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Stops the dnsmasq of a leg (if it runs: its pid file says which
/// process, else `found`, a pid found by command line) and removes its files.
fn stop(files: &Files, ns: &str, leg: &str, found: Option<u32>) -> Result<()> {
    crate::testhooks::point();
    let conf = files.conf(ns, leg);
    let pid = daemon::read_pid(&files.pid(ns, leg)).or(found);
    if let Some(pid) = pid
        && alive(pid, &conf)
    {
        // dnsmasq exits at once on SIGTERM (its sockets close with it); a
        // busy machine may take a moment, a stuck one gets SIGKILL.
        daemon::terminate(pid, &format!("dnsmasq for {leg} in {ns}"), Duration::from_secs(3))?;
    }
    daemon::remove_files([conf.as_path(), &files.pid(ns, leg), &files.leases(ns, leg)])?;
    let _ = fs::remove_dir(&files.dir);
    let _ = files.dir.parent().map(fs::remove_dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_hands_out_gateway_mtu_and_dns() {
        let text = include_str!("../../profiles/host-a.toml").replace(
            "veth = [\"veth17.0\", \"veth17.1\"]  # optional, as above",
            "veth = [\"veth17.0\", \"veth17.1\"]\ndhcp = { range = \"192.168.10.100-192.168.10.200\", lease = \"1h\" }\ndns = true",
        );
        let p = Profile::parse("p.toml", &text).unwrap();
        let leg = &p.router.as_ref().unwrap().private[0];
        let c = config(&Files::new(Path::new("/run/vxrouter"), "host-a"), "host-a", "ns1", leg, 1450, false);
        for line in [
            "interface=veth17.1",
            "dhcp-range=192.168.10.100,192.168.10.200,255.255.255.0,1h",
            "dhcp-option=option:router,192.168.10.3",
            "dhcp-option=option:mtu,1450",
            "dhcp-option=option:dns-server,192.168.10.3",
            "pid-file=/run/vxrouter/dnsmasq/host-a/ns1@veth17.1.pid",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing from:\n{c}");
        }
        assert!(!c.contains("port=0"));
    }
}
