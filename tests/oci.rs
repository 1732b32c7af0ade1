//! `osbuilder oci`, `push` and `pull` against a real registry (Debian's docker-registry,
//! distribution 2.8, started on 127.0.0.1 with a config of the test's own), checked with
//! tools we did not write: skopeo (copy both ways, inspect --raw), PyPI's oras client,
//! e2fsck, sfdisk, and a QEMU boot of the pulled baremetal triple.
//!
//! Needs docker-registry, skopeo, e2fsprogs, fdisk, busybox-static, qemu-system-x86 (Debian)
//! and the Python module `oras` (PyPI `oras`, installed by .ci/run); the boot test needs the
//! Debian mirror once for the kernel.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{needs, osbuilder};
use osbuilder::agent::READY_MARKER;

const EPOCH: &str = "1700000000";
/// bcrypt of "s3cret" (cost 4) for the user osb, for the registry's htpasswd file.
const HTPASSWD: &str = "osb:$2b$04$4Dq9tLnSBw/Aj5Z/keLCx.lZatdD2DvPRL59xIk4nWOi7bE1v/2WK\n";

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run osbuilder with a clean credential environment (no host auth files are read).
fn osb(home: &Path) -> Command {
    let mut c = osbuilder();
    c.env("HOME", home)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("DOCKER_CONFIG")
        .env("SOURCE_DATE_EPOCH", EPOCH);
    c
}

