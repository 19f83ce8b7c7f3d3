//! Type-4 data messages: encapsulation and decapsulation.
//!
//! The transport role calls [`KeypairSlots::encapsulate`] (or
//! [`KeypairSlots::encapsulate_in_place`]) for each packet read from the tun
//! device and routed to a peer, and [`KeypairSlots::decapsulate`] for each
//! type-4 message read from UDP, then [`inner_packet`] on the plaintext for
//! the allowed-IPs source check and the length to write to the tun device.
//!
//! Wire layout (all integers little-endian):
//!
//! ```text
//! 0       4                8                16                      16+n  16+n+16
//! | type=4 | receiver index | counter (u64)  | ciphertext (n bytes)  | tag |
//! ```
//!
//! The plaintext is zero-padded to a multiple of 16 bytes before
//! encryption (a zero-length keepalive stays empty), which hides the exact
//! inner length; the inner IP header tells the receiver where the packet
//! ends. The counter is also the AEAD nonce (see [`crate::aead`]).
//!
//! Every length and offset here comes from the packet, so nothing indexes
//! without a check: a malformed packet is an error to count, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::time::Instant;

use crate::aead::{DataKey, TAG_LEN};
use crate::keypair::{Keypair, KeypairSlots, Slot};

pub use proto::wire::{DataHeader, DATA_HEADER_LEN, DATA_MIN_LEN as MIN_DATA_LEN};

/// Plaintexts are zero-padded to a multiple of this.
pub const PADDING_MULTIPLE: usize = 16;

/// The plaintext length after padding (for lengths a slice can have;
/// those cannot overflow).
pub const fn padded_len(plaintext_len: usize) -> usize {
    plaintext_len.next_multiple_of(PADDING_MULTIPLE)
}

/// The length of the data message carrying `plaintext_len` bytes.
pub const fn message_len(plaintext_len: usize) -> usize {
    DATA_HEADER_LEN + padded_len(plaintext_len) + TAG_LEN
}

/// Send counters taken for a batch ([`KeypairSlots::reserve_send`]).
#[derive(Debug)]
pub struct Reserved<'a> {
    /// The current keypair's send key.
    pub key: &'a DataKey,
    /// The peer's index for that keypair.
    pub receiver: u32,
    /// Counters `first..first + count` are this batch's.
    pub first: u64,
    pub count: usize,
}

/// The padded plaintext length and the message length for a
/// `plaintext_len`-byte packet in a tunnel of `mtu` (see
/// [`KeypairSlots::encapsulate_in_place_mtu`]); `None` on overflow.
fn padded_and_len(plaintext_len: usize, mtu: usize) -> Option<(usize, usize)> {
    let padded = plaintext_len
        .checked_next_multiple_of(PADDING_MULTIPLE)?
        .min(mtu.max(plaintext_len));
    Some((padded, padded.checked_add(DATA_HEADER_LEN + TAG_LEN)?))
}

/// Seals a data message with a counter already taken
/// ([`KeypairSlots::reserve_send`]): `buf` is laid out as for
/// [`KeypairSlots::encapsulate_in_place_mtu`], and the bytes written are
/// exactly those that function writes for the same counter. Touches
/// nothing but `buf`, so the messages of a batch may be sealed on any
/// thread, in any order.
pub fn seal_reserved(
    key: &DataKey,
    receiver: u32,
    counter: u64,
    buf: &mut [u8],
    plaintext_len: usize,
    mtu: usize,
) -> Result<usize, SendError> {
    let (padded, len) = padded_and_len(plaintext_len, mtu).ok_or(SendError::BufferTooSmall)?;
    let msg = buf.get_mut(..len).ok_or(SendError::BufferTooSmall)?;
    let (header, rest) = msg
        .split_first_chunk_mut::<DATA_HEADER_LEN>()
        .ok_or(SendError::BufferTooSmall)?;
    let (body, tag) = rest
        .split_last_chunk_mut::<TAG_LEN>()
        .ok_or(SendError::BufferTooSmall)?;
    if let Some(padding) = body.get_mut(plaintext_len..padded) {
        padding.fill(0);
    }
    key.seal_in_place(counter, body, tag)
        .map_err(|_| SendError::TooLong)?;
    DataHeader { receiver, counter }.write(header);
    Ok(len)
}

