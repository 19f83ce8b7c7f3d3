//! The transport process's main loop: the data plane of one interface.
//!
//! One thread owns all state and runs one `poll`: the tun device, the UDP
//! sockets and two channels (parent, handshake role). For every data
//! packet:
//!
//! ```text
//! tun → allowed-IPs lookup by destination → current keypair → seal → UDP
//! UDP → type 4: keypair by receiver index → open → replay window
//!       → allowed-IPs check of the inner source → tun
//!     → types 1–3: per-source limit → to the handshake role, untouched,
//!       with the source
//! ```
//!
//! The per-source limit ([`crate::ratelimit`]) comes before the copy into
//! a message: a flood of handshake-shaped packets from one address costs
//! a hash lookup each, and reaches the handshake role at 20/s.
//!
//! Offloads, when the tun device has them (`IFF_VNET_HDR`, which
//! [`receive_device`] asks the device itself): a read may be a TCP
//! super-packet of up to 64 KiB, routed once and cut into MTU-sized
//! packets ([`crate::gso`]), each sealed into its own datagram with the
//! next counter; those go to the peer as one UDP GSO message
//! ([`crate::udp`]). On the way in, a socket read may hold a sender's run
//! of datagrams (UDP GRO), each opened and checked on its own; the inner
//! packets of a whole receive batch are then merged per TCP flow
//! ([`crate::gro`]) and written to the device after the batch. Counters,
//! the replay window and the order of each peer's packets are those of
//! one datagram at a time.
//!
//! Both cores: the pure part of a big batch, the AEAD (and, sending, each
//! segment's copy and checksums), is shared with worker threads
//! ([`crate::pool`]: two fewer than the CPUs, at most three, so none on
//! one or two CPUs, where the kernel and the application need the other
//! one; `wgd/src/roles.rs` says what was measured). Everything else stays
//! on this thread and in order. Sending, the super-packets read one after
//! another (up to four, `HELD_READS`) take their runs of counters as they are
//! read (`Device::hold`), are sealed together, and their datagrams are
//! queued in the order of reads and segments (`Device::finish_held`);
//! anything sent the plain way first finishes those held. Receiving, a
//! whole receive batch is checked before any datagram is opened, then
//! each gets its verdict in the batch's order — replay window, roaming,
//! counters, allowed IPs, GRO — as the serial path would have at that
//! packet's turn (`Device::receive_parallel`). A batch under
//! [`PARALLEL_MIN`] packets, and every batch without workers, takes the
//! plain path, one packet at a time, with no hand-off: a ping costs what
//! it did. The unit tests hold the two paths to the same datagrams,
//! writes, drops and windows (`device/parallel_tests.rs`).
//!
//! Packets for a peer without a usable session wait in a small bounded
//! queue while the handshake role is asked for one. What the timers need
//! to know (data sent or received, any authenticated packet) is collected
//! per peer as bit flags and reported at most every [`ACTIVITY_INTERVAL`],
//! so the handshake channel carries O(peers) messages, not O(packets).
//!
//! Scale: a hub may have 100,000 peers, most of them idle at any moment.
//! An idle peer costs a few hundred bytes (its session keys are allocated
//! only while a session exists, its staging queue only while packets
//! wait), and no work: the periodic flush visits only the peers that had
//! traffic since the last one, and expires keypairs from a deadline heap,
//! so a tick costs O(active peers), not O(peers). Adding or removing a
//! peer costs O(its own state).
//!
//! This process holds no static key; its session keys come from the
//! handshake role, and it has no channel to the crypto role at all. It
//! does not take that role's orders on trust either: what it sends, and
//! where, is checked by [`crate::orders`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use proto::channel::{Channel, ChannelError};
use proto::ipc::{
    Activity, Destination, DropCounters, Endpoint, HandshakeToTransport, ParentToTransport,
    TransportOp, TransportToHandshake, TransportToParent,
};
use proto::keys::PublicKey;
use proto::wire::{self, MessageType};

use crate::aead::DataKey;
use crate::allowed_ips::AllowedIps;
use crate::data::{inner_packet, open_checked, seal_reserved, Decapsulated, RecvError};
use crate::gro::{Gro, Write};
use crate::gso::{Split, VnetHdr, VNET_HDR_LEN};
use crate::keypair::{Keypair, KeypairSlots, REJECT_AFTER_TIME};
use crate::orders::{check_received, check_send, BadOrder, RecentSources};
use crate::pool::Workers;
use crate::ratelimit::RateLimiter;
use crate::udp::{enable_gro, enable_pktinfo, segments, RecvBatch, SendBatch, SendReport};

mod config;

/// This process's end of the channel with the handshake role: events both
/// ways, no replies.
type HandshakeChannel = Channel<TransportToHandshake, HandshakeToTransport>;
/// Its end of the channel with the parent: orders in, one reply each.
type ParentChannel = Channel<TransportToParent, ParentToTransport>;

/// How often coalesced activity goes to the handshake role.
pub const ACTIVITY_INTERVAL: Duration = Duration::from_millis(100);
/// Packets held per peer while a handshake is under way (wireguard-go
/// holds 1024; a few hundred cover a TCP window at tunnel start).
pub const MAX_STAGED: usize = 256;
/// Tun packets read per wake-up before the loop looks at other fds.
const TUN_BATCH: usize = 64;
/// Bytes read from the tun per wake-up at most (four super-packets): the
/// ACKs coming back for what is being sent wait meanwhile, and late ACKs
/// in bursts make the sender keep a deeper standing queue (see
/// `udp::RECV_BYTES`).
const TUN_BYTES: usize = 256 << 10;
/// Datagrams queued before they are sent: a whole super-packet's segments
/// (up to 64 KiB, some 45 datagrams) fit, so UDP GSO can send them as one.
const SEND_QUEUE_MAX: usize = 128;
/// The transport asks for a handshake at most this often per peer (the
/// handshake role rate-limits too; this keeps the channel quiet).
const NEED_HANDSHAKE_INTERVAL: Duration = Duration::from_millis(500);
/// After the handshake channel was found full, handshake packets are
/// dropped without trying it again for this long: under a flood from many
/// sources, a try (a copy, an encode and a failing system call) per
/// packet would cost the data path more than the packets are worth, and
/// the handshake role frees a few slots a millisecond at most.
const HANDSHAKE_FULL_BACKOFF: Duration = Duration::from_millis(1);
/// Packets in one batch before it is worth sharing its AEAD with the
/// workers: waking one costs a system call (a few µs), sealing or opening
/// a full-sized packet under 1 µs. A ping, a keepalive or a short burst
/// stays on the plain one-packet-at-a-time path.
pub const PARALLEL_MIN: usize = 8;
/// Tun reads sealed together with the workers: one worker wake-up per
/// up to this many super-packets (256 KiB of buffers).
const HELD_READS: usize = 4;
/// Segments of held reads sealed together at most (their datagram
/// buffers are taken when a read is held).
const HELD_JOBS_MAX: usize = 2 * SEND_QUEUE_MAX;
/// A tun read: the offload header and the largest packet.
const TUN_BUF_LEN: usize = VNET_HDR_LEN + 65_536;
/// Data messages of a receive batch planned before they are opened and
/// decided (a batch of more is done in parts, at buffer boundaries).
const PLAN_MAX: usize = 1024;
/// Room before a packet for the data header, after it for padding + tag.
const HEADROOM: usize = wire::DATA_HEADER_LEN;
const TAILROOM: usize = 16 + wire::AEAD_TAG_LEN;

type PeerId = u32;
/// Tag of datagrams sent on no peer's account.
const NO_PEER: PeerId = u32::MAX;

struct Peer {
    key: PublicKey,
    /// Where the peer is, and the local address to answer it from.
    endpoint: Option<Endpoint>,
    slots: KeypairSlots,
    /// Packets waiting for a session. Its buffer is freed once it is
    /// emptied (see [`Device::flush_staged`]): a queue that once held
    /// [`MAX_STAGED`] packets would otherwise keep 6 KiB per peer for good.
    staged: VecDeque<Vec<u8>>,
    rx_bytes: u64,
    tx_bytes: u64,
    /// Activity bits since the last flush; non-zero exactly when the peer
    /// is on [`Device::active`] (set them with [`note_activity`]).
    activity: u8,
    last_need_handshake: Option<Instant>,
}

