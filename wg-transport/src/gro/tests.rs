//! Tests of the parent module, in a file of their own so that the module
//! itself reads as the code it is.

use super::*;
use crate::gso::{complete_checksum, Split, GSO_NONE};
use crate::testpkt::{self, ACK, PSH};

/// Splits a TCP super-packet as the sending side does.
fn segments(v6: bool, seq: u32, flags: u8, data: &[u8], gso_size: u16) -> Vec<Vec<u8>> {
    let mut sup = testpkt::tcp(v6, seq, flags, data);
    let ip = testpkt::ip_len(&sup);
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: 0,
        gso_size,
        csum_start: ip as u16,
        csum_offset: 16,
    };
    let Ok(Some(s)) = Split::new(&hdr, &mut sup) else {
        panic!("not split");
    };
    (0..s.count())
        .map(|i| {
            let mut out = vec![0u8; s.max_segment_len()];
            let n = s.write_segment(&sup, i, &mut out);
            out.truncate(n);
            out
        })
        .collect()
}

fn run(pkts: &[Vec<u8>]) -> Gro {
    let mut g = Gro::new();
    for (i, p) in pkts.iter().enumerate() {
        g.push(p, i as u32);
    }
    g.finish();
    g
}

/// What the kernel does with a merged item: finish its checksum, then
/// check the packet as a receiver would.
fn as_kernel_sees(item: &[u8]) -> (VnetHdr, Vec<u8>) {
    let hdr = VnetHdr::parse(item).expect("header");
    let mut pkt = item[VNET_HDR_LEN..].to_vec();
    if hdr.flags & F_NEEDS_CSUM != 0 {
        complete_checksum(&mut pkt, hdr.csum_start, hdr.csum_offset).expect("csum");
    }
    assert_eq!(testpkt::claimed_len(&pkt), pkt.len());
    assert!(testpkt::ipv4_header_ok(&pkt));
    assert!(testpkt::l4_checksum_ok(&pkt));
    (hdr, pkt)
}

fn round_trip(v6: bool) {
    let data = testpkt::payload(6000);
    let segs = segments(v6, 77, ACK | PSH, &data, 1300);
    assert_eq!(segs.len(), 5);
    let g = run(&segs);
    assert_eq!(g.writes(), [Write::Item(0)]);
    assert_eq!(g.item_segments(0), 5);
    let (hdr, pkt) = as_kernel_sees(g.item(0));
    let ip = testpkt::ip_len(&pkt);
    assert_eq!(hdr.gso_type, if v6 { GSO_TCPV6 } else { GSO_TCPV4 });
    assert_eq!(hdr.gso_size, 1300);
    assert_eq!(usize::from(hdr.csum_start), ip);
    assert_eq!(hdr.csum_offset, 16);
    assert_eq!(usize::from(hdr.hdr_len), ip + 32);
    // The original super-packet's payload, seq and flags come back.
    assert_eq!(pkt[ip + 32..], data[..]);
    assert_eq!(testpkt::be32(&pkt, ip + 4), 77);
    assert_eq!(pkt[ip + 13], ACK | PSH);
}

#[test]
fn split_then_merged_gives_back_the_ipv4_super_packet() {
    round_trip(false);
}

#[test]
fn split_then_merged_gives_back_the_ipv6_super_packet() {
    round_trip(true);
}

#[test]
fn a_lone_segment_goes_out_with_a_zero_header() {
    let p = testpkt::tcp(false, 1, ACK, &testpkt::payload(500));
    let g = run(std::slice::from_ref(&p));
    assert_eq!(g.writes(), [Write::Item(0)]);
    let item = g.item(0);
    assert_eq!(VnetHdr::parse(item), Some(VnetHdr::default()));
    assert_eq!(item[VNET_HDR_LEN..], p[..]);
}

