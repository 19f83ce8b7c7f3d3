//! The seed corpus: valid messages for every target, so that the fuzzer
//! starts from inputs that pass every check and mutates from there
//! rather than having to discover a message's layout byte by byte.
//!
//! IPC seeds are taken off a real channel's socket (`proto::channel`
//! encodes them, ids and all), so they are exactly what one process sends
//! another. Text seeds are written by the writers of `wg_config` where one
//! exists (`format_set`, `format_get`, `format_wgd_get`) and by hand where
//! the point is a form no writer produces (wireguard-go's reply with its
//! secrets, `\r\n` line ends, a configuration with comments).

use std::fmt::Debug;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use nix::sys::socket::{recv, MsgFlags};
use proto::channel::{Channel, Event, Message, Request};
use proto::codec::{decode, MAX_MESSAGE};
use proto::ipc::*;
use proto::keys::{
    HandshakeId, NoiseInitiation, NoiseResponse, PublicKey, SecretKey, SessionKey, SessionKeys,
    Tai64N,
};
use proto::wire::{
    CookieReply, DataHeader, Initiation, Response, DATA_HEADER_LEN, NOISE_INITIATION_LEN,
    NOISE_RESPONSE_LEN,
};
use wg_config::keys::secret_line;
use wg_config::uapi::{
    format_errno, format_get, format_set, format_wgd_get, AllowedIpChange, Device, Peer, PeerOp,
    Psk, SetOp, WgdStats,
};

use crate::data::{self, Op};
use crate::ipc::Tagged;

/// One seed: a file name (unique within its target) and its bytes.
pub type Seed = (String, Vec<u8>);

/// The seeds of the target `name`; empty for a name that is no target.
pub fn for_target(name: &str) -> Vec<Seed> {
    match name {
        "wire" => wire(),
        "data_open" => data_open(),
        "ipc_parent_to_crypto" => requests(parent_to_crypto(), crypto_to_parent()).0,
        "ipc_crypto_to_parent" => requests(parent_to_crypto(), crypto_to_parent()).1,
        "ipc_handshake_to_crypto" => requests(handshake_to_crypto(), crypto_to_handshake()).0,
        "ipc_crypto_to_handshake" => requests(handshake_to_crypto(), crypto_to_handshake()).1,
        "ipc_parent_to_handshake" => requests(parent_to_handshake(), handshake_to_parent()).0,
        "ipc_handshake_to_parent" => requests(parent_to_handshake(), handshake_to_parent()).1,
        "ipc_parent_to_transport" => requests(parent_to_transport(), transport_to_parent()).0,
        "ipc_transport_to_parent" => requests(parent_to_transport(), transport_to_parent()).1,
        "ipc_transport_to_handshake" => {
            events::<TransportToHandshake, HandshakeToTransport>(transport_to_handshake())
        }
        "ipc_handshake_to_transport" => {
            events::<HandshakeToTransport, TransportToHandshake>(handshake_to_transport())
        }
        "uapi_request" => uapi_request(),
        "uapi_reply" => uapi_reply(),
        "config" => config(),
        _ => Vec::new(),
    }
}

fn named(prefix: &str, items: impl IntoIterator<Item = Vec<u8>>) -> Vec<Seed> {
    items
        .into_iter()
        .enumerate()
        .map(|(i, b)| (format!("{prefix}-{i:02}"), b))
        .collect()
}

// ---------------------------------------------------------------- values

fn pk(n: u8) -> PublicKey {
    PublicKey([n; 32])
}

fn sk(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn session_keys() -> SessionKeys {
    SessionKeys {
        send: SessionKey::from_bytes([0x11; 32]),
        recv: SessionKey::from_bytes([0x22; 32]),
    }
}

fn wrapped(n: u8) -> Wrapped {
    Wrapped(vec![n; WRAPPED_LEN])
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn v6(segs: [u16; 8]) -> IpAddr {
    IpAddr::V6(Ipv6Addr::from(segs))
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new(SocketAddr::new(v4(192, 0, 2, 1), 51820)),
        Endpoint {
            addr: SocketAddr::new(v4(198, 51, 100, 7), 1),
            src: Some(SourceAddr {
                ip: v4(192, 0, 2, 200),
                ifindex: 3,
            }),
        },
        Endpoint {
            addr: SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 9),
                65535,
                0,
                4,
            )),
            src: Some(SourceAddr {
                ip: v6([0xfe80, 0, 0, 0, 0, 0, 0, 1]),
                ifindex: 4,
            }),
        },
    ]
}

