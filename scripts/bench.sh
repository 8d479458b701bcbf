#!/usr/bin/env bash
# Benchmark, as root: build a router host with N segments (bridge + VXLAN +
# private router leg each, plus the public side) three ways, each run in a
# fresh sandbox (private network + mount namespace, see sandbox.sh):
#   seed     one ip/iptables process per step, veth peers moved after creation
#   limit    `ip -batch` files (host, and `ip -n NS -batch` in the router
#            namespace) with peers created in place, one `iptables-restore`
#   vxrouter apply from scratch, apply again (no-op), check, destroy
# and the baseline for destroy: `ip netns del` + deleting the links by batch.
# Prints medians of RUNS runs and ratios in one table, and vxrouter's peak RSS.
# A second table has two more shapes:
#   unicast  one segment with N unicast peers (N head-end replication FDB
#            entries) and its router leg; its limit is the same `ip -batch`
#            plus one `bridge -batch` of `fdb append`
#   dhcp     the N-segment host with DHCP on every router leg (N dnsmasq
#            processes); compared with the plain apply at the same N
#   ha       the N-segment host as one of two HA routers ([router.ha]:
#            the HA link, keepalived with the public and N gateway
#            addresses, conntrackd; the peer is absent, so this router
#            takes the addresses itself); compared with the plain apply
#   evpn     the N-segment host with every segment `control = "evpn"` (FRR's
#            zebra and bgpd running in the sandbox, the host its own and only
#            route reflector, so `check` has no session to wait for):
#            VXLAN links with a local address, learning off, bridge ports
#            with neigh_suppress, and the FRR configuration applied through
#            vtysh; compared with the plain apply at the same N
#
#   scripts/bench.sh               N = 1 10 100 1000, RUNS=3
#   RUNS=5 scripts/bench.sh 10 100 custom sizes and runs
#   SKIP_SEED_ABOVE=100            skip seed-style runs above that N (slow)
#   DHCP_ABOVE=100                 no DHCP rows above that N (a dnsmasq a leg)
#   EVPN_ABOVE=1000                no EVPN rows above that N
#   HA_ABOVE=1000                  no HA rows above that N
#   VXROUTER_BIN=path              measure that binary instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/bench.sh needs root (network namespaces)" >&2
  exit 1
fi
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(1 10 100 1000)
RUNS=${RUNS:-3}
SKIP_SEED_ABOVE=${SKIP_SEED_ABOVE:-1000}
DHCP_ABOVE=${DHCP_ABOVE:-100}
EVPN_ABOVE=${EVPN_ABOVE:-1000}
HA_ABOVE=${HA_ABOVE:-1000}

# VXROUTER_BIN: measure that binary (the test suite passes its own build).
if [ -n "${VXROUTER_BIN:-}" ]; then
  VX=$VXROUTER_BIN
else
  scripts/deps.sh >/dev/null
  cargo build --release --locked -q
  VX=$PWD/target/release/vxrouter
