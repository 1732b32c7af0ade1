//! A rootfs as packers see it: the tree on disk merged with its metadata, in a fixed order.
//!
//! Every packer (initrd, disk image, …) consumes a [`Tree`], so the rootless metadata model
//! is implemented once: on-disk type, mode, owner and mtime, overridden by the mtree file
//! beside the rootfs, plus the entries (device nodes, FIFOs…) that exist only there.
//! File capabilities (`security.capability`) come from the file on disk (a build as root
//! sets the real attribute) or from the metadata (a rootless build records them there).

pub mod caps;
pub mod mtree;

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

pub use mtree::{MEntry, MType, Mtree};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Dir,
    /// A regular file; its bytes are read from `source` when packing.
    File {
        source: PathBuf,
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    CharDev {
        major: u32,
        minor: u32,
    },
    BlockDev {
        major: u32,
        minor: u32,
    },
    Fifo,
    Socket,
}

impl Kind {
    /// The S_IFMT bits of this type.
    pub fn format_bits(&self) -> u32 {
        match self {
            Kind::Dir => 0o040000,
            Kind::File { .. } => 0o100000,
            Kind::Symlink { .. } => 0o120000,
            Kind::CharDev { .. } => 0o020000,
            Kind::BlockDev { .. } => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    fn mtype(&self) -> MType {
        match self {
            Kind::Dir => MType::Dir,
            Kind::File { .. } => MType::File,
            Kind::Symlink { .. } => MType::Link,
            Kind::CharDev { .. } => MType::Char,
            Kind::BlockDev { .. } => MType::Block,
            Kind::Fifo => MType::Fifo,
            Kind::Socket => MType::Socket,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the root, no leading "./"; the root itself is "".
    pub path: Vec<u8>,
    pub kind: Kind,
    /// Permission bits, including setuid/setgid/sticky (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// Entries with the same `link_group` are hard links to one file (regular files only).
    pub link_group: Option<u32>,
    /// The `security.capability` value (file capabilities; regular files only).
    pub capability: Option<Vec<u8>>,
}

impl Entry {
    /// st_mode: type bits | permission bits.
    pub fn mode(&self) -> u32 {
        self.kind.format_bits() | self.perm
    }

    /// The path as the guest sees it, for messages: one line, escaped, of bounded length
    /// (see `crate::show`).
    pub fn path_display(&self) -> String {
        crate::show::in_root(&self.path)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    /// Metadata to merge; `None` uses the disk alone.
    pub metadata: Option<Mtree>,
    /// Make every entry owned by 0:0 before applying metadata (mksquashfs's -all-root).
    pub all_root: bool,
    /// Clamp every mtime to this value (SOURCE_DATE_EPOCH).
    pub clamp_mtime: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Tree {
    pub root: PathBuf,
    /// Parents before children, siblings sorted by name bytes.
    pub entries: Vec<Entry>,
}

/// Component-wise byte order: a depth-first walk with sorted siblings.
pub fn path_order(a: &[u8], b: &[u8]) -> Ordering {
    if a.is_empty() || b.is_empty() {
        return a.len().cmp(&b.len());
    }
    a.split(|c| *c == b'/').cmp(b.split(|c| *c == b'/'))
}

impl Tree {
    /// Walk `root` (never following symlinks) and merge `opts.metadata`.
    pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Tree> {
        let meta = std::fs::symlink_metadata(root)
            .with_context(|| format!("rootfs {} does not exist", root.display()))?;
        if !meta.is_dir() {
            bail!("rootfs {} is not a directory", root.display());
        }
        let mut entries = Vec::new();
        let mut inodes: HashMap<(u64, u64), u32> = HashMap::new();
        let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(root.to_path_buf(), Vec::new())];
        while let Some((abs, rel)) = stack.pop() {
            let md = std::fs::symlink_metadata(&abs)
                .with_context(|| format!("reading {}", abs.display()))?;
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                Kind::Dir
            } else if ft.is_file() {
                Kind::File {
                    source: abs.clone(),
                    size: md.len(),
                }
            } else if ft.is_symlink() {
                let t = std::fs::read_link(&abs)
                    .with_context(|| format!("reading link {}", abs.display()))?;
                Kind::Symlink {
                    target: t.as_os_str().as_bytes().to_vec(),
                }
            } else if ft.is_char_device() {
                Kind::CharDev {
                    major: dev_major(md.rdev()),
                    minor: dev_minor(md.rdev()),
                }
            } else if ft.is_block_device() {
                Kind::BlockDev {
                    major: dev_major(md.rdev()),
                    minor: dev_minor(md.rdev()),
                }
            } else if ft.is_fifo() {
                Kind::Fifo
            } else {
                Kind::Socket
            };
            let link_group = if ft.is_file() && md.nlink() > 1 {
                let next = inodes.len() as u32;
                Some(*inodes.entry((md.dev(), md.ino())).or_insert(next))
            } else {
                None
            };
            if ft.is_dir() {
                let mut children: Vec<_> = std::fs::read_dir(&abs)
                    .with_context(|| format!("listing {}", abs.display()))?
                    .map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("listing {}", abs.display()))?;
                // Reverse order on the stack pops them in ascending order.
                children.sort_by(|a, b| b.as_bytes().cmp(a.as_bytes()));
                for name in children {
                    let mut crel = rel.clone();
                    if !crel.is_empty() {
                        crel.push(b'/');
                    }
                    crel.extend_from_slice(name.as_bytes());
                    stack.push((abs.join(&name), crel));
                }
            }
            let capability = if ft.is_file() {
                disk_capability(&abs)?
            } else {
                None
            };
            entries.push(Entry {
                path: rel,
                kind,
                perm: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                link_group,
                capability,
            });
        }
        let mut tree = Tree {
            root: root.to_path_buf(),
            entries,
        };
        if opts.all_root {
            for e in &mut tree.entries {
                e.uid = 0;
                e.gid = 0;
            }
        }
        if let Some(m) = &opts.metadata {
            tree.apply_metadata(m)?;
        }
        if let Some(limit) = opts.clamp_mtime {
            for e in &mut tree.entries {
                e.mtime = e.mtime.min(limit);
            }
        }
        Ok(tree)
    }

    fn apply_metadata(&mut self, m: &Mtree) -> Result<()> {
        let index: HashMap<Vec<u8>, usize> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.clone(), i))
            .collect();
        let mut added = Vec::new();
        for (path, me) in m.iter() {
            let shown = crate::show::in_root(path);
            if let Some(&i) = index.get(path) {
                let e = &mut self.entries[i];
                if let Some(k) = me.kind {
                    let on_disk = e.kind.mtype();
                    // Device nodes and FIFOs that could not be created may stand on disk as
                    // empty placeholder files; the metadata's type wins for those.
                    let placeholder = on_disk == MType::File
                        && matches!(k, MType::Char | MType::Block | MType::Fifo | MType::Socket);
                    if k != on_disk && !placeholder {
                        bail!(
                            "metadata says {shown} is a {}, but the rootfs has a {} there",
                            k.name(),
                            on_disk.name()
                        );
                    }
                    if placeholder {
                        e.kind = kind_from_meta(me, &shown)?;
                        e.link_group = None;
                    }
                }
                if let Some(c) = &me.capability {
                    if !matches!(e.kind, Kind::File { .. }) {
                        bail!(
                            "metadata gives {shown} file capabilities, but it is not a regular file"
                        );
                    }
                    e.capability = Some(c.clone());
                }
                if let (Kind::Symlink { target }, Some(l)) = (&mut e.kind, &me.link) {
                    *target = l.clone();
                }
                if let (
                    Kind::CharDev { major, minor } | Kind::BlockDev { major, minor },
                    Some((ma, mi)),
                ) = (&mut e.kind, me.device)
                {
                    (*major, *minor) = (ma, mi);
                }
                override_attrs(e, me);
            } else {
                let Some(_) = me.kind else {
                    bail!(
                        "metadata names {shown}, which is not in the rootfs, without a type= for it"
                    );
                };
                let kind = kind_from_meta(me, &shown)?;
                let mut e = Entry {
                    path: path.to_vec(),
                    perm: default_perm(&kind),
                    kind,
                    uid: 0,
                    gid: 0,
                    mtime: 0,
                    link_group: None,
                    capability: None,
                };
                override_attrs(&mut e, me);
                added.push(e);
            }
        }
        if !added.is_empty() {
            self.entries.extend(added);
            self.entries.sort_by(|a, b| path_order(&a.path, &b.path));
            // Every entry that exists only in the metadata needs a directory to live in.
            for w in 0..self.entries.len() {
                let p = &self.entries[w].path;
                if let Some(slash) = p.iter().rposition(|c| *c == b'/') {
                    let parent = &p[..slash];
                    let ok = self
                        .entries
                        .binary_search_by(|e| path_order(&e.path, parent))
                        .map(|i| self.entries[i].kind == Kind::Dir)
                        .unwrap_or(false);
                    if !ok {
                        bail!(
                            "metadata adds {}, but its parent {} is not a directory in the rootfs or the metadata",
                            self.entries[w].path_display(),
                            crate::show::in_root(parent)
                        );
                    }
                }
            }
        }
        Ok(())
    }

    pub fn get(&self, path: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| path_order(&e.path, path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Like lstat(2) inside the tree: symlinks in the parent components are followed
    /// (so /sbin/init is found when /sbin → usr/sbin), the last component is not.
    pub fn lookup(&self, path: &[u8]) -> Option<&Entry> {
        match path.iter().rposition(|c| *c == b'/') {
            None => self.get(path),
            Some(i) => {
                let mut p = self.resolve(&path[..i])?;
                if !p.is_empty() {
                    p.push(b'/');
                }
                p.extend_from_slice(&path[i + 1..]);
                self.get(&p)
            }
        }
    }

    /// Follow symlinks inside the tree (as the guest would see them) from `path`
    /// to a non-link entry. Returns the final path, or None for dangling or looping links.
    pub fn resolve(&self, path: &[u8]) -> Option<Vec<u8>> {
        let mut cur: Vec<Vec<u8>> = Vec::new();
        let mut todo: Vec<Vec<u8>> = split_rev(path);
        let mut hops = 0;
        while let Some(comp) = todo.pop() {
            match comp.as_slice() {
                b"" | b"." => continue,
                b".." => {
                    cur.pop();
                    continue;
                }
                _ => {}
            }
            cur.push(comp);
            let joined = cur.join(&b'/');
            if let Kind::Symlink { target } = &self.get(&joined)?.kind {
                hops += 1;
                if hops > 40 {
                    return None;
                }
                cur.pop();
                if target.starts_with(b"/") {
                    cur.clear();
                }
                todo.extend(split_rev(target));
            }
        }
        Some(cur.join(&b'/'))
    }

    /// A digest of the tree as a packer writes it: every entry's path, type, permission
    /// bits, owner, mtime, hard-link group, symlink target, device numbers, file
    /// capabilities and file contents — and nothing about where the tree lives. Packers derive UUIDs and salts
    /// from it, so the same content gives the same artifact under any name. Reads every
    /// file once (hard-linked ones once per group).
    pub fn digest(&self) -> Result<[u8; 32]> {
        use sha2::{Digest, Sha256};
        fn field(h: &mut Sha256, b: &[u8]) {
            h.update((b.len() as u64).to_le_bytes());
            h.update(b);
        }
        let mut h = Sha256::new();
        field(&mut h, b"osbuilder-tree-v1");
        let mut groups: HashMap<u32, [u8; 32]> = HashMap::new();
        for e in &self.entries {
            field(&mut h, &e.path);
            h.update(e.kind.format_bits().to_le_bytes());
            for v in [e.perm, e.uid, e.gid] {
                h.update(v.to_le_bytes());
            }
            h.update(e.mtime.to_le_bytes());
            h.update(e.link_group.map_or(-1, i64::from).to_le_bytes());
            // Only when present, so trees without capabilities keep their digests.
            if let Some(c) = &e.capability {
                field(&mut h, caps::XATTR.as_bytes());
                field(&mut h, c);
            }
            match &e.kind {
                Kind::File { source, size } => {
                    let sum = match e.link_group.and_then(|g| groups.get(&g)) {
                        Some(s) => *s,
                        None => {
                            let s = file_digest(source)?;
                            if let Some(g) = e.link_group {
                                groups.insert(g, s);
                            }
                            s
                        }
                    };
                    h.update(size.to_le_bytes());
                    h.update(sum);
                }
                Kind::Symlink { target } => field(&mut h, target),
                Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => {
                    h.update(major.to_le_bytes());
                    h.update(minor.to_le_bytes());
                }
                Kind::Dir | Kind::Fifo | Kind::Socket => {}
            }
        }
        Ok(h.finalize().into())
    }

    /// The files that carry file capabilities: `(path as the guest sees it, text form)`.
    pub fn capabilities(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .filter_map(|e| {
                e.capability
                    .as_ref()
                    .map(|c| (e.path_display(), caps::to_text(c)))
            })
            .collect()
    }

    /// Sum of regular file sizes, counting each hard-linked file once.
    pub fn content_bytes(&self) -> u64 {
        let mut seen = std::collections::HashSet::new();
        self.entries
            .iter()
            .filter_map(|e| match (&e.kind, e.link_group) {
                (Kind::File { size, .. }, None) => Some(*size),
                (Kind::File { size, .. }, Some(g)) => seen.insert(g).then_some(*size),
                _ => None,
            })
            .sum()
    }
}

/// The `security.capability` attribute of a file on disk, if it has one (a filesystem
/// without xattrs has none). Only this attribute is read: others, such as the host's
/// SELinux labels, are not the guest's.
fn disk_capability(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut buf = [0u8; 64];
    match rustix::fs::lgetxattr(path, caps::XATTR, &mut buf[..]) {
        Ok(n) => {
            let v = buf[..n].to_vec();
            caps::check(&v).with_context(|| format!("{} of {}", caps::XATTR, path.display()))?;
            Ok(Some(v))
        }
        Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(format!(
            "reading {} of {}",
            caps::XATTR,
            path.display()
        ))),
    }
}

fn file_digest(path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(h.finalize().into())
}

fn split_rev(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|c| *c == b'/').rev().map(<[u8]>::to_vec).collect()
}

fn override_attrs(e: &mut Entry, me: &MEntry) {
    if let Some(u) = me.uid {
        e.uid = u;
    }
    if let Some(g) = me.gid {
        e.gid = g;
    }
    if let Some(m) = me.mode {
        e.perm = m;
    }
    if let Some(t) = me.time {
        e.mtime = t;
    }
}

fn default_perm(kind: &Kind) -> u32 {
    match kind {
        Kind::Dir => 0o755,
        Kind::Symlink { .. } => 0o777,
        Kind::CharDev { .. } | Kind::BlockDev { .. } => 0o600,
        _ => 0o644,
    }
}

fn kind_from_meta(me: &MEntry, shown: &str) -> Result<Kind> {
    Ok(match me.kind.expect("checked by caller") {
        MType::Dir => Kind::Dir,
        MType::Fifo => Kind::Fifo,
        MType::Socket => Kind::Socket,
        MType::Link => Kind::Symlink {
            target: me
                .link
                .clone()
                .with_context(|| format!("metadata symlink {shown} has no link= target"))?,
        },
        MType::Char | MType::Block => {
            let (major, minor) = me
                .device
                .with_context(|| format!("metadata device {shown} has no device= number"))?;
            if me.kind == Some(MType::Char) {
                Kind::CharDev { major, minor }
            } else {
                Kind::BlockDev { major, minor }
            }
        }
        MType::File => {
            bail!("metadata names regular file {shown}, which is missing from the rootfs")
        }
    })
}

pub fn dev_major(d: u64) -> u32 {
    (((d >> 8) & 0xfff) | ((d >> 32) & !0xfff)) as u32
}

pub fn dev_minor(d: u64) -> u32 {
    ((d & 0xff) | ((d >> 12) & !0xff)) as u32
}

/// The SOURCE_DATE_EPOCH of the environment, if set; a malformed value is an error
/// rather than silently unreproducible output.
pub fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var_os("SOURCE_DATE_EPOCH") {
        None => Ok(None),
        Some(v) if v.is_empty() => Ok(None),
        Some(v) => {
            let s = v.to_string_lossy();
            s.trim().parse::<i64>().map(Some).with_context(|| {
                format!("SOURCE_DATE_EPOCH='{s}' is not a number of seconds since 1970")
            })
        }
    }
}

