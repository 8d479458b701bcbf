#!/usr/bin/env bash
# End-to-end proof of the lab guest (guest-image.sh + guest-run.sh), run in a
# private network + mount namespace (scripts/sandbox.sh):
#   br0 192.168.10.1/24, MTU 1450, with tap0 in it; dnsmasq on br0 hands out
#   192.168.10.100-200 with option 26 (MTU) = 1450; a TCP echo server on
#   192.168.10.1:7000.
#   Guest 1 (static 192.168.10.20/24): one ping to the gateway.
#   Guest 2 (DHCP): leases an address with MTU 1450, pings the gateway, a DF
#   ping with 1422 bytes of payload (1450 - 28) passes and one with 1423 fails,
#   TCP echo to the gateway answers.
# Prints the timings; exit 0 on success. Every daemon is stopped by a trap.
# Usage: scripts/guest-selftest.sh   (as root)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ "${VXR_SELFTEST_SANDBOXED:-}" != 1 ]; then
  # Build (or reuse) the image first: the sandbox has no network to fetch in.
  "$here/guest-image.sh" >/dev/null
  VXR_SELFTEST_SANDBOXED=1 exec "$here/sandbox.sh" "$0" "$@"
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
fail() { echo "guest-selftest: FAIL: $*" >&2; exit 1; }

# --- the segment: bridge at MTU 1450 with the guest's tap in it ------------
ip link set lo up
ip link add br0 type bridge
ip link set br0 mtu 1450
ip addr add 192.168.10.1/24 dev br0
ip link set br0 up
ip tuntap add dev tap0 mode tap
# The bridge's MTU follows the smallest port unless set by hand; set both.
ip link set tap0 mtu 1450
ip link set tap0 master br0 up

# dnsmasq: DHCP only (port=0: no DNS), foreground so we own its pid.
dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
  --interface=br0 --bind-interfaces --except-interface=lo \
  --dhcp-range=192.168.10.100,192.168.10.200,255.255.255.0,1h \
  --dhcp-option=option:router,192.168.10.1 \
  --dhcp-option=option:mtu,1450 \
  --dhcp-leasefile="$tmp/leases" --pid-file="$tmp/dnsmasq.pid" \
  --log-facility="$tmp/dnsmasq.log" --log-dhcp &
# (dnsmasq pings an address before offering it: ~3 s of the DHCP guest's time.)
pids+=($!)

# TCP echo server on the gateway (the cached static busybox has nc -ll -e;
# its nc has no -s, so it listens on all of this namespace's addresses).
busybox=$(dirname "$("$here/guest-image.sh" | awk '$1 == "kernel" {print $2}')")/busybox
"$busybox" nc -ll -p 7000 -e /bin/cat >/dev/null 2>&1 &
pids+=($!)
sleep 0.3
kill -0 "${pids[0]}" || fail "dnsmasq did not start: $(cat "$tmp/dnsmasq.log" 2>/dev/null)"

# --- guest 1: static address, one ping --------------------------------------
cat > "$tmp/static.sh" <<'EOF'
check_ping gw 192.168.10.1
EOF
rc=0
"$here/guest-run.sh" --tap tap0 --mac 52:54:00:00:10:20 \
  --net static,192.168.10.20/24,192.168.10.1,1450 \
  --script "$tmp/static.sh" --serial "$tmp/static.log" --quiet --timeout 60 \
  2> "$tmp/static.err" || rc=$?
cat "$tmp/static.err" >&2
grep '^VXR-' "$tmp/static.log"
[ $rc -eq 0 ] || fail "static guest: exit $rc"
grep -q '^VXR-RESULT gw ok' "$tmp/static.log" || fail "static guest: no ping"

# --- guest 2: DHCP, MTU from option 26, DF pings, TCP -----------------------
cat > "$tmp/dhcp.sh" <<'EOF'
net dhcp
check_addr lease eth0 192.168.10.
check_mtu mtu eth0 1450
check_ping gw 192.168.10.1
check_ping_df df-1422 192.168.10.1 1422 ok
check_ping_df df-1423 192.168.10.1 1423 fail
check_tcp tcp-echo 192.168.10.1 7000 hello-vxr hello-vxr
EOF
rc=0
"$here/guest-run.sh" --tap tap0 --mac 52:54:00:00:10:99 \
  --script "$tmp/dhcp.sh" --serial "$tmp/dhcp.log" --quiet --timeout 90 \
  2> "$tmp/dhcp.err" || rc=$?
cat "$tmp/dhcp.err" >&2
grep '^VXR-' "$tmp/dhcp.log"
[ $rc -eq 0 ] || fail "DHCP guest: exit $rc"
grep -qE '^VXR-NET eth0 192\.168\.10\.[0-9]+/24 mtu 1450 gw 192\.168\.10\.1$' "$tmp/dhcp.log" ||
  fail "DHCP guest: wrong lease/MTU"
for c in lease mtu gw df-1422 df-1423 tcp-echo; do
  grep -q "^VXR-RESULT $c ok" "$tmp/dhcp.log" || fail "DHCP guest: check $c"
done
grep -q '52:54:00:00:10:99' "$tmp/leases" || fail "dnsmasq has no lease for the guest"

echo "guest-selftest: static: $(sed -n 's/^guest-run: //p' "$tmp/static.err" | tr '\n' ' ')"
echo "guest-selftest: dhcp:   $(sed -n 's/^guest-run: //p' "$tmp/dhcp.err" | tr '\n' ' ')"
echo "guest-selftest: OK"
