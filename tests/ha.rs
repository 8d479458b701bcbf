//! Router HA (issue 14), vxrouter's side: two router hosts with the same
//! [router] plus [router.ha] converge to one active router; keepalived and
//! conntrackd are supervised objects (check reports them, apply starts them
//! again, destroy stops them); every failover trigger moves the addresses
//! to the peer and back. The traffic measurements (gaps, sessions, idle)
//! are the lab's HA cells (tests/ha_lab.rs). Run by scripts/test.sh (root,
//! sandbox).

mod common;

use std::time::{Duration, Instant};

use common::*;

const PUBLIC: &str = "203.0.113.123/24";
const GATEWAY: &str = "192.168.10.1/24";

/// profiles/lab/ha.toml with the HA example profiles; a preempt delay of
/// 1 s keeps the returns short.
fn ha_lab(name: &str) -> TestLab {
    let profile = |f: &str| {
        std::fs::read_to_string(repo().join("profiles/ha").join(f)).unwrap().replace("# preempt_delay = 5 ", "preempt_delay = 1 ")
    };
    let lab = std::fs::read_to_string(repo().join("profiles/lab/ha.toml"))
        .unwrap()
        .replace(
            "name = \"ha\"",
            &format!("name = \"{name}\"\n# Measurements are tests/ha_lab.rs's.\nha_rounds = 0\nha_idle_seconds = 0"),
        )
        .replace("../ha/", "");
    TestLab::new(
        name,
        &lab,
        &[
            ("router-a.toml", &profile("router-a.toml")),
            ("router-b.toml", &profile("router-b.toml")),
            ("compute-c.toml", &profile("compute-c.toml")),
        ],
    )
}

fn addresses(l: &TestLab, router: &str) -> String {
    stdout(&l.exec(router, &["ip", "-n", "ns1", "-br", "addr"]))
}

/// Which router holds the public address (None: neither or both).
fn active(l: &TestLab) -> Option<&'static str> {
    let a = addresses(l, "router-a").contains(PUBLIC);
    let b = addresses(l, "router-b").contains(PUBLIC);
    match (a, b) {
        (true, false) => Some("router-a"),
        (false, true) => Some("router-b"),
        _ => None,
    }
}

