//! Executes a plan: each step records its inverse in an undo journal; if a
//! step fails, the steps already taken are undone in reverse order and the
//! original error is returned.

use std::collections::HashMap;

use anyhow::{Context, Result, anyhow, bail};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::InfoVxlan;

use crate::desired::DesiredRoute;
use crate::firewall::{FirewallState, FwChange, iptables, nft};
use crate::model::{BridgeSpec, Link, LinkKind, LinkSpec, Ns, Route, VxlanSpec};
use crate::netlink::msg::{self, CreateCtx, SetLink};
use crate::netlink::{Netlink, NlError};
use crate::netns;
use crate::observe::{self, Session, write_sysctl};
use crate::plan::{Action, LinkChange, NsContents, Snapshot};
use crate::profile::Ipv4Cidr;
use crate::testhooks;

/// The inverse of one step.
#[derive(Debug, Clone)]
enum Undo {
    DeleteNetns(String),
    CreateNetns { name: String, contents: Box<NsContents> },
    DeleteLink { ns: Ns, name: String },
    RestoreLink(Box<Snapshot>),
    ChangeLink { ns: Ns, name: String, change: LinkChange },
    DelAddr { ns: Ns, link: String, addr: Ipv4Cidr },
    AddAddr { ns: Ns, link: String, addr: Ipv4Cidr },
    Routes { ns: Ns, remove: Option<Route>, restore: Vec<Route> },
    Sysctl { ns: Ns, key: String, value: String },
    Firewall { ns: Ns, changes: Vec<FwChange> },
    SetMaster { uplink: String, bridge: Option<String> },
    Fdb { vxlan: String, peer: std::net::Ipv4Addr, add: bool },
    Dhcp { ns: String, leg: String, config: Option<String> },
}

pub struct Executor<'a> {
    session: &'a mut Session,
    mark: String,
    /// The profile's host name (files of its dnsmasq instances).
    host: String,
    journal: Vec<Undo>,
    index: HashMap<(Ns, String), u32>,
    /// Links whose addresses get a gratuitous ARP once the run has succeeded.
    announcements: std::collections::BTreeSet<(Ns, String)>,
    /// Host ends of the veth pairs of namespaces this run deleted, which the
    /// kernel removes on its own time (see `await_vanished`).
    vanishing: Vec<String>,
    /// Problems found after the last step that undoing would not fix.
    pub warnings: Vec<String>,
    step: usize,
}

/// How long a deleted namespace may take to release its veth pairs.
const VANISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

fn nl(context: impl FnOnce() -> String) -> impl FnOnce(NlError) -> anyhow::Error {
    move |e| anyhow!("{}: {e}", context())
}

impl<'a> Executor<'a> {
    pub fn new(session: &'a mut Session, mark: &str, host: &str) -> Executor<'a> {
        Executor {
            session,
            mark: mark.to_string(),
            host: host.to_string(),
            journal: Vec::new(),
            index: HashMap::new(),
            announcements: Default::default(),
            vanishing: Vec::new(),
            warnings: Vec::new(),
            step: 0,
        }
    }

    /// Runs every action, printing each as it is done. On failure, undoes
    /// what this run did and returns the original error (with a note when
    /// the undo itself was incomplete).
    pub fn run(&mut self, actions: &[Action], mut progress: impl FnMut(&Action)) -> Result<()> {
        for a in actions {
            self.step += 1;
            let result = if testhooks::fail_step(self.step) {
                Err(anyhow!("injected fault before step {}", self.step))
            } else if testhooks::skip_step(self.step) {
                Ok(())
            } else {
                self.exec(a)
            };
            if let Err(e) = result {
                let e = e.context(a.title());
                let undo_errors = self.rollback();
                if undo_errors.is_empty() {
                    return Err(anyhow!("{e:#}\nrolled back: the host is as it was before this run"));
                }
                return Err(anyhow!(
                    "{e:#}\nrollback was incomplete, the host may differ from before this run:\n  {}",
                    undo_errors.join("\n  ")
                ));
            }
            progress(a);
        }
        let gone = std::mem::take(&mut self.vanishing);
        if let Err(e) = self.await_vanished(&gone) {
            self.warnings.push(format!("{e:#}"));
        }
        self.send_announcements();
        Ok(())
    }

    /// Waits until none of `names` is left in the host namespace. Deleting a
    /// namespace only drops its name: the kernel tears it down, veth pairs
    /// included, later on a workqueue, and not at all while a process (even
    /// a short-lived helper) is still inside. Verification, or recreating
    /// the pairs on undo, must not run before that.
    fn await_vanished(&mut self, names: &[String]) -> Result<()> {
        if names.is_empty() {
            return Ok(());
        }
        let wanted: std::collections::HashSet<&str> = names.iter().map(String::as_str).collect();
        let deadline = std::time::Instant::now() + VANISH_TIMEOUT;
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let links = observe::read_links(self.sock(&Ns::Host)?).map_err(nl(|| "list links".to_string()))?;
            let left: Vec<String> = links.into_iter().map(|l| l.name).filter(|n| wanted.contains(n.as_str())).collect();
            if left.is_empty() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "a deleted namespace's veth pairs ({}) are still here after {} s: a process may still be \
                     running inside that namespace (find it with `lsns -t net`)",
                    left.join(", "),
                    VANISH_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(std::time::Duration::from_millis(50));
        }
    }

