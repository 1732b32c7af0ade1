//! `osbuilder boot` end to end: real kernels from Debian's packages, real QEMU (TCG).
//!
//! Needs qemu-system-x86 and qemu-system-arm, apt, dpkg, e2fsprogs and fdisk (sfdisk), and
//! the Debian mirror from the host's APT sources on first use (kernels are then cached under
//! the target dir). Skips, saying why, only when the mirror is unreachable.

mod common;

use common::osbuilder;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use osbuilder::agent::{POWEROFF_MARKER, READY_MARKER};
use osbuilder::arch::Arch;

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn host() -> Arch {
    Arch::host().expect("tests run on a supported arch")
}

fn write_exec(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `osbuilder initrd ROOTFS -o OUT`.
fn pack_initrd(rootfs: &Path, out: &Path) {
    let o = osbuilder()
        .arg("initrd")
        .arg(rootfs)
        .arg("-o")
        .arg(out)
        .args(["--all-root", "--compression", "gzip", "--level", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "osbuilder initrd: {o:?}");
}

/// Processes whose command line mentions `needle` (a unique temp path): leftover guests.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        if let Ok(c) = std::fs::read(e.path().join("cmdline")) {
            let c = String::from_utf8_lossy(&c).replace('\0', " ");
            if c.contains(needle) {
                found.push(format!("{}: {c}", e.file_name().to_string_lossy()));
            }
        }
    }
    found
}

fn assert_no_guest_left(dir: &Path) {
    // Give the kernel a moment to finish tearing down a killed QEMU.
    for _ in 0..50 {
        if processes_mentioning(&dir.display().to_string()).is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "a guest outlived osbuilder boot: {:?}",
        processes_mentioning(&dir.display().to_string())
    );
}

/// A rootfs whose /sbin/init is the embedded reference agent (the only file).
fn agent_rootfs(dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    write_exec(
        &rootfs.join("sbin/init"),
        osbuilder::agent::reference_agent(),
    );
    rootfs
}

