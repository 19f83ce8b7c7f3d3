//! The tun device's offload framing, and splitting what it hands us.
//!
//! The parent opens the tun device with `IFF_VNET_HDR` and turns on TSO
//! (and USO where the kernel has it) with `TUNSETOFFLOAD`
//! (`wgd/src/net.rs`). Every read then starts with a [`VnetHdr`], and a
//! TCP stream arrives as super-packets of up to 64 KiB: one IP and TCP
//! header, then many segments' worth of payload, with the checksum left
//! for us to finish. The transport's loop (`device`) calls [`Split::new`]
//! on each read, then [`Split::write_segment`] for every MTU-sized packet
//! it seals, straight into the datagram buffer it sends: no copy but that
//! one. Every write to the device starts with a header too: a zero one for
//! an ordinary packet, or the one [`crate::gro`] builds for a merged one.
//!
//! wireguard-go's `tun/offload_linux.go` was the reference for what the
//! kernel hands over and how to cut it: its header length is not trusted
//! (it is recomputed from the TCP header), IPv4 identifiers count up per
//! segment, FIN and PSH stay on the last segment only.
//!
//! Everything here reads lengths the kernel wrote; each is checked, so a
//! packet we do not understand is an error to count, never a panic.

use crate::checksum;

/// `sizeof(struct virtio_net_hdr)`: the header tun puts before each packet
/// (we never change its size with TUNSETVNETHDRSZ).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start +
/// csum_offset` holds only the pseudo-header's sum; the rest is to do.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_*`.
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_TCPV6: u8 = 4;
/// The ECN bit of `gso_type`: set only with TUN_F_TSO_ECN, which we do
/// not ask for.
const GSO_ECN: u8 = 0x80;

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
/// Where the checksum lies in a TCP and a UDP header.
const TCP_CSUM_OFFSET: usize = 16;
const UDP_CSUM_OFFSET: usize = 6;

