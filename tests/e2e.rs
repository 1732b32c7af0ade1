//! End to end, as a user runs it: a Debian rootfs from the real mirror (the host's APT
//! sources), provisioned with an agent, packed, and booted under QEMU (TCG) with Debian's
//! kernel from `osbuilder kernel fetch`. Skips (recorded by `needs`) only when the mirror
//! cannot be reached. Downloads are shared through one cache, so the three builds fetch little twice.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache")
}

/// `osbuilder rootfs …`, or None (the skip recorded) when the mirror is unreachable. Once
/// the mirror answers, a failed build is a failure.
fn rootfs(out: &Path, args: &[&str]) -> Option<()> {
    needs::mirror()?;
    let res = run(osbuilder()
        .args(["rootfs", "--distro", "debian"])
        .args(args)
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000"));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        res.status.success(),
        "osbuilder rootfs {args:?} failed:\n{err}"
    );
    Some(())
}

fn boot(args: &[&str], artifact: (&str, &Path), kernel: &Path) -> Output {
    let out = run(osbuilder()
        .args([
            "boot",
            "--poweroff",
            "--verbose",
            "--timeout",
            "300",
            "--kernel",
        ])
        .arg(kernel)
        .arg(artifact.0)
        .arg(artifact.1)
        .args(args));
    assert!(
        out.status.success(),
        "boot failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn ready_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("ready after"))
        .unwrap_or_else(|| panic!("no ready report in {stdout}"))
        .to_string()
}

#[test]
fn debian_agent_init_rootfs_boots_to_the_agent_from_an_initrd() {
    let d = open_tempdir();
    let r = d.path().join("rootfs");
    if rootfs(&r, &["--agent-init"]).is_none() {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    // Provisioned: the agent is init, and osbuilder.yaml lists what was really installed.
    assert_eq!(
        std::fs::read(r.join("usr/sbin/init")).unwrap(),
        osbuilder::agent::reference_agent()
    );
    let yaml = std::fs::read_to_string(r.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(
        yaml.contains("name: \"libc6\"") && yaml.contains("agent-is-init-daemon: \"yes\""),
        "{yaml}"
    );
    let img = d.path().join("kata-containers-initrd.img");
    ok(osbuilder().arg("initrd").arg(&r).arg("-o").arg(&img));
    let out = boot(&[], ("--initrd", &img), &k);
    let ready = ready_line(&out);
    assert!(
        ready.contains("pid=1") && ready.contains("arch=x86_64"),
        "{ready}"
    );
}

#[test]
fn debian_systemd_rootfs_boots_from_a_disk_image_to_kata_containers_target() {
    let d = open_tempdir();
    let r = d.path().join("rootfs");
    // systemd is debian's default init mode.
    if rootfs(&r, &["--prune-units"]).is_none() {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let img = d.path().join("kata-containers.img");
    ok(osbuilder().arg("image").arg(&r).arg("-o").arg(&img));
    let out = boot(&[], ("--image", &img), &k);
    let ready = ready_line(&out);
    assert!(
        !ready.contains("pid=1 "),
        "the agent must run under systemd, not as PID 1: {ready}"
    );
    let console = String::from_utf8_lossy(&out.stderr);
    assert!(
        console
            .lines()
            .any(|l| l.contains("Reached target") && l.contains("kata-containers.target")),
        "systemd never reported kata-containers.target:\n{console}"
    );
}

#[test]
fn aarch64_rootfs_boots_under_qemu_system_aarch64() {
    let d = open_tempdir();
    // The agent: a script run by Debian's static arm64 busybox, installed from the arm64
    // archive into the rootfs (no code of the target runs on the host).
    let agent = busybox_agent(d.path());
    let r = d.path().join("rootfs");
    let agent_arg = agent.to_str().unwrap();
    if rootfs(
        &r,
        &[
            "--arch",
            "arm64",
            "--agent-init",
            "--packages",
            "busybox-static",
            "--agent-bin",
            agent_arg,
        ],
    )
    .is_none()
    {
        return;
    }
    let Some(k) = kernel::kernel("aarch64") else {
        return;
    };
    let busybox = String::from_utf8(
        ok(std::process::Command::new("file")
            .arg("-L")
            .arg(r.join("bin/busybox")))
        .stdout,
    )
    .unwrap();
    assert!(
        busybox.contains("ARM aarch64") && busybox.contains("statically linked"),
        "{busybox}"
    );
    let img = d.path().join("initrd-arm64.img");
    ok(osbuilder().arg("initrd").arg(&r).arg("-o").arg(&img));
    let out = boot(&["--arch", "aarch64"], ("--initrd", &img), &k);
    assert!(ready_line(&out).contains("arch=aarch64"));
}
