//! A synchronous rtnetlink socket bound to one network namespace.
//!
//! Every change is one request, sent on its own and followed by a wait for
//! its acknowledgement, in order: the undo journal records a step only once
//! the kernel has confirmed it, and the next step sees its effect. That is
//! netavark's shape (a blocking socket per namespace, `netlink.rs`), chosen
//! over the async `rtnetlink` handle for the same reasons: strictly ordered
//! requests with an undo journal, sockets in several namespaces, and no
//! runtime whose worker threads must never call `setns`. Dumps stream their
//! replies. Messages are built and parsed with `netlink-packet-route`;
//! framing, flags and error messages come from `netlink-packet-core`.

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use netlink_packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR,
    NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload, NlasIterator,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// NLMSGERR_ATTR_MSG: the extended acknowledgement's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Receive buffer: the largest dump datagram the kernel sends is about a
/// page per message batch; link dumps with many attributes need more.
const RECV_BUF: usize = 1 << 16;
/// How often a dump interrupted by concurrent changes is started over; with
/// the pauses between attempts (1, 2, 4 … 200 ms) that is about 3 seconds.
const DUMP_ATTEMPTS: u32 = 20;

/// A failed netlink request: the kernel's errno and, when it gave one, its
/// extended-ack message ("A VXLAN device with the specified VNI already
/// exists").
#[derive(Debug, Clone)]
pub struct NlError {
    pub errno: i32,
    pub message: Option<String>,
}

impl NlError {
    fn io(e: &io::Error) -> Self {
        NlError { errno: e.raw_os_error().unwrap_or(libc::EIO), message: None }
    }
    fn other(errno: i32, message: impl Into<String>) -> Self {
        NlError { errno, message: Some(message.into()) }
    }
    pub fn is(&self, errno: i32) -> bool {
        self.errno == errno
    }
}

impl fmt::Display for NlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = crate::error::os_text(self.errno);
        match &self.message {
            Some(m) => write!(f, "{text} ({m})"),
            None => f.write_str(&text),
        }
    }
}

impl std::error::Error for NlError {}

