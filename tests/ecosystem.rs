//! Issue 7 without root: the systemd unit, libvirt networks, completions,
//! the man page and terminal conventions, each checked by the real tool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn vx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vxrouter")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The man page, installed where `man` (and systemd's Documentation=
/// check) finds it.
fn manpath(dir: &Path) -> PathBuf {
    let man1 = dir.join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let o = vx(&["man"]);
    assert!(o.status.success());
    std::fs::write(man1.join("vxrouter.1"), &o.stdout).unwrap();
    dir.join("man")
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let d = tmp("unit");
    let unit = d.join("vxrouter@host-a.service");
    let o = vx(&["render", "systemd", "--bin", env!("CARGO_BIN_EXE_vxrouter")]);
    assert!(o.status.success());
    std::fs::write(&unit, &o.stdout).unwrap();
    let check =
        |path: &Path| Command::new("systemd-analyze").args(["verify"]).arg(path).env("MANPATH", manpath(&d)).output().unwrap();
    let o = check(&unit);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o));
    // Control: the check does catch a broken unit.
    let bad = d.join("vxrouter@bad.service");
    std::fs::write(
        &bad,
        String::from_utf8_lossy(&vx(&["render", "systemd", "--bin", "/nonexistent/vxrouter"]).stdout).as_bytes(),
    )
    .unwrap();
    assert!(!check(&bad).status.success());
    // The shipped copy is the same unit for a packaged binary.
    let shipped = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/vxrouter@.service")).unwrap();
    assert_eq!(shipped, String::from_utf8_lossy(&vx(&["render", "systemd", "--bin", "/usr/bin/vxrouter"]).stdout));
}

#[test]
fn libvirt_networks_validate_against_libvirts_schema() {
    let d = tmp("libvirt");
    let o = vx(&["render", "libvirt", "profiles/three-hosts/host-a.toml", "--out", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let files: Vec<PathBuf> = std::fs::read_dir(&d).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(files.len(), 2, "one network per segment");
    for f in &files {
        let xml = std::fs::read_to_string(f).unwrap();
        // No <mtu> element (libvirt refuses it in bridge mode, issue 13); the
        // segment MTU is said in a comment.
        let elements: String = xml.split("-->").map(|part| part.split("<!--").next().unwrap_or("")).collect();
        assert!(xml.contains("<forward mode='bridge'/>") && !elements.contains("<mtu"), "{xml}");
        assert!(xml.contains("segment MTU "), "{xml}");
        let o = Command::new("virt-xml-validate").arg(f).arg("network").output().unwrap();
        assert!(o.status.success(), "{}: {}", f.display(), text(&o));
    }
    // Control: the validator rejects what libvirt would.
    let broken = d.join("broken.xml");
    std::fs::write(&broken, "<network><forward mode='bridge'/><bridge name='br-x'/></network>").unwrap();
    assert!(!Command::new("virt-xml-validate").arg(&broken).arg("network").output().unwrap().status.success());
}

#[test]
fn completions_and_man_page_come_from_the_command_line() {
    for shell in ["bash", "zsh", "fish"] {
        let o = vx(&["completions", shell]);
        assert!(o.status.success());
        let s = String::from_utf8_lossy(&o.stdout);
        for sub in ["apply", "check", "destroy", "lab", "render"] {
            assert!(s.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let d = tmp("man");
    let page = manpath(&d).join("man1/vxrouter.1");
    let o = Command::new("groff").args(["-man", "-ww", "-z"]).arg(&page).output().unwrap();
    assert!(o.status.success() && o.stderr.is_empty(), "groff: {}", text(&o));
    let roff = std::fs::read_to_string(&page).unwrap();
    for word in ["apply", "check", "destroy", "\\-\\-json", "Exit codes"] {
        assert!(roff.contains(word), "man page lacks {word}");
    }
    for section in [".SH FILES", ".SH EXAMPLES", ".SH SEE ALSO"] {
        assert!(roff.contains(section), "man page lacks {section}");
    }
    // No placeholder address, and no reference to a page of ours that does
    // not exist: vxrouter has one page, every subcommand is in it.
    assert!(!roff.contains("http"), "man page carries a URL");
    let see_also = &roff[roff.find(".SH SEE ALSO").unwrap()..];
    assert!(!see_also.contains("vxrouter\\-"), "man page refers to a vxrouter-* page: {see_also}");
    assert!(vx(&["--version"]).status.success());
}

#[test]
fn colour_only_on_a_terminal_and_never_with_no_color() {
    let bad = tmp("colour").join("bad.toml");
    std::fs::write(&bad, "[host]\nname = \"bad name\"\n").unwrap();
    let bin = env!("CARGO_BIN_EXE_vxrouter");
    // Piped: plain text.
    let o = vx(&["validate", bad.to_str().unwrap()]);
    assert!(!text(&o).contains('\x1b'), "{}", text(&o));
    // On a terminal (script(1) gives it one): coloured; with NO_COLOR: not.
    let on_tty = |no_color: bool| {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{bin} validate {}", bad.display()), "/dev/null"]);
        if no_color {
            cmd.env("NO_COLOR", "1");
        } else {
            cmd.env_remove("NO_COLOR");
        }
        text(&cmd.env("TERM", "xterm").output().unwrap())
    };
    assert!(on_tty(false).contains("\x1b[31merror\x1b[0m"), "{:?}", on_tty(false));
    assert!(!on_tty(true).contains('\x1b'), "{:?}", on_tty(true));
}

#[test]
fn cargo_install_from_the_checkout_gives_a_working_binary() {
    // Install item 6: `cargo install --path .` as the README says (offline,
    // reusing this checkout's release build directory).
    let root = tmp("install");
    let repo = env!("CARGO_MANIFEST_DIR");
    let o = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["install", "--path", ".", "--locked", "--offline", "--quiet", "--root"])
        .arg(&root)
        .arg("--target-dir")
        .arg(Path::new(repo).join("target"))
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let bin = root.join("bin/vxrouter");
    let o = Command::new(&bin).arg("--version").output().unwrap();
    assert!(o.status.success() && String::from_utf8_lossy(&o.stdout).starts_with("vxrouter "), "{}", text(&o));
    let o = Command::new(&bin).args(["validate", "profiles/host-a.toml"]).current_dir(repo).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

/// The toolchain the README asks for is the one both manifests declare
/// (`rust-version`: cargo refuses an older compiler with that message).
#[test]
fn the_readme_states_the_rust_version_the_manifests_declare() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap();
    let declared = |manifest: &str| {
        read(manifest)
            .lines()
            .find_map(|l| l.strip_prefix("rust-version = ").map(|v| v.trim_matches('"').to_string()))
            .unwrap_or_else(|| panic!("{manifest} declares no rust-version"))
    };
    let msrv = declared("Cargo.toml");
    assert_eq!(declared("lab/Cargo.toml"), msrv, "the lab crate declares another rust-version");
    let readme = read("README.md");
    assert!(readme.contains(&format!("Rust {msrv} or newer")), "README does not say \"Rust {msrv} or newer\"");
}
