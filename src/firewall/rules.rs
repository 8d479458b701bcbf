//! The router namespace's rules, derived from the profile.
//!
//! Policy: forwarding allows new connections from each private segment out of
//! the public leg (with the segment's own source addresses only) and replies;
//! everything else forwarded through the router is dropped. The router itself
//! answers ping and nothing else. Private subnets leave with source NAT to the
//! public address.

use super::{Chain, Ruleset};
use crate::profile::Router;

pub const NAT_CHAIN: &str = "VXROUTER-POST";
pub const FORWARD_CHAIN: &str = "VXROUTER-FWD";
pub const INPUT_CHAIN: &str = "VXROUTER-IN";

pub fn router_ruleset(r: &Router) -> Ruleset {
    let public = &r.public.leg.veth[1];
    let public_addr = r.public.leg.address.addr;

    let nat: Vec<String> = r
        .private
        .iter()
        .map(|leg| format!("-s {} -o {public} -j SNAT --to-source {public_addr}", leg.address.network()))
        .collect();

    let mut forward = vec![
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-m conntrack --ctstate INVALID -j DROP".to_string(),
    ];
    for leg in &r.private {
        forward.push(format!("-s {} -i {} -o {public} -j ACCEPT", leg.address.network(), leg.veth[1]));
    }
    forward.push("-j DROP".to_string());

    let input = vec![
        "-i lo -j ACCEPT".to_string(),
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-p icmp -m icmp --icmp-type 8 -j ACCEPT".to_string(),
        "-j DROP".to_string(),
    ];

    let chain = |table: &str, name: &str, hook: &str, rules: Vec<String>| Chain {
        table: table.into(),
        name: name.into(),
        hook: hook.into(),
        rules,
    };
    Ruleset {
        chains: vec![
            chain("filter", INPUT_CHAIN, "INPUT", input),
            chain("filter", FORWARD_CHAIN, "FORWARD", forward),
            chain("nat", NAT_CHAIN, "POSTROUTING", nat),
        ],
    }
}
