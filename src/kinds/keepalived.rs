//! keepalived (VRRPv3) of a high-availability router: one per router
//! namespace with `[router.ha]`, running inside it. It holds the public
//! address, the VMs' gateway addresses and the default route on the active
//! router only, announces them with gratuitous ARP when it takes over, and
//! runs the notify script that commits the connection table conntrackd
//! kept in sync (kinds/conntrackd.rs).
//!
//! vxrouter writes its config, notify script and uplink check under
//! <run dir>/keepalived/<host>/, starts it, reloads it (SIGHUP: it keeps its
//! state, so a priority change does not flap the addresses) when the config
//! changes, starts it again if it died, and stops it first of all when the
//! profile no longer asks for it (SIGTERM: it gives the addresses up with a
//! priority-0 advert, a planned handover). The process is recognised by its
//! pid file plus its command line (`--use-file=PATH`).
//!
//! Timers and their reasons are in docs/design.md ("Router HA").

use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::conntrackd;
use super::{Kind, ObserveCx, ha_link};
use crate::apply::Apply;
use crate::daemon;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::Ns;
use crate::netns;
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::{Ha, Profile, Router};

pub struct Keepalived;

/// The keepalived a router namespace needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub ns: String,
    pub config: String,
    pub notify: String,
}

/// A keepalived vxrouter started (its config file exists).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Running {
    pub ns: String,
    pub config: String,
    /// Its main process, if it is alive.
    pub pid: Option<u32>,
}

/// The link-local address of a high-availability router's IPv6 gateway.
pub const GATEWAY_LINK_LOCAL: &str = "fe80::1";

/// The priority `vxrouter ha handover` gives a router: below any peer's.
pub const HANDOVER_PRIORITY: u8 = 1;

impl Kind for Keepalived {
    const NAME: &'static str = "keepalived";
    type Item = Instance;
    type Seen = Vec<Running>;

