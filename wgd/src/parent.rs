//! The privileged parent: start-up and supervision.
//!
//! Start-up, in order: read the configuration and resolve the role users
//! (errors go to the terminal, exit 1); daemonize unless in the
//! foreground; open the tun device, the UDP sockets and the control
//! socket; create the channels; re-execute this binary once per role (see
//! [`crate::roles`]); drop every capability but the two it still needs;
//! hand the tun device and sockets to the transport; apply the
//! configuration. Then it serves the control socket and watches its
//! children. `SIGTERM` and `SIGINT` stop it (the interface is deleted);
//! `SIGHUP` reloads the configuration file with `wg syncconf`'s semantics
//! (`Control::reload` in `control.rs`, which the control socket also
//! reaches, for `wgctl reload`).
//!
//! It fails closed without leaking: if a role dies or stops, the parent
//! logs which and why (the signal; `SIGSYS` is its seccomp filter), keeps
//! the interface and its routes (it holds the tun device itself, so
//! packets to the tunnel are dropped, never routed in clear), ends the
//! other roles and starts all three anew, and applies the configuration
//! again from its journal ([`crate::journal`]): key files are read again,
//! inline keys come back as the crypto role wrapped them, peers handshake
//! anew. It exits non-zero, deleting the interface, when the configuration
//! cannot be restored (a key file can no longer be read, or a key was given
//! inline and there is no kernel keyring to keep its wrapping key, see
//! [`crate::keyring`]), or past its restart budget ([`RESTART_BUDGET`] in
//! [`RESTART_WINDOW`]; a restart that fails counts against it). The
//! parent never reads a network packet.
//!
//! Beside it: [`crate::control`] (what a `set` or `get` does to the roles),
//! [`crate::spawn`] (re-executing a role), [`crate::daemon`] (going to the
//! background).

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use proto::ipc::ParentToTransport;
use wg_config::config::Config;

use crate::control::{serve_client, Control, ReloadSource};
use crate::daemon::{daemonize, report_ready};
use crate::journal::Journal;
use crate::net;
use crate::privdrop::{self, RoleUsers};
use crate::roles::{self, ParentEnds, EXIT_TUN_GONE, ROLES};
use crate::spawn::{spawn_role, Spawned};

/// Command-line options of the daemon.
#[derive(Debug, Clone)]
pub struct Options {
    pub ifname: String,
    pub foreground: bool,
    pub config: Option<PathBuf>,
    pub user: Option<String>,
    pub handshake_user: Option<String>,
    pub crypto_user: Option<String>,
    pub allow_nobody: bool,
}

/// How long the parent waits for a child's answer before it declares the
/// child dead.
const CHILD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Control clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 256;
/// Restarts of the roles allowed within [`RESTART_WINDOW`]; one more and
/// the parent gives up (fails closed and exits non-zero).
pub const RESTART_BUDGET: usize = 5;
/// See [`RESTART_BUDGET`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How long the parent waits, when a role exited, for a sibling that was
/// killed to become reapable, so that the log names the killed one.
const KILLED_SIBLING_SETTLE: Duration = Duration::from_millis(200);
/// How long roles get to exit on hang-up before a restart kills them.
const ROLE_EXIT_GRACE: Duration = Duration::from_secs(1);

/// Runs the daemon. Returns the process exit code.
pub fn run(opts: Options) -> ExitCode {
    let (config, reload) = match &opts.config {
        Some(path) => match crate::control::parse_at_start(path) {
            Ok((c, reload)) => (Some(c), reload),
            Err(e) => {
                say!("{e}");
                return ExitCode::from(1);
            }
        },
        None => (None, ReloadSource::default()),
    };
    let users = match privdrop::resolve_users(
        opts.user.as_deref(),
        opts.handshake_user.as_deref(),
        opts.crypto_user.as_deref(),
        opts.allow_nobody,
    ) {
        Ok(u) => u,
        Err(e) => {
            say!("wgd: {e}");
            return ExitCode::from(1);
        }
    };
    let mut ready_pipe = None;
    if !opts.foreground {
        match daemonize() {
            Ok(p) => ready_pipe = p,
            Err(e) => {
                say!("wgd: {e}");
                return ExitCode::from(1);
            }
        }
    }
    crate::logging::init("parent");
    match start(opts, config, reload, users, &mut ready_pipe) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            report_ready(&mut ready_pipe, &e);
            ExitCode::from(1)
        }
    }
}

