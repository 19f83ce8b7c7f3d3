//! The parent's control plane: the state it configured, the fan-out of
//! `set` operations to the role that owns each piece of state (secrets to
//! crypto only, peers to handshake, endpoints and allowed IPs to
//! transport), the gathering of `get` answers, and the control socket's
//! per-client loop, and the reload of the configuration file
//! ([`Control::reload`]: the parent's SIGHUP and the control socket's
//! `wgd_reload=1`, which `wgctl reload` sends). Used by the parent only;
//! every method runs with the parent's lock held, one request at a time.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use proto::batch::Batcher;
use proto::channel::{Channel, ChannelError};
use proto::ipc::{
    AllowedIp, Apply, CryptoOp, CryptoToParent, HandshakeOp, HandshakeStatus, HandshakeToParent,
    IpCursor, ParentToCrypto, ParentToHandshake, ParentToTransport, Secret, TransportOp,
    TransportStatus, TransportToParent, Wrapped, ALLOWED_IPS_CHUNK, STATUS_PAGE,
};
use proto::keys::PublicKey;

use wg_config::uapi::{self, AllowedIpChange, Device, Peer, PeerOp, Psk, Request, SetOp, WgdStats};
use wg_config::wipe::WipingReader;

use crate::net::{self, UdpPair};
use crate::roles::ParentEnds;

/// A control client that sends nothing (or reads nothing) for this long is
/// dropped.
pub(crate) const CLIENT_IDLE: Duration = Duration::from_secs(10);

/// Errors of the protocol operations, as errno values for the userspace
/// API.
type Errno = i32;

/// The parent's view of the configuration. Secrets are not here: they
/// went to the crypto role and the parent's copies were zeroized.
struct State {
    public_key: Option<PublicKey>,
    private_key_file: Option<PathBuf>,
    listen_port: u16,
    configured_port: u16,
    fwmark: u32,
    /// The configured peers, in key order (the order `get` lists them).
    /// Their allowed IPs are the transport's alone: it lists them for
    /// `get`, in the order they were inserted.
    peers: BTreeSet<PublicKey>,
}

/// One `set` request's changes on their way to the roles: each role's
/// share is cut into bounded batches ([`Batcher`]), sent as each fills,
/// and committed in all roles at the end, so a configuration of any size
/// costs a round trip per batch, not per change, and no role applies half
/// of it.
#[derive(Default)]
struct Txn {
    crypto: Batcher<CryptoOp>,
    handshake: Batcher<HandshakeOp>,
    transport: Batcher<TransportOp>,
    /// A role was sent part of this transaction already and must be told
    /// to commit even if nothing is left to send it.
    crypto_open: bool,
    handshake_open: bool,
    transport_open: bool,
}

/// Consecutive allowed-IP changes of one peer gathered into chunk-sized
/// operations, in order (a run of additions, then a run of removals...).
struct IpChunk {
    peer: PublicKey,
    add: bool,
    ips: Vec<AllowedIp>,
}

impl IpChunk {
    fn new(peer: PublicKey) -> Self {
        IpChunk {
            peer,
            add: true,
            ips: Vec::new(),
        }
    }

    /// Adds one change; returns a finished operation when the run changes
    /// kind or the chunk is full.
    fn push(&mut self, add: bool, ip: AllowedIp) -> Option<TransportOp> {
        let done = if add != self.add || self.ips.len() >= ALLOWED_IPS_CHUNK {
            self.finish()
        } else {
            None
        };
        self.add = add;
        self.ips.push(ip);
        done
    }

    fn finish(&mut self) -> Option<TransportOp> {
        if self.ips.is_empty() {
            return None;
        }
        let ips = std::mem::take(&mut self.ips);
        Some(if self.add {
            TransportOp::AddAllowedIps {
                peer: self.peer,
                ips,
            }
        } else {
            TransportOp::RemoveAllowedIps {
                peer: self.peer,
                ips,
            }
        })
    }
}

/// What [`Control::apply_items`] applies: a control request's operation,
/// or a secret the crypto role wrapped earlier, given back on a restart
/// (see [`crate::journal`]).
pub(crate) enum Item {
    Op(SetOp),
    PrivateKey(Wrapped),
    /// A PSK for a peer, if the peer is configured.
    Psk(PublicKey, Wrapped),
}

/// What the crypto role answered for a secret sent in the clear: that
/// secret wrapped, or `None` if it has no wrapping key. In the order the
/// secrets were sent; the journal keeps them.
pub(crate) enum Wrap {
    PrivateKey(Option<Wrapped>),
    Psk(PublicKey, Option<Wrapped>),
}

