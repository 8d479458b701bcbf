#!/usr/bin/env bash
# Builds (once, cached) the tiny QEMU guest that vxrouter's lab boots on a
# TAP device to check a segment from inside a real VM:
#
#   OUTDIR/vmlinux            Debian 6.1 cloud kernel, uncompressed ELF. QEMU
#                             boots it through its PVH entry (-kernel vmlinux),
#                             which skips the bzImage decompressor (measured:
#                             faster under TCG, see guest-run.sh).
#   OUTDIR/initramfs.cpio.gz  busybox-static + iputils ping + the virtio
#                             modules + /init (the guest protocol below).
#
# Nothing is installed on this machine: the kernel and busybox-static .debs
# are fetched with `apt-get download` and unpacked with `dpkg-deb -x` in a
# temporary directory. Re-running with a current cache does nothing but print
# the paths (the cache is keyed on this script's own hash, so editing the
# guest's /init below rebuilds it).
#
# Usage:
#   guest-image.sh [OUTDIR]
#       build or reuse the cache; prints "kernel PATH" and "initrd PATH".
#   guest-image.sh --script TEST.sh --out INITRD [OUTDIR]
#       also write a per-guest initrd: the cached initramfs with a second
#       cpio archive appended that holds TEST.sh as /vxr/test.sh. Linux
#       unpacks concatenated (separately compressed) cpio archives in order,
#       so this works with `qemu -initrd` and libvirt's <initrd> alike.
#
# OUTDIR defaults to $VXR_GUEST_DIR, else ${XDG_CACHE_HOME:-/var/cache}/vxrouter/guest.
# Environment: VXR_KERNEL_PKG (default linux-image-cloud-amd64, a metapackage
# resolved to the real linux-image-* package), VXR_KERNEL_DEB / VXR_BUSYBOX_DEB
# (use a local .deb instead of downloading).
#
# ---------------------------------------------------------------------------
# Guest protocol (what /init does; see also guest-run.sh):
#   Kernel command line (all optional):
#     vxr.net=dhcp                       DHCP on eth0 (requests option 26, MTU)
#     vxr.net=static,ADDR/PFX[,GW[,MTU]] static address on eth0
#     vxr.timeout=SECONDS                guest-side watchdog (default 120)
#     vxr.b64=BASE64                     test script, base64 (no newlines);
#                                        used when no /vxr/test.sh was appended
#                                        (x86 command line: 2048 bytes in all)
#   Test script (/vxr/test.sh or vxr.b64) is sourced by /bin/sh after lo and
#   eth0 are up (and after vxr.net is applied). It may use these helpers:
#     net dhcp [IFACE]                          DHCP (option 26 MTU applied)
#     net static ADDR/PFX [GW] [MTU] [IFACE]    static configuration
#     check_ping NAME TARGET [ok|fail]          busybox ping -c 2
#     check_ping_df NAME TARGET SIZE [ok|fail]  iputils ping -M do -s SIZE -c 1
#     check_mtu NAME IFACE MTU                  interface MTU equals MTU
#     check_addr NAME IFACE PREFIX              an IPv4 address of IFACE starts with PREFIX
#     check_tcp NAME HOST PORT SEND EXPECT      sends a line, the answer must contain EXPECT
#     check_cmd NAME CMD...                     ok if CMD exits 0
#     serve_tcp PORT [PREFIX]                   background server: answers each
#                                               line with "PREFIX line" (default "echo")
#     check_served NAME [MIN] [TIMEOUT]         waits (default 10 s) until serve_tcp
#                                               answered at least MIN (1) lines
#     result NAME ok|fail DETAIL                report anything else
#   Serial console (ttyS0) lines, each alone on its line:
#     VXR-BOOT <guest uptime s>               /init started
#     VXR-NET <iface> <addr/pfx> mtu <mtu> gw <gw|->   after network setup
#     VXR-RESULT <name> ok|fail <detail>      one per check
#     VXR-DONE ok=<n> fail=<m> uptime=<s>     end; the guest then powers off
#   Every other console line (kernel, udhcpc) is noise: match ^VXR- only.
# ---------------------------------------------------------------------------
set -euo pipefail

script=""
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --script) script=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "guest-image.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if { [ -n "$script" ] && [ -z "$out" ]; } || { [ -z "$script" ] && [ -n "$out" ]; }; then
  echo "guest-image.sh: --script and --out go together" >&2; exit 2
fi

