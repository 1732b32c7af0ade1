//! .apk verification: the real aarch64 alpine-baselayout package, and synthetic packages
//! whose signature, control checksum or data hash is wrong.

mod common;

use common::apkrepo::{self, Entry, Pkg};
use osbuilder::distro::DistroSet;
use osbuilder::pkg::apk::{db, index::Package, package, sign::Keyring};

const BASELAYOUT: &[u8] = include_bytes!("fixtures/alpine/alpine-baselayout-3.2.0-r23-aarch64.apk");
/// Q1 + base64(SHA-1 of the control member), computed with Python's hashlib over bytes
/// 666..2229 of the file (the gzip member boundaries zlib reports).
const BASELAYOUT_C: &str = "Q1LLq2qDNrS/qRnhxQ3hsY/sHbQnc=";

fn alpine_keys() -> Keyring {
    let set = DistroSet::embedded().unwrap();
    let mut k = Keyring::new();
    for (name, pem) in set.get("alpine").unwrap().files_under("keys") {
        k.add_pem(name, pem).unwrap();
    }
    k
}

fn expected(name: &str, version: &str, c: &str) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        checksum: c.into(),
        ..Default::default()
    }
}

#[test]
fn real_package_verifies_and_lists_its_files() {
    let want = expected("alpine-baselayout", "3.2.0-r23", BASELAYOUT_C);
    let v = package::verify(BASELAYOUT, &alpine_keys(), &want).unwrap();
    assert_eq!(
        v.signed_by,
        "alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub"
    );
    assert_eq!(v.info.arch, "aarch64");
    assert!(
        v.info
            .depends
            .iter()
            .any(|d| d.name == "alpine-baselayout-data")
    );
    assert!(v.scripts.iter().any(|(n, _)| n == ".post-install"));
    let m = db::manifest(v.data, "alpine-baselayout").unwrap();
    let get = |p: &str| m.iter().find(|e| e.path == p).unwrap();
    assert_eq!(get("etc/crontabs/root").mode, 0o600);
    assert_eq!(get("root").mode, 0o700);
    assert_eq!(get("tmp").mode, 0o1777);
    assert!(get("sbin/mkmntdirs").sha1.is_some());
    let rec = db::installed_record(&v.info, &m);
    assert!(
        rec.contains("F:etc/crontabs\nR:root\na:0:0:600\nZ:Q1"),
        "{rec}"
    );
}

#[test]
fn real_package_with_a_wrong_index_checksum_is_refused() {
    let want = expected(
        "alpine-baselayout",
        "3.2.0-r23",
        "Q1AAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    let e = format!(
        "{:#}",
        package::verify(BASELAYOUT, &alpine_keys(), &want)
            .err()
            .unwrap()
    );
    assert!(e.contains("does not match the index"), "{e}");
    let mut bad = BASELAYOUT.to_vec();
    let last = bad.len() - 20;
    bad[last] ^= 0x40;
    let want = expected("alpine-baselayout", "3.2.0-r23", BASELAYOUT_C);
    assert!(package::verify(&bad, &alpine_keys(), &want).is_err());
}

fn test_keys() -> Keyring {
    let mut k = Keyring::new();
    k.add_pem(
        apkrepo::KEY_NAME,
        apkrepo::public_pem(apkrepo::test_key()).as_bytes(),
    )
    .unwrap();
    k
}

fn index_entry(b: &apkrepo::Built) -> Package {
    osbuilder::pkg::apk::index::parse_text(&b.index_record)
        .unwrap()
        .remove(0)
}

#[test]
fn synthetic_package_round_trips() {
    let mut p = Pkg::new("hello", "1.0-r0", "x86_64");
    p.files = vec![
        Entry::dir("usr"),
        Entry::dir("usr/bin"),
        Entry::file("usr/bin/hello", b"#!/bin/sh\necho hi\n", 0o755),
        Entry::symlink("usr/bin/hi", "hello"),
    ];
    let b = apkrepo::build_package(&p, apkrepo::test_key());
    let v = package::verify(&b.bytes, &test_keys(), &index_entry(&b)).unwrap();
    let m = db::manifest(v.data, "hello").unwrap();
    assert_eq!(m.len(), 4);
}

#[test]
fn data_not_matching_datahash_is_refused() {
    let mut p = Pkg::new("evil", "1.0-r0", "x86_64");
    p.files = vec![Entry::dir("etc"), Entry::file("etc/motd", b"hi\n", 0o644)];
    p.tamper_data = true;
    let b = apkrepo::build_package(&p, apkrepo::test_key());
    let e = format!(
        "{:#}",
        package::verify(&b.bytes, &test_keys(), &index_entry(&b))
            .err()
            .unwrap()
    );
    assert!(e.contains("does not match its datahash"), "{e}");
}

#[test]
fn package_signed_by_an_unknown_key_is_refused() {
    let mut p = Pkg::new("stranger", "1.0-r0", "x86_64");
    p.files = vec![Entry::dir("etc")];
    let b = apkrepo::build_package(&p, apkrepo::other_key());
    let e = format!(
        "{:#}",
        package::verify(&b.bytes, &test_keys(), &index_entry(&b))
            .err()
            .unwrap()
    );
    assert!(e.contains("BAD signature"), "{e}");
}
