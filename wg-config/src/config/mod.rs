//! The configuration file: the format of `wg setconf` (wg(8),
//! "CONFIGURATION FILE FORMAT") plus wgd's extensions `PrivateKeyFile`,
//! `PresharedKeyFile` and `AutoAddress`; read ([`parse_file`]) and
//! written ([`showconf`]).
//!
//! Read by wgd's parent at start-up (`wgd -c FILE IFNAME`), before any
//! role is spawned, and again on a reload (SIGHUP, `wgctl reload`), and by
//! wgctl for `setconf`, `addconf` and `syncconf`;
//! written by `wgctl showconf`. One parser for both programs, so a file
//! wgd starts with is a file wgctl can apply, and what `showconf` writes
//! reads back.
//!
//! The result holds the interface's private key and the PSKs: the parent
//! passes them on to the crypto role and drops its copy. For that reason
//! the structs here are not `Clone`, their `Debug` never prints a secret,
//! and the raw bytes of the file and of key files are zeroized once
//! parsed.
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
//! The modules, one concern each: `parser` (the INI-style lines, sections
//! and values), `endpoint` (`host:port` and the one DNS lookup), `print`
//! (`showconf`); key files are read with [`crate::keyfile`] and
//! `AllowedIPs` with [`crate::cidr`].

mod endpoint;
mod ops;
mod parser;
mod print;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use proto::ipc::AllowedIp;
use proto::keys::{PublicKey, SecretKey};
use zeroize::Zeroizing;

pub use ops::{setconf_ops, syncconf_ops};
pub use print::showconf;

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

impl PeerConfig {
    /// The prefixes this peer is given: its `AllowedIPs`, then, when the
    /// file says `AutoAddress = true`, its key-derived `/128`. wgd at
    /// start-up and wgctl applying a file both ask here, so the two agree
    /// on what `AutoAddress` means.
    pub fn allowed_ips_with_auto(&self, auto_address: bool) -> Vec<AllowedIp> {
        let mut ips = self.allowed_ips.clone();
        if auto_address {
            ips.push(AllowedIp {
                addr: IpAddr::V6(self.public_key.derived_address()),
                cidr: 128,
            });
        }
        ips
    }
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

/// Turns an `Endpoint` host name and port into one address (see
/// [`parse_file_with`]).
pub type Resolver<'a> = &'a dyn Fn(&str, u16) -> std::io::Result<SocketAddr>;

/// Reads and parses the configuration file at `path`, host names of
/// endpoints resolved with the system resolver.
pub fn parse_file(path: &Path) -> Result<Config, ConfigError> {
    parse_file_with(path, &endpoint::resolve_system)
}

/// [`parse_file`] with the caller's resolver for endpoint host names. wgd
/// uses it: at start-up to remember what each name resolved to, and on a
/// reload, when its seccomp filter no longer lets it reach DNS, to reuse
/// those answers (and refuse a name it has not seen).
pub fn parse_file_with(path: &Path, resolve: Resolver<'_>) -> Result<Config, ConfigError> {
    let bytes = read_config(path)
        .map_err(|e| error(path, 0, format!("cannot read configuration file: {e}")))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        error(path, line, "not valid UTF-8")
    })?;
    parser::parse_with(text, path, resolve)
}

/// The most a configuration file may hold: far more than 100,000 peers
/// with a million allowed IPs take (about 30 MB), a bound for a mistaken
/// path such as `/dev/zero`.
pub const MAX_CONFIG: usize = 256 << 20;

/// The file's bytes, in a buffer sized once from its length and wiped when
/// dropped: the text holds the keys, and `std::fs::read` may grow its
/// buffer by reallocation, leaving copies (see [`crate::wipe`]).
fn read_config(path: &Path) -> std::io::Result<Zeroizing<Vec<u8>>> {
    let file = std::fs::File::open(path)?;
    let hint = file.metadata().map_or(0, |m| m.len());
    crate::wipe::read_all_wiping(
        file,
        usize::try_from(hint).unwrap_or(MAX_CONFIG),
        MAX_CONFIG,
    )
}

/// Parses configuration text. `path` names the file in error messages and
/// is the base for relative `PrivateKeyFile`/`PresharedKeyFile` names.
/// Endpoint host names are resolved with the system resolver.
pub fn parse_str(text: &str, path: &Path) -> Result<Config, ConfigError> {
    parser::parse_with(text, path, &endpoint::resolve_system)
}

/// [`parse_str`] with the caller's resolver for `Endpoint` host names in
/// place of the system's. For the fuzzer (`fuzz/`), which feeds the parser
/// arbitrary text and must not make a DNS query for every host name it
/// invents; the unit tests reach the same entry point from inside the
/// crate.
pub fn parse_str_with(
    text: &str,
    path: &Path,
    resolve: &dyn Fn(&str, u16) -> std::io::Result<SocketAddr>,
) -> Result<Config, ConfigError> {
    parser::parse_with(text, path, resolve)
}

fn error(file: &Path, line: usize, message: impl Into<String>) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line,
        message: message.into(),
    }
}
