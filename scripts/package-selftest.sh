#!/usr/bin/env bash
# Checks the vxrouter .deb by installing it with dpkg and removing it again
# (as root):
#   build (scripts/package.sh --no-build, or take the .deb given) -> dpkg-deb
#   checks -> dpkg -i -> vxrouter --version, systemd-analyze verify of the
#   unit template, man -w, completions parse, nothing enabled -> dpkg -r ->
#   not one file of the package left on disk -> dpkg -P -> dpkg forgot it.
#
# With --overlay (what tests/package.rs uses) the whole check runs in a
# private mount namespace in which /usr, /etc and /var are overlays whose
# writable layer is a tmpfs: dpkg, its database, the man-db trigger and the
# package's files all act on a throw-away copy-on-write view of this machine,
# and nothing of it reaches the real disk (the overlays vanish with the
# namespace). Without --overlay it installs on THIS machine for real; a trap
# purges the package on any failure, and it refuses to run if vxrouter is
# already installed as a package or a file it ships already exists.
# Usage: scripts/package-selftest.sh [--overlay] [PATH.deb]
# Needs: dpkg, man-db (man -w), systemd (systemd-analyze), util-linux
# (unshare), bash; for building: see scripts/package.sh.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
fail() { echo "package-selftest: FAIL: $*" >&2; exit 1; }
ok() { echo "package-selftest: ok: $*"; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs and purges the package)"
case "${1:-}" in
  --overlay)
    shift
    # Re-run in a private mount namespace (no mount propagates back).
    exec unshare --mount --propagation private -- "$0" --in-overlay "$@" ;;
  --in-overlay)
    shift
    # The writable layers live on a tmpfs mounted over /mnt: only in this
    # namespace, so not even an empty directory is left on the real disk.
    mount -t tmpfs -o mode=0700 vxr-pkg-overlay /mnt
    for d in usr etc var; do
      mkdir "/mnt/$d.up" "/mnt/$d.work"
      mount -t overlay "vxr-pkg-$d" -o "lowerdir=/$d,upperdir=/mnt/$d.up,workdir=/mnt/$d.work" "/$d" ||
        fail "cannot mount an overlay over /$d"
    done
    ok "overlays (tmpfs upper layer) over /usr /etc /var in a private mount namespace"
    ;;
