//! The configuration parser's tests, end to end through [`parse_str`] and
//! [`parse_file`]: every error is checked with its `FILE:LINE` prefix.

use super::parser::parse_with;
use super::*;
use crate::cidr::aip;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

const FILE: &str = "/etc/wireguard/wg0.conf";

/// A valid base64 key whose 32 bytes are all `n`.
fn b64(n: u8) -> String {
    PublicKey([n; 32]).to_base64()
}

fn secret(n: u8) -> SecretKey {
    SecretKey::from_bytes([n; 32])
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Path::new(FILE))
}

/// Asserts that `text` fails at `line` with a message containing
/// `needle`, and that `Display` is exactly `FILE:LINE: message`.
fn assert_err(text: &str, line: usize, needle: &str) -> ConfigError {
    let e = match parse(text) {
        Ok(c) => panic!("expected an error at line {line}, got {c:?}"),
        Err(e) => e,
    };
    let shown = e.to_string();
    assert_eq!(e.line, line, "{shown}");
    assert_eq!(e.file, Path::new(FILE));
    let prefix = format!("{FILE}:{line}: ");
    assert!(shown.starts_with(&prefix), "{shown:?} lacks {prefix:?}");
    assert_eq!(shown, format!("{prefix}{}", e.message));
    assert!(
        e.message.contains(needle),
        "{shown:?} does not mention {needle:?}"
    );
    e
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "wgd-config-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn full_config() {
    let text = format!(
        "[Interface]
PrivateKey = {priv}
ListenPort = 51820
FwMark = 0x1234
AutoAddress = true

[Peer]
PublicKey = {p1}
PresharedKey = {psk}
AllowedIPs = 10.0.0.2/32, 10.0.1.5/24
AllowedIPs = 192.168.5.7
Endpoint = 203.0.113.5:51820
PersistentKeepalive = 25

[Peer]
PublicKey = {p2}
AllowedIPs = fd00::2/128,::/0
AllowedIPs =   2001:db8::1  ,  0.0.0.0/0
Endpoint = [2001:db8::1]:51821
PersistentKeepalive = off

[Peer]
PublicKey = {p3}
Endpoint = localhost:51820
",
        priv = b64(1),
        psk = b64(2),
        p1 = b64(3),
        p2 = b64(4),
        p3 = b64(5),
    );
    let c = parse(&text).unwrap();

    let pk = c.interface.private_key.as_ref().unwrap();
    assert!(pk.key == secret(1));
    assert_eq!(pk.file, None);
    assert_eq!(c.interface.listen_port, Some(51820));
    assert_eq!(c.interface.fwmark, Some(0x1234));
    assert!(c.interface.auto_address);
    assert_eq!(c.peers.len(), 3);

    let p = &c.peers[0];
    assert_eq!(p.public_key, PublicKey([3; 32]));
    assert!(p.preshared_key.as_ref().unwrap().key == secret(2));
    assert_eq!(
        p.allowed_ips,
        vec![
            aip("10.0.0.2", 32),
            // host bits are kept as written
            aip("10.0.1.5", 24),
            aip("192.168.5.7", 32),
        ]
    );
    let ep = p.endpoint.as_ref().unwrap();
    assert_eq!(
        ep.addr,
        SocketAddr::new(Ipv4Addr::new(203, 0, 113, 5).into(), 51820)
    );
    assert_eq!(ep.spec, "203.0.113.5:51820");
    assert_eq!(p.persistent_keepalive, Some(25));

    let p = &c.peers[1];
    assert_eq!(p.public_key, PublicKey([4; 32]));
    assert!(p.preshared_key.is_none());
    assert_eq!(
        p.allowed_ips,
        vec![
            aip("fd00::2", 128),
            aip("::", 0),
            aip("2001:db8::1", 128),
            aip("0.0.0.0", 0),
        ]
    );
    let ep = p.endpoint.as_ref().unwrap();
    let v6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    assert_eq!(ep.addr, SocketAddr::new(v6.into(), 51821));
    assert_eq!(ep.spec, "[2001:db8::1]:51821");
    assert_eq!(p.persistent_keepalive, Some(0));

    let p = &c.peers[2];
    assert!(p.allowed_ips.is_empty());
    let ep = p.endpoint.as_ref().unwrap();
    assert!(ep.addr.ip().is_loopback(), "{ep:?}");
    assert_eq!(ep.addr.port(), 51820);
    assert_eq!(ep.spec, "localhost:51820");
    assert_eq!(p.persistent_keepalive, None);

    // Debug must not print secrets.
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(&b64(1)), "{dbg}");
    assert!(!dbg.contains(&b64(2)), "{dbg}");
    assert!(dbg.contains(&b64(3)));
}

