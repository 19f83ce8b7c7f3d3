//! Batched UDP I/O for the data plane: `recvmmsg` and `sendmmsg`, so a
//! burst of packets costs one system call each way, not one per packet —
//! with each datagram's local address, for "sticky" source addresses.
//!
//! Used only by the transport process's loop (`device`). The sockets are
//! opened and bound by the parent and handed over as file descriptors;
//! `device` calls [`enable_pktinfo`] and [`enable_gro`] on each when it
//! adopts them.
//!
//! Segmentation offloads: a run of queued datagrams to one destination,
//! all of one length but a shorter last, goes as one message with
//! `UDP_SEGMENT` (UDP GSO; see [`SendBatch`] for when the kernel refuses),
//! and a received buffer may hold such a run ([`Received::segment`], UDP
//! GRO), which [`segments`] cuts up.
//!
//! Sticky sources: every received datagram carries the local address it
//! was sent to and the interface it came in on ([`Received::local`], from
//! `IP_PKTINFO` / `IPV6_PKTINFO`). The caller remembers it per peer and
//! passes it back with each datagram to that peer, which then leaves from
//! that address — as Linux's per-peer source cache and wireguard-go's
//! sticky sockets do — so a multihomed host answers from the address the
//! peer used rather than the route's preferred source (which a NAT or a
//! stateful firewall in between would drop). When the address is no longer
//! local the kernel refuses it; the datagram then goes again at once
//! without a source and its tag is reported in [`SendReport::stale_src`],
//! so the caller forgets that peer's source.
//!
//! The two system calls are made on `libc` directly, not through nix: in
//! nix 0.29 `sendmmsg` gives every datagram of a batch the same control
//! messages (here each one has its own source), and neither call resets
//! the address and control lengths the kernel overwrote on the previous
//! call. Headers and iovecs are rebuilt on the stack for every call from
//! buffers preallocated here, so nothing is allocated per datagram. The
//! module's unsafe code is the two calls, the `CMSG_*` arithmetic, and the
//! copies between raw bytes and plain C structs (`Pod`, `get`, `put`).

use std::io;
use std::mem::{align_of, size_of};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

use nix::sys::socket::{setsockopt, sockopt};
use proto::ipc::SourceAddr;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Datagram buffers kept for reuse: a flush of the transport's fullest
/// queue (the segments of a few super-packets) allocates nothing.
const SPARE_MAX: usize = 256;
/// Largest datagram we read: a full 64 KiB IP packet plus our overhead
/// never arrives (the tun MTU is far lower), but reading the whole thing
/// lets an oversized datagram be counted as malformed, not truncated.
pub const MAX_DATAGRAM: usize = 65_536;
/// Bytes a receive call asks for at most, judged by the size of the last
/// call's datagrams: 32 UDP GRO runs of 64 KiB are 2 MiB, some 4 ms of
/// opening on one core, and all that time the packets going the other way
/// (the ACKs of the very stream being received) wait in the tun device.
/// Bursts of late ACKs make a sender's congestion control (BBR counts ACK
/// aggregation) keep more in flight, a standing queue every packet of
/// the tunnel waits in; smaller calls under bulk keep both directions
/// moving (RTT under load, issue 12) at the cost of a system call per
/// 256 KiB.
const RECV_BYTES: usize = 256 << 10;

/// Turns on `UDP_GRO`: the kernel may then hand over several datagrams of
/// one sender, of one size but a shorter last, in one buffer
/// ([`Received::segment`]), as it received them (a GSO message that came
/// over a veth, or what the NIC's GRO merged), instead of cutting them
/// up for us one by one. Best effort: a kernel without it (before 5.0)
/// refuses, and datagrams come one by one as before.
pub fn enable_gro(sock: &UdpSocket) -> bool {
    setsockopt(sock, sockopt::UdpGroSegment, &true).is_ok()
}

/// Turns on `IP_PKTINFO` (IPv4 socket) or `IPV6_RECVPKTINFO` (IPv6
/// socket), so the datagrams [`RecvBatch::recv`] reads carry their local
/// address. Sending from a chosen source needs no option.
pub fn enable_pktinfo(sock: &UdpSocket, v6: bool) -> io::Result<()> {
    if v6 {
        setsockopt(sock, sockopt::Ipv6RecvPacketInfo, &true)
    } else {
        setsockopt(sock, sockopt::Ipv4PacketInfo, &true)
    }
    .map_err(io::Error::from)
}

// ------------------------------------------------------- raw C layouts

