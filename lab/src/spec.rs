//! The lab file: hosts (each with its real profile), VMs, the simulated
//! underlay switch and the internet. Parsed and validated like profiles.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use vxrouter::profile::error::{Locator, ProfileErrors};
use vxrouter::profile::names::check_plain_name;
use vxrouter::profile::{Ipv4Cidr, Profile, cidr};

type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLab {
    lab: S<RawLabName>,
    underlay: S<RawUnderlay>,
    internet: S<RawInternet>,
    #[serde(default)]
    host: Vec<S<RawHost>>,
    #[serde(default)]
    vm: Vec<S<RawVm>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLabName {
    name: S<String>,
    /// Router HA: failover + return rounds (default 5; 0: none).
    ha_rounds: Option<S<i64>>,
    /// Router HA: seconds of the idle cell (default 60; 0: no idle cell).
    ha_idle_seconds: Option<S<i64>>,
    /// Router HA: seconds the partition cell keeps the routers apart
    /// (default 3; 0: no partition cell).
    ha_partition_seconds: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUnderlay {
    subnet: S<String>,
    /// false: the simulated switch drops multicast (clouds without it).
    multicast: Option<S<bool>>,
    /// A routed underlay: these subnets of `subnet`, each its own switch,
    /// joined by an underlay router (multicast does not cross it).
    routed: Option<S<Vec<S<String>>>>,
    /// The underlay's IPv6 prefix: hosts with `underlay6` get an address
    /// in it on their underlay NIC (VXLAN over IPv6).
    subnet6: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInternet {
    gateway: S<String>,
    server: S<String>,
    /// The internet's IPv6 address on the public segment, with its prefix
    /// (the routers' `gateway6`).
    gateway6: Option<S<String>>,
    /// An IPv6 internet server, reached through the internet node.
    server6: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: S<String>,
    profile: S<String>,
    underlay: S<String>,
    /// The host's IPv6 address on the underlay (inside `underlay.subnet6`).
    underlay6: Option<S<String>>,
    uplink: Option<S<bool>>,
    /// Run a real libvirtd in this host; its QEMU guests are started
    /// through it, on networks defined from `vxrouter render libvirt`.
    libvirt: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: S<String>,
    host: S<String>,
    bridge: S<String>,
    address: Option<S<String>>,
    gateway: Option<S<String>>,
    /// Get address, gateway and MTU by DHCP (busybox udhcpc) instead.
    dhcp: Option<S<bool>>,
    mtu: Option<S<i64>>,
    /// "namespace" (default) or "qemu" (a real guest under QEMU).
    kind: Option<S<String>>,
}

#[derive(Debug, Clone)]
pub struct Lab {
    pub file: PathBuf,
    pub name: String,
    pub underlay: Ipv4Cidr,
    pub multicast: bool,
    /// Routed underlay subnets (empty: one switched underlay).
    pub routed: Vec<Ipv4Cidr>,
    /// Upstream router address on the public segment, with its prefix.
    pub gateway: Ipv4Cidr,
    pub server: Ipv4Addr,
    /// The underlay's IPv6 prefix (`underlay.subnet6`).
    pub underlay6: Option<Ipv6Net>,
    /// The internet's IPv6 address on the public segment, with its prefix.
    pub gateway6: Option<Ipv6Net>,
    /// The IPv6 internet server.
    pub server6: Option<Ipv6Addr>,
    pub hosts: Vec<LabHost>,
    pub vms: Vec<LabVm>,
    /// Router HA cells: how many failover + return rounds.
    pub ha_rounds: u32,
    /// Router HA cells: how long the idle cell watches (0: not at all).
    pub ha_idle_seconds: u32,
    /// Router HA cells: how long the partition cell cuts (0: not at all).
    pub ha_partition_seconds: u32,
}

/// The underlay router's address in a routed subnet: its first host.
pub fn router_address(subnet: Ipv4Cidr) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(subnet.network()) + 1)
}

impl Lab {
    /// The switch a host's underlay cable goes to, its prefix length, and
    /// its underlay router (routed underlays only).
    pub fn underlay_of(&self, a: Ipv4Addr) -> (String, u8, Option<Ipv4Addr>) {
        match self.routed.iter().position(|r| r.contains(&a)) {
            Some(i) => (format!("underlay{i}"), self.routed[i].prefix_len(), Some(router_address(self.routed[i]))),
            None => ("underlay".to_string(), self.underlay.prefix_len(), None),
        }
    }
}

#[derive(Debug, Clone)]
pub struct LabHost {
    pub name: String,
    /// Absolute path of the host's profile.
    pub profile_path: PathBuf,
    pub profile: Profile,
    pub underlay: Ipv4Addr,
    /// The host's IPv6 underlay address (`underlay6`).
    pub underlay6: Option<Ipv6Addr>,
    pub uplink: bool,
    pub libvirt: bool,
}

impl LabHost {
    /// The address this host sends VXLAN from (what other hosts' unicast
    /// peers must list).
    pub fn local_address(&self) -> IpAddr {
        self.profile.underlay.as_ref().and_then(|u| u.local).unwrap_or(IpAddr::V4(self.underlay))
    }
}

/// What a lab VM is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmKind {
    /// A network namespace whose eth0 is a veth end (the default).
    Namespace,
    /// A real guest: a Linux kernel under QEMU with a virtio-net NIC on a
    /// tap in the segment bridge (see guest.rs).
    Qemu,
}

