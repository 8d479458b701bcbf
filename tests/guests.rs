//! Issue 13: real guests (a Debian kernel under QEMU, KVM or TCG) on the
//! segments of simulated hosts, one host running a real libvirtd whose
//! networks come from `vxrouter render libvirt`. Run by scripts/test.sh
//! (root, sandbox; the guest image is built before the sandbox is entered).
//! The two tests boot guests one after another (a TCG guest keeps a core
//! busy while it boots), so they take turns.

mod common;

use std::process::Command;
use std::sync::Mutex;

use common::*;
use serde_json::Value;

/// One lab with guests at a time: two TCG guests booting at once on two
/// cores, besides everything else the suite runs, only slow each other down.
static GUESTS: Mutex<()> = Mutex::new(());

fn cells<'a>(checks: &'a [Value], check: &str, from: &str) -> Vec<&'a Value> {
    checks.iter().filter(|c| c["check"] == check && c["from"] == from).collect()
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn shipped_real_guests_lab_passes() {
    let _one = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    assert_sandboxed();
    let file = repo().join("profiles/lab/real-guests.toml");
    let o = Command::new(vx()).args(["lab", "run", "--json"]).arg(&file).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    let checks = v["checks"].as_array().unwrap().clone();
    let failed: Vec<&Value> = checks.iter().filter(|c| c["ok"] != true).collect();
    assert!(o.status.success() && v["ok"] == true && failed.is_empty(), "{failed:#?}\n{}", text(&o));
    // The guests themselves were checked, in both directions: guest-a (QEMU
    // by the lab, DHCP) on host-a, guest-b (libvirt, static) on host-b.
    let dhcp = cells(&checks, "dhcp", "guest-a");
    assert_eq!(dhcp.len(), 1, "{checks:#?}");
    assert!(dhcp[0]["detail"].as_str().unwrap().contains("mtu 1450"), "the lease brought the MTU: {}", dhcp[0]);
    for (from, to) in [("guest-a", "guest-b"), ("guest-b", "guest-a"), ("guest-a", "web-b"), ("web-b", "guest-b")] {
        assert_eq!(
            checks.iter().filter(|c| c["check"] == "ping" && c["from"] == from && c["to"] == to).count(),
            1,
            "{from}→{to}"
        );
    }
    // Across VXLAN: 4 MiB over TCP and full-size frames, from a real guest.
    for check in ["bulk", "pmtu"] {
        let c = checks.iter().find(|c| c["check"] == check && c["from"] == "guest-a" && c["to"] == "guest-b");
        assert!(c.is_some(), "{check} guest-a → guest-b: {checks:#?}");
    }
    let pmtu = checks.iter().find(|c| c["check"] == "pmtu" && c["from"] == "guest-a" && c["to"] == "guest-b").unwrap();
    assert_eq!(pmtu["detail"], "1450 bytes unfragmented, 1451 refused", "{pmtu}");
    for g in ["guest-a", "guest-b"] {
        let snat = cells(&checks, "egress-source", g);
        assert_eq!(snat.len(), 1);
        assert_eq!(snat[0]["detail"], "203.0.113.123", "{}", snat[0]);
        assert_eq!(cells(&checks, "bulk", g).iter().filter(|c| c["to"] == "internet").count(), 1);
        assert_eq!(checks.iter().filter(|c| c["check"] == "inbound-blocked" && c["to"] == g).count(), 1);
        assert_eq!(cells(&checks, "l2-isolated", g).len(), 1, "{g} → db-a");
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn libvirt_host_guests_and_the_mtu_black_hole() {
    let _one = GUESTS.lock().unwrap_or_else(|e| e.into_inner());
    // host-b runs libvirtd. guest-b (libvirt) and web-b (namespace) are left
    // at MTU 1500 on the 1450 segment: both MTU cells must fail, saying so.
    let lab = std::fs::read_to_string(repo().join("profiles/lab/real-guests.toml"))
        .unwrap()
        .replace("name = \"real-guests\"", "name = \"blackhole\"")
        .replace("../three-hosts/", "")
        .replace(
            "gateway = \"192.168.10.1\"\n\n[[vm]]\nname = \"web-b\"",
            "gateway = \"192.168.10.1\"\nmtu = 1500\n\n[[vm]]\nname = \"web-b\"",
        )
        .replace(
            "address = \"192.168.10.12/24\"\ngateway = \"192.168.10.1\"",
            "address = \"192.168.10.12/24\"\ngateway = \"192.168.10.1\"\nmtu = 1500",
        );
    assert_eq!(lab.matches("mtu = 1500").count(), 2, "{lab}");
    let a = std::fs::read_to_string(repo().join("profiles/three-hosts/host-a.toml")).unwrap();
    let b = std::fs::read_to_string(repo().join("profiles/three-hosts/host-b.toml")).unwrap();
    let l = TestLab::new("blackhole", &lab, &[("host-a.toml", &a), ("host-b.toml", &b)]);
    let o = l.lab(&["up"]);
    assert!(o.status.success(), "{}", text(&o));
    let up = text(&o);
    assert!(up.contains("guests: QEMU with KVM") || up.contains("guests: QEMU with TCG"), "the lab says which: {up}");

    // The networks libvirt runs are vxrouter's rendering, accepted by a
    // real libvirtd: defined, active, autostart, no <mtu>.
    let virsh = |args: &[&str]| {
        let mut cmd = vec!["virsh", "-q", "-c", "qemu:///system"];
        cmd.extend_from_slice(args);
        l.exec("host-b", &cmd)
    };
    for net in ["br-web", "br-db"] {
        let o = virsh(&["net-info", net]);
        let info = stdout(&o);
        assert!(o.status.success(), "{}", text(&o));
        for want in ["Active:", "Persistent:", "Autostart:"] {
            assert!(info.lines().any(|x| x.starts_with(want) && x.trim_end().ends_with("yes")), "{net}: {info}");
        }
        assert!(info.lines().any(|x| x.starts_with("Bridge:") && x.trim_end().ends_with(net)), "{net}: {info}");
        let xml = stdout(&virsh(&["net-dumpxml", net]));
        assert!(xml.contains("<forward mode='bridge'/>") && !xml.contains("<mtu"), "{xml}");
    }
    // Control: the same libvirtd refuses what render used to print.
    let o = l.sh(
        "host-b",
        "echo \"<network><name>x</name><forward mode='bridge'/><bridge name='br-web'/><mtu size='1450'/></network>\" > /run/x.xml \
         && virsh -q -c qemu:///system net-define /run/x.xml",
    );
    assert!(!o.status.success() && text(&o).contains("mtu"), "libvirt must reject <mtu> in bridge mode: {}", text(&o));
    // guest-b was started by libvirt, its NIC an <interface type='network'>
    // whose tap (vnetN) libvirt put into br-web.
    let dom = stdout(&virsh(&["dumpxml", "guest-b"]));
    assert!(dom.contains("<interface type='network'>") || dom.contains("<interface type='bridge'>"), "{dom}");
    assert!(dom.contains("network='br-web'"), "{dom}");
    let ifs = stdout(&virsh(&["domiflist", "guest-b"]));
    let tap = ifs.split_whitespace().next().unwrap_or("").to_string();
    assert!(tap.starts_with("vnet"), "{ifs}");
    let link = stdout(&l.exec("host-b", &["ip", "-o", "link", "show", &tap]));
    assert!(link.contains("master br-web") && link.contains("mtu 1450"), "libvirt gives the tap the bridge's MTU: {link}");
    // The guest runs its own kernel: exec goes through its console.
    let o = l.exec("guest-b", &["cat", "/sys/class/net/eth0/mtu"]);
    assert!(o.status.success() && stdout(&o).trim() == "1500", "{}", text(&o));
    let o = l.exec("guest-b", &["uname", "-r"]);
    assert!(o.status.success() && stdout(&o).contains("cloud-amd64"), "a Debian guest kernel: {}", text(&o));

    let (ok, checks) = l.check();
    assert!(!ok, "a black hole must fail the matrix");
    for (from, to, culprit) in [("guest-a", "guest-b", "guest-b"), ("guest-a", "web-b", "web-b")] {
        let c = checks.iter().find(|c| c["check"] == "pmtu" && c["from"] == from && c["to"] == to).expect("pmtu cell");
        assert_eq!(c["ok"], false, "{c}");
        let d = c["detail"].as_str().unwrap();
        assert!(
            d.contains("MTU black hole") && d.contains(&format!("{culprit}'s eth0 has MTU 1500")) && d.contains("1450"),
            "{c}"
        );
    }
    // Everything else still passes: the failure is the MTU, nothing else.
    // Except bulk TCP sent BY the two VMs at 1500, which the black hole may
    // or may not break: the bridge forwards a GSO batch of full-size
    // segments whatever its size (the VXLAN device segments it later) but
    // drops a lone 1500-byte frame (a retransmission, a small window), so
    // guest-b → internet passed in some runs and timed out in others.
    // Bulk TO them (guest-a's segments fit) must pass.
    let others: Vec<&Value> = checks
        .iter()
        .filter(|c| c["check"] != "pmtu" && c["ok"] != true)
        .filter(|c| !(c["check"] == "bulk" && (c["from"] == "guest-b" || c["from"] == "web-b")))
        .collect();
    assert!(others.is_empty(), "{others:#?}");
    for to in ["guest-b", "web-b"] {
        let c = checks.iter().find(|c| c["check"] == "bulk" && c["from"] == "guest-a" && c["to"] == to).expect("bulk cell");
        assert_eq!(c["ok"], true, "{c}");
    }

    // render libvirt reads the underlay MTU over netlink in the namespace it
    // runs in (here host-b's, given an MTU the machine's eth0 is unlikely to
    // have); /sys/class/net would show the machine's.
    let o = l.exec("host-b", &["ip", "link", "set", "eth0", "mtu", "9000"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = l.vx("host-b", &["render", "libvirt", &l.path("host-b.toml")]);
    assert!(o.status.success() && stdout(&o).contains("segment MTU 8950"), "{}", text(&o));
    assert!(l.exec("host-b", &["ip", "link", "set", "eth0", "mtu", "1500"]).status.success());
}