OUTDIR=${1:-${VXR_GUEST_DIR:-${XDG_CACHE_HOME:-/var/cache}/vxrouter/guest}}
KERNEL_PKG=${VXR_KERNEL_PKG:-linux-image-cloud-amd64}
# Modules the guest needs (with their dependencies, resolved below). Debian's
# 6.1 kernels build virtio, virtio_pci and virtio_net as modules; the serial
# console (8250) is built in. virtio_console is shipped but not loaded.
MODULES=(virtio_net virtio_pci)
EXTRA_MODULES=(virtio_console)
stamp_want="$(sha256sum "$0" | cut -d' ' -f1) $KERNEL_PKG"

# make_overlay SCRIPT OUT: append SCRIPT as /vxr/test.sh to the cached initramfs.
make_overlay() {
  local tmp
  tmp=$(mktemp -d)
  mkdir -p "$tmp/vxr"
  install -m 0755 "$1" "$tmp/vxr/test.sh"
  ( cd "$tmp" && printf 'vxr\nvxr/test.sh\n' |
      "$OUTDIR/busybox" cpio -o -H newc -R 0:0 2>/dev/null | gzip -n ) > "$tmp/overlay.cpio.gz"
  cat "$OUTDIR/initramfs.cpio.gz" "$tmp/overlay.cpio.gz" > "$2.tmp"
  mv "$2.tmp" "$2"
  chmod 0644 "$2"
  rm -rf "$tmp"
}

report() {
  echo "kernel $OUTDIR/vmlinux"
  echo "initrd $OUTDIR/initramfs.cpio.gz"
  if [ -n "$script" ]; then
    make_overlay "$script" "$out"
    echo "guest-initrd $out"
  fi
}

if [ -f "$OUTDIR/stamp" ] && [ "$(cat "$OUTDIR/stamp")" = "$stamp_want" ] &&
   [ -f "$OUTDIR/vmlinux" ] && [ -f "$OUTDIR/initramfs.cpio.gz" ]; then
  report
  exit 0
fi

echo "guest-image: building into $OUTDIR" >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The downloaded .debs are kept in OUTDIR/debs: rebuilding the image (this
# script changed) then needs no network, e.g. inside a sandbox.
debs="$OUTDIR/debs"
mkdir -p "$debs"
chmod 0755 "$OUTDIR" "$debs"
# apt-get download drops privileges to _apt; let it write into a scratch dir.
chmod 0755 "$work"
mkdir -p "$work/dl"
if id _apt >/dev/null 2>&1; then chown _apt "$work/dl"; fi

# --- fetch the .debs (no installation) --------------------------------------
fetch() {  # fetch PKG -> path of the .deb (cached in $debs)
  local have
  have=$(ls "$debs/$1"_*.deb 2>/dev/null | head -n1)
  if [ -n "$have" ]; then echo "$have"; return 0; fi
  # Package lists may be missing or stale (a fresh machine, an old mirror
  # snapshot): as root, update them and try once more.
  ( cd "$work/dl" && apt-get download -q "$1" >/dev/null 2>&1 ) \
    || { [ "$(id -u)" = 0 ] && apt-get update -q >/dev/null 2>&1 \
         && ( cd "$work/dl" && apt-get download -q "$1" >/dev/null 2>&1 ); } || {
    echo "guest-image: apt-get download $1 failed: no network here (a sandbox?) or no 'apt-get update' yet;" \
         "build the image once where apt works: scripts/guest-image.sh" >&2
    return 1
  }
  mv "$work/dl/$1"_*.deb "$debs/"
  ls "$debs/$1"_*.deb | head -n1
}
if [ -n "${VXR_KERNEL_DEB:-}" ]; then
  kdeb=$VXR_KERNEL_DEB
else
  # linux-image-cloud-amd64 is a metapackage: resolve the real image package.
  real=$(apt-cache depends "$KERNEL_PKG" 2>/dev/null |
         awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -z "$real" ]; then
    # No apt lists (or no network): take a cached image package if there is one.
    real=$(ls "$debs"/linux-image-[0-9]*.deb 2>/dev/null | head -n1 | sed 's,.*/,,; s,_.*,,')
  fi
  real=${real:-$KERNEL_PKG}
  kdeb=$(fetch "$real")
fi
bdeb=${VXR_BUSYBOX_DEB:-$(fetch busybox-static)}
mkdir -p "$work/k" "$work/bb"
dpkg-deb -x "$kdeb" "$work/k"
dpkg-deb -x "$bdeb" "$work/bb"
bzimage=$(ls "$work"/k/boot/vmlinuz-* | head -n1)
kver=${bzimage##*/vmlinuz-}
moddir="$work/k/lib/modules/$kver"

# --- kernel: uncompressed vmlinux out of the bzImage -------------------------
# The bzImage setup header says where the compressed payload is: setup_sects
# (0x1f1), payload_offset (0x248) and payload_length (0x24c); the payload
# starts after the (setup_sects+1)*512-byte real-mode part. Debian's cloud
# kernel is LZ4, the generic one XZ.
u8()  { od -An -tu1 -j "$2" -N1 "$1" | tr -d ' '; }
u32() { od -An -tu4 -j "$2" -N4 "$1" | tr -d ' '; }
ss=$(u8 "$bzimage" $((0x1f1)))
po=$(u32 "$bzimage" $((0x248)))
pl=$(u32 "$bzimage" $((0x24c)))
dd if="$bzimage" of="$work/payload" bs=1M iflag=skip_bytes,count_bytes \
   skip=$(( (ss + 1) * 512 + po )) count="$pl" status=none
magic=$(od -An -tx1 -N6 "$work/payload" | tr -d ' ')
case "$magic" in
  # lz4 exits 1 on the size trailer after the legacy frame; the ELF check
  # below is what tells success.
  02214c18*) lz4 -dc "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
  fd377a585a00) xz -dc --single-stream "$work/payload" > "$work/vmlinux" ;;
  1f8b*) gzip -dc "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
  28b52ffd*) zstd -dcq "$work/payload" > "$work/vmlinux" 2>/dev/null || true ;;
  *) echo "guest-image: unknown kernel compression (magic $magic)" >&2; exit 1 ;;