#[test]
fn reference_agent_in_an_initrd_boots_reports_ready_and_powers_off() {
    let Some(kernel) = common::kernel::kernel(host().name()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = agent_rootfs(tmp.path());
    let initrd = tmp.path().join("initrd.img");
    pack_initrd(&rootfs, &initrd);

    let out = osbuilder()
        .args([
            "boot",
            "--poweroff",
            "--timeout",
            "90",
            "--verbose",
            "--kernel",
        ])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "boot failed:\n{stderr}");
    let ready = stdout
        .lines()
        .find(|l| l.starts_with("ready after "))
        .unwrap_or_else(|| panic!("no ready report in {stdout}"));
    let secs: f64 = ready["ready after ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 0.0 && secs < 90.0, "{ready}");
    assert!(
        ready.contains(&format!("{READY_MARKER} kernel=6."))
            && ready.contains(&format!("arch={}", host())),
        "{ready}"
    );
    assert!(ready.contains(" pid=1 "), "the agent ran as PID 1: {ready}");
    assert!(stdout.contains("powered off after "), "{stdout}");
    // --verbose showed the console: the kernel's banner, the agent's own lines, no warnings
    // from the agent (every mount worked), and the kernel's power-down.
    assert!(stderr.contains("Linux version"), "{stderr}");
    assert!(stderr.contains(POWEROFF_MARKER), "{stderr}");
    assert!(stderr.contains("reboot: Power down"), "{stderr}");
    assert!(!stderr.contains("osbuilder-agent: warning"), "{stderr}");
    assert_no_guest_left(tmp.path());
}

/// Debian's static arm64 busybox, installed by osbuilder's own backend (verified, no qemu).
fn static_busybox_arm64(dir: &Path) -> Option<PathBuf> {
    common::needs::mirror()?;
    let out = dir.join("busybox-rootfs");
    let res = osbuilder()
        .args([
            "rootfs",
            "--distro",
            "debian",
            "--arch",
            "arm64",
            "--no-agent",
        ])
        .args(["--packages", "busybox-static", "--cache-dir"])
        .arg(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache"))
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{err}");
    Some(out.join("usr/bin/busybox"))
}

#[test]
fn aarch64_busybox_init_script_boots_under_emulation() {
    let tmp = tempfile::tempdir().unwrap();
    let (Some(kernel), Some(busybox)) = (
        common::kernel::kernel("aarch64"),
        static_busybox_arm64(tmp.path()),
    ) else {
        return;
    };
    let rootfs = tmp.path().join("rootfs");
    write_exec(
        &rootfs.join("bin/busybox"),
        &std::fs::read(&busybox).unwrap(),
    );
    write_exec(
        &rootfs.join("sbin/init"),
        format!(
            "#!/bin/busybox sh\n\
             /bin/busybox mkdir -p /proc\n\
             /bin/busybox mount -t proc proc /proc\n\
             echo \"{READY_MARKER} kernel=$(/bin/busybox uname -r) arch=$(/bin/busybox uname -m) pid=$$\"\n\
             /bin/busybox sync\n\
             /bin/busybox poweroff -f\n"
        )
        .as_bytes(),
    );
    let initrd = tmp.path().join("initrd.img");
    pack_initrd(&rootfs, &initrd);

    // No --arch: osbuilder reads it from the kernel's header.
    let out = osbuilder()
        .args(["boot", "--poweroff", "--timeout", "90", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "boot failed:\n{stderr}");
    assert!(
        stderr.contains("qemu-system-aarch64") && stderr.contains("console=ttyAMA0"),
        "{stderr}"
    );
    assert!(stdout.contains("arch=aarch64 pid=1"), "{stdout}");
    assert!(stdout.contains("powered off after "), "{stdout}");
    assert_no_guest_left(tmp.path());
}

#[test]
fn ext4_disk_image_boots_over_nvme_without_an_initramfs() {
    let Some(kernel) = common::kernel::kernel(host().name()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = agent_rootfs(tmp.path());
    // The root is mounted read-only: the mount points must exist in the image.
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    // One partition at 1 MiB, ext4 made from the directory straight into the file.
    let image = tmp.path().join("disk.img");
    let f = std::fs::File::create(&image).unwrap();
    f.set_len(64 << 20).unwrap();
    drop(f);
    let mut sfdisk = Command::new("sfdisk")
        .arg("--quiet")
        .arg(&image)
        .stdin(Stdio::piped())
        .spawn()
        .expect("sfdisk (Debian package fdisk)");
    use std::io::Write;
    sfdisk
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nstart=2048, type=83\n")
        .unwrap();
    assert!(sfdisk.wait().unwrap().success());
    let blocks = ((64 << 20) - (1 << 20)) / 4096;
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-E", "offset=1048576", "-d"])
        .arg(&rootfs)
        .arg(&image)
        .arg(blocks.to_string())
        .output()
        .expect("mkfs.ext4 (Debian package e2fsprogs)");
    assert!(o.status.success(), "mkfs.ext4: {o:?}");

    let out = osbuilder()
        .args(["boot", "--poweroff", "--timeout", "90", "--kernel"])
        .arg(&kernel)
        .arg("--image")
        .arg(&image)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "boot failed:\n{stderr}");
    assert!(
        stderr.contains("root=/dev/nvme0n1p1 rootfstype=ext4 ro"),
        "{stderr}"
    );
    assert!(
        stdout.contains(READY_MARKER) && stdout.contains("pid=1"),
        "{stdout}"
    );
    assert!(stdout.contains("powered off after "), "{stdout}");
    assert_no_guest_left(tmp.path());
}

#[test]
fn an_initrd_without_a_working_init_fails_with_the_kernel_panic_and_console() {
    let Some(kernel) = common::kernel::kernel(host().name()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    // /sbin/init exists (osbuilder initrd insists) but cannot run: its interpreter is missing.
    write_exec(&rootfs.join("sbin/init"), b"#!/nonexistent/sh\n");
    let initrd = tmp.path().join("initrd.img");
    pack_initrd(&rootfs, &initrd);

    let out = osbuilder()
        // Returns at the panic; the long limit only covers a heavily loaded TCG host.
        .args(["boot", "--timeout", "300", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the guest kernel panicked: Kernel panic - not syncing"),
        "{stderr}"
    );
    assert!(stderr.contains("console lines:"), "{stderr}");
    assert!(
        stderr.contains("  | "),
        "the console tail is shown: {stderr}"
    );
    assert!(!stdout.contains("ready after"));
    assert_no_guest_left(tmp.path());
}

#[test]
fn waiting_in_vain_times_out_and_shows_the_console() {
    let Some(kernel) = common::kernel::kernel(host().name()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = agent_rootfs(tmp.path());
    let initrd = tmp.path().join("initrd.img");
    pack_initrd(&rootfs, &initrd);
    let out = osbuilder()
        .args([
            "boot",
            // Long enough for the agent to come up under TCG on a loaded 2-core host.
            "--timeout",
            "75",
            "--expect",
            "never printed",
            "--kernel",
        ])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("timed out after 75 s waiting for 'never printed' on the console"),
        "{stderr}"
    );
    // The agent did come up: its line is among the last console lines shown.
    assert!(
        stderr.contains(&format!("  | {READY_MARKER} kernel=")),
        "{stderr}"
    );
    assert_no_guest_left(tmp.path());
}

#[test]
fn a_garbage_kernel_fails_quickly_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("vmlinuz");
    std::fs::write(&kernel, vec![0x5a; 64 << 10]).unwrap();
    let initrd = tmp.path().join("initrd.img");
    std::fs::write(&initrd, b"not an initrd").unwrap();
    let out = osbuilder()
        .args(["boot", "--arch", "x86_64", "--timeout", "20", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(&initrd)
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("before 'osbuilder-agent: ready' appeared")
            || stderr.contains("timed out after 20 s"),
        "{stderr}"
    );
    assert!(
        stderr.contains("console") || stderr.contains("qemu said"),
        "{stderr}"
    );
    assert_no_guest_left(tmp.path());
}

#[test]
fn missing_inputs_are_clear_errors() {
    let out = osbuilder()
        .args([
            "boot",
            "--kernel",
            "/nonexistent/vmlinuz",
            "--initrd",
            "/nonexistent/i",
        ])
        .output()
        .unwrap();
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("cannot read the kernel /nonexistent/vmlinuz"),
        "{stderr}"
    );

    let out = osbuilder()
        .args(["boot", "--kernel", "/k"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "neither --initrd nor --image: usage error"
    );
}

#[test]
fn interrupting_osbuilder_stops_the_guest() {
    let Some(kernel) = common::kernel::kernel(host().name()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = agent_rootfs(tmp.path());
    let initrd = tmp.path().join("initrd.img");
    pack_initrd(&rootfs, &initrd);
    // Waits for text that never comes, so the guest is running when osbuilder is killed.
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let mut child = osbuilder()
            .args([
                "boot",
                "--timeout",
                "120",
                "--expect",
                "never printed",
                "--kernel",
            ])
            .arg(&kernel)
            .arg("--initrd")
            .arg(&initrd)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let needle = initrd.display().to_string();
        for _ in 0..100 {
            if processes_mentioning(&needle)
                .iter()
                .any(|p| p.contains("qemu-system"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            processes_mentioning(&needle)
                .iter()
                .any(|p| p.contains("qemu-system"))
        );
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().unwrap();
        assert!(!status.success());
        assert_no_guest_left(tmp.path());
    }
}
