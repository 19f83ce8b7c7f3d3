//! The receive replay window of a session keypair (RFC 6479).
//!
//! The transport role keeps one [`ReplayWindow`] per receiving keypair. For
//! every type-4 data message it first asks [`ReplayWindow::would_accept`]
//! (no mutation) so that duplicates and stale packets are dropped before
//! paying for decryption, and only after the packet authenticated does it
//! call [`ReplayWindow::accept`] to mark the counter seen. Marking before
//! authentication would let anyone who can forge a header burn counters and
//! make the genuine packets look like replays.
//!
//! Layout (RFC 6479): the bitmap is a ring of `u64` blocks. Advancing the
//! window zeroes whole blocks instead of shifting a long bitmap, so the cost
//! of a jump is bounded by the ring size however far the counter moves. One
//! block of the ring is always the partly-filled block of the highest
//! counter, so the usable window is one block short of the ring.

use crate::keypair::REJECT_AFTER_MESSAGES;

const BLOCK_BITS: u64 = u64::BITS as u64;
/// Number of `u64` blocks in the ring (a power of two keeps the ring index
/// a mask).
const RING_BLOCKS: usize = 128;
const RING_MASK: u64 = RING_BLOCKS as u64 - 1;

/// How many counters, ending at the highest one accepted, are remembered:
/// a counter at least this far behind the highest is rejected as too old.
///
/// 8128 = 128 blocks of 64 bits minus the block in progress, the figure
/// wireguard-go also uses; it comfortably covers the reordering that
/// multi-queue NICs and parallel decryption produce at 10 Gb/s, well beyond
/// the whitepaper's minimum of 2048, for 1 KiB per keypair.
pub const WINDOW_SIZE: u64 = (RING_BLOCKS as u64 - 1) * BLOCK_BITS;

/// The receive-side replay filter of one keypair.
#[derive(Clone)]
pub struct ReplayWindow {
    /// Highest counter accepted so far (0 before any: counter 0 is then
    /// told apart from "seen" by its bit, which is still clear).
    last: u64,
    ring: [u64; RING_BLOCKS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The bitmap is 1 KiB of noise in a log line; the edge is what
        // matters when debugging.
        f.debug_struct("ReplayWindow")
            .field("last", &self.last)
            .finish_non_exhaustive()
    }
}

impl ReplayWindow {
    /// An empty window: every counter below [`REJECT_AFTER_MESSAGES`] would
    /// be accepted.
    pub const fn new() -> Self {
        Self {
            last: 0,
            ring: [0; RING_BLOCKS],
        }
    }

    fn slot(counter: u64) -> (usize, u64) {
        let block = ((counter / BLOCK_BITS) & RING_MASK) as usize;
        let bit = 1u64 << (counter % BLOCK_BITS);
        (block, bit)
    }

    /// Whether `counter` is new and recent enough. Cheap, and does not
    /// change the window: call it before decrypting.
    pub fn would_accept(&self, counter: u64) -> bool {
        if counter >= REJECT_AFTER_MESSAGES {
            return false;
        }
        if counter > self.last {
            return true;
        }
        if self.last - counter >= WINDOW_SIZE {
            return false;
        }
        let (block, bit) = Self::slot(counter);
        self.ring[block] & bit == 0
    }

    /// Marks `counter` seen if it is new and inside or ahead of the window;
    /// returns false for a duplicate, a counter too old to judge, or one at
    /// or past [`REJECT_AFTER_MESSAGES`]. Call only once the packet carrying
    /// it has authenticated.
    pub fn accept(&mut self, counter: u64) -> bool {
        if !self.would_accept(counter) {
            return false;
        }
        if counter > self.last {
            let old_block = self.last / BLOCK_BITS;
            let new_block = counter / BLOCK_BITS;
            // Blocks between the old edge and the new one hold bits of
            // counters a full ring ago; a jump of a whole ring or more
            // clears every block, and clearing more would be wasted work.
            let stale = (new_block - old_block).min(RING_BLOCKS as u64);
            for i in 1..=stale {
                self.ring[((old_block + i) & RING_MASK) as usize] = 0;
            }
            self.last = counter;
        }
        let (block, bit) = Self::slot(counter);
        self.ring[block] |= bit;
        true
    }

    /// Forgets every counter seen, as for a fresh keypair.
    pub fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    #[test]
    fn counter_zero_first() {
        let mut w = ReplayWindow::new();
        assert!(w.would_accept(0));
        assert!(w.accept(0));
        assert!(!w.would_accept(0));
        assert!(!w.accept(0));
        assert!(w.accept(1));
    }

    #[test]
    fn in_order() {
        let mut w = ReplayWindow::new();
        for c in 0..20_000 {
            assert!(w.accept(c), "counter {c}");
        }
        for c in 20_000 - WINDOW_SIZE..20_000 {
            assert!(!w.would_accept(c), "counter {c}");
        }
    }

