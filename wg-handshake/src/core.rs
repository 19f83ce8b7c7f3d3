//! The handshake role's sans-IO core: `(now, event) -> actions`.
//!
//! [`Core`] owns everything the handshake role knows — peers, their
//! timers, cookies, session indices, timestamps seen — and nothing it must
//! not: no static key, no PSK. It never reads a clock or a socket. Each
//! entry point takes `now` and pushes the resulting orders for the data
//! plane, [`HandshakeToTransport`], onto an output vector; questions for
//! the key holder go through the [`Crypto`] trait, which the handshake
//! process implements over its channel to the crypto role and tests
//! implement with an in-process key store.
//!
//! The entry points mirror the events of the whitepaper and of
//! wireguard-go's `timers.go`:
//!
//! | event | entry point |
//! | --- | --- |
//! | a handshake packet arrived | [`Core::handle_packet`] |
//! | data-plane activity (coalesced) | [`Core::handle_activity`] |
//! | packets waiting without a session | [`Core::need_handshake`] |
//! | a deadline passed | [`Core::on_timers`] (see [`Core::next_deadline`]) |
//! | configuration | [`Core::set_interface`], [`Core::set_peer`], [`Core::remove_peer`] |
//!
//! # Scale
//!
//! The process loop runs one event, then [`Core::on_timers`], then asks
//! [`Core::next_deadline`] for its poll timeout, for every event. With
//! 100,000 peers none of these may look at every peer: each peer's
//! earliest deadline sits in a binary heap (see [`Deadline`]), so a timer
//! change costs O(log peers), an expiry O(log peers), and the next
//! deadline is the heap's top. Removing a peer frees its own indices, not
//! a scan of the index table.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant, SystemTime};

use proto::ipc::{
    Activity, CryptoError, CryptoToHandshake, Destination, Endpoint, HandshakeStatus,
    HandshakeToCrypto, HandshakeToTransport,
};
use proto::keys::{HandshakeId, NoiseInitiation, NoiseResponse, PublicKey, SessionKeys, Tai64N};
use proto::wire::{
    self, CookieReply, Initiation, MessageType, Response, INITIATION_MAC1_OFFSET,
    RESPONSE_MAC1_OFFSET,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::cookie::{CookieChecker, CookieJar, MacCheck};
use crate::index::{IndexEntry, IndexTable, IndexUse};
use crate::load::{LoadMeter, RateLimiter, DEFAULT_LOAD_THRESHOLD};
use crate::timers::{TimerConfig, TimerKind, Timers};

/// A peer may start at most this many handshakes with us per second
/// (wireguard-go: 50); more are dropped before any Diffie-Hellman.
pub const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);

/// How many keypairs of a peer may be alive in the transport at once
/// (previous, current, next); their indices stay reserved until a newer
/// install pushes them out.
const KEYPAIRS_PER_PEER: usize = 3;

/// The local indices of a peer's installed keypairs, oldest first: at most
/// [`KEYPAIRS_PER_PEER`], kept inline (a `VecDeque` would cost every peer
/// a heap block for three numbers).
#[derive(Debug, Default, Clone, Copy)]
struct KeypairIndices {
    slots: [u32; KEYPAIRS_PER_PEER],
    len: u8,
}

impl KeypairIndices {
    fn as_slice(&self) -> &[u32] {
        &self.slots[..usize::from(self.len)]
    }

    /// Appends `index`; returns the oldest one if that pushed it out.
    fn push(&mut self, index: u32) -> Option<u32> {
        let len = usize::from(self.len);
        if len < KEYPAIRS_PER_PEER {
            self.slots[len] = index;
            self.len += 1;
            return None;
        }
        let oldest = self.slots[0];
        self.slots.rotate_left(1);
        self.slots[KEYPAIRS_PER_PEER - 1] = index;
        Some(oldest)
    }

    /// Empties the list and returns what it held.
    fn take(&mut self) -> KeypairIndices {
        std::mem::take(self)
    }
}

/// One peer's earliest timer deadline, queued in [`Core`]'s heap.
///
/// The heap is lazily invalidated: when a peer's deadline moves, a new
/// entry is pushed with a fresh `seq` and the old one stays behind, dead.
/// An entry is live while its peer exists and still has that `seq` (numbers
/// come from one counter for all peers, so an entry of a removed peer can
/// never match the peer of the same key added later). Dead entries are
/// dropped when they reach the top, and all at once when they outnumber
/// the peers, so the heap stays O(peers) and every operation amortised
/// O(log peers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Deadline {
    at: Instant,
    seq: u64,
    peer: PublicKey,
}

/// The handshake role's access to the key holder: one question, one
/// answer. Implemented over the crypto channel in the daemon, and by any
/// `FnMut(HandshakeToCrypto) -> CryptoToHandshake` (e.g. a closure around
/// an in-process key store) in tests.
pub trait Crypto {
    fn ask(&mut self, question: HandshakeToCrypto) -> CryptoToHandshake;
}

impl<F: FnMut(HandshakeToCrypto) -> CryptoToHandshake> Crypto for F {
    fn ask(&mut self, question: HandshakeToCrypto) -> CryptoToHandshake {
        self(question)
    }
}

