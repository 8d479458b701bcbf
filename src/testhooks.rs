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
}

pub use imp::{fail_step, hit, hold, report, skip_step};

/// A mutation point: dies here when the test asked for it.
pub fn point() {
    if imp::hit() {
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
