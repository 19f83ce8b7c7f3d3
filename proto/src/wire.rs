//! The four WireGuard messages as they appear in UDP payloads.
//!
//! Parsing here is pure layout: it checks the type field and the exact
//! length and copies fields out, and it never panics on any input. Whether a
//! message is *authentic* (MAC1, MAC2, the Noise payloads, the data AEAD) is
//! decided elsewhere: MACs and cookies by the handshake role, the Noise
//! bytes by the crypto role, data by the transport role.
//!
//! Layouts (all integers little-endian; the first four bytes are the type
//! byte followed by three zero bytes, read as one `u32` as Linux and
//! wireguard-go do, so non-zero reserved bytes make an unknown type):
//!
//! ```text
//! initiation   (148) type=1 | sender u32 | ephemeral 32 | static 32+16 | timestamp 12+16 | mac1 16 | mac2 16
//! response      (92) type=2 | sender u32 | receiver u32 | ephemeral 32 | empty 0+16 | mac1 16 | mac2 16
//! cookie reply  (64) type=3 | receiver u32 | nonce 24 | cookie 16+16
//! data        (32..) type=4 | receiver u32 | counter u64 | ciphertext n+16   (n a multiple of 16)
//! ```

use thiserror::Error;

pub const MSG_INITIATION: u32 = 1;
pub const MSG_RESPONSE: u32 = 2;
pub const MSG_COOKIE_REPLY: u32 = 3;
pub const MSG_DATA: u32 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
pub const DATA_HEADER_LEN: usize = 16;
pub const AEAD_TAG_LEN: usize = 16;
/// A keepalive: header and the tag of an empty plaintext.
pub const DATA_MIN_LEN: usize = DATA_HEADER_LEN + AEAD_TAG_LEN;

/// The part of an initiation that the Noise computation produces and
/// consumes (ephemeral, encrypted static, encrypted timestamp).
pub const NOISE_INITIATION_LEN: usize = 108;
/// The part of a response that the Noise computation produces (ephemeral,
/// encrypted empty payload).
pub const NOISE_RESPONSE_LEN: usize = 48;

/// MAC1 covers the message up to (not including) the MAC1 field; MAC2
/// covers the message up to MAC2, MAC1 included.
pub const INITIATION_MAC1_OFFSET: usize = 116;
pub const INITIATION_MAC2_OFFSET: usize = 132;
pub const RESPONSE_MAC1_OFFSET: usize = 60;
pub const RESPONSE_MAC2_OFFSET: usize = 76;

pub const COOKIE_NONCE_LEN: usize = 24;
/// A 16-byte cookie sealed with a 16-byte tag.
pub const COOKIE_SEALED_LEN: usize = 32;

/// The whitepaper's protocol constants (§6.1), the one definition every
/// role uses. Tests may scale the timers through `TimerConfig` in the
/// handshake role; these are the protocol's values.
pub mod constants {
    use std::time::Duration;

    /// After this many messages sent under one keypair, a new handshake is
    /// due.
    pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
    /// A keypair never sends, and never accepts, a counter at or beyond
    /// this: 2^64 - 2^13 - 1, which keeps the nonce away from wrapping even
    /// with a full replay window of reordering in flight.
    pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
    /// The initiator of a session starts a new handshake when sending on a
    /// keypair this old.
    pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
    /// A keypair this old is unusable for sending and receiving.
    pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
    /// Handshake retries stop after this long.
    pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
    /// How long an initiation waits for its response before a retry.
    pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
    /// Upper bound of the random extra added to each retry.
    pub const REKEY_TIMEOUT_JITTER: Duration = Duration::from_millis(333);
    /// A peer that received data and sent nothing for this long sends a
    /// keepalive.
    pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
}

#[derive(Debug, Error, PartialEq, Eq, Clone, Copy)]
pub enum WireError {
    #[error("packet too short for a message type ({0} bytes)")]
    TooShort(usize),
    #[error("unknown message type {0:#x}")]
    UnknownType(u32),
    #[error("message type {kind} must be {expected} bytes, got {got}")]
    BadLength {
        kind: u32,
        expected: usize,
        got: usize,
    },
    #[error("data message of {0} bytes is shorter than a keepalive")]
    DataTooShort(usize),
}

/// Which of the four messages a datagram claims to be, after a length check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Initiation,
    Response,
    CookieReply,
    Data,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn array_at<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// Classifies a datagram by its type field and checks that its length is