/// Opens a data message whose checks [`KeypairSlots::check_open`] made:
/// authenticates and decrypts `msg` (the whole datagram) in place with
/// `key` and `counter`. Touches nothing but `msg`, so the datagrams of a
/// batch may be opened on any thread; the verdict then goes to
/// [`KeypairSlots::finish_open`], in order.
pub fn open_checked(key: &DataKey, counter: u64, msg: &mut [u8]) -> bool {
    let Some((body, tag)) = msg
        .get_mut(DATA_HEADER_LEN..)
        .and_then(|rest| rest.split_last_chunk_mut::<TAG_LEN>())
    else {
        return false;
    };
    key.open_in_place(counter, body, tag).is_ok()
}

/// What [`KeypairSlots::check_open`] found: the key to open a datagram
/// with, and what [`KeypairSlots::finish_open`] needs.
#[derive(Debug)]
pub struct ToOpen<'a> {
    pub key: &'a DataKey,
    pub local_index: u32,
    pub counter: u64,
}

/// Why a packet could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// No confirmed keypair: none at all, or only a responder's `next`
    /// still waiting for the peer's first packet. Stage the packet and make
    /// sure a handshake is under way.
    #[error("no usable keypair")]
    NoKeypair,
    /// The current keypair is past its time or message limit.
    #[error("keypair expired")]
    Expired,
    /// The output buffer cannot hold the message.
    #[error("buffer too small for the data message")]
    BufferTooSmall,
    /// The plaintext is longer than the cipher can seal (far beyond any
    /// datagram, so only a caller bug reaches this).
    #[error("plaintext too long")]
    TooLong,
}

/// Why a received data message was dropped. Each is counted by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Shorter than a keepalive or not of type 4.
    #[error("malformed data message")]
    Malformed,
    /// No slot holds a keypair with this receiver index.
    #[error("unknown receiver index")]
    UnknownIndex,
    /// The keypair is past its time or message limit.
    #[error("keypair expired")]
    Expired,
    /// The counter was seen already, is too old for the window, or is at
    /// the limit.
    #[error("replayed or stale counter")]
    Replay,
    /// The tag did not authenticate.
    #[error("authentication failed")]
    Auth,
}

/// An authenticated, decrypted data message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decapsulated {
    /// Where the (still padded) plaintext lies in the packet buffer.
    pub plaintext: Range<usize>,
    /// Empty plaintext: a keepalive, nothing to write to the tun device.
    pub is_keepalive: bool,
    /// This packet was the first under a responder's `next` keypair, which
    /// is now current (the handshake role learns the session is confirmed
    /// and packets staged for the peer can go).
    pub confirmed_next: bool,
    /// The local index of the keypair that authenticated the packet.
    pub local_index: u32,
    /// The local index of a keypair dropped by the confirmation, to free
    /// in the index table.
    pub released_index: Option<u32>,
    /// The message's counter.
    pub counter: u64,
}

