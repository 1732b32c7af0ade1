//! Extracting one verified package into the root: the payload is streamed (decompressed
//! and read as cpio entry by entry, never held whole in memory) through the shared safe
//! [`Extractor`]. The signed header decides everything about each file — its path, type,
//! mode, owner (user and group *names*, resolved against the rootfs's passwd and group),
//! time, link target, device number, digest — and the payload only supplies content: an
//! archive entry the header does not list, a type that disagrees, content that does not
//! hash to the header's digest, or a listed file missing from the archive is an error
//! (header/payload mismatch). Ghost files are not extracted; hard links are made as
//! links; device nodes go to the metadata when rootless; file capabilities (rpm's
//! FILECAPS text) become the `security.capability` attribute as root, and are kept in the
//! rootfs metadata when rootless.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::cpio;
use super::package::{Compression, FileEntry, Meta, RpmFile};
use super::verify::{Hasher, HashingReader, payload_digest};
use crate::pkg::extract::{Attrs, Extractor};
use crate::tree::mtree::MType;

/// User and group names → ids, from the root's passwd and group files.
#[derive(Clone, Debug, Default)]
pub struct Accounts {
    users: BTreeMap<String, u32>,
    groups: BTreeMap<String, u32>,
}

impl Accounts {
    /// Read `<dir>/passwd` and `<dir>/group` for each of `dirs` (the first definition of a
    /// name wins): `etc`, and e.g. Clear Linux's stateless `usr/share/defaults/etc`.
    pub fn load(ex: &mut Extractor, dirs: &[String]) -> Result<Accounts> {
        let mut a = Accounts::default();
        a.users.insert("root".into(), 0);
        a.groups.insert("root".into(), 0);
        for d in dirs {
            let d = d.trim_matches('/');
            for (file, map) in [("passwd", &mut a.users), ("group", &mut a.groups)] {
                let Some(text) = ex.read_file(format!("{d}/{file}").as_bytes())? else {
                    continue;
                };
                for line in String::from_utf8_lossy(&text).lines() {
                    let f: Vec<&str> = line.split(':').collect();
                    // name:password:ID:… in both files.
                    if let (Some(name), Some(Ok(id))) =
                        (f.first(), f.get(2).map(|s| s.parse::<u32>()))
                    {
                        if !name.is_empty() {
                            map.entry(name.to_string()).or_insert(id);
                        }
                    }
                }
            }
        }
        Ok(a)
    }

    pub fn uid(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }

    pub fn gid(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }
}

/// What extracting a package did, for the database, the log and later packages.
#[derive(Clone, Debug, Default)]
pub struct Extracted {
    /// Files placed (everything but ghosts and the root).
    pub files: usize,
    /// Owner names the rootfs does not define (installed as root, as rpm does).
    pub unknown_owners: BTreeSet<String>,
    /// `(path, capabilities)` of files that carry file capabilities.
    pub capabilities: Vec<(String, String)>,
    /// The payload digest that matched (algorithm), if the header has one.
    pub payload_digest: Option<&'static str>,
}

/// Who owns each regular file and symlink so far (path → package and content), to refuse
/// two packages writing different content to one path.
#[derive(Default)]
pub struct Owners {
    owner: HashMap<String, (String, String)>,
}

/// A name from a package, on one line whatever it holds (see `crate::show`).
fn sh(s: &str) -> String {
    crate::show::bytes(s.as_bytes())
}

/// `/usr/bin/foo` or `./usr/bin/foo` → `usr/bin/foo`; `..` components and NULs refused.
fn rel_path(p: &[u8], what: &str) -> Result<String> {
    let s = std::str::from_utf8(p)
        .with_context(|| format!("{what}: a file name is not UTF-8"))?
        .to_string();
    let t = s.strip_prefix("./").unwrap_or(&s);
    let t = t.trim_start_matches('/');
    if t.split('/').any(|c| c == "..") {
        bail!(
            "{what}: entry {} climbs out of the root with '..'; refusing it",
            sh(&s)
        );
    }
    Ok(t.trim_end_matches('/').to_string())
}