/// exactly right for that type. This is the transport role's one look at a
/// packet before it routes it: types 1–3 go to the handshake role, type 4
/// is decrypted in place.
pub fn classify(packet: &[u8]) -> Result<MessageType, WireError> {
    if packet.len() < 4 {
        return Err(WireError::TooShort(packet.len()));
    }
    let kind = u32_at(packet, 0);
    let (t, expected) = match kind {
        MSG_INITIATION => (MessageType::Initiation, INITIATION_LEN),
        MSG_RESPONSE => (MessageType::Response, RESPONSE_LEN),
        MSG_COOKIE_REPLY => (MessageType::CookieReply, COOKIE_REPLY_LEN),
        MSG_DATA => {
            return if packet.len() < DATA_MIN_LEN {
                Err(WireError::DataTooShort(packet.len()))
            } else {
                Ok(MessageType::Data)
            };
        }
        other => return Err(WireError::UnknownType(other)),
    };
    if packet.len() != expected {
        return Err(WireError::BadLength {
            kind,
            expected,
            got: packet.len(),
        });
    }
    Ok(t)
}

fn expect(packet: &[u8], kind: u32, len: usize) -> Result<(), WireError> {
    if packet.len() < 4 {
        return Err(WireError::TooShort(packet.len()));
    }
    let got = u32_at(packet, 0);
    if got != kind {
        return Err(WireError::UnknownType(got));
    }
    if packet.len() != len {
        return Err(WireError::BadLength {
            kind,
            expected: len,
            got: packet.len(),
        });
    }
    Ok(())
}

/// Handshake initiation (type 1).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Initiation {
    pub sender: u32,
    pub noise: [u8; NOISE_INITIATION_LEN],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Initiation {
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        expect(packet, MSG_INITIATION, INITIATION_LEN)?;
        Ok(Initiation {
            sender: u32_at(packet, 4),
            noise: array_at(packet, 8),
            mac1: array_at(packet, INITIATION_MAC1_OFFSET),
            mac2: array_at(packet, INITIATION_MAC2_OFFSET),
        })
    }

    pub fn to_bytes(&self) -> [u8; INITIATION_LEN] {
        let mut b = [0u8; INITIATION_LEN];
        b[0..4].copy_from_slice(&MSG_INITIATION.to_le_bytes());
        b[4..8].copy_from_slice(&self.sender.to_le_bytes());
        b[8..INITIATION_MAC1_OFFSET].copy_from_slice(&self.noise);
        b[INITIATION_MAC1_OFFSET..INITIATION_MAC2_OFFSET].copy_from_slice(&self.mac1);
        b[INITIATION_MAC2_OFFSET..].copy_from_slice(&self.mac2);
        b
    }
}

/// Handshake response (type 2).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Response {
    pub sender: u32,
    pub receiver: u32,
    pub noise: [u8; NOISE_RESPONSE_LEN],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Response {
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        expect(packet, MSG_RESPONSE, RESPONSE_LEN)?;
        Ok(Response {
            sender: u32_at(packet, 4),
            receiver: u32_at(packet, 8),
            noise: array_at(packet, 12),
            mac1: array_at(packet, RESPONSE_MAC1_OFFSET),
            mac2: array_at(packet, RESPONSE_MAC2_OFFSET),
        })
    }

    pub fn to_bytes(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[0..4].copy_from_slice(&MSG_RESPONSE.to_le_bytes());
        b[4..8].copy_from_slice(&self.sender.to_le_bytes());
        b[8..12].copy_from_slice(&self.receiver.to_le_bytes());
        b[12..RESPONSE_MAC1_OFFSET].copy_from_slice(&self.noise);
        b[RESPONSE_MAC1_OFFSET..RESPONSE_MAC2_OFFSET].copy_from_slice(&self.mac1);
        b[RESPONSE_MAC2_OFFSET..].copy_from_slice(&self.mac2);
        b
    }
}

/// Cookie reply (type 3).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CookieReply {
    pub receiver: u32,
    pub nonce: [u8; COOKIE_NONCE_LEN],
    pub cookie: [u8; COOKIE_SEALED_LEN],
}

impl CookieReply {
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        expect(packet, MSG_COOKIE_REPLY, COOKIE_REPLY_LEN)?;
        Ok(CookieReply {
            receiver: u32_at(packet, 4),
            nonce: array_at(packet, 8),
            cookie: array_at(packet, 8 + COOKIE_NONCE_LEN),
        })
    }

    pub fn to_bytes(&self) -> [u8; COOKIE_REPLY_LEN] {
        let mut b = [0u8; COOKIE_REPLY_LEN];
        b[0..4].copy_from_slice(&MSG_COOKIE_REPLY.to_le_bytes());
        b[4..8].copy_from_slice(&self.receiver.to_le_bytes());
        b[8..8 + COOKIE_NONCE_LEN].copy_from_slice(&self.nonce);
        b[8 + COOKIE_NONCE_LEN..].copy_from_slice(&self.cookie);
        b
    }
}

/// The fixed header of a data message (type 4).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DataHeader {
    pub receiver: u32,
    pub counter: u64,
}

