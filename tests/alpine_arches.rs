//! `osbuilder rootfs --distro alpine --arch A` for all four architectures, from synthetic
//! repositories laid out as MIRROR/v3.22/main/<arch>/ (and edge).

mod common;

use std::process::Command;

use common::apkrepo::{self, Entry, Pkg};

fn repo(arch: &str) -> Vec<Pkg> {
    let mut data = Pkg::new("alpine-baselayout-data", "3.6.8-r1", "noarch");
    data.files = vec![
        Entry::dir("etc"),
        Entry::file("etc/hostname", b"x\n", 0o644),
    ];
    let mut tool = Pkg::new("tool", "2.0-r1", arch);
    tool.depends = vec!["alpine-baselayout-data".into()];
    tool.files = vec![
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file(
            "usr/bin/tool",
            format!("built for {arch}\n").as_bytes(),
            0o755,
        ),
    ];
    // A package of another architecture that slipped into this index must not be used.
    let mut stray = Pkg::new(
        "stray",
        "1.0-r0",
        if arch == "x86_64" {
            "aarch64"
        } else {
            "x86_64"
        },
    );
    stray.files = vec![Entry::dir("etc")];
    vec![data, tool, stray]
}

fn rootfs(
    mirror: &str,
    keys: &std::path::Path,
    arch: &str,
    ver: &str,
    pkgs: &str,
    out: &std::path::Path,
    cache: &std::path::Path,
) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_osbuilder"))
        .args([
            "rootfs",
            "--distro",
            "alpine",
            "--agent-init",
            // The packages are what is under test; the reference agent exists for the
            // host's arch only.
            "--no-agent",
            "--arch",
            arch,
            "--os-version",
            ver,
        ])
        .args(["--mirror", mirror, "--packages", pkgs])
        .arg("--keys-dir")
        .arg(keys)
        .arg("-o")
        .arg(out)
        .env("OSBUILDER_CACHE_DIR", cache)
        .output()
        .unwrap()
}

#[test]
fn every_arch_builds_from_its_own_index() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    for arch in ["x86_64", "aarch64", "ppc64le", "s390x"] {
        apkrepo::write_repo(&www, "v3.22", arch, &repo(arch), apkrepo::test_key());
    }
    apkrepo::write_repo(&www, "edge", "s390x", &repo("s390x"), apkrepo::test_key());
    let keys = apkrepo::write_keys_dir(d.path());
    let mirror = apkrepo::serve(&www);
    let cache = d.path().join("cache");
    // Aliases are accepted: arm64 is aarch64, ppc64el is ppc64le.
    for (flag, arch, ver) in [
        ("x86_64", "x86_64", "3.22"),
        ("arm64", "aarch64", "3.22"),
        ("ppc64el", "ppc64le", "v3.22"),
        ("s390x", "s390x", "3.22"),
        ("s390x", "s390x", "edge"),
    ] {
        let out = d.path().join(format!("rootfs-{arch}-{ver}"));
        let o = rootfs(&mirror, &keys, flag, ver, "tool", &out, &cache);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{arch} {ver}: {err}");
        assert_eq!(
            std::fs::read_to_string(out.join("usr/bin/tool")).unwrap(),
            format!("built for {arch}\n")
        );
        assert_eq!(
            std::fs::read_to_string(out.join("etc/apk/arch")).unwrap(),
            format!("{arch}\n")
        );
        let release = if ver == "edge" { "edge" } else { "v3.22" };
        assert_eq!(
            std::fs::read_to_string(out.join("etc/apk/repositories")).unwrap(),
            format!("{mirror}/{release}/main\n")
        );
        let rec: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{}.packages.json", out.display())).unwrap(),
        )
        .unwrap();
        assert_eq!(rec["arch"], arch);
        let urls: Vec<&str> = rec["packages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["url"].as_str().unwrap())
            .collect();
        assert!(
            urls.iter()
                .all(|u| u.contains(&format!("/{release}/main/{arch}/"))),
            "{urls:?}"
        );

        let o = rootfs(
            &mirror,
            &keys,
            flag,
            ver,
            "stray",
            &d.path().join("never"),
            &cache,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("no package in the index provides 'stray'"),
            "{err}"
        );
    }
}

