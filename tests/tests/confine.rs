//! Issue 11, the process half: the roles are confined by the kernel and a
//! role's death never leaks cleartext.
//!
//! - `forbidden_syscall_kills_the_role_and_wgd_recovers`: through the
//!   test-only hook (wgd built with `test-hooks`, started with
//!   `WGD_TEST_HOOKS=1`), SIGUSR2 makes crypto call socket(), transport
//!   fork() and handshake openat(); the kernel kills each (SIGSYS), the
//!   parent logs the role and "seccomp", the interface keeps its routes,
//!   and the tunnel carries traffic again within 2 s of the restart;
//! - `inline_secrets_survive_the_crypto_role`: the same for crypto with
//!   the private key and a PSK given inline (configuration file, then
//!   `wg set` with files deleted afterwards): the restarted crypto role
//!   gets them back wrapped, and the tunnel works again within 2 s;
//! - `kill9_under_flood_leaks_nothing`: with a default route on the
//!   underlay (so a lost interface would send tunnel traffic out in
//!   clear), `ping -f` through the tunnel while each role in turn is
//!   killed with SIGKILL; tcpdump on the veth sees only WireGuard messages
//!   and no packet to or from an inner address, and the tunnel works
//!   again within 2 s of each restart;
//! - `a_stopped_role_is_noticed_and_replaced`: each role in turn is
//!   stopped (SIGSTOP, which no role can catch or refuse); the parent
//!   notices the stop (not only a death), logs the role and the signal,
//!   ends it and restarts the roles; the interface keeps its route and the
//!   tunnel carries traffic again within 2 s;
//! - `past_the_restart_budget_wgd_fails_closed`: five restarts are made,
//!   the sixth death within 60 s ends wgd non-zero, interface removed;
//! - `roles_have_no_terminal`: wgd started on a pseudo-terminal (its
//!   controlling terminal); every role leads its own session with no
//!   terminal (`/proc/PID/stat`: session = pid, tty_nr 0) and holds no
//!   terminal descriptor, so TIOCSTI has nothing to act on; and each
//!   role that tries `ioctl(TIOCSTI)` anyway (test hook) is killed by its
//!   filter before the call acts, the parent logging SIGSYS and
//!   restarting the roles;
//! - `transport_workers_are_confined_and_carry_traffic`: with
//!   `WGD_TRANSPORT_WORKERS=1` (the default is none on two CPUs), every
//!   thread of the transport has the filter (Seccomp 2), a TCP transfer
//!   each way through the tunnel arrives intact, and wgd stops cleanly
//!   with no role killed by its filter;
//! - `roles_are_confined`: for each role, `/proc/PID/status` (three
//!   distinct uids, Seccomp 2, NoNewPrivs 1, CapEff/CapPrm/CapBnd 0),
//!   `/proc/PID/limits` (processes 0, core 0, file size 0, open files as
//!   wgd sets them), `/proc/PID/coredump_filter` 0 (no mapping would be in
//!   a core dump) and no descriptor on a regular file.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use common::fault::{
    alive, assert_recovered, break_filter, count, stat, tunnel, tunnel_with, wait_restart, Keys,
    RESTART, ROLES,
};
use common::{ip, net, INNER_A4, INNER_B4, OUTER_A4, OUTER_B4};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wgd_tests::capture::Capture;
use wgd_tests::proc::{cmdline, pids, sched_policy};
use wgd_tests::traffic::ping_within;
use wgd_tests::wgd::roles_of;
use wgd_tests::{keypair, wait_until, InterfaceConfig, Netns, Wgd};

#[test]
fn forbidden_syscall_kills_the_role_and_wgd_recovers() {
    let net = net();
    let t = tunnel(&net, &[("WGD_TEST_HOOKS", "1")]);
    let w = &t.wgd;
    for (role, call) in [
        ("crypto", "socket"),
        ("transport", "fork"),
        ("handshake", "openat"),
    ] {
        let why = format!("{call}() in {role}");
        let restarted = break_filter(w, role, &why);
        let log = w.child().stderr();
        let cause = format!("{role} role was killed by SIGSYS (seccomp");
        assert!(
            log.contains(&cause),
            "the parent logs {cause:?} after {why}\n{}",
            w.child().report()
        );
        assert_recovered(&net, w, restarted, &why);
    }
    assert!(w.child().is_running(), "{}", w.child().report());
}

