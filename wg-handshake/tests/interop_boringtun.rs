//! Interop with boringtun, in process, as the remote peer.
//!
//! Our side is the real stack minus processes: the handshake core, the
//! crypto role's key store (through the same question/answer interface the
//! daemon uses) and the transport's keypair slots and data path. The other
//! side is boringtun's `Tunn`, a WireGuard implementation we did not
//! write: a handshake or data packet counts only if it accepts it.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use common::*;
use proto::ipc::HandshakeToTransport;
use proto::keys::{PublicKey, SecretKey};
use wg_handshake::{Config, DropReason, PacketOutcome};
use wg_transport::data::inner_packet;
use wg_transport::keypair::{Keypair, KeypairSlots};

const OUR_ADDR: &str = "192.0.2.1:51820";
const BT_ADDR: &str = "192.0.2.2:51820";

struct Remote {
    tunn: Tunn,
    public: PublicKey,
}

fn remote(
    our_public: &PublicKey,
    psk: Option<[u8; 32]>,
    limiter: Option<Arc<RateLimiter>>,
) -> (Remote, x25519::StaticSecret) {
    let secret = x25519::StaticSecret::random_from_rng(rand_core::OsRng);
    let public = x25519::PublicKey::from(&secret);
    let tunn = Tunn::new(
        secret.clone(),
        x25519::PublicKey::from(our_public.0),
        psk,
        None,
        7,
        limiter,
    );
    (
        Remote {
            tunn,
            public: PublicKey(public.to_bytes()),
        },
        secret,
    )
}

fn cfg() -> Config {
    Config {
        seed: Some(11),
        ..Config::default()
    }
}

fn bt_addr() -> SocketAddr {
    BT_ADDR.parse().expect("literal")
}

/// An IPv4 UDP packet of `payload_len` bytes (boringtun reads the IP
/// header's length to strip padding, so it must be a real header).
fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize, fill: u8) -> Vec<u8> {
    let total = 20 + 8 + payload_len;
    let mut p = vec![fill; total];
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
    p[8] = 64;
    p[9] = 17;
    p[10..12].copy_from_slice(&[0, 0]);
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let mut sum: u32 = 0;
    for w in p[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    p[20..28].copy_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 0, 0, 0]);
    p[24..26].copy_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    p
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, payload_len: usize, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; 40 + payload_len];
    p[0] = 0x60;
    p[1..4].copy_from_slice(&[0, 0, 0]);
    p[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    p[6] = 59; // no next header
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p
}

/// Pulls the keys out of our core's InstallKeypair and puts them in a
/// transport keypair slot set, exactly as the transport process does.
fn install(slots: &mut KeypairSlots, actions: &[HandshakeToTransport], now: Instant) -> bool {
    let mut installed = false;
    for a in actions {
        if let HandshakeToTransport::InstallKeypair {
            local_index,
            remote_index,
            keys,
            initiator,
            ..
        } = a
        {
            let kp = Keypair::new(
                *local_index,
                *remote_index,
                keys.send.expose(),
                keys.recv.expose(),
                *initiator,
                now,
            );
            slots.install(kp);
            installed = true;
        }
    }
    installed
}

