//! The package universe of one repository for one architecture: the Packages indexes of
//! the requested components, verified against the signed Release and parsed.

use std::collections::HashMap;
use std::io::Read;

use anyhow::{Context, Result, bail};

use super::control::parse_stanzas;
use super::release::{Keyring, Release, verify_detached, verify_inrelease};
use crate::pkg::cache::Cache;
use crate::pkg::fetch::{FetchError, Fetcher, join_url};
use crate::pkg::{Digest, PackageRef};

/// One binary package as a Packages index describes it.
#[derive(Clone, Debug)]
pub struct DebPackage {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub multi_arch: String,
    pub essential: bool,
    pub priority: String,
    pub depends: String,
    pub pre_depends: String,
    /// (virtual name, version if the Provides is versioned)
    pub provides: Vec<(String, Option<String>)>,
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    /// The repository base URL this package comes from.
    pub base: String,
}

impl DebPackage {
    pub fn package_ref(&self) -> PackageRef {
        PackageRef {
            name: self.name.clone(),
            version: self.version.clone(),
            arch: self.arch.clone(),
            size: self.size,
            url: join_url(&self.base, &self.filename),
            digest: Digest::Sha256(self.sha256.clone()),
        }
    }
}

/// Parse one Packages index. Stanzas without the fields needed to fetch safely are refused.
pub fn parse_packages(text: &str, base: &str) -> Result<Vec<DebPackage>> {
    let mut out = Vec::new();
    for s in parse_stanzas(text) {
        let get = |k: &str| s.get(k).unwrap_or("").trim();
        let name = get("Package");
        if name.is_empty() {
            continue;
        }
        let sha256 = get("SHA256");
        if sha256.len() != 64 {
            bail!("Packages index: {name} has no SHA256; refusing an unverifiable package");
        }
        let provides = s
            .get("Provides")
            .map(|p| {
                p.split(',')
                    .filter_map(|item| {
                        let item = item.trim();
                        if item.is_empty() {
                            return None;
                        }
                        let (n, rest) = item.split_once('(').unwrap_or((item, ""));
                        let ver = rest
                            .trim_end_matches(')')
                            .trim()
                            .strip_prefix('=')
                            .map(|v| v.trim().to_string());
                        Some((strip_arch(n.trim()).to_string(), ver))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(DebPackage {
            name: name.to_string(),
            version: get("Version").to_string(),
            arch: get("Architecture").to_string(),
            multi_arch: get("Multi-Arch").to_string(),
            essential: get("Essential").eq_ignore_ascii_case("yes"),
            priority: get("Priority").to_string(),
            depends: get("Depends").to_string(),
            pre_depends: get("Pre-Depends").to_string(),
            provides,
            filename: get("Filename").to_string(),
            size: get("Size").parse().unwrap_or(0),
            sha256: sha256.to_ascii_lowercase(),
            base: base.to_string(),
        });
    }
    Ok(out)
}

/// "libc6:any" → "libc6".
pub fn strip_arch(n: &str) -> &str {
    n.split(':').next().unwrap_or(n)
}

/// What a repository offers for one architecture.
#[derive(Default)]
pub struct Universe {
    pub packages: Vec<DebPackage>,
    /// Package indices by name.
    pub by_name: HashMap<String, Vec<usize>>,
    /// Providers of virtual names: (package index, provided version).
    pub providers: HashMap<String, Vec<(usize, Option<String>)>>,
    pub release: Release,
    /// The suite as the user named it (`--os-version`), for messages: the Release's own
    /// Suite field names the suite's class ("stable") when "trixie" was asked for.
    pub suite: String,
}

impl Universe {
    pub fn new(packages: Vec<DebPackage>, release: Release) -> Universe {
        let suite = if release.codename.is_empty() {
            release.suite.clone()
        } else {
            release.codename.clone()
        };
        let mut u = Universe {
            packages,
            release,
            suite,
            ..Default::default()
        };
        for (i, p) in u.packages.iter().enumerate() {
            u.by_name.entry(p.name.clone()).or_default().push(i);
            for (v, ver) in &p.provides {
                u.providers
                    .entry(v.clone())
                    .or_default()
                    .push((i, ver.clone()));
            }
        }
        u
    }
}

/// Where and what to load.
pub struct RepoSpec<'a> {
    pub mirror: &'a str,
    pub suite: &'a str,
    pub components: &'a [String],
    /// Debian architecture name (amd64, arm64, ppc64el, s390x).
    pub arch: &'a str,
    pub keyring: &'a Keyring,
    /// Seconds since the epoch, for Valid-Until.
    pub now: i64,
}

/// Fetch and verify Release, then the Packages index of every component.
pub fn load(spec: &RepoSpec<'_>, fetcher: &Fetcher, cache: &Cache) -> Result<Universe> {
    let dists = join_url(spec.mirror, &format!("dists/{}", spec.suite));
    let release_text = match fetcher.get(&join_url(&dists, "InRelease")) {
        Ok(data) => verify_inrelease(&data, spec.keyring)?,
        Err(FetchError::NotFound(_)) => {
            let rel = fetcher
                .get(&join_url(&dists, "Release"))
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "suite '{}' not found on {}: check --os-version and --mirror",
                        spec.suite, spec.mirror
                    )
                })?;
            let sig = fetcher
                .get(&join_url(&dists, "Release.gpg"))
                .map_err(anyhow::Error::from)
                .context(
                    "the repository has Release but no Release.gpg; refusing unsigned metadata",
                )?;
            verify_detached(&rel, &sig, spec.keyring)?;
            String::from_utf8(rel).context("Release is not UTF-8")?
        }
        Err(e) => return Err(anyhow::Error::from(e)),
    };
    let release = Release::parse(&release_text)?;
    release.check_valid_until(spec.now)?;
    if !release.architectures.is_empty() && !release.architectures.iter().any(|a| a == spec.arch) {
        bail!(
            "suite '{}' on {} has no {} packages (it offers: {}); for Ubuntu, non-amd64 arches live \
             on the ports archive — pass its URL with --mirror",
            spec.suite,
            spec.mirror,
            spec.arch,
            release.architectures.join(" ")
        );
    }
    let mut packages = Vec::new();
    for comp in spec.components {
        let base = format!("{comp}/binary-{}/Packages", spec.arch);
        let choice = ["xz", "gz", ""].iter().find_map(|ext| {
            let p = if ext.is_empty() {
                base.clone()
            } else {
                format!("{base}.{ext}")
            };
            release.sha256.get(&p).map(|e| (p, e.clone(), *ext))
        });
        let Some((path, entry, ext)) = choice else {
            bail!(
                "Release of '{}' lists no {base} index: component '{comp}' or arch '{}' is not in this repository",
                spec.suite,
                spec.arch
            );
        };
        let digest = Digest::Sha256(entry.sha256.clone());
        let file = match cache.lookup(&digest)? {
            Some(p) => p,
            None => {
                let data = fetcher
                    .get(&join_url(&dists, &path))
                    .map_err(anyhow::Error::from)?;
                cache
                    .insert_bytes(&digest, &data)
                    .with_context(|| format!("index {path} does not match the signed Release"))?
            }
        };
        let raw = std::fs::File::open(&file)?;
        let mut text = String::new();
        let mut reader: Box<dyn Read> = match ext {
            "xz" => Box::new(liblzma::read::XzDecoder::new(raw)),
            "gz" => Box::new(flate2::read::GzDecoder::new(raw)),
            _ => Box::new(raw),
        };
        reader
            .read_to_string(&mut text)
            .with_context(|| format!("decompressing {path}"))?;
        packages.extend(parse_packages(&text, spec.mirror).with_context(|| path.clone())?);
    }
    let mut universe = Universe::new(packages, release);
    universe.suite = spec.suite.to_string();
    Ok(universe)
}
