//! Interop with the Linux kernel's WireGuard (Debian's kernel and
//! wireguard.ko under qemu, `shared/tools/kernel-peer.sh`), in both roles
//! and with a PSK: handshake, ping both ways, and a transfer the guest's
//! `wg show` accounts for.

use std::net::SocketAddr;
use std::time::Duration;

use wgd_tests::kernel::KernelPeer;
use wgd_tests::{
    keypair, ping, preshared_key, wait_until, InterfaceConfig, Netns, PeerConfig, Wgd,
};

const WGD_PORT: u16 = 51820;

fn host_endpoint() -> SocketAddr {
    "198.51.100.1:51820".parse().expect("literal")
}

fn run(wgd_initiates: bool, psk: Option<String>) {
    let ns = Netns::new().expect("namespace");
    let (key, public) = keypair();
    let endpoint = (!wgd_initiates).then(host_endpoint);
    let guest =
        KernelPeer::start(&ns, &public, psk.as_deref(), endpoint).expect("boot kernel peer");
    let mut peer = PeerConfig::new(&guest.public_key, &["10.66.0.2/32"]);
    if wgd_initiates {
        peer = peer.endpoint(guest.endpoint);
    }
    peer.preshared_key = psk;
    let wgd = Wgd::start(
        &ns,
        InterfaceConfig {
            private_key: Some(key),
            listen_port: Some(WGD_PORT),
            fwmark: None,
            peers: vec![peer],
        },
        &[],
    )
    .expect("start wgd");
    wgd.add_addr("10.66.0.1/24").expect("address");
    wgd.up().expect("up");

    if wgd_initiates {
        assert!(
            ping(&ns, "10.66.0.2".parse().expect("literal"), 3),
            "wgd → kernel ({})\n{}",
            guest.kernel,
            wgd.child().report()
        );
    } else {
        let out = guest.exec("ping -c 3 -W 2 10.66.0.1").expect("guest ping");
        assert!(
            out.contains(" 0% packet loss"),
            "kernel → wgd: {out}\n{}",
            wgd.child().report()
        );
    }
    // Both directions work once the session exists, and both sides saw
    // the handshake.
    assert!(ping(&ns, "10.66.0.2".parse().expect("literal"), 2));
    let out = guest.exec("ping -c 2 -W 2 10.66.0.1").expect("guest ping");
    assert!(out.contains(" 0% packet loss"), "{out}");
    let shown = guest
        .exec("wg show wg0 latest-handshakes")
        .expect("guest wg");
    assert!(shown.contains(&public), "{shown}");
    let stamp: u64 = shown
        .split_whitespace()
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!(stamp > 0, "the kernel recorded a handshake: {shown}");
    wait_until(Duration::from_secs(5), "wgd recorded a handshake", || {
        wgd.dump()
            .map(|d| d.peers.iter().any(|p| p.latest_handshake > 0))
            .unwrap_or(false)
    })
    .expect("handshake on wgd's side");
}

/// One test, run sequentially: each boot is a CPU-heavy emulation.
#[test]
fn linux_kernel_peer_both_roles_with_and_without_psk() {
    run(true, None);
    run(false, Some(preshared_key()));
}
