//! Probers for the router HA cells (`vxrouter-lab __agent …`): a server for
//! the internet side (UDP echo and TCP conversations on one address), a
//! fixed-schedule UDP prober and the VM's end of two kinds of TCP
//! conversation. They measure outages as the time the path delivered
//! nothing, so a failover shows as one long gap between answered probes.
//!
//! Why not `ping -i 0.01`: it sends every ~16 ms here, not every 10 ms, and
//! drifts under load; the prober keeps a fixed schedule (probe n leaves at
//! start + n × interval, late or not) and records when each one left.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// (sent, echo arrival) per probe, shared by the sender and the receiver.
type ProbeLog = Arc<Mutex<Vec<(Instant, Option<Instant>)>>>;

/// First bytes of every UDP probe.
const MAGIC: &[u8; 4] = b"vxhp";

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn say(line: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()
}

/// A flag set when stdin reaches its end (the lab closes it to say "stop"),
/// and a channel of the lines read before that.
fn watch_stdin() -> (Arc<AtomicBool>, std::sync::mpsc::Receiver<String>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let s = stop.clone();
    std::thread::spawn(move || {
        let stdin = io::stdin();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        s.store(true, Ordering::SeqCst);
    });
    (stop, rx)
}

// ---------------------------------------------------------------- server

/// The internet server's side, until killed: echoes UDP datagrams, and
/// holds TCP conversations. A conversation starts with the server saying
/// "peer=<source address it sees>", then the client says what it wants:
/// "speak" (the server echoes every line) or "push <ms>" (the server sends
/// a numbered line every <ms> until the client says "bye", then answers
/// "bye").
pub fn serve(addr: SocketAddr) -> Result<()> {
    let udp = UdpSocket::bind(addr).with_context(|| format!("bind UDP {addr}"))?;
    let tcp = TcpListener::bind(addr).with_context(|| format!("listen on TCP {addr}"))?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            if let Ok((n, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(&buf[..n], from);
            }
        }
    });
    say("listening")?;
    for conn in tcp.incoming() {
        let Ok(c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = converse(c);
        });
    }
    Ok(())
}

fn converse(c: TcpStream) -> io::Result<()> {
    c.set_nodelay(true)?;
    // Longer than any stall the cells accept (3 s): the server is never
    // the one that ends a stalled conversation.
    c.set_write_timeout(Some(Duration::from_secs(30)))?;
    let peer = c.peer_addr()?.ip();
    let mut w = c.try_clone()?;
    writeln!(w, "peer={peer}")?;
    let mut lines = Lines::new(c);
    let Some(first) = lines.next_line(None)? else { return Ok(()) };
    let mut words = first.split_whitespace();
    match (words.next(), words.next().and_then(|m| m.parse::<u64>().ok())) {
        (Some("speak"), _) => {
            while let Some(l) = lines.next_line(None)? {
                w.write_all(l.as_bytes())?;
                w.write_all(b"\n")?;
            }
        }
        (Some("push"), Some(ms)) => {
            let stop = Arc::new(AtomicBool::new(false));
            let pusher = {
                let stop = stop.clone();
                let mut w = w.try_clone()?;
                let every = Duration::from_millis(ms.max(1));
                std::thread::spawn(move || {
                    let t0 = Instant::now();
                    let mut n: u32 = 0;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        if writeln!(w, "{n}").is_err() {
                            return;
                        }
                        sleep_until(t0 + every * n);
                    }
                })
            };
            let bye = loop {
                match lines.next_line(None) {
                    Ok(Some(l)) if l == "bye" => break true,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break false,
                }
            };
            stop.store(true, Ordering::SeqCst);
            let _ = pusher.join();
            if bye {
                w.write_all(b"bye\n")?;
                // Until the client closes.
                while lines.next_line(None)?.is_some() {}
            }
        }
        _ => {}
    }
    Ok(())
}

