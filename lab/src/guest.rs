//! Real guests (`kind = "qemu"`): a Debian kernel and a busybox initramfs
//! (scripts/guest-image.sh, built at first use and cached) under QEMU, with
//! a virtio-net NIC on a TAP device in the segment bridge of its simulated
//! host, exactly where libvirt puts a guest's vnetN. QEMU runs inside the
//! host's network and mount namespaces, started by the lab itself or, on a
//! host with `libvirt = true`, by that host's libvirtd (libvirt.rs).
//!
//! The guest's serial console is the lab's only channel to it: a UNIX
//! socket (QEMU's chardev, also logged to a file). The guest's /init (in
//! serve mode) runs one shell command per line the lab writes and answers
//! with its output and exit status; see guest-image.sh for the protocol.
//! Every check a namespace VM does, a guest does through its console, with
//! its own kernel, its own DHCP client and its own MTU.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

use crate::interrupt;
use crate::nodes::{LabDir, Node};
use crate::spec::LabVm;

/// The image builder, compiled in: the lab needs no source tree.
const GUEST_IMAGE_SH: &str = include_str!("../../scripts/guest-image.sh");

/// Where a host keeps its guests' console sockets and logs (its private /run).
pub const GUEST_DIR: &str = "/run/vxrouter-lab-guests";

/// A guest's memory: the initramfs unpacks into it, nothing else runs.
pub const MEMORY_MIB: u32 = 128;

/// How long a guest may take from QEMU's start to its console saying it is
/// ready (TCG boots in ~4 s, ~8 s with DHCP; two cores shared with the
/// rest of the lab and other tests can make that much slower).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

pub struct Image {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

/// Builds the guest image, or finds it in the cache (scripts/guest-image.sh).
/// A first build downloads two Debian packages, so it needs apt and the
/// network; inside a sandbox there is none (scripts/test.sh and
/// scripts/demo.sh build the image before they enter it).
pub fn image(dir: &LabDir, quiet: bool) -> Result<Image> {
    let script = dir.path.join("guest-image.sh");
    fs::write(&script, GUEST_IMAGE_SH).with_context(|| format!("write {}", script.display()))?;
    let out = interrupt::output(Command::new("bash").arg(&script), "scripts/guest-image.sh", Duration::from_secs(900))?;
    let _ = fs::remove_file(&script);
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        bail!("cannot build the guest image (scripts/guest-image.sh): {}", err.trim());
    }
    if !quiet && !err.trim().is_empty() {
        eprint!("{err}");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).map(|p| PathBuf::from(p.trim())))
            .ok_or_else(|| anyhow!("scripts/guest-image.sh printed no {k}path: {text}"))
    };
    Ok(Image { kernel: field("kernel ")?, initrd: field("initrd ")? })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "KVM",
            Accel::Tcg => "TCG",
        }
    }

    pub fn parse(s: &str) -> Option<Accel> {
        match s {
            "KVM" | "kvm" => Some(Accel::Kvm),
            "TCG" | "tcg" => Some(Accel::Tcg),
            _ => None,
        }
    }
}

/// KVM when it really works, TCG (QEMU's emulator) otherwise, and why.
/// /dev/kvm alone proves nothing: some cloud VMs offer it through kvm_pvm,
/// which cannot boot a stock kernel (QEMU hangs, or aborts with -cpu host),
/// so KVM is used only with kvm_intel or kvm_amd, a vmx/svm CPU, and a probe
/// boot that reaches the guest's /init. VXR_ACCEL=kvm|tcg forces a choice.
pub fn detect_accel(dir: &LabDir, image: &Image) -> (Accel, String) {
    if let Some(a) = std::env::var("VXR_ACCEL").ok().as_deref().and_then(Accel::parse) {
        return (a, "forced by VXR_ACCEL".into());
    }
    if fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return (Accel::Tcg, "no usable /dev/kvm".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return (Accel::Tcg, "/dev/kvm is kvm_pvm, which cannot boot a stock kernel".into());
    }
    if !Path::new("/sys/module/kvm_intel").exists() && !Path::new("/sys/module/kvm_amd").exists() {
        return (Accel::Tcg, "neither kvm_intel nor kvm_amd is loaded".into());
    }
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !flags.split_whitespace().any(|w| w == "vmx" || w == "svm") {
        return (Accel::Tcg, "the CPU shows no vmx/svm".into());
    }
    match probe_kvm(dir, image) {
        Ok(secs) => (Accel::Kvm, format!("a probe boot reached /init in {secs:.1} s")),
        Err(e) => (Accel::Tcg, format!("KVM probe boot failed: {e:#}")),
    }
}

