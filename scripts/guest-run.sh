#!/usr/bin/env bash
# Boots one lab guest (built by guest-image.sh) under QEMU with its virtio-net
# NIC on an existing TAP device, streams its serial console (ttyS0) to stdout
# (and optionally a file), and returns when the guest powers off.
#
# It touches no network configuration itself: the TAP device must already
# exist (in the caller's network namespace, e.g. inside scripts/sandbox.sh).
#
# Usage:
#   guest-run.sh --tap TAP [options]
#     --tap TAP          TAP device for the guest's eth0 (required, unless --no-nic)
#     --no-nic           boot without a NIC
#     --mac MAC          guest MAC (default 52:54:00 + 3 bytes hashed from TAP)
#     --script FILE      test script for the guest (see guest-image.sh)
#     --initrd FILE      a ready per-guest initrd instead of --script
#     --net dhcp|static,ADDR/PFX[,GW[,MTU]]   vxr.net= for the guest
#     --append ARGS      more kernel command line
#     --serial FILE      also write the console to FILE
#     --quiet            do not copy the console to stdout
#     --timeout SEC      kill QEMU after SEC seconds (default 120; the guest's
#                        own watchdog is set 5 s earlier)
#     --accel auto|kvm|tcg   default auto (see detect_accel), or $VXR_ACCEL
#     --mem MB           guest memory (default 128)
#     --print-cmd        print the QEMU command line and exit
#     --guest-dir DIR    where guest-image.sh keeps the image
#   Exit status: 0 guest reported VXR-DONE with fail=0; 1 some check failed;
#   2 no VXR-DONE (crash, timeout, QEMU error).
#   On stderr: "guest-run: accel=... (why)" and, at the end,
#   "guest-run: boot-to-init X.XXs total Y.YYs" (host wall clock from QEMU
#   start to the guest's VXR-BOOT line, and to QEMU's exit).
#
# The QEMU command line (what the Rust lab should run):
#   qemu-system-x86_64 -accel tcg -M pc -m 128 -smp 1 -nodefaults -no-user-config
#     -display none -no-reboot -serial stdio
#     -netdev tap,id=n0,ifname=TAP,script=no,downscript=no
#     -device virtio-net-pci,netdev=n0,mac=MAC
#     -kernel vmlinux -initrd INITRD -append "console=ttyS0 quiet panic=-1 vxr.timeout=N ..."
#   (-display none + -serial stdio is -nographic without the monitor muxed
#   onto stdio; the default CPU model boots faster under TCG than -cpu max.)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tap="" nonic=0 mac="" script="" initrd="" netarg="" append="" serial="" quiet=0
timeout=120 accel=${VXR_ACCEL:-auto} mem=128 printcmd=0 gdir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tap) tap=$2; shift 2 ;;
    --no-nic) nonic=1; shift ;;
    --mac) mac=$2; shift 2 ;;
    --script) script=$2; shift 2 ;;
    --initrd) initrd=$2; shift 2 ;;
    --net) netarg=$2; shift 2 ;;
    --append) append=$2; shift 2 ;;
    --serial) serial=$2; shift 2 ;;
    --quiet) quiet=1; shift ;;
    --timeout) timeout=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --print-cmd) printcmd=1; shift ;;
    --guest-dir) gdir=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "guest-run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$tap" ] || [ $nonic -eq 1 ] || { echo "guest-run.sh: --tap TAP required" >&2; exit 2; }

tmp=$(mktemp -d)
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then kill "$qpid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Image (cached; prints "kernel PATH" / "initrd PATH").
img=$("$here/guest-image.sh" ${script:+--script "$script" --out "$tmp/initrd"} ${gdir:+"$gdir"})
kernel=$(awk '$1 == "kernel" {print $2}' <<<"$img")
if [ -n "$script" ]; then initrd="$tmp/initrd"; fi
[ -n "$initrd" ] || initrd=$(awk '$1 == "initrd" {print $2}' <<<"$img")

