//! Signals during a run that changes the host (apply, destroy): SIGINT,
//! SIGTERM and SIGHUP are recorded, not obeyed at once, and the run stops at
//! the next step boundary and rolls back (or, when the last change was
//! already made, completes and says so). SIGPIPE is ignored: a reader that
//! went away (`vxrouter apply | head -3`) only loses output, which is never
//! allowed to abort a transaction.

use std::sync::atomic::{AtomicI32, Ordering};

use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// The last signal other than SIGHUP (SIGHUP alone does not stop a wait for
/// a confirmation: it is what a dying SSH session sends).
static STOP: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(sig: libc::c_int) {
    CAUGHT.store(sig, Ordering::SeqCst);
    if sig != libc::SIGHUP {
        STOP.store(sig, Ordering::SeqCst);
    }
}

/// Installs the handlers for the rest of the process's life.
pub fn guard() {
    let record = SigAction::new(SigHandler::Handler(record), SaFlags::SA_RESTART, SigSet::empty());
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores into an atomic, which is
        // async-signal-safe, and touches nothing else.
        let _ = unsafe { sigaction(sig, &record) };
    }
    // SAFETY: ignoring a signal installs no code at all.
    let _ = unsafe { sigaction(Signal::SIGPIPE, &ignore) };
}

/// The signal received since `guard`, if any ("SIGTERM").
pub fn caught() -> Option<&'static str> {
    name(CAUGHT.load(Ordering::SeqCst))
}

/// SIGINT or SIGTERM received since `guard`.
pub fn caught_to_stop() -> Option<&'static str> {
    name(STOP.load(Ordering::SeqCst))
}

fn name(n: i32) -> Option<&'static str> {
    match n {
        0 => None,
        n => Some(Signal::try_from(n).map(|s| s.as_str()).unwrap_or("a signal")),
    }
}