    fn desire(p: &Profile, f: &Facts) -> Vec<Instance> {
        let Some(r) = &p.router else { return vec![] };
        let Some(ha) = &r.ha else { return vec![] };
        let files = Files::new(&f.run_dir, &p.host);
        vec![Instance {
            ns: r.namespace.clone(),
            config: config(&files, &p.host, r, ha, ha.priority),
            notify: notify(&files, &p.host, r, ha, &f.run_dir),
        }]
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Vec<Running>> {
        let files = Files::new(&cx.observed.facts.run_dir, &cx.desired.host);
        observe(&files)
    }

    fn plan(p: &mut Planner<'_>, want: &[Instance], seen: &Vec<Running>) {
        for r in seen {
            if !want.iter().any(|w| w.ns == r.ns) {
                let step = Supervise {
                    ns: r.ns.clone(),
                    want: None,
                    running: r.pid.map(|_| r.config.clone()),
                    pid: r.pid,
                    orphaned: false,
                };
                p.push(Order::StopDaemons, step);
            }
        }
        for w in want {
            let found = seen.iter().find(|r| r.ns == w.ns);
            // A namespace made in this run has no keepalived yet.
            let fresh = p.fresh_ns.contains(&w.ns);
            let running = found.filter(|r| r.pid.is_some() && !fresh).map(|r| r.config.clone());
            // One still running for a namespace made in this run serves the
            // namespace that was deleted under it (and keeps it, with its HA
            // link, alive): it stops first of all, and a new one starts.
            let orphaned = found.and_then(|r| r.pid).filter(|_| fresh);
            if let Some(pid) = orphaned {
                let stop = Supervise {
                    ns: w.ns.clone(),
                    want: None,
                    running: found.map(|r| r.config.clone()),
                    pid: Some(pid),
                    orphaned: true,
                };
                p.push(Order::StopDaemons, stop);
            }
            if running.as_deref() != Some(w.config.as_str()) {
                let pid = found.and_then(|r| r.pid).filter(|_| orphaned.is_none());
                p.push(Order::Late, Supervise { ns: w.ns.clone(), want: Some(w.clone()), running, pid, orphaned: false });
            }
        }
    }
}

/// Start (not running), reload (running with another config) or stop
/// (`want` None) the keepalived of a router namespace.
#[derive(Debug, Serialize)]
pub struct Supervise {
    pub ns: String,
    pub want: Option<Instance>,
    /// The config it runs with now, if it runs.
    pub running: Option<String>,
    pub pid: Option<u32>,
    /// Stopping one that serves a namespace deleted under it.
    pub orphaned: bool,
}

impl Step for Supervise {
    fn action(&self) -> &'static str {
        "keepalived"
    }
    fn verb(&self) -> Verb {
        match (&self.want, &self.running) {
            (None, _) => Verb::Remove,
            (Some(_), None) => Verb::Create,
            (Some(_), Some(_)) => Verb::Change,
        }
    }
    fn object(&self) -> String {
        format!("keepalived (VRRP) in {}", self.ns)
    }
    fn detail(&self) -> String {
        match (&self.want, &self.running) {
            (Some(new), Some(old)) => {
                let lines =
                    |t: &str| t.lines().filter(|l| !l.trim_start().starts_with('#')).map(str::to_string).collect::<Vec<_>>();
                format!("config changed: reload ({})", crate::firewall::rule_diff(&lines(&new.config), &lines(old)))
            }
            (Some(_), None) => "not running".into(),
            (None, _) if self.orphaned => "still running for the namespace deleted under it".into(),
            (None, _) => "gives the addresses up to the peer (priority-0 advert)".into(),
        }
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let files = Files::new(&cx.run_dir, &cx.host);
        let before = fs::read_to_string(files.notify(&self.ns)).ok();
        match (&self.want, self.pid) {
            (Some(w), Some(pid)) => reload(&files, &w.ns, pid, &w.config, &w.notify)?,
            (Some(w), None) => {
                cx.session.attach(&w.ns)?;
                let ns_file = cx
                    .file(&Ns::Named(w.ns.clone()))?
                    .ok_or_else(|| crate::error!(Internal, "namespace {} is not open", w.ns))?;
                start(&files, &w.ns, ns_file, &w.config, &w.notify)?;
            }
            (None, pid) => stop(&files, &self.ns, pid)?,
        }
        cx.undo_with(Revert { ns: self.ns.clone(), config: self.running.clone(), notify: before });
        Ok(())
    }
}

#[derive(Debug)]
struct Revert {
    ns: String,
    /// The config it ran with before (None: it did not run).
    config: Option<String>,
    notify: Option<String>,
}

impl Undo for Revert {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        let files = Files::new(&cx.run_dir, &cx.host);
        let pid = running_pid(&files, &self.ns);
        match (&self.config, pid) {
            (Some(c), Some(pid)) => reload(&files, &self.ns, pid, c, self.notify.as_deref().unwrap_or_default()),
            (Some(c), None) => {
                cx.session.attach(&self.ns)?;
                let ns_file = cx
                    .file(&Ns::Named(self.ns.clone()))?
                    .ok_or_else(|| crate::error!(Internal, "namespace {} is not open", self.ns))?;
                start(&files, &self.ns, ns_file, c, self.notify.as_deref().unwrap_or_default())
            }
            (None, pid) => stop(&files, &self.ns, pid),
        }
    }
}

/// Where a host's keepalived files live.
pub struct Files(daemon::NsFiles);

impl Files {
    pub fn new(run_dir: &Path, host: &str) -> Files {
        Files(daemon::NsFiles::new(run_dir, "keepalived", host))
    }
    fn path(&self, ns: &str, ext: &str) -> PathBuf {
        self.0.path(ns, ext)
    }
    pub fn conf(&self, ns: &str) -> PathBuf {
        self.path(ns, "conf")
    }
    fn pid(&self, ns: &str) -> PathBuf {
        self.path(ns, "pid")
    }
    fn vrrp_pid(&self, ns: &str) -> PathBuf {
        self.path(ns, "vrrp.pid")
    }
    fn notify(&self, ns: &str) -> PathBuf {
        self.path(ns, "notify")
    }
    /// keepalived's own log.
    pub fn log(&self, ns: &str) -> PathBuf {
        self.path(ns, "log")
    }
    /// One line per state change: `<unix time> <STATE>`.
    pub fn transitions(&self, ns: &str) -> PathBuf {
        self.path(ns, "transitions")
    }
    /// A sysfs of the host's network namespace, mounted while keepalived
    /// runs, for the uplink check (which runs inside the router namespace).
    fn host_sys(&self, ns: &str) -> PathBuf {
        self.path(ns, "host-sys")
    }
}

