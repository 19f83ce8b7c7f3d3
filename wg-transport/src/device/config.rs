//! The transport's peers and what the parent configures and asks about
//! them: adding and removing peers, applying a committed configuration
//! transaction, and answering status pages. Called only from the device
//! loop in the parent module, when the parent's channel has a request.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use proto::ipc::{
    AllowedIp, Endpoint, IpCursor, ParentToTransport, TransportOp, TransportStatus,
    TransportToParent, ALLOWED_IPS_CHUNK,
};
use proto::keys::PublicKey;

use super::{adopt_sockets, forget_index, Device, Peer, PeerId};
use crate::allowed_ips::AllowedIps;
use crate::keypair::KeypairSlots;

impl Device {
    // ------------------------------------------------------------ peers

    pub(super) fn peer_id(&self, key: &PublicKey) -> Option<PeerId> {
        self.by_key.get(key).copied()
    }

    pub(super) fn peer_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        self.peers.get_mut(id as usize).and_then(|p| p.as_mut())
    }

    pub(super) fn add_peer(&mut self, key: PublicKey) -> PeerId {
        if let Some(id) = self.peer_id(&key) {
            return id;
        }
        let peer = Peer {
            key,
            endpoint: None,
            slots: KeypairSlots::new(),
            staged: VecDeque::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            activity: 0,
            last_need_handshake: None,
        };
        let id = match self.free_ids.pop() {
            Some(free) => {
                if let Some(slot) = self.peers.get_mut(free as usize) {
                    *slot = Some(peer);
                }
                free
            }
            None => {
                self.peers.push(Some(peer));
                (self.peers.len() - 1) as PeerId
            }
        };
        self.by_key.insert(key, id);
        id
    }

    /// Forgets a peer: its prefixes, its sessions' indices (its own, not a
    /// scan of everyone's) and its slot, which the next new peer reuses.
    pub(super) fn remove_peer(&mut self, key: &PublicKey) {
        if let Some(id) = self.by_key.remove(key) {
            self.allowed.remove_peer(id);
            if let Some(mut p) = self.peers.get_mut(id as usize).and_then(Option::take) {
                for i in p.slots.clear() {
                    forget_index(&mut self.by_index, i, id);
                }
            }
            self.free_ids.push(id);
        }
    }

    pub(super) fn handle_parent(
        &mut self,
        msg: ParentToTransport,
        fds: Vec<OwnedFd>,
    ) -> TransportToParent {
        match msg {
            ParentToTransport::Apply(batch) => {
                // Buffered until the transaction commits, so the data
                // plane never runs with half of a `set` applied.
                self.uncommitted.extend(batch.ops);
                if batch.commit {
                    for op in std::mem::take(&mut self.uncommitted) {
                        self.apply(op);
                    }
                }
            }
            ParentToTransport::NewSockets { v4, v6 } => {
                match adopt_sockets(fds.into_iter(), v4, v6) {
                    Ok((s4, s6)) => {
                        self.udp4 = s4;
                        self.udp6 = s6;
                    }
                    // Keep serving on the old sockets.
                    Err(e) => tracing::error!("new sockets unusable: {e}"),
                }
            }
            // Only valid as the first message, which `receive_device` took.
            ParentToTransport::Start { .. } => tracing::error!("parent sent Start twice"),
            ParentToTransport::GetStatus(peers) => return self.status_of(&peers),
            ParentToTransport::GetAllowedIps { peer, from } => {
                let (ips, more) = match self.peer_id(&peer) {
                    Some(id) => self.allowed_ips_from(id, from.0, ALLOWED_IPS_CHUNK),
                    None => (Vec::new(), None),
                };
                return TransportToParent::AllowedIps { ips, more };
            }
            ParentToTransport::GetCounters => {
                return TransportToParent::Counters {
                    drops: self.stats.drops.clone(),
                    ipc_to_handshake: self.stats.ipc_to_handshake,
                }
            }
        }
        TransportToParent::Done
    }

    /// One committed configuration change.
    pub(super) fn apply(&mut self, op: TransportOp) {
        match op {
            TransportOp::AddPeer(peer) => {
                self.add_peer(peer);
            }
            TransportOp::RemovePeer(peer) => self.remove_peer(&peer),
            TransportOp::RemoveAllPeers => {
                // All at once rather than peer by peer: each removal also
                // walks the index table.
                self.peers.clear();
                self.free_ids.clear();
                self.by_key.clear();
                self.by_index.clear();
                self.active.clear();
                self.expiries.clear();
                self.allowed = AllowedIps::new();
            }
            TransportOp::SetEndpoint { peer, endpoint } => {
                // A configured endpoint has no remembered source, even if
                // it is the address we already had (as in Linux).
                if let Some(p) = self.peer_id(&peer).and_then(|id| self.peer_mut(id)) {
                    p.endpoint = Some(Endpoint::new(endpoint));
                }
            }
            TransportOp::AddAllowedIps { peer, ips } => {
                if let Some(id) = self.peer_id(&peer) {
                    for ip in ips {
                        if self.allowed.insert(ip.addr, ip.cidr, id).is_err() {
                            self.stats.drops.malformed += 1;
                        }
                    }
                }
            }
            TransportOp::RemoveAllowedIps { peer, ips } => {
                if let Some(id) = self.peer_id(&peer) {
                    for ip in ips {
                        self.allowed.remove(ip.addr, ip.cidr, id);
                    }
                }
            }
            TransportOp::ClearAllowedIps(peer) => {
                if let Some(id) = self.peer_id(&peer) {
                    self.allowed.remove_peer(id);
                }
            }
        }
    }

    /// One status page: these peers, in the order asked, with as many of
    /// their allowed IPs as one chunk holds in all.
    pub(super) fn status_of(&self, keys: &[PublicKey]) -> TransportToParent {
        let mut room = ALLOWED_IPS_CHUNK;
        let mut page = Vec::with_capacity(keys.len());
        for (id, p) in keys
            .iter()
            .filter_map(|k| self.peer_id(k))
            .filter_map(|id| Some((id, self.peers.get(id as usize)?.as_ref()?)))
        {
            let (ips, more) = self.allowed_ips_from(id, None, room);
            room -= ips.len();
            page.push(TransportStatus {
                peer: p.key,
                endpoint: p.endpoint.map(|e| e.addr),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                allowed_ips: ips,
                more_ips: more,
            });
        }
        TransportToParent::Status(page)
    }

    /// Up to `max` of a peer's allowed IPs from `from`, and the cursor of
    /// the rest.
    pub(super) fn allowed_ips_from(
        &self,
        id: PeerId,
        from: Option<u32>,
        max: usize,
    ) -> (Vec<AllowedIp>, Option<IpCursor>) {
        if max == 0 {
            // No room left in this page: all of it is still to come.
            return (Vec::new(), Some(IpCursor(from)));
        }
        let (ips, next) = self.allowed.entries_from(id, from, max);
        let ips = ips
            .into_iter()
            .map(|(addr, cidr)| AllowedIp { addr, cidr })
            .collect();
        (ips, next.map(|n| IpCursor(Some(n))))
    }
}
