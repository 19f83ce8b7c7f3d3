//! The data-path AEAD: the one seal/open pair of type-4 data messages.
//!
//! The transport role seals every packet it reads from the tun device and
//! opens every data message it reads from UDP with a [`DataKey`], through
//! [`crate::data`]; nothing else in the process encrypts. The cipher is
//! ChaCha20-Poly1305 (RFC 8439) with WireGuard's nonce (four zero bytes,
//! then the 64-bit message counter little-endian), empty associated data,
//! and a detached 16-byte tag, so that a message is sealed in place where
//! it will be sent and opened in place where it was received.
//!
//! # Choice: ring
//!
//! This is the product's hot loop, so the implementation was chosen by a
//! side-by-side microbenchmark, `benches/aead.rs`, run on the target class
//! of machine (2-core KVM guest, AMD EPYC family 25 model 17, AVX2 and
//! AVX-512, shared with other builds), twice:
//!
//! ```text
//! cargo bench -p wg-transport --bench aead -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Median time per operation (run 1 / run 2), throughput as criterion
//! reports it (binary units: 1 GiB/s = 1.074 GB/s):
//!
//! | op    | bytes | RustCrypto 0.10     | ring 0.17          | ring, key per call | `DataKey` (ring)   |
//! |-------|------:|---------------------|--------------------|--------------------|--------------------|
//! | seal  |    64 | 1.603 / 1.589 µs    | 178.0 / 176.3 ns   | 205.4 / 208.3 ns   | 181.6 / 180.9 ns   |
//! | seal  |  1420 | 2.560 / 2.572 µs    | 737.1 / 742.0 ns   | 765.0 / 764.6 ns   | 746.7 / 746.2 ns   |
//! | seal  | 65535 | 41.92 / 42.03 µs    | 25.44 / 24.91 µs   | 24.83 / 25.11 µs   | 24.65 / 26.82 µs   |
//! | open  |    64 | 1.564 / 1.604 µs    | 176.0 / 183.3 ns   | 212.9 / 236.3 ns   | 183.2 / 201.7 ns   |
//! | open  |  1420 | 2.564 / 2.570 µs    | 694.0 / 699.6 ns   | 726.9 / 726.3 ns   | 709.1 / 697.0 ns   |
//! | open  | 65535 | 42.07 / 41.82 µs    | 24.39 / 24.52 µs   | 24.56 / 24.90 µs   | 24.41 / 24.55 µs   |
//!
//! Throughput: at 1420 bytes RustCrypto seals at 0.52 GiB/s and ring at
//! 1.78-1.79 GiB/s (open: 0.52 against 1.89-1.91 GiB/s); at 65535 bytes
//! 1.45 against 2.40-2.48 GiB/s (open 1.45-1.46 against 2.49-2.50); at 64
//! bytes 38 MiB/s against 343-346 MiB/s. RustCrypto pays about 1.5 µs per
//! message whatever its size (its runtime-detected AVX2 Poly1305 and
//! ChaCha20 set up per message), which is what sinks it at MTU size.
//!
//! For reference only (not the default build: the binary must run on any
//! x86-64), RustCrypto built with `-C target-cpu=native`, twice, into a
//! separate target directory so as not to rebuild the shared one:
//!
//! ```text
//! RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=/tmp/wgt-native-target \
//!   cargo bench -p wg-transport --bench aead -- --warm-up-time 1 --measurement-time 3 rustcrypto
//! ```
//!
//! seal 64 B 374.6 / 375.4 ns, 1420 B 1.263 / 1.273 µs (1.05 / 1.04 GiB/s),
//! 65535 B 36.63 / 36.92 µs (1.67 / 1.65 GiB/s); open 64 B 392.2 / 393.9 ns,
//! 1420 B 1.297 / 1.320 µs (1.02 / 1.00 GiB/s), 65535 B 36.75 / 41.60 µs.
//! Even so ring is 1.7x faster at MTU size and 2x at 64 bytes.
//!
//! So the data path uses ring, 3.4x faster than RustCrypto at 1420 bytes
//! and 8.8x at 64. RustCrypto stays in use elsewhere (cookies, and the
//! unit tests below, where it is the independent oracle ring is checked
//! against).
//!
//! # Zeroizing ring's key
//!
//! ring does not zeroize its keys. Two sound ways were measured:
//! building the ring key from a zeroizing copy of the raw key on every
//! call ("key per call": +30-50 ns per message, 15-25 % at 64 bytes, 3-5 %
//! at 1420, and it leaves a fresh copy of the key on the stack each time),
//! or keeping one ring key and overwriting it with zeros on drop
//! (`DataKey`, within noise of bare ring). `DataKey` does the latter: the
//! ring key lives in a `Box<MaybeUninit<LessSafeKey>>`. `MaybeUninit` has
//! no validity invariant, so writing zeros over all its bytes (the
//! `zeroize` crate's volatile write) is sound whatever `LessSafeKey`
//! contains, and `LessSafeKey` owns no heap memory and has no `Drop`, so
//! not running its destructor leaks nothing. The box keeps the key at one
//! address for the keypair's life, so moving a `DataKey` between slots
//! moves a pointer and leaves no stale copy of the key behind. What this
//! cannot reach, as with any Rust or C implementation, are the transient
//! copies made on the stack while the key is built and inside ring's
//! assembly.

use std::fmt;
use std::mem::MaybeUninit;

use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroize;

/// Length of the Poly1305 tag that follows every data message's ciphertext.
pub const TAG_LEN: usize = 16;

/// Opening failed: the tag did not authenticate the ciphertext under this
/// key and counter, or sealing was asked for more than the cipher allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("data-path AEAD failed")]
pub struct AeadError;

