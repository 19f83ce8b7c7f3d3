//! `wgctl show`: the output formats of `wg show`, plus `--json`.
//!
//! - [`pretty`]: the human view, laid out and coloured as `wg show` does
//!   (peers with the most recent handshake first), with the interface
//!   public key that stock `wg show` cannot print for wgd, the private key
//!   as `(hidden)`, and wgd's extras (the private key's file, dropped
//!   packets when there were any).
//! - [`field`]: the script-friendly views (`public-key` ... `dump`), tab
//!   separated, prefixed by the interface name for `show all`, exactly as
//!   `wg show` prints them, except that a key that exists but cannot be
//!   read back prints as `(hidden)`: the private key always (wgd never
//!   returns it; wgctl does not print another daemon's either), and the
//!   preshared keys (wgd does not even say whether a peer has one).
//! - [`json`]: one JSON object per interface (see [`JsonInterface`]).

use std::fmt::Write as _;

use serde::Serialize;

use proto::ipc::{DropCounters, HandshakeCounters};
use wg_config::display::{fmt_allowed_ip, fmt_endpoint, fmt_ip};
use wg_config::uapi::{Device, Peer, Psk};

/// The script-friendly views of `wg show IF FIELD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Field {
    PublicKey,
    PrivateKey,
    ListenPort,
    Fwmark,
    Peers,
    PresharedKeys,
    Endpoints,
    AllowedIps,
    LatestHandshakes,
    PersistentKeepalive,
    Transfer,
    Dump,
}

/// ANSI codes as `wg(8)` uses them, or nothing when colour is off.
#[derive(Clone, Copy)]
struct Paint(bool);

impl Paint {
    const RESET: &'static str = "\x1b[0m";
    const BOLD: &'static str = "\x1b[1m";
    const RED: &'static str = "\x1b[31m";
    const GREEN: &'static str = "\x1b[32m";
    const YELLOW: &'static str = "\x1b[33m";
    const CYAN: &'static str = "\x1b[36m";

