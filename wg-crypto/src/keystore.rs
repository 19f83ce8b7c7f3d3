//! The key store and the handshake operations on it: the crypto role's
//! whole state.
//!
//! Like OpenSSH's monitor, the store answers only what the state allows:
//!
//! - handshakes only with configured peers, and only with a private key;
//! - the transport keys of a handshake are released exactly once, with
//!   the step that finishes it, and the handshake is then forgotten: as
//!   responder with the response it writes ([`KeyStore::answer_initiation`],
//!   one step from initiation to response, since the responder's keys are
//!   final once it has written the response), as initiator with the
//!   response that authenticates ([`KeyStore::consume_response`]). No
//!   request releases keys by naming a handshake, so none can be repeated,
//!   sent early or sent for a handshake that never finished;
//! - only our own initiations are pending, at most one per peer (a new one
//!   abandons the old, as a new initiation supersedes the last in
//!   WireGuard), so memory is bounded by the number of peers;
//! - no operation returns the static private key or a PSK: the fields are
//!   private, and no method or reply type carries a [`SecretKey`] out;
//! - an initiation is consumed only if its timestamp is newer than every
//!   earlier one of its peer, and at most one per
//!   [`MIN_INITIATION_INTERVAL`] per peer: a replayed or flooding
//!   initiation gets no handshake, so no response and no keys (the
//!   handshake role checks the same, but the key holder does not rely on
//!   a neighbour for what it may release);
//! - a response that does not authenticate leaves its handshake in place,
//!   so a forged response (the receiver index is on the wire, MAC1 needs
//!   only our public key) cannot kill the genuine handshake, as in Linux
//!   and wireguard-go.
//!
//! Each peer keeps its static-static DH (see `dh.rs`, [`StaticShared`]):
//! 33 bytes a peer, and one X25519 operation fewer per handshake. It is
//! computed after the peer is added or the private key changes, in the
//! crypto role's idle time ([`KeyStore::precompute`], called by the
//! process loop when no request waits), or by the first handshake that
//! needs it, whichever comes first; never all at once inside a request,
//! since 100,000 peers take seconds and the parent gives a role 5 s to
//! answer. The peer table is shared (an `Arc<Mutex<…>>` this one-threaded
//! process never contends) with the DH of our static key, which looks the
//! value up there, or stores it, when snow asks for `ss`.
//!
//! Handshake states are snow's `HandshakeState`s. snow does not zeroize
//! its own symmetric state, so each is dropped the moment its handshake
//! finishes or fails; the static key copy snow keeps lives in our
//! zeroizing DH type (see `dh.rs`).
//!
//! Callers: the crypto role's main loop, which feeds it `ParentToCrypto`
//! from the parent and `HandshakeToCrypto` from the handshake role.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use proto::ipc::{
    CryptoError, CryptoOp, CryptoToHandshake, CryptoToParent, HandshakeToCrypto, ParentToCrypto,
    Secret, Wrapped,
};
use proto::keys::{
    HandshakeId, NoiseInitiation, NoiseResponse, PublicKey, SecretKey, SessionKey, SessionKeys,
    Tai64N,
};
use proto::wire::{NOISE_INITIATION_LEN, NOISE_RESPONSE_LEN};
use snow::params::NoiseParams;
use snow::{Builder, HandshakeState};
use zeroize::Zeroizing;

use crate::dh::{Precomputed, StaticShared, StaticSharedLookup, WgResolver};
use crate::wrap::{WrapFor, WrappingKey};

/// WireGuard's Noise construction and identifier (the whitepaper's
/// CONSTRUCTION and IDENTIFIER strings).
pub const NOISE_PATTERN: &str = "Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
pub const PROLOGUE: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
/// The PSK is mixed in at the end of the second message: position 2.
const PSK_POSITION: u8 = 2;
const ZERO_PSK: [u8; 32] = [0u8; 32];

