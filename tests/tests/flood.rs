//! Issue 13, part 3: hostile network input, end to end.
//!
//! An established tunnel, wgd (A) ↔ Debian wireguard-go (B), carries a
//! ping stream A → B every 10 ms while an attacker in a third namespace
//! (C, its own veth to A and its own address) floods A's WireGuard port
//! from one sender thread, as fast as it goes, for as long as the ping
//! stream lasts (8 s; bounded in count too):
//!
//! 1. **junk**: random garbage, truncated and oversized handshake and
//!    data messages, datagrams of 0 to 3 bytes;
//! 2. **replayed data**: B's own data messages to A, captured on the veth;
//! 3. **replayed initiation**: B's own initiation to A, captured likewise;
//! 4. **unknown keys**: initiations with a valid MAC1 (it needs only A's
//!    public key) and random Noise bytes; meanwhile B's session is reset
//!    (`wg set` remove and re-add) and B must handshake again at once;
//! 5. **spoofed peer**: the same initiations from B's own address (an
//!    alias on C's `lo`, A's reverse-path filter off, as on a network
//!    that does not filter spoofed sources);
//! 6. **many sources**: the same initiations from 1,024 addresses of C,
//!    round-robin, so that the per-source limit lets enough through to
//!    put the handshake role under load: it must answer with cookie
//!    replies (demanding MAC2; counted where the attacker receives them);
//! 7. **many sources, B reset**: the same, with B's session reset; B
//!    must handshake again while the flood lasts, within its first try
//!    and two retries of the whitepaper's schedule (REKEY_TIMEOUT, 5 s):
//!    its first initiation is answered with a cookie reply, its retry
//!    carries MAC2 and completes (5.1 s after the reset when the machine
//!    is quiet; 10.5 s, one retry more, with other builds running). This
//!    needs the handshake path optimized in test builds too (root
//!    `Cargo.toml`): unoptimized, a cookie reply took ~140 µs, A's
//!    handshake queue held seconds of work, each cookie reply reached B
//!    after it had moved on to its next initiation, and B never completed
//!    (its log is printed when it does not).
//!
//! Checked for each: wgd stays up with its three roles; the drop counters
//! of `wgd_get` (what `wgctl show --json` shows) account, within 1 %, for
//! every datagram sent: counted by wgd as what it is, or dropped by A's
//! kernel for a full socket buffer (`RcvbufErrors`); what passed the
//! per-source limit is within its allowance (bursts of 5, 20/s per
//! source); one source never puts the handshake role under load; B's
//! endpoint at A never moves to the attacker; B handshakes again within
//! 2 s under one flooder (its first try; the flooder's address is
//! throttled, B's is not). All checks run; failures are reported together.
//!
//! **Ping loss.** Asserted: under 1 % plus the share of datagrams A's
//! kernel dropped from the socket's full buffer (0 % in most runs of the
//! floods from one address on a quiet machine, so under 1 % outright).
//! On the 2-core machine these tests run on, the attacker takes one
//! core, and with other work running (or the handshake role's cookie
//! replies, from many sources) the transport waits for a CPU a third to
//! a half of the time (printed, from `/proc/PID/schedstat`); when it
//! waits long enough the kernel drops datagrams, the tunnel's among
//! them, before wgd sees them (many sources, other builds running: 3-18 %
//! ping loss, all of it in the kernel's drops; the same floods from one
//! address 0-1 %). Loss the kernel did not cause is wgd's and fails the
//! test. With the transport at nice -10 (`WGD_FLOOD_RENICE=1`) the
//! kernel's drops and the loss fall to about zero. A release build
//! (`WGD_BIN=target/release/wgd`) behaves the same: the transport is
//! built optimized in test builds too. The UDP sockets' buffers are
//! wireguard-go's 7 MiB, forced past `net.core.rmem_max`.
//! `WGD_FLOOD_ONLY=NAME` runs one flood. Each flood's rate,
//! loss, counters and CPU use are printed (`-- --nocapture`).

