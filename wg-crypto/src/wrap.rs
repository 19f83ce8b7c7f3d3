//! Wrapping of static secrets for safekeeping outside the key holder.
//!
//! The parent must be able to restore the configuration to a crypto role
//! that died and was restarted, yet it must never hold a static secret
//! (issue 11: a memory scan of the parent finds none). So the key holder
//! hands back, for every secret it is given, that secret sealed under a
//! wrapping key ([`WrappingKey`]) that only crypto roles can read: wgd
//! keeps it in the kernel keyring of the daemon's own session, readable by
//! possession, and the other roles leave that session (`wgd::keyring`).
//! The parent keeps the [`Wrapped`] blob in its journal and gives it back
//! to the next crypto role, which alone can open it.
//!
//! XChaCha20-Poly1305 with a random 24-byte nonce; the associated data
//! names what is wrapped (the private key, or the PSK of one peer), so a
//! blob cannot be replayed as another secret. Called only by
//! [`crate::keystore`].

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use proto::ipc::{Wrapped, WRAPPED_LEN};
use proto::keys::{PublicKey, SecretKey};
use rand_core::{OsRng, RngCore};
use zeroize::{Zeroize, Zeroizing};

/// Distinguishes this use of the key from any other.
const LABEL: &[u8] = b"wgd wrapped secret v1";

/// What a blob wraps; part of its associated data.
#[derive(Debug, Clone, Copy)]
pub enum WrapFor<'a> {
    PrivateKey,
    Psk(&'a PublicKey),
}

/// The key-encryption key. Zeroized on drop; `Debug` prints nothing of it.
pub struct WrappingKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for WrappingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WrappingKey(<redacted>)")
    }
}

/// A blob that did not open: not made by this key, or for another secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a wrapped secret did not open")]
pub struct UnwrapError;

fn aad(what: WrapFor<'_>) -> [u8; LABEL.len() + 1 + 32] {
    let mut a = [0u8; LABEL.len() + 1 + 32];
    a[..LABEL.len()].copy_from_slice(LABEL);
    match what {
        WrapFor::PrivateKey => a[LABEL.len()] = 1,
        WrapFor::Psk(peer) => {
            a[LABEL.len()] = 2;
            a[LABEL.len() + 1..].copy_from_slice(&peer.0);
        }
    }
    a
}

impl WrappingKey {
    /// Takes these bytes (the argument is wiped).
    pub fn from_bytes(mut b: [u8; 32]) -> Self {
        let k = WrappingKey(Zeroizing::new(b));
        b.zeroize();
        k
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        let mut k = Zeroizing::new([0u8; 32]);
        OsRng.fill_bytes(&mut k[..]);
        WrappingKey(k)
    }

    /// The key's bytes, to store it (in the kernel keyring).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }

    /// Seals `secret` for `what`.
    pub fn wrap(&self, what: WrapFor<'_>, secret: &SecretKey) -> Wrapped {
        let mut nonce = [0u8; 24];
        OsRng.fill_bytes(&mut nonce);
        let mut body = Zeroizing::new(*secret.expose());
        let tag = self.cipher().encrypt_in_place_detached(
            XNonce::from_slice(&nonce),
            &aad(what),
            &mut body[..],
        );
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body[..]);
        match tag {
            Ok(tag) => out.extend_from_slice(&tag),
            // Sealing 32 bytes cannot fail; a blob that cannot be opened
            // is what a failure would leave, and the length says so.
            Err(_) => out.clear(),
        }
        Wrapped(out)
    }

    /// Opens a blob made by [`WrappingKey::wrap`] for the same `what`.
    pub fn unwrap(&self, what: WrapFor<'_>, w: &Wrapped) -> Result<SecretKey, UnwrapError> {
        if w.0.len() != WRAPPED_LEN {
            return Err(UnwrapError);
        }
        let (nonce, rest) = w.0.split_at(24);
        let (sealed, tag) = rest.split_at(32);
        let mut body = Zeroizing::new([0u8; 32]);
        body.copy_from_slice(sealed);
        self.cipher()
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &aad(what),
                &mut body[..],
                Tag::from_slice(tag),
            )
            .map_err(|_| UnwrapError)?;
        Ok(SecretKey::from_bytes(*body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(b: u8) -> SecretKey {
        SecretKey::from_bytes([b; 32])
    }

    #[test]
    fn a_wrapped_secret_opens_only_with_its_key_and_for_what_it_wraps() {
        let k = WrappingKey::generate();
        let peer = PublicKey([9; 32]);
        let other = PublicKey([10; 32]);
        let w = k.wrap(WrapFor::Psk(&peer), &secret(7));
        assert_eq!(w.0.len(), WRAPPED_LEN);
        assert!(k
            .unwrap(WrapFor::Psk(&peer), &w)
            .is_ok_and(|s| s == secret(7)));
        assert_eq!(k.unwrap(WrapFor::Psk(&other), &w), Err(UnwrapError));
        assert_eq!(k.unwrap(WrapFor::PrivateKey, &w), Err(UnwrapError));
        assert_eq!(
            WrappingKey::generate().unwrap(WrapFor::Psk(&peer), &w),
            Err(UnwrapError)
        );
        let p = k.wrap(WrapFor::PrivateKey, &secret(8));
        assert!(k
            .unwrap(WrapFor::PrivateKey, &p)
            .is_ok_and(|s| s == secret(8)));
    }

    #[test]
    fn the_secret_is_not_in_the_blob_and_blobs_differ() {
        let k = WrappingKey::from_bytes([1; 32]);
        let a = k.wrap(WrapFor::PrivateKey, &secret(0x5a));
        let b = k.wrap(WrapFor::PrivateKey, &secret(0x5a));
        assert_ne!(a, b, "a fresh nonce each time");
        assert!(!a.0.windows(8).any(|w| w == [0x5a; 8]));
    }

    #[test]
    fn tampered_or_short_blobs_are_refused() {
        let k = WrappingKey::generate();
        let mut w = k.wrap(WrapFor::PrivateKey, &secret(3));
        w.0[30] ^= 1;
        assert_eq!(k.unwrap(WrapFor::PrivateKey, &w), Err(UnwrapError));
        w.0.truncate(40);
        assert_eq!(k.unwrap(WrapFor::PrivateKey, &w), Err(UnwrapError));
        assert!(format!("{k:?}").contains("redacted"));
    }
}
