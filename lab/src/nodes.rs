//! Lab nodes: namespaces pinned by bind mounts in a private lab directory,
//! never in the caller's /run/netns and never linked to the caller's network
//! namespace. A simulated host is a network + mount namespace with its own
//! tmpfs /run (so it has its own /run/netns and /run/vxrouter); a VM, the
//! switch ("fabric"), the internet router, the server and the attacker are
//! network namespaces.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, anyhow, bail};
use nix::mount::{MntFlags, MsFlags, mount, umount2};

use std::os::fd::AsFd;
use vxrouter::netlink::{LinkRef, Netlink, SetLink};

pub const LAB_ROOT: &str = "/run/vxrouter-lab";

/// This very program, also when its file was replaced or removed since it
/// started (a rebuild during a long lab run), and from any mount namespace.
pub const SELF_EXE: &str = "/proc/self/exe";

/// The vxrouter binary the lab's hosts run: the one that started the lab
/// (`vxrouter lab …` sets VXROUTER_BIN), else the one beside this program,
/// else vxrouter on PATH.
pub fn vxrouter_bin() -> PathBuf {
    if let Some(b) = std::env::var_os("VXROUTER_BIN") {
        return PathBuf::from(b);
    }
    match std::env::current_exe() {
        Ok(me) if me.with_file_name("vxrouter").exists() => me.with_file_name("vxrouter"),
        _ => PathBuf::from("vxrouter"),
    }
}

/// Processes this program started that are meant to outlive it (hosts'
/// holders, QEMU guests). While the command that started them runs they are
/// kept here: an interrupted `up` kills them with the lab and reaps them, so
/// none is left behind or re-parented; a finished `up` lets them go.
static DETACHED: std::sync::Mutex<Vec<std::process::Child>> = std::sync::Mutex::new(Vec::new());

/// Keeps a child that is meant to outlive this command (see DETACHED).
pub fn keep_detached(child: std::process::Child) {
    if let Ok(mut d) = DETACHED.lock() {
        d.push(child);
    }
}

/// The command finished: its detached children live on (reaped by init
/// once `down` kills them).
pub fn release_detached() {
    if let Ok(mut d) = DETACHED.lock() {
        for c in d.drain(..) {
            std::mem::forget(c);
        }
    }
}

/// After a teardown killed them: reap the detached children, so no zombie
/// of ours is handed to init.
pub fn reap_detached() {
    if let Ok(mut d) = DETACHED.lock() {
        for mut c in d.drain(..) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a process runs (exists and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()).is_some_and(|s| s != "Z"),
        Err(_) => false,
    }
}

/// A running (or half-built) lab's directory of pinned namespaces.
pub struct LabDir {
    pub path: PathBuf,
}

/// One node: its network namespace and, for simulated hosts and VMs, the
/// mount namespace to run commands in.
pub struct Node {
    pub name: String,
    pub net: File,
    pub mnt: Option<File>,
}

impl Node {
    /// A command that starts inside this node.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let program = program.as_ref();
        let mut cmd = Command::new(program);
        if program == SELF_EXE {
            cmd.arg0("vxrouter-lab");
        }
        // The product's own way into a network namespace, then (a second
        // pre_exec hook, run after the first) the node's mount namespace.
        vxrouter::netns::command_in(&mut cmd, &self.net);
        if let Some(m) = self.mnt.as_ref().map(|m| m.as_raw_fd()) {
            // SAFETY: one async-signal-safe syscall (setns) between fork and
            // exec; the fd is inherited and stays open until exec (the node
            // holds it).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(m, libc::CLONE_NEWNS) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // A new mount namespace resets the working directory to its root.
        cmd.current_dir("/");
        cmd
    }

    pub fn netlink(&self) -> Result<Netlink> {
        Netlink::open_in(self.net.as_fd()).with_context(|| format!("open netlink socket in node {}", self.name))
    }
}

impl LabDir {
    pub fn path_of(lab: &str) -> PathBuf {
        Path::new(LAB_ROOT).join(lab)
    }

    pub fn open(lab: &str) -> Option<LabDir> {
        let path = Self::path_of(lab);
        path.is_dir().then_some(LabDir { path })
    }

