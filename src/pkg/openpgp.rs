//! OpenPGP trust shared by the formats that use it: Debian's Release files, rpm-md's
//! `repomd.xml.asc` and RPM header signatures. A [`Keyring`] holds the public keys a
//! build trusts (the distro's pinned keys plus the user's); a signature counts only when
//! it verifies against one of them, primary key or subkey.

use anyhow::{Context, Result, bail};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::packet::Signature;
use pgp::types::{KeyDetails, PublicKeyTrait};

/// Public keys trusted to sign repository metadata or packages.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Add every public key from binary (`.gpg`/`.pgp`) or ASCII-armored (`.asc`) data.
    pub fn add(&mut self, data: &[u8], what: &str) -> Result<()> {
        let before = self.keys.len();
        // Armored keys may follow a line of text (Fedora's key files start with gpg's
        // `pub …` listing): the armor starts at its BEGIN line.
        let data = armor_start(data).unwrap_or(data);
        // Binary keyrings are concatenated transferable keys; parse them as public keys
        // (the generic public-or-secret reader stops after the first key).
        let keys: Vec<SignedPublicKey> = if data.starts_with(b"-----BEGIN") {
            let (it, _) = SignedPublicKey::from_armor_many(std::io::Cursor::new(data.to_vec()))
                .with_context(|| format!("reading OpenPGP keys from {what}"))?;
            it.collect::<Result<_, _>>()
        } else {
            SignedPublicKey::from_bytes_many(std::io::Cursor::new(data.to_vec()))
                .with_context(|| format!("reading OpenPGP keys from {what}"))?
                .collect::<Result<_, _>>()
        }
        .with_context(|| format!("reading OpenPGP keys from {what}"))?;
        self.keys.extend(keys);
        if self.keys.len() == before {
            bail!("{what} holds no OpenPGP public key");
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The primary-key fingerprints (uppercase hex), for messages and pins.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys
            .iter()
            .map(|k| hex::encode_upper(k.primary_key.fingerprint().as_bytes()))
            .collect()
    }

    /// The fingerprint (uppercase hex) of the trusted key, primary or subkey, over which
    /// `sig` verifies `data`; None when no trusted key made it (Debian's RSA archive keys
    /// sign with subkeys).
    pub fn check(&self, sig: &Signature, data: &[u8]) -> Option<String> {
        for k in &self.keys {
            if sig.verify(&k.primary_key, data).is_ok() {
                return Some(hex::encode_upper(k.primary_key.fingerprint().as_bytes()));
            }
            for sk in &k.public_subkeys {
                if sig.verify(&sk.key, data).is_ok() {
                    return Some(hex::encode_upper(sk.key.fingerprint().as_bytes()));
                }
            }
        }
        None
    }

    /// As [`Keyring::check`], streaming the signed data from `data` (read once: only the
    /// key whose ID the signature names is tried).
    pub fn check_reader(&self, sig: &Signature, data: &mut dyn std::io::Read) -> Option<String> {
        fn named<K: PublicKeyTrait + KeyDetails>(sig: &Signature, k: &K) -> bool {
            sig.issuer().iter().any(|i| **i == k.key_id())
        }
        fn run<K: PublicKeyTrait + KeyDetails>(
            sig: &Signature,
            k: &K,
            data: &mut dyn std::io::Read,
        ) -> Option<String> {
            sig.verify(k, data)
                .ok()
                .map(|()| hex::encode_upper(k.fingerprint().as_bytes()))
        }
        for k in &self.keys {
            if named(sig, &k.primary_key) {
                return run(sig, &k.primary_key, data);
            }
            for sk in &k.public_subkeys {
                if named(sig, &sk.key) {
                    return run(sig, &sk.key, data);
                }
            }
        }
        None
    }
}

/// Where ASCII armor begins in `data`, if it is armored.
fn armor_start(data: &[u8]) -> Option<&[u8]> {
    let marker = b"-----BEGIN PGP ";
    data.windows(marker.len())
        .position(|w| w == marker)
        .map(|i| &data[i..])
}

/// A binary or ASCII-armored detached signature (one or more signature packets).
pub fn parse_signatures(data: &[u8], what: &str) -> Result<Vec<Signature>> {
    let data = armor_start(data).unwrap_or(data);
    let sigs: Vec<DetachedSignature> = if data.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(data).with_context(|| format!("{what} is not UTF-8"))?;
        let (it, _) = DetachedSignature::from_string_many(text)
            .with_context(|| format!("{what} is not an OpenPGP signature"))?;
        it.collect::<Result<_, _>>()
    } else {
        DetachedSignature::from_bytes_many(std::io::Cursor::new(data.to_vec()))
            .with_context(|| format!("{what} is not an OpenPGP signature"))?
            .collect::<Result<_, _>>()
    }
    .with_context(|| format!("{what} is not an OpenPGP signature"))?;
    if sigs.is_empty() {
        bail!("{what} holds no OpenPGP signature");
    }
    Ok(sigs.into_iter().map(|d| d.signature).collect())
}

/// The fingerprint of the trusted key that made one of `sigs` over `data`, or an error
/// saying what to do.
pub fn verify_detached(
    keyring: &Keyring,
    sigs: &[Signature],
    data: &[u8],
    what: &str,
) -> Result<String> {
    sigs.iter()
        .find_map(|s| keyring.check(s, data))
        .with_context(|| {
            format!(
                "{what}: no valid signature from a trusted key ({} keys tried); the file was \
                 altered, or it is signed by a key you have not trusted",
                keyring.len()
            )
        })
}