/// The parent's ends of the three channels and what it configured.
pub(crate) struct Control {
    crypto: Channel<ParentToCrypto, CryptoToParent>,
    handshake: Channel<ParentToHandshake, HandshakeToParent>,
    transport: Channel<ParentToTransport, TransportToParent>,
    udp: UdpPair,
    state: State,
    /// A child stopped answering, or answered out of step: the supervisor
    /// shuts everything down.
    broken: bool,
    /// What was applied, without secrets, for restarting the roles.
    pub(crate) journal: crate::journal::Journal,
    /// The crypto role's wrapped secrets of the request being applied.
    wraps: Vec<Wrap>,
    /// After a restart: the public key the new crypto role must answer
    /// for the wrapped private key it is given back.
    restored_public: Option<Option<PublicKey>>,
    /// The configuration file a reload reads again.
    reload: ReloadSource,
}

/// The public key of `k`: computed here, for a moment, so the parent can
/// hold the key holder's answer to it; the stack it used is wiped, since
/// the computation's temporaries held the key.
fn public_of(k: &proto::keys::SecretKey) -> PublicKey {
    let p = wg_crypto::public_key(k);
    scrub_stack();
    p
}

/// Overwrites the stack below the caller's frame, where a callee that
/// handled a secret left its temporaries.
#[inline(never)]
fn scrub_stack() {
    let mut buf = [0u8; 32 * 1024];
    zeroize::Zeroize::zeroize(&mut buf[..]);
    std::hint::black_box(&buf);
}

/// What a reload reads: the file wgd was started with (`-c FILE`), and
/// what the endpoint host names in it resolved to at start-up. The parent
/// cannot resolve a name later: its seccomp filter has no `connect` and
/// it cannot load the resolver's libraries, so a reload reuses these
/// answers and refuses a name it has not seen (restart wgd for that).
#[derive(Debug, Default)]
pub(crate) struct ReloadSource {
    pub(crate) path: Option<PathBuf>,
    pub(crate) resolved: HashMap<(String, u16), SocketAddr>,
}

/// Reads the configuration file at start-up, resolving endpoint host
/// names with the system resolver and remembering each answer for the
/// reloads ([`ReloadSource`]).
pub(crate) fn parse_at_start(
    path: &Path,
) -> Result<(wg_config::config::Config, ReloadSource), wg_config::config::ConfigError> {
    let resolved = RefCell::new(HashMap::new());
    let resolve = |host: &str, port: u16| -> std::io::Result<SocketAddr> {
        let addr = (host, port).to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, "no addresses found")
        })?;
        resolved.borrow_mut().insert((host.to_string(), port), addr);
        Ok(addr)
    };
    let cfg = wg_config::config::parse_file_with(path, &resolve)?;
    // Absolute, so that a reload reads the same file whatever the working
    // directory is by then; symbolic links are followed at each reload,
    // so one that is pointed elsewhere is honoured.
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let source = ReloadSource {
        path: Some(path),
        resolved: resolved.into_inner(),
    };
    Ok((cfg, source))
}

/// Why a reload did not happen (or failed part way), for the log and for
/// `wgctl reload`: the configuration file's `FILE:LINE: message`, or what
/// went wrong applying it.
#[derive(Debug)]
pub(crate) struct ReloadError {
    pub(crate) message: String,
    pub(crate) errno: Errno,
}

/// What a reload changed, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ReloadSummary {
    pub(crate) added: usize,
    pub(crate) removed: usize,
    /// Peers kept whose allowed IPs, endpoint or keepalive changed. Not
    /// their PSKs: those are always sent again (secrets cannot be
    /// compared), and an unchanged one changes nothing.
    pub(crate) updated: usize,
    pub(crate) kept: usize,
    pub(crate) private_key: bool,
    pub(crate) listen_port: bool,
    pub(crate) fwmark: bool,
}

impl ReloadSummary {
    /// Counts what `ops` (a syncconf request against `current`) does.
    fn of(ops: &[SetOp], current: &BTreeSet<PublicKey>, wanted: usize) -> ReloadSummary {
        let mut sum = ReloadSummary::default();
        let mut touched = HashSet::new();
        for op in ops {
            match op {
                SetOp::PrivateKey(_) => sum.private_key = true,
                SetOp::ListenPort(_) => sum.listen_port = true,
                SetOp::Fwmark(_) => sum.fwmark = true,
                SetOp::ReplacePeers => {}
                SetOp::Peer(p) if p.remove => sum.removed += 1,
                SetOp::Peer(p) if !current.contains(&p.public_key) => sum.added += 1,
                SetOp::Peer(p) => {
                    if !p.allowed_ips.is_empty()
                        || p.endpoint.is_some()
                        || p.persistent_keepalive.is_some()
                    {
                        touched.insert(p.public_key);
                    }
                }
            }
        }
        sum.updated = touched.len();
        sum.kept = wanted.saturating_sub(sum.added);
        sum
    }
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} peers added, {} removed, {} kept ({} of them with new allowed IPs, endpoint or keepalive)",
            self.added, self.removed, self.kept, self.updated
        )?;
        for (changed, what) in [
            (self.private_key, "private key"),
            (self.listen_port, "listen port"),
            (self.fwmark, "fwmark"),
        ] {
            if changed {
                write!(f, ", new {what}")?;
            }
        }
        Ok(())
    }
}

