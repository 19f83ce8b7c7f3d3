//! The key store's handshakes between two stores, and its permit rules.

use std::time::{Duration, Instant};

use proto::ipc::{CryptoError, CryptoToHandshake, HandshakeToCrypto};
use proto::keys::{HandshakeId, NoiseResponse, PublicKey, SecretKey};
use wg_crypto::keystore::MIN_INITIATION_INTERVAL;
use wg_crypto::{generate_private_key, public_key, KeyStore};

struct Side {
    store: KeyStore,
    public: PublicKey,
}

fn side() -> Side {
    let key = generate_private_key();
    let public = public_key(&key);
    let mut store = KeyStore::new();
    assert_eq!(store.set_private_key(Some(key)), Some(public));
    Side { store, public }
}

fn pair(psk_a: Option<[u8; 32]>, psk_b: Option<[u8; 32]>) -> (Side, Side) {
    let mut a = side();
    let mut b = side();
    a.store.set_peer(b.public, psk_a.map(SecretKey::from_bytes));
    b.store.set_peer(a.public, psk_b.map(SecretKey::from_bytes));
    (a, b)
}

#[test]
fn full_handshake_agrees_on_keys() {
    for psk in [None, Some([7u8; 32])] {
        let (mut a, mut b) = pair(psk, psk);
        let (ia, init) = a.store.create_initiation(&b.public).expect("initiation");
        let answer = b.store.answer_initiation(&init).expect("answer");
        assert_eq!(answer.peer, a.public);
        assert_ne!(answer.timestamp.0, [0; 12]);
        // The responder keeps nothing once it has answered.
        assert_eq!(b.store.pending_count(), 0);
        let ka = a
            .store
            .consume_response(ia, &answer.noise)
            .expect("consume response");
        let kb = answer.keys;
        assert_eq!(ka.send, kb.recv);
        assert_eq!(ka.recv, kb.send);
        assert_ne!(ka.send, ka.recv);
        // Exactly once: the handshake is gone with its keys.
        assert_eq!(
            a.store.consume_response(ia, &answer.noise),
            Err(CryptoError::UnknownHandshake)
        );
        assert_eq!(a.store.abandon(ia), Err(CryptoError::UnknownHandshake));
        assert_eq!(a.store.pending_count(), 0);
    }
}

#[test]
fn psk_mismatch_fails_at_the_initiator() {
    let (mut a, mut b) = pair(Some([1; 32]), Some([2; 32]));
    let (ia, init) = a.store.create_initiation(&b.public).expect("initiation");
    // The PSK enters only in the second message: the responder cannot tell.
    let answer = b.store.answer_initiation(&init).expect("answer");
    assert_eq!(
        a.store.consume_response(ia, &answer.noise),
        Err(CryptoError::Rejected)
    );
    // The handshake stays, waiting for a response that authenticates, and
    // released no keys.
    assert_eq!(a.store.pending_count(), 1);
}

#[test]
fn unknown_initiator_is_refused() {
    let (mut a, _b) = pair(None, None);
    let mut stranger = side();
    stranger.store.set_peer(a.public, None);
    let (_, init) = stranger
        .store
        .create_initiation(&a.public)
        .expect("initiation");
    assert_eq!(
        a.store.answer_initiation(&init).map(|_| ()),
        Err(CryptoError::UnknownPeer)
    );
    assert_eq!(a.store.pending_count(), 0);
}

#[test]
fn initiation_for_someone_else_does_not_authenticate() {
    let (mut a, mut b) = pair(None, None);
    let mut c = side();
    c.store.set_peer(a.public, None);
    let (_, init) = a.store.create_initiation(&b.public).expect("initiation");
    assert_eq!(
        c.store.answer_initiation(&init).map(|_| ()),
        Err(CryptoError::Rejected)
    );
    // Tampering is caught too.
    let mut bad = init.clone();
    bad.0[60] ^= 1;
    assert_eq!(
        b.store.answer_initiation(&bad).map(|_| ()),
        Err(CryptoError::Rejected)
    );
}

