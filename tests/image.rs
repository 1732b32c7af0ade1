//! `osbuilder image` checked with independent tools: sfdisk/sgdisk, e2fsck, debugfs,
//! xfs_repair/xfs_db, fsck.erofs, veritysetup, qemu-img. Trees are synthetic, owned by a
//! non-root user on disk, with an mtree that declares root ownership and device nodes;
//! when the tests run as root, osbuilder itself runs as nobody (setpriv).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::needs;

const BIN: &str = env!("CARGO_BIN_EXE_osbuilder");
const MIB: u64 = 1 << 20;

fn is_root() -> bool {
    common::is_root()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A world-readable scratch folder (so nobody can read the tree and write outputs).
fn scratch() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

/// rootfs/ + rootfs.mtree: files owned by 1234 on disk, the metadata makes them root's
/// (one stays 1000:1000), adds /dev/console and /dev/null (a placeholder file on disk)
/// and a sticky /tmp.
fn make_tree(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    for d in ["sbin", "dev", "etc", "tmp", "usr/bin", "home/user", "many"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    std::fs::write(r.join("sbin/init"), b"#!/bin/sh\necho init\n").unwrap();
    std::fs::write(r.join("etc/hostname"), b"guest\n").unwrap();
    std::fs::write(r.join("home/user/notes"), b"mine\n").unwrap();
    std::fs::write(r.join("dev/null"), b"").unwrap();
    std::fs::hard_link(r.join("etc/hostname"), r.join("etc/hostname.link")).unwrap();
    std::os::unix::fs::symlink("../../sbin/init", r.join("usr/bin/init-link")).unwrap();
    let long = "x".repeat(120);
    std::os::unix::fs::symlink(&long, r.join("usr/bin/long-link")).unwrap();
    let blob: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(r.join("usr/bin/blob"), blob).unwrap();
    for i in 0..300 {
        std::fs::write(
            r.join(format!("many/a-file-with-a-long-name-{i}")),
            i.to_string(),
        )
        .unwrap();
    }
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&r)
        .status()
        .unwrap();
    Command::new("chmod")
        .arg("755")
        .arg(r.join("sbin/init"))
        .status()
        .unwrap();
    if is_root() {
        Command::new("chown")
            .args(["-R", "1234:1234"])
            .arg(&r)
            .status()
            .unwrap();
    }
    std::fs::write(
        dir.join("rootfs.mtree"),
        "#mtree\n\
         . uid=0 gid=0 mode=0755\n\
         ./dev uid=0 gid=0\n./etc uid=0 gid=0\n./sbin uid=0 gid=0\n./usr uid=0 gid=0\n\
         ./usr/bin uid=0 gid=0\n./many uid=0 gid=0\n./home uid=0 gid=0\n\
         ./etc/hostname uid=0 gid=0 mode=0644\n\
         ./sbin/init uid=0 gid=0 mode=0755\n\
         ./tmp uid=0 gid=0 mode=1777\n\
         ./home/user uid=1000 gid=1000 mode=0700\n\
         ./dev/null type=char device=native,1,3 mode=0666 uid=0 gid=0\n\
         ./dev/console type=char device=native,5,1 mode=0600 uid=0 gid=5\n\
         ./dev/fifo type=fifo mode=0640 uid=0 gid=0\n\
         ./proc type=dir mode=0555 uid=0 gid=0\n\
         ./init type=link link=/sbin/init uid=0 gid=0\n",
    )
    .unwrap();
    r
}

/// Run osbuilder image (as nobody when we are root).
fn image(rootfs: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            BIN,
        ]);
        c
    } else {
        Command::new(BIN)
    };
    cmd.arg("image").arg(rootfs).args(args);
    cmd.current_dir(rootfs.parent().unwrap());
    cmd.env("SOURCE_DATE_EPOCH", "1700000000");
    cmd.output().unwrap()
}

