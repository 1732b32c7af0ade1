//! Directory outputs — a rootfs, a kernel folder, and every other command that writes a
//! folder — and the rules for what may stand at their destination.
//!
//! A directory output is built in a hidden `.NAME.partial-PID` folder beside the destination
//! and renamed into place at the end, so nothing half-written ever carries the final name.
//! Replacing what is already there is where a builder can destroy a user's work (`-o .` in a
//! project folder), so [`check_destination`] decides, before any work starts:
//!
//! - nothing there, or an empty folder: fine;
//! - a non-empty folder osbuilder made (its [`DirKind`] marker is there): replaced;
//! - anything else (a folder of the user's, a file, a symlink): refused unless `--force`;
//! - `/`, the user's home, the current directory, a folder holding one of them, and mount
//!   points: always refused, `--force` or not.
//!
//! The old tree is moved aside under a per-process name and removed only after the new one
//! is in place; files beside the tree (sidecars: `.mtree`, `.packages.json`) are committed
//! right after it, so a record never describes another tree than the one beside it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::AtomicFile;
use crate::error::refused;

/// What kind of folder an output is, and so how osbuilder recognises one it made earlier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirKind {
    /// A rootfs: osbuilder's if `DIR.packages.json` stands beside it or
    /// `DIR/var/lib/osbuilder/osbuilder.yaml` is inside (nothing is added to a guest's `/`).
    Rootfs,
    /// Any other folder: osbuilder's if it holds a `.osbuilder-output` marker naming this
    /// kind (written by [`StagedDir`] on commit).
    Marked(&'static str),
}

/// The marker file at the top of non-rootfs directory outputs.
pub const MARKER: &str = ".osbuilder-output";

impl DirKind {
    /// What osbuilder looks for, in words, for error messages.
    fn evidence(self, dest: &Path) -> String {
        match self {
            DirKind::Rootfs => format!(
                "no {} beside it and no var/lib/osbuilder/osbuilder.yaml in it",
                crate::pkg::record::record_path_for(dest).display()
            ),
            DirKind::Marked(_) => format!("no {MARKER} file in it"),
        }
    }

    /// Whether `dir` (an existing folder) is one osbuilder made.
    pub fn made_by_osbuilder(self, dir: &Path) -> bool {
        match self {
            DirKind::Rootfs => {
                crate::pkg::record::record_path_for(dir).is_file()
                    || dir.join("var/lib/osbuilder/osbuilder.yaml").is_file()
            }
            DirKind::Marked(kind) => std::fs::read_to_string(dir.join(MARKER))
                .map(|s| s.trim() == kind)
                .unwrap_or(false),
        }
    }
}

/// `dest` made absolute with its parent's symlinks resolved (the name itself is kept, so a
/// symlink at the destination is seen as one).
fn resolved(dest: &Path) -> Result<(PathBuf, PathBuf, std::ffi::OsString)> {
    let mut abs: PathBuf = std::path::absolute(dest)
        .with_context(|| format!("resolving {}", dest.display()))?
        .components()
        .collect();
    if abs.ends_with("..") {
        // "-o .." names an existing folder: judge that folder.
        abs = std::fs::canonicalize(&abs).unwrap_or(abs);
    }
    if abs == Path::new("/") {
        return Err(refused(format!(
            "refusing to replace {}: it is the root folder; give -o a new folder, e.g. -o out/rootfs",
            dest.display()
        )));
    }
    let Some(name) = abs.file_name().map(|n| n.to_os_string()) else {
        return Err(refused(format!(
            "refusing to write a folder at {}: give the path of a folder to create, e.g. -o out/rootfs",
            dest.display()
        )));
    };
    if name == ".." {
        return Err(refused(format!(
            "refusing to write a folder at {}: give a path that does not end in ..",
            dest.display()
        )));
    }
    let parent = abs.parent().unwrap_or(Path::new("/"));
    let parent = match std::fs::canonicalize(parent) {
        Ok(p) => p,
        Err(_) => {
            return Err(refused(format!(
                "cannot create {}: folder {} does not exist (create it first)",
                dest.display(),
                parent.display()
            )));
        }
    };
    if !parent.is_dir() {
        return Err(refused(format!(
            "cannot create {}: {} is not a folder",
            dest.display(),
            parent.display()
        )));
    }
    Ok((parent.join(&name), parent, name))
}

/// Folders that are never replaced: `/`, the home folder, the current directory, and every
/// folder holding one of them.
fn protected(path: &Path) -> Option<&'static str> {
    if path == Path::new("/") {
        return Some("the root folder");
    }
    let canon = |p: PathBuf| std::fs::canonicalize(&p).unwrap_or(p);
    if let Ok(cwd) = std::env::current_dir() {
        let cwd = canon(cwd);
        if cwd == path {
            return Some("the current directory");
        }
        if cwd.starts_with(path) {
            return Some("a folder holding the current directory");
        }
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let home = canon(PathBuf::from(home));
        if home == path {
            return Some("your home folder");
        }
        if home.starts_with(path) {
            return Some("a folder holding your home folder");
        }
    }
    None
}

