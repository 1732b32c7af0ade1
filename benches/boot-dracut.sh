#!/usr/bin/env bash
# Boot times of the dracut method's artifacts and of a Kata image on each attachment Kata's
# runtime uses, under QEMU TCG with Debian's cloud kernel (`osbuilder kernel fetch`): the
# time from starting QEMU to the agent's ready line, as `osbuilder boot` reports it.
# The boot initramfs (virtio_blk, NVDIMM and dm-verity drivers are modules in that kernel)
# is built once before timing; every row then boots from the cache.
#
# Usage: benches/boot-dracut.sh [RUNS]   (default 3; needs dracut-core, qemu-system-x86, bc)
#        OSBUILDER=path/to/osbuilder benches/boot-dracut.sh   (skip the release build: the
#        times are QEMU's, whichever build starts it)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
work=$PWD/benches/work/dracut
rm -rf "$work" && mkdir -p "$work"
if [ -n "${OSBUILDER:-}" ]; then
    bin=$(realpath "$OSBUILDER")
else
    cargo build --release --quiet
    bin=$PWD/target/release/osbuilder
fi
export SOURCE_DATE_EPOCH=1700000000
[ -x benches/work/kernel/vmlinuz ] || "$bin" kernel fetch -o benches/work/kernel --mirror "$(debian_mirror)"
kernel=$PWD/benches/work/kernel/vmlinuz
cache=$work/cache

"$bin" initrd --method dracut --agent-init -o "$work/agent-init.img" 2>/dev/null
"$bin" initrd --method dracut --systemd -o "$work/systemd.img" 2>/dev/null
"$bin" rootfs --method dracut --agent-init -o "$work/rootfs" 2>/dev/null
mkdir -p "$work/kata" "$work/measured"
"$bin" image "$work/rootfs" -o "$work/kata/kata-containers.img" >/dev/null 2>&1
"$bin" image "$work/rootfs" --measured -o "$work/measured/kata-containers.img" >/dev/null 2>&1

# Time to ready of one boot.
ready() {
    "$bin" boot --kernel "$kernel" --cache-dir "$cache" --poweroff --timeout 600 "$@" 2>/dev/null \
        | awk '/^ready after/ {print $3}'
}
ready --disk virtio-blk --image "$work/kata/kata-containers.img" >/dev/null # builds the boot initramfs

declare -a names=(
    "dracut initrd, agent as init|--initrd $work/agent-init.img"
    "dracut initrd, systemd + kata-agent.service|--initrd $work/systemd.img"
    "Kata image (dracut rootfs), NVMe, no initramfs|--disk nvme --image $work/kata/kata-containers.img"
    "Kata image, virtio-blk (boot initramfs)|--disk virtio-blk --image $work/kata/kata-containers.img"
    "Kata image, NVDIMM with DAX (boot initramfs)|--disk nvdimm --image $work/kata/kata-containers.img"
    "measured Kata image, dm-verity over virtio-blk (boot initramfs)|--disk virtio-blk --image $work/measured/kata-containers.img"
    "measured Kata image, dm-verity over NVDIMM (boot initramfs)|--disk nvdimm --image $work/measured/kata-containers.img"
)
echo
echo "x86_64 q35 under TCG, Debian's cloud kernel; time to the agent's ready line; median of $runs runs; $(nproc) cores."
echo
echo "| guest | median (s) | range (s) |"
echo "|---|---|---|"
for row in "${names[@]}"; do
    label=${row%%|*}
    # shellcheck disable=SC2086
    set -- ${row#*|}
    times=()
    for _ in $(seq "$runs"); do
        t=$(ready "$@")
        [ -n "$t" ] || { echo "boot failed: $label" >&2; exit 1; }
        times+=("$t")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -g)
    echo "| $label | $(median "${times[@]}") | $(echo "$sorted" | head -n1)–$(echo "$sorted" | tail -n1) |"
done