    fn c(self, code: &'static str) -> &'static str {
        if self.0 {
            code
        } else {
            ""
        }
    }
}

/// `N years, N days, N hours, N minutes, N seconds`, leaving out the
/// zero units, as `wg show` prints a duration. Empty for 0.
pub fn pretty_duration(secs: u64, color: bool) -> String {
    let p = Paint(color);
    let units = [
        (secs / (365 * 24 * 3600), "year"),
        (secs % (365 * 24 * 3600) / (24 * 3600), "day"),
        (secs % (24 * 3600) / 3600, "hour"),
        (secs % 3600 / 60, "minute"),
        (secs % 60, "second"),
    ];
    let mut s = String::new();
    for (n, unit) in units {
        if n == 0 {
            continue;
        }
        if !s.is_empty() {
            s.push_str(", ");
        }
        let plural = if n == 1 { "" } else { "s" };
        let _ = write!(
            s,
            "{n} {}{unit}{plural}{}",
            p.c(Paint::CYAN),
            p.c(Paint::RESET)
        );
    }
    s
}

/// How long ago `then` was, as `wg show` says it: `Now`, `... ago`, or a
/// warning when the clock went backwards.
pub fn ago(then: u64, now: u64, color: bool) -> String {
    let p = Paint(color);
    if now == then {
        "Now".to_string()
    } else if now < then {
        format!(
            "({}System clock wound backward; connection problems may ensue.{})",
            p.c(Paint::RED),
            p.c(Paint::RESET)
        )
    } else {
        format!("{} ago", pretty_duration(now - then, color))
    }
}

/// A byte count as `wg show` prints it: `N B` below 1 KiB, else two
/// decimals of the largest binary unit up to TiB.
pub fn pretty_bytes(b: u64, color: bool) -> String {
    let p = Paint(color);
    let (c, r) = (p.c(Paint::CYAN), p.c(Paint::RESET));
    const K: u64 = 1024;
    if b < K {
        return format!("{b} {c}B{r}");
    }
    let (div, unit) = if b < K * K {
        (K as f64, "KiB")
    } else if b < K * K * K {
        ((K * K) as f64, "MiB")
    } else if b < K * K * K * K {
        ((K * K * K) as f64, "GiB")
    } else {
        ((K * K * K * K) as f64, "TiB")
    };
    format!("{:.2} {c}{unit}{r}", b as f64 / div)
}

/// Peers in `wg show`'s order: most recent handshake first, never last;
/// otherwise as the daemon listed them.
fn sorted_peers(dev: &Device) -> Vec<&Peer> {
    let mut peers: Vec<&Peer> = dev.peers.iter().collect();
    peers.sort_by(|a, b| match (a.last_handshake, b.last_handshake) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    peers
}

/// The human view of interface `name`. `now` is the current Unix time.
pub fn pretty(name: &str, dev: &Device, color: bool, now: u64) -> String {
    let p = Paint(color);
    let (b, r) = (p.c(Paint::BOLD), p.c(Paint::RESET));
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{r}{}{b}interface{r}: {}{}{r}",
        p.c(Paint::GREEN),
        p.c(Paint::GREEN),
        name
    );
    if let Some(k) = &dev.public_key {
        let _ = writeln!(s, "  {b}public key{r}: {k}");
        let _ = writeln!(s, "  {b}private key{r}: (hidden)");
    }
    if let Some(f) = &dev.private_key_file {
        let _ = writeln!(s, "  {b}private key file{r}: {}", f.display());
    }
    if dev.listen_port != 0 {
        let _ = writeln!(s, "  {b}listening port{r}: {}", dev.listen_port);
    }
    if dev.fwmark != 0 {
        let _ = writeln!(s, "  {b}fwmark{r}: 0x{:x}", dev.fwmark);
    }
    if let Some(stats) = &dev.stats {
        let d = &stats.drops;
        let drops: Vec<String> = [
            (d.malformed, "malformed"),
            (d.unknown_index, "unknown index"),
            (d.replay, "replayed"),
            (d.auth_failed, "failed authentication"),
            (d.source_not_allowed, "source not allowed"),
            (d.no_route, "no route"),
            (d.send_failed, "send failed"),
            (d.bad_order, "bad handshake-role orders"),
            (d.ratelimited, "rate-limited handshake messages"),
            (
                d.handshake_busy,
                "handshake messages the handshake role had no room for",
            ),
        ]
        .into_iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !drops.is_empty() {
            let _ = writeln!(s, "  {b}dropped packets{r}: {}", drops.join(", "));
        }
        let h = &stats.handshake;
        let hs: Vec<String> = [
            (h.malformed, "malformed"),
            (h.bad_mac1, "bad mac1"),
            (h.rate_limited, "rate limited"),
            (h.unknown_index, "unknown index"),
            (h.rejected, "rejected"),
            (h.replayed_timestamp, "replayed timestamp"),
            (h.initiation_flood, "initiation flood"),
            (h.cookie_replies_sent, "answered with a cookie"),
        ]
        .into_iter()
        .filter(|(n, _)| *n != 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
        if !hs.is_empty() {
            let _ = writeln!(s, "  {b}dropped handshakes{r}: {}", hs.join(", "));
        }
    }
    let peers = sorted_peers(dev);
    if !peers.is_empty() {
        s.push('\n');
    }
    for (i, peer) in peers.iter().enumerate() {
        if i > 0 {
            s.push('\n');
        }
        let y = p.c(Paint::YELLOW);
        let _ = writeln!(s, "{y}{b}peer{r}: {y}{}{r}", peer.public_key);
        if peer.preshared_key == Psk::Set {
            let _ = writeln!(s, "  {b}preshared key{r}: (hidden)");
        }
        if let Some(ep) = &peer.endpoint {
            let _ = writeln!(s, "  {b}endpoint{r}: {}", fmt_endpoint(ep));
        }
        let ips = if peer.allowed_ips.is_empty() {
            "(none)".to_string()
        } else {
            peer.allowed_ips
                .iter()
                .map(|ip| format!("{}{}/{r}{}", fmt_ip(ip.addr), p.c(Paint::CYAN), ip.cidr))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(s, "  {b}allowed ips{r}: {ips}");
        if let Some((sec, _)) = peer.last_handshake.filter(|t| t.0 != 0) {
            let _ = writeln!(s, "  {b}latest handshake{r}: {}", ago(sec, now, color));
        }
        if peer.rx_bytes != 0 || peer.tx_bytes != 0 {
            let _ = writeln!(
                s,
                "  {b}transfer{r}: {} received, {} sent",
                pretty_bytes(peer.rx_bytes, color),
                pretty_bytes(peer.tx_bytes, color)
            );
        }
        if peer.persistent_keepalive != 0 {
            let _ = writeln!(
                s,
                "  {b}persistent keepalive{r}: every {}",
                pretty_duration(u64::from(peer.persistent_keepalive), color)
            );
        }
    }
    s
}

fn public_key_text(dev: &Device) -> String {
    dev.public_key
        .map_or_else(|| "(none)".to_string(), |k| k.to_base64())
}

/// `(hidden)` when the interface has a private key: it exists, but is
/// never shown.
fn private_key_text(dev: &Device) -> &'static str {
    if dev.public_key.is_some() {
        "(hidden)"
    } else {
        "(none)"
    }
}

fn psk_text(p: &Peer) -> &'static str {
    match p.preshared_key {
        Psk::None => "(none)",
        Psk::Set | Psk::Unknown => "(hidden)",
    }
}

fn fwmark_text(mark: u32) -> String {
    if mark == 0 {
        "off".to_string()
    } else {
        format!("0x{mark:x}")
    }
}

/// One script-friendly view of interface `name`. With `with_interface`
/// (for `show all`), every line starts with the name and a tab.
pub fn field(name: &str, dev: &Device, field: Field, with_interface: bool) -> String {
    let mut s = String::new();
    let prefix = if with_interface {
        format!("{name}\t")
    } else {
        String::new()
    };
    let mut line = |text: String| {
        s.push_str(&prefix);
        s.push_str(&text);
        s.push('\n');
    };
    match field {
        Field::PublicKey => line(public_key_text(dev)),
        Field::PrivateKey => line(private_key_text(dev).to_string()),
        Field::ListenPort => line(dev.listen_port.to_string()),
        Field::Fwmark => line(fwmark_text(dev.fwmark)),
        Field::Peers => dev
            .peers
            .iter()
            .for_each(|p| line(p.public_key.to_base64())),
        Field::PresharedKeys => dev
            .peers
            .iter()
            .for_each(|p| line(format!("{}\t{}", p.public_key, psk_text(p)))),
        Field::Endpoints => dev.peers.iter().for_each(|p| {
            let ep = p
                .endpoint
                .map_or("(none)".to_string(), |e| fmt_endpoint(&e));
            line(format!("{}\t{ep}", p.public_key))
        }),
        Field::AllowedIps => dev
            .peers
            .iter()
            .for_each(|p| line(format!("{}\t{}", p.public_key, allowed_ips_text(p, " ")))),
        Field::LatestHandshakes => dev
            .peers
            .iter()
            .for_each(|p| line(format!("{}\t{}", p.public_key, handshake_secs(p)))),
        Field::PersistentKeepalive => dev.peers.iter().for_each(|p| {
            line(format!(
                "{}\t{}",
                p.public_key,
                keepalive_text(p.persistent_keepalive)
            ))
        }),
        Field::Transfer => dev
            .peers
            .iter()
            .for_each(|p| line(format!("{}\t{}\t{}", p.public_key, p.rx_bytes, p.tx_bytes))),
        Field::Dump => {
            line(format!(
                "{}\t{}\t{}\t{}",
                private_key_text(dev),
                public_key_text(dev),
                dev.listen_port,
                fwmark_text(dev.fwmark)
            ));
            for p in &dev.peers {
                line(format!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    p.public_key,
                    psk_text(p),
                    p.endpoint
                        .map_or("(none)".to_string(), |e| fmt_endpoint(&e)),
                    allowed_ips_text(p, ","),
                    handshake_secs(p),
                    p.rx_bytes,
                    p.tx_bytes,
                    keepalive_text(p.persistent_keepalive)
                ));
            }
        }
    }
    s
}

