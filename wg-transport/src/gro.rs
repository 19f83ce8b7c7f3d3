//! Receive-side coalescing (GRO) for the tun device.
//!
//! A bulk TCP transfer arrives as one datagram per MTU-sized segment, and
//! handing each to the kernel costs one `write` and one trip through its
//! stack. The transport's loop (`device`) decrypts a whole UDP receive
//! batch first and gives every inner packet to [`Gro::push`] in order;
//! segments of one TCP flow that follow each other (next sequence number,
//! same ACK, same header options, only ACK or a final PSH set) are merged
//! into one super-packet with a [`VnetHdr`] that tells the kernel how they
//! were cut (GSO TCPV4/TCPV6) and that the checksum is left for it to
//! finish. Then [`Gro::finish`] fixes the merged headers and
//! [`Gro::writes`] lists what to write to the device, in order.
//!
//! Order: per flow, packets reach the device in the order they came.
//! A flow has at most one item open to appending, and every packet of a
//! flow that is not appended closes it; each item is written at the place
//! of its first packet, so nothing of a flow written later can overtake
//! it. Other flows' packets may be written before a merged item's later
//! segments, as wireguard-go and the kernel's own GRO do.
//!
//! A packet whose checksum is wrong is never merged (merged packets get a
//! fresh checksum from the kernel, which would hide the corruption): it
//! goes to the device alone, where the kernel drops it.
//!
//! Memory: at most [`MAX_ITEMS`] buffers of 64 KiB, allocated the first
//! time they are needed and kept; nothing is allocated per packet.
//! wireguard-go's `tun/offload_linux.go` was the reference for the rules
//! (which headers must match, where a merge must stop).

use crate::checksum;
use crate::gso::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, VNET_HDR_LEN};

/// Merged packets under construction per batch (flows seen at once).
pub const MAX_ITEMS: usize = 16;
/// The largest IP packet.
const MAX_PACKET: usize = 65_535;

const IPPROTO_TCP: u8 = 6;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// What to write to the device, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// The packet pushed with this token, as it was: the caller writes it
    /// behind a zero [`VnetHdr`].
    Packet(u32),
    /// Item `k`: [`Gro::item`] gives its bytes, header included.
    Item(usize),
}

/// One TCP flow's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    v6: bool,
}

/// A TCP segment's fields that decide whether it may be merged.
#[derive(Debug, Clone, Copy)]
struct Segment {
    key: FlowKey,
    ip_len: usize,
    tcp_len: usize,
    seq: u32,
    ack: u32,
    psh: bool,
    payload: usize,
}

#[derive(Debug, Clone, Copy)]
struct Item {
    key: FlowKey,
    /// Bytes of the (merged) packet in its buffer, after the header room.
    len: usize,
    ip_len: usize,
    tcp_len: usize,
    /// Payload length of the first segment: every later one must be as
    /// long, except a shorter last.
    gso_size: usize,
    next_seq: u32,
    ack: u32,
    merged: usize,
    /// Taking more would break the rules: a PSH or a short segment ended
    /// it, another packet of its flow came between, or its checksum is bad.
    closed: bool,
    /// The first packet's checksum was verified (done at the first merge).
    head_checked: bool,
}

/// The coalescing table of one receive batch.
#[derive(Default)]
pub struct Gro {
    items: Vec<Item>,
    /// `bufs[k]` holds item `k`: [`VNET_HDR_LEN`] bytes of header room,
    /// then the packet.
    bufs: Vec<Vec<u8>>,
    order: Vec<Write>,
}

