//! Where the root filesystem is inside a disk image, so `osbuilder boot --image` can write
//! `root=` and `rootfstype=` itself: the partition table (MBR, or GPT behind a protective
//! MBR) and the filesystem's superblock magic. Read-only, a few sectors.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use anyhow::{Context, Result};

const SECTOR: u64 = 512;

/// An image's on-disk format as QEMU's `-drive format=` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Raw,
    Qcow2,
}

impl ImageFormat {
    pub fn qemu_name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// Where the root filesystem lives in an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootLocation {
    /// 1-based partition number; None for a filesystem on the whole disk.
    pub partition: Option<u32>,
    /// The kernel's name for the filesystem (`rootfstype=`), when recognised.
    pub fstype: Option<&'static str>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageInfo {
    pub format: ImageFormat,
    pub root: RootLocation,
}

pub fn inspect(path: &Path) -> Result<ImageInfo> {
    let mut f =
        File::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    let mut head = [0u8; 4];
    read_at(&mut f, 0, &mut head)?;
    if &head == b"QFI\xfb" {
        // Partitions inside qcow2 are not visible without decoding it; Kata's layout
        // (root on the first partition) is the sensible guess, and --append can override.
        return Ok(ImageInfo {
            format: ImageFormat::Qcow2,
            root: RootLocation {
                partition: Some(1),
                fstype: None,
            },
        });
    }
    let root = find_root(&mut f)?;
    Ok(ImageInfo {
        format: ImageFormat::Raw,
        root,
    })
}

fn read_at(f: &mut File, off: u64, buf: &mut [u8]) -> Result<bool> {
    f.seek(SeekFrom::Start(off))?;
    let mut done = 0;
    while done < buf.len() {
        let n = f.read(&mut buf[done..])?;
        if n == 0 {
            buf[done..].fill(0);
            return Ok(false);
        }
        done += n;
    }
    Ok(true)
}

/// The byte offset and kernel name of the first filesystem we recognise in a raw image
/// (the first such partition, else the whole disk); None when there is none (a qcow2
/// image, a tar, anything else). Publishers read the filesystem's UUID from there.
pub fn root_filesystem(path: &Path) -> Result<Option<(u64, &'static str)>> {
    let mut f =
        File::open(path).with_context(|| format!("cannot open image {}", path.display()))?;
    for (_, start) in partitions(&mut f)? {
        if let Some(fs) = probe_fs(&mut f, start * SECTOR)? {
            return Ok(Some((start * SECTOR, fs)));
        }
    }
    Ok(probe_fs(&mut f, 0)?.map(|fs| (0, fs)))
}

/// The first partition holding a filesystem we recognise; or the whole disk.
fn find_root(f: &mut File) -> Result<RootLocation> {
    for (number, start) in partitions(f)? {
        if let Some(fs) = probe_fs(f, start * SECTOR)? {
            return Ok(RootLocation {
                partition: Some(number),
                fstype: Some(fs),
            });
        }
    }
    Ok(RootLocation {
        partition: None,
        fstype: probe_fs(f, 0)?,
    })
}

/// (number, first LBA) of every used partition, from the MBR or the GPT.
fn partitions(f: &mut File) -> Result<Vec<(u32, u64)>> {
    let mut mbr = [0u8; 512];
    read_at(f, 0, &mut mbr)?;
    if mbr[510..512] != [0x55, 0xaa] {
        return Ok(Vec::new());
    }
    let entries: Vec<(u8, u64)> = (0..4)
        .map(|i| {
            let e = &mbr[446 + 16 * i..446 + 16 * (i + 1)];
            (
                e[4],
                u32::from_le_bytes(e[8..12].try_into().unwrap()) as u64,
            )
        })
        .collect();
    if entries.iter().any(|&(t, _)| t == 0xee) {
        return gpt_partitions(f);
    }
    Ok(entries
        .into_iter()
        .enumerate()
        .filter(|&(_, (t, start))| t != 0 && start != 0)
        .map(|(i, (_, start))| (i as u32 + 1, start))
        .collect())
}

fn gpt_partitions(f: &mut File) -> Result<Vec<(u32, u64)>> {
    let mut hdr = [0u8; 92];
    read_at(f, SECTOR, &mut hdr)?;
    if &hdr[..8] != b"EFI PART" {
        return Ok(Vec::new());
    }
    let table = u64::from_le_bytes(hdr[72..80].try_into().unwrap());
    let count = u32::from_le_bytes(hdr[80..84].try_into().unwrap()).min(256);
    let size = u32::from_le_bytes(hdr[84..88].try_into().unwrap()) as usize;
    if size < 128 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; size * count as usize];
    read_at(f, table * SECTOR, &mut buf)?;
    Ok(buf
        .chunks(size)
        .enumerate()
        .filter(|(_, e)| e[..16].iter().any(|&b| b != 0))
        .map(|(i, e)| {
            (
                i as u32 + 1,
                u64::from_le_bytes(e[32..40].try_into().unwrap()),
            )
        })
        .collect())
}

