//! Batched UDP I/O for the data plane: `recvmmsg` and `sendmmsg`, so a
//! burst of packets costs one system call each way, not one per packet.
//!
//! Used only by the transport process's loop (`device`). The sockets are
//! opened and bound by the parent and handed over as file descriptors.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};

use proto::ipc::SourceAddr;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Largest datagram we read: a full 64 KiB IP packet plus our overhead
/// never arrives (the tun MTU is far lower), but reading the whole thing
/// lets an oversized datagram be counted as malformed, not truncated.
pub const MAX_DATAGRAM: usize = 65_536;

fn to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(a) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(std::net::SocketAddrV4::new(
            a.ip(),
            a.port(),
        )));
    }
    s.as_sockaddr_in6().map(|a| {
        SocketAddr::V6(std::net::SocketAddrV6::new(
            a.ip(),
            a.port(),
            a.flowinfo(),
            a.scope_id(),
        ))
    })
}

fn from_std(a: &SocketAddr) -> SockaddrStorage {
    SockaddrStorage::from(*a)
}

/// One received datagram: `len` bytes from `from`, which arrived at the
/// local address `local`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub from: SocketAddr,
    pub local: Option<SourceAddr>,
}

/// What a flush could not do as asked.
#[derive(Debug, Default)]
pub struct SendReport {
    /// Datagrams the kernel did not take.
    pub unsent: Vec<Unsent>,
    /// Tags of datagrams whose source address the kernel refused; each
    /// was sent again without one.
    pub stale_src: Vec<u32>,
}

/// Receive side: preallocated buffers and headers, reused for every call.
pub struct RecvBatch {
    headers: MultiHeaders<SockaddrStorage>,
    pub bufs: Vec<Vec<u8>>,
    /// `(length, source)` of each datagram of the last call, in order;
    /// datagram `i` is `bufs[i][..len]`.
    pub got: Vec<Received>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            headers: MultiHeaders::preallocate(BATCH, None),
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            got: Vec::with_capacity(BATCH),
        }
    }
}

impl RecvBatch {
    /// Reads up to [`BATCH`] datagrams without blocking. Returns how many.
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let res = recvmmsg(
            sock.as_raw_fd(),
            &mut self.headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        );
        match res {
            Ok(msgs) => {
                for m in msgs {
                    if let Some(from) = m.address.as_ref().and_then(to_std) {
                        self.got.push(Received {
                            len: m.bytes,
                            from,
                            local: None,
                        });
                    }
                }
                Ok(self.got.len())
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

/// Send side: datagrams queued with their destination and a caller's tag
/// (the transport uses its peer id), flushed with one `sendmmsg` per
/// socket and batch.
pub struct SendBatch {
    headers: MultiHeaders<SockaddrStorage>,
    queue: Vec<(Vec<u8>, SocketAddr, u32)>,
    spare: Vec<Vec<u8>>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            headers: MultiHeaders::preallocate(BATCH, None),
            queue: Vec::with_capacity(BATCH),
            spare: Vec::new(),
        }
    }
}

/// A datagram the kernel did not take: whose (the tag) and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsent {
    pub tag: u32,
    pub len: usize,
}

impl SendBatch {
    /// A cleared buffer to build a datagram in (recycled from earlier sends).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    pub fn push(&mut self, datagram: Vec<u8>, to: SocketAddr, _src: Option<SourceAddr>, tag: u32) {
        self.queue.push((datagram, to, tag));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued: IPv4 destinations on `v4`, IPv6 on `v6`.
    /// Datagrams for a family without a socket, and ones the kernel
    /// refuses (unreachable, too big), are dropped — UDP is lossy — and
    /// reported in `unsent` so the caller counts only what left.
    pub fn flush(
        &mut self,
        v4: Option<&UdpSocket>,
        v6: Option<&UdpSocket>,
        report: &mut SendReport,
    ) {
        let unsent = &mut report.unsent;
        let queue = std::mem::take(&mut self.queue);
        for (want_v4, sock) in [(true, v4), (false, v6)] {
            let group: Vec<&(Vec<u8>, SocketAddr, u32)> = queue
                .iter()
                .filter(|(_, a, _)| a.is_ipv4() == want_v4)
                .collect();
            if group.is_empty() {
                continue;
            }
            let Some(sock) = sock else {
                unsent.extend(group.iter().map(|(b, _, t)| Unsent {
                    tag: *t,
                    len: b.len(),
                }));
                continue;
            };
            for chunk in group.chunks(BATCH) {
                self.send_chunk(sock, chunk, unsent);
            }
        }
        for (buf, _, _) in queue {
            if self.spare.len() < BATCH * 2 {
                self.spare.push(buf);
            }
        }
    }

    fn send_chunk(
        &mut self,
        sock: &UdpSocket,
        chunk: &[&(Vec<u8>, SocketAddr, u32)],
        unsent: &mut Vec<Unsent>,
    ) {
        let mut done = 0;
        // Each failure consumes a datagram, so this ends; the bound only
        // guards against a kernel that keeps saying EINTR.
        for _ in 0..chunk.len() * 2 + 4 {
            if done >= chunk.len() {
                return;
            }
            let rest = &chunk[done..];
            let iovs: Vec<[IoSlice<'_>; 1]> = rest
                .iter()
                .map(|(b, _, _)| [IoSlice::new(&b[..])])
                .collect();
            let addrs: Vec<Option<SockaddrStorage>> =
                rest.iter().map(|(_, a, _)| Some(from_std(a))).collect();
            match sendmmsg(
                sock.as_raw_fd(),
                &mut self.headers,
                iovs.iter(),
                &addrs,
                [],
                MsgFlags::empty(),
            ) {
                Ok(res) => {
                    let n = res.count();
                    if n == 0 {
                        break;
                    }
                    done += n;
                }
                Err(Errno::EINTR) => {}
                // sendmmsg reports an error only when the first datagram
                // of the rest failed: drop that one, go on with the others.
                Err(_) => {
                    let (b, _, t) = chunk[done];
                    unsent.push(Unsent {
                        tag: *t,
                        len: b.len(),
                    });
                    done += 1;
                }
            }
        }
        for (b, _, t) in &chunk[done.min(chunk.len())..] {
            unsent.push(Unsent {
                tag: *t,
                len: b.len(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trip_on_loopback() {
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = b.local_addr().expect("addr");
        let mut s = SendBatch::default();
        for i in 0..40u8 {
            let mut d = s.buffer();
            d.extend_from_slice(&[i; 100]);
            s.push(d, to, None, 7);
        }
        let mut report = SendReport::default();
        s.flush(Some(&a), None, &mut report);
        assert!(report.unsent.is_empty());
        let mut r = RecvBatch::default();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 40 && std::time::Instant::now() < deadline {
            let n = r.recv(&b).expect("recv");
            for i in 0..n {
                let crate::udp::Received { len, from, .. } = r.got[i];
                assert_eq!(len, 100);
                assert_eq!(from, a.local_addr().expect("addr"));
                seen.push(r.bufs[i][0]);
            }
        }
        assert_eq!(seen, (0..40u8).collect::<Vec<_>>());
    }

    #[test]
    fn refused_datagrams_are_reported_with_their_tag() {
        // A datagram larger than UDP allows is refused (EMSGSIZE); the
        // ones around it still go.
        let a = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").expect("bind");
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
        let mut r = RecvBatch::default();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while got.len() < 2 && std::time::Instant::now() < deadline {
            let n = r.recv(&b).expect("recv");
            got.extend((0..n).map(|i| r.bufs[i][0]));
        }
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
}