esac
# The release binary is built beforehand (scripts/test.sh, or cargo build
# --release): building here could wait forever on the cargo lock held by a
# running `cargo test`.
if [ $# -ge 1 ]; then deb=$1; else deb=$("$root/scripts/package.sh" --no-build); fi
[ -f "$deb" ] || fail "no package at $deb"
if dpkg-query -W -f='${Status}' vxrouter 2>/dev/null | grep -q 'installed'; then
  fail "vxrouter is already installed as a package; not touching it"
fi

tmp=$(mktemp -d)
installed=0
cleanup() {
  if [ $installed -eq 1 ]; then dpkg -P vxrouter >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the archive ---------------------------------------------------------------
dpkg-deb -c "$deb" > "$tmp/contents"
# Files and symlinks the package ships (paths without the leading ".").
awk '$1 !~ /^d/ {p = $6; sub(/^\./, "", p); print p}' "$tmp/contents" > "$tmp/files"
for f in /usr/bin/vxrouter /lib/systemd/system/vxrouter@.service \
         /usr/share/man/man1/vxrouter.1.gz /usr/share/bash-completion/completions/vxrouter \
         /usr/share/zsh/vendor-completions/_vxrouter /usr/share/fish/vendor_completions.d/vxrouter.fish \
         /usr/share/doc/vxrouter/copyright /usr/share/doc/vxrouter/README.md; do
  grep -qxF "$f" "$tmp/files" || fail "package lacks $f"
done
grep -q '^/usr/share/doc/vxrouter/examples/.*\.toml$' "$tmp/files" || fail "no example profiles"
dpkg-deb -f "$deb" Package Version Architecture Maintainer Depends Section Priority > "$tmp/control"
for k in Package Version Architecture Maintainer Depends Section Priority; do
  grep -q "^$k: ." "$tmp/control" || fail "control has no $k"
done
ok "archive: $(wc -l < "$tmp/files") files; $(grep '^Depends' "$tmp/control")"
while read -r f; do
  [ ! -e "$f" ] && [ ! -L "$f" ] || fail "$f already exists on this machine; not overwriting it"
done < "$tmp/files"

# --- install -----------------------------------------------------------------
installed=1
dpkg -i "$deb" > "$tmp/install.log" 2>&1 || { cat "$tmp/install.log" >&2; fail "dpkg -i"; }
ok "dpkg -i"
want=$(dpkg-deb -f "$deb" Version)
got=$(/usr/bin/vxrouter --version)
[ "$got" = "vxrouter $want" ] || fail "vxrouter --version says '$got', want 'vxrouter $want'"
ok "$got"
# A template unit is verified as instance "vxrouter@i.service"; verify also
# runs the ExecStart= path check and `man vxrouter` for Documentation=.
systemd-analyze verify /lib/systemd/system/vxrouter@.service > "$tmp/verify.log" 2>&1 ||
  { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify"; }
[ ! -s "$tmp/verify.log" ] || { cat "$tmp/verify.log" >&2; fail "systemd-analyze verify printed warnings"; }
ok "systemd-analyze verify vxrouter@.service"
man=$(man -w vxrouter) || fail "man -w vxrouter"
[ "$man" = /usr/share/man/man1/vxrouter.1.gz ] || fail "man -w found $man"
man --warnings -l "$man" > /dev/null 2> "$tmp/man.log" || fail "man page does not render"
[ ! -s "$tmp/man.log" ] || { cat "$tmp/man.log" >&2; fail "groff warnings in the man page"; }
ok "man -w vxrouter: $man"
bash -n /usr/share/bash-completion/completions/vxrouter || fail "bash completion does not parse"
bash -c 'source /usr/share/bash-completion/completions/vxrouter && complete -p vxrouter' >/dev/null ||
  fail "bash completion registers no completion"
if command -v zsh >/dev/null; then zsh -n /usr/share/zsh/vendor-completions/_vxrouter || fail "zsh completion"; fi
if command -v fish >/dev/null; then fish -n /usr/share/fish/vendor_completions.d/vxrouter.fish || fail "fish completion"; fi
ok "completions"
# The postinst must not enable or start anything.
if ls /etc/systemd/system/*.wants/vxrouter@* >/dev/null 2>&1; then fail "install enabled a vxrouter unit"; fi
ok "nothing enabled"

# --- remove: nothing left; purge: dpkg forgets it ---------------------------------
dpkg -r vxrouter > "$tmp/remove.log" 2>&1 || { cat "$tmp/remove.log" >&2; fail "dpkg -r"; }
# The package ships no conffile, so `dpkg -r` alone must remove every file
# and directory of its own (not only `dpkg -P`).
left=0
while read -r f; do
  if [ -e "$f" ] || [ -L "$f" ]; then echo "left behind: $f" >&2; left=1; fi
done < "$tmp/files"
for d in /usr/share/doc/vxrouter /etc/vxrouter; do
  if [ -e "$d" ]; then echo "left behind: $d" >&2; left=1; fi
done
[ $left -eq 0 ] || fail "files of the package remain after dpkg -r"
ok "dpkg -r: no file of the package remains ($(wc -l < "$tmp/files") checked)"
dpkg -P vxrouter > "$tmp/purge.log" 2>&1 || { cat "$tmp/purge.log" >&2; fail "dpkg -P"; }
installed=0
! dpkg-query -W vxrouter >/dev/null 2>&1 || fail "dpkg still knows vxrouter after purge"
ok "dpkg -P: dpkg no longer knows vxrouter"
echo "package-selftest: OK ($deb)"
