#!/usr/bin/env bash
# Handshake reboot storm (issue 10, part 4), wgd against wireguard-go in
# the same run.
#
# For each implementation: a server namespace and a client namespace
# joined by a veth; the implementation in the server namespace (wgd runs
# as its real four processes, in the foreground so that it is stopped by
# its pid), `wg setconf` of PEERS peers (keys derived from SEED by the
# `storm` tool, which knows the stormers' private keys); then `storm
# client` in the client namespace makes one boringtun peer per stormer,
# each with its own source address (SOURCES of them, on the client's lo,
# routed by the server through the veth), sends every first initiation at
# once, and drives boringtun's timers: cookie replies are consumed and
# answered with MAC2 at the next retry, retries come every REKEY_TIMEOUT
# plus the whitepaper's jitter, and a peer gives up after 90 s. A
# handshake counts when boringtun accepts the response.
#
# Also runs the single-process bound: the same handshakes (responder side)
# through wg_handshake::Core + wg_crypto::KeyStore in one thread, with the
# same number of configured peers; "ratio" is the busy rate over it.
#
# Release build; run as root:
#   bash scripts/storm.sh
#   PEERS=10000 STORMERS=1000 SOURCES=1000 IMPLS="wgd wireguard-go" \
#   DEADLINE=120 JITTER=1 SEED=1 bash scripts/storm.sh
#   WGD_BIN=/path/to/other/wgd bash scripts/storm.sh   compare another build
#
# Columns: completed (of stormers) within the deadline; s_last, seconds
# from the first initiation to the last completion; hs/s, completed over
# s_last; busy hs/s, the rate while the server had a backlog (completions
# less than 50 ms apart; the retry timers' idle time left out); 1st, done
# at the first initiation; cookies, cookie replies the clients accepted
# (wgd's own counter in brackets where wgd_get can be read); lost,
# initiations that got no answer at all (dropped in the server's queues);
# tries, most initiations one peer needed; ratio, busy
# hs/s over the single-process bound; srv, peers the server itself shows
# a handshake for (`wg show latest-handshakes`; "-" where it cannot be
# asked); setconf_s, `wg setconf` time; alive, the server still runs (for
# wgd: with its three roles).
#
# wgd_get (and `wg show`) collects every peer in one IPC message, which
# ends wgd beyond ~1,000 peers until issue 10's paging lands; the script
# asks for wgd's counters only at PEERS <= WGD_GET_MAX (default 1000).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "storm.sh: run as root" >&2; exit 1; }
peers=${PEERS:-10000}
stormers=${STORMERS:-1000}
sources=${SOURCES:-$stormers}
impls=${IMPLS:-"wgd wireguard-go"}
deadline=${DEADLINE:-120}
seed=${SEED:-1}
wgd_get_max=${WGD_GET_MAX:-1000}
jitter_flag=
[ "${JITTER:-1}" = 0 ] && jitter_flag=--no-jitter
port=51820

bash .ci/install-deps >/dev/null
cargo build --release -q -p wgd -p wgd-tests --bin wgd --bin storm
WGD=${WGD_BIN:-$PWD/target/release/wgd}
STORM=$PWD/target/release/storm
for u in _wgd _wgd-crypto; do
  id -u "$u" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done