fn arg(conf: &Path) -> String {
    format!("--use-file={}", conf.display())
}

/// The keepalived configuration of a router namespace.
pub fn config(files: &Files, host: &str, r: &Router, ha: &Ha, priority: u8) -> String {
    let public = &r.public.leg.veth[1];
    let advert = f64::from(ha.advert_centis) / 100.0;
    let mut c = format!(
        "# vxrouter:{host}: VRRP for router namespace {ns} (written by vxrouter; edits are replaced)\n\
         global_defs {{\n\
         \x20   router_id vxrouter-{host}\n\
         \x20   vrrp_version 3\n\
         \x20   # Announce at once on takeover, and again a second later.\n\
         \x20   vrrp_garp_master_delay 1\n\
         \x20   vrrp_garp_master_repeat 3\n\
         \x20   # A master that hears a lower-priority master answers at once:\n\
         \x20   # after a partition heals, one of two masters steps down within\n\
         \x20   # an advert instead of after a timeout.\n\
         \x20   vrrp_higher_prio_send_advert true\n\
         \x20   # Sub-second adverts: the VRRP process runs at a real-time\n\
         \x20   # priority (keepalived picks it), so a busy host does not delay\n\
         \x20   # its adverts into a spurious failover.\n\
         \x20   max_auto_priority\n\
         \x20   script_user root\n\
         \x20   enable_script_security\n\
         }}\n",
        ns = r.namespace
    );
    if ha.track_uplink {
        // The uplink's operational state as the host's own sysfs shows it
        // (mounted for this, see `start`): a file read, no netlink request,
        // so the check does not wait for the kernel's rtnl lock, which a
        // busy host (links being created or namespaces torn down) can hold
        // for seconds — long enough, with a netlink check, to give the
        // addresses up on both routers at once (seen in the lab). Every
        // second; three failures in a row give the addresses up.
        let _ = write!(
            c,
            "vrrp_script vxrouter_uplink {{\n\
             \x20   script \"/bin/grep -qx up {}/class/net/{}/operstate\"\n\
             \x20   interval 1\n\
             \x20   timeout 2\n\
             \x20   fall 3\n\
             \x20   rise 2\n\
             }}\n",
            files.host_sys(&r.namespace).display(),
            r.public.uplink
        );
    }
    let _ = write!(
        c,
        "vrrp_instance vxrouter {{\n\
         \x20   state BACKUP\n\
         \x20   interface {link}\n\
         \x20   virtual_router_id {vrid}\n\
         \x20   priority {priority}\n\
         \x20   advert_int {advert}\n\
         \x20   preempt_delay {delay}\n\
         \x20   virtual_ipaddress {{\n\
         \x20       {vip} dev {link}\n\
         \x20   }}\n\
         \x20   virtual_ipaddress_excluded {{\n",
        link = ha.link,
        vrid = ha.vrid,
        delay = ha.preempt_delay,
        vip = ha_link::virtual_address(ha),
    );
    for leg in std::iter::once(&r.public.leg).chain(&r.private) {
        let _ = writeln!(c, "        {} dev {}", leg.address, leg.veth[1]);
        if let Some(a6) = leg.address6 {
            let _ = writeln!(c, "        {a6} dev {}", leg.veth[1]);
        }
    }
    // The VMs' IPv6 gateway: router advertisements come from the active
    // router's link-local address, so it moves too (kinds/veth.rs).
    for leg in r.private.iter().filter(|l| l.address6.is_some()) {
        let _ = writeln!(c, "        {GATEWAY_LINK_LOCAL}/64 dev {}", leg.veth[1]);
    }
    let _ = write!(
        c,
        "    }}\n\
         \x20   virtual_routes {{\n\
         \x20       0.0.0.0/0 via {gw} dev {public}\n",
        gw = r.public.gateway
    );
    if let Some(g6) = r.public.gateway6 {
        let _ = writeln!(c, "        ::/0 via {g6} dev {public}");
    }
    c.push_str("    }\n");
    if ha.track_uplink {
        c.push_str("    track_script {\n        vxrouter_uplink\n    }\n");
    }
    let _ = write!(c, "    notify \"{}\"\n}}\n", files.notify(&r.namespace).display());
    c
}

