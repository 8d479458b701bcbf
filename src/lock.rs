//! One vxrouter run at a time per host: an exclusive lock (`flock`, through
//! `File::try_lock`) on <run dir>/lock. A second run waits (saying for whom)
//! up to a timeout. The kernel drops the lock when the holder exits, even on
//! kill -9.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Context, Result};

pub struct HostLock {
    file: File,
    path: PathBuf,
}

impl HostLock {
    /// Takes the host lock in `dir`, waiting up to `timeout`. `on_wait` is
    /// called once with the holder's description when the lock is busy.
    pub fn acquire(dir: &Path, timeout: Duration, mut on_wait: impl FnMut(&str)) -> Result<HostLock> {
        let path = dir.join("lock");
        let start = Instant::now();
        let mut told = false;
        let mut file = loop {
            crate::fsutil::private_dir(dir)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))?;
            match file.try_lock() {
                // `destroy` removes the lock file when the host is clean; a
                // lock taken on a file that was removed meanwhile is no lock.
                Ok(()) if same_file(&file, &path) => break file,
                Ok(()) => continue,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("lock {}", path.display())),
            }
            if !told {
                let mut holder = String::new();
                let _ = (&file).read_to_string(&mut holder);
                let holder = holder.trim();
                on_wait(if holder.is_empty() { "another vxrouter run" } else { holder });
                told = true;
            }
            if start.elapsed() >= timeout {
                crate::bail!(
                    Conflict,
                    "another vxrouter run still holds {} after {}s; try again later or raise --lock-timeout",
                    path.display(),
                    timeout.as_secs()
                );
            }
            if let Some(sig) = crate::signals::caught() {
                crate::bail!(Interrupted, "interrupted by {sig} while waiting for the host lock; nothing was changed");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let me = format!("vxrouter pid {} ({})", std::process::id(), std::env::args().skip(1).collect::<Vec<_>>().join(" "));
        let _ = file.set_len(0);
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.write_all(me.as_bytes());
        Ok(HostLock { file, path })
    }

    /// Takes the host lock shared, for commands that only read the host:
    /// they wait for a run that changes it, not for each other. The lock
    /// file is opened read-only and never created, so they work on a
    /// read-only run directory; None when there is no lock file (nothing
    /// was ever applied, so there is nothing to wait for).
    pub fn acquire_shared(dir: &Path, timeout: Duration, mut on_wait: impl FnMut(&str)) -> Result<Option<HostLock>> {
        let path = dir.join("lock");
        let start = Instant::now();
        let mut told = false;
        loop {
            let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("open {}", path.display())),
            };
            match file.try_lock_shared() {
                Ok(()) if same_file(&file, &path) => return Ok(Some(HostLock { file, path })),
                Ok(()) => continue,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => return Err(e).with_context(|| format!("lock {}", path.display())),
            }
            if !told {
                let mut holder = String::new();
                let _ = (&file).read_to_string(&mut holder);
                let holder = holder.trim();
                on_wait(if holder.is_empty() { "another vxrouter run" } else { holder });
                told = true;
            }
            if start.elapsed() >= timeout {
                crate::bail!(
                    Conflict,
                    "another vxrouter run still holds {} after {}s; try again later or raise --lock-timeout",
                    path.display(),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Removes the lock file (and the run directory if empty) while still
    /// holding the lock; waiters notice the file is gone and start over.
    pub fn remove_files(self) {
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_dir(dir);
        }
        drop(self.file);
    }
}

fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}
