//! `osbuilder kernel fetch`: a distro kernel and its modules, taken from the distro's own
//! signed repository with the native package backend, so boot checks need nothing else.
//!
//! The kernel metapackage named in distro.toml (`[kernel]`) is resolved to the versioned
//! image package it depends on; only that package is fetched (verified like any other),
//! and only its kernel files and modules are extracted:
//!
//! ```text
//! DIR/vmlinuz-<release>    DIR/vmlinuz -> vmlinuz-<release>
//! DIR/config-<release>     DIR/modules/<release>/…
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::arch::Arch;
use crate::distro::{DistroSet, PackageFormat};
use crate::error::refused;
use crate::output::{DirKind, StagedDir};
use crate::pkg::cache::Cache;
use crate::pkg::deb::backend::{DebRepository, DebRequest};
use crate::pkg::deb::debfile::load_deb;
use crate::pkg::deb::index::Universe;
use crate::pkg::deb::version;
use crate::pkg::extract::{Attrs, ExtractOptions, Extractor};
use crate::pkg::fetch::Fetcher;

#[derive(Clone, Debug)]
pub struct FetchOptions {
    pub distro: String,
    pub arch: Arch,
    pub os_version: Option<String>,
    pub mirror: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub output: PathBuf,
    /// Replace a folder at `output` that osbuilder did not make.
    pub force: bool,
}

/// How a kernel folder is recognised as osbuilder's (see [`crate::output::dir`]).
pub const KIND: DirKind = DirKind::Marked("kernel");

#[derive(Clone, Debug)]
pub struct Fetched {
    /// `DIR/vmlinuz-<release>`.
    pub vmlinuz: PathBuf,
    /// `DIR/modules/<release>`.
    pub modules: PathBuf,
    /// The kernel release (`uname -r`).
    pub release: String,
    pub package: String,
    pub version: String,
}

pub fn fetch(opts: &FetchOptions) -> Result<Fetched> {
    let set = DistroSet::load()?;
    let Some(distro) = set.get(&opts.distro) else {
        return Err(refused(format!(
            "unknown distro '{}'; known: {}",
            opts.distro,
            set.names().join(", ")
        )));
    };
    if distro.package_format != PackageFormat::Deb {
        return Err(refused(format!(
            "kernel fetch takes kernels from Debian-format repositories; {} is not one (use --distro debian)",
            distro.name
        )));
    }
    let Some(meta) = distro.kernel.get(&opts.arch) else {
        return Err(refused(format!(
            "distros/{}/distro.toml names no kernel package for {} ([kernel] table)",
            distro.name, opts.arch
        )));
    };
    // The default output's parents are made for the user (kernels/<arch>); the folder itself
    // is checked before anything is downloaded.
    if let Some(parent) = opts.output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    crate::output::check_destination(&opts.output, KIND, opts.force)?;
    let suite = opts
        .os_version
        .clone()
        .unwrap_or_else(|| distro.default_version.clone());
    let fetcher = Fetcher::from_env()?;
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    let repo = DebRepository::load(&DebRequest {
        distro,
        arch: opts.arch,
        suite: &suite,
        mirror: opts.mirror.as_deref(),
        keyrings: &[],
        host_apt_dir: None,
        fetcher: &fetcher,
        cache: &cache,
    })?;
    let image = image_package(&repo.universe, meta)?;
    let pkg = &repo.universe.packages[image];
    eprintln!(
        "osbuilder: kernel package {} {} ({:.1} MiB)",
        pkg.name,
        pkg.version,
        pkg.size as f64 / 1048576.0
    );
    let files = fetcher.fetch_packages(&cache, &[pkg.package_ref()])?;
    let deb = load_deb(&files[0], &pkg.name)?;

    let out = StagedDir::create(&opts.output, KIND, opts.force)?;
    let mut ex = Extractor::new(
        out.path(),
        ExtractOptions {
            rewrite: Some(Box::new(kernel_path)),
            ..Default::default()
        },
    )?;
    let mut ar = tar::Archive::new(&deb.data_tar[..]);
    let mut releases = Vec::new();
    ex.unpack_archive(&mut ar, &pkg.name, &mut |e| {
        let path = e.path_bytes().into_owned();
        let keep = kernel_path(trim(&path)).is_some();
        if let Some(r) = trim(&path).strip_prefix(b"boot/vmlinuz-") {
            releases.push(String::from_utf8_lossy(r).into_owned());
        }
        Ok(keep)
    })?;
    let [release] = releases.as_slice() else {
        bail!(
            "{} {} holds {} kernel images (boot/vmlinuz-*), expected one",
            pkg.name,
            pkg.version,
            releases.len()
        );
    };
    let t = crate::tree::source_date_epoch()?.unwrap_or(0);
    ex.symlink(
        b"vmlinuz",
        format!("vmlinuz-{release}").as_bytes(),
        Attrs::root(0o777, t),
    )?;
    ex.finish()?;
    let dest = out.dest().to_path_buf();
    out.commit(Vec::new())?;
    Ok(Fetched {
        vmlinuz: dest.join(format!("vmlinuz-{release}")),
        modules: dest.join("modules").join(release),
        release: release.clone(),
        package: pkg.name.clone(),
        version: pkg.version.clone(),
    })
}

