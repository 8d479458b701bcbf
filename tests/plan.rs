//! Golden plan tests: each directory under tests/plan/ holds a profile, the
//! host as vxrouter observed it (`observed.json`, captured from a sandboxed
//! lab host with `vxrouter __observed PROFILE`), and `plan.txt`: the command
//! on its first line ("$ vxrouter plan", "$ vxrouter destroy --force", …)
//! followed by exactly what that command would print before acting. No root
//! and no kernel are needed: planning is pure.
//!
//! After an intended change of behaviour, regenerate the expected output and
//! review the diff: `UPDATE_GOLDEN=1 cargo test --test plan`.

use std::path::{Path, PathBuf};

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plan");
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(&root).unwrap().flatten().map(|e| e.path()).filter(|p| p.join("plan.txt").exists()).collect();
    dirs.sort();
    dirs
}

#[test]
fn every_case_plans_as_recorded() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let cases = cases();
    assert!(cases.len() >= 15, "only {} golden plan cases", cases.len());
    let mut failed = Vec::new();
    for dir in &cases {
        let expected = std::fs::read_to_string(dir.join("plan.txt")).unwrap();
        let command = expected.lines().next().unwrap_or("").to_string();
        let got = format!("{command}\n{}", vxrouter::engine::golden(dir, &command));
        if got == expected {
            continue;
        }
        if update {
            std::fs::write(dir.join("plan.txt"), &got).unwrap();
            eprintln!("updated {}", dir.display());
        } else {
            failed.push(format!("{}:\n--- expected\n{expected}--- got\n{got}", dir.display()));
        }
    }
    assert!(failed.is_empty(), "{} case(s) differ (UPDATE_GOLDEN=1 rewrites them):\n{}", failed.len(), failed.join("\n"));
}
