//! `vxrouter lab`: a whole multi-host deployment simulated on one machine,
//! each host applying its real profile, checked by a connectivity matrix.

use std::net::Ipv4Addr;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use vxrouter::model::Route;
use vxrouter::netlink::{CreateCtx, IfExists, LinkRef, Netlink, SetLink};
use vxrouter::profile::{Ipv4Cidr, cidr};

use crate::checks;
use crate::nodes::{self, LabDir, Node};
use crate::spec::{self, Lab};

/// What `up` achieved per host and VM, kept in the lab directory for `check`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub file: String,
    pub hosts: Vec<NodeStatus>,
    pub vms: Vec<NodeStatus>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// A DHCP VM's lease: address with prefix, gateway, MTU.
    #[serde(default)]
    pub lease: Option<(String, String, u32)>,
}

impl LabState {
    fn path(dir: &LabDir) -> std::path::PathBuf {
        dir.path.join("lab.json")
    }
    pub fn load(dir: &LabDir) -> LabState {
        std::fs::read(Self::path(dir)).ok().and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or_default()
    }
    fn save(&self, dir: &LabDir) -> Result<()> {
        std::fs::write(Self::path(dir), serde_json::to_vec_pretty(self)?).context("write lab state")
    }
    pub fn vm(&self, name: &str) -> Option<&NodeStatus> {
        self.vms.iter().find(|v| v.name == name)
    }
}

pub struct UpOptions {
    /// Apply each host's profile (false: build the bare hosts only).
    pub apply: bool,
    pub quiet: bool,
}

fn say(quiet: bool, msg: impl AsRef<str>) {
    if !quiet {
        println!("{}", msg.as_ref());
    }
}

/// A link by name in the socket's namespace (None: there is none).
fn link_of(sock: &mut Netlink, name: &str) -> Result<Option<vxrouter::model::Link>> {
    sock.link(name).map_err(|e| anyhow!("look up {name}: {e}"))
}

fn index_of(sock: &mut Netlink, name: &str) -> Result<Option<u32>> {
    Ok(link_of(sock, name)?.map(|l| l.index))
}

pub fn mtu_of(sock: &mut Netlink, name: &str) -> Result<Option<u32>> {
    Ok(link_of(sock, name)?.map(|l| l.mtu))
}

/// A switch: a bridge in the fabric node. Without multicast snooping, so
/// group traffic floods like on a dumb switch.
fn switch(fabric: &Node, name: &str) -> Result<()> {
    let mut sock = fabric.netlink()?;
    if index_of(&mut sock, name)?.is_some() {
        return Ok(());
    }
    sock.create_switch(name).map_err(|e| anyhow!("create switch {name}: {e}"))?;
    nodes::set_up(fabric, name)
}

/// A cable: a veth pair with one end in each node, created in place (never
/// in the caller's namespace), optionally plugged into a bridge at either end.
fn cable(
    a: &Node,
    a_name: &str,
    a_master: Option<&str>,
    b: &Node,
    b_name: &str,
    b_master: Option<&str>,
    mtu: Option<u32>,
) -> Result<()> {
    let mut sa = a.netlink()?;
    if index_of(&mut sa, a_name)?.is_none() {
        let end = |name: &str, kind| vxrouter::model::LinkSpec {
            name: name.to_string(),
            kind,
            mtu,
            master: None,
            up: false,
            mac: None,
            no_ipv6: false,
        };
        let peer = end(b_name, vxrouter::model::LinkKind::VethPeer { peer: a_name.to_string() });
        let this = end(
            a_name,
            vxrouter::model::LinkKind::Veth(vxrouter::model::VethPeer {
                peer: b_name.to_string(),
                peer_ns: vxrouter::model::Ns::Host,
            }),
        );
        let ctx = CreateCtx { peer_ns: Some(std::os::fd::AsRawFd::as_raw_fd(&b.net)), peer: Some(peer), ..CreateCtx::default() };
        sa.create_link(&this, &ctx).map_err(|e| anyhow!("connect {}:{a_name} to {}:{b_name}: {e}", a.name, b.name))?;
    }
    for (node, name, master) in [(a, a_name, a_master), (b, b_name, b_master)] {
        let mut s = node.netlink()?;
        let master = match master {
            Some(m) => Some(index_of(&mut s, m)?.ok_or_else(|| anyhow!("{} has no bridge {m}", node.name))?),
            None => None,
        };
        let set = SetLink { master, up: Some(true), ..SetLink::default() };
        s.set_link(LinkRef::Name(name), &set).map_err(|e| anyhow!("plug {}:{name}: {e}", node.name))?;
    }
    Ok(())
}