/// Plain C structs the kernel reads and writes, copied to and from byte
/// buffers so that no reference to kernel-written memory is ever typed as
/// anything but bytes.
///
/// # Safety
///
/// Only for `repr(C)` types made of integers and byte arrays with no
/// padding bytes: every bit pattern is then a valid value, and writing one
/// leaves no uninitialised byte in the buffer.
unsafe trait Pod: Copy {}

// SAFETY: each is the kernel's struct of integers and byte arrays, laid
// out without padding on Linux (cmsghdr: size_t, int, int; in_pktinfo:
// int, two in_addr; in6_pktinfo: in6_addr, unsigned int; sockaddr_in and
// sockaddr_in6: their fixed fields).
unsafe impl Pod for libc::cmsghdr {}
// SAFETY: as above.
unsafe impl Pod for libc::in_pktinfo {}
// SAFETY: as above.
unsafe impl Pod for libc::in6_pktinfo {}
// SAFETY: as above.
unsafe impl Pod for libc::sockaddr_in {}
// SAFETY: as above.
unsafe impl Pod for libc::sockaddr_in6 {}
// SAFETY: an integer.
unsafe impl Pod for libc::sa_family_t {}
// SAFETY: an integer (UDP_GRO's segment size).
unsafe impl Pod for libc::c_int {}

// No padding: each size is the sum of its fields'.
const _: () = assert!(size_of::<libc::cmsghdr>() == size_of::<libc::size_t>() + 8);
const _: () = assert!(size_of::<libc::in_pktinfo>() == 12);
const _: () = assert!(size_of::<libc::in6_pktinfo>() == 20);
const _: () = assert!(size_of::<libc::sockaddr_in>() == 16);
const _: () = assert!(size_of::<libc::sockaddr_in6>() == 28);

/// A `T` from `bytes[at..]`, or `None` if it does not fit.
fn get<T: Pod>(bytes: &[u8], at: usize) -> Option<T> {
    let src = bytes.get(at..at.checked_add(size_of::<T>())?)?;
    // SAFETY: `src` is `size_of::<T>()` initialised bytes, read_unaligned
    // needs no alignment, and any bit pattern is a valid `T` (Pod).
    Some(unsafe { std::ptr::read_unaligned(src.as_ptr().cast::<T>()) })
}

/// Writes `v` at `bytes[at..]`; `None` (nothing written) if it does not fit.
fn put<T: Pod>(bytes: &mut [u8], at: usize, v: T) -> Option<()> {
    let dst = bytes.get_mut(at..at.checked_add(size_of::<T>())?)?;
    // SAFETY: `dst` is `size_of::<T>()` writable bytes, write_unaligned
    // needs no alignment, and a Pod value has no padding, so every byte of
    // the buffer stays initialised.
    unsafe { std::ptr::write_unaligned(dst.as_mut_ptr().cast::<T>(), v) };
    Some(())
}

/// `CMSG_LEN`: a control message's length with `data` bytes of payload.
const fn cmsg_len(data: usize) -> usize {
    // SAFETY: CMSG_LEN is arithmetic on its argument; it reads no memory.
    unsafe { libc::CMSG_LEN(data as libc::c_uint) as usize }
}

/// `CMSG_SPACE`: room a control message with `data` bytes of payload
/// takes, up to where the next one starts.
const fn cmsg_space(data: usize) -> usize {
    // SAFETY: CMSG_SPACE is arithmetic on its argument; it reads no memory.
    unsafe { libc::CMSG_SPACE(data as libc::c_uint) as usize }
}

/// Where a control message's payload starts.
const CMSG_HDR: usize = cmsg_len(0);
const PKTINFO4: usize = size_of::<libc::in_pktinfo>();
const PKTINFO6: usize = size_of::<libc::in6_pktinfo>();

/// Control buffer of one datagram: the pktinfo message, with room to spare
/// for others a socket option might add one day (the kernel drops what
/// does not fit and sets `MSG_CTRUNC`; we would lose only the source).
const CONTROL_LEN: usize = 128;

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Control([u8; CONTROL_LEN]);

const NAME_LEN: usize = size_of::<libc::sockaddr_in6>();

/// Room for a peer's address, either family.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Name([u8; NAME_LEN]);

