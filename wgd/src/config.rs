//! The configuration file parser: the format of `wg setconf` (wg(8),
//! "CONFIGURATION FILE FORMAT") plus wgd's extensions `PrivateKeyFile`,
//! `PresharedKeyFile` and `AutoAddress`.
//!
//! Called by the parent process at start-up (`wgd -c FILE IFNAME`), before
//! any role is spawned, and later by the control path for `wgctl setconf`.
//! The result holds the interface's private key and the PSKs: the parent
//! passes them on to the crypto role and drops its copy. For that reason the
//! structs here are not `Clone`, their `Debug` never prints a secret, and the
//! raw bytes of the file and of key files are zeroized once parsed.
//!
//! Every error names the file and the 1-based line (`FILE:LINE: message`),
//! so that an administrator can fix a configuration without guessing.
//!
//! Where wgd is deliberately stricter than wg(8):
//! - wg-quick(8)'s keys (`Address`, `DNS`, `MTU`, ...) are errors: wgd reads
//!   the `wg` format, and silently ignoring them would hide a misconfiguration.
//! - Two `[Peer]` sections with the same public key are an error (wg(8)
//!   merges them), since in a hand-written file that is almost always a
//!   copy-and-paste mistake.
//! - Ports are numeric; service names are not looked up.
//!
//! Endpoint hostnames are resolved once, here, with the system resolver;
//! the first address it returns is used and the spelling is kept in
//! [`Endpoint::spec`] so that `showconf` can write it back.

use std::collections::HashSet;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

use proto::ipc::AllowedIp;
use proto::keys::{PublicKey, SecretKey};
use zeroize::Zeroizing;

/// A parsed configuration file.
#[derive(Debug)]
pub struct Config {
    pub interface: InterfaceConfig,
    pub peers: Vec<PeerConfig>,
}

/// The `[Interface]` section. Every field is optional, as in wg(8): a
/// configuration may set only what it wants to change.
#[derive(Debug, Default)]
pub struct InterfaceConfig {
    pub private_key: Option<KeyFromConfig>,
    pub listen_port: Option<u16>,
    /// `off` is stored as `Some(0)`, which is what the kernel means by it.
    pub fwmark: Option<u32>,
    pub auto_address: bool,
}

/// A secret key and where it came from.
#[derive(Debug)]
pub struct KeyFromConfig {
    pub key: SecretKey,
    /// The key file it was read from (relative names already joined to the
    /// configuration file's directory), or `None` if it was written inline.
    /// Kept because secrets cannot be read back from the crypto role, so
    /// `showconf` can only preserve a key by naming its file.
    pub file: Option<PathBuf>,
}

/// One `[Peer]` section.
#[derive(Debug)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    pub preshared_key: Option<KeyFromConfig>,
    /// In file order, host bits as written: masking is the allowed-IPs
    /// table's job, and keeping them lets `showconf` round-trip the file.
    pub allowed_ips: Vec<AllowedIp>,
    pub endpoint: Option<Endpoint>,
    /// `off` is stored as `Some(0)`.
    pub persistent_keepalive: Option<u16>,
}

/// A peer's endpoint: the address to send to, and how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The value as written (e.g. `vpn.example.org:51820`), so a hostname
    /// survives `showconf` instead of being replaced by today's address.
    pub spec: String,
}

/// A configuration error. `Display` is `FILE:LINE: message`, or
/// `FILE: message` when `line` is 0 (the file as a whole, e.g. unreadable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses the configuration file at `path`.
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .map_err(|e| error(path, 0, format!("cannot read configuration file: {e}")))?,
    );
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        error(path, line, "not valid UTF-8")
    })?;
    parse_str(text, path)
}

/// Parses configuration text. `path` names the file in error messages and
/// is the base for relative `PrivateKeyFile`/`PresharedKeyFile` names.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(text, path, &resolve_system)
}

/// Turns a hostname and port into one address. A parameter so that tests
/// can feed arbitrary text to the parser without touching DNS.
type Resolver<'a> = &'a dyn Fn(&str, u16) -> io::Result<SocketAddr>;

fn resolve_system(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses found"))
}

fn error(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}

fn parse_with(text: &str, path: &Path, resolve: Resolver<'_>) -> Result<Config, ConfigError> {
    // Editors on some systems start a UTF-8 file with a byte-order mark;
    // it is not whitespace to `trim`, and would make line 1 unparsable.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser {
        ctx: Ctx {
            file: path,
            dir: path.parent().unwrap_or(Path::new("")),
            resolve,
        },
        interface: InterfaceConfig::default(),
        peers: Vec::new(),
        seen: HashSet::new(),
        section: Section::None,
    };
    for (i, raw) in text.lines().enumerate() {
        parser.line(i + 1, raw)?;
    }
    parser.end_section()?;
    Ok(Config {
        interface: parser.interface,
        peers: parser.peers,
    })
}

