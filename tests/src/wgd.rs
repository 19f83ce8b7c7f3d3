//! A wgd peer running in a test's namespace: `wgd -f -c FILE IFNAME`.
//!
//! The binary is `$WGD_BIN` if set, else `target/debug/wgd` of this
//! workspace; `scripts/test.sh` builds it before the tests run, and a
//! missing binary is a test failure that says how to build it.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::netns::{add_addr, Netns};
use crate::proc::{cmdline, pid_exists, pids, task_stat, Child};
use crate::wg::{self, keypair, socket_path, Dump, InterfaceConfig};
use crate::wggo::{fresh_ifname, wait_for_socket};

pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Path of the wgd binary under test.
pub fn binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("WGD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("debug")
        .join("wgd");
    if p.exists() {
        Ok(p)
    } else {
        Err(Error::other(format!(
            "{} is missing: build it first with `cargo build -p wgd` (scripts/test.sh does)",
            p.display()
        )))
    }
}

/// One process of a running wgd, as `/proc` shows it.
#[derive(Debug, Clone)]
pub struct RoleProcess {
    pub role: String,
    pub pid: u32,
}

pub struct Wgd<'ns> {
    ns: &'ns Netns,
    ifname: String,
    private_key: String,
    public_key: String,
    child: Child,
    _conf: tempfile::NamedTempFile,
    _key: Option<tempfile::NamedTempFile>,
}

impl<'ns> Wgd<'ns> {
    /// Starts wgd in `ns` with its own fresh key pair plus `conf` (whose
    /// `private_key`, if `None`, is filled with the fresh key), and waits
    /// for its control socket.
    pub fn start(ns: &'ns Netns, conf: InterfaceConfig, env: &[(&str, &str)]) -> Result<Wgd<'ns>> {
        Self::start_with(ns, conf, env, false)
    }

    /// As [`Wgd::start`], but the private key is in a key file of its own
    /// that the configuration names (`PrivateKeyFile =`): the form a
    /// restart of the roles can restore (wgd re-reads the file).
    pub fn start_key_file(
        ns: &'ns Netns,
        conf: InterfaceConfig,
        env: &[(&str, &str)],
    ) -> Result<Wgd<'ns>> {
        Self::start_with(ns, conf, env, true)
    }