esac
if [ "$(od -An -tx1 -N4 "$work/vmlinux" | tr -d ' ')" != 7f454c46 ]; then
  echo "guest-image: extracting vmlinux from $bzimage failed" >&2; exit 1
fi
# The PVH entry point (Xen ELF note 18) is what lets QEMU boot the ELF directly.
grep -q '^CONFIG_PVH=y' "$work"/k/boot/config-* ||
  { echo "guest-image: kernel lacks CONFIG_PVH, cannot boot vmlinux directly" >&2; exit 1; }

# --- initramfs tree -----------------------------------------------------------
r="$work/root"
mkdir -p "$r"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,etc/udhcpc,lib/modules,vxr}
install -m 0755 "$work/bb/bin/busybox" "$r/bin/busybox"
for a in $("$r/bin/busybox" --list); do
  [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"
done

# iputils ping: busybox ping has no -M (it cannot forbid fragmentation), which
# the DF/MTU checks need. Copy the host's binary with the libraries it links.
pingbin=$(command -v ping 2>/dev/null || true)
if [ -z "$pingbin" ] || ! "$pingbin" -V 2>&1 | grep -q iputils; then
  echo "guest-image: iputils ping not found (apt-get install iputils-ping)" >&2; exit 1
fi
install -m 0755 "$pingbin" "$r/usr/bin/ping-iputils"
for lib in $(ldd "$pingbin" | awk '/=> \// {print $3} /^\t\/.*ld-linux/ {print $1}'); do
  mkdir -p "$r$(dirname "$lib")"
  cp -L "$lib" "$r$lib"
done
# ld.so is looked up at the path in PT_INTERP (/lib64/...), which on merged-/usr
# hosts ldd prints as such; make sure it exists in the guest.
interp=$(readelf -l "$pingbin" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
if [ ! -e "$r$interp" ]; then
  mkdir -p "$r$(dirname "$interp")"
  cp -L "$interp" "$r$interp"
fi

# Kernel modules with their dependencies, in load order. Modules may be
# shipped compressed (.ko.xz/.ko.zst); busybox insmod cannot read those, so
# decompress at build time.
declare -A seen=()
order=()
modfile() {
  # File names may use '-' where module names use '_' (virtio-rng.ko).
  local n=${1//-/_} f b
  while IFS= read -r f; do
    b=${f##*/}; b=${b%%.ko*}
    if [ "${b//-/_}" = "$n" ]; then echo "$f"; return 0; fi
  done < <(find "$moddir/kernel" -name '*.ko*')
  echo "guest-image: module $1 not found in $kver" >&2; return 1
}
copymod() {  # copymod NAME: copy NAME as lib/modules/NAME.ko, decompressed
  local f
  f=$(modfile "$1")
  case "$f" in
    *.ko) cp "$f" "$r/lib/modules/$1.ko" ;;
    *.ko.xz) xz -dc "$f" > "$r/lib/modules/$1.ko" ;;
    *.ko.zst) zstd -dcq "$f" > "$r/lib/modules/$1.ko" ;;
    *.ko.gz) gzip -dc "$f" > "$r/lib/modules/$1.ko" ;;
  esac
}
addmod() {  # depth-first: dependencies before the module itself
  local n=${1//-/_} dep
  [ -n "${seen[$n]:-}" ] && return 0
  seen[$n]=1
  local f
  f=$(modfile "$n")
  for dep in $(modinfo -F depends "$f" | tr ',' ' '); do addmod "$dep"; done
  copymod "$n"
  order+=("$n")
}
for m in "${MODULES[@]}"; do addmod "$m"; done
printf '%s\n' "${order[@]}" > "$r/lib/modules/load.order"
for m in "${EXTRA_MODULES[@]}"; do copymod "$m" || true; done

cat > "$r/etc/passwd" <<'EOF'
root:x:0:0:root:/:/bin/sh
EOF
echo 'root:x:0:' > "$r/etc/group"

# udhcpc event script: applies address, router, DNS and option 26 (MTU).
cat > "$r/etc/udhcpc/default.script" <<'EOF'
#!/bin/sh
# busybox udhcpc hook: $interface $ip $mask (prefix length) $router $mtu $dns
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "$router" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    : > /etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >> /etc/resolv.conf; done
    echo "$ip/${mask:-24} ${router%% *} ${mtu:-}" > /run/dhcp.$interface
    ;;
esac
exit 0
EOF
chmod 0755 "$r/etc/udhcpc/default.script"

# Echo server body for serve_tcp: answers every line with "PREFIX line".
cat > "$r/bin/vxr-echo" <<'EOF'
#!/bin/sh
while IFS= read -r line; do
  echo "${VXR_ECHO_PREFIX:-echo} $line"
  echo "$line" >> /run/vxr-served   # for check_served
done
EOF
chmod 0755 "$r/bin/vxr-echo"

# Listener body for the lab's checks (serve mode, see /init): like the lab's
# own agent, reads the connection to its end and answers
# "peer=<client address> bytes=<count>". busybox nc -e does not say who the
# client is: the address is looked up by the socket's inode in /proc/net
# (IPv4, or IPv4-mapped IPv6: the last 8 hex digits, little-endian).
cat > "$r/bin/vxr-sink" <<'EOF'
#!/bin/sh
n=$(wc -c)
ino=$(readlink /proc/$$/fd/0 | tr -cd 0-9)
rem=$(awk -v i="$ino" '$10 == i {print $3; exit}' /proc/net/tcp /proc/net/tcp6 2>/dev/null)
h=${rem%%:*}
h=${h:$((${#h} - 8)):8}
peer=-
[ ${#h} -eq 8 ] && peer=$(printf '%d.%d.%d.%d' 0x${h:6:2} 0x${h:4:2} 0x${h:2:2} 0x${h:0:2})
echo "peer=$peer bytes=$n"
EOF
chmod 0755 "$r/bin/vxr-sink"

# Helpers available to the test script (documented at the top of this file).
cat > "$r/etc/vxr-lib.sh" <<'EOF'
# Sourced by /init before the test script. Results go to the console and to
# /run/vxr-results (for the final count).
result() {  # result NAME ok|fail DETAIL...
  local name=$1 st=$2; shift 2
  echo "VXR-RESULT $name $st $*"
  echo "$st" >> /run/vxr-results
}
_expect() {  # _expect NAME WANT(ok|fail) RC DETAIL: rc 0 means the probe worked
  local name=$1 want=$2 rc=$3 detail=$4 got=fail
  [ "$rc" -eq 0 ] && got=ok
  if [ "$got" = "$want" ]; then result "$name" ok "$detail (expected $want)"
  else result "$name" fail "$detail (expected $want, got $got)"; fi
}
net() {  # net dhcp [IFACE] | net static ADDR/PFX [GW] [MTU] [IFACE]
  local mode=$1; shift
  case "$mode" in
    dhcp)
      local ifc=${1:-eth0}
      ip link set "$ifc" up
      # -O mtu: ask for option 26; the hook script applies it. -t/-T: quick
      # retries so a missing server fails in ~6 s instead of hanging.
      if udhcpc -i "$ifc" -f -q -n -t 6 -T 1 -O mtu -s /etc/udhcpc/default.script \
           > /run/udhcpc.log 2>&1; then
        _netline "$ifc"
      else
        result dhcp fail "no lease on $ifc: $(tail -n1 /run/udhcpc.log)"
        return 1
      fi
      ;;
    static)
      local addr=$1 gw=${2:-} mtu=${3:-} ifc=${4:-eth0}
      [ -n "$mtu" ] && ip link set "$ifc" mtu "$mtu"
      ip link set "$ifc" up
      ip addr add "$addr" dev "$ifc"
      [ -n "$gw" ] && [ "$gw" != - ] && ip route replace default via "$gw" dev "$ifc"
      _netline "$ifc"
      ;;
    *) result net fail "unknown mode $mode"; return 1 ;;
  esac
}
_netline() {
  local a m g
  a=$(ip -4 -o addr show dev "$1" | awk '{print $4; exit}')
  m=$(cat "/sys/class/net/$1/mtu")
  g=$(ip -4 route show default | awk '{print $3; exit}')
  echo "VXR-NET $1 ${a:--} mtu $m gw ${g:--}"
}
check_ping() {  # check_ping NAME TARGET [ok|fail]
  local out rc=0
  out=$(ping -c 2 -i 0.2 -W 2 "$2" 2>&1) || rc=$?
  _expect "$1" "${3:-ok}" "$rc" "ping $2: $(echo "$out" | grep -E 'packets|bad|unreach' | head -n1)"
}
check_ping_df() {  # check_ping_df NAME TARGET SIZE [ok|fail]
  local out rc=0
  out=$(ping-iputils -n -M do -s "$3" -c 1 -W 2 "$2" 2>&1) || rc=$?
  _expect "$1" "${4:-ok}" "$rc" "df ping $2 size $3: $(echo "$out" | grep -E 'packets|mtu|too long|rror' | head -n1)"
}
check_mtu() {  # check_mtu NAME IFACE MTU
  local m
  m=$(cat "/sys/class/net/$2/mtu" 2>/dev/null || echo none)
  if [ "$m" = "$3" ]; then result "$1" ok "$2 mtu $m"; else result "$1" fail "$2 mtu $m, want $3"; fi
}
check_addr() {  # check_addr NAME IFACE PREFIX
  local a
  a=$(ip -4 -o addr show dev "$2" | awk '{print $4}' | tr '\n' ' ')
  case " $a" in *" $3"*) result "$1" ok "$2 has $a" ;; *) result "$1" fail "$2 has '${a}', want $3*" ;; esac
}
check_tcp() {  # check_tcp NAME HOST PORT SEND EXPECT
  local out
  # busybox nc half-closes on stdin EOF and exits when the server closes;
  # a server that keeps the connection open costs the 5 s timeout.
  out=$(echo "$4" | timeout 5 nc -w 3 "$2" "$3" 2>&1 | head -n1) || true
  case "$out" in
    *"$5"*) result "$1" ok "tcp $2:$3 answered '$out'" ;;
    *) result "$1" fail "tcp $2:$3 answered '$out', want '$5'" ;;
  esac
}
check_cmd() {  # check_cmd NAME CMD...
  local name=$1 out rc=0; shift
  out=$("$@" 2>&1) || rc=$?
  if [ $rc -eq 0 ]; then result "$name" ok "$* "
  else result "$name" fail "$*: rc=$rc $(echo "$out" | tail -n1)"; fi
}
serve_tcp() {  # serve_tcp PORT [PREFIX]
  VXR_ECHO_PREFIX=${2:-echo} nc -ll -p "$1" -e /bin/vxr-echo > /dev/null 2>&1 &
}
check_served() {  # check_served NAME [MIN] [TIMEOUT]: serve_tcp answered >= MIN lines
  local n=0 i=0 t=$(( ${3:-10} * 10 ))
  while [ $i -lt $t ]; do
    n=$(cat /run/vxr-served 2>/dev/null | wc -l)
    [ "$n" -ge "${2:-1}" ] && break
    usleep 100000; i=$((i + 1))
  done
  if [ "$n" -ge "${2:-1}" ]; then result "$1" ok "served $n line(s)"
  else result "$1" fail "served $n line(s), want ${2:-1} within ${3:-10}s"; fi
}
EOF

