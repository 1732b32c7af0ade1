//! The dracut build method (Kata's `BUILD_METHOD=dracut`): the host is the base. An overlay
//! of Kata's components — provisioning applied to an empty tree, plus the libraries a
//! dynamic agent needs, the modules to load and the profiles' own files — is merged with
//! what dracut gathers from the host (systemd, udev, their libraries and, with `--kver`, a
//! kernel's modules) into an initrd.
//!
//! The overlay is built first, so a bad agent fails before dracut runs. dracut runs
//! isolated from the host's dracut configuration (run.rs) and writes an uncompressed
//! archive into a scratch folder. osbuilder reads it back with its own newc reader into a
//! tree (rootless: owners and device nodes in the tree's metadata), adds what the kernel
//! needs that a rootless dracut cannot create (`/dev/console` and the other nodes dracut
//! makes as root), and merges the overlay on top through the in-root extractor — not with
//! dracut's `--include`, whose `cp` writes a file *through* an existing symlink: the
//! agent-as-init at `sbin/init` would overwrite systemd itself, which dracut links there.
//! Then Kata's checks run on the result, the host packages dracut took files from go into
//! osbuilder.yaml and the SBOM, and the tree is either packed by osbuilder's own initrd
//! writer (sorted, SOURCE_DATE_EPOCH, gzip/zstd/xz: `osbuilder initrd --method dracut`) or
//! committed as a rootfs (`osbuilder rootfs --method dracut`).

pub mod host;
pub mod modules;
pub mod profile;
mod run;

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::arch::Arch;
use crate::compress::Compression;
use crate::distro::InitMode;
use crate::error::refused;
use crate::output::{DirKind, StagedDir};
use crate::pkg::extract::{Attrs, ExtractOptions, Extractor};
use crate::pkg::record::PackageRecord;
use crate::provision::{self, AgentRequest, BuildMethod, LoadedAgent, Spec};
use crate::rootfs::output::{mtree_sidecar, record_sidecar};
use crate::tree::{Kind, MType, Mtree, ScanOptions, Tree};
use modules::KernelModules;
use profile::Profile;

/// Kata's name for the list of modules to load at boot (one per line).
pub const MODULES_LOAD_CONF: &str = "etc/modules-load.d/kata-modules.conf";

/// The device nodes dracut creates when it runs as root (and skips otherwise, or in a
/// container), with the usual modes: (path, major, minor, mode).
const DEVICE_NODES: [(&str, u32, u32, u32); 5] = [
    ("dev/console", 5, 1, 0o600),
    ("dev/kmsg", 1, 11, 0o644),
    ("dev/null", 1, 3, 0o666),
    ("dev/random", 1, 8, 0o666),
    ("dev/urandom", 1, 9, 0o666),
];

/// A dracut build, as the CLI (or the Makefile through it) asks for it.
#[derive(Clone, Debug)]
pub struct Options {
    /// Profile names (dracut-profiles/); empty means [`profile::DEFAULT`].
    pub profiles: Vec<String>,
    pub kver: Option<String>,
    pub kmoddir: Option<PathBuf>,
    pub init: InitMode,
    /// The agent to provision into the overlay; None for an initrd without one (the
    /// image-boot initramfs).
    pub agent: Option<AgentRequest>,
    pub source_date_epoch: Option<i64>,
}

/// Everything checked and loaded before any work: a refusal or a missing tool stops here.
struct Prepared {
    profiles: Vec<Profile>,
    confs: Vec<(String, Vec<u8>)>,
    drivers: Vec<String>,
    kernel: Option<KernelModules>,
    dracut: PathBuf,
    agent: Option<(Spec, LoadedAgent)>,
    /// The agent's libraries, when its bytes are known up front (else found after
    /// provisioning, for a tarball's agent).
    libraries: Option<Vec<provision::libs::Library>>,
    arch: Arch,
    host: (String, String),
    source_date_epoch: Option<i64>,
}

