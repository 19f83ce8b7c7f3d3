//! Opening type-4 data packets (`wg_transport::data`, on the keypair slots
//! of `wg_transport::keypair` and the AEAD of `wg_transport::aead`) with
//! fixed keys.
//!
//! Random bytes almost never carry a valid Poly1305 tag, so a fuzzer
//! feeding raw packets would only ever test the checks in front of the
//! decryption. The input is therefore a small program ([`Op`]): raw
//! packets, but also packets the harness seals itself under the key of a
//! fuzzer-chosen receiver index and counter (optionally with one byte
//! flipped afterwards), replays, the clock moving on, new keypairs. That
//! reaches what lies behind the tag: the replay window's update, the
//! promotion of a responder's next keypair, the inner IP header.
//!
//! Checks: a packet the harness sealed under the right key never fails
//! to authenticate; a packet with a flipped byte, or one replayed after it
//! was accepted, is never accepted; an accepted packet's plaintext is what
//! was sealed; the inner-packet parser's length stays inside the
//! plaintext.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::wire::{DataHeader, DATA_HEADER_LEN};
use wg_transport::aead::{DataKey, TAG_LEN};
use wg_transport::data::{inner_packet, RecvError};
use wg_transport::keypair::{Keypair, KeypairSlots};

/// One step of a `data_open` input. Encoded by [`encode`], one tag byte
/// then the fields, integers little-endian.
#[derive(Debug, Clone)]
pub enum Op {
    /// Decapsulate these bytes as they are.
    Raw(Vec<u8>),
    /// Seal `plaintext` as the peer would, under the receive key of the
    /// keypair holding local index `index` (a key no keypair has, if none
    /// does) and `counter`; with `tamper` non-zero, flip the top bit of
    /// byte `(tamper - 1) % len` of the message; decapsulate.
    Seal {
        index: u32,
        counter: u64,
        tamper: u16,
        plaintext: Vec<u8>,
    },
    /// The clock moves on this many seconds.
    Time(u8),
    /// A new keypair from a finished handshake, with keys of its own.
    /// Skipped when a keypair holds `local` already: the transport
    /// refuses such an order (`wg_transport::orders`).
    Install {
        local: u32,
        remote: u32,
        initiator: bool,
    },
    /// Decapsulate again the last packet that was accepted.
    Replay,
    /// Drop the keypairs past their lifetime.
    Expire,
}

const OPS: u8 = 6;

/// The bytes of a `data_open` input running `ops`.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        match op {
            Op::Raw(bytes) => {
                out.push(0);
                out.extend_from_slice(&len16(bytes.len()).to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Op::Seal {
                index,
                counter,
                tamper,
                plaintext,
            } => {
                out.push(1);
                out.extend_from_slice(&index.to_le_bytes());
                out.extend_from_slice(&counter.to_le_bytes());
                out.extend_from_slice(&tamper.to_le_bytes());
                out.extend_from_slice(&len16(plaintext.len()).to_le_bytes());
                out.extend_from_slice(plaintext);
            }
            Op::Time(s) => out.extend_from_slice(&[2, *s]),
            Op::Install {
                local,
                remote,
                initiator,
            } => {
                out.push(3);
                out.extend_from_slice(&local.to_le_bytes());
                out.extend_from_slice(&remote.to_le_bytes());
                out.push(u8::from(*initiator));
            }
            Op::Replay => out.push(4),
            Op::Expire => out.push(5),
        }
    }
    out
}

fn len16(n: usize) -> u16 {
    u16::try_from(n).expect("seed field longer than 64 KiB")
}

/// The receive key (the peer's send key) of the `generation`th keypair
/// installed, on local index `index`: distinct for every keypair, as a
/// handshake's keys are, so a packet re-addressed to another index, or
/// replayed into a later session on the same index, never opens.
fn recv_key(index: u32, generation: u32) -> [u8; 32] {
    let b = index.to_le_bytes();
    let g = generation.to_le_bytes();
    let mut k = [0u8; 32];
    for (i, x) in k.iter_mut().enumerate() {
        *x = b[i % 4] ^ g[(i / 4) % 4].rotate_left(3) ^ (i as u8).wrapping_mul(31) ^ 0x5a;
    }
    k
}

/// A generation no keypair has: the key of a packet to an index nobody
/// holds.
const NO_GENERATION: u32 = u32::MAX;

/// The keypairs installed so far, and the receive key of each local index
/// a keypair holds.
struct Keys {
    generation: u32,
    held: HashMap<u32, [u8; 32]>,
}

impl Keys {
    fn install(
        &mut self,
        slots: &mut KeypairSlots,
        local: u32,
        remote: u32,
        initiator: bool,
        now: Instant,
    ) {
        self.forget_dropped(slots);
        if self.held.contains_key(&local) {
            return;
        }
        self.generation += 1;
        let recv = recv_key(local, self.generation);
        let send = recv.map(|x| !x);
        slots.install(Keypair::new(local, remote, &send, &recv, initiator, now));
        self.held.insert(local, recv);
    }

