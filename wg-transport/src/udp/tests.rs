//! Tests of the parent module, in a file of their own so that the module
//! itself reads as the code it is.

use super::*;
use std::time::{Duration, Instant};

fn lo_index() -> u32 {
    nix::net::if_::if_nametoindex("lo").expect("lo has an index")
}

fn v4(ip: &str) -> IpAddr {
    IpAddr::V4(ip.parse().expect("literal"))
}

fn src(ip: IpAddr) -> Option<SourceAddr> {
    Some(SourceAddr { ip, ifindex: 0 })
}

/// Reads until `want` datagrams arrived (or 5 s passed): each as its
/// first byte and where it came from.
fn receive(sock: &UdpSocket, want: usize) -> Vec<(u8, SocketAddr, Option<SourceAddr>)> {
    let mut r = RecvBatch::default();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < want && Instant::now() < deadline {
        let n = r.recv(sock).expect("recv");
        for (g, b) in r.got[..n].iter().zip(&r.bufs) {
            seen.push((b[0], g.from, g.local));
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    seen
}

fn bound(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}

/// IPv6 loopback is required: a machine without it fails here rather
/// than skipping the IPv6 tests silently.
fn bound6(addr: &str) -> UdpSocket {
    UdpSocket::bind(addr)
        .unwrap_or_else(|e| panic!("bind {addr}: {e} (these tests need IPv6 on lo: ::1)"))
}

#[test]
fn batch_round_trip_on_loopback() {
    let a = bound("127.0.0.1:0");
    let b = bound("127.0.0.1:0");
    let to = b.local_addr().expect("addr");
    let mut s = SendBatch::default();
    for i in 0..40u8 {
        let mut d = s.buffer();
        d.extend_from_slice(&[i; 100]);
        s.push(d, to, None, 7);
    }
    let mut report = SendReport::default();
    s.flush(Some(&a), None, &mut report);
    assert_eq!(report, SendReport::default());
    let mut r = RecvBatch::default();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.len() < 40 && Instant::now() < deadline {
        let n = r.recv(&b).expect("recv");
        for i in 0..n {
            let g = r.got[i];
            assert_eq!(g.len, 100);
            assert_eq!(g.from, a.local_addr().expect("addr"));
            // pktinfo is off on this socket.
            assert_eq!(g.local, None);
            seen.push(r.bufs[i][0]);
        }
    }
    assert_eq!(seen, (0..40u8).collect::<Vec<_>>());
}

#[test]
fn refused_datagrams_are_reported_with_their_tag() {
    // A datagram larger than UDP allows is refused (EMSGSIZE); the
    // ones around it still go.
    let a = bound("127.0.0.1:0");
    let b = bound("127.0.0.1:0");
    let to = b.local_addr().expect("addr");
    let mut s = SendBatch::default();
    s.push(vec![1; 10], to, None, 1);
    s.push(vec![2; 70_000], to, None, 2);
    s.push(vec![3; 10], to, None, 3);
    let mut report = SendReport::default();
    s.flush(Some(&a), None, &mut report);
    assert_eq!(
        report.unsent,
        vec![Unsent {
            tag: 2,
            len: 70_000
        }]
    );
    assert!(report.stale_src.is_empty());
    let got: Vec<u8> = receive(&b, 2).into_iter().map(|g| g.0).collect();
    assert_eq!(got, vec![1, 3]);
}

#[test]
fn missing_family_socket_drops() {
    let mut s = SendBatch::default();
    s.push(vec![1, 2], "[::1]:9".parse().expect("literal"), None, 3);
    let mut report = SendReport::default();
    s.flush(None, None, &mut report);
    assert_eq!(report.unsent, vec![Unsent { tag: 3, len: 2 }]);
    assert!(s.is_empty());
}

#[test]
fn receive_reports_the_local_address_the_peer_used() {
    let r = bound("0.0.0.0:0");
    enable_pktinfo(&r, false).expect("IP_PKTINFO");
    let port = r.local_addr().expect("addr").port();
    let tx = bound("127.0.0.1:0");
    for (i, dst) in ["127.0.0.2", "127.0.0.1"].iter().enumerate() {
        tx.send_to(&[i as u8], (*dst, port)).expect("send");
        let got = receive(&r, 1);
        assert_eq!(got.len(), 1, "datagram to {dst}");
        assert_eq!(got[0].1, tx.local_addr().expect("addr"));
        assert_eq!(
            got[0].2,
            Some(SourceAddr {
                ip: v4(dst),
                ifindex: lo_index()
            }),
            "datagram to {dst}"
        );
    }
}

#[test]
fn send_from_the_given_source() {
    let rx = bound("127.0.0.1:0");
    let to = rx.local_addr().expect("addr");
    let tx = bound("0.0.0.0:0");
    let port = tx.local_addr().expect("addr").port();
    let mut s = SendBatch::default();
    s.push(vec![1], to, src(v4("127.0.0.3")), 1);
    s.push(vec![2], to, None, 2);
    let mut report = SendReport::default();
    s.flush(Some(&tx), None, &mut report);
    assert_eq!(report, SendReport::default());
    let got: Vec<(u8, SocketAddr)> = receive(&rx, 2).iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(
        got,
        vec![
            (1, SocketAddr::new(v4("127.0.0.3"), port)),
            (2, SocketAddr::new(v4("127.0.0.1"), port)),
        ]
    );
}

#[test]
fn a_source_that_is_not_local_is_reported_and_the_datagram_still_goes() {
    let rx = bound("127.0.0.1:0");
    let to = rx.local_addr().expect("addr");
    let tx = bound("0.0.0.0:0");
    let port = tx.local_addr().expect("addr").port();
    let mut s = SendBatch::default();
    s.push(vec![1], to, src(v4("192.0.2.77")), 9);
    let mut report = SendReport::default();
    s.flush(Some(&tx), None, &mut report);
    assert_eq!(report.stale_src, vec![9]);
    assert!(report.unsent.is_empty());
    let got: Vec<(u8, SocketAddr)> = receive(&rx, 1).iter().map(|g| (g.0, g.1)).collect();
    assert_eq!(got, vec![(1, SocketAddr::new(v4("127.0.0.1"), port))]);
}

#[test]
fn one_batch_mixes_sources() {
    let rx = bound("127.0.0.1:0");
    let to = rx.local_addr().expect("addr");
    let tx = bound("0.0.0.0:0");
    let port = tx.local_addr().expect("addr").port();
    // Tag = which source; 70 datagrams span three system calls, and the
    // stale source is met in each.
    let sources = [
        (None, "127.0.0.1"),
        (src(v4("127.0.0.2")), "127.0.0.2"),
        (src(v4("127.0.0.3")), "127.0.0.3"),
        (src(v4("192.0.2.77")), "127.0.0.1"),
    ];
    let mut s = SendBatch::default();
    let mut want: Vec<Vec<u8>> = vec![Vec::new(); sources.len()];
    for i in 0..70u8 {
        let k = (i as usize * 7) % sources.len();
        s.push(vec![i], to, sources[k].0, k as u32);
        want[k].push(i);
    }
    let mut report = SendReport::default();
    s.flush(Some(&tx), None, &mut report);
    assert_eq!(report.stale_src, vec![3]);
    assert!(report.unsent.is_empty());
    let got = receive(&rx, 70);
    assert_eq!(got.len(), 70);
    let mut per_source: Vec<Vec<u8>> = vec![Vec::new(); sources.len()];
    for (byte, from, _) in got {
        let k = (byte as usize * 7) % sources.len();
        assert_eq!(
            from,
            SocketAddr::new(v4(sources[k].1), port),
            "datagram {byte}"
        );
        per_source[k].push(byte);
    }
    assert_eq!(per_source, want);
}

#[test]
fn a_source_of_the_other_family_is_stale() {
    let rx = bound("127.0.0.1:0");
    let to = rx.local_addr().expect("addr");
    let tx = bound("0.0.0.0:0");
    let mut s = SendBatch::default();
    s.push(vec![1], to, src("::1".parse().expect("literal")), 4);
    let mut report = SendReport::default();
    s.flush(Some(&tx), None, &mut report);
    assert_eq!(report.stale_src, vec![4]);
    assert!(report.unsent.is_empty());
    assert_eq!(receive(&rx, 1).len(), 1);
}

#[test]
fn ipv6_sources_on_loopback() {
    let one: IpAddr = "::1".parse().expect("literal");
    let r = bound6("[::]:0");
    enable_pktinfo(&r, true).expect("IPV6_RECVPKTINFO");
    let r_port = r.local_addr().expect("addr").port();
    let peer = bound6("[::1]:0");
    peer.send_to(&[5], ("::1", r_port)).expect("send");
    let got = receive(&r, 1);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, peer.local_addr().expect("addr"));
    assert_eq!(
        got[0].2,
        Some(SourceAddr {
            ip: one,
            ifindex: lo_index()
        })
    );

    // Back from the socket that received it, to `peer`.
    let to = peer.local_addr().expect("addr");
    let mut s = SendBatch::default();
    s.push(vec![1], to, got[0].2, 1);
    s.push(
        vec![2],
        to,
        src("fd00::dead:1".parse().expect("literal")),
        2,
    );
    let mut report = SendReport::default();
    s.flush(None, Some(&r), &mut report);
    assert_eq!(report.stale_src, vec![2]);
    assert!(report.unsent.is_empty());
    let back: Vec<(u8, SocketAddr)> = receive(&peer, 2).iter().map(|g| (g.0, g.1)).collect();
    let from = SocketAddr::new(one, r_port);
    assert_eq!(back, vec![(1, from), (2, from)]);
}

#[test]
fn one_receive_batch_serves_both_families() {
    // The address and control lengths are reset for every call: an
    // IPv6 source after an IPv4 one must not be cut to IPv4's length.
    let r4 = bound("127.0.0.1:0");
    let r6 = bound6("[::1]:0");
    enable_pktinfo(&r6, true).expect("IPV6_RECVPKTINFO");
    let t4 = bound("127.0.0.1:0");
    let t6 = bound6("[::1]:0");
    let mut r = RecvBatch::default();
    for round in 0..2u8 {
        for (rx, tx) in [(&r4, &t4), (&r6, &t6), (&r4, &t4)] {
            tx.send_to(&[round], rx.local_addr().expect("addr"))
                .expect("send");
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut n = 0;
            while n == 0 && Instant::now() < deadline {
                n = r.recv(rx).expect("recv");
            }
            assert_eq!(n, 1);
            assert_eq!(r.got[0].from, tx.local_addr().expect("addr"));
            assert_eq!(
                r.got[0].local.is_some(),
                rx.local_addr().expect("addr").is_ipv6()
            );
        }
    }
}

#[test]
fn source_control_messages() {
    let mut ctl = Control([0; CONTROL_LEN]);
    let len = encode_src(
        &SourceAddr {
            ip: v4("10.1.2.3"),
            ifindex: 7,
        },
        true,
        &mut ctl,
    )
    .expect("v4 on v4");
    assert_eq!(len, cmsg_space(PKTINFO4));
    let hdr: libc::cmsghdr = get(&ctl.0, 0).expect("header");
    assert_eq!(hdr.cmsg_len, cmsg_len(PKTINFO4));
    assert_eq!(
        (hdr.cmsg_level, hdr.cmsg_type),
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    );
    let info: libc::in_pktinfo = get(&ctl.0, CMSG_HDR).expect("payload");
    assert_eq!(info.ipi_ifindex, 0, "routing picks the interface");
    assert_eq!(info.ipi_spec_dst.s_addr.to_ne_bytes(), [10, 1, 2, 3]);

    for (ip, ifindex) in [("fe80::1", 7), ("2001:db8::1", 0)] {
        let ip: Ipv6Addr = ip.parse().expect("literal");
        let len = encode_src(
            &SourceAddr {
                ip: IpAddr::V6(ip),
                ifindex: 7,
            },
            false,
            &mut ctl,
        )
        .expect("v6 on v6");
        assert_eq!(len, cmsg_space(PKTINFO6));
        let hdr: libc::cmsghdr = get(&ctl.0, 0).expect("header");
        assert_eq!(
            (hdr.cmsg_level, hdr.cmsg_type),
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO)
        );
        let info: libc::in6_pktinfo = get(&ctl.0, CMSG_HDR).expect("payload");
        assert_eq!(info.ipi6_addr.s6_addr, ip.octets());
        assert_eq!(info.ipi6_ifindex, ifindex, "{ip}");
    }
    assert_eq!(
        encode_src(
            &SourceAddr {
                ip: v4("10.0.0.1"),
                ifindex: 0
            },
            false,
            &mut ctl
        ),
        None
    );
}

