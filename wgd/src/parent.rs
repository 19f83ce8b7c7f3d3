//! The privileged parent: start-up, configuration, supervision, control.
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use proto::channel::{Channel, ChannelError};
use proto::ipc::{
    AllowedIp, CryptoToParent, HandshakeToParent, ParentToCrypto, ParentToHandshake,
    ParentToTransport, TransportToParent,
};
use proto::keys::PublicKey;

use crate::config::Config;
use crate::net::{self, UdpPair};
use crate::privdrop::{self, RoleUsers};
use crate::roles::{Link, UserKind, EXIT_TUN_GONE, FIRST_CHANNEL_FD, ROLES};
use crate::uapi::{self, AllowedIpChange, DeviceInfo, PeerInfo, PeerOp, Request, SetOp, WgdExtra};

/// Writes one line to stderr, ignoring failure: a closed terminal must
/// not turn a clean error exit into a panic, as `eprintln!` would.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

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
/// A control client that sends nothing for this long is dropped.
const CLIENT_IDLE: Duration = Duration::from_secs(10);

/// Errors of the protocol operations, as errno values for the userspace
/// API.
type Errno = i32;

struct PeerState {
    psk: bool,
}

/// The parent's view of the configuration. Secrets are not here: they
/// went to the crypto role and the parent's copies were zeroized.
struct State {
    public_key: Option<PublicKey>,
    private_key_file: Option<PathBuf>,
    listen_port: u16,
    configured_port: u16,
    fwmark: u32,
    peers: BTreeMap<PublicKey, PeerState>,
    allowed: AllowedOrder,
}

/// Which peer owns each allowed-IP prefix, and when it was last inserted.
///
/// The transport reports a peer's prefixes sorted, but wireguard-go and
/// Linux report them in the order they were last inserted (inserting a
/// prefix again, even for the same peer, moves it to the end), so that
/// `wg showconf` gives a configuration back in the order it was written.
/// The parent makes every change to the transport's table, so it keeps
/// this record beside it with the table's semantics: an insert moves the
/// prefix to its new peer, a removal takes only a prefix the peer owns.
/// Prefixes are masked, as the table stores them. The record also lets
/// `replace_allowed_ips` send only the prefixes that change.
#[derive(Default)]
struct AllowedOrder {
    owner: HashMap<AllowedIp, (PublicKey, u64)>,
    by_peer: HashMap<PublicKey, BTreeMap<u64, AllowedIp>>,
    next: u64,
}

impl AllowedOrder {
    fn insert(&mut self, peer: PublicKey, ip: AllowedIp) {
        let ip = uapi::masked(ip);
        self.forget(ip);
        let seq = self.next;
        self.next += 1;
        self.owner.insert(ip, (peer, seq));
        self.by_peer.entry(peer).or_default().insert(seq, ip);
    }

    fn remove(&mut self, peer: PublicKey, ip: AllowedIp) {
        let ip = uapi::masked(ip);
        if self.owner.get(&ip).is_some_and(|(p, _)| *p == peer) {
            self.forget(ip);
        }
    }

    fn forget(&mut self, ip: AllowedIp) {
        if let Some((peer, seq)) = self.owner.remove(&ip) {
            if let Some(m) = self.by_peer.get_mut(&peer) {
                m.remove(&seq);
                if m.is_empty() {
                    self.by_peer.remove(&peer);
                }
            }
        }
    }

    fn remove_peer(&mut self, peer: &PublicKey) {
        for ip in self.by_peer.remove(peer).unwrap_or_default().into_values() {
            self.owner.remove(&ip);
        }
    }

    fn clear(&mut self) {
        self.owner.clear();
        self.by_peer.clear();
    }

    /// The peer's prefixes, oldest insertion first.
    fn of_peer(&self, peer: &PublicKey) -> Vec<AllowedIp> {
        self.by_peer
            .get(peer)
            .map(|m| m.values().copied().collect())
            .unwrap_or_default()
    }

