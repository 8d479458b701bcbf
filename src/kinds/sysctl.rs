//! Sysctls of the router namespace, read and written through /proc/sys by a
//! thread inside the namespace: they are per namespace, and nothing in the
//! host's own settings changes. A router's settings:
//!
//! - forwarding on (`ip_forward`);
//! - IPv6 off (`disable_ipv6` on all and new links): no link-local address,
//!   no router advertisement accepted, no autoconfiguration, no answer to
//!   `ff02::1` — except on the legs that have an `address6`: IPv6 on
//!   (after the namespace-wide setting, which would switch it off again),
//!   forwarding on, no router advertisement accepted and no address
//!   autoconfigured (a router configures itself from the profile);
//! - ARP as a router answers it: only for addresses of the asking leg
//!   (`arp_ignore` 1) and from the best local address (`arp_announce` 2), so
//!   the public leg does not answer for the private gateway addresses;
//! - no ICMP redirects (`send_redirects` 0: the kernel sends them when the
//!   setting is on for all links *or* the link, so every leg gets it too);
//! - strict reverse-path filtering (`rp_filter` 1): each leg only accepts
//!   sources it routes back to. The router's routes are symmetric (a
//!   segment's subnet is on its leg, everything else on the public leg), so
//!   this drops only spoofed sources.
//!
//! A router leg's `send_redirects` is set and read over netlink
//! (IFLA_INET_CONF on the namespace's socket, and the link dump); every
//! other setting through /proc/sys (IPv6 settings have no netlink setter).

use std::collections::BTreeMap;
use std::fs::File;

use serde::Serialize;

use super::{Kind, ObserveCx};
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::{Facts, IP_FORWARD_SYSCTL};
use crate::journal::Undo;
use crate::model::Ns;
use crate::netlink::{Ipv4Conf, LinkRef};
use crate::netns;
use crate::observe::Observed;
use crate::plan::{Order, Planner, Step, Verb, in_ns};
use crate::profile::Profile;

pub struct Sysctls;

/// The router namespace's settings that apply to the whole namespace (and
/// are read in every namespace vxrouter looks into, so a namespace it deletes
/// can be put back as it was).
const ALL_DISABLE_IPV6: &str = "net/ipv6/conf/all/disable_ipv6";

