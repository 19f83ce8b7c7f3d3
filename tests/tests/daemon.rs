//! The daemon as an operator sees it, each test in its own namespace:
//!
//! - `privileges`: what every process of a running wgd holds, read from
//!   `/proc` (ids, capabilities, no_new_privs, chroot, dumpability, file
//!   descriptors);
//! - `roles_get_no_inherited_descriptors`: a descriptor left open by
//!   whoever starts wgd does not reach the roles;
//! - `fail_closed_*`: SIGKILL of any role, when the configuration cannot
//!   be restored (its key file was deleted), takes the interface and the
//!   control socket down with the parent, which exits non-zero, starting
//!   no new role (`confine.rs` tests the restart when it can be restored,
//!   and the restart budget);
//! - `bad_config`: configuration errors name `FILE:LINE:` and create
//!   nothing;
//! - `lifecycle_*`: deleting the interface or the socket, SIGTERM,
//!   daemonizing and `WG_PROCESS_FOREGROUND`, missing users.
//!
//! Processes are found and checked by pid together with their start time,
//! so a reused pid is never taken for the process a test started. Zombies
//! count as gone: whatever reaps orphans here may not reap at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::process::Output;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, Uid, User};
use tempfile::NamedTempFile;
use wgd_tests::proc::run_command;
use wgd_tests::wggo::fresh_ifname;
use wgd_tests::{keypair, socket_path, wait_until, Child, InterfaceConfig, Netns, PeerConfig, Wgd};

/// Where the roles are chrooted (`wgd::privdrop::EMPTY_ROOT`).
const EMPTY_ROOT: &str = "/run/wgd/empty";
/// CAP_NET_ADMIN (12) | CAP_NET_BIND_SERVICE (10) | CAP_KILL (5) |
/// CAP_SYS_NICE (23, the transport's SCHED_RR while it is busy).
const PARENT_CAPS: u64 = (1 << 12) | (1 << 10) | (1 << 5) | (1 << 23);
/// The parent's bounding set: its own, and what a role it restarts needs
/// for its privilege drop: SETGID (6), SETUID (7), SETPCAP (8),
/// IPC_LOCK (14), SYS_CHROOT (18).
const PARENT_BOUNDING: u64 = PARENT_CAPS | (1 << 6) | (1 << 7) | (1 << 8) | (1 << 14) | (1 << 18);
const ROLE_NAMES: [&str; 3] = ["crypto", "handshake", "transport"];
/// Bound on a one-shot wgd run (config errors, daemonizing).
const RUN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on wgd's reaction to a dead role, per the fail-closed contract.
const FAIL_CLOSED: Duration = Duration::from_secs(2);
/// Bound on an orderly stop (the parent polls every 500 ms).
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(10);
const NO_SUCH_USER: &str = "no_such_user_xyz";
const NO_SUCH_CRYPTO_USER: &str = "no_such_crypto_user_xyz";
/// O_CLOEXEC as `/proc/self/fdinfo` shows it (octal flags).
const O_CLOEXEC: u32 = 0o2000000;

// ---------------------------------------------------------------- /proc --

/// The fields of `/proc/PID/stat` the tests use.
#[derive(Debug, Clone, Copy)]
struct Stat {
    state: char,
    ppid: u32,
    session: u32,
    starttime: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is parenthesised and may hold anything: split after it.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        // Field 22 of the whole line; the state is field 3.
        starttime: f.get(19)?.parse().ok()?,
    })
}

/// A process identified by pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: u32,
    starttime: u64,
}

impl Proc {
    fn of(pid: u32) -> Option<Proc> {
        stat(pid).map(|s| Proc {
            pid,
            starttime: s.starttime,
        })
    }

    /// Still this process, and not a zombie.
    fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.starttime == self.starttime && s.state != 'Z')
    }
}

fn pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse().ok())
        .collect()
}

/// Every child process of `pid` (zombies included), sorted.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out: Vec<u32> = pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == pid))
        .collect();
    out.sort_unstable();
    out
}

fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `/proc/PID/status` as key → value.
fn status(pid: u32) -> HashMap<String, String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn status_ids(st: &HashMap<String, String>, key: &str) -> Vec<u32> {
    st.get(key)
        .map(|v| {
            v.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn status_caps(st: &HashMap<String, String>, key: &str) -> Option<u64> {
    st.get(key).and_then(|v| u64::from_str_radix(v, 16).ok())
}

/// fd number → `readlink /proc/PID/fd/N`.
fn fd_links(pid: u32) -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(n) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(e.path()) {
            out.insert(n, target.to_string_lossy().into_owned());
        }
    }
    out
}

/// The socket tables of the network namespace `pid` is in.
struct Sockets {
    /// inode → local port
    udp4: HashMap<u64, u16>,
    udp6: HashMap<u64, u16>,
    unix: HashSet<u64>,
    has_v6: bool,
}

impl Sockets {
    fn of(pid: u32) -> Sockets {
        let read = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{name}")).ok();
        let udp = |text: Option<String>| -> HashMap<u64, u16> {
            text.unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let port = f.get(1)?.rsplit(':').next()?;
                    Some((f.get(9)?.parse().ok()?, u16::from_str_radix(port, 16).ok()?))
                })
                .collect()
        };
        let v6 = read("udp6");
        Sockets {
            udp4: udp(read("udp")),
            has_v6: v6.is_some(),
            udp6: udp(v6),
            unix: read("unix")
                .unwrap_or_default()
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(6)?.parse().ok())
                .collect(),
        }
    }
}

/// What one descriptor is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum FdKind {
    Stdio,
    Tun,
    Unix(u64),
    Udp4(u16),
    Udp6(u16),
    Other(String),
}

fn classify(pid: u32) -> BTreeMap<i32, FdKind> {
    let socks = Sockets::of(pid);
    fd_links(pid)
        .into_iter()
        .map(|(n, target)| {
            let inode = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok());
            let kind = match inode {
                _ if n <= 2 => FdKind::Stdio,
                _ if target == "/dev/net/tun" => FdKind::Tun,
                Some(i) if socks.unix.contains(&i) => FdKind::Unix(i),
                Some(i) if socks.udp4.contains_key(&i) => FdKind::Udp4(socks.udp4[&i]),
                Some(i) if socks.udp6.contains_key(&i) => FdKind::Udp6(socks.udp6[&i]),
                _ => FdKind::Other(target),
            };
            (n, kind)
        })
        .collect()
}

/// Descriptors of this test process that are not close-on-exec, by number:
/// inherited from whoever started the test (a CI runner, a shell), and so
/// passed on to every process it starts. They are the environment's, not
/// wgd's: [`privileges`] does not count them, and
/// [`roles_get_no_inherited_descriptors`] tests their handling on purpose.
fn own_inherited_fds() -> BTreeMap<i32, String> {
    let mut out = BTreeMap::new();
    for (n, target) in fd_links(std::process::id()) {
        if n <= 2 {
            continue;
        }
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap_or_default();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok());
        if flags.is_some_and(|f| f & O_CLOEXEC == 0) {
            out.insert(n, target);
        }
    }
    out
}

/// The descriptors of `pid` that are not stdio, not a known socket and not
/// the tun device, leaving out those inherited by this test process.
fn unexpected_fds(pid: u32, inherited: &BTreeMap<i32, String>) -> Vec<(i32, String)> {
    classify(pid)
        .into_iter()
        .filter_map(|(n, k)| match k {
            FdKind::Other(target) if inherited.get(&n) != Some(&target) => Some((n, target)),
            _ => None,
        })
        .collect()
}

fn describe_fds(role: &str, pid: u32) -> String {
    let mut s = format!("{role} (pid {pid}) descriptors:");
    for (n, target) in fd_links(pid) {
        s.push_str(&format!("\n    {n} -> {target}"));
    }
    s
}

// ------------------------------------------------------------- set-up ----

/// A configuration with one peer whose endpoint is in 10.230.0.0/24, a
/// subnet routed to `lo` in `ns` (nothing answers there: these tests need
/// no traffic, only a reachable-looking endpoint).
fn one_peer_config(ns: &Netns) -> InterfaceConfig {
    ns.ip(["addr", "add", "10.230.0.1/24", "dev", "lo"])
        .expect("address on lo");
    let (_, peer) = keypair();
    InterfaceConfig {
        private_key: None,
        listen_port: None,
        fwmark: None,
        peers: vec![PeerConfig::new(&peer, &["10.231.0.2/32"])
            .endpoint("10.230.0.2:51820".parse().expect("literal endpoint"))],
    }
}

fn conf_file(text: &str) -> NamedTempFile {
    let mut f = NamedTempFile::new().expect("config temp file");
    f.write_all(text.as_bytes()).expect("write config");
    f.flush().expect("flush config");
    f
}

