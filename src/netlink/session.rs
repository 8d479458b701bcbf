//! The sockets of one run: one per network namespace it touches, each opened
//! once (on a short-lived thread inside that namespace) and reused.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;

use super::Netlink;
use crate::error::{Context, Result};
use crate::model::Ns;
use crate::netns;

pub struct Session {
    host: Netlink,
    named: BTreeMap<String, (File, Netlink)>,
}

impl Session {
    pub fn new() -> Result<Session> {
        Ok(Session { host: Netlink::open().context("open netlink socket")?, named: BTreeMap::new() })
    }

    /// Opens a named namespace if it exists; false when it does not.
    pub fn attach(&mut self, name: &str) -> Result<bool> {
        if self.named.contains_key(name) {
            return Ok(true);
        }
        let Some(file) = netns::open(name)? else { return Ok(false) };
        if !netns::is_namespace(&file) {
            return Ok(false);
        }
        let sock = Netlink::open_in(file.as_fd()).with_context(|| format!("open netlink socket in namespace {name}"))?;
        self.named.insert(name.to_string(), (file, sock));
        Ok(true)
    }

    pub fn detach(&mut self, name: &str) {
        self.named.remove(name);
    }

    pub fn sock(&mut self, ns: &Ns) -> Result<&mut Netlink> {
        match ns {
            Ns::Host => Ok(&mut self.host),
            Ns::Named(n) => {
                self.named.get_mut(n).map(|(_, s)| s).ok_or_else(|| crate::error!(Internal, "namespace {n} is not open"))
            }
        }
    }

    /// The nsfs handle of a named namespace; None for the host.
    pub fn file(&self, ns: &Ns) -> Result<Option<&File>> {
        match ns {
            Ns::Host => Ok(None),
            Ns::Named(n) => {
                self.named.get(n).map(|(f, _)| Some(f)).ok_or_else(|| crate::error!(Internal, "namespace {n} is not open"))
            }
        }
    }
}
