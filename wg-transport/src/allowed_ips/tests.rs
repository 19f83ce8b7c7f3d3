//! Tests of the parent module, in a file of their own so that the module
//! itself reads as the code it is.

use super::*;
use proptest::prelude::*;

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().unwrap())
}

fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().unwrap())
}

fn ins(t: &mut AllowedIps<u32>, addr: IpAddr, cidr: u8, peer: u32) {
    t.insert(addr, cidr, peer).unwrap();
    t.check_invariants();
}

fn overlapping() -> AllowedIps<u32> {
    let mut t = AllowedIps::new();
    ins(&mut t, v4("0.0.0.0"), 0, 1);
    ins(&mut t, v4("10.0.0.0"), 8, 2);
    ins(&mut t, v4("10.1.0.0"), 16, 3);
    ins(&mut t, v4("10.1.2.3"), 32, 4);
    t
}

#[test]
fn allowed_overlapping_prefixes_pick_most_specific() {
    let t = overlapping();
    assert_eq!(t.len(), 4);
    assert_eq!(t.lookup(v4("192.168.1.1")), Some(1));
    assert_eq!(t.lookup(v4("10.200.0.1")), Some(2));
    assert_eq!(t.lookup(v4("10.1.9.9")), Some(3));
    assert_eq!(t.lookup(v4("10.1.2.3")), Some(4));
    assert_eq!(t.lookup(v4("10.1.2.4")), Some(3));
    assert_eq!(t.lookup_v4([10, 1, 2, 3]), Some(4));
    assert_eq!(t.lookup_v4([11, 0, 0, 0]), Some(1));
    // Nothing in the v6 trie.
    assert_eq!(t.lookup(v6("::")), None);
}

#[test]
fn allowed_insertion_order_does_not_matter() {
    let prefixes = [
        ("10.1.2.3", 32, 4),
        ("0.0.0.0", 0, 1),
        ("10.1.0.0", 16, 3),
        ("10.0.0.0", 8, 2),
    ];
    let mut t = AllowedIps::new();
    for (a, c, p) in prefixes {
        ins(&mut t, v4(a), c, p);
    }
    assert_eq!(t.lookup(v4("192.168.1.1")), Some(1));
    assert_eq!(t.lookup(v4("10.200.0.1")), Some(2));
    assert_eq!(t.lookup(v4("10.1.9.9")), Some(3));
    assert_eq!(t.lookup(v4("10.1.2.3")), Some(4));
}

#[test]
fn allowed_removing_middle_prefix_falls_back() {
    let mut t = overlapping();
    assert!(t.remove(v4("10.1.0.0"), 16, 3));
    t.check_invariants();
    assert_eq!(t.len(), 3);
    assert_eq!(t.lookup(v4("10.1.9.9")), Some(2));
    assert_eq!(t.lookup(v4("10.1.2.3")), Some(4));
    assert!(t.remove(v4("10.0.0.0"), 8, 2));
    t.check_invariants();
    assert_eq!(t.lookup(v4("10.1.9.9")), Some(1));
    assert_eq!(t.lookup(v4("10.1.2.3")), Some(4));
    assert!(t.remove(v4("0.0.0.0"), 0, 1));
    t.check_invariants();
    assert_eq!(t.lookup(v4("10.1.9.9")), None);
    assert_eq!(t.lookup(v4("10.1.2.3")), Some(4));
    // Gone already.
    assert!(!t.remove(v4("10.1.0.0"), 16, 3));
}

#[test]
fn allowed_reinsert_moves_prefix_to_new_peer() {
    let mut t = overlapping();
    ins(&mut t, v4("10.1.0.0"), 16, 9);
    assert_eq!(t.len(), 4);
    assert_eq!(t.lookup(v4("10.1.9.9")), Some(9));
    assert!(t.entries_for_peer(3).is_empty());
    assert_eq!(t.entries_for_peer(9), vec![(v4("10.1.0.0"), 16)]);
    // The old owner can no longer remove it; the new one can.
    assert!(!t.remove(v4("10.1.0.0"), 16, 3));
    assert!(t.remove(v4("10.1.0.0"), 16, 9));
    t.check_invariants();
    // Re-inserting for the same peer is a no-op.
    ins(&mut t, v4("10.0.0.0"), 8, 2);
    assert_eq!(t.len(), 3);
    assert_eq!(t.entries_for_peer(2), vec![(v4("10.0.0.0"), 8)]);
}

