//! Issue 12, item 1: no silent lockout. An uplink that carries the host's
//! own addresses and routes is refused, or (`uplink_addresses = "move"`)
//! they move to the public bridge in the same transaction and back when it
//! goes. Run by scripts/test.sh (root, sandbox, built with `fault-injection`).

mod common;

use serde_json::Value;

use common::*;

/// The host's own address on its uplink, and a route through it (with a
/// metric, which must survive the moves).
const SETUP: &str = "ip addr add 203.0.113.50/24 dev eth1 && ip route add 198.51.100.0/24 via 203.0.113.1 dev eth1 metric 7";

/// The seed lab, host-a's uplink eth1 carrying the host's address and route.
fn lab(name: &str) -> TestLab {
    let l = TestLab::seed(name);
    l.up_bare();
    let o = l.sh("host-a", SETUP);
    assert!(o.status.success(), "{}", text(&o));
    l
}

fn moving(l: &TestLab) -> String {
    l.write(
        "host-a-move.toml",
        &seed_profile("host-a").replace("uplink = \"eth1\"", "uplink_addresses = \"move\"\nuplink = \"eth1\""),
    )
}

fn snapshot(l: &TestLab) -> String {
    l.snapshot_without_port_numbers("host-a")
}

/// The IPv4 addresses of a link, "A/P" each.
fn addrs(l: &TestLab, dev: &str) -> Vec<String> {
    let o = l.exec("host-a", &["ip", "-4", "-j", "addr", "show", "dev", dev]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .flat_map(|x| x["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

fn route(l: &TestLab) -> String {
    stdout(&l.exec("host-a", &["ip", "route", "show", "198.51.100.0/24"])).trim().to_string()
}

/// The host itself (not the router namespace) reaches the lab's internet
/// gateway and, through the route, the server behind it.
fn host_reaches_upstream(l: &TestLab) -> bool {
    l.sh("host-a", "ping -c1 -W2 203.0.113.1 >/dev/null && ping -c1 -W2 198.51.100.10 >/dev/null").status.success()
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn an_uplink_with_host_addresses_is_refused_and_nothing_changes() {
    let l = lab("lockout-refuse");
    assert!(host_reaches_upstream(&l), "the setup itself works");
    let p = l.path("host-a.toml");
    let before = l.snapshot("host-a");
    for cmd in ["plan", "check", "apply"] {
        let o = l.vx("host-a", &[cmd, &p]);
        assert_eq!(o.status.code(), Some(1), "{cmd}: {}", text(&o));
        let t = text(&o);
        for part in [
            "uplink eth1 carries this host's own address 203.0.113.50/24",
            "route 198.51.100.0/24 via 203.0.113.1 metric 7",
            "would hang",
            "uplink_addresses = \"move\"",
            "nothing was changed",
        ] {
            assert!(t.contains(part), "{cmd}: no {part:?} in: {t}");
        }
        assert_same(&before, &l.snapshot("host-a"), &format!("a refused {cmd} changed the host"));
    }
    assert!(host_reaches_upstream(&l));
    // A bad value is a profile error with its location.
    let bad = l.write(
        "bad.toml",
        &seed_profile("host-a").replace("uplink = \"eth1\"", "uplink_addresses = \"keep\"\nuplink = \"eth1\""),
    );
    let o = l.vx("host-a", &["validate", &bad]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("router.public.uplink_addresses: \"keep\" is not one of \"refuse\", \"move\""), "{}", text(&o));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn move_takes_addresses_and_routes_to_the_bridge_and_destroy_brings_them_back() {
    let l = lab("lockout-move");
    let p = moving(&l);
    let before = snapshot(&l);
    let o = l.vx("host-a", &["plan", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let t = stdout(&o);
    assert!(t.contains("change host address 203.0.113.50/24 on eth1: move to br-pu"), "{t}");
    assert!(t.contains("change host route 198.51.100.0/24 via 203.0.113.1 metric 7 dev eth1: move to br-pu"), "{t}");
    assert!(t.contains("--confirm"), "the plan suggests a timed confirm: {t}");

    let o = l.vx("host-a", &["apply", &p]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(addrs(&l, "br-pu"), vec!["203.0.113.50/24"]);
    assert!(addrs(&l, "eth1").is_empty(), "{:?}", addrs(&l, "eth1"));
    let r = route(&l);
    assert!(r.contains("via 203.0.113.1 dev br-pu") && r.contains("metric 7"), "{r}");
    assert!(host_reaches_upstream(&l), "the host reaches upstream through br-pu");
    let o = l.vx("host-a", &["check", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = l.vx("host-a", &["apply", &p]);
    assert!(o.status.success() && stdout(&o).contains("nothing to do"), "{}", text(&o));

    let o = l.vx("host-a", &["destroy", &p]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(addrs(&l, "eth1"), vec!["203.0.113.50/24"]);
    assert!(route(&l).contains("via 203.0.113.1 dev eth1") && route(&l).contains("metric 7"), "{}", route(&l));
    assert!(!links(&l, "host-a", None).contains(&"br-pu".to_string()));
    assert!(host_reaches_upstream(&l), "the host reaches upstream through eth1 again");
    assert_same(&before, &snapshot(&l), "destroy did not put the host back as it was");

    // Without the profile, and by removing the router from the profile.
    for how in ["--host", "no router"] {
        let o = l.vx("host-a", &["apply", "-q", &p]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(addrs(&l, "br-pu"), vec!["203.0.113.50/24"]);
        let o = if how == "--host" {
            l.vx("host-a", &["destroy", "--host", "host-a"])
        } else {
            let text = seed_profile("host-a");
            let cut = text.find("[router]").unwrap();
            let no_router = l.write("host-a-no-router.toml", &text[..cut]);
            l.vx("host-a", &["apply", "--take-over", &no_router])
        };
        assert!(o.status.success(), "{how}: {}", text(&o));
        assert_eq!(addrs(&l, "eth1"), vec!["203.0.113.50/24"], "{how}");
        assert!(route(&l).contains("dev eth1") && route(&l).contains("metric 7"), "{how}: {}", route(&l));
        assert!(host_reaches_upstream(&l), "{how}");
        let o = l.vx("host-a", &["destroy", "--host", "host-a"]);
        assert!(o.status.success(), "{how}: {}", text(&o));
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_failure_at_any_step_of_a_move_puts_the_addresses_back_on_the_uplink() {
    let l = lab("lockout-fault");
    let p = moving(&l);
    let before = snapshot(&l);
    let o = l.vx("host-a", &["plan", "--json", &p]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let actions: Vec<String> =
        v["changes"].as_array().unwrap().iter().map(|c| c["action"].as_str().unwrap_or("").to_string()).collect();
    let last_move = actions.iter().rposition(|a| a.starts_with("move_")).expect("move steps");
    assert!(last_move + 1 < actions.len(), "steps after the moves: {actions:?}");
    for n in 1..=actions.len() {
        let o = l.exec("host-a", &["env", &format!("VXROUTER_FAULT_STEP={n}"), vx(), "apply", &p]);
        assert_eq!(o.status.code(), Some(1), "step {n}: {}", text(&o));
        assert!(text(&o).contains("rolled back: the host is as it was before this run"), "step {n}: {}", text(&o));
        assert_eq!(addrs(&l, "eth1"), vec!["203.0.113.50/24"], "step {n}");
        assert_same(&before, &snapshot(&l), &format!("a failure at step {n} left the host changed"));
    }
    assert!(host_reaches_upstream(&l));
    // The same for destroy: a failure puts the addresses back on the bridge.
    let o = l.vx("host-a", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.vx("host-a", &["destroy", "--json", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = doc["changes"].as_array().unwrap().len();
    let o = l.vx("host-a", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let applied = snapshot(&l);
    for step in 1..=n {
        let o = l.exec("host-a", &["env", &format!("VXROUTER_FAULT_STEP={step}"), vx(), "destroy", &p]);
        assert_eq!(o.status.code(), Some(1), "destroy step {step}: {}", text(&o));
        assert_same(&applied, &snapshot(&l), &format!("a failure at destroy step {step} left the host changed"));
    }
    assert!(host_reaches_upstream(&l));
}