#[test]
fn a_missing_release_names_the_layout() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    let mirror = apkrepo::serve(&www);
    let keys = apkrepo::write_keys_dir(d.path());
    let o = rootfs(
        &mirror,
        &keys,
        "aarch64",
        "3.21",
        "tool",
        &d.path().join("r"),
        &d.path().join("c"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        err.contains("MIRROR/v3.21/main/aarch64/APKINDEX.tar.gz"),
        "{err}"
    );
    let o = rootfs(
        &mirror,
        &keys,
        "aarch64",
        "bookworm",
        "tool",
        &d.path().join("r"),
        &d.path().join("c"),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a release number"), "{err}");
}

/// Two packages shipping one file: refused unless the later one declares `replaces`; then
/// apk's database lists the file under the new owner only.
#[test]
fn file_conflicts_need_replaces() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    let mut a = Pkg::new("one", "1.0-r0", "x86_64");
    a.files = vec![
        Entry::dir("etc"),
        Entry::file("etc/shared.conf", b"one\n", 0o644),
    ];
    let mut b = Pkg::new("two", "1.0-r0", "x86_64");
    b.depends = vec!["one".into()];
    b.files = vec![
        Entry::dir("etc"),
        Entry::file("etc/shared.conf", b"two\n", 0o644),
    ];
    let mut c = b.clone();
    c.name = "three".into();
    c.replaces = vec!["one".into()];
    apkrepo::write_repo(&www, "v3.22", "x86_64", &[a, b, c], apkrepo::test_key());
    let keys = apkrepo::write_keys_dir(d.path());
    let mirror = apkrepo::serve(&www);
    let cache = d.path().join("cache");
    let o = rootfs(
        &mirror,
        &keys,
        "x86_64",
        "3.22",
        "two",
        &d.path().join("r2"),
        &cache,
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("would overwrite /etc/shared.conf, which belongs to one"),
        "{err}"
    );
    let out = d.path().join("r3");
    let o = rootfs(&mirror, &keys, "x86_64", "3.22", "three", &out, &cache);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(out.join("etc/shared.conf")).unwrap(),
        "two\n"
    );
    let db = std::fs::read_to_string(out.join("lib/apk/db/installed")).unwrap();
    let one = db.split("\n\n").find(|r| r.contains("P:one\n")).unwrap();
    let three = db.split("\n\n").find(|r| r.contains("P:three\n")).unwrap();
    assert!(!one.contains("R:shared.conf"), "{one}");
    assert!(
        three.contains("R:shared.conf") && three.contains("r:one"),
        "{three}"
    );
}

/// alpine-keys ships /etc/apk/keys entries itself (as symlinks into /usr/share): the build
/// adds its trusted keys beside them but never replaces a package's file.
#[test]
fn keys_shipped_by_a_package_are_kept() {
    let d = tempfile::tempdir().unwrap();
    let www = d.path().join("www");
    let mut k = Pkg::new("alpine-keys", "2.4-r1", "noarch");
    let target = format!("/usr/share/apk/keys/{}", apkrepo::KEY_NAME);
    k.files = vec![
        Entry::dir("etc"),
        Entry::dir("etc/apk"),
        Entry::dir("etc/apk/keys"),
        Entry::symlink(&format!("etc/apk/keys/{}", apkrepo::KEY_NAME), &target),
        Entry::dir("usr"),
        Entry::dir("usr/share"),
        Entry::dir("usr/share/apk"),
        Entry::dir("usr/share/apk/keys"),
        Entry::file(
            &target[1..],
            apkrepo::public_pem(apkrepo::test_key()).as_bytes(),
            0o644,
        ),
    ];
    apkrepo::write_repo(&www, "v3.22", "x86_64", &[k], apkrepo::test_key());
    let keys = apkrepo::write_keys_dir(d.path());
    let mirror = apkrepo::serve(&www);
    let out = d.path().join("r");
    let o = rootfs(
        &mirror,
        &keys,
        "x86_64",
        "3.22",
        "alpine-keys",
        &out,
        &d.path().join("c"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let link = out.join("etc/apk/keys").join(apkrepo::KEY_NAME);
    assert_eq!(std::fs::read_link(&link).unwrap().to_str().unwrap(), target);
    // Alpine's own keys (distros/alpine/keys) are added beside it.
    assert!(
        out.join("etc/apk/keys/alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub")
            .is_file()
    );
}