/// Which test-only hooks this build and this start asked for
/// (`--features test-hooks` and `WGD_TEST_HOOKS=1`, `=tiocsti` or
/// `=hostile:ROLE`; see [`crate::confine::test_hook`] and
/// `crate::hostile`). A hostile role is only ever the first of its kind:
/// the roles a restart starts (`first` false) are honest, with the
/// system-call hooks of `1`.
fn test_hooks(first: bool) -> Option<&'static str> {
    if !cfg!(feature = "test-hooks") {
        return None;
    }
    match std::env::var("WGD_TEST_HOOKS").as_deref() {
        Ok("1") => Some("1"),
        Ok("tiocsti") => Some("tiocsti"),
        Ok("hostile:crypto") if first => Some("hostile:crypto"),
        Ok("hostile:handshake") if first => Some("hostile:handshake"),
        Ok("hostile:transport") if first => Some("hostile:transport"),
        Ok(v) if v.starts_with("hostile:") => Some("1"),
        _ => None,
    }
}

/// Starts the three roles: channels, a log pipe each (read by a relay
/// thread), re-exec. The roles started are pushed to `children` as they
/// start, so on error the caller can end them.
fn spawn_generation(
    users: &RoleUsers,
    root: &Path,
    children: &mut Vec<Spawned>,
    first: bool,
) -> Result<ParentEnds, String> {
    let (ends, children_ends) = roles::channels().map_err(|e| format!("socketpair: {e}"))?;
    for child_ends in children_ends {
        let role = child_ends.role();
        let Some(spec) = ROLES.iter().find(|s| s.role == role) else {
            return Err(format!("internal: no row for the {role:?} role"));
        };
        let fds = child_ends.into_fds();
        let id = users.of(role);
        let (log_r, log_w) = log_pipe().map_err(|e| format!("log pipe: {e}"))?;
        let child = spawn_role(spec.name, &fds, id, root, log_w, test_hooks(first))
            .map_err(|e| format!("starting {} role: {e}", spec.name))?;
        let pid = Pid::from_raw(child.id() as i32);
        // The Child handle is let go: the supervisor reaps by pid.
        drop(child);
        tracing::debug!(role = spec.name, pid = %pid, uid = %id.uid, "started");
        children.push(Spawned {
            name: spec.name,
            pid,
            reaped: false,
        });
        if let Err(e) = crate::logging::relay(spec.name, log_r) {
            tracing::error!("no log relay for the {} role: {e}", spec.name);
        }
        // Our copies of the child's ends close here.
    }
    Ok(ends)
}

/// A role's log pipe: the read end for the parent, the write end (not
/// blocking: a role whose log is not read loses lines rather than
/// stalling) for the role's standard error.
fn log_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(
        std::os::fd::AsRawFd::as_raw_fd(&w),
        FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )?;
    Ok((r, w))
}

/// Gives the transport the tun device and the UDP sockets (duplicates:
/// the parent keeps its own, so the interface, its routes and the port
/// outlive any role).
fn hand_device(
    ends: &ParentEnds,
    tun: &OwnedFd,
    udp: &net::UdpPair,
) -> Result<(), proto::channel::ChannelError> {
    let mut fds: Vec<BorrowedFd<'_>> = vec![tun.as_fd()];
    fds.extend([&udp.v4, &udp.v6].into_iter().flatten().map(|s| s.as_fd()));
    let msg = ParentToTransport::Start {
        v4: udp.v4.is_some(),
        v6: udp.v6.is_some(),
    };
    ends.transport.ask_with_fds(&msg, &fds).map(drop)
}

fn set_answer_timeouts(ends: &ParentEnds) {
    for c in [
        ends.transport.as_fd(),
        ends.handshake.as_fd(),
        ends.crypto.as_fd(),
    ] {
        let _ = nix::sys::socket::setsockopt(
            &c,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(CHILD_ANSWER_TIMEOUT.as_secs() as i64, 0),
        );
    }
}