/// The key holder consumes at most one initiation per peer this often:
/// 50 a second, as Linux (`INITIATIONS_PER_SECOND`) and wireguard-go
/// (`HandshakeInitationRate`) allow.
pub const MIN_INITIATION_INTERVAL: Duration = Duration::from_millis(20);

/// TAI64 labels count from 2^62, plus the 10 s TAI-UTC offset of 1970.
const TAI64_BASE: u64 = 0x4000_0000_0000_000a;
/// Low bits of the nanoseconds cleared, as Linux and wireguard-go do, so
/// the timestamp does not leak a fine-grained clock.
const WHITENER_MASK: u32 = 0x00ff_ffff;

struct Identity {
    secret: SecretKey,
    public: PublicKey,
}

struct Peer {
    psk: Option<SecretKey>,
    /// X25519(our static key, this peer's): see [`StaticShared`].
    ss: StaticShared,
    /// The pending handshake we started with this peer, if any.
    initiating: Option<HandshakeId>,
    /// The greatest timestamp of an initiation consumed from this peer:
    /// one not newer is a replay.
    greatest_timestamp: Tai64N,
    /// When the last initiation from this peer was consumed.
    last_initiation: Option<Instant>,
}

impl Peer {
    fn new(psk: Option<SecretKey>) -> Self {
        Peer {
            psk,
            ss: StaticShared::UNKNOWN,
            initiating: None,
            greatest_timestamp: Tai64N::ZERO,
            last_initiation: None,
        }
    }
}

/// An initiation we sent, waiting for its response.
struct Pending {
    peer: PublicKey,
    hs: Box<HandshakeState>,
}

/// An initiation answered by [`KeyStore::answer_initiation`]: who sent it,
/// its timestamp, the Noise part of our response, and our session keys.
#[derive(Debug)]
pub struct Answer {
    pub peer: PublicKey,
    pub timestamp: Tai64N,
    pub noise: NoiseResponse,
    pub keys: SessionKeys,
}

/// The configured peers, shared with the DH of our static key
/// ([`StaticSharedLookup`]).
#[derive(Default)]
struct PeerTable(Mutex<HashMap<PublicKey, Peer>>);

impl PeerTable {
    /// The table. Only the crypto thread locks it, and never across a call
    /// into snow, so a poisoned lock (a panic elsewhere while it was held)
    /// still holds a consistent table.
    fn lock(&self) -> MutexGuard<'_, HashMap<PublicKey, Peer>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl StaticSharedLookup for PeerTable {
    fn static_shared(&self, peer: &[u8; 32]) -> Option<Option<Zeroizing<[u8; 32]>>> {
        // Called from inside snow while the key store holds no lock; were
        // it held, computing the value is the safe answer.
        let peers = self.0.try_lock().ok()?;
        peers.get(&PublicKey(*peer)).and_then(|p| p.ss.get())
    }

    fn remember(&self, peer: &[u8; 32], value: StaticShared) {
        if let Ok(mut peers) = self.0.try_lock() {
            if let Some(p) = peers.get_mut(&PublicKey(*peer)) {
                p.ss = value;
            }
        }
    }
}

/// The crypto role's state. See the module documentation for its rules.
pub struct KeyStore {
    params: NoiseParams,
    identity: Option<Identity>,
    peers: Arc<PeerTable>,
    pending: HashMap<HandshakeId, Pending>,
    next_id: u64,
    last_timestamp: (u64, u32),
    /// Peer changes of a configuration transaction not yet committed.
    uncommitted: Vec<Change>,
    /// Seals the secrets the parent gives us, for it to keep (see
    /// [`crate::wrap`]); `None` when none could be had.
    wrapping: Option<WrappingKey>,
    /// Peers whose static-static DH may still be unknown, for
    /// [`KeyStore::precompute`] (removed peers are skipped there).
    to_precompute: Vec<PublicKey>,
}