impl Control {
    fn crypto(&mut self, q: ParentToCrypto) -> Result<CryptoToParent, Errno> {
        let r = self.crypto.ask(&q);
        drop(q);
        r.map_err(|e| self.child_failed("crypto", e))
    }

    fn handshake(&mut self, q: ParentToHandshake) -> Result<HandshakeToParent, Errno> {
        self.handshake
            .ask(&q)
            .map_err(|e| self.child_failed("handshake", e))
    }

    fn transport(&mut self, q: ParentToTransport) -> Result<TransportToParent, Errno> {
        self.transport
            .ask(&q)
            .map_err(|e| self.child_failed("transport", e))
    }

    fn child_failed(&mut self, who: &str, e: ChannelError) -> Errno {
        tracing::error!("{who} role did not answer: {e}");
        self.broken = true;
        libc::EIO
    }

    /// Applies a list of operations in order, as one `set` request: the
    /// roles' shares stream to them in bounded batches and are committed
    /// together at the end (see [`Txn`]).
    pub(crate) fn apply(&mut self, ops: Vec<SetOp>) -> Result<(), Errno> {
        self.apply_items(ops.into_iter().map(Item::Op))
    }

    /// [`Control::apply`] of operations and wrapped secrets (a restart).
    pub(crate) fn apply_items(
        &mut self,
        items: impl IntoIterator<Item = Item>,
    ) -> Result<(), Errno> {
        self.wraps.clear();
        let mut txn = Txn::default();
        for item in items {
            let op = match item {
                Item::Op(op) => op,
                Item::PrivateKey(w) => {
                    self.set_private_key(&mut txn, Some(Secret::Wrapped(w)))?;
                    continue;
                }
                Item::Psk(peer, w) => {
                    if self.state.peers.contains(&peer) {
                        let psk = Some(Secret::Wrapped(w));
                        self.queue_crypto(&mut txn, CryptoOp::SetPeer { peer, psk })?;
                    }
                    continue;
                }
            };
            match op {
                SetOp::PrivateKey(key) => self.set_private_key(&mut txn, key.map(Secret::Plain))?,
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
                    // As in Linux and wireguard-go: every peer goes, with
                    // its sessions, handshake state and timers, and the
                    // sections that follow create peers anew. `wg setconf`
                    // is the command that starts over; `wg syncconf` and
                    // `wg addconf` are the ones that keep sessions.
                    self.queue_crypto(&mut txn, CryptoOp::RemoveAllPeers)?;
                    self.queue_handshake(&mut txn, HandshakeOp::RemoveAllPeers)?;
                    self.queue_transport(&mut txn, TransportOp::RemoveAllPeers)?;
                    self.state.peers.clear();
                }
                SetOp::Peer(p) => self.apply_peer(&mut txn, p)?,
            }
        }
        self.commit(&mut txn)
    }

    fn set_private_key(&mut self, txn: &mut Txn, key: Option<Secret>) -> Result<(), Errno> {
        // The crypto role answers with the new public key, which the rest
        // of the request may depend on (a peer with our own key is
        // dropped): what came before is committed first.
        self.commit(txn)?;
        self.state.private_key_file = None;
        let plain = matches!(key, Some(Secret::Plain(_)));
        // What the key holder must answer: the public key of a key we
        // hold for the moment, or, for a wrapped one, the public key it
        // had before the restart. A key holder that answers anything else
        // is lying (issue 13: a hostile crypto role) and is not believed.
        let expected = match &key {
            Some(Secret::Plain(k)) if !k.is_zero() => Some(Some(public_of(k))),
            Some(Secret::Plain(_)) | None => Some(None),
            Some(Secret::Wrapped(_)) => self.restored_public.take(),
        };
        let CryptoToParent::PublicKey(public, wrapped) =
            self.crypto(ParentToCrypto::SetPrivateKey(key))?
        else {
            return Err(libc::EIO);
        };
        if expected.is_some_and(|e| e != public) {
            tracing::error!(
                "the crypto role answered a public key that is not its private key's: not believed"
            );
            self.broken = true;
            return Err(libc::EIO);
        }
        if plain {
            self.wraps.push(Wrap::PrivateKey(wrapped));
        }
        if public != self.state.public_key {
            self.state.public_key = public;
            self.queue_handshake(txn, HandshakeOp::SetInterface { public_key: public })?;
            // A peer with our own public key is meaningless (wireguard-go
            // and Linux drop it too).
            if let Some(own) = public {
                if self.state.peers.contains(&own) {
                    self.remove_peer(txn, own)?;
                }
            }
        }
        Ok(())
    }

    fn queue_crypto(&mut self, txn: &mut Txn, op: CryptoOp) -> Result<(), Errno> {
        if let Some(ops) = txn.crypto.push(op) {
            txn.crypto_open = true;
            self.send_crypto(ops, false)?;
        }
        Ok(())
    }

    fn queue_handshake(&mut self, txn: &mut Txn, op: HandshakeOp) -> Result<(), Errno> {
        if let Some(ops) = txn.handshake.push(op) {
            txn.handshake_open = true;
            self.send_handshake(ops, false)?;
        }
        Ok(())
    }

    fn queue_transport(&mut self, txn: &mut Txn, op: TransportOp) -> Result<(), Errno> {
        if let Some(ops) = txn.transport.push(op) {
            txn.transport_open = true;
            self.send_transport(ops, false)?;
        }
        Ok(())
    }

    fn send_crypto(&mut self, ops: Vec<CryptoOp>, commit: bool) -> Result<(), Errno> {
        match self.crypto(ParentToCrypto::Apply(Apply { ops, commit }))? {
            CryptoToParent::Done => Ok(()),
            CryptoToParent::WrappedPsks(w) => {
                self.wraps
                    .extend(w.into_iter().map(|(peer, w)| Wrap::Psk(peer, w)));
                Ok(())
            }
            _ => Err(libc::EIO),
        }
    }

    fn send_handshake(&mut self, ops: Vec<HandshakeOp>, commit: bool) -> Result<(), Errno> {
        match self.handshake(ParentToHandshake::Apply(Apply { ops, commit }))? {
            HandshakeToParent::Done => Ok(()),
            _ => Err(libc::EIO),
        }
    }

    fn send_transport(&mut self, ops: Vec<TransportOp>, commit: bool) -> Result<(), Errno> {
        match self.transport(ParentToTransport::Apply(Apply { ops, commit }))? {
            TransportToParent::Done => Ok(()),
            _ => Err(libc::EIO),
        }
    }

    /// Commits the transaction in each role that has a part in it: the key
    /// holder first (peers and PSKs), then the data plane (endpoints and
    /// routes), then the handshake role, whose new peers may send a
    /// persistent keepalive at once and need both.
    fn commit(&mut self, txn: &mut Txn) -> Result<(), Errno> {
        if std::mem::take(&mut txn.crypto_open) || !txn.crypto.is_empty() {
            let ops = txn.crypto.take();
            self.send_crypto(ops, true)?;
        }
        if std::mem::take(&mut txn.transport_open) || !txn.transport.is_empty() {
            let ops = txn.transport.take();
            self.send_transport(ops, true)?;
        }
        if std::mem::take(&mut txn.handshake_open) || !txn.handshake.is_empty() {
            let ops = txn.handshake.take();
            self.send_handshake(ops, true)?;
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
        let sent = self.transport.ask_with_fds(&msg, &fds);
        drop(fds);
        sent.map_err(|e| self.child_failed("transport", e))?;
        self.state.listen_port = pair.port;
        self.state.configured_port = port;
        self.udp = pair;
        Ok(())
    }

    fn remove_peer(&mut self, txn: &mut Txn, key: PublicKey) -> Result<(), Errno> {
        self.queue_transport(txn, TransportOp::RemovePeer(key))?;
        self.queue_handshake(txn, HandshakeOp::RemovePeer(key))?;
        self.queue_crypto(txn, CryptoOp::RemovePeer(key))?;
        self.state.peers.remove(&key);
        Ok(())
    }

    fn apply_peer(&mut self, txn: &mut Txn, p: PeerOp) -> Result<(), Errno> {
        let key = p.public_key;
        if Some(key) == self.state.public_key {
            return Ok(());
        }
        let exists = self.state.peers.contains(&key);
        if p.remove {
            if exists {
                self.remove_peer(txn, key)?;
            }
            return Ok(());
        }
        if p.update_only && !exists {
            return Ok(());
        }
        if !exists {
            self.queue_crypto(
                txn,
                CryptoOp::SetPeer {
                    peer: key,
                    psk: None,
                },
            )?;
            self.queue_transport(txn, TransportOp::AddPeer(key))?;
            self.queue_handshake(
                txn,
                HandshakeOp::SetPeer {
                    peer: key,
                    persistent_keepalive: None,
                },
            )?;
            self.state.peers.insert(key);
        }
        if let Some(endpoint) = p.endpoint {
            self.queue_transport(
                txn,
                TransportOp::SetEndpoint {
                    peer: key,
                    endpoint,
                },
            )?;
        }
        if p.replace_allowed_ips {
            // Cleared and filled again in one transaction, which the
            // transport applies between two packets: the prefixes that
            // stay are never unrouted, and the list comes out in the new
            // order, as wireguard-go's (remove all, insert each) does.
            self.queue_transport(txn, TransportOp::ClearAllowedIps(key))?;
        }
        let mut chunk = IpChunk::new(key);
        for change in p.allowed_ips {
            let (add, ip) = match change {
                AllowedIpChange::Add(ip) => (true, ip),
                AllowedIpChange::Remove(ip) => (false, ip),
            };
            if let Some(op) = chunk.push(add, ip) {
                self.queue_transport(txn, op)?;
            }
        }
        if let Some(op) = chunk.finish() {
            self.queue_transport(txn, op)?;
        }
        if let Some(psk) = p.preshared_key {
            let psk = psk.map(Secret::Plain);
            self.queue_crypto(txn, CryptoOp::SetPeer { peer: key, psk })?;
        }
        if let Some(interval) = p.persistent_keepalive {
            self.queue_handshake(
                txn,
                HandshakeOp::SetPeer {
                    peer: key,
                    persistent_keepalive: Some(interval).filter(|&i| i > 0),
                },
            )?;
        }
        Ok(())
    }

    /// Writes the reply to `get` (or, `extended`, to `wgd_get`) to `out`
    /// as it is gathered: the device's lines, then the peers a page of
    /// [`STATUS_PAGE`] at a time, each page asked of the data plane and
    /// the handshake role, then `errno=`. Nothing is built whole, so a
    /// reply of any size costs a page of memory. A role's failure ends the
    /// reply with its errno; a client that stops reading ends it early.
    fn write_get(&mut self, extended: bool, out: &mut dyn Write) -> std::io::Result<()> {
        let mut dev = Device {
            public_key: self.state.public_key,
            private_key_file: self.state.private_key_file.clone(),
            listen_port: self.state.listen_port,
            fwmark: self.state.fwmark,
            stats: None,
            peers: Vec::new(),
        };
        let mut text = String::new();
        if extended {
            match self.stats() {
                Ok(stats) => dev.stats = Some(stats),
                Err(errno) => return out.write_all(uapi::format_errno(errno).as_bytes()),
            }
            uapi::format_wgd_extra(&dev, &mut text);
        }
        uapi::format_get_device(&dev, &mut text);
        out.write_all(text.as_bytes())?;
        // A page of keys at a time, each page after the last key of the one
        // before, rather than a copy of every key up front.
        let mut after: Option<PublicKey> = None;
        loop {
            use std::ops::Bound::{Excluded, Unbounded};
            let from = after.map_or(Unbounded, Excluded);
            let page: Vec<PublicKey> = self
                .state
                .peers
                .range((from, Unbounded))
                .take(STATUS_PAGE)
                .copied()
                .collect();
            let Some(last) = page.last() else { break };
            after = Some(*last);
            let page = &page[..];
            let (tpeers, hpeers) = match self.status_page(page) {
                Ok(p) => p,
                Err(errno) => return out.write_all(uapi::format_errno(errno).as_bytes()),
            };
            for key in page {
                let t = tpeers.get(key);
                let h = hpeers.get(key);
                let peer = Peer {
                    public_key: *key,
                    // Secrets are write-only: not even whether there is one.
                    preshared_key: Psk::Unknown,
                    endpoint: t.and_then(|t| t.endpoint),
                    last_handshake: h.and_then(|h| h.last_handshake),
                    rx_bytes: t.map_or(0, |t| t.rx_bytes),
                    tx_bytes: t.map_or(0, |t| t.tx_bytes),
                    persistent_keepalive: h.and_then(|h| h.persistent_keepalive).unwrap_or(0),
                    allowed_ips: Vec::new(),
                };
                text.clear();
                uapi::format_get_peer_head(&peer, &mut text);
                let Some(t) = t else {
                    out.write_all(text.as_bytes())?;
                    continue;
                };
                for ip in &t.allowed_ips {
                    uapi::format_allowed_ip(*ip, &mut text);
                }
                // The rest of a long list, a chunk at a time.
                let mut more = t.more_ips;
                for _ in 0..MAX_IP_CHUNKS {
                    let Some(from) = more else { break };
                    if text.len() >= WRITE_CHUNK {
                        out.write_all(text.as_bytes())?;
                        text.clear();
                    }
                    let (ips, next) = match self.allowed_ips(*key, from) {
                        Ok(r) => r,
                        Err(errno) => {
                            out.write_all(text.as_bytes())?;
                            return out.write_all(uapi::format_errno(errno).as_bytes());
                        }
                    };
                    for ip in ips {
                        uapi::format_allowed_ip(ip, &mut text);
                    }
                    more = next;
                }
                out.write_all(text.as_bytes())?;
            }
        }
        out.write_all(uapi::format_errno(0).as_bytes())
    }

    /// A chunk of a peer's allowed IPs from the data plane.
    fn allowed_ips(
        &mut self,
        peer: PublicKey,
        from: IpCursor,
    ) -> Result<(Vec<AllowedIp>, Option<IpCursor>), Errno> {
        match self.transport(ParentToTransport::GetAllowedIps { peer, from })? {
            TransportToParent::AllowedIps { ips, more } => Ok((ips, more)),
            _ => Err(libc::EIO),
        }
    }

    /// The roles' counters, for `wgd_get`.
    fn stats(&mut self) -> Result<WgdStats, Errno> {
        let TransportToParent::Counters {
            drops,
            ipc_to_handshake,
        } = self.transport(ParentToTransport::GetCounters)?
        else {
            return Err(libc::EIO);
        };
        let HandshakeToParent::Counters(handshake) =
            self.handshake(ParentToHandshake::GetCounters)?
        else {
            return Err(libc::EIO);
        };
        Ok(WgdStats {
            drops,
            handshake,
            ipc_to_handshake,
        })
    }

    /// One page of status from the data plane and the handshake role.
    #[allow(clippy::type_complexity)]
    fn status_page(
        &mut self,
        page: &[PublicKey],
    ) -> Result<
        (
            HashMap<PublicKey, TransportStatus>,
            HashMap<PublicKey, HandshakeStatus>,
        ),
        Errno,
    > {
        let TransportToParent::Status(t) =
            self.transport(ParentToTransport::GetStatus(page.to_vec()))?
        else {
            return Err(libc::EIO);
        };
        let HandshakeToParent::Status(h) =
            self.handshake(ParentToHandshake::GetStatus(page.to_vec()))?
        else {
            return Err(libc::EIO);
        };
        Ok((
            t.into_iter().map(|s| (s.peer, s)).collect(),
            h.into_iter().map(|s| (s.peer, s)).collect(),
        ))
    }
}