// The kernel expects control messages aligned for `cmsghdr`.
const _: () = assert!(align_of::<Control>() >= align_of::<libc::cmsghdr>());
const _: () = assert!(cmsg_space(PKTINFO4) <= CONTROL_LEN);
const _: () = assert!(cmsg_space(PKTINFO6) <= CONTROL_LEN);
const _: () = assert!(align_of::<Name>() >= align_of::<libc::sockaddr_in6>());
const _: () = assert!(size_of::<libc::sockaddr_in>() <= NAME_LEN);

const EMPTY_HEADER: libc::mmsghdr = libc::mmsghdr {
    msg_hdr: libc::msghdr {
        msg_name: std::ptr::null_mut(),
        msg_namelen: 0,
        msg_iov: std::ptr::null_mut(),
        msg_iovlen: 0,
        msg_control: std::ptr::null_mut(),
        msg_controllen: 0,
        msg_flags: 0,
    },
    msg_len: 0,
};

/// Writes `a` into `name` as the kernel's `sockaddr_in` / `sockaddr_in6`
/// and returns its length.
fn encode_addr(a: &SocketAddr, name: &mut Name) -> libc::socklen_t {
    let written = match a {
        SocketAddr::V4(a) => {
            let s = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            put(&mut name.0, 0, s).map(|()| size_of::<libc::sockaddr_in>())
        }
        SocketAddr::V6(a) => {
            // As std does, flowinfo and scope id pass through unconverted.
            let s = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            put(&mut name.0, 0, s).map(|()| size_of::<libc::sockaddr_in6>())
        }
    };
    // Both fit (asserted above); 0 would make the kernel refuse the datagram.
    written.unwrap_or(0) as libc::socklen_t
}

/// The address the kernel wrote into a received datagram's name, if it is
/// a whole `sockaddr_in` / `sockaddr_in6`.
fn decode_addr(name: &[u8]) -> Option<SocketAddr> {
    let family: libc::sa_family_t = get(name, 0)?;
    match libc::c_int::from(family) {
        libc::AF_INET => {
            let s: libc::sockaddr_in = get(name, 0)?;
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(s.sin_addr.s_addr.to_ne_bytes()),
                u16::from_be(s.sin_port),
            )))
        }
        libc::AF_INET6 => {
            let s: libc::sockaddr_in6 = get(name, 0)?;
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(s.sin6_addr.s6_addr),
                u16::from_be(s.sin6_port),
                s.sin6_flowinfo,
                s.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

/// Writes into `ctl` the control message that makes the kernel send from
/// `src`, and returns its length; `None` if `src` is not of the socket's
/// family (`v4`), so it cannot be the source of this datagram.
fn encode_src(src: &SourceAddr, v4: bool, ctl: &mut Control) -> Option<usize> {
    match (src.ip, v4) {
        (IpAddr::V4(ip), true) => {
            // spec_dst is the source; ifindex 0 leaves the interface to
            // routing, as Linux WireGuard does. A spec_dst that is not a
            // local address is refused (ENETUNREACH; EINVAL on older
            // kernels).
            let info = libc::in_pktinfo {
                ipi_ifindex: 0,
                ipi_spec_dst: libc::in_addr {
                    s_addr: u32::from_ne_bytes(ip.octets()),
                },
                ipi_addr: libc::in_addr { s_addr: 0 },
            };
            let hdr = libc::cmsghdr {
                cmsg_len: cmsg_len(PKTINFO4) as _,
                cmsg_level: libc::IPPROTO_IP,
                cmsg_type: libc::IP_PKTINFO,
            };
            put(&mut ctl.0, 0, hdr)?;
            put(&mut ctl.0, CMSG_HDR, info)?;
            Some(cmsg_space(PKTINFO4))
        }
        (IpAddr::V6(ip), false) => {
            // A link-local address is ambiguous without its link; any
            // other source leaves the interface to routing, as for IPv4.
            let info = libc::in6_pktinfo {
                ipi6_addr: libc::in6_addr {
                    s6_addr: ip.octets(),
                },
                ipi6_ifindex: if is_link_local(&ip) { src.ifindex } else { 0 },
            };
            let hdr = libc::cmsghdr {
                cmsg_len: cmsg_len(PKTINFO6) as _,
                cmsg_level: libc::IPPROTO_IPV6,
                cmsg_type: libc::IPV6_PKTINFO,
            };
            put(&mut ctl.0, 0, hdr)?;
            put(&mut ctl.0, CMSG_HDR, info)?;
            Some(cmsg_space(PKTINFO6))
        }
        _ => None,
    }
}

/// What a received datagram's control messages say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct RecvControl {
    /// The pktinfo: the address the peer sent to and the interface the
    /// datagram came in on.
    local: Option<SourceAddr>,
    /// UDP GRO: the buffer holds datagrams of this size back to back (the
    /// last may be shorter).
    segment: Option<usize>,
}