impl From<NlError> for crate::error::Error {
    fn from(e: NlError) -> Self {
        crate::error::Error::new(crate::error::ErrorKind::Kernel, e.to_string()).with_errno(e.errno)
    }
}

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
        // Best effort: older kernels lack these. Capped acks echo only the
        // request's header; extended acks carry the kernel's message.
        let _ = sock.set_cap_ack(true);
        let _ = sock.set_ext_ack(true);
        // Strict checking (NETLINK_GET_STRICT_CHK, Linux 4.20): the kernel
        // validates dump requests and then honours the filters in them (an
        // address dump by ifa_index, a route dump by RTA_OIF) instead of
        // sending everything. Callers filter replies themselves too, so an
        // older kernel only costs time.
        let _ = sock.set_netlink_get_strict_chk(true);
        Ok(Netlink { sock, seq: 0, buf: vec![0; RECV_BUF] })
    }

    /// A socket in the namespace `ns` (an open nsfs file). The socket stays
    /// bound to that namespace; the caller's thread never changes namespace.
    pub fn open_in(ns: BorrowedFd<'_>) -> io::Result<Netlink> {
        crate::netns::run_in(ns, Netlink::open)?
    }

    fn send(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<u32, NlError> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut nl = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        nl.finalize();
        let mut bytes = vec![0; nl.buffer_len()];
        nl.serialize(&mut bytes);
        let n = self.sock.send(&bytes, 0).map_err(|e| NlError::io(&e))?;
        if n != bytes.len() {
            return Err(NlError::other(libc::EIO, "short netlink send"));
        }
        Ok(self.seq)
    }

    /// Receives one datagram and hands each message in it that answers
    /// `seq` to `f`, until `f` says the answer is complete.
    fn receive(&mut self, seq: u32, mut f: impl FnMut(Reply<'_>) -> Result<bool, NlError>) -> Result<(), NlError> {
        loop {
            let n = match self.sock.recv(&mut &mut self.buf[..], libc::MSG_TRUNC) {
                Ok(n) if n > self.buf.len() => {
                    // The datagram is gone; make the buffer big enough for
                    // next time and report.
                    self.buf.resize(n.next_power_of_two(), 0);
                    return Err(NlError::other(libc::EMSGSIZE, "netlink reply truncated"));
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(NlError::io(&e)),
            };
            let mut at = 0;
            while at < n {
                let Ok(m) = NetlinkBuffer::new_checked(&self.buf[at..n]) else { break };
                let len = m.length() as usize;
                if m.sequence_number() == seq && f(Reply { bytes: &self.buf[at..at + len] })? {
                    return Ok(());
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// Sends one request, waits for its acknowledgement, and returns what
    /// the kernel answered before it (the link of a RTM_GETLINK by name).
    pub fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        if is_change(&msg) {
            crate::testhooks::point();
        }
        let seq = self.send(msg, flags | NLM_F_ACK)?;
        let mut replies = Vec::new();
        self.receive(seq, |r| match r.kind() {
            NLMSG_ERROR => r.ack().map(|()| true),
            _ => {
                replies.extend(r.parse()?);
                Ok(false)
            }
        })?;
        Ok(replies)
    }

    /// Sends a dump request and keeps `f(reply)` of each reply as it is
    /// parsed, so a large dump never sits in memory as full messages. Starts
    /// over when the kernel flags the dump as interrupted by a concurrent
    /// change (NLM_F_DUMP_INTR), after a growing pause: right after a large
    /// apply, a thousand new links finish IPv6 duplicate address detection
    /// within about a second, and an address dump retried at once kept
    /// meeting the next change (seen at N = 1000: five immediate retries
    /// all interrupted).
    pub fn dump<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<T>, NlError> {
        self.dump_replies(msg, |r| Ok(r.parse()?.and_then(&mut f)))
    }

    /// A dump whose replies of netlink type `kind` are decoded by `f` from
    /// their payload bytes, in the receive buffer (see `linkdump`).
    pub fn dump_raw<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        kind: u16,
        mut f: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<Vec<T>, NlError> {
        self.dump_replies(msg, |r| Ok(if r.kind() == kind { f(r.header().payload()) } else { None }))
    }

    fn dump_replies<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        mut f: impl FnMut(&Reply<'_>) -> Result<Option<T>, NlError>,
    ) -> Result<Vec<T>, NlError> {
        let mut pause = std::time::Duration::from_millis(1);
        for attempt in 0..DUMP_ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(200));
            }
            let mut out = Vec::new();
            let mut interrupted = false;
            let seq = self.send(msg.clone(), NLM_F_DUMP)?;
            self.receive(seq, |r| {
                interrupted |= r.flags() & NLM_F_DUMP_INTR != 0;
                match r.kind() {
                    NLMSG_DONE => Ok(true),
                    NLMSG_ERROR => r.ack().map(|()| true),
                    _ if interrupted => Ok(false),
                    _ => {
                        out.extend(f(&r)?);
                        Ok(false)
                    }
                }
            })?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(NlError::other(libc::EAGAIN, "dump kept being interrupted by concurrent changes"))
    }
}

impl AsFd for Netlink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// One message of a reply, still in the receive buffer.
struct Reply<'a> {
    bytes: &'a [u8],
}

impl Reply<'_> {
    fn header(&self) -> NetlinkBuffer<&[u8]> {
        NetlinkBuffer::new(self.bytes)
    }

    fn kind(&self) -> u16 {
        self.header().message_type()
    }

    fn flags(&self) -> u16 {
        self.header().flags()
    }

    fn parse(&self) -> Result<Option<RouteNetlinkMessage>, NlError> {
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(self.bytes) {
            Ok(NetlinkMessage { payload: NetlinkPayload::InnerMessage(m), .. }) => Ok(Some(m)),
            Ok(_) => Ok(None),
            Err(e) => Err(NlError::other(libc::EBADMSG, format!("cannot parse netlink reply: {e}"))),
        }
    }

    /// An NLMSG_ERROR message: code 0 is an acknowledgement; otherwise the
    /// errno, with the extended-ack text when the kernel gave one.
    fn ack(&self) -> Result<(), NlError> {
        let header = self.header();
        let err = ErrorBuffer::new_checked(header.payload())
            .map_err(|e| NlError::other(libc::EBADMSG, format!("cannot parse netlink error: {e}")))?;
        let Some(code) = err.code() else { return Ok(()) };
        let mut message = None;
        if self.flags() & NLM_F_ACK_TLVS != 0 {
            // The echoed request: its header only when capped, else whole.
            let echoed = err.payload();
            let skip = match NetlinkBuffer::new_checked(echoed) {
                Ok(h) if self.flags() & NLM_F_CAPPED == 0 => h.length() as usize,
                _ => 16,
            };
            for nla in NlasIterator::new(echoed.get(skip..).unwrap_or_default()).flatten() {
                if nla.kind() == NLMSGERR_ATTR_MSG {
                    let text = String::from_utf8_lossy(nla.value()).trim_end_matches('\0').to_string();
                    message = (!text.is_empty()).then_some(text);
                }
            }
        }
        Err(NlError { errno: -code.get(), message })
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
