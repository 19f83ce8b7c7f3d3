//! Key and session-material types that cross process boundaries.
//!
//! Three kinds of key material exist in wgd, with different rules:
//!
//! - [`PublicKey`]: public, printable, the identity of a peer everywhere.
//! - [`SecretKey`]: a static private key or a preshared key. It travels on
//!   exactly one channel, parent → crypto (see `ipc::ParentToCrypto`); no
//!   other message enum has a field of this type, so no other channel can
//!   carry one. Zeroized on drop, redacted in `Debug`, not `Clone`, and
//!   kept on the heap, so that moving one (into a request, a batch, a
//!   growing `Vec`) moves a pointer and leaves no copy of the key behind:
//!   the parent must keep no secret once crypto has it (issue 11).
//! - [`SessionKey`]: one direction of a finished handshake's transport
//!   keys, handed by the crypto role to the handshake role and on to the
//!   transport role. Ephemeral but still secret: zeroized and redacted.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::wire::{NOISE_INITIATION_LEN, NOISE_RESPONSE_LEN};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyParseError {
    #[error("key is not 32 bytes of base64")]
    Base64,
    #[error("key is not 64 hex digits")]
    Hex,
}

// The decoders write into the caller's buffer rather than return one: a
// returned array is moved, and a move leaves the moved-from copy on the
// stack without running its destructor, so a `Zeroizing` result would
// leave the key behind.

/// Decodes 44 characters of base64 into `k` (left zeroed on error).
fn decode_b64_into(s: &str, k: &mut [u8; 32]) -> Result<(), KeyParseError> {
    let s = s.trim();
    // 32 bytes are exactly 44 base64 characters with one '=' of padding.
    if s.len() != 44 {
        return Err(KeyParseError::Base64);
    }
    let mut out = Zeroizing::new([0u8; 33]);
    let n = B64
        .decode_slice(s, &mut out[..])
        .map_err(|_| KeyParseError::Base64)?;
    if n != 32 {
        return Err(KeyParseError::Base64);
    }
    k.copy_from_slice(&out[..32]);
    Ok(())
}

/// Decodes 64 hex digits into `k` (left partly written on error: the
/// caller wipes it).
fn decode_hex_into(s: &str, k: &mut [u8; 32]) -> Result<(), KeyParseError> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return Err(KeyParseError::Hex);
    }
    fn nibble(c: u8) -> Result<u8, KeyParseError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(KeyParseError::Hex),
        }
    }
    for (i, pair) in s.chunks_exact(2).enumerate() {
        k[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Ok(())
}

fn encode_hex(b: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(HEX[(x >> 4) as usize] as char);
        s.push(HEX[(x & 15) as usize] as char);
    }
    s
}

/// A Curve25519 public key: a peer's identity, or the interface's.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PublicKey(pub [u8; 32]);