/// Settings of the core; `Default` is the protocol.
#[derive(Debug, Clone)]
pub struct Config {
    pub timers: TimerConfig,
    /// Handshake messages waiting at or above which MAC2 is demanded
    /// (0: always).
    pub load_threshold: u32,
    /// Seed for jitter and index randomness, for reproducible tests.
    /// `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            timers: TimerConfig::default(),
            load_threshold: DEFAULT_LOAD_THRESHOLD,
            seed: None,
        }
    }
}

/// Packets dropped (or answered with a cookie), by reason: the counters
/// the parent reports, so the core keeps them in their IPC form. None of
/// these is an error of ours; all are counted so an operator can see an
/// attack or a misconfiguration.
pub type Counters = proto::ipc::HandshakeCounters;

/// What [`Core::handle_packet`] made of one packet (also visible through
/// the actions and counters; this is for logging and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketOutcome {
    Dropped(DropReason),
    CookieSent,
    CookieAccepted,
    /// We answered an initiation; the session waits for confirmation.
    Responded(PublicKey),
    /// Our initiation was answered; the session is current.
    Completed(PublicKey),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    Malformed,
    NoInterfaceKey,
    BadMac1,
    RateLimited,
    UnknownIndex,
    Rejected(CryptoError),
    ReplayedTimestamp,
    InitiationFlood,
    BadCookie,
}

/// What [`Core::begin_packet`] made of a packet.
#[derive(Debug)]
pub enum Begun {
    /// Settled without the key holder.
    Done(PacketOutcome),
    /// Ask the key holder this; give its answer to [`Core::finish_packet`]
    /// with the [`AwaitingCrypto`].
    Ask(HandshakeToCrypto, AwaitingCrypto),
}

/// A packet that waits for the key holder's answer: what
/// [`Core::finish_packet`] needs of it. Opaque outside the core.
#[derive(Debug)]
pub struct AwaitingCrypto {
    from: Endpoint,
    what: Awaiting,
}

#[derive(Debug)]
enum Awaiting {
    /// An initiation, from the peer's index `sender`.
    Answer { sender: u32 },
    /// A response under our index `receiver`, for our initiation `id`.
    Keys {
        sender: u32,
        receiver: u32,
        peer: PublicKey,
        id: HandshakeId,
    },
}

struct PendingInitiation {
    local_index: u32,
    id: HandshakeId,
}

/// What the core knows of one peer; its public key is the key of
/// [`Core`]'s map and not repeated here (32 bytes a peer).
struct Peer {
    persistent_keepalive: Option<u16>,
    cookies: CookieJar,
    timers: Timers,
    pending: Option<PendingInitiation>,
    last_initiation_sent: Option<Instant>,
    handshake_attempts: u32,
    greatest_timestamp: Tai64N,
    last_initiation_consumed: Option<Instant>,
    /// Local indices of installed keypairs, oldest first.
    keypairs: KeypairIndices,
    /// When and in which role the newest keypair was made: rekey-by-age
    /// applies only to sessions we initiated.
    newest: Option<(Instant, bool)>,
    /// A responder keypair waits for the peer's first data packet.
    awaiting_confirmation: bool,
    /// Set once the "last minute" receive-side rekey was tried for the
    /// current session, so it is tried once.
    sent_last_minute_handshake: bool,
    last_handshake: Option<Instant>,
    /// The deadline this peer has queued in the heap (`timers`' earliest
    /// when last looked at), and that entry's number; see [`Deadline`].
    scheduled: Option<Instant>,
    deadline_seq: u64,
}

impl Peer {
    fn new(persistent_keepalive: Option<u16>) -> Self {
        Peer {
            persistent_keepalive,
            cookies: CookieJar::default(),
            timers: Timers::default(),
            pending: None,
            last_initiation_sent: None,
            handshake_attempts: 0,
            greatest_timestamp: Tai64N::ZERO,
            last_initiation_consumed: None,
            keypairs: KeypairIndices::default(),
            newest: None,
            awaiting_confirmation: false,
            sent_last_minute_handshake: false,
            last_handshake: None,
            scheduled: None,
            deadline_seq: 0,
        }
    }

    /// Every session index this peer holds: its pending initiation's and
    /// its keypairs'.
    fn indices(&self) -> impl Iterator<Item = u32> + '_ {
        self.pending
            .as_ref()
            .map(|p| p.local_index)
            .into_iter()
            .chain(self.keypairs.as_slice().iter().copied())
    }
}

/// The handshake role's state. See the module documentation.
pub struct Core {
    cfg: Config,
    public_key: Option<PublicKey>,
    checker: Option<CookieChecker>,
    peers: HashMap<PublicKey, Peer>,
    /// Each peer's earliest deadline (and dead entries); see [`Deadline`].
    /// Its top is always live, so [`Core::next_deadline`] is a peek.
    deadlines: BinaryHeap<Reverse<Deadline>>,
    /// The last [`Deadline::seq`] handed out.
    deadline_seq: u64,
    indices: IndexTable,
    load: LoadMeter,
    limiter: RateLimiter,
    rng: StdRng,
    counters: Counters,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("public_key", &self.public_key)
            .field("peers", &self.peers.len())
            .field("indices", &self.indices.len())
            .finish_non_exhaustive()
    }
}

type Out = Vec<HandshakeToTransport>;

