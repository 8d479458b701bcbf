//! `apply --confirm SECONDS`, like `netplan try`: the applied change stands
//! only if `vxrouter confirm` (or Enter on the terminal) arrives in time;
//! otherwise the run is rolled back to exactly what was there before.
//!
//! The waiting is done by a child process in a session of its own, holding
//! the run's journal, sockets and host lock: it outlives an SSH session
//! that dies (the parent may be killed with the terminal), and hangs up on
//! nothing. `vxrouter confirm` (from any session) drops a file the child
//! looks for; SIGINT or SIGTERM to the child roll back at once, SIGHUP is
//! ignored (that is what a dying session sends).

use std::fs;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context, Result};

/// How the wait ended, in the process that runs on.
pub enum Outcome {
    Confirmed,
    /// Not confirmed (why); the caller rolls back.
    Refused(String),
}

fn marker(dir: &Path, host: &str) -> PathBuf {
    dir.join(format!("{host}.confirming"))
}

fn confirmation(dir: &Path, host: &str) -> PathBuf {
    dir.join(format!("{host}.confirm"))
}

/// Waits for a confirmation for up to `secs`. Returns in the child process
/// (the one that goes on to keep or roll back the change); the parent only
/// relays the outcome and exits with the child's code (`finish` tells it).
pub fn wait(dir: &Path, host: &str, secs: u64) -> Result<Outcome> {
    let _ = fs::remove_file(confirmation(dir, host));
    let deadline = Instant::now() + Duration::from_secs(secs);
    // The marker names the waiting process (the child, below); `confirm`
    // looks for it. It exists before the parent can return.
    crate::fsutil::write_private(&marker(dir, host), b"\n")?;
    crate::say!(
        "applied; keeping it only if confirmed within {secs} s: press Enter here, or run `vxrouter confirm` (from any session)"
    );
    // SAFETY: the process has no other thread at this point (the run's
    // helper threads are joined before the steps), so the child starts from
    // a consistent copy of it; it only continues vxrouter's own code.
    match unsafe { nix::unistd::fork() }.context("fork the confirmation waiter")? {
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::setsid();
            let _ = crate::fsutil::write_private(&marker(dir, host), format!("{}\n", std::process::id()).as_bytes());
            let outcome = watch(dir, host, deadline);
            let _ = fs::remove_file(marker(dir, host));
            let _ = fs::remove_file(confirmation(dir, host));
            Ok(outcome)
        }
        nix::unistd::ForkResult::Parent { child } => {
            if std::io::stdin().is_terminal() {
                let file = confirmation(dir, host);
                std::thread::spawn(move || {
                    let mut line = String::new();
                    if std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {
                        let _ = crate::fsutil::write_private(&file, b"enter\n");
                    }
                });
            }
            // Ctrl-C (or SIGTERM) here is the operator saying no: the
            // waiter, in a session of its own, does not get it from the
            // terminal, so it is passed on and the waiter rolls back now.
            // SIGHUP is not passed on: a dying SSH session sends it, and
            // `vxrouter confirm` from a new session must still be possible.
            let mut passed_on = false;
            let code = loop {
                use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
                match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, code)) => break code,
                    Ok(WaitStatus::Signaled(..)) => break 3,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e).context("wait for the confirmation waiter"),
                }
                if !passed_on && let Some(sig) = crate::signals::caught_to_stop() {
                    let sig = if sig == "SIGINT" { nix::sys::signal::Signal::SIGINT } else { nix::sys::signal::Signal::SIGTERM };
                    let _ = nix::sys::signal::kill(child, sig);
                    passed_on = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            std::process::exit(code);
        }
    }
}

fn watch(dir: &Path, host: &str, deadline: Instant) -> Outcome {
    loop {
        if confirmation(dir, host).exists() {
            return Outcome::Confirmed;
        }
        if let Some(sig) = crate::signals::caught_to_stop() {
            return Outcome::Refused(format!("interrupted by {sig} while waiting for a confirmation"));
        }
        if Instant::now() >= deadline {
            return Outcome::Refused("not confirmed in time".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `vxrouter confirm [--host NAME]`: keeps a change `apply --confirm` is
/// holding.
pub fn confirm(dir: &Path, host: Option<&str>) -> Result<u8> {
    let waiting: Vec<String> = fs::read_dir(dir)
        .map(|d| d.flatten().filter_map(|e| e.file_name().to_str()?.strip_suffix(".confirming").map(str::to_string)).collect())
        .unwrap_or_default();
    let host = match (host, waiting.as_slice()) {
        (Some(h), _) if waiting.iter().any(|w| w == h) => h.to_string(),
        (Some(h), _) => crate::bail!(Conflict, "no apply of {h} is waiting for a confirmation"),
        (None, [one]) => one.clone(),
        (None, []) => crate::bail!(Conflict, "no apply is waiting for a confirmation"),
        (None, many) => {
            crate::bail!(Usage, "several applies wait for a confirmation ({}); name one with --host", many.join(", "))
        }
    };
    crate::fsutil::write_private(&confirmation(dir, &host), b"confirm\n")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while marker(dir, &host).exists() {
        if Instant::now() >= deadline {
            crate::bail!(Conflict, "the apply of {host} did not take the confirmation within 5 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    crate::say!("confirmed: {host} keeps the change");
    Ok(crate::error::exit::OK)
}
