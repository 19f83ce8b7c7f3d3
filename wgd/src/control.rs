//! The parent's control plane: the state it configured, the fan-out of
//! `set` operations to the role that owns each piece of state (secrets to
//! crypto only, peers to handshake, endpoints and allowed IPs to
//! transport), the gathering of `get` answers, and the control socket's
//! per-client loop. Used by the parent only; every method runs with the
//! parent's lock held, one request at a time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::io::{BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use proto::channel::{Channel, ChannelError};
use proto::ipc::{
    AllowedIp, CryptoToParent, HandshakeToParent, ParentToCrypto, ParentToHandshake,
    ParentToTransport, TransportToParent,
};
use proto::keys::PublicKey;

use wg_config::cidr::masked;
use wg_config::config::Config;
use wg_config::uapi::{self, AllowedIpChange, Device, Peer, PeerOp, Psk, Request, SetOp, WgdStats};

use crate::net::{self, UdpPair};

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
    peers: BTreeSet<PublicKey>,
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
        let ip = masked(ip);
        self.forget(ip);
        let seq = self.next;
        self.next += 1;
        self.owner.insert(ip, (peer, seq));
        self.by_peer.entry(peer).or_default().insert(seq, ip);
    }

    fn remove(&mut self, peer: PublicKey, ip: AllowedIp) {
        let ip = masked(ip);
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
        match self.owner.get(&masked(ip)) {
            Some((p, seq)) if p == peer => *seq,
            _ => u64::MAX,
        }
    }
}

/// The parent's ends of the three channels and what it configured.
pub(crate) struct Control {
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
    pub(crate) fn apply(&mut self, ops: Vec<SetOp>) -> Result<(), Errno> {
        for op in ops {
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
                            if self.state.peers.contains(&own) {
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
                    // As in Linux and wireguard-go: every peer goes, with
                    // its sessions, handshake state and timers, and the
                    // sections that follow create peers anew. `wg setconf`
                    // is the command that starts over; `wg syncconf` and
                    // `wg addconf` are the ones that keep sessions.
                    self.crypto(ParentToCrypto::RemoveAllPeers)?;
                    self.handshake(ParentToHandshake::RemoveAllPeers)?;
                    self.transport(ParentToTransport::RemoveAllPeers)?;
                    self.state.peers.clear();
                    self.state.allowed.clear();
                }
                SetOp::Peer(p) => self.apply_peer(p)?,
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

    fn apply_peer(&mut self, p: PeerOp) -> Result<(), Errno> {
        let key = p.public_key;
        if Some(key) == self.state.public_key {
            return Ok(());
        }
        let exists = self.state.peers.contains(&key);
        if p.remove {
            if exists {
                self.remove_peer(key)?;
            }
            return Ok(());
        }
        if p.update_only && !exists {
            return Ok(());
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
            self.state.peers.insert(key);
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
                    AllowedIpChange::Add(ip) => wanted.insert(masked(ip)),
                    AllowedIpChange::Remove(ip) => wanted.remove(&masked(ip)),
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
            self.crypto(ParentToCrypto::SetPeer { peer: key, psk })?;
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
    fn get(&mut self) -> Result<Device, Errno> {
        let TransportToParent::Status {
            peers: tpeers,
            drops,
            ipc_to_handshake,
        } = self.transport(ParentToTransport::GetStatus)?
        else {
            return Err(libc::EIO);
        };
        let HandshakeToParent::Status {
            peers: hpeers,
            counters: handshake_drops,
        } = self.handshake(ParentToHandshake::GetStatus)?
        else {
            return Err(libc::EIO);
        };
        let mut peers = Vec::new();
        for key in &self.state.peers {
            let t = tpeers.iter().find(|t| t.peer == *key);
            let h = hpeers.iter().find(|h| h.peer == *key);
            let mut allowed_ips = t.map(|t| t.allowed_ips.clone()).unwrap_or_default();
            // In the order they were last inserted, as wireguard-go and
            // Linux print them (the transport reports them sorted).
            allowed_ips.sort_by_key(|ip| self.state.allowed.rank(key, *ip));
            peers.push(Peer {
                public_key: *key,
                // Secrets are write-only: not even whether there is one.
                preshared_key: Psk::Unknown,
                endpoint: t.and_then(|t| t.endpoint),
                last_handshake: h.and_then(|h| h.last_handshake),
                rx_bytes: t.map_or(0, |t| t.rx_bytes),
                tx_bytes: t.map_or(0, |t| t.tx_bytes),
                persistent_keepalive: h.and_then(|h| h.persistent_keepalive).unwrap_or(0),
                allowed_ips,
            });
        }
        Ok(Device {
            public_key: self.state.public_key,
            private_key_file: self.state.private_key_file.clone(),
            listen_port: self.state.listen_port,
            fwmark: self.state.fwmark,
            stats: Some(WgdStats {
                drops,
                handshake: handshake_drops,
                ipc_to_handshake,
            }),
            peers,
        })
    }
}

/// The configuration file as the operations a `set` request would carry.
pub(crate) fn config_ops(cfg: Config) -> Vec<SetOp> {
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
        // AutoAddress: each peer also owns its key-derived /128.
        let allowed: Vec<AllowedIpChange> = p
            .allowed_ips_with_auto(iface.auto_address)
            .into_iter()
            .map(AllowedIpChange::Add)
            .collect();
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

impl Control {
    pub(crate) fn new(
        crypto: Channel,
        handshake: Channel,
        transport: Channel,
        udp: UdpPair,
        fwmark: u32,
    ) -> Control {
        let listen_port = udp.port;
        Control {
            crypto,
            handshake,
            transport,
            udp,
            state: State {
                public_key: None,
                private_key_file: None,
                listen_port,
                configured_port: listen_port,
                fwmark,
                peers: BTreeSet::new(),
                allowed: AllowedOrder::default(),
            },
            broken: false,
        }
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
        for chan in [&self.crypto, &self.handshake, &self.transport] {
            let _ = nix::sys::socket::shutdown(chan.as_raw_fd(), nix::sys::socket::Shutdown::Both);
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
    let mut reader = BufReader::new(stream);
    loop {
        let reply = match uapi::read_request(&mut reader, &net::ifindex) {
            Ok(None) => return,
            Ok(Some(req @ (Request::Get | Request::WgdGet))) => match control.lock() {
                Ok(mut c) => match c.get() {
                    Ok(dev) if req == Request::Get => uapi::format_get(&dev),
                    Ok(dev) => uapi::format_wgd_get(&dev),
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
    use wg_config::cidr::aip;

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
