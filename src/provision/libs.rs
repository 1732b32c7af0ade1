//! The shared libraries a dynamically linked agent needs, found the way the dynamic loader
//! would find them on a system root: Kata's `add_libs.sh` job, done for the whole closure
//! instead of a hard-coded libutil. Used where the guest's libraries come from that root
//! (the dracut method: the host is the base).
//!
//! Search order per object, as glibc's ld.so: DT_RPATH (when there is no DT_RUNPATH),
//! DT_RUNPATH, the directories of `/etc/ld.so.conf` (and its `include`s), then the default
//! directories. Candidates built for another machine or class are skipped, as ld.so does.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::elf::{self, Executable};
use crate::arch::Arch;

/// One file the agent needs at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Library {
    /// Where it must be in the guest (absolute; the loader's path, or the directory it was
    /// found in plus the soname).
    pub path: PathBuf,
    /// The file on the root to copy it from.
    pub source: PathBuf,
}

/// The interpreter and every library `bytes` (an ELF executable for `arch`) needs,
/// transitively, from the system root `sysroot` ("/" for the host). Empty for a static
/// binary or a script. A library that cannot be found is an error naming it and who needs it.
pub fn closure(bytes: &[u8], arch: Arch, sysroot: &Path) -> Result<Vec<Library>> {
    let Some(top) = elf::dynamic(bytes).map_err(|e| anyhow::anyhow!("the agent: {e}"))? else {
        return Ok(Vec::new());
    };
    let dirs = search_dirs(sysroot)?;
    let mut out: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    if let Some(interp) = &top.interp {
        let source = in_root(sysroot, Path::new(interp));
        if !source.exists() {
            bail!(
                "the agent's dynamic loader {interp} is not on {}: give a static agent, or \
                 one built for this system",
                sysroot.display()
            );
        }
        out.insert(PathBuf::from(interp), canonical(&source)?);
    }
    let mut seen: Vec<String> = Vec::new();
    let mut queue: VecDeque<(String, elf::Dynamic)> = VecDeque::new();
    queue.push_back(("the agent".to_string(), top));
    while let Some((who, d)) = queue.pop_front() {
        for soname in &d.needed {
            if seen.contains(soname) {
                continue;
            }
            seen.push(soname.clone());
            let own: &[String] = if d.runpath.is_empty() {
                &d.rpath
            } else {
                &d.runpath
            };
            if own
                .iter()
                .any(|p| p.contains("$ORIGIN") || p.contains("${ORIGIN}"))
            {
                bail!(
                    "{who} looks for libraries relative to itself ($ORIGIN in its RUNPATH); \
                     osbuilder cannot place those: give a static agent or one linked against \
                     system libraries"
                );
            }
            let candidates = own.iter().map(PathBuf::from).chain(dirs.iter().cloned());
            let Some((dir, bytes)) = find(sysroot, candidates, soname, arch) else {
                bail!(
                    "{who} needs {soname}, which is not in the library path of {} ({}); \
                     install the package that provides it, or give a static agent",
                    sysroot.display(),
                    dirs.iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(":")
                );
            };
            let host = in_root(sysroot, &dir.join(soname));
            // Place it in the directory it really lives in (merged-/usr: /usr/lib/...).
            let real_dir = canonical(&in_root(sysroot, &dir))?;
            let guest_dir = match real_dir.strip_prefix(sysroot) {
                Ok(rel) => Path::new("/").join(rel),
                Err(_) => dir.clone(),
            };
            out.insert(guest_dir.join(soname), canonical(&host)?);
            if let Some(next) =
                elf::dynamic(&bytes).map_err(|e| anyhow::anyhow!("{soname}: {e}"))?
            {
                queue.push_back((soname.clone(), next));
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|(path, source)| Library { path, source })
        .collect())
}

fn canonical(p: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(p).with_context(|| format!("resolving {}", p.display()))
}

/// `p` (absolute, as the guest sees it) on the root `sysroot`.
fn in_root(sysroot: &Path, p: &Path) -> PathBuf {
    sysroot.join(p.strip_prefix("/").unwrap_or(p))
}

/// The first of `dirs` holding `soname` built for `arch`, and its bytes.
fn find(
    sysroot: &Path,
    dirs: impl Iterator<Item = PathBuf>,
    soname: &str,
    arch: Arch,
) -> Option<(PathBuf, Vec<u8>)> {
    for dir in dirs {
        let p = in_root(sysroot, &dir.join(soname));
        let Ok(bytes) = std::fs::read(&p) else {
            continue;
        };
        if matches!(elf::inspect(&bytes), Executable::Elf { arch: Some(a), .. } if a == arch) {
            return Some((dir, bytes));
        }
    }
    None
}

/// The loader's directories on `sysroot`: /etc/ld.so.conf (with includes), then the
/// defaults of a 64-bit loader (every architecture osbuilder targets is 64-bit).
fn search_dirs(sysroot: &Path) -> Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    read_ld_so_conf(sysroot, Path::new("/etc/ld.so.conf"), &mut dirs, 0)?;
    for d in ["/lib64", "/usr/lib64", "/lib", "/usr/lib"] {
        let d = PathBuf::from(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    Ok(dirs)
}

fn read_ld_so_conf(
    sysroot: &Path,
    file: &Path,
    dirs: &mut Vec<PathBuf>,
    depth: usize,
) -> Result<()> {
    if depth > 8 {
        return Ok(());
    }
    let Ok(text) = std::fs::read_to_string(in_root(sysroot, file)) else {
        return Ok(());
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(pattern) = line.strip_prefix("include").map(str::trim) {
            for f in glob(sysroot, pattern) {
                read_ld_so_conf(sysroot, &f, dirs, depth + 1)?;
            }
        } else {
            let d = PathBuf::from(line);
            if d.is_absolute() && !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    Ok(())
}

/// The files matching an ld.so.conf include pattern (`dir/*.conf`: one `*` in the last
/// component), sorted as ldconfig reads them.
fn glob(sysroot: &Path, pattern: &str) -> Vec<PathBuf> {
    let p = Path::new(pattern);
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let (prefix, suffix) = name.split_once('*').unwrap_or((name, ""));
    let exact = !name.contains('*');
    let mut out: Vec<PathBuf> = std::fs::read_dir(in_root(sysroot, dir))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let hit = if exact {
                n == name
            } else {
                n.len() >= prefix.len() + suffix.len()
                    && n.starts_with(prefix)
                    && n.ends_with(suffix)
            };
            hit.then(|| dir.join(n))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_shell_needs_libc_and_its_loader() {
        let sh = std::fs::read("/bin/sh").unwrap();
        let arch = Arch::host().unwrap();
        let libs = closure(&sh, arch, Path::new("/")).unwrap();
        assert!(
            libs.iter()
                .any(|l| l.path.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        let libc = libs
            .iter()
            .find(|l| l.path.file_name().unwrap() == "libc.so.6")
            .expect("libc in the closure");
        assert!(libc.source.is_file() && libc.path.is_absolute());
        assert!(
            closure(crate::agent::reference_agent(), arch, Path::new("/"))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_missing_library_is_named() {
        // A root with the loader's config and /bin/sh, but no libc: the closure must fail.
        let d = tempfile::tempdir().unwrap();
        let sh = std::fs::read("/bin/sh").unwrap();
        let interp = elf::dynamic(&sh).unwrap().unwrap().interp.unwrap();
        let loader = in_root(d.path(), Path::new(&interp));
        std::fs::create_dir_all(loader.parent().unwrap()).unwrap();
        std::fs::write(&loader, b"not really").unwrap();
        let e = closure(&sh, Arch::host().unwrap(), d.path())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs libc.so.6") && e.contains("static agent"),
            "{e}"
        );
    }
}
