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
//! It also carries the precomputed static-static DH. The `ss` of Noise
//! IK, X25519(our static key, the peer's static key), is the same for every
//! handshake with a peer, so the key store keeps it per peer
//! ([`StaticShared`]), as Linux (`precomputed_static_static`), OpenBSD
//! (`r_ss`) and boringtun (`static_shared`) do: a handshake then costs
//! three variable-base X25519 operations instead of four. snow computes
//! `ss` itself, through this DH, so the DH of our static key answers that
//! one question from the key store's table ([`StaticSharedLookup`]), and
//! when the value is not there yet computes it and hands it to the table.
//!
//! Only the crypto role uses this module.

use std::fmt;
use std::sync::Arc;

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// A peer's precomputed static-static DH: X25519(our static private key,
/// the peer's static public key), or not computed yet. An all-zero value
/// is a result that is not contributory (the peer's key is a low-order
/// point): such a peer's handshakes are refused, in both directions, as
/// they were when `ss` was computed each time (and as Linux refuses them).
/// Zeroized on drop, redacted in `Debug`, never leaves the crypto role.
/// 33 bytes: the flag fits in the padding of the key store's peer entry.
pub(crate) struct StaticShared {
    value: [u8; 32],
    known: bool,
}

impl StaticShared {
    /// Not computed (yet): the DH computes it when a handshake needs it.
    pub(crate) const UNKNOWN: StaticShared = StaticShared {
        value: [0; 32],
        known: false,
    };

    /// X25519(`ours`, `theirs`), or all zeros for a non-contributory result.
    pub(crate) fn compute(ours: &StaticSecret, theirs: &[u8; 32]) -> Self {
        let shared = ours.diffie_hellman(&PublicKey::from(*theirs));
        StaticShared::from_result(shared.was_contributory(), shared.as_bytes())
    }

    fn from_result(contributory: bool, value: &[u8; 32]) -> Self {
        StaticShared {
            value: if contributory { *value } else { [0; 32] },
            known: true,
        }
    }

    pub(crate) fn is_known(&self) -> bool {
        self.known
    }

    /// `None` if not computed; else the value snow mixes in, or `None`
    /// inside for a peer that is refused.
    pub(crate) fn get(&self) -> Option<Option<Zeroizing<[u8; 32]>>> {
        self.known
            .then(|| (self.value != [0; 32]).then(|| Zeroizing::new(self.value)))
    }
}

impl Drop for StaticShared {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

impl fmt::Debug for StaticShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StaticShared(<redacted>)")
    }
}

/// Where the DH of our static key finds a peer's [`StaticShared`]: the key
/// store's peer table. On the responder's side snow learns the peer's
/// static key only in the middle of reading the initiation, right before
/// it asks for `ss`, so the DH must be able to look it up by that key.
pub(crate) trait StaticSharedLookup: Send + Sync {
    /// `Some(Some(ss))` for a configured peer, `Some(None)` for a
    /// configured peer whose handshakes are refused (low-order key),
    /// `None` when `peer` is not configured, its value is not computed
    /// yet (or the table is busy): then the DH computes the value itself.
    fn static_shared(&self, peer: &[u8; 32]) -> Option<Option<Zeroizing<[u8; 32]>>>;

    /// Keeps a value the DH computed, if `peer` is a configured peer.
    fn remember(&self, peer: &[u8; 32], value: StaticShared);
}

/// The precomputed values of the key store, for the DH of one static key.
#[derive(Clone)]
pub(crate) struct Precomputed {
    /// The public key of the static key the values were computed with:
    /// only a DH holding that key may use them (snow resolves the
    /// ephemeral's DH from the same resolver).
    pub(crate) local_public: [u8; 32],
    pub(crate) table: Arc<dyn StaticSharedLookup>,
}

/// X25519 whose private half lives in a zeroizing `StaticSecret`, so the
/// copy of the static key that snow asks its DH to hold is wiped when the
/// handshake state is dropped.
pub(crate) struct ContributoryX25519 {
    secret: StaticSecret,
    public: [u8; 32],
    precomputed: Option<Precomputed>,
}

impl Default for ContributoryX25519 {
    fn default() -> Self {
        // No key yet: snow sets one (`set`, `generate`) before any use. The
        // public half of the zero key is not computed here: that is a
        // scalar multiplication per DH object, two per handshake, for a
        // value nobody reads.
        ContributoryX25519 {
            secret: StaticSecret::from([0u8; 32]),
            public: [0u8; 32],
            precomputed: None,
        }
    }
}

impl ContributoryX25519 {
    fn set_secret(&mut self, privkey: &[u8]) {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        // snow only ever passes priv_len() bytes; anything else leaves a
        // zero key, whose handshakes then fail authentication.
        if privkey.len() == 32 {
            k.copy_from_slice(privkey);
        }
        self.secret = StaticSecret::from(*k);
    }

