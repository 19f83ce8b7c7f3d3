//! `wgctl set IFNAME ...`: wg(8)'s `set` arguments, parsed and turned
//! into one `set=1` request.
//!
//! ```text
//! set IF [listen-port P] [fwmark M|off] [private-key FILE]
//!        [peer KEY [remove] [preshared-key FILE] [endpoint HOST:PORT]
//!                  [persistent-keepalive N|off] [allowed-ips LIST]]...
//! ```
//!
//! As in wg(8): interface options come before the first `peer`; keys are
//! read from files (`/dev/stdin` and `<(echo KEY)` work; an empty file
//! removes the key); endpoint host names are resolved here, since the
//! daemon accepts only numeric endpoints; `allowed-ips` replaces the
//! peer's list (`replace_allowed_ips=true`), and an empty value clears it.
//! As in newer wg(8), entries of `allowed-ips` may be prefixed: `+PREFIX`
//! adds and `-PREFIX` removes one entry, and a list with any prefixed
//! entry changes the peer's list instead of replacing it (its unprefixed
//! entries are added).
//!
//! Parsing ([`parse`]) is pure; reading key files and resolving names
//! happens in [`SetArgs::into_ops`], through functions passed in, so the
//! grammar is tested without files or DNS.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use proto::ipc::AllowedIp;
use proto::keys::{PublicKey, SecretKey};
use wg_config::cidr::{self, Syntax};
use wg_config::uapi::{AllowedIpChange, PeerOp, SetOp};

use crate::error::{io_text, Error, Result};

/// The parsed arguments of one `set` command.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SetArgs {
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub private_key: Option<PathBuf>,
    pub peers: Vec<PeerArgs>,
}

/// One `peer KEY ...` group.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerArgs {
    pub public_key: PublicKey,
    pub remove: bool,
    pub preshared_key: Option<PathBuf>,
    /// As written; resolved by [`SetArgs::into_ops`].
    pub endpoint: Option<String>,
    /// 0 for `off`.
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<AllowedIpChange>,
}

