//! The dracut build method on this host (the host is the base: Debian 12 here), and images
//! booted the way Kata's runtime attaches them, under QEMU (TCG) with Debian's cloud kernel
//! from `osbuilder kernel fetch`, whose virtio_blk, NVDIMM and device-mapper drivers are
//! modules (so `osbuilder boot` builds its boot initramfs with the dracut method).
//!
//! Artifacts are checked with tools we did not write: GNU cpio, e2fsck, debugfs. One guest
//! runs at a time; the agent-init initrd and the Kata images are built once and shared.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use common::*;

const SDE: &str = "1700000000";

/// One QEMU guest at a time (the build machines are shared).
static GUEST: Mutex<()> = Mutex::new(());

fn needs_dracut() -> bool {
    needs::tools(&[("dracut", "dracut-core"), ("cpio", "cpio")])
}

/// The boot initramfs cache, shared by the boot tests (and by later runs).
fn boot_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dracut-boot-cache")
}

fn dracut_initrd(args: &[&str], out: &Path) -> Output {
    run(osbuilder()
        .args(["initrd", "--method", "dracut"])
        .args(args)
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", SDE))
}

fn boot(kernel: &Path, args: &[&str]) -> Output {
    let _one = GUEST.lock().unwrap_or_else(|e| e.into_inner());
    run(osbuilder()
        .args(["boot", "--verbose", "--timeout", "600", "--kernel"])
        .arg(kernel)
        .arg("--cache-dir")
        .arg(boot_cache())
        .args(args))
}

fn booted(out: &Output) -> (String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "boot failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    let ready = stdout
        .lines()
        .find(|l| l.starts_with("ready after"))
        .unwrap_or_else(|| panic!("no ready report in {stdout}"))
        .to_string();
    (ready, stderr)
}

/// A folder for what several tests share (statics are never dropped, so it cannot be a
/// TempDir): `target/tmp/dracut-fixtures/<pid>`, those of finished runs removed first.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dracut-fixtures");
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let alive = e
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        let d = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// The default (reference) agent as init, built once as root with SOURCE_DATE_EPOCH.
fn agent_init_initrd() -> &'static Path {
    static IMG: OnceLock<PathBuf> = OnceLock::new();
    IMG.get_or_init(|| {
        let p = fixtures().join("kata-containers-initrd.img");
        let out = dracut_initrd(&["--agent-init"], &p);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        p
    })
}

fn listing(img: &Path) -> String {
    cpio_list(img, "gzip -dc")
}

#[test]
fn dracut_initrd_is_reproducible_and_the_same_built_rootless() {
    if !needs_dracut() || !needs::root() {
        return;
    }
    let a = agent_init_initrd();
    // Another run, another place and name, as uid 65534: the same bytes.
    let d = open_tempdir();
    sh(&format!("chown 65534:65534 '{}'", d.path().display()));
    let b = d.path().join("other-name.img");
    let out = run(osbuilder_as_nobody()
        .args(["initrd", "--method", "dracut", "--agent-init", "-o"])
        .arg(&b)
        .env("SOURCE_DATE_EPOCH", SDE)
        .env("HOME", d.path()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(a).unwrap() == std::fs::read(&b).unwrap(),
        "two dracut builds with SOURCE_DATE_EPOCH differ (root vs uid 65534)"
    );
    // GNU cpio's view of the rootless archive: everything root's, the console node there,
    // /init leading to the agent, every time clamped to SOURCE_DATE_EPOCH.
    let list = String::from_utf8(
        sh(&format!(
            "gzip -dc < '{}' | cpio -itv --quiet --numeric-uid-gid",
            b.display()
        ))
        .stdout,
    )
    .unwrap();
    for line in list.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "not root-owned: {line}");
    }
    assert!(
        list.lines().any(|l| l.starts_with("crw-------")
            && l.contains("5,   1")
            && l.ends_with(" dev/console")),
        "no /dev/console in\n{list}"
    );
    assert!(list.contains(" init -> /sbin/init"), "{list}");
    let x = d.path().join("x");
    gnu_cpio_extract(&b, "gzip -dc", &x);
    assert_eq!(
        std::fs::read(x.join("usr/sbin/init")).unwrap(),
        osbuilder::agent::reference_agent()
    );
    let yaml = std::fs::read_to_string(x.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    for needle in [
        "build-method: \"dracut\"",
        "agent-is-init-daemon: \"yes\"",
        "rootfs-creation-time: \"2023-11-14T22:13:20",
        "name: \"systemd\"",
    ] {
        assert!(yaml.contains(needle), "{needle} missing in\n{yaml}");
    }
}

