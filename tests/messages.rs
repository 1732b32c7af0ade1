//! Error messages under bad input: each is one line that says what happened and what to
//! do — names with newlines or bytes that are not UTF-8 shown escaped, a path of kilobytes
//! shown short, a full disk called a full disk.

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::{needs, osbuilder, run};

/// A minimal rootfs: an executable /sbin/init.
fn rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    std::fs::create_dir_all(r.join("sbin")).unwrap();
    std::fs::write(r.join("sbin/init"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(r.join("sbin/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    r
}

/// The failure's stderr, checked to be one line.
fn one_line_failure(out: &Output) -> String {
    assert!(!out.status.success(), "it succeeded");
    let err = String::from_utf8(out.stderr.clone()).expect("stderr is UTF-8");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "not one line:\n{err}");
    lines[0].to_string()
}

#[test]
fn names_with_newlines_or_invalid_utf8_are_shown_escaped() {
    if !needs::tools(&[
        ("mkfs.xfs", "xfsprogs"),
        ("xfs_db", "xfsprogs"),
        ("mkfs.ext4", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
    ]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    // xfs: a protofile cannot hold whitespace in a name.
    std::fs::write(r.join(OsStr::from_bytes(b"bad\nname\xff")), b"x").unwrap();
    let err = one_line_failure(&run(osbuilder()
        .arg("image")
        .arg(&r)
        .args(["--fs", "xfs", "--no-dax", "-o"])
        .arg(d.path().join("x.img"))));
    assert!(
        err.contains("/bad\\nname\\xff has whitespace in its name") && err.contains("--fs ext4"),
        "{err}"
    );
    std::fs::remove_file(r.join(OsStr::from_bytes(b"bad\nname\xff"))).unwrap();
    // ext4: a device node that exists only in the metadata goes through debugfs, which
    // cannot take a newline in a name.
    std::fs::write(
        d.path().join("rootfs.mtree"),
        "#mtree\n./weird\\012fifo\\377 type=fifo mode=0600\n",
    )
    .unwrap();
    let err = one_line_failure(&run(osbuilder()
        .arg("image")
        .arg(&r)
        .args(["--no-dax", "-o"])
        .arg(d.path().join("e.img"))));
    assert!(
        err.contains("the path /weird\\nfifo\\xff cannot be passed to debugfs")
            && err.contains("--fs erofs"),
        "{err}"
    );
}

#[test]
fn an_output_path_of_kilobytes_gets_a_short_message() {
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    let deep: PathBuf = std::iter::repeat_n("b".repeat(250), 20).collect();
    let long_dir = d.path().join(deep).join("x.img");
    let long_name = d.path().join("n".repeat(300));
    for (cmd, out) in [
        ("image", &long_dir),
        ("initrd", &long_dir),
        ("image", &long_name),
        ("initrd", &long_name),
    ] {
        let o = run(osbuilder().arg(cmd).arg(&r).arg("-o").arg(out));
        let err = one_line_failure(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.len() < 400, "{} bytes: {err}", err.len());
        assert!(
            err.contains("Linux allows") && err.contains("choose a shorter -o"),
            "{err}"
        );
    }
}

/// `image` and `initrd` into a folder on a 4 MiB tmpfs (mounted in a user namespace):
/// the message says the disk is full, not that the rootfs did not fit its size.
#[test]
fn a_full_disk_is_called_a_full_disk() {
    if !needs::tools(&[
        ("unshare", "util-linux"),
        ("mount", "mount"),
        ("mkfs.ext4", "e2fsprogs"),
        ("mkfs.xfs", "xfsprogs"),
        ("mkfs.erofs", "erofs-utils"),
        ("fakeroot", "fakeroot"),
    ]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let r = rootfs(d.path());
    let blob: Vec<u8> = (0..12_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(r.join("blob"), blob).unwrap();
    let small = d.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let bin = env!("CARGO_BIN_EXE_osbuilder");
    for args in [
        "image --no-dax",
        "image --no-dax --fs xfs",
        "image --no-dax --fs erofs",
        "initrd --compression none",
    ] {
        let script = format!(
            "mount -t tmpfs -o size=4m none '{s}' && exec '{bin}' {cmd} '{r}' {rest} -o '{s}/out'",
            s = small.display(),
            r = r.display(),
            cmd = args.split(' ').next().unwrap(),
            rest = args.split_once(' ').unwrap().1,
        );
        let out = run(std::process::Command::new("unshare")
            .args(["-rm", "sh", "-c"])
            .arg(&script));
        let err = one_line_failure(&out);
        assert!(
            err.contains(&format!(
                "no space left on the disk holding {}",
                small.display()
            )) && err.contains("MiB free")
                && err.contains("elsewhere with -o")
                && !err.contains("could not fill"),
            "{args}: {err}"
        );
    }
}