/// `struct virtio_net_hdr`, in the byte order of the host (tun's legacy
/// framing: we never ask for TUNSETVNETLE/BE).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// The header at the start of `buf`, if `buf` is long enough.
    pub fn parse(buf: &[u8]) -> Option<VnetHdr> {
        let b = buf.first_chunk::<VNET_HDR_LEN>()?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out`
    /// (which the caller sized; a short `out` gets nothing).
    pub fn write(&self, out: &mut [u8]) {
        let Some(b) = out.first_chunk_mut::<VNET_HDR_LEN>() else {
            return;
        };
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Why a read from the tun device cannot be sent as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GsoError {
    #[error("shorter than its offload header")]
    Truncated,
    #[error("unsupported gso type {0}")]
    UnsupportedType(u8),
    #[error("offload header inconsistent with the packet")]
    BadHeader,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

fn put_be16(b: &mut [u8], at: usize, v: u16) {
    if let Some(s) = b.get_mut(at..at + 2) {
        s.copy_from_slice(&v.to_be_bytes());
    }
}

/// Finishes the checksum the kernel left open on a packet it did not
/// segment (`F_NEEDS_CSUM` with `GSO_NONE`): the field holds the
/// pseudo-header's sum, to which the sum of everything from `csum_start`
/// on is added.
pub fn complete_checksum(
    pkt: &mut [u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(), GsoError> {
    let start = usize::from(csum_start);
    let at = start + usize::from(csum_offset);
    if at + 2 > pkt.len() {
        return Err(GsoError::BadHeader);
    }
    let initial = be16(pkt, at).ok_or(GsoError::BadHeader)?;
    put_be16(pkt, at, 0);
    let covered = pkt.get(start..).ok_or(GsoError::BadHeader)?;
    let c = checksum::finish(checksum::add(initial, checksum::sum(covered)));
    put_be16(pkt, at, c);
    Ok(())
}

/// A super-packet read from the tun device and how to cut it: segment `i`
/// is the IP and transport header followed by the payload bytes from
/// `hdr_len + i * gso_size` on (at most `gso_size` of them), with
/// lengths, IPv4 identifier, TCP sequence number, flags and checksums
/// fixed for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    /// IP header length (the kernel's `csum_start`).
    ip_len: usize,
    /// IP and transport header length.
    hdr_len: usize,
    /// Payload bytes per segment (the last may have fewer).
    gso_size: usize,
    /// The whole super-packet's length.
    total: usize,
    v6: bool,
    protocol: u8,
}

impl Split {
    /// Checks the packet `pkt` (after its header `hdr`) for splitting.
    /// `Ok(None)`: it is an ordinary packet, to send as it is (its
    /// checksum, if the kernel left it open, is finished in place first).
    pub fn new(hdr: &VnetHdr, pkt: &mut [u8]) -> Result<Option<Split>, GsoError> {
        let gso_type = hdr.gso_type & !GSO_ECN;
        if gso_type == GSO_NONE {
            if hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(pkt, hdr.csum_start, hdr.csum_offset)?;
            }
            return Ok(None);
        }
        let version = pkt.first().ok_or(GsoError::Truncated)? >> 4;
        let (v6, protocol) = match (gso_type, version) {
            (GSO_TCPV4, 4) => (false, IPPROTO_TCP),
            (GSO_TCPV6, 6) => (true, IPPROTO_TCP),
            (GSO_UDP_L4, 4) => (false, IPPROTO_UDP),
            (GSO_UDP_L4, 6) => (true, IPPROTO_UDP),
            (GSO_TCPV4 | GSO_TCPV6, _) => return Err(GsoError::BadHeader),
            (t, _) => return Err(GsoError::UnsupportedType(t)),
        };
        let ip_len = usize::from(hdr.csum_start);
        let min_ip = if v6 { 40 } else { 20 };
        if ip_len < min_ip || (!v6 && ip_len != usize::from(pkt[0] & 0x0f) * 4) {
            return Err(GsoError::BadHeader);
        }
        let (l4_len, csum_offset) = if protocol == IPPROTO_TCP {
            // The kernel's hdr_len may cover far more than the headers
            // (a forwarded packet): the TCP header says how long it is.
            let doff = pkt.get(ip_len + 12).ok_or(GsoError::Truncated)? >> 4;
            let l4 = usize::from(doff) * 4;
            if !(20..=60).contains(&l4) {
                return Err(GsoError::BadHeader);
            }
            (l4, TCP_CSUM_OFFSET)
        } else {
            (8, UDP_CSUM_OFFSET)
        };
        if usize::from(hdr.csum_offset) != csum_offset {
            return Err(GsoError::BadHeader);
        }
        let hdr_len = ip_len + l4_len;
        let gso_size = usize::from(hdr.gso_size);
        if gso_size == 0 || pkt.len() <= hdr_len || pkt.len() > 65_535 + hdr_len {
            return Err(GsoError::BadHeader);
        }
        Ok(Some(Split {
            ip_len,
            hdr_len,
            gso_size,
            total: pkt.len(),
            v6,
            protocol,
        }))
    }

    /// How many segments the super-packet makes.
    pub fn count(&self) -> usize {
        (self.total - self.hdr_len).div_ceil(self.gso_size)
    }

    /// The length of segment `i` (0 past the last).
    pub fn segment_len(&self, i: usize) -> usize {
        let start = self.hdr_len + i * self.gso_size;
        if start >= self.total {
            return 0;
        }
        self.hdr_len + self.gso_size.min(self.total - start)
    }

    /// The largest segment: what a buffer for any of them needs.
    pub fn max_segment_len(&self) -> usize {
        self.hdr_len + self.gso_size.min(self.total - self.hdr_len)
    }

    /// Writes segment `i` of `pkt` (the packet [`Split::new`] saw) into
    /// the start of `out` and returns its length; 0 (nothing written) if
    /// there is no such segment or `out` is too short for it.
    pub fn write_segment(&self, pkt: &[u8], i: usize, out: &mut [u8]) -> usize {
        let len = self.segment_len(i);
        if len == 0 || out.len() < len || pkt.len() != self.total {
            return 0;
        }
        let (ip, hl) = (self.ip_len, self.hdr_len);
        let data_at = hl + i * self.gso_size;
        let data_len = len - hl;
        let out = &mut out[..len];
        out[..hl].copy_from_slice(&pkt[..hl]);
        out[hl..].copy_from_slice(&pkt[data_at..data_at + data_len]);
        let l4_len = len - ip;
        if self.v6 {
            // The payload length covers extension headers too.
            put_be16(out, 4, (len - 40) as u16);
        } else {
            put_be16(out, 2, len as u16);
            // Each segment a datagram of its own, as the kernel would
            // number them.
            let id = be16(pkt, 4).unwrap_or(0).wrapping_add(i as u16);
            put_be16(out, 4, id);
            put_be16(out, 10, 0);
            let c = checksum::finish(checksum::sum(&out[..ip]));
            put_be16(out, 10, c);
        }
        let csum_at = if self.protocol == IPPROTO_TCP {
            let seq = u32::from_be_bytes([pkt[ip + 4], pkt[ip + 5], pkt[ip + 6], pkt[ip + 7]])
                .wrapping_add((i * self.gso_size) as u32);
            out[ip + 4..ip + 8].copy_from_slice(&seq.to_be_bytes());
            if data_at + data_len < self.total {
                // FIN and PSH belong to the end of what was sent.
                out[ip + 13] &= !(TCP_FIN | TCP_PSH);
            }
            ip + TCP_CSUM_OFFSET
        } else {
            put_be16(out, ip + 4, l4_len as u16);
            ip + UDP_CSUM_OFFSET
        };
        put_be16(out, csum_at, 0);
        let (src, dst) = if self.v6 {
            (&pkt[8..24], &pkt[24..40])
        } else {
            (&pkt[12..16], &pkt[16..20])
        };
        let pseudo = checksum::pseudo_header(src, dst, self.protocol, l4_len as u16);
        let mut c = checksum::finish(checksum::add(pseudo, checksum::sum(&out[ip..])));
        if c == 0 && self.protocol == IPPROTO_UDP {
            // Zero means "no checksum" in UDP; all ones is the same sum.
            c = 0xffff;
        }
        put_be16(out, csum_at, c);
        len
    }
}

#[cfg(test)]
mod tests;