const ROUTER_SYSCTLS: &[(&str, &str)] = &[
    (IP_FORWARD_SYSCTL, "1"),
    (ALL_DISABLE_IPV6, "1"),
    ("net/ipv6/conf/default/disable_ipv6", "1"),
    ("net/ipv4/conf/all/arp_ignore", "1"),
    ("net/ipv4/conf/all/arp_announce", "2"),
    ("net/ipv4/conf/all/send_redirects", "0"),
    ("net/ipv4/conf/default/send_redirects", "0"),
    ("net/ipv4/conf/all/rp_filter", "1"),
    ("net/ipv4/conf/default/rp_filter", "1"),
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sysctl {
    pub ns: Ns,
    /// Under /proc/sys, with slashes ("net/ipv4/ip_forward").
    pub key: String,
    pub value: String,
}

impl Kind for Sysctls {
    const NAME: &'static str = "sysctl";
    type Item = Sysctl;
    /// Per namespace looked into: key → value.
    type Seen = Vec<(Ns, BTreeMap<String, String>)>;

    fn desire(p: &Profile, _f: &Facts) -> Vec<Sysctl> {
        let mut out = host_bridges(p);
        out.extend(router(p));
        out
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Self::Seen> {
        let mut out = Vec::new();
        let host: Vec<&str> = cx.desired.of::<Sysctls>().iter().filter(|s| s.ns == Ns::Host).map(|s| s.key.as_str()).collect();
        if !host.is_empty() {
            let (mut values, rest) = from_link_dump(&cx.observed.host, &host);
            values.extend(read(None, &rest).context("read sysctls of the host's bridges")?);
            out.push((Ns::Host, values));
        }
        for (name, view) in &cx.observed.named {
            let ns = Ns::Named(name.clone());
            let mut keys: Vec<String> = ROUTER_SYSCTLS.iter().map(|(k, _)| k.to_string()).collect();
            let wanted: Vec<String> = cx.desired.of::<Sysctls>().iter().filter(|s| s.ns == ns).map(|s| s.key.clone()).collect();
            if wanted.is_empty() {
                // A namespace about to go (destroy, a router removed or
                // renamed): its per-link settings too, so that a rollback
                // recreates it as it was (a leg's IPv6 switch above all:
                // without it, its IPv6 addresses cannot come back).
                keys.push(IPV6_FORWARDING.to_string());
                for l in view.links.iter().filter(|l| !l.loopback) {
                    keys.extend(per_link_keys(&l.name));
                }
            }
            keys.extend(wanted);
            keys.sort();
            keys.dedup();
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let (mut values, rest) = from_link_dump(view, &keys);
            values.extend(read(cx.session.file(&ns)?, &rest).with_context(|| format!("read sysctls in {ns}"))?);
            out.push((ns, values));
        }
        Ok(out)
    }

    fn plan(p: &mut Planner<'_>, want: &[Sysctl], seen: &Self::Seen) {
        let old = |s: &Sysctl| found_value(p, seen, s);
        // Writing `all/disable_ipv6` sets every link of the namespace: the
        // links that keep IPv6 on are set again after it.
        let reset: Vec<Ns> = want
            .iter()
            .filter(|s| s.key == ALL_DISABLE_IPV6 && old(s).as_deref() != Some(s.value.as_str()))
            .map(|s| s.ns.clone())
            .collect();
        let mut steps = Vec::new();
        for s in want {
            let old = old(s);
            let per_link = s.key.ends_with("/disable_ipv6") && s.key != ALL_DISABLE_IPV6 && !s.key.contains("/default/");
            if old.as_deref() != Some(s.value.as_str()) || (per_link && reset.contains(&s.ns)) {
                steps.push(SetSysctl { sysctl: s.clone(), old });
            }
        }
        // With IPv6 legs, the IPv6 settings come before the addresses:
        // switching IPv6 off namespace-wide (or on a link) drops the link's
        // IPv6 addresses and routes.
        let v6_legs = want.iter().any(|s| s.key.ends_with("/disable_ipv6") && s.value == "0");
        for s in steps {
            let order = if v6_legs && s.sysctl.key.starts_with("net/ipv6/") { Order::Create } else { Order::Late };
            p.push(order, s);
        }
    }
}

/// Set only when a leg has an `address6`.
const IPV6_FORWARDING: &str = "net/ipv6/conf/all/forwarding";

/// The per-link settings vxrouter sets on router legs (under `net/`, `{}`
/// the link).
const PER_LINK: [&str; 4] =
    ["ipv4/conf/{}/send_redirects", "ipv6/conf/{}/disable_ipv6", "ipv6/conf/{}/accept_ra", "ipv6/conf/{}/autoconf"];

/// The `net/ipv6/conf/<link>/disable_ipv6` keys the link dump answers
/// (IFLA_INET6_CONF carries them), and the keys left to read from /proc: at
/// N = 1000 the bridges' IPv6 switches alone are 1000 file reads.
fn from_link_dump<'k>(view: &crate::observe::NsView, keys: &[&'k str]) -> (BTreeMap<String, String>, Vec<&'k str>) {
    let mut found = BTreeMap::new();
    let mut rest = Vec::new();
    for k in keys {
        let ipv6_off =
            || k.strip_prefix("net/ipv6/conf/")?.strip_suffix("/disable_ipv6").and_then(|name| view.link(name))?.ipv6_disabled;
        let redirects = || match ipv4_link_conf(k)? {
            (name, Ipv4Conf::SendRedirects) => view.link(name)?.send_redirects,
        };
        match ipv6_off().or_else(redirects) {
            Some(off) => {
                found.insert(k.to_string(), if off { "1" } else { "0" }.to_string());
            }
            None => rest.push(*k),
        }
    }
    (found, rest)
}

/// `net/ipv4/conf/<link>/<setting>` of one link (not `all` or `default`)
/// whose setting netlink sets: the link and the setting.
fn ipv4_link_conf(key: &str) -> Option<(&str, Ipv4Conf)> {
    let (link, setting) = key.strip_prefix("net/ipv4/conf/")?.rsplit_once('/')?;
    if link == "all" || link == "default" {
        return None;
    }
    Some((link, Ipv4Conf::from_name(setting)?))
}

/// Sets one sysctl: a link's IPv4 setting with a netlink request in its
/// namespace, anything else written under /proc/sys there.
fn set(cx: &mut Apply<'_>, s: &Sysctl) -> Result<()> {
    if let Some((link, setting)) = ipv4_link_conf(&s.key) {
        let value: u32 = s.value.parse().map_err(|_| crate::error!(Kernel, "{} = {:?}: not a number", s.key, s.value))?;
        return cx
            .sock(&s.ns)?
            .set_ipv4_conf(LinkRef::Name(link), setting, value)
            .with_context(|| format!("set {} to {} in {}", s.key, s.value, s.ns));
    }
    write(cx.file(&s.ns)?, &s.key, &s.value).with_context(|| format!("in {}", s.ns))
}

/// The keys of `PER_LINK` for link `name`.
pub fn per_link_keys(name: &str) -> Vec<String> {
    PER_LINK.iter().map(|k| format!("net/{}", k.replace("{}", name))).collect()
}