mod common;

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use nix::sys::socket::{self, sockopt, ControlMessage, MsgFlags, SockaddrIn};
use proto::keys::PublicKey;
use proto::wire::INITIATION_MAC1_OFFSET;
use rand::{Rng, RngCore};
use wgd_tests::capture::Capture;
use wgd_tests::traffic::ping_within;
use wgd_tests::{link_with, storm, Netns, Wgd};

/// How long each flood (and the ping stream under it) lasts.
const FLOOD_TIME: Duration = Duration::from_secs(8);
/// Pings of the stream: one every 10 ms for [`FLOOD_TIME`].
const PINGS: u32 = 800;
/// Datagrams per flood at most, whatever the rate.
const FLOOD_MAX: u64 = 3_000_000;
/// The attacker's link to A.
const OUTER_A_C: &str = "10.212.0.1";
const OUTER_C: &str = "10.212.0.2";
const PORT_C: u16 = 40_000;
/// The many sources of flood 6: `SOURCES_NET + 1 + k` on C's `lo`.
const SOURCES_NET: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 0);
const SOURCES: u32 = 1024;
/// The per-source limit of `wg-transport/src/ratelimit.rs`.
const BURST: f64 = 5.0;
const PER_SECOND: f64 = 20.0;
/// How long B gets to handshake again after its session is reset: its
/// first try and two more of the whitepaper's schedule (REKEY_TIMEOUT,
/// 5 s, plus jitter).
const REHANDSHAKE_WAIT: Duration = Duration::from_secs(12);
/// Flood 7: many sources while B's session is reset.
const MANY_RESET: &str = "many sources, B reset";

/// Sums of counters, by name.
type Counters = HashMap<String, u64>;

fn counters(w: &Wgd) -> Counters {
    w.wgd_get()
        .expect("wgd_get")
        .into_iter()
        .filter(|(k, _)| {
            k.starts_with("drop_") || k.starts_with("handshake_") || k == "ipc_to_handshake"
        })
        .filter_map(|(k, v)| v.parse().ok().map(|n| (k, n)))
        .collect()
}

fn delta(after: &Counters, before: &Counters, k: &str) -> u64 {
    after
        .get(k)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(k).copied().unwrap_or(0))
}

/// Every way the handshake role ends a packet it took without a session:
/// each of an attacker's packets that reached it lands in one of these.
const HANDSHAKE_ENDS: [&str; 8] = [
    "handshake_malformed",
    "handshake_bad_mac1",
    "handshake_cookie_replies",
    "handshake_rate_limited",
    "handshake_unknown_index",
    "handshake_rejected",
    "handshake_replayed_timestamp",
    "handshake_initiation_flood",
];

/// What one flood did and what it cost.
#[derive(Debug, Default)]
struct Outcome {
    name: &'static str,
    sent: u64,
    secs: f64,
    pings_sent: u64,
    pings_received: u64,
    /// Datagrams the kernel dropped in A's namespace (socket buffer full).
    kernel_drops: u64,
    /// Cookie replies that reached the attacker.
    cookies_received: u64,
    before: Counters,
    after: Counters,
    /// How long B took to handshake again after its session was reset.
    rehandshake: Option<Option<Duration>>,
    /// CPU time of the transport, handshake and crypto roles over the
    /// flood, in per cent of its wall time.
    cpu: [f64; 3],
    /// Time the transport spent runnable but waiting for a CPU, in per
    /// cent of the flood's wall time (`/proc/PID/schedstat`).
    transport_waited: f64,
}

impl Outcome {
    fn d(&self, k: &str) -> u64 {
        delta(&self.after, &self.before, k)
    }
    fn rate(&self) -> f64 {
        self.sent as f64 / self.secs.max(1e-9)
    }
    fn loss(&self) -> f64 {
        1.0 - self.pings_received as f64 / (self.pings_sent.max(1)) as f64
    }
    fn handshake_ended(&self) -> u64 {
        HANDSHAKE_ENDS.iter().map(|k| self.d(k)).sum()
    }
    fn line(&self) -> String {
        let mut changed: Vec<String> = self
            .after
            .keys()
            .filter(|k| self.d(k) != 0)
            .map(|k| format!("{k}+{}", self.d(k)))
            .collect();
        changed.sort();
        format!(
            "{:<20} {:>9} sent in {:.1} s = {:>7.0}/s; ping {}/{} ({:.2} % loss); kernel drops {}; \
             cookies at attacker {}; re-handshake {:?}; CPU % transport/handshake/crypto \
             {:.0}/{:.0}/{:.0}; transport waiting for a CPU {:.0} %; {}",
            self.name,
            self.sent,
            self.secs,
            self.rate(),
            self.pings_received,
            self.pings_sent,
            100.0 * self.loss(),
            self.kernel_drops,
            self.cookies_received,
            self.rehandshake,
            self.cpu[0],
            self.cpu[1],
            self.cpu[2],
            self.transport_waited,
            changed.join(" ")
        )
    }
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: Option<u32>) -> u64 {
    let Some(stat) = pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
    else {
        return 0;
    };
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0;
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum()
}

