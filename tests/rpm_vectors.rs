//! The rpm backend against real data: rpm's own test vectors (a Fedora 16 repository with
//! its signed repomd.xml and package, a Fedora 31 package, the rpm-rs packages signed with
//! RSA-4096 and Ed25519, and the unsigned one), in tests/fixtures/rpm (see its README).
//! Verdicts are cross-checked with tools we did not write (gpg,
//! Debian's `rpm -K`), a tampered byte anywhere that matters is refused, and rpmvercmp is
//! compared with rpm's own on a few hundred generated pairs.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::needs;

fn fixtures() -> Option<PathBuf> {
    Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rpm"))
}

/// `osbuilder pkg verify --key KEY FILE`: (success, stdout, stderr).
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

/// The signed vectors: (package, key, what the report must say).
fn signed(f: &Path) -> Vec<(PathBuf, PathBuf, &'static str)> {
    vec![
        (
            f.join("packages/rpm-sign-4.15.1-1.fc31.x86_64.rpm"),
            f.join("keys/RPM-GPG-KEY-fedora-31-primary"),
            "RSA header by 7D22D5867F2A4236474BF7B850CB390B3C3359C4",
        ),
        (
            f.join("repo-fc16/filesystem-2.4.44-1.fc16.i686.rpm"),
            f.join("keys/RPM-GPG-KEY-fedora-16-primary"),
            "RSA header+payload by 05A912AC70457C3DBC82D352067F00B6A82BA4B7",
        ),
        (
            f.join("packages/rpm-basic-with-rsa4096-2.3.4-5.el9.noarch.rpm"),
            f.join("keys/rpm-testkey-v4-rsa4096.asc"),
            "RSA header by D996AEDC0D64D1E621B95AD2E964F9FB30D073B5",
        ),
        (
            f.join("packages/rpm-basic-with-ed25519-2.3.4-5.el9.noarch.rpm"),
            f.join("keys/rpm-testkey-v4-ed25519.asc"),
            "EdDSA header by 77CEF535745D5AF04ECD115F522E846427933839",
        ),
    ]
}

/// rpm's own verdict: import the key into a scratch database and `rpm -K`.
fn rpm_k(key: &Path, file: &Path, db: &Path) -> bool {
    std::fs::create_dir_all(db).unwrap();
    let dbpath = format!("_dbpath {}", db.display());
    let imp = Command::new("rpm")
        .args(["--define", &dbpath, "--import"])
        .arg(key)
        .output()
        .unwrap();
    assert!(
        imp.status.success(),
        "{}",
        String::from_utf8_lossy(&imp.stderr)
    );
    let out = Command::new("rpm")
        .args(["--define", &dbpath, "-K"])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    out.status.success() && text.contains("signatures OK")
}