fi
WORK=$(mktemp -d /tmp/vxrouter-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# ---- generated inputs, per N ------------------------------------------------
seg_group() { echo "239.1.$(( ($1-1) / 250 )).$(( ($1-1) % 250 + 1 ))"; }
seg_net() { echo "10.$(( 10 + ($1-1) / 250 )).$(( ($1-1) % 250 ))"; }
peer_ip() { echo "10.1.$(( ($1-1) / 250 )).$(( ($1-1) % 250 + 1 ))"; }

generate() {
  local n=$1 d=$WORK/$1 i
  mkdir -p "$d"
  {
    printf '[host]\nname = "bench"\n\n[underlay]\ndevice = "eth0"\n\n'
    for i in $(seq 1 "$n"); do
      printf '[[segment]]\nbridge = "br%d"\nvni = %d\ngroup = "%s"\n\n' "$i" $((1000 + i)) "$(seg_group "$i")"
    done
    printf '[router]\nnamespace = "rt"\n\n[router.public]\nbridge = "br-pu"\nuplink = "eth1"\n'
    printf 'address = "203.0.113.123/24"\ngateway = "203.0.113.1"\nveth = ["rt-pu", "gw-pu"]\n\n'
    for i in $(seq 1 "$n"); do
      printf '[[router.private]]\nbridge = "br%d"\naddress = "%s.1/24"\nveth = ["rt-br%d", "gw-br%d"]\n\n' "$i" "$(seg_net "$i")" "$i" "$i"
    done
  } > "$d/profile.toml"

  # The seed document's way: a process per step, veths moved afterwards.
  {
    echo 'ip netns add rt'
    echo 'ip link add br-pu type bridge'; echo 'ip link set br-pu up'; echo 'ip link set eth1 master br-pu'
    echo 'ip link add rt-pu type veth peer name gw-pu'; echo 'ip link set gw-pu netns rt'
    echo 'ip link set rt-pu master br-pu'; echo 'ip link set rt-pu up'
    echo 'ip netns exec rt ip addr add 203.0.113.123/24 dev gw-pu'; echo 'ip netns exec rt ip link set gw-pu up'
    echo 'ip netns exec rt ip link set lo up'
    for i in $(seq 1 "$n"); do
      echo "ip link add br$i mtu 1450 type bridge"; echo "ip link set br$i up"
      echo "ip link add vxlan$((1000 + i)) mtu 1450 type vxlan id $((1000 + i)) group $(seg_group "$i") dev eth0 dstport 4789"
      echo "ip link set vxlan$((1000 + i)) master br$i"; echo "ip link set vxlan$((1000 + i)) up"
      echo "ip link add rt-br$i mtu 1450 type veth peer name gw-br$i mtu 1450"; echo "ip link set gw-br$i netns rt"
      echo "ip link set rt-br$i master br$i"; echo "ip link set rt-br$i up"
      echo "ip netns exec rt ip addr add $(seg_net "$i").1/24 dev gw-br$i"; echo "ip netns exec rt ip link set gw-br$i up"
    done
    echo 'ip netns exec rt ip route add default via 203.0.113.1'
    echo 'ip netns exec rt sysctl -qw net.ipv4.ip_forward=1'
    for i in $(seq 1 "$n"); do
      echo "ip netns exec rt iptables -t nat -A POSTROUTING -s $(seg_net "$i").0/24 -o gw-pu -j SNAT --to-source 203.0.113.123"
    done
  } > "$d/seed.sh"

  # The practical limit: two batches with peers created in place, one restore.
  {
    echo 'link add br-pu type bridge'; echo 'link set br-pu up'; echo 'link set eth1 master br-pu'
    echo 'link add rt-pu type veth peer name gw-pu netns rt'; echo 'link set rt-pu master br-pu up'
    for i in $(seq 1 "$n"); do
      echo "link add br$i mtu 1450 type bridge"; echo "link set br$i up"
      echo "link add vxlan$((1000 + i)) mtu 1450 master br$i type vxlan id $((1000 + i)) group $(seg_group "$i") dev eth0 dstport 4789"
      echo "link set vxlan$((1000 + i)) up"
      echo "link add rt-br$i mtu 1450 master br$i type veth peer name gw-br$i mtu 1450 netns rt"; echo "link set rt-br$i up"
    done
  } > "$d/host.batch"
  {
    echo 'link set lo up'; echo 'addr add 203.0.113.123/24 dev gw-pu'; echo 'link set gw-pu up'
    for i in $(seq 1 "$n"); do echo "addr add $(seg_net "$i").1/24 dev gw-br$i"; echo "link set gw-br$i up"; done
    echo 'route add default via 203.0.113.1'
  } > "$d/rt.batch"
  {
    echo '*nat'; echo ':VXROUTER-POST - [0:0]'
    for i in $(seq 1 "$n"); do echo "-A VXROUTER-POST -s $(seg_net "$i").0/24 -o gw-pu -j SNAT --to-source 203.0.113.123"; done
    echo '-I POSTROUTING 1 -j VXROUTER-POST'; echo 'COMMIT'
  } > "$d/nat.rules"
  {
    echo 'link set eth1 nomaster'
    for i in $(seq 1 "$n"); do echo "link del vxlan$((1000 + i))"; echo "link del br$i"; done
    echo 'link del br-pu'
  } > "$d/del.batch"

  # Unicast: one segment, N peers.
  {
    printf '[host]\nname = "bench"\n\n[underlay]\ndevice = "eth0"\n\n'
    printf '[[segment]]\nbridge = "br1"\nvni = 1001\npeers = ['
    for i in $(seq 1 "$n"); do printf '%s"%s"' "$([ "$i" = 1 ] || echo ', ')" "$(peer_ip "$i")"; done
    printf ']\n\n[router]\nnamespace = "rt"\n\n[router.public]\nbridge = "br-pu"\nuplink = "eth1"\n'
    printf 'address = "203.0.113.123/24"\ngateway = "203.0.113.1"\nveth = ["rt-pu", "gw-pu"]\n\n'
    printf '[[router.private]]\nbridge = "br1"\naddress = "%s.1/24"\nveth = ["rt-br1", "gw-br1"]\n' "$(seg_net 1)"
  } > "$d/unicast.toml"
  {
    echo 'link add br-pu type bridge'; echo 'link set br-pu up'; echo 'link set eth1 master br-pu'
    echo 'link add rt-pu type veth peer name gw-pu netns rt'; echo 'link set rt-pu master br-pu up'
    echo 'link add br1 mtu 1450 type bridge'; echo 'link set br1 up'
    echo 'link add vxlan1001 mtu 1450 master br1 type vxlan id 1001 local 10.0.0.1 dev eth0 dstport 4789'
    echo 'link set vxlan1001 up'
    echo 'link add rt-br1 mtu 1450 master br1 type veth peer name gw-br1 mtu 1450 netns rt'; echo 'link set rt-br1 up'
  } > "$d/unicast-host.batch"
  for i in $(seq 1 "$n"); do echo "fdb append 00:00:00:00:00:00 dev vxlan1001 dst $(peer_ip "$i")"; done > "$d/unicast-fdb.batch"
  {
    echo 'link set lo up'; echo 'addr add 203.0.113.123/24 dev gw-pu'; echo 'link set gw-pu up'
    echo "addr add $(seg_net 1).1/24 dev gw-br1"; echo 'link set gw-br1 up'; echo 'route add default via 203.0.113.1'
  } > "$d/unicast-rt.batch"
  {
    echo '*nat'; echo ':VXROUTER-POST - [0:0]'
    echo "-A VXROUTER-POST -s $(seg_net 1).0/24 -o gw-pu -j SNAT --to-source 203.0.113.123"
    echo '-I POSTROUTING 1 -j VXROUTER-POST'; echo 'COMMIT'
  } > "$d/unicast-nat.rules"

  # DHCP on every leg: the N-segment profile, each leg with a range.
  : > "$d/dhcp.toml"
  local leg=0
  while IFS= read -r line; do
    echo "$line" >> "$d/dhcp.toml"
    case $line in
      'veth = ["rt-br'*)
        leg=$((leg + 1))
        printf 'dhcp = { range = "%s.100-%s.150", lease = "1h" }\n' "$(seg_net "$leg")" "$(seg_net "$leg")" >> "$d/dhcp.toml" ;;
    esac
  done < "$d/profile.toml"

  # HA: the N-segment profile as router A of a pair whose B (10.0.0.2)
  # does not answer.
  { cat "$d/profile.toml"; printf '[router.ha]\nvrid = 51\npriority = 200\npeer = "10.0.0.2"\n'; } > "$d/ha.toml"

  # EVPN: the N-segment profile with every segment's flood list from BGP
  # EVPN; this host (10.0.0.1, see run) is its only route reflector.
  sed -e 's/^group = .*/control = "evpn"/' \
    -e 's|^device = "eth0"$|device = "eth0"\nlocal = "10.0.0.1"\n\n[evpn]\nasn = 65000\nreflectors = ["10.0.0.1"]\nreflector = true\nlisten = "10.0.0.0/24"|' \
    "$d/profile.toml" > "$d/evpn.toml"
}

