//! Handshake rate (issue 12, item 4): full handshakes per second through
//! wgd's real process pipeline, beside the single-process bound measured
//! in the same run. `src/bin/hsrate.rs` is the command line,
//! `scripts/hsrate.sh` the benchmark that runs both against a live wgd.
//!
//! - **The pipeline** ([`run_client`]): many distinct initiators hit one
//!   wgd, which answers through its transport, handshake and crypto
//!   processes as in production. The initiators are boringtun [`Tunn`]s
//!   (keys from `storm`'s seed, so `storm conf` writes the matching
//!   configuration); every initiation is made before the clock starts, so
//!   the client's own X25519 work is not what is measured: the timed loop
//!   only sends and receives datagrams. A handshake counts when wgd's
//!   response arrives *and* boringtun, after the clock stops, accepts it
//!   (a response is wgd's proof that it derived the session keys: it
//!   installs them with the response).
//! - **Under the load threshold.** wgd answers with cookie replies instead
//!   of handshakes once `DEFAULT_LOAD_THRESHOLD` (512) handshake messages
//!   queue in its handshake role (`wg-handshake/src/load.rs`). The client
//!   keeps at most [`RateConfig::window`] initiations in flight (each
//!   answered one frees a slot), so with a window below the threshold the
//!   queue never reaches it and every initiation gets the full handshake,
//!   while the pipeline always has work queued. Cookie replies are counted
//!   and reported; they should be zero.
//! - **Sources.** Each peer sends from its own IPv4 address
//!   ([`storm::source_addr`], on the client namespace's `lo`; `storm
//!   addrs` writes them), picked per datagram with `IP_PKTINFO` from one
//!   socket, as `storm` does: wgd's transport limits every source address
//!   to 20 handshake messages/s (bursts of 5,
//!   `wg-transport/src/ratelimit.rs`), so initiations from one address
//!   would measure that limit, not the handshake pipeline. With 1,000
//!   peers each sends about two a second. With fewer sources than peers,
//!   peers share addresses.
//! - **Rounds.** A peer may start at most one handshake per 20 ms (wgd
//!   drops faster initiations, as Linux does) and each [`Tunn`] holds one
//!   handshake, so each configured peer initiates once per round, with a
//!   fresh [`Tunn`] per initiation; with a few hundred peers a round lasts
//!   far longer than 20 ms.
//! - **The bound** ([`primitive_bound`]): the X25519 operations, hashes and
//!   AEADs that one responder handshake needs, timed in one thread with the
//!   primitive crates (x25519-dalek, blake2, chacha20poly1305): MAC1 check,
//!   the initiation's `es` and, precomputed per peer as wgd now does, `ss`;
//!   a fresh ephemeral, `ee`, `se`, the response's MAC1 and the transport
//!   keys. It is a complete WireGuard responder (boringtun accepts its
//!   responses, checked after timing) with nothing else: no queues, no
//!   IPC, no allocation in the loop, no timestamp or rate checks.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::ChaCha20Poly1305;
use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, ControlMessage, MsgFlags, SockaddrIn};

use crate::error::{Error, Result};
use crate::storm::{self, peer_secret, server_public, server_secret, stormer_ids};

/// An initiation, a response: their lengths on the wire.
const INITIATION_LEN: usize = 148;
const RESPONSE_LEN: usize = 92;
/// No datagram for this long while initiations are in flight: they are
/// counted as lost and their slots freed.
const IDLE_LOSS: Duration = Duration::from_secs(1);

// ------------------------------------------------------------------ initiations

/// Initiations made before the clock starts, with the boringtun state that
/// checks the responses.
pub struct Prepared {
    tunns: Vec<Tunn>,
    inits: Vec<Vec<u8>>,
    /// Configured peers: initiation `k` is peer `k % peers`'s.
    peers: u32,
}

