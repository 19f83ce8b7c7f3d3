//! What the transport accepts from the handshake role.
//!
//! The transport sends from the WireGuard port, under the interface's
//! fwmark (which wg-quick's policy routing exempts from the tunnel), to
//! wherever a `Send` order says: an unchecked order would let a
//! compromised handshake role put any bytes to any address past that
//! routing. So every order is checked against what the genuine role
//! sends, and nothing else goes out:
//!
//! - a `Send` carries exactly one handshake message, classified by
//!   [`proto::wire::classify`]: type 1, 2 or 3 (the three reserved bytes
//!   zero) at its exact length (148, 92, 64);
//! - an initiation or a response goes to a configured peer
//!   ([`Destination::Peer`]), whose endpoint the transport owns;
//! - a cookie reply goes to an address ([`Destination::Addr`]) only if a
//!   handshake packet came from exactly that endpoint (address, and local
//!   address it arrived at) recently, and only one reply per such packet:
//!   [`RecentSources`] remembers the sources of the last
//!   [`RECENT_SOURCES`] handshake packets passed on to the handshake role;
//! - a `HandshakeReceived` (which moves a peer's endpoint) names a source
//!   among them and a handshake message's length;
//! - an `InstallKeypair` takes a local index no keypair of any peer holds
//!   (a remote index is the peer's choice, any of 2^32 values, 0 included,
//!   as Linux and wireguard-go draw them).
//!
//! A refused order is dropped and counted (`DropCounters::bad_order`,
//! `drop_bad_order` in `wgd_get`), and logged. The transport keeps serving:
//! the handshake role is the only source of session keys, so ending the
//! data plane would protect nothing a hostile handshake role could not
//! already spoil, while it would hand that role a way to take the
//! interface down at will; what the transport can do is to refuse what it
//! should never be asked, and say so.

use std::collections::{HashMap, VecDeque};

use proto::ipc::{Destination, Endpoint};
use proto::wire::{self, MessageType};

/// How many handshake-packet sources the transport remembers for cookie
/// replies: more than the handshake role can have waiting, so a reply to
/// a packet it took is never refused for age. It waits on up to 4,096 in
/// its own queue (`wg-handshake/src/load.rs`, QUEUE_CAPACITY) and the
/// channel's 4 MiB send buffer (`wgd/src/roles.rs`) holds some 6,000
/// more (a 150-byte packet takes about 1.3 KiB of it): with 4,096 here, a
/// flood from many sources (`tests/tests/flood.rs`) had the genuine
/// role's late cookie replies refused as orders to strangers. About 130
/// bytes each at most, allocated only as packets come.
pub const RECENT_SOURCES: usize = 16_384;

/// Why an order was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadOrder {
    /// Not one handshake message of its exact length (a data message, an
    /// unknown type, a wrong length).
    NotAHandshakeMessage,
    /// An initiation or response to an address instead of a peer.
    NotToAPeer,
    /// A cookie reply to a peer, or to an address no handshake packet
    /// recently came from (or that has had its reply).
    CookieToAStranger,
    /// A handshake received from a source no handshake packet came from,
    /// or of a length no handshake message has.
    ReceivedFromAStranger,
    /// A keypair on a local index some keypair already holds.
    IndexInUse,
}

/// Checks a `Send` order's bytes and destination. A cookie reply to an
/// address uses up one of that address's recent packets.
pub fn check_send(
    to: &Destination,
    bytes: &[u8],
    recent: &mut RecentSources,
) -> Result<(), BadOrder> {
    let kind = wire::classify(bytes).map_err(|_| BadOrder::NotAHandshakeMessage)?;
    match (kind, to) {
        (MessageType::Data, _) => Err(BadOrder::NotAHandshakeMessage),
        (MessageType::Initiation | MessageType::Response, Destination::Peer(_)) => Ok(()),
        (MessageType::Initiation | MessageType::Response, Destination::Addr(_)) => {
            Err(BadOrder::NotToAPeer)
        }
        (MessageType::CookieReply, Destination::Addr(e)) => {
            if recent.take(e) {
                Ok(())
            } else {
                Err(BadOrder::CookieToAStranger)
            }
        }
        (MessageType::CookieReply, Destination::Peer(_)) => Err(BadOrder::CookieToAStranger),
    }
}

