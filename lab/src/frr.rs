//! FRR in a simulated host: zebra and bgpd started directly in the host's
//! network and mount namespaces, with private tmpfs over /etc/frr,
//! /var/log/frr (and /var/lib/frr where it exists) and /var/tmp (FRR keeps
//! a crash-log directory per daemon and pid in /var/tmp/frr: on the
//! machine's own /var/tmp they piled up, one per lab run) and /run/frr on
//! the host's private /run — as FRR's topotests run routers. The host's
//! `vxrouter apply` then finds "its" FRR through vtysh there, exactly as on
//! a real host. The daemons die with the host's namespaces (teardown kills
//! every process in them). tests/evpn.rs and scripts/evpn-scale.sh stop
//! and start them by hand (leave and restart cells).

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
mountpoint -q /var/tmp || mount -t tmpfs -o mode=1777 tmp-{host} /var/tmp
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
