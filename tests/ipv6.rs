//! IPv6 dual stack (issue 15): the seed lab with profiles/dual-stack (the
//! router's legs get IPv6 addresses, VMs autoconfigure from router
//! advertisements) and an IPv6 internet side set up by hand in the lab's
//! internet and server nodes. Run by scripts/test.sh (root, sandbox).

mod common;

use std::time::{Duration, Instant};

use common::*;

const SERVER6: &str = "2001:db8:100::10";
const PUBLIC6: &str = "2001:db8:ff::123";

fn dual_stack_lab(name: &str, router: &str) -> TestLab {
    let lab = seed_lab(name, "host-a.toml", "host-b.toml")
        // A VM that starts with MTU 1500, as a stock guest does: the router
        // advertisement must bring its IPv6 MTU down to the segment's.
        + "\n[[vm]]\nname = \"vm-c\"\nhost = \"host-b\"\nbridge = \"br-pr\"\naddress = \"192.168.10.30/24\"\ngateway = \"192.168.10.3\"\nmtu = 1500\n";
    let b = std::fs::read_to_string(repo().join("profiles/dual-stack/host-b.toml")).unwrap();
    TestLab::new(name, &lab, &[("host-a.toml", router), ("host-b.toml", &b)])
}

fn router_profile() -> String {
    std::fs::read_to_string(repo().join("profiles/dual-stack/host-a.toml")).unwrap()
}

