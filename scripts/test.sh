#!/usr/bin/env bash
# The whole test suite, as root: installs what the tests need, builds, then
# runs unit tests and the namespace integration tests inside a sandbox
# (private network + mount + PID namespace; see scripts/sandbox.sh): among
# them real QEMU guests and a real libvirtd (tests/guests.rs) and the Debian
# package, installed and removed in an overlay (tests/package.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh needs root (network namespaces); run it as root, e.g. sudo -E scripts/test.sh" >&2
  exit 1
fi
scripts/deps.sh
# The real-guest tests (tests/guests.rs) boot a guest image made from Debian
# packages that scripts/guest-image.sh downloads; the sandbox has no network,
# so build it now (cached: a no-op once built). The lab finds it at the same
# path: $VXR_GUEST_DIR, else ${XDG_CACHE_HOME:-/var/cache}/vxrouter/guest.
scripts/guest-image.sh >/dev/null
# Build with network access first; inside the sandbox there is none.
cargo build --release --locked
cargo test --locked --features fault-injection --no-run
# The integration tests drive the lab, a separate binary of the workspace that
# `cargo test` of the root package does not build.
cargo build --locked -p vxrouter-lab
scripts/sandbox.sh cargo test --offline --locked --no-fail-fast --features fault-injection -- --include-ignored "$@"
