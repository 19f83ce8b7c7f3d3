//! The lines of a configuration file: comments, `[Interface]` and
//! `[Peer]` sections, `Key = Value` pairs, and the value of each key.
//! Private to [`super`]; the one entry point is [`parse_with`], which
//! takes the resolver as a parameter so tests never touch DNS.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::Path;

use proto::ipc::AllowedIp;
use proto::keys::{PublicKey, SecretKey};

use super::endpoint::{parse_endpoint, Resolver};
use super::{error, Config, ConfigError, Endpoint, InterfaceConfig, KeyFromConfig, PeerConfig};
use crate::cidr::{self, Syntax};
use crate::keyfile::{read_key_text, KeyTextError};

pub(super) fn parse_with(
    text: &str,
    path: &Path,
    resolve: Resolver<'_>,
) -> Result<Config, ConfigError> {
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

        let file = File::open(&path).map_err(read_err)?;
        let bad = || {
            format!(
                "invalid key in {what} {}: expected 32 bytes of base64",
                path.display()
            )
        };
        let text = read_key_text(file).map_err(|e| match e {
            KeyTextError::Io(e) => read_err(e),
            KeyTextError::TooLarge => {
                format!("{what} {} is too large to hold a key", path.display())
            }
            KeyTextError::NotText => bad(),
        })?;
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
pub(super) fn parse_u16(value: &str) -> Option<u16> {
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
    if entry.is_empty() {
        return Err("empty entry in AllowedIPs list".into());
    }
    cidr::parse(entry, Syntax::Wg).map_err(|e| format!("invalid AllowedIPs entry {entry:?}: {e}"))
}