/// Whether `dir` is a mount point: another device than its parent's, or listed in
/// /proc/self/mountinfo (bind mounts keep the device).
fn is_mount_point(dir: &Path, md: &std::fs::Metadata) -> bool {
    if let Some(parent) = dir.parent() {
        if let Ok(p) = std::fs::metadata(parent) {
            if p.dev() != md.dev() {
                return true;
            }
        }
    }
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(&unescape_mountinfo(m)) == dir)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match octal {
            Some(v) if b[i] == b'\\' => {
                out.push(v);
                i += 4;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decide, before any work, whether a `kind` output may be written at `dest`; returns the
/// absolute destination. `force` allows replacing a folder, file or symlink osbuilder did not
/// make; it never allows the protected folders or a mount point.
pub fn check_destination(dest: &Path, kind: DirKind, force: bool) -> Result<PathBuf> {
    super::check_path_length(dest)?;
    let (path, _parent, _name) = resolved(dest)?;
    let shown = crate::show::path(dest);
    if let Some(what) = protected(&path) {
        return Err(refused(format!(
            "refusing to replace {shown}: it is {what}; give -o a new folder such as {shown}/rootfs"
        )));
    }
    let md = match std::fs::symlink_metadata(&path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(path),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("checking {shown}"))),
    };
    if md.file_type().is_symlink() {
        if force {
            return Ok(path);
        }
        return Err(refused(format!(
            "refusing to replace {shown}: it is a symbolic link; remove it, give another -o, or \
             pass --force to replace the link (not what it points to)"
        )));
    }
    if !md.is_dir() {
        if force {
            return Ok(path);
        }
        return Err(refused(format!(
            "refusing to replace {shown}: it is a file, not a folder osbuilder made; give another \
             -o, or pass --force to replace it"
        )));
    }
    if is_mount_point(&path, &md) {
        return Err(refused(format!(
            "refusing to replace {shown}: it is a mount point; give -o a folder inside it"
        )));
    }
    let empty = std::fs::read_dir(&path)
        .with_context(|| format!("reading {shown}"))?
        .next()
        .is_none();
    if empty || force || kind.made_by_osbuilder(&path) {
        return Ok(path);
    }
    Err(refused(format!(
        "refusing to replace {shown}: it is a folder that is not empty and that osbuilder did not \
         make ({}); give another -o, empty it yourself, or pass --force to replace it",
        kind.evidence(&path)
    )))
}

/// A file written beside a directory output and committed with it.
pub enum Sidecar {
    /// Written to its temporary name, renamed into place right after the tree.
    Write(AtomicFile),
    /// A stale sidecar from an earlier build that no longer applies (e.g. an `.mtree` after a
    /// root build, which keeps everything on disk).
    Remove(PathBuf),
}

/// A directory output under construction.
pub struct StagedDir {
    tmp: PathBuf,
    dest: PathBuf,
    kind: DirKind,
    force: bool,
    done: bool,
}

impl StagedDir {
    /// Check the destination (see [`check_destination`]), sweep what killed runs left for
    /// this name, and create the staging folder beside it.
    pub fn create(dest: &Path, kind: DirKind, force: bool) -> Result<StagedDir> {
        let dest = check_destination(dest, kind, force)?;
        let parent = dest.parent().expect("checked destinations have a parent");
        let name = dest.file_name().expect("checked destinations have a name");
        super::sweep::leftovers(parent, name);
        let tmp = parent.join(super::temp_name(name, "partial"));
        if std::fs::symlink_metadata(&tmp).is_ok() {
            // Our own pid's name: a leftover of an earlier run with this pid.
            remove_tree(&tmp)?;
        }
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        super::track(&tmp);
        Ok(StagedDir {
            tmp,
            dest,
            kind,
            force,
            done: false,
        })
    }

