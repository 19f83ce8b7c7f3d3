//! The allowed-IPs table at the scale of a big hub: a million prefixes.
//!
//! Prints, for 1,000,000 prefixes (half IPv4 /30s, half IPv6 /64s, over
//! 10 peers) inserted in a scrambled order and in sorted order: the time
//! to insert them all, the heap per prefix (counted by this binary's
//! allocator, spare capacity included), the time of a lookup, and the time
//! to remove one peer's 100,000 prefixes. A plain benchmark (one pass,
//! best of three): building a million-entry table is the unit of work.
//!
//! Run: `cargo bench -p wg-transport --bench allowed_ips`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicIsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use wg_transport::allowed_ips::AllowedIps;

struct Counting;

static BYTES: AtomicIsize = AtomicIsize::new(0);
static BLOCKS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call unchanged to the system allocator and only
// adds to two atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size() as isize, Relaxed);
            BLOCKS.fetch_add(1, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size() as isize, Relaxed);
        BLOCKS.fetch_sub(1, Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES.fetch_add(new_size as isize - layout.size() as isize, Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap in use: bytes asked for plus glibc's per-block overhead (16).
fn heap() -> isize {
    BYTES.load(Relaxed) + 16 * BLOCKS.load(Relaxed)
}

const N: u32 = 1_000_000;

/// Prefix number `i`: even ones IPv4 /30s in 10.0.0.0/8, odd ones IPv6
/// /64s in fd00::/16, owned by peer `i % 10`.
fn prefix(i: u32) -> (IpAddr, u8, u32) {
    let n = i / 2;
    if i % 2 == 0 {
        (
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (n << 2))),
            30,
            i % 10,
        )
    } else {
        let a = (0xfd00u128 << 112) | (u128::from(n) << 64);
        (IpAddr::V6(Ipv6Addr::from(a)), 64, i % 10)
    }
}

/// 0..N in a scrambled order (a multiplicative permutation of 0..2^20).
fn scrambled() -> Vec<u32> {
    (0u32..1 << 20)
        .map(|j| j.wrapping_mul(0x9e37_79b1).wrapping_add(12_345) & ((1 << 20) - 1))
        .filter(|&i| i < N)
        .collect()
}

struct Run {
    insert: Duration,
    bytes_per_prefix: isize,
    lookup: Duration,
    remove_peer: Duration,
}

fn run(order: &[u32]) -> Run {
    let prefixes: Vec<_> = order.iter().map(|&i| prefix(i)).collect();
    let before = heap();
    let start = Instant::now();
    let mut t = AllowedIps::<u32>::new();
    for &(addr, cidr, peer) in &prefixes {
        if t.insert(addr, cidr, peer).is_err() {
            panic!("insert {addr}/{cidr}");
        }
    }
    let insert = start.elapsed();
    let bytes_per_prefix = (heap() - before) / N as isize;
    assert_eq!(t.len(), N as usize);

    // Lookups of addresses inside the prefixes, in the scrambled order
    // (no help from the cache between one and the next).
    let probes: Vec<IpAddr> = prefixes.iter().take(200_000).map(|p| p.0).collect();
    let start = Instant::now();
    let mut found = 0u32;
    for a in &probes {
        found += u32::from(t.lookup(black_box(*a)).is_some());
    }
    let lookup = start.elapsed() / probes.len() as u32;
    assert_eq!(found as usize, probes.len());

    let start = Instant::now();
    assert_eq!(t.remove_peer(3), (N / 10) as usize);
    let remove_peer = start.elapsed();
    drop(t);
    Run {
        insert,
        bytes_per_prefix,
        lookup,
        remove_peer,
    }
}

fn best(order: &[u32]) -> Run {
    let mut runs: Vec<Run> = (0..3).map(|_| run(order)).collect();
    runs.sort_by_key(|r| r.insert);
    runs.swap_remove(0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not,
    // and a smoke test needs no numbers.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("allowed IPs, 1,000,000 prefixes (500,000 IPv4 /30 + 500,000 IPv6 /64, 10 peers)");
    println!(
        "{:<10} {:>10} {:>14} {:>12} {:>18}",
        "order", "insert", "bytes/prefix", "lookup", "remove_peer(100k)"
    );
    let scrambled = scrambled();
    let sorted: Vec<u32> = (0..N).collect();
    for (name, order) in [("scrambled", &scrambled), ("sorted", &sorted)] {
        let r = best(order);
        println!(
            "{:<10} {:>8.0}ms {:>14} {:>10.0}ns {:>16.1}ms",
            name,
            r.insert.as_secs_f64() * 1e3,
            r.bytes_per_prefix,
            r.lookup.as_secs_f64() * 1e9,
            r.remove_peer.as_secs_f64() * 1e3,
        );
    }
}
