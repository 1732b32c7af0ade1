//! `osbuilder pkg verify` for the other formats: the real Alpine package against Alpine's
//! release key (and a tampered copy and a wrong key refused), a .deb with a debsig
//! `_gpgorigin` signature made by gpg, and an ordinary unsigned .deb, which fails saying
//! why. (The rpm vectors are in rpm_vectors.rs.)

mod common;

use std::path::Path;
use std::process::Command;

use common::needs;

fn verify(key: &Path, file: &Path) -> (bool, String, String) {
    let out = common::osbuilder()
        .args(["pkg", "verify", "--key"])
        .arg(key)
        .arg(file)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_real_alpine_package_verifies_against_its_key_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let apk = root.join("tests/fixtures/alpine/alpine-baselayout-3.2.0-r23-aarch64.apk");
    let key = root.join("distros/alpine/keys/alpine-devel@lists.alpinelinux.org-616ae350.rsa.pub");
    let (ok, out, err) = verify(&key, &apk);
    assert!(ok, "{err}");
    assert!(
        out.contains("OK (apk alpine-baselayout-3.2.0-r23)"),
        "{out}"
    );
    assert!(out.contains("datahash"), "{out}");
    let other =
        root.join("distros/alpine/keys/alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub");
    let (ok, _, err) = verify(&other, &apk);
    assert!(!ok && err.contains("BAD signature"), "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(&apk).unwrap();
    let n = bytes.len();
    bytes[n - 100] ^= 1;
    let bad = tmp.path().join("tampered.apk");
    std::fs::write(&bad, &bytes).unwrap();
    let (ok, out, _) = verify(&key, &bad);
    assert!(!ok && out.contains("FAILED"), "{out}");
}

/// An ar archive of `members`, as dpkg-deb writes one.
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = b"!<arch>\n".to_vec();
    for (name, data) in members {
        out.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                name,
                1700000000,
                0,
                0,
                "100644",
                data.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(b'\n');
        }
    }
    out
}

fn tar_gz(name: &str, data: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append_data(&mut h, name, data).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn debs_verify_only_with_a_debsig_signature() {
    if !needs::tools(&[("gpg", "gnupg"), ("dpkg-deb", "dpkg")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let key = common::rpmrepo::gpg_key(tmp.path(), "osbuilder-deb-test");
    let control = tar_gz("./control", b"Package: hello\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.invalid>\nDescription: test\n");
    let data = tar_gz("./usr/share/hello", b"hello\n");
    let members: [(&str, &[u8]); 3] = [
        ("debian-binary", b"2.0\n"),
        ("control.tar.gz", &control),
        ("data.tar.gz", &data),
    ];
    let plain = tmp.path().join("hello_1.0_all.deb");
    std::fs::write(&plain, ar(&members)).unwrap();
    // dpkg reads it: a real .deb.
    let info = Command::new("dpkg-deb")
        .arg("-f")
        .arg(&plain)
        .arg("Package")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&info.stdout).trim(), "hello");
    let (ok, _, err) = verify(&key.public, &plain);
    assert!(
        !ok && err.contains("carries no signature of its own"),
        "{err}"
    );

    // debsig-verify's origin signature: over debian-binary, control and data, in order.
    let signed = [b"2.0\n".as_slice(), &control, &data].concat();
    let sig = common::rpmrepo::detach_sign(&key, &signed, false);
    let mut with_sig = members.to_vec();
    with_sig.push(("_gpgorigin", &sig));
    let deb = tmp.path().join("hello-signed.deb");
    std::fs::write(&deb, ar(&with_sig)).unwrap();
    let (ok, out, err) = verify(&key.public, &deb);
    assert!(ok, "{err}");
    assert!(
        out.contains("OK (deb hello_1.0_all)") && out.contains("_gpgorigin"),
        "{out}"
    );
    // Another key, or a changed data member, fails.
    let other = common::rpmrepo::gpg_key(tmp.path(), "osbuilder-deb-other");
    assert!(!verify(&other.public, &deb).0);
    let mut evil = data.clone();
    let n = evil.len();
    evil[n / 2] ^= 1;
    let mut tampered = members.to_vec();
    tampered[2] = ("data.tar.gz", &evil);
    tampered.push(("_gpgorigin", &sig));
    let bad = tmp.path().join("hello-tampered.deb");
    std::fs::write(&bad, ar(&tampered)).unwrap();
    assert!(!verify(&key.public, &bad).0);
}
