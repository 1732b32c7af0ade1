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
bin=$(osbuilder_bin)
export SOURCE_DATE_EPOCH=1700000000
kernel=$(bench_kernel "$bin")
cache=$work/cache

"$bin" initrd --method dracut --agent-init -o "$work/agent-init.img" 2>/dev/null
"$bin" initrd --method dracut --systemd -o "$work/systemd.img" 2>/dev/null
"$bin" rootfs --method dracut --agent-init -o "$work/rootfs" 2>/dev/null
mkdir -p "$work/kata" "$work/measured"
"$bin" image "$work/rootfs" -o "$work/kata/kata-containers.img" >/dev/null 2>&1
"$bin" image "$work/rootfs" --measured -o "$work/measured/kata-containers.img" >/dev/null 2>&1

# One boot: "<time to ready> <CPU seconds of osbuilder and QEMU until power-off>". On a busy
# machine the first grows with the load; the second hardly does, and is what the first
# would be on an idle one (one vCPU, TCG).
ready() {
    local out cpu
    out=$(mktemp)
    cpu=$( { TIMEFORMAT='%U %S'; time "$bin" boot --kernel "$kernel" --cache-dir "$cache" \
        --poweroff --timeout 600 "$@" > "$out" 2>/dev/null; } 2>&1 | awk '{print $1 + $2}')
    echo "$(awk '/^ready after/ {print $3}' "$out") $cpu"
    rm -f "$out"
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
echo "x86_64 q35 under TCG, Debian's cloud kernel; median of $runs runs; $(nproc) cores; load average $(cut -d' ' -f1 /proc/loadavg) at the end."
echo
echo "| guest | time to ready, median (s) | range (s) | CPU to power-off, median (s) |"
echo "|---|---|---|---|"
for row in "${names[@]}"; do
    label=${row%%|*}
    # shellcheck disable=SC2086
    set -- ${row#*|}
    times=() cpus=()
    for _ in $(seq "$runs"); do
        read -r t c < <(ready "$@")
        [ -n "$t" ] || { echo "boot failed: $label" >&2; exit 1; }
        times+=("$t") cpus+=("$c")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -g)
    echo "| $label | $(median "${times[@]}") | $(echo "$sorted" | head -n1)–$(echo "$sorted" | tail -n1) | $(median "${cpus[@]}") |"
done