/// The filesystem at byte `off`, by superblock magic.
fn probe_fs(f: &mut File, off: u64) -> Result<Option<&'static str>> {
    let mut b = [0u8; 2048];
    if !read_at(f, off, &mut b)? && b.iter().all(|&x| x == 0) {
        return Ok(None);
    }
    Ok(if b[1024 + 56..1024 + 58] == [0x53, 0xef] {
        Some("ext4") // ext2/3/4 superblocks; the ext4 driver mounts all three
    } else if &b[..4] == b"XFSB" {
        Some("xfs")
    } else if b[1024..1028] == 0xe0f5_e1e2u32.to_le_bytes() {
        Some("erofs")
    } else if &b[..4] == b"hsqs" {
        Some("squashfs")
    } else {
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn image(parts: &[(u8, u32)], fs_at: Option<(u64, &[u8], usize)>) -> tempfile::NamedTempFile {
        let mut img = vec![0u8; 8 << 20];
        for (i, &(t, start)) in parts.iter().enumerate() {
            let e = 446 + 16 * i;
            img[e + 4] = t;
            img[e + 8..e + 12].copy_from_slice(&start.to_le_bytes());
            img[e + 12..e + 16].copy_from_slice(&100u32.to_le_bytes());
        }
        if !parts.is_empty() {
            img[510] = 0x55;
            img[511] = 0xaa;
        }
        if let Some((off, magic, at)) = fs_at {
            let o = off as usize + at;
            img[o..o + magic.len()].copy_from_slice(magic);
        }
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(&img).unwrap();
        f
    }

    #[test]
    fn kata_layout_ext4_on_the_first_partition_at_3_mib() {
        let f = image(&[(0x83, 6144)], Some((3 << 20, &[0x53, 0xef], 1024 + 56)));
        let info = inspect(f.path()).unwrap();
        assert_eq!(info.format, ImageFormat::Raw);
        assert_eq!(
            info.root,
            RootLocation {
                partition: Some(1),
                fstype: Some("ext4")
            }
        );
    }

    #[test]
    fn xfs_on_the_second_partition_and_erofs_on_the_whole_disk() {
        let f = image(&[(0xef, 2048), (0x83, 4096)], Some((2 << 20, b"XFSB", 0)));
        assert_eq!(
            inspect(f.path()).unwrap().root,
            RootLocation {
                partition: Some(2),
                fstype: Some("xfs")
            }
        );
        let f = image(&[], Some((0, &0xe0f5_e1e2u32.to_le_bytes(), 1024)));
        assert_eq!(
            inspect(f.path()).unwrap().root,
            RootLocation {
                partition: None,
                fstype: Some("erofs")
            }
        );
    }

    #[test]
    fn gpt_entries_are_read() {
        // Protective MBR, GPT header at LBA 1, entries at LBA 2, ext4 in entry 1 at LBA 4096.
        let mut f = image(&[(0xee, 1)], Some((2 << 20, &[0x53, 0xef], 1024 + 56)));
        let mut hdr = [0u8; 92];
        hdr[..8].copy_from_slice(b"EFI PART");
        hdr[72..80].copy_from_slice(&2u64.to_le_bytes());
        hdr[80..84].copy_from_slice(&128u32.to_le_bytes());
        hdr[84..88].copy_from_slice(&128u32.to_le_bytes());
        let mut entry = [0u8; 128];
        entry[0] = 0xaf; // any non-zero type GUID
        entry[32..40].copy_from_slice(&4096u64.to_le_bytes());
        let file = f.as_file_mut();
        file.seek(SeekFrom::Start(512)).unwrap();
        file.write_all(&hdr).unwrap();
        file.seek(SeekFrom::Start(1024)).unwrap();
        file.write_all(&entry).unwrap();
        assert_eq!(
            inspect(f.path()).unwrap().root,
            RootLocation {
                partition: Some(1),
                fstype: Some("ext4")
            }
        );
    }

    #[test]
    fn qcow2_is_recognised() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"QFI\xfb\0\0\0\x03").unwrap();
        assert_eq!(inspect(f.path()).unwrap().format, ImageFormat::Qcow2);
    }
}