/// Checks a `HandshakeReceived` order: the message length of an
/// initiation or a response, from a source a handshake packet came from.
pub fn check_received(from: &Endpoint, len: u32, recent: &RecentSources) -> Result<(), BadOrder> {
    let len = len as usize;
    if (len == wire::INITIATION_LEN || len == wire::RESPONSE_LEN) && recent.contains(from) {
        Ok(())
    } else {
        Err(BadOrder::ReceivedFromAStranger)
    }
}

/// How many of one endpoint's entries in the ring are still unanswered
/// (`live`) and answered (`used`). An endpoint's entries are answered
/// oldest first, so its first `used` entries in the ring are the answered
/// ones: the ring, dropping its oldest entry, knows which count it
/// leaves.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    live: u32,
    used: u32,
}

/// The sources of the last [`RECENT_SOURCES`] handshake packets, in
/// arrival order, with a count per endpoint for O(1) checks. Memory is
/// allocated as packets come, and bounded by the capacity.
#[derive(Debug)]
pub struct RecentSources {
    ring: VecDeque<Endpoint>,
    counts: HashMap<Endpoint, Counts>,
    capacity: usize,
}

impl Default for RecentSources {
    fn default() -> Self {
        Self::with_capacity(RECENT_SOURCES)
    }
}