fn allowed_ips() -> Vec<AllowedIp> {
    vec![
        AllowedIp {
            addr: v4(10, 0, 0, 0),
            cidr: 24,
        },
        AllowedIp {
            addr: v4(0, 0, 0, 0),
            cidr: 0,
        },
        AllowedIp {
            addr: v6([0xfd00, 0, 0, 0, 0, 0, 0, 2]),
            cidr: 128,
        },
    ]
}

fn initiation() -> Initiation {
    let mut noise = [0u8; NOISE_INITIATION_LEN];
    for (i, b) in noise.iter_mut().enumerate() {
        *b = i as u8;
    }
    Initiation {
        sender: 0x0102_0304,
        noise,
        mac1: [0xa1; 16],
        mac2: [0; 16],
    }
}

fn response() -> Response {
    Response {
        sender: 7,
        receiver: 0x0102_0304,
        noise: [0x33; NOISE_RESPONSE_LEN],
        mac1: [0xb1; 16],
        mac2: [0xb2; 16],
    }
}

fn cookie_reply() -> CookieReply {
    CookieReply {
        receiver: 7,
        nonce: [0x44; 24],
        cookie: [0x55; 32],
    }
}

// ---------------------------------------------------------------- wire

fn data_message(receiver: u32, counter: u64, body_len: usize) -> Vec<u8> {
    let mut head = [0u8; DATA_HEADER_LEN];
    DataHeader { receiver, counter }.write(&mut head);
    let mut m = head.to_vec();
    m.extend((0..body_len).map(|i| i as u8));
    m
}

fn wire() -> Vec<Seed> {
    named(
        "wire",
        [
            initiation().to_bytes().to_vec(),
            response().to_bytes().to_vec(),
            cookie_reply().to_bytes().to_vec(),
            data_message(7, 0, 16),
            data_message(7, u64::MAX, 16 + 1424),
        ],
    )
}

// ---------------------------------------------------------------- data

/// An IPv4 ICMP echo request from 10.0.0.2 to 10.0.0.1, 28 bytes.
fn ipv4_packet() -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 1, 0, 0, 10, 0, 0, 2, 10, 0, 0, 1,
    ];
    p.extend_from_slice(&[8, 0, 0xf7, 0xfe, 0, 1, 0, 0]);
    p
}

/// An IPv6 ICMPv6 echo request from fd00::2 to fd00::1, 48 bytes.
fn ipv6_packet() -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
    p.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2).octets());
    p.extend_from_slice(&Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1).octets());
    p.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    p
}

/// Zero-padded to a multiple of 16, as a sender pads.
fn padded(mut p: Vec<u8>) -> Vec<u8> {
    p.resize(p.len().next_multiple_of(16), 0);
    p
}

fn seal(index: u32, counter: u64, plaintext: Vec<u8>) -> Op {
    Op::Seal {
        index,
        counter,
        tamper: 0,
        plaintext,
    }
}

fn data_open() -> Vec<Seed> {
    let [current, next] = data::START_INDICES;
    let programs = [
        // A packet on the current session, then its replay.
        vec![seal(current, 0, padded(ipv4_packet())), Op::Replay],
        // The responder's first packet confirms its next keypair; the
        // old current keypair still opens as previous.
        vec![
            seal(next, 0, padded(ipv6_packet())),
            seal(current, 1, padded(ipv4_packet())),
            seal(next, 1, Vec::new()),
        ],
        // Keepalive; counters out of order, far ahead, and too old.
        vec![
            seal(current, 10, Vec::new()),
            seal(current, 3, padded(ipv4_packet())),
            seal(current, 3, padded(ipv4_packet())),
            seal(current, 5000, padded(ipv6_packet())),
            seal(current, 4, padded(ipv4_packet())),
        ],
        // A flipped byte in the tag; an unknown index; raw bytes.
        vec![
            Op::Seal {
                index: current,
                counter: 0,
                tamper: 50,
                plaintext: padded(ipv4_packet()),
            },
            seal(99, 0, padded(ipv4_packet())),
            Op::Raw(data_message(current, 0, 32)),
            Op::Raw(initiation().to_bytes().to_vec()),
            seal(current, 0, padded(ipv4_packet())),
        ],
        // A new session, then the old keys age out.
        vec![
            Op::Install {
                local: 3,
                remote: 103,
                initiator: true,
            },
            seal(3, 0, padded(ipv4_packet())),
            Op::Time(200),
            seal(3, 1, padded(ipv4_packet())),
            Op::Expire,
            seal(3, 2, padded(ipv4_packet())),
        ],
        // An inner packet whose header claims more than was sent, and one
        // that is neither IPv4 nor IPv6.
        vec![
            seal(current, 0, {
                let mut p = padded(ipv4_packet());
                p[3] = 200;
                p
            }),
            seal(current, 1, vec![0x10; 32]),
        ],
    ];
    named("data", programs.iter().map(|p| data::encode(p)))
}

