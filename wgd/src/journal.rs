//! What the parent needs to restart the roles with the configuration they
//! had: the `set` operations applied since start, in order, with every
//! secret taken out. A private key or PSK that came from a key file
//! (`PrivateKeyFile`, `PresharedKeyFile`) is kept as that file's path and
//! read again for the restart; one given inline (in the configuration
//! file or by `wg set`) cannot be recovered (secrets are write-only: only
//! the crypto role ever held it), and then a dead role ends the daemon
//! instead (it fails closed, as it always did).
//!
//! The journal is compacted as it grows: `replace_peers` drops every peer
//! operation before it, and only the last listen port, fwmark and private
//! key are kept. Past [`MAX_ITEMS`] operations and allowed IPs it stops
//! recording and the daemon is no longer restartable.

use std::path::PathBuf;

use proto::keys::{PublicKey, SecretKey};
use wg_config::config::Config;
use wg_config::uapi::{AllowedIpChange, PeerOp, SetOp};

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
/// request is applied (which consumes it).
pub(crate) struct Pending {
    entries: Vec<Entry>,
    lost: Option<String>,
}

fn strip_peer(p: &PeerOp, lost: &mut Option<String>) -> PeerOp {
    let preshared_key = match &p.preshared_key {
        None => None,
        Some(None) => Some(None),
        Some(Some(_)) => {
            lost.get_or_insert_with(|| {
                format!(
                    "the preshared key of peer {} was set inline",
                    p.public_key.to_base64()
                )
            });
            None
        }
    };
    PeerOp {
        public_key: p.public_key,
        remove: p.remove,
        update_only: p.update_only,
        preshared_key,
        endpoint: p.endpoint,
        persistent_keepalive: p.persistent_keepalive,
        replace_allowed_ips: p.replace_allowed_ips,
        allowed_ips: p.allowed_ips.clone(),
    }
}

impl Journal {
    /// The start-up configuration file's operations (those of
    /// `wg_config::config::setconf_ops`), keys as their files.
    pub(crate) fn from_config(cfg: &Config) -> Journal {
        let mut j = Journal::default();
        let mut p = Pending {
            entries: Vec::new(),
            lost: None,
        };
        let iface = &cfg.interface;
        if let Some(k) = &iface.private_key {
            match &k.file {
                Some(f) => p.entries.push(Entry::PrivateKeyFile(f.clone())),
                None => {
                    p.lost = Some("the private key was given inline in the configuration".into())
                }
            }
        }
        if let Some(port) = iface.listen_port {
            p.entries.push(Entry::Plain(SetOp::ListenPort(port)));
        }
        if let Some(mark) = iface.fwmark {
            p.entries.push(Entry::Plain(SetOp::Fwmark(mark)));
        }
        for peer in &cfg.peers {
            p.entries.push(Entry::Plain(SetOp::Peer(PeerOp {
                public_key: peer.public_key,
                remove: false,
                update_only: false,
                preshared_key: None,
                endpoint: peer.endpoint.as_ref().map(|e| e.addr),
                persistent_keepalive: peer.persistent_keepalive,
                replace_allowed_ips: false,
                allowed_ips: peer
                    .allowed_ips_with_auto(iface.auto_address)
                    .into_iter()
                    .map(AllowedIpChange::Add)
                    .collect(),
            })));
            if let Some(k) = &peer.preshared_key {
                match &k.file {
                    Some(f) => p.entries.push(Entry::PskFile(peer.public_key, f.clone())),
                    None => {
                        p.lost.get_or_insert_with(|| {
                            format!(
                                "the preshared key of peer {} was given inline in the configuration",
                                peer.public_key.to_base64()
                            )
                        });
                    }
                }
            }
        }
        j.commit(p, true);
        j
    }

    /// A `set` request's operations, secrets taken out.
    pub(crate) fn prepare(ops: &[SetOp]) -> Pending {
        let mut lost = None;
        let entries = ops
            .iter()
            .map(|op| {
                Entry::Plain(match op {
                    SetOp::PrivateKey(None) => SetOp::PrivateKey(None),
                    SetOp::PrivateKey(Some(_)) => {
                        lost.get_or_insert_with(|| {
                            "the private key was set through the control socket".to_string()
                        });
                        SetOp::PrivateKey(None)
                    }
                    SetOp::ListenPort(p) => SetOp::ListenPort(*p),
                    SetOp::Fwmark(m) => SetOp::Fwmark(*m),
                    SetOp::ReplacePeers => SetOp::ReplacePeers,
                    SetOp::Peer(p) => SetOp::Peer(strip_peer(p, &mut lost)),
                })
            })
            .collect();
        Pending { entries, lost }
    }

