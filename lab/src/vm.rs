//! What the checks do from a VM, whatever the VM is: a namespace (commands
//! run in it, the lab's agent for TCP) or a real guest (the same probes
//! through its console, busybox nc for TCP). Both answer in the same words,
//! so every cell of the matrix is computed the same way for both.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};

use crate::guest::{Console, quote};
use crate::nodes::{Node, SELF_EXE};

pub enum Vm {
    Ns(Node),
    Guest(Arc<Console>),
}

/// A TCP listener that answers "peer=<client> bytes=<count>", stopped when
/// dropped.
pub enum Listener {
    Agent(Child),
    Guest(Arc<Console>, String),
}

impl Drop for Listener {
    fn drop(&mut self) {
        match self {
            Listener::Agent(c) => {
                let _ = c.kill();
                let _ = c.wait();
            }
            Listener::Guest(con, pid) => {
                let _ = con.run(&format!("kill {pid}"), Duration::from_secs(10));
            }
        }
    }
}

fn run(mut cmd: Command) -> (bool, String) {
    match cmd.stdin(Stdio::null()).output() {
        Ok(o) => {
            let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&o.stderr));
            (o.status.success(), text.trim().to_string())
        }
        Err(e) => (false, e.to_string()),
    }
}

impl Vm {
    pub fn name(&self) -> &str {
        match self {
            Vm::Ns(n) => &n.name,
            Vm::Guest(c) => &c.name,
        }
    }

    pub fn is_guest(&self) -> bool {
        matches!(self, Vm::Guest(_))
    }

    /// A command line (program and arguments): (exited 0, stdout+stderr).
    /// `slow` bounds how long a guest may take to answer.
    fn sh(&self, argv: &[&str], slow: Duration) -> (bool, String) {
        match self {
            Vm::Ns(n) => {
                let mut cmd = n.command(argv[0]);
                cmd.args(&argv[1..]);
                run(cmd)
            }
            Vm::Guest(c) => {
                let line: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                match c.run(&line.join(" "), slow) {
                    Ok((rc, out)) => (rc == 0, out),
                    Err(e) => (false, e),
                }
            }
        }
    }

    /// A command line in the VM: (exited 0, stdout+stderr).
    pub fn shell(&self, argv: &[&str]) -> (bool, String) {
        self.sh(argv, Duration::from_secs(20))
    }

    /// One echo request, up to three tries.
    pub fn ping(&self, to: Ipv4Addr) -> (bool, String) {
        for _ in 0..3 {
            if self.sh(&["ping", "-c", "1", "-W", "1", "-q", &to.to_string()], Duration::from_secs(20)).0 {
                return (true, "ping".into());
            }
        }
        (false, format!("no reply to ping {to}"))
    }

    /// One echo request of `size` payload bytes with DF set (iputils ping;
    /// busybox ping cannot forbid fragmentation): (answered, output). Not
    /// quiet: `-q` also hides "local error: message too long", which tells
    /// a refusal by the sender from a loss on the way.
    pub fn ping_df(&self, to: Ipv4Addr, size: u32) -> (bool, String) {
        let ping = if self.is_guest() { "ping-iputils" } else { "ping" };
        self.sh(
            &[ping, "-n", "-c", "1", "-W", "2", "-M", "do", "-s", &size.to_string(), &to.to_string()],
            Duration::from_secs(20),
        )
    }

    /// An IPv6 echo request to a link-local address on `dev`: true when
    /// anything answers.
    pub fn ping6_link_local(&self, to: &str, dev: &str) -> bool {
        self.sh(&["ping", "-6", "-n", "-c", "2", "-w", "2", &format!("{to}%{dev}")], Duration::from_secs(20)).0
    }

    /// One IPv6 echo request, up to three tries.
    pub fn ping6(&self, to: Ipv6Addr) -> (bool, String) {
        for _ in 0..3 {
            if self.sh(&["ping", "-6", "-n", "-c", "1", "-W", "1", "-q", &to.to_string()], Duration::from_secs(20)).0 {
                return (true, "ping".into());
            }
        }
        (false, format!("no reply to ping {to}"))
    }

