//! A wireguard-go peer running in a test's namespace.
//!
//! Kernel peer (not implemented yet): a peer backed by
//! `/work/shared/tools/kernel-peer.sh` would live beside this one with the
//! same shape — `start(ns, host_public_key)` running `kernel-peer.sh start`
//! with `KPEER_NETNS` set to the test's namespace and parsing its
//! `KEY='value'` lines (public key, endpoint), `exec` through
//! `kernel-peer.sh exec`, and a `Drop` calling `kernel-peer.sh stop` on its
//! state directory. Its guest addresses are fixed by that script
//! (198.51.100.0/24 outer, 10.66.0.0/24 inner), so one test may use only one.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::names::unique_name;
use crate::netns::{add_addr, Netns};
use crate::proc::{pid_exists, Child};
use crate::wait::wait_until;
use crate::wg::{self, keypair, socket_path, Dump, InterfaceConfig, PeerConfig};

/// How long wireguard-go gets to create its UAPI socket.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh interface names [`WgGo::start`] tries.
const NAME_TRIES: usize = 32;

/// A `wireguard-go IFNAME` process in a namespace, with its own key pair.
/// Dropping it stops the process (SIGTERM, which makes wireguard-go remove
/// its tun and socket) and removes the socket file if a SIGKILL left it.
pub struct WgGo<'ns> {
    ns: &'ns Netns,
    ifname: String,
    private_key: String,
    public_key: String,
    child: Child,
}

impl<'ns> WgGo<'ns> {
    /// Starts wireguard-go in `ns` on a machine-wide unique interface name
    /// and waits for its UAPI socket. The interface is not configured and
    /// not up yet: see [`WgGo::configure`], [`WgGo::add_addr`], [`WgGo::up`].
    pub fn start(ns: &'ns Netns) -> Result<WgGo<'ns>> {
        let ifname = fresh_ifname()?;
        let child = ns.spawn_env(
            "wireguard-go",
            [ifname.as_str()],
            &[("WG_PROCESS_FOREGROUND", "1"), ("LOG_LEVEL", "verbose")],
        )?;
        wait_for_socket(&child, &ifname, "wireguard-go", START_TIMEOUT)?;
        let (private_key, public_key) = keypair();
        Ok(WgGo {
            ns,
            ifname,
            private_key,
            public_key,
            child,
        })
    }

    /// The namespace it runs in.
    pub fn ns(&self) -> &'ns Netns {
        self.ns
    }

    /// The WireGuard interface name (unique machine-wide).
    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// Its private key, base64.
    pub fn private_key(&self) -> &str {
        &self.private_key
    }

    /// Its public key, base64.
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// The process guard (pid, output).
    pub fn child(&self) -> &Child {
        &self.child
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// `/var/run/wireguard/IFNAME.sock`.
    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.ifname)
    }

    /// Replaces the configuration with its own private key, `listen_port`
    /// and `peers` (`wg setconf`).
    pub fn configure(&self, listen_port: u16, peers: Vec<PeerConfig>) -> Result<()> {
        self.setconf(&InterfaceConfig {
            private_key: Some(self.private_key.clone()),
            listen_port: Some(listen_port),
            fwmark: None,
            peers,
        })
    }

    /// `wg setconf` with a full configuration.
    pub fn setconf(&self, conf: &InterfaceConfig) -> Result<()> {
        wg::setconf(self.ns, &self.ifname, conf).map_err(|e| self.with_report(e))
    }

    /// `wg set IFNAME args…`.
    pub fn set(&self, args: &[&str]) -> Result<()> {
        wg::set(self.ns, &self.ifname, args).map_err(|e| self.with_report(e))
    }

    /// Adds an inner address (CIDR; IPv6 `nodad`).
    pub fn add_addr(&self, cidr: &str) -> Result<()> {
        add_addr(self.ns, &self.ifname, cidr)
    }

    /// Brings the interface up.
    pub fn up(&self) -> Result<()> {
        self.ns
            .ip(["link", "set", self.ifname.as_str(), "up"])
            .map(drop)
    }

    /// `wg show IFNAME dump`, parsed.
    pub fn dump(&self) -> Result<Dump> {
        wg::dump(self.ns, &self.ifname).map_err(|e| self.with_report(e))
    }

    /// Waits for a handshake with `peer`; returns its time.
    pub fn wait_handshake(&self, peer: &str, timeout: Duration) -> Result<u64> {
        wg::wait_handshake(self.ns, &self.ifname, peer, timeout).map_err(|e| self.with_report(e))
    }

    fn with_report(&self, e: Error) -> Error {
        Error::other(format!("{e}\n{}", self.child.report()))
    }
}

impl Drop for WgGo<'_> {
    fn drop(&mut self) {
        self.child.stop(crate::proc::TERM_GRACE);
        let sock = self.socket_path();
        // The name is ours alone, so a socket left behind (after SIGKILL)
        // is ours to remove; the process is reaped, so none serves it.
        if sock.exists() && !pid_exists(self.child.pid()) {
            let _ = std::fs::remove_file(&sock);
        }
    }
}

impl std::fmt::Debug for WgGo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgGo")
            .field("ns", &self.ns.name())
            .field("ifname", &self.ifname)
            .field("pid", &self.pid())
            .finish()
    }
}

/// Waits until `child` (a userspace WireGuard implementation, named `what`)
/// serves the UAPI socket of `ifname`; an error, with the child's output,
/// if it exits first or the time runs out.
pub fn wait_for_socket(
    child: &Child,
    ifname: &str,
    what: &str,
    timeout: std::time::Duration,
) -> Result<()> {
    let sock = socket_path(ifname);
    let waited = wait_until(
        timeout,
        &format!("{what} socket {}", sock.display()),
        || sock.exists() || !child.is_running(),
    );
    waited
        .and_then(|()| {
            if child.is_running() {
                Ok(())
            } else {
                Err(Error::other(format!("{what} exited during start")))
            }
        })
        .map_err(|e| Error::other(format!("{e}\n{}", child.report())))
}

/// An interface name unused machine-wide (no UAPI socket of that name).
pub fn fresh_ifname() -> Result<String> {
    for _ in 0..NAME_TRIES {
        let name = unique_name('w');
        if !socket_path(&name).exists() {
            return Ok(name);
        }
    }
    Err(Error::other(format!(
        "no free interface name after {NAME_TRIES} tries"
    )))
}
