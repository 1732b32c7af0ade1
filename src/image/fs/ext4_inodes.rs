//! Set owner, mode and times of the inodes mkfs.ext4 -d made, in place, without a
//! debugfs command per field. Reads the superblock, group descriptors and directories
//! the filesystem has (linear or htree leaves, extent-mapped) to find each path's inode,
//! rewrites the inode's fields and its metadata_csum checksum. Anything outside the
//! feature set osbuilder configures is refused (the caller falls back to debugfs);
//! e2fsck -fn checks the result in the tests.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Result, bail, ensure};

/// crc32c (Castagnoli, reflected), raw update without pre/post inversion, as the ext4
/// checksums use it.
fn crc32c(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, v) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
            }
            *v = c;
        }
        t
    });
    for b in data {
        crc = t[((crc ^ *b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

pub struct Fs<'a> {
    file: &'a File,
    offset: u64,
    bs: u64,
    inode_size: u64,
    ipg: u64,
    inode_tables: Vec<u64>,
    csum_seed: u32,
    /// Inode-table blocks read so far, by byte position; written back by `flush`
    /// (one read and one write per block instead of per inode).
    cache: std::cell::RefCell<HashMap<u64, Vec<u8>>>,
}

/// What to give one inode.
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub time: i64,
}

impl<'a> Fs<'a> {
    pub fn open(file: &'a File, offset: u64) -> Result<Fs<'a>> {
        let mut sb = [0u8; 1024];
        file.read_exact_at(&mut sb, offset + 1024)?;
        ensure!(le16(&sb, 0x38) == 0xef53, "no ext4 superblock");
        let bs = 1024u64 << le32(&sb, 0x18);
        let incompat = le32(&sb, 0x60);
        let ro_compat = le32(&sb, 0x64);
        // filetype, extents, 64bit, flex_bg only (plus the journal's recover flag off)
        ensure!(
            incompat & !(0x2 | 0x40 | 0x80 | 0x200) == 0,
            "unexpected ext4 features {incompat:#x}"
        );
        ensure!(ro_compat & 0x400 != 0, "metadata_csum expected");
        let inode_size = le16(&sb, 0x58) as u64;
        ensure!(inode_size == 256, "256-byte inodes expected");
        let groups = (le32(&sb, 0x0) as u64).div_ceil(le32(&sb, 0x28) as u64);
        let desc = if incompat & 0x80 != 0 {
            le16(&sb, 0xfe) as u64
        } else {
            32
        };
        let gdt_block = le32(&sb, 0x14) as u64 + 1;
        let mut gdt = vec![0u8; (groups * desc) as usize];
        file.read_exact_at(&mut gdt, offset + gdt_block * bs)?;
        let inode_tables = (0..groups as usize)
            .map(|g| {
                let d = &gdt[g * desc as usize..];
                let hi = if desc >= 64 { le32(d, 0x28) as u64 } else { 0 };
                hi << 32 | le32(d, 0x8) as u64
            })
            .collect();
        Ok(Fs {
            file,
            offset,
            bs,
            inode_size,
            ipg: le32(&sb, 0x28) as u64,
            inode_tables,
            csum_seed: crc32c(!0, &sb[0x68..0x78]),
            cache: Default::default(),
        })
    }

    /// (byte position of the inode-table block, offset of the inode in it)
    fn inode_slot(&self, ino: u64) -> (u64, usize) {
        let g = ((ino - 1) / self.ipg) as usize;
        let at = ((ino - 1) % self.ipg) * self.inode_size;
        let block = self.offset + self.inode_tables[g] * self.bs + at / self.bs * self.bs;
        (block, (at % self.bs) as usize)
    }

    fn with_block<T>(&self, pos: u64, f: impl FnOnce(&mut [u8]) -> T) -> Result<T> {
        let mut cache = self.cache.borrow_mut();
        let b = match cache.entry(pos) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut b = vec![0u8; self.bs as usize];
                self.file.read_exact_at(&mut b, pos)?;
                e.insert(b)
            }
        };
        Ok(f(b))
    }

    fn read_inode(&self, ino: u64) -> Result<Vec<u8>> {
        let (pos, off) = self.inode_slot(ino);
        let n = self.inode_size as usize;
        self.with_block(pos, |b| b[off..off + n].to_vec())
    }

    fn write_inode(&self, ino: u64, inode: &[u8]) -> Result<()> {
        let (pos, off) = self.inode_slot(ino);
        self.with_block(pos, |b| b[off..off + inode.len()].copy_from_slice(inode))
    }

    /// Write the modified inode-table blocks back.
    pub fn flush(&self) -> Result<()> {
        let cache = self.cache.borrow();
        let mut blocks: Vec<_> = cache.iter().collect();
        blocks.sort_by_key(|(pos, _)| **pos);
        for (pos, b) in blocks {
            self.file.write_all_at(b, *pos)?;
        }
        Ok(())
    }

    /// Physical blocks of an extent-mapped inode, in logical order.
    fn blocks(&self, inode: &[u8]) -> Result<Vec<u64>> {
        ensure!(
            le32(inode, 0x20) & 0x80000 != 0,
            "directory without extents"
        );
        let mut out = Vec::new();
        self.walk_extents(&inode[0x28..0x28 + 60], &mut out, 0)?;
        Ok(out)
    }

    fn walk_extents(&self, node: &[u8], out: &mut Vec<u64>, depth_seen: u32) -> Result<()> {
        ensure!(
            le16(node, 0) == 0xf30a && depth_seen < 6,
            "bad extent header"
        );
        let (n, depth) = (le16(node, 2) as usize, le16(node, 6));
        for i in 0..n {
            let e = &node[12 + 12 * i..24 + 12 * i];
            if depth == 0 {
                let len = le16(e, 4) as u64;
                ensure!(len <= 32768, "uninitialised extent in a directory");
                let start = (le16(e, 6) as u64) << 32 | le32(e, 8) as u64;
                out.extend(start..start + len);
            } else {
                let leaf = (le16(e, 8) as u64) << 32 | le32(e, 4) as u64;
                let mut b = vec![0u8; self.bs as usize];
                self.file
                    .read_exact_at(&mut b, self.offset + leaf * self.bs)?;
                self.walk_extents(&b, out, depth_seen + 1)?;
            }
        }
        Ok(())
    }

    /// name → inode number of a directory's entries (without "." and "..").
    pub fn list_dir(&self, ino: u64) -> Result<HashMap<Vec<u8>, u64>> {
        let inode = self.read_inode(ino)?;
        ensure!(
            le16(&inode, 0) & 0o170000 == 0o040000,
            "inode {ino} is not a directory"
        );
        let mut map = HashMap::new();
        let mut b = vec![0u8; self.bs as usize];
        for blk in self.blocks(&inode)? {
            self.file
                .read_exact_at(&mut b, self.offset + blk * self.bs)?;
            let mut o = 0usize;
            while o + 8 <= b.len() {
                let (child, rec, nl) = (
                    le32(&b, o) as u64,
                    le16(&b, o + 4) as usize,
                    b[o + 6] as usize,
                );
                if rec < 8 || o + rec > b.len() {
                    bail!("corrupt directory block in inode {ino}");
                }
                let name = &b[o + 8..o + 8 + nl.min(rec - 8)];
                if child != 0 && name != b"." && name != b".." {
                    map.insert(name.to_vec(), child);
                }
                o += rec;
            }
        }
        Ok(map)
    }

    /// Write mode, owner and times into inode `ino` and refresh its checksum.
    pub fn set(&self, ino: u64, a: &Attrs) -> Result<()> {
        let mut b = self.read_inode(ino)?;
        ensure!(
            le16(&b, 0) & 0o170000 == (a.mode & 0o170000) as u16,
            "inode {ino} changed type"
        );
        b[0..2].copy_from_slice(&(a.mode as u16).to_le_bytes());
        b[2..4].copy_from_slice(&(a.uid as u16).to_le_bytes());
        b[0x78..0x7a].copy_from_slice(&((a.uid >> 16) as u16).to_le_bytes());
        b[0x18..0x1a].copy_from_slice(&(a.gid as u16).to_le_bytes());
        b[0x7a..0x7c].copy_from_slice(&((a.gid >> 16) as u16).to_le_bytes());
        // seconds in the base field, the epoch bits (beyond 2038 / before 1970) in the
        // extra field; nanoseconds zero
        let lo = a.time as i32;
        let epoch = (((a.time - lo as i64) >> 32) & 3) as u32;
        for (base, extra) in [(0x8, 0x8c), (0xc, 0x84), (0x10, 0x88)] {
            b[base..base + 4].copy_from_slice(&lo.to_le_bytes());
            b[extra..extra + 4].copy_from_slice(&epoch.to_le_bytes());
        }
        let extra_isize = le16(&b, 0x80) as usize;
        ensure!(extra_isize >= 24, "inode {ino} lacks the extra time fields");
        b[0x7c..0x7e].fill(0);
        b[0x82..0x84].fill(0);
        let generation = &b[0x64..0x68];
        let mut c = crc32c(self.csum_seed, &(ino as u32).to_le_bytes());
        c = crc32c(c, generation);
        c = crc32c(c, &b);
        b[0x7c..0x7e].copy_from_slice(&(c as u16).to_le_bytes());
        b[0x82..0x84].copy_from_slice(&((c >> 16) as u16).to_le_bytes());
        self.write_inode(ino, &b)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn crc32c_check_value() {
        // the standard check value of CRC-32C is 0xe3069283 (with inversions)
        assert_eq!(!super::crc32c(!0, b"123456789"), 0xe306_9283);
    }
}
