//! The privileged parent: start-up and supervision.
//!
//! Start-up, in order: read the configuration and resolve the role users
//! (errors go to the terminal, exit 1); daemonize unless in the
//! foreground; open the tun device, the UDP sockets and the control
//! socket; create the channels; re-execute this binary once per role (see
//! [`crate::roles`]); drop every capability but the two it still needs;
//! hand the tun device and sockets to the transport; apply the
//! configuration. Then it serves the control socket and watches its
//! children.
//!
//! It fails closed: if any child exits, the parent logs which and why,
//! deletes the interface, removes the control socket and exits non-zero.
//! The parent never reads a network packet.
//!
//! Beside it: [`crate::control`] (what a `set` or `get` does to the roles),
//! [`crate::spawn`] (re-executing a role), [`crate::daemon`] (going to the
//! background).

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use proto::ipc::ParentToTransport;
use wg_config::config::Config;

use crate::control::{config_ops, serve_client, Control};
use crate::daemon::{daemonize, report_ready};
use crate::net;
use crate::privdrop::{self, RoleUsers};
use crate::roles::{self, UserKind, EXIT_TUN_GONE, ROLES};
use crate::spawn::{spawn_role, Spawned};

/// Command-line options of the daemon.
#[derive(Debug, Clone)]
pub struct Options {
    pub ifname: String,
    pub foreground: bool,
    pub config: Option<PathBuf>,
    pub user: Option<String>,
    pub crypto_user: Option<String>,
    pub allow_nobody: bool,
}

/// How long the parent waits for a child's answer before it declares the
/// child dead.
const CHILD_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// Control clients served at once; more wait in the listen backlog.
const MAX_CLIENTS: usize = 256;

