#!/usr/bin/env bash
# Installs the system packages vxrouter's tests, demo and benchmark use
# (Debian/Ubuntu). Idempotent: installs only what is missing.
set -euo pipefail

PKGS=(
  iproute2        # ip: operators' view, and the benchmark's baseline
  iptables        # the router namespace's NAT and filter rules
  nftables        # the lab switch's multicast filter; nftables backend
  iputils-ping    # lab checks
  iputils-arping  # lab L2-isolation checks
  iperf3          # data-path throughput in the benchmark
  dnsmasq-base    # DHCP/DNS for VMs, run inside the router namespace
  busybox         # udhcpc: a DHCP client for lab VMs
  libvirt-clients libxml2-utils  # virt-xml-validate for `render libvirt`
  systemd         # systemd-analyze verify for `render systemd`
  groff-base bsdutils  # man page lint; script(1) for terminal tests
  procps kmod util-linux
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
