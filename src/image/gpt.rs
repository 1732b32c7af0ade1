//! GUID partition tables (UEFI 2.x chapter 5), written directly: protective MBR, primary
//! header at LBA 1 with its 128-entry array at LBA 2..33, and the backup array and header
//! in the last 33 sectors.

use anyhow::{Result, bail};
use sha2::{Digest, Sha256};

use super::mbr::SECTOR;

pub const ENTRIES: usize = 128;
pub const ENTRY_SIZE: usize = 128;
/// Sectors used by the entry array (128 × 128 bytes).
pub const ARRAY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;

/// A GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Parse "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx": the first three groups are stored
    /// little-endian, the last two as written.
    pub fn parse(s: &str) -> Result<Guid> {
        let hex: String = s.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || s.len() != 36 {
            bail!("'{s}' is not a GUID");
        }
        let mut t = [0u8; 16];
        for (i, b) in t.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| anyhow::anyhow!("'{s}' is not a GUID"))?;
        }
        Ok(Guid::from_text_order(t))
    }

    /// From the 16 bytes in the order they are written as text.
    pub fn from_text_order(t: [u8; 16]) -> Guid {
        let mut b = t;
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Guid(b)
    }

    fn text_order(&self) -> [u8; 16] {
        let mut t = self.0;
        t[0..4].reverse();
        t[4..6].reverse();
        t[6..8].reverse();
        t
    }

    /// A stable GUID for `purpose` from `seed`: the first 16 bytes of
    /// sha256("osbuilder:" purpose ":" seed), marked RFC 9562 version 8 (custom).
    pub fn derive(seed: &str, purpose: &str) -> Guid {
        Guid::from_text_order(derive_uuid_bytes(seed, purpose))
    }
}

/// 16 UUID bytes (text order, version 8, RFC variant) derived from a seed.
pub fn derive_uuid_bytes(seed: &str, purpose: &str) -> [u8; 16] {
    let h = Sha256::digest(format!("osbuilder:{purpose}:{seed}").as_bytes());
    let mut t = [0u8; 16];
    t.copy_from_slice(&h[..16]);
    t[6] = (t[6] & 0x0f) | 0x80;
    t[8] = (t[8] & 0x3f) | 0x80;
    t
}

/// "xxxxxxxx-xxxx-…" text of UUID bytes in text order.
pub fn uuid_text(t: &[u8; 16]) -> String {
    let h: Vec<String> = t.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    )
}

impl std::fmt::Display for Guid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&uuid_text(&self.text_order()))
    }
}

#[derive(Clone, Debug)]
pub struct GptPartition {
    pub type_guid: Guid,
    pub part_guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub name: String,
}

/// The table's sectors: `head` goes at offset 0 (protective MBR, header, entries; 34
/// sectors), `tail` at the last 33 sectors of the disk.
pub struct GptBytes {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
}

pub fn first_usable() -> u64 {
    2 + ARRAY_SECTORS
}

pub fn last_usable(total_sectors: u64) -> u64 {
    total_sectors - 2 - ARRAY_SECTORS
}

pub fn build(total_sectors: u64, disk_guid: Guid, parts: &[GptPartition]) -> Result<GptBytes> {
    if parts.len() > ENTRIES {
        bail!("a GPT holds at most {ENTRIES} partitions here");
    }
    let (first, last) = (first_usable(), last_usable(total_sectors));
    let mut array = vec![0u8; ENTRIES * ENTRY_SIZE];
    for (i, p) in parts.iter().enumerate() {
        if p.first_lba < first || p.last_lba > last || p.first_lba > p.last_lba {
            bail!(
                "GPT partition {} ({}..={}) lies outside the usable sectors {first}..={last}",
                i + 1,
                p.first_lba,
                p.last_lba
            );
        }
        let e = &mut array[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
        e[0..16].copy_from_slice(&p.type_guid.0);
        e[16..32].copy_from_slice(&p.part_guid.0);
        e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
        e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
        let name: Vec<u16> = p.name.encode_utf16().collect();
        if name.len() > 36 {
            bail!(
                "GPT partition name '{}' is longer than 36 UTF-16 units",
                p.name
            );
        }
        for (j, c) in name.iter().enumerate() {
            e[56 + 2 * j..58 + 2 * j].copy_from_slice(&c.to_le_bytes());
        }
    }
    let array_crc = crc32fast::hash(&array);
    let backup_lba = total_sectors - 1;
    let header = |my: u64, alt: u64, entries_lba: u64| -> Vec<u8> {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&first.to_le_bytes());
        h[48..56].copy_from_slice(&last.to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&array_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let mut head = super::mbr::protective(total_sectors).to_vec();
    head.extend(header(1, backup_lba, 2));
    head.extend(&array);
    let mut tail = array.clone();
    tail.extend(header(backup_lba, 1, backup_lba - ARRAY_SECTORS));
    Ok(GptBytes { head, tail })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trip_and_mixed_endian() {
        let g = Guid::parse("4f68bce3-e8cd-4db1-96e7-fbcaf984b709").unwrap();
        assert_eq!(&g.0[..4], &[0xe3, 0xbc, 0x68, 0x4f]);
        assert_eq!(&g.0[8..10], &[0x96, 0xe7]);
        assert_eq!(g.to_string(), "4f68bce3-e8cd-4db1-96e7-fbcaf984b709");
    }

    #[test]
    fn derived_guids_depend_on_seed_and_purpose() {
        let a = Guid::derive("s", "disk");
        assert_eq!(a, Guid::derive("s", "disk"));
        assert_ne!(a, Guid::derive("t", "disk"));
        assert_ne!(a, Guid::derive("s", "root"));
        assert_eq!(a.to_string().as_bytes()[14], b'8');
    }
}
