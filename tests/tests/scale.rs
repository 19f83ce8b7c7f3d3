//! No size of configuration kills the daemon (issue 10): every message
//! between the processes is bounded, configuration travels in batches and
//! status in pages, and the `get` reply is streamed.
//!
//! - `twenty_thousand_peers_round_trip_through_stock_wg_while_a_tunnel_runs`:
//!   20,000 peers with 240,000 allowed IPs between them (IPv4 and IPv6)
//!   added with `wg addconf` to an interface with a live peer, read back
//!   exactly with `wg show dump`, changed in one peer with `wg syncconf`,
//!   shown with `wgctl show --json`; the raw `get` reply is over 10 MB;
//!   a ping stream through the live peer loses nothing and no process of
//!   wgd dies.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use common::*;
use rand::RngCore;
use wgd_tests::{wg, Child, InterfaceConfig, PeerConfig};

const PEERS: usize = 20_000;
const IPS_PER_PEER: usize = 12;

fn random_key() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Peer `i`'s prefixes: six IPv4 /32s and six IPv6 /128s, all distinct.
fn prefixes(i: usize) -> Vec<String> {
    (0..IPS_PER_PEER)
        .map(|j| {
            let n = (i * IPS_PER_PEER + j) as u32;
            if j % 2 == 0 {
                let a = 0x6400_0000u32 + n;
                format!(
                    "{}.{}.{}.{}/32",
                    a >> 24,
                    (a >> 16) & 255,
                    (a >> 8) & 255,
                    a & 255
                )
            } else {
                format!("fd77:{:x}:{:x}::1/128", n >> 16, n & 0xffff)
            }
        })
        .collect()
}

fn conf_file(peers: &[PeerConfig]) -> tempfile::NamedTempFile {
    let text = InterfaceConfig {
        peers: peers.to_vec(),
        ..Default::default()
    }
    .to_conf();
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write conf");
    f.flush().expect("flush conf");
    f
}

fn wgctl_bin() -> PathBuf {
    let wgd = wgd_tests::wgd::binary().expect("wgd binary (cargo build --workspace --bins)");
    wgd.with_file_name("wgctl")
}

/// The raw reply to `get=1`, read to its end.
fn raw_get(sock: &std::path::Path) -> Vec<u8> {
    let mut s = UnixStream::connect(sock).expect("connect to the control socket");
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    s.write_all(b"get=1\n\n").expect("send get");
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    // Bounded: the reply ends with errno and an empty line, or the
    // connection closes; at most 256 MiB are read.
    while !out.ends_with(b"errno=0\n\n") && out.len() < 256 << 20 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading the get reply: {e}"),
        }
    }
    out
}

/// (transmitted, received) of a finished ping.
fn ping_result(p: &Child) -> (u32, u32) {
    p.wait_exit(Duration::from_secs(120)).expect("ping ends");
    let out = p.stdout();
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary\n{}", p.report()));
    let mut n = line
        .split(',')
        .map(|f| f.split_whitespace().next().and_then(|x| x.parse().ok()));
    (
        n.next().flatten().expect("transmitted"),
        n.next().flatten().expect("received"),
    )
}

