//! `osbuilder initrd` checked with GNU cpio, as root and as an unprivileged user.

mod common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::*;

/// A small rootfs with every kind of entry the initrd must keep.
fn make_tree(root: &Path) {
    sh(&format!(
        r#"cd '{r}'
mkdir -p sbin bin usr/lib dev etc tmp var/spool home/user
printf '#!/bin/sh\necho hi\n' > bin/agent && chmod 0755 bin/agent
ln -s ../bin/agent sbin/init
printf 'root:x:0:0::/root:/bin/sh\n' > etc/passwd
printf 'secret\n' > etc/shadow && chmod 0640 etc/shadow && chown 0:42 etc/shadow
head -c 300000 /dev/urandom > usr/lib/blob
printf 'same inode\n' > usr/lib/a && ln usr/lib/a usr/lib/b && ln usr/lib/a bin/c
printf 'suid\n' > bin/su && chmod 4755 bin/su
chmod 1777 tmp
mkdir -p var/mail && chmod 2775 var/mail && chown 0:8 var/mail
printf 'user file\n' > home/user/notes && chown -R 1000:100 home/user
: > etc/empty
mknod dev/null c 1 3 && chmod 0666 dev/null
mknod dev/sda1 b 8 1 && chmod 0660 dev/sda1
mkfifo var/spool/fifo
ln -s /nonexistent dangling
"#,
        r = root.display()
    ));
    for (i, rel) in [
        "bin/agent",
        "etc/passwd",
        "usr/lib/blob",
        "home/user/notes",
        "usr/lib/a",
    ]
    .iter()
    .enumerate()
    {
        set_mtime(&root.join(rel), 1_600_000_000 + i as i64 * 1000);
    }
    for dir in [
        "home/user",
        "home",
        "usr/lib",
        "usr",
        "etc",
        "bin",
        "var/mail",
    ] {
        set_mtime(&root.join(dir), 1_500_000_000);
    }
}

#[test]
fn gnu_cpio_extracts_an_identical_tree() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    if !needs::root() {
        return;
    }
    let d = open_tempdir();
    let src = d.path().join("rootfs");
    std::fs::create_dir(&src).unwrap();
    make_tree(&src);
    let img = d.path().join("initrd.img");
    let out = ok(osbuilder().args(["initrd"]).arg(&src).arg("-o").arg(&img));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("added /init -> /bin/agent"), "{stderr}");

    let dst = d.path().join("extracted");
    gnu_cpio_extract(&img, "gzip -dc", &dst);
    let (mut got, got_links) = snapshot(&dst);
    let (want, want_links) = snapshot(&src);

    // The archive adds /init, straight at /sbin/init's final target; the rootfs is untouched.
    let init = got.remove(Path::new("init")).expect("/init in archive");
    assert_eq!(init.link.as_deref(), Some(Path::new("/bin/agent")));
    assert!(
        !src.join("init").exists(),
        "the rootfs must not be modified"
    );

    // Directory mtimes are not restored by GNU cpio for the root; compare everything else.
    assert_eq!(got.len(), want.len(), "entry count differs");
    for (path, w) in &want {
        let g = got
            .get(path)
            .unwrap_or_else(|| panic!("{} missing after extraction", path.display()));
        assert_eq!(g, w, "{} differs", path.display());
    }
    // Hard links survive as hard links: the three names share one inode after extraction.
    assert_eq!(want_links.len(), 3);
    let inos: std::collections::BTreeSet<u64> = got_links.values().copied().collect();
    assert_eq!(got_links.len(), 3, "hard links lost: {got_links:?}");
    assert_eq!(inos.len(), 1, "hard links split: {got_links:?}");
}