    fn start_with(
        ns: &'ns Netns,
        conf: InterfaceConfig,
        env: &[(&str, &str)],
        key_file: bool,
    ) -> Result<Wgd<'ns>> {
        let ifname = fresh_ifname()?;
        let (private_key, public_key) = keypair();
        let mut conf = conf;
        if conf.private_key.is_none() {
            conf.private_key = Some(private_key.clone());
        }
        let public_key = match &conf.private_key {
            Some(k) if *k != private_key => wg::public_key(k)?,
            _ => public_key,
        };
        let mut file =
            tempfile::NamedTempFile::new().map_err(|e| Error::io("wgd conf temp file", e))?;
        let mut text = conf.to_conf();
        let mut key = None;
        if let (true, Some(k)) = (key_file, &conf.private_key) {
            let mut kf =
                tempfile::NamedTempFile::new().map_err(|e| Error::io("wgd key temp file", e))?;
            writeln!(kf, "{k}").map_err(|e| Error::io("wgd key temp file", e))?;
            text = text.replace(
                &format!("PrivateKey = {k}\n"),
                &format!("PrivateKeyFile = {}\n", kf.path().display()),
            );
            key = Some(kf);
        }
        file.write_all(text.as_bytes())
            .map_err(|e| Error::io("wgd conf temp file", e))?;
        let bin = binary()?;
        let bin = bin.to_string_lossy().into_owned();
        let path = file.path().to_string_lossy().into_owned();
        let mut all_env = vec![("LOG_LEVEL", "debug")];
        all_env.extend_from_slice(env);
        let child = ns.spawn_env(&bin, ["-f", "-c", path.as_str(), ifname.as_str()], &all_env)?;
        wait_for_socket(&child, &ifname, "wgd", START_TIMEOUT)?;
        Ok(Wgd {
            ns,
            ifname,
            private_key: conf.private_key.unwrap_or(private_key),
            public_key,
            child,
            _conf: file,
            _key: key,
        })
    }

    pub fn ns(&self) -> &'ns Netns {
        self.ns
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    pub fn private_key(&self) -> &str {
        &self.private_key
    }

    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    pub fn child(&self) -> &Child {
        &self.child
    }

    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn socket_path(&self) -> PathBuf {
        socket_path(&self.ifname)
    }

    /// The role children of this wgd (`wgd --role NAME`), from `/proc`.
    pub fn roles(&self) -> Vec<RoleProcess> {
        roles_of(self.pid())
    }

    /// The pid of one role.
    pub fn role_pid(&self, role: &str) -> Option<u32> {
        self.roles()
            .into_iter()
            .find(|r| r.role == role)
            .map(|r| r.pid)
    }

    /// Deletes the key file of [`Wgd::start_key_file`], so that a restart
    /// of the roles can no longer read it.
    pub fn remove_key_file(&self) -> Result<()> {
        match &self._key {
            Some(f) => std::fs::remove_file(f.path()).map_err(|e| Error::io("remove key file", e)),
            None => Err(Error::other("wgd was not started with a key file")),
        }
    }

    pub fn set(&self, args: &[&str]) -> Result<()> {
        wg::set(self.ns, &self.ifname, args).map_err(|e| self.with_report(e))
    }

    pub fn add_addr(&self, cidr: &str) -> Result<()> {
        add_addr(self.ns, &self.ifname, cidr)
    }

    pub fn up(&self) -> Result<()> {
        self.ns
            .ip(["link", "set", self.ifname.as_str(), "up"])
            .map(drop)
    }

    pub fn dump(&self) -> Result<Dump> {
        wg::dump(self.ns, &self.ifname).map_err(|e| self.with_report(e))
    }

    pub fn wait_handshake(&self, peer: &str, timeout: Duration) -> Result<u64> {
        wg::wait_handshake(self.ns, &self.ifname, peer, timeout).map_err(|e| self.with_report(e))
    }

    /// `wgd_get=1` on the control socket: wgd's extension of `get`, with
    /// the interface public key, drop counters and the IPC counter. Keys
    /// that repeat (per-peer lines) keep their first value.
    pub fn wgd_get(&self) -> Result<std::collections::HashMap<String, String>> {
        use std::io::{Read, Write as _};
        let mut s = std::os::unix::net::UnixStream::connect(self.socket_path())
            .map_err(|e| Error::io("connect to wgd socket", e))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| Error::io("socket timeout", e))?;
        s.write_all(b"wgd_get=1\n\n")
            .map_err(|e| Error::io("write wgd_get", e))?;
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while !text.ends_with("\n\n") {
            let n = s.read(&mut buf).map_err(|e| Error::io("read wgd_get", e))?;
            if n == 0 {
                break;
            }
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        let mut map = std::collections::HashMap::new();
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=') {
                map.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
        }
        if map.get("errno").map(String::as_str) != Some("0") {
            return Err(Error::other(format!("wgd_get failed: {text:?}")));
        }
        Ok(map)
    }

    /// One numeric counter of [`Wgd::wgd_get`].
    pub fn counter(&self, name: &str) -> Result<u64> {
        self.wgd_get()?
            .get(name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::other(format!("no counter {name}")))
    }

    /// Whether the interface exists in the namespace.
    pub fn interface_exists(&self) -> bool {
        self.ns
            .exec("ip", ["link", "show", self.ifname.as_str()])
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    pub fn with_report(&self, e: Error) -> Error {
        Error::other(format!("{e}\n{}", self.child.report()))
    }

    /// Starts wgd in `ns` with exactly `conf_text` as its configuration
    /// file (which may name key files), whose private key is
    /// `private_key` (base64), and waits for its control socket.
    pub fn start_with_text(ns: &'ns Netns, conf_text: &str, private_key: &str) -> Result<Wgd<'ns>> {
        let ifname = fresh_ifname()?;
        let public_key = wg::public_key(private_key)?;
        let mut file =
            tempfile::NamedTempFile::new().map_err(|e| Error::io("wgd conf temp file", e))?;
        file.write_all(conf_text.as_bytes())
            .map_err(|e| Error::io("wgd conf temp file", e))?;
        let bin = binary()?;
        let bin = bin.to_string_lossy().into_owned();
        let path = file.path().to_string_lossy().into_owned();
        let child = ns.spawn_env(
            &bin,
            ["-f", "-c", path.as_str(), ifname.as_str()],
            &[("LOG_LEVEL", "debug")],
        )?;
        wait_for_socket(&child, &ifname, "wgd", START_TIMEOUT)?;
        Ok(Wgd {
            ns,
            ifname,
            private_key: private_key.to_string(),
            public_key,
            child,
            _conf: file,
            _key: None,
        })
    }
}

impl Drop for Wgd<'_> {
    fn drop(&mut self) {
        self.child.stop(crate::proc::TERM_GRACE);
        let sock = self.socket_path();
        if sock.exists() && !pid_exists(self.child.pid()) {
            let _ = std::fs::remove_file(&sock);
        }
    }
}

impl std::fmt::Debug for Wgd<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wgd")
            .field("ns", &self.ns.name())
            .field("ifname", &self.ifname)
            .field("pid", &self.pid())
            .finish()
    }
}

/// The role children (`wgd --role NAME`) of the wgd parent `parent`, from
/// `/proc`: for a wgd the tests did not start through [`Wgd`].
pub fn roles_of(parent: u32) -> Vec<RoleProcess> {
    let mut out = Vec::new();
    for pid in pids() {
        // The parent pid is field 4.
        let ppid = task_stat(pid, pid).and_then(|f| f.get(1)?.parse::<u32>().ok());
        if ppid != Some(parent) {
            continue;
        }
        let args = cmdline(pid);
        if let Some(i) = args.iter().position(|a| a == "--role") {
            if let Some(role) = args.get(i + 1) {
                out.push(RoleProcess {
                    role: role.clone(),
                    pid,
                });
            }
        }
    }
    out
}
