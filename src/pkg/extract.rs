//! Safe extraction of package payloads (tar streams) into a rootfs.
//!
//! Every path is resolved one directory at a time from a descriptor of the root, with
//! `O_NOFOLLOW` on each component, the way the kernel's `RESOLVE_IN_ROOT` would: a symlink
//! met on the way (made by an earlier entry, an earlier package, or the merged-/usr
//! aliases) is followed *inside* the root — an absolute target restarts at the root — and
//! a `..` that would climb above the root is refused. Entries whose own name is absolute
//! or contains `..` are refused outright; hard links may only point at files already in
//! the root. The last component is never followed: a file replaces a symlink, it does not
//! write through it.
//!
//! As root, ownership, modes and device nodes are applied on disk. As an unprivileged user
//! they are recorded in the rootfs [`Mtree`] (every entry gets its type, uid, gid and
//! mode), devices exist only there, and directories stay owner-writable on disk so the
//! build can go on; packers merge the two (see `tree::Tree::scan`). A root the extractor
//! fills from empty is the guest's `/`: it is root's, mode 0755, like every directory the
//! extractor creates, whoever runs the build.
//!
//! Every system call goes through `rustix`'s safe `*at` wrappers on descriptors this
//! module owns: there is no `unsafe` here.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType as RawType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::pkg::pathfilter::{Excluded, PathFilter};
use crate::tree::mtree::{MEntry, MType, Mtree};

/// Rewrites an archive path (normalised, no leading `/`) to where it goes in the rootfs,
/// e.g. a distro's merged-/usr policy (`bin/sh` → `usr/bin/sh`). `None` keeps the path.
pub type PathRewrite = Box<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

pub struct ExtractOptions {
    /// Apply ownership and device nodes on disk. Default: when running as root.
    pub privileged: bool,
    pub rewrite: Option<PathRewrite>,
    /// dpkg-style path filters for package payloads (see [`crate::pkg::pathfilter`]).
    pub filter: PathFilter,
}

impl Default for ExtractOptions {
    fn default() -> Self {
        ExtractOptions {
            privileged: rustix::process::geteuid().is_root(),
            rewrite: None,
            filter: PathFilter::default(),
        }
    }
}

/// One entry placed in the rootfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    /// As the archive named it, normalised to "/a/b" ("/." for the root).
    pub path: Vec<u8>,
    /// Where it is in the rootfs (after rewrite and in-root symlink resolution), "a/b".
    pub on_disk: Vec<u8>,
    pub kind: MType,
    /// The path filter left it out: the package still owns it (dpkg lists it too), but
    /// nothing was written and `on_disk` is empty.
    pub left_out: bool,
}