fn allowed_ips_text(p: &Peer, sep: &str) -> String {
    if p.allowed_ips.is_empty() {
        "(none)".to_string()
    } else {
        p.allowed_ips
            .iter()
            .map(fmt_allowed_ip)
            .collect::<Vec<_>>()
            .join(sep)
    }
}

fn handshake_secs(p: &Peer) -> u64 {
    p.last_handshake.map_or(0, |t| t.0)
}

fn keepalive_text(k: u16) -> String {
    if k == 0 {
        "off".to_string()
    } else {
        k.to_string()
    }
}

/// `wgctl show --json`: one interface.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct JsonInterface {
    pub name: String,
    /// Whether the daemon is wgd (and the wgd-only fields are filled).
    pub wgd: bool,
    /// Base64; `null` when no private key is set.
    pub public_key: Option<String>,
    /// Where wgd read the private key from, if from a file.
    pub private_key_file: Option<String>,
    pub listen_port: u16,
    /// `null` when off.
    pub fwmark: Option<u32>,
    /// Packets the data plane dropped, by reason (wgd only): the
    /// transport's own counters, field by field.
    pub drops: Option<DropCounters>,
    /// Handshake packets the handshake role dropped or answered with a
    /// cookie, by reason (wgd only).
    pub handshake_drops: Option<HandshakeCounters>,
    /// Messages from the transport to the handshake role (wgd only).
    pub ipc_to_handshake: Option<u64>,
    pub peers: Vec<JsonPeer>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct JsonPeer {
    pub public_key: String,
    /// `null` when the daemon does not say (wgd never does).
    pub has_preshared_key: Option<bool>,
    /// `a.b.c.d:port` or `[v6]:port`; `null` when unknown.
    pub endpoint: Option<String>,
    /// `addr/cidr`.
    pub allowed_ips: Vec<String>,
    /// Unix seconds of the latest handshake; `null` for never.
    pub latest_handshake: Option<u64>,
    pub transfer: JsonTransfer,
    /// Seconds; `null` when off.
    pub persistent_keepalive: Option<u16>,
}

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct JsonTransfer {
    pub rx: u64,
    pub tx: u64,
}