#[test]
fn minimal_and_empty() {
    let c = parse("").unwrap();
    assert!(c.interface.private_key.is_none());
    assert_eq!(c.interface.listen_port, None);
    assert_eq!(c.interface.fwmark, None);
    assert!(!c.interface.auto_address);
    assert!(c.peers.is_empty());

    let c = parse(&format!(
        "[Interface]\nFwMark = off\nListenPort = 0\nAutoAddress = false\n\
         [Peer]\nPublicKey = {}\nAllowedIPs =\n",
        b64(9)
    ))
    .unwrap();
    assert_eq!(c.interface.fwmark, Some(0));
    assert_eq!(c.interface.listen_port, Some(0));
    assert!(c.peers[0].allowed_ips.is_empty());
}

#[test]
fn numbers() {
    let fw = |v: &str| {
        parse(&format!("[Interface]\nFwMark = {v}\n"))
            .map(|c| c.interface.fwmark)
            .ok()
            .flatten()
    };
    assert_eq!(fw("0"), Some(0));
    assert_eq!(fw("4294967295"), Some(u32::MAX));
    assert_eq!(fw("0xffffffff"), Some(u32::MAX));
    assert_eq!(fw("0XABC"), Some(0xabc));
    assert_eq!(fw("OFF"), Some(0));
    assert_eq!(fw("4294967296"), None);
    assert_eq!(fw("0x100000000"), None);
    assert_eq!(fw("0x"), None);
    assert_eq!(fw("+1"), None);
    assert_eq!(fw("-1"), None);
    assert_eq!(fw("1.5"), None);

    let port = |v: &str| {
        parse(&format!("[Interface]\nListenPort = {v}\n"))
            .map(|c| c.interface.listen_port)
            .ok()
            .flatten()
    };
    assert_eq!(port("65535"), Some(65535));
    assert_eq!(port("00080"), Some(80));
    assert_eq!(port("65536"), None);
    assert_eq!(port("+80"), None);
    assert_eq!(port(""), None);
}

#[test]
fn case_insensitive() {
    let text = format!(
        "[INTERFACE]\nprivatekey = {}\nLISTENPORT = 1234\nfWmArK = 7\nautoaddress = TRUE\n\
         [peer]\npublickey = {}\npresharedKEY = {}\nallowedips = 10.0.0.0/8\n\
         ENDPOINT = 192.0.2.1:9\npersistentkeepalive = OFF\n",
        b64(1),
        b64(2),
        b64(3)
    );
    let c = parse(&text).unwrap();
    assert!(c.interface.private_key.unwrap().key == secret(1));
    assert_eq!(c.interface.listen_port, Some(1234));
    assert_eq!(c.interface.fwmark, Some(7));
    assert!(c.interface.auto_address);
    let p = &c.peers[0];
    assert_eq!(p.public_key, PublicKey([2; 32]));
    assert!(p.preshared_key.as_ref().unwrap().key == secret(3));
    assert_eq!(p.allowed_ips, vec![aip("10.0.0.0", 8)]);
    assert_eq!(p.endpoint.as_ref().unwrap().addr.port(), 9);
    assert_eq!(p.persistent_keepalive, Some(0));
}

#[test]
fn comments_and_whitespace() {
    let text = format!(
        "\u{feff}# leading comment\n\
         \n   \t\n\
         [ Interface ] # trailing comment on a header\r\n\
         \tListenPort\t=\t51820   # the port\r\n\
         # PrivateKey = not-a-key\n\
         [Peer]#no space\n\
         PublicKey={}#glued comment\n\
         AllowedIPs = 10.0.0.1/32 , 10.0.0.2 / 32 # spaces around the slash\n\
         #AllowedIPs = garbage\n\
         \x20\x20\n",
        b64(7)
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.interface.listen_port, Some(51820));
    assert!(c.interface.private_key.is_none());
    assert_eq!(c.peers.len(), 1);
    assert_eq!(c.peers[0].public_key, PublicKey([7; 32]));
    assert_eq!(
        c.peers[0].allowed_ips,
        vec![aip("10.0.0.1", 32), aip("10.0.0.2", 32)]
    );
}

