//! Side-by-side microbenchmark of the data-path AEAD candidates.
//!
//! The transport role seals every packet read from the tun device and opens
//! every type-4 message read from UDP, so this is the product's hot loop.
//! Each candidate does exactly what the data path does: ChaCha20-Poly1305
//! in place with a detached 16-byte tag, WireGuard's nonce (4 zero bytes,
//! then the 64-bit counter little-endian) and empty AAD, at a tiny packet
//! (64 B), a full-MTU packet (1420 B) and a GSO-sized super-packet
//! (65535 B).
//!
//! Variants:
//! - `rustcrypto`: `chacha20poly1305` 0.10 (`ChaCha20Poly1305`), key set up once.
//! - `ring`: `ring` 0.17 `LessSafeKey` for `CHACHA20_POLY1305`, key set up once.
//! - `ring_key_per_call`: `ring`, with the `LessSafeKey` built from the raw
//!   key on every call (the alternative way to keep ring's key zeroizable).
//! - `datakey`: `wg_transport::aead::DataKey`, the wrapper the data path uses.
//!
//! And the whole data path around it, through a peer's keypair slots
//! (`datapath/encapsulate/*`: `KeypairSlots::encapsulate_in_place`, with
//! counter, padding and header; `datapath/decapsulate/*`:
//! `KeypairSlots::decapsulate`, with index lookup, expiry, replay window),
//! so that a change to how keypairs are stored shows here.
//!
//! Run: `cargo bench -p wg-transport --bench aead -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use std::time::Instant;

use wg_transport::aead::DataKey;
use wg_transport::data::{message_len, DATA_HEADER_LEN};
use wg_transport::keypair::{Keypair, KeypairSlots};

const SIZES: [usize; 3] = [64, 1420, 65535];
const KEY: [u8; 32] = [0x42; 32];
const COUNTER: u64 = 0x0123_4567_89ab_cdef;

fn wg_nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

fn ring_key() -> LessSafeKey {
    match UnboundKey::new(&CHACHA20_POLY1305, &KEY) {
        Ok(k) => LessSafeKey::new(k),
        Err(_) => unreachable!("32-byte key is the right length"),
    }
}

fn ring_seal(key: &LessSafeKey, buf: &mut [u8]) -> Tag {
    let nonce = Nonce::assume_unique_for_key(wg_nonce(COUNTER));
    match key.seal_in_place_separate_tag(nonce, Aad::empty(), buf) {
        Ok(t) => t,
        Err(_) => unreachable!("buffer is below ring's length limit"),
    }
}

fn ring_open(key: &LessSafeKey, buf: &mut [u8], tag: &[u8; 16]) -> bool {
    let nonce = Nonce::assume_unique_for_key(wg_nonce(COUNTER));
    let tag = Tag::from(*tag);
    key.open_in_place_separate_tag(nonce, Aad::empty(), tag, buf, 0..)
        .is_ok()
}

/// A sealed message of `size` bytes and its tag, made with ring (the
/// candidates are checked against each other in the crate's unit tests).
fn sealed(size: usize) -> (Vec<u8>, [u8; 16]) {
    let mut buf = vec![0xa5u8; size];
    let tag = ring_seal(&ring_key(), &mut buf);
    let mut t = [0u8; 16];
    t.copy_from_slice(tag.as_ref());
    (buf, t)
}

