//! How big the filesystem must be, computed from the tree — never by trying.
//!
//! For ext4 the model follows what `mkfs.ext4 -d` does with the features osbuilder
//! configures (see fs/ext4.rs): every inode, every data block at the block size (zero
//! blocks counted too, which also pays for the extents that holes add), extent tree
//! blocks of large files, directory blocks (with their checksum tails), long symlinks,
//! external xattr blocks, lost+found, the journal, and the per-group metadata that
//! mke2fs lays out (superblock and descriptor backups in sparse groups, bitmaps, inode
//! tables, and the rule that drops a too-small last group).

use std::collections::HashMap;

use crate::tree::{Kind, Tree};

pub const MIB: u64 = 1 << 20;

/// What a tree costs in an ext4 filesystem, apart from per-group metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ext4Need {
    /// Blocks for content: files, directories, symlinks, xattrs, extents, lost+found,
    /// journal.
    pub blocks: u64,
    /// Inodes the tree uses, including the reserved ones (1..=11).
    pub inodes: u64,
    pub journal_blocks: u64,
}

/// ext4 inode size osbuilder formats with.
pub const INODE_SIZE: u64 = 256;
/// First inode available to files; 1..=10 are reserved and 11 is lost+found.
const FIRST_INO: u64 = 11;
/// Longest symlink target stored in the inode itself (a "fast" symlink).
const FAST_SYMLINK_MAX: usize = 59;
/// lost+found is created with 16 KiB so e2fsck can use it without allocating.
const LOST_FOUND_BYTES: u64 = 16384;
/// Extents per 4-byte-header leaf: (block - 12) / 12, and a block covers 32768 blocks.
const EXTENT_MAX_LEN: u64 = 32768;

/// Journal size: a read-only root needs only enough for mount-time recovery; a larger
/// one helps images that are written to.
pub fn journal_bytes(content_bytes: u64) -> u64 {
    if content_bytes < 256 * MIB {
        4 * MIB
    } else {
        16 * MIB
    }
}

/// Directory entry record length: 8-byte header + name, padded to 4 bytes.
fn rec_len(name_len: usize) -> u64 {
    ((8 + name_len + 3) & !3) as u64
}

/// Blocks of a linear directory holding entries of these name lengths (plus "." and
/// ".."). ext2fs_link places each entry first-fit and only adds a block when no block
/// has room, so every block but the last has less than one maximal record free:
/// blocks <= total / (usable - max) + 1.
fn dir_blocks(names: &[usize], bs: u64) -> u64 {
    let usable = bs - 12; // metadata_csum tail
    let total: u64 = 24 + names.iter().map(|n| rec_len(*n)).sum::<u64>();
    let max = names
        .iter()
        .map(|n| rec_len(*n))
        .max()
        .unwrap_or(12)
        .max(12);
    if total <= usable {
        return 1;
    }
    total / (usable - max) + 1
}

/// Data plus extent-tree blocks of a regular file of `size` bytes.
fn file_blocks(size: u64, bs: u64) -> u64 {
    let data = size.div_ceil(bs);
    if data == 0 {
        return 0;
    }
    // A contiguous run breaks at most once per block group (backup superblocks, flex_bg
    // metadata) and at the maximum extent length.
    let extents = 2 * data.div_ceil(EXTENT_MAX_LEN) + 1;
    let tree = if extents > 4 {
        let per_leaf = (bs - 12) / 12;
        extents.div_ceil(per_leaf) + 1 // leaves + one index block
    } else {
        0
    };
    data + tree
}

fn has_xattrs(path: &std::path::Path) -> bool {
    // An empty buffer asks for the size of the name list.
    rustix::fs::llistxattr(path, &mut [] as &mut [u8]).is_ok_and(|n| n > 0)
}

/// Count what `tree` needs in ext4 with `bs`-byte blocks.
pub fn ext4_need(tree: &Tree, bs: u64) -> Ext4Need {
    let mut blocks = 0u64;
    let mut inodes = FIRST_INO; // reserved inodes + lost+found
    let mut seen_links = std::collections::HashSet::new();
    let mut dirs: HashMap<&[u8], Vec<usize>> = HashMap::new();
    let mut root_has_lost_found = false;
    let mut content = 0u64;
    for e in &tree.entries {
        if !e.path.is_empty() {
            let (parent, name) = match e.path.iter().rposition(|c| *c == b'/') {
                Some(i) => (&e.path[..i], e.path.len() - i - 1),
                None => (&b""[..], e.path.len()),
            };
            dirs.entry(parent).or_default().push(name);
        }
        if e.path == b"lost+found" && e.kind == Kind::Dir {
            root_has_lost_found = true;
            continue; // counted below as mke2fs's own lost+found
        }
        if let Some(g) = e.link_group {
            if !seen_links.insert(g) {
                continue; // another name of an inode already counted
            }
        }
        if !e.path.is_empty() {
            inodes += 1;
        }
        match &e.kind {
            Kind::Dir => {
                dirs.entry(&e.path).or_default();
            }
            Kind::File { size, source } => {
                blocks += file_blocks(*size, bs);
                content += size;
                if has_xattrs(source) {
                    blocks += 1;
                }
            }
            Kind::Symlink { target } if target.len() > FAST_SYMLINK_MAX => blocks += 1,
            _ => {}
        }
    }
    if !root_has_lost_found {
        dirs.entry(b"").or_default().push("lost+found".len());
    }
    for names in dirs.values() {
        blocks += dir_blocks(names, bs);
    }
    blocks += LOST_FOUND_BYTES.div_ceil(bs);
    let journal_blocks = journal_bytes(content).div_ceil(bs).max(1024);
    blocks += journal_blocks + 1; // + a possible extent split
    Ext4Need {
        blocks,
        inodes,
        journal_blocks,
    }
}