tag=$(($$ % 1000000))
work=$(mktemp -d)
pids=()
namespaces=()
cleanup() {
  local p
  for p in "${pids[@]}"; do stop_pid "$p"; done
  for n in "${namespaces[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  rm -rf "$work"
}
# stop_pid PID: SIGTERM, then SIGKILL after 5 s; only our own children.
stop_pid() {
  kill "$1" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_sock() { # ifname pid
  for _ in $(seq 200); do
    [ -S "/var/run/wireguard/$1.sock" ] && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# wgd_counters IFNAME: wgd's handshake counters (wgd_get=1), one line.
wgd_counters() {
  python3 - "/var/run/wireguard/$1.sock" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(b"wgd_get=1\n\n")
buf = b""
while not buf.endswith(b"\n\n"):
    d = s.recv(65536)
    if not d:
        break
    buf += d
keep = ("handshake_", "drop_", "ipc_", "errno")
kv = [l for l in buf.decode(errors="replace").splitlines() if l.startswith(keep)]
print(" ".join(kv))
EOF
}

# cpu_ticks PID: "name=ticks ..." of user+system CPU time for PID and its
# children (wgd's roles by role name), in clock ticks.
cpu_ticks() {
  local p name
  for p in "$1" $(pgrep -P "$1" || true); do
    name=$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | sed -n 's/.*--role \([a-z]*\).*/\1/p')
    [ -n "$name" ] || name=main
    awk -v n="$name" '{ sub(/^.*\) /, ""); print n "=" $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true
  done | tr '\n' ' '
}

# cpu_delta BEFORE AFTER: "name=seconds ... total=seconds".
cpu_delta() {
  python3 - "$1" "$2" "$(getconf CLK_TCK)" <<'EOF'
import sys
parse = lambda s: dict((kv.split("=")[0], int(kv.split("=")[1])) for kv in s.split())
a, b, hz = parse(sys.argv[1]), parse(sys.argv[2]), int(sys.argv[3])
d = {k: (b[k] - a.get(k, 0)) / hz for k in b}
print(" ".join(f"{k}={v:.2f}" for k, v in d.items()) + f" total={sum(d.values()):.2f}")
EOF
}

# udp_rcvbuf_errors NS: datagrams the kernel dropped for a full socket
# receive buffer in namespace NS (all UDP sockets there are the server's).
udp_rcvbuf_errors() {
  ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 1; i <= NF; i++) c[$i] = i; h = 1 } else print $c["RcvbufErrors"] }' /proc/net/snmp
}

field() { # key line
  local kv
  for kv in $2; do [ "${kv%%=*}" = "$1" ] && { echo "${kv#*=}"; return; }; done
  echo -
}

"$STORM" conf --seed "$seed" --peers "$peers" --stormers "$stormers" --port "$port" >"$work/peers.conf"
chmod 600 "$work/peers.conf"

echo "storm: $peers peers, $stormers stormers from $sources source addresses, deadline ${deadline}s; load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
bound=$("$STORM" bound --seed "$seed" --peers "$peers" --stormers "$stormers" --rounds 3)
bound_scan=$("$STORM" bound --seed "$seed" --peers "$peers" --stormers "$stormers" --rounds 3 --scan-timers)
bound_rate=$(field bound_hs_per_s "$bound")
echo "single-process bound: $bound_rate handshakes/s; with the handshake loop's per-event timer scan over $peers peers: $(field bound_hs_per_s "$bound_scan")" >&2