    #[test]
    fn out_of_order_within_window() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(1000));
        for c in (0..1000).rev().step_by(3) {
            assert!(w.accept(c), "counter {c}");
        }
        assert!(w.accept(1001));
        assert!(w.accept(998));
        assert!(!w.accept(999));
        assert!(!w.accept(1000));
    }

    #[test]
    fn duplicate_rejected_and_would_accept_does_not_mark() {
        let mut w = ReplayWindow::new();
        assert!(w.would_accept(7));
        assert!(w.would_accept(7));
        assert!(w.accept(7));
        assert!(!w.would_accept(7));
        assert!(!w.accept(7));
        assert!(w.accept(5));
        assert!(!w.accept(5));
    }

    #[test]
    fn too_old_edges() {
        let mut w = ReplayWindow::new();
        let top = 3 * WINDOW_SIZE + 17;
        assert!(w.accept(top));
        // The window holds WINDOW_SIZE counters ending at `top`.
        assert!(!w.would_accept(top - WINDOW_SIZE));
        assert!(!w.accept(top - WINDOW_SIZE));
        assert!(w.accept(top - WINDOW_SIZE + 1));
        assert!(!w.accept(0));
    }

    #[test]
    fn big_jump_clears_the_right_blocks() {
        let mut w = ReplayWindow::new();
        // Fill the whole window so every block of the ring has bits set.
        for c in 0..WINDOW_SIZE {
            assert!(w.accept(c));
        }
        // Move three blocks on: the three recycled blocks must come back
        // empty while the counters still inside the window stay marked.
        let top = WINDOW_SIZE - 1 + 3 * BLOCK_BITS;
        assert!(w.accept(top));
        for c in WINDOW_SIZE..top {
            assert!(w.would_accept(c), "recycled counter {c}");
        }
        for c in top + 1 - WINDOW_SIZE..WINDOW_SIZE {
            assert!(!w.would_accept(c), "still-marked counter {c}");
        }
        for c in 0..top + 1 - WINDOW_SIZE {
            assert!(!w.would_accept(c), "too old {c}");
        }

        // A jump far beyond the ring clears everything.
        let far = top + 1_000_000;
        assert!(w.accept(far));
        for c in far + 1 - WINDOW_SIZE..far {
            assert!(w.would_accept(c), "counter {c} after the far jump");
        }
        assert!(!w.would_accept(far - WINDOW_SIZE));
        assert!(!w.would_accept(far));
    }

    #[test]
    fn counter_limits() {
        let mut w = ReplayWindow::new();
        assert!(!w.would_accept(REJECT_AFTER_MESSAGES));
        assert!(!w.accept(REJECT_AFTER_MESSAGES));
        assert!(!w.accept(u64::MAX));
        assert!(w.accept(REJECT_AFTER_MESSAGES - 1));
        assert!(!w.accept(REJECT_AFTER_MESSAGES - 1));
        assert!(w.accept(REJECT_AFTER_MESSAGES - 2));
        assert!(!w.accept(REJECT_AFTER_MESSAGES));
        assert!(!w.accept(u64::MAX));
    }

    #[test]
    fn reset_forgets() {
        let mut w = ReplayWindow::new();
        assert!(w.accept(100_000));
        assert!(!w.would_accept(5));
        w.reset();
        assert!(w.accept(5));
        assert!(w.accept(100_000));
    }

    /// The obvious, unbounded implementation of the same rule.
    #[derive(Default)]
    struct Reference {
        seen: HashSet<u64>,
        max: Option<u64>,
    }

    impl Reference {
        fn would_accept(&self, c: u64) -> bool {
            if c >= REJECT_AFTER_MESSAGES || self.seen.contains(&c) {
                return false;
            }
            match self.max {
                Some(m) if c < m => m - c < WINDOW_SIZE,
                _ => true,
            }
        }

        fn accept(&mut self, c: u64) -> bool {
            if !self.would_accept(c) {
                return false;
            }
            self.seen.insert(c);
            self.max = Some(self.max.map_or(c, |m| m.max(c)));
            true
        }
    }

    fn check(base: u64, offsets: &[u64]) -> Result<(), TestCaseError> {
        let mut w = ReplayWindow::new();
        let mut r = Reference::default();
        for &o in offsets {
            let c = base.saturating_add(o);
            prop_assert_eq!(w.would_accept(c), r.would_accept(c), "would_accept({})", c);
            prop_assert_eq!(w.accept(c), r.accept(c), "accept({})", c);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn matches_reference(offsets in prop::collection::vec(
            prop_oneof![
                4 => 0u64..3 * WINDOW_SIZE,
                1 => 0u64..200_000,
            ],
            0..600,
        )) {
            check(0, &offsets)?;
        }

        #[test]
        fn matches_reference_near_limit(offsets in prop::collection::vec(
            0u64..3 * WINDOW_SIZE,
            0..300,
        )) {
            check(REJECT_AFTER_MESSAGES - 2 * WINDOW_SIZE, &offsets)?;
        }
    }
}