/// The router namespace's settings (see the module comment).
fn router(p: &Profile) -> Vec<Sysctl> {
    let Some(r) = &p.router else { return vec![] };
    let ns = Ns::Named(r.namespace.clone());
    let set = |key: String, value: &str| Sysctl { ns: ns.clone(), key, value: value.to_string() };
    let mut out: Vec<Sysctl> = ROUTER_SYSCTLS.iter().map(|(k, v)| set(k.to_string(), v)).collect();
    for leg in std::iter::once(&r.public.leg).chain(&r.private) {
        out.push(set(format!("net/ipv4/conf/{}/send_redirects", leg.veth[1]), "0"));
    }
    let v6: Vec<&str> =
        std::iter::once(&r.public.leg).chain(&r.private).filter(|l| l.address6.is_some()).map(|l| l.veth[1].as_str()).collect();
    if !v6.is_empty() {
        out.push(set(IPV6_FORWARDING.into(), "1"));
    }
    for leg in v6 {
        out.push(set(format!("net/ipv6/conf/{leg}/disable_ipv6"), "0"));
        out.push(set(format!("net/ipv6/conf/{leg}/accept_ra"), "0"));
        out.push(set(format!("net/ipv6/conf/{leg}/autoconf"), "0"));
    }
    out
}

/// IPv6 off on the host's segment and public bridges: a router
/// advertisement on a segment (the router's, or one a VM sends) would
/// otherwise give the hypervisor an IPv6 address there (the kernel
/// autoconfigures even without a link-local address), and VMs could reach
/// it (docs/security.md). Not on a public bridge that holds the host's own
/// addresses (`uplink_addresses = "move"`).
fn host_bridges(p: &Profile) -> Vec<Sysctl> {
    let off = |b: &str| Sysctl { ns: Ns::Host, key: format!("net/ipv6/conf/{b}/disable_ipv6"), value: "1".into() };
    let mut out: Vec<Sysctl> = p.segments.iter().map(|s| off(&s.bridge)).collect();
    if let Some(r) = p.router.as_ref().filter(|r| r.public.uplink_addresses != crate::profile::UplinkAddresses::Move) {
        out.push(off(&r.public.leg.bridge));
    }
    out
}

/// The value seen of a wanted sysctl (None: not found, or its namespace
/// is about to be created afresh).
pub fn found_value(p: &Planner<'_>, seen: &[(Ns, BTreeMap<String, String>)], s: &Sysctl) -> Option<String> {
    p.view(&s.ns)?;
    seen.iter().find(|(n, _)| *n == s.ns).and_then(|(_, values)| values.get(&s.key)).cloned()
}

/// The sysctls seen in a namespace.
pub fn found(o: &Observed, ns: &Ns) -> BTreeMap<String, String> {
    o.seen::<Sysctls>().and_then(|s| s.iter().find(|(n, _)| n == ns)).map(|(_, v)| v.clone()).unwrap_or_default()
}

#[derive(Debug, Serialize)]
pub struct SetSysctl {
    pub sysctl: Sysctl,
    pub old: Option<String>,
}

impl Step for SetSysctl {
    fn action(&self) -> &'static str {
        "set_sysctl"
    }
    fn verb(&self) -> Verb {
        Verb::Change
    }
    fn object(&self) -> String {
        format!("sysctl {}{}", self.sysctl.key.replace('/', "."), in_ns(&self.sysctl.ns))
    }
    fn detail(&self) -> String {
        format!("{} (found {})", self.sysctl.value, self.old.as_deref().unwrap_or("none"))
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let s = &self.sysctl;
        set(cx, s)?;
        if let Some(old) = &self.old {
            cx.undo_with(Restore(Sysctl { value: old.clone(), ..s.clone() }));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Restore(Sysctl);

impl Undo for Restore {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        set(cx, &self.0)
    }
}

/// Reads `/proc/sys/<key>` as seen from the namespace (None: here); keys
/// that do not exist there are left out.
pub fn read(ns: Option<&File>, keys: &[&str]) -> Result<BTreeMap<String, String>> {
    let read = || -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for k in keys {
            let path = format!("/proc/sys/{k}");
            match std::fs::read_to_string(&path) {
                Ok(v) => {
                    out.insert(k.to_string(), v.trim().to_string());
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("read {path}")),
            }
        }
        Ok(out)
    };
    netns::within(ns, read)?
}

pub fn write(ns: Option<&File>, key: &str, value: &str) -> Result<()> {
    crate::testhooks::point();
    let write = || -> Result<()> {
        let path = format!("/proc/sys/{key}");
        std::fs::write(&path, value).with_context(|| format!("write {value} to {path}"))
    };
    netns::within(ns, write)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_links_own_ipv4_settings_go_over_netlink() {
        assert_eq!(ipv4_link_conf("net/ipv4/conf/gw-br1/send_redirects"), Some(("gw-br1", Ipv4Conf::SendRedirects)));
        assert_eq!(ipv4_link_conf("net/ipv4/conf/veth15.1/send_redirects"), Some(("veth15.1", Ipv4Conf::SendRedirects)));
        for key in [
            "net/ipv4/conf/all/send_redirects",
            "net/ipv4/conf/default/send_redirects",
            "net/ipv4/conf/gw-br1/rp_filter",
            "net/ipv6/conf/gw-br1/disable_ipv6",
            "net/ipv4/ip_forward",
        ] {
            assert_eq!(ipv4_link_conf(key), None, "{key}");
        }
    }
}
