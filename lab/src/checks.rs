//! The lab's connectivity matrix: every check is real traffic between lab
//! nodes, and every "must fail" check has a positive control, so a broken
//! lab cannot pass by accident.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

use crate::lab::{LabState, attacker_address};
use crate::nodes::{LabDir, Node};
use crate::spec::{Lab, LabVm};

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
}

/// Drops IPv4 multicast on the lab switch (a cloud underlay without it).
pub fn block_multicast(fabric: &Node) -> Result<()> {
    let rules = "table bridge vxrouter_lab {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n  ether type ip ip daddr 224.0.0.0/4 drop\n }\n}\n";
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

/// A background agent listener, killed when dropped.
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn exe() -> &'static str {
    crate::nodes::SELF_EXE
}

fn listen(node: &Node, addr: Ipv4Addr, port: u16) -> Result<Listener> {
    let mut child = node
        .command(exe())
        .args(["__agent", "listen", &format!("{addr}:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("start listener in {}", node.name))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        BufReader::new(out).read_line(&mut line)?;
    }
    let l = Listener(child);
    if line.trim() != "listening" {
        return Err(anyhow!("listener in {} on {addr}:{port} did not start", node.name));
    }
    Ok(l)
}

fn run(mut cmd: Command) -> (bool, String) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            let text = if o.status.success() { &o.stdout } else { &o.stderr };
            (o.status.success(), String::from_utf8_lossy(text).trim().to_string())
        }
        Err(e) => (false, e.to_string()),
    }
}

fn ping(node: &Node, to: Ipv4Addr) -> (bool, String) {
    for _ in 0..3 {
        let mut cmd = node.command("ping");
        cmd.args(["-c", "1", "-W", "1", "-q", &to.to_string()]);
        if run(cmd).0 {
            return (true, "ping".into());
        }
    }
    (false, format!("no reply to ping {to}"))
}

/// Full-size packets cross VXLAN unfragmented (`ping -M do` at the segment
/// MTU, the bridge's on the sending host, works) and one byte more does not
/// get through: refused by the VM's own interface or dropped on the way,
/// never fragmented.
fn path_mtu(node: &Node, to: Ipv4Addr, mtu: u32) -> (bool, String) {
    if mtu < 68 {
        return (false, format!("cannot read the segment MTU ({mtu})"));
    }
    let ping = |size: u32| {
        let mut cmd = node.command("ping");
        cmd.args(["-c", "1", "-W", "2", "-q", "-M", "do", "-s", &size.to_string(), &to.to_string()]);
        run(cmd).0
    };
    let full = mtu.saturating_sub(28);
    if !(ping(full) || ping(full)) {
        return (false, format!("{mtu}-byte packets with DF set do not get across"));
    }
    if ping(full + 1) {
        return (false, format!("{}-byte packets got through an MTU of {mtu}", mtu + 1));
    }
    (true, format!("{mtu} bytes unfragmented, {} refused", mtu + 1))
}

fn arping(node: &Node, to: Ipv4Addr) -> bool {
    let mut cmd = node.command("arping");
    cmd.args(["-f", "-c", "2", "-w", "2", "-I", "eth0", &to.to_string()]);
    run(cmd).0
}