/// The TCP segment in `pkt`, if it is one GRO may merge; `Err(Some(key))`
/// if it is TCP of that flow but may not be merged.
fn parse(pkt: &[u8]) -> Result<Segment, Option<FlowKey>> {
    let first = *pkt.first().ok_or(None)?;
    let mut key = FlowKey {
        src: [0; 16],
        dst: [0; 16],
        sport: 0,
        dport: 0,
        v6: false,
    };
    let ip_len;
    let mut mergeable = true;
    match first >> 4 {
        4 => {
            if pkt.len() < 40 || pkt[9] != IPPROTO_TCP {
                return Err(None);
            }
            ip_len = usize::from(first & 0x0f) * 4;
            if ip_len < 20 || pkt.len() < ip_len + 20 {
                return Err(None);
            }
            key.src[..4].copy_from_slice(&pkt[12..16]);
            key.dst[..4].copy_from_slice(&pkt[16..20]);
            let total = usize::from(u16::from_be_bytes([pkt[2], pkt[3]]));
            // Options, fragments and a length that is not the packet's
            // are left to the kernel.
            let fragment = pkt[6] & 0x20 != 0 || (pkt[6] & 0x1f) != 0 || pkt[7] != 0;
            if ip_len != 20 || fragment || total != pkt.len() {
                mergeable = false;
            }
        }
        6 => {
            // Extension headers are left to the kernel (as a non-TCP
            // next header, they are not taken for TCP at all).
            if pkt.len() < 60 || pkt[6] != IPPROTO_TCP {
                return Err(None);
            }
            ip_len = 40;
            key.v6 = true;
            key.src.copy_from_slice(&pkt[8..24]);
            key.dst.copy_from_slice(&pkt[24..40]);
            let payload = usize::from(u16::from_be_bytes([pkt[4], pkt[5]]));
            if payload + 40 != pkt.len() {
                mergeable = false;
            }
        }
        _ => return Err(None),
    }
    let t = &pkt[ip_len..];
    key.sport = u16::from_be_bytes([t[0], t[1]]);
    key.dport = u16::from_be_bytes([t[2], t[3]]);
    let tcp_len = usize::from(t[12] >> 4) * 4;
    if tcp_len < 20 || pkt.len() < ip_len + tcp_len {
        return Err(Some(key));
    }
    let flags = t[13];
    // Anything but a plain ACK, or an ACK with PSH (which ends a merge),
    // has a meaning of its own for the receiver.
    if flags != TCP_ACK && flags != TCP_ACK | TCP_PSH {
        mergeable = false;
    }
    let payload = pkt.len() - ip_len - tcp_len;
    if payload == 0 || !mergeable {
        return Err(Some(key));
    }
    Ok(Segment {
        key,
        ip_len,
        tcp_len,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
        ack: u32::from_be_bytes([t[8], t[9], t[10], t[11]]),
        psh: flags & TCP_PSH != 0,
        payload,
    })
}

/// Whether the IP headers of two packets of a flow agree where a merged
/// packet can keep only one value: TOS/traffic class, TTL/hop limit, and
/// IPv4's DF bit.
fn ip_headers_match(a: &[u8], b: &[u8], v6: bool) -> bool {
    if v6 {
        a.get(..2).map(|h| (h[0], h[1] >> 4)) == b.get(..2).map(|h| (h[0], h[1] >> 4))
            && a.get(7) == b.get(7)
    } else {
        a.get(1) == b.get(1)
            && a.get(6).map(|f| f >> 5) == b.get(6).map(|f| f >> 5)
            && a.get(8) == b.get(8)
    }
}

/// Whether the TCP checksum of `pkt` (IP header of `ip_len`) is right.
fn tcp_checksum_ok(pkt: &[u8], ip_len: usize, v6: bool) -> bool {
    let (src, dst) = if v6 {
        (&pkt[8..24], &pkt[24..40])
    } else {
        (&pkt[12..16], &pkt[16..20])
    };
    let Some(tcp) = pkt.get(ip_len..) else {
        return false;
    };
    let pseudo = checksum::pseudo_header(src, dst, IPPROTO_TCP, tcp.len() as u16);
    checksum::add(pseudo, checksum::sum(tcp)) == 0xffff
}

impl Gro {
    pub fn new() -> Self {
        Gro::default()
    }

    /// Forgets the last batch (keeping the buffers).
    pub fn clear(&mut self) {
        self.items.clear();
        self.order.clear();
    }

    /// Takes the next packet of the batch. `token` names it in
    /// [`Gro::writes`] if it is to be written as it is.
    pub fn push(&mut self, pkt: &[u8], token: u32) {
        let seg = match parse(pkt) {
            Ok(s) => s,
            Err(key) => {
                if let Some(key) = key {
                    self.close_flow(&key);
                }
                self.order.push(Write::Packet(token));
                return;
            }
        };
        if let Some(k) = self.open_item(&seg.key) {
            if self.try_append(k, &seg, pkt) {
                return;
            }
            self.items[k].closed = true;
            if !tcp_checksum_ok(pkt, seg.ip_len, seg.key.v6) {
                // Its own, alone: the kernel counts and drops it.
                self.order.push(Write::Packet(token));
                return;
            }
        }
        self.start_item(&seg, pkt, token);
    }

    /// The flow's item open to appending.
    fn open_item(&self, key: &FlowKey) -> Option<usize> {
        self.items
            .iter()
            .rposition(|it| !it.closed && it.key == *key)
    }

    fn close_flow(&mut self, key: &FlowKey) {
        if let Some(k) = self.open_item(key) {
            self.items[k].closed = true;
        }
    }

