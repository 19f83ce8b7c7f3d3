//! Secrets given to the key holder come back wrapped, and a new key
//! holder with the same wrapping key (a restarted crypto role) takes the
//! wrapped ones back: the same identity, the same PSKs, handshakes that
//! complete. Without the wrapping key nothing opens.

use proto::ipc::{Apply, CryptoError, CryptoOp, CryptoToParent, ParentToCrypto, Secret, Wrapped};
use proto::keys::{PublicKey, SecretKey};
use wg_crypto::wrap::WrappingKey;
use wg_crypto::{generate_private_key, public_key, KeyStore};

fn key_bytes(k: &WrappingKey) -> [u8; 32] {
    *k.expose()
}

fn set_key(store: &mut KeyStore, s: Secret) -> CryptoToParent {
    store.handle_parent(ParentToCrypto::SetPrivateKey(Some(s)))
}

fn set_psk(store: &mut KeyStore, peer: PublicKey, s: Secret) -> CryptoToParent {
    store.handle_parent(ParentToCrypto::Apply(Apply {
        ops: vec![CryptoOp::SetPeer { peer, psk: Some(s) }],
        commit: true,
    }))
}

/// A full handshake from `a` (initiator) to `b`.
fn handshake(a: &mut KeyStore, b: &mut KeyStore, b_public: &PublicKey) -> Result<(), CryptoError> {
    let (ia, init) = a.create_initiation(b_public)?;
    let answer = b.answer_initiation(&init)?;
    let ka = a.consume_response(ia, &answer.noise)?;
    assert_eq!(ka.send, answer.keys.recv);
    Ok(())
}

#[test]
fn a_restarted_key_holder_takes_back_what_it_wrapped() {
    let kek = WrappingKey::generate();
    let bytes = key_bytes(&kek);
    let mut first = KeyStore::with_wrapping_key(Some(kek));
    let own = generate_private_key();
    let own_public = public_key(&own);
    let CryptoToParent::PublicKey(Some(p), Some(wrapped_key)) =
        set_key(&mut first, Secret::Plain(own))
    else {
        panic!("no wrapped private key");
    };
    assert_eq!(p, own_public);

    let peer_key = generate_private_key();
    let peer_public = public_key(&peer_key);
    let CryptoToParent::WrappedPsks(w) = set_psk(
        &mut first,
        peer_public,
        Secret::Plain(SecretKey::from_bytes([9; 32])),
    ) else {
        panic!("no wrapped PSK");
    };
    assert_eq!(w.len(), 1);
    let (for_peer, Some(wrapped_psk)) = w.into_iter().next().expect("one") else {
        panic!("PSK not wrapped");
    };
    assert_eq!(for_peer, peer_public);
    drop(first);

    // The restarted role: the same wrapping key, the wrapped secrets.
    let mut second = KeyStore::with_wrapping_key(Some(WrappingKey::from_bytes(bytes)));
    assert_eq!(
        set_key(&mut second, Secret::Wrapped(wrapped_key.clone())),
        CryptoToParent::PublicKey(Some(own_public), None),
        "a wrapped key is not wrapped again"
    );
    assert_eq!(
        set_psk(
            &mut second,
            peer_public,
            Secret::Wrapped(wrapped_psk.clone())
        ),
        CryptoToParent::Done
    );

    // The peer, with the same PSK, completes a handshake with it both ways;
    // with another PSK it does not.
    let mut peer = KeyStore::new();
    peer.set_private_key(Some(peer_key));
    peer.set_peer(own_public, Some(SecretKey::from_bytes([9; 32])));
    handshake(&mut peer, &mut second, &own_public).expect("peer → restarted");
    handshake(&mut second, &mut peer, &peer_public).expect("restarted → peer");
    peer.set_peer(own_public, Some(SecretKey::from_bytes([8; 32])));
    assert!(handshake(&mut second, &mut peer, &peer_public).is_err());

    // Another wrapping key (another daemon) opens nothing, and a PSK's
    // blob is no private key.
    let mut stranger = KeyStore::with_wrapping_key(Some(WrappingKey::generate()));
    assert_eq!(
        set_key(&mut stranger, Secret::Wrapped(wrapped_key)),
        CryptoToParent::Refused(CryptoError::Rejected)
    );
    assert_eq!(
        set_key(&mut second, Secret::Wrapped(wrapped_psk.clone())),
        CryptoToParent::Refused(CryptoError::Rejected)
    );
    let mut none = KeyStore::new();
    assert_eq!(
        set_psk(&mut none, peer_public, Secret::Wrapped(wrapped_psk)),
        CryptoToParent::Refused(CryptoError::Rejected)
    );
}

#[test]
fn a_transaction_with_a_bad_blob_is_dropped_whole() {
    let mut store = KeyStore::with_wrapping_key(Some(WrappingKey::generate()));
    let a = PublicKey([1; 32]);
    let b = PublicKey([2; 32]);
    let first = store.handle_parent(ParentToCrypto::Apply(Apply {
        ops: vec![CryptoOp::SetPeer { peer: a, psk: None }],
        commit: false,
    }));
    assert_eq!(first, CryptoToParent::Done);
    let second = store.handle_parent(ParentToCrypto::Apply(Apply {
        ops: vec![CryptoOp::SetPeer {
            peer: b,
            psk: Some(Secret::Wrapped(Wrapped(vec![0; 72]))),
        }],
        commit: true,
    }));
    assert_eq!(second, CryptoToParent::Refused(CryptoError::Rejected));
    assert_eq!(store.peer_count(), 0, "nothing of the transaction applied");
}

#[test]
fn without_a_wrapping_key_secrets_come_back_unwrapped() {
    let mut store = KeyStore::new();
    let k = generate_private_key();
    let p = public_key(&k);
    assert_eq!(
        set_key(&mut store, Secret::Plain(k)),
        CryptoToParent::PublicKey(Some(p), None)
    );
    assert_eq!(
        set_psk(
            &mut store,
            PublicKey([3; 32]),
            Secret::Plain(SecretKey::from_bytes([4; 32]))
        ),
        CryptoToParent::WrappedPsks(vec![(PublicKey([3; 32]), None)])
    );
}
