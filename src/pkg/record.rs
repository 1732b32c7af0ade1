//! The resolved-package record written beside a rootfs (`<rootfs>.packages.json`): what
//! was installed, from where, with which digest. Provisioning copies it into
//! osbuilder.yaml and the SBOM.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    /// SHA-256 of the package file as downloaded (hex).
    pub sha256: String,
    pub size: u64,
    /// Where it was fetched from.
    pub url: String,
    /// What its install scripts do that the native (declarative) install did not
    /// reproduce; empty when everything was, or when the scripts ran (--run-scripts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_reproduced: Vec<String>,
    /// Its files that carry file capabilities (`/usr/bin/ping cap_net_raw=ep`), kept as
    /// the `security.capability` attribute or in the rootfs metadata.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_capabilities: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageRecord {
    /// Format of this file; bumped on incompatible change.
    pub schema: u32,
    pub distro: String,
    pub version: String,
    /// Target architecture in the distro's own naming (amd64, aarch64…).
    pub arch: String,
    pub init: String,
    /// The package format (the SBOM's purl type); absent in records of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<crate::distro::PackageFormat>,
    /// Trust decisions beyond the default verification (e.g. unsigned packages installed
    /// because the distro declares them unsigned); copied into osbuilder.yaml.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust: Vec<String>,
    /// Repository base URL(s) the packages came from.
    pub mirrors: Vec<String>,
    /// Sorted by name.
    pub packages: Vec<InstalledPackage>,
    /// What the path filters left out of the packages (None: no filter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub excluded: Option<crate::pkg::pathfilter::Excluded>,
}

/// `<rootfs>.packages.json`, beside the rootfs (like `<rootfs>.mtree`).
pub fn record_path_for(rootfs: &Path) -> PathBuf {
    crate::tree::sidecar_path(rootfs, ".packages.json")
}

/// The record entries for fetched packages: what the index promised, plus the sha256 of
/// the file actually downloaded.
pub fn installed_packages(
    refs: &[crate::pkg::PackageRef],
    files: &[PathBuf],
) -> Result<Vec<InstalledPackage>> {
    refs.iter()
        .zip(files)
        .map(|(p, f)| {
            Ok(InstalledPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                sha256: crate::pkg::sha256_file(f)?,
                size: p.size,
                url: p.url.clone(),
                not_reproduced: Vec::new(),
                file_capabilities: Vec::new(),
            })
        })
        .collect()
}

/// The record as written: pretty JSON, packages sorted for reproducibility.
pub fn record_text(record: &PackageRecord) -> Result<String> {
    let mut r = record.clone();
    r.packages
        .sort_by(|a, b| a.name.cmp(&b.name).then(a.arch.cmp(&b.arch)));
    let mut text = serde_json::to_string_pretty(&r)?;
    text.push('\n');
    Ok(text)
}

pub fn read_record(path: &Path) -> Result<PackageRecord> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}
