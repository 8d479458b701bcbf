//! Ctrl-C and friends. `lab up`, `lab run` and `lab check` catch SIGINT,
//! SIGTERM and SIGHUP: the handler only records the signal, and the lab
//! stops at its next step, removes what it built (up, run) and exits with
//! 128 + the signal's number. Every wait of the lab (a child process, a
//! guest booting, a daemon starting) polls this, so an interruption is
//! noticed within a fraction of a second.

use std::process::{Child, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    // Only an atomic store: async-signal-safe.
    RECEIVED.store(sig, Ordering::SeqCst);
}

/// Installs the handlers (once, before threads that wait are started).
pub fn catch() -> Result<()> {
    // SA_RESTART: system calls in progress resume; the lab notices the
    // signal at its next poll, not through EINTR in arbitrary places.
    let action = SigAction::new(SigHandler::Handler(record), SaFlags::SA_RESTART, SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic.
        unsafe { sigaction(sig, &action) }.with_context(|| format!("catch {sig}"))?;
    }
    Ok(())
}

/// The signal received, if any.
pub fn received() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// The error that unwinds an interrupted lab command to `main`.
#[derive(Debug)]
pub struct Interrupted(pub i32);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = Signal::try_from(self.0).map(|s| s.as_str()).unwrap_or("a signal");
        write!(f, "interrupted by {name}")
    }
}

impl std::error::Error for Interrupted {}

/// Err(Interrupted) once a signal arrived.
pub fn check() -> Result<()> {
    match received() {
        Some(s) => Err(Interrupted(s).into()),
        None => Ok(()),
    }
}

/// The signal an error chain carries, if it is an interruption.
pub fn of(e: &anyhow::Error) -> Option<i32> {
    e.chain().find_map(|c| c.downcast_ref::<Interrupted>()).map(|i| i.0)
}

/// Waits for a child, at most `timeout`, polling for interruptions. On an
/// interruption the child gets the same signal (it may want to clean up,
/// as `vxrouter apply` rolls back), then SIGKILL after 10 s; on timeout,
/// SIGKILL. Either way it is reaped before this returns.
pub fn wait(child: &mut Child, what: &str, timeout: Duration) -> Result<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().with_context(|| format!("wait for {what}"))? {
            // A Ctrl-C reaches the child too (same process group) and may
            // have ended it: that is the interruption, not its failure.
            if let Some(sig) = received() {
                return Err(Interrupted(sig).into());
            }
            return Ok(st);
        }
        if let Some(sig) = received() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            if let Ok(s) = Signal::try_from(sig) {
                let _ = nix::sys::signal::kill(pid, s);
            }
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(10) {
                if child.try_wait().ok().flatten().is_some() {
                    return Err(Interrupted(sig).into());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            return Err(Interrupted(sig).into());
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("{what} did not finish within {} s", timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Like `Command::output`, but interruptible and bounded (see `wait`).
pub fn output(cmd: &mut std::process::Command, what: &str, timeout: Duration) -> Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("start {what}"))?;
    // Drain both pipes on threads, so a chatty child never blocks on a full pipe.
    let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.stdout.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>));
    let err = drain(child.stderr.take().map(|o| Box::new(o) as Box<dyn std::io::Read + Send>));
    let status = wait(&mut child, what, timeout)?;
    Ok(Output { status, stdout: out.join().unwrap_or_default(), stderr: err.join().unwrap_or_default() })
}
