//! Deciding when we are "under load", and limiting handshakes per source
//! while we are.
//!
//! WireGuard answers handshake messages with cookie replies instead of
//! Diffie-Hellman work only under load (whitepaper §5.3). Like Linux and
//! wireguard-go, we are under load when handshake messages queue up faster
//! than we answer them: the handshake role drains its channel from the
//! transport into a queue of its own, and a backlog of `threshold`
//! messages or more (an eighth of the queue, as Linux's 4096 / 8) means
//! under load; the state lingers for [`UNDER_LOAD_LINGER`] so that an
//! attacker cannot flap it. A rate of messages would be the wrong signal:
//! it puts a reboot storm that the role could answer at once under load
//! (every peer then waits a retry for its cookie), and keeps one address
//! with many peers behind it (a NAT) rate-limited long after the backlog
//! is gone.
//!
//! Under load, a message with a valid MAC2 has proven its source address;
//! [`RateLimiter`] then caps each source (an IPv4 address, or an IPv6 /64)
//! so that one proven address cannot take all the handshake capacity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const UNDER_LOAD_LINGER: Duration = Duration::from_secs(1);
/// Messages the handshake role queues from its channel at most.
pub const QUEUE_CAPACITY: usize = 4096;
/// Handshake messages waiting at or above which we are under load.
pub const DEFAULT_LOAD_THRESHOLD: u32 = (QUEUE_CAPACITY / 8) as u32;

/// Tells from the backlog whether we are under load.
#[derive(Debug)]
pub struct LoadMeter {
    threshold: u32,
    backlog: usize,
    loaded_until: Option<Instant>,
}

impl LoadMeter {
    /// `threshold == 0` means always under load (a test and hardening knob).
    pub fn new(threshold: u32) -> Self {
        LoadMeter {
            threshold,
            backlog: 0,
            loaded_until: None,
        }
    }

    /// How many messages wait behind the one about to be handled.
    pub fn set_backlog(&mut self, waiting: usize) {
        self.backlog = waiting;
    }

    /// Called for each handshake message: whether we are under load.
    pub fn record(&mut self, now: Instant) -> bool {
        if self.threshold == 0 {
            return true;
        }
        if self.backlog >= self.threshold as usize {
            self.loaded_until = Some(now + UNDER_LOAD_LINGER);
        }
        self.loaded_until.is_some_and(|u| now < u)
    }
}

/// Per-source token buckets: [`PACKETS_PER_SECOND`] sustained, bursts of
/// [`PACKETS_BURST`].
pub const PACKETS_PER_SECOND: u32 = 20;
pub const PACKETS_BURST: u32 = 5;
/// Forget sources idle for this long (bounds the table).
const IDLE_FORGET: Duration = Duration::from_secs(1);
const MAX_SOURCES: usize = 1 << 16;

#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<[u8; 8], (Instant, f64)>,
    last_sweep: Option<Instant>,
}

fn source_key(ip: IpAddr) -> [u8; 8] {
    let mut k = [0u8; 8];
    match ip {
        IpAddr::V4(a) => {
            k[0] = 4;
            k[4..].copy_from_slice(&a.octets());
        }
        // A /64 is what one IPv6 host can be expected to hold.
        IpAddr::V6(a) => k.copy_from_slice(&a.octets()[..8]),
    }
    k
}

impl RateLimiter {
    /// Whether a handshake message from `ip` may be processed now.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        self.sweep(now);
        if self.buckets.len() >= MAX_SOURCES {
            return false;
        }
        let burst = f64::from(PACKETS_BURST);
        let (last, tokens) = self.buckets.entry(source_key(ip)).or_insert((now, burst));
        let refill =
            now.saturating_duration_since(*last).as_secs_f64() * f64::from(PACKETS_PER_SECOND);
        *tokens = (*tokens + refill).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn sweep(&mut self, now: Instant) {
        if self
            .last_sweep
            .is_some_and(|s| now.saturating_duration_since(s) < IDLE_FORGET)
        {
            return;
        }
        self.last_sweep = Some(now);
        self.buckets
            .retain(|_, (last, _)| now.saturating_duration_since(*last) < IDLE_FORGET);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_follows_the_backlog_and_lingers() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut m = LoadMeter::new(10);
        // Any number of messages, each answered before the next: no load.
        for i in 0..1000 {
            m.set_backlog(0);
            assert!(!m.record(ms(i)));
        }
        m.set_backlog(9);
        assert!(!m.record(ms(1000)));
        m.set_backlog(10);
        assert!(m.record(ms(1001)));
        // The backlog is gone, the state lingers a second.
        m.set_backlog(0);
        assert!(m.record(ms(1900)));
        assert!(!m.record(ms(2002)));
        assert!(LoadMeter::new(0).record(t0));
    }

    #[test]
    fn rate_limiter_allows_burst_then_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::default();
        let ip: IpAddr = "192.0.2.1".parse().expect("literal");
        let other: IpAddr = "192.0.2.2".parse().expect("literal");
        let allowed = (0..20).filter(|_| r.allow(t0, ip)).count();
        assert_eq!(allowed, PACKETS_BURST as usize);
        assert!(r.allow(t0, other));
        // One packet's worth of tokens after 1/20 s.
        assert!(r.allow(t0 + Duration::from_millis(51), ip));
        assert!(!r.allow(t0 + Duration::from_millis(52), ip));
        // A whole IPv6 /64 shares one bucket.
        let a: IpAddr = "2001:db8::1".parse().expect("literal");
        let b: IpAddr = "2001:db8::2".parse().expect("literal");
        for _ in 0..PACKETS_BURST {
            assert!(r.allow(t0, a));
        }
        assert!(!r.allow(t0, b));
    }
}
