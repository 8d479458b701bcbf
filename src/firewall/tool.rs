//! Running the firewall tools (`iptables-save`/`-restore`, `nft`) inside a
//! namespace: the one place that spawns them, reads their output or feeds
//! them a batch, and turns a failure into an error naming tool and place.

use std::fs::File;
use std::io::Write;
use std::process::{Command, Stdio};

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
    // A process group of its own: Ctrl-C at the terminal reaches vxrouter
    // (which rolls back at the next step) but never a tool in the middle of
    // a transaction, whose outcome the journal must know.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Some(f) = ns {
        netns::command_in(&mut cmd, f);
    }
    cmd
}

/// Runs `tool args` in `ns` (None: here) and returns what it printed.
pub fn read(tool: &str, args: &[&str], ns: Option<&File>, where_: &str) -> Result<String> {
    let out = command(tool, args, ns)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {tool} in {where_} (is the {} package installed?)", package(tool)))?;
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr);
        if denied(&why) {
            crate::bail!(Permission, "{} in {where_} failed: {}", label(tool, args), why.trim());
        }
        crate::bail!(Tool, "{} in {where_} failed: {}", label(tool, args), why.trim());
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
        let why = String::from_utf8_lossy(&out.stderr);
        if denied(&why) {
            crate::bail!(Permission, "{} in {where_} failed: {}", label(tool, args), why.trim());
        }
        crate::bail!(Tool, "{} in {where_} failed: {}", label(tool, args), why.trim());
    }
    Ok(())
}

/// The tool was refused for want of privileges (run without root: the
/// error then says vxrouter needs root, as a refused netlink request does).
fn denied(stderr: &str) -> bool {
    !nix::unistd::geteuid().is_root() && (stderr.contains("Permission denied") || stderr.contains("Operation not permitted"))
}

/// True when `tool` is an executable file in one of PATH's directories.
pub fn in_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|d| std::fs::metadata(d.join(tool)).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
    })
}
