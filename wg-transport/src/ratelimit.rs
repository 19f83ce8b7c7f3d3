//! A per-source limit on handshake messages, applied by the transport
//! before a packet crosses the process boundary to the handshake role.
//!
//! Called by [`crate::device`] for every datagram of type 1, 2 or 3 (an
//! initiation, a response, a cookie reply), before it is copied into a
//! message for the handshake role. Without it, every handshake-shaped
//! packet from a flooder costs a copy, an encode and a channel send here,
//! and a decode, a MAC check and (with a valid MAC1) a round trip to the
//! crypto role there: one address sending initiations with a valid MAC1
//! (which needs only our public key) could fill the channel, keep the
//! handshake role under load and starve the data path and every genuine
//! handshake.
//!
//! The limit is a token bucket per source, like the Linux kernel's
//! `drivers/net/wireguard/ratelimiter.c`: [`PACKETS_PER_SECOND`] per source
//! with bursts of [`PACKETS_BURST`], an IPv4 address or an IPv6 /64 being
//! one source (one IPv6 host may hold a whole /64), tokens counted in
//! nanoseconds so no rounding accumulates. A genuine peer sends a handshake
//! message every few seconds at most (an initiation per retry, 5 s apart;
//! a response per initiation), so even a few hundred peers behind one NAT
//! address stay well inside the limit.
//!
//! How this differs from Linux: Linux applies its limiter only under load,
//! and only to messages whose MAC2 (a cookie, so a proven source address)
//! is valid; the handshake role does the same (`wg-handshake/src/load.rs`). This one applies always, to every handshake
//! message, before MAC1 is checked, because here the expensive part is
//! crossing into another process, and that happens before any MAC can be
//! checked. The cost: a flood from a spoofed address also throttles the
//! genuine host at that address (its established sessions are untouched:
//! data messages are not limited), which the Linux limiter also does
//! under load.
//!
//! Memory is bounded: at most [`MAX_SOURCES`] sources are tracked (a full
//! table refuses new sources: under a flood of spoofed random addresses,
//! new sources wait until the next collection frees room), and sources
//! idle for over [`IDLE_FORGET`] are collected about once a second. The
//! table's storage is reserved up front to a first size and grows at most
//! to the bound, never shrinks: the steady state allocates nothing per
//! packet.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Handshake messages per second one source may send, sustained.
pub const PACKETS_PER_SECOND: u64 = 20;
/// Messages one source may send at once after being quiet.
pub const PACKETS_BURST: u64 = 5;
/// Most sources tracked at once (Linux's bound on a machine with over
/// 1 GiB of memory: 8 × 8192).
pub const MAX_SOURCES: usize = 1 << 16;
/// A source idle for longer is forgotten (its bucket would be full again
/// by then anyway).
pub const IDLE_FORGET: Duration = Duration::from_secs(1);

const NANOS_PER_SECOND: u64 = 1_000_000_000;
/// Tokens, in nanoseconds of refill, one message costs.
const PACKET_COST: u64 = NANOS_PER_SECOND / PACKETS_PER_SECOND;
/// A full bucket.
const TOKEN_MAX: u64 = PACKET_COST * PACKETS_BURST;
/// Sources the table has room for before its first growth.
const INITIAL_SOURCES: usize = 1024;

/// One source: an IPv4 address, or the first 64 bits of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Self {
        // A dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d: those are
        // IPv4 addresses, each a source of its own, not one /64.
        match ip.to_canonical() {
            IpAddr::V4(a) => Source::V4(u32::from(a)),
            IpAddr::V6(a) => Source::V6((u128::from(a) >> 64) as u64),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// When the bucket was last refilled, in nanoseconds since
    /// [`RateLimiter::epoch`].
    last: u64,
    /// Tokens, in nanoseconds of refill.
    tokens: u64,
}

