#!/usr/bin/env bash
# The whole test suite: installs what the end-to-end tests need (Debian
# packages wireguard-go, wireguard-tools, iproute2, iperf3, ping, tcpdump), creates
# wgd's system users, checks formatting and lints, builds the binaries the
# end-to-end tests start, runs every test, then fuzzes each parser for 15 s
# (scripts/fuzz.sh; skipped, saying so, without a nightly toolchain). Run
# as root.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

bash .ci/install-deps
for u in _wgd-net _wgd-hs _wgd-crypto; do
  id -u "$u" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
bash scripts/fuzz.sh 15