fn prepare(o: &Options) -> Result<Prepared> {
    let set = profile::ProfileSet::load()?;
    let names = if o.profiles.is_empty() {
        vec![profile::DEFAULT.to_string()]
    } else {
        o.profiles.clone()
    };
    let profiles: Vec<Profile> = set.select(&names)?.into_iter().cloned().collect();
    let refs: Vec<&Profile> = profiles.iter().collect();
    let confs = profile::merged_confs(&refs);
    let drivers = profile::drivers(&confs)?;
    let kernel = modules::resolve(o.kver.as_deref(), o.kmoddir.as_deref())?;
    let arch = Arch::or_host(None)?;
    let host = host::distro(Path::new("/"));
    let agent = match &o.agent {
        None => None,
        Some(req) => {
            if req.kernel_modules.is_some() {
                return Err(refused(
                    "--kernel-modules copies modules into a distro rootfs; with --method dracut \
                     give the kernel with --kver V [--kmoddir DIR] and dracut adds its modules",
                ));
            }
            if req.prune_units {
                return Err(refused(
                    "--prune-units prunes a distro's units; with --method dracut only the units \
                     of the selected dracut modules are there to begin with",
                ));
            }
            let mut spec = req.spec(arch, o.init)?;
            spec.build_method = BuildMethod::Dracut;
            spec.distro = Some(host.clone());
            spec.default_packages = names.clone();
            spec.source_date_epoch = o.source_date_epoch;
            let agent = provision::load_agent(&spec)?;
            Some((spec, agent))
        }
    };
    // A dynamic agent whose libraries the host lacks fails here, before any work.
    let libraries = match agent.as_ref().and_then(|(_, a)| a.bytes()) {
        Some(b) => Some(provision::libs::closure(b, arch, Path::new("/"))?),
        None => None,
    };
    let depmod = kernel.as_ref().is_some_and(modules::needs_depmod);
    crate::image::fs::check_tools(&run::tools(depmod))?;
    let dracut = crate::image::fs::find_tool("dracut").context("dracut vanished")?;
    Ok(Prepared {
        profiles,
        confs,
        drivers,
        kernel,
        dracut,
        agent,
        libraries,
        arch,
        host,
        source_date_epoch: o.source_date_epoch,
    })
}

/// What a dracut build did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub profiles: Vec<String>,
    pub kver: Option<String>,
    /// Modules listed in kata-modules.conf (loaded at boot).
    pub drivers: Vec<String>,
    /// The agent, where it is and its digest (None without an agent).
    pub agent: Option<(String, String)>,
    /// Libraries added for a dynamically linked agent (guest paths).
    pub libraries: Vec<PathBuf>,
    /// Host packages dracut took files from.
    pub host_packages: usize,
    pub members: usize,
    pub dracut_time: Duration,
    pub warnings: Vec<String>,
}

/// `osbuilder initrd --method dracut`: the initrd at `output`, written by osbuilder's
/// packer with `compression`.
pub fn build_initrd(
    o: &Options,
    output: &Path,
    compression: Compression,
    level: Option<u32>,
) -> Result<(Report, crate::initrd::Packed)> {
    dracut_initrd(o, output, compression, level).map_err(|e| {
        crate::error::explain_disk_full(e, &crate::output::folder_of(output), "the initrd")
    })
}

fn dracut_initrd(
    o: &Options,
    output: &Path,
    compression: Compression,
    level: Option<u32>,
) -> Result<(Report, crate::initrd::Packed)> {
    let level = crate::initrd::check_level(compression, level)?;
    let p = prepare(o)?;
    let work = crate::image::WorkDir::new(output)?;
    let root = work.0.join("root");
    std::fs::create_dir(&root)?;
    let (mtree, _, report) = assemble(&p, &work.0, &root)?;
    let tree = Tree::scan(
        &root,
        &ScanOptions {
            metadata: Some(mtree),
            all_root: false,
            clamp_mtime: p.source_date_epoch,
        },
    )?;
    let packed = crate::initrd::pack(&tree, None, output, compression, level)?;
    drop(work);
    Ok((report, packed))
}

/// `osbuilder rootfs --method dracut`: dracut's tree as a rootfs directory at `output`,
/// with its metadata and package record beside it. `force`: replace a folder osbuilder
/// did not make (see [`crate::output::check_destination`]).
pub fn build_rootfs(o: &Options, output: &Path, force: bool) -> Result<Report> {
    crate::output::check_destination(output, DirKind::Rootfs, force)?;
    let p = prepare(o)?;
    let staged = StagedDir::create(output, DirKind::Rootfs, force)?;
    let work = crate::image::WorkDir::new(staged.dest())?;
    let (mtree, record, report) = assemble(&p, &work.0, staged.path())?;
    drop(work);
    let dest = staged.dest().to_path_buf();
    let sidecars = vec![
        mtree_sidecar(&mtree, &dest)?,
        record_sidecar(&record, &dest)?,
    ];
    staged.commit(sidecars)?;
    Ok(report)
}

