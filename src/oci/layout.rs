//! The OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/<hex>`): written
//! by `osbuilder oci`, read by `osbuilder push`. Written by hand with serde and sha2 rather
//! than through ocidir (it pulls in openssl and cannot put an index into index.json).
//!
//! Blobs from files are reflinked (copy-on-write clone) or hard-linked from the artifact
//! when the filesystem allows, else copied; either way the blob is hashed as stored, so
//! its name is the digest of what is in the layout. Nothing is ever held in memory whole.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result, bail};
use serde::Serialize;

use super::digest::{self, Digest, Hashing};
use super::spec::{self, Descriptor, Index};

pub const LAYOUT_FILE: &str = "oci-layout";
pub const INDEX_FILE: &str = "index.json";
const LAYOUT_CONTENT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// How a file blob got into the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Reflinked,
    HardLinked,
    Copied,
}

/// Whether blobs may share storage with the artifacts they come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Reflink, else hard link, else copy.
    Auto,
    /// Always copy (the layout never shares an inode with an artifact).
    Copy,
}

/// A file's identity: (device, inode, size, mtime).
type FileKey = (u64, u64, u64, i64);

/// Writes blobs into `root/blobs/sha256` and finally `index.json`.
pub struct LayoutWriter {
    root: PathBuf,
    blobs: PathBuf,
    link: LinkMode,
    seq: AtomicU64,
    /// (dev, ino, size, mtime) → digest: the same artifact given twice is hashed once.
    seen: Mutex<HashMap<FileKey, (Digest, u64, Placement)>>,
}

impl LayoutWriter {
    /// Start a layout in the (empty) folder `root`.
    pub fn create(root: &Path, link: LinkMode) -> Result<LayoutWriter> {
        let blobs = root.join("blobs").join("sha256");
        fs_err::create_dir_all(&blobs)?;
        fs_err::write(root.join(LAYOUT_FILE), LAYOUT_CONTENT)?;
        Ok(LayoutWriter {
            root: root.to_path_buf(),
            blobs,
            link,
            seq: AtomicU64::new(0),
            seen: Mutex::new(HashMap::new()),
        })
    }

    fn temp(&self) -> PathBuf {
        self.blobs
            .join(format!(".tmp-{}", self.seq.fetch_add(1, Ordering::Relaxed)))
    }

    /// Put a file in as a blob; returns its digest, size and how it was stored.
    pub fn add_file(&self, src: &Path) -> Result<(Digest, u64, Placement)> {
        // A link shares the file, not a symlink to it (hard_link does not follow symlinks).
        let src = &fs_err::canonicalize(src)?;
        let md = fs_err::metadata(src)?;
        if !md.is_file() {
            bail!("{} is not a regular file", src.display());
        }
        let key = (md.dev(), md.ino(), md.size(), md.mtime());
        if let Some((d, n, how)) = self.seen.lock().unwrap().get(&key).cloned() {
            if self.blobs.join(d.hex()).exists() {
                return Ok((d, n, how));
            }
        }
        let tmp = self.temp();
        let (placement, digest, size) = match self.share(src, &tmp)? {
            Some(p) => {
                let (d, n) = digest::of_reader(fs_err::File::open(&tmp)?)
                    .with_context(|| format!("reading {}", src.display()))?;
                (p, d, n)
            }
            None => {
                let mut input = fs_err::File::open(src)?;
                let mut out = Hashing::new(fs_err::File::create(&tmp)?);
                std::io::copy(&mut input, &mut out)
                    .with_context(|| format!("copying {} into the layout", src.display()))?;
                let (d, n, f) = out.finish();
                f.sync_all()?;
                (Placement::Copied, d, n)
            }
        };
        if size != md.size() {
            let _ = std::fs::remove_file(&tmp);
            bail!("{} changed while it was being added", src.display());
        }
        self.place(&tmp, &digest)?;
        self.seen
            .lock()
            .unwrap()
            .insert(key, (digest.clone(), size, placement));
        Ok((digest, size, placement))
    }

    /// Reflink or hard-link `src` to `dst`, when allowed and possible.
    fn share(&self, src: &Path, dst: &Path) -> Result<Option<Placement>> {
        if self.link == LinkMode::Copy {
            return Ok(None);
        }
        if reflink(src, dst).is_ok() {
            return Ok(Some(Placement::Reflinked));
        }
        let _ = std::fs::remove_file(dst);
        if std::fs::hard_link(src, dst).is_ok() {
            return Ok(Some(Placement::HardLinked));
        }
        Ok(None)
    }

    /// Rename a finished temporary blob to its name (a blob already there is the same bytes).
    fn place(&self, tmp: &Path, digest: &Digest) -> Result<()> {
        let dest = self.blobs.join(digest.hex());
        if dest.exists() {
            fs_err::remove_file(tmp)?;
        } else {
            fs_err::rename(tmp, &dest)?;
        }
        Ok(())
    }

