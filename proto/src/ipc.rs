//! The IPC vocabulary: one message enum per channel direction.
//!
//! What a channel may carry is written in the types: a process holding the
//! sending end of parent → transport can only ever write a
//! [`ParentToTransport`]. There is no transport ↔ crypto pair at all, so
//! nothing on the packet path can reach the key holder except through the
//! handshake role's narrow questions ([`HandshakeToCrypto`]).
//!
//! [`SecretKey`] (static key, PSK) appears in [`ParentToCrypto`] and nowhere
//! else (inside [`Secret`]): no reply enum can express a static secret.
//! What the key holder gives back for the parent to keep is a [`Wrapped`]
//! secret, sealed under a key the parent cannot read. Session keys appear in
//! [`CryptoToHandshake`] and [`HandshakeToTransport`], the route a finished
//! handshake's keys take to the data plane.
//!
//! Every message is encoded with [`crate::codec`] and sent one per datagram
//! with [`crate::channel::Channel`]. Each enum says here what kind of
//! traffic it is: a [`Request`] names the one enum that answers it (and
//! travels with an id its reply echoes), an [`Event`] is never answered.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::channel::sealed::Sealed;
use crate::channel::{Event, Request};
use crate::keys::{
    HandshakeId, NoiseInitiation, NoiseResponse, PublicKey, SecretKey, SessionKeys, Tai64N,
};

/// One allowed-IPs entry: a prefix routed to (and accepted from) a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllowedIp {
    pub addr: IpAddr,
    pub cidr: u8,
}

/// The local side of a peer's endpoint: the address a peer's packet
/// arrived at and the interface it came in on (`IP_PKTINFO` /
/// `IPV6_PKTINFO`). Replies to the peer go out from this address, as
/// Linux's per-peer source cache and wireguard-go's sticky sockets do, so
/// a multihomed host answers from the address the peer used (a NAT or a
/// stateful firewall in between drops anything else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceAddr {
    pub ip: IpAddr,
    /// The interface the packet came in on; used on send only for an
    /// IPv6 link-local source, whose address means nothing without it.
    pub ifindex: u32,
}

/// Where a peer is: its address, and the local address to reply from
/// (`None`: let routing choose, as for a configured endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(with = "socket_addr")]
    pub addr: SocketAddr,
    pub src: Option<SourceAddr>,
}

impl Endpoint {
    /// An endpoint with no remembered source (configured by the user).
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint { addr, src: None }
    }
}

/// A peer's address as it crosses a channel, IPv6 scope id included.
///
/// serde's own `SocketAddrV6` writes only the address and the port, so
/// the zone of a link-local endpoint (`Endpoint = [fe80::1%eth0]:51820`,
/// which the configuration and the userspace API both take) was lost on
/// its way to the transport, which then sent to an address with no
/// interface; and the source of a link-local peer's handshake came back
/// from the handshake role without its zone, unequal to the endpoint the
/// transport's order checks (`wg_transport::orders`) had recorded. The
/// flow label is not kept: nothing sets it.
mod socket_addr {
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    enum Repr {
        V4(Ipv4Addr, u16),
        V6(Ipv6Addr, u16, u32),
    }

    impl From<&SocketAddr> for Repr {
        fn from(a: &SocketAddr) -> Self {
            match a {
                SocketAddr::V4(a) => Repr::V4(*a.ip(), a.port()),
                SocketAddr::V6(a) => Repr::V6(*a.ip(), a.port(), a.scope_id()),
            }
        }
    }

    impl From<Repr> for SocketAddr {
        fn from(r: Repr) -> Self {
            match r {
                Repr::V4(ip, port) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
                Repr::V6(ip, port, scope) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope)),
            }
        }
    }

    pub fn serialize<S: Serializer>(a: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        Repr::from(a).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        Repr::deserialize(d).map(SocketAddr::from)
    }

    /// The same for an `Option<SocketAddr>`.
    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(a: &Option<SocketAddr>, s: S) -> Result<S::Ok, S::Error> {
            a.as_ref().map(Repr::from).serialize(s)
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<SocketAddr>, D::Error> {
            Ok(Option::<Repr>::deserialize(d)?.map(SocketAddr::from))
        }
    }
}

