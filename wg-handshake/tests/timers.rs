//! The whitepaper's timers, driven by a fake clock: every `Instant` here is
//! made by adding to one start time, and nothing sleeps.

mod common;

use std::time::{Duration, Instant};

use common::*;
use proto::ipc::{Activity, HandshakeToTransport};
use wg_handshake::{Config, PacketOutcome};

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn cfg() -> Config {
    Config {
        seed: Some(7),
        ..Config::default()
    }
}

#[test]
fn rekey_on_send_after_120s() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    let (a_actions, _) = handshake(t0, &mut a, &mut b);
    assert_eq!(installs(&a_actions), 1);
    // Data keeps flowing both ways, so no other timer interferes.
    for s in [30.0, 60.0, 90.0, 119.9] {
        a.activity(
            t0 + secs(s),
            &b.public,
            Activity::DATA_SENT | Activity::AUTH_SENT,
        );
        a.activity(
            t0 + secs(s),
            &b.public,
            Activity::DATA_RECEIVED | Activity::AUTH_RECEIVED,
        );
    }
    assert_eq!(initiations(&a.drain()), 0, "no rekey before 120 s");
    a.activity(
        t0 + secs(120.0),
        &b.public,
        Activity::DATA_SENT | Activity::AUTH_SENT,
    );
    assert_eq!(initiations(&a.drain()), 1, "rekey on send at 120 s");
}

#[test]
fn responder_does_not_rekey_on_age() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    b.activity(t0 + secs(1.0), &a.public, Activity::AUTH_RECEIVED);
    b.activity(
        t0 + secs(150.0),
        &a.public,
        Activity::DATA_SENT | Activity::AUTH_SENT,
    );
    assert_eq!(initiations(&b.drain()), 0);
}

#[test]
fn rekey_on_receive_at_165s_once() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    a.activity(t0 + secs(164.0), &b.public, Activity::DATA_RECEIVED);
    assert_eq!(initiations(&a.drain()), 0);
    a.activity(t0 + secs(165.0), &b.public, Activity::DATA_RECEIVED);
    assert_eq!(initiations(&a.drain()), 1);
    a.activity(t0 + secs(171.0), &b.public, Activity::DATA_RECEIVED);
    assert_eq!(
        initiations(&a.drain()),
        0,
        "the last-minute rekey is tried once"
    );
}

#[test]
fn retries_every_5s_plus_jitter_and_gives_up_after_90s() {
    let t0 = Instant::now();
    let (mut a, b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    assert_eq!(initiations(&a.drain()), 1);
    let mut sent_at = vec![t0];
    let mut gave_up_at = None;
    let mut now = t0;
    for _ in 0..100 {
        let Some(next) = a.core.next_deadline() else {
            break;
        };
        assert!(next >= now);
        now = next;
        a.on_timers(now);
        let actions = a.drain();
        if initiations(&actions) > 0 {
            assert!(gave_up_at.is_none(), "no initiation after giving up");
            sent_at.push(now);
        }
        if actions
            .iter()
            .any(|x| matches!(x, HandshakeToTransport::DropStaged { .. }))
        {
            gave_up_at = Some(now);
        }
        if now > t0 + secs(200.0) {
            break;
        }
    }
    for w in sent_at.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= secs(5.0) && gap <= secs(5.334),
            "retransmit gap {gap:?} outside 5 s + [0, 333 ms]"
        );
    }
    // 90 s / 5 s = 18 retransmissions after the first initiation.
    assert_eq!(sent_at.len(), 19, "{sent_at:?}");
    let gave_up = gave_up_at.expect("gave up");
    assert!(
        gave_up - t0 >= secs(90.0),
        "gave up too early: {:?}",
        gave_up - t0
    );
    assert!(
        gave_up - t0 <= secs(101.0),
        "gave up too late: {:?}",
        gave_up - t0
    );
    // Jitter really varies.
    let gaps: std::collections::HashSet<Duration> =
        sent_at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.len() > 3);
}

