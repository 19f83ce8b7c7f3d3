//! The memory scan that judges where secrets are: every process of a
//! running wgd, searched for every form of every key (see
//! `wgd_tests::memscan`). Used by `secrets.rs` and `hostile.rs`.

use wgd_tests::memscan::{key_forms, scan, Needle};
use wgd_tests::Wgd;

const ROLES: [&str; 3] = ["crypto", "handshake", "transport"];

/// Every process of `w`: the parent and its three roles.
pub fn processes(w: &Wgd<'_>) -> Vec<(String, u32)> {
    let mut all = vec![("parent".to_string(), w.pid())];
    for role in ROLES {
        let pid = w
            .role_pid(role)
            .unwrap_or_else(|| panic!("no {role} process of wgd {}", w.pid()));
        all.push((role.to_string(), pid));
    }
    all
}

/// Scans every process of `w` for every form of every key in `secrets`
/// (name, base64): none may be outside crypto. Crypto must hold the raw
/// bytes of each key in `held`, and each process the raw bytes of
/// `public` (the scan saw the process at all).
pub fn assert_secrets_only_in_crypto(
    w: &Wgd<'_>,
    when: &str,
    secrets: &[(&str, &str)],
    held: &[&str],
    public: &str,
) {
    // A `get` first: the parent binds its control socket before it
    // configures the roles and serves clients only after, so an answer
    // means start-up (or a restart) is over and no key is in transit.
    w.dump()
        .unwrap_or_else(|e| panic!("{when}: wg show dump: {e}"));
    let mut needles: Vec<Needle> = Vec::new();
    for (name, key) in secrets {
        needles.extend(key_forms(name, key).expect("key forms"));
    }
    needles.extend(key_forms("peer public key", public).expect("key forms"));
    let mut failures = Vec::new();
    for (role, pid) in processes(w) {
        let s =
            scan(pid, &needles).unwrap_or_else(|e| panic!("{when}: scanning {role} ({pid}): {e}"));
        if !s.found("peer public key (raw)") {
            failures.push(format!(
                "{role} ({pid}): the peer's public key is not in its memory, so the scan did \
                 not see it ({} bytes read, unreadable: {:?})",
                s.scanned, s.unreadable
            ));
        }
        if role == "crypto" {
            for name in held {
                if !s.found(&format!("{name} (raw)")) {
                    failures.push(format!(
                        "crypto ({pid}) does not hold {name}: the scan is blind ({} bytes read)",
                        s.scanned
                    ));
                }
            }
            continue;
        }
        for h in s
            .hits
            .iter()
            .filter(|h| !h.needle.starts_with("peer public key"))
        {
            failures.push(format!(
                "{role} ({pid}) holds {} at {:#x} in {}",
                h.needle, h.address, h.mapping
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{when}:\n  {}\n{}",
        failures.join("\n  "),
        w.child().report()
    );
}