/// Why the crypto role refused a request. Deliberately coarse: the
/// handshake role needs to know only that a handshake failed, not which
/// step of the Noise computation did; the two policy refusals of an
/// initiation (replay, flood) are told apart so that the handshake role
/// counts them where it counts its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error, Serialize, Deserialize)]
pub enum CryptoError {
    #[error("no private key configured")]
    NoPrivateKey,
    #[error("peer is not configured")]
    UnknownPeer,
    /// No pending initiation of ours has this id (never created, already
    /// completed, abandoned or superseded).
    #[error("no such handshake")]
    UnknownHandshake,
    #[error("handshake message did not authenticate")]
    Rejected,
    #[error("internal crypto failure")]
    Internal,
    /// An initiation whose timestamp is not newer than the greatest
    /// consumed from its peer: a replay.
    #[error("initiation timestamp is not newer than the last one")]
    ReplayedTimestamp,
    /// An initiation from a peer whose last one was consumed too recently.
    #[error("too many initiations from this peer")]
    InitiationFlood,
}

// ---------------------------------------------------------------- parent ↔ crypto

/// A static secret on its way to the key holder: the key itself (from a
/// configuration file, a key file or a control request; the parent wipes
/// its copy once sent), or a [`Wrapped`] one the key holder gave out
/// earlier (a restart of the roles restoring the configuration).
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Secret {
    Plain(SecretKey),
    Wrapped(Wrapped),
}

/// A static secret sealed by the key holder under a wrapping key that
/// only the key holder can read (it lives in the kernel keyring, see
/// `wgd::keyring`): what the parent keeps so that a restarted crypto role
/// gets back secrets that were given inline, without the parent ever
/// holding them. Opaque to everyone but the crypto role, and bound there
/// to what it wraps (the private key, or one peer's PSK).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wrapped(pub Vec<u8>);

/// The length of a [`Wrapped`] secret: a 24-byte nonce, the 32-byte
/// secret sealed, a 16-byte tag (XChaCha20-Poly1305).
pub const WRAPPED_LEN: usize = 24 + 32 + 16;

impl std::fmt::Debug for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Wrapped({} bytes)", self.0.len())
    }
}

/// Configuration of the key holder. The only messages that carry static
/// secrets; the parent zeroizes its copy once sent.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToCrypto {
    /// Set (or with `None` remove) the static private key. All handshakes
    /// in progress are abandoned. Answered by [`CryptoToParent::PublicKey`].
    SetPrivateKey(Option<Secret>),
    /// Part of a configuration transaction; see [`Apply`].
    Apply(Apply<CryptoOp>),
}

/// One change to the key holder's peers.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CryptoOp {
    /// Add or update a peer; `psk: None` means no PSK (all zeros).
    SetPeer {
        peer: PublicKey,
        psk: Option<Secret>,
    },
    RemovePeer(PublicKey),
    RemoveAllPeers,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CryptoToParent {
    /// The public key of the static key now held (so the parent can show
    /// it and tell the handshake role, without ever seeing the secret),
    /// and, for a key that came [`Secret::Plain`], that key wrapped (`None`
    /// when the key holder has no wrapping key).
    PublicKey(Option<PublicKey>, Option<Wrapped>),
    /// An [`Apply`] message that set [`Secret::Plain`] PSKs: each of them
    /// wrapped, in order (`None` as above). Otherwise `Apply` is answered
    /// by [`CryptoToParent::Done`].
    WrappedPsks(Vec<(PublicKey, Option<Wrapped>)>),
    Done,
    Refused(CryptoError),
}

// ---------------------------------------------------------------- transactions

