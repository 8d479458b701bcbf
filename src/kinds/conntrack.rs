//! The connection-tracking settings of a high-availability router's
//! namespace (`[router.ha]`): TCP window tracking is liberal there when
//! connections are synced (`conntrack_sync`, the default), strict otherwise.
//!
//! Why: conntrackd syncs a connection's state changes, not every packet's
//! sequence numbers. The entries it commits on a takeover carry no window
//! (conntrackd's `TCPWindowTracking Off`), but the entries the kernel made
//! itself keep the window of the last packet that router saw. After a
//! split brain (both routers active while the HA link is cut, the traffic
//! on the one the VMs' ARP caches last pointed at) the higher-priority
//! router is active again with entries whose windows are seconds old: a
//! conversation's next segments are out of window, `ct state invalid`, and
//! the firewall drops them — the lab's partition cell saw a client-speaks
//! conversation die that way every time. Liberal tracking
//! (`nf_conntrack_tcp_be_liberal` 1, per namespace) accepts out-of-window
//! segments of a known connection and still marks out-of-window RSTs
//! invalid; the VM's own TCP checks sequence numbers (docs/security.md,
//! "Router HA").
//!
//! Its own kind, after the firewall: the setting exists once the kernel's
//! connection tracking is loaded, which the router's ruleset (source NAT,
//! `ct state`) does on a host where nothing loaded it before.

use std::collections::BTreeMap;

use super::sysctl::{self, SetSysctl, Sysctl};
use super::{Kind, ObserveCx};
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::model::Ns;
use crate::plan::{Order, Planner};
use crate::profile::Profile;

pub struct Conntrack;

const TCP_LIBERAL: &str = "net/netfilter/nf_conntrack_tcp_be_liberal";

impl Kind for Conntrack {
    const NAME: &'static str = "conntrack";
    type Item = Sysctl;
    /// Per router namespace looked into: key → value.
    type Seen = Vec<(Ns, BTreeMap<String, String>)>;

    fn desire(p: &Profile, _f: &Facts) -> Vec<Sysctl> {
        let Some(r) = &p.router else { return vec![] };
        let Some(ha) = &r.ha else { return vec![] };
        let value = if ha.conntrack_sync { "1" } else { "0" };
        vec![Sysctl { ns: Ns::Named(r.namespace.clone()), key: TCP_LIBERAL.into(), value: value.into() }]
    }

    fn observe(cx: &mut ObserveCx<'_>) -> Result<Self::Seen> {
        let mut out = Vec::new();
        for s in cx.desired.of::<Conntrack>() {
            let Ns::Named(name) = &s.ns else { continue };
            if !cx.observed.named.contains_key(name) {
                continue;
            }
            let values = sysctl::read(cx.session.file(&s.ns)?, &[s.key.as_str()])
                .with_context(|| format!("read {} in {}", s.key, s.ns))?;
            out.push((s.ns.clone(), values));
        }
        Ok(out)
    }

    fn plan(p: &mut Planner<'_>, want: &[Sysctl], seen: &Self::Seen) {
        for s in want {
            let old = sysctl::found_value(p, seen, s);
            if old.as_deref() != Some(s.value.as_str()) {
                p.push(Order::Late, SetSysctl { sysctl: s.clone(), old });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped HA router profile, with connection sync as asked.
    fn ha_profile(sync: bool) -> Profile {
        let text = include_str!("../../profiles/ha/router-a.toml")
            .replace("# conntrack_sync = true", &format!("conntrack_sync = {sync}"));
        Profile::parse("router-a.toml", &text).expect("valid profile")
    }

    #[test]
    fn synced_ha_routers_track_tcp_windows_liberally_and_others_strictly() {
        let f = Facts::default();
        let want = |sync| Conntrack::desire(&ha_profile(sync), &f);
        assert_eq!(want(true)[0].value, "1");
        assert_eq!(want(false)[0].value, "0");
        assert_eq!(want(true)[0].ns, Ns::Named("ns1".into()));
        let mut plain = ha_profile(true);
        if let Some(r) = plain.router.as_mut() {
            r.ha = None;
        }
        assert!(Conntrack::desire(&plain, &f).is_empty(), "no HA: the kernel's default is left alone");
    }
}