cat > "$r/init" <<'EOF'
#!/bin/sh
# vxrouter lab guest: set up, run the test script, report on ttyS0, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo "VXR-BOOT $(cut -d' ' -f1 /proc/uptime)"
: > /run/vxr-results

arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p" | tail -n1; }
finish() {
  ok=$(grep -c '^ok$' /run/vxr-results)
  fail=$(grep -c '^fail$' /run/vxr-results)
  echo "VXR-DONE ok=$ok fail=$fail uptime=$(cut -d' ' -f1 /proc/uptime)"
  sync
  poweroff -f
  sleep 3600
}

# Watchdog: a hung check must not keep the guest (and the lab) waiting.
timeout=$(arg vxr.timeout)
[ "$(arg vxr.mode)" = serve ] || ( sleep "${timeout:-120}"; echo "VXR-RESULT watchdog fail timeout ${timeout:-120}s"
  echo fail >> /run/vxr-results; finish ) &

for m in $(cat /lib/modules/load.order); do insmod "/lib/modules/$m.ko" 2>/dev/null; done
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do usleep 100000; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then ip link set eth0 up; fi

. /etc/vxr-lib.sh
[ -e /sys/class/net/eth0 ] || result eth0 fail "no eth0 (virtio-net missing?)"

case "$(arg vxr.net)" in
  "") ;;
  dhcp) net dhcp ;;
  static,*)
    IFS=, read -r _ addr gw mtu <<X
