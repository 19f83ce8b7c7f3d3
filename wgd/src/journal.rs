//! What the parent needs to restart the roles with the configuration they
//! had: the `set` operations applied since start, in order, with every
//! secret taken out. A private key or PSK that came from a key file
//! (`PrivateKeyFile`, `PresharedKeyFile`) is kept as that file's path and
//! read again for the restart. One given inline (in the configuration
//! file, by `wg set` or `wg-quick`) is kept as the crypto role wrapped it
//! ([`Wrapped`]: sealed under a key only crypto roles can read, see
//! [`crate::keyring`]) and handed back to the next crypto role as such:
//! the parent never holds the secret. Only when the crypto role could not
//! wrap it (no kernel keyring) is the configuration lost, and a dead role
//! then ends the daemon (it fails closed).
//!
//! The journal is compacted as it grows: `replace_peers` drops every peer
//! operation before it, and only the last listen port, fwmark and private
//! key are kept. Past [`MAX_ITEMS`] operations and allowed IPs it stops
//! recording and the daemon is no longer restartable.

use std::path::PathBuf;

use proto::ipc::Wrapped;
use proto::keys::{PublicKey, SecretKey};
use wg_config::config::Config;
use wg_config::uapi::{AllowedIpChange, PeerOp, SetOp};

use crate::control::{Item, Wrap};

/// Most operations plus allowed-IP changes kept (a few tens of MiB).
pub(crate) const MAX_ITEMS: usize = 4_000_000;

/// One recorded operation.
#[derive(Debug)]
enum Entry {
    /// An operation that carries no secret.
    Plain(SetOp),
    /// The private key read from this file.
    PrivateKeyFile(PathBuf),
    /// A peer's PSK read from this file.
    PskFile(PublicKey, PathBuf),
    /// A private key given inline, wrapped by the crypto role.
    PrivateKey(Wrapped),
    /// A peer's PSK given inline, wrapped by the crypto role.
    Psk(PublicKey, Wrapped),
}

/// The configuration applied so far, without secrets; see the module
/// documentation.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    entries: Vec<Entry>,
    items: usize,
    /// Why the configuration cannot be restored, once it cannot.
    lost: Option<String>,
}

/// A request's operations as the journal would keep them, made before the
/// request is applied (which consumes it); its secrets are filled in from
/// what the crypto role answers.
pub(crate) struct Pending {
    entries: Vec<Slot>,
    lost: Option<String>,
}

impl Pending {
    /// Puts first what a reload's request (`ops`) sets of the interface:
    /// syncconf sends the file's private key (`key_file`: its file, if it
    /// came from one) only when it differs from the running one, and a
    /// listen port or fwmark only when it changes.
    pub(crate) fn interface_first(self, ops: &[SetOp], key_file: Option<PathBuf>) -> Pending {
        let mut entries = Vec::with_capacity(self.entries.len() + 3);
        for op in ops {
            match op {
                SetOp::PrivateKey(Some(_)) => entries.push(Slot::PrivateKey(key_file.clone())),
                SetOp::PrivateKey(None) => {
                    entries.push(Slot::Done(Entry::Plain(SetOp::PrivateKey(None))))
                }
                SetOp::ListenPort(p) => {
                    entries.push(Slot::Done(Entry::Plain(SetOp::ListenPort(*p))))
                }
                SetOp::Fwmark(m) => entries.push(Slot::Done(Entry::Plain(SetOp::Fwmark(*m)))),
                SetOp::ReplacePeers | SetOp::Peer(_) => {}
            }
        }
        entries.extend(self.entries);
        Pending {
            entries,
            lost: self.lost,
        }
    }
}

/// One operation of a [`Pending`] request.
enum Slot {
    Done(Entry),
    /// A private key went to the crypto role: kept as its file, or as the
    /// role wraps it.
    PrivateKey(Option<PathBuf>),
    /// A PSK went (unless the peer was skipped) to the crypto role.
    Psk(PublicKey, Option<PathBuf>),
}