/// One message of a configuration transaction to a role: a batch of
/// changes, bounded in encoded size by [`crate::batch::Batcher`] so that
/// no configuration, however large, needs a message over the frame limit.
/// The role buffers the changes of every message until one arrives with
/// `commit`, then applies them all, in order, at once: a parent that dies
/// in the middle of a large `set` leaves no role with half of it applied.
/// Each message is answered by the role's `Done`, which paces the parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Apply<Op> {
    pub ops: Vec<Op>,
    pub commit: bool,
}

/// How many peers one status page asks about: a page's reply stays far
/// below the frame limit (checked by the tests of [`crate::batch`]).
pub const STATUS_PAGE: usize = 256;

// ---------------------------------------------------------------- handshake ↔ crypto

/// The handshake role's narrow questions to the key holder. Each is
/// answered by exactly one [`CryptoToHandshake`].
///
/// A handshake costs one question on each side: the key holder answers an
/// initiation with the response and the responder's session keys in one
/// step ([`HandshakeToCrypto::AnswerInitiation`]), and releases the
/// initiator's keys with the response that authenticates
/// ([`HandshakeToCrypto::ConsumeResponse`]). Keys are released only for a
/// handshake whose last message the key holder itself wrote or
/// authenticated, exactly once, and no question names keys to release:
/// there is no request a caller could repeat or send out of order to get
/// them again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeToCrypto {
    /// Start a handshake with a configured peer: answered by
    /// [`CryptoToHandshake::Initiation`].
    CreateInitiation { peer: PublicKey },
    /// Read a peer's initiation and, if the key holder's own rules allow it
    /// (a configured peer, a timestamp newer than any consumed from it, at
    /// most one per 20 ms per peer), answer it at once: answered by
    /// [`CryptoToHandshake::Answered`]. The handshake role asks only after
    /// its own checks that need no key (MAC1, and MAC2 or a cookie reply
    /// under load); its checks that need the sender's identity (timestamp
    /// and rate against its own records) come after, and if they refuse,
    /// it sends nothing and drops the keys.
    AnswerInitiation { noise: NoiseInitiation },
    /// The peer's response to our initiation `id`: answered by
    /// [`CryptoToHandshake::ResponseConsumed`] with the session keys if it
    /// authenticates; one that does not leaves the handshake in place.
    ConsumeResponse {
        id: HandshakeId,
        noise: NoiseResponse,
    },
    /// Forget our pending initiation `id` (timeout, peer removed).
    Abandon { id: HandshakeId },
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CryptoToHandshake {
    Initiation {
        id: HandshakeId,
        noise: NoiseInitiation,
    },
    /// An initiation answered: who sent it, its timestamp, the Noise part
    /// of the response, and the responder's session keys, which are final
    /// once the response is written. The key holder keeps nothing of the
    /// handshake.
    Answered {
        peer: PublicKey,
        timestamp: Tai64N,
        noise: NoiseResponse,
        keys: SessionKeys,
    },
    /// Our initiation's response authenticated: the handshake is finished
    /// and forgotten, and these are its session keys.
    ResponseConsumed(SessionKeys),
    Abandoned,
    Refused(CryptoError),
}

// ---------------------------------------------------------------- parent ↔ handshake

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToHandshake {
    /// Part of a configuration transaction; see [`Apply`].
    Apply(Apply<HandshakeOp>),
    /// What the role knows of these peers (at most [`STATUS_PAGE`]), in
    /// the order asked; unknown ones are left out.
    GetStatus(Vec<PublicKey>),
    /// The role's drop counters.
    GetCounters,
}

/// One change to the handshake role's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeOp {
    /// The interface's public key (for MAC1 checks and cookie replies), or
    /// `None` when the interface has no private key.
    SetInterface {
        public_key: Option<PublicKey>,
    },
    SetPeer {
        peer: PublicKey,
        persistent_keepalive: Option<u16>,
    },
    RemovePeer(PublicKey),
    RemoveAllPeers,
}

