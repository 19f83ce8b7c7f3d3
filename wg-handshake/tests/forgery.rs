//! Forged and replayed handshake messages between two of our stacks
//! (handshake core + key store), on a fake clock.
//!
//! A forged response — the right receiver index, which is on the wire in
//! our initiation, a valid MAC1, which needs only our public key, and
//! Noise bytes that do not authenticate — must not cost us the handshake:
//! the genuine response that follows completes it (issue 11).

mod common;

use std::time::{Duration, Instant};

use common::*;
use proto::ipc::{CryptoError, HandshakeToTransport};
use wg_handshake::{Config, DropReason, PacketOutcome};

fn cfg() -> Config {
    Config {
        seed: Some(5),
        ..Config::default()
    }
}

const REJECTED: PacketOutcome = PacketOutcome::Dropped(DropReason::Rejected(CryptoError::Rejected));

#[test]
fn a_forged_response_then_the_genuine_one_completes() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let init = sent_packets(&a.drain()).remove(0);
    let pending = a.store.pending_count();
    assert_eq!(
        b.receive(t0, &init, a.addr),
        PacketOutcome::Responded(a.public)
    );
    let genuine = sent_packets(&b.drain()).remove(0);

    // Garbage, then the genuine response with a bit flipped in its
    // ephemeral and in its sealed payload: each refused, nothing changes.
    let forgeries = [
        forged_response(&init, &a.public, [0x5a; 48]),
        forged_response(&init, &a.public, [0; 48]),
        tampered_response(&genuine, &a.public, 3),
        tampered_response(&genuine, &a.public, 40),
    ];
    for (i, forged) in forgeries.iter().enumerate() {
        let now = t0 + Duration::from_millis(10 * i as u64);
        assert_eq!(a.receive(now, forged, b.addr), REJECTED, "forgery {i}");
        let actions = a.drain();
        assert_eq!(installs(&actions), 0, "forgery {i} installed a keypair");
        assert!(
            !actions
                .iter()
                .any(|x| matches!(x, HandshakeToTransport::HandshakeReceived { .. })),
            "forgery {i} moved the endpoint"
        );
        assert_eq!(
            a.store.pending_count(),
            pending,
            "crypto kept the handshake"
        );
    }
    assert_eq!(a.core.counters().rejected, forgeries.len() as u64);

    let now = t0 + Duration::from_millis(100);
    assert_eq!(
        a.receive(now, &genuine, b.addr),
        PacketOutcome::Completed(b.public)
    );
    assert_eq!(installs(&a.drain()), 1);
    assert_eq!(a.store.pending_count(), 0);
}

#[test]
fn the_responder_keys_match_after_forgeries() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let init = sent_packets(&a.drain()).remove(0);
    assert_eq!(
        b.receive(t0, &init, a.addr),
        PacketOutcome::Responded(a.public)
    );
    let b_actions = b.drain();
    let genuine = sent_packets(&b_actions).remove(0);
    assert_eq!(
        a.receive(t0, &forged_response(&init, &a.public, [7; 48]), b.addr),
        REJECTED
    );
    a.drain();
    assert_eq!(
        a.receive(t0, &genuine, b.addr),
        PacketOutcome::Completed(b.public)
    );
    let keys = |actions: &[HandshakeToTransport]| {
        actions.iter().find_map(|x| match x {
            HandshakeToTransport::InstallKeypair { keys, .. } => {
                Some((*keys.send.expose(), *keys.recv.expose()))
            }
            _ => None,
        })
    };
    let (a_send, a_recv) = keys(&a.drain()).expect("a installed");
    let (b_send, b_recv) = keys(&b_actions).expect("b installed");
    assert_eq!(a_send, b_recv);
    assert_eq!(a_recv, b_send);
}

/// A forged response does not reset the retransmission either: the
/// initiation is retried on its schedule, not earlier and not never.
#[test]
fn a_forged_response_leaves_the_retransmit_timer_alone() {
    let t0 = Instant::now();
    let (mut a, b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let init = sent_packets(&a.drain()).remove(0);
    let before = a.core.next_deadline();
    assert_eq!(
        a.receive(
            t0 + Duration::from_secs(1),
            &forged_response(&init, &a.public, [1; 48]),
            b.addr
        ),
        REJECTED
    );
    assert_eq!(a.core.next_deadline(), before);
    a.on_timers(t0 + Duration::from_millis(5400));
    assert_eq!(initiations(&a.drain()), 1, "retried after REKEY_TIMEOUT");
}

/// A response to an index we never gave, or to a superseded initiation,
/// is dropped as an unknown index and does not touch the live one.
#[test]
fn a_response_to_a_superseded_initiation_is_unknown() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let first = sent_packets(&a.drain()).remove(0);
    a.on_timers(t0 + Duration::from_millis(5400));
    let second = sent_packets(&a.drain()).remove(0);
    assert_eq!(
        b.receive(t0 + Duration::from_millis(5400), &first, a.addr),
        PacketOutcome::Responded(a.public)
    );
    let stale = sent_packets(&b.drain()).remove(0);
    let now = t0 + Duration::from_millis(5500);
    assert_eq!(
        a.receive(now, &stale, b.addr),
        PacketOutcome::Dropped(DropReason::UnknownIndex)
    );
    assert_eq!(
        b.receive(now, &second, a.addr),
        PacketOutcome::Responded(a.public)
    );
    let genuine = sent_packets(&b.drain()).remove(0);
    assert_eq!(
        a.receive(now, &genuine, b.addr),
        PacketOutcome::Completed(b.public)
    );
}

/// A replayed initiation — the same bytes again, seconds later, when the
/// handshake role's rate limit no longer applies — gets no response and
/// no keypair; the key holder refuses it itself.
#[test]
fn a_replayed_initiation_gets_no_response_and_no_keys() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let init = sent_packets(&a.drain()).remove(0);
    assert_eq!(
        b.receive(t0, &init, a.addr),
        PacketOutcome::Responded(a.public)
    );
    b.drain();
    let pending = b.store.pending_count();
    for s in [1, 10, 100] {
        assert_eq!(
            b.receive(t0 + Duration::from_secs(s), &init, a.addr),
            PacketOutcome::Dropped(DropReason::ReplayedTimestamp)
        );
        assert!(b.drain().is_empty(), "no response, no keypair");
        assert_eq!(b.store.pending_count(), pending);
    }
    assert_eq!(b.core.counters().replayed_timestamp, 3);
}
