//! A `.apk` v2 package: verified before anything of it is used.
//!
//! Three gzip members: the signature (`.SIGN.RSA*` over the compressed control member),
//! the control member (`.PKGINFO` and install scripts), and the data member (the files).
//! The chain of trust is: the index is signed; its `C:` field is the SHA-1 of the
//! compressed control member; the control member is also signed by the packager; and its
//! `.PKGINFO` carries `datahash`, the SHA-256 of the compressed data member. A package is
//! accepted only when every link holds.

use std::io::Read;

use anyhow::{Context, Result, bail};
use base64::Engine;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::index::{Package, Provide};
use super::sign::{Keyring, SignedArchive, gunzip};
use super::version::Dep;

/// `Q1` + base64(SHA-1): apk's checksum notation, used for `C:` and `Z:` fields.
pub fn q1_sha1(bytes: &[u8]) -> String {
    q1_from_digest(&Sha1::digest(bytes))
}

pub fn q1_from_digest(d: &[u8]) -> String {
    format!("Q1{}", base64::engine::general_purpose::STANDARD.encode(d))
}

/// Install scripts by name (`.post-install`, …), as the control segment holds them.
pub type Scripts = Vec<(String, Vec<u8>)>;

/// A package that passed every check; `data` is its compressed data segment.
pub struct VerifiedApk<'a> {
    pub info: Package,
    /// Install scripts from the control segment (`.pre-install`, `.post-install`, …).
    pub scripts: Scripts,
    /// `.PKGINFO` `triggers` (folders whose changes run `.trigger`).
    pub triggers: Vec<String>,
    pub data: &'a [u8],
    pub signed_by: String,
}

/// Parse a `.PKGINFO` (`key = value` lines, `#` comments) into the index model.
pub fn parse_pkginfo(text: &str) -> Result<(Package, Option<String>, Vec<String>)> {
    let mut p = Package::default();
    let mut datahash = None;
    let mut triggers = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let Some((k, v)) = line.split_once(" = ") else {
            bail!(".PKGINFO: malformed line '{line}'");
        };
        let dep = |v: &str| Dep::parse(v).map_err(anyhow::Error::msg);
        let num = |v: &str| -> Result<u64> {
            v.parse()
                .with_context(|| format!(".PKGINFO {k}: '{v}' is not a number"))
        };
        match k {
            "pkgname" => p.name = v.to_string(),
            "pkgver" => p.version = v.to_string(),
            "pkgdesc" => p.description = v.to_string(),
            "url" => p.url = v.to_string(),
            "builddate" => p.build_time = Some(num(v)?),
            "size" => p.installed_size = num(v)?,
            "arch" => p.arch = v.to_string(),
            "origin" => p.origin = v.to_string(),
            "commit" => p.commit = v.to_string(),
            "maintainer" => p.maintainer = v.to_string(),
            "license" => p.license = v.to_string(),
            "depend" => p.depends.push(dep(v)?),
            "provides" => p.provides.push(Provide::parse(v)),
            "install_if" => {
                for d in v.split_whitespace() {
                    p.install_if.push(dep(d)?);
                }
            }
            "replaces" => p.replaces.push(v.to_string()),
            "provider_priority" => p.provider_priority = Some(num(v)? as u32),
            "replaces_priority" => p.replaces_priority = Some(num(v)? as u32),
            "triggers" => triggers.extend(v.split_whitespace().map(str::to_string)),
            "datahash" => datahash = Some(v.to_string()),
            _ => {}
        }
    }
    Ok((p, datahash, triggers))
}

/// Verify a downloaded package against the index entry that named it.
pub fn verify<'a>(bytes: &'a [u8], keys: &Keyring, expected: &Package) -> Result<VerifiedApk<'a>> {
    let what = expected.file_name();
    let ar = SignedArchive::parse(bytes, &what)?;
    if ar.members.len() < 2 {
        bail!("{what} has no data segment");
    }
    let control = ar.members[0];
    let signed_by = keys.verify(&ar.signatures, control, &what)?;
    let got = q1_sha1(control);
    if expected.checksum.is_empty() {
        bail!("the index gives no checksum (C:) for {what}; refusing to trust it");
    }
    if got != expected.checksum {
        bail!(
            "{what}: control segment checksum {got} does not match the index's {}; the \
             package or the index was tampered with (or the mirror is inconsistent)",
            expected.checksum
        );
    }
    // The data segment: everything after the control member.
    let data_start = ar.members[1].as_ptr() as usize - bytes.as_ptr() as usize;
    let data = &bytes[data_start..];

    let control_tar = gunzip(control)?;
    let mut info_text = None;
    let mut scripts = Vec::new();
    let mut t = tar::Archive::new(control_tar.as_slice());
    for e in t
        .entries()
        .with_context(|| format!("reading {what}'s control segment"))?
    {
        let mut e = e?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let mut body = Vec::new();
        e.read_to_end(&mut body)?;
        if name == ".PKGINFO" {
            info_text = Some(String::from_utf8(body).context(".PKGINFO is not UTF-8")?);
        } else if name.starts_with('.') && !name.contains('/') {
            scripts.push((name, body));
        }
    }
    let info_text = info_text.with_context(|| format!("{what} has no .PKGINFO"))?;
    let (mut info, datahash, triggers) =
        parse_pkginfo(&info_text).with_context(|| format!("{what}: parsing .PKGINFO"))?;
    if info.name != expected.name || info.version != expected.version {
        bail!(
            "{what} contains {}-{}, not what the index promised",
            info.name,
            info.version
        );
    }
    let Some(datahash) = datahash else {
        bail!("{what}: .PKGINFO has no datahash, so its files cannot be verified; refusing it");
    };
    let got = hex(&Sha256::digest(data));
    if !got.eq_ignore_ascii_case(&datahash) {
        bail!(
            "{what}: data segment sha256 {got} does not match its datahash {datahash}; the \
             package was tampered with"
        );
    }
    info.checksum = expected.checksum.clone();
    info.size = bytes.len() as u64;
    Ok(VerifiedApk {
        info,
        scripts,
        triggers,
        data,
        signed_by,
    })
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