fn start(
    opts: Options,
    config: Option<Config>,
    reload: ReloadSource,
    users: RoleUsers,
    ready: &mut Option<std::fs::File>,
) -> Result<ExitCode, String> {
    let ifname = opts.ifname.clone();
    let root = privdrop::empty_root().map_err(|e| e.to_string())?;
    let tun = net::create_tun(&ifname).map_err(|e| format!("creating tun {ifname}: {e}"))?;
    let (listen_port, fwmark) = config.as_ref().map_or((0, 0), |c| {
        (
            c.interface.listen_port.unwrap_or(0),
            c.interface.fwmark.unwrap_or(0),
        )
    });
    let udp = net::bind_udp(listen_port, fwmark)
        .map_err(|e| format!("binding UDP port {listen_port}: {e}"))?;
    let (listener, sock_path) =
        net::bind_control(&ifname).map_err(|e| format!("control socket: {e}"))?;

    // Signals arrive through a signalfd; block them before any thread or
    // child exists (children unblock in pre_exec).
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("sigprocmask: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    // The key that wraps the secrets kept for a restart lives in this
    // session's keyring (see crate::keyring); without one, secrets given
    // inline cannot be restored and a dead crypto role ends the daemon.
    if let Err(e) = crate::keyring::join_private_session() {
        tracing::warn!("no session keyring of our own: {e}");
    }
    let mut children = Vec::new();
    let ends = match spawn_generation(&users, &root, &mut children, true) {
        Ok(ends) => ends,
        Err(e) => {
            shutdown(&mut children, &ifname, &sock_path);
            return Err(e);
        }
    };

    // The filter first: installing it without no_new_privs needs
    // CAP_SYS_ADMIN, which restrict_parent takes away.
    // Filters stack and a restarted role inherits this one: it also
    // allows what every role's own list allows.
    let lists = [
        roles::PARENT_SYSCALLS,
        roles::COMMON_SYSCALLS,
        roles::CRYPTO_SYSCALLS,
        roles::HANDSHAKE_SYSCALLS,
        roles::TRANSPORT_SYSCALLS,
    ];
    if let Err(e) = crate::confine::install_parent(&lists) {
        shutdown(&mut children, &ifname, &sock_path);
        return Err(format!("parent seccomp filter: {e}"));
    }
    if let Err(e) = privdrop::restrict_parent() {
        shutdown(&mut children, &ifname, &sock_path);
        return Err(format!("restricting parent privileges: {e}"));
    }

    if let Err(e) = hand_device(&ends, &tun, &udp) {
        shutdown(&mut children, &ifname, &sock_path);
        return Err(format!("handing the device to the transport: {e}"));
    }
    set_answer_timeouts(&ends);
    let listen_port = udp.port;
    let mut control = Control::new(ends, udp, fwmark);
    control.set_reload_source(reload);
    if let Some(cfg) = config {
        let pending = Journal::from_config(&cfg);
        let r = control.apply_pending(wg_config::config::setconf_ops(cfg, false), pending);
        let private_key_file = control.journal.private_key_file();
        control.set_private_key_file(private_key_file);
        if let Err(errno) = r {
            shutdown(&mut children, &ifname, &sock_path);
            return Err(format!(
                "applying configuration: {}",
                std::io::Error::from_raw_os_error(errno)
            ));
        }
    }
    if let Some(why) = control.journal.lost() {
        tracing::info!("a role that dies will end the daemon: {why}");
    }
    tracing::info!(interface = %ifname, port = listen_port, "started");
    report_ready(ready, "ok");
    let mut sup = Supervisor {
        children,
        control: Arc::new(Mutex::new(control)),
        tun,
        users,
        root,
        ifname: ifname.clone(),
        sock_path,
        restarts: VecDeque::new(),
        priority: crate::sched::TransportPriority::from_env(),
    };
    Ok(sup.supervise(listener, sfd))
}

/// What the parent watches and what it needs to restart the roles.
struct Supervisor {
    children: Vec<Spawned>,
    control: Arc<Mutex<Control>>,
    /// The tun device, held for the interface's whole life: a dead
    /// transport must not take the interface and its routes with it.
    tun: OwnedFd,
    users: RoleUsers,
    root: PathBuf,
    ifname: String,
    sock_path: PathBuf,
    /// When the roles were restarted, within the last [`RESTART_WINDOW`].
    restarts: VecDeque<Instant>,
    /// The transport's scheduling, raised while it is busy.
    priority: crate::sched::TransportPriority,
}

/// Why a restart of the roles failed.
enum Restart {
    Again(String),
    Never(String),
}

/// What happened to a role.
enum Fault {
    Exited(i32),
    Signaled(Signal),
    Stopped(Signal),
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::Exited(c) => format!("exited with status {c}"),
            Fault::Signaled(Signal::SIGSYS) => {
                "was killed by SIGSYS (seccomp: a system call outside its allowlist)".into()
            }
            Fault::Signaled(s) => format!("was killed by signal {}", s.as_str()),
            Fault::Stopped(s) => format!("was stopped by signal {}", s.as_str()),
        }
    }
}