/// A [`CryptoOp`] with its secret unwrapped, waiting for the commit.
enum Change {
    SetPeer(PublicKey, Option<SecretKey>),
    Remove(PublicKey),
    RemoveAll,
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyStore")
            .field("public_key", &self.public_key())
            .field("peers", &self.peer_count())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl Default for KeyStore {
    fn default() -> Self {
        Self::new()
    }
}

fn rejected(_: snow::Error) -> CryptoError {
    CryptoError::Rejected
}

impl KeyStore {
    pub fn new() -> Self {
        KeyStore {
            params: NOISE_PATTERN
                .parse()
                .unwrap_or_else(|_| unreachable!("constant pattern parses")),
            identity: None,
            peers: Arc::default(),
            pending: HashMap::new(),
            next_id: 1,
            last_timestamp: (0, 0),
            uncommitted: Vec::new(),
            wrapping: None,
            to_precompute: Vec::new(),
        }
    }

    /// A key store that wraps the secrets it is given with `key` and opens
    /// the wrapped ones it is given back (see [`crate::wrap`]).
    pub fn with_wrapping_key(key: Option<WrappingKey>) -> Self {
        KeyStore {
            wrapping: key,
            ..Self::new()
        }
    }

    fn wrap(&self, what: WrapFor<'_>, secret: &SecretKey) -> Option<Wrapped> {
        self.wrapping.as_ref().map(|k| k.wrap(what, secret))
    }

    fn open(&self, what: WrapFor<'_>, secret: Secret) -> Result<SecretKey, CryptoError> {
        match secret {
            Secret::Plain(k) => Ok(k),
            Secret::Wrapped(w) => self
                .wrapping
                .as_ref()
                .ok_or(CryptoError::Rejected)?
                .unwrap(what, &w)
                .map_err(|_| CryptoError::Rejected),
        }
    }

    // ------------------------------------------------------------ configuration

    /// Sets or removes the static private key and returns the public key.
    /// Setting the key it already holds changes nothing (so `wg setconf`
    /// re-sending it does not drop handshakes in flight).
    pub fn set_private_key(&mut self, key: Option<SecretKey>) -> Option<PublicKey> {
        let key = key.filter(|k| !k.is_zero());
        let same = match (&self.identity, &key) {
            (Some(id), Some(k)) => id.secret == *k,
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.abandon_all();
            self.identity = key.map(|secret| Identity {
                public: crate::public_key(&secret),
                secret,
            });
            // Every peer's static-static DH was computed with the old key.
            let mut peers = self.peers.lock();
            self.to_precompute.clear();
            for (key, p) in peers.iter_mut() {
                p.ss = StaticShared::UNKNOWN;
                if self.identity.is_some() {
                    self.to_precompute.push(*key);
                }
            }
        }
        self.public_key()
    }

    pub fn public_key(&self) -> Option<PublicKey> {
        self.identity.as_ref().map(|i| i.public)
    }

    /// Computes static-static DH values not known yet, until `budget` has
    /// passed; returns whether some may be left. The crypto process calls
    /// this when no request waits, so a configuration change answers at
    /// once however many peers it has.
    pub fn precompute(&mut self, budget: Duration) -> bool {
        let start = Instant::now();
        let Some(id) = self.identity.as_ref() else {
            self.to_precompute = Vec::new();
            return false;
        };
        let secret = x25519_dalek::StaticSecret::from(*id.secret.expose());
        let mut peers = self.peers.lock();
        while let Some(key) = self.to_precompute.pop() {
            if let Some(p) = peers.get_mut(&key).filter(|p| !p.ss.is_known()) {
                p.ss = StaticShared::compute(&secret, &key.0);
                if start.elapsed() >= budget {
                    break;
                }
            }
        }
        if self.to_precompute.is_empty() {
            // 32 bytes a peer after a key change: give them back.
            self.to_precompute = Vec::new();
        }
        !self.to_precompute.is_empty()
    }

    /// Peers whose static-static DH [`KeyStore::precompute`] may still
    /// have to compute (an upper bound).
    pub fn precompute_pending(&self) -> usize {
        self.to_precompute.len()
    }

