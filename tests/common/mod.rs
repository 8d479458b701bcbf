//! Helpers for the namespace integration tests. Every test builds its own lab
//! (simulated hosts as private namespaces, keyed by a unique lab name), so
//! tests run in parallel without seeing each other. They refuse to run
//! outside the sandbox of scripts/test.sh.
#![allow(dead_code)]

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub fn vx() -> &'static str {
    env!("CARGO_BIN_EXE_vxrouter")
}

/// The lab program (`vxrouter lab` runs it): it carries the lab's helpers,
/// e.g. `__agent`, which the hypervisor binary does not.
pub fn lab_bin() -> PathBuf {
    Path::new(vx()).with_file_name("vxrouter-lab")
}

pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Panics unless this process is in a network namespace of its own: the
/// tests must never touch the machine's network.
pub fn assert_sandboxed() {
    let ours = std::fs::metadata("/proc/self/ns/net").expect("stat own netns").ino();
    let init = std::fs::metadata("/proc/1/ns/net").map(|m| m.ino()).unwrap_or(0);
    assert_ne!(ours, init, "integration tests must run inside the sandbox: run scripts/test.sh as root");
}

pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A lab written to a private directory, removed (`lab down`) on drop.
pub struct TestLab {
    pub dir: PathBuf,
    pub file: PathBuf,
    pub name: String,
}

/// The seed lab's text with another lab name and profile paths.
pub fn seed_lab(name: &str, a: &str, b: &str) -> String {
    std::fs::read_to_string(repo().join("profiles/lab/seed.toml"))
        .unwrap()
        .replace("name = \"seed\"", &format!("name = \"{name}\""))
        .replace("../host-a.toml", a)
        .replace("../host-b.toml", b)
}

pub fn seed_profile(host: &str) -> String {
    std::fs::read_to_string(repo().join(format!("profiles/{host}.toml"))).unwrap()
}

/// A router profile that names its firewall backend ("iptables" or
/// "nftables"); profiles without a router are returned as they are.
pub fn with_firewall(profile: &str, backend: &str) -> String {
    match profile.find("\nnamespace = ") {
        Some(i) => {
            let end = profile[i + 1..].find('\n').map(|e| i + 1 + e).unwrap_or(profile.len());
            format!("{}\nfirewall = \"{backend}\"{}", &profile[..end], &profile[end..])
        }
        None => profile.to_string(),
    }
}

/// The rules vxrouter owns in a namespace of a node, whatever the backend:
/// iptables chains and jumps, and the nftables table.
pub fn owned_rules(l: &TestLab, node: &str, ns: Option<&str>) -> String {
    let mut pre: Vec<&str> = vec![];
    if let Some(n) = ns {
        pre.extend(["ip", "netns", "exec", n]);
    }
    let ipt: Vec<&str> = pre.iter().copied().chain(["iptables-save"]).collect();
    let nft: Vec<&str> = pre.iter().copied().chain(["nft", "list", "ruleset"]).collect();
    let ipt = stdout(&l.exec(node, &ipt));
    let nft = stdout(&l.exec(node, &nft));
    let mut out: Vec<&str> = ipt.lines().filter(|x| x.contains("VXROUTER") || x.contains("vxrouter:")).collect();
    let mut in_ours = false;
    for line in nft.lines() {
        if line.starts_with("table ") {
            in_ours = line.starts_with("table ip vxrouter ");
        }
        if in_ours {
            out.push(line);
        }
    }
    out.join("\n")
}

impl TestLab {
    /// Writes `files` (name, text) and `lab.toml` into a fresh directory.
    pub fn new(name: &str, lab: &str, files: &[(&str, &str)]) -> TestLab {
        assert_sandboxed();
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("lab-{name}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for (f, t) in files {
            std::fs::write(dir.join(f), t).unwrap();
        }
        let file = dir.join("lab.toml");
        std::fs::write(&file, lab).unwrap();
        let l = TestLab { dir, file, name: name.to_string() };
        // A previous crashed run of the same test may have left it up.
        l.lab(&["down", "-q"]);
        l
    }

