#!/usr/bin/env bash
# Runs a command inside a private network + mount namespace with its own
# tmpfs /run, so nothing it does can touch this machine's network or leave
# files under the machine's /run. Everything that changes networking (tests,
# demo, benchmark) goes through here. The sandbox's loopback is up (unit
# tests talk to 127.0.0.1 there).
#
# The sandbox is also a PID namespace: when the command ends, or this script
# is killed (even with SIGKILL), every process started inside (lab hosts'
# holders, dnsmasq, QEMU guests, libvirtd) is killed by the kernel, and
# nothing is re-parented to the machine's init. The sandbox's init (pid 1) is
# a small bash that only forwards signals and reaps orphans; it stays in the
# machine's network namespace (it opens no socket and changes nothing there),
# so /proc/1/ns/net still names the machine's namespace, which is how tests
# and scripts/libvirt-sandbox.sh tell that they run inside a sandbox.
#
# Signals: Ctrl-C reaches the command directly (it is in the terminal's
# foreground process group); SIGTERM and SIGHUP sent to this script are
# forwarded to the command, which can clean up and exit. The exit status is
# the command's.
set -euo pipefail

# Waits for background job $1 and exits with its status. A trapped signal
# interrupts `wait` although the job still runs: wait again. Once the job
# has ended, `wait` gives its status (bash keeps it, also when the job ended
# while a trap ran).
wait_for() {
  while :; do
    wait "$1" || :
    kill -0 "$1" 2>/dev/null || break
  done
  local rc=0
  wait "$1" || rc=$?
  exit "$rc"
}

# unshare --fork ignores SIGINT and SIGTERM while it waits, and asynchronous
# commands of a non-interactive shell start with SIGINT ignored: ignore it
# here too and give the command the default disposition back (env
# --default-signal), so Ctrl-C works on it as on any foreground program.
# setpriv --pdeathsig: unshare (and with it, through --kill-child, the whole
# sandbox) dies when this script dies, however it dies.
trap '' INT QUIT
setpriv --pdeathsig KILL -- unshare --pid --fork --kill-child --mount-proc --propagation private -- bash -c '
  '"$(declare -f wait_for)"'
  unshare --net --mount --propagation private -- bash -c "
    mount -t tmpfs -o mode=0755 vxrouter-sandbox /run
    mkdir -p /run/netns /run/lock
    ip link set lo up
    exec env --default-signal=INT,QUIT \"\$@\"" vxrouter-sandbox "$@" <&0 &
  child=$!
  trap "kill -TERM $child 2>/dev/null" TERM
  trap "kill -HUP $child 2>/dev/null" HUP
  wait_for "$child"' vxrouter-sandbox-init "$@" <&0 &
sandbox=$!

# Forward SIGTERM/SIGHUP to the sandbox's init (unshare itself ignores them).
forward() {
  local init
  for init in $(pgrep -P "$sandbox" 2>/dev/null || true); do
    kill -"$1" "$init" 2>/dev/null || true
  done
}
trap 'forward TERM' TERM
trap 'forward HUP' HUP
wait_for "$sandbox"
