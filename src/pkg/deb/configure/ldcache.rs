//! /etc/ld.so.cache, written as the target's own `ldconfig` (glibc ≥ 2.33, "new" format
//! only) writes it, for any target architecture: no code of the target runs and the
//! host's ldconfig is not used (an x86_64 ldconfig does not give arm64 or s390x libraries
//! their cache flags, and writes its own byte order).
//!
//! As ldconfig does: directories from /etc/ld.so.conf (with its `include` globs), then
//! the system directories (/lib, /usr/lib); a directory reached twice (/lib/TRIPLET is
//! /usr/lib/TRIPLET in merged-/usr) is scanned once, under its first name; glibc-hwcaps
//! subdirectories;
//! each `lib*.so*`/`ld-*.so*` file or symlink that is an ELF shared object of the
//! target's class and machine, keyed by its DT_SONAME; per soname the regular file wins
//! over a symlink and the newer name over the older; missing soname links are created.
//! Entries sorted with `_dl_cache_libcmp` (descending), strings deduplicated with suffix
//! merging (stringtable.c), the generator extension carrying the target ldconfig's own
//! version string, all in the target's byte order.

use std::collections::HashMap;

use anyhow::Result;

use crate::arch::Arch;
use crate::pkg::extract::{Attrs, Extractor};
use crate::tree::mtree::MType;

const FLAG_ELF_LIBC6: i32 = 0x0003;
const DL_CACHE_HWCAP_EXTENSION: u64 = 1 << 62;
const EXTENSION_MAGIC: u32 = 0xeaa4_2174;

/// The cache flags of a 64-bit library of `arch` (readelflib.c of each port).
fn flags(arch: Arch) -> i32 {
    FLAG_ELF_LIBC6
        | match arch {
            Arch::X86_64 => 0x0300,
            Arch::S390x => 0x0400,
            Arch::Ppc64le => 0x0500,
            Arch::Aarch64 => 0x0a00,
        }
}

/// glibc's `_dl_cache_libcmp`: digit runs compare numerically.
pub fn libcmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() {
        if a[i].is_ascii_digit() {
            if j < b.len() && b[j].is_ascii_digit() {
                let (mut x, mut y) = (0u64, 0u64);
                while i < a.len() && a[i].is_ascii_digit() {
                    x = x * 10 + (a[i] - b'0') as u64;
                    i += 1;
                }
                while j < b.len() && b[j].is_ascii_digit() {
                    y = y * 10 + (b[j] - b'0') as u64;
                    j += 1;
                }
                if x != y {
                    return x.cmp(&y);
                }
            } else {
                return Ordering::Greater;
            }
        } else if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        } else if j >= b.len() || a[i] != b[j] {
            return a[i].cmp(b.get(j).unwrap_or(&0));
        } else {
            i += 1;
            j += 1;
        }
    }
    0u8.cmp(b.get(j).unwrap_or(&0))
}

fn is_dso(name: &str) -> bool {
    (name.starts_with("lib")
        || name.starts_with("ld-")
        || name.starts_with("ld.so.")
        || name.starts_with("ld64.so."))
        && name.contains(".so")
}

/// An ELF shared object's DT_SONAME (Some("") when it has none), if it is a shared object
/// of the target's class, byte order and machine.
pub fn elf_soname(data: &[u8], arch: Arch) -> Option<String> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return None;
    }
    let be = data[5] == 2;
    if be != arch.big_endian() {
        return None;
    }
    let u16_at = |o: usize| -> Option<u64> {
        let b: [u8; 2] = data.get(o..o + 2)?.try_into().ok()?;
        Some(if be {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        } as u64)
    };
    let u32_at = |o: usize| -> Option<u64> {
        let b: [u8; 4] = data.get(o..o + 4)?.try_into().ok()?;
        Some(if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        } as u64)
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = data.get(o..o + 8)?.try_into().ok()?;
        Some(if be {
            u64::from_be_bytes(b)
        } else {
            u64::from_le_bytes(b)
        })
    };
    if u16_at(18)? != arch.elf_machine() as u64 {
        return None;
    }
    let phoff = u64_at(32)? as usize;
    let phentsize = u16_at(54)? as usize;
    let phnum = u16_at(56)? as usize;
    let mut loads = Vec::new();
    let mut dynamic = None;
    for k in 0..phnum {
        let p = phoff + k * phentsize;
        let ty = u32_at(p)?;
        let off = u64_at(p + 8)?;
        let vaddr = u64_at(p + 16)?;
        let filesz = u64_at(p + 32)?;
        match ty {
            1 => loads.push((vaddr, off, filesz)),
            2 => dynamic = Some((off, filesz)),
            _ => {}
        }
    }
    let (doff, dsize) = dynamic?;
    let to_off = |va: u64| {
        loads
            .iter()
            .find(|(v, _, sz)| va >= *v && va < v + sz)
            .map(|(v, o, _)| (va - v + o) as usize)
    };
    let (mut strtab, mut soname) = (None, None);
    let mut k = 0;
    while k + 16 <= dsize as usize {
        let tag = u64_at(doff as usize + k)?;
        let val = u64_at(doff as usize + k + 8)?;
        match tag {
            0 => break,
            5 => strtab = Some(val),
            14 => soname = Some(val),
            _ => {}
        }
        k += 16;
    }
    let Some(so) = soname else {
        return Some(String::new());
    };
    let start = to_off(strtab?)? + so as usize;
    let end = data.get(start..)?.iter().position(|b| *b == 0)? + start;
    Some(String::from_utf8_lossy(&data[start..end]).into_owned())
}

