#!/usr/bin/env bash
# Builds the vxrouter Debian package with dpkg-deb (no cargo-deb):
#   target/debian/vxrouter_<version>_<arch>.deb   (path printed on stdout)
# Contents:
#   /usr/bin/vxrouter                          cargo build --release --locked (stripped)
#   /lib/systemd/system/vxrouter@.service      `vxrouter render systemd --bin /usr/bin/vxrouter`
#   /usr/share/man/man1/vxrouter.1.gz          `vxrouter man | gzip -9n`
#   /usr/share/bash-completion/completions/vxrouter, /usr/share/zsh/vendor-completions/_vxrouter,
#   /usr/share/fish/vendor_completions.d/vxrouter.fish   `vxrouter completions SHELL`
#   /usr/share/doc/vxrouter/{README.md,*.md,copyright,examples/}   docs/ and profiles/
#   /etc/vxrouter/                             empty: where the unit's profiles go
# Everything the binary generates is generated here, at package time, from
# the binary being packaged, so the package always matches it.
# The maintainer scripts only run `systemctl daemon-reload` when systemd is
# running; they never enable or start a unit.
#
# Usage: scripts/package.sh [--no-build]
#   --no-build   package the existing target/release/vxrouter
# Environment: DEB_MAINTAINER ("Name <email>"; default from DEBFULLNAME and
# DEBEMAIL, else "vxrouter developers <root@localhost>"), SOURCE_DATE_EPOCH
# (file times; default: the last commit's time).
# Needs: cargo, dpkg-dev (dpkg-deb, dpkg-shlibdeps), binutils (strip), gzip.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=1
for a in "$@"; do
  case "$a" in
    --no-build) build=0 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "package.sh: unknown argument $a" >&2; exit 2 ;;
  esac
done
cd "$root"

# Version: the [package] version of Cargo.toml.
version=$(awk '/^\[/ {sec = $0} sec == "[package]" && /^version *=/ {gsub(/.*= *"|".*/, ""); print; exit}' Cargo.toml)
[ -n "$version" ] || { echo "package.sh: no [package] version in Cargo.toml" >&2; exit 1; }
license=$(awk '/^\[/ {sec = $0} sec == "[package]" && /^license *=/ {gsub(/.*= *"|".*/, ""); print; exit}' Cargo.toml)
arch=$(dpkg --print-architecture)
maint=${DEB_MAINTAINER:-${DEBFULLNAME:+$DEBFULLNAME <${DEBEMAIL:-root@localhost}>}}
maint=${maint:-vxrouter developers <root@localhost>}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

if [ $build -eq 1 ]; then
  cargo build --release --locked -p vxrouter --bin vxrouter >&2
fi
bin=target/release/vxrouter
[ -x "$bin" ] || { echo "package.sh: $bin missing (build it or drop --no-build)" >&2; exit 1; }
binver=$("$bin" --version | awk '{print $2}')
[ "$binver" = "$version" ] ||
  { echo "package.sh: $bin is version $binver, Cargo.toml says $version (stale binary?)" >&2; exit 1; }

out=target/debian
pkg="$out/vxrouter_${version}_${arch}"
rm -rf "$pkg"
mkdir -p "$pkg/DEBIAN" "$pkg/usr/bin" "$pkg/lib/systemd/system" "$pkg/usr/share/man/man1" \
  "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
  "$pkg/usr/share/fish/vendor_completions.d" "$pkg/usr/share/doc/vxrouter/examples" \
  "$pkg/etc/vxrouter"

install -m 0755 "$bin" "$pkg/usr/bin/vxrouter"
strip --strip-unneeded "$pkg/usr/bin/vxrouter"
B="$pkg/usr/bin/vxrouter"
"$B" render systemd --bin /usr/bin/vxrouter > "$pkg/lib/systemd/system/vxrouter@.service"
"$B" man | gzip -9n > "$pkg/usr/share/man/man1/vxrouter.1.gz"
"$B" completions bash > "$pkg/usr/share/bash-completion/completions/vxrouter"
"$B" completions zsh > "$pkg/usr/share/zsh/vendor-completions/_vxrouter"
"$B" completions fish > "$pkg/usr/share/fish/vendor_completions.d/vxrouter.fish"

doc="$pkg/usr/share/doc/vxrouter"
install -m 0644 README.md docs/*.md "$doc/"
cp -r profiles/. "$doc/examples/"
if [ -z "$license" ]; then
  echo "package.sh: warning: Cargo.toml declares no license; copyright says so" >&2
fi
cat > "$doc/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: vxrouter

Files: *
Copyright: $(date -u -d "@$SOURCE_DATE_EPOCH" +%Y) the vxrouter developers
License: ${license:-unspecified}
EOF
[ -n "$license" ] || printf ' The project has not declared a license yet (no "license" in Cargo.toml).\n' >> "$doc/copyright"

# Maintainer scripts: reload unit files if systemd runs; never enable/start.
cat > "$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# vxrouter@.service is new or changed: let a running systemd see it. Nothing
# is enabled or started; see `man vxrouter` and /usr/share/doc/vxrouter.
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
EOF
cat > "$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
# The unit file is gone: let a running systemd forget it. Networks that
# vxrouter built stay in place (`vxrouter destroy PROFILE` removes them).
if [ "$1" = remove ] || [ "$1" = purge ]; then
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || true
  fi
fi
exit 0
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/postrm"

# Shared-library dependencies as dpkg-shlibdeps computes them (it wants a
# debian/control; give it a minimal one in a scratch directory).
shl=$(mktemp -d)
trap 'rm -rf "$shl"' EXIT
mkdir -p "$shl/debian"
printf 'Source: vxrouter\n\nPackage: vxrouter\nArchitecture: any\n' > "$shl/debian/control"
depends=$(cd "$shl" && dpkg-shlibdeps -O -e "$root/$B" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "package.sh: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

find "$pkg" -type d -exec chmod 0755 {} +
find "$pkg" -type f ! -path "$pkg/DEBIAN/*" ! -path "$pkg/usr/bin/*" -exec chmod 0644 {} +
( cd "$pkg" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | LC_ALL=C sort -z |
    xargs -0 md5sum ) > "$pkg/DEBIAN/md5sums"
chmod 0644 "$pkg/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)

cat > "$pkg/DEBIAN/control" <<EOF
Package: vxrouter
Version: $version
Architecture: $arch
Maintainer: $maint
Installed-Size: $size
Depends: $depends
Recommends: nftables | iptables, dnsmasq-base
Suggests: keepalived, conntrackd, frr, libvirt-daemon-system
Section: net
Priority: optional
Description: VXLAN segments, bridges and a router namespace for KVM hosts
 vxrouter reads a profile (TOML) and provisions, idempotently, the VXLAN
 segments, Linux bridges and the router network namespace (NAT, DHCP via
 dnsmasq, firewall) that the KVM guests of a host attach to. The package
 ships the vxrouter binary, a systemd unit template vxrouter@.service
 (one instance per /etc/vxrouter/NAME.toml; nothing is enabled on install),
 the manual page, shell completions and example profiles.
EOF

dpkg-deb --root-owner-group -Zxz --build "$pkg" "$pkg.deb" >&2
rm -rf "$pkg"
echo "$root/$pkg.deb"