#[test]
fn allowed_remove_with_wrong_peer_does_nothing() {
    let mut t = overlapping();
    let nodes = t.node_count();
    assert!(!t.remove(v4("10.0.0.0"), 8, 3));
    assert!(!t.remove(v4("10.0.0.0"), 8, 77));
    // A prefix that only exists as a branching point, or not at all.
    assert!(!t.remove(v4("10.0.0.0"), 7, 2));
    assert!(!t.remove(v4("10.0.0.0"), 33, 2));
    t.check_invariants();
    assert_eq!(t.len(), 4);
    assert_eq!(t.node_count(), nodes);
    assert_eq!(t.lookup(v4("10.200.0.1")), Some(2));
}

#[test]
fn allowed_remove_peer_leaves_other_peers_intact() {
    let mut t = AllowedIps::new();
    ins(&mut t, v4("10.0.0.0"), 8, 1);
    ins(&mut t, v4("10.1.0.0"), 16, 2);
    ins(&mut t, v4("10.1.1.0"), 24, 1);
    ins(&mut t, v4("192.168.0.0"), 16, 1);
    ins(&mut t, v6("fd00::"), 8, 1);
    ins(&mut t, v6("fd00:1::"), 32, 2);
    assert_eq!(t.remove_peer(1), 4);
    t.check_invariants();
    assert_eq!(t.len(), 2);
    assert_eq!(t.remove_peer(1), 0);
    assert!(t.entries_for_peer(1).is_empty());
    assert_eq!(t.lookup(v4("10.1.1.1")), Some(2));
    assert_eq!(t.lookup(v4("10.2.0.0")), None);
    assert_eq!(t.lookup(v4("192.168.0.1")), None);
    assert_eq!(t.lookup(v6("fd00:1::5")), Some(2));
    assert_eq!(t.lookup(v6("fd00:2::5")), None);
    assert_eq!(
        t.entries_for_peer(2),
        vec![(v4("10.1.0.0"), 16), (v6("fd00:1::"), 32)]
    );
    // Only the two surviving prefixes and no branching point remain.
    assert_eq!(t.node_count(), 2);
}

