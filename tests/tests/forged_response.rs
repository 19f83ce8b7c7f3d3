//! Issue 11, end to end: a forged handshake response does not kill the
//! genuine handshake.
//!
//! wgd initiates to a peer (wireguard-go, Debian's; and wgd) through a
//! UDP relay the test runs in the peer's namespace: wgd's configured
//! endpoint is the relay, which passes every datagram on both ways. When
//! the peer's genuine response to wgd's first initiation reaches the
//! relay, the relay first sends wgd two forgeries of its own — type 2,
//! wgd's sender index (read off the initiation on the wire) as receiver, a
//! valid MAC1 (it needs only wgd's public key), Noise bytes that do not
//! authenticate: random ones, and the genuine response with one bit
//! flipped — then the genuine response.
//!
//! wgd must refuse both forgeries (counted as `handshake_rejected`) and
//! complete the handshake with the genuine response to that same first
//! initiation: no second initiation, no response to an unknown index, a
//! ping through the tunnel answered. Before the fix the forgery freed the
//! index, the genuine response met `handshake_unknown_index`, and only a
//! retry 5 s later made a session. The same run with wireguard-go as the
//! initiator is the reference: it shows the same (one initiation, a ping
//! answered before any retransmission).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use common::*;
use proto::keys::PublicKey;
use proto::wire::{Response, RESPONSE_MAC1_OFFSET};
use wgd_tests::{keypair, ping, InterfaceConfig, PeerConfig, WgGo, Wgd};

const RELAY_PORT: u16 = 51830;
/// Bound on the relay thread, whatever the test does.
const RELAY_LIFE: Duration = Duration::from_secs(60);

/// What the relay saw and did.
#[derive(Debug, Default, Clone)]
struct Log {
    /// Initiations from wgd passed on.
    initiations: u32,
    /// wgd's sender index in its first initiation.
    first_index: Option<u32>,
    /// Forgeries sent to wgd, and the receiver index they named.
    forgeries: u32,
    forged_index: Option<u32>,
    /// Responses of the peer passed on to wgd.
    responses: u32,
}

fn mac1(to: &PublicKey, msg: &mut [u8]) {
    let mac = wg_handshake::mac::mac(
        &wg_handshake::mac::mac1_key(to),
        &msg[..RESPONSE_MAC1_OFFSET],
    );
    msg[RESPONSE_MAC1_OFFSET..RESPONSE_MAC1_OFFSET + 16].copy_from_slice(&mac);
}

/// The two forgeries of a genuine response to `to`.
fn forgeries(genuine: &[u8], to: &PublicKey) -> Vec<Vec<u8>> {
    let Ok(g) = Response::parse(genuine) else {
        return Vec::new();
    };
    let mut random = Response {
        sender: 0x5eed_0001,
        receiver: g.receiver,
        noise: [0; 48],
        mac1: [0; 16],
        mac2: [0; 16],
    };
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut random.noise);
    let mut flipped = g.clone();
    flipped.noise[20] ^= 0x10;
    [random, flipped]
        .iter()
        .map(|r| {
            let mut b = r.to_bytes().to_vec();
            mac1(to, &mut b);
            b
        })
        .collect()
}

/// Passes datagrams between wgd and the peer, forging before the first
/// response, until `stop` or [`RELAY_LIFE`].
fn relay(
    sock: &UdpSocket,
    wgd: SocketAddr,
    peer: SocketAddr,
    wgd_public: &PublicKey,
    stop: &AtomicBool,
    log: &Mutex<Log>,
) {
    let _ = sock.set_read_timeout(Some(Duration::from_millis(50)));
    let end = Instant::now() + RELAY_LIFE;
    let mut buf = [0u8; 65_536];
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let pkt = &buf[..n];
        let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
        if from == wgd {
            if n == 148 && pkt[0] == 1 {
                l.initiations += 1;
                l.first_index
                    .get_or_insert(u32::from_le_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]));
            }
            let _ = sock.send_to(pkt, peer);
        } else if from == peer {
            if n == 92 && pkt[0] == 2 {
                if l.forgeries == 0 {
                    for f in forgeries(pkt, wgd_public) {
                        if sock.send_to(&f, wgd).is_ok() {
                            l.forgeries += 1;
                            l.forged_index = Some(u32::from_le_bytes([f[8], f[9], f[10], f[11]]));
                        }
                    }
                }
                l.responses += 1;
            }
            let _ = sock.send_to(pkt, wgd);
        }
    }
}

