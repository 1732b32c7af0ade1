//! Classic MBR partition tables (what `parted mklabel msdos` writes for Kata), and the
//! protective MBR in front of a GPT.

pub const SECTOR: u64 = 512;
/// Linux filesystem.
pub const TYPE_LINUX: u8 = 0x83;
/// GPT protective.
pub const TYPE_GPT_PROTECTIVE: u8 = 0xee;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MbrPartition {
    pub bootable: bool,
    pub kind: u8,
    pub start_lba: u64,
    pub sectors: u64,
}

/// CHS address for an LBA with the usual 255 heads × 63 sectors translation; addresses
/// past the CHS limit get the conventional 1023/254/63 marker.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SPT: u64 = 63;
    let c = lba / (HEADS * SPT);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / SPT) % HEADS;
    let s = lba % SPT + 1;
    [h as u8, (s as u8) | (((c >> 2) as u8) & 0xc0), c as u8]
}

/// A 512-byte MBR with up to four primary partitions. Partitions must fit in 32-bit LBAs.
pub fn mbr(disk_signature: u32, parts: &[MbrPartition]) -> anyhow::Result<[u8; 512]> {
    anyhow::ensure!(
        parts.len() <= 4,
        "an MBR holds at most 4 primary partitions"
    );
    let mut b = [0u8; 512];
    b[440..444].copy_from_slice(&disk_signature.to_le_bytes());
    for (i, p) in parts.iter().enumerate() {
        anyhow::ensure!(
            p.start_lba + p.sectors <= u32::MAX as u64 + 1,
            "partition {} ends past 2 TiB, which an MBR cannot address; use --table gpt",
            i + 1
        );
        let e = &mut b[446 + 16 * i..446 + 16 * (i + 1)];
        e[0] = if p.bootable { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(p.start_lba));
        e[4] = p.kind;
        e[5..8].copy_from_slice(&chs(p.start_lba + p.sectors - 1));
        e[8..12].copy_from_slice(&(p.start_lba as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(p.sectors as u32).to_le_bytes());
    }
    b[510] = 0x55;
    b[511] = 0xaa;
    Ok(b)
}

/// The protective MBR of a GPT disk (UEFI 2.x §5.2.3): one 0xEE partition from LBA 1 to
/// the end of the disk (or 0xFFFFFFFF sectors when larger), CHS start 0/0/2.
pub fn protective(total_sectors: u64) -> [u8; 512] {
    let mut b = [0u8; 512];
    let e = &mut b[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]);
    e[4] = TYPE_GPT_PROTECTIVE;
    e[5..8].copy_from_slice(&chs(total_sectors - 1));
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = (total_sectors - 1).min(u32::MAX as u64) as u32;
    e[12..16].copy_from_slice(&size.to_le_bytes());
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_at_1mib() {
        let b = mbr(
            0x1234_5678,
            &[MbrPartition {
                bootable: false,
                kind: TYPE_LINUX,
                start_lba: 2048,
                sectors: 260096,
            }],
        )
        .unwrap();
        assert_eq!(&b[440..444], &[0x78, 0x56, 0x34, 0x12]);
        // bytes as sfdisk 2.38 writes them for start=2048 size=260096 type=83
        assert_eq!(
            &b[446..462],
            &[
                0x00, 0x20, 0x21, 0x00, 0x83, 0x51, 0x01, 0x10, 0x00, 0x08, 0x00, 0x00, 0x00, 0xf8,
                0x03, 0x00
            ]
        );
        assert_eq!(&b[510..], &[0x55, 0xaa]);
    }

    #[test]
    fn chs_saturates() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(u32::MAX as u64), [0xfe, 0xff, 0xff]);
    }
}
