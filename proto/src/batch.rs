//! Bounded batches: how a configuration of any size reaches a role in
//! messages that each stay under [`MAX_MESSAGE`].
//!
//! The parent streams the changes of a `set` request to each role as
//! [`Apply`] messages; [`Batcher`] decides where one message ends, by the
//! encoded size of what it holds, so 100,000 peers or a million allowed
//! IPs are simply more messages. Status travels the other way in pages of
//! at most [`STATUS_PAGE`] peers. The tests below show that no message of
//! any channel can exceed the limit, whatever the configuration: each
//! variant's worst case is built and measured, and random streams of
//! changes are cut into batches that all fit.
//!
//! [`Apply`]: crate::ipc::Apply
//! [`STATUS_PAGE`]: crate::ipc::STATUS_PAGE

use serde::Serialize;

use crate::codec::{self, MAX_MESSAGE};

/// Encoded bytes of changes one batch may hold: half the frame limit,
/// which leaves far more than the envelope (request id, enum tags, the
/// list's length) needs.
pub const BATCH_BYTES: usize = MAX_MESSAGE / 2;

/// Collects changes for one role and hands back a full batch whenever the
/// next change would not fit in the current one.
#[derive(Debug)]
pub struct Batcher<Op> {
    ops: Vec<Op>,
    bytes: usize,
}

impl<Op> Default for Batcher<Op> {
    fn default() -> Self {
        Batcher {
            ops: Vec::new(),
            bytes: 0,
        }
    }
}

impl<Op: Serialize> Batcher<Op> {
    /// Adds `op`. If it does not fit with what is already held, returns
    /// what was held, to be sent first (not committed); `op` then starts
    /// the next batch. A single change is bounded by its type (allowed
    /// IPs travel in chunks), far below [`BATCH_BYTES`].
    pub fn push(&mut self, op: Op) -> Option<Vec<Op>> {
        // A change that cannot be measured cannot be encoded either; count
        // it as a full batch so that the encoder reports the error.
        let len = codec::encoded_len(&op).unwrap_or(BATCH_BYTES);
        let full = (!self.ops.is_empty() && self.bytes + len > BATCH_BYTES).then(|| self.take());
        self.bytes += len;
        self.ops.push(op);
        full
    }