/// Is group `g` one that carries a superblock backup with sparse_super?
fn has_super(g: u64) -> bool {
    if g <= 1 {
        return true;
    }
    for p in [3u64, 5, 7] {
        let mut x = p;
        while x < g {
            x *= p;
        }
        if x == g {
            return true;
        }
    }
    false
}

/// The filesystem mke2fs makes in `blocks` blocks with `inodes` inodes requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ext4Geometry {
    /// Blocks mke2fs really uses (it drops a last group too small for its metadata).
    pub blocks: u64,
    pub groups: u64,
    pub inodes: u64,
    /// Blocks left for content after all per-group metadata.
    pub free: u64,
}

/// Mirror of ext2fs_initialize's geometry for our feature set (64bit, flex_bg,
/// sparse_super, no resize_inode, 256-byte inodes). `inodes` is rounded up to whole
/// inode-table blocks per group; pass the returned `inodes` to mke2fs -N so it makes
/// exactly that many. `None` if it cannot be made.
pub fn ext4_geometry(blocks: u64, inodes: u64, bs: u64) -> Option<Ext4Geometry> {
    let first_data = if bs == 1024 { 1 } else { 0 };
    let bpg = 8 * bs;
    let mut blocks = blocks;
    loop {
        if blocks <= first_data {
            return None;
        }
        let groups = (blocks - first_data).div_ceil(bpg);
        let ipg_max = 8 * bs;
        let mut ipg = inodes.div_ceil(groups);
        if ipg > ipg_max {
            return None;
        }
        // mke2fs fills whole inode-table blocks and then rounds down to a multiple of 8;
        // asking for a multiple of both per group keeps every inode we count.
        let step = (bs / INODE_SIZE).max(8);
        ipg = ipg.div_ceil(step) * step;
        if ipg > ipg_max {
            return None;
        }
        let itb = (ipg * INODE_SIZE).div_ceil(bs);
        let gdt = (groups * 64).div_ceil(bs);
        // ext2fs_initialize: overhead = 3 + inode table (+ reserved GDT, none here)
        let overhead_rule = 3 + itb;
        let rem = (blocks - first_data) % bpg;
        if groups == 1 && rem != 0 && rem < overhead_rule {
            return None;
        }
        if rem != 0 && rem < overhead_rule + 50 {
            blocks -= rem;
            continue;
        }
        let mut meta = 0;
        for g in 0..groups {
            meta += 2 + itb;
            if has_super(g) {
                meta += 1 + gdt;
            }
        }
        let total = blocks - first_data;
        return (total > meta).then(|| Ext4Geometry {
            blocks,
            groups,
            inodes: ipg * groups,
            free: total - meta,
        });
    }
}

/// Fewest blocks (no more than needed) whose filesystem holds `need` with `inodes`.
/// Arithmetic only: start from the content and add the metadata of the current guess
/// until the guess holds it.
pub fn ext4_min_blocks(need: &Ext4Need, inodes: u64, bs: u64) -> u64 {
    let bpg = 8 * bs;
    // enough groups for the inodes alone
    let min_groups = inodes.div_ceil(8 * bs).max(1);
    let mut b = need.blocks.max((min_groups - 1) * bpg + 1) + 64;
    loop {
        match ext4_geometry(b, inodes, bs) {
            Some(g) if holds(&g, need) => return b,
            Some(g) => b += (need.blocks.max(2 * need.journal_blocks) - g.free).max(1),
            None => b += 64,
        }
    }
}

/// True if `bytes` of partition give an ext4 filesystem that holds the tree.
/// The geometry of `bytes` of partition if its filesystem holds the tree.
pub fn ext4_fits(bytes: u64, need: &Ext4Need, inodes: u64, bs: u64) -> Option<Ext4Geometry> {
    ext4_geometry(bytes / bs, inodes, bs).filter(|g| holds(g, need))
}

/// Room for the content, and mke2fs's rule that the journal takes at most half of the
/// free blocks.
fn holds(g: &Ext4Geometry, need: &Ext4Need) -> bool {
    g.free >= need.blocks && g.free >= 2 * need.journal_blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_groups() {
        let s: Vec<u64> = (0..30).filter(|g| has_super(*g)).collect();
        assert_eq!(s, vec![0, 1, 3, 5, 7, 9, 25, 27]);
    }

    #[test]
    fn directory_blocks() {
        assert_eq!(dir_blocks(&[], 4096), 1);
        assert_eq!(dir_blocks(&[10; 100], 4096), 1);
        // 1000 names of 20 bytes: 28-byte records, 28024 bytes, more than 6 blocks
        let b = dir_blocks(&[20; 1000], 4096);
        assert!((7..=8).contains(&b), "{b}");
    }

    #[test]
    fn minimum_blocks_hold_the_need() {
        for blocks in [100, 5000, 40000, 300000] {
            let need = Ext4Need {
                blocks,
                inodes: 5000,
                journal_blocks: 1024,
            };
            let b = ext4_min_blocks(&need, 5000, 4096);
            let g = ext4_geometry(b, 5000, 4096).unwrap();
            assert!(holds(&g, &need) && g.inodes >= 5000, "{blocks}: {g:?}");
        }
    }
}