impl DataHeader {
    /// Parses the header of a data message; the payload is
    /// `&packet[DATA_HEADER_LEN..]`, at least a tag long.
    pub fn parse(packet: &[u8]) -> Result<Self, WireError> {
        if packet.len() < 4 {
            return Err(WireError::TooShort(packet.len()));
        }
        let kind = u32_at(packet, 0);
        if kind != MSG_DATA {
            return Err(WireError::UnknownType(kind));
        }
        if packet.len() < DATA_MIN_LEN {
            return Err(WireError::DataTooShort(packet.len()));
        }
        Ok(DataHeader {
            receiver: u32_at(packet, 4),
            counter: u64::from_le_bytes(array_at(packet, 8)),
        })
    }

    pub fn write(&self, out: &mut [u8; DATA_HEADER_LEN]) {
        out[0..4].copy_from_slice(&MSG_DATA.to_le_bytes());
        out[4..8].copy_from_slice(&self.receiver.to_le_bytes());
        out[8..16].copy_from_slice(&self.counter.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_initiation() -> Initiation {
        let mut noise = [0u8; NOISE_INITIATION_LEN];
        for (i, b) in noise.iter_mut().enumerate() {
            *b = i as u8;
        }
        Initiation {
            sender: 0xdead_beef,
            noise,
            mac1: [1; 16],
            mac2: [2; 16],
        }
    }

    #[test]
    fn initiation_round_trip() {
        let m = sample_initiation();
        let b = m.to_bytes();
        assert_eq!(&b[0..4], &[1, 0, 0, 0]);
        assert_eq!(classify(&b), Ok(MessageType::Initiation));
        assert_eq!(Initiation::parse(&b), Ok(m));
    }

    #[test]
    fn response_round_trip() {
        let m = Response {
            sender: 7,
            receiver: 9,
            noise: [3; NOISE_RESPONSE_LEN],
            mac1: [4; 16],
            mac2: [5; 16],
        };
        let b = m.to_bytes();
        assert_eq!(classify(&b), Ok(MessageType::Response));
        assert_eq!(Response::parse(&b), Ok(m));
    }

    #[test]
    fn cookie_round_trip() {
        let m = CookieReply {
            receiver: 11,
            nonce: [6; 24],
            cookie: [7; 32],
        };
        let b = m.to_bytes();
        assert_eq!(classify(&b), Ok(MessageType::CookieReply));
        assert_eq!(CookieReply::parse(&b), Ok(m));
    }

    #[test]
    fn data_header_round_trip() {
        let h = DataHeader {
            receiver: 0x0102_0304,
            counter: 0x1122_3344_5566_7788,
        };
        let mut b = [0u8; DATA_MIN_LEN];
        let mut head = [0u8; DATA_HEADER_LEN];
        h.write(&mut head);
        b[..DATA_HEADER_LEN].copy_from_slice(&head);
        assert_eq!(classify(&b), Ok(MessageType::Data));
        assert_eq!(DataHeader::parse(&b), Ok(h));
        assert_eq!(
            DataHeader::parse(&b[..DATA_MIN_LEN - 1]),
            Err(WireError::DataTooShort(31))
        );
    }

    #[test]
    fn truncated_and_oversized_are_errors() {
        let b = sample_initiation().to_bytes();
        for n in 0..b.len() {
            assert!(Initiation::parse(&b[..n]).is_err());
            assert!(classify(&b[..n]).is_err());
        }
        let mut long = b.to_vec();
        long.push(0);
        assert!(Initiation::parse(&long).is_err());
        assert!(classify(&long).is_err());
    }

    #[test]
    fn wrong_type_is_an_error() {
        let b = sample_initiation().to_bytes();
        assert!(matches!(
            Response::parse(&b),
            Err(WireError::UnknownType(1))
        ));
        let mut reserved = b;
        reserved[1] = 1;
        assert!(matches!(
            classify(&reserved),
            Err(WireError::UnknownType(_))
        ));
        let mut t = b;
        t[0] = 9;
        assert!(matches!(classify(&t), Err(WireError::UnknownType(9))));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut parsed = [0usize; 4];
        for len in 0..200usize {
            for round in 0..40 {
                // Every byte value, over every length: the whole input
                // space, not just the small values.
                let mut v: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                // Half the inputs get a valid type header, so that the
                // parsers behind the type check see random bodies too
                // (a random header is valid only once in 2^30).
                if round % 2 == 0 && len >= 4 {
                    let t = (next() % 4 + 1) as u32;
                    v[..4].copy_from_slice(&t.to_le_bytes());
                }
                let _ = classify(&v);
                parsed[0] += usize::from(Initiation::parse(&v).is_ok());
                parsed[1] += usize::from(Response::parse(&v).is_ok());
                parsed[2] += usize::from(CookieReply::parse(&v).is_ok());
                parsed[3] += usize::from(DataHeader::parse(&v).is_ok());
            }
        }
        // Random bodies of the right length do parse: the sweep reached
        // past every type and length check.
        assert!(parsed.iter().all(|&n| n > 0), "{parsed:?}");
    }
}