/// A peer operation without its PSK, which follows it as its own slot.
fn strip_peer(p: &PeerOp) -> PeerOp {
    PeerOp {
        public_key: p.public_key,
        remove: p.remove,
        update_only: p.update_only,
        preshared_key: match &p.preshared_key {
            Some(None) => Some(None),
            _ => None,
        },
        endpoint: p.endpoint,
        persistent_keepalive: p.persistent_keepalive,
        replace_allowed_ips: p.replace_allowed_ips,
        allowed_ips: p.allowed_ips.clone(),
    }
}

/// The file's peers as the journal keeps them: each peer's whole state
/// without its PSK, then the PSK as its own slot (its file, or as the
/// crypto role wraps it).
fn peer_slots(cfg: &Config, entries: &mut Vec<Slot>) {
    for peer in &cfg.peers {
        entries.push(Slot::Done(Entry::Plain(SetOp::Peer(PeerOp {
            public_key: peer.public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: peer.endpoint.as_ref().map(|e| e.addr),
            persistent_keepalive: peer.persistent_keepalive,
            replace_allowed_ips: false,
            allowed_ips: peer
                .allowed_ips_with_auto(cfg.interface.auto_address)
                .into_iter()
                .map(AllowedIpChange::Add)
                .collect(),
        }))));
        if let Some(k) = &peer.preshared_key {
            entries.push(Slot::Psk(peer.public_key, k.file.clone()));
        }
    }
}

impl Journal {
    /// The start-up configuration file's operations (those of
    /// `wg_config::config::setconf_ops`), keys from files as their files.
    pub(crate) fn from_config(cfg: &Config) -> Pending {
        let mut entries = Vec::new();
        let iface = &cfg.interface;
        if let Some(k) = &iface.private_key {
            entries.push(Slot::PrivateKey(k.file.clone()));
        }
        if let Some(port) = iface.listen_port {
            entries.push(Slot::Done(Entry::Plain(SetOp::ListenPort(port))));
        }
        if let Some(mark) = iface.fwmark {
            entries.push(Slot::Done(Entry::Plain(SetOp::Fwmark(mark))));
        }
        peer_slots(cfg, &mut entries);
        Pending {
            entries,
            lost: None,
        }
    }

    /// A reload's peers as the journal keeps them: as after a
    /// `replace_peers`, the file's peers as `from_config` records them.
    /// After a reload (`wg_config::config::syncconf_ops`) the peers are
    /// exactly the file's, so this is what a restart must give fresh
    /// roles, and the journal does not grow with each reload (the
    /// `replace_peers` entry drops the peer entries before it). Made
    /// before the request consumes the file; what the request sets of the
    /// interface is added by [`Pending::interface_first`].
    pub(crate) fn from_reload(cfg: &Config) -> Pending {
        let mut entries = vec![Slot::Done(Entry::Plain(SetOp::ReplacePeers))];
        peer_slots(cfg, &mut entries);
        Pending {
            entries,
            lost: None,
        }
    }

    /// A `set` request's operations, secrets taken out.
    pub(crate) fn prepare(ops: &[SetOp]) -> Pending {
        let mut entries = Vec::with_capacity(ops.len());
        for op in ops {
            match op {
                SetOp::PrivateKey(None) => {
                    entries.push(Slot::Done(Entry::Plain(SetOp::PrivateKey(None))))
                }
                SetOp::PrivateKey(Some(_)) => entries.push(Slot::PrivateKey(None)),
                SetOp::ListenPort(p) => {
                    entries.push(Slot::Done(Entry::Plain(SetOp::ListenPort(*p))))
                }
                SetOp::Fwmark(m) => entries.push(Slot::Done(Entry::Plain(SetOp::Fwmark(*m)))),
                SetOp::ReplacePeers => entries.push(Slot::Done(Entry::Plain(SetOp::ReplacePeers))),
                SetOp::Peer(p) => {
                    entries.push(Slot::Done(Entry::Plain(SetOp::Peer(strip_peer(p)))));
                    if let Some(Some(_)) = p.preshared_key {
                        entries.push(Slot::Psk(p.public_key, None));
                    }
                }
            }
        }
        Pending {
            entries,
            lost: None,
        }
    }