/// Sends `bytes` to an agent listener; Ok((peer seen, bytes received)).
fn send(node: &Node, to: Ipv4Addr, port: u16, bytes: u64, timeout_s: u32) -> Result<(String, u64), String> {
    let mut cmd = node.command(exe());
    cmd.args(["__agent", "send", &format!("{to}:{port}"), "--bytes", &bytes.to_string(), "--timeout", &timeout_s.to_string()]);
    let (ok, out) = run(cmd);
    if !ok {
        return Err(out.lines().last().unwrap_or("failed").trim_start_matches("error: ").to_string());
    }
    let mut peer = String::new();
    let mut got = 0;
    for kv in out.split_whitespace() {
        if let Some(p) = kv.strip_prefix("peer=") {
            peer = p.to_string();
        } else if let Some(b) = kv.strip_prefix("bytes=") {
            got = b.parse().unwrap_or(0);
        }
    }
    Ok((peer, got))
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

/// Runs closures on a few threads at once, keeping their order.
fn parallel<T: Send>(jobs: Vec<Box<dyn FnOnce() -> T + Send + '_>>) -> Vec<T> {
    let mut out: Vec<Option<T>> = (0..jobs.len()).map(|_| None).collect();
    let mut jobs: Vec<(usize, Box<dyn FnOnce() -> T + Send + '_>)> = jobs.into_iter().enumerate().collect();
    while !jobs.is_empty() {
        let batch: Vec<_> = jobs.drain(..jobs.len().min(24)).collect();
        let results: Vec<(usize, T)> = std::thread::scope(|s| {
            let handles: Vec<_> = batch.into_iter().map(|(i, f)| s.spawn(move || (i, f()))).collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        for (i, r) in results {
            out[i] = Some(r);
        }
    }
    out.into_iter().flatten().collect()
}

pub fn run_checks(lab: &Lab) -> Result<Vec<CheckResult>> {
    let dir = LabDir::open(&lab.name).ok_or_else(|| anyhow!("lab {} is not up (run `vxrouter lab up` first)", lab.name))?;
    let state = LabState::load(&dir);
    let mut results = Vec::new();
    let mut fail = |check: &'static str, from: &str, to: &str, detail: String| {
        results.push(CheckResult { check, from: from.into(), to: to.into(), ok: false, detail })
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
    let mut vms: Vec<(&LabVm, Node)> = Vec::new();
    for vm in &effective {
        match state.vm(&vm.name) {
            Some(s) if s.ok => {
                if let Some(lease) = &s.lease {
                    dhcp_cells.push(dhcp_check(lab, vm, lease, mtu_of(vm)));
                }
                vms.push((vm, dir.vm(&vm.name, &vm.host)?))
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
            });
        }
    }

    let server = dir.node("server")?;
    let attacker = dir.node("attacker")?;
    let _server_l = listen(&server, lab.server, SERVER_PORT)?;
    let mut vm_listeners = Vec::new();
    for (vm, node) in &vms {
        vm_listeners.push(listen(node, vm.address.addr(), VM_PORT)?);
    }
    // The attacker routes the private subnets through each router's public
    // address, as anyone on the public segment can.
    for h in &lab.hosts {
        if let Some(r) = &h.profile.router {
            for leg in &r.private {
                let dst = leg.address.trunc();
                crate::lab::route(&attacker, dst, r.public.leg.address.addr())?;
            }
        }
    }

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

    let me = attacker_address(lab).addr().to_string();
    let mut jobs: Vec<Box<dyn FnOnce() -> Vec<CheckResult> + Send + '_>> = Vec::new();
    for (a, an) in &vms {
        // Control for the isolation checks: ARP works on the VM's own segment.
        let needs_control = vms.iter().any(|(b, _)| b.bridge != a.bridge);
        let gw_control = needs_control
            && (arping(an, a.gateway)
                || vms.iter().any(|(b, _)| b.bridge == a.bridge && b.name != a.name && arping(an, b.address.addr())));
        for (b, _) in &vms {
            if a.name == b.name {
                continue;
            }
            let same_segment = a.bridge == b.bridge;
            jobs.push(Box::new(move || {
                let mut out = Vec::new();
                let mut r = |check, ok, detail: String| {
                    out.push(CheckResult { check, from: a.name.clone(), to: b.name.clone(), ok, detail })
                };
                if same_segment {
                    let (ok, d) = ping(an, b.address.addr());
                    r("ping", ok, d);
                    if a.host != b.host && a.name < b.name {
                        match send(an, b.address.addr(), VM_PORT, BULK_BYTES, 3) {
                            Ok((_, got)) if got == BULK_BYTES => r("bulk", true, human(got)),
                            Ok((_, got)) => r("bulk", false, format!("{} of {} arrived", human(got), human(BULK_BYTES))),
                            Err(e) => r("bulk", false, e),
                        }
                        let (ok, d) = path_mtu(an, b.address.addr(), mtu_of(a));
                        r("pmtu", ok, d);
                    }
                } else {
                    if !gw_control {
                        r(
                            "l2-isolated",
                            false,
                            format!("control failed: {} gets no ARP reply on its own segment either", a.name),
                        );
                    } else if arping(an, b.address.addr()) {
                        r("l2-isolated", false, format!("{} answered ARP from {}: the segments share L2", b.name, a.name));
                    } else {
                        r("l2-isolated", true, "isolated".into());
                    }
                    // Routed between segments of one router: only when the
                    // profile says so.
                    if let Some(allowed) = shared_router(lab, a, b).map(|r| r.route_between_segments) {
                        match (allowed, send(an, b.address.addr(), VM_PORT, 16, 2)) {
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
                out.push(CheckResult { check, from: a.name.clone(), to: "internet".into(), ok, detail })
            };
            match send(an, server_addr, SERVER_PORT, 64, 3) {
                Ok((peer, _)) => {
                    let ok = peer.parse::<Ipv4Addr>().is_ok_and(|p| expect.contains(&p));
                    let want = expect.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" or ");
                    r("egress-source", ok, if ok { peer } else { format!("the server saw {peer}, expected {want}") });
                }
                Err(e) => r("egress-source", false, e),
            }
            match send(an, server_addr, SERVER_PORT, BULK_BYTES, 3) {
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
                vec![CheckResult { check: "inbound-blocked", from: "internet".into(), to: a.name.clone(), ok, detail }]
            };
            // Positive control: the listener answers from inside the segment.
            if let Err(e) = send(peer, a.address.addr(), VM_PORT, 16, 3) {
                return r(false, format!("control failed: {}'s listener unreachable from its own segment: {e}", a.name));
            }
            match send(attacker, a.address.addr(), VM_PORT, 16, 2) {
                Ok((peer, _)) => r(false, format!("a new connection from the internet reached {} (seen from {peer})", a.name)),
                Err(_) => r(true, "blocked".into()),
            }
        }));
    }
    // Port forwards: reachable from the internet at the public address, and
    // the connection arrives with the client's own address (DNAT only).
    let mut forward_listeners = Vec::new();
    for h in &lab.hosts {
        let Some(r) = &h.profile.router else { continue };
        for f in r.forwards.iter().filter(|f| f.proto == vxrouter::profile::Proto::Tcp) {
            let target = vms.iter().find(|(v, _)| v.address.addr() == f.to);
            let Some((vm, node)) = target else { continue };
            if f.to_port != VM_PORT {
                forward_listeners.push(listen(node, vm.address.addr(), f.to_port)?);
            }
            let public = r.public.leg.address.addr();
            let (port, vm) = (f.port, &vm.name);
            let (attacker, me) = (&attacker, &me);
            jobs.push(Box::new(move || {
                let (ok, detail) = match send(attacker, public, port, 16, 3) {
                    Ok((peer, _)) if &peer == me => (true, format!("{public}:{port}")),
                    Ok((peer, _)) => (false, format!("arrived from {peer}, expected the client's {me}")),
                    Err(e) => (false, format!("{public}:{port}: {e}")),
                };
                vec![CheckResult { check: "forward", from: "internet".into(), to: vm.clone(), ok, detail }]
            }));
        }
    }
    for batch in parallel(jobs) {
        results.extend(batch);
    }
    drop(vm_listeners);
    drop(forward_listeners);
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
                    "{name} fragmented {n} packet(s) on the underlay: the segment MTU leaves no room for the 50-byte VXLAN header"
                )
            },
        });
    }
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
    let mut r = CheckResult { check: "dhcp", from: vm.name.clone(), to: vm.bridge.clone(), ok: false, detail: String::new() };
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

/// The IP FragCreates counter of a node's network namespace.
fn frag_creates(node: &Node) -> Result<u64> {
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
    let egress: Vec<String> =
        results.iter().filter(|r| r.check == "egress-source" && r.ok).map(|r| format!("{} → {}", r.from, r.detail)).collect();
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
    if !frag.is_empty() {
        println!("\nunderlay carried VXLAN unfragmented: {}", frag.join(", "));
    }
    if !egress.is_empty() {
        println!("\nsource address seen by the internet server: {}", egress.join(", "));
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
