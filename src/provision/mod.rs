//! Provisioning: put the agent into a rootfs and make the rootfs a Kata guest.
//!
//! Runs after a backend's bootstrap (`osbuilder rootfs`) or alone on a user's own rootfs
//! (`osbuilder provision`). All writes go through the package layer's in-root
//! [`Extractor`], so symlinks in the rootfs are followed inside it (never onto the host)
//! and, in an unprivileged build, ownership lands in the rootfs metadata file.

pub mod elf;
pub mod host;
pub mod libs;
pub mod manifest;
pub mod systemd;

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::arch::Arch;
use crate::distro::InitMode;
use crate::pkg::extract::{Attrs, ExtractOptions, Extractor};
use crate::pkg::record::{self, PackageRecord};
use crate::tree::{Kind, Mtree, ScanOptions, Tree};
use elf::Executable;
use manifest::{AgentInfo, Manifest};
pub use systemd::AgentUnits;

/// Where the agent comes from.
#[derive(Clone, Debug)]
pub enum AgentSource {
    /// A prebuilt binary (Kata's AGENT_SOURCE_BIN).
    Binary(PathBuf),
    /// Kata's kata-static-agent tarball (tar.zst with usr/bin/kata-agent, and its units).
    Tarball(PathBuf),
    /// osbuilder's built-in reference agent (host arch only).
    Reference {
        bytes: &'static [u8],
        version: String,
    },
}

/// How the rootfs being provisioned is made (osbuilder.yaml's `build-method`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BuildMethod {
    /// A distro's packages (`osbuilder rootfs --distro …`, or the user's own rootfs).
    #[default]
    Distro,
    /// An overlay that dracut merges with the host's files: provisioning runs on an empty
    /// tree, so what the base provides (systemd) is checked on dracut's result instead.
    Dracut,
}

impl BuildMethod {
    pub fn name(self) -> &'static str {
        match self {
            BuildMethod::Distro => "distro",
            BuildMethod::Dracut => "dracut",
        }
    }
}

/// What to provision, independent of where the rootfs is (a staged build or a user's dir).
#[derive(Clone, Debug)]
pub struct Spec {
    pub build_method: BuildMethod,
    pub arch: Arch,
    pub init: InitMode,
    pub agent: AgentSource,
    pub agent_version: Option<String>,
    pub units: AgentUnits,
    pub kernel_modules: Option<PathBuf>,
    pub prune_units: bool,
    /// Distro name/version for osbuilder.yaml; read from the package record or
    /// /etc/os-release when not given.
    pub distro: Option<(String, String)>,
    pub default_packages: Vec<String>,
    pub extra_packages: Vec<String>,
    pub source_date_epoch: Option<i64>,
}

/// The agent the user asked for, before the target arch and init mode are known
/// (the flags of `osbuilder rootfs` and `osbuilder provision`).
#[derive(Clone, Debug, Default)]
pub struct AgentRequest {
    pub agent_bin: Option<PathBuf>,
    pub agent_tarball: Option<PathBuf>,
    pub agent_version: Option<String>,
    pub kernel_modules: Option<PathBuf>,
    pub prune_units: bool,
}

