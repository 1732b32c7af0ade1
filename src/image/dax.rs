//! The DAX header Kata's nsdax writes: an `nd_pfn_sb` info block at 4 KiB that lets a
//! DAX-capable guest map the image (exposed as an NVDIMM) with 2 MiB alignment.
//!
//! Layout of `struct nd_pfn_sb` (Linux drivers/nvdimm/pfn.h, minor version 2), all
//! little-endian: signature[16] uuid[16] parent_uuid[16] flags:u32 version_major:u16
//! version_minor:u16 dataoff:u64 npfns:u64 mode:u32 start_pad:u32 end_trunc:u32
//! align:u32 padding[4000] checksum:u64 — 4096 bytes.

/// Bytes in front of the original image: MBR#1 + the info block, padded to 2 MiB.
pub const HEADER_BYTES: u64 = 2 << 20;
/// Where the kernel looks for the info block.
pub const INFO_OFFSET: u64 = 4096;
/// Kata runs `nsdax header 2097152 2097152`: data offset and alignment are both 2 MiB.
pub const DATA_OFFSET: u64 = 2 << 20;
pub const ALIGN: u32 = 2 << 20;
const PFN_MODE_RAM: u32 = 1;
pub const SIGNATURE: &[u8; 16] = b"NVDIMM_PFN_INFO\0";
pub const CHECKSUM_OFFSET: usize = 4088;

/// The 4 KiB info block, byte for byte what Kata's nsdax.gpl.c writes.
pub fn pfn_info_block() -> [u8; 4096] {
    let mut b = [0u8; 4096];
    b[0..16].copy_from_slice(SIGNATURE);
    // uuid, parent_uuid, flags, version_major: zero.
    b[54..56].copy_from_slice(&2u16.to_le_bytes()); // version_minor
    b[56..64].copy_from_slice(&DATA_OFFSET.to_le_bytes()); // dataoff
    // npfns (64..72): zero, the kernel computes it.
    b[72..76].copy_from_slice(&PFN_MODE_RAM.to_le_bytes()); // mode
    // start_pad (76..80), end_trunc (80..84): zero.
    b[84..88].copy_from_slice(&ALIGN.to_le_bytes()); // align
    let sum = fletcher64(&b);
    b[CHECKSUM_OFFSET..].copy_from_slice(&sum.to_le_bytes());
    b
}

/// The nvdimm fletcher64 over little-endian u32 words (checksum field taken as zero by
/// the caller): lo accumulates words mod 2^32, hi accumulates lo in 64 bits.
pub fn fletcher64(data: &[u8]) -> u64 {
    let mut lo: u32 = 0;
    let mut hi: u64 = 0;
    for w in data.chunks_exact(4) {
        lo = lo.wrapping_add(u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        hi = hi.wrapping_add(lo as u64);
    }
    (hi << 32) | lo as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_block_fields_and_checksum() {
        let b = pfn_info_block();
        assert_eq!(&b[..16], SIGNATURE);
        assert_eq!(u64::from_le_bytes(b[56..64].try_into().unwrap()), 2 << 20);
        assert_eq!(u32::from_le_bytes(b[72..76].try_into().unwrap()), 1);
        assert_eq!(u32::from_le_bytes(b[84..88].try_into().unwrap()), 2 << 20);
        let mut z = b;
        z[CHECKSUM_OFFSET..].fill(0);
        assert_eq!(
            u64::from_le_bytes(b[CHECKSUM_OFFSET..].try_into().unwrap()),
            fletcher64(&z)
        );
    }
}
