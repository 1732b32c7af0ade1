//! An initrd back into a directory, natively: the archive's compression is recognised from
//! its first bytes, members are read with [`super::newc::NewcReader`] and placed through the
//! package layer's in-root [`Extractor`], so names cannot climb out of the destination, and
//! an unprivileged run keeps owners and device nodes in the destination's metadata instead
//! of failing (no `sudo cpio`). Hard links are restored whichever member carries the data
//! (GNU cpio puts it on the last name, other writers on the first).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::newc::{Member, NewcReader};
use crate::compress::{self, Compression};
use crate::pkg::extract::{Attrs, Extractor};
use crate::tree::MType;

/// What an unpack did.
#[derive(Clone, Debug)]
pub struct Unpacked {
    /// Members placed (the root entry and trailers not counted).
    pub members: usize,
    pub compression: Compression,
    /// Members that were left out, with the reason (sockets: they cannot be archived
    /// meaningfully and no packer writes them back).
    pub skipped: Vec<String>,
}

/// Unpack the initrd at `archive` through `ex`.
pub fn unpack_file(archive: &Path, ex: &mut Extractor) -> Result<Unpacked> {
    let f = std::fs::File::open(archive)
        .with_context(|| format!("opening the initrd {}", archive.display()))?;
    unpack(f, ex).with_context(|| format!("unpacking {}", archive.display()))
}

/// Unpack an initrd stream (compressed or not) through `ex`.
pub fn unpack<R: Read>(r: R, ex: &mut Extractor) -> Result<Unpacked> {
    let (compression, plain) = compress::reader(r)?;
    let mut reader = NewcReader::new(plain);
    let mut links: HashMap<(u32, u32, u32), Group> = HashMap::new();
    let mut out = Unpacked {
        members: 0,
        compression,
        skipped: Vec::new(),
    };
    while let Some(m) = reader.next_member()? {
        let Some(path) = normalise(&m.name) else {
            root_attrs(ex, &m)?;
            continue;
        };
        let shown = String::from_utf8_lossy(&path).into_owned();
        let a = Attrs {
            mode: m.header.mode & 0o7777,
            uid: m.header.uid,
            gid: m.header.gid,
            mtime: m.header.mtime as i64,
        };
        let placed = match m.file_type() {
            0o040000 => ex.create_dir(&path, a).map(|_| ()),
            0o100000 if m.header.nlink > 1 => {
                let key = (m.dev_major, m.dev_minor, m.header.ino);
                link_member(ex, links.entry(key).or_default(), &m, path, a, &mut reader)
            }
            0o100000 => ex.write_file(&path, &mut reader.data(), a).map(|_| ()),
            0o120000 => {
                let mut target = Vec::new();
                reader
                    .data()
                    .take(super::newc::MAX_NAME as u64 + 1)
                    .read_to_end(&mut target)?;
                if target.is_empty() || target.len() > super::newc::MAX_NAME {
                    bail!("symlink /{shown} has an empty or overlong target");
                }
                ex.symlink(&path, &target, a).map(|_| ())
            }
            t @ (0o020000 | 0o060000 | 0o010000) => {
                let kind = match t {
                    0o020000 => MType::Char,
                    0o060000 => MType::Block,
                    _ => MType::Fifo,
                };
                let dev = (m.header.rdev_major, m.header.rdev_minor);
                ex.special(&path, kind, dev, a).map(|_| ())
            }
            0o140000 => {
                out.skipped.push(format!("/{shown} (a socket)"));
                continue;
            }
            other => bail!("/{shown} has an unknown file type {other:o} in its mode"),
        };
        placed.with_context(|| format!("placing /{shown}"))?;
        out.members += 1;
    }
    // Hard-linked names whose data never came: empty files, as GNU cpio makes them.
    let mut pending: Vec<Group> = links.into_values().filter(|g| g.data.is_none()).collect();
    pending.sort_by(|a, b| {
        let first = |g: &Group| g.waiting.first().map(|w| w.0.clone());
        first(a).cmp(&first(b))
    });
    for g in pending {
        let mut names = g.waiting.into_iter();
        if let Some((first, a)) = names.next() {
            ex.write_file(&first, &mut std::io::empty(), a)?;
            for (name, _) in names {
                ex.hard_link(&name, &first)?;
            }
        }
    }
    Ok(out)
}

/// The archive's entry for the root itself: its owner and mode for the destination
/// (on disk as root; in the metadata otherwise, as for every other entry).
fn root_attrs(ex: &mut Extractor, m: &Member) -> Result<()> {
    if m.file_type() != 0o040000 {
        bail!("the archive's root entry is not a directory");
    }
    let mode = m.header.mode & 0o7777;
    // The extractor gives the root this time when it finishes.
    ex.set_default_mtime(m.header.mtime as i64);
    if ex.privileged() {
        use std::os::unix::fs::PermissionsExt;
        let root = ex.root().to_path_buf();
        std::os::unix::fs::lchown(&root, Some(m.header.uid), Some(m.header.gid))
            .with_context(|| format!("chown {}", root.display()))?;
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode))?;
    } else {
        ex.mtree_mut().set(
            b"",
            crate::tree::MEntry {
                kind: Some(MType::Dir),
                uid: Some(m.header.uid),
                gid: Some(m.header.gid),
                mode: Some(mode),
                ..Default::default()
            },
        );
    }
    Ok(())
}

