//! BGP EVPN with FRR (issue 16): profiles/lab/evpn.toml — two underlay
//! subnets joined by a router, multicast dropped, two reflectors and two
//! plain hypervisors, each with its own FRR. Proven by FRR's and the
//! kernel's state, not only by ping (ping works by flooding before EVPN
//! knows a MAC): remote MACs as extern_learn FDB entries pointing at the
//! right VTEP, complete flood lists, `vxrouter check` (sessions, VNIs,
//! expected clients); a foreign FRR stanza survives apply and destroy; a
//! host whose FRR stops, or that is cut off the underlay, leaves every
//! flood list; one that comes back with only its own profile is in every
//! flood list again. Timings are printed (docs/performance.md); held to
//! the goals: a host whose FRR stops out of every flood list within
//! 1 s, a host cut off the underlay within the hold time (9 s) + 1.5 s; a
//! joining host in every flood list within 30 s of its apply (the goal is
//! 5 s: not met in every run, see below). Run by scripts/test.sh (root,
//! sandbox).

mod common;

use std::time::{Duration, Instant};

use common::*;

const HOSTS: [(&str, &str); 4] = [("rr-a", "10.0.1.10"), ("rr-b", "10.0.2.10"), ("host-c", "10.0.1.11"), ("host-d", "10.0.2.11")];

fn evpn_lab(name: &str) -> TestLab {
    let profile = |h: &str| std::fs::read_to_string(repo().join(format!("profiles/evpn/{h}.toml"))).unwrap();
    let lab = std::fs::read_to_string(repo().join("profiles/lab/evpn.toml"))
        .unwrap()
        .replace("name = \"evpn\"", &format!("name = \"{name}\""))
        .replace("../evpn/", "");
    let files: Vec<(String, String)> = HOSTS.iter().map(|(h, _)| (format!("{h}.toml"), profile(h))).collect();
    let refs: Vec<(&str, &str)> = files.iter().map(|(f, t)| (f.as_str(), t.as_str())).collect();
    TestLab::new(name, &lab, &refs)
}

/// VTEPs in a host's flood list of one VXLAN link (all-zero FDB entries).
fn flood(l: &TestLab, host: &str, vxlan: &str) -> Vec<String> {
    let o = l.exec(host, &["bridge", "fdb", "show", "dev", vxlan]);
    let mut v: Vec<String> = stdout(&o)
        .lines()
        .filter(|x| x.starts_with("00:00:00:00:00:00"))
        .filter_map(|x| x.split_whitespace().skip_while(|w| *w != "dst").nth(1).map(str::to_string))
        .collect();
    v.sort();
    v
}

/// extern_learn entries: (MAC, VTEP).
fn remote_macs(l: &TestLab, host: &str, vxlan: &str) -> Vec<(String, String)> {
    let o = l.exec(host, &["bridge", "fdb", "show", "dev", vxlan]);
    stdout(&o)
        .lines()
        .filter(|x| x.contains("extern_learn") && x.contains(" dst ") && !x.starts_with("00:00:00:00:00:00"))
        .filter_map(|x| {
            let w: Vec<&str> = x.split_whitespace().collect();
            let dst = w.iter().position(|t| *t == "dst").map(|i| w[i + 1].to_string())?;
            Some((w[0].to_string(), dst))
        })
        .collect()
}

/// A VM's MAC (its eth0), from netlink: /sys in a lab node is the
/// sandbox's sysfs, not the node's network namespace.
fn vm_mac(l: &TestLab, vm: &str) -> String {
    let o = l.exec(vm, &["ip", "-o", "link", "show", "eth0"]);
    let out = stdout(&o);
    let w: Vec<&str> = out.split_whitespace().collect();
    let mac = w.iter().position(|t| *t == "link/ether").map(|i| w[i + 1].to_string());
    mac.unwrap_or_else(|| panic!("{vm}: no MAC for eth0: {}", text(&o)))
}

