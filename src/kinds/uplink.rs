//! Uplink membership: the physical NIC the profile names is made a port of
//! the public bridge, and released when no longer wanted. The NIC itself is
//! never marked or changed otherwise; the state file remembers which NIC
//! vxrouter enslaved to which bridge.

use serde::Serialize;

use super::Kind;
use crate::apply::Apply;
use crate::error::{Context, Result};
use crate::facts::Facts;
use crate::journal::Undo;
use crate::model::Ns;
use crate::netlink::{LinkRef, SetLink};
use crate::plan::{Order, Planner, Step, Verb};
use crate::profile::Profile;

pub struct Uplinks;

/// An uplink NIC and the bridge it belongs in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Uplink {
    pub uplink: String,
    pub bridge: String,
}

impl Kind for Uplinks {
    const NAME: &'static str = "uplinks";
    type Item = Uplink;
    type Seen = ();

    fn desire(p: &Profile, _f: &Facts) -> Vec<Uplink> {
        p.router.iter().map(|r| Uplink { uplink: r.public.uplink.clone(), bridge: r.public.leg.bridge.clone() }).collect()
    }

    fn plan(p: &mut Planner<'_>, want: &[Uplink], _: &()) {
        let host = &p.o.host;
        for (uplink, bridge) in &p.o.state.uplinks {
            if want.iter().any(|u| &u.uplink == uplink) {
                continue;
            }
            let in_bridge = host
                .link(uplink)
                .and_then(|u| u.master)
                .and_then(|m| host.by_index(m))
                .is_some_and(|b| &b.name == bridge && p.owned(b));
            if in_bridge {
                p.push(Order::RemoveNamespaces, Release(Uplink { uplink: uplink.clone(), bridge: bridge.clone() }));
            }
        }
        for u in want {
            let Some(nic) = host.link(&u.uplink) else {
                p.conflict(format!("uplink {} does not exist on this host", u.uplink));
                continue;
            };
            let current = nic.master.and_then(|m| host.by_index(m));
            if current.is_some_and(|b| b.name == u.bridge) && !p.replaced.contains(&(Ns::Host, u.bridge.clone())) {
                continue;
            }
            match current {
                Some(b) if !p.owned(b) => p.conflict(format!(
                    "uplink {} is a port of {}, which vxrouter does not own; release it first",
                    u.uplink, b.name
                )),
                _ => p.push(Order::Late, Enslave { uplink: u.clone(), from: current.map(|b| b.name.clone()) }),
            }
        }
    }
}

/// Makes `link` a port of `bridge` (None: of no bridge).
fn set_master(cx: &mut Apply<'_>, link: &str, bridge: Option<&str>) -> Result<()> {
    let index = cx.resolve(&Ns::Host, link)?;
    let master = match bridge {
        Some(b) => cx.resolve(&Ns::Host, b)?,
        None => 0,
    };
    let set = SetLink { master: Some(master), ..SetLink::default() };
    cx.sock(&Ns::Host)?.set_link(LinkRef::Index(index), &set).with_context(|| match bridge {
        Some(b) => format!("enslave {link} to {b}"),
        None => format!("release {link} from its bridge"),
    })
}

#[derive(Debug, Serialize)]
pub struct Enslave {
    pub uplink: Uplink,
    /// The bridge it was found in (undo puts it back there).
    pub from: Option<String>,
}

impl Step for Enslave {
    fn action(&self) -> &'static str {
        "enslave"
    }
    fn verb(&self) -> Verb {
        Verb::Change
    }
    fn object(&self) -> String {
        format!("uplink {} in {}", self.uplink.uplink, self.uplink.bridge)
    }
    fn detail(&self) -> String {
        format!("master {} (found {})", self.uplink.bridge, self.from.as_deref().unwrap_or("none"))
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        set_master(cx, &self.uplink.uplink, Some(&self.uplink.bridge))?;
        cx.undo_with(SetMaster { link: self.uplink.uplink.clone(), bridge: self.from.clone() });
        Ok(())
    }
}

#[derive(Debug, Serialize)]
pub struct Release(pub Uplink);

impl Step for Release {
    fn action(&self) -> &'static str {
        "release"
    }
    fn verb(&self) -> Verb {
        Verb::Remove
    }
    fn object(&self) -> String {
        format!("uplink {} in {}", self.0.uplink, self.0.bridge)
    }
    fn apply(&self, cx: &mut Apply<'_>) -> Result<()> {
        set_master(cx, &self.0.uplink, None)?;
        cx.undo_with(SetMaster { link: self.0.uplink.clone(), bridge: Some(self.0.bridge.clone()) });
        Ok(())
    }
}

#[derive(Debug)]
struct SetMaster {
    link: String,
    bridge: Option<String>,
}

impl Undo for SetMaster {
    fn undo(&self, cx: &mut Apply<'_>) -> Result<()> {
        set_master(cx, &self.link, self.bridge.as_deref())
    }
}