#[test]
fn addresses_round_trip_through_the_kernel_layout() {
    for a in ["192.0.2.1:51820", "[2001:db8::1]:443", "[fe80::1%3]:9"] {
        let a: SocketAddr = a.parse().expect("literal");
        let mut name = Name([0; NAME_LEN]);
        let len = encode_addr(&a, &mut name) as usize;
        assert_eq!(decode_addr(&name.0[..len]), Some(a));
        // Cut short, it is no address.
        assert_eq!(decode_addr(&name.0[..len - 1]), None);
    }
}

proptest::proptest! {
    #[test]
    fn control_parsing_takes_any_bytes(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..CONTROL_LEN)) {
        let _ = parse_control(&bytes);
        let _ = decode_addr(&bytes);
    }
}

/// Every datagram that reaches `sock` within a second: its bytes.
fn all_datagrams(sock: &UdpSocket, want: usize) -> Vec<Vec<u8>> {
    let mut r = RecvBatch::default();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.len() < want && Instant::now() < deadline {
        let n = r.recv(sock).expect("recv");
        for i in 0..n {
            seen.push(r.bufs[i][..r.got[i].len].to_vec());
        }
        if n == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    seen
}

#[test]
fn gso_messages_arrive_as_the_datagrams_they_were() {
    let a = bound("127.0.0.1:0");
    let b = bound("127.0.0.1:0");
    let c = bound("127.0.0.1:0");
    let (to_b, to_c) = (b.local_addr().expect("addr"), c.local_addr().expect("addr"));
    let mut s = SendBatch::default();
    // 100 of one length to b: two GSO messages (64 + 36), then a shorter
    // one; between them, datagrams for c; then more for b.
    let for_b = segments_of(100, 1200, 300);
    for d in &for_b[..50] {
        s.push(d.clone(), to_b, None, 1);
    }
    s.push(vec![0xc0; 900], to_c, None, 2);
    s.push(vec![0xc1; 900], to_c, None, 2);
    for d in &for_b[50..] {
        s.push(d.clone(), to_b, None, 1);
    }
    let mut report = SendReport::default();
    s.flush(Some(&a), None, &mut report);
    assert_eq!(report, SendReport::default());
    assert!(s.gso());
    assert_eq!(all_datagrams(&b, for_b.len()), for_b);
    assert_eq!(all_datagrams(&c, 2), vec![vec![0xc0; 900], vec![0xc1; 900]]);
}

#[test]
fn messages_join_only_what_gso_can_cut() {
    let to: SocketAddr = "127.0.0.1:9".parse().expect("literal");
    let other: SocketAddr = "127.0.0.1:10".parse().expect("literal");
    let mut s = SendBatch::default();
    let mut push = |len: usize, to: SocketAddr, tag: u32| s.push(vec![0; len], to, None, tag);
    push(1000, to, 1);
    push(1000, to, 1);
    push(500, to, 1); // a shorter one ends a message
    push(1000, to, 1);
    push(1000, to, 2); // another tag
    push(1000, other, 2); // another destination
    push(1200, other, 2); // longer than the one before
    push(1200, other, 2);
    let order: Vec<usize> = (0..s.queue.len()).collect();
    let mut msgs = [Msg::default(); BATCH];
    let n = s.plan(&s.queue, &order, 0, false, true, &mut msgs);
    let counts: Vec<(usize, usize)> = msgs[..n].iter().map(|m| (m.count, m.segment)).collect();
    assert_eq!(
        counts,
        [(3, 1000), (1, 1000), (1, 1000), (1, 1000), (2, 1200)]
    );
    // The first message alone when asked (the probe after a refusal).
    let n = s.plan(&s.queue, &order, 0, true, true, &mut msgs);
    assert_eq!((n, msgs[0].count, msgs[1].count), (6, 1, 2));
    // And never more than the kernel's segments per message.
    let mut s = SendBatch::default();
    for _ in 0..MAX_SEGMENTS + 5 {
        s.push(vec![0; 100], to, None, 1);
    }
    let order: Vec<usize> = (0..s.queue.len()).collect();
    let n = s.plan(&s.queue, &order, 0, false, true, &mut msgs);
    assert_eq!((n, msgs[0].count, msgs[1].count), (2, MAX_SEGMENTS, 5));
    // Not past a size the kernel refused to cut, in that family only.
    s.gso_limit[0] = 100;
    assert_eq!(s.plan(&s.queue, &order, 0, false, true, &mut msgs), BATCH);
    assert_eq!(s.plan(&s.queue, &order, 0, false, false, &mut msgs), 2);
    s.gso_limit[0] = 101;
    assert_eq!(s.plan(&s.queue, &order, 0, false, true, &mut msgs), 2);
    s.disable_gso();
    assert_eq!(s.plan(&s.queue, &order, 0, false, true, &mut msgs), BATCH);
}

#[test]
fn a_refused_gso_message_goes_datagram_by_datagram() {
    // A socket without UDP checksums (SO_NO_CHECK) cannot do GSO: the
    // kernel refuses the message (EINVAL, as for a size it will not cut):
    // its datagrams go one by one, and so do later ones of that size.
    let a = bound("127.0.0.1:0");
    let b = bound("127.0.0.1:0");
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads an int from a live local.
    let r = unsafe {
        libc::setsockopt(
            a.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_NO_CHECK");
    let to = b.local_addr().expect("addr");
    let mut s = SendBatch::default();
    let want = segments_of(20, 1000, 10);
    for d in &want {
        s.push(d.clone(), to, None, 1);
    }
    let mut report = SendReport::default();
    s.flush(Some(&a), None, &mut report);
    assert_eq!(report, SendReport::default());
    assert_eq!(s.gso_limit(true), Some(1000));
    assert_eq!(s.gso_limit(false), None);
    assert_eq!(all_datagrams(&b, want.len()), want);
    for d in &want {
        s.push(d.clone(), to, None, 1);
    }
    s.flush(Some(&a), None, &mut report);
    assert_eq!(report, SendReport::default());
    assert_eq!(all_datagrams(&b, want.len()), want);
}

#[test]
fn segments_cut_a_gro_buffer() {
    let cut = |len, seg| {
        segments(len, seg)
            .map(|r| (r.start, r.end))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cut(2500, Some(1000)),
        [(0, 1000), (1000, 2000), (2000, 2500)]
    );
    assert_eq!(
        cut(3000, Some(1000)),
        [(0, 1000), (1000, 2000), (2000, 3000)]
    );
    assert_eq!(cut(700, Some(1000)), [(0, 700)]);
    assert_eq!(cut(700, None), [(0, 700)]);
    // An empty datagram is still one (to count as malformed).
    assert_eq!(cut(0, None), [(0, 0)]);
    assert_eq!(cut(0, Some(1000)), [(0, 0)]);
}

#[test]
fn gro_receives_a_run_of_datagrams_in_one_buffer() {
    let a = bound("127.0.0.1:0");
    let b = bound("127.0.0.1:0");
    assert!(enable_gro(&b), "UDP_GRO");
    enable_pktinfo(&b, false).expect("IP_PKTINFO");
    let to = b.local_addr().expect("addr");
    let mut s = SendBatch::default();
    let want = segments_of(30, 1000, 123);
    for d in &want {
        s.push(d.clone(), to, None, 1);
    }
    let mut report = SendReport::default();
    s.flush(Some(&a), None, &mut report);
    assert_eq!(report, SendReport::default());
    let mut r = RecvBatch::default();
    let mut seen = Vec::new();
    let mut reads = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while seen.len() < want.len() && Instant::now() < deadline {
        let n = r.recv(&b).expect("recv");
        for i in 0..n {
            let g = r.got[i];
            reads += 1;
            // The local address comes along with the run.
            assert_eq!(g.local.map(|l| l.ip), Some(v4("127.0.0.1")));
            for seg in segments(g.len, g.segment) {
                seen.push(r.bufs[i][seg].to_vec());
            }
        }
    }
    assert_eq!(seen, want);
    // The kernel kept the GSO message together (loopback does).
    assert!(
        reads < want.len(),
        "{reads} reads for {} datagrams",
        want.len()
    );
}

/// The datagrams of one super-packet: `n` of `len` bytes and a shorter
/// last, each marked with its number.
fn segments_of(n: u8, len: usize, last: usize) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = (0..n).map(|i| vec![i; len]).collect();
    v.push(vec![n; last]);
    v
}