impl RecentSources {
    pub fn with_capacity(capacity: usize) -> Self {
        RecentSources {
            ring: VecDeque::new(),
            counts: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// A handshake packet from `from` went to the handshake role.
    pub fn record(&mut self, from: Endpoint) {
        if self.ring.len() >= self.capacity {
            if let Some(old) = self.ring.pop_front() {
                if let Some(c) = self.counts.get_mut(&old) {
                    if c.used > 0 {
                        c.used -= 1;
                    } else {
                        c.live = c.live.saturating_sub(1);
                    }
                    if c.live == 0 && c.used == 0 {
                        self.counts.remove(&old);
                    }
                }
            }
        }
        self.ring.push_back(from);
        self.counts.entry(from).or_default().live += 1;
    }

    /// Whether a recent handshake packet came from `from` (answered or
    /// not).
    pub fn contains(&self, from: &Endpoint) -> bool {
        self.counts.contains_key(from)
    }

    /// Uses up the oldest unanswered packet from `to`, if there is one.
    pub fn take(&mut self, to: &Endpoint) -> bool {
        match self.counts.get_mut(to) {
            Some(c) if c.live > 0 => {
                c.live -= 1;
                c.used += 1;
                true
            }
            _ => false,
        }
    }

    /// Packets remembered.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::ipc::SourceAddr;
    use proto::keys::PublicKey;

    fn ep(port: u16) -> Endpoint {
        Endpoint::new(std::net::SocketAddr::from(([192, 0, 2, 1], port)))
    }

    fn msg(kind: u8, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        if let Some(t) = b.first_mut() {
            *t = kind;
        }
        b
    }

    #[test]
    fn only_handshake_messages_at_their_lengths() {
        let mut r = RecentSources::default();
        let peer = Destination::Peer(PublicKey([1; 32]));
        assert_eq!(check_send(&peer, &msg(1, 148), &mut r), Ok(()));
        assert_eq!(check_send(&peer, &msg(2, 92), &mut r), Ok(()));
        for (kind, len) in [
            (1, 147),
            (1, 149),
            (2, 91),
            (2, 93),
            (2, 148),
            (1, 92),
            (3, 63),
            (4, 32),
            (4, 148),
            (5, 148),
            (0, 148),
            (1, 0),
            (1, 65_535),
        ] {
            assert_eq!(
                check_send(&peer, &msg(kind, len), &mut r),
                Err(BadOrder::NotAHandshakeMessage),
                "type {kind}, {len} bytes"
            );
        }
        // Non-zero reserved bytes make an unknown type.
        let mut b = msg(1, 148);
        b[2] = 1;
        assert_eq!(
            check_send(&peer, &b, &mut r),
            Err(BadOrder::NotAHandshakeMessage)
        );
        assert_eq!(
            check_send(&peer, &[], &mut r),
            Err(BadOrder::NotAHandshakeMessage)
        );
    }

    #[test]
    fn initiations_and_responses_go_to_peers_only() {
        let mut r = RecentSources::default();
        r.record(ep(1));
        let addr = Destination::Addr(ep(1));
        assert_eq!(
            check_send(&addr, &msg(1, 148), &mut r),
            Err(BadOrder::NotToAPeer)
        );
        assert_eq!(
            check_send(&addr, &msg(2, 92), &mut r),
            Err(BadOrder::NotToAPeer)
        );
        // The refusals used up nothing: the cookie reply is still allowed.
        assert_eq!(check_send(&addr, &msg(3, 64), &mut r), Ok(()));
    }

    #[test]
    fn one_cookie_reply_per_recent_packet_and_only_to_its_source() {
        let mut r = RecentSources::default();
        let cookie = msg(3, 64);
        assert_eq!(
            check_send(&Destination::Addr(ep(1)), &cookie, &mut r),
            Err(BadOrder::CookieToAStranger)
        );
        assert_eq!(
            check_send(&Destination::Peer(PublicKey([1; 32])), &cookie, &mut r),
            Err(BadOrder::CookieToAStranger)
        );
        r.record(ep(1));
        r.record(ep(1));
        r.record(ep(2));
        // Not the same endpoint: another port, or another local address.
        assert_eq!(
            check_send(&Destination::Addr(ep(3)), &cookie, &mut r),
            Err(BadOrder::CookieToAStranger)
        );
        let mut other_src = ep(1);
        other_src.src = Some(SourceAddr {
            ip: "192.0.2.99".parse().expect("literal"),
            ifindex: 2,
        });
        assert_eq!(
            check_send(&Destination::Addr(other_src), &cookie, &mut r),
            Err(BadOrder::CookieToAStranger)
        );
        for _ in 0..2 {
            assert_eq!(
                check_send(&Destination::Addr(ep(1)), &cookie, &mut r),
                Ok(())
            );
        }
        assert_eq!(
            check_send(&Destination::Addr(ep(1)), &cookie, &mut r),
            Err(BadOrder::CookieToAStranger),
            "two packets, two replies"
        );
        assert_eq!(
            check_send(&Destination::Addr(ep(2)), &cookie, &mut r),
            Ok(())
        );
        // Answered sources still count for HandshakeReceived.
        assert!(r.contains(&ep(1)));
    }

    #[test]
    fn sources_age_out_and_memory_is_bounded() {
        let mut r = RecentSources::with_capacity(4);
        r.record(ep(1));
        assert!(r.take(&ep(1)));
        r.record(ep(1)); // unanswered, second in the ring
        for p in 2..5 {
            r.record(ep(p));
        }
        // The answered entry of ep(1) aged out; its unanswered one stays.
        assert_eq!(r.len(), 4);
        assert!(
            r.take(&ep(1)),
            "the unanswered packet of ep(1) is still there"
        );
        assert!(!r.take(&ep(1)));
        r.record(ep(5));
        assert!(!r.contains(&ep(1)), "both of ep(1)'s packets aged out");
        assert_eq!(r.counts.len(), 4);
        for p in 0..10_000 {
            r.record(ep(p));
        }
        assert_eq!(r.len(), 4);
        assert_eq!(r.counts.len(), 4);
        assert!(r.contains(&ep(9_999)) && !r.contains(&ep(9_995)));
    }

    #[test]
    fn handshake_received_needs_a_source_and_a_length() {
        let mut r = RecentSources::default();
        assert_eq!(
            check_received(&ep(1), 148, &r),
            Err(BadOrder::ReceivedFromAStranger)
        );
        r.record(ep(1));
        assert_eq!(check_received(&ep(1), 148, &r), Ok(()));
        assert_eq!(check_received(&ep(1), 92, &r), Ok(()));
        for len in [0, 64, 147, 149, 1500, u32::MAX] {
            assert_eq!(
                check_received(&ep(1), len, &r),
                Err(BadOrder::ReceivedFromAStranger),
                "{len}"
            );
        }
    }
}