/// Secrets given inline survive the death of the one process that held
/// them: the crypto role wrapped each under a key in the kernel keyring
/// that only crypto roles read, the parent kept the blobs, and the new
/// crypto role opens them. Shown for a configuration file's `PrivateKey`
/// and `PresharedKey`, then for a new PSK and a new private key set
/// through the control socket (`wg set`, as `wg-quick` does).
#[test]
fn inline_secrets_survive_the_crypto_role() {
    let net = net();
    let t = tunnel_with(&net, &[("WGD_TEST_HOOKS", "1")], Keys::InlineWithPsk);
    let w = &t.wgd;
    let why = "socket() in crypto, keys inline in the configuration file";
    let restarted = break_filter(w, "crypto", why);
    assert_recovered(&net, w, restarted, why);

    // New secrets through the control socket: a PSK on both sides, then a
    // new private key for wgd, which wireguard-go learns as a new peer.
    let dir = tempfile::tempdir().expect("tempdir");
    let psk_file = dir.path().join("psk");
    std::fs::write(&psk_file, wgd_tests::preshared_key() + "\n").expect("psk file");
    let psk_path = psk_file.to_str().expect("utf-8 path");
    let (new_key, new_public) = keypair();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, new_key + "\n").expect("key file");
    let go_public = t.go_public.clone();
    t.go.set(&["peer", w.public_key(), "remove"])
        .expect("wireguard-go forgets the old key");
    t.go.set(&[
        "peer",
        &new_public,
        "preshared-key",
        psk_path,
        "allowed-ips",
        &format!("{INNER_A4}/32"),
    ])
    .expect("wireguard-go learns the new key and PSK");
    w.set(&[
        "private-key",
        key_file.to_str().expect("utf-8 path"),
        "peer",
        &go_public,
        "preshared-key",
        psk_path,
    ])
    .expect("wg set private-key and preshared-key");
    // The files go: nothing but the wrapped blobs can restore them now.
    drop(dir);
    assert!(
        ping_within(&net.ns_a, ip(INNER_B4), Duration::from_secs(5)).is_some(),
        "no traffic with the new keys\n{}",
        w.child().report()
    );
    let why = "socket() in crypto, keys set by wg set";
    let restarted = break_filter(w, "crypto", why);
    assert_recovered(&net, w, restarted, why);
    // wireguard-go knows wgd only by its new public key, with the new PSK:
    // the traffic above went through a handshake with both, done by the
    // restarted crypto role.
    assert!(w.child().is_running(), "{}", w.child().report());
}

/// The restart budget: five restarts within 60 s are made; the sixth
/// death ends the daemon, non-zero, with the interface removed and the
/// reason in the log (wgd(8) says what the administrator does then).
#[test]
fn past_the_restart_budget_wgd_fails_closed() {
    let ns = Netns::new().expect("namespace");
    let w = Wgd::start(&ns, InterfaceConfig::default(), &[]).expect("start wgd");
    w.dump().expect("start-up complete");
    for n in 0..=5 {
        let pid = w
            .role_pid("crypto")
            .unwrap_or_else(|| panic!("no crypto role before death {n}\n{}", w.child().report()));
        let before = count(&w.child().stderr(), "roles restarted");
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL crypto");
        if n < 5 {
            wait_restart(&w, before, &format!("kill -9 of crypto, death {n}"));
        }
    }
    let status = w.child().wait_exit(RESTART).unwrap_or_else(|e| {
        panic!(
            "wgd still running after its sixth death: {e}\n{}",
            w.child().report()
        )
    });
    assert!(!status.success(), "exit status {status:?}");
    let log = w.child().stderr();
    assert_eq!(count(&log, "roles restarted"), 5, "{}", w.child().report());
    assert!(
        log.contains("restart budget spent (5 restarts in 60s)"),
        "{}",
        w.child().report()
    );
    assert!(!w.interface_exists(), "the interface is removed");
}

