//! A configuration file as the `set` request that applies it: what
//! `wg setconf` / `wg addconf` send, what `wgctl` sends, and what wgd
//! applies when it reads its own file at start-up. Called by wgctl and
//! wgd's parent.

use super::Config;
use crate::uapi::{AllowedIpChange, PeerOp, SetOp};

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
