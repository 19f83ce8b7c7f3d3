//! Tests of the parent module, in a file of their own so that the module
//! itself reads as the code it is.

use super::*;
use crate::testpkt::{self, be32, ACK, FIN, PSH};

fn tso(v6: bool) -> VnetHdr {
    VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        // Deliberately wrong, as the kernel's may be: it is recomputed.
        hdr_len: 9999,
        gso_size: 1000,
        csum_start: if v6 { 40 } else { 20 },
        csum_offset: 16,
    }
}

fn split_all(hdr: &VnetHdr, pkt: &mut [u8]) -> Vec<Vec<u8>> {
    let s = match Split::new(hdr, pkt) {
        Ok(Some(s)) => s,
        other => panic!("not split: {other:?}"),
    };
    (0..s.count())
        .map(|i| {
            let mut out = vec![0u8; s.max_segment_len()];
            let n = s.write_segment(pkt, i, &mut out);
            assert_eq!(n, s.segment_len(i));
            out.truncate(n);
            out
        })
        .collect()
}

fn check_tcp_split(v6: bool) {
    let data = testpkt::payload(4500);
    let mut sup = testpkt::tcp(v6, 0xffff_fe00, ACK | PSH | FIN, &data);
    // The kernel leaves only the pseudo-header's sum in the field; any
    // value must do, as it is recomputed.
    let ip = testpkt::ip_len(&sup);
    sup[ip + 16] ^= 0x5a;
    let segs = split_all(&tso(v6), &mut sup);
    assert_eq!(segs.len(), 5);
    let hdr = ip + 32;
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let want = if i < 4 { 1000 } else { 500 };
        assert_eq!(s.len(), hdr + want, "segment {i} size");
        assert_eq!(testpkt::claimed_len(s), s.len(), "segment {i} IP length");
        assert!(testpkt::ipv4_header_ok(s), "segment {i} IP checksum");
        assert!(testpkt::l4_checksum_ok(s), "segment {i} TCP checksum");
        // Sequence numbers wrap around 2^32 here.
        assert_eq!(
            be32(s, ip + 4),
            0xffff_fe00u32.wrapping_add(1000 * i as u32),
            "segment {i} seq"
        );
        let flags = s[ip + 13];
        if i < 4 {
            assert_eq!(flags, ACK, "segment {i}: FIN and PSH only on the last");
        } else {
            assert_eq!(flags, ACK | PSH | FIN);
        }
        if !v6 {
            let id = u16::from_be_bytes([s[4], s[5]]);
            assert_eq!(id, 0x1234 + i as u16, "segment {i} IPv4 id");
        }
        // Options travel on every segment.
        assert_eq!(s[ip + 20..ip + 32], sup[ip + 20..ip + 32]);
        joined.extend_from_slice(&s[hdr..]);
    }
    assert_eq!(joined, data);
}

#[test]
fn splits_an_ipv4_tcp_super_packet() {
    check_tcp_split(false);
}

#[test]
fn splits_an_ipv6_tcp_super_packet() {
    check_tcp_split(true);
}

#[test]
fn an_exact_multiple_makes_full_segments() {
    let data = testpkt::payload(3000);
    let mut sup = testpkt::tcp(false, 1, ACK, &data);
    let segs = split_all(&tso(false), &mut sup);
    assert_eq!(segs.len(), 3);
    assert!(segs.iter().all(|s| s.len() == 20 + 32 + 1000));
    assert!(segs.iter().all(|s| testpkt::l4_checksum_ok(s)));
}

#[test]
fn splits_a_udp_super_packet() {
    for v6 in [false, true] {
        let data = testpkt::payload(2500);
        let mut sup = testpkt::udp(v6, &data);
        let ip = testpkt::ip_len(&sup);
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_UDP_L4,
            hdr_len: (ip + 8) as u16,
            gso_size: 1200,
            csum_start: ip as u16,
            csum_offset: 6,
        };
        let segs = split_all(&hdr, &mut sup);
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            [ip + 1208, ip + 1208, ip + 108]
        );
        let mut joined = Vec::new();
        for s in &segs {
            assert_eq!(testpkt::claimed_len(s), s.len());
            assert!(testpkt::ipv4_header_ok(s));
            assert!(testpkt::l4_checksum_ok(s));
            assert_eq!(
                usize::from(u16::from_be_bytes([s[ip + 4], s[ip + 5]])),
                s.len() - ip
            );
            joined.extend_from_slice(&s[ip + 8..]);
        }
        assert_eq!(joined, data);
    }
}

