//! Which kernel's modules go into a dracut initrd, and a module folder dracut accepts.
//!
//! `--kver V` alone takes the host's `/lib/modules/V`; `--kmoddir DIR` takes any folder of
//! a kernel's modules (`osbuilder kernel fetch` writes `DIR/modules/<release>/`), its name
//! being the release when `--kver` is not given. dracut wants `…/lib/modules/<kver>` with
//! depmod's index in it, so the folder is staged in the build's scratch space as links to
//! the real subfolders plus copies of the index files, and depmod (from kmod) writes the
//! index there when the folder has none (a kernel package's modules, unpacked without its
//! maintainer scripts). The user's folder is never written to.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::error::refused;

/// The kernel whose modules the initrd gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelModules {
    /// The release (`uname -r`).
    pub kver: String,
    /// The folder holding `kernel/`, `modules.order`, `modules.builtin`…
    pub dir: PathBuf,
    /// Whether depmod's index is there already (else [`stage`] runs depmod).
    pub indexed: bool,
}

/// What `--kver` / `--kmoddir` ask for, checked before any work; None without either
/// (then the initrd gets no modules, as Kata's `--no-kernel`).
pub fn resolve(kver: Option<&str>, kmoddir: Option<&Path>) -> Result<Option<KernelModules>> {
    let (kver, dir) = match (kver, kmoddir) {
        (None, None) => return Ok(None),
        (Some(v), None) => {
            let dir = Path::new("/lib/modules").join(v);
            if !dir.is_dir() {
                return Err(refused(format!(
                    "--kver {v}: this host has no modules for that kernel ({} does not \
                     exist); give the folder with --kmoddir DIR (`osbuilder kernel fetch -o K` \
                     writes K/modules/<release>), or leave out --kver for an initrd without \
                     modules",
                    dir.display()
                )));
            }
            (v.to_string(), dir)
        }
        (v, Some(d)) => {
            let name = d
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (v.map(str::to_string).unwrap_or(name), d.to_path_buf())
        }
    };
    let has = |f: &str| dir.join(f).exists();
    if !dir.is_dir() || !(has("modules.order") || has("modules.dep") || has("kernel")) {
        return Err(refused(format!(
            "--kmoddir {}: not a folder of kernel modules (no modules.order, modules.dep or \
             kernel/ in it); give the modules of kernel {kver}, e.g. K/modules/{kver} from \
             `osbuilder kernel fetch -o K`",
            dir.display()
        )));
    }
    if kver.is_empty() || kver.contains('/') || kver.starts_with('.') {
        return Err(refused(format!(
            "'{kver}' is not a kernel release; give --kver V (as `uname -r` prints it)"
        )));
    }
    let indexed = has("modules.dep") && has("modules.dep.bin");
    Ok(Some(KernelModules { kver, dir, indexed }))
}

/// Whether staging these modules needs depmod.
pub fn needs_depmod(m: &KernelModules) -> bool {
    !m.indexed
}

/// Make `<base>/lib/modules/<kver>` for dracut's `--kmoddir` and return it.
pub fn stage(m: &KernelModules, base: &Path) -> Result<PathBuf> {
    let dest = base.join("lib/modules").join(&m.kver);
    std::fs::create_dir_all(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let src =
        std::fs::canonicalize(&m.dir).with_context(|| format!("resolving {}", m.dir.display()))?;
    let mut entries: Vec<_> = std::fs::read_dir(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let ft = e.file_type()?;
        let to = dest.join(e.file_name());
        if ft.is_dir() {
            std::os::unix::fs::symlink(e.path(), &to)
                .with_context(|| format!("linking {}", to.display()))?;
        } else if ft.is_file() {
            std::fs::copy(e.path(), &to).with_context(|| format!("copying {}", to.display()))?;
        }
        // Other symlinks (build/, source/ into kernel headers) are of no use to dracut.
    }
    if needs_depmod(m) {
        let mut cmd = crate::image::fs::tool("depmod");
        cmd.arg("-b").arg(base).arg(&m.kver);
        let out = super::run::output(&mut cmd, "depmod")?;
        if !out.status.success() {
            anyhow::bail!(
                "depmod -b {} {} failed ({}): {}",
                base.display(),
                m.kver,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kver_and_kmoddir_are_checked() {
        let e = resolve(Some("0.0.0-osbuilder-none"), None).unwrap_err();
        assert!(crate::error::is_refused(&e));
        assert!(e.to_string().contains("--kmoddir"), "{e}");
        assert_eq!(resolve(None, None).unwrap(), None);
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("6.1.0-test");
        std::fs::create_dir(&m).unwrap();
        let e = resolve(None, Some(&m)).unwrap_err();
        assert!(
            e.to_string().contains("not a folder of kernel modules"),
            "{e}"
        );
        std::fs::write(m.join("modules.order"), "").unwrap();
        std::fs::create_dir(m.join("kernel")).unwrap();
        let k = resolve(None, Some(&m)).unwrap().unwrap();
        assert_eq!((k.kver.as_str(), k.indexed), ("6.1.0-test", false));
        let k = resolve(Some("6.1.0-other"), Some(&m)).unwrap().unwrap();
        assert_eq!(k.kver, "6.1.0-other");
        assert!(resolve(Some("../x"), Some(&m)).is_err());
        // Staging links the folders and copies the files, never writing into the source.
        std::fs::write(m.join("modules.dep"), "").unwrap();
        std::fs::write(m.join("modules.dep.bin"), "").unwrap();
        let k = resolve(None, Some(&m)).unwrap().unwrap();
        let base = d.path().join("stage");
        let dest = stage(&k, &base).unwrap();
        assert_eq!(dest, base.join("lib/modules/6.1.0-test"));
        assert!(dest.join("kernel").is_symlink());
        assert!(dest.join("modules.order").is_file());
    }
}
