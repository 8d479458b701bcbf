//! Fault injection for tests. Compiled to no-ops unless the crate is built
//! with the `fault-injection` feature (scripts/test.sh builds the test binary
//! that way; `cargo install` does not), so production builds ignore the
//! variables below entirely.
//!
//! - `VXROUTER_FAULT_STEP=N`: action N (1-based) of an apply fails.
//! - `VXROUTER_FAULT_SKIP=N`: action N is silently skipped (tests `verify`).
//! - `VXROUTER_FAULT_KILL=K`: the process SIGKILLs itself at mutation point K
//!   (every netlink change, namespace create/delete, sysctl write, firewall
//!   batch — including one point in the middle of writing the batch — and
//!   state-file write count as points).
//! - `VXROUTER_FAULT_COUNT=1`: print the number of mutation points passed to
//!   stderr on exit ("fault-points: K"), so a test can try every K.
//! - `VXROUTER_FAULT_HOLD_MS=ms`: sleep that long right after taking the host
//!   lock (tests concurrency).
//! - `VXROUTER_FAULT_UNDO=1`: every undo fails (an incomplete rollback).
//! - `VXROUTER_FAULT_SIGNAL=N:SIG`: the process sends itself SIG (INT, TERM,
//!   HUP, PIPE) right before action N (tests signal handling); N = steps + 1
//!   is after the last step, before verification, N = steps + 2 after the
//!   run was verified and recorded.
//! - `VXROUTER_FAULT_KILL_AT=NAME`: SIGKILL at the named point NAME (a step
//!   between two netlink changes that a test wants to hit by name, such as
//!   `group-set`: links put into a transient group, not yet deleted).

#[cfg(feature = "fault-injection")]
mod imp {
    use std::sync::atomic::{AtomicUsize, Ordering};

    static POINTS: AtomicUsize = AtomicUsize::new(0);

    fn var(name: &str) -> Option<usize> {
        std::env::var(name).ok().and_then(|v| v.parse().ok())
    }

    pub fn fail_step(step: usize) -> bool {
        var("VXROUTER_FAULT_STEP") == Some(step)
    }

    pub fn skip_step(step: usize) -> bool {
        var("VXROUTER_FAULT_SKIP") == Some(step)
    }

    /// Counts a mutation point; true when the process should die here.
    pub fn hit() -> bool {
        let n = POINTS.fetch_add(1, Ordering::SeqCst) + 1;
        var("VXROUTER_FAULT_KILL") == Some(n)
    }

    pub fn die() -> ! {
        // SAFETY: raising a signal at ourselves.
        unsafe { libc::raise(libc::SIGKILL) };
        std::process::abort()
    }

    pub fn report() {
        if var("VXROUTER_FAULT_COUNT").is_some() {
            eprintln!("fault-points: {}", POINTS.load(Ordering::SeqCst));
        }
    }

    pub fn hold() {
        if let Some(ms) = var("VXROUTER_FAULT_HOLD_MS") {
            std::thread::sleep(std::time::Duration::from_millis(ms as u64));
        }
    }

    pub fn fail_undo() -> bool {
        var("VXROUTER_FAULT_UNDO") == Some(1)
    }

    pub fn named(name: &str) -> bool {
        std::env::var("VXROUTER_FAULT_KILL_AT").is_ok_and(|v| v == name)
    }

    /// Some hook aims at action N (it must run on its own).
    pub fn targets_step(step: usize) -> bool {
        let signal = std::env::var("VXROUTER_FAULT_SIGNAL").ok();
        fail_step(step)
            || skip_step(step)
            || signal.and_then(|s| s.split_once(':').map(|(n, _)| n.parse() == Ok(step))).unwrap_or(false)
    }

    pub fn signal_step(step: usize) {
        let Ok(spec) = std::env::var("VXROUTER_FAULT_SIGNAL") else { return };
        let Some((n, sig)) = spec.split_once(':') else { return };
        if n.parse() != Ok(step) {
            return;
        }
        let sig = match sig {
            "INT" => libc::SIGINT,
            "TERM" => libc::SIGTERM,
            "HUP" => libc::SIGHUP,
            "PIPE" => libc::SIGPIPE,
            _ => return,
        };
        // SAFETY: raising a signal at ourselves; its handler only records it.
        unsafe { libc::raise(sig) };
    }
}

#[cfg(not(feature = "fault-injection"))]
mod imp {
    pub fn fail_step(_: usize) -> bool {
        false
    }
    pub fn skip_step(_: usize) -> bool {
        false
    }
    pub fn hit() -> bool {
        false
    }
    pub fn die() -> ! {
        std::process::abort()
    }
    pub fn report() {}
    pub fn hold() {}
    pub fn signal_step(_: usize) {}
    pub fn fail_undo() -> bool {
        false
    }
    pub fn named(_: &str) -> bool {
        false
    }
    pub fn targets_step(_: usize) -> bool {
        false
    }
}

pub use imp::{fail_step, fail_undo, hit, hold, report, signal_step, skip_step, targets_step};

/// A mutation point: dies here when the test asked for it.
pub fn point() {
    if imp::hit() {
        imp::die();
    }
}

/// A named point (`VXROUTER_FAULT_KILL_AT`): dies here when the test asked
/// for it by name.
pub fn named_point(name: &str) {
    if imp::named(name) {
        imp::die();
    }
}

/// A mutation point where the caller does part of the work first (e.g.
/// writes half a firewall batch) before dying.
pub fn point_then(partial: impl FnOnce()) {
    if imp::hit() {
        partial();
        imp::die();
    }
}
