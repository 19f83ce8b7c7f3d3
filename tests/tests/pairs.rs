//! Real tunnels: wgd ↔ wgd, and wgd ↔ wireguard-go with wgd as initiator
//! and as responder. Each pairing shows ping over IPv4 and IPv6 inside,
//! over IPv4 and then IPv6 outer endpoints, 50 MiB of TCP each way with
//! matching checksums, all with a PSK on both sides; and no traffic at all
//! with a wrong PSK or a wrong public key.

mod common;

use std::time::Duration;

use common::*;
use wgd_tests::{ping, tcp_transfer, wait_until};

const MIB: u64 = 50;
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(120);

fn full_pairing(a: Kind, b: Kind) {
    let net = net();
    // Only A knows where B is: A initiates.
    let setup = Setup::new(a, b).with_psk();
    let (side_a, side_b) = pair(&net, &setup);

    for (addr, what) in [(INNER_B4, "IPv4"), (INNER_B6, "IPv6")] {
        assert!(
            ping(&net.ns_a, ip(addr), 3),
            "{what} ping through the tunnel over IPv4 outer\nA: {}\nB: {}",
            side_a.report(),
            side_b.report()
        );
    }
    let b_pub = only_peer(&side_a.dump().expect("dump A"))
        .public_key
        .clone();
    let seen_by_b = only_peer(&side_b.dump().expect("dump B")).endpoint;
    assert_eq!(
        seen_by_b,
        Some(sa(OUTER_A4, PORT_A)),
        "B learnt A's IPv4 endpoint"
    );

    // Move to IPv6 outer endpoints: B learns A's new source by roaming.
    let e6 = sa(OUTER_B6, PORT_B).to_string();
    side_a
        .set(&["peer", &b_pub, "endpoint", &e6])
        .expect("set IPv6 endpoint");
    for (addr, what) in [(INNER_B4, "IPv4"), (INNER_B6, "IPv6")] {
        assert!(
            ping(&net.ns_a, ip(addr), 3),
            "{what} ping through the tunnel over IPv6 outer\nA: {}",
            side_a.report()
        );
    }
    wait_until(Duration::from_secs(5), "B sees A's IPv6 endpoint", || {
        side_b
            .dump()
            .map(|d| only_peer(&d).endpoint == Some(sa(OUTER_A6, PORT_A)))
            .unwrap_or(false)
    })
    .expect("roamed to IPv6");

    // 50 MiB each way, checksummed at both ends.
    let t = tcp_transfer(&net.ns_a, &net.ns_b, ip(INNER_B4), MIB, TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("A→B transfer: {e}\nA: {}", side_a.report()));
    assert!(t.is_intact(), "A→B transfer intact: {t:?}");
    eprintln!("A→B {MIB} MiB: {:.0} Mbit/s", t.mbit_per_s());
    let t = tcp_transfer(&net.ns_b, &net.ns_a, ip(INNER_A6), MIB, TRANSFER_TIMEOUT)
        .unwrap_or_else(|e| panic!("B→A transfer: {e}\nB: {}", side_b.report()));
    assert!(t.is_intact(), "B→A transfer intact: {t:?}");
    eprintln!("B→A {MIB} MiB: {:.0} Mbit/s", t.mbit_per_s());

    let d = side_a.dump().expect("dump A");
    let p = only_peer(&d);
    assert!(p.rx_bytes > MIB << 20 && p.tx_bytes > MIB << 20, "{p:?}");
    assert!(p.latest_handshake > 0);
}

#[test]
fn wgd_to_wgd() {
    full_pairing(Kind::Wgd, Kind::Wgd);
}

#[test]
fn wgd_initiates_to_wireguard_go() {
    full_pairing(Kind::Wgd, Kind::Go);
}

#[test]
fn wireguard_go_initiates_to_wgd() {
    full_pairing(Kind::Go, Kind::Wgd);
}

fn no_traffic(setup: Setup) {
    let net = net();
    let (side_a, side_b) = pair(&net, &setup);
    assert!(!ping(&net.ns_a, ip(INNER_B4), 2), "no traffic may pass");
    // The initiator keeps retrying; nobody may ever record a handshake.
    for side in [&side_a, &side_b] {
        let d = side.dump().expect("dump");
        assert_eq!(only_peer(&d).latest_handshake, 0, "no handshake completed");
        // Counters may include handshake attempts (wireguard-go counts
        // them), but never a data packet: 1 KiB is far below a ping.
        assert!(only_peer(&d).rx_bytes < 1024, "{:?}", only_peer(&d));
    }
}

#[test]
fn wrong_psk_passes_no_traffic() {
    for (a, b) in [
        (Kind::Wgd, Kind::Go),
        (Kind::Go, Kind::Wgd),
        (Kind::Wgd, Kind::Wgd),
    ] {
        let mut s = Setup::new(a, b).with_psk();
        s.psk_b = Some(wgd_tests::preshared_key());
        no_traffic(s);
    }
}

#[test]
fn wrong_public_key_passes_no_traffic() {
    for (a, b) in [(Kind::Wgd, Kind::Go), (Kind::Go, Kind::Wgd)] {
        let mut s = Setup::new(a, b);
        s.wrong_key_for_b = true;
        no_traffic(s);
    }
}
