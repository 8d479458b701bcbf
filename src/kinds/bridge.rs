//! Bridges: one per segment (VM taps, the VXLAN link and the router's
//! private leg are its ports) and the public bridge (the uplink NIC and the
//! router's public leg). Created down with IPv6 address generation off, so
//! the hypervisor gets no address on a tenant segment, then raised.

use crate::desired::{DEFAULT_FORWARD_DELAY_CS, overhead, segment_mtu, underlay_mtu};
use crate::facts::Facts;
use crate::model::{BridgeSpec, Link, LinkKind, LinkSpec, Ns};
use crate::plan::Diff;
use crate::profile::Profile;
use crate::profile::names::stable_mac;

use super::link::LinkChange;

/// Segment bridges, then the public bridge.
pub fn desire(p: &Profile, f: &Facts, out: &mut Vec<(Ns, LinkSpec)>) {
    let bridge = |name: &str, spec: BridgeSpec, mtu: Option<u32>| LinkSpec {
        name: name.to_string(),
        kind: LinkKind::Bridge(spec),
        mtu,
        master: None,
        up: true,
        mac: Some(stable_mac(&p.host, "", name)),
        no_ipv6: true,
        port: None,
    };
    for s in &p.segments {
        let spec = BridgeSpec { stp: s.stp, forward_delay: s.forward_delay.map(|d| d * 100).unwrap_or(DEFAULT_FORWARD_DELAY_CS) };
        out.push((Ns::Host, bridge(&s.bridge, spec, Some(segment_mtu(s.mtu, underlay_mtu(f), overhead(p))))));
    }
    if let Some(r) = &p.router {
        let spec = BridgeSpec { stp: false, forward_delay: DEFAULT_FORWARD_DELAY_CS };
        out.push((Ns::Host, bridge(&r.public.leg.bridge, spec, None)));
    }
}

/// STP and forward delay change in place. The forward delay counts only
/// with STP on: without STP a port forwards at once. It is not even
/// settable then: the kernel reports the delay the STP root last announced
/// (a bridge built by hand with STP on, adopted and turned off, keeps
/// showing its root's value whatever is written).
pub fn diff(want: &BridgeSpec, found: &Link, change: &mut LinkChange, diffs: &mut Vec<Diff>) {
    let mut fb = found.bridge.clone().unwrap_or(BridgeSpec { stp: false, forward_delay: 0 });
    if !want.stp && !fb.stp {
        fb.forward_delay = want.forward_delay;
    }
    if fb == *want {
        return;
    }
    change.bridge = Some(want.clone());
    if fb.stp != want.stp {
        diffs.push(Diff { field: "stp", expected: on_off(want.stp), found: on_off(fb.stp) });
    }
    if want.stp && fb.forward_delay != want.forward_delay {
        diffs.push(Diff {
            field: "forward_delay",
            expected: format!("{}s", want.forward_delay / 100),
            found: format!("{}s", fb.forward_delay / 100),
        });
    }
}

/// What a new bridge's plan line says beyond the common attributes.
pub fn describe(b: &BridgeSpec) -> Option<String> {
    b.stp.then(|| format!("stp on, forward_delay {}s", b.forward_delay / 100))
}

/// The specification to recreate a deleted bridge as it was.
pub fn as_found(l: &Link) -> LinkKind {
    LinkKind::Bridge(l.bridge.clone().unwrap_or(BridgeSpec { stp: false, forward_delay: DEFAULT_FORWARD_DELAY_CS }))
}

fn on_off(b: bool) -> String {
    if b { "on".into() } else { "off".into() }
}
