//! wg-quick(8) with wgd as its userspace implementation.
//!
//! There is no WireGuard kernel module here, so `ip link add … type
//! wireguard` fails and wg-quick falls back to
//! `$WG_QUICK_USERSPACE_IMPLEMENTATION IFNAME`, here `wgd IFNAME` found
//! through a temporary directory put first in PATH. wgd then daemonizes
//! like wireguard-go, and everything else wg-quick does goes through the
//! userspace API (`wg setconf`, `wg show … fwmark`, `wg set … fwmark`)
//! and ip(8).
//!
//! The full tunnel (`AllowedIPs = 0.0.0.0/0, ::/0`) is the interesting
//! part: wg-quick sets fwmark 51820 on the interface, routes everything
//! through table 51820 for packets *without* that mark, and relies on the
//! implementation marking its own UDP packets. The outer addresses here
//! are /32 and /128 with only a default route towards the peer, so
//! wgd's encrypted packets reach the peer only if they really carry the
//! mark (set by the parent on the sockets the unprivileged transport
//! uses); unmarked, they would loop back into the tunnel.

use std::io::Read as _;
use std::net::IpAddr;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wgd_tests::proc::{cmdline, pids};
use wgd_tests::wggo::fresh_ifname;
use wgd_tests::{
    keypair, link, link_with, ping, socket_path, wait_until, Child, Netns, PeerConfig, WgGo,
};

/// Bound on one `wg-quick up` or `down`.
const WG_QUICK_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on traffic through a fresh tunnel (handshake included).
const TRAFFIC_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on wgd and its roles going away after `down`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The table and fwmark wg-quick picks for a full tunnel.
const TABLE: u32 = 51820;

// Outer: A ↔ B with host addresses only (no connected route), so A
// reaches B solely through its default route.
const OUTER_A4: &str = "10.220.0.1";
const OUTER_B4: &str = "10.220.0.2";
const OUTER_A6: &str = "fd00:220::1";
const OUTER_B6: &str = "fd00:220::2";
// Outer: A ↔ C on an ordinary subnet.
const OUTER_AC_A4: &str = "10.221.0.1";
const OUTER_AC_C4: &str = "10.221.0.2";
// Inner.
const INNER_A4: &str = "10.222.0.1";
const INNER_A6: &str = "fd00:222::1";
const INNER_B4: &str = "10.222.0.2";
const INNER_B6: &str = "fd00:222::2";
const SPECIFIC_NET: &str = "10.99.1.0/24";
const INNER_C4: &str = "10.99.1.1";

const PORT_B: u16 = 51830;
const PORT_C: u16 = 51831;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("literal address")
}

/// Everything wg-quick needs to start wgd: a private directory holding the
/// configuration `IFNAME.conf` and `bin/wgd` (a symlink to the binary under
/// test, plus an `nft` stand-in where the machine has no packet filter
/// tool, see [`Setup::new`]).
struct Setup {
    _dir: tempfile::TempDir,
    ifname: String,
    conf: PathBuf,
    path_var: String,
    /// wg-quick installs its firewall rules with a real nft(8).
    real_nft: bool,
}

