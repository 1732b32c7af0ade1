//! `osbuilder initrd`: a rootfs (plus its metadata) → a compressed newc cpio initrd.
//!
//! The archive is written in-process in one pass: entries in the tree's fixed order,
//! inode numbers assigned in that order, file bytes streamed from disk straight into the
//! compressor, the result renamed into place only when complete. [`pack`] is that writer
//! for any [`Tree`] (the dracut method packs dracut's tree with it); [`unpack`] reads an
//! initrd back into a directory.

pub mod newc;
pub mod unpack;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::compress::{self, Compression};
use crate::output::AtomicFile;
use crate::tree::{Entry, Kind, ScanOptions, Tree};
use newc::{Header, NewcWriter};

/// Kata's default output name.
pub const DEFAULT_OUTPUT: &str = "kata-containers-initrd.img";

/// Above this, warn: the guest must hold the compressed and the unpacked archive in RAM
/// (Kata's default guest has 2 GiB).
pub const LARGE_UNPACKED: u64 = 512 << 20;

#[derive(Clone, Debug)]
pub struct Options {
    pub rootfs: PathBuf,
    pub output: PathBuf,
    pub compression: Compression,
    pub level: Option<u32>,
    /// Metadata file; `None` looks for `<rootfs>.mtree` and uses it when present.
    pub metadata: Option<PathBuf>,
    pub all_root: bool,
    pub source_date_epoch: Option<i64>,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub entries: usize,
    pub uncompressed: u64,
    pub compressed: u64,
    pub metadata: Option<PathBuf>,
    pub added_init: Option<Vec<u8>>,
    pub warnings: Vec<String>,
}

pub fn build(opts: &Options) -> Result<Report> {
    build_initrd(opts).map_err(|e| {
        crate::error::explain_disk_full(e, &crate::output::folder_of(&opts.output), "the initrd")
    })
}

fn build_initrd(opts: &Options) -> Result<Report> {
    let level = check_level(opts.compression, opts.level)?;
    let (metadata, metadata_path) =
        crate::tree::load_metadata_for(&opts.rootfs, opts.metadata.as_deref())?;
    let tree = Tree::scan(
        &opts.rootfs,
        &ScanOptions {
            metadata,
            all_root: opts.all_root,
            clamp_mtime: opts.source_date_epoch,
        },
    )?;
    let added_init = check_init(&tree)?;
    let packed = pack(
        &tree,
        added_init.as_deref(),
        &opts.output,
        opts.compression,
        level,
    )?;
    Ok(Report {
        entries: packed.entries,
        uncompressed: packed.uncompressed,
        compressed: packed.compressed,
        metadata: metadata_path,
        added_init,
        warnings: packed.warnings,
    })
}

/// The compression level to use: `level`, or the compressor's default; out of range is an
/// error that names the range.
pub fn check_level(compression: Compression, level: Option<u32>) -> Result<u32> {
    let level = level.unwrap_or(compression.default_level());
    let (lo, hi) = compression.level_range();
    if compression != Compression::None && !(lo..=hi).contains(&level) {
        bail!(
            "--level {level} is out of range for {}: use {lo}..={hi}",
            compression.name()
        );
    }
    Ok(level)
}

/// What [`pack`] wrote.
#[derive(Clone, Debug)]
pub struct Packed {
    pub entries: usize,
    pub uncompressed: u64,
    pub compressed: u64,
    pub warnings: Vec<String>,
}

