//! The stage cache: finished rootfs trees and packed artifacts, filed under the digest of
//! everything that went into them, so a build reuses what it made before and redoes only
//! what changed. A rootfs is keyed by its lock entry and its provisioning inputs (agent,
//! kernel modules, init mode, timestamps…), an artifact by its rootfs's key and its packer
//! options — so a new agent re-provisions from cached packages and re-packs, and a new
//! image size re-packs only.
//!
//! Layout: `<cache>/stages/<kind>/<key>/` with a `stage.json` describing the entry. An
//! entry is built in `<kind>/.tmp-PID-N-KEY/` and renamed into place when complete, so it
//! appears whole or not at all: a build killed with -9 leaves only a temporary, removed by
//! the next run once its process is gone; two builds making the same entry both succeed and
//! one copy is kept. Builds hold a shared lock on `stages/.lock`; `osbuilder cache gc` takes
//! it exclusively, so it never removes an entry a running build uses.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::pkg::cache::Cache;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The two kinds of entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageKind {
    Rootfs,
    Artifact,
}

impl StageKind {
    pub fn dir(self) -> &'static str {
        match self {
            StageKind::Rootfs => "rootfs",
            StageKind::Artifact => "artifact",
        }
    }
}

/// A file of an entry, with its digest (checked when the entry is used).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    pub sha256: String,
    pub size: u64,
}

/// `stage.json`: what an entry is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub kind: StageKind,
    pub key: String,
    /// The job that made it (`initrd/x86_64`, `x86_64/kata-debian-trixie.initrd`).
    pub job: String,
    /// The build timestamp of a rootfs (what its artifacts are stamped with when
    /// SOURCE_DATE_EPOCH is unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<i64>,
    /// Files of an artifact entry, by name, with their digests.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub files: BTreeMap<String, FileInfo>,
    /// Free-form facts for `cache ls` and the summary (kernel parameters…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub facts: BTreeMap<String, String>,
}

/// An entry in place.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub meta: Meta,
}

impl Entry {
    /// Check every recorded file against its digest (a corrupt entry must not be used).
    pub fn verify(&self) -> Result<()> {
        for (name, info) in &self.meta.files {
            let p = self.path.join(name);
            let got = crate::pkg::sha256_file(&p)?;
            if got != info.sha256 {
                bail!(
                    "stage cache entry {}: {name} has sha256 {got}, recorded {}",
                    self.path.display(),
                    info.sha256
                );
            }
        }
        Ok(())
    }
}

/// The stage cache of one cache folder, held open (shared) for a build.
pub struct Stages {
    dir: PathBuf,
    _lock: File,
}

/// An entry being built (removed if dropped unpublished).
pub struct Pending {
    tmp: PathBuf,
    dest: PathBuf,
    done: bool,
}

