//! Issue 13, part 1: a hostile role. Each role, fully confined, is made to
//! do what an attacker with code execution inside it would try (see
//! `wgd::hostile`); every attempt must fail, and the daemon must stay
//! correct or fail closed. After each run a memory scan finds the private
//! key and the PSK in crypto and nowhere else.
//!
//! - `*_system_calls_fail`: every [`Attack`] (reading another role's
//!   memory, ptrace, kill, prlimit of a sibling, opening files, sockets of
//!   any family, connecting to a control socket, fork, execve, TIOCSTI,
//!   executable memory) from each role in turn, sent by `sigqueue` to the
//!   running role. Each ends with the role killed by its filter (SIGSYS,
//!   logged by the parent) or the call refused with an error, the target
//!   alive, and the tunnel carrying traffic again within 2 s of the
//!   restart. Five attacks per daemon: the restart budget allows five.
//! - `hostile_transport_*`: the transport floods the handshake role with
//!   100,000 forged handshake packets and sends the parent a reply it never
//!   asked for, garbage, an oversized frame and a descriptor: the parent's
//!   next request finds the channel broken, it restarts the roles, and the
//!   tunnel works again.
//! - `hostile_handshake_*`: the handshake role asks the key holder for an
//!   initiation to an unknown peer, for keys (with forged responses, the
//!   only way keys of our initiations come out) of handshakes that never
//!   were, were superseded, are unfinished or abandoned, for an answer to
//!   its own initiation, then a burst of 100,000 requests about unknown
//!   handshakes and 1,000 forged initiations, then sends an oversized
//!   frame: every question is refused, no answer carries a static secret
//!   (the types cannot), the key holder stays up until the oversized
//!   frame, and the daemon recovers.
//! - `hostile_crypto_*`: the key holder answers the parent's private key
//!   with a public key that is not its own: the parent does not believe
//!   it and fails closed at start-up (interface and socket removed).
//!
//! Root is needed (namespaces, a wgd with its role users).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::fault::{
    alive, assert_recovered, count, stat, tunnel_with, tunnel_with_peer_env, wait_restart, Keys,
    Tunnel, RESTART,
};
use common::scan::assert_secrets_only_in_crypto;
use common::{ip, net, INNER_B4};
use wgd::hostile::Attack;
use wgd_tests::proc::sched_policy;
use wgd_tests::{keypair, wait_until, InterfaceConfig, Netns, PeerConfig, Wgd};

