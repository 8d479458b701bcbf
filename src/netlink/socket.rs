//! A synchronous rtnetlink socket bound to one network namespace.
//!
//! Why not the async `rtnetlink` handle: vxrouter's work is a strictly
//! ordered list of requests with an undo journal, in several namespaces. A
//! blocking socket per namespace (created on a short-lived thread that
//! entered the namespace, so no tokio worker ever calls `setns`) keeps that
//! order obvious, and `batch` still pipelines many requests per syscall.
//! Messages are built and parsed with `netlink-packet-route`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP_INTR: u16 = 16;
const NLM_F_ACK_TLVS: u16 = 0x200;
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Enough for the acks of a large pipelined batch.
const RCVBUF: usize = 8 << 20;
/// How many requests go out before their acks are collected.
const WINDOW: usize = 256;

/// A failed netlink request: the kernel's errno and, when it gave one, its
/// extended-ack message ("A VXLAN device with the specified VNI already
/// exists").
#[derive(Debug)]
pub struct NlError {
    pub errno: i32,
    pub message: Option<String>,
}

impl NlError {
    pub fn io(e: &io::Error) -> Self {
        NlError { errno: e.raw_os_error().unwrap_or(libc::EIO), message: None }
    }
    pub fn is(&self, errno: i32) -> bool {
        self.errno == errno
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = io::Error::from_raw_os_error(self.errno);
        let text = e.to_string();
        // "File exists (os error 17)" → "File exists"
        let text = text.split(" (os error").next().unwrap_or(&text);
        match &self.message {
            Some(m) => write!(f, "{text} ({m})"),
            None => f.write_str(text),
        }
    }
}

impl std::error::Error for NlError {}