/// The notify script: records each state change, and moves the connection
/// table the way Neutron and VyOS do (on becoming active: commit the peer's
/// connections conntrackd kept, flush its caches, resync with the kernel,
/// send everything to the peer; on becoming backup or faulty: shorten the
/// kernel's timers for what is left, ask the active one for its table).
fn notify(files: &Files, host: &str, r: &Router, ha: &Ha, run_dir: &Path) -> String {
    let mut s = format!(
        "#!/bin/sh\n# vxrouter:{host}: keepalived notify for {ns} (written by vxrouter; edits are replaced)\n\
         # Called as: notify INSTANCE|GROUP NAME STATE PRIORITY\n\
         echo \"$(date +%s.%N) $3\" >> '{transitions}'\n",
        ns = r.namespace,
        transitions = files.transitions(&r.namespace).display()
    );
    if ha.conntrack_sync {
        let conf = conntrackd::Files::new(run_dir, host).conf(&r.namespace);
        let ct = format!("conntrackd -C '{}'", conf.display());
        let _ = write!(
            s,
            "case \"$3\" in\n\
             MASTER) {ct} -c; {ct} -f; {ct} -R; {ct} -B ;;\n\
             BACKUP|FAULT) {ct} -t; {ct} -n ;;\n\
             esac\n"
        );
    }
    s.push_str("exit 0\n");
    s
}

fn running_pid(files: &Files, ns: &str) -> Option<u32> {
    let conf = files.conf(ns);
    daemon::read_pid(&files.pid(ns)).filter(|p| daemon::alive(*p, &arg(&conf)))
}

/// The keepalived instances this host's vxrouter started.
fn observe(files: &Files) -> Result<Vec<Running>> {
    Ok(files.0.configs()?.into_iter().map(|(ns, config)| Running { pid: running_pid(files, &ns), ns, config }).collect())
}

fn write_files(files: &Files, ns: &str, config: &str, notify: &str) -> Result<()> {
    files.0.make_dirs()?;
    crate::fsutil::write_private(&files.conf(ns), config.as_bytes())?;
    // keepalived runs the script as root and refuses one others could edit.
    let script = files.notify(ns);
    crate::fsutil::write_private(&script, notify.as_bytes())?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("make {} executable", script.display()))
}

/// A VRRP process whose parent is gone: keepalived's main process killed
/// outright leaves it running (it gives the addresses up, then idles), and
/// a new keepalived refuses to start beside it.
fn stop_orphan(files: &Files, ns: &str) -> Result<()> {
    let conf = arg(&files.conf(ns));
    if let Some(child) = daemon::read_pid(&files.vrrp_pid(ns)).filter(|p| daemon::alive(*p, &conf)) {
        daemon::terminate(child, &format!("keepalived's VRRP process in {ns}"), Duration::from_secs(5))?;
    }
    Ok(())
}

