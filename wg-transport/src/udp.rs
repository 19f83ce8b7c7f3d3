//! Batched UDP I/O for the data plane: `recvmmsg` and `sendmmsg`, so a
//! burst of packets costs one system call each way, not one per packet.
//!
//! Used only by the transport process's loop (`device`). The sockets are
//! opened and bound by the parent and handed over as file descriptors.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
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

/// Receive side: preallocated buffers and headers, reused for every call.
pub struct RecvBatch {
    headers: MultiHeaders<SockaddrStorage>,
    pub bufs: Vec<Vec<u8>>,
    /// `(length, source)` of each datagram of the last call, in order;
    /// datagram `i` is `bufs[i][..len]`.
    pub got: Vec<(usize, SocketAddr)>,
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
                        self.got.push((m.bytes, from));
                    }
                }
                Ok(self.got.len())
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(io::Error::from(e)),
        }
    }
}

/// Send side: datagrams queued with their destination, flushed with one
/// `sendmmsg` per socket.
pub struct SendBatch {
    headers: MultiHeaders<SockaddrStorage>,
    queue: Vec<(Vec<u8>, SocketAddr)>,
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

impl SendBatch {
    /// A cleared buffer to build a datagram in (recycled from earlier sends).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    pub fn push(&mut self, datagram: Vec<u8>, to: SocketAddr) {
        self.queue.push((datagram, to));
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Sends everything queued: IPv4 destinations on `v4`, IPv6 on `v6`.
    /// Datagrams for a family without a socket, and ones the kernel
    /// refuses, are dropped (UDP is lossy; the count is returned).
    pub fn flush(&mut self, v4: Option<&UdpSocket>, v6: Option<&UdpSocket>) -> usize {
        let mut dropped = 0;
        let queue = std::mem::take(&mut self.queue);
        for (want_v4, sock) in [(true, v4), (false, v6)] {
            let group: Vec<&(Vec<u8>, SocketAddr)> = queue
                .iter()
                .filter(|(_, a)| a.is_ipv4() == want_v4)
                .collect();
            if group.is_empty() {
                continue;
            }
            let Some(sock) = sock else {
                dropped += group.len();
                continue;
            };
            for chunk in group.chunks(BATCH) {
                dropped += self.send_chunk(sock, chunk);
            }
        }
        for (buf, _) in queue {
            if self.spare.len() < BATCH * 2 {
                self.spare.push(buf);
            }
        }
        dropped
    }

    fn send_chunk(&mut self, sock: &UdpSocket, chunk: &[&(Vec<u8>, SocketAddr)]) -> usize {
        let mut sent = 0;
        let mut attempts = 0;
        while sent < chunk.len() && attempts < 4 {
            attempts += 1;
            let rest = &chunk[sent..];
            let iovs: Vec<[IoSlice<'_>; 1]> =
                rest.iter().map(|(b, _)| [IoSlice::new(&b[..])]).collect();
            let addrs: Vec<Option<SockaddrStorage>> =
                rest.iter().map(|(_, a)| Some(from_std(a))).collect();
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
                    sent += n;
                }
                Err(Errno::EINTR) => {}
                // The first datagram of the rest failed (unreachable,
                // too big...): skip it and go on with the others.
                Err(_) => sent += 1,
            }
        }
        chunk.len() - sent.min(chunk.len())
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
            s.push(d, to);
        }
        assert_eq!(s.flush(Some(&a), None), 0);
        let mut r = RecvBatch::default();
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 40 && std::time::Instant::now() < deadline {
            let n = r.recv(&b).expect("recv");
            for i in 0..n {
                let (len, from) = r.got[i];
                assert_eq!(len, 100);
                assert_eq!(from, a.local_addr().expect("addr"));
                seen.push(r.bufs[i][0]);
            }
        }
        assert_eq!(seen, (0..40u8).collect::<Vec<_>>());
    }

    #[test]
    fn missing_family_socket_drops() {
        let mut s = SendBatch::default();
        s.push(vec![1], "[::1]:9".parse().expect("literal"));
        assert_eq!(s.flush(None, None), 1);
        assert!(s.is_empty());
    }
}