impl AgentRequest {
    /// Where the agent comes from; without one, osbuilder's reference agent, which exists
    /// only for the arch osbuilder itself was built for.
    pub fn source(&self, arch: Arch) -> Result<AgentSource> {
        if let Some(p) = &self.agent_bin {
            return Ok(AgentSource::Binary(p.clone()));
        }
        if let Some(p) = &self.agent_tarball {
            return Ok(AgentSource::Tarball(p.clone()));
        }
        match crate::agent::reference_agent_arch() {
            Some(a) if a == arch => Ok(AgentSource::Reference {
                bytes: crate::agent::reference_agent(),
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
            built => Err(crate::error::refused(format!(
                "no agent given for {arch}: osbuilder's built-in reference agent is built for {}; \
                 pass --agent-bin PATH (a static {arch} binary) or --agent-tarball FILE, \
                 or --no-agent for a bare rootfs",
                built
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "another architecture".into())
            ))),
        }
    }

    pub fn spec(&self, arch: Arch, init: InitMode) -> Result<Spec> {
        Ok(Spec {
            build_method: BuildMethod::Distro,
            arch,
            init,
            agent: self.source(arch)?,
            agent_version: self.agent_version.clone(),
            units: AgentUnits {
                agent_service: crate::agent::KATA_AGENT_SERVICE.to_string(),
                containers_target: crate::agent::KATA_CONTAINERS_TARGET.to_string(),
            },
            kernel_modules: self.kernel_modules.clone(),
            prune_units: self.prune_units,
            distro: None,
            default_packages: Vec::new(),
            extra_packages: Vec::new(),
            source_date_epoch: crate::tree::source_date_epoch()?,
        })
    }
}

/// `osbuilder provision ROOTFS`: a spec applied to an existing directory.
#[derive(Clone, Debug)]
pub struct Options {
    pub rootfs: PathBuf,
    pub spec: Spec,
    /// Metadata file; default `<rootfs>.mtree`.
    pub metadata: Option<PathBuf>,
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub agent_path: String,
    /// The agent as installed (for the init checks).
    pub agent_bytes: Vec<u8>,
    pub agent_sha256: String,
    pub warnings: Vec<String>,
    pub metadata: Option<PathBuf>,
    pub pruned: Vec<String>,
    /// What osbuilder.yaml and the SBOM were written from (see [`write_manifest`]).
    pub manifest: Option<Manifest>,
}

const AGENT_BIN: &str = "usr/bin/kata-agent";

/// Provision an existing rootfs directory in place (the standalone command).
pub fn provision(opts: &Options) -> Result<Report> {
    let root = &opts.rootfs;
    if !root.is_dir() {
        bail!(
            "rootfs {} does not exist or is not a directory",
            root.display()
        );
    }
    let agent = load_agent(&opts.spec)?;
    let meta_path = opts
        .metadata
        .clone()
        .unwrap_or_else(|| Mtree::default_path_for(root));
    let existing = if meta_path.exists() {
        Some(Mtree::load(&meta_path)?)
    } else {
        None
    };
    let had_metadata = existing.is_some();
    let record = record::read_record(&record::record_path_for(root)).ok();
    let (mtree, mut report) = provision_dir(
        root,
        existing.unwrap_or_default(),
        &opts.spec,
        agent,
        record.as_ref(),
    )?;
    if had_metadata || !mtree.is_empty() {
        mtree.save(&meta_path)?;
        report.metadata = Some(meta_path);
    }
    Ok(report)
}

/// Provision `root` (with its metadata `mtree`), check the result as a packer will see
/// it, and return the updated metadata. Backends call this on their staged rootfs before
/// committing it, so a failed provisioning never leaves a rootfs under the final name.
pub fn provision_dir(
    root: &Path,
    mtree: Mtree,
    spec: &Spec,
    agent: LoadedAgent,
    record: Option<&PackageRecord>,
) -> Result<(Mtree, Report)> {
    let mtime = spec.source_date_epoch.unwrap_or_else(now);
    let started = std::time::SystemTime::now();
    let mut ex = Extractor::new(root, ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    *ex.mtree_mut() = mtree;
    let report = apply(&mut ex, spec, agent, record)?;
    let mtree = ex.finish()?;
    settle_dir_times(root, started, mtime)?;
    check(root, Some(&mtree), spec, &report)?;
    Ok((mtree, report))
}

/// Writing into a directory sets its mtime to the wall clock. Give every directory that
/// provisioning changed the build timestamp instead, so rebuilds are identical.
pub(crate) fn settle_dir_times(
    root: &Path,
    since: std::time::SystemTime,
    mtime: i64,
) -> Result<()> {
    let since = since
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let md = std::fs::symlink_metadata(&dir)?;
        use std::os::unix::fs::MetadataExt;
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if e.file_type()?.is_dir() {
                stack.push(e.path());
            }
        }
        if md.mtime() >= since && md.mtime() != mtime {
            let t = std::fs::FileTimes::new().set_modified(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64),
            );
            std::fs::File::open(&dir)
                .and_then(|f| f.set_times(t))
                .with_context(|| format!("setting the time of {}", dir.display()))?;
        }
    }
    Ok(())
}

/// The agent's bytes and provenance, loaded and checked before anything is written.
#[derive(Clone)]
pub struct LoadedAgent {
    /// None for a tarball (read after it is unpacked into the rootfs).
    bytes: Option<Vec<u8>>,
    url: String,
    name: String,
    default_version: String,
    warnings: Vec<String>,
}

