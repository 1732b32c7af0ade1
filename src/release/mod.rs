//! `osbuilder release -o DIR`: the artifacts of a build laid out as Kata's release has them,
//! per arch, with what a release job publishes beside them:
//!
//! ```text
//! DIR/release.json                       what this tree holds (for --merge and auditors)
//! DIR/SHA256SUMS                         every file and link below, `sha256sum -c` format
//! DIR/<arch>/opt/kata/share/kata-containers/
//!     kata-<distro>-<version>[-<variant>].image|.initrd
//!     kata-containers[-initrd][-<variant>].img -> the artifact
//!     root_hash_<variant|base>.txt       beside measured images
//! DIR/<arch>/kata-static-rootfs-image|initrd[-<variant>].tar.zst
//! DIR/<arch>/<artifact>.osbuilder.yaml   the guest's osbuilder.yaml
//! DIR/<arch>/<artifact>.spdx.json        its SPDX SBOM
//! ```
//!
//! The tree is a [`StagedDir`] of kind `release`: built beside DIR and renamed into place,
//! never replacing a folder osbuilder did not make. Files come from the stage cache, hard
//! linked where DIR is on the same filesystem (the cache never changes an entry in place,
//! and checks each one's digests before use), copied otherwise (holes kept). [`merge`]
//! combines the trees of split runs (`--only arch=…` per CI job) into the tree one run
//! would have written.

pub mod merge;

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::build::plan::Plan;
use crate::build::run::Outcome;
use crate::build::tarball::SHARE;
use crate::events::{Event, Job, Sink, Stage};
use crate::output::{DirKind, StagedDir};

/// How osbuilder recognises a release tree it made.
pub const KIND: DirKind = DirKind::Marked("release");
/// The manifest at the top of a release tree.
pub const MANIFEST: &str = "release.json";
/// The checksum list at the top of a release tree.
pub const SUMS: &str = "SHA256SUMS";
/// `release.json`'s format version.
pub const SCHEMA: u32 = 1;

/// One artifact of a release, as `release.json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Listed {
    /// Path in the tree (`x86_64/opt/kata/share/kata-containers/kata-debian-trixie.image`).
    pub path: String,
    pub arch: String,
    pub kind: String,
    pub guest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub sha256: String,
    pub size: u64,
    /// The `kata-containers*.img` link beside it.
    pub link: String,
    pub tarball: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_hash: Option<String>,
    /// The kernel command line that mounts an image (dm-verity for measured ones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_params: Option<String>,
}

/// `release.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: u32,
    pub osbuilder: String,
    /// SHA-256 of the build file the tree was made from.
    pub build_file_sha256: String,
    #[serde(default)]
    pub source_date_epoch: Option<i64>,
    /// `<arch>/<file>` of every artifact the build file has: what a complete release holds.
    pub planned: Vec<String>,
    pub artifacts: Vec<Listed>,
}

impl Manifest {
    fn text(&self) -> Result<String> {
        let mut m = self.clone();
        m.artifacts.sort();
        m.planned.sort();
        let mut t = serde_json::to_string_pretty(&m)?;
        t.push('\n');
        Ok(t)
    }

    /// `<arch>/<file>` of each artifact present.
    pub fn present(&self) -> Vec<String> {
        self.artifacts
            .iter()
            .map(|a| format!("{}/{}", a.arch, a.path.rsplit('/').next().unwrap_or("")))
            .collect()
    }
}

/// A file of a release tree being assembled: where it comes from and its digest.
#[derive(Clone, Debug)]
pub(crate) enum Item {
    File {
        src: PathBuf,
        sha256: String,
        size: u64,
    },
    Link {
        target: String,
    },
}

/// What was written, for the summary.
#[derive(Clone, Debug)]
pub struct Written {
    pub dir: PathBuf,
    /// (path in the tree, size, sha256) of every file and link, sorted.
    pub files: Vec<(String, u64, String)>,
}

