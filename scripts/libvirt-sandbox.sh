#!/usr/bin/env bash
# Starts a real libvirtd (Debian's libvirt-daemon + driver-qemu) inside the
# CURRENT private network + mount namespace (run it under scripts/sandbox.sh),
# so the lab can use virsh/libvirt exactly as on a KVM host without touching
# this machine's libvirt state, network or /etc.
#
# What makes libvirtd work in such a namespace:
#   - tmpfs over /etc/libvirt, /var/lib/libvirt, /var/cache/libvirt,
#     /var/log/libvirt (and /run is already the sandbox's tmpfs): every
#     config, state and log file is private and vanishes with the namespace.
#     (Not all of /var: the guest image lives in /var/cache/vxrouter.)
#   - a namespace-local /etc/passwd and /etc/group (bind-mounted copies) with
#     the libvirt-qemu user: the QEMU driver looks up its compile-time default
#     user at start-up and fails without it ("Failed to parse user
#     'libvirt-qemu'"), even when qemu.conf says user = "root" (which we do,
#     see below). libvirt-daemon-system, which would create it, is not
#     installed.
#   - qemu.conf: cgroup_controllers = [ ] (no cgroup delegation here),
#     security_driver = "none" (no AppArmor/SELinux), namespaces = [ ] (no
#     private /dev per guest), stdio_handler = "file" (no virtlogd),
#     dynamic_ownership = 0 (never chown the kernel/initrd on the real disk),
#     user = group = "root" (see qemu.conf below: keeps libvirt's capability
#     cache valid; start ~0.4 s with a warm cache, ~8 s cold).
#   - the capability cache is kept in ${XDG_CACHE_HOME:-/var/cache}/vxrouter/libvirt-caps.
#   - a fresh sysfs on /sys, so /sys/class/net shows this namespace's devices.
#   - libvirtd.conf: no polkit (auth none on the unix sockets), file logging.
#
# Usage, sourced (inside a sandbox):
#   . scripts/libvirt-sandbox.sh
#   vxr_libvirt_start            # returns once `virsh -c qemu:///system version` answers
#   trap vxr_libvirt_stop EXIT   # stops guests, networks, libvirtd, unmounts
# Usage, run:  scripts/sandbox.sh scripts/libvirt-sandbox.sh CMD [ARGS...]
#   starts libvirtd, runs CMD, stops everything, exits with CMD's status.
# Usage, daemon:  libvirt-sandbox.sh --daemon
#   starts libvirtd in its own session and leaves it running (what
#   `vxrouter lab` does inside a lab host with `libvirt = true`, whose
#   namespaces it runs in; `lab down` kills it with the host).
# Environment: VXR_LIBVIRT_TIMEOUT (start timeout, default 60 s),
# VXR_LIBVIRT_LOG_LEVEL (1 debug .. 4 errors; default 3).
# Sets VXR_LIBVIRT_START_SECS (measured start time) and VXR_LIBVIRT_LOG.

_vxr_lv_mounts=()
_vxr_lv_pid=""
VXR_LIBVIRT_LOG=/var/log/libvirt/libvirtd.log

_vxr_lv_mount() {  # _vxr_lv_mount ARGS... TARGET (remembered for unmount)
  mount "$@"
  _vxr_lv_mounts+=("${!#}")
}

