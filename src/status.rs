//! `vxrouter status`: what vxrouter has applied on this machine, host name by
//! host name, without naming a profile: the profile and whether it changed
//! since, when it was applied, the segments and the router as the kernel
//! shows them, and the drift a `check` would report.

use std::path::Path;

use serde::Serialize;

use crate::kinds::conntrackd::Conntrackd;
use crate::kinds::dhcp::Dhcp;
use crate::kinds::keepalived::Keepalived;
use crate::model::Ns;
use crate::observe::Observed;
use crate::plan::{self, PlanOptions};
use crate::profile::{Flood, Profile};
use crate::state::{self, State};

#[derive(Debug, Serialize)]
pub struct HostStatus {
    pub host: String,
    pub profile: Option<String>,
    /// The hash (FNV-1a, hex) of the profile text that was applied.
    pub profile_hash: Option<String>,
    /// The profile file's text is what was applied (None: unknown).
    pub profile_unchanged: Option<bool>,
    /// When it was applied, RFC 3339 (UTC).
    pub applied: Option<String>,
    pub segments: Vec<SegmentStatus>,
    pub router: Option<RouterStatus>,
    /// Differences `check` reports (None: the profile cannot be read).
    pub drift: Option<Vec<String>>,
    pub problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SegmentStatus {
    pub bridge: String,
    pub vni: u32,
    /// "group 239.0.4.46" or "peers 10.0.0.2, 10.0.0.3".
    pub flood: String,
    pub mtu: Option<u32>,
    /// Ports of the bridge (VM taps, the VXLAN link, the router leg).
    pub ports: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct RouterStatus {
    pub namespace: String,
    pub exists: bool,
    /// "203.0.113.123/24 on veth15.1".
    pub addresses: Vec<String>,
    pub firewall: Vec<String>,
    /// "dnsmasq pid 1234 on veth17.1".
    pub daemons: Vec<String>,
    /// A high-availability router (`[router.ha]`).
    pub ha: Option<HaStatus>,
}

#[derive(Debug, Serialize)]
pub struct HaStatus {
    /// "active" (holds the public and gateway addresses), "backup"
    /// (keepalived runs without them) or "down" (keepalived does not run).
    pub role: &'static str,
    pub vrid: u8,
    pub priority: u8,
    pub peer: String,
    /// The last state change keepalived reported, "<unix time> <STATE>".
    pub last_transition: Option<String>,
}

/// The status of one host name, from its state and, if its profile can be
/// read, the host observed against it (`observe` does that: engine).
pub fn of(st: &State, profile: Option<&Profile>, observed: Option<&Observed>, drift: Option<Vec<String>>) -> HostStatus {
    let applied = st.applied.map(rfc3339);
    let unchanged = match (&st.profile, &st.profile_hash) {
        (Some(p), Some(h)) => Some(state::profile_hash(p).as_deref() == Some(h.as_str())),
        _ => None,
    };
    let mut segments = Vec::new();
    let mut router = None;
    if let (Some(p), Some(o)) = (profile, observed) {
        for s in &p.segments {
            let bridge = o.host.link(&s.bridge);
            let ports = bridge
                .map(|b| o.host.links.iter().filter(|l| l.master == Some(b.index)).map(|l| l.name.clone()).collect())
                .unwrap_or_default();
            let flood = match &s.flood {
                Flood::Multicast(g) => format!("group {g}"),
                Flood::Unicast(peers) => {
                    format!("peers {}", peers.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "))
                }
                Flood::Evpn => "evpn".to_string(),
            };
            segments.push(SegmentStatus { bridge: s.bridge.clone(), vni: s.vni, flood, mtu: bridge.map(|b| b.mtu), ports });
        }
        if let Some(r) = &p.router {
            let view = o.named.get(&r.namespace);
            let addresses = view
                .map(|v| {
                    v.addrs
                        .iter()
                        .filter_map(|a| v.by_index(a.index).filter(|l| !l.loopback).map(|l| format!("{} on {}", a.cidr, l.name)))
                        .collect()
                })
                .unwrap_or_default();
            let ns = Ns::Named(r.namespace.clone());
            let firewall = st
                .firewall
                .get(&state::fw_key(&ns))
                .map(|b| b.iter().map(|b| b.name().to_string()).collect())
                .unwrap_or_default();
            let daemons: Vec<String> = o
                .seen::<Dhcp>()
                .map(|d| {
                    d.iter()
                        .filter(|r| r.ns == ns.label())
                        .map(|r| match r.pid {
                            Some(pid) => format!("dnsmasq pid {pid} on {}", r.leg),
                            None => format!("dnsmasq on {} (not running)", r.leg),
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut daemons = daemons;
            for (name, pid) in ha_daemons(o, &r.namespace) {
                daemons.push(match pid {
                    Some(pid) => format!("{name} pid {pid}"),
                    None => format!("{name} (not running)"),
                });
            }
            let ha = r.ha.as_ref().map(|h| {
                let role = crate::kinds::keepalived::role(p, o, o.seen::<Keepalived>()).map(|r| r.as_str()).unwrap_or("down");
                let transitions = crate::kinds::keepalived::Files::new(&o.facts.run_dir, &p.host).transitions(&r.namespace);
                let last_transition =
                    std::fs::read_to_string(transitions).ok().and_then(|t| t.lines().last().map(str::to_string));
                HaStatus { role, vrid: h.vrid, priority: h.priority, peer: h.peer.to_string(), last_transition }
            });
            router =
                Some(RouterStatus { namespace: r.namespace.clone(), exists: view.is_some(), addresses, firewall, daemons, ha });
        }
    }
    let problem = match (&st.profile, profile) {
        (None, _) => Some("the profile that applied this host name is not recorded".to_string()),
        (Some(p), None) => Some(format!("profile {p} cannot be read: drift unknown")),
        _ => None,
    };
    HostStatus {
        host: st.host.clone(),
        profile: st.profile.clone(),
        profile_hash: st.profile_hash.clone(),
        profile_unchanged: unchanged,
        applied,
        segments,
        router,
        drift,
        problem,
    }
}

/// keepalived and conntrackd of a router namespace, with their pids.
fn ha_daemons(o: &Observed, ns: &str) -> Vec<(&'static str, Option<u32>)> {
    let mut out = Vec::new();
    for r in o.seen::<Conntrackd>().into_iter().flatten().filter(|r| r.ns == ns) {
        out.push(("conntrackd", r.pid));
    }
    for r in o.seen::<Keepalived>().into_iter().flatten().filter(|r| r.ns == ns) {
        out.push(("keepalived", r.pid));
    }
    out
}

/// The drift `check` would print, as lines.
pub fn drift(d: &crate::desired::Desired, o: &Observed) -> Vec<String> {
    match plan::plan(d, o, PlanOptions::default()) {
        Ok(p) => p.steps.iter().map(|s| format!("{}: {}", s.verb().status(), s.object())).collect(),
        Err(c) => vec![c.to_string()],
    }
}

/// Human text for one host.
pub fn text(s: &HostStatus) -> String {
    let mut out = format!("{}\n", s.host);
    if let Some(p) = &s.profile {
        let changed = match s.profile_unchanged {
            Some(true) => " (unchanged since applied)",
            Some(false) => " (changed since applied)",
            None => "",
        };
        let hash = s.profile_hash.as_deref().map(|h| format!(", hash {h}")).unwrap_or_default();
        out.push_str(&format!("  profile  {p}{changed}{hash}\n"));
    }
    if let Some(a) = &s.applied {
        out.push_str(&format!("  applied  {a}\n"));
    }
    for seg in &s.segments {
        let mtu = seg.mtu.map(|m| format!(", mtu {m}")).unwrap_or_default();
        out.push_str(&format!(
            "  segment  {}: vni {}, {}{mtu}; ports {}\n",
            seg.bridge,
            seg.vni,
            seg.flood,
            seg.ports.join(", ")
        ));
    }
    if let Some(r) = &s.router {
        let missing = if r.exists { "" } else { " (missing)" };
        out.push_str(&format!("  router   namespace {}{missing}: {}\n", r.namespace, r.addresses.join(", ")));
        if !r.firewall.is_empty() {
            out.push_str(&format!("           firewall {}\n", r.firewall.join(", ")));
        }
        if let Some(h) = &r.ha {
            let last = h.last_transition.as_deref().map(|t| format!("; last change {t}")).unwrap_or_default();
            out.push_str(&format!(
                "           ha {} (vrid {}, priority {}, peer {}){last}\n",
                h.role, h.vrid, h.priority, h.peer
            ));
        }
        for d in &r.daemons {
            out.push_str(&format!("           {d}\n"));
        }
    }
    match &s.drift {
        Some(d) if d.is_empty() => out.push_str("  drift    none\n"),
        Some(d) => {
            out.push_str(&format!("  drift    {} difference(s):\n", d.len()));
            for l in d {
                out.push_str(&format!("             {l}\n"));
            }
        }
        None => {}
    }
    if let Some(p) = &s.problem {
        out.push_str(&format!("  note     {p}\n"));
    }
    out
}

/// "2026-12-01T10:00:00Z" for seconds since the epoch (UTC).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// The host names with state on this machine.
pub fn hosts(dir: &Path) -> Vec<State> {
    State::others(dir, "")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(1_796_114_096), "2026-12-01T08:34:56Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
