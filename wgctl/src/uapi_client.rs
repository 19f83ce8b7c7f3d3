//! The client side of the cross-platform userspace API, as wgd speaks it
//! on `/var/run/wireguard/IFNAME.sock` (see `wgd::uapi` for the server).
//!
//! - [`Uapi::get`] sends wgd's extension `wgd_get=1` first: its reply is a
//!   `get` reply preceded by what only wgd knows (the interface public key,
//!   the private key's file, drop and IPC counters). A daemon that is not
//!   wgd answers it with an error (or hangs up), and then the request is
//!   repeated as a plain `get=1` on a new connection.
//! - [`Uapi::set`] sends one `set=1` request built by [`format_set`] from
//!   `wgd::uapi::SetOp`s, the same types wgd parses the request into, so
//!   the unit tests can check the text against wgd's own parser.
//! - [`Uapi::list`] names the interfaces that have a live socket.
//!
//! Errno on the wire is negative (`errno=-22`); a positive value is taken
//! as the same errno.
//!
//! Secrets: a request that sets a key carries it in hex, so the request
//! text is zeroized after it is sent. A `get` reply from another daemon
//! (wireguard-go) carries its private and preshared keys: those lines are
//! read into a fixed zeroizing buffer, the private key only serves to
//! derive the public key, and the preshared key only to note that one
//! exists; neither is kept.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use proto::ipc::AllowedIp;
use proto::keys::{PublicKey, SecretKey};
use wgd::uapi::{AllowedIpChange, SetOp};
use zeroize::Zeroizing;

use crate::device::{Device, Peer, Psk, WgdStats};
use crate::error::{io_text, strerror, Error, Result};

/// Where userspace WireGuard implementations put their sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// The longest reply line accepted (wgd's own request limit).
const MAX_LINE: usize = 4096;

/// The most bytes of one reply: about 100,000 peers with a few allowed IPs
/// each. A bound so that a confused daemon cannot exhaust memory.
const MAX_REPLY: usize = 64 << 20;

/// How long to wait for a daemon before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// `IFNAMSIZ - 1`: the longest interface name Linux allows.
const MAX_IFNAME: usize = 15;

/// A client for the sockets in one directory ([`SOCKET_DIR`] except in
/// tests).
#[derive(Debug, Clone)]
pub struct Uapi {
    dir: PathBuf,
}

impl Default for Uapi {
    fn default() -> Self {
        Uapi::new(SOCKET_DIR)
    }
}

impl Uapi {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Uapi { dir: dir.into() }
    }

    /// `DIR/IFNAME.sock`, after checking that `ifname` is a name Linux
    /// would accept for an interface.
    pub fn socket_path(&self, ifname: &str) -> Result<PathBuf> {
        check_ifname(ifname)?;
        Ok(self.dir.join(format!("{ifname}.sock")))
    }

    /// The interfaces with a socket that accepts connections, sorted.
    /// A missing directory means none.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::new(format!(
                    "cannot list {}: {}",
                    self.dir.display(),
                    io_text(&e)
                )))
            }
        };
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".sock")) else {
                continue;
            };
            if check_ifname(name).is_err() {
                continue;
            }
            if !entry.file_type().is_ok_and(|t| t.is_socket()) {
                continue;
            }
            // A socket nobody listens on is left over from a daemon that
            // died: not an interface.
            match UnixStream::connect(entry.path()) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ECONNREFUSED) => continue,
                _ => names.push(name.to_string()),
            }
        }
        names.sort();
        Ok(names)
    }

    /// The state of `ifname`: `wgd_get=1`, or `get=1` from a daemon that
    /// does not know wgd's extension.
    pub fn get(&self, ifname: &str) -> Result<Device> {
        let path = self.socket_path(ifname)?;
        match get_once(&path, ifname, true)? {
            Some(dev) => Ok(dev),
            None => get_once(&path, ifname, false)?
                .ok_or_else(|| Error::new(format!("reading {ifname}: the daemon did not answer"))),
        }
    }

    /// Applies `ops` to `ifname` as one `set=1` request.
    pub fn set(&self, ifname: &str, ops: &[SetOp]) -> Result<()> {
        let path = self.socket_path(ifname)?;
        let stream = connect(&path, ifname)?;
        let request = format_set(ops);
        let what = || format!("setting {ifname}");
        (&stream)
            .write_all(request.as_bytes())
            .map_err(|e| Error::new(format!("{}: {}", what(), io_text(&e))))?;
        drop(request);
        let mut reader = BufReader::new(&stream);
        match read_reply(&mut reader, |_, _| Ok(())).map_err(|e| e.context(what()))? {
            None => Err(Error::new(format!(
                "{}: the daemon closed the connection without answering",
                what()
            ))),
            Some(0) => Ok(()),
            Some(errno) => Err(errno_error(&what(), errno)),
        }
    }
}