impl Control {
    /// Reads the configuration file again and applies it as `wg syncconf`
    /// does (the parent's SIGHUP, `wgd_reload=1`): the running state is
    /// gathered from the roles, compared with the file
    /// ([`wg_config::config::syncconf_ops`]), and only the difference is
    /// sent, never `replace_peers`. Peers the file keeps keep their
    /// sessions; peers it adds come up and peers it drops go; a PSK and
    /// the private key take effect for the next handshake. A file that
    /// does not parse changes nothing. Logs the outcome either way.
    pub(crate) fn reload(&mut self) -> Result<ReloadSummary, ReloadError> {
        let r = self.reload_inner();
        match &r {
            Ok(sum) => tracing::info!("reloaded the configuration: {sum}"),
            Err(e) => tracing::error!(
                "reload refused: {}; the running configuration stays",
                e.message
            ),
        }
        r
    }

    fn reload_inner(&mut self) -> Result<ReloadSummary, ReloadError> {
        let Some(path) = self.reload.path.clone() else {
            return Err(ReloadError {
                message:
                    "wgd was started without a configuration file (-c FILE): nothing to reload"
                        .into(),
                errno: libc::ENOENT,
            });
        };
        let resolved = &self.reload.resolved;
        let resolve = |host: &str, port: u16| -> std::io::Result<SocketAddr> {
            resolved.get(&(host.to_string(), port)).copied().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "a host name not in the file at start-up (wgd resolves names only when it starts: write an address, or restart wgd)",
                )
            })
        };
        let cfg = wg_config::config::parse_file_with(&path, &resolve).map_err(|e| ReloadError {
            message: e.to_string(),
            errno: libc::EINVAL,
        })?;
        let fail = |what: &str, errno: Errno| ReloadError {
            message: format!(
                "{}: {what}: {}",
                path.display(),
                std::io::Error::from_raw_os_error(errno)
            ),
            errno,
        };
        let current = self
            .current_device()
            .map_err(|errno| fail("reading the running configuration", errno))?;
        let key_file = cfg.interface.private_key.as_ref().map(|k| k.file.clone());
        let wanted = cfg.peers.len();
        let peers = crate::journal::Journal::from_reload(&cfg);
        // Consumes the file's secrets: they go to the crypto role.
        let ops = wg_config::config::syncconf_ops(cfg, &current);
        let pending = peers.interface_first(&ops, key_file.clone().flatten());
        let summary = ReloadSummary::of(&ops, &self.state.peers, wanted);
        let applied = self.apply_pending(ops, pending);
        // Where the running key came from, as the file now says (an
        // unchanged key is not sent again, but may have moved between
        // inline and PrivateKeyFile).
        if let Some(file) = key_file {
            self.state.private_key_file = file;
        }
        applied.map_err(|errno| fail("applying it (the roles may hold part of it)", errno))?;
        Ok(summary)
    }

    /// The running configuration as a `get` would list it (secrets
    /// unknown), gathered a page at a time from the data plane and the
    /// handshake role: what a reload compares its file against.
    fn current_device(&mut self) -> Result<Device, Errno> {
        let keys: Vec<PublicKey> = self.state.peers.iter().copied().collect();
        let mut peers = Vec::with_capacity(keys.len());
        for page in keys.chunks(STATUS_PAGE) {
            let (tpeers, hpeers) = self.status_page(page)?;
            for key in page {
                let mut peer = Peer::new(*key);
                if let Some(h) = hpeers.get(key) {
                    peer.persistent_keepalive = h.persistent_keepalive.unwrap_or(0);
                }
                if let Some(t) = tpeers.get(key) {
                    peer.endpoint = t.endpoint;
                    peer.allowed_ips.extend_from_slice(&t.allowed_ips);
                    let mut more = t.more_ips;
                    for _ in 0..MAX_IP_CHUNKS {
                        let Some(from) = more else { break };
                        let (ips, next) = self.allowed_ips(*key, from)?;
                        peer.allowed_ips.extend(ips);
                        more = next;
                    }
                }
                peers.push(peer);
            }
        }
        Ok(Device {
            public_key: self.state.public_key,
            private_key_file: self.state.private_key_file.clone(),
            listen_port: self.state.listen_port,
            fwmark: self.state.fwmark,
            stats: None,
            peers,
        })
    }
}