#[test]
fn unprivileged_build_takes_owners_and_devices_from_the_metadata() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    if !needs::root() || !needs::tools(&[("setpriv", "util-linux")]) {
        return;
    }
    let d = open_tempdir();
    let src = d.path().join("rootfs");
    // The tree as an unprivileged build leaves it: everything owned by the builder,
    // no device nodes on disk.
    sh(&format!(
        r#"mkdir -p '{r}' && cd '{r}'
mkdir -p sbin dev etc usr/bin
printf '#!/bin/sh\n' > sbin/init && chmod 755 sbin/init
printf 'x\n' > etc/hostname
printf 'su\n' > usr/bin/su && chmod 755 usr/bin/su
chown -R 65534:65534 '{r}'
"#,
        r = src.display()
    ));
    // The metadata beside it, as a backend would write it.
    std::fs::write(
        d.path().join("rootfs.mtree"),
        "#mtree\n/set uid=0 gid=0\n. type=dir mode=0755\n./dev type=dir mode=0755\n./etc type=dir mode=0755\n\
         ./etc/hostname type=file mode=0644\n./sbin type=dir mode=0755\n./sbin/init type=file mode=0755\n\
         ./usr type=dir mode=0755\n./usr/bin type=dir mode=0755\n./usr/bin/su type=file mode=04755\n\
         ./dev/console type=char mode=0600 device=native,5,1\n./dev/null type=char mode=0666 device=native,1,3\n",
    )
    .unwrap();
    let outdir = d.path().join("out");
    std::fs::create_dir(&outdir).unwrap();
    sh(&format!("chown 65534:65534 '{}'", outdir.display()));
    let img = outdir.join("initrd.img");
    ok(osbuilder_as_nobody()
        .arg("initrd")
        .arg(&src)
        .arg("-o")
        .arg(&img));
    let listing = cpio_list(&img, "gzip -dc");
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!((f[2], f[3]), ("0", "0"), "not root-owned: {line}");
    }
    let console = listing
        .lines()
        .find(|l| l.ends_with("dev/console"))
        .expect("dev/console in archive");
    assert!(
        console.starts_with("crw-------") && console.contains("5,"),
        "{console}"
    );
    let null = listing
        .lines()
        .find(|l| l.ends_with("dev/null"))
        .expect("dev/null in archive");
    assert!(null.starts_with("crw-rw-rw-"), "{null}");
    let su = listing.lines().find(|l| l.ends_with("usr/bin/su")).unwrap();
    assert!(su.starts_with("-rwsr-xr-x"), "{su}");

    // And as root, GNU cpio materialises them.
    let dst = d.path().join("x");
    gnu_cpio_extract(&img, "gzip -dc", &dst);
    let (snap, _) = snapshot(&dst);
    let con = &snap[Path::new("dev/console")];
    assert_eq!((con.kind, con.uid, con.rdev), ("char", 0, 0x501));
}

fn build(src: &Path, out: &Path, epoch: &str, extra: &[&str]) -> Vec<u8> {
    ok(osbuilder()
        .env("SOURCE_DATE_EPOCH", epoch)
        .arg("initrd")
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(extra));
    std::fs::read(out).unwrap()
}

#[test]
fn same_inputs_give_identical_bytes_and_epoch_changes_them() {
    let d = open_tempdir();
    // The same content created in two different orders (different inode numbers and
    // directory order on disk) must pack to the same bytes.
    let a = d.path().join("a");
    let b = d.path().join("b");
    sh(&format!(
        "mkdir -p {a}/sbin {a}/etc {a}/usr/lib && printf x > {a}/etc/one && printf y > {a}/etc/two && \
         printf init > {a}/sbin/init && chmod 755 {a}/sbin/init && printf z > {a}/usr/lib/l && ln {a}/usr/lib/l {a}/etc/hl",
        a = a.display()
    ));
    sh(&format!(
        "mkdir -p {b}/usr/lib {b}/etc {b}/sbin && printf z > {b}/usr/lib/l && printf y > {b}/etc/two && \
         ln {b}/usr/lib/l {b}/etc/hl && printf x > {b}/etc/one && printf init > {b}/sbin/init && chmod 755 {b}/sbin/init",
        b = b.display()
    ));
    // Make permissions identical regardless of umask differences in the two shells.
    sh(&format!("chmod -R go-w {} {}", a.display(), b.display()));
    for c in ["gzip", "zstd", "xz", "none"] {
        let x1 = build(&a, &d.path().join("1"), "1000000", &["--compression", c]);
        let x2 = build(&a, &d.path().join("2"), "1000000", &["--compression", c]);
        let y = build(&b, &d.path().join("3"), "1000000", &["--compression", c]);
        let z = build(&a, &d.path().join("4"), "2000000", &["--compression", c]);
        assert_eq!(x1, x2, "{c}: two runs differ");
        assert_eq!(x1, y, "{c}: creation order leaks into the archive");
        assert_ne!(x1, z, "{c}: SOURCE_DATE_EPOCH has no effect");
    }
}