#[test]
fn a_stopped_role_is_noticed_and_replaced() {
    let net = net();
    let t = tunnel(&net, &[]);
    let w = &t.wgd;
    for role in ROLES {
        let pid = w
            .role_pid(role)
            .unwrap_or_else(|| panic!("no {role} role\n{}", w.child().report()));
        let before = count(&w.child().stderr(), "roles restarted");
        let (_, _, _, start) = stat(pid).expect("role stat");
        let said = format!("{role} role was stopped by signal SIGSTOP");
        let stopped_before = count(&w.child().stderr(), &said);
        kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).expect("SIGSTOP the role");
        let why = format!("SIGSTOP of {role}");
        let restarted = wait_restart(w, before, &why);
        let log = w.child().stderr();
        assert!(
            count(&log, &said) > stopped_before,
            "the stop of {role} was not logged\n{}",
            w.child().report()
        );
        assert_recovered(&net, w, restarted, &why);
        // The stopped process is gone, not left behind stopped.
        wait_until(Duration::from_secs(2), "the stopped role ended", || {
            !alive(pid, start)
        })
        .unwrap_or_else(|e| panic!("{e}: {role} (pid {pid})\n{}", w.child().report()));
    }
}

#[test]
fn kill9_under_flood_leaks_nothing() {
    let net = net();
    // A default route on the underlay: should the interface go, tunnel
    // traffic would leave through the veth in clear (and wireguard-go's
    // side, which owns 10.211.0.2, would even answer it).
    net.ns_a
        .ip(["route", "add", "default", "via", OUTER_B4])
        .expect("default route");
    let t = tunnel(&net, &[]);
    let w = &t.wgd;
    let capture = Capture::start(&net.ns_a, &net.veth.a).expect("tcpdump on the underlay");
    for role in ROLES {
        let pid = w
            .role_pid(role)
            .unwrap_or_else(|| panic!("no {role} role\n{}", w.child().report()));
        let before = count(&w.child().stderr(), "roles restarted");
        // A bounded flood: at most 20,000 requests or 4 s.
        let flood = net
            .ns_a
            .spawn(
                "ping",
                ["-f", "-q", "-c", "20000", "-w", "4", "-s", "200", INNER_B4],
            )
            .expect("ping -f");
        // Let the flood run through the tunnel first.
        let rx0 = w
            .dump()
            .ok()
            .map_or(0, |d| d.peers.first().map_or(0, |p| p.rx_bytes));
        wait_until(Duration::from_secs(3), "flood traffic", || {
            w.dump()
                .ok()
                .and_then(|d| d.peers.first().map(|p| p.rx_bytes))
                .is_some_and(|rx| rx > rx0 + 20_000)
        })
        .unwrap_or_else(|e| panic!("{e} before killing {role}\n{}", w.child().report()));
        kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL the role");
        let why = format!("kill -9 of {role} under ping -f");
        let restarted = wait_restart(w, before, &why);
        assert_recovered(&net, w, restarted, &why);
        flood
            .wait_exit(Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("ping -f did not end: {e}"));
    }
    let packets = capture.finish().expect("read the capture");
    let inner = |a: &IpAddr| matches!(a, IpAddr::V4(v4) if v4.octets()[..3] == [10, 211, 0]);
    let wg = packets.iter().filter(|p| p.is_wireguard()).count();
    let leaks: Vec<String> = packets
        .iter()
        .filter(|p| inner(&p.src) || inner(&p.dst) || (p.proto == 17 && !p.is_wireguard()))
        .take(10)
        .map(|p| format!("{p:?}"))
        .collect();
    eprintln!(
        "underlay capture: {} packets, {wg} WireGuard messages",
        packets.len()
    );
    assert!(
        wg > 100,
        "the capture saw only {wg} WireGuard messages: is it working?"
    );
    assert!(
        leaks.is_empty(),
        "cleartext on the underlay ({OUTER_A4} side):\n{}\n{}",
        leaks.join("\n"),
        w.child().report()
    );
}

/// Finds the wgd parent serving `ifname` (not a role: no `--role`).
fn wgd_parent_of(ifname: &str) -> Option<u32> {
    pids().into_iter().find(|&pid| {
        let args = cmdline(pid);
        args.first().is_some_and(|a| a.ends_with("/wgd"))
            && args.iter().any(|a| a == ifname)
            && !args.iter().any(|a| a == "--role")
    })
}

fn role_children(parent: u32) -> BTreeMap<String, u32> {
    roles_of(parent)
        .into_iter()
        .map(|r| (r.role, r.pid))
        .collect()
}

