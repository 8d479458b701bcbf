//! Issue 15, the lab side: the shipped IPv6 labs pass through `vxrouter lab`
//! up / check / down with their IPv6 cells (slaac, ping6, egress6-source,
//! inbound6-blocked, pmtu6), and those cells fail when the router's IPv6
//! firewall is opened or drops packet-too-big. Run by scripts/test.sh
//! (root, sandbox).

mod common;

use std::time::Instant;

use common::*;
use serde_json::Value;

/// A shipped lab under its own name, its host profiles named by absolute
/// path (so the test may write variants of them next to it).
fn shipped(file: &str, name: &str, replace: &[(&str, &str)]) -> TestLab {
    let mut text = std::fs::read_to_string(repo().join(file)).unwrap();
    let orig_name = text.lines().find_map(|l| l.strip_prefix("name = \"")).map(|n| n.split('"').next().unwrap().to_string());
    text = text.replace(&format!("name = \"{}\"", orig_name.unwrap()), &format!("name = \"{name}\""));
    text = text.replace("profile = \"../", &format!("profile = \"{}/profiles/", repo().display()));
    for (a, b) in replace {
        text = text.replace(a, b);
    }
    TestLab::new(name, &text, &[])
}

fn cells<'a>(checks: &'a [Value], kind: &str) -> Vec<&'a Value> {
    checks.iter().filter(|c| c["check"] == kind).collect()
}

fn cell<'a>(checks: &'a [Value], kind: &str, from: &str, to: &str) -> &'a Value {
    checks
        .iter()
        .find(|c| c["check"] == kind && c["from"] == from && c["to"] == to)
        .unwrap_or_else(|| panic!("no {kind} cell {from} → {to}: {checks:#?}"))
}

fn detail(c: &Value) -> &str {
    c["detail"].as_str().unwrap_or("")
}

/// Runs `lab up` and `lab check`; asserts everything passed and returns
/// the cells.
fn up_and_check(l: &TestLab) -> Vec<Value> {
    let t = Instant::now();
    l.up();
    let (ok, checks) = l.check();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(ok && failed.is_empty(), "{}: failed checks: {failed:#?}", l.name);
    eprintln!("{}: up + check in {:.1} s, {} checks", l.name, t.elapsed().as_secs_f64(), checks.len());
    checks
}

/// The dual-stack lab's IPv6 cells: three VMs on the routed segment br-pr
/// (one per host) and one on host-c's NAT66 segment.
fn assert_dual_stack_cells(checks: &[Value]) {
    assert_eq!(cells(checks, "slaac").len(), 4);
    assert_eq!(cells(checks, "ping6").len(), 6, "vm-a, vm-b, vm-c to each other, across hosts");
    assert_eq!(cells(checks, "egress6-source").len(), 4);
    assert_eq!(cells(checks, "inbound6-blocked").len(), 4);
    assert_eq!(cells(checks, "pmtu6").len(), 4);
    for vm in ["vm-a", "vm-b", "vm-c"] {
        // Routed: the server sees the VM's own SLAAC address.
        let slaac = detail(cell(checks, "slaac", vm, "br-pr")).split(',').next().unwrap().to_string();
        assert!(slaac.starts_with("2001:db8:10:"), "{slaac}");
        let seen = detail(cell(checks, "egress6-source", vm, "internet"));
        assert!(seen.starts_with(&format!("{slaac} ")), "{vm}: {seen} (its address {slaac})");
    }
    // NAT66: the router's public address.
    assert!(detail(cell(checks, "egress6-source", "nat-c", "internet")).starts_with("2001:db8:ff::124 "));
    assert!(detail(cell(checks, "pmtu6", "vm-a", "internet")).contains("1450 bytes"), "{checks:#?}");
    for c in cells(checks, "public-side") {
        assert!(detail(c).contains("private IPv6 gateway(s) silent"), "{c}");
    }
}

fn in_router(l: &TestLab, host: &str, ns: &str, cmd: &[&str]) {
    let mut argv = vec!["ip", "netns", "exec", ns];
    argv.extend_from_slice(cmd);
    let o = l.exec(host, &argv);
    assert!(o.status.success(), "{}", text(&o));
}

