//! Attaching a disk image the way Kata's runtime does, and what the guest kernel then needs.
//!
//! - `--disk virtio-blk`: `root=/dev/vda1`, Kata's ext4 flags (`data=ordered,errors=remount-ro`).
//! - `--disk nvdimm`: the image as an NVDIMM (QEMU memory-backend-file + nvdimm, see
//!   qemu.rs); the DAX header's pfn info block makes `/dev/pmem0` page-mapped, so the root
//!   is `/dev/pmem0p1` with `rootflags=dax,…`.
//! - a measured image (a hash partition after the root and Kata's `root_hash.txt`):
//!   `dm-mod.create=` with the dm-verity table and `root=/dev/dm-0`, read-only, as Kata's
//!   "kernelinit" mode (no DAX through device-mapper).
//! - `--disk nvme` (the default): as before, `root=/dev/nvme0n1p1`.
//!
//! Kata's guest kernel has these drivers built in. A distro kernel (Debian's cloud kernel)
//! has virtio_blk, the NVDIMM drivers and device-mapper as modules, and cannot open
//! `dm-mod.create=` by itself; then the boot gets an initramfs built with the dracut method
//! (profiles image-boot, virtio, nvdimm, verity) from the kernel's modules, cached per
//! kernel: its /init loads the drivers, opens the dm table with dmsetup and mounts the root
//! with the same parameters, then starts the image's init.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::disk::{ImageFormat, ImageInfo};
use super::qemu::DiskBus;
use crate::arch::Arch;
use crate::dracut::profile::ProfileSet;
use crate::error::refused;
use crate::image::Verity;

/// The profiles the boot initramfs is built from.
pub const BOOT_PROFILES: [&str; 4] = ["image-boot", "virtio", "nvdimm", "verity"];

/// How one image is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Kernel command-line words that mount the root.
    pub root: Vec<String>,
    /// Kernel modules the attachment needs (built in, or loaded from an initramfs).
    pub modules: Vec<String>,
    /// The dm-verity parameters, for a measured image.
    pub verity: Option<Verity>,
}

