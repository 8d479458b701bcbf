//! One error type for everything vxrouter reports, in nmstate's shape: a
//! kind, which decides the exit code, a message, and the context it arose in
//! ("create vxlan vxlan1070 on eth0: File exists").

use std::fmt;

use serde::Serialize;

/// What went wrong, as far as the caller (and the exit code) is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The command line is wrong.
    Usage,
    /// The profile or lab file is invalid; nothing was looked at or changed.
    InvalidProfile,
    /// The host stands in the way (a wanted name owned by someone else, a
    /// missing device, a profile that needs something absent); nothing changed.
    Conflict,
    /// The kernel refused a request.
    Kernel,
    /// A tool or daemon vxrouter drives failed (iptables, nft, dnsmasq, …).
    Tool,
    /// Reading or writing a file failed.
    Io,
    /// Not allowed: vxrouter needs root (CAP_NET_ADMIN) for this.
    Permission,
    /// Applied, but the host still differs from the profile afterwards.
    Verification,
    /// A run failed and undoing it failed too: the host needs attention.
    IncompleteRollback,
    /// Stopped by a signal (SIGINT, SIGTERM, SIGHUP).
    Interrupted,
    /// `apply --confirm` was not confirmed in time: rolled back.
    NotConfirmed,
    /// A bug in vxrouter.
    Internal,
}

/// Exit codes, the operator contract (docs/cli.md).
pub mod exit {
    pub const OK: u8 = 0;
    /// An error; nothing was changed, or what was changed was rolled back.
    pub const ERROR: u8 = 1;
    /// `check`: the host differs from the profile.
    pub const DRIFT: u8 = 2;
    /// A failed run could not be rolled back completely.
    pub const INCOMPLETE_ROLLBACK: u8 = 3;
    /// The command line was wrong (EX_USAGE).
    pub const USAGE: u8 = 64;
}

impl ErrorKind {
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::IncompleteRollback => exit::INCOMPLETE_ROLLBACK,
            _ => exit::ERROR,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    /// What was being done, innermost first.
    context: Vec<String>,
    /// The OS or kernel error number behind it, when there is one.
    errno: Option<i32>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), context: Vec::new(), errno: None }
    }

    pub fn with_errno(mut self, errno: i32) -> Error {
        self.errno = Some(errno);
        if matches!(errno, libc::EPERM | libc::EACCES) && matches!(self.kind, ErrorKind::Kernel | ErrorKind::Io) {
            self.kind = ErrorKind::Permission;
        }
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    /// The same error as another kind (e.g. a kernel error during rollback
    /// that makes the rollback incomplete).
    pub fn as_kind(mut self, kind: ErrorKind) -> Error {
        self.kind = kind;
        self
    }

    /// Adds what was being done when this happened (outermost last).
    pub fn context(mut self, what: impl fmt::Display) -> Error {
        self.context.push(what.to_string());
        self
    }

    /// The message without context.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.context.iter().rev() {
            write!(f, "{c}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// "Permission denied (os error 13)" → "Permission denied".
pub fn os_text(errno: i32) -> String {
    let text = std::io::Error::from_raw_os_error(errno).to_string();
    text.split(" (os error").next().unwrap_or(&text).to_string()
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        match e.raw_os_error() {
            Some(n) => Error::new(ErrorKind::Io, os_text(n)).with_errno(n),
            None => Error::new(ErrorKind::Io, e.to_string()),
        }
    }
}

impl From<nix::errno::Errno> for Error {
    fn from(e: nix::errno::Errno) -> Error {
        Error::new(ErrorKind::Kernel, os_text(e as i32)).with_errno(e as i32)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::new(ErrorKind::Internal, format!("JSON: {e}"))
    }
}

impl From<crate::profile::ProfileErrors> for Error {
    fn from(e: crate::profile::ProfileErrors) -> Error {
        Error::new(ErrorKind::InvalidProfile, e.to_string())
    }
}

/// `.context(…)` and `.with_context(|| …)` on any result whose error
/// converts into [`Error`].
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// `error!(Kind, "format", args…)`: an [`Error`] of that kind.
#[macro_export]
macro_rules! error {
    ($kind:ident, $($arg:tt)*) => {
        $crate::error::Error::new($crate::error::ErrorKind::$kind, format!($($arg)*))
    };
}

/// `bail!(Kind, "format", args…)`: returns that error.
#[macro_export]
macro_rules! bail {
    ($kind:ident, $($arg:tt)*) => {
        return Err($crate::error!($kind, $($arg)*))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_reads_outermost_first_and_kind_decides_the_exit_code() {
        let e: Result<()> = Err(std::io::Error::from_raw_os_error(libc::ENOENT).into());
        let e = e.context("read /run/vxrouter/a.state.json").context("load state").unwrap_err();
        assert_eq!(e.to_string(), "load state: read /run/vxrouter/a.state.json: No such file or directory");
        assert_eq!(e.kind().exit_code(), exit::ERROR);
        assert_eq!(error!(Usage, "x").kind().exit_code(), exit::USAGE);
        assert_eq!(error!(IncompleteRollback, "x").kind().exit_code(), exit::INCOMPLETE_ROLLBACK);
        let denied: Error = std::io::Error::from_raw_os_error(libc::EACCES).into();
        assert_eq!(denied.kind(), ErrorKind::Permission);
    }
}
