//! The documented differences from the reference implementations
//! (wgd(8), COMPATIBILITY), each shown as a user sees it, side by side
//! with wireguard-go given the same configuration. Both follow from one
//! design rule: secrets are write-only, so `get` never returns the
//! private key or a preshared key.
//!
//! - `wg_show_and_showconf_lack_exactly_the_secret_lines`: `wg show` and
//!   `wg showconf` print what wireguard-go prints but for the interface's
//!   public and private key and the preshared key;
//! - `wg_syncconf_keeps_a_removed_psk_as_with_wireguard_go_and_wgctl_syncconf_removes_it`:
//!   what looked like a third difference is none: after the PSK is taken
//!   out of both ends' files, stock `wg syncconf` leaves it in place in
//!   wireguard-go too (it sends only what the file has), so handshakes
//!   fail on both alike; `wgctl syncconf` removes it.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use wgd_tests::{
    keypair, ping, preshared_key, wait_until, InterfaceConfig, Netns, PeerConfig, WgGo, Wgd,
};

fn wgctl_bin() -> PathBuf {
    let wgd = wgd_tests::wgd::binary().expect("wgd binary (cargo build --workspace --bins)");
    let p = wgd.with_file_name("wgctl");
    assert!(p.exists(), "{} is missing", p.display());
    p
}

fn conf_file(conf: &InterfaceConfig) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(conf.to_conf().as_bytes()).expect("write conf");
    f.flush().expect("flush conf");
    f
}