impl KeypairSlots {
    /// Encrypts `plaintext` as a data message into `out` and returns the
    /// message length ([`message_len`]). Takes the next send counter of the
    /// current keypair.
    pub fn encapsulate(
        &mut self,
        now: Instant,
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, SendError> {
        // Check the whole message fits before copying, so a short buffer
        // costs neither a copy nor a counter.
        if out.len() < message_len(plaintext.len()) {
            return Err(SendError::BufferTooSmall);
        }
        out.get_mut(DATA_HEADER_LEN..DATA_HEADER_LEN + plaintext.len())
            .ok_or(SendError::BufferTooSmall)?
            .copy_from_slice(plaintext);
        self.encapsulate_in_place(now, out, plaintext.len())
    }

    /// Encrypts in place: `buf` holds [`DATA_HEADER_LEN`] bytes of headroom,
    /// then `plaintext_len` bytes of plaintext, then at least room for the
    /// padding and the tag (`buf.len() >= message_len(plaintext_len)`). The
    /// header, padding and tag are written around the plaintext, which is
    /// encrypted where it lies; returns the message length. This is the
    /// form for batched sending, where packets are read from the tun device
    /// straight into a preallocated buffer at the right offset.
    pub fn encapsulate_in_place(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        plaintext_len: usize,
    ) -> Result<usize, SendError> {
        self.encapsulate_in_place_mtu(now, buf, plaintext_len, usize::MAX)
    }

    /// [`encapsulate_in_place`](Self::encapsulate_in_place), with the
    /// padding stopping at the tunnel's `mtu`, as Linux and wireguard-go
    /// pad: a full-sized packet (1420 bytes) is sent as a 1452-byte
    /// datagram, which fits a 1500-byte IPv6 path, rather than padded to
    /// 1424 and fragmented (or refused by UDP GSO). A packet longer than
    /// the MTU is not padded.
    pub fn encapsulate_in_place_mtu(
        &mut self,
        now: Instant,
        buf: &mut [u8],
        plaintext_len: usize,
        mtu: usize,
    ) -> Result<usize, SendError> {
        // The caller's length is not bounded by a slice, so the arithmetic
        // is checked; anything that overflows cannot fit the buffer anyway.
        let padded = plaintext_len
            .checked_next_multiple_of(PADDING_MULTIPLE)
            .ok_or(SendError::BufferTooSmall)?
            .min(mtu.max(plaintext_len));
        let len = padded
            .checked_add(DATA_HEADER_LEN + TAG_LEN)
            .ok_or(SendError::BufferTooSmall)?;
        let msg = buf.get_mut(..len).ok_or(SendError::BufferTooSmall)?;
        let (header, rest) = msg
            .split_first_chunk_mut::<DATA_HEADER_LEN>()
            .ok_or(SendError::BufferTooSmall)?;
        let (body, tag) = rest
            .split_last_chunk_mut::<TAG_LEN>()
            .ok_or(SendError::BufferTooSmall)?;
        // A responder's next keypair is deliberately not considered: the
        // peer may not have it yet.
        let keypair = self.get_mut(Slot::Current).ok_or(SendError::NoKeypair)?;
        let counter = keypair.take_send_counter(now).ok_or(SendError::Expired)?;
        if let Some(padding) = body.get_mut(plaintext_len..padded) {
            padding.fill(0);
        }
        keypair
            .send_key()
            .seal_in_place(counter, body, tag)
            .map_err(|_| SendError::TooLong)?;
        DataHeader {
            receiver: keypair.remote_index(),
            counter,
        }
        .write(header);
        Ok(len)
    }

    /// Takes up to `n` consecutive send counters of the current keypair
    /// at once, for a batch sealed in parallel ([`seal_reserved`]):
    /// returns the key and receiver index to seal with, the first counter
    /// and how many were taken (fewer than `n` only at the message limit,
    /// where sealing one at a time would stop too). The counters are
    /// spent whether or not they are used, as a sealed packet the kernel
    /// refuses spends its own.
    pub fn reserve_send(&mut self, now: Instant, n: usize) -> Result<Reserved<'_>, SendError> {
        let keypair = self.get_mut(Slot::Current).ok_or(SendError::NoKeypair)?;
        let first = keypair.take_send_counter(now).ok_or(SendError::Expired)?;
        let mut count = 1;
        while count < n && keypair.take_send_counter(now).is_some() {
            count += 1;
        }
        Ok(Reserved {
            key: keypair.send_key(),
            receiver: keypair.remote_index(),
            first,
            count,
        })
    }

