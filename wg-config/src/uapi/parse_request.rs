//! The server's side of a request: [`read_request`] reads one request
//! from a client, checking every line as wireguard-go does (see the
//! module documentation of [`super`] for the rules and the differences).

use std::io::BufRead;
use std::net::SocketAddr;

use proto::ipc::AllowedIp;
use proto::keys::{PublicKey, SecretKey};
use zeroize::Zeroizing;

use super::lines::{read_byte, read_line, LineEnd};
use super::{AllowedIpChange, PeerOp, Request, SetOp, UapiError, MAX_LINE, MAX_REQUEST};
use crate::cidr::{self, Syntax};

/// Reads exactly one request: the operation line through the empty line
/// that ends it, and nothing after it, so that the next call reads the
/// client's next request.
///
/// Returns `Ok(None)` at end of input before a request begins (the client
/// is done). `ifindex` turns an endpoint's IPv6 zone name into an
/// interface index (`None`: no such interface); the server passes a
/// lookup in its own network namespace, which is the interface's. Never reads more than [`MAX_REQUEST`] + [`MAX_LINE`] + 1
/// bytes. On `Err`, reply with [`UapiError::reply`] and close the
/// connection.
pub fn read_request<R: BufRead>(
    r: &mut R,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<Option<Request>, UapiError> {
    // Lines may hold key material (`private_key=…`): the buffer is
    // allocated once at its full size, so it never reallocates and leaves
    // no copy behind, and is zeroized when dropped.
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_LINE + 1));
    match read_line(r, &mut line)? {
        None => return Ok(None),
        Some(LineEnd::Eof) => return Err(UapiError::protocol("operation line cut off")),
        Some(LineEnd::Newline) => {}
    }
    match line.as_slice() {
        b"get=1" => {
            // wireguard-go reads exactly one more byte, which must end the
            // request.
            match read_byte(r)? {
                Some(b'\n') => Ok(Some(Request::Get)),
                Some(_) => Err(UapiError::invalid("trailing data after get=1")),
                None => Err(UapiError::protocol("get request cut off")),
            }
        }
        b"wgd_get=1" => match read_byte(r)? {
            Some(b'\n') => Ok(Some(Request::WgdGet)),
            Some(_) => Err(UapiError::invalid("trailing data after wgd_get=1")),
            None => Err(UapiError::protocol("wgd_get request cut off")),
        },
        b"wgd_reload=1" => match read_byte(r)? {
            Some(b'\n') => Ok(Some(Request::WgdReload)),
            Some(_) => Err(UapiError::invalid("trailing data after wgd_reload=1")),
            None => Err(UapiError::protocol("wgd_reload request cut off")),
        },
        b"set=1" => {
            let used = line.len() + 1;
            read_set(r, &mut line, used, ifindex).map(|ops| Some(Request::Set(ops)))
        }
        other => Err(UapiError::protocol(format!(
            "unknown operation {}",
            printable(other)
        ))),
    }
}

