//! A reboot storm of WireGuard handshakes (issue 10, part 4): many
//! configured peers, a subset of them initiating at the same instant, as
//! after a hub or an uplink comes back.
//!
//! - **Keys** are derived from a seed, so the configuration written for
//!   `wg setconf` ([`setconf_text`]) and the client that storms
//!   ([`run_client`]) agree without passing secrets around. Stormers are
//!   real X25519 key pairs; the other peers' public keys are hashed bytes
//!   (any 32 bytes are a valid X25519 public key, and nobody ever
//!   handshakes with them).
//! - **The client** drives one boringtun [`Tunn`] per stormer: a
//!   WireGuard implementation we did not write, so a handshake counts only
//!   if boringtun accepts the response. All first initiations are made
//!   before the clock starts and sent back to back; boringtun consumes
//!   cookie replies and retries (with MAC2) from its own timers, which
//!   [`run_client`] drives with `update_timers`. boringtun retries at
//!   exactly REKEY_TIMEOUT; the whitepaper adds up to 333 ms of jitter,
//!   which the client adds by holding each peer's timer call back by a
//!   random amount (unless [`ClientConfig::jitter`] is off).
//! - **Sources.** Each stormer sends from its own IPv4 address
//!   ([`source_addr`], in 10.98.0.0/16, on the client namespace's `lo`),
//!   as peers behind their own addresses do: the responder's per-source
//!   rate limit (20 handshakes/s per address under load) then does not
//!   decide the result. With fewer sources than stormers, stormers share
//!   addresses (peers behind one NAT). One socket serves all of them:
//!   sends pick the source with `IP_PKTINFO`, and replies are routed to
//!   their [`Tunn`] by the receiver index, which boringtun derives from
//!   the index we give each tunnel.
//! - **The single-process bound** ([`single_process_bound`]) runs the same
//!   responder work through `wg_handshake::Core` and `wg_crypto::KeyStore`
//!   in one thread, as `wg-handshake/benches/handshake.rs` does for one
//!   pair, with the same number of configured peers.

use std::io::IoSlice;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, ControlMessage, MsgFlags, SockaddrIn};
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The whitepaper's REKEY_TIMEOUT: boringtun retries after this.
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// The whitepaper's retransmission jitter (up to this much, uniformly).
pub const REKEY_TIMEOUT_JITTER: Duration = Duration::from_millis(333);
/// The whitepaper's REKEY_ATTEMPT_TIME: a peer gives up after this.
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);

/// Stormers' source addresses are `SOURCE_NET + 1 + k`.
pub const SOURCE_NET: Ipv4Addr = Ipv4Addr::new(10, 98, 0, 0);
/// Its prefix length (the responder routes it to the client).
pub const SOURCE_PREFIX: u8 = 16;
/// Most distinct source addresses [`source_addr`] hands out.
pub const MAX_SOURCES: u32 = (1 << (32 - SOURCE_PREFIX)) - 2;
/// Most peers a configuration may have: [`allowed_ip`] gives each one
/// address of 172.16.0.0/12.
pub const MAX_PEERS: u32 = 1 << 20;
/// boringtun keeps the low 8 bits of a session index for itself.
const MAX_TUNNELS: u32 = 1 << 24;

/// How often the client drives boringtun's timers.
const TICK: Duration = Duration::from_millis(20);
/// Largest datagram the client expects (a handshake response is 92 bytes).
const BUF: usize = 2048;

// ------------------------------------------------------------------ keys

fn derive(seed: u64, label: &str, i: u32) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"wgd-storm\0");
    h.update(label.as_bytes());
    h.update(seed.to_le_bytes());
    h.update(i.to_le_bytes());
    h.finalize().into()
}

fn clamp(mut k: [u8; 32]) -> [u8; 32] {
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    k
}

/// The responder's private key.
pub fn server_secret(seed: u64) -> [u8; 32] {
    clamp(derive(seed, "server", 0))
}

/// The responder's public key.
pub fn server_public(seed: u64) -> [u8; 32] {
    x25519::PublicKey::from(&x25519::StaticSecret::from(server_secret(seed))).to_bytes()
}

