//! Test harness: a handshake core with an in-process key store as its
//! crypto role, and helpers to pick actions out of its output. The key
//! store is asked on the same fake clock as the core (its initiation rate
//! limit reads it).
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Instant;

use proto::ipc::{Destination, HandshakeToTransport};
use proto::keys::{PublicKey, SecretKey};
use wg_crypto::{generate_private_key, public_key, KeyStore};
use wg_handshake::{Config, Core, PacketOutcome};

pub struct Node {
    pub core: Core,
    pub store: KeyStore,
    pub public: PublicKey,
    pub addr: SocketAddr,
    pub out: Vec<HandshakeToTransport>,
}

impl Node {
    pub fn new(cfg: Config, addr: &str) -> Node {
        Node::with_key(cfg, addr, generate_private_key())
    }

    pub fn with_key(cfg: Config, addr: &str, key: SecretKey) -> Node {
        let public = public_key(&key);
        let mut store = KeyStore::new();
        store.set_private_key(Some(key));
        let mut core = Core::new(cfg);
        let mut out = Vec::new();
        core.set_interface(Some(public), &mut out);
        Node {
            core,
            store,
            public,
            addr: addr.parse().expect("address literal"),
            out: Vec::new(),
        }
    }

    pub fn add_peer(&mut self, now: Instant, peer: PublicKey, psk: Option<[u8; 32]>) {
        self.store.set_peer(peer, psk.map(SecretKey::from_bytes));
        self.core.set_peer(now, peer, None, &mut self.out);
    }

    pub fn need_handshake(&mut self, now: Instant, peer: &PublicKey) {
        let store = &mut self.store;
        self.core.need_handshake(
            now,
            peer,
            &mut |q| store.handle_handshake_at(now, q),
            &mut self.out,
        );
    }

    pub fn on_timers(&mut self, now: Instant) {
        let store = &mut self.store;
        self.core.on_timers(
            now,
            &mut |q| store.handle_handshake_at(now, q),
            &mut self.out,
        );
    }

    pub fn activity(&mut self, now: Instant, peer: &PublicKey, bits: u8) {
        let store = &mut self.store;
        self.core.handle_activity(
            now,
            peer,
            proto::ipc::Activity(bits),
            &mut |q| store.handle_handshake_at(now, q),
            &mut self.out,
        );
    }

    pub fn receive(&mut self, now: Instant, bytes: &[u8], from: SocketAddr) -> PacketOutcome {
        let store = &mut self.store;
        self.core.handle_packet(
            now,
            bytes,
            proto::ipc::Endpoint::new(from),
            &mut |q| store.handle_handshake_at(now, q),
            &mut self.out,
        )
    }

    /// Takes every action emitted so far.
    pub fn drain(&mut self) -> Vec<HandshakeToTransport> {
        std::mem::take(&mut self.out)
    }
}

/// The handshake packets among `actions` (any destination).
pub fn sent_packets(actions: &[HandshakeToTransport]) -> Vec<Vec<u8>> {
    actions
        .iter()
        .filter_map(|a| match a {
            HandshakeToTransport::Send { bytes, .. } => Some(bytes.clone()),
            _ => None,
        })
        .collect()
}

pub fn initiations(actions: &[HandshakeToTransport]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, HandshakeToTransport::Send { to: Destination::Peer(_), bytes } if bytes.first() == Some(&1)))
        .count()
}

pub fn keepalives(actions: &[HandshakeToTransport]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, HandshakeToTransport::SendKeepalive { .. }))
        .count()
}

pub fn expiries(actions: &[HandshakeToTransport]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, HandshakeToTransport::ExpireKeypairs { .. }))
        .count()
}

pub fn installs(actions: &[HandshakeToTransport]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, HandshakeToTransport::InstallKeypair { .. }))
        .count()
}

/// Two nodes that know each other, no handshake yet.
pub fn pair(now: Instant, cfg: Config) -> (Node, Node) {
    let mut a = Node::new(cfg.clone(), "192.0.2.1:51820");
    let mut b = Node::new(cfg, "192.0.2.2:51820");
    a.add_peer(now, b.public, None);
    b.add_peer(now, a.public, None);
    a.drain();
    b.drain();
    (a, b)
}

/// Runs one full handshake a → b at `now`; returns a's and b's actions.
pub fn handshake(
    now: Instant,
    a: &mut Node,
    b: &mut Node,
) -> (Vec<HandshakeToTransport>, Vec<HandshakeToTransport>) {
    a.need_handshake(now, &b.public);
    let init = sent_packets(&a.drain());
    assert_eq!(init.len(), 1, "one initiation");
    let from_a = a.addr;
    assert_eq!(
        b.receive(now, &init[0], from_a),
        PacketOutcome::Responded(a.public)
    );
    let b_actions = b.drain();
    let resp = sent_packets(&b_actions);
    assert_eq!(resp.len(), 1, "one response");
    let from_b = b.addr;
    assert_eq!(
        a.receive(now, &resp[0], from_b),
        PacketOutcome::Completed(b.public)
    );
    (a.drain(), b_actions)
}

/// A response anyone who saw `init` on the wire can make: type 2, the
/// initiation's sender index as receiver, `noise` as its Noise part, and
/// a valid MAC1 for `to` (MAC1 needs only the public key).
pub fn forged_response(init: &[u8], to: &PublicKey, noise: [u8; 48]) -> Vec<u8> {
    use proto::wire::{Response, RESPONSE_MAC1_OFFSET};
    let receiver = u32::from_le_bytes([init[4], init[5], init[6], init[7]]);
    let mut bytes = Response {
        sender: 0x0bad_f00d,
        receiver,
        noise,
        mac1: [0; 16],
        mac2: [0; 16],
    }
    .to_bytes();
    let mac1 = wg_handshake::mac::mac(
        &wg_handshake::mac::mac1_key(to),
        &bytes[..RESPONSE_MAC1_OFFSET],
    );
    bytes[RESPONSE_MAC1_OFFSET..RESPONSE_MAC1_OFFSET + 16].copy_from_slice(&mac1);
    bytes.to_vec()
}

/// `genuine` with one bit of its Noise part flipped at `at` (0..48) and
/// MAC1 made valid again: what an attacker who saw the genuine response
/// could send first.
pub fn tampered_response(genuine: &[u8], to: &PublicKey, at: usize) -> Vec<u8> {
    let mut noise = [0u8; 48];
    noise.copy_from_slice(&genuine[12..60]);
    noise[at] ^= 1;
    let mut init_like = [0u8; 8];
    init_like[4..8].copy_from_slice(&genuine[8..12]);
    forged_response(&init_like, to, noise)
}