pub struct Netlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        // Best effort: older kernels lack these, and nothing depends on them.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_rx_buf_sz(RCVBUF);
        Ok(Netlink { sock, seq: 0, buf: vec![0; 1 << 16] })
    }

    /// A socket in the namespace `ns` (an open nsfs file). The socket stays
    /// bound to that namespace; the caller's thread never changes namespace.
    pub fn open_in(ns: BorrowedFd<'_>) -> io::Result<Netlink> {
        crate::netns::run_in(ns, Netlink::open)?
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    fn encode(&mut self, msg: RouteNetlinkMessage, flags: u16, out: &mut Vec<u8>) -> u32 {
        let seq = self.next_seq();
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let start = out.len();
        out.resize(start + nl.buffer_len(), 0);
        nl.serialize(&mut out[start..]);
        seq
    }

    fn send_all(&self, bytes: &[u8]) -> Result<(), NlError> {
        let n = self.sock.send(bytes, 0).map_err(|e| NlError::io(&e))?;
        if n != bytes.len() {
            return Err(NlError { errno: libc::EIO, message: Some("short netlink send".into()) });
        }
        Ok(())
    }

    /// Receives one datagram and splits it into raw messages.
    fn recv_messages(&mut self) -> Result<Vec<RawMsg>, NlError> {
        loop {
            match self.sock.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    // Truncated: grow and retry is impossible (datagram is
                    // gone); make it impossible next time and report.
                    self.buf.resize(n.next_power_of_two(), 0);
                    return Err(NlError { errno: libc::EMSGSIZE, message: Some("netlink reply truncated".into()) });
                }
                Ok(n) => return Ok(split(&self.buf[..n])),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::io(&e)),
            }
        }
    }

    /// Sends one request and waits for its ack.
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        self.batch(vec![(msg, flags)]).pop().unwrap_or(Ok(()))
    }

    /// Sends one request and returns the messages the kernel answered with
    /// before its ack (e.g. the link of a RTM_GETLINK by name).
    pub fn get(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        self.exchange(vec![(msg, 0)]).pop().unwrap_or(Ok(vec![]))
    }

    /// Like `batch`, discarding replies other than the acks.
    pub fn batch(&mut self, msgs: Vec<(RouteNetlinkMessage, u16)>) -> Vec<Result<(), NlError>> {
        self.exchange(msgs).into_iter().map(|r| r.map(|_| ())).collect()
    }

    /// Sends requests in order, pipelined (many per syscall), and returns one
    /// result per request, with any messages the kernel sent back for it
    /// (replies, NLM_F_ECHO notifications). The kernel handles a socket's
    /// requests strictly in order, so request k sees the effects of requests
    /// before it; a failed request does not stop the ones after it, which is
    /// why every result is returned (the caller journals those that succeeded).
    pub fn exchange(&mut self, msgs: Vec<(RouteNetlinkMessage, u16)>) -> Vec<Result<Vec<RouteNetlinkMessage>, NlError>> {
        if msgs.iter().any(|(m, _)| is_change(m)) {
            crate::testhooks::point();
        }
        let mut results = Vec::with_capacity(msgs.len());
        let mut iter = msgs.into_iter().peekable();
        while iter.peek().is_some() {
            let mut out = Vec::new();
            let mut seqs = Vec::new();
            for (msg, flags) in iter.by_ref().take(WINDOW) {
                seqs.push(self.encode(msg, flags | NLM_F_REQUEST | NLM_F_ACK, &mut out));
            }
            if let Err(e) = self.send_all(&out) {
                results.extend(seqs.iter().map(|_| Err(NlError { errno: e.errno, message: e.message.clone() })));
                continue;
            }
            let first = results.len();
            results.extend(seqs.iter().map(|_| Err(NlError { errno: libc::EIO, message: Some("no ack".into()) })));
            let mut replies: Vec<Vec<RouteNetlinkMessage>> = seqs.iter().map(|_| Vec::new()).collect();
            let mut pending = seqs.len();
            while pending > 0 {
                let msgs = match self.recv_messages() {
                    Ok(m) => m,
                    Err(e) => {
                        for r in &mut results[first..] {
                            if matches!(r, Err(x) if x.message.as_deref() == Some("no ack")) {
                                *r = Err(NlError { errno: e.errno, message: e.message.clone() });
                            }
                        }
                        break;
                    }
                };
                for m in msgs {
                    let Some(i) = seqs.iter().position(|s| *s == m.seq) else { continue };
                    if m.kind == NLMSG_ERROR {
                        results[first + i] = m.ack_result().map(|()| std::mem::take(&mut replies[i]));
                        pending -= 1;
                    } else if let Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(inner), .. }) =
                        NetlinkMessage::<RouteNetlinkMessage>::deserialize(&m.bytes)
                    {
                        replies[i].push(inner);
                    }
                }
            }
        }
        results
    }

    /// Sends a dump request and collects every reply.
    pub fn dump(&mut self, msg: RouteNetlinkMessage) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let mut all = Vec::new();
        self.dump_map(msg, Some, &mut all)?;
        Ok(all)
    }

    /// Sends a dump request and keeps `f(reply)` of each reply as it is
    /// parsed, so a large dump never sits in memory as full messages. Retries
    /// when the kernel flags the dump as interrupted by a concurrent change.
    pub fn dump_map<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(RouteNetlinkMessage) -> Option<T>,
        out: &mut Vec<T>,
    ) -> Result<(), NlError> {
        'retry: for _ in 0..5 {
            out.clear();
            let mut request = Vec::new();
            let seq = self.encode(msg.clone(), NLM_F_REQUEST | NLM_F_DUMP, &mut request);
            self.send_all(&request)?;
            loop {
                for m in self.recv_messages()? {
                    if m.seq != seq {
                        continue;
                    }
                    if m.flags & NLM_F_DUMP_INTR != 0 {
                        self.drain(seq)?;
                        continue 'retry;
                    }
                    match m.kind {
                        NLMSG_DONE => return Ok(()),
                        NLMSG_ERROR => {
                            m.ack_result()?;
                            return Ok(());
                        }
                        _ => match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&m.bytes) {
                            Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(inner), .. }) => out.extend(f(inner)),
                            Ok(_) => {}
                            Err(e) => {
                                return Err(NlError {
                                    errno: libc::EBADMSG,
                                    message: Some(format!("cannot parse netlink reply: {e}")),
                                });
                            }
                        },
                    }
                }
            }
        }
        Err(NlError { errno: libc::EAGAIN, message: Some("dump kept being interrupted by concurrent changes".into()) })
    }

    fn drain(&mut self, seq: u32) -> Result<(), NlError> {
        loop {
            for m in self.recv_messages()? {
                if m.seq == seq && (m.kind == NLMSG_DONE || m.kind == NLMSG_ERROR) {
                    return Ok(());
                }
            }
        }
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Requests that change the kernel (as opposed to reading it).
fn is_change(m: &RouteNetlinkMessage) -> bool {
    use RouteNetlinkMessage as M;
    matches!(
        m,
        M::NewLink(_)
            | M::DelLink(_)
            | M::SetLink(_)
            | M::NewAddress(_)
            | M::DelAddress(_)
            | M::NewRoute(_)
            | M::DelRoute(_)
            | M::NewNeighbour(_)
            | M::DelNeighbour(_)
    )
}

struct RawMsg {
    kind: u16,
    flags: u16,
    seq: u32,
    bytes: Vec<u8>,
}

impl RawMsg {
    /// Interprets an NLMSG_ERROR message: code 0 is an ack.
    fn ack_result(&self) -> Result<(), NlError> {
        let code = self.bytes.get(16..20).map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]])).unwrap_or(-libc::EIO);
        if code == 0 {
            return Ok(());
        }
        let mut message = None;
        if self.flags & NLM_F_ACK_TLVS != 0 {
            // With NETLINK_CAP_ACK the echoed request is just its 16-byte header.
            let mut at = 16 + 4 + 16;
            while let Some(h) = self.bytes.get(at..at + 4) {
                let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
                let kind = u16::from_ne_bytes([h[2], h[3]]);
                if len < 4 {
                    break;
                }
                if kind == NLMSGERR_ATTR_MSG
                    && let Some(v) = self.bytes.get(at + 4..at + len)
                {
                    let s = String::from_utf8_lossy(v).trim_end_matches('\0').to_string();
                    if !s.is_empty() {
                        message = Some(s);
                    }
                }
                at += (len + 3) & !3;
            }
        }
        Err(NlError { errno: -code, message })
    }
}

fn split(buf: &[u8]) -> Vec<RawMsg> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = buf.get(at..at + 16) {
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if len < 16 || at + len > buf.len() {
            break;
        }
        out.push(RawMsg {
            kind: u16::from_ne_bytes([h[4], h[5]]),
            flags: u16::from_ne_bytes([h[6], h[7]]),
            seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
            bytes: buf[at..at + len].to_vec(),
        });
        at += (len + 3) & !3;
    }
    out
}
