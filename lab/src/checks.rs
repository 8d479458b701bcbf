//! The lab's connectivity matrix: every check is real traffic between lab
//! nodes, and every "must fail" check has a positive control, so a broken
//! lab cannot pass by accident.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::Stdio;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::interrupt;
use crate::lab::{LabState, attacker_address};
use crate::nodes::{LabDir, Node};
use crate::spec::{Lab, LabVm};
use crate::vm::Vm;

pub const SERVER_PORT: u16 = 7000;
pub const VM_PORT: u16 = 7001;
/// Bulk transfers: large enough that a segment MTU black hole stalls them.
pub const BULK_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: &'static str,
    pub from: String,
    pub to: String,
    pub ok: bool,
    pub detail: String,
    /// The numbers behind a measuring cell (the HA cells' gaps), as JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measure: Option<serde_json::Value>,
}

/// Drops multicast on the lab switch (a cloud underlay without it): IPv4's,
/// and IPv6's beyond the link-local scope (neighbour discovery stays).
pub fn block_multicast(fabric: &Node) -> Result<()> {
    let rules = "table bridge vxrouter_lab {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  ether type ip ip daddr 224.0.0.0/4 drop\n  ether type ip6 ip6 daddr ff00::/8 ip6 daddr != ff02::/16 drop\n }\n}\n";
    let mut child = fabric
        .command("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("run nft in the lab switch (is nftables installed?)")?;
    use std::io::Write;
    child.stdin.take().map(|mut s| s.write_all(rules.as_bytes())).transpose()?;
    let st = child.wait()?;
    if !st.success() {
        return Err(anyhow!("nft could not block multicast on the lab switch"));
    }
    Ok(())
}

/// Full-size packets cross VXLAN unfragmented (`ping -M do` at the segment
/// MTU, the bridge's on the sending host, works) and one byte more does not
/// get through — refused by the sender itself, which knows its MTU. A VM
/// whose own MTU is larger than the segment's fails at once: its full-size
/// frames would be dropped silently on the way (an MTU black hole, which a
/// plain "one byte more does not arrive" cannot tell from a correct MTU).
fn path_mtu(a: &Vm, to: Ipv4Addr, seg: u32, mtus: [(&str, &Result<u32, String>); 2]) -> (bool, String) {
    if seg < 68 {
        return (false, format!("cannot read the segment MTU ({seg})"));
    }
    for (name, mtu) in mtus {
        match mtu {
            Ok(m) if *m > seg => {
                return (
                    false,
                    format!(
                        "MTU black hole: {name}'s eth0 has MTU {m}, more than the segment's {seg}; its frames above {seg} bytes are dropped silently on the way"
                    ),
                );
            }
            Ok(_) => {}
            Err(e) => return (false, format!("cannot read the MTU of {name}: {e}")),
        }
    }
    let full = seg.saturating_sub(28);
    if !(a.ping_df(to, full).0 || a.ping_df(to, full).0) {
        return (false, format!("{seg}-byte packets with DF set do not get across"));
    }
    let (passed, said) = a.ping_df(to, full + 1);
    if passed {
        return (false, format!("{}-byte packets got through an MTU of {seg}", seg + 1));
    }
    // iputils says "local error: message too long" (raw socket, error
    // queue) or "sendmsg: Message too long" (ICMP datagram socket): either
    // way the sender refused the packet itself.
    if !said.to_ascii_lowercase().contains("message too long") {
        return (
            false,
            format!("{}-byte packets were sent and lost instead of being refused by {}: {}", seg + 1, a.name(), last_line(&said)),
        );
    }
    (true, format!("{seg} bytes unfragmented, {} refused", seg + 1))
}

fn last_line(s: &str) -> &str {
    s.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim()
}

/// The router serving both VMs' segments (their gateways are its legs).
fn shared_router<'a>(lab: &'a Lab, a: &LabVm, b: &LabVm) -> Option<&'a vxrouter::profile::Router> {
    lab.hosts.iter().filter_map(|h| h.profile.router.as_ref()).find(|r| {
        r.private.iter().any(|l| l.address.addr() == a.gateway) && r.private.iter().any(|l| l.address.addr() == b.gateway)
    })
}

