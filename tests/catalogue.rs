//! The catalogue of broken profiles in `tests/bad-profiles/`: every case must
//! be refused, and its first error must point at the listed line:column and
//! key and give the listed reason. No root needed.
//!
//! Files that are not profiles at all (a FIFO, a device, a file over the
//! size limit) cannot live in the catalogue; they are made by the tests at
//! the end of this file.
//!
//! `expected.txt` has one line per case:
//! `FILE<TAB>LINE:COLUMN<TAB>KEY<TAB>FRAGMENT`, KEY `-` when the error names no
//! key, FRAGMENT a substring of the reason. Lines starting with `#` and blank
//! lines are ignored.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vxrouter::profile::{MAX_PROFILE_BYTES, Profile, ProfileError};

const MIN_CASES: usize = 178;

#[derive(Debug)]
struct Case {
    file: String,
    line: usize,
    column: usize,
    /// Empty when the error names no key (`-` in the table).
    key: String,
    fragment: String,
}

impl Case {
    fn path(&self) -> PathBuf {
        catalogue_dir().join(&self.file)
    }
}

fn catalogue_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bad-profiles")
}

fn parse_case(n: usize, line: &str) -> Case {
    let bad = |why: &str| -> ! { panic!("expected.txt:{n}: {why}: {line:?}") };
    let fields: Vec<&str> = line.split('\t').collect();
    let [file, at, key, fragment] = fields[..] else { bad("want 4 tab-separated fields") };
    let (l, c) = at.split_once(':').unwrap_or_else(|| bad("want LINE:COLUMN"));
    let number = |s: &str| s.parse::<usize>().unwrap_or_else(|_| bad("LINE and COLUMN must be numbers"));
    if fragment.is_empty() {
        bad("empty fragment");
    }
    Case {
        file: file.to_string(),
        line: number(l),
        column: number(c),
        key: if key == "-" { String::new() } else { key.to_string() },
        fragment: fragment.to_string(),
    }
}

fn cases() -> Vec<Case> {
    let table = std::fs::read_to_string(catalogue_dir().join("expected.txt")).expect("read expected.txt");
    table
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|(i, l)| parse_case(i + 1, l))
        .collect()
}

