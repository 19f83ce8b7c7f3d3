#!/usr/bin/env bash
# Tunnel throughput, latency and memory (issue 12), every implementation
# side by side in one run.
#
# Pairings, each in two fresh network namespaces A and B joined by a veth
# (underlay MTU 1500, tunnel MTU 1420), every daemon configured with stock
# wg(8):
#   wgd-wgd              wgd <-> wgd (target/release/wgd, four processes each)
#   debgo-debgo          Debian's wireguard-go <-> itself (no offloads)
#   ogo-ogo              offload wireguard-go <-> itself (../shared/anchors/wireguard-go)
#   boringtun-boringtun  boringtun <-> itself (../shared/anchors/boringtun-cli)
#   wgd-ogo              wgd (A) <-> offload wireguard-go (B)
# The anchors' pairings are skipped when their binary is absent.
#
# Measured for each pairing, in this order:
#   rtt_idle   ping A -> B through the tunnel, 20 at 0.1 s, median RTT;
#   ab         iperf3 TCP, one stream, A -> B (with ping A -> B alongside:
#              rtt_load, the median RTT under load, and its loss);
#   ba         iperf3 TCP, one stream, B -> A (-R);
#   p4         iperf3 TCP, four streams, A -> B (-P 4);
#   rss_a/b    peak RSS (VmHWM) of each daemon, summed over all its
#              processes (wgd: the parent and its three roles).
# Throughput is iperf3's receiver rate, retransmits its sender's count
# (from its JSON); each iperf3 run has a 1 s warm-up (-O 1) before SECS.
#
# RUNS runs, interleaved round-robin over the pairings (run 1 of every
# pairing, then run 2, ...); the table shows medians and, in brackets, the
# median over runs of the ratio to offload wireguard-go <-> itself in the
# same run. Results go to stdout and to bench-results/DATE/ (git-ignored):
# measurements.csv (every measurement), table.txt, table.md, plot.svg and
# the daemons' logs of a failed pairing.
#
# Run as root (release build):
#   bash scripts/bench.sh
#   SECS=3 RUNS=1 bash scripts/bench.sh                 quick look
#   PAIRINGS="wgd-wgd ogo-ogo" bash scripts/bench.sh    a subset
#   WGD_BIN=/path/to/other/wgd bash scripts/bench.sh    another build of wgd
#   OUT=/some/dir bash scripts/bench.sh                 results elsewhere
# Cleans up its namespaces and processes (by pid) on exit and on failure;
# every wait is bounded; traffic flows only between its own namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
[ "$(id -u)" = 0 ] || { echo "bench.sh: run as root" >&2; exit 1; }

secs=${SECS:-10}
runs=${RUNS:-3}
case $secs in '' | *[!0-9]*) echo "bench.sh: SECS must be a whole number of seconds" >&2; exit 1 ;; esac
case $runs in '' | *[!0-9]*) echo "bench.sh: RUNS must be a number" >&2; exit 1 ;; esac
[ "$secs" -ge 2 ] || { echo "bench.sh: SECS must be at least 2" >&2; exit 1; }
[ "$runs" -ge 1 ] || { echo "bench.sh: RUNS must be at least 1" >&2; exit 1; }

DEBGO=$(command -v wireguard-go || true)
OGO=$repo/../shared/anchors/wireguard-go
BTUN=$repo/../shared/anchors/boringtun-cli
all_pairings="wgd-wgd debgo-debgo ogo-ogo boringtun-boringtun wgd-ogo"
pairings=
for p in ${PAIRINGS:-$all_pairings}; do
  case " $all_pairings " in *" $p "*) ;; *) echo "bench.sh: unknown pairing $p (known: $all_pairings)" >&2; exit 1 ;; esac
  case $p in
    *ogo*) [ -x "$OGO" ] || { echo "bench.sh: skipping $p: no $OGO" >&2; continue; } ;;
    boringtun*) [ -x "$BTUN" ] || { echo "bench.sh: skipping $p: no $BTUN" >&2; continue; } ;;
  esac
  pairings="$pairings $p"