fn flock(f: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock(2) on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Stages {
    fn open_with(cache: &Cache, op: libc::c_int) -> Result<Stages> {
        let dir = cache.dir().join("stages");
        for k in [StageKind::Rootfs, StageKind::Artifact] {
            std::fs::create_dir_all(dir.join(k.dir()))
                .with_context(|| format!("creating {}", dir.join(k.dir()).display()))?;
        }
        let lock_path = dir.join(".lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        flock(&lock, op).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                crate::error::refused(format!(
                    "a build is using the stage cache {} right now; run this again when it is done",
                    dir.display()
                ))
            } else {
                anyhow::Error::new(e).context(format!("locking {}", lock_path.display()))
            }
        })?;
        let s = Stages { dir, _lock: lock };
        s.sweep();
        Ok(s)
    }

    /// Open for a build (shared with other builds).
    pub fn open(cache: &Cache) -> Result<Stages> {
        Stages::open_with(cache, libc::LOCK_SH)
    }

    /// Open for garbage collection: refused while a build holds the cache.
    pub fn open_exclusive(cache: &Cache) -> Result<Stages> {
        Stages::open_with(cache, libc::LOCK_EX | libc::LOCK_NB)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Temporaries of processes that are gone: builds that were killed.
    fn sweep(&self) {
        for k in [StageKind::Rootfs, StageKind::Artifact] {
            let Ok(rd) = std::fs::read_dir(self.dir.join(k.dir())) else {
                continue;
            };
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix(".tmp-")
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !crate::output::sweep::alive(p)) {
                    let _ = crate::output::dir::remove_tree(&e.path());
                }
            }
        }
    }

    fn entry_path(&self, kind: StageKind, key: &str) -> PathBuf {
        self.dir.join(kind.dir()).join(key)
    }

    /// The entry for `key`, if there is a complete one; its last use is recorded.
    pub fn get(&self, kind: StageKind, key: &str) -> Option<Entry> {
        let path = self.entry_path(kind, key);
        let meta_path = path.join("stage.json");
        let meta: Meta = serde_json::from_slice(&std::fs::read(&meta_path).ok()?).ok()?;
        if meta.kind != kind || meta.key != key {
            return None;
        }
        // The meta file's mtime is the entry's last use (for `cache gc`).
        if let Ok(f) = File::options().write(true).open(&meta_path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(Entry { path, meta })
    }

    /// Remove an entry found to be corrupt.
    pub fn discard(&self, e: &Entry) {
        let aside = e.path.with_file_name(format!(
            ".tmp-{}-{}-discarded",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if std::fs::rename(&e.path, &aside).is_ok() {
            let _ = crate::output::dir::remove_tree(&aside);
        }
    }

    /// Start building the entry `key`.
    pub fn begin(&self, kind: StageKind, key: &str) -> Result<Pending> {
        let dest = self.entry_path(kind, key);
        let tmp = dest.with_file_name(format!(
            ".tmp-{}-{}-{key}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        crate::output::track(&tmp);
        Ok(Pending {
            tmp,
            dest,
            done: false,
        })
    }

    /// Every complete entry.
    pub fn list(&self) -> Vec<(Entry, SystemTime, u64)> {
        let mut out = Vec::new();
        for k in [StageKind::Rootfs, StageKind::Artifact] {
            let Ok(rd) = std::fs::read_dir(self.dir.join(k.dir())) else {
                continue;
            };
            let mut names: Vec<_> = rd.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                let mp = p.join("stage.json");
                let Some(meta) = std::fs::read(&mp)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Meta>(&b).ok())
                else {
                    continue;
                };
                let used = std::fs::metadata(&mp)
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((
                    Entry {
                        path: p.clone(),
                        meta,
                    },
                    used,
                    disk_usage(&p),
                ));
            }
        }
        out
    }

    /// Remove entries last used before `cutoff` (all with None); returns (count, bytes).
    pub fn gc(&self, cutoff: Option<SystemTime>) -> Result<(usize, u64)> {
        let mut n = 0;
        let mut bytes = 0;
        for (e, used, size) in self.list() {
            if cutoff.is_some_and(|c| used >= c) {
                continue;
            }
            self.discard(&e);
            n += 1;
            bytes += size;
        }
        Ok((n, bytes))
    }
}

/// Bytes allocated under `p` (sparse images count what they use).
pub fn disk_usage(p: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    walkdir::WalkDir::new(p)
        .follow_links(false)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

impl Pending {
    /// The folder to fill.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Write `stage.json` and put the entry in place. If another build published the same
    /// key meanwhile, its entry is kept and ours dropped (they are equivalent).
    pub fn publish(mut self, meta: &Meta) -> Result<Entry> {
        let mp = self.tmp.join("stage.json");
        let f = File::create(&mp).with_context(|| format!("writing {}", mp.display()))?;
        serde_json::to_writer_pretty(&f, meta)?;
        f.sync_all()?;
        crate::output::sync_dir(&self.tmp);
        match std::fs::rename(&self.tmp, &self.dest) {
            Ok(()) => {
                crate::output::untrack(&self.tmp);
                self.done = true;
                if let Some(parent) = self.dest.parent() {
                    crate::output::sync_dir(parent);
                }
            }
            Err(e)
                if self.dest.join("stage.json").is_file()
                    && matches!(e.raw_os_error(), Some(libc::ENOTEMPTY) | Some(libc::EEXIST)) =>
            {
                // Another build won the race; ours is removed on drop.
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "renaming {} to {}",
                    self.tmp.display(),
                    self.dest.display()
                )));
            }
        }
        let meta = serde_json::from_slice(&std::fs::read(self.dest.join("stage.json"))?)?;
        Ok(Entry {
            path: self.dest.clone(),
            meta,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            let _ = crate::output::dir::remove_tree(&self.tmp);
            crate::output::untrack(&self.tmp);
        }
    }
}

/// The key of a stage: SHA-256 over canonical JSON of its inputs (serde_json sorts object
/// keys), with this osbuilder's identity mixed in so a new osbuilder never reuses an
/// older one's entries.
pub fn key(inputs: &serde_json::Value) -> String {
    let v = serde_json::json!({ "osbuilder": tool_identity(), "inputs": inputs });
    crate::pkg::sha256_hex(v.to_string().as_bytes())
}

/// The SHA-256 of the running osbuilder binary (its code decides what a stage holds),
/// computed once per process.
pub fn tool_identity() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| crate::pkg::sha256_file(&p).ok())
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(key: &str) -> Meta {
        Meta {
            kind: StageKind::Artifact,
            key: key.into(),
            job: "j".into(),
            mtime: None,
            files: BTreeMap::new(),
            facts: BTreeMap::new(),
        }
    }

    #[test]
    fn entries_appear_whole_and_races_keep_one() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path()).unwrap();
        let s = Stages::open(&cache).unwrap();
        assert!(s.get(StageKind::Artifact, "k").is_none());
        let p = s.begin(StageKind::Artifact, "k").unwrap();
        std::fs::write(p.path().join("f"), "1").unwrap();
        // Not visible before publish.
        assert!(s.get(StageKind::Artifact, "k").is_none());
        let q = s.begin(StageKind::Artifact, "k").unwrap();
        std::fs::write(q.path().join("f"), "1").unwrap();
        p.publish(&meta("k")).unwrap();
        // The second publisher finds the first's entry and keeps it.
        let e = q.publish(&meta("k")).unwrap();
        assert_eq!(std::fs::read_to_string(e.path.join("f")).unwrap(), "1");
        assert!(s.get(StageKind::Artifact, "k").is_some());
        let names: Vec<_> = std::fs::read_dir(s.dir().join("artifact"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        // A dropped pending entry leaves nothing.
        drop(s.begin(StageKind::Rootfs, "r").unwrap());
        assert_eq!(
            std::fs::read_dir(s.dir().join("rootfs")).unwrap().count(),
            0
        );
    }

    #[test]
    fn killed_builds_leave_temporaries_that_are_swept_and_gc_waits_for_builds() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path()).unwrap();
        let s = Stages::open(&cache).unwrap();
        let dead = s.dir().join("rootfs/.tmp-999999999-0-abc");
        std::fs::create_dir_all(dead.join("rootfs")).unwrap();
        // A second build's open sweeps it; the gc is refused while a build holds the lock.
        let e = Stages::open_exclusive(&cache).err().unwrap();
        assert!(crate::error::is_refused(&e), "{e:#}");
        let _other = Stages::open(&cache).unwrap();
        assert!(!dead.exists());
        drop(_other);
        let p = s.begin(StageKind::Artifact, "k").unwrap();
        p.publish(&meta("k")).unwrap();
        drop(s);
        let g = Stages::open_exclusive(&cache).unwrap();
        assert_eq!(
            g.gc(Some(
                SystemTime::now() - std::time::Duration::from_secs(3600)
            ))
            .unwrap()
            .0,
            0
        );
        assert_eq!(g.gc(None).unwrap().0, 1);
        assert!(g.list().is_empty());
    }

    #[test]
    fn corrupt_files_fail_verification() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::at(d.path()).unwrap();
        let s = Stages::open(&cache).unwrap();
        let p = s.begin(StageKind::Artifact, "k").unwrap();
        std::fs::write(p.path().join("f"), "good").unwrap();
        let mut m = meta("k");
        m.files.insert(
            "f".into(),
            FileInfo {
                sha256: crate::pkg::sha256_hex(b"good"),
                size: 4,
            },
        );
        let e = p.publish(&m).unwrap();
        e.verify().unwrap();
        std::fs::write(e.path.join("f"), "evil").unwrap();
        assert!(e.verify().is_err());
        s.discard(&e);
        assert!(s.get(StageKind::Artifact, "k").is_none());
    }
}