/// `osbuilder rootfs --from-initrd FILE`: an existing initrd (compressed or not) unpacked
/// into a rootfs directory, with its metadata beside it.
pub fn rootfs_from_initrd(
    initrd: &Path,
    output: &Path,
    force: bool,
) -> Result<crate::initrd::unpack::Unpacked> {
    if !initrd.is_file() {
        return Err(refused(format!(
            "--from-initrd {}: no such file",
            initrd.display()
        )));
    }
    let staged = StagedDir::create(output, DirKind::Rootfs, force)?;
    let mut ex = Extractor::new(staged.path(), ExtractOptions::default())?;
    let un = crate::initrd::unpack::unpack_file(initrd, &mut ex)?;
    let mtree = ex.finish()?;
    let dest = staged.dest().to_path_buf();
    staged.commit(vec![mtree_sidecar(&mtree, &dest)?])?;
    Ok(un)
}

/// The whole method up to a finished tree at `dest` (an empty directory): overlay, dracut,
/// unpack, fix-ups, checks, manifest. Returns the tree's metadata and package record.
fn assemble(p: &Prepared, work: &Path, dest: &Path) -> Result<(Mtree, PackageRecord, Report)> {
    let mut report = Report {
        profiles: p.profiles.iter().map(|p| p.name.clone()).collect(),
        kver: p.kernel.as_ref().map(|k| k.kver.clone()),
        ..Default::default()
    };
    let mtime = p.source_date_epoch.unwrap_or_else(now);

    // 1. The overlay: provisioning on an empty tree.
    let overlay = work.join("overlay");
    std::fs::create_dir(&overlay)?;
    let mut ex = Extractor::new(&overlay, ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    let mut provisioned = None;
    if let Some((spec, agent)) = &p.agent {
        let r = provision::apply(&mut ex, spec, agent.clone(), None)?;
        let libraries = match &p.libraries {
            Some(l) => l.clone(),
            None => provision::libs::closure(&r.agent_bytes, p.arch, Path::new("/"))?,
        };
        for lib in libraries {
            let mut f = std::fs::File::open(&lib.source)
                .with_context(|| format!("reading {}", lib.source.display()))?;
            let rel = lib.path.strip_prefix("/").unwrap_or(&lib.path);
            ex.write_file(
                rel.as_os_str().as_encoded_bytes(),
                &mut f,
                Attrs::root(0o755, mtime),
            )?;
            report.libraries.push(lib.path);
        }
        report.warnings.extend(r.warnings.iter().cloned());
        report.agent = Some((r.agent_path.clone(), r.agent_sha256.clone()));
        provisioned = Some(r);
    }
    if p.kernel.is_some() && !p.drivers.is_empty() {
        let list: String = p.drivers.iter().map(|d| format!("{d}\n")).collect();
        ex.write_file(
            MODULES_LOAD_CONF.as_bytes(),
            &mut Cursor::new(list),
            Attrs::root(0o644, mtime),
        )?;
        report.drivers = p.drivers.clone();
    }
    for prof in &p.profiles {
        for (path, bytes) in &prof.include {
            ex.write_file(
                path.as_bytes(),
                &mut Cursor::new(bytes),
                Attrs::root(profile::include_mode(bytes), mtime),
            )?;
        }
    }
    let overlay_mtree = ex.finish()?;

    // 2. dracut.
    run::write_confdir(&p.confs, &work.join("conf"))?;
    std::fs::create_dir(work.join("tmp"))?;
    let kmoddir = match &p.kernel {
        Some(k) => {
            let staged = modules::stage(k, &work.join("modules"))?;
            Some(
                staged
                    .strip_prefix(work)
                    .expect("staged in the work folder")
                    .to_string_lossy()
                    .into_owned(),
            )
        }
        None => None,
    };
    let started = Instant::now();
    let warnings = run::dracut(&run::Invocation {
        dracut: p.dracut.clone(),
        work,
        confdir: "conf",
        tmpdir: "tmp",
        output: "dracut.cpio",
        kernel: p
            .kernel
            .as_ref()
            .map(|k| k.kver.as_str())
            .zip(kmoddir.as_deref()),
        source_date_epoch: p.source_date_epoch,
    })?;
    report.dracut_time = started.elapsed();
    report.warnings.extend(warnings);

    // 3. dracut's archive, read back natively.
    let mut ex = Extractor::new(dest, ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    let un = crate::initrd::unpack::unpack_file(&work.join("dracut.cpio"), &mut ex)
        .context("reading dracut's initrd")?;
    report.members = un.members;
    add_device_nodes(&mut ex, mtime)?;

    if !ex.privileged() {
        restore_setid_bits(&mut ex, dest)?;
    }
    merge(&overlay, overlay_mtree, &mut ex).context("adding the overlay to dracut's tree")?;

    // 4. What dracut took from the host, for the record and the SBOM.
    let files = regular_files(dest)?;
    let packages = match host::Dpkg::load(Path::new("/var/lib/dpkg"))? {
        Some(db) => db.owners(files.iter().map(Vec::as_slice)),
        None => Vec::new(),
    };
    report.host_packages = packages.len();
    if let Some(r) = &provisioned {
        if let Some(m) = &r.manifest {
            let mut m = m.clone();
            m.resolved = packages.clone();
            provision::write_manifest(&mut ex, &m)?;
        }
    }
    let mtree = ex.finish()?;

    // 5. Kata's checks on the result.
    let tree = Tree::scan(
        dest,
        &ScanOptions {
            metadata: Some(mtree.clone()),
            ..Default::default()
        },
    )?;
    match (&p.agent, &provisioned) {
        (Some((spec, _)), Some(r)) => provision::check_init(&tree, spec.init, &r.agent_bytes)
            .context("checking dracut's result")?,
        _ => check_boot_init(&tree)?,
    }
    let record = PackageRecord {
        schema: 1,
        distro: p.host.0.clone(),
        version: p.host.1.clone(),
        arch: p.arch.debian().to_string(),
        init: match &p.agent {
            Some((spec, _)) => spec.init.name().to_string(),
            None => "none".to_string(),
        },
        format: (!packages.is_empty()).then_some(crate::distro::PackageFormat::Deb),
        trust: Vec::new(),
        mirrors: Vec::new(),
        packages,
        excluded: None,
    };
    Ok((mtree, record, report))
}

/// The device nodes the kernel needs, always written, also over dracut's own (as root
/// outside a container dracut makes them, with its umask's modes): so a build as root and
/// one as any user agree. As root they replace what is on disk; unprivileged they go to the
/// metadata.
fn add_device_nodes(ex: &mut Extractor, mtime: i64) -> Result<()> {
    for (path, major, minor, mode) in DEVICE_NODES {
        ex.special(
            path.as_bytes(),
            MType::Char,
            (major, minor),
            Attrs::root(mode, mtime),
        )?;
    }
    Ok(())
}

/// dracut run unprivileged copies files with cp, which drops setuid/setgid bits when it
/// cannot keep the owner (dracut as root keeps both). Give back the bits of root-owned host
/// files to their copies (same path, same size), so both builds give the same archive.
fn restore_setid_bits(ex: &mut Extractor, dest: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let fixes: Vec<(Vec<u8>, u32)> = ex
        .mtree_mut()
        .iter()
        .filter(|(_, e)| e.kind == Some(MType::File) && e.mode.is_some_and(|m| m & 0o6000 == 0))
        .filter_map(|(path, e)| {
            let host = std::fs::metadata(Path::new("/").join(crate::tree::os_path(path))).ok()?;
            let copy = std::fs::symlink_metadata(dest.join(crate::tree::os_path(path))).ok()?;
            let bits = host.mode() & 0o6000;
            (host.is_file()
                && host.uid() == 0
                && host.gid() == 0
                && bits != 0
                && host.len() == copy.len())
            .then(|| (path.to_vec(), e.mode.unwrap_or(0) | bits))
        })
        .collect();
    for (path, mode) in fixes {
        ex.mtree_mut().set(
            &path,
            crate::tree::MEntry {
                mode: Some(mode),
                ..Default::default()
            },
        );
    }
    Ok(())
}

/// Copy the overlay tree (with its metadata) onto the tree `ex` writes: directories that
/// exist stay as they are, anything else is replaced, never written through a symlink.
fn merge(overlay: &Path, mtree: Mtree, ex: &mut Extractor) -> Result<()> {
    let tree = Tree::scan(
        overlay,
        &ScanOptions {
            metadata: Some(mtree),
            ..Default::default()
        },
    )?;
    for e in tree.entries.iter().filter(|e| !e.path.is_empty()) {
        let a = Attrs {
            mode: e.perm,
            uid: e.uid,
            gid: e.gid,
            mtime: e.mtime,
        };
        match &e.kind {
            Kind::Dir => {
                ex.create_dir(&e.path, a)?;
            }
            Kind::File { source, .. } => {
                let mut f = std::fs::File::open(source)
                    .with_context(|| format!("reading {}", source.display()))?;
                ex.write_file(&e.path, &mut f, a)?;
            }
            Kind::Symlink { target } => {
                ex.symlink(&e.path, target, a)?;
            }
            Kind::CharDev { major, minor } => {
                ex.special(&e.path, MType::Char, (*major, *minor), a)?;
            }
            Kind::BlockDev { major, minor } => {
                ex.special(&e.path, MType::Block, (*major, *minor), a)?;
            }
            Kind::Fifo => {
                ex.special(&e.path, MType::Fifo, (0, 0), a)?;
            }
            Kind::Socket => {}
        }
    }
    Ok(())
}

/// Without an agent the initrd must still start something: `/init` (a profile's include,
/// e.g. image-boot's) or dracut's own.
fn check_boot_init(tree: &Tree) -> Result<()> {
    match tree.get(b"init") {
        Some(e) if matches!(e.kind, Kind::Symlink { .. }) => Ok(()),
        Some(e) if matches!(e.kind, Kind::File { .. }) && e.perm & 0o111 != 0 => Ok(()),
        _ => bail!(
            "dracut's initrd has no executable /init and no agent was asked for: add a profile \
             that provides one (image-boot), or give an agent"
        ),
    }
}

/// Paths (relative, sorted) of the regular files under `root`.
fn regular_files(root: &Path) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let e = e?;
            let ft = e.file_type()?;
            let r = rel.join(e.file_name());
            if ft.is_dir() {
                stack.push(r);
            } else if ft.is_file() {
                out.push(r.into_os_string().into_encoded_bytes());
            }
        }
    }
    out.sort();
    Ok(out)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initrd::newc::{Header, NewcWriter};

    /// What dracut as root outside a container writes: the nodes with its umask's modes
    /// (0644), console included.
    fn dracut_as_root() -> Vec<u8> {
        let mut w = NewcWriter::new(Vec::new());
        let mut ino = 1;
        let mut member = |name: &[u8], mode: u32, dev: (u32, u32)| {
            let h = Header {
                ino,
                mode,
                nlink: 1,
                mtime: 1_700_000_000,
                rdev_major: dev.0,
                rdev_minor: dev.1,
                ..Default::default()
            };
            ino += 1;
            w.header(&h, name).unwrap();
            w.end_data().unwrap();
        };
        member(b"dev", 0o40755, (0, 0));
        for (path, major, minor, _) in DEVICE_NODES {
            member(path.as_bytes(), 0o20644, (major, minor));
        }
        w.finish().unwrap()
    }

    /// Unpack `archive`, add the nodes, and give back each node's (type bits | mode,
    /// major, minor, uid): from the disk as root, from the metadata otherwise.
    fn nodes_after(archive: &[u8], privileged: bool) -> Vec<(u32, u32, u32, u32)> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let mut ex = Extractor::new(
            d.path(),
            ExtractOptions {
                privileged,
                ..Default::default()
            },
        )
        .unwrap();
        crate::initrd::unpack::unpack(archive, &mut ex).unwrap();
        add_device_nodes(&mut ex, 1_700_000_000).unwrap();
        let mtree = ex.finish().unwrap();
        DEVICE_NODES
            .iter()
            .map(|(path, ..)| {
                if privileged {
                    let m = std::fs::symlink_metadata(d.path().join(path)).unwrap();
                    let rdev = m.rdev();
                    (
                        m.permissions().mode(),
                        rustix::fs::major(rdev),
                        rustix::fs::minor(rdev),
                        m.uid(),
                    )
                } else {
                    assert!(!d.path().join(path).exists(), "{path} on disk unprivileged");
                    let e = mtree.get(path.as_bytes()).unwrap();
                    assert_eq!(e.kind, Some(MType::Char), "{path}");
                    let (major, minor) = e.device.unwrap();
                    (0o20000 | e.mode.unwrap(), major, minor, e.uid.unwrap())
                }
            })
            .collect()
    }

    fn wanted() -> Vec<(u32, u32, u32, u32)> {
        DEVICE_NODES
            .iter()
            .map(|&(_, major, minor, mode)| (0o20000 | mode, major, minor, 0))
            .collect()
    }

    #[test]
    fn device_nodes_get_fixed_modes_over_dracuts_own_unprivileged() {
        assert_eq!(nodes_after(&dracut_as_root(), false), wanted());
        let empty = NewcWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(nodes_after(&empty, false), wanted());
    }

    #[test]
    fn device_nodes_replace_dracuts_own_on_disk_as_root() {
        if !rustix::process::geteuid().is_root() {
            // mknod needs root: under CI that is a failure, as in tests/common's needs::root.
            assert!(
                std::env::var_os("CI").is_none_or(|v| v != "true"),
                "this test needs root (CI=true)"
            );
            eprintln!("skipped: needs root");
            return;
        }
        assert_eq!(nodes_after(&dracut_as_root(), true), wanted());
        let empty = NewcWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(nodes_after(&empty, true), wanted());
    }
}