fn routed_vms_fail(checks: &[Value], kind: &str, from_internet: bool, why: &str) {
    for vm in ["vm-a", "vm-b", "vm-c"] {
        let c = if from_internet { cell(checks, kind, "internet", vm) } else { cell(checks, kind, vm, "internet") };
        assert_eq!(c["ok"], false, "{c}");
        assert!(detail(c).contains(why), "{c}");
    }
    // host-c's NAT66 segment is another router's: untouched.
    let c = if from_internet { cell(checks, kind, "internet", "nat-c") } else { cell(checks, kind, "nat-c", "internet") };
    assert_eq!(c["ok"], true, "{c}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn shipped_dual_stack_lab_passes_and_its_ipv6_cells_catch_a_broken_router_nftables() {
    let l = shipped("profiles/lab/dual-stack.toml", "dual-stack", &[]);
    let checks = up_and_check(&l);
    assert_dual_stack_cells(&checks);

    // Packet-too-big dropped by host-a's router: its VMs never learn the
    // smaller path MTU beyond it.
    in_router(
        &l,
        "host-a",
        "ns1",
        &["nft", "insert", "rule", "ip6", "vxrouter", "forward", "icmpv6", "type", "packet-too-big", "drop"],
    );
    let (ok, checks) = l.check();
    assert!(!ok);
    routed_vms_fail(&checks, "pmtu6", false, "no packet-too-big reached the VM");

    // The IPv6 firewall opened by hand: the attacker's connection gets in.
    in_router(&l, "host-a", "ns1", &["nft", "insert", "rule", "ip6", "vxrouter", "forward", "accept"]);
    let (ok, checks) = l.check();
    assert!(!ok);
    routed_vms_fail(&checks, "inbound6-blocked", true, "a new connection from the internet reached");
    let o = l.lab(&["down", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn dual_stack_lab_with_the_iptables_backend() {
    let dir = std::env::temp_dir().join("vxrouter-ipv6-lab-iptables");
    let _ = std::fs::create_dir_all(&dir);
    let mut replace = Vec::new();
    for host in ["host-a", "host-c"] {
        let p = std::fs::read_to_string(repo().join(format!("profiles/dual-stack/{host}.toml"))).unwrap();
        let f = dir.join(format!("{host}.toml"));
        std::fs::write(&f, with_firewall(&p, "iptables")).unwrap();
        replace.push((format!("{}/profiles/dual-stack/{host}.toml", repo().display()), f.display().to_string()));
    }
    let replace: Vec<(&str, &str)> = replace.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let l = shipped("profiles/lab/dual-stack.toml", "dual-stack-ipt", &[]);
    // The profiles' paths are absolute after `shipped`: point two of them
    // at the iptables variants.
    let mut text = std::fs::read_to_string(&l.file).unwrap();
    for (a, b) in &replace {
        text = text.replace(a, b);
    }
    std::fs::write(&l.file, text).unwrap();
    let rules = || stdout(&l.exec("host-a", &["ip", "netns", "exec", "ns1", "ip6tables-save"]));
    let checks = up_and_check(&l);
    assert!(rules().contains("--icmpv6-type 2 -j ACCEPT"), "the iptables backend holds the IPv6 policy: {}", rules());
    assert_dual_stack_cells(&checks);
    in_router(&l, "host-a", "ns1", &["ip6tables", "-I", "FORWARD", "1", "-j", "ACCEPT"]);
    let (ok, checks) = l.check();
    assert!(!ok);
    routed_vms_fail(&checks, "inbound6-blocked", true, "a new connection from the internet reached");
    drop(l);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn shipped_ipv6_underlay_lab_passes_with_all_vxlan_over_ipv6() {
    let l = shipped("profiles/lab/ipv6-underlay.toml", "ipv6-underlay", &[]);
    let checks = up_and_check(&l);
    // Five VMs, two segments (br-web over the IPv6 group, br-db over IPv6
    // peers), all routed dual stack through host-a.
    assert_eq!(cells(&checks, "slaac").len(), 5);
    assert_eq!(cells(&checks, "ping6").len(), 3 * 2 + 2, "web-a/b/c to each other, db-b ↔ db-c");
    assert_eq!(cells(&checks, "egress6-source").len(), 5);
    assert_eq!(cells(&checks, "inbound6-blocked").len(), 5);
    assert_eq!(cells(&checks, "pmtu6").len(), 5);
    // The segment MTU over an IPv6 underlay: 1500 - 70.
    assert!(detail(cell(&checks, "pmtu6", "web-b", "internet")).contains("1430 bytes"), "{checks:#?}");
    assert!(detail(cell(&checks, "pmtu", "db-b", "db-c")).contains("1430 bytes"), "{checks:#?}");
    // What the switch saw: every host's VXLAN over IPv6, none over IPv4.
    let family = cells(&checks, "underlay-family");
    assert_eq!(family.len(), 3);
    for c in family {
        assert!(detail(c).contains("over IPv6, none over IPv4"), "{c}");
    }
    // The links really have IPv6 endpoints.
    let o = l.exec("host-b", &["ip", "-d", "link", "show", "vxlan3070"]);
    assert!(stdout(&o).contains("group ff05::4:46 local fd00::2"), "{}", text(&o));
    let o = l.exec("host-b", &["bridge", "fdb", "show", "dev", "vxlan3080"]);
    assert!(stdout(&o).contains("dst fd00::1") && stdout(&o).contains("dst fd00::3"), "{}", text(&o));

    // A leftover IPv4 VXLAN link in host-b's br-web (by hand, not vxrouter's):
    // br-web's floods leave host-b over IPv4 too, and its cell says so.
    let o = l.sh(
        "host-b",
        "ip link add vx4 type vxlan id 3070 group 239.0.4.99 dev eth0 dstport 4789 && ip link set vx4 master br-web up",
    );
    assert!(o.status.success(), "{}", text(&o));
    let (ok, checks) = l.check();
    assert!(!ok);
    let c = cell(&checks, "underlay-family", "host-b", "underlay");
    assert_eq!(c["ok"], false, "{c}");
    assert!(detail(c).contains("over IPv4"), "{c}");
    assert_eq!(cell(&checks, "underlay-family", "host-a", "underlay")["ok"], true);
    let o = l.lab(&["down", "-q"]);
    assert!(o.status.success(), "{}", text(&o));
}