done
[ -n "$pairings" ] || { echo "bench.sh: no pairing to run" >&2; exit 1; }

bash .ci/install-deps >/dev/null
if [ -z "${WGD_BIN:-}" ]; then
  cargo build --release -q -p wgd -p wgctl
fi
WGD=${WGD_BIN:-$repo/target/release/wgd}
[ -n "$DEBGO" ] || { echo "bench.sh: wireguard-go (Debian package) missing" >&2; exit 1; }
# wgd runs its roles as these users (as scripts/test.sh creates them).
for u in _wgd-net _wgd-hs _wgd-crypto; do
  id -u "$u" >/dev/null 2>&1 ||
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done

stamp=$(date +%Y-%m-%d-%H%M%S)
out=${OUT:-$repo/bench-results/$stamp}
mkdir -p "$out"
work=$(mktemp -d)
csv=$out/measurements.csv
echo "run,pairing,metric,value" >"$csv"

tag=$(($$ % 100000))
pids=()       # every process we started and have not stopped yet
namespaces=() # every namespace we created and have not deleted yet
socks=()      # UAPI sockets of our interfaces (left behind after SIGKILL)

# stop_pid PID: SIGTERM, then SIGKILL after 5 s; only processes we started.
stop_pid() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
teardown() {
  local p n s
  for p in "${pids[@]}"; do stop_pid "$p"; done
  pids=()
  for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  namespaces=()
  for s in "${socks[@]}"; do rm -f "$s"; done
  socks=()
}
cleanup() {
  teardown
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# tree PID: PID and all its descendants.
tree() {
  local c
  echo "$1"
  for c in $(pgrep -P "$1" || true); do tree "$c"; done
}
# hwm_kib PID: peak RSS (VmHWM) summed over PID and its descendants.
hwm_kib() {
  local total=0 p v
  for p in $(tree "$1"); do
    v=$(awk '/^VmHWM:/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
wait_sock() { # ifname pid: up to 10 s
  for _ in $(seq 200); do
    [ -S "/var/run/wireguard/$1.sock" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}
record() { # run pairing metric value
  echo "$1,$2,$3,$4" >>"$csv"
}
# median_rtt FILE: median of ping's time= values, or empty.
median_rtt() {
  python3 - "$1" <<'EOF'
import re, statistics, sys
t = [float(x) for x in re.findall(r"time=([0-9.]+) ms", open(sys.argv[1]).read())]
print(f"{statistics.median(t):.3f}" if t else "")
EOF
}
# ping_loss FILE: percentage of echo requests without reply.
ping_loss() {
  sed -n 's/.* \([0-9.]*\)% packet loss.*/\1/p' "$1" | head -1
}
# iperf_fields FILE: "Mbit/s retransmits" from iperf3's JSON, or empty.
iperf_fields() {
  python3 - "$1" <<'EOF'
import json, sys
try:
    end = json.load(open(sys.argv[1]))["end"]
    print(f'{end["sum_received"]["bits_per_second"] / 1e6:.1f} {end["sum_sent"].get("retransmits", "")}')
except (KeyError, ValueError, OSError):
    pass
EOF
}

# start IMPL NS IFNAME LOG: start a daemon in NS; its pid in $started.
start() {
  local impl=$1 ns=$2 ifn=$3 log=$4
  case $impl in
    wgd) ip netns exec "$ns" env LOG_LEVEL=error "$WGD" -f "$ifn" >"$log" 2>&1 & ;;
    debgo) ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$DEBGO" "$ifn" >"$log" 2>&1 & ;;
    ogo) ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$OGO" "$ifn" >"$log" 2>&1 & ;;
    boringtun) ip netns exec "$ns" "$BTUN" --disable-drop-privileges --foreground \
      --log "$log.btun" "$ifn" >"$log" 2>&1 & ;;
  esac
  started=$!
}