fn ok(cmd: &mut Command) -> (String, String) {
    let o = cmd.output().expect("spawning");
    let (out, err) = text(&o);
    assert!(o.status.success(), "{cmd:?} failed ({}):\n{err}", o.status);
    (out, err)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A docker-registry on 127.0.0.1 with its own config and storage; stopped on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    fn start(htpasswd: Option<&str>) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cfg = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some(h) = htpasswd {
            let f = dir.path().join("htpasswd");
            std::fs::write(&f, h).unwrap();
            cfg.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: osbuilder-test\n    path: {}\n",
                f.display()
            ));
        }
        let cfg_path = dir.path().join("config.yml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&cfg_path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("docker-registry (Debian package docker-registry)");
        let r = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while needs::status(&format!("http://127.0.0.1:{port}/v2/"), "GET").is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start: {}",
                std::fs::read_to_string(r.dir.path().join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Where the registry keeps a blob's bytes (distribution's filesystem driver).
    fn blob_data(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_tools() -> bool {
    needs::tools(&[
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("e2fsck", "e2fsprogs"),
        ("sfdisk", "fdisk"),
        ("mkfs.ext4", "e2fsprogs"),
    ])
}

fn write_exec(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A rootfs disk image from `osbuilder image`: the reference agent as /sbin/init.
fn rootfs_image(dir: &Path, name: &str) -> PathBuf {
    let tree = dir.join(format!("{name}-tree"));
    write_exec(&tree.join("sbin/init"), osbuilder::agent::reference_agent());
    for d in ["proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    let img = dir.join(format!("{name}.img"));
    ok(osb(dir)
        .arg("image")
        .arg(&tree)
        .args(["--no-dax", "--seed", name, "-o"])
        .arg(&img));
    img
}

fn sbom(dir: &Path, arch: &str) -> PathBuf {
    let p = dir.join(format!("{arch}.spdx.json"));
    std::fs::write(
        &p,
        format!(
            "{{\"spdxVersion\":\"SPDX-2.3\",\"SPDXID\":\"SPDXRef-DOCUMENT\",\"name\":\"test-{arch}\"}}\n"
        ),
    )
    .unwrap();
    p
}

/// Deterministic stand-in bytes (for kernels and initramfs that are only moved, not booted).
fn blob(dir: &Path, name: &str, len: usize) -> PathBuf {
    let mut x = name
        .bytes()
        .fold(7u64, |a, b| a.wrapping_mul(31).wrapping_add(b as u64));
    let data: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Artifacts for amd64 and arm64 (stand-in kernels and initramfs, real disk images).
struct Fixture {
    dir: tempfile::TempDir,
    amd64: [PathBuf; 4],
    arm64: [PathBuf; 4],
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let amd64 = [
            rootfs_image(d, "amd64"),
            blob(d, "vmlinuz-amd64", 300_000),
            blob(d, "initrd-amd64", 70_000),
            sbom(d, "amd64"),
        ];
        let arm64 = [
            rootfs_image(d, "arm64"),
            blob(d, "vmlinuz-arm64", 250_000),
            blob(d, "initrd-arm64", 60_000),
            sbom(d, "arm64"),
        ];
        Fixture { dir, amd64, arm64 }
    }

    fn spec(arch: &str, f: &[PathBuf; 4]) -> String {
        format!(
            "arch={arch},rootfs={},kernel={},initramfs={},sbom={}",
            f[0].display(),
            f[1].display(),
            f[2].display(),
            f[3].display()
        )
    }

    /// `osbuilder oci -o OUT` with extra flags; returns the index digest it printed.
    fn layout(&self, out: &Path, extra: &[&str]) -> String {
        self.layout_report(out, extra).0
    }

    /// The index digest and what `osbuilder oci` said on stderr.
    fn layout_report(&self, out: &Path, extra: &[&str]) -> (String, String) {
        let (stdout, stderr) = ok(osb(self.dir.path())
            .args(["oci", "--tag", "trixie", "-o"])
            .arg(out)
            .args(["--artifacts", &Self::spec("arm64", &self.arm64)])
            .args(["--artifacts", &Self::spec("amd64", &self.amd64)])
            .args(["--distro", "debian", "--os-version", "trixie"])
            .args(extra));
        (stdout.trim().to_string(), stderr)
    }
}

fn read_json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

/// The image index of a layout made by `osbuilder oci` (its tagged entry).
fn layout_index(layout: &Path) -> (String, serde_json::Value) {
    let top = read_json(&layout.join("index.json"));
    let d = top["manifests"][0]["digest"].as_str().unwrap().to_string();
    let idx = read_json(&blob_path(layout, &d));
    (d, idx)
}

/// (offset, size) in bytes of the first partition, as sfdisk reads it.
fn first_partition(img: &Path) -> (u64, u64) {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .unwrap();
    assert!(o.status.success(), "sfdisk --json: {o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let p = &v["partitiontable"]["partitions"][0];
    (
        p["start"].as_u64().unwrap() * 512,
        p["size"].as_u64().unwrap() * 512,
    )
}

fn e2fsck_partition(img: &Path, scratch: &Path) {
    let (off, len) = first_partition(img);
    let bytes = std::fs::read(img).unwrap();
    let part = scratch.join("part.ext4");
    std::fs::write(&part, &bytes[off as usize..(off + len) as usize]).unwrap();
    let o = Command::new("e2fsck")
        .arg("-fn")
        .arg(&part)
        .output()
        .unwrap();
    assert!(o.status.success(), "e2fsck -fn on the pulled rootfs: {o:?}");
}

#[test]
fn push_then_pull_each_platform_gives_back_the_same_bytes_and_the_sbom() {
    if !registry_tools() {
        return;
    }
    let fx = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let index_digest = fx.layout(&layout, &[]);
    let reg = Registry::start(None);
    let reference = format!("{}/os/debian:trixie", reg.host());
    let (out, err) = ok(osb(work.path()).arg("push").arg(&layout).arg(&reference));
    assert_eq!(out.trim(), index_digest);
    assert!(err.contains("in the fallback tag sha256-"), "{err}");

    // The registry serves our index, byte for byte (skopeo reads it).
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    assert_eq!(
        raw.stdout,
        std::fs::read(blob_path(&layout, &index_digest)).unwrap()
    );
    let idx: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let entries: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["variant"].as_str().unwrap()
            )
        })
        .collect();
    // Arches in the matrix's order, the complete (baremetal) manifest first in each.
    assert_eq!(
        entries,
        [
            "amd64/baremetal",
            "amd64/virtualization",
            "arm64/baremetal",
            "arm64/virtualization"
        ]
    );

    for (arch, files) in [("amd64", &fx.amd64), ("arm64", &fx.arm64)] {
        for variant in ["baremetal", "virtualization"] {
            let out = work.path().join(format!("{arch}-{variant}"));
            let (stdout, err) = ok(osb(work.path())
                .arg("pull")
                .arg(&reference)
                .args([
                    "--platform",
                    &format!("linux/{arch}/{variant}"),
                    "--sbom",
                    "-o",
                ])
                .arg(&out));
            let m = read_json(&out.join("manifest.json"));
            assert_eq!(m["artifactType"], "application/vnd.osbuilder.os-image.v1");
            assert_eq!(m["annotations"]["dev.osbuilder.variant"], variant);
            assert_eq!(m["annotations"]["dev.osbuilder.distro"], "debian");
            assert!(stdout.trim().starts_with("sha256:"), "{stdout}");
            assert_eq!(
                std::fs::read(out.join("rootfs.img")).unwrap(),
                std::fs::read(&files[0]).unwrap()
            );
            let mut names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            if variant == "baremetal" {
                assert_eq!(
                    names,
                    [
                        ".osbuilder-output",
                        "config.json",
                        "initramfs.img",
                        "manifest.json",
                        "rootfs.img",
                        "sbom.spdx.json",
                        "vmlinuz"
                    ]
                );
                assert_eq!(
                    std::fs::read(out.join("vmlinuz")).unwrap(),
                    std::fs::read(&files[1]).unwrap()
                );
                assert_eq!(
                    std::fs::read(out.join("initramfs.img")).unwrap(),
                    std::fs::read(&files[2]).unwrap()
                );
                let types: Vec<&str> = m["layers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["mediaType"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    types,
                    [
                        "application/vnd.ironcore.image.kernel",
                        "application/vnd.ironcore.image.initramfs",
                        "application/vnd.ironcore.image.rootfs"
                    ]
                );
            } else {
                assert_eq!(
                    names,
                    [
                        ".osbuilder-output",
                        "config.json",
                        "manifest.json",
                        "rootfs.img",
                        "sbom.spdx.json"
                    ]
                );
            }
            // The SBOM came through the referrers fallback tag (distribution 2.8 has no
            // referrers API) and is the one given.
            assert!(
                err.contains("found through the fallback tag sha256-"),
                "{err}"
            );
            assert_eq!(
                std::fs::read(out.join("sbom.spdx.json")).unwrap(),
                std::fs::read(&files[3]).unwrap()
            );
            let cfg = read_json(&out.join("config.json"));
            let cmdline = cfg["commandLine"].as_str().unwrap();
            assert!(
                cmdline.starts_with("root=UUID=") && cmdline.ends_with(" rootfstype=ext4 ro"),
                "{cmdline}"
            );
        }
    }
    e2fsck_partition(&work.path().join("arm64-baremetal/rootfs.img"), work.path());

    // The fallback tag, read by skopeo: an index listing the SPDX manifest of that subject.
    let bm = idx["manifests"][0]["digest"].as_str().unwrap();
    let tag = format!("sha256-{}", bm.strip_prefix("sha256:").unwrap());
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{}/os/debian:{tag}", reg.host()))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    let refs: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(refs["mediaType"], "application/vnd.oci.image.index.v1+json");
    assert_eq!(refs["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(
        refs["manifests"][0]["artifactType"],
        "application/spdx+json"
    );
    let sbom_manifest = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!(
            "docker://{}/os/debian@{}",
            reg.host(),
            refs["manifests"][0]["digest"].as_str().unwrap()
        ))
        .output()
        .unwrap();
    let sm: serde_json::Value = serde_json::from_slice(&sbom_manifest.stdout).unwrap();
    assert_eq!(sm["subject"]["digest"], bm);

    // Pushing again uploads nothing and keeps one entry per SBOM in the fallback index.
    let (_, err) = ok(osb(work.path()).arg("push").arg(&layout).arg(&reference));
    assert!(err.contains(": 0 blobs uploaded"), "{err}");
    // A second repository mounts every blob from the first.
    let (_, err) = ok(osb(work.path())
        .arg("push")
        .arg(&layout)
        .arg(format!("{}/os/copy:trixie", reg.host()))
        .args(["--mount-from", "os/debian"]));
    assert!(
        err.contains("0 blobs uploaded") && err.contains("0 already there, 11 mounted"),
        "{err}"
    );

    // os/arch alone matches two manifests: refused (exit 2) with the choices, nothing written.
    let o = osb(work.path())
        .arg("pull")
        .arg(&reference)
        .args(["--platform", "linux/amd64", "-o"])
        .arg(work.path().join("ambiguous"))
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("ambiguous") && err.contains("linux/amd64/virtualization"),
        "{err}"
    );
    assert!(!work.path().join("ambiguous").exists());
}

#[test]
fn skopeo_copies_the_layout_to_the_registry_and_back_keeping_digests() {
    if !registry_tools() {
        return;
    }
    let fx = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    let index_digest = fx.layout(&layout, &[]);
    let reg = Registry::start(None);
    let dest = format!("docker://{}/x:y", reg.host());
    ok(Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:trixie", layout.display()))
        .arg(&dest));
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(&dest)
        .output()
        .unwrap();
    assert_eq!(
        raw.stdout,
        std::fs::read(blob_path(&layout, &index_digest)).unwrap()
    );
    let back = work.path().join("back");
    ok(Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--all",
            "--preserve-digests",
            "--src-tls-verify=false",
        ])
        .arg(&dest)
        .arg(format!("oci:{}:y", back.display())));
    let (d, idx) = layout_index(&back);
    assert_eq!(d, index_digest);
    // Every manifest and blob of the image came back under the same digest, same bytes.
    for m in idx["manifests"].as_array().unwrap() {
        let md = m["digest"].as_str().unwrap();
        let man = std::fs::read(blob_path(&back, md)).unwrap();
        assert_eq!(man, std::fs::read(blob_path(&layout, md)).unwrap());
        let man: serde_json::Value = serde_json::from_slice(&man).unwrap();
        for l in man["layers"].as_array().unwrap() {
            let ld = l["digest"].as_str().unwrap();
            assert_eq!(
                std::fs::read(blob_path(&back, ld)).unwrap(),
                std::fs::read(blob_path(&layout, ld)).unwrap()
            );
        }
    }
    // What skopeo pushed, osbuilder pulls.
    let out = work.path().join("pulled");
    ok(osb(work.path())
        .arg("pull")
        .arg(format!("{}/x:y", reg.host()))
        .args(["--platform", "linux/arm64/virtualization", "-o"])
        .arg(&out));
    assert_eq!(
        std::fs::read(out.join("rootfs.img")).unwrap(),
        std::fs::read(&fx.arm64[0]).unwrap()
    );
}

