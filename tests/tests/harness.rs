//! Harness self-test: two wireguard-go peers in two namespaces, linked by a
//! veth with IPv4 and IPv6 outer addresses. Shows the plumbing works (it is
//! not a wgd test): handshakes over both outer families, ping over both
//! inner families, 10 MiB TCP each way with matching checksums, and that
//! dropping the guards leaves nothing behind.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use wgd_tests::{
    link, netns_exists, pid_exists, ping, tcp_transfer, wait_until, Netns, PeerConfig, WgGo,
};

const PORT_A: u16 = 51820;
const PORT_B: u16 = 51821;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

#[test]
fn two_wireguard_go_peers() {
    let started = Instant::now();
    let (namespaces, sockets, pids) = {
        let ns_a = Netns::new().expect("create namespace A");
        let ns_b = Netns::new().expect("create namespace B");
        link(
            &ns_a,
            &ns_b,
            "10.200.0.1/24",
            "10.200.0.2/24",
            "fd00:200::1/64",
            "fd00:200::2/64",
        )
        .expect("veth between A and B");

        let wg_a = WgGo::start(&ns_a).expect("start wireguard-go in A");
        let wg_b = WgGo::start(&ns_b).expect("start wireguard-go in B");
        assert_ne!(wg_a.ifname(), wg_b.ifname());

        let outer_a_v4 = SocketAddr::new(ip("10.200.0.1"), PORT_A);
        let outer_a_v6 = SocketAddr::new(ip("fd00:200::1"), PORT_A);
        let outer_b_v4 = SocketAddr::new(ip("10.200.0.2"), PORT_B);
        let outer_b_v6 = SocketAddr::new(ip("fd00:200::2"), PORT_B);

        // A reaches B over IPv4; B reaches A over IPv6.
        wg_a.configure(
            PORT_A,
            vec![
                PeerConfig::new(wg_b.public_key(), &["10.201.0.2/32", "fd00:201::2/128"])
                    .endpoint(outer_b_v4),
            ],
        )
        .expect("configure A");
        wg_b.configure(
            PORT_B,
            vec![
                PeerConfig::new(wg_a.public_key(), &["10.201.0.1/32", "fd00:201::1/128"])
                    .endpoint(outer_a_v6),
            ],
        )
        .expect("configure B");
        for (wg, v4, v6) in [
            (&wg_a, "10.201.0.1/24", "fd00:201::1/64"),
            (&wg_b, "10.201.0.2/24", "fd00:201::2/64"),
        ] {
            wg.add_addr(v4).expect("inner IPv4 address");
            wg.add_addr(v6).expect("inner IPv6 address");
            wg.up().expect("interface up");
        }

        // A initiates over IPv4 outer: B learns A's IPv4 endpoint.
        assert!(ping(&ns_a, ip("10.201.0.2"), 3), "IPv4 ping A -> B");
        wg_a.wait_handshake(wg_b.public_key(), Duration::from_secs(5))
            .expect("A has a handshake with B");
        let seen = wg_b.dump().expect("B dump");
        assert_eq!(
            seen.peer(wg_a.public_key()).and_then(|p| p.endpoint),
            Some(outer_a_v4),
            "B sees A over IPv4 outer"
        );

        // Point B back at A's IPv6 outer address; B's traffic then reaches
        // A over IPv6 and A roams B's endpoint to it.
        let ep = outer_a_v6.to_string();
        wg_b.set(&["peer", wg_a.public_key(), "endpoint", ep.as_str()])
            .expect("set B's endpoint for A to IPv6");
        assert!(ping(&ns_b, ip("fd00:201::1"), 3), "IPv6 ping B -> A");
        wait_until(Duration::from_secs(5), "A to see B over IPv6 outer", || {
            wg_a.dump()
                .ok()
                .and_then(|d| d.peer(wg_b.public_key()).and_then(|p| p.endpoint))
                == Some(outer_b_v6)
        })
        .expect("A roams B's endpoint to IPv6");
        assert!(ping(&ns_a, ip("fd00:201::2"), 3), "IPv6 ping A -> B");
        assert!(ping(&ns_b, ip("10.201.0.1"), 3), "IPv4 ping B -> A");

        // 10 MiB each way, IPv4 inner one way and IPv6 inner the other.
        let timeout = Duration::from_secs(20);
        let ab =
            tcp_transfer(&ns_a, &ns_b, ip("10.201.0.2"), 10, timeout).expect("TCP transfer A -> B");
        eprintln!("A -> B: {ab}");
        assert!(ab.is_intact(), "A -> B transfer corrupted: {ab}");
        assert_eq!(ab.sent_bytes, 10 * wgd_tests::MIB);
        let ba = tcp_transfer(&ns_b, &ns_a, ip("fd00:201::1"), 10, timeout)
            .expect("TCP transfer B -> A");
        eprintln!("B -> A: {ba}");
        assert!(ba.is_intact(), "B -> A transfer corrupted: {ba}");
        assert_eq!(ba.sent_bytes, 10 * wgd_tests::MIB);

        // The counters saw it too.
        let dump = wg_a.dump().expect("A dump");
        let b_seen_by_a = dump.peer(wg_b.public_key()).expect("A lists B");
        assert!(b_seen_by_a.tx_bytes > 10 * wgd_tests::MIB);
        assert!(b_seen_by_a.rx_bytes > 10 * wgd_tests::MIB);

        for wg in [&wg_a, &wg_b] {
            assert!(wg.child().is_running(), "{}", wg.child().report());
            assert!(wg.socket_path().exists());
        }
        (
            [ns_a.name().to_string(), ns_b.name().to_string()],
            [wg_a.socket_path(), wg_b.socket_path()],
            [wg_a.pid(), wg_b.pid()],
        )
        // Dropped here: wg_b, wg_a, then the veth's namespaces.
    };

    for name in &namespaces {
        assert!(!netns_exists(name), "namespace {name} left behind");
    }
    for sock in &sockets {
        assert!(!sock.exists(), "socket {} left behind", sock.display());
    }
    for pid in pids {
        assert!(!pid_exists(pid), "wireguard-go pid {pid} still exists");
    }
    eprintln!("harness self-test took {:?}", started.elapsed());
}

/// Dropping the namespace before the process guard still kills the
/// process (by pid), and the later guard drop is harmless.
#[test]
fn namespace_drop_kills_its_children() {
    let ns = Netns::new().expect("create namespace");
    let name = ns.name().to_string();
    let wg = WgGo::start(&ns).expect("start wireguard-go");
    let pid = wg.pid();
    let sock: PathBuf = wg.socket_path();
    let child = ns.spawn("sleep", ["30"]).expect("spawn sleep");
    let sleep_pid = child.pid();
    drop(wg);
    assert!(
        !pid_exists(pid),
        "wireguard-go pid {pid} survives its guard"
    );
    assert!(!sock.exists(), "socket survives its guard");
    drop(ns);
    assert!(!netns_exists(&name), "namespace {name} left behind");
    assert!(
        !pid_exists(sleep_pid),
        "sleep pid {sleep_pid} survives its namespace"
    );
    assert!(!child.is_running());
    drop(child);
}
