//! `wgctl` driving a running wgd, each test in its own namespace, with the
//! stock `wg(8)` as the independent reference:
//!
//! - `show_*`: the interface public key wgctl prints is the one derived
//!   from the configured private key; `show IF dump` and the other
//!   script views equal `wg show`'s, except for what wgd never returns
//!   (wg sees no private key, so it prints `(none)` for both interface
//!   keys; wgctl prints `(hidden)` and the public key, and `(hidden)` for
//!   preshared keys, which wgd does not report); with wireguard-go,
//!   which does not know `wgd_get`, wgctl falls back to `get` and still
//!   prints neither secret;
//! - `set_*`: peers added, changed incrementally and removed with wg(8)'s
//!   `set` syntax, and a private key read from `/dev/stdin`;
//! - `conf_round_trips`: `setconf`, `addconf`, `syncconf` and `showconf`;
//! - `showconf_names_the_private_key_file`: wgd started from a file with
//!   `PrivateKeyFile`, and a `syncconf` that keeps it;
//! - `keys_*`: `genkey`/`genpsk`/`pubkey` against `wg`, `addr` against a
//!   vector computed by Python's hashlib;
//! - `errors_*`: one line on stderr and a non-zero status.
//!
//! The binary is `$WGCTL_BIN`, else `wgctl` next to the wgd binary
//! (`cargo build -p wgd -p wgctl --bins` first).

use std::io::Write as _;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use wgd_tests::proc::run_command;
use wgd_tests::wggo::fresh_ifname;
use wgd_tests::{
    keypair, preshared_key, socket_path, wait_until, Child, InterfaceConfig, Netns, PeerConfig,
    WgGo, Wgd,
};

const RUN_TIMEOUT: Duration = Duration::from_secs(20);
const START_TIMEOUT: Duration = Duration::from_secs(10);