/// Whether Python's `oras` module (PyPI `oras`) can be imported; records the skip if not.
fn oras_python() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import oras.client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        needs::skip(needs::Missing::Tool {
            tool: "python3 -c 'import oras'".into(),
            package: "PyPI oras (`python3 -m pip install oras==0.2.43`, done by .ci/run)".into(),
        });
    }
    ok
}

#[test]
fn oras_pulls_a_manifests_files_by_title() {
    if !registry_tools() || !oras_python() {
        return;
    }
    let fx = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    fx.layout(&layout, &["--variant-style", "annotation"]);
    let reg = Registry::start(None);
    let reference = format!("{}/os/debian:trixie", reg.host());
    ok(osb(work.path()).arg("push").arg(&layout).arg(&reference));
    let (_, idx) = layout_index(&layout);
    // Annotation style: no platform.variant, the variant in the annotation.
    assert!(idx["manifests"][0]["platform"].get("variant").is_none());
    assert_eq!(
        idx["manifests"][0]["annotations"]["dev.osbuilder.variant"],
        "baremetal"
    );
    let bm = idx["manifests"][0]["digest"].as_str().unwrap();
    let out = work.path().join("oras");
    let script = format!(
        "import oras.client\n\
         c = oras.client.OrasClient(insecure=True)\n\
         print(c.pull(target='{}/os/debian@{bm}', outdir='{}'))\n",
        reg.host(),
        out.display()
    );
    ok(Command::new("python3").args(["-c", &script]));
    assert_eq!(
        std::fs::read(out.join("vmlinuz")).unwrap(),
        std::fs::read(&fx.amd64[1]).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("initramfs.img")).unwrap(),
        std::fs::read(&fx.amd64[2]).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("rootfs.img")).unwrap(),
        std::fs::read(&fx.amd64[0]).unwrap()
    );
    e2fsck_partition(&out.join("rootfs.img"), work.path());
    // osbuilder selects by the annotation when there is no platform.variant.
    let pulled = work.path().join("pulled");
    ok(osb(work.path())
        .arg("pull")
        .arg(&reference)
        .args(["--platform", "linux/amd64/virtualization", "-o"])
        .arg(&pulled));
    assert_eq!(
        read_json(&pulled.join("manifest.json"))["layers"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn the_same_artifacts_give_the_same_index_digest() {
    if !needs::tools(&[("mkfs.ext4", "e2fsprogs")]) {
        return;
    }
    let fx = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let (a, said) = fx.layout_report(&work.path().join("a"), &[]);
    // Another name, blobs copied instead of linked, the same SOURCE_DATE_EPOCH.
    let (b, said_copy) = fx.layout_report(&work.path().join("elsewhere"), &["--copy"]);
    assert_eq!(a, b);
    let a_files = std::fs::read(work.path().join("a/index.json")).unwrap();
    assert_eq!(
        a_files,
        std::fs::read(work.path().join("elsewhere/index.json")).unwrap()
    );
    // On one filesystem the artifacts are linked into the layout, never copied.
    assert!(said.contains(", 0 copied)"), "{said}");
    assert!(
        said_copy.contains("(0 reflinked, 0 hard-linked, "),
        "{said_copy}"
    );
    // Another epoch is another image.
    let mut c = osb(fx.dir.path());
    c.env("SOURCE_DATE_EPOCH", "1700000001")
        .args(["oci", "--tag", "trixie", "-o"])
        .arg(work.path().join("c"))
        .args(["--artifacts", &Fixture::spec("amd64", &fx.amd64)]);
    let (out, _) = ok(&mut c);
    assert_ne!(out.trim(), a);
    // A folder that is not a layout is not replaced; a layout is.
    let other = work.path().join("notes");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("keep.txt"), b"mine").unwrap();
    let o = osb(fx.dir.path())
        .args(["oci", "-o"])
        .arg(&other)
        .args(["--artifacts", &Fixture::spec("amd64", &fx.amd64)])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(other.join("keep.txt").exists());
    assert_eq!(fx.layout(&work.path().join("a"), &[]), a);
}

/// A boot initramfs: static busybox and an /init that mounts the root named by `root=`
/// (UUID=… through findfs, or a device path) read-only and switch_roots into it. The
/// dracut method (`osbuilder initrd --method dracut`) can replace it.
fn busybox_initramfs(dir: &Path) -> PathBuf {
    let tree = dir.join("initramfs-tree");
    write_exec(
        &tree.join("bin/busybox"),
        &std::fs::read("/bin/busybox").unwrap(),
    );
    write_exec(
        &tree.join("init"),
        b"#!/bin/busybox sh\n\
          b=/bin/busybox\n\
          $b mkdir -p /proc /sys /dev /newroot\n\
          $b mount -t proc proc /proc\n\
          $b mount -t sysfs sysfs /sys\n\
          $b mount -t devtmpfs devtmpfs /dev\n\
          root=; fstype=auto\n\
          for a in $($b cat /proc/cmdline); do\n\
            case $a in root=*) root=${a#root=};; rootfstype=*) fstype=${a#rootfstype=};; esac\n\
          done\n\
          dev=; i=0\n\
          while [ $i -lt 100 ]; do\n\
            case $root in /dev/*) [ -b $root ] && dev=$root;; *) dev=$($b findfs $root 2>/dev/null);; esac\n\
            [ -n \"$dev\" ] && break\n\
            $b sleep 0.1; i=$((i+1))\n\
          done\n\
          [ -n \"$dev\" ] || { echo \"initramfs: root $root not found\"; $b poweroff -f; }\n\
          echo \"initramfs: mounting $root ($dev) as $fstype\"\n\
          $b mount -t $fstype -o ro $dev /newroot || $b poweroff -f\n\
          $b umount /sys /proc\n\
          $b umount /dev\n\
          exec $b switch_root /newroot /sbin/init\n",
    );
    std::fs::create_dir_all(tree.join("sbin")).unwrap();
    std::os::unix::fs::symlink("../init", tree.join("sbin/init")).unwrap();
    let out = dir.join("initramfs.img");
    ok(osb(dir)
        .arg("initrd")
        .arg(&tree)
        .args(["--all-root", "--compression", "gzip", "--level", "1", "-o"])
        .arg(&out));
    out
}

#[test]
fn the_pulled_baremetal_triple_boots() {
    if !registry_tools() || !needs::tools(&[("busybox", "busybox-static")]) {
        return;
    }
    // Debian's dynamic busybox also installs /bin/busybox; the initramfs has no libc.
    let bb = std::fs::read("/bin/busybox").unwrap_or_default();
    if !common::is_static_elf(&bb) {
        needs::skip(needs::Missing::Tool {
            tool: "a static /bin/busybox".into(),
            package: "busybox-static".into(),
        });
        return;
    }
    let Some(kernel) = common::kernel::kernel("x86_64") else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let rootfs = rootfs_image(d, "root");
    let initramfs = busybox_initramfs(d);
    let layout = d.join("layout");
    ok(osb(d).args(["oci", "-o"]).arg(&layout).args([
        "--artifacts",
        &format!(
            "arch=amd64,rootfs={},kernel={},initramfs={}",
            rootfs.display(),
            kernel.parent().unwrap().display(),
            initramfs.display()
        ),
    ]));
    let reg = Registry::start(None);
    let reference = format!("{}/os/boot:latest", reg.host());
    ok(osb(d).arg("push").arg(&layout).arg(&reference));
    let out = d.join("pulled");
    ok(osb(d)
        .arg("pull")
        .arg(&reference)
        .args(["--platform", "linux/amd64/baremetal", "-o"])
        .arg(&out));
    let cmdline = read_json(&out.join("config.json"))["commandLine"]
        .as_str()
        .unwrap()
        .to_string();
    let o = osb(d)
        .args(["boot", "--poweroff", "--timeout", "120", "--kernel"])
        .arg(out.join("vmlinuz"))
        .arg("--initrd")
        .arg(out.join("initramfs.img"))
        .arg("--image")
        .arg(out.join("rootfs.img"))
        .args(["--append", &cmdline])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "boot failed:\n{stderr}");
    assert!(
        stdout.contains(READY_MARKER) && stdout.contains("pid=1"),
        "{stdout}"
    );
    assert!(stdout.contains("powered off after "), "{stdout}");
}

