//! Alpine's v2 signed-archive layout and its RSA signatures.
//!
//! An APKINDEX.tar.gz or a .apk is a concatenation of gzip members. The first member is a
//! tar segment holding one `.SIGN.RSA.<key>` (SHA-1) or `.SIGN.RSA256.<key>` (SHA-256)
//! file: a PKCS#1 v1.5 signature, made with the key named `<key>`, over the *compressed*
//! bytes of the next member (the index, or the package's control segment).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use rsa::pkcs8::DecodePublicKey;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Byte ranges of each gzip member in a file, in order.
pub fn gzip_members(data: &[u8]) -> Result<Vec<std::ops::Range<usize>>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let mut rest = &data[pos..];
        let mut dec = flate2::bufread::GzDecoder::new(&mut rest);
        std::io::copy(&mut dec, &mut std::io::sink())
            .with_context(|| format!("corrupt gzip member at byte {pos}"))?;
        drop(dec);
        let used = data.len() - pos - rest.len();
        if used == 0 {
            bail!("corrupt gzip member at byte {pos}: no progress");
        }
        out.push(pos..pos + used);
        pos += used;
    }
    Ok(out)
}

/// Decompress one gzip member.
pub fn gunzip(member: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::bufread::GzDecoder::new(member)
        .read_to_end(&mut out)
        .context("decompressing a gzip member")?;
    Ok(out)
}

/// Hash used by a signature file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SigHash {
    Sha1,
    Sha256,
}

/// A signature found in a signature segment.
#[derive(Clone, Debug)]
pub struct Signature {
    pub hash: SigHash,
    /// Key file name, e.g. `alpine-devel@lists.alpinelinux.org-6165ee59.rsa.pub`.
    pub key_name: String,
    pub bytes: Vec<u8>,
}

/// Read the `.SIGN.*` entries of a (decompressed) signature tar segment.
pub fn read_signatures(segment_tar: &[u8]) -> Result<Vec<Signature>> {
    let mut ar = tar::Archive::new(segment_tar);
    let mut sigs = Vec::new();
    for e in ar.entries().context("reading the signature segment")? {
        let mut e = e.context("reading the signature segment")?;
        let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        let (hash, key) = if let Some(k) = name.strip_prefix(".SIGN.RSA256.") {
            (SigHash::Sha256, k)
        } else if let Some(k) = name.strip_prefix(".SIGN.RSA.") {
            (SigHash::Sha1, k)
        } else if name.starts_with(".SIGN.") {
            // Other schemes (DSA, …) are not used by Alpine; skip rather than fail so a
            // second, RSA signature can still verify.
            continue;
        } else {
            bail!("the signature segment holds '{name}', not a .SIGN.* file");
        };
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes)?;
        sigs.push(Signature {
            hash,
            key_name: key.to_string(),
            bytes,
        });
    }
    Ok(sigs)
}

/// Trusted RSA public keys, by file name.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: BTreeMap<String, RsaPublicKey>,
}

impl Keyring {
    pub fn new() -> Keyring {
        Keyring::default()
    }

    /// Add a PEM (`BEGIN PUBLIC KEY`) key under its file name.
    pub fn add_pem(&mut self, name: &str, pem: &[u8]) -> Result<()> {
        let text = std::str::from_utf8(pem).with_context(|| format!("key {name} is not text"))?;
        let key = RsaPublicKey::from_public_key_pem(text)
            .with_context(|| format!("key {name} is not a PEM RSA public key"))?;
        self.keys.insert(name.to_string(), key);
        Ok(())
    }

    /// Add every `*.pub` file of a folder (e.g. `--keys-dir`, or /etc/apk/keys).
    pub fn add_dir(&mut self, dir: &Path) -> Result<usize> {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("reading keys folder {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "pub"))
            .collect();
        names.sort();
        for p in &names {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            self.add_pem(&name, &pem)?;
        }
        Ok(names.len())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Verify `signed` against the signatures; one valid signature by a trusted key is
    /// enough. `what` names the file in errors.
    pub fn verify(&self, sigs: &[Signature], signed: &[u8], what: &str) -> Result<String> {
        if sigs.is_empty() {
            bail!("{what} is not signed (no .SIGN.RSA file); refusing it");
        }
        let mut tried = Vec::new();
        for s in sigs {
            let Some(key) = self.keys.get(&s.key_name) else {
                tried.push(format!("{} (not a trusted key)", s.key_name));
                continue;
            };
            let ok = match s.hash {
                SigHash::Sha1 => {
                    key.verify(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(signed), &s.bytes)
                }
                SigHash::Sha256 => key.verify(
                    Pkcs1v15Sign::new::<Sha256>(),
                    &Sha256::digest(signed),
                    &s.bytes,
                ),
            };
            match ok {
                Ok(()) => return Ok(s.key_name.clone()),
                Err(_) => tried.push(format!("{} (BAD signature)", s.key_name)),
            }
        }
        bail!(
            "{what}: signature verification failed: {}. The file was tampered with or \
             corrupted, or it is signed by a key you do not trust yet (add its .rsa.pub with \
             --keys-dir)",
            tried.join(", ")
        )
    }
}

/// A signed v2 archive split into its signature and the members after it.
pub struct SignedArchive<'a> {
    pub signatures: Vec<Signature>,
    /// The compressed members after the signature member, in order.
    pub members: Vec<&'a [u8]>,
}

impl<'a> SignedArchive<'a> {
    pub fn parse(data: &'a [u8], what: &str) -> Result<SignedArchive<'a>> {
        let ranges = gzip_members(data).with_context(|| format!("{what} is not a gzip file"))?;
        if ranges.len() < 2 {
            bail!(
                "{what} has {} gzip member(s); a signed Alpine archive has a signature member \
                 followed by the signed content. Refusing an unsigned file",
                ranges.len()
            );
        }
        let sig_tar = gunzip(&data[ranges[0].clone()])?;
        let signatures =
            read_signatures(&sig_tar).with_context(|| format!("reading {what}'s signature"))?;
        Ok(SignedArchive {
            signatures,
            members: ranges[1..].iter().map(|r| &data[r.clone()]).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_split_at_gzip_boundaries() {
        use std::io::Write;
        let mut all = Vec::new();
        for part in [&b"one"[..], b"two two", b""] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            all.extend(e.finish().unwrap());
        }
        let r = gzip_members(&all).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(gunzip(&all[r[1].clone()]).unwrap(), b"two two");
        assert!(gzip_members(&all[..all.len() - 3]).is_err());
    }
}