/// `setting wg0: Invalid argument (errno 22)`.
fn errno_error(what: &str, errno: i32) -> Error {
    Error::new(format!("{what}: {} (errno {errno})", strerror(errno)))
}

/// Rejects what cannot be an interface name (and so could escape the
/// socket directory).
pub fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{:?}: not a valid interface name",
            name
        )))
    }
}

fn connect(path: &Path, ifname: &str) -> Result<UnixStream> {
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::new(format!(
            "{ifname}: no such interface (no {})",
            path.display()
        )),
        io::ErrorKind::ConnectionRefused => Error::new(format!(
            "{ifname}: no daemon is listening on {} (a stale socket?)",
            path.display()
        )),
        _ => Error::new(format!(
            "{ifname}: cannot connect to {}: {}",
            path.display(),
            io_text(&e)
        )),
    })?;
    let timeouts = stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if let Err(e) = timeouts {
        return Err(Error::new(format!("{ifname}: {}", io_text(&e))));
    }
    Ok(stream)
}

/// One `wgd_get=1` (`wgd` true) or `get=1` exchange on a new connection.
/// `Ok(None)`: the daemon refused `wgd_get` (answered an error or hung
/// up), so it is not wgd.
fn get_once(path: &Path, ifname: &str, wgd: bool) -> Result<Option<Device>> {
    let stream = connect(path, ifname)?;
    let what = format!("reading {ifname}");
    let request: &[u8] = if wgd { b"wgd_get=1\n\n" } else { b"get=1\n\n" };
    if let Err(e) = (&stream).write_all(request) {
        return Err(Error::new(format!("{what}: {}", io_text(&e))));
    }
    let mut parser = DeviceParser::new(ifname, wgd);
    let mut reader = BufReader::new(&stream);
    let status = read_reply(&mut reader, |k, v| parser.line(k, v));
    match status {
        Ok(Some(0)) => parser.finish().map(Some).map_err(|e| e.context(&what)),
        Ok(Some(_) | None) if wgd => Ok(None),
        // The daemon may have hung up on the unknown request before
        // reading all of it.
        Err(_) if wgd => Ok(None),
        Ok(None) => Err(Error::new(format!(
            "{what}: the daemon closed the connection without answering"
        ))),
        Ok(Some(errno)) => Err(errno_error(&what, errno)),
        Err(e) => Err(e.context(&what)),
    }
}

