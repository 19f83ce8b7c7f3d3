//! A configuration file as the `set` request that applies it: what
//! `wg setconf` / `wg addconf` / `wg syncconf` send, what `wgctl` sends,
//! what wgd applies when it reads its own file at start-up
//! ([`setconf_ops`]) and when it reloads it ([`syncconf_ops`]). Called by
//! wgctl and wgd's parent.

use std::collections::{HashMap, HashSet};

use proto::ipc::AllowedIp;

use super::Config;
use crate::cidr::masked;
use crate::keys::public_key;
use crate::uapi::{AllowedIpChange, Device, PeerOp, Psk, SetOp};

/// `setconf` (`replace`) or `addconf`: the whole file as one request.
pub fn setconf_ops(cfg: Config, replace: bool) -> Vec<SetOp> {
    let mut ops = Vec::new();
    let iface = cfg.interface;
    if let Some(k) = iface.private_key {
        ops.push(SetOp::PrivateKey(Some(k.key)));
    }
    if let Some(p) = iface.listen_port {
        ops.push(SetOp::ListenPort(p));
    }
    if let Some(m) = iface.fwmark {
        ops.push(SetOp::Fwmark(m));
    }
    if replace {
        ops.push(SetOp::ReplacePeers);
    }
    for p in cfg.peers {
        let mut op = PeerOp::new(p.public_key);
        op.allowed_ips = p
            .allowed_ips_with_auto(iface.auto_address)
            .into_iter()
            .map(AllowedIpChange::Add)
            .collect();
        op.replace_allowed_ips = true;
        op.preshared_key = p.preshared_key.map(|k| Some(k.key));
        op.endpoint = p.endpoint.map(|e| e.addr);
        op.persistent_keepalive = p.persistent_keepalive;
        ops.push(SetOp::Peer(op));
    }
    ops
}

/// `syncconf`: the request that turns `current` into what `cfg` says,
/// touching only what differs.
///
/// Removals come first (peers, then allowed IPs leaving a peer), then the
/// rest, so that a prefix moving from one peer to another is removed from
/// the first before the second gets it.
pub fn syncconf_ops(cfg: Config, current: &Device) -> Vec<SetOp> {
    let mut ops = Vec::new();
    let iface = cfg.interface;
    if let Some(k) = iface.private_key {
        // Write-only, but comparable through its public key.
        if current.public_key != Some(public_key(&k.key)) {
            ops.push(SetOp::PrivateKey(Some(k.key)));
        }
    }
    // Port 0 asks for any port, which the current one is.
    if let Some(port) = iface.listen_port.filter(|&p| p != 0) {
        if port != current.listen_port {
            ops.push(SetOp::ListenPort(port));
        }
    }
    if let Some(mark) = iface.fwmark {
        if mark != current.fwmark {
            ops.push(SetOp::Fwmark(mark));
        }
    }

    let wanted: HashSet<_> = cfg.peers.iter().map(|p| p.public_key).collect();
    for p in &current.peers {
        if !wanted.contains(&p.public_key) {
            let mut op = PeerOp::new(p.public_key);
            op.remove = true;
            ops.push(SetOp::Peer(op));
        }
    }

    let existing: HashMap<_, _> = current.peers.iter().map(|p| (p.public_key, p)).collect();
    let mut later = Vec::new();
    for p in cfg.peers {
        let ips = p.allowed_ips_with_auto(iface.auto_address);
        let Some(cur) = existing.get(&p.public_key) else {
            // A new peer: all of it.
            let mut op = PeerOp::new(p.public_key);
            op.allowed_ips = ips.into_iter().map(AllowedIpChange::Add).collect();
            op.replace_allowed_ips = true;
            op.preshared_key = p.preshared_key.map(|k| Some(k.key));
            op.endpoint = p.endpoint.map(|e| e.addr);
            op.persistent_keepalive = p.persistent_keepalive;
            later.push(op);
            continue;
        };
        let want: Vec<AllowedIp> = dedup(ips.into_iter().map(masked));
        let have: Vec<AllowedIp> = dedup(cur.allowed_ips.iter().copied().map(masked));
        let removed: Vec<AllowedIpChange> = have
            .iter()
            .filter(|ip| !want.contains(ip))
            .map(|ip| AllowedIpChange::Remove(*ip))
            .collect();
        if !removed.is_empty() {
            let mut op = PeerOp::new(p.public_key);
            op.allowed_ips = removed;
            ops.push(SetOp::Peer(op));
        }
        let mut op = PeerOp::new(p.public_key);
        op.allowed_ips = want
            .iter()
            .filter(|ip| !have.contains(ip))
            .map(|ip| AllowedIpChange::Add(*ip))
            .collect();
        op.preshared_key = match p.preshared_key {
            Some(k) => Some(Some(k.key)),
            None if cur.preshared_key == Psk::None => None,
            None => Some(None),
        };
        if let Some(ep) = &p.endpoint {
            if cur.endpoint != Some(ep.addr) {
                op.endpoint = Some(ep.addr);
            }
        }
        // No PersistentKeepalive in the file means off, as after setconf.
        let keepalive = p.persistent_keepalive.unwrap_or(0);
        if keepalive != cur.persistent_keepalive {
            op.persistent_keepalive = Some(keepalive);
        }
        let changed = !op.allowed_ips.is_empty()
            || op.preshared_key.is_some()
            || op.endpoint.is_some()
            || op.persistent_keepalive.is_some();
        if changed {
            later.push(op);
        }
    }
    ops.extend(later.into_iter().map(SetOp::Peer));
    ops
}

fn dedup(ips: impl Iterator<Item = AllowedIp>) -> Vec<AllowedIp> {
    let mut out: Vec<AllowedIp> = Vec::new();
    for ip in ips {
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}