/// Keys come only with the step that finishes a handshake: there is no
/// request that names a handshake and asks for its keys, so none can be
/// asked early, twice, or for a handshake that never was.
#[test]
fn keys_come_only_with_the_step_that_finishes() {
    let (mut a, mut b) = pair(None, None);
    assert_eq!(
        a.store
            .consume_response(HandshakeId(999), &NoiseResponse([0; 48]))
            .map(|_| ()),
        Err(CryptoError::UnknownHandshake)
    );
    let (ia, init) = a.store.create_initiation(&b.public).expect("initiation");
    // Our own initiation, fed back to us: it is not for our key.
    assert_eq!(
        a.store.answer_initiation(&init).map(|_| ()),
        Err(CryptoError::Rejected)
    );
    // A response that does not authenticate releases nothing and leaves
    // the handshake intact...
    assert_eq!(
        a.store
            .consume_response(ia, &NoiseResponse([0x55; 48]))
            .map(|_| ()),
        Err(CryptoError::Rejected)
    );
    assert_eq!(a.store.pending_count(), 1);
    // ...and the genuine one then finishes it, once.
    let answer = b.store.answer_initiation(&init).expect("answer");
    let keys = a
        .store
        .consume_response(ia, &answer.noise)
        .expect("consume response");
    assert_eq!(keys.send, answer.keys.recv);
    assert_eq!(
        a.store.consume_response(ia, &answer.noise).map(|_| ()),
        Err(CryptoError::UnknownHandshake)
    );
    // The responder has no handshake to ask about at all: the same
    // initiation again is a replay.
    assert_eq!(
        b.store.answer_initiation(&init).map(|_| ()),
        Err(CryptoError::ReplayedTimestamp)
    );
}

#[test]
fn unknown_peer_and_missing_key_are_refused() {
    let mut lonely = KeyStore::new();
    let peer = PublicKey([9; 32]);
    lonely.set_peer(peer, None);
    assert_eq!(
        lonely.create_initiation(&peer).map(|_| ()),
        Err(CryptoError::NoPrivateKey)
    );
    let mut a = side();
    assert_eq!(
        a.store.create_initiation(&PublicKey([8; 32])).map(|_| ()),
        Err(CryptoError::UnknownPeer)
    );
}

#[test]
fn a_new_initiation_supersedes_the_old_one() {
    let (mut a, b) = pair(None, None);
    let (first, _) = a.store.create_initiation(&b.public).expect("first");
    let (second, _) = a.store.create_initiation(&b.public).expect("second");
    assert_ne!(first, second);
    assert_eq!(a.store.pending_count(), 1);
    assert_eq!(a.store.abandon(first), Err(CryptoError::UnknownHandshake));
    assert_eq!(
        a.store
            .consume_response(first, &NoiseResponse([0; 48]))
            .map(|_| ()),
        Err(CryptoError::UnknownHandshake)
    );
    a.store.abandon(second).expect("abandon");
    assert_eq!(a.store.pending_count(), 0);
}

#[test]
fn timestamps_strictly_increase() {
    let (mut a, mut b) = pair(None, None);
    let mut last = None;
    let start = Instant::now();
    for i in 0..5 {
        let (_, init) = a.store.create_initiation(&b.public).expect("initiation");
        let ts = b
            .store
            .answer_initiation_at(start + MIN_INITIATION_INTERVAL * i, &init)
            .expect("answer")
            .timestamp;
        if let Some(l) = last {
            assert!(ts > l);
        }
        last = Some(ts);
    }
}

#[test]
fn resending_the_same_key_keeps_handshakes() {
    let key = generate_private_key();
    let again = SecretKey::from_bytes(*key.expose());
    let mut store = KeyStore::new();
    store.set_private_key(Some(key));
    let peer = side();
    store.set_peer(peer.public, None);
    store.create_initiation(&peer.public).expect("initiation");
    store.set_private_key(Some(again));
    assert_eq!(store.pending_count(), 1);
    store.set_private_key(Some(generate_private_key()));
    assert_eq!(store.pending_count(), 0);
}

#[test]
fn dispatch_answers_every_request() {
    let (mut a, mut b) = pair(None, None);
    let CryptoToHandshake::Initiation { id: ia, noise } = a
        .store
        .handle_handshake(HandshakeToCrypto::CreateInitiation { peer: b.public })
    else {
        panic!("no initiation");
    };
    let CryptoToHandshake::Answered {
        peer,
        noise,
        keys: kb,
        ..
    } = b
        .store
        .handle_handshake(HandshakeToCrypto::AnswerInitiation { noise })
    else {
        panic!("not answered");
    };
    assert_eq!(peer, a.public);
    let CryptoToHandshake::ResponseConsumed(ka) = a
        .store
        .handle_handshake(HandshakeToCrypto::ConsumeResponse { id: ia, noise })
    else {
        panic!("response not consumed");
    };
    assert_eq!((ka.send, ka.recv), (kb.recv, kb.send));
    assert_eq!(
        a.store
            .handle_handshake(HandshakeToCrypto::Abandon { id: ia }),
        CryptoToHandshake::Refused(CryptoError::UnknownHandshake)
    );
}