$(arg vxr.net)
X
    net static "$addr" "$gw" "$mtu" ;;
  *) result net fail "bad vxr.net=$(arg vxr.net)" ;;
esac

# Serve mode (vxr.mode=serve, what the lab uses): no script and no poweroff;
# the guest runs the commands the lab writes to its console, one at a time:
#   in:  VXC <id> <base64 of a shell command>
#   out: VXO <id> <output line>   (each line of stdout+stderr, once it ended)
#        VXA <id> <exit status>
# The guest lives until the lab is torn down (QEMU is killed).
if [ "$(arg vxr.mode)" = serve ]; then
  stty -echo 2>/dev/null   # the console's input is commands, not for display
  echo "VXR-READY $(cut -d' ' -f1 /proc/uptime)"
  while IFS= read -r line; do
    case "$line" in "VXC "*) ;; *) continue ;; esac
    set -- $line
    id=$2
    cmd=$(echo "$3" | base64 -d 2>/dev/null) || { echo "VXA $id 127"; continue; }
    out=$( (eval "$cmd") 2>&1 < /dev/null )
    rc=$?
    [ -z "$out" ] || printf '%s\n' "$out" | while IFS= read -r o; do echo "VXO $id $o"; done
    echo "VXA $id $rc"
  done
  echo "VXR-RESULT console fail the console closed"
  finish
