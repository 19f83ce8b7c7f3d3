//! The four WireGuard messages as the transport sees a UDP payload
//! (`proto::wire`): [`classify`] and each message's parser on the same
//! bytes.

use proto::wire::{
    classify, CookieReply, DataHeader, Initiation, MessageType, Response, DATA_HEADER_LEN,
};

/// Runs `classify` and all four parsers. Checks that the type check and
/// the parsers agree (a datagram the transport routes as a type is one
/// that type's parser takes, and no other), and that each parsed message
/// writes back to exactly the bytes it came from.
pub fn wire(data: &[u8]) -> bool {
    let class = classify(data).ok();
    let init = Initiation::parse(data);
    let resp = Response::parse(data);
    let cookie = CookieReply::parse(data);
    let header = DataHeader::parse(data);

    assert_eq!(class == Some(MessageType::Initiation), init.is_ok());
    assert_eq!(class == Some(MessageType::Response), resp.is_ok());
    assert_eq!(class == Some(MessageType::CookieReply), cookie.is_ok());
    assert_eq!(class == Some(MessageType::Data), header.is_ok());

    if let Ok(m) = init {
        assert_eq!(&m.to_bytes()[..], data);
    }
    if let Ok(m) = resp {
        assert_eq!(&m.to_bytes()[..], data);
    }
    if let Ok(m) = cookie {
        assert_eq!(&m.to_bytes()[..], data);
    }
    if let Ok(h) = header {
        let mut out = [0u8; DATA_HEADER_LEN];
        h.write(&mut out);
        assert_eq!(&out[..], &data[..DATA_HEADER_LEN]);
    }
    class.is_some()
}
