//! The client side of the cross-platform userspace API, as wgd speaks it
//! on `/var/run/wireguard/IFNAME.sock`: the sockets. The text on them
//! (requests, replies, their types) is `wg_config::uapi`'s, the same code
//! the server uses.
//!
//! - [`Uapi::get`] sends wgd's extension `wgd_get=1` first: its reply is a
//!   `get` reply preceded by what only wgd knows (the interface public key,
//!   the private key's file, drop and IPC counters). A daemon that is not
//!   wgd answers it with an error (or hangs up), and then the request is
//!   repeated as a plain `get=1` on a new connection.
//! - [`Uapi::set`] sends one `set=1` request written by `format_set`.
//! - [`Uapi::reload`] sends wgd's extension `wgd_reload=1` and returns
//!   the daemon's reason (its `wgd_error=` line) when it refuses.
//! - [`Uapi::list`] names the interfaces that have a live socket.
//!
//! Secrets: a request that sets a key carries it in hex, so the request
//! text is zeroized after it is sent.

use std::io::{self, BufReader, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use wg_config::uapi::{format_set, read_reply, Device, ReplyError, ReplyParser, SetOp};

use crate::error::{io_text, strerror, Error, Result};

/// Where userspace WireGuard implementations put their sockets.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

/// How long to wait for a daemon before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// `IFNAMSIZ - 1`: the longest interface name Linux allows.
const MAX_IFNAME: usize = 15;

/// A client for the sockets in one directory ([`SOCKET_DIR`] except in
/// tests).
#[derive(Debug, Clone)]
pub struct Uapi {
    dir: PathBuf,
}

impl Default for Uapi {
    fn default() -> Self {
        Uapi::new(SOCKET_DIR)
    }
}

impl Uapi {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Uapi { dir: dir.into() }
    }

    /// `DIR/IFNAME.sock`, after checking that `ifname` is a name Linux
    /// would accept for an interface.
    pub fn socket_path(&self, ifname: &str) -> Result<PathBuf> {
        check_ifname(ifname)?;
        Ok(self.dir.join(format!("{ifname}.sock")))
    }

    /// The interfaces with a socket that accepts connections, sorted.
    /// A missing directory means none.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::new(format!(
                    "cannot list {}: {}",
                    self.dir.display(),
                    io_text(&e)
                )))
            }
        };
        let mut names = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(".sock")) else {
                continue;
            };
            if check_ifname(name).is_err() {
                continue;
            }
            if !entry.file_type().is_ok_and(|t| t.is_socket()) {
                continue;
            }
            // A socket nobody listens on is left over from a daemon that
            // died: not an interface.
            match UnixStream::connect(entry.path()) {
                Err(e) if e.raw_os_error() == Some(nix::libc::ECONNREFUSED) => continue,
                _ => names.push(name.to_string()),
            }
        }
        names.sort();
        Ok(names)
    }

    /// The state of `ifname`: `wgd_get=1`, or `get=1` from a daemon that
    /// does not know wgd's extension.
    pub fn get(&self, ifname: &str) -> Result<Device> {
        let path = self.socket_path(ifname)?;
        match get_once(&path, ifname, true)? {
            Some(dev) => Ok(dev),
            None => get_once(&path, ifname, false)?
                .ok_or_else(|| Error::new(format!("reading {ifname}: the daemon did not answer"))),
        }
    }

    /// Applies `ops` to `ifname` as one `set=1` request.
    pub fn set(&self, ifname: &str, ops: &[SetOp]) -> Result<()> {
        let path = self.socket_path(ifname)?;
        let stream = connect(&path, ifname)?;
        let request = format_set(ops);
        let what = || format!("setting {ifname}");
        (&stream)
            .write_all(request.as_bytes())
            .map_err(|e| Error::new(format!("{}: {}", what(), io_text(&e))))?;
        drop(request);
        let mut reader = BufReader::new(&stream);
        match read_reply(&mut reader, |_, _| Ok(())).map_err(|e| reply_error(e).context(what()))? {
            None => Err(Error::new(format!(
                "{}: the daemon closed the connection without answering",
                what()
            ))),
            Some(0) => Ok(()),
            Some(errno) => Err(errno_error(&what(), errno)),
        }
    }
}