/// Write `tree` (plus a synthetic `/init` symlink to `added_init`, when given) as a
/// compressed newc archive at `output`, atomically. Every packer of initrds ends here.
pub fn pack(
    tree: &Tree,
    added_init: Option<&[u8]>,
    output: &Path,
    compression: Compression,
    level: u32,
) -> Result<Packed> {
    let mut warnings = Vec::new();
    for e in &tree.entries {
        if let Kind::File { size, .. } = e.kind {
            if size > u32::MAX as u64 {
                bail!(
                    "{} is {} bytes; the newc cpio format cannot hold files of 4 GiB or more. \
                     Remove it from the rootfs or build a disk image (osbuilder image) instead",
                    e.path_display(),
                    size
                );
            }
        }
    }
    let caps = tree.capabilities();
    if !caps.is_empty() {
        warnings.push(crate::tree::caps::lost(
            &caps,
            "the initrd (newc cpio carries no extended attributes)",
        ));
    }
    let content = tree.content_bytes();
    if content > LARGE_UNPACKED {
        warnings.push(format!(
            "the initrd unpacks to {} MiB; the guest needs that much RAM plus the compressed image \
             (Kata's default guest memory is 2048 MiB)",
            content >> 20
        ));
    }

    let out = AtomicFile::create(output)?;
    let counter = CountingWriter::new(io::BufWriter::with_capacity(1 << 20, out.handle()?));
    let compressed_count = counter.count.clone();
    let mut z = compress::writer(compression, level, counter)
        .with_context(|| format!("starting the {} compressor", compression.name()))?;
    let uncompressed = write_archive(tree, added_init, &mut *z)
        .with_context(|| format!("writing {}", output.display()))?;
    z.finish()
        .with_context(|| format!("writing {}", output.display()))?;
    out.commit()?;
    Ok(Packed {
        entries: tree.entries.len() + added_init.is_some() as usize,
        uncompressed,
        compressed: compressed_count.load(std::sync::atomic::Ordering::Relaxed),
        warnings,
    })
}

/// Kata's rule: /sbin/init must exist, executable or a symlink. If the rootfs has no /init,
/// the archive gets one (the rootfs is not touched). It points straight at the final
/// target of /sbin/init, because the kernel's init lookup failed on two-level link chains.
pub fn check_init(tree: &Tree) -> Result<Option<Vec<u8>>> {
    let root = tree.root.display();
    let Some(init) = tree.lookup(b"sbin/init") else {
        bail!(
            "{root} has no /sbin/init; an initrd needs an init. Install an init system, \
             or provision the agent as init (osbuilder rootfs --agent-init)"
        );
    };
    match &init.kind {
        Kind::Symlink { .. } => {}
        Kind::File { .. } if init.perm & 0o111 != 0 => {}
        _ => bail!(
            "{root}/sbin/init is not executable (mode {:o}); chmod +x it",
            init.mode()
        ),
    }
    if tree.get(b"init").is_some() {
        return Ok(None);
    }
    let target = match &init.kind {
        Kind::Symlink { .. } => match tree.resolve(b"sbin/init") {
            Some(t) => [b"/".as_slice(), &t].concat(),
            None => bail!("{root}/sbin/init is a symlink that leads nowhere inside the rootfs"),
        },
        _ => b"/sbin/init".to_vec(),
    };
    Ok(Some(target))
}

