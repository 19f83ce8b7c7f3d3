//! The per-peer timers of the whitepaper (§6), as deadlines.
//!
//! Nothing here sleeps or reads a clock: every function takes `now`, and
//! [`Timers::next_deadline`] tells the caller when to come back. The
//! handlers named after the whitepaper's events (`data_sent`,
//! `any_authenticated_packet_received`, …) only move deadlines; what to
//! *do* when a deadline passes is decided by the core, which asks
//! [`Timers::expired`] which ones did.

use std::time::{Duration, Instant};

use rand::Rng;

/// The whitepaper's constants, adjustable as a set so tests can shorten
/// time (the "test-only knob"). [`TimerConfig::default`] is the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerConfig {
    pub rekey_after_time: Duration,
    pub reject_after_time: Duration,
    pub rekey_attempt_time: Duration,
    pub rekey_timeout: Duration,
    /// Upper bound of the random extra added to retransmissions.
    pub rekey_timeout_jitter: Duration,
    pub keepalive_timeout: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        use proto::wire::constants::*;
        TimerConfig {
            rekey_after_time: REKEY_AFTER_TIME,
            reject_after_time: REJECT_AFTER_TIME,
            rekey_attempt_time: REKEY_ATTEMPT_TIME,
            rekey_timeout: REKEY_TIMEOUT,
            rekey_timeout_jitter: REKEY_TIMEOUT_JITTER,
            keepalive_timeout: KEEPALIVE_TIMEOUT,
        }
    }
}

impl TimerConfig {
    /// Retransmissions before giving up: REKEY_ATTEMPT_TIME / REKEY_TIMEOUT.
    pub fn max_handshake_attempts(&self) -> u32 {
        let t = self.rekey_timeout.as_millis().max(1);
        (self.rekey_attempt_time.as_millis() / t) as u32
    }

    /// Key material is erased after 3 × REJECT_AFTER_TIME without a new
    /// session.
    pub fn zero_keys_after(&self) -> Duration {
        self.reject_after_time * 3
    }

    /// An initiator's session is renewed on receive when it is this old, so
    /// that a new one exists before the old is rejected.
    pub fn rekey_on_receive_age(&self) -> Duration {
        self.reject_after_time
            .saturating_sub(self.keepalive_timeout)
            .saturating_sub(self.rekey_timeout)
    }

    fn jitter<R: Rng>(&self, rng: &mut R) -> Duration {
        let max = self.rekey_timeout_jitter.as_millis() as u64;
        Duration::from_millis(rng.gen_range(0..=max))
    }
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerKind {
    /// No response to our initiation: send another, or give up.
    RetransmitHandshake,
    /// We received data and sent nothing back: send a keepalive.
    SendKeepalive,
    /// We sent data and heard nothing back: start a new handshake.
    NewHandshake,
    /// No new session for 3 × REJECT_AFTER_TIME: erase key material.
    ZeroKeyMaterial,
    /// The configured persistent-keepalive interval passed.
    PersistentKeepalive,
}

/// One peer's deadlines.
#[derive(Debug, Default, Clone)]
pub struct Timers {
    retransmit_handshake: Option<Instant>,
    send_keepalive: Option<Instant>,
    new_handshake: Option<Instant>,
    zero_key_material: Option<Instant>,
    persistent_keepalive: Option<Instant>,
    /// Data arrived while a keepalive was already due: send one more after
    /// it, so that the peer hears from us for every stretch of data.
    need_another_keepalive: bool,
}

impl Timers {
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Removes and returns every deadline at or before `now`, in the order
    /// the core should handle them.
    pub fn expired(&mut self, now: Instant) -> Vec<TimerKind> {
        let mut out = Vec::new();
        let mut take = |slot: &mut Option<Instant>, kind| {
            if slot.is_some_and(|d| d <= now) {
                *slot = None;
                out.push(kind);
            }
        };
        take(&mut self.zero_key_material, TimerKind::ZeroKeyMaterial);
        take(
            &mut self.retransmit_handshake,
            TimerKind::RetransmitHandshake,
        );
        take(&mut self.new_handshake, TimerKind::NewHandshake);
        take(&mut self.send_keepalive, TimerKind::SendKeepalive);
        take(
            &mut self.persistent_keepalive,
            TimerKind::PersistentKeepalive,
        );
        out
    }

    pub fn is_pending(&self, kind: TimerKind) -> bool {
        match kind {
            TimerKind::RetransmitHandshake => self.retransmit_handshake.is_some(),
            TimerKind::SendKeepalive => self.send_keepalive.is_some(),
            TimerKind::NewHandshake => self.new_handshake.is_some(),
            TimerKind::ZeroKeyMaterial => self.zero_key_material.is_some(),
            TimerKind::PersistentKeepalive => self.persistent_keepalive.is_some(),
        }
    }

    /// Stops everything (peer removed, or keys erased).
    pub fn stop_all(&mut self) {
        *self = Timers::default();
    }

    // ---------------------------------------------------------------- events

    /// A data packet (not a keepalive) was sent: if nothing comes back
    /// within KEEPALIVE + REKEY_TIMEOUT, the session may be dead.
    pub fn data_sent<R: Rng>(&mut self, now: Instant, cfg: &TimerConfig, rng: &mut R) {
        if self.new_handshake.is_none() {
            self.new_handshake =
                Some(now + cfg.keepalive_timeout + cfg.rekey_timeout + cfg.jitter(rng));
        }
    }

    /// A data packet was received: owe the peer a keepalive unless we send
    /// something first.
    pub fn data_received(&mut self, now: Instant, cfg: &TimerConfig) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + cfg.keepalive_timeout);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// Any authenticated packet was sent (data, keepalive, handshake): it
    /// answers for the keepalive we owed.
    pub fn any_authenticated_packet_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// Any authenticated packet was received: the session is alive.
    pub fn any_authenticated_packet_received(&mut self) {
        self.new_handshake = None;
    }

    /// Any authenticated packet went either way: push the persistent
    /// keepalive back a full interval.
    pub fn any_authenticated_packet_traversal(&mut self, now: Instant, persistent: Option<u16>) {
        self.persistent_keepalive = persistent
            .filter(|&s| s > 0)
            .map(|s| now + Duration::from_secs(u64::from(s)));
    }

    /// We sent an initiation: retransmit if no response comes.
    pub fn handshake_initiated<R: Rng>(&mut self, now: Instant, cfg: &TimerConfig, rng: &mut R) {
        self.retransmit_handshake = Some(now + cfg.rekey_timeout + cfg.jitter(rng));
    }

    /// A handshake completed: no more retransmissions.
    pub fn handshake_complete(&mut self) {
        self.retransmit_handshake = None;
    }

    /// New keys exist: they, and older ones, are erased if no newer session
    /// replaces them in time.
    pub fn session_derived(&mut self, now: Instant, cfg: &TimerConfig) {
        self.zero_key_material = Some(now + cfg.zero_keys_after());
    }

    /// Handshake attempts gave up: make sure key material is erased in time
    /// even if no session was ever derived.
    pub fn handshake_gave_up(&mut self, now: Instant, cfg: &TimerConfig) {
        self.retransmit_handshake = None;
        if self.zero_key_material.is_none() {
            self.zero_key_material = Some(now + cfg.zero_keys_after());
        }
    }

    /// The keepalive timer fired and one was sent.
    pub fn keepalive_sent(&mut self, now: Instant, cfg: &TimerConfig) {
        if std::mem::take(&mut self.need_another_keepalive) {
            self.send_keepalive = Some(now + cfg.keepalive_timeout);
        }
    }
}