impl Core {
    pub fn new(cfg: Config) -> Self {
        let rng = match cfg.seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => StdRng::from_entropy(),
        };
        Core {
            load: LoadMeter::new(cfg.load_threshold),
            cfg,
            public_key: None,
            checker: None,
            peers: HashMap::new(),
            deadlines: BinaryHeap::new(),
            deadline_seq: 0,
            indices: IndexTable::default(),
            limiter: RateLimiter::default(),
            rng,
            counters: Counters::default(),
        }
    }

    /// How many messages wait behind the next one: the load signal
    /// (see [`crate::load`]).
    pub fn set_backlog(&mut self, waiting: usize) {
        self.load.set_backlog(waiting);
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    // ------------------------------------------------------------ configuration

    /// The interface's public key, learnt by the parent from crypto. A new
    /// key invalidates every session and handshake (they were made with
    /// the old one); the same key again changes nothing.
    pub fn set_interface(&mut self, public_key: Option<PublicKey>, out: &mut Out) {
        if public_key == self.public_key {
            return;
        }
        self.public_key = public_key;
        self.checker = public_key.as_ref().map(CookieChecker::new);
        let keys: Vec<PublicKey> = self.peers.keys().copied().collect();
        for k in keys {
            self.expire_peer(&k, out);
            // The crypto role dropped its half-done handshakes with the
            // old key. Forget ours too, and let the next packet start a
            // handshake at once rather than after REKEY_TIMEOUT (Linux and
            // wireguard-go reset the last-sent time here).
            if let Some(p) = self.peers.get_mut(&k) {
                if let Some(pending) = p.pending.take() {
                    self.indices.free(pending.local_index);
                }
                p.last_initiation_sent = None;
            }
        }
    }

    /// Adds a peer or changes its persistent keepalive. Turning persistent
    /// keepalive on sends one at once, as wg(8) users expect.
    pub fn set_peer(
        &mut self,
        now: Instant,
        peer: PublicKey,
        persistent_keepalive: Option<u16>,
        out: &mut Out,
    ) {
        let persistent_keepalive = persistent_keepalive.filter(|&s| s > 0);
        let p = self.peers.entry(peer).or_insert_with(|| Peer::new(None));
        let turned_on = persistent_keepalive.is_some() && p.persistent_keepalive.is_none();
        p.persistent_keepalive = persistent_keepalive;
        if persistent_keepalive.is_none() {
            p.timers
                .any_authenticated_packet_traversal(now, persistent_keepalive);
        }
        if turned_on && self.public_key.is_some() {
            self.send_keepalive(now, &peer, out);
        }
        self.reschedule(&peer);
    }

    /// Forgets a peer: its pending handshake (here and in crypto), its
    /// session indices, and its timers. O(its own state).
    pub fn remove_peer(&mut self, peer: &PublicKey, crypto: &mut dyn Crypto) {
        if let Some(p) = self.peers.remove(peer) {
            for i in p.indices() {
                self.indices.free(i);
            }
            if let Some(pending) = p.pending {
                crypto.ask(HandshakeToCrypto::Abandon { id: pending.id });
            }
            // Its queued deadline is dead now that the peer is gone.
            self.tidy_deadlines();
        }
    }

    /// Forgets every peer at once: O(peers), not O(peers) per peer.
    pub fn remove_all_peers(&mut self, crypto: &mut dyn Crypto) {
        for (_, p) in self.peers.drain() {
            if let Some(pending) = p.pending {
                crypto.ask(HandshakeToCrypto::Abandon { id: pending.id });
            }
        }
        self.indices.clear();
        self.deadlines.clear();
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    /// What `show` needs of these peers (one status page), in the order
    /// asked: last handshake as wall-clock time, given the current instant
    /// and wall-clock time. Peers it does not know are left out.
    pub fn status_of(
        &self,
        peers: &[PublicKey],
        now: Instant,
        wall: SystemTime,
    ) -> Vec<HandshakeStatus> {
        peers
            .iter()
            .filter_map(|k| Some((k, self.peers.get(k)?)))
            .map(|(key, p)| HandshakeStatus {
                peer: *key,
                last_handshake: p.last_handshake.and_then(|t| {
                    let ago = now.saturating_duration_since(t);
                    let at = wall.checked_sub(ago)?;
                    let d = at.duration_since(SystemTime::UNIX_EPOCH).ok()?;
                    Some((d.as_secs(), d.subsec_nanos()))
                }),
                persistent_keepalive: p.persistent_keepalive,
            })
            .collect()
    }

    // ------------------------------------------------------------ timers

    /// The earliest deadline of any peer: call [`Core::on_timers`] then.
    /// O(1): the top of the deadline heap, which is kept live.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.peek().map(|Reverse(d)| d.at)
    }

    /// Acts on every deadline at or before `now`. O(log peers) per peer
    /// whose deadline passed, nothing for the others.
    pub fn on_timers(&mut self, now: Instant, crypto: &mut dyn Crypto, out: &mut Out) {
        // Every due peer's expired timers are taken before any is acted
        // on, so that acting on one (which may set new deadlines at `now`)
        // cannot make another round fire within this call.
        let mut due: Vec<(PublicKey, Vec<TimerKind>)> = Vec::new();
        while let Some(Reverse(top)) = self.deadlines.peek() {
            if top.at > now {
                break;
            }
            let Some(Reverse(d)) = self.deadlines.pop() else {
                break;
            };
            let Some(p) = self.peers.get_mut(&d.peer) else {
                continue;
            };
            if p.deadline_seq != d.seq {
                continue;
            }
            // Off the heap: nothing is queued for the peer until
            // `reschedule` below looks at what is left.
            p.scheduled = None;
            due.push((d.peer, p.timers.expired(now)));
        }
        for (key, kinds) in due {
            for kind in kinds {
                self.on_timer(now, &key, kind, crypto, out);
            }
            self.reschedule(&key);
        }
        self.tidy_deadlines();
    }

    /// Queues `key`'s earliest deadline if it moved. Every entry point
    /// that can move a peer's timers calls this for that peer before it
    /// returns; the unit test `deadline_heap_matches_a_scan` checks that
    /// none is missed.
    fn reschedule(&mut self, key: &PublicKey) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        let next = p.timers.next_deadline();
        if next == p.scheduled {
            return;
        }
        self.deadline_seq += 1;
        p.scheduled = next;
        p.deadline_seq = self.deadline_seq;
        if let Some(at) = next {
            self.deadlines.push(Reverse(Deadline {
                at,
                seq: self.deadline_seq,
                peer: *key,
            }));
        }
        self.tidy_deadlines();
    }

    /// Restores the heap's invariants: a live top, and no more dead
    /// entries than peers.
    fn tidy_deadlines(&mut self) {
        let peers = &self.peers;
        let live = |d: &Deadline| peers.get(&d.peer).is_some_and(|p| p.deadline_seq == d.seq);
        while self.deadlines.peek().is_some_and(|Reverse(d)| !live(d)) {
            self.deadlines.pop();
        }
        // Rebuilding costs O(heap), and is due only after as many
        // changes as there are peers: amortised O(1) per change.
        if self.deadlines.len() > 2 * peers.len() + 64 {
            self.deadlines.retain(|Reverse(d)| live(d));
        }
    }

    fn on_timer(
        &mut self,
        now: Instant,
        key: &PublicKey,
        kind: TimerKind,
        crypto: &mut dyn Crypto,
        out: &mut Out,
    ) {
        let cfg = self.cfg.timers;
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        match kind {
            TimerKind::RetransmitHandshake => {
                if p.handshake_attempts >= cfg.max_handshake_attempts() {
                    tracing::debug!(peer = %key, "handshake did not complete, giving up");
                    p.timers.handshake_gave_up(now, &cfg);
                    self.abandon_pending(key, crypto);
                    out.push(HandshakeToTransport::DropStaged { peer: *key });
                } else {
                    p.handshake_attempts += 1;
                    tracing::debug!(peer = %key, attempt = p.handshake_attempts, "retrying handshake");
                    // The source address we reply from may be why no
                    // answer came (it left the host, or the route moved):
                    // let routing choose again, as Linux does.
                    out.push(HandshakeToTransport::ClearEndpointSource { peer: *key });
                    self.send_initiation(now, key, true, crypto, out);
                }
            }
            TimerKind::SendKeepalive => {
                self.send_keepalive(now, key, out);
                if let Some(p) = self.peers.get_mut(key) {
                    p.timers.keepalive_sent(now, &cfg);
                }
            }
            TimerKind::NewHandshake => {
                tracing::debug!(peer = %key, "no reply to data, starting a new handshake");
                self.send_initiation(now, key, false, crypto, out);
            }
            TimerKind::ZeroKeyMaterial => {
                tracing::debug!(peer = %key, "erasing expired key material");
                self.expire_peer(key, out);
                self.abandon_pending(key, crypto);
            }
            TimerKind::PersistentKeepalive => {
                if p.persistent_keepalive.is_some() {
                    self.send_keepalive(now, key, out);
                }
            }
        }
    }

    /// Forgets the initiation we are waiting on, here and in crypto.
    fn abandon_pending(&mut self, key: &PublicKey, crypto: &mut dyn Crypto) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        if let Some(pending) = p.pending.take() {
            self.indices.free(pending.local_index);
            crypto.ask(HandshakeToCrypto::Abandon { id: pending.id });
        }
    }

    /// Drops a peer's sessions here and in the transport.
    fn expire_peer(&mut self, key: &PublicKey, out: &mut Out) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        for &i in p.keypairs.take().as_slice() {
            self.indices.free(i);
        }
        p.newest = None;
        p.awaiting_confirmation = false;
        out.push(HandshakeToTransport::ExpireKeypairs { peer: *key });
    }

    fn send_keepalive(&mut self, now: Instant, key: &PublicKey, out: &mut Out) {
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        out.push(HandshakeToTransport::SendKeepalive { peer: *key });
        p.timers.any_authenticated_packet_sent();
        p.timers
            .any_authenticated_packet_traversal(now, p.persistent_keepalive);
    }

    // ------------------------------------------------------------ data-plane events

    /// The transport has packets for `peer` and no session, or its session
    /// reached REKEY_AFTER_MESSAGES.
    pub fn need_handshake(
        &mut self,
        now: Instant,
        peer: &PublicKey,
        crypto: &mut dyn Crypto,
        out: &mut Out,
    ) {
        self.send_initiation(now, peer, false, crypto, out);
        self.reschedule(peer);
    }

    /// Coalesced data-plane activity of one peer. Within one report the
    /// order of packets is unknown; sends are applied before receives for
    /// the "did the peer answer" timer and receives before sends for the
    /// "do we owe a keepalive" timer, the reading that assumes traffic
    /// flowed both ways, which is what a report with both bits means.
    pub fn handle_activity(
        &mut self,
        now: Instant,
        peer: &PublicKey,
        activity: Activity,
        crypto: &mut dyn Crypto,
        out: &mut Out,
    ) {
        let cfg = self.cfg.timers;
        let Some(p) = self.peers.get_mut(peer) else {
            return;
        };
        let mut rekey = false;
        let initiator_age = p
            .newest
            .filter(|&(_, initiator)| initiator)
            .map(|(t, _)| now.saturating_duration_since(t));
        if activity.has(Activity::DATA_SENT) {
            p.timers.data_sent(now, &cfg, &mut self.rng);
            rekey |= initiator_age.is_some_and(|a| a >= cfg.rekey_after_time);
        }
        if activity.has(Activity::DATA_RECEIVED) {
            p.timers.data_received(now, &cfg);
            if initiator_age.is_some_and(|a| a >= cfg.rekey_on_receive_age())
                && !p.sent_last_minute_handshake
            {
                p.sent_last_minute_handshake = true;
                rekey = true;
            }
        }
        if activity.has(Activity::AUTH_SENT) {
            p.timers.any_authenticated_packet_sent();
        }
        if activity.has(Activity::AUTH_RECEIVED) {
            p.timers.any_authenticated_packet_received();
            if std::mem::take(&mut p.awaiting_confirmation) {
                // The peer used the keypair we answered with: for the
                // responder, that is when the handshake completes.
                p.timers.handshake_complete();
                p.handshake_attempts = 0;
                p.last_handshake = Some(now);
            }
        }
        if activity.0 & (Activity::AUTH_SENT | Activity::AUTH_RECEIVED) != 0 {
            p.timers
                .any_authenticated_packet_traversal(now, p.persistent_keepalive);
        }
        if rekey {
            self.send_initiation(now, peer, false, crypto, out);
        }
        self.reschedule(peer);
    }

    // ------------------------------------------------------------ initiations

    /// Sends an initiation to `key`. A first attempt (not `retry`) is
    /// skipped if one went out less than REKEY_TIMEOUT ago: at most one
    /// initiation per REKEY_TIMEOUT per peer.
    fn send_initiation(
        &mut self,
        now: Instant,
        key: &PublicKey,
        retry: bool,
        crypto: &mut dyn Crypto,
        out: &mut Out,
    ) {
        let cfg = self.cfg.timers;
        if self.public_key.is_none() {
            return;
        }
        let Some(p) = self.peers.get_mut(key) else {
            return;
        };
        if !retry {
            if p.last_initiation_sent
                .is_some_and(|t| now.saturating_duration_since(t) < cfg.rekey_timeout)
            {
                return;
            }
            p.handshake_attempts = 0;
        }
        let (id, noise) = match crypto.ask(HandshakeToCrypto::CreateInitiation { peer: *key }) {
            CryptoToHandshake::Initiation { id, noise } => (id, noise),
            other => {
                tracing::info!(peer = %key, answer = ?other, "crypto refused to create an initiation");
                return;
            }
        };
        if let Some(old) = p.pending.take() {
            self.indices.free(old.local_index);
        }
        let local_index = self.indices.allocate(
            &mut self.rng,
            IndexEntry {
                peer: *key,
                what: IndexUse::Initiation(id),
            },
        );
        p.pending = Some(PendingInitiation { local_index, id });
        let mut bytes = Initiation {
            sender: local_index,
            noise: noise.0,
            mac1: [0; 16],
            mac2: [0; 16],
        }
        .to_bytes();
        p.cookies
            .stamp(now, key, &mut bytes, INITIATION_MAC1_OFFSET);
        p.last_initiation_sent = Some(now);
        p.timers.handshake_initiated(now, &cfg, &mut self.rng);
        p.timers.any_authenticated_packet_sent();
        p.timers
            .any_authenticated_packet_traversal(now, p.persistent_keepalive);
        tracing::debug!(peer = %key, "sending handshake initiation");
        out.push(HandshakeToTransport::Send {
            to: Destination::Peer(*key),
            bytes: bytes.to_vec(),
        });
    }

    // ------------------------------------------------------------ packets

    /// One handshake packet (type 1, 2 or 3) from `from`: its checks,
    /// the key holder's answer if it needs one, and what follows from it.
    /// The same as [`Core::begin_packet`], then [`Crypto::ask`], then
    /// [`Core::finish_packet`].
    pub fn handle_packet(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: Endpoint,
        crypto: &mut dyn Crypto,
        out: &mut Out,
    ) -> PacketOutcome {
        match self.begin_packet(now, bytes, from, out) {
            Begun::Done(outcome) => outcome,
            Begun::Ask(question, waiting) => {
                let answer = crypto.ask(question);
                self.finish_packet(now, waiting, answer, out)
            }
        }
    }

    /// The first half of [`Core::handle_packet`]: every check that needs
    /// no key (length, MAC1, MAC2 or a cookie reply under load, the rate
    /// limit, the receiver index of a response). Either that settles the
    /// packet, or it needs the key holder: then the question to ask, and
    /// what [`Core::finish_packet`] needs with the answer.
    ///
    /// The process loop uses the halves to keep a few questions in flight,
    /// so that the key holder finds the next one waiting when it answers
    /// one. Other packets may then be finished between a packet's two
    /// halves (never timers, activity, or configuration: the loop collects
    /// every answer first), and [`Core::finish_packet`] checks again what
    /// they may have changed.
    pub fn begin_packet(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: Endpoint,
        out: &mut Out,
    ) -> Begun {
        let begun = self.dispatch_packet(now, bytes, from, out);
        if let Begun::Done(outcome) = begun {
            self.count(outcome, &from);
        }
        begun
    }

    /// The second half of [`Core::handle_packet`]: the key holder's answer
    /// to the question [`Core::begin_packet`] asked for `waiting`.
    pub fn finish_packet(
        &mut self,
        now: Instant,
        waiting: AwaitingCrypto,
        answer: CryptoToHandshake,
        out: &mut Out,
    ) -> PacketOutcome {
        let from = waiting.from;
        let outcome = match waiting.what {
            Awaiting::Answer { sender } => self.initiation_answered(now, sender, from, answer, out),
            Awaiting::Keys {
                sender,
                receiver,
                peer,
                id,
            } => self.response_consumed(now, sender, receiver, peer, id, from, answer, out),
        };
        self.count(outcome, &from);
        outcome
    }

    fn count(&mut self, outcome: PacketOutcome, from: &Endpoint) {
        if let PacketOutcome::Dropped(reason) = outcome {
            let c = &mut self.counters;
            match reason {
                DropReason::Malformed | DropReason::NoInterfaceKey => c.malformed += 1,
                DropReason::BadMac1 => c.bad_mac1 += 1,
                DropReason::RateLimited => c.rate_limited += 1,
                DropReason::UnknownIndex => c.unknown_index += 1,
                DropReason::Rejected(_) | DropReason::BadCookie => c.rejected += 1,
                DropReason::ReplayedTimestamp => c.replayed_timestamp += 1,
                DropReason::InitiationFlood => c.initiation_flood += 1,
            }
            tracing::debug!(from = %from.addr, ?reason, "dropped handshake packet");
        }
    }

    fn dispatch_packet(
        &mut self,
        now: Instant,
        bytes: &[u8],
        from: Endpoint,
        out: &mut Out,
    ) -> Begun {
        use PacketOutcome::Dropped;
        let kind = match wire::classify(bytes) {
            Ok(k) => k,
            Err(_) => return Begun::Done(Dropped(DropReason::Malformed)),
        };
        let mac1_at = match kind {
            MessageType::Initiation => INITIATION_MAC1_OFFSET,
            MessageType::Response => RESPONSE_MAC1_OFFSET,
            MessageType::CookieReply => return Begun::Done(self.consume_cookie_reply(now, bytes)),
            MessageType::Data => return Begun::Done(Dropped(DropReason::Malformed)),
        };
        let under_load = self.load.record(now);
        let Some(checker) = self.checker.as_mut() else {
            return Begun::Done(Dropped(DropReason::NoInterfaceKey));
        };
        match checker.check(now, bytes, mac1_at, &from.addr, under_load) {
            MacCheck::BadMac1 => return Begun::Done(Dropped(DropReason::BadMac1)),
            MacCheck::NeedCookie => {
                let (sender, mac1) = match kind {
                    MessageType::Initiation => match Initiation::parse(bytes) {
                        Ok(m) => (m.sender, m.mac1),
                        Err(_) => return Begun::Done(Dropped(DropReason::Malformed)),
                    },
                    _ => match Response::parse(bytes) {
                        Ok(m) => (m.sender, m.mac1),
                        Err(_) => return Begun::Done(Dropped(DropReason::Malformed)),
                    },
                };
                let reply = checker.make_reply(now, sender, &mac1, &from.addr);
                self.counters.cookie_replies_sent += 1;
                out.push(HandshakeToTransport::Send {
                    to: Destination::Addr(from),
                    bytes: reply.to_bytes().to_vec(),
                });
                return Begun::Done(PacketOutcome::CookieSent);
            }
            MacCheck::Ok => {}
        }
        if under_load && !self.limiter.allow(now, from.addr.ip()) {
            return Begun::Done(Dropped(DropReason::RateLimited));
        }
        match kind {
            // One question: crypto reads the initiation and, if its own
            // rules (configured peer, newer timestamp, rate) allow, answers
            // it with the response and our session keys at once.
            MessageType::Initiation => match Initiation::parse(bytes) {
                Ok(m) => Begun::Ask(
                    HandshakeToCrypto::AnswerInitiation {
                        noise: NoiseInitiation(m.noise),
                    },
                    AwaitingCrypto {
                        from,
                        what: Awaiting::Answer { sender: m.sender },
                    },
                ),
                Err(_) => Begun::Done(Dropped(DropReason::Malformed)),
            },
            _ => match Response::parse(bytes) {
                Ok(m) => self.begin_response(m, from),
                Err(_) => Begun::Done(Dropped(DropReason::Malformed)),
            },
        }
    }

    fn consume_cookie_reply(&mut self, now: Instant, bytes: &[u8]) -> PacketOutcome {
        let Ok(reply) = CookieReply::parse(bytes) else {
            return PacketOutcome::Dropped(DropReason::Malformed);
        };
        let Some(entry) = self.indices.get(reply.receiver).copied() else {
            return PacketOutcome::Dropped(DropReason::UnknownIndex);
        };
        let Some(p) = self.peers.get_mut(&entry.peer) else {
            return PacketOutcome::Dropped(DropReason::UnknownIndex);
        };
        if p.cookies.consume_reply(now, &entry.peer, &reply) {
            tracing::debug!(peer = %entry.peer, "received cookie");
            PacketOutcome::CookieAccepted
        } else {
            PacketOutcome::Dropped(DropReason::BadCookie)
        }
    }

    /// The key holder's answer to an initiation (`sender`: the peer's
    /// index). Our checks here repeat its timestamp and rate rules on our
    /// own records; if they refuse, the response and the keys are dropped
    /// unsent (the keys zeroize on drop), and without the response the
    /// peer can never use them.
    fn initiation_answered(
        &mut self,
        now: Instant,
        sender: u32,
        from: Endpoint,
        answer: CryptoToHandshake,
        out: &mut Out,
    ) -> PacketOutcome {
        let (peer, timestamp, noise, keys) = match answer {
            CryptoToHandshake::Answered {
                peer,
                timestamp,
                noise,
                keys,
            } => (peer, timestamp, noise, keys),
            // The key holder checks timestamps and rate itself and says
            // why it refused: counted as our own checks count them.
            CryptoToHandshake::Refused(CryptoError::ReplayedTimestamp) => {
                return PacketOutcome::Dropped(DropReason::ReplayedTimestamp)
            }
            CryptoToHandshake::Refused(CryptoError::InitiationFlood) => {
                return PacketOutcome::Dropped(DropReason::InitiationFlood)
            }
            CryptoToHandshake::Refused(e) => {
                return PacketOutcome::Dropped(DropReason::Rejected(e))
            }
            _ => return PacketOutcome::Dropped(DropReason::Rejected(CryptoError::Internal)),
        };
        let Some(p) = self.peers.get_mut(&peer) else {
            // Crypto knows the peer but we do not (configuration race).
            return PacketOutcome::Dropped(DropReason::Rejected(CryptoError::UnknownPeer));
        };
        if timestamp <= p.greatest_timestamp {
            return PacketOutcome::Dropped(DropReason::ReplayedTimestamp);
        }
        if p.last_initiation_consumed
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return PacketOutcome::Dropped(DropReason::InitiationFlood);
        }
        p.greatest_timestamp = timestamp;
        p.last_initiation_consumed = Some(now);

        let local_index = self.indices.allocate(
            &mut self.rng,
            IndexEntry {
                peer,
                what: IndexUse::Keypair,
            },
        );
        let mut bytes = Response {
            sender: local_index,
            receiver: sender,
            noise: noise.0,
            mac1: [0; 16],
            mac2: [0; 16],
        }
        .to_bytes();
        let cfg = self.cfg.timers;
        let Some(p) = self.peers.get_mut(&peer) else {
            return PacketOutcome::Dropped(DropReason::UnknownIndex);
        };
        p.cookies
            .stamp(now, &peer, &mut bytes, RESPONSE_MAC1_OFFSET);
        // The endpoint first, then the response to the peer: like Linux,
        // the response goes where the initiation came from, from the
        // address it came to, and counts in the peer's transfer.
        out.push(HandshakeToTransport::HandshakeReceived {
            peer,
            from,
            len: wire::INITIATION_LEN as u32,
        });
        // The keypair before the response, as Linux begins the session
        // before it sends: the transport may carry out the orders in two
        // batches, and the peer's first packet (its confirming keepalive)
        // answers the response within a fraction of a millisecond. Sent
        // the other way round, the transport dropped that packet for an
        // unknown index in up to a quarter of the handshakes of a storm
        // (scripts/storm.sh), and the session stayed unconfirmed here.
        self.install(now, &peer, local_index, sender, keys, false, out);
        out.push(HandshakeToTransport::Send {
            to: Destination::Peer(peer),
            bytes: bytes.to_vec(),
        });
        if let Some(p) = self.peers.get_mut(&peer) {
            p.awaiting_confirmation = true;
            p.timers.session_derived(now, &cfg);
            p.timers.any_authenticated_packet_sent();
            p.timers
                .any_authenticated_packet_traversal(now, p.persistent_keepalive);
        }
        self.reschedule(&peer);
        tracing::debug!(%peer, "answered handshake initiation");
        PacketOutcome::Responded(peer)
    }

    /// A response passed its MACs: it is for our pending initiation under
    /// its receiver index, or for nothing.
    fn begin_response(&mut self, msg: Response, from: Endpoint) -> Begun {
        let Some(IndexEntry {
            peer,
            what: IndexUse::Initiation(id),
        }) = self.indices.get(msg.receiver).copied()
        else {
            return Begun::Done(PacketOutcome::Dropped(DropReason::UnknownIndex));
        };
        // One question: a response that authenticates finishes the
        // handshake in crypto and releases its keys in the same answer.
        Begun::Ask(
            HandshakeToCrypto::ConsumeResponse {
                id,
                noise: NoiseResponse(msg.noise),
            },
            AwaitingCrypto {
                from,
                what: Awaiting::Keys {
                    sender: msg.sender,
                    receiver: msg.receiver,
                    peer,
                    id,
                },
            },
        )
    }

    /// The key holder's answer to a response to our initiation `id` with
    /// `peer` under our index `receiver` (`sender`: the peer's index).
    #[allow(clippy::too_many_arguments)]
    fn response_consumed(
        &mut self,
        now: Instant,
        sender: u32,
        receiver: u32,
        peer: PublicKey,
        id: HandshakeId,
        from: Endpoint,
        answer: CryptoToHandshake,
        out: &mut Out,
    ) -> PacketOutcome {
        // Packets finished since the question was asked may have moved the
        // index on (a copy of the same response, finished first, made it
        // a keypair's): then this answer belongs to nothing we hold, and
        // whatever it carries is dropped. Without packets in flight the
        // index cannot have moved.
        let asked = IndexEntry {
            peer,
            what: IndexUse::Initiation(id),
        };
        if self.indices.get(receiver) != Some(&asked) {
            return PacketOutcome::Dropped(DropReason::UnknownIndex);
        }
        let keys = match answer {
            CryptoToHandshake::ResponseConsumed(keys) => keys,
            // A response that does not authenticate changes nothing: the
            // key holder keeps the handshake, and so do we (its index, the
            // pending initiation, the retransmit timer), so the genuine
            // response still completes it. Anyone who saw our initiation
            // on the wire knows its index, and MAC1 needs only our public
            // key: dropping the handshake here would let them cancel every
            // handshake we start. Linux and wireguard-go keep it too.
            CryptoToHandshake::Refused(CryptoError::Rejected) => {
                return PacketOutcome::Dropped(DropReason::Rejected(CryptoError::Rejected));
            }
            // Crypto no longer has the handshake (or never had it in that
            // state): forget it too, and let the retransmit timer start a
            // fresh one.
            other => {
                self.indices.free(receiver);
                if let Some(p) = self.peers.get_mut(&peer) {
                    if p.pending.as_ref().is_some_and(|q| q.id == id) {
                        p.pending = None;
                    }
                }
                let e = match other {
                    CryptoToHandshake::Refused(e) => e,
                    _ => CryptoError::Internal,
                };
                return PacketOutcome::Dropped(DropReason::Rejected(e));
            }
        };
        let cfg = self.cfg.timers;
        let Some(p) = self.peers.get_mut(&peer) else {
            return PacketOutcome::Dropped(DropReason::UnknownIndex);
        };
        p.pending = None;
        p.handshake_attempts = 0;
        p.last_handshake = Some(now);
        p.timers.handshake_complete();
        p.timers.session_derived(now, &cfg);
        p.timers.any_authenticated_packet_received();
        p.timers
            .any_authenticated_packet_traversal(now, p.persistent_keepalive);
        self.indices.set(
            receiver,
            IndexEntry {
                peer,
                what: IndexUse::Keypair,
            },
        );
        out.push(HandshakeToTransport::HandshakeReceived {
            peer,
            from,
            len: wire::RESPONSE_LEN as u32,
        });
        self.install(now, &peer, receiver, sender, keys, true, out);
        // Confirm the session to the responder at once (the transport
        // sends staged packets instead, if it has any).
        self.send_keepalive(now, &peer, out);
        self.reschedule(&peer);
        tracing::debug!(%peer, "handshake complete");
        PacketOutcome::Completed(peer)
    }

    #[allow(clippy::too_many_arguments)]
    fn install(
        &mut self,
        now: Instant,
        peer: &PublicKey,
        local_index: u32,
        remote_index: u32,
        keys: SessionKeys,
        initiator: bool,
        out: &mut Out,
    ) {
        if let Some(p) = self.peers.get_mut(peer) {
            if let Some(old) = p.keypairs.push(local_index) {
                self.indices.free(old);
            }
            p.newest = Some((now, initiator));
            p.sent_last_minute_handshake = false;
        }
        out.push(HandshakeToTransport::InstallKeypair {
            peer: *peer,
            local_index,
            remote_index,
            keys,
            initiator,
        });
    }
}

