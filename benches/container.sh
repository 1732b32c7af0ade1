#!/bin/bash
# Benchmark: the same Debian request built natively and in a podman builder container
# (`osbuilder rootfs --builder podman`, mmdebstrap inside), cold and warm, printed as ratios.
#
#   request: debian trixie amd64, --systemd (Kata's systemd package set), --no-agent
#   cold:    empty download cache; podman: no builder image yet, so the offline bootstrap of
#            the image (native install of mmdebstrap + import) is part of the run
#   warm:    the download cache filled; podman: the builder image reused (mmdebstrap still
#            downloads its packages: the container keeps no cache between runs)
#
# podman runs with its own vfs storage in the work folder (the machine's images are not
# touched), as root, with runc. The mirror: $OSBUILDER_MIRROR, else the host's APT sources.
#
# Usage: nice -n 10 benches/container.sh
# Debian packages: podman runc bc.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

mirror=$(debian_mirror)
[ -n "$mirror" ] || { echo "no mirror: set OSBUILDER_MIRROR" >&2; exit 2; }
command -v podman >/dev/null || { echo "podman missing: apt-get install podman runc" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root (rootless podman needs subordinate ids)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q
OSB=$CARGO_TARGET_DIR/release/osbuilder
WORK=$(mktemp -d /var/tmp/osbuilder-bench-container.XXXXXX)
trap 'rm -rf "$WORK" "/run/osbuilder-bench-$$"' EXIT
cat >"$WORK/storage.conf" <<EOF
[storage]
driver = "vfs"
graphroot = "$WORK/graph"
runroot = "/run/osbuilder-bench-$$"
EOF
export CONTAINERS_STORAGE_CONF=$WORK/storage.conf

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
build() { # build NAME BUILDER
  timed "$1" "$OSB" rootfs --distro debian --systemd --no-agent --builder "$2" \
    --mirror "$mirror" --cache-dir "$WORK/cache-$2" -o "$WORK/$1"
}

native_cold=$(build native-cold native)
native_warm=$(build native-warm native)
podman_cold=$(build podman-cold podman)
podman_warm=$(build podman-warm podman)
printf 'native: cold %6.1f s, warm %6.1f s (%d packages)\n' "$native_cold" "$native_warm" "$(count "$WORK/native-warm")"
printf 'podman: cold %6.1f s, warm %6.1f s (%d packages)\n' "$podman_cold" "$podman_warm" "$(count "$WORK/podman-warm")"
printf 'native / podman: cold %.3f, warm %.3f (podman is %.1fx / %.1fx slower)\n' \
  "$(echo "$native_cold / $podman_cold" | bc -l)" "$(echo "$native_warm / $podman_warm" | bc -l)" \
  "$(echo "$podman_cold / $native_cold" | bc -l)" "$(echo "$podman_warm / $native_warm" | bc -l)"
