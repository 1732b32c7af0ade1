#!/usr/bin/env bash
# Benchmark: `osbuilder initrd` (gzip, zstd) against Kata's own pipeline,
#   (cd rootfs && find . | cpio -H newc -o | gzip -9)
# on the same realistic tree (Debian trixie minbase + Kata's systemd package set), in one run.
# Prints a Markdown table of median times and sizes, with ratios to the baseline.
#
# Usage: benches/initrd.sh [RUNS]   (default 3; needs root for mmdebstrap, cpio, bc)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
work=benches/work
mkdir -p "$work"
cargo build --release --quiet
bin=$PWD/target/release/osbuilder
kata_tree "$work/rootfs"
rootfs=$PWD/$work/rootfs
tree_mib=$(du -sm --apparent-size "$rootfs" | cut -f1)
files=$(find "$rootfs" | wc -l)

declare -A cmd=(
    [baseline]="cd '$rootfs' && find . | cpio -H newc -o --quiet | gzip -9 > '$PWD/$work/baseline.img'"
    [gzip]="'$bin' initrd '$rootfs' -o '$PWD/$work/osb-gzip.img' --compression gzip"
    [zstd]="'$bin' initrd '$rootfs' -o '$PWD/$work/osb-zstd.img' --compression zstd"
)
declare -A out=([baseline]=baseline.img [gzip]=osb-gzip.img [zstd]=osb-zstd.img)
declare -A med
for name in baseline gzip zstd; do
    times=()
    for _ in $(seq "$runs"); do times+=("$(seconds "${cmd[$name]}")"); done
    med[$name]=$(median "${times[@]}")
done
base_t=${med[baseline]}
base_s=$(stat -c %s "$work/baseline.img")
echo
echo "Tree: Debian trixie minbase + Kata's systemd packages, $files entries, $tree_mib MiB; $(nproc) cores; median of $runs runs."
echo
echo "| command | time (s) | time ratio | size (MiB) | size ratio |"
echo "|---|---|---|---|---|"
for name in baseline gzip zstd; do
    s=$(stat -c %s "$work/${out[$name]}")
    label='find . \| cpio -H newc -o \| gzip -9'
    [ "$name" = baseline ] || label="osbuilder initrd --compression $name"
    printf '| %s | %.2f | %.3f | %.1f | %.3f |\n' "$label" "${med[$name]}" \
        "$(echo "${med[$name]} / $base_t" | bc -l)" "$(echo "$s / 1048576" | bc -l)" "$(echo "$s / $base_s" | bc -l)"
done
