//! `osbuilder pkg verify`: check one package file against the keys a user trusts, and say
//! what was verified — the front door for auditing a package, and how the tests check the
//! real rpm vectors.
//!
//! - **.rpm**: the OpenPGP header signatures (RSA, EdDSA…, v4 and v3 packets) against the
//!   keys, the SHA-256/SHA-1 header digests, the PAYLOADDIGEST, the legacy header+payload
//!   signature where there is one, and every file's content against the header's digest.
//!   An unsigned package fails.
//! - **.apk** (v2): the `.SIGN.RSA*` signature over the control segment against the RSA
//!   keys (PEM), the control checksum and the data segment's `datahash`.
//! - **.deb**: a `.deb` carries no signature of its own (Debian signs the Release file that
//!   lists its SHA-256); a debsig `_gpgorigin` member is verified when present, otherwise
//!   the check fails saying so.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::distro::PackageFormat;
use crate::pkg::openpgp::{Keyring, parse_signatures, verify_detached};

/// What verified for one file.
#[derive(Clone, Debug)]
pub struct Report {
    pub format: PackageFormat,
    /// `name-version-release.arch` (rpm), `name-version` (apk), the control's (deb).
    pub package: String,
    /// One line per check that passed.
    pub checks: Vec<String>,
}

/// The format of a package file, from its first bytes.
pub fn sniff(path: &Path) -> Result<PackageFormat> {
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n = f.read(&mut head)?;
    Ok(match &head[..n] {
        [0xed, 0xab, 0xee, 0xdb, ..] => PackageFormat::Rpm,
        b"!<arch>\n" => PackageFormat::Deb,
        [0x1f, 0x8b, ..] => PackageFormat::Apk,
        _ => bail!("{}: not an .rpm, .deb or .apk file", path.display()),
    })
}

/// Verify `path` against the keys in `keys` (OpenPGP for rpm and deb, PEM RSA for apk).
pub fn verify_file(path: &Path, keys: &[PathBuf]) -> Result<Report> {
    if keys.is_empty() {
        return Err(crate::error::refused("pkg verify needs at least one --key"));
    }
    match sniff(path)? {
        PackageFormat::Rpm => verify_rpm(path, &openpgp_keys(keys)?),
        PackageFormat::Deb => verify_deb(path, &openpgp_keys(keys)?),
        PackageFormat::Apk => verify_apk(path, keys),
    }
}

fn openpgp_keys(keys: &[PathBuf]) -> Result<Keyring> {
    let mut k = Keyring::default();
    for p in keys {
        let data = std::fs::read(p).with_context(|| format!("reading key {}", p.display()))?;
        k.add(&data, &p.display().to_string())?;
    }
    Ok(k)
}

fn verify_rpm(path: &Path, keys: &Keyring) -> Result<Report> {
    use super::rpm::{install, package, verify};
    let what = path.display().to_string();
    let (rpm, mut payload) = package::RpmFile::open(path, &what)?;
    let meta = package::Meta::from_header(&rpm.header, &what)?;
    let heads = verify::check_heads(&rpm, Some(keys), false, &what)?;
    let (v3, payload_digest) = verify::check_payload(&rpm, &mut payload, keys, &what)?;
    let contents = install::check_contents(path, &rpm, &meta, &what)?;
    let mut checks = Vec::new();
    for s in heads.signatures.iter().chain(&v3) {
        checks.push(format!("signature: {} by {}", s.kind, s.key));
    }
    if !heads.header_digests.is_empty() {
        checks.push(format!(
            "header digest: {}",
            heads.header_digests.join(", ")
        ));
    }
    match payload_digest {
        Some(a) => checks.push(format!("payload digest: {a} ({})", contents.compression)),
        None => checks.push(format!(
            "payload: {} (no PAYLOADDIGEST in this package)",
            contents.compression
        )),
    }
    checks.push(format!(
        "file digests: {} files ({})",
        contents.files, contents.digest_algo
    ));
    Ok(Report {
        format: PackageFormat::Rpm,
        package: meta.nevra(),
        checks,
    })
}

