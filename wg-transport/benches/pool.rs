//! The worker pool's hand-off against sealing one packet at a time: a
//! batch of `n` full-sized (1420-byte) data messages sealed with
//! `seal_reserved` on the calling thread alone (`serial`), and shared
//! with one worker through `Workers::run` (`pool1`), as the transport
//! seals the segments of a tun super-packet (47 of them for 64 KiB) and
//! opens a receive batch. The difference is what the second core buys,
//! minus the wake-up and the claims; at a small `n` it shows what the
//! hand-off costs (the transport does not hand off under 8 packets).
//! `pool1_asleep` times each batch after a 200 µs pause, long enough for
//! the worker to have gone to sleep, as between a stream's tun reads.
//!
//! Run: `cargo bench -p wg-transport --bench pool -- --warm-up-time 1 --measurement-time 3`

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

use wg_transport::aead::DataKey;
use wg_transport::data::{message_len, seal_reserved, DATA_HEADER_LEN};
use wg_transport::pool::Workers;

const LEN: usize = 1420;

struct Job {
    buf: Vec<u8>,
    counter: u64,
}

fn seal(key: &DataKey, j: &mut Job) {
    let r = seal_reserved(key, 1, j.counter, &mut j.buf, LEN, 1420);
    std::hint::black_box(r.is_ok());
}

fn bench(c: &mut Criterion) {
    let key = DataKey::new(&[0x42; 32]);
    let one = match Workers::new(1) {
        Ok(w) => w,
        Err(e) => panic!("spawn: {e}"),
    };
    let none = Workers::none();
    let mut g = c.benchmark_group("pool");
    for n in [4usize, 8, 16, 47, 128] {
        let mut jobs: Vec<Job> = (0..n)
            .map(|i| Job {
                buf: vec![0x5a; message_len(LEN).max(DATA_HEADER_LEN + LEN + 32)],
                counter: i as u64,
            })
            .collect();
        g.throughput(Throughput::Bytes((n * LEN) as u64));
        g.bench_function(format!("serial/{n}"), |b| {
            b.iter(|| none.run(&key, &mut jobs, seal))
        });
        g.bench_function(format!("pool1/{n}"), |b| {
            b.iter(|| one.run(&key, &mut jobs, seal))
        });
        // Each batch after a pause in which the worker has gone to sleep,
        // as between the tun reads of a real stream: a futex wake-up per
        // batch, and a worker that may start late.
        g.bench_function(format!("pool1_asleep/{n}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let until = Instant::now() + Duration::from_micros(200);
                    while Instant::now() < until {
                        std::hint::spin_loop();
                    }
                    let t = Instant::now();
                    one.run(&key, &mut jobs, seal);
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
    println!("jobs run by the worker: {}", one.worker_jobs());
}

criterion_group!(benches, bench);
criterion_main!(benches);
