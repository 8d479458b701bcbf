//! Router HA command: `vxrouter ha handover` (a planned handover to the
//! peer router). The objects themselves are kinds: kinds/ha_link.rs, kinds/keepalived.rs,
//! kinds/conntrackd.rs.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::error::{Context, Result, exit};
use crate::netlink::Netlink;
use crate::profile::Profile;

/// Whether the router namespace holds `address` right now.
fn holds(ns: &str, address: IpAddr) -> Result<bool> {
    let Some(file) = crate::netns::open(ns)? else { return Ok(false) };
    crate::netns::within(Some(&file), || -> Result<bool> {
        let mut nl = Netlink::open().context("open netlink")?;
        Ok(nl.addrs().context("read addresses")?.iter().any(|a| a.cidr.addr() == address))
    })
    .context("enter the router namespace")?
}

/// `vxrouter ha handover PROFILE`: the peer router takes over. keepalived
/// is reloaded with the lowest priority (no restart, nothing else changes);
/// the peer preempts after its preempt delay and the addresses move with
/// gratuitous ARP. Waits until this router has given them up. The next
/// `apply` restores the profile's priority (and this router takes over
/// again after the delay if its priority is the higher one).
pub fn handover(p: &Profile, quiet: bool) -> Result<u8> {
    let Some(r) = &p.router else {
        crate::bail!(Usage, "{} has no [router]: nothing to hand over", p.source);
    };
    let Some(ha) = &r.ha else {
        crate::bail!(Usage, "{} has no [router.ha]: a single router cannot hand over", p.source);
    };
    let public = IpAddr::V4(r.public.leg.address.addr());
    if !holds(&r.namespace, public)? {
        crate::say!("{}: this router is not active ({public} is not in {}): nothing to hand over", p.host, r.namespace);
        return Ok(exit::OK);
    }
    let started = Instant::now();
    crate::kinds::keepalived::handover(&crate::state::run_dir(), &p.host, &r.namespace)?;
    // The peer waits its preempt delay, then takes a few adverts.
    let limit = Duration::from_secs(u64::from(ha.preempt_delay) + 3) + Duration::from_millis(u64::from(ha.advert_centis) * 40);
    while holds(&r.namespace, public)? {
        if started.elapsed() > limit {
            crate::bail!(
                Tool,
                "{} still holds {public} after {:.1} s: is the peer router {} up? (keepalived runs with priority {}; `vxrouter apply` restores {})",
                p.host,
                started.elapsed().as_secs_f64(),
                ha.peer,
                crate::kinds::keepalived::HANDOVER_PRIORITY,
                ha.priority
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if !quiet {
        crate::say!(
            "{}: handed over to {} after {:.2} s (priority {} until the next `vxrouter apply`)",
            p.host,
            ha.peer,
            started.elapsed().as_secs_f64(),
            crate::kinds::keepalived::HANDOVER_PRIORITY
        );
    }
    Ok(exit::OK)
}