    /// Everything held, leaving the batcher empty.
    pub fn take(&mut self) -> Vec<Op> {
        self.bytes = 0;
        std::mem::take(&mut self.ops)
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

    use proptest::prelude::*;

    use super::*;
    use crate::codec::encode;
    use crate::ipc::*;
    use crate::keys::{
        HandshakeId, NoiseInitiation, NoiseResponse, PublicKey, SecretKey, SessionKey, SessionKeys,
        Tai64N,
    };
    use crate::wire;

    /// Room the channel's envelope takes beyond the message: a request id
    /// (a varint of at most 10 bytes) around the body.
    const ENVELOPE: usize = 10;

    fn fits<T: Serialize + std::fmt::Debug>(what: &str, m: &T) {
        let len = codec::encoded_len(m).expect("measurable");
        assert!(
            len + ENVELOPE <= MAX_MESSAGE,
            "{what}: {len} bytes + envelope over the limit of {MAX_MESSAGE}"
        );
        encode(m).expect("encodes under the limit");
    }

    fn pk() -> PublicKey {
        PublicKey([0xff; 32])
    }

    fn v6() -> IpAddr {
        IpAddr::V6(Ipv6Addr::new(
            0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff, 0xffff,
        ))
    }

    fn far() -> SocketAddr {
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(v6_bits()),
            u16::MAX,
            u32::MAX,
            u32::MAX,
        ))
    }

    fn v6_bits() -> u128 {
        u128::MAX
    }

    fn endpoint() -> Endpoint {
        Endpoint {
            addr: far(),
            src: Some(SourceAddr {
                ip: v6(),
                ifindex: u32::MAX,
            }),
        }
    }

    fn worst_aip() -> AllowedIp {
        AllowedIp {
            addr: v6(),
            cidr: u8::MAX,
        }
    }

    fn secret() -> SecretKey {
        SecretKey::from_bytes([0xff; 32])
    }

    fn wrapped() -> Wrapped {
        Wrapped(vec![0xff; WRAPPED_LEN])
    }

    /// The largest single change of each kind.
    fn worst_crypto_ops() -> Vec<CryptoOp> {
        vec![
            CryptoOp::SetPeer {
                peer: pk(),
                psk: Some(Secret::Plain(secret())),
            },
            CryptoOp::SetPeer {
                peer: pk(),
                psk: Some(Secret::Wrapped(wrapped())),
            },
            CryptoOp::RemovePeer(pk()),
            CryptoOp::RemoveAllPeers,
        ]
    }

    fn worst_handshake_ops() -> Vec<HandshakeOp> {
        vec![
            HandshakeOp::SetInterface {
                public_key: Some(pk()),
            },
            HandshakeOp::SetPeer {
                peer: pk(),
                persistent_keepalive: Some(u16::MAX),
            },
            HandshakeOp::RemovePeer(pk()),
            HandshakeOp::RemoveAllPeers,
        ]
    }

    fn worst_transport_ops() -> Vec<TransportOp> {
        vec![
            TransportOp::AddPeer(pk()),
            TransportOp::RemovePeer(pk()),
            TransportOp::RemoveAllPeers,
            TransportOp::SetEndpoint {
                peer: pk(),
                endpoint: far(),
            },
            TransportOp::AddAllowedIps {
                peer: pk(),
                ips: vec![worst_aip(); ALLOWED_IPS_CHUNK],
            },
            TransportOp::RemoveAllowedIps {
                peer: pk(),
                ips: vec![worst_aip(); ALLOWED_IPS_CHUNK],
            },
            TransportOp::ClearAllowedIps(pk()),
        ]
    }

    /// Exhaustive matches: a new variant does not compile until it has a
    /// worst case below.
    #[allow(dead_code, clippy::too_many_arguments)]
    fn covered(
        a: &ParentToCrypto,
        b: &CryptoToParent,
        c: &ParentToHandshake,
        d: &HandshakeToParent,
        e: &ParentToTransport,
        f: &TransportToParent,
        g: &HandshakeToCrypto,
        h: &CryptoToHandshake,
        i: &TransportToHandshake,
        j: &HandshakeToTransport,
    ) {
        use CryptoToHandshake as C2H;
        use HandshakeToCrypto as H2C;
        use HandshakeToTransport as H2T;
        use TransportToHandshake as T2H;
        match a {
            ParentToCrypto::SetPrivateKey(_) | ParentToCrypto::Apply(_) => {}
        }
        match b {
            CryptoToParent::PublicKey(..)
            | CryptoToParent::WrappedPsks(_)
            | CryptoToParent::Done
            | CryptoToParent::Refused(_) => {}
        }
        match c {
            ParentToHandshake::Apply(_)
            | ParentToHandshake::GetStatus(_)
            | ParentToHandshake::GetCounters => {}
        }
        match d {
            HandshakeToParent::Status(_)
            | HandshakeToParent::Counters(_)
            | HandshakeToParent::Done => {}
        }
        match e {
            ParentToTransport::Apply(_)
            | ParentToTransport::Start { .. }
            | ParentToTransport::NewSockets { .. }
            | ParentToTransport::GetStatus(_)
            | ParentToTransport::GetAllowedIps { .. }
            | ParentToTransport::GetCounters => {}
        }
        match f {
            TransportToParent::Status(_)
            | TransportToParent::AllowedIps { .. }
            | TransportToParent::Counters { .. }
            | TransportToParent::Done => {}
        }
        match g {
            H2C::CreateInitiation { .. }
            | H2C::AnswerInitiation { .. }
            | H2C::ConsumeResponse { .. }
            | H2C::Abandon { .. } => {}
        }
        match h {
            C2H::Initiation { .. }
            | C2H::Answered { .. }
            | C2H::ResponseConsumed(_)
            | C2H::Abandoned
            | C2H::Refused(_) => {}
        }
        match i {
            T2H::HandshakePacket { .. } | T2H::Activity { .. } | T2H::NeedHandshake { .. } => {}
        }
        match j {
            H2T::Send { .. }
            | H2T::InstallKeypair { .. }
            | H2T::HandshakeReceived { .. }
            | H2T::ClearEndpointSource { .. }
            | H2T::SendKeepalive { .. }
            | H2T::ExpireKeypairs { .. }
            | H2T::DropStaged { .. } => {}
        }
    }

    /// A full batch of one change, repeated, as the batcher cuts it.
    fn full_batch<Op: Serialize>(make: impl Fn() -> Op) -> Vec<Op> {
        let mut b = Batcher::default();
        for _ in 0..1_000_000 {
            if let Some(full) = b.push(make()) {
                return full;
            }
        }
        panic!("a batch never filled up")
    }

    #[test]
    fn every_message_of_every_channel_fits_whatever_the_configuration() {
        // parent ↔ crypto
        fits(
            "SetPrivateKey",
            &ParentToCrypto::SetPrivateKey(Some(Secret::Plain(secret()))),
        );
        // Each plain PSK of a full batch comes back wrapped in the reply.
        let plain = full_batch(|| CryptoOp::SetPeer {
            peer: pk(),
            psk: Some(Secret::Plain(secret())),
        });
        fits(
            "WrappedPsks",
            &CryptoToParent::WrappedPsks(plain.iter().map(|_| (pk(), Some(wrapped()))).collect()),
        );
        for n in 0..worst_crypto_ops().len() {
            let ops = full_batch(|| worst_crypto_ops().swap_remove(n));
            fits(
                "crypto batch",
                &ParentToCrypto::Apply(Apply { ops, commit: true }),
            );
        }
        fits(
            "PublicKey",
            &CryptoToParent::PublicKey(Some(pk()), Some(wrapped())),
        );
        fits("Refused", &CryptoToParent::Refused(CryptoError::Internal));

        // parent ↔ handshake
        for w in worst_handshake_ops() {
            let ops = full_batch(|| w.clone());
            fits(
                "handshake batch",
                &ParentToHandshake::Apply(Apply { ops, commit: true }),
            );
        }
        fits(
            "GetStatus",
            &ParentToHandshake::GetStatus(vec![pk(); STATUS_PAGE]),
        );
        fits(
            "handshake status page",
            &HandshakeToParent::Status(vec![
                HandshakeStatus {
                    peer: pk(),
                    last_handshake: Some((u64::MAX, u32::MAX)),
                    persistent_keepalive: Some(u16::MAX),
                };
                STATUS_PAGE
            ]),
        );
        let all = HandshakeCounters {
            malformed: u64::MAX,
            bad_mac1: u64::MAX,
            cookie_replies_sent: u64::MAX,
            rate_limited: u64::MAX,
            unknown_index: u64::MAX,
            rejected: u64::MAX,
            replayed_timestamp: u64::MAX,
            initiation_flood: u64::MAX,
        };
        fits("handshake counters", &HandshakeToParent::Counters(all));

        // parent ↔ transport
        for w in worst_transport_ops() {
            let ops = full_batch(|| w.clone());
            fits(
                "transport batch",
                &ParentToTransport::Apply(Apply { ops, commit: true }),
            );
        }
        fits("Start", &ParentToTransport::Start { v4: true, v6: true });
        fits(
            "GetStatus",
            &ParentToTransport::GetStatus(vec![pk(); STATUS_PAGE]),
        );
        // A page's allowed IPs are shared out up to one chunk in all.
        let mut page = vec![
            TransportStatus {
                peer: pk(),
                endpoint: Some(far()),
                rx_bytes: u64::MAX,
                tx_bytes: u64::MAX,
                allowed_ips: Vec::new(),
                more_ips: Some(IpCursor(Some(u32::MAX))),
            };
            STATUS_PAGE
        ];
        page[0].allowed_ips = vec![worst_aip(); ALLOWED_IPS_CHUNK];
        fits("transport status page", &TransportToParent::Status(page));
        fits(
            "GetAllowedIps",
            &ParentToTransport::GetAllowedIps {
                peer: pk(),
                from: IpCursor(Some(u32::MAX)),
            },
        );
        fits(
            "allowed IPs chunk",
            &TransportToParent::AllowedIps {
                ips: vec![worst_aip(); ALLOWED_IPS_CHUNK],
                more: Some(IpCursor(Some(u32::MAX))),
            },
        );
        let drops = DropCounters {
            malformed: u64::MAX,
            unknown_index: u64::MAX,
            replay: u64::MAX,
            auth_failed: u64::MAX,
            source_not_allowed: u64::MAX,
            no_route: u64::MAX,
            send_failed: u64::MAX,
            bad_order: u64::MAX,
            ratelimited: u64::MAX,
            handshake_busy: u64::MAX,
        };
        fits(
            "transport counters",
            &TransportToParent::Counters {
                drops,
                ipc_to_handshake: u64::MAX,
            },
        );

        // handshake ↔ crypto: fixed sizes.
        let id = HandshakeId(u64::MAX);
        fits(
            "ConsumeResponse",
            &HandshakeToCrypto::ConsumeResponse {
                id,
                noise: NoiseResponse([0xff; wire::NOISE_RESPONSE_LEN]),
            },
        );
        fits(
            "AnswerInitiation",
            &HandshakeToCrypto::AnswerInitiation {
                noise: NoiseInitiation([0xff; wire::NOISE_INITIATION_LEN]),
            },
        );
        fits(
            "Initiation",
            &CryptoToHandshake::Initiation {
                id,
                noise: NoiseInitiation([0xff; wire::NOISE_INITIATION_LEN]),
            },
        );
        let keys = || SessionKeys {
            send: SessionKey::from_bytes([0xff; 32]),
            recv: SessionKey::from_bytes([0xff; 32]),
        };
        fits(
            "Answered",
            &CryptoToHandshake::Answered {
                peer: pk(),
                timestamp: Tai64N([0xff; 12]),
                noise: NoiseResponse([0xff; wire::NOISE_RESPONSE_LEN]),
                keys: keys(),
            },
        );
        fits(
            "ResponseConsumed",
            &CryptoToHandshake::ResponseConsumed(keys()),
        );

        // transport ↔ handshake: the largest packets that can travel are
        // handshake messages, whose lengths `wire::classify` fixes.
        fits(
            "HandshakePacket",
            &TransportToHandshake::HandshakePacket {
                bytes: vec![0xff; wire::INITIATION_LEN],
                from: endpoint(),
            },
        );
        fits(
            "Send",
            &HandshakeToTransport::Send {
                to: Destination::Addr(endpoint()),
                bytes: vec![0xff; wire::INITIATION_LEN],
            },
        );
        fits(
            "InstallKeypair",
            &HandshakeToTransport::InstallKeypair {
                peer: pk(),
                local_index: u32::MAX,
                remote_index: u32::MAX,
                keys: SessionKeys {
                    send: SessionKey::from_bytes([0xff; 32]),
                    recv: SessionKey::from_bytes([0xff; 32]),
                },
                initiator: true,
            },
        );
        fits(
            "HandshakeReceived",
            &HandshakeToTransport::HandshakeReceived {
                peer: pk(),
                from: endpoint(),
                len: u32::MAX,
            },
        );
    }

    fn any_transport_op() -> impl Strategy<Value = TransportOp> {
        let key = any::<[u8; 32]>().prop_map(PublicKey);
        let ip = (any::<u128>(), any::<bool>(), 0u8..=128).prop_map(|(bits, v4, cidr)| {
            if v4 {
                AllowedIp {
                    addr: IpAddr::V4((bits as u32).into()),
                    cidr: cidr.min(32),
                }
            } else {
                AllowedIp {
                    addr: IpAddr::V6(bits.into()),
                    cidr,
                }
            }
        });
        prop_oneof![
            key.clone().prop_map(TransportOp::AddPeer),
            key.clone().prop_map(TransportOp::RemovePeer),
            (
                key.clone(),
                proptest::collection::vec(ip, 0..=ALLOWED_IPS_CHUNK)
            )
                .prop_map(|(peer, ips)| TransportOp::AddAllowedIps { peer, ips }),
            (key, any::<u16>()).prop_map(|(peer, port)| TransportOp::SetEndpoint {
                peer,
                endpoint: SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any stream of changes, cut by the batcher, gives messages that
        /// fit, and loses or reorders nothing.
        #[test]
        fn random_streams_cut_into_batches_that_fit(
            ops in proptest::collection::vec(any_transport_op(), 0..300)
        ) {
            let mut b = Batcher::default();
            let mut sent: Vec<TransportOp> = Vec::new();
            for op in ops.clone() {
                if let Some(full) = b.push(op) {
                    let m = ParentToTransport::Apply(Apply { ops: full, commit: false });
                    let len = codec::encoded_len(&m).expect("measurable");
                    prop_assert!(len + ENVELOPE <= MAX_MESSAGE, "{} bytes", len);
                    let ParentToTransport::Apply(a) = m else { unreachable!() };
                    sent.extend(a.ops);
                }
            }
            let last = ParentToTransport::Apply(Apply { ops: b.take(), commit: true });
            prop_assert!(codec::encoded_len(&last).expect("measurable") + ENVELOPE <= MAX_MESSAGE);
            let ParentToTransport::Apply(a) = last else { unreachable!() };
            sent.extend(a.ops);
            prop_assert_eq!(sent, ops);
        }
    }
}