fn address(node: &Node, link: &str, cidr: Ipv4Cidr) -> Result<()> {
    let mut s = node.netlink()?;
    let idx = index_of(&mut s, link)?.ok_or_else(|| anyhow!("{} has no link {link}", node.name))?;
    s.add_addr(idx, cidr, IfExists::Keep).map_err(|e| anyhow!("add {cidr} to {}:{link}: {e}", node.name))
}

/// A static route (rtm_protocol 4).
pub fn route(node: &Node, dst: Ipv4Cidr, via: Ipv4Addr) -> Result<()> {
    let mut s = node.netlink()?;
    let r = Route { dst, gateway: Some(via), oif: None, protocol: 4 };
    s.replace_route(&r).map_err(|e| anyhow!("add route {dst} via {via} in {}: {e}", node.name))
}

fn forwarding(node: &Node) -> Result<()> {
    Ok(vxrouter::kinds::sysctl::write(Some(&node.net), "net/ipv4/ip_forward", "1")?)
}

/// The address the upstream router uses towards the server.
fn server_side(server: Ipv4Addr) -> (Ipv4Cidr, Ipv4Cidr) {
    let base = u32::from(cidr::cidr(server, 24).network());
    let gw = if u32::from(server) == base + 1 { base + 2 } else { base + 1 };
    (cidr::cidr(Ipv4Addr::from(gw), 24), cidr::cidr(server, 24))
}

/// An address on the public segment for the attacker, taken by nobody else.
pub fn attacker_address(lab: &Lab) -> Ipv4Cidr {
    let net = lab.gateway.trunc();
    let taken: Vec<Ipv4Addr> = lab.router_addresses().into_iter().chain([lab.gateway.addr()]).collect();
    let top = u32::from(lab.gateway.broadcast());
    let addr =
        (1..64).map(|i| Ipv4Addr::from(top - i)).find(|a| !taken.contains(a) && net.contains(a)).unwrap_or(lab.gateway.addr());
    cidr::cidr(addr, lab.gateway.prefix_len())
}