impl Uapi {
    /// Asks wgd to read its configuration file again (`wgd_reload=1`). A
    /// refusal is the daemon's own words (`FILE:LINE: message` for a file
    /// with an error); a daemon that is not wgd answers an error without
    /// them.
    pub fn reload(&self, ifname: &str) -> Result<()> {
        let path = self.socket_path(ifname)?;
        let stream = connect(&path, ifname)?;
        let what = format!("reloading {ifname}");
        (&stream)
            .write_all(b"wgd_reload=1\n\n")
            .map_err(|e| Error::new(format!("{what}: {}", io_text(&e))))?;
        let mut reason = None;
        let mut reader = BufReader::new(&stream);
        let status = read_reply(&mut reader, |k, v| {
            if k == "wgd_error" {
                reason = Some(v.to_string());
            }
            Ok(())
        })
        .map_err(|e| reply_error(e).context(&what))?;
        match (status, reason) {
            (Some(0), _) => Ok(()),
            (Some(_), Some(reason)) => Err(Error::new(format!("{what}: {reason}"))),
            (Some(errno), None) => Err(errno_error(&what, errno)),
            (None, _) => Err(Error::new(format!(
                "{what}: the daemon closed the connection without answering (is it wgd?)"
            ))),
        }
    }
}

/// A reply that could not be read, worded as wgctl words I/O errors.
fn reply_error(e: ReplyError) -> Error {
    match e {
        ReplyError::Io(e) => Error::new(io_text(&e)),
        ReplyError::Malformed(m) => Error::new(m),
    }
}

/// `setting wg0: Invalid argument (errno 22)`.
fn errno_error(what: &str, errno: i32) -> Error {
    Error::new(format!("{what}: {} (errno {errno})", strerror(errno)))
}

/// Rejects what cannot be an interface name (and so could escape the
/// socket directory).
pub fn check_ifname(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':');
    if ok {
        Ok(())
    } else {
        Err(Error::new(format!(
            "{:?}: not a valid interface name",
            name
        )))
    }
}

fn connect(path: &Path, ifname: &str) -> Result<UnixStream> {
    let stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => Error::new(format!(
            "{ifname}: no such interface (no {})",
            path.display()
        )),
        io::ErrorKind::ConnectionRefused => Error::new(format!(
            "{ifname}: no daemon is listening on {} (a stale socket?)",
            path.display()
        )),
        _ => Error::new(format!(
            "{ifname}: cannot connect to {}: {}",
            path.display(),
            io_text(&e)
        )),
    })?;
    let timeouts = stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    if let Err(e) = timeouts {
        return Err(Error::new(format!("{ifname}: {}", io_text(&e))));
    }
    Ok(stream)
}