/// The attachment of `image` (inspected as `info`) on `bus`. `root_hash`: Kata's root hash
/// file; None looks for root_hash.txt beside the image when the image has a hash partition.
pub fn plan(
    bus: DiskBus,
    arch: Arch,
    image: &Path,
    info: &ImageInfo,
    root_hash: Option<&Path>,
) -> Result<Attachment> {
    if bus == DiskBus::Nvdimm {
        if arch != Arch::X86_64 {
            return Err(refused(format!(
                "--disk nvdimm needs ACPI (NFIT) to find the NVDIMM, which osbuilder's {arch} \
                 guests boot without; use --disk virtio-blk or nvme"
            )));
        }
        if info.format != ImageFormat::Raw {
            return Err(refused(
                "--disk nvdimm maps the image file into guest memory: it must be a raw image, \
                 not qcow2",
            ));
        }
        if !info.dax_header {
            return Err(refused(format!(
                "{} has no DAX header (built with --no-dax?): as an NVDIMM it would have no \
                 pfn device to mount with DAX. Attach it with --disk virtio-blk or nvme, or \
                 rebuild it with the DAX header",
                image.display()
            )));
        }
    }
    let verity = match (root_hash, info.hash_partition) {
        (Some(f), None) => {
            return Err(refused(format!(
                "--root-hash {} given, but {} has no hash partition after its root (not built \
                 with osbuilder image --measured?)",
                f.display(),
                image.display()
            )));
        }
        (Some(f), Some(_)) => Some(read_root_hash(f)?),
        (None, Some(_)) => {
            let beside = image
                .parent()
                .unwrap_or(Path::new(""))
                .join(crate::image::ROOT_HASH_FILE);
            match beside.is_file() {
                true => Some(read_root_hash(&beside)?),
                false => {
                    return Err(refused(format!(
                        "{} has a partition after its root without a filesystem (a dm-verity \
                         hash tree?) but no {} beside it: give the root hash with --root-hash \
                         FILE, or --append 'root=…' to boot the root partition unverified",
                        image.display(),
                        crate::image::ROOT_HASH_FILE
                    )));
                }
            }
        }
        (None, None) => None,
    };

    let set = ProfileSet::load()?;
    let drivers = |profile: &str| -> Result<Vec<String>> {
        let p = set.select(&[profile.to_string()])?;
        crate::dracut::profile::drivers(&crate::dracut::profile::merged_confs(&p))
    };
    let mut modules = match bus {
        DiskBus::Nvme => Vec::new(),
        DiskBus::Virtio => drivers("virtio")?,
        DiskBus::Nvdimm => drivers("nvdimm")?,
    };
    let fstype = info.root.fstype;
    let mut root = Vec::new();
    match &verity {
        Some(v) => {
            modules.extend(drivers("verity")?);
            let data = bus.device(info.root.partition);
            let hash = bus.device(info.hash_partition);
            let params = v.kernel_params(&data, &hash);
            let (dm, dev) = params
                .rsplit_once(' ')
                .expect("dm-mod.create=… root=/dev/dm-0");
            root.push(dm.to_string());
            root.push(dev.to_string());
        }
        None => root.push(format!("root={}", bus.device(info.root.partition))),
    }
    if let Some(t) = fstype {
        root.push(format!("rootfstype={t}"));
    }
    // Kata's runtime: ext4 with data=ordered,errors=remount-ro; dax on an NVDIMM, except
    // through dm-verity, which cannot pass DAX on.
    let dax = bus == DiskBus::Nvdimm && verity.is_none();
    let mut flags: Vec<&str> = Vec::new();
    if dax {
        flags.push("dax");
    }
    if bus != DiskBus::Nvme && fstype == Some("ext4") {
        flags.extend(["data=ordered", "errors=remount-ro"]);
    }
    if !flags.is_empty() {
        root.push(format!("rootflags={}", flags.join(",")));
    }
    root.push("ro".into());
    Ok(Attachment {
        root,
        modules,
        verity,
    })
}

fn read_root_hash(f: &Path) -> Result<Verity> {
    let text = std::fs::read_to_string(f)
        .with_context(|| format!("reading the root hash file {}", f.display()))?;
    Verity::from_root_hash_line(&text)
        .with_context(|| format!("{} is not Kata's root_hash.txt", f.display()))
}

/// The kernel's release (`uname -r`): from an x86 bzImage's header, else from a
/// `vmlinuz-<release>` file name (after symlinks, as `osbuilder kernel fetch` names it).
pub fn kernel_release(kernel: &Path) -> Option<String> {
    // The setup header and the version string it points at are in the first sectors.
    let head = std::fs::File::open(kernel).and_then(|f| {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, 64 << 10), &mut b)?;
        Ok(b)
    });
    if let Ok(bytes) = head {
        if bytes.get(0x202..0x206) == Some(b"HdrS") && bytes.len() > 0x210 {
            let off = u16::from_le_bytes([bytes[0x20e], bytes[0x20f]]) as usize + 0x200;
            if let Some(rest) = bytes.get(off..off.saturating_add(256).min(bytes.len())) {
                let text = String::from_utf8_lossy(rest);
                if let Some(r) = text.split([' ', '\0']).next().filter(|r| !r.is_empty()) {
                    return Some(r.to_string());
                }
            }
        }
    }
    let real = std::fs::canonicalize(kernel).ok()?;
    let name = real.file_name()?.to_string_lossy().into_owned();
    ["vmlinuz-", "vmlinux-", "Image-", "bzImage-"]
        .iter()
        .find_map(|p| name.strip_prefix(p).map(str::to_string))
}