/// The same rootfs, also copied elsewhere with its metadata, packed under different names
/// in different folders: identical bytes (nothing of either path reaches the archive).
#[test]
fn same_rootfs_gives_the_same_initrd_under_any_name_or_folder() {
    if !needs::root() {
        return;
    }
    let d = open_tempdir();
    let a = d.path().join("rootfs");
    std::fs::create_dir(&a).unwrap();
    make_tree(&a);
    std::fs::write(
        d.path().join("rootfs.mtree"),
        "#mtree\n. type=dir uid=0 gid=0 mode=0755\n./dev/console type=char device=native,5,1\n",
    )
    .unwrap();
    let other = d.path().join("elsewhere/deeper");
    std::fs::create_dir_all(&other).unwrap();
    sh(&format!(
        "cp -a '{}' '{o}/tree' && cp '{}' '{o}/tree.mtree' && mkdir '{}/out1' '{o}/out2'",
        a.display(),
        d.path().join("rootfs.mtree").display(),
        d.path().display(),
        o = other.display()
    ));
    for c in ["gzip", "zstd"] {
        let x = build(
            &a,
            &d.path().join("out1/kata-containers-initrd.img"),
            "1700000000",
            &["--compression", c],
        );
        let y = build(
            &other.join("tree"),
            &other.join("out2/guest.initrd"),
            "1700000000",
            &["--compression", c],
        );
        assert!(x == y, "{c}: the initrd depends on its name or folder");
    }
}

#[test]
fn every_compression_is_readable_by_the_reference_tools() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    let d = open_tempdir();
    let src = d.path().join("r");
    sh(&format!(
        "mkdir -p {s}/sbin && printf '#!/bin/sh\n' > {s}/sbin/init && chmod 755 {s}/sbin/init",
        s = src.display()
    ));
    for (c, dec) in [
        ("gzip", "gzip -dc"),
        ("zstd", "zstd -dcq"),
        ("xz", "xz -dc"),
        ("none", "cat"),
    ] {
        let tool = dec.split(' ').next().unwrap();
        if !needs::tools(&[(tool, if tool == "xz" { "xz-utils" } else { tool })]) {
            return;
        }
        let out = d.path().join(format!("i.{c}"));
        ok(osbuilder()
            .arg("initrd")
            .arg(&src)
            .arg("-o")
            .arg(&out)
            .args(["--compression", c, "--level", "3"]));
        let list = cpio_list(&out, dec);
        assert!(
            list.contains("sbin/init") && list.contains("init -> /sbin/init"),
            "{c}: {list}"
        );
    }
    // The kernel's xz decoder wants CRC32 checks.
    let info = sh(&format!(
        "xz --robot --list {}",
        d.path().join("i.xz").display()
    ));
    assert!(String::from_utf8_lossy(&info.stdout).contains("CRC32"));
}