/// What does not change while parsing, kept apart from the mutable state
/// so that a section can be borrowed mutably while values are parsed.
struct Ctx<'a> {
    file: &'a Path,
    dir: &'a Path,
    resolve: Resolver<'a>,
}

struct Parser<'a> {
    ctx: Ctx<'a>,
    interface: InterfaceConfig,
    peers: Vec<PeerConfig>,
    /// Public keys of the peers so far, to reject a second section for the
    /// same peer.
    seen: HashSet<PublicKey>,
    section: Section,
}

enum Section {
    None,
    Interface,
    Peer(PeerDraft),
}

/// A `[Peer]` section being read; it becomes a [`PeerConfig`] only once
/// it is known to have a public key.
struct PeerDraft {
    header_line: usize,
    public_key: Option<PublicKey>,
    preshared_key: Option<KeyFromConfig>,
    allowed_ips: Vec<AllowedIp>,
    endpoint: Option<Endpoint>,
    persistent_keepalive: Option<u16>,
}

const INTERFACE_KEYS: &[&str] = &[
    "privatekey",
    "privatekeyfile",
    "listenport",
    "fwmark",
    "autoaddress",
];
const PEER_KEYS: &[&str] = &[
    "publickey",
    "presharedkey",
    "presharedkeyfile",
    "allowedips",
    "endpoint",
    "persistentkeepalive",
];
const WG_QUICK_KEYS: &[&str] = &[
    "address",
    "dns",
    "mtu",
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
];

/// A key file holds 44 characters of base64 and perhaps a newline; the
/// bound keeps a mistaken path such as `/dev/zero` from eating memory.
const KEY_FILE_MAX: usize = 1024;

impl Parser<'_> {
    fn line(&mut self, n: usize, raw: &str) -> Result<(), ConfigError> {
        let file = self.ctx.file;
        let line = match raw.find('#') {
            Some(i) => &raw[..i],
            None => raw,
        }
        .trim();
        if line.is_empty() {
            return Ok(());
        }

        if let Some(rest) = line.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| {
                error(
                    file,
                    n,
                    "malformed section header: expected [Interface] or [Peer]",
                )
            })?;
            let name = name.trim();
            // The previous section is complete only now, so its checks
            // (a peer without PublicKey) run before the new one starts.
            self.end_section()?;
            self.section = match name.to_ascii_lowercase().as_str() {
                "interface" => Section::Interface,
                "peer" => Section::Peer(PeerDraft {
                    header_line: n,
                    public_key: None,
                    preshared_key: None,
                    allowed_ips: Vec::new(),
                    endpoint: None,
                    persistent_keepalive: None,
                }),
                _ => {
                    return Err(error(
                        file,
                        n,
                        format!("unknown section [{name}]: expected [Interface] or [Peer]"),
                    ))
                }
            };
            return Ok(());
        }

        let Some((key, value)) = line.split_once('=') else {
            return Err(error(
                file,
                n,
                "expected `Key = Value` or a section header such as [Peer]",
            ));
        };
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() {
            return Err(error(file, n, "missing key name before `=`"));
        }
        let lkey = key.to_ascii_lowercase();
        if WG_QUICK_KEYS.contains(&lkey.as_str()) {
            return Err(error(
                file,
                n,
                format!(
                    "`{key}` is a wg-quick(8) key, not part of the wg(8) format \
                     wgd reads; remove it (`wg-quick strip` does)"
                ),
            ));
        }

        let ctx = &self.ctx;
        let result = match &mut self.section {
            Section::None => Err(format!(
                "`{key}` is outside any section: an [Interface] or [Peer] header must come first"
            )),
            Section::Interface => ctx.interface_key(&mut self.interface, key, &lkey, value),
            Section::Peer(draft) => ctx.peer_key(draft, &mut self.seen, key, &lkey, value),
        };
        result.map_err(|message| error(file, n, message))
    }

    fn end_section(&mut self) -> Result<(), ConfigError> {
        if let Section::Peer(draft) = std::mem::replace(&mut self.section, Section::None) {
            let Some(public_key) = draft.public_key else {
                return Err(error(
                    self.ctx.file,
                    draft.header_line,
                    "[Peer] section has no PublicKey",
                ));
            };
            self.peers.push(PeerConfig {
                public_key,
                preshared_key: draft.preshared_key,
                allowed_ips: draft.allowed_ips,
                endpoint: draft.endpoint,
                persistent_keepalive: draft.persistent_keepalive,
            });
        }
        Ok(())
    }
}

