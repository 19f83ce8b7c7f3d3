//! The order of a responder's orders to the transport. The transport may
//! carry them out in two batches (it drains a bounded number per turn,
//! and the handshake role may not have written them all yet), flushing
//! the packets of the first batch before it reads the second; the
//! initiator's confirming keepalive answers our response within a
//! fraction of a millisecond. So the keypair must be installed before the
//! response can leave, or that keepalive meets an unknown index (seen in
//! up to a quarter of the handshakes of `scripts/storm.sh`).

mod common;

use std::time::Instant;

use common::*;
use proto::ipc::HandshakeToTransport;
use wg_handshake::Config;

#[test]
fn responder_installs_its_keypair_before_it_sends_the_response() {
    let t0 = Instant::now();
    let (mut a, mut b) = pair(t0, Config::default());
    let (_, responder) = handshake(t0, &mut a, &mut b);
    let at = |what: &str, f: fn(&HandshakeToTransport) -> bool| {
        responder
            .iter()
            .position(f)
            .unwrap_or_else(|| panic!("no {what} in {responder:?}"))
    };
    let endpoint = at("endpoint", |x| {
        matches!(x, HandshakeToTransport::HandshakeReceived { .. })
    });
    let install = at("keypair", |x| {
        matches!(x, HandshakeToTransport::InstallKeypair { .. })
    });
    let send = at("response", |x| {
        matches!(x, HandshakeToTransport::Send { .. })
    });
    assert!(
        endpoint < send && install < send,
        "the endpoint and the keypair must precede the response: {responder:?}"
    );
}
