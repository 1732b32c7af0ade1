//! Host disks (`osbuilder image --profile`): GPT with an EFI system partition holding the
//! rootfs's kernel and boot program, checked with sgdisk, fsck.fat, mtools and e2fsck; bare
//! filesystem images (`--table none`); the profile refusals of `osbuilder rootfs`. Hermetic:
//! the rootfs is a small tree with stand-in boot files (the real boots are tests/host_boot.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const EPOCH: &str = "1700000000";

/// A tree with what a host profile's disk needs: /sbin/init, a kernel and initrd in /boot,
/// systemd-boot's and Xen's EFI binaries (stand-ins: the firmware never runs them here).
fn host_tree(dir: &Path, deb_arch: &str) -> PathBuf {
    let r = dir.join(format!("host-{deb_arch}"));
    for (p, body) in [
        ("sbin/init".to_string(), "#!/bin/sh\n"),
        (
            format!("boot/vmlinuz-6.12.9-cloud-{deb_arch}"),
            "kernel bytes",
        ),
        (
            format!("boot/initrd.img-6.12.9-cloud-{deb_arch}"),
            "initrd bytes",
        ),
        ("boot/vmlinuz-6.1.0-old".to_string(), "old kernel"),
        (format!("boot/xen-4.20-{deb_arch}.efi"), "xen efi"),
        (
            "usr/lib/systemd/boot/efi/systemd-bootx64.efi".to_string(),
            "systemd-boot",
        ),
    ] {
        let p = r.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.join("sbin/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    r
}

fn image(rootfs: &Path, out: &Path, args: &[&str]) -> String {
    let o = ok(osbuilder()
        .arg("image")
        .arg(rootfs)
        .arg("-o")
        .arg(out)
        .args(args)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// (start sector, sectors, type code) of each partition, from sgdisk.
fn partitions(img: &Path) -> Vec<(u64, u64, String)> {
    let out = ok(Command::new("sgdisk").arg("-p").arg(img));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let n: u32 = w.first()?.parse().ok()?;
            let _ = n;
            let start: u64 = w[1].parse().ok()?;
            let end: u64 = w[2].parse().ok()?;
            Some((start, end - start + 1, w[5].to_string()))
        })
        .collect()
}

fn extract(img: &Path, start: u64, sectors: u64, to: &Path) {
    sh(&format!(
        "dd if='{}' of='{}' bs=512 skip={start} count={sectors} status=none",
        img.display(),
        to.display()
    ));
}

fn mtype(esp: &Path, path: &str) -> String {
    let out = ok(Command::new("mtype")
        .arg("-i")
        .arg(esp)
        .arg(format!("::{path}"))
        .env("MTOOLSRC", "/dev/null"));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn baremetal_disk_is_gpt_with_an_esp_booting_the_newest_kernel() {
    if !needs::tools(&[
        ("sgdisk", "gdisk"),
        ("fsck.fat", "dosfstools"),
        ("mtype", "mtools"),
        ("mformat", "mtools"),
        ("e2fsck", "e2fsprogs"),
    ]) {
        return;
    }
    let d = open_tempdir();
    let r = host_tree(d.path(), "amd64");
    let img = d.path().join("host.img");
    let params = image(
        &r,
        &img,
        &[
            "--profile",
            "baremetal",
            "--arch",
            "x86_64",
            "--cmdline",
            "quiet",
        ],
    );
    ok(Command::new("sgdisk").arg("-v").arg(&img));
    let parts = partitions(&img);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert_eq!(
        (parts[0].0, parts[0].1, parts[0].2.as_str()),
        (2048, 128 * 2048, "EF00")
    );
    assert_eq!(parts[1].2, "8304", "root is the DPS x86-64 root type");
    // The kernel command line names the root partition by its GPT UUID.
    let uuid =
        String::from_utf8_lossy(&ok(Command::new("sgdisk").args(["-i", "2"]).arg(&img)).stdout)
            .lines()
            .find_map(|l| {
                l.strip_prefix("Partition unique GUID: ")
                    .map(|g| g.trim().to_lowercase())
            })
            .unwrap();
    assert_eq!(
        params,
        format!("root=PARTUUID={uuid} rw console=ttyS0 quiet")
    );

    let esp = d.path().join("esp.fat");
    extract(&img, parts[0].0, parts[0].1, &esp);
    ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert_eq!(mtype(&esp, "/EFI/BOOT/BOOTX64.EFI"), "systemd-boot");
    assert_eq!(
        mtype(&esp, "/loader/entries/osbuilder.conf"),
        format!(
            "title osbuilder 6.12.9-cloud-amd64\nversion 6.12.9-cloud-amd64\n\
             linux /vmlinuz-6.12.9-cloud-amd64\ninitrd /initrd.img-6.12.9-cloud-amd64\n\
             options {params}\n"
        )
    );
    assert_eq!(mtype(&esp, "/vmlinuz-6.12.9-cloud-amd64"), "kernel bytes");
    assert!(mtype(&esp, "/loader/loader.conf").contains("default osbuilder.conf"));
    let root = d.path().join("root.ext4");
    extract(&img, parts[1].0, parts[1].1, &root);
    ok(Command::new("e2fsck").arg("-fn").arg(&root));

    // Reproducible, whatever the folder: same bytes under the same name.
    let other = d.path().join("again");
    std::fs::create_dir(&other).unwrap();
    let img2 = other.join("host.img");
    image(
        &r,
        &img2,
        &[
            "--profile",
            "baremetal",
            "--arch",
            "x86_64",
            "--cmdline",
            "quiet",
        ],
    );
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&img2).unwrap(),
        "not reproducible"
    );
}

#[test]
fn virtualization_disk_starts_xen_with_its_config_beside_it() {
    if !needs::tools(&[
        ("sgdisk", "gdisk"),
        ("fsck.fat", "dosfstools"),
        ("mtype", "mtools"),
        ("mformat", "mtools"),
    ]) {
        return;
    }
    let d = open_tempdir();
    let r = host_tree(d.path(), "arm64");
    let img = d.path().join("host.img");
    let params = image(
        &r,
        &img,
        &["--profile", "virtualization", "--arch", "aarch64"],
    );
    let parts = partitions(&img);
    assert_eq!(parts[0].2, "EF00");
    assert_eq!(parts[1].2, "8305", "root is the DPS aarch64 root type");
    let esp = d.path().join("esp.fat");
    extract(&img, parts[0].0, parts[0].1, &esp);
    ok(Command::new("fsck.fat").arg("-n").arg(&esp));
    assert_eq!(mtype(&esp, "/EFI/BOOT/BOOTAA64.EFI"), "xen efi");
    // Xen's EFI loader reads <its name>.cfg; the newest kernel by version is dom0's.
    let cfg = mtype(&esp, "/EFI/BOOT/BOOTAA64.cfg");
    assert!(cfg.starts_with("[global]\ndefault=osbuilder\n"), "{cfg}");
    assert!(
        cfg.contains("options=console=dtuart dom0_mem=1024M\n"),
        "{cfg}"
    );
    assert!(
        cfg.contains(&format!("kernel=vmlinuz-6.12.9-cloud-arm64 {params}\n")),
        "{cfg}"
    );
    assert!(params.ends_with(" rw console=hvc0"), "{params}");
    assert_eq!(
        mtype(&esp, "/EFI/BOOT/vmlinuz-6.12.9-cloud-arm64"),
        "kernel bytes"
    );
    assert!(
        cfg.contains("ramdisk=initrd.img-6.12.9-cloud-arm64\n"),
        "{cfg}"
    );
    assert_eq!(
        mtype(&esp, "/EFI/BOOT/initrd.img-6.12.9-cloud-arm64"),
        "initrd bytes"
    );
}

#[test]
fn bare_filesystem_images_and_refused_host_requests() {
    if !needs::tools(&[("e2fsck", "e2fsprogs")]) {
        return;
    }
    let d = open_tempdir();
    let r = host_tree(d.path(), "amd64");
    let img = d.path().join("bare.img");
    let params = image(&r, &img, &["--table", "none", "--no-dax"]);
    assert!(
        params.starts_with("root=/dev/vda rootfstype=ext4"),
        "{params}"
    );
    ok(Command::new("e2fsck").arg("-fn").arg(&img));

    let refused = |cmd: &mut Command, want: &str| {
        let o = run(cmd);
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{e}");
        assert!(e.contains(want), "wanted {want:?} in {e}");
    };
    let out = d.path().join("x.img");
    refused(
        osbuilder()
            .arg("image")
            .arg(&r)
            .arg("-o")
            .arg(&out)
            .args(["--table", "none"]),
        "--no-dax",
    );
    refused(
        osbuilder()
            .arg("image")
            .arg(&r)
            .arg("-o")
            .arg(&out)
            .args(["--profile", "cloud"]),
        "unknown profile 'cloud'; known: baremetal, virtualization",
    );
    refused(
        osbuilder().arg("image").arg(&r).arg("-o").arg(&out).args([
            "--profile",
            "baremetal",
            "--table",
            "mbr",
        ]),
        "--table gpt",
    );
    refused(
        osbuilder().arg("image").arg(&r).arg("-o").arg(&out).args([
            "--profile",
            "baremetal",
            "--esp-mb",
            "8",
        ]),
        "FAT32 needs at least 64 MiB",
    );
    assert!(!out.exists());
    // boot: a firmware boot takes no kernel; EL2 is for aarch64 guests.
    refused(
        osbuilder()
            .args(["boot", "--firmware", "uefi", "--kernel", "k", "--image"])
            .arg(&img),
        "cannot be used with",
    );
    refused(
        osbuilder()
            .args([
                "boot",
                "--firmware",
                "uefi",
                "--arch",
                "x86_64",
                "--virtualization",
                "--image",
            ])
            .arg(&img),
        "--virtualization is for aarch64",
    );
    // rootfs: refused before any download.
    let rootfs = |args: &[&str]| {
        let mut c = osbuilder();
        c.args(["rootfs", "--mirror", "http://127.0.0.1:9/none", "-o"])
            .arg(d.path().join("never"))
            .args(args);
        c
    };
    refused(
        &mut rootfs(&["--distro", "debian", "--profile", "cloud"]),
        "unknown profile",
    );
    refused(
        &mut rootfs(&["--distro", "alpine", "--profile", "baremetal"]),
        "no package list for alpine",
    );
    refused(
        &mut rootfs(&[
            "--distro",
            "debian",
            "--arch",
            "s390x",
            "--profile",
            "baremetal",
        ]),
        "is for x86_64, aarch64, not s390x",
    );
    refused(
        &mut rootfs(&[
            "--distro",
            "debian",
            "--profile",
            "baremetal",
            "--agent-init",
        ]),
        "--agent-init do not apply to a host profile",
    );
    refused(
        &mut rootfs(&[
            "--distro",
            "debian",
            "--profile",
            "baremetal,virtualization",
        ]),
        "a host is built from one --profile",
    );
    assert!(!d.path().join("never").exists());
}