/// Reads one reply: `key=value` lines through the empty line, handing
/// each line but `errno=` to `on_line`. Returns the errno (positive),
/// or `None` if the connection closed before the reply began.
fn read_reply<R: BufRead>(
    r: &mut R,
    mut on_line: impl FnMut(&str, &str) -> Result<()>,
) -> Result<Option<i32>> {
    // Fixed capacity, never exceeded (`take` bounds each read), so the
    // buffer is never reallocated and leaves no copy of a key behind.
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_LINE + 1));
    let mut total = 0usize;
    let mut errno = None;
    let mut first = true;
    loop {
        line.clear();
        let n = r
            .by_ref()
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::new(io_text(&e)))?;
        if n == 0 {
            if first {
                return Ok(None);
            }
            return Err(Error::new("the daemon closed the connection mid-reply"));
        }
        first = false;
        total += n;
        if total > MAX_REPLY {
            return Err(Error::new(format!("reply longer than {MAX_REPLY} bytes")));
        }
        match line.last() {
            Some(b'\n') => {
                line.pop();
            }
            _ if n > MAX_LINE => {
                return Err(Error::new(format!(
                    "reply line longer than {MAX_LINE} bytes"
                )))
            }
            _ => return Err(Error::new("the daemon closed the connection mid-line")),
        }
        if line.is_empty() {
            return match errno {
                Some(e) => Ok(Some(e)),
                None => Err(Error::new("reply without errno")),
            };
        }
        let text = std::str::from_utf8(&line).map_err(|_| Error::new("reply is not UTF-8"))?;
        let Some((key, value)) = text.split_once('=') else {
            return Err(Error::new(format!(
                "malformed reply line {:?}",
                truncate(text)
            )));
        };
        if key == "errno" {
            let n: i64 = value
                .parse()
                .map_err(|_| Error::new(format!("malformed errno {:?}", truncate(value))))?;
            let n = i32::try_from(n.unsigned_abs())
                .map_err(|_| Error::new(format!("errno {n} out of range")))?;
            errno = Some(n);
        } else {
            on_line(key, value)?;
        }
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Turns the lines of a `get` (or `wgd_get`) reply into a [`Device`].
struct DeviceParser {
    dev: Device,
    wgd: bool,
    /// Still in the lines wgd puts before the `get` part: a `public_key=`
    /// here is the interface's, not a peer's.
    header: bool,
    peer: Option<Peer>,
}

impl DeviceParser {
    fn new(name: &str, wgd: bool) -> Self {
        DeviceParser {
            dev: Device {
                name: name.to_string(),
                is_wgd: wgd,
                stats: wgd.then(WgdStats::default),
                ..Device::default()
            },
            wgd,
            header: wgd,
            peer: None,
        }
    }

    fn line(&mut self, key: &str, value: &str) -> Result<()> {
        if key == "public_key" {
            let k = PublicKey::from_hex(value).map_err(|_| bad(key, value))?;
            if self.header {
                self.dev.public_key = Some(k);
            } else {
                if let Some(p) = self.peer.take() {
                    self.dev.peers.push(p);
                }
                let mut p = Peer::new(k);
                // wgd never says whether a peer has a preshared key; other
                // daemons always print one (zeros for none).
                p.preshared_key = if self.wgd { Psk::Unknown } else { Psk::None };
                self.peer = Some(p);
            }
            return Ok(());
        }
        if let Some(p) = self.peer.as_mut() {
            return peer_line(p, key, value);
        }
        match key {
            "private_key_file" if self.header => {
                self.dev.private_key_file = Some(PathBuf::from(value));
            }
            "private_key" => {
                // Only another daemon sends this: derive the public key
                // (as wg(8) does) and forget the secret.
                let k = SecretKey::from_hex(value).map_err(|_| bad_secret(key))?;
                self.dev.public_key = (!k.is_zero()).then(|| wg_crypto::public_key(&k));
            }
            "listen_port" => self.dev.listen_port = number(key, value)?,
            "fwmark" => self.dev.fwmark = number(key, value)?,
            _ if key.starts_with("drop_")
                || key.starts_with("handshake_")
                || key == "ipc_to_handshake" =>
            {
                self.header = false;
                let n: u64 = number(key, value)?;
                let stats = self.dev.stats.get_or_insert_with(WgdStats::default);
                let d = &mut stats.drops;
                match key {
                    "drop_malformed" => d.malformed = n,
                    "drop_unknown_index" => d.unknown_index = n,
                    "drop_replay" => d.replay = n,
                    "drop_auth_failed" => d.auth_failed = n,
                    "drop_source_not_allowed" => d.source_not_allowed = n,
                    "drop_no_route" => d.no_route = n,
                    "drop_send_failed" => d.send_failed = n,
                    "ipc_to_handshake" => stats.ipc_to_handshake = n,
                    "handshake_malformed" => stats.handshake.malformed = n,
                    "handshake_bad_mac1" => stats.handshake.bad_mac1 = n,
                    "handshake_cookie_replies" => stats.handshake.cookie_replies_sent = n,
                    "handshake_rate_limited" => stats.handshake.rate_limited = n,
                    "handshake_unknown_index" => stats.handshake.unknown_index = n,
                    "handshake_rejected" => stats.handshake.rejected = n,
                    "handshake_replayed_timestamp" => stats.handshake.replayed_timestamp = n,
                    "handshake_initiation_flood" => stats.handshake.initiation_flood = n,
                    // A counter this version does not know.
                    _ => {}
                }
            }
            // Keys of a newer daemon: ignored, as wg(8) does.
            _ => {}
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Device> {
        if let Some(p) = self.peer.take() {
            self.dev.peers.push(p);
        }
        Ok(self.dev)
    }
}

fn peer_line(p: &mut Peer, key: &str, value: &str) -> Result<()> {
    match key {
        "preshared_key" => {
            let k = SecretKey::from_hex(value).map_err(|_| bad_secret(key))?;
            p.preshared_key = if k.is_zero() { Psk::None } else { Psk::Set };
        }
        "endpoint" => p.endpoint = Some(value.parse::<SocketAddr>().map_err(|_| bad(key, value))?),
        "last_handshake_time_sec" => {
            let s: u64 = number(key, value)?;
            let ns = p.last_handshake.map_or(0, |t| t.1);
            p.last_handshake = Some((s, ns));
        }
        "last_handshake_time_nsec" => {
            let ns: u32 = number(key, value)?;
            let s = p.last_handshake.map_or(0, |t| t.0);
            p.last_handshake = Some((s, ns));
        }
        "rx_bytes" => p.rx_bytes = number(key, value)?,
        "tx_bytes" => p.tx_bytes = number(key, value)?,
        "persistent_keepalive_interval" => p.persistent_keepalive = number(key, value)?,
        "allowed_ip" => p
            .allowed_ips
            .push(parse_prefix(value).ok_or_else(|| bad(key, value))?),
        _ => {}
    }
    if p.last_handshake == Some((0, 0)) {
        p.last_handshake = None;
    }
    Ok(())
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(key, value));
    }
    value.parse().map_err(|_| bad(key, value))
}

