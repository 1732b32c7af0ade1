//! The files beside a rootfs, committed with it: its ownership metadata (`DIR.mtree`, only
//! for rootless builds) and its package record (`DIR.packages.json`). The tree itself is a
//! [`crate::output::StagedDir`] of kind [`crate::output::DirKind::Rootfs`].

use std::path::Path;

use anyhow::{Context, Result};

use crate::output::{AtomicFile, Sidecar};
use crate::pkg::record::{PackageRecord, record_path_for, record_text};
use crate::tree::mtree::Mtree;

pub use crate::output::StagedDir;

/// The rootfs metadata beside it. A root build has none (everything is on disk), so a stale
/// file from an earlier rootless run is removed with the commit.
pub fn mtree_sidecar(m: &Mtree, rootfs: &Path) -> Result<Sidecar> {
    let path = Mtree::default_path_for(rootfs);
    if m.is_empty() {
        return Ok(Sidecar::Remove(path));
    }
    text_sidecar(&path, &m.to_text())
}

/// The package record beside the rootfs.
pub fn record_sidecar(record: &PackageRecord, rootfs: &Path) -> Result<Sidecar> {
    text_sidecar(&record_path_for(rootfs), &record_text(record)?)
}

fn text_sidecar(path: &Path, text: &str) -> Result<Sidecar> {
    let f = AtomicFile::create(path)?;
    std::io::Write::write_all(&mut f.handle()?, text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(Sidecar::Write(f))
}
