//! `osbuilder image`: a rootfs (plus its metadata) → a bootable disk image, Kata-style.
//!
//! Plan, then write once: the filesystem size is computed from the tree (size.rs), the
//! layout from that size (layout.rs); the filesystem is written straight into its
//! partition inside the output file (fs/), then the partition table (mbr.rs / gpt.rs),
//! the DAX header (dax.rs) and the dm-verity tree (verity.rs) are written in Rust. The
//! output appears under its name only when complete.

pub mod dax;
pub mod fs;
pub mod gpt;
pub mod layout;
pub mod mbr;
pub mod size;
pub mod verity;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::arch::Arch;
use crate::output::AtomicFile;
use crate::tree::{ScanOptions, Tree};
use fs::FsType;
use gpt::{GptPartition, Guid};
use layout::{Layout, Request, Table};
use mbr::{MbrPartition, SECTOR};
use size::MIB;
pub use verity::Verity;

/// Kata's default image name.
pub const DEFAULT_OUTPUT: &str = "kata-containers.img";
/// Kata's root hash file, written beside the image for --measured.
pub const ROOT_HASH_FILE: &str = "root_hash.txt";
/// With the DAX header the image is exposed to the guest as an NVDIMM, whose size Kata
/// keeps a multiple of the 128 MiB memory section so the guest can hotplug it.
pub const DAX_ALIGN_MB: u64 = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub rootfs: PathBuf,
    pub output: PathBuf,
    pub fs: FsType,
    pub table: Table,
    pub dax: bool,
    pub measured: bool,
    pub format: Format,
    pub size_mb: Option<u64>,
    pub free_mb: u64,
    /// None: 128 with the DAX header, 1 without.
    pub align_mb: Option<u64>,
    pub block_size: u32,
    pub metadata: Option<PathBuf>,
    /// None: derived from the content (tree, SOURCE_DATE_EPOCH, options; see
    /// `default_seed`), or random without SOURCE_DATE_EPOCH.
    pub seed: Option<String>,
    pub arch: Arch,
    pub source_date_epoch: Option<i64>,
    pub root_hash_file: Option<PathBuf>,
    pub skip_rootfs_check: bool,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub layout: Layout,
    pub entries: usize,
    pub content_bytes: u64,
    pub verity: Option<Verity>,
    pub root_hash_file: Option<PathBuf>,
    pub kernel_params: String,
    pub metadata: Option<PathBuf>,
    pub warnings: Vec<String>,
    pub output_bytes: u64,
}

/// Refuse combinations that cannot work, before any work.
fn validate(o: &Options) -> Result<()> {
    let usage = |m: String| -> Result<()> { Err(crate::error::refused(m)) };
    if o.dax && o.table == Table::Gpt {
        return usage(
            "--table gpt cannot carry the DAX header: the pfn info block at 4 KiB overlaps the \
             GPT entry array. Use --no-dax with --table gpt"
                .into(),
        );
    }
    if ![1024, 2048, 4096].contains(&o.block_size) {
        return usage(format!(
            "--block-size {} must be 1024, 2048 or 4096",
            o.block_size
        ));
    }
    if o.fs != FsType::Ext4 && o.block_size != 4096 {
        return usage(format!("--fs {} uses 4096-byte blocks only", o.fs.name()));
    }
    if o.dax && o.block_size != 4096 {
        return usage("DAX maps pages: it needs --block-size 4096 (or --no-dax)".into());
    }
    if o.fs == FsType::Erofs && o.free_mb > 0 {
        return usage("erofs is read-only: --free-mb has no meaning for it".into());
    }
    if o.size_mb.is_some() && o.free_mb > 0 {
        return usage("give --size-mb or --free-mb, not both".into());
    }
    if o.align_mb == Some(0) {
        return usage("--align-mb must be at least 1".into());
    }
    Ok(())
}

/// Bytes derived from the seed for one purpose.
fn derive(seed: &str, purpose: &str) -> [u8; 32] {
    Sha256::digest(format!("osbuilder:{purpose}:{seed}").as_bytes()).into()
}