/// Lines from a stream with a read timeout, keeping partial lines across
/// timeouts (BufRead::read_line may drop them).
struct Lines {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Lines {
    fn new(s: TcpStream) -> Lines {
        Lines { s, buf: Vec::new() }
    }

    /// The next line without its newline; Ok(None) at the end of the
    /// stream; Err(TimedOut) when `wait` passed without a whole line.
    fn next_line(&mut self, wait: Option<Duration>) -> io::Result<Option<String>> {
        let deadline = wait.map(|w| Instant::now() + w);
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return Ok(Some(String::from_utf8_lossy(&line[..i]).trim_end_matches('\r').to_string()));
            }
            let left = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    Some(d - now)
                }
                None => None,
            };
            self.s.set_read_timeout(left)?;
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk) {
                Ok(0) => return Ok(None),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

// ---------------------------------------------------------------- UDP prober

/// What the prober reports (one JSON line at the end).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub interval_ms: f64,
    /// A probe counts as answered when its echo came back within this.
    pub answer_within_ms: f64,
    pub sent: u64,
    pub answered: u64,
    /// Echoes that came back, but later than `answer_within_ms`.
    pub late: u64,
    /// Unanswered probes sent before the first answered one (the path was
    /// not up yet when the prober started).
    pub unanswered_before_first: u64,
    /// Unanswered probes after the first answered one.
    pub lost: u64,
    /// The longest time between the send times of two consecutive answered
    /// probes with lost probes between them (the interval, 10 ms, on a path
    /// that loses nothing): the outage. An outage still going on at the end
    /// counts up to the last probe sent.
    pub longest_gap_ms: f64,
    /// Unix time (s) the longest gap began (the last answered probe's send time).
    pub longest_gap_at: f64,
    /// Every gap longer than the threshold, in order.
    pub gaps: Vec<Gap>,
    pub max_rtt_ms: f64,
    /// How late the sender was against its schedule at worst.
    pub max_send_lag_ms: f64,
    /// The longest time between two consecutive probes that were both
    /// answered: not an outage (nothing was lost) but the prober kept from
    /// running by the machine; not counted in the gaps.
    pub longest_sender_stall_ms: f64,
    /// Unix time (s) of the first and last probe.
    pub start: f64,
    pub end: f64,
}

impl ProbeReport {
    /// The longest gap at the prober's resolution, which is what the HA
    /// goals are judged by. Probes leave on a fixed schedule, so two answered
    /// probes are a whole number of intervals apart; what the send times add
    /// to that is the sender's lateness (microseconds, a few milliseconds on
    /// a busy machine), not outage: 100.008 ms between two answered probes
    /// ten intervals apart is a 100 ms gap, nine probes lost.
    pub fn outage_ms(&self) -> f64 {
        if self.interval_ms <= 0.0 {
            return self.longest_gap_ms;
        }
        (self.longest_gap_ms / self.interval_ms).round() * self.interval_ms
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    /// Unix time (s) of the last answered probe before the gap.
    pub at: f64,
    pub ms: f64,
    /// Probes lost in it.
    pub lost: u64,
    /// Still going on when the prober stopped.
    #[serde(default)]
    pub open: bool,
}

/// One probe: when it left (ms after the first), and its round trip.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub sent_ms: f64,
    pub rtt_ms: Option<f64>,
}

fn ok_within(s: &Sample, within_ms: f64) -> bool {
    s.rtt_ms.is_some_and(|t| t <= within_ms)
}

