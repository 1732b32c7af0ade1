//! systemd-mode provisioning: the agent as a service, its target, tmp.mount, Kata's chrony
//! PTP settings, and the optional pruning of units a guest does not need (Kata's `-d`).

use std::io::Cursor;

use anyhow::Result;

use crate::pkg::extract::{Attrs, Extractor};

pub const UNIT_DIR: &str = "usr/lib/systemd/system";

/// The unit files the agent runs under (from agent-init/, or the agent tarball's own).
#[derive(Clone, Debug)]
pub struct AgentUnits {
    pub agent_service: String,
    pub containers_target: String,
}

/// Used when the rootfs has no usr/share/systemd/tmp.mount to copy (as Kata does).
const TMP_MOUNT: &str = "\
[Unit]
Description=Temporary Directory /tmp
ConditionPathIsSymbolicLink=!/tmp
DefaultDependencies=no
Conflicts=umount.target
Before=local-fs.target umount.target
After=swap.target

[Mount]
What=tmpfs
Where=/tmp
Type=tmpfs
Options=mode=1777,strictatime,nosuid,nodev
";

/// Units and generators Kata's `rootfs.sh -d` deletes: services a short-lived guest whose
/// only job is the agent does not need.
const PRUNED_UNITS: &[&str] = &[
    "systemd-coredump@",
    "systemd-journald",
    "systemd-journald-dev-log",
    "systemd-journal-flush",
    "systemd-random-seed",
    "systemd-timesyncd",
    "systemd-tmpfiles-setup",
    "systemd-udevd",
    "systemd-udevd-control",
    "systemd-udevd-kernel",
    "systemd-udev-trigger",
    "systemd-update-utmp",
];
const PRUNED_GENERATORS: &[&str] = &[
    "systemd-bless-boot-generator",
    "systemd-fstab-generator",
    "systemd-getty-generator",
    "systemd-gpt-auto-generator",
];

fn file(ex: &mut Extractor, path: &str, body: &[u8], mode: u32, mtime: i64) -> Result<()> {
    ex.write_file(
        path.as_bytes(),
        &mut Cursor::new(body),
        Attrs::root(mode, mtime),
    )?;
    Ok(())
}

fn link(ex: &mut Extractor, path: &str, target: &str, mtime: i64) -> Result<()> {
    ex.symlink(
        path.as_bytes(),
        target.as_bytes(),
        Attrs::root(0o777, mtime),
    )?;
    Ok(())
}

/// Install the units (unless the agent tarball brought its own) and enable them.
pub fn install_units(ex: &mut Extractor, units: &AgentUnits, mtime: i64) -> Result<()> {
    let service = format!("{UNIT_DIR}/kata-agent.service");
    let target = format!("{UNIT_DIR}/kata-containers.target");
    if ex.read_file(service.as_bytes())?.is_none() {
        file(ex, &service, units.agent_service.as_bytes(), 0o644, mtime)?;
    }
    if ex.read_file(target.as_bytes())?.is_none() {
        file(
            ex,
            &target,
            units.containers_target.as_bytes(),
            0o644,
            mtime,
        )?;
    }
    // Kata enables the target from basic.target, and dbus.socket from the target.
    link(
        ex,
        "etc/systemd/system/basic.target.wants/kata-containers.target",
        &format!("/{target}"),
        mtime,
    )?;
    if ex
        .read_file(format!("{UNIT_DIR}/dbus.socket").as_bytes())?
        .is_some()
    {
        link(
            ex,
            "etc/systemd/system/kata-containers.target.wants/dbus.socket",
            &format!("/{UNIT_DIR}/dbus.socket"),
            mtime,
        )?;
    }
    Ok(())
}

/// /tmp as tmpfs: Kata's kata-containers.target requires tmp.mount.
pub fn install_tmp_mount(ex: &mut Extractor, mtime: i64) -> Result<()> {
    let dest = b"etc/systemd/system/tmp.mount";
    if ex.read_file(dest)?.is_some() {
        return Ok(());
    }
    let body = ex
        .read_file(b"usr/share/systemd/tmp.mount")?
        .unwrap_or_else(|| TMP_MOUNT.as_bytes().to_vec());
    ex.write_file(dest, &mut Cursor::new(body), Attrs::root(0o644, mtime))?;
    Ok(())
}

/// Kata's chrony settings: take time from the host's PTP clock, not the network.
/// Returns whether chrony was found.
pub fn configure_chrony(ex: &mut Extractor, mtime: i64) -> Result<bool> {
    let (conf, unit) = if ex.read_file(b"etc/chrony/chrony.conf")?.is_some() {
        ("etc/chrony/chrony.conf", "chrony.service")
    } else if ex.read_file(b"etc/chrony.conf")?.is_some() {
        ("etc/chrony.conf", "chronyd.service")
    } else {
        return Ok(false);
    };
    let text =
        String::from_utf8_lossy(&ex.read_file(conf.as_bytes())?.unwrap_or_default()).into_owned();
    let mut out = String::new();
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "server" | "pool" | "peer") {
            out.push_str("# disabled by osbuilder (time comes from the host's PTP clock): ");
        }
        out.push_str(line);
        out.push('\n');
    }
    if !out.contains("refclock PHC /dev/ptp0") {
        out.push_str("refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0\nmakestep 1 -1\n");
    }
    file(ex, conf, out.as_bytes(), 0o644, mtime)?;
    // A drop-in rather than an edit of the packaged unit: survives package updates.
    let dropin = format!("etc/systemd/system/{unit}.d/10-kata-ptp.conf");
    file(
        ex,
        &dropin,
        b"[Unit]\nConditionPathExists=/dev/ptp0\n",
        0o644,
        mtime,
    )?;
    Ok(true)
}

/// Kata's `-d`: delete units and generators the agent guest does not need.
pub fn prune_units(ex: &mut Extractor) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for dir in [UNIT_DIR, "lib/systemd/system"] {
        for unit in PRUNED_UNITS {
            for suffix in [".service", ".socket"] {
                let p = format!("{dir}/{unit}{suffix}");
                if ex.read_file(p.as_bytes())?.is_some() {
                    ex.remove_file(p.as_bytes())?;
                    removed.push(p);
                }
            }
        }
        let timer = format!("{dir}/systemd-tmpfiles-clean.timer");
        if ex.read_file(timer.as_bytes())?.is_some() {
            ex.remove_file(timer.as_bytes())?;
            removed.push(timer);
        }
    }
    for g in PRUNED_GENERATORS {
        let p = format!("usr/lib/systemd/system-generators/{g}");
        if ex.read_file(p.as_bytes())?.is_some() {
            ex.remove_file(p.as_bytes())?;
            removed.push(p);
        }
    }
    Ok(removed)
}