// ---------------------------------------------------------------- IPC

/// Takes one datagram off a channel end's socket, as sent.
fn take_datagram(fd: &impl AsRawFd) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT).expect("a datagram is queued");
    buf.truncate(n);
    buf
}

/// Checks that a datagram decodes, as the harness decodes it, to the
/// message that was sent: the seed is what it claims to be, and nothing of
/// the message is lost on the way (a link-local endpoint's scope id once
/// was).
fn check_seed<T: Message + PartialEq + Debug>(bytes: &[u8], sent: &T, tagged: bool) {
    let got: T = if tagged {
        decode::<Tagged<T>>(bytes).expect("a tagged seed decodes").1
    } else {
        decode(bytes).expect("a seed decodes")
    };
    assert_eq!(&got, sent, "the channel changed the message");
}

/// The datagrams of `reqs` asked on a channel, and of `replies` answering
/// requests on it.
fn requests<Q, A>(reqs: Vec<Q>, replies: Vec<A>) -> (Vec<Seed>, Vec<Seed>)
where
    Q: Request<Reply = A> + PartialEq + Debug,
    A: Message + PartialEq + Debug,
{
    let (asker, server) = Channel::<Q, A>::pair().expect("socketpair");
    asker.set_nonblocking(true).expect("non-blocking");
    let mut req_bytes = Vec::new();
    for q in &reqs {
        // The reply would block: nobody answers. The request is out.
        let _ = asker.ask(q);
        let bytes = take_datagram(&server);
        check_seed(&bytes, q, true);
        req_bytes.push(bytes);
    }
    let mut reply_bytes = Vec::new();
    let Some(first) = reqs.first() else {
        return (Vec::new(), Vec::new());
    };
    for a in &replies {
        let _ = asker.ask(first);
        let (to, _) = server.recv_request().expect("the request just asked");
        server.reply(to, a).expect("reply");
        let bytes = take_datagram(&asker);
        check_seed(&bytes, a, true);
        reply_bytes.push(bytes);
    }
    (named("req", req_bytes), named("reply", reply_bytes))
}

/// The datagrams of `msgs` sent as events.
fn events<E: Event + PartialEq + Debug, X: Message>(msgs: Vec<E>) -> Vec<Seed> {
    let (tx, rx) = Channel::<E, X>::pair().expect("socketpair");
    let bytes = msgs
        .iter()
        .map(|m| {
            tx.send(m).expect("send");
            let bytes = take_datagram(&rx);
            check_seed(&bytes, m, false);
            bytes
        })
        .collect::<Vec<_>>();
    named("event", bytes)
}

fn parent_to_crypto() -> Vec<ParentToCrypto> {
    vec![
        ParentToCrypto::SetPrivateKey(Some(Secret::Plain(sk(1)))),
        ParentToCrypto::SetPrivateKey(Some(Secret::Wrapped(wrapped(2)))),
        ParentToCrypto::SetPrivateKey(None),
        ParentToCrypto::Apply(Apply {
            ops: vec![
                CryptoOp::RemoveAllPeers,
                CryptoOp::SetPeer {
                    peer: pk(3),
                    psk: None,
                },
                CryptoOp::SetPeer {
                    peer: pk(4),
                    psk: Some(Secret::Plain(sk(5))),
                },
                CryptoOp::SetPeer {
                    peer: pk(6),
                    psk: Some(Secret::Wrapped(wrapped(7))),
                },
                CryptoOp::RemovePeer(pk(3)),
            ],
            commit: true,
        }),
        ParentToCrypto::Apply(Apply {
            ops: Vec::new(),
            commit: false,
        }),
    ]
}

