//! A counting global allocator for this crate's unit tests, so that tests
//! can state how much heap a structure really takes (per peer, per
//! prefix) instead of guessing from `size_of`.
//!
//! Test support, compiled only with proto's `alloc-count` feature, which
//! the role crates enable for their tests alone; a test binary installs
//! it with `#[global_allocator] static A: Counting = Counting;`. No role
//! links it. Counts are kept per thread, because the test harness runs
//! tests in parallel and a global count would mix their allocations; a
//! measurement therefore covers only what its own thread allocates and
//! frees, which is what a single-threaded build-and-measure test does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// The counting allocator: the system allocator with per-thread counts.
pub struct Counting;

thread_local! {
    // `const` initialisers: reading them never allocates, which an
    // allocator must not do.
    static BYTES: Cell<isize> = const { Cell::new(0) };
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn count(bytes: isize, blocks: isize) {
    // `try_with`: during thread teardown the slots may be gone; such late
    // frees are not part of any measurement.
    let _ = BYTES.try_with(|b| b.set(b.get() + bytes));
    let _ = BLOCKS.try_with(|b| b.set(b.get() + blocks));
    if bytes > 0 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get().saturating_add(bytes as usize)));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counters are thread-local cells that never allocate.
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

/// Heap in use by this thread at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Bytes asked for and not yet freed.
    pub bytes: isize,
    /// Blocks allocated and not yet freed.
    pub blocks: isize,
    /// Bytes ever allocated by this thread (freed or not): what a loop
    /// that should not allocate must leave unchanged.
    pub allocated: usize,
}

/// Per-block bookkeeping of glibc's malloc (an 8-byte header, sizes rounded
/// up to 16): charged on top of the bytes asked for, so that many small
/// blocks are not measured as free.
pub const MALLOC_OVERHEAD: isize = 16;

impl Usage {
    pub fn now() -> Self {
        Usage {
            bytes: BYTES.with(Cell::get),
            blocks: BLOCKS.with(Cell::get),
            allocated: ALLOCATED.with(Cell::get),
        }
    }

    /// What was allocated since `earlier`, with malloc's per-block
    /// overhead, in bytes.
    pub fn since(&self, earlier: &Usage) -> isize {
        (self.bytes - earlier.bytes) + MALLOC_OVERHEAD * (self.blocks - earlier.blocks)
    }
}