/// One `wgd_get=1` (`wgd` true) or `get=1` exchange on a new connection.
/// `Ok(None)`: the daemon refused `wgd_get` (answered an error or hung
/// up), so it is not wgd.
fn get_once(path: &Path, ifname: &str, wgd: bool) -> Result<Option<Device>> {
    let stream = connect(path, ifname)?;
    let what = format!("reading {ifname}");
    let request: &[u8] = if wgd { b"wgd_get=1\n\n" } else { b"get=1\n\n" };
    if let Err(e) = (&stream).write_all(request) {
        return Err(Error::new(format!("{what}: {}", io_text(&e))));
    }
    let mut parser = ReplyParser::new(wgd);
    let mut reader = BufReader::new(&stream);
    let status = read_reply(&mut reader, |k, v| parser.line(k, v)).map_err(reply_error);
    match status {
        Ok(Some(0)) => Ok(Some(parser.finish())),
        Ok(Some(_) | None) if wgd => Ok(None),
        // The daemon may have hung up on the unknown request before
        // reading all of it.
        Err(_) if wgd => Ok(None),
        Ok(None) => Err(Error::new(format!(
            "{what}: the daemon closed the connection without answering"
        ))),
        Ok(Some(errno)) => Err(errno_error(&what, errno)),
        Err(e) => Err(e.context(&what)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;
    use std::os::unix::net::UnixListener;

    #[test]
    fn interface_names() {
        for ok in ["wg0", "a", "x".repeat(15).as_str(), "wg-home_1.x"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "x".repeat(16).as_str(), "a b", "a\0"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    /// A fake daemon on a socket in a temp dir: answers `wgd_get` with an
    /// error (as wireguard-go does), then `get` and `set`.
    #[test]
    fn falls_back_to_get_and_sets() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("wgx.sock")).unwrap();
        let server = std::thread::spawn(move || {
            let mut requests = Vec::new();
            // The listing's probe, wgd_get, get, set.
            for _ in 0..4 {
                let (stream, _) = listener.accept().unwrap();
                let mut r = BufReader::new(&stream);
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                if first.is_empty() {
                    continue;
                }
                let mut rest = String::new();
                if first == "set=1\n" {
                    loop {
                        let mut l = String::new();
                        r.read_line(&mut l).unwrap();
                        rest.push_str(&l);
                        if l == "\n" {
                            break;
                        }
                    }
                }
                let reply = match first.as_str() {
                    "wgd_get=1\n" => "errno=-22\n\n".to_string(),
                    "get=1\n" => "listen_port=3\nerrno=0\n\n".to_string(),
                    _ => "errno=-22\n\n".to_string(),
                };
                let _ = (&stream).write_all(reply.as_bytes());
                requests.push(first + &rest);
            }
            requests
        });
        let uapi = Uapi::new(dir.path());
        assert_eq!(uapi.list().unwrap(), vec!["wgx".to_string()]);
        let dev = uapi.get("wgx").unwrap();
        assert_eq!(dev.listen_port, 3);
        assert!(!dev.is_wgd());
        let e = uapi.set("wgx", &[SetOp::ListenPort(9)]).unwrap_err();
        assert_eq!(e.to_string(), "setting wgx: Invalid argument (errno 22)");
        let requests = server.join().unwrap();
        assert_eq!(requests[2], "set=1\nlisten_port=9\n\n");

        let e = uapi.get("nope").unwrap_err();
        assert!(uapi.reload("nope").is_err());
        assert_eq!(
            e.to_string(),
            format!(
                "nope: no such interface (no {}/nope.sock)",
                dir.path().display()
            )
        );
    }

    /// `reload`: wgd's reason is what the operator reads; a daemon that
    /// does not know the request gives its errno.
    #[test]
    fn reload_reports_the_daemons_reason() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("wgr.sock")).unwrap();
        let server = std::thread::spawn(move || {
            let replies = [
                "errno=0\n\n",
                "wgd_error=/etc/wireguard/wgr.conf:3: bad line\nerrno=-22\n\n",
                "errno=-71\n\n",
            ];
            let mut requests = Vec::new();
            for reply in replies {
                let (stream, _) = listener.accept().unwrap();
                let mut r = BufReader::new(&stream);
                let mut first = String::new();
                r.read_line(&mut first).unwrap();
                let mut empty = String::new();
                r.read_line(&mut empty).unwrap();
                (&stream).write_all(reply.as_bytes()).unwrap();
                requests.push(first + &empty);
            }
            requests
        });
        let uapi = Uapi::new(dir.path());
        uapi.reload("wgr").unwrap();
        assert_eq!(
            uapi.reload("wgr").unwrap_err().to_string(),
            "reloading wgr: /etc/wireguard/wgr.conf:3: bad line"
        );
        assert_eq!(
            uapi.reload("wgr").unwrap_err().to_string(),
            "reloading wgr: Protocol error (errno 71)"
        );
        assert_eq!(server.join().unwrap(), vec!["wgd_reload=1\n\n"; 3]);
    }
}