    /// Records a request once applied, its secrets as the crypto role
    /// wrapped them (`wraps`, in the order they were sent); `applied`
    /// false (it failed part way, and what the roles hold is uncertain)
    /// ends restartability.
    pub(crate) fn commit(&mut self, p: Pending, applied: bool, wraps: Vec<Wrap>) {
        if self.lost.is_some() {
            return;
        }
        if let Some(why) = p.lost {
            self.lose(why);
            return;
        }
        if !applied {
            self.lose("a configuration request failed part way".into());
            return;
        }
        let mut wraps = wraps.into_iter().peekable();
        for slot in p.entries {
            let entry = match slot {
                Slot::Done(e) => Some(e),
                Slot::PrivateKey(file) => {
                    match wraps.next_if(|w| matches!(w, Wrap::PrivateKey(_))) {
                        Some(Wrap::PrivateKey(w)) => match (file, w) {
                            (Some(f), _) => Some(Entry::PrivateKeyFile(f)),
                            (None, Some(w)) => Some(Entry::PrivateKey(w)),
                            (None, None) => {
                                self.lose(
                                    "the private key was given inline and the crypto role could not wrap it (no kernel keyring)".into(),
                                );
                                return;
                            }
                        },
                        _ => {
                            self.lose("the crypto role did not answer for a private key".into());
                            return;
                        }
                    }
                }
                Slot::Psk(peer, file) => {
                    match wraps.next_if(|w| matches!(w, Wrap::Psk(k, _) if *k == peer)) {
                        Some(Wrap::Psk(_, w)) => match (file, w) {
                            (Some(f), _) => Some(Entry::PskFile(peer, f)),
                            (None, Some(w)) => Some(Entry::Psk(peer, w)),
                            (None, None) => {
                                self.lose(format!(
                                    "the preshared key of peer {} was given inline and the crypto role could not wrap it (no kernel keyring)",
                                    peer.to_base64()
                                ));
                                return;
                            }
                        },
                        // The peer was skipped (our own key, or
                        // update_only of an unknown peer): nothing went.
                        _ => None,
                    }
                }
            };
            if let Some(e) = entry {
                self.push(e);
                if self.lost.is_some() {
                    return;
                }
            }
        }
        if wraps.next().is_some() {
            self.lose("the crypto role wrapped secrets the request did not set".into());
        }
    }

    fn lose(&mut self, why: String) {
        self.lost = Some(why);
        self.entries = Vec::new();
        self.items = 0;
    }

    fn push(&mut self, e: Entry) {
        let is_peer = |x: &Entry| {
            matches!(
                x,
                Entry::Plain(SetOp::Peer(_)) | Entry::PskFile(..) | Entry::Psk(..)
            )
        };
        let is_key = |x: &Entry| {
            matches!(
                x,
                Entry::Plain(SetOp::PrivateKey(_))
                    | Entry::PrivateKeyFile(_)
                    | Entry::PrivateKey(_)
            )
        };
        let before = self.entries.len();
        match &e {
            Entry::Plain(SetOp::ReplacePeers) => {
                self.entries
                    .retain(|x| !is_peer(x) && !matches!(x, Entry::Plain(SetOp::ReplacePeers)));
            }
            Entry::Plain(SetOp::ListenPort(_)) => self
                .entries
                .retain(|x| !matches!(x, Entry::Plain(SetOp::ListenPort(_)))),
            Entry::Plain(SetOp::Fwmark(_)) => self
                .entries
                .retain(|x| !matches!(x, Entry::Plain(SetOp::Fwmark(_)))),
            x if is_key(x) => self.entries.retain(|x| !is_key(x)),
            _ => {}
        }
        if self.entries.len() != before {
            self.items = self.entries.iter().map(Entry::weight).sum();
        }
        self.items += e.weight();
        self.entries.push(e);
        if self.items > MAX_ITEMS {
            self.lose(format!(
                "the configuration grew past {MAX_ITEMS} operations and allowed IPs"
            ));
        }
    }