/// Asks the kernel about one child without blocking, stops included.
fn poll_child(c: &mut Spawned) -> Option<Fault> {
    if c.reaped {
        return None;
    }
    match waitpid(c.pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::WUNTRACED)) {
        Ok(WaitStatus::Exited(_, code)) => {
            c.reaped = true;
            Some(Fault::Exited(code))
        }
        Ok(WaitStatus::Signaled(_, sig, _)) => {
            c.reaped = true;
            Some(Fault::Signaled(sig))
        }
        Ok(WaitStatus::Stopped(_, sig)) => Some(Fault::Stopped(sig)),
        Ok(_) => None,
        Err(Errno::ECHILD) => {
            c.reaped = true;
            Some(Fault::Exited(-1))
        }
        Err(_) => None,
    }
}

/// Ends roles that did not exit on hang-up: SIGKILL (the parent keeps
/// CAP_KILL for this; it also ends a stopped role) and reap.
fn end_children(children: &mut [Spawned], grace: Duration) {
    let deadline = Instant::now() + grace;
    loop {
        for c in children.iter_mut() {
            if !c.reaped {
                let _ = waitpid(c.pid, Some(WaitPidFlag::WNOHANG))
                    .map(|s| c.reaped = !matches!(s, WaitStatus::StillAlive))
                    .map_err(|e| c.reaped = e == Errno::ECHILD);
            }
        }
        if children.iter().all(|c| c.reaped) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for c in children.iter_mut().filter(|c| !c.reaped) {
        // Not reaped, so the pid is still this child's.
        let _ = nix::sys::signal::kill(c.pid, Signal::SIGKILL);
        let _ = waitpid(c.pid, None);
        c.reaped = true;
    }
}

impl Supervisor {
    fn supervise(&mut self, listener: UnixListener, sfd: SignalFd) -> ExitCode {
        let clients = Arc::new(AtomicUsize::new(0));
        let _ = listener.set_nonblocking(true);
        loop {
            let (sig_ready, accept_ready) = {
                let mut fds = [
                    PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                    PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                ];
                let wait = self
                    .priority
                    .interval()
                    .map_or(500u16, |d| d.as_millis().min(500) as u16);
                match poll(&mut fds, PollTimeout::from(wait)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        tracing::error!("poll: {e}");
                        self.stop();
                        return ExitCode::from(1);
                    }
                }
                let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            let mut first_pid = None;
            if sig_ready {
                while let Ok(Some(info)) = sfd.read_signal() {
                    let sig = Signal::try_from(info.ssi_signo as i32).ok();
                    if sig == Some(Signal::SIGCHLD) {
                        // Look at the child that signalled first: when one
                        // role dies the others may follow, and the log must
                        // name the first.
                        first_pid.get_or_insert(info.ssi_pid);
                    }
                    if sig == Some(Signal::SIGHUP) {
                        // Reload, as `systemctl reload` and the rc
                        // script's `reload` ask; the outcome is logged
                        // either way, and a bad file changes nothing.
                        tracing::info!(interface = %self.ifname, "reloading on SIGHUP");
                        match self.control.lock() {
                            Ok(mut c) => {
                                let _ = c.reload();
                            }
                            Err(_) => {
                                tracing::error!("reload refused: the control state is poisoned")
                            }
                        }
                        continue;
                    }
                    if matches!(sig, Some(Signal::SIGTERM | Signal::SIGINT)) {
                        tracing::info!(interface = %self.ifname, "stopping on signal");
                        self.stop();
                        return ExitCode::SUCCESS;
                    }
                }
            }
            if let Some(pid) = first_pid {
                if let Some(i) = self
                    .children
                    .iter()
                    .position(|c| c.pid.as_raw() as u32 == pid)
                {
                    self.children.swap(0, i);
                }
            }
            // Every role that changed, then the cause among them: a role
            // killed (by the kernel's seccomp, by an operator) or stopped
            // is what happened; the others exit because its channels
            // closed, and SIGCHLDs coalesce, so which one signalled first
            // does not tell.
            let mut faults: Vec<(&'static str, Fault)> = self
                .children
                .iter_mut()
                .filter_map(|c| poll_child(c).map(|f| (c.name, f)))
                .collect();
            // Only exits so far: the role that was killed may not be
            // reapable yet (its sockets close, and a sibling sees that and
            // exits, before its own exit completes). Give it a moment.
            let settle = Instant::now() + KILLED_SIBLING_SETTLE;
            while !faults.is_empty()
                && faults.iter().all(|(_, f)| matches!(f, Fault::Exited(_)))
                && Instant::now() < settle
            {
                std::thread::sleep(Duration::from_millis(10));
                faults.extend(
                    self.children
                        .iter_mut()
                        .filter_map(|c| poll_child(c).map(|f| (c.name, f))),
                );
            }
            let cause = faults
                .iter()
                .position(|(_, f)| !matches!(f, Fault::Exited(_)))
                .unwrap_or(0);
            let fault = (!faults.is_empty()).then(|| faults.swap_remove(cause));
            let fault = match fault {
                Some(("transport", Fault::Exited(code))) if code == i32::from(EXIT_TUN_GONE) => {
                    tracing::info!(interface = %self.ifname, "interface was removed, stopping");
                    self.stop();
                    return ExitCode::SUCCESS;
                }
                Some((name, f)) => Some(format!("{name} role {}", f.describe())),
                None if self.control.lock().map_or(true, |c| c.is_broken()) => {
                    Some("a role stopped answering".into())
                }
                None => None,
            };
            if let Some(what) = fault {
                if let Err(code) = self.recover(&what) {
                    return code;
                }
                continue;
            }
            if !self.sock_path.exists() {
                tracing::info!("control socket removed, stopping");
                self.stop();
                return ExitCode::SUCCESS;
            }
            if accept_ready {
                self.accept(&listener, &clients);
            }
            if let Some(t) = self
                .children
                .iter()
                .find(|c| c.name == "transport" && !c.reaped)
            {
                self.priority.tick(t.pid, Instant::now());
            }
        }
    }

    fn accept(&self, listener: &UnixListener, clients: &Arc<AtomicUsize>) {
        while let Ok((stream, _)) = listener.accept() {
            if clients.load(Ordering::SeqCst) >= MAX_CLIENTS {
                drop(stream);
                continue;
            }
            clients.fetch_add(1, Ordering::SeqCst);
            let control = Arc::clone(&self.control);
            let clients = Arc::clone(clients);
            let spawned = std::thread::Builder::new()
                .name("uapi".into())
                .spawn(move || {
                    serve_client(stream, &control);
                    clients.fetch_sub(1, Ordering::SeqCst);
                });
            if spawned.is_err() {
                tracing::error!("could not start a control client thread");
            }
        }
    }

    /// A role died or stopped: restart all three with the journal's
    /// configuration, or fail closed (`Err` with the exit code) when that
    /// cannot be done.
    fn recover(&mut self, what: &str) -> Result<(), ExitCode> {
        let lost = match self.control.lock() {
            Ok(c) => c.journal.lost().map(str::to_owned),
            Err(_) => Some("the control state is poisoned".into()),
        };
        if let Some(why) = lost {
            tracing::error!(
                "{what}; cannot restore the configuration: {why}; failing closed: removing {}",
                self.ifname
            );
            self.stop();
            return Err(ExitCode::from(1));
        }
        let mut what = what.to_string();
        // A restart that fails (a new role dies while it is configured,
        // say) is tried again, each attempt counted against the budget.
        loop {
            let now = Instant::now();
            while self
                .restarts
                .front()
                .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
            {
                self.restarts.pop_front();
            }
            if self.restarts.len() >= RESTART_BUDGET {
                tracing::error!(
                    "{what}; restart budget spent ({RESTART_BUDGET} restarts in {}s); failing closed: removing {}",
                    RESTART_WINDOW.as_secs(),
                    self.ifname
                );
                self.stop();
                return Err(ExitCode::from(1));
            }
            self.restarts.push_back(now);
            tracing::error!(
                "{what}; the interface stays and drops its traffic while the roles restart ({} of {RESTART_BUDGET} in {}s)",
                self.restarts.len(),
                RESTART_WINDOW.as_secs()
            );
            match self.restart() {
                Ok(()) => {
                    tracing::info!(interface = %self.ifname, "roles restarted");
                    return Ok(());
                }
                Err(Restart::Again(e)) => what = format!("restarting the roles failed: {e}"),
                Err(Restart::Never(e)) => {
                    tracing::error!("{e}; failing closed: removing {}", self.ifname);
                    self.stop();
                    return Err(ExitCode::from(1));
                }
            }
        }
    }

    /// Ends the roles and starts them anew with the journal's
    /// configuration. `Err(Restart::Again)` is worth another attempt (a
    /// new role died while it was configured); `Err(Restart::Never)` is
    /// not (the configuration cannot be rebuilt: a key file is gone).
    fn restart(&mut self) -> Result<(), Restart> {
        let mut control = self
            .control
            .lock()
            .map_err(|_| Restart::Never("control state poisoned".to_string()))?;
        // The key files are read first: if one cannot be, no new role
        // could be configured, and none is started.
        let items = control
            .journal
            .replay()
            .map_err(|e| Restart::Never(format!("cannot restore the configuration: {e}")))?;
        control.hang_up();
        end_children(&mut self.children, ROLE_EXIT_GRACE);
        self.children.clear();
        let ends = spawn_generation(&self.users, &self.root, &mut self.children, false)
            .map_err(Restart::Again)?;
        hand_device(&ends, &self.tun, control.udp())
            .map_err(|e| Restart::Again(format!("handing the device to the transport: {e}")))?;
        set_answer_timeouts(&ends);
        control.reset(ends);
        control.apply_items(items).map_err(|errno| {
            Restart::Again(format!(
                "applying the configuration again: {}",
                std::io::Error::from_raw_os_error(errno)
            ))
        })?;
        let file = control.journal.private_key_file();
        control.set_private_key_file(file);
        Ok(())
    }

    /// Stops the daemon in order: hang up the roles' channels first, so
    /// each role sees its parent go and exits quietly, give them a moment,
    /// end the rest, then make sure the interface and the socket are gone.
    fn stop(&mut self) {
        // A client thread may hold the lock for one request; don't wait long.
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            match self.control.try_lock() {
                Ok(c) => {
                    c.hang_up();
                    break;
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => break,
            }
        }
        end_children(&mut self.children, ROLE_EXIT_GRACE);
        shutdown(&mut self.children, &self.ifname, &self.sock_path);
    }
}

/// Deletes the interface and the control socket, and ends any role left.
fn shutdown(children: &mut [Spawned], ifname: &str, sock_path: &Path) {
    if net::interface_exists(ifname) {
        if let Err(e) = net::delete_interface(ifname) {
            tracing::error!("deleting interface {ifname}: {e}");
        }
    }
    let _ = std::fs::remove_file(sock_path);
    end_children(children, Duration::ZERO);
}
