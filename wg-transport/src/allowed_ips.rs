//! The allowed-IPs table: WireGuard's cryptokey routing.
//!
//! Each peer is configured with a set of IP prefixes. The transport role
//! consults this table twice per data packet:
//!
//! - **outbound**: a packet read from the tun device is sent to the peer
//!   whose prefix is the longest match for its *destination* address (no
//!   match: the packet is dropped, there is no default peer);
//! - **inbound**: a packet that decrypted under a peer's session is written
//!   to the tun device only if the longest match for its *source* address is
//!   that same peer, so a peer cannot spoof addresses it was not given.
//!
//! The parent process drives the table with `insert` / `remove` /
//! `remove_peer` as configuration changes (from the config file, `wgctl` or
//! `wg set`), and `show` reads it back, a page at a time, with
//! [`AllowedIps::entries_from`], each peer's prefixes in the order they
//! were last inserted (as Linux and wireguard-go list them).
//!
//! As in WireGuard, a prefix belongs to exactly one peer: inserting a prefix
//! that another peer holds moves it. IPv4 and IPv6 live in separate tries and
//! IPv4-mapped IPv6 addresses get no special treatment.
//!
//! # Why hand-written
//!
//! The design prefers well-kept crates for IP prefixes, but none offers what
//! the data path needs together: an allocation-free longest-prefix lookup on
//! raw header bytes, and removal of all of one peer's prefixes without
//! scanning the whole table (peers come and go at run time, and the table can
//! hold many thousands of prefixes).
//!
//! # Structure
//!
//! A path-compressed binary radix trie per address family, stored in one
//! arena (`Vec<Node>`) addressed by `u32` indices, with a free list. Keys
//! are `u128` with the prefix bits left-aligned (an IPv4 address occupies the
//! top 32 bits), so one implementation serves both families. Every node is
//! either a prefix owned by a peer, or a branching point with exactly two
//! children; removal restores that invariant by splicing out or freeing
//! nodes, so a trie holding `n` prefixes has fewer than `2n` nodes however
//! much churn it has seen.
//!
//! Each peer's prefixes are threaded onto an intrusive doubly-linked list
//! through their nodes, with the list heads in a hash map; that makes
//! `remove_peer` proportional to that peer's own prefixes, and unlinking one
//! prefix O(1).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// "No node": the empty child slot, the parent of a root, the end of a list.
const NIL: u32 = u32::MAX;

/// Index into `AllowedIps::roots`.
const V4: usize = 0;
const V6: usize = 1;

/// Why an insertion was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AllowedIpsError {
    /// The prefix length exceeds the address width (32 for IPv4, 128 for
    /// IPv6).
    #[error("prefix length /{cidr} is longer than the address (at most /{max})")]
    CidrTooLarge {
        /// The length asked for.
        cidr: u8,
        /// The longest valid length for that address family.
        max: u8,
    },
    /// The arena's `u32` indices are exhausted (billions of nodes; memory
    /// runs out long before, but an index must never silently wrap).
    #[error("allowed-IPs table is full")]
    TableFull,
}

#[derive(Debug, Clone)]
struct Node<P> {
    /// Prefix bits, left-aligned; every bit past `len` is zero.
    key: u128,
    /// Prefix length in bits, 0..=32 in the v4 trie, 0..=128 in the v6 trie.
    len: u8,
    /// Which trie the node belongs to, to find its root and to turn its key
    /// back into an address.
    v6: bool,
    /// `None` for a pure branching point, which then has two children.
    peer: Option<P>,
    /// Children are longer prefixes that extend this one; `child[b]` holds
    /// those whose bit number `len` is `b`.
    child: [u32; 2],
    parent: u32,
    /// Neighbours in the owning peer's list; `NIL` when `peer` is `None`.
    prev: u32,
    next: u32,
}

impl<P> Node<P> {
    fn new(key: u128, len: u8, v6: bool, peer: Option<P>, parent: u32) -> Self {
        Node {
            key,
            len,
            v6,
            peer,
            child: [NIL, NIL],
            parent,
            prev: NIL,
            next: NIL,
        }
    }
}

/// Head of one peer's intrusive list of prefix nodes.
#[derive(Debug, Clone, Copy)]
struct PeerList {
    /// Oldest and newest insertion: `show` walks from the head, so a
    /// peer's prefixes come out in the order they were (last) inserted,
    /// as Linux and wireguard-go list them.
    head: u32,
    tail: u32,
    count: usize,
}