/// Builds (or completes) the lab and applies each host's profile inside it.
pub fn up(lab: &Lab, opts: &UpOptions) -> Result<LabState> {
    let q = opts.quiet;
    let dir = LabDir::create(&lab.name)?;
    let mut state = LabState { name: lab.name.clone(), file: lab.file.display().to_string(), ..LabState::default() };
    state.save(&dir)?;

    say(q, format!("lab {}: building switch, internet and {} host(s) in private namespaces", lab.name, lab.hosts.len()));
    let fabric = dir.new_netns("fabric")?;
    switch(&fabric, "underlay")?;
    switch(&fabric, "public")?;
    if !lab.multicast {
        checks::block_multicast(&fabric)?;
    }

    let internet = dir.new_netns("internet")?;
    cable(&internet, "eth0", None, &fabric, "inet", Some("public"), None)?;
    address(&internet, "eth0", lab.gateway)?;
    let server = dir.new_netns("server")?;
    let (upstream, server_addr) = server_side(lab.server);
    cable(&internet, "eth1", None, &server, "eth0", None, None)?;
    address(&internet, "eth1", upstream)?;
    address(&server, "eth0", server_addr)?;
    route(&server, cidr::any(), upstream.addr())?;
    forwarding(&internet)?;
    let attacker = dir.new_netns("attacker")?;
    cable(&attacker, "eth0", None, &fabric, "atk", Some("public"), None)?;
    address(&attacker, "eth0", attacker_address(lab))?;

    for (i, h) in lab.hosts.iter().enumerate() {
        let node = dir.new_host(&h.name)?;
        let dev = h.profile.underlay.as_ref().map(|u| u.device.clone()).unwrap_or_else(|| "eth0".into());
        cable(&node, &dev, None, &fabric, &format!("u{i}"), Some("underlay"), None)?;
        address(&node, &dev, cidr::cidr(h.underlay, lab.underlay.prefix_len()))?;
        if h.uplink
            && let Some(r) = &h.profile.router
        {
            cable(&node, &r.public.uplink, None, &fabric, &format!("p{i}"), Some("public"), None)?;
        }
        let mut status = NodeStatus { name: h.name.clone(), ok: true, detail: String::new(), lease: None };
        if opts.apply {
            say(q, format!("{}: vxrouter apply {}", h.name, h.profile_path.display()));
            let out = node
                .command(nodes::vxrouter_bin())
                .args(["apply", "--quiet"])
                .arg(&h.profile_path)
                .output()
                .with_context(|| format!("run vxrouter apply in {}", h.name))?;
            if !out.status.success() {
                status.ok = false;
                status.detail = format!("apply failed: {}", String::from_utf8_lossy(&out.stderr).trim());
                say(q, format!("{}: {}", h.name, status.detail));
            }
        }
        state.hosts.push(status);
        state.save(&dir)?;
    }

    let mut taps: std::collections::BTreeMap<String, usize> = Default::default();
    for vm in &lab.vms {
        let n = taps.entry(vm.host.clone()).or_default();
        let tap = format!("vnet{n}");
        *n += 1;
        let status = attach_vm(&dir, vm, &tap);
        let status = match status {
            Ok(lease) => {
                NodeStatus { name: vm.name.clone(), ok: true, detail: format!("{tap} in {} on {}", vm.bridge, vm.host), lease }
            }
            Err(e) => {
                say(q, format!("{}: not attached: {e:#}", vm.name));
                NodeStatus { name: vm.name.clone(), ok: false, detail: format!("not attached: {e:#}"), lease: None }
            }
        };
        state.vms.push(status);
        state.save(&dir)?;
    }
    say(q, format!("lab {} is up: {} host(s), {} VM(s)", lab.name, lab.hosts.len(), lab.vms.len()));
    Ok(state)
}

/// A VM: a namespace whose eth0 is plugged into a bridge of its host through
/// a tap-like veth the host end of which vxrouter does not own (as with
/// libvirt's vnetN), with the segment's MTU — or, for a DHCP VM, starting
/// like a stock image (MTU 1500, no address) and configured by its lease.
fn attach_vm(dir: &LabDir, vm: &spec::LabVm, tap: &str) -> Result<Option<(String, String, u32)>> {
    let host = dir.node(&vm.host)?;
    let mut hs = host.netlink()?;
    let bridge_mtu = mtu_of(&mut hs, &vm.bridge)?.ok_or_else(|| anyhow!("host {} has no bridge {}", vm.host, vm.bridge))?;
    let node = dir.new_netns(&vm.name)?;
    cable(&host, tap, Some(&vm.bridge), &node, "eth0", None, Some(vm.mtu.unwrap_or(bridge_mtu)))?;
    if vm.dhcp {
        // A stock guest's NIC: the lease must bring the segment MTU.
        nodes::set_mtu(&node, "eth0", 1500)?;
        return dhcp_client(dir, vm).map(Some);
    }
    address(&node, "eth0", vm.address)?;
    route(&node, cidr::any(), vm.gateway)?;
    Ok(None)
}

/// The udhcpc hook: applies the lease's address, router and MTU.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
  deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    ;;
esac
exit 0
"#;