/// `handshakes` initiations from the `peers` peers of `storm conf --seed
/// SEED --peers P --stormers P` (every configured peer initiates), round
/// by round: initiation `k` is peer `k % peers`'s, from a fresh [`Tunn`]
/// with index `k + 1` (boringtun puts it in the top 24 bits of its
/// session index, so a reply's receiver index names its initiation).
pub fn prepare(seed: u64, peers: u32, handshakes: u32) -> Result<Prepared> {
    if peers == 0 || handshakes == 0 || handshakes >= 1 << 24 {
        return Err(Error::Other(
            "need peers > 0 and 0 < handshakes < 2^24".into(),
        ));
    }
    let server_key = x25519::PublicKey::from(server_public(seed));
    let ids = stormer_ids(peers, peers);
    let mut buf = vec![0u8; 256];
    let mut tunns = Vec::with_capacity(handshakes as usize);
    let mut inits = Vec::with_capacity(handshakes as usize);
    for k in 0..handshakes {
        let i = ids[(k % peers) as usize];
        let secret = x25519::StaticSecret::from(peer_secret(seed, i));
        let mut tunn = Tunn::new(secret, server_key, None, None, k + 1, None);
        match tunn.format_handshake_initiation(&mut buf, false) {
            TunnResult::WriteToNetwork(p) if p.len() == INITIATION_LEN => inits.push(p.to_vec()),
            _ => return Err(Error::Other("boringtun made no initiation".into())),
        }
        tunns.push(tunn);
    }
    Ok(Prepared {
        tunns,
        inits,
        peers,
    })
}

impl Prepared {
    /// How many of `responses` (initiation number, bytes) boringtun
    /// accepts as the answer to its initiation.
    fn verify(&mut self, responses: &[(u32, Vec<u8>)]) -> u32 {
        let mut out = vec![0u8; 256];
        let mut ok = 0;
        for (k, resp) in responses {
            let Some(tunn) = self.tunns.get_mut(*k as usize) else {
                continue;
            };
            if let TunnResult::WriteToNetwork(_) = tunn.decapsulate(None, resp, &mut out) {
                ok += 1;
            }
        }
        ok
    }
}

// ------------------------------------------------------------------ pipeline

/// What [`run_client`] does.
#[derive(Debug, Clone)]
pub struct RateConfig {
    pub server: SocketAddrV4,
    /// Initiations in flight at most (below wgd's load threshold of 512).
    pub window: u32,
    /// Distinct source addresses ([`storm::source_addr`]`(0..sources)`,
    /// which must exist in the client's namespace); peer `i` sends from
    /// number `i % sources`.
    pub sources: u32,
}

/// What the initiators saw.
#[derive(Debug, Clone, Default)]
pub struct RateReport {
    pub initiations: u32,
    pub responses: u32,
    /// Responses boringtun accepted: the completed handshakes.
    pub verified: u32,
    pub cookie_replies: u32,
    pub lost: u32,
    pub stray: u32,
    /// From the first initiation sent to the last response received.
    pub elapsed: Duration,
    pub window: u32,
}