/// Polls `ok` until it holds; fails when that takes longer than `limit`
/// (also when the last, successful look itself ended past it).
fn wait_for(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t.elapsed();
    assert!(took <= limit, "{what}: only after {took:?} (limit {limit:?})");
    took
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn evpn_over_a_routed_underlay() {
    let l = evpn_lab("evpn-t");
    l.up();
    // Sessions come up within seconds; check reports until then.
    wait_for("every host's check passes (sessions, VNIs, expected clients)", Duration::from_secs(30), || {
        HOSTS.iter().all(|(h, _)| l.vx(h, &["check", &l.path(&format!("{h}.toml"))]).status.success())
    });
    l.assert_matrix_passes();

    // Control plane: flood lists complete, every other host's VMs as
    // extern_learn entries at that host's VTEP (the matrix made them speak).
    for (h, me) in HOSTS {
        for vx in ["vxlan3070", "vxlan3080"] {
            let mut others: Vec<String> = HOSTS.iter().filter(|(_, a)| *a != me).map(|(_, a)| a.to_string()).collect();
            others.sort();
            assert_eq!(flood(&l, h, vx), others, "{h} {vx} flood list");
        }
        let macs = remote_macs(&l, h, "vxlan3070");
        for (other, vtep) in HOSTS.iter().filter(|(o, _)| *o != h) {
            let mac = vm_mac(&l, &format!("web-{other}"));
            assert!(macs.contains(&(mac.clone(), vtep.to_string())), "{h}: web-{other} ({mac}) not at {vtep}: {macs:?}");
        }
    }
    // Sessions: a client has one per reflector; a reflector one per other host.
    for (h, _) in HOSTS {
        let o = l.exec(h, &["vtysh", "-c", "show bgp l2vpn evpn summary json"]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let peers = v["peers"].as_object().unwrap();
        let up = peers.values().filter(|p| p["state"] == "Established").count();
        let want = if h.starts_with("rr-") { 3 } else { 2 };
        assert_eq!(up, want, "{h}: {peers:?}");
    }

    // Negative control for check: a reflector's expected client that is
    // not there is reported.
    let rr = l.write(
        "rr-a-more.toml",
        &std::fs::read_to_string(l.path("rr-a.toml")).unwrap().replace("\"10.0.2.10\"]\n", "\"10.0.2.10\", \"10.0.1.99\"]\n"),
    );
    let o = l.vx("rr-a", &["check", &rr]);
    assert!(!o.status.success() && stdout(&o).contains("expected client 10.0.1.99"), "{}", text(&o));

    // A foreign FRR stanza survives apply and destroy.
    let foreign = "route-map OPERATOR-OWN permit 10";
    let o = l.exec("host-c", &["vtysh", "-c", "configure terminal", "-c", foreign]);
    assert!(o.status.success(), "{}", text(&o));
    l.sh("host-c", &format!("printf '{foreign}\\nexit\\n' >> /etc/frr/frr.conf"));
    let with_foreign = |l: &TestLab| {
        stdout(&l.exec("host-c", &["vtysh", "-c", "show running-config"])).contains(foreign)
            && stdout(&l.exec("host-c", &["cat", "/etc/frr/frr.conf"])).contains(foreign)
    };
    let p = l.path("host-c.toml");
    let o = l.vx("host-c", &["apply", &p]);
    assert!(o.status.success() && with_foreign(&l), "{}", text(&o));

    // Leave: host-c's FRR stops; it leaves every flood list.
    let run = stdout(&l.exec("host-c", &["vtysh", "-c", "show running-config"]));
    assert!(run.contains("router bgp 65000"), "before destroy (positive control): no BGP instance:\n{run}");
    let o = l.vx("host-c", &["destroy", &p]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(with_foreign(&l), "the operator's stanza went with destroy");
    let run = stdout(&l.exec("host-c", &["vtysh", "-c", "show running-config"]));
    assert!(!run.contains("router bgp"), "destroy left the BGP instance:\n{run}");
    assert!(!stdout(&l.exec("host-c", &["cat", "/etc/frr/frr.conf"])).contains("vxrouter:host-c"));
    let gone = wait_for("host-c leaves the flood lists", Duration::from_secs(15), || {
        ["rr-a", "rr-b", "host-d"].iter().all(|h| !flood(&l, h, "vxlan3070").contains(&"10.0.1.11".to_string()))
    });
    eprintln!("measured: host-c gone from every flood list {gone:?} after its destroy");

    // Join with only its own profile: nothing else changes.
    let t = Instant::now();
    let o = l.vx("host-c", &["apply", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let applied = t.elapsed();
    // The goal is 5 s; most runs take 1.3-4 s, one run on a loaded
    // machine took 21 s (docs/performance.md), so the limit here is 30 s
    // and a run past the goal prints what FRR says about the sessions.
    let back = wait_for("host-c in every flood list again", Duration::from_secs(30), || {
        ["rr-a", "rr-b", "host-d"].iter().all(|h| flood(&l, h, "vxlan3070").contains(&"10.0.1.11".to_string()))
    });
    eprintln!("measured: apply took {applied:?}; flood entries everywhere {back:?} after it (goal 5 s)");
    if back > Duration::from_secs(5) {
        for (h, cmd) in [("host-c", "show bgp neighbors json"), ("rr-a", "show bgp l2vpn evpn summary")] {
            eprintln!("{h}: {cmd}:\n{}", stdout(&l.exec(h, &["vtysh", "-c", cmd])));
        }
    }
    // Positive control for the failures below: the rejoined host and its
    // reflector are healthy again.
    wait_for("host-c's and rr-a's checks pass again", Duration::from_secs(30), || {
        l.vx("host-c", &["check", &p]).status.success() && l.vx("rr-a", &["check", &l.path("rr-a.toml")]).status.success()
    });

    // A host cut off the underlay cannot say goodbye: the reflectors notice
    // when the hold time runs out (9 s, the profile default: `timers bgp 3
    // 9`) and withdraw its routes. host-d's cable is pulled at the switch
    // (the fabric's end of it goes down, as in the HA lab's failover): its
    // configuration stays, nothing it could send gets out. The goal is the
    // hold time plus 1.5 s for the withdrawal to reach every host and for
    // this loop to see it (each look is three `bridge` runs): a run with
    // FRR's `traditional` 180 s hold time fails it.
    const HOLD: Duration = Duration::from_secs(9);
    let d_vtep = "10.0.2.11".to_string();
    let in_lists = |l: &TestLab, hosts: &[&str]| hosts.iter().filter(|h| flood(l, h, "vxlan3070").contains(&d_vtep)).count();
    assert_eq!(
        in_lists(&l, &["rr-a", "rr-b", "host-c"]),
        3,
        "before the cut (positive control): host-d missing from a flood list"
    );
    let timers = stdout(&l.exec("host-d", &["vtysh", "-c", "show running-config"]));
    assert!(timers.contains("timers bgp 3 9"), "host-d's FRR does not run the profile's 3/9 timers:\n{timers}");
    let cable = "u3"; // host-d is the lab's fourth host
    let t = Instant::now();
    let o = l.exec("fabric", &["ip", "link", "set", cable, "down"]);
    assert!(o.status.success(), "{}", text(&o));
    let mut still = 3;
    while still > 0 && t.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
        still = in_lists(&l, &["rr-a", "rr-b", "host-c"]);
    }
    let cut = t.elapsed();
    eprintln!("measured: host-d (cut off the underlay) gone from every flood list {cut:?} after the cut (hold time {HOLD:?})");
    assert_eq!(still, 0, "host-d still in {still} flood list(s) 60 s after the cut");
    assert!(
        cut <= HOLD + Duration::from_millis(1500),
        "host-d (cut off) left the flood lists only {cut:?} after the cut: beyond the hold time {HOLD:?} + 1.5 s"
    );
    wait_for("rr-a's check reports host-d missing", Duration::from_secs(30), || {
        let o = l.vx("rr-a", &["check", &l.path("rr-a.toml")]);
        !o.status.success() && stdout(&o).contains("expected client 10.0.2.11")
    });
    // The cable plugged back: host-d's configuration was never touched.
    let o = l.exec("fabric", &["ip", "link", "set", cable, "up"]);
    assert!(o.status.success(), "{}", text(&o));
    let back =
        wait_for("host-d back in every flood list", Duration::from_secs(60), || in_lists(&l, &["rr-a", "rr-b", "host-c"]) == 3);
    eprintln!("measured: host-d back in every flood list {back:?} after its cable came back");
    wait_for("rr-a's check passes again", Duration::from_secs(30), || {
        l.vx("rr-a", &["check", &l.path("rr-a.toml")]).status.success()
    });

    // FRR itself stops (systemctl stop): gone from every flood list.
    let o = l.sh("host-c", "kill $(cat /run/frr/bgpd.pid) $(cat /run/frr/zebra.pid)");
    assert!(o.status.success(), "{}", text(&o));
    let gone = wait_for("host-c (FRR stopped) leaves the flood lists (goal: 1 s)", Duration::from_secs(1), || {
        ["rr-a", "rr-b", "host-d"].iter().all(|h| !flood(&l, h, "vxlan3070").contains(&"10.0.1.11".to_string()))
    });
    eprintln!("measured: host-c gone {gone:?} after its FRR was stopped");
    let o = l.vx("host-c", &["check", &p]);
    assert!(!o.status.success() && text(&o).contains("bgpd is not running"), "check must fail when FRR is down: {}", text(&o));
    // The reflector reports the expected client that went away.
    wait_for("rr-a's check reports host-c missing", Duration::from_secs(30), || {
        let o = l.vx("rr-a", &["check", &l.path("rr-a.toml")]);
        !o.status.success() && stdout(&o).contains("expected client 10.0.1.11")
    });
    l.lab(&["down", "-q"]);
}