#[test]
fn existing_init_is_kept_and_init_checks_are_enforced() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    let d = open_tempdir();
    let src = d.path().join("r");
    sh(&format!(
        "mkdir -p {s}/sbin {s}/lib/systemd && printf 'bin' > {s}/lib/systemd/systemd && chmod 755 {s}/lib/systemd/systemd && \
         ln -s /lib/systemd/systemd {s}/sbin/init",
        s = src.display()
    ));
    let img = d.path().join("i");
    ok(osbuilder().arg("initrd").arg(&src).arg("-o").arg(&img));
    assert!(cpio_list(&img, "gzip -dc").contains("init -> /lib/systemd/systemd"));
    std::os::unix::fs::symlink("/sbin/init", src.join("init")).unwrap();
    let out = ok(osbuilder().arg("initrd").arg(&src).arg("-o").arg(&img));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("added /init"));

    // Not executable.
    std::fs::remove_file(src.join("sbin/init")).unwrap();
    std::fs::write(src.join("sbin/init"), "x").unwrap();
    std::fs::set_permissions(
        src.join("sbin/init"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let out = run(osbuilder().arg("initrd").arg(&src).arg("-o").arg(&img));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not executable"));

    // Missing.
    std::fs::remove_file(src.join("sbin/init")).unwrap();
    let out = run(osbuilder()
        .arg("initrd")
        .arg(&src)
        .arg("-o")
        .arg(d.path().join("new")));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no /sbin/init"));
    assert!(!d.path().join("new").exists());

    // A dangling /sbin/init symlink.
    symlink("/nowhere", src.join("sbin/init")).unwrap();
    std::fs::remove_file(src.join("init")).unwrap();
    let out = run(osbuilder().arg("initrd").arg(&src).arg("-o").arg(&img));
    assert!(String::from_utf8_lossy(&out.stderr).contains("leads nowhere"));
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing_behind() {
    let d = open_tempdir();
    let out = run(osbuilder()
        .args(["initrd", "/nonexistent/rootfs", "-o"])
        .arg(d.path().join("x")));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));

    let src = d.path().join("r");
    sh(&format!(
        "mkdir -p {s}/sbin && printf x > {s}/sbin/init && chmod 755 {s}/sbin/init",
        s = src.display()
    ));
    let out = run(osbuilder()
        .arg("initrd")
        .arg(&src)
        .args(["-o", "/nonexistent-dir/initrd.img"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent-dir"));

    let out = run(osbuilder()
        .arg("initrd")
        .arg(&src)
        .args(["--compression", "lz4"]));
    assert_eq!(out.status.code(), Some(2), "bad enum is a usage error");
    let out =
        run(osbuilder()
            .arg("initrd")
            .arg(&src)
            .args(["--compression", "gzip", "--level", "12"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of range"));

    if is_root() && have("setpriv") {
        // A folder the user cannot write to.
        let ro = d.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        let out = run(osbuilder_as_nobody()
            .arg("initrd")
            .arg(&src)
            .arg("-o")
            .arg(ro.join("initrd.img")));
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A file newc cannot hold: refused, and nothing is left at (or beside) the output path.
    let big = src.join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len((4u64 << 30) + 1)
        .unwrap();
    let outdir = d.path().join("o");
    std::fs::create_dir(&outdir).unwrap();
    let out = run(osbuilder()
        .arg("initrd")
        .arg(&src)
        .arg("-o")
        .arg(outdir.join("i.img")));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("4 GiB"));
    assert_eq!(std::fs::read_dir(&outdir).unwrap().count(), 0);
}

#[test]
fn interrupted_run_leaves_nothing_at_the_output_path() {
    let d = open_tempdir();
    let src = d.path().join("r");
    // Enough incompressible data that xz -9 takes a while.
    sh(&format!(
        "mkdir -p {s}/sbin && printf x > {s}/sbin/init && chmod 755 {s}/sbin/init && head -c 64000000 /dev/urandom > {s}/blob",
        s = src.display()
    ));
    let outdir = d.path().join("o");
    std::fs::create_dir(&outdir).unwrap();
    let mut child = osbuilder()
        .arg("initrd")
        .arg(&src)
        .arg("-o")
        .arg(outdir.join("i.img"))
        .args(["--compression", "xz", "--level", "9"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    unsafe { kill(child.id() as i32, 15) };
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the run finished before it could be interrupted; make the input bigger"
    );
    assert_eq!(
        std::fs::read_dir(&outdir).unwrap().count(),
        0,
        "partial output left behind"
    );
}

#[test]
fn merged_usr_init_is_found_through_the_sbin_symlink() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    let d = open_tempdir();
    let s = d.path().join("r");
    sh(&format!(
        "mkdir -p {s}/usr/sbin {s}/usr/lib/systemd && ln -s usr/sbin {s}/sbin && \
         printf bin > {s}/usr/lib/systemd/systemd && chmod 755 {s}/usr/lib/systemd/systemd && \
         ln -s ../lib/systemd/systemd {s}/usr/sbin/init",
        s = s.display()
    ));
    let img = d.path().join("i");
    let out = ok(osbuilder().arg("initrd").arg(&s).arg("-o").arg(&img));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("added /init -> /usr/lib/systemd/systemd")
    );
    assert!(cpio_list(&img, "gzip -dc").contains("init -> /usr/lib/systemd/systemd"));
}
