//! Kata's release tarballs: `kata-static-rootfs-image[-<variant>].tar.zst` and
//! `kata-static-rootfs-initrd[-<variant>].tar.zst`, each holding the artifact under
//! `opt/kata/share/kata-containers/` with its `kata-containers[-initrd][-<variant>].img`
//! symlink (and the `root_hash_<variant>.txt` of a measured image), as kata-deploy installs
//! them. Written deterministically: fixed order, owner root, fixed modes, every time the
//! build timestamp, and zstd in its multi-threaded mode, whose output does not depend on the
//! number of threads.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

use super::plan::ArtifactJob;

/// Where the artifacts live in Kata's tree.
pub const SHARE: &str = "opt/kata/share/kata-containers";

/// The zstd level of the tarballs (`tar --zstd`'s default, as Kata's).
pub const LEVEL: i32 = 3;

fn header(kind: tar::EntryType, mode: u32, size: u64, mtime: i64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    let _ = h.set_username("root");
    let _ = h.set_groupname("root");
    h.set_mtime(mtime.max(0) as u64);
    h.set_size(size);
    h
}

/// Counts bytes written and reports every 8 MiB.
struct Counting<'a, W: Write> {
    inner: W,
    n: u64,
    reported: u64,
    on: &'a dyn Fn(u64),
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.n += n as u64;
        if self.n - self.reported >= 8 << 20 {
            self.reported = self.n;
            (self.on)(self.n);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write `dir/<a.tarball>` from the artifact (and root hash file) already in `dir`.
/// `on_progress` hears the uncompressed bytes written so far.
pub fn write(a: &ArtifactJob, dir: &Path, mtime: i64, on_progress: &dyn Fn(u64)) -> Result<()> {
    let out = dir.join(&a.tarball);
    let f = std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut z = zstd::stream::write::Encoder::new(std::io::BufWriter::new(f), LEVEL)?;
    // Always the multi-threaded mode (even with one worker): its output is the same for any
    // number of workers, so tarballs match across machines.
    z.multithread(crate::compress::threads().max(1) as u32)?;
    z.include_checksum(true)?;
    let counting = Counting {
        inner: z,
        n: 0,
        reported: 0,
        on: on_progress,
    };
    let mut t = tar::Builder::new(counting);
    let mut dirs = String::new();
    for part in SHARE.split('/') {
        dirs.push_str(part);
        dirs.push('/');
        let mut h = header(tar::EntryType::Directory, 0o755, 0, mtime);
        t.append_data(&mut h, &dirs, std::io::empty())?;
    }
    let mut members: Vec<(String, Option<&str>)> = vec![
        (a.file_name.clone(), None),
        (a.link_name.clone(), Some(a.file_name.as_str())),
    ];
    if let Some(r) = &a.root_hash {
        members.push((r.clone(), None));
    }
    members.sort();
    for (name, link) in members {
        let path = format!("{SHARE}/{name}");
        match link {
            Some(target) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, mtime);
                t.append_link(&mut h, &path, target)?;
            }
            None => {
                let src = dir.join(&name);
                let file = std::fs::File::open(&src)
                    .with_context(|| format!("opening {}", src.display()))?;
                let len = file.metadata()?.len();
                let mut h = header(tar::EntryType::Regular, 0o644, len, mtime);
                t.append_data(&mut h, &path, file)?;
            }
        }
    }
    let counting = t.into_inner()?;
    let inner = counting.inner.finish()?;
    let f = inner.into_inner().map_err(|e| e.into_error())?;
    f.sync_all()?;
    Ok(())
}
