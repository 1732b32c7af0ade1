//! Content-addressed download cache, shared by every package format and every build.
//!
//! Files live at `<dir>/<algorithm>/<hex[..2]>/<hex>`, named by the digest the repository
//! index promised. They are verified when written (before the rename that publishes them)
//! and again when read: a corrupt or truncated entry is deleted and reported as a miss, so
//! the caller fetches it again. Writers use a unique temporary name in the same folder and
//! rename, so concurrent builds and a build killed with -9 never leave a half file under a
//! final name (stale temporaries are swept when the cache is opened).

use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Context, Result};

use super::Digest;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// The cache folder: `explicit` (--cache-dir), else `$OSBUILDER_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/osbuilder`, else `~/.cache/osbuilder`. Created if missing.
    pub fn open(explicit: Option<&Path>) -> Result<Cache> {
        let dir = match explicit {
            Some(p) => p.to_path_buf(),
            None => default_dir()?,
        };
        Cache::at(&dir)
    }

    /// A cache in exactly this folder.
    pub fn at(dir: &Path) -> Result<Cache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache folder {}", dir.display()))?;
        let cache = Cache {
            dir: dir.to_path_buf(),
        };
        cache.sweep_stale_temporaries();
        Ok(cache)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `digest` lives (whether or not it exists).
    pub fn path_for(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex().to_ascii_lowercase();
        let prefix = hex.get(..2).unwrap_or("00");
        self.dir.join(digest.algorithm()).join(prefix).join(&hex)
    }

    /// The verified entry for `digest`, or None. A corrupt entry is removed.
    pub fn lookup(&self, digest: &Digest) -> Result<Option<PathBuf>> {
        let path = self.path_for(digest);
        let mut f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading cache {}", path.display())),
        };
        if digest.verify("cache entry", &mut f).is_err() {
            eprintln!(
                "osbuilder: cache entry {} is corrupt; discarding it and fetching again",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Ok(Some(path))
    }

    /// Add an entry: `write` fills a temporary file, which is verified against `digest`
    /// and then renamed into place. On a digest mismatch nothing is published.
    pub fn insert_with(
        &self,
        digest: &Digest,
        write: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<PathBuf> {
        let dest = self.path_for(digest);
        let dir = dest.parent().expect("cache paths have a parent");
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating cache folder {}", dir.display()))?;
        let tmp = dir.join(format!(
            ".tmp-{}-{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed),
            dest.file_name().unwrap().to_string_lossy()
        ));
        let result = (|| {
            let mut f = File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            write(&mut f)?;
            f.seek(SeekFrom::Start(0))?;
            digest.verify("download", &mut f)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dest)
                .with_context(|| format!("renaming {} into the cache", tmp.display()))?;
            Ok(dest.clone())
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Add an entry from bytes already in memory (verified like any other).
    pub fn insert_bytes(&self, digest: &Digest, data: &[u8]) -> Result<PathBuf> {
        self.insert_with(digest, |f| {
            use std::io::Write;
            f.write_all(data)?;
            Ok(())
        })
    }

    /// Temporaries (`.tmp-PID-…`) of processes that are gone belong to builds that were
    /// killed; remove them. Those of live processes (a concurrent build) stay.
    fn sweep_stale_temporaries(&self) {
        let Ok(algos) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for algo in algos.flatten() {
            let Ok(prefixes) = std::fs::read_dir(algo.path()) else {
                continue;
            };
            for prefix in prefixes.flatten() {
                let Ok(files) = std::fs::read_dir(prefix.path()) else {
                    continue;
                };
                for f in files.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    let pid = name
                        .strip_prefix(".tmp-")
                        .and_then(|r| r.split('-').next())
                        .and_then(|p| p.parse::<u32>().ok());
                    let stale = pid.is_some_and(|p| !crate::output::sweep::alive(p));
                    if stale {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
    }
}

fn default_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("OSBUILDER_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("osbuilder"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache/osbuilder")),
        None => anyhow::bail!(
            "no cache folder: set --cache-dir, $OSBUILDER_CACHE_DIR, $XDG_CACHE_HOME or $HOME"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::sha256_hex;

    #[test]
    fn entries_are_verified_on_write_and_read() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path()).unwrap();
        let good = Digest::Sha256(sha256_hex(b"hello"));
        assert!(cache.lookup(&good).unwrap().is_none());
        let p = cache.insert_bytes(&good, b"hello").unwrap();
        assert_eq!(cache.lookup(&good).unwrap(), Some(p.clone()));

        // A wrong payload is never published.
        let other = Digest::Sha256(sha256_hex(b"other"));
        assert!(cache.insert_bytes(&other, b"tampered").is_err());
        assert!(!cache.path_for(&other).exists());

        // A corrupted entry is discarded on read.
        std::fs::write(&p, b"hellO").unwrap();
        assert!(cache.lookup(&good).unwrap().is_none());
        assert!(!p.exists());
        // No temporaries are left behind.
        let leftovers: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .flatten()
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn concurrent_writers_of_one_entry_agree() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path()).unwrap();
        let data = vec![7u8; 1 << 20];
        let dg = Digest::Sha256(sha256_hex(&data));
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| cache.insert_bytes(&dg, &data).unwrap());
            }
        });
        assert!(cache.lookup(&dg).unwrap().is_some());
    }

    #[test]
    fn temporaries_of_dead_processes_are_swept_on_open() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path()).unwrap();
        let p = cache
            .insert_bytes(&Digest::Sha256(sha256_hex(b"x")), b"x")
            .unwrap();
        let dir = p.parent().unwrap();
        let dead = dir.join(".tmp-999999999-0-abc");
        let live = dir.join(format!(".tmp-{}-0-abc", std::process::id()));
        std::fs::write(&dead, b"partial").unwrap();
        std::fs::write(&live, b"partial").unwrap();
        Cache::at(d.path()).unwrap();
        assert!(!dead.exists(), "a killed build's temporary stays");
        assert!(live.exists(), "a live build's temporary was removed");
    }
}
