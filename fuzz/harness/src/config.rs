//! The configuration file parser (`wg_config::config`), as wgd's parent
//! and wgctl read a file.
//!
//! Host names in `Endpoint =` go to a made-up resolver, never to DNS.
//! `PrivateKeyFile`/`PresharedKeyFile` names are resolved against a
//! directory of the harness's own with a few key files in it ([`key_dir`]);
//! an input that names a key file by a path with a `/` in it is skipped, so
//! that the fuzzer cannot make the parser open a device or a FIFO of the
//! host (`/dev/stdin` would block the run).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::PathBuf;
use std::sync::OnceLock;

use wg_config::config::{parse_str_with, setconf_ops};
use wg_config::uapi::{format_set, read_request, Request};

use crate::uapi::ifindex;

/// The key files the fuzzer may name (`key`: a valid key; `empty`;
/// `garbage`; `long`: more than a key file may hold).
pub const KEY_FILES: [(&str, &str); 4] = [
    ("key", "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n"),
    ("empty", ""),
    ("garbage", "not a key\n"),
    ("long", include_str!("lib.rs")),
];

/// The directory the configuration file is taken to be in, holding
/// [`KEY_FILES`]; made once per process.
pub fn key_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join("wgd-fuzz-config");
        std::fs::create_dir_all(&dir).expect("create the key file directory");
        for (name, text) in KEY_FILES {
            std::fs::write(dir.join(name), text).expect("write a key file");
        }
        dir
    })
}

/// Resolves any host name without DNS: a name of even length to an IPv4
/// documentation address, one with a zone (`fe80::1%eth0`) to a
/// link-local IPv6 address, anything else fails.
fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    if host.contains('%') {
        let ip = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
        return Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 2)));
    }
    if host.len().is_multiple_of(2) {
        let last = (host.len() % 256) as u8;
        return Ok(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)),
            port,
        ));
    }
    Err(io::Error::new(io::ErrorKind::NotFound, "no such host"))
}

/// Whether a line may name a key file outside [`key_dir`]. Keys are
/// matched as the parser matches them (lowercased), with a margin: any
/// line mentioning a key file and a `/`.
fn names_outside_file(text: &str) -> bool {
    text.lines()
        .any(|l| l.to_lowercase().contains("keyfile") && l.contains('/'))
}

/// Parses the input as a configuration file. An error must name a line of
/// the file (or none); a file that parses must give a `set` request
/// (what `wgctl setconf` sends, and what wgd applies at start-up) that
/// wgd's request parser accepts. Valid: the file parsed.
pub fn config(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    if names_outside_file(text) {
        return false;
    }
    let path = key_dir().join("wg0.conf");
    match parse_str_with(text, &path, &resolve) {
        Ok(cfg) => {
            let request = format_set(&setconf_ops(cfg, true));
            let back = read_request(&mut request.as_bytes(), &ifindex);
            assert!(
                matches!(back, Ok(Some(Request::Set(_)))),
                "the request for a parsed file does not parse: {back:?}"
            );
            true
        }
        Err(e) => {
            assert!(e.line <= text.lines().count() + 1, "{e}");
            assert_eq!(e.file, path);
            false
        }
    }
}
