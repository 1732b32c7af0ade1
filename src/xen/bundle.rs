//! `osbuilder xen bundle SPEC -o DIR`: guests (built here or imported) → a Xen guest
//! bundle, meta-virtualization's layout with checksums:
//!
//! ```text
//! DIR/images/<guest>.img            the guest's disk (raw; <guest>.qcow2 when kept)
//! DIR/images/<guest>-vmlinuz        its kernel (none for kernel = "host" or "none")
//! DIR/images/<guest>-initrd.img     its ramdisk
//! DIR/configs/<guest>.cfg           its xl configuration, paths as installed in dom0
//! DIR/manifest.json                 guests, and every file with its size and sha256
//! DIR/SHA256SUMS                    the same sums, for `sha256sum -c`
//! ```
//!
//! The folder appears atomically. Same inputs and SOURCE_DATE_EPOCH → same bytes, so the
//! manifest of two runs is the same.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::import::{self, ImportedDisk};
use super::spec::{BundleSpec, GuestType, KernelSource};
use super::xl::{self, XlDisk, XlGuest};
use crate::arch::Arch;
use crate::output::{DirKind, StagedDir};

/// What marks a folder as a bundle osbuilder made (it may then be replaced).
pub const KIND: DirKind = DirKind::Marked("xen-bundle");
/// The manifest's `format`.
pub const FORMAT: &str = "osbuilder-xen-bundle/1";
pub const MANIFEST: &str = "manifest.json";
pub const SUMS: &str = "SHA256SUMS";
/// Where dom0 keeps guest images, configurations and autostart links (as xendomains reads).
pub const IMAGES_DIR: &str = "/var/lib/xen/images";
pub const CONFIG_DIR: &str = "/etc/xen";
pub const AUTO_DIR: &str = "/etc/xen/auto";

/// `osbuilder xen bundle`.
#[derive(Clone, Debug)]
pub struct BundleOptions {
    pub spec: PathBuf,
    pub output: PathBuf,
    pub force: bool,
    /// Overrides the spec's `arch`; default: the host's.
    pub arch: Option<Arch>,
}

/// A guest's disk in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestDisk {
    /// In the bundle (`images/<guest>.img`).
    pub file: String,
    pub format: String,
    pub device: String,
    /// The guest's root device when it boots from this disk (`/dev/xvda`, `/dev/xvda1`).
    pub root: String,
    /// How it was made (rootfs_dir, qcow2, ext4, raw).
    pub source_type: String,
}

/// One guest in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestGuest {
    pub name: String,
    /// In the bundle (`configs/<guest>.cfg`).
    pub config: String,
    pub autostart: bool,
    #[serde(rename = "type")]
    pub guest_type: String,
    pub memory: u32,
    pub vcpus: u32,
    /// "file" (in `images/`), "host" (dom0's kernel, copied at install) or "none".
    pub kernel_source: String,
    /// In the bundle, for kernel_source "file".
    pub kernel: Option<String>,
    pub ramdisk: Option<String>,
    pub disk: Option<ManifestDisk>,
}

/// A file of the bundle with its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub osbuilder: String,
    pub arch: Arch,
    pub guests: Vec<ManifestGuest>,
    /// Sorted by path; the manifest itself and SHA256SUMS are not listed.
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// Read and check the manifest of the bundle at `dir`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let p = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&p).map_err(|_| {
            crate::error::refused(format!(
                "{} is not a Xen guest bundle (no {MANIFEST}); make one with `osbuilder xen bundle`",
                crate::show::path(dir)
            ))
        })?;
        let m: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("reading {}", crate::show::path(&p)))?;
        if m.format != FORMAT {
            return Err(crate::error::refused(format!(
                "{} is a bundle of format '{}'; this osbuilder reads '{FORMAT}'",
                crate::show::path(dir),
                m.format
            )));
        }
        Ok(m)
    }

    /// Every file's size and digest, checked against the bundle on disk.
    pub fn verify(&self, dir: &Path) -> Result<()> {
        for f in &self.files {
            let p = dir.join(&f.path);
            let sha = crate::pkg::sha256_file(&p)
                .with_context(|| format!("reading bundle file {}", crate::show::path(&p)))?;
            if sha != f.sha256 {
                anyhow::bail!(
                    "bundle file {} does not match its manifest (sha256 {sha}, manifest {}): the \
                     bundle is damaged; make it again",
                    crate::show::path(&p),
                    f.sha256
                );
            }
        }
        Ok(())
    }
}

/// What a bundle run made.
#[derive(Clone, Debug)]
pub struct Report {
    pub output: PathBuf,
    pub manifest: Manifest,
}

