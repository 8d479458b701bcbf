#!/usr/bin/env bash
# Data-path benchmark, as root: the seed lab plus a second VM on host-a's
# bridge, then iperf3 throughput VM→VM on one bridge (the baseline),
# VM→VM across hosts over VXLAN, and VM→internet through the router's NAT,
# in paired rounds (the machine swings ±15 % between runs: compare ratios),
# and the path MTU: a full-size `ping -M do` across VXLAN at the segment MTU
# works and one byte more does not. Runs in a sandbox (see sandbox.sh).
#
#   scripts/datapath.sh            ROUNDS=3, 5 s per iperf3 run
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/datapath.sh needs root (network namespaces)" >&2
  exit 1
fi
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
scripts/deps.sh >/dev/null
cargo build --release --locked -q
VX=$PWD/target/release/vxrouter
WORK=$(mktemp -d /tmp/vxrouter-datapath.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

sed -e 's/name = "seed"/name = "datapath"/' -e "s#\.\./host-#$PWD/profiles/host-#" profiles/lab/seed.toml > "$WORK/lab.toml"
cat >> "$WORK/lab.toml" <<'EOF'

[[vm]]
name = "vm-a2"
host = "host-a"
bridge = "br-pr"
address = "192.168.10.11/24"
gateway = "192.168.10.3"
EOF

scripts/sandbox.sh bash -s "$VX" "$WORK/lab.toml" "$ROUNDS" "$SECONDS_PER_RUN" <<'EOF'
set -euo pipefail
vx=$1 lab=$2 rounds=$3 secs=$4
x() { "$vx" lab exec "$lab" "$@"; }
"$vx" lab up -q "$lab"
trap '"$vx" lab down -q "$lab"' EXIT
gbps() { # node target
  x "$1" -- iperf3 -c "$2" -t "$secs" -J 2>/dev/null | awk -F'[:,]' '/"sum_received"/ { r = 1 } r && /"bits_per_second"/ { printf "%.2f", $2 / 1e9; exit }'
}
declare -A total
for r in $(seq 1 "$rounds"); do
  # One-shot servers (-1): each serves one test, so start them every round.
  for node in vm-a2 vm-b server; do x "$node" -- iperf3 -s -D -1 >/dev/null 2>&1 || true; done
  sleep 0.3
  same=$(gbps vm-a 192.168.10.11); across=$(gbps vm-a 192.168.10.20); inet=$(gbps vm-b 198.51.100.10)
  echo "round $r: same bridge $same, across hosts $across, to the internet (from host-b, NAT) $inet Gbit/s"
  total[same]+=" $same"; total[across]+=" $across"; total[inet]+=" $inet"
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
s=$(echo "${total[same]}" | median); a=$(echo "${total[across]}" | median); i=$(echo "${total[inet]}" | median)
echo
echo "data path (iperf3 TCP, median of $rounds paired rounds, Gbit/s)"
printf '  %-44s %7s %7s\n' path Gbit/s ratio
printf '  %-44s %7s %7s\n' "VM→VM, one bridge on one host (baseline)" "$s" 1.00
printf '  %-44s %7s %7.2f\n' "VM→VM across hosts (VXLAN)" "$a" "$(awk -v a="$a" -v s="$s" 'BEGIN { print a / s }')"
printf '  %-44s %7s %7.2f\n' "VM→internet (VXLAN to the router, SNAT)" "$i" "$(awk -v a="$i" -v s="$s" 'BEGIN { print a / s }')"
# The segment MTU as vxrouter set it on host-b's bridge (netlink, not /sys:
# sysfs shows the namespace it was mounted in, not the caller's).
mtu=$(x host-b -- ip -o link show dev br-pr | sed -n 's/.* mtu \([0-9]*\) .*/\1/p')
full=$((mtu - 28))
echo
if x vm-b -- ping -q -c 1 -W 2 -M do -s "$full" 192.168.10.10 >/dev/null; then
  echo "path MTU: ping -M do -s $full ($mtu-byte packets) vm-b → vm-a across VXLAN: ok"
else
  echo "path MTU: ping -M do -s $full ($mtu-byte packets) vm-b → vm-a across VXLAN: FAILED"; exit 1
fi
if x vm-b -- ping -q -c 1 -W 2 -M do -s $((full + 1)) 192.168.10.10 >/dev/null 2>&1; then
  echo "path MTU: one byte more ($((mtu + 1))-byte packets) got through (fragmented): FAILED"; exit 1
else
  echo "path MTU: one byte more ($((mtu + 1))-byte packets) is refused (no fragmentation): ok"
fi
EOF
