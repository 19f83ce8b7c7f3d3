//! The Curve25519 primitive handed to snow, with WireGuard's rule that a
//! Diffie-Hellman result of all zeros is an error.
//!
//! snow's default X25519 returns whatever the scalar multiplication gives,
//! so a peer that sends a low-order point as its ephemeral or static key
//! would force a known shared secret. WireGuard (Linux `curve25519()`
//! returning false, wireguard-go's `isZero` check) refuses such a
//! handshake; [`WgResolver`] makes snow do the same by supplying this DH and
//! taking everything else from snow's default resolver.
//!
//! Only the crypto role uses this module.

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use x25519_dalek::{PublicKey, StaticSecret};

/// X25519 whose private half lives in a zeroizing `StaticSecret`, so the
/// copy of the static key that snow asks its DH to hold is wiped when the
/// handshake state is dropped.
pub(crate) struct ContributoryX25519 {
    secret: StaticSecret,
    public: [u8; 32],
}

impl Default for ContributoryX25519 {
    fn default() -> Self {
        let secret = StaticSecret::from([0u8; 32]);
        let public = PublicKey::from(&secret).to_bytes();
        ContributoryX25519 { secret, public }
    }
}

impl Dh for ContributoryX25519 {
    fn name(&self) -> &'static str {
        "25519"
    }
    fn pub_len(&self) -> usize {
        32
    }
    fn priv_len(&self) -> usize {
        32
    }

    fn set(&mut self, privkey: &[u8]) {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        // snow only ever passes priv_len() bytes; anything else leaves a
        // zero key, whose handshakes then fail authentication.
        if privkey.len() == 32 {
            k.copy_from_slice(privkey);
        }
        self.secret = StaticSecret::from(*k);
        self.public = PublicKey::from(&self.secret).to_bytes();
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut k[..])?;
        self.set(&k[..]);
        Ok(())
    }

    fn pubkey(&self) -> &[u8] {
        &self.public
    }

    fn privkey(&self) -> &[u8] {
        self.secret.as_bytes()
    }

    fn dh(&self, pubkey: &[u8], out: &mut [u8]) -> Result<(), snow::Error> {
        // snow hands over its fixed-size key buffer, of which the first
        // pub_len() bytes are the key.
        let their: [u8; 32] = pubkey
            .get(..32)
            .and_then(|k| k.try_into().ok())
            .ok_or(snow::Error::Dh)?;
        if out.len() < 32 {
            return Err(snow::Error::Dh);
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(their));
        if !shared.was_contributory() {
            return Err(snow::Error::Dh);
        }
        out[..32].copy_from_slice(shared.as_bytes());
        Ok(())
    }
}

/// snow resolver: our DH, snow's own ChaChaPoly, BLAKE2s and RNG.
pub(crate) struct WgResolver {
    default: DefaultResolver,
}

impl WgResolver {
    pub(crate) fn new() -> Self {
        WgResolver {
            default: DefaultResolver,
        }
    }
}

impl CryptoResolver for WgResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.default.resolve_rng()
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(ContributoryX25519::default())),
            _ => None,
        }
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        self.default.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        self.default.resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_result_is_rejected() {
        let mut dh = ContributoryX25519::default();
        dh.set(&[0x42; 32]);
        let mut out = [0u8; 32];
        // The identity (u = 0) and u = 1 are small-order points.
        assert!(dh.dh(&[0u8; 32], &mut out).is_err());
        let mut one = [0u8; 32];
        one[0] = 1;
        assert!(dh.dh(&one, &mut out).is_err());
    }

    #[test]
    fn ordinary_dh_agrees_both_ways() {
        let mut a = ContributoryX25519::default();
        let mut b = ContributoryX25519::default();
        a.set(&[1; 32]);
        b.set(&[2; 32]);
        let (mut ab, mut ba) = ([0u8; 32], [0u8; 32]);
        a.dh(b.pubkey(), &mut ab).expect("dh");
        b.dh(a.pubkey(), &mut ba).expect("dh");
        assert_eq!(ab, ba);
        assert_ne!(ab, [0u8; 32]);
    }
}
