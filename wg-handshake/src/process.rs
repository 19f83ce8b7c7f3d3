//! The handshake process's main loop: channels in, [`Core`] events, actions
//! out.
//!
//! Three channels, typed by wgd's roles table: the parent (configuration
//! and status queries, each answered once with its request's id), the
//! transport (handshake packets and coalesced activity in, orders out, no
//! replies) and the crypto role (questions through [`CryptoChannel`],
//! each answer checked against its question's id: an answer to any other
//! question is a broken channel). The only clock reads of the role happen
//! here; the core sees `now` as an argument.
//!
//! Handshake packets keep up to [`IN_FLIGHT`] questions in flight to the
//! key holder: the loop begins a packet in the core
//! ([`Core::begin_packet`]: the checks that need no key), sends its
//! question, and goes on to the next packet; it finishes the oldest
//! ([`Core::finish_packet`]) when the window is full. So the key holder,
//! the busiest process of a handshake storm, finds the next question
//! waiting when it answers one, instead of sleeping while this role reads
//! its answer, builds the response and reads the next packet. Before
//! anything that lets the core ask on its own (activity, a handshake
//! needed, timers, the parent's configuration), every answer in flight is
//! collected, so those questions are asked with none outstanding, as
//! before.

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::time::{Instant, SystemTime};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use proto::channel::{Channel, ChannelError, Submitted};
use proto::ipc::{
    CryptoError, CryptoToHandshake, HandshakeOp, HandshakeToCrypto, HandshakeToParent,
    HandshakeToTransport, ParentToHandshake, TransportToHandshake,
};

use crate::core::{AwaitingCrypto, Begun, Config, Core, Crypto};
use crate::load::QUEUE_CAPACITY;

/// Queued messages handled per turn of the loop.
const PER_TURN: usize = 256;

/// Most questions in flight to the key holder. Two already keep it busy
/// (one it works on, one waiting); a few more absorb the time this role
/// spends between answers. Kept small: a blocking send waits when the
/// other side's socket buffer is full, so the questions and answers in
/// flight, a few hundred bytes each, must stay far below that, or each
/// side could wait on the other.
pub const IN_FLIGHT: usize = 4;

/// Why the loop ended. Every variant is fatal for the interface: the
/// parent sees the process exit and fails closed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeExit {
    #[error("parent channel closed")]
    ParentGone,
    #[error("parent channel: {0}")]
    Parent(ChannelError),
    #[error("transport channel: {0}")]
    Transport(ChannelError),
    #[error("crypto channel: {0}")]
    Crypto(ChannelError),
    #[error("poll: {0}")]
    Poll(nix::errno::Errno),
}

/// [`Crypto`] over the channel to the crypto role, and the questions of
/// packets in flight. A channel failure is remembered and answered as a
/// refusal, so the core unwinds normally and the loop then exits.
pub struct CryptoChannel<'a> {
    chan: &'a Channel<HandshakeToCrypto, CryptoToHandshake>,
    failed: Option<ChannelError>,
    /// Questions sent for packets begun in the core, oldest first.
    in_flight: VecDeque<(Submitted, AwaitingCrypto)>,
}

impl CryptoChannel<'_> {
    /// Sends the question of a packet the core began, first finishing the
    /// oldest in flight if [`IN_FLIGHT`] are out.
    fn submit(
        &mut self,
        core: &mut Core,
        question: HandshakeToCrypto,
        waiting: AwaitingCrypto,
        out: &mut Vec<HandshakeToTransport>,
    ) {
        if self.in_flight.len() >= IN_FLIGHT {
            self.finish_oldest(core, out);
        }
        if self.failed.is_some() {
            return;
        }
        match self.chan.submit(&question) {
            Ok(sent) => self.in_flight.push_back((sent, waiting)),
            Err(e) => self.failed = Some(e),
        }
    }

    /// Waits for the oldest answer in flight and finishes its packet;
    /// false when none is in flight.
    fn finish_oldest(&mut self, core: &mut Core, out: &mut Vec<HandshakeToTransport>) -> bool {
        let Some((sent, waiting)) = self.in_flight.pop_front() else {
            return false;
        };
        // After a failure the rest are dropped unanswered: the loop exits.
        if self.failed.is_none() {
            match self.chan.collect(sent) {
                Ok(answer) => {
                    core.finish_packet(Instant::now(), waiting, answer, out);
                }
                Err(e) => self.failed = Some(e),
            }
        }
        true
    }

    /// Finishes every packet in flight: before the core may ask on its own.
    fn finish_all(&mut self, core: &mut Core, out: &mut Vec<HandshakeToTransport>) {
        while self.finish_oldest(core, out) {}
    }
}