/// The lines of a `wg` command's output, trimmed, without blank lines and
/// without the line naming the interface (its name differs).
fn lines(ns: &Netns, args: &[&str]) -> BTreeSet<String> {
    let out = ns.run("wg", args).expect("wg");
    out.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("interface:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn wg_show_and_showconf_lack_exactly_the_secret_lines() {
    let (key, public) = keypair();
    let (_, peer) = keypair();
    let psk = preshared_key();
    let conf = InterfaceConfig {
        private_key: Some(key.clone()),
        listen_port: Some(51820),
        fwmark: None,
        peers: vec![PeerConfig {
            preshared_key: Some(psk.clone()),
            persistent_keepalive: Some(25),
            ..PeerConfig::new(&peer, &["10.77.0.2/32"]).endpoint(sa("10.76.0.2", 51820))
        }],
    };
    let ns_go = Netns::new().expect("namespace");
    let ns_wgd = Netns::new().expect("namespace");
    let go = WgGo::start(&ns_go).expect("wireguard-go");
    go.setconf(&conf).expect("configure wireguard-go");
    let w = Wgd::start(&ns_wgd, conf, &[]).expect("wgd");

    let show_go = lines(&ns_go, &["show", go.ifname()]);
    let show_wgd = lines(&ns_wgd, &["show", w.ifname()]);
    let missing: BTreeSet<String> = show_go.difference(&show_wgd).cloned().collect();
    let want: BTreeSet<String> = [
        format!("public key: {public}"),
        "private key: (hidden)".to_string(),
        "preshared key: (hidden)".to_string(),
    ]
    .into();
    assert_eq!(
        missing, want,
        "wg show: wireguard-go {show_go:#?}\nwgd {show_wgd:#?}"
    );
    assert!(
        show_wgd.is_subset(&show_go),
        "wgd's wg show adds nothing: {show_wgd:#?} vs {show_go:#?}"
    );

    let conf_go = lines(&ns_go, &["showconf", go.ifname()]);
    let conf_wgd = lines(&ns_wgd, &["showconf", w.ifname()]);
    let missing: BTreeSet<String> = conf_go.difference(&conf_wgd).cloned().collect();
    let want: BTreeSet<String> = [
        format!("PrivateKey = {key}"),
        format!("PresharedKey = {psk}"),
    ]
    .into();
    assert_eq!(
        missing, want,
        "wg showconf: wireguard-go {conf_go:#?}\nwgd {conf_wgd:#?}"
    );
    assert!(conf_wgd.is_subset(&conf_go), "{conf_wgd:#?}");
    // wgctl shows the interface's public key that wg cannot.
    let out = ns_wgd
        .run(
            wgctl_bin().to_str().expect("utf-8 path"),
            ["show", w.ifname(), "public-key"],
        )
        .expect("wgctl show public-key");
    assert_eq!(out.trim(), public);
}

/// A's configuration without its PSK for B: what an operator's file says
/// after the PSK was taken out.
fn conf_without_psk(private_key: &str, b_pub: &str) -> InterfaceConfig {
    InterfaceConfig {
        private_key: Some(private_key.to_string()),
        listen_port: Some(PORT_A),
        fwmark: None,
        peers: vec![PeerConfig::new(
            b_pub,
            &[&format!("{INNER_B4}/32"), &format!("{INNER_B6}/128")],
        )
        .endpoint(sa(OUTER_B4, PORT_B))],
    }
}

/// Whether B gets a ping through to A within `within` (pings of 1 s each).
fn b_reaches_a(net: &Net, within: Duration) -> bool {
    wait_until(within, "B pings A", || ping(&net.ns_b, ip(INNER_A4), 1)).is_ok()
}

/// Runs the scenario with A of `kind`; returns whether B reached A after
/// `wg syncconf` took the PSK out of A's file.
fn syncconf_scenario(kind: Kind) -> (bool, Option<bool>) {
    let net = net();
    let mut setup = Setup::new(kind, Kind::Go).with_psk();
    setup.b_knows_a = true;
    let (a, b) = pair(&net, &setup);
    assert!(ping(&net.ns_a, ip(INNER_B4), 2), "tunnel\n{}", a.report());
    let a_key = match &a {
        Side::Wgd(w) => w.private_key().to_string(),
        Side::Go(g) => g.private_key().to_string(),
    };
    let b_pub = only_peer(&a.dump().expect("dump A")).public_key.clone();
    let a_pub = only_peer(&b.dump().expect("dump B")).public_key.clone();

    // The PSK comes out of both files: A applies its file with `wg
    // syncconf`; B is re-created without it, so its next packet needs a
    // fresh handshake without a PSK.
    let file = conf_file(&conf_without_psk(&a_key, &b_pub));
    let path = file.path().to_str().expect("utf-8 path").to_string();
    net.ns_a
        .run("wg", ["syncconf", a.ifname(), path.as_str()])
        .expect("wg syncconf");
    b.set(&["peer", &a_pub, "remove"]).expect("remove A on B");
    let allowed = format!("{INNER_A4}/32,{INNER_A6}/128");
    let endpoint = sa(OUTER_A4, PORT_A).to_string();
    b.set(&[
        "peer",
        &a_pub,
        "allowed-ips",
        &allowed,
        "endpoint",
        &endpoint,
    ])
    .expect("re-add A on B without a PSK");
    let after_wg = b_reaches_a(&net, Duration::from_secs(8));

    // wgctl syncconf sends the PSK's absence too.
    let after_wgctl = match &a {
        Side::Wgd(w) => {
            net.ns_a
                .run(
                    wgctl_bin().to_str().expect("utf-8 path"),
                    ["syncconf", w.ifname(), path.as_str()],
                )
                .expect("wgctl syncconf");
            Some(b_reaches_a(&net, Duration::from_secs(15)))
        }
        Side::Go(_) => None,
    };
    (after_wg, after_wgctl)
}

#[test]
fn wg_syncconf_keeps_a_removed_psk_as_with_wireguard_go_and_wgctl_syncconf_removes_it() {
    // Stock `wg syncconf` sends only what the file has: a peer section
    // without `PresharedKey` sends no `preshared_key`, so the PSK stays,
    // whichever implementation serves it. It cannot be told apart from a
    // write-only one, so this is no difference at all.
    let (go, _) = syncconf_scenario(Kind::Go);
    let (wgd, wgctl) = syncconf_scenario(Kind::Wgd);
    assert_eq!(
        wgd, go,
        "after wg syncconf, B reaches A: wireguard-go {go}, wgd {wgd}"
    );
    assert!(!go, "the reference keeps the PSK, and the handshake fails");
    assert_eq!(wgctl, Some(true), "wgctl syncconf removes it");
}