/// Owner and permission bits for something the backend creates itself.
#[derive(Clone, Copy, Debug)]
pub struct Attrs {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

impl Attrs {
    pub fn root(mode: u32, mtime: i64) -> Attrs {
        Attrs {
            mode,
            uid: 0,
            gid: 0,
            mtime,
        }
    }
}

pub struct Extractor {
    root: PathBuf,
    root_fd: OwnedFd,
    privileged: bool,
    rewrite: Option<PathRewrite>,
    mtree: Mtree,
    /// Directory mode and mtime, applied at the end (children change a dir's mtime, and an
    /// unwritable mode would stop later entries).
    dirs: BTreeMap<Vec<u8>, (u32, i64)>,
    /// Mtime of directories the extractor creates on its own (missing parents) and of
    /// the root; see [`Extractor::set_default_mtime`].
    default_mtime: i64,
    /// The root was empty when opened: the extractor builds this tree, so the root is the
    /// guest's `/` and gets root:root 0755 in `finish` (a populated root, such as a user's
    /// rootfs being provisioned, keeps what it has).
    owns_root: bool,
    filter: PathFilter,
    /// What the filter left out so far.
    excluded: Excluded,
    /// Entries the filter left out ("/a/b"; a hard link to one is left out with it).
    left_out: std::collections::HashSet<Vec<u8>>,
}

const MAX_SYMLINKS: usize = 40;

fn show(p: &[u8]) -> String {
    crate::show::in_root(p)
}

/// Split an archive path into components, refusing absolute paths and `..`.
fn archive_components(raw: &[u8]) -> Result<Vec<Vec<u8>>> {
    if raw.starts_with(b"/") {
        bail!(
            "entry {} has an absolute path; refusing to write outside the rootfs",
            crate::show::bytes(raw)
        );
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => bail!(
                "entry {} climbs out with '..'; refusing to write outside the rootfs",
                crate::show::bytes(raw)
            ),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// What a tar entry makes in the rootfs (a hard link is a file).
pub fn entry_kind(et: tar::EntryType) -> MType {
    match et {
        tar::EntryType::Directory => MType::Dir,
        tar::EntryType::Symlink => MType::Link,
        tar::EntryType::Char => MType::Char,
        tar::EntryType::Block => MType::Block,
        tar::EntryType::Fifo => MType::Fifo,
        _ => MType::File,
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum FileType {
    Dir,
    Symlink,
    Other,
}

/// The type of `name` in `dir`, without following a symlink there; `None` when absent.
fn type_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<Option<FileType>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(match RawType::from_raw_mode(st.st_mode) {
            RawType::Directory => FileType::Dir,
            RawType::Symlink => FileType::Symlink,
            _ => FileType::Other,
        })),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

fn readlinkat(dir: BorrowedFd<'_>, name: &[u8]) -> Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())
        .context("readlink")?
        .into_bytes())
}

/// A directory handle for walking (`O_PATH`: it can only be used as a base for `*at`).
fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn mode(bits: u32) -> Mode {
    Mode::from_raw_mode(bits & 0o7777)
}

/// A resolved parent directory: its descriptor, its path in the root, the final name.
struct Parent {
    fd: OwnedFd,
    dir: Vec<u8>,
    name: Vec<u8>,
}

impl Parent {
    fn rel(&self) -> Vec<u8> {
        join(&self.dir, &self.name)
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        [dir, b"/", name].concat()
    }
}

/// A name the kernel can take: no NUL byte (tar names cannot hold one, but callers can).
fn check_name(name: &[u8]) -> Result<()> {
    if name.contains(&0) {
        bail!("path {} contains NUL", crate::show::bytes(name));
    }
    Ok(())
}

impl Extractor {
    /// Extract into `root`, an existing directory.
    pub fn new(root: &Path, opts: ExtractOptions) -> Result<Extractor> {
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("opening rootfs {}", root.display()))?;
        let owns_root = std::fs::read_dir(root)
            .with_context(|| format!("listing rootfs {}", root.display()))?
            .next()
            .is_none();
        Ok(Extractor {
            root: root.to_path_buf(),
            root_fd: fd,
            privileged: opts.privileged,
            rewrite: opts.rewrite,
            mtree: Mtree::new(),
            dirs: BTreeMap::new(),
            default_mtime: 0,
            owns_root,
            excluded: Excluded {
                rules: opts.filter.lines(),
                entries: Some(0),
                bytes: Some(0),
            },
            filter: opts.filter,
            left_out: Default::default(),
        })
    }

    /// Whether the path filter leaves out the package entry `path` ("/a/b", as the
    /// package names it, before any rewrite); counted in [`Extractor::excluded`] when it
    /// does. Backends that do not extract through [`Extractor::unpack`] (rpm's cpio) ask
    /// this for every entry.
    pub fn leaves_out(&mut self, path: &[u8], kind: MType, size: u64) -> bool {
        if self.filter.is_empty()
            || !self
                .filter
                .skips(path, matches!(kind, MType::Dir | MType::Link))
        {
            return false;
        }
        self.count_left_out(path, kind, size);
        true
    }

    fn count_left_out(&mut self, path: &[u8], kind: MType, size: u64) {
        *self.excluded.entries.get_or_insert(0) += 1;
        if kind == MType::File {
            *self.excluded.bytes.get_or_insert(0) += size;
        }
        self.left_out.insert(path.to_vec());
    }

    /// Whether the package entry `path` ("/a/b") was left out by the filter.
    pub fn was_left_out(&self, path: &[u8]) -> bool {
        self.left_out.contains(path)
    }

    /// What the path filter has left out so far, with its rules.
    pub fn excluded(&self) -> &Excluded {
        &self.excluded
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Timestamp for implicitly created parent directories and the root itself
    /// (SOURCE_DATE_EPOCH or the repository's date), so rebuilds are identical.
    pub fn set_default_mtime(&mut self, mtime: i64) {
        self.default_mtime = mtime;
    }

    pub fn privileged(&self) -> bool {
        self.privileged
    }

    /// The metadata recorded so far (unprivileged builds).
    pub fn mtree_mut(&mut self) -> &mut Mtree {
        &mut self.mtree
    }

    fn dup_root(&self) -> Result<OwnedFd> {
        Ok(self.root_fd.try_clone()?)
    }

    /// Walk `comps` (the directories above the final name) from the root, following
    /// symlinks in-root. Missing directories are created when `create` is set.
    fn walk_dirs(&mut self, comps: &[Vec<u8>], create: bool) -> Result<(OwnedFd, Vec<u8>)> {
        let mut stack: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
        let mut cur = self.dup_root()?;
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut queue: std::collections::VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut links = 0;
        while let Some(comp) = queue.pop_front() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    let Some((fd, _)) = stack.pop() else {
                        bail!(
                            "a symlink on the way to {} climbs above the rootfs; refusing",
                            show(&names.join(&b'/'))
                        );
                    };
                    cur = fd;
                    names.pop();
                    continue;
                }
                _ => {}
            }
            check_name(&comp)?;
            let st = type_at(cur.as_fd(), &comp)
                .with_context(|| format!("looking up {}", show(&comp)))?;
            match st {
                None if create => {
                    let dir = names.join(&b'/');
                    self.mkdir_raw(cur.as_fd(), &comp, &join(&dir, &comp), None)?;
                }
                None => bail!("{} does not exist", show(&join(&names.join(&b'/'), &comp))),
                Some(FileType::Dir) => {}
                Some(FileType::Symlink) => {
                    links += 1;
                    if links > MAX_SYMLINKS {
                        bail!("too many levels of symlinks at {}", show(&comp));
                    }
                    let target = readlinkat(cur.as_fd(), &comp)?;
                    if target.starts_with(b"/") {
                        stack.clear();
                        names.clear();
                        cur = self.dup_root()?;
                    }
                    let parts: Vec<&[u8]> = target.split(|b| *b == b'/').collect();
                    for t in parts.into_iter().rev() {
                        queue.push_front(t.to_vec());
                    }
                    continue;
                }
                Some(FileType::Other) => bail!(
                    "{} is not a directory",
                    show(&join(&names.join(&b'/'), &comp))
                ),
            }
            let next = open_dir_at(cur.as_fd(), &comp)
                .with_context(|| format!("opening {}", show(&comp)))?;
            stack.push((std::mem::replace(&mut cur, next), comp.clone()));
            names.push(comp);
        }
        Ok((cur, names.join(&b'/')))
    }