/// Private key of configured peer `i` (meaningful for stormers only).
pub fn peer_secret(seed: u64, i: u32) -> [u8; 32] {
    clamp(derive(seed, "peer", i))
}

/// Which of `peers` configured peers storm: `stormers` of them, spread
/// evenly over the configuration.
pub fn stormer_ids(peers: u32, stormers: u32) -> Vec<u32> {
    if stormers == 0 {
        return Vec::new();
    }
    let step = (peers / stormers).max(1);
    (0..stormers.min(peers)).map(|k| k * step).collect()
}

/// Public keys of all configured peers, in configuration order.
pub fn peer_publics(seed: u64, peers: u32, stormers: u32) -> Vec<[u8; 32]> {
    let mut out: Vec<[u8; 32]> = (0..peers).map(|i| derive(seed, "filler", i)).collect();
    for i in stormer_ids(peers, stormers) {
        let secret = x25519::StaticSecret::from(peer_secret(seed, i));
        out[i as usize] = x25519::PublicKey::from(&secret).to_bytes();
    }
    out
}

/// The one allowed IP of configured peer `i`: 172.16.0.0/12 + i, /32.
pub fn allowed_ip(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 0)) + (i % MAX_PEERS))
}

/// The responder's configuration in wg(8)'s format, for `wg setconf`.
pub fn setconf_text(seed: u64, peers: u32, stormers: u32, listen_port: u16) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(peers as usize * 100 + 128);
    let _ = write!(
        s,
        "[Interface]\nPrivateKey = {}\nListenPort = {listen_port}\n",
        B64.encode(server_secret(seed))
    );
    for (i, key) in peer_publics(seed, peers, stormers).iter().enumerate() {
        let _ = write!(
            s,
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}/32\n",
            B64.encode(key),
            allowed_ip(i as u32)
        );
    }
    s
}

/// Source address number `k` (0-based) of the stormers.
pub fn source_addr(k: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(SOURCE_NET) + 1 + (k % MAX_SOURCES))
}

/// `ip -batch` lines that put `sources` source addresses on `dev`.
pub fn source_addr_batch(sources: u32, dev: &str) -> String {
    let mut s = String::new();
    for k in 0..sources.min(MAX_SOURCES) {
        s.push_str(&format!("addr add {}/32 dev {dev}\n", source_addr(k)));
    }
    s
}

/// Puts `sources` source addresses ([`source_addr`]) on `lo` in `ns`.
pub fn add_sources(ns: &crate::Netns, sources: u32) -> Result<()> {
    use std::io::Write as _;
    let mut file = tempfile::NamedTempFile::new().map_err(|e| Error::io("batch temp file", e))?;
    file.write_all(source_addr_batch(sources, "lo").as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| Error::io("write batch file", e))?;
    let path = file.path().to_string_lossy().into_owned();
    ns.ip(["-batch", path.as_str()]).map(drop)
}

/// Datagrams the kernel dropped in `ns` because a UDP socket's receive
/// buffer was full (`RcvbufErrors` of `/proc/net/snmp` there).
pub fn udp_rcvbuf_errors(ns: &crate::Netns) -> Result<u64> {
    let text = ns.run("cat", ["/proc/net/snmp"])?;
    let mut udp = text.lines().filter(|l| l.starts_with("Udp:"));
    let (Some(names), Some(values)) = (udp.next(), udp.next()) else {
        return Err(Error::Other("/proc/net/snmp has no Udp lines".into()));
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "RcvbufErrors")
        .and_then(|(_, v)| v.parse().ok())
        .ok_or_else(|| Error::Other("/proc/net/snmp: no Udp RcvbufErrors".into()))
}

// ------------------------------------------------------------------ client

/// What [`run_client`] does.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    pub seed: u64,
    /// Configured peers (only to know which of them storm).
    pub peers: u32,
    pub stormers: u32,
    /// Distinct source addresses; stormer `j` uses [`source_addr`]`(j %
    /// sources)`. They must exist in the client's namespace.
    pub sources: u32,
    /// The responder's UDP endpoint.
    pub server: SocketAddrV4,
    /// The client's UDP port (on every source address).
    pub local_port: u16,
    /// Hard bound on the whole run.
    pub deadline: Duration,
    /// Add the whitepaper's retransmission jitter to boringtun's retries.
    pub jitter: bool,
}

