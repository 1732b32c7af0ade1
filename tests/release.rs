//! The checked-in example (examples/osbuilder.toml) run as a release job runs it, from the
//! real mirror (the host's APT sources): a Debian agent-init initrd and a systemd measured
//! image for x86_64 and aarch64 in one `osbuilder release`, on this host, without emulation.
//! The tree is checked with tools we did not write (sha256sum, tar, zstd, sfdisk, e2fsck,
//! veritysetup, diff), every artifact boots under QEMU, and the stage cache is exercised:
//! a split run (`--only arch=…` per job, the aarch64 image rebuilt from scratch) merges into
//! the one-run tree byte for byte, a warm run packs nothing, and a new agent re-provisions
//! and re-packs without downloading. Downloads are shared with tests/e2e.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

const ARCHES: [&str; 2] = ["x86_64", "aarch64"];
const SHARE: &str = "opt/kata/share/kata-containers";

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache")
}

fn osb(ex: &Path) -> Command {
    let mut c = osbuilder();
    c.current_dir(ex).env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn check(c: &mut Command) -> Output {
    let o = run(c);
    assert!(
        o.status.success(),
        "{c:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    o
}

/// `osbuilder release … --json` in `ex`; its events.
fn release(ex: &Path, args: &[&str]) -> Vec<serde_json::Value> {
    let o = check(
        osb(ex)
            .args(["release", "-f", "osbuilder.toml", "--json", "--cache-dir"])
            .arg(cache_dir())
            .args(args),
    );
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn finishes<'a>(ev: &'a [serde_json::Value], stage: &str) -> Vec<&'a serde_json::Value> {
    ev.iter()
        .filter(|e| e["event"] == "stage-finish" && e["stage"] == stage)
        .collect()
}

fn finish<'a>(ev: &'a [serde_json::Value], stage: &str, job: &str) -> &'a serde_json::Value {
    finishes(ev, stage)
        .into_iter()
        .find(|e| e["job"] == job)
        .unwrap_or_else(|| panic!("no {stage} finish for {job} in {ev:?}"))
}

/// The names Kata's release uses, and nothing else.
fn expected_paths() -> Vec<String> {
    let mut v = vec![
        ".osbuilder-output".to_string(),
        "SHA256SUMS".into(),
        "release.json".into(),
    ];
    for a in ARCHES {
        for f in [
            "kata-debian-trixie.image",
            "kata-debian-trixie.initrd",
            "kata-containers.img",
            "kata-containers-initrd.img",
            "root_hash_base.txt",
        ] {
            v.push(format!("{a}/{SHARE}/{f}"));
        }
        for f in [
            "kata-static-rootfs-image.tar.zst",
            "kata-static-rootfs-initrd.tar.zst",
            "kata-debian-trixie.image.osbuilder.yaml",
            "kata-debian-trixie.image.spdx.json",
            "kata-debian-trixie.initrd.osbuilder.yaml",
            "kata-debian-trixie.initrd.spdx.json",
        ] {
            v.push(format!("{a}/{f}"));
        }
    }
    v.sort();
    v
}

