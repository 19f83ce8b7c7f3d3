//! Reloading a running wgd (issue 14), each case against wireguard-go
//! peers in namespaces of their own. wgd reads its configuration file
//! again on SIGHUP and on `wgctl reload IF` (`wgd_reload=1`), and applies
//! it with `wg syncconf`'s semantics:
//!
//! - `reload_keeps_sessions_adds_and_removes_peers`: a ping stream through
//!   a peer the file keeps loses no packet across a SIGHUP reload and its
//!   handshake is not redone; a peer the file adds comes up; a peer a
//!   later `wgctl reload` drops is gone and unreachable, and the other
//!   stays up;
//! - `reload_applies_a_changed_psk_and_private_key`: with the peer on a
//!   new PSK no handshake completes until a reload gives wgd the same
//!   PSK; a new private key (in its `PrivateKeyFile`) is wgd's after a
//!   `wgctl reload` (its public key changes) and a peer that knows only
//!   the new public key gets through;
//! - `reload_refuses_a_bad_file`: a file that does not parse is refused by
//!   `wgctl reload` (non-zero exit, `FILE:LINE:` on its standard error)
//!   and by SIGHUP (`FILE:LINE:` in wgd's log); the daemon runs on with
//!   its peers, and traffic still flows;
//! - `reload_of_the_same_file_changes_nothing`: reloading an unchanged
//!   file many times keeps the session, and a role restart afterwards
//!   restores exactly the file's peers (the journal kept the reloads);
//! - `reload_leaves_no_secret_outside_crypto`: after reloads that change
//!   the private key and a PSK (given inline in the file), a memory scan
//!   finds the old and new keys in the crypto role only;
//! - `reload_reuses_host_names_resolved_at_start`: an endpoint's host name
//!   resolved at start is reused by a reload, and a new one is refused
//!   with its line (the parent cannot resolve names after start);
//! - `reload_without_a_configuration_file_is_refused`: started without
//!   `-c`, wgd refuses a reload (wgctl and SIGHUP) and runs on.

use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wgd_tests::memscan::{key_forms, scan};
use wgd_tests::proc::run_command;
use wgd_tests::traffic::ping_within;
use wgd_tests::wg::{self, Dump};
use wgd_tests::wggo::{fresh_ifname, wait_for_socket};
use wgd_tests::{
    add_addr, keypair, link, ping_once, preshared_key, public_key, wait_until, Child, Netns,
    PeerConfig, Veth, WgGo,
};

const WGD_PORT: u16 = 51820;
const GO_PORT: u16 = 51821;
const INNER_WGD: &str = "10.221.0.1";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const HANDSHAKE_WAIT: Duration = Duration::from_secs(10);
const RELOAD_WAIT: Duration = Duration::from_secs(5);
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

fn workspace_binary(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("debug")
        .join(name);
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// A wireguard-go peer in a namespace of its own, joined to wgd's
/// namespace by a veth of subnet `10.220.N.0/24`, with inner address
/// `10.221.0.(N+1)`.
struct GoPeer<'n> {
    go: WgGo<'n>,
    /// wgd's outer address as this peer reaches it.
    wgd_outer: String,
    /// This peer's outer address.
    outer: String,
    inner: String,
}

struct Net {
    ns_wgd: Netns,
    ns_go: Vec<Netns>,
    _veths: Vec<Veth>,
}

fn net(peers: usize) -> Net {
    let ns_wgd = Netns::new().expect("wgd namespace");
    let mut ns_go = Vec::new();
    let mut veths = Vec::new();
    for n in 1..=peers {
        let ns = Netns::new().expect("peer namespace");
        veths.push(
            link(
                &ns_wgd,
                &ns,
                &format!("10.220.{n}.1/24"),
                &format!("10.220.{n}.2/24"),
                &format!("fd00:220:{n}::1/64"),
                &format!("fd00:220:{n}::2/64"),
            )
            .expect("veth"),
        );
        ns_go.push(ns);
    }
    Net {
        ns_wgd,
        ns_go,
        _veths: veths,
    }
}