/// The report of a run, from its samples (in send order).
pub fn analyse(samples: &[Sample], start_unix: f64, interval_ms: f64, within_ms: f64, gap_over_ms: f64) -> ProbeReport {
    let mut r = ProbeReport {
        longest_gap_ms: if samples.iter().filter(|s| ok_within(s, within_ms)).count() > 1 { interval_ms } else { 0.0 },
        interval_ms,
        answer_within_ms: within_ms,
        sent: samples.len() as u64,
        start: start_unix,
        end: start_unix + samples.last().map(|s| s.sent_ms).unwrap_or(0.0) / 1000.0,
        ..ProbeReport::default()
    };
    let ok = |s: &Sample| ok_within(s, within_ms);
    let mut prev: Option<usize> = None;
    let note = |r: &mut ProbeReport, from: usize, ms: f64, lost: u64, open: bool| {
        let at = start_unix + samples[from].sent_ms / 1000.0;
        if lost == 0 {
            // Two consecutive probes, both answered: the path worked; a
            // long time between them is the prober itself kept from
            // running (the probes due meanwhile left late, in a burst).
            r.longest_sender_stall_ms = r.longest_sender_stall_ms.max(ms);
            return;
        }
        if ms > r.longest_gap_ms {
            r.longest_gap_ms = ms;
            r.longest_gap_at = at;
        }
        if ms > gap_over_ms {
            r.gaps.push(Gap { at, ms, lost, open });
        }
    };
    for (j, s) in samples.iter().enumerate() {
        if let Some(t) = s.rtt_ms {
            r.max_rtt_ms = r.max_rtt_ms.max(t);
            if t > within_ms {
                r.late += 1;
            }
        }
        if !ok(s) {
            match prev {
                None => r.unanswered_before_first += 1,
                Some(_) => r.lost += 1,
            }
            continue;
        }
        r.answered += 1;
        if let Some(i) = prev {
            note(&mut r, i, s.sent_ms - samples[i].sent_ms, (j - i - 1) as u64, false);
        }
        prev = Some(j);
    }
    if let Some(i) = prev
        && i + 1 < samples.len()
    {
        let last = samples.len() - 1;
        note(&mut r, i, samples[last].sent_ms - samples[i].sent_ms + interval_ms, (last - i) as u64, true);
    }
    r
}

/// Sends a numbered UDP probe to `to` every `interval` on a fixed schedule,
/// until `duration` passed or stdin closes. Prints "ready" at the first
/// answer (or "unanswered" after 5 s without one), then, after the last
/// probe and `within` for its echo, the report as one JSON line.
pub fn probe(to: SocketAddr, interval: Duration, duration: Option<Duration>, within: Duration) -> Result<()> {
    let sock = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).context("bind UDP")?;
    sock.connect(to).with_context(|| format!("connect UDP to {to}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let (stop, _lines) = watch_stdin();
    let t0 = Instant::now();
    let start_unix = unix_now();
    // (sent, echo arrival) per probe; the sender pushes, the receiver fills in.
    let log: ProbeLog = Arc::default();
    let lag = Arc::new(Mutex::new(Duration::ZERO));
    let sender = {
        let (sock, log, stop, lag) = (sock.try_clone()?, log.clone(), stop.clone(), lag.clone());
        std::thread::spawn(move || {
            let mut pkt = [0u8; 32];
            pkt[..4].copy_from_slice(MAGIC);
            for n in 0u64.. {
                let due = t0 + interval * n as u32;
                sleep_until(due);
                let now = Instant::now();
                if stop.load(Ordering::SeqCst) || duration.is_some_and(|d| now - t0 >= d) {
                    break;
                }
                if let Ok(mut l) = lag.lock() {
                    *l = (*l).max(now - due);
                }
                pkt[4..12].copy_from_slice(&n.to_be_bytes());
                if let Ok(mut l) = log.lock() {
                    l.push((Instant::now(), None));
                }
                // A refused or unreachable send (an ICMP error on the
                // connected socket) is a lost probe, not an error.
                let _ = sock.send(&pkt);
            }
        })
    };
    let mut buf = [0u8; 64];
    let mut ready = false;
    let mut done_at: Option<Instant> = None;
    loop {
        if sender.is_finished() {
            let d = *done_at.get_or_insert_with(Instant::now);
            if d.elapsed() > within {
                break;
            }
        }
        if !ready && t0.elapsed() > Duration::from_secs(5) {
            say("unanswered")?;
            ready = true;
        }
        match sock.recv(&mut buf) {
            Ok(n) if n >= 12 && &buf[..4] == MAGIC => {
                let now = Instant::now();
                let seq = u64::from_be_bytes(buf[4..12].try_into().unwrap_or_default()) as usize;
                if let Ok(mut l) = log.lock()
                    && let Some(p) = l.get_mut(seq)
                    && p.1.is_none()
                {
                    p.1 = Some(now);
                }
                if !ready {
                    say("ready")?;
                    ready = true;
                }
            }
            _ => {}
        }
    }
    let _ = sender.join();
    let log = log.lock().map(|l| l.clone()).unwrap_or_default();
    let first = log.first().map(|p| p.0).unwrap_or(t0);
    let samples: Vec<Sample> = log
        .iter()
        .map(|(s, g)| Sample { sent_ms: (*s - first).as_secs_f64() * 1000.0, rtt_ms: g.map(|g| (g - *s).as_secs_f64() * 1000.0) })
        .collect();
    let mut report = analyse(
        &samples,
        start_unix + (first - t0).as_secs_f64(),
        interval.as_secs_f64() * 1000.0,
        within.as_secs_f64() * 1000.0,
        30.0,
    );
    report.max_send_lag_ms = lag.lock().map(|l| l.as_secs_f64() * 1000.0).unwrap_or(0.0);
    say(&serde_json::to_string(&report)?)?;
    Ok(())
}

// ---------------------------------------------------------------- TCP conversations

/// Which side speaks in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Talk {
    /// The VM sends a numbered line every interval; the server echoes it.
    Speak,
    /// The server sends a numbered line every interval to the VM.
    Push,
}

