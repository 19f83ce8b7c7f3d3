//! What `wgctl` knows about one interface: the answer to `wgd_get=1` (or,
//! from an implementation that is not wgd, `get=1`), parsed into types.
//!
//! This model is shared by `show`, `showconf` and `syncconf`. It never
//! holds a secret: wgd does not return its private key or preshared keys,
//! and when another implementation (wireguard-go) does, the client derives
//! the public key from the private key, notes that a preshared key exists,
//! and drops the secrets at once (see `uapi_client`).
//!
//! It also has the two address formatters every output shares, written to
//! print exactly what `wg(8)` prints (it goes through `inet_ntop`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use proto::ipc::{AllowedIp, DropCounters};
use proto::keys::PublicKey;

/// One interface as its daemon reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub name: String,
    /// Whether the daemon answered `wgd_get=1` (so it is wgd, and the
    /// extra fields below are meaningful).
    pub is_wgd: bool,
    /// The interface's public key; `None` when no private key is set.
    /// wgd reports it directly; for other daemons it is derived from the
    /// private key their `get` returns.
    pub public_key: Option<PublicKey>,
    /// The file wgd read the private key from (`PrivateKeyFile`), if any.
    pub private_key_file: Option<PathBuf>,
    /// The bound port, 0 if none.
    pub listen_port: u16,
    /// 0 when off.
    pub fwmark: u32,
    /// wgd's counters (`drop_*`, `ipc_to_handshake`); `None` from others.
    pub stats: Option<WgdStats>,
    /// In the order the daemon listed them.
    pub peers: Vec<Peer>,
}

/// The counters only wgd reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgdStats {
    pub drops: DropCounters,
    pub handshake: proto::ipc::HandshakeCounters,
    pub ipc_to_handshake: u64,
}

/// Whether a peer has a preshared key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Psk {
    /// The daemon said there is none.
    None,
    /// The daemon said there is one (its value was not kept).
    Set,
    /// The daemon does not say: wgd never reports preshared keys, not even
    /// whether there is one.
    #[default]
    Unknown,
}

/// One peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: PublicKey,
    pub preshared_key: Psk,
    pub endpoint: Option<SocketAddr>,
    /// As the daemon reported them (masked to the network address).
    pub allowed_ips: Vec<AllowedIp>,
    /// Seconds and nanoseconds since the Unix epoch; `None` for never.
    pub last_handshake: Option<(u64, u32)>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Seconds, 0 when off.
    pub persistent_keepalive: u16,
}

impl Peer {
    pub fn new(public_key: PublicKey) -> Self {
        Peer {
            public_key,
            preshared_key: Psk::Unknown,
            endpoint: None,
            allowed_ips: Vec::new(),
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive: 0,
        }
    }
}

/// An address as `inet_ntop(3)` prints it, which is what `wg(8)` shows.
/// Rust's `Display` agrees except for IPv4-compatible IPv6 addresses
/// (`::a.b.c.d`), which glibc prints with a dotted quad.
pub fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if s[..6] == [0; 6] && s[6] != 0 {
                let o = v6.octets();
                format!("::{}", Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else {
                v6.to_string()
            }
        }
    }
}

/// `ADDR/CIDR` as `wg(8)` prints an allowed IP.
pub fn fmt_allowed_ip(ip: &AllowedIp) -> String {
    format!("{}/{}", fmt_ip(ip.addr), ip.cidr)
}

/// An endpoint as `wg(8)` prints it: `a.b.c.d:port`, `[v6]:port`.
pub fn fmt_endpoint(ep: &SocketAddr) -> String {
    match ep {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) if v6.scope_id() != 0 => format!(
            "[{}%{}]:{}",
            fmt_ip(IpAddr::V6(*v6.ip())),
            v6.scope_id(),
            v6.port()
        ),
        SocketAddr::V6(v6) => format!("[{}]:{}", fmt_ip(IpAddr::V6(*v6.ip())), v6.port()),
    }
}

/// The prefix with its host bits cleared (`10.1.2.3/8` → `10.0.0.0/8`),
/// which is how daemons store and report allowed IPs. A cidr beyond the
/// family's length is treated as the full length.
pub fn masked(ip: AllowedIp) -> AllowedIp {
    let addr = match ip.addr {
        IpAddr::V4(a) => {
            let bits = u32::from(ip.cidr.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let bits = u32::from(ip.cidr.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    };
    AllowedIp {
        addr,
        cidr: ip.cidr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aip(s: &str, cidr: u8) -> AllowedIp {
        AllowedIp {
            addr: s.parse().unwrap(),
            cidr,
        }
    }

    #[test]
    fn ip_text_is_inet_ntop() {
        for (ip, text) in [
            ("10.0.0.1", "10.0.0.1"),
            ("::", "::"),
            ("::1", "::1"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("fd00::", "fd00::"),
        ] {
            assert_eq!(fmt_ip(ip.parse().unwrap()), text);
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            fmt_endpoint(&"192.0.2.1:51820".parse().unwrap()),
            "192.0.2.1:51820"
        );
        assert_eq!(
            fmt_endpoint(&"[2001:db8::1]:1".parse().unwrap()),
            "[2001:db8::1]:1"
        );
        assert_eq!(
            fmt_endpoint(&"[fe80::1%2]:1".parse().unwrap()),
            "[fe80::1%2]:1"
        );
    }

    #[test]
    fn masking() {
        assert_eq!(masked(aip("10.1.2.3", 8)), aip("10.0.0.0", 8));
        assert_eq!(masked(aip("10.1.2.3", 0)), aip("0.0.0.0", 0));
        assert_eq!(masked(aip("10.1.2.3", 32)), aip("10.1.2.3", 32));
        assert_eq!(masked(aip("2001:db8::1", 32)), aip("2001:db8::", 32));
        assert_eq!(masked(aip("2001:db8::1", 128)), aip("2001:db8::1", 128));
        assert_eq!(masked(aip("2001:db8::1", 0)), aip("::", 0));
    }
}