    /// Forgets the keys of indices no slot holds any longer.
    fn forget_dropped(&mut self, slots: &KeypairSlots) {
        self.held.retain(|&index, _| slots.find(index).is_some());
    }

    fn recv_key(&mut self, slots: &KeypairSlots, index: u32) -> [u8; 32] {
        self.forget_dropped(slots);
        self.held
            .get(&index)
            .copied()
            .unwrap_or_else(|| recv_key(index, NO_GENERATION))
    }
}

/// The keypairs every input starts with: an initiator's current keypair
/// (local index 1) and a responder's next one (local index 2), waiting for
/// its first packet.
pub const START_INDICES: [u32; 2] = [1, 2];

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// Runs one `data_open` input; see the module documentation. Valid: some
/// packet was accepted.
pub fn data_open(data: &[u8]) -> bool {
    let mut now = Instant::now();
    let mut slots = KeypairSlots::new();
    let mut keys = Keys {
        generation: 0,
        held: HashMap::new(),
    };
    keys.install(&mut slots, START_INDICES[0], 101, true, now);
    keys.install(&mut slots, START_INDICES[1], 102, false, now);
    let mut last_accepted: Option<Vec<u8>> = None;
    let mut accepted = false;
    let mut r = Reader(data);

    while let Some([tag]) = r.take::<1>() {
        match tag % OPS {
            0 => {
                let Some(len) = r.take::<2>() else { break };
                let mut packet = r.bytes(usize::from(u16::from_le_bytes(len))).to_vec();
                let original = packet.clone();
                if open(&mut slots, now, &mut packet, None).is_ok() {
                    last_accepted = Some(original);
                    accepted = true;
                }
            }
            1 => {
                let (Some(index), Some(counter), Some(tamper), Some(len)) =
                    (r.take::<4>(), r.take::<8>(), r.take::<2>(), r.take::<2>())
                else {
                    break;
                };
                let index = u32::from_le_bytes(index);
                let counter = u64::from_le_bytes(counter);
                let tamper = u16::from_le_bytes(tamper);
                let plaintext = r.bytes(usize::from(u16::from_le_bytes(len))).to_vec();

                let mut packet = vec![0u8; DATA_HEADER_LEN + plaintext.len() + TAG_LEN];
                let (header, rest) = packet
                    .split_first_chunk_mut::<DATA_HEADER_LEN>()
                    .expect("room for the header");
                DataHeader {
                    receiver: index,
                    counter,
                }
                .write(header);
                let (body, tag) = rest
                    .split_last_chunk_mut::<TAG_LEN>()
                    .expect("room for the tag");
                body.copy_from_slice(&plaintext);
                DataKey::new(&keys.recv_key(&slots, index))
                    .seal_in_place(counter, body, tag)
                    .expect("a datagram-sized seal");
                if tamper != 0 {
                    let at = usize::from(tamper - 1) % packet.len();
                    packet[at] ^= 0x80;
                }
                let original = packet.clone();
                let res = open(&mut slots, now, &mut packet, Some(&plaintext));
                if tamper == 0 {
                    assert_ne!(res, Err(RecvError::Auth), "a genuine packet failed");
                } else {
                    assert!(res.is_err(), "a tampered packet was accepted");
                }
                if res.is_ok() {
                    last_accepted = Some(original);
                    accepted = true;
                }
            }
            2 => {
                let Some([s]) = r.take::<1>() else { break };
                now += Duration::from_secs(u64::from(s));
            }
            3 => {
                let (Some(local), Some(remote), Some([initiator])) =
                    (r.take::<4>(), r.take::<4>(), r.take::<1>())
                else {
                    break;
                };
                let local = u32::from_le_bytes(local);
                let remote = u32::from_le_bytes(remote);
                keys.install(&mut slots, local, remote, initiator & 1 == 1, now);
            }
            4 => {
                if let Some(mut packet) = last_accepted.clone() {
                    let res = open(&mut slots, now, &mut packet, None);
                    assert!(res.is_err(), "a replayed packet was accepted");
                }
            }
            _ => {
                slots.drop_expired(now);
            }
        }
    }
    accepted
}

/// Decapsulates `packet` and, when it is accepted, checks the plaintext
/// (against `sealed`, if the harness sealed it) and parses the inner
/// packet as the transport would.
fn open(
    slots: &mut KeypairSlots,
    now: Instant,
    packet: &mut [u8],
    sealed: Option<&[u8]>,
) -> Result<(), RecvError> {
    let d = slots.decapsulate(now, packet)?;
    assert!(d.plaintext.start <= d.plaintext.end && d.plaintext.end <= packet.len());
    let plaintext = &packet[d.plaintext.clone()];
    if let Some(sealed) = sealed {
        assert_eq!(plaintext, sealed, "plaintext changed in transit");
    }
    assert_eq!(d.is_keepalive, plaintext.is_empty());
    if let Ok(inner) = inner_packet(plaintext) {
        assert!(inner.len <= plaintext.len());
    }
    Ok(())
}
