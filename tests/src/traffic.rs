//! Traffic between namespaces: ping, and a checksummed TCP transfer done
//! in-process with sockets opened inside the namespaces.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::wait::wait_until;

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

const CHUNK: usize = 64 * 1024;
const POOL: usize = 1024 * 1024;

/// `ping -c COUNT -W 1 -i 0.2 ADDR` inside `ns` (IPv4 or IPv6); true if
/// any reply came back. A failed ping's output goes to stderr.
pub fn ping(ns: &Netns, addr: IpAddr, count: u32) -> bool {
    let count = count.max(1).to_string();
    let addr_s = addr.to_string();
    match ns.exec(
        "ping",
        [
            "-c",
            count.as_str(),
            "-W",
            "1",
            "-i",
            "0.2",
            addr_s.as_str(),
        ],
    ) {
        Ok(out) if out.status.success() => true,
        Ok(out) => {
            eprintln!(
                "wgd-tests: ping {addr} from {} failed ({}):\n{}{}",
                ns.name(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            false
        }
        Err(e) => {
            eprintln!("wgd-tests: ping {addr} from {}: {e}", ns.name());
            false
        }
    }
}

/// `ping -c 1 -i 0.1 -w DEADLINE ADDR` inside `ns`: an echo request every
/// 100 ms until the first reply or the deadline (whole seconds, at least
/// 1). Returns how long the first reply took, `None` if none came.
pub fn ping_within(ns: &Netns, addr: IpAddr, deadline: Duration) -> Option<Duration> {
    let secs = deadline.as_secs().max(1).to_string();
    let addr_s = addr.to_string();
    let t0 = std::time::Instant::now();
    let out = ns
        .exec(
            "ping",
            ["-c", "1", "-i", "0.1", "-w", secs.as_str(), addr_s.as_str()],
        )
        .ok()?;
    out.status.success().then(|| t0.elapsed())
}

/// `ping -c 1 -W WAIT ADDR` inside `ns` (`WAIT` in whole seconds, at
/// least 1): true if the one reply came back. Quiet, for probes whose
/// failure is an outcome to record rather than an error.
pub fn ping_once(ns: &Netns, addr: IpAddr, wait: Duration) -> bool {
    let wait = wait.as_secs().max(1).to_string();
    let addr = addr.to_string();
    ns.exec(
        "ping",
        ["-n", "-c", "1", "-W", wait.as_str(), addr.as_str()],
    )
    .map(|out| out.status.success())
    .unwrap_or(false)
}

/// What a [`tcp_transfer`] sent and received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub sent_bytes: u64,
    pub received_bytes: u64,
    pub sent_sha256: [u8; 32],
    pub received_sha256: [u8; 32],
    pub elapsed: Duration,
}

impl Transfer {
    /// Same byte count and checksum at both ends.
    pub fn is_intact(&self) -> bool {
        self.sent_bytes == self.received_bytes && self.sent_sha256 == self.received_sha256
    }

    /// Goodput in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        self.received_bytes as f64 * 8.0 / secs / 1e6
    }
}

impl std::fmt::Display for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} B sha256 {}, received {} B sha256 {}, {:?} ({:.0} Mbit/s)",
            self.sent_bytes,
            hex(&self.sent_sha256),
            self.received_bytes,
            hex(&self.received_sha256),
            self.elapsed,
            self.mbit_per_s()
        )
    }
}

/// Sends `mib` MiB of random bytes over TCP from namespace `from` to a
/// listener on `to_addr` (an ephemeral port) in namespace `to`, hashing at
/// both ends. Everything, connect to last byte, is bounded by `timeout`.
pub fn tcp_transfer(
    from: &Netns,
    to: &Netns,
    to_addr: IpAddr,
    mib: u64,
    timeout: Duration,
) -> Result<Transfer> {
    let start = Instant::now();
    let deadline = start + timeout;
    let total = mib * MIB;
    let listener = to
        .enter(|| TcpListener::bind((to_addr, 0)))?
        .map_err(|e| Error::io(format!("listen on {to_addr} in {}", to.name()), e))?;
    let dest = listener
        .local_addr()
        .map_err(|e| Error::io("listener address", e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::io("listener nonblocking", e))?;
    let give_up = AtomicBool::new(false);

    std::thread::scope(|scope| {
        let receiver = scope.spawn(|| receive(listener, deadline, total, &give_up));
        let sent = send(from, dest, deadline, total);
        if sent.is_err() {
            give_up.store(true, Ordering::Relaxed);
        }
        let received = match receiver.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let (sent_bytes, sent_sha256) = sent?;
        let (received_bytes, received_sha256) = received?;
        Ok(Transfer {
            sent_bytes,
            received_bytes,
            sent_sha256,
            received_sha256,
            elapsed: start.elapsed(),
        })
    })
}

fn remaining(deadline: Instant, what: &str) -> Result<Duration> {
    let now = Instant::now();
    if now >= deadline {
        return Err(Error::Timeout {
            what: what.to_string(),
            after: Duration::ZERO,
        });
    }
    Ok(deadline - now)
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Timeout {
            what: what.to_string(),
            after: Duration::ZERO,
        },
        _ => Error::io(what, e),
    }
}

