//! The nftables ruleset generation of a network namespace, and the
//! namespace instance it belongs to: one `NFT_MSG_GETGEN` request over a
//! NETLINK_NETFILTER socket opened in the namespace (what `nft` itself asks
//! before it reads a ruleset), and that socket's `SO_NETNS_COOKIE`.
//!
//! The kernel bumps the generation (`nft_net->base_seq`, per namespace) in
//! every nf_tables commit, whoever makes it: `nft`, iptables-nft, any other
//! netlink client. A new namespace starts again at 1, and a namespace's
//! inode number can be reused after it is gone; its cookie (Linux 5.14) is
//! never reused while the machine runs. So (cookie, generation) names one
//! ruleset of one namespace instance.
//!
//! The message is built here by hand (20 bytes; the reply's one attribute is
//! read with `netlink-packet-core`): the crate that knows nf_tables messages
//! (`netlink-packet-netfilter`) would bring `derive_more` 0.99 and with it a
//! second `syn` into the build for this one request.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{ErrorBuffer, NLM_F_REQUEST, NLMSG_ERROR, NetlinkBuffer, NlasIterator};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use serde::{Deserialize, Serialize};

/// NFNL_SUBSYS_NFTABLES, in the high byte of the message type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
/// NFTA_GEN_ID: the generation, big-endian u32.
const NFTA_GEN_ID: u16 = 1;
/// SO_NETNS_COOKIE (include/uapi/asm-generic/socket.h; 71 on x86, arm,
/// arm64, riscv).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// One namespace instance's nftables generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    /// The namespace's cookie: unique for the machine's uptime.
    pub cookie: u64,
    /// Its nf_tables generation id.
    pub generation: u32,
}

/// A NETLINK_NETFILTER socket in one namespace, to read its generation.
pub struct NfGen {
    sock: Socket,
    cookie: u64,
    seq: u32,
}

impl NfGen {
    /// A socket in the calling thread's namespace.
    pub fn open() -> io::Result<NfGen> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
        let rc = unsafe {
            libc::getsockopt(sock.as_raw_fd(), libc::SOL_SOCKET, SO_NETNS_COOKIE, (&raw mut cookie).cast(), &raw mut len)
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        if len as usize != std::mem::size_of::<u64>() {
            return Err(io::Error::other("SO_NETNS_COOKIE: unexpected length"));
        }
        Ok(NfGen { sock, cookie, seq: 0 })
    }

    /// A socket in the namespace `ns` (an open nsfs file); None: here.
    pub fn open_in(ns: Option<BorrowedFd<'_>>) -> io::Result<NfGen> {
        match ns {
            Some(fd) => crate::netns::run_in(fd, NfGen::open)?,
            None => NfGen::open(),
        }
    }

    /// The namespace's cookie and current generation.
    pub fn stamp(&mut self) -> io::Result<Stamp> {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.sock.send(&request(self.seq), 0)?;
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match self.sock.recv(&mut &mut buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            match parse_reply(&buf[..n.min(buf.len())], self.seq)? {
                Some(generation) => return Ok(Stamp { cookie: self.cookie, generation }),
                None => continue,
            }
        }
    }
}

/// NFT_MSG_GETGEN: the netlink header and an `nfgenmsg` (family
/// AF_UNSPEC, version NFNETLINK_V0, resource id 0).
fn request(seq: u32) -> [u8; 20] {
    let mut m = [0u8; 20];
    m[0..4].copy_from_slice(&20u32.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN).to_ne_bytes());
    m[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m[8..12].copy_from_slice(&seq.to_ne_bytes());
    m
}

/// The generation in a datagram answering `seq`: Some when it holds the
/// NEWGEN reply, None when it holds nothing for `seq`, an error when the
/// kernel refused or the reply has no generation.
fn parse_reply(bytes: &[u8], seq: u32) -> io::Result<Option<u32>> {
    let mut at = 0;
    while at < bytes.len() {
        let m = NetlinkBuffer::new_checked(&bytes[at..]).map_err(|e| io::Error::other(format!("nfnetlink reply: {e}")))?;
        let len = m.length() as usize;
        if m.sequence_number() == seq {
            if m.message_type() == NLMSG_ERROR {
                let err = ErrorBuffer::new_checked(m.payload()).map_err(|e| io::Error::other(format!("nfnetlink error: {e}")))?;
                return Err(match err.code() {
                    Some(code) => io::Error::from_raw_os_error(-code.get()),
                    None => io::Error::other("NFT_MSG_GETGEN acknowledged without a reply"),
                });
            }
            if m.message_type() == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
                let attrs = m.payload().get(4..).unwrap_or_default();
                for nla in NlasIterator::new(attrs).flatten() {
                    if nla.kind() & 0x3fff == NFTA_GEN_ID && nla.value().len() == 4 {
                        let v = nla.value();
                        return Ok(Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])));
                    }
                }
                return Err(io::Error::other("NFT_MSG_NEWGEN without NFTA_GEN_ID"));
            }
        }
        at += (len + 3) & !3;
        if len == 0 {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NEWGEN reply as the kernel sends it (nf_tables_fill_gen_info).
    fn reply(seq: u32, generation: u32) -> Vec<u8> {
        let mut m = Vec::new();
        let attrs: Vec<u8> = [
            &8u16.to_ne_bytes()[..],
            &NFTA_GEN_ID.to_ne_bytes(),
            &generation.to_be_bytes(),
            &8u16.to_ne_bytes(),
            &2u16.to_ne_bytes(),
            &77u32.to_be_bytes(),
        ]
        .concat();
        let len = 16 + 4 + attrs.len();
        m.extend((len as u32).to_ne_bytes());
        m.extend(((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN).to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(seq.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend([0, 0, 0, 0]);
        m.extend(attrs);
        m
    }

    #[test]
    fn request_is_a_getgen_of_twenty_bytes() {
        let r = request(7);
        let h = NetlinkBuffer::new_checked(&r[..]).unwrap();
        assert_eq!(h.length(), 20);
        assert_eq!(h.message_type(), 0x0a10);
        assert_eq!(h.flags(), NLM_F_REQUEST);
        assert_eq!(h.sequence_number(), 7);
        assert_eq!(&r[16..], &[0, 0, 0, 0]);
    }

    #[test]
    fn reply_gives_the_generation_of_its_sequence_only() {
        assert_eq!(parse_reply(&reply(3, 0x0102_0304), 3).unwrap(), Some(0x0102_0304));
        assert_eq!(parse_reply(&reply(2, 9), 3).unwrap(), None);
        let mut err = Vec::new();
        err.extend(36u32.to_ne_bytes());
        err.extend(NLMSG_ERROR.to_ne_bytes());
        err.extend(0u16.to_ne_bytes());
        err.extend(5u32.to_ne_bytes());
        err.extend(0u32.to_ne_bytes());
        err.extend((-libc::EPERM).to_ne_bytes());
        err.extend(request(5)[..16].iter());
        assert_eq!(parse_reply(&err, 5).unwrap_err().raw_os_error(), Some(libc::EPERM));
    }
}