#[derive(Debug, Clone)]
pub struct LabVm {
    pub name: String,
    pub host: String,
    pub bridge: String,
    /// For a DHCP VM: what it leased (filled in from the lab's state).
    pub address: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub mtu: Option<u32>,
    pub dhcp: bool,
    pub kind: VmKind,
}

impl Lab {
    /// Public addresses of every router in the lab (the egress addresses
    /// the internet may see).
    /// Two HA router hosts share one public address: it is listed once.
    pub fn router_addresses(&self) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        for a in self.hosts.iter().filter_map(|h| h.profile.router.as_ref()).map(|r| r.public.leg.address.addr()) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// The router leg serving a segment (bridge) over IPv6, with its
    /// router: the segment's VMs autoconfigure from its advertisements.
    pub fn leg6(&self, bridge: &str) -> Option<(&vxrouter::profile::Router, &vxrouter::profile::Leg)> {
        self.hosts
            .iter()
            .filter_map(|h| h.profile.router.as_ref())
            .find_map(|r| r.private.iter().find(|l| l.bridge == bridge && l.address6.is_some()).map(|l| (r, l)))
    }

    pub fn load(path: &Path) -> Result<Lab, ProfileErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProfileErrors(vec![Locator::new("").error(&file, 0..0, "", format!("cannot read lab file: {e}"))]))?;
        let loc = Locator::new(&text);
        let raw: RawLab = toml::from_str(&text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            ProfileErrors(vec![loc.error(&file, span, "", e.message().trim())])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::fs::canonicalize(if base.as_os_str().is_empty() { Path::new(".") } else { &base }).unwrap_or(base);
        let mut errors = Vec::new();
        let mut err = |span: std::ops::Range<usize>, key: &str, reason: String| errors.push(loc.error(&file, span, key, reason));

        let name = raw.lab.get_ref().name.get_ref().clone();
        if let Err(r) = check_plain_name("lab name", &name, 32) {
            err(raw.lab.get_ref().name.span(), "lab.name", r);
        }
        let mut bounded = |v: &Option<S<i64>>, key: &str, max: i64, default: u32| match v {
            Some(n) if !(0..=max).contains(n.get_ref()) => {
                err(n.span(), key, format!("{} is out of range 0-{max}", n.get_ref()));
                default
            }
            Some(n) => *n.get_ref() as u32,
            None => default,
        };
        let ha_rounds = bounded(&raw.lab.get_ref().ha_rounds, "lab.ha_rounds", 100, 5);
        let ha_idle_seconds = bounded(&raw.lab.get_ref().ha_idle_seconds, "lab.ha_idle_seconds", 3600, 60);
        let ha_partition_seconds = bounded(&raw.lab.get_ref().ha_partition_seconds, "lab.ha_partition_seconds", 600, 3);
        let u = raw.underlay.get_ref();
        let underlay = cidr::parse(u.subnet.get_ref()).map_err(|r| err(u.subnet.span(), "underlay.subnet", r)).ok();
        let mut routed = Vec::new();
        for (i, r) in u.routed.as_ref().map(|r| r.get_ref().as_slice()).unwrap_or_default().iter().enumerate() {
            match cidr::parse(r.get_ref()) {
                Ok(c) if underlay.is_some_and(|u| !u.contains(&c.addr())) => {
                    err(r.span(), &format!("underlay.routed[{i}]"), format!("{c} is not inside underlay.subnet"))
                }
                Ok(c) if c.prefix_len() > 30 => err(r.span(), &format!("underlay.routed[{i}]"), format!("{c} is too small")),
                Ok(c) => routed.push(c.trunc()),
                Err(reason) => err(r.span(), &format!("underlay.routed[{i}]"), reason),
            }
        }
        let i = raw.internet.get_ref();
        let gateway = cidr::parse(i.gateway.get_ref()).map_err(|r| err(i.gateway.span(), "internet.gateway", r)).ok();
        let v6 = |v: &Option<S<String>>, key: &str, err: &mut dyn FnMut(std::ops::Range<usize>, &str, String)| {
            v.as_ref().and_then(|s| {
                s.get_ref()
                    .parse::<Ipv6Addr>()
                    .map_err(|_| err(s.span(), key, format!("{:?} is not an IPv6 address", s.get_ref())))
                    .ok()
            })
        };
        let net6 = |v: &Option<S<String>>, key: &str, err: &mut dyn FnMut(std::ops::Range<usize>, &str, String)| {
            v.as_ref().and_then(|s| {
                s.get_ref()
                    .parse::<Ipv6Net>()
                    .map_err(|_| err(s.span(), key, format!("{:?} is not an IPv6 address with a prefix length", s.get_ref())))
                    .ok()
            })
        };
        let underlay6 = net6(&u.subnet6, "underlay.subnet6", &mut err);
        let gateway6 = net6(&i.gateway6, "internet.gateway6", &mut err);
        let server6 = v6(&i.server6, "internet.server6", &mut err);
        if let (Some(g), Some(s), Some(span)) = (gateway6, server6, i.server6.as_ref().map(|s| s.span()))
            && g.contains(&s)
        {
            err(
                span,
                "internet.server6",
                format!("{s} is on the public segment ({}); the server sits behind the internet node", g.trunc()),
            );
        }
        let server = i
            .server
            .get_ref()
            .parse::<Ipv4Addr>()
            .map_err(|_| err(i.server.span(), "internet.server", format!("{:?} is not an IPv4 address", i.server.get_ref())))
            .ok();

        let mut hosts = Vec::new();
        let mut names = BTreeSet::new();
        for (n, h) in raw.host.iter().enumerate() {
            let h = h.get_ref();
            let key = |f: &str| format!("host[{n}].{f}");
            let hname = h.name.get_ref().clone();
            if let Err(r) = check_plain_name("host name", &hname, 32) {
                err(h.name.span(), &key("name"), r);
            }
            if !names.insert(hname.clone()) {
                err(h.name.span(), &key("name"), format!("node name {hname:?} is used twice"));
            }
            let addr = h.underlay.get_ref().parse::<Ipv4Addr>();
            let addr = match addr {
                Ok(a) if underlay.is_some_and(|u| !u.contains(&a)) => {
                    err(h.underlay.span(), &key("underlay"), format!("{a} is not inside underlay.subnet"));
                    None
                }
                Ok(a) if !routed.is_empty() && !routed.iter().any(|r| r.contains(&a) && router_address(*r) != a) => {
                    err(
                        h.underlay.span(),
                        &key("underlay"),
                        format!("{a} is in no underlay.routed subnet (or is its router's first address)"),
                    );
                    None
                }
                Ok(a) => Some(a),
                Err(_) => {
                    err(h.underlay.span(), &key("underlay"), format!("{:?} is not an IPv4 address", h.underlay.get_ref()));
                    None
                }
            };
            let addr6 = v6(&h.underlay6, &key("underlay6"), &mut err);
            if let (Some(a), Some(span)) = (addr6, h.underlay6.as_ref().map(|s| s.span())) {
                match underlay6 {
                    Some(net) if !net.contains(&a) => err(span, &key("underlay6"), format!("{a} is not inside underlay.subnet6")),
                    Some(_) => {}
                    // An unreadable subnet6 is reported at its own key.
                    None if u.subnet6.is_some() => {}
                    None => err(span, &key("underlay6"), "give the underlay an IPv6 prefix: [underlay] subnet6".into()),
                }
            }
            let profile_path = base.join(h.profile.get_ref());
            let profile = match Profile::load(&profile_path) {
                Ok(p) => Some(p),
                Err(e) => {
                    for pe in e.0 {
                        err(h.profile.span(), &key("profile"), pe.to_string());
                    }
                    None
                }
            };
            if let Some(p) = &profile {
                if p.host != hname {
                    err(h.name.span(), &key("name"), format!("its profile is for host {:?}", p.host));
                }
                let uplink = h.uplink.as_ref().is_some_and(|u| *u.get_ref());
                if p.router.is_some() && !uplink {
                    err(h.name.span(), &key("uplink"), "this host's profile has a [router]; give it `uplink = true`".into());
                }
                let local = p.underlay.as_ref().and_then(|u| u.local);
                // Without underlay6 the address is the user's to add (e.g.
                // `lab up --no-apply`, then `lab exec`).
                if let (Some(IpAddr::V6(l)), Some(a6)) = (local, addr6)
                    && a6 != l
                {
                    err(
                        h.profile.span(),
                        &key("profile"),
                        format!("the profile's underlay local address is {l}, not this host's underlay6 {a6}"),
                    );
                }
                if let (Some(r), Some(g6)) = (&p.router, gateway6)
                    && let Some(want) = r.public.gateway6
                    && want != g6.addr()
                {
                    err(
                        h.profile.span(),
                        &key("profile"),
                        format!(
                            "the profile's router.public.gateway6 is {want}, but the lab's internet.gateway6 is {}",
                            g6.addr()
                        ),
                    );
                }
                if p.underlay.is_none() {
                    err(
                        h.profile.span(),
                        &key("profile"),
                        "the profile has no [underlay] device to connect to the lab switch".into(),
                    );
                }
            }
            if let (Some(a), Some(profile)) = (addr, profile) {
                hosts.push(LabHost {
                    name: hname,
                    profile_path: std::fs::canonicalize(&profile_path).unwrap_or(profile_path),
                    profile,
                    underlay: a,
                    underlay6: addr6,
                    uplink: h.uplink.as_ref().is_some_and(|u| *u.get_ref()),
                    libvirt: h.libvirt.as_ref().is_some_and(|l| *l.get_ref()),
                });
            }
        }

        let mut vms = Vec::new();
        for (n, v) in raw.vm.iter().enumerate() {
            let v = v.get_ref();
            let key = |f: &str| format!("vm[{n}].{f}");
            let vname = v.name.get_ref().clone();
            if let Err(r) = check_plain_name("VM name", &vname, 32) {
                err(v.name.span(), &key("name"), r);
            }
            if !names.insert(vname.clone()) {
                err(v.name.span(), &key("name"), format!("node name {vname:?} is used twice"));
            }
            if !raw.host.iter().any(|h| h.get_ref().name.get_ref() == v.host.get_ref()) {
                err(v.host.span(), &key("host"), format!("no [[host]] is named {:?}", v.host.get_ref()));
            }
            let dhcp = v.dhcp.as_ref().is_some_and(|d| *d.get_ref());
            let (address, gateway) = match (&v.address, &v.gateway, dhcp) {
                (Some(a), Some(g), false) => (
                    cidr::parse(a.get_ref()).map_err(|r| err(a.span(), &key("address"), r)).ok(),
                    g.get_ref()
                        .parse::<Ipv4Addr>()
                        .map_err(|_| err(g.span(), &key("gateway"), format!("{:?} is not an IPv4 address", g.get_ref())))
                        .ok(),
                ),
                (None, None, true) => (Some(cidr::any()), Some(Ipv4Addr::UNSPECIFIED)),
                _ => {
                    err(v.name.span(), &key("address"), "give a VM either `address` and `gateway`, or `dhcp = true`".into());
                    (None, None)
                }
            };
            if let (Some(a), Some(g), Some(gs)) = (address, gateway, &v.gateway)
                && !a.contains(&g)
            {
                err(gs.span(), &key("gateway"), format!("{g} is not inside {}", a.trunc()));
            }
            let mtu = match &v.mtu {
                Some(m) if !(68..=65535).contains(m.get_ref()) => {
                    err(m.span(), &key("mtu"), format!("MTU {} is out of range 68-65535", m.get_ref()));
                    None
                }
                Some(m) => Some(*m.get_ref() as u32),
                None => None,
            };
            let kind = match v.kind.as_ref().map(|k| (k.get_ref().as_str(), k.span())) {
                None | Some(("namespace", _)) => VmKind::Namespace,
                Some(("qemu", _)) => VmKind::Qemu,
                Some((other, span)) => {
                    err(span, &key("kind"), format!("unknown VM kind {other:?}: \"namespace\" or \"qemu\""));
                    VmKind::Namespace
                }
            };
            if let (VmKind::Qemu, true, Some(m)) = (kind, dhcp, &v.mtu) {
                err(m.span(), &key("mtu"), "a DHCP guest takes its MTU from the lease (option 26); drop `mtu`".into());
            }
            if let (Some(address), Some(gateway)) = (address, gateway) {
                vms.push(LabVm {
                    name: vname,
                    host: v.host.get_ref().clone(),
                    bridge: v.bridge.get_ref().clone(),
                    address,
                    gateway,
                    mtu,
                    dhcp,
                    kind,
                });
            }
        }
        for reserved in ["fabric", "internet", "server", "attacker"] {
            if names.contains(reserved) {
                err(0..0, "", format!("{reserved:?} is a lab node name of its own; rename that host or VM"));
            }
        }
        // Hosts that disagree about a segment would build a deployment that
        // cannot work (and a matrix that fails for the wrong reason): say so
        // once per pair of hosts, naming both profiles, before anything is built.
        for (i, a) in hosts.iter().enumerate() {
            for b in &hosts[i + 1..] {
                if let Some(reason) = segment_disagreement(a, b) {
                    let span =
                        raw.host.iter().map(|h| h.get_ref()).find(|h| h.name.get_ref() == &b.name).map(|h| h.profile.span());
                    let n = raw.host.iter().position(|h| h.get_ref().name.get_ref() == &b.name).unwrap_or(0);
                    err(span.unwrap_or(0..0), &format!("host[{n}].profile"), reason);
                }
            }
        }
        if !errors.is_empty() {
            return Err(ProfileErrors(errors));
        }
        Ok(Lab {
            file: std::fs::canonicalize(path).unwrap_or(path.to_path_buf()),
            name,
            underlay: underlay.unwrap_or(cidr::any()),
            multicast: u.multicast.as_ref().map(|m| *m.get_ref()).unwrap_or(true),
            routed,
            gateway: gateway.unwrap_or(cidr::any()),
            server: server.unwrap_or(Ipv4Addr::UNSPECIFIED),
            underlay6,
            gateway6,
            server6,
            hosts,
            vms,
            ha_rounds,
            ha_idle_seconds,
            ha_partition_seconds,
        })
    }
}