vxr_libvirt_start() {
  # Refuse to run in the machine's own namespaces: this mounts over /etc.
  if [ "$(readlink /proc/self/ns/net)" = "$(readlink /proc/1/ns/net)" ] ||
     [ "$(readlink /proc/self/ns/mnt)" = "$(readlink /proc/1/ns/mnt)" ]; then
    echo "libvirt-sandbox: not in a private net+mount namespace (use scripts/sandbox.sh)" >&2
    return 1
  fi
  command -v libvirtd >/dev/null || { echo "libvirt-sandbox: libvirtd missing (apt-get install libvirt-daemon libvirt-daemon-driver-qemu)" >&2; return 1; }
  local t0 d
  t0=$(date +%s%N)

  # tmpfs over /etc/libvirt and over all of /var (mounting over
  # /var/lib/libvirt etc. would first need those directories created on the
  # real disk). Paths under /var that must stay visible - the guest image
  # cache - are bind-mounted aside first and moved back on top.
  # libvirtd probes every QEMU binary's capabilities at start (~4 s each
  # under TCG); keep that cache between runs in vxrouter's cache (libvirt
  # revalidates it against the QEMU/libvirt binaries and the kernel), unless
  # VXR_LIBVIRT_CAPS_CACHE is set empty.
  local caps=${VXR_LIBVIRT_CAPS_CACHE-${XDG_CACHE_HOME:-/var/cache}/vxrouter/libvirt-caps}
  [ -z "$caps" ] || mkdir -p "$caps"
  local keep=() k i=0
  for k in ${VXR_LIBVIRT_KEEP:-${XDG_CACHE_HOME:-/var/cache}/vxrouter} $caps; do
    case "$k" in /var/*) [ -d "$k" ] && keep+=("$k") ;; esac
  done
  mkdir -p /run/vxr-libvirt-keep
  for k in "${keep[@]}"; do
    mkdir -p "/run/vxr-libvirt-keep/$i"
    mount --bind "$k" "/run/vxr-libvirt-keep/$i"
    i=$((i + 1))
  done
  _vxr_lv_mount -t tmpfs -o mode=0755 vxr-libvirt /etc/libvirt
  # A sysfs mounted in this network namespace: the inherited /sys shows the
  # MACHINE's network devices (/sys/class/net is per mounting netns), which
  # libvirt reads for bridges and taps.
  _vxr_lv_mount -t sysfs vxr-sysfs /sys
  _vxr_lv_mount -t tmpfs -o mode=0755 vxr-libvirt-var /var
  ln -s /run /var/run
  ln -s /run/lock /var/lock
  mkdir /var/tmp && chmod 1777 /var/tmp
  i=0
  for k in "${keep[@]}"; do
    mkdir -p "$k"
    mount --move "/run/vxr-libvirt-keep/$i" "$k"
    i=$((i + 1))
  done
  mkdir -p /run/libvirt /var/log/libvirt/qemu /var/lib/libvirt/qemu /var/cache/libvirt/qemu \
           /etc/libvirt/qemu/networks
  if [ -n "$caps" ]; then
    mkdir -p /var/cache/libvirt/qemu/capabilities
    mount --bind "$caps" /var/cache/libvirt/qemu/capabilities
  fi

  # Namespace-local passwd/group with libvirt-qemu (Debian's usual 64055).
  local pw=/run/vxr-libvirt-etc
  mkdir -p "$pw"
  cp /etc/passwd "$pw/passwd"
  cp /etc/group "$pw/group"
  grep -q '^libvirt-qemu:' "$pw/passwd" ||
    echo 'libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin' >> "$pw/passwd"
  grep -q '^libvirt-qemu:' "$pw/group" || echo 'libvirt-qemu:x:64055:' >> "$pw/group"
  grep -q '^kvm:' "$pw/group" || echo 'kvm:x:64056:libvirt-qemu' >> "$pw/group"
  grep -q '^libvirt:' "$pw/group" || echo 'libvirt:x:64057:' >> "$pw/group"
  _vxr_lv_mount --bind "$pw/passwd" /etc/passwd
  _vxr_lv_mount --bind "$pw/group" /etc/group

  cat > /etc/libvirt/libvirtd.conf <<EOF
# vxrouter lab: private libvirtd, no polkit, no TCP, logs to a file
auth_unix_ro = "none"
auth_unix_rw = "none"
unix_sock_group = "root"
unix_sock_rw_perms = "0770"
log_level = ${VXR_LIBVIRT_LOG_LEVEL:-3}
log_outputs = "${VXR_LIBVIRT_LOG_LEVEL:-3}:file:/var/log/libvirt/libvirtd.log"
EOF
  cat > /etc/libvirt/qemu.conf <<'EOF'
# vxrouter lab: QEMU driver inside a private network + mount namespace
cgroup_controllers = [ ]
security_driver = "none"
namespaces = [ ]
stdio_handler = "file"
dynamic_ownership = 0
remember_owner = 0
# QEMU runs as root (inside the sandbox). As libvirt-qemu it cannot open
# /dev/kvm (0600 root here), and libvirt then finds its capability cache
# "outdated" ("KVM was enabled when probing ... but it is not available
# now") and re-probes every QEMU binary (~8 s) at start AND again at the
# first virsh create/capabilities call, on every run.
user = "root"
group = "root"
EOF
  : > /etc/libvirt/libvirt.conf

  # Its own session: a Ctrl-C meant for whoever started it does not reach it.
  setsid libvirtd --pid-file /run/libvirt/vxr-libvirtd.pid </dev/null \
    >>/var/log/libvirt/libvirtd.stdout 2>&1 &
  _vxr_lv_pid=$!
  local deadline=$(( $(date +%s) + ${VXR_LIBVIRT_TIMEOUT:-60} ))
  until virsh -q -c qemu:///system version >/dev/null 2>&1; do
    if ! kill -0 "$_vxr_lv_pid" 2>/dev/null; then
      echo "libvirt-sandbox: libvirtd exited:" >&2
      tail -n 20 /var/log/libvirt/libvirtd.stdout "$VXR_LIBVIRT_LOG" >&2 2>/dev/null || true
      return 1
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "libvirt-sandbox: libvirtd did not answer in ${VXR_LIBVIRT_TIMEOUT:-60}s" >&2
      return 1
    fi
    sleep 0.2
  done
  local ns=$(( $(date +%s%N) - t0 ))
  VXR_LIBVIRT_START_SECS=$(printf '%d.%02d' $(( ns / 1000000000 )) $(( ns / 10000000 % 100 )))
  echo "libvirt-sandbox: libvirtd up in ${VXR_LIBVIRT_START_SECS}s (pid $_vxr_lv_pid)" >&2
}

vxr_libvirt_stop() {
  local d n p i
  if [ -n "$_vxr_lv_pid" ] && kill -0 "$_vxr_lv_pid" 2>/dev/null; then
    # Guests and networks first, so libvirtd tears down what it set up.
    for d in $(virsh -q -c qemu:///system list --name 2>/dev/null); do
      virsh -q -c qemu:///system destroy "$d" >/dev/null 2>&1 || true
    done
    for n in $(virsh -q -c qemu:///system net-list --name 2>/dev/null); do
      virsh -q -c qemu:///system net-destroy "$n" >/dev/null 2>&1 || true
    done
    kill "$_vxr_lv_pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$_vxr_lv_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$_vxr_lv_pid" 2>/dev/null || true
    wait "$_vxr_lv_pid" 2>/dev/null || true
  fi
  _vxr_lv_pid=""
  # Anything libvirtd started that is still around (QEMU, dnsmasq, virtlogd).
  for p in /run/libvirt/qemu/*.pid /run/libvirt/network/*.pid /run/libvirt/virtlogd.pid; do
    [ -f "$p" ] || continue
    kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  for (( i = ${#_vxr_lv_mounts[@]} - 1; i >= 0; i-- )); do
    umount -l "${_vxr_lv_mounts[$i]}" 2>/dev/null || true
  done
  _vxr_lv_mounts=()
  return 0
}

# Daemon mode: start and leave it running.
if [ "${BASH_SOURCE[0]}" = "$0" ] && [ "${1:-}" = --daemon ]; then
  set -euo pipefail
  if ! vxr_libvirt_start; then vxr_libvirt_stop; exit 1; fi
  echo "libvirtd $_vxr_lv_pid $VXR_LIBVIRT_START_SECS"
  exit 0
fi

# Run mode: start, run the command, stop.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ $# -gt 0 ] || { echo "usage: libvirt-sandbox.sh CMD [ARGS...] (inside scripts/sandbox.sh)" >&2; exit 2; }
  trap vxr_libvirt_stop EXIT
  trap 'exit 130' INT TERM
  vxr_libvirt_start
  rc=0
  "$@" || rc=$?
  exit $rc
fi
