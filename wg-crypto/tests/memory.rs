//! Scale: what a peer costs the crypto role's key store in memory, at
//! 100,000 peers, with and without a PSK.
//!
//! This matters beyond the total: the crypto role locks its memory
//! (`mlockall`), so its heap counts against `RLIMIT_MEMLOCK`. A counting
//! global allocator (this test binary's own) measures the heap; counts are
//! per thread, since the harness runs tests in parallel.

use proto::keys::{PublicKey, SecretKey};
use wg_crypto::KeyStore;

#[global_allocator]
static COUNTING: proto::alloc_count::Counting = proto::alloc_count::Counting;

/// Heap this thread holds now, with malloc's per-block overhead.
fn heap() -> isize {
    let u = proto::alloc_count::Usage::now();
    u.since(&proto::alloc_count::Usage {
        bytes: 0,
        blocks: 0,
        allocated: 0,
    })
}

const PEERS: u32 = 100_000;

fn key(i: u32) -> PublicKey {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[31] = 0x11;
    PublicKey(k)
}

fn per_peer(psk: bool) -> isize {
    let mut store = KeyStore::new();
    let before = heap();
    for i in 0..PEERS {
        let psk = psk.then(|| SecretKey::from_bytes([0x42; 32]));
        store.set_peer(key(i), psk);
    }
    let n = (heap() - before) / PEERS as isize;
    assert_eq!(store.peer_count(), PEERS as usize);
    n
}

#[test]
fn memory_per_peer() {
    let plain = per_peer(false);
    let with_psk = per_peer(true);
    println!("crypto: {plain} bytes per peer, {with_psk} with a PSK");
    // 137 and 185 before each peer kept its 32-byte static-static DH
    // (179 and 227 with it, the table's spare slots included).
    assert!(plain < 200, "{plain} bytes per peer");
    assert!(with_psk < 240, "{with_psk} bytes per peer with a PSK");
}

/// A channel receive reuses one buffer, allocated at the first receive:
/// a role receiving a message per packet (the handshake role under a
/// storm, the key holder's questions) does not allocate the 64 KiB frame
/// each time. What a decoded message itself owns (here 148 bytes of
/// packet) is all a receive may allocate.
#[test]
fn a_channel_receive_does_not_allocate_its_frame_each_time() {
    use proto::channel::Channel;
    use proto::ipc::{Endpoint, HandshakeToTransport, TransportToHandshake};
    let (tx, rx): (
        Channel<TransportToHandshake, HandshakeToTransport>,
        Channel<HandshakeToTransport, TransportToHandshake>,
    ) = Channel::pair().expect("channel pair");
    let msg = || TransportToHandshake::HandshakePacket {
        bytes: vec![1; 148],
        from: Endpoint::new("192.0.2.1:51820".parse().expect("literal")),
    };
    // The first receive sets the buffer up.
    tx.send(&msg()).expect("send");
    drop(rx.recv().expect("recv"));
    let mut received = 0usize;
    for _ in 0..1000 {
        tx.send(&msg()).expect("send");
        let before = proto::alloc_count::Usage::now().allocated;
        let m = rx.recv().expect("recv");
        received += proto::alloc_count::Usage::now().allocated - before;
        drop(m);
    }
    let per_message = received / 1000;
    assert!(
        per_message < 1024,
        "a receive allocates {per_message} bytes (the frame is 64 KiB)"
    );
}
