//! Extraction of .apk data segments: the real aarch64 alpine-baselayout, and hostile
//! packages (`..`, absolute paths, symlink escapes) that must leave nothing outside the
//! root — both through the library and through a whole `osbuilder rootfs` build.

mod common;

use std::path::Path;
use std::process::Command;

use common::apkrepo::{self, Entry, Pkg};
use osbuilder::distro::DistroSet;
use osbuilder::pkg::apk::{index::Package, package, sign::Keyring};
use osbuilder::pkg::extract::{ExtractOptions, Extractor};

const BASELAYOUT: &[u8] = include_bytes!("fixtures/alpine/alpine-baselayout-3.2.0-r23-aarch64.apk");

#[test]
fn real_aarch64_package_extracts() {
    let set = DistroSet::embedded().unwrap();
    let mut keys = Keyring::new();
    for (n, pem) in set.get("alpine").unwrap().files_under("keys") {
        keys.add_pem(n, pem).unwrap();
    }
    let want = Package {
        name: "alpine-baselayout".into(),
        version: "3.2.0-r23".into(),
        checksum: "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=".into(),
        ..Default::default()
    };
    let v = package::verify(BASELAYOUT, &keys, &want).unwrap();
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let mut x = Extractor::new(&root, ExtractOptions::default()).unwrap();
    let placed = x
        .unpack(
            flate2::read::MultiGzDecoder::new(v.data),
            "alpine-baselayout",
        )
        .unwrap();
    let mtree = x.finish().unwrap();
    assert!(placed.len() > 60, "{}", placed.len());
    assert!(root.join("sbin/mkmntdirs").is_file());
    assert!(root.join("etc/modprobe.d/blacklist.conf").is_file());
    // Independent check: GNU tar lists the same regular files.
    let tar = Command::new("tar")
        .arg("-tzf")
        .arg("-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        tar.stdin.as_ref().unwrap().write_all(BASELAYOUT).unwrap();
    }
    let listing = String::from_utf8(tar.wait_with_output().unwrap().stdout).unwrap();
    for l in listing
        .lines()
        .filter(|l| !l.starts_with('.') && !l.ends_with('/'))
    {
        assert!(root.join(l).symlink_metadata().is_ok(), "{l} missing");
    }
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(root.join("tmp"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(m & 0o7777, 0o1777);
    } else {
        let _ = mtree;
    }
}

fn hostile(name: &str, files: Vec<Entry>) -> Pkg {
    let mut p = Pkg::new(name, "1.0-r0", "x86_64");
    p.files = files;
    p
}

/// Files outside the root that a hostile package aims at, relative to the test folder.
const TARGETS: [&str; 4] = ["pwned", "escape/pwned", "abs-pwned", "link-pwned"];

fn hostile_packages(outside: &Path) -> Vec<Pkg> {
    let abs = format!("{}/abs-pwned", outside.display());
    assert!(abs.len() < 100);
    vec![
        hostile(
            "dotdot",
            vec![
                Entry::dir("etc"),
                Entry::file("etc/../../pwned", b"x", 0o644),
            ],
        ),
        hostile("absolute", vec![Entry::file(&abs, b"x", 0o644)]),
        hostile(
            "symlink-escape",
            vec![
                Entry::dir("etc"),
                Entry::symlink("etc/out", &format!("{}", outside.display())),
                Entry::file("etc/out/link-pwned", b"x", 0o644),
            ],
        ),
        hostile(
            "symlink-dotdot",
            vec![
                Entry::dir("var"),
                Entry::symlink("var/up", "../../../../../../../../.."),
                Entry::file("var/up/pwned", b"x", 0o644),
            ],
        ),
        hostile(
            "hardlink-escape",
            vec![
                Entry::dir("etc"),
                Entry::hardlink("etc/shadow-copy", "../../../etc/hostname"),
            ],
        ),
    ]
}

#[test]
fn hostile_packages_leave_nothing_outside_the_root() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir_all(outside.join("escape")).unwrap();
    let mut keys = Keyring::new();
    keys.add_pem(
        apkrepo::KEY_NAME,
        apkrepo::public_pem(apkrepo::test_key()).as_bytes(),
    )
    .unwrap();
    for p in hostile_packages(&outside) {
        let b = apkrepo::build_package(&p, apkrepo::test_key());
        let entry = osbuilder::pkg::apk::index::parse_text(&b.index_record)
            .unwrap()
            .remove(0);
        let v = package::verify(&b.bytes, &keys, &entry).unwrap();
        let root = outside.join("escape").join("root");
        std::fs::create_dir_all(&root).unwrap();
        let mut x = Extractor::new(&root, ExtractOptions::default()).unwrap();
        let r = x.unpack(flate2::read::MultiGzDecoder::new(v.data), &p.name);
        let _ = x.finish();
        for t in TARGETS {
            assert!(
                !outside.join(t).exists(),
                "{}: wrote {t} outside the root",
                p.name
            );
        }
        assert!(!Path::new("/pwned").exists());
        eprintln!(
            "{}: {}",
            p.name,
            match &r {
                Ok(_) => "extracted (kept inside)".to_string(),
                Err(e) => format!("refused: {e:#}"),
            }
        );
        // Entries naming a path outside are refused; symlinks are followed as inside a
        // chroot (an absolute or `..` target stays within the root), so they may succeed.
        if p.name.starts_with("symlink") {
            if r.is_ok() && p.name == "symlink-escape" {
                let inside = root
                    .join(outside.strip_prefix("/").unwrap())
                    .join("link-pwned");
                assert!(inside.is_file(), "expected {}", inside.display());
            }
        } else {
            assert!(r.is_err(), "{} was not refused", p.name);
        }
        std::fs::remove_dir_all(&root).unwrap();
    }
}

