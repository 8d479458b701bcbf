//! Issue 4 item 8: editing profiles on a live deployment. Each change
//! converges in one apply per host (`check` agrees right after) and the
//! lab's traffic matrix passes again. Run by scripts/test.sh (root, sandbox).

mod common;

use common::*;

/// The seed lab with extra `[[vm]]` entries.
fn lab_with(name: &str, extra_vms: &str) -> TestLab {
    TestLab::new(
        name,
        &(seed_lab(name, "host-a.toml", "host-b.toml") + extra_vms),
        &[("host-a.toml", &seed_profile("host-a")), ("host-b.toml", &seed_profile("host-b"))],
    )
}

/// Rewrites the hosts' profiles, runs `lab up` (one apply per host), and
/// requires every host to match its profile and the matrix to pass.
fn evolve(l: &TestLab, a: &str, b: &str) {
    l.write("host-a.toml", a);
    l.write("host-b.toml", b);
    l.up();
    for h in ["host-a", "host-b"] {
        let o = l.vx(h, &["check", &l.path(&format!("{h}.toml"))]);
        assert_eq!(o.status.code(), Some(0), "{h} did not converge in one apply: {}", text(&o));
    }
    l.assert_matrix_passes();
}

const SEGMENT_X: &str = "\n[[segment]]\nbridge = \"br-x\"\nvni = 1080\ngroup = \"239.0.4.47\"\n";
const LEG_X: &str = "\n[[router.private]]\nbridge = \"br-x\"\naddress = \"192.168.30.1/24\"\n";
const VMS_X: &str = "\n[[vm]]\nname = \"vm-ax\"\nhost = \"host-a\"\nbridge = \"br-x\"\naddress = \"192.168.30.10/24\"\ngateway = \"192.168.30.1\"\n\
                     \n[[vm]]\nname = \"vm-bx\"\nhost = \"host-b\"\nbridge = \"br-x\"\naddress = \"192.168.30.20/24\"\ngateway = \"192.168.30.1\"\n";

fn with_segment_x(host: &str) -> String {
    let p = seed_profile(host);
    match host {
        // Segments go before [router]: TOML tables after it would belong to it.
        "host-a" => p.replace("[router]", &format!("{SEGMENT_X}\n[router]")) + LEG_X,
        _ => p + SEGMENT_X,
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn adding_a_segment() {
    let l = lab_with("evo-add", VMS_X);
    assert_eq!(l.lab(&["up", "-q"]).status.code(), Some(1), "the new segment's VMs cannot be attached yet");
    let (ok, _) = l.check();
    assert!(!ok, "the VMs of the new segment have nowhere to go yet");
    evolve(&l, &with_segment_x("host-a"), &with_segment_x("host-b"));
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn removing_a_segment() {
    let l = lab_with("evo-remove", "");
    l.write("host-a.toml", &with_segment_x("host-a"));
    l.write("host-b.toml", &with_segment_x("host-b"));
    l.up();
    assert!(links(&l, "host-b", None).contains(&"vxlan1080".to_string()));
    evolve(&l, &seed_profile("host-a"), &seed_profile("host-b"));
    for h in ["host-a", "host-b"] {
        let names = links(&l, h, None);
        assert!(!names.contains(&"vxlan1080".to_string()) && !names.contains(&"br-x".to_string()), "{h}: {names:?}");
    }
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn changing_the_public_address() {
    let l = lab_with("evo-public", "");
    l.up();
    evolve(&l, &seed_profile("host-a").replace("203.0.113.123/24", "203.0.113.124/24"), &seed_profile("host-b"));
    let (_, checks) = l.check();
    assert!(checks.iter().filter(|c| c["check"] == "egress-source").all(|c| c["detail"] == "203.0.113.124"), "{checks:#?}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn changing_the_vxlan_group() {
    let l = lab_with("evo-group", "");
    l.up();
    let before = ifindexes(&l, "host-b");
    evolve(
        &l,
        &seed_profile("host-a").replace("239.0.4.46", "239.0.4.99"),
        &seed_profile("host-b").replace("239.0.4.46", "239.0.4.99"),
    );
    assert_eq!(before, ifindexes(&l, "host-b"), "a group change is made in place, not by recreating links");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn renaming_the_router_namespace() {
    let l = lab_with("evo-rename", "");
    l.up();
    evolve(&l, &seed_profile("host-a").replace("namespace = \"ns1\"", "namespace = \"edge\""), &seed_profile("host-b"));
    let netns = stdout(&l.exec("host-a", &["ip", "netns", "list"]));
    assert_eq!(netns.split_whitespace().next(), Some("edge"), "{netns}");
    assert!(!netns.contains("ns1"), "{netns}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn moving_from_multicast_to_unicast_peers() {
    let l = lab_with("evo-unicast", "");
    l.up();
    let unicast = |host: &str| seed_profile(host).replace("group = \"239.0.4.46\"", "peers = [\"10.0.0.1\", \"10.0.0.2\"]");
    evolve(&l, &unicast("host-a"), &unicast("host-b"));
    let vx = link_json(&l, "host-b", "vxlan1070");
    assert!(!vx.contains("239.0.4.46"), "{vx}");
}