impl PeerArgs {
    fn new(public_key: PublicKey) -> Self {
        PeerArgs {
            public_key,
            remove: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// Parses the words after `set IFNAME`.
pub fn parse(args: &[String]) -> Result<SetArgs> {
    let mut out = SetArgs::default();
    let mut i = 0;
    // The value after the option at `i`.
    let value = |i: usize| -> Result<&str> {
        args.get(i + 1)
            .map(String::as_str)
            .ok_or_else(|| Error::usage(format!("`{}' needs a value", args[i])))
    };
    while i < args.len() {
        let word = args[i].as_str();
        let in_peer = !out.peers.is_empty();
        match (word, out.peers.last_mut()) {
            ("listen-port", None) => {
                out.listen_port = Some(parse_port(value(i)?)?);
                i += 2;
            }
            ("fwmark", None) => {
                out.fwmark = Some(parse_fwmark(value(i)?)?);
                i += 2;
            }
            ("private-key", None) => {
                out.private_key = Some(PathBuf::from(value(i)?));
                i += 2;
            }
            ("peer", _) => {
                let v = value(i)?;
                let key = PublicKey::from_base64(v)
                    .map_err(|_| Error::usage(format!("`{v}' is not a base64 public key")))?;
                out.peers.push(PeerArgs::new(key));
                i += 2;
            }
            ("remove", Some(p)) => {
                p.remove = true;
                i += 1;
            }
            ("preshared-key", Some(p)) => {
                p.preshared_key = Some(PathBuf::from(value(i)?));
                i += 2;
            }
            ("endpoint", Some(p)) => {
                let v = value(i)?;
                split_endpoint(v)?;
                p.endpoint = Some(v.to_string());
                i += 2;
            }
            ("persistent-keepalive", Some(p)) => {
                p.persistent_keepalive = Some(parse_keepalive(value(i)?)?);
                i += 2;
            }
            ("allowed-ips", Some(p)) => {
                let (replace, changes) = parse_allowed_ips(value(i)?)?;
                if replace {
                    p.replace_allowed_ips = true;
                    p.allowed_ips = changes;
                } else {
                    p.allowed_ips.extend(changes);
                }
                i += 2;
            }
            _ => {
                let hint = if in_peer {
                    " (interface options come before the first `peer')"
                } else {
                    ""
                };
                return Err(Error::usage(format!("invalid argument `{word}'{hint}")));
            }
        }
    }
    Ok(out)
}

impl SetArgs {
    /// The request: reads the key files with `read_key` and resolves the
    /// endpoints with `resolve` (see [`read_key_file`] and
    /// [`resolve_endpoint`] for the real ones).
    pub fn into_ops(
        self,
        read_key: &dyn Fn(&Path) -> Result<Option<SecretKey>>,
        resolve: &dyn Fn(&str) -> Result<SocketAddr>,
    ) -> Result<Vec<SetOp>> {
        let mut ops = Vec::new();
        if let Some(path) = &self.private_key {
            ops.push(SetOp::PrivateKey(read_key(path)?));
        }
        if let Some(p) = self.listen_port {
            ops.push(SetOp::ListenPort(p));
        }
        if let Some(m) = self.fwmark {
            ops.push(SetOp::Fwmark(m));
        }
        for p in self.peers {
            let mut op = PeerOp::new(p.public_key);
            op.remove = p.remove;
            if let Some(path) = &p.preshared_key {
                op.preshared_key = Some(read_key(path)?);
            }
            if let Some(ep) = &p.endpoint {
                op.endpoint = Some(resolve(ep)?);
            }
            op.persistent_keepalive = p.persistent_keepalive;
            op.replace_allowed_ips = p.replace_allowed_ips;
            op.allowed_ips = p.allowed_ips;
            ops.push(SetOp::Peer(op));
        }
        Ok(ops)
    }
}

fn parse_port(s: &str) -> Result<u16> {
    digits(s)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::usage(format!("`{s}' is not a port number (0-65535)")))
}

/// `off`, decimal, or hexadecimal with `0x`, as wg(8) takes it.
pub fn parse_fwmark(s: &str) -> Result<u32> {
    let bad = || Error::usage(format!("`{s}' is not an fwmark (off, N or 0xN)"));
    if s == "off" {
        return Ok(0);
    }
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            u32::from_str_radix(hex, 16).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
        None => digits(s).and_then(|d| d.parse().ok()).ok_or_else(bad),
    }
}

fn parse_keepalive(s: &str) -> Result<u16> {
    if s == "off" {
        return Ok(0);
    }
    digits(s).and_then(|d| d.parse().ok()).ok_or_else(|| {
        Error::usage(format!(
            "`{s}' is not a persistent keepalive interval (off or 0-65535)"
        ))
    })
}

fn digits(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then_some(s)
}

/// An `allowed-ips` value: whether it replaces the list, and the changes.
/// Entries are separated by commas, spaces around them ignored, empty ones
/// skipped; each is a prefix in wg(8)'s dialect ([`Syntax::Wg`]: without
/// `/CIDR` it is a single address, /32 or /128).
pub fn parse_allowed_ips(s: &str) -> Result<(bool, Vec<AllowedIpChange>)> {
    let entries: Vec<&str> = s
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    let incremental = entries
        .iter()
        .any(|e| e.starts_with('+') || e.starts_with('-'));
    let mut changes = Vec::with_capacity(entries.len());
    for e in entries {
        let change = if let Some(rest) = e.strip_prefix('-') {
            AllowedIpChange::Remove(parse_prefix_arg(rest)?)
        } else {
            AllowedIpChange::Add(parse_prefix_arg(e.strip_prefix('+').unwrap_or(e))?)
        };
        changes.push(change);
    }
    Ok((!incremental, changes))
}

fn parse_prefix_arg(s: &str) -> Result<AllowedIp> {
    cidr::parse(s, Syntax::Wg)
        .map_err(|_| Error::usage(format!("`{s}' is not an IP address with a CIDR mask")))
}

/// `HOST:PORT` or `[V6]:PORT` split into host and port.
pub fn split_endpoint(s: &str) -> Result<(&str, u16)> {
    let bad = || {
        Error::usage(format!(
            "`{s}' is not an endpoint (HOST:PORT or [IPV6]:PORT)"
        ))
    };
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        rest.split_once("]:").ok_or_else(bad)?
    } else {
        s.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = digits(port).and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok((host, port))
}

/// Resolves an endpoint with the system resolver; the first address wins,
/// as in wg(8).
pub fn resolve_endpoint(s: &str) -> Result<SocketAddr> {
    let (host, port) = split_endpoint(s)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let mut addrs = (host, port)
        .to_socket_addrs()
        .map_err(|e| Error::new(format!("cannot resolve `{host}': {}", io_text(&e))))?;
    addrs
        .next()
        .ok_or_else(|| Error::new(format!("cannot resolve `{host}': no addresses")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wg_config::cidr::aip;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn key(b: u8) -> PublicKey {
        PublicKey([b; 32])
    }

    #[test]
    fn interface_options() {
        let a = parse(&words(
            "listen-port 51820 fwmark 0x10 private-key /dev/stdin",
        ))
        .unwrap();
        assert_eq!(
            a,
            SetArgs {
                listen_port: Some(51820),
                fwmark: Some(16),
                private_key: Some("/dev/stdin".into()),
                peers: vec![],
            }
        );
        assert_eq!(parse(&words("fwmark off")).unwrap().fwmark, Some(0));
        assert_eq!(parse(&words("fwmark 1234")).unwrap().fwmark, Some(1234));
        assert_eq!(parse(&[]).unwrap(), SetArgs::default());
    }

    #[test]
    fn several_peers_remove_and_allowed_ip_forms() {
        let args = format!(
            "listen-port 1 peer {a} endpoint 192.0.2.1:51820 allowed-ips 10.0.0.0/8,fd00::1 \
             persistent-keepalive 25 peer {b} remove peer {c} allowed-ips +10.1.0.0/16,-10.2.0.0/16 \
             persistent-keepalive off preshared-key /tmp/psk endpoint [2001:db8::1]:7",
            a = key(1),
            b = key(2),
            c = key(3)
        );
        let a = parse(&words(&args)).unwrap();
        assert_eq!(a.listen_port, Some(1));
        assert_eq!(a.peers.len(), 3);
        let p = &a.peers[0];
        assert_eq!(p.public_key, key(1));
        assert_eq!(p.endpoint.as_deref(), Some("192.0.2.1:51820"));
        assert!(p.replace_allowed_ips);
        assert_eq!(
            p.allowed_ips,
            vec![
                AllowedIpChange::Add(aip("10.0.0.0", 8)),
                AllowedIpChange::Add(aip("fd00::1", 128))
            ]
        );
        assert_eq!(p.persistent_keepalive, Some(25));
        assert!(!p.remove);
        assert!(a.peers[1].remove);
        assert_eq!(a.peers[1].allowed_ips, vec![]);
        let p = &a.peers[2];
        assert!(!p.replace_allowed_ips);
        assert_eq!(
            p.allowed_ips,
            vec![
                AllowedIpChange::Add(aip("10.1.0.0", 16)),
                AllowedIpChange::Remove(aip("10.2.0.0", 16))
            ]
        );
        assert_eq!(p.persistent_keepalive, Some(0));
        assert_eq!(p.preshared_key, Some("/tmp/psk".into()));
        assert_eq!(p.endpoint.as_deref(), Some("[2001:db8::1]:7"));
    }

    #[test]
    fn allowed_ips_values() {
        // Empty: remove them all.
        assert_eq!(parse_allowed_ips("").unwrap(), (true, vec![]));
        // Spaces around entries are fine.
        assert_eq!(
            parse_allowed_ips(" 10.0.0.1/32 , ::/0 ").unwrap(),
            (
                true,
                vec![
                    AllowedIpChange::Add(aip("10.0.0.1", 32)),
                    AllowedIpChange::Add(aip("::", 0))
                ]
            )
        );
        // Any prefix makes the whole list incremental.
        assert_eq!(
            parse_allowed_ips("10.0.0.1/32,-10.0.0.2").unwrap(),
            (
                false,
                vec![
                    AllowedIpChange::Add(aip("10.0.0.1", 32)),
                    AllowedIpChange::Remove(aip("10.0.0.2", 32))
                ]
            )
        );
        // wg(8)'s dialect: leading zeros in the length, white space
        // around the parts (wg set strips white space from its arguments).
        assert_eq!(
            parse_allowed_ips("10.0.0.0/0008,10.0.0.2 / 32").unwrap(),
            (
                true,
                vec![
                    AllowedIpChange::Add(aip("10.0.0.0", 8)),
                    AllowedIpChange::Add(aip("10.0.0.2", 32))
                ]
            )
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x",
            "10.0.0.0/",
            "--10.0.0.0/8",
        ] {
            assert!(parse_allowed_ips(bad).is_err(), "{bad}");
        }
        // A second allowed-ips for the same peer: a replacement wins, an
        // incremental list adds to what came before.
        let args = format!(
            "peer {} allowed-ips 10.0.0.0/8 allowed-ips +10.1.0.0/16",
            key(1)
        );
        let a = parse(&words(&args)).unwrap();
        assert!(a.peers[0].replace_allowed_ips);
        assert_eq!(a.peers[0].allowed_ips.len(), 2);
    }

    #[test]
    fn errors() {
        let k = key(1).to_string();
        for bad in [
            "listen-port".to_string(),
            "listen-port 65536".into(),
            "listen-port -1".into(),
            "fwmark 0x".into(),
            "fwmark 0xg".into(),
            "fwmark 4294967296".into(),
            "bogus".into(),
            "remove".into(),
            "peer notakey".into(),
            format!("peer {k} listen-port 1"),
            format!("peer {k} persistent-keepalive 65536"),
            format!("peer {k} endpoint 192.0.2.1"),
            format!("peer {k} endpoint :1"),
            format!("peer {k} endpoint [::1]1"),
            format!("peer {k} allowed-ips"),
        ] {
            let e = parse(&words(&bad)).unwrap_err();
            assert_eq!(e.status, 2, "{bad}");
            assert!(!e.to_string().contains('\n'));
        }
    }

    #[test]
    fn ops_read_keys_and_resolve() {
        let args = format!(
            "private-key /k listen-port 0 peer {} preshared-key /empty endpoint example.test:9 allowed-ips ::/0",
            key(1)
        );
        let read_key = |p: &Path| -> Result<Option<SecretKey>> {
            Ok((p == Path::new("/k")).then(|| SecretKey::from_bytes([5; 32])))
        };
        let resolve = |s: &str| -> Result<SocketAddr> {
            assert_eq!(s, "example.test:9");
            Ok("192.0.2.9:9".parse().unwrap())
        };
        let ops = parse(&words(&args))
            .unwrap()
            .into_ops(&read_key, &resolve)
            .unwrap();
        let mut peer = PeerOp::new(key(1));
        peer.preshared_key = Some(None);
        peer.endpoint = Some("192.0.2.9:9".parse().unwrap());
        peer.replace_allowed_ips = true;
        peer.allowed_ips = vec![AllowedIpChange::Add(aip("::", 0))];
        assert_eq!(
            ops,
            vec![
                SetOp::PrivateKey(Some(SecretKey::from_bytes([5; 32]))),
                SetOp::ListenPort(0),
                SetOp::Peer(peer)
            ]
        );
    }

    #[test]
    fn endpoints() {
        assert_eq!(split_endpoint("h.example:1").unwrap(), ("h.example", 1));
        assert_eq!(
            split_endpoint("[fe80::1%eth0]:2").unwrap(),
            ("fe80::1%eth0", 2)
        );
        assert_eq!(
            resolve_endpoint("[2001:db8::1]:51820").unwrap(),
            "[2001:db8::1]:51820".parse().unwrap()
        );
        assert_eq!(
            resolve_endpoint("192.0.2.1:1").unwrap(),
            "192.0.2.1:1".parse().unwrap()
        );
        assert_eq!(
            resolve_endpoint("localhost:5").unwrap().port(),
            5,
            "host names are resolved"
        );
    }
}