#[test]
fn agent_init_initrd_boots_to_the_reference_agent() {
    if !needs_dracut() {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let (ready, _) = booted(&boot(
        &k,
        &[
            "--poweroff",
            "--initrd",
            agent_init_initrd().to_str().unwrap(),
        ],
    ));
    assert!(
        ready.contains("pid=1") && ready.contains("arch=x86_64"),
        "{ready}"
    );
}

#[test]
fn systemd_initrd_boots_to_kata_containers_target_with_the_agent_as_a_service() {
    if !needs_dracut() {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let d = open_tempdir();
    let img = d.path().join("systemd.img");
    let out = dracut_initrd(&["--systemd", "--compression", "zstd"], &img);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = cpio_list(&img, "zstd -dc");
    for needle in [
        " init -> usr/lib/systemd/systemd",
        " usr/bin/kata-agent",
        " etc/systemd/system/basic.target.wants/kata-containers.target -> ",
    ] {
        assert!(list.contains(needle), "{needle} missing in\n{list}");
    }
    // systemd's own log on the console (its status lines are cut to the console's width).
    let (ready, console) = booted(&boot(
        &k,
        &[
            "--poweroff",
            "--append",
            "systemd.log_target=kmsg",
            "--initrd",
            img.to_str().unwrap(),
        ],
    ));
    assert!(
        !ready.contains("pid=1 "),
        "the agent must run under systemd: {ready}"
    );
    for unit in [
        "Started kata-agent.service",
        "Reached target kata-containers.target",
    ] {
        assert!(
            console.lines().any(|l| l.contains(unit)),
            "systemd never reported '{unit}':\n{console}"
        );
    }
}

/// `make image BUILD_METHOD=dracut` (agent as init, Kata's layout: MBR + DAX header) and a
/// measured image of the same rootfs, built once.
struct Images {
    kata: PathBuf,
    measured: PathBuf,
}

fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let d = fixtures();
        let rootfs = d.join("dracut_rootfs");
        std::fs::create_dir(d.join("kata")).unwrap();
        std::fs::create_dir(d.join("measured")).unwrap();
        let kata = d.join("kata/kata-containers.img");
        ok(Command::new("make")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(["image", "BUILD_METHOD=dracut", "AGENT_INIT=yes"])
            .arg(format!("OSBUILDER={}", env!("CARGO_BIN_EXE_osbuilder")))
            .arg(format!("ROOTFS_DIR={}", rootfs.display()))
            .arg(format!("IMAGE={}", kata.display()))
            .env("SOURCE_DATE_EPOCH", SDE));
        let measured = d.join("measured/kata-containers.img");
        ok(osbuilder()
            .arg("image")
            .arg(&rootfs)
            .arg("--measured")
            .arg("-o")
            .arg(&measured)
            .env("SOURCE_DATE_EPOCH", SDE));
        Images { kata, measured }
    })
}

/// Byte offset of the first partition, from MBR#1.
fn p1_offset(img: &Path) -> u64 {
    let b = std::fs::read(img).unwrap();
    u32::from_le_bytes(b[446 + 8..446 + 12].try_into().unwrap()) as u64 * 512
}

