//! DHCP and DNS for the VMs of a segment: one dnsmasq per router leg that
//! asks for it, running inside the router namespace, with its own config,
//! pid and lease files under /run/vxrouter/dnsmasq/<host>/. vxrouter starts
//! it, restarts it only when its config changes, starts it again if it died,
//! and stops it when the profile no longer asks for it (and on destroy).

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::netns;
use crate::profile::Leg;
use crate::state::run_dir;

/// A dnsmasq the profile asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Server {
    pub ns: String,
    /// The router leg (namespace end) it serves.
    pub leg: String,
    pub config: String,
}

/// A dnsmasq vxrouter started (its config file exists).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Running {
    pub ns: String,
    pub leg: String,
    pub config: String,
    /// Its process, if it is alive.
    pub pid: Option<u32>,
}

pub fn dir(host: &str) -> PathBuf {
    run_dir().join("dnsmasq").join(host)
}

/// '@' occurs in neither namespace nor interface names.
fn stem(ns: &str, leg: &str) -> String {
    format!("{ns}@{leg}")
}

pub fn conf_path(host: &str, ns: &str, leg: &str) -> PathBuf {
    dir(host).join(format!("{}.conf", stem(ns, leg)))
}

fn pid_path(host: &str, ns: &str, leg: &str) -> PathBuf {
    dir(host).join(format!("{}.pid", stem(ns, leg)))
}

fn lease_path(host: &str, ns: &str, leg: &str) -> PathBuf {
    dir(host).join(format!("{}.leases", stem(ns, leg)))
}

/// The dnsmasq configuration for one private leg: DHCP with the gateway,
/// the segment MTU (option 26) and, with `dns`, the gateway as DNS server;
/// DNS off otherwise.
pub fn config(host: &str, ns: &str, leg: &Leg, mtu: u32) -> String {
    let name = &leg.veth[1];
    let mut c = format!(
        "# vxrouter:{host}: DHCP/DNS for segment bridge {} (written by vxrouter; edits are replaced)\n\
         interface={name}\nbind-interfaces\nexcept-interface=lo\nno-hosts\n\
         pid-file={}\n",
        leg.bridge,
        pid_path(host, ns, name).display()
    );
    if leg.dns {
        c.push_str("domain-needed\nbogus-priv\n");
    } else {
        c.push_str("port=0\n");
    }
    if let Some(d) = &leg.dhcp {
        let mask = std::net::Ipv4Addr::from(leg.address.mask());
        c.push_str(&format!(
            "dhcp-authoritative\ndhcp-leasefile={}\ndhcp-range={},{},{mask},{}\n\
             dhcp-option=option:router,{}\ndhcp-option=option:mtu,{mtu}\n",
            lease_path(host, ns, name).display(),
            d.first,
            d.last,
            d.lease,
            leg.address.addr
        ));
        if leg.dns {
            c.push_str(&format!("dhcp-option=option:dns-server,{}\n", leg.address.addr));
        } else {
            c.push_str("dhcp-option=option:dns-server\n");
        }
    }
    c
}

fn alive(pid: u32, conf: &Path) -> bool {
    let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else { return false };
    let want = format!("--conf-file={}", conf.display());
    cmdline.split(|b| *b == 0).any(|arg| arg == want.as_bytes())
}

/// The dnsmasq instances this host's vxrouter started.
pub fn observe(host: &str) -> Result<Vec<Running>> {
    let d = dir(host);
    let entries = match fs::read_dir(&d) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e).with_context(|| format!("read {}", d.display())),
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".conf") else { continue };
        let Some((ns, leg)) = stem.split_once('@') else { continue };
        let conf = e.path();
        let config = fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
        let pid =
            fs::read_to_string(pid_path(host, ns, leg)).ok().and_then(|p| p.trim().parse().ok()).filter(|p| alive(*p, &conf));
        out.push(Running { ns: ns.to_string(), leg: leg.to_string(), config, pid });
    }
    out.sort_by(|a, b| (&a.ns, &a.leg).cmp(&(&b.ns, &b.leg)));
    Ok(out)
}

/// Writes the config and starts dnsmasq in the namespace; returns when it
/// has started serving (dnsmasq's parent exits after its daemon is ready).
pub fn start(host: &str, ns: &str, ns_file: &File, leg: &str, config: &str) -> Result<()> {
    crate::testhooks::point();
    let conf = conf_path(host, ns, leg);
    fs::create_dir_all(dir(host)).with_context(|| format!("create {}", dir(host).display()))?;
    fs::write(&conf, config).with_context(|| format!("write {}", conf.display()))?;
    let mut cmd = Command::new("dnsmasq");
    cmd.arg(format!("--conf-file={}", conf.display())).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    netns::command_in(&mut cmd, ns_file);
    let out = cmd.output().with_context(|| format!("run dnsmasq in {ns} (is dnsmasq-base installed?)"))?;
    if !out.status.success() {
        bail!("dnsmasq for {leg} in {ns} did not start: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Stops the dnsmasq of a leg (if it runs) and removes its files.
pub fn stop(host: &str, ns: &str, leg: &str) -> Result<()> {
    crate::testhooks::point();
    let conf = conf_path(host, ns, leg);
    if let Some(pid) = fs::read_to_string(pid_path(host, ns, leg)).ok().and_then(|p| p.trim().parse::<u32>().ok())
        && alive(pid, &conf)
    {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        // dnsmasq exits at once on SIGTERM; wait a little for the sockets.
        for _ in 0..100 {
            if nix::sys::signal::kill(pid, None).is_err() || !alive(pid.as_raw() as u32, &conf) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    for p in [conf, pid_path(host, ns, leg), lease_path(host, ns, leg)] {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("remove {}", p.display())),
        }
    }
    let _ = fs::remove_dir(dir(host));
    let _ = fs::remove_dir(run_dir().join("dnsmasq"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Profile;

    #[test]
    fn config_hands_out_gateway_mtu_and_dns() {
        let text = include_str!("../profiles/host-a.toml").replace(
            "veth = [\"veth17.0\", \"veth17.1\"]  # optional, as above",
            "veth = [\"veth17.0\", \"veth17.1\"]\ndhcp = { range = \"192.168.10.100-192.168.10.200\", lease = \"1h\" }\ndns = true",
        );
        let p = Profile::parse("p.toml", &text).unwrap();
        let leg = &p.router.as_ref().unwrap().private[0];
        let c = config("host-a", "ns1", leg, 1450);
        for line in [
            "interface=veth17.1",
            "dhcp-range=192.168.10.100,192.168.10.200,255.255.255.0,1h",
            "dhcp-option=option:router,192.168.10.3",
            "dhcp-option=option:mtu,1450",
            "dhcp-option=option:dns-server,192.168.10.3",
        ] {
            assert!(c.lines().any(|l| l == line), "{line} missing from:\n{c}");
        }
        assert!(!c.contains("port=0"));
    }
}