/// Reads a received datagram's control messages. Any length the kernel
/// could write is checked: malformed input ends the reading, keeping
/// what was read before it.
fn parse_control(ctl: &[u8]) -> RecvControl {
    let mut out = RecvControl::default();
    let mut at = 0;
    // Each step moves on by at least CMSG_HDR bytes, so this ends.
    while let Some(hdr) = get::<libc::cmsghdr>(ctl, at) {
        let len = hdr.cmsg_len;
        if len < CMSG_HDR || len > ctl.len() - at {
            break;
        }
        let data = &ctl[at + CMSG_HDR..at + len];
        match (hdr.cmsg_level, hdr.cmsg_type) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // ipi_addr is the destination the peer used, which Linux
                // WireGuard also remembers (ip_hdr(skb)->daddr).
                if let Some(info) = get::<libc::in_pktinfo>(data, 0) {
                    out.local = Some(SourceAddr {
                        ip: IpAddr::V4(Ipv4Addr::from(info.ipi_addr.s_addr.to_ne_bytes())),
                        ifindex: u32::try_from(info.ipi_ifindex).unwrap_or(0),
                    });
                }
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // A v4-mapped address (possible only on a dual-stack
                // socket, which the parent does not open) is kept as is.
                if let Some(info) = get::<libc::in6_pktinfo>(data, 0) {
                    out.local = Some(SourceAddr {
                        ip: IpAddr::V6(Ipv6Addr::from(info.ipi6_addr.s6_addr)),
                        ifindex: info.ipi6_ifindex,
                    });
                }
            }
            (libc::SOL_UDP, libc::UDP_GRO) => {
                out.segment = get::<libc::c_int>(data, 0)
                    .and_then(|s| usize::try_from(s).ok())
                    .filter(|&s| s > 0);
            }
            _ => {}
        }
        // CMSG_SPACE of the payload is CMSG_ALIGN of the whole message
        // (the header is aligned); `len` is at most CONTROL_LEN here.
        at += cmsg_space(len - CMSG_HDR);
    }
    out
}

// -------------------------------------------------------------- receive

/// One datagram of the last [`RecvBatch::recv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    /// The peer.
    pub from: SocketAddr,
    /// The local address the peer sent to and the interface the datagram
    /// came in on; `None` if the socket did not say ([`enable_pktinfo`]
    /// not called, or the control message was cut).
    pub local: Option<SourceAddr>,
    /// With [`enable_gro`]: the buffer holds `len` bytes of datagrams of
    /// this size back to back, the last possibly shorter ([`segments`]).
    pub segment: Option<usize>,
}

/// The datagrams in `len` bytes cut every `segment` bytes (one, the
/// whole, without a segment size): their ranges, in order.
pub fn segments(
    len: usize,
    segment: Option<usize>,
) -> impl Iterator<Item = std::ops::Range<usize>> {
    let step = match segment {
        Some(s) if s > 0 && s < len => s,
        _ => len.max(1),
    };
    // An empty datagram is one too (the caller counts it as malformed).
    let n = len.div_ceil(step).max(1);
    (0..n).map(move |k| k * step..((k + 1) * step).min(len))
}

/// Receive side: preallocated buffers, addresses and control buffers,
/// reused for every call.
pub struct RecvBatch {
    /// Datagram `i` of the last call is `bufs[i][..got[i].len]`. The caller
    /// may take a buffer out and put it back; a missing or shortened one
    /// is replaced at the next call.
    pub bufs: Vec<Vec<u8>>,
    pub got: Vec<Received>,
    names: Box<[Name; BATCH]>,
    control: Box<[Control; BATCH]>,
    /// Datagrams the next call asks for (see [`RECV_BYTES`]).
    want: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            bufs: (0..BATCH).map(|_| vec![0u8; MAX_DATAGRAM]).collect(),
            got: Vec::with_capacity(BATCH),
            names: Box::new([Name([0; NAME_LEN]); BATCH]),
            control: Box::new([Control([0; CONTROL_LEN]); BATCH]),
            want: BATCH,
        }
    }
}

