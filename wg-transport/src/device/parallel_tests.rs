//! The batched paths of the parent module, which share a batch's AEAD
//! with worker threads ([`crate::pool`]), against the plain path that
//! seals and opens one packet at a time: the same datagrams on the wire,
//! the same packets to the tun device, the same drops counted and the
//! same replay windows afterwards, for batches in order, reordered,
//! replayed, forged, and across a keypair's confirmation. Each scenario
//! is repeated until a worker really took part in it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;

use proto::alloc_count::Usage;
use proto::keys::{SessionKey, SessionKeys};

use super::*;
use crate::data::seal_reserved;
use crate::gso::{F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6};
use crate::keypair::KeypairSlots;
use crate::testpkt::{self, ACK};
use crate::udp::Received;

/// How long a scenario may be retried waiting for a worker to take part
/// (it needs a CPU within a batch's few hundred µs).
const DEADLINE: Duration = Duration::from_secs(20);

fn peer_key() -> PublicKey {
    PublicKey([7; 32])
}

fn peer_addr() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 51820)
}

/// A device with offloads whose tun device is a datagram socket (the
/// other end returned, to read what it writes), `workers` workers, and
/// one peer at [`peer_addr`] owning 10.0.0.0/8 and fd00::/8.
fn device(workers: usize) -> (Device, UnixDatagram) {
    let (ours, theirs) = match UnixDatagram::pair() {
        Ok(p) => p,
        Err(e) => panic!("socketpair: {e}"),
    };
    // Never block a test: a write that does not fit is lost, and then
    // the outputs compared differ.
    for s in [&ours, &theirs] {
        if let Err(e) = s.set_nonblocking(true) {
            panic!("nonblocking: {e}");
        }
    }
    let mut d = Device::new(OwnedFd::from(ours), None, None);
    d.vnet_hdr = true;
    match Workers::new(workers) {
        Ok(w) => d.set_workers(w),
        Err(e) => panic!("workers: {e}"),
    }
    let id = d.add_peer(peer_key());
    for (net, len) in [
        (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
        (IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0)), 8),
    ] {
        if let Err(e) = d.allowed.insert(net, len, id) {
            panic!("insert: {e}");
        }
    }
    if let Some(p) = d.peer_mut(id) {
        p.endpoint = Some(Endpoint::new(peer_addr()));
    }
    (d, theirs)
}

fn install(d: &mut Device, local: u32, remote: u32, send: u8, recv: u8, initiator: bool) {
    let order = HandshakeToTransport::InstallKeypair {
        peer: peer_key(),
        local_index: local,
        remote_index: remote,
        keys: SessionKeys {
            send: SessionKey::from_bytes([send; 32]),
            recv: SessionKey::from_bytes([recv; 32]),
        },
        initiator,
    };
    assert!(d.handle_order(order).is_none());
}

fn channel() -> (
    HandshakeChannel,
    Channel<HandshakeToTransport, TransportToHandshake>,
) {
    let (ours, theirs) = match HandshakeChannel::pair() {
        Ok(p) => p,
        Err(e) => panic!("channel pair: {e}"),
    };
    let _ = ours.set_nonblocking(true);
    let _ = theirs.set_nonblocking(true);
    (ours, theirs)
}

/// A TCP super-packet as the tun device hands it over: offload header,
/// then one IP and TCP header and `len` bytes cut every `gso` bytes.
fn super_packet(v6: bool, seq: u32, len: usize, gso: u16) -> Vec<u8> {
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GSO_TCPV6 } else { GSO_TCPV4 },
        hdr_len: 0,
        gso_size: gso,
        csum_start: if v6 { 40 } else { 20 },
        csum_offset: 16,
    };
    let mut read = vec![0u8; VNET_HDR_LEN];
    hdr.write(&mut read);
    read.extend_from_slice(&testpkt::tcp(v6, seq, ACK, &testpkt::payload(len)));
    read
}

