//! WireGuard keys and the `wg(8)` tool, for any implementation that serves
//! the cross-platform userspace API on `/var/run/wireguard/IFNAME.sock`
//! (wireguard-go now, wgd later).

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rand::RngCore;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::wait::wait_for;

/// The userspace API's socket directory, shared by every namespace.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// `/var/run/wireguard/IFNAME.sock`.
pub fn socket_path(ifname: &str) -> PathBuf {
    PathBuf::from(format!("{SOCKET_DIR}/{ifname}.sock"))
}

/// A fresh (private, public) key pair, both base64 as `wg` prints them. The
/// private key is clamped like `wg genkey`'s.
pub fn keypair() -> (String, String) {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] &= 248;
    bytes[31] &= 127;
    bytes[31] |= 64;
    let secret = StaticSecret::from(bytes);
    let public = PublicKey::from(&secret);
    (B64.encode(bytes), B64.encode(public.as_bytes()))
}

/// The public key of a base64 private key.
pub fn public_key(private: &str) -> Result<String> {
    let bytes: [u8; 32] = B64
        .decode(private.trim())
        .map_err(|e| Error::other(format!("private key is not base64: {e}")))?
        .try_into()
        .map_err(|_| Error::other("private key is not 32 bytes"))?;
    let secret = StaticSecret::from(bytes);
    Ok(B64.encode(PublicKey::from(&secret).as_bytes()))
}

/// A fresh random preshared key, base64.
pub fn preshared_key() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// One `[Peer]` section of a `wg setconf` file.
#[derive(Debug, Clone, Default)]
pub struct PeerConfig {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<SocketAddr>,
    /// CIDR prefixes, e.g. `10.201.0.2/32`.
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: Option<u16>,
}

impl PeerConfig {
    /// A peer with this public key and allowed IPs, nothing else set.
    pub fn new(public_key: &str, allowed_ips: &[&str]) -> Self {
        PeerConfig {
            public_key: public_key.to_string(),
            allowed_ips: allowed_ips.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Sets the endpoint.
    pub fn endpoint(mut self, endpoint: SocketAddr) -> Self {
        self.endpoint = Some(endpoint);
        self
    }
}

/// A `wg setconf` file (the `wg(8)` format, not `wg-quick`'s).
#[derive(Debug, Clone, Default)]
pub struct InterfaceConfig {
    pub private_key: Option<String>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerConfig>,
}

impl InterfaceConfig {
    /// The file's text.
    pub fn to_conf(&self) -> String {
        let mut s = String::from("[Interface]\n");
        if let Some(key) = &self.private_key {
            let _ = writeln!(s, "PrivateKey = {key}");
        }
        if let Some(port) = self.listen_port {
            let _ = writeln!(s, "ListenPort = {port}");
        }
        if let Some(mark) = self.fwmark {
            let _ = writeln!(s, "FwMark = {mark}");
        }
        for peer in &self.peers {
            let _ = writeln!(s, "\n[Peer]\nPublicKey = {}", peer.public_key);
            if let Some(psk) = &peer.preshared_key {
                let _ = writeln!(s, "PresharedKey = {psk}");
            }
            if let Some(ep) = peer.endpoint {
                let _ = writeln!(s, "Endpoint = {ep}");
            }
            if !peer.allowed_ips.is_empty() {
                let _ = writeln!(s, "AllowedIPs = {}", peer.allowed_ips.join(", "));
            }
            if let Some(ka) = peer.persistent_keepalive {
                let _ = writeln!(s, "PersistentKeepalive = {ka}");
            }
        }
        s
    }
}

/// `wg setconf IFNAME FILE` inside `ns` (the file is a private temp file).
pub fn setconf(ns: &Netns, ifname: &str, conf: &InterfaceConfig) -> Result<()> {
    let mut file = tempfile::NamedTempFile::new().map_err(|e| Error::io("wg conf temp file", e))?;
    file.write_all(conf.to_conf().as_bytes())
        .and_then(|()| file.flush())
        .map_err(|e| Error::io("write wg conf", e))?;
    let path = file.path().to_string_lossy().into_owned();
    ns.run("wg", ["setconf", ifname, path.as_str()]).map(drop)
}

/// `wg set IFNAME args…` inside `ns`.
pub fn set(ns: &Netns, ifname: &str, args: &[&str]) -> Result<()> {
    ns.run("wg", ["set", ifname].iter().chain(args)).map(drop)
}

/// `wg set IFNAME private-key FILE` inside `ns`, the key written to a
/// private temp file (what `wg set` reads it from).
pub fn set_private_key(ns: &Netns, ifname: &str, private_key: &str) -> Result<()> {
    let mut file = tempfile::NamedTempFile::new().map_err(|e| Error::io("key temp file", e))?;
    writeln!(file, "{private_key}")
        .and_then(|()| file.flush())
        .map_err(|e| Error::io("write key file", e))?;
    let path = file.path().to_string_lossy().into_owned();
    set(ns, ifname, &["private-key", path.as_str()])
}

/// The interface line of `wg show IFNAME dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpInterface {
    /// `None` where the implementation does not reveal it (wgd never does).
    pub private_key: Option<String>,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: Option<u32>,
}

/// A peer line of `wg show IFNAME dump`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpPeer {
    pub public_key: String,
    pub preshared_key: Option<String>,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<String>,
    /// Seconds since the epoch; 0 = never.
    pub latest_handshake: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub persistent_keepalive: Option<u16>,
}

