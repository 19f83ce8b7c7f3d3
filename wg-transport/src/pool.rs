//! The transport's worker threads: the pure AEAD work of one batch of
//! packets (sealing the segments of a tun super-packet, opening the
//! datagrams of a UDP receive batch) split between the calling thread
//! and a few persistent workers.
//!
//! Only work that touches nothing but its own job and read-only context
//! runs here: a job is one packet, its key (ring's `LessSafeKey` is
//! `Sync`) and its buffer. Everything that depends on order or on shared
//! state (counters, replay windows, allowed IPs, endpoints, GRO, sends)
//! stays with the calling thread, before and after [`Workers::run`], so
//! each peer's packets keep their order and the replay window sees them
//! as the serial path would (see `device`).
//!
//! How a batch is shared: the caller publishes it (a pointer to its
//! jobs, its length) and wakes the workers, then claims jobs itself, a
//! few at a time (`CHUNK`), from one atomic word that every thread claims
//! from. A worker that wakes late finds the batch done and goes back to
//! sleep: a slow wake-up costs parallelism, never latency. When no job is
//! left the caller closes the batch (no further claim can succeed) and
//! waits for the jobs already claimed, a chunk at most per worker, so
//! every borrow the batch lent out ends before [`Workers::run`] returns:
//! the same guarantee `std::thread::scope` gives, without a thread spawn
//! per batch. Nothing is allocated per batch or per job.
//!
//! With no workers (the transport's default on one or two CPUs, see
//! `wgd/src/roles.rs`) the device never takes its batched paths: every
//! packet is sealed and opened one at a time as before, with no hand-off
//! and no thread but the one. With workers, batches under
//! `device::PARALLEL_MIN` packets (a ping) take that plain path too.
//!
//! The threads must exist before the transport is confined: its
//! `RLIMIT_NPROC` of 0 forbids creating threads, and its seccomp filter
//! (installed on all threads with `SECCOMP_FILTER_FLAG_TSYNC`) allows none
//! of the calls a thread's start-up makes. [`Workers::new`] returns only
//! when every worker has finished starting; from then on a worker makes
//! no system call but `futex` (to sleep and to wake the caller).

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, Thread};

/// The most workers a pool gets, whatever the CPU count: the transport's
/// calling thread still does the order-dependent half of the work and
/// the system calls, so more workers would mostly wait.
pub const MAX_WORKERS: usize = 3;

/// Jobs taken per claim: two packets (1.5-2 µs of AEAD at MTU size)
/// halve the claims, whose atomic write moves a cache line between
/// cores, while the caller waits for at most that much at the end.
const CHUNK: usize = 2;

/// How long a worker polls for a new batch before it sleeps: long enough
/// to catch the batch after an early [`Workers::wake`] and the next one
/// of a stream, short enough that an idle worker does not hold a CPU that
/// the other side of the tunnel, or the application, needs.
const IDLE_SPIN: std::time::Duration = std::time::Duration::from_micros(50);

/// Rounds the caller polls for the workers' last chunks before it
/// sleeps (a chunk takes a few µs unless its worker was preempted).
const WAIT_SPINS: u32 = 20_000;

/// Stack of a worker: it runs the AEAD and nothing recursive.
const WORKER_STACK: usize = 128 << 10;

/// A batch as the workers see it: run job `index` of `batch`.
struct Task {
    run: unsafe fn(batch: *const (), index: usize),
    batch: *const (),
}

/// The jobs of one [`Workers::run`] call.
struct Batch<'a, C, T> {
    ctx: &'a C,
    items: *mut T,
    f: fn(&C, &mut T),
}

