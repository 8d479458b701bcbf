//! The command line without root: validation, exit codes, JSON.

use std::process::Command;

fn vx(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vxrouter")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

#[test]
fn shipped_profiles_validate() {
    for p in
        ["profiles/host-a.toml", "profiles/host-b.toml", "profiles/three-hosts/host-a.toml", "profiles/three-hosts/host-c.toml"]
    {
        let o = vx(&["validate", p]);
        assert_eq!(o.status.code(), Some(0), "{p}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = vx(&["validate", "--json", "profiles/host-a.toml"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["parsed"]["router"]["public"]["leg"]["address"], "203.0.113.123/24");
}

#[test]
fn invalid_profile_exits_1_with_location_key_and_reason() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let bad = dir.join("cli-bad.toml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/host-b.toml"))
        .unwrap()
        .replace("vni = 1070", "vni = 16777216");
    std::fs::write(&bad, text).unwrap();
    let o = vx(&["validate", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cli-bad.toml:12:7: segment[0].vni: VNI 16777216 is out of range 1-16777215"), "{err}");
    let o = vx(&["validate", "/nonexistent/profile.toml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read profile"));
}

#[test]
fn version_and_usage() {
    let o = vx(&["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("vxrouter "));
    let o = vx(&["frobnicate"]);
    assert_eq!(o.status.code(), Some(64), "usage errors exit 64 (EX_USAGE), not 2 (drift)");
    let o = vx(&["check", "--no-such-flag", "p.toml"]);
    assert_eq!(o.status.code(), Some(64), "a mistyped flag is a usage error");
    let o = vx(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    // Global flags only where they mean something: refused, not ignored.
    for (args, says) in [
        (&["completions", "bash", "--json"][..], "--json means nothing to `vxrouter completions`"),
        (&["--json", "man"][..], "--json means nothing to `vxrouter man`"),
        (&["render", "systemd", "--lock-timeout", "3"][..], "--lock-timeout means nothing to `vxrouter render`"),
        (&["man", "-q"][..], "-q/-v mean nothing to `vxrouter man`"),
    ] {
        let o = vx(args);
        assert_eq!(o.status.code(), Some(64), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains(says), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // Control: where they mean something they are accepted.
    let o = vx(&["validate", "--json", concat!(env!("CARGO_MANIFEST_DIR"), "/profiles/host-a.toml")]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
}
