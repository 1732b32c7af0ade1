//! What the rootfs layer is: a raw disk image from `osbuilder image` (ext4 by default, or
//! erofs/xfs), or a tar of the tree. The format is declared with a flag and checked against
//! the file's content, so a layer never carries a media type or annotation that lies; the
//! filesystem's UUID is read from its superblock for the default kernel command line.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};

use crate::error::refused;

/// The rootfs layer's format (`osbuilder oci --rootfs-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootfsFormat {
    /// A raw disk image whose root filesystem is ext4 (the default).
    Ext4,
    /// A raw disk image with an erofs root (compressed, read-only).
    Erofs,
    /// A raw disk image with an xfs root.
    Xfs,
    /// An uncompressed tar of the tree.
    Tar,
}

impl RootfsFormat {
    pub fn name(self) -> &'static str {
        match self {
            RootfsFormat::Ext4 => "ext4",
            RootfsFormat::Erofs => "erofs",
            RootfsFormat::Xfs => "xfs",
            RootfsFormat::Tar => "tar",
        }
    }

    /// The layer's media type: ironcore's rootfs type for a disk image (consumers attach it
    /// as the machine's disk), the OCI filesystem-layer type for a tar.
    pub fn media_type(self) -> &'static str {
        match self {
            RootfsFormat::Tar => super::spec::TAR_LAYER,
            _ => super::spec::IRONCORE_ROOTFS,
        }
    }

    /// `org.opencontainers.image.title`: the file name `oras pull` and `osbuilder pull` write.
    pub fn title(self) -> &'static str {
        match self {
            RootfsFormat::Tar => "rootfs.tar",
            _ => "rootfs.img",
        }
    }
}

/// What was found in a rootfs artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootfsInfo {
    pub format: RootfsFormat,
    /// Byte offset of the filesystem inside the disk image (0 for a bare filesystem).
    pub fs_offset: Option<u64>,
    /// The filesystem UUID (for `root=UUID=`), when the format has one.
    pub fs_uuid: Option<String>,
}

impl RootfsInfo {
    /// The kernel command line that mounts this root from an initramfs, whatever the disk
    /// is called on the machine: `root=UUID=… rootfstype=… ro`. None for a tar.
    pub fn default_cmdline(&self) -> Option<String> {
        let uuid = self.fs_uuid.as_ref()?;
        Some(format!(
            "root=UUID={uuid} rootfstype={} ro",
            self.format.name()
        ))
    }
}

/// Check that `path` holds what `claimed` says, and read its filesystem UUID.
pub fn inspect(path: &Path, claimed: RootfsFormat) -> Result<RootfsInfo> {
    let mut f =
        File::open(path).with_context(|| format!("cannot open rootfs {}", path.display()))?;
    let mut head = [0u8; 512];
    let n = read_full(&mut f, 0, &mut head)?;
    if n >= 4 && &head[..4] == b"QFI\xfb" {
        return Err(refused(format!(
            "{} is a qcow2 image; the rootfs layer is a raw disk (consumers attach it as is): \
             build it with `osbuilder image --format raw` or convert it with `qemu-img convert -O raw`",
            path.display()
        )));
    }
    let is_tar = n >= 262 && &head[257..262] == b"ustar";
    if claimed == RootfsFormat::Tar {
        if !is_tar {
            return Err(refused(format!(
                "--rootfs-format tar, but {} is not an uncompressed tar archive (no ustar header)",
                path.display()
            )));
        }
        return Ok(RootfsInfo {
            format: claimed,
            fs_offset: None,
            fs_uuid: None,
        });
    }
    let found = crate::boot::disk::root_filesystem(path)?;
    let (offset, fs) = match found {
        Some(x) => x,
        None => {
            let what = if is_tar {
                "a tar archive (pass --rootfs-format tar)"
            } else {
                "no ext4, erofs or xfs filesystem"
            };
            return Err(refused(format!(
                "--rootfs-format {}, but {} holds {what}; give a disk image made by `osbuilder image`",
                claimed.name(),
                path.display()
            )));
        }
    };
    if fs != claimed.name() {
        return Err(refused(format!(
            "--rootfs-format {}, but the root filesystem in {} is {fs} (pass --rootfs-format {fs})",
            claimed.name(),
            path.display()
        )));
    }
    // UUID positions: ext4 s_uuid at 0x68 of the superblock at 1024; erofs uuid at 48 of
    // its superblock at 1024; xfs sb_uuid at 32 of the superblock at 0.
    let at = match claimed {
        RootfsFormat::Ext4 => 1024 + 0x68,
        RootfsFormat::Erofs => 1024 + 48,
        RootfsFormat::Xfs => 32,
        RootfsFormat::Tar => unreachable!(),
    };
    let mut uuid = [0u8; 16];
    read_full(&mut f, offset + at, &mut uuid)?;
    let fs_uuid = uuid.iter().any(|&b| b != 0).then(|| format_uuid(&uuid));
    Ok(RootfsInfo {
        format: claimed,
        fs_offset: Some(offset),
        fs_uuid,
    })
}

fn read_full(f: &mut File, off: u64, buf: &mut [u8]) -> Result<usize> {
    f.seek(SeekFrom::Start(off))?;
    let mut done = 0;
    while done < buf.len() {
        let n = f.read(&mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

fn format_uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    #[test]
    fn a_bare_ext4_is_found_with_its_uuid_and_mislabels_are_refused() {
        let mut img = vec![0u8; 8192];
        img[1024 + 56..1024 + 58].copy_from_slice(&[0x53, 0xef]);
        for (i, b) in img[1024 + 0x68..1024 + 0x78].iter_mut().enumerate() {
            *b = i as u8 + 1;
        }
        let f = file(&img);
        let info = inspect(f.path(), RootfsFormat::Ext4).unwrap();
        assert_eq!(info.fs_offset, Some(0));
        assert_eq!(
            info.default_cmdline().unwrap(),
            "root=UUID=01020304-0506-0708-090a-0b0c0d0e0f10 rootfstype=ext4 ro"
        );
        let e = inspect(f.path(), RootfsFormat::Erofs).unwrap_err();
        assert!(crate::error::is_refused(&e));
        assert!(format!("{e}").contains("pass --rootfs-format ext4"), "{e}");
        assert!(inspect(f.path(), RootfsFormat::Tar).is_err());
    }

    #[test]
    fn tar_and_qcow2() {
        let mut t = vec![0u8; 1024];
        t[257..262].copy_from_slice(b"ustar");
        let f = file(&t);
        assert_eq!(
            inspect(f.path(), RootfsFormat::Tar)
                .unwrap()
                .default_cmdline(),
            None
        );
        let e = inspect(f.path(), RootfsFormat::Ext4).unwrap_err();
        assert!(format!("{e}").contains("--rootfs-format tar"), "{e}");
        let q = file(b"QFI\xfb\0\0\0\x03");
        let e = inspect(q.path(), RootfsFormat::Ext4).unwrap_err();
        assert!(format!("{e}").contains("qcow2"), "{e}");
    }
}
