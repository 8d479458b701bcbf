//! Inputs kept from fuzzing the profile parser (see docs/fuzzing.md): each
//! file in tests/fuzz-regressions/ is fed to `Profile::parse_bytes`, which
//! must return (Ok or Err) without panicking. An `Err` must carry at least
//! one error, each located at line >= 1, column >= 1, and its text must hold
//! no control, invisible or text-reordering character (a profile cannot
//! write to the operator's terminal through an error). An accepted profile
//! is also run through the pure `Desired::derive`, as the fuzz target does,
//! and every link name it would create must pass `names::check_ifname`.
//!
//! No root, no kernel: parsing and derivation are pure.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use vxrouter::desired::Desired;
use vxrouter::facts::Facts;
use vxrouter::profile::Profile;
use vxrouter::profile::names::{check_ifname, is_hidden};

fn regression_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fuzz-regressions")
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Checks one input; `Err(description)` when the contract is broken.
fn check(name: &str, bytes: &[u8]) -> Result<(), String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| match Profile::parse_bytes(name, bytes) {
        Ok(profile) => {
            let desired = Desired::derive(&profile, &Facts::default());
            let bad: Vec<String> = desired.links().iter().filter_map(|(_, link)| check_ifname(&link.name).err()).collect();
            if bad.is_empty() { Ok(()) } else { Err(format!("accepted, but derives invalid link names: {bad:?}")) }
        }
        Err(errors) => {
            if errors.0.is_empty() {
                return Err("Err(ProfileErrors) with no error in it".to_string());
            }
            let bad: Vec<String> = errors
                .0
                .iter()
                .filter(|e| e.line < 1 || e.column < 1)
                .map(|e| format!("line {} column {}: {e}", e.line, e.column))
                .collect();
            if !bad.is_empty() {
                return Err(format!("errors located before 1:1: {bad:?}"));
            }
            let text = errors.to_string();
            match text.lines().find(|l| l.chars().any(is_hidden)) {
                Some(line) => Err(format!("an error prints a hidden character: {:?}", line)),
                None => Ok(()),
            }
        }
    }));
    match outcome {
        Ok(result) => result,
        Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
    }
}

#[test]
fn fuzz_regressions_parse_without_panicking() {
    let dir = regression_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no inputs in {}", dir.display());

    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        if let Err(why) = check(&name, &bytes) {
            failures.push(format!("tests/fuzz-regressions/{name} ({} bytes): {why}", bytes.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fuzz regression inputs failed:\n  {}",
        failures.len(),
        files.len(),
        failures.join("\n  ")
    );
}
