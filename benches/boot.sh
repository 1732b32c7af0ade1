#!/usr/bin/env bash
# Time to agent-ready of the main job's guests, side by side with the bare-kernel limit: an
# initrd that holds only the agent, booted on the same kernel in the same run. Every guest is
# Debian trixie from the host's mirror, with the reference agent, booted under QEMU TCG with
# Debian's cloud kernel (`osbuilder kernel fetch`); the time is what `osbuilder boot` reports
# (QEMU start to the agent's ready line). Rows: the agent-init initrd as `osbuilder rootfs`
# makes it (Kata's package set, docs left out) in each compression, the same with
# --keep-docs, the slim one (--package-set minimal), the Kata image on NVMe, and systemd.
#
# Usage: benches/boot.sh [RUNS]   (default 3; needs qemu-system-x86, bc)
#        OSBUILDER=path/to/osbuilder benches/boot.sh   (skip the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
runs=${1:-3}
work=$PWD/benches/work/boot
rm -rf "$work" && mkdir -p "$work"
bin=$(osbuilder_bin)
export SOURCE_DATE_EPOCH=1700000000
mirror=$(debian_mirror)
[ -n "$mirror" ] || { echo "no Debian mirror in the APT sources; set OSBUILDER_MIRROR" >&2; exit 1; }
kernel=$(bench_kernel "$bin")
q() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; }

# The bare-kernel limit: an empty tree provisioned with the agent as /sbin/init.
mkdir "$work/bare"
q "$bin" provision "$work/bare" --agent-init
q "$bin" initrd "$work/bare" -o "$work/bare.img"
q "$bin" rootfs --distro debian --agent-init --mirror "$mirror" -o "$work/agent"
q "$bin" rootfs --distro debian --agent-init --keep-docs --mirror "$mirror" -o "$work/agent-docs"
q "$bin" rootfs --distro debian --agent-init --package-set minimal --mirror "$mirror" -o "$work/minimal"
q "$bin" rootfs --distro debian --systemd --mirror "$mirror" -o "$work/systemd"
for c in gzip zstd xz none; do
    q "$bin" initrd "$work/agent" -o "$work/agent.$c.img" --compression "$c"
done
q "$bin" initrd "$work/agent-docs" -o "$work/agent-docs.img"
for c in gzip zstd none; do
    q "$bin" initrd "$work/minimal" -o "$work/minimal.$c.img" --compression "$c"
done
q "$bin" initrd "$work/systemd" -o "$work/systemd.img"
mkdir -p "$work/image" "$work/image-systemd"
q "$bin" image "$work/agent" -o "$work/image/kata-containers.img"
q "$bin" image "$work/systemd" -o "$work/image-systemd/kata-containers.img"

# One boot: the time to ready in seconds.
ready() {
    "$bin" boot --kernel "$kernel" --poweroff --timeout 600 "$@" 2>/dev/null \
        | awk '/^ready after/ {print $3}'
}
mib() { printf '%.1f' "$(echo "$(stat -c %s "$1") / 1048576" | bc -l)"; }
unpacked() { echo "scale=0; $(du -s --apparent-size -B1 "$1" | cut -f1) / 1048576" | bc -l; }

declare -a rows=(
    "agent only (the bare-kernel limit)|$work/bare.img|--initrd $work/bare.img"
    "agent-init initrd, gzip (the default)|$work/agent.gzip.img|--initrd $work/agent.gzip.img"
    "agent-init initrd, zstd|$work/agent.zstd.img|--initrd $work/agent.zstd.img"
    "agent-init initrd, xz|$work/agent.xz.img|--initrd $work/agent.xz.img"
    "agent-init initrd, uncompressed|$work/agent.none.img|--initrd $work/agent.none.img"
    "agent-init initrd, gzip, --keep-docs|$work/agent-docs.img|--initrd $work/agent-docs.img"
    "slim initrd (--package-set minimal), gzip|$work/minimal.gzip.img|--initrd $work/minimal.gzip.img"
    "slim initrd, zstd|$work/minimal.zstd.img|--initrd $work/minimal.zstd.img"
    "slim initrd, uncompressed|$work/minimal.none.img|--initrd $work/minimal.none.img"
    "agent-init Kata image, NVMe|$work/image/kata-containers.img|--disk nvme --image $work/image/kata-containers.img"
    "systemd initrd, gzip|$work/systemd.img|--initrd $work/systemd.img"
    "systemd Kata image, NVMe|$work/image-systemd/kata-containers.img|--disk nvme --image $work/image-systemd/kata-containers.img"
)
echo
echo "x86_64 q35 under TCG, Debian's cloud kernel, Debian trixie guests; median of $runs runs, each"
echo "row's runs interleaved with the bare-agent initrd's; $(nproc) cores; load average $(cut -d' ' -f1 /proc/loadavg) at the start."
echo "Unpacked sizes: agent-init $(unpacked "$work/agent") MiB, --keep-docs $(unpacked "$work/agent-docs") MiB, minimal $(unpacked "$work/minimal") MiB."
echo
echo "| guest | size (MiB) | time to ready, median (s) | range (s) | bare agent, median (s) | ratio |"
echo "|---|---|---|---|---|---|"
for row in "${rows[@]}"; do
    label=${row%%|*}
    rest=${row#*|}
    file=${rest%%|*}
    # shellcheck disable=SC2086
    set -- ${rest#*|}
    times=() bare=()
    for _ in $(seq "$runs"); do
        t=$(ready "$@")
        [ -n "$t" ] || { echo "boot failed: $label" >&2; exit 1; }
        b=$(ready --initrd "$work/bare.img")
        [ -n "$b" ] || { echo "boot failed: the bare-agent initrd" >&2; exit 1; }
        times+=("$t") bare+=("$b")
    done
    sorted=$(printf '%s\n' "${times[@]}" | sort -g)
    m=$(median "${times[@]}") mb=$(median "${bare[@]}")
    echo "| $label | $(mib "$file") | $m | $(echo "$sorted" | head -n1)–$(echo "$sorted" | tail -n1) | $mb | $(printf '%.2f' "$(echo "$m / $mb" | bc -l)") |"
done
echo
echo "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (a busy machine slows TCG; compare ratios)."