#[test]
fn twenty_thousand_peers_round_trip_through_stock_wg_while_a_tunnel_runs() {
    let net = net();
    let (a, _b) = pair(&net, &Setup::new(Kind::Wgd, Kind::Go));
    let w = a.wgd();
    assert!(
        wgd_tests::ping(&net.ns_a, ip(INNER_B4), 2),
        "tunnel\n{}",
        a.report()
    );
    let live = only_peer(&w.dump().expect("dump")).public_key.clone();
    let roles_before: Vec<u32> = w.roles().iter().map(|r| r.pid).collect();

    // A ping every 50 ms through the live peer for the whole test.
    let stream = net
        .ns_a
        .spawn(
            "ping",
            ["-n", "-i", "0.05", "-W", "1", "-c", "600", INNER_B4],
        )
        .expect("start ping");

    let peers: Vec<PeerConfig> = (0..PEERS)
        .map(|i| {
            let ips = prefixes(i);
            let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
            PeerConfig::new(&random_key(), &refs)
        })
        .collect();
    let file = conf_file(&peers);
    let path = file.path().to_str().expect("utf-8 path").to_string();
    net.ns_a
        .run("wg", ["addconf", w.ifname(), path.as_str()])
        .unwrap_or_else(|e| panic!("wg addconf of {PEERS} peers: {e}\n{}", w.child().report()));

    // Read back exactly: every peer, every prefix, in the order given.
    let dump = w.dump().expect("wg show dump");
    assert_eq!(dump.peers.len(), PEERS + 1);
    let shown: HashMap<&str, &Vec<String>> = dump
        .peers
        .iter()
        .map(|p| (p.public_key.as_str(), &p.allowed_ips))
        .collect();
    for p in &peers {
        assert_eq!(
            shown.get(p.public_key.as_str()).copied(),
            Some(&p.allowed_ips),
            "peer {} read back differently",
            p.public_key
        );
    }
    let reply = raw_get(&w.socket_path());
    assert!(
        reply.len() > 10 << 20 && reply.ends_with(b"errno=0\n\n"),
        "a complete get reply over 10 MB: {} bytes",
        reply.len()
    );

    // One peer changed with syncconf (the live peer is in the file too, or
    // syncconf would remove it).
    let mut changed = peers.clone();
    changed[7].allowed_ips = vec!["10.99.7.0/24".to_string()];
    let mut with_live = changed.clone();
    let live_conf = dump.peer(&live).expect("live peer").clone();
    with_live.push(PeerConfig {
        public_key: live.clone(),
        preshared_key: None,
        endpoint: live_conf.endpoint,
        allowed_ips: live_conf.allowed_ips.clone(),
        persistent_keepalive: None,
    });
    // A whole configuration, interface included: `wg syncconf` sends the
    // file's private key and port, and their absence as zero.
    let text = InterfaceConfig {
        private_key: Some(w.private_key().to_string()),
        listen_port: Some(PORT_A),
        fwmark: None,
        peers: with_live,
    }
    .to_conf();
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(text.as_bytes()).expect("write conf");
    file.flush().expect("flush conf");
    let path = file.path().to_str().expect("utf-8 path").to_string();
    net.ns_a
        .run("wg", ["syncconf", w.ifname(), path.as_str()])
        .unwrap_or_else(|e| panic!("wg syncconf: {e}\n{}", w.child().report()));
    let dump = w.dump().expect("wg show dump");
    assert_eq!(dump.peers.len(), PEERS + 1);
    assert_eq!(
        dump.peer(&changed[7].public_key).map(|p| &p.allowed_ips),
        Some(&changed[7].allowed_ips)
    );
    assert_eq!(
        dump.peer(&changed[8].public_key).map(|p| &p.allowed_ips),
        Some(&changed[8].allowed_ips)
    );

    // wgctl reads the whole reply too.
    let json = net
        .ns_a
        .run(
            wgctl_bin().to_str().expect("utf-8 path"),
            ["show", w.ifname(), "--json"],
        )
        .expect("wgctl show --json");
    let count = json.matches("\"public_key\"").count();
    assert!(
        count > PEERS,
        "wgctl show --json lists every peer ({count})"
    );

    let (sent, received) = ping_result(&stream);
    assert!(
        sent >= 600 && received >= sent - 1,
        "the live tunnel kept passing traffic: {received}/{sent}\n{}",
        stream.stdout()
    );
    let roles_after: Vec<u32> = w.roles().iter().map(|r| r.pid).collect();
    assert_eq!(roles_after, roles_before, "no role died or was restarted");
    assert!(w.child().is_running(), "{}", w.child().report());
    let _ = wg::dump(&net.ns_a, w.ifname()).expect("still answering");
}
