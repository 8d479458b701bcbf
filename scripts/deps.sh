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
  keepalived      # router HA: VRRPv3 in the router namespace
  conntrackd      # router HA: connection-state sync between the routers
  frr             # BGP EVPN: zebra + bgpd, run by the lab inside its hosts' namespaces
  busybox         # udhcpc: a DHCP client for lab VMs
  libvirt-clients libxml2-utils  # virt-xml-validate for `render libvirt`
  systemd         # systemd-analyze verify for `render systemd`
  groff-base bsdutils  # man page lint; script(1) for terminal tests
  procps kmod util-linux
  # Real lab guests (scripts/guest-image.sh, guest-run.sh). busybox-static is
  # not installed (it conflicts with busybox): guest-image.sh fetches its .deb
  # and the kernel's with `apt-get download` and unpacks them.
  qemu-system-x86 # boots the guests (KVM when usable, else TCG)
  binutils        # readelf: the ping binary's loader, for the guest image
  lz4 xz-utils zstd  # decompress the guest kernel and its modules
  # A libvirt host in the lab (scripts/libvirt-sandbox.sh); no
  # libvirt-daemon-system: its units and users would act on this machine.
  libvirt-daemon libvirt-daemon-driver-qemu
  # The Debian package (scripts/package.sh, package-selftest.sh).
  dpkg-dev        # dpkg-shlibdeps
  man-db          # man -w
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # qemu-system-x86 of Debian 12 (7.2) needs qemu-system-common 7.2, which a
  # backported qemu-utils (>= 8.0, "Breaks: qemu-system-common (<< 8.0)")
  # refuses; apt would then silently REMOVE qemu-utils. Instead, when the
  # installed qemu-utils is newer than the qemu-system-x86 apt would install,
  # install qemu-utils at that same version: an explicit, announced
  # downgrade (qemu-img keeps working), nothing removed.
  extra=()
  if printf '%s\n' "${missing[@]}" | grep -qx qemu-system-x86; then
    qemu=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [ -n "$qemu" ] && [ "$qemu" != "(none)" ] && [ -n "$utils" ] &&
       dpkg --compare-versions "$utils" gt "$qemu"; then
      echo "qemu-utils $utils is newer than qemu-system-x86 $qemu and would block it: installing qemu-utils $qemu (downgrade)"
      extra=("qemu-utils=$qemu" --allow-downgrades)
    fi
  fi
  # keepalived, conntrackd and frr come with system services that Debian
  # starts on install: vxrouter runs its own instances inside router
  # namespaces (and the lab its own FRR inside each lab host),
  # and a conntrackd of the package's would sync this machine's own
  # connection table onto its network. Keep the package's from starting
  # (policy-rc.d, for the length of the install) and from starting at boot.
  policy=/usr/sbin/policy-rc.d
  guard=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# vxrouter deps.sh: no services start during this install\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    guard=1
  fi
  # --no-remove: never let apt resolve a conflict by removing a package.
  status=0
  apt-get install -y -q --no-install-recommends --no-remove "${missing[@]}" "${extra[@]}" || status=$?
  [ -z "$guard" ] || rm -f "$policy"
  [ "$status" = 0 ] || exit "$status"
fi
# Whether installed now or earlier: the package's own services stay off.
if command -v systemctl >/dev/null 2>&1; then
  for unit in keepalived.service conntrackd.service frr.service; do
    if systemctl is-enabled --quiet "$unit" 2>/dev/null; then
      echo "disabling $unit: vxrouter runs its own keepalived and conntrackd inside router namespaces, the lab its own FRR inside lab hosts"
      systemctl disable --now "$unit" >/dev/null 2>&1 || systemctl disable "$unit" >/dev/null 2>&1 || true
    fi
  done
fi