    /// Adds a peer or changes its PSK. A changed PSK abandons the peer's
    /// pending handshakes, which were computed with the old one.
    pub fn set_peer(&mut self, peer: PublicKey, psk: Option<SecretKey>) {
        let psk = psk.filter(|k| !k.is_zero());
        let mut peers = self.peers.lock();
        let changed = match peers.get_mut(&peer) {
            Some(p) if p.psk == psk => false,
            Some(p) => {
                p.psk = psk;
                true
            }
            None => {
                peers.insert(peer, Peer::new(psk));
                if self.identity.is_some() {
                    self.to_precompute.push(peer);
                    // Peers removed and added again without idle time in
                    // between would queue twice: keep the list bounded.
                    if self.to_precompute.len() > 2 * peers.len() + 1024 {
                        self.to_precompute.clear();
                        let unknown = peers.iter().filter(|(_, p)| !p.ss.is_known());
                        self.to_precompute.extend(unknown.map(|(k, _)| *k));
                    }
                }
                false
            }
        };
        drop(peers);
        if changed {
            self.abandon_peer(&peer);
        }
    }

    pub fn remove_peer(&mut self, peer: &PublicKey) {
        self.abandon_peer(peer);
        self.peers.lock().remove(peer);
    }

    pub fn remove_all_peers(&mut self) {
        self.abandon_all();
        self.peers.lock().clear();
        self.to_precompute = Vec::new();
    }

    pub fn peer_count(&self) -> usize {
        self.peers.lock().len()
    }

    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    fn abandon_peer(&mut self, peer: &PublicKey) {
        if let Some(id) = self
            .peers
            .lock()
            .get_mut(peer)
            .and_then(|p| p.initiating.take())
        {
            self.pending.remove(&id);
        }
    }

    fn abandon_all(&mut self) {
        self.pending.clear();
        for p in self.peers.lock().values_mut() {
            p.initiating = None;
        }
    }

    // ------------------------------------------------------------ handshakes

    fn new_id(&mut self) -> HandshakeId {
        let id = HandshakeId(self.next_id);
        self.next_id += 1;
        id
    }

    fn builder<'a>(&'a self, identity: &'a Identity) -> Result<Builder<'a>, CryptoError> {
        // The clone is a reference count: the handshake's static DH finds
        // `ss` in the peer table.
        let table: Arc<dyn StaticSharedLookup> = self.peers.clone();
        let precomputed = Precomputed {
            local_public: identity.public.0,
            table,
        };
        Builder::with_resolver(
            self.params.clone(),
            Box::new(WgResolver::new(Some(precomputed))),
        )
        .prologue(PROLOGUE)
        .and_then(|b| b.local_private_key(identity.secret.expose()))
        .map_err(|_| CryptoError::Internal)
    }

    /// A TAI64N timestamp of now, whitened, and strictly greater than any
    /// this store produced before, so that a peer never rejects our
    /// initiation as a replay of our own previous one. Hand-written rather
    /// than taken from the `tai64` crate: the encoding is two big-endian
    /// integers, and what matters here — the whitening of the low bits and
    /// the strict increase — is ours either way.
    fn timestamp(&mut self) -> Tai64N {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut t = (
            TAI64_BASE.saturating_add(now.as_secs()),
            now.subsec_nanos() & !WHITENER_MASK,
        );
        if t <= self.last_timestamp {
            t = self.last_timestamp;
            t.1 += 1;
            if t.1 >= 1_000_000_000 {
                t = (t.0 + 1, 0);
            }
        }
        self.last_timestamp = t;
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&t.0.to_be_bytes());
        b[8..].copy_from_slice(&t.1.to_be_bytes());
        Tai64N(b)
    }