/// `wg show IFNAME dump`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    pub interface: DumpInterface,
    pub peers: Vec<DumpPeer>,
}

impl Dump {
    /// The peer with this public key.
    pub fn peer(&self, public_key: &str) -> Option<&DumpPeer> {
        self.peers.iter().find(|p| p.public_key == public_key)
    }

    /// Parses the tab-separated text `wg show IFNAME dump` prints.
    pub fn parse(text: &str) -> Result<Dump> {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let first = lines
            .next()
            .ok_or_else(|| Error::other("wg dump: no interface line"))?;
        let f: Vec<&str> = first.split('\t').collect();
        if f.len() != 4 {
            return Err(Error::other(format!(
                "wg dump: bad interface line {first:?}"
            )));
        }
        let interface = DumpInterface {
            private_key: none_or(f[0]),
            public_key: none_or(f[1]),
            listen_port: num(f[2], "listen-port")?,
            fwmark: if f[3] == "off" {
                None
            } else {
                Some(parse_fwmark(f[3])?)
            },
        };
        let mut peers = Vec::new();
        for line in lines {
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() != 8 {
                return Err(Error::other(format!("wg dump: bad peer line {line:?}")));
            }
            let endpoint = match none_or(f[2]) {
                None => None,
                Some(ep) => Some(
                    ep.parse()
                        .map_err(|e| Error::other(format!("wg dump: bad endpoint {ep:?}: {e}")))?,
                ),
            };
            let allowed_ips = match none_or(f[3]) {
                None => Vec::new(),
                Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
            };
            peers.push(DumpPeer {
                public_key: f[0].to_string(),
                preshared_key: none_or(f[1]),
                endpoint,
                allowed_ips,
                latest_handshake: num(f[4], "latest-handshake")?,
                rx_bytes: num(f[5], "transfer-rx")?,
                tx_bytes: num(f[6], "transfer-tx")?,
                persistent_keepalive: if f[7] == "off" {
                    None
                } else {
                    Some(num(f[7], "persistent-keepalive")?)
                },
            });
        }
        Ok(Dump { interface, peers })
    }
}

/// `wg show IFNAME dump` inside `ns`, parsed.
pub fn dump(ns: &Netns, ifname: &str) -> Result<Dump> {
    Dump::parse(&ns.run("wg", ["show", ifname, "dump"])?)
}

/// `wg show IFNAME latest-handshakes`: (peer public key, seconds since the
/// epoch, 0 = never) per peer.
pub fn latest_handshakes(ns: &Netns, ifname: &str) -> Result<Vec<(String, u64)>> {
    let text = ns.run("wg", ["show", ifname, "latest-handshakes"])?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match line.split('\t').collect::<Vec<_>>()[..] {
            [key, t] => Ok((key.to_string(), num(t, "latest-handshake")?)),
            _ => Err(Error::other(format!(
                "wg latest-handshakes: bad line {line:?}"
            ))),
        })
        .collect()
}

