//! wgctl is a control tool: it must link no daemon or role code, so that
//! what it can do is visible from its manifest (DESIGN.md, "Workspace").
//! This reads the resolved dependency graph from `cargo metadata` and
//! fails if wgctl's normal dependencies, followed transitively, reach a
//! crate it must not link.

use std::collections::{HashMap, VecDeque};
use std::process::Command;

use serde_json::Value;

/// The daemon, the three roles' crates, and the crates only a daemon needs
/// (the tun device, capabilities).
const FORBIDDEN: &[&str] = &[
    "wgd",
    "wg-transport",
    "wg-crypto",
    "wg-handshake",
    "tun-rs",
    "caps",
];

#[test]
fn wgctl_links_no_daemon_or_role_crate() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata's JSON");

    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (str_of(&p["id"]), str_of(&p["name"])))
        .collect();
    let nodes: HashMap<&str, &Value> = meta["resolve"]["nodes"]
        .as_array()
        .expect("resolve.nodes")
        .iter()
        .map(|n| (str_of(&n["id"]), n))
        .collect();
    let root = names
        .iter()
        .find(|(id, name)| **name == "wgctl" && nodes.contains_key(**id))
        .map(|(id, _)| *id)
        .expect("wgctl in the workspace");

    // Breadth first over normal edges only (a dev- or build-dependency is
    // not linked into the binary), remembering how each crate was reached.
    let mut reached_from: HashMap<&str, Option<&str>> = HashMap::from([(root, None)]);
    let mut queue = VecDeque::from([root]);
    while let Some(id) = queue.pop_front() {
        for dep in nodes[id]["deps"].as_array().expect("deps") {
            let normal = dep["dep_kinds"]
                .as_array()
                .expect("dep_kinds")
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = str_of(&dep["pkg"]);
            if normal && !reached_from.contains_key(pkg) {
                reached_from.insert(pkg, Some(id));
                queue.push_back(pkg);
            }
        }
    }

    let mut bad: Vec<String> = reached_from
        .keys()
        .filter(|id| FORBIDDEN.contains(&names[*id]))
        .map(|id| path_to(id, &names, &reached_from))
        .collect();
    bad.sort();
    assert!(
        bad.is_empty(),
        "wgctl must not link these crates:\n  {}",
        bad.join("\n  ")
    );

    // The walk did see the graph: the shared language is there.
    let linked: Vec<&str> = reached_from.keys().map(|id| names[id]).collect();
    for needed in ["wg-config", "proto"] {
        assert!(linked.contains(&needed), "{needed} not in {linked:?}");
    }
}

/// `wgctl -> a -> b`: how the walk reached `id`.
fn path_to<'a>(
    mut id: &'a str,
    names: &HashMap<&'a str, &'a str>,
    reached_from: &HashMap<&'a str, Option<&'a str>>,
) -> String {
    let mut path = vec![names[id]];
    while let Some(Some(parent)) = reached_from.get(id) {
        path.push(names[parent]);
        id = parent;
    }
    path.reverse();
    path.join(" -> ")
}

fn str_of(v: &Value) -> &str {
    v.as_str().expect("a string in cargo metadata")
}
