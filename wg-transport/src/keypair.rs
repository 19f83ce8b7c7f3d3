//! Session keypairs and each peer's previous / current / next slots.
//!
//! The transport role holds one [`KeypairSlots`] per peer. The handshake
//! role hands it the two transport keys of every finished handshake, which
//! become a [`Keypair`] installed here; the data path then encrypts with
//! the current keypair and decrypts with whichever slot the receiver index
//! of a packet names (see [`crate::data`]).
//!
//! Everything is sans-IO: each time-dependent function takes `now` and
//! nothing here reads the clock, so the rules are tested with a fake time.
//!
//! The slot rules follow the whitepaper and the Linux and wireguard-go
//! implementations. A responder cannot know that the initiator has received
//! its handshake response until the initiator uses the new keys, so its
//! keypair waits in `next` and is never used for sending until a data
//! packet authenticated under it arrives; until then the old `current`
//! keeps the session going. The initiator has seen the response, so its
//! keypair is usable at once.

use std::time::{Duration, Instant};

use crate::aead::DataKey;
use crate::replay::ReplayWindow;

pub use proto::wire::constants::{
    KEEPALIVE_TIMEOUT, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES,
    REKEY_AFTER_TIME, REKEY_TIMEOUT,
};

/// The keys, counters and replay state of one finished handshake.
///
/// Not `Clone`: the keys exist once, and dropping the keypair zeroizes them.
#[derive(Debug)]
pub struct Keypair {
    local_index: u32,
    remote_index: u32,
    send: DataKey,
    recv: DataKey,
    /// The counter the next sent message will carry.
    send_counter: u64,
    replay: ReplayWindow,
    created: Instant,
    initiator: bool,
}

impl Keypair {
    /// A keypair from a finished handshake. `local_index` is the index we
    /// chose (peers put it in the receiver field of what they send us),
    /// `remote_index` the one the peer chose, `initiator` whether we sent
    /// the initiation, `created` when the handshake finished.
    pub fn new(
        local_index: u32,
        remote_index: u32,
        send_key: &[u8; 32],
        recv_key: &[u8; 32],
        initiator: bool,
        created: Instant,
    ) -> Self {
        Self {
            local_index,
            remote_index,
            send: DataKey::new(send_key),
            recv: DataKey::new(recv_key),
            send_counter: 0,
            replay: ReplayWindow::new(),
            created,
            initiator,
        }
    }

    pub fn local_index(&self) -> u32 {
        self.local_index
    }

    pub fn remote_index(&self) -> u32 {
        self.remote_index
    }

    pub fn is_initiator(&self) -> bool {
        self.initiator
    }

    pub fn created(&self) -> Instant {
        self.created
    }

    /// The counter the next message sent under this keypair will carry,
    /// which is also how many have been sent.
    pub fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// How long ago the handshake finished; zero if `now` is earlier (a
    /// clock that steps back must not make a keypair look younger than
    /// new, nor panic).
    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.created)
    }

    /// Whether the keypair may no longer send or receive.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.age(now) >= REJECT_AFTER_TIME || self.send_counter >= REJECT_AFTER_MESSAGES
    }

    /// Takes the next send counter, or `None` once the keypair is expired.
    pub(crate) fn take_send_counter(&mut self, now: Instant) -> Option<u64> {
        if self.is_expired(now) {
            return None;
        }
        let c = self.send_counter;
        // Cannot overflow: is_expired() caps it below REJECT_AFTER_MESSAGES.
        self.send_counter += 1;
        Some(c)
    }

    pub(crate) fn send_key(&self) -> &DataKey {
        &self.send
    }

    pub(crate) fn recv_key(&self) -> &DataKey {
        &self.recv
    }

    pub(crate) fn replay(&self) -> &ReplayWindow {
        &self.replay
    }

    pub(crate) fn replay_mut(&mut self) -> &mut ReplayWindow {
        &mut self.replay
    }
}

/// Which slot a keypair sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Previous,
    Current,
    Next,
}