/// Install one package whose heads verified: stream its payload at `file` into `ex`.
pub fn extract(
    ex: &mut Extractor,
    file: &Path,
    rpm: &RpmFile,
    meta: &Meta,
    accounts: &Accounts,
    owners: &mut Owners,
    what: &str,
) -> Result<Extracted> {
    // The heads are read again from the file being extracted and must be the ones that
    // were verified.
    let (again, raw) = RpmFile::open(file, what)?;
    if again.header.raw() != rpm.header.raw() {
        bail!("{what}: the package file changed after it was verified");
    }
    // The payload digest covers the compressed bytes from the payload's start to EOF.
    let pd = payload_digest(rpm);
    let hasher = match &pd {
        Some((_, algo)) => {
            Some(Hasher::new(*algo).with_context(|| format!("{what}: PAYLOADDIGEST"))?)
        }
        None => None,
    };
    let mut hashed = HashingReader::new(raw, hasher);
    let mut head = [0u8; 6];
    hashed
        .read_exact(&mut head)
        .with_context(|| format!("{what}: the payload is missing or truncated"))?;
    let comp = Compression::sniff(&head).with_context(|| format!("{what}: payload"))?;
    let mut out = Extracted::default();
    {
        let stream = comp.reader(std::io::Read::chain(&head[..], &mut hashed))?;
        let mut archive = cpio::Reader::new(stream);
        place_all(ex, &mut archive, meta, accounts, owners, what, &mut out)?;
        // Whatever follows the trailer inside the compressed stream is read too.
        let mut rest = archive.content();
        std::io::copy(&mut rest, &mut std::io::sink())?;
    }
    std::io::copy(&mut hashed, &mut std::io::sink())
        .with_context(|| format!("{what}: reading the payload"))?;
    if let (Some((want, _)), Some(h)) = (pd, hashed.hasher.take()) {
        let name = h.name();
        if !h.hex().eq_ignore_ascii_case(want.trim()) {
            bail!(
                "{what}: the payload does not match the header's PAYLOADDIGEST (the package was \
                 altered)"
            );
        }
        out.payload_digest = Some(name);
    }
    Ok(out)
}

