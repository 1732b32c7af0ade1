//! `osbuilder rootfs`: build a distro's root filesystem natively (no root, no emulation).
//! The compatibility matrix is checked before any work; then every package format is
//! driven the same way through [`crate::pkg::backend`] (open a verified repository,
//! resolve, fetch, install into a staged root), and the staged root is provisioned, its
//! sidecars written and committed by [`finish`].
//! A host profile (`--profile`) makes the staged root a host instead (see `provision::host`).

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
    /// Native, or the distro's own installer in a builder container.
    pub builder: crate::builder::Builder,
    /// Build a host with this profile (profiles/<name>.toml): its packages, files and units,
    /// systemd as init, no agent.
    pub profile: Option<String>,
    /// Which of the distro's package sets a guest starts from (`--packages` replaces it).
    pub package_set: crate::distro::PackageSet,
    /// Keep what the distro's `[slim]` path filters leave out of a guest (docs, man pages,
    /// translations).
    pub keep_docs: bool,
    /// The user's own dpkg-style path filters (`path-exclude=GLOB`, `path-include=GLOB`),
    /// applied after the distro's, in order.
    pub path_filters: Vec<String>,
}

/// `osbuilder rootfs`: check the request, then build; messages go to `sink`.
pub fn build(opts: &Options, sink: &dyn crate::events::Sink) -> Result<()> {
    let set = DistroSet::load()?;
    let arch = crate::arch::Arch::or_host(opts.arch)?;
    // A host profile is checked first: it decides the init mode and the package set.
    let host = match &opts.profile {
        Some(name) => Some(HostPlan::prepare(name, opts, arch)?),
        None => None,
    };
    let opts = match &host {
        Some(h) => &h.opts,
        None => opts,
    };
    let target = Matrix::new(&set).check(&Request {
        distro: &opts.distro,
        arch,
        init: opts.init,
    })?;
    // The package set and the path filters are checked before any work.
    base_packages(&target, opts)?;
    path_filter(&target, opts)?;
    // The output is checked before anything is downloaded (and again when committing).
    if !opts.dry_run {
        crate::output::check_destination(&opts.output, DirKind::Rootfs, opts.force)?;
    }
    // A container build is checked (definition, arch, engine) before any work.
    let container = crate::builder::prepare(opts.builder, &target)?;
    // The agent is read and checked now: a missing file or a wrong arch fails before
    // anything is downloaded.
    let provisioning = match (&host, &opts.agent, opts.dry_run) {
        (_, _, true) => None,
        (Some(h), _, false) => Some(h.provisioning(&target, opts)?),
        (None, Some(req), false) => Some(Provisioning::prepare(req, &target, opts)?),
        (None, None, false) => None,
    };
    if let Some(c) = container {
        return crate::builder::build(c, &target, opts, provisioning, sink);
    }
    native::build(&target, opts, provisioning, sink)
}

/// The release to build: `--os-version`, else the distro's default.
pub fn os_version(target: &Target<'_>, opts: &Options) -> String {
    opts.os_version
        .clone()
        .unwrap_or_else(|| target.distro.default_version.clone())
}

/// The packages to install: `--packages` replaces the distro's set, `--extra-pkgs` adds.
pub fn requested_packages(target: &Target<'_>, opts: &Options) -> Result<Vec<String>> {
    let base = base_packages(target, opts)?;
    Ok(crate::pkg::backend::requested_packages(
        target.distro,
        target.arch,
        target.init,
        Some(&base),
        &opts.extra_pkgs,
    ))
}

/// The set a build starts from: `--packages`, else the distro's `--package-set` (Kata's
/// list by default; `minimal`: only what an agent guest needs).
pub fn base_packages(target: &Target<'_>, opts: &Options) -> Result<Vec<String>> {
    use crate::distro::PackageSet;
    if let Some(p) = &opts.packages {
        return Ok(p.clone());
    }
    if opts.package_set == PackageSet::Minimal && opts.profile.is_some() {
        return Err(crate::error::refused(
            "--package-set minimal is for guests; a host profile brings its own packages",
        ));
    }
    target
        .distro
        .package_set_of(opts.package_set, target.arch, target.init)
        .ok_or_else(|| {
            crate::error::refused(format!(
                "{} has no minimal package set for {} guests ([packages.minimal] in its \
                 distro.toml); drop --package-set minimal or name the packages with --packages",
                target.distro.name, target.init
            ))
        })
}

/// The path filter of a build (see [`crate::pkg::pathfilter`]): the distro's `[slim]`
/// rules for a guest — not with `--keep-docs`, not for a host, which keeps its manuals —
/// then the user's own rules.
pub fn path_filter(
    target: &Target<'_>,
    opts: &Options,
) -> Result<crate::pkg::pathfilter::PathFilter> {
    let mut filter = if opts.keep_docs || opts.profile.is_some() {
        Default::default()
    } else {
        target.distro.path_filter()?
    };
    for line in &opts.path_filters {
        filter.rules.push(
            crate::pkg::pathfilter::Rule::parse(line)
                .map_err(|e| crate::error::refused(e.to_string()))?,
        );
    }
    Ok(filter)
}

