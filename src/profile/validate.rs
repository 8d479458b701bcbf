//! Raw profile → validated [`Profile`], collecting every error with its
//! location. Pure: no file system, no kernel.

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv6Net};
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::cidr::{self, CidrExt, SubnetIndex};
use super::error::{Locator, ProfileError, ProfileErrors};
use super::names::{check_ifname, check_plain_name, default_leg_names, default_vxlan_name, shown};
use super::raw::*;
use super::{
    DEFAULT_VXLAN_PORT, Dhcp, Evpn, FirewallChoice, Flood, Forward, Ha, Ipv4Cidr, Leg, Nat, Nat6, Profile, Proto, Public, Router,
    Segment, Underlay, UplinkAddresses, default_ha_vni,
};

pub(super) fn parse(file: &str, bytes: &[u8]) -> Result<Profile, ProfileErrors> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let valid = &bytes[..e.valid_up_to()];
        // The prefix is valid UTF-8 by definition, so this cannot fail.
        let prefix = std::str::from_utf8(valid).unwrap_or_default();
        ProfileErrors(vec![Locator::new(prefix).error(file, prefix.len()..prefix.len(), "", "profile is not valid UTF-8 text")])
    })?;
    let loc = Locator::new(text);
    let raw: RawProfile = toml::from_str(text).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let key = key_at(text, &span);
        let reason = e.message().trim().to_string();
        ProfileErrors(vec![loc.error(file, span, &key, reason)])
    })?;
    let mut v = Validator { file, loc: &loc, errors: Vec::new() };
    let profile = v.profile(raw);
    if v.errors.is_empty() {
        Ok(Profile { text: text.to_string(), ..profile })
    } else {
        v.errors.sort_by_key(|e| (e.line, e.column));
        Err(ProfileErrors(v.errors))
    }
}

/// The dotted key path whose key or value contains `span`, found by walking
/// the document's own syntax tree, so serde's errors can name the key too.
/// (Table spans cover only their `[header]`, so every branch is searched.)
fn key_at(text: &str, span: &Range<usize>) -> String {
    fn within(r: &Range<usize>, at: usize) -> bool {
        r.start <= at && at < r.end.max(r.start + 1)
    }
    fn search(table: &DeTable<'_>, at: usize, prefix: &str) -> Option<String> {
        let mut header_hit = None;
        for (k, v) in table.iter() {
            let path = if prefix.is_empty() { k.get_ref().to_string() } else { format!("{prefix}.{}", k.get_ref()) };
            let found = match v.get_ref() {
                DeValue::Table(t) => search(t, at, &path),
                DeValue::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
                    let p = format!("{path}[{i}]");
                    match item.get_ref() {
                        DeValue::Table(t) => search(t, at, &p).or_else(|| within(&item.span(), at).then_some(p)),
                        _ => within(&item.span(), at).then_some(p),
                    }
                }),
                _ => None,
            };
            if found.is_some() {
                return found;
            }
            if within(&k.span(), at) || within(&v.span(), at) {
                header_hit = Some(path);
            }
        }
        header_hit
    }
    match DeTable::parse(text) {
        Ok(doc) => search(doc.get_ref(), span.start, "").unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A list for a message, cut after a few items: an error per item of a
/// long list must not each repeat the whole list.
fn listed(items: &[&str]) -> String {
    const MAX: usize = 6;
    if items.len() <= MAX { items.join(", ") } else { format!("{}, … {} more", items[..MAX].join(", "), items.len() - MAX) }
}

struct Validator<'a> {
    file: &'a str,
    loc: &'a Locator<'a>,
    errors: Vec<ProfileError>,
}

/// The longest DHCP lease accepted: one year. dnsmasq computes
/// `atoi(number) * unit` in C `int` (so "100000000d" overflows into some
/// other lease), and a DHCP lease time is 32-bit seconds with all ones
/// meaning "infinite"; a lease beyond a year is a typo or means "never
/// expires", which is written "infinite".
const MAX_LEASE_SECONDS: u64 = 365 * 86_400;

/// VRRP adverts: 0.1 s by default (failover in about a third of a second,
/// and tolerant of the jitter of a real underlay); 0.03 s at the fastest
/// (faster was not stable under CPU load here: docs/design.md).
const DEFAULT_ADVERT_CENTIS: u32 = 10;
const MIN_ADVERT_CENTIS: u32 = 3;

/// Why "lo" cannot name a link vxrouter creates in the host namespace.
const CREATED: &str = "the host already has it, and vxrouter only creates links of its own";

/// Where each link name was declared, to report duplicates at both places.
type NameTable = BTreeMap<String, (String, Range<usize>)>;