impl Ctx<'_> {
    fn interface_key(
        &self,
        iface: &mut InterfaceConfig,
        key: &str,
        lkey: &str,
        value: &str,
    ) -> Result<(), String> {
        // A repeated key overrides the earlier one, as in wg(8).
        match lkey {
            "privatekey" => {
                iface.private_key = Some(KeyFromConfig {
                    key: parse_secret(value, "PrivateKey")?,
                    file: None,
                })
            }
            "privatekeyfile" => iface.private_key = Some(self.key_file(value, "PrivateKeyFile")?),
            "listenport" => {
                iface.listen_port = Some(parse_u16(value).ok_or_else(|| {
                    format!("invalid ListenPort {value:?}: expected a port number 0-65535")
                })?)
            }
            "fwmark" => {
                iface.fwmark = Some(parse_fwmark(value).ok_or_else(|| {
                    format!(
                        "invalid FwMark {value:?}: expected a 32-bit number \
                         (decimal or 0x hex) or `off`"
                    )
                })?)
            }
            "autoaddress" => {
                iface.auto_address = if value.eq_ignore_ascii_case("true") {
                    true
                } else if value.eq_ignore_ascii_case("false") {
                    false
                } else {
                    return Err(format!(
                        "invalid AutoAddress {value:?}: expected `true` or `false`"
                    ));
                }
            }
            _ => return Err(unknown_key(key, lkey, "Interface")),
        }
        Ok(())
    }

    fn peer_key(
        &self,
        draft: &mut PeerDraft,
        seen: &mut HashSet<PublicKey>,
        key: &str,
        lkey: &str,
        value: &str,
    ) -> Result<(), String> {
        match lkey {
            "publickey" => {
                // In wg(8) a second PublicKey would silently start talking
                // about another peer; make the section boundary explicit.
                if draft.public_key.is_some() {
                    return Err(
                        "second PublicKey in one [Peer] section; start a new [Peer] section \
                         for another peer"
                            .into(),
                    );
                }
                let pk = PublicKey::from_base64(value)
                    .map_err(|e| format!("invalid key in PublicKey: {e}"))?;
                if !seen.insert(pk) {
                    return Err(format!(
                        "duplicate peer: PublicKey {pk} already has an earlier [Peer] section"
                    ));
                }
                draft.public_key = Some(pk);
            }
            "presharedkey" => {
                draft.preshared_key = Some(KeyFromConfig {
                    key: parse_secret(value, "PresharedKey")?,
                    file: None,
                })
            }
            "presharedkeyfile" => {
                draft.preshared_key = Some(self.key_file(value, "PresharedKeyFile")?)
            }
            "allowedips" => {
                // An empty value adds nothing; wg(8) accepts it too.
                if !value.is_empty() {
                    for entry in value.split(',') {
                        draft.allowed_ips.push(parse_allowed_ip(entry.trim())?);
                    }
                }
            }
            "endpoint" => draft.endpoint = Some(parse_endpoint(value, self.resolve)?),
            "persistentkeepalive" => {
                draft.persistent_keepalive = Some(if value.eq_ignore_ascii_case("off") {
                    0
                } else {
                    parse_u16(value).ok_or_else(|| {
                        format!(
                            "invalid PersistentKeepalive {value:?}: expected seconds \
                             0-65535 or `off`"
                        )
                    })?
                })
            }
            _ => return Err(unknown_key(key, lkey, "Peer")),
        }
        Ok(())
    }

    /// Reads a secret key from a file, as `PrivateKeyFile` and
    /// `PresharedKeyFile` name it.
    fn key_file(&self, value: &str, what: &str) -> Result<KeyFromConfig, String> {
        if value.is_empty() {
            return Err(format!("{what} needs a path"));
        }
        let given = Path::new(value);
        let joined = if given.is_absolute() {
            given.to_path_buf()
        } else {
            self.dir.join(given)
        };
        // Absolute, so that the recorded path still names the same file
        // after the daemon changes directory.
        let path = std::path::absolute(&joined).unwrap_or(joined);
        let read_err = |e: io::Error| format!("cannot read {what} {}: {e}", path.display());

        let mut file = File::open(&path).map_err(read_err)?;
        // A fixed buffer rather than a growing Vec: reallocation would
        // leave copies of the key in freed memory that nobody zeroizes.
        let mut buf = Zeroizing::new([0u8; KEY_FILE_MAX]);
        let mut len = 0;
        loop {
            if len == buf.len() {
                return Err(format!(
                    "{what} {} is too large to hold a key",
                    path.display()
                ));
            }
            match file.read(&mut buf[len..]) {
                Ok(0) => break,
                Ok(k) => len += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_err(e)),
            }
        }
        let bad = || {
            format!(
                "invalid key in {what} {}: expected 32 bytes of base64",
                path.display()
            )
        };
        let text = std::str::from_utf8(&buf[..len]).map_err(|_| bad())?;
        let key = SecretKey::from_base64(text.trim()).map_err(|_| bad())?;
        Ok(KeyFromConfig {
            key,
            file: Some(path),
        })
    }
}

