#!/usr/bin/env bash
# Measures the generated EVPN lab (issue 16's scale cell, docs/performance.md):
#   scripts/sandbox.sh scripts/evpn-scale.sh N [VMS_PER_HOST]
# (MATRIX=0 skips the lab's connectivity matrix, whose pairs grow with the
# square of the VMs: ~3600 pairs at 60 VMs, 5-6 min here.)
# Builds scripts/gen-evpn-lab.sh's lab of N hosts, runs its matrix (a failed
# matrix fails the script, after the measurements), then
#  1. converged: stops FRR on every host, starts it on every host at once
#     (zebra + bgpd, configuration from frr.conf with `vtysh -b`, as the lab
#     and a reboot do) and waits until every host has every other host in the
#     flood list of each of its 10 segments and every other host's VMs as
#     extern_learn FDB entries; prints the time from the start to the last
#     host converged;
#  2. new MAC: gives one VM a MAC no host has seen, waits on every other
#     host for it as an extern_learn entry and prints the time from the VM's
#     first packet to the last host having it;
#  3. FRR memory: VmRSS of zebra + bgpd per host (min/mean/max).
# Needs the sandbox (network namespaces), a debug build of vxrouter and
# vxrouter-lab, and FRR installed (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?usage: evpn-scale.sh N [VMS_PER_HOST]}
per=${2:-2}
if [ "$(readlink /proc/1/ns/net)" = "$(readlink /proc/self/ns/net)" ]; then
  echo "evpn-scale.sh: run it inside scripts/sandbox.sh" >&2
  exit 1
fi
lab=$(scripts/gen-evpn-lab.sh "$n" "$per")
LAB=target/debug/vxrouter-lab
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
hosts=()
for i in $(seq 1 "$n"); do hosts+=("$(printf 'h%02d' "$i")"); done
trap '$LAB -q down "$lab" >/dev/null 2>&1 || :' EXIT

t=$(now)
$LAB -q up "$lab"
echo "lab up: $(ms "$t" "$(now)") ms ($n hosts, $((n * per)) VMs)"

# Every host converged: 10 flood lists of n-1 VTEPs, and the other hosts' VMs
# as extern_learn entries. Prints the time it got there.
converged_script() {
  local others=$1
  cat <<EOF
i=0
while :; do
  f=\$(bridge fdb show | grep -c '^00:00:00:00:00:00 dev vxlan.* dst' || :)
  m=\$(bridge fdb show | grep -v '^00:00:00:00:00:00' | grep -c 'extern_learn' || :)
  [ "\$f" -ge $((10 * (n - 1))) ] && [ "\$m" -ge $others ] && break
  i=\$((i + 1))
  if [ "\$i" -gt 3000 ]; then echo "\$(hostname): not converged after 150 s: \$f flood entries, \$m remote MACs" >&2; echo 1e12; exit 1; fi
  sleep 0.05
done
date +%s.%N
EOF
}

