//! The cross-platform userspace API: the text protocol `wg(8)` speaks on
//! `/var/run/wireguard/IFNAME.sock`, both ends of it.
//!
//! Pure: requests and replies are read from a [`BufRead`](std::io::BufRead)
//! and written as strings; sockets are the callers'.
//!
//! - The server (wgd's parent): [`read_request`] once per request on each
//!   connection; a [`Request::Set`] is applied by fanning its [`SetOp`]s out
//!   to the roles; a [`Request::Get`] is answered with [`format_get`] (and
//!   [`Request::WgdGet`] with [`format_wgd_get`]) over a [`Device`] it
//!   gathered; [`Request::WgdReload`] with [`format_errno`], or with
//!   [`format_wgd_error`] when the reload was refused; everything else
//!   with [`format_errno`]. The IPv6 zone of an
//!   endpoint is looked up by the caller (a name means an interface of the
//!   server's network namespace).
//! - The client (wgctl): [`format_set`] writes the request for a list of
//!   [`SetOp`]s; [`read_reply`] and [`ReplyParser`] turn a `get` or
//!   `wgd_get` reply (from wgd or from any other implementation) into a
//!   [`Device`].
//!
//! One set of types for both ends, so the unit tests check each text
//! against the other end's parser.
//!
//! Files, one concern each: `request` (the request types), `lines`
//! (bounded line reading), `parse_request` (the server's parser),
//! `format_request` (the client's writer), `reply` (the reply types and
//! the server's writer), `parse_reply` (the client's reader).
//!
//! # The protocol, as wireguard-go implements it
//!
//! A request is an operation line, `get=1` or `set=1`, then (for `set`)
//! `key=value` lines, then an empty line. The reply to `get` is
//! `key=value` lines followed by `errno=0` and an empty line; the reply to
//! `set` is just `errno=N` and an empty line. A client may send several
//! requests on one connection.
//!
//! Details followed here because wireguard-go (`device/uapi.go`) does them
//! so:
//! - the operation line must be exactly `get=1` or `set=1` (no `\r`, no
//!   spaces), and `get=1` must be followed directly by the empty line;
//! - inside `set`, one trailing `\r` is dropped from each line (Go's line
//!   scanner does that), nothing else is trimmed: `listen_port= 1` is an
//!   error, `listen_port =1` an unknown key;
//! - a line is split at its first `=`; a line with none is `EPROTO`;
//! - every other malformed value, unknown key, a boolean other than the
//!   exact word `true` (so `false` is an error, not a no-op),
//!   `protocol_version` other than `1`, and a peer key before any
//!   `public_key=` (it is then an unknown *device* key) are `EINVAL`;
//! - numbers are plain decimal digits (leading zeros allowed, no sign);
//! - keys are 64 hex digits (either case); an all-zero private key removes
//!   the key, an all-zero preshared key means "no preshared key";
//! - an endpoint is a numeric `a.b.c.d:port` or `[v6]:port` (`wg(8)`
//!   resolves host names before sending);
//! - an allowed IP is `addr/cidr` with the cidr in decimal without leading
//!   zeros; a leading `-` asks to remove the prefix instead of adding it;
//! - end of input at a line boundary also ends a `set` (wireguard-go
//!   accepts a request whose empty line never came).
//!
//! # Differences from wireguard-go
//!
//! - **Secrets are write-only** (see DESIGN.md): the `get` reply never
//!   contains `private_key` or `preshared_key`. wireguard-go prints both
//!   (the preshared key as zeros when there is none). So stock `wg show`
//!   prints no interface public key and no `preshared key: (hidden)` line,
//!   and `wg showconf` cannot write the keys back; `wgctl show` is the
//!   complete view.
//! - A `set` request is parsed completely before anything is applied, so a
//!   malformed request changes nothing; wireguard-go applies each line as
//!   it reads it and leaves the lines before an error applied.
//! - Input is bounded: a line longer than [`MAX_LINE`] bytes is `EINVAL`
//!   (wireguard-go's scanner allows 64 KiB and answers `EIO`), a request
//!   longer than [`MAX_REQUEST`] bytes is `EMSGSIZE` (wireguard-go has no
//!   limit), and a line cut off by end of input is `EPROTO` (wireguard-go
//!   would apply the fragment).
//! - An endpoint's IPv6 zone may be a name (`[fe80::1%eth0]:51820`, as
//!   wg(8) sends it) or a number; it is printed as a number, where
//!   wireguard-go prints the interface name.
//!
//! After an error the connection is out of step with the client (the rest
//! of the request is unread): the caller replies with the error's errno
//! and closes the connection, which is what wireguard-go effectively does.
//!
//! # Errno convention on the wire
//!
//! wireguard-go writes negative errno values (`errno=-22` for `EINVAL`),
//! and `wg(8)` negates what it reads to set its own `errno`, so a positive
//! value would print as "Unknown error -22". [`UapiError::errno`] and the
//! argument of [`format_errno`] are ordinary positive `libc` constants;
//! [`format_errno`] writes them negated.

mod format_request;
mod lines;
mod parse_reply;
mod parse_request;
mod reply;
mod request;

use thiserror::Error;