#[test]
fn allowed_default_routes() {
    let mut t = AllowedIps::new();
    ins(&mut t, v4("0.0.0.0"), 0, 1);
    assert_eq!(t.lookup(v4("0.0.0.0")), Some(1));
    assert_eq!(t.lookup(v4("255.255.255.255")), Some(1));
    assert_eq!(t.lookup(v6("::")), None);
    ins(&mut t, v6("::"), 0, 2);
    assert_eq!(t.lookup(v6("::")), Some(2));
    assert_eq!(
        t.lookup(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
        Some(2)
    );
    assert_eq!(t.lookup(v4("1.2.3.4")), Some(1));
    assert!(t.remove(v4("0.0.0.0"), 0, 1));
    assert_eq!(t.lookup(v4("1.2.3.4")), None);
    assert_eq!(t.lookup(v6("::1")), Some(2));
}

#[test]
fn allowed_host_routes() {
    let mut t = AllowedIps::new();
    ins(&mut t, v4("255.255.255.255"), 32, 1);
    ins(&mut t, v4("0.0.0.0"), 32, 2);
    ins(
        &mut t,
        v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"),
        128,
        3,
    );
    ins(&mut t, v6("::"), 128, 4);
    ins(&mut t, v6("::1"), 128, 5);
    assert_eq!(t.lookup(v4("255.255.255.255")), Some(1));
    assert_eq!(t.lookup(v4("255.255.255.254")), None);
    assert_eq!(t.lookup(v4("0.0.0.0")), Some(2));
    assert_eq!(t.lookup(v4("0.0.0.1")), None);
    assert_eq!(
        t.lookup(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")),
        Some(3)
    );
    assert_eq!(
        t.lookup(v6("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe")),
        None
    );
    assert_eq!(t.lookup(v6("::")), Some(4));
    assert_eq!(t.lookup(v6("::1")), Some(5));
    assert_eq!(t.lookup(v6("::2")), None);
    // A shorter prefix covering two host routes.
    ins(&mut t, v6("::"), 126, 6);
    assert_eq!(t.lookup(v6("::1")), Some(5));
    assert_eq!(t.lookup(v6("::2")), Some(6));
    assert_eq!(t.lookup(v6("::4")), None);
}

#[test]
fn allowed_host_bits_are_masked() {
    let mut t = AllowedIps::new();
    ins(&mut t, v4("10.0.0.1"), 8, 1);
    ins(&mut t, v6("fd00::1234"), 16, 2);
    assert_eq!(t.entries_for_peer(1), vec![(v4("10.0.0.0"), 8)]);
    assert_eq!(t.entries_for_peer(2), vec![(v6("fd00::"), 16)]);
    assert_eq!(t.lookup(v4("10.99.0.0")), Some(1));
    // The same prefix written with other host bits is the same prefix.
    ins(&mut t, v4("10.255.0.0"), 8, 3);
    assert_eq!(t.len(), 2);
    assert_eq!(t.lookup(v4("10.99.0.0")), Some(3));
    assert!(t.remove(v4("10.1.2.3"), 8, 3));
    assert!(t.remove(v6("fd00:ffff::"), 16, 2));
    assert!(t.is_empty());
}

#[test]
fn allowed_cidr_too_large_rejected() {
    let mut t = AllowedIps::new();
    assert_eq!(
        t.insert(v4("10.0.0.0"), 33, 1),
        Err(AllowedIpsError::CidrTooLarge { cidr: 33, max: 32 })
    );
    assert_eq!(
        t.insert(v6("fd00::"), 129, 1),
        Err(AllowedIpsError::CidrTooLarge {
            cidr: 129,
            max: 128
        })
    );
    assert_eq!(
        t.insert(v6("fd00::"), 255, 1),
        Err(AllowedIpsError::CidrTooLarge {
            cidr: 255,
            max: 128
        })
    );
    assert!(t.insert(v4("10.0.0.0"), 32, 1).is_ok());
    assert!(t.insert(v6("fd00::"), 128, 1).is_ok());
    assert_eq!(t.len(), 2);
    t.check_invariants();
}

#[test]
fn allowed_v4_mapped_v6_is_not_special() {
    let mut t = AllowedIps::new();
    ins(&mut t, v4("10.0.0.0"), 8, 1);
    assert_eq!(t.lookup(v6("::ffff:10.0.0.1")), None);
    ins(&mut t, v6("::ffff:0:0"), 96, 2);
    assert_eq!(t.lookup(v4("10.0.0.1")), Some(1));
    assert_eq!(t.lookup(v4("192.168.0.1")), None);
    assert_eq!(t.lookup(v6("::ffff:192.168.0.1")), Some(2));
}

#[test]
fn allowed_node_count_returns_to_zero() {
    let mut t = overlapping();
    ins(&mut t, v6("fd00::"), 8, 1);
    ins(&mut t, v6("fd00::1"), 128, 2);
    ins(&mut t, v6("2001:db8::"), 32, 3);
    assert!(t.node_count() > 0);
    assert!(t.remove(v4("10.1.2.3"), 32, 4));
    assert!(t.remove(v4("0.0.0.0"), 0, 1));
    assert_eq!(t.remove_peer(2), 2);
    assert_eq!(t.remove_peer(3), 2);
    assert!(t.remove(v6("fd00::"), 8, 1));
    t.check_invariants();
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 0);
    assert_eq!(t.lookup(v4("10.1.2.3")), None);
    // Usable again afterwards.
    ins(&mut t, v4("10.0.0.0"), 8, 1);
    assert_eq!(t.lookup(v4("10.0.0.1")), Some(1));
    t.clear();
    assert!(t.is_empty());
    assert_eq!(t.node_count(), 0);
    assert_eq!(t.lookup(v4("10.0.0.1")), None);
    assert!(t.entries_for_peer(1).is_empty());
}

#[test]
fn allowed_churn_does_not_grow_arena() {
    let mut t = AllowedIps::new();
    ins(&mut t, v4("10.0.0.0"), 8, 0);
    for round in 0u32..2000 {
        let a = round.to_be_bytes();
        let addr = v4(&format!("10.{}.{}.{}", a[1], a[2], a[3]));
        ins(&mut t, addr, 24 + (round % 9) as u8, 1 + round % 3);
        ins(&mut t, addr, 32, 7);
        if round % 2 == 0 {
            t.remove_peer(7);
        } else {
            assert!(t.remove(addr, 32, 7));
        }
        t.remove_peer(1 + round % 3);
        assert_eq!(t.len(), 1);
        assert_eq!(t.node_count(), 1);
    }
    assert!(t.nodes.len() <= 4, "arena grew to {}", t.nodes.len());
}

/// A million prefixes, as a hub with a big routing table has them:
/// half IPv4 /30s (in 10.0.0.0/8), half IPv6 /64s (in fd00::/16), in
/// a scrambled order (a multiplicative permutation), over 10 peers.
fn a_million_prefixes() -> impl Iterator<Item = (IpAddr, u8, u32)> {
    const N: u32 = 1_000_000;
    (0u32..1 << 20)
        .map(|j| j.wrapping_mul(0x9e37_79b1).wrapping_add(12_345) & ((1 << 20) - 1))
        .filter(|&i| i < N)
        .map(|i| {
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
        })
}

/// Heap per prefix at a million prefixes, counted by the test
/// allocator (spare arena capacity included). 48-byte nodes with a
/// parent index, fewer than two per prefix: about 100 bytes. (A layout
/// of 28/40-byte nodes without parent indices, at 71 bytes, is on the
/// `scale-memory` branch; it keeps one list per family, which loses
/// the cross-family insertion order `wg show` must keep.)
#[test]
fn allowed_memory_per_prefix_at_a_million() {
    let before = proto::alloc_count::Usage::now();
    let mut t = AllowedIps::<u32>::new();
    for (addr, cidr, peer) in a_million_prefixes() {
        t.insert(addr, cidr, peer).unwrap();
    }
    let per = proto::alloc_count::Usage::now().since(&before) / 1_000_000;
    println!("allowed IPs: {per} bytes per prefix at 1,000,000 prefixes");
    assert_eq!(t.len(), 1_000_000);
    assert_eq!(t.lookup(v4("10.0.0.3")), Some(0));
    assert_eq!(t.lookup(v4("10.0.0.4")), Some(2));
    assert_eq!(t.lookup(v6("fd00:0:0:1::9")), Some(3));
    assert_eq!(t.lookup(v6("fd01::")), None);
    assert!(per < 110, "{per} bytes per prefix");
}

#[test]
fn allowed_entries_come_in_insertion_order() {
    let mut t = AllowedIps::new();
    ins(&mut t, v6("fd00::"), 8, 1);
    ins(&mut t, v4("192.168.0.0"), 16, 1);
    ins(&mut t, v4("10.0.0.0"), 8, 1);
    ins(&mut t, v4("10.0.0.0"), 16, 1);
    ins(&mut t, v4("172.16.0.0"), 12, 2);
    // Inserted again, even for the same peer: moves to the end.
    ins(&mut t, v4("192.168.0.0"), 16, 1);
    assert_eq!(
        t.entries_for_peer(1),
        vec![
            (v6("fd00::"), 8),
            (v4("10.0.0.0"), 8),
            (v4("10.0.0.0"), 16),
            (v4("192.168.0.0"), 16),
        ]
    );
    assert!(t.entries_for_peer(3).is_empty());
    // Paged two at a time, the same list.
    let (first, next) = t.entries_from(1, None, 2);
    assert_eq!(first.len(), 2);
    let (second, end) = t.entries_from(1, next, 2);
    assert_eq!(end, None);
    assert_eq!([first, second].concat(), t.entries_for_peer(1));
    // A cursor into another peer's list yields nothing of it.
    assert_eq!(t.entries_from(2, next, 10), (Vec::new(), None));
}

// ---- property test against a naive reference ----

/// The obviously-correct table: a list scanned linearly.
#[derive(Default)]
struct Reference {
    /// (v6, masked left-aligned key, cidr, peer)
    entries: Vec<(bool, u128, u8, u8)>,
}

impl Reference {
    fn insert(&mut self, v6: bool, key: u128, cidr: u8, peer: u8) {
        let key = mask(key, cidr);
        // Inserting again moves the prefix to the end of its new
        // owner's list, which `entries` keeps as one global order.
        self.entries
            .retain(|e| !(e.0 == v6 && e.1 == key && e.2 == cidr));
        self.entries.push((v6, key, cidr, peer));
    }

    fn remove(&mut self, v6: bool, key: u128, cidr: u8, peer: u8) -> bool {
        let key = mask(key, cidr);
        let before = self.entries.len();
        self.entries
            .retain(|e| !(e.0 == v6 && e.1 == key && e.2 == cidr && e.3 == peer));
        before != self.entries.len()
    }

    fn remove_peer(&mut self, peer: u8) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.3 != peer);
        before - self.entries.len()
    }

    fn lookup(&self, v6: bool, key: u128) -> Option<u8> {
        self.entries
            .iter()
            .filter(|e| e.0 == v6 && mask(key, e.2) == e.1)
            .max_by_key(|e| e.2)
            .map(|e| e.3)
    }

    fn entries_for_peer(&self, peer: u8) -> Vec<(IpAddr, u8)> {
        self.entries
            .iter()
            .filter(|e| e.3 == peer)
            .map(|&(v6, key, cidr, _)| (to_addr(v6, key), cidr))
            .collect()
    }
}