/// The segments a super-packet read is cut into.
fn segments_of(read: &[u8]) -> Vec<Vec<u8>> {
    let Some(hdr) = VnetHdr::parse(read) else {
        panic!("no header");
    };
    let mut pkt = read[VNET_HDR_LEN..].to_vec();
    let split = match Split::new(&hdr, &mut pkt) {
        Ok(Some(s)) => s,
        other => panic!("not a super-packet: {other:?}"),
    };
    (0..split.count())
        .map(|i| {
            let mut out = vec![0u8; split.segment_len(i)];
            split.write_segment(&pkt, i, &mut out);
            out
        })
        .collect()
}

fn queued(d: &Device) -> Vec<Vec<u8>> {
    d.send.queued().map(<[u8]>::to_vec).collect()
}

/// Hands `read` to the device as if just read from the tun device.
fn offer(d: &mut Device, read: &[u8], chan: &HandshakeChannel) {
    let slot = match d.free_slot() {
        Some(s) => s,
        None => {
            d.finish_held();
            0
        }
    };
    d.tun_bufs[slot][..read.len()].copy_from_slice(read);
    d.handle_tun_read(slot, read.len(), chan);
}

/// An ordinary packet as the tun device hands it over (no offload).
fn plain_packet(seq: u32) -> Vec<u8> {
    let mut read = vec![0u8; VNET_HDR_LEN];
    VnetHdr::default().write(&mut read);
    read.extend_from_slice(&testpkt::tcp(false, seq, ACK, &testpkt::payload(300)));
    read
}

#[test]
fn parallel_seal_queues_the_serial_paths_datagrams() {
    let started = Instant::now();
    let (chan, _theirs) = channel();
    let (mut serial, _t1) = device(0);
    let (mut par, _t2) = device(1);
    for d in [&mut serial, &mut par] {
        install(d, 1, 2, 1, 2, true);
    }
    // The peer's side, to open what was sealed.
    let mut rx = KeypairSlots::new();
    rx.install(Keypair::new(2, 1, &[2; 32], &[1; 32], true, Instant::now()));
    let mut next_counter = 0u64;
    let mut seq = 1000u32;
    let mut rounds = 0;
    loop {
        // Full-sized segments of both families, an ordinary packet among
        // them (which must go after the super-packets read before it), a
        // batch just at the threshold, five super-packets in a row (more
        // than are held at once) and one below the threshold (the plain
        // path in both devices): 127 datagrams, which the send queue
        // holds without a flush.
        let mut reads = Vec::new();
        for (v6, len, gso) in [
            (false, 64_000, 1368),
            (true, 30_000, 1348),
            (false, 0, 0),
            (false, 8 * 1368, 1368),
            (false, 20_000, 1368),
            (true, 16_000, 1348),
            (false, 12_000, 1368),
            (false, 11_000, 1368),
            (false, 4000, 1368),
        ] {
            reads.push(if len == 0 {
                plain_packet(seq)
            } else {
                super_packet(v6, seq, len, gso)
            });
            seq = seq.wrapping_add(len.max(300) as u32);
        }
        let want: Vec<Vec<u8>> = reads
            .iter()
            .flat_map(|r| {
                if VnetHdr::parse(r).is_some_and(|h| h.gso_type != 0) {
                    segments_of(r)
                } else {
                    vec![r[VNET_HDR_LEN..].to_vec()]
                }
            })
            .collect();
        for r in &reads {
            offer(&mut serial, r, &chan);
            offer(&mut par, r, &chan);
        }
        serial.finish_held();
        par.finish_held();
        let (s, p) = (queued(&serial), queued(&par));
        assert_eq!(s, p);
        assert_eq!(p.len(), want.len());
        // In order, with consecutive counters, each the segment.
        for (i, mut dgram) in p.into_iter().enumerate() {
            let d = match rx.decapsulate(Instant::now(), &mut dgram) {
                Ok(d) => d,
                Err(e) => panic!("datagram {i}: {e}"),
            };
            assert_eq!(d.counter, next_counter + i as u64);
            let plain = &dgram[d.plaintext];
            assert_eq!(&plain[..want[i].len()], &want[i][..], "datagram {i}");
        }
        next_counter += want.len() as u64;
        serial.flush_udp();
        par.flush_udp();

        // More segments than the send queue holds: sealed in parts, the
        // queue flushed in between (the datagrams dropped: no socket) as
        // on the plain path; what is left queued is the same.
        let big = super_packet(false, seq, 20_000, 100);
        for d in [&mut serial, &mut par] {
            offer(d, &big, &chan);
            d.finish_held();
        }
        assert_eq!(queued(&serial), queued(&par));
        next_counter += segments_of(&big).len() as u64;
        serial.flush_udp();
        par.flush_udp();

        let counters = |d: &Device| {
            d.peers[0]
                .as_ref()
                .and_then(|p| p.slots.current())
                .map(Keypair::send_counter)
        };
        assert_eq!(counters(&serial), Some(next_counter));
        assert_eq!(counters(&par), Some(next_counter));
        assert_eq!(serial.stats.drops, par.stats.drops);
        let tx = |d: &Device| d.peers[0].as_ref().map(|p| p.tx_bytes);
        assert_eq!(tx(&serial), tx(&par));
        rounds += 1;
        if par.workers.worker_jobs() > 0 && rounds >= 2 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the worker never sealed");
    }
}