fn bench_seal(c: &mut Criterion) {
    let rc = ChaCha20Poly1305::new(&KEY.into());
    let rk = ring_key();
    let dk = DataKey::new(&KEY);
    for size in SIZES {
        let mut group = c.benchmark_group(format!("seal/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0xa5u8; size];
        group.bench_function("rustcrypto", |b| {
            b.iter(|| {
                let nonce = wg_nonce(COUNTER);
                let tag = rc.encrypt_in_place_detached(&nonce.into(), &[], black_box(&mut buf));
                black_box(tag.is_ok())
            })
        });
        group.bench_function("ring", |b| {
            b.iter(|| black_box(ring_seal(&rk, black_box(&mut buf))))
        });
        group.bench_function("ring_key_per_call", |b| {
            b.iter(|| {
                let k = ring_key();
                black_box(ring_seal(&k, black_box(&mut buf)))
            })
        });
        group.bench_function("datakey", |b| {
            let mut tag = [0u8; 16];
            b.iter(|| {
                let r = dk.seal_in_place(COUNTER, black_box(&mut buf), &mut tag);
                black_box((r, tag))
            })
        });
        group.finish();
    }
}

fn bench_open(c: &mut Criterion) {
    let rc = ChaCha20Poly1305::new(&KEY.into());
    let rk = ring_key();
    let dk = DataKey::new(&KEY);
    for size in SIZES {
        let mut group = c.benchmark_group(format!("open/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let (ct, tag) = sealed(size);
        // Opening in place destroys the ciphertext, so each iteration gets
        // a fresh copy; iter_batched_ref keeps the copy out of the timing.
        let fresh = || ct.clone();
        group.bench_function("rustcrypto", |b| {
            b.iter_batched_ref(
                fresh,
                |buf| {
                    let nonce = wg_nonce(COUNTER);
                    let ok = rc.decrypt_in_place_detached(
                        &nonce.into(),
                        &[],
                        buf.as_mut_slice(),
                        (&tag).into(),
                    );
                    assert!(ok.is_ok());
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("ring", |b| {
            b.iter_batched_ref(
                fresh,
                |buf| assert!(ring_open(&rk, buf, &tag)),
                BatchSize::SmallInput,
            )
        });
        group.bench_function("ring_key_per_call", |b| {
            b.iter_batched_ref(
                fresh,
                |buf| {
                    let k = ring_key();
                    assert!(ring_open(&k, buf, &tag))
                },
                BatchSize::SmallInput,
            )
        });
        group.bench_function("datakey", |b| {
            b.iter_batched_ref(
                fresh,
                |buf| assert!(dk.open_in_place(COUNTER, buf, &tag).is_ok()),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

/// Two peers' slots, each with the other's keypair current.
fn session(now: Instant) -> (KeypairSlots, KeypairSlots) {
    let (k1, k2) = ([0x11u8; 32], [0x22u8; 32]);
    let mut a = KeypairSlots::new();
    a.install(Keypair::new(1, 2, &k1, &k2, true, now));
    let mut b = KeypairSlots::new();
    b.install(Keypair::new(2, 1, &k2, &k1, true, now));
    (a, b)
}

fn bench_datapath(c: &mut Criterion) {
    let now = Instant::now();
    for size in [64usize, 1420] {
        let mut group = c.benchmark_group(format!("datapath/{size}"));
        group.throughput(Throughput::Bytes(size as u64));
        let (mut a, mut b) = session(now);
        let mut buf = vec![0xa5u8; message_len(size)];
        group.bench_function("encapsulate", |bch| {
            bch.iter(|| {
                let n = a.encapsulate_in_place(now, black_box(&mut buf), size);
                black_box(n.is_ok())
            })
        });
        // Every packet carries a fresh counter (the replay window rejects
        // repeats), so each iteration decrypts a new message; sealing it
        // is the untimed setup.
        group.bench_function("decapsulate", |bch| {
            bch.iter_batched_ref(
                || {
                    let mut m = vec![0u8; message_len(size)];
                    m[DATA_HEADER_LEN..DATA_HEADER_LEN + size].fill(0x5a);
                    let n = a.encapsulate_in_place(now, &mut m, size);
                    assert!(n.is_ok());
                    m
                },
                |m| assert!(b.decapsulate(now, m).is_ok()),
                BatchSize::SmallInput,
            )
        });
        group.finish();
    }
}

criterion_group!(benches, bench_seal, bench_open, bench_datapath);
criterion_main!(benches);