n=0
started=
# measure RUN PAIRING: one pairing once; returns non-zero on a failure
# (after which the caller tears down and goes on with the next).
measure() {
  local run=$1 pairing=$2 implA=${2%-*} implB=${2#*-}
  n=$((n + 1))
  local A=wgdbench-$tag-$n-a B=wgdbench-$tag-$n-b veth=wbv$tag$n
  local ifA=wb$tag${n}a ifB=wb$tag${n}b
  local logA=$work/$n-$pairing-A-$implA.log logB=$work/$n-$pairing-B-$implB.log
  record "$run" "$pairing" loadavg1 "$(cut -d' ' -f1 /proc/loadavg)"

  ip netns add "$A" || return 1
  namespaces+=("$A")
  ip netns add "$B" || return 1
  namespaces+=("$B")
  ip -n "$A" link set lo up && ip -n "$B" link set lo up &&
    ip link add "$veth" netns "$A" mtu 1500 type veth peer name "$veth" netns "$B" mtu 1500 &&
    ip -n "$A" addr add 10.88.0.1/24 dev "$veth" && ip -n "$A" link set "$veth" up &&
    ip -n "$B" addr add 10.88.0.2/24 dev "$veth" && ip -n "$B" link set "$veth" up || return 1

  local kA kB pA pB
  kA=$work/$n.a.key kB=$work/$n.b.key
  (umask 077; wg genkey >"$kA"; wg genkey >"$kB")
  pA=$(wg pubkey <"$kA") pB=$(wg pubkey <"$kB")
  local side ns impl ifn log key peer ep inner port pid pidA pidB
  for side in A B; do
    if [ $side = A ]; then
      ns=$A impl=$implA ifn=$ifA log=$logA key=$kA peer=$pB ep=10.88.0.2:51821 inner=10.89.0.1 port=51820
    else
      ns=$B impl=$implB ifn=$ifB log=$logB key=$kB peer=$pA ep=10.88.0.1:51820 inner=10.89.0.2 port=51821
    fi
    [ -e "/var/run/wireguard/$ifn.sock" ] && { echo "bench.sh: $ifn.sock exists" >&2; return 1; }
    start "$impl" "$ns" "$ifn" "$log"
    pid=$started
    pids+=("$pid")
    socks+=("/var/run/wireguard/$ifn.sock")
    wait_sock "$ifn" "$pid" || { echo "bench.sh: $impl did not start" >&2; return 1; }
    timeout 30 ip netns exec "$ns" wg set "$ifn" private-key "$key" listen-port $port \
      peer "$peer" allowed-ips 10.89.0.0/24 endpoint "$ep" &&
      ip -n "$ns" addr add $inner/24 dev "$ifn" &&
      ip -n "$ns" link set "$ifn" mtu 1420 up || return 1
    if [ $side = A ]; then pidA=$pid; else pidB=$pid; fi
  done
  local rolesA rolesB
  rolesA=$(tree "$pidA" | sort | tr '\n' ' ') rolesB=$(tree "$pidB" | sort | tr '\n' ' ')

  # The first handshake: up to 20 pings, 1 s each.
  local ok=
  for _ in $(seq 20); do
    ip netns exec "$A" ping -c 1 -W 1 -q 10.89.0.2 >/dev/null 2>&1 && { ok=1; break; }
  done
  [ -n "$ok" ] || { echo "bench.sh: no handshake" >&2; return 1; }

  ip netns exec "$B" iperf3 -s -B 10.89.0.2 >"$work/$n.iperf3-server.log" 2>&1 &
  pids+=("$!")
  for _ in $(seq 100); do
    ip netns exec "$B" ss -Hltn 'sport = :5201' | grep -q . && break
    sleep 0.05
  done

  local f=$work/$n
  timeout 30 ip netns exec "$A" ping -c 20 -i 0.1 -W 1 -w 15 10.89.0.2 >"$f.ping-idle" 2>&1 || true
  record "$run" "$pairing" rtt_idle_ms "$(median_rtt "$f.ping-idle")"

  local kind args v ping_pid
  for kind in ab ba p4; do
    case $kind in ab) args=() ;; ba) args=(-R) ;; p4) args=(-P 4) ;; esac
    ping_pid=
    if [ $kind = ab ]; then
      # Under load: ping alongside the A -> B stream, from 1.5 s (after
      # the warm-up second) for SECS - 1 seconds.
      (sleep 1.5; exec timeout $((secs + 10)) ip netns exec "$A" ping -c $(((secs - 1) * 10)) -i 0.1 -W 1 \
        -w $((secs + 5)) 10.89.0.2) >"$f.ping-load" 2>&1 &
      ping_pid=$!
      pids+=("$ping_pid")
    fi
    timeout -k 5 $((secs + 30)) ip netns exec "$A" iperf3 -c 10.89.0.2 -t "$secs" -O 1 \
      --connect-timeout 5000 -J "${args[@]}" >"$f.$kind.json" 2>&1 || true
    v=$(iperf_fields "$f.$kind.json")
    [ -n "$v" ] || echo "bench.sh: $pairing $kind: iperf3 failed: $(head -c 300 "$f.$kind.json")" >&2
    record "$run" "$pairing" "${kind}_mbps" "${v% *}"
    record "$run" "$pairing" "${kind}_retr" "${v#* }"
    if [ -n "$ping_pid" ]; then
      wait "$ping_pid" 2>/dev/null || true # bounded by timeout above
      record "$run" "$pairing" rtt_load_ms "$(median_rtt "$f.ping-load")"
      record "$run" "$pairing" rtt_load_loss_pct "$(ping_loss "$f.ping-load")"
    fi
  done

  record "$run" "$pairing" rss_a_kib "$(hwm_kib "$pidA")"
  record "$run" "$pairing" rss_b_kib "$(hwm_kib "$pidB")"
  # A daemon that restarted a process lost its peak RSS with it: say so.
  [ "$(tree "$pidA" | sort | tr '\n' ' ')" = "$rolesA" ] || echo "bench.sh: $pairing: A's processes changed ($rolesA)" >&2
  [ "$(tree "$pidB" | sort | tr '\n' ' ')" = "$rolesB" ] || echo "bench.sh: $pairing: B's processes changed ($rolesB)" >&2
  if ! kill -0 "$pidA" 2>/dev/null || ! kill -0 "$pidB" 2>/dev/null; then
    echo "bench.sh: $pairing: a daemon exited" >&2
    return 1
  fi
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "bench.sh: pairings:$pairings; $runs runs of ${secs} s per iperf3 run; load average $load_start; results in $out" >&2
for run in $(seq "$runs"); do
  for pairing in $pairings; do
    echo "bench.sh: run $run/$runs: $pairing (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    if ! measure "$run" "$pairing"; then
      echo "bench.sh: run $run: $pairing failed; its logs are in $out/logs" >&2
      mkdir -p "$out/logs"
      cp "$work/$n"-*.log "$work/$n".*.log* "$out/logs/" 2>/dev/null || true
      record "$run" "$pairing" failed 1
    fi
    teardown
  done
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

{
  echo "date=$(date '+%Y-%m-%d %H:%M %Z')"
  echo "command=SECS=$secs RUNS=$runs${PAIRINGS:+ PAIRINGS=\"$PAIRINGS\"} bash scripts/bench.sh"
  echo "secs=$secs"
  echo "runs=$runs"
  echo "cpus=$(nproc)"
  echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
  echo "kernel=$(uname -r)"
  echo "load_start=$load_start"
  echo "load_end=$load_end"
  echo "wgd=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)${WGD_BIN:+ ($WGD_BIN)}"
  echo "debgo=$("$DEBGO" --version | head -1)"
  [ -x "$OGO" ] && echo "ogo=$("$OGO" --version | head -1)"
  [ -x "$BTUN" ] && echo "boringtun=$("$BTUN" --version | head -1)"
  echo "iperf3=$(iperf3 --version | head -1)"
} >"$out/meta.txt"

python3 scripts/bench_report.py "$out"