fn bin() -> String {
    wgd_tests::wgd::binary()
        .expect("wgd binary")
        .to_string_lossy()
        .into_owned()
}

fn path_str(f: &NamedTempFile) -> String {
    f.path().to_string_lossy().into_owned()
}

fn link_exists(ns: &Netns, ifname: &str) -> bool {
    ns.exec("ip", ["link", "show", ifname])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `wgd args…` inside `ns` to completion, bounded by [`RUN_TIMEOUT`].
fn run_wgd(ns: &Netns, args: &[&str]) -> Output {
    run_command(ns.command(&bin(), args), RUN_TIMEOUT)
        .unwrap_or_else(|e| panic!("wgd {} did not finish: {e}", args.join(" ")))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Starts `wgd args…` in `ns` as a guarded child and waits until its
/// control socket answers (start-up complete: roles spawned and
/// configured).
fn spawn_wgd(
    ns: &Netns,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    ifname: &str,
) -> Child {
    let child = ns.spawn_env(program, args, env).expect("spawn wgd");
    let sock = socket_path(ifname);
    let waited = wait_until(START_TIMEOUT, "wgd control socket", || {
        sock.exists() || !child.is_running()
    });
    assert!(
        waited.is_ok() && child.is_running(),
        "wgd did not start: {waited:?}\n{}",
        child.report()
    );
    wgd_tests::wg::dump(ns, ifname)
        .unwrap_or_else(|e| panic!("wg show dump: {e}\n{}", child.report()));
    child
}

/// Role name → pid of the children of `parent` started as `--role NAME`.
fn role_pids(parent: u32) -> BTreeMap<String, u32> {
    children_of(parent)
        .into_iter()
        .filter_map(|pid| {
            let args = cmdline(pid);
            let i = args.iter().position(|a| a == "--role")?;
            Some((args.get(i + 1)?.clone(), pid))
        })
        .collect()
}

fn user(name: &str) -> User {
    User::from_name(name)
        .expect("passwd lookup")
        .unwrap_or_else(|| panic!("user {name} is missing (scripts/test.sh creates it)"))
}

fn uid_of(pid: u32) -> Option<u32> {
    status_ids(&status(pid), "Uid").first().copied()
}

/// Collects failed checks so one run reports all of them.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    fn eq<T: PartialEq + Debug>(&mut self, what: &str, got: T, want: T) {
        if got != want {
            self.0.push(format!("{what}: got {got:?}, want {want:?}"));
        }
    }

    fn finish(self, context: &str) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n- {}\n{context}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

// --------------------------------------------------------- privileges ----

#[test]
fn privileges() {
    let ns = Netns::new().expect("namespace");
    let w = Wgd::start(&ns, one_peer_config(&ns), &[]).expect("start wgd");
    // The parent serves the socket only once every role has been spawned,
    // has dropped its privileges and has taken its configuration.
    let dump = w.dump().expect("wg show dump");
    let net = user("_wgd-net");
    let hs_user = user("_wgd-hs");
    let crypto_user = user("_wgd-crypto");
    let mut f = Failures::default();

    // Exactly three children, one per role.
    let children = children_of(w.pid());
    let roles = role_pids(w.pid());
    f.eq("number of children of the parent", children.len(), 3);
    assert_eq!(
        roles.keys().map(String::as_str).collect::<Vec<_>>(),
        ROLE_NAMES.to_vec(),
        "roles of the children\n{}",
        w.child().report()
    );

    // The parent: root with exactly the two kept capabilities.
    let ps = status(w.pid());
    f.eq("parent Uid", status_ids(&ps, "Uid"), vec![0; 4]);
    f.eq(
        "parent CapEff",
        status_caps(&ps, "CapEff"),
        Some(PARENT_CAPS),
    );
    f.eq(
        "parent CapPrm",
        status_caps(&ps, "CapPrm"),
        Some(PARENT_CAPS),
    );
    f.eq(
        "parent CapBnd",
        status_caps(&ps, "CapBnd"),
        Some(PARENT_BOUNDING),
    );
    f.eq("parent CapInh", status_caps(&ps, "CapInh"), Some(0));
    f.eq("parent CapAmb", status_caps(&ps, "CapAmb"), Some(0));
    // The parent holds the tun device, so that a dead transport does not
    // take the interface and its routes with it.
    let parent_fds = classify(w.pid());
    f.check(parent_fds.values().any(|k| *k == FdKind::Tun), || {
        format!("the parent does not hold the tun device: {parent_fds:?}")
    });

    // Every role: its own ids, nothing else.
    for (role, &pid) in &roles {
        let want = match role.as_str() {
            "crypto" => &crypto_user,
            "handshake" => &hs_user,
            _ => &net,
        };
        let (uid, gid) = (want.uid.as_raw(), want.gid.as_raw());
        let st = status(pid);
        f.eq(&format!("{role} Uid"), status_ids(&st, "Uid"), vec![uid; 4]);
        f.eq(&format!("{role} Gid"), status_ids(&st, "Gid"), vec![gid; 4]);
        f.eq(
            &format!("{role} Groups"),
            st.get("Groups").map(String::as_str),
            Some(""),
        );
        for cap in ["CapEff", "CapPrm", "CapInh", "CapAmb", "CapBnd"] {
            f.eq(&format!("{role} {cap}"), status_caps(&st, cap), Some(0));
        }
        f.eq(
            &format!("{role} NoNewPrivs"),
            st.get("NoNewPrivs").map(String::as_str),
            Some("1"),
        );
        let root = std::fs::read_link(format!("/proc/{pid}/root"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|e| format!("<{e}>"));
        f.eq(&format!("{role} root directory"), root.as_str(), EMPTY_ROOT);
        // A non-dumpable process's /proc files belong to root, not to its
        // own (here non-root) uid.
        // (Only files: /proc/PID itself keeps the euid either way.)
        for file in ["environ", "mem"] {
            let owner = std::fs::metadata(format!("/proc/{pid}/{file}")).map(|m| m.uid());
            f.check(matches!(owner, Ok(0)), || {
                format!(
                    "{role}: /proc/{pid}/{file} owned by {owner:?}, not root: the role is dumpable"
                )
            });
        }
    }
    let uids: HashSet<Option<u32>> = roles.values().map(|&p| uid_of(p)).collect();
    f.eq("distinct role uids", uids.len(), 3);

    // Descriptors: each role holds its channels, only the transport the
    // tun device and the UDP sockets (on the configured port).
    let has_v6 = Sockets::of(w.pid()).has_v6;
    let inherited = own_inherited_fds();
    let port = dump.interface.listen_port;
    for (role, &pid) in &roles {
        let fds = classify(pid);
        let count = |pred: &dyn Fn(&FdKind) -> bool| fds.values().filter(|k| pred(k)).count();
        let unix = count(&|k| matches!(k, FdKind::Unix(_)));
        let distinct: HashSet<&FdKind> = fds
            .values()
            .filter(|k| matches!(k, FdKind::Unix(_)))
            .collect();
        let tun = count(&|k| *k == FdKind::Tun);
        let udp4: Vec<FdKind> = fds
            .values()
            .filter(|k| matches!(k, FdKind::Udp4(_)))
            .cloned()
            .collect();
        let udp6: Vec<FdKind> = fds
            .values()
            .filter(|k| matches!(k, FdKind::Udp6(_)))
            .cloned()
            .collect();
        let other = unexpected_fds(pid, &inherited);
        let (want_unix, want_tun, want_udp4, want_udp6) = match role.as_str() {
            "crypto" => (2, 0, vec![], vec![]),
            "handshake" => (3, 0, vec![], vec![]),
            _ => (
                2,
                1,
                vec![FdKind::Udp4(port)],
                if has_v6 {
                    vec![FdKind::Udp6(port)]
                } else {
                    vec![]
                },
            ),
        };
        let all = || describe_fds(role, pid);
        f.check(unix == want_unix && distinct.len() == want_unix, || {
            format!(
                "{role}: {unix} channel descriptor(s) on {} socket(s), want {want_unix}; {}",
                distinct.len(),
                all()
            )
        });
        f.check(tun == want_tun, || {
            format!(
                "{role}: {tun} tun descriptor(s), want {want_tun}; {}",
                all()
            )
        });
        f.check(udp4 == want_udp4 && udp6 == want_udp6, || {
            format!(
                "{role}: UDP sockets {udp4:?} {udp6:?}, want {want_udp4:?} {want_udp6:?}; {}",
                all()
            )
        });
        f.check(other.is_empty(), || {
            format!(
                "{role}: holds descriptors it was not given: {other:?}; {}",
                all()
            )
        });
        f.check(fds.keys().take(3).eq([0, 1, 2].iter()), || {
            format!("{role}: stdio missing; {}", all())
        });
    }
    f.finish(&w.child().report());
}

/// A descriptor left open by whoever starts wgd (here one on a file
/// holding the private key) must not reach the unprivileged roles: each
/// gets only its channels (and the transport its device and sockets).
#[test]
fn roles_get_no_inherited_descriptors() {
    let ns = Netns::new().expect("namespace");
    let (key, _) = keypair();
    let conf = InterfaceConfig {
        private_key: Some(key),
        ..one_peer_config(&ns)
    };
    let file = conf_file(&conf.to_conf());
    let path = path_str(&file);
    let ifname = fresh_ifname().expect("interface name");
    let bin = bin();
    // sh opens fd 7 without close-on-exec, then execs wgd (same pid).
    let child = spawn_wgd(
        &ns,
        "sh",
        &[
            "-c",
            r#"exec 7<"$1"; shift; exec "$@""#,
            "sh",
            &path,
            &bin,
            "-f",
            "-c",
            &path,
            &ifname,
        ],
        &[],
        &ifname,
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/fd/7", child.pid())).ok(),
        Some(file.path().to_path_buf()),
        "wgd was started holding fd 7 on {path}\n{}",
        child.report()
    );
    let inherited = own_inherited_fds();
    let roles = role_pids(child.pid());
    assert_eq!(roles.len(), 3, "{}", child.report());
    let leaks: Vec<String> = roles
        .iter()
        .filter(|(_, &pid)| !unexpected_fds(pid, &inherited).is_empty())
        .map(|(role, &pid)| describe_fds(role, pid))
        .collect();
    assert!(
        leaks.is_empty(),
        "roles hold descriptors wgd's invoker left open (fd 7 is {path}, \
         which holds the private key):\n{}\n{}",
        leaks.join("\n"),
        child.report()
    );
}

// -------------------------------------------------------- fail closed ----

fn fail_closed(victim: &str) {
    let ns = Netns::new().expect("namespace");
    let w = Wgd::start_key_file(&ns, one_peer_config(&ns), &[]).expect("start wgd");
    w.dump().expect("start-up complete");
    // Without its key file the configuration cannot be rebuilt for new
    // roles: the parent must not restart them.
    w.remove_key_file().expect("remove the key file");
    let roles = role_pids(w.pid());
    assert_eq!(
        roles.keys().map(String::as_str).collect::<Vec<_>>(),
        ROLE_NAMES.to_vec(),
        "{}",
        w.child().report()
    );
    let procs: BTreeMap<&str, Proc> = roles
        .iter()
        .map(|(r, &pid)| (r.as_str(), Proc::of(pid).expect("role stat")))
        .collect();
    let target = procs[victim];
    assert!(target.alive(), "{victim} is running before the kill");

    kill(Pid::from_raw(target.pid as i32), Signal::SIGKILL).expect("SIGKILL the role");
    let status = w
        .child()
        .wait_exit(FAIL_CLOSED)
        .unwrap_or_else(|e| panic!("parent after {victim} died: {e}\n{}", w.child().report()));
    assert!(
        status.code().is_some_and(|c| c != 0),
        "parent must exit by itself with a non-zero status after {victim} died, got {status}\n{}",
        w.child().report()
    );
    wait_until(FAIL_CLOSED, "interface removed", || !w.interface_exists()).unwrap_or_else(|e| {
        panic!(
            "{e}: {} still exists after {victim} died\n{}",
            w.ifname(),
            w.child().report()
        )
    });
    assert!(
        !w.socket_path().exists(),
        "control socket {} left behind after {victim} died\n{}",
        w.socket_path().display(),
        w.child().report()
    );
    wait_until(FAIL_CLOSED, "every role gone", || {
        procs.values().all(|p| !p.alive())
    })
    .unwrap_or_else(|e| {
        let left: Vec<_> = procs.iter().filter(|(_, p)| p.alive()).collect();
        panic!(
            "{e}: still running after {victim} died: {left:?}\n{}",
            w.child().report()
        )
    });
    let log = w.child().stderr();
    assert!(
        log.contains("failing closed") && log.contains("cannot restore the configuration"),
        "the parent logs that it fails closed, and why\n{}",
        w.child().report()
    );
    assert!(
        !log.contains("roles restarted"),
        "no role was restarted\n{}",
        w.child().report()
    );
}

#[test]
fn fail_closed_crypto() {
    fail_closed("crypto");
}

#[test]
fn fail_closed_handshake() {
    fail_closed("handshake");
}

#[test]
fn fail_closed_transport() {
    fail_closed("transport");
}

// --------------------------------------------------------- bad config ----

/// Runs `wgd -f -c FILE IFNAME` on `conf` and checks it fails on `line`
/// with a message containing `needle`, creating nothing.
fn rejects(ns: &Netns, conf: &str, line: usize, needle: &str) {
    let file = conf_file(conf);
    let path = path_str(&file);
    let ifname = fresh_ifname().expect("interface name");
    let out = run_wgd(ns, &["-f", "-c", &path, &ifname]);
    let stderr = text(&out.stderr);
    let context = || {
        format!(
            "config:\n{conf}\nstatus: {}\nstderr:\n{stderr}\nstdout:\n{}",
            out.status,
            text(&out.stdout)
        )
    };
    assert_eq!(out.status.code(), Some(1), "{}", context());
    let prefix = format!("{path}:{line}: ");
    assert!(
        stderr.starts_with(&prefix),
        "stderr starts with {prefix:?}\n{}",
        context()
    );
    assert!(
        stderr.contains(needle),
        "stderr mentions {needle:?}\n{}",
        context()
    );
    assert!(!link_exists(ns, &ifname), "no interface\n{}", context());
    assert!(
        !socket_path(&ifname).exists(),
        "no control socket\n{}",
        context()
    );
}

#[test]
fn bad_config() {
    let ns = Netns::new().expect("namespace");
    let (key, _) = keypair();
    let (_, peer) = keypair();
    // A public key that is not base64, on line 4.
    rejects(
        &ns,
        &format!("[Interface]\nPrivateKey = {key}\n[Peer]\nPublicKey = notbase64\nAllowedIPs = 10.0.0.0/24\n"),
        4,
        "PublicKey",
    );
    // An unknown key, on line 5 (after a comment and a blank line).
    rejects(
        &ns,
        &format!("# wgd test\n[Interface]\nPrivateKey = {key}\n\nFrobnicate = yes\n"),
        5,
        "Frobnicate",
    );
    // A [Peer] without PublicKey is reported at its header (line 4),
    // whether another section follows…
    rejects(
        &ns,
        &format!(
            "[Interface]\nPrivateKey = {key}\n\n[Peer]\nAllowedIPs = 10.0.0.0/24\nEndpoint = 10.230.0.2:51820\n\n[Peer]\nPublicKey = {peer}\n"
        ),
        4,
        "PublicKey",
    );
    // …or the file ends.
    rejects(
        &ns,
        &format!("[Interface]\nPrivateKey = {key}\n\n[Peer]\nAllowedIPs = 10.0.0.0/24\n"),
        4,
        "PublicKey",
    );
}

// ---------------------------------------------------------- lifecycle ----

/// Waits for an orderly stop: the parent exits, interface, socket and
/// roles are gone. Returns the parent's exit status.
fn assert_stopped(w: &Wgd<'_>, roles: &[Proc], why: &str) -> std::process::ExitStatus {
    let status = w
        .child()
        .wait_exit(STOP_TIMEOUT)
        .unwrap_or_else(|e| panic!("wgd after {why}: {e}\n{}", w.child().report()));
    wait_until(STOP_TIMEOUT, "interface removed", || !w.interface_exists())
        .unwrap_or_else(|e| panic!("{e}: interface left after {why}\n{}", w.child().report()));
    assert!(
        !w.socket_path().exists(),
        "control socket left after {why}\n{}",
        w.child().report()
    );
    wait_until(STOP_TIMEOUT, "roles gone", || {
        roles.iter().all(|p| !p.alive())
    })
    .unwrap_or_else(|e| panic!("{e} after {why}\n{}", w.child().report()));
    status
}

fn started(ns: &Netns) -> (Wgd<'_>, Vec<Proc>) {
    let w = Wgd::start(ns, one_peer_config(ns), &[]).expect("start wgd");
    w.dump().expect("start-up complete");
    let roles: Vec<Proc> = role_pids(w.pid())
        .values()
        .filter_map(|&p| Proc::of(p))
        .collect();
    assert_eq!(roles.len(), 3, "{}", w.child().report());
    (w, roles)
}

#[test]
fn lifecycle_interface_deleted() {
    let ns = Netns::new().expect("namespace");
    let (w, roles) = started(&ns);
    ns.ip(["link", "del", w.ifname()]).expect("ip link del");
    let status = assert_stopped(&w, &roles, "ip link del");
    eprintln!("wgd exited with {status} after its interface was deleted");
}

#[test]
fn lifecycle_socket_removed() {
    let ns = Netns::new().expect("namespace");
    let (w, roles) = started(&ns);
    std::fs::remove_file(w.socket_path()).expect("rm control socket");
    let status = assert_stopped(&w, &roles, "rm of the control socket");
    eprintln!("wgd exited with {status} after its socket was removed");
}

#[test]
fn lifecycle_sigterm() {
    let ns = Netns::new().expect("namespace");
    let (w, roles) = started(&ns);
    kill(Pid::from_raw(w.pid() as i32), Signal::SIGTERM).expect("SIGTERM wgd");
    let status = assert_stopped(&w, &roles, "SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", w.child().report());
}

/// A daemonized wgd this test started: stopped by pid on drop if still
/// running (it is no child of ours, so it cannot be reaped here).
struct Daemon(Proc);

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.0.pid as i32);
        if self.0.alive() {
            let _ = kill(pid, Signal::SIGTERM);
            if wait_until(STOP_TIMEOUT, "daemon to stop", || !self.0.alive()).is_err()
                && self.0.alive()
            {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn lifecycle_daemonize() {
    let ns = Netns::new().expect("namespace");
    let (key, _) = keypair();
    let conf = InterfaceConfig {
        private_key: Some(key),
        ..one_peer_config(&ns)
    };
    let file = conf_file(&conf.to_conf());
    let path = path_str(&file);
    let ifname = fresh_ifname().expect("interface name");
    let bin = bin();
    let argv = [bin.as_str(), "-c", path.as_str(), ifname.as_str()];

    let t0 = Instant::now();
    let mut cmd = ns.command(&bin, &argv[1..]);
    cmd.env_remove("WG_PROCESS_FOREGROUND")
        .env("LOG_LEVEL", "debug");
    let out = run_command(cmd, RUN_TIMEOUT);
    let took = t0.elapsed();
    // Find the daemon before any assertion, so that a failure (even a
    // command that never returned) still stops it.
    let daemon = pids()
        .into_iter()
        .filter(|&p| cmdline(p) == argv)
        .filter_map(Proc::of)
        .find(Proc::alive)
        .map(Daemon);
    let out = out.unwrap_or_else(|e| panic!("`wgd {}` did not return: {e}", argv[1..].join(" ")));
    let context = format!(
        "`wgd {}` returned {} after {took:?}\nstderr:\n{}",
        argv[1..].join(" "),
        out.status,
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{context}");
    let daemon = daemon.unwrap_or_else(|| panic!("no daemon process left running\n{context}"));
    let pid = daemon.0.pid;
    let st = stat(pid).expect("daemon stat");
    assert_eq!(
        st.session, pid,
        "the daemon leads its own session\n{context}"
    );
    assert!(
        socket_path(&ifname).exists(),
        "control socket exists when the command returns\n{context}"
    );
    assert!(link_exists(&ns, &ifname), "interface exists\n{context}");
    wgd_tests::wg::dump(&ns, &ifname).expect("the daemon answers wg show");
    let roles: Vec<Proc> = role_pids(pid)
        .values()
        .filter_map(|&p| Proc::of(p))
        .collect();
    assert_eq!(roles.len(), 3, "the daemon runs the three roles\n{context}");

    kill(Pid::from_raw(pid as i32), Signal::SIGTERM).expect("SIGTERM the daemon");
    wait_until(STOP_TIMEOUT, "interface removed", || {
        !link_exists(&ns, &ifname)
    })
    .unwrap_or_else(|e| panic!("{e}\n{context}"));
    wait_until(STOP_TIMEOUT, "daemon and roles gone", || {
        !daemon.0.alive() && roles.iter().all(|p| !p.alive())
    })
    .unwrap_or_else(|e| panic!("{e}\n{context}"));
    assert!(
        !socket_path(&ifname).exists(),
        "control socket removed\n{context}"
    );
}

#[test]
fn lifecycle_foreground_env() {
    let ns = Netns::new().expect("namespace");
    let (key, _) = keypair();
    let conf = InterfaceConfig {
        private_key: Some(key),
        ..one_peer_config(&ns)
    };
    let file = conf_file(&conf.to_conf());
    let path = path_str(&file);
    let ifname = fresh_ifname().expect("interface name");
    let child = spawn_wgd(
        &ns,
        &bin(),
        &["-c", &path, &ifname],
        &[("WG_PROCESS_FOREGROUND", "1"), ("LOG_LEVEL", "debug")],
        &ifname,
    );
    // The process we started is the daemon itself.
    assert!(
        child.is_running(),
        "stays in the foreground\n{}",
        child.report()
    );
    assert_eq!(
        role_pids(child.pid()).len(),
        3,
        "the roles are its children\n{}",
        child.report()
    );
    let status = child.stop(STOP_TIMEOUT).expect("reaped");
    assert_eq!(status.code(), Some(0), "{}", child.report());
    wait_until(STOP_TIMEOUT, "interface removed", || {
        !link_exists(&ns, &ifname)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", child.report()));
    assert!(!socket_path(&ifname).exists(), "{}", child.report());
}

#[test]
fn lifecycle_missing_users() {
    let ns = Netns::new().expect("namespace");
    for name in [NO_SUCH_USER, NO_SUCH_CRYPTO_USER] {
        assert!(
            User::from_name(name).expect("passwd lookup").is_none(),
            "user {name} must not exist for this test"
        );
    }

    // Refused, with the command that creates the user.
    let ifname = fresh_ifname().expect("interface name");
    let out = run_wgd(&ns, &["--user", NO_SUCH_USER, "-f", &ifname]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains("useradd") && stderr.contains(NO_SUCH_USER),
        "prints a useradd command for {NO_SUCH_USER}:\n{stderr}"
    );
    assert!(!link_exists(&ns, &ifname), "no interface:\n{stderr}");
    assert!(!socket_path(&ifname).exists(), "no socket:\n{stderr}");

    // --allow-nobody: transport runs as nobody, the others as their users.
    let nobody = user("nobody").uid.as_raw();
    let crypto_uid = user("_wgd-crypto").uid.as_raw();
    let hs_uid = user("_wgd-hs").uid.as_raw();
    let ifname = fresh_ifname().expect("interface name");
    let child = spawn_wgd(
        &ns,
        &bin(),
        &["--user", NO_SUCH_USER, "--allow-nobody", "-f", &ifname],
        &[],
        &ifname,
    );
    let roles = role_pids(child.pid());
    let uids: BTreeMap<&str, Option<u32>> = roles
        .iter()
        .map(|(r, &p)| (r.as_str(), uid_of(p)))
        .collect();
    assert_eq!(
        uids,
        BTreeMap::from([
            ("crypto", Some(crypto_uid)),
            ("handshake", Some(hs_uid)),
            ("transport", Some(nobody)),
        ]),
        "{}",
        child.report()
    );
    let status = child.stop(STOP_TIMEOUT).expect("reaped");
    assert_eq!(status.code(), Some(0), "{}", child.report());
    assert!(!link_exists(&ns, &ifname), "{}", child.report());

    // Both users missing: crypto gets a spare uid with no passwd entry.
    let ifname = fresh_ifname().expect("interface name");
    let child = spawn_wgd(
        &ns,
        &bin(),
        &[
            "--user",
            NO_SUCH_USER,
            "--crypto-user",
            NO_SUCH_CRYPTO_USER,
            "--allow-nobody",
            "-f",
            &ifname,
        ],
        &[],
        &ifname,
    );
    let roles = role_pids(child.pid());
    let crypto = roles
        .get("crypto")
        .and_then(|&p| uid_of(p))
        .unwrap_or_else(|| panic!("crypto uid\n{}", child.report()));
    assert!(
        crypto != nobody
            && (65000..=65533).contains(&crypto)
            && User::from_uid(Uid::from_raw(crypto))
                .expect("passwd lookup")
                .is_none(),
        "crypto runs as an unused uid, got {crypto}\n{}",
        child.report()
    );
    assert_eq!(
        roles.get("transport").and_then(|&p| uid_of(p)),
        Some(nobody),
        "{}",
        child.report()
    );
    let status = child.stop(STOP_TIMEOUT).expect("reaped");
    assert_eq!(status.code(), Some(0), "{}", child.report());
}
