#!/bin/busybox sh
# A stand-in agent for an arch osbuilder's reference agent is not built for (it is built for
# the host only). It prints the reference agent's ready line, which `osbuilder boot` waits
# for, and powers the guest off when the kernel command line says osbuilder.poweroff. It runs
# as PID 1 (agent-init) or under systemd (kata-agent.service), with Debian's static busybox
# (the busybox-static package) as its only dependency. For a real release, give Kata's agent
# instead: agent_tarball = "kata-static-agent.tar.zst".
bb=/bin/busybox
if [ "$$" = 1 ]; then
    $bb mount -t proc proc /proc
fi
echo "osbuilder-agent: ready kernel=$($bb uname -r) arch=$($bb uname -m) pid=$$"
if $bb grep -q 'osbuilder.poweroff' /proc/cmdline; then
    echo 'osbuilder-agent: powering off'
    $bb sync
    $bb poweroff -f
fi
# An agent does not exit (as PID 1 that would panic the kernel).
while :; do $bb sleep 3600; done