/// What two hosts' profiles say differently about the segments they share
/// (same bridge name — the lab's segment key — or same VNI), as one
/// sentence naming both files; None when they agree.
fn segment_disagreement(a: &LabHost, b: &LabHost) -> Option<String> {
    use vxrouter::profile::Flood;
    let mut diffs = Vec::new();
    for sa in &a.profile.segments {
        for sb in &b.profile.segments {
            if sa.bridge != sb.bridge && sa.vni != sb.vni {
                continue;
            }
            let mut d = Vec::new();
            if sa.bridge != sb.bridge {
                d.push(format!(
                    "VNI {} is bridge {} on {} but {} on {} (the lab keys segments by bridge name)",
                    sa.vni, sa.bridge, a.name, sb.bridge, b.name
                ));
            }
            if sa.vni != sb.vni {
                d.push(format!("VNI {} vs {}", sa.vni, sb.vni));
            }
            if sa.port != sb.port {
                d.push(format!("port {} vs {}", sa.port, sb.port));
            }
            match (&sa.flood, &sb.flood) {
                (Flood::Multicast(ga), Flood::Multicast(gb)) if ga != gb => d.push(format!("group {ga} vs {gb}")),
                (Flood::Multicast(g), Flood::Unicast(_)) => d.push(format!("multicast group {g} vs unicast peers")),
                (Flood::Unicast(_), Flood::Multicast(g)) => d.push(format!("unicast peers vs multicast group {g}")),
                (Flood::Evpn, Flood::Evpn) => {}
                (Flood::Evpn, _) | (_, Flood::Evpn) => d.push("evpn vs flood-and-learn".to_string()),
                (Flood::Unicast(pa), Flood::Unicast(pb)) => {
                    if !pa.contains(&b.local_address()) {
                        d.push(format!("{}'s peers lack {}'s underlay address {}", a.name, b.name, b.local_address()));
                    }
                    if !pb.contains(&a.local_address()) {
                        d.push(format!("{}'s peers lack {}'s underlay address {}", b.name, a.name, a.local_address()));
                    }
                }
                _ => {}
            }
            if !d.is_empty() {
                diffs.push(format!("segment {}: {}", sa.bridge, d.join(", ")));
            }
        }
    }
    if diffs.is_empty() {
        return None;
    }
    Some(format!(
        "the profiles of {} ({}) and {} ({}) disagree: {}",
        a.name,
        a.profile_path.display(),
        b.name,
        b.profile_path.display(),
        diffs.join("; ")
    ))
}
