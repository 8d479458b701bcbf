#!/usr/bin/env bash
# Captures the observed.json of every golden plan case from a real kernel:
# for each case a one-host lab is built (inside the sandbox), the case's
# starting profile applied, the host changed by hand as the case says, and
# what vxrouter observes dumped with `vxrouter __observed`. Then
# `UPDATE_GOLDEN=1 cargo test --test plan` writes each plan.txt.
#
#   scripts/sandbox.sh tests/plan/capture.sh [CASE…]      (as root)
#
# Each case is a function below: `start PROFILE` applies a profile, `on CMD`
# runs a command in the lab host, `capture PROFILE [plan|destroy|destroy --force]`
# writes the case directory.
set -euo pipefail
cd "$(dirname "$0")/../.."
VX=${VXROUTER_BIN:-$PWD/target/release/vxrouter}
ROOT=$PWD/tests/plan
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
P=$PWD/profiles

lab_file() {
  cat > "$WORK/lab.toml" <<LAB
[lab]
name = "golden"
[underlay]
subnet = "10.0.0.0/24"
[internet]
gateway = "203.0.113.1/24"
server = "198.51.100.10"
[[host]]
name = "host-a"
profile = "$WORK/host-a.toml"
underlay = "10.0.0.1"
uplink = true
LAB
}

on() { "$VX" lab exec "$WORK/lab.toml" host-a -- "$@"; }
ns() { on ip netns exec "$@"; }
start() { on "$VX" apply -q "$1" >/dev/null; }

# capture PROFILE COMMAND...: the case directory gets the profile and what
# vxrouter observes now; plan.txt starts with the command.
capture() {
  local profile=$1; shift
  local dir=$ROOT/$CASE
  mkdir -p "$dir"
  cp "$profile" "$dir/profile.toml"
  local flag=""
  [ "$1" = destroy ] && flag=--destroy
  on "$VX" __observed $flag "$dir/profile.toml" > "$dir/observed.json"
  echo "\$ vxrouter $*" > "$dir/plan.txt"
  echo "captured $CASE"
}

variant() { # variant NAME SED-EXPRESSION [FILE]: a profile derived from the seed router
  sed -e "$2" "${3:-$P/host-a.toml}" > "$WORK/$1.toml"; echo "$WORK/$1.toml"
}