n=0
run() { # impl -> appends a table row to $work/rows
  local impl=$1 short S C ifn pid t0 t1 setconf_s rc=0 line alive counters
  n=$((n + 1))
  short=${impl:0:1}
  S=storm-$tag-$n-s
  C=storm-$tag-$n-c
  ifn=wst$tag$n$short
  [ -e "/var/run/wireguard/$ifn.sock" ] && { echo "storm.sh: $ifn.sock exists" >&2; return 1; }
  ip netns add "$S"; namespaces+=("$S")
  ip netns add "$C"; namespaces+=("$C")
  ip -n "$S" link set lo up; ip -n "$C" link set lo up
  ip link add "stv${tag}${n}a" netns "$S" type veth peer name "stv${tag}${n}b" netns "$C"
  ip -n "$S" addr add 10.97.0.1/24 dev "stv${tag}${n}a"; ip -n "$S" link set "stv${tag}${n}a" up
  ip -n "$C" addr add 10.97.0.2/24 dev "stv${tag}${n}b"; ip -n "$C" link set "stv${tag}${n}b" up
  ip -n "$S" route add 10.98.0.0/16 via 10.97.0.2
  "$STORM" addrs --sources "$sources" --dev lo | ip -n "$C" -batch -

  if [ "$impl" = wgd ]; then
    ip netns exec "$S" env LOG_LEVEL=error "$WGD" -f "$ifn" >"$work/$impl.log" 2>&1 &
  else
    ip netns exec "$S" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go "$ifn" >"$work/$impl.log" 2>&1 &
  fi
  pid=$!
  pids+=("$pid")
  wait_sock "$ifn" "$pid" || { echo "storm.sh: $impl did not start:" >&2; cat "$work/$impl.log" >&2; return 1; }
  t0=$(date +%s.%N)
  ip netns exec "$S" timeout 120 wg setconf "$ifn" "$work/peers.conf"
  t1=$(date +%s.%N)
  setconf_s=$(printf '%.2f' "$(echo "$t1 - $t0" | bc)")
  ip -n "$S" link set "$ifn" up

  local cpu0 cpu udp0 udp_drops
  cpu0=$(cpu_ticks "$pid")
  udp0=$(udp_rcvbuf_errors "$S")
  ip netns exec "$C" timeout $((deadline + 30)) "$STORM" client --seed "$seed" --peers "$peers" \
    --stormers "$stormers" --sources "$sources" --server "10.97.0.1:$port" --deadline "$deadline" \
    --timeline --timeline-ms "${TIMELINE_MS:-1000}" $jitter_flag >"$work/$impl.out" 2>"$work/$impl.err" || rc=$?
  line=$(cat "$work/$impl.out")
  cpu=$(cpu_delta "$cpu0" "$(cpu_ticks "$pid")")
  udp_drops=$(($(udp_rcvbuf_errors "$S") - udp0))
  alive=yes
  kill -0 "$pid" 2>/dev/null || alive="no (exited)"
  if [ "$impl" = wgd ] && [ "$alive" = yes ]; then
    local roles
    roles=$(pgrep -c -P "$pid" || true)
    [ "$roles" = 3 ] || alive="no ($roles of 3 roles)"
  fi
  counters=
  server_seen=-
  if [ "$alive" = yes ] && { [ "$impl" != wgd ] || [ "$peers" -le "$wgd_get_max" ]; }; then
    # Peers the server itself saw complete (a responder completes when
    # the initiator's first packet, here its keepalive, arrives); the last
    # keepalives may still be in flight, so look for up to 2 s.
    local want
    want=$(field completed "$(cat "$work/$impl.out")")
    for _ in $(seq 10); do
      server_seen=$(ip netns exec "$S" timeout 30 wg show "$ifn" latest-handshakes | awk '$2 != 0' | wc -l)
      [ "$server_seen" = "$want" ] && break
      sleep 0.2
    done
    [ "$impl" = wgd ] && counters=$(wgd_counters "$ifn" || true)
  fi
  echo "== $impl: client exit $rc; $line" >&2
  sed 's/^/   /' "$work/$impl.err" >&2
  [ -n "$counters" ] && echo "   wgd_get: $counters" >&2
  echo "   server CPU seconds during the storm: $cpu; UDP receive-buffer drops: $udp_drops" >&2
  [ "$alive" = yes ] || { echo "   $impl log:" >&2; tail -20 "$work/$impl.log" >&2; }
  local cookies busy ratio
  cookies=$(field cookie_replies "$line")
  [ -n "$counters" ] && cookies="$cookies [$(field handshake_cookie_replies "$counters")]"
  busy=$(field busy_hs_per_s "$line")
  ratio=-
  [ "$busy" != - ] && ratio=$(python3 -c "print(f'{$busy/$bound_rate:.2f}')")
  printf '%-13s %6s %8s %9s %7s %7s %9s %5s %12s %6s %6s %7s %6s %9s %s\n' "$impl" "$peers" "$stormers" \
    "$(field completed "$line")" "$(field seconds_to_last "$line")" "$(field hs_per_s "$line")" \
    "$busy" "$(field first_try "$line")" "$cookies" "$(field unanswered "$line")" "$(field max_attempts "$line")" \
    "$ratio" "$server_seen" "$setconf_s" "$alive" >>"$work/rows"

  stop_pid "$pid"
  pids=()
  ip netns del "$S"; ip netns del "$C"
  namespaces=()
}

for impl in $impls; do run "$impl"; done
printf '%-13s %6s %8s %9s %7s %7s %9s %5s %12s %6s %6s %7s %6s %9s %s\n' impl peers stormers completed s_last hs/s \
  'busy hs/s' 1st cookies lost tries ratio srv setconf_s alive
cat "$work/rows"
echo "single-process bound (wgd's Core + KeyStore, one thread, $peers peers): $bound_rate handshakes/s"