fn to_addr(v6: bool, key: u128) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(key))
    } else {
        IpAddr::V4(Ipv4Addr::from((key >> 96) as u32))
    }
}

/// Where an operation's address comes from.
#[derive(Debug, Clone)]
enum Addr {
    /// Uniformly random (rarely inside anything but short prefixes).
    Fresh(u128),
    /// Inside (or near) an entry already in the table: the entry's
    /// first `cidr - shorten` bits, the rest from `noise`.
    Near {
        pick: usize,
        shorten: u8,
        noise: u128,
    },
}

#[derive(Debug, Clone)]
enum Op {
    Insert {
        v6: bool,
        addr: Addr,
        cidr: u8,
        peer: u8,
    },
    /// Remove an existing entry (`pick`), possibly claiming the wrong
    /// peer, or a random prefix.
    Remove {
        v6: bool,
        pick: Option<usize>,
        addr: u128,
        cidr: u8,
        peer: u8,
    },
    RemovePeer {
        peer: u8,
    },
    Lookup {
        v6: bool,
        addr: Addr,
    },
}

fn addr_strategy() -> impl Strategy<Value = Addr> {
    prop_oneof![
        1 => any::<u128>().prop_map(Addr::Fresh),
        4 => (
            any::<usize>(),
            prop_oneof![3 => Just(0u8), 1 => 0u8..=16],
            any::<u128>()
        )
            .prop_map(|(pick, shorten, noise)| Addr::Near {
                pick,
                shorten,
                noise
            }),
    ]
}