fn send(from: &Netns, dest: SocketAddr, deadline: Instant, total: u64) -> Result<(u64, [u8; 32])> {
    let wait = remaining(deadline, "TCP connect")?;
    let mut stream = from
        .enter(|| TcpStream::connect_timeout(&dest, wait))?
        .map_err(|e| io_err(&format!("connect to {dest} from {}", from.name()), e))?;
    let mut hasher = Sha256::new();
    // Random bytes cost more than the transfer in a debug build, so draw
    // one pool and send windows of it, each stamped with its chunk number:
    // a lost, repeated or reordered chunk still changes the checksum.
    let mut pool = vec![0u8; POOL];
    rand::thread_rng().fill_bytes(&mut pool);
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    let chunks = total.div_ceil(CHUNK as u64);
    for i in 0..chunks {
        let n = (total - sent).min(CHUNK as u64) as usize;
        let at = (i as usize * 4099) % (POOL - CHUNK);
        buf.copy_from_slice(&pool[at..at + CHUNK]);
        let stamp = i.to_le_bytes();
        let k = stamp.len().min(n);
        buf[..k].copy_from_slice(&stamp[..k]);
        hasher.update(&buf[..n]);
        stream
            .set_write_timeout(Some(remaining(deadline, "TCP send")?))
            .map_err(|e| Error::io("set write timeout", e))?;
        stream
            .write_all(&buf[..n])
            .map_err(|e| io_err(&format!("send to {dest} ({sent} B sent)"), e))?;
        sent += n as u64;
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| Error::io("shutdown write", e))?;
    // Wait for the receiver to close: everything has then been delivered.
    // It sends nothing, so this read returns 0 (EOF), bounded by the deadline.
    stream
        .set_read_timeout(Some(remaining(deadline, "receiver close")?))
        .map_err(|e| Error::io("set read timeout", e))?;
    let mut sink = [0u8; 64];
    match stream.read(&mut sink) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => return Err(io_err("waiting for the receiver to close", e)),
    }
    Ok((sent, hasher.finalize().into()))
}

fn receive(
    listener: TcpListener,
    deadline: Instant,
    total: u64,
    give_up: &AtomicBool,
) -> Result<(u64, [u8; 32])> {
    let mut accepted = None;
    wait_until(remaining(deadline, "TCP accept")?, "TCP accept", || {
        if give_up.load(Ordering::Relaxed) {
            return true;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                accepted = Some(Ok(stream));
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => {
                accepted = Some(Err(e));
                true
            }
        }
    })?;
    let mut stream = match accepted {
        Some(Ok(stream)) => stream,
        Some(Err(e)) => return Err(Error::io("TCP accept", e)),
        None => return Err(Error::other("sender failed before connecting")),
    };
    stream
        .set_nonblocking(false)
        .map_err(|e| Error::io("stream blocking", e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut received = 0u64;
    // Every read returns at least one byte until EOF, so this bounds the
    // loop even apart from the deadline.
    for _ in 0..=total + 1 {
        stream
            .set_read_timeout(Some(remaining(deadline, "TCP receive")?))
            .map_err(|e| Error::io("set read timeout", e))?;
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(&format!("receive ({received} B so far)"), e)),
        };
        hasher.update(&buf[..n]);
        received += n as u64;
        if received > total {
            return Err(Error::other(format!(
                "received {received} B, more than the {total} B sent"
            )));
        }
    }
    Ok((received, hasher.finalize().into()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