/// Our data → boringtun, and boringtun's data → us, for a few sizes and
/// both IP versions.
fn exchange_data(slots: &mut KeypairSlots, bt: &mut Tunn, now: Instant) {
    let a4 = Ipv4Addr::new(10, 9, 0, 1);
    let b4 = Ipv4Addr::new(10, 9, 0, 2);
    let a6: Ipv6Addr = "fd00:9::1".parse().expect("literal");
    let b6: Ipv6Addr = "fd00:9::2".parse().expect("literal");
    let mut round = 0u8;
    for len in [0usize, 1, 15, 16, 17, 100, 1372] {
        round = round.wrapping_add(1);
        for v6 in [false, true] {
            // us → boringtun
            let pkt = if v6 {
                ipv6_packet(a6, b6, len, round)
            } else {
                ipv4_packet(a4, b4, len, round)
            };
            let mut wire = vec![0u8; pkt.len() + 64];
            let n = slots
                .encapsulate(now, &pkt, &mut wire)
                .expect("encapsulate");
            assert_eq!((n - 32) % 16, 0, "we pad to 16");
            let mut out = vec![0u8; 2048];
            match bt.decapsulate(Some(IpAddr::V4(a4)), &wire[..n], &mut out) {
                TunnResult::WriteToTunnelV4(p, src) => {
                    assert!(!v6);
                    assert_eq!(src, a4);
                    assert_eq!(p, &pkt[..]);
                }
                TunnResult::WriteToTunnelV6(p, src) => {
                    assert!(v6);
                    assert_eq!(src, a6);
                    assert_eq!(p, &pkt[..]);
                }
                other => panic!(
                    "boringtun did not accept our data ({len} B): {:?}",
                    name(&other)
                ),
            }
            // boringtun → us
            let back = if v6 {
                ipv6_packet(b6, a6, len, round ^ 0xff)
            } else {
                ipv4_packet(b4, a4, len, round ^ 0xff)
            };
            let mut out = vec![0u8; 2048];
            let mut wire = match bt.encapsulate(&back, &mut out) {
                TunnResult::WriteToNetwork(w) => w.to_vec(),
                other => panic!("boringtun did not send data: {:?}", name(&other)),
            };
            let d = slots
                .decapsulate(now, &mut wire)
                .expect("we accept boringtun's data");
            let plain = &wire[d.plaintext.clone()];
            let inner = inner_packet(plain).expect("an IP packet");
            assert_eq!(&plain[..inner.len], &back[..]);
            // (boringtun does not pad its own packets; padding is the
            // sender's choice, and we only require a valid IP length.)
        }
    }
}

fn name(r: &TunnResult<'_>) -> String {
    match r {
        TunnResult::Done => "Done".into(),
        TunnResult::Err(e) => format!("Err({e:?})"),
        TunnResult::WriteToNetwork(p) => format!("WriteToNetwork({} B)", p.len()),
        TunnResult::WriteToTunnelV4(p, _) => format!("WriteToTunnelV4({} B)", p.len()),
        TunnResult::WriteToTunnelV6(p, _) => format!("WriteToTunnelV6({} B)", p.len()),
    }
}

fn our_initiator_with_boringtun_responder(psk: Option<[u8; 32]>) {
    let t0 = Instant::now();
    let mut us = Node::new(cfg(), OUR_ADDR);
    let (mut bt, _) = remote(&us.public, psk, None);
    us.add_peer(t0, bt.public, psk);
    us.drain();

    us.need_handshake(t0, &bt.public);
    let init = sent_packets(&us.drain()).remove(0);
    assert_eq!(init.len(), 148);
    let mut buf = vec![0u8; 2048];
    let resp = match bt.tunn.decapsulate(Some(us.addr.ip()), &init, &mut buf) {
        TunnResult::WriteToNetwork(r) => r.to_vec(),
        other => panic!("boringtun rejected our initiation: {}", name(&other)),
    };
    assert_eq!(resp.len(), 92);
    assert_eq!(
        us.receive(t0, &resp, bt_addr()),
        PacketOutcome::Completed(bt.public)
    );
    let actions = us.drain();
    let mut slots = KeypairSlots::new();
    assert!(install(&mut slots, &actions, t0));
    assert!(actions.contains(&HandshakeToTransport::HandshakeReceived {
        peer: bt.public,
        from: proto::ipc::Endpoint::new(bt_addr()),
        len: 92,
    }));
    // Our confirming keepalive is what boringtun waits for.
    let mut ka = vec![0u8; 64];
    let n = slots.encapsulate(t0, &[], &mut ka).expect("keepalive");
    assert_eq!(n, 32);
    assert!(matches!(
        bt.tunn.decapsulate(None, &ka[..n], &mut buf),
        TunnResult::Done
    ));
    exchange_data(&mut slots, &mut bt.tunn, t0);
}

