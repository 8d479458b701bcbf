//! Issue 5: router security and egress, proven with lab traffic: inbound
//! isolation, port forwards, NAT modes, segment-to-segment policy, unicast
//! VXLAN without multicast, underlay protection, preflight warnings.
//! Run by scripts/test.sh (root, sandbox).

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn shipped_lab(name: &str, lab: &str) -> TestLab {
    shipped_lab_with(name, lab, None)
}

/// A shipped lab under another name; with a backend, its hosts' profiles
/// are copied with that firewall backend chosen.
fn shipped_lab_with(name: &str, lab: &str, backend: Option<&str>) -> TestLab {
    let dir = repo().join("profiles");
    let text = std::fs::read_to_string(dir.join("lab").join(lab)).unwrap();
    let renamed = text.replacen(&format!("name = \"{}\"", lab.trim_end_matches(".toml")), &format!("name = \"{name}\""), 1);
    let Some(backend) = backend else {
        // Keep the profile paths pointing at the shipped profiles.
        return TestLab::new(name, &renamed.replace("profile = \"../", &format!("profile = \"{}/", dir.display())), &[]);
    };
    let mut files = Vec::new();
    let mut lab_text = renamed.clone();
    for line in renamed.lines().filter(|l| l.starts_with("profile = \"../")) {
        let rel = line.trim_start_matches("profile = \"../").trim_end_matches('"').to_string();
        let flat = rel.replace('/', "-");
        let profile = std::fs::read_to_string(dir.join(&rel)).unwrap();
        files.push((flat.clone(), with_firewall(&profile, backend)));
        lab_text = lab_text.replace(line, &format!("profile = \"{flat}\""));
    }
    let refs: Vec<(&str, &str)> = files.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    TestLab::new(name, &lab_text, &refs)
}

