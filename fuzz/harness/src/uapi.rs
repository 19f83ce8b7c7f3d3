//! The userspace API's two parsers: the server's request parser (wgd's
//! parent reads what `wg` or `wgctl` sends on the control socket) and the
//! client's reply parser (what `wgctl show` makes of a daemon's `get`
//! reply, wgd's or another implementation's).

use std::io::{BufRead, BufReader};

use wg_config::uapi::{
    format_errno, format_set, format_wgd_get, read_reply, read_request, Device, ReplyError,
    ReplyParser, Request, UapiError,
};

/// Most requests read off one input: a connection may carry several.
const MAX_REQUESTS: usize = 64;

/// An IPv6 zone name as the server's interface lookup sees it: a few
/// made-up interfaces exist, anything else does not.
pub fn ifindex(name: &str) -> Option<u32> {
    match name {
        "lo" => Some(1),
        "eth0" => Some(2),
        "wg0" => Some(7),
        _ => None,
    }
}

/// Reads every request on the input as the control socket's server does,
/// once from one buffer and once through a 7-byte buffer (so that every
/// line is split across reads), and checks that both readings agree; that
/// a `set` request written back by the client's writer reads back as the
/// same operations; and that an error maps to a positive errno. Valid:
/// at least one request, none in error.
pub fn uapi_request(data: &[u8]) -> bool {
    let whole = requests(&mut &data[..]);
    let pieces = requests(&mut BufReader::with_capacity(7, data));
    assert_eq!(whole, pieces, "the request reader depends on read sizes");

    for res in &whole {
        match res {
            Ok(Request::Set(ops)) => {
                let text = format_set(ops);
                let back = read_request(&mut text.as_bytes(), &ifindex);
                match back {
                    Ok(Some(Request::Set(again))) => assert_eq!(&again, ops),
                    other => panic!("format_set's text reads back as {other:?}"),
                }
            }
            Ok(_) => {}
            Err(e) => {
                assert!(e.errno > 0, "{e:?}");
                assert!(format_errno(e.errno).starts_with("errno=-"));
            }
        }
    }
    !whole.is_empty() && whole.iter().all(Result::is_ok)
}

fn requests(r: &mut impl BufRead) -> Vec<Result<Request, UapiError>> {
    let mut out = Vec::new();
    while out.len() < MAX_REQUESTS {
        match read_request(r, &ifindex) {
            Ok(None) => break,
            Ok(Some(req)) => out.push(Ok(req)),
            Err(e) => {
                // The server replies and hangs up after an error.
                out.push(Err(e));
                break;
            }
        }
    }
    out
}

/// Parses the input as the reply to `get=1` and as the reply to
/// `wgd_get=1`, as wgctl does, from one buffer and through a 7-byte
/// buffer (both must agree). A reply that parses is written back as a
/// `wgd_get` reply, which must parse, and whose second writing must be
/// identical to the first. Valid: a reply (an error reply too) that both
/// readings take.
pub fn uapi_reply(data: &[u8]) -> bool {
    let mut valid = true;
    for wgd in [false, true] {
        let whole = reply(&mut &data[..], wgd);
        let pieces = reply(&mut BufReader::with_capacity(7, data), wgd);
        assert_eq!(whole, pieces, "the reply reader depends on read sizes");
        valid &= whole.is_ok();
        if let Ok(Some(dev)) = whole {
            let text = format_wgd_get(&dev);
            let again = reply(&mut text.as_bytes(), true);
            let Ok(Some(dev2)) = again else {
                panic!("format_wgd_get's text does not read back: {again:?}\n{text}");
            };
            assert_eq!(format_wgd_get(&dev2), text);
        }
    }
    valid
}

/// What wgctl gets from one reply: `Ok(Some(device))` for `errno=0`,
/// `Ok(None)` for an error or no reply, or why the reply is malformed.
fn reply(r: &mut impl BufRead, wgd: bool) -> Result<Option<Device>, String> {
    let mut parser = ReplyParser::new(wgd);
    match read_reply(r, |k, v| parser.line(k, v)) {
        Ok(Some(0)) => Ok(Some(parser.finish())),
        Ok(_) => Ok(None),
        Err(ReplyError::Malformed(m)) => Err(m),
        Err(ReplyError::Io(e)) => panic!("reading from memory failed: {e}"),
    }
}