#[cfg(test)]
impl Core {
    /// Panics unless the deadline heap and the index table agree with the
    /// peers: the heap's top is the earliest deadline of any peer, each
    /// peer's queued deadline is its timers' earliest and is live in the
    /// heap, dead entries are bounded, and the index table holds exactly
    /// the indices the peers hold.
    fn check_invariants(&self) {
        let earliest = self
            .peers
            .values()
            .filter_map(|p| p.timers.next_deadline())
            .min();
        assert_eq!(self.next_deadline(), earliest);
        for (key, p) in &self.peers {
            assert_eq!(p.scheduled, p.timers.next_deadline(), "stale schedule");
            if let Some(at) = p.scheduled {
                assert!(
                    self.deadlines
                        .iter()
                        .any(|Reverse(d)| d.peer == *key && d.seq == p.deadline_seq && d.at == at),
                    "queued deadline missing"
                );
            }
        }
        assert!(self.deadlines.len() <= 2 * self.peers.len() + 64 + 1);
        let mut held: Vec<u32> = self.peers.values().flat_map(Peer::indices).collect();
        let mut table: Vec<u32> = self.indices.all().collect();
        held.sort_unstable();
        table.sort_unstable();
        assert_eq!(held, table, "index table and peers disagree");
    }
}

#[cfg(test)]
mod tests;