    fn set_computing_public(&mut self, privkey: &[u8]) {
        self.set_secret(privkey);
        self.public = PublicKey::from(&self.secret).to_bytes();
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

    /// snow calls this for the static key only (ephemerals come from
    /// `generate`). With the key store's precomputed values, the static
    /// key's public half is known (`Precomputed::local_public`, made by
    /// the key store from the same key it hands snow), which saves a
    /// scalar multiplication per handshake.
    fn set(&mut self, privkey: &[u8]) {
        match self.precomputed.as_ref().map(|p| p.local_public) {
            Some(public) => {
                self.set_secret(privkey);
                self.public = public;
                debug_assert_eq!(
                    self.public,
                    PublicKey::from(&self.secret).to_bytes(),
                    "the key store hands snow the key of its public key"
                );
            }
            None => self.set_computing_public(privkey),
        }
    }

    fn generate(&mut self, rng: &mut dyn Random) -> Result<(), snow::Error> {
        let mut k = zeroize::Zeroizing::new([0u8; 32]);
        rng.try_fill_bytes(&mut k[..])?;
        self.set_computing_public(&k[..]);
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
        // Our static key with a configured peer's: the `ss` step, already
        // computed. (Only the static key's DH carries `precomputed`, and
        // the value is X25519(our key, `their`) whatever role `their`
        // plays in the handshake, so using it is never wrong.)
        if let Some(p) = &self.precomputed {
            if p.local_public == self.public {
                if let Some(found) = p.table.static_shared(&their) {
                    let ss = found.ok_or(snow::Error::Dh)?;
                    out[..32].copy_from_slice(&ss[..]);
                    return Ok(());
                }
            }
        }
        let shared = self.secret.diffie_hellman(&PublicKey::from(their));
        // Not computed yet (or not a peer: the table ignores those): the
        // next handshake with this peer will not have to.
        if let Some(p) = self.precomputed.as_ref() {
            if p.local_public == self.public {
                let value = StaticShared::from_result(shared.was_contributory(), shared.as_bytes());
                p.table.remember(&their, value);
            }
        }
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
    precomputed: Option<Precomputed>,
}

impl WgResolver {
    /// `precomputed`: the key store's static-static values for the static
    /// key this handshake uses.
    pub(crate) fn new(precomputed: Option<Precomputed>) -> Self {
        WgResolver {
            default: DefaultResolver,
            precomputed,
        }
    }
}

impl CryptoResolver for WgResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        self.default.resolve_rng()
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        match choice {
            DHChoice::Curve25519 => Some(Box::new(ContributoryX25519 {
                precomputed: self.precomputed.clone(),
                ..ContributoryX25519::default()
            })),
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

    struct One([u8; 32], Option<[u8; 32]>);
    impl StaticSharedLookup for One {
        fn static_shared(&self, peer: &[u8; 32]) -> Option<Option<Zeroizing<[u8; 32]>>> {
            (*peer == self.0).then(|| self.1.map(Zeroizing::new))
        }
        fn remember(&self, _: &[u8; 32], _: StaticShared) {}
    }

    #[test]
    fn precomputed_value_is_used_for_its_peer_only() {
        let mut a = ContributoryX25519::default();
        let mut b = ContributoryX25519::default();
        let mut c = ContributoryX25519::default();
        b.set(&[2; 32]);
        c.set(&[3; 32]);
        let peer: [u8; 32] = b.pubkey().try_into().expect("32 bytes");
        a.set(&[1; 32]);
        a.precomputed = Some(Precomputed {
            local_public: a.public,
            table: Arc::new(One(peer, Some([0x77; 32]))),
        });
        let mut out = [0u8; 32];
        a.dh(&peer, &mut out).expect("dh");
        assert_eq!(out, [0x77; 32], "the table's value, not a computation");
        // Any other key is computed.
        let (mut ac, mut ca) = ([0u8; 32], [0u8; 32]);
        a.dh(c.pubkey(), &mut ac).expect("dh");
        c.dh(a.pubkey(), &mut ca).expect("dh");
        assert_eq!(ac, ca);
        // A refused peer is refused.
        a.precomputed = Some(Precomputed {
            local_public: a.public,
            table: Arc::new(One(peer, None)),
        });
        assert!(a.dh(&peer, &mut out).is_err());
        // A DH holding another key (the ephemeral) ignores the table.
        a.set_computing_public(&[9; 32]);
        a.dh(&peer, &mut out).expect("dh");
        let mut back = [0u8; 32];
        b.dh(a.pubkey(), &mut back).expect("dh");
        assert_eq!(out, back);
    }

    #[test]
    fn static_shared_matches_x25519_and_refuses_low_order_keys() {
        let ours = StaticSecret::from([5; 32]);
        let theirs = StaticSecret::from([6; 32]);
        let their_public = PublicKey::from(&theirs).to_bytes();
        let ss = StaticShared::compute(&ours, &their_public);
        let expect = theirs.diffie_hellman(&PublicKey::from(&ours));
        assert_eq!(ss.get().flatten().as_deref(), Some(expect.as_bytes()));
        let refused = StaticShared::compute(&ours, &[0; 32]);
        assert!(refused.is_known() && refused.get() == Some(None));
        assert!(StaticShared::UNKNOWN.get().is_none());
        assert_eq!(format!("{ss:?}"), "StaticShared(<redacted>)");
    }
}
