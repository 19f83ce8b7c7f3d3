#!/usr/bin/env bash
# Quickstart demo: a WireGuard tunnel between two network namespaces,
# wgd on one side and wireguard-go on the other, traffic through it, and
# its state as the stock wg(8) tool shows it. Cleans up after itself.
# Run as root: bash scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it creates namespaces)" >&2; exit 1; }
bash .ci/install-deps
cargo build --release -p wgd -p wgctl
WGD=$PWD/target/release/wgd

# wgd refuses to run its roles as root; create its two system users once.
for u in _wgd-net _wgd-hs _wgd-crypto; do
  id -u "$u" >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$u"
done

tag=$$
A=wgdemo-a-$tag B=wgdemo-b-$tag
IFA=wgdA$((tag % 10000)) IFB=wgdB$((tag % 10000))
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
  rm -f "/var/run/wireguard/$IFB.sock"
}
trap cleanup EXIT

ip netns add "$A"; ip netns add "$B"
ip -n "$A" link set lo up; ip -n "$B" link set lo up
ip link add veth-$tag netns "$A" type veth peer name veth-$tag netns "$B"
ip -n "$A" addr add 192.168.241.1/24 dev veth-$tag; ip -n "$A" link set veth-$tag up
ip -n "$B" addr add 192.168.241.2/24 dev veth-$tag; ip -n "$B" link set veth-$tag up

ka=$(wg genkey); kb=$(wg genkey)
pa=$(echo "$ka" | wg pubkey); pb=$(echo "$kb" | wg pubkey)
conf=$(mktemp); chmod 600 "$conf"
cat >"$conf" <<CONF
[Interface]
PrivateKey = $ka
ListenPort = 51820

[Peer]
PublicKey = $pb
AllowedIPs = 10.77.0.2/32
Endpoint = 192.168.241.2:51820
CONF

echo "== wgd $IFA in $A (four processes, key held by the crypto role)"
ip netns exec "$A" "$WGD" -f -c "$conf" "$IFA" & pids+=($!)
for _ in $(seq 50); do [ -S "/var/run/wireguard/$IFA.sock" ] && break; sleep 0.1; done
rm -f "$conf"
ip -n "$A" addr add 10.77.0.1/24 dev "$IFA"; ip -n "$A" link set "$IFA" up

echo "== wireguard-go $IFB in $B"
ip netns exec "$B" env WG_PROCESS_FOREGROUND=1 wireguard-go "$IFB" & pids+=($!)
for _ in $(seq 50); do [ -S "/var/run/wireguard/$IFB.sock" ] && break; sleep 0.1; done
ip netns exec "$B" wg set "$IFB" private-key <(echo "$kb") listen-port 51820 \
  peer "$pa" allowed-ips 10.77.0.1/32 endpoint 192.168.241.1:51820
ip -n "$B" addr add 10.77.0.2/24 dev "$IFB"; ip -n "$B" link set "$IFB" up

echo "== ping through the tunnel"
ip netns exec "$A" ping -c 3 -i 0.2 -W 2 10.77.0.2
echo "== processes of wgd"
ps -o pid,user,args --ppid "${pids[0]}" -p "${pids[0]}"
echo "== wg show $IFA (stock wg(8) against wgd: no interface key, it is write-only)"
ip netns exec "$A" wg show "$IFA"
echo "== wgctl show $IFA (wgd's own CLI: the public key, learnt from the crypto role)"
ip netns exec "$A" "$PWD/target/release/wgctl" show "$IFA"