impl RateReport {
    /// Completed handshakes per second.
    pub fn rate(&self) -> f64 {
        f64::from(self.verified) / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn to_line(&self) -> String {
        format!(
            "pipeline_hs_per_s={:.1} completed={} initiations={} responses={} cookie_replies={} \
             lost={} stray={} seconds={:.3} window={}",
            self.rate(),
            self.verified,
            self.initiations,
            self.responses,
            self.cookie_replies,
            self.lost,
            self.stray,
            self.elapsed.as_secs_f64(),
            self.window
        )
    }
}

/// Sends `bytes` to `server` from local address `src` (`IP_PKTINFO`): one
/// socket bound to every address speaks for all the peers.
fn send_from(
    sock: &UdpSocket,
    src: Ipv4Addr,
    bytes: &[u8],
    server: &SockaddrIn,
) -> nix::Result<usize> {
    let info = libc::in_pktinfo {
        ipi_ifindex: 0,
        ipi_spec_dst: libc::in_addr {
            s_addr: u32::from_ne_bytes(src.octets()),
        },
        ipi_addr: libc::in_addr { s_addr: 0 },
    };
    let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
    let iov = [IoSlice::new(bytes)];
    socket::sendmsg(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        Some(server),
    )
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Sends every prepared initiation to wgd at `cfg.server`, at most
/// `cfg.window` unanswered at a time, and counts the handshakes completed.
pub fn run_client(cfg: &RateConfig, prepared: &mut Prepared) -> Result<RateReport> {
    if cfg.window == 0 || cfg.window >= 512 {
        return Err(Error::Other(
            "window must be 1..511: wgd's load threshold is 512".into(),
        ));
    }
    if cfg.sources == 0 {
        return Err(Error::Other("need at least one source address".into()));
    }
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| Error::io("bind UDP", e))?;
    let want = 8 << 20;
    if socket::setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &want).is_err() {
        let _ = socket::setsockopt(&sock.as_fd(), sockopt::RcvBuf, &want);
    }
    sock.set_nonblocking(true)
        .map_err(|e| Error::io("non-blocking socket", e))?;
    let server = SockaddrIn::from(cfg.server);
    let total = prepared.inits.len() as u32;
    let mut report = RateReport {
        window: cfg.window,
        ..RateReport::default()
    };
    let mut answered = vec![false; total as usize];
    let mut responses: Vec<(u32, Vec<u8>)> = Vec::with_capacity(total as usize);
    let mut in_flight = 0u32;
    let mut next = 0u32;
    let mut buf = [0u8; 2048];
    let t0 = Instant::now();
    let mut last_answer = t0;
    let mut last_activity = t0;
    // Bounded: every turn sends, receives, or waits (at most IDLE_LOSS in
    // all) and then frees every slot.
    let max_turns = u64::from(total) * 64 + 1_000_000;
    for _ in 0..max_turns {
        while in_flight < cfg.window && next < total {
            let src = storm::source_addr((next % prepared.peers) % cfg.sources);
            match send_from(&sock, src, &prepared.inits[next as usize], &server) {
                Ok(_) => {
                    next += 1;
                    in_flight += 1;
                    report.initiations += 1;
                }
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => break,
                Err(e) => return Err(Error::io("send an initiation", e.into())),
            }
        }
        if in_flight == 0 && next >= total {
            break;
        }
        let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(Error::io("poll", e.into())),
        }
        let mut got = false;
        loop {
            let (n, from) = match socket::recvfrom::<SockaddrIn>(sock.as_raw_fd(), &mut buf) {
                Ok(r) => r,
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => break,
                Err(e) => return Err(Error::io("receive", e.into())),
            };
            got = true;
            let pkt = &buf[..n];
            let from_server =
                from.map(|a| SocketAddr::V4(a.into())) == Some(SocketAddr::V4(cfg.server));
            let kind = pkt.first().copied().unwrap_or(0);
            let receiver = match kind {
                2 if n == RESPONSE_LEN => le_u32(pkt, 8),
                3 => le_u32(pkt, 4),
                _ => None,
            };
            let k = receiver
                .map(|r| r >> 8)
                .and_then(|r| r.checked_sub(1))
                .filter(|k| *k < total);
            let Some(k) = k.filter(|_| from_server) else {
                report.stray += 1;
                continue;
            };
            if std::mem::replace(&mut answered[k as usize], true) {
                report.stray += 1;
                continue;
            }
            in_flight = in_flight.saturating_sub(1);
            last_answer = Instant::now();
            if kind == 2 {
                report.responses += 1;
                responses.push((k, pkt.to_vec()));
            } else {
                report.cookie_replies += 1;
            }
        }
        let now = Instant::now();
        if got {
            last_activity = now;
        } else if in_flight > 0 && now.duration_since(last_activity) >= IDLE_LOSS {
            report.lost += in_flight;
            in_flight = 0;
            last_activity = now;
        }
    }
    report.elapsed = last_answer.duration_since(t0);
    report.verified = prepared.verify(&responses);
    Ok(report)
}

// ------------------------------------------------------------------ bound

const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
const LABEL_MAC1: &[u8] = b"mac1----";

fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Blake2s256::new();
    for p in parts {
        Digest::update(&mut h, p);
    }
    h.finalize().into()
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // Every key here is 32 bytes; HMAC takes keys of any length.
    let mut m = <hmac::SimpleHmac<Blake2s256> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    for p in parts {
        Mac::update(&mut m, p);
    }
    m.finalize_fixed().into()
}