/// The sender's side of the receive tests: seals `inner` under the key
/// of byte `key`, for the receiver's index `receiver`, with `counter`.
fn sealed(key: u8, receiver: u32, counter: u64, inner: &[u8]) -> Vec<u8> {
    let k = DataKey::new(&[key; 32]);
    let mut buf = vec![0u8; HEADROOM + inner.len() + TAILROOM];
    buf[HEADROOM..HEADROOM + inner.len()].copy_from_slice(inner);
    match seal_reserved(&k, receiver, counter, &mut buf, inner.len(), usize::MAX) {
        Ok(n) => buf.truncate(n),
        Err(e) => panic!("seal: {e}"),
    }
    buf
}

/// Consecutive TCP segments of 1000 bytes from `seq` on, to merge.
fn inner(seq: u32) -> Vec<u8> {
    testpkt::tcp(false, seq, ACK, &testpkt::payload(1000))
}

/// One receive batch: entries of datagrams, each entry one read (a run
/// of equal-sized datagrams, as UDP GRO hands them over).
type Batch = Vec<Vec<Vec<u8>>>;

/// Puts `batch` where a socket read would have, and handles it.
fn receive(d: &mut Device, batch: &Batch, chan: &HandshakeChannel) {
    d.recv4.got.clear();
    for (i, entry) in batch.iter().enumerate() {
        let buf = &mut d.recv4.bufs[i];
        let mut at = 0;
        for g in entry {
            buf[at..at + g.len()].copy_from_slice(g);
            at += g.len();
        }
        d.recv4.got.push(Received {
            len: at,
            from: peer_addr(),
            local: None,
            segment: (entry.len() > 1).then(|| entry[0].len()),
        });
    }
    assert!(d.receive_batch(true, batch.len(), chan).is_ok());
}

/// What a batch left behind that the two paths must agree on.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// Writes to the tun device, in order.
    tun: Vec<Vec<u8>>,
    drops: DropCounters,
    rx_bytes: u64,
    activity: u8,
    /// Local indices of the previous, current and next keypairs.
    slots: [Option<u32>; 3],
    /// Which of the counters 0..10,000 each keypair would still accept.
    windows: Vec<Vec<bool>>,
    /// Messages to the handshake role.
    to_handshake: usize,
}