fn op_strategy(families: &'static [bool]) -> impl Strategy<Value = Op> {
    let family = proptest::sample::select(families);
    let cidr = any::<u8>();
    let peer = 0u8..5;
    prop_oneof![
        6 => (family.clone(), addr_strategy(), cidr, peer.clone())
            .prop_map(|(v6, addr, cidr, peer)| Op::Insert { v6, addr, cidr, peer }),
        2 => (
            family.clone(),
            proptest::option::weighted(0.8, any::<usize>()),
            any::<u128>(),
            cidr,
            peer.clone()
        )
            .prop_map(|(v6, pick, addr, cidr, peer)| Op::Remove {
                v6,
                pick,
                addr,
                cidr,
                peer
            }),
        1 => peer.prop_map(|peer| Op::RemovePeer { peer }),
        8 => (family, addr_strategy()).prop_map(|(v6, addr)| Op::Lookup { v6, addr }),
    ]
}

/// Turns an `Addr` into a left-aligned key of the right family.
fn resolve(reference: &Reference, v6: bool, addr: &Addr) -> u128 {
    let bits: u8 = if v6 { 128 } else { 32 };
    let family_mask = mask(u128::MAX, bits);
    let same_family: Vec<_> = reference.entries.iter().filter(|e| e.0 == v6).collect();
    let key = match *addr {
        Addr::Near {
            pick,
            shorten,
            noise,
        } if !same_family.is_empty() => {
            let e = same_family[pick % same_family.len()];
            let keep = e.2.saturating_sub(shorten);
            mask(e.1, keep) | (noise & !mask(u128::MAX, keep))
        }
        Addr::Near { noise, .. } => noise,
        Addr::Fresh(a) => a,
    };
    key & family_mask
}