fn boringtun_initiator_with_our_responder(psk: Option<[u8; 32]>) {
    let t0 = Instant::now();
    let mut us = Node::new(cfg(), OUR_ADDR);
    let (mut bt, _) = remote(&us.public, psk, None);
    us.add_peer(t0, bt.public, psk);
    us.drain();

    let mut buf = vec![0u8; 2048];
    let init = match bt.tunn.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("no initiation from boringtun: {}", name(&other)),
    };
    assert_eq!(
        us.receive(t0, &init, bt_addr()),
        PacketOutcome::Responded(bt.public)
    );
    let actions = us.drain();
    let resp = sent_packets(&actions).remove(0);
    let mut slots = KeypairSlots::new();
    assert!(install(&mut slots, &actions, t0));
    assert!(!slots.can_send(t0), "responder waits for confirmation");
    // boringtun accepts our response and confirms with a keepalive.
    let mut ka = match bt.tunn.decapsulate(Some(us.addr.ip()), &resp, &mut buf) {
        TunnResult::WriteToNetwork(k) => k.to_vec(),
        other => panic!("boringtun rejected our response: {}", name(&other)),
    };
    let d = slots
        .decapsulate(t0, &mut ka)
        .expect("keepalive authenticates");
    assert!(d.is_keepalive);
    assert!(d.confirmed_next);
    assert!(slots.can_send(t0));
    exchange_data(&mut slots, &mut bt.tunn, t0);
}

#[test]
fn our_initiator_boringtun_responder_no_psk() {
    our_initiator_with_boringtun_responder(None);
}

#[test]
fn our_initiator_boringtun_responder_psk() {
    our_initiator_with_boringtun_responder(Some([0x5a; 32]));
}

#[test]
fn boringtun_initiator_our_responder_no_psk() {
    boringtun_initiator_with_our_responder(None);
}

#[test]
fn boringtun_initiator_our_responder_psk() {
    boringtun_initiator_with_our_responder(Some([0xa5; 32]));
}

#[test]
fn wrong_psk_fails_cleanly_both_ways() {
    let t0 = Instant::now();
    // We initiate: boringtun answers (the PSK enters only the response),
    // and we refuse its response.
    let mut us = Node::new(cfg(), OUR_ADDR);
    let (mut bt, _) = remote(&us.public, Some([1; 32]), None);
    us.add_peer(t0, bt.public, Some([2; 32]));
    us.drain();
    us.need_handshake(t0, &bt.public);
    let init = sent_packets(&us.drain()).remove(0);
    let mut buf = vec![0u8; 2048];
    let resp = match bt.tunn.decapsulate(Some(us.addr.ip()), &init, &mut buf) {
        TunnResult::WriteToNetwork(r) => r.to_vec(),
        other => panic!("{}", name(&other)),
    };
    assert!(matches!(
        us.receive(t0, &resp, bt_addr()),
        PacketOutcome::Dropped(DropReason::Rejected(_))
    ));
    assert_eq!(installs(&us.drain()), 0, "no session with a wrong PSK");

    // boringtun initiates: we answer, boringtun refuses our response.
    let mut us = Node::new(cfg(), OUR_ADDR);
    let (mut bt, _) = remote(&us.public, Some([1; 32]), None);
    us.add_peer(t0, bt.public, Some([2; 32]));
    us.drain();
    let init = match bt.tunn.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{}", name(&other)),
    };
    assert_eq!(
        us.receive(t0, &init, bt_addr()),
        PacketOutcome::Responded(bt.public)
    );
    let actions = us.drain();
    let resp = sent_packets(&actions).remove(0);
    let mut slots = KeypairSlots::new();
    install(&mut slots, &actions, t0);
    assert!(matches!(
        bt.tunn.decapsulate(Some(us.addr.ip()), &resp, &mut buf),
        TunnResult::Err(_)
    ));
    assert!(!slots.can_send(t0), "our unconfirmed keypair is never used");
}