fn outcome(
    d: &Device,
    tun: &UnixDatagram,
    theirs: &Channel<HandshakeToTransport, TransportToHandshake>,
) -> Outcome {
    let mut writes = Vec::new();
    let mut buf = vec![0u8; 1 << 17];
    while let Ok(n) = tun.recv(&mut buf) {
        writes.push(buf[..n].to_vec());
    }
    let Some(p) = d.peers[0].as_ref() else {
        panic!("no peer");
    };
    let kps = [p.slots.previous(), p.slots.current(), p.slots.next()];
    Outcome {
        tun: writes,
        drops: d.stats.drops.clone(),
        rx_bytes: p.rx_bytes,
        activity: p.activity,
        slots: kps.map(|k| k.map(Keypair::local_index)),
        windows: kps
            .iter()
            .flatten()
            .map(|k| (0..10_000).map(|c| k.replay().would_accept(c)).collect())
            .collect(),
        to_handshake: std::iter::from_fn(|| theirs.recv().ok()).count(),
    }
}

/// A keypair to install as responder before a batch: local and remote
/// index, send and receive key bytes.
type Responder = (u32, u32, u8, u8);

/// The receive scenario, batch by batch: (what to install first, the
/// batch).
fn receive_scenario() -> Vec<(Option<Responder>, Batch)> {
    let mut seq = 5000u32;
    let mut data = |key: u8, receiver: u32, counter: u64| {
        let m = sealed(key, receiver, counter, &inner(seq));
        seq = seq.wrapping_add(1000);
        m
    };
    // Keypair 2 (key 1 from the peer) is the receiver's current one.
    let first: Batch = vec![
        (0..20).map(|c| data(1, 2, c)).collect(),
        vec![data(1, 2, 20)],
        (21..32).map(|c| data(1, 2, c)).collect(),
    ];
    let mut run: Vec<Vec<u8>> = [35, 33, 34, 33, 36, 5]
        .into_iter()
        .map(|c| data(1, 2, c))
        .collect();
    let mut forged = data(1, 2, 37);
    forged[40] ^= 1;
    run.push(forged);
    run.push(data(1, 2, 37));
    let mut unknown = data(1, 2, 38);
    unknown[4..8].copy_from_slice(&99u32.to_le_bytes());
    run.push(unknown);
    run.extend((39..46).map(|c| data(1, 2, c)));
    let mut handshake = vec![0u8; 148];
    handshake[0] = 1;
    let second: Batch = vec![
        // Reordered within the window, a duplicate of this batch's own,
        // a replay of the last batch's, a forgery before the genuine
        // packet with its counter, an unknown index.
        run,
        // A keepalive far ahead, then a counter now too old for the
        // window (never seen, but 8,968 behind).
        vec![sealed(1, 2, 9000, &[])],
        vec![data(1, 2, 32)],
        vec![handshake],
        // Too short to be a data message.
        vec![vec![4, 0, 0, 0, 2, 0, 0, 0]],
    ];
    // A responder's keypair 3 (key 4 from the peer) waits in next; the
    // peer's first packet under it confirms it in mid-batch, and the
    // packets still under keypair 2 around it are accepted as before.
    let third: Batch = vec![
        vec![data(1, 2, 9001)],
        (0..10).map(|c| data(4, 3, c)).collect(),
        (9002..9006).map(|c| data(1, 2, c)).collect(),
        (10..20).map(|c| data(4, 3, c)).collect(),
        vec![data(4, 3, 3)],
    ];
    vec![(None, first), (None, second), (Some((3, 4, 3, 4)), third)]
}