impl ClientConfig {
    fn check(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Other(format!("storm client: {m}")));
        if self.stormers == 0 || self.stormers > self.peers {
            return bad("need 1 ≤ stormers ≤ peers");
        }
        if self.peers > MAX_PEERS || self.stormers >= MAX_TUNNELS {
            return bad("too many peers");
        }
        if self.sources == 0 || self.sources > MAX_SOURCES {
            return bad("need 1 ≤ sources ≤ 65534");
        }
        Ok(())
    }
}

/// What one storm achieved, as the client saw it.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub stormers: u32,
    /// Handshakes boringtun completed (it accepted the response).
    pub completed: u32,
    /// Stormers boringtun gave up on (REKEY_ATTEMPT_TIME passed).
    pub expired: u32,
    /// Completion times since the first initiation went out, sorted.
    pub completions: Vec<Duration>,
    /// Completed at the first initiation, without a retry.
    pub first_try: u32,
    /// Initiations sent, first ones and retries.
    pub initiations: u64,
    /// Cookie replies boringtun accepted (and will answer with MAC2).
    pub cookie_replies: u64,
    /// Cookie replies boringtun refused (e.g. for an older initiation).
    pub stale_cookie_replies: u64,
    /// Handshake responses received.
    pub responses: u64,
    /// Responses or other packets boringtun refused.
    pub refused: u64,
    /// Datagrams that matched no stormer.
    pub stray: u64,
    /// Most initiations one completed stormer needed.
    pub max_attempts: u32,
    /// How long the run took, from the first initiation.
    pub elapsed: Duration,
    /// The deadline ended the run before every stormer was done.
    pub timed_out: bool,
}

impl Report {
    /// Initiations that got no answer at all, neither a cookie reply nor
    /// a response: lost in the responder's queues (or refused silently).
    pub fn unanswered(&self) -> u64 {
        self.initiations
            .saturating_sub(self.cookie_replies + self.stale_cookie_replies + self.responses)
    }

    /// Seconds from the first initiation to the last completion.
    pub fn seconds_to_last(&self) -> Option<f64> {
        self.completions.last().map(Duration::as_secs_f64)
    }

    /// Completed handshakes per second over the whole storm.
    pub fn overall_rate(&self) -> Option<f64> {
        let t = self.seconds_to_last()?;
        (t > 0.0).then(|| f64::from(self.completed) / t)
    }

    /// Completed handshakes per second while the responder had work
    /// queued: completions closer than `BUSY_GAP` to the one before are
    /// taken as the responder working through a backlog, and their count
    /// over the sum of their gaps is its service rate. The retry timers'
    /// idle seconds, which [`Report::overall_rate`] includes, are left out.
    pub fn busy_rate(&self) -> Option<f64> {
        const BUSY_GAP: Duration = Duration::from_millis(50);
        let mut n = 0u32;
        let mut sum = Duration::ZERO;
        for w in self.completions.windows(2) {
            let gap = w[1].saturating_sub(w[0]);
            if gap < BUSY_GAP {
                n += 1;
                sum += gap;
            }
        }
        (n >= 10 && !sum.is_zero()).then(|| f64::from(n) / sum.as_secs_f64())
    }

    /// Completions in each whole second since the first initiation.
    pub fn timeline(&self) -> Vec<u32> {
        self.timeline_by(Duration::from_secs(1))
    }

    /// Completions in each `bucket` since the first initiation.
    pub fn timeline_by(&self, bucket: Duration) -> Vec<u32> {
        let bucket = bucket.as_micros().max(1);
        let mut v: Vec<u32> = Vec::new();
        for t in &self.completions {
            let s = (t.as_micros() / bucket) as usize;
            if v.len() <= s {
                v.resize(s + 1, 0);
            }
            v[s] += 1;
        }
        v
    }

