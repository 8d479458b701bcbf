//! Issue 2: the seed topology built for real by `vxrouter apply` inside two
//! simulated hosts; idempotence, drift, destroy, foreign objects, bad input.
//! Run by scripts/test.sh (root, inside a sandbox namespace).

mod common;

use common::*;

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn seed_topology_works_and_second_apply_changes_nothing_iptables() {
    seed_topology("iptables");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn seed_topology_works_and_second_apply_changes_nothing_nftables() {
    seed_topology("nftables");
}

fn seed_topology(backend: &str) {
    let l = TestLab::seed_with(&format!("core-seed-{backend}"), backend);
    l.up();
    // VM-B pings VM-A across VXLAN, both reach the server with the router's
    // public address as source (captured at the server), inbound blocked.
    let (ok, checks) = l.check();
    let find = |check: &str, from: &str, to: &str| {
        checks
            .iter()
            .find(|c| c["check"] == check && c["from"] == from && c["to"] == to)
            .unwrap_or_else(|| panic!("no {check} {from}->{to}: {checks:#?}"))
    };
    assert!(ok, "{checks:#?}");
    assert_eq!(find("ping", "vm-b", "vm-a")["ok"], true);
    for vm in ["vm-a", "vm-b"] {
        let c = find("egress-source", vm, "internet");
        assert_eq!(c["ok"], true);
        assert_eq!(c["detail"], "203.0.113.123");
    }

    // The kernel objects are what the seed meant (and not its mistakes).
    let o = l.exec("host-a", &["ip", "-d", "-j", "link", "show", "vxlan1070"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let info = &v[0]["linkinfo"]["info_data"];
    assert_eq!(
        (info["id"].as_u64(), info["group"].as_str(), info["port"].as_u64()),
        (Some(1070), Some("239.0.4.46"), Some(4789))
    );
    assert_eq!(v[0]["mtu"], 1450);
    assert_eq!(v[0]["master"], "br-pr");
    let master = |link: &str| {
        let o = l.exec("host-a", &["ip", "-j", "link", "show", link]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v[0]["master"].as_str().unwrap_or("").to_string()
    };
    assert_eq!(master("veth15.0"), "br-pu");
    assert_eq!(master("veth17.0"), "br-pr");
    assert_eq!(master("eth1"), "br-pu");
    let fwd = l.exec("host-a", &["ip", "netns", "exec", "ns1", "cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(stdout(&fwd).trim(), "1");
    let host_fwd = l.exec("host-a", &["cat", "/proc/sys/net/ipv4/ip_forward"]);
    assert_eq!(stdout(&host_fwd).trim(), "0", "forwarding must stay off on the host");
    let route = l.exec("host-a", &["ip", "netns", "exec", "ns1", "ip", "route", "show", "default"]);
    assert!(stdout(&route).contains("via 203.0.113.1 dev veth15.1"), "{}", text(&route));
    // Source NAT on the public leg that exists, through the chosen backend.
    let rules = owned_rules(&l, "host-a", Some("ns1"));
    match backend {
        "iptables" => {
            assert!(
                rules.contains("-A VXROUTER-POST -s 192.168.10.0/24 -o veth15.1 -j SNAT --to-source 203.0.113.123"),
                "{rules}"
            );
            assert!(!rules.contains("table ip vxrouter"), "{rules}");
        }
        _ => {
            assert!(rules.contains("ip saddr 192.168.10.0/24 oifname \"veth15.1\" snat to 203.0.113.123"), "{rules}");
            assert!(!rules.contains("VXROUTER-"), "{rules}");
        }
    }

    // A second apply on each host changes nothing: same objects, same
    // ifindexes, same MACs, same rules.
    for host in ["host-a", "host-b"] {
        let before = l.snapshot(host);
        let o = l.vx(host, &["apply", &l.path(&format!("{host}.toml"))]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(stdout(&o).contains("nothing to do"), "{}", text(&o));
        assert_eq!(before, l.snapshot(host), "second apply changed {host}");
        let o = l.vx(host, &["check", &l.path(&format!("{host}.toml"))]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn check_reports_a_deleted_veth_and_apply_repairs_only_it() {
    let l = TestLab::seed("core-drift");
    l.up();
    let profile = l.path("host-a.toml");
    let before = ifindexes(&l, "host-a");
    let o = l.exec("host-a", &["ip", "link", "del", "veth17.0"]);
    assert!(o.status.success());

    let o = l.vx("host-a", &["check", &profile]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stdout(&o).contains("missing: veth veth17.0"), "{}", text(&o));
    let o = l.vx("host-a", &["check", "--json", &profile]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["matches"], false);

    let o = l.vx("host-a", &["plan", &profile]);
    assert!(stdout(&o).contains("create veth veth17.0"), "{}", text(&o));
    let o = l.vx("host-a", &["plan", "--json", &profile]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let changes = v["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["verb"] == "create" && c["object"] == "veth veth17.0"), "{v:#}");
    let o = l.vx("host-a", &["apply", &profile]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.vx("host-a", &["check", &profile]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Everything else kept its ifindex.
    let after = ifindexes(&l, "host-a");
    for (name, idx) in &before {
        if name != "veth17.0" {
            assert!(after.contains(&(name.clone(), *idx)), "{name} changed: {before:?} -> {after:?}");
        }
    }
    l.assert_matrix_passes();
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn destroy_removes_only_what_apply_created() {
    let l = TestLab::seed("core-destroy");
    l.up_bare();
    // Foreign objects, made before vxrouter runs: a bridge, a namespace and
    // iptables rules on the host, also in the chain vxrouter hooks into.
    let foreign = "ip link add br-foreign type bridge && ip link set br-foreign up \
                   && ip netns add foreign-ns \
                   && iptables -A FORWARD -s 10.9.0.0/16 -j ACCEPT \
                   && iptables -t nat -A POSTROUTING -s 10.9.0.0/16 -j MASQUERADE";
    let o = l.sh("host-a", foreign);
    assert!(o.status.success(), "{}", text(&o));
    let foreign =
        || link_json(&l, "host-a", "br-foreign") + &stdout(&l.sh("host-a", "ip netns list; iptables-save | grep -v '^#'"));
    let foreign_before = foreign();

    for host in ["host-a", "host-b"] {
        let o = l.vx(host, &["apply", &l.path(&format!("{host}.toml"))]);
        assert!(o.status.success(), "{}", text(&o));
    }
    // The VMs come after the bridges exist, like libvirt's taps.
    let o = l.lab(&["up", "-q", "--no-apply"]);
    assert!(o.status.success(), "{}", text(&o));
    l.assert_matrix_passes();

    // With a VM tap still in br-pr, destroy keeps that bridge and says why.
    let o = l.vx("host-b", &["destroy", &l.path("host-b.toml")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(stdout(&o).contains("kept bridge br-pr") && stdout(&o).contains("vnet0"), "{}", text(&o));
    assert!(links(&l, "host-b", None).contains(&"vnet0".to_string()), "destroy must never delete a VM tap");
    // Once the VMs are gone, destroy finishes the job.
    for host in ["host-a", "host-b"] {
        let o = l.exec(host, &["ip", "link", "del", "vnet0"]);
        assert!(o.status.success());
        let o = l.vx(host, &["destroy", &l.path(&format!("{host}.toml"))]);
        assert!(o.status.success(), "{}", text(&o));
        let o = l.vx(host, &["destroy", &l.path(&format!("{host}.toml"))]);
        assert!(o.status.success() && stdout(&o).contains("nothing to remove"), "destroy twice: {}", text(&o));
    }
    assert_eq!(links(&l, "host-b", None), ["eth0", "lo"]);
    assert_eq!(links(&l, "host-a", None), ["br-foreign", "eth0", "eth1", "lo"]);
    let netns = stdout(&l.exec("host-a", &["ip", "netns", "list"]));
    assert_eq!(netns.trim(), "foreign-ns", "only the foreign namespace may remain");
    let rules = owned_rules(&l, "host-a", None);
    assert!(rules.is_empty(), "{rules}");
    assert_eq!(foreign_before, foreign(), "foreign objects changed");
    // No state or lock file is left behind.
    let o = l.sh("host-a", "ls -A /run/vxrouter 2>/dev/null | wc -l");
    assert_eq!(stdout(&o).trim(), "0");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn bad_profiles_and_conflicts_change_nothing() {
    let l = TestLab::seed("core-bad");
    l.up_bare();
    // A link with a name the profile wants, not created by vxrouter.
    let o = l.sh("host-a", "ip link add veth17.0 type veth peer name other0");
    assert!(o.status.success());
    let before = l.snapshot("host-a");

    let good = seed_profile("host-a");
    let cases = [
        ("conflict", good.clone(), "veth veth17.0 exists but is not owned by vxrouter"),
        ("vni", good.replace("vni = 1070", "vni = 0"), "segment[0].vni: VNI 0 is out of range"),
        ("group", good.replace("239.0.4.46", "224.0.0.5"), "reserved for link-local"),
        (
            "swap",
            good.replace("bridge = \"br-pr\"                 # must", "bridge = \"br-pu\"                 # must"),
            "not a segment bridge",
        ),
        ("syntax", good.replace("[router]", "[router"), "host-a-syntax.toml:"),
        ("missing-uplink", good.replace("uplink = \"eth1\"", "uplink = \"eth9\""), "uplink eth9 does not exist"),
    ];
    for (name, text_, expect) in cases {
        let file = l.write(&format!("host-a-{name}.toml"), &text_);
        let o = l.vx("host-a", &["apply", &file]);
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        assert!(text(&o).contains(expect), "{name}: expected {expect:?} in:\n{}", text(&o));
        assert_eq!(before, l.snapshot("host-a"), "{name} changed the host");
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn switching_firewall_backends_on_a_live_host_converges() {
    let l = TestLab::seed_with("core-switch", "iptables");
    l.up();
    l.assert_matrix_passes();
    for (to, present, absent) in
        [("nftables", "table ip vxrouter", "VXROUTER-"), ("iptables", "VXROUTER-POST", "table ip vxrouter")]
    {
        let p = l.write("host-a.toml", &with_firewall(&seed_profile("host-a"), to));
        let o = l.vx("host-a", &["apply", &p]);
        assert!(o.status.success(), "to {to}: {}", text(&o));
        assert!(stdout(&o).contains(&format!("({to})")), "the plan names the backend: {}", text(&o));
        let o = l.vx("host-a", &["check", &p]);
        assert_eq!(o.status.code(), Some(0), "to {to}: {}", text(&o));
        let rules = owned_rules(&l, "host-a", Some("ns1"));
        assert!(rules.contains(present) && !rules.contains(absent), "to {to}: {rules}");
        l.assert_matrix_passes();
    }
}