#[test]
fn registry_down_is_a_clear_error_and_nothing_is_written() {
    if !needs::tools(&[("mkfs.ext4", "e2fsprogs")]) {
        return;
    }
    let fx = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    fx.layout(&layout, &[]);
    let port = free_port();
    let o = osb(work.path())
        .arg("push")
        .arg(&layout)
        .arg(format!("127.0.0.1:{port}/os/debian:trixie"))
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach registry 127.0.0.1:{port}"))
            && err.contains("is it running"),
        "{err}"
    );
    let out = work.path().join("pulled");
    let o = osb(work.path())
        .arg("pull")
        .arg(format!("127.0.0.1:{port}/os/debian:trixie"))
        .args(["--platform", "linux/amd64/baremetal", "-o"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("cannot reach registry"), "{o:?}");
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        1,
        "only the layout"
    );
}

#[test]
fn a_registry_with_auth_refuses_without_credentials_and_takes_the_auth_file() {
    if !needs::tools(&[
        ("docker-registry", "docker-registry"),
        ("mkfs.ext4", "e2fsprogs"),
    ]) {
        return;
    }
    let fx = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    fx.layout(&layout, &[]);
    let reg = Registry::start(Some(HTPASSWD));
    let reference = format!("{}/os/debian:trixie", reg.host());
    let o = osb(work.path())
        .arg("push")
        .arg(&layout)
        .arg(&reference)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("requires credentials")
            && err.contains("(401)")
            && err.contains("podman login"),
        "{err}"
    );
    // Wrong password: said so, naming the file.
    let auth = work.path().join("auth.json");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    std::fs::write(
        &auth,
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            reg.host(),
            b64("osb:wrong")
        ),
    )
    .unwrap();
    let o = osb(work.path())
        .env("REGISTRY_AUTH_FILE", &auth)
        .arg("push")
        .arg(&layout)
        .arg(&reference)
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refused the credentials for osb") && err.contains("auth.json"),
        "{err}"
    );
    // Right password, in podman's per-user file.
    let containers = work.path().join(".config/containers");
    std::fs::create_dir_all(&containers).unwrap();
    std::fs::write(
        containers.join("auth.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{}\"}}}}}}",
            reg.host(),
            b64("osb:s3cret")
        ),
    )
    .unwrap();
    ok(osb(work.path()).arg("push").arg(&layout).arg(&reference));
    let out = work.path().join("pulled");
    ok(osb(work.path())
        .arg("pull")
        .arg(&reference)
        .args(["--platform", "linux/arm64/baremetal", "--sbom", "-o"])
        .arg(&out));
    assert_eq!(
        std::fs::read(out.join("vmlinuz")).unwrap(),
        std::fs::read(&fx.arm64[1]).unwrap()
    );
}