/// What a conversation reports: at "report" on stdin (for the time since
/// the previous report) and at the end (the whole conversation).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TalkReport {
    pub mode: String,
    /// The source address the server saw.
    pub peer: String,
    /// The connection carried data both ways to the end: no reset, and the
    /// closing "bye" came back within the timeout.
    pub survived: bool,
    pub error: Option<String>,
    /// Lines received (echoes or pushed).
    pub received: u64,
    /// The longest time without a line arriving, within the period.
    pub longest_stall_ms: f64,
    /// Unix time (s) the longest stall began.
    pub stall_at: f64,
    /// Time since the last line arrived, when reported.
    pub quiet_ms: f64,
    /// true in the final report.
    pub last: bool,
}

/// Stall bookkeeping: arrival times of lines.
#[derive(Debug, Default)]
struct Stalls {
    last: Option<(Instant, f64)>,
    longest_ms: f64,
    at: f64,
}

impl Stalls {
    fn arrived(&mut self) {
        let now = (Instant::now(), unix_now());
        if let Some((t, u)) = self.last {
            let ms = (now.0 - t).as_secs_f64() * 1000.0;
            if ms > self.longest_ms {
                self.longest_ms = ms;
                self.at = u;
            }
        }
        self.last = Some(now);
    }

    /// Closes a period at `now`: a stall still going on counts up to now.
    fn close(&mut self) -> (f64, f64, f64) {
        let quiet = self.last.map(|(t, _)| t.elapsed().as_secs_f64() * 1000.0).unwrap_or(0.0);
        if quiet > self.longest_ms {
            self.longest_ms = quiet;
            self.at = self.last.map(|l| l.1).unwrap_or(0.0);
        }
        let r = (self.longest_ms, self.at, quiet);
        // The next period starts now: a silence going on counts from here.
        if self.last.is_some() {
            self.last = Some((Instant::now(), unix_now()));
        }
        self.longest_ms = 0.0;
        self.at = 0.0;
        r
    }
}