/// Adds `bits` to the peer's activity for the next flush, and puts the
/// peer on the list of those to visit then if this is its first since
/// the last flush.
fn note_activity(active: &mut Vec<PeerId>, id: PeerId, p: &mut Peer, bits: u8) {
    if p.activity == 0 {
        active.push(id);
    }
    p.activity |= bits;
}

/// Removes the index-table entry `index` if it names peer `id`: an index
/// the handshake role reused for another peer stays theirs.
fn forget_index(by_index: &mut HashMap<u32, PeerId>, index: u32, id: PeerId) {
    if by_index.get(&index) == Some(&id) {
        by_index.remove(&index);
    }
}

/// Why the loop ended; every case is fatal for the interface.
#[derive(Debug, thiserror::Error)]
pub enum TransportExit {
    #[error("parent channel closed")]
    ParentGone,
    #[error("parent channel: {0}")]
    Parent(ChannelError),
    #[error("handshake channel: {0}")]
    Handshake(ChannelError),
    #[error("tun device: {0}")]
    Tun(io::Error),
    #[error("poll: {0}")]
    Poll(Errno),
    #[error("parent did not send the tun device and sockets first")]
    NoDevice,
}

/// Counters beyond the per-peer ones, for status and the IPC-load test.
#[derive(Debug, Default, Clone)]
struct Stats {
    drops: DropCounters,
    ipc_to_handshake: u64,
}

pub struct Device {
    tun: OwnedFd,
    udp4: Option<UdpSocket>,
    udp6: Option<UdpSocket>,
    peers: Vec<Option<Peer>>,
    /// Empty slots of `peers`, reused before it grows.
    free_ids: Vec<PeerId>,
    by_key: HashMap<PublicKey, PeerId>,
    by_index: HashMap<u32, PeerId>,
    /// Peers with activity bits set since the last flush, each once (a
    /// removed peer's id may linger until then; its slot is then empty, or
    /// a new peer's whose bits tell whether it had traffic).
    active: Vec<PeerId>,
    /// When each installed keypair expires by age: (deadline, peer, local
    /// index). Entries of keypairs dropped early stay until their deadline
    /// and are then skipped; [`Device::install_keypair`] compacts the heap
    /// if they pile up.
    expiries: BinaryHeap<Reverse<(Instant, PeerId, u32)>>,
    allowed: AllowedIps<PeerId>,
    /// Sources of the handshake packets passed on lately: where cookie
    /// replies may go and endpoints may move to.
    recent: RecentSources,
    /// Per-source buckets for handshake messages, checked before one
    /// crosses to the handshake role.
    limiter: RateLimiter,
    /// When a handshake packet last found the channel to the handshake
    /// role full (see [`HANDSHAKE_FULL_BACKOFF`]).
    handshake_full_at: Option<Instant>,
    stats: Stats,
    /// One receive batch per socket, so that a wake-up of both sockets
    /// never has one socket's datagrams overwrite the other's.
    recv4: RecvBatch,
    recv6: RecvBatch,
    send: SendBatch,
    report: SendReport,
    /// Changes of a configuration transaction not yet committed.
    uncommitted: Vec<TransportOp>,
    /// Buffers tun reads land in: one, or with workers [`HELD_READS`],
    /// so that super-packets read one after another are sealed together.
    tun_bufs: Vec<Vec<u8>>,
    /// The tun device was opened with `IFF_VNET_HDR`: every read and
    /// write starts with a [`VnetHdr`], reads may be TCP/UDP super-packets
    /// to split, and received TCP segments are merged before writing.
    vnet_hdr: bool,
    /// Merges the inner packets of one UDP receive batch (with `vnet_hdr`).
    gro: Gro,
    /// Where each packet given to `gro` lies: its receive buffer and the
    /// range in it; a packet's index here is its GRO token.
    gro_pending: Vec<(usize, std::ops::Range<usize>)>,
    /// The tun device's name, to look up its MTU (`None`: not a tun).
    tun_name: Option<IfName>,
    /// The tunnel's MTU, where padding stops (`usize::MAX`: unknown, pad
    /// every packet to a multiple of 16).
    mtu: usize,
    last_mtu_check: Option<Instant>,
    last_activity_flush: Instant,
    /// Threads that seal and open a batch's packets with this one (none:
    /// everything on this thread, as before).
    workers: Workers,
    /// The segments of the super-packets being sealed in parallel (kept
    /// for their capacity: at most [`HELD_JOBS_MAX`] at a time).
    seal_jobs: Vec<SealJob>,
    /// Super-packets read but not yet sealed (with workers only).
    held: Vec<HeldRead>,
    /// The last receive batch was big enough to share with the workers.
    receiving_bulk: bool,
    /// The data messages of a receive batch opened in parallel, in order.
    open_plan: Vec<Planned>,
    /// Their AEAD jobs; empty between batches (see [`recycle`]).
    open_jobs: Vec<OpenJob<'static>>,
}

/// One segment of a super-packet to seal on any thread: its datagram
/// buffer, which segment, and its counter; `len` is the message length
/// once sealed (0: it could not be).
struct SealJob {
    buf: Vec<u8>,
    /// Which held read it is a segment of ([`Device::finish_held`]).
    read: usize,
    segment: usize,
    counter: u64,
    len: usize,
}

/// What every [`SealJob`] of one super-packet shares (read-only).
struct SealCtx<'a> {
    split: Split,
    pkt: &'a [u8],
    key: &'a DataKey,
    receiver: u32,
    mtu: usize,
}

/// A tun read held for the next batch sealed with the workers: where it
/// lies (tun buffer `slot`, up to `len`), whose it is, how it is cut, and
/// the keypair its counters were taken from.
struct HeldRead {
    slot: usize,
    len: usize,
    id: PeerId,
    split: Split,
    local_index: u32,
    receiver: u32,
}

fn seal_held_job(ctxs: &[Option<SealCtx<'_>>; HELD_READS], job: &mut SealJob) {
    match ctxs.get(job.read).and_then(Option::as_ref) {
        Some(c) => seal_job(c, job),
        None => job.len = 0,
    }
}

fn seal_job(c: &SealCtx<'_>, job: &mut SealJob) {
    let len = c
        .split
        .write_segment(c.pkt, job.segment, &mut job.buf[HEADROOM..]);
    job.len = seal_reserved(c.key, c.receiver, job.counter, &mut job.buf, len, c.mtu).unwrap_or(0);
}

/// A data message of a receive batch, between the checks before its
/// decryption and its verdict: where it lies (receive buffer `entry`,
/// `range`), who sent it, and what [`KeypairSlots::finish_open`] needs.
///
/// [`KeypairSlots::finish_open`]: crate::keypair::KeypairSlots::finish_open
struct Planned {
    entry: usize,
    range: std::ops::Range<usize>,
    from: Endpoint,
    receiver: u32,
    counter: u64,
    /// The key it is opened with (`None`: the checks already failed, it
    /// is not opened), and whether that succeeded. Compared by address
    /// only, with the keypair's at the verdict.
    key: Option<*const DataKey>,
    opened: bool,
}

/// One datagram to open on any thread.
struct OpenJob<'a> {
    key: &'a DataKey,
    counter: u64,
    msg: &'a mut [u8],
    opened: bool,
}

fn open_job(_: &(), job: &mut OpenJob<'_>) {
    job.opened = open_checked(job.key, job.counter, job.msg);
}