#[test]
fn make_image_dracut_passes_e2fsck_and_boots_over_virtio_blk_and_nvdimm_with_dax() {
    if !needs_dracut()
        || !needs::tools(&[
            ("make", "make"),
            ("e2fsck", "e2fsprogs"),
            ("mkfs.ext4", "e2fsprogs"),
        ])
    {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let img = &images().kata;
    let fs = format!("{}?offset={}", img.display(), p1_offset(img));
    let fsck = run(Command::new("e2fsck").args(["-fn", &fs]));
    assert!(
        fsck.status.success(),
        "e2fsck: {}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );

    let (ready, console) = booted(&boot(
        &k,
        &[
            "--poweroff",
            "--disk",
            "virtio-blk",
            "--image",
            img.to_str().unwrap(),
        ],
    ));
    assert!(ready.contains("pid=1"), "{ready}");
    assert!(
        console.contains("osbuilder-boot: root /dev/vda1 (ext4, ro,"),
        "{console}"
    );

    let (ready, console) = booted(&boot(
        &k,
        &[
            "--poweroff",
            "--disk",
            "nvdimm",
            "--image",
            img.to_str().unwrap(),
        ],
    ));
    assert!(ready.contains("pid=1"), "{ready}");
    // The DAX header made a pfn device, and ext4 mounted it with DAX.
    let root = console
        .lines()
        .find(|l| l.contains("osbuilder-boot: root "))
        .unwrap_or_else(|| panic!("no root line in\n{console}"));
    assert!(
        root.contains("/dev/pmem0p1") && root.contains("dax=always"),
        "{root}"
    );
    assert!(console.contains("nd_pmem pfn0"), "{console}");
}

#[test]
fn measured_image_boots_with_dm_verity_and_a_corrupted_block_cannot_be_read() {
    if !needs_dracut()
        || !needs::tools(&[
            ("make", "make"),
            ("mkfs.ext4", "e2fsprogs"),
            ("debugfs", "e2fsprogs"),
        ])
    {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let img = &images().measured;
    let (ready, console) = booted(&boot(
        &k,
        &[
            "--poweroff",
            "--disk",
            "virtio-blk",
            "--image",
            img.to_str().unwrap(),
        ],
    ));
    assert!(ready.contains("pid=1"), "{ready}");
    assert!(
        console.contains("osbuilder-boot: root /dev/dm-0 (ext4, ro,"),
        "{console}"
    );
    assert!(console.contains("device-mapper: verity"), "{console}");

    // One data block changed: the agent's first block, which the guest must read to start.
    let d = open_tempdir();
    let bad = d.path().join("kata-containers.img");
    sh(&format!(
        "cp --sparse=always '{}' '{}' && cp '{}' '{}'",
        img.display(),
        bad.display(),
        img.parent().unwrap().join("root_hash.txt").display(),
        d.path().join("root_hash.txt").display()
    ));
    let p1 = p1_offset(&bad);
    let bmap = ok(Command::new("debugfs").args([
        "-R",
        "bmap /usr/sbin/init 0",
        &format!("{}?offset={p1}", bad.display()),
    ]));
    let block: u64 = String::from_utf8_lossy(&bmap.stdout)
        .trim()
        .parse()
        .expect("debugfs bmap prints a block number");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(&bad)
            .unwrap();
        let at = p1 + block * 4096 + 64;
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[byte[0] ^ 0xff], at).unwrap();
    }
    let out = boot(
        &k,
        &[
            "--poweroff",
            "--disk",
            "virtio-blk",
            "--image",
            bad.to_str().unwrap(),
        ],
    );
    let console = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a corrupted measured image booted:\n{console}"
    );
    assert!(
        console
            .lines()
            .any(|l| l.contains("device-mapper: verity") && l.contains("is corrupted")),
        "no verity error on the console:\n{console}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ready after"));
}

