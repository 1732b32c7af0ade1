//! Slim guests (docs/slim.md): the distro's dpkg-style path filters leave docs, man pages
//! and translations out while packages are unpacked, and `--package-set minimal` installs
//! only what an agent guest needs.
//!
//! The filters are checked against dpkg itself: the same package unpacked by the host's
//! dpkg (under fakeroot) with the rules osbuilder recorded gives the same tree and the same
//! file list. The slim Debian guest is built from the real mirror, packed, checked with
//! `dpkg --audit`, and booted to the agent.

mod common;
mod deb_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::needs;

const SUITE: &str = "testsuite";

/// Every path under `root` ("/usr/bin/x"), except dpkg's database and what provisioning
/// adds (osbuilder's own files).
fn paths(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = format!("/{}", e.path().strip_prefix(root).unwrap().display());
            if rel.starts_with("/var/lib/dpkg") || rel == "/var" || rel == "/var/lib" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.insert(rel);
        }
    }
    out
}

fn doc_package() -> deb_support::Pkg {
    use deb_support::E;
    deb_support::pkg(
        "docpkg",
        "1.0-1",
        "amd64",
        "",
        &[
            E::Dir("./"),
            E::Dir("./usr/"),
            E::Dir("./usr/bin/"),
            E::File("./usr/bin/tool", b"#!/bin/sh\n", 0o755, 0, 0),
            E::File("./usr/bin/tool-extra", b"#!/bin/sh\n", 0o755, 0, 0),
            E::Dir("./usr/share/"),
            E::Dir("./usr/share/doc/"),
            E::Dir("./usr/share/doc/docpkg/"),
            E::File("./usr/share/doc/docpkg/README", b"read me\n", 0o644, 0, 0),
            E::File("./usr/share/doc/docpkg/copyright", b"GPL\n", 0o644, 0, 0),
            E::HardLink(
                "./usr/share/doc/docpkg/README.again",
                "./usr/share/doc/docpkg/README",
            ),
            E::Symlink("./usr/share/doc/docpkg-extra", "docpkg"),
            E::Dir("./usr/share/man/"),
            E::Dir("./usr/share/man/man1/"),
            E::File("./usr/share/man/man1/tool.1.gz", b"man\n", 0o644, 0, 0),
            E::File("./usr/share/man/man1/keep.1.gz", b"man\n", 0o644, 0, 0),
            E::Dir("./usr/share/locale/"),
            E::Dir("./usr/share/locale/de/"),
            E::Dir("./usr/share/locale/de/LC_MESSAGES/"),
            E::File(
                "./usr/share/locale/de/LC_MESSAGES/tool.mo",
                b"mo\n",
                0o644,
                0,
                0,
            ),
            E::File("./usr/share/locale/locale.alias", b"alias\n", 0o644, 0, 0),
            E::Dir("./usr/share/info/"),
            E::File("./usr/share/info/tool.info.gz", b"info\n", 0o644, 0, 0),
        ],
    )
}