/// Build the bundle.
pub fn bundle(o: &BundleOptions) -> Result<Report> {
    let spec = BundleSpec::load(&o.spec)?;
    let arch = Arch::or_host(o.arch.or(spec.arch))?;
    let base = super::spec::base_of(&o.spec)?;
    spec.validate(arch, &base)?;
    let mut tools = Vec::new();
    for g in &spec.guests {
        if let Some(d) = &g.disk {
            tools.extend(import::tools(d.disk_type(&g.name)?, d.keep_qcow2));
        }
    }
    crate::image::fs::check_tools(&tools)?;
    let epoch = crate::tree::source_date_epoch()?;

    let staged = StagedDir::create(&o.output, KIND, o.force)?;
    let root = staged.path().to_path_buf();
    for d in ["images", "configs"] {
        std::fs::create_dir(root.join(d))
            .with_context(|| format!("creating {}", crate::show::path(&root.join(d))))?;
    }
    let mut guests = Vec::new();
    for g in &spec.guests {
        let n = &g.name;
        let kernel_src = g.kernel_source(&base);
        let (kernel_source, kernel_file, kernel_path) = match &kernel_src {
            KernelSource::File(p) => {
                let f = format!("{n}-vmlinuz");
                copy(p, &root.join("images").join(&f))?;
                (
                    "file",
                    Some(format!("images/{f}")),
                    Some(format!("{IMAGES_DIR}/{f}")),
                )
            }
            KernelSource::Host => ("host", None, Some(format!("{IMAGES_DIR}/{n}-vmlinuz"))),
            KernelSource::None => ("none", None, None),
        };
        let ramdisk = match &g.ramdisk {
            Some(r) => {
                let f = format!("{n}-initrd.img");
                copy(&base.join(r), &root.join("images").join(&f))?;
                Some(f)
            }
            None => None,
        };
        let disk = match &g.disk {
            Some(d) => {
                let f = import::disk_file_name(n, d);
                let ImportedDisk {
                    format,
                    root_partition,
                } = import::import(n, d, &base, &root.join("images").join(&f), arch, epoch)?;
                let rootdev = match root_partition {
                    Some(p) => format!("/dev/{}{p}", d.device),
                    None => format!("/dev/{}", d.device),
                };
                Some((d, f, format, rootdev))
            }
            None => None,
        };
        let xl = XlGuest {
            name: n.clone(),
            guest_type: g.guest_type,
            memory: g.memory,
            vcpus: g.vcpus,
            kernel: kernel_path,
            ramdisk: ramdisk.as_ref().map(|f| format!("{IMAGES_DIR}/{f}")),
            cmdline: (g.guest_type != GuestType::Hvm).then(|| {
                let root = disk.as_ref().map(|(_, _, _, r)| r.as_str());
                let ro = disk.as_ref().is_some_and(|(d, ..)| d.access == "ro");
                xl::cmdline(root, ro, &g.extra)
            }),
            disks: disk
                .iter()
                .map(|(d, f, format, _)| XlDisk {
                    format,
                    vdev: d.device.clone(),
                    access: d.access.clone(),
                    target: format!("{IMAGES_DIR}/{f}"),
                })
                .collect(),
            vifs: g.vif.clone(),
            on_poweroff: g.on_poweroff,
            on_reboot: g.on_reboot,
            on_crash: g.on_crash,
        };
        let cfg = format!("configs/{n}.cfg");
        std::fs::write(root.join(&cfg), xl.render()).with_context(|| format!("writing {cfg}"))?;
        guests.push(ManifestGuest {
            name: n.clone(),
            config: cfg,
            autostart: g.autostart,
            guest_type: g.guest_type.name().into(),
            memory: g.memory,
            vcpus: g.vcpus,
            kernel_source: kernel_source.into(),
            kernel: kernel_file,
            ramdisk: ramdisk.map(|f| format!("images/{f}")),
            disk: disk.map(|(d, f, format, root)| ManifestDisk {
                file: format!("images/{f}"),
                format: format.into(),
                device: d.device.clone(),
                root,
                source_type: d.kind.clone(),
            }),
        });
    }
    let files = list_files(&root)?;
    let manifest = Manifest {
        format: FORMAT.into(),
        osbuilder: env!("CARGO_PKG_VERSION").into(),
        arch,
        guests,
        files,
    };
    let mut json = serde_json::to_string_pretty(&manifest)?;
    json.push('\n');
    std::fs::write(root.join(MANIFEST), json)?;
    let sums: String = manifest
        .files
        .iter()
        .map(|f| format!("{}  {}\n", f.sha256, f.path))
        .collect();
    std::fs::write(root.join(SUMS), sums)?;
    if let Some(t) = epoch {
        settle_times(&root, t)?;
    }
    let output = staged.dest().to_path_buf();
    staged.commit(Vec::new())?;
    Ok(Report { output, manifest })
}

/// Copy a file into the bundle (holes kept).
fn copy(src: &Path, dst: &Path) -> Result<()> {
    let f = std::fs::File::create(dst)
        .with_context(|| format!("creating {}", crate::show::path(dst)))?;
    f.set_len(std::fs::metadata(src)?.len())?;
    crate::image::copy_into(src, &f, 0)
        .with_context(|| format!("copying {} into the bundle", crate::show::path(src)))
}

/// Every file under images/ and configs/, sorted, with size and digest.
fn list_files(root: &Path) -> Result<Vec<ManifestFile>> {
    let mut out = Vec::new();
    for dir in ["configs", "images"] {
        let mut names: Vec<String> = std::fs::read_dir(root.join(dir))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            let rel = format!("{dir}/{n}");
            let p = root.join(&rel);
            out.push(ManifestFile {
                size: std::fs::metadata(&p)?.len(),
                sha256: crate::pkg::sha256_file(&p)?,
                path: rel,
            });
        }
    }
    Ok(out)
}

/// Give every file and folder of the bundle the build timestamp, so an archive of it is
/// reproducible too.
fn settle_times(root: &Path, t: i64) -> Result<()> {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    let mut paths: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .map(|e| e.into_path())
        .collect();
    // Children before their folders, so writing a time does not change a folder's again.
    paths.reverse();
    for p in paths {
        let f = std::fs::File::open(&p)
            .with_context(|| format!("opening {}", crate::show::path(&p)))?;
        f.set_times(std::fs::FileTimes::new().set_modified(time))
            .with_context(|| format!("setting the time of {}", crate::show::path(&p)))?;
    }
    Ok(())
}
