//! Faults and their recovery, for the tests that attack a running wgd
//! (`confine.rs`, `hostile.rs`): a tunnel from wgd to wireguard-go, the
//! roles' processes by pid and start time, the parent's restarts.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wgd_tests::traffic::ping_within;
use wgd_tests::{keypair, wait_until, InterfaceConfig, Netns, PeerConfig, WgGo, Wgd};

use super::{ip, sa, Net, INNER_A4, INNER_B4, OUTER_B4, PORT_B};

pub const ROLES: [&str; 3] = ["crypto", "handshake", "transport"];
/// The bound from a restart to traffic flowing again.
pub const RECOVERY: Duration = Duration::from_secs(2);
/// Bound on noticing a dead role and restarting all three.
pub const RESTART: Duration = Duration::from_secs(5);

/// `/proc/PID/stat` fields: (state, session, tty_nr, starttime).
pub fn stat(pid: u32) -> Option<(char, u32, i64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some((
        f.first()?.chars().next()?,
        f.get(3)?.parse().ok()?,
        f.get(4)?.parse().ok()?,
        f.get(19)?.parse().ok()?,
    ))
}

/// Whether the process `pid` that started at `start` is still running.
pub fn alive(pid: u32, start: u64) -> bool {
    stat(pid).is_some_and(|(state, _, _, t)| t == start && state != 'Z')
}

/// wgd in net A, wireguard-go in net B, A knowing B's endpoint; inner
/// addresses up on both.
pub struct Tunnel<'n> {
    pub wgd: Wgd<'n>,
    pub go: WgGo<'n>,
    /// wireguard-go's public key, as configured.
    pub go_public: String,
    /// The PSK of the tunnel, with [`Keys::InlineWithPsk`].
    pub psk: Option<String>,
}

/// How the tunnel's secrets reach wgd.
#[derive(Clone, Copy, PartialEq)]
pub enum Keys {
    /// `PrivateKeyFile =`: a restart reads the file again.
    File,
    /// `PrivateKey =` and `PresharedKey =` inline in the configuration
    /// file: a restart gives the crypto role back what it wrapped.
    InlineWithPsk,
}

pub fn tunnel<'n>(net: &'n Net, env: &[(&str, &str)]) -> Tunnel<'n> {
    tunnel_with(net, env, Keys::File)
}

pub fn tunnel_with<'n>(net: &'n Net, env: &[(&str, &str)], keys: Keys) -> Tunnel<'n> {
    tunnel_with_peer_env(net, env, keys, None)
}

/// [`tunnel_with`], and wgd's environment also has `peer_env` set to
/// wireguard-go's public key (the peer a hostile role is told about).
pub fn tunnel_with_peer_env<'n>(
    net: &'n Net,
    env: &[(&str, &str)],
    keys: Keys,
    peer_env: Option<&str>,
) -> Tunnel<'n> {
    let (ka, pa) = keypair();
    let (kb, pb) = keypair();
    let mut env = env.to_vec();
    if let Some(name) = peer_env {
        env.push((name, pb.as_str()));
    }
    let env = env.as_slice();
    let psk = (keys == Keys::InlineWithPsk).then(wgd_tests::preshared_key);
    let tunnel_psk = psk.clone();
    let mut peer_b =
        PeerConfig::new(&pb, &[&format!("{INNER_B4}/32")]).endpoint(sa(OUTER_B4, PORT_B));
    peer_b.preshared_key = psk.clone();
    let conf_a = InterfaceConfig {
        private_key: Some(ka),
        listen_port: None,
        fwmark: None,
        peers: vec![peer_b],
    };
    let mut peer_a = PeerConfig::new(&pa, &[&format!("{INNER_A4}/32")]);
    peer_a.preshared_key = psk;
    let conf_b = InterfaceConfig {
        private_key: Some(kb),
        listen_port: Some(PORT_B),
        fwmark: None,
        peers: vec![peer_a],
    };
    let wgd = match keys {
        Keys::File => Wgd::start_key_file(&net.ns_a, conf_a, env),
        Keys::InlineWithPsk => Wgd::start(&net.ns_a, conf_a, env),
    }
    .expect("start wgd");
    let go = WgGo::start(&net.ns_b).expect("start wireguard-go");
    go.setconf(&conf_b).expect("configure wireguard-go");
    wgd.add_addr(&format!("{INNER_A4}/24"))
        .expect("inner address A");
    wgd.up().expect("wgd link up");
    wgd_tests::add_addr(&net.ns_b, go.ifname(), &format!("{INNER_B4}/24"))
        .expect("inner address B");
    net.ns_b
        .ip(["link", "set", go.ifname(), "up"])
        .expect("wireguard-go link up");
    let first = ping_within(&net.ns_a, ip(INNER_B4), Duration::from_secs(5));
    assert!(
        first.is_some(),
        "no traffic through the tunnel before any fault\n{}",
        wgd.child().report()
    );
    Tunnel {
        wgd,
        go,
        go_public: pb,
        psk: tunnel_psk,
    }
}

pub fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

/// The route to the peer's inner prefix through the tunnel, as `ip route`
/// shows it.
pub fn tunnel_route(ns: &Netns, ifname: &str) -> bool {
    ns.ip(["-4", "route", "show", "dev", ifname])
        .map(|r| r.contains("10.211.0.0/24"))
        .unwrap_or(false)
}

/// Waits for the parent's log to say it restarted the roles once more
/// than `before` times; returns when it did.
pub fn wait_restart(w: &Wgd<'_>, before: usize, why: &str) -> Instant {
    wait_until(RESTART, "roles restarted", || {
        count(&w.child().stderr(), "roles restarted") > before
    })
    .unwrap_or_else(|e| panic!("{e} after {why}\n{}", w.child().report()));
    Instant::now()
}

/// After a restart: the interface and its route are there, new roles
/// run, and a ping gets through within [`RECOVERY`].
pub fn assert_recovered(net: &Net, w: &Wgd<'_>, restarted: Instant, why: &str) {
    assert!(
        w.interface_exists() && tunnel_route(&net.ns_a, w.ifname()),
        "interface or route gone after {why}\n{}",
        w.child().report()
    );
    let took = ping_within(&net.ns_a, ip(INNER_B4), RECOVERY);
    let since = restarted.elapsed();
    assert!(
        took.is_some() && since <= RECOVERY + Duration::from_millis(300),
        "no traffic within {RECOVERY:?} of the restart after {why} (ping: {took:?}, {since:?} since the restart)\n{}",
        w.child().report()
    );
    eprintln!("after {why}: traffic again {since:?} after the restart");
    assert_eq!(
        w.roles().len(),
        3,
        "three roles after {why}\n{}",
        w.child().report()
    );
}

/// Makes `role` break its filter (the test hook) and waits for the
/// restart that follows; returns when it happened.
pub fn break_filter(w: &Wgd<'_>, role: &str, why: &str) -> Instant {
    let pid = w
        .role_pid(role)
        .unwrap_or_else(|| panic!("no {role} role\n{}", w.child().report()));
    let (_, _, _, start) = stat(pid).expect("role stat");
    let before = count(&w.child().stderr(), "roles restarted");
    kill(Pid::from_raw(pid as i32), Signal::SIGUSR2).expect("SIGUSR2 the role");
    wait_until(RESTART, "the role to die", || !alive(pid, start))
        .unwrap_or_else(|e| panic!("{e}: {why} did not kill it\n{}", w.child().report()));
    wait_restart(w, before, why)
}
