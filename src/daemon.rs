//! The processes vxrouter supervises (dnsmasq, keepalived, conntrackd):
//! recognising one by its pid and command line, and stopping one for real.
//! The kinds that own them (kinds/dhcp.rs, kinds/keepalived.rs,
//! kinds/conntrackd.rs) decide when; this module only knows processes.

use std::fs;
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Context, Result};

/// The pid a pid file names, if it names one.
pub fn read_pid(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// True when the process runs with `arg` among its arguments: a pid that
/// was recycled by another process is never mistaken for ours.
pub fn alive(pid: u32, arg: &str) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes())
}

/// Fields of /proc/PID/stat after the command name (which may contain
/// spaces and parentheses, so split at the last ')').
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The process's state letter (R, S, D, Z, X, …).
pub fn process_state(pid: u32) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// When the process started (clock ticks since boot): tells a pid reused by
/// another process from the one that was there.
pub fn started_at(pid: u32) -> Option<u64> {
    // Field 22 of stat; the fields after ')' start at field 3.
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// Processes named `comm` with `arg` among their arguments, in this
/// process's mount namespace: the same path names another file in another
/// mount namespace (a container, another lab host), and that process is
/// not ours.
pub fn find(comm: &str, arg: &str) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let mnt = |p: &str| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(mine) = mnt("/proc/self/ns/mnt") else { return vec![] };
    let Ok(procs) = fs::read_dir("/proc") else { return vec![] };
    let mut out = Vec::new();
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if fs::read_to_string(p.path().join("comm")).map(|c| c.trim() != comm).unwrap_or(true) {
            continue;
        }
        if alive(pid, arg) && mnt(&format!("/proc/{pid}/ns/mnt")) == Some(mine) {
            out.push(pid);
        }
    }
    out.sort();
    out
}

/// Stops a process: SIGTERM, then SIGKILL if it has not gone after
/// `grace`. Gone means exited as far as its sockets go: the process is no
/// more, or a zombie, or the pid is another process's. Not "its cmdline no
/// longer matches": the kernel drops the memory (and with it
/// /proc/PID/cmdline) before it closes the files, and a restart in that
/// window finds the port still bound (seen with dnsmasq: "failed to create
/// listening socket … Address already in use").
pub fn terminate(pid: u32, what: &str, grace: Duration) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    let target = nix::unistd::Pid::from_raw(pid as i32);
    let born = started_at(pid);
    let gone = || {
        kill(target, None).is_err() || !matches!(process_state(pid), Some(s) if s != 'Z' && s != 'X') || started_at(pid) != born
    };
    for (signal, wait) in [(Signal::SIGTERM, grace), (Signal::SIGKILL, Duration::from_secs(3))] {
        let _ = kill(target, signal);
        let deadline = Instant::now() + wait;
        while !gone() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if gone() {
            return Ok(());
        }
    }
    crate::bail!(Tool, "{what} (pid {pid}) did not stop")
}

/// Sends SIGHUP (reload the configuration).
pub fn reload(pid: u32, what: &str) -> Result<()> {
    use nix::sys::signal::{Signal, kill};
    kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGHUP).with_context(|| format!("signal {what} (pid {pid}) to reload"))
}

/// The files of one daemon kind for one host, one set per router
/// namespace: <run dir>/<kind>/<host>/<namespace>.<ext>.
pub struct NsFiles {
    dir: std::path::PathBuf,
}

impl NsFiles {
    pub fn new(run_dir: &Path, kind: &str, host: &str) -> NsFiles {
        NsFiles { dir: run_dir.join(kind).join(host) }
    }

    pub fn path(&self, ns: &str, ext: &str) -> std::path::PathBuf {
        self.dir.join(format!("{ns}.{ext}"))
    }

    /// Each namespace's config file text (`<ns>.conf`), by namespace.
    pub fn configs(&self) -> Result<Vec<(String, String)>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).with_context(|| format!("read {}", self.dir.display())),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(ns) = name.strip_suffix(".conf") else { continue };
            let config = fs::read_to_string(e.path()).with_context(|| format!("read {}", e.path().display()))?;
            out.push((ns.to_string(), config));
        }
        out.sort();
        Ok(out)
    }

    /// Makes the run, kind and host directories, private to root.
    pub fn make_dirs(&self) -> Result<()> {
        for d in [self.dir.parent().and_then(Path::parent), self.dir.parent(), Some(self.dir.as_path())].into_iter().flatten() {
            crate::fsutil::private_dir(d)?;
        }
        Ok(())
    }

    /// Removes the host and kind directories once empty.
    pub fn remove_empty_dirs(&self) {
        let _ = fs::remove_dir(&self.dir);
        let _ = self.dir.parent().map(fs::remove_dir);
    }
}

/// Removes files that may or may not exist.
pub fn remove_files<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<()> {
    for p in paths {
        match fs::remove_file(p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", p.display())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_state_and_start_time_of_a_live_process() {
        let me = std::process::id();
        assert!(matches!(process_state(me), Some('R' | 'S')), "{:?}", process_state(me));
        assert!(started_at(me).is_some());
        assert_eq!(started_at(me), started_at(me));
        assert_eq!(process_state(u32::MAX), None);
    }

    #[test]
    fn a_process_is_recognised_by_an_argument() {
        let me = std::process::id();
        let first = std::env::args().next().unwrap_or_default();
        assert!(alive(me, &first));
        assert!(!alive(me, "--no-such-argument-anywhere"));
        assert!(!alive(u32::MAX, &first));
    }
}
