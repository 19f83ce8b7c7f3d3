//! MAC1 and MAC2 of handshake messages, and the keys they are made with.
//!
//! From the whitepaper (§5.4.4):
//!
//! ```text
//! HASH(x)       = BLAKE2s-256(x)
//! MAC(key, x)   = keyed BLAKE2s-128(key, x)
//! msg.mac1      = MAC(HASH("mac1----" ‖ Spub_receiver), msg up to mac1)
//! msg.mac2      = MAC(cookie, msg up to mac2)      if a fresh cookie is held,
//!               = 0^16                              otherwise
//! ```
//!
//! MAC1 needs only the receiver's *public* key, which is why the handshake
//! role can check it before anything reaches the crypto role: a packet that
//! was not made by someone who knows our public key never costs a
//! Diffie-Hellman.

use blake2::digest::consts::U16;
use blake2::digest::{FixedOutput, KeyInit, Mac, Update};
use blake2::{Blake2s256, Blake2sMac, Digest};
use proto::keys::PublicKey;

pub const MAC_LEN: usize = 16;
const LABEL_MAC1: &[u8] = b"mac1----";
const LABEL_COOKIE: &[u8] = b"cookie--";

fn hash_label(label: &[u8], key: &PublicKey) -> [u8; 32] {
    let mut h = Blake2s256::new();
    Digest::update(&mut h, label);
    Digest::update(&mut h, key.as_bytes());
    h.finalize().into()
}

/// `HASH("mac1----" ‖ key)`: the key of MAC1 on messages sent *to* `key`.
pub fn mac1_key(key: &PublicKey) -> [u8; 32] {
    hash_label(LABEL_MAC1, key)
}

/// `HASH("cookie--" ‖ key)`: the XChaCha20-Poly1305 key of cookie replies
/// sent *by* the owner of `key`.
pub fn cookie_key(key: &PublicKey) -> [u8; 32] {
    hash_label(LABEL_COOKIE, key)
}

fn keyed(key: &[u8]) -> Blake2sMac<U16> {
    // Keys are 16 or 32 bytes here, always within BLAKE2s's 1..=32 range.
    <Blake2sMac<U16> as KeyInit>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("BLAKE2s key of {} bytes", key.len()))
}

/// `MAC(key, data)`, keyed BLAKE2s with a 16-byte output.
pub fn mac(key: &[u8], data: &[u8]) -> [u8; MAC_LEN] {
    let mut m = keyed(key);
    Update::update(&mut m, data);
    m.finalize_fixed().into()
}

/// Checks `tag == MAC(key, data)` in constant time.
pub fn verify(key: &[u8], data: &[u8], tag: &[u8; MAC_LEN]) -> bool {
    let mut m = keyed(key);
    Update::update(&mut m, data);
    m.verify_slice(tag).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_label() {
        let k = PublicKey([5; 32]);
        assert_ne!(mac1_key(&k), cookie_key(&k));
    }

    #[test]
    fn verify_matches_mac() {
        let t = mac(&[1; 32], b"hello");
        assert!(verify(&[1; 32], b"hello", &t));
        assert!(!verify(&[1; 32], b"hellp", &t));
        assert!(!verify(&[2; 32], b"hello", &t));
        // 16-byte keys (cookies) work too.
        let c = mac(&[3; 16], b"x");
        assert!(verify(&[3; 16], b"x", &c));
    }

    #[test]
    fn keyed_blake2s_known_answer() {
        // BLAKE2s-128 keyed with 0..32, over "abc": cross-checked with
        // Python's hashlib.blake2s(b"abc", key=bytes(range(32)), digest_size=16).
        let key: Vec<u8> = (0u8..32).collect();
        let got = mac(&key, b"abc");
        assert_eq!(
            got.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            KAT_ABC
        );
    }
    const KAT_ABC: &str = include_str!("../tests/data/blake2s128_abc.hex");
}
