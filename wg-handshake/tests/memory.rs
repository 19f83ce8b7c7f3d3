//! Scale: what a peer costs the handshake role's core in memory, at
//! 100,000 peers, configured only and with one session each.
//!
//! A counting global allocator (this test binary's own) measures the
//! heap; counts are per thread, since the harness runs tests in parallel.
//! The crypto role is a stub here: the core's memory is what is measured,
//! and real Diffie-Hellman for 100,000 sessions would only make it slow.

use std::time::Instant;

use proto::ipc::{CryptoToHandshake, Endpoint, HandshakeToCrypto, HandshakeToTransport};
use proto::keys::{HandshakeId, NoiseInitiation, PublicKey, SessionKey, SessionKeys};
use proto::wire::{Initiation, Response, NOISE_INITIATION_LEN, NOISE_RESPONSE_LEN};
use wg_handshake::mac::{mac, mac1_key};
use wg_handshake::{Config, Core, PacketOutcome};

#[global_allocator]
static COUNTING: proto::alloc_count::Counting = proto::alloc_count::Counting;

/// Heap this thread holds now, with malloc's per-block overhead.
fn heap() -> isize {
    let u = proto::alloc_count::Usage::now();
    u.since(&proto::alloc_count::Usage {
        bytes: 0,
        blocks: 0,
        allocated: 0,
    })
}

const PEERS: u32 = 100_000;

fn key(i: u32) -> PublicKey {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[31] = 0x33;
    PublicKey(k)
}

/// Answers like the crypto role, without the Diffie-Hellman.
fn stub_crypto() -> impl FnMut(HandshakeToCrypto) -> CryptoToHandshake {
    let mut next = 0u64;
    move |q| match q {
        HandshakeToCrypto::CreateInitiation { .. } => {
            next += 1;
            CryptoToHandshake::Initiation {
                id: HandshakeId(next),
                noise: NoiseInitiation([0; NOISE_INITIATION_LEN]),
            }
        }
        HandshakeToCrypto::ConsumeResponse { .. } => {
            CryptoToHandshake::ResponseConsumed(SessionKeys {
                send: SessionKey::from_bytes([1; 32]),
                recv: SessionKey::from_bytes([2; 32]),
            })
        }
        _ => CryptoToHandshake::Abandoned,
    }
}

#[test]
fn memory_per_peer() {
    let ours = PublicKey([0x77; 32]);
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut core = Core::new(Config {
        seed: Some(1),
        // 100,000 responses in one instant are not an attack here.
        load_threshold: u32::MAX,
        ..Config::default()
    });
    core.set_interface(Some(ours), &mut out);

    let before = heap();
    for i in 0..PEERS {
        core.set_peer(t0, key(i), None, &mut out);
    }
    let configured = (heap() - before) / PEERS as isize;

    // One completed handshake per peer, as initiator: an index, the
    // keypair's index kept, timers running.
    let mut crypto = stub_crypto();
    let mac1 = mac1_key(&ours);
    let from = Endpoint::new("192.0.2.9:51820".parse().expect("literal"));
    let before = heap();
    for i in 0..PEERS {
        core.need_handshake(t0, &key(i), &mut crypto, &mut out);
        let sender = out
            .drain(..)
            .find_map(|a| match a {
                HandshakeToTransport::Send { bytes, .. } => Initiation::parse(&bytes).ok(),
                _ => None,
            })
            .map(|m| m.sender)
            .expect("an initiation");
        let mut bytes = Response {
            sender: i,
            receiver: sender,
            noise: [0; NOISE_RESPONSE_LEN],
            mac1: [0; 16],
            mac2: [0; 16],
        }
        .to_bytes();
        let at = proto::wire::RESPONSE_MAC1_OFFSET;
        let m = mac(&mac1, &bytes[..at]);
        bytes[at..at + 16].copy_from_slice(&m);
        let outcome = core.handle_packet(t0, &bytes, from, &mut crypto, &mut out);
        assert_eq!(outcome, PacketOutcome::Completed(key(i)));
        out.clear();
    }
    // The action vector's capacity is the caller's, not the core's.
    out = Vec::new();
    let session = (heap() - before) / PEERS as isize;
    drop(out);
    println!("handshake: {configured} bytes per configured peer, {session} more per session");
    assert!(configured < 450, "{configured} bytes per configured peer");
    assert!(session < 300, "{session} bytes per session");
}