/// Nanoseconds `pid` has waited on a run queue so far.
fn run_queue_wait(pid: Option<u32>) -> u64 {
    pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/schedstat")).ok())
        .and_then(|s| s.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

const ROLES: [&str; 3] = ["transport", "handshake", "crypto"];

/// `ping -q` summary: (transmitted, received).
fn ping_summary(out: &str) -> (u64, u64) {
    for line in out.lines() {
        if let Some((tx, rest)) = line.split_once(" packets transmitted, ") {
            let rx = rest.split_whitespace().next().unwrap_or("0");
            return (tx.trim().parse().unwrap_or(0), rx.parse().unwrap_or(0));
        }
    }
    (0, 0)
}

/// The attacker's socket in C, bound to every address of C (so cookie
/// replies to any of its sources arrive on it).
fn attacker_socket(ns_c: &Netns) -> UdpSocket {
    let sock = ns_c
        .enter(|| UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT_C)))
        .expect("enter C")
        .expect("bind the attacker's socket");
    let want = 16 << 20;
    if socket::setsockopt(&sock.as_fd(), sockopt::RcvBufForce, &want).is_err() {
        let _ = socket::setsockopt(&sock.as_fd(), sockopt::RcvBuf, &want);
    }
    sock
}

/// Sends `pkt` to `to` from `src` (IP_PKTINFO), or from the socket's
/// routed address.
fn send_one(sock: &UdpSocket, to: &SockaddrIn, src: Option<Ipv4Addr>, pkt: &[u8]) -> bool {
    let iov = [IoSlice::new(pkt)];
    let r = match src {
        Some(src) => {
            let info = nix::libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: nix::libc::in_addr {
                    s_addr: u32::from_ne_bytes(src.octets()),
                },
                ipi_addr: nix::libc::in_addr { s_addr: 0 },
            };
            let cmsg = [ControlMessage::Ipv4PacketInfo(&info)];
            socket::sendmsg(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), Some(to))
        }
        None => socket::sendmsg(sock.as_raw_fd(), &iov, &[], MsgFlags::empty(), Some(to)),
    };
    r.is_ok()
}

/// Reads what waits on the attacker's socket; returns the cookie replies.
fn drain_cookies(sock: &UdpSocket, buf: &mut [u8]) -> u64 {
    let mut cookies = 0;
    for _ in 0..4096 {
        match socket::recv(sock.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => {
                if n == 64 && buf[..4] == [3, 0, 0, 0] {
                    cookies += 1;
                }
            }
            Err(_) => break,
        }
    }
    cookies
}

/// Floods `to` with `pool` (round-robin), each from `sources[i %
/// len]` if any, until `stop`, [`FLOOD_MAX`] or twice [`FLOOD_TIME`];
/// returns (sent, seconds, cookie replies received).
fn flood(
    sock: &UdpSocket,
    to: SocketAddrV4,
    pool: &[Vec<u8>],
    sources: &[Ipv4Addr],
    stop: &AtomicBool,
) -> (u64, f64, u64) {
    let to = SockaddrIn::from(to);
    let t0 = Instant::now();
    let mut sent = 0u64;
    let mut cookies = 0u64;
    let mut buf = [0u8; 2048];
    let mut i = 0usize;
    while sent < FLOOD_MAX {
        if i % 1024 == 0 {
            cookies += drain_cookies(sock, &mut buf);
            if stop.load(Ordering::Relaxed) || t0.elapsed() > 2 * FLOOD_TIME {
                break;
            }
        }
        let src = (!sources.is_empty()).then(|| sources[i % sources.len()]);
        if send_one(sock, &to, src, &pool[i % pool.len()]) {
            sent += 1;
        }
        i += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    cookies += drain_cookies(sock, &mut buf);
    (sent, secs, cookies)
}

/// What the floods share: the namespaces, the daemons and the attacker.
struct Lab<'n> {
    a: &'n Wgd<'n>,
    ns_a: &'n Netns,
    ns_b: &'n Netns,
    sock: &'n UdpSocket,
    target: SocketAddrV4,
}