    /// The folder to fill.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// The final (absolute) path.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Put the finished tree under its final name, then its sidecars beside it. What stood
    /// there is checked again (it may have appeared while we worked), moved aside under a
    /// per-process name, and removed only once the new tree is in place.
    pub fn commit(mut self, sidecars: Vec<Sidecar>) -> Result<()> {
        if let DirKind::Marked(kind) = self.kind {
            std::fs::write(self.tmp.join(MARKER), format!("{kind}\n"))
                .with_context(|| format!("writing {}", self.tmp.join(MARKER).display()))?;
        }
        check_destination(&self.dest, self.kind, self.force)?;
        let parent = self.dest.parent().expect("checked").to_path_buf();
        let name = self.dest.file_name().expect("checked").to_os_string();
        let mut old = None;
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            let aside = parent.join(super::temp_name(&name, "old"));
            std::fs::rename(&self.dest, &aside)
                .with_context(|| format!("moving the old {} aside", self.dest.display()))?;
            super::track(&aside);
            old = Some(aside);
        }
        if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
            if let Some(o) = &old {
                let _ = std::fs::rename(o, &self.dest);
                super::untrack(o);
            }
            return Err(anyhow::Error::new(e).context(format!(
                "renaming {} to {}",
                self.tmp.display(),
                self.dest.display()
            )));
        }
        super::untrack(&self.tmp);
        self.done = true;
        for s in sidecars {
            match s {
                Sidecar::Write(f) => f.commit()?,
                Sidecar::Remove(p) => {
                    if let Err(e) = std::fs::remove_file(&p) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            return Err(
                                anyhow::Error::new(e).context(format!("removing {}", p.display()))
                            );
                        }
                    }
                }
            }
        }
        super::sync_dir(&parent);
        if let Some(o) = old {
            remove_tree(&o)?;
            super::untrack(&o);
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.done {
            let _ = remove_tree(&self.tmp);
            super::untrack(&self.tmp);
        }
    }
}

/// Remove a tree osbuilder made, even where a rootless build left folders without write
/// permission (package trees have 0555 folders). Never follows symlinks.
pub fn remove_tree(p: &Path) -> Result<()> {
    if std::fs::remove_dir_all(p).is_ok() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(p)
        .follow_links(false)
        .into_iter()
        .flatten()
    {
        if entry.file_type().is_dir() {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o700));
        }
    }
    std::fs::remove_dir_all(p).with_context(|| format!("removing {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn user_folders_are_refused_and_ours_replaced() {
        let d = tempfile::tempdir().unwrap();
        let user = d.path().join("project");
        std::fs::create_dir(&user).unwrap();
        std::fs::write(user.join("main.c"), "int main;").unwrap();
        let e = check_destination(&user, DirKind::Rootfs, false).unwrap_err();
        assert!(crate::error::is_refused(&e), "{e:#}");
        assert!(format!("{e:#}").contains("--force"), "{e:#}");
        assert!(check_destination(&user, DirKind::Rootfs, true).is_ok());
        // Made by osbuilder: the sidecar beside it.
        std::fs::write(d.path().join("project.packages.json"), "{}").unwrap();
        assert!(check_destination(&user, DirKind::Rootfs, false).is_ok());
        // Marked kinds need their own marker.
        let k = d.path().join("kernel");
        std::fs::create_dir(&k).unwrap();
        std::fs::write(k.join("vmlinuz"), "x").unwrap();
        assert!(check_destination(&k, DirKind::Marked("kernel"), false).is_err());
        std::fs::write(k.join(MARKER), "kernel\n").unwrap();
        assert!(check_destination(&k, DirKind::Marked("kernel"), false).is_ok());
        assert!(check_destination(&k, DirKind::Marked("oci-layout"), false).is_err());
        // Empty folders and new names are fine.
        let empty = d.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        assert!(check_destination(&empty, DirKind::Rootfs, false).is_ok());
        assert!(check_destination(&d.path().join("new"), DirKind::Rootfs, false).is_ok());
    }

    #[test]
    fn protected_folders_are_refused_even_with_force() {
        for p in ["/", "/.", "."] {
            let e = check_destination(Path::new(p), DirKind::Rootfs, true).unwrap_err();
            assert!(crate::error::is_refused(&e), "{p}: {e:#}");
        }
        let cwd = std::env::current_dir().unwrap();
        let e = check_destination(cwd.parent().unwrap(), DirKind::Rootfs, true).unwrap_err();
        assert!(format!("{e:#}").contains("current directory"), "{e:#}");
        let e = check_destination(Path::new("/proc"), DirKind::Rootfs, true).unwrap_err();
        assert!(format!("{e:#}").contains("mount point"), "{e:#}");
        let e =
            check_destination(Path::new("/nonexistent-osb/x"), DirKind::Rootfs, true).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
    }

    #[test]
    fn commit_replaces_moves_aside_per_process_and_commits_sidecars() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("r");
        let side = d.path().join("r.packages.json");
        // A leftover move-aside of another (dead) process does not block the commit.
        std::fs::create_dir(d.path().join(".r.old-999999999")).unwrap();
        for round in 0..2 {
            let s = StagedDir::create(&dest, DirKind::Rootfs, false).unwrap();
            std::fs::write(s.path().join("f"), format!("{round}")).unwrap();
            let rec = AtomicFile::create(&side).unwrap();
            std::io::Write::write_all(&mut rec.handle().unwrap(), format!("{round}").as_bytes())
                .unwrap();
            assert!(!side.exists() || round == 1);
            s.commit(vec![Sidecar::Write(rec)]).unwrap();
            assert_eq!(
                std::fs::read_to_string(dest.join("f")).unwrap(),
                format!("{round}")
            );
            assert_eq!(std::fs::read_to_string(&side).unwrap(), format!("{round}"));
        }
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