/// The seed when `--seed` is not given.
///
/// With SOURCE_DATE_EPOCH: a digest of everything that decides the image's bytes — the
/// tree as packed ([`Tree::digest`]), the epoch, and every packing option — and of
/// nothing else: not the output's name or folder, nor where the rootfs lives. The same
/// inputs give the same image wherever it is written, and a change to any of them gives
/// new UUIDs.
///
/// Without it the image carries the build time in its timestamps anyway, so it is not
/// reproducible; the seed is random then, as mkfs's UUIDs are, so two such images never
/// share filesystem or partition UUIDs.
fn default_seed(o: &Options, tree: &Tree, align: u64) -> Result<String> {
    let Some(epoch) = o.source_date_epoch else {
        use std::io::Read;
        let mut b = [0u8; 16];
        File::open("/dev/urandom")?.read_exact(&mut b)?;
        return Ok(verity::hex(&b));
    };
    let options = format!(
        "fs={} table={:?} dax={} measured={} format={:?} size={:?} free={} align={align} \
         block={} arch={}",
        o.fs.name(),
        o.table,
        o.dax,
        o.measured,
        o.format,
        o.size_mb,
        o.free_mb,
        o.block_size,
        o.arch.name()
    );
    let mut h = Sha256::new();
    h.update(b"osbuilder-image-seed-v1\0");
    h.update(tree.digest()?);
    h.update(epoch.to_le_bytes());
    h.update(options.as_bytes());
    Ok(verity::hex(&h.finalize()))
}

/// A private scratch folder beside the output (same filesystem, so copies can reflink),
/// removed on drop and on interruption.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(output: &Path) -> Result<WorkDir> {
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = output.file_name().unwrap_or_default();
        crate::output::sweep::leftovers(&dir, name);
        let p = dir.join(crate::output::temp_name(name, "work"));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p)
            .with_context(|| format!("creating scratch folder {}", p.display()))?;
        // Absolute, since tools run from other folders (erofs staging) get these paths; tracked
        // under that name so the interrupt handler and Drop agree.
        let p = std::fs::canonicalize(&p)?;
        crate::output::track(&p);
        Ok(WorkDir(p))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        crate::output::untrack(&self.0);
    }
}

/// How the root filesystem gets into its partition.
enum Plan {
    /// Written in place by mkfs.ext4 at the partition offset.
    Ext4(fs::ext4::Ext4),
    /// Built beforehand into a file in the scratch folder, copied in.
    Prebuilt(PathBuf),
    /// Built at the partition size into a scratch file, then copied in.
    Xfs(fs::xfs::Xfs),
}

pub fn build(o: &Options) -> Result<Report> {
    build_image(o).map_err(|e| {
        crate::error::explain_disk_full(e, &crate::output::folder_of(&o.output), "the image")
    })
}