/// Starts one side: wgd, or Debian's wireguard-go configured with `conf`.
fn start_side<'n>(kind: Kind, ns: &'n wgd_tests::Netns, conf: InterfaceConfig) -> Side<'n> {
    match kind {
        Kind::Go => {
            let g = WgGo::start(ns).expect("start wireguard-go");
            g.setconf(&conf).expect("configure wireguard-go");
            Side::Go(g)
        }
        Kind::Wgd => Side::Wgd(Wgd::start(ns, conf, &[]).expect("start wgd")),
    }
}

/// `initiator` (in net A; its endpoint for the peer is the relay) starts
/// a handshake with `peer_kind` (net B); see the module documentation.
fn forged_then_genuine(initiator: Kind, peer_kind: Kind) {
    let net = net();
    let (wgd_key, wgd_pub) = keypair();
    let (peer_key, peer_pub) = keypair();
    let wgd_addr = sa(OUTER_A4, PORT_A);
    let peer_addr = sa(OUTER_B4, PORT_B);
    let relay_addr = sa(OUTER_B4, RELAY_PORT);

    let wgd_side = start_side(
        initiator,
        &net.ns_a,
        InterfaceConfig {
            private_key: Some(wgd_key),
            listen_port: Some(PORT_A),
            fwmark: None,
            peers: vec![
                PeerConfig::new(&peer_pub, &[&format!("{INNER_B4}/32")]).endpoint(relay_addr)
            ],
        },
    );
    let peer_conf = InterfaceConfig {
        private_key: Some(peer_key),
        listen_port: Some(PORT_B),
        fwmark: None,
        // No endpoint: it answers whoever initiates, here the relay.
        peers: vec![PeerConfig::new(&wgd_pub, &[&format!("{INNER_A4}/32")])],
    };
    let side = start_side(peer_kind, &net.ns_b, peer_conf);
    wgd_side.finish(&format!("{INNER_A4}/24"), &format!("{INNER_A6}/64"));
    side.finish(&format!("{INNER_B4}/24"), &format!("{INNER_B6}/64"));

    let sock = net
        .ns_b
        .enter(|| UdpSocket::bind(relay_addr))
        .expect("enter the peer's namespace")
        .expect("bind the relay");
    let raw = B64.decode(&wgd_pub).expect("the initiator's public key");
    let wgd_public = PublicKey(raw.try_into().expect("32 bytes"));
    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));

    let started = Instant::now();
    let answered = std::thread::scope(|s| {
        let relay_thread = s.spawn(|| relay(&sock, wgd_addr, peer_addr, &wgd_public, &stop, &log));
        // The first ping starts wgd's handshake; its echo comes back once
        // the session stands.
        let answered = ping(&net.ns_a, ip(INNER_B4), 3);
        stop.store(true, Ordering::Relaxed);
        let _ = relay_thread.join();
        answered
    });
    let took = started.elapsed();
    let l = log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let report = || {
        format!(
            "{l:?}\n--- initiator ---\n{}\n--- peer ---\n{}",
            wgd_side.report(),
            side.report()
        )
    };
    assert!(answered, "no ping through the tunnel; {}", report());
    assert_eq!(l.forgeries, 2, "both forgeries sent; {}", report());
    assert_eq!(
        l.forged_index,
        l.first_index,
        "the forgeries named wgd's first initiation; {}",
        report()
    );
    assert_eq!(
        l.initiations,
        1,
        "the first initiation completed: no retry was needed; {}",
        report()
    );
    assert!(
        took < Duration::from_secs(5),
        "the session stood before a retransmission could make it: {took:?}"
    );
    let dump = wgd_side.dump().expect("wg show dump");
    assert!(only_peer(&dump).latest_handshake > 0, "{dump:?}");
    if let Side::Wgd(wgd) = &wgd_side {
        let stats = wgd.wgd_get().expect("wgd_get");
        let n = |k: &str| stats.get(k).and_then(|v| v.parse::<u64>().ok());
        assert_eq!(n("handshake_rejected"), Some(2), "{stats:?}");
        assert_eq!(n("handshake_unknown_index"), Some(0), "{stats:?}");
    }
}

#[test]
fn a_forged_response_then_wireguard_go_completes_wgds_handshake() {
    forged_then_genuine(Kind::Wgd, Kind::Go);
}

#[test]
fn a_forged_response_then_wgd_completes_wgds_handshake() {
    forged_then_genuine(Kind::Wgd, Kind::Wgd);
}

/// The reference: wireguard-go as the initiator, under the same forgeries,
/// keeps its handshake state too and completes with the genuine response
/// to its first initiation (what wgd is held to above).
#[test]
fn the_reference_wireguard_go_initiator_survives_the_same_forgeries() {
    forged_then_genuine(Kind::Go, Kind::Wgd);
}