fn checks_of<'a>(checks: &'a [Value], kind: &str) -> Vec<&'a Value> {
    checks.iter().filter(|c| c["check"] == kind).collect()
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn unicast_lab_without_multicast_passes_the_full_matrix_nftables() {
    unicast_lab("nftables");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn unicast_lab_without_multicast_passes_the_full_matrix_iptables() {
    unicast_lab("iptables");
}

fn unicast_lab(backend: &str) {
    let l = shipped_lab_with(&format!("sec-unicast-{backend}"), "unicast.toml", Some(backend));
    l.up();
    let (ok, checks) = l.check();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(ok, "{failed:#?}");
    // Cross-host traffic on both segments, egress through the one public
    // address, the forwarded port, and routing between the segments (the
    // profile enables it), all with multicast dropped by the switch.
    assert_eq!(checks_of(&checks, "ping").len(), 12);
    assert_eq!(checks_of(&checks, "routed").len(), 18);
    assert_eq!(checks_of(&checks, "forward").len(), 1);
    assert_eq!(checks_of(&checks, "forward")[0]["to"], "web-b");
    assert_eq!(checks_of(&checks, "inbound-blocked").len(), 6, "only the forwarded port is open");
    // The FDB holds one all-zero entry per other host, not one to itself.
    let fdb = stdout(&l.exec("host-b", &["bridge", "fdb", "show", "dev", "vxlan2070"]));
    let zero: Vec<&str> = fdb.lines().filter(|x| x.starts_with("00:00:00:00:00:00")).collect();
    assert_eq!(zero.len(), 2, "{fdb}");
    assert!(zero.iter().any(|x| x.contains("dst 10.0.0.1")) && zero.iter().any(|x| x.contains("dst 10.0.0.3")), "{fdb}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn multicast_segments_fail_when_the_underlay_drops_multicast() {
    // Control for the unicast lab: the switch really drops multicast.
    let text = std::fs::read_to_string(repo().join("profiles/lab/seed.toml"))
        .unwrap()
        .replace("name = \"seed\"", "name = \"sec-nomcast\"")
        .replace("subnet = \"10.0.0.0/24\"", "subnet = \"10.0.0.0/24\"\nmulticast = false")
        .replace("profile = \"../", &format!("profile = \"{}/", repo().join("profiles").display()));
    let l = TestLab::new("sec-nomcast", &text, &[]);
    l.up();
    let (ok, checks) = l.check();
    assert!(!ok);
    let ping = checks.iter().find(|c| c["check"] == "ping" && c["from"] == "vm-b").unwrap();
    assert_eq!(ping["ok"], false, "{ping}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn segments_do_not_route_to_each_other_by_default() {
    let l = shipped_lab("sec-segments", "three-hosts.toml");
    l.up();
    let (ok, checks) = l.check();
    assert!(ok, "{checks:#?}");
    let blocked = checks_of(&checks, "routed-blocked");
    assert_eq!(blocked.len(), 24);
    assert!(blocked.iter().all(|c| c["ok"] == true));
    // Turning it on in the profile opens exactly that, in one apply.
    let on = std::fs::read_to_string(repo().join("profiles/three-hosts/host-a.toml"))
        .unwrap()
        .replace("namespace = \"ns1\"", "namespace = \"ns1\"\nroute_between_segments = true");
    let p = l.write("host-a-routed.toml", &on);
    // Another file for the same host name: the operator says it replaces
    // the shipped one (host-name ownership, tests/recovery.rs).
    let o = l.vx("host-a", &["apply", "-q", "--take-over", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.exec("web-a", &["ping", "-c", "1", "-W", "2", "192.168.20.12"]);
    assert!(o.status.success(), "routed after enabling: {}", text(&o));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn the_router_answers_ping_but_exposes_no_service_nftables() {
    router_exposes_nothing("nftables");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn the_router_answers_ping_but_exposes_no_service_iptables() {
    router_exposes_nothing("iptables");
}

fn router_exposes_nothing(backend: &str) {
    let l = TestLab::seed_with(&format!("sec-router-{backend}"), backend);
    l.up();
    let agent = lab_bin().display().to_string();
    let o = l.exec("attacker", &["ping", "-c", "1", "-W", "2", "203.0.113.123"]);
    assert!(o.status.success(), "the public address answers ping: {}", text(&o));
    // A service listening in the router namespace: reachable inside it
    // (control), not from the public segment.
    let mut listener = Command::new(vx())
        .args(["lab", "exec"])
        .arg(&l.file)
        .args(["host-a", "--", "timeout", "20", "ip", "netns", "exec", "ns1", &agent, "__agent", "listen", "0.0.0.0:7005"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let inside =
        l.exec("host-a", &["ip", "netns", "exec", "ns1", &agent, "__agent", "send", "203.0.113.123:7005", "--timeout", "2"]);
    let outside = l.exec("attacker", &[&agent, "__agent", "send", "203.0.113.123:7005", "--timeout", "2"]);
    let from_vm = l.exec("vm-b", &[&agent, "__agent", "send", "192.168.10.3:7005", "--timeout", "2"]);
    let _ = listener.kill();
    let _ = listener.wait();
    assert!(inside.status.success(), "control: {}", text(&inside));
    assert!(!outside.status.success(), "the router exposed a service to the internet: {}", text(&outside));
    assert!(!from_vm.status.success(), "the router exposed a service to the VMs: {}", text(&from_vm));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn vxlan_injected_from_outside_allow_never_reaches_a_vm() {
    let l = shipped_lab("sec-inject", "unicast.toml");
    l.up();
    let o = l.sh(
        "fabric",
        "ip addr add 10.0.0.200/24 dev underlay && ip addr add 10.0.0.9/24 dev underlay && ip link set underlay up",
    );
    assert!(o.status.success(), "{}", text(&o));
    let agent = lab_bin().display().to_string();
    let inject = |from: &str, sender: &str| {
        let o = l.exec(
            "fabric",
            &[
                &agent,
                "__agent",
                "vxlan-inject",
                "--from",
                from,
                "--to",
                "10.0.0.2:4789",
                "--vni",
                "2070",
                "--sender",
                sender,
                "--target",
                "192.168.10.12",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        std::thread::sleep(std::time::Duration::from_millis(300));
        stdout(&l.exec("web-b", &["ip", "neigh", "show", sender]))
    };
    // Control: from inside `allow` (10.0.0.0/28) the frame reaches web-b,
    // which learns the sender from the ARP request.
    let seen = inject("10.0.0.9", "192.168.10.98");
    assert!(seen.contains("192.168.10.98"), "control failed, the injection never reached web-b: {seen:?}");
    // From outside `allow`, it is dropped at host-b's underlay.
    let seen = inject("10.0.0.200", "192.168.10.99");
    assert!(seen.trim().is_empty(), "a frame from outside allow reached web-b: {seen:?}");
    let rules = owned_rules(&l, "host-b", None);
    assert!(rules.contains("ip saddr 10.0.0.0/28 udp dport 4789 return"), "{rules}");

    // A second NIC on host-b (eth2, 10.9.9.2/24) with the fabric as the
    // attacker behind it, who routes host-b's underlay address through it:
    // Linux accepts packets for 10.0.0.2 on any NIC, and the VXLAN socket
    // listens on every address.
    let dir = format!("/run/vxrouter-lab/{}", l.name);
    let holder = std::fs::read_to_string(format!("{dir}/host-b.pid")).unwrap();
    let fabric = |cmd: &str| {
        let o = Command::new("nsenter").arg(format!("--net={dir}/fabric.net")).args(["sh", "-c", cmd]).output().unwrap();
        assert!(o.status.success(), "{cmd}: {}", text(&o));
    };
    fabric(&format!("ip link add atk2 type veth peer name eth2 netns {}", holder.trim()));
    fabric("ip addr add 10.9.9.1/24 dev atk2 && ip link set atk2 up && ip route add 10.0.0.2/32 dev atk2");
    let o = l.sh("host-b", "ip addr add 10.9.9.2/24 dev eth2 && ip link set eth2 up");
    assert!(o.status.success(), "{}", text(&o));
    // Control: an allowed source through eth2 reaches web-b.
    let seen = inject("10.0.0.9", "192.168.10.96");
    assert!(seen.contains("192.168.10.96"), "control failed, nothing arrived through eth2: {seen:?}");
    let seen = inject("10.9.9.1", "192.168.10.95");
    assert!(seen.trim().is_empty(), "a frame from outside allow reached web-b through host-b's second NIC: {seen:?}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn preflight_warns_about_br_netfilter_with_forward_drop_and_host_forwarding() {
    let l = TestLab::seed("sec-preflight");
    l.up();
    let p = l.path("host-b.toml");
    let o = l.vx("host-b", &["check", &p]);
    assert!(!text(&o).contains("warning"), "no warning on a clean host: {}", text(&o));
    // As Docker leaves a host: bridged traffic through iptables, FORWARD DROP.
    let o = l.sh(
        "host-b",
        "sysctl -qw net.bridge.bridge-nf-call-iptables=1 && iptables -P FORWARD DROP && sysctl -qw net.ipv4.ip_forward=1",
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = l.vx("host-b", &["check", &p]);
    assert_eq!(o.status.code(), Some(0), "warnings are not drift: {}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning: br_netfilter is loaded") && err.contains("FORWARD policy is DROP"), "{err}");
    assert!(err.contains("warning: IP forwarding is enabled on the host"), "{err}");
    // The warning is about a real outage: the VMs lose each other.
    let (ok, checks) = l.check();
    assert!(!ok, "bridged traffic should be dropped: {checks:#?}");
}

/// The EUI-64 link-local address a MAC would get ("fe80::…").
fn link_local_of(mac: &str) -> String {
    let b: Vec<u8> = mac.split(':').map(|x| u8::from_str_radix(x, 16).unwrap()).collect();
    let groups = [
        u16::from_be_bytes([b[0] ^ 2, b[1]]),
        u16::from_be_bytes([b[2], 0xff]),
        u16::from_be_bytes([0xfe, b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
    ];
    format!("fe80::{:x}:{:x}:{:x}:{:x}", groups[0], groups[1], groups[2], groups[3])
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn the_public_side_learns_nothing_of_the_private_gateways_and_no_ipv6() {
    let l = TestLab::seed("sec-public-side");
    l.up();
    let atk = |cmd: &str| l.sh("attacker", cmd);
    // ARP: the public address answers (control), a private gateway does not.
    assert!(atk("arping -c 2 -w 2 -I eth0 203.0.113.123").status.success(), "control: the public address answers ARP");
    let o = atk("arping -c 2 -w 2 -I eth0 192.168.10.3");
    assert!(!o.status.success(), "the public leg answered ARP for the private gateway: {}", text(&o));
    // Routed through the public address, as anyone on the public segment can.
    assert!(atk("ip route add 192.168.10.0/24 via 203.0.113.123").status.success());
    assert!(atk("ping -c 1 -W 2 203.0.113.123").status.success(), "control: the public address answers ping");
    let o = atk("ping -c 2 -W 1 192.168.10.3");
    assert!(!o.status.success(), "the private gateway answered ping from the public side: {}", text(&o));
    // IPv6: whoever answers all-nodes on the public segment, the router does not.
    let mac = stdout(&l.exec("host-a", &["ip", "netns", "exec", "ns1", "cat", "/sys/class/net/veth15.1/address"]));
    let router = link_local_of(mac.trim());
    let o = atk("ping -6 -c 3 -i 0.3 -W 1 ff02::1%eth0; ip -6 neigh show dev eth0");
    let seen = stdout(&o);
    assert!(seen.contains("fe80::"), "control: something on the public segment answers IPv6 all-nodes: {seen}");
    assert!(!seen.contains(&router), "the router ({router}) answered IPv6 on the public segment: {seen}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn the_lab_public_side_cell_catches_arp_ping_and_ipv6_leaks() {
    let l = TestLab::seed("sec-public-cell");
    l.up();
    let (ok, checks) = l.check();
    assert!(ok, "{checks:#?}");
    let cell = |checks: &[serde_json::Value]| {
        checks
            .iter()
            .find(|c| c["check"] == "public-side" && c["to"] == "host-a")
            .cloned()
            .expect("a public-side cell for host-a")
    };
    assert_eq!(cell(&checks)["ok"], true, "{}", cell(&checks));
    // Undo the router's hardening by hand: the leg answers ARP for every
    // address of the namespace, the input chain accepts every ping (also
    // one routed to a private gateway via the public address), and the leg
    // has IPv6 again (a link-local address, and no ip6 drop table).
    let o = l.sh(
        "host-a",
        "ip netns exec ns1 sh -c 'p=/proc/sys/net; echo 0 > $p/ipv4/conf/all/arp_ignore && echo 0 > $p/ipv4/conf/veth15.1/arp_ignore \
         && echo 0 > $p/ipv6/conf/veth15.1/addr_gen_mode && echo 0 > $p/ipv6/conf/veth15.1/disable_ipv6 \
         && ip link set veth15.1 down && ip link set veth15.1 up && nft delete table ip6 vxrouter \
         && nft insert rule ip vxrouter input icmp type echo-request accept'",
    );
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(std::time::Duration::from_secs(3)); // DAD of the new link-local
    let (ok, checks) = l.check();
    assert!(!ok);
    let c = cell(&checks);
    let d = c["detail"].as_str().unwrap();
    assert_eq!(c["ok"], false, "{c}");
    assert!(d.contains("answers ARP for the private gateway 192.168.10.3"), "{c}");
    assert!(d.contains("the private gateway 192.168.10.3 answers ping from the public side"), "{c}");
    assert!(d.contains("answers IPv6 on the public segment"), "{c}");
}
