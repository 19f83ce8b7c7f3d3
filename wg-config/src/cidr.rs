//! The one parser of allowed-IP prefixes (`10.0.0.0/8`, `fd00::1`), and
//! the masking every daemon applies before storing one.
//!
//! Four places read a prefix: a configuration file's `AllowedIPs`,
//! `wgctl set … allowed-ips`, a `set` request's `allowed_ip=` and a `get`
//! reply's `allowed_ip=`. They speak two dialects, and [`Syntax`] names
//! the one a caller reads; everything else (which list separator, whether
//! a `-` in front means "remove") belongs to the caller's grammar, not to
//! the prefix.
//!
//! Range checks and masking are `ipnet`'s. Its `FromStr` is not used: it
//! reads prefix lengths of at most two digits for IPv4 (so `/008`, which
//! wg(8) takes, fails) and has an address parser of its own, where the
//! standard library's is the one the rest of wgd agrees with.

use std::net::IpAddr;

use ipnet::IpNet;
use proto::ipc::AllowedIp;
use thiserror::Error;

/// Which dialect a prefix is written in. The two really differ: wg(8)
/// reads a prefix with `inet_pton` and `strtoul` (`config.c`,
/// `parse_allowedips`), wireguard-go reads `allowed_ip=` with Go's
/// `netip.ParsePrefix` (`device/uapi.go`). Checked against the Debian
/// packages (wireguard-tools 1.0.20210914, wireguard-go 0.0.20220316):
/// `wg set … allowed-ips 10.0.0.1` gives `10.0.0.1/32`, `/0008` gives
/// `/8`, `"10.0.0.2 /32"` is taken; on the socket `allowed_ip=10.0.0.0` and
/// `allowed_ip=10.0.0.0/ 8` are `EINVAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// wg(8)'s, for configuration files and `wgctl set`: `ADDR` alone is
    /// the host prefix (`/32` or `/128`); the length is decimal digits,
    /// leading zeros allowed (`strtoul`); white space around the address
    /// and around the length is ignored (wg(8) strips all white space
    /// from a configuration line, and from `set`'s arguments).
    Wg,
    /// The userspace API's, for `allowed_ip=` in requests and replies:
    /// `ADDR/LEN` with the length required, in decimal with no sign, no
    /// leading zero and no white space anywhere, as current Go's
    /// `netip.ParsePrefix` reads it. (Debian's wireguard-go, built with an
    /// older Go, still takes `/08` and `/+8`; wgd has refused both from
    /// the start, and no client sends them.)
    Uapi,
}

/// Why a prefix was refused; the caller words the message (each context
/// names the value its own way, and some must never quote it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CidrError {
    #[error("no '/'")]
    MissingLength,
    #[error("not an IPv4 or IPv6 address")]
    Address,
    #[error("prefix length is not a number")]
    Length,
    #[error("prefix length must be 0-{max} for {family}")]
    Range { max: u8, family: &'static str },
}

/// Parses one prefix in the given dialect. Host bits are kept as written:
/// masking ([`masked`]) is the table's business, and keeping them lets a
/// configuration round-trip through `showconf`.
pub fn parse(text: &str, syntax: Syntax) -> Result<AllowedIp, CidrError> {
    let (addr_text, len_text) = match (text.split_once('/'), syntax) {
        (Some((a, l)), Syntax::Wg) => (a.trim(), Some(l.trim())),
        (Some((a, l)), Syntax::Uapi) => (a, Some(l)),
        (None, Syntax::Wg) => (text.trim(), None),
        (None, Syntax::Uapi) => return Err(CidrError::MissingLength),
    };
    // The standard library's parser takes no zone, no leading zeros in an
    // IPv4 octet and no white space, as inet_pton and netip do.
    let addr: IpAddr = addr_text.parse().map_err(|_| CidrError::Address)?;
    let max = max_len(addr);
    let len = match len_text {
        None => max,
        Some(l) => {
            let digits = !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit());
            let leading_zero = l.len() > 1 && l.starts_with('0');
            if !digits || (syntax == Syntax::Uapi && leading_zero) {
                return Err(CidrError::Length);
            }
            // Too many digits for a u8 is out of range, not "not a number".
            l.parse::<u8>().unwrap_or(u8::MAX)
        }
    };
    let net = IpNet::new(addr, len).map_err(|_| CidrError::Range {
        max,
        family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
    })?;
    Ok(AllowedIp {
        addr: net.addr(),
        cidr: net.prefix_len(),
    })
}