/// What the handshake role knows of one peer, for `show`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeStatus {
    pub peer: PublicKey,
    /// Wall-clock time of the last completed handshake, as (seconds,
    /// nanoseconds) since the Unix epoch.
    pub last_handshake: Option<(u64, u32)>,
    pub persistent_keepalive: Option<u16>,
}

/// Handshake packets the handshake role dropped or answered with a
/// cookie, by reason, since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandshakeCounters {
    pub malformed: u64,
    pub bad_mac1: u64,
    pub cookie_replies_sent: u64,
    pub rate_limited: u64,
    pub unknown_index: u64,
    pub rejected: u64,
    pub replayed_timestamp: u64,
    pub initiation_flood: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeToParent {
    Status(Vec<HandshakeStatus>),
    Counters(HandshakeCounters),
    Done,
}

// ---------------------------------------------------------------- parent ↔ transport

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ParentToTransport {
    /// Part of a configuration transaction; see [`Apply`].
    Apply(Apply<TransportOp>),
    /// The first message: the tun device, then the UDP sockets (IPv4
    /// first if present), as SCM_RIGHTS fds.
    Start { v4: bool, v6: bool },
    /// Replacement UDP sockets (a new listen port), IPv4 first if present.
    NewSockets { v4: bool, v6: bool },
    /// What the data plane knows of these peers (at most
    /// [`STATUS_PAGE`]), in the order asked; unknown ones are left out.
    GetStatus(Vec<PublicKey>),
    /// The next chunk of a peer's allowed IPs, from a cursor a status page
    /// or an earlier chunk gave.
    GetAllowedIps { peer: PublicKey, from: IpCursor },
    /// The data plane's drop and IPC counters.
    GetCounters,
}

/// Most prefixes one [`TransportOp::AddAllowedIps`] or
/// [`TransportOp::RemoveAllowedIps`] carries; a peer with more gets
/// several.
pub const ALLOWED_IPS_CHUNK: usize = 1024;

/// One change to the data plane's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportOp {
    AddPeer(PublicKey),
    RemovePeer(PublicKey),
    RemoveAllPeers,
    SetEndpoint {
        peer: PublicKey,
        #[serde(with = "socket_addr")]
        endpoint: SocketAddr,
    },
    /// Route these prefixes (at most [`ALLOWED_IPS_CHUNK`]) to the peer,
    /// taking each from any peer that had it.
    AddAllowedIps {
        peer: PublicKey,
        ips: Vec<AllowedIp>,
    },
    /// Stop routing these prefixes to the peer (those it has).
    RemoveAllowedIps {
        peer: PublicKey,
        ips: Vec<AllowedIp>,
    },
    ClearAllowedIps(PublicKey),
}

/// What the data plane knows of one peer, for `get`. A status page
/// carries at most [`ALLOWED_IPS_CHUNK`] allowed IPs for all its peers
/// together, oldest insertion first; a peer with more (or a page out of
/// room) has `more_ips`, from which the parent asks for the rest with
/// [`ParentToTransport::GetAllowedIps`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportStatus {
    pub peer: PublicKey,
    #[serde(with = "socket_addr::option")]
    pub endpoint: Option<SocketAddr>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub allowed_ips: Vec<AllowedIp>,
    pub more_ips: Option<IpCursor>,
}

/// Where the rest of a peer's allowed IPs starts: opaque to the parent,
/// valid until the next configuration change (the parent makes none
/// while it pages through one reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpCursor(pub Option<u32>);

