//! Issue 13, item 5: the Debian package. scripts/package.sh builds the .deb
//! from the release binary (scripts/test.sh builds it first);
//! scripts/package-selftest.sh --overlay installs it with the real dpkg,
//! checks it and removes it again, inside a private mount namespace whose
//! /usr, /etc and /var are overlays over this machine's (their writable
//! layer a tmpfs): dpkg acts on a copy-on-write view, nothing reaches the disk.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
#[ignore = "needs root and the sandbox: scripts/test.sh"]
fn the_debian_package_installs_works_and_leaves_nothing_behind() {
    assert_sandboxed();
    let release = repo().join("target/release/vxrouter");
    assert!(release.exists(), "{} missing: scripts/test.sh builds it (cargo build --release)", release.display());
    let o = Command::new(repo().join("scripts/package-selftest.sh")).arg("--overlay").output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // Every step of the claim ran and said so (the script stops at the
    // first failure, so a missing line is a step that did not pass).
    let version = env!("CARGO_PKG_VERSION");
    for step in [
        "ok: overlays (tmpfs upper layer) over /usr /etc /var".to_string(),
        "ok: dpkg -i".to_string(),
        format!("ok: vxrouter {version}"),
        "ok: systemd-analyze verify vxrouter@.service".to_string(),
        "ok: man -w vxrouter: /usr/share/man/man1/vxrouter.1.gz".to_string(),
        "ok: completions".to_string(),
        "ok: nothing enabled".to_string(),
        "ok: dpkg -r: no file of the package remains".to_string(),
        "ok: dpkg -P: dpkg no longer knows vxrouter".to_string(),
    ] {
        assert!(out.contains(&step), "missing step {step:?}:\n{out}");
    }
    // The package is what package.sh says it ships.
    let deb = out
        .lines()
        .find_map(|l| l.strip_prefix("package-selftest: OK ("))
        .and_then(|l| l.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no .deb path in:\n{out}"));
    let o = Command::new("dpkg-deb").args(["-c", deb]).output().unwrap();
    let contents = stdout(&o);
    assert!(o.status.success(), "{}", text(&o));
    for f in [
        "./usr/bin/vxrouter",
        "./lib/systemd/system/vxrouter@.service",
        "./usr/share/man/man1/vxrouter.1.gz",
        "./usr/share/bash-completion/completions/vxrouter",
        "./usr/share/zsh/vendor-completions/_vxrouter",
        "./usr/share/fish/vendor_completions.d/vxrouter.fish",
        "./usr/share/doc/vxrouter/examples/host-a.toml",
    ] {
        assert!(contents.lines().any(|l| l.ends_with(f)), "{f} not in the package:\n{contents}");
    }
    // The installation stayed in the overlay: this namespace's dpkg never
    // heard of vxrouter and its files are not on the disk.
    assert!(!Path::new("/usr/bin/vxrouter").exists() && !Path::new("/lib/systemd/system/vxrouter@.service").exists());
    let o = Command::new("dpkg-query").args(["-W", "vxrouter"]).output().unwrap();
    assert!(!o.status.success(), "dpkg of the machine knows vxrouter: {}", text(&o));
}
