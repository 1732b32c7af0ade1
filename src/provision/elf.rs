//! Just enough ELF to tell which machine a binary was built for and, for a dynamically
//! linked one, what it needs at run time: its interpreter, DT_NEEDED libraries and search
//! paths (DT_RPATH/DT_RUNPATH), read from the program headers and the dynamic segment.

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

/// What a dynamically linked ELF file needs from the system that runs it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dynamic {
    /// PT_INTERP: the dynamic loader, by absolute path.
    pub interp: Option<String>,
    /// DT_NEEDED sonames, in order.
    pub needed: Vec<String>,
    /// DT_RPATH directories (used only when there is no DT_RUNPATH).
    pub rpath: Vec<String>,
    /// DT_RUNPATH directories.
    pub runpath: Vec<String>,
}

/// Little reader over an ELF file's bytes in its own byte order and class.
struct Elf<'a> {
    b: &'a [u8],
    is64: bool,
    big: bool,
}

impl Elf<'_> {
    fn u16(&self, o: usize) -> Option<u16> {
        let b: [u8; 2] = self.b.get(o..o + 2)?.try_into().ok()?;
        Some(if self.big {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }
    fn u32(&self, o: usize) -> Option<u32> {
        let b: [u8; 4] = self.b.get(o..o + 4)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }
    fn u64(&self, o: usize) -> Option<u64> {
        let b: [u8; 8] = self.b.get(o..o + 8)?.try_into().ok()?;
        Some(if self.big {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    }
    /// A word of the file's class (u32 or u64) at `o`.
    fn word(&self, o: usize) -> Option<u64> {
        if self.is64 {
            self.u64(o)
        } else {
            self.u32(o).map(u64::from)
        }
    }
    fn cstr(&self, o: usize) -> Option<String> {
        let rest = self.b.get(o..)?;
        let end = rest.iter().position(|c| *c == 0)?;
        Some(String::from_utf8_lossy(&rest[..end]).into_owned())
    }
}

/// A program header: (type, file offset, virtual address, size in the file).
type Phdr = (u32, u64, u64, u64);

/// The interpreter, needed libraries and search paths of an ELF file; None when it is not
/// ELF or needs nothing (statically linked, static-pie included). Malformed tables are an
/// error.
pub fn dynamic(bytes: &[u8]) -> Result<Option<Dynamic>, String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Ok(None);
    }
    let e = Elf {
        b: bytes,
        is64: bytes[4] == 2,
        big: bytes[5] == 2,
    };
    let broken = || "its program headers are damaged".to_string();
    let (phoff, phentsize, phnum) = if e.is64 {
        (
            e.u64(32).ok_or_else(broken)?,
            e.u16(54).ok_or_else(broken)?,
            e.u16(56).ok_or_else(broken)?,
        )
    } else {
        (
            e.u32(28).ok_or_else(broken)? as u64,
            e.u16(42).ok_or_else(broken)?,
            e.u16(44).ok_or_else(broken)?,
        )
    };
    let mut phdrs: Vec<Phdr> = Vec::new();
    for i in 0..phnum as usize {
        let o = phoff as usize + i * phentsize as usize;
        let ph = if e.is64 {
            (e.u32(o), e.u64(o + 8), e.u64(o + 16), e.u64(o + 32))
        } else {
            (
                e.u32(o),
                e.u32(o + 4).map(u64::from),
                e.u32(o + 8).map(u64::from),
                e.u32(o + 16).map(u64::from),
            )
        };
        match ph {
            (Some(t), Some(off), Some(vaddr), Some(filesz)) => phdrs.push((t, off, vaddr, filesz)),
            _ => return Err(broken()),
        }
    }
    const PT_LOAD: u32 = 1;
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    let interp = phdrs
        .iter()
        .find(|p| p.0 == PT_INTERP)
        .and_then(|p| e.cstr(p.1 as usize));
    let Some(&(_, dyn_off, _, dyn_size)) = phdrs.iter().find(|p| p.0 == PT_DYNAMIC) else {
        return Ok(interp.map(|i| Dynamic {
            interp: Some(i),
            ..Default::default()
        }));
    };
    // Virtual address → file offset, through the loadable segments.
    let offset_of = |vaddr: u64| {
        phdrs
            .iter()
            .filter(|p| p.0 == PT_LOAD)
            .find(|p| vaddr >= p.2 && vaddr < p.2 + p.3)
            .map(|p| p.1 + (vaddr - p.2))
    };
    let entsize = if e.is64 { 16 } else { 8 };
    let (mut strtab, mut needed, mut rpath, mut runpath) = (None, Vec::new(), None, None);
    for i in 0..(dyn_size / entsize) as usize {
        let o = dyn_off as usize + i * entsize as usize;
        let (Some(tag), Some(val)) = (e.word(o), e.word(o + entsize as usize / 2)) else {
            return Err("its dynamic section is damaged".into());
        };
        match tag {
            0 => break,            // DT_NULL
            1 => needed.push(val), // DT_NEEDED
            5 => strtab = Some(val),
            15 => rpath = Some(val),
            29 => runpath = Some(val),
            _ => {}
        }
    }
    let strtab = match strtab {
        Some(a) => offset_of(a).ok_or("its string table is outside the file")?,
        None if needed.is_empty() => 0,
        None => return Err("it has DT_NEEDED entries but no string table".into()),
    };
    let string = |off: u64| {
        e.cstr((strtab + off) as usize)
            .ok_or_else(|| "a name in its string table is outside the file".to_string())
    };
    let paths = |v: Option<u64>| -> Result<Vec<String>, String> {
        Ok(match v {
            Some(off) => string(off)?
                .split(':')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            None => Vec::new(),
        })
    };
    if interp.is_none() && needed.is_empty() {
        return Ok(None); // static-pie: a dynamic segment for its own relocations only
    }
    Ok(Some(Dynamic {
        interp,
        needed: needed.into_iter().map(string).collect::<Result<_, _>>()?,
        rpath: paths(rpath)?,
        runpath: paths(runpath)?,
    }))
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

    #[test]
    fn dynamic_section_of_a_host_binary() {
        let sh = std::fs::read("/bin/sh").unwrap();
        let d = dynamic(&sh).unwrap().expect("/bin/sh is dynamic");
        assert!(
            d.interp.as_deref().unwrap_or("").contains("ld-linux"),
            "{d:?}"
        );
        assert!(d.needed.iter().any(|n| n.starts_with("libc.so")), "{d:?}");
        assert_eq!(dynamic(b"#!/bin/sh\n").unwrap(), None);
        assert_eq!(dynamic(crate::agent::reference_agent()).unwrap(), None);
    }
}