struct Entry {
    lib: String,
    path: String,
    flags: i32,
    hwcaps: Option<String>,
}

/// The directories ldconfig scans, in order (config, then system directories).
fn config_dirs(ex: &mut Extractor) -> Result<Vec<String>> {
    let mut dirs = Vec::new();
    parse_conf(ex, "/etc/ld.so.conf", &mut dirs, 0)?;
    // Debian's glibc is built with slibdir=/lib and libdir=/usr/lib (the multiarch
    // directories come from /etc/ld.so.conf.d); `ldconfig -v` lists them as <builtin>.
    dirs.push("/lib".into());
    dirs.push("/usr/lib".into());
    Ok(dirs)
}

fn parse_conf(ex: &mut Extractor, path: &str, dirs: &mut Vec<String>, depth: u32) -> Result<()> {
    if depth > 8 {
        return Ok(());
    }
    let Some(text) = ex.read_file(path.trim_start_matches('/').as_bytes())? else {
        return Ok(());
    };
    for line in String::from_utf8_lossy(&text).lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("include") {
            if rest.starts_with([' ', '\t']) {
                for pat in rest.split_whitespace() {
                    let (dir, base) = pat.rsplit_once('/').unwrap_or(("", pat));
                    let mut names: Vec<String> = ex
                        .read_dir(dir.trim_start_matches('/').as_bytes())?
                        .unwrap_or_default()
                        .iter()
                        .map(|n| String::from_utf8_lossy(n).into_owned())
                        .filter(|n| super::shell::glob_match(base, n) && !n.starts_with('.'))
                        .collect();
                    names.sort();
                    for n in names {
                        parse_conf(ex, &format!("{dir}/{n}"), dirs, depth + 1)?;
                    }
                }
                continue;
            }
        }
        if line.len() > 5 && line[..5].eq_ignore_ascii_case("hwcap") {
            continue;
        }
        let p = line
            .split('=')
            .next()
            .unwrap_or(line)
            .trim_end_matches('/')
            .to_string();
        if !p.is_empty() {
            dirs.push(p);
        }
    }
    Ok(())
}

/// The soname link ldconfig would create (dir, link name, target) for entries whose link
/// is missing.
type Link = (String, String, String);

fn scan_dir(
    ex: &mut Extractor,
    arch: Arch,
    dir: &str,
    hwcaps: Option<&str>,
    out: &mut Vec<Entry>,
    links: &mut Vec<Link>,
) -> Result<()> {
    let names = ex
        .read_dir(dir.trim_start_matches('/').as_bytes())?
        .unwrap_or_default();
    // soname → (file name, is_link)
    let mut libs: Vec<(String, String, bool)> = Vec::new();
    for n in names {
        let name = String::from_utf8_lossy(&n).into_owned();
        if !is_dso(&name) || name.ends_with(".#prelink#") {
            continue;
        }
        let rel = format!("{}/{name}", dir.trim_start_matches('/'));
        let Some(l) = ex.lstat(rel.as_bytes())? else {
            continue;
        };
        let mut is_link = l.kind == MType::Link;
        if !matches!(l.kind, MType::File | MType::Link) {
            continue;
        }
        let Some(st) = ex.stat(rel.as_bytes())? else {
            continue;
        };
        if st.kind != MType::File {
            continue;
        }
        let Some(data) = ex.read_file(rel.as_bytes())? else {
            continue;
        };
        let Some(mut soname) = elf_soname(&data, arch) else {
            continue;
        };
        if soname.is_empty() {
            soname = name.clone();
        }
        if is_link && name != soname {
            // Only the soname link and the `.so` link for ld(1) count as links.
            if !(name.ends_with(".so") && soname.starts_with(&name)) {
                is_link = false;
            }
        }
        if is_link {
            soname = name.clone();
        }
        match libs.iter_mut().find(|(s, _, _)| *s == soname) {
            Some(e) => {
                if (!is_link && e.2) || (is_link == e.2 && libcmp(&e.1, &name).is_lt()) {
                    e.1 = name;
                    e.2 = is_link;
                }
            }
            None => libs.push((soname, name, is_link)),
        }
    }
    for (soname, name, is_link) in libs {
        let file = if hwcaps.is_some() {
            name.clone()
        } else {
            soname.clone()
        };
        if hwcaps.is_none() && !is_link && soname != name {
            links.push((dir.to_string(), soname.clone(), name.clone()));
        }
        out.push(Entry {
            lib: soname,
            path: format!("{dir}/{file}"),
            flags: flags(arch),
            hwcaps: hwcaps.map(String::from),
        });
    }
    Ok(())
}

