//! Rootless builds end to end: a Debian rootfs built and provisioned by an unprivileged
//! user (nobody, via setpriv) from a signed repository on 127.0.0.1, then packed as
//! nobody into an initrd and ext4, xfs and erofs images. In the guest every entry — the
//! root directory `/` included, and everything provisioning adds — must be root's,
//! except what a package asks for (a root:shadow file). Checked with tools we did not
//! write: GNU cpio, debugfs, xfs_db, dump.erofs and fsck.erofs.

mod common;
mod deb_support;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::needs;
use deb_support::*;

const SUITE: &str = "testsuite";
const MIB: u64 = 1 << 20;

fn universe() -> Vec<Pkg> {
    vec![
        pkg(
            "app",
            "1.0-1",
            "amd64",
            "",
            &[
                E::Dir("./"),
                E::Dir("./usr/"),
                E::Dir("./usr/bin/"),
                E::File("./usr/bin/app", b"#!/bin/sh\necho app\n", 0o755, 0, 0),
                E::Dir("./etc/"),
                E::File("./etc/app.secret", b"s", 0o640, 0, 42),
            ],
        ),
        pkg(
            "base-passwd",
            "3.6",
            "amd64",
            "Essential: yes\n",
            &[
                E::File(
                    "./usr/share/base-passwd/passwd.master",
                    b"root:*:0:0:root:/root:/bin/sh\n",
                    0o644,
                    0,
                    0,
                ),
                E::File(
                    "./usr/share/base-passwd/group.master",
                    b"root:*:0:\nshadow:*:42:\n",
                    0o644,
                    0,
                    0,
                ),
            ],
        ),
    ]
}

