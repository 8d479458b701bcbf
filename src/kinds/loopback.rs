//! The router namespace's loopback: never created (every namespace has
//! one), only brought up and marked with the owner mark, which is how a
//! namespace is recognised as vxrouter's by its content.

use crate::facts::Facts;
use crate::model::{Link, LinkKind, LinkSpec, Ns};
use crate::profile::Profile;

pub fn desire(p: &Profile, _f: &Facts, out: &mut Vec<(Ns, LinkSpec)>) {
    if let Some(r) = &p.router {
        out.push((
            Ns::Named(r.namespace.clone()),
            LinkSpec {
                name: "lo".into(),
                kind: LinkKind::Loopback,
                mtu: None,
                master: None,
                up: true,
                mac: None,
                no_ipv6: false,
                port: None,
            },
        ));
    }
}

/// A new namespace's loopback as the kernel makes it: down and unmarked.
pub fn fresh() -> Link {
    Link { index: 1, name: "lo".into(), loopback: true, ..Link::default() }
}