#[test]
fn roles_have_no_terminal() {
    let ns = Netns::new().expect("namespace");
    let (key, _) = keypair();
    let conf = InterfaceConfig {
        private_key: Some(key),
        ..Default::default()
    };
    let mut file = tempfile::NamedTempFile::new().expect("conf file");
    std::io::Write::write_all(&mut file, conf.to_conf().as_bytes()).expect("write conf");
    let ifname = wgd_tests::wggo::fresh_ifname().expect("interface name");
    let bin = wgd_tests::wgd::binary().expect("wgd binary");
    // script(1) runs wgd on a new pseudo-terminal, its controlling
    // terminal, as an administrator's shell would.
    // WGD_TEST_HOOKS=tiocsti: SIGUSR2 makes a role try ioctl(TIOCSTI).
    let cmdline = format!(
        "exec env WGD_TEST_HOOKS=tiocsti {} -f -c {} {ifname}",
        bin.display(),
        file.path().display()
    );
    let script = ns
        .spawn(
            "script",
            ["-q", "-f", "-e", "-c", cmdline.as_str(), "/dev/null"],
        )
        .expect("script");
    // Started: three roles, and the configuration applied (the parent
    // logs "started" after it; a role killed before that ends start-up).
    let parent = wait_until(Duration::from_secs(10), "wgd under script", || {
        wgd_parent_of(&ifname).is_some_and(|p| role_children(p).len() == 3)
            && script.stdout().contains("started interface=")
    })
    .ok()
    .and_then(|()| wgd_parent_of(&ifname))
    .unwrap_or_else(|| panic!("wgd did not start on the terminal\n{}", script.report()));
    let (_, _, parent_tty, _) = stat(parent).expect("parent stat");
    assert_ne!(
        parent_tty, 0,
        "the test needs wgd itself to have a controlling terminal"
    );
    let mut bad = Vec::new();
    for (role, pid) in role_children(parent) {
        let (_, session, tty, _) = stat(pid).expect("role stat");
        if session != pid || tty != 0 {
            bad.push(format!(
                "{role}: session {session} (pid {pid}), tty_nr {tty}"
            ));
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fd dir")
            .flatten()
        {
            let target = std::fs::read_link(fd.path()).unwrap_or_default();
            let t = target.to_string_lossy();
            if t.starts_with("/dev/pts") || t.starts_with("/dev/tty") || t == "/dev/console" {
                bad.push(format!(
                    "{role}: fd {:?} is the terminal {t}",
                    fd.file_name()
                ));
            }
        }
    }
    // Each role in turn tries TIOCSTI on its standard descriptors, as a
    // compromised role would on a terminal it had inherited: the kernel
    // kills it (its filter allows no such ioctl) before the call does
    // anything, and the parent restarts the roles.
    let seccomp_on = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .is_ok_and(|st| st.lines().any(|l| l == "Seccomp:\t2"))
    };
    for role in ROLES {
        // The role of the current generation, confined (its hook is armed
        // before its filter goes on).
        let mut found = None;
        let _ = wait_until(RESTART, "a confined role", || {
            found = role_children(parent)
                .get(role)
                .copied()
                .filter(|&pid| seccomp_on(pid));
            found.is_some()
        });
        let Some(pid) = found else {
            bad.push(format!("no confined {role} role before its TIOCSTI"));
            break;
        };
        let (_, _, _, start) = stat(pid).expect("role stat");
        let cause = format!("{role} role was killed by SIGSYS");
        let before = count(&script.stdout(), &cause);
        let restarts = count(&script.stdout(), "roles restarted");
        if kill(Pid::from_raw(pid as i32), Signal::SIGUSR2).is_err() {
            bad.push(format!("{role}: could not signal it"));
            continue;
        }
        if wait_until(RESTART, "the role to die", || !alive(pid, start)).is_err() {
            bad.push(format!("{role}: TIOCSTI did not kill it"));
            continue;
        }
        let logged = wait_until(RESTART, "the parent's log and the restart", || {
            let out = script.stdout();
            count(&out, &cause) > before && count(&out, "roles restarted") > restarts
        });
        if logged.is_err() {
            bad.push(format!("{role}: no {cause:?} in the log, or no restart"));
        }
    }
    // Stop it by the socket's removal: the interface goes with it.
    let _ = std::fs::remove_file(wgd_tests::socket_path(&ifname));
    let _ = script.wait_exit(Duration::from_secs(5));
    assert!(bad.is_empty(), "{}\n{}", bad.join("\n"), script.report());
}

