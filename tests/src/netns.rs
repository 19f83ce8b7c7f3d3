//! Network namespaces owned by a test, and veth links between them.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use nix::sched::{setns, CloneFlags};

use crate::error::{Error, Result};
use crate::names::unique_name;
use crate::proc::{self, describe, run_checked, run_command, Child, Shared, COMMAND_TIMEOUT};

/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/var/run/netns";

/// How many fresh names [`Netns::new`] tries before giving up.
const NAME_TRIES: usize = 32;

/// A network namespace created for one test. Dropping it kills (by pid)
/// every process started in it with [`Netns::spawn`] that is still
/// running, then deletes the namespace.
pub struct Netns {
    name: String,
    children: Mutex<Vec<Arc<Shared>>>,
}

impl Netns {
    /// Creates a namespace with a unique name and brings its `lo` up.
    pub fn new() -> Result<Netns> {
        require_root()?;
        for _ in 0..NAME_TRIES {
            let name = unique_name('n');
            if Path::new(NETNS_DIR).join(&name).exists() {
                // A leftover of an earlier run with the same pid: not ours.
                continue;
            }
            let output = run_command(ip(["netns", "add", name.as_str()]), COMMAND_TIMEOUT)?;
            if !output.status.success() {
                if Path::new(NETNS_DIR).join(&name).exists() {
                    continue;
                }
                proc::check_output(&format!("ip netns add {name}"), output)?;
                continue;
            }
            let ns = Netns {
                name,
                children: Mutex::new(Vec::new()),
            };
            ns.ip(["link", "set", "lo", "up"])?;
            return Ok(ns);
        }
        Err(Error::other(format!(
            "no free namespace name after {NAME_TRIES} tries"
        )))
    }

    /// The namespace's name (as `ip netns` knows it).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/NAME`.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A `Command` for `ip netns exec NAME program args…`, not yet run.
    /// `ip netns exec` execs the program, so a spawned command's pid is the
    /// program's own.
    pub fn command<I, S>(&self, program: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.name.as_str(), program]);
        cmd.args(args);
        cmd
    }

    /// Runs a command inside to completion (bounded by
    /// [`COMMAND_TIMEOUT`]) and returns its output, whatever its status.
    pub fn exec<I, S>(&self, program: &str, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_command(self.command(program, args), COMMAND_TIMEOUT)
    }

    /// Like [`Netns::exec`], but an unsuccessful exit is an error; returns
    /// stdout.
    pub fn run<I, S>(&self, program: &str, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        run_checked(self.command(program, args), COMMAND_TIMEOUT)
    }

    /// `ip -n NAME args…`, checked; returns stdout.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", self.name.as_str()]).args(args);
        run_checked(cmd, COMMAND_TIMEOUT)
    }

    /// Starts a long-running command inside; the guard (and this namespace,
    /// whichever drops first) kills it.
    pub fn spawn<I, S>(&self, program: &str, args: I) -> Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.spawn_env(program, args, &[])
    }

    /// [`Netns::spawn`] with extra environment variables.
    pub fn spawn_env<I, S>(&self, program: &str, args: I, env: &[(&str, &str)]) -> Result<Child>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(program, args);
        cmd.envs(env.iter().copied());
        let label = format!("{} in {}", describe(&cmd), self.name);
        let child = Child::spawn(cmd, &label)?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(child.shared());
        Ok(child)
    }

    /// Runs `f` on a thread that has entered this namespace and returns
    /// its result. Sockets created in `f` stay in this namespace when used
    /// from any other thread afterwards.
    pub fn enter<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let path = self.path();
        let file =
            File::open(&path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        std::thread::scope(|scope| {
            let handle = scope.spawn(move || -> Result<T> {
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .map_err(|e| Error::io(format!("setns into {}", path.display()), e.into()))?;
                Ok(f())
            });
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|e| e.into_inner()));
        for child in children {
            child.terminate(proc::TERM_GRACE);
        }
        // Anything still inside was not started through this guard: report
        // it rather than kill what we did not start.
        if let Ok(pids) = run_checked(ip(["netns", "pids", self.name.as_str()]), COMMAND_TIMEOUT) {
            if !pids.trim().is_empty() {
                eprintln!(
                    "wgd-tests: processes still in namespace {}: {}",
                    self.name,
                    pids.split_whitespace().collect::<Vec<_>>().join(" ")
                );
            }
        }
        if let Err(e) = run_checked(ip(["netns", "del", self.name.as_str()]), COMMAND_TIMEOUT) {
            eprintln!("wgd-tests: cannot delete namespace {}: {e}", self.name);
        }
    }
}

impl std::fmt::Debug for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netns").field("name", &self.name).finish()
    }
}

/// The two ends of a veth link: `a` lives in the first namespace, `b` in
/// the second. They disappear with their namespaces.
#[derive(Debug, Clone)]
pub struct Veth {
    pub a: String,
    pub b: String,
}

/// Creates a veth pair between two namespaces, gives each end its IPv4 and
/// IPv6 address (CIDR notation, e.g. `10.200.0.1/24`, `fd00:200::1/64`) and
/// brings both up. IPv6 addresses are added `nodad`, so usable at once.
pub fn link(a: &Netns, b: &Netns, v4_a: &str, v4_b: &str, v6_a: &str, v6_b: &str) -> Result<Veth> {
    link_with(a, b, &[v4_a, v6_a], &[v4_b, v6_b])
}

/// [`link`] with any number of addresses per end (none is fine).
pub fn link_with(a: &Netns, b: &Netns, addrs_a: &[&str], addrs_b: &[&str]) -> Result<Veth> {
    let veth = Veth {
        a: unique_name('v'),
        b: unique_name('v'),
    };
    // Both ends are created directly inside their namespaces, so the names
    // never appear in the root namespace.
    run_checked(
        ip([
            "link",
            "add",
            veth.a.as_str(),
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            veth.b.as_str(),
            "netns",
            b.name(),
        ]),
        COMMAND_TIMEOUT,
    )?;
    for (ns, dev, addrs) in [(a, &veth.a, addrs_a), (b, &veth.b, addrs_b)] {
        for addr in addrs {
            add_addr(ns, dev, addr)?;
        }
        ns.ip(["link", "set", dev.as_str(), "up"])?;
    }
    Ok(veth)
}

/// `ip addr add ADDR dev DEV` inside `ns`, with `nodad` for IPv6.
pub fn add_addr(ns: &Netns, dev: &str, addr: &str) -> Result<()> {
    let mut args = vec!["addr", "add", addr, "dev", dev];
    if addr.contains(':') {
        args.push("nodad");
    }
    ns.ip(args).map(drop)
}

/// True while a namespace of this name exists.
pub fn netns_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

fn ip<const N: usize>(args: [&str; N]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

fn require_root() -> Result<()> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Error::other(
            "the end-to-end tests need root (network namespaces, veth, tun)",
        ))
    }
}