# ---- one run: a fresh sandbox, a host with eth0 (underlay) and eth1 (uplink)
run() {
  local method=$1 n=$2 d=$WORK/$2
  scripts/sandbox.sh bash -s "$method" "$n" "$d" "$VX" <<'EOF'
set -euo pipefail
method=$1 n=$2 d=$3 vx=$4
ip link add eth0 type veth peer name sw0; ip link add eth1 type veth peer name sw1
ip addr add 10.0.0.1/24 dev eth0
for l in lo eth0 eth1 sw0 sw1; do ip link set "$l" up; done
# One multicast group per segment: past 20, the kernel needs this raised.
sysctl -qw net.ipv4.igmp_max_memberships=$((n + 100))
now() { date +%s.%N; }
span() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
case $method in
  seed)
    t0=$(now); bash -e "$d/seed.sh"; t1=$(now)
    echo "seed $(span "$t0" "$t1")" ;;
  limit)
    t0=$(now)
    ip netns add rt
    ip -batch "$d/host.batch"
    ip -n rt -batch "$d/rt.batch"
    ip netns exec rt sysctl -qw net.ipv4.ip_forward=1
    ip netns exec rt iptables-restore --noflush < "$d/nat.rules"
    t1=$(now)
    ip netns del rt; ip -batch "$d/del.batch"
    t2=$(now)
    echo "limit $(span "$t0" "$t1")"; echo "limit-destroy $(span "$t1" "$t2")" ;;
  unicast-limit)
    t0=$(now)
    ip netns add rt
    ip -batch "$d/unicast-host.batch"
    bridge -batch "$d/unicast-fdb.batch"
    ip -n rt -batch "$d/unicast-rt.batch"
    ip netns exec rt sysctl -qw net.ipv4.ip_forward=1
    ip netns exec rt iptables-restore --noflush < "$d/unicast-nat.rules"
    t1=$(now)
    echo "unicast-limit $(span "$t0" "$t1")" ;;
  vxrouter|unicast|dhcp|evpn|ha)
    if [ "$method" = evpn ]; then
      # FRR as the lab runs it (lab/src/frr.rs): private /etc/frr,
      # /var/log/frr and /var/tmp in this sandbox's mount namespace, zebra and bgpd
      # stopped when this run ends (also on failure).
      for dir in /etc/frr /var/log/frr /var/lib/frr; do [ ! -d "$dir" ] || mount -t tmpfs -o mode=0755 frr-bench "$dir"; done
      mount -t tmpfs -o mode=1777 tmp-bench /var/tmp # FRR's crash-log directories
      mkdir -p /run/frr
      printf 'zebra=yes\nbgpd=yes\nvtysh_enable=yes\n' > /etc/frr/daemons
      printf 'service integrated-vtysh-config\n' > /etc/frr/vtysh.conf
      printf 'frr defaults traditional\nhostname bench\nlog file /var/log/frr/frr.log\n!\n' > /etc/frr/frr.conf
      chown -R frr:frr /etc/frr /run/frr /var/log/frr
      chmod 640 /etc/frr/frr.conf
      trap 'for p in /run/frr/bgpd.pid /run/frr/zebra.pid; do [ ! -e "$p" ] || kill "$(cat "$p")" 2>/dev/null || :; done' EXIT
      /usr/lib/frr/zebra -d -F traditional -A 127.0.0.1 -s 90000000 2>&1 | grep -v 'Disabling MPLS support' >&2 || :
      /usr/lib/frr/bgpd -d -F traditional -A 127.0.0.1
      until vtysh -b >/dev/null 2>&1; do sleep 0.1; done
    fi
    case $method in
      vxrouter) profile=$d/profile.toml prefix= ;;
      *) profile=$d/$method.toml prefix=$method- ;;
    esac
    rss=0
    for step in apply:apply noop:apply check:check destroy:destroy; do
      name=${step%%:*} cmd=${step#*:}
      t0=$(now)
      /usr/bin/time -f %M -o /tmp/rss "$vx" "$cmd" -q "$profile" >/dev/null
      t1=$(now)
      echo "$prefix$name $(span "$t0" "$t1")"
      r=$(cat /tmp/rss); [ "$r" -gt "$rss" ] && rss=$r
    done
    echo "${prefix}rss-kib $rss" ;;
esac
EOF
}