/// The VM's end of a conversation with the server at `to`. Prints
/// "connected peer=<address>" once the server has greeted, a JSON report
/// line for every "report" line on stdin, and the final report when stdin
/// closes (after saying "bye" and waiting up to `bye_wait` for the answer).
pub fn talk(to: SocketAddr, mode: Talk, interval: Duration, bye_wait: Duration) -> Result<()> {
    let c = TcpStream::connect_timeout(&to, Duration::from_secs(3)).with_context(|| format!("connect to {to}"))?;
    c.set_nodelay(true)?;
    // Sends give up after 100 ms (and are retried): a send buffer filled
    // during an outage must not hold the schedule or the closing "bye".
    c.set_write_timeout(Some(Duration::from_millis(100)))?;
    let mut lines = Lines::new(c.try_clone()?);
    let greeting = lines.next_line(Some(Duration::from_secs(3))).with_context(|| format!("greeting from {to}"))?;
    let Some(peer) = greeting.as_deref().and_then(|g| g.strip_prefix("peer=")).map(str::to_string) else {
        bail!("{to} did not greet: {greeting:?}");
    };
    let mut w = c.try_clone()?;
    let mode_name = match mode {
        Talk::Speak => "speak".to_string(),
        Talk::Push => format!("push {}", interval.as_millis().max(1)),
    };
    writeln!(w, "{mode_name}")?;
    say(&format!("connected peer={peer}"))?;
    let (stop, requests) = watch_stdin();
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    // The speaking side writes on its schedule, then "bye" when told to stop.
    let writer = {
        let (stop, failed) = (stop.clone(), failed.clone());
        let mut w = c.try_clone()?;
        std::thread::spawn(move || {
            // Lines not yet taken by the socket: a full send buffer (no
            // acknowledgements during an outage) delays them, it does not
            // end the conversation; only a real error (reset) does.
            let mut pending: Vec<u8> = Vec::new();
            let fail = |e: String| {
                if let Ok(mut f) = failed.lock() {
                    f.get_or_insert(e);
                }
            };
            let t0 = Instant::now();
            let mut n: u32 = 0;
            let mut bye_by: Option<Instant> = None;
            loop {
                if bye_by.is_none() && stop.load(Ordering::SeqCst) {
                    pending.extend_from_slice(b"bye\n");
                    bye_by = Some(Instant::now() + bye_wait);
                }
                if bye_by.is_none() && mode == Talk::Speak {
                    n += 1;
                    pending.extend_from_slice(format!("{n}\n").as_bytes());
                }
                while !pending.is_empty() {
                    match w.write(&pending) {
                        Ok(0) => {
                            fail("send: connection closed".into());
                            return;
                        }
                        Ok(k) => {
                            pending.drain(..k);
                        }
                        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            fail(format!("send: {e}"));
                            return;
                        }
                    }
                }
                match bye_by {
                    Some(by) if pending.is_empty() || Instant::now() > by => return,
                    Some(_) => std::thread::sleep(Duration::from_millis(5)),
                    None if mode == Talk::Speak => sleep_until(t0 + interval * n),
                    None => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        })
    };
    let mut report = TalkReport { mode: format!("{mode:?}").to_lowercase(), peer, ..TalkReport::default() };
    let mut stalls = Stalls::default();
    let mut stop_seen: Option<Instant> = None;
    let mut expect: u64 = 1;
    loop {
        while let Ok(req) = requests.try_recv() {
            if req.trim() == "report" {
                let (ms, at, quiet) = stalls.close();
                let snap = TalkReport {
                    longest_stall_ms: ms,
                    stall_at: at,
                    quiet_ms: quiet,
                    survived: report.error.is_none(),
                    ..report.clone()
                };
                say(&serde_json::to_string(&snap)?)?;
            }
        }
        if stop.load(Ordering::SeqCst) && stop_seen.is_none() {
            stop_seen = Some(Instant::now());
        }
        if let Some(s) = stop_seen
            && s.elapsed() > bye_wait
        {
            report.error.get_or_insert(format!("no answer to bye within {:.1} s", bye_wait.as_secs_f64()));
            break;
        }
        if let Some(e) = failed.lock().ok().and_then(|f| f.clone()) {
            report.error.get_or_insert(e);
            break;
        }
        match lines.next_line(Some(Duration::from_millis(20))) {
            Ok(Some(l)) if l == "bye" => {
                // Only ever after we said it (the stop may be newer than
                // the check at the top of this loop).
                report.survived = stop_seen.is_some() || stop.load(Ordering::SeqCst);
                break;
            }
            Ok(Some(l)) => {
                stalls.arrived();
                report.received += 1;
                match l.parse::<u64>() {
                    Ok(n) if n == expect => expect += 1,
                    _ => {
                        report.error.get_or_insert(format!("line {l:?} where {expect} was due"));
                    }
                }
            }
            Ok(None) => {
                report.error.get_or_insert("the server closed the connection".into());
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            Err(e) => {
                report.error.get_or_insert(format!("receive: {e}"));
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    if report.error.is_some() {
        report.survived = false;
    }
    let (ms, at, quiet) = stalls.close();
    report.longest_stall_ms = ms;
    report.stall_at = at;
    report.quiet_ms = quiet;
    report.last = true;
    let _ = c.shutdown(std::net::Shutdown::Both);
    say(&serde_json::to_string(&report)?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pattern: &str) -> ProbeReport {
        // '.' answered, 'x' lost, 'l' late; one probe every 10 ms.
        let samples: Vec<Sample> = pattern
            .chars()
            .enumerate()
            .map(|(i, c)| Sample {
                sent_ms: i as f64 * 10.0,
                rtt_ms: match c {
                    '.' => Some(0.5),
                    'l' => Some(300.0),
                    _ => None,
                },
            })
            .collect();
        analyse(&samples, 1000.0, 10.0, 100.0, 30.0)
    }

    #[test]
    fn no_loss_is_one_interval() {
        let r = run("..........");
        assert_eq!((r.sent, r.answered, r.lost), (10, 10, 0));
        assert_eq!(r.longest_gap_ms, 10.0);
        assert!(r.gaps.is_empty());
    }

    #[test]
    fn an_outage_is_the_time_between_answered_probes() {
        let r = run("....xxxxx...xx..");
        assert_eq!(r.lost, 7);
        assert_eq!(r.longest_gap_ms, 60.0, "probe 3 to probe 9");
        assert_eq!(r.longest_gap_at, 1000.03);
        assert_eq!(r.gaps.len(), 1, "the 30 ms gap is not above the threshold: {:?}", r.gaps);
        assert_eq!(r.gaps[0].lost, 5);
    }

    #[test]
    fn a_prober_kept_from_running_is_no_outage() {
        // Probes 0-2 on time; then the machine stalls the prober for 250 ms
        // and the probes due meanwhile leave in a burst, all answered.
        let mut samples: Vec<Sample> = (0..3).map(|i| Sample { sent_ms: i as f64 * 10.0, rtt_ms: Some(0.5) }).collect();
        samples.extend((3..30).map(|i| Sample { sent_ms: 270.0 + i as f64 * 0.01, rtt_ms: Some(0.5) }));
        let r = analyse(&samples, 0.0, 10.0, 100.0, 30.0);
        assert_eq!((r.lost, r.longest_gap_ms), (0, 10.0));
        assert!(r.gaps.is_empty());
        assert!((r.longest_sender_stall_ms - 250.03).abs() < 1e-6, "{}", r.longest_sender_stall_ms);
    }

    #[test]
    fn an_outage_is_counted_in_whole_intervals() {
        // Ten intervals between the answered probes, the second sent 8 µs
        // late: a 100 ms gap. Six intervals, sent 1.3 ms late: 60 ms.
        let mut samples: Vec<Sample> = (0..12).map(|i| Sample { sent_ms: i as f64 * 10.0, rtt_ms: None }).collect();
        samples[0].rtt_ms = Some(0.5);
        samples[10] = Sample { sent_ms: 100.008, rtt_ms: Some(0.5) };
        samples[11].rtt_ms = Some(0.5);
        let r = analyse(&samples, 0.0, 10.0, 100.0, 30.0);
        assert!((r.longest_gap_ms - 100.008).abs() < 1e-9, "{}", r.longest_gap_ms);
        assert_eq!(r.outage_ms(), 100.0);
        let mut r = run("..xxxxx...");
        r.longest_gap_ms += 1.3;
        assert_eq!(r.outage_ms(), 60.0);
        // One more lost probe is one more interval.
        assert_eq!(run("..xxxxxx...").outage_ms(), 70.0);
    }

    #[test]
    fn a_late_echo_counts_as_lost() {
        let r = run("..lll..");
        assert_eq!((r.late, r.lost, r.answered), (3, 3, 4));
        assert_eq!(r.longest_gap_ms, 40.0);
        assert_eq!(r.max_rtt_ms, 300.0);
    }

    #[test]
    fn an_outage_at_the_end_counts_to_the_last_probe() {
        let r = run("...xxxxxxx");
        assert_eq!(r.longest_gap_ms, 80.0);
        assert!(r.gaps[0].open);
    }

    #[test]
    fn probes_before_the_path_came_up_are_not_an_outage() {
        let r = run("xxxx......");
        assert_eq!((r.unanswered_before_first, r.lost), (4, 0));
        assert_eq!(r.longest_gap_ms, 10.0);
    }

    #[test]
    fn nothing_answered() {
        let r = run("xxxx");
        assert_eq!((r.answered, r.unanswered_before_first), (0, 4));
        assert_eq!(r.longest_gap_ms, 0.0);
    }

    #[test]
    fn prober_and_conversations_over_loopback() {
        // The agents end to end on 127.0.0.1 (no namespace needed).
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        std::thread::spawn(move || serve(addr));
        std::thread::sleep(Duration::from_millis(200));
        // UDP echo.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.send_to(b"vxhp12345678", addr).unwrap();
        let mut b = [0u8; 32];
        let (n, _) = s.recv_from(&mut b).unwrap();
        assert_eq!(&b[..n], b"vxhp12345678");
        // A pushing conversation, its greeting and its bye.
        let c = TcpStream::connect(addr).unwrap();
        let mut lines = Lines::new(c.try_clone().unwrap());
        let mut w = c.try_clone().unwrap();
        assert_eq!(lines.next_line(Some(Duration::from_secs(2))).unwrap().unwrap(), "peer=127.0.0.1");
        w.write_all(b"push 5\n").unwrap();
        for want in 1..=5 {
            assert_eq!(lines.next_line(Some(Duration::from_secs(2))).unwrap().unwrap(), want.to_string());
        }
        w.write_all(b"bye\n").unwrap();
        let mut got = Vec::new();
        while let Ok(Some(l)) = lines.next_line(Some(Duration::from_secs(2))) {
            if l == "bye" {
                got.push(l);
                break;
            }
        }
        assert_eq!(got, ["bye"]);
        // A speaking one echoes.
        let c = TcpStream::connect(addr).unwrap();
        let mut lines = Lines::new(c.try_clone().unwrap());
        let mut w = c.try_clone().unwrap();
        lines.next_line(Some(Duration::from_secs(2))).unwrap();
        w.write_all(b"speak\n1\n2\nbye\n").unwrap();
        for want in ["1", "2", "bye"] {
            assert_eq!(lines.next_line(Some(Duration::from_secs(2))).unwrap().unwrap(), want);
        }
    }

    #[test]
    fn stalls_count_a_silence_still_going_on() {
        let mut s = Stalls::default();
        s.arrived();
        std::thread::sleep(Duration::from_millis(30));
        s.arrived();
        std::thread::sleep(Duration::from_millis(60));
        let (ms, _, quiet) = s.close();
        assert!(ms >= 60.0 && quiet >= 60.0, "{ms} {quiet}");
        // A new period starts from zero.
        s.arrived();
        let (ms, _, _) = s.close();
        assert!(ms < 60.0, "{ms}");
    }
}