/// The lines of a `set` request after `set=1`, through the empty line.
fn read_set<R: BufRead>(
    r: &mut R,
    buf: &mut Vec<u8>,
    mut used: usize,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<Vec<SetOp>, UapiError> {
    let mut ops = Vec::new();
    let mut peer: Option<PeerOp> = None;
    loop {
        match read_line(r, buf)? {
            // End of input at a line boundary ends the request, as in
            // wireguard-go.
            None => break,
            Some(LineEnd::Eof) => return Err(UapiError::protocol("set request cut off mid-line")),
            Some(LineEnd::Newline) => {}
        }
        used += buf.len() + 1;
        if used > MAX_REQUEST {
            return Err(UapiError::new(
                libc::EMSGSIZE,
                format!("set request longer than {MAX_REQUEST} bytes"),
            ));
        }
        let mut l = buf.as_slice();
        if let [rest @ .., b'\r'] = l {
            l = rest;
        }
        if l.is_empty() {
            break;
        }
        let Some(eq) = l.iter().position(|&b| b == b'=') else {
            return Err(UapiError::protocol(format!(
                "line without '=': {}",
                printable(l)
            )));
        };
        let (key, value) = (&l[..eq], &l[eq + 1..]);
        let Ok(key) = std::str::from_utf8(key) else {
            return Err(UapiError::invalid(format!(
                "invalid key {}",
                printable(key)
            )));
        };
        let Ok(value) = std::str::from_utf8(value) else {
            return Err(UapiError::invalid(format!("{key}: value is not UTF-8")));
        };
        if key == "public_key" {
            let public_key = PublicKey::from_hex(value)
                .map_err(|_| UapiError::invalid("public_key: not 64 hex digits"))?;
            if let Some(done) = peer.replace(PeerOp::new(public_key)) {
                ops.push(SetOp::Peer(done));
            }
            continue;
        }
        match peer.as_mut() {
            None => {
                let op = device_line(key, value)?;
                // The same device key again replaces the one before it,
                // which nothing could observe: the parsed request stays no
                // larger than its peers, however many such lines it has.
                match ops.last_mut() {
                    Some(last) if std::mem::discriminant(last) == std::mem::discriminant(&op) => {
                        *last = op
                    }
                    _ => ops.push(op),
                }
            }
            Some(p) => peer_line(p, key, value, ifindex)?,
        }
    }
    if let Some(done) = peer {
        ops.push(SetOp::Peer(done));
    }
    Ok(ops)
}

fn device_line(key: &str, value: &str) -> Result<SetOp, UapiError> {
    match key {
        "private_key" => Ok(SetOp::PrivateKey(secret(key, value)?)),
        "listen_port" => Ok(SetOp::ListenPort(decimal(key, value)?)),
        "fwmark" => Ok(SetOp::Fwmark(decimal(key, value)?)),
        "replace_peers" => {
            must_be_true(key, value)?;
            Ok(SetOp::ReplacePeers)
        }
        _ => Err(UapiError::invalid(format!(
            "invalid device key {}",
            printable(key.as_bytes())
        ))),
    }
}

fn peer_line(
    p: &mut PeerOp,
    key: &str,
    value: &str,
    ifindex: &dyn Fn(&str) -> Option<u32>,
) -> Result<(), UapiError> {
    match key {
        "remove" => {
            must_be_true(key, value)?;
            p.remove = true;
        }
        "update_only" => {
            must_be_true(key, value)?;
            p.update_only = true;
        }
        "preshared_key" => p.preshared_key = Some(secret(key, value)?),
        "endpoint" => {
            let ep = endpoint(value, ifindex).ok_or_else(|| {
                UapiError::invalid(format!("endpoint: invalid {}", printable(value.as_bytes())))
            })?;
            p.endpoint = Some(ep);
        }
        "persistent_keepalive_interval" => p.persistent_keepalive = Some(decimal(key, value)?),
        "replace_allowed_ips" => {
            must_be_true(key, value)?;
            p.replace_allowed_ips = true;
            // Everything added or removed so far is replaced anyway.
            p.allowed_ips.clear();
        }
        "allowed_ip" => {
            // A leading `-` removes the prefix; only one is stripped, as
            // wireguard-go strips one.
            let change = match value.strip_prefix('-') {
                Some(v) => AllowedIpChange::Remove(prefix(v)?),
                None => AllowedIpChange::Add(prefix(value)?),
            };
            p.allowed_ips.push(change);
        }
        "protocol_version" => {
            if value != "1" {
                return Err(UapiError::invalid(format!(
                    "unsupported protocol_version {}",
                    printable(value.as_bytes())
                )));
            }
        }
        _ => {
            return Err(UapiError::invalid(format!(
                "invalid peer key {}",
                printable(key.as_bytes())
            )))
        }
    }
    Ok(())
}

/// A private or preshared key; `None` for the all-zero key. The error
/// never quotes the value.
fn secret(key: &str, value: &str) -> Result<Option<SecretKey>, UapiError> {
    let k = SecretKey::from_hex(value)
        .map_err(|_| UapiError::invalid(format!("{key}: not 64 hex digits")))?;
    Ok(if k.is_zero() { None } else { Some(k) })
}

fn must_be_true(key: &str, value: &str) -> Result<(), UapiError> {
    if value == "true" {
        Ok(())
    } else {
        Err(UapiError::invalid(format!(
            "{key}: invalid value {} (only \"true\" is accepted)",
            printable(value.as_bytes())
        )))
    }
}

/// Unsigned decimal as Go's `strconv.ParseUint(s, 10, bits)`: digits only
/// (no sign, no spaces, not empty), in range.
fn decimal<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, UapiError> {
    let bad = || {
        UapiError::invalid(format!(
            "{key}: invalid number {}",
            printable(value.as_bytes())
        ))
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    value.parse().map_err(|_| bad())
}

/// `addr/cidr` in the userspace API's dialect ([`Syntax::Uapi`]), masked
/// as wireguard-go's table stores it.
fn prefix(value: &str) -> Result<AllowedIp, UapiError> {
    cidr::parse(value, Syntax::Uapi)
        .map(cidr::masked)
        .map_err(|e| {
            UapiError::invalid(format!("allowed_ip: {e}: {}", printable(value.as_bytes())))
        })
}

/// Client-supplied bytes for a log message: escaped, and cut short.
fn printable(b: &[u8]) -> String {
    const MAX: usize = 64;
    let mut s: String = b
        .iter()
        .take(MAX)
        .flat_map(|c| c.escape_ascii())
        .map(char::from)
        .collect();
    if b.len() > MAX {
        s.push('…');
    }
    format!("\"{s}\"")
}

/// An endpoint: `a.b.c.d:port` or `[v6]:port`, the IPv6 zone by number or
/// by interface name (wg(8) sends names), a name through `ifindex`.
fn endpoint(value: &str, ifindex: &dyn Fn(&str) -> Option<u32>) -> Option<SocketAddr> {
    if let Ok(ep) = value.parse::<SocketAddr>() {
        return Some(ep);
    }
    let rest = value.strip_prefix('[')?;
    let (inside, port) = rest.split_once("]:")?;
    let (addr, zone) = inside.split_once('%')?;
    if zone.is_empty() || zone.len() > 15 {
        return None;
    }
    let addr: std::net::Ipv6Addr = addr.parse().ok()?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    let index = ifindex(zone)?;
    Some(SocketAddr::V6(std::net::SocketAddrV6::new(
        addr, port, 0, index,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::aip;
    use std::io::{self, BufReader, Read};

    const EINVAL: i32 = libc::EINVAL;
    const EPROTO: i32 = libc::EPROTO;

    fn pk(n: u8) -> PublicKey {
        PublicKey([n; 32])
    }

    fn parse(input: &[u8]) -> Result<Option<Request>, UapiError> {
        read_request(&mut &input[..], &ifindex)
    }

    fn set_ops(input: &str) -> Vec<SetOp> {
        match parse(input.as_bytes()) {
            Ok(Some(Request::Set(ops))) => ops,
            other => panic!("not a set: {other:?}"),
        }
    }

    fn err(input: &[u8]) -> UapiError {
        match parse(input) {
            Err(e) => e,
            Ok(r) => panic!("accepted {:?}: {r:?}", String::from_utf8_lossy(input)),
        }
    }

    /// A set request with a peer section holding this one line.
    fn peer_err(line: &str) -> UapiError {
        err(format!("set=1\npublic_key={}\n{line}\n\n", pk(1).to_hex()).as_bytes())
    }

    /// A hermetic stand-in for the server's interface lookup: only `lo`,
    /// as index 1.
    fn ifindex(name: &str) -> Option<u32> {
        (name == "lo").then_some(1)
    }

    /// A BufRead that counts the bytes its caller consumed.
    struct Counting<R> {
        inner: R,
        consumed: usize,
    }

    impl<R: BufRead> Read for Counting<R> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(out)?;
            self.consumed += n;
            Ok(n)
        }
    }

    impl<R: BufRead> BufRead for Counting<R> {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            self.inner.fill_buf()
        }
        fn consume(&mut self, n: usize) {
            self.consumed += n;
            self.inner.consume(n);
        }
    }

    /// An endless (or long) source of bytes from a fixed pattern or a PRNG,
    /// never holding them all in memory.
    struct Source {
        left: usize,
        state: u64,
        fixed: Option<u8>,
    }

    impl Read for Source {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = out.len().min(self.left);
            for b in &mut out[..n] {
                *b = match self.fixed {
                    Some(f) => f,
                    None => {
                        // xorshift64
                        self.state ^= self.state << 13;
                        self.state ^= self.state >> 7;
                        self.state ^= self.state << 17;
                        (self.state >> 24) as u8
                    }
                };
            }
            self.left -= n;
            Ok(n)
        }
    }

    fn counting(prefix: &[u8], src: Source) -> Counting<BufReader<io::Chain<&[u8], Source>>> {
        Counting {
            inner: BufReader::new(prefix.chain(src)),
            consumed: 0,
        }
    }

    #[test]
    fn parses_setconf_request_with_two_peers() {
        let psk = "11".repeat(32);
        let req = format!(
            "set=1\n\
             private_key={priv}\n\
             listen_port=51820\n\
             fwmark=0\n\
             replace_peers=true\n\
             public_key={p1}\n\
             remove=true\n\
             public_key={p2}\n\
             protocol_version=1\n\
             preshared_key={psk}\n\
             endpoint=[2001:db8::1]:51820\n\
             persistent_keepalive_interval=25\n\
             allowed_ip=192.0.2.0/24\n\
             replace_allowed_ips=true\n\
             allowed_ip=10.0.0.0/24\n\
             allowed_ip=10.9.8.7/8\n\
             allowed_ip=fd00::/64\n\
             allowed_ip=-192.168.1.0/24\n\
             allowed_ip=0.0.0.0/0\n\
             \n",
            priv = "a0".repeat(32),
            p1 = pk(1).to_hex(),
            p2 = pk(2).to_hex(),
        );
        let ops = set_ops(&req);
        assert_eq!(ops.len(), 6, "{ops:?}");
        assert_eq!(
            ops[0],
            SetOp::PrivateKey(Some(SecretKey::from_bytes([0xa0; 32])))
        );
        assert_eq!(ops[1], SetOp::ListenPort(51820));
        assert_eq!(ops[2], SetOp::Fwmark(0));
        assert_eq!(ops[3], SetOp::ReplacePeers);
        let mut removed = PeerOp::new(pk(1));
        removed.remove = true;
        assert_eq!(ops[4], SetOp::Peer(removed));
        let SetOp::Peer(p) = &ops[5] else {
            panic!("not a peer: {:?}", ops[5]);
        };
        assert_eq!(p.public_key, pk(2));
        assert!(!p.remove && !p.update_only);
        assert_eq!(
            p.preshared_key,
            Some(Some(SecretKey::from_bytes([0x11; 32])))
        );
        assert_eq!(p.endpoint, Some("[2001:db8::1]:51820".parse().unwrap()));
        assert_eq!(p.persistent_keepalive, Some(25));
        assert!(p.replace_allowed_ips);
        // 192.0.2.0/24 came before replace_allowed_ips and is dropped;
        // 10.9.8.7/8 is masked.
        assert_eq!(
            p.allowed_ips,
            vec![
                AllowedIpChange::Add(aip("10.0.0.0", 24)),
                AllowedIpChange::Add(aip("10.0.0.0", 8)),
                AllowedIpChange::Add(aip("fd00::", 64)),
                AllowedIpChange::Remove(aip("192.168.1.0", 24)),
                AllowedIpChange::Add(aip("0.0.0.0", 0)),
            ]
        );
    }

    #[test]
    fn zero_keys_mean_none_and_other_peer_keys() {
        let zero = "0".repeat(64);
        let ops = set_ops(&format!(
            "set=1\nprivate_key={zero}\npublic_key={}\nupdate_only=true\npreshared_key={zero}\n\
             endpoint=192.0.2.1:0051820\npersistent_keepalive_interval=0\n\n",
            pk(3).to_hex()
        ));
        assert_eq!(ops[0], SetOp::PrivateKey(None));
        let mut p = PeerOp::new(pk(3));
        p.update_only = true;
        p.preshared_key = Some(None);
        p.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        p.persistent_keepalive = Some(0);
        assert_eq!(ops[1], SetOp::Peer(p));
    }

    #[test]
    fn uppercase_hex_and_crlf_lines_are_accepted() {
        let ops = set_ops(&format!(
            "set=1\nlisten_port=1\r\npublic_key={}\r\n\r\n",
            "AB".repeat(32)
        ));
        assert_eq!(
            ops,
            vec![
                SetOp::ListenPort(1),
                SetOp::Peer(PeerOp::new(PublicKey([0xab; 32])))
            ]
        );
    }

    #[test]
    fn empty_set_is_fine() {
        assert_eq!(set_ops("set=1\n\n"), vec![]);
    }

    #[test]
    fn several_requests_on_one_reader() {
        let input = format!(
            "get=1\n\nset=1\nlisten_port=7\n\nset=1\npublic_key={}\nremove=true\n\nget=1\n\n",
            pk(9).to_hex()
        );
        let mut r = input.as_bytes();
        assert_eq!(read_request(&mut r, &ifindex), Ok(Some(Request::Get)));
        assert_eq!(
            read_request(&mut r, &ifindex),
            Ok(Some(Request::Set(vec![SetOp::ListenPort(7)])))
        );
        let mut removed = PeerOp::new(pk(9));
        removed.remove = true;
        assert_eq!(
            read_request(&mut r, &ifindex),
            Ok(Some(Request::Set(vec![SetOp::Peer(removed)])))
        );
        assert_eq!(read_request(&mut r, &ifindex), Ok(Some(Request::Get)));
        assert_eq!(read_request(&mut r, &ifindex), Ok(None));
        assert_eq!(read_request(&mut r, &ifindex), Ok(None));
    }

    #[test]
    fn end_of_input() {
        assert_eq!(parse(b""), Ok(None));
        // A set without its empty line ends at end of input, as in
        // wireguard-go.
        let mut r = &b"set=1\nlisten_port=5\n"[..];
        assert_eq!(
            read_request(&mut r, &ifindex),
            Ok(Some(Request::Set(vec![SetOp::ListenPort(5)])))
        );
        assert_eq!(read_request(&mut r, &ifindex), Ok(None));
        // But a line cut off is not applied.
        assert_eq!(err(b"set=1\nlisten_port=5").errno, EPROTO);
        assert_eq!(err(b"se").errno, EPROTO);
        assert_eq!(err(b"get=1\n").errno, EPROTO);
    }

    #[test]
    fn operation_line_errors() {
        assert_eq!(err(b"get=1\nx\n").errno, EINVAL);
        assert_eq!(err(b"get=1\nget=1\n\n").errno, EINVAL);
        for op in [
            &b"get=2\n\n"[..],
            b"set=2\n\n",
            b"get=1\r\n\n",
            b"get\n\n",
            b"\n",
            b" get=1\n\n",
            b"listen_port=1\n\n",
        ] {
            assert_eq!(err(op).errno, EPROTO, "{:?}", String::from_utf8_lossy(op));
        }
    }

    #[test]
    fn unknown_keys() {
        assert_eq!(err(b"set=1\nfoo=bar\n\n").errno, EINVAL);
        assert_eq!(err(b"set=1\nlisten_port =1\n\n").errno, EINVAL);
        assert_eq!(err(b"set=1\n=1\n\n").errno, EINVAL);
        assert_eq!(err(b"set=1\n\xff=1\n\n").errno, EINVAL);
        assert_eq!(peer_err("foo=bar").errno, EINVAL);
        // Device keys in a peer section are unknown peer keys.
        assert_eq!(peer_err("listen_port=1").errno, EINVAL);
        assert_eq!(
            peer_err(&format!("private_key={}", "1".repeat(64))).errno,
            EINVAL
        );
        // Read-only keys of the get reply cannot be set.
        assert_eq!(peer_err("rx_bytes=1").errno, EINVAL);
        assert_eq!(peer_err("last_handshake_time_sec=1").errno, EINVAL);
    }

    #[test]
    fn peer_key_before_public_key() {
        // wireguard-go treats it as an unknown device key: EINVAL.
        for l in [
            "endpoint=192.0.2.1:1",
            "allowed_ip=10.0.0.0/8",
            "remove=true",
            "protocol_version=1",
            &format!("preshared_key={}", "1".repeat(64)),
        ] {
            let e = err(format!("set=1\n{l}\n\n").as_bytes());
            assert_eq!(e.errno, EINVAL, "{l}");
        }
    }

    #[test]
    fn bad_hex() {
        for v in [
            "",
            "00",
            &"0".repeat(63),
            &"0".repeat(65),
            &"g".repeat(64),
            &format!(" {}", "0".repeat(63)),
        ] {
            assert_eq!(
                err(format!("set=1\npublic_key={v}\n\n").as_bytes()).errno,
                EINVAL
            );
            assert_eq!(
                err(format!("set=1\nprivate_key={v}\n\n").as_bytes()).errno,
                EINVAL
            );
            assert_eq!(peer_err(&format!("preshared_key={v}")).errno, EINVAL);
        }
        // A secret's value is never quoted in the message.
        let secretish = format!("{}x", "5".repeat(63));
        let e = err(format!("set=1\nprivate_key={secretish}\n\n").as_bytes());
        assert!(!e.message.contains("5555"), "{}", e.message);
        let e = peer_err(&format!("preshared_key={secretish}"));
        assert!(!e.message.contains("5555"), "{}", e.message);
    }

    #[test]
    fn bad_endpoints() {
        for v in [
            "",
            "192.0.2.1",
            "192.0.2.1:",
            "192.0.2.1:65536",
            "192.0.2.1:+1",
            "192.0.2.1:-1",
            "192.0.2.1: 1",
            " 192.0.2.1:1",
            "192.0.2.1:1 ",
            "192.0.02.1:1",
            "[192.0.2.1]:1",
            "2001:db8::1:51820",
            "[2001:db8::1]",
            "[2001:db8::1]:",
            "[fe80::1%nosuchif0]:1",
            "[fe80::1%]:1",
            "[fe80::1%lo]:+1",
            "example.com:51820",
        ] {
            assert_eq!(peer_err(&format!("endpoint={v}")).errno, EINVAL, "{v:?}");
        }
    }

    #[test]
    fn named_ipv6_zone_is_looked_up() {
        let ep = endpoint("[fe80::1%lo]:51820", &ifindex).expect("lo exists");
        let SocketAddr::V6(v6) = ep else {
            panic!("not IPv6: {ep}");
        };
        assert_eq!(v6.port(), 51820);
        assert_eq!(v6.scope_id(), 1);
        // A numeric zone needs no lookup.
        let ep = endpoint("[fe80::1%7]:1", &|_| None).expect("numeric zone");
        let SocketAddr::V6(v6) = ep else {
            panic!("not IPv6: {ep}");
        };
        assert_eq!(v6.scope_id(), 7);
        assert_eq!(endpoint("[fe80::1%lo]:1", &|_| None), None);
    }

    #[test]
    fn bad_allowed_ips() {
        for v in [
            "",
            "-",
            "10.0.0.0",
            "10.0.0.0/",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/00",
            "10.0.0.0/+8",
            "10.0.0.0/-8",
            "10.0.0.0/ 8",
            "10.0.0.0/8 ",
            "10.0.0.0/1000",
            "10.0.0.0/8/8",
            "10.0.0/8",
            "::/129",
            "fe80::%eth0/64",
            "fe80::%2/64",
            "--10.0.0.0/8",
            "+10.0.0.0/8",
            "example.com/32",
        ] {
            assert_eq!(peer_err(&format!("allowed_ip={v}")).errno, EINVAL, "{v:?}");
        }
        // The edges that are fine.
        for (v, ip) in [
            ("10.1.2.3/32", aip("10.1.2.3", 32)),
            ("::/0", aip("::", 0)),
            ("2001:db8::1/128", aip("2001:db8::1", 128)),
            ("2001:db8:ffff::/33", aip("2001:db8:8000::", 33)),
            ("::ffff:10.0.0.0/104", aip("::ffff:10.0.0.0", 104)),
        ] {
            let ops = set_ops(&format!(
                "set=1\npublic_key={}\nallowed_ip={v}\n\n",
                pk(1).to_hex()
            ));
            let SetOp::Peer(p) = &ops[0] else { panic!() };
            assert_eq!(p.allowed_ips, vec![AllowedIpChange::Add(ip)], "{v}");
        }
    }

    #[test]
    fn bad_numbers() {
        for v in ["", "+1", "-1", " 1", "1 ", "65536", "0x10", "1_0", "１"] {
            assert_eq!(
                err(format!("set=1\nlisten_port={v}\n\n").as_bytes()).errno,
                EINVAL,
                "{v:?}"
            );
            assert_eq!(
                peer_err(&format!("persistent_keepalive_interval={v}")).errno,
                EINVAL
            );
        }
        assert_eq!(err(b"set=1\nfwmark=4294967296\n\n").errno, EINVAL);
        assert_eq!(err(b"set=1\nfwmark=-1\n\n").errno, EINVAL);
        assert_eq!(
            set_ops("set=1\nfwmark=4294967295\n\n"),
            vec![SetOp::Fwmark(u32::MAX)]
        );
    }

    #[test]
    fn protocol_version_other_than_1() {
        for v in ["2", "0", "", "01", " 1"] {
            assert_eq!(
                peer_err(&format!("protocol_version={v}")).errno,
                EINVAL,
                "{v:?}"
            );
        }
    }

    #[test]
    fn booleans_accept_only_true() {
        for v in ["false", "True", "TRUE", "1", "", "true ", "yes"] {
            assert_eq!(
                err(format!("set=1\nreplace_peers={v}\n\n").as_bytes()).errno,
                EINVAL
            );
            for k in ["remove", "update_only", "replace_allowed_ips"] {
                assert_eq!(peer_err(&format!("{k}={v}")).errno, EINVAL, "{k}={v:?}");
            }
        }
    }

    #[test]
    fn line_without_equals() {
        assert_eq!(err(b"set=1\nlisten_port\n\n").errno, EPROTO);
        assert_eq!(peer_err("remove").errno, EPROTO);
        assert_eq!(err(b"set=1\n \n\n").errno, EPROTO);
    }

    #[test]
    fn non_utf8_value() {
        assert_eq!(err(b"set=1\nlisten_port=\xff\n\n").errno, EINVAL);
    }

    #[test]
    fn ten_megabyte_line_is_refused_after_a_bounded_read() {
        const TEN_MB: usize = 10 << 20;
        for prefix in [&b"set=1\nlisten_port="[..], b"set=1\n", b""] {
            let mut r = counting(
                prefix,
                Source {
                    left: TEN_MB,
                    state: 0,
                    fixed: Some(b'1'),
                },
            );
            let e = read_request(&mut r, &ifindex).unwrap_err();
            assert_eq!(e.errno, EINVAL);
            // The op line (if any) plus at most MAX_LINE + 1 bytes of the
            // long line.
            let op_line = prefix.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
            assert!(
                r.consumed <= op_line + MAX_LINE + 1,
                "consumed {}",
                r.consumed
            );
        }
        // A line of exactly MAX_LINE bytes is still a line.
        let long = format!("set=1\nx={}\n\n", "y".repeat(MAX_LINE - 2));
        assert_eq!(err(long.as_bytes()).errno, EINVAL); // unknown key, not too long
        assert!(err(long.as_bytes()).message.contains("invalid device key"));
    }

    #[test]
    fn request_size_is_bounded() {
        // Endless valid lines: refused once past MAX_REQUEST.
        let line = b"fwmark=1\n";
        struct Repeat(&'static [u8], usize);
        impl Read for Repeat {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                let n = out.len().min(self.0.len() - self.1);
                out[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
                self.1 = (self.1 + n) % self.0.len();
                Ok(n)
            }
        }
        let mut r = Counting {
            inner: BufReader::new((&b"set=1\n"[..]).chain(Repeat(line, 0))),
            consumed: 0,
        };
        let e = read_request(&mut r, &ifindex).unwrap_err();
        assert_eq!(e.errno, libc::EMSGSIZE);
        assert!(r.consumed <= MAX_REQUEST + MAX_LINE + 1);
    }

    #[test]
    fn random_garbage_is_an_error_not_a_panic() {
        const TEN_MB: usize = 10 << 20;
        for seed in 1..=4u64 {
            for prefix in [&b""[..], b"set=1\n", b"get=1\n"] {
                let mut r = counting(
                    prefix,
                    Source {
                        left: TEN_MB,
                        state: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                        fixed: None,
                    },
                );
                let e = read_request(&mut r, &ifindex).unwrap_err();
                assert!([EINVAL, EPROTO].contains(&e.errno), "{e:?}");
                assert!(r.consumed <= MAX_REQUEST + MAX_LINE + 1);
            }
        }
    }

    #[test]
    fn io_errors_are_eio() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::new(io::ErrorKind::TimedOut, "slow client"))
            }
        }
        let mut r = BufReader::new(Broken);
        assert_eq!(read_request(&mut r, &ifindex).unwrap_err().errno, libc::EIO);
        let mut r = BufReader::new((&b"set=1\n"[..]).chain(Broken));
        assert_eq!(read_request(&mut r, &ifindex).unwrap_err().errno, libc::EIO);
    }
}