    /// Starts a handshake with `peer`: the Noise part of an initiation.
    /// Abandons any handshake we had started with that peer before.
    pub fn create_initiation(
        &mut self,
        peer: &PublicKey,
    ) -> Result<(HandshakeId, NoiseInitiation), CryptoError> {
        let identity = self.identity.as_ref().ok_or(CryptoError::NoPrivateKey)?;
        let peers = self.peers.lock();
        let p = peers.get(peer).ok_or(CryptoError::UnknownPeer)?;
        let psk = Zeroizing::new(*p.psk.as_ref().map_or(&ZERO_PSK, |k| k.expose()));
        // No lock while snow runs: its DH looks `ss` up in the table.
        drop(peers);
        let mut hs = self
            .builder(identity)?
            .remote_public_key(&peer.0)
            .and_then(|b| b.psk(PSK_POSITION, &psk))
            .and_then(|b| b.build_initiator())
            .map_err(|_| CryptoError::Internal)?;
        let ts = self.timestamp();
        let mut out = [0u8; NOISE_INITIATION_LEN];
        let n = hs
            .write_message(&ts.0, &mut out)
            .map_err(|_| CryptoError::Internal)?;
        if n != NOISE_INITIATION_LEN {
            return Err(CryptoError::Internal);
        }
        let id = self.new_id();
        if let Some(p) = self.peers.lock().get_mut(peer) {
            if let Some(old) = p.initiating.replace(id) {
                self.pending.remove(&old);
            }
        }
        self.pending.insert(
            id,
            Pending {
                peer: *peer,
                hs: Box::new(hs),
            },
        );
        Ok((id, NoiseInitiation(out)))
    }

    /// Answers a peer's initiation now; see [`KeyStore::answer_initiation_at`].
    pub fn answer_initiation(&mut self, msg: &NoiseInitiation) -> Result<Answer, CryptoError> {
        self.answer_initiation_at(Instant::now(), msg)
    }

    /// Reads a peer's initiation at `now` and answers it: who sent it, its
    /// timestamp, the Noise part of the response and the session keys.
    /// Refuses it if it does not authenticate, the sender is not a
    /// configured peer, its timestamp is not newer than the greatest
    /// consumed from that peer (a replay: [`CryptoError::ReplayedTimestamp`])
    /// or the peer's last initiation was consumed less than
    /// [`MIN_INITIATION_INTERVAL`] ago ([`CryptoError::InitiationFlood`]).
    /// A refused initiation gets no response and no keys, and leaves
    /// nothing behind.
    ///
    /// One step, not two (consume, then respond when the handshake role
    /// agrees): the handshake role's own timestamp and rate checks repeat
    /// these, so asking it in between decided nothing the key holder does
    /// not decide here, and cost a round trip per handshake. When the
    /// handshake role refuses after all (its records differ, say after a
    /// peer was removed in one role and not yet in the other), it drops
    /// the response and the keys unsent; the peer, without the response,
    /// can never use them. Nothing of the handshake stays here: the
    /// responder's keys are final once the response is written.
    pub fn answer_initiation_at(
        &mut self,
        now: Instant,
        msg: &NoiseInitiation,
    ) -> Result<Answer, CryptoError> {
        let identity = self.identity.as_ref().ok_or(CryptoError::NoPrivateKey)?;
        let mut hs = self
            .builder(identity)?
            .build_responder()
            .map_err(|_| CryptoError::Internal)?;
        let mut payload = Zeroizing::new([0u8; NOISE_INITIATION_LEN]);
        let n = hs
            .read_message(&msg.0, &mut payload[..])
            .map_err(rejected)?;
        if n != 12 {
            return Err(CryptoError::Rejected);
        }
        let mut ts = [0u8; 12];
        ts.copy_from_slice(&payload[..12]);
        let timestamp = Tai64N(ts);
        let remote: [u8; 32] = hs
            .get_remote_static()
            .and_then(|r| r.try_into().ok())
            .ok_or(CryptoError::Rejected)?;
        let peer = PublicKey(remote);
        let mut peers = self.peers.lock();
        let p = peers.get_mut(&peer).ok_or(CryptoError::UnknownPeer)?;
        if timestamp <= p.greatest_timestamp {
            return Err(CryptoError::ReplayedTimestamp);
        }
        if p.last_initiation
            .is_some_and(|t| now.saturating_duration_since(t) < MIN_INITIATION_INTERVAL)
        {
            return Err(CryptoError::InitiationFlood);
        }
        p.greatest_timestamp = timestamp;
        p.last_initiation = Some(now);
        let psk = p.psk.as_ref().map_or(&ZERO_PSK, |k| k.expose());
        hs.set_psk(PSK_POSITION as usize, psk)
            .map_err(|_| CryptoError::Internal)?;
        // No lock while snow computes: its DH looks `ss` up in the table.
        drop(peers);
        let mut out = [0u8; NOISE_RESPONSE_LEN];
        let n = hs
            .write_message(&[], &mut out)
            .map_err(|_| CryptoError::Internal)?;
        if n != NOISE_RESPONSE_LEN {
            return Err(CryptoError::Internal);
        }
        let (i2r, r2i) = hs.dangerously_get_raw_split();
        // Finished: drop the state now (snow does not zeroize its own).
        drop(hs);
        Ok(Answer {
            peer,
            timestamp,
            noise: NoiseResponse(out),
            keys: SessionKeys {
                send: SessionKey::from_bytes(r2i),
                recv: SessionKey::from_bytes(i2r),
            },
        })
    }

