//! Named network namespaces, made the way `ip netns add` makes them (a bind
//! mount of the namespace under /run/netns), so `ip netns exec ns1 …` works
//! for operators; and helpers to run code or commands inside one.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Result};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};

pub const NETNS_RUN_DIR: &str = "/run/netns";

pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Opens a named namespace; `Ok(None)` when it does not exist.
pub fn open(name: &str) -> Result<Option<File>> {
    match File::open(path(name)) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("open network namespace {name}")),
    }
}

/// True when the file is a namespace (an nsfs bind mount), false for a plain
/// file left by a run killed between creating the file and binding it.
pub fn is_namespace(f: &File) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    nix::sys::statfs::fstatfs(f).map(|s| s.filesystem_type().0 == NSFS_MAGIC).unwrap_or(false)
}

/// Names under /run/netns.
pub fn list() -> Result<Vec<String>> {
    let mut names = Vec::new();
    match fs::read_dir(NETNS_RUN_DIR) {
        Ok(dir) => {
            for entry in dir {
                let entry = entry.context("read /run/netns")?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).context("read /run/netns"),
    }
    names.sort();
    Ok(names)
}

/// Makes /run/netns a shared mount point, as iproute2 does, so namespaces
/// bound there show up in every mount namespace that shares it.
fn prepare_run_dir() -> Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR).context("create /run/netns")?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, NETNS_RUN_DIR, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then share it.
            mount(Some(NETNS_RUN_DIR), NETNS_RUN_DIR, Some("none"), MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>)
                .context("bind-mount /run/netns onto itself")?;
            mount(None::<&str>, NETNS_RUN_DIR, None::<&str>, shared, None::<&str>).context("make /run/netns shared")
        }
        Err(e) => Err(e).context("make /run/netns shared"),
    }
}

/// Creates a named network namespace. Fails with EEXIST if the name is taken.
pub fn create(name: &str) -> Result<File> {
    prepare_run_dir()?;
    let target = path(name);
    // A plain file of that name is what a killed run leaves between
    // creating the file and binding the namespace on it.
    if let Ok(f) = File::open(&target)
        && !is_namespace(&f)
    {
        fs::remove_file(&target).with_context(|| format!("remove stale {}", target.display()))?;
    }
    crate::testhooks::point();
    create_at(&target).with_context(|| format!("create network namespace {name}"))
}

/// Makes a new network namespace and pins it on `target` (a file that must
/// not exist yet), as `ip netns add` does under /run/netns. The lab pins
/// its nodes in a directory of its own the same way.
pub fn create_at(target: &Path) -> Result<File> {
    OpenOptions::new().write(true).create_new(true).open(target).with_context(|| format!("create {}", target.display()))?;
    crate::testhooks::point();
    // unshare(CLONE_NEWNET) affects only the calling thread, so a throwaway
    // thread makes the namespace and pins it with a bind mount.
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET).context("unshare(CLONE_NEWNET)")?;
            mount(Some("/proc/thread-self/ns/net"), target, Some("none"), MsFlags::MS_BIND, None::<&str>)
                .with_context(|| format!("bind-mount the new namespace on {}", target.display()))
        })
        .join()
        .unwrap_or_else(|_| Err(crate::error!(Internal, "namespace thread panicked")))
    });
    if let Err(e) = made {
        let _ = fs::remove_file(target);
        return Err(e);
    }
    File::open(target).with_context(|| format!("open {}", target.display()))
}

/// Deletes a named namespace like `ip netns del`: the namespace itself goes
/// away once nothing else holds it.
pub fn delete(name: &str) -> Result<()> {
    let target = path(name);
    crate::testhooks::point();
    match umount2(&target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmount {}", target.display())),
    }
    match fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", target.display())),
    }
}

/// Runs `f` on a fresh thread that has entered the network namespace `ns`;
/// the calling thread stays where it is.
pub fn run_in<T: Send>(ns: BorrowedFd<'_>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("thread in namespace panicked")))
    })
}

/// Makes `cmd` start inside the network namespace `ns`.
pub fn command_in(cmd: &mut Command, ns: &File) {
    let fd = ns.as_raw_fd();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: it makes one, setns(2), and reads
    // errno. `fd` was inherited by fork and stays open until exec (it is
    // close-on-exec); `ns` outlives the spawn because the caller holds it.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Runs `f` inside the namespace `ns` (on a fresh thread), or right here
/// when `ns` is None (the caller's own namespace).
pub fn within<T: Send>(ns: Option<&File>, f: impl FnOnce() -> T + Send) -> io::Result<T> {
    match ns {
        None => Ok(f()),
        Some(file) => run_in(file.as_fd(), f),
    }
}

/// Mounts a sysfs of this thread's network namespace on `target` (made
/// if missing), read-only: another namespace's processes read this one's
/// links there (`class/net/NAME/operstate`) without a netlink request.
pub fn mount_sysfs(target: &Path) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("create {}", target.display()))?;
    let flags = MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(Some("sysfs"), target, Some("sysfs"), flags, None::<&str>)
        .with_context(|| format!("mount sysfs on {}", target.display()))
}

/// True when `target` holds a mounted sysfs.
pub fn sysfs_mounted(target: &Path) -> bool {
    target.join("class/net").is_dir()
}

/// Undoes [`mount_sysfs`]; nothing to do when nothing is there.
pub fn unmount_sysfs(target: &Path) -> Result<()> {
    match umount2(target, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).with_context(|| format!("unmount {}", target.display())),
    }
    match std::fs::remove_dir(target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("remove {}", target.display())),
    }
}