#[test]
fn a_blob_corrupted_in_the_registry_is_refused_and_nothing_is_written() {
    if !needs::tools(&[
        ("docker-registry", "docker-registry"),
        ("mkfs.ext4", "e2fsprogs"),
    ]) {
        return;
    }
    let fx = Fixture::new();
    let work = tempfile::tempdir().unwrap();
    let layout = work.path().join("layout");
    fx.layout(&layout, &[]);
    let reg = Registry::start(None);
    let reference = format!("{}/os/debian:trixie", reg.host());
    ok(osb(work.path()).arg("push").arg(&layout).arg(&reference));
    let (_, idx) = layout_index(&layout);
    let m = read_json(&blob_path(
        &layout,
        idx["manifests"][2]["digest"].as_str().unwrap(),
    ));
    let kernel = m["layers"][0]["digest"].as_str().unwrap();
    // Flip one byte in the middle of the stored kernel (same size, other content).
    let data = reg.blob_data(kernel);
    let mut bytes = std::fs::read(&data).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let pulls = work.path().join("pulls");
    std::fs::create_dir(&pulls).unwrap();
    let o = osb(work.path())
        .arg("pull")
        .arg(&reference)
        .args(["--platform", "linux/arm64/baremetal", "-o"])
        .arg(pulls.join("out"))
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("blob {kernel} from registry")) && err.contains("does not match"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(&pulls).unwrap().count(),
        0,
        "nothing, not even a temp folder"
    );
    // The other arch does not use that blob and still pulls.
    ok(osb(work.path())
        .arg("pull")
        .arg(&reference)
        .args(["--platform", "linux/amd64/virtualization", "-o"])
        .arg(pulls.join("ok")));
}