impl RecvBatch {
    /// Reads up to [`BATCH`] datagrams without blocking, fewer while they
    /// are big (see [`RECV_BYTES`]). Returns how many are in `got` (a
    /// datagram without a usable source address is skipped).
    pub fn recv(&mut self, sock: &UdpSocket) -> io::Result<usize> {
        self.got.clear();
        self.bufs.resize_with(BATCH, Vec::new);
        for b in &mut self.bufs {
            if b.len() < MAX_DATAGRAM {
                b.resize(MAX_DATAGRAM, 0);
            }
        }
        let mut iovs = [libc::iovec::default(); BATCH];
        for (iov, b) in iovs.iter_mut().zip(&mut self.bufs) {
            iov.iov_base = b.as_mut_ptr().cast();
            iov.iov_len = b.len();
        }
        let iov = iovs.as_mut_ptr();
        let names = self.names.as_mut_ptr();
        let control = self.control.as_mut_ptr();
        // Every length is set afresh: the kernel overwrote the last ones.
        let mut hdrs = [EMPTY_HEADER; BATCH];
        for (i, h) in hdrs.iter_mut().enumerate() {
            h.msg_hdr.msg_name = names.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = NAME_LEN as libc::socklen_t;
            h.msg_hdr.msg_iov = iov.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = control.wrapping_add(i).cast();
            h.msg_hdr.msg_controllen = CONTROL_LEN as _;
        }
        // SAFETY: the BATCH headers point at BATCH iovecs, names and
        // control buffers (all BATCH long), and the iovecs at the BATCH
        // buffers; each with its true length, so the kernel writes only
        // inside them. None of them is moved or touched until the call
        // returns, and all outlive it.
        let r = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                hdrs.as_mut_ptr(),
                self.want.clamp(1, BATCH) as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        let Ok(n) = usize::try_from(r) else {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        };
        let n = n.min(BATCH);
        let bytes: usize = hdrs[..n].iter().map(|h| h.msg_len as usize).sum();
        self.want = match bytes.checked_div(n) {
            Some(avg) => (RECV_BYTES / avg.max(1)).clamp(1, BATCH),
            None => BATCH,
        };
        for (i, h) in hdrs.iter().enumerate().take(n) {
            let m = &h.msg_hdr;
            let name_len = (m.msg_namelen as usize).min(NAME_LEN);
            let Some(from) = decode_addr(&self.names[i].0[..name_len]) else {
                continue;
            };
            let ctl_len = m.msg_controllen.min(CONTROL_LEN);
            let ctl = parse_control(&self.control[i].0[..ctl_len]);
            // Keep datagram k in bufs[k] when one before it was skipped.
            let k = self.got.len();
            self.bufs.swap(k, i);
            self.got.push(Received {
                len: (h.msg_len as usize).min(MAX_DATAGRAM),
                from,
                local: ctl.local,
                segment: ctl.segment,
            });
        }
        Ok(self.got.len())
    }
}

// ----------------------------------------------------------------- send

/// A datagram the kernel did not take: whose (the tag) and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsent {
    pub tag: u32,
    pub len: usize,
}

/// What a [`SendBatch::flush`] could not do as asked. `flush` appends;
/// the caller drains or [`clear`](SendReport::clear)s it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams dropped — no socket of their family, or the kernel
    /// refused them (unreachable, too big): UDP is lossy, and the caller
    /// counts only what left.
    pub unsent: Vec<Unsent>,
    /// Tags whose source address was refused: no longer a local address
    /// (or of the wrong family). Their datagrams went again without a
    /// source; the caller forgets the peer's source until its next packet
    /// teaches a new one. Each tag at most once.
    pub stale_src: Vec<u32>,
}

impl SendReport {
    pub fn clear(&mut self) {
        self.unsent.clear();
        self.stale_src.clear();
    }

    fn stale(&mut self, tag: u32) {
        if !self.stale_src.contains(&tag) {
            self.stale_src.push(tag);
        }
    }
}

struct Queued {
    buf: Vec<u8>,
    to: SocketAddr,
    src: Option<SourceAddr>,
    tag: u32,
}

