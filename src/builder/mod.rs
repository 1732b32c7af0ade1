//! Container builds (`osbuilder rootfs --builder podman|docker`, Kata's USE_PODMAN and
//! USE_DOCKER): another way to fill the same staged root. The distro's own installer
//! (mmdebstrap, apk) runs in a builder container and runs the maintainer scripts; the tree
//! comes back as a tar stream, is unpacked into the staged rootfs, and from there the build
//! is the native one: the same provisioning, sidecars and atomic commit (`rootfs::finish`).
//!
//! Order of work: [`prepare`] refuses what cannot work before anything is fetched (no
//! builder definition, a foreign arch without qemu-user, no engine, rootless without
//! subordinate ids); [`build`] then makes or reuses the builder image, reads the verified
//! index on the host (mirror, timestamp, the plan to compare with), runs the container and
//! finishes the rootfs.

pub mod definition;
pub mod engine;
pub mod host;
pub mod image;
pub mod run;
pub mod tarball;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::arch::Arch;
use crate::distro::{Distro, PackageFormat};
use crate::matrix::Target;
use crate::output::{DirKind, StagedDir};
use crate::pkg::record::PackageRecord;
use crate::rootfs::{Options, Provisioning};
use definition::{BuilderDef, RunValues};
use engine::{Engine, EngineKind};

/// Where a rootfs is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Builder {
    /// osbuilder's own package installers (no root, no emulation, any arch).
    #[default]
    Native,
    /// The distro's installer in a podman builder container.
    Podman,
    /// The same with docker.
    Docker,
}

impl Builder {
    pub fn name(self) -> &'static str {
        match self {
            Builder::Native => "native",
            Builder::Podman => "podman",
            Builder::Docker => "docker",
        }
    }

    fn engine(self) -> Option<EngineKind> {
        match self {
            Builder::Native => None,
            Builder::Podman => Some(EngineKind::Podman),
            Builder::Docker => Some(EngineKind::Docker),
        }
    }
}

impl std::fmt::Display for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A container build that passed every check that needs no download.
pub struct Prepared {
    engine: Engine,
    def: BuilderDef,
}

/// The builder definition of `distro`, or a refusal naming the way out.
pub fn definition_of(distro: &Distro) -> Result<&BuilderDef> {
    distro.builder.as_ref().ok_or_else(|| {
        crate::error::refused(format!(
            "{} has no builder container definition ([builder] in distros/{}/distro.toml); \
             build it with --builder native",
            distro.name, distro.name
        ))
    })
}

/// Check a container build before any work: its definition, the arch, the engine. `None`
/// for a native build.
pub fn prepare(builder: Builder, target: &Target<'_>) -> Result<Option<Prepared>> {
    let Some(kind) = builder.engine() else {
        return Ok(None);
    };
    let def = definition_of(target.distro)?.clone();
    check_arch(target.arch, builder)?;
    let engine = engine::probe(kind)?;
    eprintln!("osbuilder: builder container engine: {}", engine.describe());
    Ok(Some(Prepared { engine, def }))
}

/// The binfmt_misc entry that runs `arch`'s binaries through qemu-user.
fn binfmt_entry(arch: Arch) -> &'static str {
    match arch {
        Arch::X86_64 => "qemu-x86_64",
        Arch::Aarch64 => "qemu-aarch64",
        Arch::Ppc64le => "qemu-ppc64le",
        Arch::S390x => "qemu-s390x",
    }
}