#[test]
fn repeated_keys_override_and_sections_merge() {
    let text = format!(
        "[Interface]\nListenPort = 1\nListenPort = 2\n[Peer]\nPublicKey = {}\n\
         [Interface]\nFwMark = 3\n",
        b64(1)
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.interface.listen_port, Some(2));
    assert_eq!(c.interface.fwmark, Some(3));
    assert_eq!(c.peers.len(), 1);
}

#[test]
fn key_files_relative_to_config_dir() {
    let dir = TempDir::new("keyfile");
    std::fs::create_dir(dir.0.join("keys")).unwrap();
    std::fs::write(dir.0.join("keys/priv.key"), format!("{}\n", b64(11))).unwrap();
    let psk_path = dir.0.join("psk");
    std::fs::write(&psk_path, format!("  {}  \r\n", b64(12))).unwrap();
    let conf = dir.0.join("wg0.conf");
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKeyFile = keys/priv.key\n\
             [Peer]\nPublicKey = {}\nPresharedKeyFile = {}\n",
            b64(13),
            psk_path.display()
        ),
    )
    .unwrap();

    let c = parse_file(&conf).unwrap();
    let pk = c.interface.private_key.unwrap();
    assert!(pk.key == secret(11));
    assert_eq!(
        pk.file.as_deref(),
        Some(dir.0.join("keys/priv.key").as_path())
    );
    let psk = c.peers[0].preshared_key.as_ref().unwrap();
    assert!(psk.key == secret(12));
    assert_eq!(psk.file.as_deref(), Some(psk_path.as_path()));
}

#[test]
fn key_file_errors() {
    let dir = TempDir::new("keyfile-err");
    let conf = dir.0.join("wg0.conf");
    std::fs::write(dir.0.join("bad.key"), "not a key\n").unwrap();
    std::fs::write(dir.0.join("big.key"), vec![b'A'; 4096]).unwrap();
    std::fs::create_dir(dir.0.join("subdir")).unwrap();

    let try_file = |name: &str| {
        std::fs::write(&conf, format!("\n[Interface]\nPrivateKeyFile = {name}\n")).unwrap();
        let e = parse_file(&conf).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("{}:3: ", conf.display())),
            "{e}"
        );
        e.message
    };

    let m = try_file("missing.key");
    assert!(
        m.contains(&dir.0.join("missing.key").display().to_string()),
        "{m}"
    );
    assert!(m.contains("os error 2"), "{m}");

    let m = try_file("bad.key");
    assert!(m.contains("invalid key in PrivateKeyFile"), "{m}");
    assert!(m.contains("bad.key"), "{m}");

    let m = try_file("big.key");
    assert!(m.contains("too large"), "{m}");

    let m = try_file("subdir");
    assert!(m.contains("cannot read PrivateKeyFile"), "{m}");

    std::fs::write(&conf, "[Interface]\nPrivateKeyFile =\n").unwrap();
    assert_eq!(parse_file(&conf).unwrap_err().line, 2);
}

#[test]
fn unreadable_file() {
    let dir = TempDir::new("unreadable");
    let missing = dir.0.join("nope.conf");
    let e = parse_file(&missing).unwrap_err();
    assert_eq!(e.line, 0);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}: cannot read", missing.display())),
        "{shown}"
    );
    assert!(shown.contains("os error 2"), "{shown}");

    let e = parse_file(&dir.0).unwrap_err();
    assert_eq!(e.line, 0);
}

#[test]
fn invalid_utf8_names_the_line() {
    let dir = TempDir::new("utf8");
    let conf = dir.0.join("wg0.conf");
    std::fs::write(&conf, b"[Interface]\nListenPort = 1\n# caf\xe9\n").unwrap();
    let e = parse_file(&conf).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{}:3: not valid UTF-8", conf.display())
    );
}

#[test]
fn error_key_outside_section() {
    assert_err(
        "# hi\nListenPort = 1\n[Interface]\n",
        2,
        "outside any section",
    );
}

#[test]
fn error_unknown_section() {
    assert_err("[Interface]\n\n[Peers]\n", 3, "unknown section [Peers]");
    assert_err("[Interface\n", 1, "malformed section header");
    assert_err("[]\n", 1, "unknown section");
}

#[test]
fn error_unknown_key() {
    assert_err(
        "[Interface]\nListenPort = 1\nFoo = bar\n",
        3,
        "unknown key `Foo`",
    );
    let e = assert_err("[Interface]\nPublicKey = x\n", 2, "belongs in a [Peer]");
    assert!(e.message.contains("`PublicKey`"));
    assert_err(
        &format!("[Peer]\nPublicKey = {}\nListenPort = 1\n", b64(1)),
        3,
        "belongs in a [Interface]",
    );
}