/// `OsStr` of a tree path, for joining onto the root.
pub fn os_path(rel: &[u8]) -> &OsStr {
    OsStr::from_bytes(rel)
}

/// A file kept beside a rootfs: `<rootfs><suffix>` (e.g. `out/rootfs.mtree` for
/// `out/rootfs/`), whatever form the rootfs path was given in.
pub fn sidecar_path(rootfs: &Path, suffix: &str) -> PathBuf {
    let abs = std::path::absolute(rootfs).unwrap_or_else(|_| rootfs.to_path_buf());
    // Normalise "dir/" and "dir/." so that the sibling is found.
    let abs: PathBuf = abs.components().collect();
    let mut name = abs
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "rootfs".into());
    name.push(suffix);
    abs.with_file_name(name)
}

/// The metadata to use for `rootfs`: the explicit file if given (it must exist), else
/// `<rootfs>.mtree` when that exists, else none. Returns the metadata and where it came from.
pub fn load_metadata_for(
    rootfs: &Path,
    explicit: Option<&Path>,
) -> Result<(Option<Mtree>, Option<PathBuf>)> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = Mtree::default_path_for(rootfs);
            if !p.exists() {
                return Ok((None, None));
            }
            p
        }
    };
    Ok((Some(Mtree::load(&path)?), Some(path)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn mk(dir: &Path) {
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::create_dir_all(dir.join("sbin")).unwrap();
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        std::fs::write(dir.join("a/b/f"), b"hello").unwrap();
        std::fs::write(dir.join("a.b"), b"x").unwrap();
        std::fs::hard_link(dir.join("a/b/f"), dir.join("a/g")).unwrap();
        symlink("../a/b/f", dir.join("sbin/init")).unwrap();
        symlink("/sbin/init", dir.join("init")).unwrap();
    }

    #[test]
    fn order_is_depth_first_with_sorted_siblings() {
        let d = tempfile::tempdir().unwrap();
        mk(d.path());
        let t = Tree::scan(d.path(), &ScanOptions::default()).unwrap();
        let paths: Vec<String> = t
            .entries
            .iter()
            .map(|e| String::from_utf8_lossy(&e.path).into())
            .collect();
        assert_eq!(
            paths,
            vec![
                "",
                "a",
                "a/b",
                "a/b/f",
                "a/g",
                "a.b",
                "dev",
                "init",
                "sbin",
                "sbin/init"
            ]
        );
        let f = t.get(b"a/b/f").unwrap();
        let g = t.get(b"a/g").unwrap();
        assert!(f.link_group.is_some() && f.link_group == g.link_group);
        assert_eq!(t.content_bytes(), 6);
    }

    #[test]
    fn metadata_overrides_and_adds_entries() {
        let d = tempfile::tempdir().unwrap();
        mk(d.path());
        let m = Mtree::parse(b"./a/b/f uid=0 gid=0 mode=4755\n./dev/console type=char device=native,5,1 mode=0600\n./dev/fifo type=fifo\n").unwrap();
        let t = Tree::scan(
            d.path(),
            &ScanOptions {
                metadata: Some(m),
                all_root: false,
                clamp_mtime: Some(100),
            },
        )
        .unwrap();
        let f = t.get(b"a/b/f").unwrap();
        assert_eq!((f.uid, f.perm), (0, 0o4755));
        let c = t.get(b"dev/console").unwrap();
        assert_eq!(c.kind, Kind::CharDev { major: 5, minor: 1 });
        assert_eq!(c.mode(), 0o020600);
        assert!(t.get(b"dev/fifo").is_some());
        assert!(t.entries.iter().all(|e| e.mtime <= 100));
        // still in order
        assert!(
            t.entries
                .windows(2)
                .all(|w| path_order(&w[0].path, &w[1].path) == Ordering::Less)
        );
    }

    #[test]
    fn metadata_conflicts_are_errors() {
        let d = tempfile::tempdir().unwrap();
        mk(d.path());
        for (text, want) in [
            (
                &b"./a type=file\n"[..],
                "is a file, but the rootfs has a dir",
            ),
            (b"./nowhere/x type=char device=1,3\n", "parent /nowhere"),
            (b"./missing uid=0\n", "without a type="),
            (b"./missing type=file\n", "missing from the rootfs"),
            (b"./dev/x type=char\n", "no device="),
        ] {
            let m = Mtree::parse(text).unwrap();
            let err = format!(
                "{:#}",
                Tree::scan(
                    d.path(),
                    &ScanOptions {
                        metadata: Some(m),
                        ..Default::default()
                    }
                )
                .unwrap_err()
            );
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    #[test]
    fn resolve_follows_links_inside_the_tree() {
        let d = tempfile::tempdir().unwrap();
        mk(d.path());
        let t = Tree::scan(d.path(), &ScanOptions::default()).unwrap();
        assert_eq!(t.resolve(b"init").unwrap(), b"a/b/f".to_vec());
        assert_eq!(t.resolve(b"sbin/init").unwrap(), b"a/b/f".to_vec());
        assert!(t.resolve(b"nothing").is_none());
        // lstat-like: parents resolved, last component kept.
        std::fs::create_dir_all(d.path().join("usr/sbin")).unwrap();
        symlink("usr/sbin", d.path().join("xbin")).unwrap();
        symlink("../../a/b/f", d.path().join("usr/sbin/tool")).unwrap();
        let t = Tree::scan(d.path(), &ScanOptions::default()).unwrap();
        let e = t.lookup(b"xbin/tool").unwrap();
        assert_eq!(e.path, b"usr/sbin/tool".to_vec());
        assert!(matches!(e.kind, Kind::Symlink { .. }));
    }

    #[test]
    fn missing_rootfs_is_a_clear_error() {
        let err = format!(
            "{:#}",
            Tree::scan(Path::new("/nonexistent/rootfs"), &ScanOptions::default()).unwrap_err()
        );
        assert!(err.contains("does not exist"), "{err}");
    }
}