fn bad(key: &str, value: &str) -> Error {
    Error::new(format!("malformed {key} {:?} in reply", truncate(value)))
}

/// Never quotes the value.
fn bad_secret(key: &str) -> Error {
    Error::new(format!("malformed {key} in reply"))
}

/// `ADDR/CIDR`, the cidr within the family's length.
pub fn parse_prefix(s: &str) -> Option<AllowedIp> {
    let (addr, cidr) = s.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    if cidr.is_empty() || !cidr.bytes().all(|b| b.is_ascii_digit()) || cidr.len() > 3 {
        return None;
    }
    let cidr: u8 = cidr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (cidr <= max).then_some(AllowedIp { addr, cidr })
}

/// The text of a `set=1` request for `ops`, through its empty line.
/// Zeroized when dropped: it may carry keys.
pub fn format_set(ops: &[SetOp]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(set_capacity(ops)));
    s.push_str("set=1\n");
    for op in ops {
        match op {
            SetOp::PrivateKey(k) => put_secret(&mut s, "private_key", k.as_ref()),
            SetOp::ListenPort(p) => put(&mut s, format_args!("listen_port={p}")),
            SetOp::Fwmark(m) => put(&mut s, format_args!("fwmark={m}")),
            SetOp::ReplacePeers => s.push_str("replace_peers=true\n"),
            SetOp::Peer(p) => {
                put(&mut s, format_args!("public_key={}", p.public_key.to_hex()));
                if p.remove {
                    s.push_str("remove=true\n");
                }
                if p.update_only {
                    s.push_str("update_only=true\n");
                }
                if let Some(psk) = &p.preshared_key {
                    put_secret(&mut s, "preshared_key", psk.as_ref());
                }
                if let Some(ep) = p.endpoint {
                    // `SocketAddr`'s text (`[v6%zone]:port` with a numeric
                    // zone) is what wgd parses.
                    put(&mut s, format_args!("endpoint={ep}"));
                }
                if let Some(k) = p.persistent_keepalive {
                    put(&mut s, format_args!("persistent_keepalive_interval={k}"));
                }
                if p.replace_allowed_ips {
                    s.push_str("replace_allowed_ips=true\n");
                }
                for change in &p.allowed_ips {
                    let (sign, ip) = match change {
                        AllowedIpChange::Add(ip) => ("", ip),
                        AllowedIpChange::Remove(ip) => ("-", ip),
                    };
                    put(
                        &mut s,
                        format_args!("allowed_ip={sign}{}/{}", ip.addr, ip.cidr),
                    );
                }
            }
        }
    }
    s.push('\n');
    s
}

