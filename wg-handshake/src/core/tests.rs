//! Tests of the parent module, in a file of their own so that the module
//! itself reads as the code it is.

//! The deadline heap and the index bookkeeping, checked against a scan
//! of every peer after each event of long random runs between two real
//! cores (the fake-clock tests in `tests/timers.rs` check what the
//! timers do; this checks that the heap never loses track of them).

use super::*;
use proto::keys::SecretKey;
use rand::Rng;
use wg_crypto::{public_key, KeyStore};

struct Side {
    core: Core,
    store: KeyStore,
    public: PublicKey,
    out: Out,
}

fn side(seed: u8) -> Side {
    let secret = SecretKey::from_bytes([seed; 32]);
    let public = public_key(&secret);
    let mut store = KeyStore::new();
    store.set_private_key(Some(secret));
    let mut core = Core::new(Config {
        seed: Some(u64::from(seed)),
        ..Config::default()
    });
    let mut out = Vec::new();
    core.set_interface(Some(public), &mut out);
    Side {
        core,
        store,
        public,
        out,
    }
}

/// Takes the handshake packets out of `out`, counting the keypairs
/// installed in `installs`.
fn packets(out: &mut Out, installs: &mut usize) -> Vec<Vec<u8>> {
    out.drain(..)
        .filter_map(|a| match a {
            HandshakeToTransport::Send { bytes, .. } => Some(bytes),
            HandshakeToTransport::InstallKeypair { .. } => {
                *installs += 1;
                None
            }
            _ => None,
        })
        .collect()
}

#[test]
fn deadline_heap_matches_a_scan() {
    let from = Endpoint::new("192.0.2.1:51820".parse().expect("literal"));
    let mut installs = 0;
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (mut a, mut b) = (side(1), side(2));
        let t0 = Instant::now();
        // a knows b and some peers that never answer.
        let mut peers = vec![b.public];
        peers.extend((10..16u8).map(|i| public_key(&SecretKey::from_bytes([i; 32]))));
        for (n, p) in peers.iter().enumerate() {
            a.store.set_peer(*p, None);
            let keepalive = (n % 3 == 0).then_some(25);
            a.core.set_peer(t0, *p, keepalive, &mut a.out);
        }
        b.store.set_peer(a.public, None);
        b.core.set_peer(t0, a.public, Some(7), &mut b.out);
        let mut now = t0;
        for _ in 0..1000 {
            now += Duration::from_millis(rng.gen_range(0..4000));
            let peer = peers[rng.gen_range(0..peers.len())];
            let store = &mut a.store;
            let mut crypto = |q| store.handle_handshake_at(now, q);
            match rng.gen_range(0..10) {
                0..=2 => a.core.need_handshake(now, &peer, &mut crypto, &mut a.out),
                3..=5 => {
                    let bits = Activity(rng.gen_range(0..16));
                    a.core
                        .handle_activity(now, &peer, bits, &mut crypto, &mut a.out);
                }
                6 => {
                    let keepalive = rng.gen_bool(0.5).then(|| rng.gen_range(1..40));
                    a.core.set_peer(now, peer, keepalive, &mut a.out);
                }
                7 => {
                    a.core.remove_peer(&peer, &mut crypto);
                    a.core.set_peer(now, peer, None, &mut a.out);
                }
                _ => {}
            }
            a.core.on_timers(now, &mut crypto, &mut a.out);
            a.core.check_invariants();
            // Deliver what a sent to b and back, so sessions form,
            // rekey and expire.
            for pkt in packets(&mut a.out, &mut installs) {
                let store = &mut b.store;
                let mut crypto = |q| store.handle_handshake_at(now, q);
                b.core
                    .handle_packet(now, &pkt, from, &mut crypto, &mut b.out);
            }
            let store = &mut b.store;
            let mut crypto = |q| store.handle_handshake_at(now, q);
            b.core.on_timers(now, &mut crypto, &mut b.out);
            b.core.check_invariants();
            for pkt in packets(&mut b.out, &mut installs) {
                let store = &mut a.store;
                let mut crypto = |q| store.handle_handshake_at(now, q);
                a.core
                    .handle_packet(now, &pkt, from, &mut crypto, &mut a.out);
            }
            a.core.check_invariants();
        }
        assert!(a.core.counters().malformed == 0);
    }
    // Sessions formed, were replaced and expired along the way.
    assert!(installs > 100, "only {installs} keypairs installed");
}