impl Lab<'_> {
    /// Runs one flood of `pool` under the ping stream, `during` on the
    /// side; waits for the handshake role to finish what it queued.
    fn run(
        &self,
        name: &'static str,
        pool: &[Vec<u8>],
        sources: &[Ipv4Addr],
        during: impl FnOnce() -> Option<Option<Duration>> + Send,
    ) -> Outcome {
        let before = counters(self.a);
        let kernel0 = storm::udp_rcvbuf_errors(self.ns_a).expect("snmp");
        let pids = ROLES.map(|r| self.a.role_pid(r));
        let cpu0 = pids.map(cpu_ticks);
        let wait0 = run_queue_wait(pids[0]);
        let t0 = Instant::now();
        let stop = AtomicBool::new(false);
        let pings = PINGS.to_string();
        let peer = INNER_B4.to_string();
        let (flooded, ping_out, rehandshake) = std::thread::scope(|s| {
            let flooder = s.spawn(|| flood(self.sock, self.target, pool, sources, &stop));
            let ping = self
                .ns_a
                .spawn(
                    "ping",
                    ["-n", "-q", "-i", "0.01", "-W", "1", "-c", &pings, &peer],
                )
                .expect("ping stream");
            let rehandshake = during();
            let ended = ping.wait_exit(FLOOD_TIME * 3);
            stop.store(true, Ordering::Relaxed);
            let flooded = flooder.join().expect("flood thread");
            if ended.is_err() {
                ping.stop(Duration::from_secs(1));
            }
            (flooded, ping.stdout(), rehandshake)
        });
        let cpu1 = pids.map(cpu_ticks);
        let wait1 = run_queue_wait(pids[0]);
        let wall = t0.elapsed().as_secs_f64();
        // /proc counts in USER_HZ, 100 on Linux.
        let hz = 100.0;
        let mut cpu = [0.0; 3];
        for i in 0..3 {
            cpu[i] = 100.0 * cpu1[i].saturating_sub(cpu0[i]) as f64 / hz / wall;
        }
        // The handshake role may still be working through its queue.
        let mut after = counters(self.a);
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(300));
            let now = counters(self.a);
            if now == after {
                break;
            }
            after = now;
        }
        let kernel1 = storm::udp_rcvbuf_errors(self.ns_a).expect("snmp");
        // Cookie replies sent before the counters settled, still waiting.
        let mut buf = [0u8; 2048];
        let late_cookies = drain_cookies(self.sock, &mut buf);
        let (pings_sent, pings_received) = ping_summary(&ping_out);
        Outcome {
            name,
            sent: flooded.0,
            secs: flooded.1,
            cookies_received: flooded.2 + late_cookies,
            pings_sent,
            pings_received,
            kernel_drops: kernel1.saturating_sub(kernel0),
            before,
            after,
            rehandshake,
            cpu,
            transport_waited: 100.0 * wait1.saturating_sub(wait0) as f64 / 1e9 / wall,
        }
    }
}