impl Validator<'_> {
    fn err(&mut self, span: Range<usize>, key: &str, reason: impl Into<String>) {
        let e = self.loc.error(self.file, span, key, reason);
        self.errors.push(e);
    }

    fn ifname(&mut self, key: &str, s: &S<String>) -> String {
        if let Err(reason) = check_ifname(s.get_ref()) {
            self.err(s.span(), key, reason);
        }
        s.get_ref().clone()
    }

    fn range<T: TryFrom<i64>>(&mut self, key: &str, s: &S<i64>, lo: i64, hi: i64, what: &str) -> Option<T> {
        let n = *s.get_ref();
        if n < lo || n > hi {
            self.err(s.span(), key, format!("{what} {n} is out of range {lo}-{hi}"));
            return None;
        }
        T::try_from(n).ok()
    }

    fn ipv4(&mut self, key: &str, s: &S<String>) -> Option<Ipv4Addr> {
        match s.get_ref().parse::<Ipv4Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(s.span(), key, format!("{:?} is not an IPv4 address", s.get_ref()));
                None
            }
        }
    }

    /// An IPv6 address with its prefix that a router interface can hold: not
    /// link-local (the kernel makes those), multicast, loopback, unspecified
    /// or IPv4-mapped, and not the prefix's subnet-router anycast address.
    fn cidr6(&mut self, key: &str, s: &S<String>) -> Option<Ipv6Net> {
        let Ok(c) = s.get_ref().parse::<Ipv6Net>() else {
            let reason = if s.get_ref().parse::<Ipv6Addr>().is_ok() {
                format!("{:?} has no prefix length (e.g. \"2001:db8:10::1/64\")", s.get_ref())
            } else {
                format!("{:?} is not an IPv6 address with a prefix length (e.g. \"2001:db8:10::1/64\")", s.get_ref())
            };
            self.err(s.span(), key, reason);
            return None;
        };
        let a = c.addr();
        let reason = if a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some() {
            Some(format!("{a} is not a unicast address a router interface can hold"))
        } else if a.segments()[0] & 0xffc0 == 0xfe80 {
            Some(format!(
                "{a} is link-local; the kernel gives every IPv6 link one of those, name a global or unique-local address"
            ))
        } else if c.prefix_len() == 0 {
            Some(format!("{c}: a /0 prefix leaves no room for a subnet"))
        } else if c.prefix_len() < 128 && a == c.network() {
            Some(format!("{a} is the subnet-router anycast address of {}; use a host address", c.trunc()))
        } else {
            None
        };
        if let Some(r) = reason {
            self.err(s.span(), key, r);
            return None;
        }
        Some(c)
    }

    fn ipv6(&mut self, key: &str, s: &S<String>) -> Option<Ipv6Addr> {
        match s.get_ref().parse::<Ipv6Addr>() {
            Ok(a) => Some(a),
            Err(_) => {
                self.err(s.span(), key, format!("{:?} is not an IPv6 address", s.get_ref()));
                None
            }
        }
    }

    fn cidr(&mut self, key: &str, s: &S<String>) -> Option<Ipv4Cidr> {
        match cidr::parse(s.get_ref()) {
            Ok(c) if !c.is_host_address() => {
                let which = if c.addr() == c.network() { "network" } else { "broadcast" };
                self.err(s.span(), key, format!("{c} is the {which} address of {}; use a host address", c.trunc()));
                None
            }
            Ok(c)
                if c.addr().is_loopback()
                    || c.addr().is_multicast()
                    || c.addr().is_broadcast()
                    || c.addr().octets()[0] == 0
                    || c.addr().octets()[0] >= 240 =>
            {
                self.err(s.span(), key, format!("{} is not a unicast address a router interface can hold", c.addr()));
                None
            }
            Ok(c) if c.prefix_len() == 0 => {
                self.err(s.span(), key, format!("{c}: a /0 prefix leaves no room for a subnet"));
                None
            }
            Ok(c) => Some(c),
            Err(reason) => {
                self.err(s.span(), key, reason);
                None
            }
        }
    }

    /// An address of the underlay: IPv6 when `underlay.local` is (`v6`),
    /// IPv4 otherwise — a VXLAN link has one family.
    fn underlay_ip(&mut self, key: &str, s: &S<String>, v6: bool) -> Option<IpAddr> {
        let Ok(a) = s.get_ref().parse::<IpAddr>() else {
            self.err(s.span(), key, format!("{:?} is not an IP address", s.get_ref()));
            return None;
        };
        if a.is_ipv6() != v6 {
            let reason = if v6 {
                format!(
                    "{a} is IPv4, but underlay.local is IPv6, so VXLAN runs over IPv6 on this host; use IPv6 underlay addresses"
                )
            } else {
                format!(
                    "{a} is IPv6, but the underlay is IPv4; VXLAN runs over IPv6 when underlay.local is an IPv6 address of this host"
                )
            };
            self.err(s.span(), key, reason);
            return None;
        }
        Some(a)
    }

    /// Unicast VXLAN peers: a non-empty list of distinct unicast addresses
    /// of the underlay's family. Duplicates are found with a set: lists of
    /// many thousands of peers must not make validation quadratic.
    fn peers(&mut self, key: &str, list: &S<Vec<S<String>>>, v6: bool) -> Vec<IpAddr> {
        if list.get_ref().is_empty() {
            // Refused rather than warned about: the VXLAN link would send
            // this host's broadcast and unknown traffic nowhere, so its VMs
            // silently reach no VM on any other host.
            self.err(
                list.span(),
                key,
                "an empty list floods to no other host, so this host's VMs would reach no VM elsewhere; list the \
                 underlay addresses of the hosts sharing the segment (this host's own may be included)",
            );
        }
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, p) in list.get_ref().iter().enumerate() {
            let k = format!("{key}[{i}]");
            let Some(a) = self.underlay_ip(&k, p, v6) else { continue };
            if let Some(reason) = not_a_host(a) {
                self.err(p.span(), &k, reason);
            } else if !seen.insert(a) {
                self.err(p.span(), &k, format!("{a} is listed twice"));
            } else {
                out.push(a);
            }
        }
        out
    }

    /// "lo" is the loopback device of every namespace: it carries no
    /// VXLAN, cannot be a bridge port, and is never a link vxrouter may
    /// create. `why` says which of those applies.
    fn not_loopback(&mut self, key: &str, s: &S<String>, why: &str) {
        if s.get_ref() == "lo" {
            self.err(s.span(), key, format!("\"lo\" is the loopback device; {why}"));
        }
    }

    /// A list of CIDR ranges of the underlay's family (network addresses
    /// allowed).
    fn ranges(&mut self, key: &str, list: &S<Vec<S<String>>>, v6: bool) -> Vec<IpNet> {
        if list.get_ref().is_empty() {
            self.err(
                list.span(),
                key,
                "an empty list would drop all VXLAN traffic; list the underlay's subnets or remove the key",
            );
        }
        let mut out = Vec::new();
        for (i, r) in list.get_ref().iter().enumerate() {
            let k = format!("{key}[{i}]");
            if v6 {
                match r.get_ref().parse::<IpNet>() {
                    Ok(IpNet::V6(c)) => out.push(IpNet::V6(c.trunc())),
                    Ok(IpNet::V4(c)) => self.err(
                        r.span(),
                        &k,
                        format!(
                            "{c} is IPv4, but underlay.local is IPv6, so VXLAN runs over IPv6 on this host; list IPv6 ranges"
                        ),
                    ),
                    Err(_) => self.err(r.span(), &k, format!("{:?} is not an IPv6 range (e.g. \"fd00::/64\")", r.get_ref())),
                }
                continue;
            }
            match cidr::parse(r.get_ref()) {
                Ok(c) => out.push(IpNet::V4(c.trunc())),
                Err(_) if r.get_ref().parse::<Ipv6Net>().is_ok() => self.err(
                    r.span(),
                    &k,
                    format!(
                        "{} is IPv6, but the underlay is IPv4; VXLAN runs over IPv6 when underlay.local is an IPv6 address",
                        r.get_ref()
                    ),
                ),
                Err(reason) => self.err(r.span(), &k, reason),
            }
        }
        out
    }

    /// Registers a link name; `how` says where a derived name came from.
    fn claim(&mut self, names: &mut NameTable, key: &str, name: &str, span: Range<usize>, how: Option<&str>) {
        if name.is_empty() {
            return;
        }
        if let Some((other_key, _)) = names.get(name) {
            let how = how.map(|h| format!(" ({h})")).unwrap_or_default();
            let reason = format!("name {name:?}{how} is already used by {other_key}");
            self.err(span, key, reason);
        } else {
            names.insert(name.to_string(), (key.to_string(), span));
        }
    }

    fn profile(&mut self, raw: RawProfile) -> Profile {
        let host = raw.host.get_ref();
        if let Err(reason) = check_plain_name("host name", host.name.get_ref(), 64) {
            self.err(host.name.span(), "host.name", reason);
        }

        let underlay = raw.underlay.as_ref().map(|u| {
            let u = u.get_ref();
            let device = self.ifname("underlay.device", &u.device);
            self.not_loopback(
                "underlay.device",
                &u.device,
                "VXLAN packets sent over it never leave this host; name the NIC that reaches the other hosts",
            );
            let local = u.local.as_ref().and_then(|l| match l.get_ref().parse::<IpAddr>() {
                Ok(a) => Some((a, l.span())),
                Err(_) => {
                    self.err(l.span(), "underlay.local", format!("{:?} is not an IP address", l.get_ref()));
                    None
                }
            });
            let local = local.and_then(|(l, span)| match not_a_host(l) {
                Some(reason) => {
                    self.err(span, "underlay.local", format!("{reason}; it cannot be a VXLAN source address"));
                    None
                }
                None => Some(l),
            });
            let v6 = local.is_some_and(|l| l.is_ipv6());
            let allow = u.allow.as_ref().map(|a| self.ranges("underlay.allow", a, v6));
            Underlay { device, local, allow }
        });

        // VXLAN over IPv6 (every segment) when underlay.local is IPv6 (read
        // from the text: a refused IPv6 local still means IPv6 is meant).
        let v6 = raw
            .underlay
            .as_ref()
            .and_then(|u| u.get_ref().local.as_ref())
            .is_some_and(|l| l.get_ref().parse::<IpAddr>().is_ok_and(|a| a.is_ipv6()));
        if !raw.segment.is_empty() && underlay.is_none() {
            let span = raw.segment[0].span();
            self.err(span, "underlay", "[underlay] is required when the profile has segments (which NIC carries VXLAN?)");
        }

        // Link names in the host namespace and in the router namespace.
        let mut host_names = NameTable::new();
        let mut ns_names = NameTable::new();
        if let Some(u) = raw.underlay.as_ref() {
            let d = &u.get_ref().device;
            self.claim(&mut host_names, "underlay.device", d.get_ref(), d.span(), None);
        }

        let mut segments = Vec::new();
        let mut vnis: BTreeMap<(u32, u16), String> = BTreeMap::new();
        for (i, s) in raw.segment.iter().enumerate() {
            let key = |f: &str| format!("segment[{i}].{f}");
            let seg_span = s.span();
            let s = s.get_ref();
            let bridge = self.ifname(&key("bridge"), &s.bridge);
            self.not_loopback(&key("bridge"), &s.bridge, CREATED);
            self.claim(&mut host_names, &key("bridge"), &bridge, s.bridge.span(), None);
            let vni = self.range::<u32>(&key("vni"), &s.vni, 1, 16_777_215, "VNI").unwrap_or(0);
            let evpn = match &s.control {
                None => false,
                Some(c) if c.get_ref() == "evpn" => {
                    if raw.evpn.is_none() {
                        self.err(c.span(), &key("control"), "control = \"evpn\" needs an [evpn] table (asn, reflectors)");
                    }
                    for (name, given) in
                        [("group", s.group.as_ref().map(|g| g.span())), ("peers", s.peers.as_ref().map(|p| p.span()))]
                    {
                        if let Some(span) = given {
                            self.err(
                                span,
                                &key(name),
                                format!("an EVPN segment learns its flood list from BGP; remove `{name}`"),
                            );
                        }
                    }
                    true
                }
                Some(c) => {
                    self.err(
                        c.span(),
                        &key("control"),
                        format!(
                            "unknown control plane {:?}; the only one is \"evpn\" (without `control`, give `group` or `peers`)",
                            c.get_ref()
                        ),
                    );
                    true
                }
            };
            if let (Some(n), false) = (&s.neigh_suppress, evpn) {
                self.err(
                    n.span(),
                    &key("neigh_suppress"),
                    "only an EVPN segment (control = \"evpn\") suppresses neighbour discovery",
                );
            }
            let flood = match (&s.group, &s.peers) {
                _ if evpn => Flood::Evpn,
                (Some(g), Some(_)) => {
                    self.err(g.span(), &key("group"), "give either a multicast `group` or unicast `peers`, not both");
                    Flood::Multicast(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                }
                (None, Some(list)) => Flood::Unicast(self.peers(&key("peers"), list, v6)),
                (Some(g), None) if v6 => {
                    let group = self.underlay_ip(&key("group"), g, true);
                    if let Some(reason) = group.and_then(not_a_vxlan_group6) {
                        self.err(g.span(), &key("group"), reason);
                    }
                    Flood::Multicast(group.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)))
                }
                (Some(g), None) => {
                    let group = self.underlay_ip(&key("group"), g, false).and_then(|a| match a {
                        IpAddr::V4(a) => Some(a),
                        IpAddr::V6(_) => None,
                    });
                    if let Some(a) = group {
                        if !a.is_multicast() {
                            self.err(g.span(), &key("group"), format!("{a} is not an IPv4 multicast address (224.0.0.0/4)"));
                        } else if a.octets()[..3] == [224, 0, 0] {
                            self.err(
                                g.span(),
                                &key("group"),
                                format!("{a} is in 224.0.0.0/24, reserved for link-local protocols; use e.g. 239.x.x.x"),
                            );
                        }
                    }
                    Flood::Multicast(IpAddr::V4(group.unwrap_or(Ipv4Addr::UNSPECIFIED)))
                }
                (None, None) => {
                    self.err(seg_span.clone(), &key("group"), "a segment needs a multicast `group` or unicast `peers`");
                    Flood::Multicast(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
                }
            };
            let vxlan = match &s.vxlan {
                Some(n) => {
                    let name = self.ifname(&key("vxlan"), n);
                    self.not_loopback(&key("vxlan"), n, CREATED);
                    self.claim(&mut host_names, &key("vxlan"), &name, n.span(), None);
                    name
                }
                None => {
                    let name = default_vxlan_name(vni);
                    self.claim(
                        &mut host_names,
                        &key("vni"),
                        &name,
                        s.vni.span(),
                        Some("the default VXLAN name for this VNI; set `vxlan`"),
                    );
                    name
                }
            };
            let ageing = s.ageing.as_ref().and_then(|a| self.range(&key("ageing"), a, 0, 1_000_000, "ageing")).unwrap_or(300);
            let port = s.port.as_ref().and_then(|p| self.range(&key("port"), p, 1, 65535, "port")).unwrap_or(DEFAULT_VXLAN_PORT);
            let mtu = s.mtu.as_ref().and_then(|m| self.range(&key("mtu"), m, 68, 65535, "MTU"));
            let ttl = s.ttl.as_ref().and_then(|t| self.range(&key("ttl"), t, 1, 255, "TTL"));
            let stp = s.stp.as_ref().map(|b| *b.get_ref()).unwrap_or(false);
            let forward_delay =
                s.forward_delay.as_ref().and_then(|f| self.range(&key("forward_delay"), f, 2, 30, "forward delay (seconds)"));
            if vni != 0 {
                if let Some(other) = vnis.get(&(vni, port)) {
                    let reason = format!(
                        "VNI {vni} on port {port} is already used by {other}; the kernel allows one link per VNI and port"
                    );
                    self.err(s.vni.span(), &key("vni"), reason);
                } else {
                    vnis.insert((vni, port), format!("segment[{i}]"));
                }
            }
            let neigh_suppress = evpn && s.neigh_suppress.as_ref().is_none_or(|b| *b.get_ref());
            segments.push(Segment { bridge, vni, flood, vxlan, ageing, port, mtu, ttl, stp, forward_delay, neigh_suppress });
        }

        let mut router = raw.router.as_ref().map(|r| self.router(r, &segments, &mut host_names, &mut ns_names));
        if let (Some(r), Some(raw_ha)) = (router.as_mut(), raw.router.as_ref().and_then(|r| r.get_ref().ha.as_ref())) {
            r.ha = self.ha(raw_ha, underlay.as_ref(), &segments, &mut ns_names);
        }

        // A gateway address that moves between routers is announced with
        // gratuitous ARP, which a neighbour-suppressing port does not flood
        // (a ~20 s outage seen in the field): never suppress on a segment
        // an HA router serves.
        if let Some(r) = router.as_ref().filter(|r| r.ha.is_some()) {
            for (i, s) in segments.iter_mut().enumerate() {
                if s.flood == Flood::Evpn && r.private.iter().any(|l| l.bridge == s.bridge) {
                    if let Some(n) = raw.segment[i].get_ref().neigh_suppress.as_ref().filter(|n| *n.get_ref()) {
                        self.err(
                            n.span(),
                            &format!("segment[{i}].neigh_suppress"),
                            "this segment carries the HA router's gateway address, which moves with gratuitous ARP; a \
                             neighbour-suppressing port would not flood it to other hosts (set it false or remove it)",
                        );
                    }
                    s.neigh_suppress = false;
                }
            }
        }
        let evpn = raw.evpn.as_ref().and_then(|e| self.evpn(e, underlay.as_ref()));

        Profile {
            source: self.file.to_string(),
            host: host.name.get_ref().clone(),
            underlay,
            segments,
            router,
            evpn,
            text: String::new(),
        }
    }

    fn evpn(&mut self, raw: &S<RawEvpn>, underlay: Option<&Underlay>) -> Option<Evpn> {
        let e = raw.get_ref();
        if underlay.is_none() {
            self.err(raw.span(), "evpn", "[evpn] needs an [underlay]: BGP and VXLAN run over it");
        }
        let asn = self.range::<u32>("evpn.asn", &e.asn, 1, 4_294_967_295, "AS number");
        if asn == Some(23456) {
            self.err(e.asn.span(), "evpn.asn", "AS 23456 is AS_TRANS (RFC 6793), not an AS a router may use");
        }
        // FRR's router-id, update-source and listen range here are IPv4:
        // EVPN runs over an IPv4 underlay only.
        if let Some(l) = underlay.and_then(|u| u.local).filter(|l| l.is_ipv6()) {
            self.err(
                raw.span(),
                "evpn",
                format!(
                    "[evpn] needs an IPv4 underlay: underlay.local {l} is IPv6 (EVPN over an IPv6 underlay is not supported)"
                ),
            );
        }
        let reflectors = if e.reflectors.get_ref().is_empty() {
            self.err(
                e.reflectors.span(),
                "evpn.reflectors",
                "list the route reflectors' underlay addresses (two, for redundancy)",
            );
            vec![]
        } else {
            self.peers("evpn.reflectors", &e.reflectors, false)
        };
        let reflector = e.reflector.as_ref().is_some_and(|b| *b.get_ref());
        let local = underlay.and_then(|u| u.local);
        if let Some(l) = local {
            if reflector && !reflectors.contains(&l) {
                self.err(
                    e.reflectors.span(),
                    "evpn.reflectors",
                    format!("this host is a reflector but its underlay.local {l} is not listed; every host must list the same reflectors"),
                );
            }
            if !reflector && reflectors.contains(&l) {
                let at =
                    e.reflectors.get_ref().iter().find(|r| r.get_ref().parse() == Ok(l)).map(|r| r.span()).unwrap_or(raw.span());
                self.err(
                    at,
                    "evpn.reflectors",
                    format!("{l} is this host's underlay.local; set reflector = true on this host or list another host"),
                );
            }
        }
        let listen = e.listen.as_ref().and_then(|l| match cidr::parse(l.get_ref()) {
            Ok(c) => Some(c.trunc()),
            Err(reason) => {
                self.err(l.span(), "evpn.listen", reason);
                None
            }
        });
        match (&e.listen, reflector) {
            (Some(l), false) => {
                self.err(l.span(), "evpn.listen", "only a reflector listens for clients; set reflector = true or remove `listen`")
            }
            (None, true) => self.err(
                e.reflector.as_ref().map(|r| r.span()).unwrap_or(raw.span()),
                "evpn.listen",
                "a reflector needs `listen`: the underlay range its clients connect from",
            ),
            _ => {}
        }
        let mut expect_clients = Vec::new();
        if let Some(list) = &e.expect_clients {
            if !reflector {
                self.err(list.span(), "evpn.expect_clients", "only a reflector has clients; remove `expect_clients`");
            }
            let mut seen = HashSet::new();
            for (i, c) in list.get_ref().iter().enumerate() {
                let k = format!("evpn.expect_clients[{i}]");
                let Some(a) = self.ipv4(&k, c) else { continue };
                if !seen.insert(a) {
                    self.err(c.span(), &k, format!("{a} is listed twice"));
                } else if let Some(l) = listen.filter(|l| !l.contains(&a)) {
                    self.err(c.span(), &k, format!("{a} is outside listen {l}: it could not connect"));
                } else {
                    expect_clients.push(a);
                }
            }
        }
        let hold_time = e.hold_time.as_ref().map_or(Some(9), |h| {
            self.range::<u16>(
                "evpn.hold_time",
                h,
                3,
                60,
                "hold time (seconds; FRR's default 180 is far too slow for a data center)",
            )
        });
        let reflectors = reflectors
            .into_iter()
            .filter_map(|r| match r {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            })
            .collect();
        Some(Evpn { asn: asn?, reflectors, reflector, listen, expect_clients, hold_time: hold_time? })
    }

    fn veth(&mut self, key: &str, raw: Option<&S<Vec<S<String>>>>, bridge: &str) -> ([String; 2], [Range<usize>; 2]) {
        match raw {
            None => (default_leg_names(bridge), [0..0, 0..0]),
            Some(list) if list.get_ref().len() != 2 => {
                self.err(
                    list.span(),
                    key,
                    format!("expected two names [bridge end, namespace end], got {}", list.get_ref().len()),
                );
                (default_leg_names(bridge), [0..0, 0..0])
            }
            Some(list) => {
                let l = list.get_ref();
                let a = self.ifname(&format!("{key}[0]"), &l[0]);
                self.not_loopback(&format!("{key}[0]"), &l[0], CREATED);
                let b = self.ifname(&format!("{key}[1]"), &l[1]);
                ([a, b], [l[0].span(), l[1].span()])
            }
        }
    }

    fn router(
        &mut self,
        raw: &S<RawRouter>,
        segments: &[Segment],
        host_names: &mut NameTable,
        ns_names: &mut NameTable,
    ) -> Router {
        let r = raw.get_ref();
        if let Err(reason) = check_plain_name("namespace name", r.namespace.get_ref(), 64) {
            self.err(r.namespace.span(), "router.namespace", reason);
        }

        let p = r.public.get_ref();
        let bridge = self.ifname("router.public.bridge", &p.bridge);
        self.not_loopback("router.public.bridge", &p.bridge, CREATED);
        self.claim(host_names, "router.public.bridge", &bridge, p.bridge.span(), None);
        if segments.iter().any(|s| s.bridge == bridge) {
            self.err(
                p.bridge.span(),
                "router.public.bridge",
                format!("{bridge:?} is a segment bridge; the public bridge must be its own"),
            );
        }
        let uplink = self.ifname("router.public.uplink", &p.uplink);
        self.not_loopback("router.public.uplink", &p.uplink, "it cannot be a bridge port; name the NIC on the public network");
        self.claim(host_names, "router.public.uplink", &uplink, p.uplink.span(), None);
        let address = self.cidr("router.public.address", &p.address);
        let gateway = self.ipv4("router.public.gateway", &p.gateway);
        if let (Some(a), Some(g)) = (address, gateway) {
            if !a.contains(&g) {
                self.err(p.gateway.span(), "router.public.gateway", format!("{g} is not inside the public subnet {}", a.trunc()));
            } else if g == a.addr() {
                self.err(p.gateway.span(), "router.public.gateway", format!("{g} is the router's own public address"));
            } else if !cidr::cidr(g, a.prefix_len()).is_host_address() {
                self.err(
                    p.gateway.span(),
                    "router.public.gateway",
                    format!("{g} is the network or broadcast address of {}", a.trunc()),
                );
            }
        }
        let (veth, spans) = self.veth("router.public.veth", p.veth.as_ref(), &bridge);
        self.claim_leg("router.public.veth", &veth, spans, p.bridge.span(), host_names, ns_names);
        let address6 = p.address6.as_ref().and_then(|a| self.cidr6("router.public.address6", a));
        let gateway6 = p.gateway6.as_ref().and_then(|g| self.ipv6("router.public.gateway6", g));
        match (&p.address6, &p.gateway6) {
            (Some(a), None) => {
                self.err(a.span(), "router.public.address6", "an IPv6 public address needs gateway6 (the upstream IPv6 router)")
            }
            (None, Some(g)) => {
                self.err(g.span(), "router.public.gateway6", "gateway6 needs address6 (the router's public IPv6 address)")
            }
            _ => {}
        }
        if let (Some(a), Some(g), Some(raw)) = (address6, gateway6, &p.gateway6) {
            let link_local = g.segments()[0] & 0xffc0 == 0xfe80;
            if g == a.addr() {
                self.err(raw.span(), "router.public.gateway6", format!("{g} is the router's own public IPv6 address"));
            } else if !link_local && !a.contains(&g) {
                let reason = format!("{g} is neither inside the public prefix {} nor link-local (fe80::/10)", a.trunc());
                self.err(raw.span(), "router.public.gateway6", reason);
            }
        }
        let public = Public {
            leg: Leg {
                bridge,
                address: address.unwrap_or(cidr::host(Ipv4Addr::UNSPECIFIED)),
                veth,
                dhcp: None,
                dns: false,
                address6,
            },
            uplink,
            gateway: gateway.unwrap_or(Ipv4Addr::UNSPECIFIED),
            gateway6,
            uplink_addresses: match p.uplink_addresses.as_ref().map(|m| (m, m.get_ref().as_str())) {
                None | Some((_, "refuse")) => UplinkAddresses::Refuse,
                Some((_, "move")) => UplinkAddresses::Move,
                Some((m, other)) => {
                    let reason = format!("{other:?} is not one of \"refuse\", \"move\"");
                    self.err(m.span(), "router.public.uplink_addresses", reason);
                    UplinkAddresses::Refuse
                }
            },
        };

        let mut private = Vec::new();
        let mut served: BTreeMap<String, String> = BTreeMap::new();
        // Sets and indexes, not scans: a profile may have thousands of legs,
        // and comparing each with every other made validation quadratic.
        let segment_bridges: HashSet<&str> = segments.iter().map(|s| s.bridge.as_str()).collect();
        let mut known_segments: Option<String> = None;
        let mut subnets: SubnetIndex<String> = SubnetIndex::default();
        if let Some(a) = address {
            subnets.insert(a, "router.public.address".into());
        }
        // IPv6 prefixes: few (one per leg), all /64 but the public one.
        let mut prefixes6: Vec<(Ipv6Net, String)> = Vec::new();
        if let Some(a) = public.leg.address6 {
            prefixes6.push((a.trunc(), "router.public.address6".into()));
        }
        for (i, leg) in r.private.iter().enumerate() {
            let key = |f: &str| format!("router.private[{i}].{f}");
            let leg = leg.get_ref();
            let bridge = self.ifname(&key("bridge"), &leg.bridge);
            if !segment_bridges.contains(bridge.as_str()) {
                let reason = if segments.is_empty() {
                    format!("{bridge:?} is not a segment bridge of this profile (it has no [[segment]])")
                } else {
                    // Built once: a list per bad leg would be quadratic again.
                    let known = known_segments
                        .get_or_insert_with(|| listed(&segments.iter().map(|s| s.bridge.as_str()).collect::<Vec<_>>()));
                    format!("{bridge:?} is not a segment bridge of this profile (segments: {known})")
                };
                self.err(leg.bridge.span(), &key("bridge"), reason);
            }
            if let Some(other) = served.get(&bridge) {
                let reason = format!("bridge {bridge:?} already has a router leg ({other})");
                self.err(leg.bridge.span(), &key("bridge"), reason);
            } else {
                served.insert(bridge.clone(), format!("router.private[{i}]"));
            }
            let address = self.cidr(&key("address"), &leg.address).filter(|a| {
                if a.prefix_len() > 30 {
                    let reason = format!("{a} leaves no addresses for VMs on the segment; use /30 or shorter");
                    self.err(leg.address.span(), &key("address"), reason);
                }
                a.prefix_len() <= 30
            });
            if let Some(a) = address {
                // One error per leg, naming one subnet it overlaps: naming
                // each would be quadratic output for many identical subnets.
                if let Some((other, other_key)) = subnets.overlapping(&a) {
                    let reason = format!("subnet {} overlaps {other} ({other_key})", a.trunc());
                    self.err(leg.address.span(), &key("address"), reason);
                }
                subnets.insert(a, key("address"));
            }
            let (veth, spans) = self.veth(&key("veth"), leg.veth.as_ref(), &bridge);
            self.claim_leg(&key("veth"), &veth, spans, leg.bridge.span(), host_names, ns_names);
            let dhcp = leg.dhcp.as_ref().and_then(|d| self.dhcp(&key("dhcp"), d, address));
            let dns = leg.dns.as_ref().is_some_and(|d| *d.get_ref());
            let address6 = leg.address6.as_ref().and_then(|raw| {
                let key6 = key("address6");
                let a = self.cidr6(&key6, raw)?;
                // SLAAC: VMs form their addresses from a /64 prefix and a
                // 64-bit interface identifier (RFC 4862); other lengths
                // leave them without an address.
                if a.prefix_len() != 64 {
                    let reason = format!("{a}: VMs autoconfigure (SLAAC) only from a /64 prefix; use /64");
                    self.err(raw.span(), &key6, reason);
                    return None;
                }
                if p.address6.is_none() {
                    let reason = "IPv6 on a private leg needs [router.public] address6 and gateway6 (its way out)";
                    self.err(raw.span(), &key6, reason);
                    return None;
                }
                if let Some((other, other_key)) = prefixes6.iter().find(|(n, _)| n.contains(&a.trunc()) || a.trunc().contains(n))
                {
                    let reason = format!("prefix {} overlaps {other} ({other_key})", a.trunc());
                    self.err(raw.span(), &key6, reason);
                    return None;
                }
                prefixes6.push((a.trunc(), key6));
                Some(a)
            });
            private.push(Leg {
                bridge,
                address: address.unwrap_or(cidr::host(Ipv4Addr::UNSPECIFIED)),
                veth,
                dhcp,
                dns,
                address6,
            });
        }

        let nat = match r.nat.as_ref().map(|n| (n, n.get_ref().as_str())) {
            None | Some((_, "snat")) => Nat::Snat,
            Some((_, "masquerade")) => Nat::Masquerade,
            Some((_, "none")) => Nat::None,
            Some((n, other)) => {
                self.err(n.span(), "router.nat", format!("{other:?} is not one of \"snat\", \"masquerade\", \"none\""));
                Nat::Snat
            }
        };
        let nat6 = match r.nat6.as_ref().map(|n| (n, n.get_ref().as_str())) {
            None | Some((_, "none")) => Nat6::None,
            Some((_, "masquerade")) => Nat6::Masquerade,
            Some((n, other)) => {
                self.err(n.span(), "router.nat6", format!("{other:?} is not one of \"none\", \"masquerade\""));
                Nat6::None
            }
        };
        let firewall = match r.firewall.as_ref().map(|n| (n, n.get_ref().as_str())) {
            None | Some((_, "auto")) => FirewallChoice::Auto,
            Some((_, "nftables")) => FirewallChoice::Nftables,
            Some((_, "iptables")) => FirewallChoice::Iptables,
            Some((n, other)) => {
                self.err(n.span(), "router.firewall", format!("{other:?} is not one of \"auto\", \"nftables\", \"iptables\""));
                FirewallChoice::Auto
            }
        };
        let forwards = self.forwards(&r.forward, &private);
        Router {
            namespace: r.namespace.get_ref().clone(),
            nat,
            nat6,
            firewall,
            route_between_segments: r.route_between_segments.as_ref().is_some_and(|b| *b.get_ref()),
            public,
            private,
            forwards,
            ha: None,
        }
    }

    /// `[router.ha]`: VRRP id and priority in range, a unicast peer that is
    /// not this host, timers keepalived and VRRPv3 can express, and an HA
    /// link that collides with no segment.
    fn ha(&mut self, raw: &S<RawHa>, underlay: Option<&Underlay>, segments: &[Segment], ns_names: &mut NameTable) -> Option<Ha> {
        let span = raw.span();
        let h = raw.get_ref();
        let Some(underlay) = underlay else {
            self.err(span, "router.ha", "[router.ha] needs an [underlay]: VRRP and connection sync run over it to the peer");
            return None;
        };
        let vrid = self.range::<u8>("router.ha.vrid", &h.vrid, 1, 255, "VRRP virtual router id");
        let priority = self.range::<u8>("router.ha.priority", &h.priority, 1, 254, "priority");
        let peer = self.underlay_ip("router.ha.peer", &h.peer, underlay.ipv6()).filter(|a| {
            let reason = if not_a_host(*a).is_some() {
                Some(format!("{a} is not a unicast address of another host"))
            } else if underlay.local == Some(*a) {
                Some(format!("{a} is this host's own underlay.local; name the other router host"))
            } else {
                None
            };
            if let Some(r) = &reason {
                self.err(h.peer.span(), "router.ha.peer", r.clone());
            }
            reason.is_none()
        });
        let advert_centis = match &h.advert_interval {
            None => Some(DEFAULT_ADVERT_CENTIS),
            Some(a) => {
                let secs = a.get_ref().as_f64();
                let centis = (secs * 100.0).round();
                if !secs.is_finite() || (secs * 100.0 - centis).abs() > 1e-6 {
                    self.err(
                        a.span(),
                        "router.ha.advert_interval",
                        format!("{secs} s is not a whole number of hundredths (VRRPv3's unit)"),
                    );
                    None
                } else if !(f64::from(MIN_ADVERT_CENTIS)..=4095.0).contains(&centis) {
                    let reason = format!(
                        "{secs} s is out of range {}-40.95 s (below {} s adverts were not stable under load here; 40.95 s is VRRPv3's maximum)",
                        f64::from(MIN_ADVERT_CENTIS) / 100.0,
                        f64::from(MIN_ADVERT_CENTIS) / 100.0
                    );
                    self.err(a.span(), "router.ha.advert_interval", reason);
                    None
                } else {
                    Some(centis as u32)
                }
            }
        };
        let preempt_delay = h
            .preempt_delay
            .as_ref()
            .map_or(Some(5), |d| self.range("router.ha.preempt_delay", d, 0, 1000, "preempt delay (seconds)"));
        let vni = match &h.vni {
            Some(v) => self.range::<u32>("router.ha.vni", v, 1, 16_777_215, "VNI"),
            None => vrid.map(default_ha_vni),
        };
        if let Some(v) = vni
            && let Some(i) = segments.iter().position(|s| s.vni == v && s.port == DEFAULT_VXLAN_PORT)
        {
            let at = h.vni.as_ref().map(|v| v.span()).unwrap_or(span.clone());
            self.err(at, "router.ha.vni", format!("VNI {v} is segment[{i}]'s; the HA link needs a VNI of its own"));
        }
        let link = match &h.link {
            Some(n) => {
                let name = self.ifname("router.ha.link", n);
                self.claim(ns_names, "router.ha.link", &name, n.span(), None);
                name
            }
            None => {
                let name = format!("vxha{}", vrid.unwrap_or(0));
                self.claim(
                    ns_names,
                    "router.ha.vrid",
                    &name,
                    h.vrid.span(),
                    Some("the default HA link name for this VRID; set `link`"),
                );
                name
            }
        };
        Some(Ha {
            vrid: vrid?,
            priority: priority?,
            peer: peer?,
            advert_centis: advert_centis?,
            preempt_delay: preempt_delay?,
            conntrack_sync: h.conntrack_sync.as_ref().is_none_or(|b| *b.get_ref()),
            track_uplink: h.track_uplink.as_ref().is_none_or(|b| *b.get_ref()),
            vni: vni?,
            link,
        })
    }

    /// A DHCP range inside the leg's subnet that leaves out the gateway, and
    /// a lease time dnsmasq understands: at least 2 minutes, at most a year,
    /// or "infinite".
    fn dhcp(&mut self, key: &str, raw: &S<RawDhcp>, leg: Option<Ipv4Cidr>) -> Option<Dhcp> {
        let d = raw.get_ref();
        let range_key = format!("{key}.range");
        let parsed = d
            .range
            .get_ref()
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<Ipv4Addr>().ok()?, b.trim().parse::<Ipv4Addr>().ok()?)));
        let Some((first, last)) = parsed else {
            self.err(
                d.range.span(),
                &range_key,
                format!("{} is not FIRST-LAST (e.g. \"192.168.10.100-192.168.10.200\")", shown(d.range.get_ref())),
            );
            return None;
        };
        if u32::from(first) > u32::from(last) {
            self.err(d.range.span(), &range_key, format!("{first} comes after {last}"));
            return None;
        }
        if let Some(net) = leg {
            let inside = |a: Ipv4Addr| net.contains(&a) && cidr::cidr(a, net.prefix_len()).is_host_address();
            if !inside(first) || !inside(last) {
                self.err(d.range.span(), &range_key, format!("the range must be host addresses of {}", net.trunc()));
                return None;
            }
            if (u32::from(first)..=u32::from(last)).contains(&u32::from(net.addr())) {
                self.err(d.range.span(), &range_key, format!("the range includes the gateway {}", net.addr()));
                return None;
            }
        }
        let lease = match &d.lease {
            None => "12h".to_string(),
            Some(l) => {
                let text = l.get_ref().as_str();
                let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
                let factor = match unit {
                    "" | "s" => Some(1u64),
                    "m" => Some(60),
                    "h" => Some(3600),
                    "d" => Some(86_400),
                    "w" => Some(604_800),
                    _ => None,
                };
                // `num` is all digits, so it fails to parse only when empty or
                // too large for u64, which is longer than a year anyway.
                let seconds =
                    factor.filter(|_| !num.is_empty()).map(|f| num.parse::<u64>().unwrap_or(u64::MAX).saturating_mul(f));
                match seconds {
                    _ if text == "infinite" => text.to_string(),
                    Some(s) if s > MAX_LEASE_SECONDS => {
                        self.err(
                            l.span(),
                            &format!("{key}.lease"),
                            format!("{} is longer than a year; use \"infinite\" for a lease that does not expire", shown(text)),
                        );
                        return None;
                    }
                    Some(s) if s >= 120 => text.to_string(),
                    Some(_) => {
                        self.err(
                            l.span(),
                            &format!("{key}.lease"),
                            format!("{text} is shorter than dnsmasq's minimum of 2 minutes"),
                        );
                        return None;
                    }
                    None => {
                        self.err(
                            l.span(),
                            &format!("{key}.lease"),
                            format!("{} is not a duration like \"12h\", \"45m\", \"3600\" or \"infinite\"", shown(text)),
                        );
                        return None;
                    }
                }
            }
        };
        Some(Dhcp { first, last, lease })
    }

    /// A forward's IPv6 target, "[ADDR]:PORT": a host address inside a
    /// private leg's `address6` prefix, not the router's own.
    fn forward_to6(&mut self, key: &str, s: &S<String>, private: &[Leg]) -> Option<(Ipv6Addr, u16)> {
        let parsed = s.get_ref().parse::<std::net::SocketAddrV6>().ok().filter(|a| a.port() > 0);
        let Some(a) = parsed else {
            self.err(
                s.span(),
                key,
                format!("{:?} is not [ADDRESS]:PORT (e.g. \"[2001:db8:10::11]:22\", port 1-65535)", s.get_ref()),
            );
            return None;
        };
        let ip = *a.ip();
        let Some(leg) = private.iter().find_map(|l| l.address6.filter(|n| n.contains(&ip))) else {
            let nets: Vec<String> = private.iter().filter_map(|l| l.address6.map(|n| n.trunc().to_string())).collect();
            let reason = if nets.is_empty() {
                format!("{ip}: no private leg of this router has an address6")
            } else {
                format!(
                    "{ip} is not inside an IPv6 prefix of this router ({})",
                    listed(&nets.iter().map(String::as_str).collect::<Vec<_>>())
                )
            };
            self.err(s.span(), key, reason);
            return None;
        };
        if ip == leg.addr() || ip == leg.network() {
            self.err(s.span(), key, format!("{ip} is the router's own or the subnet-router anycast address"));
            return None;
        }
        Some((ip, a.port()))
    }

    /// Port forwards: ports in range, `to` a host of a private subnet, one
    /// forward per public port and protocol.
    fn forwards(&mut self, raw: &[S<RawForward>], private: &[Leg]) -> Vec<Forward> {
        let mut out: Vec<Forward> = Vec::new();
        // Which leg holds an address, by index rather than by scanning every
        // leg for every forward; placeholders of invalid legs are left out.
        let mut legs: SubnetIndex<usize> = SubnetIndex::default();
        for (i, l) in private.iter().enumerate() {
            if l.address.addr() != Ipv4Addr::UNSPECIFIED {
                legs.insert(l.address, i);
            }
        }
        let mut nets_listed: Option<String> = None;
        let mut seen: BTreeMap<(Proto, u16), String> = BTreeMap::new();
        for (i, f) in raw.iter().enumerate() {
            let key = |k: &str| format!("router.forward[{i}].{k}");
            let f = f.get_ref();
            let proto = match f.proto.get_ref().as_str() {
                "tcp" => Some(Proto::Tcp),
                "udp" => Some(Proto::Udp),
                other => {
                    self.err(f.proto.span(), &key("proto"), format!("{other:?} is not \"tcp\" or \"udp\""));
                    None
                }
            };
            let port = self.range::<u16>(&key("port"), &f.port, 1, 65535, "port");
            let to = match f.to.get_ref().rsplit_once(':') {
                Some((ip, p)) => match (ip.parse::<Ipv4Addr>(), p.parse::<u16>()) {
                    (Ok(ip), Ok(p)) if p > 0 => Some((ip, p)),
                    _ => None,
                },
                None => None,
            };
            let to = match to {
                None => {
                    self.err(
                        f.to.span(),
                        &key("to"),
                        format!("{:?} is not ADDRESS:PORT (e.g. \"192.168.10.10:22\", port 1-65535)", f.to.get_ref()),
                    );
                    None
                }
                Some((ip, p)) => match legs.containing(ip).and_then(|(_, i)| private.get(*i)) {
                    None => {
                        let nets = nets_listed.get_or_insert_with(|| {
                            let nets: Vec<String> = private.iter().map(|l| l.address.trunc().to_string()).collect();
                            listed(&nets.iter().map(String::as_str).collect::<Vec<_>>())
                        });
                        self.err(f.to.span(), &key("to"), format!("{ip} is not inside a private subnet of this router ({nets})"));
                        None
                    }
                    Some(l) if ip == l.address.addr() || !cidr::cidr(ip, l.address.prefix_len()).is_host_address() => {
                        self.err(f.to.span(), &key("to"), format!("{ip} is the router's own, network or broadcast address"));
                        None
                    }
                    Some(_) => Some((ip, p)),
                },
            };
            if let (Some(proto), Some(port)) = (proto, port) {
                if let Some(other) = seen.get(&(proto, port)) {
                    let reason = format!("{} port {port} is already forwarded by {other}", proto.as_str());
                    self.err(f.port.span(), &key("port"), reason);
                } else {
                    seen.insert((proto, port), format!("router.forward[{i}]"));
                }
            }
            let to6 = f.to6.as_ref().and_then(|t| self.forward_to6(&key("to6"), t, private));
            if let (Some(proto), Some(port), Some((to, to_port))) = (proto, port, to)
                && (f.to6.is_none() || to6.is_some())
            {
                out.push(Forward { proto, port, to, to_port, to6 });
            }
        }
        out
    }

    /// Registers both ends of a leg; derived names are reported at the
    /// leg's bridge key, since that is where they come from.
    fn claim_leg(
        &mut self,
        key: &str,
        veth: &[String; 2],
        spans: [Range<usize>; 2],
        bridge_span: Range<usize>,
        host_names: &mut NameTable,
        ns_names: &mut NameTable,
    ) {
        let derived = spans[0] == (0..0);
        let at = |i: usize| if derived { bridge_span.clone() } else { spans[i].clone() };
        let label = |i: usize| format!("{key}[{i}]");
        let how = derived.then_some("derived from the bridge name; set `veth` to choose names");
        self.claim(host_names, &label(0), &veth[0], at(0), how);
        self.claim(ns_names, &label(1), &veth[1], at(1), how);
        if veth[0] == veth[1] {
            self.err(at(1), &label(1), "both ends of a veth pair have the same name; give them distinct names");
        }
        if veth[1] == "lo" {
            self.err(at(1), &label(1), "\"lo\" is the namespace's loopback; choose another name");
        }
    }
}

