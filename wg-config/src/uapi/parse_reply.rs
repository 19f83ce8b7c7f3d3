//! The client's side of a reply: [`read_reply`] reads one reply off a
//! connection, bounded, and [`ReplyParser`] turns the lines of a `get` or
//! `wgd_get` reply into a [`Device`]. It reads wgd's replies and any other
//! implementation's (wireguard-go's, with their secrets).
//!
//! Errno on the wire is negative (`errno=-22`); a positive value is taken
//! as the same errno.
//!
//! Secrets: a `get` reply from another daemon carries its private and
//! preshared keys. Those lines are read into a fixed zeroizing buffer,
//! the private key only serves to derive the public key, and the
//! preshared key only to note that one exists; neither is kept.

use std::io::{self, BufRead, Read};
use std::net::SocketAddr;
use std::path::PathBuf;

use proto::keys::{PublicKey, SecretKey};
use thiserror::Error;
use zeroize::Zeroizing;

use super::{Device, Peer, Psk, WgdStats, MAX_LINE};
use crate::cidr::{self, Syntax};
use crate::keys::public_key;

/// The most bytes of one reply: about 100,000 peers with a few allowed IPs
/// each. A bound so that a confused daemon cannot exhaust memory.
pub const MAX_REPLY: usize = 64 << 20;

/// Why a reply could not be read. The message never quotes a key.
#[derive(Debug, Error)]
pub enum ReplyError {
    /// Reading from the connection failed.
    #[error("{0}")]
    Io(io::Error),
    /// The daemon sent something that is not a reply, worded for the user.
    #[error("{0}")]
    Malformed(String),
}

fn malformed(message: impl Into<String>) -> ReplyError {
    ReplyError::Malformed(message.into())
}

/// Reads one reply: `key=value` lines through the empty line, handing
/// each line but `errno=` to `on_line`. Returns the errno (positive),
/// or `None` if the connection closed before the reply began.
pub fn read_reply<R: BufRead>(
    r: &mut R,
    mut on_line: impl FnMut(&str, &str) -> Result<(), ReplyError>,
) -> Result<Option<i32>, ReplyError> {
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
            .map_err(ReplyError::Io)?;
        if n == 0 {
            if first {
                return Ok(None);
            }
            return Err(malformed("the daemon closed the connection mid-reply"));
        }
        first = false;
        total += n;
        if total > MAX_REPLY {
            return Err(malformed(format!("reply longer than {MAX_REPLY} bytes")));
        }
        match line.last() {
            Some(b'\n') => {
                line.pop();
            }
            _ if n > MAX_LINE => {
                return Err(malformed(format!(
                    "reply line longer than {MAX_LINE} bytes"
                )))
            }
            _ => return Err(malformed("the daemon closed the connection mid-line")),
        }
        if line.is_empty() {
            return match errno {
                Some(e) => Ok(Some(e)),
                None => Err(malformed("reply without errno")),
            };
        }
        let text = std::str::from_utf8(&line).map_err(|_| malformed("reply is not UTF-8"))?;
        let Some((key, value)) = text.split_once('=') else {
            return Err(malformed(format!(
                "malformed reply line {:?}",
                truncate(text)
            )));
        };
        if key == "errno" {
            let n: i64 = value
                .parse()
                .map_err(|_| malformed(format!("malformed errno {:?}", truncate(value))))?;
            let n = i32::try_from(n.unsigned_abs())
                .map_err(|_| malformed(format!("errno {n} out of range")))?;
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

/// Turns the lines of a `get` (or `wgd_get`) reply into a [`Device`]:
/// feed it every line [`read_reply`] hands on, then [`finish`](Self::finish).
pub struct ReplyParser {
    dev: Device,
    wgd: bool,
    /// Still in the lines wgd puts before the `get` part: a `public_key=`
    /// here is the interface's, not a peer's.
    header: bool,
    peer: Option<Peer>,
}

impl ReplyParser {
    /// For the reply to `wgd_get=1` (`wgd`) or to `get=1`.
    pub fn new(wgd: bool) -> Self {
        ReplyParser {
            dev: Device {
                stats: wgd.then(WgdStats::default),
                ..Device::default()
            },
            wgd,
            header: wgd,
            peer: None,
        }
    }

    /// One `key=value` line of the reply.
    pub fn line(&mut self, key: &str, value: &str) -> Result<(), ReplyError> {
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
                self.dev.public_key = (!k.is_zero()).then(|| public_key(&k));
            }
            "listen_port" => self.dev.listen_port = number(key, value)?,
            "fwmark" => self.dev.fwmark = number(key, value)?,
            // wgd's counters, which only a `wgd_get` reply has (in a plain
            // `get` reply they would be a newer daemon's unknown keys).
            _ if self.wgd
                && (key.starts_with("drop_")
                    || key.starts_with("handshake_")
                    || key == "ipc_to_handshake") =>
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
                    "drop_bad_order" => d.bad_order = n,
                    "drop_ratelimited" => d.ratelimited = n,
                    "drop_handshake_busy" => d.handshake_busy = n,
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

    /// The device, once the reply ended with `errno=0`.
    pub fn finish(mut self) -> Device {
        if let Some(p) = self.peer.take() {
            self.dev.peers.push(p);
        }
        self.dev
    }
}

fn peer_line(p: &mut Peer, key: &str, value: &str) -> Result<(), ReplyError> {
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
            .push(cidr::parse(value, Syntax::Uapi).map_err(|_| bad(key, value))?),
        _ => {}
    }
    if p.last_handshake == Some((0, 0)) {
        p.last_handshake = None;
    }
    Ok(())
}

fn number<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ReplyError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(key, value));
    }
    value.parse().map_err(|_| bad(key, value))
}