wait_all() { # $1: output dir; prints the latest time among hosts
  local out=$1 h
  for h in "${hosts[@]}"; do
    $LAB exec "$lab" "$h" -- sh -c "$(converged_script $(((n - 1) * per)))" >"$out/$h" &
  done
  wait
  sort -n "$out"/* | tail -1
}

tmp=$(mktemp -d)
mkdir -p "$tmp/first" "$tmp/restart" "$tmp/mac"
t=$(now)
last=$(wait_all "$tmp/first")
echo "first convergence after lab up: $(ms "$t" "$last") ms"

matrix_failed=0
if [ "${MATRIX:-1}" = 1 ]; then
  t=$(now)
  if $LAB check "$lab" >"$tmp/check.txt" 2>&1; then
    echo "matrix: pass ($(ms "$t" "$(now)") ms): $(tail -1 "$tmp/check.txt")"
  else
    matrix_failed=1
    echo "matrix: FAIL ($(ms "$t" "$(now)") ms)"
    grep -v ' ✓' "$tmp/check.txt" | tail -40
  fi
else
  echo "matrix: skipped (MATRIX=0)"
fi

# 1. FRR stopped everywhere, then started everywhere at once.
for h in "${hosts[@]}"; do
  $LAB exec "$lab" "$h" -- sh -c 'for d in bgpd zebra; do kill $(cat /run/frr/$d.pid); done
    while [ -e /run/frr/zebra.pid ] && kill -0 $(cat /run/frr/zebra.pid) 2>/dev/null; do sleep 0.05; done' &
done
wait
left=0
for h in "${hosts[@]}"; do
  c=$($LAB exec "$lab" "$h" -- sh -c "bridge fdb show | grep -c extern_learn || :")
  left=$((left + c))
done
echo "extern_learn entries left with FRR stopped everywhere: $left"
t0=$(now)
for h in "${hosts[@]}"; do
  $LAB exec "$lab" "$h" -- sh -c '/usr/lib/frr/zebra -d -F traditional -A 127.0.0.1 -s 90000000 &&
    /usr/lib/frr/bgpd -d -F traditional -A 127.0.0.1 && until vtysh -b >/dev/null 2>&1; do sleep 0.1; done' 2>&1 |
    grep -v 'Disabling MPLS support' &
done
wait
started=$(now)
last=$(wait_all "$tmp/restart")
echo "FRR started on all $n hosts in $(ms "$t0" "$started") ms; converged $(ms "$t0" "$last") ms after the start"
ests=0
for h in "${hosts[@]}"; do
  c=$($LAB exec "$lab" "$h" -- vtysh -c 'show bgp l2vpn evpn summary json' | grep -c '"state":"Established"' || :)
  ests=$((ests + c))
done
echo "established sessions (both ends counted): $ests (want $((2 * (2 * n - 3))))"

# 2. A MAC no host has seen, from its first packet to every host.
vm=vh03-0
mac=02:ee:00:00:00:03
gw=$(grep -A5 "name = \"$vm\"" "$lab" | sed -n 's/^gateway = "\(.*\)"/\1/p')
# IPv6 off first: a link coming up would send neighbour discovery at once,
# before the measured first packet.
$LAB exec "$lab" "$vm" -- sh -c "sysctl -qw net.ipv6.conf.eth0.disable_ipv6=1 && ip link set eth0 down &&
  ip link set eth0 address $mac && ip link set eth0 up"
sleep 1
seen=0
for h in "${hosts[@]}"; do
  c=$($LAB exec "$lab" "$h" -- sh -c "bridge fdb show | grep -c '^$mac ' || :")
  seen=$((seen + c))
done
if [ "$seen" != 0 ]; then echo "new MAC: $mac already in $seen FDB entries before its first packet; not measured" >&2; exit 1; fi
for h in "${hosts[@]}"; do
  [ "$h" = h03 ] && continue
  $LAB exec "$lab" "$h" -- sh -c "until bridge fdb show | grep -q '^$mac .*extern_learn'; do sleep 0.01; done; date +%s.%N" \
    >"$tmp/mac/$h" &
done
sleep 2
t0=$(now)
$LAB exec "$lab" "$vm" -- ping -c 1 -W 1 "$gw" >/dev/null || :
wait
last=$(sort -n "$tmp/mac"/* | tail -1)
echo "new MAC ($vm, $mac) on all $((n - 1)) other hosts $(ms "$t0" "$last") ms after its first packet"

# 3. FRR memory per host.
for h in "${hosts[@]}"; do
  $LAB exec "$lab" "$h" -- sh -c 'for d in bgpd zebra; do grep VmRSS /proc/$(cat /run/frr/$d.pid)/status; done' |
    awk '{ s += $2 } END { print s }'
done | awk '{ if (NR == 1 || $1 < min) min = $1; if ($1 > max) max = $1; sum += $1 }
  END { printf "FRR RSS (zebra+bgpd) per host: min %.1f MB, mean %.1f MB, max %.1f MB\n", min/1024, sum/NR/1024, max/1024 }'
rm -rf "$tmp"
if [ "$matrix_failed" = 1 ]; then
  echo "evpn-scale.sh: the matrix failed (above)" >&2
  exit 1
fi
