//! Per-event cost of the handshake core against the number of peers.
//!
//! The handshake process runs one loop iteration per event: the event
//! (`need_handshake`, `handle_activity`, ...), then `on_timers(now)`, then
//! `next_deadline()` for its poll timeout (see `src/process.rs`). Each
//! benchmark here is such an iteration, with 10 and with 100,000
//! configured peers; a cost that does not depend on the number of peers
//! gives the same time for both.
//!
//! - `need_handshake/N`: every peer has a handshake under way (a pending
//!   initiation and its retransmit timer), the event asks again for one
//!   peer (round robin); the crypto role is a stub, so the core's own
//!   cost is what is measured.
//! - `activity/N`: every peer has a persistent keepalive running, the
//!   event is one peer's coalesced data-plane activity, which moves its
//!   timers.
//! - `reconfigure_one/N`: `wg syncconf` with one peer changed: remove it
//!   and add it back.
//!
//! Run: `cargo bench -p wg-handshake --bench scale -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use proto::ipc::{Activity, CryptoToHandshake, HandshakeToCrypto, HandshakeToTransport};
use proto::keys::{HandshakeId, NoiseInitiation, PublicKey};
use proto::wire::NOISE_INITIATION_LEN;
use wg_handshake::{Config, Core};

const SIZES: [u32; 2] = [10, 100_000];

fn key(i: u32) -> PublicKey {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[31] = 0x44;
    PublicKey(k)
}

/// Answers like the crypto role, without the Diffie-Hellman.
fn stub(q: HandshakeToCrypto) -> CryptoToHandshake {
    match q {
        HandshakeToCrypto::CreateInitiation { peer } => CryptoToHandshake::Initiation {
            id: HandshakeId(u64::from(u32::from_le_bytes([
                peer.0[0], peer.0[1], peer.0[2], peer.0[3],
            ]))),
            noise: NoiseInitiation([0; NOISE_INITIATION_LEN]),
        },
        _ => CryptoToHandshake::Abandoned,
    }
}

fn core(t0: Instant, n: u32, keepalive: Option<u16>) -> (Core, Vec<PublicKey>) {
    let mut out: Vec<HandshakeToTransport> = Vec::new();
    let mut core = Core::new(Config {
        seed: Some(3),
        ..Config::default()
    });
    core.set_interface(Some(PublicKey([0x99; 32])), &mut out);
    let keys: Vec<PublicKey> = (0..n).map(key).collect();
    for k in &keys {
        core.set_peer(t0, *k, keepalive, &mut out);
    }
    (core, keys)
}

fn bench(c: &mut Criterion) {
    let mut out: Vec<HandshakeToTransport> = Vec::new();
    let step = Duration::from_micros(1);

    let mut g = c.benchmark_group("need_handshake");
    for n in SIZES {
        let t0 = Instant::now();
        let (mut core, keys) = core(t0, n, None);
        for k in &keys {
            core.need_handshake(t0, k, &mut stub, &mut out);
        }
        out.clear();
        let (mut now, mut i) = (t0, 0usize);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                now += step;
                i = (i + 1) % keys.len();
                core.need_handshake(now, &keys[i], &mut stub, &mut out);
                core.on_timers(now, &mut stub, &mut out);
                black_box(core.next_deadline());
                out.clear();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("activity");
    let bits = Activity(
        Activity::DATA_SENT
            | Activity::AUTH_SENT
            | Activity::DATA_RECEIVED
            | Activity::AUTH_RECEIVED,
    );
    for n in SIZES {
        let t0 = Instant::now();
        let (mut core, keys) = core(t0, n, Some(25));
        out.clear();
        let (mut now, mut i) = (t0, 0usize);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                now += step;
                i = (i + 1) % keys.len();
                core.handle_activity(now, &keys[i], bits, &mut stub, &mut out);
                core.on_timers(now, &mut stub, &mut out);
                black_box(core.next_deadline());
                out.clear();
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("reconfigure_one");
    for n in SIZES {
        let t0 = Instant::now();
        let (mut core, keys) = core(t0, n, None);
        // Sessions under way everywhere, so that indices are in use.
        for k in &keys {
            core.need_handshake(t0, k, &mut stub, &mut out);
        }
        out.clear();
        let (mut now, mut i) = (t0, 0usize);
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                now += step;
                i = (i + 1) % keys.len();
                core.remove_peer(&keys[i], &mut stub);
                core.set_peer(now, keys[i], None, &mut out);
                core.on_timers(now, &mut stub, &mut out);
                black_box(core.next_deadline());
                out.clear();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