/// Runs busybox udhcpc in the VM (once, in the foreground) and reads back
/// what it configured.
fn dhcp_client(dir: &LabDir, vm: &spec::LabVm) -> Result<(String, String, u32)> {
    let node = dir.vm(&vm.name, &vm.host)?;
    // The script lives in the host's private /run, seen by the VM's commands.
    let script = "/run/vxrouter-lab-udhcpc.sh";
    let o = node
        .command("sh")
        .args(["-c", &format!("cat > {script} && chmod 755 {script}")])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            if let Some(mut i) = c.stdin.take() {
                i.write_all(UDHCPC_SCRIPT.as_bytes())?;
            }
            c.wait()
        })
        .context("write the udhcpc script")?;
    if !o.success() {
        bail!("cannot write the DHCP client script");
    }
    let out = node
        .command("busybox")
        // Option 26 (MTU) is asked for explicitly: udhcpc does not by default.
        .args(["udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "8", "-T", "1", "-O", "mtu", "-s", script])
        // The VM's name goes in the lease, so the router's DNS knows it.
        .args(["-x", &format!("hostname:{}", vm.name)])
        .output()
        .context("run busybox udhcpc (is busybox installed?)")?;
    if !out.status.success() {
        bail!("no DHCP lease: {}", String::from_utf8_lossy(&out.stderr).trim().lines().last().unwrap_or(""));
    }
    let mut sock = node.netlink()?;
    let mtu = mtu_of(&mut sock, "eth0")?.unwrap_or(0);
    let show = |args: &[&str]| -> Result<String> {
        let o = node.command("ip").args(args).output()?;
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let addr = show(&["-4", "-o", "addr", "show", "dev", "eth0"])?
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the lease left no address on eth0"))?;
    let gw = show(&["-4", "route", "show", "default"])?
        .split_whitespace()
        .skip_while(|w| *w != "via")
        .nth(1)
        .unwrap_or("")
        .to_string();
    Ok((addr, gw, mtu))
}

/// Removes everything the lab made; works on a half-built lab too.
pub fn down(name: &str, quiet: bool) -> Result<()> {
    let Some(dir) = LabDir::open(name) else {
        say(quiet, format!("lab {name} is not up; nothing to remove"));
        return Ok(());
    };
    for line in dir.teardown()? {
        say(quiet, line);
    }
    say(quiet, format!("lab {name} removed"));
    Ok(())
}

/// Runs a command inside a node and returns its exit code.
pub fn exec(lab: &Lab, node: &str, argv: &[String]) -> Result<i32> {
    let dir = LabDir::open(&lab.name).ok_or_else(|| anyhow!("lab {} is not up (run `vxrouter lab up` first)", lab.name))?;
    let n = match lab.vms.iter().find(|v| v.name == node) {
        Some(vm) => dir.vm(node, &vm.host)?,
        None => dir.node(node).with_context(|| {
            let mut names: Vec<String> = lab.hosts.iter().map(|h| h.name.clone()).collect();
            names.extend(lab.vms.iter().map(|v| v.name.clone()));
            names.extend(["fabric", "internet", "server", "attacker"].map(String::from));
            format!("nodes of lab {}: {}", lab.name, names.join(", "))
        })?,
    };
    let Some((prog, args)) = argv.split_first() else { bail!("no command given") };
    let status = n.command(prog).args(args).status().with_context(|| format!("run {prog} in {node}"))?;
    Ok(status.code().unwrap_or(1))
}

pub fn load(path: &Path) -> Result<Lab> {
    Lab::load(path).map_err(anyhow::Error::new)
}

/// `lab check`: runs the matrix, prints it, exit 0 only when all pass.
pub fn check(lab: &Lab, json: bool) -> Result<u8> {
    let results = checks::run_checks(lab)?;
    let ok = results.iter().all(|r| r.ok) && !results.is_empty();
    if json {
        let doc = serde_json::json!({"lab": lab.name, "ok": ok, "checks": results});
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        checks::print_matrix(lab, &results);
    }
    Ok(if ok { 0 } else { 1 })
}

/// `lab run`: up, check, down. The lab is removed even when a step fails.
pub fn run(lab: &Lab, json: bool, quiet: bool) -> Result<u8> {
    let built = up(lab, &UpOptions { apply: true, quiet: quiet || json });
    let result = match built {
        Ok(_) => check(lab, json),
        Err(e) => Err(e),
    };
    let removed = down(&lab.name, quiet || json);
    let code = result?;
    removed?;
    Ok(code)
}