fn bad(key: &str, value: &str) -> ReplyError {
    malformed(format!("malformed {key} {:?} in reply", truncate(value)))
}

/// Never quotes the value.
fn bad_secret(key: &str) -> ReplyError {
    malformed(format!("malformed {key} in reply"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::aip;
    use crate::uapi::format_wgd_get;

    fn pk(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    fn parse_reply_text(text: &str, wgd: bool) -> Result<Option<Device>, ReplyError> {
        let mut parser = ReplyParser::new(wgd);
        let mut r = io::Cursor::new(text.as_bytes().to_vec());
        match read_reply(&mut r, |k, v| parser.line(k, v))? {
            Some(0) => Ok(Some(parser.finish())),
            _ => Ok(None),
        }
    }

    #[test]
    fn wgd_get_reply() {
        let mut a = Peer::new(pk(2));
        a.endpoint = Some("192.0.2.1:1".parse().unwrap());
        a.last_handshake = Some((1_700_000_000, 5));
        a.rx_bytes = 10;
        a.tx_bytes = 20;
        a.persistent_keepalive = 25;
        a.allowed_ips = vec![aip("10.0.0.0", 8), aip("fd00::", 64)];
        let sent = Device {
            public_key: Some(pk(1)),
            private_key_file: Some("/etc/wgd/key".into()),
            listen_port: 51820,
            fwmark: 7,
            stats: Some(WgdStats {
                drops: proto::ipc::DropCounters {
                    replay: 3,
                    no_route: 4,
                    bad_order: 6,
                    ratelimited: 8,
                    ..Default::default()
                },
                handshake: proto::ipc::HandshakeCounters {
                    bad_mac1: 5,
                    ..Default::default()
                },
                ipc_to_handshake: 9,
            }),
            peers: vec![a, Peer::new(pk(3))],
        };
        let dev = parse_reply_text(&format_wgd_get(&sent), true)
            .unwrap()
            .unwrap();
        // Both ends speak the same types: what one writes, the other reads.
        assert_eq!(dev, sent);
        assert!(dev.is_wgd());
        assert_eq!(dev.public_key, Some(pk(1)));
        assert_eq!(dev.private_key_file, Some("/etc/wgd/key".into()));
        assert_eq!((dev.listen_port, dev.fwmark), (51820, 7));
        let stats = dev.stats.unwrap();
        assert_eq!(stats.handshake.bad_mac1, 5);
        assert_eq!((stats.drops.replay, stats.drops.no_route), (3, 4));
        assert_eq!(stats.drops.bad_order, 6);
        assert_eq!(stats.drops.ratelimited, 8);
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
        let unkeyed = Device {
            public_key: None,
            private_key_file: None,
            stats: Some(WgdStats::default()),
            ..sent
        };
        let dev = parse_reply_text(&format_wgd_get(&unkeyed), true)
            .unwrap()
            .unwrap();
        assert_eq!(dev.public_key, None);
        assert_eq!(dev.peers.len(), 2);
    }

    #[test]
    fn wireguard_go_get_reply() {
        let private = SecretKey::from_bytes([0x42; 32]);
        let public = public_key(&private);
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
        assert!(!dev.is_wgd());
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
    fn allowed_ips_are_read_in_the_uapi_dialect() {
        let key = pk(1).to_hex();
        let reply = |ip: &str| {
            parse_reply_text(
                &format!("public_key={key}\nallowed_ip={ip}\nerrno=0\n\n"),
                false,
            )
        };
        let dev = reply("10.0.0.0/8").unwrap().unwrap();
        assert_eq!(dev.peers[0].allowed_ips, vec![aip("10.0.0.0", 8)]);
        for bad in ["10.0.0.1", "10.0.0.0/33", "10.0.0.0/ 8", "x/8"] {
            let e = reply(bad).unwrap_err();
            assert!(e.to_string().starts_with("malformed allowed_ip"), "{e}");
        }
    }

    #[test]
    fn wgd_counters_only_in_a_wgd_get_reply() {
        // From a plain `get`, they are a newer daemon's unknown keys: the
        // device is not taken for wgd.
        let dev = parse_reply_text("drop_replay=3\nipc_to_handshake=1\nerrno=0\n\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(dev.stats, None);
        assert!(!dev.is_wgd());
    }
}