/// One peer's keypairs: the one in use, the one before it (still accepted
/// for packets in flight across a rekey), and a responder's not yet
/// confirmed successor.
///
/// Each keypair is boxed. A keypair is over a kilobyte (its replay window
/// alone is 1 KiB), most peers of a big hub have no session at a given
/// moment, and the transport keeps one `KeypairSlots` per configured peer:
/// inline, three empty slots would cost every peer over 3 KiB; boxed they
/// cost 24 bytes, and a keypair's memory exists only while it does.
/// The data path pays one pointer load per packet for this (the box is
/// allocated when a handshake completes, never per packet), and rotating
/// slots moves pointers, not kilobytes.
#[derive(Debug, Default)]
pub struct KeypairSlots {
    previous: Option<Box<Keypair>>,
    current: Option<Box<Keypair>>,
    next: Option<Box<Keypair>>,
}

impl KeypairSlots {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn previous(&self) -> Option<&Keypair> {
        self.previous.as_deref()
    }

    pub fn current(&self) -> Option<&Keypair> {
        self.current.as_deref()
    }

    pub fn next(&self) -> Option<&Keypair> {
        self.next.as_deref()
    }

    pub(crate) fn get_mut(&mut self, slot: Slot) -> Option<&mut Keypair> {
        match slot {
            Slot::Previous => self.previous.as_deref_mut(),
            Slot::Current => self.current.as_deref_mut(),
            Slot::Next => self.next.as_deref_mut(),
        }
    }

    /// The send key of the keypair whose local index is `index`.
    pub fn send_key_of(&self, index: u32) -> Option<&DataKey> {
        let slot = self.find(index)?;
        match slot {
            Slot::Previous => self.previous(),
            Slot::Current => self.current(),
            Slot::Next => self.next(),
        }
        .map(Keypair::send_key)
    }

    /// The receive key of the keypair whose local index is `index`.
    pub fn recv_key_of(&self, index: u32) -> Option<&DataKey> {
        let slot = self.find(index)?;
        match slot {
            Slot::Previous => self.previous(),
            Slot::Current => self.current(),
            Slot::Next => self.next(),
        }
        .map(Keypair::recv_key)
    }

    /// The slot holding the keypair whose local index is `index`.
    pub fn find(&self, index: u32) -> Option<Slot> {
        let is = |k: &Option<Box<Keypair>>| k.as_ref().is_some_and(|k| k.local_index == index);
        if is(&self.current) {
            Some(Slot::Current)
        } else if is(&self.previous) {
            Some(Slot::Previous)
        } else if is(&self.next) {
            Some(Slot::Next)
        } else {
            None
        }
    }

    /// Installs the keypair of a finished handshake and returns the local
    /// indices of the keypairs this dropped, for the caller to free.
    ///
    /// As initiator the keypair becomes current at once and the old
    /// current becomes previous, unless a responder keypair was waiting in
    /// next: that one is newer than current and the peer may already be
    /// sending with it, so it becomes previous and the old current goes.
    /// As responder the keypair waits in next until [`Self::confirm_next`];
    /// previous is dropped, since confirmation will move current there.
    pub fn install(&mut self, keypair: Keypair) -> Vec<u32> {
        let keypair = Box::new(keypair);
        let mut dropped = Vec::new();
        let mut drop_kp = |k: Option<Box<Keypair>>| {
            if let Some(k) = k {
                dropped.push(k.local_index);
            }
        };
        if keypair.initiator {
            if let Some(next) = self.next.take() {
                drop_kp(self.previous.replace(next));
                drop_kp(self.current.take());
            } else {
                let old = self.current.take();
                drop_kp(std::mem::replace(&mut self.previous, old));
            }
            self.current = Some(keypair);
        } else {
            drop_kp(self.next.replace(keypair));
            drop_kp(self.previous.take());
        }
        dropped
    }

    /// Promotes next to current after a data packet authenticated under
    /// it: the peer has proved it holds the keys. Returns the local index
    /// of the previous keypair this dropped, if any. Does nothing (and
    /// returns `None`) when next is empty.
    pub fn confirm_next(&mut self) -> Option<u32> {
        let next = self.next.take()?;
        let old_current = self.current.replace(next);
        let old_previous = std::mem::replace(&mut self.previous, old_current);
        old_previous.map(|k| k.local_index)
    }