/// Counters of packets the data plane dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropCounters {
    pub malformed: u64,
    pub unknown_index: u64,
    pub replay: u64,
    pub auth_failed: u64,
    pub source_not_allowed: u64,
    pub no_route: u64,
    /// Datagrams the kernel refused to send (unreachable, too big).
    pub send_failed: u64,
    /// Orders of the handshake role the transport refused: a datagram
    /// that is not a handshake message of its exact length, an
    /// initiation or response not to a configured peer, a cookie reply
    /// not to the source of a handshake packet the transport passed on, a
    /// keypair on an index already in use, a handshake received from an
    /// address no handshake packet came from. The genuine handshake role
    /// sends none of these: each is a sign that it is not itself.
    pub bad_order: u64,
    /// Handshake messages (types 1–3) over their source's limit (20/s,
    /// bursts of 5, per IPv4 address or IPv6 /64), dropped by the
    /// transport before they reached the handshake role.
    pub ratelimited: u64,
    /// Handshake messages within their source's limit that found the
    /// channel to the handshake role full (it is that far behind), and
    /// were dropped.
    pub handshake_busy: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportToParent {
    Status(Vec<TransportStatus>),
    /// A chunk of at most [`ALLOWED_IPS_CHUNK`] allowed IPs, and where the
    /// next one starts, if any.
    AllowedIps {
        ips: Vec<AllowedIp>,
        more: Option<IpCursor>,
    },
    Counters {
        drops: DropCounters,
        /// Messages sent to the handshake role since start: shows that
        /// timer events are coalesced, not one per packet.
        ipc_to_handshake: u64,
    },
    Done,
}

// ---------------------------------------------------------------- transport ↔ handshake

/// Data-plane activity of one peer since the last report, as bit flags.
/// The transport sends at most a few of these per peer per second, so the
/// channel's load grows with peers, not with packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Activity(pub u8);

impl Activity {
    /// A data packet (not a keepalive) was sent.
    pub const DATA_SENT: u8 = 1;
    /// A data packet (not a keepalive) was received and authenticated.
    pub const DATA_RECEIVED: u8 = 2;
    /// Any authenticated packet, keepalives included, was sent.
    pub const AUTH_SENT: u8 = 4;
    /// Any authenticated packet, keepalives included, was received.
    pub const AUTH_RECEIVED: u8 = 8;

    pub fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransportToHandshake {
    /// A type 1, 2 or 3 datagram, untouched, with where it came from
    /// and the local address it arrived at.
    HandshakePacket {
        bytes: Vec<u8>,
        from: Endpoint,
    },
    Activity {
        peer: PublicKey,
        activity: Activity,
    },
    /// The peer has packets waiting and no usable session, or its current
    /// session is at its rekey limit by message count.
    NeedHandshake {
        peer: PublicKey,
    },
}

/// Where a handshake packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// To the peer's current endpoint, which the transport owns.
    Peer(PublicKey),
    /// To this address, from the local address the packet we answer
    /// arrived at (a cookie reply, which belongs to no peer).
    Addr(Endpoint),
}

/// The handshake role's orders to the data plane. The sans-IO handshake
/// core emits exactly these as its actions.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandshakeToTransport {
    Send {
        to: Destination,
        bytes: Vec<u8>,
    },
    InstallKeypair {
        peer: PublicKey,
        local_index: u32,
        remote_index: u32,
        keys: SessionKeys,
        initiator: bool,
    },
    /// An authenticated handshake message of `len` bytes from the peer
    /// arrived from `from`: the endpoint follows it, and its bytes count
    /// in the peer's received total (as Linux and wireguard-go count
    /// every datagram of a peer, not only data).
    HandshakeReceived {
        peer: PublicKey,
        from: Endpoint,
        len: u32,
    },
    /// Forget the local address replies to the peer go out from: a
    /// handshake went unanswered, and a stale source may be why (Linux
    /// and wireguard-go clear it on every retransmission).
    ClearEndpointSource {
        peer: PublicKey,
    },
    /// Send an empty data packet on the current session.
    SendKeepalive {
        peer: PublicKey,
    },
    /// Drop every keypair of the peer (key material expired).
    ExpireKeypairs {
        peer: PublicKey,
    },
    /// Handshake attempts gave up: discard packets staged for the peer.
    DropStaged {
        peer: PublicKey,
    },
}

// ---------------------------------------------------------------- kinds of traffic