impl PublicKey {
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        let mut k = PublicKey([0; 32]);
        decode_b64_into(s, &mut k.0)?;
        Ok(k)
    }
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        let mut k = PublicKey([0; 32]);
        decode_hex_into(s, &mut k.0)?;
        Ok(k)
    }
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }
    pub fn to_hex(&self) -> String {
        encode_hex(&self.0)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl PublicKey {
    /// The node address derived from this key, as in BMX7's wg_tun design:
    /// `fd77::/16` followed by the first 14 bytes of SHA-224 over the 32
    /// key bytes. Used by `wgctl addr` and `AutoAddress = true`.
    pub fn derived_address(&self) -> std::net::Ipv6Addr {
        use sha2::{Digest, Sha224};
        let digest = Sha224::digest(self.0);
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        a[1] = 0x77;
        a[2..].copy_from_slice(&digest[..14]);
        std::net::Ipv6Addr::from(a)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A static private key or a preshared key.
///
/// Only the parent (which reads it from configuration) and the crypto role
/// (which uses it) ever hold one. It is deliberately not `Clone` and has no
/// `Display`; `expose` exists for the crypto role's Noise computation.
///
/// The 32 bytes live in one heap block for the key's whole life, written
/// there by the decoders, and wiped when the key is dropped: moving a
/// `SecretKey` copies only the pointer. (An inline array would be copied
/// by every move — into a request, out of a parser, into a `Vec` that
/// later grows — and a moved-from copy is never wiped.) The serialized
/// form is the array's, as before.
#[derive(Serialize, Deserialize)]
pub struct SecretKey(Box<[u8; 32]>);

impl Zeroize for SecretKey {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl SecretKey {
    /// A key of these bytes; the argument (a copy the caller moved in) is
    /// wiped. The caller's own copy, if it kept one, is its business.
    pub fn from_bytes(mut b: [u8; 32]) -> Self {
        let mut k = SecretKey(Box::new([0; 32]));
        k.0.copy_from_slice(&b);
        b.zeroize();
        k
    }
    /// Decodes base64 text straight into the key's heap block.
    pub fn from_base64(s: &str) -> Result<Self, KeyParseError> {
        let mut k = SecretKey(Box::new([0; 32]));
        decode_b64_into(s, &mut k.0)?;
        Ok(k)
    }
    /// Decodes hex text straight into the key's heap block.
    pub fn from_hex(s: &str) -> Result<Self, KeyParseError> {
        let mut k = SecretKey(Box::new([0; 32]));
        decode_hex_into(s, &mut k.0)?;
        Ok(k)
    }
    /// The raw bytes. Callers: the crypto role only (and key generation in
    /// the CLI, which prints a freshly made key once, as `wg genkey` does).
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
    /// An all-zero key: the userspace API's way of saying "no key".
    pub fn is_zero(&self) -> bool {
        self.0.iter().fold(0u8, |a, b| a | b) == 0
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// Equality on secrets without an early exit, so a comparison does not
/// leak how many leading bytes matched.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for SecretKey {}

impl PartialEq for SessionKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}
impl Eq for SessionKey {}

/// One direction of the transport keys of a finished handshake.
#[derive(Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct SessionKey([u8; 32]);

impl SessionKey {
    pub fn from_bytes(mut b: [u8; 32]) -> Self {
        let k = SessionKey(b);
        b.zeroize();
        k
    }
    /// The raw bytes, for building the transport's AEAD key.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<redacted>)")
    }
}

/// The two transport keys of a finished handshake, from our point of view.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionKeys {
    pub send: SessionKey,
    pub recv: SessionKey,
}

/// Names one in-progress handshake inside the crypto role. Handed out by
/// crypto, never reused within one crypto process's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HandshakeId(pub u64);

/// A TAI64N timestamp as carried in an initiation: 8 bytes of seconds and
/// 4 of nanoseconds, big-endian, so byte order is time order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tai64N(pub [u8; 12]);

impl Tai64N {
    pub const ZERO: Tai64N = Tai64N([0; 12]);
}

/// Serde for byte arrays longer than serde's built-in 32: as one byte
/// string, with the length checked on the way in.
mod fixed_bytes {
    use serde::de::{Error, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    pub fn serialize<S: Serializer, const N: usize>(v: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        struct V<const N: usize>;
        impl<const N: usize> Visitor<'_> for V<N> {
            type Value = [u8; N];
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{N} bytes")
            }
            fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<[u8; N], E> {
                v.try_into().map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V::<N>)
    }
}

/// The Noise part of an initiation (ephemeral, sealed static, sealed
/// timestamp): what crypto makes and consumes, without indices or MACs.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NoiseInitiation(#[serde(with = "fixed_bytes")] pub [u8; NOISE_INITIATION_LEN]);

/// The Noise part of a response (ephemeral, sealed empty payload).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NoiseResponse(#[serde(with = "fixed_bytes")] pub [u8; NOISE_RESPONSE_LEN]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_hex_round_trip() {
        let k = PublicKey([0xab; 32]);
        assert_eq!(PublicKey::from_base64(&k.to_base64()), Ok(k));
        assert_eq!(PublicKey::from_hex(&k.to_hex()), Ok(k));
        assert_eq!(k.to_hex().len(), 64);
        assert!(PublicKey::from_base64("AAAA").is_err());
        assert!(PublicKey::from_hex(&"g".repeat(64)).is_err());
        // 44 characters that decode to 33 bytes are not a key.
        assert!(PublicKey::from_base64(&"A".repeat(44)).is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let s = SecretKey::from_bytes([7; 32]);
        let d = format!("{s:?}");
        assert!(!d.contains('7'), "{d}");
        let sk = SessionKeys {
            send: SessionKey::from_bytes([9; 32]),
            recv: SessionKey::from_bytes([9; 32]),
        };
        assert!(!format!("{sk:?}").contains('9'));
    }

    #[test]
    fn derived_address_vector() {
        // Independently: python3 -c "import hashlib; d=hashlib.sha224(bytes(range(32))).digest(); print(d[:14].hex())"
        let k = PublicKey(core::array::from_fn(|i| i as u8));
        let a = k.derived_address();
        assert_eq!(a.octets()[..2], [0xfd, 0x77]);
        let hex: String = a.octets()[2..].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, include_str!("../tests/data/sha224_0_31_first14.hex"));
    }

    #[test]
    fn zero_key_detected() {
        assert!(SecretKey::from_bytes([0; 32]).is_zero());
        assert!(!SecretKey::from_bytes([1; 32]).is_zero());
    }

    #[test]
    fn tai64n_orders_by_time() {
        let a = Tai64N([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9]);
        let b = Tai64N([0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
        assert!(a < b);
    }
}
