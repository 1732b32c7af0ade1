//! The one interface every native package format implements (deb, apk, rpm), in the
//! order a build uses it: [`open`] a verified repository, [`Repository::resolve`] a plan,
//! fetch the plan's files (format-neutral: [`crate::pkg::fetch::Fetcher`] into the
//! content-addressed cache), then [`Repository::install`] them into a staged root through
//! the safe [`Extractor`]. `rootfs` drives every format the same way; what differs between
//! formats (index layout, signatures, resolver, database, declarative configuration) stays
//! behind this trait, and distro facts stay in distro.toml.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::PackageRef;
use super::cache::Cache;
use super::extract::Extractor;
use super::fetch::Fetcher;
use crate::arch::Arch;
use crate::distro::{Distro, InitMode, PackageFormat};

/// What to open: a distro's repository for one arch and release, and what to trust.
pub struct RepoRequest<'a> {
    pub distro: &'a Distro,
    pub arch: Arch,
    /// The release (suite, version) as the user gave it or the distro's default.
    pub version: &'a str,
    /// `--mirror`; else the usual order (see [`crate::mirror`]).
    pub mirror: Option<&'a str>,
    /// Extra OpenPGP keys or keyrings to trust (deb, rpm).
    pub keyrings: &'a [PathBuf],
    /// Extra folders of RSA `.rsa.pub` keys to trust (apk).
    pub keys_dirs: &'a [PathBuf],
    /// Install packages that carry no signature even where the distro does not declare
    /// its packages unsigned (rpm).
    pub allow_unsigned: bool,
    /// The host's APT configuration (default /etc/apt), for Debian mirror discovery.
    pub host_apt_dir: Option<&'a Path>,
    pub fetcher: &'a Fetcher,
    pub cache: &'a Cache,
}

/// What the user asked to install.
#[derive(Clone, Debug)]
pub struct Request {
    /// Package names (or the format's constraints), in the order given.
    pub roots: Vec<String>,
    pub init: InitMode,
    /// The target's own maintainer scripts will run afterwards (deb `--run-scripts`):
    /// the plan must hold what they need, and the database marks packages unpacked.
    pub run_scripts: bool,
}

/// One package of a plan: what to fetch, and which package of the repository it is.
#[derive(Clone, Debug)]
pub struct Planned {
    pub package: PackageRef,
    /// Position in the repository's own package list (for the backend's install step).
    pub id: usize,
}

/// A resolved install plan, dependencies first.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub packages: Vec<Planned>,
    /// What the user should know about the plan (e.g. scriptlets that will not run).
    pub notes: Vec<String>,
}

impl Plan {
    /// What the fetcher downloads, in plan order.
    pub fn refs(&self) -> Vec<PackageRef> {
        self.packages.iter().map(|p| p.package.clone()).collect()
    }

    /// `name version arch size`, one package per line, in install order (--dry-run).
    pub fn lines(&self) -> String {
        self.packages
            .iter()
            .map(|p| {
                let p = &p.package;
                format!("{} {} {} {}\n", p.name, p.version, p.arch, p.size)
            })
            .collect()
    }

    /// Bytes to download.
    pub fn download_size(&self) -> u64 {
        self.packages.iter().map(|p| p.package.size).sum()
    }
}

/// What an install step did besides placing the packages' files, for the build log.
#[derive(Clone, Debug, Default)]
pub struct InstallReport {
    pub notes: Vec<String>,
    /// Per package: what its install scripts do that the declarative installation did not
    /// reproduce (recorded in the package record and osbuilder.yaml).
    pub not_reproduced: std::collections::BTreeMap<String, Vec<String>>,
    /// Trust decisions the guest's osbuilder.yaml must record (e.g. unsigned packages
    /// installed because the distro declares them unsigned).
    pub trust: Vec<String>,
    /// Per package: its files that carry file capabilities, `"/path caps"` (recorded in
    /// the package record and osbuilder.yaml).
    pub capabilities: std::collections::BTreeMap<String, Vec<String>>,
}

/// A verified repository of one package format, ready to resolve and install from.
pub trait Repository {
    /// The package format (also the SBOM's purl type).
    fn format(&self) -> PackageFormat;

    /// The release as recorded in the package record (`3.22`, `trixie`…).
    fn release(&self) -> String;

    /// The repository base URLs packages come from (for the record and the log).
    fn mirrors(&self) -> Vec<String>;

    /// What was verified on opening, one line each (shown to the user).
    fn verified(&self) -> Vec<String>;

    /// Choose the packages to install for `req`, dependencies first.
    fn resolve(&self, req: &Request) -> Result<Plan>;

    /// The timestamp for what osbuilder writes when SOURCE_DATE_EPOCH is unset, derived
    /// from the repository or the plan so that a rebuild of the same plan is identical.
    fn default_mtime(&self, plan: &Plan) -> i64;

    /// Verify and install `files` (the fetched packages, in plan order) into `ex`'s root,
    /// with the format's database and declarative configuration; `mtime` stamps what
    /// osbuilder writes itself.
    fn install(
        &self,
        ex: &mut Extractor,
        req: &Request,
        plan: &Plan,
        files: &[PathBuf],
        mtime: i64,
    ) -> Result<InstallReport>;

    /// For the plan (--dry-run): per package, what its install scripts may do that the
    /// native install does not reproduce, for the packages already in `cache` (None when
    /// the format has nothing to say), plus how many packages could not be checked.
    fn plan_notes(
        &self,
        _plan: &Plan,
        _cache: &super::cache::Cache,
    ) -> Result<(std::collections::BTreeMap<String, Vec<String>>, usize)> {
        Ok(Default::default())
    }

    /// After extraction finished (directory modes and times settled): run what the format
    /// runs on the installed tree (deb `--run-scripts`). Default: nothing.
    fn post_install(&self, _root: &Path, _req: &Request) -> Result<()> {
        Ok(())
    }
}

/// Open the distro's repository with the backend of its package format.
pub fn open(req: &RepoRequest<'_>) -> Result<Box<dyn Repository>> {
    Ok(match req.distro.package_format {
        PackageFormat::Deb => Box::new(super::deb::backend::DebRepository::open(req)?),
        PackageFormat::Apk => Box::new(super::apk::backend::ApkRepository::open(req)?),
        PackageFormat::Rpm => Box::new(super::rpm::backend::RpmRepository::open(req)?),
    })
}

/// The packages to install: `--packages` replaces the distro's set for the init mode and
/// arch, `--extra-pkgs` adds to it; blanks and repeats are dropped, order kept.
pub fn requested_packages(
    distro: &Distro,
    arch: Arch,
    init: InitMode,
    packages: Option<&[String]>,
    extra: &[String],
) -> Vec<String> {
    let mut roots = match packages {
        Some(p) => p.to_vec(),
        None => distro.package_set(arch, init),
    };
    roots.extend(extra.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    roots.retain(|r| !r.trim().is_empty() && seen.insert(r.clone()));
    roots
}