fn verify_deb(path: &Path, keys: &Keyring) -> Result<Report> {
    let what = path.display().to_string();
    let f = std::fs::File::open(path).with_context(|| format!("opening {what}"))?;
    let mut ar = ar::Archive::new(std::io::BufReader::new(f));
    let mut signed = Vec::new();
    let mut origin = None;
    let mut members = Vec::new();
    while let Some(entry) = ar.next_entry() {
        let mut entry = entry.with_context(|| format!("{what}: not a valid .deb (ar) file"))?;
        let name = String::from_utf8_lossy(entry.header().identifier())
            .trim_end_matches('/')
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if name == "_gpgorigin" {
            origin = Some(data);
        } else {
            if name == "debian-binary"
                || name.starts_with("control.tar")
                || name.starts_with("data.tar")
            {
                signed.extend_from_slice(&data);
            }
            members.push(name);
        }
    }
    // The control stanza names the package (and proves the control member reads).
    let loaded = super::deb::debfile::load_deb(path, &what)?;
    let stanza = super::deb::control::parse_stanzas(&loaded.control.control);
    let field = |k: &str| {
        stanza
            .first()
            .and_then(|s| s.get(k))
            .unwrap_or("")
            .trim()
            .to_string()
    };
    let package = format!(
        "{}_{}_{}",
        field("Package"),
        field("Version"),
        field("Architecture")
    );
    let Some(sig) = origin else {
        bail!(
            "{what}: a .deb carries no signature of its own (Debian signs the Release file that \
             lists each package's SHA-256, which `osbuilder rootfs` verifies); no debsig \
             _gpgorigin member to check against the key"
        );
    };
    let sigs = parse_signatures(&sig, "_gpgorigin")?;
    let key = verify_detached(keys, &sigs, &signed, &what)?;
    Ok(Report {
        format: PackageFormat::Deb,
        package,
        checks: vec![
            format!(
                "signature: debsig _gpgorigin over {} by {key}",
                members.join(" + ")
            ),
            "members: control and data decompress".into(),
        ],
    })
}

fn verify_apk(path: &Path, keys: &[PathBuf]) -> Result<Report> {
    use super::apk::{package, sign};
    let what = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("reading {what}"))?;
    let ar = sign::SignedArchive::parse(&bytes, &what)?;
    if ar.signatures.is_empty() {
        bail!("{what} is not signed (no .SIGN.RSA file)");
    }
    // The user's keys stand for whatever key name the package's signature uses.
    let mut keyring = sign::Keyring::new();
    for p in keys {
        let pem = std::fs::read(p).with_context(|| format!("reading key {}", p.display()))?;
        for s in &ar.signatures {
            keyring
                .add_pem(&s.key_name, &pem)
                .with_context(|| format!("{} (apk keys are PEM RSA public keys)", p.display()))?;
        }
    }
    let control = *ar
        .members
        .first()
        .with_context(|| format!("{what} has no control segment"))?;
    let tar_bytes = sign::gunzip(control)?;
    let mut info = None;
    let mut t = tar::Archive::new(tar_bytes.as_slice());
    for e in t.entries()? {
        let mut e = e?;
        if e.path_bytes().as_ref() == b".PKGINFO" {
            let mut s = String::new();
            e.read_to_string(&mut s)?;
            info = Some(s);
        }
    }
    let info = info.with_context(|| format!("{what} has no .PKGINFO"))?;
    let (mut expected, _, _) = package::parse_pkginfo(&info)?;
    // Standalone, the control checksum is the file's own (no index to compare with).
    expected.checksum = package::q1_sha1(control);
    let v = package::verify(&bytes, &keyring, &expected)?;
    Ok(Report {
        format: PackageFormat::Apk,
        package: format!("{}-{}", v.info.name, v.info.version),
        checks: vec![
            format!(
                "signature: RSA over the control segment by {}",
                keys_display(keys)
            ),
            format!("control checksum: {}", expected.checksum),
            "data segment: sha256 matches .PKGINFO datahash".into(),
        ],
    })
}

fn keys_display(keys: &[PathBuf]) -> String {
    keys.iter()
        .map(|k| k.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}