/// The buffer of an empty job list, for a batch's borrows: the capacity
/// is kept from batch to batch, so opening allocates nothing per batch.
fn recycle<'a>(v: Vec<OpenJob<'static>>) -> Vec<OpenJob<'a>> {
    let mut v = std::mem::ManuallyDrop::new(v);
    v.clear();
    let (ptr, cap) = (v.as_mut_ptr(), v.capacity());
    // SAFETY: the vector is empty, so no reference in it outlives
    // anything; `OpenJob<'a>` and `OpenJob<'static>` differ in lifetime
    // only, hence in nothing of their layout; the allocation is handed
    // over whole (pointer, capacity) and `v` is never dropped.
    unsafe { Vec::from_raw_parts(ptr.cast::<OpenJob<'a>>(), 0, cap) }
}

/// Back again, emptied, once the batch's borrows end.
fn unrecycle(v: Vec<OpenJob<'_>>) -> Vec<OpenJob<'static>> {
    let mut v = std::mem::ManuallyDrop::new(v);
    v.clear();
    let (ptr, cap) = (v.as_mut_ptr(), v.capacity());
    // SAFETY: as in `recycle`: empty, same layout, allocation handed over.
    unsafe { Vec::from_raw_parts(ptr.cast::<OpenJob<'static>>(), 0, cap) }
}

fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// UDP sockets received as fds, IPv4 first if present, made non-blocking.
fn adopt_sockets(
    mut fds: impl Iterator<Item = OwnedFd>,
    v4: bool,
    v6: bool,
) -> io::Result<(Option<UdpSocket>, Option<UdpSocket>)> {
    let mut take = |wanted: bool, is_v6: bool| -> io::Result<Option<UdpSocket>> {
        if !wanted {
            return Ok(None);
        }
        let s = UdpSocket::from(fds.next().ok_or(io::ErrorKind::NotFound)?);
        s.set_nonblocking(true)?;
        // Each datagram's local address, to answer the peer from it.
        enable_pktinfo(&s, is_v6)?;
        // A sender's run of datagrams in one read, where the kernel kept
        // them together.
        if !enable_gro(&s) {
            tracing::debug!("UDP GRO refused; one datagram per read");
        }
        Ok(Some(s))
    };
    let s4 = take(v4, false)?;
    let s6 = take(v6, true)?;
    Ok((s4, s6))
}

/// An interface name as the kernel's `ifreq` holds it.
type IfName = [libc::c_char; libc::IFNAMSIZ];

/// The tun device's name, and whether it was opened with `IFF_VNET_HDR`
/// (the parent asks for it with the offloads; `wgd/src/net.rs`). The
/// kernel's own flags, not a message, say so: a device without them (a
/// test's stand-in, or a kernel that refused the offloads) reads and
/// writes bare packets. `None`: not a tun device.
fn tun_info(tun: &OwnedFd) -> Option<(IfName, bool)> {
    // SAFETY: an all-zero ifreq is a valid value (a name and a union of
    // integers).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // SAFETY: TUNGETIFF writes at most a whole ifreq into `req`, which
    // lives across the call; on a descriptor that is not a tun device it
    // fails and writes nothing.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNGETIFF, &mut req) };
    if r < 0 {
        return None;
    }
    // SAFETY: TUNGETIFF filled in the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Some((req.ifr_name, i32::from(flags) & libc::IFF_VNET_HDR != 0))
}

/// The MTU of interface `name`, asked through any socket of ours
/// (SIOCGIFMTU needs no privilege and opens nothing).
fn interface_mtu(sock: &UdpSocket, name: &IfName) -> Option<usize> {
    // SAFETY: as in `tun_info`.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    req.ifr_name = *name;
    // SAFETY: SIOCGIFMTU reads the name and writes the MTU into `req`,
    // which lives across the call.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if r < 0 {
        return None;
    }
    // SAFETY: SIOCGIFMTU filled in the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu).ok().filter(|&m| m > 0)
}

/// How often the tunnel's MTU is looked up again (`ip link set mtu`
/// takes effect on the padding within this).
const MTU_INTERVAL: Duration = Duration::from_secs(1);

/// Waits for the parent's first message: the tun device and UDP sockets.
pub fn receive_device(parent: &ParentChannel) -> Result<Device, TransportExit> {
    let (to, msg, fds) = parent
        .recv_request_with_fds()
        .map_err(TransportExit::Parent)?;
    let ParentToTransport::Start { v4, v6 } = msg else {
        return Err(TransportExit::NoDevice);
    };
    let mut fds = fds.into_iter();
    let tun = fds.next().ok_or(TransportExit::NoDevice)?;
    set_nonblocking(&tun).map_err(TransportExit::Tun)?;
    let (udp4, udp6) = adopt_sockets(fds, v4, v6).map_err(TransportExit::Tun)?;
    parent
        .reply(to, &TransportToParent::Done)
        .map_err(TransportExit::Parent)?;
    let info = tun_info(&tun);
    let vnet_hdr = info.is_some_and(|(_, v)| v);
    let mut dev = Device::new(tun, udp4, udp6);
    dev.vnet_hdr = vnet_hdr;
    dev.tun_name = info.map(|(name, _)| name);
    dev.refresh_mtu(Instant::now());
    tracing::debug!(vnet_hdr, mtu = dev.mtu, "tun device adopted");
    Ok(dev)
}

impl Device {
    pub fn new(tun: OwnedFd, udp4: Option<UdpSocket>, udp6: Option<UdpSocket>) -> Self {
        Device {
            tun,
            udp4,
            udp6,
            peers: Vec::new(),
            free_ids: Vec::new(),
            by_key: HashMap::new(),
            by_index: HashMap::new(),
            active: Vec::new(),
            expiries: BinaryHeap::new(),
            allowed: AllowedIps::new(),
            recent: RecentSources::default(),
            limiter: RateLimiter::default(),
            handshake_full_at: None,
            stats: Stats::default(),
            recv4: RecvBatch::default(),
            recv6: RecvBatch::default(),
            send: SendBatch::default(),
            report: SendReport::default(),
            uncommitted: Vec::new(),
            tun_bufs: vec![vec![0u8; TUN_BUF_LEN]],
            vnet_hdr: false,
            gro: Gro::new(),
            gro_pending: Vec::with_capacity(crate::udp::BATCH),
            tun_name: None,
            mtu: usize::MAX,
            last_mtu_check: None,
            last_activity_flush: Instant::now(),
            workers: Workers::none(),
            seal_jobs: Vec::new(),
            held: Vec::new(),
            receiving_bulk: false,
            open_plan: Vec::new(),
            open_jobs: Vec::new(),
        }
    }

    /// Gives the device worker threads to share the AEAD of big batches
    /// with (see [`crate::pool`]); without, it does all of it itself.
    pub fn set_workers(&mut self, workers: Workers) {
        self.finish_held();
        let reads = if workers.count() > 0 { HELD_READS } else { 1 };
        self.tun_bufs.resize_with(reads, || vec![0u8; TUN_BUF_LEN]);
        self.workers = workers;
    }

    /// Serves until a channel closes or the tun device goes away.
    pub fn run(&mut self, parent: &ParentChannel, handshake: &HandshakeChannel) -> TransportExit {
        let _ = handshake.set_nonblocking(true);
        loop {
            let now = Instant::now();
            let next_flush = self.last_activity_flush + ACTIVITY_INTERVAL;
            let ms = next_flush.saturating_duration_since(now).as_millis() as i32 + 1;
            let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
            let ready = {
                let tun = self.tun.as_fd();
                let mut fds = vec![
                    PollFd::new(tun, PollFlags::POLLIN),
                    PollFd::new(parent.as_fd(), PollFlags::POLLIN),
                    PollFd::new(handshake.as_fd(), PollFlags::POLLIN),
                ];
                if let Some(s) = &self.udp4 {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                }
                if let Some(s) = &self.udp6 {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return TransportExit::Poll(e),
                }
                let r: Vec<bool> = fds
                    .iter()
                    .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                    .collect();
                r
            };
            if ready[0] {
                if let Err(e) = self.read_tun(handshake) {
                    return TransportExit::Tun(e);
                }
            }
            let mut i = 3;
            for v4 in [true, false] {
                let present = if v4 {
                    self.udp4.is_some()
                } else {
                    self.udp6.is_some()
                };
                if present {
                    if ready[i] {
                        if let Err(e) = self.read_udp(v4, handshake) {
                            return TransportExit::Handshake(e);
                        }
                    }
                    i += 1;
                }
            }
            if ready[2] {
                if let Err(e) = self.drain_handshake(handshake) {
                    return TransportExit::Handshake(e);
                }
            }
            if ready[1] {
                match parent.recv_request_with_fds() {
                    Ok((to, msg, fds)) => {
                        let reply = self.handle_parent(msg, fds);
                        if let Err(e) = parent.reply(to, &reply) {
                            return TransportExit::Parent(e);
                        }
                    }
                    Err(ChannelError::Closed) => return TransportExit::ParentGone,
                    Err(e) => return TransportExit::Parent(e),
                }
            }
            self.flush_udp();
            if Instant::now() >= next_flush {
                if let Err(e) = self.flush_activity(handshake) {
                    return TransportExit::Handshake(e);
                }
            }
        }
    }

    // ------------------------------------------------------------ outbound

    fn read_tun(&mut self, handshake: &HandshakeChannel) -> io::Result<()> {
        // Without the offload header the packet is read where the header
        // would be: one layout for both.
        let at = if self.vnet_hdr { 0 } else { VNET_HDR_LEN };
        let r = (|| {
            let mut bytes = 0;
            for _ in 0..TUN_BATCH {
                if bytes >= TUN_BYTES {
                    break;
                }
                let slot = match self.free_slot() {
                    Some(s) => s,
                    None => {
                        self.finish_held();
                        0
                    }
                };
                let n =
                    match nix::unistd::read(self.tun.as_raw_fd(), &mut self.tun_bufs[slot][at..]) {
                        Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                        Ok(n) => {
                            bytes += n;
                            at + n
                        }
                        Err(Errno::EAGAIN) => return Ok(()),
                        Err(Errno::EINTR) => continue,
                        Err(e) => return Err(io::Error::from(e)),
                    };
                self.handle_tun_read(slot, n, handshake);
                if self.send.len() >= SEND_QUEUE_MAX / 2 {
                    self.flush_udp();
                }
            }
            Ok(())
        })();
        self.finish_held();
        r
    }

    /// A tun buffer no held read occupies.
    fn free_slot(&self) -> Option<usize> {
        (0..self.tun_bufs.len()).find(|&s| !self.held.iter().any(|h| h.slot == s))
    }

    /// Handles the `n` bytes read into tun buffer `slot`.
    fn handle_tun_read(&mut self, slot: usize, n: usize, handshake: &HandshakeChannel) {
        // Borrow the buffer out of `self` for the call (a held read's is
        // put back before anyone reads it); a packet is copied only if it
        // has to wait for a handshake.
        let mut buf = std::mem::take(&mut self.tun_bufs[slot]);
        let r = if self.vnet_hdr {
            self.send_offloaded(&mut buf[..n], slot, handshake)
        } else {
            self.send_packet(&buf[VNET_HDR_LEN..n], handshake)
        };
        self.tun_bufs[slot] = buf;
        if let Err(e) = r {
            tracing::debug!("handshake channel failed while staging: {e}");
        }
    }

    /// Routes one read of a tun device with offloads: `read` is a
    /// [`VnetHdr`] and a packet, which may be a super-packet to split into
    /// MTU-sized ones, each sealed on its own. `read` lies in tun buffer
    /// `slot`, where a super-packet sealed by the workers stays until
    /// [`Device::finish_held`].
    fn send_offloaded(
        &mut self,
        read: &mut [u8],
        slot: usize,
        handshake: &HandshakeChannel,
    ) -> Result<(), ChannelError> {
        let Some(hdr) = VnetHdr::parse(read) else {
            self.stats.drops.malformed += 1;
            return Ok(());
        };
        let pkt = &mut read[VNET_HDR_LEN..];
        let split = match Split::new(&hdr, pkt) {
            Ok(None) => return self.send_packet(pkt, handshake),
            Ok(Some(s)) => s,
            Err(e) => {
                tracing::debug!("tun read not sent: {e}");
                self.stats.drops.malformed += 1;
                return Ok(());
            }
        };
        // Every segment has the super-packet's addresses: one lookup.
        let Some((id, now)) = self.route(pkt) else {
            return Ok(());
        };
        let Some(p) = self.peer_mut(id) else {
            return Ok(());
        };
        if p.slots.can_send(now) && p.staged.is_empty() {
            let count = split.count();
            if self.workers.count() > 0 && count >= PARALLEL_MIN {
                if count <= SEND_QUEUE_MAX && slot < self.tun_bufs.len() {
                    if self.seal_jobs.len() + count > HELD_JOBS_MAX {
                        self.finish_held();
                    }
                    self.hold(id, now, split, slot, VNET_HDR_LEN + pkt.len());
                } else {
                    self.finish_held();
                    self.seal_parallel(id, now, &split, pkt);
                }
                return Ok(());
            }
            self.finish_held();
            for i in 0..split.count() {
                let len = split.segment_len(i);
                self.seal_and_queue(id, now, len, |out| {
                    split.write_segment(pkt, i, out);
                });
                if self.send.len() >= SEND_QUEUE_MAX {
                    self.flush_udp();
                }
            }
            return Ok(());
        }
        for i in 0..split.count() {
            let mut seg = vec![0u8; split.segment_len(i)];
            split.write_segment(pkt, i, &mut seg);
            if p.staged.len() >= MAX_STAGED {
                p.staged.pop_front();
            }
            p.staged.push_back(seg);
        }
        self.ask_for_handshake(id, now, handshake)
    }

    /// Holds the super-packet read into tun buffer `slot` (`len` bytes)
    /// for peer `id` (which can send) until [`Device::finish_held`] seals
    /// it with the others read meanwhile, and takes its counters now. The
    /// first one held wakes the workers, which then start during the next
    /// reads: waking a sleeping thread costs its waker 7 µs and takes
    /// 25 µs on this machine's CPUs (a 2-core KVM guest), as long as
    /// sealing one super-packet alone, so sharing one super-packet at a
    /// time with a worker woken for it gained nothing.
    fn hold(&mut self, id: PeerId, now: Instant, split: Split, slot: usize, len: usize) {
        let Some(p) = self.peers.get_mut(id as usize).and_then(|p| p.as_mut()) else {
            return;
        };
        let r = match p.slots.reserve_send(now, split.count()) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(peer = %p.key, "cannot send: {e}");
                return;
            }
        };
        let (receiver, first, count) = (r.receiver, r.first, r.count);
        let Some(local_index) = p.slots.current().map(Keypair::local_index) else {
            return;
        };
        if self.held.is_empty() {
            self.workers.wake();
        }
        let read = self.held.len();
        self.held.push(HeldRead {
            slot,
            len,
            id,
            split,
            local_index,
            receiver,
        });
        for k in 0..count {
            let mut buf = self.send.buffer();
            buf.resize(HEADROOM + split.segment_len(k) + TAILROOM, 0);
            self.seal_jobs.push(SealJob {
                buf,
                read,
                segment: k,
                counter: first + k as u64,
                len: 0,
            });
        }
    }

    /// Seals the held super-packets' segments on this thread and the
    /// workers, and queues them in the order they were read: the same
    /// datagrams, counters and order as sealing each at its read.
    fn finish_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut jobs = std::mem::take(&mut self.seal_jobs);
        let mut held = std::mem::take(&mut self.held);
        {
            let (peers, bufs, mtu) = (&self.peers, &self.tun_bufs, self.mtu);
            let mut ctxs: [Option<SealCtx<'_>>; HELD_READS] = [None, None, None, None];
            for (c, h) in ctxs.iter_mut().zip(&held) {
                // The keypair the counters were taken from (nothing has
                // changed the keypairs since; if it were gone, its jobs
                // would not be sealed).
                let key = peers
                    .get(h.id as usize)
                    .and_then(|p| p.as_ref())
                    .and_then(|p| p.slots.send_key_of(h.local_index));
                let pkt = bufs.get(h.slot).and_then(|b| b.get(VNET_HDR_LEN..h.len));
                if let (Some(key), Some(pkt)) = (key, pkt) {
                    *c = Some(SealCtx {
                        split: h.split,
                        pkt,
                        key,
                        receiver: h.receiver,
                        mtu,
                    });
                }
            }
            self.workers.run(&ctxs, &mut jobs, seal_held_job);
        }
        for job in jobs.drain(..) {
            let Some(id) = held.get(job.read).map(|h| h.id) else {
                continue;
            };
            self.queue_sealed(id, job.buf, job.len);
        }
        held.clear();
        self.held = held;
        self.seal_jobs = jobs;
    }

    /// Queues a datagram sealed on any thread (`len`: its length, 0 if it
    /// could not be sealed) for peer `id`, as `seal_and_queue` would have.
    fn queue_sealed(&mut self, id: PeerId, mut buf: Vec<u8>, len: usize) {
        let Some(p) = self.peers.get_mut(id as usize).and_then(|p| p.as_mut()) else {
            return;
        };
        let Some(to) = p.endpoint else {
            return;
        };
        if len == 0 {
            tracing::debug!(peer = %p.key, "cannot send: segment not sealed");
            return;
        }
        buf.truncate(len);
        p.tx_bytes += len as u64;
        note_activity(
            &mut self.active,
            id,
            p,
            Activity::AUTH_SENT | Activity::DATA_SENT,
        );
        self.send.push(buf, to.addr, to.src, id);
        if self.send.len() >= SEND_QUEUE_MAX {
            self.flush_udp();
        }
    }

    /// Seals, at once, the segments of a super-packet of more segments
    /// than the send queue holds (tiny segments; too many to hold) for
    /// peer `id` (which can send) on this thread and the workers, and
    /// queues them in order:
    /// the same datagrams, counters and sends as the loop of
    /// `seal_and_queue` in [`Device::send_offloaded`]. Counters are taken
    /// here, in order, up to [`SEND_QUEUE_MAX`] segments at a time; only
    /// the copy, checksums and AEAD of each segment run elsewhere.
    fn seal_parallel(&mut self, id: PeerId, now: Instant, split: &Split, pkt: &[u8]) {
        let mut jobs = std::mem::take(&mut self.seal_jobs);
        let total = split.count();
        let mut from = 0;
        while from < total {
            let n = (total - from).min(SEND_QUEUE_MAX);
            let Some(p) = self.peers.get_mut(id as usize).and_then(|p| p.as_mut()) else {
                break;
            };
            let r = match p.slots.reserve_send(now, n) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(peer = %p.key, "cannot send: {e}");
                    break;
                }
            };
            let (key, receiver, first, count) = (r.key, r.receiver, r.first, r.count);
            for k in 0..count {
                let mut buf = self.send.buffer();
                buf.resize(HEADROOM + split.segment_len(from + k) + TAILROOM, 0);
                jobs.push(SealJob {
                    buf,
                    read: 0,
                    segment: from + k,
                    counter: first + k as u64,
                    len: 0,
                });
            }
            let ctx = SealCtx {
                split: *split,
                pkt,
                key,
                receiver,
                mtu: self.mtu,
            };
            self.workers.run(&ctx, &mut jobs, seal_job);
            for job in jobs.drain(..) {
                self.queue_sealed(id, job.buf, job.len);
            }
            if count < n {
                // The keypair reached its message limit: the rest cannot go.
                break;
            }
            from += n;
        }
        self.seal_jobs = jobs;
    }

    /// The peer an outgoing packet goes to, if it has one with an
    /// endpoint (else the drop is counted).
    fn route(&mut self, pkt: &[u8]) -> Option<(PeerId, Instant)> {
        let dst = match inner_packet(pkt) {
            Ok(p) => p.dst,
            Err(_) => {
                self.stats.drops.malformed += 1;
                return None;
            }
        };
        let Some(id) = self.allowed.lookup(dst) else {
            self.stats.drops.no_route += 1;
            return None;
        };
        let now = Instant::now();
        let p = self.peer_mut(id)?;
        if p.endpoint.is_none() {
            self.stats.drops.no_route += 1;
            return None;
        }
        Some((id, now))
    }

    /// Routes one IP packet from the tun device.
    fn send_packet(
        &mut self,
        pkt: &[u8],
        handshake: &HandshakeChannel,
    ) -> Result<(), ChannelError> {
        // After the super-packets read before it, to any peer.
        self.finish_held();
        let Some((id, now)) = self.route(pkt) else {
            return Ok(());
        };
        let Some(p) = self.peer_mut(id) else {
            return Ok(());
        };
        if p.slots.can_send(now) && p.staged.is_empty() {
            self.encrypt_and_queue(id, pkt, now);
            return Ok(());
        }
        if p.staged.len() >= MAX_STAGED {
            p.staged.pop_front();
        }
        p.staged.push_back(pkt.to_vec());
        self.ask_for_handshake(id, now, handshake)
    }

    fn ask_for_handshake(
        &mut self,
        id: PeerId,
        now: Instant,
        handshake: &HandshakeChannel,
    ) -> Result<(), ChannelError> {
        let Some(p) = self.peer_mut(id) else {
            return Ok(());
        };
        if p.last_need_handshake
            .is_some_and(|t| now.saturating_duration_since(t) < NEED_HANDSHAKE_INTERVAL)
        {
            return Ok(());
        }
        p.last_need_handshake = Some(now);
        let key = p.key;
        self.tell_handshake(
            handshake,
            &TransportToHandshake::NeedHandshake { peer: key },
        )
    }

    fn tell_handshake(
        &mut self,
        chan: &HandshakeChannel,
        msg: &TransportToHandshake,
    ) -> Result<(), ChannelError> {
        self.stats.ipc_to_handshake += 1;
        match chan.send(msg) {
            // The handshake role is busy: timer events are advisory and a
            // packet it does not see is a lost packet, which UDP allows.
            Err(ChannelError::WouldBlock) => Ok(()),
            other => other,
        }
    }

    /// Seals `plaintext` with the peer's current keypair and queues it.
    fn encrypt_and_queue(&mut self, id: PeerId, plaintext: &[u8], now: Instant) {
        self.seal_and_queue(id, now, plaintext.len(), |out| {
            out.copy_from_slice(plaintext)
        });
    }

    /// Seals a `len`-byte plaintext, which `fill` writes into the datagram
    /// buffer where it is encrypted (so a packet is copied once, from the
    /// tun read to the datagram), with the peer's current keypair, and
    /// queues the datagram.
    fn seal_and_queue(
        &mut self,
        id: PeerId,
        now: Instant,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) {
        let mut buf = self.send.buffer();
        let Some(p) = self.peers.get_mut(id as usize).and_then(|p| p.as_mut()) else {
            return;
        };
        let Some(to) = p.endpoint else {
            return;
        };
        buf.resize(HEADROOM + len + TAILROOM, 0);
        fill(&mut buf[HEADROOM..HEADROOM + len]);
        match p
            .slots
            .encapsulate_in_place_mtu(now, &mut buf, len, self.mtu)
        {
            Ok(n) => {
                buf.truncate(n);
                p.tx_bytes += n as u64;
                let bits = if len == 0 {
                    Activity::AUTH_SENT
                } else {
                    Activity::AUTH_SENT | Activity::DATA_SENT
                };
                note_activity(&mut self.active, id, p, bits);
                self.send.push(buf, to.addr, to.src, id);
            }
            Err(e) => {
                tracing::debug!(peer = %p.key, "cannot send: {e}");
            }
        }
    }

    /// Sends the packets staged for a peer if it has a usable session;
    /// returns whether there were any.
    fn flush_staged(&mut self, id: PeerId, now: Instant) -> bool {
        let Some(p) = self.peer_mut(id) else {
            return false;
        };
        if !p.slots.can_send(now) {
            return false;
        }
        // Taking the queue leaves an unallocated one behind; the taken
        // buffer is freed once the packets are sent.
        let staged = std::mem::take(&mut p.staged);
        let any = !staged.is_empty();
        for pkt in staged {
            self.encrypt_and_queue(id, &pkt, now);
        }
        any
    }

    fn flush_udp(&mut self) {
        if self.send.is_empty() {
            return;
        }
        let mut report = std::mem::take(&mut self.report);
        self.send
            .flush(self.udp4.as_ref(), self.udp6.as_ref(), &mut report);
        // Bytes count as sent only once the kernel took them, as in
        // wireguard-go.
        for u in report.unsent.drain(..) {
            self.stats.drops.send_failed += 1;
            if let Some(p) = self.peer_mut(u.tag) {
                p.tx_bytes = p.tx_bytes.saturating_sub(u.len as u64);
            }
        }
        // The kernel refused a remembered source address (it is no longer
        // ours); the datagram went from the routed one, and so will the
        // next ones.
        for tag in report.stale_src.drain(..) {
            if let Some(e) = self.peer_mut(tag).and_then(|p| p.endpoint.as_mut()) {
                e.src = None;
            }
        }
        self.report = report;
    }

    /// Looks the tunnel's MTU up again if it was not lately.
    fn refresh_mtu(&mut self, now: Instant) {
        if self
            .last_mtu_check
            .is_some_and(|t| now.saturating_duration_since(t) < MTU_INTERVAL)
        {
            return;
        }
        self.last_mtu_check = Some(now);
        let Some(name) = &self.tun_name else {
            return;
        };
        let Some(sock) = self.udp4.as_ref().or(self.udp6.as_ref()) else {
            return;
        };
        if let Some(mtu) = interface_mtu(sock, name) {
            self.mtu = mtu;
        }
    }

    /// Reports each active peer's activity bits to the handshake role,
    /// asks for a rekey where the message count calls for one, and drops
    /// keypairs that expired by age. O(peers with traffic since the last
    /// flush + keypairs expiring now): idle peers cost nothing here.
    fn flush_activity(&mut self, handshake: &HandshakeChannel) -> Result<(), ChannelError> {
        self.last_activity_flush = Instant::now();
        let now = self.last_activity_flush;
        self.refresh_mtu(now);
        self.expire_keypairs(now);
        let mut active = std::mem::take(&mut self.active);
        let mut reports = Vec::new();
        let mut rekeys = Vec::new();
        for &id in &active {
            let Some(p) = self.peer_mut(id) else {
                continue;
            };
            let bits = std::mem::take(&mut p.activity);
            if bits != 0 {
                reports.push((p.key, bits));
            }
            // The send counter only grows by sending, which is activity:
            // a peer crosses the rekey count in a flush that visits it.
            // Asking again is rate-limited by `ask_for_handshake`, and a
            // peer that sends nothing more needs no new session for it.
            if p.slots.needs_rekey_by_count() {
                rekeys.push(id);
            }
        }
        // Keep the list's buffer for the next interval.
        active.clear();
        self.active = active;
        for (peer, bits) in reports {
            self.tell_handshake(
                handshake,
                &TransportToHandshake::Activity {
                    peer,
                    activity: Activity(bits),
                },
            )?;
        }
        for id in rekeys {
            self.ask_for_handshake(id, now, handshake)?;
        }
        Ok(())
    }

    /// Drops, and zeroizes, the keypairs whose REJECT_AFTER_TIME has
    /// passed, without waiting for the handshake role to clear the session.
    ///
    /// A keypair expired by message count (2^64 - 2^13 messages, out of
    /// reach in practice) already refuses to send or receive; its keys go
    /// when its time is up, at most REJECT_AFTER_TIME after it was made.
    fn expire_keypairs(&mut self, now: Instant) {
        while let Some(&Reverse((at, id, index))) = self.expiries.peek() {
            if at > now {
                break;
            }
            self.expiries.pop();
            let Some(p) = self.peers.get_mut(id as usize).and_then(|p| p.as_mut()) else {
                continue;
            };
            // Gone already (replaced, cleared, or its peer removed) unless
            // the peer still holds that index; and a newer keypair that
            // reused the index is not expired, so `drop_expired` keeps it.
            if p.slots.find(index).is_none() {
                continue;
            }
            for i in p.slots.drop_expired(now) {
                forget_index(&mut self.by_index, i, id);
            }
        }
    }

    /// Installs a finished handshake's keypair for peer `id`: its index
    /// names the peer from now on, and its age deadline is queued.
    fn install_keypair(&mut self, id: PeerId, kp: Keypair) {
        let local_index = kp.local_index();
        let expires = kp.created() + REJECT_AFTER_TIME;
        let Some(p) = self.peer_mut(id) else {
            return;
        };
        let freed = p.slots.install(kp);
        for i in freed {
            forget_index(&mut self.by_index, i, id);
        }
        self.by_index.insert(local_index, id);
        self.expiries.push(Reverse((expires, id, local_index)));
        // Entries of keypairs dropped before their deadline (rekeyed,
        // cleared, peer removed) wait for it; should they outnumber the
        // live keypairs, drop them now. Amortised O(1) per install.
        if self.expiries.len() > 2 * self.by_index.len() + 1024 {
            let peers = &self.peers;
            self.expiries.retain(|&Reverse((_, id, index))| {
                peers
                    .get(id as usize)
                    .and_then(|p| p.as_ref())
                    .is_some_and(|p| p.slots.find(index).is_some())
            });
        }
    }

    // ------------------------------------------------------------ inbound

    fn read_udp(&mut self, v4: bool, handshake: &HandshakeChannel) -> Result<(), ChannelError> {
        let (sock, batch) = if v4 {
            (self.udp4.as_ref(), &mut self.recv4)
        } else {
            (self.udp6.as_ref(), &mut self.recv6)
        };
        let Some(sock) = sock else {
            return Ok(());
        };
        if self.receiving_bulk {
            // The last batch was shared with the workers: the next one
            // likely will be too, so they start waking during the read.
            self.workers.wake();
        }
        let n = match batch.recv(sock) {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!("udp receive: {e}");
                return Ok(());
            }
        };
        self.receive_batch(v4, n, handshake)
    }

    /// Handles the `n` datagrams (or runs of them) of the last read of
    /// the IPv4 (`v4`) or IPv6 socket's batch, and writes what they carry
    /// to the tun device.
    fn receive_batch(
        &mut self,
        v4: bool,
        n: usize,
        handshake: &HandshakeChannel,
    ) -> Result<(), ChannelError> {
        let batch = if v4 { &self.recv4 } else { &self.recv6 };
        if self.workers.count() > 0 {
            let datagrams: usize = batch.got[..n.min(batch.got.len())]
                .iter()
                .map(|g| segments(g.len, g.segment).count())
                .sum();
            self.receiving_bulk = datagrams >= PARALLEL_MIN;
            if self.receiving_bulk {
                let r = self.receive_parallel(v4, n, handshake);
                if self.vnet_hdr {
                    self.write_merged(v4);
                }
                return r;
            }
        }
        let mut result = Ok(());
        for i in 0..n {
            let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
            let got = batch.got[i];
            let from = Endpoint {
                addr: got.from,
                src: got.local,
            };
            let mut buf = std::mem::take(&mut batch.bufs[i]);
            // One datagram, or (UDP GRO) a sender's run of them.
            for seg in segments(got.len, got.segment) {
                let at = seg.start;
                let r = self.receive_datagram(&mut buf[seg], from, handshake);
                match r {
                    Ok(Some(inner)) => {
                        let inner = at + inner.start..at + inner.end;
                        if self.vnet_hdr {
                            // Written after the batch, merged where it can be.
                            let token = self.gro_pending.len() as u32;
                            self.gro.push(&buf[inner.clone()], token);
                            self.gro_pending.push((i, inner));
                        } else {
                            self.write_tun(&buf[inner]);
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
            batch.bufs[i] = buf;
            if result.is_err() {
                break;
            }
        }
        if self.vnet_hdr {
            self.write_merged(v4);
        }
        result
    }

    /// [`Device::receive_batch`] with the AEAD shared with the workers,
    /// in three steps: the checks before decryption, in order, with
    /// handshake messages passed on at once (this thread); every data
    /// message's decryption (any thread); the verdicts and everything
    /// after them (replay window, endpoint, counters, allowed IPs, GRO),
    /// in the batch's order (this thread). The verdicts are
    /// [`KeypairSlots::finish_open`]'s, made at each packet's turn, so
    /// what is accepted, dropped, counted and written is what the serial
    /// path does with the same batch.
    ///
    /// [`KeypairSlots::finish_open`]: crate::keypair::KeypairSlots::finish_open
    fn receive_parallel(
        &mut self,
        v4: bool,
        n: usize,
        handshake: &HandshakeChannel,
    ) -> Result<(), ChannelError> {
        let now = Instant::now();
        let mut plan = std::mem::take(&mut self.open_plan);
        plan.clear();
        // 1. Sort the batch out; nothing changes yet but for handshake
        // messages, which go to the handshake role as before.
        let mut result = Ok(());
        'entries: for i in 0..n {
            let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
            let Some(&got) = batch.got.get(i) else {
                break;
            };
            let from = Endpoint {
                addr: got.from,
                src: got.local,
            };
            let buf = std::mem::take(&mut batch.bufs[i]);
            for seg in segments(got.len, got.segment) {
                let Some(dgram) = buf.get(seg.clone()) else {
                    self.stats.drops.malformed += 1;
                    continue;
                };
                match wire::classify(dgram) {
                    Ok(MessageType::Data) => {}
                    Ok(_) => {
                        if let Err(e) = self.receive_handshake(dgram, from, handshake) {
                            result = Err(e);
                            let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
                            batch.bufs[i] = buf;
                            break 'entries;
                        }
                        continue;
                    }
                    Err(_) => {
                        self.stats.drops.malformed += 1;
                        continue;
                    }
                }
                let Ok(header) = wire::DataHeader::parse(dgram) else {
                    self.stats.drops.malformed += 1;
                    continue;
                };
                // The index table only loses entries during a batch (a
                // confirmation releasing the keypair before), so a miss
                // here is one at the packet's turn too.
                let Some(&id) = self.by_index.get(&header.receiver) else {
                    self.stats.drops.unknown_index += 1;
                    continue;
                };
                let Some(p) = self.peers.get(id as usize).and_then(|p| p.as_ref()) else {
                    continue;
                };
                // A failed check here fails again at the packet's turn
                // (windows only advance, keypairs only go), where it is
                // counted as the serial path would.
                let key = p
                    .slots
                    .check_open(now, dgram)
                    .ok()
                    .map(|t| std::ptr::from_ref(t.key));
                plan.push(Planned {
                    entry: i,
                    range: seg,
                    from,
                    receiver: header.receiver,
                    counter: header.counter,
                    key,
                    opened: false,
                });
            }
            let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
            batch.bufs[i] = buf;
            // A batch of many small datagrams is decided in parts, so the
            // plan stays small (a receive buffer may hold 2,048 of them).
            if plan.len() >= PLAN_MAX {
                self.open_planned(v4, &mut plan, now);
            }
        }
        if result.is_ok() {
            self.open_planned(v4, &mut plan, now);
        }
        plan.clear();
        self.open_plan = plan;
        result
    }

    /// Steps 2 and 3 of [`Device::receive_parallel`] for the datagrams
    /// planned so far; empties `plan`.
    fn open_planned(&mut self, v4: bool, plan: &mut Vec<Planned>, now: Instant) {
        // 2. Decrypt, on every thread. Each job borrows its own part of a
        // receive buffer (the plan is in buffer order, so the buffers are
        // cut front to back) and its keypair's key.
        {
            let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
            let mut jobs = recycle(std::mem::take(&mut self.open_jobs));
            let mut bufs = batch.bufs.iter_mut().enumerate();
            // The current buffer's rest, and where that rest starts in it.
            let mut cur: Option<(usize, &mut [u8], usize)> = None;
            let (peers, by_index) = (&self.peers, &self.by_index);
            for pl in plan.iter_mut() {
                let Some(checked) = pl.key else {
                    continue;
                };
                // The key step 1 checked the packet against, looked up
                // again (nothing has changed the keypairs since).
                let key = by_index
                    .get(&pl.receiver)
                    .and_then(|&id| peers.get(id as usize)?.as_ref())
                    .and_then(|p| p.slots.recv_key_of(pl.receiver))
                    .filter(|k| std::ptr::eq(*k, checked));
                let Some(key) = key else {
                    pl.key = None;
                    continue;
                };
                while cur.as_ref().is_none_or(|c| c.0 < pl.entry) {
                    match bufs.next() {
                        Some((e, b)) => cur = Some((e, b.as_mut_slice(), 0)),
                        None => break,
                    }
                }
                let Some((e, rest, at)) = cur.take() else {
                    break;
                };
                if e != pl.entry || pl.range.start < at {
                    cur = Some((e, rest, at));
                    pl.key = None;
                    continue;
                }
                let (_, tail) = rest.split_at_mut((pl.range.start - at).min(rest.len()));
                let (msg, tail) = tail.split_at_mut(pl.range.len().min(tail.len()));
                cur = Some((e, tail, pl.range.end));
                jobs.push(OpenJob {
                    key,
                    counter: pl.counter,
                    msg,
                    opened: false,
                });
            }
            self.workers.run(&(), &mut jobs, open_job);
            let mut done = jobs.iter();
            for pl in plan.iter_mut().filter(|pl| pl.key.is_some()) {
                pl.opened = done.next().is_some_and(|j| j.opened);
            }
            self.open_jobs = unrecycle(jobs);
        }
        // 3. The verdicts, in order, and what follows from each.
        let mut held: Option<(usize, Vec<u8>)> = None;
        for pl in plan.iter() {
            let (entry, range, from) = (pl.entry, pl.range.clone(), pl.from);
            let (receiver, counter) = (pl.receiver, pl.counter);
            let opened = pl.key.filter(|_| pl.opened);
            if held.as_ref().is_none_or(|h| h.0 != entry) {
                let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
                if let Some((e, b)) = held.take() {
                    batch.bufs[e] = b;
                }
                held = Some((entry, std::mem::take(&mut batch.bufs[entry])));
            }
            let Some((_, buf)) = held.as_mut() else {
                continue;
            };
            let Some(&id) = self.by_index.get(&receiver) else {
                self.stats.drops.unknown_index += 1;
                continue;
            };
            let Some(p) = self.peers.get_mut(id as usize).and_then(|p| p.as_mut()) else {
                continue;
            };
            let d = p
                .slots
                .finish_open(now, receiver, counter, range.len(), opened);
            let d = match d {
                Ok(d) => d,
                Err(e) => {
                    self.count_recv_error(e);
                    continue;
                }
            };
            if let Some(inner) = self.accept_data(id, d, &buf[range.clone()], from, now) {
                let inner = range.start + inner.start..range.start + inner.end;
                if self.vnet_hdr {
                    let token = self.gro_pending.len() as u32;
                    self.gro.push(&buf[inner.clone()], token);
                    self.gro_pending.push((entry, inner));
                } else {
                    self.write_tun(&buf[inner]);
                }
            }
        }
        if let Some((e, b)) = held.take() {
            let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
            batch.bufs[e] = b;
        }
        plan.clear();
    }

    fn write_tun(&self, pkt: &[u8]) {
        if let Err(e) = nix::unistd::write(&self.tun, pkt) {
            tracing::debug!("tun write: {e}");
        }
    }

    /// Writes what the batch's packets became after merging, in order,
    /// each behind its offload header.
    fn write_merged(&mut self, v4: bool) {
        self.gro.finish();
        let batch = if v4 { &mut self.recv4 } else { &mut self.recv6 };
        for w in self.gro.writes() {
            let bytes = match *w {
                Write::Item(k) => self.gro.item(k),
                Write::Packet(t) => {
                    let Some((i, r)) = self.gro_pending.get(t as usize).cloned() else {
                        continue;
                    };
                    // The datagram's header lies before the inner packet
                    // (it starts DATA_HEADER_LEN in): room for a zero
                    // offload header.
                    let Some(buf) = batch.bufs.get_mut(i) else {
                        continue;
                    };
                    let Some(start) = r.start.checked_sub(VNET_HDR_LEN) else {
                        continue;
                    };
                    VnetHdr::default().write(&mut buf[start..r.start]);
                    &buf[start..r.end]
                }
            };
            if let Err(e) = nix::unistd::write(&self.tun, bytes) {
                tracing::debug!("tun write: {e}");
            }
        }
        self.gro.clear();
        self.gro_pending.clear();
    }

    /// Handles one datagram; returns where in it the inner packet to
    /// write to the tun device lies, if there is one.
    fn receive_datagram(
        &mut self,
        dgram: &mut [u8],
        from: Endpoint,
        handshake: &HandshakeChannel,
    ) -> Result<Option<std::ops::Range<usize>>, ChannelError> {
        match wire::classify(dgram) {
            Ok(MessageType::Data) => Ok(self.receive_data(dgram, from)),
            Ok(_) => self
                .receive_handshake(dgram, from, handshake)
                .map(|()| None),
            Err(_) => {
                self.stats.drops.malformed += 1;
                Ok(None)
            }
        }
    }

    /// Passes a handshake message (types 1-3) on to the handshake role,
    /// unless its source is over its limit or the role is busy.
    fn receive_handshake(
        &mut self,
        dgram: &[u8],
        from: Endpoint,
        handshake: &HandshakeChannel,
    ) -> Result<(), ChannelError> {
        // Before the copy and the channel: a source over its limit costs
        // no more than this lookup.
        let now = Instant::now();
        if !self.limiter.allow(now, from.addr.ip()) {
            self.stats.drops.ratelimited += 1;
            return Ok(());
        }
        if self
            .handshake_full_at
            .is_some_and(|t| now.saturating_duration_since(t) < HANDSHAKE_FULL_BACKOFF)
        {
            self.stats.drops.handshake_busy += 1;
            return Ok(());
        }
        self.stats.ipc_to_handshake += 1;
        match handshake.send(&TransportToHandshake::HandshakePacket {
            bytes: dgram.to_vec(),
            from,
        }) {
            // Remembered only once the handshake role has it: where it
            // may answer with a cookie reply, and where the peer's
            // endpoint may move.
            Ok(()) => {
                self.recent.record(from);
                self.handshake_full_at = None;
                Ok(())
            }
            // The handshake role is busy: a packet it does not see is a
            // lost packet, which UDP allows.
            Err(ChannelError::WouldBlock) => {
                self.stats.drops.handshake_busy += 1;
                self.handshake_full_at = Some(now);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    fn count_recv_error(&mut self, e: RecvError) {
        let c = &mut self.stats.drops;
        match e {
            RecvError::Replay => c.replay += 1,
            RecvError::Auth => c.auth_failed += 1,
            RecvError::UnknownIndex | RecvError::Expired => c.unknown_index += 1,
            RecvError::Malformed => c.malformed += 1,
        }
    }

    /// Opens a data message; returns where its inner packet lies in
    /// `dgram` if it is one to write to the tun device.
    fn receive_data(&mut self, dgram: &mut [u8], from: Endpoint) -> Option<std::ops::Range<usize>> {
        let Ok(header) = wire::DataHeader::parse(dgram) else {
            self.stats.drops.malformed += 1;
            return None;
        };
        let Some(&id) = self.by_index.get(&header.receiver) else {
            self.stats.drops.unknown_index += 1;
            return None;
        };
        let now = Instant::now();
        let p = self.peers.get_mut(id as usize).and_then(|p| p.as_mut())?;
        let d = match p.slots.decapsulate(now, dgram) {
            Ok(d) => d,
            Err(e) => {
                self.count_recv_error(e);
                return None;
            }
        };
        self.accept_data(id, d, dgram, from, now)
    }

    /// What follows an authenticated data message `dgram` from peer `id`
    /// (decrypted: `d`): roaming, activity, counters, the inner source
    /// check, staged packets after a confirmation. Returns where in
    /// `dgram` the inner packet to write to the tun device lies, if there
    /// is one.
    fn accept_data(
        &mut self,
        id: PeerId,
        d: Decapsulated,
        dgram: &[u8],
        from: Endpoint,
        now: Instant,
    ) -> Option<std::ops::Range<usize>> {
        let p = self.peers.get_mut(id as usize).and_then(|p| p.as_mut())?;
        // Roaming: the endpoint, and the local address it used, follow
        // the latest authenticated packet.
        p.endpoint = Some(from);
        note_activity(&mut self.active, id, p, Activity::AUTH_RECEIVED);
        let confirmed = d.confirmed_next;
        if let Some(i) = d.released_index {
            forget_index(&mut self.by_index, i, id);
        }
        // Like Linux, the whole datagram counts in rx if it is a
        // keepalive or an inner packet the peer may send; one dropped for
        // its inner source or shape does not count.
        let wire_len = dgram.len() as u64;
        let plain = &dgram[d.plaintext.clone()];
        let mut to_write = None;
        if plain.is_empty() {
            p.rx_bytes += wire_len;
        } else {
            match inner_packet(plain) {
                Ok(inner) if self.allowed.lookup(inner.src) == Some(id) => {
                    p.rx_bytes += wire_len;
                    note_activity(&mut self.active, id, p, Activity::DATA_RECEIVED);
                    to_write = Some(d.plaintext.start..d.plaintext.start + inner.len);
                }
                Ok(_) => self.stats.drops.source_not_allowed += 1,
                Err(_) => self.stats.drops.malformed += 1,
            }
        }
        if confirmed {
            self.flush_staged(id, now);
        }
        to_write
    }

    // ------------------------------------------------------------ handshake orders

    /// An order the genuine handshake role never gives: dropped, counted,
    /// and logged (the first and then every power of two, so a flood of
    /// them cannot flood the log).
    fn bad_order(&mut self, why: BadOrder) {
        let c = &mut self.stats.drops.bad_order;
        *c += 1;
        if c.is_power_of_two() {
            tracing::error!(
                count = *c,
                "refused an order of the handshake role ({why:?}): it is not behaving as itself"
            );
        }
    }

    fn drain_handshake(&mut self, handshake: &HandshakeChannel) -> Result<(), ChannelError> {
        // Bounded, so a chatty handshake role cannot starve the data path.
        for _ in 0..64 {
            let msg = match handshake.recv() {
                Ok(m) => m,
                Err(ChannelError::WouldBlock) => return Ok(()),
                Err(e) => return Err(e),
            };
            if let Some(id) = self.handle_order(msg) {
                self.ask_for_handshake(id, Instant::now(), handshake)?;
            }
        }
        Ok(())
    }

    /// Carries out one order; returns a peer that needs a handshake first.
    fn handle_order(&mut self, msg: HandshakeToTransport) -> Option<PeerId> {
        let now = Instant::now();
        match msg {
            HandshakeToTransport::Send { to, bytes } => {
                if let Err(why) = check_send(&to, &bytes, &mut self.recent) {
                    self.bad_order(why);
                    return None;
                }
                let dest = match to {
                    Destination::Addr(e) => Some(e),
                    Destination::Peer(k) => self
                        .peer_id(&k)
                        .and_then(|id| self.peer_mut(id))
                        .and_then(|p| p.endpoint),
                };
                // Handshake packets to a peer count in its transfer, as
                // in wireguard-go; replies to an address belong to no one.
                let tag = match to {
                    Destination::Peer(k) => self.peer_id(&k).unwrap_or(NO_PEER),
                    Destination::Addr(_) => NO_PEER,
                };
                match dest {
                    Some(e) => {
                        if let Some(p) = self.peer_mut(tag) {
                            p.tx_bytes += bytes.len() as u64;
                        }
                        self.send.push(bytes, e.addr, e.src, tag);
                    }
                    None => self.stats.drops.no_route += 1,
                }
            }
            HandshakeToTransport::InstallKeypair {
                peer,
                local_index,
                remote_index,
                keys,
                initiator,
            } => {
                let id = self.peer_id(&peer)?;
                // An index names one keypair: a new one may not take over
                // another's (it would steal that peer's packets).
                if self.by_index.contains_key(&local_index) {
                    drop(keys);
                    self.bad_order(BadOrder::IndexInUse);
                    return None;
                }
                let kp = Keypair::new(
                    local_index,
                    remote_index,
                    keys.send.expose(),
                    keys.recv.expose(),
                    initiator,
                    now,
                );
                drop(keys);
                self.install_keypair(id, kp);
                if initiator {
                    self.flush_staged(id, now);
                }
            }
            HandshakeToTransport::HandshakeReceived { peer, from, len } => {
                // The endpoint follows only a packet that came, and only
                // a handshake message's size counts: the handshake role
                // can neither send a peer's traffic elsewhere nor inflate
                // its counters.
                if let Err(why) = check_received(&from, len, &self.recent) {
                    self.bad_order(why);
                    return None;
                }
                if let Some(p) = self.peer_id(&peer).and_then(|id| self.peer_mut(id)) {
                    p.endpoint = Some(from);
                    p.rx_bytes += u64::from(len);
                }
            }
            HandshakeToTransport::ClearEndpointSource { peer } => {
                if let Some(e) = self
                    .peer_id(&peer)
                    .and_then(|id| self.peer_mut(id))
                    .and_then(|p| p.endpoint.as_mut())
                {
                    e.src = None;
                }
            }
            HandshakeToTransport::SendKeepalive { peer } => {
                let id = self.peer_id(&peer)?;
                // Staged packets, if any, confirm the session as well as a
                // keepalive would.
                if self.flush_staged(id, now) {
                    return None;
                }
                let p = self.peer_mut(id)?;
                if p.slots.can_send(now) {
                    self.encrypt_and_queue(id, &[], now);
                } else {
                    // No session yet: the keepalive waits for one, like
                    // any other packet.
                    if p.staged.is_empty() {
                        p.staged.push_back(Vec::new());
                    }
                    return Some(id);
                }
            }
            HandshakeToTransport::ExpireKeypairs { peer } => {
                if let Some(id) = self.peer_id(&peer) {
                    if let Some(p) = self.peer_mut(id) {
                        let freed = p.slots.clear();
                        for i in freed {
                            forget_index(&mut self.by_index, i, id);
                        }
                    }
                }
            }
            HandshakeToTransport::DropStaged { peer } => {
                if let Some(p) = self.peer_id(&peer).and_then(|id| self.peer_mut(id)) {
                    // Dropped, not cleared: the queue's buffer goes too.
                    p.staged = VecDeque::new();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod parallel_tests;
#[cfg(test)]
mod tests;