/// A longest-prefix-match table from IP prefixes to peers.
///
/// `P` is the transport's peer handle: a small copyable id. It must be
/// `Hash` because the table keeps a per-peer index for
/// [`remove_peer`](Self::remove_peer).
#[derive(Debug, Clone)]
pub struct AllowedIps<P> {
    nodes: Vec<Node<P>>,
    /// Indices of unused slots in `nodes`, reused before the arena grows.
    free: Vec<u32>,
    /// Root of the v4 and the v6 trie (`NIL` when empty).
    roots: [u32; 2],
    peers: HashMap<P, PeerList>,
    /// Number of prefixes (not nodes).
    len: usize,
}

impl<P: Copy + Eq + Hash> Default for AllowedIps<P> {
    fn default() -> Self {
        Self::new()
    }
}

/// Number of leading bits two left-aligned keys have in common (0..=128).
#[inline]
fn shared_bits(a: u128, b: u128) -> u8 {
    // leading_zeros of a u128 is at most 128, so the cast cannot truncate.
    (a ^ b).leading_zeros() as u8
}

/// Bit number `i` (0 = most significant) of a left-aligned key.
///
/// For `i == 128` the shift wraps and an arbitrary bit comes back; that
/// only happens when stepping past a /128 node, which never has children,
/// so both slots are `NIL` and the answer does not matter. Not branching on
/// it keeps the lookup loop tight.
#[inline]
fn bit_at(key: u128, i: u8) -> usize {
    (key.wrapping_shl(u32::from(i)) >> 127) as usize
}

/// Keeps the top `len` bits of `key`.
#[inline]
fn mask(key: u128, len: u8) -> u128 {
    // Shifting a u128 by 128 overflows; /0 keeps nothing.
    match u128::MAX.checked_shl(128 - u32::from(len)) {
        Some(m) => key & m,
        None => 0,
    }
}

#[inline]
fn v4_key(addr: [u8; 4]) -> u128 {
    u128::from(u32::from_be_bytes(addr)) << 96
}

#[inline]
fn v6_key(addr: [u8; 16]) -> u128 {
    u128::from_be_bytes(addr)
}

/// Trie index and masked key of a prefix, or why it is invalid.
fn prefix_key(addr: IpAddr, cidr: u8) -> Result<(usize, u128), AllowedIpsError> {
    let (family, key, max) = match addr {
        IpAddr::V4(a) => (V4, v4_key(a.octets()), 32),
        IpAddr::V6(a) => (V6, v6_key(a.octets()), 128),
    };
    if cidr > max {
        return Err(AllowedIpsError::CidrTooLarge { cidr, max });
    }
    Ok((family, mask(key, cidr)))
}

impl<P: Copy + Eq + Hash> AllowedIps<P> {
    /// An empty table.
    pub fn new() -> Self {
        AllowedIps {
            nodes: Vec::new(),
            free: Vec::new(),
            roots: [NIL, NIL],
            peers: HashMap::new(),
            len: 0,
        }
    }

