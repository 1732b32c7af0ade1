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
            // The release as the backend resolved it (`latest` → its number).
            p.spec.distro = Some((record.distro.clone(), record.version.clone()));
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
    let mut mtree = mtree;
    let unowned = own_the_unrecorded(staged.path(), &mut mtree)?;
    if !unowned.is_empty() {
        eprintln!(
            "osbuilder: warning: {} entries were written without a recorded owner and are \
             made root's (first: {})",
            unowned.len(),
            crate::tree::mtree::escape(&unowned[0])
        );
    }
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

/// The ownership rule of a rootless build: its metadata names the owner of every entry,
/// the root included, since the disk shows only the builder's uid. Backends record each
/// entry they write through the extractor; anything that reached the staged tree another
/// way was given an owner by no package, so it is root's — never the builder's. Returns
/// the paths that had to be filled in (none, unless a backend wrote around the
/// extractor). A root build (empty metadata) has the owners on disk and is left alone.
fn own_the_unrecorded(root: &std::path::Path, mtree: &mut Mtree) -> Result<Vec<Vec<u8>>> {
    if mtree.is_empty() {
        return Ok(Vec::new());
    }
    let tree = crate::tree::Tree::scan(root, &Default::default())?;
    let mut filled = Vec::new();
    for e in &tree.entries {
        let known = mtree.get(&e.path);
        if known.is_some_and(|m| m.uid.is_some() && m.gid.is_some()) {
            continue;
        }
        mtree.set(
            &e.path,
            crate::tree::MEntry {
                uid: Some(known.and_then(|m| m.uid).unwrap_or(0)),
                gid: Some(known.and_then(|m| m.gid).unwrap_or(0)),
                ..Default::default()
            },
        );
        filled.push(e.path.clone());
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{MEntry, MType};

    #[test]
    fn entries_without_a_recorded_owner_become_roots_in_a_rootless_build() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/recorded"), b"x").unwrap();
        std::fs::write(d.path().join("etc/stray"), b"y").unwrap();
        let mut m = Mtree::new();
        for (p, kind, gid) in [
            (&b""[..], MType::Dir, 0),
            (b"etc", MType::Dir, 0),
            (b"etc/recorded", MType::File, 42),
        ] {
            m.set(
                p,
                MEntry {
                    kind: Some(kind),
                    uid: Some(0),
                    gid: Some(gid),
                    ..Default::default()
                },
            );
        }
        let filled = own_the_unrecorded(d.path(), &mut m).unwrap();
        assert_eq!(filled, vec![b"etc/stray".to_vec()]);
        let stray = m.get(b"etc/stray").unwrap();
        assert_eq!((stray.uid, stray.gid), (Some(0), Some(0)));
        assert_eq!(m.get(b"etc/recorded").unwrap().gid, Some(42));
        // A root build keeps its owners on disk: nothing is recorded.
        let mut empty = Mtree::new();
        assert!(own_the_unrecorded(d.path(), &mut empty).unwrap().is_empty());
        assert!(empty.is_empty());
    }
}