fn run(ops: &[Op]) -> Result<(), TestCaseError> {
    let mut t = AllowedIps::<u8>::new();
    let mut r = Reference::default();
    for op in ops {
        match op {
            Op::Insert {
                v6,
                addr,
                cidr,
                peer,
            } => {
                let max = if *v6 { 128 } else { 32 };
                // Mostly valid lengths, sometimes too long.
                let cidr = if *cidr > 250 { *cidr } else { cidr % (max + 1) };
                let key = resolve(&r, *v6, addr);
                let got = t.insert(to_addr(*v6, key), cidr, *peer);
                if cidr > max {
                    prop_assert_eq!(got, Err(AllowedIpsError::CidrTooLarge { cidr, max }));
                } else {
                    prop_assert_eq!(got, Ok(()));
                    r.insert(*v6, key, cidr, *peer);
                }
            }
            Op::Remove {
                v6,
                pick,
                addr,
                cidr,
                peer,
            } => {
                let max = if *v6 { 128 } else { 32 };
                let same: Vec<_> = r.entries.iter().filter(|e| e.0 == *v6).collect();
                let (key, cidr) = match pick {
                    // Existing prefix, written with random host bits.
                    Some(p) if !same.is_empty() => {
                        let e = same[p % same.len()];
                        (e.1 | (addr & !mask(u128::MAX, e.2)), e.2)
                    }
                    _ => (*addr, cidr % (max + 1)),
                };
                let key = key & mask(u128::MAX, max);
                let want = r.remove(*v6, key, cidr, *peer);
                prop_assert_eq!(t.remove(to_addr(*v6, key), cidr, *peer), want);
            }
            Op::RemovePeer { peer } => {
                prop_assert_eq!(t.remove_peer(*peer), r.remove_peer(*peer));
            }
            Op::Lookup { v6, addr } => {
                let key = resolve(&r, *v6, addr);
                let want = r.lookup(*v6, key);
                prop_assert_eq!(t.lookup(to_addr(*v6, key)), want);
                let raw = if *v6 {
                    t.lookup_v6(key.to_be_bytes())
                } else {
                    t.lookup_v4(((key >> 96) as u32).to_be_bytes())
                };
                prop_assert_eq!(raw, want);
            }
        }
        t.check_invariants();
        prop_assert_eq!(t.len(), r.entries.len());
        prop_assert!(t.node_count() <= 2 * t.len());
    }
    for peer in 0..5 {
        prop_assert_eq!(t.entries_for_peer(peer), r.entries_for_peer(peer));
    }
    // The first and last address of every entry.
    for &(v6, key, cidr, _) in &r.entries {
        let family_mask = mask(u128::MAX, if v6 { 128 } else { 32 });
        let last = (key | !mask(u128::MAX, cidr)) & family_mask;
        for k in [key, last] {
            prop_assert_eq!(t.lookup(to_addr(v6, k)), r.lookup(v6, k));
        }
    }
    // Tearing everything down leaves no node behind.
    for peer in 0..5 {
        t.remove_peer(peer);
    }
    t.check_invariants();
    prop_assert!(t.is_empty());
    prop_assert_eq!(t.node_count(), 0);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn allowed_proptest_v4_matches_reference(
        ops in proptest::collection::vec(op_strategy(&[false]), 1..200)
    ) {
        run(&ops)?;
    }

    #[test]
    fn allowed_proptest_v6_matches_reference(
        ops in proptest::collection::vec(op_strategy(&[true]), 1..200)
    ) {
        run(&ops)?;
    }

    #[test]
    fn allowed_proptest_mixed_families_match_reference(
        ops in proptest::collection::vec(op_strategy(&[false, true]), 1..200)
    ) {
        run(&ops)?;
    }
}