    /// Authenticates and decrypts a data message in place. On success the
    /// plaintext (still padded: see [`inner_packet`]) lies in
    /// `packet[result.plaintext]`; on failure the packet contents are
    /// unspecified and the slots unchanged.
    ///
    /// Order matters: the cheap checks (index, expiry, replay window) come
    /// before the decryption, and the counter is marked seen only after
    /// the tag verified, so forged packets cannot poison the window.
    pub fn decapsulate(
        &mut self,
        now: Instant,
        packet: &mut [u8],
    ) -> Result<Decapsulated, RecvError> {
        let header = DataHeader::parse(packet).map_err(|_| RecvError::Malformed)?;
        let slot = self.find(header.receiver).ok_or(RecvError::UnknownIndex)?;
        let keypair = self.get_mut(slot).ok_or(RecvError::UnknownIndex)?;
        receivable(keypair, now, header.counter)?;
        let (body, tag) = packet
            .get_mut(DATA_HEADER_LEN..)
            .and_then(|rest| rest.split_last_chunk_mut::<TAG_LEN>())
            .ok_or(RecvError::Malformed)?;
        let plaintext_len = body.len();
        keypair
            .recv_key()
            .open_in_place(header.counter, body, tag)
            .map_err(|_| RecvError::Auth)?;
        let local_index = keypair.local_index();
        self.accept(slot, local_index, header.counter, plaintext_len)
    }

    /// The first half of [`decapsulate`](Self::decapsulate), for a batch
    /// opened in parallel: the checks before the decryption (shape, index,
    /// expiry, replay window), changing nothing. The datagram is then
    /// opened with [`open_checked`] on any thread, and
    /// [`finish_open`](Self::finish_open) decides, in the batch's order.
    pub fn check_open(&self, now: Instant, packet: &[u8]) -> Result<ToOpen<'_>, RecvError> {
        let header = DataHeader::parse(packet).map_err(|_| RecvError::Malformed)?;
        let keypair = [self.current(), self.previous(), self.next()]
            .into_iter()
            .flatten()
            .find(|k| k.local_index() == header.receiver)
            .ok_or(RecvError::UnknownIndex)?;
        receivable(keypair, now, header.counter)?;
        Ok(ToOpen {
            key: keypair.recv_key(),
            local_index: header.receiver,
            counter: header.counter,
        })
    }

    /// The second half: what [`decapsulate`](Self::decapsulate) would
    /// have answered for a `len`-byte datagram with `counter` under
    /// keypair `local_index`, at its turn in the batch, given whether it
    /// was opened (`opened`: [`open_checked`] succeeded with this key). The
    /// checks are made again against the slots as the packets before it
    /// left them (a replay of an earlier packet of the same batch, a
    /// keypair a confirmation dropped), in `decapsulate`'s order, so
    /// every verdict, counted drop and window update is the serial
    /// path's; a packet opened under another key than this keypair's
    /// (which cannot happen within a batch) counts as not opened.
    pub fn finish_open(
        &mut self,
        now: Instant,
        local_index: u32,
        counter: u64,
        len: usize,
        opened: Option<*const DataKey>,
    ) -> Result<Decapsulated, RecvError> {
        let slot = self.find(local_index).ok_or(RecvError::UnknownIndex)?;
        let keypair = self.get_mut(slot).ok_or(RecvError::UnknownIndex)?;
        receivable(keypair, now, counter)?;
        let plaintext_len = len
            .checked_sub(DATA_HEADER_LEN + TAG_LEN)
            .ok_or(RecvError::Malformed)?;
        // Compared by address only: the key it was opened with may be
        // gone by now (then so is its keypair, and `find` failed above).
        if !opened.is_some_and(|k| std::ptr::eq(k, keypair.recv_key())) {
            return Err(RecvError::Auth);
        }
        self.accept(slot, local_index, counter, plaintext_len)
    }

    /// The end both receive paths share once a packet authenticated: the
    /// counter enters the window (refused if it is there already), and a
    /// packet on the next keypair confirms it.
    fn accept(
        &mut self,
        slot: Slot,
        local_index: u32,
        counter: u64,
        plaintext_len: usize,
    ) -> Result<Decapsulated, RecvError> {
        let keypair = self.get_mut(slot).ok_or(RecvError::UnknownIndex)?;
        if !keypair.replay_mut().accept(counter) {
            return Err(RecvError::Replay);
        }
        let (confirmed_next, released_index) = if slot == Slot::Next {
            (true, self.confirm_next())
        } else {
            (false, None)
        };
        Ok(Decapsulated {
            plaintext: DATA_HEADER_LEN..DATA_HEADER_LEN + plaintext_len,
            is_keepalive: plaintext_len == 0,
            confirmed_next,
            local_index,
            released_index,
            counter,
        })
    }
}