fn unknown_key(key: &str, lkey: &str, section: &str) -> String {
    let other = if section == "Interface" {
        (PEER_KEYS, "Peer")
    } else {
        (INTERFACE_KEYS, "Interface")
    };
    if other.0.contains(&lkey) {
        format!(
            "`{key}` belongs in a [{}] section, not [{section}]",
            other.1
        )
    } else {
        format!("unknown key `{key}` in [{section}] section")
    }
}

/// Never echoes the value: a mistyped private key is still mostly a
/// private key, and error messages end up in logs.
fn parse_secret(value: &str, what: &str) -> Result<SecretKey, String> {
    SecretKey::from_base64(value).map_err(|e| format!("invalid key in {what}: {e}"))
}

/// Digits only: `str::parse` would also take a leading `+`, which no
/// other WireGuard tool accepts.
fn parse_u16(value: &str) -> Option<u16> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_fwmark(value: &str) -> Option<u32> {
    if value.eq_ignore_ascii_case("off") {
        return Some(0);
    }
    if let Some(hex) = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))
    {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return u32::from_str_radix(hex, 16).ok();
    }
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

fn parse_allowed_ip(entry: &str) -> Result<AllowedIp, String> {
    let bad = |why: &str| format!("invalid AllowedIPs entry {entry:?}: {why}");
    if entry.is_empty() {
        return Err("empty entry in AllowedIPs list".into());
    }
    let (addr_text, cidr_text) = match entry.split_once('/') {
        Some((a, c)) => (a.trim(), Some(c.trim())),
        None => (entry, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| bad("not an IPv4 or IPv6 address"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let cidr = match cidr_text {
        None => max,
        Some(c) => {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("prefix length is not a number"));
            }
            match c.parse::<u8>() {
                Ok(v) if v <= max => v,
                _ => {
                    let family = if addr.is_ipv4() { "IPv4" } else { "IPv6" };
                    return Err(bad(&format!("prefix length must be 0-{max} for {family}")));
                }
            }
        }
    };
    Ok(AllowedIp { addr, cidr })
}

fn parse_endpoint(value: &str, resolve: Resolver<'_>) -> Result<Endpoint, String> {
    let bad = |why: &str| format!("invalid Endpoint {value:?}: {why}");
    let (host, port_text, bracketed) = if let Some(rest) = value.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing `]`"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| bad("expected `:port` after `]`"))?;
        (host, port, true)
    } else {
        let (host, port) = value
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        if host.contains(':') {
            return Err(bad(
                "an IPv6 address must be in brackets, as in [2001:db8::1]:51820",
            ));
        }
        (host, port, false)
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let port = match parse_u16(port_text) {
        Some(p) if p != 0 => p,
        _ => return Err(bad("port must be a number 1-65535")),
    };

    let addr = if let Ok(ip) = host.parse::<IpAddr>() {
        SocketAddr::new(ip, port)
    } else {
        // Only what can appear in a hostname, or in a bracketed address
        // with a scope (`fe80::1%eth0`), is handed to the resolver: text
        // with spaces or control characters is a typo, not a name to look up.
        let allowed = |c: char| {
            c.is_ascii_alphanumeric()
                || matches!(c, '-' | '.' | '_')
                || (bracketed && matches!(c, ':' | '%'))
        };
        if !host.chars().all(allowed) {
            return Err(bad("not an IP address or hostname"));
        }
        resolve(host, port).map_err(|e| format!("cannot resolve Endpoint host {host:?}: {e}"))?
    };
    Ok(Endpoint {
        addr,
        spec: value.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

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

    fn ip(addr: &str, cidr: u8) -> AllowedIp {
        AllowedIp {
            addr: addr.parse().unwrap(),
            cidr,
        }
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
                ip("10.0.0.2", 32),
                // host bits are kept as written
                ip("10.0.1.5", 24),
                ip("192.168.5.7", 32),
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
                ip("fd00::2", 128),
                ip("::", 0),
                ip("2001:db8::1", 128),
                ip("0.0.0.0", 0),
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
        assert_eq!(p.allowed_ips, vec![ip("10.0.0.0", 8)]);
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
            vec![ip("10.0.0.1", 32), ip("10.0.0.2", 32)]
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
}