/// Runs job `index` of a `Batch<C, T>`.
///
/// # Safety
///
/// `batch` points to a live `Batch<C, T>` whose `items` has more than
/// `index` elements, and no other thread accesses element `index` during
/// the call (the claim word hands each index out once per batch).
unsafe fn run_job<C, T>(batch: *const (), index: usize) {
    // SAFETY: as the caller promises.
    let b = unsafe { &*batch.cast::<Batch<'_, C, T>>() };
    // SAFETY: in bounds and not aliased, as the caller promises.
    let item = unsafe { &mut *b.items.add(index) };
    (b.f)(b.ctx, item);
}

/// State shared by the caller and its workers.
struct Shared {
    /// The open batch's claim state: its length in the high 32 bits, the
    /// next unclaimed job in the low 32. Length 0: no batch is open.
    claim: AtomicU64,
    /// Jobs of the open batch finished (by any thread).
    done: AtomicUsize,
    /// The open batch ([`Task`] on the caller's stack). Read only after a
    /// successful claim, which orders it after the caller's store.
    task: AtomicPtr<Task>,
    /// The caller sleeps until `done` reaches what was claimed.
    caller_waiting: AtomicBool,
    /// Whom to wake then.
    caller: Mutex<Option<Thread>>,
    /// A job panicked in a worker (the caller panics in turn).
    panicked: AtomicBool,
    /// Jobs the workers (not the caller) have run, ever: tests and debug
    /// logs look at how the work was shared.
    worker_jobs: AtomicU64,
    stop: AtomicBool,
}

fn pack(len: usize, next: usize) -> u64 {
    ((len as u64) << 32) | next as u64
}

fn unpack(w: u64) -> (usize, usize) {
    ((w >> 32) as usize, (w & 0xffff_ffff) as usize)
}

impl Shared {
    /// Claims up to [`CHUNK`] jobs of the open batch.
    fn claim(&self) -> Option<Range<usize>> {
        let mut w = self.claim.load(Ordering::Acquire);
        loop {
            let (len, next) = unpack(w);
            if next >= len {
                return None;
            }
            let end = (next + CHUNK).min(len);
            match self.claim.compare_exchange_weak(
                w,
                pack(len, end),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(next..end),
                Err(now) => w = now,
            }
        }
    }

    /// Whether a batch has unclaimed jobs.
    fn has_work(&self) -> bool {
        let (len, next) = unpack(self.claim.load(Ordering::Relaxed));
        next < len
    }

    /// Counts `n` jobs finished and wakes the caller if it sleeps.
    fn finished(&self, n: usize) {
        // SeqCst with `caller_waiting`: either the caller sees this count
        // before it sleeps, or this thread sees it waiting and wakes it.
        self.done.fetch_add(n, Ordering::SeqCst);
        if self.caller_waiting.load(Ordering::SeqCst) {
            let caller = self.caller.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(t) = caller.as_ref() {
                t.unpark();
            }
        }
    }

    /// Closes the open batch and waits until every claimed job is done.
    fn close_and_wait(&self) {
        let (_, claimed) = unpack(self.claim.swap(0, Ordering::AcqRel));
        let mut spins = 0;
        while self.done.load(Ordering::Acquire) != claimed {
            if spins < WAIT_SPINS {
                spins += 1;
                std::hint::spin_loop();
                continue;
            }
            // A worker was preempted in the middle of its chunk: sleep
            // rather than spin against it for a CPU.
            *self.caller.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::thread::current());
            self.caller_waiting.store(true, Ordering::SeqCst);
            while self.done.load(Ordering::SeqCst) != claimed {
                std::thread::park();
            }
            self.caller_waiting.store(false, Ordering::SeqCst);
        }
    }
}

fn worker(shared: &Shared) {
    loop {
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(range) = shared.claim() else {
            let until = std::time::Instant::now() + IDLE_SPIN;
            while !shared.has_work()
                && !shared.stop.load(Ordering::Relaxed)
                && std::time::Instant::now() < until
            {
                for _ in 0..16 {
                    std::hint::spin_loop();
                }
            }
            if !shared.has_work() {
                // Woken by the next batch (or by `Drop`); a wake-up that
                // came early is kept by `park` and returns at once.
                std::thread::park();
            }
            continue;
        };
        let task = shared.task.load(Ordering::Relaxed);
        let n = range.len();
        for i in range {
            // One job's panic (a bug) must neither kill the thread, which
            // would leave the caller waiting for ever, nor skip the other
            // jobs of the chunk; the caller panics once all are done.
            let r = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: the successful claim ordered this load after the
                // caller published `task` for this batch, which stays
                // alive and unchanged until `done` counts these jobs (the
                // caller waits for that); the claim gave this thread
                // index `i` alone, below the batch's length.
                unsafe { ((*task).run)((*task).batch, i) };
            }));
            if r.is_err() {
                shared.panicked.store(true, Ordering::Relaxed);
            }
        }
        shared.worker_jobs.fetch_add(n as u64, Ordering::Relaxed);
        shared.finished(n);
    }
}

