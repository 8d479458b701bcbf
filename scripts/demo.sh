#!/usr/bin/env bash
# The demo, as root: the seed document's two-host deployment simulated on
# this machine (hosts, VXLAN underlay, internet and VMs as private
# namespaces), each host applying its real profile, then the connectivity
# matrix, then everything removed. Pass another lab file to run that one.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/demo.sh needs root (network namespaces); run it as root, e.g. sudo -E scripts/demo.sh" >&2
  exit 1
fi
scripts/deps.sh
cargo build --release --locked
lab=${1:-profiles/lab/seed.toml}
# A lab with real guests boots an image made from Debian packages; the
# sandbox has no network to download them, so build it (cached) first.
if grep -qs '^kind *= *"qemu"' "$lab"; then scripts/guest-image.sh >/dev/null; fi
exec scripts/sandbox.sh target/release/vxrouter lab run "$lab"