/// A forged response — the right handshake, any bytes — is refused and
/// leaves the handshake in place: the genuine response still completes it,
/// with the keys the responder has.
#[test]
fn a_forged_response_leaves_the_handshake_in_place() {
    for psk in [None, Some([5u8; 32])] {
        let (mut a, mut b) = pair(psk, psk);
        let t0 = Instant::now();
        // b's genuine response to an earlier initiation of a's, which the
        // later one superseded: authentic bytes, the wrong handshake.
        let (_, earlier) = a.store.create_initiation(&b.public).expect("earlier");
        let stale = b
            .store
            .answer_initiation_at(t0, &earlier)
            .expect("earlier")
            .noise;
        let (ia, init) = a.store.create_initiation(&b.public).expect("initiation");
        let genuine = b
            .store
            .answer_initiation_at(t0 + MIN_INITIATION_INTERVAL, &init)
            .expect("answer");
        // Garbage, an all-zero ephemeral (refused by the DH), the genuine
        // ephemeral with a bad tag, and the stale response.
        let mut bad_tag = genuine.noise.clone();
        bad_tag.0[47] ^= 1;
        let forgeries = [
            NoiseResponse([0xa5; 48]),
            NoiseResponse([0; 48]),
            bad_tag,
            stale,
        ];
        for forged in &forgeries {
            assert_eq!(
                a.store.consume_response(ia, forged).map(|_| ()),
                Err(CryptoError::Rejected)
            );
            assert_eq!(a.store.pending_count(), 1, "the handshake stays");
        }
        let ka = a
            .store
            .consume_response(ia, &genuine.noise)
            .expect("the genuine response after the forgeries");
        let kb = genuine.keys;
        assert_eq!(ka.send, kb.recv);
        assert_eq!(ka.recv, kb.send);
        assert_eq!(a.store.pending_count(), 0);
    }
}

/// The same through the dispatch the handshake role talks to.
#[test]
fn a_forged_response_is_refused_through_dispatch() {
    let (mut a, mut b) = pair(None, None);
    let CryptoToHandshake::Initiation { id: ia, noise } = a
        .store
        .handle_handshake(HandshakeToCrypto::CreateInitiation { peer: b.public })
    else {
        panic!("no initiation");
    };
    let genuine = b.store.answer_initiation(&noise).expect("answer");
    assert_eq!(
        a.store
            .handle_handshake(HandshakeToCrypto::ConsumeResponse {
                id: ia,
                noise: NoiseResponse([1; 48]),
            }),
        CryptoToHandshake::Refused(CryptoError::Rejected)
    );
    let CryptoToHandshake::ResponseConsumed(ka) =
        a.store
            .handle_handshake(HandshakeToCrypto::ConsumeResponse {
                id: ia,
                noise: genuine.noise,
            })
    else {
        panic!("the genuine response was not consumed");
    };
    assert_eq!(ka.send, genuine.keys.recv);
}

/// A replayed initiation — byte for byte one consumed before, or an older
/// one — is refused, creates no handshake and so no response and no keys,
/// however long after the first it comes.
#[test]
fn a_replayed_initiation_gets_nothing() {
    let (mut a, mut b) = pair(None, None);
    let t0 = Instant::now();
    let (_, older) = a.store.create_initiation(&b.public).expect("older");
    let (_, init) = a.store.create_initiation(&b.public).expect("initiation");
    let answer = b.store.answer_initiation_at(t0, &init).expect("answer");
    assert_eq!(answer.peer, a.public);
    for (later, replay) in [(1, &init), (2, &older), (3, &init)] {
        let at = t0 + Duration::from_secs(later);
        assert_eq!(
            b.store.answer_initiation_at(at, replay).map(|_| ()),
            Err(CryptoError::ReplayedTimestamp)
        );
        assert_eq!(b.store.pending_count(), 0, "no handshake left behind");
    }
    // Through the dispatch: refused, with no response and no keys.
    assert_eq!(
        b.store
            .handle_handshake(HandshakeToCrypto::AnswerInitiation {
                noise: init.clone()
            }),
        CryptoToHandshake::Refused(CryptoError::ReplayedTimestamp)
    );
    // A fresh initiation (newer timestamp) is answered.
    let (_, fresh) = a.store.create_initiation(&b.public).expect("fresh");
    b.store
        .answer_initiation_at(t0 + Duration::from_secs(4), &fresh)
        .expect("answer to the fresh one");
}