fn files_in(dir: &Path) -> Vec<String> {
    let o = sh(&format!(
        "cd '{}' && find . ! -type d | sed 's|^\\./||' | LC_ALL=C sort",
        dir.display()
    ));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn check_tree(rel: &Path, scratch: &Path) {
    let mut want = expected_paths();
    want.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(files_in(rel), want);
    for a in ARCHES {
        let share = rel.join(a).join(SHARE);
        assert_eq!(
            std::fs::read_link(share.join("kata-containers.img")).unwrap(),
            Path::new("kata-debian-trixie.image")
        );
        assert_eq!(
            std::fs::read_link(share.join("kata-containers-initrd.img")).unwrap(),
            Path::new("kata-debian-trixie.initrd")
        );
        // The guest's record: the init mode and arch of each artifact.
        for (kind, init) in [("image", "no"), ("initrd", "yes")] {
            let y = std::fs::read_to_string(
                rel.join(a)
                    .join(format!("kata-debian-trixie.{kind}.osbuilder.yaml")),
            )
            .unwrap();
            assert!(
                y.contains(&format!("agent-is-init-daemon: \"{init}\""))
                    && y.contains(&format!("architecture: \"{a}\"")),
                "{y}"
            );
            let spdx: serde_json::Value = serde_json::from_slice(
                &std::fs::read(
                    rel.join(a)
                        .join(format!("kata-debian-trixie.{kind}.spdx.json")),
                )
                .unwrap(),
            )
            .unwrap();
            assert_eq!(spdx["spdxVersion"], "SPDX-2.3");
        }
        // The tarballs unpack (GNU tar, zstd) to Kata's layout and the same bytes.
        for (kind, file, link) in [
            ("image", "kata-debian-trixie.image", "kata-containers.img"),
            (
                "initrd",
                "kata-debian-trixie.initrd",
                "kata-containers-initrd.img",
            ),
        ] {
            let t = rel
                .join(a)
                .join(format!("kata-static-rootfs-{kind}.tar.zst"));
            let listing =
                String::from_utf8(sh(&format!("zstd -dc '{}' | tar -tvf -", t.display())).stdout)
                    .unwrap();
            let names: Vec<&str> = listing
                .lines()
                .map(|l| l.split_whitespace().nth(5).unwrap())
                .collect();
            let mut expect = vec![
                "opt/",
                "opt/kata/",
                "opt/kata/share/",
                "opt/kata/share/kata-containers/",
            ];
            let (f, l) = (format!("{SHARE}/{file}"), format!("{SHARE}/{link}"));
            let h = format!("{SHARE}/root_hash_base.txt");
            expect.push(&l);
            expect.push(&f);
            if kind == "image" {
                expect.push(&h);
            }
            assert_eq!(names, expect, "{listing}");
            assert!(listing.contains("root/root"), "{listing}");
            // Same bytes as the tree's file, streamed (no copy on disk).
            sh(&format!(
                "zstd -dc '{}' | tar -xOf - '{f}' | cmp - '{}'",
                t.display(),
                share.join(file).display()
            ));
            assert!(listing.contains(&format!("{l} -> {file}")), "{listing}");
        }
    }
    // Every file and link matches SHA256SUMS (coreutils), and every file is listed.
    let o = sh(&format!(
        "cd '{}' && sha256sum --strict -c SHA256SUMS",
        rel.display()
    ));
    let ok_lines = String::from_utf8(o.stdout).unwrap().lines().count();
    assert_eq!(ok_lines, expected_paths().len() - 2);
    // The measured x86_64 image: its root partition passes e2fsck and dm-verity checks with
    // the root hash published beside it.
    let img = rel
        .join("x86_64")
        .join(SHARE)
        .join("kata-debian-trixie.image");
    let parts: serde_json::Value =
        serde_json::from_slice(&sh(&format!("sfdisk -J '{}'", img.display())).stdout).unwrap();
    let p = parts["partitiontable"]["partitions"].as_array().unwrap();
    assert_eq!(p.len(), 2, "{parts}");
    let (start, size) = (
        p[0]["start"].as_u64().unwrap() * 512,
        p[0]["size"].as_u64().unwrap() * 512,
    );
    let hash_at = p[1]["start"].as_u64().unwrap() * 512;
    let line =
        std::fs::read_to_string(rel.join("x86_64").join(SHARE).join("root_hash_base.txt")).unwrap();
    let kv: std::collections::HashMap<&str, &str> = line
        .trim()
        .split(',')
        .map(|f| f.split_once('=').unwrap())
        .collect();
    let data = scratch.join("root.ext4");
    sh(&format!(
        "dd if='{}' of='{}' bs=4M iflag=skip_bytes,count_bytes skip={start} count={size} status=none",
        img.display(),
        data.display(),
    ));
    sh(&format!("e2fsck -fn '{}' >/dev/null", data.display()));
    sh(&format!(
        "veritysetup verify --no-superblock --hash sha256 --data-blocks={} --salt={} \
         --hash-offset={hash_at} '{}' '{}' {}",
        kv["data_blocks"],
        kv["salt"],
        data.display(),
        img.display(),
        kv["root_hash"]
    ));
    std::fs::remove_file(&data).unwrap();
}

fn boot(kernel: &Path, arch: &str, media: &str, file: &Path) -> String {
    let mut cmd = osbuilder();
    cmd.args([
        "boot",
        "--poweroff",
        "--timeout",
        "400",
        "--arch",
        arch,
        "--kernel",
    ])
    .arg(kernel)
    .arg(media)
    .arg(file);
    if media == "--image" {
        // The measured image's hash tree is checked against root_hash_base.txt by veritysetup
        // above; a kernel-enforced dm-verity boot is tests/dracut.rs's. Here the guest boots
        // its root partition directly, on both arches.
        cmd.args(["--append", "root=/dev/nvme0n1p1"]);
    }
    let o = check(&mut cmd);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    out.lines()
        .find(|l| l.starts_with("ready after"))
        .unwrap_or_else(|| panic!("no ready line: {out}"))
        .to_string()
}

/// Remove the stage entries whose job names contain `what` (as if never built).
fn drop_stages(what: &str) {
    for kind in ["rootfs", "artifact"] {
        let dir = cache_dir().join("stages").join(kind);
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta: serde_json::Value = match std::fs::read(e.path().join("stage.json"))
                .map(|b| serde_json::from_slice(&b))
            {
                Ok(Ok(m)) => m,
                _ => continue,
            };
            if meta["job"].as_str().unwrap_or("").contains(what) {
                sh(&format!(
                    "chmod -R u+rwX '{0}' && rm -rf '{0}'",
                    e.path().display()
                ));
            }
        }
    }
}

