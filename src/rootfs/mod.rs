//! `osbuilder rootfs`: build a distro's root filesystem natively (no root, no emulation),
//! one backend per package format. The compatibility matrix is checked before any work.

pub mod apk;
pub mod deb;
pub mod output;

use std::path::PathBuf;

use anyhow::{Result, bail};

use crate::arch::Arch;
use crate::distro::{DistroSet, InitMode, PackageFormat};
use crate::matrix::{Matrix, Request};

/// Everything a rootfs build needs, as the CLI (or the Makefile through it) gives it.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub distro: String,
    pub arch: Option<Arch>,
    /// Suite / release; default: the distro's default_version.
    pub os_version: Option<String>,
    /// None: the distro's default init mode.
    pub init: Option<InitMode>,
    /// Added to the distro's package set (Kata's EXTRA_PKGS).
    pub extra_pkgs: Vec<String>,
    /// Replaces the distro's package set.
    pub packages: Option<Vec<String>>,
    pub mirror: Option<String>,
    /// Extra OpenPGP keyrings to trust (private repositories).
    pub keyrings: Vec<PathBuf>,
    /// Extra folders of RSA `.rsa.pub` keys to trust (apk repositories).
    pub keys_dirs: Vec<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// Resolve and print the plan only.
    pub dry_run: bool,
    /// Run maintainer scripts in a chroot (needs root and a host able to run the target).
    pub run_scripts: bool,
    pub output: PathBuf,
    /// The host APT configuration folder (default /etc/apt), for mirror discovery.
    pub host_apt_dir: Option<PathBuf>,
}

pub fn build(opts: &Options) -> Result<()> {
    let set = DistroSet::load()?;
    let arch = crate::cli::arch_or_host(opts.arch)?;
    let target = Matrix::new(&set).check(&Request {
        distro: &opts.distro,
        arch,
        init: opts.init,
    })?;
    match target.distro.package_format {
        PackageFormat::Deb => deb::build(&target, opts),
        PackageFormat::Apk => apk::build(&target, opts),
        other => bail!(
            "the native {other:?} backend for {} is not built into this osbuilder yet",
            target.distro.name
        ),
    }
}