impl Setup {
    /// `conf_text` is the wg-quick configuration.
    fn new(conf_text: &str) -> Setup {
        let ifname = fresh_ifname().expect("free interface name");
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let wgd = wgd_tests::wgd::binary().expect("wgd binary (cargo build -p wgd --bins)");
        let wgd = wgd.canonicalize().unwrap_or(wgd);
        std::os::unix::fs::symlink(&wgd, bin.join("wgd")).expect("symlink wgd");
        let base = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let path_var = format!("{}:{base}", bin.display());

        // wg-quick's full tunnel pipes its firewall rules into nft(8), or
        // else iptables-restore(8), and fails without either. Those rules
        // (anti-spoofing, connmark for rp_filter) are wg-quick's business,
        // not wgd's: where neither tool is installed, a stand-in that
        // accepts everything lets the test still exercise wgd.
        let real_nft = on_path("nft", &path_var);
        if !real_nft && !on_path("iptables-restore", &path_var) {
            eprintln!(
                "wgquick: neither nft nor iptables-restore is installed; \
                 wg-quick's firewall rules are skipped with a stand-in nft"
            );
            let stub = bin.join("nft");
            std::fs::write(&stub, "#!/bin/sh\nexit 0\n").expect("nft stand-in");
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))
                .expect("chmod nft stand-in");
        }

        let conf = dir.path().join(format!("{ifname}.conf"));
        std::fs::write(&conf, conf_text).expect("write wg-quick config");
        std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o600))
            .expect("chmod config");
        Setup {
            _dir: dir,
            ifname,
            conf,
            path_var,
            real_nft,
        }
    }

    fn env<'a>(&'a self, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let mut env = vec![
            ("PATH", self.path_var.as_str()),
            ("WG_QUICK_USERSPACE_IMPLEMENTATION", "wgd"),
        ];
        env.extend_from_slice(extra);
        env
    }

    /// `wg-quick ACTION CONF` in `ns`, waited for (bounded). The returned
    /// guard's output also collects, after `up`, what the daemonized wgd
    /// logs (it keeps wg-quick's stderr).
    fn wg_quick(&self, ns: &Netns, action: &str, extra_env: &[(&str, &str)]) -> Child {
        let conf = self.conf.to_string_lossy().into_owned();
        let child = ns
            .spawn_env("wg-quick", [action, conf.as_str()], &self.env(extra_env))
            .unwrap_or_else(|e| panic!("start wg-quick {action}: {e}"));
        let status = child
            .wait_exit(WG_QUICK_TIMEOUT)
            .unwrap_or_else(|e| panic!("wg-quick {action}: {e}\n{}", child.report()));
        assert!(
            status.success(),
            "wg-quick {action} failed ({status})\n{}",
            child.report()
        );
        child
    }
}

/// Whether an executable `name` is in one of the directories of `path_var`.
fn on_path(name: &str, path_var: &str) -> bool {
    path_var.split(':').any(|d| {
        std::fs::metadata(Path::new(d).join(name))
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    })
}

/// The processes whose network namespace is `ns`, with their command lines.
fn processes_in(ns: &Netns) -> Vec<(u32, Vec<String>)> {
    let Ok(target) = std::fs::metadata(ns.path()) else {
        return Vec::new();
    };
    pids()
        .into_iter()
        // Zombies and vanished processes have no readable namespace.
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| (m.dev(), m.ino()) == (target.dev(), target.ino()))
        })
        .map(|pid| (pid, cmdline(pid)))
        .collect()
}

/// The daemon `wgd IFNAME` running in `ns`, as wg-quick started it.
fn find_wgd(ns: &Netns, ifname: &str) -> Option<u32> {
    processes_in(ns).into_iter().find_map(|(pid, args)| {
        let is_wgd = args.len() == 2
            && Path::new(&args[0]).file_name().is_some_and(|n| n == "wgd")
            && args[1] == ifname;
        is_wgd.then_some(pid)
    })
}

/// True while `pid` is a live process (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    !matches!(state, None | Some("Z") | Some("X"))
}

/// Stops a wgd that a test started through wg-quick and did not bring down
/// (a failed assertion): SIGTERM (wgd then deletes its interface and
/// socket), SIGKILL after a bounded grace. Declared after the namespaces,
/// so it runs before they are deleted.
struct DaemonGuard<'a> {
    ns: &'a Netns,
    ifname: String,
}

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        if let Some(pid) = find_wgd(self.ns, &self.ifname) {
            let target = Pid::from_raw(pid as i32);
            let _ = kill(target, Signal::SIGTERM);
            let stopped = wait_until(Duration::from_secs(5), "wgd to stop on SIGTERM", || {
                !alive(pid)
            });
            // Only if it is still the same daemon.
            if stopped.is_err() && find_wgd(self.ns, &self.ifname) == Some(pid) {
                eprintln!("wgquick: wgd {} (pid {pid}) ignored SIGTERM", self.ifname);
                let _ = kill(target, Signal::SIGKILL);
                let _ = wait_until(Duration::from_secs(5), "wgd to die", || !alive(pid));
            }
        }
        // The name is ours alone: a socket nobody serves any more is ours.
        let sock = socket_path(&self.ifname);
        if sock.exists() && find_wgd(self.ns, &self.ifname).is_none() {
            let _ = std::fs::remove_file(sock);
        }
    }
}