#[test]
fn unknown_static_key_fails_cleanly_both_ways() {
    let t0 = Instant::now();
    // boringtun knows us, we do not know it.
    let mut us = Node::new(cfg(), OUR_ADDR);
    let (mut bt, _) = remote(&us.public, None, None);
    let mut buf = vec![0u8; 2048];
    let init = match bt.tunn.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{}", name(&other)),
    };
    assert_eq!(
        us.receive(t0, &init, bt_addr()),
        PacketOutcome::Dropped(DropReason::Rejected(proto::ipc::CryptoError::UnknownPeer))
    );
    assert!(us.drain().is_empty());
    assert_eq!(us.store.pending_count(), 0);

    // We know boringtun's key, but boringtun expects someone else.
    let mut us = Node::new(cfg(), OUR_ADDR);
    let stranger = wg_crypto::public_key(&SecretKey::from_bytes([9; 32]));
    let (mut bt, _) = remote(&stranger, None, None);
    us.add_peer(t0, bt.public, None);
    us.drain();
    us.need_handshake(t0, &bt.public);
    let init = sent_packets(&us.drain()).remove(0);
    assert!(!matches!(
        bt.tunn.decapsulate(Some(us.addr.ip()), &init, &mut buf),
        TunnResult::WriteToNetwork(_)
    ));
}

#[test]
fn our_cookie_makes_boringtun_send_mac2_that_we_accept() {
    let t0 = Instant::now();
    let mut loaded = cfg();
    loaded.load_threshold = 0; // always under load: MAC2 demanded
    let mut us = Node::new(loaded, OUR_ADDR);
    let (mut bt, _) = remote(&us.public, None, None);
    us.add_peer(t0, bt.public, None);
    us.drain();
    let mut buf = vec![0u8; 2048];
    let init = match bt.tunn.format_handshake_initiation(&mut buf, false) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{}", name(&other)),
    };
    assert_eq!(us.receive(t0, &init, bt_addr()), PacketOutcome::CookieSent);
    let cookie = sent_packets(&us.drain()).remove(0);
    assert_eq!(cookie.len(), 64);
    assert!(
        matches!(
            bt.tunn.decapsulate(Some(us.addr.ip()), &cookie, &mut buf),
            TunnResult::Done
        ),
        "boringtun takes our cookie"
    );
    let retry = match bt.tunn.format_handshake_initiation(&mut buf, true) {
        TunnResult::WriteToNetwork(p) => p.to_vec(),
        other => panic!("{}", name(&other)),
    };
    assert_ne!(&retry[132..148], &[0u8; 16], "boringtun now sends MAC2");
    assert_eq!(
        us.receive(t0, &retry, bt_addr()),
        PacketOutcome::Responded(bt.public)
    );
    assert_eq!(us.core.counters().cookie_replies_sent, 1);
}

#[test]
fn boringtun_cookie_makes_our_retry_carry_mac2_that_it_accepts() {
    let t0 = Instant::now();
    let mut us = Node::new(cfg(), OUR_ADDR);
    // A boringtun rate limiter with limit 0 demands a cookie for every
    // handshake message.
    let (mut bt, bt_secret) = {
        let secret = x25519::StaticSecret::random_from_rng(rand_core::OsRng);
        let public = x25519::PublicKey::from(&secret);
        let limiter = Arc::new(RateLimiter::new(&public, 0));
        let tunn = Tunn::new(
            secret.clone(),
            x25519::PublicKey::from(us.public.0),
            None,
            None,
            7,
            Some(limiter),
        );
        (
            Remote {
                tunn,
                public: PublicKey(public.to_bytes()),
            },
            secret,
        )
    };
    drop(bt_secret);
    us.add_peer(t0, bt.public, None);
    us.drain();
    us.need_handshake(t0, &bt.public);
    let init = sent_packets(&us.drain()).remove(0);
    let mut buf = vec![0u8; 2048];
    let cookie = match bt.tunn.decapsulate(Some(us.addr.ip()), &init, &mut buf) {
        TunnResult::WriteToNetwork(c) => c.to_vec(),
        other => panic!("{}", name(&other)),
    };
    assert_eq!(cookie.len(), 64, "boringtun answers with a cookie reply");
    assert_eq!(
        us.receive(t0, &cookie, bt_addr()),
        PacketOutcome::CookieAccepted
    );
    // The retransmission, 5 s + jitter later, carries MAC2.
    us.on_timers(t0 + Duration::from_millis(5400));
    let retry = sent_packets(&us.drain()).remove(0);
    assert_ne!(&retry[132..148], &[0u8; 16]);
    match bt.tunn.decapsulate(Some(us.addr.ip()), &retry, &mut buf) {
        TunnResult::WriteToNetwork(r) => assert_eq!(r.len(), 92, "a response, not another cookie"),
        other => panic!("boringtun rejected our MAC2: {}", name(&other)),
    }
}

