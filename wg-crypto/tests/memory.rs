//! Scale: what a peer costs the crypto role's key store in memory, at
//! 100,000 peers, with and without a PSK.
//!
//! This matters beyond the total: the crypto role locks its memory
//! (`mlockall`), so its heap counts against `RLIMIT_MEMLOCK`. A counting
//! global allocator (this test binary's own) measures the heap; counts are
//! per thread, since the harness runs tests in parallel.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use proto::keys::{PublicKey, SecretKey};
use wg_crypto::KeyStore;

struct Counting;

thread_local! {
    static BYTES: Cell<isize> = const { Cell::new(0) };
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
}

fn count(bytes: isize, blocks: isize) {
    let _ = BYTES.try_with(|b| b.set(b.get() + bytes));
    let _ = BLOCKS.try_with(|b| b.set(b.get() + blocks));
}

// SAFETY: forwards every call unchanged to the system allocator; the
// counters are const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize, 1);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize, 1);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize), -1);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize, 0);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Heap of this thread: bytes asked for plus glibc's per-block overhead
/// (an 8-byte header, sizes rounded to 16: 16 bytes a block is fair).
fn heap() -> isize {
    BYTES.with(Cell::get) + 16 * BLOCKS.with(Cell::get)
}

const PEERS: u32 = 100_000;

fn key(i: u32) -> PublicKey {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[31] = 0x11;
    PublicKey(k)
}

fn per_peer(psk: bool) -> isize {
    let mut store = KeyStore::new();
    let before = heap();
    for i in 0..PEERS {
        let psk = psk.then(|| SecretKey::from_bytes([0x42; 32]));
        store.set_peer(key(i), psk);
    }
    let n = (heap() - before) / PEERS as isize;
    assert_eq!(store.peer_count(), PEERS as usize);
    n
}

#[test]
fn memory_per_peer() {
    let plain = per_peer(false);
    let with_psk = per_peer(true);
    println!("crypto: {plain} bytes per peer, {with_psk} with a PSK");
    assert!(plain < 200, "{plain} bytes per peer");
    assert!(with_psk < 200, "{with_psk} bytes per peer with a PSK");
}