/// Boots the guest without a NIC under KVM and waits for its first line.
fn probe_kvm(dir: &LabDir, image: &Image) -> Result<f64> {
    let log = dir.path.join("kvm-probe.log");
    let _ = fs::remove_file(&log);
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-M", "pc", "-m", "64", "-smp", "1", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot", "-serial", &format!("file:{}", log.display())])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("run qemu-system-x86_64 (is qemu-system-x86 installed?)")?;
    let start = Instant::now();
    let result = loop {
        if fs::read_to_string(&log).is_ok_and(|t| t.contains("VXR-BOOT")) {
            break Ok(start.elapsed().as_secs_f64());
        }
        if child.try_wait().ok().flatten().is_some() {
            break Err(anyhow!("QEMU exited"));
        }
        if start.elapsed() > Duration::from_secs(10) {
            break Err(anyhow!("no sign of /init within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = fs::remove_file(&log);
    result
}

/// A stable, locally administered MAC for a guest (QEMU's 52:54:00 prefix).
pub fn mac(lab: &str, vm: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in lab.bytes().chain([b'/']).chain(vm.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    format!("52:54:00:{:02x}:{:02x}:{:02x}", b[1], b[2], b[3])
}

/// How the guest configures its NIC, and the MTU its virtual NIC offers.
pub struct NetPlan {
    /// The guest's `vxr.net=` (see guest-image.sh).
    pub arg: String,
    /// Offered to the guest by virtio (QEMU's host_mtu, libvirt's
    /// `<mtu size=…>` in the guest's `<interface>`), so a static guest
    /// learns the segment's MTU without being told.
    pub host_mtu: Option<u32>,
}

/// A DHCP guest starts like a stock image (MTU 1500, no address): its lease
/// must bring address, gateway and MTU. A static guest gets its address and
/// gateway on the kernel command line and the segment MTU from its virtual
/// NIC — unless the lab file gives it an `mtu`, which it then sets itself
/// (e.g. a guest left at 1500 on a 1450 segment: the MTU black hole).
pub fn net_plan(vm: &LabVm, bridge_mtu: u32) -> NetPlan {
    if vm.dhcp {
        return NetPlan { arg: "dhcp".into(), host_mtu: None };
    }
    match vm.mtu {
        Some(m) => NetPlan { arg: format!("static,{},{},{m}", vm.address, vm.gateway), host_mtu: None },
        None => NetPlan { arg: format!("static,{},{}", vm.address, vm.gateway), host_mtu: Some(bridge_mtu) },
    }
}

pub fn cmdline(plan: &NetPlan) -> String {
    format!("console=ttyS0 quiet panic=-1 vxr.mode=serve vxr.net={}", plan.arg)
}

/// Paths of a guest's files, inside its host and as seen from here.
pub struct Files {
    /// Inside the host's mount namespace (what QEMU and libvirtd are given).
    pub inside: PathBuf,
    /// The same directory from this process (through the holder's root).
    pub outside: PathBuf,
}

impl Files {
    pub fn new(host_root: &Path) -> Result<Files> {
        let inside = PathBuf::from(GUEST_DIR);
        let outside = host_root.join(GUEST_DIR.trim_start_matches('/'));
        fs::create_dir_all(&outside).with_context(|| format!("create {}", outside.display()))?;
        Ok(Files { inside, outside })
    }
    pub fn socket(&self, vm: &str) -> PathBuf {
        self.inside.join(format!("{vm}.sock"))
    }
    pub fn log(&self, vm: &str) -> PathBuf {
        self.inside.join(format!("{vm}.log"))
    }
    pub fn outside(&self, inside: &Path) -> PathBuf {
        self.outside.join(inside.file_name().unwrap_or_default())
    }
}

/// Starts a guest with QEMU directly (no libvirt) inside `host`, its NIC on
/// the existing TAP `tap`. QEMU is detached: it outlives `lab up` and is
/// killed by `lab down` with everything else in the host.
#[allow(clippy::too_many_arguments)]
pub fn start_qemu(
    host: &Node,
    files: &Files,
    lab: &str,
    vm: &LabVm,
    tap: &str,
    plan: &NetPlan,
    accel: Accel,
    image: &Image,
) -> Result<u32> {
    let (sock, log) = (files.socket(&vm.name), files.log(&vm.name));
    let _ = fs::remove_file(files.outside(&log));
    let qlog = files.outside.join(format!("{}.qemu.log", vm.name));
    let qlog = fs::File::create(&qlog).with_context(|| format!("create {}", qlog.display()))?;
    let mut nic = format!("virtio-net-pci,netdev=n0,mac={}", mac(lab, &vm.name));
    if let Some(m) = plan.host_mtu {
        nic.push_str(&format!(",host_mtu={m}"));
    }
    let mut cmd = host.command("qemu-system-x86_64");
    cmd.args(["-name", &format!("guest={}", vm.name), "-accel", &accel.name().to_lowercase()]);
    if accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    cmd.args(["-M", "pc", "-m", &MEMORY_MIB.to_string(), "-smp", "1", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-no-reboot"])
        .args(["-chardev", &format!("socket,id=con,path={},server=on,wait=off,logfile={}", sock.display(), log.display())])
        .args(["-serial", "chardev:con"])
        .args(["-netdev", &format!("tap,id=n0,ifname={tap},script=no,downscript=no"), "-device", &nic])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", &cmdline(plan)])
        .stdin(Stdio::null())
        .stdout(qlog.try_clone()?)
        .stderr(qlog);
    // SAFETY: setsid(2) is async-signal-safe and touches no Rust state. Its
    // own session: a Ctrl-C meant for a later lab command does not reach it.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().context("run qemu-system-x86_64 (is qemu-system-x86 installed?)")?;
    let pid = child.id();
    crate::nodes::keep_detached(child);
    Ok(pid)
}

/// What the guest said while booting.
#[derive(Debug, Default)]
pub struct Boot {
    /// From QEMU's start to the console's VXR-READY.
    pub secs: f64,
    /// eth0's address/prefix, MTU and gateway once configured (VXR-NET).
    pub net: Option<(String, u32, String)>,
    /// VXR-RESULT … fail lines (e.g. no DHCP lease).
    pub failures: Vec<String>,
}

/// Waits until the guest's console log says VXR-READY. `alive` tells
/// whether QEMU still runs (checked about once a second).
pub fn wait_ready(log: &Path, started: Instant, mut alive: impl FnMut() -> bool) -> Result<Boot> {
    let mut last_alive_check = Instant::now();
    loop {
        interrupt::check()?;
        let text = fs::read(log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
        if text.lines().any(|l| l.trim_end().starts_with("VXR-READY")) {
            return Ok(parse_boot(&text, started.elapsed().as_secs_f64()));
        }
        if last_alive_check.elapsed() > Duration::from_secs(1) {
            last_alive_check = Instant::now();
            if !alive() {
                bail!("QEMU exited before the guest was ready; console: {}", tail(&text));
            }
        }
        if started.elapsed() > BOOT_TIMEOUT {
            bail!("the guest was not ready within {} s; console: {}", BOOT_TIMEOUT.as_secs(), tail(&text));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).filter(|l| !l.is_empty()).collect();
    let t = lines[lines.len().saturating_sub(5)..].join(" | ");
    if t.is_empty() { "(empty)".into() } else { t }
}

fn parse_boot(text: &str, secs: f64) -> Boot {
    let mut boot = Boot { secs, ..Boot::default() };
    for line in text.lines().map(str::trim_end) {
        if let Some(rest) = line.strip_prefix("VXR-NET ") {
            // "eth0 ADDR/PFX mtu N gw GW"
            let w: Vec<&str> = rest.split_whitespace().collect();
            if let [_, addr, "mtu", mtu, "gw", gw] = w[..] {
                boot.net = Some((addr.to_string(), mtu.parse().unwrap_or(0), gw.to_string()));
            }
        } else if let Some(rest) = line.strip_prefix("VXR-RESULT ")
            && rest.split_whitespace().nth(1) == Some("fail")
        {
            boot.failures.push(rest.to_string());
        }
    }
    boot
}

/// The lab's end of a guest's console: one command at a time (the guest's
/// /init is one shell loop), from any number of threads.
pub struct Console {
    pub name: String,
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    stream: Option<UnixStream>,
    buf: Vec<u8>,
    next: u64,
    /// Set once the guest failed to answer: later commands fail at once
    /// instead of each waiting for its own timeout.
    broken: Option<String>,
}

impl Console {
    pub fn new(name: &str, path: PathBuf) -> Console {
        // Ids unique to this process: a late answer to an earlier `lab
        // check` that gave up on a command is never taken for ours.
        let next = u64::from(std::process::id()) << 24;
        Console { name: name.to_string(), path, inner: Mutex::new(Inner { stream: None, buf: Vec::new(), next, broken: None }) }
    }

    /// Runs a shell command in the guest: Ok((exit status, output)); Err
    /// when the guest cannot be reached or does not answer within `timeout`.
    pub fn run(&self, cmd: &str, timeout: Duration) -> Result<(i32, String), String> {
        let mut g = self.inner.lock().map_err(|_| format!("{}: console lock poisoned", self.name))?;
        if let Some(b) = &g.broken {
            return Err(b.clone());
        }
        let r = self.exchange(&mut g, cmd, timeout);
        if let Err(e) = &r {
            g.broken = Some(e.clone());
            g.stream = None;
        }
        r
    }

    fn exchange(&self, g: &mut Inner, cmd: &str, timeout: Duration) -> Result<(i32, String), String> {
        if g.stream.is_none() {
            let s = UnixStream::connect(&self.path)
                .map_err(|e| format!("guest {} is not running (console {}: {e})", self.name, self.path.display()))?;
            g.stream = Some(s);
        }
        g.next += 1;
        let id = g.next;
        let line = format!("VXC {id} {}\n", base64(cmd.as_bytes()));
        let deadline = Instant::now() + timeout;
        let Inner { stream, buf, .. } = g;
        let stream = stream.as_mut().ok_or_else(|| "no console".to_string())?;
        stream.write_all(line.as_bytes()).map_err(|e| format!("write to the console of {}: {e}", self.name))?;
        let (out_tag, end_tag) = (format!("VXO {id} "), format!("VXA {id} "));
        let mut output = Vec::new();
        loop {
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let raw: Vec<u8> = buf.drain(..=nl).collect();
                let text = String::from_utf8_lossy(&raw);
                let text = text.trim_end_matches(['\r', '\n']);
                // A kernel message may share the line: look for the tag anywhere.
                if let Some(i) = text.find(&out_tag) {
                    output.push(text[i + out_tag.len()..].to_string());
                } else if let Some(i) = text.find(&end_tag) {
                    let rc = text[i + end_tag.len()..].trim().parse().unwrap_or(-1);
                    return Ok((rc, output.join("\n")));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("guest {} did not answer within {} s", self.name, timeout.as_secs()));
            }
            stream.set_read_timeout(Some(left.max(Duration::from_millis(10)))).map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(format!("the console of {} closed (QEMU gone?)", self.name)),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("read the console of {}: {e}", self.name)),
            }
        }
    }
}

/// Standard base64 (the guest decodes with busybox base64 -d): commands
/// travel as one line of plain characters, whatever they contain.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(T[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Quotes a word for the guest's shell.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"hello world"), "aGVsbG8gd29ybGQ=");
    }

    #[test]
    fn boot_lines_are_parsed() {
        let b = parse_boot(
            "junk\r\nVXR-BOOT 3.1\r\nVXR-NET eth0 192.168.10.104/24 mtu 1450 gw 192.168.10.1\r\nVXR-RESULT dhcp fail no lease\nVXR-READY 4.2\n",
            5.0,
        );
        assert_eq!(b.net, Some(("192.168.10.104/24".into(), 1450, "192.168.10.1".into())));
        assert_eq!(b.failures, vec!["dhcp fail no lease".to_string()]);
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quote("ip"), "ip");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn macs_are_stable_and_local() {
        assert_eq!(mac("l", "g"), mac("l", "g"));
        assert_ne!(mac("l", "g"), mac("l", "h"));
        assert!(mac("l", "g").starts_with("52:54:00:"));
    }
}