/// `/proc/PID/limits`: limit name → (soft, hard).
fn limits(pid: u32) -> BTreeMap<String, (String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            // "Max open files            8                    8                    files"
            let name = l.get(..26)?.trim().to_string();
            let mut rest = l.get(26..)?.split_whitespace();
            Some((name, (rest.next()?.to_string(), rest.next()?.to_string())))
        })
        .collect()
}

#[test]
fn transport_workers_are_confined_and_carry_traffic() {
    let net = net();
    let t = tunnel(&net, &[("WGD_TRANSPORT_WORKERS", "1")]);
    let w = &t.wgd;
    let pid = w
        .role_pid("transport")
        .unwrap_or_else(|| panic!("no transport role\n{}", w.child().report()));
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks of the transport")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    assert_eq!(tasks.len(), 2, "transport threads: {tasks:?}");
    for tid in &tasks {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        assert!(
            status.lines().any(|l| l == "Seccomp:\t2"),
            "thread {tid} of the transport has no filter:\n{status}"
        );
    }
    for (from, to, addr) in [
        (&net.ns_a, &net.ns_b, ip(INNER_B4)),
        (&net.ns_b, &net.ns_a, ip(INNER_A4)),
    ] {
        let tr = wgd_tests::traffic::tcp_transfer(from, to, addr, 64, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("transfer: {e}\n{}", w.child().report()));
        assert!(tr.is_intact(), "{tr}\n{}", w.child().report());
        eprintln!("with one transport worker: {tr}");
    }
    let status = w.child().stop(Duration::from_secs(5));
    let log = w.child().stderr();
    assert!(
        status.is_some_and(|s| s.success())
            && !log.contains("SIGSYS")
            && !log.contains("restarted"),
        "wgd did not stop cleanly: {status:?}\n{}",
        w.child().report()
    );
}

/// (tid, policy, rt_priority) of every thread of `pid`.
fn thread_policies(pid: u32) -> Vec<(u32, u32, u32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap_or_else(|e| {
        panic!("threads of {pid}: {e}");
    });
    tasks
        .filter_map(|e| e.ok()?.file_name().to_string_lossy().parse::<u32>().ok())
        .filter_map(|tid| sched_policy(pid, tid).map(|(p, r)| (tid, p, r)))
        .collect()
}

/// (policy, rt_priority) of the transport's main thread.
fn transport_policy(w: &Wgd<'_>) -> Option<(u32, u32)> {
    let pid = w.role_pid("transport")?;
    sched_policy(pid, pid)
}

/// Every thread of the parent and of the handshake and crypto roles runs
/// at normal priority (SCHED_OTHER, 0).
fn assert_others_normal(w: &Wgd<'_>, when: &str) {
    let mut procs: Vec<(String, u32)> = vec![("parent".into(), w.pid())];
    procs.extend(
        w.roles()
            .into_iter()
            .filter(|r| r.role != "transport")
            .map(|r| (r.role, r.pid)),
    );
    assert_eq!(procs.len(), 3, "{when}: {procs:?}\n{}", w.child().report());
    for (role, pid) in procs {
        for (tid, policy, prio) in thread_policies(pid) {
            assert_eq!(
                (policy, prio),
                (0, 0),
                "{when}: thread {tid} of {role}\n{}",
                w.child().report()
            );
        }
    }
}

/// Runs a TCP stream A -> B through `t` in a thread while `check` is
/// called every 50 ms until it returns true (or the stream ends); returns
/// whether it did.
fn while_streaming(net: &common::Net, w: &Wgd<'_>, mut check: impl FnMut() -> bool) -> bool {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let r = wgd_tests::traffic::tcp_transfer(
                &net.ns_a,
                &net.ns_b,
                ip(INNER_B4),
                512,
                Duration::from_secs(60),
            );
            done.store(true, std::sync::atomic::Ordering::SeqCst);
            r
        });
        let mut seen = false;
        // Bounded by the stream's own 60 s bound and by 600 looks.
        for _ in 0..600 {
            if done.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
            if check() {
                seen = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let tr = h
            .join()
            .expect("the stream's thread")
            .unwrap_or_else(|e| panic!("transfer: {e}\n{}", w.child().report()));
        assert!(tr.is_intact(), "{tr}\n{}", w.child().report());
        seen
    })
}

