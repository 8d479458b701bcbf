//! Issue 7 item 3: DHCP and DNS for VMs, served by a dnsmasq that vxrouter
//! runs and supervises inside the router namespace. Run by scripts/test.sh
//! (root, sandbox).

mod common;

use common::*;

/// The seed lab with DHCP and DNS on host-a's private leg and a DHCP VM on
/// host-b (vm-a and vm-b keep their static addresses).
fn dhcp_lab(name: &str) -> TestLab {
    let a = seed_profile("host-a").replace(
        "veth = [\"veth17.0\", \"veth17.1\"]  # optional, as above",
        "veth = [\"veth17.0\", \"veth17.1\"]\ndhcp = { range = \"192.168.10.100-192.168.10.150\", lease = \"1h\" }\ndns = true",
    );
    let lab = seed_lab(name, "host-a.toml", "host-b.toml")
        + "\n[[vm]]\nname = \"vm-d\"\nhost = \"host-b\"\nbridge = \"br-pr\"\ndhcp = true\n";
    TestLab::new(name, &lab, &[("host-a.toml", &a), ("host-b.toml", &seed_profile("host-b"))])
}

/// A process that runs (a zombie waiting for its reaper does not).
fn runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
}

fn dnsmasq_pid(l: &TestLab) -> Option<String> {
    let o = l.exec("host-a", &["sh", "-c", "cat /run/vxrouter/dnsmasq/host-a/ns1@veth17.1.pid 2>/dev/null"]);
    let pid = stdout(&o).trim().to_string();
    (!pid.is_empty() && runs(&pid)).then_some(pid)
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_vm_without_an_address_leases_one_and_passes_the_matrix() {
    let l = dhcp_lab("dhcp-lease");
    l.up();
    let (ok, checks) = l.check();
    assert!(ok, "{checks:#?}");
    let lease = checks.iter().find(|c| c["check"] == "dhcp" && c["from"] == "vm-d").expect("a dhcp cell");
    assert_eq!(lease["ok"], true, "{lease}");
    let detail = lease["detail"].as_str().unwrap();
    assert!(detail.starts_with("192.168.10.1") && detail.contains("via 192.168.10.3, mtu 1450"), "{detail}");
    // vm-d itself passes the matrix: pings, egress through the router.
    assert!(checks.iter().filter(|c| c["from"] == "vm-d").all(|c| c["ok"] == true));
    assert!(checks.iter().any(|c| c["from"] == "vm-d" && c["check"] == "egress-source"));
    // DNS on the gateway: another VM of the segment resolves vm-d's name.
    let o = l.exec("vm-a", &["busybox", "nslookup", "vm-d", "192.168.10.3"]);
    let addr = detail.split('/').next().unwrap();
    assert!(stdout(&o).contains(addr), "vm-d's name should resolve to {addr}: {}", text(&o));
    // The firewall lets DHCP and DNS in on the private leg only.
    let rules = owned_rules(&l, "host-a", Some("ns1"));
    assert!(
        rules.contains("iifname \"veth17.1\" udp dport 67 accept") && rules.contains("iifname \"veth17.1\" tcp dport 53 accept"),
        "{rules}"
    );
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn dnsmasq_is_supervised_restarted_only_on_change_and_stopped_by_destroy() {
    let l = dhcp_lab("dhcp-supervise");
    l.up();
    let p = l.path("host-a.toml");
    let first = dnsmasq_pid(&l).expect("dnsmasq runs after apply");
    // `status` names the daemon with the pid of its pid file.
    let o = l.vx("host-a", &["status", "--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(doc["hosts"][0]["router"]["daemons"], serde_json::json!([format!("dnsmasq pid {first} on veth17.1")]), "{doc}");
    // A second apply leaves it alone.
    let o = l.vx("host-a", &["apply", &p]);
    assert!(stdout(&o).contains("nothing to do"), "{}", text(&o));
    assert_eq!(dnsmasq_pid(&l).as_deref(), Some(first.as_str()));
    // Dead: check says so, apply starts it again.
    assert!(l.exec("host-a", &["kill", &first]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let o = l.vx("host-a", &["check", &p]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stdout(&o).contains("missing: dhcp/dns server on veth17.1 in ns1"), "{}", text(&o));
    assert!(l.vx("host-a", &["apply", &p]).status.success());
    let second = dnsmasq_pid(&l).expect("restarted");
    assert_ne!(first, second);
    // A config change (lease time) restarts it with the new config.
    let longer = std::fs::read_to_string(&p).unwrap().replace("lease = \"1h\"", "lease = \"2h\"");
    l.write("host-a.toml", &longer);
    let o = l.vx("host-a", &["apply", &p]);
    assert!(stdout(&o).contains("change dhcp/dns server on veth17.1 in ns1: config changed: restart"), "{}", text(&o));
    let third = dnsmasq_pid(&l).expect("running after the change");
    assert_ne!(second, third);
    let conf = stdout(&l.exec("host-a", &["cat", "/run/vxrouter/dnsmasq/host-a/ns1@veth17.1.conf"]));
    assert!(conf.contains(",2h\n"), "{conf}");
    // Destroy stops it and removes its files (VMs detached first).
    let _ = l.exec("host-a", &["ip", "link", "del", "vnet0"]);
    let o = l.vx("host-a", &["destroy", &p]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!runs(&third), "dnsmasq still runs after destroy");
    let left = stdout(&l.exec("host-a", &["sh", "-c", "ls -A /run/vxrouter 2>/dev/null"]));
    assert!(left.trim().is_empty(), "{left}");
}