#[test]
fn real_packages_verify_and_agree_with_rpm() {
    let Some(f) = fixtures() else { return };
    if !needs::tools(&[("rpm", "rpm")]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    for (i, (pkg, key, want)) in signed(&f).into_iter().enumerate() {
        let (ok, out, err) = verify(&key, &pkg);
        assert!(ok, "{}: {err}", pkg.display());
        assert!(out.contains(want), "{out}");
        assert!(out.contains("file digests:"), "{out}");
        assert!(
            rpm_k(&key, &pkg, &tmp.path().join(format!("db{i}"))),
            "rpm -K disagrees on {}",
            pkg.display()
        );
        // Our header digest is rpm's.
        let q = Command::new("rpm")
            .args(["-qp", "--nosignature", "--qf", "%{SHA256HEADER}"])
            .arg(&pkg)
            .output()
            .unwrap();
        let sha = String::from_utf8_lossy(&q.stdout).trim().to_string();
        if sha != "(none)" {
            assert!(out.contains("header digest: sha256"), "{out}");
        }
    }
    // The Fedora 31 package: zstd payload with a PAYLOADDIGEST.
    let (_, out, _) = verify(
        &f.join("keys/RPM-GPG-KEY-fedora-31-primary"),
        &f.join("packages/rpm-sign-4.15.1-1.fc31.x86_64.rpm"),
    );
    assert!(out.contains("payload digest: sha256 (zstd)"), "{out}");
}

#[test]
fn wrong_keys_unsigned_packages_and_tampered_bytes_are_refused() {
    let Some(f) = fixtures() else { return };
    // A package against another package's key.
    let (ok, out, err) = verify(
        &f.join("keys/rpm-testkey-v4-ed25519.asc"),
        &f.join("packages/rpm-basic-with-rsa4096-2.3.4-5.el9.noarch.rpm"),
    );
    assert!(
        !ok && out.contains("FAILED") && err.contains("does not verify"),
        "{out}{err}"
    );
    // The unsigned package is refused by default.
    let (ok, _, err) = verify(
        &f.join("keys/rpm-testkey-v4-rsa4096.asc"),
        &f.join("packages/rpm-basic-2.3.4-5.el9.noarch.rpm"),
    );
    assert!(!ok && err.contains("not signed"), "{err}");

    // One byte changed in the signature, the header, the payload's start, middle and
    // end: every copy is refused.
    let tmp = tempfile::tempdir().unwrap();
    for (pkg, key, _) in signed(&f) {
        let bytes = std::fs::read(&pkg).unwrap();
        let (sig_start, header_start, payload_start) = layout(&bytes);
        let mut offsets = vec![
            sig_start + 16 + 8,    // inside the signature header's index
            header_start + 16 + 3, // the first index entry of the main header
            header_start + (payload_start - header_start) / 2, // the main header's store
            payload_start + 2,     // the payload's compression header
            payload_start + (bytes.len() - payload_start) / 2,
            bytes.len() - 1,
        ];
        // Inside each signature packet (past its packet and hash headers: the MPIs).
        for tag in [267, 268, 1002] {
            if let Some((off, len)) = sig_entry(&bytes, tag) {
                offsets.push(off + len - 8);
            }
        }
        for off in offsets {
            let mut t = bytes.clone();
            t[off] ^= 0x20;
            let bad = tmp.path().join(format!("tampered-{off}.rpm"));
            std::fs::write(&bad, &t).unwrap();
            let (ok, out, err) = verify(&key, &bad);
            assert!(
                !ok,
                "{} with byte {off} (of {}) changed was accepted:\n{out}",
                pkg.display(),
                bytes.len()
            );
            assert!(out.contains("FAILED"), "{out}{err}");
        }
    }
}

/// Where the data of signature-header tag `tag` lies in the file: (offset, length).
fn sig_entry(b: &[u8], tag: u32) -> Option<(usize, usize)> {
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let il = be(96 + 8);
    let store = 96 + 16 + il * 16;
    (0..il).find_map(|i| {
        let e = 96 + 16 + i * 16;
        (be(e) == tag as usize).then(|| (store + be(e + 8), be(e + 12)))
    })
}

/// Offsets of the signature header, the main header and the payload in an .rpm.
fn layout(b: &[u8]) -> (usize, usize, usize) {
    let be = |o: usize| u32::from_be_bytes(b[o..o + 4].try_into().unwrap()) as usize;
    let sig = 96;
    let sig_len = 16 + be(sig + 8) * 16 + be(sig + 12);
    let main = sig + sig_len.div_ceil(8) * 8;
    let main_len = 16 + be(main + 8) * 16 + be(main + 12);
    (sig, main, main + main_len)
}

#[test]
fn the_fedora_16_repository_metadata_verifies_and_its_bad_signature_is_refused() {
    use osbuilder::pkg::openpgp::{Keyring, parse_signatures, verify_detached};
    use osbuilder::pkg::rpm::repomd;
    let Some(f) = fixtures() else { return };
    if !needs::tools(&[("gpg", "gnupg")]) {
        return;
    }
    let repo = f.join("repo-fc16");
    let md = std::fs::read(repo.join("repodata/repomd.xml")).unwrap();
    let mut keys = Keyring::default();
    keys.add(
        &std::fs::read(repo.join("repodata/repomd.xml.key")).unwrap(),
        "repomd.xml.key",
    )
    .unwrap();
    let good = parse_signatures(
        &std::fs::read(repo.join("repodata/repomd.xml.asc")).unwrap(),
        "asc",
    )
    .unwrap();
    let fpr = verify_detached(&keys, &good, &md, "repomd.xml").unwrap();
    // gpg agrees, with the same key.
    let home = tempfile::tempdir().unwrap();
    let gpg = |args: &[&str]| {
        Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--quiet"])
            .args(args)
            .output()
            .unwrap()
    };
    let key = repo.join("repodata/repomd.xml.key");
    assert!(gpg(&["--import", key.to_str().unwrap()]).status.success());
    let v = gpg(&[
        "--status-fd",
        "1",
        "--verify",
        repo.join("repodata/repomd.xml.asc").to_str().unwrap(),
        repo.join("repodata/repomd.xml").to_str().unwrap(),
    ]);
    let status = String::from_utf8_lossy(&v.stdout);
    assert!(status.contains(&format!("VALIDSIG {fpr}")), "{status}");
    // The .bad signature and a changed repomd.xml are refused.
    let bad = std::fs::read(repo.join("repodata/repomd.xml.asc.bad")).unwrap();
    let refused = match parse_signatures(&bad, "asc.bad") {
        Ok(sigs) => verify_detached(&keys, &sigs, &md, "repomd.xml").is_err(),
        Err(_) => true,
    };
    assert!(refused, "repomd.xml.asc.bad was accepted");
    let mut changed = md.clone();
    let i = changed.len() / 2;
    changed[i] ^= 1;
    assert!(verify_detached(&keys, &good, &changed, "repomd.xml").is_err());

    // repomd → primary (sha1, gzip) → the package's pkgid, all checked.
    let parsed = repomd::parse_repomd(&md).unwrap();
    let primary = parsed.get("primary").unwrap();
    let data = std::fs::read(repo.join(&primary.location)).unwrap();
    primary.checksum.verify("primary", &mut &data[..]).unwrap();
    let mut pkgs = Vec::new();
    repomd::parse_primary(
        repomd::decompress(&data[..]).unwrap(),
        "primary",
        &mut |p| {
            pkgs.push(p);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(pkgs.len(), 1);
    let p = &pkgs[0];
    assert_eq!(p.nevra(), "filesystem-2.4.44-1.fc16.i686");
    assert!(
        p.requires
            .iter()
            .any(|r| format!("{r:?}").contains("setup"))
    );
    let rpm = std::fs::read(repo.join(&p.location)).unwrap();
    p.checksum
        .as_ref()
        .unwrap()
        .verify("package", &mut &rpm[..])
        .unwrap();
    assert_eq!(p.size, rpm.len() as u64);
}

/// rpmvercmp against Debian's rpm 4.18 (`rpm.vercmp` in its Lua) on generated pairs: the
/// separators, tildes, carets, letters, leading zeros and lengths that matter.
#[test]
fn rpmvercmp_agrees_with_rpm_on_generated_pairs() {
    use osbuilder::pkg::rpm::version::rpmvercmp;
    if !needs::tools(&[("rpm", "rpm")]) {
        return;
    }
    use osbuilder::pkg::rpm::version::Evr;
    // No '-' or ':' (those make epoch:version-release strings, checked separately).
    let atoms = [
        "0", "1", "01", "2", "10", "009", "a", "b", "rc", "alpha", "Z", "~", "^", ".", "_", "+",
        "~rc1", "^git", "1a", "a1", "~~", "^^", "p1",
    ];
    // A fixed LCG: the same pairs every run.
    let mut seed: u64 = 0x5eed;
    let mut next = || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize
    };
    let make = |next: &mut dyn FnMut() -> usize| {
        let n = 1 + next() % 4;
        let mut s: String = (0..n).map(|_| atoms[next() % atoms.len()]).collect();
        // Never only separators: rpm's Lua refuses a version without any.
        if !s.bytes().any(|b| b.is_ascii_alphanumeric()) {
            s.push('1');
        }
        s
    };
    let mut pairs = vec![
        ("1.0".to_string(), "1.0".to_string()),
        ("1.0~rc1".into(), "1.0".into()),
        ("1.0^".into(), "1.0".into()),
        ("2.0.1".into(), "2.0".into()),
        ("5.5p1".into(), "5.5p10".into()),
    ];
    while pairs.len() < 300 {
        let a = make(&mut next);
        let b = make(&mut next);
        pairs.push((a, b));
    }
    // Then whole EVRs: optional epoch, optional release (compared only when both have one).
    let plain = pairs.len();
    while pairs.len() < 450 {
        let evr = |next: &mut dyn FnMut() -> usize| {
            let mut s = String::new();
            if next() % 3 == 0 {
                s.push_str(&format!("{}:", next() % 3));
            }
            s.push_str(&make(next));
            if next() % 2 == 0 {
                s.push('-');
                s.push_str(&make(next));
            }
            s
        };
        let a = evr(&mut next);
        let b = evr(&mut next);
        pairs.push((a, b));
    }
    let lua: String = pairs
        .iter()
        // rpm's Lua print() adds no newline inside a macro: separate the results.
        .map(|(a, b)| format!("print(rpm.vercmp({a:?}, {b:?}) .. \" \")\n"))
        .collect();
    let out = Command::new("rpm")
        .arg("--eval")
        .arg(format!("%{{lua:\n{lua}}}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<i32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(
        theirs.len(),
        pairs.len(),
        "rpm printed {} results",
        theirs.len()
    );
    for want in [-1, 0, 1] {
        assert!(
            theirs.iter().any(|t| t.signum() == want),
            "no pair compares {want}"
        );
    }
    let mut wrong = Vec::new();
    for (i, ((a, b), t)) in pairs.iter().zip(&theirs).enumerate() {
        let ours = if i < plain {
            rpmvercmp(a, b) as i32
        } else {
            Evr::parse(a).cmp_dep(&Evr::parse(b)) as i32
        };
        if ours != t.signum() {
            wrong.push(format!("{a:?} vs {b:?}: rpm {t}, ours {ours}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} pairs differ:\n{}",
        wrong.len(),
        pairs.len(),
        wrong.join("\n")
    );
}
