# Shared helpers for the benchmark scripts (sourced, not run).

# The Debian mirror of this host, from its APT sources (deb822 first, then one-line
# format), so that no registry host is written into the repository. $OSBUILDER_MIRROR wins.
debian_mirror() {
    if [ -n "${OSBUILDER_MIRROR:-}" ]; then echo "$OSBUILDER_MIRROR"; return; fi
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            /^[[:space:]]*$/ { if (uri != "" && debian && !sec) { print uri; exit } uri=""; debian=0; sec=0; next }
            tolower($1) == "uris:" { uri=$2 }
            tolower($1) == "suites:" { for (i = 2; i <= NF; i++) { if ($i ~ /^(bookworm|trixie|forky|sid|bullseye|unstable|testing|stable)$/) debian=1; if ($i ~ /-security$/) sec=1 } }
            END { if (uri != "" && debian && !sec) print uri }
        ' "$f" | head -n1
    done | head -n1 | grep . && return
    grep -hE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
        | grep -vE 'security|updates' | awk '{for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) {print $i; exit}}' | head -n1
}

# Median of the numbers given as arguments.
median() {
    printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}

# Wall-clock seconds of a command (run through sh -c).
seconds() {
    local t0 t1
    t0=$(date +%s.%N)
    sh -c "$1" >/dev/null 2>&1 || { echo "benchmark command failed: $1" >&2; exit 1; }
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc -l
}

# A realistic Kata guest tree: Debian trixie minbase plus Kata's systemd package set,
# made once with mmdebstrap and reused.
kata_tree() {
    local dest=$1
    if [ -f "$dest/.complete" ]; then return; fi
    command -v mmdebstrap >/dev/null || { echo "mmdebstrap not found: apt-get install mmdebstrap" >&2; exit 1; }
    local mirror
    mirror=$(debian_mirror)
    [ -n "$mirror" ] || { echo "no Debian mirror in the APT sources; set OSBUILDER_MIRROR" >&2; exit 1; }
    rm -rf "$dest"
    mmdebstrap --quiet --mode=root --variant=minbase \
        --include=chrony,iptables,dbus,init,cryptsetup-bin,e2fsprogs,libseccomp2 \
        trixie "$dest" "$mirror" >&2
    touch "$dest/.complete"
}

# The osbuilder to measure: $OSBUILDER, else a release build of this checkout. Boot times
# are QEMU's, whichever build starts it, so a debug build does for those.
osbuilder_bin() {
    if [ -n "${OSBUILDER:-}" ]; then
        realpath "$OSBUILDER"
    else
        cargo build --release --quiet >&2
        echo "$PWD/target/release/osbuilder"
    fi
}

# Debian's cloud kernel for the boot benchmarks (`osbuilder kernel fetch`, once).
bench_kernel() {
    local bin=$1
    [ -x benches/work/kernel/vmlinuz ] \
        || "$bin" kernel fetch -o benches/work/kernel --mirror "$(debian_mirror)" >&2
    echo "$PWD/benches/work/kernel/vmlinuz"
}
