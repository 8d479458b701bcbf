//! A tiny TCP agent the lab runs inside its nodes (`vxrouter __agent …`),
//! so checks need no extra tools: the listener reports the source address it
//! saw and the bytes it received, which is what the internet side captures.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Accepts connections until killed; for each, reads to EOF and answers
/// "peer=<source address> bytes=<count>".
pub fn listen(addr: SocketAddr) -> Result<()> {
    let l = TcpListener::bind(addr).with_context(|| format!("listen on {addr}"))?;
    println!("listening");
    std::io::stdout().flush()?;
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        std::thread::spawn(move || {
            let _ = c.set_read_timeout(Some(Duration::from_secs(60)));
            let peer = c.peer_addr().map(|p| p.ip().to_string()).unwrap_or_default();
            let mut buf = vec![0u8; 1 << 16];
            let mut total: u64 = 0;
            loop {
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => total += n as u64,
                    Err(_) => return,
                }
            }
            let _ = writeln!(c, "peer={peer} bytes={total}");
        });
    }
    Ok(())
}

/// Connects, sends `bytes` bytes, and prints the listener's answer.
pub fn send(addr: SocketAddr, bytes: u64, timeout: Duration) -> Result<()> {
    let mut c = TcpStream::connect_timeout(&addr, timeout).with_context(|| format!("connect to {addr}"))?;
    c.set_write_timeout(Some(timeout * 4))?;
    c.set_read_timeout(Some(timeout * 4))?;
    let chunk = vec![0x5au8; 1 << 16];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        c.write_all(&chunk[..n]).with_context(|| format!("send to {addr} ({} of {bytes} bytes sent)", bytes - left))?;
        left -= n as u64;
    }
    c.shutdown(Shutdown::Write)?;
    let mut answer = String::new();
    c.read_to_string(&mut answer).with_context(|| format!("read answer from {addr}"))?;
    if answer.is_empty() {
        bail!("no answer from {addr}");
    }
    print!("{answer}");
    Ok(())
}

/// Sends one VXLAN packet from `from` to `to`:`port` carrying an ARP request
/// "who has `target`? tell `sender`" — what an intruder on the underlay
/// would inject into a segment. Used to test underlay protection.
pub fn vxlan_inject(
    from: std::net::Ipv4Addr,
    to: SocketAddr,
    vni: u32,
    sender: std::net::Ipv4Addr,
    target: std::net::Ipv4Addr,
) -> Result<()> {
    let mac = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    let mut pkt = vec![0x08, 0, 0, 0];
    pkt.extend_from_slice(&(vni << 8).to_be_bytes());
    let mut arp = vxrouter::garp::frame(mac, sender).to_vec();
    arp[38..42].copy_from_slice(&target.octets());
    pkt.extend_from_slice(&arp);
    let sock = std::net::UdpSocket::bind((from, 0)).with_context(|| format!("bind {from}"))?;
    sock.send_to(&pkt, to).with_context(|| format!("send to {to}"))?;
    Ok(())
}
