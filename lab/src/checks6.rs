//! The IPv6 cells of the matrix (issue 15): VMs on a segment whose router
//! leg has an `address6` autoconfigure from its router advertisements; the
//! cells check that address, IPv6 between VMs across hosts, IPv6 to the
//! internet server (with the source the server sees), that nothing opens a
//! connection to a VM from the internet, and IPv6 path MTU. Like the IPv4
//! cells, every "must fail" cell has a positive control.

use std::net::Ipv6Addr;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::checks::{CheckResult, SERVER_PORT, VM_PORT};
use crate::lab::{LabState, NARROW_MTU, attacker_address6, server6_side};
use crate::nodes::Node;
use crate::spec::{Lab, LabVm, VmKind};
use crate::vm::{Listener, Vm};

/// The attacker's listener: VMs connect out to it (the control of the
/// inbound cell: the attacker's packets do reach the VM's prefix).
pub const ATTACKER_PORT: u16 = 7002;

/// IPv6 header (40) + ICMPv6 echo header (8).
const PING6_OVERHEAD: u32 = 48;

pub type Job<'a> = Box<dyn FnOnce() -> Vec<CheckResult> + Send + 'a>;

/// A VM on an IPv6 segment, with what the cells need of it.
pub struct Vm6<'a> {
    pub vm: &'a LabVm,
    pub handle: &'a Vm,
    pub addr: Ipv6Addr,
    /// The source the internet should see: the VM's own address (routed)
    /// or its router's public IPv6 address (NAT66).
    pub egress: Option<Ipv6Addr>,
    pub nat66: bool,
    pub seg_mtu: u32,
}

/// What `prepare` set up: the VMs with their addresses, the cells already
/// decided (`slaac`), and the listeners, which live as long as this.
pub struct Six<'a> {
    pub vms: Vec<Vm6<'a>>,
    pub early: Vec<CheckResult>,
    _listeners: Vec<Listener>,
}

fn cell(check: &'static str, from: &str, to: &str, ok: bool, detail: String) -> CheckResult {
    CheckResult { check, from: from.into(), to: to.into(), ok, detail, measure: None }
}

/// The `slaac` cells, listeners on every IPv6 VM, the server and the
/// attacker, and the attacker's routes to the IPv6 prefixes (via each
/// router's public IPv6 address, as anyone on the public segment can).
pub fn prepare<'a>(
    lab: &Lab,
    state: &LabState,
    vms: &'a [(&'a LabVm, Vm)],
    server: &Vm,
    attacker: &Node,
    seg_mtu: &dyn Fn(&LabVm) -> u32,
) -> Result<Six<'a>> {
    let mut six = Six { vms: Vec::new(), early: Vec::new(), _listeners: Vec::new() };
    for (vm, handle) in vms {
        let Some((router, leg)) = lab.leg6(&vm.bridge) else { continue };
        let Some(prefix) = leg.address6.map(|a| a.trunc()) else { continue };
        if vm.kind != VmKind::Namespace {
            // Real guests are left out of the IPv6 cells (docs/lab.md).
            continue;
        }
        // `up` waited for the address; a `check` right after another `up`
        // may still have to.
        let start = Instant::now();
        let addr = loop {
            if let Some(a) = state.vm(&vm.name).and_then(|s| s.address6).filter(|a| handle.global6(prefix) == Some(*a)) {
                break Some(a);
            }
            if let Some(a) = handle.global6(prefix) {
                break Some(a);
            }
            if start.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let Some(addr) = addr else {
            six.early.push(cell(
                "slaac",
                &vm.name,
                &vm.bridge,
                false,
                format!("no usable address from {prefix}: the router's advertisements did not reach {}", vm.name),
            ));
            continue;
        };
        let seg = seg_mtu(vm);
        let mtu6 = handle.mtu6();
        let (_, route) = handle_default6(handle);
        let mut problems = Vec::new();
        if mtu6 != Some(seg) {
            problems.push(format!("IPv6 MTU {mtu6:?}, expected the segment's {seg} (the advertisement's MTU option)"));
        }
        if !route.contains("proto ra") {
            problems.push(format!("no default route from the advertisement: {route:?}"));
        }
        let ok = problems.is_empty();
        six.early.push(cell(
            "slaac",
            &vm.name,
            &vm.bridge,
            ok,
            if ok { format!("{addr}, IPv6 MTU {seg}, default route from the advertisement") } else { problems.join("; ") },
        ));
        six._listeners.push(handle.listen(addr, VM_PORT)?);
        let nat66 = router.nat6 == vxrouter::profile::Nat6::Masquerade;
        let public6 = router.public.leg.address6.map(|a| a.addr());
        let egress = if nat66 { public6 } else { Some(addr) };
        six.vms.push(Vm6 { vm, handle, addr, egress, nat66, seg_mtu: seg });
    }
    if six.vms.is_empty() {
        return Ok(six);
    }
    if let Some(s6) = lab.server6 {
        six._listeners.push(server.listen(s6, SERVER_PORT)?);
    }
    if let Some(a6) = attacker_address6(lab) {
        six._listeners.push(
            Vm::Ns(Node { name: attacker.name.clone(), net: attacker.net.try_clone()?, mnt: None }).listen(a6, ATTACKER_PORT)?,
        );
    }
    for r in lab.hosts.iter().filter_map(|h| h.profile.router.as_ref()) {
        let Some(public6) = r.public.leg.address6 else { continue };
        for a6 in r.private.iter().filter_map(|l| l.address6) {
            crate::lab::ip(attacker, &["-6", "route", "replace", &a6.trunc().to_string(), "via", &public6.addr().to_string()])?;
        }
    }
    Ok(six)
}

