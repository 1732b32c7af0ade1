//! The real Alpine v3.16 x86_64 index (tests/fixtures/alpine): verified with Alpine's key,
//! parsed, and resolved; a copy with one byte changed is refused.

mod common;

use osbuilder::distro::DistroSet;
use osbuilder::pkg::apk::{index, resolve::Resolver, sign::Keyring, version::Dep};

const INDEX: &[u8] = include_bytes!("fixtures/alpine/APKINDEX-v3.16-main-x86_64.tar.gz");

fn alpine_keys() -> Keyring {
    let set = DistroSet::embedded().unwrap();
    let d = set.get("alpine").unwrap();
    let mut k = Keyring::new();
    for (name, pem) in d.files_under("keys") {
        k.add_pem(name, pem).unwrap();
    }
    k
}

#[test]
fn real_index_verifies_parses_and_resolves_alpine_base() {
    let idx = index::load(INDEX, &alpine_keys(), "APKINDEX").unwrap();
    assert_eq!(
        idx.signed_by,
        "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"
    );
    assert_eq!(idx.packages.len(), 4929);
    assert!(idx.description.starts_with("v3.16"), "{}", idx.description);
    let r = Resolver::new(&idx.packages)
        .resolve(&[Dep::parse("alpine-base").unwrap()])
        .unwrap();
    let names: Vec<&str> = r.packages.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "alpine-base",
        "busybox",
        "musl",
        "alpine-baselayout",
        "apk-tools",
        "openrc",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // Dependencies come before their dependants.
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(pos("musl") < pos("busybox"));
    assert!(pos("busybox") < pos("alpine-base"));
    eprintln!("alpine-base: {} packages: {names:?}", names.len());
}

#[test]
fn one_changed_byte_is_refused() {
    let keys = alpine_keys();
    // A byte inside the signed (second) gzip member, and one inside the signature.
    for at in [INDEX.len() / 2, 700, 400] {
        let mut bad = INDEX.to_vec();
        bad[at] ^= 0x01;
        let err = match index::load(&bad, &keys, "APKINDEX") {
            Ok(_) => panic!("a copy with byte {at} changed was accepted"),
            Err(e) => format!("{e:#}"),
        };
        eprintln!("byte {at}: {err}");
    }
}

#[test]
fn an_unknown_key_is_refused() {
    let mut k = Keyring::new();
    let set = DistroSet::embedded().unwrap();
    let d = set.get("alpine").unwrap();
    for (name, pem) in d.files_under("keys") {
        if !name.contains("6165ee59") {
            k.add_pem(name, pem).unwrap();
        }
    }
    let e = format!("{:#}", index::load(INDEX, &k, "APKINDEX").err().unwrap());
    assert!(e.contains("not a trusted key"), "{e}");
    assert!(e.contains("--keys-dir"), "{e}");
}

/// `osbuilder rootfs --dry-run` against the real index served on 127.0.0.1 in the mirror
/// layout: one `name version arch size` line per package, sizes as the index says.
#[test]
fn dry_run_resolves_alpine_base_from_the_served_real_index() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("www/v3.16/main/x86_64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("APKINDEX.tar.gz"), INDEX).unwrap();
    let mirror = common::apkrepo::serve(&d.path().join("www"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osbuilder"))
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
            "3.16",
            "--packages",
            "alpine-base",
            "--dry-run",
        ])
        .args(["--mirror", &mirror, "-o"])
        .arg(d.path().join("rootfs"))
        .env("OSBUILDER_CACHE_DIR", d.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let idx = index::load(INDEX, &alpine_keys(), "APKINDEX").unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 21, "{stdout}");
    for l in &lines {
        let f: Vec<&str> = l.split(' ').collect();
        assert_eq!(f.len(), 4, "{l}");
        let p = idx
            .packages
            .iter()
            .find(|p| p.name == f[0] && p.version == f[1])
            .unwrap_or_else(|| panic!("{l} is not in the index"));
        assert_eq!(f[2], p.arch);
        assert_eq!(f[3], p.size.to_string());
    }
    assert!(
        lines.iter().any(|l| l.starts_with("busybox 1.35.0-r")),
        "{stdout}"
    );
    assert!(!d.path().join("rootfs").exists());
    assert!(
        stderr.contains("signed by alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub"),
        "{stderr}"
    );
}

/// A well-formed index whose content was changed and recompressed, keeping Alpine's
/// signature: gzip is happy, the signature is not.
#[test]
fn a_recompressed_edited_index_fails_the_signature() {
    use std::io::{Read, Write};
    let members = osbuilder::pkg::apk::sign::gzip_members(INDEX).unwrap();
    let mut tar_bytes = Vec::new();
    flate2::read::GzDecoder::new(&INDEX[members[1].clone()])
        .read_to_end(&mut tar_bytes)
        .unwrap();
    // Edit the APKINDEX text in place (same length): busybox 1.35.0 → 1.99.0.
    let pos = tar_bytes
        .windows(16)
        .position(|w| w == b"P:busybox\nV:1.35")
        .expect("busybox record");
    tar_bytes[pos + 14..pos + 16].copy_from_slice(b"99");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(&tar_bytes).unwrap();
    let mut forged = INDEX[members[0].clone()].to_vec();
    forged.extend(e.finish().unwrap());
    let err = format!(
        "{:#}",
        index::load(&forged, &alpine_keys(), "APKINDEX")
            .err()
            .unwrap()
    );
    assert!(err.contains("BAD signature"), "{err}");
}

/// Kata's Alpine package list (the default) plus --extra-pkgs resolves from the real index.
#[test]
fn dry_run_of_the_default_kata_list_with_extra_packages() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("www/v3.16/main/x86_64");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("APKINDEX.tar.gz"), INDEX).unwrap();
    let mirror = common::apkrepo::serve(&d.path().join("www"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osbuilder"))
        .args([
            "rootfs",
            "--distro",
            "alpine",
            "--agent-init",
            "--arch",
            "amd64",
        ])
        .args([
            "--os-version",
            "3.16",
            "--extra-pkgs",
            "so:libz.so.1,cmd:ip",
            "--dry-run",
        ])
        .args(["--mirror", &mirror, "-o"])
        .arg(d.path().join("rootfs"))
        .env("OSBUILDER_CACHE_DIR", d.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let names: Vec<&str> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    for want in [
        "alpine-base",
        "bash",
        "iptables",
        "ip6tables",
        "libseccomp",
        "zlib",
        "iproute2-minimal",
        "ifupdown-ng-iproute2",
        "iptables-openrc",
    ] {
        assert!(names.contains(&want), "{want} missing: {names:?}");
    }
}