// Only these enums may travel on a channel (see `crate::channel`).
impl Sealed for ParentToCrypto {}
impl Sealed for CryptoToParent {}
impl Sealed for HandshakeToCrypto {}
impl Sealed for CryptoToHandshake {}
impl Sealed for ParentToHandshake {}
impl Sealed for HandshakeToParent {}
impl Sealed for ParentToTransport {}
impl Sealed for TransportToParent {}
impl Sealed for TransportToHandshake {}
impl Sealed for HandshakeToTransport {}

// The parent configures and queries each role, one answer per order; the
// handshake role asks the key holder questions it answers one at a time,
// in order (a few may be in flight: `Channel::submit`).
impl Request for ParentToCrypto {
    type Reply = CryptoToParent;
}
impl Request for ParentToHandshake {
    type Reply = HandshakeToParent;
}
impl Request for ParentToTransport {
    type Reply = TransportToParent;
}
impl Request for HandshakeToCrypto {
    type Reply = CryptoToHandshake;
}

// Between transport and handshake, streams both ways: packets and activity
// one way, orders the other, nobody waits for an answer (the data path
// must never block on the handshake role).
impl Event for TransportToHandshake {}
impl Event for HandshakeToTransport {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use crate::keys::SessionKey;
    use std::fmt::Debug;

    fn round_trip<T: Serialize + serde::de::DeserializeOwned + PartialEq + Debug>(m: T) {
        let bytes = encode(&m).expect("encode");
        let back: T = decode(&bytes).expect("decode");
        assert_eq!(back, m);
        // Every proper prefix is an error, never a panic.
        for n in 0..bytes.len() {
            assert!(decode::<T>(&bytes[..n]).is_err(), "prefix {n} of {m:?}");
        }
    }

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn keys() -> SessionKeys {
        SessionKeys {
            send: SessionKey::from_bytes([1; 32]),
            recv: SessionKey::from_bytes([2; 32]),
        }
    }

    fn sa() -> SocketAddr {
        "[fd00::1]:51820".parse().expect("literal")
    }

    fn ep() -> Endpoint {
        Endpoint {
            addr: sa(),
            src: Some(SourceAddr {
                ip: "fe80::1".parse().expect("literal"),
                ifindex: 3,
            }),
        }
    }

    /// Found by `fuzz/`'s seed generator: serde's `SocketAddrV6` drops the
    /// scope id, so a link-local endpoint's zone did not reach the
    /// transport. Every place a peer's address crosses a channel keeps it.
    #[test]
    fn endpoint_scope_id_survives() {
        let zoned: SocketAddr = "[fe80::1%7]:51820".parse().expect("literal");
        let SocketAddr::V6(v6) = zoned else {
            unreachable!()
        };
        assert_eq!(v6.scope_id(), 7);
        round_trip(ParentToTransport::Apply(Apply {
            ops: vec![TransportOp::SetEndpoint {
                peer: pk(1),
                endpoint: zoned,
            }],
            commit: true,
        }));
        round_trip(TransportToParent::Status(vec![TransportStatus {
            peer: pk(1),
            endpoint: Some(zoned),
            rx_bytes: 0,
            tx_bytes: 0,
            allowed_ips: Vec::new(),
            more_ips: None,
        }]));
        round_trip(TransportToHandshake::HandshakePacket {
            bytes: vec![1, 0, 0, 0],
            from: Endpoint::new(zoned),
        });
        round_trip(HandshakeToTransport::Send {
            to: Destination::Addr(Endpoint::new(zoned)),
            bytes: vec![3, 0, 0, 0],
        });
    }

    fn ip() -> AllowedIp {
        AllowedIp {
            addr: "10.0.0.0".parse().expect("literal"),
            cidr: 8,
        }
    }