    /// Number of prefixes in the table (both families).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table holds no prefix at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Removes every prefix and releases the arena.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.free.clear();
        self.roots = [NIL, NIL];
        self.peers.clear();
        self.len = 0;
    }

    /// Assigns the prefix `addr/cidr` to `peer`.
    ///
    /// Bits of `addr` past `cidr` are ignored (`10.0.0.1/8` is stored as
    /// `10.0.0.0/8`), as `wg` does. If the prefix is already in the table it
    /// moves to `peer`: a prefix belongs to one peer only.
    pub fn insert(&mut self, addr: IpAddr, cidr: u8, peer: P) -> Result<(), AllowedIpsError> {
        let (family, key) = prefix_key(addr, cidr)?;
        let v6 = family == V6;
        let mut parent = NIL;
        let mut idx = self.roots[family];
        loop {
            if idx == NIL {
                let new = self.alloc(Node::new(key, cidr, v6, Some(peer), parent))?;
                self.set_slot(family, parent, key, new);
                self.link(new, peer);
                self.len += 1;
                return Ok(());
            }
            let node = &self.nodes[idx as usize];
            let (node_key, node_len) = (node.key, node.len);
            let common = shared_bits(key, node_key).min(cidr).min(node_len);

            if common == node_len && node_len == cidr {
                // The prefix is already here, owned or as a branching point.
                match node.peer {
                    // Inserted again: it moves to the end of the peer's
                    // list (Linux: `list_move_tail`; wireguard-go too).
                    Some(_) => {
                        self.unlink(idx);
                        self.nodes[idx as usize].peer = Some(peer);
                        self.link(idx, peer);
                    }
                    None => {
                        self.nodes[idx as usize].peer = Some(peer);
                        self.link(idx, peer);
                        self.len += 1;
                    }
                }
                return Ok(());
            }
            if common == node_len {
                // The node is a shorter prefix of ours: descend.
                parent = idx;
                idx = node.child[bit_at(key, node_len)];
                continue;
            }
            if common == cidr {
                // Ours is a shorter prefix of the node's: slot in above it.
                let mut new_node = Node::new(key, cidr, v6, Some(peer), parent);
                new_node.child[bit_at(node_key, cidr)] = idx;
                let new = self.alloc(new_node)?;
                self.nodes[idx as usize].parent = new;
                self.set_slot(family, parent, key, new);
                self.link(new, peer);
                self.len += 1;
                return Ok(());
            }
            // The two diverge after `common` bits: a branching point there
            // gets the node on one side and our new leaf on the other.
            let leaf = self.alloc(Node::new(key, cidr, v6, Some(peer), NIL))?;
            let branch_key = mask(key, common);
            let mut branch_node = Node::new(branch_key, common, v6, None, parent);
            branch_node.child[bit_at(node_key, common)] = idx;
            branch_node.child[bit_at(key, common)] = leaf;
            let branch = match self.alloc(branch_node) {
                Ok(b) => b,
                Err(e) => {
                    self.release(leaf);
                    return Err(e);
                }
            };
            self.nodes[leaf as usize].parent = branch;
            self.nodes[idx as usize].parent = branch;
            self.set_slot(family, parent, branch_key, branch);
            self.link(leaf, peer);
            self.len += 1;
            return Ok(());
        }
    }

    /// Removes the prefix `addr/cidr` if it is in the table and belongs to
    /// `peer`; returns whether it did. Host bits are masked as in
    /// [`insert`](Self::insert); an invalid `cidr` matches nothing.
    pub fn remove(&mut self, addr: IpAddr, cidr: u8, peer: P) -> bool {
        let Ok((family, key)) = prefix_key(addr, cidr) else {
            return false;
        };
        let Some(idx) = self.find_exact(family, key, cidr) else {
            return false;
        };
        if self.nodes[idx as usize].peer != Some(peer) {
            return false;
        }
        self.unlink(idx);
        self.nodes[idx as usize].peer = None;
        self.len -= 1;
        self.prune(idx);
        true
    }

    /// Removes every prefix of `peer` (both families); returns how many.
    pub fn remove_peer(&mut self, peer: P) -> usize {
        let Some(list) = self.peers.remove(&peer) else {
            return 0;
        };
        let mut idx = list.head;
        while idx != NIL {
            let node = &mut self.nodes[idx as usize];
            let next = node.next;
            node.peer = None;
            node.prev = NIL;
            node.next = NIL;
            // Pruning frees only peerless nodes, so the rest of this list
            // (all still owned) stays where it is.
            self.prune(idx);
            idx = next;
        }
        self.len -= list.count;
        list.count
    }

    /// The peer whose prefix is the longest match for `addr`, if any.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<P> {
        match addr {
            IpAddr::V4(a) => self.lookup_v4(a.octets()),
            IpAddr::V6(a) => self.lookup_v6(a.octets()),
        }
    }

    /// [`lookup`](Self::lookup) on the raw bytes of an IPv4 header field.
    #[inline]
    pub fn lookup_v4(&self, addr: [u8; 4]) -> Option<P> {
        self.longest_match(V4, v4_key(addr))
    }

    /// [`lookup`](Self::lookup) on the raw bytes of an IPv6 header field.
    #[inline]
    pub fn lookup_v6(&self, addr: [u8; 16]) -> Option<P> {
        self.longest_match(V6, v6_key(addr))
    }

    /// Every prefix of `peer`, oldest insertion first.
    pub fn entries_for_peer(&self, peer: P) -> Vec<(IpAddr, u8)> {
        let mut out = Vec::new();
        let mut from = None;
        // Bounded: each chunk advances along the peer's finite list.
        loop {
            let (chunk, next) = self.entries_from(peer, from, usize::MAX);
            out.extend(chunk);
            match next {
                Some(n) => from = Some(n),
                None => return out,
            }
        }
    }

    /// Up to `max` prefixes of `peer` in insertion order, starting at the
    /// cursor `from` (`None`: the oldest), and the cursor of the next one
    /// if any remain. A cursor stays valid as long as the table does not
    /// change, which is how `show` pages through a peer whose prefixes do
    /// not fit one message: the parent, which makes every change, asks for
    /// all pages of one reply before it makes the next change. A stale or
    /// foreign cursor returns nothing rather than another peer's prefixes.
    pub fn entries_from(
        &self,
        peer: P,
        from: Option<u32>,
        max: usize,
    ) -> (Vec<(IpAddr, u8)>, Option<u32>) {
        let Some(list) = self.peers.get(&peer) else {
            return (Vec::new(), None);
        };
        let mut idx = from.unwrap_or(list.head);
        let mut out = Vec::new();
        while idx != NIL && out.len() < max {
            let Some(node) = self.nodes.get(idx as usize) else {
                return (out, None);
            };
            if node.peer != Some(peer) {
                return (out, None);
            }
            let addr = if node.v6 {
                IpAddr::V6(Ipv6Addr::from(node.key))
            } else {
                // A v4 key sits in the top 32 bits; the shift leaves exactly those.
                IpAddr::V4(Ipv4Addr::from((node.key >> 96) as u32))
            };
            out.push((addr, node.len));
            idx = node.next;
        }
        (out, (idx != NIL).then_some(idx))
    }

    /// The hot path: walk down while the node's prefix matches, remembering
    /// the deepest owned node seen.
    #[inline]
    fn longest_match(&self, family: usize, key: u128) -> Option<P> {
        let mut best = None;
        let mut idx = self.roots[family];
        // `NIL` is past the end of the arena (indices stop short of it), so
        // `get` doubles as the end-of-path test.
        while let Some(node) = self.nodes.get(idx as usize) {
            if shared_bits(key, node.key) < node.len {
                break;
            }
            if node.peer.is_some() {
                best = node.peer;
            }
            idx = node.child[bit_at(key, node.len)];
        }
        best
    }

    /// The node holding exactly the prefix `key/len`, owned or not.
    fn find_exact(&self, family: usize, key: u128, len: u8) -> Option<u32> {
        let mut idx = self.roots[family];
        while let Some(node) = self.nodes.get(idx as usize) {
            if node.len > len || shared_bits(key, node.key) < node.len {
                return None;
            }
            if node.len == len {
                return Some(idx);
            }
            idx = node.child[bit_at(key, node.len)];
        }
        None
    }

    /// Points the slot that should hold a node with prefix `key` below
    /// `parent` (or the root) at `new`.
    fn set_slot(&mut self, family: usize, parent: u32, key: u128, new: u32) {
        if parent == NIL {
            self.roots[family] = new;
        } else {
            let p = &mut self.nodes[parent as usize];
            p.child[bit_at(key, p.len)] = new;
        }
    }

    /// Points whichever slot held `old` (below `parent`, or the root) at
    /// `new`.
    fn replace_child(&mut self, v6: bool, parent: u32, old: u32, new: u32) {
        if parent == NIL {
            self.roots[if v6 { V6 } else { V4 }] = new;
        } else {
            let p = &mut self.nodes[parent as usize];
            let side = usize::from(p.child[0] != old);
            p.child[side] = new;
        }
    }

    /// Restores "a peerless node has two children" after `idx` lost its
    /// peer: frees a childless node (which can leave its parent with one
    /// child) and splices out a node with one child.
    fn prune(&mut self, mut idx: u32) {
        loop {
            let node = &self.nodes[idx as usize];
            if node.peer.is_some() {
                return;
            }
            let (parent, v6) = (node.parent, node.v6);
            match node.child {
                [NIL, NIL] => {
                    self.replace_child(v6, parent, idx, NIL);
                    self.release(idx);
                    if parent == NIL {
                        return;
                    }
                    idx = parent;
                }
                [only, NIL] | [NIL, only] => {
                    self.replace_child(v6, parent, idx, only);
                    self.nodes[only as usize].parent = parent;
                    self.release(idx);
                    return;
                }
                _ => return,
            }
        }
    }

    /// Stores `node` in a free slot or at the end of the arena.
    fn alloc(&mut self, node: Node<P>) -> Result<u32, AllowedIpsError> {
        if let Some(idx) = self.free.pop() {
            self.nodes[idx as usize] = node;
            return Ok(idx);
        }
        let idx = u32::try_from(self.nodes.len())
            .ok()
            .filter(|&i| i != NIL)
            .ok_or(AllowedIpsError::TableFull)?;
        self.nodes.push(node);
        Ok(idx)
    }

    fn release(&mut self, idx: u32) {
        let node = &mut self.nodes[idx as usize];
        node.peer = None;
        node.child = [NIL, NIL];
        node.parent = NIL;
        node.prev = NIL;
        node.next = NIL;
        self.free.push(idx);
        // Once everything is gone, drop the free list too, so an emptied
        // table starts again from a compact arena.
        if self.free.len() == self.nodes.len() {
            self.nodes.clear();
            self.free.clear();
        }
    }

    /// Pushes `idx` onto `peer`'s list.
    fn link(&mut self, idx: u32, peer: P) {
        let list = self.peers.entry(peer).or_insert(PeerList {
            head: NIL,
            tail: NIL,
            count: 0,
        });
        let old_tail = list.tail;
        list.tail = idx;
        if old_tail == NIL {
            list.head = idx;
        }
        list.count += 1;
        if old_tail != NIL {
            self.nodes[old_tail as usize].next = idx;
        }
        let node = &mut self.nodes[idx as usize];
        node.prev = old_tail;
        node.next = NIL;
    }

    /// Takes `idx` off its owner's list (the node keeps its `peer` field;
    /// the caller overwrites it).
    fn unlink(&mut self, idx: u32) {
        let node = &mut self.nodes[idx as usize];
        let (prev, next) = (node.prev, node.next);
        node.prev = NIL;
        node.next = NIL;
        let Some(peer) = node.peer else {
            return;
        };
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
        if prev != NIL {
            self.nodes[prev as usize].next = next;
        }
        if let Some(list) = self.peers.get_mut(&peer) {
            if prev == NIL {
                list.head = next;
            }
            if next == NIL {
                list.tail = prev;
            }
            list.count -= 1;
            if list.count == 0 {
                self.peers.remove(&peer);
            }
        }
    }

    /// Nodes in use (prefixes plus branching points).
    #[cfg(test)]
    fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    /// Panics if any structural invariant is broken.
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut reachable = 0;
        let mut owned = 0;
        for (family, &root) in self.roots.iter().enumerate() {
            if root == NIL {
                continue;
            }
            assert_eq!(self.nodes[root as usize].parent, NIL);
            let mut stack = vec![root];
            while let Some(idx) = stack.pop() {
                reachable += 1;
                let node = &self.nodes[idx as usize];
                assert_eq!(node.v6, family == V6);
                assert!(node.len <= if node.v6 { 128 } else { 32 });
                assert_eq!(mask(node.key, node.len), node.key, "host bits set");
                let children = node.child.iter().filter(|&&c| c != NIL).count();
                match node.peer {
                    Some(p) => {
                        owned += 1;
                        assert!(self.peers.contains_key(&p));
                    }
                    None => assert_eq!(children, 2, "peerless node must branch"),
                }
                for (side, &c) in node.child.iter().enumerate() {
                    if c == NIL {
                        continue;
                    }
                    let child = &self.nodes[c as usize];
                    assert_eq!(child.parent, idx);
                    assert!(child.len > node.len);
                    assert!(shared_bits(child.key, node.key) >= node.len);
                    assert_eq!(bit_at(child.key, node.len), side);
                    stack.push(c);
                }
            }
        }
        assert_eq!(reachable, self.node_count(), "leaked or dangling nodes");
        assert_eq!(owned, self.len);
        let mut listed = 0;
        for (&peer, list) in &self.peers {
            assert!(list.count > 0);
            let mut n = 0;
            let mut prev = NIL;
            let mut idx = list.head;
            while idx != NIL {
                let node = &self.nodes[idx as usize];
                assert!(node.peer == Some(peer), "node on the wrong peer list");
                assert_eq!(node.prev, prev);
                prev = idx;
                idx = node.next;
                n += 1;
            }
            assert_eq!(n, list.count);
            listed += n;
        }
        assert_eq!(listed, self.len);
    }
}

#[cfg(test)]
mod tests;
