//! The one encode/decode pair for IPC messages between wgd's processes.
//!
//! Every message that crosses a process boundary (the per-channel enums in
//! [`crate::ipc`], sent by [`crate::channel::Channel`]) is turned into bytes
//! here and nowhere else, so the wire format (postcard) and its limits can be
//! changed or audited in one place.
//!
//! Decoding treats its input as hostile: the sending process may have been
//! compromised. [`decode`] rejects anything over [`MAX_MESSAGE`], truncated
//! input, unknown enum variants and trailing bytes, and never panics; the
//! caller is expected to treat any error as a dead peer.
//!
//! Encoded messages may carry secrets (session keys; on the parent-to-crypto
//! channel the static private key and PSKs), so [`encode`] returns a
//! [`Zeroizing`] buffer that wipes itself when dropped. It is allocated at
//! its exact final size up front, because a `Vec` that grows while being
//! written leaves unwiped copies of its earlier contents in freed memory.

use serde::de::DeserializeOwned;
use serde::Serialize;
use zeroize::Zeroizing;

/// Largest encoded IPC message, in bytes. Larger messages cannot be encoded,
/// and a larger datagram is an error on receipt.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why a message could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The encoding is (or would be) longer than the limit.
    #[error("IPC message of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The bytes are not a valid encoding of the expected type (truncated,
    /// unknown variant, invalid value), or the value could not be serialized.
    #[error("malformed IPC message: {0}")]
    Malformed(#[source] postcard::Error),
    /// A complete message was followed by this many unexpected bytes.
    #[error("IPC message followed by {0} trailing bytes")]
    TrailingBytes(usize),
}

/// Encodes `msg`, failing if the encoding would exceed [`MAX_MESSAGE`].
///
/// The result wipes itself on drop; see the module documentation.
pub fn encode<T: Serialize + ?Sized>(msg: &T) -> Result<Zeroizing<Vec<u8>>, CodecError> {
    // First pass only measures, so that the output buffer is allocated once
    // at its final size and never reallocated (see the module docs).
    let len =
        postcard::serialize_with_flavor(msg, Sink::counter()).map_err(CodecError::Malformed)?;
    if len > MAX_MESSAGE {
        return Err(CodecError::TooLarge {
            len,
            max: MAX_MESSAGE,
        });
    }
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    let written = postcard::serialize_with_flavor(msg, Sink::writer(&mut out))
        .map_err(CodecError::Malformed)?;
    // A `Serialize` impl whose output changes between two calls could make
    // the passes disagree; the writer refuses to grow, so all we can do here
    // is notice.
    if written != len {
        return Err(CodecError::Malformed(postcard::Error::SerializeBufferFull));
    }
    Ok(out)
}

/// The length `msg` encodes to, without encoding it anywhere; for
/// [`crate::batch`], which keeps each message under the limit.
pub fn encoded_len<T: Serialize + ?Sized>(msg: &T) -> Result<usize, CodecError> {
    postcard::serialize_with_flavor(msg, Sink::counter()).map_err(CodecError::Malformed)
}

/// Decodes exactly one `T` from `bytes`.
///
/// Fails on input longer than [`MAX_MESSAGE`], truncated or otherwise
/// malformed input, and bytes left over after the message. Never panics.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE,
        });
    }
    // `postcard::from_bytes` silently ignores leftovers; a message with extra
    // bytes is not the message the sender meant, so it is rejected.
    let (msg, rest) = postcard::take_from_bytes(bytes).map_err(CodecError::Malformed)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes(rest.len()));
    }
    Ok(msg)
}

/// Postcard output flavor that either only counts bytes (no buffer) or
/// writes into a pre-sized `Vec` without ever growing it.
struct Sink<'a> {
    out: Option<&'a mut Vec<u8>>,
    len: usize,
}

impl<'a> Sink<'a> {
    fn counter() -> Self {
        Sink { out: None, len: 0 }
    }

    fn writer(out: &'a mut Vec<u8>) -> Self {
        Sink {
            out: Some(out),
            len: 0,
        }
    }
}