#[test]
fn error_wg_quick_keys() {
    for key in ["Address", "DNS", "MTU", "Table", "PostUp", "SaveConfig"] {
        assert_err(
            &format!("[Interface]\n{key} = 10.0.0.1/24\n"),
            2,
            "wg-quick",
        );
    }
    assert_err(
        "[Interface]\naddress = 10.0.0.1/24\n",
        2,
        "`address` is a wg-quick",
    );
}

#[test]
fn error_line_without_equals() {
    assert_err(
        "[Interface]\nListenPort 51820\n",
        2,
        "expected `Key = Value`",
    );
    assert_err("garbage\n", 1, "expected `Key = Value`");
    assert_err("[Interface]\n = 5\n", 2, "missing key name");
}

#[test]
fn error_bad_keys() {
    let e = assert_err("[Peer]\nPublicKey = abc\n", 2, "invalid key in PublicKey");
    assert!(e.message.contains("base64"));
    // Never echo (what may be) a private key.
    let almost = format!("{}!", &b64(1)[..43]);
    let e = assert_err(
        &format!("[Interface]\nPrivateKey = {almost}\n"),
        2,
        "invalid key in PrivateKey",
    );
    assert!(!e.to_string().contains(&almost[..40]));
    assert_err(
        &format!(
            "[Peer]\nPublicKey = {}\nPresharedKey = {}AA\n",
            b64(1),
            b64(2)
        ),
        3,
        "invalid key in PresharedKey",
    );
    assert_err(
        "[Interface]\nPrivateKey =\n",
        2,
        "invalid key in PrivateKey",
    );
}

#[test]
fn error_bad_numbers() {
    assert_err("[Interface]\nListenPort = 65536\n", 2, "invalid ListenPort");
    assert_err("[Interface]\nListenPort = -1\n", 2, "invalid ListenPort");
    assert_err("[Interface]\nListenPort = http\n", 2, "invalid ListenPort");
    assert_err("[Interface]\nFwMark = 0x1g\n", 2, "invalid FwMark");
    assert_err("[Interface]\nFwMark = 99999999999\n", 2, "invalid FwMark");
    assert_err("[Interface]\nAutoAddress = yes\n", 2, "invalid AutoAddress");
    let peer = format!("[Peer]\nPublicKey = {}\n", b64(1));
    assert_err(
        &format!("{peer}PersistentKeepalive = 70000\n"),
        3,
        "invalid PersistentKeepalive",
    );
    assert_err(
        &format!("{peer}PersistentKeepalive = 25s\n"),
        3,
        "invalid PersistentKeepalive",
    );
}

#[test]
fn error_bad_cidr() {
    let peer = format!("[Peer]\nPublicKey = {}\nAllowedIPs = 10.0.0.0/8\n", b64(1));
    for (entry, why) in [
        ("10.0.0.0/33", "0-32 for IPv4"),
        ("::/129", "0-128 for IPv6"),
        ("10.0.0.0/300", "0-32"),
        ("10.0.0/24", "not an IPv4 or IPv6 address"),
        ("10.0.0.1/", "prefix length is not a number"),
        ("10.0.0.1/x", "prefix length is not a number"),
        ("10.0.0.1/-1", "prefix length is not a number"),
        ("10.0.0.1/24/8", "prefix length is not a number"),
        ("host.example/32", "not an IPv4 or IPv6 address"),
        ("10.0.0.1,,10.0.0.2", "empty entry"),
        ("10.0.0.1,", "empty entry"),
    ] {
        assert_err(&format!("{peer}AllowedIPs = {entry}\n"), 4, why);
    }
}

#[test]
fn error_bad_endpoint() {
    let peer = format!("[Peer]\nPublicKey = {}\n", b64(1));
    for (spec, why) in [
        ("192.0.2.1", "expected host:port"),
        ("192.0.2.1:", "port must be"),
        ("192.0.2.1:0", "port must be"),
        ("192.0.2.1:65536", "port must be"),
        ("192.0.2.1:http", "port must be"),
        ("2001:db8::1:51820", "must be in brackets"),
        ("[2001:db8::1:51820", "missing `]`"),
        ("[2001:db8::1]51820", "expected `:port`"),
        ("[]:51820", "missing host"),
        (":51820", "missing host"),
        ("bad host:51820", "not an IP address or hostname"),
        ("", "expected host:port"),
    ] {
        assert_err(&format!("{peer}Endpoint = {spec}\n"), 3, why);
    }
}