/// The internet's IPv6 side, as an ISP would route it: the upstream router
/// holds 2001:db8:ff::1 on the public segment and routes the segment's
/// prefix to the router's public address; the server is behind it.
fn internet6(l: &TestLab) {
    let o = l.sh(
        "internet",
        &format!(
            "sysctl -qw net.ipv6.conf.all.forwarding=1 && ip addr add 2001:db8:ff::1/64 dev eth0 nodad && \
             ip addr add 2001:db8:100::1/64 dev eth1 nodad && ip route add 2001:db8:10::/64 via {PUBLIC6}"
        ),
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = l.sh("server", &format!("ip addr add {SERVER6}/64 dev eth0 nodad && ip route add default via 2001:db8:100::1"));
    assert!(o.status.success(), "{}", text(&o));
    // So is the attacker's: it sits on the public segment and routes the
    // VMs' prefix via the router's public address.
    let o = l
        .sh("attacker", &format!("ip addr add 2001:db8:ff::66/64 dev eth0 nodad && ip route add 2001:db8:10::/64 via {PUBLIC6}"));
    assert!(o.status.success(), "{}", text(&o));
}

/// The VM's global address from SLAAC (waits for the first advertisement).
fn slaac(l: &TestLab, vm: &str) -> String {
    let start = Instant::now();
    loop {
        // Usable once duplicate address detection is done (not tentative).
        let o = l.exec(vm, &["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"]);
        let line = stdout(&o);
        if let Some(a) = line.split_whitespace().skip_while(|w| *w != "inet6").nth(1)
            && !line.contains("tentative")
        {
            return a.split('/').next().unwrap().to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(15), "{vm} got no address from router advertisements");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ping6(l: &TestLab, from: &str, to: &str) -> bool {
    l.exec(from, &["ping", "-6", "-n", "-c", "1", "-W", "1", to]).status.success()
}

fn lab_agent(l: &TestLab, node: &str, args: &[&str]) -> std::process::Output {
    let bin = lab_bin().display().to_string();
    let mut cmd = vec![bin.as_str(), "__agent"];
    cmd.extend_from_slice(args);
    l.exec(node, &cmd)
}

/// Starts a listener in `node` (in the background of the node's shell).
fn listen(l: &TestLab, node: &str, addr: &str) {
    let o = l.sh(node, &format!("{} __agent listen '{addr}' >/dev/null 2>&1 & sleep 0.3", lab_bin().display()));
    assert!(o.status.success(), "{}", text(&o));
}

/// What the listener at `to` saw of a connection from `from`.
fn peer_seen(l: &TestLab, from: &str, to: &str) -> Option<String> {
    let o = lab_agent(l, from, &["send", to, "--bytes", "100", "--timeout", "2"]);
    stdout(&o).split_whitespace().find_map(|w| w.strip_prefix("peer=")).map(str::to_string)
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn dual_stack_vms_autoconfigure_reach_out_routed_and_nothing_reaches_in() {
    let l = dual_stack_lab("ipv6-routed", &router_profile());
    l.up();
    internet6(&l);
    let (a, b, _) = (slaac(&l, "vm-a"), slaac(&l, "vm-b"), slaac(&l, "vm-c"));
    assert!(a.starts_with("2001:db8:10:") && b.starts_with("2001:db8:10:"), "{a} {b}");

    // The advertisement carries the segment MTU: a VM at MTU 1500 uses 1450
    // for IPv6.
    let mtu = stdout(&l.exec("vm-c", &["cat", "/proc/sys/net/ipv6/conf/eth0/mtu"]));
    assert_eq!(mtu.trim(), "1450", "vm-c's IPv6 MTU after the router advertisement");
    // And the gateway as DNS server (RDNSS) with `dns = true`.
    let conf = stdout(&l.sh("host-a", "cat /run/vxrouter/dnsmasq/host-a/ns1@veth17.1.conf"));
    assert!(conf.contains("enable-ra") && conf.contains("dhcp-option=option6:dns-server,[2001:db8:10::1]"), "{conf}");

    // VM to VM across hosts, VM to the internet (routed: the server sees the
    // VM's own address), and a second apply changes nothing.
    assert!(ping6(&l, "vm-a", &b) && ping6(&l, "vm-b", &a), "IPv6 across VXLAN");
    assert!(ping6(&l, "vm-b", SERVER6), "IPv6 to the internet server");
    listen(&l, "server", &format!("[{SERVER6}]:7000"));
    assert_eq!(peer_seen(&l, "vm-b", &format!("[{SERVER6}]:7000")).as_deref(), Some(b.as_str()));
    let o = l.vx("host-a", &["apply", &l.path("host-a.toml")]);
    assert!(stdout(&o).contains("nothing to do"), "{}", text(&o));

    // Nothing reaches in: the attacker routes to the VM through the
    // router's public address; the control shows the route works (the
    // router's public address answers) and the VM's listener works (its
    // segment neighbour connects).
    listen(&l, "vm-b", "[::]:7001");
    assert_eq!(peer_seen(&l, "vm-a", &format!("[{b}]:7001")).as_deref(), Some(a.as_str()), "control: vm-b listens");
    assert!(ping6(&l, "attacker", PUBLIC6), "control: the router's public IPv6 address answers");
    assert!(!ping6(&l, "attacker", &b), "the internet pinged a VM");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{b}]:7001")), None, "the internet connected to a VM");
    assert!(!ping6(&l, "attacker", "2001:db8:10::1"), "the private gateway answered from the public side");

    // A port forward with `to6`: the router's public port reaches vm-b's
    // service, and with routed prefixes vm-b's own address and port too;
    // its other ports stay closed.
    let forward =
        format!("\n[[router.forward]]\nproto = \"tcp\"\nport = 2222\nto = \"192.168.10.20:7002\"\nto6 = \"[{b}]:7002\"\n");
    let p = l.write("host-a.toml", &(router_profile() + &forward));
    let o = l.vx("host-a", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    listen(&l, "vm-b", "[::]:7002");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{PUBLIC6}]:2222")).as_deref(), Some("2001:db8:ff::66"), "forwarded port");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{b}]:7002")).as_deref(), Some("2001:db8:ff::66"), "routed service port");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{b}]:7001")), None, "a port that is not forwarded");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{PUBLIC6}]:2223")), None, "a public port that is not forwarded");

    // Path MTU: full-size packets (the segment's 1450 bytes) cross VXLAN and
    // the router both ways; one byte more the VM refuses itself, and a
    // packet one byte too big from the internet is answered with
    // packet-too-big by the router (before its firewall drops it as an
    // unsolicited inbound packet), so a server's path MTU discovery works.
    let full = l.exec("vm-b", &["ping", "-6", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", "1402", SERVER6]);
    assert!(full.status.success(), "1450-byte packets to the server and back: {}", text(&full));
    let over = l.exec("vm-b", &["ping", "-6", "-n", "-c", "1", "-W", "1", "-M", "do", "-s", "1403", SERVER6]);
    assert!(!over.status.success(), "1451-byte packets left a VM whose segment MTU is 1450: {}", text(&over));
    let ptb = l.exec("server", &["ping", "-6", "-n", "-c", "2", "-W", "1", "-M", "do", "-s", "1403", &b]);
    assert!(!ptb.status.success() && text(&ptb).contains("mtu=1450"), "packet too big from the router: {}", text(&ptb));

    // The IPv6 firewall is the router's, in the nftables backend.
    let rules = stdout(&l.exec("host-a", &["ip", "netns", "exec", "ns1", "nft", "list", "table", "ip6", "vxrouter"]));
    assert!(
        rules.contains("icmpv6 type packet-too-big accept") && rules.contains("icmpv6 type nd-neighbor-solicit accept"),
        "{rules}"
    );
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn nat66_and_the_iptables_backend() {
    let profile =
        router_profile().replace("namespace = \"ns1\"", "namespace = \"ns1\"\nnat6 = \"masquerade\"\nfirewall = \"iptables\"");
    let l = dual_stack_lab("ipv6-nat66", &profile);
    l.up();
    internet6(&l);
    let b = slaac(&l, "vm-b");
    // NAT66: the internet sees the router's public address.
    listen(&l, "server", &format!("[{SERVER6}]:7000"));
    assert_eq!(peer_seen(&l, "vm-b", &format!("[{SERVER6}]:7000")).as_deref(), Some(PUBLIC6));
    // ip6tables holds the same policy: inbound refused, control passes.
    let rules = stdout(&l.exec("host-a", &["ip", "netns", "exec", "ns1", "ip6tables-save"]));
    assert!(rules.contains("-A VXROUTER-POST -s 2001:db8:10::/64 -o veth15.1 -j MASQUERADE"), "{rules}");
    assert!(rules.contains("--icmpv6-type 2 -j ACCEPT"), "{rules}");
    listen(&l, "vm-b", "[::]:7001");
    assert!(ping6(&l, "attacker", PUBLIC6), "control: the router's public IPv6 address answers");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{b}]:7001")), None, "the internet connected to a VM");
    let o = l.vx("host-a", &["check", &l.path("host-a.toml")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A port forward with `to6` under NAT66: only the translated port
    // reaches the VM, not its own address.
    let forward =
        format!("\n[[router.forward]]\nproto = \"tcp\"\nport = 2222\nto = \"192.168.10.20:7002\"\nto6 = \"[{b}]:7002\"\n");
    let p = l.write("host-a.toml", &(profile.clone() + &forward));
    let o = l.vx("host-a", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    listen(&l, "vm-b", "[::]:7002");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{PUBLIC6}]:2222")).as_deref(), Some("2001:db8:ff::66"), "forwarded port");
    assert_eq!(peer_seen(&l, "attacker", &format!("[{b}]:7002")), None, "NAT66: the VM's own address is not reachable");
    let rules = stdout(&l.exec("host-a", &["ip", "netns", "exec", "ns1", "ip6tables-save"]));
    assert!(rules.contains(&format!("-j DNAT --to-destination [{b}]:7002")), "{rules}");
}

/// The seed profiles with VXLAN over IPv6: `local` an IPv6 address of the
/// host's underlay NIC, and `flood` either the IPv6 group or the peers.
fn over_ipv6(profile: &str, local: &str, flood: &str) -> String {
    profile
        .replacen("device = \"eth0\"", &format!("device = \"eth0\"\nlocal = \"{local}\"\nallow = [\"fd00::/64\"]"), 1)
        .replace("group = \"239.0.4.46\"", flood)
}

/// A VXLAN link's attributes as `ip -d -j link` reports them.
fn vxlan_info(l: &TestLab, host: &str, link: &str) -> serde_json::Value {
    let o = l.exec(host, &["ip", "-d", "-j", "link", "show", "dev", link]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    v[0]["linkinfo"]["info_data"].clone()
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn vxlan_over_an_ipv6_underlay_with_a_group_then_peers() {
    let group = "group = \"ff05::4:46\"";
    let peers = "peers = [\"fd00::1\", \"fd00::2\"]";
    let (a, b) = (seed_profile("host-a"), seed_profile("host-b"));
    let l = TestLab::new(
        "ipv6-underlay",
        &seed_lab("ipv6-underlay", "host-a.toml", "host-b.toml"),
        &[("host-a.toml", &over_ipv6(&a, "fd00::1", group)), ("host-b.toml", &over_ipv6(&b, "fd00::2", group))],
    );
    // The underlay NICs get IPv6 addresses before the profiles are applied.
    l.up_bare();
    for (host, addr) in [("host-a", "fd00::1/64"), ("host-b", "fd00::2/64")] {
        let o = l.sh(host, &format!("sysctl -qw net.ipv6.conf.eth0.disable_ipv6=0 && ip addr add {addr} dev eth0 nodad"));
        assert!(o.status.success(), "{}", text(&o));
    }
    l.up();
    let v = vxlan_info(&l, "host-b", "vxlan1070");
    assert_eq!((v["group6"].as_str(), v["local6"].as_str()), (Some("ff05::4:46"), Some("fd00::2")), "{v}");
    // The IPv6 header is 20 bytes longer: the segment MTU is 1500 - 70.
    let o = l.exec("host-b", &["ip", "-j", "link", "show", "dev", "br-pr"]);
    let br: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(br[0]["mtu"], 1430, "{br}");
    // The allow-list is an IPv6 chain on the host.
    let rules = stdout(&l.exec("host-b", &["nft", "list", "table", "ip6", "vxrouter"]));
    assert!(rules.contains("ip6 saddr fd00::/64 udp dport 4789 return"), "{rules}");
    // VMs reach each other across hosts (and the internet) over it: the
    // lab's matrix, with its DF pings at the segment MTU.
    l.assert_matrix_passes();
    for h in ["host-a", "host-b"] {
        let o = l.vx(h, &["check", &l.path(&format!("{h}.toml"))]);
        assert!(o.status.success(), "{h}: {}", text(&o));
    }

    // Multicast to IPv6 unicast peers: the links are recreated, the peers
    // are IPv6 flood entries.
    l.write("host-a.toml", &over_ipv6(&a, "fd00::1", peers));
    l.write("host-b.toml", &over_ipv6(&b, "fd00::2", peers));
    for h in ["host-a", "host-b"] {
        let o = l.vx(h, &["apply", "-q", &l.path(&format!("{h}.toml"))]);
        assert!(o.status.success(), "{h}: {}", text(&o));
    }
    let o = l.exec("host-b", &["bridge", "fdb", "show", "dev", "vxlan1070"]);
    assert!(stdout(&o).contains("00:00:00:00:00:00 dst fd00::1"), "{}", stdout(&o));
    assert!(!stdout(&o).contains("dst fd00::2"), "its own address is no peer: {}", stdout(&o));
    l.assert_matrix_passes();

    // A peer removed by hand is drift, and apply puts it back.
    let o = l.exec("host-b", &["bridge", "fdb", "del", "00:00:00:00:00:00", "dev", "vxlan1070", "dst", "fd00::1"]);
    assert!(o.status.success(), "{}", text(&o));
    let p = l.path("host-b.toml");
    let o = l.vx("host-b", &["check", &p]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("fd00::1"), "{}", text(&o));
    let o = l.vx("host-b", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.vx("host-b", &["check", &p]);
    assert!(o.status.success(), "{}", text(&o));
    // A second apply changes nothing.
    let o = l.vx("host-b", &["plan", &p]);
    assert!(stdout(&o).contains("no changes"), "{}", text(&o));
    for h in ["host-a", "host-b"] {
        let o = l.vx(h, &["destroy", "-q", &l.path(&format!("{h}.toml"))]);
        assert!(o.status.success(), "{h}: {}", text(&o));
    }
}

/// Host state plus what IPv6 adds: IPv6 routes and the IPv6 switches of
/// every link, in the host and in each namespace.
fn snapshot6(l: &TestLab) -> String {
    let mut out = l.snapshot_without_port_numbers("host-a");
    let script = "for ns in '' $(ip netns list | cut -d' ' -f1); do \
                    x=${ns:+ip netns exec $ns}; echo \"== $ns\"; \
                    $x ip -6 route show table all | grep -v -e '^local' -e '^multicast' -e '^fe80'; \
                    $x sh -c 'cd /proc/sys/net/ipv6/conf && grep -r . */disable_ipv6 */forwarding */accept_ra */autoconf'; \
                  done; ls -A /run/vxrouter 2>/dev/null; cat /run/vxrouter/*.json 2>/dev/null";
    out.push_str(&stdout(&l.sh("host-a", script)));
    out
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_failure_or_a_kill_at_any_step_of_a_dual_stack_router_rolls_back_or_converges() {
    let l = dual_stack_lab("ipv6-steps", &router_profile());
    l.up_bare();
    let p = l.path("host-a.toml");
    let clean = snapshot6(&l);
    let steps = |args: &[&str]| {
        let mut cmd = vec!["plan", "-q"];
        cmd.extend_from_slice(args);
        stdout(&l.vx("host-a", &cmd)).lines().filter(|x| !x.starts_with("note:")).count()
    };
    // A failure at every step of the first apply puts the host back.
    let n = steps(&[&p]);
    assert!(n >= 20, "the dual-stack router plan has {n} steps");
    for k in 1..=n {
        let o = l.exec("host-a", &["env", &format!("VXROUTER_FAULT_STEP={k}"), vx(), "apply", &p]);
        assert_eq!(o.status.code(), Some(1), "step {k}: {}", text(&o));
        assert!(text(&o).contains("rolled back"), "step {k}: {}", text(&o));
        assert_same(&clean, &snapshot6(&l), &format!("a failure at apply step {k} left the host changed"));
    }
    // And at every step of its destroy, the converged router stays.
    let o = l.vx("host-a", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.vx("host-a", &["destroy", "--json", &p]);
    let doc: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let n = doc["changes"].as_array().map(Vec::len).unwrap_or(0);
    let o = l.vx("host-a", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let applied = snapshot6(&l);
    assert!(n >= 4, "destroy has {n} steps");
    for k in 1..=n {
        let o = l.exec("host-a", &["env", &format!("VXROUTER_FAULT_STEP={k}"), vx(), "destroy", &p]);
        assert_eq!(o.status.code(), Some(1), "destroy step {k}: {}", text(&o));
        assert_same(&applied, &snapshot6(&l), &format!("a failure at destroy step {k} left the host changed"));
    }
    // A kill at every mutation point of an apply: the next destroy leaves
    // the host as it was before anything.
    let o = l.vx("host-a", &["destroy", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    assert_same(&clean, &snapshot6(&l), "destroy left objects");
    let o = l.exec("host-a", &["env", "VXROUTER_FAULT_COUNT=1", vx(), "apply", "-q", &p]);
    let points: usize = text(&o).lines().find_map(|x| x.strip_prefix("fault-points: ")).unwrap().parse().unwrap();
    let o = l.vx("host-a", &["destroy", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(points >= 20, "{points} mutation points");
    for k in 1..=points {
        let o = l.exec("host-a", &["env", &format!("VXROUTER_FAULT_KILL={k}"), vx(), "apply", "-q", &p]);
        if o.status.success() {
            continue;
        }
        let o = l.vx("host-a", &["destroy", "-q", &p]);
        assert!(o.status.success(), "killed at {k}: destroy failed: {}", text(&o));
        assert_same(&clean, &snapshot6(&l), &format!("killed at {k}: destroy left objects"));
    }
}