/// Where the modules of `kernel` are: `explicit`, else `osbuilder kernel fetch`'s
/// `<kernel's folder>/modules/<release>`, else the host's `/lib/modules/<release>`.
pub fn modules_dir(kernel: &Path, release: &str, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(d) = explicit {
        return Some(d.to_path_buf());
    }
    let real = std::fs::canonicalize(kernel).ok()?;
    [
        real.parent()?.join("modules").join(release),
        Path::new("/lib/modules").join(release),
    ]
    .into_iter()
    .find(|d| d.join("modules.order").is_file() || d.join("modules.dep").is_file())
}

/// The modules of `wanted` that the kernel whose modules are in `dir` does not have built
/// in (modules.builtin; `-` and `_` are the same in module names).
pub fn not_built_in(dir: &Path, wanted: &[String]) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let norm = |s: &str| s.replace('-', "_");
    let builtin: Vec<String> = text
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(|f| norm(f.split(".ko").next().unwrap_or(f)))
        .collect();
    Ok(wanted
        .iter()
        .filter(|m| !builtin.contains(&norm(m)))
        .cloned()
        .collect())
}

/// The boot initramfs for the kernel `release` whose modules are in `modules`, from the
/// cache or built now (dracut method, profiles [`BOOT_PROFILES`], no agent). Returns its
/// path and whether it was built now.
pub fn boot_initramfs(
    release: &str,
    modules: &Path,
    cache_dir: Option<&Path>,
) -> Result<(PathBuf, bool)> {
    let cache = crate::pkg::cache::Cache::open(cache_dir)?;
    let dir = cache.dir().join("boot-initramfs");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = cache_key(release, modules)?;
    let path = dir.join(format!("{release}-{key}.img"));
    if path.is_file() {
        return Ok((path, false));
    }
    // One builder at a time per entry; whoever waited finds it done.
    let lock = std::fs::File::create(dir.join(format!(".{release}-{key}.lock")))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .context("locking the boot initramfs cache")?;
    if path.is_file() {
        return Ok((path, false));
    }
    let opts = crate::dracut::Options {
        profiles: BOOT_PROFILES.map(String::from).to_vec(),
        kver: Some(release.to_string()),
        kmoddir: Some(modules.to_path_buf()),
        init: crate::distro::InitMode::AgentInit,
        agent: None,
        source_date_epoch: crate::tree::source_date_epoch()?,
    };
    crate::dracut::build_initrd(&opts, &path, crate::compress::Compression::Gzip, Some(6))
        .context("building the boot initramfs with the dracut method")?;
    Ok((path, true))
}

