//! Issue 11, end to end: the transport refuses and counts the orders the
//! genuine handshake role never gives, and keeps serving.
//!
//! wgd runs with `WGD_TEST_HOOKS=1` (test builds only, see
//! `wg_handshake::process::test_hook`): its handshake role, on a cue
//! datagram, orders the transport to send a data message, an initiation
//! of the wrong length, 65,000 bytes of anything, an initiation to an
//! address, a cookie reply to an address no packet came from, and to
//! move a peer's endpoint there. The test sends the cue from one socket
//! and listens on that one and on the "stranger" (the next port): nothing
//! reaches either, `drop_bad_order` counts six, no role restarts, and the
//! tunnel to wireguard-go carries traffic before and after.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::*;
use wgd_tests::{ping, wait_until};

/// Bytes 8..40 of the cue (`wg_handshake::process::test_hook::TRIGGER`).
const TRIGGER: &[u8; 32] = b"wgd test hook: send bad orders!!";
const BAD_ORDERS: u64 = 6;
const CUE_PORT: u16 = 40_001;

#[test]
fn bad_orders_are_refused_counted_and_the_tunnel_stays() {
    let net = net();
    let mut setup = Setup::new(Kind::Wgd, Kind::Go);
    setup.wgd_env = vec![("WGD_TEST_HOOKS", "1")];
    let (a, b) = pair(&net, &setup);
    let w = a.wgd();
    assert!(
        ping(&net.ns_a, ip(INNER_B4), 3),
        "tunnel before\n{}",
        a.report()
    );
    let roles_before = w.roles();
    let before = w.counter("drop_bad_order").expect("counter");
    assert_eq!(before, 0, "a genuine handshake role gives no bad order");

    let (cue, stranger) = net
        .ns_a
        .enter(|| {
            (
                UdpSocket::bind(sa(OUTER_A4, CUE_PORT)),
                UdpSocket::bind(sa(OUTER_A4, CUE_PORT + 1)),
            )
        })
        .expect("enter wgd's namespace");
    let cue = cue.expect("bind the cue socket");
    let stranger = stranger.expect("bind the stranger socket");
    let mut pkt = [0u8; 148];
    pkt[0] = 1;
    pkt[8..40].copy_from_slice(TRIGGER);
    cue.send_to(&pkt, sa(OUTER_A4, PORT_A))
        .expect("send the cue");

    wait_until(Duration::from_secs(5), "six bad orders counted", || {
        w.counter("drop_bad_order")
            .is_ok_and(|n| n >= before + BAD_ORDERS)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", a.report()));
    assert_eq!(
        w.counter("drop_bad_order").expect("counter"),
        before + BAD_ORDERS
    );
    // The orders were carried out (refused) in one turn of the loop, and
    // a datagram would have gone in that turn's flush: none came.
    for (sock, what) in [(&cue, "the cue's source"), (&stranger, "the stranger")] {
        sock.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let mut buf = [0u8; 65_536];
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            panic!("{what} got {n} bytes from {from}");
        }
    }
    assert!(
        ping(&net.ns_a, ip(INNER_B4), 3),
        "tunnel after\n{}",
        a.report()
    );
    let pids = |r: &[wgd_tests::wgd::RoleProcess]| r.iter().map(|p| p.pid).collect::<Vec<_>>();
    assert_eq!(
        pids(&w.roles()),
        pids(&roles_before),
        "no role died or restarted"
    );
    assert!(
        w.child()
            .stderr()
            .contains("refused an order of the handshake role"),
        "the refusal is logged\n{}",
        a.report()
    );
    drop(b);
}
