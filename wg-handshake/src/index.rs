//! Session indices: the random 32-bit numbers by which a peer names our
//! side of a handshake or keypair in the `receiver` field of its messages.
//!
//! Indices are drawn at random (so they reveal nothing about how many
//! sessions exist) and never handed out twice while in use. An index first
//! names a pending handshake and, when the handshake finishes, the keypair
//! it produced; the transport role keys its keypair table by the same
//! number.
//!
//! Only the handshake core uses this table. It frees a removed peer's
//! indices one by one from what the peer itself holds (its pending
//! initiation and its keypairs), so nothing here scans the table: with
//! 100,000 peers, a scan per removal would make `wg syncconf` quadratic.

use std::collections::HashMap;

use proto::keys::{HandshakeId, PublicKey};
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexUse {
    /// An initiation we sent, waiting for its response.
    Initiation(HandshakeId),
    /// An installed keypair.
    Keypair,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub peer: PublicKey,
    pub what: IndexUse,
}

#[derive(Debug, Default)]
pub struct IndexTable {
    map: HashMap<u32, IndexEntry>,
}

impl IndexTable {
    pub fn allocate<R: Rng>(&mut self, rng: &mut R, entry: IndexEntry) -> u32 {
        loop {
            let i: u32 = rng.gen();
            if let std::collections::hash_map::Entry::Vacant(v) = self.map.entry(i) {
                v.insert(entry);
                return i;
            }
        }
    }

    pub fn get(&self, index: u32) -> Option<&IndexEntry> {
        self.map.get(&index)
    }

    pub fn set(&mut self, index: u32, entry: IndexEntry) {
        self.map.insert(index, entry);
    }

    pub fn free(&mut self, index: u32) -> Option<IndexEntry> {
        self.map.remove(&index)
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Every index in use (for the core's consistency checks in tests).
    #[cfg(test)]
    pub(crate) fn all(&self) -> impl Iterator<Item = u32> + '_ {
        self.map.keys().copied()
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn indices_are_unique_and_freed() {
        let mut rng = StdRng::seed_from_u64(1);
        let mut t = IndexTable::default();
        let e = IndexEntry {
            peer: PublicKey([1; 32]),
            what: IndexUse::Keypair,
        };
        let v: Vec<u32> = (0..1000).map(|_| t.allocate(&mut rng, e)).collect();
        let mut s = v.clone();
        s.sort_unstable();
        s.dedup();
        assert_eq!(s.len(), 1000);
        assert_eq!(t.free(v[0]), Some(e));
        assert_eq!(t.get(v[0]), None);
        for i in &v[1..] {
            assert_eq!(t.free(*i), Some(e));
        }
        assert!(t.is_empty());
    }
}
