//! Where everything goes in the image file: optional DAX header, partition table, optional
//! EFI system partition, root partition, optional dm-verity hash partition, GPT backup — or,
//! with no table, just the filesystem (a bare image, as Xen's `xvda` and Firecracker use).

use anyhow::{Result, bail};

use super::dax;
use super::size::MIB;
use super::verity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Table {
    Mbr,
    Gpt,
    /// No partition table: the filesystem fills the image (the guest mounts the whole disk).
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Byte offset in the image file.
    pub start: u64,
    pub len: u64,
}

impl Extent {
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub table: Table,
    pub total: u64,
    /// Start of the disk the partition table describes: 2 MiB with the DAX header
    /// (that disk is Kata's "original image"), else 0.
    pub base: u64,
    /// The EFI system partition (the first partition), when asked for.
    pub esp: Option<Extent>,
    pub root: Extent,
    pub hash: Option<Extent>,
}

/// What the caller asks for.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    pub table: Table,
    pub dax: bool,
    pub measured: bool,
    /// Smallest root partition that holds the filesystem (bytes).
    pub root_min: u64,
    pub free: u64,
    pub align: u64,
    /// Exact image size wanted, if any.
    pub size: Option<u64>,
    pub verity_block: u32,
    /// Size of an EFI system partition before the root partition (bytes; 0: none).
    pub esp: u64,
}

/// Partitions start 1 MiB into their disk, as parted -a optimal puts them.
pub const PART_START: u64 = MIB;

fn round_up(x: u64, to: u64) -> u64 {
    x.div_ceil(to) * to
}

fn hash_len(root: u64, bs: u32) -> u64 {
    round_up(verity::hash_bytes(root / bs as u64, bs), MIB)
}

impl Layout {
    pub fn compute(r: &Request) -> Result<Layout> {
        let base = if r.dax { dax::HEADER_BYTES } else { 0 };
        // GPT keeps its backup in the last 33 sectors; keep partitions MiB-aligned.
        let tail = if r.table == Table::Gpt { MIB } else { 0 };
        // A bare filesystem starts at the first byte.
        let start = if r.table == Table::None {
            0
        } else {
            PART_START
        };
        let esp = round_up(r.esp, MIB);
        let fixed = base + start + esp + tail;
        let root_min = round_up(r.root_min, MIB);
        let hash_min = if r.measured {
            hash_len(root_min, r.verity_block)
        } else {
            0
        };
        let min_total = fixed + root_min + hash_min;
        let total = match r.size {
            Some(s) => {
                if s < min_total {
                    bail!(
                        "an image of {} MiB is too small for this rootfs: it needs at least {} MiB",
                        s / MIB,
                        min_total.div_ceil(MIB)
                    );
                }
                if s % MIB != 0 {
                    bail!("the image size must be a whole number of MiB");
                }
                s
            }
            None => round_up(min_total + r.free, r.align.max(MIB)),
        };
        // Everything beyond the minimum goes to the root partition; the hash partition
        // takes what hashing that partition needs.
        let avail = total - fixed;
        let (root_len, hash) = if r.measured {
            let h = hash_len(avail, r.verity_block);
            let root_len = avail - h;
            (
                root_len,
                Some(Extent {
                    start: base + start + esp + root_len,
                    len: h,
                }),
            )
        } else {
            (avail, None)
        };
        Ok(Layout {
            table: r.table,
            total,
            base,
            esp: (esp > 0).then_some(Extent {
                start: base + start,
                len: esp,
            }),
            root: Extent {
                start: base + start + esp,
                len: root_len,
            },
            hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> Request {
        Request {
            table: Table::Mbr,
            dax: true,
            measured: false,
            root_min: 10 * MIB + 5,
            free: 0,
            align: 128 * MIB,
            size: None,
            verity_block: 4096,
            esp: 0,
        }
    }

    #[test]
    fn kata_dax_layout() {
        let l = Layout::compute(&req()).unwrap();
        assert_eq!(l.total, 128 * MIB);
        assert_eq!(l.root.start, 3 * MIB);
        assert_eq!(l.root.end(), 128 * MIB);
    }

    #[test]
    fn measured_hash_partition_fits_its_tree() {
        let l = Layout::compute(&Request {
            measured: true,
            dax: false,
            table: Table::Gpt,
            ..req()
        })
        .unwrap();
        let h = l.hash.unwrap();
        assert_eq!(l.root.start, MIB);
        assert_eq!(h.start, l.root.end());
        assert!(h.len >= verity::hash_bytes(l.root.len / 4096, 4096));
        assert_eq!(h.end(), l.total - MIB);
    }

    #[test]
    fn esp_comes_first_and_a_bare_image_has_no_table() {
        let l = Layout::compute(&Request {
            table: Table::Gpt,
            dax: false,
            align: MIB,
            esp: 64 * MIB,
            ..req()
        })
        .unwrap();
        assert_eq!(
            l.esp,
            Some(Extent {
                start: MIB,
                len: 64 * MIB
            })
        );
        assert_eq!(l.root.start, 65 * MIB);
        assert_eq!(l.root.end(), l.total - MIB);
        let bare = Layout::compute(&Request {
            table: Table::None,
            dax: false,
            align: MIB,
            ..req()
        })
        .unwrap();
        assert_eq!((bare.root.start, bare.root.len), (0, bare.total));
        assert_eq!(bare.total, 11 * MIB);
    }

    #[test]
    fn fixed_size_too_small_is_an_error() {
        let e = Layout::compute(&Request {
            size: Some(8 * MIB),
            ..req()
        })
        .unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
    }
}
