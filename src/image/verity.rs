//! dm-verity hash tree (format version 1, sha256, no superblock), as
//! `veritysetup format --no-superblock` lays it out: levels from the top (one block)
//! down to the level that hashes the data blocks, each digest = sha256(salt || block).

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub const DIGEST: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verity {
    pub data_blocks: u64,
    pub data_block_size: u32,
    pub hash_block_size: u32,
    pub salt: Vec<u8>,
    pub root_hash: [u8; DIGEST],
}

/// Hash blocks per level, bottom (hashing data) first, for `data_blocks` blocks.
pub fn level_sizes(data_blocks: u64, hash_block_size: u32) -> Vec<u64> {
    let per = (hash_block_size as usize / DIGEST) as u64;
    let mut sizes = Vec::new();
    let mut n = data_blocks;
    loop {
        n = n.div_ceil(per);
        sizes.push(n);
        if n <= 1 {
            return sizes;
        }
    }
}

/// Bytes the hash tree takes on the hash device.
pub fn hash_bytes(data_blocks: u64, hash_block_size: u32) -> u64 {
    level_sizes(data_blocks, hash_block_size)
        .iter()
        .sum::<u64>()
        * hash_block_size as u64
}

fn digest(salt: &[u8], block: &[u8]) -> [u8; DIGEST] {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(block);
    h.finalize().into()
}

/// Digests of consecutive `bs`-byte blocks, computed on all cores.
fn digests(salt: &[u8], data: &[u8], bs: usize) -> Vec<u8> {
    let n = data.len() / bs;
    let mut out = vec![0u8; n * DIGEST];
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = n.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (chunk, outc) in data.chunks(per * bs).zip(out.chunks_mut(per * DIGEST)) {
            s.spawn(move || {
                for (b, o) in chunk.chunks_exact(bs).zip(outc.chunks_exact_mut(DIGEST)) {
                    o.copy_from_slice(&digest(salt, b));
                }
            });
        }
    });
    out
}

/// Hash `data_blocks` blocks of `file` starting at `data_offset` and write the tree at
/// `hash_offset`. Both block sizes are `block_size`.
pub fn build(
    file: &File,
    data_offset: u64,
    data_blocks: u64,
    hash_offset: u64,
    block_size: u32,
    salt: &[u8],
) -> Result<Verity> {
    let bs = block_size as usize;
    // Bottom level: stream the data in 16 MiB slices.
    let mut level = Vec::with_capacity(data_blocks as usize * DIGEST);
    let slice_blocks = (16 << 20) / bs as u64;
    let mut buf = vec![0u8; slice_blocks as usize * bs];
    let mut done = 0u64;
    while done < data_blocks {
        let n = (data_blocks - done).min(slice_blocks) as usize;
        let b = &mut buf[..n * bs];
        file.read_exact_at(b, data_offset + done * bs as u64)
            .context("reading the data partition for dm-verity")?;
        level.extend(digests(salt, b, bs));
        done += n as u64;
    }
    // Upper levels; each level's digests packed into zero-padded hash blocks.
    let mut levels: Vec<Vec<u8>> = Vec::new();
    let root_hash = loop {
        let blocks = level.len().div_ceil(bs).max(1);
        level.resize(blocks * bs, 0);
        if blocks == 1 {
            let root = digest(salt, &level);
            levels.push(level);
            break root;
        }
        let next = digests(salt, &level, bs);
        levels.push(std::mem::replace(&mut level, next));
    };
    // The top level comes first on the hash device.
    let mut pos = hash_offset;
    for l in levels.iter().rev() {
        file.write_all_at(l, pos)
            .context("writing the dm-verity hash tree")?;
        pos += l.len() as u64;
    }
    Ok(Verity {
        data_blocks,
        data_block_size: block_size,
        hash_block_size: block_size,
        salt: salt.to_vec(),
        root_hash,
    })
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Verity {
    /// Kata's root_hash.txt line.
    pub fn root_hash_line(&self) -> String {
        format!(
            "root_hash={},salt={},data_blocks={},data_block_size={},hash_block_size={}\n",
            hex(&self.root_hash),
            hex(&self.salt),
            self.data_blocks,
            self.data_block_size,
            self.hash_block_size
        )
    }

    /// Read back Kata's root_hash.txt line (the one [`Verity::root_hash_line`] writes).
    pub fn from_root_hash_line(text: &str) -> Result<Verity> {
        let mut fields = std::collections::HashMap::new();
        for kv in text.trim().split(',') {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("'{kv}' is not key=value"))?;
            fields.insert(k.trim(), v.trim());
        }
        let get = |k: &str| {
            fields
                .get(k)
                .copied()
                .with_context(|| format!("no {k}= in the root hash line"))
        };
        let unhex = |k: &str| -> Result<Vec<u8>> {
            let v = get(k)?;
            hex::decode(v).with_context(|| format!("{k}={v} is not hex"))
        };
        let num = |k: &str| -> Result<u64> {
            let v = get(k)?;
            v.parse()
                .with_context(|| format!("{k}={v} is not a number"))
        };
        let root_hash: [u8; DIGEST] = unhex("root_hash")?
            .try_into()
            .map_err(|_| anyhow::anyhow!("root_hash is not a sha256 digest (64 hex digits)"))?;
        let block = |k: &str| -> Result<u32> {
            let n = num(k)?;
            if !(512..=65536).contains(&n) || !n.is_power_of_two() {
                anyhow::bail!("{k}={n} is not a block size");
            }
            Ok(n as u32)
        };
        Ok(Verity {
            data_blocks: num("data_blocks")?,
            data_block_size: block("data_block_size")?,
            hash_block_size: block("hash_block_size")?,
            salt: unhex("salt")?,
            root_hash,
        })
    }

    /// The kernel parameters that open the verity device at boot without an initramfs
    /// (dm-mod.create, "kernelinit" in Kata's terms).
    pub fn kernel_params(&self, data_dev: &str, hash_dev: &str) -> String {
        let sectors = self.data_blocks * self.data_block_size as u64 / 512;
        format!(
            "dm-mod.create=\"dm-verity,,,ro,0 {sectors} verity 1 {data_dev} {hash_dev} {} {} {} 0 sha256 {} {}\" root=/dev/dm-0",
            self.data_block_size,
            self.hash_block_size,
            self.data_blocks,
            hex(&self.root_hash),
            hex(&self.salt)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_hash_line_round_trips() {
        let v = Verity {
            data_blocks: 31744,
            data_block_size: 4096,
            hash_block_size: 4096,
            salt: vec![0xab; 32],
            root_hash: [0x5a; DIGEST],
        };
        assert_eq!(Verity::from_root_hash_line(&v.root_hash_line()).unwrap(), v);
        assert!(Verity::from_root_hash_line("root_hash=zz").is_err());
        let short = v.root_hash_line().replace(&hex(&v.root_hash), "abcd");
        assert!(Verity::from_root_hash_line(&short).is_err());
    }

    #[test]
    fn level_sizes_match_veritysetup() {
        assert_eq!(level_sizes(128, 4096), vec![1]);
        assert_eq!(level_sizes(129, 4096), vec![2, 1]);
        assert_eq!(level_sizes(262144, 4096), vec![2048, 16, 1]);
        assert_eq!(hash_bytes(262144, 4096), (2048 + 16 + 1) * 4096);
    }
}