/// Keeps failure messages readable when a case holds a huge value.
fn short(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let cut = (0..=MAX).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

/// `Ok` when nothing is wrong, else one line naming the case, its problems
/// and what was actually produced.
fn verdict(case: &Case, problems: Vec<String>, got: &str) -> Result<(), String> {
    if problems.is_empty() { Ok(()) } else { Err(format!("{}: {} — got: {}", case.file, problems.join("; "), short(got))) }
}

/// Checks one case through the library.
fn check_load(case: &Case) -> Result<(), String> {
    let path = case.path();
    let errors = match Profile::load(&path) {
        Ok(_) => return Err(format!("{}: validated, but it is listed as broken", case.file)),
        Err(errors) => errors,
    };
    let Some(err) = errors.0.first() else { return Err(format!("{}: Err without any error", case.file)) };
    let mut problems = Vec::new();
    if (err.line, err.column) != (case.line, case.column) {
        problems.push(format!("at {}:{}, expected {}:{}", err.line, err.column, case.line, case.column));
    }
    if err.key != case.key {
        problems.push(format!("key {:?}, expected {:?}", err.key, case.key));
    }
    if !err.reason.contains(&case.fragment) {
        problems.push(format!("reason lacks {:?}", case.fragment));
    }
    let prefix = format!("{}:{}:{}:", path.display(), case.line, case.column);
    if !err.to_string().starts_with(&prefix) {
        problems.push(format!("display does not start with {prefix:?}"));
    }
    verdict(case, problems, &err.to_string())
}

fn validate_with_binary(path: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vxrouter")).arg("validate").arg(path).output().expect("run vxrouter")
}

/// Checks one case through `vxrouter validate`.
fn check_binary(case: &Case) -> Result<(), String> {
    let out = validate_with_binary(&case.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let expected_start = format!("error: {}:{}:{}:", case.path().display(), case.line, case.column);
    let mut problems = Vec::new();
    if out.status.code() != Some(1) {
        problems.push(format!("exit status {:?}, expected 1", out.status.code()));
    }
    if !stderr.contains(&case.fragment) {
        problems.push(format!("stderr lacks {:?}", case.fragment));
    }
    if !stderr.starts_with(&expected_start) {
        problems.push(format!("stderr does not start with {expected_start:?}"));
    }
    verdict(case, problems, &stderr)
}

/// Runs `check` on every case and reports all failures at once.
fn check_all(check: fn(&Case) -> Result<(), String>) {
    let cases = cases();
    assert!(!cases.is_empty(), "expected.txt lists no cases");
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn every_case_is_refused_at_the_listed_location_key_and_reason() {
    check_all(check_load);
}

#[test]
fn the_binary_refuses_every_case_with_exit_1() {
    check_all(check_binary);
}

#[test]
fn every_case_file_is_listed_once_and_there_are_enough() {
    let listed: Vec<String> = cases().into_iter().map(|c| c.file).collect();
    let unique: BTreeSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "a case is listed twice in expected.txt");

    let on_disk: BTreeSet<String> = std::fs::read_dir(catalogue_dir())
        .expect("read tests/bad-profiles")
        .map(|e| e.expect("directory entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".toml"))
        .collect();
    let unlisted: Vec<&String> = on_disk.iter().filter(|f| !unique.contains(f)).collect();
    let missing: Vec<&&String> = unique.iter().filter(|f| !on_disk.contains(**f)).collect();
    assert!(unlisted.is_empty(), "case files missing from expected.txt: {unlisted:?}");
    assert!(missing.is_empty(), "expected.txt lists files that do not exist: {missing:?}");
    assert!(listed.len() >= MIN_CASES, "only {} cases; the catalogue needs at least {MIN_CASES}", listed.len());

    let numbers: Vec<&str> = listed.iter().map(|f| f.split('-').next().unwrap_or_default()).collect();
    for (f, n) in listed.iter().zip(&numbers) {
        assert!(n.len() >= 2 && n.bytes().all(|b| b.is_ascii_digit()), "{f}: name must be NN-short-name.toml");
    }
    assert_eq!(numbers.iter().collect::<BTreeSet<_>>().len(), numbers.len(), "two cases share a number");
}

#[test]
fn an_unreadable_profile_is_reported_without_a_key() {
    let dir = catalogue_dir();
    let errors = Profile::load(&dir).expect_err("a directory is not a profile");
    let [err] = &errors.0[..] else { panic!("want exactly one error, got {errors:?}") };
    assert_eq!((err.line, err.column, err.key.as_str()), (1, 1, ""), "{err}");
    assert!(err.reason.contains("cannot read profile"), "{err}");
    assert!(err.to_string().starts_with(&format!("{}:1:1: cannot read profile", dir.display())), "{err}");

    let out = validate_with_binary(&dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read profile"));
}

/// A fresh directory for files these tests make.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("catalogue-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}

/// The one error `Profile::load` gives for a file that is not a profile;
/// it must be at 1:1 with no key, like every file-level error.
fn load_error(path: &Path) -> ProfileError {
    let errors = Profile::load(path).expect_err("not a profile");
    let [err] = &errors.0[..] else { panic!("want exactly one error, got {errors:?}") };
    assert_eq!((err.line, err.column, err.key.as_str()), (1, 1, ""), "{err}");
    assert!(err.reason.starts_with("cannot read profile: "), "{err}");
    err.clone()
}

/// Waiting for a FIFO's writer would block forever; the load must return
/// at once. A hang guard, not a time limit: the load either returns in
/// microseconds or never.
#[test]
fn a_fifo_is_refused_without_waiting_for_a_writer() {
    let fifo = scratch("fifo").join("profile.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let (tx, rx) = mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || tx.send(load_error(&path)));
    let err = rx.recv_timeout(Duration::from_secs(60)).expect("Profile::load blocked on a FIFO");
    assert!(err.reason.contains("it is a FIFO (named pipe); a profile must be a regular file"), "{err}");

    // The binary too, killed if it hangs.
    let mut child = Command::new(env!("CARGO_BIN_EXE_vxrouter"))
        .arg("validate")
        .arg(&fifo)
        .stderr(Stdio::piped())
        .spawn()
        .expect("run vxrouter");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("vxrouter validate blocked on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(1));
}

#[test]
fn devices_are_refused_without_reading_them() {
    // /dev/zero never ends: it must not be read until memory runs out.
    let err = load_error(Path::new("/dev/zero"));
    assert!(err.reason.contains("it is a character device; a profile must be a regular file"), "{err}");
    assert_eq!(err.to_string(), format!("/dev/zero:1:1: {}", err.reason));
    // Also through a symbolic link (which is followed for regular files).
    let dir = scratch("devices");
    std::os::unix::fs::symlink("/dev/zero", dir.join("zero.toml")).expect("symlink");
    assert!(load_error(&dir.join("zero.toml")).reason.contains("character device"));
    let out = validate_with_binary(Path::new("/dev/zero"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: /dev/zero:1:1: cannot read profile: it is a character device"), "{stderr}");
    assert!(load_error(&catalogue_dir()).reason.contains("it is a directory"));
}

#[test]
fn profiles_are_limited_to_one_mib() {
    let dir = scratch("size");
    // A valid profile padded with comments to exactly the limit is read.
    let seed = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/host-b.toml")).expect("read seed");
    let mut text = seed.clone();
    let limit = usize::try_from(MAX_PROFILE_BYTES).expect("fits");
    while text.len() < limit {
        let room = limit - text.len();
        let line = format!("#{}\n", "x".repeat(room.clamp(1, 100) - 1));
        text.push_str(&line);
    }
    assert_eq!(text.len(), limit);
    let at_limit = dir.join("at-limit.toml");
    std::fs::write(&at_limit, &text).expect("write");
    let symlink = dir.join("link.toml");
    std::os::unix::fs::symlink(&at_limit, &symlink).expect("symlink");
    Profile::load(&at_limit).expect("a profile of exactly 1 MiB is read");
    Profile::load(&symlink).expect("a symbolic link to a profile is followed");

    // One byte more is refused, before anything is parsed.
    text.push('\n');
    let over = dir.join("over.toml");
    std::fs::write(&over, &text).expect("write");
    let err = load_error(&over);
    assert_eq!(err.reason, "cannot read profile: it is 1048577 bytes; a profile may have at most 1048576 (1 MiB)");
    let out = validate_with_binary(&over);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a profile may have at most 1048576 (1 MiB)"));
}