/// Runs the daemon. Returns the process exit code.
pub fn run(opts: Options) -> ExitCode {
    let config = match &opts.config {
        Some(path) => match wg_config::config::parse_file(path) {
            Ok(c) => Some(c),
            Err(e) => {
                say!("{e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let users = match privdrop::resolve_users(
        opts.user.as_deref(),
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
    match start(opts, config, users, &mut ready_pipe) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e}");
            report_ready(&mut ready_pipe, &e);
            ExitCode::from(1)
        }
    }
}

fn start(
    opts: Options,
    config: Option<Config>,
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

    let (ends, children_ends) = roles::channels().map_err(|e| format!("socketpair: {e}"))?;
    let mut children = Vec::new();
    for child_ends in children_ends {
        let role = child_ends.role();
        let Some(spec) = ROLES.iter().find(|s| s.role == role) else {
            return Err(format!("internal: no row for the {role:?} role"));
        };
        let fds = child_ends.into_fds();
        let id = match spec.user {
            UserKind::Net => &users.net,
            UserKind::Crypto => &users.crypto,
        };
        let child = spawn_role(spec.name, &fds, id, &root)
            .map_err(|e| format!("starting {} role: {e}", spec.name))?;
        tracing::debug!(role = spec.name, pid = child.id(), uid = %id.uid, "started");
        children.push(Spawned {
            name: spec.name,
            child,
        });
        // Our copies of the child's ends close here.
    }

    if let Err(e) = privdrop::restrict_parent() {
        shutdown(&mut children, &ifname, &sock_path);
        return Err(format!("restricting parent privileges: {e}"));
    }

    // The transport gets the tun device and the sockets; we keep only
    // the sockets (for SO_MARK) and close the tun, so the interface lives
    // exactly as long as the transport holds it.
    {
        let mut fds: Vec<BorrowedFd<'_>> = vec![tun.as_fd()];
        fds.extend([&udp.v4, &udp.v6].into_iter().flatten().map(|s| s.as_fd()));
        let msg = ParentToTransport::Start {
            v4: udp.v4.is_some(),
            v6: udp.v6.is_some(),
        };
        if let Err(e) = ends.transport.ask_with_fds(&msg, &fds) {
            shutdown(&mut children, &ifname, &sock_path);
            return Err(format!("handing the device to the transport: {e}"));
        }
    }
    drop(tun);

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
    let listen_port = udp.port;
    let private_key_file = config
        .as_ref()
        .and_then(|c| c.interface.private_key.as_ref())
        .and_then(|k| k.file.clone());
    let control = Arc::new(Mutex::new(Control::new(ends, udp, fwmark)));
    if let Some(cfg) = config {
        let ops = config_ops(cfg);
        let r = match control.lock() {
            Ok(mut c) => {
                let r = c.apply(ops);
                c.set_private_key_file(private_key_file);
                r
            }
            Err(_) => Err(libc::EIO),
        };
        if let Err(errno) = r {
            shutdown(&mut children, &ifname, &sock_path);
            return Err(format!(
                "applying configuration: {}",
                std::io::Error::from_raw_os_error(errno)
            ));
        }
    }
    tracing::info!(interface = %ifname, port = listen_port, "started");
    report_ready(ready, "ok");
    Ok(supervise(
        children, listener, sfd, control, &ifname, &sock_path,
    ))
}

/// Kills nothing it cannot: the parent has no CAP_KILL over the children's
/// uids, so it closes their channels (they exit on hang-up) and deletes
/// the interface itself.
/// Stops the daemon in order: hang up the roles' channels first, so each
/// role sees its parent go and exits quietly (the transport closing the
/// tun device takes the interface with it), give them a moment, then
/// make sure the interface and the socket are gone.
fn stop(
    children: &mut [Spawned],
    ifname: &str,
    sock_path: &std::path::Path,
    control: &Mutex<Control>,
) {
    // A client thread may hold the lock for one request; don't wait long.
    let deadline = std::time::Instant::now() + Duration::from_millis(500);
    loop {
        match control.try_lock() {
            Ok(c) => {
                c.hang_up();
                break;
            }
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => break,
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while children
        .iter_mut()
        .any(|c| matches!(c.child.try_wait(), Ok(None)))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    shutdown(children, ifname, sock_path);
}

fn shutdown(children: &mut [Spawned], ifname: &str, sock_path: &std::path::Path) {
    if net::interface_exists(ifname) {
        if let Err(e) = net::delete_interface(ifname) {
            tracing::error!("deleting interface {ifname}: {e}");
        }
    }
    let _ = std::fs::remove_file(sock_path);
    for c in children.iter_mut() {
        // Try anyway; it works when the parent still has the privilege.
        let _ = c.child.kill();
    }
}

fn describe(status: std::process::ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!(
            "killed by signal {}",
            Signal::try_from(s).map_or_else(|_| s.to_string(), |sig| sig.as_str().to_string())
        ),
        _ => "ended".into(),
    }
}

fn supervise(
    mut children: Vec<Spawned>,
    listener: UnixListener,
    sfd: SignalFd,
    control: Arc<Mutex<Control>>,
    ifname: &str,
    sock_path: &std::path::Path,
) -> ExitCode {
    let clients = Arc::new(AtomicUsize::new(0));
    let _ = listener.set_nonblocking(true);
    let mut first_exit: Option<u32> = None;
    loop {
        let (sig_ready, accept_ready) = {
            let mut fds = [
                PollFd::new(sfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::from(500u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("poll: {e}");
                    stop(&mut children, ifname, sock_path, &control);
                    return ExitCode::from(1);
                }
            }
            let ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if sig_ready {
            while let Ok(Some(info)) = sfd.read_signal() {
                let sig = Signal::try_from(info.ssi_signo as i32).ok();
                if sig == Some(Signal::SIGCHLD) {
                    // Look at the child that signalled first: when one role
                    // dies the others follow, and the log must name the
                    // first.
                    first_exit.get_or_insert(info.ssi_pid);
                }
                if matches!(sig, Some(Signal::SIGTERM | Signal::SIGINT | Signal::SIGHUP)) {
                    tracing::info!(interface = %ifname, "stopping on signal");
                    stop(&mut children, ifname, sock_path, &control);
                    return ExitCode::SUCCESS;
                }
            }
        }
        // Any child that ended, for whatever reason, ends the interface.
        if let Some(pid) = first_exit {
            if let Some(i) = children.iter().position(|c| c.child.id() == pid) {
                children.swap(0, i);
            }
        }
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                let name = c.name;
                if name == "transport" && status.code() == Some(i32::from(EXIT_TUN_GONE)) {
                    tracing::info!(interface = %ifname, "interface was removed, stopping");
                    stop(&mut children, ifname, sock_path, &control);
                    return ExitCode::SUCCESS;
                }
                tracing::error!(
                    "{name} role {}; failing closed: removing {ifname}",
                    describe(status)
                );
                stop(&mut children, ifname, sock_path, &control);
                return ExitCode::from(1);
            }
        }
        if control.lock().map_or(true, |c| c.is_broken()) {
            tracing::error!("a role stopped answering; failing closed: removing {ifname}");
            stop(&mut children, ifname, sock_path, &control);
            return ExitCode::from(1);
        }
        if !sock_path.exists() {
            tracing::info!("control socket removed, stopping");
            stop(&mut children, ifname, sock_path, &control);
            return ExitCode::SUCCESS;
        }
        if accept_ready {
            while let Ok((stream, _)) = listener.accept() {
                if clients.load(Ordering::SeqCst) >= MAX_CLIENTS {
                    drop(stream);
                    continue;
                }
                clients.fetch_add(1, Ordering::SeqCst);
                let control = Arc::clone(&control);
                let clients = Arc::clone(&clients);
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
    }
}