    /// Appends `seg` to item `k` if the rules allow it.
    fn try_append(&mut self, k: usize, seg: &Segment, pkt: &[u8]) -> bool {
        let it = self.items[k];
        let head = &self.bufs[k][VNET_HDR_LEN..VNET_HDR_LEN + it.len];
        if seg.seq != it.next_seq
            || seg.ack != it.ack
            || seg.tcp_len != it.tcp_len
            || seg.payload > it.gso_size
            || it.len + seg.payload > MAX_PACKET
            || !ip_headers_match(head, pkt, seg.key.v6)
        {
            return false;
        }
        let (hl, opts) = (it.ip_len + 20, it.ip_len + it.tcp_len);
        if head[hl..opts] != pkt[seg.ip_len + 20..seg.ip_len + seg.tcp_len] {
            return false;
        }
        if !it.head_checked {
            if !tcp_checksum_ok(head, it.ip_len, seg.key.v6) {
                // Written alone; the packet starts an item of its own.
                return false;
            }
            self.items[k].head_checked = true;
        }
        if !tcp_checksum_ok(pkt, seg.ip_len, seg.key.v6) {
            return false;
        }
        let at = VNET_HDR_LEN + it.len;
        let data = &pkt[seg.ip_len + seg.tcp_len..];
        self.bufs[k][at..at + data.len()].copy_from_slice(data);
        let it = &mut self.items[k];
        it.len += data.len();
        it.next_seq = it.next_seq.wrapping_add(data.len() as u32);
        it.merged += 1;
        if seg.psh {
            // PSH ends a merge and must reach the receiver on it.
            self.bufs[k][VNET_HDR_LEN + it.ip_len + 13] |= TCP_PSH;
            it.closed = true;
        }
        if seg.payload < it.gso_size {
            it.closed = true;
        }
        true
    }

    /// Makes `seg` the first packet of a new item, or, if the table is
    /// full, has it written as it is.
    fn start_item(&mut self, seg: &Segment, pkt: &[u8], token: u32) {
        let k = self.items.len();
        // (No inner packet is longer than the largest IP packet: a
        // datagram is read into 64 KiB. Checked all the same.)
        if k >= MAX_ITEMS || pkt.len() > MAX_PACKET {
            self.order.push(Write::Packet(token));
            return;
        }
        if self.bufs.len() <= k {
            self.bufs.push(vec![0u8; VNET_HDR_LEN + MAX_PACKET]);
        }
        self.bufs[k][VNET_HDR_LEN..VNET_HDR_LEN + pkt.len()].copy_from_slice(pkt);
        self.items.push(Item {
            key: seg.key,
            len: pkt.len(),
            ip_len: seg.ip_len,
            tcp_len: seg.tcp_len,
            gso_size: seg.payload,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            ack: seg.ack,
            merged: 0,
            closed: seg.psh,
            head_checked: false,
        });
        self.order.push(Write::Item(k));
    }

    /// Fixes the headers of merged items (lengths, IPv4 header checksum,
    /// the TCP checksum's pseudo-header part) and writes every item's
    /// offload header. Call once, after the batch's last [`Gro::push`].
    pub fn finish(&mut self) {
        for (it, buf) in self.items.iter().zip(&mut self.bufs) {
            let (hdr_room, pkt) = buf.split_at_mut(VNET_HDR_LEN);
            let pkt = &mut pkt[..it.len];
            if it.merged == 0 {
                VnetHdr::default().write(hdr_room);
                continue;
            }
            let ip = it.ip_len;
            let gso_type = if it.key.v6 {
                pkt[4..6].copy_from_slice(&((it.len - 40) as u16).to_be_bytes());
                GSO_TCPV6
            } else {
                pkt[2..4].copy_from_slice(&(it.len as u16).to_be_bytes());
                pkt[10..12].copy_from_slice(&[0, 0]);
                let c = checksum::finish(checksum::sum(&pkt[..ip]));
                pkt[10..12].copy_from_slice(&c.to_be_bytes());
                GSO_TCPV4
            };
            // The kernel finishes the checksum (CHECKSUM_PARTIAL): the
            // field holds the pseudo-header's sum, not complemented.
            let (src, dst) = if it.key.v6 {
                (&pkt[8..24], &pkt[24..40])
            } else {
                (&pkt[12..16], &pkt[16..20])
            };
            let pseudo = checksum::pseudo_header(src, dst, IPPROTO_TCP, (it.len - ip) as u16);
            pkt[ip + 16..ip + 18].copy_from_slice(&pseudo.to_be_bytes());
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type,
                hdr_len: (ip + it.tcp_len) as u16,
                gso_size: it.gso_size as u16,
                csum_start: ip as u16,
                csum_offset: 16,
            }
            .write(hdr_room);
        }
    }

    /// What to write to the device, in order.
    pub fn writes(&self) -> &[Write] {
        &self.order
    }

    /// Item `k`'s bytes as written to the device: its [`VnetHdr`], then
    /// the packet (after [`Gro::finish`]).
    pub fn item(&self, k: usize) -> &[u8] {
        match (self.items.get(k), self.bufs.get(k)) {
            (Some(it), Some(b)) => &b[..VNET_HDR_LEN + it.len],
            _ => &[],
        }
    }

    /// How many packets went into item `k` (tests, statistics).
    pub fn item_segments(&self, k: usize) -> usize {
        self.items.get(k).map_or(0, |it| it.merged + 1)
    }
}

#[cfg(test)]
mod tests;
