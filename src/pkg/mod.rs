//! Format-neutral package installation: the pieces every native backend (deb, apk, rpm)
//! shares, and the one interface they implement ([`backend::Repository`]).
//!
//! Data flows one way: a backend resolves [`PackageRef`]s from its signed repository index,
//! [`fetch::Fetcher::fetch_packages`] puts each verified file in the content-addressed
//! [`cache::Cache`], the backend streams each package's payload through
//! [`extract::Extractor`] into the rootfs (never outside it; ownership and device nodes
//! that an unprivileged build cannot apply go to the rootfs `Mtree`), and
//! [`record::record_text`] is what was installed, written beside the rootfs.

pub mod apk;
pub mod backend;
pub mod cache;
pub mod deb;
pub mod extract;
pub mod fetch;
pub mod openpgp;
pub mod pathfilter;
pub mod record;
pub mod rpm;
pub mod verify;

use std::fmt;
use std::io::Read;

use anyhow::{Context, Result, bail};
use sha2::Digest as _;

/// What a repository index promises about a file's content. Hex strings are lowercase.
#[derive(Clone)]
pub enum Digest {
    Sha256(String),
    Sha512(String),
    Sha1(String),
    /// A format-specific digest over part of the file (e.g. APK's SHA-1 of the control
    /// gzip member). `compute` reads the whole file and returns the hex digest.
    Custom {
        name: &'static str,
        hex: String,
        compute: fn(&mut dyn Read) -> Result<String>,
    },
}

impl Digest {
    pub fn algorithm(&self) -> &'static str {
        match self {
            Digest::Sha256(_) => "sha256",
            Digest::Sha512(_) => "sha512",
            Digest::Sha1(_) => "sha1",
            Digest::Custom { name, .. } => name,
        }
    }

    pub fn hex(&self) -> &str {
        match self {
            Digest::Sha256(h) | Digest::Sha512(h) | Digest::Sha1(h) => h,
            Digest::Custom { hex, .. } => hex,
        }
    }

    /// Compute this digest's algorithm over `r`.
    pub fn compute(&self, r: &mut dyn Read) -> Result<String> {
        fn run<D: sha2::Digest + std::io::Write>(mut d: D, r: &mut dyn Read) -> Result<String> {
            std::io::copy(r, &mut d)?;
            Ok(hex::encode(d.finalize()))
        }
        match self {
            Digest::Sha256(_) => run(sha2::Sha256::new(), r),
            Digest::Sha512(_) => run(sha2::Sha512::new(), r),
            Digest::Sha1(_) => run(sha1::Sha1::new(), r),
            Digest::Custom { compute, .. } => compute(r),
        }
    }

    /// Ok when `data` has this digest; the error names both values.
    pub fn verify(&self, what: &str, data: &mut dyn Read) -> Result<()> {
        let got = self.compute(data)?;
        if !got.eq_ignore_ascii_case(self.hex()) {
            bail!(
                "{what}: {} mismatch: expected {}, got {got} (the file was altered or the index is stale)",
                self.algorithm(),
                self.hex()
            );
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm(), self.hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One package to install, as the resolver chose it from a verified index.
#[derive(Clone, Debug)]
pub struct PackageRef {
    pub name: String,
    pub version: String,
    /// The package's own architecture name (amd64, all, aarch64, noarch…).
    pub arch: String,
    /// Size in bytes of the file at `url`, as the index says (0 when unknown).
    pub size: u64,
    /// http(s):// or file:// URL of the package file.
    pub url: String,
    /// What the downloaded file must hash to.
    pub digest: Digest,
}

/// SHA-256 of a byte slice, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(data))
}

/// SHA-256 of a file's content, hex.
pub fn sha256_file(path: &std::path::Path) -> Result<String> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Digest::Sha256(String::new()).compute(&mut f)
}