/// The public address a VM is expected to leave through: that of the
/// router whose private leg is the VM's gateway.
fn expected_source(lab: &Lab, vm: &LabVm) -> Vec<Ipv4Addr> {
    for h in &lab.hosts {
        if let Some(r) = &h.profile.router
            && r.private.iter().any(|l| l.address.addr() == vm.gateway)
        {
            return vec![r.public.leg.address.addr()];
        }
    }
    lab.router_addresses()
}

fn human(bytes: u64) -> String {
    if bytes >= 1 << 20 { format!("{} MiB", bytes >> 20) } else { format!("{bytes} B") }
}

/// Runs closures on a few threads at once (a pool of 24 workers, each taking
/// the next job as soon as it is done with one: most jobs wait on a timeout
/// rather than a CPU, and a batch would wait for its slowest), keeping
/// their order. Jobs not started when a signal arrives are dropped.
/// A job for [`parallel`].
type Job<'a, T> = Box<dyn FnOnce() -> T + Send + 'a>;

fn parallel<T: Send>(jobs: Vec<Job<'_, T>>) -> Vec<T> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    const WORKERS: usize = 24;
    let n = jobs.len();
    let jobs: Vec<Mutex<Option<Job<'_, T>>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let out: Vec<Mutex<Option<T>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..WORKERS.min(n) {
            s.spawn(|| {
                loop {
                    if interrupt::received().is_some() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i).and_then(|j| j.lock().ok()?.take()) else { break };
                    let r = job();
                    if let Ok(mut o) = out[i].lock() {
                        *o = Some(r);
                    }
                }
            });
        }
    });
    out.into_iter().filter_map(|o| o.into_inner().ok().flatten()).collect()
}