#[test]
fn path_filters_leave_out_what_dpkg_leaves_out() {
    if !needs::tools(&[("dpkg", "dpkg"), ("fakeroot", "fakeroot"), ("gpg", "gnupg")]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = deb_support::gpg_key(dir.path(), "repo");
    let www = dir.path().join("www");
    let pkg = doc_package();
    deb_support::write_repo(&www, SUITE, "amd64", std::slice::from_ref(&pkg), &key, "");
    let url = deb_support::serve(&www);
    let out = dir.path().join("rootfs");
    let (ok, _, err) = deb_support::run(
        deb_support::osbuilder()
            .args([
                "rootfs",
                "--distro",
                "debian",
                "--arch",
                "amd64",
                "--os-version",
                SUITE,
            ])
            .args(["--packages", "docpkg", "--no-agent"])
            .args(["--path-exclude", "/usr/bin/*-extra"])
            .args(["--path-include", "/usr/share/man/*/keep.1.gz"])
            .arg("--mirror")
            .arg(&url)
            .arg("--keyring")
            .arg(&key.public)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("-o")
            .arg(&out),
    );
    assert!(ok, "{err}");
    assert!(err.contains("path filters left out"), "{err}");
    // The rules in force, as recorded: the distro's, then the user's excludes, then includes.
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("rootfs.packages.json")).unwrap(),
    )
    .unwrap();
    let rules: Vec<String> = record["excluded"]["rules"]
        .as_array()
        .expect("the record lists the path filters")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        rules.first().map(String::as_str),
        Some("path-exclude=/usr/share/doc/*")
    );
    assert_eq!(
        rules[rules.len() - 2..],
        [
            "path-exclude=/usr/bin/*-extra",
            "path-include=/usr/share/man/*/keep.1.gz"
        ]
    );

    // dpkg's own unpack of the same package with the same rules.
    let deb = dir.path().join("docpkg.deb");
    std::fs::write(&deb, &pkg.deb).unwrap();
    let reference = dir.path().join("dpkg-root");
    std::fs::create_dir_all(reference.join("var/lib/dpkg/info")).unwrap();
    std::fs::create_dir_all(reference.join("var/lib/dpkg/updates")).unwrap();
    std::fs::write(reference.join("var/lib/dpkg/status"), "").unwrap();
    let mut dpkg = Command::new("fakeroot");
    dpkg.arg("dpkg")
        .arg(format!("--root={}", reference.display()))
        .args([
            "--force-not-root",
            "--force-script-chrootless",
            "--log=/dev/null",
        ]);
    for r in &rules {
        dpkg.arg(format!("--{r}"));
    }
    let o = dpkg.arg("--unpack").arg(&deb).output().unwrap();
    assert!(
        o.status.success(),
        "dpkg: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // What the package ships (osbuilder's bootstrap adds the merged-/usr links and /etc).
    let shipped = |p: &String| p.starts_with("/usr/share") || p.starts_with("/usr/bin");
    let ours: BTreeSet<String> = paths(&out).into_iter().filter(shipped).collect();
    let theirs: BTreeSet<String> = paths(&reference).into_iter().filter(shipped).collect();
    assert_eq!(
        ours.symmetric_difference(&theirs).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "osbuilder's tree (left) and dpkg's (right) differ"
    );
    for gone in [
        "/usr/share/doc/docpkg/README",
        "/usr/share/doc/docpkg/README.again",
        "/usr/share/man/man1/tool.1.gz",
        "/usr/share/locale/de/LC_MESSAGES/tool.mo",
        "/usr/share/info/tool.info.gz",
        "/usr/bin/tool-extra",
    ] {
        assert!(!ours.contains(gone), "{gone} was not left out");
    }
    for kept in [
        "/usr/share/doc/docpkg/copyright",
        "/usr/share/doc/docpkg-extra",
        "/usr/share/man/man1/keep.1.gz",
        "/usr/share/locale/locale.alias",
        "/usr/bin/tool",
    ] {
        assert!(ours.contains(kept), "{kept} was left out");
    }
    // The package still owns what was left out: dpkg lists it too.
    let list =
        |root: &Path| std::fs::read_to_string(root.join("var/lib/dpkg/info/docpkg.list")).unwrap();
    let sorted = |s: String| s.lines().map(String::from).collect::<BTreeSet<_>>();
    assert_eq!(sorted(list(&out)), sorted(list(&reference)));
}

#[test]
fn bad_slim_requests_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for (args, want) in [
        (
            &["--systemd", "--package-set", "minimal"][..],
            "no minimal package set for systemd",
        ),
        (
            &["--agent-init", "--path-exclude", "usr/share/doc/*"],
            "must be absolute",
        ),
        (
            &[
                "--agent-init",
                "--package-set",
                "minimal",
                "--packages",
                "x",
            ],
            "cannot be used with",
        ),
        (
            &["--agent-init", "--package-set", "tiny"],
            "invalid value 'tiny'",
        ),
    ] {
        let o = deb_support::osbuilder()
            .args([
                "rootfs",
                "--distro",
                "debian",
                "--mirror",
                "http://127.0.0.1:9/debian",
            ])
            .args(args)
            .arg("-o")
            .arg(dir.path().join("out"))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!dir.path().join("out").exists());
    }
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("e2e-cache")
}

