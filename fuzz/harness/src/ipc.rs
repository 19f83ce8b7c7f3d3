//! The IPC decoders: one target per channel direction, fed the bytes of
//! one `SOCK_SEQPACKET` datagram as `proto::channel` decodes it with
//! `proto::codec::decode`.
//!
//! Requests and replies travel with their request id (`proto::channel`'s
//! private `Tagged { id: u64, body }`, which postcard encodes exactly as
//! the pair `(u64, T)`: `gen-corpus` takes its seeds from a real channel's
//! socket and checks that they decode here); events travel bare.
//!
//! Checks: a message that decodes encodes again, and that encoding
//! decodes to the same message (what the receiver acted on is what the
//! sender meant, whatever encoding the sender chose).

use std::fmt::Debug;

use proto::codec::{decode, encode};
use proto::ipc::{
    CryptoToHandshake, CryptoToParent, HandshakeToCrypto, HandshakeToParent, HandshakeToTransport,
    ParentToCrypto, ParentToHandshake, ParentToTransport, TransportToHandshake, TransportToParent,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How a request or a reply travels: its id, then the message.
pub type Tagged<T> = (u64, T);

/// Decodes `data` as a channel that carries `T` does (`tagged` for
/// request and reply channels); whether it decoded.
pub fn decode_as<T>(data: &[u8], tagged: bool) -> bool
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    if tagged {
        decode::<Tagged<T>>(data).map(|m| round_trip(&m)).is_ok()
    } else {
        decode::<T>(data).map(|m| round_trip(&m)).is_ok()
    }
}

fn round_trip<T>(msg: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    // A decoded message is never longer than its datagram (postcard has
    // no encoding shorter than canonical), so it always fits the limit.
    let bytes = encode(msg).expect("a decoded message encodes");
    let back: T = decode(&bytes).expect("an encoded message decodes");
    assert_eq!(&back, msg);
}

macro_rules! directions {
    ($($name:ident: $ty:ty, $tagged:expr;)*) => {
        $(
            #[doc = concat!("Decodes one `", stringify!($ty), "` datagram.")]
            pub fn $name(data: &[u8]) -> bool {
                decode_as::<$ty>(data, $tagged)
            }
        )*
    };
}

directions! {
    ipc_parent_to_crypto: ParentToCrypto, true;
    ipc_crypto_to_parent: CryptoToParent, true;
    ipc_handshake_to_crypto: HandshakeToCrypto, true;
    ipc_crypto_to_handshake: CryptoToHandshake, true;
    ipc_parent_to_handshake: ParentToHandshake, true;
    ipc_handshake_to_parent: HandshakeToParent, true;
    ipc_parent_to_transport: ParentToTransport, true;
    ipc_transport_to_parent: TransportToParent, true;
    ipc_transport_to_handshake: TransportToHandshake, false;
    ipc_handshake_to_transport: HandshakeToTransport, false;
}