/// What the transport needs from a decrypted inner IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InnerPacket {
    /// The packet's true length, from its header: the padding after it is
    /// not written to the tun device.
    pub len: usize,
    /// Source address, checked against the sending peer's allowed IPs.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

/// Why a decrypted plaintext is not a usable IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InnerPacketError {
    /// Shorter than the fixed IP header (this includes an empty keepalive,
    /// which the caller handles before asking).
    #[error("truncated inner packet")]
    Truncated,
    /// Neither IPv4 nor IPv6.
    #[error("inner packet is not IPv4 or IPv6")]
    BadVersion,
    /// The header's length is shorter than the header or longer than the
    /// plaintext.
    #[error("inner packet length inconsistent with its header")]
    BadLength,
}

const IPV4_MIN_HEADER: usize = 20;
const IPV6_HEADER: usize = 40;

/// Reads the version, length and addresses of a decrypted (padded) inner
/// packet.
pub fn inner_packet(plaintext: &[u8]) -> Result<InnerPacket, InnerPacketError> {
    let first = *plaintext.first().ok_or(InnerPacketError::Truncated)?;
    let be16 = |at: usize| {
        plaintext
            .get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(InnerPacketError::Truncated)
    };
    match first >> 4 {
        4 => {
            let hdr = plaintext
                .first_chunk::<IPV4_MIN_HEADER>()
                .ok_or(InnerPacketError::Truncated)?;
            let ihl = usize::from(first & 0x0f) * 4;
            let len = usize::from(be16(2)?);
            if ihl < IPV4_MIN_HEADER || len < ihl || len > plaintext.len() {
                return Err(InnerPacketError::BadLength);
            }
            let src = Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15]);
            let dst = Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19]);
            Ok(InnerPacket {
                len,
                src: src.into(),
                dst: dst.into(),
            })
        }
        6 => {
            let hdr = plaintext
                .first_chunk::<IPV6_HEADER>()
                .ok_or(InnerPacketError::Truncated)?;
            let len = IPV6_HEADER + usize::from(be16(4)?);
            if len > plaintext.len() {
                return Err(InnerPacketError::BadLength);
            }
            let addr = |at: usize| {
                let mut a = [0u8; 16];
                a.copy_from_slice(&hdr[at..at + 16]);
                Ipv6Addr::from(a)
            };
            Ok(InnerPacket {
                len,
                src: addr(8).into(),
                dst: addr(24).into(),
            })
        }
        _ => Err(InnerPacketError::BadVersion),
    }
}