    /// Drops every keypair and returns their local indices.
    pub fn clear(&mut self) -> Vec<u32> {
        [self.previous.take(), self.current.take(), self.next.take()]
            .into_iter()
            .flatten()
            .map(|k| k.local_index)
            .collect()
    }

    /// Drops the keypairs that have expired, so that their keys are zeroized
    /// without waiting for the session to be cleared, and returns their
    /// local indices.
    pub fn drop_expired(&mut self, now: Instant) -> Vec<u32> {
        let mut dropped = Vec::new();
        for slot in [&mut self.previous, &mut self.current, &mut self.next] {
            if slot.as_ref().is_some_and(|k| k.is_expired(now)) {
                if let Some(k) = slot.take() {
                    dropped.push(k.local_index);
                }
            }
        }
        dropped
    }

    /// Whether a message could be sent now: current exists and is not
    /// expired. An unconfirmed next never sends; with only next, the caller
    /// stages the packet until confirmation.
    pub fn can_send(&self, now: Instant) -> bool {
        self.current.as_ref().is_some_and(|k| !k.is_expired(now))
    }

    /// A new handshake is due because the current keypair has sent
    /// [`REKEY_AFTER_MESSAGES`]; for either role, as in Linux and
    /// wireguard-go. Only the transport sees the counter, so only this rule
    /// lives here; the rekeys by age are the handshake role's timers
    /// (`wg-handshake/src/core.rs`), which know when each session began.
    pub fn needs_rekey_by_count(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|k| k.send_counter >= REKEY_AFTER_MESSAGES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kp(index: u32, initiator: bool, created: Instant) -> Keypair {
        let key = [index as u8; 32];
        Keypair::new(index, index + 1000, &key, &key, initiator, created)
    }

    fn indices(s: &KeypairSlots) -> [Option<u32>; 3] {
        [
            s.previous().map(Keypair::local_index),
            s.current().map(Keypair::local_index),
            s.next().map(Keypair::local_index),
        ]
    }

    #[test]
    fn constants_match_whitepaper() {
        assert_eq!(REKEY_AFTER_MESSAGES, 1u64 << 60);
        assert_eq!(
            u128::from(REJECT_AFTER_MESSAGES),
            (1u128 << 64) - (1 << 13) - 1
        );
        assert_eq!(REKEY_AFTER_TIME.as_secs(), 120);
        assert_eq!(REJECT_AFTER_TIME.as_secs(), 180);
        assert_eq!(KEEPALIVE_TIMEOUT.as_secs(), 10);
        assert_eq!(REKEY_TIMEOUT.as_secs(), 5);
    }

    #[test]
    fn initiator_install_rotates() {
        let t = Instant::now();
        let mut s = KeypairSlots::new();
        assert!(s.install(kp(1, true, t)).is_empty());
        assert_eq!(indices(&s), [None, Some(1), None]);
        assert!(s.install(kp(2, true, t)).is_empty());
        assert_eq!(indices(&s), [Some(1), Some(2), None]);
        assert_eq!(s.install(kp(3, true, t)), vec![1]);
        assert_eq!(indices(&s), [Some(2), Some(3), None]);
    }

    #[test]
    fn initiator_install_over_pending_next() {
        let t = Instant::now();
        let mut s = KeypairSlots::new();
        s.install(kp(1, true, t));
        s.install(kp(2, true, t));
        // A responder keypair arrives, then our own initiation completes.
        assert_eq!(s.install(kp(3, false, t)), vec![1]);
        assert_eq!(indices(&s), [None, Some(2), Some(3)]);
        let mut dropped = s.install(kp(4, true, t));
        dropped.sort_unstable();
        assert_eq!(dropped, vec![2]);
        assert_eq!(indices(&s), [Some(3), Some(4), None]);
    }

    #[test]
    fn responder_install_waits_for_confirmation() {
        let t = Instant::now();
        let mut s = KeypairSlots::new();
        s.install(kp(1, true, t));
        s.install(kp(2, true, t));
        assert_eq!(s.install(kp(3, false, t)), vec![1]);
        assert_eq!(indices(&s), [None, Some(2), Some(3)]);
        // A second response before confirmation replaces the pending one.
        assert_eq!(s.install(kp(4, false, t)), vec![3]);
        assert_eq!(indices(&s), [None, Some(2), Some(4)]);
        assert_eq!(s.confirm_next(), None);
        assert_eq!(indices(&s), [Some(2), Some(4), None]);
        assert_eq!(s.confirm_next(), None);
        assert_eq!(indices(&s), [Some(2), Some(4), None]);
    }

    #[test]
    fn responder_only_next_cannot_send() {
        let t = Instant::now();
        let mut s = KeypairSlots::new();
        s.install(kp(1, false, t));
        assert!(!s.can_send(t));
        s.confirm_next();
        assert!(s.can_send(t));
    }

    #[test]
    fn find_and_clear() {
        let t = Instant::now();
        let mut s = KeypairSlots::new();
        s.install(kp(1, true, t));
        s.install(kp(2, true, t));
        s.install(kp(3, false, t));
        // Installing a responder keypair dropped previous (1).
        assert_eq!(s.find(1), None);
        assert_eq!(s.find(2), Some(Slot::Current));
        assert_eq!(s.find(3), Some(Slot::Next));
        s.confirm_next();
        assert_eq!(s.find(2), Some(Slot::Previous));
        assert_eq!(s.find(3), Some(Slot::Current));
        let mut all = s.clear();
        all.sort_unstable();
        assert_eq!(all, vec![2, 3]);
        assert_eq!(indices(&s), [None, None, None]);
    }

    #[test]
    fn expiry_by_time_and_count() {
        let t = Instant::now();
        let mut k = kp(1, true, t);
        assert!(!k.is_expired(t + REJECT_AFTER_TIME - Duration::from_millis(1)));
        assert!(k.is_expired(t + REJECT_AFTER_TIME));
        // A clock that reads earlier than creation is not an expiry.
        assert!(!k.is_expired(t.checked_sub(Duration::from_secs(1)).unwrap_or(t)));
        assert_eq!(k.take_send_counter(t), Some(0));
        assert_eq!(k.take_send_counter(t), Some(1));
        k.send_counter = REJECT_AFTER_MESSAGES - 1;
        assert_eq!(k.take_send_counter(t), Some(REJECT_AFTER_MESSAGES - 1));
        assert!(k.is_expired(t));
        assert_eq!(k.take_send_counter(t), None);
    }

    #[test]
    fn drop_expired_zeroizes_old_keypairs() {
        let t = Instant::now();
        let mut s = KeypairSlots::new();
        s.install(kp(1, true, t));
        s.install(kp(2, true, t + Duration::from_secs(100)));
        assert!(s.drop_expired(t + Duration::from_secs(179)).is_empty());
        assert_eq!(s.drop_expired(t + REJECT_AFTER_TIME), vec![1]);
        assert_eq!(indices(&s), [None, Some(2), None]);
    }

    #[test]
    fn rekey_by_count_for_both_roles() {
        let t = Instant::now();
        let mut s = KeypairSlots::new();
        assert!(!s.needs_rekey_by_count());
        s.install(kp(1, true, t));
        assert!(!s.needs_rekey_by_count());
        if let Some(k) = s.get_mut(Slot::Current) {
            k.send_counter = REKEY_AFTER_MESSAGES - 1;
        }
        assert!(!s.needs_rekey_by_count());
        if let Some(k) = s.get_mut(Slot::Current) {
            k.send_counter = REKEY_AFTER_MESSAGES;
        }
        assert!(s.needs_rekey_by_count());

        // The responder rekeys on the message count too (never on time:
        // that is the handshake role's rule, tested in its timers).
        let mut r = KeypairSlots::new();
        r.install(kp(2, false, t));
        r.confirm_next();
        assert!(!r.needs_rekey_by_count());
        if let Some(k) = r.get_mut(Slot::Current) {
            k.send_counter = REKEY_AFTER_MESSAGES;
        }
        assert!(r.needs_rekey_by_count());
    }

    #[test]
    fn empty_slots_are_three_pointers() {
        // What every configured peer pays for its slots while it has no
        // session (see the type's documentation).
        assert_eq!(
            std::mem::size_of::<KeypairSlots>(),
            3 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn debug_redacts_keys() {
        let k = kp(1, true, Instant::now());
        let s = format!("{k:?}");
        assert!(s.contains("DataKey(<redacted>)"), "{s}");
    }
}