#[test]
fn parallel_open_does_what_the_serial_path_does() {
    let started = Instant::now();
    loop {
        let (mut serial, tun1) = device(0);
        let (mut par, tun2) = device(1);
        let (chan1, theirs1) = channel();
        let (chan2, theirs2) = channel();
        for d in [&mut serial, &mut par] {
            install(d, 2, 1, 2, 1, true);
        }
        let mut outcomes = Vec::new();
        for (k, (order, batch)) in receive_scenario().into_iter().enumerate() {
            if let Some((local, remote, send, recv)) = order {
                for d in [&mut serial, &mut par] {
                    install(d, local, remote, send, recv, false);
                }
            }
            receive(&mut serial, &batch, &chan1);
            receive(&mut par, &batch, &chan2);
            let s = outcome(&serial, &tun1, &theirs1);
            let p = outcome(&par, &tun2, &theirs2);
            assert_eq!(s, p, "batch {k}");
            outcomes.push(p);
        }
        // And what they agree on is right.
        let [first, second, third] = &outcomes[..] else {
            panic!("three batches");
        };
        let inner_bytes = |o: &Outcome| -> usize {
            o.tun
                .iter()
                .map(|w| w.len() - VNET_HDR_LEN - 52)
                .sum::<usize>()
        };
        // 32 segments of 1000 bytes, merged into few writes.
        assert_eq!(inner_bytes(first), 32 * 1000);
        assert!(first.tun.len() < 32);
        assert_eq!(first.drops, DropCounters::default());
        let d = &second.drops;
        assert_eq!((d.replay, d.auth_failed, d.unknown_index), (3, 1, 1));
        assert_eq!(d.malformed, 1);
        assert_eq!(second.to_handshake, 1);
        // 35 33 34 36 37 and 39..=45, in order of arrival.
        assert_eq!(inner_bytes(second), 12 * 1000);
        assert!(!second.windows[0][9000] && second.windows[0][9001]);
        assert!(!second.windows[0][33] && !second.windows[0][32]);
        // Keypair 3 confirmed: 2 is previous; all 25 data packets but the
        // replayed counter 3 went through.
        assert_eq!(third.slots, [Some(2), Some(3), None]);
        assert_eq!(third.drops.replay, second.drops.replay + 1);
        assert_eq!(inner_bytes(third), 25 * 1000);
        if par.workers.worker_jobs() > 0 {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "the worker never opened");
    }
}

/// Sealing a super-packet and opening a receive batch on the batched
/// path allocate nothing once warm: buffers, job lists and plans keep
/// their capacity. (The counts are this thread's; the workers run only
/// ring's seal and open, which do not allocate.)
#[test]
fn batched_paths_allocate_nothing_per_packet() {
    let (mut d, tun) = device(1);
    install(&mut d, 1, 2, 1, 2, true);
    let (chan, _theirs) = channel();
    let rounds = 12;
    let reads: Vec<Vec<u8>> = (0..rounds)
        .map(|r| super_packet(false, r * 64_000, 64_000, 1368))
        .collect();
    let batches: Vec<Batch> = (0..rounds as u64)
        .map(|r| {
            let c = r * 40;
            vec![
                (c..c + 30)
                    .map(|c| sealed(2, 1, c, &inner(c as u32 * 1000)))
                    .collect(),
                (c + 30..c + 40)
                    .map(|c| sealed(2, 1, c, &inner(c as u32 * 1000)))
                    .collect(),
            ]
        })
        .collect();
    let mut sink = vec![0u8; 1 << 17];
    let round = |d: &mut Device, r: usize, sink: &mut [u8]| {
        offer(d, &reads[r], &chan);
        d.finish_held();
        d.flush_udp();
        receive(d, &batches[r], &chan);
        while tun.recv(sink).is_ok() {}
    };
    for r in 0..4 {
        round(&mut d, r, &mut sink);
    }
    let before = Usage::now().allocated;
    for r in 4..rounds as usize {
        round(&mut d, r, &mut sink);
    }
    assert_eq!(Usage::now().allocated - before, 0, "bytes allocated");
    // They did go through: 40 packets a round opened, 47 segments sealed.
    let p = d.peers[0]
        .as_ref()
        .map(|p| (p.rx_bytes, p.slots.current().map(Keypair::send_counter)));
    assert!(p.is_some_and(|(rx, _)| rx > 0));
    assert_eq!(p.and_then(|p| p.1), Some(47 * rounds as u64));
}
