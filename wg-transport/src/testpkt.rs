//! Hand-built IP packets for the offload tests ([`crate::gso`],
//! [`crate::gro`]), and a checksum written from the definition, apart
//! from [`crate::checksum`], so the tests check the code against
//! something it does not share.

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ACK: u8 = 0x10;
pub const PSH: u8 = 0x08;
pub const FIN: u8 = 0x01;

/// RFC 1071, 16 bits at a time.
pub fn ones_sum(parts: &[&[u8]]) -> u16 {
    let mut acc: u32 = 0;
    for data in parts {
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
    }
    acc as u16
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

pub fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub fn is_v6(pkt: &[u8]) -> bool {
    pkt[0] >> 4 == 6
}

pub fn ip_len(pkt: &[u8]) -> usize {
    if is_v6(pkt) {
        40
    } else {
        usize::from(pkt[0] & 0x0f) * 4
    }
}

/// Whether the IPv4 header checksum is right (true for IPv6: none).
pub fn ipv4_header_ok(pkt: &[u8]) -> bool {
    is_v6(pkt) || ones_sum(&[&pkt[..ip_len(pkt)]]) == 0xffff
}

/// Whether the TCP/UDP checksum is right, pseudo-header included.
pub fn l4_checksum_ok(pkt: &[u8]) -> bool {
    let ip = ip_len(pkt);
    let (src, dst, proto) = if is_v6(pkt) {
        (&pkt[8..24], &pkt[24..40], pkt[6])
    } else {
        (&pkt[12..16], &pkt[16..20], pkt[9])
    };
    let l4 = &pkt[ip..];
    let len = (l4.len() as u16).to_be_bytes();
    ones_sum(&[src, dst, &[0, proto], &len, l4]) == 0xffff
}

/// The IP total length the header claims.
pub fn claimed_len(pkt: &[u8]) -> usize {
    if is_v6(pkt) {
        40 + usize::from(be16(pkt, 4))
    } else {
        usize::from(be16(pkt, 2))
    }
}

/// A TCP packet: IPv4 (10.0.0.1 → 10.0.0.2, id 0x1234, DF, TTL 64) or
/// IPv6 (fd00::1 → fd00::2, hop limit 64), ports 5001 → 40000, sequence
/// number `seq`, ACK 7777, `flags`, a 12-byte timestamp option, the
/// payload, and right checksums.
pub fn tcp(v6: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut p = ip_header(v6, TCP, 32 + payload.len());
    let ip = p.len();
    p.extend_from_slice(&5001u16.to_be_bytes());
    p.extend_from_slice(&40000u16.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&7777u32.to_be_bytes());
    p.push(8 << 4); // 32-byte header
    p.push(flags);
    p.extend_from_slice(&512u16.to_be_bytes()); // window
    p.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    p.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 42, 0, 0, 0, 43]);
    p.extend_from_slice(payload);
    fix_checksums(&mut p, ip + 16);
    p
}

/// A UDP packet in the same frame as [`tcp`].
pub fn udp(v6: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = ip_header(v6, UDP, 8 + payload.len());
    let ip = p.len();
    p.extend_from_slice(&53u16.to_be_bytes());
    p.extend_from_slice(&40001u16.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    fix_checksums(&mut p, ip + 6);
    p
}

fn ip_header(v6: bool, proto: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        p.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, proto, 0, 0]);
        p.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    }
    p
}

/// Recomputes the IPv4 header checksum and the transport checksum at
/// `csum_at`.
pub fn fix_checksums(p: &mut [u8], csum_at: usize) {
    if !is_v6(p) {
        p[10] = 0;
        p[11] = 0;
        let c = !ones_sum(&[&p[..20]]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    p[csum_at] = 0;
    p[csum_at + 1] = 0;
    let ip = ip_len(p);
    let (src, dst, proto) = if is_v6(p) {
        (&p[8..24], &p[24..40], p[6])
    } else {
        (&p[12..16], &p[16..20], p[9])
    };
    let len = ((p.len() - ip) as u16).to_be_bytes();
    let c = !ones_sum(&[src, dst, &[0, proto], &len, &p[ip..]]);
    p[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
}

/// `n` bytes of a pattern that makes misplaced bytes show.
pub fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 251) as u8).collect()
}