/// Writes the files and starts keepalived in the namespace.
fn start(files: &Files, ns: &str, ns_file: &File, config: &str, notify: &str) -> Result<()> {
    crate::testhooks::point();
    stop_orphan(files, ns)?;
    write_files(files, ns, config, notify)?;
    let sys = files.host_sys(ns);
    if config.contains("vxrouter_uplink") && !netns::sysfs_mounted(&sys) {
        netns::mount_sysfs(&sys)?;
    }
    // Its log (state changes and why: a fault, a higher priority heard) goes
    // to a file of its own: keepalived logs to syslog otherwise, which a
    // host may not run, and when it forks it closes its console. So it runs
    // in the foreground (`--dont-fork`) of a process of its own (a new
    // session: a signal to this command's terminal or process group does
    // not reach it), logging to this file, and outlives this command.
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(files.log(ns))
        .with_context(|| format!("open {}", files.log(ns).display()))?;
    let mut cmd = Command::new("keepalived");
    cmd.arg(arg(&files.conf(ns)))
        .arg(format!("--pid={}", files.pid(ns).display()))
        .arg(format!("--vrrp_pid={}", files.vrrp_pid(ns).display()))
        .args(["--vrrp", "--log-detail", "--log-console", "--no-syslog", "--dont-fork"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().context("log file")?)
        .stderr(log);
    netns::command_in(&mut cmd, ns_file);
    // SAFETY: setsid(2) is async-signal-safe; nothing else runs in the child.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().with_context(|| format!("run keepalived in {ns} (is keepalived installed?)"))?;
    // Up once it has written its pid file (and its VRRP process started).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while running_pid(files, ns).is_none() {
        if let Ok(Some(status)) = child.try_wait() {
            crate::bail!(Tool, "keepalived in {ns} did not start ({status}): {}", last_lines(&files.log(ns)));
        }
        if std::time::Instant::now() > deadline {
            crate::bail!(Tool, "keepalived in {ns} did not start (no process after 5 s): {}", last_lines(&files.log(ns)));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The end of a log, for an error message.
fn last_lines(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(3)..].join("; ")
}

/// New config and notify script, then SIGHUP: keepalived re-reads them and
/// keeps its state.
fn reload(files: &Files, ns: &str, pid: u32, config: &str, notify: &str) -> Result<()> {
    crate::testhooks::point();
    write_files(files, ns, config, notify)?;
    daemon::reload(pid, &format!("keepalived in {ns}"))
}

/// Stops keepalived (it gives the addresses up on SIGTERM) and removes its
/// files and the pinned host namespace.
fn stop(files: &Files, ns: &str, found: Option<u32>) -> Result<()> {
    crate::testhooks::point();
    let conf = files.conf(ns);
    if let Some(pid) = daemon::read_pid(&files.pid(ns)).or(found).filter(|p| daemon::alive(*p, &arg(&conf))) {
        daemon::terminate(pid, &format!("keepalived in {ns}"), Duration::from_secs(5))?;
    }
    stop_orphan(files, ns)?;
    netns::unmount_sysfs(&files.host_sys(ns))?;
    daemon::remove_files([
        conf.as_path(),
        &files.pid(ns),
        &files.vrrp_pid(ns),
        &files.notify(ns),
        &files.transitions(ns),
        &files.log(ns),
    ])?;
    files.0.remove_empty_dirs();
    Ok(())
}

/// Which router holds the addresses: active when this router namespace
/// holds the public address, backup when keepalived runs without it, down
/// when keepalived does not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Active,
    Backup,
    Down,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Backup => "backup",
            Role::Down => "down",
        }
    }
}

/// This host's role, from what was observed.
pub fn role(p: &Profile, o: &crate::observe::Observed, seen: Option<&Vec<Running>>) -> Option<Role> {
    let r = p.router.as_ref()?;
    r.ha.as_ref()?;
    let ns = Ns::Named(r.namespace.clone());
    let holds = o.view(&ns).is_some_and(|v| {
        v.link(&r.public.leg.veth[1])
            .is_some_and(|l| v.addrs_of(l.index).any(|a| a.cidr == ipnet::IpNet::V4(r.public.leg.address)))
    });
    let runs = seen.is_some_and(|s| s.iter().any(|x| x.ns == r.namespace && x.pid.is_some()));
    Some(match (holds, runs) {
        (true, _) => Role::Active,
        (false, true) => Role::Backup,
        (false, false) => Role::Down,
    })
}