    fn forget(&mut self, id: HandshakeId, peer: &PublicKey) {
        if let Some(p) = self.peers.lock().get_mut(peer) {
            if p.initiating == Some(id) {
                p.initiating = None;
            }
        }
    }

    /// Reads the peer's response to our initiation `id`. If it
    /// authenticates, the handshake is finished: its keys are returned,
    /// this once, and it is forgotten. A response that does not
    /// authenticate changes nothing: the handshake stays, waiting for its
    /// genuine response, as in Linux and wireguard-go (anyone who saw our
    /// initiation's sender index on the wire can send a response to it).
    ///
    /// This relies on snow: `HandshakeState::read_message` restores its
    /// symmetric state (chaining key, hash) when a message fails, and the
    /// response pattern (`e, ee, se, psk`) overwrites everything else it
    /// touched (the remote ephemeral, the cipher key) before using it, so
    /// the state after a failed read is the state before it. The tests
    /// (`wg-crypto/tests/keystore.rs`, a forged response and then the
    /// genuine one) hold snow to it.
    pub fn consume_response(
        &mut self,
        id: HandshakeId,
        msg: &NoiseResponse,
    ) -> Result<SessionKeys, CryptoError> {
        let pending = self
            .pending
            .get_mut(&id)
            .ok_or(CryptoError::UnknownHandshake)?;
        let peer = pending.peer;
        let mut payload = Zeroizing::new([0u8; NOISE_RESPONSE_LEN]);
        match pending.hs.read_message(&msg.0, &mut payload[..]) {
            Ok(0) => {
                let (i2r, r2i) = pending.hs.dangerously_get_raw_split();
                // The state is finished: drop it (snow does not zeroize
                // its own) and hand out only the keys.
                self.pending.remove(&id);
                self.forget(id, &peer);
                Ok(SessionKeys {
                    send: SessionKey::from_bytes(i2r),
                    recv: SessionKey::from_bytes(r2i),
                })
            }
            // Not a WireGuard response (its payload is empty by length):
            // the state has moved past the message, so it cannot wait for
            // another.
            Ok(_) => {
                self.pending.remove(&id);
                self.forget(id, &peer);
                Err(CryptoError::Internal)
            }
            Err(e) => Err(rejected(e)),
        }
    }

    /// Drops our pending initiation (timeout, peer removed).
    pub fn abandon(&mut self, id: HandshakeId) -> Result<(), CryptoError> {
        let pending = self
            .pending
            .remove(&id)
            .ok_or(CryptoError::UnknownHandshake)?;
        self.forget(id, &pending.peer);
        Ok(())
    }

    // ------------------------------------------------------------ dispatch