fn crypto_to_parent() -> Vec<CryptoToParent> {
    vec![
        CryptoToParent::PublicKey(Some(pk(1)), Some(wrapped(2))),
        CryptoToParent::PublicKey(None, None),
        CryptoToParent::WrappedPsks(vec![(pk(4), Some(wrapped(5))), (pk(6), None)]),
        CryptoToParent::Done,
        CryptoToParent::Refused(CryptoError::UnknownPeer),
        CryptoToParent::Refused(CryptoError::InitiationFlood),
    ]
}

fn handshake_to_crypto() -> Vec<HandshakeToCrypto> {
    vec![
        HandshakeToCrypto::CreateInitiation { peer: pk(1) },
        HandshakeToCrypto::AnswerInitiation {
            noise: NoiseInitiation(initiation().noise),
        },
        HandshakeToCrypto::ConsumeResponse {
            id: HandshakeId(3),
            noise: NoiseResponse(response().noise),
        },
        HandshakeToCrypto::Abandon {
            id: HandshakeId(u64::MAX),
        },
        HandshakeToCrypto::Abandon { id: HandshakeId(0) },
    ]
}

fn crypto_to_handshake() -> Vec<CryptoToHandshake> {
    vec![
        CryptoToHandshake::Initiation {
            id: HandshakeId(1),
            noise: NoiseInitiation(initiation().noise),
        },
        CryptoToHandshake::Answered {
            peer: pk(3),
            timestamp: Tai64N([0x40, 0, 0, 0, 0x65, 0, 0, 0, 0, 0, 0, 1]),
            noise: NoiseResponse(response().noise),
            keys: session_keys(),
        },
        CryptoToHandshake::ResponseConsumed(session_keys()),
        CryptoToHandshake::Abandoned,
        CryptoToHandshake::Refused(CryptoError::ReplayedTimestamp),
    ]
}

fn parent_to_handshake() -> Vec<ParentToHandshake> {
    vec![
        ParentToHandshake::Apply(Apply {
            ops: vec![
                HandshakeOp::SetInterface {
                    public_key: Some(pk(1)),
                },
                HandshakeOp::SetInterface { public_key: None },
                HandshakeOp::SetPeer {
                    peer: pk(2),
                    persistent_keepalive: Some(25),
                },
                HandshakeOp::SetPeer {
                    peer: pk(3),
                    persistent_keepalive: None,
                },
                HandshakeOp::RemovePeer(pk(2)),
                HandshakeOp::RemoveAllPeers,
            ],
            commit: true,
        }),
        ParentToHandshake::GetStatus(vec![pk(1), pk(2)]),
        ParentToHandshake::GetCounters,
    ]
}

fn handshake_to_parent() -> Vec<HandshakeToParent> {
    vec![
        HandshakeToParent::Status(vec![
            HandshakeStatus {
                peer: pk(1),
                last_handshake: Some((1_700_000_000, 999_999_999)),
                persistent_keepalive: Some(25),
            },
            HandshakeStatus {
                peer: pk(2),
                last_handshake: None,
                persistent_keepalive: None,
            },
        ]),
        HandshakeToParent::Counters(HandshakeCounters {
            malformed: 1,
            bad_mac1: 2,
            cookie_replies_sent: 3,
            rate_limited: 4,
            unknown_index: 5,
            rejected: 6,
            replayed_timestamp: 7,
            initiation_flood: u64::MAX,
        }),
        HandshakeToParent::Done,
    ]
}

fn parent_to_transport() -> Vec<ParentToTransport> {
    let eps = endpoints();
    vec![
        ParentToTransport::Start { v4: true, v6: true },
        ParentToTransport::Apply(Apply {
            ops: vec![
                TransportOp::RemoveAllPeers,
                TransportOp::AddPeer(pk(1)),
                TransportOp::SetEndpoint {
                    peer: pk(1),
                    endpoint: eps[0].addr,
                },
                TransportOp::SetEndpoint {
                    peer: pk(1),
                    endpoint: eps[2].addr,
                },
                TransportOp::AddAllowedIps {
                    peer: pk(1),
                    ips: allowed_ips(),
                },
                TransportOp::RemoveAllowedIps {
                    peer: pk(1),
                    ips: allowed_ips()[..1].to_vec(),
                },
                TransportOp::ClearAllowedIps(pk(1)),
                TransportOp::RemovePeer(pk(1)),
            ],
            commit: true,
        }),
        ParentToTransport::NewSockets {
            v4: false,
            v6: true,
        },
        ParentToTransport::GetStatus(vec![pk(1), pk(2)]),
        ParentToTransport::GetAllowedIps {
            peer: pk(1),
            from: IpCursor(Some(1024)),
        },
        ParentToTransport::GetCounters,
    ]
}