fn write_archive(tree: &Tree, added_init: Option<&[u8]>, out: &mut dyn Write) -> Result<u64> {
    let mut w = NewcWriter::new(out);
    // Hard links: GNU convention, data on the last member of each group.
    let mut group_sizes: HashMap<u32, u32> = HashMap::new();
    for e in &tree.entries {
        if let Some(g) = e.link_group {
            *group_sizes.entry(g).or_default() += 1;
        }
    }
    let mut group_seen: HashMap<u32, (u32, u32)> = HashMap::new(); // group → (ino, members written)
    let subdirs = subdir_counts(tree);
    let mut next_ino = 1u32;
    let mut synthetic_init = added_init.map(|t| Entry {
        path: b"init".to_vec(),
        kind: Kind::Symlink { target: t.to_vec() },
        perm: 0o777,
        uid: 0,
        gid: 0,
        mtime: tree.lookup(b"sbin/init").map(|e| e.mtime).unwrap_or(0),
        link_group: None,
        capability: None,
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut dir_inos: Vec<(u32, &Entry)> = Vec::new();
    for e in &tree.entries {
        // Keep the fixed order: /init goes where a real one would have been.
        if let Some(s) =
            synthetic_init.take_if(|s| crate::tree::path_order(&s.path, &e.path).is_lt())
        {
            write_entry(&mut w, &s, next_ino, 1, &mut buf)?;
            next_ino += 1;
        }
        let (ino, nlink, with_data) = match e.link_group {
            Some(g) => {
                let total = group_sizes[&g];
                let seen = group_seen.entry(g).or_insert_with(|| {
                    next_ino += 1;
                    (next_ino - 1, 0)
                });
                seen.1 += 1;
                (seen.0, total, seen.1 == total)
            }
            None => {
                next_ino += 1;
                if e.kind == Kind::Dir {
                    dir_inos.push((next_ino - 1, e));
                }
                let nlink = if e.kind == Kind::Dir {
                    2 + subdirs.get(e.path.as_slice()).copied().unwrap_or(0)
                } else {
                    1
                };
                (next_ino - 1, nlink, true)
            }
        };
        if with_data {
            write_entry(&mut w, e, ino, nlink, &mut buf)?;
        } else {
            write_header(&mut w, e, ino, nlink, 0)?;
        }
    }
    if let Some(s) = synthetic_init {
        write_entry(&mut w, &s, next_ino, 1, &mut buf)?;
    }
    // Repeat every directory header after the content, deepest first. Extractors that set
    // times as they go (GNU cpio -m) would otherwise leave each directory with the time its
    // last child was created; the repeat restores it. The kernel's unpacker already defers
    // directory times and treats the repeat as a no-op (mkdir EEXIST, same owner, mode, time).
    for (ino, e) in dir_inos.iter().rev() {
        let nlink = 2 + subdirs.get(e.path.as_slice()).copied().unwrap_or(0);
        write_header(&mut w, e, *ino, nlink, 0)?;
    }
    let total = w.position();
    w.finish()?;
    Ok(total)
}

fn subdir_counts(tree: &Tree) -> HashMap<&[u8], u32> {
    let mut m: HashMap<&[u8], u32> = HashMap::new();
    for e in &tree.entries {
        if e.kind == Kind::Dir && !e.path.is_empty() {
            let parent = match e.path.iter().rposition(|c| *c == b'/') {
                Some(i) => &e.path[..i],
                None => &b""[..],
            };
            *m.entry(parent).or_default() += 1;
        }
    }
    m
}

fn archive_name(e: &Entry) -> Vec<u8> {
    if e.path.is_empty() {
        b".".to_vec()
    } else {
        e.path.clone()
    }
}

fn write_header<W: Write>(
    w: &mut NewcWriter<W>,
    e: &Entry,
    ino: u32,
    nlink: u32,
    size: u32,
) -> Result<()> {
    let (rdev_major, rdev_minor) = match e.kind {
        Kind::CharDev { major, minor } | Kind::BlockDev { major, minor } => (major, minor),
        _ => (0, 0),
    };
    let h = Header {
        ino,
        mode: e.mode(),
        uid: e.uid,
        gid: e.gid,
        nlink,
        mtime: e.mtime.clamp(0, u32::MAX as i64) as u32,
        filesize: size,
        rdev_major,
        rdev_minor,
    };
    w.header(&h, &archive_name(e))?;
    Ok(())
}

fn write_entry<W: Write>(
    w: &mut NewcWriter<W>,
    e: &Entry,
    ino: u32,
    nlink: u32,
    buf: &mut [u8],
) -> Result<()> {
    match &e.kind {
        Kind::File { source, size } => {
            let mut f =
                File::open(source).with_context(|| format!("reading {}", source.display()))?;
            write_header(w, e, ino, nlink, *size as u32)?;
            let mut left = *size;
            while left > 0 {
                let want = (buf.len() as u64).min(left) as usize;
                let n = f
                    .read(&mut buf[..want])
                    .with_context(|| format!("reading {}", source.display()))?;
                if n == 0 {
                    bail!(
                        "{} shrank while it was being archived; is something writing to the rootfs?",
                        source.display()
                    );
                }
                w.data(&buf[..n])?;
                left -= n as u64;
            }
            w.end_data()?;
        }
        Kind::Symlink { target } => {
            write_header(w, e, ino, nlink, target.len() as u32)?;
            w.data(target)?;
            w.end_data()?;
        }
        _ => write_header(w, e, ino, nlink, 0)?,
    }
    Ok(())
}

/// Counts the compressed bytes on their way to the file.
struct CountingWriter<W> {
    inner: W,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        CountingWriter {
            inner,
            count: Default::default(),
        }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(b)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
