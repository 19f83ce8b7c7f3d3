//! What a `get` reply reports, one type for both ends: wgd's parent fills
//! a [`Device`] from its roles and writes it with [`format_get`] or
//! [`format_wgd_get`]; wgctl reads any daemon's reply back into one (see
//! `parse_reply`) and shows it.
//!
//! It never holds a secret: wgd does not return its private key or
//! preshared keys, and when another implementation (wireguard-go) does,
//! the reader derives the public key from the private key, notes that a
//! preshared key exists, and drops the secrets at once.

use std::net::SocketAddr;
use std::path::PathBuf;

use proto::ipc::{AllowedIp, DropCounters, HandshakeCounters};
use proto::keys::PublicKey;

use super::{format_errno, put};
use crate::cidr::masked;

/// One interface as its daemon reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    /// The interface's public key; `None` when no private key is set.
    /// wgd reports it in `wgd_get`; for other daemons the reader derives
    /// it from the private key their `get` returns. Not in a plain `get`
    /// reply from wgd (secrets are write-only, and wg(8) derives the
    /// public key from the private key it is not given).
    pub public_key: Option<PublicKey>,
    /// The file wgd read the private key from (`PrivateKeyFile`), if any,
    /// so `wgctl showconf` can name it instead of the key it can never
    /// read back. `wgd_get` only.
    pub private_key_file: Option<PathBuf>,
    /// The port actually bound (after a request for port 0, the port the
    /// system chose), as wireguard-go reports it; 0 (none) is not printed.
    pub listen_port: u16,
    /// 0 when off (and then not printed).
    pub fwmark: u32,
    /// What only wgd counts; `Some` exactly when the reply was to
    /// `wgd_get=1`, so it also tells whether the daemon is wgd.
    pub stats: Option<WgdStats>,
    /// In the order the daemon lists them (wgd: by public key).
    pub peers: Vec<Peer>,
}

impl Device {
    /// Whether the daemon answered `wgd_get=1`, so it is wgd.
    pub fn is_wgd(&self) -> bool {
        self.stats.is_some()
    }
}

/// The counters only wgd reports (`wgd_get=1`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WgdStats {
    /// Packets the transport dropped, by reason.
    pub drops: DropCounters,
    /// Handshake packets the handshake role dropped (or answered with a
    /// cookie), by reason.
    pub handshake: HandshakeCounters,
    /// Messages the transport sent the handshake role since start.
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
    /// Never written by wgd (secrets are write-only); read from others.
    pub preshared_key: Psk,
    pub endpoint: Option<SocketAddr>,
    /// As the daemon reports them: masked to the network address, in
    /// the order they were last inserted.
    pub allowed_ips: Vec<AllowedIp>,
    /// Seconds and nanoseconds (below 10⁹) since the Unix epoch of the
    /// last completed handshake; `None` if there never was one.
    pub last_handshake: Option<(u64, u32)>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Seconds, 0 when off.
    pub persistent_keepalive: u16,
}

