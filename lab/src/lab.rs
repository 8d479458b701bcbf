//! `vxrouter lab`: a whole multi-host deployment simulated on one machine,
//! each host applying its real profile, checked by a connectivity matrix.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};
use vxrouter::model::Route;
use vxrouter::netlink::{CreateCtx, IfExists, LinkRef, Netlink, SetLink};
use vxrouter::profile::{Ipv4Cidr, cidr};

use crate::checks;
use crate::guest::{self, Accel, Console, Files, Image};
use crate::interrupt;
use crate::libvirt;
use crate::nodes::{self, LabDir, Node};
use crate::spec::{self, Lab, VmKind};
use crate::vm::Vm;

/// What `up` achieved per host and VM, kept in the lab directory for `check`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub file: String,
    pub hosts: Vec<NodeStatus>,
    pub vms: Vec<NodeStatus>,
    /// How real guests run: "TCG (why)" or "KVM (why)"; None without guests.
    #[serde(default)]
    pub accel: Option<String>,
}

/// A DHCP VM's lease: address/prefix, gateway, MTU.
pub type Lease = (String, String, u32);

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub ok: bool,
    pub detail: String,
    /// A DHCP VM's lease: address with prefix, gateway, MTU.
    #[serde(default)]
    pub lease: Option<Lease>,
    /// A VM on a segment with IPv6: the global address it autoconfigured
    /// from the router's advertisements (None: none came).
    #[serde(default)]
    pub address6: Option<Ipv6Addr>,
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
            port: None,
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
    let r = Route { dst: dst.into(), gateway: Some(via.into()), oif: None, protocol: 4 };
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