fn build_image(o: &Options) -> Result<Report> {
    validate(o)?;
    let mut tools: Vec<(&str, &str)> = o.fs.tools().to_vec();
    if o.format == Format::Qcow2 {
        tools.push(("qemu-img", "qemu-utils"));
    }
    fs::check_tools(&tools)?;

    let (metadata, metadata_path) =
        crate::tree::load_metadata_for(&o.rootfs, o.metadata.as_deref())?;
    let tree = Tree::scan(
        &o.rootfs,
        &ScanOptions {
            metadata,
            all_root: false,
            clamp_mtime: o.source_date_epoch,
        },
    )?;
    let tree = unify_hard_links(tree);
    if !o.skip_rootfs_check {
        check_rootfs(&tree)?;
    }
    let now = match o.source_date_epoch {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64,
    };
    let align = o.align_mb.unwrap_or(if o.dax { DAX_ALIGN_MB } else { 1 }) * MIB;
    let seed = match &o.seed {
        Some(s) => s.clone(),
        None => default_seed(o, &tree, align)?,
    };
    let bs = o.block_size as u64;
    let free = o.free_mb * MIB;
    let mut warnings = Vec::new();

    // The output is created first so an unwritable destination fails before any work.
    let out = AtomicFile::create(&o.output)?;
    let work = WorkDir::new(&o.output)?;
    let fs_uuid = gpt::derive_uuid_bytes(&seed, "filesystem");

    let (plan, root_min) = match o.fs {
        FsType::Ext4 => {
            let need = size::ext4_need(&tree, bs);
            // room for one file per 16 KiB of requested free space
            let inodes = need.inodes + free / 16384;
            let blocks = size::ext4_min_blocks(&need, inodes, bs);
            let e = fs::ext4::Ext4 {
                block_size: bs,
                inodes,
                need,
                uuid: gpt::uuid_text(&fs_uuid),
                hash_seed: gpt::uuid_text(&gpt::derive_uuid_bytes(&seed, "ext4-hash-seed")),
                now,
                debugfs_only: false,
            };
            (Plan::Ext4(e), blocks * bs)
        }
        FsType::Erofs => {
            let img = work.0.join("root.erofs");
            fs::erofs::build(&tree, &img, &work.0, &gpt::uuid_text(&fs_uuid), now)?;
            let len = std::fs::metadata(&img)?.len();
            (Plan::Prebuilt(img), len)
        }
        FsType::Xfs => {
            let x = fs::xfs::Xfs::plan(&tree, free, gpt::uuid_text(&fs_uuid), now);
            let min = x.min_bytes;
            (Plan::Xfs(x), min)
        }
    };

    let layout = Layout::compute(&Request {
        table: o.table,
        dax: o.dax,
        measured: o.measured,
        root_min,
        free,
        align,
        size: o.size_mb.map(|m| m * MIB),
        verity_block: 4096,
    })?;

    // Raw bytes go straight into the output, or into a scratch file for qcow2.
    let raw_path = match o.format {
        Format::Raw => out.temp_path().to_path_buf(),
        Format::Qcow2 => work.0.join("image.raw"),
    };
    let raw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&raw_path)?;
    raw.set_len(layout.total)
        .with_context(|| format!("sizing {}", raw_path.display()))?;

    match plan {
        Plan::Ext4(e) => {
            let Some(geometry) = size::ext4_fits(layout.root.len, &e.need, e.inodes, bs) else {
                bail!(
                    "the root partition ({} MiB) cannot hold this rootfs as ext4; \
                     give a larger --size-mb",
                    layout.root.len / MIB
                );
            };
            // Space beyond the minimum (alignment, --size-mb) gets inodes too, at
            // mke2fs's usual one per 16 KiB, using at most half of the spare blocks
            // for inode tables so the tree still fits.
            let spare = geometry.free - e.need.blocks.max(2 * e.need.journal_blocks);
            let extra = (layout.root.len / 16384)
                .saturating_sub(e.inodes)
                .min(spare / 2 * bs / size::INODE_SIZE);
            let geometry =
                size::ext4_fits(layout.root.len, &e.need, e.inodes + extra, bs).unwrap_or(geometry);
            // the count that makes mke2fs create at least that many in this geometry
            let e = fs::ext4::Ext4 {
                inodes: geometry.inodes,
                ..e
            };
            warnings.extend(e.make(
                &tree,
                &raw_path,
                layout.root.start,
                layout.root.len,
                &work.0,
            )?)
        }
        Plan::Prebuilt(img) => copy_into(&img, &raw, layout.root.start)?,
        Plan::Xfs(x) => {
            let img = work.0.join("root.xfs");
            warnings.extend(x.make(&tree, &img, layout.root.len, &work.0)?);
            copy_into(&img, &raw, layout.root.start)?;
        }
    }

    let verity = match layout.hash {
        Some(h) => {
            let salt = derive(&seed, "verity-salt");
            Some(verity::build(
                &raw,
                layout.root.start,
                layout.root.len / 4096,
                h.start,
                4096,
                &salt,
            )?)
        }
        None => None,
    };
    write_tables(&raw, &layout, o, &seed, verity.as_ref())?;
    raw.sync_all()?;
    drop(raw);

    if o.format == Format::Qcow2 {
        let mut cmd = fs::tool("qemu-img");
        cmd.args(["convert", "-q", "-f", "raw", "-O", "qcow2", "-o"])
            .arg("compat=1.1,cluster_size=65536,lazy_refcounts=off,preallocation=off")
            .arg(&raw_path)
            .arg(out.temp_path());
        fs::run_tool(&mut cmd, "qemu-img convert")?;
    }
    let output_bytes = std::fs::metadata(out.temp_path())?.len();

    // The root hash file is committed with the image: both or neither.
    let root_hash_file = match &verity {
        Some(v) => {
            let p = o.root_hash_file.clone().unwrap_or_else(|| {
                o.output
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join(ROOT_HASH_FILE)
            });
            let f = AtomicFile::create(&p)?;
            f.handle()?.write_all_at(v.root_hash_line().as_bytes(), 0)?;
            Some((f, p))
        }
        None => None,
    };
    out.commit()?;
    let root_hash_file = match root_hash_file {
        Some((f, p)) => {
            f.commit()?;
            Some(p)
        }
        None => None,
    };
    drop(work);

    let kernel_params = kernel_params(o, verity.as_ref());
    Ok(Report {
        layout,
        entries: tree.entries.len(),
        content_bytes: tree.content_bytes(),
        verity,
        root_hash_file,
        kernel_params,
        metadata: metadata_path,
        warnings,
        output_bytes,
    })
}