    /// One request from the parent, one answer.
    pub fn handle_parent(&mut self, msg: ParentToCrypto) -> CryptoToParent {
        match msg {
            ParentToCrypto::SetPrivateKey(k) => {
                let plain = matches!(k, Some(Secret::Plain(_)));
                let key = match k.map(|k| self.open(WrapFor::PrivateKey, k)).transpose() {
                    Ok(key) => key,
                    Err(e) => return CryptoToParent::Refused(e),
                };
                let wrapped = match (&key, plain) {
                    (Some(k), true) => self.wrap(WrapFor::PrivateKey, k),
                    _ => None,
                };
                CryptoToParent::PublicKey(self.set_private_key(key), wrapped)
            }
            ParentToCrypto::Apply(batch) => {
                let mut wrapped = Vec::new();
                for op in batch.ops {
                    let change = match op {
                        CryptoOp::SetPeer { peer, psk } => {
                            let plain = matches!(psk, Some(Secret::Plain(_)));
                            match psk.map(|k| self.open(WrapFor::Psk(&peer), k)).transpose() {
                                Ok(psk) => {
                                    if let (true, Some(k)) = (plain, &psk) {
                                        wrapped.push((peer, self.wrap(WrapFor::Psk(&peer), k)));
                                    }
                                    Change::SetPeer(peer, psk)
                                }
                                Err(e) => {
                                    // The whole transaction goes: no half of it
                                    // is ever applied.
                                    self.uncommitted.clear();
                                    return CryptoToParent::Refused(e);
                                }
                            }
                        }
                        CryptoOp::RemovePeer(peer) => Change::Remove(peer),
                        CryptoOp::RemoveAllPeers => Change::RemoveAll,
                    };
                    self.uncommitted.push(change);
                }
                if batch.commit {
                    for change in std::mem::take(&mut self.uncommitted) {
                        match change {
                            Change::SetPeer(peer, psk) => self.set_peer(peer, psk),
                            Change::Remove(peer) => self.remove_peer(&peer),
                            Change::RemoveAll => self.remove_all_peers(),
                        }
                    }
                }
                if wrapped.is_empty() {
                    CryptoToParent::Done
                } else {
                    CryptoToParent::WrappedPsks(wrapped)
                }
            }
        }
    }

    /// One question from the handshake role, one answer.
    pub fn handle_handshake(&mut self, msg: HandshakeToCrypto) -> CryptoToHandshake {
        self.handle_handshake_at(Instant::now(), msg)
    }