#[test]
fn the_example_release_builds_both_arches_boots_and_rebuilds_only_what_changed() {
    if needs::mirror().is_none()
        || !needs::tools(&[
            ("sha256sum", "coreutils"),
            ("tar", "tar"),
            ("zstd", "zstd"),
            ("sfdisk", "fdisk"),
            ("e2fsck", "e2fsprogs"),
            ("veritysetup", "cryptsetup-bin"),
            ("diff", "diffutils"),
        ])
    {
        return;
    }
    let (Some(kx), Some(ka)) = (kernel::kernel("x86_64"), kernel::kernel("aarch64")) else {
        return;
    };
    let d = open_tempdir();
    let ex = d.path().join("ex");
    std::fs::create_dir(&ex).unwrap();
    for f in ["osbuilder.toml", "agent-busybox.sh"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples")
                .join(f),
            ex.join(f),
        )
        .unwrap();
    }
    let gc = || {
        check(
            osbuilder()
                .args(["cache", "gc", "--all", "--cache-dir"])
                .arg(cache_dir()),
        )
    };
    gc();

    // One run, both arches, everything built.
    let ev = release(&ex, &["-o", "rel1"]);
    let packs = finishes(&ev, "pack");
    assert_eq!(packs.len(), 4, "{ev:?}");
    assert!(packs.iter().all(|e| e["cached"] == false), "{ev:?}");
    let artifacts = ev.iter().filter(|e| e["event"] == "artifact").count();
    assert_eq!(artifacts, expected_paths().len() - 1, "{ev:?}");
    let rel1 = ex.join("rel1");
    check_tree(&rel1, d.path());

    // Every artifact boots, through Kata's link names: one guest at a time, while the
    // rest of the test builds (the guests read rel1, which nothing below changes).
    let booted = {
        let rel1 = rel1.clone();
        std::thread::spawn(move || {
            for (arch, k) in [("x86_64", &kx), ("aarch64", &ka)] {
                let share = rel1.join(arch).join(SHARE);
                let r = boot(
                    k,
                    arch,
                    "--initrd",
                    &share.join("kata-containers-initrd.img"),
                );
                assert!(r.contains(&format!("arch={arch} pid=1")), "{r}");
                let r = boot(k, arch, "--image", &share.join("kata-containers.img"));
                assert!(
                    r.contains(&format!("arch={arch}"))
                        && !r.contains("pid=1 ")
                        && !r.ends_with("pid=1"),
                    "{r}"
                );
            }
        })
    };

    // Split as CI does: one job per arch. The aarch64 image is built again from scratch
    // (a second build of the same inputs), the rest comes from the cache; merged, the
    // trees equal the one-run tree byte for byte.
    drop_stages("image/aarch64");
    drop_stages("aarch64/kata-debian-trixie.image");
    let ev = release(&ex, &["--only", "arch=aarch64", "-o", "split-aarch64"]);
    assert_eq!(
        finish(&ev, "extract", "image/aarch64")["cached"],
        false,
        "{ev:?}"
    );
    assert_eq!(
        finish(&ev, "pack", "aarch64/kata-debian-trixie.image")["cached"],
        false
    );
    assert_eq!(
        finish(&ev, "pack", "aarch64/kata-debian-trixie.initrd")["cached"],
        true
    );
    let ev = release(&ex, &["--only", "arch=x86_64", "-o", "split-x86_64"]);
    assert!(
        finishes(&ev, "pack").iter().all(|e| e["cached"] == true),
        "{ev:?}"
    );
    for s in ["split-aarch64", "split-x86_64"] {
        sh(&format!(
            "cd '{}' && sha256sum --quiet -c SHA256SUMS",
            ex.join(s).display()
        ));
    }
    check(osb(&ex).args([
        "release",
        "--merge",
        "split-x86_64",
        "split-aarch64",
        "-o",
        "merged",
    ]));
    sh(&format!(
        "diff -r --no-dereference '{}' '{}'",
        rel1.display(),
        ex.join("merged").display()
    ));
    // One arch alone is not the whole release.
    let o = run(osb(&ex).args(["release", "--merge", "split-x86_64", "-o", "half"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("lacks 2 of the build file's artifacts"));

    // Warm: nothing resolved, downloaded, installed or packed; the same release.
    let ev = release(&ex, &["-o", "rel3"]);
    assert!(
        !ev.iter()
            .any(|e| e["event"] == "stage-start" && e["stage"] != "release"),
        "{ev:?}"
    );
    assert_eq!(ev.last().unwrap()["downloaded"], 0);
    assert_eq!(
        std::fs::read(rel1.join("SHA256SUMS")).unwrap(),
        std::fs::read(ex.join("rel3/SHA256SUMS")).unwrap()
    );

    // A new agent: its rootfs is provisioned again and its artifacts packed again, from
    // cached packages (nothing downloaded); the other arch's stays cached.
    let agent = ex.join("agent-busybox.sh");
    let mut text = std::fs::read_to_string(&agent).unwrap();
    text.push_str("# a new agent build\n");
    std::fs::write(&agent, text).unwrap();
    let ev = release(&ex, &["--only", "guest=initrd", "-o", "rel4"]);
    let ex_a = finish(&ev, "extract", "initrd/aarch64");
    assert_eq!(ex_a["cached"], false, "{ev:?}");
    assert_eq!(
        finish(&ev, "download", "initrd/aarch64")["bytes"],
        0,
        "{ev:?}"
    );
    assert_eq!(
        finish(&ev, "extract", "initrd/x86_64")["cached"],
        true,
        "{ev:?}"
    );
    assert_eq!(
        finish(&ev, "pack", "aarch64/kata-debian-trixie.initrd")["cached"],
        false
    );
    assert_eq!(
        finish(&ev, "pack", "x86_64/kata-debian-trixie.initrd")["cached"],
        true
    );
    assert_eq!(ev.last().unwrap()["downloaded"], 0);
    let new_init = std::fs::read(
        ex.join("rel4/aarch64")
            .join(SHARE)
            .join("kata-debian-trixie.initrd"),
    )
    .unwrap();
    let old_init = std::fs::read(
        rel1.join("aarch64")
            .join(SHARE)
            .join("kata-debian-trixie.initrd"),
    )
    .unwrap();
    assert_ne!(new_init, old_init);
    booted.join().expect("a boot failed (see above)");
    gc();
}