/// What the boot initramfs is made of: osbuilder's version, the profiles' files, the
/// kernel release and its module list.
fn cache_key(release: &str, modules: &Path) -> Result<String> {
    let set = ProfileSet::load()?;
    let mut h = Sha256::new();
    h.update(env!("CARGO_PKG_VERSION"));
    h.update(release);
    for p in set.select(&BOOT_PROFILES.map(String::from))? {
        for (name, bytes) in p.confs.iter().chain(&p.include) {
            h.update(name.as_bytes());
            h.update(bytes);
        }
    }
    for f in ["modules.order", "modules.builtin"] {
        h.update(std::fs::read(modules.join(f)).unwrap_or_default());
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::disk::RootLocation;

    fn info(hash: Option<u32>, dax: bool) -> ImageInfo {
        ImageInfo {
            format: ImageFormat::Raw,
            root: RootLocation {
                partition: Some(1),
                fstype: Some("ext4"),
            },
            hash_partition: hash,
            dax_header: dax,
            size: 128 << 20,
        }
    }

    #[test]
    fn kata_root_parameters_per_attachment() {
        let img = Path::new("/nonexistent/kata.img");
        let a = plan(DiskBus::Virtio, Arch::X86_64, img, &info(None, true), None).unwrap();
        assert_eq!(
            a.root.join(" "),
            "root=/dev/vda1 rootfstype=ext4 rootflags=data=ordered,errors=remount-ro ro"
        );
        assert_eq!(a.modules, ["virtio_pci", "virtio_blk"]);
        let a = plan(DiskBus::Nvdimm, Arch::X86_64, img, &info(None, true), None).unwrap();
        assert_eq!(
            a.root.join(" "),
            "root=/dev/pmem0p1 rootfstype=ext4 rootflags=dax,data=ordered,errors=remount-ro ro"
        );
        assert_eq!(a.modules, ["nfit", "nd_pmem"]);
        let a = plan(DiskBus::Nvme, Arch::X86_64, img, &info(None, true), None).unwrap();
        assert_eq!(a.root.join(" "), "root=/dev/nvme0n1p1 rootfstype=ext4 ro");
        assert!(a.modules.is_empty());
    }

    #[test]
    fn nvdimm_needs_the_dax_header_and_x86_64() {
        let img = Path::new("/nonexistent/kata.img");
        let e = plan(DiskBus::Nvdimm, Arch::X86_64, img, &info(None, false), None).unwrap_err();
        assert!(crate::error::is_refused(&e) && e.to_string().contains("DAX header"));
        let e = plan(DiskBus::Nvdimm, Arch::Aarch64, img, &info(None, true), None).unwrap_err();
        assert!(e.to_string().contains("ACPI"), "{e}");
    }

    #[test]
    fn a_measured_image_gets_its_dm_verity_table() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("kata.img");
        // Without the root hash file the boot is refused rather than silently unverified.
        let e = plan(
            DiskBus::Virtio,
            Arch::X86_64,
            &img,
            &info(Some(2), true),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("--root-hash"), "{e}");
        let v = Verity {
            data_blocks: 100,
            data_block_size: 4096,
            hash_block_size: 4096,
            salt: vec![1; 32],
            root_hash: [2; 32],
        };
        std::fs::write(d.path().join("root_hash.txt"), v.root_hash_line()).unwrap();
        let a = plan(
            DiskBus::Nvdimm,
            Arch::X86_64,
            &img,
            &info(Some(2), true),
            None,
        )
        .unwrap();
        let line = a.root.join(" ");
        assert!(
            line.starts_with(
                "dm-mod.create=\"dm-verity,,,ro,0 800 verity 1 /dev/pmem0p1 /dev/pmem0p2 4096 4096 100 0 sha256 "
            ),
            "{line}"
        );
        assert!(
            line.ends_with(
                "\" root=/dev/dm-0 rootfstype=ext4 rootflags=data=ordered,errors=remount-ro ro"
            ),
            "{line}"
        );
        assert_eq!(a.modules, ["nfit", "nd_pmem", "dm_verity"]);
        assert_eq!(a.verity, Some(v));
        let e = plan(
            DiskBus::Virtio,
            Arch::X86_64,
            &img,
            &info(None, true),
            Some(&d.path().join("root_hash.txt")),
        )
        .unwrap_err();
        assert!(e.to_string().contains("no hash partition"), "{e}");
    }

    #[test]
    fn the_release_comes_from_the_bzimage_header_or_the_file_name() {
        let d = tempfile::tempdir().unwrap();
        let mut bz = vec![0u8; 0x600];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        bz[0x500..0x520].copy_from_slice(b"6.12.1-cloud-amd64 (debian@x) #1");
        std::fs::write(d.path().join("bzImage"), &bz).unwrap();
        assert_eq!(
            kernel_release(&d.path().join("bzImage")).as_deref(),
            Some("6.12.1-cloud-amd64")
        );
        std::fs::write(d.path().join("vmlinuz-6.1.0-arm64"), b"not x86").unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.1.0-arm64", d.path().join("vmlinuz")).unwrap();
        assert_eq!(
            kernel_release(&d.path().join("vmlinuz")).as_deref(),
            Some("6.1.0-arm64")
        );
    }

    #[test]
    fn built_in_modules_are_recognised() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("modules.builtin"),
            "kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/md/dm-mod.ko\n",
        )
        .unwrap();
        let want: Vec<String> = ["virtio_pci", "virtio_blk", "dm_mod"]
            .map(String::from)
            .to_vec();
        assert_eq!(not_built_in(d.path(), &want).unwrap(), ["virtio_blk"]);
    }
}