    /// One question from the handshake role at `now` (the clock of the
    /// initiation rate limit; tests on a fake clock pass theirs).
    pub fn handle_handshake_at(
        &mut self,
        now: Instant,
        msg: HandshakeToCrypto,
    ) -> CryptoToHandshake {
        let answer = match msg {
            HandshakeToCrypto::CreateInitiation { peer } => self
                .create_initiation(&peer)
                .map(|(id, noise)| CryptoToHandshake::Initiation { id, noise }),
            HandshakeToCrypto::AnswerInitiation { noise } => self
                .answer_initiation_at(now, &noise)
                .map(|a| CryptoToHandshake::Answered {
                    peer: a.peer,
                    timestamp: a.timestamp,
                    noise: a.noise,
                    keys: a.keys,
                }),
            HandshakeToCrypto::ConsumeResponse { id, noise } => self
                .consume_response(id, &noise)
                .map(CryptoToHandshake::ResponseConsumed),
            HandshakeToCrypto::Abandon { id } => {
                self.abandon(id).map(|()| CryptoToHandshake::Abandoned)
            }
        };
        answer.unwrap_or_else(CryptoToHandshake::Refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(key: [u8; 32]) -> (KeyStore, PublicKey) {
        let mut s = KeyStore::new();
        let public = s
            .set_private_key(Some(SecretKey::from_bytes(key)))
            .unwrap_or_else(|| unreachable!("a non-zero key"));
        (s, public)
    }

    /// The `ss` step takes the peer table's value, on both sides: a wrong
    /// value there breaks the handshake, and the right one restores it.
    #[test]
    fn handshakes_use_the_precomputed_value() {
        let (mut a, pa) = store([1; 32]);
        let (mut b, pb) = store([2; 32]);
        a.set_peer(pb, None);
        b.set_peer(pa, None);
        let t0 = Instant::now();
        let mut round = 0;
        let mut attempt = |a: &mut KeyStore, b: &mut KeyStore| {
            // A second apart: the flood guard stays out of the way.
            round += 1;
            let now = t0 + Duration::from_secs(round);
            let (_, init) = a.create_initiation(&pb).map_err(|e| ("initiation", e))?;
            b.answer_initiation_at(now, &init)
                .map(drop)
                .map_err(|e| ("consume", e))
        };
        attempt(&mut a, &mut b).expect("handshake with the precomputed values");

        let spoil = |s: &mut KeyStore, peer: &PublicKey| {
            if let Some(p) = s.peers.lock().get_mut(peer) {
                p.ss = StaticShared::compute(&x25519_dalek::StaticSecret::from([3; 32]), &peer.0);
            }
        };
        // A wrong value at the responder: the initiation does not verify.
        spoil(&mut b, &pa);
        assert_eq!(
            attempt(&mut a, &mut b),
            Err(("consume", CryptoError::Rejected))
        );
        // A wrong value at the initiator: the same.
        b.set_private_key(Some(SecretKey::from_bytes([4; 32])));
        b.set_private_key(Some(SecretKey::from_bytes([2; 32])));
        spoil(&mut a, &pb);
        assert_eq!(
            attempt(&mut a, &mut b),
            Err(("consume", CryptoError::Rejected))
        );
        // Recomputed (a private key change forgets every peer's value).
        a.set_private_key(None);
        a.set_private_key(Some(SecretKey::from_bytes([1; 32])));
        attempt(&mut a, &mut b).expect("handshake after recomputing");
    }

    fn known(s: &KeyStore, peer: &PublicKey) -> bool {
        s.peers.lock().get(peer).is_some_and(|p| p.ss.is_known())
    }

    /// A configuration change computes nothing; idle time does, a bounded
    /// slice at a time, and so does the first handshake that needs a value.
    #[test]
    fn values_come_from_idle_time_or_the_first_handshake() {
        let (mut a, pa) = store([1; 32]);
        let peers: Vec<PublicKey> = (10..20u8)
            .map(|i| crate::public_key(&SecretKey::from_bytes([i; 32])))
            .collect();
        for p in &peers {
            a.set_peer(*p, None);
        }
        assert_eq!(a.precompute_pending(), 10);
        assert!(peers.iter().all(|p| !known(&a, p)));
        // A zero budget still makes progress: one value.
        assert!(a.precompute(Duration::ZERO));
        assert_eq!(peers.iter().filter(|p| known(&a, p)).count(), 1);
        assert!(!a.precompute(Duration::from_secs(60)));
        assert_eq!(a.precompute_pending(), 0);
        let secret = x25519_dalek::StaticSecret::from([1; 32]);
        for p in &peers {
            let want = StaticShared::compute(&secret, &p.0).get().flatten();
            let got = a.peers.lock().get(p).and_then(|e| e.ss.get()).flatten();
            assert_eq!(got.as_deref(), want.as_deref());
        }
        // A new key forgets them all and queues them again.
        a.set_private_key(Some(SecretKey::from_bytes([2; 32])));
        assert!(peers.iter().all(|p| !known(&a, p)));
        assert_eq!(a.precompute_pending(), 10);
        a.set_private_key(Some(SecretKey::from_bytes([1; 32])));

        // Before any idle time, a handshake computes and keeps the value,
        // on both sides.
        let (mut b, pb) = store([3; 32]);
        a.set_peer(pb, None);
        b.set_peer(pa, None);
        assert!(!known(&a, &pb) && !known(&b, &pa));
        let (_, init) = a.create_initiation(&pb).expect("initiation");
        assert!(known(&a, &pb));
        b.answer_initiation(&init).expect("answer");
        assert!(known(&b, &pa));
    }
}