/// `wg show IFNAME transfer`: (peer public key, rx bytes, tx bytes).
pub fn transfer(ns: &Netns, ifname: &str) -> Result<Vec<(String, u64, u64)>> {
    let text = ns.run("wg", ["show", ifname, "transfer"])?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| match line.split('\t').collect::<Vec<_>>()[..] {
            [key, rx, tx] => Ok((
                key.to_string(),
                num(rx, "transfer-rx")?,
                num(tx, "transfer-tx")?,
            )),
            _ => Err(Error::other(format!("wg transfer: bad line {line:?}"))),
        })
        .collect()
}

/// Waits until `ifname` reports a handshake with `peer`; returns its time.
pub fn wait_handshake(ns: &Netns, ifname: &str, peer: &str, timeout: Duration) -> Result<u64> {
    wait_for(
        timeout,
        &format!("a handshake on {ifname} with {peer}"),
        || {
            latest_handshakes(ns, ifname)
                .ok()?
                .into_iter()
                .find(|(k, t)| k == peer && *t != 0)
                .map(|(_, t)| t)
        },
    )
}

fn none_or(field: &str) -> Option<String> {
    (field != "(none)").then(|| field.to_string())
}

fn num<T: std::str::FromStr>(field: &str, what: &str) -> Result<T> {
    field
        .trim()
        .parse()
        .map_err(|_| Error::other(format!("wg: {what} is not a number: {field:?}")))
}

fn parse_fwmark(field: &str) -> Result<u32> {
    match field.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16)
            .map_err(|_| Error::other(format!("wg: bad fwmark {field:?}"))),
        None => num(field, "fwmark"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keypair_matches_public_key() {
        let (private, public) = keypair();
        assert_eq!(public_key(&private).expect("valid key"), public);
        let raw = B64.decode(&private).expect("base64");
        assert_eq!(raw.len(), 32);
        assert_eq!(raw[0] & 7, 0);
        assert_eq!(raw[31] & 0xc0, 0x40);
    }

    #[test]
    fn parses_dump() {
        let text = "(none)\tPUB=\t51820\toff\n\
                    PEER=\t(none)\t[fd00::2]:51821\t10.0.0.2/32,fd01::2/128\t1700000000\t100\t200\toff\n\
                    PEER2=\t(none)\t(none)\t(none)\t0\t0\t0\t25\n";
        let d = Dump::parse(text).expect("parses");
        assert_eq!(d.interface.private_key, None);
        assert_eq!(d.interface.public_key.as_deref(), Some("PUB="));
        assert_eq!(d.interface.listen_port, 51820);
        let p = d.peer("PEER=").expect("peer");
        assert_eq!(p.endpoint, Some("[fd00::2]:51821".parse().expect("addr")));
        assert_eq!(p.allowed_ips, vec!["10.0.0.2/32", "fd01::2/128"]);
        assert_eq!((p.rx_bytes, p.tx_bytes), (100, 200));
        let p2 = d.peer("PEER2=").expect("peer2");
        assert_eq!(p2.endpoint, None);
        assert_eq!(p2.persistent_keepalive, Some(25));
        assert!(Dump::parse("garbage").is_err());
    }

    #[test]
    fn conf_text() {
        let conf = InterfaceConfig {
            private_key: Some("K=".into()),
            listen_port: Some(51820),
            fwmark: None,
            peers: vec![PeerConfig::new("P=", &["10.0.0.2/32"])
                .endpoint("10.1.0.2:51821".parse().expect("addr"))],
        };
        let text = conf.to_conf();
        assert!(text.contains("PrivateKey = K=\nListenPort = 51820\n"));
        assert!(text.contains(
            "[Peer]\nPublicKey = P=\nEndpoint = 10.1.0.2:51821\nAllowedIPs = 10.0.0.2/32\n"
        ));
    }
}
