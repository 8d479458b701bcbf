//! A lab host with `libvirt = true`: a real libvirtd (Debian's, QEMU
//! driver) in the host's own network and mount namespaces, set up by
//! scripts/libvirt-sandbox.sh (private /etc/libvirt, /var, sysfs; no
//! cgroups, no security driver, no virtlogd). The host's segment networks
//! are defined exactly as docs/operations.md tells operators to, from
//! `vxrouter render libvirt` run on the host, and its real guests are
//! started with `virsh create` and `<interface type='network'>`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use crate::guest::{self, Accel, Files, Image, NetPlan};
use crate::interrupt;
use crate::nodes::Node;
use crate::spec::LabVm;
use vxrouter::render::xml_escape as esc;

/// The libvirtd setup, compiled in.
const LIBVIRT_SH: &str = include_str!("../../scripts/libvirt-sandbox.sh");

/// Where the host's rendered networks go (inside the host).
const NETWORKS: &str = "/run/vxrouter-lab-libvirt/networks";

fn virsh(host: &Node, args: &[&str]) -> Result<String> {
    let mut cmd = host.command("virsh");
    cmd.args(["-q", "-c", "qemu:///system"]).args(args);
    let out = interrupt::output(&mut cmd, &format!("virsh {}", args.join(" ")), Duration::from_secs(120))?;
    if !out.status.success() {
        bail!("virsh {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts libvirtd in `host` and defines, starts and marks autostart one
/// network per segment bridge, from `vxrouter render libvirt PROFILE`.
/// Returns what to report.
pub fn start(host: &Node, root: &Path, vxrouter: &Path, profile: &Path) -> Result<String> {
    let script = root.join("run/vxrouter-lab-libvirt.sh");
    std::fs::write(&script, LIBVIRT_SH).with_context(|| format!("write {}", script.display()))?;
    let mut cmd = host.command("bash");
    cmd.args(["/run/vxrouter-lab-libvirt.sh", "--daemon"]);
    let out = interrupt::output(&mut cmd, "libvirtd", Duration::from_secs(150))?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "libvirtd did not start: {}",
            String::from_utf8_lossy(&out.stderr).lines().filter(|l| !l.trim().is_empty()).collect::<Vec<_>>().join(" | ")
        );
    }
    // "libvirtd PID SECONDS"
    let secs = said.split_whitespace().nth(2).unwrap_or("?").to_string();

    let mut render = host.command(vxrouter);
    render.args(["render", "libvirt"]).arg(profile).args(["--out", NETWORKS]);
    let out = interrupt::output(&mut render, "vxrouter render libvirt", Duration::from_secs(60))?;
    if !out.status.success() {
        bail!("vxrouter render libvirt {}: {}", profile.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let files: Vec<PathBuf> = String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect();
    let mut names = Vec::new();
    for f in &files {
        let name = f.file_stem().map(|s| s.to_string_lossy().into_owned()).ok_or_else(|| anyhow!("odd path {}", f.display()))?;
        let path = f.display().to_string();
        virsh(host, &["net-define", &path])?;
        virsh(host, &["net-start", &name])?;
        virsh(host, &["net-autostart", &name])?;
        let info = virsh(host, &["net-info", &name])?;
        let yes = |k: &str| info.lines().any(|l| l.starts_with(k) && l.trim_end().ends_with("yes"));
        if !yes("Active:") || !yes("Autostart:") {
            bail!("libvirt network {name} is not active and autostarted: {}", info.trim());
        }
        names.push(name);
    }
    Ok(format!(
        "libvirtd up in {secs} s; networks {} defined from `vxrouter render libvirt`, started, autostart",
        names.join(", ")
    ))
}

/// The transient domain of a real guest: kernel and initramfs booted
/// directly, its NIC `<interface type='network'>` on the segment's network,
/// the console a UNIX socket logged to a file.
pub fn domain_xml(lab: &str, vm: &LabVm, files: &Files, plan: &NetPlan, accel: Accel, image: &Image) -> String {
    let (kind, cpu) = match accel {
        Accel::Kvm => ("kvm", "\n  <cpu mode='host-passthrough'/>"),
        Accel::Tcg => ("qemu", ""),
    };
    // libvirt gives the tap the bridge's MTU; <mtu> here also tells the
    // guest (virtio host_mtu) — the way to give a static guest the segment
    // MTU, since a bridge-mode network cannot carry one.
    let mtu = plan.host_mtu.map(|m| format!("\n      <mtu size='{m}'/>")).unwrap_or_default();
    format!(
        "<domain type='{kind}'>
  <name>{name}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>1</vcpu>{cpu}
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <!-- without ACPI libvirt passes -no-acpi -->
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='network'>
      <source network='{bridge}'/>
      <mac address='{mac}'/>
      <model type='virtio'/>{mtu}
    </interface>
    <serial type='unix'>
      <source mode='bind' path='{sock}'/>
      <log file='{log}' append='off'/>
      <target port='0'/>
    </serial>
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
",
        name = esc(&vm.name),
        mem = guest::MEMORY_MIB,
        kernel = esc(&image.kernel.display().to_string()),
        initrd = esc(&image.initrd.display().to_string()),
        cmdline = esc(&guest::cmdline(plan)),
        bridge = esc(&vm.bridge),
        mac = guest::mac(lab, &vm.name),
        sock = esc(&files.socket(&vm.name).display().to_string()),
        log = esc(&files.log(&vm.name).display().to_string()),
    )
}

/// `virsh create` of the guest's domain; returns the tap libvirt made.
pub fn create(host: &Node, files: &Files, vm: &LabVm, xml: &str) -> Result<String> {
    let path = files.inside.join(format!("{}.xml", vm.name));
    std::fs::write(files.outside(&path), xml).with_context(|| format!("write {}", path.display()))?;
    let _ = std::fs::remove_file(files.outside(&files.log(&vm.name)));
    virsh(host, &["create", &path.display().to_string()])?;
    // " vnet0   bridge   br-web   virtio   52:54:00:…" (a bridge-mode
    // network's interface shows as type bridge once it runs)
    let list = virsh(host, &["domiflist", &vm.name])?;
    list.lines()
        .find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() >= 3 && w[2] == vm.bridge).then(|| w[0].to_string())
        })
        .ok_or_else(|| anyhow!("libvirt shows no interface of {} on network {}: {}", vm.name, vm.bridge, list.trim()))
}

/// Whether libvirt's QEMU for a guest still runs (its pid file, in the
/// host's /run).
pub fn alive(root: &Path, vm: &str) -> bool {
    let pidfile = root.join(format!("run/libvirt/qemu/{vm}.pid"));
    match std::fs::read_to_string(pidfile) {
        Ok(pid) => Path::new(&format!("/proc/{}", pid.trim())).exists(),
        // Not written yet right after `virsh create`: give it the benefit.
        Err(_) => true,
    }
}