/// Send side: datagrams queued with their destination, the source to send
/// from and a caller's tag (the transport uses its peer id), flushed with
/// one `sendmmsg` per socket and batch.
///
/// UDP GSO: consecutive datagrams with the same destination, source and
/// tag, all of one length but a shorter last (the sealed segments of one
/// tun super-packet), go as one message with a `UDP_SEGMENT` control
/// message: the kernel cuts it into those datagrams, which costs one trip
/// through its stack instead of one per datagram. If the kernel refuses a
/// GSO message, its first datagram is sent again alone; if that goes, the
/// refusal was about GSO: for a size (EINVAL, EMSGSIZE: a datagram longer
/// than the path MTU, which the kernel would fragment alone but will not
/// cut from a GSO message), datagrams of that size or longer of that
/// family go one per message from then on; otherwise (no such option, an
/// egress device that cannot checksum: EIO...) GSO is turned off for good
/// and everything goes one datagram per message, as before.
pub struct SendBatch {
    queue: Vec<Queued>,
    spare: Vec<Vec<u8>>,
    /// Queue positions of one family's datagrams, in order (reused).
    order: Vec<usize>,
    names: Box<[Name; BATCH]>,
    control: Box<[Control; BATCH]>,
    gso: bool,
    /// Per family (IPv4, IPv6): datagrams this long or longer are not
    /// joined into GSO messages (the kernel refused to cut them).
    gso_limit: [usize; 2],
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch {
            queue: Vec::with_capacity(BATCH),
            spare: Vec::new(),
            order: Vec::with_capacity(BATCH),
            names: Box::new([Name([0; NAME_LEN]); BATCH]),
            control: Box::new([Control([0; CONTROL_LEN]); BATCH]),
            gso: true,
            gso_limit: [usize::MAX; 2],
        }
    }
}

/// Datagrams per GSO message: the kernel's UDP_MAX_SEGMENTS (64 before
/// Linux 6.9, 128 since).
pub const MAX_SEGMENTS: usize = 64;
/// Bytes per GSO message: what one IP packet can carry.
const MAX_GSO_BYTES: usize = 65_000;
/// iovecs per `sendmmsg` (on the stack).
const IOVS: usize = 256;
/// `UDP_SEGMENT`'s payload: the segment size as a u16.
const SEGMENT_LEN: usize = size_of::<u16>();
const _: () = assert!(cmsg_space(PKTINFO6) + cmsg_space(SEGMENT_LEN) <= CONTROL_LEN);

/// One message of a `sendmmsg`: `count` queued datagrams from
/// `order[first..]`, cut by the kernel every `segment` bytes.
#[derive(Clone, Copy, Default)]
struct Msg {
    first: usize,
    count: usize,
    segment: usize,
}

impl SendBatch {
    /// A cleared buffer to build a datagram in (recycled from earlier sends).
    pub fn buffer(&mut self) -> Vec<u8> {
        let mut b = self.spare.pop().unwrap_or_default();
        b.clear();
        b
    }