    /// The seed topology under a test-specific lab name.
    pub fn seed(name: &str) -> TestLab {
        TestLab::new(
            name,
            &seed_lab(name, "host-a.toml", "host-b.toml"),
            &[("host-a.toml", &seed_profile("host-a")), ("host-b.toml", &seed_profile("host-b"))],
        )
    }

    /// The seed topology with the router's firewall backend chosen.
    pub fn seed_with(name: &str, backend: &str) -> TestLab {
        TestLab::new(
            name,
            &seed_lab(name, "host-a.toml", "host-b.toml"),
            &[("host-a.toml", &with_firewall(&seed_profile("host-a"), backend)), ("host-b.toml", &seed_profile("host-b"))],
        )
    }

    pub fn path(&self, f: &str) -> String {
        self.dir.join(f).display().to_string()
    }

    pub fn write(&self, f: &str, text: &str) -> String {
        std::fs::write(self.dir.join(f), text).unwrap();
        self.path(f)
    }

    pub fn lab(&self, args: &[&str]) -> Output {
        let (sub, rest) = args.split_first().unwrap();
        Command::new(vx()).args(["lab", sub]).arg(&self.file).args(rest).output().unwrap()
    }

    pub fn up(&self) {
        let o = self.lab(&["up", "-q"]);
        assert!(o.status.success(), "lab up failed:\n{}", text(&o));
    }

    /// Hosts, switch and internet without applying profiles; VMs attach
    /// only where their bridge already exists (usually nowhere yet).
    pub fn up_bare(&self) {
        let o = self.lab(&["up", "-q", "--no-apply"]);
        let only_vms_waiting =
            text(&o).lines().filter(|l| l.contains("error") || l.contains("failed")).all(|l| l.contains("did not come up"));
        assert!(o.status.success() || only_vms_waiting, "lab up --no-apply failed:\n{}", text(&o));
    }

