//! The object kinds vxrouter manages, one module each. A kind's module holds
//! its whole life: what the profile wants of it (`desire`, pure), how to read
//! it from the host beyond the link, address and route dumps every namespace
//! view has (`observe`), the comparison that yields steps (`plan`), how each
//! step reads in plan and check output, and how it is applied and undone.
//!
//! The planner and executor only order and dispatch: adding a kind is a new
//! module here plus one line in [`KINDS`] (docs/design.md walks through it
//! with the FDB kind).

pub mod address;
pub mod bridge;
pub mod conntrack;
pub mod conntrackd;
pub mod dhcp;
pub mod fdb;
pub mod firewall;
pub mod frr;
pub mod ha_link;
pub mod hand_nat;
pub mod keepalived;
pub mod link;
pub mod loopback;
pub mod namespace;
pub mod route;
pub mod sysctl;
pub mod uplink;
pub mod uplink_addrs;
pub mod veth;
pub mod vxlan;

use std::any::{Any, TypeId};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::desired::Desired;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::netlink::Session;
use crate::observe::Observed;
use crate::plan::Planner;
use crate::profile::Profile;
use crate::scope::Scope;

/// One kind of object.
pub trait Kind: 'static {
    /// Its key in `observed.json`.
    const NAME: &'static str;
    /// One object of this kind the profile wants.
    type Item: Clone + Debug + Send + Sync + 'static;
    /// What observation found of this kind beyond the namespace views.
    type Seen: Clone + Debug + Default + Serialize + DeserializeOwned + Send + Sync + 'static;

    /// The objects the profile wants, given what the host says. Pure.
    fn desire(p: &Profile, f: &Facts) -> Vec<Self::Item>;

    /// Reads this kind's objects from the host (only what `plan` needs).
    fn observe(_cx: &mut ObserveCx<'_>) -> Result<Self::Seen> {
        Ok(Self::Seen::default())
    }

    /// Compares what is wanted with what was found: steps, conflicts, notes.
    fn plan(p: &mut Planner<'_>, want: &[Self::Item], seen: &Self::Seen);
}

/// What a kind's `observe` may look at: the session, what to read, what is
/// wanted, and what was observed so far (the namespace views and the kinds
/// before it).
pub struct ObserveCx<'a> {
    pub session: &'a mut Session,
    pub scope: &'a Scope,
    pub desired: &'a Desired,
    pub observed: &'a Observed,
}

/// The registry: every kind, in the order it is desired, observed and
/// planned (which is also the order of steps within a stage).
pub static KINDS: &[&dyn Registered] = &[
    &reg::<namespace::Namespace>(),
    &reg::<link::Links>(),
    &reg::<uplink::Uplinks>(),
    &reg::<uplink_addrs::UplinkAddrs>(),
    &reg::<address::Addresses>(),
    &reg::<route::Routes>(),
    &reg::<fdb::Fdb>(),
    &reg::<sysctl::Sysctls>(),
    &reg::<dhcp::Dhcp>(),
    &reg::<firewall::Firewall>(),
    &reg::<hand_nat::HandNat>(),
    // After the firewall, whose ruleset loads connection tracking.
    &reg::<conntrack::Conntrack>(),
    // conntrackd first: keepalived's notify script talks to it.
    &reg::<conntrackd::Conntrackd>(),
    &reg::<keepalived::Keepalived>(),
    // After the links: zebra finds the VXLAN links when bgpd advertises.
    &reg::<frr::Frr>(),
];

/// A kind behind the registry's uniform face.
pub trait Registered: Sync {
    fn name(&self) -> &'static str;
    fn desire(&self, p: &Profile, f: &Facts, into: &mut Parts);
    fn nothing(&self, into: &mut Parts);
    fn observe(&self, cx: &mut ObserveCx<'_>) -> Result<Box<dyn Part>>;
    fn plan(&self, p: &mut Planner<'_>);
    fn seen_json(&self, parts: &Parts) -> Result<serde_json::Value>;
    fn seen_from_json(&self, v: serde_json::Value) -> Result<Box<dyn Part>>;
    fn key(&self) -> TypeId;
}

pub struct Reg<K>(PhantomData<fn() -> K>);

pub const fn reg<K: Kind>() -> Reg<K> {
    Reg(PhantomData)
}

impl<K: Kind> Registered for Reg<K> {
    fn name(&self) -> &'static str {
        K::NAME
    }
    fn key(&self) -> TypeId {
        TypeId::of::<K>()
    }
    fn desire(&self, p: &Profile, f: &Facts, into: &mut Parts) {
        into.insert::<K, _>(K::desire(p, f));
    }
    fn nothing(&self, into: &mut Parts) {
        into.insert::<K, _>(Vec::<K::Item>::new());
    }
    fn observe(&self, cx: &mut ObserveCx<'_>) -> Result<Box<dyn Part>> {
        Ok(Box::new(K::observe(cx)?))
    }
    fn plan(&self, p: &mut Planner<'_>) {
        let (d, o) = (p.d, p.o);
        let want = d.of::<K>();
        match o.parts.get::<K, K::Seen>() {
            Some(seen) => K::plan(p, want, seen),
            None => K::plan(p, want, &K::Seen::default()),
        }
    }
    fn seen_json(&self, parts: &Parts) -> Result<serde_json::Value> {
        Ok(match parts.get::<K, K::Seen>() {
            Some(s) => serde_json::to_value(s)?,
            None => serde_json::Value::Null,
        })
    }
    fn seen_from_json(&self, v: serde_json::Value) -> Result<Box<dyn Part>> {
        let seen: K::Seen = if v.is_null() { K::Seen::default() } else { serde_json::from_value(v).context(K::NAME)? };
        Ok(Box::new(seen))
    }
}

/// A kind's data (its wanted items, or what was seen of it).
pub trait Part: Any + Debug + Send + Sync {
    fn into_any(self: Box<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<T: Any + Debug + Send + Sync> Part for T {
    fn into_any(self: Box<Self>) -> Arc<dyn Any + Send + Sync> {
        Arc::new(*self)
    }
}

/// Per-kind data keyed by kind, so that a kind brings its own types and
/// `Desired` and `Observed` need no field for it.
#[derive(Clone, Default)]
pub struct Parts(BTreeMap<TypeId, Arc<dyn Any + Send + Sync>>);

impl Parts {
    pub fn insert<K: 'static, T: Any + Send + Sync>(&mut self, value: T) {
        self.0.insert(TypeId::of::<K>(), Arc::new(value));
    }

    pub fn insert_part(&mut self, key: TypeId, part: Box<dyn Part>) {
        self.0.insert(key, part.into_any());
    }

    pub fn get<K: 'static, T: Any>(&self) -> Option<&T> {
        self.0.get(&TypeId::of::<K>()).and_then(|a| a.downcast_ref::<T>())
    }
}

impl Debug for Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Parts({} kinds)", self.0.len())
    }
}