/// A TCP proxy to `upstream` that cuts the connection once `cut_after` bytes came from
/// clients: an upload interrupted half-way. With `then_down` every later connection is
/// dropped too (the network is gone). Returns (port, bytes sent by clients, cut happened).
fn cutting_proxy(
    upstream: u16,
    cut_after: u64,
    then_down: bool,
) -> (u16, Arc<AtomicU64>, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicU64::new(0));
    let cut = Arc::new(AtomicBool::new(false));
    let (s2, c2) = (sent.clone(), cut.clone());
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { break };
            if then_down && c2.load(Ordering::SeqCst) {
                let _ = client.shutdown(Shutdown::Both);
                continue;
            }
            let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_in, mut c_out) = (server, client);
            let (sent, cut) = (s2.clone(), c2.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let total = sent.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
                    if (total > cut_after && !cut.swap(true, Ordering::SeqCst))
                        || (then_down && cut.load(Ordering::SeqCst))
                    {
                        let _ = c_in.shutdown(Shutdown::Both);
                        let _ = s_out.shutdown(Shutdown::Both);
                        break;
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = s_out.shutdown(Shutdown::Write);
            });
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(Shutdown::Both);
            });
        }
    });
    (port, sent, cut)
}

#[test]
fn an_upload_cut_half_way_goes_on_and_a_rerun_sends_only_what_is_missing() {
    if !needs::tools(&[
        ("docker-registry", "docker-registry"),
        ("mkfs.ext4", "e2fsprogs"),
    ]) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let rootfs = rootfs_image(d, "big");
    let rootfs_size = std::fs::metadata(&rootfs).unwrap().len();
    let kernel = blob(d, "kernel", 4 << 20);
    let initramfs = blob(d, "initramfs", 70_000);
    let layout = d.join("layout");
    ok(osb(d).args(["oci", "-o"]).arg(&layout).args([
        "--artifacts",
        &format!(
            "arch=amd64,rootfs={},kernel={},initramfs={}",
            rootfs.display(),
            kernel.display(),
            initramfs.display()
        ),
    ]));
    let reg = Registry::start(None);
    // One at a time, 4 MiB chunks: config, kernel, initramfs, then the rootfs, cut half-way.
    let push = |port: u16, repo: &str| {
        osb(d)
            .arg("push")
            .arg(&layout)
            .arg(format!("127.0.0.1:{port}/{repo}:v1"))
            .args(["--jobs", "1", "--chunk-mb", "4"])
            .output()
            .unwrap()
    };
    let cut_at = (4 << 20) + 70_000 + rootfs_size / 2;

    // The connection is cut once: the push goes on by itself and the bytes arrive whole.
    let (port, _, cut) = cutting_proxy(reg.port, cut_at, false);
    let o = push(port, "os/once");
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(cut.load(Ordering::SeqCst), "the proxy never cut the upload");
    // distribution drops a session whose chunk was cut: the blob begins again.
    assert!(
        err.contains("after interruptions 0 chunk(s) resumed, 1 upload(s) begun again"),
        "{err}"
    );
    let out = d.join("pulled");
    ok(osb(d)
        .arg("pull")
        .arg(format!("{}/os/once:v1", reg.host()))
        .args(["--platform", "linux/amd64/baremetal", "-o"])
        .arg(&out));
    assert_eq!(
        std::fs::read(out.join("rootfs.img")).unwrap(),
        std::fs::read(&rootfs).unwrap()
    );
    assert_eq!(
        std::fs::read(out.join("vmlinuz")).unwrap(),
        std::fs::read(&kernel).unwrap()
    );

    // The network goes away half-way: a clear error, and the tag does not exist (it is
    // written last), so nobody pulls a half-pushed image.
    let (port, _, _) = cutting_proxy(reg.port, cut_at, true);
    let o = push(port, "os/twice");
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot reach registry"), "{err}");
    let o = osb(d)
        .arg("pull")
        .arg(format!("{}/os/twice:v1", reg.host()))
        .args(["--platform", "linux/amd64/baremetal", "-o"])
        .arg(d.join("half"))
        .output()
        .unwrap();
    assert!(text(&o).1.contains("not found"), "{o:?}");
    assert!(!d.join("half").exists());
    // Run again: what arrived before the cut is not sent again.
    let (port, sent, _) = cutting_proxy(reg.port, u64::MAX, false);
    let o = push(port, "os/twice");
    let (_, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("3 already there"), "{err}");
    let total = sent.load(Ordering::SeqCst);
    assert!(
        total < rootfs_size + (1 << 20),
        "sent {total} bytes, the rootfs is {rootfs_size}: {err}"
    );
}

