//! Outputs that appear atomically: written under a temporary name in the destination
//! folder, fsynced, then renamed. A failed run removes the temporary file; an interrupted
//! one (SIGINT/SIGTERM/SIGHUP) does too, through the handler installed by
//! [`install_signal_cleanup`]. After kill -9 only a hidden `.NAME.partial-PID` file can
//! remain, never anything under the final name — and the next run for that output removes
//! it (see [`sweep`]). Directory outputs and their rules are in [`dir`].

pub mod dir;
pub mod sweep;

pub use dir::{DirKind, Sidecar, StagedDir, check_destination};

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result};

static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Remove pending temporary outputs when the process is interrupted.
pub fn install_signal_cleanup() {
    let _ = ctrlc::set_handler(|| {
        // Children first: nothing may write into a partial output while it is removed.
        crate::process::kill_all();
        if let Ok(list) = PENDING.lock() {
            for p in list.iter() {
                let _ = remove_any(p);
            }
        }
        eprintln!("osbuilder: interrupted; partial outputs removed");
        std::process::exit(130);
    });
}

fn remove_any(p: &Path) -> std::io::Result<()> {
    if p.is_dir() && !p.is_symlink() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

/// Register a temporary path (file or directory) for removal on interruption.
pub fn track(p: &Path) {
    if let Ok(mut list) = PENDING.lock() {
        list.push(p.to_path_buf());
    }
}

pub fn untrack(p: &Path) {
    if let Ok(mut list) = PENDING.lock() {
        list.retain(|x| x != p);
    }
}

/// The folder an output file goes into ("." for a bare name).
pub fn folder_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Linux's limits: 255 bytes per name, 4095 per path.
const NAME_MAX: usize = 255;
const PATH_MAX: usize = 4095;

/// Refuse an output path the kernel would refuse with ENAMETOOLONG, saying which limit.
pub fn check_path_length(p: &Path) -> Result<()> {
    let bytes = p.as_os_str().as_encoded_bytes();
    let longest = p
        .components()
        .map(|c| c.as_os_str().len())
        .max()
        .unwrap_or(0);
    let abs = std::path::absolute(p).map_or(bytes.len(), |a| a.as_os_str().len());
    if longest > NAME_MAX {
        return Err(crate::error::refused(format!(
            "output path {} has a name of {longest} bytes; Linux allows {NAME_MAX} per name: \
             choose a shorter -o",
            crate::show::path(p)
        )));
    }
    if abs > PATH_MAX {
        return Err(crate::error::refused(format!(
            "output path {} is {abs} bytes long; Linux allows {PATH_MAX}: choose a shorter -o",
            crate::show::path(p)
        )));
    }
    Ok(())
}

/// The hidden temporary name osbuilder gives a `tag` ("partial", "work", "old") of output
/// `name` in this process: `.NAME.TAG-PID`. Per process, so concurrent or killed runs never
/// collide; recognisable, so [`sweep`] finds the leftovers of dead ones.
pub fn temp_name(name: &std::ffi::OsStr, tag: &str) -> std::ffi::OsString {
    let mut n = std::ffi::OsString::from(".");
    n.push(name);
    n.push(format!(".{tag}-{}", std::process::id()));
    n
}

/// Make a rename in `dir` durable (best effort).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A file output that appears under its name only when [`AtomicFile::commit`] is called.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    file: File,
    committed: bool,
}

impl AtomicFile {
    /// Create the temporary file now, so an unwritable destination fails before any work.
    pub fn create(dest: &Path) -> Result<AtomicFile> {
        check_path_length(dest)?;
        let dir = folder_of(dest);
        let shown = crate::show::path(dest);
        let name = dest
            .file_name()
            .with_context(|| format!("output path {shown} has no file name"))?;
        if dest.is_dir() {
            anyhow::bail!("output {shown} is a directory; give a file name");
        }
        let md = match std::fs::metadata(&dir) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
                "cannot write output {shown}: folder {} does not exist; create it first",
                crate::show::path(&dir)
            ),
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot write output {shown}: cannot reach folder {}",
                        crate::show::path(&dir)
                    )
                });
            }
        };
        if !md.is_dir() {
            anyhow::bail!(
                "cannot write output {shown}: {} is not a folder",
                crate::show::path(&dir)
            );
        }
        sweep::leftovers(&dir, name);
        let tmp = dir.join(temp_name(name, "partial"));
        let file = File::create(&tmp).with_context(|| {
            format!(
                "cannot write output {shown} (in {})",
                crate::show::path(&dir)
            )
        })?;
        track(&tmp);
        Ok(AtomicFile {
            tmp,
            dest: dest.to_path_buf(),
            file,
            committed: false,
        })
    }

    /// A handle for writing (shares the file offset with the original).
    pub fn handle(&self) -> Result<File> {
        Ok(self.file.try_clone()?)
    }

    pub fn temp_path(&self) -> &Path {
        &self.tmp
    }

    /// Make the output visible under its final name.
    pub fn commit(mut self) -> Result<()> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.tmp.display()))?;
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(dir);
        }
        untrack(&self.tmp);
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.tmp);
            untrack(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn nothing_appears_until_commit_and_drop_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("out.img");
        {
            let a = AtomicFile::create(&dest).unwrap();
            a.handle().unwrap().write_all(b"partial").unwrap();
            assert!(!dest.exists());
        }
        assert_eq!(
            std::fs::read_dir(d.path()).unwrap().count(),
            0,
            "temp file left behind"
        );
        let a = AtomicFile::create(&dest).unwrap();
        a.handle().unwrap().write_all(b"done").unwrap();
        a.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"done");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_folder_is_reported() {
        let err = format!(
            "{:#}",
            AtomicFile::create(Path::new("/nonexistent-dir/x.img"))
                .err()
                .unwrap()
        );
        assert!(err.contains("does not exist"), "{err}");
    }
}
