//! Addresses of the router legs, inside the router namespace: the public
//! address and each segment's gateway address. A leg that gets its address
//! announces it (gratuitous ARP) once the run has succeeded.
//!
//! The hypervisor itself holds no address on a segment or on the public
//! bridge (docs/security.md): an address added by hand to a link vxrouter
//! owns on the host (IPv4, or IPv6 other than link-local) is drift, and
//! repair removes it. Link-local IPv6 addresses the kernel gives ports are
//! left alone: a bridge port does not use its own addresses. The exception
//! is a public bridge the host's addresses were moved to from the uplink
//! (`uplink_addresses = "move"`): its addresses are the host's.

use std::collections::HashMap;

use ipnet::IpNet;
use serde::Serialize;

use super::uplink_addrs::{UplinkAddrs, holds_host_addresses};
use super::{Kind, ha_link};
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::Ns;
use crate::netlink::IfExists;
use crate::plan::{Order, Planner, Step, Verb, in_ns};
use crate::profile::Profile;

pub struct Addresses;

/// An address wanted on a link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub ns: Ns,
    pub link: String,
    pub addr: IpNet,
    /// A virtual address of a high-availability router: keepalived adds it
    /// on the active router and removes it on the backup, so vxrouter
    /// neither adds nor removes it (kinds/keepalived.rs checks it).
    #[serde(skip)]
    pub vrrp: bool,
}

/// fe80::/10: made by the kernel for every IPv6-enabled link.
fn link_local(a: &IpNet) -> bool {
    matches!(a, IpNet::V6(n) if n.addr().segments()[0] & 0xffc0 == 0xfe80)
}

impl Kind for Addresses {
    const NAME: &'static str = "addresses";
    type Item = Address;
    type Seen = ();

    fn desire(p: &Profile, f: &Facts) -> Vec<Address> {
        let Some(r) = &p.router else { return vec![] };
        let ns = Ns::Named(r.namespace.clone());
        let vrrp = r.ha.is_some();
        let mut out: Vec<Address> = Vec::new();
        for l in std::iter::once(&r.public.leg).chain(&r.private) {
            out.push(Address { ns: ns.clone(), link: l.veth[1].clone(), addr: IpNet::V4(l.address), vrrp });
            if let Some(a6) = l.address6 {
                out.push(Address { ns: ns.clone(), link: l.veth[1].clone(), addr: IpNet::V6(a6), vrrp });
            }
        }
        if let Some(ha) = &r.ha {
            let local = super::vxlan::local_address(p, f);
            let link = ha.link.clone();
            out.push(Address { ns: ns.clone(), link: link.clone(), addr: IpNet::V4(ha_link::address(ha, local)), vrrp: false });
            out.push(Address { ns, link, addr: IpNet::V4(ha_link::virtual_address(ha)), vrrp: true });
        }
        out
    }

    /// Per link: addresses it has that are not wanted go, wanted ones come;
    /// on the host's owned links, none is wanted.
    fn plan(p: &mut Planner<'_>, want: &[Address], _: &()) {
        let mut per_link: Vec<(&Ns, &str, Vec<IpNet>)> = Vec::new();
        // Where each link is in `per_link` (a scan per address was
        // quadratic at N = 1000).
        let mut at: HashMap<(&Ns, &str), usize> = HashMap::new();
        let host = Ns::Host;
        // A public bridge that took over the host's addresses from its
        // uplink (`uplink_addresses = "move"`) holds them by the profile's
        // choice: they are the host's, not drift (kinds/uplink_addrs.rs).
        let host_held = p.d.of::<UplinkAddrs>();
        for (ns, spec) in p.d.links() {
            if *ns == Ns::Host
                && p.live(ns, &spec.name).is_some_and(|l| p.owned(l))
                && !holds_host_addresses(host_held, &spec.name)
            {
                at.insert((&host, &spec.name), per_link.len());
                per_link.push((&host, &spec.name, vec![]));
            }
        }
        for a in want.iter().filter(|a| !a.vrrp) {
            match at.get(&(&a.ns, a.link.as_str())) {
                Some(i) => per_link[*i].2.push(a.addr),
                None => {
                    at.insert((&a.ns, &a.link), per_link.len());
                    per_link.push((&a.ns, &a.link, vec![a.addr]));
                }
            }
        }
        for a in want.iter().filter(|a| a.vrrp) {
            if !at.contains_key(&(&a.ns, a.link.as_str())) {
                at.insert((&a.ns, &a.link), per_link.len());
                per_link.push((&a.ns, &a.link, vec![]));
            }
        }
        // keepalived's to add and remove, whichever router is active.
        let vrrp_held: std::collections::HashSet<(&Ns, &str, IpNet)> =
            want.iter().filter(|a| a.vrrp).map(|a| (&a.ns, a.link.as_str(), a.addr)).collect();
        for (ns, link, wanted) in per_link {
            let vrrp = |x: &IpNet| vrrp_held.contains(&(ns, link, *x));
            let have: Vec<IpNet> = match (p.live(ns, link), p.view(ns)) {
                (Some(l), Some(v)) => v.addrs_of(l.index).map(|a| a.cidr).filter(|a| !link_local(a) && !vrrp(a)).collect(),
                _ => vec![],
            };
            for a in have.iter().filter(|a| !wanted.contains(a)) {
                p.readdressed.insert((ns.clone(), link.to_string()));
                p.push(Order::Late, DelAddr(Address { ns: ns.clone(), link: link.to_string(), addr: *a, vrrp: false }));
            }
            for a in wanted.iter().filter(|a| !have.contains(a)) {
                p.push(Order::Late, AddAddr(Address { ns: ns.clone(), link: link.to_string(), addr: *a, vrrp: false }));
            }
        }
    }
}

impl Address {
    fn object(&self) -> String {
        format!("address {} on {}{}", self.addr, self.link, in_ns(&self.ns))
    }

    fn add(&self, cx: &mut Apply<'_>, if_exists: IfExists) -> Result<()> {
        let index = cx.resolve(&self.ns, &self.link)?;
        cx.sock(&self.ns)?
            .add_addr(index, self.addr, if_exists)
            .with_context(|| format!("add address {} to {} in {}", self.addr, self.link, self.ns))
    }

    fn remove(&self, cx: &mut Apply<'_>) -> Result<bool> {
        let index = cx.resolve(&self.ns, &self.link)?;
        cx.sock(&self.ns)?
            .del_addr(index, self.addr)
            .with_context(|| format!("remove address {} from {} in {}", self.addr, self.link, self.ns))
    }
}

#[derive(Debug, Serialize)]
pub struct AddAddr(pub Address);

impl Step for AddAddr {
    fn action(&self) -> &'static str {
        "add_addr"
    }
    fn verb(&self) -> Verb {
        Verb::Create
    }
    fn object(&self) -> String {
        self.0.object()
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        self.0.add(cx, IfExists::Fail)?;
        cx.undo_with(Remove(self.0.clone()));
        cx.announce(&self.0.ns, &self.0.link);
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct DelAddr(pub Address);

impl Step for DelAddr {
    fn action(&self) -> &'static str {
        "del_addr"
    }
    fn verb(&self) -> Verb {
        Verb::Remove
    }
    fn object(&self) -> String {
        self.0.object()
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        if self.0.remove(cx)? {
            cx.undo_with(Add(self.0.clone()));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Remove(Address);

impl Undo for Remove {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        self.0.remove(cx).map(drop)
    }
}

#[derive(Debug)]
struct Add(Address);

impl Undo for Add {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        self.0.add(cx, IfExists::Replace)
    }
}