/// A dynamically linked agent using a library of the test's own (found through its
/// RUNPATH), and the same agent once that library is gone.
#[test]
fn dynamic_agent_gets_its_libraries_or_a_clear_error() {
    if !needs_dracut() || !needs::tools(&[("gcc", "gcc")]) {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let d = open_tempdir();
    let lib = d.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    std::fs::write(
        lib.join("osbtest.c"),
        "int osbtest_value(void) { return 42; }\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("agent.c"),
        r#"#include <stdio.h>
#include <unistd.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/utsname.h>
int osbtest_value(void);
int main(void) {
    struct utsname u;
    mount("proc", "/proc", "proc", 0, 0);
    uname(&u);
    printf("osbuilder-agent: ready kernel=%s arch=%s pid=%d lib=%d\n", u.release, u.machine,
           (int)getpid(), osbtest_value());
    printf("osbuilder-agent: powering off\n");
    fflush(stdout);
    sync();
    reboot(RB_POWER_OFF);
    return 1;
}
"#,
    )
    .unwrap();
    sh(&format!(
        "cd '{0}' && gcc -shared -fPIC -o lib/libosbtest.so lib/osbtest.c && \
         gcc -o agent agent.c -Llib -losbtest -Wl,-rpath,'{0}/lib'",
        d.path().display()
    ));
    let agent = d.path().join("agent");
    let img = d.path().join("dynamic.img");
    let out = dracut_initrd(
        &["--agent-init", "--agent-bin", agent.to_str().unwrap()],
        &img,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("libosbtest.so"),
        "the added libraries are reported: {err}"
    );
    let list = listing(&img);
    assert!(
        list.contains("libosbtest.so") && list.contains("libc.so.6"),
        "{list}"
    );
    let (ready, _) = booted(&boot(
        &k,
        &["--poweroff", "--initrd", img.to_str().unwrap()],
    ));
    assert!(
        ready.contains("lib=42") && ready.contains("pid=1"),
        "{ready}"
    );

    // The library gone: a clear error before dracut runs, nothing left behind.
    std::fs::remove_file(lib.join("libosbtest.so")).unwrap();
    let out_dir = open_tempdir();
    let out = dracut_initrd(
        &["--agent-init", "--agent-bin", agent.to_str().unwrap()],
        &out_dir.path().join("x.img"),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("needs libosbtest.so") && err.contains("static agent"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
}

#[test]
fn bad_requests_are_refused_with_clear_errors_and_nothing_left_behind() {
    let d = open_tempdir();
    let out = d.path().join("x.img");
    let check = |args: &[&str], env_path: Option<&str>, code: i32, needles: &[&str]| {
        let mut c = osbuilder();
        c.args(args).arg("-o").arg(&out);
        if let Some(p) = env_path {
            c.env("PATH", p);
        }
        let o = run(&mut c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        for n in needles {
            assert!(err.contains(n), "{args:?}: '{n}' missing in {err}");
        }
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "{args:?} left something behind"
        );
    };
    check(
        &["initrd", "--method", "dracut", "--profile", "kata,nope"],
        None,
        2,
        &["unknown dracut profile 'nope'", "nvdimm:", "image-boot:"],
    );
    check(
        &[
            "initrd",
            "--method",
            "dracut",
            "--kver",
            "0.0.0-osbuilder-none",
        ],
        None,
        2,
        &["/lib/modules/0.0.0-osbuilder-none", "--kmoddir"],
    );
    let empty = open_tempdir();
    check(
        &[
            "initrd",
            "--method",
            "dracut",
            "--kmoddir",
            empty.path().to_str().unwrap(),
        ],
        None,
        2,
        &["not a folder of kernel modules"],
    );
    check(
        &["initrd", "--method", "dracut"],
        Some(empty.path().to_str().unwrap()),
        1,
        &["dracut", "dracut-core"],
    );
    check(
        &["initrd", "--method", "dracut", "rootfs-dir"],
        None,
        2,
        &["ROOTFS", "--method dracut"],
    );
    check(
        &["initrd", "rootfs-dir", "--profile", "kata"],
        None,
        2,
        &["--profile", "--method dracut"],
    );
    check(
        &["rootfs", "--method", "dracut", "--distro", "debian"],
        None,
        2,
        &["--distro", "the host is the base"],
    );
}

#[test]
fn an_initrd_unpacks_into_a_rootfs_with_its_metadata() {
    if !needs::tools(&[("cpio", "cpio"), ("zstd", "zstd")]) || !needs::root() {
        return;
    }
    // A small tree with a device node known only to the metadata (rootless style).
    let d = open_tempdir();
    let r = d.path().join("r");
    std::fs::create_dir_all(r.join("sbin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::create_dir_all(r.join("dev")).unwrap();
    std::fs::write(r.join("sbin/init"), b"#!/bin/sh\necho hi\n").unwrap();
    sh(&format!(
        "chmod 755 '{0}/sbin/init' && ln -s ../sbin/init '{0}/etc/link' && ln '{0}/sbin/init' '{0}/etc/hard'",
        r.display()
    ));
    std::fs::write(
        d.path().join("r.mtree"),
        "#mtree\n/set uid=0 gid=0\n./dev/console type=char mode=0600 device=native,5,1\n./sbin/init type=file mode=04755\n./etc/hard type=file mode=04755\n",
    )
    .unwrap();
    let img = d.path().join("initrd.zst");
    ok(osbuilder()
        .arg("initrd")
        .arg(&r)
        .args(["--compression", "zstd", "-o"])
        .arg(&img)
        .env("SOURCE_DATE_EPOCH", SDE));
    // Unpacked rootless: owners, modes and the device land in the metadata file.
    let mine = d.path().join("nobody");
    std::fs::create_dir(&mine).unwrap();
    sh(&format!("chown 65534:65534 '{}'", mine.display()));
    let out = mine.join("out");
    ok(osbuilder_as_nobody()
        .args(["rootfs", "--from-initrd"])
        .arg(&img)
        .arg("-o")
        .arg(&out));
    let mtree = std::fs::read_to_string(mine.join("out.mtree")).unwrap();
    assert!(
        mtree.contains("dev/console type=char") && mtree.contains("device=native,5,1"),
        "{mtree}"
    );
    // Repacked, it is the same archive again.
    let again = d.path().join("again.zst");
    ok(osbuilder()
        .arg("initrd")
        .arg(&out)
        .args(["--compression", "zstd", "-o"])
        .arg(&again)
        .env("SOURCE_DATE_EPOCH", SDE));
    let (l1, l2) = (cpio_list(&img, "zstd -dc"), cpio_list(&again, "zstd -dc"));
    assert!(l1 == l2, "first:\n{l1}\nagain:\n{l2}");
    assert!(std::fs::read(&img).unwrap() == std::fs::read(&again).unwrap());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(out.join("sbin/init")).unwrap().ino(),
        std::fs::metadata(out.join("etc/hard")).unwrap().ino()
    );
}