fn wgctl_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("WGCTL_BIN") {
        return PathBuf::from(p);
    }
    let wgd = wgd_tests::wgd::binary().expect("wgd binary (cargo build -p wgd -p wgctl --bins)");
    let p = wgd.with_file_name("wgctl");
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p wgd -p wgctl --bins`",
        p.display()
    );
    p
}

/// `wgctl args…` inside `ns`, whatever its status.
fn wgctl(ns: &Netns, args: &[&str]) -> Output {
    let bin = wgctl_bin();
    ns.exec(bin.to_str().expect("utf-8 path"), args)
        .unwrap_or_else(|e| panic!("running wgctl {args:?}: {e}"))
}

/// `wgctl args…` inside `ns`, which must succeed quietly; its stdout.
fn ok(ns: &Netns, args: &[&str]) -> String {
    let out = wgctl(ns, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "wgctl {args:?} failed ({}): {stderr}",
        out.status
    );
    assert!(
        stderr.is_empty(),
        "wgctl {args:?} wrote to stderr: {stderr}"
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `wg args…` inside `ns`; its stdout.
fn wg(ns: &Netns, args: &[&str]) -> String {
    ns.run("wg", args)
        .unwrap_or_else(|e| panic!("wg {args:?}: {e}"))
}

/// A shell pipeline (outside any namespace), its stdout; must succeed.
fn sh(script: &str) -> String {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", script]);
    let out = run_command(cmd, RUN_TIMEOUT).unwrap_or_else(|e| panic!("sh -c {script:?}: {e}"));
    assert!(
        out.status.success(),
        "sh -c {script:?}: {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// A private temp file with `text`.
fn temp_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("temp file");
    f.write_all(text.as_bytes()).expect("write temp file");
    f.flush().expect("flush temp file");
    f
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Asserts that a failed run printed exactly one `wgctl: ` line
/// containing `needle`, and exited non-zero.
fn assert_one_line_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, stderr {stderr:?}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    assert!(stderr.starts_with("wgctl: "), "{stderr:?}");
    assert!(stderr.contains(needle), "{needle:?} in {stderr:?}");
    assert!(out.stdout.is_empty(), "no output on failure");
}

fn start_wgd<'ns>(ns: &'ns Netns, port: u16, peers: Vec<PeerConfig>) -> Wgd<'ns> {
    Wgd::start(
        ns,
        InterfaceConfig {
            listen_port: Some(port),
            peers,
            ..Default::default()
        },
        &[],
    )
    .expect("start wgd")
}

/// The lines of a dump, each split at tabs.
fn rows(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split('\t').map(String::from).collect())
        .collect()
}

#[test]
fn show_prints_the_interface_public_key() {
    let ns = Netns::new().expect("namespace");
    let (_, peer) = keypair();
    let w = start_wgd(&ns, 51830, vec![PeerConfig::new(&peer, &["10.70.0.2/32"])]);
    let ifname = w.ifname();
    // The harness derives the public key from the private key it
    // configured, with x25519-dalek: independent of wgd and wgctl.
    let public = w.public_key();

    let text = ok(&ns, &["show", ifname]);
    assert!(
        text.starts_with(&format!(
            "interface: {ifname}\n  public key: {public}\n  private key: (hidden)\n  listening port: 51830\n"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("\npeer: {peer}\n  allowed ips: 10.70.0.2/32\n")),
        "{text}"
    );
    assert!(!text.contains('\x1b'), "no colour when not on a terminal");
    assert_eq!(
        ok(&ns, &["show", ifname, "public-key"]),
        format!("{public}\n")
    );
    assert_eq!(ok(&ns, &["show", ifname, "private-key"]), "(hidden)\n");

    // `wgctl` alone is `show` of every interface, this one among them.
    // (Other tests' interfaces share the socket directory and may come
    // and go meanwhile, so only this one's lines are checked.)
    let all = String::from_utf8_lossy(&wgctl(&ns, &[]).stdout).into_owned();
    assert!(
        all.contains(&format!("interface: {ifname}\n  public key: {public}\n")),
        "{all}"
    );
    assert!(ok(&ns, &["show", "interfaces"])
        .split_whitespace()
        .any(|n| n == ifname));
    let lines =
        String::from_utf8_lossy(&wgctl(&ns, &["show", "all", "public-key"]).stdout).into_owned();
    assert!(lines.lines().any(|l| l == format!("{ifname}\t{public}")));

    // JSON: the same facts, no secret.
    let json = ok(&ns, &["show", ifname, "--json"]);
    for needle in [
        format!("\"name\": \"{ifname}\""),
        "\"wgd\": true".to_string(),
        format!("\"public_key\": \"{public}\""),
        "\"listen_port\": 51830".to_string(),
        "\"drops\": {".to_string(),
        format!("\"public_key\": \"{peer}\""),
        "\"10.70.0.2/32\"".to_string(),
        "\"latest_handshake\": null".to_string(),
    ] {
        assert!(json.contains(&needle), "{needle} in {json}");
    }
    assert!(!json.contains(w.private_key()));
}

#[test]
fn show_dump_equals_wg_dump_but_for_hidden_keys() {
    let ns = Netns::new().expect("namespace");
    let (_, p1) = keypair();
    let (_, p2) = keypair();
    // No traffic can flow (no handshake without a route, no keepalive with
    // an endpoint), so the counters are stable between the two tools.
    let mut peer1 = PeerConfig::new(&p1, &["10.71.0.0/24", "fd00:71::/64"])
        .endpoint("192.0.2.71:51820".parse().expect("addr"));
    peer1.persistent_keepalive = None;
    let mut peer2 = PeerConfig::new(&p2, &[]);
    peer2.persistent_keepalive = Some(25);
    let w = start_wgd(&ns, 51831, vec![peer1, peer2]);
    let ifname = w.ifname();

    let ours = rows(&ok(&ns, &["show", ifname, "dump"]));
    let theirs = rows(&wg(&ns, &["show", ifname, "dump"]));
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert_eq!(ours.len(), theirs.len());
    // Interface line: wg(8) derives the public key from the private key,
    // which wgd never returns, so it has neither; wgctl shows the public
    // key wgd learnt from its crypto role.
    assert_eq!(theirs[0], ["(none)", "(none)", "51831", "off"]);
    assert_eq!(ours[0], ["(hidden)", w.public_key(), "51831", "off"]);
    for o in &ours[1..] {
        // wg(8) sorts peers by latest handshake; match rows by key.
        let t = theirs[1..]
            .iter()
            .find(|t| t[0] == o[0])
            .unwrap_or_else(|| panic!("wg shows no peer {}", o[0]));
        assert_eq!(o.len(), 8);
        // Preshared key: wgd does not say whether there is one.
        assert_eq!(t[1], "(none)");
        assert_eq!(o[1], "(hidden)");
        assert_eq!(
            [&o[..1], &o[2..]].concat(),
            [&t[..1], &t[2..]].concat(),
            "peer line"
        );
    }
    let p1_row = ours.iter().find(|r| r[0] == p1).expect("peer 1 in dump");
    assert_eq!(p1_row[2], "192.0.2.71:51820");
    assert_eq!(p1_row[3], "10.71.0.0/24,fd00:71::/64");

    // The other script views are wg's, byte for byte.
    for view in [
        "listen-port",
        "fwmark",
        "peers",
        "endpoints",
        "allowed-ips",
        "latest-handshakes",
        "persistent-keepalive",
        "transfer",
    ] {
        assert_eq!(
            ok(&ns, &["show", ifname, view]),
            wg(&ns, &["show", ifname, view]),
            "show {view}"
        );
    }
}

/// A daemon that is not wgd answers `wgd_get` with an error: wgctl asks
/// again with `get`, derives the public key from the private key (as wg
/// does) and still prints neither secret.
#[test]
fn show_falls_back_to_get_for_wireguard_go() {
    let ns = Netns::new().expect("namespace");
    let g = WgGo::start(&ns).expect("start wireguard-go");
    let (_, p1) = keypair();
    let (_, p2) = keypair();
    let psk = preshared_key();
    let mut peer1 = PeerConfig::new(&p1, &["10.77.0.1/32"]);
    peer1.preshared_key = Some(psk.clone());
    g.configure(51839, vec![peer1, PeerConfig::new(&p2, &["10.77.0.2/32"])])
        .expect("configure wireguard-go");
    let ifname = g.ifname();

    assert_eq!(
        ok(&ns, &["show", ifname, "public-key"]),
        format!("{}\n", g.public_key())
    );
    let ours = rows(&ok(&ns, &["show", ifname, "dump"]));
    let theirs = rows(&wg(&ns, &["show", ifname, "dump"]));
    assert_eq!(theirs[0][0], g.private_key());
    assert_eq!(ours[0], ["(hidden)", g.public_key(), "51839", "off"]);
    assert_eq!(ours[0][1..], theirs[0][1..]);
    assert_eq!(ours.len(), 3);
    // wireguard-go answers peers in its map's (random) order, and the two
    // tools may order them differently: match rows by public key.
    assert_eq!(theirs.len(), ours.len());
    for o in &ours[1..] {
        let t = theirs[1..]
            .iter()
            .find(|t| t[0] == o[0])
            .unwrap_or_else(|| panic!("wg shows no peer {}", o[0]));
        if o[0] == p1 {
            assert_eq!((o[1].as_str(), t[1].as_str()), ("(hidden)", psk.as_str()));
        } else {
            assert_eq!(o[1], "(none)");
        }
        assert_eq!([&o[..1], &o[2..]].concat(), [&t[..1], &t[2..]].concat());
    }
    let text = ok(&ns, &["show", ifname]);
    assert!(
        text.contains(&format!("peer: {p1}\n  preshared key: (hidden)\n")),
        "{text}"
    );
    let json = ok(&ns, &["show", ifname, "--json"]);
    assert!(json.contains("\"wgd\": false"), "{json}");
    assert!(json.contains("\"drops\": null"), "{json}");
    let shown = ok(&ns, &["showconf", ifname]);
    for secret in [g.private_key(), psk.as_str()] {
        assert!(!text.contains(secret) && !json.contains(secret) && !shown.contains(secret));
    }
    assert!(
        shown.contains("# PresharedKey: this peer has one"),
        "{shown}"
    );
}

#[test]
fn set_adds_changes_and_removes_peers() {
    let ns = Netns::new().expect("namespace");
    let w = start_wgd(&ns, 51832, vec![]);
    let ifname = w.ifname();
    let (_, p1) = keypair();
    let (_, p2) = keypair();

    ok(
        &ns,
        &[
            "set",
            ifname,
            "fwmark",
            "0x4a",
            "peer",
            &p1,
            "allowed-ips",
            "10.72.0.2/32, fd00:72::2/128",
            "endpoint",
            "192.0.2.72:51820",
            "peer",
            &p2,
            "persistent-keepalive",
            "17",
            "endpoint",
            "localhost:51999",
        ],
    );
    let text = ok(&ns, &["show", ifname]);
    assert!(text.contains("  fwmark: 0x4a\n"), "{text}");
    assert!(
        text.contains(&format!(
            "peer: {p1}\n  endpoint: 192.0.2.72:51820\n  allowed ips: 10.72.0.2/32, fd00:72::2/128\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("  persistent keepalive: every 17 seconds\n"),
        "{text}"
    );
    // Independently, through wg(8).
    let d = w.dump().expect("wg dump");
    assert_eq!(d.interface.fwmark, Some(0x4a));
    let wp1 = d.peer(&p1).expect("peer 1");
    assert_eq!(wp1.allowed_ips, ["10.72.0.2/32", "fd00:72::2/128"]);
    assert_eq!(
        wp1.endpoint,
        Some("192.0.2.72:51820".parse().expect("addr"))
    );
    let wp2 = d.peer(&p2).expect("peer 2");
    assert_eq!(wp2.persistent_keepalive, Some(17));
    let ep2 = wp2.endpoint.expect("resolved host name");
    assert!(ep2.ip().is_loopback() && ep2.port() == 51999, "{ep2}");

    // allowed-ips replaces; +/- change single entries; remove removes.
    ok(
        &ns,
        &["set", ifname, "peer", &p1, "allowed-ips", "10.73.0.0/16"],
    );
    assert_eq!(
        ok(&ns, &["show", ifname, "allowed-ips"])
            .lines()
            .find(|l| l.starts_with(&p1)),
        Some(format!("{p1}\t10.73.0.0/16").as_str())
    );
    ok(
        &ns,
        &[
            "set",
            ifname,
            "peer",
            &p1,
            "allowed-ips",
            "+10.74.0.0/16,-10.73.0.0/16",
        ],
    );
    let d = w.dump().expect("wg dump");
    assert_eq!(d.peer(&p1).expect("peer 1").allowed_ips, ["10.74.0.0/16"]);
    ok(
        &ns,
        &[
            "set",
            ifname,
            "peer",
            &p2,
            "remove",
            "peer",
            &p1,
            "persistent-keepalive",
            "off",
        ],
    );
    let d = w.dump().expect("wg dump");
    assert!(d.peer(&p2).is_none());
    assert_eq!(d.peer(&p1).expect("peer 1").persistent_keepalive, None);
}

#[test]
fn set_private_key_from_stdin() {
    let ns = Netns::new().expect("namespace");
    let w = start_wgd(&ns, 51833, vec![]);
    let (private, public) = keypair();
    let script = format!(
        "echo '{private}' | {} set {} private-key /dev/stdin",
        wgctl_bin().display(),
        w.ifname()
    );
    ns.run("sh", ["-c", script.as_str()])
        .expect("set private-key /dev/stdin");
    assert_eq!(
        ok(&ns, &["show", w.ifname(), "public-key"]),
        format!("{public}\n")
    );
}

fn conf_text(private: Option<&str>, port: u16, peers: &[(&str, &str)]) -> String {
    let mut s = String::from("[Interface]\n");
    if let Some(k) = private {
        s.push_str(&format!("PrivateKey = {k}\n"));
    }
    s.push_str(&format!("ListenPort = {port}\n"));
    for (key, ips) in peers {
        s.push_str(&format!(
            "\n[Peer]\nPublicKey = {key}\nAllowedIPs = {ips}\n"
        ));
    }
    s
}

/// (peer, allowed IPs as wg(8) prints them), sorted.
fn peers_of(ns: &Netns, ifname: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = wg(ns, &["show", ifname, "allowed-ips"])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, ips)| (k.to_string(), ips.to_string()))
        .collect();
    v.sort();
    v
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

#[test]
fn conf_round_trips() {
    let ns = Netns::new().expect("namespace");
    let (_, old) = keypair();
    let w = start_wgd(&ns, 51834, vec![PeerConfig::new(&old, &["10.75.9.0/24"])]);
    let ifname = w.ifname();
    let (new_private, new_public) = keypair();
    let (_, a) = keypair();
    let (_, b) = keypair();
    let (_, c) = keypair();

    // setconf replaces everything, the key included.
    let f = temp_file(&conf_text(
        Some(&new_private),
        51835,
        &[(&a, "10.75.1.0/24"), (&b, "10.75.2.0/24, fd00:75::/64")],
    ));
    ok(&ns, &["setconf", ifname, path_str(f.path())]);
    assert_eq!(
        peers_of(&ns, ifname),
        sorted(vec![
            (a.clone(), "10.75.1.0/24".into()),
            (b.clone(), "10.75.2.0/24 fd00:75::/64".into()),
        ])
    );
    assert_eq!(ok(&ns, &["show", ifname, "listen-port"]), "51835\n");
    assert_eq!(
        ok(&ns, &["show", ifname, "public-key"]),
        format!("{new_public}\n")
    );

    // addconf adds.
    let f = temp_file(&conf_text(None, 51835, &[(&c, "10.75.3.0/24")]));
    ok(&ns, &["addconf", ifname, path_str(f.path())]);
    assert_eq!(peers_of(&ns, ifname).len(), 3);

    // syncconf: a changed, b gone, c unchanged, old back.
    let target = conf_text(
        Some(&new_private),
        51835,
        &[
            (&a, "10.75.4.0/24, 10.75.1.0/24"),
            (&c, "10.75.3.0/24"),
            (&old, "10.75.9.0/24"),
        ],
    );
    let f = temp_file(&target);
    ok(&ns, &["syncconf", ifname, path_str(f.path())]);
    let want = sorted(vec![
        (a.clone(), "10.75.1.0/24 10.75.4.0/24".into()),
        (c.clone(), "10.75.3.0/24".into()),
        (old.clone(), "10.75.9.0/24".into()),
    ]);
    let got: Vec<(String, String)> = peers_of(&ns, ifname)
        .into_iter()
        .map(|(k, ips)| {
            let mut ips: Vec<&str> = ips.split(' ').collect();
            ips.sort();
            (k, ips.join(" "))
        })
        .collect();
    assert_eq!(got, want);
    // A second syncconf of the same file changes nothing.
    let before = wg(&ns, &["show", ifname, "dump"]);
    ok(&ns, &["syncconf", ifname, path_str(f.path())]);
    assert_eq!(wg(&ns, &["show", ifname, "dump"]), before);

    // showconf: the peers as a file, the key as a comment (it was given
    // inline, and is write-only), which setconf takes back.
    let shown = ok(&ns, &["showconf", ifname]);
    assert!(
        shown.starts_with("[Interface]\nListenPort = 51835\n"),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("(public key {new_public})")),
        "{shown}"
    );
    assert!(shown.contains("write-only"), "{shown}");
    assert!(!shown.contains(&new_private));
    for key in [&a, &c, &old] {
        assert!(shown.contains(&format!("PublicKey = {key}\n")), "{shown}");
    }
    let f = temp_file(&shown);
    let before = peers_of(&ns, ifname);
    ok(&ns, &["setconf", ifname, path_str(f.path())]);
    assert_eq!(peers_of(&ns, ifname), before);
    assert_eq!(
        ok(&ns, &["show", ifname, "public-key"]),
        format!("{new_public}\n"),
        "a setconf without a key leaves the key"
    );
}

/// A wgd started from a configuration file that names its key file.
struct KeyFileWgd {
    ifname: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for KeyFileWgd {
    fn drop(&mut self) {
        self.child.stop(Duration::from_secs(3));
        let sock = socket_path(&self.ifname);
        if sock.exists() && !wgd_tests::pid_exists(self.child.pid()) {
            let _ = std::fs::remove_file(&sock);
        }
    }
}

#[test]
fn showconf_names_the_private_key_file() {
    let ns = Netns::new().expect("namespace");
    let (private, public) = keypair();
    let (_, peer) = keypair();
    let dir = tempfile::tempdir().expect("temp dir");
    let key_file = dir.path().join("wg.key");
    std::fs::write(&key_file, format!("{private}\n")).expect("key file");
    let conf = dir.path().join("wg.conf");
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKeyFile = {}\nListenPort = 51836\n\n[Peer]\nPublicKey = {peer}\nAllowedIPs = 10.76.0.2/32\n",
            key_file.display()
        ),
    )
    .expect("conf file");
    let ifname = fresh_ifname().expect("interface name");
    let bin = wgd_tests::wgd::binary().expect("wgd binary");
    let child = ns
        .spawn_env(
            path_str(&bin),
            ["-f", "-c", path_str(&conf), ifname.as_str()],
            &[("LOG_LEVEL", "debug")],
        )
        .expect("start wgd");
    let w = KeyFileWgd {
        ifname: ifname.clone(),
        child,
        _dir: dir,
    };
    let sock = socket_path(&ifname);
    wait_until(START_TIMEOUT, "wgd socket", || {
        sock.exists() || !w.child.is_running()
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", w.child.report()));
    assert!(w.child.is_running(), "wgd exited: {}", w.child.report());

    let shown = ok(&ns, &["showconf", &ifname]);
    assert_eq!(
        shown,
        format!(
            "[Interface]\nListenPort = 51836\nPrivateKeyFile = {}\n\n[Peer]\nPublicKey = {peer}\n\
             # PresharedKey: preshared keys are write-only; if this peer has one, it is not shown.\n\
             AllowedIPs = 10.76.0.2/32\n",
            key_file.display()
        )
    );
    let text = ok(&ns, &["show", &ifname]);
    assert!(
        text.contains(&format!("  public key: {public}\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("  private key file: {}\n", key_file.display())),
        "{text}"
    );
    // Saving and syncing back what showconf wrote is a no-op that keeps
    // the key and its file.
    let saved = temp_file(&shown);
    ok(&ns, &["syncconf", &ifname, path_str(saved.path())]);
    assert_eq!(ok(&ns, &["showconf", &ifname]), shown);
}

#[test]
fn keys_match_wg() {
    let bin = wgctl_bin();
    let bin = bin.display();
    // genkey: a clamped key in wg's format, which wg accepts.
    let key = sh(&format!("{bin} genkey"));
    assert_eq!(key.len(), 45, "{key:?}");
    assert!(key.ends_with('\n'));
    let ours = sh(&format!("printf '%s' '{key}' | {bin} pubkey"));
    let theirs = sh(&format!("printf '%s' '{key}' | wg pubkey"));
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 45);
    // pubkey of wg's keys, and of a fixed known key.
    let wg_key = sh("wg genkey");
    assert_eq!(
        sh(&format!("printf '%s' '{wg_key}' | {bin} pubkey")),
        sh(&format!("printf '%s' '{wg_key}' | wg pubkey"))
    );
    let (private, public) = keypair();
    assert_eq!(
        sh(&format!("echo '{private}' | {bin} pubkey")),
        format!("{public}\n")
    );
    assert_eq!(
        sh(&format!("echo '{private}' | wg pubkey")),
        format!("{public}\n")
    );
    let psk = sh(&format!("{bin} genpsk"));
    assert_eq!(psk.len(), 45);
    assert_ne!(psk, sh(&format!("{bin} genpsk")));
}

#[test]
fn keys_addr_matches_python() {
    let bin = wgctl_bin();
    for _ in 0..3 {
        let (_, public) = keypair();
        let ours = sh(&format!("{} addr '{public}'", bin.display()));
        let python = sh(&format!(
            "python3 -c 'import base64,hashlib,ipaddress,sys; \
             k = base64.b64decode(sys.argv[1]); \
             print(ipaddress.IPv6Address(bytes([0xfd, 0x77]) + hashlib.sha224(k).digest()[:14]))' '{public}'"
        ));
        assert_eq!(ours, python, "addr {public}");
        assert!(ours.starts_with("fd77:"));
    }
}

#[test]
fn errors_are_one_line() {
    let ns = Netns::new().expect("namespace");
    let w = start_wgd(&ns, 51837, vec![]);
    let ifname = w.ifname();

    let missing = fresh_ifname().expect("unused name");
    let out = wgctl(&ns, &["show", &missing]);
    assert_one_line_error(
        &out,
        &format!(
            "{missing}: no such interface (no {})",
            socket_path(&missing).display()
        ),
    );
    for cmd in ["showconf", "set"] {
        assert_one_line_error(&wgctl(&ns, &[cmd, &missing]), "no such interface");
    }

    assert_one_line_error(
        &wgctl(&ns, &["set", ifname, "peer", "not-a-key", "remove"]),
        "`not-a-key' is not a base64 public key",
    );
    assert_one_line_error(&wgctl(&ns, &["addr", "AAAA"]), "not a base64 public key");
    assert_one_line_error(
        &wgctl(&ns, &["set", ifname, "listen-port", "70000"]),
        "not a port number",
    );
    assert_one_line_error(&wgctl(&ns, &["show", ifname, "bogus"]), "bogus");
    let bad_key = temp_file("c2VjcmV0c2VjcmV0\n");
    let out = wgctl(
        &ns,
        &["set", ifname, "private-key", path_str(bad_key.path())],
    );
    assert_one_line_error(&out, "not a base64 key");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("c2VjcmV0"));
    let bad_conf = temp_file("[Interface]\nListenPort = x\n");
    assert_one_line_error(
        &wgctl(&ns, &["setconf", ifname, path_str(bad_conf.path())]),
        &format!("{}:2:", bad_conf.path().display()),
    );

    // An error from the daemon: the port is taken.
    let held = ns
        .enter(|| UdpSocket::bind("0.0.0.0:51838"))
        .expect("enter namespace")
        .expect("bind a port");
    assert_one_line_error(
        &wgctl(&ns, &["set", ifname, "listen-port", "51838"]),
        &format!("setting {ifname}: Address already in use (errno 98)"),
    );
    drop(held);
    assert_eq!(ok(&ns, &["show", ifname, "listen-port"]), "51837\n");
}