    #[test]
    fn parent_crypto_round_trip() {
        round_trip(ParentToCrypto::SetPrivateKey(Some(Secret::Plain(
            SecretKey::from_bytes([3; 32]),
        ))));
        round_trip(ParentToCrypto::SetPrivateKey(Some(Secret::Wrapped(
            Wrapped(vec![7; 72]),
        ))));
        round_trip(ParentToCrypto::SetPrivateKey(None));
        round_trip(ParentToCrypto::Apply(Apply {
            ops: vec![
                CryptoOp::SetPeer {
                    peer: pk(1),
                    psk: Some(Secret::Plain(SecretKey::from_bytes([4; 32]))),
                },
                CryptoOp::SetPeer {
                    peer: pk(1),
                    psk: Some(Secret::Wrapped(Wrapped(vec![8; 72]))),
                },
                CryptoOp::SetPeer {
                    peer: pk(1),
                    psk: None,
                },
                CryptoOp::RemovePeer(pk(2)),
                CryptoOp::RemoveAllPeers,
            ],
            commit: true,
        }));
        round_trip(ParentToCrypto::Apply(Apply {
            ops: Vec::new(),
            commit: false,
        }));
        round_trip(CryptoToParent::PublicKey(Some(pk(5)), None));
        round_trip(CryptoToParent::PublicKey(
            Some(pk(5)),
            Some(Wrapped(vec![1; 72])),
        ));
        round_trip(CryptoToParent::PublicKey(None, None));
        round_trip(CryptoToParent::WrappedPsks(vec![
            (pk(6), Some(Wrapped(vec![2; 72]))),
            (pk(7), None),
        ]));
        round_trip(CryptoToParent::Done);
        round_trip(CryptoToParent::Refused(CryptoError::Internal));
    }

    #[test]
    fn handshake_crypto_round_trip() {
        let id = HandshakeId(u64::MAX);
        round_trip(HandshakeToCrypto::CreateInitiation { peer: pk(1) });
        round_trip(HandshakeToCrypto::AnswerInitiation {
            noise: NoiseInitiation([7; 108]),
        });
        round_trip(HandshakeToCrypto::ConsumeResponse {
            id,
            noise: NoiseResponse([8; 48]),
        });
        round_trip(HandshakeToCrypto::Abandon { id });
        round_trip(CryptoToHandshake::Initiation {
            id,
            noise: NoiseInitiation([9; 108]),
        });
        round_trip(CryptoToHandshake::Answered {
            peer: pk(3),
            timestamp: Tai64N([1; 12]),
            noise: NoiseResponse([2; 48]),
            keys: keys(),
        });
        round_trip(CryptoToHandshake::ResponseConsumed(keys()));
        round_trip(CryptoToHandshake::Abandoned);
        for e in [
            CryptoError::NoPrivateKey,
            CryptoError::UnknownPeer,
            CryptoError::UnknownHandshake,
            CryptoError::Rejected,
            CryptoError::Internal,
            CryptoError::ReplayedTimestamp,
            CryptoError::InitiationFlood,
        ] {
            round_trip(CryptoToHandshake::Refused(e));
        }
    }

    #[test]
    fn parent_handshake_round_trip() {
        round_trip(ParentToHandshake::Apply(Apply {
            ops: vec![
                HandshakeOp::SetInterface {
                    public_key: Some(pk(1)),
                },
                HandshakeOp::SetInterface { public_key: None },
                HandshakeOp::SetPeer {
                    peer: pk(2),
                    persistent_keepalive: Some(25),
                },
                HandshakeOp::RemovePeer(pk(2)),
                HandshakeOp::RemoveAllPeers,
            ],
            commit: false,
        }));
        round_trip(ParentToHandshake::GetStatus(vec![pk(1), pk(2)]));
        round_trip(ParentToHandshake::GetCounters);
        round_trip(HandshakeToParent::Status(vec![HandshakeStatus {
            peer: pk(4),
            last_handshake: Some((1_700_000_000, 5)),
            persistent_keepalive: None,
        }]));
        round_trip(HandshakeToParent::Counters(HandshakeCounters {
            bad_mac1: 3,
            ..Default::default()
        }));
        round_trip(HandshakeToParent::Done);
    }

