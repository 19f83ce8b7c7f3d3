#!/usr/bin/env bash
# Throughput and memory, wgd against wireguard-go in the same run.
#
# For each implementation X in (wgd, wireguard-go): two namespaces joined
# by a veth, X on both ends, a 10 s iperf3 TCP stream through the tunnel
# (after a 1 s warm-up). Prints Mbit/s, the resident memory of all
# processes of one end, and the ratios wgd / wireguard-go.
# Release build; run as root: bash scripts/bench.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }
bash .ci/install-deps >/dev/null
cargo build --release -q -p wgd
WGD=$PWD/target/release/wgd
for u in _wgd _wgd-crypto; do
  id -u "$u" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done

tag=$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in a b; do ip netns del "bn$n-$tag" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_sock() { for _ in $(seq 100); do [ -S "/var/run/wireguard/$1.sock" ] && return 0; sleep 0.05; done; return 1; }

# rss_kib PID...: resident memory of these processes and their children
rss_kib() {
  local total=0 p c
  for p in "$@"; do
    for c in $p $(pgrep -P "$p" || true); do
      total=$((total + $(awk '/^VmRSS/{print $2}' "/proc/$c/status" 2>/dev/null || echo 0)))
    done
  done
  echo "$total"
}

run() { # impl -> prints "mbps rss_kib"
  local impl=$1 A=bna-$tag B=bnb-$tag
  local IA=bw${impl:0:2}a$((tag % 10000)) IB=bw${impl:0:2}b$((tag % 10000))
  ip netns add "$A"; ip netns add "$B"
  ip -n "$A" link set lo up; ip -n "$B" link set lo up
  ip link add bv-$tag netns "$A" type veth peer name bv-$tag netns "$B"
  ip -n "$A" addr add 10.88.0.1/24 dev bv-$tag; ip -n "$A" link set bv-$tag up
  ip -n "$B" addr add 10.88.0.2/24 dev bv-$tag; ip -n "$B" link set bv-$tag up
  local ka kb pa pb
  ka=$(wg genkey); kb=$(wg genkey); pa=$(echo "$ka" | wg pubkey); pb=$(echo "$kb" | wg pubkey)
  for side in A B; do
    local ns=${!side} ifn key peer ep inner
    if [ $side = A ]; then ifn=$IA key=$ka peer=$pb ep=10.88.0.2:51821 inner=10.89.0.1 port=51820
    else ifn=$IB key=$kb peer=$pa ep=10.88.0.1:51820 inner=10.89.0.2 port=51821; fi
    if [ "$impl" = wgd ]; then
      ip netns exec "$ns" env LOG_LEVEL=error "$WGD" -f "$ifn" & pids+=($!)
    else
      ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go "$ifn" >/dev/null & pids+=($!)
    fi
    wait_sock "$ifn"
    ip netns exec "$ns" wg set "$ifn" private-key <(echo "$key") listen-port $port \
      peer "$peer" allowed-ips 10.89.0.0/24 endpoint "$ep"
    ip -n "$ns" addr add $inner/24 dev "$ifn"; ip -n "$ns" link set "$ifn" up
  done
  local apid=${pids[-2]}
  ip netns exec "$B" iperf3 -s -1 -B 10.89.0.2 >/dev/null 2>&1 & pids+=($!)
  sleep 0.5
  ip netns exec "$A" ping -c 2 -W 2 10.89.0.2 >/dev/null
  local mbps
  mbps=$(ip netns exec "$A" iperf3 -c 10.89.0.2 -t "$secs" -O 1 -J | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]/1e6))')
  local rss; rss=$(rss_kib "$apid")
  kill "${pids[@]}" 2>/dev/null || true; pids=()
  ip netns del "$A"; ip netns del "$B"
  echo "$mbps $rss"
}

read -r wgd_mbps wgd_rss < <(run wgd)
read -r go_mbps go_rss < <(run wireguard-go)
printf '%-14s %10s %12s\n' impl 'Mbit/s' 'RSS KiB'
printf '%-14s %10s %12s\n' wgd "$wgd_mbps" "$wgd_rss"
printf '%-14s %10s %12s\n' wireguard-go "$go_mbps" "$go_rss"
python3 -c "print(f'ratio wgd/wireguard-go: throughput {$wgd_mbps/$go_mbps:.2f}, memory {$wgd_rss/$go_rss:.2f}')"