/// An upper bound on the length of [`format_set`]'s text, so that its
/// buffer is allocated once and never moved (a move would leave a copy of
/// the keys in freed memory). The device lines and `set=1` take under
/// 160 bytes, a peer's fixed lines under 400 (its longest, an IPv6
/// endpoint with a zone, is 70), an allowed IP under 64.
fn set_capacity(ops: &[SetOp]) -> usize {
    160 + ops
        .iter()
        .map(|op| match op {
            SetOp::Peer(p) => 400 + 64 * p.allowed_ips.len(),
            _ => 0,
        })
        .sum::<usize>()
}

fn put(s: &mut String, args: std::fmt::Arguments<'_>) {
    // Writing to a String cannot fail.
    let _ = s.write_fmt(args);
    s.push('\n');
}

/// `key=HEX`, or all zeros for "no key"; written digit by digit into the
/// zeroizing request so that no other copy of the key is made.
fn put_secret(s: &mut String, key: &str, secret: Option<&SecretKey>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    s.push_str(key);
    s.push('=');
    match secret {
        Some(k) => {
            for &b in k.expose() {
                s.push(HEX[usize::from(b >> 4)] as char);
                s.push(HEX[usize::from(b & 15)] as char);
            }
        }
        None => (0..64).for_each(|_| s.push('0')),
    }
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use wgd::uapi::{read_request, PeerOp, Request};

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn aip(s: &str, cidr: u8) -> AllowedIp {
        AllowedIp {
            addr: s.parse().unwrap(),
            cidr,
        }
    }

    fn parse_with_wgd(text: &str) -> Vec<SetOp> {
        let mut r = io::Cursor::new(text.as_bytes().to_vec());
        match read_request(&mut r).unwrap() {
            Some(Request::Set(ops)) => ops,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_text_is_what_wgd_parses() {
        let mut peer = PeerOp::new(pk(1));
        peer.preshared_key = Some(Some(SecretKey::from_bytes([7; 32])));
        peer.endpoint = Some("[2001:db8::1]:51820".parse().unwrap());
        peer.persistent_keepalive = Some(25);
        peer.replace_allowed_ips = true;
        peer.allowed_ips = vec![
            AllowedIpChange::Add(aip("10.0.0.0", 8)),
            AllowedIpChange::Remove(aip("fd00::", 64)),
        ];
        let mut gone = PeerOp::new(pk(2));
        gone.remove = true;
        let mut upd = PeerOp::new(pk(3));
        upd.update_only = true;
        upd.preshared_key = Some(None);
        let ops = vec![
            SetOp::PrivateKey(Some(SecretKey::from_bytes([9; 32]))),
            SetOp::ListenPort(51820),
            SetOp::Fwmark(0x1234),
            SetOp::ReplacePeers,
            SetOp::Peer(peer),
            SetOp::Peer(gone),
            SetOp::Peer(upd),
        ];
        let text = format_set(&ops);
        assert!(text.starts_with("set=1\nprivate_key=0909"), "{}", &*text);
        assert_eq!(text.capacity(), set_capacity(&ops), "never reallocated");
        assert!(text.ends_with("\n\n"));
        assert!(text.contains("preshared_key=0000000000"));
        assert!(text.contains("allowed_ip=-fd00::/64\n"));
        assert_eq!(parse_with_wgd(&text), ops);
        // The worst case of every line still fits the first allocation.
        let mut worst = PeerOp::new(pk(4));
        worst.remove = true;
        worst.update_only = true;
        worst.preshared_key = Some(Some(SecretKey::from_bytes([0xff; 32])));
        worst.endpoint = Some(
            "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%4294967295]:65535"
                .parse()
                .unwrap(),
        );
        worst.persistent_keepalive = Some(65535);
        worst.replace_allowed_ips = true;
        worst.allowed_ips =
            vec![AllowedIpChange::Remove(aip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 128)); 3];
        let ops = vec![
            SetOp::PrivateKey(Some(SecretKey::from_bytes([0xff; 32]))),
            SetOp::ListenPort(65535),
            SetOp::Fwmark(u32::MAX),
            SetOp::ReplacePeers,
            SetOp::Peer(worst),
        ];
        let text = format_set(&ops);
        assert_eq!(text.capacity(), set_capacity(&ops), "never reallocated");
        assert_eq!(parse_with_wgd(&text), ops);
        // A private key removal is the all-zero key.
        let text = format_set(&[SetOp::PrivateKey(None)]);
        assert_eq!(*text, format!("set=1\nprivate_key={}\n\n", "0".repeat(64)));
        assert_eq!(parse_with_wgd(&text), vec![SetOp::PrivateKey(None)]);
    }

    fn parse_reply_text(text: &str, wgd: bool) -> Result<Option<Device>> {
        let mut parser = DeviceParser::new("wg0", wgd);
        let mut r = io::Cursor::new(text.as_bytes().to_vec());
        match read_reply(&mut r, |k, v| parser.line(k, v))? {
            Some(0) => parser.finish().map(Some),
            _ => Ok(None),
        }
    }

    #[test]
    fn wgd_get_reply() {
        use wgd::uapi::{format_wgd_get, DeviceInfo, PeerInfo, WgdExtra};
        let info = DeviceInfo {
            listen_port: 51820,
            fwmark: 7,
            peers: vec![
                PeerInfo {
                    public_key: pk(2),
                    endpoint: Some("192.0.2.1:1".parse().unwrap()),
                    last_handshake: Some((1_700_000_000, 5)),
                    rx_bytes: 10,
                    tx_bytes: 20,
                    persistent_keepalive: Some(25),
                    allowed_ips: vec![aip("10.0.0.0", 8), aip("fd00::", 64)],
                },
                PeerInfo {
                    public_key: pk(3),
                    endpoint: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: None,
                    allowed_ips: vec![],
                },
            ],
        };
        let extra = WgdExtra {
            public_key: Some(pk(1)),
            private_key_file: Some("/etc/wgd/key".into()),
            drops: proto::ipc::DropCounters {
                replay: 3,
                no_route: 4,
                ..Default::default()
            },
            handshake_drops: proto::ipc::HandshakeCounters {
                bad_mac1: 5,
                ..Default::default()
            },
            ipc_to_handshake: 9,
        };
        let dev = parse_reply_text(&format_wgd_get(&info, &extra), true)
            .unwrap()
            .unwrap();
        assert!(dev.is_wgd);
        assert_eq!(dev.public_key, Some(pk(1)));
        assert_eq!(dev.private_key_file, Some("/etc/wgd/key".into()));
        assert_eq!((dev.listen_port, dev.fwmark), (51820, 7));
        let stats = dev.stats.unwrap();
        assert_eq!(stats.handshake.bad_mac1, 5);
        assert_eq!((stats.drops.replay, stats.drops.no_route), (3, 4));
        assert_eq!(stats.ipc_to_handshake, 9);
        assert_eq!(dev.peers.len(), 2);
        let p = &dev.peers[0];
        assert_eq!(p.public_key, pk(2));
        assert_eq!(p.preshared_key, Psk::Unknown);
        assert_eq!(p.endpoint, Some("192.0.2.1:1".parse().unwrap()));
        assert_eq!(p.last_handshake, Some((1_700_000_000, 5)));
        assert_eq!(
            (p.rx_bytes, p.tx_bytes, p.persistent_keepalive),
            (10, 20, 25)
        );
        assert_eq!(p.allowed_ips, vec![aip("10.0.0.0", 8), aip("fd00::", 64)]);
        assert_eq!(dev.peers[1].last_handshake, None);

        // An unkeyed wgd: the first public_key after the counters is a peer.
        let extra = WgdExtra::default();
        let dev = parse_reply_text(&format_wgd_get(&info, &extra), true)
            .unwrap()
            .unwrap();
        assert_eq!(dev.public_key, None);
        assert_eq!(dev.peers.len(), 2);
    }

    #[test]
    fn wireguard_go_get_reply() {
        let private = SecretKey::from_bytes([0x42; 32]);
        let public = wg_crypto::public_key(&private);
        let text = format!(
            "private_key={}\nlisten_port=1\npublic_key={}\npreshared_key={}\nprotocol_version=1\n\
             last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
             persistent_keepalive_interval=0\npublic_key={}\npreshared_key={}\nerrno=0\n\n",
            "42".repeat(32),
            pk(5).to_hex(),
            "11".repeat(32),
            pk(6).to_hex(),
            "0".repeat(64),
        );
        let dev = parse_reply_text(&text, false).unwrap().unwrap();
        assert!(!dev.is_wgd);
        assert_eq!(dev.public_key, Some(public));
        assert_eq!(dev.stats, None);
        assert_eq!(dev.peers[0].preshared_key, Psk::Set);
        assert_eq!(dev.peers[1].preshared_key, Psk::None);
    }

    #[test]
    fn errors_and_malformed_replies() {
        assert_eq!(parse_reply_text("errno=-22\n\n", true).unwrap(), None);
        assert!(parse_reply_text("listen_port=x\nerrno=0\n\n", false).is_err());
        assert!(parse_reply_text("listen_port=1\n", false).is_err());
        assert!(parse_reply_text("listen_port=1\n\n", false).is_err());
        assert!(parse_reply_text("garbage\nerrno=0\n\n", false).is_err());
        let long = format!("x={}\nerrno=0\n\n", "y".repeat(MAX_LINE + 10));
        assert!(parse_reply_text(&long, false).is_err());
        // A bad key's value is never quoted.
        let e = parse_reply_text(
            &format!("private_key={}x\nerrno=0\n\n", "5".repeat(63)),
            false,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("555"), "{e}");
        // Unknown keys are skipped.
        let dev = parse_reply_text("future=1\nlisten_port=2\nerrno=0\n\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(dev.listen_port, 2);
    }

    #[test]
    fn interface_names() {
        for ok in ["wg0", "a", "x".repeat(15).as_str(), "wg-home_1.x"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "x".repeat(16).as_str(), "a b", "a\0"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake daemon on a socket in a temp dir: answers `wgd_get` with an
    /// error (as wireguard-go does), then `get` and `set`.
    #[test]
    fn falls_back_to_get_and_sets() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("wgx.sock")).unwrap();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            // The listing's probe, wgd_get, get, set.
            for _ in 0..4 {
                let (stream, _) = listener.accept().unwrap();
                let mut r = BufReader::new(&stream);
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                if first.is_empty() {
                    continue;
                }
                let mut rest = String::new();
                if first == "set=1\n" {
                    loop {
                        let mut l = String::new();
                        r.read_line(&mut l).unwrap();
                        rest.push_str(&l);
                        if l == "\n" {
                            break;
                        }
                    }
                }
                let reply = match first.as_str() {
                    "wgd_get=1\n" => "errno=-22\n\n".to_string(),
                    "get=1\n" => "listen_port=3\nerrno=0\n\n".to_string(),
                    _ => "errno=-22\n\n".to_string(),
                };
                let _ = (&stream).write_all(reply.as_bytes());
                requests.push(first + &rest);
            }
            requests
        });
        let uapi = Uapi::new(dir.path());
        assert_eq!(uapi.list().unwrap(), vec!["wgx".to_string()]);
        let dev = uapi.get("wgx").unwrap();
        assert_eq!(dev.listen_port, 3);
        assert!(!dev.is_wgd);
        let e = uapi.set("wgx", &[SetOp::ListenPort(9)]).unwrap_err();
        assert_eq!(e.to_string(), "setting wgx: Invalid argument (errno 22)");
        let requests = server.join().unwrap();
        assert_eq!(requests[2], "set=1\nlisten_port=9\n\n");

        let e = uapi.get("nope").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "nope: no such interface (no {}/nope.sock)",
                dir.path().display()
            )
        );
    }
}
