//! Just enough ELF to tell which machine a binary was built for.

use crate::arch::Arch;

#[derive(Debug, PartialEq, Eq)]
pub enum Executable {
    /// An ELF file; `arch` is None for a machine osbuilder does not target.
    Elf {
        arch: Option<Arch>,
        machine: u16,
        big_endian: bool,
        dynamic: bool,
    },
    /// A `#!` script and its interpreter line.
    Script(String),
    Other,
}

pub fn inspect(bytes: &[u8]) -> Executable {
    if let Some(rest) = bytes.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
        return Executable::Script(String::from_utf8_lossy(line).trim().to_string());
    }
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Executable::Other;
    }
    let is64 = bytes[4] == 2;
    let big_endian = bytes[5] == 2;
    let u16_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1]];
        if big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |o: usize| {
        let b = [bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]];
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[o..o + 8]);
        if big_endian {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        }
    };
    let machine = u16_at(18);
    // A PT_INTERP program header means the binary needs a dynamic loader in the rootfs.
    let (phoff, phentsize, phnum) = if is64 {
        (
            u64_at(32) as usize,
            u16_at(54) as usize,
            u16_at(56) as usize,
        )
    } else {
        (
            u32_at(28) as usize,
            u16_at(42) as usize,
            u16_at(44) as usize,
        )
    };
    let dynamic = (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        o + 4 <= bytes.len() && u32_at(o) == 3 // PT_INTERP
    });
    Executable::Elf {
        arch: Arch::from_elf(machine, big_endian),
        machine,
        big_endian,
        dynamic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_binaries_are_recognised() {
        let sh = std::fs::read("/bin/sh").unwrap();
        match inspect(&sh) {
            Executable::Elf { arch, dynamic, .. } => {
                assert_eq!(arch, Arch::host());
                assert!(dynamic, "/bin/sh is dynamically linked on Debian");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scripts_and_junk() {
        assert_eq!(
            inspect(b"#!/bin/sh\necho"),
            Executable::Script("/bin/sh".into())
        );
        assert_eq!(inspect(b"hello"), Executable::Other);
    }

    #[test]
    fn foreign_headers() {
        // Minimal 64-bit big-endian s390x header, no program headers.
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 2;
        h[18..20].copy_from_slice(&22u16.to_be_bytes());
        assert_eq!(
            inspect(&h),
            Executable::Elf {
                arch: Some(Arch::S390x),
                machine: 22,
                big_endian: true,
                dynamic: false
            }
        );
        // aarch64, little-endian.
        h[5] = 1;
        h[18..20].copy_from_slice(&183u16.to_le_bytes());
        assert!(matches!(
            inspect(&h),
            Executable::Elf {
                arch: Some(Arch::Aarch64),
                ..
            }
        ));
    }
}