impl Crypto for CryptoChannel<'_> {
    fn ask(&mut self, question: HandshakeToCrypto) -> CryptoToHandshake {
        if self.failed.is_some() {
            return CryptoToHandshake::Refused(CryptoError::Internal);
        }
        // The loop finishes every packet in flight before it lets the core
        // ask on its own; if it did not, the answer taken here would be
        // another question's, which the channel reports as out of step
        // (and the role exits, failing closed).
        match self.chan.ask(&question) {
            Ok(a) => a,
            Err(e) => {
                self.failed = Some(e);
                CryptoToHandshake::Refused(CryptoError::Internal)
            }
        }
    }
}

fn ms_until(deadline: Option<Instant>, now: Instant) -> PollTimeout {
    match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            // Round up so we never wake just before a deadline and spin.
            let ms = d.saturating_duration_since(now).as_micros().div_ceil(1000);
            PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Serves until a channel closes or misbehaves.
pub fn run(
    parent: &Channel<HandshakeToParent, ParentToHandshake>,
    transport: &Channel<HandshakeToTransport, TransportToHandshake>,
    crypto: &Channel<HandshakeToCrypto, CryptoToHandshake>,
    cfg: Config,
) -> HandshakeExit {
    let mut core = Core::new(cfg);
    let mut crypto = CryptoChannel {
        chan: crypto,
        failed: None,
        in_flight: VecDeque::with_capacity(IN_FLIGHT),
    };
    let mut out: Vec<HandshakeToTransport> = Vec::new();
    let mut uncommitted: Vec<HandshakeOp> = Vec::new();
    // What the transport sent, drained from the channel as it arrives: its
    // length is the load signal (see `crate::load`).
    let mut queue: VecDeque<TransportToHandshake> = VecDeque::new();
    #[cfg(feature = "test-hooks")]
    let hooks = test_hook::enabled();
    loop {
        let timeout = if queue.is_empty() {
            ms_until(core.next_deadline(), Instant::now())
        } else {
            PollTimeout::ZERO
        };
        let (p_ready, t_ready) = {
            let mut fds = [
                PollFd::new(parent.as_fd(), PollFlags::POLLIN),
                PollFd::new(transport.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, timeout) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return HandshakeExit::Poll(e),
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        let now = Instant::now();
        if p_ready {
            let (to, msg) = match parent.recv_request() {
                Ok(r) => r,
                Err(ChannelError::Closed) => return HandshakeExit::ParentGone,
                Err(e) => return HandshakeExit::Parent(e),
            };
            let reply = match msg {
                ParentToHandshake::Apply(batch) => {
                    // Buffered until the transaction commits, so the role
                    // never runs with half of a `set` applied.
                    uncommitted.extend(batch.ops);
                    if batch.commit {
                        for op in std::mem::take(&mut uncommitted) {
                            match op {
                                HandshakeOp::SetInterface { public_key } => {
                                    core.set_interface(public_key, &mut out)
                                }
                                HandshakeOp::SetPeer {
                                    peer,
                                    persistent_keepalive,
                                } => core.set_peer(now, peer, persistent_keepalive, &mut out),
                                HandshakeOp::RemovePeer(peer) => {
                                    core.remove_peer(&peer, &mut crypto)
                                }
                                HandshakeOp::RemoveAllPeers => core.remove_all_peers(&mut crypto),
                            }
                        }
                    }
                    HandshakeToParent::Done
                }
                ParentToHandshake::GetStatus(peers) => {
                    HandshakeToParent::Status(core.status_of(&peers, now, SystemTime::now()))
                }
                ParentToHandshake::GetCounters => {
                    HandshakeToParent::Counters(core.counters().clone())
                }
            };
            if let Err(e) = parent.reply(to, &reply) {
                return HandshakeExit::Parent(e);
            }
        }
        if t_ready {
            // Bounded by the queue's capacity; what does not fit waits in
            // the channel, whose sender (the transport) drops when it is
            // full, as a kernel drops from a full socket.
            while queue.len() < QUEUE_CAPACITY {
                match transport.try_recv() {
                    Ok(m) => queue.push_back(m),
                    Err(ChannelError::WouldBlock) => break,
                    Err(e) => return HandshakeExit::Transport(e),
                }
            }
        }
        // A bounded share of the queue per turn, so that the parent and
        // the timers are served during a storm too.
        for _ in 0..PER_TURN {
            let Some(msg) = queue.pop_front() else { break };
            let now = Instant::now();
            match msg {
                TransportToHandshake::HandshakePacket { bytes, from } => {
                    #[cfg(feature = "test-hooks")]
                    if hooks && test_hook::is_trigger(&bytes) {
                        out.extend(test_hook::bad_orders(from));
                        continue;
                    }
                    core.set_backlog(queue.len());
                    match core.begin_packet(now, &bytes, from, &mut out) {
                        Begun::Done(_) => {}
                        Begun::Ask(question, waiting) => {
                            crypto.submit(&mut core, question, waiting, &mut out)
                        }
                    }
                }
                TransportToHandshake::Activity { peer, activity } => {
                    crypto.finish_all(&mut core, &mut out);
                    core.handle_activity(now, &peer, activity, &mut crypto, &mut out);
                }
                TransportToHandshake::NeedHandshake { peer } => {
                    crypto.finish_all(&mut core, &mut out);
                    core.need_handshake(now, &peer, &mut crypto, &mut out);
                }
            }
            if crypto.failed.is_some() {
                break;
            }
        }
        crypto.finish_all(&mut core, &mut out);
        core.on_timers(Instant::now(), &mut crypto, &mut out);
        if let Some(e) = crypto.failed.take() {
            return HandshakeExit::Crypto(e);
        }
        for action in out.drain(..) {
            if let Err(e) = transport.send(&action) {
                return HandshakeExit::Transport(e);
            }
        }
    }
}

/// Test builds only (`--features test-hooks`, and only when the role was
/// started with `WGD_TEST_HOOKS=1`): a handshake role that misbehaves on
/// cue, so the end-to-end tests can watch the transport refuse and count
/// what the genuine role never orders (`tests/tests/forged_response.rs`).
/// The cue is an initiation-sized datagram carrying [`test_hook::TRIGGER`]:
/// the role then orders, instead of handling it, the bad orders of
/// [`test_hook::bad_orders`].
#[cfg(feature = "test-hooks")]
pub mod test_hook {
    use proto::ipc::{Destination, Endpoint, HandshakeToTransport};
    use proto::keys::PublicKey;

    /// Bytes 8..40 of the cue.
    pub const TRIGGER: &[u8; 32] = b"wgd test hook: send bad orders!!";

    /// How many orders [`bad_orders`] gives.
    pub const BAD_ORDERS: usize = 6;

    pub fn enabled() -> bool {
        std::env::var("WGD_TEST_HOOKS").as_deref() == Ok("1")
    }

    pub fn is_trigger(bytes: &[u8]) -> bool {
        bytes.len() == proto::wire::INITIATION_LEN && bytes.get(8..40) == Some(&TRIGGER[..])
    }

    /// Orders the transport must refuse: a data message, an initiation of
    /// the wrong length, 65,000 bytes of anything, an initiation to an
    /// address (`from`, which did send us a packet), a cookie reply to an
    /// address no packet came from (`from`'s port + 1) and a handshake
    /// "received" from there.
    pub fn bad_orders(from: Endpoint) -> Vec<HandshakeToTransport> {
        let nobody = PublicKey([0; 32]);
        let mut stranger = from;
        stranger.addr.set_port(from.addr.port().wrapping_add(1));
        let msg = |kind: u8, len: usize| {
            let mut b = vec![0x77u8; len];
            b[..4].copy_from_slice(&[kind, 0, 0, 0]);
            b
        };
        vec![
            HandshakeToTransport::Send {
                to: Destination::Peer(nobody),
                bytes: msg(4, 64),
            },
            HandshakeToTransport::Send {
                to: Destination::Peer(nobody),
                bytes: msg(1, 149),
            },
            HandshakeToTransport::Send {
                to: Destination::Peer(nobody),
                bytes: vec![0x41; 65_000],
            },
            HandshakeToTransport::Send {
                to: Destination::Addr(from),
                bytes: msg(1, 148),
            },
            HandshakeToTransport::Send {
                to: Destination::Addr(stranger),
                bytes: msg(3, 64),
            },
            HandshakeToTransport::HandshakeReceived {
                peer: nobody,
                from: stranger,
                len: 148,
            },
        ]
    }
}
