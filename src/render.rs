//! Configuration for the tools around vxrouter: a systemd unit template that
//! applies a profile at boot, and libvirt networks for the segment bridges.

use std::path::Path;

use crate::error::{Context, Result};

use crate::desired::segment_mtu;
use crate::profile::Profile;

/// `vxrouter@.service`: `systemctl enable --now vxrouter@host-a` applies
/// /etc/vxrouter/host-a.toml once the network is online, and again on
/// `systemctl reload`. Stopping leaves the network up (VMs keep running).
pub fn systemd(bin: Option<&Path>) -> Result<String> {
    let bin = match bin {
        Some(b) => b.to_path_buf(),
        None => std::env::current_exe().context("find the vxrouter binary")?,
    };
    let bin = bin.display();
    Ok(format!(
        "\
[Unit]
Description=vxrouter: VXLAN segments and router of /etc/vxrouter/%i.toml
Documentation=man:vxrouter(1)
# The underlay NIC must be up with its address: it carries VXLAN.
Wants=network-online.target
After=network-online.target
# VMs attach to the segment bridges: build them first.
Before=libvirtd.service libvirt-guests.service
ConditionPathExists=/etc/vxrouter/%i.toml

[Service]
Type=oneshot
RemainAfterExit=yes
# Not -q: the journal keeps what each boot or reload changed (one line per
# object) or that there was nothing to do.
ExecStart={bin} apply /etc/vxrouter/%i.toml
ExecReload={bin} apply /etc/vxrouter/%i.toml
# The dnsmasq servers apply starts stay in this unit's cgroup; stopping or
# restarting the unit must not kill them (the default, control-group, would
# take DHCP and DNS away from every VM). Only the main process is signalled,
# and a oneshot's main process has exited by then.
KillMode=process
# Stopping the unit leaves the network in place; to remove it:
#   vxrouter destroy /etc/vxrouter/%i.toml

[Install]
WantedBy=multi-user.target
"
    ))
}

/// One libvirt network per segment bridge: `<forward mode='bridge'/>` on the
/// existing bridge (libvirt adds no rules and no DHCP of its own), so guests
/// get `<interface type='network'>`. The segment's MTU is not in the network:
/// libvirt (9.0 tried) refuses `<mtu>` in bridge mode ("mtu size only
/// allowed in open, route, nat, and isolated mode, not in bridge"), and
/// gives each guest's tap the bridge's MTU anyway. It is stated in a
/// comment, for the guests' `<interface>` (where `<mtu size=…>` tells the
/// guest through virtio) or their DHCP (option 26).
pub fn libvirt(p: &Profile, underlay_mtu: u32) -> Vec<(String, String)> {
    p.segments
        .iter()
        .map(|s| {
            let mtu = segment_mtu(s.mtu, underlay_mtu, crate::desired::overhead(p));
            let name = xml_escape(&s.bridge);
            let xml = format!(
                "<network>\n  <!-- vxrouter: segment MTU {mtu}; libvirt gives guests' taps the bridge's MTU;\n       guests without DHCP need <mtu size='{mtu}'/> in their <interface> -->\n  <name>{name}</name>\n  <forward mode='bridge'/>\n  <bridge name='{name}'/>\n</network>\n"
            );
            (s.bridge.clone(), xml)
        })
        .collect()
}

/// Escapes text for XML character data and attribute values (either quote).
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The MTU of the profile's underlay device in this network namespace
/// (netlink: /sys/class/net shows the namespace sysfs was mounted in, which
/// inside a sandbox or a lab host is another one).
fn local_underlay_mtu(p: &Profile) -> Option<u32> {
    let dev = &p.underlay.as_ref()?.device;
    let mut sock = crate::netlink::Netlink::open().ok()?;
    sock.link(dev).ok().flatten().map(|l| l.mtu)
}

pub fn libvirt_command(profile: &Path, out: Option<&Path>) -> Result<u8> {
    let p = crate::engine::load(profile)?;
    let (mtu, note) = match local_underlay_mtu(&p) {
        Some(m) => (m, None),
        None => (1500, Some("underlay device not found here; the MTU in the comments assumes a 1500-byte underlay")),
    };
    let nets = libvirt(&p, mtu);
    match out {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            for (name, xml) in &nets {
                let path = dir.join(format!("{name}.xml"));
                std::fs::write(&path, xml).with_context(|| format!("write {}", path.display()))?;
                println!("{}", path.display());
            }
        }
        None => {
            for (i, (_, xml)) in nets.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{xml}");
            }
        }
    }
    if let Some(n) = note {
        eprintln!("{}: {n}", crate::output::warning_word());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_network_per_segment_without_mtu_element() {
        let p = Profile::parse("p.toml", include_str!("../profiles/three-hosts/host-a.toml")).unwrap();
        let nets = libvirt(&p, 9000);
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].0, "br-web");
        let x = &nets[0].1;
        assert!(x.contains("<name>br-web</name>") && x.contains("<bridge name='br-web'/>"), "{x}");
        assert!(x.contains("<forward mode='bridge'/>"), "{x}");
        // libvirt refuses <mtu> in bridge mode: only the comment says it.
        let elements: String = x.split("-->").map(|part| part.split("<!--").next().unwrap_or("")).collect();
        assert!(!elements.contains("<mtu"), "{x}");
        assert!(x.contains("segment MTU 8950"), "{x}");
    }

    #[test]
    fn names_are_escaped_for_xml() {
        assert_eq!(xml_escape("br-web"), "br-web");
        assert_eq!(xml_escape("a'b&c<d>\"e"), "a&apos;b&amp;c&lt;d&gt;&quot;e");
        let mut p = Profile::parse("p.toml", include_str!("../profiles/host-b.toml")).unwrap();
        p.segments[0].bridge = "br-o'k&".into();
        let x = &libvirt(&p, 1500)[0].1;
        assert!(x.contains("<name>br-o&apos;k&amp;</name>") && x.contains("<bridge name='br-o&apos;k&amp;'/>"), "{x}");
        assert!(!x.contains("o'k"), "{x}");
    }

    #[test]
    fn unit_applies_the_instance_profile_on_start_and_reload() {
        let u = systemd(Some(Path::new("/usr/bin/vxrouter"))).unwrap();
        assert!(u.contains("\nExecStart=/usr/bin/vxrouter apply /etc/vxrouter/%i.toml\n"), "{u}");
        assert!(u.contains("\nExecReload=/usr/bin/vxrouter apply /etc/vxrouter/%i.toml\n"), "{u}");
        assert!(u.contains("\nKillMode=process\n"), "{u}");
        assert!(u.contains("After=network-online.target"));
    }
}
