//! The crypto role: wgd's HSM.
//!
//! This crate is linked into the crypto process's code path only. It alone
//! holds the interface's static private key and the peers' preshared keys,
//! and runs the Noise `IKpsk2_25519_ChaChaPoly_BLAKE2s` computations of
//! WireGuard's handshake with snow. Its answers to the handshake role are
//! the Noise bytes of handshake messages, the identity and timestamp of a
//! peer that initiated, and the transport keys of a finished handshake —
//! never a static secret.
//!
//! - [`keystore`]: the key store, the handshake operations and their permit
//!   rules, and the dispatch of IPC requests.
//! - [`process`]: the crypto process's main loop over its two channels.
//! - [`wrap`]: sealing the secrets it is given, for the parent to keep and
//!   give back to a restarted crypto role without being able to read them.
//! - `dh`: the X25519 primitive that refuses non-contributory results.

#![forbid(unsafe_code)]

mod dh;
pub mod keystore;
pub mod process;
pub mod wrap;

pub use keystore::{KeyStore, NOISE_PATTERN, PROLOGUE};

use proto::keys::{PublicKey, SecretKey};

/// A fresh private key, clamped as `wg genkey` prints it.
pub fn generate_private_key() -> SecretKey {
    use rand_core::{OsRng, RngCore};
    let mut k = zeroize::Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut k[..]);
    k[0] &= 248;
    k[31] &= 127;
    k[31] |= 64;
    SecretKey::from_bytes(*k)
}

/// The public key of a private key, as `wg pubkey` computes it.
pub fn public_key(secret: &SecretKey) -> PublicKey {
    let s = x25519_dalek::StaticSecret::from(*secret.expose());
    PublicKey(x25519_dalek::PublicKey::from(&s).to_bytes())
}
