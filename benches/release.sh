#!/bin/bash
# Benchmark: `osbuilder release` of examples/osbuilder.toml (Debian agent-init initrd and
# systemd measured image, x86_64 and aarch64) — cold (empty cache: downloads, resolve,
# install, pack), warm (same cache, same lock: nothing to redo), after a new agent (the
# aarch64 rootfs trees re-provisioned from cached packages and re-packed), against what a
# user would otherwise script: the same four artifacts with the single commands (`osbuilder
# rootfs` + `initrd`/`image` + `tar --zstd`), which redo everything each time.
#
# Usage: benches/release.sh      (target: warm <= 0.1x cold)
# Needs: the Debian mirror (host APT sources or $OSBUILDER_MIRROR), e2fsprogs, tar, zstd, bc.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q
OSB=$PWD/$CARGO_TARGET_DIR/release/osbuilder
WORK=$(mktemp -d /var/tmp/osbuilder-bench.XXXXXX)
trap 'chmod -R u+rwX "$WORK"; rm -rf "$WORK"' EXIT
cp examples/osbuilder.toml examples/agent-busybox.sh "$WORK/"
cd "$WORK"
export SOURCE_DATE_EPOCH=1700000000 OSBUILDER_CACHE_DIR=$WORK/cache

cold=$(seconds "$OSB release -f osbuilder.toml -o rel-cold")
warm=$(seconds "$OSB release -f osbuilder.toml -o rel-warm")
cmp rel-cold/SHA256SUMS rel-warm/SHA256SUMS
echo '# a new agent build' >> agent-busybox.sh
agent=$(seconds "$OSB release -f osbuilder.toml -o rel-agent")

# The same artifacts with the single commands (the cache keeps the downloads warm, as a
# user's would; everything else is redone).
single() {
  local arch=$1 agent=()
  [ "$arch" = aarch64 ] && agent=(--agent-bin agent-busybox.sh --extra-pkgs busybox-static)
  "$OSB" rootfs --distro debian --arch "$arch" --agent-init "${agent[@]}" -o "r-initrd-$arch" --force
  "$OSB" initrd "r-initrd-$arch" -o "kata-debian-trixie-$arch.initrd"
  "$OSB" rootfs --distro debian --arch "$arch" --systemd --prune-units "${agent[@]}" -o "r-image-$arch" --force
  "$OSB" image "r-image-$arch" --measured -o "kata-debian-trixie-$arch.image" --arch "$arch"
  tar --zstd -cf "image-$arch.tar.zst" "kata-debian-trixie-$arch.image"
  tar --zstd -cf "initrd-$arch.tar.zst" "kata-debian-trixie-$arch.initrd"
}
t0=$(date +%s.%N)
{ single x86_64 && single aarch64; } >single.log 2>&1 || { tail -20 single.log >&2; exit 1; }
scripted=$(echo "$(date +%s.%N) - $t0" | bc -l)

ratio() { echo "scale=3; $1 / $2" | bc -l; }
printf '| run | time (s) | vs cold release |\n|---|---|---|\n'
printf '| osbuilder release, cold (empty cache) | %.1f | 1.000 |\n' "$cold"
printf '| osbuilder release, warm (nothing changed) | %.1f | **%s** |\n' "$warm" "$(ratio "$warm" "$cold")"
printf '| osbuilder release, new aarch64 agent | %.1f | %s |\n' "$agent" "$(ratio "$agent" "$cold")"
printf '| single commands (rootfs, initrd/image, tar), warm downloads | %.1f | %s |\n' "$scripted" "$(ratio "$scripted" "$cold")"