/// Names of one hard-linked file share one inode, so they must agree on its owner,
/// mode and time: the first name in tree order decides (metadata usually names that one).
fn unify_hard_links(mut tree: Tree) -> Tree {
    let mut first: std::collections::HashMap<u32, (u32, u32, u32, i64)> = Default::default();
    for e in &mut tree.entries {
        if let Some(g) = e.link_group {
            let (uid, gid, perm, mtime) =
                *first.entry(g).or_insert((e.uid, e.gid, e.perm, e.mtime));
            (e.uid, e.gid, e.perm, e.mtime) = (uid, gid, perm, mtime);
        }
    }
    tree
}

/// Kata's check: the image must be able to start, so /sbin/init must exist
/// (an executable or a symlink).
fn check_rootfs(tree: &Tree) -> Result<()> {
    match tree.lookup(b"sbin/init") {
        Some(e) if matches!(e.kind, crate::tree::Kind::Symlink { .. }) => Ok(()),
        Some(e) if matches!(e.kind, crate::tree::Kind::File { .. }) && e.perm & 0o111 != 0 => {
            Ok(())
        }
        Some(_) => bail!(
            "{}/sbin/init is not executable; the guest could not start. \
             Fix the rootfs, or pass --skip-rootfs-check for a data-only image",
            tree.root.display()
        ),
        None => bail!(
            "{} has no /sbin/init; the guest could not start. Install an init (systemd, or the \
             agent as init), or pass --skip-rootfs-check for a data-only image",
            tree.root.display()
        ),
    }
}

/// Copy a filesystem image into the output at `offset`, data extents only (holes stay
/// holes), with copy_file_range so the kernel can share or copy without user space.
fn copy_into(src: &Path, dst: &File, offset: u64) -> Result<()> {
    use rustix::fs::{SeekFrom, copy_file_range, seek};
    let f = File::open(src)?;
    let len = f.metadata()?.len();
    let failed = |e: rustix::io::Errno| {
        anyhow::Error::from(std::io::Error::from(e))
            .context(format!("copying {} into the image", crate::show::path(src)))
    };
    let mut pos = 0u64;
    while pos < len {
        let data = match seek(&f, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(rustix::io::Errno::NXIO) => break, // only a hole remains
            Err(e) => return Err(failed(e)),
        };
        let end = seek(&f, SeekFrom::Hole(data)).unwrap_or(len).min(len);
        let mut off_in = data;
        let mut off_out = offset + data;
        while off_in < end {
            let want = (end - off_in) as usize;
            let n = copy_file_range(&f, Some(&mut off_in), dst, Some(&mut off_out), want)
                .map_err(failed)?;
            if n == 0 {
                bail!(
                    "copying {} into the image: it ended early, at byte {off_in} of {len}",
                    crate::show::path(src)
                );
            }
        }
        pos = end;
    }
    Ok(())
}