    /// Resolve the parent of an archive path (after rewrite); the final name is not followed.
    fn parent_of(&mut self, archive_path: &[u8], create: bool) -> Result<Option<Parent>> {
        let mut comps = archive_components(archive_path)?;
        if let Some(rw) = &self.rewrite {
            let joined = comps.join(&b'/');
            if let Some(new) = rw(&joined) {
                comps = archive_components(&new)?;
            }
        }
        let Some(name) = comps.pop() else {
            return Ok(None); // the root itself
        };
        check_name(&name)?;
        let (fd, dir) = self.walk_dirs(&comps, create)?;
        Ok(Some(Parent { fd, dir, name }))
    }

    fn mkdir_raw(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        a: Option<Attrs>,
    ) -> Result<()> {
        rustix::fs::mkdirat(dir, name, mode(0o755))
            .with_context(|| format!("creating directory {}", show(rel)))?;
        let a = a.unwrap_or(Attrs::root(0o755, self.default_mtime));
        self.apply_owner(dir, name, rel, MType::Dir, a, None)?;
        self.dirs.insert(rel.to_vec(), (a.mode, a.mtime));
        Ok(())
    }

    /// Ownership on disk (root) or in the metadata (unprivileged), plus the mode for
    /// non-directories (directory modes are applied in `finish`).
    fn apply_owner(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        kind: MType,
        a: Attrs,
        device: Option<(u32, u32)>,
    ) -> Result<()> {
        if self.privileged {
            rustix::fs::chownat(
                dir,
                name,
                Some(Uid::from_raw_unchecked(a.uid)),
                Some(Gid::from_raw_unchecked(a.gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("chown {}", show(rel)))?;
        } else {
            self.mtree.remove(rel);
            self.mtree.set(
                rel,
                MEntry {
                    kind: Some(kind),
                    uid: Some(a.uid),
                    gid: Some(a.gid),
                    mode: (kind != MType::Link).then_some(a.mode & 0o7777),
                    device,
                    link: None,
                    time: None,
                    capability: None,
                },
            );
        }
        if !matches!(kind, MType::Dir | MType::Link) {
            // After chown: chown clears setuid bits. The name was just created by this
            // extractor as a non-symlink, so following it (fchmodat has no NOFOLLOW on
            // Linux) stays on that entry.
            let r = rustix::fs::chmodat(dir, name, mode(a.mode), AtFlags::empty());
            if kind != MType::Char && kind != MType::Block {
                r.with_context(|| format!("chmod {}", show(rel)))?;
            }
        }
        if kind != MType::Dir {
            set_mtime(dir, name, a.mtime);
        }
        Ok(())
    }

    /// Make room for a new non-directory entry: remove whatever non-directory is there.
    /// Returns true when a directory is in the way (an empty one is removed).
    fn clear_slot(&mut self, p: &Parent, replace_dir: bool) -> Result<bool> {
        match type_at(p.fd.as_fd(), &p.name)
            .with_context(|| format!("looking up {}", show(&p.rel())))?
        {
            None => Ok(false),
            Some(FileType::Dir) => {
                if replace_dir
                    && rustix::fs::unlinkat(p.fd.as_fd(), p.name.as_slice(), AtFlags::REMOVEDIR)
                        .is_ok()
                {
                    self.dirs.remove(&p.rel());
                    self.mtree.remove(&p.rel());
                    return Ok(false);
                }
                Ok(true)
            }
            Some(_) => {
                rustix::fs::unlinkat(p.fd.as_fd(), p.name.as_slice(), AtFlags::empty())
                    .with_context(|| format!("replacing {}", show(&p.rel())))?;
                self.mtree.remove(&p.rel());
                Ok(false)
            }
        }
    }

    /// Create a directory (and missing parents). An existing directory, or a symlink that
    /// resolves in-root to one (merged-/usr aliases), is kept as it is.
    pub fn create_dir(&mut self, path: &[u8], a: Attrs) -> Result<Vec<u8>> {
        let Some(p) = self.parent_of(path, true)? else {
            return Ok(Vec::new());
        };
        match type_at(p.fd.as_fd(), &p.name) {
            Ok(Some(FileType::Dir)) => Ok(p.rel()),
            Ok(Some(FileType::Symlink)) => {
                // Must lead to a directory inside the root.
                let mut comps: Vec<Vec<u8>> = if p.dir.is_empty() {
                    Vec::new()
                } else {
                    p.dir.split(|b| *b == b'/').map(<[u8]>::to_vec).collect()
                };
                comps.push(p.name.clone());
                let (_, real) = self.walk_dirs(&comps, false).with_context(|| {
                    format!(
                        "{} is a symlink that does not lead to a directory in the rootfs",
                        show(&p.rel())
                    )
                })?;
                Ok(real)
            }
            Ok(Some(FileType::Other)) => bail!(
                "{} exists and is not a directory; cannot create a directory there",
                show(&p.rel())
            ),
            Ok(None) | Err(_) => {
                let rel = p.rel();
                self.mkdir_raw(p.fd.as_fd(), &p.name, &rel, Some(a))?;
                Ok(rel)
            }
        }
    }

    /// Write a regular file from `data`, replacing any non-directory there.
    pub fn write_file(&mut self, path: &[u8], data: &mut dyn Read, a: Attrs) -> Result<Vec<u8>> {
        let p = self
            .parent_of(path, true)?
            .context("cannot write a file over the rootfs root")?;
        if self.clear_slot(&p, false)? {
            bail!(
                "{} is a directory; cannot replace it with a file",
                show(&p.rel())
            );
        }
        let fd = rustix::fs::openat(
            p.fd.as_fd(),
            p.name.as_slice(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            mode(0o600),
        )
        .with_context(|| format!("creating {}", show(&p.rel())))?;
        let mut f = std::fs::File::from(fd);
        std::io::copy(data, &mut f).with_context(|| format!("writing {}", show(&p.rel())))?;
        f.flush()?;
        drop(f);
        let rel = p.rel();
        self.apply_owner(p.fd.as_fd(), &p.name, &rel, MType::File, a, None)?;
        Ok(rel)
    }

    /// Create (or replace) a symlink. The target is stored as given; it is only ever
    /// followed in-root by this extractor.
    pub fn symlink(&mut self, path: &[u8], target: &[u8], a: Attrs) -> Result<Vec<u8>> {
        let p = self
            .parent_of(path, true)?
            .context("cannot replace the rootfs root with a symlink")?;
        if self.clear_slot(&p, true)? {
            bail!(
                "{} is a non-empty directory; cannot replace it with a symlink to {}",
                show(&p.rel()),
                crate::show::bytes(target)
            );
        }
        check_name(target)?;
        rustix::fs::symlinkat(target, p.fd.as_fd(), p.name.as_slice())
            .with_context(|| format!("creating symlink {}", show(&p.rel())))?;
        let rel = p.rel();
        self.apply_owner(p.fd.as_fd(), &p.name, &rel, MType::Link, a, None)?;
        Ok(rel)
    }

    /// Hard-link `path` to `target`, an archive path of a file already extracted.
    pub fn hard_link(&mut self, path: &[u8], target: &[u8]) -> Result<Vec<u8>> {
        let src = self
            .parent_of(target, false)
            .with_context(|| format!("hard link target {}", crate::show::bytes(target)))?
            .context("a hard link cannot point at the root")?;
        let st = type_at(src.fd.as_fd(), &src.name)
            .ok()
            .flatten()
            .with_context(|| {
                format!(
                    "hard link {} points at {}, which is not in the rootfs",
                    show(path),
                    show(&src.rel())
                )
            })?;
        if st == FileType::Dir {
            bail!("hard link {} points at a directory", show(path));
        }
        let dst = self
            .parent_of(path, true)?
            .context("cannot hard-link over the root")?;
        if self.clear_slot(&dst, false)? {
            bail!(
                "{} is a directory; cannot replace it with a hard link",
                show(&dst.rel())
            );
        }
        // No AT_SYMLINK_FOLLOW: a symlink as the source is linked itself, not its target.
        rustix::fs::linkat(
            src.fd.as_fd(),
            src.name.as_slice(),
            dst.fd.as_fd(),
            dst.name.as_slice(),
            AtFlags::empty(),
        )
        .with_context(|| format!("hard-linking {}", show(&dst.rel())))?;
        let rel = dst.rel();
        if !self.privileged {
            if let Some(e) = self.mtree.get(&src.rel()).cloned() {
                self.mtree.set(&rel, e);
            }
        }
        Ok(rel)
    }

    /// Give the regular file at `path` file capabilities (`value`: the raw
    /// `security.capability` attribute, see `tree::caps`): the attribute itself as root,
    /// the metadata otherwise (only root may set it). Call it after the file's owner is
    /// set: chown(2) clears the attribute.
    pub fn set_capability(&mut self, path: &[u8], value: &[u8]) -> Result<Vec<u8>> {
        let p = self
            .parent_of(path, false)?
            .context("the rootfs root cannot carry file capabilities")?;
        let rel = p.rel();
        if self.privileged {
            // NONBLOCK: a FIFO standing there must not hang the open; NOFOLLOW: a
            // symlink is refused, not written through.
            let fd = rustix::fs::openat(
                p.fd.as_fd(),
                p.name.as_slice(),
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .with_context(|| format!("opening {} to set its file capabilities", show(&rel)))?;
            let st = rustix::fs::fstat(&fd)?;
            if RawType::from_raw_mode(st.st_mode) != RawType::RegularFile {
                bail!(
                    "{} is not a regular file; it cannot carry file capabilities",
                    show(&rel)
                );
            }
            rustix::fs::fsetxattr(
                &fd,
                crate::tree::caps::XATTR,
                value,
                rustix::fs::XattrFlags::empty(),
            )
            .with_context(|| format!("setting {} on {}", crate::tree::caps::XATTR, show(&rel)))?;
        } else {
            self.mtree.set(
                &rel,
                MEntry {
                    capability: Some(value.to_vec()),
                    ..Default::default()
                },
            );
        }
        Ok(rel)
    }

    /// A device node (root: on disk; unprivileged: in the metadata only) or a FIFO.
    pub fn special(
        &mut self,
        path: &[u8],
        kind: MType,
        device: (u32, u32),
        a: Attrs,
    ) -> Result<Vec<u8>> {
        let p = self
            .parent_of(path, true)?
            .context("cannot replace the root")?;
        if self.clear_slot(&p, false)? {
            bail!("{} is a directory", show(&p.rel()));
        }
        let rel = p.rel();
        let fmt = match kind {
            MType::Char => RawType::CharacterDevice,
            MType::Block => RawType::BlockDevice,
            MType::Fifo => RawType::Fifo,
            other => bail!("{} has unsupported type {}", show(&rel), other.name()),
        };
        if self.privileged || kind == MType::Fifo {
            let dev = rustix::fs::makedev(device.0, device.1);
            rustix::fs::mknodat(p.fd.as_fd(), p.name.as_slice(), fmt, mode(0o600), dev)
                .with_context(|| format!("creating {}", show(&rel)))?;
            self.apply_owner(p.fd.as_fd(), &p.name, &rel, kind, a, None)?;
        } else {
            self.mtree.remove(&rel);
            self.mtree.set(
                &rel,
                MEntry {
                    kind: Some(kind),
                    uid: Some(a.uid),
                    gid: Some(a.gid),
                    mode: Some(a.mode & 0o7777),
                    device: Some(device),
                    link: None,
                    time: Some(a.mtime),
                    capability: None,
                },
            );
        }
        Ok(rel)
    }

    /// Remove a non-directory entry if present (used by configure steps).
    pub fn remove_file(&mut self, path: &[u8]) -> Result<()> {
        if let Some(p) = self.parent_of(path, false).ok().flatten() {
            self.clear_slot(&p, false)?;
        }
        Ok(())
    }

    /// Read a regular file, resolving symlinks in-root (None when absent).
    pub fn read_file(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut comps = archive_components(path)?;
        for _ in 0..MAX_SYMLINKS {
            let Some(name) = comps.pop() else {
                return Ok(None);
            };
            let Ok((fd, dir)) = self.walk_dirs(&comps, false) else {
                return Ok(None);
            };
            check_name(&name)?;
            match type_at(fd.as_fd(), &name) {
                Err(_) | Ok(None) => return Ok(None),
                Ok(Some(FileType::Symlink)) => {
                    let t = readlinkat(fd.as_fd(), &name)?;
                    let base = if t.starts_with(b"/") { Vec::new() } else { dir };
                    let joined = join(&base, &t);
                    comps = joined
                        .split(|b| *b == b'/')
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect();
                    // '..' inside the link target is resolved by walk_dirs (and refused
                    // above the root); a trailing '..' cannot name a file.
                    continue;
                }
                Ok(Some(FileType::Other)) => {
                    let f = rustix::fs::openat(
                        fd.as_fd(),
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .with_context(|| format!("reading {}", show(path)))?;
                    let mut out = Vec::new();
                    std::fs::File::from(f).read_to_end(&mut out)?;
                    return Ok(Some(out));
                }
                Ok(Some(FileType::Dir)) => return Ok(None),
            }
        }
        bail!("too many levels of symlinks reading {}", show(path))
    }

    /// Extract a whole tar stream. `origin` names the package in errors.
    pub fn unpack<R: Read>(&mut self, reader: R, origin: &str) -> Result<Vec<Installed>> {
        let mut ar = tar::Archive::new(reader);
        self.unpack_archive(&mut ar, origin, &mut |_| Ok(true))
    }

    /// Extract a tar archive; `filter` sees each entry first and may skip it (false), e.g.
    /// APK's `.PKGINFO` and signature members.
    pub fn unpack_archive<R: Read>(
        &mut self,
        ar: &mut tar::Archive<R>,
        origin: &str,
        filter: &mut dyn FnMut(&tar::Entry<'_, R>) -> Result<bool>,
    ) -> Result<Vec<Installed>> {
        let mut out = Vec::new();
        for entry in ar
            .entries()
            .with_context(|| format!("reading the payload of {origin}"))?
        {
            let mut entry = entry.with_context(|| format!("reading the payload of {origin}"))?;
            if !filter(&entry)? {
                continue;
            }
            let raw = entry.path_bytes().into_owned();
            let item = self
                .unpack_entry(&mut entry, &raw)
                .with_context(|| format!("{origin}: {}", crate::show::bytes(&raw)))?;
            if let Some(i) = item {
                out.push(i);
            }
        }
        Ok(out)
    }

    fn unpack_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
    ) -> Result<Option<Installed>> {
        let h = entry.header();
        // An id beyond 32 bits would wrap (to root, say), and 2^32-1 is chown's "leave
        // unchanged": neither names an owner.
        let id = |v: u64, what: &str| -> Result<u32> {
            u32::try_from(v)
                .ok()
                .filter(|v| *v != u32::MAX)
                .with_context(|| format!("{what} {v} is not a valid owner"))
        };
        let a = Attrs {
            mode: h.mode()? & 0o7777,
            uid: id(h.uid()?, "uid")?,
            gid: id(h.gid()?, "gid")?,
            mtime: i64::try_from(h.mtime()?).unwrap_or(i64::MAX),
        };
        let et = h.entry_type();
        let comps = archive_components(raw)?;
        let path = [b"/".as_slice(), &comps.join(&b'/')].concat();
        if !comps.is_empty()
            && !matches!(et, tar::EntryType::XGlobalHeader | tar::EntryType::XHeader)
        {
            let kind = entry_kind(et);
            let left_out = if et == tar::EntryType::Link {
                let target = entry
                    .link_name_bytes()
                    .context("hard link without a target")?;
                let target = [b"/".as_slice(), &archive_components(&target)?.join(&b'/')].concat();
                // A hard link to a left-out file goes with it, whatever the rules say.
                if self.was_left_out(&target) {
                    self.count_left_out(&path, kind, 0);
                    true
                } else {
                    self.leaves_out(&path, kind, 0)
                }
            } else {
                let size = h.size()?;
                self.leaves_out(&path, kind, size)
            };
            if left_out {
                return Ok(Some(Installed {
                    path,
                    on_disk: Vec::new(),
                    kind,
                    left_out: true,
                }));
            }
        }
        let (kind, on_disk) = match et {
            tar::EntryType::Directory => {
                if comps.is_empty() {
                    return Ok(None);
                }
                (MType::Dir, self.create_dir(raw, a)?)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                (MType::File, self.write_file(raw, entry, a)?)
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .context("symlink without a target")?
                    .into_owned();
                (MType::Link, self.symlink(raw, &target, a)?)
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .context("hard link without a target")?
                    .into_owned();
                (MType::File, self.hard_link(raw, &target)?)
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let kind = match et {
                    tar::EntryType::Char => MType::Char,
                    tar::EntryType::Block => MType::Block,
                    _ => MType::Fifo,
                };
                let dev = (
                    h.device_major()?.unwrap_or(0),
                    h.device_minor()?.unwrap_or(0),
                );
                (kind, self.special(raw, kind, dev, a)?)
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => return Ok(None),
            other => bail!("unsupported tar entry type {other:?}"),
        };
        Ok(Some(Installed {
            path,
            on_disk,
            kind,
            left_out: false,
        }))
    }

    /// Apply directory modes and mtimes (deepest first), give a root this extractor built
    /// its owner and mode, and return the metadata.
    pub fn finish(mut self) -> Result<Mtree> {
        let dirs = std::mem::take(&mut self.dirs);
        for (rel, (mode_bits, mtime)) in dirs.iter().rev() {
            let comps: Vec<Vec<u8>> = rel.split(|b| *b == b'/').map(<[u8]>::to_vec).collect();
            let (fd, _) = match self.walk_dirs(&comps[..comps.len() - 1], false) {
                Ok(x) => x,
                Err(_) => continue,
            };
            let name = comps.last().unwrap();
            if !matches!(type_at(fd.as_fd(), name), Ok(Some(FileType::Dir))) {
                continue;
            }
            self.chmod_dir(fd.as_fd(), name, rel, *mode_bits)?;
            set_mtime(fd.as_fd(), name, *mtime);
        }
        if self.owns_root {
            let a = Attrs::root(0o755, self.default_mtime);
            if self.privileged {
                rustix::fs::chownat(
                    &self.root_fd,
                    ".",
                    Some(Uid::ROOT),
                    Some(Gid::ROOT),
                    AtFlags::empty(),
                )
                .with_context(|| format!("chown {}", self.root.display()))?;
            } else if self.mtree.get(b"").is_none() {
                self.mtree.set(
                    b"",
                    MEntry {
                        kind: Some(MType::Dir),
                        uid: Some(a.uid),
                        gid: Some(a.gid),
                        mode: Some(a.mode),
                        ..Default::default()
                    },
                );
            }
            let root = self.dup_root()?;
            self.chmod_dir(root.as_fd(), b".", b"", a.mode)?;
        }
        set_mtime(self.root_fd.as_fd(), b".", self.default_mtime);
        Ok(self.mtree)
    }

    /// A directory's mode on disk. Unprivileged, the owner keeps write access (the real
    /// mode is in the metadata), so the build, and its removal, can go on.
    fn chmod_dir(&self, dir: BorrowedFd<'_>, name: &[u8], rel: &[u8], bits: u32) -> Result<()> {
        let bits = if self.privileged { bits } else { bits | 0o700 };
        rustix::fs::chmodat(dir, name, mode(bits), AtFlags::empty())
            .with_context(|| format!("chmod {}", show(rel)))
    }
}

/// What is at a path in the rootfs, as a packer will see it (ownership and mode from the
/// metadata when the build is unprivileged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: MType,
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
}

/// Queries and attribute changes on what is already in the root, for the declarative
/// configuration steps (the tools a maintainer script would run: test, chmod, chown,
/// readlink, rmdir…). Paths resolve in-root like every other operation.
impl Extractor {
    /// Like lstat(2): the final component is not followed. None when absent.
    pub fn lstat(&mut self, path: &[u8]) -> Result<Option<Stat>> {
        if trim_slash(path).is_empty() {
            return Ok(self.stat_root());
        }
        let Some(p) = self.parent_of(trim_slash(path), false).ok().flatten() else {
            return Ok(None);
        };
        let Ok(st) = rustix::fs::statat(p.fd.as_fd(), p.name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
        else {
            return Ok(None);
        };
        Ok(Some(self.describe(&p.rel(), &st)))
    }

    /// Like stat(2): symlinks are followed (in-root). None when absent or dangling.
    pub fn stat(&mut self, path: &[u8]) -> Result<Option<Stat>> {
        match self.resolve(path)? {
            Some(real) => self.lstat(&real),
            None => Ok(None),
        }
    }

    fn stat_root(&self) -> Option<Stat> {
        Some(Stat {
            kind: MType::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
        })
    }

    fn describe(&self, rel: &[u8], st: &rustix::fs::Stat) -> Stat {
        let kind = match RawType::from_raw_mode(st.st_mode) {
            RawType::Directory => MType::Dir,
            RawType::Symlink => MType::Link,
            RawType::CharacterDevice => MType::Char,
            RawType::BlockDevice => MType::Block,
            RawType::Fifo => MType::Fifo,
            RawType::Socket => MType::Socket,
            _ => MType::File,
        };
        let mut s = Stat {
            kind,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
        };
        if kind == MType::Dir {
            if let Some((mode, _)) = self.dirs.get(rel) {
                s.mode = *mode;
            }
        }
        if !self.privileged {
            let e = self.mtree.get(rel);
            s.uid = e.and_then(|e| e.uid).unwrap_or(0);
            s.gid = e.and_then(|e| e.gid).unwrap_or(0);
            if let Some(m) = e.and_then(|e| e.mode) {
                s.mode = m;
            }
        }
        s
    }

    /// The target of a symlink (None when `path` is not one).
    pub fn read_link(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(p) = self.parent_of(trim_slash(path), false).ok().flatten() else {
            return Ok(None);
        };
        match type_at(p.fd.as_fd(), &p.name) {
            Ok(Some(FileType::Symlink)) => Ok(Some(readlinkat(p.fd.as_fd(), &p.name)?)),
            _ => Ok(None),
        }
    }

    /// The canonical in-root path ("a/b", "" for the root) of what `path` names, all
    /// symlinks followed; None when a component is missing or a link dangles.
    pub fn resolve(&mut self, path: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut comps = archive_components(trim_slash(path))?;
        for _ in 0..MAX_SYMLINKS {
            let Some(name) = comps.pop() else {
                return Ok(Some(Vec::new()));
            };
            let Ok((fd, dir)) = self.walk_dirs(&comps, false) else {
                return Ok(None);
            };
            check_name(&name)?;
            match type_at(fd.as_fd(), &name) {
                Err(_) | Ok(None) => return Ok(None),
                Ok(Some(FileType::Symlink)) => {
                    let t = readlinkat(fd.as_fd(), &name)?;
                    let base = if t.starts_with(b"/") { Vec::new() } else { dir };
                    let joined = join(&base, &t);
                    comps = joined
                        .split(|b| *b == b'/')
                        .filter(|c| !c.is_empty())
                        .map(<[u8]>::to_vec)
                        .collect();
                }
                Ok(_) => return Ok(Some(join(&dir, &name))),
            }
        }
        bail!("too many levels of symlinks resolving {}", show(path))
    }

    /// The names in a directory (symlinks to it followed), sorted; None when it is not one.
    pub fn read_dir(&mut self, path: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let Some(real) = self.resolve(path)? else {
            return Ok(None);
        };
        let dir = self
            .root
            .join(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(&real));
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            _ => return Ok(None),
        }
        let mut names: Vec<Vec<u8>> = std::fs::read_dir(&dir)
            .with_context(|| format!("listing {}", show(&real)))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().as_encoded_bytes().to_vec())
            .collect();
        names.sort();
        Ok(Some(names))
    }

    /// chmod/chown what `path` names (symlinks followed, as chmod(1) and chown(1) do);
    /// `None` leaves that attribute as it is.
    pub fn set_attrs(
        &mut self,
        path: &[u8],
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> Result<()> {
        let Some(real) = self.resolve(path)? else {
            bail!("{} does not exist", show(trim_slash(path)));
        };
        let Some(st) = self.lstat(&real)? else {
            bail!("{} does not exist", show(&real));
        };
        let Some(p) = self.parent_of(&real, false)? else {
            return Ok(()); // the root keeps root:root 0755
        };
        let (uid, gid) = owner.unwrap_or((st.uid, st.gid));
        let bits = mode.unwrap_or(st.mode) & 0o7777;
        if self.privileged {
            rustix::fs::chownat(
                p.fd.as_fd(),
                p.name.as_slice(),
                Some(Uid::from_raw_unchecked(uid)),
                Some(Gid::from_raw_unchecked(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .with_context(|| format!("chown {}", show(&real)))?;
        } else {
            self.mtree.set(
                &real,
                MEntry {
                    kind: Some(st.kind),
                    uid: Some(uid),
                    gid: Some(gid),
                    mode: Some(bits),
                    ..Default::default()
                },
            );
        }
        if st.kind == MType::Dir {
            let mtime = self
                .dirs
                .get(&real)
                .map(|d| d.1)
                .unwrap_or(self.default_mtime);
            self.dirs.insert(real, (bits, mtime));
        } else if st.kind != MType::Link {
            // `real` is resolved: its final component is not a symlink, so following it
            // (fchmodat has no NOFOLLOW on Linux) stays on that entry.
            rustix::fs::chmodat(
                p.fd.as_fd(),
                p.name.as_slice(),
                Mode::from_raw_mode(bits),
                AtFlags::empty(),
            )
            .with_context(|| format!("chmod {}", show(&real)))?;
        }
        Ok(())
    }

    /// Remove an empty directory (the final component is not followed). False when it
    /// is not an empty directory.
    pub fn remove_dir(&mut self, path: &[u8]) -> Result<bool> {
        let Some(p) = self.parent_of(trim_slash(path), false).ok().flatten() else {
            return Ok(false);
        };
        match type_at(p.fd.as_fd(), &p.name) {
            Ok(Some(FileType::Dir)) => {}
            _ => return Ok(false),
        }
        if rustix::fs::unlinkat(p.fd.as_fd(), p.name.as_slice(), AtFlags::REMOVEDIR).is_err() {
            return Ok(false);
        }
        let rel = p.rel();
        self.dirs.remove(&rel);
        self.mtree.remove(&rel);
        Ok(true)
    }
}

fn trim_slash(p: &[u8]) -> &[u8] {
    let mut p = p;
    while let Some(r) = p.strip_prefix(b"/") {
        p = r;
    }
    p
}

fn set_mtime(dir: BorrowedFd<'_>, name: &[u8], mtime: i64) {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    // Best effort: a timestamp is not worth failing a build for.
    let _ = rustix::fs::utimensat(dir, name, &times, AtFlags::SYMLINK_NOFOLLOW);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_000_000);
        h
    }

    /// Append with a raw name (the tar crate refuses '..' and '/' in set_path).
    fn raw(
        b: &mut tar::Builder<Vec<u8>>,
        kind: tar::EntryType,
        name: &str,
        link: Option<&str>,
        data: &[u8],
    ) {
        let mut h = header(kind, data.len() as u64);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(1).unwrap();
            h.set_device_minor(3).unwrap();
        }
        {
            let gnu = h.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                gnu.linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        (d, root, outside)
    }

    fn ex(root: &Path, privileged: bool) -> Extractor {
        Extractor::new(
            root,
            ExtractOptions {
                privileged,
                rewrite: None,
                filter: Default::default(),
            },
        )
        .unwrap()
    }

    #[test]
    fn ordinary_entries_and_in_root_symlinks() {
        let (_d, root, _o) = setup();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        let t = tar_of(|b| {
            raw(b, tar::EntryType::Directory, "./", None, b"");
            raw(b, tar::EntryType::Directory, "./bin/", None, b"");
            raw(b, tar::EntryType::Regular, "./bin/sh", None, b"#!");
            raw(
                b,
                tar::EntryType::Symlink,
                "./etc/alt",
                Some("/usr/bin/sh"),
                b"",
            );
            raw(
                b,
                tar::EntryType::Link,
                "./usr/bin/sh2",
                Some("./bin/sh"),
                b"",
            );
            raw(b, tar::EntryType::Char, "./dev/null", None, b"");
        });
        let mut e = ex(&root, false);
        let got = e.unpack(&t[..], "test").unwrap();
        assert_eq!(std::fs::read(root.join("usr/bin/sh")).unwrap(), b"#!");
        assert!(root.join("bin").is_symlink());
        assert_eq!(std::fs::read(root.join("usr/bin/sh2")).unwrap(), b"#!");
        assert_eq!(got[1].path, b"/bin/sh");
        assert_eq!(got[1].on_disk, b"usr/bin/sh");
        let m = e.finish().unwrap();
        assert_eq!(m.get(b"usr/bin/sh").unwrap().uid, Some(0));
        assert_eq!(m.get(b"dev/null").unwrap().device, Some((1, 3)));
        assert!(!root.join("dev/null").exists());
    }

    #[test]
    fn hostile_entries_leave_nothing_outside() {
        let (_d, root, outside) = setup();
        let o = outside.display().to_string();
        let cases: Vec<Vec<u8>> = vec![
            tar_of(|b| raw(b, tar::EntryType::Regular, "../outside/x", None, b"x")),
            tar_of(|b| raw(b, tar::EntryType::Regular, &format!("{o}/x"), None, b"x")),
            tar_of(|b| {
                raw(b, tar::EntryType::Symlink, "./esc", Some("../outside"), b"");
                raw(b, tar::EntryType::Regular, "./esc/x", None, b"x");
            }),
            tar_of(|b| {
                raw(
                    b,
                    tar::EntryType::Symlink,
                    "./esc2",
                    Some("../../../../../../.."),
                    b"",
                );
                raw(b, tar::EntryType::Regular, "./esc2/x", None, b"x");
            }),
            tar_of(|b| {
                raw(
                    b,
                    tar::EntryType::Link,
                    "./hl",
                    Some("../outside/secret"),
                    b"",
                )
            }),
        ];
        std::fs::write(outside.join("secret"), b"s").unwrap();
        for (i, t) in cases.iter().enumerate() {
            let mut e = ex(&root, false);
            let r = e.unpack(&t[..], "hostile");
            assert!(r.is_err(), "case {i} was accepted");
        }
        // Absolute symlink targets are followed inside the root, never outside.
        let t = tar_of(|b| {
            raw(b, tar::EntryType::Symlink, "./abs", Some(&o), b"");
            raw(b, tar::EntryType::Regular, "./abs/y", None, b"y");
            raw(
                b,
                tar::EntryType::Link,
                "./hl2",
                Some(&format!("{o}/secret")),
                b"",
            );
        });
        let mut e = ex(&root, false);
        assert!(e.unpack(&t[..], "hostile").is_err());
        assert!(
            root.join(outside.strip_prefix("/").unwrap())
                .join("y")
                .exists()
        );
        let names: Vec<_> = std::fs::read_dir(&outside)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("secret")]);
    }

    #[test]
    fn a_file_replaces_a_symlink_instead_of_writing_through_it() {
        let (_d, root, outside) = setup();
        std::fs::write(outside.join("target"), b"keep").unwrap();
        std::os::unix::fs::symlink(outside.join("target"), root.join("f")).unwrap();
        let t = tar_of(|b| raw(b, tar::EntryType::Regular, "./f", None, b"new"));
        ex(&root, false).unpack(&t[..], "t").unwrap();
        assert_eq!(std::fs::read(outside.join("target")).unwrap(), b"keep");
        assert_eq!(std::fs::read(root.join("f")).unwrap(), b"new");
    }
}
