//! The Internet checksum (RFC 1071) for the tun offloads.
//!
//! With offloads on, the kernel hands the transport TCP and UDP packets
//! whose checksums are left for someone else to finish, and expects the
//! same of what the transport writes back ([`crate::gso`] splits and
//! finishes them, [`crate::gro`] merges and leaves them to the kernel).
//! Both call these helpers. Hand-written because it is on the hot path and
//! tiny: the sum is taken over 32-bit words in native byte order, which the
//! compiler vectorises, and converted to network order once at the end (a
//! ones'-complement sum does not care in which order its words' bytes are,
//! as long as it is the same for all of them: RFC 1071, 2(B)).

/// The ones'-complement sum of `data` as 16-bit big-endian words (an odd
/// last byte is padded with zero), folded to 16 bits, not complemented.
pub fn sum(data: &[u8]) -> u16 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 4];
        last[..rest.len()].copy_from_slice(rest);
        acc += u64::from(u32::from_ne_bytes(last));
    }
    // Folded in the native order, then turned into network order: the
    // byte swap of a folded ones'-complement sum is the sum of the swapped
    // words.
    u16::from_be(fold(acc))
}

/// Folds a wide ones'-complement sum to 16 bits.
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Ones'-complement addition of two folded sums.
pub fn add(a: u16, b: u16) -> u16 {
    fold(u64::from(a) + u64::from(b))
}

/// The sum of the TCP/UDP pseudo-header: source and destination address
/// (4 or 16 bytes each, as they lie in the IP header), protocol and the
/// transport length (header and payload).
pub fn pseudo_header(src: &[u8], dst: &[u8], protocol: u8, len: u16) -> u16 {
    add(add(sum(src), sum(dst)), add(u16::from(protocol), len))
}

/// The value a checksum field holds once finished: the complement of the
/// sum over everything it covers (the field itself counted as zero).
pub fn finish(partial: u16) -> u16 {
    !partial
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook definition, 16 bits at a time, as an oracle.
    fn slow(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn agrees_with_the_definition_at_every_length() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..data.len() {
            assert_eq!(sum(&data[..len]), slow(&data[..len]), "length {len}");
        }
        assert_eq!(sum(&[0xff; 4000]), 0xffff);
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071, 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn a_known_ipv4_header_checks_out() {
        // A captured header (checksum b861), summed with its checksum in
        // place, gives all ones.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(sum(&h), 0xffff);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(finish(sum(&z)), 0xb861);
    }
}