    /// Queues `datagram` for `to`, sent from `src` if given (else routing
    /// picks the source).
    pub fn push(&mut self, datagram: Vec<u8>, to: SocketAddr, src: Option<SourceAddr>, tag: u32) {
        self.queue.push(Queued {
            buf: datagram,
            to,
            src,
            tag,
        });
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// The queued datagrams, in order (tests compare what two paths queue).
    #[cfg(test)]
    pub fn queued(&self) -> impl Iterator<Item = &[u8]> {
        self.queue.iter().map(|q| q.buf.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Whether datagrams still go as GSO messages (the kernel has not
    /// refused GSO as such).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// The length from which datagrams of a family (`v4` or not) go one
    /// per message, if the kernel refused to cut such a size.
    pub fn gso_limit(&self, v4: bool) -> Option<usize> {
        Some(self.gso_limit[usize::from(!v4)]).filter(|&l| l != usize::MAX)
    }

    /// Turns GSO off (tests of the plain path; a caller that knows better).
    pub fn disable_gso(&mut self) {
        self.gso = false;
    }

    /// Sends everything queued, in order per family: IPv4 destinations on
    /// `v4`, IPv6 on `v6`. Datagrams for a family without a socket, and
    /// ones the kernel refuses, are dropped and reported in
    /// `report.unsent`. A datagram whose source the kernel refuses goes
    /// again at once without one, and its tag is reported in
    /// `report.stale_src`.
    pub fn flush(
        &mut self,
        v4: Option<&UdpSocket>,
        v6: Option<&UdpSocket>,
        report: &mut SendReport,
    ) {
        let mut queue = std::mem::take(&mut self.queue);
        let mut order = std::mem::take(&mut self.order);
        for (want_v4, sock) in [(true, v4), (false, v6)] {
            order.clear();
            for (i, q) in queue.iter().enumerate() {
                if q.to.is_ipv4() != want_v4 {
                    continue;
                }
                if sock.is_none() {
                    report.unsent.push(Unsent {
                        tag: q.tag,
                        len: q.buf.len(),
                    });
                    continue;
                }
                order.push(i);
            }
            if let (Some(sock), false) = (sock, order.is_empty()) {
                self.send_all(sock, want_v4, &mut queue, &order, report);
            }
        }
        for q in queue.drain(..) {
            if self.spare.len() < SPARE_MAX {
                self.spare.push(q.buf);
            }
        }
        // Keep the buffers' capacity for the next round.
        self.queue = queue;
        self.order = order;
    }

    /// Groups `order[from..]` into at most BATCH messages and IOVS
    /// datagrams; a message is one datagram unless GSO may join more.
    /// `single_first`: the first message is one datagram whatever GSO says.
    fn plan(
        &self,
        queue: &[Queued],
        order: &[usize],
        from: usize,
        single_first: bool,
        v4: bool,
        msgs: &mut [Msg; BATCH],
    ) -> usize {
        let limit = self.gso_limit[usize::from(!v4)];
        let mut n = 0;
        let mut at = from;
        let mut iovs = 0;
        while n < BATCH && at < order.len() && iovs < IOVS {
            let head = &queue[order[at]];
            let segment = head.buf.len();
            let mut count = 1;
            let mut bytes = segment;
            let may_join = self.gso && !(single_first && n == 0) && segment > 0 && segment < limit;
            while may_join
                && count < MAX_SEGMENTS
                && iovs + count < IOVS
                && at + count < order.len()
            {
                let q = &queue[order[at + count]];
                let len = q.buf.len();
                if q.to != head.to
                    || q.src != head.src
                    || q.tag != head.tag
                    || len > segment
                    || len == 0
                    || bytes + len > MAX_GSO_BYTES
                {
                    break;
                }
                count += 1;
                bytes += len;
                // A shorter datagram can only be the last of a message.
                if len < segment {
                    break;
                }
            }
            msgs[n] = Msg {
                first: at,
                count,
                segment,
            };
            n += 1;
            at += count;
            iovs += count;
        }
        n
    }

    /// Sends the datagrams `queue[order[..]]` (all of the socket's family).
    fn send_all(
        &mut self,
        sock: &UdpSocket,
        v4: bool,
        queue: &mut [Queued],
        order: &[usize],
        report: &mut SendReport,
    ) {
        let mut done = 0;
        // Set when a GSO message failed: its first datagram goes alone
        // next, to tell a refusal of GSO from one of the datagram.
        // The error of the GSO message being probed.
        let mut probe: Option<i32> = None;
        let mut msgs = [Msg::default(); BATCH];
        // Each round sends at least one datagram, drops one, takes the
        // source off a peer's datagrams or sets `probe`, so this ends; the
        // bound only guards against a kernel that keeps saying EINTR.
        let mut rounds = order.len() * 4 + 8;
        while done < order.len() && rounds > 0 {
            rounds -= 1;
            let n = self.plan(queue, order, done, probe.is_some(), v4, &mut msgs);
            let mut iovs = [libc::iovec::default(); IOVS];
            let mut hdrs = [EMPTY_HEADER; BATCH];
            let mut used = 0;
            let names = self.names.as_mut_ptr();
            let control = self.control.as_mut_ptr();
            for (m, msg) in msgs[..n].iter().enumerate() {
                let head = order[msg.first];
                let name_len = encode_addr(&queue[head].to, &mut self.names[m]);
                let mut ctl_len = 0;
                if let Some(src) = queue[head].src {
                    match encode_src(&src, v4, &mut self.control[m]) {
                        Some(len) => ctl_len = len,
                        None => {
                            // Not of this family: it can never be the
                            // source here.
                            let tag = queue[head].tag;
                            report.stale(tag);
                            forget_src(queue, tag, Some(src));
                        }
                    }
                }
                if msg.count > 1 {
                    let hdr = libc::cmsghdr {
                        cmsg_len: cmsg_len(SEGMENT_LEN) as _,
                        cmsg_level: libc::SOL_UDP,
                        cmsg_type: libc::UDP_SEGMENT,
                    };
                    let seg = msg.segment as u16;
                    let ok = put(&mut self.control[m].0, ctl_len, hdr)
                        .and_then(|()| put(&mut self.control[m].0, ctl_len + CMSG_HDR, seg));
                    if ok.is_some() {
                        ctl_len += cmsg_space(SEGMENT_LEN);
                    }
                }
                for (k, iov) in iovs[used..used + msg.count].iter_mut().enumerate() {
                    let b = &queue[order[msg.first + k]].buf;
                    // The kernel only reads a datagram it sends.
                    iov.iov_base = b.as_ptr().cast_mut().cast();
                    iov.iov_len = b.len();
                }
                let h = &mut hdrs[m].msg_hdr;
                h.msg_name = names.wrapping_add(m).cast();
                h.msg_namelen = name_len;
                h.msg_iov = iovs.as_mut_ptr().wrapping_add(used);
                h.msg_iovlen = msg.count as _;
                if ctl_len > 0 {
                    h.msg_control = control.wrapping_add(m).cast();
                    h.msg_controllen = ctl_len as _;
                }
                used += msg.count;
            }
            // SAFETY: the first `n` headers point at iovecs (`used` of
            // IOVS, each header at its own `count`), names and control
            // buffers indexed below BATCH (their lengths), with lengths
            // within them; the iovecs point at queued datagrams. Nothing
            // they point at is moved or touched until the call returns,
            // and all of it outlives the call.
            let r = unsafe {
                libc::sendmmsg(sock.as_raw_fd(), hdrs.as_mut_ptr(), n as libc::c_uint, 0)
            };
            match usize::try_from(r) {
                Ok(0) => break,
                Ok(sent) => {
                    if let Some(err) = probe.take() {
                        // The datagram went alone where its GSO message
                        // did not: the kernel refuses GSO, for this size
                        // or at all.
                        if matches!(err, libc::EINVAL | libc::EMSGSIZE) {
                            let l = &mut self.gso_limit[usize::from(!v4)];
                            *l = (*l).min(msgs[0].segment);
                            tracing::debug!(
                                v4,
                                len = *l,
                                "UDP GSO refused for datagrams this long; sent one per message"
                            );
                        } else {
                            tracing::info!(
                                "UDP GSO refused by the kernel (errno {err}); one datagram per message"
                            );
                            self.gso = false;
                        }
                    }
                    done += msgs[..sent.min(n)].iter().map(|m| m.count).sum::<usize>();
                }
                // sendmmsg reports an error only when the first message
                // of the rest failed.
                Err(_) => {
                    let err = io::Error::last_os_error().raw_os_error();
                    let first = msgs[0];
                    let q = &queue[order[first.first]];
                    match err {
                        Some(libc::EINTR) => {}
                        // What a kernel says to a GSO message it will not
                        // take (unknown option, a device that cannot
                        // checksum, a size it does not accept); the same
                        // message cut by hand may go.
                        Some(
                            e @ (libc::EIO
                            | libc::EINVAL
                            | libc::EMSGSIZE
                            | libc::EOPNOTSUPP
                            | libc::ENOPROTOOPT),
                        ) if first.count > 1 => probe = Some(e),
                        // The source is no longer local (IPv6 and older
                        // kernels: EINVAL; IPv4 on current kernels:
                        // ENETUNREACH), or its link is gone (ENODEV, IPv6
                        // link-local): send again without it, and spare
                        // the peer's other queued datagrams the same
                        // failure. Only this peer's: the error may be
                        // about its destination, and other peers sharing
                        // the source keep it. Such a destination fails
                        // again below and is dropped; the peer's source
                        // is then forgotten needlessly, but it is relearnt
                        // from the peer's next packet.
                        Some(libc::EINVAL | libc::ENETUNREACH | libc::ENODEV)
                            if q.src.is_some() =>
                        {
                            let (tag, src) = (q.tag, q.src);
                            report.stale(tag);
                            forget_src(queue, tag, src);
                            probe = None;
                        }
                        // Refused (unreachable, too big, buffer full): the
                        // message's datagrams are lost, as UDP allows.
                        _ => {
                            for &qi in &order[first.first..first.first + first.count] {
                                report.unsent.push(Unsent {
                                    tag: queue[qi].tag,
                                    len: queue[qi].buf.len(),
                                });
                            }
                            done += first.count;
                            probe = None;
                        }
                    }
                }
            }
        }
        for &qi in &order[done.min(order.len())..] {
            report.unsent.push(Unsent {
                tag: queue[qi].tag,
                len: queue[qi].buf.len(),
            });
        }
    }
}

/// Sends `tag`'s datagrams that were to go from `src` from the routed
/// source instead.
fn forget_src(queue: &mut [Queued], tag: u32, src: Option<SourceAddr>) {
    for q in queue.iter_mut() {
        if q.tag == tag && q.src == src {
            q.src = None;
        }
    }
}

#[cfg(test)]
mod tests;