    /// Runs the matrix; returns (all passed, checks as JSON).
    pub fn check(&self) -> (bool, Vec<Value>) {
        let o = self.lab(&["check", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("lab check --json: {e}\n{}", text(&o)));
        let ok = v["ok"].as_bool().unwrap();
        assert_eq!(ok, o.status.success(), "exit status must match the verdict");
        (ok, v["checks"].as_array().unwrap().clone())
    }

    pub fn assert_matrix_passes(&self) {
        let (ok, checks) = self.check();
        let failed: Vec<&Value> = checks.iter().filter(|c| c["ok"] != true).collect();
        assert!(ok && failed.is_empty(), "failed checks: {failed:#?}");
    }

    /// A command inside a lab node.
    pub fn exec(&self, node: &str, cmd: &[&str]) -> Output {
        Command::new(vx()).args(["lab", "exec"]).arg(&self.file).arg(node).arg("--").args(cmd).output().unwrap()
    }

    pub fn sh(&self, node: &str, script: &str) -> Output {
        self.exec(node, &["sh", "-c", script])
    }

    /// vxrouter itself, run inside a simulated host.
    pub fn vx(&self, node: &str, args: &[&str]) -> Output {
        let mut cmd = vec![vx()];
        cmd.extend_from_slice(args);
        self.exec(node, &cmd)
    }

    /// Everything observable about a host's networking, normalised so two
    /// snapshots are equal exactly when nothing changed: links (with
    /// ifindex, MAC, master, attributes), addresses, routes and firewall of
    /// the host and of every namespace in it.
    /// [`snapshot`](Self::snapshot) without the numbers the kernel gives
    /// bridge ports as they join (port id and number): a port put back after
    /// a rollback joins again and gets new ones; nothing configures them.
    pub fn snapshot_without_port_numbers(&self, node: &str) -> String {
        self.snapshot(node)
            .lines()
            .filter(|x| {
                let k = x.trim_start();
                !(k.starts_with("\"id\": \"0x") || k.starts_with("\"no\": \"0x") || k.starts_with("\"designated_port\""))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn snapshot(&self, node: &str) -> String {
        let mut out = String::new();
        let mut namespaces = vec![String::new()];
        let list = self.exec(node, &["ip", "netns", "list"]);
        namespaces.extend(stdout(&list).lines().map(|l| l.split_whitespace().next().unwrap_or("").to_string()));
        for ns in namespaces {
            let pre: Vec<&str> = if ns.is_empty() { vec![] } else { vec!["ip", "netns", "exec", &ns] };
            out.push_str(&format!("== namespace {ns:?}\n"));
            for cmd in [
                &["ip", "-d", "-j", "link", "show"][..],
                &["ip", "-j", "addr", "show"],
                &["ip", "-4", "-j", "route", "show", "table", "all"],
            ] {
                let full: Vec<&str> = pre.iter().chain(cmd.iter()).copied().collect();
                let o = self.exec(node, &full);
                let mut v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
                scrub(&mut v);
                out.push_str(&serde_json::to_string_pretty(&v).unwrap());
                out.push('\n');
            }
            let full: Vec<&str> = pre.iter().chain(["iptables-save"].iter()).copied().collect();
            let o = self.exec(node, &full);
            for l in stdout(&o).lines().filter(|l| !l.starts_with('#')) {
                out.push_str(&l.replace("[0:0]", ""));
                out.push('\n');
            }
            let full: Vec<&str> = pre.iter().chain(["nft", "list", "ruleset"].iter()).copied().collect();
            out.push_str(&stdout(&self.exec(node, &full)));
        }
        out
    }
}

/// Drops counters and timers from `ip -j` output.
pub fn scrub(v: &mut Value) {
    match v {
        Value::Object(m) => {
            // A bridge running STP (hand-built hosts in adopt tests) shortens
            // its ageing time to twice the forward delay while a topology
            // change lasts (max_age + forward_delay, 22 s by default): the
            // kernel's clock, not a change anyone made.
            let stp = m.get("stp_state").and_then(Value::as_u64).is_some_and(|s| s != 0);
            if stp {
                for k in ["ageing_time", "topology_change", "topology_change_detected"] {
                    m.remove(k);
                }
            }
            m.retain(|k, _| {
                !(k.starts_with("stats")
                    || k.ends_with("_timer")
                    || k.contains("life_time")
                    || k == "operstate"
                    || k == "carrier_changes"
                    || k == "carrier_up_count"
                    || k == "carrier_down_count"
                    // STP's protocol flags on a bridge port: set and cleared
                    // as BPDUs come and go (a hand-built STP bridge in the
                    // adopt tests flipped `config_pending` 0 → 1 between two
                    // snapshots), never configured; always 0 without STP.
                    || k == "config_pending"
                    || k == "topology_change_ack"
                    // IPv6 duplicate address detection runs on its own clock.
                    || k == "tentative")
            });
            for x in m.values_mut() {
                scrub(x);
            }
        }
        Value::Array(a) => {
            for x in a {
                scrub(x);
            }
        }
        _ => {}
    }
}

impl Drop for TestLab {
    fn drop(&mut self) {
        let o = self.lab(&["down", "-q"]);
        if !o.status.success() {
            eprintln!("lab down {} failed: {}", self.name, text(&o));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Link names in a node.
pub fn links(l: &TestLab, node: &str, ns: Option<&str>) -> Vec<String> {
    let mut cmd = vec![];
    if let Some(n) = ns {
        cmd.extend(["ip", "netns", "exec", n]);
    }
    cmd.extend(["ip", "-j", "link", "show"]);
    let o = l.exec(node, &cmd);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    let mut names: Vec<String> =
        v.as_array().into_iter().flatten().filter_map(|x| x["ifname"].as_str().map(String::from)).collect();
    names.sort();
    names
}

/// ifindex by link name in a node (host namespace).
pub fn ifindexes(l: &TestLab, node: &str) -> Vec<(String, u64)> {
    let o = l.exec(node, &["ip", "-j", "link", "show"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut r: Vec<(String, u64)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["ifname"].as_str().unwrap().to_string(), x["ifindex"].as_u64().unwrap()))
        .collect();
    r.sort();
    r
}

/// `ip -d -j link show NAME` in a node, without counters and timers.
pub fn link_json(l: &TestLab, node: &str, name: &str) -> String {
    let o = l.exec(node, &["ip", "-d", "-j", "link", "show", name]);
    let mut v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    scrub(&mut v);
    v.to_string()
}

/// Asserts two snapshots are equal, showing the first lines that differ.
pub fn assert_same(before: &str, after: &str, what: &str) {
    if before == after {
        return;
    }
    let b: Vec<&str> = before.lines().collect();
    let a: Vec<&str> = after.lines().collect();
    let first = b.iter().zip(&a).position(|(x, y)| x != y).unwrap_or(b.len().min(a.len()));
    let from = first.saturating_sub(8);
    panic!(
        "{what}\n--- before (from line {from})\n{}\n--- after\n{}",
        b[from..(first + 8).min(b.len())].join("\n"),
        a[from..(first + 8).min(a.len())].join("\n")
    );
}

/// Network and mount namespaces (dev, inode) of a running lab's hosts and
/// pinned nodes, read from its directory: what must be empty of processes
/// once the lab is gone.
pub fn lab_namespaces(lab: &str) -> Vec<(u64, u64)> {
    let dir = Path::new("/run/vxrouter-lab").join(lab);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        match p.extension().and_then(|x| x.to_str()) {
            Some("pid") => {
                let pid = std::fs::read_to_string(&p).unwrap_or_default();
                for ns in ["net", "mnt"] {
                    if let Ok(m) = std::fs::metadata(format!("/proc/{}/ns/{ns}", pid.trim())) {
                        out.push((m.dev(), m.ino()));
                    }
                }
            }
            Some("net") => {
                if let Ok(m) = std::fs::metadata(&p)
                    && m.dev() != std::fs::metadata(&dir).map(|d| d.dev()).unwrap_or(0)
                {
                    out.push((m.dev(), m.ino()));
                }
            }
            _ => {}
        }
    }
    out
}

/// Live (not zombie) processes in any of `namespaces`, or whose command
/// line contains `needle`: "pid cmdline" each.
pub fn live_processes(namespaces: &[(u64, u64)], needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        let stat = std::fs::read_to_string(p.path().join("stat")).unwrap_or_default();
        if stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_none_or(|s| s == "Z") {
            continue;
        }
        let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let inside = ["net", "mnt"].iter().any(|k| {
            std::fs::metadata(p.path().join("ns").join(k)).map(|m| namespaces.contains(&(m.dev(), m.ino()))).unwrap_or(false)
        });
        if inside || (!needle.is_empty() && cmdline.contains(needle)) {
            found.push(format!("{pid} {cmdline}"));
        }
    }
    found
}

/// A command started as a shell starts a job (a process group of its own,
/// so a "Ctrl-C" can be sent to it with `interrupt_group`).
pub struct Job {
    pub child: std::process::Child,
    /// Standard output up to the marker line of `start_until`.
    pub seen: String,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

impl Job {
    /// Waits for the job: its exit status, all its standard output and its
    /// standard error.
    pub fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let st = self.child.wait().unwrap();
        let out = self.seen + &self.out.join().unwrap_or_default();
        (st, out, self.err.join().unwrap_or_default())
    }
}

/// Starts `cmd` as a job and reads its standard output until a line
/// contains `marker` (or it ends).
pub fn start_until(cmd: &mut Command, marker: &str) -> Job {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let mut child =
        cmd.process_group(0).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut err = child.stderr.take().unwrap();
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        seen.push_str(&line);
        if line.contains(marker) {
            break;
        }
    }
    // Keep draining both: the job must never block on a full pipe.
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    Job { child, seen, out, err }
}

/// Sends `sig` to the process group led by `child` (what Ctrl-C does to a
/// terminal's foreground job).
pub fn interrupt_group(child: &std::process::Child, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals that process group; the
    // group is the child's own (process_group(0) in start_until).
    let rc = unsafe { libc::kill(-(child.id() as i32), sig) };
    assert_eq!(rc, 0, "kill -{sig} -{}", child.id());
}