/// The target ldconfig's generator string (`ldconfig (Debian GLIBC …) stable release
/// version …`), read from its binary without running it.
fn generator(ex: &mut Extractor) -> Result<Option<String>> {
    for p in ["usr/sbin/ldconfig", "sbin/ldconfig"] {
        if let Some(bin) = ex.read_file(p.as_bytes())? {
            for chunk in bin.split(|b| *b == 0) {
                if chunk.starts_with(b"ldconfig ") && find(chunk, b" release version ").is_some() {
                    return Ok(Some(String::from_utf8_lossy(chunk).into_owned()));
                }
            }
        }
    }
    Ok(None)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Run the equivalent of the target's `ldconfig`: create missing soname links and write
/// /etc/ld.so.cache. Returns false when the rootfs has no ldconfig (no cache is made).
pub fn ldconfig(ex: &mut Extractor, arch: Arch, mtime: i64) -> Result<bool> {
    let Some(generator_text) = generator(ex)? else {
        return Ok(false);
    };
    let mut seen: Vec<String> = Vec::new();
    let mut entries = Vec::new();
    let mut links = Vec::new();
    for dir in config_dirs(ex)? {
        let Some(real) = ex.resolve(dir.trim_start_matches('/').as_bytes())? else {
            continue;
        };
        if !ex.lstat(&real)?.is_some_and(|s| s.kind == MType::Dir) {
            continue;
        }
        let real = String::from_utf8_lossy(&real).into_owned();
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        scan_dir(ex, arch, &dir, None, &mut entries, &mut links)?;
        let hw = format!("{}/glibc-hwcaps", dir.trim_start_matches('/'));
        for sub in ex.read_dir(hw.as_bytes())?.unwrap_or_default() {
            let s = String::from_utf8_lossy(&sub).into_owned();
            if s.starts_with('.') || s.contains(':') {
                continue;
            }
            let sd = format!("{dir}/glibc-hwcaps/{s}");
            if ex
                .stat(sd.trim_start_matches('/').as_bytes())?
                .is_some_and(|x| x.kind == MType::Dir)
            {
                scan_dir(ex, arch, &sd, Some(&s), &mut entries, &mut links)?;
            }
        }
    }
    for (dir, soname, target) in links {
        let at = format!("{}/{soname}", dir.trim_start_matches('/'));
        if ex.lstat(at.as_bytes())?.is_none() {
            ex.symlink(at.as_bytes(), target.as_bytes(), Attrs::root(0o777, mtime))?;
        }
    }
    let data = encode(entries, &generator_text, arch.big_endian());
    ex.write_file(
        b"etc/ld.so.cache",
        &mut data.as_slice(),
        Attrs::root(0o644, mtime),
    )?;
    Ok(true)
}

/// glibc's cache entry order (`compare` in cache.c), entries with equal keys kept in
/// the order they were found.
fn sort(entries: &mut [Entry]) {
    entries.sort_by(|a, b| {
        libcmp(&b.lib, &a.lib)
            .then(b.flags.cmp(&a.flags))
            .then(match (&a.hwcaps, &b.hwcaps) {
                (Some(x), Some(y)) => x.cmp(y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            })
    });
}

/// stringtable.c: strings sorted by reversed content (longer first), suffixes shared.
fn string_table(strings: &[String]) -> (Vec<u8>, HashMap<String, u32>) {
    let mut uniq: Vec<&String> = strings.iter().collect();
    uniq.sort();
    uniq.dedup();
    uniq.sort_by(|l, r| {
        let (l, r) = (l.as_bytes(), r.as_bytes());
        let n = l.len().min(r.len());
        for i in 1..=n {
            let (a, b) = (l[l.len() - i], r[r.len() - i]);
            if a != b {
                return b.cmp(&a);
            }
        }
        r.len().cmp(&l.len())
    });
    let mut offsets = HashMap::new();
    let mut prev: Option<(&String, u32)> = None;
    let mut size = 0u32;
    for s in uniq {
        let off = match prev {
            Some((p, po)) if p.len() >= s.len() && p.ends_with(s.as_str()) => {
                po + (p.len() - s.len()) as u32
            }
            Some((p, po)) => po + p.len() as u32 + 1,
            None => 0,
        };
        size = size.max(off + s.len() as u32 + 1);
        offsets.insert(s.clone(), off);
        prev = Some((s, off));
    }
    let mut table = vec![0u8; size as usize];
    for (s, off) in &offsets {
        let o = *off as usize;
        if table[o] == 0 {
            table[o..o + s.len()].copy_from_slice(s.as_bytes());
        }
    }
    (table, offsets)
}

fn encode(mut entries: Vec<Entry>, generator: &str, be: bool) -> Vec<u8> {
    sort(&mut entries);
    let mut hw_names: Vec<String> = entries.iter().filter_map(|e| e.hwcaps.clone()).collect();
    hw_names.sort();
    hw_names.dedup();
    let mut strings: Vec<String> = Vec::new();
    for e in &entries {
        strings.push(e.path.clone());
        strings.push(e.lib.clone());
    }
    strings.extend(hw_names.iter().cloned());
    let (table, offs) = string_table(&strings);
    let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let n = entries.len() as u32;
    let header = 48u32;
    let str_offset = header + 24 * n;
    let ext_offset = (str_offset + table.len() as u32).div_ceil(4) * 4;
    let mut out = Vec::new();
    out.extend(b"glibc-ld.so.cache1.1");
    out.extend(u32b(n));
    out.extend(u32b(table.len() as u32));
    out.push(if be { 3 } else { 2 });
    out.extend([0u8; 3]);
    out.extend(u32b(ext_offset));
    out.extend([0u8; 12]);
    for e in &entries {
        let hwcap: u64 = match &e.hwcaps {
            Some(h) => {
                DL_CACHE_HWCAP_EXTENSION | hw_names.iter().position(|x| x == h).unwrap_or(0) as u64
            }
            None => 0,
        };
        out.extend(if be {
            e.flags.to_be_bytes()
        } else {
            e.flags.to_le_bytes()
        });
        out.extend(u32b(str_offset + offs[&e.lib]));
        out.extend(u32b(str_offset + offs[&e.path]));
        out.extend(u32b(0));
        out.extend(if be {
            hwcap.to_be_bytes()
        } else {
            hwcap.to_le_bytes()
        });
    }
    out.extend(&table);
    out.resize(ext_offset as usize, 0);
    // Extension directory: the generator, then the glibc-hwcaps names if any.
    let sections = if hw_names.is_empty() { 1 } else { 2 };
    let dir_size = 8 + 16 * sections;
    let hw_offset = ext_offset + dir_size;
    let hw_size = 4 * hw_names.len() as u32;
    let gen_offset = hw_offset + hw_size;
    out.extend(u32b(EXTENSION_MAGIC));
    out.extend(u32b(sections));
    out.extend(u32b(0)); // tag: generator
    out.extend(u32b(0));
    out.extend(u32b(gen_offset));
    out.extend(u32b(generator.len() as u32));
    if !hw_names.is_empty() {
        out.extend(u32b(1)); // tag: glibc-hwcaps
        out.extend(u32b(0));
        out.extend(u32b(hw_offset));
        out.extend(u32b(hw_size));
        for h in &hw_names {
            out.extend(u32b(str_offset + offs[h]));
        }
    }
    out.extend(generator.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libcmp_compares_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(libcmp("libz.so.1", "libz.so.1"), Equal);
        assert_eq!(libcmp("libfoo.so.10", "libfoo.so.9"), Greater);
        assert_eq!(libcmp("libx.so", "libx.so.1"), Less);
        assert_eq!(libcmp("libb.so", "liba.so"), Greater);
    }

    #[test]
    fn strings_share_suffixes() {
        let s = vec!["/lib/libz.so.1".to_string(), "libz.so.1".to_string()];
        let (t, o) = string_table(&s);
        assert_eq!(t, b"/lib/libz.so.1\0");
        assert_eq!(o["libz.so.1"], 5);
    }
}