/// The whitepaper's KDF_n: n outputs of HMAC-BLAKE2s from chaining key
/// `c` and `input`.
fn kdf<const N: usize>(c: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    let t0 = hmac(c, &[input]);
    let mut out = [[0u8; 32]; N];
    let mut prev: Option<[u8; 32]> = None;
    for (i, o) in out.iter_mut().enumerate() {
        let ctr = [i as u8 + 1];
        *o = match &prev {
            None => hmac(&t0, &[&ctr]),
            Some(p) => hmac(&t0, &[p, &ctr]),
        };
        prev = Some(*o);
    }
    out
}

fn mac16(key: &[u8; 32], msg: &[u8]) -> [u8; 16] {
    let mut m = <Blake2sMac<blake2::digest::consts::U16> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("32-byte key"));
    Update::update(&mut m, msg);
    m.finalize_fixed().into()
}

fn aead(key: &[u8; 32]) -> ChaCha20Poly1305 {
    <ChaCha20Poly1305 as KeyInit>::new(key.into())
}

/// A minimal WireGuard responder, built from the primitives alone.
struct MinimalResponder {
    secret: x25519::StaticSecret,
    /// HASH(LABEL_MAC1 ‖ our public key): checks initiations' MAC1.
    mac1_key: [u8; 32],
    c0: [u8; 32],
    h0: [u8; 32],
    /// Per peer, as a responder that precomputes keeps it: `ss` and the
    /// key of the MAC1 on responses to that peer.
    peers: HashMap<[u8; 32], ([u8; 32], [u8; 32])>,
}

impl MinimalResponder {
    fn new(seed: u64, peers: &[[u8; 32]]) -> Self {
        let secret = x25519::StaticSecret::from(server_secret(seed));
        let public = x25519::PublicKey::from(&secret).to_bytes();
        let c0 = hash(&[CONSTRUCTION]);
        let h0 = hash(&[&hash(&[&c0, IDENTIFIER]), &public]);
        let peers = peers
            .iter()
            .map(|p| {
                let ss = secret
                    .diffie_hellman(&x25519::PublicKey::from(*p))
                    .to_bytes();
                (*p, (ss, hash(&[LABEL_MAC1, p])))
            })
            .collect();
        MinimalResponder {
            mac1_key: hash(&[LABEL_MAC1, &public]),
            secret,
            c0,
            h0,
            peers,
        }
    }

    /// The response to `init`, with `ss` precomputed or computed; `None`
    /// if the initiation does not verify.
    fn respond(&self, init: &[u8], precomputed: bool, index: u32) -> Option<[u8; RESPONSE_LEN]> {
        if init.len() != INITIATION_LEN || init[0] != 1 {
            return None;
        }
        if mac16(&self.mac1_key, &init[..116]) != init[116..132] {
            return None;
        }
        let e_i: [u8; 32] = init[8..40].try_into().ok()?;
        let (mut c, mut h) = (self.c0, self.h0);
        [c] = kdf::<1>(&c, &e_i);
        h = hash(&[&h, &e_i]);
        let es = self.secret.diffie_hellman(&x25519::PublicKey::from(e_i));
        let [c1, k] = kdf::<2>(&c, es.as_bytes());
        c = c1;
        let mut s_i = [0u8; 32];
        s_i.copy_from_slice(&init[40..72]);
        let nonce = [0u8; 12];
        aead(&k)
            .decrypt_in_place_detached((&nonce).into(), &h, &mut s_i, init[72..88].into())
            .ok()?;
        h = hash(&[&h, &init[40..88]]);
        let (ss, mac1_peer) = match self.peers.get(&s_i) {
            Some((ss, m)) if precomputed => (*ss, *m),
            Some(_) => (
                self.secret
                    .diffie_hellman(&x25519::PublicKey::from(s_i))
                    .to_bytes(),
                hash(&[LABEL_MAC1, &s_i]),
            ),
            None => return None,
        };
        let [c1, k] = kdf::<2>(&c, &ss);
        c = c1;
        let mut ts = [0u8; 12];
        ts.copy_from_slice(&init[88..100]);
        aead(&k)
            .decrypt_in_place_detached((&nonce).into(), &h, &mut ts, init[100..116].into())
            .ok()?;
        h = hash(&[&h, &init[88..116]]);

        let mut msg = [0u8; RESPONSE_LEN];
        msg[0] = 2;
        msg[4..8].copy_from_slice(&index.to_le_bytes());
        msg[8..12].copy_from_slice(&init[4..8]);
        let e_r = x25519::StaticSecret::random_from_rng(rand::rngs::OsRng);
        let e_r_pub = x25519::PublicKey::from(&e_r).to_bytes();
        msg[12..44].copy_from_slice(&e_r_pub);
        [c] = kdf::<1>(&c, &e_r_pub);
        h = hash(&[&h, &e_r_pub]);
        [c] = kdf::<1>(
            &c,
            e_r.diffie_hellman(&x25519::PublicKey::from(e_i)).as_bytes(),
        );
        [c] = kdf::<1>(
            &c,
            e_r.diffie_hellman(&x25519::PublicKey::from(s_i)).as_bytes(),
        );
        let [c1, tau, k] = kdf::<3>(&c, &[0u8; 32]);
        c = c1;
        h = hash(&[&h, &tau]);
        let tag = aead(&k)
            .encrypt_in_place_detached((&nonce).into(), &h, &mut [])
            .ok()?;
        msg[44..60].copy_from_slice(&tag);
        let mac1 = mac16(&mac1_peer, &msg[..60]);
        msg[60..76].copy_from_slice(&mac1);
        // The transport keys (a responder installs them with the response).
        let [_recv, _send] = kdf::<2>(&c, &[]);
        Some(msg)
    }
}