fn place_all<R: Read>(
    ex: &mut Extractor,
    archive: &mut cpio::Reader<R>,
    meta: &Meta,
    accounts: &Accounts,
    owners: &mut Owners,
    what: &str,
    out: &mut Extracted,
) -> Result<()> {
    let files = &meta.files;
    let mut by_path: HashMap<String, usize> = HashMap::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        by_path.insert(rel_path(f.path.as_bytes(), what)?, i);
    }
    // Hard-link groups: regular files sharing (device, inode).
    let mut groups: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.kind() == libc::S_IFREG && !f.is_ghost() && f.inode != 0 {
            groups.entry((f.device, f.inode)).or_default().push(i);
        }
    }
    groups.retain(|_, v| v.len() > 1);
    let group_of: HashMap<usize, (u32, u32)> = groups
        .iter()
        .flat_map(|(k, v)| v.iter().map(move |i| (*i, *k)))
        .collect();
    // For each hard-link group: the member whose content was written, and members waiting.
    let mut written: HashMap<(u32, u32), String> = HashMap::new();
    let mut waiting: HashMap<(u32, u32), Vec<String>> = HashMap::new();
    let mut seen = vec![false; files.len()];

    while let Some(e) = archive.next_entry()? {
        let idx = match e.index {
            Some(i) => {
                let i = i as usize;
                if i >= files.len() {
                    bail!(
                        "{what}: payload entry #{i} is not in the header (header/payload mismatch)"
                    );
                }
                let f = &files[i];
                archive.set_content(if f.kind() == libc::S_IFREG || f.kind() == libc::S_IFLNK {
                    if f.kind() == libc::S_IFLNK {
                        f.linkto.len() as u64
                    } else {
                        f.size
                    }
                } else {
                    0
                });
                i
            }
            None => {
                if e.name.starts_with(b"/") {
                    bail!(
                        "{what}: payload entry {} has an absolute path; refusing to write outside the rootfs",
                        crate::show::bytes(&e.name)
                    );
                }
                let rel = rel_path(&e.name, what)?;
                *by_path.get(&rel).with_context(|| {
                    format!(
                        "{what}: payload entry {} is not in the package header (header/payload \
                         mismatch); refusing the package",
                        crate::show::in_root(rel.as_bytes())
                    )
                })?
            }
        };
        if std::mem::replace(&mut seen[idx], true) {
            bail!("{what}: {} appears twice in the payload", files[idx].path);
        }
        let f = &files[idx];
        if f.is_ghost() {
            bail!(
                "{what}: ghost file {} has content in the payload",
                sh(&f.path)
            );
        }
        if e.index.is_none() && (e.mode & libc::S_IFMT) != f.kind() {
            bail!(
                "{what}: {} is a {} in the payload but a {} in the header (header/payload mismatch)",
                sh(&f.path),
                kind_name(e.mode),
                kind_name(f.mode)
            );
        }
        let rel = rel_path(f.path.as_bytes(), what)?;
        if rel.is_empty() {
            continue;
        }
        let attrs = attrs_of(f, accounts, out);
        let p = rel.as_bytes();
        // The path filter (docs, man pages…); hard-linked files are always kept, as the
        // group is written through its one member with content.
        let kind = match f.kind() {
            libc::S_IFDIR => MType::Dir,
            libc::S_IFLNK => MType::Link,
            libc::S_IFREG => MType::File,
            _ => MType::Char,
        };
        if !group_of.contains_key(&idx) && ex.leaves_out(format!("/{rel}").as_bytes(), kind, f.size)
        {
            continue;
        }
        match f.kind() {
            libc::S_IFDIR => {
                ex.create_dir(p, attrs)?;
            }
            libc::S_IFREG => {
                let link = group_of.get(&idx).copied();
                if e.index.is_none() && e.size != f.size {
                    // A hard-link member without content (all but one carry none).
                    if let (0, Some(g)) = (e.size, link) {
                        match written.get(&g) {
                            Some(target) => {
                                ex.hard_link(p, target.as_bytes())?;
                            }
                            None => waiting.entry(g).or_default().push(rel.clone()),
                        }
                        claim(owners, &rel, meta, &f.digest, what)?;
                        out.files += 1;
                        continue;
                    }
                    bail!(
                        "{what}: {} has {} bytes in the payload but {} in the header \
                         (header/payload mismatch)",
                        sh(&f.path),
                        e.size,
                        f.size
                    );
                }
                claim(owners, &rel, meta, &f.digest, what)?;
                write_checked(ex, archive, p, f, meta.digest_algo, attrs, what)?;
                // After the owner (chown clears it) and before hard links copy the
                // rootless metadata.
                if !f.caps.is_empty() {
                    let value = crate::tree::caps::from_text(&f.caps).map_err(|e| {
                        crate::error::refused(format!(
                            "{what}: {} has file capabilities rpm's FILECAPS gives as {}:                              {e:#}; refusing the package",
                            sh(&f.path),
                            sh(&f.caps)
                        ))
                    })?;
                    ex.set_capability(p, &value)?;
                    out.capabilities.push((f.path.clone(), f.caps.clone()));
                }
                if let Some(g) = link {
                    for other in waiting.remove(&g).unwrap_or_default() {
                        ex.hard_link(other.as_bytes(), p)?;
                    }
                    written.insert(g, rel.clone());
                }
            }
            libc::S_IFLNK => {
                let target = archive.read_small(4096)?;
                if target != f.linkto.as_bytes() {
                    bail!(
                        "{what}: symlink {} points at {} in the payload but {} in the header \
                         (header/payload mismatch)",
                        sh(&f.path),
                        crate::show::bytes(&target),
                        sh(&f.linkto)
                    );
                }
                claim(owners, &rel, meta, &format!("-> {}", f.linkto), what)?;
                ex.symlink(p, f.linkto.as_bytes(), attrs)?;
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let kind = match f.kind() {
                    libc::S_IFCHR => MType::Char,
                    libc::S_IFBLK => MType::Block,
                    _ => MType::Fifo,
                };
                // The header's rdev: major in the high bits, minor in the low 8 (and
                // 12 more bits above 16 for large minors), as glibc's old dev_t.
                let dev = (
                    (f.rdev >> 8) & 0xfff,
                    (f.rdev & 0xff) | ((f.rdev >> 12) & 0xfff00),
                );
                ex.special(p, kind, dev, attrs)?;
            }
            _ => bail!(
                "{what}: {} has an unsupported file type ({:o})",
                sh(&f.path),
                f.mode
            ),
        }
        out.files += 1;
    }
    if let Some((_, names)) = waiting.iter().next() {
        bail!(
            "{what}: hard link {} has no member with content in the payload",
            sh(&names[0])
        );
    }
    for (i, f) in files.iter().enumerate() {
        if !seen[i] && !f.is_ghost() && !rel_path(f.path.as_bytes(), what)?.is_empty() {
            bail!(
                "{what}: {} is in the header but not in the payload (header/payload mismatch)",
                sh(&f.path)
            );
        }
    }
    Ok(())
}