    /// Sort key of a prefix the transport reports for `peer`: unknown ones
    /// (there should be none) go last.
    fn rank(&self, peer: &PublicKey, ip: AllowedIp) -> u64 {
        match self.owner.get(&uapi::masked(ip)) {
            Some((p, seq)) if p == peer => *seq,
            _ => u64::MAX,
        }
    }
}

/// The parent's ends of the three channels and what it configured.
struct Control {
    crypto: Channel,
    handshake: Channel,
    transport: Channel,
    udp: UdpPair,
    state: State,
    /// A child stopped answering: the supervisor shuts everything down.
    broken: bool,
}

fn ask<Q: serde::Serialize, A: serde::de::DeserializeOwned>(
    chan: &Channel,
    q: &Q,
) -> Result<A, ChannelError> {
    chan.send(q)?;
    chan.recv::<A>()
}

impl Control {
    fn crypto(&mut self, q: ParentToCrypto) -> Result<CryptoToParent, Errno> {
        let r = ask(&self.crypto, &q);
        drop(q);
        r.map_err(|e| self.child_failed("crypto", e))
    }

    fn handshake(&mut self, q: ParentToHandshake) -> Result<HandshakeToParent, Errno> {
        ask(&self.handshake, &q).map_err(|e| self.child_failed("handshake", e))
    }

    fn transport(&mut self, q: ParentToTransport) -> Result<TransportToParent, Errno> {
        ask(&self.transport, &q).map_err(|e| self.child_failed("transport", e))
    }

    fn child_failed(&mut self, who: &str, e: ChannelError) -> Errno {
        tracing::error!("{who} role did not answer: {e}");
        self.broken = true;
        libc::EIO
    }

    /// Applies a list of operations in order, as one `set` request.
    fn apply(&mut self, ops: Vec<SetOp>) -> Result<(), Errno> {
        // Peers that a `replace_peers=true` kept because a later section
        // of this request configures them again (see `SetOp::ReplacePeers`
        // below): until that section is applied they count as removed.
        let mut fresh = HashSet::new();
        let r = self.apply_ops(ops, &mut fresh);
        // One still pending here was never configured again after all
        // (say, a section with the interface's own key, which is ignored,
        // or the request failed half-way): remove it, as the replace asked.
        for key in fresh {
            if self.state.peers.contains_key(&key) {
                let removed = self.remove_peer(key);
                if r.is_ok() {
                    removed?;
                }
            }
        }
        r
    }

    fn apply_ops(&mut self, ops: Vec<SetOp>, fresh: &mut HashSet<PublicKey>) -> Result<(), Errno> {
        let mut ops = ops.into_iter();
        while let Some(op) = ops.next() {
            match op {
                SetOp::PrivateKey(key) => {
                    self.state.private_key_file = None;
                    let CryptoToParent::PublicKey(public) =
                        self.crypto(ParentToCrypto::SetPrivateKey(key))?
                    else {
                        return Err(libc::EIO);
                    };
                    if public != self.state.public_key {
                        self.state.public_key = public;
                        self.handshake(ParentToHandshake::SetInterface { public_key: public })?;
                        // A peer with our own public key is meaningless
                        // (wireguard-go and Linux drop it too).
                        if let Some(own) = public {
                            if self.state.peers.contains_key(&own) {
                                self.remove_peer(own)?;
                            }
                        }
                    }
                }
                SetOp::ListenPort(port) => self.set_listen_port(port)?,
                SetOp::Fwmark(mark) => {
                    if mark != self.state.fwmark {
                        for s in [&self.udp.v4, &self.udp.v6].into_iter().flatten() {
                            net::set_fwmark(s, mark)
                                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
                        }
                        self.state.fwmark = mark;
                    }
                }
                SetOp::ReplacePeers => {
                    // wireguard-go and Linux remove every peer here and
                    // create anew those the request goes on to configure,
                    // which resets their sessions: `wg setconf` sends
                    // `replace_peers=true` every time, so re-applying an
                    // unchanged configuration would interrupt every tunnel.
                    // wgd keeps a peer that a later section of this request
                    // configures (one without `remove` or `update_only`)
                    // with its session, and applies that section as to a
                    // new peer: what it leaves unset takes a new peer's
                    // default (see `apply_peer`). All other peers go.
                    let again: HashSet<PublicKey> = ops
                        .as_slice()
                        .iter()
                        .filter_map(|op| match op {
                            SetOp::Peer(p) if !p.remove && !p.update_only => Some(p.public_key),
                            _ => None,
                        })
                        .collect();
                    let (keep, gone): (Vec<PublicKey>, Vec<PublicKey>) =
                        self.state.peers.keys().partition(|k| again.contains(k));
                    if keep.is_empty() {
                        self.crypto(ParentToCrypto::RemoveAllPeers)?;
                        self.handshake(ParentToHandshake::RemoveAllPeers)?;
                        self.transport(ParentToTransport::RemoveAllPeers)?;
                        self.state.peers.clear();
                        self.state.allowed.clear();
                    } else {
                        for key in gone {
                            self.remove_peer(key)?;
                        }
                    }
                    *fresh = keep.into_iter().collect();
                }
                SetOp::Peer(p) => self.apply_peer(p, fresh)?,
            }
        }
        Ok(())
    }