#[test]
fn keepalive_after_10s_of_receive_only() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    let t1 = t0 + secs(1.0);
    a.activity(
        t1,
        &b.public,
        Activity::DATA_RECEIVED | Activity::AUTH_RECEIVED,
    );
    a.on_timers(t1 + secs(9.99));
    assert_eq!(keepalives(&a.drain()), 0);
    a.on_timers(t1 + secs(10.0));
    assert_eq!(keepalives(&a.drain()), 1);
    // If we send something ourselves, no keepalive is owed.
    let t2 = t0 + secs(30.0);
    a.activity(
        t2,
        &b.public,
        Activity::DATA_RECEIVED | Activity::AUTH_RECEIVED,
    );
    a.activity(
        t2 + secs(3.0),
        &b.public,
        Activity::DATA_SENT | Activity::AUTH_SENT,
    );
    a.activity(t2 + secs(3.5), &b.public, Activity::AUTH_RECEIVED);
    a.on_timers(t2 + secs(10.0));
    assert_eq!(keepalives(&a.drain()), 0);
}

#[test]
fn new_handshake_when_sent_data_goes_unanswered() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    let t1 = t0 + secs(20.0);
    a.activity(t1, &b.public, Activity::DATA_SENT | Activity::AUTH_SENT);
    a.on_timers(t1 + secs(14.99));
    assert_eq!(initiations(&a.drain()), 0);
    a.on_timers(t1 + secs(15.334));
    assert_eq!(
        initiations(&a.drain()),
        1,
        "KEEPALIVE + REKEY_TIMEOUT without reply"
    );
}

#[test]
fn persistent_keepalive() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    let pk = b.public;
    let out = &mut a.out;
    a.core.set_peer(t0, pk, Some(25), out);
    assert_eq!(keepalives(&a.drain()), 1, "one at once when turned on");
    a.on_timers(t0 + secs(24.9));
    assert_eq!(keepalives(&a.drain()), 0);
    a.on_timers(t0 + secs(25.0));
    assert_eq!(keepalives(&a.drain()), 1);
    // Traffic pushes it back a full interval.
    a.activity(t0 + secs(40.0), &pk, Activity::AUTH_SENT);
    a.on_timers(t0 + secs(64.0));
    assert_eq!(keepalives(&a.drain()), 0);
    a.on_timers(t0 + secs(65.0));
    assert_eq!(keepalives(&a.drain()), 1);
    // Turned off: no more.
    let out = &mut a.out;
    a.core.set_peer(t0 + secs(66.0), pk, None, out);
    a.on_timers(t0 + secs(200.0));
    assert_eq!(keepalives(&a.drain()), 0);
}

#[test]
fn keys_zeroed_after_540s() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    a.on_timers(t0 + secs(539.9));
    assert_eq!(expiries(&a.drain()), 0);
    a.on_timers(t0 + secs(540.0));
    assert_eq!(expiries(&a.drain()), 1, "3 x REJECT_AFTER_TIME");
    // The responder too.
    b.on_timers(t0 + secs(540.0));
    assert_eq!(expiries(&b.drain()), 1);
}

#[test]
fn a_new_session_postpones_zeroing() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    handshake(t0 + secs(300.0), &mut a, &mut b);
    a.on_timers(t0 + secs(600.0));
    assert_eq!(expiries(&a.drain()), 0);
    a.on_timers(t0 + secs(840.0));
    assert_eq!(expiries(&a.drain()), 1);
}