#[test]
fn rekeyed_session_still_interoperates() {
    // Two handshakes in a row (as after REKEY_AFTER_TIME): the new keypair
    // takes over, the old one still decrypts packets in flight.
    let t0 = Instant::now();
    let mut us = Node::new(cfg(), OUR_ADDR);
    let (mut bt, _) = remote(&us.public, None, None);
    us.add_peer(t0, bt.public, None);
    us.drain();
    let mut slots = KeypairSlots::new();
    let mut buf = vec![0u8; 2048];
    for round in 0..3u64 {
        let now = t0 + Duration::from_secs(6 * round);
        us.need_handshake(now, &bt.public);
        let init = sent_packets(&us.drain()).remove(0);
        let resp = match bt.tunn.decapsulate(Some(us.addr.ip()), &init, &mut buf) {
            TunnResult::WriteToNetwork(r) => r.to_vec(),
            other => panic!("round {round}: {}", name(&other)),
        };
        assert_eq!(
            us.receive(now, &resp, bt_addr()),
            PacketOutcome::Completed(bt.public)
        );
        assert!(install(&mut slots, &us.drain(), now));
        let mut ka = vec![0u8; 64];
        let n = slots.encapsulate(now, &[], &mut ka).expect("keepalive");
        let _ = bt.tunn.decapsulate(None, &ka[..n], &mut buf);
        exchange_data(&mut slots, &mut bt.tunn, now);
    }
}

/// boringtun answers our initiation; before its response arrives, forged
/// ones do (our initiation's index, valid MAC1, Noise bytes that do not
/// authenticate, among them boringtun's own response with a bit flipped).
/// Each is refused and leaves the handshake alone: boringtun's genuine
/// response then completes it, and data flows both ways.
#[test]
fn forged_responses_then_boringtun_completes_our_handshake() {
    for psk in [None, Some([0x3c; 32])] {
        let t0 = Instant::now();
        let mut us = Node::new(cfg(), OUR_ADDR);
        let (mut bt, _) = remote(&us.public, psk, None);
        us.add_peer(t0, bt.public, psk);
        us.drain();
        us.need_handshake(t0, &bt.public);
        let init = sent_packets(&us.drain()).remove(0);
        let mut buf = vec![0u8; 2048];
        let genuine = match bt.tunn.decapsulate(Some(us.addr.ip()), &init, &mut buf) {
            TunnResult::WriteToNetwork(r) => r.to_vec(),
            other => panic!("boringtun rejected our initiation: {}", name(&other)),
        };
        let forgeries = [
            forged_response(&init, &us.public, [0xee; 48]),
            tampered_response(&genuine, &us.public, 0),
            tampered_response(&genuine, &us.public, 47),
        ];
        for forged in &forgeries {
            assert_eq!(
                us.receive(t0, forged, bt_addr()),
                PacketOutcome::Dropped(DropReason::Rejected(proto::ipc::CryptoError::Rejected))
            );
            assert_eq!(installs(&us.drain()), 0);
        }
        assert_eq!(
            us.receive(t0, &genuine, bt_addr()),
            PacketOutcome::Completed(bt.public)
        );
        let actions = us.drain();
        let mut slots = KeypairSlots::new();
        assert!(install(&mut slots, &actions, t0));
        let mut ka = vec![0u8; 64];
        let n = slots.encapsulate(t0, &[], &mut ka).expect("keepalive");
        assert!(matches!(
            bt.tunn.decapsulate(None, &ka[..n], &mut buf),
            TunnResult::Done
        ));
        exchange_data(&mut slots, &mut bt.tunn, t0);
    }
}
