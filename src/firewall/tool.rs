//! Running the firewall tools (`iptables-save`/`-restore`, `nft`) inside a
//! namespace: the one place that spawns them, reads their output or feeds
//! them a batch, and turns a failure into an error naming tool and place.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::thread::JoinHandle;

use crate::error::{Context, Result};

use crate::netns;

/// The package that installs `tool`, for "is it installed?" hints.
fn package(tool: &str) -> &'static str {
    if tool == "nft" { "nftables" } else { "iptables" }
}

/// "nft list ruleset", "iptables-restore": the tool and its subcommand words.
fn label(tool: &str, args: &[&str]) -> String {
    std::iter::once(tool).chain(args.iter().copied().take_while(|a| !a.starts_with('-'))).collect::<Vec<_>>().join(" ")
}

fn command(tool: &str, args: &[&str], ns: Option<&File>) -> Command {
    let mut cmd = Command::new(tool);
    cmd.args(args);
    if let Some(f) = ns {
        netns::command_in(&mut cmd, f);
    }
    cmd
}

/// A listing started ahead of time: tool, arguments, namespace (nsfs device
/// and inode; None: here), and the thread running it.
type Early = ((String, Vec<String>, Option<(u64, u64)>), JoinHandle<io::Result<Output>>);

/// Listings started by `prefetch`, waiting for `read` to ask for them.
static EARLY: Mutex<Vec<Early>> = Mutex::new(Vec::new());

fn key(tool: &str, args: &[&str], ns: Option<&File>) -> (String, Vec<String>, Option<(u64, u64)>) {
    let ns = ns.and_then(|f| f.metadata().ok()).map(|m| (m.dev(), m.ino()));
    (tool.to_string(), args.iter().map(|a| a.to_string()).collect(), ns)
}

/// Starts `tool args` in `ns` on a thread of its own, for a `read` of the
/// same later in this run: at N = 1000, `nft list ruleset` takes 30–60 ms
/// (its own process, on the other CPU), which then overlaps with the link
/// dumps instead of following them. Only ever a listing: a run observes
/// under the host lock, so it reads what it would have read a moment later.
pub fn prefetch(tool: &'static str, args: &'static [&'static str], ns: Option<File>) {
    let k = key(tool, args, ns.as_ref());
    let handle = std::thread::spawn(move || command(tool, args, ns.as_ref()).stdin(Stdio::null()).output());
    if let Ok(mut early) = EARLY.lock() {
        early.push((k, handle));
    }
}

/// The output of a prefetched listing of exactly this, if there is one.
fn prefetched(tool: &str, args: &[&str], ns: Option<&File>) -> Option<io::Result<Output>> {
    let k = key(tool, args, ns);
    let handle = {
        let mut early = EARLY.lock().ok()?;
        let at = early.iter().position(|(ek, _)| *ek == k)?;
        early.swap_remove(at).1
    };
    handle.join().ok()
}

/// Runs `tool args` in `ns` (None: here) and returns what it printed.
pub fn read(tool: &str, args: &[&str], ns: Option<&File>, where_: &str) -> Result<String> {
    let out = match prefetched(tool, args, ns) {
        Some(out) => out,
        None => command(tool, args, ns).stdin(Stdio::null()).output(),
    }
    .with_context(|| format!("run {tool} in {where_} (is the {} package installed?)", package(tool)))?;
    if !out.status.success() {
        crate::bail!(Tool, "{} in {where_} failed: {}", label(tool, args), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `tool args` in `ns`, writing `batch` to its standard input: one
/// process, one transaction, whatever the number of rules.
pub fn feed(tool: &str, args: &[&str], ns: Option<&File>, where_: &str, batch: &str) -> Result<()> {
    crate::testhooks::point();
    let mut child = command(tool, args, ns)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {tool} in {where_} (is the {} package installed?)", package(tool)))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Tests die here with half a batch written (a crash inside the batch).
        crate::testhooks::point_then(|| {
            let _ = stdin.write_all(&batch.as_bytes()[..batch.len() / 2]);
            let _ = stdin.flush();
        });
        stdin.write_all(batch.as_bytes()).with_context(|| format!("write rules to {tool} in {where_}"))?;
    }
    let out = child.wait_with_output().with_context(|| format!("wait for {tool} in {where_}"))?;
    if !out.status.success() {
        crate::bail!(Tool, "{} in {where_} failed: {}", label(tool, args), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// True when `tool` is an executable file in one of PATH's directories.
pub fn in_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| std::fs::metadata(d.join(tool)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
    })
}