#[test]
fn error_unresolvable_hostname() {
    // .invalid is reserved never to resolve (RFC 6761).
    assert_err(
        &format!(
            "[Peer]\nPublicKey = {}\nEndpoint = wgd-test.invalid:51820\n",
            b64(1)
        ),
        3,
        "cannot resolve Endpoint host \"wgd-test.invalid\"",
    );
}

#[test]
fn error_peer_without_public_key() {
    // Reported at the [Peer] header, whether the section ends at the
    // next header or at the end of the file.
    assert_err(
        &format!(
            "[Interface]\n\n[Peer]\nAllowedIPs = 10.0.0.1\n[Peer]\nPublicKey = {}\n",
            b64(1)
        ),
        3,
        "has no PublicKey",
    );
    assert_err(
        &format!(
            "[Peer]\nPublicKey = {}\n[Peer] # two\nEndpoint = 192.0.2.1:1\n",
            b64(1)
        ),
        3,
        "has no PublicKey",
    );
}

#[test]
fn error_duplicate_peer() {
    let e = assert_err(
        &format!(
            "[Peer]\nPublicKey = {k}\n\n[Peer]\nAllowedIPs = 10.0.0.1\nPublicKey = {k}\n",
            k = b64(1)
        ),
        6,
        "duplicate peer",
    );
    assert!(e.message.contains(&b64(1)));
    assert_err(
        &format!("[Peer]\nPublicKey = {}\nPublicKey = {}\n", b64(1), b64(2)),
        3,
        "second PublicKey",
    );
}

/// xorshift64*: deterministic, so a failure can be reproduced.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn garbage_never_panics() {
    let key = b64(42);
    let fragments: Vec<&str> = vec![
        "[Interface]",
        "[Peer]",
        "[",
        "]",
        "=",
        "==",
        "#",
        ",",
        "/",
        ":",
        "[::1]",
        " ",
        "\t",
        "\r",
        "PrivateKey",
        "PrivateKeyFile",
        "PublicKey",
        "PresharedKey",
        "PresharedKeyFile",
        "AllowedIPs",
        "Endpoint",
        "ListenPort",
        "FwMark",
        "PersistentKeepalive",
        "AutoAddress",
        "Address",
        "off",
        "true",
        "0x",
        "0",
        "65535",
        "4294967296",
        "10.0.0.1",
        "::",
        "/32",
        "/129",
        "255",
        "é",
        "\u{feff}",
        "\u{1F512}",
        "\0",
        &key,
    ];
    // A resolver that never touches the network, and a base directory
    // that does not exist, keep the test hermetic.
    let fail = |_: &str, _: u16| -> io::Result<SocketAddr> {
        Err(io::Error::new(io::ErrorKind::NotFound, "test resolver"))
    };
    let path = Path::new("/nonexistent-wgd-test-dir/wg0.conf");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for _ in 0..3000 {
        let mut text = String::new();
        for _ in 0..rng.below(12) {
            for _ in 0..rng.below(8) {
                if rng.below(6) == 0 {
                    // An arbitrary character, not only ASCII.
                    let c = char::from_u32(rng.next() as u32 % 0x11_0000).unwrap_or('?');
                    text.push(c);
                } else {
                    text.push_str(fragments[rng.below(fragments.len())]);
                }
            }
            text.push('\n');
        }
        let lines = text.lines().count();
        match parse_with(&text, path, &fail) {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert!(e.line >= 1 && e.line <= lines, "{e} for {text:?}");
                assert!(e.to_string().starts_with(&format!("{}:", path.display())));
            }
        }
    }
    // The generator must also reach the success path now and then.
    assert!(accepted > 0);
}

#[test]
fn auto_address_adds_the_derived_host_prefix() {
    let c = parse(&format!(
        "[Interface]\nAutoAddress = true\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.0.0.2\n",
        b64(2)
    ))
    .unwrap();
    let p = &c.peers[0];
    let derived = AllowedIp {
        addr: IpAddr::V6(PublicKey([2; 32]).derived_address()),
        cidr: 128,
    };
    assert_eq!(
        p.allowed_ips_with_auto(true),
        vec![aip("10.0.0.2", 32), derived]
    );
    assert_eq!(p.allowed_ips_with_auto(false), vec![aip("10.0.0.2", 32)]);
    assert!(derived.addr.to_string().starts_with("fd77:"));
}
