#!/usr/bin/env bash
# End-to-end proof of the libvirt path, inside scripts/sandbox.sh:
#   - bridge br-pr (192.168.30.1/24, MTU 1450) with dnsmasq on it (DHCP,
#     option 26 = 1450);
#   - a real libvirtd (scripts/libvirt-sandbox.sh);
#   - `virsh net-define` of a bridge-mode network WITH <mtu> must be rejected
#     (libvirt 9 refuses <mtu> for forward mode='bridge'); the same network
#     without <mtu> is defined, started and marked autostart;
#   - `virsh create` of a TCG (<domain type='qemu'>) guest booted directly
#     from guest-image.sh's kernel + initramfs, NIC <interface type='network'>
#     on br-pr (virtio), serial console to a file;
#   - the guest's tap (vnetN) is in br-pr with the bridge's MTU 1450 although
#     the network XML has no <mtu>;
#   - the guest leases an address with MTU 1450 from the dnsmasq and pings
#     the gateway; results are read from the console file.
# Prints libvirtd start time and guest run time; exit 0 on success.
# Usage: scripts/libvirt-selftest.sh   (as root)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
if [ "${VXR_SELFTEST_SANDBOXED:-}" != 1 ]; then
  "$here/guest-image.sh" >/dev/null   # needs the network (apt-get download)
  VXR_SELFTEST_SANDBOXED=1 exec "$here/sandbox.sh" "$0" "$@"
fi