    /// One IPv6 echo request of `size` payload bytes that may not be
    /// fragmented by the sender either (`-M do`; routers never fragment
    /// IPv6): (answered, output, not quiet: it tells "message too long"
    /// and "Packet too big" from a loss).
    pub fn ping6_df(&self, to: Ipv6Addr, size: u32) -> (bool, String) {
        let ping = if self.is_guest() { "ping-iputils" } else { "ping" };
        self.sh(
            &[ping, "-6", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", &size.to_string(), &to.to_string()],
            Duration::from_secs(20),
        )
    }

    /// The path MTU the VM's kernel has learnt for `to` (from a
    /// packet-too-big: the route cache's "mtu N"); None when it knows none.
    pub fn route6_mtu(&self, to: Ipv6Addr) -> Option<u32> {
        let (ok, out) = self.sh(&["ip", "-6", "route", "get", &to.to_string()], Duration::from_secs(20));
        if !ok {
            return None;
        }
        out.split_whitespace().skip_while(|w| *w != "mtu").nth(1).and_then(|m| m.parse().ok())
    }

    /// The VM's global IPv6 address inside `prefix` on eth0, once duplicate
    /// address detection is done (not tentative); None while there is none.
    pub fn global6(&self, prefix: ipnet::Ipv6Net) -> Option<Ipv6Addr> {
        let (_, out) = self.sh(&["ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global"], Duration::from_secs(20));
        out.lines()
            .filter(|l| !l.contains("tentative") && !l.contains("dadfailed"))
            .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet6").nth(1))
            .filter_map(|a| a.split('/').next()?.parse::<Ipv6Addr>().ok())
            .find(|a| prefix.contains(a))
    }

    /// The VM's IPv6 MTU on eth0 (router advertisements may lower it below
    /// the link's).
    pub fn mtu6(&self) -> Option<u32> {
        let (ok, out) = self.sh(&["cat", "/proc/sys/net/ipv6/conf/eth0/mtu"], Duration::from_secs(20));
        if ok { out.trim().parse().ok() } else { None }
    }

    /// ARP for `to` on eth0: true when it answers.
    pub fn arping(&self, to: Ipv4Addr) -> bool {
        self.sh(&["arping", "-f", "-c", "2", "-w", "2", "-I", "eth0", &to.to_string()], Duration::from_secs(20)).0
    }

    /// ARP for `to` on eth0: the MAC address of every reply (lower case).
    pub fn arping_macs(&self, to: Ipv4Addr) -> Vec<String> {
        let (_, out) = self.sh(&["arping", "-c", "3", "-w", "2", "-I", "eth0", &to.to_string()], Duration::from_secs(20));
        reply_macs(&out)
    }

    /// Sends `bytes` to a listener; Ok((peer it saw, bytes it received)).
    pub fn send(&self, to: impl Into<IpAddr>, port: u16, bytes: u64, timeout_s: u32) -> Result<(String, u64), String> {
        let to: IpAddr = to.into();
        let (ok, out) = match self {
            Vm::Ns(_) => self.sh(
                &[
                    SELF_EXE,
                    "__agent",
                    "send",
                    &SocketAddr::new(to, port).to_string(),
                    "--bytes",
                    &bytes.to_string(),
                    "--timeout",
                    &timeout_s.to_string(),
                ],
                Duration::ZERO,
            ),
            Vm::Guest(c) => {
                // busybox nc half-closes at the end of its input and prints
                // what the listener answers; `timeout` bounds a stalled transfer
                // as the agent's write and read timeouts do.
                let cmd = format!("head -c {bytes} /dev/zero | timeout {} nc -w {timeout_s} {to} {port}", timeout_s * 8 + 10);
                match c.run(&cmd, Duration::from_secs(u64::from(timeout_s) * 8 + 40)) {
                    Ok((rc, out)) => (rc == 0 && out.contains("bytes="), out),
                    Err(e) => (false, e),
                }
            }
        };
        if !ok {
            let last = out.lines().last().unwrap_or("").trim_start_matches("error: ").to_string();
            return Err(if last.is_empty() { format!("no answer from {to}:{port}") } else { last });
        }
        let mut peer = String::new();
        let mut got = 0;
        for kv in out.split_whitespace() {
            if let Some(p) = kv.strip_prefix("peer=") {
                peer = p.to_string();
            } else if let Some(b) = kv.strip_prefix("bytes=") {
                got = b.parse().unwrap_or(0);
            }
        }
        Ok((peer, got))
    }

    /// A listener on `addr`:`port` until the returned guard is dropped.
    pub fn listen(&self, addr: impl Into<IpAddr>, port: u16) -> Result<Listener> {
        let addr: IpAddr = addr.into();
        match self {
            Vm::Ns(node) => {
                let mut child = node
                    .command(SELF_EXE)
                    .args(["__agent", "listen", &SocketAddr::new(addr, port).to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .map_err(|e| anyhow!("start listener in {}: {e}", node.name))?;
                let mut line = String::new();
                if let Some(out) = child.stdout.take() {
                    BufReader::new(out).read_line(&mut line)?;
                }
                let l = Listener::Agent(child);
                if line.trim() != "listening" {
                    return Err(anyhow!("listener in {} on {addr}:{port} did not start", node.name));
                }
                Ok(l)
            }
            Vm::Guest(c) => {
                // One /bin/vxr-sink per connection (see guest-image.sh).
                let (rc, out) = c
                    .run(&format!("nc -ll -p {port} -e /bin/vxr-sink >/dev/null 2>&1 & echo $!"), Duration::from_secs(20))
                    .map_err(|e| anyhow!("{e}"))?;
                let pid = out.trim().to_string();
                if rc != 0 || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(anyhow!("listener in {} on port {port} did not start: {out}", c.name));
                }
                Ok(Listener::Guest(c.clone(), pid))
            }
        }
    }

    /// The MTU of the VM's eth0, as the VM itself has it.
    pub fn mtu(&self) -> Result<u32, String> {
        match self {
            Vm::Ns(node) => node
                .netlink()
                .map_err(|e| format!("{e:#}"))
                .and_then(|mut s| crate::lab::mtu_of(&mut s, "eth0").map_err(|e| format!("{e:#}")))
                .and_then(|m| m.ok_or_else(|| format!("{} has no eth0", node.name))),
            Vm::Guest(c) => {
                let (rc, out) = c.run("cat /sys/class/net/eth0/mtu", Duration::from_secs(20))?;
                out.trim().parse().ok().filter(|_| rc == 0).ok_or_else(|| format!("{}: cannot read eth0's MTU: {out}", c.name))
            }
        }
    }

    /// A command given by a person (`lab exec`): its exit status, output
    /// streamed (namespace) or printed at the end (guest).
    pub fn exec(&self, argv: &[String]) -> Result<i32> {
        let Some((prog, args)) = argv.split_first() else { anyhow::bail!("no command given") };
        match self {
            Vm::Ns(n) => {
                let st = n.command(prog).args(args).status().map_err(|e| anyhow!("run {prog} in {}: {e}", n.name))?;
                Ok(st.code().unwrap_or(1))
            }
            Vm::Guest(c) => {
                let line: Vec<String> = argv.iter().map(|a| quote(a)).collect();
                let (rc, out) = c.run(&line.join(" "), Duration::from_secs(300)).map_err(|e| anyhow!("{e}"))?;
                if !out.is_empty() {
                    println!("{out}");
                }
                Ok(rc)
            }
        }
    }
}

/// The MACs in iputils arping's "Unicast reply from A [MAC]" lines.
fn reply_macs(out: &str) -> Vec<String> {
    let mut macs: Vec<String> = out
        .lines()
        .filter(|l| l.contains("reply from"))
        .filter_map(|l| Some(l.split_once('[')?.1.split_once(']')?.0.to_ascii_lowercase()))
        .collect();
    macs.sort();
    macs.dedup();
    macs
}

#[cfg(test)]
mod tests {
    #[test]
    fn arping_reply_macs() {
        let out = "ARPING 203.0.113.123 from 203.0.113.254 eth0\nUnicast reply from 203.0.113.123 [02:AA:bb:00:00:01]  0.6ms\nUnicast reply from 203.0.113.123 [02:aa:bb:00:00:02]  0.7ms\nUnicast reply from 203.0.113.123 [02:AA:BB:00:00:01]  0.5ms\nSent 2 probes (1 broadcast(s))\n";
        assert_eq!(super::reply_macs(out), ["02:aa:bb:00:00:01", "02:aa:bb:00:00:02"]);
    }
}
