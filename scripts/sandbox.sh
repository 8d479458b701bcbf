#!/usr/bin/env bash
# Runs a command inside a private network + mount namespace with its own
# tmpfs /run, so nothing it does can touch this machine's network or leave
# files under the machine's /run. Everything that changes networking (tests,
# demo, benchmark) goes through here.
set -euo pipefail
exec unshare --net --mount --propagation private -- bash -c '
  mount -t tmpfs -o mode=0755 vxrouter-sandbox /run
  mkdir -p /run/netns /run/lock
  exec "$@"' vxrouter-sandbox "$@"