/// Junk: garbage, truncated, oversized; (pool, how many of each kind of
/// 16 end as `drop_malformed`, the rest as `drop_unknown_index`).
fn junk_pool() -> (Vec<Vec<u8>>, Vec<bool>) {
    let mut rng = rand::thread_rng();
    let mut pool = Vec::new();
    let mut malformed = Vec::new();
    for i in 0..1024 {
        let (pkt, m) = match i % 8 {
            // Garbage: the first byte is no message type.
            0 | 1 => {
                let mut p = vec![0u8; rng.gen_range(4..1400)];
                rng.fill_bytes(&mut p);
                p[0] = rng.gen_range(5..=255);
                (p, true)
            }
            // Shorter than any message.
            2 => {
                let mut p = vec![0u8; rng.gen_range(0..4)];
                rng.fill_bytes(&mut p);
                (p, true)
            }
            // A handshake message cut short, or too long.
            3 | 4 => {
                let (kind, len) = [(1u8, 148usize), (2, 92), (3, 64)][rng.gen_range(0..3)];
                let n = if i % 8 == 3 {
                    rng.gen_range(4..len)
                } else {
                    rng.gen_range(len + 1..1400)
                };
                let mut p = vec![0u8; n];
                rng.fill_bytes(&mut p);
                p[..4].copy_from_slice(&[kind, 0, 0, 0]);
                (p, true)
            }
            // A data message shorter than its header and tag.
            5 => {
                let mut p = vec![0u8; rng.gen_range(4..32)];
                rng.fill_bytes(&mut p);
                p[..4].copy_from_slice(&[4, 0, 0, 0]);
                (p, true)
            }
            // Data messages for no session, up to oversized (fragmented
            // on the veth).
            _ => {
                let n = if i % 8 == 6 {
                    rng.gen_range(32..1400)
                } else {
                    rng.gen_range(1500..4000)
                };
                let mut p = vec![0u8; n];
                rng.fill_bytes(&mut p);
                p[..4].copy_from_slice(&[4, 0, 0, 0]);
                (p, false)
            }
        };
        pool.push(pkt);
        malformed.push(m);
    }
    (pool, malformed)
}

/// Initiations with a valid MAC1 for `to` and random everything else:
/// unknown static keys (the encrypted static does not even decrypt).
fn unknown_key_initiations(to: &PublicKey, n: usize) -> Vec<Vec<u8>> {
    let key = wg_handshake::mac::mac1_key(to);
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| {
            let mut p = vec![0u8; 148];
            rng.fill_bytes(&mut p);
            p[..4].copy_from_slice(&[1, 0, 0, 0]);
            p[INITIATION_MAC1_OFFSET + 16..].fill(0);
            let mac = wg_handshake::mac::mac(&key, &p[..INITIATION_MAC1_OFFSET]);
            p[INITIATION_MAC1_OFFSET..INITIATION_MAC1_OFFSET + 16].copy_from_slice(&mac);
            p
        })
        .collect()
}

/// The most one source may pass the limit in `secs` (with a little slack
/// for the clock and the first burst).
fn allowance(sources: u64, secs: f64) -> u64 {
    (sources as f64 * (BURST + PER_SECOND * (secs + 1.0))) as u64
}

