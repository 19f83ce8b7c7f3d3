//! Issue 11: the parent keeps no secret. The private key and the PSKs,
//! once handed to the crypto role, are in no other process's memory: not
//! the parent's (which read them from the configuration file, key files
//! and the userspace API), not the handshake role's, not the transport's.
//!
//! The judge is a memory scan ([`wgd_tests::memscan`]): every writable or
//! anonymous mapping of every wgd process is read through `/proc/PID/mem`
//! and searched for each key's 32 raw bytes, its base64 and its hex (both
//! cases). Each scan also checks itself: crypto must hold the raw bytes of
//! each key in use, and every process the raw bytes of the peer's public
//! key, so a scan that cannot read a process fails instead of passing.
//!
//! Scanned after start-up (keys inline in the configuration file, and in
//! key files), after `wg set IF private-key FILE`, after
//! `wg set IF peer P preshared-key FILE`, and after a restart of the roles
//! (the parent reads the key files again, or gives the new crypto role
//! the inline ones as the old one wrapped them), each at once: the parent wipes
//! a request's text as it parses it and its keys as it hands them on, so
//! nothing waits for a thread to end.

mod common;

use std::io::Write as _;
use std::time::Duration;

use common::scan::assert_secrets_only_in_crypto;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use wgd_tests::memscan::{key_forms, scan, Needle};
use wgd_tests::{keypair, preshared_key, wait_until, InterfaceConfig, Netns, PeerConfig, Wgd};

/// Bound on the parent noticing a dead role, restarting all three and
/// configuring them again.
const RESTART: Duration = Duration::from_secs(10);

/// A secret temp file holding `text` and a newline, as `wg genkey >FILE`
/// would.
fn key_file(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("key temp file");
    writeln!(f, "{text}").expect("write key file");
    f.flush().expect("flush key file");
    f
}

/// Kills the crypto role and waits for a new one that holds the raw bytes
/// of every key in `keys` (name, base64).
fn kill_crypto_and_wait_for_keys(w: &Wgd<'_>, keys: &[(&str, &str)], what: &str) {
    let old_crypto = w.role_pid("crypto").expect("crypto pid");
    let restarts = |w: &Wgd<'_>| w.child().stderr().matches("roles restarted").count();
    let before = restarts(w);
    kill(Pid::from_raw(old_crypto as i32), Signal::SIGKILL).expect("kill -9 crypto");
    let mut raw: Vec<Needle> = Vec::new();
    for (name, key) in keys {
        raw.extend(
            key_forms(name, key)
                .expect("key forms")
                .into_iter()
                .filter(|n| n.name.ends_with("(raw)")),
        );
    }
    wait_until(RESTART, what, || {
        restarts(w) > before
            && w.role_pid("crypto").is_some_and(|pid| {
                pid != old_crypto
                    && scan(pid, &raw).is_ok_and(|s| {
                        keys.iter()
                            .all(|(name, _)| s.found(&format!("{name} (raw)")))
                    })
            })
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", w.child().report()));
}

/// Start-up with the keys in the configuration file, then a new private
/// key and a new PSK through stock `wg set` (which sends them as hex).
#[test]
fn inline_keys_and_wg_set_leave_no_copy_outside_crypto() {
    let ns = Netns::new().expect("namespace");
    let (private, _) = keypair();
    let (_, peer) = keypair();
    let psk = preshared_key();
    let mut p = PeerConfig::new(&peer, &["10.99.0.2/32"]);
    p.preshared_key = Some(psk.clone());
    let conf = InterfaceConfig {
        private_key: Some(private.clone()),
        listen_port: Some(51820),
        peers: vec![p],
        ..Default::default()
    };
    let w = Wgd::start(&ns, conf, &[]).expect("wgd");
    assert_secrets_only_in_crypto(
        &w,
        "after start-up",
        &[("private key", &private), ("psk", &psk)],
        &["private key", "psk"],
        &peer,
    );

    let (private2, _) = keypair();
    let f = key_file(&private2);
    let path = f.path().to_string_lossy().into_owned();
    w.set(&["private-key", path.as_str()])
        .expect("wg set private-key");
    assert_secrets_only_in_crypto(
        &w,
        "after wg set private-key",
        &[
            ("private key", &private),
            ("new private key", &private2),
            ("psk", &psk),
        ],
        &["new private key", "psk"],
        &peer,
    );

    let psk2 = preshared_key();
    let f = key_file(&psk2);
    let path = f.path().to_string_lossy().into_owned();
    w.set(&["peer", peer.as_str(), "preshared-key", path.as_str()])
        .expect("wg set preshared-key");
    assert_secrets_only_in_crypto(
        &w,
        "after wg set preshared-key",
        &[
            ("private key", &private),
            ("new private key", &private2),
            ("psk", &psk),
            ("new psk", &psk2),
        ],
        &["new private key", "new psk"],
        &peer,
    );

    // A dead crypto role: the parent gives the new one the secrets as the
    // old one wrapped them, and still holds none of them itself.
    kill_crypto_and_wait_for_keys(
        &w,
        &[("new private key", &private2), ("new psk", &psk2)],
        "a new crypto role holding both inline keys",
    );
    assert_secrets_only_in_crypto(
        &w,
        "after the roles restarted with the wrapped inline keys",
        &[
            ("private key", &private),
            ("new private key", &private2),
            ("psk", &psk),
            ("new psk", &psk2),
        ],
        &["new private key", "new psk"],
        &peer,
    );
}

/// Start-up with the keys in key files (`PrivateKeyFile`,
/// `PresharedKeyFile`), which the parent reads itself.
#[test]
fn key_files_leave_no_copy_outside_crypto() {
    let ns = Netns::new().expect("namespace");
    let (private, _) = keypair();
    let (_, peer) = keypair();
    let psk = preshared_key();
    let key = key_file(&private);
    let psk_file = key_file(&psk);
    let conf = format!(
        "[Interface]\nPrivateKeyFile = {}\nListenPort = 51820\n\n\
         [Peer]\nPublicKey = {peer}\nPresharedKeyFile = {}\nAllowedIPs = 10.99.0.2/32\n",
        key.path().display(),
        psk_file.path().display()
    );
    let w = Wgd::start_with_text(&ns, &conf, &private).expect("wgd");
    assert_secrets_only_in_crypto(
        &w,
        "after start-up from key files",
        &[("private key", &private), ("psk", &psk)],
        &["private key", "psk"],
        &peer,
    );

    // A dead role makes the parent restart all three and read the key
    // files again for the new crypto role: that reading leaves no copy
    // either.
    kill_crypto_and_wait_for_keys(
        &w,
        &[("private key", &private), ("psk", &psk)],
        "a new crypto role holding both keys",
    );
    assert_secrets_only_in_crypto(
        &w,
        "after the roles restarted and the key files were read again",
        &[("private key", &private), ("psk", &psk)],
        &["private key", "psk"],
        &peer,
    );
}
