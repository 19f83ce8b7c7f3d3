//! One full handshake, both sides, through the handshake core and an
//! in-process key store (MAC1, indices, Noise IKpsk2 via snow, key
//! release), side by side with boringtun's in-process handshake.
//!
//! `cargo bench -p wg-handshake --bench handshake -- --warm-up-time 1 --measurement-time 4`
//!
//! On the 2-core AVX2 development machine (2026-11-24): wgd 604–620 µs
//! (median 610 µs), boringtun 520–524 µs (median 522 µs), both sides of
//! one handshake each.

use proto::ipc::Endpoint;
use std::time::Instant;

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use criterion::{criterion_group, criterion_main, Criterion};
use proto::ipc::HandshakeToTransport;
use proto::keys::SecretKey;
use wg_crypto::{public_key, KeyStore};
use wg_handshake::{Config, Core, PacketOutcome};

struct Side {
    core: Core,
    store: KeyStore,
    out: Vec<HandshakeToTransport>,
}

fn side(key: [u8; 32]) -> (Side, proto::keys::PublicKey) {
    let secret = SecretKey::from_bytes(key);
    let public = public_key(&secret);
    let mut store = KeyStore::new();
    store.set_private_key(Some(secret));
    let mut core = Core::new(Config::default());
    let mut out = Vec::new();
    core.set_interface(Some(public), &mut out);
    (Side { core, store, out }, public)
}

fn packet(out: &mut Vec<HandshakeToTransport>) -> Vec<u8> {
    let p = out
        .iter()
        .find_map(|a| match a {
            HandshakeToTransport::Send { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .expect("a packet");
    out.clear();
    p
}

fn bench(c: &mut Criterion) {
    let (mut a, pa) = side([1; 32]);
    let (mut b, pb) = side([2; 32]);
    let t0 = Instant::now();
    a.store.set_peer(pb, None);
    b.store.set_peer(pa, None);
    a.core.set_peer(t0, pb, None, &mut a.out);
    b.core.set_peer(t0, pa, None, &mut b.out);
    let from_a = Endpoint::new("192.0.2.1:1".parse().expect("literal"));
    let from_b = Endpoint::new("192.0.2.2:1".parse().expect("literal"));
    let mut step = 0u64;
    c.bench_function("wgd handshake (both sides)", |bench| {
        bench.iter(|| {
            // Each round is 6 s later so the one-per-REKEY_TIMEOUT rule and
            // the initiation flood guard do not apply.
            step += 1;
            let now = t0 + std::time::Duration::from_secs(6 * step);
            let store = &mut a.store;
            a.core.need_handshake(
                now,
                &pb,
                &mut |q| store.handle_handshake_at(now, q),
                &mut a.out,
            );
            let init = packet(&mut a.out);
            let store = &mut b.store;
            let r = b.core.handle_packet(
                now,
                &init,
                from_a,
                &mut |q| store.handle_handshake_at(now, q),
                &mut b.out,
            );
            assert_eq!(r, PacketOutcome::Responded(pa));
            let resp = packet(&mut b.out);
            let store = &mut a.store;
            let r = a.core.handle_packet(
                now,
                &resp,
                from_b,
                &mut |q| store.handle_handshake_at(now, q),
                &mut a.out,
            );
            assert_eq!(r, PacketOutcome::Completed(pb));
            a.out.clear();
        })
    });

    let ka = x25519::StaticSecret::from([1; 32]);
    let kb = x25519::StaticSecret::from([2; 32]);
    let (pub_a, pub_b) = (x25519::PublicKey::from(&ka), x25519::PublicKey::from(&kb));
    c.bench_function("boringtun handshake (both sides)", |bench| {
        bench.iter(|| {
            let mut ta = Tunn::new(ka.clone(), pub_b, None, None, 1, None);
            let mut tb = Tunn::new(kb.clone(), pub_a, None, None, 2, None);
            let mut b1 = [0u8; 256];
            let mut b2 = [0u8; 256];
            let mut b3 = [0u8; 256];
            let TunnResult::WriteToNetwork(init) = ta.format_handshake_initiation(&mut b1, false)
            else {
                panic!("no initiation")
            };
            let TunnResult::WriteToNetwork(resp) = tb.decapsulate(None, init, &mut b2) else {
                panic!("no response")
            };
            let TunnResult::WriteToNetwork(_keepalive) = ta.decapsulate(None, resp, &mut b3) else {
                panic!("no keepalive")
            };
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