fn kind_name(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => "directory",
        libc::S_IFREG => "regular file",
        libc::S_IFLNK => "symlink",
        libc::S_IFCHR => "character device",
        libc::S_IFBLK => "block device",
        libc::S_IFIFO => "fifo",
        libc::S_IFSOCK => "socket",
        _ => "file of unknown type",
    }
}

fn attrs_of(f: &FileEntry, accounts: &Accounts, out: &mut Extracted) -> Attrs {
    let uid = accounts.uid(&f.user).unwrap_or_else(|| {
        out.unknown_owners.insert(format!("user {}", f.user));
        0
    });
    let gid = accounts.gid(&f.group).unwrap_or_else(|| {
        out.unknown_owners.insert(format!("group {}", f.group));
        0
    });
    Attrs {
        mode: f.mode & 0o7777,
        uid,
        gid,
        mtime: f.mtime as i64,
    }
}

/// Record that `meta` owns `rel` with `content`; another package may own the same path
/// only with the same content (rpm's file-conflict rule; directories are shared freely).
fn claim(owners: &mut Owners, rel: &str, meta: &Meta, content: &str, what: &str) -> Result<()> {
    match owners.owner.get(rel) {
        Some((pkg, c)) if pkg != &meta.name && c != content => bail!(
            "{what}: {} conflicts with the file of the same path from {pkg} (both packages \
             install it with different content)",
            crate::show::in_root(rel.as_bytes())
        ),
        _ => {
            owners
                .owner
                .insert(rel.to_string(), (meta.name.clone(), content.to_string()));
            Ok(())
        }
    }
}

/// Write a regular file's content, hashing it against the header's digest.
fn write_checked<R: Read>(
    ex: &mut Extractor,
    archive: &mut cpio::Reader<R>,
    p: &[u8],
    f: &FileEntry,
    algo: u64,
    attrs: Attrs,
    what: &str,
) -> Result<()> {
    let hasher = if f.digest.is_empty() {
        None
    } else {
        Some(Hasher::new(algo).with_context(|| format!("{what}: file digest algorithm"))?)
    };
    let mut content = HashingReader::new(archive.content(), hasher);
    ex.write_file(p, &mut content, attrs)?;
    if content.count != f.size {
        bail!(
            "{what}: {} is truncated in the payload ({} of {} bytes)",
            sh(&f.path),
            content.count,
            f.size
        );
    }
    if let Some(h) = content.hasher.take() {
        if !h.hex().eq_ignore_ascii_case(&f.digest) {
            bail!(
                "{what}: {} does not match its digest in the signed header (the payload was \
                 altered)",
                sh(&f.path)
            );
        }
    }
    Ok(())
}