    /// Undoes every journaled step in reverse order; returns what failed.
    pub fn rollback(&mut self) -> Vec<String> {
        let mut errors = Vec::new();
        while let Some(u) = self.journal.pop() {
            if let Err(e) = self.undo(&u) {
                errors.push(format!("{e:#}"));
            }
        }
        errors
    }

    fn sock(&mut self, ns: &Ns) -> Result<&mut Netlink> {
        self.session.sock(ns)
    }

    /// Resolves a link name to its ifindex in a namespace (cached).
    fn resolve(&mut self, ns: &Ns, name: &str) -> Result<u32> {
        if let Some(i) = self.index.get(&(ns.clone(), name.to_string())) {
            return Ok(*i);
        }
        let mut m = netlink_packet_route::link::LinkMessage::default();
        m.attributes.push(netlink_packet_route::link::LinkAttribute::IfName(name.to_string()));
        let replies = self.sock(ns)?.get(RouteNetlinkMessage::GetLink(m)).map_err(nl(|| format!("find link {name} in {ns}")))?;
        let idx = replies
            .iter()
            .find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })
            .ok_or_else(|| anyhow!("link {name} not found in {ns}"))?;
        self.index.insert((ns.clone(), name.to_string()), idx);
        Ok(idx)
    }

    fn forget(&mut self, ns: &Ns, name: &str) {
        self.index.remove(&(ns.clone(), name.to_string()));
    }

    fn exec(&mut self, a: &Action) -> Result<()> {
        match a {
            Action::CreateNetns { name } => {
                netns::create(name)?;
                self.journal.push(Undo::DeleteNetns(name.clone()));
                self.session.attach(name)?;
            }
            Action::DeleteNetns { name, contents } => {
                self.session.detach(name);
                netns::delete(name).with_context(|| format!("delete namespace {name}"))?;
                for leg in &contents.legs {
                    self.forget(&Ns::Host, &leg.link.name);
                    self.vanishing.push(leg.link.name.clone());
                }
                self.journal.push(Undo::CreateNetns { name: name.clone(), contents: contents.clone() });
            }
            Action::CreateLink { ns, spec, peer, replace, old, .. } => {
                for (rns, rname) in replace {
                    let restore = old.as_deref().filter(|o| &o.ns == rns && &o.link.name == rname).cloned();
                    self.delete_link(rns, rname, restore)?;
                }
                self.create_link(ns, spec, peer.as_ref())?;
            }
            Action::DeleteLink { ns, name, old, .. } => self.delete_link(ns, name, Some((**old).clone()))?,
            Action::ChangeLink { ns, name, change, old, old_master, .. } => {
                let undo = inverse_change(change, old, old_master);
                self.change_link(ns, name, change)?;
                self.journal.push(Undo::ChangeLink { ns: ns.clone(), name: name.clone(), change: undo });
                // A leg whose MAC came back or that came up: tell the segment.
                if (change.mac.is_some() || change.up == Some(true)) && *ns != Ns::Host && !old.loopback {
                    self.announce(ns, name);
                }
            }
            Action::AddAddr { ns, link, addr } => {
                let idx = self.resolve(ns, link)?;
                self.sock(ns)?
                    .request(msg::add_addr(idx, *addr), NLM_F_CREATE | NLM_F_EXCL)
                    .map_err(nl(|| format!("add address {addr} to {link} in {ns}")))?;
                self.journal.push(Undo::DelAddr { ns: ns.clone(), link: link.clone(), addr: *addr });
                self.announce(ns, link);
            }
            Action::DelAddr { ns, link, addr } => {
                let idx = self.resolve(ns, link)?;
                self.sock(ns)?
                    .request(msg::del_addr(idx, *addr), 0)
                    .map_err(nl(|| format!("remove address {addr} from {link} in {ns}")))?;
                self.journal.push(Undo::AddAddr { ns: ns.clone(), link: link.clone(), addr: *addr });
            }
            Action::SetRoute { ns, route, old, .. } => self.set_route(ns, route, old)?,
            Action::SetSysctl { ns, key, value, old } => {
                write_sysctl(self.session.file(ns)?, key, value).with_context(|| format!("in {ns}"))?;
                if let Some(old) = old {
                    self.journal.push(Undo::Sysctl { ns: ns.clone(), key: key.clone(), value: old.clone() });
                }
            }
            Action::Firewall { ns, changes, old, .. } => {
                self.firewall(ns, changes)?;
                self.journal.push(Undo::Firewall { ns: ns.clone(), changes: inverse_firewall(changes, old) });
            }
            Action::Enslave { uplink, bridge, from } => {
                self.set_master(uplink, Some(bridge))?;
                self.journal.push(Undo::SetMaster { uplink: uplink.clone(), bridge: from.clone() });
            }
            Action::Dhcp { ns, leg, config, running } => {
                self.dhcp(ns, leg, config.as_deref())?;
                self.journal.push(Undo::Dhcp { ns: ns.clone(), leg: leg.clone(), config: running.clone() });
            }
            Action::AddFdb { vxlan, peer } => {
                self.fdb(vxlan, *peer, true)?;
                self.journal.push(Undo::Fdb { vxlan: vxlan.clone(), peer: *peer, add: false });
            }
            Action::DelFdb { vxlan, peer } => {
                self.fdb(vxlan, *peer, false)?;
                self.journal.push(Undo::Fdb { vxlan: vxlan.clone(), peer: *peer, add: true });
            }
            Action::Release { uplink, bridge } => {
                self.set_master(uplink, None)?;
                self.journal.push(Undo::SetMaster { uplink: uplink.clone(), bridge: Some(bridge.clone()) });
            }
        }
        Ok(())
    }

    /// (Re)starts a leg's dnsmasq with `config`, or stops it (None).
    fn dhcp(&mut self, ns: &str, leg: &str, config: Option<&str>) -> Result<()> {
        crate::dhcp::stop(&self.host, ns, leg)?;
        if let Some(c) = config {
            let nsr = Ns::Named(ns.to_string());
            self.session.attach(ns)?;
            let file = self.session.file(&nsr)?.ok_or_else(|| anyhow!("namespace {ns} is not open"))?;
            crate::dhcp::start(&self.host, ns, file, leg, c)?;
        }
        Ok(())
    }

    /// One batch per backend: `iptables-restore` for the owned chains, one
    /// `nft -f` transaction for the owned table.
    fn firewall(&mut self, ns: &Ns, changes: &[FwChange]) -> Result<()> {
        let where_ = format!("namespace {ns}");
        if changes.iter().any(|c| !c.is_nft()) {
            iptables::restore(self.session.file(ns)?, &where_, &iptables::render(changes))?;
        }
        for c in changes {
            match c {
                FwChange::NftReplace { table, fresh, .. } => nft::apply(self.session.file(ns)?, &where_, Some(table), *fresh)?,
                FwChange::NftDelete => nft::apply(self.session.file(ns)?, &where_, None, false)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Queues gratuitous ARPs for the addresses `link` holds when the run
    /// has succeeded. They are sent from one packet socket per namespace
    /// (closing a packet socket waits for an RCU grace period: one per
    /// announcement would cost ~15 ms each).
    fn announce(&mut self, ns: &Ns, link: &str) {
        self.announcements.insert((ns.clone(), link.to_string()));
    }

    /// Best effort: an announcement that cannot be sent (link without
    /// carrier yet) only delays neighbours until they ask. One link dump and
    /// one address dump per namespace.
    fn send_announcements(&mut self) {
        let mut by_ns: std::collections::BTreeMap<Ns, Vec<String>> = Default::default();
        for (ns, link) in std::mem::take(&mut self.announcements) {
            by_ns.entry(ns).or_default().push(link);
        }
        for (ns, names) in by_ns {
            let Ok(sock) = self.sock(&ns) else { continue };
            let (Ok(links), Ok(addrs)) = (observe::read_links(sock), observe::read_addrs(sock)) else { continue };
            let frames: Vec<(u32, [u8; 6], std::net::Ipv4Addr)> = links
                .iter()
                .filter(|l| l.up && names.contains(&l.name))
                .filter_map(|l| Some((l.index, l.mac?)))
                .flat_map(|(index, mac)| addrs.iter().filter(move |a| a.index == index).map(move |a| (index, mac, a.cidr.addr)))
                .collect();
            if let Ok(file) = self.session.file(&ns) {
                let _ = crate::garp::announce_detached(file, &frames);
            }
        }
    }

    fn fdb(&mut self, vxlan: &str, peer: std::net::Ipv4Addr, add: bool) -> Result<()> {
        use netlink_packet_core::NLM_F_APPEND;
        let idx = self.resolve(&Ns::Host, vxlan)?;
        let sock = self.sock(&Ns::Host)?;
        let r = if add {
            sock.request(msg::add_fdb(idx, peer), NLM_F_CREATE | NLM_F_APPEND)
        } else {
            sock.request(msg::del_fdb(idx, peer), 0)
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if !add && e.is(libc::ENOENT) => Ok(()),
            Err(e) => Err(anyhow!("{} peer {peer} on {vxlan}: {e}", if add { "add" } else { "remove" })),
        }
    }

    fn set_master(&mut self, link: &str, bridge: Option<&String>) -> Result<()> {
        let idx = self.resolve(&Ns::Host, link)?;
        let master = match bridge {
            Some(b) => self.resolve(&Ns::Host, b)?,
            None => 0,
        };
        let set = SetLink { master: Some(master), ..SetLink::default() };
        self.sock(&Ns::Host)?.request(msg::set_link(idx, link, &set), 0).map_err(nl(|| match bridge {
            Some(b) => format!("enslave {link} to {b}"),
            None => format!("release {link} from its bridge"),
        }))
    }

    /// Creates a link (or veth pair), then marks it as owned. A link that must
    /// not get IPv6 link-local addresses is created down, marked, then raised.
    fn create_link(&mut self, ns: &Ns, spec: &LinkSpec, peer: Option<&(Ns, LinkSpec)>) -> Result<()> {
        let master = match &spec.master {
            Some(m) => Some(self.resolve(ns, m)?),
            None => None,
        };
        let vxlan_dev = match &spec.kind {
            LinkKind::Vxlan(v) => Some(self.resolve(&Ns::Host, &v.dev)?),
            _ => None,
        };
        let peer_file = match peer {
            Some((pns, _)) if pns != ns => self.session.file(pns)?.map(|f| f.try_clone()).transpose()?,
            _ => None,
        };
        let ctx = CreateCtx {
            master,
            vxlan_dev,
            peer_ns: peer_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
            peer: peer.map(|(_, p)| p.clone()),
        };
        let what = describe_create(spec, peer);
        self.sock(ns)?.request(msg::create(spec, &ctx), NLM_F_CREATE | NLM_F_EXCL).map_err(nl(|| format!("create {what}")))?;
        drop(peer_file);
        self.journal.push(Undo::DeleteLink { ns: ns.clone(), name: spec.name.clone() });
        self.mark_new(ns, spec, false)?;
        if let Some((pns, p)) = peer {
            self.mark_new(pns, p, true)?;
        }
        Ok(())
    }

    /// Sets the owner mark on a link just created, and raises it if it was
    /// created down (`created_down`: a veth peer, which cannot start up).
    fn mark_new(&mut self, ns: &Ns, spec: &LinkSpec, created_down: bool) -> Result<()> {
        let set = SetLink {
            alias: Some(self.mark.clone()),
            no_ipv6: spec.no_ipv6.then_some(true),
            up: (created_down && spec.up && !spec.no_ipv6).then_some(true),
            ..SetLink::default()
        };
        let name = spec.name.clone();
        self.sock(ns)?.request(msg::set_link(0, &name, &set), 0).map_err(nl(|| format!("mark {name} in {ns} as owned")))?;
        if spec.no_ipv6 && spec.up {
            let up = SetLink { up: Some(true), ..SetLink::default() };
            self.sock(ns)?.request(msg::set_link(0, &name, &up), 0).map_err(nl(|| format!("set {name} up in {ns}")))?;
        }
        Ok(())
    }

    /// Deletes a link by name; a link already gone (its veth peer or its
    /// namespace took it along) is fine. `restore` makes it undoable.
    fn delete_link(&mut self, ns: &Ns, name: &str, restore: Option<Snapshot>) -> Result<()> {
        if let Some(p) = restore.as_ref().and_then(|s| s.peer.as_ref()) {
            self.forget(&p.ns, &p.link.name);
        }
        match self.sock(ns)?.request(msg::del_link(0, name), 0) {
            Ok(()) => {
                if let Some(s) = restore {
                    self.journal.push(Undo::RestoreLink(Box::new(s)));
                }
            }
            Err(e) if e.is(libc::ENODEV) => {}
            Err(e) => return Err(anyhow!("delete {name} in {ns}: {e}")),
        }
        self.forget(ns, name);
        Ok(())
    }

    fn change_link(&mut self, ns: &Ns, name: &str, c: &LinkChange) -> Result<()> {
        let idx = self.resolve(ns, name)?;
        let master = match &c.master {
            Some(Some(m)) => Some(self.resolve(ns, m)?),
            Some(None) => Some(0),
            None => None,
        };
        // A new multicast group is joined when the link opens: flap it.
        let flap = c.vxlan_group.is_some() && c.up != Some(false);
        let mut kind_change = SetLink { bridge: c.bridge.clone(), ..SetLink::default() };
        let mut vx = Vec::new();
        if let Some(g) = c.vxlan_group {
            vx.push(InfoVxlan::Group(g));
        }
        if let Some(a) = c.vxlan_ageing {
            vx.push(InfoVxlan::Ageing(a));
        }
        if let Some(t) = c.vxlan_ttl {
            vx.push(InfoVxlan::Ttl(t));
        }
        if !vx.is_empty() {
            kind_change.vxlan = Some(vx);
        }
        let sock = self.session.sock(ns)?;
        if flap {
            let down = SetLink { up: Some(false), ..SetLink::default() };
            sock.request(msg::set_link(idx, name, &down), 0).map_err(nl(|| format!("set {name} down in {ns}")))?;
        }
        if kind_change.bridge.is_some() || kind_change.vxlan.is_some() {
            sock.request(msg::set_link(idx, name, &kind_change), 0).map_err(nl(|| format!("change {name} in {ns}")))?;
        }
        let plain = SetLink { alias: c.alias.clone(), mtu: c.mtu, master, mac: c.mac, no_ipv6: c.no_ipv6, ..SetLink::default() };
        if plain.alias.is_some()
            || plain.mtu.is_some()
            || plain.master.is_some()
            || plain.mac.is_some()
            || plain.no_ipv6.is_some()
        {
            sock.request(msg::set_link(idx, name, &plain), 0).map_err(nl(|| format!("change {name} in {ns}")))?;
        }
        let up = c.up.or(flap.then_some(true));
        if let Some(up) = up {
            let s = SetLink { up: Some(up), ..SetLink::default() };
            sock.request(msg::set_link(idx, name, &s), 0)
                .map_err(nl(|| format!("set {name} {} in {ns}", if up { "up" } else { "down" })))?;
        }
        Ok(())
    }

    fn set_route(&mut self, ns: &Ns, r: &DesiredRoute, old: &[Route]) -> Result<()> {
        let oif = self.resolve(ns, &r.dev)?;
        let new = Route { dst: r.dst, gateway: Some(r.gateway), oif: Some(oif), protocol: r.protocol };
        let sock = self.session.sock(ns)?;
        for o in old {
            match sock.request(msg::del_route(o), 0) {
                Ok(()) => {}
                Err(e) if e.is(libc::ESRCH) => {}
                Err(e) => return Err(anyhow!("remove old route to {} in {ns}: {e}", o.dst)),
            }
        }
        let dst = if r.dst.prefix == 0 { "default".to_string() } else { r.dst.to_string() };
        let res = sock
            .request(msg::new_route(&new), NLM_F_CREATE | NLM_F_REPLACE)
            .map_err(nl(|| format!("add route {dst} via {} dev {} in {ns}", r.gateway, r.dev)));
        self.journal.push(Undo::Routes { ns: ns.clone(), remove: res.is_ok().then_some(new), restore: old.to_vec() });
        res
    }

    fn undo(&mut self, u: &Undo) -> Result<()> {
        match u {
            Undo::DeleteNetns(name) => {
                self.session.detach(name);
                netns::delete(name).with_context(|| format!("undo: delete namespace {name}"))
            }
            Undo::CreateNetns { name, contents } => {
                let legs: Vec<String> = contents.legs.iter().map(|l| l.link.name.clone()).collect();
                self.await_vanished(&legs).context("undo")?;
                self.vanishing.retain(|v| !legs.contains(v));
                netns::create(name).with_context(|| format!("undo: recreate namespace {name}"))?;
                self.session.attach(name)?;
                let ns = Ns::Named(name.clone());
                let set = SetLink { alias: contents.mark.clone(), up: Some(true), ..SetLink::default() };
                self.sock(&ns)?.request(msg::set_link(0, "lo", &set), 0).map_err(nl(|| format!("undo: mark lo in {name}")))?;
                for leg in &contents.legs {
                    self.restore_link(leg)?;
                }
                for (k, v) in &contents.sysctls {
                    write_sysctl(self.session.file(&ns)?, k, v).context("undo")?;
                }
                if let Some(fw) = &contents.firewall {
                    let mut changes: Vec<FwChange> = Vec::new();
                    if let Some(ipt) = &fw.ipt {
                        changes.extend(ipt.chains.iter().map(|((table, chain), rules)| FwChange::SetChain {
                            table: table.clone(),
                            chain: chain.clone(),
                            rules: rules.clone(),
                            found: None,
                        }));
                        for ((table, hook), jumps) in &ipt.jumps {
                            changes.extend(jumps.iter().map(|rule| FwChange::AddJump {
                                table: table.clone(),
                                hook: hook.clone(),
                                rule: rule.clone(),
                            }));
                        }
                    }
                    // The namespace was just made again: it holds no table.
                    if let Some(t) = fw.nft.as_ref().and_then(|n| n.ours.clone()) {
                        changes.push(FwChange::NftReplace { table: t, why: vec![], fresh: true });
                    }
                    self.firewall(&ns, &changes).context("undo")?;
                }
                Ok(())
            }
            Undo::DeleteLink { ns, name } => self.delete_link(ns, name, None).context("undo"),
            Undo::RestoreLink(snapshot) => self.restore_link(snapshot),
            Undo::ChangeLink { ns, name, change } => {
                self.forget(ns, name);
                self.change_link(ns, name, change).context("undo")
            }
            Undo::DelAddr { ns, link, addr } => {
                let idx = self.resolve(ns, link)?;
                match self.sock(ns)?.request(msg::del_addr(idx, *addr), 0) {
                    Ok(()) => Ok(()),
                    Err(e) if e.is(libc::EADDRNOTAVAIL) => Ok(()),
                    Err(e) => Err(anyhow!("undo: remove address {addr} from {link} in {ns}: {e}")),
                }
            }
            Undo::AddAddr { ns, link, addr } => {
                let idx = self.resolve(ns, link)?;
                self.sock(ns)?
                    .request(msg::add_addr(idx, *addr), NLM_F_CREATE | NLM_F_REPLACE)
                    .map_err(nl(|| format!("undo: add address {addr} to {link} in {ns}")))
            }
            Undo::Routes { ns, remove, restore } => {
                let sock = self.sock(ns)?;
                if let Some(r) = remove {
                    match sock.request(msg::del_route(r), 0) {
                        Ok(()) => {}
                        Err(e) if e.is(libc::ESRCH) => {}
                        Err(e) => return Err(anyhow!("undo: remove route in {ns}: {e}")),
                    }
                }
                for r in restore {
                    sock.request(msg::new_route(r), NLM_F_CREATE | NLM_F_REPLACE)
                        .map_err(nl(|| format!("undo: restore route in {ns}")))?;
                }
                Ok(())
            }
            Undo::Sysctl { ns, key, value } => write_sysctl(self.session.file(ns)?, key, value).context("undo"),
            Undo::Firewall { ns, changes } => self.firewall(ns, changes).context("undo"),
            Undo::SetMaster { uplink, bridge } => self.set_master(uplink, bridge.as_ref()).context("undo"),
            Undo::Fdb { vxlan, peer, add } => self.fdb(vxlan, *peer, *add).context("undo"),
            Undo::Dhcp { ns, leg, config } => self.dhcp(ns, leg, config.as_deref()).context("undo"),
        }
    }

    /// Recreates a deleted link as it was: same kind, attributes, ifindex,
    /// MAC, master, state, alias, addresses and routes; a veth comes back as
    /// the same pair, its peer in the same namespace with its own index.
    fn restore_link(&mut self, s: &Snapshot) -> Result<()> {
        let l = &s.link;
        let ns = &s.ns;
        let kind = match l.kind.as_deref() {
            Some("bridge") => LinkKind::Bridge(
                l.bridge.clone().unwrap_or(BridgeSpec { stp: false, forward_delay: crate::desired::DEFAULT_FORWARD_DELAY_CS }),
            ),
            Some("vxlan") => {
                let v = l.vxlan.clone().unwrap_or_default();
                LinkKind::Vxlan(VxlanSpec {
                    vni: v.vni,
                    group: v.group,
                    dev: String::new(),
                    local: v.local.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                    port: v.port,
                    ageing: v.ageing,
                    ttl: v.ttl,
                })
            }
            Some("veth") if s.peer.is_some() => LinkKind::Veth(crate::model::VethPeer { peer: String::new(), peer_ns: Ns::Host }),
            other => bail!("undo: cannot restore deleted {} {} in {ns}", other.unwrap_or("link"), l.name),
        };
        let as_spec = |l: &Link, kind: LinkKind| LinkSpec {
            name: l.name.clone(),
            kind,
            mtu: Some(l.mtu),
            master: None,
            up: false,
            mac: l.mac,
            no_ipv6: false,
        };
        let master = match &s.master {
            Some(m) => Some(self.resolve(ns, m)?),
            None => None,
        };
        let peer_file = match &s.peer {
            Some(p) if &p.ns != ns => self.session.file(&p.ns)?.map(|f| f.try_clone()).transpose()?,
            _ => None,
        };
        let ctx = CreateCtx {
            master,
            vxlan_dev: l.vxlan.as_ref().and_then(|v| v.dev),
            peer_ns: peer_file.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
            peer: s.peer.as_ref().map(|p| as_spec(&p.link, LinkKind::VethPeer { peer: l.name.clone() })),
        };
        let mut req = msg::create(&as_spec(l, kind), &ctx);
        if let RouteNetlinkMessage::NewLink(m) = &mut req {
            m.header.index = l.index;
            if let Some(p) = &s.peer {
                msg::set_peer_index(m, p.link.index);
            }
        }
        self.sock(ns)?.request(req, NLM_F_CREATE | NLM_F_EXCL).map_err(nl(|| format!("undo: recreate {} in {ns}", l.name)))?;
        drop(peer_file);
        let ends: Vec<&Snapshot> = std::iter::once(s).chain(s.peer.as_deref()).collect();
        for e in ends {
            let set = SetLink { alias: e.link.alias.clone(), no_ipv6: e.link.no_ipv6.then_some(true), ..SetLink::default() };
            let (idx, name) = (e.link.index, e.link.name.clone());
            self.sock(&e.ns)?.request(msg::set_link(idx, &name, &set), 0).map_err(nl(|| format!("undo: mark {name}")))?;
            if e.link.up {
                let up = SetLink { up: Some(true), ..SetLink::default() };
                self.sock(&e.ns)?.request(msg::set_link(idx, &name, &up), 0).map_err(nl(|| format!("undo: set {name} up")))?;
            }
            for a in &e.addrs {
                self.sock(&e.ns)?
                    .request(msg::add_addr(idx, *a), NLM_F_CREATE | NLM_F_REPLACE)
                    .map_err(nl(|| format!("undo: address {a} on {name}")))?;
            }
            for r in &e.routes {
                self.sock(&e.ns)?
                    .request(msg::new_route(r), NLM_F_CREATE | NLM_F_REPLACE)
                    .map_err(nl(|| format!("undo: route {} on {name}", r.dst)))?;
            }
        }
        Ok(())
    }
}

fn describe_create(spec: &LinkSpec, peer: Option<&(Ns, LinkSpec)>) -> String {
    match (&spec.kind, peer) {
        (LinkKind::Vxlan(v), _) => format!("vxlan {} on {}", spec.name, v.dev),
        (LinkKind::Veth(_), Some((pns, p))) => format!("veth {} (peer {} in {pns})", spec.name, p.name),
        (k, _) => format!("{} {}", k.name(), spec.name),
    }
}

/// The change that puts back what `c` changes.
fn inverse_change(c: &LinkChange, old: &Link, old_master: &Option<String>) -> LinkChange {
    let ov = old.vxlan.clone().unwrap_or_default();
    LinkChange {
        alias: c.alias.as_ref().map(|_| old.alias.clone().unwrap_or_default()),
        mtu: c.mtu.map(|_| old.mtu),
        master: c.master.as_ref().map(|_| old_master.clone()),
        up: c.up.map(|_| old.up).or(c.vxlan_group.map(|_| old.up)),
        mac: c.mac.and(old.mac),
        no_ipv6: c.no_ipv6.map(|_| old.no_ipv6),
        bridge: c.bridge.as_ref().and(old.bridge.clone()),
        vxlan_group: c.vxlan_group.and(ov.group),
        vxlan_ageing: c.vxlan_ageing.map(|_| ov.ageing),
        vxlan_ttl: c.vxlan_ttl.map(|_| ov.ttl),
    }
}

/// Changes that restore the owned chains and jumps a batch touched.
fn inverse_firewall(changes: &[FwChange], old: &FirewallState) -> Vec<FwChange> {
    let mut inv = Vec::new();
    let old_ipt = old.ipt.clone().unwrap_or_default();
    for c in changes.iter().rev() {
        match c {
            FwChange::NftReplace { .. } | FwChange::NftDelete => match old.nft.as_ref().and_then(|n| n.ours.clone()) {
                Some(t) => inv.push(FwChange::NftReplace { table: t, why: vec![], fresh: false }),
                None => inv.push(FwChange::NftDelete),
            },
            FwChange::SetChain { table, chain, .. } | FwChange::DelChain { table, chain } => {
                match old_ipt.chains.get(&(table.clone(), chain.clone())) {
                    Some(rules) => inv.push(FwChange::SetChain {
                        table: table.clone(),
                        chain: chain.clone(),
                        rules: rules.clone(),
                        found: None,
                    }),
                    None => inv.push(FwChange::DelChain { table: table.clone(), chain: chain.clone() }),
                }
            }
            FwChange::AddJump { table, hook, rule } => {
                inv.push(FwChange::DelJump { table: table.clone(), hook: hook.clone(), rule: rule.clone() })
            }
            FwChange::DelJump { table, hook, rule } => {
                inv.push(FwChange::AddJump { table: table.clone(), hook: hook.clone(), rule: rule.clone() })
            }
        }
    }
    // Jumps must go before the chains they point to are deleted.
    inv.sort_by_key(|c| matches!(c, FwChange::DelChain { .. }));
    inv
}
