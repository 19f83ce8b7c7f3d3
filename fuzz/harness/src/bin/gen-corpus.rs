//! Writes the seed corpus of every fuzz target: `gen-corpus [DIR]` puts
//! the seeds of target T in `DIR/T/` (default `fuzz/corpus`, where
//! `cargo fuzz run T` looks). Existing files are kept, so a corpus grown
//! by earlier runs survives; a seed is rewritten only if its bytes changed.
//!
//! Every seed is run through its target first: a seed that trips a check
//! is a bug in the seed or in the parser, and stops the generator.

use std::path::{Path, PathBuf};

use wgd_fuzz_harness::{seeds, TARGETS};

/// The fuzz workspace, `fuzz/`.
const FUZZ_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn main() {
    check_target_files();
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(FUZZ_DIR).join("corpus"));
    for target in TARGETS {
        let seeds = seeds::for_target(target.name);
        assert!(!seeds.is_empty(), "no seeds for {}", target.name);
        let out = dir.join(target.name);
        std::fs::create_dir_all(&out)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", out.display()));
        for (name, bytes) in &seeds {
            assert!(
                (target.run)(bytes),
                "{}: seed {name} is not a valid input",
                target.name
            );
            let path = out.join(format!("seed-{name}"));
            if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
                std::fs::write(&path, bytes)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            }
        }
        println!("{:<28} {} seeds", target.name, seeds.len());
    }
}

/// Every cargo-fuzz target is one of [`TARGETS`] and the other way round,
/// so that no target runs without seeds.
fn check_target_files() {
    let dir = Path::new(FUZZ_DIR).join("fuzz_targets");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    files.sort();
    let mut names: Vec<String> = TARGETS.iter().map(|t| t.name.to_owned()).collect();
    names.sort();
    assert_eq!(files, names, "fuzz_targets/ and TARGETS differ");
}