/// What [`check_contents`] proved about a payload.
#[derive(Clone, Debug)]
pub struct ContentCheck {
    pub compression: &'static str,
    /// Regular files whose content matched the header's digest.
    pub files: usize,
    pub digest_algo: &'static str,
}

/// Read the payload at `file` without writing anything and check it against the header:
/// every archive entry is a file the header lists, with the header's type and size, and
/// every regular file's content hashes to the header's digest; nothing listed is missing.
pub fn check_contents(file: &Path, rpm: &RpmFile, meta: &Meta, what: &str) -> Result<ContentCheck> {
    let (again, raw) = RpmFile::open(file, what)?;
    if again.header.raw() != rpm.header.raw() {
        bail!("{what}: the package file changed while it was being verified");
    }
    let mut raw = raw;
    let mut head = [0u8; 6];
    raw.read_exact(&mut head)
        .with_context(|| format!("{what}: the payload is missing or truncated"))?;
    let comp = Compression::sniff(&head).with_context(|| format!("{what}: payload"))?;
    let stream = comp.reader(std::io::Read::chain(&head[..], raw))?;
    let mut archive = cpio::Reader::new(stream);
    let mut by_path = HashMap::with_capacity(meta.files.len());
    for (i, f) in meta.files.iter().enumerate() {
        by_path.insert(rel_path(f.path.as_bytes(), what)?, i);
    }
    let mut seen = vec![false; meta.files.len()];
    let mut files = 0;
    while let Some(e) = archive.next_entry()? {
        let idx = match e.index {
            Some(i) if (i as usize) < meta.files.len() => i as usize,
            Some(i) => bail!("{what}: payload entry #{i} is not in the header"),
            None => {
                if e.name.starts_with(b"/") {
                    bail!(
                        "{what}: payload entry {} has an absolute path",
                        crate::show::bytes(&e.name)
                    );
                }
                let rel = rel_path(&e.name, what)?;
                *by_path.get(&rel).with_context(|| {
                    format!(
                        "{what}: payload entry {} is not in the package header (header/payload mismatch)",
                        crate::show::in_root(rel.as_bytes())
                    )
                })?
            }
        };
        let f = &meta.files[idx];
        if std::mem::replace(&mut seen[idx], true) {
            bail!("{what}: {} appears twice in the payload", sh(&f.path));
        }
        if e.index.is_some() {
            archive.set_content(match f.kind() {
                libc::S_IFREG => f.size,
                libc::S_IFLNK => f.linkto.len() as u64,
                _ => 0,
            });
        } else if (e.mode & libc::S_IFMT) != f.kind() {
            bail!(
                "{what}: {} is a {} in the payload but a {} in the header",
                sh(&f.path),
                kind_name(e.mode),
                kind_name(f.mode)
            );
        }
        if f.kind() == libc::S_IFREG
            && !f.digest.is_empty()
            && (e.index.is_some() || e.size == f.size)
        {
            let mut h = HashingReader::new(archive.content(), Some(Hasher::new(meta.digest_algo)?));
            std::io::copy(&mut h, &mut std::io::sink())?;
            if h.count != f.size
                || !h
                    .hasher
                    .take()
                    .expect("set")
                    .hex()
                    .eq_ignore_ascii_case(&f.digest)
            {
                bail!(
                    "{what}: {} does not match its digest in the header (the payload was altered)",
                    sh(&f.path)
                );
            }
            files += 1;
        }
    }
    for (i, f) in meta.files.iter().enumerate() {
        if !seen[i] && !f.is_ghost() && !rel_path(f.path.as_bytes(), what)?.is_empty() {
            bail!(
                "{what}: {} is in the header but not in the payload",
                sh(&f.path)
            );
        }
    }
    Ok(ContentCheck {
        compression: comp.name(),
        files,
        digest_algo: Hasher::new(meta.digest_algo)
            .map(|h| h.name())
            .unwrap_or("unknown"),
    })
}
