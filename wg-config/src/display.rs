//! Addresses as wg(8) prints them, for every text wgctl writes about an
//! interface (`show`, `showconf`, JSON). wg(8) goes through
//! `inet_ntop(3)`, which differs from Rust's `Display` in one case; the
//! userspace API's own text is Rust's (see `uapi`), so these are for
//! people and files, not for the socket.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use proto::ipc::AllowedIp;

/// An address as `inet_ntop(3)` prints it. Rust's `Display` agrees except
/// for IPv4-compatible IPv6 addresses (`::a.b.c.d`), which glibc prints
/// with a dotted quad.
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

/// An endpoint as `wg(8)` prints it: `a.b.c.d:port`, `[v6]:port`, and a
/// zone as its number (`[fe80::1%2]:port`).
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::aip;

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
        assert_eq!(fmt_allowed_ip(&aip("::1.2.3.4", 128)), "::1.2.3.4/128");
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
}
