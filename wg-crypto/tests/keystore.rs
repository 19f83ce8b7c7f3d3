//! The key store's handshakes between two stores, and its permit rules.

use proto::ipc::{CryptoError, CryptoToHandshake, HandshakeToCrypto};
use proto::keys::{HandshakeId, NoiseResponse, PublicKey, SecretKey};
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
        let (ib, who, ts) = b.store.consume_initiation(&init).expect("consume");
        assert_eq!(who, a.public);
        assert_ne!(ts.0, [0; 12]);
        let resp = b.store.create_response(ib).expect("response");
        a.store
            .consume_response(ia, &resp)
            .expect("consume response");
        let ka = a.store.release_keys(ia).expect("keys a");
        let kb = b.store.release_keys(ib).expect("keys b");
        assert_eq!(ka.send, kb.recv);
        assert_eq!(ka.recv, kb.send);
        assert_ne!(ka.send, ka.recv);
        // Exactly once.
        assert_eq!(a.store.release_keys(ia), Err(CryptoError::UnknownHandshake));
        assert_eq!(b.store.release_keys(ib), Err(CryptoError::UnknownHandshake));
        assert_eq!(a.store.pending_count(), 0);
        assert_eq!(b.store.pending_count(), 0);
    }
}

#[test]
fn psk_mismatch_fails_at_the_initiator() {
    let (mut a, mut b) = pair(Some([1; 32]), Some([2; 32]));
    let (ia, init) = a.store.create_initiation(&b.public).expect("initiation");
    // The PSK enters only in the second message: the responder cannot tell.
    let (ib, _, _) = b.store.consume_initiation(&init).expect("consume");
    let resp = b.store.create_response(ib).expect("response");
    assert_eq!(
        a.store.consume_response(ia, &resp),
        Err(CryptoError::Rejected)
    );
    assert_eq!(a.store.release_keys(ia), Err(CryptoError::UnknownHandshake));
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
        a.store.consume_initiation(&init).map(|_| ()),
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
        c.store.consume_initiation(&init).map(|_| ()),
        Err(CryptoError::Rejected)
    );
    // Tampering is caught too.
    let mut bad = init.clone();
    bad.0[60] ^= 1;
    assert_eq!(
        b.store.consume_initiation(&bad).map(|_| ()),
        Err(CryptoError::Rejected)
    );
}

#[test]
fn permit_rules_refuse_out_of_order_requests() {
    let (mut a, mut b) = pair(None, None);
    assert_eq!(
        a.store.create_response(HandshakeId(999)),
        Err(CryptoError::UnknownHandshake)
    );
    let (ia, init) = a.store.create_initiation(&b.public).expect("initiation");
    // An initiator's handshake cannot be answered or released early...
    assert_eq!(a.store.create_response(ia), Err(CryptoError::WrongState));
    assert_eq!(a.store.release_keys(ia), Err(CryptoError::WrongState));
    // ...and the refusal leaves it intact.
    let (ib, _, _) = b.store.consume_initiation(&init).expect("consume");
    assert_eq!(
        b.store.consume_response(ib, &NoiseResponse([0; 48])),
        Err(CryptoError::WrongState)
    );
    assert_eq!(b.store.release_keys(ib), Err(CryptoError::WrongState));
    let resp = b.store.create_response(ib).expect("response");
    assert_eq!(b.store.create_response(ib), Err(CryptoError::WrongState));
    a.store
        .consume_response(ia, &resp)
        .expect("consume response");
    assert_eq!(
        a.store.consume_response(ia, &resp),
        Err(CryptoError::WrongState)
    );
    a.store.release_keys(ia).expect("keys");
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
    a.store.abandon(second).expect("abandon");
    assert_eq!(a.store.pending_count(), 0);
}

#[test]
fn timestamps_strictly_increase() {
    let (mut a, mut b) = pair(None, None);
    let mut last = None;
    for _ in 0..5 {
        let (_, init) = a.store.create_initiation(&b.public).expect("initiation");
        let (id, _, ts) = b.store.consume_initiation(&init).expect("consume");
        b.store.abandon(id).expect("abandon");
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
    let CryptoToHandshake::InitiationConsumed { id: ib, .. } = b
        .store
        .handle_handshake(HandshakeToCrypto::ConsumeInitiation { noise })
    else {
        panic!("not consumed");
    };
    let CryptoToHandshake::Response { noise } = b
        .store
        .handle_handshake(HandshakeToCrypto::CreateResponse { id: ib })
    else {
        panic!("no response");
    };
    assert_eq!(
        a.store
            .handle_handshake(HandshakeToCrypto::ConsumeResponse { id: ia, noise }),
        CryptoToHandshake::ResponseConsumed
    );
    assert!(matches!(
        a.store
            .handle_handshake(HandshakeToCrypto::ReleaseKeys { id: ia }),
        CryptoToHandshake::Keys(_)
    ));
    assert_eq!(
        a.store
            .handle_handshake(HandshakeToCrypto::Abandon { id: ia }),
        CryptoToHandshake::Refused(CryptoError::UnknownHandshake)
    );
}