fi

if [ ! -f /vxr/test.sh ] && [ -n "$(arg vxr.b64)" ]; then
  arg vxr.b64 | base64 -d > /vxr/test.sh 2>/dev/null
fi
if [ -f /vxr/test.sh ]; then
  # Sourced in a subshell: a failing command or `exit` in the script ends
  # the script, not /init.
  ( . /vxr/test.sh ) || result script fail "test script exited $?"
fi
finish
EOF
chmod 0755 "$r/init"

# --- pack ---------------------------------------------------------------------
mkdir -p "$OUTDIR"
chmod 0755 "$OUTDIR"
( cd "$r" && find . -mindepth 1 | sed 's,^\./,,' | LC_ALL=C sort |
    "$work/bb/bin/busybox" cpio -o -H newc -R 0:0 2>/dev/null | gzip -9n ) > "$OUTDIR/initramfs.cpio.gz.tmp"
mv "$OUTDIR/initramfs.cpio.gz.tmp" "$OUTDIR/initramfs.cpio.gz"
mv "$work/vmlinux" "$OUTDIR/vmlinux"
install -m 0755 "$work/bb/bin/busybox" "$OUTDIR/busybox"  # host-side cpio for overlays
chmod 0644 "$OUTDIR/vmlinux" "$OUTDIR/initramfs.cpio.gz"
{
  echo "kernel_package $(dpkg-deb -f "$kdeb" Package) $(dpkg-deb -f "$kdeb" Version)"
  echo "busybox $(dpkg-deb -f "$bdeb" Version)"
  echo "modules ${order[*]}"
} > "$OUTDIR/manifest"
echo "$stamp_want" > "$OUTDIR/stamp"
echo "guest-image: vmlinux $(du -h "$OUTDIR/vmlinux" | cut -f1), initramfs $(du -h "$OUTDIR/initramfs.cpio.gz" | cut -f1)" >&2
report