/// [`primitive_bound`]'s result.
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

/// Answers every prepared initiation with [`MinimalResponder`] in this
/// thread and times only that; then boringtun checks every response.
/// `precomputed`: `ss` from the per-peer table (what wgd does now), or one
/// more X25519 per handshake (what it did before).
pub fn primitive_bound(
    seed: u64,
    peers: u32,
    prepared: &mut Prepared,
    precomputed: bool,
) -> Result<Bound> {
    let publics: Vec<[u8; 32]> = stormer_ids(peers, peers)
        .into_iter()
        .map(|i| {
            x25519::PublicKey::from(&x25519::StaticSecret::from(peer_secret(seed, i))).to_bytes()
        })
        .collect();
    let r = MinimalResponder::new(seed, &publics);
    let mut responses = Vec::with_capacity(prepared.inits.len());
    let start = Instant::now();
    for (k, init) in prepared.inits.iter().enumerate() {
        let resp = r
            .respond(init, precomputed, k as u32)
            .ok_or_else(|| Error::Other(format!("bound: initiation {k} does not verify")))?;
        responses.push((k as u32, resp.to_vec()));
    }
    let elapsed = start.elapsed();
    let ok = prepared.verify(&responses);
    if ok != responses.len() as u32 {
        return Err(Error::Other(format!(
            "bound: boringtun accepted {ok} of {} responses",
            responses.len()
        )));
    }
    Ok(Bound {
        handshakes: ok,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The minimal responder is a real WireGuard responder (boringtun
    /// accepts its responses, with `ss` precomputed or not), so the bound
    /// times the whole of a handshake's cryptography, not a part of it.
    #[test]
    fn minimal_responder_answers_boringtun() {
        for precomputed in [true, false] {
            let mut p = prepare(7, 3, 6).expect("initiations");
            let b = primitive_bound(7, 3, &mut p, precomputed).expect("bound");
            assert_eq!(b.handshakes, 6);
        }
    }

    /// A response to someone else's initiation is not counted.
    #[test]
    fn verify_counts_only_genuine_responses() {
        let mut p = prepare(8, 2, 2).expect("initiations");
        let publics: Vec<[u8; 32]> = stormer_ids(2, 2)
            .into_iter()
            .map(|i| {
                x25519::PublicKey::from(&x25519::StaticSecret::from(peer_secret(8, i))).to_bytes()
            })
            .collect();
        let r = MinimalResponder::new(8, &publics);
        let r0 = r.respond(&p.inits[0], true, 1).expect("response").to_vec();
        let r1 = r.respond(&p.inits[1], true, 2).expect("response").to_vec();
        // Swapped: each goes to the wrong initiation.
        assert_eq!(p.verify(&[(0, r1.clone()), (1, r0.clone())]), 0);
        assert_eq!(p.verify(&[(0, r0), (1, r1)]), 2);
    }
}
