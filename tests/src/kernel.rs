//! A real Linux-kernel WireGuard peer: Debian's kernel with its
//! wireguard.ko, booted under qemu by the workplace's
//! `shared/tools/kernel-peer.sh`, behind a tap in a test's namespace.
//!
//! The guest's addresses are fixed by that script: the namespace side of
//! the tap is 198.51.100.1/24, the guest 198.51.100.2 (listen port 51820),
//! the guest's wg0 10.66.0.2/24. So one namespace holds one kernel peer.
//! Its speed is the emulator's: use it for interop, never for benchmarks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::netns::Netns;
use crate::proc::run_command;
use crate::wg::Dump;

/// Our own state and cache directory for the script (not its default, so
/// the image fix-up below touches only our copy).
const KPEER_ROOT: &str = "/tmp/kpeer-wgd";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// Bound on one command run in the guest.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);

/// Path of kernel-peer.sh: `$KERNEL_PEER` or `shared/tools/` beside the
/// repository.
pub fn script() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("KERNEL_PEER") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/kernel-peer.sh");
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::other(format!("{} is missing", p.display())))
    }
}

fn command(args: &[&str]) -> Result<Command> {
    let mut c = Command::new("bash");
    c.arg(script()?).args(args).env("KPEER_ROOT", KPEER_ROOT);
    Ok(c)
}

/// Builds the guest image once. The script appends a small uncompressed
/// cpio archive (keys, per-run settings) to its gzip'ed base image; the
/// kernel finds that second archive only if it starts on a 4-byte
/// boundary, which an arbitrary gzip length does not give, and the boot
/// then panics ("invalid magic at start of compressed archive"). Padding
/// the base image with zeros, which the kernel skips between archives,
/// fixes that.
fn build() -> Result<()> {
    let out = run_command(command(&["build"])?, BOOT_TIMEOUT)?;
    if !out.status.success() {
        return Err(Error::other(format!(
            "kernel-peer.sh build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    let cache = PathBuf::from(KPEER_ROOT).join("cache");
    let dir = std::fs::read_dir(&cache).map_err(|e| Error::io("kernel-peer cache", e))?;
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("initramfs-") && name.ends_with(".cpio.gz") {
            let path = entry.path();
            let len = std::fs::metadata(&path)
                .map_err(|e| Error::io("initramfs size", e))?
                .len();
            let pad = (512 - len % 512) % 512;
            if pad != 0 {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(|e| Error::io("pad initramfs", e))?;
                f.write_all(&vec![0u8; pad as usize])
                    .map_err(|e| Error::io("pad initramfs", e))?;
            }
        }
    }
    Ok(())
}

pub struct KernelPeer {
    state: String,
    pub public_key: String,
    /// The guest's WireGuard endpoint, 198.51.100.2:51820.
    pub endpoint: SocketAddr,
    pub kernel: String,
    /// The namespace side of the guest's link (a tap holding 198.51.100.1/24).
    pub tap: String,
}

impl KernelPeer {
    /// Boots a kernel peer in `ns` whose one peer is `host_public_key`
    /// (allowed 10.66.0.1/32), with an optional PSK, and, if
    /// `host_endpoint` is given, that endpoint so the guest can initiate.
    pub fn start(
        ns: &Netns,
        host_public_key: &str,
        psk: Option<&str>,
        host_endpoint: Option<SocketAddr>,
    ) -> Result<KernelPeer> {
        build()?;
        let psk_file = match psk {
            Some(k) => {
                use std::io::Write;
                let mut f = tempfile::NamedTempFile::new().map_err(|e| Error::io("psk file", e))?;
                writeln!(f, "{k}").map_err(|e| Error::io("psk file", e))?;
                Some(f)
            }
            None => None,
        };
        let mut args = vec!["start".to_string(), host_public_key.to_string()];
        if let Some(f) = &psk_file {
            args.push(f.path().to_string_lossy().into_owned());
        }
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = command(&argv)?;
        c.env("KPEER_NETNS", ns.name());
        if let Some(e) = host_endpoint {
            c.env("KPEER_PEER_ENDPOINT", e.to_string());
        }
        let out = run_command(c, BOOT_TIMEOUT)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(Error::other(format!(
                "kernel-peer.sh start failed: {}\n{}",
                text,
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let vars: HashMap<String, String> = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .ok_or_else(|| Error::other(format!("kernel-peer.sh printed no {k}: {text}")))
        };
        let endpoint = get("KPEER_ENDPOINT")?
            .parse()
            .map_err(|_| Error::other("bad KPEER_ENDPOINT"))?;
        Ok(KernelPeer {
            state: get("KPEER_STATE")?,
            public_key: get("KPEER_PUBKEY")?,
            endpoint,
            kernel: get("KPEER_KERNEL").unwrap_or_default(),
            tap: get("KPEER_TAP")?,
        })
    }

    /// Runs a shell command inside the guest and returns its output.
    pub fn exec(&self, cmd: &str) -> Result<String> {
        self.exec_status(cmd).map(|(_, out)| out)
    }

    /// Runs a shell command inside the guest: whether it exited 0, and its
    /// output (stdout and stderr).
    pub fn exec_status(&self, cmd: &str) -> Result<(bool, String)> {
        let c = command(&["exec", "-s", &self.state, cmd])?;
        let out = run_command(c, EXEC_TIMEOUT)?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        ))
    }

    /// Like [`KernelPeer::exec`], but a non-zero exit is an error that
    /// carries the output.
    pub fn run(&self, cmd: &str) -> Result<String> {
        match self.exec_status(cmd)? {
            (true, out) => Ok(out),
            (false, out) => Err(Error::other(format!("`{cmd}` failed in the guest: {out}"))),
        }
    }

    /// `wg show wg0 dump` in the guest, parsed.
    pub fn dump(&self) -> Result<Dump> {
        Dump::parse(&self.run("wg show wg0 dump")?)
    }
}

impl Drop for KernelPeer {
    fn drop(&mut self) {
        if let Ok(c) = command(&["stop", &self.state]) {
            let _ = run_command(c, Duration::from_secs(30));
        }
        // `stop` leaves the state directory (console log, settings); it is
        // ours, so remove it, unless a failing test may want the log.
        let state = PathBuf::from(&self.state);
        if !std::thread::panicking() && state.starts_with(KPEER_ROOT) {
            let _ = std::fs::remove_dir_all(&state);
        }
    }
}