fn rootfs(out: &Path, args: &[&str]) {
    let o = common::run(
        common::osbuilder()
            .args(["rootfs", "--distro", "debian", "--agent-init"])
            .args(args)
            .arg("--cache-dir")
            .arg(cache_dir())
            .arg("-o")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    assert!(
        o.status.success(),
        "rootfs {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// `dpkg --audit` on the guest's database: nothing half-installed, nothing missing.
fn dpkg_audit(root: &Path) {
    let o = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg("--audit")
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        o.status.success() && said.trim().is_empty(),
        "dpkg --audit: {said}"
    );
}

#[test]
fn the_debian_guest_leaves_docs_out_and_keep_docs_keeps_them() {
    if !needs::tools(&[("dpkg", "dpkg")]) || needs::mirror().is_none() {
        return;
    }
    let d = common::open_tempdir();
    let slim = d.path().join("slim");
    let full = d.path().join("full");
    rootfs(&slim, &[]);
    rootfs(&full, &["--keep-docs"]);
    let (s, f) = (paths(&slim), paths(&full));
    let extra: Vec<&String> = s.difference(&f).take(20).collect();
    assert!(
        extra.is_empty(),
        "the default guest has files --keep-docs does not: {extra:?}"
    );
    // Beyond /usr/share only the alternatives' man-page slave links go: their targets are
    // gone, and update-alternatives installs no slave whose target is missing.
    let beyond: Vec<&String> = f
        .difference(&s)
        .filter(|p| !p.starts_with("/usr/share/"))
        .filter(|p| !(p.starts_with("/etc/alternatives/") && p.ends_with(".gz")))
        .collect();
    assert!(beyond.is_empty(), "left out beyond /usr/share: {beyond:?}");
    assert!(f.iter().any(|p| p.starts_with("/usr/share/man/man1/")));
    assert!(!s.iter().any(|p| p.starts_with("/usr/share/man/man1/")));
    assert!(s.contains("/usr/share/doc/libc6/copyright"));
    assert!(f.contains("/usr/share/doc/libc6/changelog.Debian.gz"));
    assert!(!s.contains("/usr/share/doc/libc6/changelog.Debian.gz"));
    // The same packages are installed, with the same file lists.
    let db = |r: &Path| std::fs::read(r.join("var/lib/dpkg/status")).unwrap();
    assert!(db(&slim) == db(&full), "dpkg status differs");
    dpkg_audit(&slim);
    let yaml = std::fs::read_to_string(slim.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(
        yaml.contains("path-filters:\n  rules:\n    - \"path-exclude=/usr/share/doc/*\""),
        "{yaml}"
    );
    let full_yaml = std::fs::read_to_string(full.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(!full_yaml.contains("path-filters:"), "{full_yaml}");
}

#[test]
fn the_minimal_debian_guest_is_small_audits_clean_and_boots() {
    if !needs::tools(&[("dpkg", "dpkg")]) || needs::mirror().is_none() {
        return;
    }
    let d = common::open_tempdir();
    let r = d.path().join("rootfs");
    rootfs(&r, &["--package-set", "minimal"]);
    dpkg_audit(&r);
    let status = std::fs::read_to_string(r.join("var/lib/dpkg/status")).unwrap();
    for gone in [
        "Package: chrony\n",
        "Package: iptables\n",
        "Package: dbus\n",
    ] {
        assert!(!status.contains(gone), "{gone} in a minimal guest");
    }
    assert!(status.contains("Package: libseccomp2\n"));
    let yaml = std::fs::read_to_string(r.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(yaml.contains("excluded-entries: "), "{yaml}");
    let img = d.path().join("initrd.img");
    common::ok(
        common::osbuilder()
            .arg("initrd")
            .arg(&r)
            .arg("-o")
            .arg(&img),
    );
    let size = std::fs::metadata(&img).unwrap().len();
    eprintln!(
        "minimal agent-init initrd: {:.1} MiB gzip",
        size as f64 / 1048576.0
    );
    // The bound for a slim Debian agent-init initrd.
    assert!(size <= 15_000_000, "{size} bytes");
    let Some(k) = common::kernel::kernel("x86_64") else {
        return;
    };
    let o = common::run(
        common::osbuilder()
            .args(["boot", "--poweroff", "--timeout", "300", "--kernel"])
            .arg(&k)
            .arg("--initrd")
            .arg(&img),
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("ready after"),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}
