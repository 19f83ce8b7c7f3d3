//! Tests of the parent module, in a file of their own so that the module
//! itself reads as the code it is.

//! Scale: what a peer costs the transport role, in memory and in the
//! periodic work, at 100,000 peers.

use std::net::{IpAddr, Ipv4Addr};

use proto::keys::{SessionKey, SessionKeys};

use super::*;
use crate::alloc_count::Usage;

const PEERS: u32 = 100_000;

fn device() -> Device {
    // The loop is never run: any fd stands in for the tun device.
    let tun = match std::fs::File::open("/dev/null") {
        Ok(f) => OwnedFd::from(f),
        Err(e) => panic!("open /dev/null: {e}"),
    };
    Device::new(tun, None, None)
}

fn key(i: u32) -> PublicKey {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[31] = 0x5a;
    PublicKey(k)
}

/// 10.x.y.z/32 for peer `i`, as a hub gives each client one address.
fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
}

fn add_peers(d: &mut Device, n: u32) {
    for i in 0..n {
        let id = d.add_peer(key(i));
        if let Err(e) = d.allowed.insert(addr(i), 32, id) {
            panic!("insert: {e}");
        }
        if let Some(p) = d.peer_mut(id) {
            p.endpoint = Some(Endpoint::new(std::net::SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                51820,
            )));
        }
    }
}

fn install(d: &mut Device, i: u32) {
    let order = HandshakeToTransport::InstallKeypair {
        peer: key(i),
        local_index: i,
        remote_index: i,
        keys: SessionKeys {
            send: SessionKey::from_bytes([1; 32]),
            recv: SessionKey::from_bytes([2; 32]),
        },
        initiator: true,
    };
    assert!(d.handle_order(order).is_none());
}

/// Bytes per peer (each with an endpoint and one /32) with no session,
/// and with one session each, counted by the test allocator with
/// malloc's per-block overhead. Every table's spare capacity counts:
/// this is what the transport asks of the allocator, an upper bound
/// on what it touches. (Before keypairs were boxed: 4695 bytes per
/// idle peer.)
#[test]
fn memory_per_peer() {
    let mut d = device();
    let before = Usage::now();
    add_peers(&mut d, PEERS);
    let idle = Usage::now().since(&before) / PEERS as isize;
    let before = Usage::now();
    for i in 0..PEERS {
        install(&mut d, i);
    }
    let session = Usage::now().since(&before) / PEERS as isize;
    println!(
        "transport: {idle} bytes per peer without a session (endpoint, one /32), \
         {session} more per session (one keypair)"
    );
    assert!(idle < 450, "{idle} bytes per idle peer");
    assert!(session < 2500, "{session} bytes per session");
}

fn channel() -> (
    HandshakeChannel,
    Channel<HandshakeToTransport, TransportToHandshake>,
) {
    let (ours, theirs) = match HandshakeChannel::pair() {
        Ok(p) => p,
        Err(e) => panic!("channel pair: {e}"),
    };
    let _ = ours.set_nonblocking(true);
    let _ = theirs.set_nonblocking(true);
    (ours, theirs)
}

fn received(
    theirs: &Channel<HandshakeToTransport, TransportToHandshake>,
) -> Vec<TransportToHandshake> {
    std::iter::from_fn(|| theirs.recv().ok()).collect()
}

#[test]
fn flush_reports_only_active_peers_once() {
    let mut d = device();
    add_peers(&mut d, 3);
    let (ours, theirs) = channel();
    for (id, bits) in [(1, Activity::DATA_SENT), (1, Activity::AUTH_RECEIVED)] {
        if let Some(p) = d.peers.get_mut(id).and_then(|p| p.as_mut()) {
            note_activity(&mut d.active, id as PeerId, p, bits);
        }
    }
    assert_eq!(d.active, vec![1]);
    assert!(d.flush_activity(&ours).is_ok());
    assert_eq!(
        received(&theirs),
        vec![TransportToHandshake::Activity {
            peer: key(1),
            activity: Activity(Activity::DATA_SENT | Activity::AUTH_RECEIVED),
        }]
    );
    assert!(d.active.is_empty());
    assert!(d.flush_activity(&ours).is_ok());
    assert!(received(&theirs).is_empty());
}

#[test]
fn keypairs_expire_by_age_from_the_heap() {
    let mut d = device();
    add_peers(&mut d, 3);
    for i in 0..3 {
        install(&mut d, i);
    }
    assert_eq!(d.by_index.len(), 3);
    let soon = Instant::now();
    d.expire_keypairs(soon);
    assert_eq!(d.by_index.len(), 3, "nothing is due yet");
    // A session the handshake role cleared early leaves its entry
    // behind, which its deadline then skips.
    assert!(d
        .handle_order(HandshakeToTransport::ExpireKeypairs { peer: key(2) })
        .is_none());
    assert_eq!(d.by_index.len(), 2);
    d.expire_keypairs(soon + REJECT_AFTER_TIME + Duration::from_secs(1));
    assert!(d.by_index.is_empty());
    assert!(d.expiries.is_empty());
    for id in 0..3 {
        assert!(d
            .peers
            .get(id)
            .and_then(|p| p.as_ref())
            .is_some_and(|p| p.slots.current().is_none()));
    }
}

#[test]
fn removing_a_peer_frees_its_indices_and_its_slot() {
    let mut d = device();
    add_peers(&mut d, 3);
    for i in 0..3 {
        install(&mut d, i);
    }
    d.remove_peer(&key(1));
    let mut left: Vec<u32> = d.by_index.keys().copied().collect();
    left.sort_unstable();
    assert_eq!(left, vec![0, 2]);
    assert_eq!(d.allowed.lookup(addr(1)), None);
    // The next peer takes the free slot; the old session's deadline
    // does not touch the new peer's session.
    let new = PublicKey([9; 32]);
    assert_eq!(d.add_peer(new), 1);
    let order = HandshakeToTransport::InstallKeypair {
        peer: new,
        local_index: 1,
        remote_index: 1,
        keys: SessionKeys {
            send: SessionKey::from_bytes([3; 32]),
            recv: SessionKey::from_bytes([4; 32]),
        },
        initiator: true,
    };
    std::thread::sleep(Duration::from_millis(2));
    assert!(d.handle_order(order).is_none());
    let first_deadline = d.expiries.iter().map(|e| e.0 .0).min();
    if let Some(at) = first_deadline {
        d.expire_keypairs(at);
    }
    assert_eq!(d.by_index.get(&1), Some(&1));
    assert!(d.peer_mut(1).is_some_and(|p| p.slots.current().is_some()));
}

#[test]
fn staged_queue_frees_its_buffer() {
    let mut d = device();
    add_peers(&mut d, 1);
    if let Some(p) = d.peer_mut(0) {
        for _ in 0..MAX_STAGED {
            p.staged.push_back(vec![0; 100]);
        }
    }
    install(&mut d, 0);
    assert!(d.peer_mut(0).is_some_and(|p| p.staged.capacity() == 0));
    if let Some(p) = d.peer_mut(0) {
        p.staged.push_back(Vec::new());
    }
    assert!(d
        .handle_order(HandshakeToTransport::DropStaged { peer: key(0) })
        .is_none());
    assert!(d.peer_mut(0).is_some_and(|p| p.staged.capacity() == 0));
}