fn trim(p: &[u8]) -> &[u8] {
    let p = p.strip_prefix(b"./").unwrap_or(p);
    p.strip_prefix(b"/").unwrap_or(p)
}

/// Where a file of the kernel package goes in the output, or None to leave it out.
fn kernel_path(p: &[u8]) -> Option<Vec<u8>> {
    let p = trim(p);
    if let Some(rest) = p.strip_prefix(b"boot/") {
        return (!rest.is_empty()).then(|| rest.to_vec());
    }
    for prefix in [&b"usr/lib/modules/"[..], b"lib/modules/"] {
        if let Some(rest) = p.strip_prefix(prefix) {
            return (!rest.is_empty()).then(|| [b"modules/".as_slice(), rest].concat());
        }
    }
    None
}

/// The versioned image package a kernel metapackage depends on (newest metapackage first).
fn image_package(u: &Universe, meta: &str) -> Result<usize> {
    let candidates = u
        .by_name
        .get(meta)
        .with_context(|| format!("the repository has no package {meta}"))?;
    let newest = candidates
        .iter()
        .copied()
        .max_by(|a, b| version::compare(&u.packages[*a].version, &u.packages[*b].version))
        .expect("by_name lists are never empty");
    let depends = &u.packages[newest].depends;
    for alt in depends.split([',', '|']) {
        let name = alt
            .split(['(', ' ', ':'])
            .find(|s| !s.is_empty())
            .unwrap_or("");
        if name.starts_with("linux-image-") && name != meta {
            if let Some(i) = u.by_name.get(name).and_then(|v| v.first()) {
                return Ok(*i);
            }
        }
    }
    bail!("{meta} depends on no linux-image-* package in the repository (Depends: {depends})")
}

pub fn default_output(arch: Arch) -> PathBuf {
    Path::new("kernels").join(arch.name())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kernel_files_are_kept() {
        assert_eq!(
            kernel_path(b"./boot/vmlinuz-6.12.1-cloud-amd64"),
            Some(b"vmlinuz-6.12.1-cloud-amd64".to_vec())
        );
        assert_eq!(
            kernel_path(b"./usr/lib/modules/6.12/kernel/x.ko"),
            Some(b"modules/6.12/kernel/x.ko".to_vec())
        );
        assert_eq!(
            kernel_path(b"lib/modules/6.1/modules.dep"),
            Some(b"modules/6.1/modules.dep".to_vec())
        );
        assert_eq!(
            kernel_path(b"./usr/share/doc/linux-image/changelog.gz"),
            None
        );
        assert_eq!(kernel_path(b"./boot/"), None);
    }
}