    /// Every stormer completed within REKEY_ATTEMPT_TIME of its first
    /// initiation (they all started at 0).
    pub fn all_within_retry_schedule(&self) -> bool {
        self.completed == self.stormers
            && self
                .completions
                .last()
                .is_some_and(|t| *t < REKEY_ATTEMPT_TIME)
    }

    /// One line of `key=value` fields, for scripts.
    pub fn to_line(&self) -> String {
        let f = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}"));
        format!(
            "stormers={} completed={} expired={} first_try={} seconds_to_last={} \
             hs_per_s={} busy_hs_per_s={} initiations={} cookie_replies={} \
             stale_cookie_replies={} responses={} unanswered={} refused={} stray={} \
             max_attempts={} timed_out={}",
            self.stormers,
            self.completed,
            self.expired,
            self.first_try,
            self.seconds_to_last()
                .map_or("-".to_string(), |t| format!("{t:.2}")),
            f(self.overall_rate()),
            f(self.busy_rate()),
            self.initiations,
            self.cookie_replies,
            self.stale_cookie_replies,
            self.responses,
            self.unanswered(),
            self.refused,
            self.stray,
            self.max_attempts,
            self.timed_out,
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Done,
    Expired,
}

struct Stormer {
    tunn: Tunn,
    source: Ipv4Addr,
    state: State,
    attempts: u32,
    last_sent: Instant,
    /// This retry's share of the whitepaper's jitter.
    jitter: Duration,
}

/// The client's one UDP socket: bound to every local address, sending
/// from the address each stormer owns.
struct Wire {
    sock: UdpSocket,
    server: SockaddrIn,
}

impl Wire {
    fn new(port: u16, server: SocketAddrV4) -> Result<Wire> {
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            .map_err(|e| Error::io(format!("bind UDP port {port}"), e))?;
        // The responder's answers to a thousand peers arrive together; the
        // client is not what is measured, so it must not drop them.
        let want = 16 << 20;
        if socket::setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &want).is_err() {
            let _ = socket::setsockopt(&sock.as_fd(), sockopt::RcvBuf, &want);
        }
        Ok(Wire {
            sock,
            server: SockaddrIn::from(server),
        })
    }