/// The JSON form of interface `name`.
pub fn json(name: &str, dev: &Device) -> JsonInterface {
    JsonInterface {
        name: name.to_string(),
        wgd: dev.is_wgd(),
        public_key: dev.public_key.map(|k| k.to_base64()),
        private_key_file: dev
            .private_key_file
            .as_ref()
            .map(|f| f.display().to_string()),
        listen_port: dev.listen_port,
        fwmark: (dev.fwmark != 0).then_some(dev.fwmark),
        drops: dev.stats.as_ref().map(|s| s.drops.clone()),
        handshake_drops: dev.stats.as_ref().map(|s| s.handshake.clone()),
        ipc_to_handshake: dev.stats.as_ref().map(|s| s.ipc_to_handshake),
        peers: dev
            .peers
            .iter()
            .map(|p| JsonPeer {
                public_key: p.public_key.to_base64(),
                has_preshared_key: match p.preshared_key {
                    Psk::None => Some(false),
                    Psk::Set => Some(true),
                    Psk::Unknown => None,
                },
                endpoint: p.endpoint.map(|e| fmt_endpoint(&e)),
                allowed_ips: p.allowed_ips.iter().map(fmt_allowed_ip).collect(),
                latest_handshake: p.last_handshake.map(|t| t.0).filter(|&s| s != 0),
                transfer: JsonTransfer {
                    rx: p.rx_bytes,
                    tx: p.tx_bytes,
                },
                persistent_keepalive: (p.persistent_keepalive != 0)
                    .then_some(p.persistent_keepalive),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::keys::PublicKey;
    use wg_config::cidr::aip;
    use wg_config::uapi::WgdStats;

    fn device() -> Device {
        let mut a = Peer::new(PublicKey([2; 32]));
        a.endpoint = Some("[2001:db8::1]:51821".parse().unwrap());
        a.allowed_ips = vec![aip("10.0.0.2", 32), aip("fd00::", 64)];
        a.last_handshake = Some((1_000, 5));
        a.rx_bytes = 1536;
        a.tx_bytes = 3 * 1024 * 1024;
        a.persistent_keepalive = 25;
        let b = Peer::new(PublicKey([3; 32]));
        Device {
            public_key: Some(PublicKey([1; 32])),
            private_key_file: Some("/etc/wgd/wg0.key".into()),
            listen_port: 51820,
            fwmark: 0x20,
            stats: Some(WgdStats::default()),
            // The never-handshaked peer first: pretty puts it last.
            peers: vec![b, a],
        }
    }

    #[test]
    fn durations_like_wg() {
        assert_eq!(pretty_duration(0, false), "");
        assert_eq!(pretty_duration(1, false), "1 second");
        assert_eq!(pretty_duration(61, false), "1 minute, 1 second");
        assert_eq!(pretty_duration(125, false), "2 minutes, 5 seconds");
        assert_eq!(pretty_duration(3600, false), "1 hour");
        assert_eq!(
            pretty_duration(365 * 86400 + 2 * 86400 + 3 * 3600 + 4 * 60 + 5, false),
            "1 year, 2 days, 3 hours, 4 minutes, 5 seconds"
        );
        assert_eq!(pretty_duration(1, true), "1 \x1b[36msecond\x1b[0m");
        assert_eq!(ago(100, 100, false), "Now");
        assert_eq!(ago(100, 190, false), "1 minute, 30 seconds ago");
        assert!(ago(200, 100, false).starts_with("(System clock wound backward"));
    }

    #[test]
    fn bytes_like_wg() {
        assert_eq!(pretty_bytes(0, false), "0 B");
        assert_eq!(pretty_bytes(1023, false), "1023 B");
        assert_eq!(pretty_bytes(1024, false), "1.00 KiB");
        assert_eq!(pretty_bytes(1536, false), "1.50 KiB");
        assert_eq!(pretty_bytes(5 * 1024 * 1024 + 10_000, false), "5.01 MiB");
        assert_eq!(pretty_bytes(3 << 30, false), "3.00 GiB");
        assert_eq!(pretty_bytes(5 << 40, false), "5.00 TiB");
        assert_eq!(pretty_bytes(1024, true), "1.00 \x1b[36mKiB\x1b[0m");
    }

    #[test]
    fn pretty_output() {
        let text = pretty("wg0", &device(), false, 1_125);
        let expected = format!(
            "interface: wg0\n\
             \x20 public key: {k1}\n\
             \x20 private key: (hidden)\n\
             \x20 private key file: /etc/wgd/wg0.key\n\
             \x20 listening port: 51820\n\
             \x20 fwmark: 0x20\n\
             \n\
             peer: {k2}\n\
             \x20 endpoint: [2001:db8::1]:51821\n\
             \x20 allowed ips: 10.0.0.2/32, fd00::/64\n\
             \x20 latest handshake: 2 minutes, 5 seconds ago\n\
             \x20 transfer: 1.50 KiB received, 3.00 MiB sent\n\
             \x20 persistent keepalive: every 25 seconds\n\
             \n\
             peer: {k3}\n\
             \x20 allowed ips: (none)\n",
            k1 = PublicKey([1; 32]),
            k2 = PublicKey([2; 32]),
            k3 = PublicKey([3; 32]),
        );
        assert_eq!(text, expected);
        // Colour: wg's codes, and nothing else changes.
        let coloured = pretty("wg0", &device(), true, 1_125);
        assert!(
            coloured.starts_with("\x1b[0m\x1b[32m\x1b[1minterface\x1b[0m: \x1b[32mwg0\x1b[0m\n")
        );
        assert!(coloured.contains("\x1b[33m\x1b[1mpeer\x1b[0m: \x1b[33m"));
        assert!(coloured.contains("10.0.0.2\x1b[36m/\x1b[0m32"));
        let stripped = coloured
            .split('\x1b')
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    &part[part.find('m').unwrap() + 1..]
                }
            })
            .collect::<String>();
        assert_eq!(stripped, expected);
    }

    #[test]
    fn drops_are_shown_when_nonzero() {
        let mut dev = device();
        dev.peers.clear();
        dev.stats.as_mut().unwrap().drops.replay = 3;
        dev.stats.as_mut().unwrap().drops.no_route = 1;
        let text = pretty("wg0", &dev, false, 0);
        assert!(
            text.ends_with("  dropped packets: 3 replayed, 1 no route\n"),
            "{text}"
        );
    }

    #[test]
    fn script_fields() {
        let dev = device();
        let (k1, k2, k3) = (
            PublicKey([1; 32]).to_string(),
            PublicKey([2; 32]).to_string(),
            PublicKey([3; 32]).to_string(),
        );
        assert_eq!(
            field("wg0", &dev, Field::PublicKey, false),
            format!("{k1}\n")
        );
        assert_eq!(field("wg0", &dev, Field::PrivateKey, false), "(hidden)\n");
        assert_eq!(field("wg0", &dev, Field::ListenPort, true), "wg0\t51820\n");
        assert_eq!(field("wg0", &dev, Field::Fwmark, false), "0x20\n");
        assert_eq!(
            field("wg0", &dev, Field::Peers, false),
            format!("{k3}\n{k2}\n")
        );
        assert_eq!(
            field("wg0", &dev, Field::PresharedKeys, false),
            format!("{k3}\t(hidden)\n{k2}\t(hidden)\n")
        );
        assert_eq!(
            field("wg0", &dev, Field::Endpoints, false),
            format!("{k3}\t(none)\n{k2}\t[2001:db8::1]:51821\n")
        );
        assert_eq!(
            field("wg0", &dev, Field::AllowedIps, false),
            format!("{k3}\t(none)\n{k2}\t10.0.0.2/32 fd00::/64\n")
        );
        assert_eq!(
            field("wg0", &dev, Field::LatestHandshakes, false),
            format!("{k3}\t0\n{k2}\t1000\n")
        );
        assert_eq!(
            field("wg0", &dev, Field::PersistentKeepalive, false),
            format!("{k3}\toff\n{k2}\t25\n")
        );
        assert_eq!(
            field("wg0", &dev, Field::Transfer, true),
            format!("wg0\t{k3}\t0\t0\nwg0\t{k2}\t1536\t3145728\n")
        );
        assert_eq!(
            field("wg0", &dev, Field::Dump, false),
            format!(
                "(hidden)\t{k1}\t51820\t0x20\n\
                 {k3}\t(hidden)\t(none)\t(none)\t0\t0\t0\toff\n\
                 {k2}\t(hidden)\t[2001:db8::1]:51821\t10.0.0.2/32,fd00::/64\t1000\t1536\t3145728\t25\n"
            )
        );
        let empty = Device::default();
        assert_eq!(
            field("wg1", &empty, Field::Dump, true),
            "wg1\t(none)\t(none)\t0\toff\n"
        );
        assert_eq!(field("wg1", &empty, Field::Peers, true), "");
    }

    #[test]
    fn json_shape() {
        let v = serde_json::to_value(json("wg0", &device())).unwrap();
        let k = |b: u8| PublicKey([b; 32]).to_base64();
        assert_eq!(
            v,
            serde_json::json!({
                "name": "wg0",
                "wgd": true,
                "public_key": k(1),
                "private_key_file": "/etc/wgd/wg0.key",
                "listen_port": 51820,
                "fwmark": 32,
                "drops": {
                    "malformed": 0, "unknown_index": 0, "replay": 0,
                    "auth_failed": 0, "source_not_allowed": 0, "no_route": 0, "send_failed": 0,
                    "bad_order": 0, "ratelimited": 0, "handshake_busy": 0
                },
                "handshake_drops": {
                    "malformed": 0, "bad_mac1": 0, "cookie_replies_sent": 0, "rate_limited": 0,
                    "unknown_index": 0, "rejected": 0, "replayed_timestamp": 0,
                    "initiation_flood": 0
                },
                "ipc_to_handshake": 0,
                "peers": [
                    {
                        "public_key": k(3),
                        "has_preshared_key": null,
                        "endpoint": null,
                        "allowed_ips": [],
                        "latest_handshake": null,
                        "transfer": {"rx": 0, "tx": 0},
                        "persistent_keepalive": null
                    },
                    {
                        "public_key": k(2),
                        "has_preshared_key": null,
                        "endpoint": "[2001:db8::1]:51821",
                        "allowed_ips": ["10.0.0.2/32", "fd00::/64"],
                        "latest_handshake": 1000,
                        "transfer": {"rx": 1536, "tx": 3145728},
                        "persistent_keepalive": 25
                    }
                ]
            })
        );
        // No secret ever appears, whatever the source.
        let text = serde_json::to_string(&json("wg0", &device())).unwrap();
        assert!(!text.contains("private_key\""));
    }

    /// `drops` is `DropCounters` itself now (it was a copy of its fields):
    /// the text must stay what scripts read, in the same order.
    #[test]
    fn json_drops_text_is_unchanged() {
        let mut dev = device();
        dev.stats.as_mut().unwrap().drops.replay = 3;
        dev.stats.as_mut().unwrap().drops.send_failed = 7;
        dev.stats.as_mut().unwrap().drops.bad_order = 2;
        let text = serde_json::to_string(&json("wg0", &dev)).unwrap();
        // New counters go at the end, after the ones scripts already read.
        assert!(
            text.contains(
                "\"fwmark\":32,\"drops\":{\"malformed\":0,\"unknown_index\":0,\"replay\":3,\
                 \"auth_failed\":0,\"source_not_allowed\":0,\"no_route\":0,\"send_failed\":7,\
                 \"bad_order\":2,\"ratelimited\":0,\"handshake_busy\":0},\"handshake_drops\":{"
            ),
            "{text}"
        );
        let pretty = serde_json::to_string_pretty(&json("wg0", &dev)).unwrap();
        assert!(
            pretty.contains("  \"drops\": {\n    \"malformed\": 0,\n    \"unknown_index\": 0,\n"),
            "{pretty}"
        );
        dev.stats = None;
        let text = serde_json::to_string(&json("wg0", &dev)).unwrap();
        assert!(text.contains("\"wgd\":false"), "{text}");
        assert!(
            text.contains("\"drops\":null,\"handshake_drops\":null"),
            "{text}"
        );
    }
}