pub use format_request::format_set;
pub use parse_reply::{read_reply, ReplyError, ReplyParser, MAX_REPLY};
pub use parse_request::read_request;
pub use reply::{
    format_allowed_ip, format_get, format_get_device, format_get_peer, format_get_peer_head,
    format_wgd_extra, format_wgd_get, Device, Peer, Psk, WgdStats,
};
pub use request::{AllowedIpChange, PeerOp, Request, SetOp};

/// The longest line accepted, in bytes, not counting its `\n`, in a
/// request and in a reply. The longest legitimate line (`preshared_key=`
/// and 64 hex digits, or an IPv6 endpoint with a zone) is under 100 bytes.
pub const MAX_LINE: usize = 4096;

/// The most bytes one request may take, its operation line and its empty
/// line included: room for 100,000 peers with a million allowed IPs
/// between them (about 30 MB as `wg setconf` writes it) twice over. The
/// request is parsed whole before any of it is applied (so a malformed
/// one changes nothing); what it costs in memory is its parsed form, not
/// its text, and that is bounded by this.
pub const MAX_REQUEST: usize = 64 << 20;

/// Why a request could not be read. `errno` is a positive `libc` constant
/// (see the module documentation for how it goes on the wire); `message`
/// is for the log and never contains a key's value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message} (errno {errno})")]
pub struct UapiError {
    pub errno: i32,
    pub message: String,
}

impl UapiError {
    fn new(errno: i32, message: impl Into<String>) -> Self {
        UapiError {
            errno,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(libc::EINVAL, message)
    }
    fn protocol(message: impl Into<String>) -> Self {
        Self::new(libc::EPROTO, message)
    }
    fn io(e: &std::io::Error) -> Self {
        Self::new(libc::EIO, format!("reading the request: {e}"))
    }
    /// The reply to send for this error: `errno=-N` and an empty line.
    pub fn reply(&self) -> String {
        format_errno(self.errno)
    }
}

/// The status line that ends every reply: `errno=0` for success, else
/// `errno=-N` for the positive errno `N` (a value given already negative is
/// written as is), then the empty line.
pub fn format_errno(errno: i32) -> String {
    let wire = if errno > 0 { -errno } else { errno };
    format!("errno={wire}\n\n")
}

/// The reply to a refused wgd extension request (`wgd_reload=1`): a
/// `wgd_error=` line carrying the reason for the operator (e.g. the
/// configuration file's `FILE:LINE: message`; line breaks become spaces,
/// so it stays one line, and it is cut to fit [`MAX_LINE`]), then
/// [`format_errno`]. Clients that do not know the line see an ordinary
/// `key=value` line before `errno=`.
pub fn format_wgd_error(message: &str, errno: i32) -> String {
    let mut line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let room = MAX_LINE - "wgd_error=".len();
    if line.len() > room {
        let mut cut = room;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    format!("wgd_error={line}\n{}", format_errno(errno))
}

/// Appends one line to a request or reply being built.
fn put(s: &mut String, args: std::fmt::Arguments<'_>) {
    use std::fmt::Write as _;
    // Writing to a String cannot fail.
    let _ = s.write_fmt(args);
    s.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_lines() {
        assert_eq!(format_errno(0), "errno=0\n\n");
        // wireguard-go writes -EINVAL etc., which wg(8) negates back.
        assert_eq!(format_errno(libc::EINVAL), "errno=-22\n\n");
        assert_eq!(format_errno(-libc::EIO), "errno=-5\n\n");
        assert_eq!(format_errno(i32::MIN), format!("errno={}\n\n", i32::MIN));
        assert_eq!(UapiError::invalid("x").reply(), "errno=-22\n\n");
    }

    #[test]
    fn wgd_error_is_one_bounded_line_before_errno() {
        assert_eq!(
            format_wgd_error("/etc/wireguard/wg0.conf:3: bad\nthing", libc::EINVAL),
            "wgd_error=/etc/wireguard/wg0.conf:3: bad thing\nerrno=-22\n\n"
        );
        let long = format_wgd_error(&"é".repeat(MAX_LINE), libc::EINVAL);
        let first = long.lines().next().unwrap();
        assert!(first.len() <= MAX_LINE, "{}", first.len());
        // And the client's reader takes it as a line and the errno.
        let mut seen = Vec::new();
        let mut r = std::io::Cursor::new(long.into_bytes());
        let errno = read_reply(&mut r, |k, _| {
            seen.push(k.to_string());
            Ok(())
        })
        .unwrap();
        assert_eq!((errno, seen), (Some(22), vec!["wgd_error".to_string()]));
    }

    #[test]
    fn wgd_reload_request() {
        let mut r = std::io::Cursor::new(b"wgd_reload=1\n\nget=1\n\n".to_vec());
        assert_eq!(
            read_request(&mut r, &|_| None),
            Ok(Some(Request::WgdReload))
        );
        assert_eq!(read_request(&mut r, &|_| None), Ok(Some(Request::Get)));
        let mut r = std::io::Cursor::new(b"wgd_reload=1\nx".to_vec());
        assert_eq!(
            read_request(&mut r, &|_| None).map_err(|e| e.errno),
            Err(libc::EINVAL)
        );
    }
}