/// The config `vxrouter ha handover` writes: the profile's, with this
/// router's priority at the bottom, so the peer takes over (after its
/// preempt delay) and nothing restarts.
pub fn handover_config(current: &str) -> Option<String> {
    let mut changed = false;
    let out: Vec<String> = current
        .lines()
        .map(|l| match l.trim_start().strip_prefix("priority ") {
            Some(_) if !changed => {
                changed = true;
                format!("    priority {HANDOVER_PRIORITY}")
            }
            _ => l.to_string(),
        })
        .collect();
    changed.then(|| out.join("\n") + "\n")
}

/// Hands over: reloads this router's keepalived with the lowest priority.
/// Returns the pid it signalled.
pub fn handover(run_dir: &Path, host: &str, ns: &str) -> Result<u32> {
    let files = Files::new(run_dir, host);
    let conf = files.conf(ns);
    let Some(pid) = running_pid(&files, ns) else {
        crate::bail!(Conflict, "keepalived does not run in {ns}: nothing to hand over (run `vxrouter apply` first)");
    };
    let current = fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
    let new = handover_config(&current).ok_or_else(|| crate::error!(Internal, "{} names no priority", conf.display()))?;
    crate::fsutil::write_private(&conf, new.as_bytes())?;
    daemon::reload(pid, &format!("keepalived in {ns}"))?;
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(file: &str) -> Router {
        let text = match file {
            "a" => include_str!("../../profiles/ha/router-a.toml"),
            _ => include_str!("../../profiles/ha-fast/router-a.toml"),
        };
        crate::profile::Profile::parse("p.toml", text).unwrap().router.unwrap()
    }

    #[test]
    fn config_holds_addresses_route_and_timers() {
        let r = router("a");
        let ha = r.ha.clone().unwrap();
        let files = Files::new(Path::new("/run/vxrouter"), "router-a");
        let c = config(&files, "router-a", &r, &ha, ha.priority);
        for line in [
            "    vrrp_version 3",
            "    interface vxha51",
            "    virtual_router_id 51",
            "    priority 200",
            "    advert_int 0.1",
            "    preempt_delay 5",
            "        169.254.51.254/24 dev vxha51",
            "        203.0.113.123/24 dev gw-br-pu",
            "        192.168.10.1/24 dev gw-br-pr",
            "        0.0.0.0/0 via 203.0.113.1 dev gw-br-pu",
            "    script \"/bin/grep -qx up /run/vxrouter/keepalived/router-a/ns1.host-sys/class/net/eth1/operstate\"",
            "    notify \"/run/vxrouter/keepalived/router-a/ns1.notify\"",
        ] {
            assert!(c.lines().any(|l| l == line), "{line:?} missing from:\n{c}");
        }
        let fast = router("fast");
        let c = config(&files, "router-a", &fast, fast.ha.as_ref().unwrap(), 254);
        assert!(c.lines().any(|l| l == "    advert_int 0.03"), "{c}");
    }

    #[test]
    fn notify_commits_on_master_and_resyncs_on_backup() {
        let r = router("a");
        let ha = r.ha.clone().unwrap();
        let files = Files::new(Path::new("/run/vxrouter"), "router-a");
        let s = notify(&files, "router-a", &r, &ha, Path::new("/run/vxrouter"));
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("MASTER) conntrackd -C '/run/vxrouter/conntrackd/router-a/ns1.conf' -c;"), "{s}");
        assert!(s.contains("BACKUP|FAULT) conntrackd -C '/run/vxrouter/conntrackd/router-a/ns1.conf' -t;"), "{s}");
        assert!(s.contains("/run/vxrouter/keepalived/router-a/ns1.transitions"), "{s}");
    }

    #[test]
    fn handover_lowers_only_the_priority() {
        let r = router("a");
        let ha = r.ha.clone().unwrap();
        let files = Files::new(Path::new("/run/vxrouter"), "router-a");
        let c = config(&files, "router-a", &r, &ha, ha.priority);
        let h = handover_config(&c).unwrap();
        assert_eq!(h, config(&files, "router-a", &r, &ha, HANDOVER_PRIORITY));
    }
}
