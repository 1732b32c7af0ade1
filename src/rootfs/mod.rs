//! `osbuilder rootfs`: build a distro's root filesystem natively (no root, no emulation).
//! The compatibility matrix is checked before any work; then every package format is
//! driven the same way through [`crate::pkg::backend`] (open a verified repository,
//! resolve, fetch, install into a staged root), and the staged root is provisioned, its
//! sidecars written and committed by [`finish`].

pub mod native;
pub mod output;

use std::path::PathBuf;

use anyhow::Result;

use crate::arch::Arch;
use crate::distro::{DistroSet, InitMode};
use crate::matrix::{Matrix, Request, Target};
use crate::output::{DirKind, StagedDir};
use crate::pkg::record::PackageRecord;
use crate::provision::{AgentRequest, LoadedAgent, Spec};
use crate::tree::Mtree;

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
    /// Install packages without a signature although the distro does not declare its
    /// packages unsigned (rpm).
    pub allow_unsigned: bool,
    pub cache_dir: Option<PathBuf>,
    /// Resolve and print the plan only.
    pub dry_run: bool,
    /// Run maintainer scripts in a chroot (needs root and a host able to run the target).
    pub run_scripts: bool,
    pub output: PathBuf,
    /// Replace whatever is at `output` even if osbuilder did not make it (never `/`, home,
    /// the current directory or a mount point).
    pub force: bool,
    /// The host APT configuration folder (default /etc/apt), for mirror discovery.
    pub host_apt_dir: Option<PathBuf>,
    /// Provision the agent into the rootfs; None leaves a bare rootfs (Kata's ROOTFS_ONLY).
    pub agent: Option<AgentRequest>,
}

pub fn build(opts: &Options) -> Result<()> {
    let set = DistroSet::load()?;
    let arch = crate::arch::Arch::or_host(opts.arch)?;
    let target = Matrix::new(&set).check(&Request {
        distro: &opts.distro,
        arch,
        init: opts.init,
    })?;
    // The output is checked before anything is downloaded (and again when committing).
    if !opts.dry_run {
        crate::output::check_destination(&opts.output, DirKind::Rootfs, opts.force)?;
    }
    // The agent is read and checked now: a missing file or a wrong arch fails before
    // anything is downloaded.
    let provisioning = match (&opts.agent, opts.dry_run) {
        (Some(req), false) => Some(Provisioning::prepare(req, &target, opts)?),
        _ => None,
    };
    native::build(&target, opts, provisioning)
}

/// The release to build: `--os-version`, else the distro's default.
pub fn os_version(target: &Target<'_>, opts: &Options) -> String {
    opts.os_version
        .clone()
        .unwrap_or_else(|| target.distro.default_version.clone())
}

/// The packages to install: `--packages` replaces the distro's set, `--extra-pkgs` adds.
pub fn requested_packages(target: &Target<'_>, opts: &Options) -> Vec<String> {
    crate::pkg::backend::requested_packages(
        target.distro,
        target.arch,
        target.init,
        opts.packages.as_deref(),
        &opts.extra_pkgs,
    )
}

/// Provisioning of a rootfs being built: prepared up front, applied to the staged rootfs
/// by the backend just before it is committed.
pub struct Provisioning {
    spec: Spec,
    agent: LoadedAgent,
}

impl Provisioning {
    fn prepare(req: &AgentRequest, target: &Target<'_>, opts: &Options) -> Result<Provisioning> {
        let mut spec = req.spec(target.arch, target.init)?;
        spec.distro = Some((target.distro.name.clone(), os_version(target, opts)));
        spec.default_packages = match &opts.packages {
            Some(p) => p.clone(),
            None => target.distro.package_set(target.arch, target.init),
        };
        spec.extra_packages = opts.extra_pkgs.clone();
        let agent = crate::provision::load_agent(&spec)?;
        Ok(Provisioning { spec, agent })
    }
}

/// How long a build took, for the closing line.
pub(crate) struct Timing {
    pub start: std::time::Instant,
    /// Index and downloads.
    pub fetched: std::time::Duration,
    pub packages: usize,
}

/// The end of every backend: provision the staged rootfs (when an agent was asked for),
/// write its metadata and package record beside it, then rename it into place. The files
/// beside it go first: a rootfs never appears without the ownership its packers need.
/// `mtime` is the build timestamp (SOURCE_DATE_EPOCH or the repository's date), so
/// provisioned files are as reproducible as installed ones.
pub(crate) fn finish(
    staged: StagedDir,
    mtree: Mtree,
    record: &PackageRecord,
    provisioning: Option<Provisioning>,
    mtime: i64,
    timing: Timing,
) -> Result<()> {
    let mtree = match provisioning {
        None => mtree,
        Some(mut p) => {
            p.spec.source_date_epoch.get_or_insert(mtime);
            let (mtree, report) = crate::provision::provision_dir(
                staged.path(),
                mtree,
                &p.spec,
                p.agent,
                Some(record),
            )?;
            for w in &report.warnings {
                eprintln!("osbuilder: warning: {w}");
            }
            eprintln!(
                "osbuilder: provisioned {} agent at {} (sha256 {})",
                p.spec.init,
                report.agent_path,
                &report.agent_sha256[..16]
            );
            mtree
        }
    };
    let dest = staged.dest().to_path_buf();
    let sidecars = vec![
        output::mtree_sidecar(&mtree, &dest)?,
        output::record_sidecar(record, &dest)?,
    ];
    staged.commit(sidecars)?;
    eprintln!(
        "osbuilder: rootfs {} ready: {} packages in {:.1} s (index+download {:.1} s){}",
        dest.display(),
        timing.packages,
        timing.start.elapsed().as_secs_f64(),
        timing.fetched.as_secs_f64(),
        if mtree.is_empty() {
            String::new()
        } else {
            format!(
                "; ownership and device metadata in {}",
                Mtree::default_path_for(&dest).display()
            )
        }
    );
    Ok(())
}