/// The checks before any decryption, on every receive path: the keypair
/// is still usable and the counter could still enter its window.
fn receivable(keypair: &Keypair, now: Instant, counter: u64) -> Result<(), RecvError> {
    if keypair.is_expired(now) {
        return Err(RecvError::Expired);
    }
    if !keypair.replay().would_accept(counter) {
        return Err(RecvError::Replay);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keypair::{Keypair, REJECT_AFTER_TIME};
    use std::time::Duration;

    const I2R: [u8; 32] = [0x11; 32];
    const R2I: [u8; 32] = [0x22; 32];

    /// An initiator (local index 1) and a responder (local index 2) after
    /// one handshake: the initiator's keypair is current, the responder's
    /// waits in next.
    fn pair(t: Instant) -> (KeypairSlots, KeypairSlots) {
        let mut a = KeypairSlots::new();
        let mut b = KeypairSlots::new();
        a.install(Keypair::new(1, 2, &I2R, &R2I, true, t));
        b.install(Keypair::new(2, 1, &R2I, &I2R, false, t));
        (a, b)
    }

    fn seal(s: &mut KeypairSlots, t: Instant, pt: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; message_len(pt.len()) + 7];
        let n = match s.encapsulate(t, pt, &mut out) {
            Ok(n) => n,
            Err(e) => panic!("encapsulate: {e}"),
        };
        out.truncate(n);
        out
    }

    #[test]
    fn round_trip_and_padding() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        for (i, len) in [0usize, 1, 15, 16, 17, 1420].into_iter().enumerate() {
            let pt: Vec<u8> = (0..len).map(|j| (j * 7 + 3) as u8).collect();
            let mut msg = seal(&mut a, t, &pt);
            let padded = [0, 16, 16, 16, 32, 1424][i];
            assert_eq!(msg.len(), DATA_HEADER_LEN + padded + TAG_LEN, "len {len}");
            assert_eq!(msg[0..4], 4u32.to_le_bytes());
            assert_eq!(msg[4..8], 2u32.to_le_bytes());
            assert_eq!(msg[8..16], (i as u64).to_le_bytes());
            let d = match b.decapsulate(t, &mut msg) {
                Ok(d) => d,
                Err(e) => panic!("decapsulate {len}: {e}"),
            };
            assert_eq!(d.plaintext.len(), padded);
            assert_eq!(d.is_keepalive, len == 0);
            assert_eq!(d.local_index, 2);
            assert_eq!(d.counter, i as u64);
            let got = &msg[d.plaintext];
            assert_eq!(&got[..len], &pt[..]);
            assert!(got[len..].iter().all(|&x| x == 0));
        }
    }

    #[test]
    fn padding_stops_at_the_mtu() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        // (plaintext, MTU) -> padded: as Linux's calculate_skb_padding.
        for (len, mtu, padded) in [
            (1420, 1420, 1420),
            (1419, 1420, 1420),
            (1404, 1420, 1408),
            (1410, 1412, 1412),
            (1500, 1420, 1500),
            (0, 1420, 0),
        ] {
            let mut buf = vec![0u8; message_len(len) + 16];
            let n = a.encapsulate_in_place_mtu(t, &mut buf, len, mtu);
            assert_eq!(n, Ok(DATA_HEADER_LEN + padded + TAG_LEN), "{len} at {mtu}");
            let d = b.decapsulate(t, &mut buf[..DATA_HEADER_LEN + padded + TAG_LEN]);
            assert_eq!(d.map(|d| d.plaintext.len()), Ok(padded));
        }
    }

    #[test]
    fn in_place_matches_copying_form() {
        let t = Instant::now();
        let (mut a1, _) = pair(t);
        let (mut a2, _) = pair(t);
        let pt = b"hello, in-place world";
        let copied = seal(&mut a1, t, pt);
        let mut buf = vec![0xeeu8; 128];
        buf[DATA_HEADER_LEN..DATA_HEADER_LEN + pt.len()].copy_from_slice(pt);
        let n = a2.encapsulate_in_place(t, &mut buf, pt.len());
        assert_eq!(n, Ok(copied.len()));
        assert_eq!(&buf[..copied.len()], &copied[..]);
    }

    #[test]
    fn buffer_too_small_takes_no_counter() {
        let t = Instant::now();
        let (mut a, _) = pair(t);
        let mut out = vec![0u8; message_len(17) - 1];
        assert_eq!(
            a.encapsulate(t, &[0u8; 17], &mut out),
            Err(SendError::BufferTooSmall)
        );
        assert_eq!(
            a.encapsulate_in_place(t, &mut out, 17),
            Err(SendError::BufferTooSmall)
        );
        assert_eq!(a.current().map(Keypair::send_counter), Some(0));
    }

    #[test]
    fn tampered_byte_is_auth_error() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        let msg = seal(&mut a, t, &[0x45; 100]);
        for at in [DATA_HEADER_LEN, DATA_HEADER_LEN + 50, msg.len() - 1, 8] {
            let mut bad = msg.clone();
            bad[at] ^= 0x01;
            assert_eq!(
                b.decapsulate(t, &mut bad),
                Err(RecvError::Auth),
                "byte {at}"
            );
        }
        // The failures did not mark the counter: the genuine packet passes.
        let mut good = msg.clone();
        assert!(b.decapsulate(t, &mut good).is_ok());
    }

    #[test]
    fn replayed_packet_rejected() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        let msg = seal(&mut a, t, b"once");
        let mut first = msg.clone();
        assert!(b.decapsulate(t, &mut first).is_ok());
        let mut again = msg.clone();
        assert_eq!(b.decapsulate(t, &mut again), Err(RecvError::Replay));
    }

    #[test]
    fn wrong_index_and_malformed() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        let mut msg = seal(&mut a, t, b"x");
        msg[4..8].copy_from_slice(&99u32.to_le_bytes());
        assert_eq!(b.decapsulate(t, &mut msg), Err(RecvError::UnknownIndex));

        let mut short = vec![4u8, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(b.decapsulate(t, &mut short), Err(RecvError::Malformed));
        let mut empty = Vec::new();
        assert_eq!(b.decapsulate(t, &mut empty), Err(RecvError::Malformed));
        let mut msg = seal(&mut a, t, b"y");
        msg[0] = 1;
        assert_eq!(b.decapsulate(t, &mut msg), Err(RecvError::Malformed));
        let mut msg = seal(&mut a, t, b"z");
        msg[3] = 1;
        assert_eq!(b.decapsulate(t, &mut msg), Err(RecvError::Malformed));
    }

    #[test]
    fn expired_after_reject_after_time() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        let late = t + REJECT_AFTER_TIME;
        let almost = late - Duration::from_millis(1);
        let mut msg = seal(&mut a, almost, b"just in time");
        assert_eq!(
            a.encapsulate(late, b"too late", &mut [0u8; 64]),
            Err(SendError::Expired)
        );
        let mut copy = msg.clone();
        assert_eq!(b.decapsulate(late, &mut copy), Err(RecvError::Expired));
        assert!(b.decapsulate(almost, &mut msg).is_ok());
    }

    #[test]
    fn responder_next_confirmed_by_first_data_then_used() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        // Until the initiator has spoken, the responder cannot send.
        assert_eq!(
            b.encapsulate(t, b"early", &mut [0u8; 64]),
            Err(SendError::NoKeypair)
        );
        assert!(b.current().is_none());

        let mut ka = seal(&mut a, t, b"");
        let d = match b.decapsulate(t, &mut ka) {
            Ok(d) => d,
            Err(e) => panic!("decapsulate: {e}"),
        };
        assert!(d.confirmed_next);
        assert!(d.is_keepalive);
        assert_eq!(d.released_index, None);
        assert_eq!(b.current().map(Keypair::local_index), Some(2));
        assert!(b.next().is_none());

        let mut reply = seal(&mut b, t, b"now I can");
        assert_eq!(reply[4..8], 1u32.to_le_bytes());
        let d = match a.decapsulate(t, &mut reply) {
            Ok(d) => d,
            Err(e) => panic!("decapsulate reply: {e}"),
        };
        assert_eq!(&reply[d.plaintext][..9], b"now I can");
        assert!(!d.confirmed_next);

        // A second packet under the same keypair confirms nothing more.
        let mut more = seal(&mut a, t, b"more");
        let d = b.decapsulate(t, &mut more).map(|d| d.confirmed_next);
        assert_eq!(d, Ok(false));
    }

    #[test]
    fn rekey_keeps_previous_for_packets_in_flight() {
        let t = Instant::now();
        let (mut a, mut b) = pair(t);
        let mut ka = seal(&mut a, t, b"");
        assert!(b.decapsulate(t, &mut ka).is_ok());
        let in_flight = seal(&mut b, t, b"old session");

        // The responder starts the second handshake this time.
        let t2 = t + Duration::from_secs(60);
        b.install(Keypair::new(3, 4, &[0x33; 32], &[0x44; 32], true, t2));
        a.install(Keypair::new(4, 3, &[0x44; 32], &[0x33; 32], false, t2));
        // a still sends on the old keypair until b's first packet arrives.
        assert_eq!(seal(&mut a, t2, b"")[4..8], 2u32.to_le_bytes());
        let mut new = seal(&mut b, t2, b"new session");
        let d = a.decapsulate(t2, &mut new);
        assert_eq!(
            d.as_ref().map(|d| (d.confirmed_next, d.local_index)),
            Ok((true, 4))
        );
        // The old keypair, now previous, still opens what was in flight.
        let mut old = in_flight.clone();
        assert!(a.decapsulate(t2, &mut old).is_ok());
        assert_eq!(seal(&mut a, t2, b"")[4..8], 3u32.to_le_bytes());
    }

    fn ipv4(total_len: u16, ihl: u8) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(total_len).max(20)];
        p[0] = 0x40 | ihl;
        p[2..4].copy_from_slice(&total_len.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[192, 168, 7, 9]);
        p
    }

    fn ipv6(payload_len: u16) -> Vec<u8> {
        let mut p = vec![0u8; 40 + usize::from(payload_len)];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&payload_len.to_be_bytes());
        p[6] = 58;
        p[7] = 64;
        p[8..24].copy_from_slice(
            &"fd00::1"
                .parse::<Ipv6Addr>()
                .map_or([0; 16], |a| a.octets()),
        );
        p[24..40].copy_from_slice(
            &"2001:db8::2"
                .parse::<Ipv6Addr>()
                .map_or([0; 16], |a| a.octets()),
        );
        p
    }

    #[test]
    fn inner_packet_ipv4() {
        let mut p = ipv4(28, 5);
        p.extend_from_slice(&[0; 4]); // padding to 32
        let ip = inner_packet(&p);
        assert_eq!(
            ip,
            Ok(InnerPacket {
                len: 28,
                src: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
                dst: IpAddr::V4(Ipv4Addr::new(192, 168, 7, 9)),
            })
        );
        // With options (IHL 6).
        let p = ipv4(24, 6);
        assert_eq!(inner_packet(&p).map(|i| i.len), Ok(24));
    }

    #[test]
    fn inner_packet_ipv6() {
        let mut p = ipv6(8);
        p.extend_from_slice(&[0; 16]);
        let ip = inner_packet(&p);
        assert_eq!(
            ip,
            Ok(InnerPacket {
                len: 48,
                src: IpAddr::V6("fd00::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)),
                dst: IpAddr::V6("2001:db8::2".parse().unwrap_or(Ipv6Addr::UNSPECIFIED)),
            })
        );
        assert_eq!(inner_packet(&ipv6(0)).map(|i| i.len), Ok(40));
    }

    #[test]
    fn inner_packet_truncated_or_inconsistent() {
        use InnerPacketError::*;
        assert_eq!(inner_packet(&[]), Err(Truncated));
        assert_eq!(inner_packet(&ipv4(20, 5)[..19]), Err(Truncated));
        assert_eq!(inner_packet(&ipv6(0)[..39]), Err(Truncated));
        // Header claims more than was received.
        assert_eq!(inner_packet(&ipv4(60, 5)[..40]), Err(BadLength));
        assert_eq!(inner_packet(&ipv6(20)[..50]), Err(BadLength));
        // Total length shorter than the header, IHL below the minimum.
        assert_eq!(inner_packet(&ipv4(19, 5)), Err(BadLength));
        assert_eq!(inner_packet(&ipv4(20, 6)), Err(BadLength));
        assert_eq!(inner_packet(&ipv4(40, 4)), Err(BadLength));
        let mut p = ipv4(20, 5);
        p[0] = 0x50;
        assert_eq!(inner_packet(&p), Err(BadVersion));
        assert_eq!(inner_packet(&[0u8; 64]), Err(BadVersion));
    }
}