    #[test]
    fn parent_transport_round_trip() {
        round_trip(ParentToTransport::Apply(Apply {
            ops: vec![
                TransportOp::AddPeer(pk(1)),
                TransportOp::RemovePeer(pk(1)),
                TransportOp::RemoveAllPeers,
                TransportOp::SetEndpoint {
                    peer: pk(1),
                    endpoint: sa(),
                },
                TransportOp::AddAllowedIps {
                    peer: pk(1),
                    ips: vec![ip(), ip()],
                },
                TransportOp::RemoveAllowedIps {
                    peer: pk(1),
                    ips: vec![ip()],
                },
                TransportOp::ClearAllowedIps(pk(1)),
            ],
            commit: true,
        }));
        round_trip(ParentToTransport::Start { v4: true, v6: true });
        round_trip(ParentToTransport::NewSockets {
            v4: true,
            v6: false,
        });
        round_trip(ParentToTransport::GetStatus(vec![pk(3)]));
        round_trip(ParentToTransport::GetCounters);
        round_trip(TransportToParent::Status(vec![TransportStatus {
            peer: pk(1),
            endpoint: Some(sa()),
            rx_bytes: 1,
            tx_bytes: u64::MAX,
            allowed_ips: vec![ip()],
            more_ips: Some(IpCursor(Some(7))),
        }]));
        round_trip(ParentToTransport::GetAllowedIps {
            peer: pk(1),
            from: IpCursor(None),
        });
        round_trip(TransportToParent::AllowedIps {
            ips: vec![ip(), ip()],
            more: None,
        });
        round_trip(TransportToParent::Counters {
            drops: DropCounters {
                malformed: 1,
                ..Default::default()
            },
            ipc_to_handshake: 7,
        });
        round_trip(TransportToParent::Done);
    }

    #[test]
    fn transport_handshake_round_trip() {
        round_trip(TransportToHandshake::HandshakePacket {
            bytes: vec![1, 0, 0, 0, 5],
            from: Endpoint::new("192.0.2.1:4500".parse().expect("literal")),
        });
        round_trip(TransportToHandshake::HandshakePacket {
            bytes: vec![1, 0, 0, 0, 5],
            from: ep(),
        });
        round_trip(TransportToHandshake::Activity {
            peer: pk(1),
            activity: Activity(Activity::DATA_SENT | Activity::AUTH_RECEIVED),
        });
        round_trip(TransportToHandshake::NeedHandshake { peer: pk(1) });
        round_trip(HandshakeToTransport::Send {
            to: Destination::Peer(pk(1)),
            bytes: vec![2; 92],
        });
        round_trip(HandshakeToTransport::Send {
            to: Destination::Addr(ep()),
            bytes: vec![3; 64],
        });
        round_trip(HandshakeToTransport::InstallKeypair {
            peer: pk(1),
            local_index: 1,
            remote_index: u32::MAX,
            keys: keys(),
            initiator: true,
        });
        round_trip(HandshakeToTransport::HandshakeReceived {
            peer: pk(1),
            from: ep(),
            len: 148,
        });
        round_trip(HandshakeToTransport::ClearEndpointSource { peer: pk(1) });
        round_trip(HandshakeToTransport::SendKeepalive { peer: pk(1) });
        round_trip(HandshakeToTransport::ExpireKeypairs { peer: pk(1) });
        round_trip(HandshakeToTransport::DropStaged { peer: pk(1) });
    }

    #[test]
    fn noise_arrays_reject_wrong_length() {
        // An AnswerInitiation whose byte string is 107 long is malformed.
        let mut bytes = encode(&HandshakeToCrypto::AnswerInitiation {
            noise: NoiseInitiation([7; 108]),
        })
        .expect("encode")
        .to_vec();
        // Layout: variant tag (1), varint length (1: 108), then bytes.
        assert_eq!(bytes[1], 108);
        bytes[1] = 107;
        bytes.pop();
        assert!(decode::<HandshakeToCrypto>(&bytes).is_err());
    }
}
