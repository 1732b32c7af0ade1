#!/bin/sh
# osbuilder image vs a bare `mkfs.ext4 -d` of the same tree into a file of the same size.
# Usage: benches/image.sh [TREE]   (default /usr/lib/x86_64-linux-gnu)
# Needs a release build: cargo build --release (CARGO_TARGET_DIR honoured).
set -eu
TREE=${1:-/usr/lib/x86_64-linux-gnu}
BIN=${CARGO_TARGET_DIR:-target}/release/osbuilder
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export SOURCE_DATE_EPOCH=1700000000
now() { date +%s.%N; }

t0=$(now)
"$BIN" image "$TREE" -o "$WORK/osb.img" --no-dax --align-mb 1 --skip-rootfs-check \
    --metadata /dev/null >/dev/null 2>"$WORK/log"
t1=$(now)
SIZE=$(stat -c %s "$WORK/osb.img")
# Same filesystem size (partition = image - 1 MiB), plain mkfs.ext4 -d, host defaults.
BLOCKS=$(( (SIZE - 1048576) / 4096 ))
truncate -s "$SIZE" "$WORK/bare.img"
t2=$(now)
# Same features as osbuilder's config, so the tree fits the same size.
INODES=$(( $(find "$TREE" | wc -l) + 64 ))
mkfs.ext4 -q -F -b 4096 -m 0 -N "$INODES" -J size=16 -O ^resize_inode,^orphan_file,^metadata_csum_seed \
    -E offset=1048576 -d "$TREE" "$WORK/bare.img" "$BLOCKS"
t3=$(now)

TREE_BYTES=$(du -sb --apparent-size "$TREE" | cut -f1)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v s="$SIZE" -v t="$TREE_BYTES" 'BEGIN {
  o = b - a; m = d - c;
  printf "osbuilder image: %.2f s\nmkfs.ext4 -d:    %.2f s\nratio:           %.2fx (target <= 1.15x)\n", o, m, o / m;
  printf "image %.1f MiB for a tree of %.1f MiB (%.3fx)\n", s / 1048576, t / 1048576, s / t }'