#[test]
fn what_may_not_be_merged_stays_apart() {
    let data = testpkt::payload(4000);
    let a = segments(false, 1000, ACK, &data, 1000);
    // A gap in the sequence: segment 2 is missing.
    let g = run(&[a[0].clone(), a[1].clone(), a[3].clone()]);
    assert_eq!(g.writes(), [Write::Item(0), Write::Item(1)]);
    assert_eq!((g.item_segments(0), g.item_segments(1)), (2, 1));

    // Not TCP, or TCP with a SYN: as they are.
    let u = testpkt::udp(false, &testpkt::payload(100));
    let syn = testpkt::tcp(false, 5, 0x02, &[]);
    let g = run(&[u, syn]);
    assert_eq!(g.writes(), [Write::Packet(0), Write::Packet(1)]);

    // A bad checksum is never merged: it goes alone, after the item.
    let mut bad = a[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let g = run(&[a[0].clone(), bad, a[2].clone()]);
    assert_eq!(
        g.writes(),
        [Write::Item(0), Write::Packet(1), Write::Item(1)]
    );
    assert_eq!((g.item_segments(0), g.item_segments(1)), (1, 1));

    // A longer segment after a shorter one would make a shorter
    // segment in the middle.
    let short = segments(false, 1, ACK, &testpkt::payload(1500), 500);
    let long = testpkt::tcp(false, 1001, ACK, &testpkt::payload(1000));
    let g = run(&[short[0].clone(), short[1].clone(), long]);
    assert_eq!(g.item_segments(0), 2);
    assert_eq!(g.writes().len(), 2);

    // Nothing is added after a PSH.
    let p = segments(false, 1, ACK | PSH, &testpkt::payload(1000), 1000);
    let after = testpkt::tcp(false, 1001, ACK, &testpkt::payload(1000));
    let g = run(&[p[0].clone(), after]);
    assert_eq!(g.writes(), [Write::Item(0), Write::Item(1)]);
}

#[test]
fn flows_merge_separately_and_keep_their_order() {
    let a = segments(false, 1, ACK, &testpkt::payload(3000), 1000);
    let b = segments(true, 1, ACK, &testpkt::payload(3000), 1000);
    let fin = testpkt::tcp(false, 3001, ACK | testpkt::FIN, &[]);
    let more = testpkt::tcp(false, 3001, ACK, &testpkt::payload(1000));
    let pkts = [
        a[0].clone(),
        b[0].clone(),
        a[1].clone(),
        b[1].clone(),
        a[2].clone(),
        fin,
        b[2].clone(),
        more,
    ];
    let g = run(&pkts);
    // The FIN closes flow a's item: a packet after it starts a new one,
    // written after the FIN.
    assert_eq!(
        g.writes(),
        [
            Write::Item(0),
            Write::Item(1),
            Write::Packet(5),
            Write::Item(2)
        ]
    );
    assert_eq!(
        (g.item_segments(0), g.item_segments(1), g.item_segments(2)),
        (3, 3, 1)
    );
    let (h, _) = as_kernel_sees(g.item(1));
    assert_eq!(h.gso_type, GSO_TCPV6);
    let (h, _) = as_kernel_sees(g.item(2));
    assert_eq!(h.gso_type, GSO_NONE);
}

#[test]
fn a_full_table_writes_packets_as_they_are() {
    let mut pkts = Vec::new();
    for i in 0..MAX_ITEMS + 2 {
        let mut p = testpkt::tcp(false, 1, ACK, &testpkt::payload(100));
        // One flow per packet: another source port.
        p[21] = i as u8;
        testpkt::fix_checksums(&mut p, 20 + 16);
        pkts.push(p);
    }
    let g = run(&pkts);
    assert_eq!(g.writes().len(), MAX_ITEMS + 2);
    assert_eq!(g.writes()[MAX_ITEMS], Write::Packet(MAX_ITEMS as u32));
}

#[test]
fn merges_up_to_the_largest_ip_packet() {
    // 43 + 7 full segments: more than one IP packet can hold.
    let mut segs = segments(false, 1, ACK, &testpkt::payload(43 * 1400), 1400);
    segs.extend(segments(
        false,
        1 + 43 * 1400,
        ACK,
        &testpkt::payload(7 * 1400),
        1400,
    ));
    let g = run(&segs);
    assert_eq!(g.writes().len(), 2);
    let total: usize = (0..g.writes().len()).map(|k| g.item_segments(k)).sum();
    assert_eq!(total, segs.len());
    for k in 0..g.writes().len() {
        let (_, pkt) = as_kernel_sees(g.item(k));
        assert!(pkt.len() <= 65_535);
    }
}