#[test]
fn replayed_initiation_timestamp_is_rejected() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let init = sent_packets(&a.drain()).remove(0);
    let from = a.addr;
    assert_eq!(
        b.receive(t0, &init, from),
        PacketOutcome::Responded(a.public)
    );
    b.drain();
    let later = t0 + secs(1.0);
    assert_eq!(
        b.receive(later, &init, from),
        PacketOutcome::Dropped(wg_handshake::DropReason::ReplayedTimestamp)
    );
    assert!(b.drain().is_empty(), "no response, no keys for a replay");
    assert_eq!(b.core.counters().replayed_timestamp, 1);
    assert_eq!(b.store.pending_count(), 0, "crypto state abandoned");
    // A fresh initiation (newer timestamp) is still accepted.
    a.on_timers(t0 + secs(6.0));
    let fresh = sent_packets(&a.drain()).remove(0);
    assert_eq!(
        b.receive(t0 + secs(6.0), &fresh, from),
        PacketOutcome::Responded(a.public)
    );
}

#[test]
fn at_most_one_initiation_per_5s() {
    let t0 = Instant::now();
    let (mut a, b) = pair(t0, cfg());
    let mut total = 0;
    for ms in (0..4_990).step_by(10) {
        a.need_handshake(t0 + Duration::from_millis(ms), &b.public);
        total += initiations(&a.drain());
    }
    assert_eq!(total, 1);
    a.need_handshake(t0 + secs(5.0), &b.public);
    assert_eq!(initiations(&a.drain()), 1);
}

#[test]
fn initiation_flood_from_one_peer_is_dropped() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let first = sent_packets(&a.drain()).remove(0);
    a.need_handshake(t0 + secs(5.0), &b.public);
    let second = sent_packets(&a.drain()).remove(0);
    let from = a.addr;
    assert_eq!(
        b.receive(t0, &first, from),
        PacketOutcome::Responded(a.public)
    );
    assert_eq!(
        b.receive(t0 + Duration::from_millis(5), &second, from),
        PacketOutcome::Dropped(wg_handshake::DropReason::InitiationFlood)
    );
}

#[test]
fn cookie_under_load_between_two_cores() {
    let t0 = Instant::now();
    let mut loaded = cfg();
    loaded.load_threshold = 0;
    let mut a = Node::new(cfg(), "192.0.2.1:51820");
    let mut b = Node::new(loaded, "192.0.2.2:51820");
    let (pa, pb) = (a.public, b.public);
    a.add_peer(t0, pb, None);
    b.add_peer(t0, pa, None);
    a.need_handshake(t0, &pb);
    let init = sent_packets(&a.drain()).remove(0);
    let from = a.addr;
    assert_eq!(b.receive(t0, &init, from), PacketOutcome::CookieSent);
    let cookie = sent_packets(&b.drain()).remove(0);
    assert_eq!(cookie.len(), 64);
    assert_eq!(
        a.receive(t0, &cookie, b.addr),
        PacketOutcome::CookieAccepted
    );
    // The retransmission carries MAC2 and gets through.
    a.on_timers(t0 + secs(5.4));
    let retry = sent_packets(&a.drain()).remove(0);
    assert_eq!(
        b.receive(t0 + secs(5.4), &retry, from),
        PacketOutcome::Responded(pa)
    );
    // From another source port the cookie does not count.
    let mut other = from;
    other.set_port(1);
    a.on_timers(t0 + secs(11.0));
    let again = sent_packets(&a.drain());
    if let Some(p) = again.first() {
        assert_eq!(
            b.receive(t0 + secs(11.0), p, other),
            PacketOutcome::CookieSent
        );
    }
}

#[test]
fn garbage_is_dropped_and_counted() {
    let t0 = Instant::now();
    let (_a, mut b) = pair(t0, cfg());
    let from = "198.51.100.1:9".parse().expect("literal");
    let mut junk = vec![1u8, 0, 0, 0];
    junk.resize(148, 0xaa);
    assert_eq!(
        b.receive(t0, &junk, from),
        PacketOutcome::Dropped(wg_handshake::DropReason::BadMac1)
    );
    assert_eq!(
        b.receive(t0, &[2, 0, 0], from),
        PacketOutcome::Dropped(wg_handshake::DropReason::Malformed)
    );
    let mut cookie = vec![3u8, 0, 0, 0];
    cookie.resize(64, 0);
    assert_eq!(
        b.receive(t0, &cookie, from),
        PacketOutcome::Dropped(wg_handshake::DropReason::UnknownIndex)
    );
    let c = b.core.counters();
    assert_eq!((c.bad_mac1, c.malformed, c.unknown_index), (1, 1, 1));
    assert!(b.drain().is_empty());
}