case_bare-host() { capture "$P/host-a.toml" plan; }
case_converged() { start "$P/host-a.toml"; capture "$P/host-a.toml" plan; }
case_drift-link-attributes() {
  start "$P/host-a.toml"
  on ip link set br-pr mtu 1400; on ip link set vxlan1070 down
  on ip link set veth17.0 address 02:00:00:00:00:99
  capture "$P/host-a.toml" plan
}
case_drift-address-route-sysctl() {
  start "$P/host-a.toml"
  ns ns1 ip addr del 192.168.10.3/24 dev veth17.1
  ns ns1 ip route replace default via 203.0.113.9 dev veth15.1
  ns ns1 sysctl -qw net.ipv4.ip_forward=0
  capture "$P/host-a.toml" plan
}
case_drift-firewall-iptables() {
  start "$(variant ipt 's/^namespace = "ns1".*/&\nfirewall = "iptables"/')"
  ns ns1 iptables -D VXROUTER-FWD 3; ns ns1 iptables -t nat -D POSTROUTING 1
  capture "$WORK/ipt.toml" plan
}
case_drift-firewall-nftables() {
  start "$(variant nft 's/^namespace = "ns1".*/&\nfirewall = "nftables"/')"
  ns ns1 nft flush chain ip vxrouter forward
  capture "$WORK/nft.toml" plan
}
case_drift-uplink-released() { start "$P/host-a.toml"; on ip link set eth1 nomaster; capture "$P/host-a.toml" plan; }
case_drift-vxlan-group() {
  start "$P/host-a.toml"
  capture "$(variant group 's/239.0.4.46/239.0.4.47/')" plan
}
case_recreate-vni-and-port() {
  start "$P/host-a.toml"
  capture "$(variant vni 's/^vni = 1070/vni = 1071/; s/^# port = 4789 .*/port = 8472/')" plan
}
case_veth-pair-deleted() { start "$P/host-a.toml"; ns ns1 ip link del veth17.1; capture "$P/host-a.toml" plan; }
case_recreate-port() {
  start "$P/host-a.toml"
  capture "$(variant port 's/^# port = 4789 .*/port = 8472/')" plan
}
case_recreate-kind() {
  # An owned link of the wrong kind under a wanted name.
  start "$P/host-a.toml"
  on ip link del vxlan1070
  on ip link add vxlan1070 type bridge; on ip link set vxlan1070 alias vxrouter:host-a
  capture "$P/host-a.toml" plan
}
case_recreate-dev() {
  start "$P/host-a.toml"
  on ip link add eth2 type veth peer name eth2p; on ip link set eth2 up; on ip addr add 10.0.1.1/24 dev eth2
  capture "$(variant dev 's/^device = "eth0"/device = "eth2"/')" plan
}
case_recreate-veth-unpaired() {
  # The namespace end's name is taken by another veth: the pair is remade.
  start "$P/host-a.toml"
  ns ns1 ip link set veth17.1 down; ns ns1 ip link set veth17.1 name old17
  ns ns1 ip link add veth17.1 type veth peer name other17
  capture "$P/host-a.toml" plan
}
case_recreate-local() {
  start "$P/host-a.toml"
  on ip addr add 10.0.0.5/24 dev eth0
  capture "$(variant local 's/^# local = "10.0.0.1" .*/local = "10.0.0.5"/')" plan
}
case_destroy() { start "$P/host-a.toml"; capture "$P/host-a.toml" destroy; }
case_destroy-with-vm-tap() {
  start "$P/host-a.toml"
  on ip tuntap add vnet0 mode tap; on ip link set vnet0 master br-pr
  capture "$P/host-a.toml" destroy
}
case_destroy-force-with-vm-tap() {
  start "$P/host-a.toml"
  on ip tuntap add vnet0 mode tap; on ip link set vnet0 master br-pr
  capture "$P/host-a.toml" destroy --force
}
case_namespace-with-foreign-objects() {
  start "$P/host-a.toml"
  ns ns1 ip link add mine0 type veth peer name mine1
  capture "$P/host-a.toml" destroy
}
case_unicast-peers() {
  local u; u=$(variant unicast 's/^allow = .*//' "$P/unicast/host-a.toml")
  start "$u"
  on bridge fdb del 00:00:00:00:00:00 dev vxlan2070 dst 10.0.0.3
  on bridge fdb append 00:00:00:00:00:00 dev vxlan2070 dst 10.0.0.9
  capture "$u" plan
}
case_multicast-to-unicast() {
  start "$P/host-a.toml"
  capture "$(variant tounicast 's/^group = "239.0.4.46".*/peers = ["10.0.0.1", "10.0.0.2"]/')" plan
}
case_unicast-to-multicast() {
  start "$(variant tounicast 's/^group = "239.0.4.46".*/peers = ["10.0.0.1", "10.0.0.2"]/')"
  capture "$P/host-a.toml" plan
}
case_backend-switch() {
  start "$(variant ipt 's/^namespace = "ns1".*/&\nfirewall = "iptables"/')"
  capture "$(variant nft 's/^namespace = "ns1".*/&\nfirewall = "nftables"/')" plan
}
case_dhcp-config-changed() {
  local d='s/^veth = \["veth17.0", "veth17.1"\].*/&\ndhcp = { range = "192.168.10.100-192.168.10.200" }\ndns = true/'
  start "$(variant dhcp "$d")"
  capture "$(variant dhcp2 "${d/192.168.10.200/192.168.10.150}")" plan
}
case_forwards-added() {
  start "$P/host-a.toml"
  local f; f=$(variant fwd 's/^namespace = "ns1".*/&\nroute_between_segments = false/')
  printf '\n[[router.forward]]\nproto = "tcp"\nport = 2222\nto = "192.168.10.12:22"\n' >> "$f"
  capture "$f" plan
}
segment_x='s/^\[router\]$/[[segment]]\nbridge = "br-x"\nvni = 2000\ngroup = "239.0.4.47"\n\n[router]/'
case_segment-added() { start "$P/host-a.toml"; capture "$(variant segx "$segment_x")" plan; }
case_segment-removed() { start "$(variant segx "$segment_x")"; capture "$P/host-a.toml" plan; }
case_unowned-name-conflict() { on ip link add br-pr type bridge; capture "$P/host-a.toml" plan; }
case_interrupted-run-adopted() {
  # A run killed after creating br-pr but before marking it: the state file
  # records it as pending, so the next run adopts it.
  on ip link add br-pr type bridge
  on sh -c 'mkdir -p /run/vxrouter && printf "%s" "{\"host\":\"host-a\",\"pending\":{\"pid\":1,\"links\":[[null,\"br-pr\"]],\"namespaces\":[]}}" > /run/vxrouter/host-a.state.json'
  capture "$P/host-a.toml" plan
}
ha() { variant ha 's/^name = "router-a"/name = "host-a"/' "$P/ha/router-a.toml"; }
case_ha-bare-host() { capture "$(ha)" plan; }
case_ha-daemons-died() {
  # keepalived and conntrackd killed outright: the addresses keepalived held
  # stay (they are its, not drift); both daemons are started again.
  start "$(ha)"
  on pkill -9 -x keepalived; on pkill -9 -x conntrackd; sleep 0.2
  capture "$WORK/ha.toml" plan
}
case_ha-destroy() { start "$(ha)"; capture "$WORK/ha.toml" destroy; }