pub fn run_checks(lab: &Lab) -> Result<Vec<CheckResult>> {
    let dir = LabDir::open(&lab.name).ok_or_else(|| anyhow!("lab {} is not up (run `vxrouter lab up` first)", lab.name))?;
    let state = LabState::load(&dir);
    let mut results = Vec::new();
    let mut fail = |check: &'static str, from: &str, to: &str, detail: String| {
        results.push(CheckResult { check, from: from.into(), to: to.into(), ok: false, detail, measure: None })
    };

    // VMs that never got attached fail every check, with the reason.
    // DHCP VMs are checked with the address and gateway they leased.
    let effective: Vec<LabVm> = lab
        .vms
        .iter()
        .map(|v| {
            let mut v = v.clone();
            if let Some((addr, gw, _)) = state.vm(&v.name).and_then(|s| s.lease.clone()) {
                v.address = addr.parse().unwrap_or(v.address);
                v.gateway = gw.parse().unwrap_or(v.gateway);
            }
            v
        })
        .collect();
    // The MTU of each segment bridge a VM sits on, read once per host.
    let mut segment_mtus: BTreeMap<(String, String), u32> = BTreeMap::new();
    for vm in &effective {
        segment_mtus.entry((vm.host.clone(), vm.bridge.clone())).or_insert_with(|| segment_mtu(&dir, &vm.host, &vm.bridge));
    }
    let mtu_of = |vm: &LabVm| segment_mtus.get(&(vm.host.clone(), vm.bridge.clone())).copied().unwrap_or(0);
    let mut dhcp_cells = Vec::new();
    let mut vms: Vec<(&LabVm, Vm)> = Vec::new();
    for vm in &effective {
        match state.vm(&vm.name) {
            Some(s) if s.ok => {
                if let Some(lease) = &s.lease {
                    dhcp_cells.push(dhcp_check(lab, vm, lease, mtu_of(vm)));
                }
                vms.push((vm, crate::lab::vm_handle(&dir, vm)?))
            }
            Some(s) => fail("attached", &vm.name, &vm.bridge, s.detail.clone()),
            None => fail("attached", &vm.name, &vm.bridge, "the lab did not create this VM (run `vxrouter lab up`)".into()),
        }
    }
    results.extend(dhcp_cells);
    for h in &state.hosts {
        if !h.ok {
            results.push(CheckResult {
                check: "applied",
                from: h.name.clone(),
                to: String::new(),
                ok: false,
                detail: h.detail.clone(),
                measure: None,
            });
        }
    }

    let server = Vm::Ns(dir.node("server")?);
    let attacker_node = dir.node("attacker")?;
    let _server_l = server.listen(lab.server, SERVER_PORT)?;
    // Every VM listens, and says what MTU its eth0 has. A VM that cannot
    // (a guest that stopped answering) fails here, with the reason, and
    // leaves the matrix.
    let mut vm_listeners = Vec::new();
    let mut vm_mtus: BTreeMap<String, Result<u32, String>> = BTreeMap::new();
    let mut reachable = Vec::new();
    for (vm, handle) in vms {
        match handle.listen(vm.address.addr(), VM_PORT) {
            Ok(l) => {
                vm_listeners.push(l);
                vm_mtus.insert(vm.name.clone(), handle.mtu());
                reachable.push((vm, handle));
            }
            Err(e) if handle.is_guest() => results.push(CheckResult {
                check: "attached",
                from: vm.name.clone(),
                to: vm.bridge.clone(),
                ok: false,
                detail: format!("{e:#}"),
                measure: None,
            }),
            Err(e) => return Err(e),
        }
    }
    let vms = reachable;
    // IPv6: the VMs' SLAAC addresses (`slaac` cells), listeners, the
    // attacker's IPv6 routes (checks6.rs).
    let seg_mtu_of = |vm: &LabVm| mtu_of(vm);
    let six = crate::checks6::prepare(lab, &state, &vms, &server, &attacker_node, &seg_mtu_of)?;
    results.extend(six.early.iter().cloned());
    // The attacker routes the private subnets through each router's public
    // address, as anyone on the public segment can.
    for h in &lab.hosts {
        if let Some(r) = &h.profile.router {
            for leg in &r.private {
                let dst = leg.address.trunc();
                crate::lab::route(&attacker_node, dst, r.public.leg.address.addr())?;
            }
        }
    }
    let attacker = Vm::Ns(attacker_node);

    // Fragments created by a host while the checks run mean VXLAN packets did
    // not fit the underlay: the segment MTU is too large for it.
    let mut host_nodes = Vec::new();
    for h in &lab.hosts {
        if !h.profile.segments.is_empty() {
            let node = dir.node(&h.name)?;
            let before = frag_creates(&node)?;
            host_nodes.push((h.name.clone(), node, before));
        }
    }

    // VXLAN over IPv6 (labs with an IPv6 underlay): what each host sends
    // on the switch while the checks run.
    let families = crate::checks6::VxlanCounters::start(lab, dir.node("fabric")?)?;

    let me = attacker_address(lab).addr().to_string();
    let mut jobs: Vec<Box<dyn FnOnce() -> Vec<CheckResult> + Send + '_>> = Vec::new();
    for (a, an) in &vms {
        // Control for the isolation checks: ARP works on the VM's own segment.
        let needs_control = vms.iter().any(|(b, _)| b.bridge != a.bridge);
        let gw_control = needs_control
            && (an.arping(a.gateway)
                || vms.iter().any(|(b, _)| b.bridge == a.bridge && b.name != a.name && an.arping(b.address.addr())));
        for (b, _) in &vms {
            if a.name == b.name {
                continue;
            }
            let same_segment = a.bridge == b.bridge;
            let vm_mtus = &vm_mtus;
            jobs.push(Box::new(move || {
                let mut out = Vec::new();
                let mut r = |check, ok, detail: String| {
                    out.push(CheckResult { check, from: a.name.clone(), to: b.name.clone(), ok, detail, measure: None })
                };
                if same_segment {
                    let (ok, d) = an.ping(b.address.addr());
                    r("ping", ok, d);
                    if a.host != b.host && a.name < b.name {
                        match an.send(b.address.addr(), VM_PORT, BULK_BYTES, 3) {
                            Ok((_, got)) if got == BULK_BYTES => r("bulk", true, human(got)),
                            Ok((_, got)) => r("bulk", false, format!("{} of {} arrived", human(got), human(BULK_BYTES))),
                            Err(e) => r("bulk", false, e),
                        }
                        let unknown = Err("not measured".to_string());
                        let mtus = [
                            (a.name.as_str(), vm_mtus.get(&a.name).unwrap_or(&unknown)),
                            (b.name.as_str(), vm_mtus.get(&b.name).unwrap_or(&unknown)),
                        ];
                        let (ok, d) = path_mtu(an, b.address.addr(), mtu_of(a), mtus);
                        r("pmtu", ok, d);
                    }
                } else {
                    // Routed between segments of one router: only when the
                    // profile says so. Sent while the ARP probe runs: both
                    // usually wait for their timeout.
                    let routed = shared_router(lab, a, b).map(|r| r.route_between_segments);
                    let (arp, sent) = std::thread::scope(|s| {
                        let sent = routed.map(|_| s.spawn(|| an.send(b.address.addr(), VM_PORT, 16, 2)));
                        let arp = gw_control && an.arping(b.address.addr());
                        (arp, sent.map(|h| h.join().unwrap_or_else(|_| Err("the probe panicked".into()))))
                    });
                    if !gw_control {
                        r(
                            "l2-isolated",
                            false,
                            format!("control failed: {} gets no ARP reply on its own segment either", a.name),
                        );
                    } else if arp {
                        r("l2-isolated", false, format!("{} answered ARP from {}: the segments share L2", b.name, a.name));
                    } else {
                        r("l2-isolated", true, "isolated".into());
                    }
                    if let (Some(allowed), Some(sent)) = (routed, sent) {
                        match (allowed, sent) {
                            (true, Ok(_)) => r("routed", true, "routed between segments".into()),
                            (true, Err(e)) => r("routed", false, format!("route_between_segments is on, but: {e}")),
                            (false, Ok(_)) => {
                                r("routed-blocked", false, format!("{} reached {} across segments", a.name, b.name))
                            }
                            (false, Err(_)) => r("routed-blocked", true, "blocked".into()),
                        }
                    }
                }
                out
            }));
        }
        let expect = expected_source(lab, a);
        let server_addr = lab.server;
        jobs.push(Box::new(move || {
            let mut out = Vec::new();
            let mut r = |check, ok, detail: String| {
                out.push(CheckResult { check, from: a.name.clone(), to: "internet".into(), ok, detail, measure: None })
            };
            match an.send(server_addr, SERVER_PORT, 64, 3) {
                Ok((peer, _)) => {
                    let ok = peer.parse::<Ipv4Addr>().is_ok_and(|p| expect.contains(&p));
                    let want = expect.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" or ");
                    r("egress-source", ok, if ok { peer } else { format!("the server saw {peer}, expected {want}") });
                }
                Err(e) => r("egress-source", false, e),
            }
            match an.send(server_addr, SERVER_PORT, BULK_BYTES, 3) {
                Ok((_, got)) if got == BULK_BYTES => r("bulk", true, human(got)),
                Ok((_, got)) => r("bulk", false, format!("{} of {} arrived", human(got), human(BULK_BYTES))),
                Err(e) => r("bulk", false, e),
            }
            out
        }));
        let peer = vms.iter().find(|(b, _)| b.bridge == a.bridge && b.name != a.name).map(|(_, n)| n).unwrap_or(an);
        let attacker = &attacker;
        jobs.push(Box::new(move || {
            let r = |ok, detail: String| {
                vec![CheckResult {
                    check: "inbound-blocked",
                    from: "internet".into(),
                    to: a.name.clone(),
                    ok,
                    detail,
                    measure: None,
                }]
            };
            // Positive control: the listener answers from inside the segment.
            if let Err(e) = peer.send(a.address.addr(), VM_PORT, 16, 3) {
                return r(false, format!("control failed: {}'s listener unreachable from its own segment: {e}", a.name));
            }
            match attacker.send(a.address.addr(), VM_PORT, 16, 2) {
                Ok((peer, _)) => r(false, format!("a new connection from the internet reached {} (seen from {peer})", a.name)),
                Err(_) => r(true, "blocked".into()),
            }
        }));
    }
    // The public side learns nothing of the private side: a router's public
    // leg answers ARP only for the public address, the private gateways do
    // not answer pings routed via the public address, and the router has no
    // IPv6 on the public segment (its link-local, derived from the leg's
    // MAC, does not answer). The public address answering ping is the
    // control: a dead router must not pass.
    let ha_pair = crate::ha::pair(lab);
    for h in lab.hosts.iter().filter(|h| h.uplink) {
        let Some(r) = &h.profile.router else { continue };
        let leg = &r.public.leg.veth[1];
        let out = dir
            .node(&h.name)?
            .command("ip")
            .args(["netns", "exec", &r.namespace, "cat", &format!("/sys/class/net/{leg}/address")])
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("read the MAC of {leg} in {}", h.name))?;
        let mac = String::from_utf8_lossy(&out.stdout).trim().to_ascii_lowercase();
        let link_local = link_local_of(&mac);
        let public = r.public.leg.address.addr();
        let gateways: Vec<Ipv4Addr> = r.private.iter().map(|l| l.address.addr()).collect();
        let public6 = r.public.leg.address6.map(|a| a.addr());
        let gateways6: Vec<std::net::Ipv6Addr> = r.private.iter().filter_map(|l| l.address6.map(|a| a.addr())).collect();
        // One of two HA routers: only the active one answers for the
        // public address (the backup holds no address at all).
        let ha_role = match ha_pair.as_ref().and_then(|p| p.r.iter().find(|x| x.name == h.name)) {
            Some(x) => Some(crate::ha::role(&dir, x)?),
            None => None,
        };
        let (attacker, host) = (&attacker, h.name.clone());
        jobs.push(Box::new(move || {
            let mut problems = Vec::new();
            if !attacker.ping(public).0 {
                problems.push(format!("control failed: the public address {public} does not answer ping"));
            }
            match ha_role {
                Some(crate::ha::Role::Active) => {
                    let macs = attacker.arping_macs(public);
                    if macs != [mac.clone()] {
                        problems.push(format!(
                            "ARP for {public} answered by {macs:?}; expected only this active router's public leg ({mac})"
                        ));
                    }
                }
                Some(role) if attacker.arping_macs(public).contains(&mac) => {
                    problems.push(format!("this {role:?} router's public leg ({mac}) answers ARP for {public}"));
                }
                Some(_) | None => {}
            }
            for g in &gateways {
                if attacker.arping(*g) {
                    problems.push(format!("the public leg answers ARP for the private gateway {g}"));
                }
                if attacker.ping(*g).0 {
                    problems.push(format!("the private gateway {g} answers ping from the public side"));
                }
            }
            match (&link_local, public6) {
                // A public IPv6 address: it answers, the private IPv6
                // gateways behind it do not.
                (_, Some(p6)) => problems.extend(crate::checks6::public_side6(lab, attacker, p6, &gateways6)),
                (Some(ll), None) if attacker.ping6_link_local(ll, "eth0") => {
                    problems.push(format!("the router answers IPv6 on the public segment ({ll})"))
                }
                (Some(_), None) => {}
                (None, None) => problems.push(format!("cannot read the MAC of the public leg {leg}")),
            }
            let ok = problems.is_empty();
            let role = match ha_role {
                Some(crate::ha::Role::Active) => " (active: the only one answering ARP for it)",
                Some(_) => " (by the active router; not this one)",
                None => "",
            };
            let v6 = match public6 {
                Some(p6) => format!("{p6} answers, {} private IPv6 gateway(s) silent", gateways6.len()),
                None => "no IPv6".into(),
            };
            let detail = if ok {
                format!("{public} answers{role}; {} private gateway(s) silent to ARP and ping; {v6}", gateways.len())
            } else {
                problems.join("; ")
            };
            vec![CheckResult { check: "public-side", from: "internet".into(), to: host, ok, detail, measure: None }]
        }));
    }
    // Port forwards: reachable from the internet at the public address, and
    // the connection arrives with the client's own address (DNAT only).
    let mut forward_listeners = Vec::new();
    for h in &lab.hosts {
        let Some(r) = &h.profile.router else { continue };
        for f in r.forwards.iter().filter(|f| f.proto == vxrouter::profile::Proto::Tcp) {
            let target = vms.iter().find(|(v, _)| v.address.addr() == f.to);
            let Some((vm, handle)) = target else { continue };
            if f.to_port != VM_PORT {
                forward_listeners.push(handle.listen(vm.address.addr(), f.to_port)?);
            }
            let public = r.public.leg.address.addr();
            let (port, vm) = (f.port, &vm.name);
            let (attacker, me) = (&attacker, &me);
            jobs.push(Box::new(move || {
                let (ok, detail) = match attacker.send(public, port, 16, 3) {
                    Ok((peer, _)) if &peer == me => (true, format!("{public}:{port}")),
                    Ok((peer, _)) => (false, format!("arrived from {peer}, expected the client's {me}")),
                    Err(e) => (false, format!("{public}:{port}: {e}")),
                };
                vec![CheckResult { check: "forward", from: "internet".into(), to: vm.clone(), ok, detail, measure: None }]
            }));
        }
    }
    jobs.extend(crate::checks6::jobs(lab, &six, &attacker));
    let matrix_lock = crate::ha::matrix_lock(lab)?;
    for batch in parallel(jobs) {
        results.extend(batch);
    }
    drop(matrix_lock);
    drop(vm_listeners);
    drop(six);
    drop(forward_listeners);
    interrupt::check()?;
    for (name, node, before) in host_nodes {
        let after = frag_creates(&node)?;
        let n = after.saturating_sub(before);
        results.push(CheckResult {
            check: "unfragmented",
            from: name.clone(),
            to: "underlay".into(),
            ok: n == 0,
            detail: if n == 0 {
                "no fragments".into()
            } else {
                format!(
                    "{name} fragmented {n} packet(s) on the underlay: the segment MTU leaves no room for the VXLAN headers (50 bytes over IPv4, 70 over IPv6)"
                )
            },
            measure: None,
        });
    }
    if let Some(f) = families {
        results.extend(f.finish());
    }
    // Router HA: failover, sessions, return, handover, idle (ha.rs).
    results.extend(crate::ha::run(lab, &dir, &effective)?);
    Ok(results)
}

