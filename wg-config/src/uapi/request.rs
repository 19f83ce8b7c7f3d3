//! What a client may ask: the request types, one for both ends (the
//! server parses into them, the client formats from them).

use std::net::SocketAddr;

use proto::ipc::AllowedIp;
use proto::keys::{PublicKey, SecretKey};

/// One request read from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    /// `get=1`: answer with [`format_get`](super::format_get).
    Get,
    /// `set=1`: apply these operations in order, answer with
    /// [`format_errno`](super::format_errno).
    Set(Vec<SetOp>),
    /// `wgd_get=1`, a wgd extension (wireguard-go answers EPROTO): the
    /// `get` reply plus what only wgd knows, see [`format_wgd_get`](super::format_wgd_get). Used
    /// by `wgctl` and the tests.
    WgdGet,
    /// `wgd_reload=1`, a wgd extension: read the daemon's configuration
    /// file again and apply it with `wg syncconf`'s semantics (what
    /// SIGHUP does). Answered with `errno=0`, or with a `wgd_error=` line
    /// (see [`format_wgd_error`](super::format_wgd_error)) before the
    /// errno. Used by `wgctl reload`.
    WgdReload,
}

/// One operation of a `set` request. Apply them in the order given.
#[derive(Debug, PartialEq, Eq)]
pub enum SetOp {
    /// `private_key=`: the new static private key, `None` (an all-zero key
    /// on the wire) to remove it. Not clamped here: the crypto role clamps.
    PrivateKey(Option<SecretKey>),
    /// `listen_port=`: 0 asks for a random port.
    ListenPort(u16),
    /// `fwmark=`: 0 turns the mark off.
    Fwmark(u32),
    /// `replace_peers=true`: remove every peer (before the peers that
    /// follow in the same request are configured).
    ReplacePeers,
    /// A `public_key=` line and everything after it up to the next
    /// `public_key=` or the end of the request.
    Peer(PeerOp),
}

/// What one peer section of a `set` request asks for.
///
/// How to apply it, as wireguard-go does:
/// - a peer whose key is the interface's own public key is ignored;
/// - if `remove`, remove the peer if it exists and ignore the rest;
/// - else if `update_only` and the peer does not exist, ignore the rest;
/// - else create the peer if needed; if `replace_allowed_ips`, first
///   remove all its allowed IPs; then apply the fields that are `Some` and
///   the `allowed_ips` changes in order.
///
/// Allowed-IP lines that came before a `replace_allowed_ips=true` in the
/// same section are dropped while parsing (they would have been replaced),
/// so the order above gives the same result as applying line by line.
#[derive(Debug, PartialEq, Eq)]
pub struct PeerOp {
    pub public_key: PublicKey,
    pub remove: bool,
    pub update_only: bool,
    /// `None`: unchanged; `Some(None)`: remove it (all-zero key on the
    /// wire); `Some(Some(k))`: set it.
    pub preshared_key: Option<Option<SecretKey>>,
    pub endpoint: Option<SocketAddr>,
    /// Seconds; `Some(0)` turns persistent keepalive off.
    pub persistent_keepalive: Option<u16>,
    pub replace_allowed_ips: bool,
    pub allowed_ips: Vec<AllowedIpChange>,
}

impl PeerOp {
    /// A peer section with only its `public_key=` line.
    pub fn new(public_key: PublicKey) -> Self {
        PeerOp {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// One `allowed_ip=` line. The prefix is masked to its network address
/// (`10.1.2.3/8` becomes `10.0.0.0/8`), as wireguard-go's table stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowedIpChange {
    /// `allowed_ip=PREFIX`
    Add(AllowedIp),
    /// `allowed_ip=-PREFIX`
    Remove(AllowedIp),
}