/// The parent puts the transport's main thread under SCHED_RR at
/// priority 1 while it is busy and back to normal priority when it is
/// idle (`wgd/src/sched.rs`); the parent and the other roles stay at
/// normal priority; a restarted transport starts at normal priority and
/// is raised again; `WGD_TRANSPORT_REALTIME=0` keeps it at normal
/// priority under load. On one CPU it is expected to stay normal too.
#[test]
fn the_transport_runs_real_time_while_busy() {
    let enabled = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    {
        let net = net();
        let t = tunnel(&net, &[]);
        let w = &t.wgd;
        for round in ["at start", "after a restart"] {
            assert_eq!(
                transport_policy(w),
                Some((0, 0)),
                "{round}, idle\n{}",
                w.child().report()
            );
            let raised = while_streaming(&net, w, || transport_policy(w) == Some((2, 1)));
            assert_eq!(
                raised,
                enabled,
                "{round}: raised under load\n{}",
                w.child().report()
            );
            assert_others_normal(w, round);
            // Idle again: back to normal within a second or two.
            wait_until(
                Duration::from_secs(5),
                "the transport back at normal priority",
                || transport_policy(w) == Some((0, 0)),
            )
            .unwrap_or_else(|e| panic!("{e} ({round})\n{}", w.child().report()));
            if round == "at start" {
                let pid = w
                    .role_pid("transport")
                    .unwrap_or_else(|| panic!("no transport role\n{}", w.child().report()));
                let before = count(&w.child().stderr(), "roles restarted");
                kill(Pid::from_raw(pid as i32), Signal::SIGKILL).expect("SIGKILL the transport");
                let why = "kill -9 of the transport";
                let restarted = wait_restart(w, before, why);
                assert_recovered(&net, w, restarted, why);
            }
        }
    }
    let net = net();
    let t = tunnel(&net, &[("WGD_TRANSPORT_REALTIME", "0")]);
    let w = &t.wgd;
    let raised = while_streaming(&net, w, || transport_policy(w) != Some((0, 0)));
    assert!(
        !raised,
        "raised with WGD_TRANSPORT_REALTIME=0\n{}",
        w.child().report()
    );
}

#[test]
fn roles_are_confined() {
    let net = net();
    let t = tunnel(&net, &[]);
    let w = &t.wgd;
    let roles: BTreeMap<String, u32> = w.roles().into_iter().map(|r| (r.role, r.pid)).collect();
    assert_eq!(roles.len(), 3, "{}", w.child().report());
    let mut bad = Vec::new();
    let mut uids = HashSet::new();
    for (role, &pid) in &roles {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{k}:")))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        uids.insert(field("Uid"));
        for (k, want) in [
            ("Seccomp", "2"),
            ("NoNewPrivs", "1"),
            ("CapEff", "0000000000000000"),
            ("CapPrm", "0000000000000000"),
            ("CapBnd", "0000000000000000"),
        ] {
            if field(k) != want {
                bad.push(format!("{role}: {k} is {:?}, want {want}", field(k)));
            }
        }
        if field("Uid").starts_with("0") {
            bad.push(format!("{role}: runs as root"));
        }
        let nofile = if role == "transport" { "12" } else { "8" };
        let lim = limits(pid);
        for (name, want) in [
            ("Max processes", "0"),
            ("Max core file size", "0"),
            ("Max file size", "0"),
            ("Max open files", nofile),
            ("Max realtime priority", "0"),
        ] {
            let got = lim.get(name);
            if got != Some(&(want.to_string(), want.to_string())) {
                bad.push(format!("{role}: {name} is {got:?}, want {want} {want}"));
            }
        }
        // No mapping in a core dump (MADV_DONTDUMP on all memory).
        let filter =
            std::fs::read_to_string(format!("/proc/{pid}/coredump_filter")).unwrap_or_default();
        if u32::from_str_radix(filter.trim(), 16) != Ok(0) {
            bad.push(format!("{role}: coredump_filter is {filter:?}, want 0"));
        }
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .expect("fd dir")
            .flatten()
        {
            if std::fs::metadata(fd.path()).is_ok_and(|m| m.is_file()) {
                let target = std::fs::read_link(fd.path()).unwrap_or_default();
                bad.push(format!(
                    "{role}: fd {:?} names the regular file {}",
                    fd.file_name(),
                    target.display()
                ));
            }
        }
    }
    if uids.len() != 3 {
        bad.push(format!("the roles' uids are not three distinct: {uids:?}"));
    }
    assert!(bad.is_empty(), "{}\n{}", bad.join("\n"), w.child().report());
}