#[test]
fn keypair_indices_keep_the_newest_three() {
    let mut k = KeypairIndices::default();
    assert_eq!(k.push(1), None);
    assert_eq!(k.push(2), None);
    assert_eq!(k.push(3), None);
    assert_eq!(k.push(4), Some(1));
    assert_eq!(k.as_slice(), &[2, 3, 4]);
    assert_eq!(k.take().as_slice(), &[2, 3, 4]);
    assert!(k.as_slice().is_empty());
}

#[test]
fn removing_a_peer_frees_only_its_indices() {
    let (mut a, b) = (side(1), side(2));
    let other = public_key(&SecretKey::from_bytes([9; 32]));
    let t0 = Instant::now();
    for p in [b.public, other] {
        a.store.set_peer(p, None);
        a.core.set_peer(t0, p, None, &mut a.out);
        let store = &mut a.store;
        a.core.need_handshake(
            t0,
            &p,
            &mut |q| store.handle_handshake_at(t0, q),
            &mut a.out,
        );
    }
    assert_eq!(a.core.indices.len(), 2);
    let store = &mut a.store;
    a.core
        .remove_peer(&other, &mut |q| store.handle_handshake_at(t0, q));
    assert_eq!(a.core.indices.len(), 1);
    a.core.check_invariants();
    assert!(a.core.next_deadline().is_some(), "b's retransmit stays");
}

/// Packets in flight (the process loop's window): two copies of the
/// genuine response both begun before either is finished. The first
/// completes the handshake; the second's answer finds the index already a
/// keypair's and changes nothing (it must not free that index). Two copies
/// of an initiation likewise: one answered, the other a replay.
#[test]
fn packets_finished_out_of_the_window_see_what_changed() {
    let from = Endpoint::new("192.0.2.1:51820".parse().expect("literal"));
    let (mut a, mut b) = (side(1), side(2));
    let t0 = Instant::now();
    a.store.set_peer(b.public, None);
    a.core.set_peer(t0, b.public, None, &mut a.out);
    b.store.set_peer(a.public, None);
    b.core.set_peer(t0, a.public, None, &mut b.out);
    let mut installs = 0;

    let store = &mut a.store;
    a.core.need_handshake(
        t0,
        &b.public,
        &mut |q| store.handle_handshake_at(t0, q),
        &mut a.out,
    );
    let init = packets(&mut a.out, &mut installs).remove(0);

    // b: the initiation twice in flight.
    let first = b.core.begin_packet(t0, &init, from, &mut b.out);
    let second = b.core.begin_packet(t0, &init, from, &mut b.out);
    let mut outcomes = Vec::new();
    for begun in [first, second] {
        let Begun::Ask(q, waiting) = begun else {
            panic!("an initiation needs the key holder");
        };
        let answer = b.store.handle_handshake_at(t0, q);
        outcomes.push(b.core.finish_packet(t0, waiting, answer, &mut b.out));
    }
    assert_eq!(
        outcomes,
        [
            PacketOutcome::Responded(a.public),
            PacketOutcome::Dropped(DropReason::ReplayedTimestamp)
        ]
    );
    b.core.check_invariants();
    let response = packets(&mut b.out, &mut installs).remove(0);
    assert_eq!(installs, 1);

    // a: the response twice in flight.
    let first = a.core.begin_packet(t0, &response, from, &mut a.out);
    let second = a.core.begin_packet(t0, &response, from, &mut a.out);
    let mut outcomes = Vec::new();
    for begun in [first, second] {
        let Begun::Ask(q, waiting) = begun else {
            panic!("a response needs the key holder");
        };
        let answer = a.store.handle_handshake_at(t0, q);
        outcomes.push(a.core.finish_packet(t0, waiting, answer, &mut a.out));
    }
    assert_eq!(
        outcomes,
        [
            PacketOutcome::Completed(b.public),
            PacketOutcome::Dropped(DropReason::UnknownIndex)
        ]
    );
    a.core.check_invariants();
    packets(&mut a.out, &mut installs);
    assert_eq!(installs, 2);
    // The session's index is still held: it is the keypair's.
    assert_eq!(a.core.indices.len(), 1);
    assert_eq!(a.core.counters().unknown_index, 1);
}