/// `sigqueue(pid, SIGUSR2, value)`: asks the role for an attack.
fn sigqueue(pid: u32, sig: i32, value: u64) -> std::io::Result<()> {
    let v = libc::sigval {
        sival_ptr: value as usize as *mut libc::c_void,
    };
    // SAFETY: plain integers; `pid` is a role of a wgd this test started.
    let r = unsafe { libc::sigqueue(pid as libc::pid_t, sig, v) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn role_pids(w: &Wgd<'_>) -> BTreeMap<String, u32> {
    w.roles().into_iter().map(|r| (r.role, r.pid)).collect()
}

/// The scan after a run: the tunnel's private key and PSK in crypto only.
fn scan_after(t: &Tunnel<'_>, when: &str) {
    let psk = t.psk.clone().expect("the tunnel has a PSK");
    assert_secrets_only_in_crypto(
        &t.wgd,
        when,
        &[("private key", t.wgd.private_key()), ("psk", &psk)],
        &["private key", "psk"],
        &t.go_public,
    );
}

/// One system-call attack by `attacker` on the running daemon; returns
/// what happened, for the log.
fn attack_once(net: &common::Net, t: &Tunnel<'_>, attacker: &str, attack: Attack) -> String {
    let w = &t.wgd;
    let roles = role_pids(w);
    let sibling = |not: &str| {
        roles
            .iter()
            .find(|(r, _)| r.as_str() != attacker && r.as_str() != not)
            .map_or(0, |(_, &p)| p)
    };
    // Another role's memory is the prize; crypto's above all.
    let target = match attack {
        Attack::ReadProcMem | Attack::ProcessVmReadv | Attack::Ptrace => {
            if attacker == "crypto" {
                roles["handshake"]
            } else {
                roles["crypto"]
            }
        }
        Attack::Kill => w.pid(),
        Attack::Prlimit => sibling(""),
        _ => 0,
    };
    let target_start = (target != 0).then(|| stat(target).map(|s| s.3)).flatten();
    let pid = roles[attacker];
    let (_, _, _, start) = stat(pid).expect("attacker stat");
    let log = w.child().stderr();
    let restarts = count(&log, "roles restarted");
    let returned = format!("hostile: attack {} returned", attack as u32);
    let returned_before = count(&log, &returned);
    let why = format!("{attack:?} by {attacker} on pid {target}");
    sigqueue(pid, libc::SIGUSR2, attack.value(target)).expect("sigqueue the role");
    wait_until(RESTART, "the attack's outcome", || {
        !alive(pid, start) || count(&w.child().stderr(), &returned) > returned_before
    })
    .unwrap_or_else(|e| panic!("{e}: {why}\n{}", w.child().report()));
    let outcome = if alive(pid, start) {
        // The call came back: it must have failed.
        let log = w.child().stderr();
        let line = log
            .lines()
            .filter(|l| l.contains(&returned))
            .nth(returned_before)
            .unwrap_or_default()
            .to_string();
        assert!(
            line.contains("returned -1 errno") && !line.ends_with("errno 0"),
            "{why} succeeded: {line}\n{}",
            w.child().report()
        );
        line
    } else {
        let restarted = wait_restart(w, restarts, &why);
        let cause = format!("{attacker} role was killed by SIGSYS");
        assert!(
            count(&w.child().stderr(), &cause) > count(&log, &cause),
            "{why}: the parent does not log {cause:?}\n{}",
            w.child().report()
        );
        assert_recovered(net, w, restarted, &why);
        cause
    };
    // A kill that got through would have ended the parent (or, for a
    // role's own prlimit, starved a sibling that is then restarted anyway).
    if let Some(start) = target_start {
        if target == w.pid() {
            assert!(alive(target, start), "{why}: the parent died");
        }
    }
    assert!(w.child().is_running(), "{why}\n{}", w.child().report());
    outcome
}

fn system_calls_fail(attacker: &str) {
    let net = net();
    for chunk in Attack::ALL.chunks(5) {
        let t = tunnel_with(&net, &[("WGD_TEST_HOOKS", "1")], Keys::InlineWithPsk);
        for &attack in chunk {
            let outcome = attack_once(&net, &t, attacker, attack);
            eprintln!("{attacker}: {attack:?}: {outcome}");
        }
        scan_after(&t, &format!("after {attacker}'s attacks {chunk:?}"));
    }
}

/// A compromised transport that keeps a CPU busy is raised to SCHED_RR
/// like a busy one, and lowered to normal priority by the parent after
/// 2 s of a whole CPU, while it still spins (`wgd/src/sched.rs`); then it
/// carries traffic again. On one CPU it is never raised.
#[test]
fn a_spinning_transport_is_lowered_again() {
    let net = net();
    let t = tunnel_with(&net, &[("WGD_TEST_HOOKS", "1")], Keys::File);
    let w = &t.wgd;
    let pid = role_pids(w)["transport"];
    let policy = || sched_policy(pid, pid);
    let returned = "hostile: attack 16 returned";
    let started = Instant::now();
    sigqueue(pid, libc::SIGUSR2, Attack::Spin.value(0)).expect("sigqueue the transport");
    let realtime = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2;
    if realtime {
        wait_until(
            Duration::from_secs(2),
            "the spinning transport raised",
            || policy() == Some((2, 1)),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", w.child().report()));
        wait_until(
            Duration::from_secs(4),
            "the spinning transport lowered",
            || policy() == Some((0, 0)),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", w.child().report()));
        let lowered = started.elapsed();
        assert!(
            !w.child().stderr().contains(returned) && lowered < wgd::hostile::SPIN,
            "lowered only after the spin ended ({lowered:?})\n{}",
            w.child().report()
        );
        eprintln!("spinning transport lowered after {lowered:?}");
    }
    wait_until(
        wgd::hostile::SPIN + Duration::from_secs(5),
        "the spin's end",
        || w.child().stderr().contains(returned),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", w.child().report()));
    if !realtime {
        assert_eq!(policy(), Some((0, 0)), "{}", w.child().report());
    }
    assert!(
        wgd_tests::traffic::ping_within(&net.ns_a, ip(INNER_B4), Duration::from_secs(5)).is_some(),
        "no traffic after the spin\n{}",
        w.child().report()
    );
    assert_eq!(role_pids(w)["transport"], pid, "the transport was replaced");
}

#[test]
fn transport_system_calls_fail() {
    system_calls_fail("transport");
}

#[test]
fn handshake_system_calls_fail() {
    system_calls_fail("handshake");
}

#[test]
fn crypto_system_calls_fail() {
    system_calls_fail("crypto");
}

/// The lines `hostile: WHAT: ANSWER` of the attacking role, once `done`
/// (the last attack's name) is among them.
fn hostile_lines(w: &Wgd<'_>, done: &str, within: Duration) -> Vec<String> {
    wait_until(within, done, || w.child().stderr().contains(done))
        .unwrap_or_else(|e| panic!("{e}\n{}", w.child().report()));
    w.child()
        .stderr()
        .lines()
        .filter(|l| l.contains("hostile: ") && !l.contains("hostile: attack"))
        .map(str::to_string)
        .collect()
}

fn answer<'a>(lines: &'a [String], what: &str) -> &'a str {
    lines
        .iter()
        .find_map(|l| l.split_once(&format!("hostile: {what}: ")).map(|(_, a)| a))
        .unwrap_or_else(|| panic!("no outcome for {what:?} in {lines:#?}"))
}

/// Signals the hostile role to run its protocol attacks, then waits for
/// the restart its misbehaviour causes and for the tunnel to work again.
fn protocol_attack(role: &str, done: &str) {
    let net = net();
    let hooks = format!("hostile:{role}");
    let t = tunnel_with_peer_env(
        &net,
        &[("WGD_TEST_HOOKS", &hooks)],
        Keys::InlineWithPsk,
        Some("WGD_TEST_HOSTILE_PEER"),
    );
    let w = &t.wgd;
    let pid = role_pids(w)[role];
    let restarts = count(&w.child().stderr(), "roles restarted");
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .expect("signal the hostile role");
    let lines = hostile_lines(w, done, Duration::from_secs(60));
    eprintln!("{}", lines.join("\n"));
    check_answers(role, &lines);
    // The misbehaviour is noticed at the latest at the next request (a
    // `wg show`), and the roles are restarted, honest this time.
    let _ = w.dump();
    let restarted = wait_restart(w, restarts, &format!("the hostile {role}'s attacks"));
    eprintln!("{role}'s attacks took {:?}", started.elapsed());
    assert_recovered(&net, w, restarted, &format!("the hostile {role}"));
    scan_after(&t, &format!("after the hostile {role}"));
}

fn check_answers(role: &str, lines: &[String]) {
    match role {
        "transport" => {
            let flood = answer(lines, "forged handshake packets to the handshake role");
            assert!(!flood.starts_with("0 sent"), "{flood}");
        }
        "handshake" => {
            for (what, want) in [
                ("initiation for an unknown peer", "Refused(UnknownPeer)"),
                (
                    "keys of a handshake that never was",
                    "Refused(UnknownHandshake)",
                ),
                // Encrypted to the peer's key, not ours: it does not
                // authenticate here.
                ("an answer to our own initiation", "Refused(Rejected)"),
                (
                    "keys of a superseded handshake",
                    "Refused(UnknownHandshake)",
                ),
                (
                    "abandon the superseded handshake",
                    "Refused(UnknownHandshake)",
                ),
                // Refused, and the handshake stays (so abandoning it
                // next succeeds): a forged response cannot end it.
                (
                    "keys of an unfinished handshake (a forged response)",
                    "Refused(Rejected)",
                ),
                ("abandon it", "Ok(Abandoned)"),
                (
                    "keys of the abandoned handshake",
                    "Refused(UnknownHandshake)",
                ),
            ] {
                let got = answer(lines, what);
                assert!(got.contains(want), "{what}: {got}, want {want}");
            }
            for what in [
                "initiation for the configured peer",
                "a second initiation for the configured peer",
                "a third initiation for the configured peer",
            ] {
                let init = answer(lines, what);
                assert!(init.starts_with("Ok(Initiation"), "{what}: {init}");
            }
            for (what, n) in [
                ("burst of 100000 requests for unknown handshakes", 100_000),
                ("burst of 1000 forged initiations", 1_000),
            ] {
                let got = answer(lines, what);
                assert!(
                    got.starts_with(&format!("{n} refused, 0 accepted")),
                    "the key holder refused every one: {what}: {got}"
                );
            }
        }
        _ => unreachable!("no protocol attacks for {role}"),
    }
}

#[test]
fn hostile_transport_is_noticed_and_replaced() {
    protocol_attack("transport", "frame with a descriptor to the parent");
}

#[test]
fn hostile_handshake_gets_nothing_from_the_key_holder() {
    protocol_attack("handshake", "oversized frame to crypto");
}

#[test]
fn hostile_crypto_lying_about_its_key_is_not_believed() {
    let ns = Netns::new().expect("namespace");
    let (key, _) = keypair();
    let (_, peer) = keypair();
    let conf = InterfaceConfig {
        private_key: Some(key),
        peers: vec![PeerConfig::new(&peer, &["10.99.0.2/32"])],
        ..Default::default()
    };
    // Start-up applies the key: the lie comes at once, and start-up fails.
    let w = Wgd::start(&ns, conf, &[("WGD_TEST_HOOKS", "hostile:crypto")]);
    let (status, report, gone) = match &w {
        Ok(w) => (
            w.child().wait_exit(RESTART).ok(),
            w.child().report(),
            wait_until(RESTART, "interface removed", || !w.interface_exists()).is_ok(),
        ),
        // wgd may be gone before the helper sees its socket.
        Err(e) => (None, e.to_string(), true),
    };
    if let Ok(w) = &w {
        assert!(
            status.is_some_and(|s| !s.success()),
            "wgd must fail closed, not run with a key holder that lies\n{report}"
        );
        let log = w.child().stderr();
        assert!(
            log.contains("a false public key to the parent"),
            "the hostile crypto lied\n{report}"
        );
        assert!(
            log.contains("not its private key's: not believed"),
            "the parent noticed\n{report}"
        );
    }
    assert!(gone, "the interface is removed\n{report}");
}
