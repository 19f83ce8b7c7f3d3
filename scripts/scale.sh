#!/usr/bin/env bash
# Scale, wgd against wireguard-go in the same run: for each size, a fresh
# interface in a namespace of its own, `wg setconf` of N peers (each with
# one /32 and, with ALLOWED=M, one peer holding M more prefixes, IPv4 and
# IPv6 mixed), then `wg show dump`, `wg syncconf` of the same file with one
# peer's allowed IP changed, and `wgctl show --json`. Prints the seconds
# each took, the peak resident memory (VmHWM) of all the implementation's
# processes, and whether it survived. (Handshakes per second at scale:
# scripts/storm.sh.)
#
# Release build; run as root:
#   bash scripts/scale.sh [N ...]            default: 1000 10000 50000
#   ALLOWED=1000000 bash scripts/scale.sh 10  one peer with a million prefixes
#   IMPLS="wgd wireguard-go" (default) — add "anchor" for the offload
#   wireguard-go of shared/anchors
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "scale.sh: run as root" >&2; exit 1; }
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(1000 10000 50000)
allowed=${ALLOWED:-0}
impls=${IMPLS:-"wgd wireguard-go"}
anchor=$PWD/../shared/anchors/wireguard-go

bash .ci/install-deps >/dev/null
cargo build --release -q -p wgd -p wgctl
WGD=$PWD/target/release/wgd
WGCTL=$PWD/target/release/wgctl
for u in _wgd _wgd-crypto; do
  id -u "$u" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done

tag=$$
work=$(mktemp -d)
pid=
ns=
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# conf N M: a wg(8) file with N peers, the first also holding M prefixes.
conf() {
  python3 - "$1" "$2" <<'EOF'
import base64, ipaddress, os, sys
n, m = int(sys.argv[1]), int(sys.argv[2])
key = lambda: base64.b64encode(os.urandom(32)).decode()
out = [f"[Interface]\nPrivateKey = {key()}\nListenPort = 0\n"]
for i in range(n):
    ips = [f"{ipaddress.IPv4Address(0x0a000000 + i)}/32"]
    if i == 0 and m:
        v4 = m // 2
        ips += [f"{ipaddress.IPv4Address(0x64000000 + j * 4)}/30" for j in range(v4)]
        ips += [f"{ipaddress.IPv6Address((0xfd01 << 112) + (j << 64))}/64" for j in range(m - v4)]
    out.append(f"[Peer]\nPublicKey = {key()}\nAllowedIPs = {', '.join(ips)}\n")
sys.stdout.write("\n".join(out))
EOF
}

# hwm_kib PID: peak resident memory of PID and its children, in KiB.
hwm_kib() {
  local total=0 c
  for c in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/^VmHWM/{print $2}' "/proc/$c/status" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

# seconds CMD...: wall time of a command, its output discarded.
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$@" >/dev/null 2>>"$work/errors"; then
    echo fail
    return 0
  fi
  t1=$(date +%s.%N)
  printf '%.2f\n' "$(echo "$t1 - $t0" | bc)"
}

run() { # impl n -> "setconf_s dump_s peak_mib peers_shown"
  local impl=$1 n=$2 ifn
  ifn=sc${impl:0:2}$((tag % 10000))$n
  ifn=${ifn:0:15}
  ns=scale-$tag
  ip netns add "$ns"
  case $impl in
  wgd) ip netns exec "$ns" env LOG_LEVEL=error "$WGD" -f "$ifn" 2>"$work/log" & ;;
  wireguard-go) ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error wireguard-go "$ifn" >"$work/log" 2>&1 & ;;
  anchor) ip netns exec "$ns" env WG_PROCESS_FOREGROUND=1 LOG_LEVEL=error "$anchor" "$ifn" >"$work/log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 200); do [ -S "/var/run/wireguard/$ifn.sock" ] && break; sleep 0.05; done
  local s d shown y j
  s=$(seconds ip netns exec "$ns" wg setconf "$ifn" "$work/conf")
  d=$(seconds ip netns exec "$ns" wg show "$ifn" dump)
  shown=$( (ip netns exec "$ns" wg show "$ifn" dump 2>/dev/null || true) | tail -n +2 | wc -l)
  y=$(seconds ip netns exec "$ns" wg syncconf "$ifn" "$work/conf2")
  j=$(seconds ip netns exec "$ns" "$WGCTL" show "$ifn" --json)
  local peak alive=yes
  peak=$(hwm_kib "$pid")
  kill -0 "$pid" 2>/dev/null || alive=no
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=
  ip netns del "$ns"
  ns=
  printf '%s %s %s %s %s %s %s\n' "$s" "$d" "$y" "$j" "$((peak / 1024))" "$shown" "$alive"
}

printf '%-13s %8s %10s %9s %9s %10s %8s %9s\n' impl peers allowed setconf_s dump_s syncconf_s wgctl_s peak_MiB
for n in "${sizes[@]}"; do
  conf "$n" "$allowed" >"$work/conf"
  # The same configuration with one allowed IP of the first peer changed.
  sed '0,/^AllowedIPs = 10\.0\.0\.0\/32/s//AllowedIPs = 10.255.255.0\/32/' "$work/conf" >"$work/conf2"
  for impl in $impls; do
    read -r s d y j peak shown alive < <(run "$impl" "$n")
    note=""
    [ "$shown" = "$n" ] || note="  (dump shows $shown peers)"
    [ "$alive" = yes ] || note="$note  (the daemon died)"
    printf '%-13s %8s %10s %9s %9s %10s %8s %9s%s\n' "$impl" "$n" "$allowed" "$s" "$d" "$y" "$j" "$peak" "$note"
  done
done
