//! Keys as text and as the tools make them: generation (`genkey`,
//! `genpsk`), public-key derivation (`pubkey`, and reading another
//! daemon's `get` reply), and a secret's base64 line.
//!
//! For wgctl and for tests. The daemon never derives or generates a key
//! here: its private key lives in the crypto role, which has its own
//! code. The parsing and printing of a single key (`from_base64`,
//! `to_hex`, …) stay on the key types in `proto::keys`, which every
//! process shares.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use proto::keys::{PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

/// A fresh Curve25519 private key from the system's random source
/// (getrandom), clamped as `wg genkey` clamps it.
pub fn generate_private_key() -> SecretKey {
    let mut k = random_32();
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    SecretKey::from_bytes(*k)
}

/// A fresh preshared key: 32 random bytes, as `wg genpsk` makes one.
pub fn generate_preshared_key() -> SecretKey {
    SecretKey::from_bytes(*random_32())
}

fn random_32() -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut k[..]);
    k
}

/// The public key of a private key, as `wg pubkey` computes it (X25519
/// with the base point; the key is clamped on the way, so an unclamped
/// key gives the same answer as `wg`).
pub fn public_key(secret: &SecretKey) -> PublicKey {
    let s = x25519_dalek::StaticSecret::from(*secret.expose());
    PublicKey(x25519_dalek::PublicKey::from(&s).to_bytes())
}

/// A secret as `wg genkey` prints it: base64 and a newline, in a buffer
/// sized up front (so it is never reallocated, which would leave a copy
/// behind) and zeroized when dropped.
pub fn secret_line(secret: &SecretKey) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(45));
    B64.encode_string(secret.expose(), &mut s);
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex32(s: &str) -> [u8; 32] {
        core::array::from_fn(|i| u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap())
    }

    #[test]
    fn generated_keys_are_clamped_and_fresh() {
        let k = generate_private_key();
        let raw = k.expose();
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
        assert!(generate_private_key() != k);
        assert!(generate_preshared_key() != generate_preshared_key());
    }

    #[test]
    fn public_key_of_rfc7748_alice() {
        // RFC 7748 section 6.1: Alice's private key and public key.
        let private = SecretKey::from_bytes(hex32(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let public = PublicKey(hex32(
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
        ));
        assert_eq!(public_key(&private), public);
    }

    #[test]
    fn secret_lines() {
        let k = SecretKey::from_bytes([3; 32]);
        let line = secret_line(&k);
        assert_eq!(line.len(), 45);
        assert_eq!(line.capacity(), 45, "never reallocated");
        assert_eq!(*line, format!("{}\n", PublicKey([3; 32]).to_base64()));
        assert!(SecretKey::from_base64(line.trim()).unwrap() == k);
    }
}