/// Runs `ip ARGS` in a node.
pub fn ip(node: &Node, args: &[&str]) -> Result<()> {
    let out = node
        .command("ip")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("run ip in {}", node.name))?;
    if !out.status.success() {
        bail!("ip {} in {}: {}", args.join(" "), node.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// The MTU of the narrow hop behind the internet node (IPv6's minimum):
/// the `pmtu6` cell's packet-too-big comes from there.
pub const NARROW_MTU: u32 = 1280;

/// The IPv6 server's side: (the internet node's address towards the
/// server, a /112 of further server addresses behind a hop of MTU 1280),
/// both in the server's /64. The server answers every address of the /112
/// (a local route), so each `pmtu6` probe can take one no path MTU is
/// cached for yet.
pub fn server6_side(server6: Ipv6Addr) -> (Ipv6Addr, ipnet::Ipv6Net) {
    let net = u128::from(server6) & !((1u128 << 64) - 1);
    let upstream = if u128::from(server6) == net + 1 { net + 2 } else { net + 1 };
    let block = |tag: u128| ipnet::Ipv6Net::new(Ipv6Addr::from(net | (tag << 16)), 112).expect("prefix length 112");
    let narrow = [0xffff_ffff_ffffu128, 0xffff_ffff_fffe].into_iter().map(block).find(|b| !b.contains(&server6));
    (Ipv6Addr::from(upstream), narrow.unwrap_or_else(|| block(0xffff_ffff_fffd)))
}

/// The attacker's IPv6 address on the public segment, taken by nobody else.
pub fn attacker_address6(lab: &Lab) -> Option<Ipv6Addr> {
    let g = lab.gateway6?;
    let taken: Vec<Ipv6Addr> = lab
        .hosts
        .iter()
        .filter_map(|h| h.profile.router.as_ref()?.public.leg.address6.map(|a| a.addr()))
        .chain([g.addr()])
        .collect();
    let net = u128::from(g.network());
    (0x66..0x166).map(|i| Ipv6Addr::from(net + i)).find(|a| g.contains(a) && !taken.contains(a))
}

/// The internet's IPv6 side: its address on the public segment (the
/// routers' gateway6), the server's /64 behind it (the server and its
/// narrow second address), and, as an ISP routes them, each routed
/// (nat6 = "none") router's private prefixes via its public IPv6 address.
fn internet6(lab: &Lab, internet: &Node, server: &Node, attacker: &Node) -> Result<()> {
    let Some(g) = lab.gateway6 else { return Ok(()) };
    vxrouter::kinds::sysctl::write(Some(&internet.net), "net/ipv6/conf/all/forwarding", "1")?;
    ip(internet, &["-6", "addr", "replace", &g.to_string(), "dev", "eth0", "nodad"])?;
    if let Some(a) = attacker_address6(lab) {
        ip(attacker, &["-6", "addr", "replace", &format!("{a}/{}", g.prefix_len()), "dev", "eth0", "nodad"])?;
    }
    if let Some(s6) = lab.server6 {
        let (up6, narrow) = server6_side(s6);
        ip(internet, &["-6", "addr", "replace", &format!("{up6}/64"), "dev", "eth1", "nodad"])?;
        ip(server, &["-6", "addr", "replace", &format!("{s6}/64"), "dev", "eth0", "nodad"])?;
        ip(server, &["-6", "route", "replace", "local", &narrow.to_string(), "dev", "lo"])?;
        ip(server, &["-6", "route", "replace", "default", "via", &up6.to_string()])?;
        // A hop narrower than any segment on the way to those addresses
        // (as a tunnel on the internet would be): the internet node answers
        // bigger packets with packet-too-big.
        ip(
            internet,
            &[
                "-6",
                "route",
                "replace",
                &narrow.to_string(),
                "via",
                &s6.to_string(),
                "dev",
                "eth1",
                "mtu",
                "lock",
                &NARROW_MTU.to_string(),
            ],
        )?;
    }
    for r in lab.hosts.iter().filter_map(|h| h.profile.router.as_ref()) {
        let Some(public6) = r.public.leg.address6 else { continue };
        if r.nat6 != vxrouter::profile::Nat6::None {
            continue;
        }
        for leg in &r.private {
            if let Some(a6) = leg.address6 {
                ip(internet, &["-6", "route", "replace", &a6.trunc().to_string(), "via", &public6.addr().to_string()])?;
            }
        }
    }
    Ok(())
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
/// Stops with `Interrupted` at its next step after a signal; the caller
/// then tears the lab down.
pub fn up(lab: &Lab, opts: &UpOptions) -> Result<LabState> {
    let q = opts.quiet;
    interrupt::check()?;
    let dir = LabDir::create(&lab.name)?;
    let mut state = LabState { name: lab.name.clone(), file: lab.file.display().to_string(), ..LabState::default() };
    state.save(&dir)?;

    say(q, format!("lab {}: building switch, internet and {} host(s) in private namespaces", lab.name, lab.hosts.len()));
    let fabric = dir.new_netns("fabric")?;
    switch(&fabric, "underlay")?;
    switch(&fabric, "public")?;
    if !lab.routed.is_empty() {
        // A routed underlay: one switch per subnet, an underlay router
        // between them (it routes unicast only: multicast stays in its
        // subnet, as in a leaf-spine fabric).
        let router = dir.new_netns("urouter")?;
        for (j, s) in lab.routed.iter().enumerate() {
            switch(&fabric, &format!("underlay{j}"))?;
            cable(&router, &format!("eth{j}"), None, &fabric, &format!("r{j}"), Some(&format!("underlay{j}")), None)?;
            address(&router, &format!("eth{j}"), cidr::cidr(spec::router_address(*s), s.prefix_len()))?;
        }
        forwarding(&router)?;
    }
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
    internet6(lab, &internet, &server, &attacker)?;

    for (i, h) in lab.hosts.iter().enumerate() {
        interrupt::check()?;
        let node = dir.new_host(&h.name)?;
        let dev = h.profile.underlay.as_ref().map(|u| u.device.clone()).unwrap_or_else(|| "eth0".into());
        let (sw, prefix, gw) = lab.underlay_of(h.underlay);
        cable(&node, &dev, None, &fabric, &format!("u{i}"), Some(&sw), None)?;
        address(&node, &dev, cidr::cidr(h.underlay, prefix))?;
        if let Some(gw) = gw {
            route(&node, lab.underlay, gw)?;
        }
        if let (Some(a6), Some(net6)) = (h.underlay6, lab.underlay6) {
            vxrouter::kinds::sysctl::write(Some(&node.net), &format!("net/ipv6/conf/{dev}/disable_ipv6"), "0")?;
            ip(&node, &["-6", "addr", "replace", &format!("{a6}/{}", net6.prefix_len()), "dev", &dev, "nodad"])?;
        }
        if h.profile.evpn.is_some() && opts.apply {
            say(q, format!("{}: starting FRR (zebra, bgpd)", h.name));
            crate::frr::start(&node, &h.name)?;
        }
        if h.uplink
            && let Some(r) = &h.profile.router
        {
            cable(&node, &r.public.uplink, None, &fabric, &format!("p{i}"), Some("public"), None)?;
        }
        let mut status = NodeStatus { name: h.name.clone(), ok: true, detail: String::new(), lease: None, address6: None };
        if opts.apply {
            say(q, format!("{}: vxrouter apply {}", h.name, h.profile_path.display()));
            let mut cmd = node.command(nodes::vxrouter_bin());
            cmd.args(["apply", "--quiet"]).arg(&h.profile_path);
            let out = interrupt::output(&mut cmd, &format!("vxrouter apply in {}", h.name), Duration::from_secs(300))?;
            if !out.status.success() {
                status.ok = false;
                status.detail = format!("apply failed: {}", String::from_utf8_lossy(&out.stderr).trim());
                say(q, format!("{}: {}", h.name, status.detail));
            } else if h.libvirt {
                say(q, format!("{}: starting libvirtd, defining its networks from `vxrouter render libvirt`", h.name));
                match libvirt::start(&node, &dir.host_root(&h.name)?, &nodes::vxrouter_bin(), &h.profile_path) {
                    Ok(d) => {
                        say(q, format!("{}: {d}", h.name));
                        status.detail = d;
                    }
                    Err(e) if interrupt::of(&e).is_some() => return Err(e),
                    Err(e) => {
                        status.ok = false;
                        status.detail = format!("libvirt: {e:#}");
                        say(q, format!("{}: {}", h.name, status.detail));
                    }
                }
            }
        }
        state.hosts.push(status);
        state.save(&dir)?;
    }

    // Namespace VMs and guests QEMU runs itself first, libvirt's guests
    // last: libvirt picks its vnetN names among the free ones, the lab's
    // own taps keep theirs whatever the order of the file.
    let mut taps: std::collections::BTreeMap<String, usize> = Default::default();
    let mut names = Vec::new();
    for vm in &lab.vms {
        let n = taps.entry(vm.host.clone()).or_default();
        names.push(format!("vnet{n}"));
        *n += 1;
    }
    let via_libvirt = |vm: &spec::LabVm| vm.kind == VmKind::Qemu && lab.hosts.iter().any(|h| h.name == vm.host && h.libvirt);
    let mut order: Vec<usize> = (0..lab.vms.len()).filter(|i| !via_libvirt(&lab.vms[*i])).collect();
    order.extend((0..lab.vms.len()).filter(|i| via_libvirt(&lab.vms[*i])));
    let mut guests = Guests::default();
    let mut statuses: Vec<Option<NodeStatus>> = vec![None; lab.vms.len()];
    for i in order {
        interrupt::check()?;
        let (vm, tap) = (&lab.vms[i], &names[i]);
        let attached = match vm.kind {
            VmKind::Namespace => {
                attach_vm(&dir, lab, vm, tap).map(|lease| (format!("{tap} in {} on {}", vm.bridge, vm.host), lease))
            }
            VmKind::Qemu => attach_guest(&dir, lab, vm, tap, &mut guests, &mut state, q),
        };
        let status = match attached {
            Ok((detail, lease)) => NodeStatus { name: vm.name.clone(), ok: true, detail, lease, address6: None },
            Err(e) if interrupt::of(&e).is_some() => return Err(e),
            Err(e) => {
                say(q, format!("{}: not attached: {e:#}", vm.name));
                NodeStatus {
                    name: vm.name.clone(),
                    ok: false,
                    detail: format!("not attached: {e:#}"),
                    lease: None,
                    address6: None,
                }
            }
        };
        statuses[i] = Some(status);
        state.vms = statuses.iter().flatten().cloned().collect();
        state.save(&dir)?;
    }
    interrupt::check()?;
    wait_slaac(&dir, lab, &mut statuses, q)?;
    state.vms = statuses.iter().flatten().cloned().collect();
    state.save(&dir)?;
    say(q, format!("lab {} is up: {} host(s), {} VM(s)", lab.name, lab.hosts.len(), lab.vms.len()));
    Ok(state)
}

/// How long a VM may take to autoconfigure from router advertisements:
/// dnsmasq answers a router solicitation at once, but the first ones may
/// go out before the router's leg is up; its periodic advertisements
/// follow within seconds, then duplicate address detection takes a second.
const SLAAC_WAIT: Duration = Duration::from_secs(30);

/// Waits until every namespace VM on a segment with IPv6 has a usable
/// (non-tentative) global address from its router's prefix, and records it.
fn wait_slaac(dir: &LabDir, lab: &Lab, statuses: &mut [Option<NodeStatus>], q: bool) -> Result<()> {
    let mut waiting: Vec<(usize, Vm, ipnet::Ipv6Net)> = Vec::new();
    for (i, vm) in lab.vms.iter().enumerate() {
        let attached = statuses[i].as_ref().is_some_and(|s| s.ok);
        if let (true, VmKind::Namespace, Some((_, leg))) = (attached, vm.kind, lab.leg6(&vm.bridge))
            && let Some(a6) = leg.address6
        {
            waiting.push((i, vm_handle(dir, vm)?, a6.trunc()));
        }
    }
    if waiting.is_empty() {
        return Ok(());
    }
    say(q, format!("waiting for {} VM(s) to autoconfigure IPv6 from router advertisements", waiting.len()));
    let start = Instant::now();
    while !waiting.is_empty() {
        interrupt::check()?;
        waiting.retain(|(i, vm, prefix)| match vm.global6(*prefix) {
            Some(a) => {
                if let Some(s) = statuses[*i].as_mut() {
                    s.address6 = Some(a);
                }
                say(q, format!("{}: {a} (SLAAC, {:.1} s)", vm.name(), start.elapsed().as_secs_f64()));
                false
            }
            None => true,
        });
        if start.elapsed() > SLAAC_WAIT {
            for (_, vm, prefix) in &waiting {
                say(q, format!("{}: no IPv6 address from {prefix} after {} s", vm.name(), SLAAC_WAIT.as_secs()));
            }
            break;
        }
        if !waiting.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(())
}

/// The guest image and accelerator, found once per `up` when the first
/// real guest needs them.
#[derive(Default)]
struct Guests {
    ready: Option<(Image, Accel)>,
}

impl Guests {
    fn get(&mut self, dir: &LabDir, state: &mut LabState, q: bool) -> Result<&(Image, Accel)> {
        if self.ready.is_none() {
            let image = guest::image(dir, q)?;
            let (accel, why) = guest::detect_accel(dir, &image);
            say(q, format!("guests: QEMU with {} ({why})", accel.name()));
            state.accel = Some(format!("{} ({why})", accel.name()));
            self.ready = Some((image, accel));
        }
        self.ready.as_ref().ok_or_else(|| anyhow!("no guest image"))
    }
}

/// A real guest: QEMU (directly, or through the host's libvirtd) with its
/// NIC on a tap in the VM's bridge; waits until the guest's console says it
/// is ready. Returns what to report and, for a DHCP guest, its lease.
fn attach_guest(
    dir: &LabDir,
    lab: &Lab,
    vm: &spec::LabVm,
    tap: &str,
    guests: &mut Guests,
    state: &mut LabState,
    q: bool,
) -> Result<(String, Option<Lease>)> {
    let host = lab.hosts.iter().find(|h| h.name == vm.host).ok_or_else(|| anyhow!("no host {}", vm.host))?;
    let node = dir.node(&vm.host)?;
    let bridge_mtu =
        mtu_of(&mut node.netlink()?, &vm.bridge)?.ok_or_else(|| anyhow!("host {} has no bridge {}", vm.host, vm.bridge))?;
    let (image, accel) = guests.get(dir, state, q)?;
    let root = dir.host_root(&vm.host)?;
    let files = Files::new(&root)?;
    let plan = guest::net_plan(vm, bridge_mtu);
    let log = files.outside(&files.log(&vm.name));
    let sock = files.outside(&files.socket(&vm.name));
    let started = Instant::now();
    let (boot, how) = if std::os::unix::net::UnixStream::connect(&sock).is_ok() {
        // Already running (a second `up`): read what it said when it booted.
        (guest::wait_ready(&log, started, || true)?, "running".to_string())
    } else if host.libvirt {
        say(q, format!("{}: virsh create on {} ({} guest)", vm.name, vm.host, accel.name()));
        let xml = libvirt::domain_xml(&lab.name, vm, &files, &plan, *accel, image);
        let tap = libvirt::create(&node, &files, vm, &xml)?;
        let boot = guest::wait_ready(&log, started, || libvirt::alive(&root, &vm.name))?;
        (boot, format!("{tap} in {} on {}, started by libvirt", vm.bridge, vm.host))
    } else {
        say(q, format!("{}: booting on {} ({} guest)", vm.name, vm.host, accel.name()));
        nodes::create_tap(&node, tap)?;
        // As libvirt does: the tap gets the bridge's MTU.
        let set = SetLink {
            mtu: Some(bridge_mtu),
            master: Some(index_of(&mut node.netlink()?, &vm.bridge)?.ok_or_else(|| anyhow!("no bridge {}", vm.bridge))?),
            up: Some(true),
            ..SetLink::default()
        };
        node.netlink()?.set_link(LinkRef::Name(tap), &set).map_err(|e| anyhow!("plug {tap} into {}: {e}", vm.bridge))?;
        let pid = guest::start_qemu(&node, &files, &lab.name, vm, tap, &plan, *accel, image)?;
        let boot = guest::wait_ready(&log, started, || nodes::alive(pid))?;
        (boot, format!("{tap} in {} on {}", vm.bridge, vm.host))
    };
    if !boot.failures.is_empty() {
        bail!("the guest reports: {}", boot.failures.join("; "));
    }
    let Some((addr, mtu, gw)) = boot.net.clone().filter(|n| n.0 != "-") else {
        bail!("the guest has no address on eth0");
    };
    say(q, format!("{}: ready in {:.1} s, eth0 {addr} mtu {mtu}{}", vm.name, boot.secs, if vm.dhcp { " (DHCP)" } else { "" }));
    let detail = format!("{} guest, {how}, ready in {:.1} s", accel.name(), boot.secs);
    Ok((detail, vm.dhcp.then_some((addr, gw, mtu))))
}

/// A VM: a namespace whose eth0 is plugged into a bridge of its host through
/// a tap-like veth the host end of which vxrouter does not own (as with
/// libvirt's vnetN), with the segment's MTU — or, for a DHCP VM, starting
/// like a stock image (MTU 1500, no address) and configured by its lease.
fn attach_vm(dir: &LabDir, lab: &Lab, vm: &spec::LabVm, tap: &str) -> Result<Option<Lease>> {
    let host = dir.node(&vm.host)?;
    let mut hs = host.netlink()?;
    let bridge_mtu = mtu_of(&mut hs, &vm.bridge)?.ok_or_else(|| anyhow!("host {} has no bridge {}", vm.host, vm.bridge))?;
    let node = dir.new_netns(&vm.name)?;
    if lab.leg6(&vm.bridge).is_some() {
        // As a guest does: take router advertisements and autoconfigure
        // (set before eth0 exists, so its first solicitation counts).
        for (key, value) in [("accept_ra", "2"), ("autoconf", "1"), ("accept_ra_mtu", "1")] {
            vxrouter::kinds::sysctl::write(Some(&node.net), &format!("net/ipv6/conf/default/{key}"), value)?;
        }
    }
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
fn dhcp_client(dir: &LabDir, vm: &spec::LabVm) -> Result<Lease> {
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

/// Runs a command inside a node and returns its exit code. In a real
/// guest it runs through the guest's console (output printed at the end).
pub fn exec(lab: &Lab, node: &str, argv: &[String]) -> Result<i32> {
    let dir = LabDir::open(&lab.name).ok_or_else(|| anyhow!("lab {} is not up (run `vxrouter lab up` first)", lab.name))?;
    let n = match lab.vms.iter().find(|v| v.name == node) {
        Some(vm) => vm_handle(&dir, vm)?,
        None => Vm::Ns(dir.node(node).with_context(|| {
            let mut names: Vec<String> = lab.hosts.iter().map(|h| h.name.clone()).collect();
            names.extend(lab.vms.iter().map(|v| v.name.clone()));
            names.extend(["fabric", "internet", "server", "attacker"].map(String::from));
            format!("nodes of lab {}: {}", lab.name, names.join(", "))
        })?),
    };
    n.exec(argv)
}

/// A VM as the checks and `exec` drive it.
pub fn vm_handle(dir: &LabDir, vm: &spec::LabVm) -> Result<Vm> {
    Ok(match vm.kind {
        VmKind::Namespace => Vm::Ns(dir.vm(&vm.name, &vm.host)?),
        VmKind::Qemu => {
            let sock = dir.host_root(&vm.host)?.join(guest::GUEST_DIR.trim_start_matches('/')).join(format!("{}.sock", vm.name));
            Vm::Guest(Arc::new(Console::new(&vm.name, sock)))
        }
    })
}

pub fn load(path: &Path) -> Result<Lab> {
    Lab::load(path).map_err(anyhow::Error::new)
}

/// A lab given as its file or as the name of a running lab (its state says
/// which file it was built from).
pub fn resolve(arg: &Path) -> Result<Lab> {
    if arg.exists() {
        return load(arg);
    }
    let name = arg.to_string_lossy();
    if !name.contains('/')
        && let Some(dir) = LabDir::open(&name)
    {
        let state = LabState::load(&dir);
        if state.file.is_empty() {
            bail!("lab {name} is up, but its state names no lab file; `vxrouter lab down {name}` removes it");
        }
        return load(Path::new(&state.file)).with_context(|| format!("lab {name} was built from {}", state.file));
    }
    let running = running_labs();
    let running = if running.is_empty() { "none".to_string() } else { running.join(", ") };
    bail!("{} is neither a lab file nor the name of a running lab (running: {running})", arg.display())
}

/// The name of the lab a `down` argument means: from the file when it can
/// be read (even if it no longer validates), else the argument as a name.
pub fn name_for_down(arg: &Path) -> Result<String> {
    if let Ok(lab) = load(arg) {
        return Ok(lab.name);
    }
    if arg.exists() {
        // A lab that was up before its file was edited into an invalid
        // one must still come down: take just the name.
        #[derive(Deserialize)]
        struct NameOnly {
            lab: LabName,
        }
        #[derive(Deserialize)]
        struct LabName {
            name: String,
        }
        let text = std::fs::read_to_string(arg).with_context(|| format!("read {}", arg.display()))?;
        let n: NameOnly = toml::from_str(&text).map_err(|_| anyhow!("{}: no [lab] name to take down", arg.display()))?;
        return Ok(n.lab.name);
    }
    let name = arg.to_string_lossy().into_owned();
    if name.contains('/') || LabDir::open(&name).is_none() {
        bail!("{} is neither a lab file nor the name of a running lab", arg.display());
    }
    Ok(name)
}

/// Names of the labs up on this machine (in this mount namespace).
pub fn running_labs() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(nodes::LAB_ROOT)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("lab.json").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `lab status` (`lab list`): the labs that are up, from their state.
pub fn status(json: bool) -> Result<u8> {
    let mut labs = Vec::new();
    for name in running_labs() {
        let Some(dir) = LabDir::open(&name) else { continue };
        let st = LabState::load(&dir);
        let holders: Vec<(String, bool)> = st.hosts.iter().map(|h| (h.name.clone(), dir.host_root(&h.name).is_ok())).collect();
        let gone: Vec<&str> = holders.iter().filter(|(_, alive)| !alive).map(|(n, _)| n.as_str()).collect();
        let failed: Vec<&str> = st.hosts.iter().chain(&st.vms).filter(|n| !n.ok).map(|n| n.name.as_str()).collect();
        let health = if !gone.is_empty() {
            format!("broken: host(s) {} gone; `vxrouter lab down {name}`", gone.join(", "))
        } else if !failed.is_empty() {
            format!("up, not as the profiles say: {}", failed.join(", "))
        } else {
            "up".to_string()
        };
        labs.push(serde_json::json!({
            "name": name,
            "file": st.file,
            "state": health,
            "ok": gone.is_empty() && failed.is_empty(),
            "hosts": st.hosts.iter().map(|h| serde_json::json!({"name": h.name, "ok": h.ok, "detail": h.detail})).collect::<Vec<_>>(),
            "vms": st.vms.iter().map(|v| serde_json::json!({"name": v.name, "ok": v.ok, "detail": v.detail})).collect::<Vec<_>>(),
            "accel": st.accel,
        }));
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "labs": labs }))?);
        return Ok(0);
    }
    if labs.is_empty() {
        println!("no lab is up");
        return Ok(0);
    }
    for l in &labs {
        println!(
            "{}  {}  ({} host(s), {} VM(s))  {}",
            l["name"].as_str().unwrap_or(""),
            l["state"].as_str().unwrap_or(""),
            l["hosts"].as_array().map(Vec::len).unwrap_or(0),
            l["vms"].as_array().map(Vec::len).unwrap_or(0),
            l["file"].as_str().unwrap_or("")
        );
    }
    Ok(0)
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

/// `lab run`: up, check, down. The lab is removed even when a step fails
/// or the run is interrupted.
pub fn run(lab: &Lab, json: bool, quiet: bool) -> Result<u8> {
    let built = up(lab, &UpOptions { apply: true, quiet: quiet || json });
    let result = match built {
        Ok(_) => check(lab, json),
        Err(e) => Err(e),
    };
    let removed = down(&lab.name, quiet || json);
    nodes::reap_detached();
    let code = result?;
    removed?;
    Ok(code)
}