#[test]
fn bad_requests_are_refused_before_anything_is_written_and_every_kata_arch_is_accepted() {
    if !needs::tools(&[("mkfs.ext4", "e2fsprogs"), ("tar", "tar")]) {
        return;
    }
    let fx = Fixture::new();
    let d = fx.dir.path();
    let out = d.join("refused");
    let refused = |args: &[String], needle: &str| {
        let o = osb(d)
            .args(["oci", "-o"])
            .arg(&out)
            .args(args)
            .output()
            .unwrap();
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!out.exists());
    };
    let img = fx.amd64[0].display().to_string();
    let k = fx.amd64[1].display().to_string();
    let a = |s: String| vec!["--artifacts".to_string(), s];
    refused(
        &a(format!("arch=amd64,rootfs={img},kernel={k}")),
        "needs both kernel= and initramfs=",
    );
    refused(
        &[
            a(format!("arch=amd64,rootfs={img}")),
            a(format!("arch=x86_64,rootfs={img}")),
        ]
        .concat(),
        "given twice for x86_64",
    );
    refused(
        &[
            a(format!("arch=amd64,rootfs={img}")),
            vec!["--rootfs-format".into(), "erofs".into()],
        ]
        .concat(),
        "pass --rootfs-format ext4",
    );
    refused(
        &a(format!("arch=sparc,rootfs={img}")),
        "unknown architecture",
    );
    refused(
        &a(format!(
            "arch=amd64,rootfs={}",
            d.join("nope.img").display()
        )),
        "no such file",
    );

    // A tar of the tree is an OCI filesystem layer; it has no UUID, so a baremetal
    // manifest needs --cmdline.
    let tar = d.join("rootfs.tar");
    ok(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(d.join("amd64-tree"))
        .arg("."));
    let tar_spec = format!(
        "arch=amd64,rootfs={},kernel={k},initramfs={}",
        tar.display(),
        fx.amd64[2].display()
    );
    refused(
        &[
            a(tar_spec.clone()),
            vec!["--rootfs-format".into(), "tar".into()],
        ]
        .concat(),
        "pass --cmdline",
    );
    let layout = d.join("all-arches");
    ok(osb(d)
        .args([
            "oci",
            "--rootfs-format",
            "tar",
            "--cmdline",
            "root=/dev/ram0",
            "-o",
        ])
        .arg(&layout)
        .args([
            "--artifacts",
            &format!("arch=s390x,rootfs={}", tar.display()),
        ])
        .args([
            "--artifacts",
            &format!("arch=ppc64el,rootfs={}", tar.display()),
        ])
        .args(["--artifacts", &tar_spec])
        .args([
            "--artifacts",
            &format!("arch=aarch64,rootfs={}", tar.display()),
        ]));
    let (_, idx) = layout_index(&layout);
    let platforms: Vec<String> = idx["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["variant"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [
            "amd64/baremetal",
            "amd64/virtualization",
            "arm64/virtualization",
            "ppc64le/virtualization",
            "s390x/virtualization"
        ]
    );
    let m = read_json(&blob_path(
        &layout,
        idx["manifests"][0]["digest"].as_str().unwrap(),
    ));
    assert_eq!(
        m["layers"][2]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar"
    );
    assert_eq!(
        m["layers"][2]["annotations"]["org.opencontainers.image.title"],
        "rootfs.tar"
    );
    let cfg = read_json(&blob_path(&layout, m["config"]["digest"].as_str().unwrap()));
    assert_eq!(cfg["commandLine"], "root=/dev/ram0");
}
