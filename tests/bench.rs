//! Issue 6: the benchmark script runs (at N = 1, one run). No timings are
//! asserted here: performance is measured by scripts/bench.sh, not by tests.

mod common;

use std::process::Command;

use common::*;

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn the_benchmark_script_runs_at_n_1() {
    assert_sandboxed();
    let o = Command::new("bash")
        .arg(repo().join("scripts/bench.sh"))
        .arg("1")
        .env("RUNS", "1")
        .env("VXROUTER_BIN", vx())
        .current_dir(repo())
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}", text(&o));
    let row = out.lines().find(|l| l.trim_start().starts_with("1 |")).unwrap_or_else(|| panic!("no N=1 row:\n{out}"));
    // seed, limit, apply, noop, check, destroy and its baseline all ran.
    let numbers = row.split_whitespace().filter(|w| w.parse::<f64>().is_ok()).count();
    assert!(numbers >= 10, "{row}");
    assert!(!row.contains(" - "), "a method did not run: {row}");
    // The unicast, DHCP and EVPN shapes ran too.
    for shape in ["unicast", "dhcp", "evpn"] {
        let row = out
            .lines()
            .find(|l| l.starts_with(shape) && l.split_whitespace().nth(1) == Some("1"))
            .unwrap_or_else(|| panic!("no {shape} row at N=1:\n{out}"));
        assert!(!row.contains(" - "), "a {shape} step did not run: {row}");
    }
}
