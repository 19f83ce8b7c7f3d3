//! The house is checked, not just drawn: which crate may depend on which
//! is what keeps a process from reaching what it must not touch, so the
//! rules of the README's "Crate graph" are read back from `cargo metadata`
//! and every arrow they forbid fails this test. Only normal dependencies
//! count, transitively (a dev-dependency is not linked into a process).
//!
//! - `proto` depends on no role: it is the language all of them share;
//! - `wg-config` (the wg(8) and userspace-API language of wgd and wgctl)
//!   depends on no role;
//! - `wgctl` depends on no role, nor on the tun or capability crates;
//! - `wg-transport` never depends on `wg-crypto`: nothing on the packet
//!   path links the key holder;
//! - `wg-handshake` links neither `wg-crypto` nor `wg-transport`: it talks
//!   to both only over channels;
//! - `wg-crypto` depends on no other role and on no networking or tun
//!   crate: the key holder has no network.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

const ROLES: [&str; 4] = ["wg-crypto", "wg-handshake", "wg-transport", "wgd"];
const NETWORKING: [&str; 6] = ["tun-rs", "tokio", "mio", "socket2", "quinn-udp", "caps"];

/// The rules: a crate, and what must not be in its dependency closure.
fn rules() -> Vec<(&'static str, Vec<&'static str>)> {
    let without = |of: &[&'static str], but: &str| -> Vec<&'static str> {
        of.iter().copied().filter(|c| *c != but).collect()
    };
    vec![
        ("proto", ROLES.to_vec()),
        ("wg-config", ROLES.to_vec()),
        (
            "wgctl",
            ROLES.iter().chain(&["tun-rs", "caps"]).copied().collect(),
        ),
        ("wg-transport", vec!["wg-crypto", "wg-handshake", "wgd"]),
        ("wg-handshake", vec!["wg-crypto", "wg-transport", "wgd"]),
        (
            "wg-crypto",
            without(&ROLES, "wg-crypto")
                .into_iter()
                .chain(NETWORKING)
                .collect(),
        ),
    ]
}

/// Package name → names of its normal dependencies, for every package in
/// the resolved graph.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    // Resolved for this machine's target only: the graph a build here
    // links (and no other platform's crates to download).
    let rustc = Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
        .arg("-vV")
        .output()
        .expect("run rustc -vV");
    let version = String::from_utf8_lossy(&rustc.stdout).into_owned();
    let host = version
        .lines()
        .find_map(|l| l.strip_prefix("host: "))
        .expect("rustc -vV names the host");
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--filter-platform",
            host,
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let names: BTreeMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let mut g = BTreeMap::new();
    for node in meta["resolve"]["nodes"].as_array().expect("resolve.nodes") {
        let Some(name) = node["id"].as_str().and_then(|id| names.get(id)) else {
            continue;
        };
        let deps: BTreeSet<String> = node["deps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|d| {
                d["dep_kinds"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|k| k["kind"].is_null())
            })
            .filter_map(|d| d["pkg"].as_str().and_then(|id| names.get(id)))
            .map(|n| n.to_string())
            .collect();
        g.entry(name.to_string())
            .or_insert_with(BTreeSet::new)
            .extend(deps);
    }
    g
}

/// Every crate `from` reaches through normal dependencies, with one path
/// to each (for the failure message).
fn closure(g: &BTreeMap<String, BTreeSet<String>>, from: &str) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut todo = vec![vec![from.to_string()]];
    // Bounded by the number of packages: each is expanded once.
    while let Some(path) = todo.pop() {
        let Some(last) = path.last() else { continue };
        for dep in g.get(last).into_iter().flatten() {
            if !seen.contains_key(dep) {
                let mut p = path.clone();
                p.push(dep.clone());
                seen.insert(dep.clone(), p.clone());
                todo.push(p);
            }
        }
    }
    seen
}

#[test]
fn no_crate_depends_on_what_the_design_forbids() {
    let g = graph();
    let mut broken = Vec::new();
    for (krate, forbidden) in rules() {
        if !g.contains_key(krate) {
            // A rule for a crate that does not exist protects nothing; the
            // workspace crates are all listed, so this is a renamed one.
            assert!(
                krate == "wg-config",
                "the rule for {krate} names no crate of the workspace"
            );
            continue;
        }
        let reach = closure(&g, krate);
        for f in forbidden {
            if let Some(path) = reach.get(f) {
                broken.push(format!("{krate} → {f} (via {})", path.join(" → ")));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "forbidden arrows:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_sees_arrows_that_exist() {
    // The rules above pass only if the graph is read right: check it sees
    // arrows that must be there, transitively.
    let g = graph();
    let wgd = closure(&g, "wgd");
    for dep in ["proto", "wg-crypto", "wg-handshake", "wg-transport", "nix"] {
        assert!(wgd.contains_key(dep), "wgd must reach {dep}: {wgd:?}");
    }
    // serde comes to wgctl through proto at least.
    assert!(closure(&g, "wgctl").contains_key("serde"));
    // Dev-dependencies do not count: the handshake role's tests use the
    // key store as an oracle, but the role does not link it.
    assert!(!closure(&g, "wg-handshake").contains_key("boringtun"));
}