/// Bytes of reply text gathered before a write to the client.
const WRITE_CHUNK: usize = 64 * 1024;

/// Chunks of one peer's allowed IPs a `get` asks for at most: far more
/// than a table could hold (2^32 / [`ALLOWED_IPS_CHUNK`]), a bound for the
/// loop should a transport keep answering with a cursor.
const MAX_IP_CHUNKS: usize = (u32::MAX as usize) / ALLOWED_IPS_CHUNK;

impl Control {
    pub(crate) fn new(ends: ParentEnds, udp: UdpPair, fwmark: u32) -> Control {
        let listen_port = udp.port;
        Control {
            crypto: ends.crypto,
            handshake: ends.handshake,
            transport: ends.transport,
            udp,
            state: State {
                public_key: None,
                private_key_file: None,
                listen_port,
                configured_port: listen_port,
                fwmark,
                peers: BTreeSet::new(),
            },
            broken: false,
            journal: crate::journal::Journal::default(),
            wraps: Vec::new(),
            restored_public: None,
            reload: ReloadSource::default(),
        }
    }

    /// Where a reload reads the configuration from (see [`ReloadSource`]).
    pub(crate) fn set_reload_source(&mut self, source: ReloadSource) {
        self.reload = source;
    }

    /// Applies a control client's `set` and records it in the journal.
    pub(crate) fn apply_recorded(&mut self, ops: Vec<SetOp>) -> Result<(), Errno> {
        let pending = crate::journal::Journal::prepare(&ops);
        self.apply_pending(ops, pending)
    }