fail() { echo "libvirt-selftest: FAIL: $*" >&2; exit 1; }
virsh() { command virsh -q -c qemu:///system "$@"; }

# Guest files live in /run (the sandbox's private tmpfs; visible to libvirtd).
tmp=$(mktemp -d /run/vxr-lvtest.XXXXXX)
chmod 0755 "$tmp"
dnsmasq_pid=""
. "$here/libvirt-sandbox.sh"
cleanup() {
  vxr_libvirt_stop
  if [ -n "$dnsmasq_pid" ]; then kill "$dnsmasq_pid" 2>/dev/null || true; wait "$dnsmasq_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- segment: bridge + dnsmasq ---------------------------------------------
ip link set lo up
ip link add br-pr type bridge
ip link set br-pr mtu 1450
ip addr add 192.168.30.1/24 dev br-pr
ip link set br-pr up
dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
  --interface=br-pr --bind-interfaces --except-interface=lo \
  --dhcp-range=192.168.30.100,192.168.30.200,255.255.255.0,1h \
  --dhcp-option=option:router,192.168.30.1 --dhcp-option=option:mtu,1450 \
  --dhcp-leasefile="$tmp/leases" --log-facility="$tmp/dnsmasq.log" &
dnsmasq_pid=$!

# --- libvirtd -----------------------------------------------------------------
vxr_libvirt_start
start_secs=$VXR_LIBVIRT_START_SECS

# --- network: <mtu> is rejected in bridge mode ------------------------------
cat > "$tmp/net-mtu.xml" <<'EOF'
<network><name>br-pr</name><forward mode='bridge'/><bridge name='br-pr'/><mtu size='1450'/></network>
EOF
if virsh net-define "$tmp/net-mtu.xml" > "$tmp/net-mtu.out" 2>&1; then
  fail "libvirt accepted <mtu> in a bridge-mode network"
fi
mtu_error=$(grep -v '^$' "$tmp/net-mtu.out" | tr '\n' ' ')
echo "libvirt-selftest: <mtu> in bridge mode rejected: $mtu_error"

cat > "$tmp/net.xml" <<'EOF'
<network><name>br-pr</name><forward mode='bridge'/><bridge name='br-pr'/></network>
EOF
virsh net-define "$tmp/net.xml" >/dev/null
virsh net-start br-pr >/dev/null
virsh net-autostart br-pr >/dev/null
info=$(virsh net-info br-pr)  # (not piped into grep -q: SIGPIPE + pipefail)
grep -qE '^Autostart: +yes' <<<"$info" || fail "br-pr not autostart"
grep -qE '^Active: +yes' <<<"$info" || fail "br-pr not active"

# --- guest --------------------------------------------------------------------
cat > "$tmp/test.sh" <<'EOF'
net dhcp
check_addr lease eth0 192.168.30.
check_mtu mtu eth0 1450
check_ping gw 192.168.30.1
check_ping_df df-1422 192.168.30.1 1422 ok
check_ping_df df-1423 192.168.30.1 1423 fail
EOF
img=$("$here/guest-image.sh" --script "$tmp/test.sh" --out "$tmp/initrd.cpio.gz")
kernel=$(awk '$1 == "kernel" {print $2}' <<<"$img")
console="$tmp/console.log"
cat > "$tmp/domain.xml" <<EOF
<domain type='qemu'>
  <name>vxr-guest</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$kernel</kernel>
    <initrd>$tmp/initrd.cpio.gz</initrd>
    <cmdline>console=ttyS0 quiet panic=-1 vxr.timeout=100</cmdline>
  </os>
  <!-- ACPI: without it libvirt passes -no-acpi and "poweroff -f" cannot power off -->
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='network'>
      <source network='br-pr'/>
      <mac address='52:54:00:00:30:99'/>
      <model type='virtio'/>
    </interface>
    <serial type='file'><source path='$console'/><target port='0'/></serial>
    <console type='file'><source path='$console'/><target type='serial' port='0'/></console>
    <!-- no USB controller, no balloon: fewer devices for TCG to emulate -->
    <controller type='usb' model='none'/>
    <memballoon model='none'/>
  </devices>
</domain>
EOF
t0=$(date +%s%N)
virsh create "$tmp/domain.xml" >/dev/null
t_created=$(( $(date +%s%N) - t0 ))

# The tap libvirt made for the guest: in br-pr, with the bridge's MTU.
tap=$(virsh domiflist vxr-guest | awk '$3 == "br-pr" {print $1; exit}')
[ -n "$tap" ] || fail "no interface on br-pr in domiflist"
# (ip, not /sys/class/net: sysfs shows the netns it was mounted in.)
link=$(ip -o link show dev "$tap")
tap_mtu=$(sed -n 's/.* mtu \([0-9]*\) .*/\1/p' <<<"$link")
tap_master=$(sed -n 's/.* master \([^ ]*\) .*/\1/p' <<<"$link")
echo "libvirt-selftest: guest tap $tap master $tap_master mtu $tap_mtu"
[ "$tap_master" = br-pr ] || fail "$tap not in br-pr"
[ "$tap_mtu" = 1450 ] || fail "$tap mtu $tap_mtu, want 1450 (the bridge's)"

# Wait for the guest to power off (on_poweroff=destroy: the transient domain
# disappears), at most 120 s.
# Polls the console file (cheap) and asks libvirt only once VXR-DONE is there.
for _ in $(seq 600); do
  if grep -q '^VXR-DONE' "$console" 2>/dev/null; then
    virsh domstate vxr-guest >/dev/null 2>&1 || break
  fi
  sleep 0.2
done
t_total=$(( $(date +%s%N) - t0 ))
if virsh domstate vxr-guest >/dev/null 2>&1; then
  virsh destroy vxr-guest >/dev/null 2>&1 || true
  fail "guest did not power off in 120 s"
fi
boot_up=$(sed -n 's/^VXR-BOOT \([0-9.]*\).*/\1/p' "$console" | head -n1)
done_up=$(sed -n 's/^VXR-DONE .*uptime=\([0-9.]*\).*/\1/p' "$console" | head -n1)
grep '^VXR-' "$console" | tr -d '\r'
grep -q '^VXR-DONE ok=[0-9]* fail=0 ' "$console" || fail "guest reported failures (console: $console)"
grep -qE '^VXR-NET eth0 192\.168\.30\.[0-9]+/24 mtu 1450 gw 192\.168\.30\.1' "$console" || fail "wrong lease/MTU"
for c in lease mtu gw df-1422 df-1423; do
  grep -q "^VXR-RESULT $c ok" "$console" || fail "check $c"
done

s() { printf '%d.%02ds' $(( $1 / 1000000000 )) $(( $1 / 10000000 % 100 )); }
echo "libvirt-selftest: libvirtd start ${start_secs}s; virsh create $(s $t_created); guest uptime at /init ${boot_up}s, at VXR-DONE ${done_up}s; create-to-poweroff $(s $t_total)"
echo "libvirt-selftest: OK"