    /// Sends `bytes` to the responder from `src` (IP_PKTINFO), waiting
    /// (boundedly) while the socket's buffer is full.
    fn send_from(&self, src: Ipv4Addr, bytes: &[u8]) -> Result<()> {
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr {
                s_addr: u32::from_ne_bytes(src.octets()),
            },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
        let iov = [IoSlice::new(bytes)];
        for _ in 0..100 {
            match socket::sendmsg(
                self.sock.as_raw_fd(),
                &iov,
                &cmsg,
                MsgFlags::empty(),
                Some(&self.server),
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => {
                    let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLOUT)];
                    let _ = poll(&mut fds, PollTimeout::from(10u16));
                }
                Err(e) => return Err(Error::io(format!("send from {src}"), e.into())),
            }
        }
        Err(Error::Other(format!("send from {src}: socket stayed full")))
    }

    /// Waits up to `timeout` for a datagram.
    fn readable(&self, timeout: Duration) -> Result<bool> {
        let ms = timeout.as_millis().min(1000) as u16;
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(false),
            Err(e) => Err(Error::io("poll", e.into())),
        }
    }

    /// One datagram if one is waiting: (length, sender).
    fn try_recv(&self, buf: &mut [u8]) -> Result<Option<(usize, Option<SocketAddr>)>> {
        match socket::recvfrom::<SockaddrIn>(self.sock.as_raw_fd(), buf) {
            Ok((n, from)) => Ok(Some((n, from.map(|a| SocketAddr::V4(a.into()))))),
            Err(nix::errno::Errno::EAGAIN) => Ok(None),
            Err(nix::errno::Errno::EINTR) => Ok(None),
            Err(e) => Err(Error::io("receive", e.into())),
        }
    }
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Runs one storm against the responder at `cfg.server` and reports what
/// the stormers saw. The source addresses must already exist; the run
/// ends when every stormer completed or gave up, or at `cfg.deadline`.
pub fn run_client(cfg: &ClientConfig) -> Result<Report> {
    cfg.check()?;
    let wire = Wire::new(cfg.local_port, cfg.server)?;
    wire.sock
        .set_nonblocking(true)
        .map_err(|e| Error::io("non-blocking socket", e))?;
    let server_key = x25519::PublicKey::from(server_public(cfg.seed));
    let server_ip = IpAddr::V4(*cfg.server.ip());
    let mut rng = rand::thread_rng();
    let jitter = |rng: &mut rand::rngs::ThreadRng| {
        if cfg.jitter {
            Duration::from_millis(rng.gen_range(0..=REKEY_TIMEOUT_JITTER.as_millis() as u64))
        } else {
            Duration::ZERO
        }
    };

    // Every first initiation is made before the clock starts.
    let ids = stormer_ids(cfg.peers, cfg.stormers);
    let mut stormers = Vec::with_capacity(ids.len());
    let mut firsts = Vec::with_capacity(ids.len());
    let mut buf = vec![0u8; BUF];
    for (j, &i) in ids.iter().enumerate() {
        let secret = x25519::StaticSecret::from(peer_secret(cfg.seed, i));
        // Tunnel index j + 1: boringtun's session indices are index << 8
        // plus a counter, so a reply's receiver index >> 8 names its
        // stormer.
        let mut tunn = Tunn::new(secret, server_key, None, None, j as u32 + 1, None);
        let _ = tunn.update_timers(&mut buf);
        let init = match tunn.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(p) => p.to_vec(),
            _ => return Err(Error::Other("boringtun made no initiation".into())),
        };
        firsts.push(init);
        let now = Instant::now();
        stormers.push(Stormer {
            tunn,
            source: source_addr(j as u32 % cfg.sources),
            state: State::Waiting,
            attempts: 1,
            last_sent: now,
            jitter: jitter(&mut rng),
        });
    }

    let mut report = Report {
        stormers: stormers.len() as u32,
        ..Report::default()
    };
    let t0 = Instant::now();
    for (s, init) in stormers.iter_mut().zip(&firsts) {
        wire.send_from(s.source, init)?;
        s.last_sent = Instant::now();
        report.initiations += 1;
    }
    let deadline = t0 + cfg.deadline;
    let mut waiting = stormers.len();
    let mut next_tick = Instant::now();
    let mut out = vec![0u8; BUF];
    // Bounded by the deadline, and in count: each round waits at most one
    // TICK or handles at least one datagram.
    let max_rounds = (cfg.deadline.as_millis() / TICK.as_millis() + 1) * 1_000_000;
    let mut rounds = 0u128;
    while waiting > 0 {
        rounds += 1;
        let now = Instant::now();
        if now >= deadline || rounds > max_rounds {
            report.timed_out = true;
            break;
        }
        // Datagrams first: a response is a completion, a cookie reply is
        // boringtun's to keep for its next retry.
        if wire.readable(next_tick.saturating_duration_since(now).min(TICK))? {
            for _ in 0..4096 {
                let Some((n, from)) = wire.try_recv(&mut buf)? else {
                    break;
                };
                if from.map(|a| a.ip()) != Some(server_ip) {
                    report.stray += 1;
                    continue;
                }
                let pkt = &buf[..n];
                let kind = pkt.first().copied().unwrap_or(0);
                let receiver = match kind {
                    2 => le_u32(pkt, 8),
                    3 | 4 => le_u32(pkt, 4),
                    _ => None,
                };
                let j = receiver.map(|r| (r >> 8) as usize);
                let Some(s) = j
                    .and_then(|j| j.checked_sub(1))
                    .and_then(|j| stormers.get_mut(j))
                else {
                    report.stray += 1;
                    continue;
                };
                if kind == 2 {
                    report.responses += 1;
                }
                if s.state != State::Waiting {
                    continue;
                }
                match s.tunn.decapsulate(Some(server_ip), pkt, &mut out) {
                    TunnResult::WriteToNetwork(p) => {
                        // The keepalive that confirms the session to the
                        // responder.
                        wire.send_from(s.source, p)?;
                    }
                    TunnResult::Done if kind == 3 => report.cookie_replies += 1,
                    TunnResult::Err(_) if kind == 3 => report.stale_cookie_replies += 1,
                    TunnResult::Err(_) => report.refused += 1,
                    _ => {}
                }
                if kind == 2 && s.tunn.time_since_last_handshake().is_some() {
                    s.state = State::Done;
                    waiting -= 1;
                    report.completed += 1;
                    report.completions.push(t0.elapsed());
                    report.max_attempts = report.max_attempts.max(s.attempts);
                    if s.attempts == 1 {
                        report.first_try += 1;
                    }
                }
            }
        }
        let now = Instant::now();
        if now < next_tick {
            continue;
        }
        next_tick = now + TICK;
        // boringtun's timers: a retry once REKEY_TIMEOUT passed without a
        // response, or giving up after REKEY_ATTEMPT_TIME. They are asked
        // only once this retry's REKEY_TIMEOUT + jitter has passed since
        // the last initiation went out: boringtun itself would retry at
        // exactly REKEY_TIMEOUT after it *made* the initiation, and the
        // first ones were made before the clock started. (Between two
        // calls its coarse clock stands still; nothing of a handshake in
        // progress reads it except the 90 s limit, which counts from the
        // first initiation and so stays exact.)
        for s in stormers.iter_mut().filter(|s| s.state == State::Waiting) {
            if now.saturating_duration_since(s.last_sent) < REKEY_TIMEOUT + s.jitter {
                continue;
            }
            match s.tunn.update_timers(&mut out) {
                TunnResult::WriteToNetwork(p) => {
                    wire.send_from(s.source, p)?;
                    s.last_sent = Instant::now();
                    s.attempts += 1;
                    s.jitter = jitter(&mut rng);
                    report.initiations += 1;
                }
                TunnResult::Err(WireGuardError::ConnectionExpired) => {
                    s.state = State::Expired;
                    waiting -= 1;
                    report.expired += 1;
                }
                _ => {}
            }
        }
    }
    report.elapsed = t0.elapsed();
    report.completions.sort();
    Ok(report)
}

