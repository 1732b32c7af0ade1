//! The host profiles, proven by booting them as a machine would, through UEFI firmware:
//!
//! - the aarch64 **virtualization** host under `qemu-system-aarch64 -M virt,virtualization=on`
//!   (TCG): AAVMF starts Xen (Debian's arm64 xen-hypervisor) from the EFI system partition,
//!   Xen starts the Debian arm64 dom0 built here, dom0's xendomains autostarts the bundled
//!   guest, and the guest's agent ready line reaches the console; on the way, Xen's own `xl`
//!   parses the bundle's config (`xl -N create`) in the booted dom0;
//! - the **baremetal** host under OVMF (x86_64) and AAVMF (aarch64): systemd-boot, the kernel,
//!   systemd to multi-user.target with containerd.
//!
//! Each takes minutes under TCG (full systemd in dom0 under an emulated hypervisor): they are
//! `#[ignore]`d in the default run and run by `make test-xen` (CI runs it as its own step).
//! Every boot is bounded by `osbuilder boot --timeout`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const EPOCH: &str = "1700000000";

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache")
}

/// `osbuilder rootfs --distro debian …` from the mirror, or None (the skip recorded).
fn rootfs(out: &Path, args: &[&str]) -> Option<()> {
    needs::mirror()?;
    let res = run(osbuilder()
        .args(["rootfs", "--distro", "debian"])
        .args(args)
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    assert!(
        res.status.success(),
        "osbuilder rootfs {args:?} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    Some(())
}

/// The UEFI firmware files of Debian's package for `arch`.
fn firmware(arch: &str) -> bool {
    let (file, package) = match arch {
        "x86_64" => ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
        _ => ("/usr/share/AAVMF/AAVMF_CODE.fd", "qemu-efi-aarch64"),
    };
    if Path::new(file).is_file() {
        return true;
    }
    needs::skip(needs::Missing::Tool {
        tool: file.into(),
        package: package.into(),
    });
    false
}

/// `osbuilder boot --firmware uefi`, the console kept (stderr) for the assertions.
fn uefi_boot(img: &Path, args: &[&str]) -> Output {
    let out = run(osbuilder()
        .args(["boot", "--firmware", "uefi", "--verbose", "--image"])
        .arg(img)
        .args(args));
    assert!(
        out.status.success(),
        "boot failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(root: &Path, path: &str, body: &str) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, body).unwrap();
}

/// A dom0 unit for the test only, started once xendomains has started the autostart guests:
/// it says whether xendomains is active, has Xen's `xl` parse each bundled config (dry run),
/// then copies the guests' console logs (xenconsoled writes them, the profile asks for it,
/// from the guest's first line) to dom0's console, which Xen puts on the serial port that
/// `osbuilder boot` reads. (systemd stops printing unit status once a unit owns the console.)
fn add_test_console_unit(host: &Path, guests: &[&str]) {
    let checks: Vec<String> = guests
        .iter()
        .map(|g| {
            format!(
                "if xl -N create /etc/xen/{g}.cfg >/dev/null 2>/run/xl-{g}.err; then echo \
                 \"xl-parse: ok /etc/xen/{g}.cfg\"; else echo \"xl-parse: FAIL /etc/xen/{g}.cfg\"; \
                 cat /run/xl-{g}.err; fi"
            )
        })
        .collect();
    let logs: Vec<String> = guests
        .iter()
        .map(|g| format!("/var/log/xen/console/guest-{g}.log"))
        .collect();
    write(
        host,
        "etc/systemd/system/osbuilder-test-console.service",
        &format!(
            "[Unit]\nDescription=osbuilder test: xl parse check and guest console relay\n\
             After=xen.service xendomains.service\n\n[Service]\nType=simple\n\
             ExecStartPre=/bin/sh -c 'echo \"xendomains: $(systemctl is-active xendomains.service)\"'\n\
             ExecStartPre=/bin/sh -c '{}'\n\
             ExecStart=/bin/sh -c 'touch {logs}; exec tail -n +1 -F {logs}'\n\
             StandardOutput=tty\nTTYPath=/dev/console\n\n[Install]\nWantedBy=multi-user.target\n",
            checks.join("; "),
            logs = logs.join(" ")
        ),
    );
    let link =
        host.join("etc/systemd/system/multi-user.target.wants/osbuilder-test-console.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/osbuilder-test-console.service", link).unwrap();
}

#[test]
#[ignore = "minutes under TCG: run by `make test-xen`"]
fn virtualization_host_boots_xen_dom0_and_the_bundled_guest() {
    if !needs::tools(&[
        ("qemu-system-aarch64", "qemu-system-arm"),
        ("mformat", "mtools"),
        ("mkfs.ext4", "e2fsprogs"),
        ("depmod", "kmod"),
        ("systemd-hwdb", "udev"),
    ]) || !firmware("aarch64")
    {
        return;
    }
    let d = open_tempdir();
    // The guest: Debian arm64, a busybox script agent as PID 1, from an initrd; its rootfs
    // also as its disk (xvda), so dom0's block backend and hotplug scripts are exercised.
    let agent = busybox_agent(d.path());
    let guest = d.path().join("guest");
    let agent_arg = agent.to_str().unwrap();
    if rootfs(
        &guest,
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
    ok(osbuilder()
        .arg("initrd")
        .arg(&guest)
        .arg("-o")
        .arg(d.path().join("guest-initrd.img")));
    write(
        d.path(),
        "guests.toml",
        "arch = \"aarch64\"\n[[guest]]\nname = \"guest1\"\nmemory = 256\nkernel = \"host\"\n\
         ramdisk = \"guest-initrd.img\"\nautostart = true\n[guest.disk]\ntype = \"rootfs_dir\"\n\
         source = \"guest\"\n",
    );
    let bundle = d.path().join("bundle");
    ok(osbuilder()
        .args(["xen", "bundle"])
        .arg(d.path().join("guests.toml"))
        .arg("-o")
        .arg(&bundle)
        .env("SOURCE_DATE_EPOCH", EPOCH));

    // The host: the virtualization profile for arm64, the bundle installed into it.
    let host = d.path().join("host");
    if rootfs(&host, &["--arch", "arm64", "--profile", "virtualization"]).is_none() {
        return;
    }
    ok(osbuilder()
        .args(["xen", "install"])
        .arg(&bundle)
        .arg(&host)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    add_test_console_unit(&host, &["guest1"]);
    let img = d.path().join("host.img");
    // nokaslr: without KASLR the kernel needs no page-table isolation, which costs a lot
    // under TCG; long unit timeouts: the emulated machine is slow, not broken.
    ok(osbuilder()
        .arg("image")
        .arg(&host)
        .args(["--profile", "virtualization", "--arch", "aarch64", "-o"])
        .arg(&img)
        .args(["--cmdline", "nokaslr systemd.default_timeout_start_sec=900"])
        .env("SOURCE_DATE_EPOCH", EPOCH));
    // The trees are in the disk now: keep the machine's disk free for the boot.
    for t in [&host, &guest] {
        let _ = std::fs::remove_dir_all(t);
    }

    let out = uefi_boot(
        &img,
        &[
            "--arch",
            "aarch64",
            "--virtualization",
            "--memory",
            "2048",
            "--timeout",
            "2400",
            "--expect",
            "osbuilder-agent: ready",
        ],
    );
    let console = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    for want in [
        "Xen 4.20", // Xen's EFI loader, from the ESP
        "Using configuration file 'BOOTAA64.cfg'",
        "(XEN) *** LOADING DOMAIN 0 ***",
        "Xen 4.20 support found",           // dom0's kernel under Xen
        "xl-parse: ok /etc/xen/guest1.cfg", // Xen's own xl parses the bundled config
        "xendomains: active",               // it started the guest, not a test step
    ] {
        assert!(console.contains(want), "{want:?} not on the console");
    }
    let ready = stdout
        .lines()
        .find(|l| l.starts_with("ready after"))
        .unwrap_or_else(|| panic!("no ready report in {stdout}"));
    assert!(
        ready.contains("arch=aarch64") && ready.contains("pid=1"),
        "{ready}"
    );
}

/// A unit for the test only, ordered after multi-user.target (pulled in by graphical.target,
/// Debian's default): it reports on dom0's console that the target was reached and whether
/// containerd runs. systemd's own status lines cannot be waited for: once a getty owns the
/// serial console, systemd stops printing them there.
fn add_test_ready_unit(host: &Path) {
    write(
        host,
        "etc/systemd/system/osbuilder-test-ready.service",
        "[Unit]\nDescription=osbuilder test: report multi-user.target\nAfter=multi-user.target\n\n\
         [Service]\nType=oneshot\nExecStart=/bin/sh -c 'echo \"osbuilder-test: multi-user.target \
         reached, containerd $(systemctl is-active containerd.service), $(uname -m)\"'\n\
         StandardOutput=tty\nTTYPath=/dev/console\n\n[Install]\nWantedBy=graphical.target\n",
    );
    let dir = host.join("etc/systemd/system/graphical.target.wants");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("osbuilder-test-ready.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/osbuilder-test-ready.service", link).unwrap();
}

/// The baremetal host for `arch` ("x86_64", "aarch64"): built, written, booted through UEFI
/// to multi-user.target, with containerd running.
fn baremetal_boots(arch: &str) {
    let (qemu, package) = match arch {
        "x86_64" => ("qemu-system-x86_64", "qemu-system-x86"),
        _ => ("qemu-system-aarch64", "qemu-system-arm"),
    };
    if !needs::tools(&[
        (qemu, package),
        ("mformat", "mtools"),
        ("mkfs.ext4", "e2fsprogs"),
        ("depmod", "kmod"),
        ("systemd-hwdb", "udev"),
    ]) || !firmware(arch)
    {
        return;
    }
    let d = open_tempdir();
    let host = d.path().join("host");
    if rootfs(&host, &["--arch", arch, "--profile", "baremetal"]).is_none() {
        return;
    }
    add_test_ready_unit(&host);
    let img = d.path().join("host.img");
    ok(osbuilder()
        .arg("image")
        .arg(&host)
        .args(["--profile", "baremetal", "--arch", arch, "-o"])
        .arg(&img)
        .args(["--cmdline", "nokaslr systemd.default_timeout_start_sec=900"])
        .env("SOURCE_DATE_EPOCH", EPOCH));
    // The host rootfs is not needed any more: keep the machine's disk free for the boot.
    let _ = std::fs::remove_dir_all(&host);
    let out = uefi_boot(
        &img,
        &[
            "--arch",
            arch,
            "--timeout",
            "1500",
            "--expect",
            "osbuilder-test: multi-user.target reached",
        ],
    );
    let console = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    for want in [
        "BdsDxe: starting Boot", // the firmware found the disk's boot program (systemd-boot)
        "Linux version",         // which started the kernel
    ] {
        assert!(console.contains(want), "{want:?} not on the console");
    }
    let ready = stdout
        .lines()
        .find(|l| l.starts_with("ready after"))
        .unwrap_or_else(|| panic!("no ready report in {stdout}"));
    assert!(
        ready.contains(&format!("containerd active, {arch}")),
        "{ready}"
    );
}

#[test]
#[ignore = "minutes under TCG: run by `make test-xen`"]
fn baremetal_host_boots_under_ovmf_to_multi_user_with_containerd() {
    baremetal_boots("x86_64");
}

#[test]
#[ignore = "minutes under TCG: run by `make test-xen`"]
fn baremetal_arm64_host_boots_under_aavmf_to_multi_user_with_containerd() {
    baremetal_boots("aarch64");
}
