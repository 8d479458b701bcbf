//! Routes vxrouter owns: the router namespace's default routes through the
//! public leg (IPv4, and IPv6 with `gateway6`), stamped with rtm_protocol 118
//! ("proto 118" in `ip route`).

use serde::Serialize;

use super::Kind;
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::{Ns, RTPROT_VXROUTER, Route};
use crate::plan::{Order, Planner, Step, Verb, in_ns};
use crate::profile::{Profile, cidr};
use ipnet::{IpNet, Ipv6Net};
use std::net::IpAddr;

pub struct Routes;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WantedRoute {
    pub ns: Ns,
    pub dst: IpNet,
    pub gateway: IpAddr,
    pub dev: String,
    pub protocol: u8,
}

impl Kind for Routes {
    const NAME: &'static str = "routes";
    type Item = WantedRoute;
    type Seen = ();

    fn desire(p: &Profile, _f: &Facts) -> Vec<WantedRoute> {
        // A high-availability router's default route is keepalived's (it
        // comes and goes with the public address).
        let Some(r) = p.router.as_ref().filter(|r| r.ha.is_none()) else { return vec![] };
        let route = |dst: IpNet, gateway: IpAddr| WantedRoute {
            ns: Ns::Named(r.namespace.clone()),
            dst,
            gateway,
            dev: r.public.leg.veth[1].clone(),
            protocol: RTPROT_VXROUTER,
        };
        let mut out = vec![route(cidr::any().into(), r.public.gateway.into())];
        if let Some(g6) = r.public.gateway6 {
            out.push(route(IpNet::V6(Ipv6Net::default()), g6.into()));
        }
        out
    }

    fn plan(p: &mut Planner<'_>, want: &[WantedRoute], _: &()) {
        for r in want {
            let view = p.view(&r.ns);
            let dev = p.live(&r.ns, &r.dev).map(|l| l.index);
            let existing: Vec<Route> =
                view.map(|v| v.routes.iter().filter(|x| x.dst == r.dst).cloned().collect()).unwrap_or_default();
            let matches = existing.len() == 1
                && existing[0].gateway == Some(r.gateway)
                && dev.is_some()
                && existing[0].oif == dev
                && existing[0].protocol == r.protocol;
            // Removing an address takes the routes through its subnet with
            // it: a route whose device loses an address is added again.
            let readd = p.readdressed.contains(&(r.ns.clone(), r.dev.clone()));
            if matches && !readd {
                continue;
            }
            let found = if matches {
                Some(format!("the same, re-added as the addresses of {} change", r.dev))
            } else {
                existing.first().map(|x| {
                    let dev = x.oif.and_then(|i| view.and_then(|v| v.by_index(i))).map(|l| l.name.clone()).unwrap_or("?".into());
                    match x.gateway {
                        Some(g) => format!("via {g} dev {dev} proto {}", x.protocol),
                        None => format!("dev {dev} proto {}", x.protocol),
                    }
                })
            };
            p.push(Order::Late, SetRoute { route: r.clone(), existing, found });
        }
    }
}

/// Adds the route, replacing those to the same destination (`existing`,
/// which undo puts back).
#[derive(Debug, Serialize)]
pub struct SetRoute {
    pub route: WantedRoute,
    pub existing: Vec<Route>,
    pub found: Option<String>,
}

impl Step for SetRoute {
    fn action(&self) -> &'static str {
        "set_route"
    }
    fn verb(&self) -> Verb {
        if self.existing.is_empty() { Verb::Create } else { Verb::Change }
    }
    fn object(&self) -> String {
        let r = &self.route;
        let dst = if r.dst.prefix_len() == 0 { "default".to_string() } else { r.dst.trunc().to_string() };
        format!("route {dst} via {} dev {}{}", r.gateway, r.dev, in_ns(&r.ns))
    }
    fn detail(&self) -> String {
        self.found.as_ref().map(|f| format!("found {f}")).unwrap_or_default()
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        let r = &self.route;
        let oif = cx.resolve(&r.ns, &r.dev)?;
        let new = Route { dst: r.dst, gateway: Some(r.gateway), oif: Some(oif), protocol: r.protocol };
        let sock = cx.sock(&r.ns)?;
        // Replace first: NLM_F_REPLACE swaps the route with the same
        // destination and metric in one operation, so traffic never finds
        // no default route (deleting first left a gap, which adopting a
        // hand-built router under load must not have). Routes it did not
        // replace (another metric) are deleted after; the replaced one is
        // gone already (ESRCH, which del_route treats as done), and one
        // identical to the new route is not deleted.
        let dst = if r.dst.prefix_len() == 0 { "default".to_string() } else { r.dst.to_string() };
        let added =
            sock.replace_route(&new).with_context(|| format!("add route {dst} via {} dev {} in {}", r.gateway, r.dev, r.ns));
        cx.undo_with(PutBack { ns: r.ns.clone(), added: added.is_ok().then_some(new.clone()), existing: self.existing.clone() });
        added?;
        let sock = cx.sock(&r.ns)?;
        for old in self.existing.iter().filter(|old| **old != new) {
            sock.del_route(old).with_context(|| format!("remove old route to {} in {}", old.dst, r.ns))?;
        }
        Ok(())
    }
}

#[derive(Debug)]
struct PutBack {
    ns: Ns,
    added: Option<Route>,
    existing: Vec<Route>,
}

impl Undo for PutBack {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        let sock = cx.sock(&self.ns)?;
        if let Some(r) = &self.added {
            sock.del_route(r).with_context(|| format!("remove route in {}", self.ns))?;
        }
        for r in &self.existing {
            sock.replace_route(r).with_context(|| format!("restore route in {}", self.ns))?;
        }
        Ok(())
    }
}