impl Peer {
    /// A peer with only its key: nothing else known or set.
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

/// The reply to a `get`: the device's and peers' lines as wireguard-go
/// prints them (minus the secrets), then `errno=0` and the empty line.
/// Reads neither `public_key`, `private_key_file` nor `stats`.
pub fn format_get(dev: &Device) -> String {
    let mut s = String::with_capacity(64 + dev.peers.len() * 320);
    format_get_device(dev, &mut s);
    for p in &dev.peers {
        format_get_peer(p, &mut s);
    }
    s.push_str(&format_errno(0));
    s
}

/// The device's own lines of a `get` reply: what comes before the first
/// peer. A reply too large to build at once (wgd streams it) is this,
/// then [`format_get_peer`] for each peer, then [`format_errno`].
pub fn format_get_device(dev: &Device, s: &mut String) {
    // `private_key` omitted: secrets are write-only in wgd.
    if dev.listen_port != 0 {
        put(s, format_args!("listen_port={}", dev.listen_port));
    }
    if dev.fwmark != 0 {
        put(s, format_args!("fwmark={}", dev.fwmark));
    }
}

/// One peer's lines of a `get` reply, allowed IPs included.
pub fn format_get_peer(p: &Peer, s: &mut String) {
    format_get_peer_head(p, s);
    for ip in &p.allowed_ips {
        format_allowed_ip(*ip, s);
    }
}

/// One peer's lines of a `get` reply before its allowed IPs, which a
/// streaming writer sends in chunks with [`format_allowed_ip`].
pub fn format_get_peer_head(p: &Peer, s: &mut String) {
    put(s, format_args!("public_key={}", p.public_key.to_hex()));
    // `preshared_key` omitted: secrets are write-only in wgd.
    put(s, format_args!("protocol_version=1"));
    if let Some(ep) = p.endpoint {
        // Rust's `SocketAddr` display is wireguard-go's: `a.b.c.d:port`
        // and `[v6]:port` with RFC 5952 text.
        put(s, format_args!("endpoint={ep}"));
    }
    let (sec, nsec) = p.last_handshake.unwrap_or((0, 0));
    put(s, format_args!("last_handshake_time_sec={sec}"));
    put(s, format_args!("last_handshake_time_nsec={nsec}"));
    put(s, format_args!("tx_bytes={}", p.tx_bytes));
    put(s, format_args!("rx_bytes={}", p.rx_bytes));
    put(
        s,
        format_args!("persistent_keepalive_interval={}", p.persistent_keepalive),
    );
}

/// One `allowed_ip=` line, the prefix masked.
pub fn format_allowed_ip(ip: AllowedIp, s: &mut String) {
    let ip = masked(ip);
    put(s, format_args!("allowed_ip={}/{}", ip.addr, ip.cidr));
}

/// The reply to `wgd_get=1`, a wgd extension (wireguard-go answers it
/// with an error): `public_key=` (ours, if keyed), `private_key_file=`
/// (if any) and the counters of [`Device::stats`], then everything
/// [`format_get`] says.
pub fn format_wgd_get(dev: &Device) -> String {
    let mut s = String::new();
    format_wgd_extra(dev, &mut s);
    s.push_str(&format_get(dev));
    s
}

/// What `wgd_get=1` says before what `get` says.
pub fn format_wgd_extra(dev: &Device, s: &mut String) {
    if let Some(k) = &dev.public_key {
        put(s, format_args!("public_key={}", k.to_hex()));
    }
    if let Some(f) = &dev.private_key_file {
        put(s, format_args!("private_key_file={}", f.display()));
    }
    let stats = dev.stats.clone().unwrap_or_default();
    let d = &stats.drops;
    for (k, v) in [
        ("drop_malformed", d.malformed),
        ("drop_unknown_index", d.unknown_index),
        ("drop_replay", d.replay),
        ("drop_auth_failed", d.auth_failed),
        ("drop_source_not_allowed", d.source_not_allowed),
        ("drop_no_route", d.no_route),
        ("drop_send_failed", d.send_failed),
        ("drop_bad_order", d.bad_order),
        ("drop_ratelimited", d.ratelimited),
        ("drop_handshake_busy", d.handshake_busy),
        ("ipc_to_handshake", stats.ipc_to_handshake),
    ] {
        put(s, format_args!("{k}={v}"));
    }
    let h = &stats.handshake;
    for (k, v) in [
        ("handshake_malformed", h.malformed),
        ("handshake_bad_mac1", h.bad_mac1),
        ("handshake_cookie_replies", h.cookie_replies_sent),
        ("handshake_rate_limited", h.rate_limited),
        ("handshake_unknown_index", h.unknown_index),
        ("handshake_rejected", h.rejected),
        ("handshake_replayed_timestamp", h.replayed_timestamp),
        ("handshake_initiation_flood", h.initiation_flood),
    ] {
        put(s, format_args!("{k}={v}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::aip;

    /// Expected text written by hand from wireguard-go's `IpcGetOperation`
    /// (device/uapi.go, commit f333402b) for the same state, with its
    /// `private_key=` and `preshared_key=` lines removed. Checked against
    /// that code: `listen_port` and `fwmark` only when nonzero and in that
    /// order; per peer `public_key`, (`preshared_key`), `protocol_version=1`,
    /// `endpoint` only when set (`netip.AddrPort.String()`: IPv6 in
    /// brackets), `last_handshake_time_sec`/`_nsec` (0/0 when never),
    /// `tx_bytes` before `rx_bytes`, `persistent_keepalive_interval`
    /// always, then `allowed_ip` lines as masked prefixes; keys as
    /// lowercase hex; the `errno=0` and empty line come from `IpcHandle`.
    /// Not reproduced: wireguard-go prints peers in Go map order (random);
    /// wgd prints them in the order given.
    #[test]
    fn format_get_matches_wireguard_go() {
        let info = Device {
            listen_port: 51820,
            fwmark: 0x1234,
            peers: vec![
                Peer {
                    preshared_key: Psk::Unknown,
                    public_key: PublicKey([0xab; 32]),
                    endpoint: None,
                    last_handshake: None,
                    rx_bytes: 0,
                    tx_bytes: 0,
                    persistent_keepalive: 0,
                    allowed_ips: vec![aip("10.0.0.2", 32)],
                },
                Peer {
                    preshared_key: Psk::Unknown,
                    public_key: PublicKey([0x01; 32]),
                    endpoint: Some("[2001:db8:0:0::1]:51821".parse().unwrap()),
                    last_handshake: Some((1_700_000_000, 123_456_789)),
                    rx_bytes: 4_294_967_296,
                    tx_bytes: 1234,
                    persistent_keepalive: 25,
                    allowed_ips: vec![
                        aip("fd00::", 64),
                        aip("10.1.0.0", 16),
                        aip("192.168.1.7", 24),
                        aip("0.0.0.0", 0),
                    ],
                },
            ],
            ..Device::default()
        };
        let expected = format!(
            "listen_port=51820\n\
             fwmark=4660\n\
             public_key={ab}\n\
             protocol_version=1\n\
             last_handshake_time_sec=0\n\
             last_handshake_time_nsec=0\n\
             tx_bytes=0\n\
             rx_bytes=0\n\
             persistent_keepalive_interval=0\n\
             allowed_ip=10.0.0.2/32\n\
             public_key={one}\n\
             protocol_version=1\n\
             endpoint=[2001:db8::1]:51821\n\
             last_handshake_time_sec=1700000000\n\
             last_handshake_time_nsec=123456789\n\
             tx_bytes=1234\n\
             rx_bytes=4294967296\n\
             persistent_keepalive_interval=25\n\
             allowed_ip=fd00::/64\n\
             allowed_ip=10.1.0.0/16\n\
             allowed_ip=192.168.1.0/24\n\
             allowed_ip=0.0.0.0/0\n\
             errno=0\n\
             \n",
            ab = "ab".repeat(32),
            one = "01".repeat(32),
        );
        assert_eq!(format_get(&info), expected);
    }

    #[test]
    fn format_get_of_an_empty_device() {
        // No listen_port=0, no fwmark=0, no private_key: just the status.
        assert_eq!(format_get(&Device::default()), "errno=0\n\n");
        let info = Device {
            listen_port: 1,
            fwmark: 0,
            peers: vec![],
            ..Device::default()
        };
        assert_eq!(format_get(&info), "listen_port=1\nerrno=0\n\n");
    }

    #[test]
    fn format_wgd_get_puts_wgd_lines_first() {
        let mut dev = Device {
            public_key: Some(PublicKey([1; 32])),
            private_key_file: Some("/etc/wgd/key".into()),
            listen_port: 7,
            stats: Some(WgdStats {
                ipc_to_handshake: 9,
                ..WgdStats::default()
            }),
            ..Device::default()
        };
        dev.stats.as_mut().unwrap().drops.replay = 3;
        dev.stats.as_mut().unwrap().drops.bad_order = 2;
        dev.stats.as_mut().unwrap().handshake.bad_mac1 = 5;
        let text = format_wgd_get(&dev);
        assert!(text.starts_with(&format!(
            "public_key={}\nprivate_key_file=/etc/wgd/key\ndrop_malformed=0\n",
            "01".repeat(32)
        )));
        assert!(text.contains("\ndrop_replay=3\n"));
        assert!(text.contains(
            "\ndrop_send_failed=0\ndrop_bad_order=2\ndrop_ratelimited=0\ndrop_handshake_busy=0\nipc_to_handshake=9\n"
        ));
        assert!(text.contains("\nipc_to_handshake=9\n"));
        assert!(text.contains("\nhandshake_bad_mac1=5\n"));
        assert!(text.ends_with("\nlisten_port=7\nerrno=0\n\n"));
        // What format_get writes of the same device is its tail.
        assert!(text.ends_with(&format_get(&dev)));
        assert!(!format_get(&dev).contains("public_key"));
    }
}