/// At most one initiation per peer per 20 ms is consumed; one refused for
/// the rate leaves no handshake, and the next in time is taken.
#[test]
fn initiations_per_peer_are_rate_limited() {
    let (mut a, mut b) = pair(None, None);
    let (mut c, _) = pair(None, None);
    b.store.set_peer(c.public, None);
    c.store.set_peer(b.public, None);
    let t0 = Instant::now();
    let (_, first) = a.store.create_initiation(&b.public).expect("first");
    let (_, second) = a.store.create_initiation(&b.public).expect("second");
    let (_, third) = a.store.create_initiation(&b.public).expect("third");
    let (_, from_c) = c.store.create_initiation(&b.public).expect("from c");
    b.store.answer_initiation_at(t0, &first).expect("first");
    let soon = t0 + MIN_INITIATION_INTERVAL - Duration::from_millis(1);
    assert_eq!(
        b.store.answer_initiation_at(soon, &second).map(|_| ()),
        Err(CryptoError::InitiationFlood)
    );
    // Another peer is not held back by this one.
    b.store
        .answer_initiation_at(soon, &from_c)
        .expect("another peer");
    // The refused one did not count: the next after the interval is taken.
    b.store
        .answer_initiation_at(t0 + MIN_INITIATION_INTERVAL, &third)
        .expect("after the interval");
}

/// Removing a peer forgets its timestamps: re-added, it starts afresh (as
/// a new peer does in Linux).
#[test]
fn a_removed_peer_starts_afresh() {
    let (mut a, mut b) = pair(None, None);
    let t0 = Instant::now();
    let (_, init) = a.store.create_initiation(&b.public).expect("initiation");
    b.store.answer_initiation_at(t0, &init).expect("consume");
    b.store.remove_peer(&a.public);
    b.store.set_peer(a.public, None);
    b.store
        .answer_initiation_at(t0 + Duration::from_secs(1), &init)
        .expect("a re-added peer has no history");
}

/// Each peer's static-static DH is computed when the private key changes:
/// after a new key, handshakes with it work both ways, and one made for
/// the old key is refused.
#[test]
fn a_new_private_key_refreshes_the_static_static_dh() {
    let (mut a, mut b) = pair(None, None);
    let old_public = b.public;
    let t0 = Instant::now();
    // Each handshake a second after the last: the flood guard stays out of
    // the way.
    let handshake = |i: &mut Side, r: &mut Side, s: u64| -> Result<(), CryptoError> {
        let (ii, init) = i.store.create_initiation(&r.public)?;
        let now = t0 + Duration::from_secs(s);
        let answer = r.store.answer_initiation_at(now, &init)?;
        assert_eq!(answer.peer, i.public);
        let ki = i.store.consume_response(ii, &answer.noise)?;
        let kr = answer.keys;
        assert_eq!((ki.send, ki.recv), (kr.recv, kr.send));
        Ok(())
    };
    handshake(&mut a, &mut b, 0).expect("a -> b with the first key");

    let key = generate_private_key();
    b.public = public_key(&key);
    assert_eq!(b.store.set_private_key(Some(key)), Some(b.public));
    // a still has b's old key: its initiation is for a key b no longer holds.
    let (_, init) = a.store.create_initiation(&old_public).expect("initiation");
    assert_eq!(
        b.store
            .answer_initiation_at(t0 + Duration::from_secs(1), &init)
            .map(|_| ()),
        Err(CryptoError::Rejected)
    );
    // With b's new key configured on a, both directions work: b's value
    // for a was recomputed with its new key.
    a.store.remove_peer(&old_public);
    a.store.set_peer(b.public, None);
    handshake(&mut b, &mut a, 2).expect("b -> a with the new key");
    handshake(&mut a, &mut b, 3).expect("a -> b with the new key");
}

/// A peer whose key is a low-order point gets no handshake: the
/// static-static DH with it is not contributory.
#[test]
fn a_low_order_peer_key_is_refused() {
    let mut a = side();
    let low_order = PublicKey([0; 32]);
    a.store.set_peer(low_order, None);
    assert!(a.store.create_initiation(&low_order).is_err());
    assert_eq!(a.store.pending_count(), 0);
}