fn wait_active(l: &TestLab, want: &str, within: Duration, what: &str) -> Duration {
    let start = Instant::now();
    loop {
        if active(l) == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: {want} should be the active router within {within:?}\nrouter-a: {}\nrouter-b: {}",
            addresses(l, "router-a"),
            addresses(l, "router-b")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pid_file(l: &TestLab, host: &str, file: &str) -> String {
    stdout(&l.sh(host, &format!("cat /run/vxrouter/keepalived/{host}/{file}"))).trim().to_string()
}

/// Shell: the pids of processes named $1 in this lab host (its own mount
/// namespace; other labs' hosts run processes with the same paths).
const MINE: &str = "mine() { for p in $(pgrep -x \"$1\"); do [ \"$(readlink /proc/$p/ns/mnt)\" = \"$(readlink /proc/self/ns/mnt)\" ] && echo $p; done; true; };";

fn transitions(l: &TestLab, host: &str) -> String {
    stdout(&l.sh(host, &format!("cat /run/vxrouter/keepalived/{host}/ns1.transitions 2>/dev/null")))
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn one_router_is_active_the_second_apply_changes_nothing_and_only_it_serves_dhcp() {
    let l = ha_lab("ha-core");
    l.up();
    wait_active(&l, "router-a", Duration::from_secs(10), "after apply");
    let (a, b) = (addresses(&l, "router-a"), addresses(&l, "router-b"));
    assert!(a.contains(GATEWAY) && a.contains("169.254.51.1/24") && a.contains("169.254.51.254/24"), "{a}");
    assert!(!b.contains(GATEWAY) && !b.contains(PUBLIC) && b.contains("169.254.51.2/24") && !b.contains("169.254.51.254"), "{b}");
    // Only the active router has the default route (keepalived's).
    let route = |h| stdout(&l.exec(h, &["ip", "-n", "ns1", "route", "show", "default"]));
    assert!(route("router-a").contains("via 203.0.113.1 dev gw-br-pu proto keepalived"), "{}", route("router-a"));
    assert!(route("router-b").trim().is_empty(), "{}", route("router-b"));

    for h in ["router-a", "router-b"] {
        let p = l.path(&format!("{h}.toml"));
        let o = l.vx(h, &["apply", &p]);
        assert!(stdout(&o).contains("nothing to do"), "{h}: {}", text(&o));
        let o = l.vx(h, &["check", &p]);
        assert_eq!(o.status.code(), Some(0), "{h}: {}", text(&o));
    }
    // VRRP and sync pass on the HA link only; the underlay takes the peer.
    let rules = owned_rules(&l, "router-a", Some("ns1"));
    assert!(rules.contains("iifname \"vxha51\" ip protocol vrrp accept"), "{rules}");
    assert!(rules.contains("iifname \"vxha51\" udp dport 3780 accept"), "{rules}");

    // With connection sync, TCP windows are tracked liberally in the router
    // namespace (a split brain leaves a router's own entries out of date):
    // an owned setting, drift when changed by hand, repaired by apply.
    let liberal =
        |h| stdout(&l.exec(h, &["ip", "netns", "exec", "ns1", "sysctl", "-n", "net.netfilter.nf_conntrack_tcp_be_liberal"]));
    assert_eq!(liberal("router-a").trim(), "1");
    assert_eq!(liberal("router-b").trim(), "1");
    l.exec("router-b", &["ip", "netns", "exec", "ns1", "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_be_liberal=0"]);
    let pb = l.path("router-b.toml");
    let o = l.vx("router-b", &["check", &pb]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nf_conntrack_tcp_be_liberal"), "{}", text(&o));
    let o = l.vx("router-b", &["apply", &pb]);
    assert!(
        o.status.success() && stdout(&o).contains("change sysctl net.netfilter.nf_conntrack_tcp_be_liberal in ns1: 1 (found 0)"),
        "{}",
        text(&o)
    );
    assert_eq!(liberal("router-b").trim(), "1");

    // The matrix (DHCP VM included) passes, and the lease came from the
    // active router: the backup's dnsmasq has no address to answer from.
    l.assert_matrix_passes();
    let leases = |h: &str| stdout(&l.sh(h, &format!("cat /run/vxrouter/dnsmasq/{h}/ns1@gw-br-pr.leases 2>/dev/null")));
    assert!(leases("router-a").contains("vm-dhcp"), "active router's leases: {:?}", leases("router-a"));
    assert!(leases("router-b").trim().is_empty(), "the backup handed out a lease: {:?}", leases("router-b"));

    // status says which router is active.
    let role = |h: &str| {
        let o = l.vx(h, &["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
        v["hosts"][0]["router"]["ha"]["role"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(role("router-a"), "active");
    assert_eq!(role("router-b"), "backup");
    let o = l.vx("router-b", &["status"]);
    assert!(stdout(&o).contains("ha backup (vrid 51, priority 100, peer 10.0.0.1)"), "{}", text(&o));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn every_trigger_moves_the_addresses_and_supervision_brings_the_router_back() {
    let l = ha_lab("ha-triggers");
    let o = l.lab(&["up"]);
    assert!(o.status.success(), "lab up failed:\n{}", text(&o));
    let pa = l.path("router-a.toml");
    let back = Duration::from_secs(8);
    wait_active(&l, "router-a", Duration::from_secs(10), "after apply");

    // The uplink loses its carrier (tracked): router-b takes over; back
    // when the carrier returns.
    assert!(l.exec("fabric", &["ip", "link", "set", "p0", "down"]).status.success());
    let t = wait_active(&l, "router-b", Duration::from_secs(10), "uplink down");
    eprintln!("uplink down: router-b active after {t:?}");
    assert!(transitions(&l, "router-a").contains("FAULT"), "{}", transitions(&l, "router-a"));
    assert!(l.exec("fabric", &["ip", "link", "set", "p0", "up"]).status.success());
    wait_active(&l, "router-a", back, "uplink up again");

    // keepalived's VRRP process killed: its parent starts it again at once
    // (within a few adverts, so the peer may or may not take over
    // meanwhile); router-a ends active with a new VRRP process.
    let (main, child) = (pid_file(&l, "router-a", "ns1.pid"), pid_file(&l, "router-a", "ns1.vrrp.pid"));
    let before = transitions(&l, "router-a").lines().count();
    assert!(l.exec("router-a", &["kill", "-9", &child]).status.success());
    let start = Instant::now();
    while transitions(&l, "router-a").lines().count() == before {
        assert!(start.elapsed() < Duration::from_secs(5), "no new VRRP process: {}", transitions(&l, "router-a"));
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_active(&l, "router-a", back, "VRRP process restarted by keepalived");
    assert_eq!(pid_file(&l, "router-a", "ns1.pid"), main);
    assert_ne!(pid_file(&l, "router-a", "ns1.vrrp.pid"), child);
    let o = l.vx("router-a", &["check", &pa]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // All of keepalived killed: its VRRP process gives the addresses up as
    // it goes; check reports it; apply starts it again.
    assert!(l.exec("router-a", &["kill", "-9", &main]).status.success());
    wait_active(&l, "router-b", Duration::from_secs(5), "keepalived killed");
    let o = l.vx("router-a", &["check", &pa]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stdout(&o).contains("missing: keepalived (VRRP) in ns1"), "{}", text(&o));
    assert!(!addresses(&l, "router-a").contains(PUBLIC));
    let o = l.vx("router-a", &["apply", &pa]);
    assert!(o.status.success(), "{}", text(&o));
    wait_active(&l, "router-a", back, "keepalived started again by apply");

    // conntrackd killed: check reports it, apply starts it again.
    let o = l.sh("router-a", &format!("{MINE} kill -9 $(mine conntrackd)"));
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(Duration::from_millis(200));
    let o = l.vx("router-a", &["check", &pa]);
    assert!(stdout(&o).contains("missing: conntrackd (connection sync) in ns1"), "{}", text(&o));
    let o = l.vx("router-a", &["apply", &pa]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.vx("router-a", &["check", &pa]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // Planned handover, and back with apply.
    let o = l.vx("router-a", &["ha", "handover", &pa]);
    assert!(o.status.success() && stdout(&o).contains("handed over to 10.0.0.2"), "{}", text(&o));
    assert_eq!(active(&l), Some("router-b"));
    let o = l.vx("router-a", &["check", &pa]);
    assert!(stdout(&o).contains("extra `    priority 1`"), "{}", text(&o));
    let o = l.vx("router-a", &["apply", &pa]);
    assert!(stdout(&o).contains("change keepalived (VRRP) in ns1: config changed: reload"), "{}", text(&o));
    wait_active(&l, "router-a", back, "apply after a handover");
    // The backup refuses to hand over what it does not hold.
    let o = l.vx("router-b", &["ha", "handover", &l.path("router-b.toml")]);
    assert!(o.status.success() && stdout(&o).contains("not active"), "{}", text(&o));

    // The router namespace's name deleted under the running router: apply
    // makes a new namespace and a new keepalived in it, and one only.
    assert!(l.exec("router-a", &["ip", "netns", "del", "ns1"]).status.success());
    let o = l.vx("router-a", &["apply", &pa]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("still running for the namespace deleted under it"), "{}", text(&o));
    wait_active(&l, "router-a", back, "apply after the namespace was deleted");
    let procs = stdout(&l.sh("router-a", &format!("{MINE} mine keepalived | wc -l")));
    assert_eq!(procs.trim(), "2", "keepalived's main and VRRP process, nothing left of the old one");

    // destroy gives the addresses to the peer and stops both daemons.
    let o = l.vx("router-a", &["destroy", "--force", &pa]);
    assert!(o.status.success(), "{}", text(&o));
    wait_active(&l, "router-b", Duration::from_secs(5), "destroy");
    let left = stdout(&l.sh(
        "router-a",
        &format!("{MINE} for p in $(mine keepalived) $(mine conntrackd); do cat /proc/$p/comm; done; ls /run/vxrouter 2>&1; grep ' /run/vxrouter/' /proc/mounts"),
    ));
    assert!(!left.contains("keepalived") && !left.contains("conntrackd") && !left.contains("host-sys"), "{left}");
    let o = l.vx("router-b", &["check", &l.path("router-b.toml")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// router-a alone, nothing applied: for the fault tests.
fn lone_router(name: &str) -> TestLab {
    let profile = std::fs::read_to_string(repo().join("profiles/ha/router-a.toml")).unwrap();
    let lab = format!(
        "[lab]\nname = \"{name}\"\n[underlay]\nsubnet = \"10.0.0.0/24\"\n[internet]\ngateway = \"203.0.113.1/24\"\nserver = \"198.51.100.10\"\n\
         [[host]]\nname = \"router-a\"\nprofile = \"router-a.toml\"\nunderlay = \"10.0.0.1\"\nuplink = true\n"
    );
    TestLab::new(name, &lab, &[("router-a.toml", &profile)])
}

/// Everything a run may leave: links, addresses, routes, rules, files,
/// mounts and daemons of this host. The lab's own mounts
/// (/run/vxrouter-lab/…) are left out: this host's mount namespace sees
/// other labs' come and go (the tests of this file run at once).
fn everything(l: &TestLab) -> String {
    l.snapshot("router-a")
        + &stdout(&l.sh(
            "router-a",
            &format!("{MINE} find /run/vxrouter -mindepth 1 2>/dev/null; grep ' /run/vxrouter/' /proc/mounts; for p in $(mine keepalived) $(mine conntrackd) $(mine dnsmasq); do cat /proc/$p/comm; done"),
        ))
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn an_ha_router_recovers_from_a_failure_or_a_kill_at_every_point() {
    let l = lone_router("ha-faults");
    l.up_bare();
    let p = l.path("router-a.toml");
    let clean = everything(&l);
    // A failing step: rolled back to exactly nothing, daemons included.
    for n in 1.. {
        let o = l.exec("router-a", &["env", &format!("VXROUTER_FAULT_STEP={n}"), vx(), "apply", &p]);
        if o.status.success() {
            // Fewer steps than n: the whole plan applied.
            assert!(n > 20, "only {} steps: {}", n - 1, text(&o));
            assert!(l.vx("router-a", &["destroy", "-q", &p]).status.success());
            break;
        }
        assert_eq!(o.status.code(), Some(1), "step {n}: {}", text(&o));
        assert_same(&clean, &everything(&l), &format!("failed at step {n}: not rolled back"));
    }
    // Killed at any point of apply or destroy: the next apply converges,
    // check agrees, destroy leaves nothing.
    let o = l.exec("router-a", &["env", "VXROUTER_FAULT_COUNT=1", vx(), "apply", "-q", &p]);
    let points: usize = text(&o).lines().find_map(|x| x.strip_prefix("fault-points: ")).unwrap().parse().unwrap();
    assert!(l.vx("router-a", &["destroy", "-q", &p]).status.success());
    // The HA steps are the last of an apply (the daemons start after
    // everything else) and the first of a destroy (daemons stop before
    // anything goes); the points between are the single router's, which
    // tests/safety.rs kills at one by one (each kill here costs seconds:
    // keepalived's graceful stop and the kernel's namespace teardown).
    const HA_POINTS: usize = 10;
    for cmd in ["apply", "destroy"] {
        let ks = if cmd == "apply" { points.saturating_sub(HA_POINTS) + 1..=points } else { 1..=HA_POINTS };
        for k in ks {
            if cmd == "destroy" {
                let o = l.vx("router-a", &["apply", "-q", &p]);
                assert!(o.status.success(), "{}", text(&o));
            }
            let o = l.exec("router-a", &["env", &format!("VXROUTER_FAULT_KILL={k}"), vx(), cmd, "-q", &p]);
            if o.status.success() {
                continue;
            }
            let o = l.vx("router-a", &["apply", "-q", &p]);
            assert!(o.status.success(), "{cmd} killed at {k}: apply after: {}", text(&o));
            let o = l.vx("router-a", &["check", "-q", &p]);
            assert_eq!(o.status.code(), Some(0), "{cmd} killed at {k}: {}", text(&o));
            let o = l.vx("router-a", &["destroy", "-q", &p]);
            assert!(o.status.success(), "{cmd} killed at {k}: destroy: {}", text(&o));
            assert_same(&clean, &everything(&l), &format!("{cmd} killed at {k}: orphans left"));
        }
    }
}