/// What the build log says about the path filter's work; None without rules.
pub(crate) fn excluded_note(e: &crate::pkg::pathfilter::Excluded) -> Option<String> {
    if e.rules.is_empty() {
        return None;
    }
    let done = match (e.entries, e.bytes) {
        (Some(n), Some(b)) => format!("left out {n} entries ({:.1} MiB)", b as f64 / 1048576.0),
        _ => "were applied by the builder's own installer".to_string(),
    };
    Some(format!(
        "path filters {done}: docs, man pages, translations; --keep-docs keeps them; the \
         rules are listed in osbuilder.yaml"
    ))
}

/// Provisioning of a rootfs being built: prepared up front, applied to the staged rootfs
/// by the backend just before it is committed.
pub enum Provisioning {
    /// A Kata guest: the agent, its units, osbuilder.yaml.
    Agent { spec: Spec, agent: LoadedAgent },
    /// A host: the profile's files and units, module index, osbuilder.yaml.
    Host(crate::provision::host::HostSpec),
}

/// A host build: the profile, and the options with its packages and init mode applied.
struct HostPlan {
    profile: crate::profile::Profile,
    /// The user's options plus the profile's packages, systemd as init, no agent.
    opts: Options,
}

impl HostPlan {
    fn prepare(name: &str, opts: &Options, arch: Arch) -> Result<HostPlan> {
        let profile = crate::profile::ProfileSet::load()?.get(name)?.clone();
        let pkgs = profile.packages_for(&opts.distro, arch)?;
        if opts.init == Some(InitMode::AgentInit) {
            return Err(crate::error::refused(format!(
                "profile {name} builds a host, which runs systemd: drop --agent-init"
            )));
        }
        if !opts.dry_run {
            crate::image::fs::check_tools(crate::provision::host::TOOLS)?;
        }
        let mut o = opts.clone();
        o.init = Some(InitMode::Systemd);
        o.agent = None;
        o.extra_pkgs.extend(pkgs);
        Ok(HostPlan { profile, opts: o })
    }

    fn provisioning(&self, target: &Target<'_>, opts: &Options) -> Result<Provisioning> {
        let profile_pkgs = self
            .profile
            .packages_for(&target.distro.name, target.arch)?;
        let mut default_packages = base_packages(target, opts)?;
        default_packages.extend(profile_pkgs.iter().cloned());
        let extra_packages = opts
            .extra_pkgs
            .iter()
            .filter(|p| !profile_pkgs.contains(p))
            .cloned()
            .collect();
        Ok(Provisioning::Host(crate::provision::host::HostSpec {
            profile: self.profile.clone(),
            arch: target.arch,
            default_packages,
            extra_packages,
            mtime: 0, // set from the build's timestamp in `finish`
        }))
    }
}

impl Provisioning {
    /// Read and check the agent for `target` (a missing file or a wrong arch fails here,
    /// before anything is downloaded) and fill in what osbuilder.yaml records.
    pub fn prepare(
        req: &AgentRequest,
        target: &Target<'_>,
        opts: &Options,
    ) -> Result<Provisioning> {
        let mut spec = req.spec(target.arch, target.init)?;
        spec.distro = Some((target.distro.name.clone(), os_version(target, opts)));
        spec.default_packages = base_packages(target, opts)?;
        spec.extra_packages = opts.extra_pkgs.clone();
        let agent = crate::provision::load_agent(&spec)?;
        Ok(Provisioning::Agent { spec, agent })
    }
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
    job: crate::events::Job<'_>,
) -> Result<()> {
    let mtree = match provisioning {
        None => mtree,
        Some(Provisioning::Agent { mut spec, agent }) => {
            let provisioning = job.start(crate::events::Stage::Provision, None);
            spec.source_date_epoch.get_or_insert(mtime);
            // The release as the backend resolved it (`latest` → its number).
            spec.distro = Some((record.distro.clone(), record.version.clone()));
            let (mtree, report) =
                crate::provision::provision_dir(staged.path(), mtree, &spec, agent, Some(record))?;
            for w in &report.warnings {
                job.warn(w.clone());
            }
            job.note(format!(
                "provisioned {} agent at {} (sha256 {})",
                spec.init,
                report.agent_path,
                &report.agent_sha256[..16]
            ));
            provisioning.done();
            mtree
        }
        Some(Provisioning::Host(mut spec)) => {
            let provisioning = job.start(crate::events::Stage::Provision, None);
            spec.mtime = mtime;
            let (mtree, report) =
                crate::provision::host::provision_host(staged.path(), mtree, &spec, record)?;
            for w in &report.warnings {
                job.warn(w.clone());
            }
            job.note(format!(
                "provisioned host profile {} ({} units enabled, module index for {})",
                spec.profile.name,
                report.enabled.len(),
                if report.depmod.is_empty() {
                    "no kernel".to_string()
                } else {
                    report.depmod.join(", ")
                }
            ));
            provisioning.done();
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