fn max_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// The prefix with its host bits cleared (`10.1.2.3/8` becomes
/// `10.0.0.0/8`), which is how wgd's and wireguard-go's tables store a
/// prefix and how `get` reports it. Never panics: a length beyond the
/// family's (which no parser here produces, but a hand-built value may
/// hold) clears nothing and is kept as it is.
pub fn masked(ip: AllowedIp) -> AllowedIp {
    let len = ip.cidr.min(max_len(ip.addr));
    let addr = IpNet::new(ip.addr, len).map_or(ip.addr, |n| n.trunc().addr());
    AllowedIp {
        addr,
        cidr: ip.cidr,
    }
}

/// `AllowedIp` from an address's text and a length, for tests only: it
/// panics on a bad address. The one helper of every crate's tests.
#[cfg(any(test, feature = "test-support"))]
pub fn aip(addr: &str, cidr: u8) -> AllowedIp {
    AllowedIp {
        addr: addr
            .parse()
            .unwrap_or_else(|_| panic!("aip: {addr:?} is not an address")),
        cidr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WG: Syntax = Syntax::Wg;
    const UAPI: Syntax = Syntax::Uapi;

    #[test]
    fn both_dialects_agree_on_the_plain_form() {
        for (text, ip) in [
            ("10.1.2.3/32", aip("10.1.2.3", 32)),
            ("10.0.0.0/0", aip("10.0.0.0", 0)),
            ("::/0", aip("::", 0)),
            ("2001:db8::1/128", aip("2001:db8::1", 128)),
            // Host bits as written; masking is separate.
            ("10.1.2.3/8", aip("10.1.2.3", 8)),
            ("2001:db8:ffff::/33", aip("2001:db8:ffff::", 33)),
            ("::ffff:10.0.0.0/104", aip("::ffff:10.0.0.0", 104)),
        ] {
            assert_eq!(parse(text, WG), Ok(ip), "{text}");
            assert_eq!(parse(text, UAPI), Ok(ip), "{text}");
        }
    }

    #[test]
    fn where_the_dialects_differ() {
        // A bare address is a host prefix in wg(8), an error on the wire.
        assert_eq!(parse("192.168.5.7", WG), Ok(aip("192.168.5.7", 32)));
        assert_eq!(parse("2001:db8::1", WG), Ok(aip("2001:db8::1", 128)));
        assert_eq!(parse("10.0.0.0", UAPI), Err(CidrError::MissingLength));
        // Leading zeros: strtoul takes them, netip does not.
        assert_eq!(parse("10.0.0.0/08", WG), Ok(aip("10.0.0.0", 8)));
        assert_eq!(parse("10.0.0.0/0008", WG), Ok(aip("10.0.0.0", 8)));
        assert_eq!(parse("10.0.0.0/00", WG), Ok(aip("10.0.0.0", 0)));
        assert_eq!(parse("10.0.0.0/08", UAPI), Err(CidrError::Length));
        assert_eq!(parse("10.0.0.0/00", UAPI), Err(CidrError::Length));
        // White space around the parts: a configuration line's, not the wire's.
        assert_eq!(parse(" 10.0.0.2 / 32 ", WG), Ok(aip("10.0.0.2", 32)));
        assert_eq!(parse("\t2001:db8::1\t", WG), Ok(aip("2001:db8::1", 128)));
        for text in ["10.0.0.0/ 8", "10.0.0.0/8 ", " 10.0.0.0/8", "10.0.0.0 /8"] {
            assert!(parse(text, UAPI).is_err(), "{text:?}");
        }
    }

    #[test]
    fn refused_in_both() {
        for (text, err) in [
            (
                "10.0.0.0/33",
                CidrError::Range {
                    max: 32,
                    family: "IPv4",
                },
            ),
            (
                "10.0.0.0/300",
                CidrError::Range {
                    max: 32,
                    family: "IPv4",
                },
            ),
            (
                "10.0.0.0/1000",
                CidrError::Range {
                    max: 32,
                    family: "IPv4",
                },
            ),
            (
                "::/129",
                CidrError::Range {
                    max: 128,
                    family: "IPv6",
                },
            ),
            ("10.0.0/24", CidrError::Address),
            ("10.0.02.1/32", CidrError::Address),
            ("host.example/32", CidrError::Address),
            ("example.com/32", CidrError::Address),
            ("fe80::%eth0/64", CidrError::Address),
            ("fe80::%2/64", CidrError::Address),
            ("-10.0.0.0/8", CidrError::Address),
            ("+10.0.0.0/8", CidrError::Address),
            ("/8", CidrError::Address),
            ("10.0.0.1/", CidrError::Length),
            ("10.0.0.1/x", CidrError::Length),
            ("10.0.0.1/-1", CidrError::Length),
            ("10.0.0.0/+8", CidrError::Length),
            ("10.0.0.1/24/8", CidrError::Length),
            ("10.0.0.0/8/8", CidrError::Length),
        ] {
            assert_eq!(parse(text, WG), Err(err), "wg {text:?}");
            assert_eq!(parse(text, UAPI), Err(err), "uapi {text:?}");
        }
        assert_eq!(parse("", WG), Err(CidrError::Address));
        assert_eq!(parse("", UAPI), Err(CidrError::MissingLength));
        assert_eq!(
            parse("10.0.0.0/99999999999999999999", WG),
            Err(CidrError::Range {
                max: 32,
                family: "IPv4"
            })
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            CidrError::Range {
                max: 32,
                family: "IPv4"
            }
            .to_string(),
            "prefix length must be 0-32 for IPv4"
        );
        assert_eq!(
            CidrError::Length.to_string(),
            "prefix length is not a number"
        );
        assert_eq!(
            CidrError::Address.to_string(),
            "not an IPv4 or IPv6 address"
        );
    }

    #[test]
    fn masking() {
        assert_eq!(masked(aip("10.1.2.3", 8)), aip("10.0.0.0", 8));
        assert_eq!(masked(aip("10.1.2.3", 0)), aip("0.0.0.0", 0));
        assert_eq!(masked(aip("10.1.2.3", 32)), aip("10.1.2.3", 32));
        assert_eq!(masked(aip("10.255.1.1", 9)), aip("10.128.0.0", 9));
        assert_eq!(masked(aip("2001:db8::1", 32)), aip("2001:db8::", 32));
        assert_eq!(masked(aip("2001:db8::1", 128)), aip("2001:db8::1", 128));
        assert_eq!(masked(aip("2001:db8::1", 0)), aip("::", 0));
        assert_eq!(
            masked(aip("2001:db8:ffff::", 33)),
            aip("2001:db8:8000::", 33)
        );
    }

    #[test]
    fn masking_never_panics() {
        for cidr in [0, 1, 31, 32, 33, 127, 128, 129, 255] {
            let v4 = masked(aip("255.255.255.255", cidr));
            let v6 = masked(aip("ffff::ffff", cidr));
            assert_eq!((v4.cidr, v6.cidr), (cidr, cidr));
        }
        // Beyond the family's length nothing is cleared.
        assert_eq!(masked(aip("10.1.2.3", 33)), aip("10.1.2.3", 33));
    }
}
