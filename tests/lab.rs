//! Issue 3: the lab itself: both shipped labs pass from their files, a
//! broken deployment fails the right cells, labs leave nothing behind and
//! can run side by side. Run by scripts/test.sh (root, sandbox).

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn run_shipped(file: &str) -> Vec<Value> {
    assert_sandboxed();
    let o = Command::new(vx()).args(["lab", "run", "--json"]).arg(repo().join(file)).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let checks = v["checks"].as_array().unwrap().clone();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(o.status.success() && v["ok"] == true && failed.is_empty(), "{file}: {failed:#?}\n{}", text(&o));
    checks
}

fn count(checks: &[Value], kind: &str) -> usize {
    checks.iter().filter(|c| c["check"] == kind).count()
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn shipped_seed_lab_passes() {
    let checks = run_shipped("profiles/lab/seed.toml");
    assert_eq!(count(&checks, "ping"), 2);
    assert_eq!(count(&checks, "egress-source"), 2);
    assert_eq!(count(&checks, "inbound-blocked"), 2);
    assert_eq!(count(&checks, "bulk"), 3, "vm-a→vm-b across hosts and both VMs→internet");
    assert_eq!(count(&checks, "unfragmented"), 2);
    assert_eq!(count(&checks, "pmtu"), 1, "vm-a→vm-b across VXLAN");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn shipped_three_hosts_lab_passes() {
    let checks = run_shipped("profiles/lab/three-hosts.toml");
    // 7 VMs (4 on br-web, one of them by DHCP; 3 on br-db): each pings the
    // others of its segment, ARP never crosses to the other segment, and the
    // router does not route between them.
    assert_eq!(count(&checks, "ping"), 4 * 3 + 3 * 2);
    assert_eq!(count(&checks, "l2-isolated"), 2 * 4 * 3);
    assert_eq!(count(&checks, "routed-blocked"), 2 * 4 * 3);
    assert_eq!(count(&checks, "egress-source"), 7);
    assert_eq!(count(&checks, "dhcp"), 1);
    assert!(checks.iter().filter(|c| c["check"] == "egress-source").all(|c| c["detail"] == "203.0.113.123"));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn broken_profiles_fail_their_cells() {
    // host-a routes a second segment br-x (VNI 2000) that host-b lacks, and
    // a VM on host-b sits on br-x: its cells must fail, with reasons.
    let a = seed_profile("host-a")
        .replace("[router]", "[[segment]]\nbridge = \"br-x\"\nvni = 2000\ngroup = \"239.0.4.47\"\n\n[router]")
        + "\n[[router.private]]\nbridge = \"br-x\"\naddress = \"192.168.30.1/24\"\n";
    let lab = seed_lab("broken", "host-a.toml", "host-b.toml")
        + "\n[[vm]]\nname = \"vm-x\"\nhost = \"host-b\"\nbridge = \"br-x\"\naddress = \"192.168.30.20/24\"\ngateway = \"192.168.30.1\"\n";
    let l = TestLab::new("broken", &lab, &[("host-a.toml", &a), ("host-b.toml", &seed_profile("host-b"))]);
    let o = l.lab(&["up"]);
    assert_eq!(o.status.code(), Some(1), "up says that vm-x could not be attached: {}", text(&o));
    assert!(text(&o).contains("vm-x: not attached"), "{}", text(&o));
    let (ok, checks) = l.check();
    assert!(!ok, "a broken deployment must not pass");
    let cell = checks.iter().find(|c| c["check"] == "attached" && c["from"] == "vm-x").expect("vm-x cell");
    assert_eq!(cell["ok"], false);
    assert!(cell["detail"].as_str().unwrap().contains("host-b has no bridge br-x"), "{cell}");
    // The healthy part still passes.
    assert!(checks.iter().filter(|c| c["from"] == "vm-a" || c["from"] == "vm-b").all(|c| c["ok"] == true), "{checks:#?}");
    let o = l.lab(&["check"]);
    assert!(text(&o).contains("✗ attached vm-x"), "{}", text(&o));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_vm_whose_mtu_is_below_the_segment_fails_the_path_mtu_cell() {
    // vm-b's NIC (and its tap) at 1400 on a 1450 segment: small packets pass,
    // a full-size frame for vm-b is dropped by host-b's bridge.
    let lab = seed_lab("mtu", "host-a.toml", "host-b.toml") + "mtu = 1400\n";
    assert!(lab.trim_end().ends_with("gateway = \"192.168.10.3\"\nmtu = 1400"), "vm-b is the last table: {lab}");
    let l = TestLab::new("mtu", &lab, &[("host-a.toml", &seed_profile("host-a")), ("host-b.toml", &seed_profile("host-b"))]);
    l.up();
    let (ok, checks) = l.check();
    assert!(!ok, "{checks:#?}");
    let cell = checks.iter().find(|c| c["check"] == "pmtu").expect("pmtu cell");
    assert_eq!(cell["ok"], false, "{cell}");
    assert!(cell["detail"].as_str().unwrap().contains("1450-byte packets with DF set do not get across"), "{cell}");
    let ping = checks.iter().find(|c| c["check"] == "ping" && c["from"] == "vm-a").unwrap();
    assert_eq!(ping["ok"], true, "small packets still pass: {ping}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_router_without_isolation_fails_the_inbound_cells_iptables() {
    router_opened_by_hand("iptables", &["iptables", "-I", "VXROUTER-FWD", "1", "-j", "ACCEPT"]);
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_router_without_isolation_fails_the_inbound_cells_nftables() {
    router_opened_by_hand("nftables", &["nft", "insert", "rule", "ip", "vxrouter", "forward", "accept"]);
}

fn router_opened_by_hand(backend: &str, open: &[&str]) {
    let l = TestLab::seed_with(&format!("open-{backend}"), backend);
    l.up();
    l.assert_matrix_passes();
    // Open the router by hand: the inbound check must notice (it routes to
    // the private subnet through the router's public address).
    let mut cmd = vec!["ip", "netns", "exec", "ns1"];
    cmd.extend_from_slice(open);
    let o = l.exec("host-a", &cmd);
    assert!(o.status.success(), "{}", text(&o));
    let (ok, checks) = l.check();
    assert!(!ok);
    for vm in ["vm-a", "vm-b"] {
        let c = checks.iter().find(|c| c["check"] == "inbound-blocked" && c["to"] == vm).unwrap();
        assert_eq!(c["ok"], false, "{c}");
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn two_labs_run_side_by_side_and_leave_nothing() {
    let one = TestLab::seed("side-1");
    let two = TestLab::seed("side-2");
    one.up();
    two.up();
    // Both have a host-a with a router namespace ns1, each its own.
    one.assert_matrix_passes();
    two.assert_matrix_passes();
    let o = one.exec("vm-a", &["ip", "-j", "addr", "show", "eth0"]);
    assert!(stdout(&o).contains("192.168.10.10"), "{}", text(&o));
    drop(one);
    two.assert_matrix_passes();
    drop(two);
    // Nothing is left: no lab directory, no mount, no process of the labs.
    assert!(!std::path::Path::new("/run/vxrouter-lab/side-1").exists());
    assert!(!std::path::Path::new("/run/vxrouter-lab/side-2").exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("vxrouter-lab/side-"), "{mounts}");
    let holders = Command::new("pgrep").args(["-f", "__lab-holder"]).output().unwrap();
    let alive: Vec<String> = stdout(&holders)
        .lines()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.contains(") Z ")).unwrap_or(false))
        .map(String::from)
        .collect();
    // Other tests' labs may be running; none of those can be ours, since
    // ours are down: a holder is ours if it holds a side-N namespace.
    for pid in alive {
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains("side-"), "a holder of a removed lab is still running: {pid}");
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn down_cleans_up_after_a_crashed_up() {
    let l = TestLab::seed("crashed");
    let mut child = Command::new(vx()).args(["lab", "up", "-q"]).arg(&l.file).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let _ = child.kill();
    let _ = child.wait();
    let o = l.lab(&["down"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!std::path::Path::new("/run/vxrouter-lab/crashed").exists());
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_vm_whose_mtu_exceeds_the_segment_fails_the_mtu_cell() {
    // vm-b left at MTU 1500 on the 1450 segment (its tap too): small
    // packets pass and a 1451-byte DF ping from vm-a is refused by vm-a as
    // it should, but vm-b's own full-size frames die on the way: the cell
    // must say so instead of passing.
    let lab = seed_lab("mtu-big", "host-a.toml", "host-b.toml") + "mtu = 1500\n";
    assert!(lab.trim_end().ends_with("gateway = \"192.168.10.3\"\nmtu = 1500"), "vm-b is the last table: {lab}");
    let l = TestLab::new("mtu-big", &lab, &[("host-a.toml", &seed_profile("host-a")), ("host-b.toml", &seed_profile("host-b"))]);
    l.up();
    let (ok, checks) = l.check();
    assert!(!ok, "{checks:#?}");
    let cell = checks.iter().find(|c| c["check"] == "pmtu").expect("pmtu cell");
    assert_eq!(cell["ok"], false, "{cell}");
    let d = cell["detail"].as_str().unwrap();
    assert!(d.contains("MTU black hole") && d.contains("vm-b's eth0 has MTU 1500, more than the segment's 1450"), "{cell}");
    let o = l.lab(&["check"]);
    assert!(text(&o).contains("✗ pmtu vm-a → vm-b: MTU black hole"), "{}", text(&o));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn hosts_that_disagree_about_a_segment_are_refused_before_anything_is_built() {
    let b = seed_profile("host-b").replace("vni = 1070", "vni = 1071\nport = 8472").replace("239.0.4.46", "239.0.4.99");
    assert_ne!(b, seed_profile("host-b"));
    let l = TestLab::new(
        "disagree",
        &seed_lab("disagree", "host-a.toml", "host-b.toml"),
        &[("host-a.toml", &seed_profile("host-a")), ("host-b.toml", &b)],
    );
    for verb in ["up", "run"] {
        let o = l.lab(&[verb]);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        // One error, naming both files and what differs.
        assert_eq!(err.lines().filter(|x| x.contains("disagree")).count(), 1, "{err}");
        let files = [l.path("host-a.toml"), l.path("host-b.toml")];
        for want in files.iter().map(String::as_str).chain([
            "segment br-pr",
            "VNI 1070 vs 1071",
            "port 4789 vs 8472",
            "group 239.0.4.46 vs 239.0.4.99",
        ]) {
            assert!(err.contains(want), "{want}: {err}");
        }
        assert!(!std::path::Path::new("/run/vxrouter-lab/disagree").exists(), "nothing may be built");
    }
    // Unicast peers: each side must list the other's underlay address.
    let unicast = |host: &str| std::fs::read_to_string(repo().join(format!("profiles/unicast/{host}.toml"))).unwrap();
    let c = unicast("host-c").replace("\"10.0.0.1\", ", "");
    assert_ne!(c, unicast("host-c"), "host-c lists host-a as a peer");
    let lab = std::fs::read_to_string(repo().join("profiles/lab/unicast.toml"))
        .unwrap()
        .replace("name = \"unicast\"", "name = \"disagree-uc\"")
        .replace("../unicast/", "");
    let l = TestLab::new(
        "disagree-uc",
        &lab,
        &[("host-a.toml", &unicast("host-a")), ("host-b.toml", &unicast("host-b")), ("host-c.toml", &c)],
    );
    let o = l.lab(&["up"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("host-c's peers lack host-a's underlay address 10.0.0.1"), "{}", text(&o));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn status_lists_running_labs_and_exec_takes_the_lab_name() {
    let l = TestLab::seed("listed");
    l.up();
    for verb in ["status", "list"] {
        let o = Command::new(vx()).args(["lab", verb]).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let line = stdout(&o).lines().find(|x| x.starts_with("listed ")).map(String::from);
        let line = line.unwrap_or_else(|| panic!("lab {verb} does not list the lab: {}", text(&o)));
        assert!(
            line.contains(" up ") && line.contains(l.file.to_str().unwrap()) && line.contains("2 host(s), 2 VM(s)"),
            "{line}"
        );
    }
    let o = Command::new(vx()).args(["lab", "status", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let me = v["labs"].as_array().unwrap().iter().find(|x| x["name"] == "listed").cloned().expect("listed in JSON");
    assert_eq!(me["ok"], true, "{me}");
    assert_eq!(me["hosts"].as_array().unwrap().len(), 2);
    // --json where it means nothing: a usage error, and nothing done.
    for args in
        [&["up", "--json", "listed"][..], &["down", "--json", "listed"], &["exec", "--json", "listed", "vm-a", "--", "true"]]
    {
        let o = Command::new(vx()).arg("lab").args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "lab {args:?}: {}", text(&o));
        assert!(text(&o).contains("--json means nothing"), "{}", text(&o));
    }
    // exec, check and down by name instead of file.
    let o = Command::new(vx())
        .args(["lab", "exec", "listed", "vm-a", "--", "ip", "-4", "-o", "addr", "show", "eth0"])
        .output()
        .unwrap();
    assert!(o.status.success() && stdout(&o).contains("192.168.10.10/24"), "{}", text(&o));
    let o = Command::new(vx()).args(["lab", "check", "listed"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new(vx()).args(["lab", "exec", "no-such-lab", "vm-a", "--", "true"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("neither a lab file nor the name of a running lab"), "{}", text(&o));
    let o = Command::new(vx()).args(["lab", "down", "-q", "listed"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new(vx()).args(["lab", "status"]).output().unwrap();
    assert!(!stdout(&o).lines().any(|x| x.starts_with("listed ")), "{}", text(&o));
}

/// Interrupts a lab command once it has built part of the lab, and checks
/// that it removed the lab and left no process behind.
fn interrupt_lab(verb: &str, name: &str, sig: i32, whole_group: bool) {
    let l = TestLab::seed(name);
    let mut cmd = Command::new(vx());
    cmd.args(["lab", verb]).arg(&l.file);
    let job = start_until(&mut cmd, "host-b: vxrouter apply");
    assert!(job.seen.contains("host-b: vxrouter apply"), "{}", job.seen);
    // host-a is up, with its holder and its dnsmasq-free router namespace.
    let namespaces = lab_namespaces(name);
    assert!(!namespaces.is_empty(), "the lab was built in part");
    if whole_group {
        interrupt_group(&job.child, sig);
    } else {
        // SAFETY: kill(2) on the child's own pid.
        assert_eq!(unsafe { libc::kill(job.child.id() as i32, sig) }, 0);
    }
    let (st, out, err) = job.finish();
    assert_eq!(st.code(), Some(128 + sig), "{out}{err}");
    assert!(err.contains(&format!("lab {name} removed")) && err.contains("interrupted by SIG"), "{out}{err}");
    assert!(!std::path::Path::new(&format!("/run/vxrouter-lab/{name}")).exists());
    let left = live_processes(&namespaces, &format!("__lab-holder {name}/"));
    assert!(left.is_empty(), "still running after the interruption: {left:#?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&format!("vxrouter-lab/{name}")), "{mounts}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn ctrl_c_during_lab_up_removes_the_lab() {
    interrupt_lab("up", "int-up", libc::SIGINT, true);
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn sigterm_during_lab_run_removes_the_lab() {
    interrupt_lab("run", "int-run", libc::SIGTERM, false);
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn ctrl_c_through_the_demo_sandbox_removes_the_lab() {
    // What scripts/demo.sh runs, in a sandbox of its own inside the test's:
    // Ctrl-C (SIGINT to the terminal's foreground job) while it builds.
    let l = TestLab::seed("int-demo");
    let mut cmd = Command::new(repo().join("scripts/sandbox.sh"));
    cmd.arg(vx()).args(["lab", "run"]).arg(&l.file);
    let job = start_until(&mut cmd, "host-b: vxrouter apply");
    assert!(job.seen.contains("host-b: vxrouter apply"), "{}", job.seen);
    interrupt_group(&job.child, libc::SIGINT);
    let (st, out, err) = job.finish();
    assert_eq!(st.code(), Some(130), "{out}{err}");
    assert!(out.contains("lab int-demo removed") && err.contains("interrupted by SIGINT: lab int-demo removed"), "{out}{err}");
    // The sandbox's processes are visible from here (its PID namespace is
    // nested in ours): none of the lab's is left.
    let left = live_processes(&[], "__lab-holder int-demo/");
    assert!(left.is_empty(), "{left:#?}");
}
