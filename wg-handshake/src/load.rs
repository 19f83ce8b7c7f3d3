//! Deciding when we are "under load", and limiting handshakes per source
//! while we are.
//!
//! WireGuard answers handshake messages with cookie replies instead of
//! Diffie-Hellman work only under load (whitepaper §5.3). wireguard-go
//! calls itself under load when its handshake queue is an eighth full and
//! stays so for a second; our handshake role reads one packet at a time
//! from its channel, so the equivalent signal is the rate of handshake
//! messages: more than `threshold` in the last second means under load,
//! and the state lingers for [`UNDER_LOAD_LINGER`] so that an attacker
//! cannot flap it.
//!
//! Under load, a message with a valid MAC2 has proven its source address;
//! [`RateLimiter`] then caps each source (an IPv4 address, or an IPv6 /64)
//! so that one proven address cannot take all the handshake capacity.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const UNDER_LOAD_LINGER: Duration = Duration::from_secs(1);
/// Handshake messages per second above which we are under load.
pub const DEFAULT_LOAD_THRESHOLD: u32 = 128;

/// Counts handshake messages per second.
#[derive(Debug)]
pub struct LoadMeter {
    threshold: u32,
    window_start: Option<Instant>,
    count: u32,
    loaded_until: Option<Instant>,
}

impl LoadMeter {
    /// `threshold == 0` means always under load (a test and hardening knob).
    pub fn new(threshold: u32) -> Self {
        LoadMeter {
            threshold,
            window_start: None,
            count: 0,
            loaded_until: None,
        }
    }

    /// Records one handshake message and tells whether we are under load.
    pub fn record(&mut self, now: Instant) -> bool {
        if self.threshold == 0 {
            return true;
        }
        match self.window_start {
            Some(s) if now.saturating_duration_since(s) < Duration::from_secs(1) => {}
            _ => {
                self.window_start = Some(now);
                self.count = 0;
            }
        }
        self.count = self.count.saturating_add(1);
        if self.count > self.threshold {
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
    fn load_follows_rate_and_lingers() {
        let t0 = Instant::now();
        let mut m = LoadMeter::new(10);
        for i in 0..10 {
            assert!(!m.record(t0 + Duration::from_millis(i)));
        }
        assert!(m.record(t0 + Duration::from_millis(20)));
        assert!(m.record(t0 + Duration::from_millis(900)));
        assert!(!m.record(t0 + Duration::from_millis(2500)));
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