fn write_tables(
    f: &File,
    l: &Layout,
    o: &Options,
    seed: &str,
    verity: Option<&Verity>,
) -> Result<()> {
    let sectors = |bytes: u64| bytes / SECTOR;
    match l.table {
        Table::Mbr => {
            let sig = u32::from_le_bytes(derive(seed, "mbr-disk-signature")[..4].try_into()?);
            // Partitions relative to a disk starting at `base`.
            let parts = |base: u64| -> Vec<MbrPartition> {
                let mut v = vec![MbrPartition {
                    bootable: o.measured, // as Kata's measured layout sets it
                    kind: mbr::TYPE_LINUX,
                    start_lba: sectors(l.root.start - base),
                    sectors: sectors(l.root.len),
                }];
                if let Some(h) = l.hash {
                    v.push(MbrPartition {
                        bootable: false,
                        kind: mbr::TYPE_LINUX,
                        start_lba: sectors(h.start - base),
                        sectors: sectors(h.len),
                    });
                }
                v
            };
            // The disk the filesystem belongs to (Kata's original image).
            f.write_all_at(&mbr::mbr(sig, &parts(l.base))?, l.base)?;
            if l.base > 0 {
                // DAX header: MBR#1 describes the same partitions, seen from offset 0
                // (root at 3 MiB), then the pfn info block at 4 KiB.
                f.write_all_at(&mbr::mbr(sig, &parts(0))?, 0)?;
                f.write_all_at(&dax::pfn_info_block(), dax::INFO_OFFSET)?;
            }
        }
        Table::Gpt => {
            let total = sectors(l.total);
            // With dm-verity, the Discoverable Partitions Specification names the
            // partitions by the root hash (first and last 128 bits).
            let (root_guid, hash_guid) = match verity {
                Some(v) => (
                    Guid::from_text_order(v.root_hash[..16].try_into()?),
                    Guid::from_text_order(v.root_hash[16..].try_into()?),
                ),
                None => (
                    Guid::derive(seed, "root-partition"),
                    Guid::derive(seed, "verity-partition"),
                ),
            };
            let arch = o.arch.name().replace('_', "-");
            let mut parts = vec![GptPartition {
                type_guid: Guid::parse(o.arch.dps_root_guid())?,
                part_guid: root_guid,
                first_lba: sectors(l.root.start),
                last_lba: sectors(l.root.end()) - 1,
                name: format!("root-{arch}"),
            }];
            if let Some(h) = l.hash {
                parts.push(GptPartition {
                    type_guid: Guid::parse(o.arch.dps_root_verity_guid())?,
                    part_guid: hash_guid,
                    first_lba: sectors(h.start),
                    last_lba: sectors(h.end()) - 1,
                    name: format!("root-{arch}-verity"),
                });
            }
            let t = gpt::build(total, Guid::derive(seed, "disk"), &parts)?;
            f.write_all_at(&t.head, 0)?;
            f.write_all_at(&t.tail, l.total - t.tail.len() as u64)?;
        }
    }
    Ok(())
}

/// The kernel command line that mounts this image as the root on virtio-blk
/// (/dev/vda). With the DAX header, a guest that sees the image as an NVDIMM uses
/// /dev/pmem0p1 instead (and may add `dax` to rootflags).
fn kernel_params(o: &Options, verity: Option<&Verity>) -> String {
    if let Some(v) = verity {
        return v.kernel_params("/dev/vda1", "/dev/vda2");
    }
    let flags = match o.fs {
        FsType::Ext4 => " rootflags=data=ordered,errors=remount-ro",
        _ => "",
    };
    format!("root=/dev/vda1 rootfstype={}{flags} ro", o.fs.name())
}