    /// Put bytes in as a blob.
    pub fn add_bytes(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::of(bytes);
        let dest = self.blobs.join(digest.hex());
        if !dest.exists() {
            let tmp = self.temp();
            let mut f = fs_err::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            self.place(&tmp, &digest)?;
        }
        Ok((digest, bytes.len() as u64))
    }

    /// Put a document in as a blob (canonical JSON) and describe it.
    pub fn add_json<T: Serialize>(&self, media_type: &str, doc: &T) -> Result<Descriptor> {
        let (d, n) = self.add_bytes(&spec::to_json(doc))?;
        Ok(Descriptor::new(media_type, d, n))
    }

    /// Write `index.json` (the layout's entry points) last.
    pub fn finish(self, index: &Index) -> Result<()> {
        let mut f = fs_err::File::create(self.root.join(INDEX_FILE))?;
        f.write_all(&spec::to_json(index))?;
        f.sync_all()?;
        Ok(())
    }
}

/// A copy-on-write clone of `src` at `dst` (btrfs, xfs with reflink, bcachefs…).
fn reflink(src: &Path, dst: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let s = File::open(src)?;
    let d = File::create(dst)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are
    // open for the duration of the call and the kernel does not retain them.
    let r = unsafe { libc::ioctl(d.as_raw_fd(), libc::FICLONE, s.as_raw_fd()) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// An existing layout, for reading.
pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn open(root: &Path) -> Result<Layout> {
        let marker = root.join(LAYOUT_FILE);
        let text = std::fs::read(&marker).with_context(|| {
            format!(
                "{} is not an OCI image layout (no {LAYOUT_FILE}); make one with `osbuilder oci`",
                root.display()
            )
        })?;
        let v: serde_json::Value = serde_json::from_slice(&text)
            .with_context(|| format!("{} is not JSON", marker.display()))?;
        match v.get("imageLayoutVersion").and_then(|v| v.as_str()) {
            Some(ver) if ver.starts_with("1.") => {}
            other => bail!(
                "{}: unsupported imageLayoutVersion {other:?} (1.x expected)",
                marker.display()
            ),
        }
        Ok(Layout {
            root: root.to_path_buf(),
        })
    }

    pub fn index(&self) -> Result<Index> {
        let p = self.root.join(INDEX_FILE);
        let bytes = fs_err::read(&p)?;
        serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not an image index", p.display()))
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs").join("sha256").join(d.hex())
    }

    /// A small blob (a manifest, an index, a config), verified against its descriptor.
    pub fn read_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        const MAX: u64 = 16 << 20;
        if desc.size > MAX {
            bail!(
                "{} is {} bytes; documents larger than 16 MiB are refused",
                desc.digest,
                desc.size
            );
        }
        let p = self.blob_path(&desc.digest);
        let mut bytes = Vec::new();
        fs_err::File::open(&p)
            .with_context(|| format!("the layout lacks blob {}", desc.digest))?
            .take(MAX + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 != desc.size || Digest::of(&bytes) != desc.digest {
            bail!(
                "blob {} in {} does not match its descriptor (corrupt layout?)",
                desc.digest,
                self.root.display()
            );
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_named_by_their_digest_and_shared_when_possible() {
        let d = tempfile::tempdir().unwrap();
        let art = d.path().join("artifact");
        std::fs::write(&art, b"rootfs bytes").unwrap();
        let root = d.path().join("layout");
        std::fs::create_dir(&root).unwrap();
        let w = LayoutWriter::create(&root, LinkMode::Auto).unwrap();
        let (dg, n, how) = w.add_file(&art).unwrap();
        assert_eq!((dg.clone(), n), (Digest::of(b"rootfs bytes"), 12));
        // Same filesystem: never a copy.
        assert_ne!(how, Placement::Copied);
        let w2 = LayoutWriter::create(&root, LinkMode::Copy).unwrap();
        let (_, _, how) = w2.add_file(&art).unwrap();
        assert_eq!(how, Placement::Copied);
        let cfg = w
            .add_json("application/x", &serde_json::json!({"b":1,"a":2}))
            .unwrap();
        w.finish(&Index::new(vec![cfg.clone()])).unwrap();
        let l = Layout::open(&root).unwrap();
        assert_eq!(l.index().unwrap().manifests, vec![cfg.clone()]);
        assert_eq!(l.read_blob(&cfg).unwrap(), br#"{"a":2,"b":1}"#);
        std::fs::write(l.blob_path(&cfg.digest), b"{\"a\":3,\"b\":1}").unwrap();
        assert!(format!("{:#}", l.read_blob(&cfg).unwrap_err()).contains("does not match"));
        let names: Vec<_> = std::fs::read_dir(root.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| n.len() == 64), "{names:?}");
    }
}