/// `ip ARGS…` in `ns`, stdout whatever the exit status (an absent routing
/// table is an error to some ip versions and empty to others).
fn ip_out(ns: &Netns, args: &[&str]) -> String {
    let out = ns.exec("ip", args).expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The policy rules wg-quick adds for a full tunnel on one family.
fn full_tunnel_rules(rules: &str) -> (bool, bool) {
    let mark = format!("fwmark {TABLE:#x}");
    let lookup = format!("lookup {TABLE}");
    let not_marked = rules
        .lines()
        .any(|l| l.contains("not") && l.contains(&mark) && l.contains(&lookup));
    let suppress = rules
        .lines()
        .any(|l| l.contains("lookup main") && l.contains("suppress_prefixlength 0"));
    (not_marked, suppress)
}

fn contains_any(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

#[test]
fn wg_quick_up_down_cycle() {
    let started = Instant::now();
    let ns_a = Netns::new().expect("namespace A");
    let ns_b = Netns::new().expect("namespace B");
    let ns_c = Netns::new().expect("namespace C");

    // A ↔ B: host addresses only, routes by device.
    let ab = link_with(
        &ns_a,
        &ns_b,
        &[&format!("{OUTER_A4}/32"), &format!("{OUTER_A6}/128")],
        &[&format!("{OUTER_B4}/32"), &format!("{OUTER_B6}/128")],
    )
    .expect("veth A-B");
    for family in ["-4", "-6"] {
        ns_a.ip([family, "route", "add", "default", "dev", ab.a.as_str()])
            .expect("default route in A");
    }
    ns_b.ip([
        "-4",
        "route",
        "add",
        &format!("{OUTER_A4}/32"),
        "dev",
        ab.b.as_str(),
    ])
    .expect("route to A in B");
    ns_b.ip([
        "-6",
        "route",
        "add",
        &format!("{OUTER_A6}/128"),
        "dev",
        ab.b.as_str(),
    ])
    .expect("route to A in B");
    // A ↔ C: an ordinary subnet.
    link(
        &ns_a,
        &ns_c,
        &format!("{OUTER_AC_A4}/24"),
        &format!("{OUTER_AC_C4}/24"),
        "fd00:221::1/64",
        "fd00:221::2/64",
    )
    .expect("veth A-C");

    let (key_a, pub_a) = keypair();

    // B: the full-tunnel peer.
    let go_b = WgGo::start(&ns_b).expect("wireguard-go in B");
    go_b.configure(
        PORT_B,
        vec![PeerConfig::new(
            &pub_a,
            &[&format!("{INNER_A4}/32"), &format!("{INNER_A6}/128")],
        )],
    )
    .expect("configure B");
    go_b.add_addr(&format!("{INNER_B4}/24"))
        .expect("B inner v4");
    go_b.add_addr(&format!("{INNER_B6}/64"))
        .expect("B inner v6");
    go_b.up().expect("B up");

    // C: the peer with specific AllowedIPs.
    let go_c = WgGo::start(&ns_c).expect("wireguard-go in C");
    go_c.configure(
        PORT_C,
        vec![PeerConfig::new(&pub_a, &[&format!("{INNER_A4}/32")])],
    )
    .expect("configure C");
    go_c.add_addr(&format!("{INNER_C4}/24")).expect("C inner");
    go_c.up().expect("C up");
    ns_c.ip([
        "route",
        "add",
        &format!("{INNER_A4}/32"),
        "dev",
        go_c.ifname(),
    ])
    .expect("route to A in C");

    let pub_b = go_b.public_key().to_string();
    let pub_c = go_c.public_key().to_string();
    let setup = Setup::new(&format!(
        "[Interface]\n\
             PrivateKey = {key_a}\n\
             Address = {INNER_A4}/32, {INNER_A6}/128\n\
             MTU = 1380\n\
             \n\
             [Peer]\n\
             PublicKey = {pub_c}\n\
             Endpoint = {OUTER_AC_C4}:{PORT_C}\n\
             AllowedIPs = {SPECIFIC_NET}\n\
             \n\
             [Peer]\n\
             PublicKey = {pub_b}\n\
             Endpoint = {OUTER_B4}:{PORT_B}\n\
             AllowedIPs = 0.0.0.0/0, ::/0\n"
    ));
    let ifname = setup.ifname.clone();
    if !setup.real_nft {
        // Without wg-quick's connmark rules, strict reverse-path filtering
        // would drop the peer's replies; keep it off in A.
        for dev in ["all", "default", ab.a.as_str()] {
            ns_a.run(
                "sysctl",
                ["-q", "-w", &format!("net.ipv4.conf.{dev}.rp_filter=0")],
            )
            .expect("rp_filter off in A");
        }
    }
    let _daemon = DaemonGuard {
        ns: &ns_a,
        ifname: ifname.clone(),
    };

    // ---- up -------------------------------------------------------------
    let up = setup.wg_quick(&ns_a, "up", &[("LOG_LEVEL", "debug")]);
    let ctx = || {
        format!(
            "\nwg-quick up and wgd: {}\nB: {}\nC: {}",
            up.report(),
            go_b.child().report(),
            go_c.child().report()
        )
    };
    let stderr = up.stderr();
    assert!(
        stderr.contains(&format!("[#] wgd {ifname}")),
        "wg-quick fell back to wgd{}",
        ctx()
    );

    // The interface, its MTU and addresses.
    let link_show = ns_a
        .ip(["link", "show", "dev", ifname.as_str()])
        .expect("interface exists");
    assert!(
        link_show.contains("mtu 1380"),
        "MTU 1380: {link_show}{}",
        ctx()
    );
    assert!(
        link_show.contains(",UP"),
        "interface up: {link_show}{}",
        ctx()
    );
    let v4 = ns_a
        .ip(["-4", "addr", "show", "dev", ifname.as_str()])
        .expect("v4 addresses");
    assert!(
        v4.contains(&format!("inet {INNER_A4}/32")),
        "v4 address: {v4}{}",
        ctx()
    );
    let v6 = ns_a
        .ip(["-6", "addr", "show", "dev", ifname.as_str()])
        .expect("v6 addresses");
    assert!(
        v6.contains(&format!("inet6 {INNER_A6}/128")),
        "v6 address: {v6}{}",
        ctx()
    );

    // wgd runs, daemonized, and serves its socket.
    let sock = socket_path(&ifname);
    assert!(sock.exists(), "{} exists{}", sock.display(), ctx());
    let wgd_pid = find_wgd(&ns_a, &ifname)
        .unwrap_or_else(|| panic!("a `wgd {ifname}` process in A{}", ctx()));

    // The full tunnel: fwmark, policy rules, table 51820.
    let fwmark = ns_a
        .run("wg", ["show", ifname.as_str(), "fwmark"])
        .expect("wg show fwmark");
    assert_eq!(fwmark.trim(), format!("{TABLE:#x}"), "fwmark{}", ctx());
    for family in ["-4", "-6"] {
        let rules = ip_out(&ns_a, &[family, "rule", "show"]);
        let (not_marked, suppress) = full_tunnel_rules(&rules);
        assert!(
            not_marked,
            "ip {family} rule: not fwmark {TABLE} table {TABLE}\n{rules}{}",
            ctx()
        );
        assert!(
            suppress,
            "ip {family} rule: main suppress_prefixlength 0\n{rules}{}",
            ctx()
        );
        let table = ip_out(
            &ns_a,
            &[family, "route", "show", "table", &TABLE.to_string()],
        );
        assert!(
            table.contains(&format!("default dev {ifname}")),
            "ip {family} route table {TABLE} has the default route: {table:?}{}",
            ctx()
        );
    }
    // The specific peer's route, in the main table.
    let main4 = ip_out(&ns_a, &["-4", "route", "show", "dev", ifname.as_str()]);
    assert!(
        main4.lines().any(|l| l.starts_with(SPECIFIC_NET)),
        "route {SPECIFIC_NET} dev {ifname}: {main4:?}{}",
        ctx()
    );

    // Traffic through the full tunnel over an IPv4 outer path: only works
    // if wgd's UDP packets carry the fwmark.
    for inner in [INNER_B4, INNER_B6] {
        wait_until(
            TRAFFIC_TIMEOUT,
            &format!("ping {inner} through the full tunnel"),
            || ping(&ns_a, ip(inner), 2),
        )
        .unwrap_or_else(|e| panic!("{e}{}", ctx()));
    }
    let seen = go_b.dump().expect("dump B");
    let a_at_b = seen.peer(&pub_a).and_then(|p| p.endpoint);
    assert_eq!(
        a_at_b.map(|e| e.ip()),
        Some(ip(OUTER_A4)),
        "B heard A from its IPv4 outer address{}",
        ctx()
    );
    // Traffic to the specific peer, by cryptokey routing.
    wait_until(TRAFFIC_TIMEOUT, "ping the specific-AllowedIPs peer", || {
        ping(&ns_a, ip(INNER_C4), 2)
    })
    .unwrap_or_else(|e| panic!("{e}{}", ctx()));

    // The same over an IPv6 outer path: the IPv6 socket is marked too.
    let e6 = format!("[{OUTER_B6}]:{PORT_B}");
    ns_a.run(
        "wg",
        [
            "set",
            ifname.as_str(),
            "peer",
            pub_b.as_str(),
            "endpoint",
            e6.as_str(),
        ],
    )
    .unwrap_or_else(|e| panic!("IPv6 endpoint: {e}{}", ctx()));
    for inner in [INNER_B4, INNER_B6] {
        wait_until(
            TRAFFIC_TIMEOUT,
            &format!("ping {inner} over IPv6 outer"),
            || ping(&ns_a, ip(inner), 2),
        )
        .unwrap_or_else(|e| panic!("{e}{}", ctx()));
    }
    wait_until(
        Duration::from_secs(5),
        "B hears A from its IPv6 outer address",
        || {
            go_b.dump()
                .ok()
                .and_then(|d| d.peer(&pub_a).and_then(|p| p.endpoint))
                .is_some_and(|e| e.ip() == ip(OUTER_A6))
        },
    )
    .unwrap_or_else(|e| panic!("{e}{}", ctx()));

    // ---- down -----------------------------------------------------------
    let down = setup.wg_quick(&ns_a, "down", &[]);
    let ctx = || format!("{}\nwg-quick down: {}", ctx(), down.report());

    assert!(
        !ns_a
            .exec("ip", ["link", "show", "dev", ifname.as_str()])
            .expect("ip link show")
            .status
            .success(),
        "interface {ifname} is gone{}",
        ctx()
    );
    wait_until(EXIT_TIMEOUT, "wgd to exit after wg-quick down", || {
        !alive(wgd_pid)
    })
    .unwrap_or_else(|e| panic!("{e}{}", ctx()));
    wait_until(EXIT_TIMEOUT, "every wgd process in A to exit", || {
        processes_in(&ns_a).is_empty()
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}{}", processes_in(&ns_a), ctx()));
    assert!(
        !sock.exists(),
        "{} removed when wgd stopped{}",
        sock.display(),
        ctx()
    );
    let table = TABLE.to_string();
    let mark = format!("{TABLE:#x}");
    for family in ["-4", "-6"] {
        let rules = ip_out(&ns_a, &[family, "rule", "show"]);
        assert!(
            !contains_any(&rules, &[&table, &mark, "suppress_prefixlength"]),
            "ip {family} rules of the tunnel removed:\n{rules}{}",
            ctx()
        );
        let routes = ip_out(&ns_a, &[family, "route", "show", "table", &table]);
        assert!(
            routes.trim().is_empty(),
            "ip {family} route table {TABLE} empty: {routes:?}{}",
            ctx()
        );
    }
    if setup.real_nft {
        let tables = ns_a
            .run("nft", ["list", "tables"])
            .expect("nft list tables");
        assert!(
            !tables.contains(&format!("wg-quick-{ifname}")),
            "wg-quick's nft tables removed: {tables}{}",
            ctx()
        );
    }
    eprintln!("wg_quick_up_down_cycle: {:?}", started.elapsed());
}

/// A minimal wg-quick configuration: one peer with specific AllowedIPs,
/// no endpoint, no full tunnel.
fn minimal_setup() -> Setup {
    let (key, _) = keypair();
    let (_, peer) = keypair();
    Setup::new(&format!(
        "[Interface]\nPrivateKey = {key}\nAddress = 10.223.0.1/24\n\n\
         [Peer]\nPublicKey = {peer}\nAllowedIPs = 10.99.2.0/24\n"
    ))
}

/// Starts `wg-quick up` in `ns` with stdout and stderr both on one pipe
/// (as `$(…)`, `| tee` or ssh give it) and `log_level` as LOG_LEVEL (none
/// if `None`); waits (bounded) for wg-quick to exit successfully and
/// returns the pipe's read end. wg-quick's output is far below a pipe
/// buffer, so nothing needs to read it meanwhile.
fn wg_quick_up_piped(ns: &Netns, setup: &Setup, log_level: Option<&str>) -> OwnedFd {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).expect("pipe");
    let w2 = w.try_clone().expect("dup pipe");
    let conf = setup.conf.to_string_lossy().into_owned();
    let mut cmd = ns.command("wg-quick", ["up", conf.as_str()]);
    cmd.env_remove("LOG_LEVEL")
        .envs(setup.env(&[]))
        .stdin(Stdio::null())
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2));
    if let Some(level) = log_level {
        cmd.env("LOG_LEVEL", level);
    }
    let mut child = cmd.spawn().expect("start wg-quick up");
    // Our copies of the write end close with the Command.
    drop(cmd);
    let mut status = None;
    let waited = wait_until(WG_QUICK_TIMEOUT, "wg-quick up to exit", || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if waited.is_err() {
        // Not reaped, so the pid is still ours.
        let _ = child.kill();
        let _ = child.wait();
    }
    waited.expect("wg-quick up exits");
    let status = status.expect("exit status");
    if !status.success() {
        // Whatever it printed is in the pipe; the daemon, if any, may hold
        // the write end, so read only what is there.
        let _ = nix::fcntl::fcntl(
            r.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
        );
        let mut text = Vec::new();
        let _ = std::fs::File::from(r).read_to_end(&mut text);
        panic!(
            "wg-quick up ({status}):\n{}",
            String::from_utf8_lossy(&text)
        );
    }
    r
}

/// What a reader thread has read from a pipe so far, and whether it saw EOF.
#[derive(Default)]
struct PipeState {
    text: Mutex<Vec<u8>>,
    eof: AtomicBool,
}

/// Reads `fd` to EOF on a thread of its own (left to end by itself: it
/// does once every writer has closed the pipe).
fn drain(fd: OwnedFd) -> Arc<PipeState> {
    let state = Arc::new(PipeState::default());
    let s = Arc::clone(&state);
    std::thread::spawn(move || {
        let mut file = std::fs::File::from(fd);
        let mut buf = [0u8; 4096];
        // Each read returns data or ends the loop; it ends at EOF.
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => s
                    .text
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
        s.eof.store(true, Ordering::SeqCst);
    });
    state
}

/// The daemon's standard descriptors, for messages.
fn std_fds(pid: u32) -> String {
    (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|p| format!("fd {fd} -> {}", p.display()))
                .unwrap_or_else(|e| format!("fd {fd}: {e}"))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `out=$(wg-quick up wg0)`, `wg-quick up wg0 | tee log` and ssh sessions
/// read wg-quick's output to EOF. wireguard-go's daemon, without
/// LOG_LEVEL, puts /dev/null on its stdin, stdout and stderr, so EOF comes
/// when wg-quick exits; a daemon that keeps them blocks its caller until
/// the interface goes down.
#[test]
fn wg_quick_up_releases_its_output() {
    let ns = Netns::new().expect("namespace");
    let setup = minimal_setup();
    let ifname = setup.ifname.clone();
    let _daemon = DaemonGuard {
        ns: &ns,
        ifname: ifname.clone(),
    };

    let output = drain(wg_quick_up_piped(&ns, &setup, None));
    let text = || {
        String::from_utf8_lossy(&output.text.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
    };
    let wgd_pid = find_wgd(&ns, &ifname)
        .unwrap_or_else(|| panic!("wgd {ifname} runs after wg-quick up:\n{}", text()));
    let eof = wait_until(Duration::from_secs(5), "EOF on wg-quick's output", || {
        output.eof.load(Ordering::SeqCst)
    });
    assert!(
        eof.is_ok(),
        "the wgd daemon (pid {wgd_pid}) still holds wg-quick's stdout/stderr after \
         wg-quick exited ({}); `$(wg-quick up …)` would hang until the interface goes down\n{}",
        std_fds(wgd_pid),
        text()
    );

    setup.wg_quick(&ns, "down", &[]);
    wait_until(EXIT_TIMEOUT, "wgd to exit after wg-quick down", || {
        !alive(wgd_pid)
    })
    .expect("wgd exits");
    assert!(!socket_path(&ifname).exists(), "socket removed");
}

/// `LOG_LEVEL=debug wg-quick up wg0 | head`, or a terminal that went away:
/// wgd's stderr becomes a pipe nobody reads. Logging must then fail
/// quietly, not take the daemon down: `wg-quick down` still ends it
/// cleanly, with its socket removed.
#[test]
fn wgd_outlives_a_closed_log_pipe() {
    let ns = Netns::new().expect("namespace");
    let setup = minimal_setup();
    let ifname = setup.ifname.clone();
    let _daemon = DaemonGuard {
        ns: &ns,
        ifname: ifname.clone(),
    };

    // With LOG_LEVEL set, wgd (like wireguard-go) keeps logging to the
    // caller's stderr: here a pipe whose reader is gone.
    drop(wg_quick_up_piped(&ns, &setup, Some("debug")));
    let wgd_pid =
        find_wgd(&ns, &ifname).unwrap_or_else(|| panic!("wgd {ifname} runs after wg-quick up"));
    let fds = std_fds(wgd_pid);

    // Requests that the daemon may log about, then the shutdown it logs.
    let (_, other) = keypair();
    ns.run(
        "wg",
        [
            "set",
            ifname.as_str(),
            "peer",
            other.as_str(),
            "allowed-ips",
            "10.99.3.0/24",
        ],
    )
    .unwrap_or_else(|e| panic!("wg set with a closed log pipe ({fds}): {e}"));
    setup.wg_quick(&ns, "down", &[]);
    wait_until(EXIT_TIMEOUT, "wgd to exit after wg-quick down", || {
        !alive(wgd_pid)
    })
    .expect("wgd exits");
    wait_until(
        EXIT_TIMEOUT,
        "every wgd process in the namespace to exit",
        || processes_in(&ns).is_empty(),
    )
    .expect("roles exit");
    assert!(
        !socket_path(&ifname).exists(),
        "wgd with a closed log pipe ({fds}) removed {} when the interface went down",
        socket_path(&ifname).display()
    );
}
