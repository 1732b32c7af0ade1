#!/bin/bash
# Benchmark: osbuilder's native Debian backend against mmdebstrap, same package set, same
# mirror, one run each, printed as a ratio.
#
#   amd64: osbuilder rootfs --systemd   vs  mmdebstrap --variant=required --include=<Kata set>
#   arm64: osbuilder rootfs --systemd   vs  mmdebstrap --arch=arm64 (maintainer scripts under
#          qemu-user through binfmt_misc; skipped when qemu-user-static/binfmt is missing)
#
# osbuilder keeps the docs (--keep-docs), as mmdebstrap does: the same tree from both.
# osbuilder is timed with a cold cache (downloads included, like mmdebstrap) and warm, with
# --no-agent (mmdebstrap installs no agent either).
# Needs root (mmdebstrap's root mode), mmdebstrap, and for arm64 qemu-user-static +
# binfmt-support. The mirror: $OSBUILDER_MIRROR, else the host's APT sources.
#
# Usage: benches/rootfs.sh [--skip-arm64 | --only-arm64]   (targets: amd64 <= 0.5x, arm64 <= 0.1x)
# Debian packages: mmdebstrap bc; for arm64 also qemu-user-static binfmt-support arch-test.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SUITE:-trixie}
PKGS=${PKGS:-chrony,iptables,dbus,cryptsetup-bin,e2fsprogs,libseccomp2,init}
SKIP_ARM64=no
SKIP_AMD64=no
[ "${1:-}" = --skip-arm64 ] && SKIP_ARM64=yes
[ "${1:-}" = --only-arm64 ] && SKIP_AMD64=yes

mirror=${OSBUILDER_MIRROR:-}
if [ -z "$mirror" ]; then
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    # First URI of a stanza whose suites are plain Debian code names (not -security/-updates).
    mirror=$(awk 'BEGIN{RS=""} /Suites:[^\n]*(bookworm|trixie|sid|stable)( |\n)/ && !/security/ {
                 for (i=1;i<=NF;i++) if ($i=="URIs:") {print $(i+1); exit}}' "$f")
    [ -n "$mirror" ] && break
  done
fi
[ -n "$mirror" ] || { echo "no mirror: set OSBUILDER_MIRROR" >&2; exit 2; }
command -v mmdebstrap >/dev/null || { echo "mmdebstrap missing: apt-get install mmdebstrap" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (mmdebstrap root mode)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q
OSB=$CARGO_TARGET_DIR/release/osbuilder
WORK=$(mktemp -d /var/tmp/osbuilder-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

now() { date +%s.%N; }
timed() { # timed NAME cmd... → prints seconds, keeps the log on failure
  local name=$1; shift
  local t0; t0=$(now)
  if ! "$@" >"$WORK/$name.log" 2>&1; then
    echo "$name failed:" >&2; tail -20 "$WORK/$name.log" >&2; exit 1
  fi
  echo "$(now) - $t0" | bc
}
count() { dpkg-query --admindir="$1/var/lib/dpkg" -W -f '${Package}\n' | wc -l; }

run_arch() {
  local arch=$1
  local osb_cold osb_warm mm
  osb_cold=$(timed "osb-$arch-cold" "$OSB" rootfs --distro debian --os-version "$SUITE" --systemd --no-agent --keep-docs \
    --arch "$arch" --extra-pkgs "$PKGS" --mirror "$mirror" --cache-dir "$WORK/cache-$arch" -o "$WORK/osb-$arch")
  osb_warm=$(timed "osb-$arch-warm" "$OSB" rootfs --distro debian --os-version "$SUITE" --systemd --no-agent --keep-docs \
    --arch "$arch" --extra-pkgs "$PKGS" --mirror "$mirror" --cache-dir "$WORK/cache-$arch" -o "$WORK/osb-$arch")
  mm=$(timed "mm-$arch" mmdebstrap --mode=root --variant=required --arch="$arch" --include="$PKGS" \
    "$SUITE" "$WORK/mm-$arch" "$mirror")
  printf '%-6s osbuilder cold %6.1f s, warm %6.1f s (%d pkgs) | mmdebstrap %6.1f s (%d pkgs) | ratio cold %.3f, warm %.3f\n' \
    "$arch" "$osb_cold" "$osb_warm" "$(count "$WORK/osb-$arch")" "$mm" "$(count "$WORK/mm-$arch")" \
    "$(echo "$osb_cold / $mm" | bc -l)" "$(echo "$osb_warm / $mm" | bc -l)"
  rm -rf "$WORK/osb-$arch" "$WORK/mm-$arch"
}

echo "suite $SUITE, packages: required + $PKGS"
[ "$SKIP_AMD64" = yes ] || run_arch amd64
if [ "$SKIP_ARM64" = no ] && ! command -v arch-test >/dev/null; then
  echo "arm64: skipped (mmdebstrap needs arch-test for a foreign architecture: apt-get install arch-test)"
elif [ "$SKIP_ARM64" = no ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
    update-binfmts --enable qemu-aarch64 2>/dev/null || true
  fi
  if [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    run_arch arm64
  else
    echo "arm64: skipped (needs qemu-user-static + binfmt-support for mmdebstrap)"
  fi
fi