/// The per-source token buckets of one transport.
#[derive(Debug)]
pub struct RateLimiter {
    table: HashMap<Source, Bucket>,
    /// The origin of the nanosecond clock the buckets use.
    epoch: Instant,
    /// When idle sources were last collected.
    last_gc: u64,
    max_sources: usize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl RateLimiter {
    /// An empty limiter whose clock starts at `epoch`.
    pub fn new(epoch: Instant) -> Self {
        Self::with_capacity(epoch, MAX_SOURCES)
    }

    /// An empty limiter tracking at most `max_sources` (tests use a small
    /// bound).
    pub fn with_capacity(epoch: Instant, max_sources: usize) -> Self {
        RateLimiter {
            table: HashMap::with_capacity(INITIAL_SOURCES.min(max_sources)),
            epoch,
            last_gc: 0,
            max_sources,
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Whether one handshake message from `ip`, arriving at `now`, may go
    /// on to the handshake role. A refused message is to be dropped.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        let now = self.nanos(now);
        if now.saturating_sub(self.last_gc) >= NANOS_PER_SECOND {
            self.collect(now);
        }
        let source = Source::of(ip);
        if let Some(b) = self.table.get_mut(&source) {
            // Refill for the time since the last message, capped at a full
            // bucket: the burst is part of the bucket's size, not the rate.
            let tokens = b.tokens.saturating_add(now.saturating_sub(b.last));
            let tokens = tokens.min(TOKEN_MAX);
            b.last = now;
            let ok = tokens >= PACKET_COST;
            b.tokens = if ok { tokens - PACKET_COST } else { tokens };
            return ok;
        }
        if self.table.len() >= self.max_sources {
            return false;
        }
        // A new source starts with a full bucket, less this message.
        self.table.insert(
            source,
            Bucket {
                last: now,
                tokens: TOKEN_MAX - PACKET_COST,
            },
        );
        true
    }

    /// Forgets the sources idle for over [`IDLE_FORGET`]. O(sources), once
    /// a second at most; keeps the table's storage for the next ones.
    fn collect(&mut self, now: u64) {
        self.last_gc = now;
        let idle = IDLE_FORGET.as_nanos() as u64;
        self.table.retain(|_, b| now.saturating_sub(b.last) <= idle);
    }

    fn nanos(&self, t: Instant) -> u64 {
        // u64 nanoseconds last 584 years.
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::alloc_count::Usage;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("literal")
    }

    #[test]
    fn burst_then_twenty_per_second() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        let a = ip("192.0.2.1");
        let allowed = (0..100).filter(|_| r.allow(t0, a)).count();
        assert_eq!(allowed, PACKETS_BURST as usize);
        // One message's worth after 1/20 s, not before.
        assert!(!r.allow(t0 + Duration::from_millis(49), a));
        assert!(r.allow(t0 + Duration::from_millis(51), a));
        assert!(!r.allow(t0 + Duration::from_millis(52), a));
        // A flood for ten seconds, every millisecond: 20/s get through.
        let start = t0 + Duration::from_millis(100);
        let passed = (0..10_000)
            .filter(|&i| r.allow(start + Duration::from_millis(i), a))
            .count();
        assert!((199..=201).contains(&passed), "{passed} passed in 10 s");
    }

    #[test]
    fn a_quiet_source_gets_its_burst_back_but_no_more() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        let a = ip("192.0.2.1");
        while r.allow(t0, a) {}
        // An hour later: still a burst of five, not 72,000.
        let later = t0 + Duration::from_secs(3600);
        let allowed = (0..100).filter(|_| r.allow(later, a)).count();
        assert_eq!(allowed, PACKETS_BURST as usize);
    }

    #[test]
    fn sources_do_not_share_buckets() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        let flooder = ip("192.0.2.1");
        for _ in 0..1000 {
            r.allow(t0, flooder);
        }
        assert!(r.allow(t0, ip("192.0.2.2")));
        assert!(r.allow(t0, ip("2001:db8:1::1")));
        // Another port of the same address is the same source (the key is
        // the address: ports cost an attacker nothing).
        assert!(!r.allow(t0, flooder));
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_mapped_ipv4_is_ipv4() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        for i in 0..PACKETS_BURST {
            let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 7, 0, 0, 0, i as u16));
            assert!(r.allow(t0, a));
        }
        assert!(!r.allow(t0, ip("2001:db8:0:7:ffff::1")), "same /64");
        assert!(r.allow(t0, ip("2001:db8:0:8::1")), "next /64");
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        while r.allow(t0, v4) {}
        assert!(!r.allow(t0, ip("::ffff:198.51.100.1")));
        assert!(r.allow(t0, ip("::ffff:198.51.100.2")));
    }

    #[test]
    fn full_table_refuses_new_sources_until_idle_ones_are_collected() {
        let t0 = Instant::now();
        let mut r = RateLimiter::with_capacity(t0, 4);
        for i in 1..=4u8 {
            assert!(r.allow(t0, IpAddr::V4(Ipv4Addr::new(10, 0, 0, i))));
        }
        assert!(!r.allow(t0, ip("10.0.0.5")), "table full");
        // Known sources keep their buckets meanwhile.
        assert!(r.allow(t0, ip("10.0.0.1")));
        // Past a second idle, the next message collects them.
        let later = t0 + Duration::from_millis(1001);
        assert!(r.allow(later, ip("10.0.0.5")));
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn idle_sources_are_collected_about_once_a_second() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        for i in 0..1000u32 {
            r.allow(t0, IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(r.len(), 1000);
        let busy = ip("192.0.2.1");
        // A source active every 100 ms stays; the idle ones go once they
        // have been idle over a second and a collection is due.
        for k in 1..=25u64 {
            r.allow(t0 + Duration::from_millis(100 * k), busy);
        }
        assert_eq!(r.len(), 1, "only the busy source is left");
    }

    #[test]
    fn the_table_stays_bounded_under_a_spoofed_flood() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        let mut allowed = 0u64;
        // 200,000 distinct sources within 0.2 s: only MAX_SOURCES tracked.
        for i in 0..200_000u32 {
            let at = t0 + Duration::from_micros(u64::from(i));
            if r.allow(at, IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))) {
                allowed += 1;
            }
        }
        assert_eq!(r.len(), MAX_SOURCES);
        assert_eq!(allowed, MAX_SOURCES as u64);
    }

    #[test]
    fn steady_state_does_not_allocate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(t0);
        let sources: Vec<IpAddr> = (0..500u32)
            .map(|i| IpAddr::V4(Ipv4Addr::from(0xc000_0200 + i)))
            .collect();
        // Warm up: the table reaches its size and sees a collection.
        for k in 0..30u64 {
            for s in &sources {
                r.allow(t0 + Duration::from_millis(100 * k), *s);
            }
        }
        let before = Usage::now();
        for k in 30..60u64 {
            for s in &sources {
                r.allow(t0 + Duration::from_millis(100 * k), *s);
            }
            // Sources coming and going, within the reserved room.
            r.allow(
                t0 + Duration::from_millis(100 * k),
                IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + k as u32)),
            );
        }
        assert_eq!(Usage::now().allocated, before.allocated, "no allocation");
    }
}
