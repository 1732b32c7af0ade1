#!/bin/sh
# osbuilder push / pull of a 200 MiB OS image to a registry on loopback, against
# `skopeo copy` of the same OCI layout (what a user would otherwise run).
# Usage: benches/oci.sh [ROUNDS]   (default 3; the fastest run of each counts)
# Needs a release build (cargo build --release; CARGO_TARGET_DIR honoured), docker-registry,
# skopeo and e2fsprogs. Every push goes to an empty registry (its storage is wiped and it is
# restarted), so neither tool finds a blob already there or mounts one from elsewhere.
set -eu
ROUNDS=${1:-3}
BIN=$(realpath "${CARGO_TARGET_DIR:-target}/release/osbuilder")
WORK=$(mktemp -d)
REG_PID=
cleanup() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
export SOURCE_DATE_EPOCH=1700000000
now() { date +%s.%N; }
for t in docker-registry skopeo mkfs.ext4; do
    command -v "$t" >/dev/null || { echo "$t not found (apt-get install docker-registry skopeo e2fsprogs)" >&2; exit 1; }
done

# The image: a real `osbuilder image` disk of 200 MiB holding 175 MiB of incompressible data.
mkdir -p "$WORK/tree/sbin" "$WORK/tree/data"
cp /bin/true "$WORK/tree/sbin/init"
head -c $((175 << 20)) /dev/urandom > "$WORK/tree/data/payload"
"$BIN" image "$WORK/tree" --no-dax --size-mb 200 -o "$WORK/rootfs.img" >/dev/null 2>&1
"$BIN" oci -o "$WORK/layout" --tag v1 --artifacts "arch=amd64,rootfs=$WORK/rootfs.img" >/dev/null 2>&1
SIZE=$(stat -c %s "$WORK/rootfs.img")

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$PORT
EOF
# A fresh, empty registry.
fresh_registry() {
    [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null && wait "$REG_PID" 2>/dev/null || true
    rm -rf "$WORK/registry"
    docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
    REG_PID=$!
    i=0
    until curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1; do
        i=$((i + 1)); [ "$i" -lt 200 ] || { cat "$WORK/registry.log" >&2; exit 1; }
        sleep 0.05
    done
}
REF=127.0.0.1:$PORT/bench/os:v1
# skopeo keeps a blob-info cache to mount blobs it pushed before: one per run, thrown away.
export XDG_DATA_HOME="$WORK/xdg" HOME="$WORK/home"
mkdir -p "$HOME"
SK="skopeo --insecure-policy"

best() { echo "$1 $2 $3" | awk '{d = $3 - $2; print (d < $1 ? d : $1)}'; }
bo_push=999999; bs_push=999999; bo_pull=999999; bs_pull=999999
i=0
while [ "$i" -lt "$ROUNDS" ]; do
    fresh_registry
    t0=$(now); "$BIN" push "$WORK/layout" "$REF" >/dev/null 2>"$WORK/log"; t1=$(now)
    bo_push=$(best "$bo_push" "$t0" "$t1")
    rm -rf "$WORK/pulled"
    t0=$(now); "$BIN" pull "$REF" --platform linux/amd64 -o "$WORK/pulled" >/dev/null 2>"$WORK/log"; t1=$(now)
    bo_pull=$(best "$bo_pull" "$t0" "$t1")
    cmp "$WORK/pulled/rootfs.img" "$WORK/rootfs.img"

    fresh_registry
    rm -rf "$WORK/xdg"
    t0=$(now); $SK copy -q --all --preserve-digests --dest-tls-verify=false "oci:$WORK/layout:v1" "docker://$REF" >/dev/null; t1=$(now)
    bs_push=$(best "$bs_push" "$t0" "$t1")
    rm -rf "$WORK/skopeo-pulled"
    t0=$(now); $SK copy -q --all --preserve-digests --src-tls-verify=false "docker://$REF" "oci:$WORK/skopeo-pulled:v1" >/dev/null; t1=$(now)
    bs_pull=$(best "$bs_pull" "$t0" "$t1")
    i=$((i + 1))
done

awk -v op="$bo_push" -v sp="$bs_push" -v ol="$bo_pull" -v sl="$bs_pull" -v s="$SIZE" -v n="$ROUNDS" 'BEGIN {
  printf "image: %.0f MiB, registry on 127.0.0.1, best of %d\n", s / 1048576, n;
  printf "push: osbuilder %.2f s (%.0f MiB/s), skopeo copy %.2f s: ratio %.2fx\n", op, s / 1048576 / op, sp, op / sp;
  printf "pull: osbuilder %.2f s (%.0f MiB/s), skopeo copy %.2f s: ratio %.2fx\n", ol, s / 1048576 / ol, sl, ol / sl }'
