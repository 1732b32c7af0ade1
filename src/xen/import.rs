//! Guest disks for a bundle, from what the user has: meta-virtualization's import handlers
//! (`rootfs_dir`, `qcow2`, `ext4`, `raw`), done without root or fakeroot:
//!
//! - `rootfs_dir`: packed by osbuilder's own image writer as a bare ext4 filesystem (no
//!   partition table, the guest mounts `/dev/xvda`), ownership and device nodes from the
//!   folder's `.mtree`, size computed from the tree or `size_mb`;
//! - `qcow2`: converted to raw by `qemu-img convert` (or kept as qcow2);
//! - `ext4`, `raw`: copied, holes kept.
//!
//! Each result says where the guest finds its root: the whole disk or its first partition
//! holding a known filesystem, read from the image itself.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::spec::{DiskSpec, DiskType};
use crate::arch::Arch;

/// A disk in the bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportedDisk {
    /// raw or qcow2.
    pub format: &'static str,
    /// 1-based partition holding the root filesystem; None: the whole disk.
    pub root_partition: Option<u32>,
}

/// The file name a guest's disk gets in the bundle's images/ folder.
pub fn disk_file_name(guest: &str, d: &DiskSpec) -> String {
    if d.keep_qcow2 {
        format!("{guest}.qcow2")
    } else {
        format!("{guest}.img")
    }
}

/// Host tools an import of `t` needs.
pub fn tools(t: DiskType, keep_qcow2: bool) -> Vec<(&'static str, &'static str)> {
    match t {
        DiskType::RootfsDir => crate::image::fs::FsType::Ext4.tools().to_vec(),
        DiskType::Qcow2 if !keep_qcow2 => vec![("qemu-img", "qemu-utils")],
        _ => Vec::new(),
    }
}

/// Make the disk of `guest` at `out` from `spec` (paths relative to `base`).
pub fn import(
    guest: &str,
    spec: &DiskSpec,
    base: &Path,
    out: &Path,
    arch: Arch,
    epoch: Option<i64>,
) -> Result<ImportedDisk> {
    let t = spec.disk_type(guest)?;
    let src = base.join(&spec.source);
    let what = || {
        format!(
            "guest {guest}: importing {} disk {}",
            t.name(),
            crate::show::path(&src)
        )
    };
    match t {
        DiskType::RootfsDir => {
            rootfs_dir(&src, out, spec.size_mb, arch, epoch).with_context(what)?;
            Ok(ImportedDisk {
                format: "raw",
                root_partition: None,
            })
        }
        DiskType::Qcow2 => {
            expect_magic(&src, 0, b"QFI\xfb", "a qcow2 image").with_context(what)?;
            if spec.keep_qcow2 {
                copy_sparse(&src, out).with_context(what)?;
                // Partitions inside qcow2 are not read here; Kata's and osbuilder's partitioned
                // images keep root on the first partition.
                return Ok(ImportedDisk {
                    format: "qcow2",
                    root_partition: Some(1),
                });
            }
            let tmp = crate::output::AtomicFile::create(out)?;
            let mut cmd = crate::image::fs::tool("qemu-img");
            cmd.args(["convert", "-q", "-f", "qcow2", "-O", "raw"])
                .arg(&src)
                .arg(tmp.temp_path());
            crate::image::fs::run_tool(&mut cmd, "qemu-img convert").with_context(what)?;
            tmp.commit()?;
            Ok(ImportedDisk {
                format: "raw",
                root_partition: root_of(out)?,
            })
        }
        DiskType::Ext4 => {
            expect_magic(
                &src,
                1024 + 56,
                &[0x53, 0xef],
                "an ext2/3/4 filesystem image",
            )
            .with_context(what)?;
            copy_sparse(&src, out).with_context(what)?;
            Ok(ImportedDisk {
                format: "raw",
                root_partition: None,
            })
        }
        DiskType::Raw => {
            copy_sparse(&src, out).with_context(what)?;
            Ok(ImportedDisk {
                format: "raw",
                root_partition: root_of(out)?,
            })
        }
    }
}

/// A rootfs folder as a bare ext4 image, with osbuilder's image writer.
fn rootfs_dir(
    src: &Path,
    out: &Path,
    size_mb: Option<u64>,
    arch: Arch,
    epoch: Option<i64>,
) -> Result<()> {
    use crate::image::{self, Format, Options, fs::FsType, layout::Table};
    image::build(&Options {
        rootfs: src.to_path_buf(),
        output: out.to_path_buf(),
        fs: FsType::Ext4,
        table: Table::None,
        dax: false,
        measured: false,
        format: Format::Raw,
        size_mb,
        free_mb: 0,
        align_mb: Some(1),
        block_size: 4096,
        metadata: None,
        // Derived from SOURCE_DATE_EPOCH and the file name (the guest's): reproducible.
        seed: None,
        arch,
        source_date_epoch: epoch,
        root_hash_file: None,
        // A guest disk may be data only; the guest decides how it boots.
        skip_rootfs_check: true,
        uefi: None,
    })?;
    Ok(())
}

/// Where the root filesystem of a raw image is, as the guest numbers it.
fn root_of(image: &Path) -> Result<Option<u32>> {
    Ok(crate::boot::disk::inspect(image)?.root.partition)
}

fn expect_magic(p: &Path, off: u64, magic: &[u8], what: &str) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).with_context(|| format!("opening {}", crate::show::path(p)))?;
    let mut b = vec![0u8; magic.len()];
    let n = f.read_at(&mut b, off).unwrap_or(0);
    if n != magic.len() || b != magic {
        bail!("{} is not {what}", crate::show::path(p));
    }
    Ok(())
}

/// Copy `src` to `out` atomically, keeping holes.
fn copy_sparse(src: &Path, out: &Path) -> Result<()> {
    let len = std::fs::metadata(src)
        .with_context(|| format!("reading {}", crate::show::path(src)))?
        .len();
    let f = crate::output::AtomicFile::create(out)?;
    let h = f.handle()?;
    h.set_len(len)?;
    crate::image::copy_into(src, &h, 0)?;
    f.commit()
}