    /// Why the configuration cannot be restored, if it cannot.
    pub(crate) fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    /// The private key's file, if the last private key came from one.
    pub(crate) fn private_key_file(&self) -> Option<PathBuf> {
        for e in self.entries.iter().rev() {
            match e {
                Entry::PrivateKeyFile(f) => return Some(f.clone()),
                Entry::Plain(SetOp::PrivateKey(_)) | Entry::PrivateKey(_) => return None,
                _ => {}
            }
        }
        None
    }

    /// The operations to apply to fresh roles, key files read again and
    /// inline secrets as they were wrapped; an error if the configuration
    /// is lost or a key file can no longer be read.
    pub(crate) fn replay(&self) -> Result<Vec<Item>, String> {
        if let Some(why) = &self.lost {
            return Err(why.clone());
        }
        let mut ops = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            ops.push(match e {
                Entry::Plain(op) => Item::Op(copy_plain(op)),
                Entry::PrivateKeyFile(f) => Item::Op(SetOp::PrivateKey(Some(read_key(f)?))),
                Entry::PskFile(peer, f) => Item::Op(SetOp::Peer(PeerOp {
                    preshared_key: Some(Some(read_key(f)?)),
                    update_only: true,
                    ..PeerOp::new(*peer)
                })),
                Entry::PrivateKey(w) => Item::PrivateKey(w.clone()),
                Entry::Psk(peer, w) => Item::Psk(*peer, w.clone()),
            });
        }
        Ok(ops)
    }
}

impl Entry {
    fn weight(&self) -> usize {
        match self {
            Entry::Plain(SetOp::Peer(p)) => 1 + p.allowed_ips.len(),
            _ => 1,
        }
    }
}

fn copy_plain(op: &SetOp) -> SetOp {
    match op {
        SetOp::PrivateKey(_) => SetOp::PrivateKey(None),
        SetOp::ListenPort(p) => SetOp::ListenPort(*p),
        SetOp::Fwmark(m) => SetOp::Fwmark(*m),
        SetOp::ReplacePeers => SetOp::ReplacePeers,
        SetOp::Peer(p) => SetOp::Peer(strip_peer(p)),
    }
}