impl<'n> GoPeer<'n> {
    /// Starts wireguard-go as peer `n` (1-based) of `net`, configured for
    /// wgd's public key `wgd_public` with `psk`.
    fn start(net: &'n Net, n: usize, wgd_public: &str, psk: Option<&str>) -> GoPeer<'n> {
        let ns = &net.ns_go[n - 1];
        let go = WgGo::start(ns).expect("start wireguard-go");
        let peer = GoPeer {
            go,
            wgd_outer: format!("10.220.{n}.1"),
            outer: format!("10.220.{n}.2"),
            inner: format!("10.221.0.{}", n + 1),
        };
        peer.set_wgd(wgd_public, psk);
        add_addr(ns, peer.go.ifname(), &format!("{}/24", peer.inner)).expect("inner address");
        ns.ip(["link", "set", peer.go.ifname(), "up"])
            .expect("interface up");
        peer
    }

    /// Configures wgd as this peer's only peer, anew (`wg setconf`: any
    /// session with wgd is dropped).
    fn set_wgd(&self, wgd_public: &str, psk: Option<&str>) {
        let mut wgd = PeerConfig::new(wgd_public, &[&format!("{INNER_WGD}/32")]);
        wgd.endpoint = Some(
            format!("{}:{WGD_PORT}", self.wgd_outer)
                .parse()
                .expect("endpoint"),
        );
        wgd.preshared_key = psk.map(str::to_string);
        self.go
            .configure(GO_PORT, vec![wgd])
            .expect("configure wireguard-go");
    }

    /// This peer's section in wgd's file.
    fn section(&self, psk: Option<&str>) -> String {
        let mut s = format!(
            "[Peer]\nPublicKey = {}\nAllowedIPs = {}/32\nEndpoint = {}:{GO_PORT}\n",
            self.go.public_key(),
            self.inner,
            self.outer
        );
        if let Some(k) = psk {
            s += &format!("PresharedKey = {k}\n");
        }
        s
    }
}

/// wgd in its namespace, started from a configuration file the test
/// rewrites between reloads.
struct Daemon<'n> {
    ns: &'n Netns,
    ifname: String,
    dir: tempfile::TempDir,
    child: Child,
}

impl<'n> Daemon<'n> {
    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("wgd.conf")
    }

    fn start(ns: &'n Netns, conf: &str) -> Daemon<'n> {
        let ifname = fresh_ifname().expect("interface name");
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("wgd.conf"), conf).expect("writing the configuration");
        let bin = workspace_binary("wgd");
        let path = dir.path().join("wgd.conf");
        let child = ns
            .spawn_env(
                &bin.to_string_lossy(),
                [
                    "-f",
                    "-c",
                    path.to_str().expect("UTF-8 temp path"),
                    ifname.as_str(),
                ],
                &[("LOG_LEVEL", "debug")],
            )
            .expect("start wgd");
        wait_for_socket(&child, &ifname, "wgd", START_TIMEOUT).expect("wgd's control socket");
        add_addr(ns, &ifname, &format!("{INNER_WGD}/24")).expect("inner address");
        ns.ip(["link", "set", ifname.as_str(), "up"])
            .expect("interface up");
        Daemon {
            ns,
            ifname,
            dir,
            child,
        }
    }

    /// Replaces the configuration file (a new file renamed into place, as
    /// an editor or a configuration manager would).
    fn write_conf(&self, conf: &str) {
        let tmp = self.dir.path().join("wgd.conf.new");
        let mut f = std::fs::File::create(&tmp).expect("new configuration");
        f.write_all(conf.as_bytes()).expect("writing it");
        drop(f);
        std::fs::rename(&tmp, self.conf_path()).expect("renaming it into place");
    }

    fn log(&self) -> String {
        self.child.stderr()
    }

    /// SIGHUP, then waits until the log says how the reload went (the
    /// `n`-th reload of this daemon); returns that line.
    fn sighup(&self, n: usize) -> String {
        kill(Pid::from_raw(self.child.pid() as i32), Signal::SIGHUP).expect("SIGHUP to wgd");
        let mut line = String::new();
        wait_until(RELOAD_WAIT, "wgd to log the reload's outcome", || {
            let log = self.log();
            let outcomes: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("reloaded the configuration") || l.contains("reload refused")
                })
                .collect();
            match outcomes.get(n - 1) {
                Some(l) => {
                    line = l.to_string();
                    true
                }
                None => false,
            }
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.child.report()));
        line
    }

    /// `wgctl reload IF` in wgd's namespace.
    fn wgctl_reload(&self) -> std::process::Output {
        self.wgctl(&["reload", &self.ifname])
    }

    fn wgctl(&self, args: &[&str]) -> std::process::Output {
        let bin = workspace_binary("wgctl");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.ns.name()])
            .arg(bin)
            .args(args);
        run_command(cmd, RUN_TIMEOUT).expect("running wgctl")
    }

    fn dump(&self) -> Dump {
        wg::dump(self.ns, &self.ifname).unwrap_or_else(|e| panic!("{e}\n{}", self.child.report()))
    }

    /// The interface public key, as `wgctl show IF public-key` prints it.
    fn public_key(&self) -> String {
        let out = self.wgctl(&["show", &self.ifname, "public-key"]);
        assert!(out.status.success(), "wgctl show: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn assert_running(&self) {
        assert!(
            self.child.is_running(),
            "wgd exited:\n{}",
            self.child.report()
        );
    }
}