# detect_accel: prints "kvm" or "tcg" and, on fd 3, why. KVM is used only if
# /dev/kvm opens read-write, the KVM backend is a hardware one (kvm_intel or
# kvm_amd; kvm_pvm - the "pagetable virtual machine" module of some cloud VMs -
# registers /dev/kvm but cannot run a stock kernel: QEMU hangs, or aborts on
# MSR 0x10a with -cpu host), the CPU shows vmx/svm, and a probe boot reaches
# the guest's /init within 10 s (about 1 s on real KVM).
detect_accel() {
  if ! { exec 4<>/dev/kvm; } 2>/dev/null; then echo tcg; echo "/dev/kvm missing or not read-write" >&3; return; fi
  exec 4>&-
  if [ -d /sys/module/kvm_pvm ]; then echo tcg; echo "/dev/kvm is kvm_pvm (cannot boot a stock kernel)" >&3; return; fi
  if ! [ -d /sys/module/kvm_intel ] && ! [ -d /sys/module/kvm_amd ]; then
    echo tcg; echo "neither kvm_intel nor kvm_amd loaded" >&3; return
  fi
  if ! grep -qwE 'vmx|svm' /proc/cpuinfo; then echo tcg; echo "no vmx/svm CPU flag" >&3; return; fi
  # Probe boot: no NIC, kill QEMU as soon as /init says hello.
  local log="$tmp/probe.log" p i
  qemu-system-x86_64 -accel kvm -cpu host -M pc -m 64 -smp 1 -nodefaults -no-user-config \
    -display none -no-reboot -serial "file:$log" -kernel "$kernel" -initrd "$initrd" \
    -append "console=ttyS0 quiet panic=-1" </dev/null >/dev/null 2>&1 &
  p=$!
  for i in $(seq 100); do
    if grep -q '^VXR-BOOT' "$log" 2>/dev/null; then
      kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
      echo kvm; echo "probe boot reached /init in $((i / 10)).$((i % 10))s" >&3; return
    fi
    kill -0 "$p" 2>/dev/null || break
    sleep 0.1
  done
  kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true
  echo tcg; echo "KVM probe boot did not reach /init" >&3
}

case "$accel" in
  auto) accel=$(detect_accel 3>"$tmp/why"); why=$(cat "$tmp/why") ;;
  kvm|tcg) why="forced" ;;
  *) echo "guest-run.sh: --accel auto|kvm|tcg" >&2; exit 2 ;;
esac
echo "guest-run: accel=$accel ($why)" >&2

cpu=()
[ "$accel" = kvm ] && cpu=(-cpu host)
if [ -z "$mac" ] && [ -n "$tap" ]; then
  h=$(printf %s "$tap" | md5sum)
  mac="52:54:00:${h:0:2}:${h:2:2}:${h:4:2}"
fi
nic=()
if [ $nonic -eq 0 ]; then
  nic=(-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no"
       -device "virtio-net-pci,netdev=n0,mac=$mac")
fi
cmdline="console=ttyS0 quiet panic=-1 vxr.timeout=$(( timeout > 10 ? timeout - 5 : timeout ))"
[ -n "$netarg" ] && cmdline+=" vxr.net=$netarg"
[ -n "$append" ] && cmdline+=" $append"
qemu=(qemu-system-x86_64 -accel "$accel" "${cpu[@]}" -M pc -m "$mem" -smp 1
      -nodefaults -no-user-config -display none -no-reboot -serial stdio
      "${nic[@]}" -kernel "$kernel" -initrd "$initrd" -append "$cmdline")
if [ $printcmd -eq 1 ]; then printf '%q ' "${qemu[@]}"; echo; exit 0; fi

# Run QEMU with its console on a FIFO so this shell can timestamp the lines.
mkfifo "$tmp/con"
start=$(date +%s%N)
timeout --kill-after=2 "$timeout" "${qemu[@]}" </dev/null >"$tmp/con" &
qpid=$!
boot="" done_line=""
[ -n "$serial" ] && : > "$serial"
while IFS= read -r line; do
  line=${line%$'\r'}
  [ $quiet -eq 1 ] || printf '%s\n' "$line"
  [ -n "$serial" ] && printf '%s\n' "$line" >> "$serial"
  case "$line" in
    VXR-BOOT*) [ -n "$boot" ] || boot=$(( $(date +%s%N) - start )) ;;
    VXR-DONE*) done_line=$line ;;
  esac
done < "$tmp/con"
rc=0
wait "$qpid" || rc=$?
qpid=""
total=$(( $(date +%s%N) - start ))
ms() { [ -n "$1" ] && printf '%d.%02ds' $(( $1 / 1000000000 )) $(( $1 / 10000000 % 100 )) || printf 'never'; }
echo "guest-run: boot-to-init $(ms "$boot") total $(ms "$total") qemu-exit $rc" >&2
case "$done_line" in
  *" fail=0 "*|*" fail=0") exit 0 ;;
  VXR-DONE*) exit 1 ;;
  *) exit 2 ;;
esac