/// The VM's IPv6 default route as `ip` shows it.
fn handle_default6(vm: &Vm) -> (bool, String) {
    let mut route = String::new();
    // A router advertisement's default route appears with the address.
    for _ in 0..20 {
        route = vm_sh(vm, &["ip", "-6", "route", "show", "default"]);
        if route.contains("proto ra") {
            return (true, route);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    (false, route)
}

fn vm_sh(vm: &Vm, argv: &[&str]) -> String {
    vm.shell(argv).1
}

/// The IPv6 cells, to run in parallel with the others.
pub fn jobs<'a>(lab: &'a Lab, six: &'a Six<'a>, attacker: &'a Vm) -> Vec<Job<'a>> {
    let mut jobs: Vec<Job<'a>> = Vec::new();
    let attacker6 = attacker_address6(lab);
    for a in &six.vms {
        // VM ↔ VM across hosts, on the same segment.
        for b in six.vms.iter().filter(|b| b.vm.bridge == a.vm.bridge && b.vm.host != a.vm.host) {
            jobs.push(Box::new(move || {
                let (ok, d) = a.handle.ping6(b.addr);
                vec![cell("ping6", &a.vm.name, &b.vm.name, ok, if ok { format!("{} → {}", a.addr, b.addr) } else { d })]
            }));
        }
        // VM → internet: the source the server sees, then path MTU.
        jobs.push(Box::new(move || {
            let Some(s6) = lab.server6 else {
                let why = "the lab file has no [internet] server6 (and gateway6) for this IPv6 segment".to_string();
                return vec![
                    cell("egress6-source", &a.vm.name, "internet", false, why.clone()),
                    cell("pmtu6", &a.vm.name, "internet", false, why),
                ];
            };
            let mut out = Vec::new();
            let want = a.egress.map(|e| e.to_string()).unwrap_or_else(|| "(its router has no public address6)".into());
            let how = if a.nat66 { "NAT66 to the router's public address" } else { "routed: the VM's own address" };
            match a.handle.send(s6, SERVER_PORT, 64, 3) {
                Ok((peer, _)) => {
                    let seen = peer.parse::<Ipv6Addr>().ok();
                    let ok = seen.is_some() && seen == a.egress;
                    out.push(cell(
                        "egress6-source",
                        &a.vm.name,
                        "internet",
                        ok,
                        if ok { format!("{peer} ({how})") } else { format!("the server saw {peer}, expected {want} ({how})") },
                    ));
                }
                Err(e) => out.push(cell("egress6-source", &a.vm.name, "internet", false, format!("[{s6}]:{SERVER_PORT}: {e}"))),
            }
            let (ok, d) = path_mtu6(a.handle, s6, a.seg_mtu);
            out.push(cell("pmtu6", &a.vm.name, "internet", ok, d));
            out
        }));
        // Internet → VM: no new connection gets in.
        let peer = six.vms.iter().find(|b| b.vm.bridge == a.vm.bridge && b.vm.name != a.vm.name).unwrap_or(a);
        let r = move |ok, detail: String| vec![cell("inbound6-blocked", "internet", &a.vm.name, ok, detail)];
        jobs.push(Box::new(move || {
            let Some(me) = attacker6 else {
                return r(false, "the lab file has no [internet] gateway6: no attacker on the public segment's IPv6".into());
            };
            // Control 1: the VM's listener answers from its own segment.
            if let Err(e) = peer.handle.send(a.addr, VM_PORT, 16, 3) {
                return r(
                    false,
                    format!(
                        "control failed: {}'s listener [{}]:{VM_PORT} unreachable from its own segment: {e}",
                        a.vm.name, a.addr
                    ),
                );
            }
            // Control 2: the VM reaches the attacker through the router and
            // the attacker's answers come back (routed: to the VM's prefix,
            // the very route the attack takes).
            match a.handle.send(me, ATTACKER_PORT, 16, 3) {
                Ok((seen, _)) if seen.parse::<Ipv6Addr>().ok() == a.egress => {}
                Ok((seen, _)) => {
                    return r(false, format!("control: the attacker saw {seen} connect, expected {:?}", a.egress));
                }
                Err(e) => {
                    return r(
                        false,
                        format!("control failed: {} cannot reach the attacker at [{me}]:{ATTACKER_PORT}: {e}", a.vm.name),
                    );
                }
            }
            match attacker.send(a.addr, VM_PORT, 16, 2) {
                Ok((seen, _)) => r(
                    false,
                    format!(
                        "a new connection from the internet reached {} at [{}]:{VM_PORT} (seen from {seen})",
                        a.vm.name, a.addr
                    ),
                ),
                Err(_) => r(
                    true,
                    format!(
                        "blocked; controls: {} listens, the attacker's route via the router carries {}",
                        a.vm.name,
                        if a.nat66 { "replies to the router's public address" } else { "replies to the VM's prefix" }
                    ),
                ),
            }
        }));
    }
    jobs
}

/// IPv6 path MTU from a VM to the internet server: an unfragmentable ping
/// whose packet is exactly the segment MTU gets an answer (across VXLAN,
/// the router and the internet, both ways); one byte more does not leave
/// the VM (it knows the segment MTU, from its link and the advertisement);
/// and a packet-too-big from a narrower hop beyond the router reaches the
/// VM through the router's firewall: the VM's kernel learns the smaller
/// path MTU (route cache "mtu 1280", which only a received packet-too-big
/// sets) and a ping that fits it is answered.
fn path_mtu6(a: &Vm, server6: Ipv6Addr, seg: u32) -> (bool, String) {
    if seg < 1280 {
        return (false, format!("the segment MTU ({seg}) is below IPv6's minimum of 1280 (or unreadable)"));
    }
    let full = seg - PING6_OVERHEAD;
    if !(a.ping6_df(server6, full).0 || a.ping6_df(server6, full).0) {
        return (false, format!("{seg}-byte IPv6 packets do not get to {server6} and back"));
    }
    let (passed, said) = a.ping6_df(server6, full + 1);
    if passed {
        return (false, format!("{}-byte IPv6 packets got through a segment MTU of {seg}", seg + 1));
    }
    let lower = said.to_ascii_lowercase();
    if !lower.contains("message too long") && !lower.contains("packet too big") {
        return (false, format!("{}-byte IPv6 packets were sent and lost instead of refused: {}", seg + 1, last_line(&said)));
    }
    // An address behind the narrow hop that the VM has no path MTU for yet
    // (one cached by an earlier check would pass without a new packet-too-big).
    let (_, block) = server6_side(server6);
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let fresh = (0..64u32)
        .map(|i| Ipv6Addr::from(u128::from(block.network()) + 1 + u128::from((seed.wrapping_add(i * 7919)) % 0xfffe)))
        .find(|n| narrow_seen(a, *n).is_none());
    let Some(narrow) = fresh else {
        return (false, format!("every address of {block} tried has a path MTU cached already"));
    };
    if narrow_seen(a, narrow).is_none() {
        let (_, said) = a.ping6_df(narrow, full);
        if narrow_seen(a, narrow).is_none() {
            return (
                false,
                format!(
                    "no packet-too-big reached the VM: {seg}-byte packets to {narrow} (behind a {NARROW_MTU}-byte hop) left no path MTU in its route cache: {}",
                    last_line(&said)
                ),
            );
        }
    }
    let fits = NARROW_MTU - PING6_OVERHEAD;
    if !(a.ping6_df(narrow, fits).0 || a.ping6_df(narrow, fits).0) {
        return (
            false,
            format!("the VM learnt path MTU {NARROW_MTU} to {narrow}, but {NARROW_MTU}-byte packets do not get there"),
        );
    }
    (
        true,
        format!(
            "{seg} bytes to {server6} unfragmented, {} refused; packet-too-big from a {NARROW_MTU}-byte hop delivered (route cache mtu {NARROW_MTU})",
            seg + 1
        ),
    )
}

fn narrow_seen(a: &Vm, narrow: Ipv6Addr) -> Option<u32> {
    a.route6_mtu(narrow).filter(|m| *m == NARROW_MTU)
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

/// The public-side problems of a router with a public IPv6 address: its
/// public address answers ping (control) and none of its private IPv6
/// gateways does (the attacker routes them via the public address).
pub fn public_side6(lab: &Lab, attacker: &Vm, public6: Ipv6Addr, gateways6: &[Ipv6Addr]) -> Vec<String> {
    let mut problems = Vec::new();
    if attacker_address6(lab).is_none() {
        problems.push("the lab file has no [internet] gateway6 to check the router's public IPv6 address from".into());
        return problems;
    }
    if !attacker.ping6(public6).0 {
        problems.push(format!("control failed: the public IPv6 address {public6} does not answer ping"));
    }
    for g in gateways6 {
        if attacker.ping6(*g).0 {
            problems.push(format!("the private IPv6 gateway {g} answers ping from the public side"));
        }
    }
    problems
}

/// The `underlay-family` cells: counters on the lab switch's underlay
/// ports, per host, of VXLAN packets (the segments' UDP ports) over IPv4
/// and over IPv6 while the checks run. A host whose profile's `local` is
/// IPv6 must have sent its VXLAN over IPv6 only, any other host over IPv4
/// only. Only in labs with an IPv6 underlay (`[underlay] subnet6`).
pub struct VxlanCounters {
    fabric: Node,
    /// (host, its counters' stem, VXLAN over IPv6 expected)
    hosts: Vec<(String, String, bool)>,
}

const COUNT_TABLE: &str = "vxrouter_lab_vxlan";

fn nft(node: &Node, args: &[&str], stdin: Option<&str>) -> Result<String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = node
        .command("nft")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("run nft in {}: {e}", node.name))?;
    if let (Some(text), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        anyhow::bail!("nft {} in {}: {}", args.join(" "), node.name, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl VxlanCounters {
    pub fn start(lab: &Lab, fabric: Node) -> Result<Option<VxlanCounters>> {
        if lab.underlay6.is_none() {
            return Ok(None);
        }
        let mut ports: Vec<String> =
            lab.hosts.iter().flat_map(|h| h.profile.segments.iter().map(|s| s.port.to_string())).collect();
        ports.sort();
        ports.dedup();
        if ports.is_empty() {
            return Ok(None);
        }
        let set = ports.join(", ");
        let mut hosts = Vec::new();
        let mut counters = String::new();
        let mut rules = String::new();
        for (i, h) in lab.hosts.iter().enumerate().filter(|(_, h)| !h.profile.segments.is_empty()) {
            let stem = format!("u{i}");
            counters.push_str(&format!("  counter {stem}_4 {{}}\n  counter {stem}_6 {{}}\n"));
            rules.push_str(&format!(
                "  iifname \"{stem}\" ether type ip udp dport {{ {set} }} counter name \"{stem}_4\"\n  iifname \"{stem}\" ether type ip6 udp dport {{ {set} }} counter name \"{stem}_6\"\n"
            ));
            hosts.push((h.name.clone(), stem, h.local_address().is_ipv6()));
        }
        let _ = nft(&fabric, &["delete", "table", "bridge", COUNT_TABLE], None);
        let text = format!(
            "table bridge {COUNT_TABLE} {{\n{counters} chain count {{\n  type filter hook forward priority -200; policy accept;\n{rules} }}\n}}\n"
        );
        nft(&fabric, &["-f", "-"], Some(&text))?;
        Ok(Some(VxlanCounters { fabric, hosts }))
    }

    pub fn finish(self) -> Vec<CheckResult> {
        let listed = nft(&self.fabric, &["-j", "list", "counters", "table", "bridge", COUNT_TABLE], None);
        let _ = nft(&self.fabric, &["delete", "table", "bridge", COUNT_TABLE], None);
        let counts: std::collections::BTreeMap<String, u64> = match &listed {
            Ok(json) => serde_json::from_str::<serde_json::Value>(json)
                .ok()
                .and_then(|v| v["nftables"].as_array().cloned())
                .unwrap_or_default()
                .iter()
                .filter_map(|o| {
                    let c = o.get("counter")?;
                    Some((c["name"].as_str()?.to_string(), c["packets"].as_u64()?))
                })
                .collect(),
            Err(_) => Default::default(),
        };
        self.hosts
            .iter()
            .map(|(host, stem, v6)| {
                let (Some(n4), Some(n6)) = (counts.get(&format!("{stem}_4")), counts.get(&format!("{stem}_6"))) else {
                    let why = listed.as_ref().err().map(|e| format!("{e:#}")).unwrap_or_else(|| "counters missing".into());
                    return cell("underlay-family", host, "underlay", false, format!("cannot read the switch's counters: {why}"));
                };
                let (want, other, wname, oname) = if *v6 { (n6, n4, "IPv6", "IPv4") } else { (n4, n6, "IPv4", "IPv6") };
                let ok = *want > 0 && *other == 0;
                let detail = if ok {
                    format!("{want} VXLAN packet(s) over {wname}, none over {oname}")
                } else if *want == 0 {
                    format!("sent no VXLAN over {wname} while the checks ran ({other} over {oname})")
                } else {
                    format!("sent {other} VXLAN packet(s) over {oname} (and {want} over {wname}); its profile's local is {wname}")
                };
                cell("underlay-family", host, "underlay", ok, detail)
            })
            .collect()
    }
}