    fn set_listen_port(&mut self, port: u16) -> Result<(), Errno> {
        // `wg setconf` resends the port every time: an unchanged value
        // must not re-open the sockets. Port 0 means "any", which the
        // current sockets already are.
        if port == self.state.listen_port || (port == 0 && self.state.configured_port == 0) {
            return Ok(());
        }
        let pair = net::bind_udp(port, self.state.fwmark)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EADDRINUSE))?;
        let fds: Vec<BorrowedFd<'_>> = [&pair.v4, &pair.v6]
            .into_iter()
            .flatten()
            .map(|s| s.as_fd())
            .collect();
        let msg = ParentToTransport::NewSockets {
            v4: pair.v4.is_some(),
            v6: pair.v6.is_some(),
        };
        let sent = self
            .transport
            .send_with_fds(&msg, &fds)
            .and_then(|()| self.transport.recv::<TransportToParent>());
        drop(fds);
        sent.map_err(|e| self.child_failed("transport", e))?;
        self.state.listen_port = pair.port;
        self.state.configured_port = port;
        self.udp = pair;
        Ok(())
    }

    fn remove_peer(&mut self, key: PublicKey) -> Result<(), Errno> {
        self.transport(ParentToTransport::RemovePeer(key))?;
        self.handshake(ParentToHandshake::RemovePeer(key))?;
        self.crypto(ParentToCrypto::RemovePeer(key))?;
        self.state.peers.remove(&key);
        self.state.allowed.remove_peer(&key);
        Ok(())
    }

    fn apply_peer(&mut self, mut p: PeerOp, fresh: &mut HashSet<PublicKey>) -> Result<(), Errno> {
        let key = p.public_key;
        if Some(key) == self.state.public_key {
            return Ok(());
        }
        let exists = self.state.peers.contains_key(&key);
        // Kept across `replace_peers`, but not configured again yet: for
        // this request it does not exist.
        let was_replaced = fresh.contains(&key);
        if p.remove {
            if exists {
                fresh.remove(&key);
                self.remove_peer(key)?;
            }
            return Ok(());
        }
        if p.update_only && (!exists || was_replaced) {
            return Ok(());
        }
        if was_replaced {
            fresh.remove(&key);
            // As a new peer: no PSK, no persistent keepalive, only the
            // allowed IPs of this section unless it says otherwise. The
            // endpoint is the exception: it cannot be unset, and the
            // session kept goes on using it (a section with `endpoint=`
            // sets it as usual).
            p.preshared_key.get_or_insert(None);
            p.persistent_keepalive.get_or_insert(0);
            p.replace_allowed_ips = true;
        }
        if !exists {
            self.crypto(ParentToCrypto::SetPeer {
                peer: key,
                psk: None,
            })?;
            self.transport(ParentToTransport::AddPeer { peer: key })?;
            self.handshake(ParentToHandshake::SetPeer {
                peer: key,
                persistent_keepalive: None,
            })?;
            self.state.peers.insert(key, PeerState { psk: false });
        }
        // The data plane first (endpoint, routes), then the handshake
        // role: turning on persistent keepalive sends a packet at once.
        if let Some(endpoint) = p.endpoint {
            self.transport(ParentToTransport::SetEndpoint {
                peer: key,
                endpoint,
            })?;
        }
        if p.replace_allowed_ips {
            // Remove only what the new list does not have, rather than
            // clearing and adding everything back: the prefixes that stay
            // stay routed throughout (`wg syncconf` and `wg setconf`
            // resend every peer's whole list, changed or not).
            let mut wanted = HashSet::new();
            for change in &p.allowed_ips {
                match *change {
                    AllowedIpChange::Add(ip) => wanted.insert(uapi::masked(ip)),
                    AllowedIpChange::Remove(ip) => wanted.remove(&uapi::masked(ip)),
                };
            }
            for ip in self.state.allowed.of_peer(&key) {
                if !wanted.contains(&ip) {
                    self.transport(ParentToTransport::RemoveAllowedIp { peer: key, ip })?;
                    self.state.allowed.remove(key, ip);
                }
            }
        }
        for change in p.allowed_ips {
            match change {
                AllowedIpChange::Add(ip) => {
                    self.transport(ParentToTransport::AddAllowedIp { peer: key, ip })?;
                    self.state.allowed.insert(key, ip);
                }
                AllowedIpChange::Remove(ip) => {
                    self.transport(ParentToTransport::RemoveAllowedIp { peer: key, ip })?;
                    self.state.allowed.remove(key, ip);
                }
            }
        }
        if let Some(psk) = p.preshared_key {
            let has = psk.as_ref().is_some_and(|k| !k.is_zero());
            self.crypto(ParentToCrypto::SetPeer { peer: key, psk })?;
            if let Some(s) = self.state.peers.get_mut(&key) {
                s.psk = has;
            }
        }
        if let Some(interval) = p.persistent_keepalive {
            self.handshake(ParentToHandshake::SetPeer {
                peer: key,
                persistent_keepalive: Some(interval).filter(|&i| i > 0),
            })?;
        }
        Ok(())
    }

    /// Everything `get` reports, gathered from the roles that own it, and
    /// what `wgd_get` adds.
    fn get(&mut self) -> Result<(DeviceInfo, WgdExtra), Errno> {
        let TransportToParent::Status {
            peers: tpeers,
            drops,
            ipc_to_handshake,
        } = self.transport(ParentToTransport::GetStatus)?
        else {
            return Err(libc::EIO);
        };
        let HandshakeToParent::Status(hpeers) = self.handshake(ParentToHandshake::GetStatus)?
        else {
            return Err(libc::EIO);
        };
        let mut peers = Vec::new();
        for key in self.state.peers.keys() {
            let t = tpeers.iter().find(|t| t.peer == *key);
            let h = hpeers.iter().find(|h| h.peer == *key);
            let mut allowed_ips = t.map(|t| t.allowed_ips.clone()).unwrap_or_default();
            // In the order they were last inserted, as wireguard-go and
            // Linux print them (the transport reports them sorted).
            allowed_ips.sort_by_key(|ip| self.state.allowed.rank(key, *ip));
            peers.push(PeerInfo {
                public_key: *key,
                endpoint: t.and_then(|t| t.endpoint),
                last_handshake: h.and_then(|h| h.last_handshake),
                rx_bytes: t.map_or(0, |t| t.rx_bytes),
                tx_bytes: t.map_or(0, |t| t.tx_bytes),
                persistent_keepalive: h.and_then(|h| h.persistent_keepalive),
                allowed_ips,
            });
        }
        let info = DeviceInfo {
            listen_port: self.state.listen_port,
            fwmark: self.state.fwmark,
            peers,
        };
        let extra = WgdExtra {
            public_key: self.state.public_key,
            private_key_file: self.state.private_key_file.clone(),
            drops,
            ipc_to_handshake,
        };
        Ok((info, extra))
    }
}