/// The MTU vxrouter gave a segment's bridge on a host (0: unknown).
fn segment_mtu(dir: &LabDir, host: &str, bridge: &str) -> u32 {
    dir.node(host)
        .ok()
        .and_then(|n| n.netlink().ok())
        .and_then(|mut s| crate::lab::mtu_of(&mut s, bridge).ok().flatten())
        .unwrap_or(0)
}

/// A DHCP VM's lease must come from its segment's router leg: an address in
/// the leg's range, the leg as gateway, and the segment's MTU (option 26:
/// the VM started at 1500).
fn dhcp_check(lab: &Lab, vm: &LabVm, lease: &(String, String, u32), bridge_mtu: u32) -> CheckResult {
    let (addr, gw, mtu) = lease;
    let mut r = CheckResult {
        check: "dhcp",
        from: vm.name.clone(),
        to: vm.bridge.clone(),
        ok: false,
        detail: String::new(),
        measure: None,
    };
    let leg = lab
        .hosts
        .iter()
        .filter_map(|h| h.profile.router.as_ref())
        .flat_map(|r| r.private.iter())
        .find(|l| l.bridge == vm.bridge && l.dhcp.is_some());
    let Some(leg) = leg else {
        r.detail = format!("got {addr} via {gw}, but no router leg on {} serves DHCP", vm.bridge);
        return r;
    };
    let range = leg.dhcp.as_ref().map(|d| (u32::from(d.first), u32::from(d.last))).unwrap_or((0, 0));
    let ip: Option<vxrouter::profile::Ipv4Cidr> = addr.parse().ok();
    let in_range =
        ip.is_some_and(|c| (range.0..=range.1).contains(&u32::from(c.addr())) && c.prefix_len() == leg.address.prefix_len());
    r.ok = in_range && *gw == leg.address.addr().to_string() && *mtu == bridge_mtu;
    r.detail = format!("{addr} via {gw}, mtu {mtu}");
    if !r.ok {
        r.detail.push_str(&format!(
            " (expected an address in the range of {}, gateway {}, mtu {bridge_mtu})",
            leg.bridge,
            leg.address.addr()
        ));
    }
    r
}

