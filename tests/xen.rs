//! `osbuilder xen bundle|install`: bundles of guests built here (a Debian arm64 agent-init
//! guest from the mirror) and imported (a rootfs folder, a qcow2 made by qemu-img, ext4, raw),
//! checked with tools we did not write (sha256sum, e2fsck, debugfs, qemu-img, python3's YAML
//! parser); clear errors for bad specs; reproducible manifests; installation into a host.
//!
//! The boots that prove it all — the aarch64 virtualization host under
//! `qemu-system-aarch64 -M virt,virtualization=on` running Xen, dom0 and the bundled guest, and
//! the x86_64 baremetal host under OVMF — take minutes under TCG: they are `#[ignore]`d here
//! and run by `make test-xen` (tests/host_boot.rs).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

const EPOCH: &str = "1700000000";

fn bundle(spec: &Path, out: &Path) -> Output {
    run(osbuilder()
        .args(["xen", "bundle"])
        .arg(spec)
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", EPOCH))
}

fn bundle_ok(spec: &Path, out: &Path) -> serde_json::Value {
    let o = bundle(spec, out);
    assert!(
        o.status.success(),
        "xen bundle failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn refused(spec: &Path, out: &Path) -> String {
    let o = bundle(spec, out);
    assert_eq!(
        o.status.code(),
        Some(2),
        "expected a refusal (exit 2): {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.exists(), "a refused bundle left {}", out.display());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn config(b: &Path, guest: &str) -> String {
    std::fs::read_to_string(b.join(format!("configs/{guest}.cfg"))).unwrap()
}

/// `sha256sum -c` on the bundle's SHA256SUMS: every file is there and matches.
fn sums_check(b: &Path) {
    let out = ok(std::process::Command::new("sha256sum")
        .args(["--strict", "-c", "SHA256SUMS"])
        .current_dir(b));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().all(|l| l.ends_with(": OK")), "{text}");
}

fn e2fsck(img: &Path) {
    ok(std::process::Command::new("e2fsck").arg("-fn").arg(img));
}

fn debugfs_cat(img: &Path, path: &str) -> Vec<u8> {
    ok(std::process::Command::new("debugfs")
        .args(["-R", &format!("cat {path}")])
        .arg(img))
    .stdout
}

/// A small rootfs: an init script, a file with known bytes, a folder.
fn tiny_rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("tiny-rootfs");
    std::fs::create_dir_all(r.join("sbin")).unwrap();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    std::fs::write(r.join("sbin/init"), "#!/bin/sh\necho hello\n").unwrap();
    std::fs::write(r.join("etc/hello"), "hello from the guest\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(r.join("sbin/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    r
}

fn host_arch() -> &'static str {
    std::env::consts::ARCH
}

#[test]
fn imports_make_working_disks_and_bad_specs_are_clear_errors() {
    if !needs::tools(&[
        ("mkfs.ext4", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("qemu-img", "qemu-utils"),
        ("sha256sum", "coreutils"),
    ]) {
        return;
    }
    let d = open_tempdir();
    let root = tiny_rootfs(d.path());
    // An ext4 image and, from it, a qcow2 made by qemu-img.
    let ext4 = d.path().join("fs.ext4");
    ok(std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&ext4)
        .arg("8M"));
    let qcow2 = d.path().join("disk.qcow2");
    ok(std::process::Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&ext4)
        .arg(&qcow2));
    // A partitioned raw disk made by osbuilder image (MBR, no DAX header).
    let raw = d.path().join("part.img");
    ok(osbuilder()
        .arg("image")
        .arg(&root)
        .args(["--no-dax", "-o"])
        .arg(&raw)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    let ramdisk = d.path().join("initrd.img");
    std::fs::write(&ramdisk, b"not really an initrd").unwrap();
    let spec = d.path().join("guests.toml");
    std::fs::write(
        &spec,
        format!(
            r#"arch = "{arch}"
[[guest]]
name = "from-dir"
ramdisk = "initrd.img"
autostart = true
[guest.disk]
type = "rootfs_dir"
source = "tiny-rootfs"
size_mb = 16

[[guest]]
name = "from-qcow2"
memory = 128
vif = []
ramdisk = "initrd.img"
[guest.disk]
type = "qcow2"
source = "disk.qcow2"
access = "ro"

[[guest]]
name = "kept-qcow2"
ramdisk = "initrd.img"
[guest.disk]
type = "qcow2"
source = "disk.qcow2"
keep_qcow2 = true

[[guest]]
name = "from-ext4"
ramdisk = "initrd.img"
[guest.disk]
type = "ext4"
source = "fs.ext4"
device = "xvdb"

[[guest]]
name = "from-raw"
ramdisk = "initrd.img"
[guest.disk]
type = "raw"
source = "part.img"
"#,
            arch = host_arch()
        ),
    )
    .unwrap();
    let b = d.path().join("bundle");
    let m = bundle_ok(&spec, &b);
    sums_check(&b);

    // rootfs_dir: a bare ext4 of exactly 16 MiB holding the tree.
    let img = b.join("images/from-dir.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 16 << 20);
    e2fsck(&img);
    assert_eq!(debugfs_cat(&img, "/etc/hello"), b"hello from the guest\n");
    // qcow2 → raw, the same filesystem.
    let conv = b.join("images/from-qcow2.img");
    e2fsck(&conv);
    assert_eq!(debugfs_cat(&conv, "/etc/hello"), b"hello from the guest\n");
    // kept as qcow2: qemu-img agrees it is one, and the config says so.
    ok(std::process::Command::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(b.join("images/kept-qcow2.qcow2")));
    assert!(config(&b, "kept-qcow2").contains(
        "'format=qcow2, vdev=xvda, access=rw, target=/var/lib/xen/images/kept-qcow2.qcow2'"
    ));
    e2fsck(&b.join("images/from-ext4.img"));

    // The root device follows the layout: bare filesystems on the whole disk, the MBR
    // disk's first partition.
    let guests = m["guests"].as_array().unwrap();
    let root_of = |name: &str| {
        guests.iter().find(|g| g["name"] == name).unwrap()["disk"]["root"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(root_of("from-dir"), "/dev/xvda");
    assert_eq!(root_of("from-ext4"), "/dev/xvdb");
    assert_eq!(root_of("from-raw"), "/dev/xvda1");
    let c = config(&b, "from-raw");
    assert!(
        c.contains("cmdline = \"root=/dev/xvda1 rw console=hvc0\""),
        "{c}"
    );
    let c = config(&b, "from-qcow2");
    for line in [
        "type = \"pvh\"",
        "memory = 128",
        "ramdisk = \"/var/lib/xen/images/from-qcow2-initrd.img\"",
        "cmdline = \"root=/dev/xvda ro console=hvc0\"",
        "disk = [ 'format=raw, vdev=xvda, access=ro, target=/var/lib/xen/images/from-qcow2.img' ]",
        "vif = [ ]",
        "on_poweroff = \"destroy\"",
    ] {
        assert!(c.lines().any(|l| l == line), "missing {line:?} in\n{c}");
    }
    assert!(config(&b, "from-dir").contains("vif = [ 'bridge=xenbr0' ]"));

    // Errors: an unknown type, a missing source (both refused before any work), a size the
    // tree does not fit in.
    let bad = d.path().join("bad.toml");
    let out = d.path().join("bad-bundle");
    let guest = |disk: &str| {
        format!("[[guest]]\nname = \"g\"\nramdisk = \"initrd.img\"\n[guest.disk]\n{disk}\n")
    };
    std::fs::write(&bad, guest("type = \"vmdk\"\nsource = \"fs.ext4\"")).unwrap();
    let e = refused(&bad, &out);
    assert!(
        e.contains("unknown disk type 'vmdk'; known: rootfs_dir, qcow2, ext4, raw"),
        "{e}"
    );
    std::fs::write(&bad, guest("type = \"raw\"\nsource = \"nowhere.img\"")).unwrap();
    let e = refused(&bad, &out);
    assert!(e.contains("nowhere.img does not exist"), "{e}");
    std::fs::write(&bad, guest("type = \"ext4\"\nsource = \"disk.qcow2\"")).unwrap();
    let o = bundle(&bad, &out);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not an ext2/3/4 filesystem image"));
    std::fs::write(
        &bad,
        guest("type = \"rootfs_dir\"\nsource = \"tiny-rootfs\"\nsize_mb = 1"),
    )
    .unwrap();
    let o = bundle(&bad, &out);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("guest g: importing rootfs_dir disk")
            && e.contains("too small")
            && e.contains("needs at least"),
        "{e}"
    );
    assert!(!out.exists());
}

/// A host rootfs as `osbuilder provision` leaves one (osbuilder.yaml, SBOM), with a kernel in
/// /boot for guests that run the host's kernel.
fn host_rootfs(dir: &Path) -> PathBuf {
    let h = dir.join("host");
    std::fs::create_dir_all(h.join("boot")).unwrap();
    std::fs::create_dir_all(h.join("etc")).unwrap();
    std::fs::write(
        h.join("etc/os-release"),
        "ID=debian\nVERSION_CODENAME=trixie\n",
    )
    .unwrap();
    std::fs::write(h.join("boot/vmlinuz-6.1.0-old"), "old kernel").unwrap();
    std::fs::write(h.join("boot/vmlinuz-6.12.9-host"), "host kernel").unwrap();
    ok(osbuilder()
        .args(["provision", "--agent-init"])
        .arg(&h)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    h
}

#[test]
fn install_lays_the_bundle_where_xendomains_finds_it_and_records_it() {
    if !needs::tools(&[
        ("mkfs.ext4", "e2fsprogs"),
        ("python3", "python3"),
        ("sha256sum", "coreutils"),
    ]) {
        return;
    }
    if !have_python_yaml() {
        return;
    }
    let d = open_tempdir();
    tiny_rootfs(d.path());
    let kernel = d.path().join("vmlinuz");
    std::fs::write(&kernel, b"a guest kernel").unwrap();
    std::fs::write(d.path().join("initrd.img"), b"an initrd").unwrap();
    let spec = d.path().join("guests.toml");
    std::fs::write(
        &spec,
        format!(
            r#"arch = "{arch}"
[[guest]]
name = "web"
kernel = "vmlinuz"
ramdisk = "initrd.img"
autostart = true
[guest.disk]
type = "rootfs_dir"
source = "tiny-rootfs"

[[guest]]
name = "batch"
kernel = "host"
ramdisk = "initrd.img"
"#,
            arch = host_arch()
        ),
    )
    .unwrap();
    let b = d.path().join("bundle");
    bundle_ok(&spec, &b);
    // A folder without osbuilder.yaml is refused: the guests could not be recorded.
    let bare = d.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    let o = run(osbuilder().args(["xen", "install"]).arg(&b).arg(&bare));
    assert_eq!(
        o.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("osbuilder.yaml"));
    assert!(!bare.join("etc/xen").exists());

    let h = host_rootfs(d.path());
    for _ in 0..2 {
        // Twice: installing again replaces, it does not repeat.
        ok(osbuilder()
            .args(["xen", "install"])
            .arg(&b)
            .arg(&h)
            .env("SOURCE_DATE_EPOCH", EPOCH));
    }
    let images = h.join("var/lib/xen/images");
    assert_eq!(
        std::fs::read(images.join("web.img")).unwrap(),
        std::fs::read(b.join("images/web.img")).unwrap()
    );
    assert_eq!(
        std::fs::read(images.join("web-vmlinuz")).unwrap(),
        b"a guest kernel"
    );
    // kernel = "host": the host's newest kernel.
    assert_eq!(
        std::fs::read(images.join("batch-vmlinuz")).unwrap(),
        b"host kernel"
    );
    assert_eq!(
        config(&b, "web"),
        std::fs::read_to_string(h.join("etc/xen/web.cfg")).unwrap()
    );
    assert_eq!(
        std::fs::read_link(h.join("etc/xen/auto/web.cfg")).unwrap(),
        Path::new("/etc/xen/web.cfg")
    );
    assert!(std::fs::symlink_metadata(h.join("etc/xen/auto/batch.cfg")).is_err());

    // Recorded in osbuilder.yaml (read by a YAML parser) and the SBOM, with the digests of
    // the files as installed.
    let script = format!(
        r#"
import hashlib, json, yaml, sys
root = {root:?}
y = yaml.safe_load(open(root + "/var/lib/osbuilder/osbuilder.yaml"))
guests = {{g["name"]: g for g in y["xen-guests"]}}
assert sorted(guests) == ["batch", "web"], guests
assert guests["web"]["autostart"] == "yes" and guests["batch"]["autostart"] == "no"
for g in guests.values():
    for f in g["files"]:
        data = open(root + f["path"], "rb").read()
        assert hashlib.sha256(data).hexdigest() == f["sha256"], f
s = json.load(open(root + "/var/lib/osbuilder/sbom.spdx.json"))
names = [p["name"] for p in s["packages"]]
assert names.count("xen-guest-web") == 1, names
assert "/var/lib/xen/images/web.img" in names, names
print("ok")
"#,
        root = h.display().to_string()
    );
    let out = ok(std::process::Command::new("python3").arg("-c").arg(script));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let yaml = std::fs::read_to_string(h.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert_eq!(yaml.matches("xen-guests:").count(), 1);
}

fn have_python_yaml() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-c", "import yaml"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        needs::skip(needs::Missing::Tool {
            tool: "python3 yaml module".into(),
            package: "python3-yaml".into(),
        });
    }
    ok
}

/// `osbuilder rootfs …` for arm64 from the mirror, or None (the skip recorded).
fn arm64_rootfs(out: &Path, args: &[&str]) -> Option<()> {
    needs::mirror()?;
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache");
    let res = run(osbuilder()
        .args(["rootfs", "--distro", "debian", "--arch", "arm64"])
        .args(args)
        .arg("--cache-dir")
        .arg(cache)
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

#[test]
fn bundle_of_a_debian_arm64_agent_init_guest_is_complete_and_reproducible() {
    if !needs::tools(&[
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("sha256sum", "coreutils"),
    ]) {
        return;
    }
    let d = open_tempdir();
    let agent = busybox_agent(d.path());
    let r = d.path().join("guest");
    let agent_arg = agent.to_str().unwrap();
    let flags = [
        "--agent-init",
        "--packages",
        "busybox-static",
        "--agent-bin",
        agent_arg,
    ];
    if arm64_rootfs(&r, &flags).is_none() {
        return;
    }
    let Some(k) = kernel::kernel("aarch64") else {
        return;
    };
    let initrd = d.path().join("guest-initrd.img");
    ok(osbuilder().arg("initrd").arg(&r).arg("-o").arg(&initrd));
    let spec = d.path().join("guests.toml");
    std::fs::write(
        &spec,
        format!(
            r#"arch = "aarch64"
[[guest]]
name = "guest1"
memory = 256
kernel = {k:?}
ramdisk = "guest-initrd.img"
autostart = true
[guest.disk]
type = "rootfs_dir"
source = "guest"
"#,
            k = k.display().to_string()
        ),
    )
    .unwrap();
    let b1 = d.path().join("bundle");
    let m = bundle_ok(&spec, &b1);
    sums_check(&b1);
    for f in [
        "images/guest1.img",
        "images/guest1-vmlinuz",
        "images/guest1-initrd.img",
        "configs/guest1.cfg",
        "manifest.json",
        "SHA256SUMS",
    ] {
        assert!(b1.join(f).is_file(), "{f} missing from the bundle");
    }
    assert_eq!(m["arch"], "aarch64");
    assert_eq!(m["guests"][0]["disk"]["root"], "/dev/xvda");
    let img = b1.join("images/guest1.img");
    e2fsck(&img);
    assert_eq!(
        debugfs_cat(&img, "/usr/sbin/init"),
        std::fs::read(&agent).unwrap()
    );
    assert_eq!(
        std::fs::read(b1.join("images/guest1-vmlinuz")).unwrap(),
        std::fs::read(&k).unwrap()
    );
    let c = config(&b1, "guest1");
    for line in [
        "name = \"guest1\"",
        "type = \"pvh\"",
        "kernel = \"/var/lib/xen/images/guest1-vmlinuz\"",
        "ramdisk = \"/var/lib/xen/images/guest1-initrd.img\"",
        "cmdline = \"root=/dev/xvda rw console=hvc0\"",
    ] {
        assert!(c.lines().any(|l| l == line), "missing {line:?} in\n{c}");
    }
    // Reproducible: another run, under another name, has the same manifest.
    let b2 = d.path().join("again");
    bundle_ok(&spec, &b2);
    assert_eq!(
        std::fs::read(b1.join("manifest.json")).unwrap(),
        std::fs::read(b2.join("manifest.json")).unwrap()
    );
}

#[test]
fn install_as_an_unprivileged_user_records_root_ownership_in_the_metadata() {
    if !needs::tools(&[("mkfs.ext4", "e2fsprogs"), ("setpriv", "util-linux")]) || !needs::root() {
        return;
    }
    let d = open_tempdir();
    std::fs::write(d.path().join("initrd.img"), b"an initrd").unwrap();
    let spec = d.path().join("guests.toml");
    std::fs::write(
        &spec,
        format!(
            "arch = \"{}\"\n[[guest]]\nname = \"g\"\nkernel = \"host\"\nramdisk = \"initrd.img\"\n\
             autostart = true\n",
            host_arch()
        ),
    )
    .unwrap();
    let b = d.path().join("bundle");
    bundle_ok(&spec, &b);
    // The host rootfs (and the folder its metadata goes to) belong to nobody, who
    // provisions it and installs the bundle.
    let work = d.path().join("work");
    let h = work.join("host");
    std::fs::create_dir_all(h.join("boot")).unwrap();
    std::fs::write(h.join("boot/vmlinuz-6.12.9-host"), "host kernel").unwrap();
    sh(&format!("chown -R 65534:65534 '{}'", work.display()));
    ok(osbuilder_as_nobody()
        .args(["provision", "--agent-init"])
        .arg(&h)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    ok(osbuilder_as_nobody()
        .args(["xen", "install"])
        .arg(&b)
        .arg(&h)
        .env("SOURCE_DATE_EPOCH", EPOCH));
    let mtree = std::fs::read_to_string(work.join("host.mtree")).unwrap();
    let entry = |path: &str| {
        mtree
            .lines()
            .find(|l| l.split_whitespace().next() == Some(path))
            .unwrap_or_else(|| panic!("{path} not in the metadata:\n{mtree}"))
            .to_string()
    };
    assert!(entry("./etc/xen/g.cfg").contains("uid=0"), "{mtree}");
    assert!(entry("./var/lib/xen/images/g-vmlinuz").contains("uid=0"));
    let link = entry("./etc/xen/auto/g.cfg");
    assert!(
        link.contains("type=link") && link.contains("uid=0"),
        "{link}"
    );
    assert_eq!(
        std::fs::read(h.join("var/lib/xen/images/g-vmlinuz")).unwrap(),
        b"host kernel"
    );
}
