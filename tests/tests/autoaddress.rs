//! `AutoAddress = true`: each peer gets its key-derived address (fd77::/16
//! followed by the first 14 bytes of SHA-224 of its public key) as an
//! extra /128 allowed IP. The expected address is computed here with Python's
//! hashlib, independently of wgd's code.

use std::net::Ipv6Addr;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use wgd_tests::wggo::fresh_ifname;
use wgd_tests::{keypair, socket_path, wait_until, wg, Netns};

fn derived_by_python(public_b64: &str) -> Ipv6Addr {
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(
            "import base64,hashlib,ipaddress,sys; \
             d=hashlib.sha224(base64.b64decode(sys.argv[1])).digest()[:14]; \
             print(ipaddress.IPv6Address(bytes([0xfd,0x77])+d))",
        )
        .arg(public_b64)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("an IPv6 address")
}

#[test]
fn auto_address_adds_each_peers_derived_address() {
    let ns = Netns::new().expect("namespace");
    let (private, _) = keypair();
    let (_, p1) = keypair();
    let (_, p2) = keypair();
    assert_eq!(B64.decode(&p1).map(|k| k.len()).ok(), Some(32));
    let dir = tempfile::tempdir().expect("temp dir");
    let conf = dir.path().join("auto.conf");
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {private}\nAutoAddress = true\n\n\
             [Peer]\nPublicKey = {p1}\nAllowedIPs = 10.77.1.0/24\n\n\
             [Peer]\nPublicKey = {p2}\n"
        ),
    )
    .expect("config");
    let ifname = fresh_ifname().expect("name");
    let bin = wgd_tests::wgd::binary().expect("wgd binary");
    let child = ns
        .spawn(
            &bin.to_string_lossy(),
            ["-f", "-c", conf.to_string_lossy().as_ref(), ifname.as_str()],
        )
        .expect("start wgd");
    let sock = socket_path(&ifname);
    wait_until(Duration::from_secs(10), "wgd socket", || {
        sock.exists() || !child.is_running()
    })
    .expect("socket");
    assert!(child.is_running(), "{}", child.report());

    let dump = wg::dump(&ns, &ifname).expect("dump");
    for (key, extra) in [(&p1, Some("10.77.1.0/24")), (&p2, None)] {
        let peer = dump.peer(key).expect("peer present");
        let want = format!("{}/128", derived_by_python(key));
        assert!(
            peer.allowed_ips.contains(&want),
            "{key}: {:?} lacks {want}",
            peer.allowed_ips
        );
        if let Some(e) = extra {
            assert!(
                peer.allowed_ips.iter().any(|a| a == e),
                "{:?}",
                peer.allowed_ips
            );
        }
        assert!(want.starts_with("fd77:"));
    }
    child.stop(Duration::from_secs(3));
}