# EVPN: FRR (zebra + bgpd) started in host-a as the lab starts it
# (lab/src/frr.rs: private tmpfs /etc/frr and /var/log/frr, traditional
# defaults); the profile is profiles/evpn/host-c.toml moved to 10.0.0.1.
frr_start() {
  on sh -c 'for d in /etc/frr /var/log/frr /var/lib/frr; do
      if [ -d "$d" ] && ! mountpoint -q "$d"; then mount -t tmpfs -o mode=0755 frr-golden "$d"; fi; done
    mountpoint -q /var/tmp || mount -t tmpfs -o mode=1777 tmp-golden /var/tmp
    mkdir -p /run/frr /etc/frr
    printf "zebra=yes\nbgpd=yes\nvtysh_enable=yes\n" > /etc/frr/daemons
    printf "service integrated-vtysh-config\n" > /etc/frr/vtysh.conf
    printf "frr defaults traditional\nhostname host-a\n!\n" > /etc/frr/frr.conf
    chown -R frr:frr /etc/frr /run/frr /var/log/frr; chmod 640 /etc/frr/frr.conf
    /usr/lib/frr/zebra -d -F traditional -A 127.0.0.1 -s 90000000
    /usr/lib/frr/bgpd -d -F traditional -A 127.0.0.1
    until vtysh -b >/dev/null 2>&1; do sleep 0.1; done'
}
evpn() {
  variant evpn 's/^name = "host-c"/name = "host-a"/; s/^local = "10.0.1.11"/local = "10.0.0.1"/; s/^reflectors = .*/reflectors = ["10.0.0.2", "10.0.0.3"]/' \
    "$P/evpn/host-c.toml"
}
case_evpn-bare-host() { frr_start; capture "$(evpn)" plan; }
case_evpn-flood-list-is-frrs() {
  # zebra's flood-list entries on an EVPN segment are not vxrouter's peers:
  # nothing to remove.
  frr_start; start "$(evpn)"
  on bridge fdb append 00:00:00:00:00:00 dev vxlan3070 dst 10.0.0.9 self permanent
  capture "$WORK/evpn.toml" plan
}
case_evpn-foreign-bgp() {
  frr_start
  on vtysh -c 'configure terminal' -c 'router bgp 65001' -c 'bgp router-id 10.0.0.1'
  capture "$(evpn)" plan
}
case_evpn-destroy() { frr_start; start "$(evpn)"; capture "$WORK/evpn.toml" destroy; }
[ "$(id -u)" = 0 ] || { echo "run as root inside scripts/sandbox.sh" >&2; exit 1; }
cases=("$@")
[ ${#cases[@]} -gt 0 ] || mapfile -t cases < <(declare -F | awk '{print $3}' | sed -n 's/^case_//p')
for CASE in "${cases[@]}"; do
  cp "$P/host-a.toml" "$WORK/host-a.toml"
  lab_file
  "$VX" lab down -q "$WORK/lab.toml" >/dev/null 2>&1 || true
  "$VX" lab up -q --no-apply "$WORK/lab.toml" >/dev/null
  "case_$CASE"
  "$VX" lab down -q "$WORK/lab.toml" >/dev/null
done