fn transport_to_parent() -> Vec<TransportToParent> {
    vec![
        TransportToParent::Status(vec![
            TransportStatus {
                peer: pk(1),
                endpoint: Some(endpoints()[2].addr),
                rx_bytes: 1 << 40,
                tx_bytes: 92,
                allowed_ips: allowed_ips(),
                more_ips: Some(IpCursor(None)),
            },
            TransportStatus {
                peer: pk(2),
                endpoint: None,
                rx_bytes: 0,
                tx_bytes: 0,
                allowed_ips: Vec::new(),
                more_ips: None,
            },
        ]),
        TransportToParent::AllowedIps {
            ips: allowed_ips(),
            more: Some(IpCursor(Some(3))),
        },
        TransportToParent::Counters {
            drops: DropCounters {
                malformed: 1,
                unknown_index: 2,
                replay: 3,
                auth_failed: 4,
                source_not_allowed: 5,
                no_route: 6,
                send_failed: 7,
                bad_order: 8,
                ratelimited: 10,
                handshake_busy: 11,
            },
            ipc_to_handshake: 9,
        },
        TransportToParent::Done,
    ]
}

fn transport_to_handshake() -> Vec<TransportToHandshake> {
    let mut msgs: Vec<_> = endpoints()
        .into_iter()
        .map(|from| TransportToHandshake::HandshakePacket {
            bytes: initiation().to_bytes().to_vec(),
            from,
        })
        .collect();
    msgs.push(TransportToHandshake::HandshakePacket {
        bytes: response().to_bytes().to_vec(),
        from: endpoints()[1],
    });
    msgs.push(TransportToHandshake::Activity {
        peer: pk(1),
        activity: Activity(Activity::DATA_SENT | Activity::AUTH_RECEIVED),
    });
    msgs.push(TransportToHandshake::NeedHandshake { peer: pk(2) });
    msgs
}

fn handshake_to_transport() -> Vec<HandshakeToTransport> {
    vec![
        HandshakeToTransport::Send {
            to: Destination::Peer(pk(1)),
            bytes: initiation().to_bytes().to_vec(),
        },
        HandshakeToTransport::Send {
            to: Destination::Addr(endpoints()[2]),
            bytes: cookie_reply().to_bytes().to_vec(),
        },
        HandshakeToTransport::InstallKeypair {
            peer: pk(1),
            local_index: 1,
            remote_index: 0xffff_ffff,
            keys: session_keys(),
            initiator: true,
        },
        HandshakeToTransport::HandshakeReceived {
            peer: pk(1),
            from: endpoints()[1],
            len: 148,
        },
        HandshakeToTransport::ClearEndpointSource { peer: pk(1) },
        HandshakeToTransport::SendKeepalive { peer: pk(1) },
        HandshakeToTransport::ExpireKeypairs { peer: pk(1) },
        HandshakeToTransport::DropStaged { peer: pk(1) },
    ]
}

// ---------------------------------------------------------------- UAPI

fn hex(n: u8) -> String {
    pk(n).to_hex()
}

fn uapi_request() -> Vec<Seed> {
    let full = format!(
        "set=1\nprivate_key={}\nlisten_port=51820\nfwmark=0\nreplace_peers=true\n\
         public_key={}\npreshared_key={}\nendpoint=192.0.2.1:51820\n\
         persistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
         allowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\nprotocol_version=1\n\
         public_key={}\nupdate_only=true\nendpoint=[fe80::1%eth0]:51820\n\
         allowed_ip=-10.1.0.0/16\n\
         public_key={}\nremove=true\n\n",
        hex(1),
        hex(2),
        hex(3),
        hex(4),
        hex(5)
    );
    let mut peer = PeerOp::new(pk(6));
    peer.preshared_key = Some(None);
    peer.endpoint = Some(endpoints()[2].addr);
    peer.persistent_keepalive = Some(0);
    peer.allowed_ips = vec![
        AllowedIpChange::Add(allowed_ips()[2]),
        AllowedIpChange::Remove(allowed_ips()[0]),
    ];
    let written = format_set(&[
        SetOp::PrivateKey(None),
        SetOp::ListenPort(0),
        SetOp::Fwmark(u32::MAX),
        SetOp::Peer(peer),
    ]);
    named(
        "request",
        [
            "get=1\n\n".to_string(),
            "wgd_get=1\n\n".to_string(),
            full.clone(),
            full.replace('\n', "\r\n").replacen("\r\n", "\n", 1),
            written.to_string(),
            format!(
                "get=1\n\nset=1\nlisten_port=1\n\nwgd_get=1\n\n{}",
                &*written
            ),
            // End of input ends a set request without its empty line.
            format!("set=1\npublic_key={}\nallowed_ip=0.0.0.0/0\n", hex(7)),
        ]
        .into_iter()
        .map(String::into_bytes),
    )
}

