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
ExecStart={bin} apply -q /etc/vxrouter/%i.toml
ExecReload={bin} apply -q /etc/vxrouter/%i.toml
# Stopping the unit leaves the network in place; to remove it:
#   vxrouter destroy /etc/vxrouter/%i.toml

[Install]
WantedBy=multi-user.target
"
    ))
}

/// One libvirt network per segment bridge: `<forward mode='bridge'/>` on the
/// existing bridge (libvirt adds no rules and no DHCP of its own) with the
/// segment's MTU, so guests get `<interface type='network'>` and the right
/// MTU on their tap.
pub fn libvirt(p: &Profile, underlay_mtu: u32) -> Vec<(String, String)> {
    p.segments
        .iter()
        .map(|s| {
            let mtu = segment_mtu(s.mtu, underlay_mtu);
            let xml = format!(
                "<network>\n  <name>{}</name>\n  <forward mode='bridge'/>\n  <bridge name='{}'/>\n  <mtu size='{mtu}'/>\n</network>\n",
                s.bridge, s.bridge
            );
            (s.bridge.clone(), xml)
        })
        .collect()
}

/// The MTU of the profile's underlay device on this machine, if it has one.
fn local_underlay_mtu(p: &Profile) -> Option<u32> {
    let dev = &p.underlay.as_ref()?.device;
    std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu")).ok()?.trim().parse().ok()
}

pub fn libvirt_command(profile: &Path, out: Option<&Path>) -> Result<u8> {
    let p = crate::engine::load(profile)?;
    let (mtu, note) = match local_underlay_mtu(&p) {
        Some(m) => (m, None),
        None => (1500, Some("underlay device not found here; MTUs assume a 1500-byte underlay")),
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
    fn one_network_per_segment_with_its_mtu() {
        let p = Profile::parse("p.toml", include_str!("../profiles/three-hosts/host-a.toml")).unwrap();
        let nets = libvirt(&p, 9000);
        assert_eq!(nets.len(), 2);
        assert_eq!(nets[0].0, "br-web");
        assert!(nets[0].1.contains("<bridge name='br-web'/>") && nets[0].1.contains("<mtu size='8950'/>"), "{}", nets[0].1);
        assert!(nets[1].1.contains("<forward mode='bridge'/>"));
    }

    #[test]
    fn unit_applies_the_instance_profile_on_start_and_reload() {
        let u = systemd(Some(Path::new("/usr/bin/vxrouter"))).unwrap();
        assert!(u.contains("ExecStart=/usr/bin/vxrouter apply -q /etc/vxrouter/%i.toml"));
        assert!(u.contains("ExecReload=/usr/bin/vxrouter apply -q /etc/vxrouter/%i.toml"));
        assert!(u.contains("After=network-online.target"));
    }
}