#[test]
fn finishes_a_checksum_left_open() {
    for v6 in [false, true] {
        let mut p = testpkt::tcp(v6, 5, ACK, &testpkt::payload(333));
        let ip = testpkt::ip_len(&p);
        // What the kernel hands over with CHECKSUM_PARTIAL: the field
        // holds the pseudo-header's sum.
        let (src, dst) = if v6 {
            (&p[8..24], &p[24..40])
        } else {
            (&p[12..16], &p[16..20])
        };
        let len = ((p.len() - ip) as u16).to_be_bytes();
        let pseudo = testpkt::ones_sum(&[src, dst, &[0, testpkt::TCP], &len]);
        p[ip + 16..ip + 18].copy_from_slice(&pseudo.to_be_bytes());
        assert!(!testpkt::l4_checksum_ok(&p));
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: ip as u16,
            csum_offset: 16,
            ..VnetHdr::default()
        };
        assert_eq!(Split::new(&hdr, &mut p), Ok(None));
        assert!(testpkt::l4_checksum_ok(&p), "v6 {v6}");
    }
}

#[test]
fn an_ordinary_packet_is_left_alone() {
    let mut p = testpkt::tcp(false, 5, ACK, &testpkt::payload(100));
    let before = p.clone();
    assert_eq!(Split::new(&VnetHdr::default(), &mut p), Ok(None));
    assert_eq!(p, before);
}

#[test]
fn inconsistent_headers_are_refused() {
    let mut p4 = testpkt::tcp(false, 5, ACK, &testpkt::payload(3000));
    let mut p6 = testpkt::tcp(true, 5, ACK, &testpkt::payload(3000));
    // TCPv4 framing on an IPv6 packet.
    assert_eq!(Split::new(&tso(false), &mut p6), Err(GsoError::BadHeader));
    let zero = VnetHdr {
        gso_size: 0,
        ..tso(false)
    };
    assert_eq!(Split::new(&zero, &mut p4), Err(GsoError::BadHeader));
    let off = VnetHdr {
        csum_offset: 6,
        ..tso(false)
    };
    assert_eq!(Split::new(&off, &mut p4), Err(GsoError::BadHeader));
    let start = VnetHdr {
        csum_start: 24,
        ..tso(false)
    };
    assert_eq!(Split::new(&start, &mut p4), Err(GsoError::BadHeader));
    let odd = VnetHdr {
        gso_type: 3,
        ..tso(false)
    };
    assert_eq!(Split::new(&odd, &mut p4), Err(GsoError::UnsupportedType(3)));
    // A checksum position past the packet.
    let far = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 4000,
        csum_offset: 16,
        ..VnetHdr::default()
    };
    assert_eq!(Split::new(&far, &mut p4), Err(GsoError::BadHeader));
    // Headers only, no payload to cut.
    let mut bare = testpkt::tcp(false, 5, ACK, &[]);
    assert_eq!(Split::new(&tso(false), &mut bare), Err(GsoError::BadHeader));
    let mut empty: [u8; 0] = [];
    assert_eq!(
        Split::new(&tso(false), &mut empty),
        Err(GsoError::Truncated)
    );
}

#[test]
fn header_round_trips() {
    let h = VnetHdr {
        flags: 1,
        gso_type: 4,
        hdr_len: 0x1234,
        gso_size: 1388,
        csum_start: 40,
        csum_offset: 16,
    };
    let mut b = [0u8; VNET_HDR_LEN];
    h.write(&mut b);
    assert_eq!(VnetHdr::parse(&b), Some(h));
    assert_eq!(VnetHdr::parse(&b[..9]), None);
}