fn read_key(path: &std::path::Path) -> Result<SecretKey, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let text = wg_config::keyfile::read_key_text(file)
        .map_err(|_| format!("{}: cannot read a key from it", path.display()))?;
    SecretKey::from_base64(text.trim()).map_err(|_| format!("{}: not a key", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wg_config::cidr::aip;

    fn peer(n: u8) -> PeerOp {
        PeerOp {
            allowed_ips: vec![AllowedIpChange::Add(aip(&format!("10.0.0.{n}"), 32))],
            ..PeerOp::new(PublicKey([n; 32]))
        }
    }

    fn wrapped(b: u8) -> Wrapped {
        Wrapped(vec![b; proto::ipc::WRAPPED_LEN])
    }

    fn with_psk(n: u8, psk: u8) -> PeerOp {
        PeerOp {
            preshared_key: Some(Some(SecretKey::from_bytes([psk; 32]))),
            ..peer(n)
        }
    }

    #[test]
    fn inline_secrets_are_kept_only_as_the_crypto_role_wrapped_them() {
        let mut j = Journal::default();
        j.commit(
            Journal::prepare(&[SetOp::ListenPort(1), SetOp::Peer(peer(1))]),
            true,
            Vec::new(),
        );
        assert!(j.lost().is_none());
        assert_eq!(j.replay().expect("replayable").len(), 2);
        let ops = [
            SetOp::PrivateKey(Some(SecretKey::from_bytes([6; 32]))),
            SetOp::Peer(with_psk(2, 7)),
        ];
        let pending = Journal::prepare(&ops);
        let wraps = vec![
            Wrap::PrivateKey(Some(wrapped(0xa1))),
            Wrap::Psk(PublicKey([2; 32]), Some(wrapped(0xa2))),
        ];
        j.commit(pending, true, wraps);
        assert!(j.lost().is_none(), "{:?}", j.lost());
        let dump = format!("{j:?}");
        assert!(
            !dump.contains("6, 6, 6") && !dump.contains("7, 7, 7"),
            "{dump}"
        );
        let items = j.replay().expect("replayable");
        let kinds: Vec<String> = items
            .iter()
            .map(|i| match i {
                Item::Op(SetOp::Peer(p)) => {
                    assert!(
                        !matches!(p.preshared_key, Some(Some(_))),
                        "a PSK in the clear"
                    );
                    format!("peer {}", p.public_key.0[0])
                }
                Item::Op(SetOp::PrivateKey(Some(_))) => "a private key in the clear".into(),
                Item::Op(op) => format!("{op:?}"),
                Item::PrivateKey(w) => format!("key {:x}", w.0[0]),
                Item::Psk(peer, w) => format!("psk {} {:x}", peer.0[0], w.0[0]),
            })
            .collect();
        assert_eq!(
            kinds,
            ["ListenPort(1)", "peer 1", "key a1", "peer 2", "psk 2 a2"],
            "{items:?}",
            items = kinds
        );
    }

    #[test]
    fn a_secret_the_crypto_role_could_not_wrap_ends_restarts() {
        let mut j = Journal::default();
        let ops = [SetOp::Peer(with_psk(2, 7))];
        j.commit(
            Journal::prepare(&ops),
            true,
            vec![Wrap::Psk(PublicKey([2; 32]), None)],
        );
        assert!(j.lost().is_some_and(|w| w.contains("preshared")));
        assert!(j.replay().is_err());
        let mut j = Journal::default();
        let ops = [SetOp::PrivateKey(Some(SecretKey::from_bytes([6; 32])))];
        j.commit(Journal::prepare(&ops), true, vec![Wrap::PrivateKey(None)]);
        assert!(j.lost().is_some_and(|w| w.contains("private key")));
    }

    #[test]
    fn a_psk_that_never_went_to_the_crypto_role_is_not_kept() {
        // Peer 3's PSK was skipped (update_only of an unknown peer, say):
        // the crypto role wrapped only peer 4's.
        let mut j = Journal::default();
        let ops = [SetOp::Peer(with_psk(3, 8)), SetOp::Peer(with_psk(4, 9))];
        j.commit(
            Journal::prepare(&ops),
            true,
            vec![Wrap::Psk(PublicKey([4; 32]), Some(wrapped(4)))],
        );
        let items = j.replay().expect("replayable");
        let psks: Vec<u8> = items
            .iter()
            .filter_map(|i| match i {
                Item::Psk(p, _) => Some(p.0[0]),
                _ => None,
            })
            .collect();
        assert_eq!(psks, [4]);
        // Wraps the request did not ask for: the journal does not guess.
        let mut j = Journal::default();
        j.commit(
            Journal::prepare(&[SetOp::Peer(peer(5))]),
            true,
            vec![Wrap::Psk(PublicKey([5; 32]), Some(wrapped(5)))],
        );
        assert!(j.lost().is_some());
    }

    #[test]
    fn replace_peers_and_repeated_settings_compact() {
        let mut j = Journal::default();
        for n in 0..10 {
            j.commit(
                Journal::prepare(&[SetOp::ListenPort(n.into()), SetOp::Peer(with_psk(n, n))]),
                true,
                vec![Wrap::Psk(PublicKey([n; 32]), Some(wrapped(n)))],
            );
        }
        j.commit(
            Journal::prepare(&[SetOp::ReplacePeers, SetOp::Peer(peer(42))]),
            true,
            Vec::new(),
        );
        let ops = j.replay().expect("replayable");
        assert_eq!(ops.len(), 3);
        assert!(matches!(ops[0], Item::Op(SetOp::ListenPort(9))));
        assert!(matches!(ops[1], Item::Op(SetOp::ReplacePeers)));
        assert!(matches!(&ops[2], Item::Op(SetOp::Peer(p)) if p.public_key == PublicKey([42; 32])));
    }

    #[test]
    fn a_failed_request_ends_restarts() {
        let mut j = Journal::default();
        j.commit(Journal::prepare(&[SetOp::Fwmark(1)]), false, Vec::new());
        assert!(j.replay().is_err());
    }

    #[test]
    fn key_files_are_read_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("k");
        std::fs::write(&f, format!("{}\n", "A".repeat(43) + "=")).expect("key file");
        let mut j = Journal::default();
        j.commit(
            Pending {
                entries: vec![Slot::PrivateKey(Some(f.clone()))],
                lost: None,
            },
            true,
            vec![Wrap::PrivateKey(Some(wrapped(1)))],
        );
        assert_eq!(j.private_key_file(), Some(f.clone()));
        assert!(matches!(
            j.replay().expect("ok")[0],
            Item::Op(SetOp::PrivateKey(Some(_)))
        ));
        std::fs::remove_file(&f).expect("rm");
        assert!(j.replay().is_err());
    }

    /// A reload leaves the journal with exactly the file's peers (however
    /// many reloads came before), the interface settings it did not
    /// change as they were, and the PSKs as the crypto role wrapped them.
    #[test]
    fn a_reload_replaces_the_peers_and_does_not_grow_the_journal() {
        let b64 = |n: u8| PublicKey([n; 32]).to_base64();
        let text = |peers: &[u8]| {
            let mut t = String::from("[Interface]\nListenPort = 5\n");
            for &n in peers {
                t += &format!(
                    "[Peer]\nPublicKey = {}\nPresharedKey = {}\nAllowedIPs = 10.0.0.{n}/32\n",
                    b64(n),
                    b64(100 + n)
                );
            }
            t
        };
        let cfg = |peers: &[u8]| {
            wg_config::config::parse_str(&text(peers), std::path::Path::new("/x.conf"))
                .expect("config")
        };
        let psk_wraps = |peers: &[u8]| -> Vec<Wrap> {
            peers
                .iter()
                .map(|&n| Wrap::Psk(PublicKey([n; 32]), Some(wrapped(n))))
                .collect()
        };
        let mut j = Journal::default();
        j.commit(
            Journal::from_config(&cfg(&[1, 2])),
            true,
            psk_wraps(&[1, 2]),
        );
        let first = j.replay().expect("replayable").len();
        for _ in 0..3 {
            // The port stays 5, so the request sets nothing of the
            // interface; peer 1 goes, peer 3 comes.
            let ops = [SetOp::Peer(peer(3))];
            let pending = Journal::from_reload(&cfg(&[2, 3])).interface_first(&ops, None);
            j.commit(pending, true, psk_wraps(&[2, 3]));
            assert!(j.lost().is_none(), "{:?}", j.lost());
        }
        let items = j.replay().expect("replayable");
        let kinds: Vec<String> = items
            .iter()
            .map(|i| match i {
                Item::Op(SetOp::Peer(p)) => format!("peer {}", p.public_key.0[0]),
                Item::Op(op) => format!("{op:?}"),
                Item::PrivateKey(_) => "key".into(),
                Item::Psk(peer, w) => format!("psk {} {}", peer.0[0], w.0[0]),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "ListenPort(5)",
                "ReplacePeers",
                "peer 2",
                "psk 2 2",
                "peer 3",
                "psk 3 3"
            ]
        );
        assert_eq!(items.len(), first + 1);
        // A new private key from a file is kept as its file.
        let ops = [SetOp::PrivateKey(Some(SecretKey::from_bytes([9; 32])))];
        let f = PathBuf::from("/etc/wireguard/k");
        let pending = Journal::from_reload(&cfg(&[3])).interface_first(&ops, Some(f.clone()));
        j.commit(
            pending,
            true,
            [Wrap::PrivateKey(Some(wrapped(9)))]
                .into_iter()
                .chain(psk_wraps(&[3]))
                .collect(),
        );
        assert_eq!(j.private_key_file(), Some(f));
    }
}
