//! FRR in a simulated host: zebra and bgpd started directly in the host's
//! network and mount namespaces, with private tmpfs over /etc/frr and
//! /var/log/frr (and /var/lib/frr where it exists) and /run/frr on the
//! host's private /run — as FRR's topotests run routers. The host's
//! `vxrouter apply` then finds "its" FRR through vtysh there, exactly as on
//! a real host. The daemons die with the host's namespaces (teardown kills
//! every process in them); `stop` ends them earlier (the leave cell).

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::nodes::Node;

/// Starts zebra and bgpd in `node` (a lab host) and loads the empty
/// configuration with `vtysh -b`. Debian's default profile (`traditional`)
/// on purpose: vxrouter must not rely on FRR's defaults for its timers.
pub fn start(node: &Node, host: &str) -> Result<()> {
    let script = format!(
        r#"set -e
for d in /etc/frr /var/log/frr /var/lib/frr; do
  if [ -d "$d" ] && ! mountpoint -q "$d"; then mount -t tmpfs -o mode=0755 frr-{host} "$d"; fi
done
mkdir -p /run/frr /etc/frr
printf 'zebra=yes\nbgpd=yes\nvtysh_enable=yes\n' > /etc/frr/daemons
printf 'service integrated-vtysh-config\n' > /etc/frr/vtysh.conf
[ -e /etc/frr/frr.conf ] || printf 'frr defaults traditional\nhostname {host}\nlog file /var/log/frr/frr.log\n!\n' > /etc/frr/frr.conf
chown -R frr:frr /etc/frr /run/frr /var/log/frr
chmod 640 /etc/frr/frr.conf
/usr/lib/frr/zebra -d -F traditional -A 127.0.0.1 -s 90000000
/usr/lib/frr/bgpd -d -F traditional -A 127.0.0.1
"#
    );
    let out = node.command("sh").args(["-c", &script]).output().context("start FRR")?;
    if !out.status.success() {
        return Err(anyhow!("starting FRR in {host} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = node.command("vtysh").args(["-b"]).output().context("run vtysh -b")?;
        if st.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(anyhow!("FRR in {host} did not answer vtysh: {}", String::from_utf8_lossy(&st.stdout).trim()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Stops bgpd and zebra (SIGTERM, as `systemctl stop frr` does): bgpd
/// closes its sessions, so peers withdraw this host's routes at once.
pub fn stop(node: &Node) -> Result<()> {
    let script = "for d in bgpd zebra; do [ -e /run/frr/$d.pid ] && kill $(cat /run/frr/$d.pid) 2>/dev/null; done; \
                  for i in $(seq 50); do [ -e /run/frr/bgpd.pid ] && kill -0 $(cat /run/frr/bgpd.pid) 2>/dev/null || exit 0; sleep 0.1; done";
    let st = node.command("sh").args(["-c", script]).status().context("stop FRR")?;
    if !st.success() {
        return Err(anyhow!("stopping FRR in {} failed", node.name));
    }
    Ok(())
}

/// Resident memory of zebra + bgpd in kB (from /proc, in the node).
pub fn rss_kb(node: &Node) -> Option<u64> {
    let out = node
        .command("sh")
        .args(["-c", "for d in bgpd zebra; do grep VmRSS /proc/$(cat /run/frr/$d.pid)/status; done"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).sum())
}