/// The configuration file as the operations a `set` request would carry.
fn config_ops(cfg: Config) -> Vec<SetOp> {
    let mut ops = Vec::new();
    let iface = cfg.interface;
    if let Some(k) = iface.private_key {
        ops.push(SetOp::PrivateKey(Some(k.key)));
    }
    if let Some(port) = iface.listen_port {
        ops.push(SetOp::ListenPort(port));
    }
    if let Some(mark) = iface.fwmark {
        ops.push(SetOp::Fwmark(mark));
    }
    for p in cfg.peers {
        let mut allowed: Vec<AllowedIpChange> = p
            .allowed_ips
            .into_iter()
            .map(AllowedIpChange::Add)
            .collect();
        if iface.auto_address {
            // AutoAddress: each peer also owns its key-derived /128.
            allowed.push(AllowedIpChange::Add(proto::ipc::AllowedIp {
                addr: std::net::IpAddr::V6(p.public_key.derived_address()),
                cidr: 128,
            }));
        }
        ops.push(SetOp::Peer(PeerOp {
            public_key: p.public_key,
            remove: false,
            update_only: false,
            preshared_key: p.preshared_key.map(|k| Some(k.key)),
            endpoint: p.endpoint.map(|e| e.addr),
            persistent_keepalive: p.persistent_keepalive,
            replace_allowed_ips: false,
            allowed_ips: allowed,
        }));
    }
    ops
}