/// Lay out `outcome`'s artifacts under `out` (checked before any work by the caller with
/// [`crate::output::check_destination`] and again here).
pub fn write(
    plan: &Plan,
    outcome: &Outcome,
    out: &Path,
    force: bool,
    sink: &dyn Sink,
) -> Result<Written> {
    let ev = Job::new("release", sink);
    let running = ev.start(Stage::Release, None);
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let mut listed = Vec::new();
    for b in &outcome.artifacts {
        let a = &b.job;
        let arch = a.arch.name();
        let file = |name: &str| -> Result<Item> {
            let info = b.entry.meta.files.get(name).with_context(|| {
                format!("stage cache entry {} has no {name}", b.entry.path.display())
            })?;
            Ok(Item::File {
                src: b.entry.path.join(name),
                sha256: info.sha256.clone(),
                size: info.size,
            })
        };
        let share = format!("{arch}/{SHARE}");
        let art = file(&a.file_name)?;
        let (sha256, size) = match &art {
            Item::File { sha256, size, .. } => (sha256.clone(), *size),
            Item::Link { .. } => unreachable!(),
        };
        items.insert(format!("{share}/{}", a.file_name), art);
        items.insert(
            format!("{share}/{}", a.link_name),
            Item::Link {
                target: a.file_name.clone(),
            },
        );
        if let Some(r) = &a.root_hash {
            items.insert(format!("{share}/{r}"), file(r)?);
        }
        items.insert(format!("{arch}/{}", a.tarball), file(&a.tarball)?);
        for (from, suffix) in [
            ("osbuilder.yaml", "osbuilder.yaml"),
            ("sbom.spdx.json", "spdx.json"),
        ] {
            if b.entry.meta.files.contains_key(from) {
                items.insert(format!("{arch}/{}.{suffix}", a.file_name), file(from)?);
            }
        }
        listed.push(Listed {
            path: format!("{share}/{}", a.file_name),
            arch: arch.to_string(),
            kind: a.kind.name().to_string(),
            guest: a.guest.clone(),
            variant: a.variant.clone(),
            sha256,
            size,
            link: format!("{share}/{}", a.link_name),
            tarball: format!("{arch}/{}", a.tarball),
            root_hash: a.root_hash.as_ref().map(|r| format!("{share}/{r}")),
            kernel_params: b.entry.meta.facts.get("kernel_params").cloned(),
        });
    }
    let manifest = Manifest {
        schema: SCHEMA,
        osbuilder: env!("CARGO_PKG_VERSION").to_string(),
        build_file_sha256: plan.file.sha256.clone(),
        source_date_epoch: outcome.source_date_epoch,
        planned: plan.planned.clone(),
        artifacts: listed,
    };
    let written = assemble(out, force, &items, &manifest)?;
    running.finish(false, None, Some(format!("{} files", written.files.len())));
    for (path, size, sha256) in &written.files {
        sink.emit(Event::Artifact {
            job: "release".into(),
            path: written.dir.join(path).display().to_string(),
            size: *size,
            sha256: sha256.clone(),
        });
    }
    Ok(written)
}

/// Build the tree of `items` plus `release.json` and `SHA256SUMS` in a staged folder and
/// put it at `out`.
pub(crate) fn assemble(
    out: &Path,
    force: bool,
    items: &BTreeMap<String, Item>,
    manifest: &Manifest,
) -> Result<Written> {
    let staged = StagedDir::create(out, KIND, force)?;
    let root = staged.path().to_path_buf();
    let mut sums: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for (rel, item) in items {
        let dst = root.join(rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).with_context(|| format!("creating {}", p.display()))?;
        }
        match item {
            Item::File { src, sha256, size } => {
                place(src, &dst)?;
                sums.insert(rel.clone(), (*size, sha256.clone()));
            }
            Item::Link { target } => {
                std::os::unix::fs::symlink(target, &dst)
                    .with_context(|| format!("linking {}", dst.display()))?;
            }
        }
    }
    // A link is listed with the digest of what it points to (as `sha256sum -c` checks it).
    for (rel, item) in items {
        if let Item::Link { target } = item {
            let to = Path::new(rel).with_file_name(target);
            let to = to.to_string_lossy().into_owned();
            let (size, sha) = sums.get(&to).cloned().with_context(|| {
                format!("{rel} points to {target}, which is not in the release")
            })?;
            sums.insert(rel.clone(), (size, sha));
        }
    }
    let text = manifest.text()?;
    std::fs::write(root.join(MANIFEST), &text)?;
    sums.insert(
        MANIFEST.to_string(),
        (text.len() as u64, crate::pkg::sha256_hex(text.as_bytes())),
    );
    let list: String = sums
        .iter()
        .map(|(p, (_, h))| format!("{h}  {p}\n"))
        .collect();
    std::fs::write(root.join(SUMS), &list)?;
    let dest = staged.dest().to_path_buf();
    staged.commit(Vec::new())?;
    let mut files: Vec<(String, u64, String)> =
        sums.into_iter().map(|(p, (s, h))| (p, s, h)).collect();
    files.push((
        SUMS.to_string(),
        list.len() as u64,
        crate::pkg::sha256_hex(list.as_bytes()),
    ));
    Ok(Written { dir: dest, files })
}

/// Put `src` at `dst`: a hard link when both are on one filesystem, else a copy that keeps
/// holes (disk images are mostly holes).
pub(crate) fn place(src: &Path, dst: &Path) -> Result<()> {
    if std::fs::hard_link(src, dst).is_ok() {
        return Ok(());
    }
    copy_sparse(src, dst)
}

/// Copy data extents only (SEEK_DATA/SEEK_HOLE); the result has the same length and bytes.
pub(crate) fn copy_sparse(src: &Path, dst: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let from = std::fs::File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let len = from.metadata()?.len();
    let to = std::fs::File::create(dst).with_context(|| format!("creating {}", dst.display()))?;
    to.set_len(len)?;
    let fd = from.as_raw_fd();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek(2) on a descriptor we own.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            break; // only a hole remains (or the filesystem cannot tell: copied below)
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let end = if hole < 0 { len as i64 } else { hole };
        let mut off = data as u64;
        while off < end as u64 {
            let n = ((end as u64 - off) as usize).min(buf.len());
            from.read_exact_at(&mut buf[..n], off)?;
            to.write_all_at(&buf[..n], off)?;
            off += n as u64;
        }
        pos = end;
    }
    to.sync_all()?;
    Ok(())
}

/// Read and check a release tree's manifest.
pub fn read_manifest(dir: &Path) -> Result<Manifest> {
    let p = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let m: Manifest =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copies_keep_bytes_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("img");
        let f = std::fs::File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let dst = d.path().join("copy");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
        assert!(crate::build::stage::disk_usage(&dst) < 8 << 20);
    }
}