fn wgd_conf(private_key_line: &str, sections: &[String]) -> String {
    let mut s = format!("[Interface]\n{private_key_line}\nListenPort = {WGD_PORT}\n");
    for sec in sections {
        s += "\n";
        s += sec;
    }
    s
}

/// `ping -c COUNT -i 0.05` in `ns`, running as a child; read its outcome
/// with [`stream_result`].
fn ping_stream(ns: &Netns, addr: &str, count: u32) -> Child {
    let count = count.to_string();
    ns.spawn(
        "ping",
        ["-n", "-c", count.as_str(), "-i", "0.05", "-W", "2", addr],
    )
    .expect("starting ping")
}

/// Waits for a [`ping_stream`] to end; returns (sent, received).
fn stream_result(ping: &Child) -> (u32, u32) {
    ping.wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("ping stream: {e}\n{}", ping.report()));
    let out = ping.stdout();
    let stats = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping statistics:\n{out}"));
    let nums: Vec<u32> = stats
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .take(2)
        .map(|s| s.parse().expect("a count"))
        .collect();
    (nums[0], nums[1])
}

#[test]
fn reload_keeps_sessions_adds_and_removes_peers() {
    let net = net(2);
    let (wgd_key, wgd_pub) = keypair();
    let psk1 = preshared_key();
    let p1 = GoPeer::start(&net, 1, &wgd_pub, Some(&psk1));
    let p2 = GoPeer::start(&net, 2, &wgd_pub, None);
    let key_line = format!("PrivateKey = {wgd_key}");
    let d = Daemon::start(
        &net.ns_wgd,
        &wgd_conf(&key_line, &[p1.section(Some(&psk1))]),
    );

    assert!(
        ping_within(d.ns, ip(&p1.inner), HANDSHAKE_WAIT).is_some(),
        "no traffic with peer 1 before any reload:\n{}",
        d.child.report()
    );
    let before = d
        .dump()
        .peer(p1.go.public_key())
        .expect("peer 1")
        .latest_handshake;
    assert!(before > 0, "no handshake with peer 1");
    // Peer 2 is not configured yet.
    assert!(!ping_once(d.ns, ip(&p2.inner), Duration::from_secs(1)));

    // A stream through peer 1 across the reload that adds peer 2: 3 s of
    // pings, the reload in the middle of it.
    let stream = ping_stream(d.ns, &p1.inner, 60);
    wait_until(
        Duration::from_secs(5),
        "the ping stream to get going",
        || {
            stream
                .stdout()
                .lines()
                .filter(|l| l.contains("ttl="))
                .count()
                >= 10
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", stream.report()));
    d.write_conf(&wgd_conf(
        &key_line,
        &[p1.section(Some(&psk1)), p2.section(None)],
    ));
    let outcome = d.sighup(1);
    assert!(
        outcome.contains("1 peers added, 0 removed, 1 kept"),
        "{outcome}\n{}",
        d.log()
    );
    let (sent, received) = stream_result(&stream);
    assert_eq!(
        (sent, received),
        (60, 60),
        "the ping stream through the kept peer lost packets across the reload:\n{}",
        stream.stdout()
    );
    let after = d
        .dump()
        .peer(p1.go.public_key())
        .expect("peer 1 after the reload")
        .latest_handshake;
    assert_eq!(after, before, "the kept peer's session was replaced");

    // The added peer comes up.
    assert!(
        ping_within(d.ns, ip(&p2.inner), HANDSHAKE_WAIT).is_some(),
        "the added peer does not come up:\n{}",
        d.child.report()
    );
    assert!(d.dump().peer(p2.go.public_key()).is_some());

    // `wgctl reload` with peer 1 taken out of the file: it goes.
    d.write_conf(&wgd_conf(&key_line, &[p2.section(None)]));
    let out = d.wgctl_reload();
    assert!(
        out.status.success(),
        "wgctl reload: {out:?}\n{}",
        d.child.report()
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "wgctl reload printed something on success: {out:?}"
    );
    let dump = d.dump();
    assert!(
        dump.peer(p1.go.public_key()).is_none(),
        "the removed peer is still configured: {dump:?}"
    );
    assert_eq!(dump.peers.len(), 1, "{dump:?}");
    assert!(
        !ping_once(d.ns, ip(&p1.inner), Duration::from_secs(1)),
        "the removed peer is still reachable"
    );
    assert!(
        ping_once(d.ns, ip(&p2.inner), Duration::from_secs(2)),
        "the peer the file kept stopped answering"
    );
    assert!(
        d.log().contains("0 peers added, 1 removed, 1 kept"),
        "{}",
        d.log()
    );
    d.assert_running();
}

#[test]
fn reload_applies_a_changed_psk_and_private_key() {
    let net = net(1);
    let (wgd_key, wgd_pub) = keypair();
    let psk1 = preshared_key();
    let psk2 = preshared_key();
    let p1 = GoPeer::start(&net, 1, &wgd_pub, Some(&psk1));
    let key_dir = tempfile::tempdir().expect("key dir");
    let key_file = key_dir.path().join("wgd.key");
    std::fs::write(&key_file, format!("{wgd_key}\n")).expect("key file");
    let key_line = format!("PrivateKeyFile = {}", key_file.display());
    let d = Daemon::start(
        &net.ns_wgd,
        &wgd_conf(&key_line, &[p1.section(Some(&psk1))]),
    );
    let peer_ns = &net.ns_go[0];
    assert!(
        ping_within(peer_ns, ip(INNER_WGD), HANDSHAKE_WAIT).is_some(),
        "no traffic before any reload:\n{}",
        d.child.report()
    );

    // The peer moves to a new PSK (and drops its session): without the
    // reload, no handshake completes.
    p1.set_wgd(&wgd_pub, Some(&psk2));
    assert!(
        ping_within(peer_ns, ip(INNER_WGD), Duration::from_secs(2)).is_none(),
        "a handshake completed with mismatched PSKs"
    );
    d.write_conf(&wgd_conf(&key_line, &[p1.section(Some(&psk2))]));
    let outcome = d.sighup(1);
    assert!(outcome.contains("reloaded the configuration"), "{outcome}");
    assert!(
        ping_within(peer_ns, ip(INNER_WGD), Duration::from_secs(15)).is_some(),
        "no handshake on the new PSK after the reload:\n{}",
        d.child.report()
    );

    // A new private key, in the same key file.
    assert_eq!(d.public_key(), wgd_pub);
    let (new_key, new_pub) = keypair();
    std::fs::write(&key_file, format!("{new_key}\n")).expect("key file");
    let out = d.wgctl_reload();
    assert!(out.status.success(), "wgctl reload: {out:?}");
    assert_eq!(d.public_key(), new_pub, "the new private key is not wgd's");
    assert_eq!(public_key(&new_key).expect("pubkey"), new_pub);
    assert!(
        d.log().contains("new private key"),
        "the reload did not log the key change:\n{}",
        d.log()
    );
    // The peer knows wgd by its new key only, and gets through.
    p1.set_wgd(&new_pub, Some(&psk2));
    assert!(
        ping_within(peer_ns, ip(INNER_WGD), Duration::from_secs(15)).is_some(),
        "no handshake with wgd's new key:\n{}",
        d.child.report()
    );
    // The key file is still named (showconf keeps it).
    let out = d.wgctl(&["showconf", &d.ifname]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("PrivateKeyFile = {}", key_file.display())),
        "{out:?}"
    );
    d.assert_running();
}

#[test]
fn reload_refuses_a_bad_file() {
    let net = net(1);
    let (wgd_key, wgd_pub) = keypair();
    let p1 = GoPeer::start(&net, 1, &wgd_pub, None);
    let key_line = format!("PrivateKey = {wgd_key}");
    let good = wgd_conf(&key_line, &[p1.section(None)]);
    let d = Daemon::start(&net.ns_wgd, &good);
    assert!(
        ping_within(d.ns, ip(&p1.inner), HANDSHAKE_WAIT).is_some(),
        "no traffic before the reload:\n{}",
        d.child.report()
    );
    let before = d.dump();

    // Line 7: a prefix that is not one. The rest of the file would change
    // the key and replace the peer: refused whole, none of it applies.
    let (other, _) = keypair();
    let bad = format!(
        "[Interface]\nPrivateKey = {other}\nListenPort = {WGD_PORT}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.221.0.300/32\n",
        keypair().1
    );
    assert_eq!(bad.lines().nth(6), Some("AllowedIPs = 10.221.0.300/32"));
    d.write_conf(&bad);
    let at = format!("{}:7:", d.conf_path().display());

    let out = d.wgctl_reload();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "wgctl reload: {out:?}");
    assert!(
        stderr.starts_with("wgctl: reloading ") && stderr.contains(&at),
        "wgctl reload's error does not name {at}: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let outcome = d.sighup(2);
    assert!(
        outcome.contains("reload refused") && outcome.contains(&at),
        "the log does not name {at}: {outcome}"
    );
    assert!(outcome.contains("the running configuration stays"));

    d.assert_running();
    let after = d.dump();
    assert_eq!(after.interface.listen_port, before.interface.listen_port);
    let keys = |d: &Dump| {
        d.peers
            .iter()
            .map(|p| (p.public_key.clone(), p.allowed_ips.clone(), p.endpoint))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&after), keys(&before));
    assert_eq!(
        after.peer(p1.go.public_key()).map(|p| p.latest_handshake),
        before.peer(p1.go.public_key()).map(|p| p.latest_handshake)
    );
    assert_eq!(
        d.public_key(),
        wgd_pub,
        "the refused file's key was applied"
    );
    assert!(
        ping_once(d.ns, ip(&p1.inner), Duration::from_secs(2)),
        "traffic stopped after a refused reload"
    );

    // Fixed, it applies.
    d.write_conf(&good);
    let out = d.wgctl_reload();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn reload_of_the_same_file_changes_nothing() {
    let net = net(1);
    let (wgd_key, wgd_pub) = keypair();
    let psk = preshared_key();
    let p1 = GoPeer::start(&net, 1, &wgd_pub, Some(&psk));
    let key_line = format!("PrivateKey = {wgd_key}");
    let conf = wgd_conf(&key_line, &[p1.section(Some(&psk))]);
    let d = Daemon::start(&net.ns_wgd, &conf);
    assert!(
        ping_within(d.ns, ip(&p1.inner), HANDSHAKE_WAIT).is_some(),
        "no traffic:\n{}",
        d.child.report()
    );
    let before = d.dump();
    for _ in 0..5 {
        let out = d.wgctl_reload();
        assert!(out.status.success(), "{out:?}");
    }
    let after = d.dump();
    assert_eq!(
        after.peer(p1.go.public_key()).map(|p| p.latest_handshake),
        before.peer(p1.go.public_key()).map(|p| p.latest_handshake),
        "an unchanged file's reload redid the handshake"
    );
    assert!(
        d.log().contains("0 peers added, 0 removed, 1 kept"),
        "{}",
        d.log()
    );
    // A dead role: the parent restores the configuration from its journal,
    // which the reloads kept to the file's one peer and inline PSK.
    let transport = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = &s[s.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(d.child.pid())
                && std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.contains("transport"))
        })
        .expect("the transport role");
    kill(Pid::from_raw(transport as i32), Signal::SIGKILL).expect("killing the transport");
    wait_until(Duration::from_secs(5), "the roles to restart", || {
        d.log().contains("roles restarted")
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", d.child.report()));
    assert!(
        ping_within(d.ns, ip(&p1.inner), HANDSHAKE_WAIT).is_some(),
        "no traffic after the restart (the PSK was not restored?):\n{}",
        d.child.report()
    );
    let restored = d.dump();
    assert_eq!(restored.peers.len(), 1, "{restored:?}");
    d.assert_running();
}

/// An endpoint host name is resolved at start only (the parent's seccomp
/// filter forbids the resolver afterwards): a reload reuses the address
/// it resolved to and refuses, naming its line, a name it has not seen.
#[test]
fn reload_reuses_host_names_resolved_at_start() {
    let ns = Netns::new().expect("namespace");
    let (key, _) = keypair();
    let (_, peer) = keypair();
    let (_, other) = keypair();
    let conf = |endpoint: &str| {
        format!(
            "[Interface]\nPrivateKey = {key}\nListenPort = {WGD_PORT}\n\n[Peer]\nPublicKey = {peer}\nEndpoint = {endpoint}\nAllowedIPs = 10.221.0.2/32\n"
        )
    };
    let d = Daemon::start(&ns, &conf("localhost:51821"));
    let endpoint = |d: &Daemon| {
        d.dump()
            .peer(&peer)
            .and_then(|p| p.endpoint)
            .map(|e| e.ip())
    };
    let at_start = endpoint(&d).expect("the peer's endpoint");
    assert!(at_start.is_loopback(), "{at_start}");

    // The same name, and a new peer with an address: fine.
    d.write_conf(&format!(
        "{}\n[Peer]\nPublicKey = {other}\nEndpoint = 10.220.9.2:51821\nAllowedIPs = 10.221.0.3/32\n",
        conf("localhost:51821")
    ));
    let out = d.wgctl_reload();
    assert!(out.status.success(), "wgctl reload: {out:?}\n{}", d.log());
    assert_eq!(endpoint(&d), Some(at_start));
    assert_eq!(d.dump().peers.len(), 2);

    // A name it has not resolved: refused, its line (7) named, nothing
    // changed.
    d.write_conf(&conf("unseen.invalid:51821"));
    let out = d.wgctl_reload();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let at = format!("{}:7:", d.conf_path().display());
    assert!(
        stderr.contains(&at) && stderr.contains("resolves names only when it starts"),
        "{stderr}"
    );
    assert_eq!(
        d.dump().peers.len(),
        2,
        "the refused file changed the peers"
    );
    d.assert_running();
}

/// The pid of `parent`'s child whose command line has `--role ROLE`.
fn role_pid(parent: u32, role: &str) -> Option<u32> {
    wgd_tests::wgd::roles_of(parent)
        .into_iter()
        .find(|r| r.role == role)
        .map(|r| r.pid)
}

#[test]
fn reload_leaves_no_secret_outside_crypto() {
    let net = net(1);
    let (key1, pub1) = keypair();
    let (key2, _) = keypair();
    let psk1 = preshared_key();
    let psk2 = preshared_key();
    let p1 = GoPeer::start(&net, 1, &pub1, Some(&psk1));
    let d = Daemon::start(
        &net.ns_wgd,
        &wgd_conf(&format!("PrivateKey = {key1}"), &[p1.section(Some(&psk1))]),
    );
    // A new PSK by SIGHUP, then a new private key by wgctl reload.
    d.write_conf(&wgd_conf(
        &format!("PrivateKey = {key1}"),
        &[p1.section(Some(&psk2))],
    ));
    let outcome = d.sighup(1);
    assert!(outcome.contains("reloaded the configuration"), "{outcome}");
    d.write_conf(&wgd_conf(
        &format!("PrivateKey = {key2}"),
        &[p1.section(Some(&psk2))],
    ));
    let out = d.wgctl_reload();
    assert!(out.status.success(), "{out:?}");
    assert!(d.log().contains("new private key"), "{}", d.log());

    let mut needles = Vec::new();
    for (name, k) in [
        ("private key 1", &key1),
        ("private key 2", &key2),
        ("psk 1", &psk1),
        ("psk 2", &psk2),
    ] {
        needles.extend(key_forms(name, k).expect("key forms"));
    }
    let peer = key_forms("peer public key", p1.go.public_key()).expect("key forms");
    needles.extend(peer.iter().take(1).cloned());
    let mut processes = vec![("parent", d.child.pid())];
    for role in ["crypto", "handshake", "transport"] {
        processes.push((role, role_pid(d.child.pid(), role).expect("a role")));
    }
    for (name, pid) in processes {
        let seen = scan(pid, &needles).unwrap_or_else(|e| panic!("scanning {name}: {e}"));
        // The scan saw the process: every process knows the peer.
        assert!(
            seen.found("peer public key (raw)"),
            "the scan of {name} did not see the peer's public key: {seen:?}"
        );
        let secrets: Vec<&str> = seen
            .hits
            .iter()
            .map(|h| h.needle.as_str())
            .filter(|n| !n.starts_with("peer public key"))
            .collect();
        if name == "crypto" {
            for held in ["private key 2 (raw)", "psk 2 (raw)"] {
                assert!(seen.found(held), "crypto does not hold {held}: {seen:?}");
            }
        } else {
            assert!(
                secrets.is_empty(),
                "{name} holds {secrets:?} after the reloads: {:?}",
                seen.hits
            );
        }
    }
    d.assert_running();
}

/// Started without `-c`, wgd has nothing to reload: it says so and runs on.
#[test]
fn reload_without_a_configuration_file_is_refused() {
    let ns = Netns::new().expect("namespace");
    let ifname = fresh_ifname().expect("interface name");
    let bin = workspace_binary("wgd");
    let child = ns
        .spawn_env(
            &bin.to_string_lossy(),
            ["-f", ifname.as_str()],
            &[("LOG_LEVEL", "info")],
        )
        .expect("start wgd");
    wait_for_socket(&child, &ifname, "wgd", START_TIMEOUT).expect("wgd's control socket");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns.name()])
        .arg(workspace_binary("wgctl"))
        .args(["reload", ifname.as_str()]);
    let out = run_command(cmd, RUN_TIMEOUT).expect("wgctl reload");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("without a configuration file"),
        "{out:?}"
    );
    kill(Pid::from_raw(child.pid() as i32), Signal::SIGHUP).expect("SIGHUP");
    wait_until(RELOAD_WAIT, "the refused SIGHUP reload in the log", || {
        child
            .stderr()
            .lines()
            .filter(|l| l.contains("reload refused"))
            .count()
            == 2
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", child.report()));
    assert!(child.is_running(), "{}", child.report());
}