    /// Applies `ops` and records them in the journal as `pending` says
    /// (made from the same operations before they were consumed).
    pub(crate) fn apply_pending(
        &mut self,
        ops: Vec<SetOp>,
        pending: crate::journal::Pending,
    ) -> Result<(), Errno> {
        let r = self.apply(ops);
        let wraps = std::mem::take(&mut self.wraps);
        self.journal.commit(pending, r.is_ok(), wraps);
        r
    }

    /// The UDP sockets the transport is to be given.
    pub(crate) fn udp(&self) -> &UdpPair {
        &self.udp
    }

    /// Takes new roles' channel ends after a restart: the roles hold
    /// nothing yet, so neither does the view of them (the sockets, their
    /// port and mark stay as they are).
    pub(crate) fn reset(&mut self, ends: ParentEnds) {
        self.crypto = ends.crypto;
        self.handshake = ends.handshake;
        self.transport = ends.transport;
        self.restored_public = Some(self.state.public_key.take());
        self.state.private_key_file = None;
        self.state.peers.clear();
        self.broken = false;
    }

    /// Where the private key came from, for `wgctl showconf`.
    pub(crate) fn set_private_key_file(&mut self, file: Option<PathBuf>) {
        self.state.private_key_file = file;
    }

    /// A role stopped answering: the supervisor must shut down.
    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    /// Hangs up all three channels, so each role sees its parent go.
    pub(crate) fn hang_up(&self) {
        for fd in [
            self.crypto.as_raw_fd(),
            self.handshake.as_raw_fd(),
            self.transport.as_raw_fd(),
        ] {
            let _ = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Both);
        }
    }
}