/// One direction's ChaCha20-Poly1305 session key.
///
/// Zeroized on drop; not `Clone`, so the key exists once; `Debug` prints no
/// key material.
pub struct DataKey {
    /// Always initialised while the `DataKey` exists; zeroed in `drop`
    /// (see the module documentation for why `MaybeUninit`).
    key: Box<MaybeUninit<LessSafeKey>>,
}

impl DataKey {
    /// Sets up a key from the 32 bytes the handshake derived.
    pub fn new(key: &[u8; 32]) -> Self {
        let unbound = match UnboundKey::new(&CHACHA20_POLY1305, key) {
            Ok(k) => k,
            Err(_) => unreachable!("CHACHA20_POLY1305 takes a 32-byte key"),
        };
        let mut boxed = Box::new_uninit();
        boxed.write(LessSafeKey::new(unbound));
        Self { key: boxed }
    }

    fn ring_key(&self) -> &LessSafeKey {
        // SAFETY: `new` initialises the box before anyone can hold a
        // `DataKey`, and it is only overwritten (with zeros) in `drop`,
        // after which no method can be called.
        unsafe { self.key.assume_init_ref() }
    }

    /// Encrypts `buf` in place under `counter` and writes the tag.
    ///
    /// The caller guarantees a counter is never used twice with this key
    /// (the send counter of [`crate::keypair::Keypair`]). Fails only for a
    /// buffer beyond ring's limit of 256 GiB, never for a datagram.
    #[inline]
    pub fn seal_in_place(
        &self,
        counter: u64,
        buf: &mut [u8],
        tag: &mut [u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let t = self
            .ring_key()
            .seal_in_place_separate_tag(nonce(counter), Aad::empty(), buf)
            .map_err(|_| AeadError)?;
        tag.copy_from_slice(t.as_ref());
        Ok(())
    }

    /// Authenticates and decrypts `buf` in place and returns the plaintext
    /// (all of `buf`). On failure `buf` holds unspecified bytes, which the
    /// caller drops.
    #[inline]
    pub fn open_in_place<'a>(
        &self,
        counter: u64,
        buf: &'a mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<&'a mut [u8], AeadError> {
        self.ring_key()
            .open_in_place_separate_tag(nonce(counter), Aad::empty(), Tag::from(*tag), buf, 0..)
            .map_err(|_| AeadError)
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.key.zeroize();
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::AeadInPlace;
    use chacha20poly1305::{ChaCha20Poly1305, KeyInit};

    const KEY: [u8; 32] = [
        0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a, 0x8b, 0x8c, 0x8d, 0x8e,
        0x8f, 0x90, 0x91, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0x9b, 0x9c, 0x9d,
        0x9e, 0x9f,
    ];
    const COUNTERS: [u64; 5] = [0, 1, 1 << 32, u64::MAX - (1 << 13) - 1, u64::MAX];
    const SIZES: [usize; 8] = [0, 1, 15, 16, 17, 64, 1420, 65535];

    fn wg_nonce(counter: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&counter.to_le_bytes());
        n
    }

    fn message(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i * 31 + 7) as u8).collect()
    }

    /// ring behind `DataKey` and RustCrypto, an independent implementation,
    /// must agree byte for byte in both directions, with WireGuard's nonce.
    #[test]
    fn interoperates_with_rustcrypto() {
        let dk = DataKey::new(&KEY);
        let rc = ChaCha20Poly1305::new(&KEY.into());
        for size in SIZES {
            for counter in COUNTERS {
                let pt = message(size);
                let mut ours = pt.clone();
                let mut tag = [0u8; TAG_LEN];
                assert_eq!(dk.seal_in_place(counter, &mut ours, &mut tag), Ok(()));

                let mut theirs = pt.clone();
                let their_tag = rc
                    .encrypt_in_place_detached(&wg_nonce(counter).into(), &[], &mut theirs)
                    .map_err(|_| AeadError);
                assert_eq!(their_tag.map(<[u8; 16]>::from), Ok(tag));
                assert_eq!(ours, theirs, "size {size} counter {counter}");

                let opened = dk
                    .open_in_place(counter, &mut theirs, &tag)
                    .map(|p| p.to_vec());
                assert_eq!(opened, Ok(pt.clone()));
                let back = rc.decrypt_in_place_detached(
                    &wg_nonce(counter).into(),
                    &[],
                    &mut ours,
                    &tag.into(),
                );
                assert!(back.is_ok());
                assert_eq!(ours, pt);
            }
        }
    }

    #[test]
    fn open_rejects_tampering_wrong_counter_and_wrong_key() {
        let dk = DataKey::new(&KEY);
        let pt = message(100);
        let mut ct = pt.clone();
        let mut tag = [0u8; TAG_LEN];
        assert_eq!(dk.seal_in_place(42, &mut ct, &mut tag), Ok(()));

        let mut bad = ct.clone();
        bad[50] ^= 0x80;
        assert_eq!(dk.open_in_place(42, &mut bad, &tag).err(), Some(AeadError));
        let mut bad_tag = tag;
        bad_tag[15] ^= 1;
        assert_eq!(
            dk.open_in_place(42, &mut ct.clone(), &bad_tag).err(),
            Some(AeadError)
        );
        assert_eq!(
            dk.open_in_place(43, &mut ct.clone(), &tag).err(),
            Some(AeadError)
        );
        let other = DataKey::new(&[0u8; 32]);
        assert_eq!(
            other.open_in_place(42, &mut ct.clone(), &tag).err(),
            Some(AeadError)
        );
        assert_eq!(
            dk.open_in_place(42, &mut ct, &tag).map(|p| p.to_vec()),
            Ok(pt)
        );
    }

    #[test]
    fn debug_is_redacted() {
        assert_eq!(format!("{:?}", DataKey::new(&KEY)), "DataKey(<redacted>)");
    }
}