fn sample_device() -> Device {
    let mut p1 = Peer::new(pk(2));
    p1.endpoint = Some(endpoints()[0].addr);
    p1.allowed_ips = allowed_ips();
    p1.last_handshake = Some((1_700_000_000, 5));
    p1.rx_bytes = 1 << 33;
    p1.tx_bytes = 7;
    p1.persistent_keepalive = 25;
    let mut p2 = Peer::new(pk(3));
    p2.endpoint = Some(endpoints()[2].addr);
    p2.preshared_key = Psk::Set;
    Device {
        public_key: Some(pk(1)),
        private_key_file: Some(PathBuf::from("/etc/wireguard/wg0.key")),
        listen_port: 51820,
        fwmark: 0x20,
        stats: Some(WgdStats::default()),
        peers: vec![p1, p2],
    }
}

fn uapi_reply() -> Vec<Seed> {
    let dev = sample_device();
    let wireguard_go = format!(
        "private_key={}\nlisten_port=51820\npublic_key={}\npreshared_key={}\n\
         protocol_version=1\nendpoint=[2001:db8::1]:51820\n\
         last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=1\n\
         tx_bytes=92\nrx_bytes=148\npersistent_keepalive_interval=0\n\
         allowed_ip=10.0.0.2/32\npublic_key={}\npreshared_key={}\n\
         protocol_version=1\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
         tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=25\nerrno=0\n\n",
        hex(1),
        hex(2),
        hex(3),
        hex(4),
        "0".repeat(64)
    );
    named(
        "reply",
        [
            format_wgd_get(&dev),
            format_get(&dev),
            format_get(&Device::default()),
            wireguard_go,
            format_errno(libc_einval()),
        ]
        .into_iter()
        .map(String::into_bytes),
    )
}

/// `EINVAL` without a dependency on libc for one constant.
fn libc_einval() -> i32 {
    nix::errno::Errno::EINVAL as i32
}

// ---------------------------------------------------------------- config

fn config() -> Vec<Seed> {
    let b64 = |n: u8| pk(n).to_base64();
    let secret = |n: u8| secret_line(&sk(n)).trim_end().to_string();
    let full = format!(
        "[Interface]\nPrivateKey = {}\nListenPort = 51820\nFwMark = 0x20\nAutoAddress = true\n\n\
         [Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.0.0.2/32, fd00::2/128\n\
         Endpoint = 192.0.2.1:51820\nPersistentKeepalive = 25\n\n\
         [Peer]\nPublicKey = {}\nAllowedIPs = 0.0.0.0/0, ::/0\nEndpoint = [2001:db8::1]:51820\n\
         PersistentKeepalive = off\n",
        secret(1),
        b64(2),
        secret(3),
        b64(4)
    );
    let files = format!(
        "# keys from files next to the configuration\n[Interface]\nPrivateKeyFile = key\n\
         FwMark = off\n[Peer]\nPublicKey = {}\nPresharedKeyFile = key\n\
         Endpoint = peer.example.org:51820\n[Peer]\nPublicKey = {}\n\
         Endpoint = [fe80::1%eth0]:51820\nAllowedIPs = 10.9.0.0/16\n",
        b64(5),
        b64(6)
    );
    let odd = format!(
        "\u{feff}# a comment\r\n[interface]\r\nlistenport=1\r\n\r\n[peer] # trailing\r\n\
         publickey={}\r\nallowedips = 192.0.2.0/24 ,10.1.2.3\r\n",
        b64(7)
    );
    named(
        "config",
        [full, files, odd, "[Interface]\n".to_string()]
            .into_iter()
            .map(String::into_bytes),
    )
}