#[test]
fn floods_from_a_third_namespace_leave_the_tunnel_and_other_sources_alone() {
    let net = net();
    let ns_c = Netns::new().expect("namespace C");
    let _veth_c = link_with(
        &net.ns_a,
        &ns_c,
        &[&format!("{OUTER_A_C}/24")],
        &[&format!("{OUTER_C}/24")],
    )
    .expect("veth A-C");
    // A takes packets from B's address on C's link (flood 5) and routes
    // the many sources of flood 6 back to C; C holds those addresses.
    for k in ["all", "default"] {
        net.ns_a
            .run("sysctl", ["-qw", &format!("net.ipv4.conf.{k}.rp_filter=0")])
            .expect("rp_filter");
    }
    net.ns_a
        .run(
            "sysctl",
            ["-qw", &format!("net.ipv4.conf.{}.rp_filter=0", _veth_c.a)],
        )
        .expect("rp_filter");
    net.ns_a
        .ip(["route", "add", &format!("{SOURCES_NET}/16"), "via", OUTER_C])
        .expect("route to C's sources");
    ns_c.ip(["link", "set", "lo", "up"]).expect("lo up");
    ns_c.ip(["addr", "add", &format!("{OUTER_B4}/32"), "dev", "lo"])
        .expect("B's address on C");
    let sources: Vec<Ipv4Addr> = (0..SOURCES)
        .map(|k| Ipv4Addr::from(u32::from(SOURCES_NET) + 1 + k))
        .collect();
    {
        use std::io::Write as _;
        let mut f = tempfile::NamedTempFile::new().expect("batch file");
        for s in &sources {
            writeln!(f, "addr add {s}/32 dev lo").expect("write batch");
        }
        f.flush().expect("flush batch");
        let path = f.path().to_string_lossy().into_owned();
        ns_c.ip(["-batch", path.as_str()]).expect("C's sources");
    }

    // The tunnel, B initiating (so its initiation can be captured) and
    // both sides knowing each other's endpoint.
    let capture = Capture::start(&net.ns_a, &net.veth.a).expect("capture");
    let mut setup = Setup::new(Kind::Wgd, Kind::Go);
    setup.b_knows_a = true;
    // The default level: the debug level logs every dropped packet.
    setup.wgd_env = vec![("LOG_LEVEL", "info")];
    let (a, b) = pair(&net, &setup);
    assert!(
        ping_within(&net.ns_b, ip(INNER_A4), HANDSHAKE_WAIT).is_some(),
        "B → A through the tunnel; {}",
        a.report()
    );
    assert!(wgd_tests::ping(&net.ns_a, ip(INNER_B4), 5), "A → B");
    let captured = capture.finish().expect("pcap");
    let from_b: Vec<Vec<u8>> = captured
        .iter()
        .filter(|p| p.src == ip(OUTER_B4) && p.is_wireguard())
        .filter_map(|p| p.udp_payload.clone())
        .collect();
    let b_initiation = from_b
        .iter()
        .find(|p| p.len() == 148 && p[0] == 1)
        .cloned()
        .expect("B's initiation on the wire");
    let b_data: Vec<Vec<u8>> = from_b
        .iter()
        .filter(|p| p[0] == 4 && p.len() > 32 && p.len() <= 200)
        .cloned()
        .collect();
    assert!(b_data.len() >= 5, "B's data messages: {}", b_data.len());

    let wgd = a.wgd();
    let wgd_public = PublicKey(
        B64.decode(wgd.public_key())
            .expect("base64")
            .try_into()
            .expect("32 bytes"),
    );
    let b_endpoint = only_peer(&wgd.dump().expect("dump")).endpoint;
    let sock = attacker_socket(&ns_c);
    // WGD_FLOOD_RENICE=1: the transport at nice -10, as a unit file's
    // Nice= could run the daemon, to tell wgd's losses from the machine's
    // scheduling (see the module documentation).
    if std::env::var("WGD_FLOOD_RENICE").is_ok() {
        let pid = wgd.role_pid("transport").expect("transport").to_string();
        let _ = std::process::Command::new("renice")
            .args(["-n", "-10", "-p", &pid])
            .status();
    }
    let lab = Lab {
        a: wgd,
        ns_a: &net.ns_a,
        ns_b: &net.ns_b,
        sock: &sock,
        target: SocketAddrV4::new(OUTER_A_C.parse().expect("literal"), PORT_A),
    };
    let a_pub = wgd.public_key().to_string();
    let reset_b = || {
        // B forgets its session with A and handshakes anew (its next
        // packet to A starts it), two seconds into the flood: a fixed
        // point in the flood, not a wait for a condition.
        std::thread::sleep(Duration::from_secs(2));
        let allowed = format!("{INNER_A4}/32,{INNER_A6}/128");
        let endpoint = format!("{OUTER_A4}:{PORT_A}");
        b.set(&["peer", &a_pub, "remove"]).expect("remove A on B");
        b.set(&[
            "peer",
            &a_pub,
            "allowed-ips",
            &allowed,
            "endpoint",
            &endpoint,
        ])
        .expect("re-add A on B");
        Some(ping_within(lab.ns_b, ip(INNER_A4), REHANDSHAKE_WAIT))
    };

    let (junk, junk_malformed) = junk_pool();
    let mac1_pool = unknown_key_initiations(&wgd_public, 512);
    // WGD_FLOOD_ONLY=NAME runs one flood (while working on it).
    let only = std::env::var("WGD_FLOOD_ONLY").ok();
    let want = |n: &str| only.as_deref().is_none_or(|o| o == n);
    let mut outcomes = Vec::new();
    type Phase<'p> = (&'static str, &'p [Vec<u8>], &'p [Ipv4Addr], bool);
    let b_addr = [ip4(OUTER_B4)];
    let phases: [Phase; 7] = [
        ("junk", &junk, &[], false),
        ("replayed data", &b_data, &[], false),
        (
            "replayed initiation",
            std::slice::from_ref(&b_initiation),
            &[],
            false,
        ),
        ("unknown keys", &mac1_pool, &[], true),
        ("spoofed peer", &mac1_pool, &b_addr, false),
        ("many sources", &mac1_pool, &sources, false),
        (MANY_RESET, &mac1_pool, &sources, true),
    ];
    for (name, pool, srcs, reset) in phases {
        if want(name) {
            outcomes.push(lab.run(name, pool, srcs, || if reset { reset_b() } else { None }));
        }
    }
    eprintln!("flood results (wgd A, wireguard-go B, attacker C):");
    for o in &outcomes {
        eprintln!("  {}", o.line());
    }
    let get = |n: &str| outcomes.iter().find(|o| o.name == n);
    if get(MANY_RESET).is_some_and(|o| o.rehandshake.flatten().is_none()) {
        // What B saw of its handshakes: when A's handshake queue is
        // seconds deep, each cookie reply comes after B has moved on to
        // its next initiation.
        let log = match &b {
            Side::Go(g) => g.child().stdout() + &g.child().stderr(),
            Side::Wgd(w) => w.child().stdout() + &w.child().stderr(),
        };
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                [
                    "Sending handshake",
                    "Received handshake",
                    "retrying",
                    "ookie",
                ]
                .iter()
                .any(|k| l.contains(k))
            })
            .collect();
        eprintln!("B did not handshake again; its handshake log:");
        for l in lines.iter().rev().take(20).rev() {
            eprintln!("  {l}");
        }
    }
    // Every check is made and every failure reported together.
    let mut failed: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: &str, o: Option<&Outcome>| {
        if !ok {
            failed.push(format!(
                "{what}: {}",
                o.map(Outcome::line).unwrap_or_default()
            ));
        }
    };

    // The daemon is up, all its roles, none restarted.
    check(a.wgd().child().is_running(), "wgd is up", None);
    check(wgd.roles().len() == 3, "three roles", None);
    check(
        wgd.dump().is_ok_and(|d| only_peer(&d).latest_handshake > 0),
        "B has a session",
        None,
    );

    for o in &outcomes {
        check(o.sent > 10_000, "the flood ran", Some(o));
        check(
            o.pings_sent >= u64::from(PINGS) - 1,
            "the ping stream ran",
            Some(o),
        );
        check(o.d("drop_bad_order") == 0, "no bad order", Some(o));
        if o.name == MANY_RESET {
            // B's session is gone until it handshakes again.
            continue;
        }
        // The tunnel loses under 1 % beyond what A's kernel dropped from
        // the UDP socket's full buffer: those datagrams (the flood's and
        // the tunnel's alike) were dropped while the transport waited for
        // a CPU, before wgd could see them. With no such drop, as on a
        // quiet machine under the floods from one address, this is under
        // 1 % outright. Loss that the kernel did not cause is wgd's.
        let kernel = o.kernel_drops as f64 / o.sent.max(1) as f64;
        check(
            o.loss() < 0.01 + kernel,
            "ping loss under 1 % + the kernel's drops",
            Some(o),
        );
    }

    // 1. Junk: every datagram the kernel delivered is counted as what it
    // is, and nothing of it reached the handshake role.
    if let Some(j) = get("junk") {
        let junk_m: u64 = (0..j.sent)
            .filter(|i| junk_malformed[*i as usize % junk.len()])
            .count() as u64;
        let junk_u = j.sent - junk_m;
        check(j.d("drop_malformed") <= junk_m, "malformed ≤ sent", Some(j));
        check(
            j.d("drop_unknown_index") <= junk_u,
            "unknown index ≤ sent",
            Some(j),
        );
        check(
            accounted(j, j.d("drop_malformed") + j.d("drop_unknown_index")),
            "junk accounted for",
            Some(j),
        );
        check(
            j.handshake_ended() == 0,
            "no junk reached the handshake role",
            Some(j),
        );
    }

    // 2. Replayed data: refused by the replay window.
    if let Some(r) = get("replayed data") {
        check(
            accounted(r, r.d("drop_replay")),
            "replays accounted for",
            Some(r),
        );
    }

    // 3–7. Handshake-shaped floods: what the limit let through is within
    // its allowance, and the handshake role accounts for all of it.
    for (name, n_sources) in [
        ("replayed initiation", 1u64),
        ("unknown keys", 1),
        ("spoofed peer", 1),
        ("many sources", u64::from(SOURCES)),
        (MANY_RESET, u64::from(SOURCES)),
    ] {
        let Some(o) = get(name) else {
            continue;
        };
        let limited = o.d("drop_ratelimited");
        let busy = o.d("drop_handshake_busy");
        let ended = o.handshake_ended();
        check(
            accounted(o, limited + busy + ended),
            "accounted for",
            Some(o),
        );
        // B's own handshake messages pass too.
        check(
            ended + busy <= allowance(n_sources, o.secs) + 10,
            "within the limit's allowance",
            Some(o),
        );
        check(o.d("handshake_bad_mac1") == 0, "valid MAC1s", Some(o));
        if n_sources == 1 {
            check(
                o.d("handshake_cookie_replies") == 0,
                "one source never loads the handshake role",
                Some(o),
            );
        } else {
            // The handshake role was put under load and answered with
            // cookie replies (demanding MAC2), which reached the attacker.
            check(
                o.d("handshake_cookie_replies") > 0,
                "cookie replies",
                Some(o),
            );
            check(o.cookies_received > 0, "cookies at the attacker", Some(o));
        }
    }
    // The attacker received no more cookie replies than wgd counted (over
    // all floods: a reply counted at the end of one may arrive in the next).
    if let (Some(first), Some(last)) = (outcomes.first(), outcomes.last()) {
        let counted = delta(&last.after, &first.before, "handshake_cookie_replies");
        let received: u64 = outcomes.iter().map(|o| o.cookies_received).sum();
        check(
            received <= counted,
            &format!("{received} cookie replies received, {counted} sent"),
            None,
        );
    }
    if let Some(ri) = get("replayed initiation") {
        check(
            ri.d("handshake_replayed_timestamp") + ri.d("handshake_initiation_flood") > 0,
            "the replayed initiation was refused as a replay",
            Some(ri),
        );
    }

    // 4. Under one flooder, B's reset session handshakes again at once:
    // the flooder's address is throttled, B's is not.
    if let Some(u) = get("unknown keys") {
        check(
            u.rehandshake
                .flatten()
                .is_some_and(|t| t < Duration::from_secs(2)),
            "B handshook again during the flood, at its first try",
            Some(u),
        );
        check(
            u.d("handshake_rejected") > 0,
            "unknown keys rejected",
            Some(u),
        );
    }
    // 7. Under many sources, B's reset session handshakes again during
    // the flood: a cookie reply, then its retry with MAC2.
    if let Some(m) = get(MANY_RESET) {
        check(
            m.rehandshake.flatten().is_some(),
            "B handshook again during the many-source flood",
            Some(m),
        );
    }

    // B's endpoint at A never moved to the attacker.
    let end = wgd.dump().ok().map(|d| only_peer(&d).endpoint);
    check(
        end == Some(b_endpoint),
        "B's endpoint at A did not move",
        None,
    );
    assert!(
        failed.is_empty(),
        "{} checks failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

fn ip4(s: &str) -> Ipv4Addr {
    s.parse().expect("literal")
}

/// Whether every datagram the attacker sent was either dropped by A's
/// kernel (socket buffer full) or counted by wgd as `counted`, within
/// 1 %, and no more were counted than sent (B's handshake messages
/// aside). The kernel's count includes the tunnel's datagrams it dropped,
/// a few hundred at most.
fn accounted(o: &Outcome, counted: u64) -> bool {
    let seen = counted + o.kernel_drops;
    seen as f64 >= 0.99 * o.sent as f64 && counted <= o.sent + 100
}