/// Serves one control connection: any number of requests until EOF.
pub(crate) fn serve_client(stream: UnixStream, control: &Mutex<Control>) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_IDLE));
    // A client that stops reading its replies must not hold a client slot
    // (and its thread) for ever: give up on a write after as long.
    let _ = stream.set_write_timeout(Some(CLIENT_IDLE));
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    // Requests may carry keys (`private_key=`, `preshared_key=`): this
    // reader wipes each byte as the parser consumes it, and its buffer
    // when the client goes, so the parent keeps no copy (a `BufReader`
    // would keep the text until overwritten, and free it unwiped).
    let mut reader = WipingReader::new(stream);
    loop {
        let reply = match uapi::read_request(&mut reader, &net::ifindex) {
            Ok(None) => return,
            Ok(Some(req @ (Request::Get | Request::WgdGet))) => {
                // Streamed to the client as it is gathered.
                let mut buffered = std::io::BufWriter::with_capacity(WRITE_CHUNK, &mut writer);
                let written = match control.lock() {
                    Ok(mut c) => c.write_get(req == Request::WgdGet, &mut buffered),
                    Err(_) => buffered.write_all(uapi::format_errno(libc::EIO).as_bytes()),
                }
                .and_then(|()| buffered.flush());
                if written.is_err() {
                    // Not dropped as it is: a `BufWriter` flushes what it
                    // holds on drop, which would wait out the write
                    // timeout a second time for a client that is gone.
                    let _ = buffered.into_parts();
                    return;
                }
                continue;
            }
            Ok(Some(Request::Set(ops))) => {
                let r = match control.lock() {
                    Ok(mut c) => c.apply_recorded(ops),
                    Err(_) => Err(libc::EIO),
                };
                uapi::format_errno(r.err().unwrap_or(0))
            }
            Ok(Some(Request::WgdReload)) => {
                let r = match control.lock() {
                    Ok(mut c) => c.reload().map(drop),
                    Err(_) => Err(ReloadError {
                        message: "the control state is poisoned".into(),
                        errno: libc::EIO,
                    }),
                };
                match r {
                    Ok(()) => uapi::format_errno(0),
                    // The operator sees why (`wgctl reload` prints it).
                    Err(e) => uapi::format_wgd_error(&e.message, e.errno),
                }
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
    use wg_config::cidr::aip;

    #[test]
    fn allowed_ip_changes_keep_their_order_in_chunks() {
        let peer = PublicKey([1; 32]);
        let mut c = IpChunk::new(peer);
        let mut ops = Vec::new();
        let changes = (0..ALLOWED_IPS_CHUNK + 2)
            .map(|i| (true, aip(&format!("10.0.{}.{}", i / 256, i % 256), 32)))
            .chain([(false, aip("10.9.0.0", 16)), (true, aip("fd00::", 64))]);
        let want: Vec<(bool, AllowedIp)> = changes.clone().collect();
        for (add, ip) in changes {
            ops.extend(c.push(add, ip));
        }
        ops.extend(c.finish());
        assert!(c.finish().is_none(), "finished once");
        let mut got = Vec::new();
        for op in &ops {
            match op {
                TransportOp::AddAllowedIps { peer: p, ips } => {
                    assert_eq!(*p, peer);
                    assert!(ips.len() <= ALLOWED_IPS_CHUNK);
                    got.extend(ips.iter().map(|ip| (true, *ip)));
                }
                TransportOp::RemoveAllowedIps { peer: p, ips } => {
                    assert_eq!(*p, peer);
                    got.extend(ips.iter().map(|ip| (false, *ip)));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, want);
        // A full chunk, the two left over, the removal, the last add.
        assert_eq!(ops.len(), 4);
    }

    #[test]
    fn reload_summary_counts_what_a_syncconf_request_does() {
        let current: BTreeSet<PublicKey> = [1u8, 2, 3].map(|n| PublicKey([n; 32])).into();
        let remove = |n: u8| {
            let mut p = PeerOp::new(PublicKey([n; 32]));
            p.remove = true;
            SetOp::Peer(p)
        };
        let touch = |n: u8| {
            let mut p = PeerOp::new(PublicKey([n; 32]));
            p.persistent_keepalive = Some(0);
            SetOp::Peer(p)
        };
        let psk_only = |n: u8| {
            let mut p = PeerOp::new(PublicKey([n; 32]));
            p.preshared_key = Some(None);
            SetOp::Peer(p)
        };
        // Peer 1 goes; peer 2 changes twice (shrink, then grow); peer 3
        // only has its PSK sent again; peer 4 is new; the file names 2, 3
        // and 4.
        let ops = [
            SetOp::ListenPort(7),
            remove(1),
            touch(2),
            touch(2),
            psk_only(3),
            touch(4),
        ];
        let sum = ReloadSummary::of(&ops, &current, 3);
        assert_eq!(
            sum,
            ReloadSummary {
                added: 1,
                removed: 1,
                updated: 1,
                kept: 2,
                private_key: false,
                listen_port: true,
                fwmark: false,
            }
        );
        assert_eq!(
            sum.to_string(),
            "1 peers added, 1 removed, 2 kept (1 of them with new allowed IPs, endpoint or keepalive), new listen port"
        );
    }
}