median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit; if (NR % 2) print v[(NR + 1) / 2]; else printf "%.4f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

RESULTS=$WORK/results
: > "$RESULTS"
for n in "${SIZES[@]}"; do
  generate "$n"
  for r in $(seq 1 "$RUNS"); do
    for m in limit vxrouter seed unicast-limit unicast dhcp evpn ha; do
      if [ "$m" = seed ] && [ "$n" -gt "$SKIP_SEED_ABOVE" ]; then continue; fi
      if [ "$m" = dhcp ] && [ "$n" -gt "$DHCP_ABOVE" ]; then continue; fi
      if [ "$m" = evpn ] && [ "$n" -gt "$EVPN_ABOVE" ]; then continue; fi
      if [ "$m" = ha ] && [ "$n" -gt "$HA_ABOVE" ]; then continue; fi
      echo "N=$n run $r/$RUNS: $m" >&2
      run "$m" "$n" | sed "s/^/$n /" >> "$RESULTS"
    done
  done
done

get() { awk -v n="$1" -v k="$2" '$1 == n && $2 == k { print $3 }' "$RESULTS" | median; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.1f%%", 100 * a / b }'; }

echo
echo "vxrouter benchmark: $(nproc) CPUs, $(uname -r), median of $RUNS runs, seconds"
printf '%6s | %8s %8s %8s | %9s %9s | %8s %7s | %8s %7s | %8s %8s %9s | %8s\n' \
  N seed limit apply apply/lim seed/apply noop noop% check check% destroy lim-del del/lim-del "RSS MiB"
for n in "${SIZES[@]}"; do
  seed=$(get "$n" seed); limit=$(get "$n" limit); apply=$(get "$n" apply); noop=$(get "$n" noop)
  check=$(get "$n" check); destroy=$(get "$n" destroy); ldel=$(get "$n" limit-destroy)
  rss=$(awk -v n="$n" '$1 == n && $2 == "rss-kib" { if ($3 > m) m = $3 } END { printf "%.1f", m / 1024 }' "$RESULTS")
  printf '%6s | %8s %8s %8s | %9s %9s | %8s %7s | %8s %7s | %8s %8s %9s | %8s\n' \
    "$n" "${seed:--}" "$limit" "$apply" "$(ratio "$apply" "$limit")" "$(ratio "$seed" "$apply")" \
    "$noop" "$(pct "$noop" "$apply")" "$check" "$(pct "$check" "$apply")" "$destroy" "$ldel" "$(ratio "$destroy" "$ldel")" "$rss"
done

rss_of() { awk -v n="$1" -v k="$2" '$1 == n && $2 == k { if ($3 > m) m = $3 } END { if (m) printf "%.1f", m / 1024; else print "-" }' "$RESULTS"; }
echo
echo "unicast: one segment with N peers (N FDB entries) and its router leg; dhcp: N legs with DHCP (N dnsmasq);"
echo "evpn: N segments with control = \"evpn\" (FRR running, this host its own reflector);"
echo "ha: the N-segment router as one of an HA pair (HA link, keepalived with N + 1 addresses, conntrackd)"
printf '%-8s %6s | %8s %8s %9s | %8s %7s | %8s %7s | %8s | %8s\n' \
  shape N limit apply apply/lim noop noop% check check% destroy "RSS MiB"
for n in "${SIZES[@]}"; do
  for shape in unicast dhcp evpn ha; do
    apply=$(get "$n" "$shape-apply"); [ -n "$apply" ] || continue
    if [ "$shape" = unicast ]; then limit=$(get "$n" unicast-limit); else limit=$(get "$n" apply); fi
    noop=$(get "$n" "$shape-noop"); check=$(get "$n" "$shape-check"); destroy=$(get "$n" "$shape-destroy")
    printf '%-8s %6s | %8s %8s %9s | %8s %7s | %8s %7s | %8s | %8s\n' \
      "$shape" "$n" "$limit" "$apply" "$(ratio "$apply" "$limit")" "$noop" "$(pct "$noop" "$apply")" \
      "$check" "$(pct "$check" "$apply")" "$destroy" "$(rss_of "$n" "$shape-rss-kib")"
  done
done
echo "(dhcp, evpn, ha: 'limit' is vxrouter's plain apply at the same N, so apply/lim is what DHCP on every leg, EVPN or HA costs)"