fn run_ok(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn nobody(work: &Path) -> Command {
    with_env(common::osbuilder_as_nobody(), work)
}

/// As nobody, with a umask that would make a new directory 0700: the guest's `/` must
/// still be 0755.
fn nobody_umask_077(work: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .args(["sh", "-c", "umask 077 && exec \"$0\" \"$@\""])
    .arg(env!("CARGO_BIN_EXE_osbuilder"));
    with_env(c, work)
}

fn with_env(mut c: Command, work: &Path) -> Command {
    c.env("HOME", work)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env_remove("OSBUILDER_MIRROR")
        .current_dir(work);
    c
}

/// Owner by path ("" for the root), from a tree extracted by an independent tool.
fn owners_on_disk(root: &Path) -> BTreeMap<String, (u32, u32)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let md = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
        out.insert(rel, (md.uid(), md.gid()));
        if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// What the guest must see: root everywhere, but the package's root:shadow files.
fn check_owners(what: &str, owners: &BTreeMap<String, (u32, u32)>) {
    assert!(owners.contains_key(""), "{what}: no root entry");
    assert!(owners.len() > 20, "{what}: only {owners:?}");
    let wrong: Vec<String> = owners
        .iter()
        .filter(|(path, owner)| {
            let want = match path.as_str() {
                "etc/app.secret" | "etc/shadow" | "etc/gshadow" => (0, 42),
                _ => (0, 0),
            };
            **owner != want
        })
        .map(|(path, (uid, gid))| format!("/{path} {uid}:{gid}"))
        .collect();
    assert!(wrong.is_empty(), "{what}: wrong owners: {wrong:?}");
}

/// The root partition of an image, copied out.
fn root_partition(img: &Path, to: &Path) -> PathBuf {
    let j: serde_json::Value =
        serde_json::from_slice(&run_ok(Command::new("sfdisk").arg("-J").arg(img))).unwrap();
    let p = &j["partitiontable"]["partitions"][0];
    let (start, size) = (p["start"].as_u64().unwrap(), p["size"].as_u64().unwrap());
    run_ok(
        Command::new("dd")
            .arg(format!("if={}", img.display()))
            .arg(format!("of={}", to.display()))
            .arg("bs=512")
            .arg(format!("skip={start}"))
            .arg(format!("count={size}"))
            .arg("status=none"),
    );
    assert!(std::fs::metadata(to).unwrap().len() >= MIB);
    to.to_path_buf()
}

#[test]
fn a_rootless_build_gives_a_guest_in_which_everything_is_roots() {
    if !needs::root()
        || !needs::tools(&[
            ("setpriv", "util-linux"),
            ("gpg", "gnupg"),
            ("cpio", "cpio"),
            ("sfdisk", "fdisk"),
            ("debugfs", "e2fsprogs"),
            ("mkfs.ext4", "e2fsprogs"),
            ("mkfs.xfs", "xfsprogs"),
            ("xfs_db", "xfsprogs"),
            ("mkfs.erofs", "erofs-utils"),
            ("dump.erofs", "erofs-utils"),
            ("fsck.erofs", "erofs-utils"),
            ("fakeroot", "fakeroot"),
        ])
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = gpg_key(dir.path(), "repo");
    let www = dir.path().join("www/debian");
    std::fs::create_dir_all(&www).unwrap();
    write_repo(&www, SUITE, "amd64", &universe(), &key, "");
    let url = format!("{}/debian", serve(&dir.path().join("www")));
    let work = dir.path().join("nobody");
    std::fs::create_dir(&work).unwrap();
    run_ok(Command::new("chown").arg("65534:65534").arg(&work));

    // rootfs (with provisioning: the reference agent as init) as nobody
    let rootfs = work.join("rootfs");
    let out = common::ok(
        nobody_umask_077(&work)
            .args(["rootfs", "--distro", "debian", "--arch", "amd64"])
            .args([
                "--os-version",
                SUITE,
                "--agent-init",
                "--packages",
                "app,base-passwd",
            ])
            .arg("--mirror")
            .arg(&url)
            .arg("--keyring")
            .arg(&key.public)
            .arg("--cache-dir")
            .arg(work.join("cache"))
            .arg("-o")
            .arg(&rootfs),
    );
    // every entry went through the extractor, which recorded its owner
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("warning"), "{err}");
    assert_eq!(std::fs::metadata(&rootfs).unwrap().uid(), 65534);

    // initrd: GNU cpio's listing, the "." entry first of all
    let initrd = work.join("initrd.img");
    run_ok(
        nobody(&work)
            .arg("initrd")
            .arg(&rootfs)
            .arg("-o")
            .arg(&initrd),
    );
    let listing = String::from_utf8(common::cpio_list(&initrd, "gzip -dc").into_bytes()).unwrap();
    let mut owners = BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let name = f[8..].join(" ");
        let name = name.split(" -> ").next().unwrap();
        let rel = if name == "." { "" } else { name };
        owners.insert(
            rel.to_string(),
            (f[2].parse().unwrap(), f[3].parse().unwrap()),
        );
    }
    check_owners("initrd (cpio -itv)", &owners);
    let dot = listing.lines().find(|l| l.ends_with(" .")).unwrap();
    assert!(dot.starts_with("drwxr-xr-x "), "the initrd's root: {dot}");
    let paths: Vec<String> = owners.keys().cloned().collect();
    // provisioning's own files are in it
    for p in [
        "sbin/init",
        "init",
        "var/lib/osbuilder/osbuilder.yaml",
        "etc/machine-id",
    ] {
        assert!(
            paths
                .iter()
                .any(|q| q == p || q.ends_with(&format!("/{p}"))),
            "{p} not in the initrd:\n{listing}"
        );
    }

    // ext4: debugfs's view of inode 2, then every inode via rdump (as root, owners kept)
    let img = work.join("ext4.img");
    run_ok(
        nobody(&work)
            .arg("image")
            .arg(&rootfs)
            .arg("-o")
            .arg(&img)
            .arg("--no-dax"),
    );
    let part = root_partition(&img, &dir.path().join("ext4.part"));
    let st = String::from_utf8(run_ok(
        Command::new("debugfs").arg("-R").arg("stat <2>").arg(&part),
    ))
    .unwrap();
    assert!(
        st.contains("User:     0   Group:     0") && st.contains("Mode:  0755"),
        "ext4 inode 2:\n{st}"
    );
    let x = dir.path().join("ext4-x");
    std::fs::create_dir(&x).unwrap();
    run_ok(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump / {}", x.display()))
            .arg(&part),
    );
    // rdump puts the root's contents in x/ (inode 2's owner was checked above)
    let mut ext4 = owners_on_disk(&x);
    ext4.insert(String::new(), (0, 0));
    assert!(ext4.contains_key("lost+found") && ext4.len() > paths.len());
    check_owners("ext4 (debugfs rdump)", &ext4);

    // xfs: xfs_db, path by path (every path of the initrd)
    let img = work.join("xfs.img");
    run_ok(
        nobody(&work)
            .arg("image")
            .arg(&rootfs)
            .arg("-o")
            .arg(&img)
            .args(["--no-dax", "--fs", "xfs"]),
    );
    let part = root_partition(&img, &dir.path().join("xfs.part"));
    let mut db = Command::new("xfs_db");
    db.arg("-r");
    for p in &paths {
        db.arg("-c").arg(format!("path /{p}"));
        db.arg("-c").arg("print core.uid core.gid");
    }
    let out = String::from_utf8(run_ok(db.arg(&part))).unwrap();
    let vals: Vec<u32> = out
        .lines()
        .map(|l| l.rsplit(" = ").next().unwrap().trim().parse().unwrap())
        .collect();
    assert_eq!(vals.len(), 2 * paths.len(), "xfs_db:\n{out}");
    let xfs: BTreeMap<String, (u32, u32)> = paths
        .iter()
        .zip(vals.chunks(2))
        .map(|(p, v)| (p.clone(), (v[0], v[1])))
        .collect();
    check_owners("xfs (xfs_db)", &xfs);
    let root_mode = run_ok(
        Command::new("xfs_db")
            .args(["-r", "-c", "path /", "-c", "print core.mode"])
            .arg(&part),
    );
    assert_eq!(
        String::from_utf8_lossy(&root_mode).trim(),
        "core.mode = 040755"
    );

    // erofs: dump.erofs on the root, then fsck.erofs extracting with owners
    let img = work.join("erofs.img");
    run_ok(
        nobody(&work)
            .arg("image")
            .arg(&rootfs)
            .arg("-o")
            .arg(&img)
            .args(["--no-dax", "--fs", "erofs"]),
    );
    let part = root_partition(&img, &dir.path().join("erofs.part"));
    let root = String::from_utf8(run_ok(
        Command::new("dump.erofs").arg("--path=/").arg(&part),
    ))
    .unwrap();
    assert!(
        root.contains("Uid: 0   Gid: 0") && root.contains("0755"),
        "erofs root:\n{root}"
    );
    let x = dir.path().join("erofs-x");
    run_ok(
        Command::new("fsck.erofs")
            .arg(format!("--extract={}", x.display()))
            .arg("--preserve")
            .arg(&part),
    );
    check_owners("erofs (fsck.erofs --extract)", &owners_on_disk(&x));
}
