//! A peer's `Endpoint = host:port`: split, checked, and (for a host name)
//! resolved once with the system resolver, the first address winning, as
//! wg(8) does. The spelling is kept in [`Endpoint::spec`] so that
//! `showconf` can write a host name back. wgd's only DNS lookup.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use super::parser::parse_u16;
use super::Endpoint;

/// Turns a hostname and port into one address. A parameter so that tests
/// can feed arbitrary text to the parser without touching DNS.
pub(super) type Resolver<'a> = &'a dyn Fn(&str, u16) -> io::Result<SocketAddr>;

pub(super) fn resolve_system(host: &str, port: u16) -> io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no addresses found"))
}

pub(super) fn parse_endpoint(value: &str, resolve: Resolver<'_>) -> Result<Endpoint, String> {
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