#[test]
fn handshake_messages_are_accounted_to_the_peer_where_linux_counts_them() {
    // Linux counts every datagram of a peer: the responder's answer is
    // sent to the peer (not to a bare address) after its endpoint is set
    // from the initiation, and each side's received handshake message is
    // reported with its size for the peer's rx counter.
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    let (a_actions, b_actions) = handshake(t0, &mut a, &mut b);
    let received = |actions: &[HandshakeToTransport], peer| {
        actions.iter().position(|x| {
            matches!(x, HandshakeToTransport::HandshakeReceived { peer: p, len, .. }
                if *p == peer && *len as usize == proto::wire::INITIATION_LEN)
        })
    };
    let got_init = received(&b_actions, a.public).expect("b reports a's initiation");
    let response_at = b_actions
        .iter()
        .position(|x| {
            matches!(x, HandshakeToTransport::Send { to: proto::ipc::Destination::Peer(p), bytes }
                if *p == a.public && bytes.len() == proto::wire::RESPONSE_LEN)
        })
        .expect("b sends its response to the peer a");
    assert!(
        got_init < response_at,
        "the endpoint is set before the reply"
    );
    assert!(a_actions.iter().any(|x| matches!(x,
        HandshakeToTransport::HandshakeReceived { peer, len, from }
            if *peer == b.public && *len as usize == proto::wire::RESPONSE_LEN && from.addr == b.addr)));
}

#[test]
fn a_retransmission_clears_the_cached_source_address() {
    let t0 = Instant::now();
    let (mut a, b) = pair(t0, cfg());
    a.need_handshake(t0, &b.public);
    let first = a.drain();
    assert_eq!(initiations(&first), 1);
    assert!(!first
        .iter()
        .any(|x| matches!(x, HandshakeToTransport::ClearEndpointSource { .. })));
    // No answer: the retry (5 s + jitter) first forgets the source.
    a.on_timers(t0 + secs(5.4));
    let retry = a.drain();
    assert_eq!(initiations(&retry), 1, "retried: {retry:?}");
    let clear = retry
        .iter()
        .position(|x| matches!(x, HandshakeToTransport::ClearEndpointSource { peer } if *peer == b.public))
        .expect("source cleared on retransmission");
    let init = retry
        .iter()
        .position(|x| matches!(x, HandshakeToTransport::Send { .. }))
        .expect("initiation");
    assert!(clear < init);
}

#[test]
fn a_new_private_key_allows_an_immediate_handshake() {
    // Linux and wireguard-go expire the sessions on a key change and
    // reset the last-sent time, so the next packet starts a handshake at
    // once instead of waiting out REKEY_TIMEOUT.
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, cfg());
    handshake(t0, &mut a, &mut b);
    let new_key = wg_crypto::generate_private_key();
    let new_public = wg_crypto::public_key(&new_key);
    a.store.set_private_key(Some(new_key));
    let mut out = Vec::new();
    a.core.set_interface(Some(new_public), &mut out);
    assert_eq!(expiries(&out), 1, "the session with b expired: {out:?}");
    a.need_handshake(t0 + secs(1.0), &b.public);
    assert_eq!(
        initiations(&a.drain()),
        1,
        "handshake 1 s after the last one, because the key changed"
    );
    // Without a key change the one-per-REKEY_TIMEOUT rule holds.
    let (mut c, mut d) = pair(t0, cfg());
    handshake(t0, &mut c, &mut d);
    c.need_handshake(t0 + secs(1.0), &d.public);
    assert_eq!(initiations(&c.drain()), 0);
}
