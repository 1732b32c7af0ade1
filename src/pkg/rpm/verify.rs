//! Verifying an .rpm: the OpenPGP header signatures (RSA tag 268, DSA/ECDSA/EdDSA tag
//! 267, v6 OpenPGP tag 278) over the raw main-header bytes against the trusted keys, the
//! SHA-256 and SHA-1 header digests, and — over the payload — the PAYLOADDIGEST, the
//! legacy v3 header+payload signatures (tags 1002/1005) and every file's digest.
//!
//! The header is the package's trust anchor: once its signature verifies, the per-file
//! digests it carries pin every byte extracted, and the payload digest pins the archive.
//! A package without any signature is refused unless the caller's policy allows it.

use std::io::Read;

use anyhow::{Context, Result, bail};
use base64::Engine;

use super::package::RpmFile;
use super::tags::{self as t, hash};
use crate::pkg::openpgp::{Keyring, parse_signatures};

/// A streaming hash of one of the algorithms RPM names (PGPHASHALGO_*).
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(algo: u64) -> Result<Hasher> {
        use sha2::Digest;
        Ok(match algo {
            hash::MD5 => Hasher::Md5(md5::Md5::new()),
            hash::SHA1 => Hasher::Sha1(sha1::Sha1::new()),
            hash::SHA256 => Hasher::Sha256(sha2::Sha256::new()),
            hash::SHA384 => Hasher::Sha384(sha2::Sha384::new()),
            hash::SHA512 => Hasher::Sha512(sha2::Sha512::new()),
            other => bail!("unsupported digest algorithm {other}"),
        })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Hasher::Md5(_) => "md5",
            Hasher::Sha1(_) => "sha1",
            Hasher::Sha256(_) => "sha256",
            Hasher::Sha384(_) => "sha384",
            Hasher::Sha512(_) => "sha512",
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha384(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    pub fn hex(self) -> String {
        use sha2::Digest;
        match self {
            Hasher::Md5(h) => hex::encode(h.finalize()),
            Hasher::Sha1(h) => hex::encode(h.finalize()),
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        }
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R: Read> {
    pub inner: R,
    pub hasher: Option<Hasher>,
    pub count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, hasher: Option<Hasher>) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher,
            count: 0,
        }
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// One signature that verified.
#[derive(Clone, Debug)]
pub struct GoodSignature {
    /// `RSA header`, `EdDSA header`, `v3 RSA header+payload`…
    pub kind: String,
    /// The trusted key (fingerprint, uppercase hex) that made it.
    pub key: String,
}

/// What the heads of a package proved.
#[derive(Clone, Debug, Default)]
pub struct HeadCheck {
    pub signatures: Vec<GoodSignature>,
    /// Header digests that matched (`sha256`, `sha1`).
    pub header_digests: Vec<&'static str>,
    /// No signature at all (allowed by the caller's policy).
    pub unsigned: bool,
    /// Only v3 header+payload signatures (no header-only one): the payload pass must
    /// verify them.
    pub needs_v3: bool,
}

fn algo_name(sig: &pgp::packet::Signature) -> String {
    use pgp::crypto::public_key::PublicKeyAlgorithm as A;
    let pk = match sig.config().map(|c| c.pub_alg) {
        Some(A::RSA | A::RSASign) => "RSA",
        Some(A::DSA) => "DSA",
        Some(A::ECDSA) => "ECDSA",
        Some(A::EdDSALegacy | A::Ed25519) => "EdDSA",
        Some(A::Ed448) => "Ed448",
        _ => "OpenPGP",
    };
    let v = match sig.version() {
        pgp::packet::SignatureVersion::V3 => "v3 ",
        pgp::packet::SignatureVersion::V6 => "v6 ",
        _ => "",
    };
    format!("{v}{pk}")
}

/// Verify the header digests and header-only signatures of `rpm` against `keys`.
/// `allow_unsigned`: a package without any signature passes (reported as unsigned);
/// otherwise it is refused. `keys` None: signatures are not checked at all (a distro that
/// declares its packages unsigned and has no key); the package counts as unsigned.
pub fn check_heads(
    rpm: &RpmFile,
    keys: Option<&Keyring>,
    allow_unsigned: bool,
    what: &str,
) -> Result<HeadCheck> {
    let sig = &rpm.signature;
    let raw = rpm.header.raw();
    let mut out = HeadCheck::default();
    if let Some(want) = sig.string(t::SIG_SHA256) {
        let got = crate::pkg::sha256_hex(raw);
        if !got.eq_ignore_ascii_case(want.trim()) {
            bail!("{what}: the header's SHA-256 digest does not match (the package was altered)");
        }
        out.header_digests.push("sha256");
    }
    if let Some(want) = sig.string(t::SIG_SHA1) {
        use sha1::Digest;
        let got = hex::encode(sha1::Sha1::digest(raw));
        if !got.eq_ignore_ascii_case(want.trim()) {
            bail!("{what}: the header's SHA-1 digest does not match (the package was altered)");
        }
        out.header_digests.push("sha1");
    }
    let Some(keys) = keys else {
        out.unsigned = true;
        return Ok(out);
    };
    // Header-only signatures: each one present must verify with a trusted key.
    let mut header_sigs: Vec<(u32, Vec<u8>)> = Vec::new();
    for tag in [t::SIG_RSA, t::SIG_DSA] {
        if let Some(b) = sig.bin(tag) {
            header_sigs.push((tag, b.to_vec()));
        }
    }
    for s in sig.strings(t::SIG_OPENPGP) {
        let b = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .with_context(|| format!("{what}: a v6 OpenPGP signature is not base64"))?;
        header_sigs.push((t::SIG_OPENPGP, b));
    }
    for (tag, bytes) in &header_sigs {
        let parsed = parse_signatures(bytes, &format!("{what}: signature tag {tag}"))?;
        for s in &parsed {
            let key = keys.check(s, raw).with_context(|| {
                format!(
                    "{what}: its {} header signature (key ID {}) does not verify against the \
                     trusted keys ({} tried): the package was altered or is signed by a key you \
                     have not trusted",
                    algo_name(s),
                    issuer_hex(s),
                    keys.len()
                )
            })?;
            out.signatures.push(GoodSignature {
                kind: format!("{} header", algo_name(s)),
                key,
            });
        }
    }
    let has_v3 = sig.has(t::SIG_PGP) || sig.has(t::SIG_GPG);
    if header_sigs.is_empty() {
        if has_v3 {
            out.needs_v3 = true;
        } else if allow_unsigned {
            out.unsigned = true;
        } else {
            bail!("{what}: the package is not signed; refusing it");
        }
    }
    Ok(out)
}

fn issuer_hex(s: &pgp::packet::Signature) -> String {
    s.issuer()
        .first()
        .map(|k| hex::encode_upper(k.as_ref()))
        .unwrap_or_else(|| "unknown".into())
}

/// The legacy signatures over header+payload (tags 1002, 1005), to verify over
/// `header.raw() ++ payload`.
pub fn v3_signatures(rpm: &RpmFile, what: &str) -> Result<Vec<pgp::packet::Signature>> {
    let mut out = Vec::new();
    for tag in [t::SIG_PGP, t::SIG_GPG] {
        if let Some(b) = rpm.signature.bin(tag) {
            out.extend(parse_signatures(
                b,
                &format!("{what}: signature tag {tag}"),
            )?);
        }
    }
    Ok(out)
}

/// What the payload must hash to: (PAYLOADDIGEST hex, its algorithm), when the header
/// carries one (rpm ≥ 4.14).
pub fn payload_digest(rpm: &RpmFile) -> Option<(String, u64)> {
    let d = rpm.header.string(t::PAYLOADDIGEST)?;
    let algo = rpm.header.int(t::PAYLOADDIGESTALGO).unwrap_or(hash::SHA256);
    Some((d, algo))
}

/// Check the signatures and digests of a whole package file that need its payload: the
/// PAYLOADDIGEST and the v3 header+payload signatures. Returns what verified.
pub fn check_payload(
    rpm: &RpmFile,
    payload: &mut dyn Read,
    keys: &Keyring,
    what: &str,
) -> Result<(Vec<GoodSignature>, Option<&'static str>)> {
    let v3 = v3_signatures(rpm, what)?;
    let pd = payload_digest(rpm);
    let hasher = match &pd {
        Some((_, algo)) => {
            Some(Hasher::new(*algo).with_context(|| format!("{what}: PAYLOADDIGEST"))?)
        }
        None => None,
    };
    let digest_name = hasher.as_ref().map(Hasher::name);
    // One pass: the payload is hashed for the PAYLOADDIGEST while the first v3 signature
    // (rpm writes one, RSA or DSA) verifies over header ++ payload as it streams.
    let mut tee = HashingReader::new(payload, hasher);
    let mut good = Vec::new();
    if let Some(s) = v3.first() {
        let mut signed = std::io::Read::chain(rpm.header.raw(), &mut tee);
        let key = keys.check_reader(s, &mut signed).with_context(|| {
            format!(
                "{what}: its {} header+payload signature (key ID {}) does not verify against the \
                 trusted keys: the package was altered or is signed by a key you have not trusted",
                algo_name(s),
                issuer_hex(s)
            )
        })?;
        good.push(GoodSignature {
            kind: format!("{} header+payload", algo_name(s)),
            key,
        });
    }
    std::io::copy(&mut tee, &mut std::io::sink())
        .with_context(|| format!("{what}: reading the payload"))?;
    if let (Some((want, _)), Some(h)) = (&pd, tee.hasher.take()) {
        if !h.hex().eq_ignore_ascii_case(want.trim()) {
            bail!(
                "{what}: the payload does not match the header's PAYLOADDIGEST (the package was \
                 altered)"
            );
        }
    }
    Ok((good, digest_name))
}