/// Names of one hard-linked file seen so far.
#[derive(Default)]
struct Group {
    /// The name that holds the data, once written.
    data: Option<Vec<u8>>,
    /// Names met before the data, to link once it is written.
    waiting: Vec<(Vec<u8>, Attrs)>,
}

fn link_member<R: Read>(
    ex: &mut Extractor,
    g: &mut Group,
    m: &Member,
    path: Vec<u8>,
    a: Attrs,
    reader: &mut NewcReader<R>,
) -> Result<()> {
    if let Some(data) = &g.data {
        ex.hard_link(&path, data)?;
        return Ok(());
    }
    if m.header.filesize == 0 {
        g.waiting.push((path, a));
        return Ok(());
    }
    ex.write_file(&path, &mut reader.data(), a)?;
    for (name, _) in g.waiting.drain(..) {
        ex.hard_link(&name, &path)?;
    }
    g.data = Some(path);
    Ok(())
}

/// A member name as a path inside the root ("./etc", "/etc" and "etc" are the same); None
/// for the root itself.
fn normalise(name: &[u8]) -> Option<Vec<u8>> {
    let parts: Vec<&[u8]> = name
        .split(|c| *c == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .collect();
    (!parts.is_empty()).then(|| parts.join(&b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::initrd::newc::{Header, NewcWriter};
    use crate::pkg::extract::ExtractOptions;

    fn member(
        w: &mut NewcWriter<Vec<u8>>,
        name: &[u8],
        mode: u32,
        ino: u32,
        nlink: u32,
        data: &[u8],
    ) {
        let h = Header {
            ino,
            mode,
            nlink,
            mtime: 1_700_000_000,
            filesize: data.len() as u32,
            ..Default::default()
        };
        w.header(&h, name).unwrap();
        w.data(data).unwrap();
        w.end_data().unwrap();
    }

    #[test]
    fn every_kind_of_member_is_placed() {
        let mut w = NewcWriter::new(Vec::new());
        member(&mut w, b".", 0o40755, 1, 2, b"");
        member(&mut w, b"./etc", 0o40755, 2, 2, b"");
        member(&mut w, b"etc/a", 0o100644, 3, 1, b"hello");
        member(&mut w, b"etc/link", 0o120777, 4, 1, b"a");
        // GNU order: data on the last of the linked names.
        member(&mut w, b"etc/h1", 0o100600, 5, 2, b"");
        member(&mut w, b"etc/h2", 0o100600, 5, 2, b"shared");
        member(&mut w, b"etc/e1", 0o100600, 6, 2, b"");
        member(&mut w, b"etc/e2", 0o100600, 6, 2, b"");
        member(&mut w, b"dev/console", 0o20600, 7, 1, b"");
        let bytes = w.finish().unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut ex = Extractor::new(
            d.path(),
            ExtractOptions {
                privileged: false,
                rewrite: None,
                filter: Default::default(),
            },
        )
        .unwrap();
        let r = unpack(&bytes[..], &mut ex).unwrap();
        let mtree = ex.finish().unwrap();
        assert_eq!(r.compression, Compression::None);
        assert_eq!(r.members, 8);
        assert_eq!(std::fs::read(d.path().join("etc/a")).unwrap(), b"hello");
        assert_eq!(
            std::fs::read_link(d.path().join("etc/link")).unwrap(),
            Path::new("a")
        );
        use std::os::unix::fs::MetadataExt;
        let h1 = std::fs::metadata(d.path().join("etc/h1")).unwrap();
        let h2 = std::fs::metadata(d.path().join("etc/h2")).unwrap();
        assert_eq!(h1.ino(), h2.ino());
        assert_eq!(std::fs::read(d.path().join("etc/h1")).unwrap(), b"shared");
        let e1 = std::fs::metadata(d.path().join("etc/e1")).unwrap();
        assert_eq!((e1.len(), e1.nlink()), (0, 2));
        // Unprivileged: the device exists only in the metadata.
        let console = mtree.get(b"dev/console").unwrap();
        assert_eq!(console.kind, Some(MType::Char));
        assert_eq!(console.device, Some((0, 0)));
    }

    #[test]
    fn names_cannot_leave_the_root() {
        let mut w = NewcWriter::new(Vec::new());
        member(&mut w, b"../escape", 0o100644, 1, 1, b"x");
        let bytes = w.finish().unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut ex = Extractor::new(d.path(), ExtractOptions::default()).unwrap();
        let e = format!("{:#}", unpack(&bytes[..], &mut ex).unwrap_err());
        assert!(e.contains("outside the rootfs"), "{e}");
        assert_eq!(normalise(b"./a//b/"), Some(b"a/b".to_vec()));
        assert_eq!(normalise(b"."), None);
    }
}