struct Spawned {
    name: &'static str,
    child: Child,
}

/// Re-executes this binary as one role, with its channels at fds 3.. and
/// all signals unblocked.
fn spawn_role(
    name: &'static str,
    channels: &[OwnedFd],
    id: &privdrop::Identity,
    root: &std::path::Path,
) -> std::io::Result<Child> {
    let raw: Vec<i32> = channels.iter().map(|c| c.as_raw_fd()).collect();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg("--role")
        .arg(name)
        .arg("--uid")
        .arg(id.uid.to_string())
        .arg("--gid")
        .arg(id.gid.to_string())
        .arg("--user")
        .arg(&id.name)
        .arg("--root")
        .arg(root)
        .env_clear()
        .stdin(Stdio::null());
    for var in ["LOG_LEVEL", "WGD_TEST_REKEY_AFTER_SECS"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    // SAFETY: the closure runs in the forked child before exec and calls
    // only async-signal-safe functions (dup, dup2, sigprocmask).
    unsafe {
        cmd.pre_exec(move || {
            // Move every channel out of the 3.. range first, so that
            // placing one cannot clobber another still to be placed.
            // The temporary copies are close-on-exec, so only the final
            // ones at 3.. survive the exec.
            let mut high = Vec::with_capacity(raw.len());
            for &fd in &raw {
                let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
                if h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                high.push(h);
            }
            for (i, &h) in high.iter().enumerate() {
                // dup2 clears close-on-exec on the new descriptor.
                if libc::dup2(h, FIRST_CHANNEL_FD + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            // Whatever else this process inherited from whoever started
            // wgd (a descriptor left open on a key file, say) must not
            // reach an unprivileged role: mark every other descriptor
            // close-on-exec.
            let first_free = FIRST_CHANNEL_FD as libc::c_uint + raw.len() as libc::c_uint;
            let r = libc::syscall(
                libc::SYS_close_range,
                first_free,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if r != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let empty = SigSet::empty();
            empty
                .thread_set_mask()
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            Ok(())
        });
    }
    cmd.spawn()
}

/// Forks into the background. The original process waits until the
/// daemon reports that start-up finished (or why it failed) and exits
/// accordingly, so `wgd wg0 && ip link set wg0 up` works.
fn daemonize() -> Result<Option<std::fs::File>, String> {
    let (r, w) = nix::unistd::pipe().map_err(|e| format!("pipe: {e}"))?;
    // SAFETY: no threads exist yet at this point of start-up.
    match unsafe { nix::unistd::fork() } {
        Err(e) => Err(format!("fork: {e}")),
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(w);
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut msg);
            if msg == "ok" {
                std::process::exit(0);
            }
            if msg.is_empty() {
                msg = "daemon exited during start-up".into();
            }
            say!("wgd: {msg}");
            std::process::exit(1);
        }
        Ok(nix::unistd::ForkResult::Child) => {
            drop(r);
            let _ = nix::unistd::setsid();
            detach_from_caller(w.as_raw_fd());
            Ok(Some(std::fs::File::from(w)))
        }
    }
}

/// The daemon lets go of whatever its caller gave it, as wireguard-go's
/// does: standard input, and standard output and error unless `LOG_LEVEL`
/// asks for logs, become /dev/null, and every other inherited descriptor
/// but the start-up pipe is closed. Otherwise `out=$(wg-quick up wg0)`
/// would wait for the daemon to exit.
fn detach_from_caller(keep: i32) {
    let keep_logs = std::env::var("LOG_LEVEL").is_ok_and(|l| l != "silent" && l != "off");
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let targets: &[i32] = if keep_logs { &[0] } else { &[0, 1, 2] };
        for &fd in targets {
            // SAFETY: dup2 onto a standard descriptor of this process.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    // SAFETY: plain close_range(2) calls on descriptor numbers; nothing
    // in this single-threaded process holds the closed ones.
    unsafe {
        if keep > 3 {
            libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32);
        }
        libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32);
    }
}

fn report_ready(pipe: &mut Option<std::fs::File>, msg: &str) {
    if let Some(mut p) = pipe.take() {
        let _ = p.write_all(msg.as_bytes());
    }
}

/// Runs the daemon. Returns the process exit code.
pub fn run(opts: Options) -> ExitCode {
    let config = match &opts.config {
        Some(path) => match crate::config::parse_file(path) {
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

    // The five channels of the DESIGN topology (no transport ↔ crypto).
    let pair = || Channel::pair().map_err(|e| format!("socketpair: {e}"));
    let (p_t, t_p) = pair()?;
    let (p_h, h_p) = pair()?;
    let (p_c, c_p) = pair()?;
    let (t_h, h_t) = pair()?;
    let (h_c, c_h) = pair()?;
    let mut ends: BTreeMap<(&str, Link), OwnedFd> = BTreeMap::new();
    ends.insert(("transport", Link::Parent), t_p.into_fd());
    ends.insert(("transport", Link::Handshake), t_h.into_fd());
    ends.insert(("handshake", Link::Parent), h_p.into_fd());
    ends.insert(("handshake", Link::Transport), h_t.into_fd());
    ends.insert(("handshake", Link::Crypto), h_c.into_fd());
    ends.insert(("crypto", Link::Parent), c_p.into_fd());
    ends.insert(("crypto", Link::Handshake), c_h.into_fd());

    let mut children = Vec::new();
    for spec in &ROLES {
        let fds: Vec<OwnedFd> = spec
            .channels
            .iter()
            .filter_map(|l| ends.remove(&(spec.name, *l)))
            .collect();
        if fds.len() != spec.channels.len() {
            return Err(format!("internal: channels of {} missing", spec.name));
        }
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
        let msg = ParentToTransport::NewSockets {
            v4: udp.v4.is_some(),
            v6: udp.v6.is_some(),
        };
        let r = p_t
            .send_with_fds(&msg, &fds)
            .and_then(|()| p_t.recv::<TransportToParent>());
        if let Err(e) = r {
            shutdown(&mut children, &ifname, &sock_path);
            return Err(format!("handing the device to the transport: {e}"));
        }
    }
    drop(tun);

    for c in [&p_t, &p_h, &p_c] {
        let _ = nix::sys::socket::setsockopt(
            c,
            nix::sys::socket::sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(CHILD_ANSWER_TIMEOUT.as_secs() as i64, 0),
        );
    }
    let listen_port = udp.port;
    let private_key_file = config
        .as_ref()
        .and_then(|c| c.interface.private_key.as_ref())
        .and_then(|k| k.file.clone());
    let control = Arc::new(Mutex::new(Control {
        crypto: p_c,
        handshake: p_h,
        transport: p_t,
        udp,
        state: State {
            public_key: None,
            private_key_file: None,
            listen_port,
            configured_port: listen_port,
            fwmark,
            peers: BTreeMap::new(),
            allowed: AllowedOrder::default(),
        },
        broken: false,
    }));
    if let Some(cfg) = config {
        let ops = config_ops(cfg);
        let r = match control.lock() {
            Ok(mut c) => {
                let r = c.apply(ops);
                c.state.private_key_file = private_key_file;
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
                for chan in [&c.crypto, &c.handshake, &c.transport] {
                    let _ = nix::sys::socket::shutdown(
                        chan.as_raw_fd(),
                        nix::sys::socket::Shutdown::Both,
                    );
                }
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
        if control.lock().map_or(true, |c| c.broken) {
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

/// Serves one control connection: any number of requests until EOF.
fn serve_client(stream: UnixStream, control: &Mutex<Control>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_IDLE));
    // A client that stops reading its replies must not hold a client slot
    // (and its thread) for ever: give up on a write after as long.
    let _ = stream.set_write_timeout(Some(CLIENT_IDLE));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let reply = match uapi::read_request(&mut reader) {
            Ok(None) => return,
            Ok(Some(req @ (Request::Get | Request::WgdGet))) => match control.lock() {
                Ok(mut c) => match c.get() {
                    Ok((info, _)) if req == Request::Get => uapi::format_get(&info),
                    Ok((info, extra)) => uapi::format_wgd_get(&info, &extra),
                    Err(errno) => uapi::format_errno(errno),
                },
                Err(_) => uapi::format_errno(libc::EIO),
            },
            Ok(Some(Request::Set(ops))) => {
                let r = match control.lock() {
                    Ok(mut c) => c.apply(ops),
                    Err(_) => Err(libc::EIO),
                };
                uapi::format_errno(r.err().unwrap_or(0))
            }
            Err(e) => {
                tracing::debug!("bad control request: {}", e.message);
                let _ = writer.write_all(uapi::format_errno(e.errno).as_bytes());
                return;
            }
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aip(s: &str, cidr: u8) -> AllowedIp {
        AllowedIp {
            addr: s.parse().unwrap(),
            cidr,
        }
    }

    #[test]
    fn allowed_order_follows_the_last_insertion() {
        let (a, b) = (PublicKey([1; 32]), PublicKey([2; 32]));
        let mut o = AllowedOrder::default();
        for ip in [
            aip("10.1.0.0", 16),
            aip("fd00::", 64),
            aip("10.1.2.3", 8), // masked to 10.0.0.0/8
            aip("192.168.1.0", 24),
            aip("10.1.0.0", 16), // again: moves to the end
            aip("10.1.0.0", 24),
        ] {
            o.insert(a, ip);
        }
        // Taken by another peer: gone from the first.
        o.insert(b, aip("10.1.0.0", 24));
        let want = vec![
            aip("fd00::", 64),
            aip("10.0.0.0", 8),
            aip("192.168.1.0", 24),
            aip("10.1.0.0", 16),
        ];
        assert_eq!(o.of_peer(&a), want);
        assert_eq!(o.of_peer(&b), vec![aip("10.1.0.0", 24)]);
        // The transport's sorted list comes out in that order.
        let mut reported = want.clone();
        reported.sort_by_key(|ip| (ip.addr, ip.cidr));
        reported.sort_by_key(|ip| o.rank(&a, *ip));
        assert_eq!(reported, want);
        assert_eq!(o.rank(&a, aip("10.1.0.0", 24)), u64::MAX);

        // A removal takes only a prefix the peer owns.
        o.remove(a, aip("10.1.0.0", 24));
        assert_eq!(o.of_peer(&b), vec![aip("10.1.0.0", 24)]);
        o.remove(a, aip("10.0.0.1", 8));
        assert_eq!(o.of_peer(&a).len(), 3);
        o.remove_peer(&a);
        assert!(o.of_peer(&a).is_empty());
        assert_eq!(o.rank(&b, aip("10.1.0.0", 24)), 6);
        o.clear();
        assert!(o.owner.is_empty() && o.by_peer.is_empty());
    }
}