/// Waits for the workers' claimed jobs when [`Workers::run`] ends, also
/// by a panic in the caller's own share: the jobs borrow from its frame.
struct CloseOnDrop<'a>(&'a Shared);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.close_and_wait();
    }
}

/// A pool of persistent worker threads (possibly none).
pub struct Workers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::none()
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl Workers {
    /// No workers: [`Workers::run`] runs every job on the caller.
    pub fn none() -> Self {
        Workers {
            shared: Arc::new(Shared {
                claim: AtomicU64::new(0),
                done: AtomicUsize::new(0),
                task: AtomicPtr::new(std::ptr::null_mut()),
                caller_waiting: AtomicBool::new(false),
                caller: Mutex::new(None),
                panicked: AtomicBool::new(false),
                worker_jobs: AtomicU64::new(0),
                stop: AtomicBool::new(false),
            }),
            threads: Vec::new(),
        }
    }

    /// Starts `n` workers (at most [`MAX_WORKERS`]) and returns once each
    /// has finished its start-up, so that a seccomp filter installed next
    /// sees no thread still setting itself up.
    pub fn new(n: usize) -> std::io::Result<Self> {
        let mut w = Self::none();
        let n = n.min(MAX_WORKERS);
        let (started, ready) = std::sync::mpsc::channel::<()>();
        for i in 0..n {
            let shared = Arc::clone(&w.shared);
            let started = started.clone();
            let t = std::thread::Builder::new()
                .name(format!("worker{i}"))
                .stack_size(WORKER_STACK)
                .spawn(move || {
                    // Sent from the closure: std's start-up of the thread
                    // (its name, its signal stack) is over.
                    let _ = started.send(());
                    drop(started);
                    worker(&shared);
                });
            match t {
                Ok(t) => w.threads.push(t),
                // The ones started are stopped by `Drop`.
                Err(e) => return Err(e),
            }
        }
        drop(started);
        for _ in 0..n {
            // A worker that died before saying so closed its sender; the
            // count of senders then reaches zero and `recv` fails rather
            // than wait for ever.
            if ready.recv().is_err() {
                return Err(std::io::Error::other("a transport worker failed to start"));
            }
        }
        Ok(w)
    }

    /// Wakes the workers ahead of a batch about to be [`run`](Self::run),
    /// so that their wake-up overlaps the caller's work until then.
    pub fn wake(&self) {
        for t in &self.threads {
            t.thread().unpark();
        }
    }

    /// The number of worker threads (0: everything runs on the caller).
    pub fn count(&self) -> usize {
        self.threads.len()
    }

    /// Jobs the workers (not the caller) have run so far.
    pub fn worker_jobs(&self) -> u64 {
        self.shared.worker_jobs.load(Ordering::Relaxed)
    }

    /// Runs `f(ctx, item)` for every item, on the calling thread and the
    /// workers; returns when all are done. Which thread runs which item is
    /// not defined, so `f` must depend on nothing but its arguments.
    ///
    /// # Panics
    ///
    /// If `f` panicked on a worker (after every job has finished), or has
    /// more than `u32::MAX` items.
    pub fn run<C: Sync, T: Send>(&self, ctx: &C, items: &mut [T], f: fn(&C, &mut T)) {
        if self.threads.is_empty() || items.len() < 2 {
            for it in items.iter_mut() {
                f(ctx, it);
            }
            return;
        }
        let len = items.len();
        assert!(u32::try_from(len).is_ok(), "batch too long");
        let batch = Batch {
            ctx,
            items: items.as_mut_ptr(),
            f,
        };
        let task = Task {
            run: run_job::<C, T>,
            batch: (&raw const batch).cast(),
        };
        let s = &*self.shared;
        // No batch is open (the last `run` closed it and waited), so no
        // thread reads `task` or `done` until the store of `claim` below
        // publishes them.
        s.task
            .store((&raw const task).cast_mut(), Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        s.claim.store(pack(len, 0), Ordering::Release);
        let _close = CloseOnDrop(s);
        for t in &self.threads {
            t.thread().unpark();
        }
        while let Some(range) = s.claim() {
            let n = range.len();
            for i in range {
                // SAFETY: `batch` lives until `_close` has waited for every
                // claimed job; index `i` was claimed by this thread alone
                // and is below `len`; `items` is not otherwise used until
                // then.
                unsafe { run_job::<C, T>(task.batch, i) };
            }
            s.finished(n);
        }
        drop(_close);
        if s.panicked.swap(false, Ordering::Relaxed) {
            panic!("a transport worker panicked");
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn square(add: &u64, x: &mut u64) {
        *x = *x * *x + add;
    }

    #[test]
    fn every_job_runs_once_in_place() {
        for n in [0, 1, 2, 3, 64] {
            let w = match Workers::new(n.min(2)) {
                Ok(w) => w,
                Err(e) => panic!("spawn: {e}"),
            };
            for len in [0usize, 1, 2, 3, 17, 1000] {
                let mut items: Vec<u64> = (0..len as u64).collect();
                w.run(&7, &mut items, square);
                let want: Vec<u64> = (0..len as u64).map(|x| x * x + 7).collect();
                assert_eq!(items, want, "{n} workers, {len} items");
            }
        }
    }

    /// Jobs slow enough that a worker must take some of them: the work is
    /// really shared, and each job still runs exactly once.
    #[test]
    fn a_worker_takes_part() {
        let w = match Workers::new(1) {
            Ok(w) => w,
            Err(e) => panic!("spawn: {e}"),
        };
        fn slow(_: &(), x: &mut (u64, Option<std::thread::ThreadId>)) {
            let until = Instant::now() + Duration::from_micros(200);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            x.0 += 1;
            x.1 = Some(std::thread::current().id());
        }
        let me = std::thread::current().id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut items = vec![(0u64, None); 64];
            w.run(&(), &mut items, slow);
            assert!(items.iter().all(|x| x.0 == 1));
            if items.iter().any(|x| x.1.is_some_and(|t| t != me)) {
                assert!(w.worker_jobs() > 0);
                break;
            }
            // The worker may not have had a CPU in 13 ms on a loaded
            // machine; try again, within the deadline.
            assert!(Instant::now() < deadline, "the worker never ran a job");
        }
    }

    #[test]
    fn a_panicking_job_on_a_worker_is_reported_after_the_batch() {
        let w = match Workers::new(1) {
            Ok(w) => w,
            Err(e) => panic!("spawn: {e}"),
        };
        fn maybe_panic(me: &std::thread::ThreadId, x: &mut u32) {
            // Slow enough for the worker to take part.
            let until = Instant::now() + Duration::from_micros(100);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
            *x += 1;
            if std::thread::current().id() != *me {
                panic!("job on a worker");
            }
        }
        let me = std::thread::current().id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut items = vec![0u32; 64];
            let r = catch_unwind(AssertUnwindSafe(|| w.run(&me, &mut items, maybe_panic)));
            // Every job ran once, the panicking ones too, before `run`
            // returned or panicked.
            assert!(items.iter().all(|&x| x == 1));
            if r.is_err() {
                break;
            }
            assert!(Instant::now() < deadline, "the worker never ran a job");
        }
        // The pool still works afterwards.
        let mut items: Vec<u64> = (0..10).collect();
        w.run(&0, &mut items, square);
        assert_eq!(items[9], 81);
    }
}
