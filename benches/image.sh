#!/bin/sh
# osbuilder image vs a bare `mkfs.ext4 -d` of the same tree into a file of the same size.
# Usage: benches/image.sh [TREE] [ROUNDS]   (default /usr/lib/x86_64-linux-gnu, 3 rounds)
# Needs a release build: cargo build --release (CARGO_TARGET_DIR honoured).
# The two alternate, after one warm-up read of the tree; the fastest run of each counts
# (the build machines are shared, so the minimum is the least noisy figure).
set -eu
TREE=${1:-/usr/lib/x86_64-linux-gnu}
ROUNDS=${2:-3}
BIN=${CARGO_TARGET_DIR:-target}/release/osbuilder
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export SOURCE_DATE_EPOCH=1700000000
now() { date +%s.%N; }

tar -cf - -C "$TREE" . >/dev/null 2>&1 || true
TREE_BYTES=$(du -sb --apparent-size "$TREE" | cut -f1)
# osbuilder's journal rule (src/image/size.rs): 4 MiB below 256 MiB of files, else 16 MiB
JOURNAL=16; [ "$TREE_BYTES" -lt 268435456 ] && JOURNAL=4
best_o=999999; best_m=999999
i=0
while [ "$i" -lt "$ROUNDS" ]; do
    rm -f "$WORK/osb.img" "$WORK/bare.img"
    t0=$(now)
    "$BIN" image "$TREE" -o "$WORK/osb.img" --no-dax --align-mb 1 --skip-rootfs-check \
        --metadata /dev/null >/dev/null 2>"$WORK/log"
    t1=$(now)
    SIZE=$(stat -c %s "$WORK/osb.img")
    # Same filesystem size (partition = image - 1 MiB) and the same features as
    # osbuilder's mke2fs config, so the tree fits the same size.
    BLOCKS=$(( (SIZE - 1048576) / 4096 ))
    INODES=$(( $(find "$TREE" | wc -l) + 64 ))
    truncate -s "$SIZE" "$WORK/bare.img"
    t2=$(now)
    mkfs.ext4 -q -F -b 4096 -m 0 -N "$INODES" -J size="$JOURNAL" \
        -O ^resize_inode,^orphan_file,^metadata_csum_seed \
        -E offset=1048576 -d "$TREE" "$WORK/bare.img" "$BLOCKS"
    t3=$(now)
    best_o=$(echo "$best_o $t0 $t1" | awk '{d = $3 - $2; print (d < $1 ? d : $1)}')
    best_m=$(echo "$best_m $t2 $t3" | awk '{d = $3 - $2; print (d < $1 ? d : $1)}')
    i=$((i + 1))
done

awk -v o="$best_o" -v m="$best_m" -v s="$SIZE" -v t="$TREE_BYTES" -v n="$ROUNDS" 'BEGIN {
  printf "best of %d: osbuilder image %.2f s, mkfs.ext4 -d %.2f s\n", n, o, m;
  printf "ratio: %.2fx (target <= 1.15x)\n", o / m;
  printf "image %.1f MiB for a tree of %.1f MiB (%.3fx)\n", s / 1048576, t / 1048576, s / t }'
