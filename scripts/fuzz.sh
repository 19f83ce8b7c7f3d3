#!/usr/bin/env bash
# Coverage-guided fuzzing of wgd's parsers (fuzz/, cargo-fuzz on nightly):
# writes the seed corpus (fuzz/harness, gen-corpus), builds every target,
# then runs each for SECONDS (default 15) or until it finds a crash.
#
#   bash scripts/fuzz.sh [SECONDS [TARGET...]]
#
# scripts/test.sh (and so CI) runs it with the default. A long run of one
# target, as README.md ("Fuzzing") describes, is
#   bash scripts/fuzz.sh 3600 uapi_request
# The corpus grows in fuzz/corpus/TARGET and a crash is saved in
# fuzz/artifacts/TARGET/ (both ignored by git); the script then exits
# non-zero. Without a nightly toolchain it says so and exits 0: the rest
# of the test suite does not depend on this step.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

secs="${1:-15}"
shift || true

if ! cargo +nightly --version >/dev/null 2>&1; then
	echo "fuzz: no nightly toolchain (rustup toolchain install nightly); skipping the fuzzing step" >&2
	exit 0
fi
# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "fuzz: no C++ compiler (apt-get install g++); skipping the fuzzing step" >&2
		exit 0
	fi
	echo "fuzz: installing g++" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz" >&2
	cargo install --locked cargo-fuzz
fi

# The fuzz workspace is not the main one: check its formatting here.
cargo fmt --manifest-path fuzz/Cargo.toml --all -- --check

# Seeds first: the generator runs each seed through its target's checks
# (on stable, without sanitizers) before writing it.
cargo run --quiet --manifest-path fuzz/Cargo.toml -p wgd-fuzz-harness --bin gen-corpus

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
	mapfile -t targets < <(cargo +nightly fuzz list)
fi

# All targets in one cargo invocation: they share every dependency.
cargo +nightly fuzz build
for t in "${targets[@]}"; do
	echo "fuzz: $t for ${secs}s" >&2
	# -timeout: an input that takes 10 s is a hang, and a finding.
	cargo +nightly fuzz run "$t" -- -max_total_time="$secs" -timeout=10 -print_final_stats=1
done