/// Fragments a node's network namespace created: IPv4's FragCreates plus
/// IPv6's Ip6FragCreates (VXLAN over an IPv6 underlay).
fn frag_creates(node: &Node) -> Result<u64> {
    let v6 = vxrouter::netns::within(Some(&node.net), || std::fs::read_to_string("/proc/thread-self/net/snmp6"))?
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Ip6FragCreates").and_then(|v| v.trim().parse::<u64>().ok()))
        .unwrap_or(0);
    Ok(frag_creates4(node)? + v6)
}

/// The IP FragCreates counter of a node's network namespace.
fn frag_creates4(node: &Node) -> Result<u64> {
    let text = vxrouter::netns::within(Some(&node.net), || std::fs::read_to_string("/proc/thread-self/net/snmp"))?
        .with_context(|| format!("read IP counters of {}", node.name))?;
    let mut ip = text.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else { return Ok(0) };
    Ok(names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "FragCreates")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0))
}

/// Prints the matrix: rows are VMs, columns the other VMs and the internet.
pub fn print_matrix(lab: &Lab, results: &[CheckResult]) {
    let mut cells: BTreeMap<(String, String), Vec<&CheckResult>> = BTreeMap::new();
    for r in results {
        cells.entry((r.from.clone(), r.to.clone())).or_default().push(r);
    }
    let names: Vec<&str> = lab.vms.iter().map(|v| v.name.as_str()).collect();
    let cell = |from: &str, to: &str| -> String {
        match cells.get(&(from.to_string(), to.to_string())) {
            None => "·".into(),
            Some(rs) => {
                let ok = rs.iter().all(|r| r.ok);
                let what: Vec<&str> = rs
                    .iter()
                    .map(|r| match r.check {
                        "l2-isolated" => "isolated",
                        "egress-source" => "snat",
                        "inbound-blocked" => "blocked",
                        "routed-blocked" => "no-route",
                        "pmtu" => "mtu",
                        "egress6-source" => "snat6",
                        "inbound6-blocked" => "blocked6",
                        "pmtu6" => "mtu6",
                        other => other,
                    })
                    .collect();
                format!("{} {}", if ok { "✓" } else { "✗" }, what.join("+"))
            }
        }
    };
    let mut all_cells = vec![cell("internet", "")];
    for from in &names {
        all_cells.push(cell(from, "internet"));
        all_cells.push(cell("internet", from));
        all_cells.extend(names.iter().map(|to| cell(from, to)));
    }
    let widest = all_cells.iter().map(|c| c.chars().count()).chain(names.iter().map(|n| n.chars().count())).max().unwrap_or(4);
    let width = widest.max(13) + 2;
    println!();
    println!("lab {}: {} host(s), {} VM(s)   (row → column)", lab.name, lab.hosts.len(), lab.vms.len());
    print!("{:w$}", "", w = width);
    for n in &names {
        print!("{:w$}", n, w = width);
    }
    println!("{:w$}{:w$}", "internet", "from internet", w = width);
    for from in &names {
        print!("{:w$}", from, w = width);
        for to in &names {
            let c = if from == to { "·".to_string() } else { cell(from, to) };
            print!("{:w$}", c, w = width);
        }
        println!("{:w$}{:w$}", cell(from, "internet"), cell("internet", from), w = width);
    }
    let failed: Vec<&CheckResult> = results.iter().filter(|r| !r.ok).collect();
    let egress: Vec<String> = results
        .iter()
        .filter(|r| (r.check == "egress-source" || r.check == "egress6-source") && r.ok)
        .map(|r| format!("{} → {}", r.from, r.detail))
        .collect();
    let slaac: Vec<String> = results
        .iter()
        .filter(|r| r.check == "slaac")
        .map(|r| format!("{} {} {}", r.from, if r.ok { "✓" } else { "✗" }, r.detail.split(',').next().unwrap_or("")))
        .collect();
    if !slaac.is_empty() {
        println!("\nIPv6 addresses from router advertisements: {}", slaac.join(", "));
    }
    let frag: Vec<String> = results
        .iter()
        .filter(|r| r.check == "unfragmented")
        .map(|r| format!("{} {}", r.from, if r.ok { "✓" } else { "✗" }))
        .collect();
    let leases: Vec<String> = results
        .iter()
        .filter(|r| r.check == "dhcp")
        .map(|r| format!("{} {} {}", r.from, if r.ok { "✓" } else { "✗" }, r.detail.split(" (").next().unwrap_or("")))
        .collect();
    if !leases.is_empty() {
        println!("\nDHCP leases from the router: {}", leases.join(", "));
    }
    let family: Vec<String> = results
        .iter()
        .filter(|r| r.check == "underlay-family")
        .map(|r| format!("{} {} {}", r.from, if r.ok { "✓" } else { "✗" }, r.detail))
        .collect();
    if !family.is_empty() {
        println!("\nVXLAN on the underlay switch while the checks ran: {}", family.join("; "));
    }
    if !frag.is_empty() {
        println!("\nunderlay carried VXLAN unfragmented: {}", frag.join(", "));
    }
    if !egress.is_empty() {
        println!("\nsource address seen by the internet server: {}", egress.join(", "));
    }
    let public_side: Vec<String> = results
        .iter()
        .filter(|r| r.check == "public-side")
        .map(|r| format!("{} {}", r.to, if r.ok { "✓" } else { "✗" }))
        .collect();
    if !public_side.is_empty() {
        println!(
            "\nrouter seen from the public segment (private gateways silent to ARP, ping and IPv6 ping; no IPv6 on a router without a public address6): {}",
            public_side.join(", ")
        );
    }
    let ha: Vec<&CheckResult> = results.iter().filter(|r| r.to == "ha").collect();
    if !ha.is_empty() {
        println!("\nrouter high availability (probes every 10 ms from {}):", ha[0].from);
        for r in ha {
            println!("  {} {:<9} {}", if r.ok { "✓" } else { "✗" }, r.check, r.detail);
        }
    }
    if failed.is_empty() {
        println!("\nall {} checks passed", results.len());
    } else {
        println!("\n{} of {} checks failed:", failed.len(), results.len());
        for r in failed {
            let to = if r.to.is_empty() { String::new() } else { format!(" → {}", r.to) };
            println!("  ✗ {} {}{}: {}", r.check, r.from, to, r.detail);
        }
    }
}

/// The EUI-64 IPv6 link-local address of a MAC ("02:ee:…" → "fe80::ee:…").
fn link_local_of(mac: &str) -> Option<String> {
    let b: Vec<u8> = mac.split(':').map(|x| u8::from_str_radix(x, 16).ok()).collect::<Option<_>>()?;
    let [a, b1, c, d, e, f] = <[u8; 6]>::try_from(b).ok()?;
    let g = [
        u16::from_be_bytes([a ^ 2, b1]),
        u16::from_be_bytes([c, 0xff]),
        u16::from_be_bytes([0xfe, d]),
        u16::from_be_bytes([e, f]),
    ];
    Some(format!("fe80::{:x}:{:x}:{:x}:{:x}", g[0], g[1], g[2], g[3]))
}

#[cfg(test)]
mod link_local_tests {
    #[test]
    fn eui64_link_local() {
        assert_eq!(super::link_local_of("3e:b6:81:e0:fd:7e").as_deref(), Some("fe80::3cb6:81ff:fee0:fd7e"));
        assert_eq!(super::link_local_of("02:18:68:f4:c9:17").as_deref(), Some("fe80::18:68ff:fef4:c917"));
        assert_eq!(super::link_local_of("nonsense"), None);
    }
}
