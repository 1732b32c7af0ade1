//! A rootfs directory that appears atomically: built in a hidden temporary folder beside
//! the destination and renamed into place at the end, so nothing half-written ever carries
//! the final name (an interrupted build's folder is removed by the signal handler).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::tree::mtree::Mtree;

pub struct StagedDir {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

impl StagedDir {
    pub fn create(dest: &Path) -> Result<StagedDir> {
        crate::output::check_path_length(dest)?;
        let dest = std::path::absolute(dest)?;
        let parent = dest
            .parent()
            .context("the output folder has no parent")?
            .to_path_buf();
        if !parent.is_dir() {
            bail!(
                "cannot create rootfs {}: folder {} does not exist",
                crate::show::path(&dest),
                crate::show::path(&parent)
            );
        }
        let name = dest
            .file_name()
            .context("output has no name")?
            .to_string_lossy()
            .into_owned();
        let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp)?;
        }
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        crate::output::track(&tmp);
        Ok(StagedDir {
            tmp,
            dest,
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Put the finished tree under its final name. An existing tree there is replaced
    /// (moved aside first, removed after the rename).
    pub fn commit(mut self) -> Result<()> {
        let mut old = None;
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            let aside = self.tmp.with_extension("old");
            std::fs::rename(&self.dest, &aside)
                .with_context(|| format!("moving the old {} aside", self.dest.display()))?;
            old = Some(aside);
        }
        std::fs::rename(&self.tmp, &self.dest).with_context(|| {
            format!("renaming {} to {}", self.tmp.display(), self.dest.display())
        })?;
        crate::output::untrack(&self.tmp);
        self.done = true;
        if let Some(o) = old {
            remove_tree(&o)?;
        }
        Ok(())
    }
}

/// Remove a tree even where a rootless build left directories without write permission.
pub fn remove_tree(p: &Path) -> Result<()> {
    if std::fs::remove_dir_all(p).is_ok() {
        return Ok(());
    }
    let _ = std::process::Command::new("chmod")
        .arg("-R")
        .arg("u+rwx")
        .arg(p)
        .status();
    std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_tree(&self.tmp);
            crate::output::untrack(&self.tmp);
        }
    }
}

/// Write the rootfs metadata beside it; a root build has none (everything is on disk),
/// so a stale file from an earlier rootless run is removed.
pub fn save_mtree(m: &Mtree, rootfs: &Path) -> Result<()> {
    let path = Mtree::default_path_for(rootfs);
    if m.is_empty() {
        let _ = std::fs::remove_file(&path);
        return Ok(());
    }
    m.save(&path)
}
