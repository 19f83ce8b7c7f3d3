//! The userspace API keys stock `wg(8)` rarely sends, spoken raw to a
//! running wgd: `update_only`, `remove`, `replace_peers`,
//! `replace_allowed_ips`, removal of one allowed IP (`allowed_ip=-…`) and
//! `protocol_version`; and the modes of the socket and its directory.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use wgd_tests::{keypair, InterfaceConfig, Netns, PeerConfig, Wgd};

fn hex(b64: &str) -> String {
    B64.decode(b64)
        .expect("base64 key")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Sends one request and returns the reply up to and including the blank
/// line.
fn request(w: &Wgd, text: &str) -> String {
    let mut s = UnixStream::connect(w.socket_path()).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(text.as_bytes()).expect("write");
    let mut out = String::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with("\n\n") {
        let n = s.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        out.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    out
}

fn set(w: &Wgd, lines: &str) -> String {
    request(w, &format!("set=1\n{lines}\n"))
}

/// Peers and their allowed IPs, from `get=1`, keyed by hex public key.
fn peers(w: &Wgd) -> Vec<(String, Vec<String>)> {
    let reply = request(w, "get=1\n\n");
    assert!(reply.ends_with("errno=0\n\n"), "{reply}");
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in reply.lines() {
        if let Some(k) = line.strip_prefix("public_key=") {
            out.push((k.to_string(), Vec::new()));
        } else if let Some(ip) = line.strip_prefix("allowed_ip=") {
            if let Some(last) = out.last_mut() {
                last.1.push(ip.to_string());
            }
        }
    }
    out
}

#[test]
fn rarely_sent_keys_and_socket_modes() {
    let ns = Netns::new().expect("namespace");
    let (_, a) = keypair();
    let (_, b) = keypair();
    let (_, c) = keypair();
    let w = Wgd::start(
        &ns,
        InterfaceConfig {
            private_key: None,
            listen_port: None,
            fwmark: None,
            peers: vec![PeerConfig::new(&a, &["10.70.0.0/24", "10.70.1.0/24"])],
        },
        &[],
    )
    .expect("start wgd");
    let (ha, hb, hc) = (hex(&a), hex(&b), hex(&c));

    // The socket is 0600 in a 0755 directory.
    let sock_mode = std::fs::metadata(w.socket_path())
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(sock_mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata("/var/run/wireguard")
        .expect("dir")
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o777, 0o755);

    // update_only on an unknown peer changes nothing; on a known one it
    // updates.
    assert_eq!(
        set(
            &w,
            &format!("public_key={hb}\nupdate_only=true\nallowed_ip=10.71.0.0/24\n")
        ),
        "errno=0\n\n"
    );
    assert_eq!(peers(&w).len(), 1);
    assert_eq!(
        set(
            &w,
            &format!("public_key={ha}\nupdate_only=true\nallowed_ip=10.70.2.0/24\n")
        ),
        "errno=0\n\n"
    );
    assert_eq!(peers(&w)[0].1.len(), 3);

    // One allowed IP removed with the `-` form; protocol_version=1 is fine.
    assert_eq!(
        set(
            &w,
            &format!("public_key={ha}\nprotocol_version=1\nallowed_ip=-10.70.1.0/24\n")
        ),
        "errno=0\n\n"
    );
    assert_eq!(peers(&w)[0].1, vec!["10.70.0.0/24", "10.70.2.0/24"]);

    // replace_allowed_ips replaces the list.
    assert_eq!(
        set(
            &w,
            &format!("public_key={ha}\nreplace_allowed_ips=true\nallowed_ip=10.72.0.0/16\n")
        ),
        "errno=0\n\n"
    );
    assert_eq!(peers(&w)[0].1, vec!["10.72.0.0/16"]);

    // An unsupported protocol version is refused and changes nothing.
    let r = set(&w, &format!("public_key={hb}\nprotocol_version=2\n"));
    assert!(r.starts_with("errno=-") && r != "errno=0\n\n", "{r}");
    assert_eq!(peers(&w).len(), 1);

    // replace_peers drops every peer not named after it.
    assert_eq!(
        set(&w, &format!("public_key={hb}\nallowed_ip=10.73.0.0/24\n")),
        "errno=0\n\n"
    );
    assert_eq!(peers(&w).len(), 2);
    assert_eq!(
        set(&w, &format!("replace_peers=true\npublic_key={hc}\n")),
        "errno=0\n\n"
    );
    let now: Vec<String> = peers(&w).into_iter().map(|(k, _)| k).collect();
    assert_eq!(now, vec![hc.clone()]);

    // remove=true removes one peer.
    assert_eq!(
        set(&w, &format!("public_key={hc}\nremove=true\n")),
        "errno=0\n\n"
    );
    assert!(peers(&w).is_empty());
    assert!(w.child().is_running(), "{}", w.child().report());
}