impl postcard::ser_flavors::Flavor for Sink<'_> {
    type Output = usize;

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        if let Some(out) = self.out.as_deref_mut() {
            if out.capacity() - out.len() < data.len() {
                return Err(postcard::Error::SerializeBufferFull);
            }
            out.extend_from_slice(data);
        }
        self.len = self
            .len
            .checked_add(data.len())
            .ok_or(postcard::Error::SerializeBufferFull)?;
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Sample {
        Unit,
        Newtype(u64),
        Tuple(i32, bool, Option<u16>),
        Struct {
            key: [u8; 32],
            name: String,
            data: Vec<u8>,
        },
        Nested(Vec<Inner>),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Inner {
        A,
        B { index: u32, counter: u64 },
    }

    fn samples() -> Vec<Sample> {
        vec![
            Sample::Unit,
            Sample::Newtype(0),
            Sample::Newtype(u64::MAX),
            Sample::Tuple(-7, true, Some(300)),
            Sample::Tuple(i32::MIN, false, None),
            Sample::Struct {
                key: [0xa5; 32],
                name: "wg0".into(),
                data: (0..=255).collect(),
            },
            Sample::Nested(vec![
                Inner::A,
                Inner::B {
                    index: 0xdead_beef,
                    counter: 1 << 40,
                },
            ]),
        ]
    }

    /// xorshift64: deterministic test randomness without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
    }

    #[test]
    fn codec_round_trip() {
        for sample in samples() {
            let bytes = encode(&sample).unwrap();
            assert_eq!(bytes.len(), bytes.capacity(), "exactly sized buffer");
            let back: Sample = decode(&bytes).unwrap();
            assert_eq!(back, sample);
        }
    }

    #[test]
    fn codec_truncated_input_is_error() {
        for sample in samples() {
            let bytes = encode(&sample).unwrap();
            for cut in 0..bytes.len() {
                let res = decode::<Sample>(&bytes[..cut]);
                assert!(
                    matches!(res, Err(CodecError::Malformed(_))),
                    "{sample:?} cut at {cut}: {res:?}"
                );
            }
        }
    }

    #[test]
    fn codec_trailing_bytes_rejected() {
        for sample in samples() {
            let mut bytes = encode(&sample).unwrap().to_vec();
            bytes.push(0);
            assert!(matches!(
                decode::<Sample>(&bytes),
                Err(CodecError::TrailingBytes(1))
            ));
        }
    }

    #[test]
    fn codec_unknown_variant_rejected() {
        assert!(matches!(
            decode::<Sample>(&[99]),
            Err(CodecError::Malformed(_))
        ));
        // Known outer variant, unknown inner one.
        assert!(matches!(
            decode::<Sample>(&[4, 1, 7]),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn codec_oversized_rejected() {
        // A varint length prefix of 65533 takes three bytes: exactly the limit.
        let fits = vec![7u8; MAX_MESSAGE - 3];
        let bytes = encode(&fits).unwrap();
        assert_eq!(bytes.len(), MAX_MESSAGE);
        assert_eq!(decode::<Vec<u8>>(&bytes).unwrap(), fits);

        let too_big = vec![7u8; MAX_MESSAGE - 2];
        match encode(&too_big) {
            Err(CodecError::TooLarge { len, max }) => {
                assert_eq!(len, MAX_MESSAGE + 1);
                assert_eq!(max, MAX_MESSAGE);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }

        let mut input = encode(&too_big[..MAX_MESSAGE - 3]).unwrap().to_vec();
        input.push(0);
        assert!(matches!(
            decode::<Vec<u8>>(&input),
            Err(CodecError::TooLarge { len, .. }) if len == MAX_MESSAGE + 1
        ));
    }

    #[test]
    fn codec_random_garbage_never_panics() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut ok = 0;
        for i in 0..5000 {
            // Mostly short strings, where valid prefixes are likely, and
            // some long ones to reach deep into nested lengths.
            let len = if i % 50 == 0 {
                (rng.next() % 4096) as usize
            } else {
                (rng.next() % 48) as usize
            };
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            // Bias the first byte towards valid variants to get past the tag.
            if let Some(first) = bytes.first_mut() {
                *first %= 6;
            }
            if decode::<Sample>(&bytes).is_ok() {
                ok += 1;
            }
            let _ = decode::<Vec<Inner>>(&bytes);
            let _ = decode::<String>(&bytes);
        }
        // Some short inputs are valid messages; the point is no panic.
        assert!(ok > 0);
    }
}
