//! Gratuitous ARP: when a router leg gets its address (created or repaired),
//! tell the segment which MAC holds the gateway address now, so no VM keeps
//! sending to a MAC that is gone. (Legs have stable MACs too; this also
//! covers a MAC that changed by hand.)

use std::fs::File;
use std::net::Ipv4Addr;

use crate::error::{Context, Result};

use crate::netns;

const ETH_P_ARP: u16 = 0x0806;

/// The 42-byte frame: broadcast Ethernet, ARP request with sender and
/// target protocol address both `ip` (RFC 5227 announcement).
pub fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target hardware address stays zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends announcements from a short-lived helper process (`vxrouter __garp`)
/// started inside the namespace and not waited for: closing a packet socket
/// waits for an RCU grace period (10-20 ms), which this keeps off the apply.
pub fn announce_detached(ns: Option<&File>, frames: &[(u32, [u8; 6], Ipv4Addr)]) -> Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let mut cmd = std::process::Command::new("/proc/self/exe");
    std::os::unix::process::CommandExt::arg0(&mut cmd, "vxrouter");
    cmd.arg("__garp");
    for (i, mac, ip) in frames {
        cmd.arg(format!("{i},{},{ip}", crate::model::fmt_mac(mac)));
    }
    cmd.stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    if let Some(f) = ns {
        netns::command_in(&mut cmd, f);
    }
    cmd.spawn().context("start the gratuitous ARP helper")?;
    Ok(())
}

/// Parses "ifindex,mac,ip" as given to `__garp`.
pub fn parse_frame_arg(s: &str) -> Option<(u32, [u8; 6], Ipv4Addr)> {
    let mut parts = s.split(',');
    let index = parts.next()?.parse().ok()?;
    let mac_text = parts.next()?;
    let ip = parts.next()?.parse().ok()?;
    let mut mac = [0u8; 6];
    let bytes: Vec<u8> = mac_text.split(':').filter_map(|b| u8::from_str_radix(b, 16).ok()).collect();
    if bytes.len() != 6 {
        return None;
    }
    mac.copy_from_slice(&bytes);
    Some((index, mac, ip))
}

/// Sends announcements (link index, its MAC, address) in the namespace `ns`
/// (None: the calling thread's), through one packet socket.
pub fn announce(ns: Option<&File>, frames: &[(u32, [u8; 6], Ipv4Addr)]) -> Result<()> {
    if frames.is_empty() {
        return Ok(());
    }
    let send = move || -> Result<()> {
        // SAFETY: `fd` is a socket this closure opens and closes and nothing
        // else sees; `sockaddr_ll` is plain old data, valid all-zero; sendto
        // gets a pointer and length of the live `f` array and of `addr`.
        unsafe {
            let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(ETH_P_ARP.to_be()));
            if fd < 0 {
                return Err(std::io::Error::last_os_error()).context("open packet socket");
            }
            let mut failed = None;
            for (ifindex, mac, ip) in frames {
                let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                addr.sll_family = libc::AF_PACKET as u16;
                addr.sll_protocol = ETH_P_ARP.to_be();
                addr.sll_ifindex = *ifindex as i32;
                addr.sll_halen = 6;
                addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
                let f = frame(*mac, *ip);
                let n = libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                );
                if n != f.len() as isize {
                    failed = Some(format!("send gratuitous ARP for {ip}: {}", std::io::Error::last_os_error()));
                }
            }
            libc::close(fd);
            if let Some(e) = failed {
                crate::bail!(Kernel, "{e}");
            }
        }
        Ok(())
    };
    netns::within(ns, send)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcement_frame_layout() {
        let f = frame([2, 1, 2, 3, 4, 5], Ipv4Addr::new(192, 168, 10, 3));
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[192, 168, 10, 3]);
        assert_eq!(&f[38..42], &[192, 168, 10, 3]);
        assert_eq!(&f[32..38], &[0; 6]);
    }
}