fn image_ok(rootfs: &Path, args: &[&str]) -> String {
    let out = image(rootfs, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "osbuilder image {args:?} failed:\n{err}"
    );
    assert!(
        !err.contains("warning"),
        "osbuilder image {args:?} warned:\n{err}"
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copy `len` bytes at `offset` of `img` into a new file.
fn extract(img: &Path, offset: u64, len: u64, to: &Path) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::File::open(img).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut out = std::fs::File::create(to).unwrap();
    let mut buf = vec![0u8; MIB as usize];
    let mut left = len;
    while left > 0 {
        let n = left.min(MIB) as usize;
        f.read_exact(&mut buf[..n]).unwrap();
        out.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
}

/// Partitions (start, size in bytes) as sfdisk reads them.
fn partitions(img: &Path) -> Vec<(u64, u64, String)> {
    let j: serde_json::Value =
        serde_json::from_str(&run(Command::new("sfdisk").arg("-J").arg(img))).unwrap();
    j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["start"].as_u64().unwrap() * 512,
                p["size"].as_u64().unwrap() * 512,
                p["type"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn debugfs(part: &Path, req: &str) -> String {
    run(Command::new("debugfs").arg("-R").arg(req).arg(part))
}

/// Independent fletcher64 (nvdimm flavour), for the golden DAX test.
fn fletcher64(b: &[u8]) -> u64 {
    let (mut lo, mut hi) = (0u64, 0u64);
    for w in b.chunks(4) {
        lo = (lo + u32::from_le_bytes(w.try_into().unwrap()) as u64) & 0xffff_ffff;
        hi = hi.wrapping_add(lo);
    }
    hi << 32 | lo
}

#[test]
fn default_kata_layout_ext4_with_dax_header_as_nobody() {
    if !needs::tools(&[
        ("sfdisk", "fdisk"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("setpriv", "util-linux"),
    ]) {
        return;
    }
    let d = scratch();
    let r = make_tree(d.path());
    let img = d.path().join("kata-containers.img");
    let params = image_ok(&r, &["-o", img.to_str().unwrap(), "--seed", "t1"]);
    assert!(params.contains("root=/dev/vda1"), "{params}");
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(
        bytes.len() as u64 % (128 * MIB),
        0,
        "Kata aligns DAX images to 128 MiB"
    );
    run(Command::new("sfdisk").arg("--verify").arg(&img));
    // MBR#1: the root partition at 3 MiB, to the end.
    let p = partitions(&img);
    assert_eq!(p.len(), 1);
    assert_eq!((p[0].0, p[0].0 + p[0].1), (3 * MIB, bytes.len() as u64));
    // MBR#2 at 2 MiB: the original image, partition at 1 MiB of it.
    let inner = &bytes[2 << 20..(2 << 20) + 512];
    assert_eq!(&inner[510..], &[0x55, 0xaa]);
    assert_eq!(
        u32::from_le_bytes(inner[454..458].try_into().unwrap()),
        2048
    );
    assert_eq!(inner[450], 0x83);
    // Golden nd_pfn_sb at 4 KiB (struct layout of nsdax.gpl.c / drivers/nvdimm/pfn.h).
    let sb = &bytes[4096..8192];
    assert_eq!(&sb[0..16], b"NVDIMM_PFN_INFO\0");
    assert!(
        sb[16..52].iter().all(|b| *b == 0),
        "uuid, parent_uuid, flags"
    );
    assert_eq!(&sb[52..56], &[0, 0, 2, 0], "version 0.2");
    assert_eq!(&sb[56..64], &(2u64 << 20).to_le_bytes(), "dataoff");
    assert_eq!(&sb[64..72], &[0; 8], "npfns");
    assert_eq!(&sb[72..76], &1u32.to_le_bytes(), "PFN_MODE_RAM");
    assert_eq!(&sb[76..84], &[0; 8], "start_pad, end_trunc");
    assert_eq!(&sb[84..88], &(2u32 << 20).to_le_bytes(), "align");
    assert!(sb[88..4088].iter().all(|b| *b == 0), "padding");
    let mut zeroed = sb.to_vec();
    zeroed[4088..].fill(0);
    assert_eq!(&sb[4088..], &fletcher64(&zeroed).to_le_bytes());
    // pinned: the value nsdax.gpl.c computes for this block
    assert_eq!(&sb[4088..], &0x685b032be3943830u64.to_le_bytes());
    // The filesystem: clean, root-owned, with device nodes, as nobody built it.
    let part = d.path().join("p1");
    extract(&img, p[0].0, p[0].1, &part);
    run(Command::new("e2fsck").arg("-fn").arg(&part));
    let dev = debugfs(&part, "ls -l /dev");
    assert!(dev.contains("20666") && dev.contains("null"), "{dev}");
    assert!(dev.contains("20600") && dev.contains("console"), "{dev}");
    let st = debugfs(&part, "stat /dev/console");
    assert!(st.contains("User:     0   Group:     5"), "{st}");
    assert!(st.contains("Device major/minor number: 05:01"), "{st}");
    let st = debugfs(&part, "stat /etc/hostname");
    assert!(st.contains("User:     0   Group:     0"), "{st}");
    assert!(st.contains("Links: 2"), "hard link kept: {st}");
    let st = debugfs(&part, "stat /home/user");
    assert!(st.contains("User:  1000   Group:  1000"), "{st}");
    assert!(st.contains("Mode:  0700"), "{st}");
    assert!(debugfs(&part, "stat /tmp").contains("Mode:  01777"));
    // entries that exist only in the metadata
    assert!(debugfs(&part, "stat /proc").contains("Type: directory    Mode:  0555"));
    assert!(debugfs(&part, "stat /dev/fifo").contains("Type: FIFO    Mode:  0640"));
    assert!(debugfs(&part, "stat /init").contains("Fast link dest: \"/sbin/init\""));
    assert!(debugfs(&part, "stat /").contains("User:     0   Group:     0"));
    assert_eq!(debugfs(&part, "cat /sbin/init"), "#!/bin/sh\necho init\n");
}

/// Check the image's root hash file, kernel parameters and hash partition with
/// veritysetup; the data partition must also pass e2fsck.
fn check_verity(d: &Path, img: &Path, params: &str, p: &[(u64, u64, String)]) {
    let line = std::fs::read_to_string(d.join("root_hash.txt")).unwrap();
    let kv: std::collections::HashMap<&str, &str> = line
        .trim()
        .split(',')
        .map(|f| f.split_once('=').unwrap())
        .collect();
    assert_eq!(kv["data_block_size"], "4096");
    assert_eq!(kv["hash_block_size"], "4096");
    let blocks: u64 = kv["data_blocks"].parse().unwrap();
    assert_eq!(blocks * 4096, p[0].1);
    assert!(params.contains(&format!(
        "verity 1 /dev/vda1 /dev/vda2 4096 4096 {blocks} 0 sha256 {} {}",
        kv["root_hash"], kv["salt"]
    )));
    assert!(params.contains(&format!("0 {} verity", blocks * 8)));
    let (data, hash) = (d.join("data"), d.join("hash"));
    extract(img, p[0].0, p[0].1, &data);
    extract(img, p[1].0, p[1].1, &hash);
    run(Command::new("e2fsck").arg("-fn").arg(&data));
    let verify = |root: &str| {
        Command::new("veritysetup")
            .args(["verify", "--no-superblock", "--hash", "sha256"])
            .arg(format!("--data-blocks={blocks}"))
            .arg(format!("--salt={}", kv["salt"]))
            .arg(&data)
            .arg(&hash)
            .arg(root)
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap()
            .success()
    };
    assert!(verify(kv["root_hash"]), "veritysetup rejects our tree");
    let mut wrong = kv["root_hash"].to_string();
    wrong.replace_range(0..1, if wrong.starts_with('0') { "1" } else { "0" });
    assert!(!verify(&wrong), "veritysetup accepts any root hash?");
}

#[test]
fn gpt_measured_verity_checks_out() {
    if !needs::tools(&[
        ("sgdisk", "gdisk"),
        ("veritysetup", "cryptsetup-bin"),
        ("e2fsck", "e2fsprogs"),
    ]) {
        return;
    }
    let d = scratch();
    let r = make_tree(d.path());
    let img = d.path().join("gpt.img");
    let params = image_ok(
        &r,
        &[
            "-o",
            img.to_str().unwrap(),
            "--no-dax",
            "--table",
            "gpt",
            "--measured",
            "--arch",
            "x86_64",
            "--free-mb",
            "5",
        ],
    );
    let v = run(Command::new("sgdisk").arg("-v").arg(&img));
    assert!(v.contains("No problems found"), "{v}");
    let p = partitions(&img);
    assert_eq!(p.len(), 2);
    assert_eq!(
        p[0].2.to_lowercase(),
        "4f68bce3-e8cd-4db1-96e7-fbcaf984b709"
    );
    assert_eq!(
        p[1].2.to_lowercase(),
        "2c7357ed-ebd2-46d9-aec1-23d437ec2bf5"
    );
    check_verity(d.path(), &img, &params, &p);
}

#[test]
fn reproducible_qcow2_and_seeds() {
    if !needs::tools(&[("qemu-img", "qemu-utils")]) {
        return;
    }
    let d = scratch();
    let r = make_tree(d.path());
    let out = |name: &str, extra: &[&str]| -> Vec<u8> {
        let p = d.path().join(name);
        let mut args = vec!["-o", p.to_str().unwrap(), "--no-dax"];
        args.extend(extra);
        image_ok(&r, &args);
        std::fs::read(&p).unwrap()
    };
    let a = out("a.qcow2", &["--format", "qcow2", "--seed", "s"]);
    let b = out("b.qcow2", &["--format", "qcow2", "--seed", "s"]);
    assert!(a == b, "two qcow2 builds differ");
    run(Command::new("qemu-img")
        .arg("check")
        .arg(d.path().join("a.qcow2")));
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(d.path().join("a.qcow2")));
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
    let x = out("x.img", &["--seed", "s"]);
    let y = out("y.img", &["--seed", "s"]);
    assert!(x == y, "two raw builds differ");
    let z = out("z.img", &["--seed", "other"]);
    assert_eq!(x.len(), z.len());
    assert_ne!(
        &x[440..444],
        &z[440..444],
        "disk signature ignores the seed"
    );
    let uuid =
        |img: &[u8]| img[(MIB + 1024 + 0x68) as usize..(MIB + 1024 + 0x78) as usize].to_vec();
    assert_ne!(uuid(&x), uuid(&z), "filesystem UUID ignores the seed");
}

/// Same rootfs (also copied elsewhere), same options, same SOURCE_DATE_EPOCH, no --seed:
/// the same bytes whatever the output is called and wherever it, or the rootfs, lives —
/// for every filesystem, table and format — and new UUIDs when one byte of content changes.
#[test]
fn same_inputs_give_the_same_bytes_under_any_name_or_folder() {
    if !needs::tools(&[
        ("qemu-img", "qemu-utils"),
        ("mkfs.xfs", "xfsprogs"),
        ("xfs_db", "xfsprogs"),
        ("mkfs.erofs", "erofs-utils"),
        ("fakeroot", "fakeroot"),
        ("cmp", "diffutils"),
    ]) {
        return;
    }
    let d = scratch();
    let r = make_tree(d.path());
    // The same tree at another place: cp -a keeps owners, modes and times.
    let other = d.path().join("elsewhere");
    std::fs::create_dir(&other).unwrap();
    run(Command::new("cp").arg("-a").arg(&r).arg(other.join("tree")));
    std::fs::copy(d.path().join("rootfs.mtree"), other.join("tree.mtree")).unwrap();
    let copy = other.join("tree");
    for sub in ["a", "b"] {
        std::fs::create_dir(d.path().join(sub)).unwrap();
        std::fs::set_permissions(d.path().join(sub), std::fs::Permissions::from_mode(0o777))
            .unwrap();
    }
    let a = d.path().join("a/kata-containers.img");
    let b = d.path().join("b/guest.img");
    for extra in [
        &["--measured"][..],
        &[
            "--no-dax",
            "--table",
            "gpt",
            "--measured",
            "--format",
            "qcow2",
        ],
        &["--no-dax", "--fs", "xfs"],
        &["--no-dax", "--fs", "erofs", "--measured"],
    ] {
        fn with<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
            let mut v = vec!["-o", out.to_str().unwrap()];
            v.extend(extra);
            v
        }
        image_ok(&r, &with(&a, extra));
        image_ok(&copy, &with(&b, extra));
        run(Command::new("cmp").arg(&a).arg(&b));
        if extra.contains(&"--measured") {
            run(Command::new("cmp")
                .arg(d.path().join("a/root_hash.txt"))
                .arg(d.path().join("b/root_hash.txt")));
        }
    }
    // One byte of content (same size, same time) is a different image: new UUIDs.
    image_ok(&r, &["-o", a.to_str().unwrap()]);
    run(Command::new("sh").arg("-ec").arg(format!(
        "cd '{}' && printf 'gueSt\\n' > h && touch -r etc/hostname h && cat h > etc/hostname \
         && touch -r h etc/hostname && rm h",
        copy.display()
    )));
    image_ok(&copy, &["-o", b.to_str().unwrap()]);
    let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(x.len(), y.len());
    assert_ne!(
        &x[440..444],
        &y[440..444],
        "the disk signature ignores the content"
    );
}

/// Every filesystem keeps the tree's times (ext4 and xfs always did; erofs stamped every
/// inode with the build time when SOURCE_DATE_EPOCH was unset), and SOURCE_DATE_EPOCH
/// clamps them all the same way. Read back with debugfs, xfs_db and dump.erofs.
#[test]
fn every_filesystem_keeps_the_trees_times_and_the_epoch_clamps_them() {
    if !needs::tools(&[
        ("debugfs", "e2fsprogs"),
        ("mkfs.xfs", "xfsprogs"),
        ("xfs_db", "xfsprogs"),
        ("mkfs.erofs", "erofs-utils"),
        ("dump.erofs", "erofs-utils"),
        ("fakeroot", "fakeroot"),
    ]) {
        return;
    }
    let d = scratch();
    let r = d.path().join("rootfs");
    std::fs::create_dir_all(r.join("sbin")).unwrap();
    std::fs::write(r.join("sbin/init"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(r.join("sbin/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    // 1500000000 = 2017-07-14 02:40:00 UTC
    run(Command::new("touch")
        .args(["-d", "@1500000000"])
        .arg(r.join("sbin/init"))
        .arg(r.join("sbin"))
        .arg(&r));
    // (SOURCE_DATE_EPOCH, the time every filesystem must show)
    for (epoch, shown) in [
        (None, "2017-07-14 02:40:00"),
        (Some("1400000000"), "2014-05-13 16:53:20"),
    ] {
        for fs in ["ext4", "xfs", "erofs"] {
            let img = d.path().join(format!("{fs}.img"));
            let mut c = Command::new(BIN);
            c.arg("image")
                .arg(&r)
                .args(["--no-dax", "--fs", fs, "-o"])
                .arg(&img)
                .env("TZ", "UTC");
            match epoch {
                Some(e) => c.env("SOURCE_DATE_EPOCH", e),
                None => c.env_remove("SOURCE_DATE_EPOCH"),
            };
            run(&mut c);
            let p = partitions(&img);
            let part = d.path().join(format!("{fs}.part"));
            extract(&img, p[0].0, p[0].1, &part);
            for path in ["/sbin/init", "/"] {
                let got = match fs {
                    "ext4" => {
                        let st = run(Command::new("debugfs")
                            .env("TZ", "UTC")
                            .arg("-R")
                            .arg(format!("stat {path}"))
                            .arg(&part));
                        st.lines()
                            .find(|l| l.starts_with(" mtime:"))
                            .unwrap_or_default()
                            .to_string()
                    }
                    "xfs" => run(Command::new("xfs_db")
                        .env("TZ", "UTC")
                        .args([
                            "-r",
                            "-c",
                            &format!("path {path}"),
                            "-c",
                            "print core.mtime.sec",
                        ])
                        .arg(&part)),
                    _ => run(Command::new("dump.erofs")
                        .env("TZ", "UTC")
                        .arg(format!("--path={path}"))
                        .arg(&part)),
                };
                // debugfs and xfs_db print ctime(3) style, dump.erofs ISO style
                let ctime_style = match shown {
                    "2017-07-14 02:40:00" => "Fri Jul 14 02:40:00 2017",
                    _ => "Tue May 13 16:53:20 2014",
                };
                assert!(
                    got.contains(shown) || got.contains(ctime_style),
                    "{fs} {path} with SOURCE_DATE_EPOCH={epoch:?}: {got}"
                );
            }
        }
    }
}

#[test]
fn dax_header_with_measured_rootfs() {
    let d = scratch();
    let r = make_tree(d.path());
    let img = d.path().join("dm.img");
    let params = image_ok(&r, &["-o", img.to_str().unwrap(), "--measured"]);
    run(Command::new("sfdisk").arg("--verify").arg(&img));
    // MBR#1 (what a virtio-blk guest reads): data at 3 MiB, hash after it.
    let p = partitions(&img);
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].0, 3 * MIB);
    assert_eq!(p[1].0, p[0].0 + p[0].1);
    check_verity(d.path(), &img, &params, &p);
}

#[test]
fn sizes_are_exact_and_errors_clear() {
    let d = scratch();
    let r = make_tree(d.path());
    let img = d.path().join("s.img");
    let o = img.to_str().unwrap();
    // Tight: no free space, 1 MiB alignment — the computed size must be enough.
    image_ok(
        &r,
        &[
            "-o",
            o,
            "--no-dax",
            "--align-mb",
            "1",
            "--block-size",
            "1024",
        ],
    );
    let p = partitions(&img);
    let part = d.path().join("p");
    extract(&img, p[0].0, p[0].1, &part);
    run(Command::new("e2fsck").arg("-fn").arg(&part));
    assert!(
        std::fs::metadata(&img).unwrap().len() < 12 * MIB,
        "not minimal"
    );
    // --free-mb is honoured.
    image_ok(
        &r,
        &["-o", o, "--no-dax", "--align-mb", "1", "--free-mb", "20"],
    );
    let p = partitions(&img);
    extract(&img, p[0].0, p[0].1, &part);
    let free: u64 = run(Command::new("dumpe2fs").arg("-h").arg(&part))
        .lines()
        .find_map(|l| l.strip_prefix("Free blocks:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(free * 4096 >= 20 * MIB, "free {free} blocks");
    // A fixed size is exact, and the filesystem fills the partition.
    image_ok(&r, &["-o", o, "--no-dax", "--size-mb", "40"]);
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 40 * MIB);
    let p = partitions(&img);
    assert_eq!(p[0].0 + p[0].1, 40 * MIB);
    extract(&img, p[0].0, p[0].1, &part);
    run(Command::new("e2fsck").arg("-fn").arg(&part));
    // A fixed size that cannot hold the tree is an error, and leaves nothing behind.
    let small = d.path().join("small.img");
    let out = image(
        &r,
        &["-o", small.to_str().unwrap(), "--no-dax", "--size-mb", "3"],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("too small") && err.contains("needs at least"),
        "{err}"
    );
    assert!(!small.exists());
    assert!(
        std::fs::read_dir(d.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with(".small")),
        "scratch files left behind"
    );
    // GPT cannot carry the DAX header: refused up front (exit 2).
    let out = image(&r, &["-o", small.to_str().unwrap(), "--table", "gpt"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn xfs_from_a_protofile() {
    if !needs::tools(&[
        ("mkfs.xfs", "xfsprogs"),
        ("xfs_repair", "xfsprogs"),
        ("xfs_db", "xfsprogs"),
    ]) {
        return;
    }
    let d = scratch();
    let r = make_tree(d.path());
    let img = d.path().join("x.img");
    let params = image_ok(
        &r,
        &[
            "-o",
            img.to_str().unwrap(),
            "--fs",
            "xfs",
            "--no-dax",
            "--seed",
            "x",
        ],
    );
    assert!(params.contains("rootfstype=xfs"));
    run(Command::new("sfdisk").arg("--verify").arg(&img));
    let p = partitions(&img);
    let part = d.path().join("p");
    extract(&img, p[0].0, p[0].1, &part);
    run(Command::new("xfs_repair").arg("-n").arg(&part));
    let db = |path: &str, field: &str| {
        run(Command::new("xfs_db")
            .arg("-r")
            .arg("-c")
            .arg(format!("path {path}"))
            .arg("-c")
            .arg(format!("print {field}"))
            .arg(&part))
    };
    assert_eq!(db("/etc/hostname", "core.uid").trim(), "core.uid = 0");
    assert_eq!(db("/home/user", "core.uid").trim(), "core.uid = 1000");
    assert_eq!(db("/dev/console", "core.mode").trim(), "core.mode = 020600");
    assert_eq!(db("/tmp", "core.mode").trim(), "core.mode = 041777");
    assert_eq!(
        db("/sbin/init", "core.mtime.sec").trim(),
        "core.mtime.sec = Tue Nov 14 22:13:20 2023"
    );
    let again = d.path().join("x2.img");
    image_ok(
        &r,
        &[
            "-o",
            again.to_str().unwrap(),
            "--fs",
            "xfs",
            "--no-dax",
            "--seed",
            "x",
        ],
    );
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&again).unwrap(),
        "xfs builds differ"
    );
}

#[test]
fn erofs_under_fakeroot() {
    if !needs::tools(&[
        ("mkfs.erofs", "erofs-utils"),
        ("fsck.erofs", "erofs-utils"),
        ("dump.erofs", "erofs-utils"),
        ("fakeroot", "fakeroot"),
    ]) {
        return;
    }
    let d = scratch();
    let r = make_tree(d.path());
    let img = d.path().join("e.img");
    let params = image_ok(
        &r,
        &[
            "-o",
            img.to_str().unwrap(),
            "--fs",
            "erofs",
            "--no-dax",
            "--measured",
            "--seed",
            "e",
        ],
    );
    assert!(params.contains("dm-verity"));
    run(Command::new("sfdisk").arg("--verify").arg(&img));
    let p = partitions(&img);
    let part = d.path().join("p");
    extract(&img, p[0].0, p[0].1, &part);
    run(Command::new("fsck.erofs").arg(&part));
    let stat = |path: &str| {
        run(Command::new("dump.erofs")
            .arg(format!("--path={path}"))
            .arg("-s")
            .arg(&part))
    };
    let c = stat("/dev/console");
    assert!(
        c.contains("char dev") && c.contains("Uid: 0   Gid: 5") && c.contains("0600"),
        "{c}"
    );
    let h = stat("/etc/hostname");
    assert!(
        h.contains("Uid: 0   Gid: 0") && h.contains("Links: 2"),
        "{h}"
    );
    let u = stat("/home/user");
    assert!(
        u.contains("Uid: 1000   Gid: 1000") && u.contains("0700"),
        "{u}"
    );
    assert!(stat("/proc").contains("0555"));
    assert!(stat("/sbin/init").contains("2023-11-14 22:13:20"));
    // reproducible, also with a relative output path (osbuilder runs in the scratch dir)
    image_ok(
        &r,
        &[
            "-o",
            "e2.img",
            "--fs",
            "erofs",
            "--no-dax",
            "--measured",
            "--seed",
            "e",
        ],
    );
    let again = d.path().join("e2.img");
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&again).unwrap(),
        "erofs builds differ"
    );
}