    /// Creates the lab directory as a private tmpfs: namespace files can only
    /// be pinned on a mount that does not propagate.
    pub fn create(lab: &str) -> Result<LabDir> {
        let path = Self::path_of(lab);
        if let Some(d) = Self::open(lab)
            && is_mount_point(&d.path)
        {
            return Ok(d);
        }
        fs::create_dir_all(&path).with_context(|| format!("create {}", path.display()))?;
        mount(Some("tmpfs"), &path, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0700"))
            .with_context(|| format!("mount tmpfs on {}", path.display()))?;
        mount(None::<&str>, &path, None::<&str>, MsFlags::MS_PRIVATE, None::<&str>)
            .with_context(|| format!("make {} private", path.display()))?;
        Ok(LabDir { path })
    }

    fn file(&self, node: &str, kind: &str) -> PathBuf {
        self.path.join(format!("{node}.{kind}"))
    }

    pub fn has(&self, node: &str) -> bool {
        self.file(node, "net").exists()
    }

    pub fn node(&self, name: &str) -> Result<Node> {
        let net = File::open(self.file(name, "net")).with_context(|| format!("no lab node {name}"))?;
        let mnt = match fs::read_to_string(self.file(name, "pid")) {
            Ok(pid) => Some(self.holder_mnt(name, pid.trim(), &net)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("read holder pid of {name}")),
        };
        Ok(Node { name: name.to_string(), net, mnt })
    }

    /// The mount namespace of a host, held by its holder process. The
    /// holder's network namespace must be the host's, which guards against
    /// a recycled pid.
    fn holder_mnt(&self, name: &str, pid: &str, net: &File) -> Result<File> {
        let proc_net = fs::metadata(format!("/proc/{pid}/ns/net"));
        let same = match (proc_net, net.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
        if !same {
            bail!("the process holding host {name} (pid {pid}) is gone; run `vxrouter lab down` and `up` again");
        }
        File::open(format!("/proc/{pid}/ns/mnt")).with_context(|| format!("open mount namespace of {name}"))
    }

    /// The root directory of a host as its own processes see it (its
    /// private /run included), reachable from this mount namespace.
    pub fn host_root(&self, host: &str) -> Result<PathBuf> {
        let pid = fs::read_to_string(self.file(host, "pid")).with_context(|| format!("no lab host {host}"))?;
        let net = File::open(self.file(host, "net")).with_context(|| format!("no lab host {host}"))?;
        self.holder_mnt(host, pid.trim(), &net)?;
        Ok(PathBuf::from(format!("/proc/{}/root", pid.trim())))
    }

    /// The pid of the process holding a host's mount namespace.
    pub fn holder_pid(&self, host: &str) -> Result<u32> {
        let pid = fs::read_to_string(self.file(host, "pid")).with_context(|| format!("no lab host {host}"))?;
        pid.trim().parse().with_context(|| format!("holder pid of {host}"))
    }

    /// A host's network namespaces as (dev, inode): its own and every one
    /// pinned under its /run/netns (its router namespace).
    pub fn host_namespaces(&self, host: &str) -> Result<Vec<(u64, u64)>> {
        let own = fs::metadata(self.file(host, "net")).with_context(|| format!("no lab host {host}"))?;
        let mut out = vec![(own.dev(), own.ino())];
        if let Ok(dir) = fs::read_dir(self.host_root(host)?.join("run/netns")) {
            for ns in dir.flatten() {
                if let Ok(m) = fs::metadata(ns.path()) {
                    out.push((m.dev(), m.ino()));
                }
            }
        }
        Ok(out)
    }

    /// A VM: its network namespace, with the mount namespace of its host.
    pub fn vm(&self, name: &str, host: &str) -> Result<Node> {
        let mut n = self.node(name)?;
        n.mnt = self.node(host)?.mnt;
        Ok(n)
    }

    /// A network-only node, pinned in the lab directory the way vxrouter
    /// pins its router namespaces under /run/netns.
    pub fn new_netns(&self, name: &str) -> Result<Node> {
        if !self.has(name) {
            vxrouter::netns::create_at(&self.file(name, "net"))?;
        }
        let node = self.node(name)?;
        set_up(&node, "lo")?;
        Ok(node)
    }

    /// A simulated host: new network and mount namespaces, made by a holder
    /// process (a multithreaded process cannot unshare its mount namespace)
    /// that gives the host a private /run and then stays, holding the mount
    /// namespace (bind-mounting mount namespaces is unreliable on some
    /// kernels; `down` kills the holder). The network namespace is pinned.
    pub fn new_host(&self, name: &str) -> Result<Node> {
        if !self.has(name) {
            let mut cmd = Command::new(SELF_EXE);
            cmd.arg0("vxrouter-lab");
            let lab = self.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            // The label only tells `ps` readers which lab and host this is.
            cmd.args(["__lab-holder", &format!("{lab}/{name}")])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            // SAFETY: runs in the child between fork and exec: setsid(2) and
            // unshare(2) are async-signal-safe and touch no Rust state.
            unsafe {
                cmd.pre_exec(|| {
                    libc::setsid();
                    if libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn().context("start the lab host holder")?;
            let mut line = String::new();
            if let Some(out) = child.stdout.take() {
                BufReader::new(out).read_line(&mut line).context("wait for the lab host holder")?;
            }
            let pid = child.id();
            let pinned = (|| -> Result<()> {
                // The holder outlives this command, so it must not keep our
                // stdio open: its only channel is this one line.
                if line.trim() != "ready" {
                    bail!("lab host holder for {name} failed: {}", line.trim());
                }
                let target = self.file(name, "net");
                File::create(&target).with_context(|| format!("create {}", target.display()))?;
                let src = format!("/proc/{pid}/ns/net");
                mount(Some(src.as_str()), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
                    .with_context(|| format!("pin {src} on {}", target.display()))?;
                fs::write(self.file(name, "pid"), pid.to_string()).context("record holder pid")
            })();
            if let Err(e) = pinned {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
            // The holder outlives a finished `up`; see DETACHED.
            keep_detached(child);
        }
        let node = self.node(name)?;
        set_up(&node, "lo")?;
        Ok(node)
    }

    /// Removes every node: kills processes still inside the lab's
    /// namespaces, unpins the namespaces and removes the directory.
    pub fn teardown(self) -> Result<Vec<String>> {
        let mut report = Vec::new();
        let mut inodes = Vec::new();
        let mut pinned = Vec::new();
        for entry in fs::read_dir(&self.path).with_context(|| format!("read {}", self.path.display()))? {
            let p = entry?.path();
            // A host's mount namespace, held by its holder: processes started
            // in the host (also inside its router namespaces) are in it.
            if p.extension().and_then(|e| e.to_str()) == Some("pid")
                && let Ok(pid) = fs::read_to_string(&p)
                && let Ok(m) = fs::metadata(format!("/proc/{}/ns/mnt", pid.trim()))
            {
                inodes.push((m.dev(), m.ino()));
                // The host's own namespaces (its router namespace): seen
                // through the holder's root, as the host sees /run/netns.
                if let Ok(dir) = fs::read_dir(format!("/proc/{}/root/run/netns", pid.trim())) {
                    for ns in dir.flatten() {
                        if let Ok(m) = fs::metadata(ns.path()) {
                            inodes.push((m.dev(), m.ino()));
                        }
                    }
                }
            }
            if matches!(p.extension().and_then(|e| e.to_str()), Some("net" | "mnt")) {
                if let Ok(m) = fs::metadata(&p)
                    && m.dev() != fs::metadata(&self.path).map(|d| d.dev()).unwrap_or(0)
                {
                    inodes.push((m.dev(), m.ino()));
                }
                pinned.push(p);
            }
        }
        let holders = fs::read_dir(&self.path)?.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "pid")).count();
        let killed = kill_processes_in(&inodes);
        if killed > holders {
            report.push(format!("killed {} process(es) still running in the lab", killed - holders));
        }
        for p in &pinned {
            match umount2(p, MntFlags::MNT_DETACH) {
                Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
                Err(e) => report.push(format!("unmount {}: {e}", p.display())),
            }
        }
        if is_mount_point(&self.path) {
            umount2(&self.path, MntFlags::MNT_DETACH).with_context(|| format!("unmount {}", self.path.display()))?;
        }
        fs::remove_dir(&self.path).with_context(|| format!("remove {}", self.path.display()))?;
        let _ = fs::remove_dir(LAB_ROOT);
        Ok(report)
    }
}

/// Creates a persistent TAP device in a node (as libvirt does for a guest's
/// NIC: QEMU attaches to it by name); it stays until the node is removed.
pub fn create_tap(node: &Node, name: &str) -> Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    if name.len() >= libc::IFNAMSIZ {
        bail!("tap name {name} is too long");
    }
    let tap = name.to_string();
    // A tun device is created in the network namespace of the thread that
    // opens /dev/net/tun, hence a thread inside the node.
    vxrouter::netns::within(Some(&node.net), move || -> io::Result<()> {
        let tun = fs::OpenOptions::new().read(true).write(true).open("/dev/net/tun")?;
        // struct ifreq: 16 bytes of name, then the flags (a short).
        let mut ifr = [0u8; 40];
        ifr[..tap.len()].copy_from_slice(tap.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq, which `ifr`
        // covers (40 bytes); TUNSETPERSIST takes an int by value.
        unsafe {
            if libc::ioctl(tun.as_raw_fd(), TUNSETIFF, ifr.as_mut_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::ioctl(tun.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_int) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    })?
    .with_context(|| format!("create tap {name} in {}", node.name))
}

/// Sets a link's MTU through the node's own socket.
pub fn set_mtu(node: &Node, link: &str, mtu: u32) -> Result<()> {
    let set = SetLink { mtu: Some(mtu), ..SetLink::default() };
    node.netlink()?.set_link(LinkRef::Name(link), &set).map_err(|e| anyhow!("set mtu of {link} in {}: {e}", node.name))
}

/// Sets a link down through the node's own socket (a cable pulled at
/// that end: the other end loses its carrier).
pub fn set_down(node: &Node, link: &str) -> Result<()> {
    let set = SetLink { up: Some(false), ..SetLink::default() };
    node.netlink()?.set_link(LinkRef::Name(link), &set).map_err(|e| anyhow!("set {link} down in {}: {e}", node.name))
}

/// Brings a link up through the node's own socket.
pub fn set_up(node: &Node, link: &str) -> Result<()> {
    let set = SetLink { up: Some(true), ..SetLink::default() };
    node.netlink()?.set_link(LinkRef::Name(link), &set).map_err(|e| anyhow!("set {link} up in {}: {e}", node.name))
}

fn is_mount_point(path: &Path) -> bool {
    let (Ok(a), Ok(b)) = (fs::metadata(path), fs::metadata(path.join(".."))) else { return false };
    a.dev() != b.dev()
}

/// SIGKILLs every process whose network or mount namespace is one of
/// `inodes` (dev, ino of nsfs files). Returns how many.
fn kill_processes_in(inodes: &[(u64, u64)]) -> usize {
    let me = std::process::id();
    let mut killed = 0;
    let Ok(procs) = fs::read_dir("/proc") else { return 0 };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let inside = ["net", "mnt"]
            .iter()
            .any(|k| fs::metadata(p.path().join("ns").join(k)).map(|m| inodes.contains(&(m.dev(), m.ino()))).unwrap_or(false));
        if inside && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
}

/// The `__lab-holder` process, run in fresh network + mount namespaces: give
/// the host a private /run, say "ready", then hold the namespaces until killed.
pub fn holder_main() -> Result<()> {
    if let Err(e) = holder_setup() {
        println!("error: {e:#}");
        return Err(e);
    }
    let mut out = io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;
    // SAFETY: fd 1 is this process's stdout, flushed just above; nothing
    // writes to it afterwards (the holder only waits for a signal), so no
    // Rust handle is left using a closed or reused descriptor.
    unsafe { libc::close(1) };
    loop {
        nix::unistd::pause();
    }
}

fn holder_setup() -> Result<()> {
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).context("make / private")?;
    // Other labs' pins are of no use here and would keep them referenced.
    let _ = umount2(LAB_ROOT, MntFlags::MNT_DETACH);
    mount(Some("tmpfs"), "/run", Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some("mode=0755"))
        .context("mount tmpfs on /run")?;
    for d in ["/run/netns", "/run/vxrouter", "/run/lock"] {
        fs::create_dir_all(d).with_context(|| format!("create {d}"))?;
    }
    Ok(())
}