/// Why `a` cannot be a host's underlay address (None: it can be).
fn not_a_host(a: IpAddr) -> Option<String> {
    match a {
        IpAddr::V4(v) if v.is_multicast() || v.is_broadcast() || v.is_unspecified() || v.is_loopback() => {
            Some(format!("{a} is not a unicast address of a host"))
        }
        IpAddr::V6(v) if v.is_multicast() || v.is_unspecified() || v.is_loopback() || v.to_ipv4_mapped().is_some() => {
            Some(format!("{a} is not a unicast address of a host"))
        }
        // A link-local endpoint would need an interface (a scope) the VXLAN
        // link cannot carry.
        IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80 => {
            Some(format!("{a} is link-local; use a global or unique-local (fd00::/8) underlay address"))
        }
        _ => None,
    }
}

/// Why `a` cannot be an IPv6 VXLAN group (None: it can be). Interface-local
/// (ff01::/16) and reserved-scope groups never leave the host; the
/// all-nodes, all-routers and solicited-node groups carry neighbour
/// discovery, which every IPv6 host on the underlay would then receive as
/// VXLAN (or the reverse).
fn not_a_vxlan_group6(a: IpAddr) -> Option<String> {
    let IpAddr::V6(g) = a else { return None };
    let s = g.segments();
    if !g.is_multicast() {
        return Some(format!("{g} is not an IPv6 multicast address (ff00::/8)"));
    }
    if s[0] & 0x000f <= 1 {
        return Some(format!("{g} has interface-local or reserved scope and never leaves this host; use e.g. ff05::…"));
    }
    let solicited = s[0] == 0xff02 && s[1..5] == [0, 0, 0, 0] && s[5] == 1 && s[6] >> 8 == 0xff;
    if s[0] == 0xff02 && s[1..7] == [0; 6] && (s[7] == 1 || s[7] == 2) || solicited {
        return Some(format!("{g} carries IPv6 neighbour discovery on the underlay; use e.g. ff05::…"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED_A: &str = r#"
[host]
name = "host-a"

[underlay]
device = "eth0"

[[segment]]
bridge = "br-pr"
vni = 1070
group = "239.0.4.46"
vxlan = "vxlan1070"
ageing = 600

[router]
namespace = "ns1"

[router.public]
bridge = "br-pu"
uplink = "eth1"
address = "203.0.113.123/24"
gateway = "203.0.113.1"
veth = ["veth15.0", "veth15.1"]

[[router.private]]
bridge = "br-pr"
address = "192.168.10.3/24"
veth = ["veth17.0", "veth17.1"]
"#;

    fn errs(text: &str) -> Vec<String> {
        match Profile::parse("p.toml", text) {
            Ok(_) => vec![],
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn seed_profile_is_valid_with_defaults() {
        let p = Profile::parse("p.toml", SEED_A).unwrap();
        assert_eq!(p.host, "host-a");
        let s = &p.segments[0];
        assert_eq!((s.vni, s.port, s.ageing, s.stp), (1070, 4789, 600, false));
        assert_eq!(s.flood, Flood::Multicast(Ipv4Addr::new(239, 0, 4, 46).into()));
        let r = p.router.unwrap();
        assert_eq!(r.public.leg.veth, ["veth15.0".to_string(), "veth15.1".to_string()]);
        assert_eq!(r.private[0].address.to_string(), "192.168.10.3/24");
    }

    #[test]
    fn errors_name_file_line_column_and_key() {
        let e = errs(&SEED_A.replace("vni = 1070", "vni = 0"));
        assert_eq!(e, vec!["p.toml:10:7: segment[0].vni: VNI 0 is out of range 1-16777215"]);
    }

    #[test]
    fn serde_errors_get_a_key_too() {
        let e = errs(&SEED_A.replace("vni = 1070", "vni = \"x\""));
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("p.toml:10:7: segment[0].vni: "), "{e:?}");
        let e = errs(&SEED_A.replace("ageing = 600", "ageing = 600\ncolour = 1"));
        assert!(e[0].contains("segment[0].colour") && e[0].contains("unknown field"), "{e:?}");
    }

    #[test]
    fn collects_several_errors_in_file_order() {
        let bad = SEED_A.replace("239.0.4.46", "10.1.1.1").replace("203.0.113.1\"", "198.51.100.1\"");
        let e = errs(&bad);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("segment[0].group") && e[0].contains("not an IPv4 multicast"));
        assert!(e[1].contains("router.public.gateway") && e[1].contains("not inside the public subnet"));
    }

    #[test]
    fn private_leg_must_name_a_segment_and_subnets_must_not_overlap() {
        let e = errs(
            &SEED_A
                .replace("bridge = \"br-pr\"\naddress = \"192.168.10.3/24\"", "bridge = \"br-x\"\naddress = \"203.0.113.9/25\""),
        );
        assert!(e.iter().any(|e| e.contains("router.private[0].bridge") && e.contains("not a segment bridge")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("router.private[0].address") && e.contains("overlaps")), "{e:?}");
    }

    #[test]
    fn duplicate_names_are_refused() {
        let e = errs(&SEED_A.replace("veth = [\"veth17.0\", \"veth17.1\"]", "veth = [\"veth15.0\", \"veth17.1\"]"));
        assert!(
            e.iter().any(|e| e.contains("router.private[0].veth[0]") && e.contains("already used by router.public.veth[0]")),
            "{e:?}"
        );
    }

    #[test]
    fn profile_errors_stay_small_for_huge_profiles() {
        // 2,000 segments and 2,000 router legs on bridges that are not
        // segments: each error names at most a few segments.
        let n = 2000;
        let mut t = String::from("[host]\nname = \"big\"\n[underlay]\ndevice = \"eth0\"\n");
        for i in 0..n {
            t.push_str(&format!(
                "[[segment]]\nbridge = \"b{i}\"\nvni = {}\ngroup = \"239.1.{}.{}\"\n",
                i + 1,
                i / 250,
                i % 250 + 1
            ));
        }
        t.push_str("[router]\nnamespace = \"ns\"\n[router.public]\nbridge = \"pub\"\nuplink = \"up\"\naddress = \"203.0.113.2/24\"\ngateway = \"203.0.113.1\"\n");
        for i in 0..n {
            t.push_str(&format!("[[router.private]]\nbridge = \"x{i}\"\naddress = \"10.{}.{}.1/24\"\n", i / 250, i % 250));
        }
        let e = Profile::parse("p.toml", &t).unwrap_err().to_string();
        assert!(e.len() < 300 * n, "{} bytes of errors for {n} bad legs", e.len());
        assert!(e.contains("… 1994 more"), "{}", &e[..300]);
    }

    /// The first error for `text`, as "key: reason".
    fn first(text: &str) -> String {
        match Profile::parse("p.toml", text) {
            Ok(_) => "accepted".into(),
            Err(e) => format!("{}: {}", e.0[0].key, e.0[0].reason),
        }
    }

    #[test]
    fn every_name_key_keeps_to_the_alphabet() {
        // Each name of the seed profile, replaced by a wildcard name.
        let keys = [
            ("\"eth0\"", "underlay.device"),
            ("\"vxlan1070\"", "segment[0].vxlan"),
            ("\"br-pu\"", "router.public.bridge"),
            ("\"eth1\"", "router.public.uplink"),
            ("\"veth15.0\"", "router.public.veth[0]"),
            ("\"veth15.1\"", "router.public.veth[1]"),
            ("\"veth17.0\"", "router.private[0].veth[0]"),
            ("\"veth17.1\"", "router.private[0].veth[1]"),
        ];
        for (name, key) in keys {
            for bad in ["gw*", "eth+", "br%d", "a@b", "a'b", "a&b", "a\\\"b"] {
                let e = errs(&SEED_A.replace(name, &format!("\"{bad}\"")));
                assert!(e.iter().any(|e| e.contains(&format!(": {key}: ")) && e.contains("contains")), "{key} = {bad}: {e:?}");
            }
        }
        // The segment bridge is named twice (segment and leg): both are refused.
        let e = errs(&SEED_A.replace("\"br-pr\"", "\"br*\""));
        assert!(e.iter().any(|e| e.contains("segment[0].bridge: interface name \"br*\" contains '*'")), "{e:?}");
        assert!(e.iter().any(|e| e.contains("router.private[0].bridge: interface name")), "{e:?}");
        assert!(first(&SEED_A.replace("\"ns1\"", "\"ns@1\"")).starts_with("router.namespace: namespace name"));
        assert!(first(&SEED_A.replace("\"host-a\"", "\"-a\"")).starts_with("host.name: host name \"-a\" starts with '-'"));
    }

    #[test]
    fn invisible_characters_are_named_with_their_location() {
        let e = errs(&SEED_A.replace("\"br-pu\"", "\"br\u{202e}up\""));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("p.toml:19:10: router.public.bridge: "), "{e:?}");
        assert!(e[0].contains("contains U+202E RIGHT-TO-LEFT OVERRIDE"), "{e:?}");
        assert!(!e[0].contains('\u{202e}'), "the character itself is printed: {e:?}");
        let e = first(&SEED_A.replace("\"veth17.1\"", "\"veth17\u{200b}.1\""));
        assert!(e.contains("U+200B ZERO WIDTH SPACE"), "{e}");
        // A quoted key may hold anything; the error escapes it.
        let e = errs(&SEED_A.replace("ageing = 600", "ageing = 600\n\"a\\u202E\\u001B[2J\" = 1"));
        assert!(e[0].contains("segment[0].a\\u{202e}\\u{1b}[2J"), "{e:?}");
        assert!(!e[0].chars().any(super::super::names::is_hidden), "{e:?}");
    }

    #[test]
    fn loopback_is_refused_where_it_cannot_work() {
        let e = first(&SEED_A.replace("device = \"eth0\"", "device = \"lo\""));
        assert!(e.starts_with("underlay.device: \"lo\" is the loopback device; VXLAN packets sent over it never leave"), "{e}");
        let e = first(&SEED_A.replace("uplink = \"eth1\"", "uplink = \"lo\""));
        assert!(e.starts_with("router.public.uplink: \"lo\" is the loopback device; it cannot be a bridge port"), "{e}");
        for (name, key) in [
            ("\"br-pu\"", "router.public.bridge"),
            ("\"vxlan1070\"", "segment[0].vxlan"),
            ("\"veth17.0\"", "router.private[0].veth[0]"),
        ] {
            let e = first(&SEED_A.replace(name, "\"lo\""));
            assert!(e.starts_with(&format!("{key}: \"lo\" is the loopback device; the host already has it")), "{e}");
        }
        // The kernel's reserved names are refused too.
        let e = first(&SEED_A.replace("\"br-pu\"", "\"all\""));
        assert!(e.starts_with("router.public.bridge: \"all\" is reserved"), "{e}");
    }

    #[test]
    fn an_empty_peer_list_is_refused() {
        let p = SEED_A.replace("group = \"239.0.4.46\"", "peers = []");
        let e = errs(&p);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("p.toml:11:9: segment[0].peers: an empty list floods to no other host"), "{e:?}");
        // The host's own address alone is a valid list (one list for all hosts).
        assert!(errs(&SEED_A.replace("group = \"239.0.4.46\"", "peers = [\"192.0.2.1\"]")).is_empty());
    }

    #[test]
    fn lease_times_are_bounded() {
        let with = |lease: &str| {
            let leg = "veth = [\"veth17.0\", \"veth17.1\"]";
            first(
                &SEED_A
                    .replace(leg, &format!("{leg}\ndhcp = {{ range = \"192.168.10.100-192.168.10.200\", lease = \"{lease}\" }}")),
            )
        };
        for ok in ["infinite", "2m", "120", "12h", "365d", "8760h", "52w"] {
            assert_eq!(with(ok), "accepted", "{ok}");
        }
        for long in ["366d", "53w", "31536001", "100000000d", "99999999999999999999999h"] {
            let e = with(long);
            assert!(e.starts_with("router.private[0].dhcp.lease: ") && e.contains("longer than a year"), "{long}: {e}");
        }
        for short in ["0", "0h", "119", "1m"] {
            assert!(with(short).contains("shorter than dnsmasq's minimum"), "{short}");
        }
        for bad in ["", "h", "12x", "-1h", "1.5h", "forever"] {
            assert!(with(bad).contains("is not a duration"), "{bad:?}: {}", with(bad));
        }
    }

    /// Peers are checked for duplicates with a set: 1,000,000 distinct
    /// peers, for which a pairwise check needs 5 × 10^11 comparisons (hours
    /// in a test build: the suite's time limit fails it), go through `peers`
    /// directly, without TOML in between. No time is asserted.
    #[test]
    fn duplicate_peer_check_is_linear() {
        let n: u32 = 1_000_000;
        let list: Vec<S<String>> = (0..n).map(|i| S::new(0..0, Ipv4Addr::from(0x0a00_0001 + i).to_string())).collect();
        let mut list = S::new(0..0, list);
        let loc = Locator::new("");
        let mut v = Validator { file: "p.toml", loc: &loc, errors: Vec::new() };
        assert_eq!(v.peers("segment[0].peers", &list, false).len(), n as usize);
        assert!(v.errors.is_empty());
        // The same address again at the end is the one error.
        list.get_mut().push(S::new(0..0, "10.0.0.1".into()));
        let mut v = Validator { file: "p.toml", loc: &loc, errors: Vec::new() };
        assert_eq!(v.peers("segment[0].peers", &list, false).len(), n as usize);
        assert_eq!(v.errors.len(), 1);
        assert_eq!(v.errors[0].key, format!("segment[0].peers[{n}]"));
    }

    /// Overlapping subnets give one error per leg, however many legs they
    /// overlap: 1,000 legs on one subnet gave 499,500 errors before.
    #[test]
    fn overlapping_subnets_give_one_error_per_leg() {
        let n = 1000;
        let mut t = String::from("[host]\nname = \"big\"\n[underlay]\ndevice = \"eth0\"\n");
        for i in 0..n {
            t.push_str(&format!("[[segment]]\nbridge = \"b{i}\"\nvni = {}\npeers = [\"192.0.2.1\"]\n", i + 1));
        }
        t.push_str("[router]\nnamespace = \"ns\"\n[router.public]\nbridge = \"pub\"\nuplink = \"up\"\naddress = \"203.0.113.2/24\"\ngateway = \"203.0.113.1\"\n");
        for i in 0..n {
            t.push_str(&format!("[[router.private]]\nbridge = \"b{i}\"\naddress = \"10.0.0.{}/16\"\n", i % 250 + 1));
        }
        let e = Profile::parse("p.toml", &t).unwrap_err();
        assert_eq!(e.0.len(), n - 1, "{}", e.0[..3].iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"));
        assert!(e.0.iter().all(|e| e.reason == "subnet 10.0.0.0/16 overlaps 10.0.0.0/16 (router.private[0].address)"));
        // A forward into the shared subnet still finds its (first) leg.
        let ok = t.replace("10.0.0.", "10.9.").replace("/16", "/24");
        let ok = (0..n).fold(ok, |t, i| {
            t.replacen(&format!("\"10.9.{}/24\"", i % 250 + 1), &format!("\"10.{}.{}.1/24\"", 10 + i / 250, i % 250), 1)
        });
        let ok = format!("{ok}[[router.forward]]\nproto = \"tcp\"\nport = 22\nto = \"10.13.249.9:22\"\n");
        let p = Profile::parse("p.toml", &ok).map_err(|e| e.to_string()).unwrap();
        assert_eq!(p.router.unwrap().forwards[0].to, Ipv4Addr::new(10, 13, 249, 9));
    }

    #[test]
    fn non_utf8_is_located() {
        let mut bytes = b"[host]\nname = \"a".to_vec();
        bytes.push(0xff);
        let e = Profile::parse_bytes("p.toml", &bytes).unwrap_err();
        assert_eq!(e.to_string(), "p.toml:2:10: profile is not valid UTF-8 text");
    }
}
