//! Issue 12: signals during apply and destroy, output errors, the exit-code
//! contract, JSON documents, `status`, `destroy --host`, not-root errors.
//! Run by scripts/test.sh (root, sandbox, built with `fault-injection`).

mod common;

use serde_json::Value;

use common::*;

fn snapshot(l: &TestLab) -> String {
    l.snapshot_without_port_numbers("host-a")
}

/// Number of steps `apply` (or `destroy`) would take.
fn steps(l: &TestLab, profile: &str, cmd: &str) -> usize {
    let o = l.vx("host-a", &[cmd, "--json", "-q", profile]);
    if cmd == "plan" {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        return v["changes"].as_array().unwrap().len();
    }
    unreachable!()
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_signal_at_any_step_of_apply_or_destroy_rolls_back() {
    let l = TestLab::seed("op-signals");
    l.up_bare();
    let p = l.path("host-a.toml");
    let before = l.snapshot("host-a");
    let n = steps(&l, &p, "plan");
    assert!(n >= 10, "{n} steps");
    let with_signal =
        |at: usize, sig: &str, cmd: &str| l.exec("host-a", &["env", &format!("VXROUTER_FAULT_SIGNAL={at}:{sig}"), vx(), cmd, &p]);
    // Before every step, and after the last one (n + 1: before verification).
    for step in 1..=n + 1 {
        for sig in ["INT", "TERM", "HUP"] {
            let o = with_signal(step, sig, "apply");
            assert_eq!(o.status.code(), Some(1), "SIG{sig} before step {step}: {}", text(&o));
            let t = text(&o);
            assert!(
                t.contains(&format!("interrupted by SIG{sig}"))
                    && t.contains("rolled back: the host is as it was before this run"),
                "SIG{sig} before step {step}: {t}"
            );
            assert_same(&before, &l.snapshot("host-a"), &format!("SIG{sig} before step {step} left the host changed"));
        }
    }
    // A signal that arrives once the run is verified and recorded (n + 2)
    // changes nothing more: the run completed, and says so.
    let o = with_signal(n + 2, "TERM", "apply");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("received SIGTERM after the last change: the run completed"), "{}", text(&o));
    assert_eq!(l.vx("host-a", &["check", &p]).status.code(), Some(0));
    // SIGPIPE (a reader that went away) at any point aborts nothing: the
    // run completes and the host matches the profile.
    for step in 1..=n + 2 {
        assert!(l.vx("host-a", &["destroy", "-q", &p]).status.success());
        assert_same(&before, &l.snapshot("host-a"), "destroy after a completed apply");
        let o = with_signal(step, "PIPE", "apply");
        assert_eq!(o.status.code(), Some(0), "SIGPIPE before step {step}: {}", text(&o));
        let o = l.vx("host-a", &["check", &p]);
        assert_eq!(o.status.code(), Some(0), "SIGPIPE before step {step}: {}", text(&o));
    }
    let o = l.vx("host-a", &["destroy", "--json", &p]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let destroy_steps = doc["changes"].as_array().unwrap().len();
    let o = l.vx("host-a", &["apply", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let applied = snapshot(&l);
    for step in 1..=destroy_steps + 1 {
        for sig in ["INT", "TERM", "HUP"] {
            let o = with_signal(step, sig, "destroy");
            assert_eq!(o.status.code(), Some(1), "destroy, SIG{sig} before step {step}: {}", text(&o));
            let t = text(&o);
            assert!(t.contains(&format!("interrupted by SIG{sig}")) && t.contains("rolled back"), "{t}");
            assert_same(&applied, &snapshot(&l), &format!("destroy, SIG{sig} before step {step}"));
        }
    }
    let o = with_signal(destroy_steps + 2, "HUP", "destroy");
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("received SIGHUP after the last change: the run completed"), "{}", text(&o));
    assert_same(&before, &l.snapshot("host-a"), "a destroy that completed");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn a_reader_that_goes_away_does_not_abort_apply() {
    let l = TestLab::seed("op-sigpipe");
    l.up_bare();
    let p = l.path("host-a.toml");
    let bare = l.snapshot("host-a");
    // `apply | head -1`: the pipe closes after the first line; the run goes on.
    let script = format!("{} apply {p} | head -1 >/dev/null; echo rc=${{PIPESTATUS[0]}}", vx());
    let o = l.exec("host-a", &["bash", "-c", &script]);
    assert!(stdout(&o).contains("rc=0"), "{}", text(&o));
    let o = l.vx("host-a", &["check", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // `destroy | head -1` likewise removes everything.
    let script = format!("{} destroy {p} | head -1 >/dev/null; echo rc=${{PIPESTATUS[0]}}", vx());
    let o = l.exec("host-a", &["bash", "-c", &script]);
    assert!(stdout(&o).contains("rc=0"), "{}", text(&o));
    assert_same(&bare, &l.snapshot("host-a"), "`destroy | head -1` left something");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn exit_codes_and_json_documents() {
    let l = TestLab::seed("op-exit");
    l.up_bare();
    let p = l.path("host-a.toml");
    // 3: a failed run whose rollback is incomplete.
    let o = l.exec("host-a", &["env", "VXROUTER_FAULT_STEP=5", "VXROUTER_FAULT_UNDO=1", vx(), "apply", &p]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("rollback was incomplete"), "{}", text(&o));
    // The next apply still converges.
    let o = l.vx("host-a", &["apply", "--json", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!(doc["changed"], true, "{doc}");
    assert!(doc["changes"].as_array().unwrap().iter().any(|c| c["object"] == "firewall in ns1 (nftables)"), "{doc}");
    let o = l.vx("host-a", &["apply", "--json", &p]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((doc["changed"].clone(), o.status.code()), (Value::Bool(false), Some(0)), "{doc}");
    // 2: drift.
    assert!(l.sh("host-a", "ip link set br-pr mtu 1400").status.success());
    let o = l.vx("host-a", &["check", "--json", &p]);
    assert_eq!(o.status.code(), Some(2));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["differences"][0]["detail"], "mtu 1450 (found 1400)", "{doc}");
    // 1 with --json: an error, nothing changed.
    let o = l.exec("host-a", &["env", "VXROUTER_FAULT_STEP=1", vx(), "apply", "--json", &p]);
    assert_eq!(o.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    assert_eq!((doc["changed"].clone(), doc["rolled_back"].clone()), (Value::Bool(false), Value::from("complete")), "{doc}");
    // 64: usage.
    let o = l.vx("host-a", &["apply", "--frobnicate", &p]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    let o = l.vx("host-a", &["destroy", "--json", &p]);
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((doc["changed"].clone(), o.status.code()), (Value::Bool(true), Some(0)), "{doc}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn status_shows_what_is_applied_and_destroy_host_needs_no_profile() {
    let l = TestLab::seed("op-status");
    l.up();
    let o = l.vx("host-a", &["status", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    let h = &doc["hosts"][0];
    assert_eq!(h["host"], "host-a", "{doc}");
    assert!(h["profile"].as_str().unwrap().ends_with("host-a.toml"), "{doc}");
    assert_eq!(h["profile_unchanged"], true, "{doc}");
    let hash = h["profile_hash"].as_str().unwrap_or_default();
    assert!(hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()), "{doc}");
    assert!(h["applied"].as_str().unwrap().ends_with('Z'), "{doc}");
    let seg = &h["segments"][0];
    assert_eq!(seg["flood"], "group 239.0.4.46", "{doc}");
    let router = &h["router"];
    assert_eq!((router["namespace"].as_str(), router["exists"].as_bool()), (Some("ns1"), Some(true)), "{doc}");
    assert_eq!(router["firewall"], serde_json::json!(["nftables"]), "{doc}");
    let o = l.vx("host-a", &["status"]);
    assert!(stdout(&o).contains(&format!("(unchanged since applied), hash {hash}")), "{}", text(&o));
    assert_eq!((seg["bridge"].as_str(), seg["vni"].as_u64(), seg["mtu"].as_u64()), (Some("br-pr"), Some(1070), Some(1450)));
    let ports: Vec<&str> = seg["ports"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    assert!(ports.contains(&"vxlan1070") && ports.contains(&"veth17.0") && ports.contains(&"vnet0"), "{ports:?}");
    assert!(h["router"]["addresses"].to_string().contains("203.0.113.123/24 on veth15.1"), "{doc}");
    assert_eq!(h["drift"].as_array().unwrap().len(), 0, "{doc}");
    // Drift shows, and status says so by its exit code too.
    assert!(l.sh("host-a", "ip link set br-pr mtu 1400").status.success());
    let o = l.vx("host-a", &["status"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(stdout(&o).contains("different: bridge br-pr"), "{}", text(&o));
    // Without the profile (and without the state file): everything goes. (A
    // copy takes the host over and is removed: the lab still needs its own.)
    let copy = l.write("copy.toml", &seed_profile("host-a"));
    let o = l.vx("host-a", &["apply", "-q", "--take-over", &copy]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(l.sh("host-a", &format!("rm {copy}; rm -rf /run/vxrouter")).status.success());
    // The lab's uplink is a veth, and a VM's tap is in br-pr: without the
    // profile only a physical NIC counts as the uplink, so --force deletes
    // the bridges (their ports are released, never deleted).
    let o = l.vx("host-a", &["destroy", "--host", "host-a", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let left = stdout(&l.sh("host-a", "ip netns list; ip -o link show | grep -c vxrouter: || true"));
    assert_eq!(left.trim(), "0", "objects left: {left}");
    let master = stdout(&l.sh("host-a", "ip -o link show eth1"));
    assert!(!master.contains("master"), "the uplink was not released: {master}");
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn not_root_says_it_needs_root() {
    let l = TestLab::seed("op-notroot");
    l.up_bare();
    let as_nobody = |cmd: &str| {
        l.exec("host-a", &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", vx(), cmd, &l.path("host-a.toml")])
    };
    // Nothing applied yet (no /run/vxrouter, no router namespace): the
    // first refusal is a firewall tool's, and it says the same.
    assert!(l.sh("host-a", "rm -rf /run/vxrouter && ! ip netns list | grep -q .").status.success());
    for cmd in ["check", "plan"] {
        let o = as_nobody(cmd);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("needs root (CAP_NET_ADMIN)"), "{cmd} on a bare host: {}", text(&o));
    }
    let o = l.vx("host-a", &["apply", "-q", &l.path("host-a.toml")]);
    assert!(o.status.success(), "{}", text(&o));
    for cmd in ["apply", "check"] {
        let o = as_nobody(cmd);
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("needs root (CAP_NET_ADMIN)"), "{cmd} says why it cannot run: {}", text(&o));
    }
}

/// `vxrouter lab exec LAB host-a -- ARGS`, to be spawned (output piped).
fn in_host_a(l: &TestLab, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(vx());
    cmd.args(["lab", "exec"]).arg(&l.file).arg("host-a").arg("--").args(args);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    cmd
}

/// Waits (up to 20 s) until `path` exists in host-a (or, with `gone`, until
/// it does not).
fn wait_file(l: &TestLab, path: &str, gone: bool) -> bool {
    for _ in 0..400 {
        let there = l.sh("host-a", &format!("test -e {path}")).status.success();
        if there != gone {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn apply_confirm_rolls_back_unless_confirmed_even_when_the_session_dies() {
    let l = TestLab::seed("op-confirm");
    l.up_bare();
    let p = l.path("host-a.toml");
    let before = snapshot(&l);
    // Nobody confirms: rolled back after the time.
    let o = l.vx("host-a", &["apply", "--confirm", "2", &p]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("not confirmed in time") && text(&o).contains("rolled back"), "{}", text(&o));
    assert_same(&before, &snapshot(&l), "an unconfirmed apply stayed");
    // Confirmed from another process: it stays.
    let waiting = "/run/vxrouter/host-a.confirming";
    let apply = in_host_a(&l, &[vx(), "apply", "--confirm", "30", &p]).spawn().unwrap();
    assert!(wait_file(&l, waiting, false), "the apply never waited for a confirmation");
    let o = l.vx("host-a", &["confirm"]);
    assert!(o.status.success() && stdout(&o).contains("confirmed: host-a keeps the change"), "{}", text(&o));
    let out = apply.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let o = l.vx("host-a", &["check", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = l.vx("host-a", &["destroy", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    // Enter on the terminal (script(1) gives the apply one) confirms too.
    let mut on_tty = in_host_a(&l, &["script", "-qfec", &format!("{} apply --confirm 30 {p}", vx()), "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(wait_file(&l, waiting, false), "the apply never waited for a confirmation");
    {
        use std::io::Write;
        let mut stdin = on_tty.stdin.take().unwrap();
        stdin.write_all(b"\n").unwrap();
        assert!(wait_file(&l, waiting, true), "Enter did not end the wait");
    }
    let out = on_tty.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let o = l.vx("host-a", &["check", &p]);
    assert_eq!(o.status.code(), Some(0), "confirmed by Enter, yet: {}", text(&o));
    let o = l.vx("host-a", &["destroy", "-q", &p]);
    assert!(o.status.success(), "{}", text(&o));
    let before = snapshot(&l);
    // Ctrl-C at the waiting apply (SIGINT to it, not to the waiter nor to
    // the `lab exec` around it) says no: rolled back at once, not after
    // the 30 s.
    let apply = in_host_a(&l, &[vx(), "apply", "--confirm", "30", &p]).spawn().unwrap();
    assert!(wait_file(&l, waiting, false), "the apply never waited for a confirmation");
    let waiter = stdout(&l.sh("host-a", &format!("cat {waiting}"))).trim().to_string();
    let interrupt = format!(
        "for p in $(pgrep -f '^[^ ]*vxrouter apply --confirm 30'); do [ \"$p\" != \"{waiter}\" ] && kill -INT $p; done; true"
    );
    assert!(l.sh("host-a", &interrupt).status.success());
    let out = apply.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("interrupted by SIGINT while waiting for a confirmation"), "{}", text(&out));
    assert_same(&before, &snapshot(&l), "Ctrl-C during the wait kept the change");
    // The session dies (its terminal goes, the foreground process is
    // killed): the waiter rolls back on time all the same.
    let session = in_host_a(&l, &["script", "-qfec", &format!("{} apply --confirm 3 {p}", vx()), "/dev/null"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_file(&l, waiting, false), "the apply never waited for a confirmation");
    let waiter = stdout(&l.sh("host-a", &format!("cat {waiting}"))).trim().to_string();
    let kill = format!(
        "for p in $(pgrep -f '[a]pply --confirm 3'); do [ \"$p\" != \"{waiter}\" ] && kill -KILL $p; done; pkill -KILL -x script; true"
    );
    assert!(l.sh("host-a", &kill).status.success());
    let mut session = session;
    let _ = session.wait();
    assert!(l.sh("host-a", &format!("kill -0 {waiter}")).status.success(), "the waiter died with the session");
    assert!(wait_file(&l, waiting, true), "the waiter never decided");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_same(&before, &snapshot(&l), "the change stayed after the session died unconfirmed");
}

/// Ctrl-C at the terminal reaches vxrouter's whole process group. The tools
/// it runs (here `nft`, which has committed its transaction and is still
/// running) are in groups of their own: they finish, the step is journaled,
/// and the rollback at the next step boundary undoes it too.
#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn ctrl_c_never_kills_a_tool_after_its_commit() {
    let l = TestLab::seed("op-ctrl-c-tool");
    l.up();
    let p = l.path("host-a.toml");
    // The same profile file with a port forward more (a second file would
    // be a second profile claiming the host name): one firewall change.
    let original = std::fs::read_to_string(&p).unwrap();
    let forward = l.write(
        "host-a.toml",
        &format!("{original}\n[[router.forward]]\nproto = \"tcp\"\nport = 2222\nto = \"192.168.10.20:22\"\n"),
    );
    let o = l.vx("host-a", &["plan", &forward]);
    let plan = stdout(&o);
    assert!(o.status.success() && plan.contains("firewall in ns1"), "{}", text(&o));
    assert!(plan.lines().filter(|x| !x.starts_with("note")).all(|x| x.contains("firewall in ns1")), "{plan}");
    // (Compared table by table: a rollback that replaces a table puts it
    // after the other one in `nft list ruleset`.)
    let tables = || {
        ["ip", "ip6"].map(|f| stdout(&l.exec("host-a", &["ip", "netns", "exec", "ns1", "nft", "list", "table", f, "vxrouter"])))
    };
    let before = tables();
    assert!(before[0].contains("chain forward"), "{before:?}");
    // An nft that commits, then takes a second to exit.
    let marker = l.path("committed");
    let wrapper_dir = l.path("slow-nft");
    std::fs::create_dir_all(&wrapper_dir).unwrap();
    let real = stdout(&l.sh("host-a", "command -v nft")).trim().to_string();
    let wrapper =
        format!("#!/bin/sh\n{real} \"$@\"; rc=$?\ncase \" $* \" in *\" -f \"*) touch {marker}; sleep 1;; esac\nexit $rc\n");
    let nft = format!("{wrapper_dir}/nft");
    std::fs::write(&nft, wrapper).unwrap();
    assert!(l.sh("host-a", &format!("chmod +x {nft}")).status.success());
    let script = format!(
        "PATH={wrapper_dir}:$PATH setsid {vx} apply {forward} & pid=$!; \
         for i in $(seq 1000); do [ -e {marker} ] && break; sleep 0.01; done; kill -INT -- -$pid; wait $pid; echo rc=$?",
        vx = vx()
    );
    let o = l.exec("host-a", &["bash", "-c", &script]);
    let t = text(&o);
    assert!(stdout(&o).contains("rc=1"), "{t}");
    assert!(t.contains("interrupted by SIGINT") && t.contains("rolled back: the host is as it was before this run"), "{t}");
    assert_eq!(before, tables(), "Ctrl-C while nft was finishing left its ruleset");
    std::fs::write(&p, original).unwrap();
    let o = l.vx("host-a", &["check", &p]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}