    /// Records a request once applied; `applied` false (it failed part
    /// way, and what the roles hold is uncertain) ends restartability.
    pub(crate) fn commit(&mut self, p: Pending, applied: bool) {
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
        for e in p.entries {
            self.push(e);
            if self.lost.is_some() {
                return;
            }
        }
    }

    fn lose(&mut self, why: String) {
        self.lost = Some(why);
        self.entries = Vec::new();
        self.items = 0;
    }

    fn push(&mut self, e: Entry) {
        let is_peer = |x: &Entry| matches!(x, Entry::Plain(SetOp::Peer(_)) | Entry::PskFile(..));
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
            Entry::Plain(SetOp::PrivateKey(_)) | Entry::PrivateKeyFile(_) => {
                self.entries.retain(|x| {
                    !matches!(
                        x,
                        Entry::Plain(SetOp::PrivateKey(_)) | Entry::PrivateKeyFile(_)
                    )
                })
            }
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
                Entry::Plain(SetOp::PrivateKey(_)) => return None,
                _ => {}
            }
        }
        None
    }

    /// The operations to apply to fresh roles, key files read again; an
    /// error if the configuration is lost or a key file can no longer be
    /// read.
    pub(crate) fn replay(&self) -> Result<Vec<SetOp>, String> {
        if let Some(why) = &self.lost {
            return Err(why.clone());
        }
        let mut ops = Vec::with_capacity(self.entries.len());
        for e in &self.entries {
            ops.push(match e {
                Entry::Plain(op) => copy_plain(op),
                Entry::PrivateKeyFile(f) => SetOp::PrivateKey(Some(read_key(f)?)),
                Entry::PskFile(peer, f) => SetOp::Peer(PeerOp {
                    preshared_key: Some(Some(read_key(f)?)),
                    ..PeerOp::new(*peer)
                }),
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
        SetOp::Peer(p) => SetOp::Peer(strip_peer(p, &mut None)),
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

    #[test]
    fn secrets_are_never_kept_and_inline_ones_end_restarts() {
        let mut j = Journal::default();
        j.commit(
            Journal::prepare(&[SetOp::ListenPort(1), SetOp::Peer(peer(1))]),
            true,
        );
        assert!(j.lost().is_none());
        assert_eq!(j.replay().expect("replayable").len(), 2);
        let with_psk = PeerOp {
            preshared_key: Some(Some(SecretKey::from_bytes([7; 32]))),
            ..peer(2)
        };
        j.commit(Journal::prepare(&[SetOp::Peer(with_psk)]), true);
        assert!(j.lost().is_some_and(|w| w.contains("preshared")));
        assert!(j.replay().is_err());
        let dump = format!("{j:?}");
        assert!(!dump.contains("7, 7, 7"), "{dump}");
    }

    #[test]
    fn replace_peers_and_repeated_settings_compact() {
        let mut j = Journal::default();
        for n in 0..10 {
            j.commit(
                Journal::prepare(&[SetOp::ListenPort(n.into()), SetOp::Peer(peer(n))]),
                true,
            );
        }
        j.commit(
            Journal::prepare(&[SetOp::ReplacePeers, SetOp::Peer(peer(42))]),
            true,
        );
        let ops = j.replay().expect("replayable");
        assert_eq!(ops.len(), 3, "{ops:?}");
        assert!(matches!(ops[0], SetOp::ListenPort(9)));
        assert!(matches!(ops[1], SetOp::ReplacePeers));
        assert!(matches!(&ops[2], SetOp::Peer(p) if p.public_key == PublicKey([42; 32])));
    }

    #[test]
    fn a_failed_request_ends_restarts() {
        let mut j = Journal::default();
        j.commit(Journal::prepare(&[SetOp::Fwmark(1)]), false);
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
                entries: vec![Entry::PrivateKeyFile(f.clone())],
                lost: None,
            },
            true,
        );
        assert_eq!(j.private_key_file(), Some(f.clone()));
        assert!(matches!(
            j.replay().expect("ok")[0],
            SetOp::PrivateKey(Some(_))
        ));
        std::fs::remove_file(&f).expect("rm");
        assert!(j.replay().is_err());
    }
}
