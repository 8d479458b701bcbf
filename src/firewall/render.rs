//! One rule renderer for both backends: the matches of a rule in the fixed
//! order both tools print them (sources, destinations, interfaces, protocol,
//! connection state, verdict), each word in the backend's [`Syntax`].

use ipnet::IpNet;

use super::rules::{Family, Match, Rule, Verdict};
use crate::profile::Proto;

/// How one backend writes each part of a rule.
pub trait Syntax {
    fn src(&self, c: &IpNet) -> String;
    fn dst(&self, c: &IpNet) -> String;
    fn iif(&self, name: &str) -> String;
    fn oif(&self, name: &str) -> String;
    fn port(&self, proto: Proto, port: u16) -> String;
    fn icmp_echo(&self, family: Family) -> String;
    fn vrrp(&self) -> String;
    fn icmp6(&self, t: u8) -> String;
    fn established(&self) -> String;
    fn invalid(&self) -> String;
    fn dnatted(&self) -> String;
    fn verdict(&self, v: &Verdict) -> String;
}

/// Which of the printed groups a match belongs to.
fn group(m: &Match) -> u8 {
    match m {
        Match::Src(_) => 0,
        Match::Dst(_) => 1,
        Match::In(_) | Match::Out(_) => 2,
        Match::Port(..) | Match::IcmpEcho | Match::Vrrp | Match::Icmp6(_) => 3,
        Match::Established | Match::Invalid | Match::Dnatted => 4,
    }
}

/// A rule of a `family` chain as the backend's tool prints it.
pub fn rule(r: &Rule, family: Family, s: &dyn Syntax) -> String {
    let mut matches: Vec<&Match> = r.matches.iter().collect();
    matches.sort_by_key(|m| group(m));
    let mut words: Vec<String> = matches
        .into_iter()
        .map(|m| match m {
            Match::Src(c) => s.src(c),
            Match::Dst(c) => s.dst(c),
            Match::In(i) => s.iif(i),
            Match::Out(o) => s.oif(o),
            Match::Port(proto, p) => s.port(*proto, *p),
            Match::IcmpEcho => s.icmp_echo(family),
            Match::Vrrp => s.vrrp(),
            Match::Icmp6(t) => s.icmp6(*t),
            Match::Established => s.established(),
            Match::Invalid => s.invalid(),
            Match::Dnatted => s.dnatted(),
        })
        .collect();
    words.push(s.verdict(&r.verdict));
    words.join(" ")
}

pub fn rules(rs: &[Rule], family: Family, s: &dyn Syntax) -> Vec<String> {
    rs.iter().map(|r| rule(r, family, s)).collect()
}

/// A network as both tools print it: a lone address (/32, /128) bare.
pub fn net(c: &IpNet) -> String {
    if c.prefix_len() == c.max_prefix_len() { c.addr().to_string() } else { c.to_string() }
}
