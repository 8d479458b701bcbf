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