// ------------------------------------------------------------------ bound

/// The same responder work in one process: [`single_process_bound`].
#[derive(Debug, Clone)]
pub struct Bound {
    pub handshakes: u32,
    pub elapsed: Duration,
}

impl Bound {
    pub fn rate(&self) -> f64 {
        f64::from(self.handshakes) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Answers one initiation from each of `stormers` peers out of `peers`
/// configured, through `wg_handshake::Core` and `wg_crypto::KeyStore` in
/// this thread, and times only that (boringtun's side is untimed).
/// Nothing is under load here: every initiation gets the full handshake,
/// as a responder with unlimited capacity would do. With `scan_timers`,
/// each packet is followed by what the handshake process's loop does
/// after every event: `next_deadline` and `on_timers` over all peers.
/// Every response is checked by boringtun.
pub fn single_process_bound(
    seed: u64,
    peers: u32,
    stormers: u32,
    scan_timers: bool,
) -> Result<Bound> {
    use proto::ipc::{Endpoint, HandshakeToTransport};
    use proto::keys::{PublicKey, SecretKey};
    use wg_handshake::{Config, Core, PacketOutcome};

    let fail = |m: String| Error::Other(format!("single-process bound: {m}"));
    let t_setup = Instant::now();
    let mut store = wg_crypto::KeyStore::new();
    let secret = SecretKey::from_bytes(server_secret(seed));
    let public = wg_crypto::public_key(&secret);
    store.set_private_key(Some(secret));
    let mut core = Core::new(Config {
        load_threshold: u32::MAX,
        ..Config::default()
    });
    let mut out: Vec<HandshakeToTransport> = Vec::new();
    core.set_interface(Some(public), &mut out);
    for key in peer_publics(seed, peers, stormers) {
        let key = PublicKey(key);
        store.set_peer(key, None);
        core.set_peer(t_setup, key, None, &mut out);
    }
    out.clear();

    let server_key = x25519::PublicKey::from(public.0);
    let mut buf = vec![0u8; BUF];
    let mut tunns = Vec::new();
    let mut inits = Vec::new();
    for (j, i) in stormer_ids(peers, stormers).into_iter().enumerate() {
        let secret = x25519::StaticSecret::from(peer_secret(seed, i));
        let mut tunn = Tunn::new(secret, server_key, None, None, j as u32 + 1, None);
        match tunn.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(p) => inits.push(p.to_vec()),
            _ => return Err(fail("boringtun made no initiation".into())),
        }
        tunns.push(tunn);
    }

    let mut responses = Vec::with_capacity(inits.len());
    let start = Instant::now();
    for (j, init) in inits.iter().enumerate() {
        let from = Endpoint::new(SocketAddr::V4(SocketAddrV4::new(
            source_addr(j as u32),
            51820,
        )));
        let now = Instant::now();
        let r = core.handle_packet(
            now,
            init,
            from,
            &mut |q| store.handle_handshake(q),
            &mut out,
        );
        if !matches!(r, PacketOutcome::Responded(_)) {
            return Err(fail(format!("initiation {j} was not answered: {r:?}")));
        }
        if scan_timers {
            let _ = core.next_deadline();
            core.on_timers(now, &mut |q| store.handle_handshake(q), &mut out);
        }
        let resp = out.iter().find_map(|a| match a {
            HandshakeToTransport::Send { bytes, .. } => Some(bytes.clone()),
            _ => None,
        });
        responses.push(resp.ok_or_else(|| fail(format!("no response to {j}")))?);
        out.clear();
    }
    let elapsed = start.elapsed();

    for (j, (tunn, resp)) in tunns.iter_mut().zip(&responses).enumerate() {
        match tunn.decapsulate(None, resp, &mut buf) {
            TunnResult::WriteToNetwork(_) => {}
            _ => return Err(fail(format!("boringtun refused response {j}"))),
        }
    }
    Ok(Bound {
        handshakes: responses.len() as u32,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stormers_are_spread_and_distinct() {
        let ids = stormer_ids(10_000, 1_000);
        assert_eq!(ids.len(), 1_000);
        assert_eq!(ids[1], 10);
        assert_eq!(*ids.last().expect("some"), 9_990);
        assert_eq!(stormer_ids(5, 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn conf_lists_every_peer_once() {
        let text = setconf_text(3, 50, 5, 51820);
        assert_eq!(text.matches("[Peer]").count(), 50);
        assert!(text.contains("ListenPort = 51820\n"));
        let publics = peer_publics(3, 50, 5);
        let secret = x25519::StaticSecret::from(peer_secret(3, 10));
        assert_eq!(publics[10], x25519::PublicKey::from(&secret).to_bytes());
        assert!(text.contains(&B64.encode(publics[49])));
    }

    #[test]
    fn sources_are_distinct_and_inside_the_net() {
        assert_eq!(source_addr(0), Ipv4Addr::new(10, 98, 0, 1));
        assert_eq!(source_addr(999), Ipv4Addr::new(10, 98, 3, 232));
        assert_eq!(
            source_addr(MAX_SOURCES - 1),
            Ipv4Addr::new(10, 98, 255, 254)
        );
        assert_eq!(source_addr_batch(2, "lo").lines().count(), 2);
    }

    #[test]
    fn busy_rate_ignores_idle_gaps() {
        let mut r = Report::default();
        // 20 completions 10 ms apart, 5 s of nothing, 20 more 10 ms apart.
        for k in 0..20u64 {
            r.completions.push(Duration::from_millis(10 * k));
            r.completions.push(Duration::from_millis(5_000 + 10 * k));
        }
        r.completions.sort();
        r.completed = 40;
        let busy = r.busy_rate().expect("enough completions");
        assert!((busy - 100.0).abs() < 1.0, "{busy}");
        let overall = r.overall_rate().expect("some");
        assert!(overall < 10.0, "{overall}");
        assert_eq!(r.timeline()[0], 20);
        assert_eq!(r.timeline()[5], 20);
    }

    #[test]
    fn bound_answers_every_initiation() {
        let b = single_process_bound(5, 40, 4, true).expect("bound runs");
        assert_eq!(b.handshakes, 4);
        assert!(b.rate() > 0.0);
    }
}
