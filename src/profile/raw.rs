//! The profile exactly as written: serde types with source spans.
//!
//! Numbers are read as `i64` and strings as `String` on purpose: range and
//! format checks happen in `validate`, so a bad value gets our message
//! ("vni 0 is out of range 1-16777215") and its location, not serde's
//! ("invalid value: integer `0`, expected u32").

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a profile")]
pub struct RawProfile {
    pub host: S<RawHost>,
    pub underlay: Option<S<RawUnderlay>>,
    #[serde(default)]
    pub segment: Vec<S<RawSegment>>,
    pub router: Option<S<RawRouter>>,
    pub evpn: Option<S<RawEvpn>>,
}

/// `[evpn]`: the BGP EVPN control plane (FRR) of the `control = "evpn"`
/// segments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [evpn] table")]
pub struct RawEvpn {
    pub asn: S<i64>,
    pub reflectors: S<Vec<S<String>>>,
    pub reflector: Option<S<bool>>,
    pub listen: Option<S<String>>,
    pub expect_clients: Option<S<Vec<S<String>>>>,
    pub hold_time: Option<S<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [host] table")]
pub struct RawHost {
    pub name: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [underlay] table")]
pub struct RawUnderlay {
    pub device: S<String>,
    pub local: Option<S<String>>,
    pub allow: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[segment]] table")]
pub struct RawSegment {
    pub bridge: S<String>,
    pub vni: S<i64>,
    pub group: Option<S<String>>,
    pub peers: Option<S<Vec<S<String>>>>,
    pub vxlan: Option<S<String>>,
    pub ageing: Option<S<i64>>,
    pub port: Option<S<i64>>,
    pub mtu: Option<S<i64>>,
    pub ttl: Option<S<i64>>,
    pub stp: Option<S<bool>>,
    pub forward_delay: Option<S<i64>>,
    pub control: Option<S<String>>,
    pub neigh_suppress: Option<S<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [router] table")]
pub struct RawRouter {
    pub namespace: S<String>,
    pub nat: Option<S<String>>,
    pub nat6: Option<S<String>>,
    pub firewall: Option<S<String>>,
    pub route_between_segments: Option<S<bool>>,
    pub public: S<RawPublic>,
    #[serde(default)]
    pub private: Vec<S<RawPrivate>>,
    #[serde(default)]
    pub forward: Vec<S<RawForward>>,
    pub ha: Option<S<RawHa>>,
}

/// `[router.ha]`: two router hosts, one active (VRRP), connections synced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [router.ha] table")]
pub struct RawHa {
    pub vrid: S<i64>,
    pub priority: S<i64>,
    pub peer: S<String>,
    pub advert_interval: Option<S<Number>>,
    pub preempt_delay: Option<S<i64>>,
    pub conntrack_sync: Option<S<bool>>,
    pub track_uplink: Option<S<bool>>,
    pub vni: Option<S<i64>>,
    pub link: Option<S<String>>,
}

/// A TOML number as written: `1` and `0.1` are both fine where seconds are
/// asked for.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged, expecting = "a number of seconds, like 0.1")]
pub enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[router.forward]] table")]
pub struct RawForward {
    pub proto: S<String>,
    pub port: S<i64>,
    pub to: S<String>,
    pub to6: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [router.public] table")]
pub struct RawPublic {
    pub bridge: S<String>,
    pub uplink: S<String>,
    pub address: S<String>,
    pub gateway: S<String>,
    pub veth: Option<S<Vec<S<String>>>>,
    pub uplink_addresses: Option<S<String>>,
    pub address6: Option<S<String>>,
    pub gateway6: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[router.private]] table")]
pub struct RawPrivate {
    pub bridge: S<String>,
    pub address: S<String>,
    pub veth: Option<S<Vec<S<String>>>>,
    pub dhcp: Option<S<RawDhcp>>,
    pub dns: Option<S<bool>>,
    pub address6: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table { range = \"A-B\", lease = \"12h\" }")]
pub struct RawDhcp {
    pub range: S<String>,
    pub lease: Option<S<String>>,
}