#[test]
fn a_hostile_package_fails_the_rootfs_build_and_leaves_no_output() {
    let d = tempfile::tempdir().unwrap();
    let outside = d.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let www = d.path().join("www");
    let mut pkgs = hostile_packages(&outside);
    // And one whose data segment was swapped after signing (datahash mismatch).
    let mut tampered = hostile("tampered", vec![Entry::dir("etc")]);
    tampered.tamper_data = true;
    pkgs.push(tampered);
    apkrepo::write_repo(&www, "v3.22", "x86_64", &pkgs, apkrepo::test_key());
    let keys = apkrepo::write_keys_dir(d.path());
    let mirror = apkrepo::serve(&www);
    for p in &pkgs {
        let out = d.path().join(format!("rootfs-{}", p.name));
        let o = Command::new(env!("CARGO_BIN_EXE_osbuilder"))
            .args([
                "rootfs",
                "--distro",
                "alpine",
                "--agent-init",
                "--arch",
                "x86_64",
            ])
            .args([
                "--os-version",
                "3.22",
                "--mirror",
                &mirror,
                "--packages",
                &p.name,
            ])
            .arg("--keys-dir")
            .arg(&keys)
            .arg("-o")
            .arg(&out)
            .env("OSBUILDER_CACHE_DIR", d.path().join("cache"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!Path::new("/pwned").exists());
        for t in TARGETS {
            assert!(
                !outside.join(t).exists(),
                "{}: wrote {t} outside the root",
                p.name
            );
        }
        if p.name == "tampered" {
            assert!(err.contains("does not match its datahash"), "{err}");
        }
        if !p.name.starts_with("symlink") {
            assert!(!o.status.success(), "{} built:\n{err}", p.name);
            assert!(
                !out.exists(),
                "{}: a failed build left {}",
                p.name,
                out.display()
            );
            assert!(
                !d.path().read_dir().unwrap().any(|e| e
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("partial")),
                "{}: a partial folder was left",
                p.name
            );
        }
    }
}