impl LoadedAgent {
    /// The agent's bytes when known before provisioning (not for a tarball, which is read
    /// once unpacked).
    pub fn bytes(&self) -> Option<&[u8]> {
        self.bytes.as_deref()
    }
}

/// Read the agent and check its architecture: a missing file or a wrong arch fails
/// before the rootfs changes.
pub fn load_agent(spec: &Spec) -> Result<LoadedAgent> {
    let mut warnings = Vec::new();
    let (bytes, url, name, default_version) = match &spec.agent {
        AgentSource::Binary(p) => {
            let b = std::fs::read(p)
                .with_context(|| format!("reading the agent binary {}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                Some(b),
                format!("file://{}", std::path::absolute(p)?.display()),
                name,
                String::new(),
            )
        }
        AgentSource::Tarball(p) => {
            if !p.is_file() {
                bail!("agent tarball {} does not exist", p.display());
            }
            (
                None,
                format!("file://{}", std::path::absolute(p)?.display()),
                "kata-agent".into(),
                String::new(),
            )
        }
        AgentSource::Reference { bytes, version } => (
            Some(bytes.to_vec()),
            "osbuilder:reference-agent".into(),
            "kata-agent".into(),
            version.clone(),
        ),
    };
    if let Some(b) = &bytes {
        check_agent_arch(b, spec.arch, &mut warnings)?;
    }
    Ok(LoadedAgent {
        bytes,
        url,
        name,
        default_version,
        warnings,
    })
}

/// Write everything provisioning adds, through `ex` (in-root, metadata-recording).
/// `record` is the backend's resolved-package list, for osbuilder.yaml and the SBOM.
pub fn apply(
    ex: &mut Extractor,
    spec: &Spec,
    agent: LoadedAgent,
    record: Option<&PackageRecord>,
) -> Result<Report> {
    let mut report = Report {
        warnings: agent.warnings,
        ..Default::default()
    };
    let mtime = spec.source_date_epoch.unwrap_or_else(now);
    let root = ex.root().display().to_string();

    let has_systemd = ex.read_file(b"usr/lib/systemd/systemd")?.is_some()
        || ex.read_file(b"lib/systemd/systemd")?.is_some();
    if spec.init == InitMode::Systemd && !has_systemd && spec.build_method == BuildMethod::Distro {
        bail!(
            "systemd mode, but {root} has no systemd (/usr/lib/systemd/systemd): install it \
             (the distro's 'init' or 'systemd' package) or provision with --agent-init"
        );
    }

    // The agent, to where the init mode wants it.
    let agent_bytes = match (&spec.agent, agent.bytes) {
        (AgentSource::Tarball(p), _) => {
            let f = std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?;
            let z = zstd::stream::read::Decoder::new(f)
                .with_context(|| format!("{} is not zstd-compressed", p.display()))?;
            ex.unpack(z, &format!("agent tarball {}", p.display()))?;
            let b = ex.read_file(AGENT_BIN.as_bytes())?.with_context(|| {
                format!("agent tarball {} has no {AGENT_BIN} (expected Kata's kata-static-agent layout)", p.display())
            })?;
            check_agent_arch(&b, spec.arch, &mut report.warnings)?;
            b
        }
        (_, Some(b)) => b,
        (_, None) => unreachable!("binary and reference agents are read by load_agent"),
    };
    let sha = crate::pkg::sha256_hex(&agent_bytes);
    match spec.init {
        InitMode::AgentInit => {
            if ex.read_file(AGENT_BIN.as_bytes())?.is_some() {
                ex.remove_file(AGENT_BIN.as_bytes())?;
            }
            let at = ex.write_file(
                b"sbin/init",
                &mut Cursor::new(&agent_bytes),
                Attrs::root(0o755, mtime),
            )?;
            ex.symlink(b"init", b"/sbin/init", Attrs::root(0o777, mtime))?;
            report.agent_path = format!("/{}", String::from_utf8_lossy(&at));
        }
        InitMode::Systemd => {
            let at = ex.write_file(
                AGENT_BIN.as_bytes(),
                &mut Cursor::new(&agent_bytes),
                Attrs::root(0o755, mtime),
            )?;
            report.agent_path = format!("/{}", String::from_utf8_lossy(&at));
            systemd::install_units(ex, &spec.units, mtime)?;
            systemd::install_tmp_mount(ex, mtime)?;
            systemd::configure_chrony(ex, mtime)?;
            if spec.prune_units {
                report.pruned = systemd::prune_units(ex)?;
            }
        }
    }

    // Always: the agent bind-mounts resolv.conf; the machine id is the guest's own.
    ex.remove_file(b"etc/resolv.conf")?;
    ex.write_file(
        b"etc/resolv.conf",
        &mut std::io::empty(),
        Attrs::root(0o644, mtime),
    )?;
    ex.write_file(
        b"etc/machine-id",
        &mut std::io::empty(),
        Attrs::root(0o444, mtime),
    )?;

    if let Some(dir) = &spec.kernel_modules {
        copy_modules(ex, dir, mtime)?;
    }

    // osbuilder.yaml and the SBOM.
    let (distro_name, distro_version) = match (&spec.distro, record) {
        (Some(d), _) => d.clone(),
        (None, Some(r)) => (r.distro.clone(), r.version.clone()),
        (None, None) => os_release(ex)?,
    };
    let m = Manifest {
        osbuilder_version: env!("CARGO_PKG_VERSION").to_string(),
        build_method: spec.build_method.name().to_string(),
        created: mtime,
        architecture: spec.arch.name().to_string(),
        distro_name,
        distro_version,
        default_packages: spec.default_packages.clone(),
        extra_packages: spec.extra_packages.clone(),
        resolved: record.map(|r| r.packages.clone()).unwrap_or_default(),
        // Records of older builds name no format: the distro's, where it is known.
        package_format: record.and_then(|r| {
            r.format.or_else(|| {
                crate::distro::DistroSet::load()
                    .ok()
                    .and_then(|s| s.get(&r.distro).map(|d| d.package_format))
            })
        }),
        trust: record.map(|r| r.trust.clone()).unwrap_or_default(),
        excluded: record.and_then(|r| r.excluded.clone()),
        agent: Some(AgentInfo {
            url: agent.url,
            name: agent.name,
            version: spec.agent_version.clone().unwrap_or(agent.default_version),
            sha256: sha.clone(),
            is_init: spec.init == InitMode::AgentInit,
        }),
        profile: None,
    };
    write_manifest(ex, &m)?;
    report.agent_sha256 = sha;
    report.agent_bytes = agent_bytes;
    report.manifest = Some(m);
    Ok(report)
}

/// Kata's `/var/lib/osbuilder/osbuilder.yaml` and the SPDX SBOM beside it, from `m`
/// (replacing earlier ones: the dracut method writes them again once it knows what dracut
/// took from the host).
pub fn write_manifest(ex: &mut Extractor, m: &Manifest) -> Result<()> {
    ex.write_file(
        b"var/lib/osbuilder/osbuilder.yaml",
        &mut Cursor::new(m.to_yaml()),
        Attrs::root(0o644, m.created),
    )?;
    ex.write_file(
        b"var/lib/osbuilder/sbom.spdx.json",
        &mut Cursor::new(m.to_spdx()),
        Attrs::root(0o644, m.created),
    )?;
    Ok(())
}

/// Kata's rootfs checks, on the result as a packer will see it (disk + metadata).
pub fn check(root: &Path, metadata: Option<&Mtree>, spec: &Spec, report: &Report) -> Result<()> {
    let tree = Tree::scan(
        root,
        &ScanOptions {
            metadata: metadata.cloned(),
            ..Default::default()
        },
    )?;
    check_init(&tree, spec.init, &report.agent_bytes)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The agent must run on the target: its ELF machine must match. A script is accepted
/// with a warning (its interpreter must be in the rootfs).
pub fn check_agent_arch(bytes: &[u8], arch: Arch, warnings: &mut Vec<String>) -> Result<()> {
    match elf::inspect(bytes) {
        Executable::Elf {
            arch: Some(a),
            dynamic,
            ..
        } if a == arch => {
            if dynamic {
                warnings.push(
                    "the agent is dynamically linked: its libraries must be in the rootfs (a static agent is safer)".into(),
                );
            }
            Ok(())
        }
        Executable::Elf { arch: Some(a), .. } => {
            bail!(
                "the agent is built for {a}, but the target architecture is {arch}: give an agent built for {arch}"
            )
        }
        Executable::Elf { machine, .. } => {
            bail!(
                "the agent is an ELF binary for machine {machine}, not {arch}; give an agent built for {arch}"
            )
        }
        Executable::Script(interp) => {
            warnings.push(format!("the agent is a script (#!{interp}), not an ELF binary; its interpreter must be in the rootfs"));
            Ok(())
        }
        Executable::Other => bail!("the agent is neither an ELF executable nor a #! script"),
    }
}

/// Kata's checks: /sbin/init present; agent-init: it is the agent, not systemd;
/// systemd: it leads to systemd.
pub fn check_init(tree: &Tree, init: InitMode, agent: &[u8]) -> Result<()> {
    let root = tree.root.display();
    let Some(entry) = tree.lookup(b"sbin/init") else {
        bail!("{root} has no /sbin/init after provisioning")
    };
    match init {
        InitMode::AgentInit => {
            let Kind::File { .. } = &entry.kind else {
                bail!("agent-init mode: /sbin/init in {root} is not the agent binary")
            };
            if entry.perm & 0o111 == 0 {
                bail!("agent-init mode: /sbin/init in {root} is not executable");
            }
            for systemd in [&b"usr/lib/systemd/systemd"[..], b"lib/systemd/systemd"] {
                if let Some(crate::tree::Entry {
                    kind: Kind::File { source: s, .. },
                    ..
                }) = tree.lookup(systemd)
                {
                    if std::fs::read(s).ok().as_deref() == Some(agent) {
                        bail!(
                            "agent-init mode: the agent given is systemd itself; give the agent binary"
                        );
                    }
                }
            }
        }
        InitMode::Systemd => {
            let target = tree.resolve(b"sbin/init").unwrap_or_default();
            if !target.ends_with(b"systemd") {
                bail!(
                    "systemd mode: /sbin/init in {root} leads to /{}, not systemd; install the distro's init package",
                    String::from_utf8_lossy(&target)
                );
            }
        }
    }
    Ok(())
}

/// Distro name and version from the rootfs's /etc/os-release.
fn os_release(ex: &mut Extractor) -> Result<(String, String)> {
    let text = ex
        .read_file(b"etc/os-release")?
        .or(ex.read_file(b"usr/lib/os-release")?)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(|v| v.trim_matches('"').to_string())
    };
    let name = get("ID").unwrap_or_else(|| "unknown".into());
    let version = get("VERSION_CODENAME")
        .or_else(|| get("VERSION_ID"))
        .unwrap_or_else(|| "unknown".into());
    Ok((name, version))
}

/// Kata's `cp -a KERNEL_MODULES_DIR rootfs/lib/modules/`: the folder lands as
/// lib/modules/<its name>.
fn copy_modules(ex: &mut Extractor, dir: &Path, mtime: i64) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::metadata(dir)
        .with_context(|| format!("kernel modules folder {} does not exist", dir.display()))?;
    if !md.is_dir() {
        bail!("--kernel-modules {} is not a folder", dir.display());
    }
    let abs: PathBuf = std::path::absolute(dir)?.components().collect();
    let name = abs
        .file_name()
        .context("--kernel-modules needs a named folder (e.g. .../lib/modules/6.12.0)")?;
    let base = [b"lib/modules/".as_slice(), name.as_bytes()].concat();
    let mut stack = vec![(abs.clone(), base)];
    while let Some((src, dst)) = stack.pop() {
        let md = std::fs::symlink_metadata(&src)?;
        let attrs = Attrs::root(md.mode() & 0o7777, mtime);
        if md.is_dir() {
            ex.create_dir(&dst, attrs)?;
            for e in std::fs::read_dir(&src)? {
                let e = e?;
                stack.push((
                    e.path(),
                    [dst.as_slice(), b"/", e.file_name().as_bytes()].concat(),
                ));
            }
        } else if md.file_type().is_symlink() {
            let t = std::fs::read_link(&src)?;
            ex.symlink(&dst, t.as_os_str().as_bytes(), Attrs::root(0o777, mtime))?;
        } else if md.is_file() {
            let mut f = std::fs::File::open(&src)?;
            ex.write_file(&dst, &mut f as &mut dyn Read, attrs)?;
        }
    }
    Ok(())
}