/// A foreign-arch container build runs the target's maintainer scripts: it needs qemu-user
/// registered with binfmt_misc, with the F flag (the interpreter is opened on the host,
/// so it works inside a container that does not have it).
fn check_arch(arch: Arch, builder: Builder) -> Result<()> {
    if Arch::host() == Some(arch) {
        return Ok(());
    }
    let entry = Path::new("/proc/sys/fs/binfmt_misc").join(binfmt_entry(arch));
    let text = std::fs::read_to_string(&entry).unwrap_or_default();
    let enabled = text.lines().next() == Some("enabled");
    let fixed = text
        .lines()
        .any(|l| l.strip_prefix("flags:").is_some_and(|f| f.contains('F')));
    if !(enabled && fixed) {
        return Err(crate::error::refused(format!(
            "--builder {builder} for {} on this {} host runs {}'s own binaries, which needs \
             qemu-user registered with binfmt_misc and the F flag ({} is {}): apt-get install \
             qemu-user-static binfmt-support, or build with --builder native, which runs no \
             target code and needs no emulation",
            arch.name(),
            std::env::consts::ARCH,
            arch.name(),
            entry.display(),
            if text.is_empty() {
                "missing"
            } else if !enabled {
                "disabled"
            } else {
                "without the F flag"
            }
        )));
    }
    Ok(())
}

