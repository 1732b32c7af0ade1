//! The real Alpine v3.16 x86_64 index (tests/fixtures/alpine): verified with Alpine's key,
//! parsed, and resolved; a copy with one byte changed is refused.

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
    assert_eq!(idx.signed_by, "alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub");
    assert_eq!(idx.packages.len(), 4929);
    assert!(idx.description.starts_with("v3.16"), "{}", idx.description);
    let r = Resolver::new(&idx.packages)
        .resolve(&[Dep::parse("alpine-base").unwrap()])
        .unwrap();
    let names: Vec<&str> = r.packages.iter().map(|p| p.name.as_str()).collect();
    for want in ["alpine-base", "busybox", "musl", "alpine-baselayout", "apk-tools", "openrc"] {
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