/// The values the `run` template is filled in with. For rpm distros the repositories are
/// the templates of `[rpm] repos` with the requested version until the host has read the
/// repository ([`with_repos`] then puts in the verified bases and the resolved release).
fn run_values(
    target: &Target<'_>,
    opts: &Options,
    def: &BuilderDef,
    mirror: &str,
) -> Result<RunValues> {
    let d = target.distro;
    let suite = crate::rootfs::os_version(target, opts);
    let (arch, release) = match d.package_format {
        PackageFormat::Apk => (
            target.arch.alpine().to_string(),
            crate::pkg::apk::install::release_dir(&suite)?,
        ),
        PackageFormat::Rpm => (target.arch.rpm().to_string(), suite.clone()),
        PackageFormat::Deb => (target.arch.debian().to_string(), suite.clone()),
    };
    let rpm = d.rpm.as_ref();
    let repos = rpm
        .map(|c| {
            c.repos
                .iter()
                .map(|t| {
                    crate::pkg::fetch::join_url(
                        mirror,
                        &t.replace("{version}", &suite).replace("{arch}", &arch),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(RunValues {
        arch,
        suite,
        release,
        mirror: mirror.to_string(),
        components: if d.components.is_empty() {
            vec!["main".into()]
        } else {
            d.components.clone()
        },
        packages: crate::rootfs::requested_packages(target, opts)?,
        variant: def.variant.get(&target.init).cloned().unwrap_or_default(),
        path_filters: crate::rootfs::path_filter(target, opts)?.lines(),
        repos,
        // The native backend's decision (see pkg::rpm::backend): signatures are checked
        // unless the distro declares its packages unsigned or the user allowed unsigned ones.
        gpgcheck: rpm.is_none_or(|c| !(c.unsigned_packages || opts.allow_unsigned)),
        repo_gpgcheck: rpm.is_none_or(|c| c.repo_gpgcheck),
        // dnf hands every gpgkey to rpm, and Debian's rpm (rpm-sequoia) refuses a key with
        // only SHA-1 binding signatures, as Azure Linux's metadata key is: dnf gets the
        // package keys and the user's (docs/container.md).
        key_files: key_files(d, opts)?
            .into_iter()
            .filter(|k| k.2)
            .map(|k| k.0)
            .collect(),
    })
}

/// An rpm distro's values once the host has verified its repositories: the bases it read
/// (Clear Linux's `latest` resolved to a release number).
fn with_repos(mut v: RunValues, plan: &host::HostPlan) -> RunValues {
    if plan.format == PackageFormat::Rpm {
        v.suite = plan.release.clone();
        v.release = plan.release.clone();
        v.repos = plan.mirrors.clone();
    }
    v
}

/// What a container build that skipped signature checks records in osbuilder.yaml, worded
/// as the native rpm backend words it.
fn trust_notes(d: &Distro, v: &RunValues, installed: &[host::Nva]) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(cfg) = d.rpm.as_ref() else {
        return notes;
    };
    if !v.gpgcheck {
        let why = if cfg.unsigned_packages {
            format!("{} publishes unsigned packages", d.pretty_name)
        } else {
            "--allow-unsigned".to_string()
        };
        let names: Vec<&str> = installed.iter().map(|p| p.0.as_str()).collect();
        notes.push(format!(
            "{} unsigned packages installed ({why}): {}",
            names.len(),
            names.join(" ")
        ));
    }
    if !v.repo_gpgcheck {
        for r in &v.repos {
            notes.push(format!("repository metadata not signed: {r}"));
        }
    }
    notes
}

/// Where the builder's own packages come from when its image is bootstrapped implicitly:
/// the request's mirror and keys when the builder is the same distro, else that distro's
/// defaults (a Debian builder for an Ubuntu target uses the host's Debian mirror).
fn sources_for(def: &BuilderDef, target: &Target<'_>, opts: &Options) -> image::Sources {
    let same = def.image.bootstrap.distro == target.distro.name;
    image::Sources {
        mirror: if same { opts.mirror.clone() } else { None },
        keyrings: if same {
            opts.keyrings.clone()
        } else {
            Vec::new()
        },
        keys_dirs: if same {
            opts.keys_dirs.clone()
        } else {
            Vec::new()
        },
        cache_dir: opts.cache_dir.clone(),
    }
}

/// Build the rootfs in the builder container and finish it as a native build would.
pub fn build(
    p: Prepared,
    target: &Target<'_>,
    opts: &Options,
    provisioning: Option<Provisioning>,
    sink: &dyn crate::events::Sink,
) -> Result<()> {
    let start = Instant::now();
    let job = crate::events::Job::new("rootfs", sink);
    let Prepared { engine, def } = p;
    let d = target.distro;
    let mirror = crate::mirror::resolve(
        opts.mirror.as_deref(),
        d,
        target.arch,
        opts.host_apt_dir
            .as_deref()
            .unwrap_or(Path::new("/etc/apt")),
        crate::mirror::host_is_debian() && d.package_format == PackageFormat::Deb,
    )
    .map_err(|e| crate::error::refused(format!("{e:#}")))?;
    let values = run_values(target, opts, &def, &mirror.url)?;
    // The installer, as errors name it: the first command that is not shell plumbing.
    let tool = def
        .run
        .iter()
        .filter_map(|c| c.first())
        .find(|p| !["mkdir", "sh", "rm", "tar", "chmod", "cp"].contains(&p.as_str()))
        .or_else(|| def.run.last().and_then(|c| c.first()))
        .cloned()
        .unwrap_or_default();
    let host_arch = Arch::host().context("this host's architecture is not one osbuilder knows")?;
    if opts.dry_run {
        eprintln!(
            "osbuilder: dry run: would run in {} ({}), from {mirror}:",
            def.image.reference(host_arch),
            engine.kind.binary()
        );
        print!("{}", def.script(&values));
        return Ok(());
    }
    eprintln!(
        "osbuilder: {} {} {} ({}) with {tool} in a {} builder container",
        d.name,
        values.suite,
        values.arch,
        target.init,
        engine.kind.binary()
    );
    // The output path is checked (and its temporary folder made) before the long steps.
    let staged = StagedDir::create(&opts.output, DirKind::Rootfs, opts.force)?;
    let image = image::ensure(
        &engine,
        &def.image,
        &sources_for(&def, target, opts),
        false,
        false,
        sink,
    )?;
    if image.origin == image::Origin::Reused {
        eprintln!("osbuilder: builder image {} (reused)", image.reference);
    }
    let plan = host::plan(target, opts, &values.packages)?;
    let values = with_repos(values, &plan);
    let script = def.script(&values);
    let keys = KeysDir::write(d, opts, staged.dest())?;
    // The guest's path filters: an installer that takes them (dpkg's path-exclude) applies
    // them to the packages as it unpacks, as dpkg would, and what its maintainer scripts write
    // stays; for the others (apk, dnf) the host applies them to the tree that comes back.
    let filter = crate::rootfs::path_filter(target, opts)?;
    let by_installer = def.takes_path_filter();
    let mut ex = crate::pkg::extract::Extractor::new(
        staged.path(),
        crate::pkg::extract::ExtractOptions {
            filter: if by_installer {
                Default::default()
            } else {
                filter.clone()
            },
            ..Default::default()
        },
    )?;
    ex.set_default_mtime(plan.mtime);
    let run_start = Instant::now();
    let entries = run::run_into(
        &run::RunSpec {
            engine: &engine,
            image: &image.reference,
            script: &script,
            keys: &keys.0,
            tmpfs: &def.tmpfs,
            env: vec![
                ("SOURCE_DATE_EPOCH".into(), plan.mtime.to_string()),
                ("LC_ALL".into(), "C.UTF-8".into()),
                ("DEBIAN_FRONTEND".into(), "noninteractive".into()),
            ],
            tool: &tool,
        },
        &mut ex,
    )?;
    drop(keys);
    let excluded = if by_installer {
        crate::pkg::pathfilter::Excluded {
            rules: filter.lines(),
            entries: None,
            bytes: None,
        }
    } else {
        ex.excluded().clone()
    };
    let mtree = ex.finish()?;
    let installed = host::installed(staged.path(), plan.format)?;
    eprintln!(
        "osbuilder: the builder container made {entries} entries with {} packages in {:.1} s",
        installed.len(),
        run_start.elapsed().as_secs_f64()
    );
    if let Some(diff) = plan.compare(&installed) {
        eprintln!("osbuilder: note: {diff}");
    }
    let record = PackageRecord {
        schema: 1,
        distro: d.name.clone(),
        version: plan.release.clone(),
        arch: values.arch.clone(),
        init: target.init.to_string(),
        format: Some(plan.format),
        // Trust notes record packages installed without a signature: the distro's tool
        // verified every one against the keys in distros/ (and the host the index), except
        // where the distro publishes them unsigned (Clear Linux), as natively.
        trust: trust_notes(d, &values, &installed),
        mirrors: plan.mirrors.clone(),
        packages: plan.record(&installed),
        excluded: (!excluded.rules.is_empty()).then_some(excluded.clone()),
    };
    if let Some(note) = crate::rootfs::excluded_note(&excluded) {
        eprintln!("osbuilder: {note}");
    }
    crate::rootfs::finish(staged, mtree, &record, provisioning, plan.mtime, job)?;
    job.note(format!(
        "rootfs {} ready: {} packages in {:.1} s (index {:.1} s){}",
        opts.output.display(),
        installed.len(),
        start.elapsed().as_secs_f64(),
        plan.index_time.as_secs_f64(),
        match crate::tree::Mtree::default_path_for(&opts.output) {
            m if m.exists() => format!("; ownership and device metadata in {}", m.display()),
            _ => String::new(),
        }
    ));
    Ok(())
}

/// The key files of a deb or rpm build, as (file name, contents): the distro's keyrings
/// (deb) or package and metadata keys (rpm) from distros/, then the user's --keyring files,
/// numbered in that order, each marked whether it verifies packages (not only rpm-md
/// metadata). apt reads a keyring folder's *.gpg (binary) and *.asc (armored) files only, so
/// the extension follows the contents.
fn key_files(d: &Distro, opts: &Options) -> Result<Vec<(String, Vec<u8>, bool)>> {
    let mut out: Vec<(String, Vec<u8>, bool)> = Vec::new();
    let mut add = |data: Vec<u8>, from: &str, packages: bool| {
        let ext = if data.starts_with(b"-----BEGIN PGP") {
            "asc"
        } else {
            "gpg"
        };
        let stem = Path::new(from)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((format!("{:02}-{stem}.{ext}", out.len() + 1), data, packages));
    };
    match d.package_format {
        PackageFormat::Apk => return Ok(Vec::new()),
        PackageFormat::Deb => {
            for k in &d.keyrings {
                add(d.file(k).unwrap_or_default().to_vec(), k, true);
            }
        }
        PackageFormat::Rpm => {
            let mut seen = std::collections::BTreeSet::new();
            if let Some(c) = &d.rpm {
                for k in c.package_keys.iter().chain(&c.metadata_keys) {
                    if seen.insert(k) {
                        let packages = c.package_keys.contains(k);
                        add(d.file(k).unwrap_or_default().to_vec(), k, packages);
                    }
                }
            }
        }
    }
    for k in &opts.keyrings {
        let data = std::fs::read(k)
            .with_context(|| format!("reading keyring {}", crate::show::path(k)))?;
        add(data, &k.display().to_string(), true);
    }
    Ok(out)
}

/// The keys the container's installer verifies against, in a folder beside the output
/// (mounted read-only): the distro's keyrings, rpm keys or apk keys from distros/, plus the
/// user's --keyring / --keys-dir. Removed when dropped.
struct KeysDir(PathBuf);

impl KeysDir {
    fn write(d: &Distro, opts: &Options, dest: &Path) -> Result<KeysDir> {
        let name = dest.file_name().unwrap_or(std::ffi::OsStr::new("rootfs"));
        // A `.NAME.work-PID` scratch name: the next run sweeps it if this one is killed.
        let dir = dest.with_file_name(crate::output::temp_name(name, "work"));
        if dir.exists() {
            crate::output::dir::remove_tree(&dir)?;
        }
        std::fs::create_dir(&dir)
            .with_context(|| format!("creating {}", crate::show::path(&dir)))?;
        crate::output::track(&dir);
        let guard = KeysDir(dir.clone());
        if d.package_format == PackageFormat::Apk {
            // apk matches a signature to the key file of the same name: names are kept.
            if let Some(k) = &d.keys_dir {
                for (file, data) in d.files_under(k) {
                    std::fs::write(dir.join(file), data)?;
                }
            }
            for extra in &opts.keys_dirs {
                for e in std::fs::read_dir(extra)
                    .with_context(|| format!("reading --keys-dir {}", crate::show::path(extra)))?
                {
                    let p = e?.path();
                    if p.to_string_lossy().ends_with(".rsa.pub") {
                        std::fs::copy(&p, dir.join(p.file_name().unwrap_or_default()))?;
                    }
                }
            }
        }
        for (file, data, _) in key_files(d, opts)? {
            std::fs::write(dir.join(&file), data).with_context(|| format!("writing key {file}"))?;
        }
        Ok(guard)
    }
}

impl Drop for KeysDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        crate::output::untrack(&self.0);
    }
}

/// `osbuilder builder-image`: make (or find) the builder image of a distro.
#[derive(Clone, Debug)]
pub struct ImageOptions {
    pub distro: String,
    pub builder: Builder,
    /// From the registry (`base` + `setup`) instead of the native bootstrap.
    pub pull: bool,
    /// Make it again even if the engine has the tag.
    pub rebuild: bool,
    pub sources: image::Sources,
}

/// Make or reuse the builder image; returns it.
pub fn builder_image(o: &ImageOptions, sink: &dyn crate::events::Sink) -> Result<image::Image> {
    let set = crate::distro::DistroSet::load()?;
    let d = set.get(&o.distro).ok_or_else(|| {
        crate::error::refused(format!(
            "unknown distro '{}'; known: {}",
            o.distro,
            set.names().join(", ")
        ))
    })?;
    let def = definition_of(d)?;
    let kind = o.builder.engine().ok_or_else(|| {
        crate::error::refused("builder-image needs a container engine: --builder podman or docker")
    })?;
    let engine = engine::probe(kind)?;
    eprintln!("osbuilder: builder container engine: {}", engine.describe());
    // The sources are the builder's own distro's (Debian's for an Ubuntu target).
    image::ensure(&engine, &def.image, &o.sources, o.pull, o.rebuild, sink)
}
