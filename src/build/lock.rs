//! The lock file, `osbuilder.lock`: for every guest and arch, the repository indexes it was
//! resolved from (by SHA-256) and every package installed, with version and SHA-256. One
//! format for every package format (deb, apk, rpm): only what each backend's resolver
//! already gives ([`crate::pkg::PackageRef`]) and the fetched file's digest are recorded.
//!
//! Written by `osbuilder build`, `release` and `lock`, read back by them: an entry whose
//! request still matches is used as is (a build takes exactly those packages), `--locked`
//! insists on it, `osbuilder lock --update` replaces it. TOML, one package per line, sorted,
//! so that a change reviews as a small diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::plan::{LockKey, RootfsJob};
use crate::arch::Arch;
use crate::distro::{InitMode, PackageFormat};
use crate::error::refused;
use crate::pkg::fetch::IndexDigest;

/// The lock file's format version.
pub const VERSION: u32 = 1;

/// One installed package as locked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    /// The package's own architecture name (amd64, all, aarch64, noarch…).
    pub arch: String,
    /// SHA-256 of the package file.
    pub sha256: String,
    pub size: u64,
    pub url: String,
}

/// What one guest (or variant) on one arch was built from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The guest's name in the build file.
    #[serde(rename = "name")]
    pub guest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub arch: Arch,
    pub distro: String,
    pub release: String,
    pub format: PackageFormat,
    pub init: InitMode,
    /// The package names that were asked for; a build whose request differs re-resolves.
    pub requested: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub run_scripts: bool,
    /// The repository's top-level indexes (InRelease, APKINDEX, repomd…).
    pub repository: Vec<IndexDigest>,
    pub packages: Vec<LockedPackage>,
}

impl Entry {
    pub fn key(&self) -> LockKey {
        LockKey {
            guest: self.guest.clone(),
            variant: self.variant.clone(),
            arch: self.arch,
        }
    }

    /// Why this entry does not describe `job`'s request (None: it does).
    pub fn stale_for(&self, job: &RootfsJob) -> Option<String> {
        if self.distro != job.distro || self.release != job.version {
            return Some(format!(
                "it locks {} {}, the build file now asks for {} {}",
                self.distro, self.release, job.distro, job.version
            ));
        }
        if self.init != job.init {
            return Some(format!(
                "it locks init mode {}, the build file now asks for {}",
                self.init, job.init
            ));
        }
        if self.requested != job.requested {
            return Some(format!(
                "the requested packages changed (locked: {}; now: {})",
                self.requested.join(" "),
                job.requested.join(" ")
            ));
        }
        if self.run_scripts != job.options.run_scripts {
            return Some("run_scripts changed".into());
        }
        None
    }

    /// `name version arch` of each package, for messages.
    pub fn describe(p: &LockedPackage) -> String {
        format!("{} {} ({})", p.name, p.version, p.arch)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    version: u32,
    #[serde(default)]
    guest: Vec<Entry>,
}

/// A lock file in memory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lock {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

impl Lock {
    /// Read `path`; a missing file is an empty lock.
    pub fn load(path: &Path) -> Result<Lock> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Lock {
                    path: path.to_path_buf(),
                    entries: Vec::new(),
                });
            }
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("reading {}", path.display())));
            }
        };
        let raw: RawLock = toml::from_str(&text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            refused(format!(
                "{}{}: {} (fix it, or delete it and run `osbuilder lock`)",
                path.display(),
                line.map(|l| format!(":{l}")).unwrap_or_default(),
                e.message().trim()
            ))
        })?;
        if raw.version != VERSION {
            return Err(refused(format!(
                "{}: lock file version {} is not {VERSION}, the one this osbuilder writes; \
                 run `osbuilder lock --update` to rewrite it",
                path.display(),
                raw.version
            )));
        }
        Ok(Lock {
            path: path.to_path_buf(),
            entries: raw.guest,
        })
    }

    pub fn get(&self, key: &LockKey) -> Option<&Entry> {
        self.entries.iter().find(|e| &e.key() == key)
    }

    /// Add or replace the entry for its key.
    pub fn set(&mut self, entry: Entry) {
        let key = entry.key();
        self.entries.retain(|e| e.key() != key);
        self.entries.push(entry);
    }

    /// Write the file atomically.
    pub fn save(&self) -> Result<()> {
        let f = crate::output::AtomicFile::create(&self.path)
            .with_context(|| format!("writing lock file {}", self.path.display()))?;
        std::io::Write::write_all(&mut f.handle()?, self.to_text().as_bytes())?;
        f.commit()
    }

    /// The file's text: entries sorted by guest, variant, arch; packages by name and arch.
    pub fn to_text(&self) -> String {
        fn s(v: &str) -> String {
            toml::Value::String(v.to_string()).to_string()
        }
        fn list(v: &[String]) -> String {
            format!(
                "[{}]",
                v.iter().map(|x| s(x)).collect::<Vec<_>>().join(", ")
            )
        }
        let mut entries = self.entries.clone();
        entries.sort_by_key(|e| e.key());
        let mut t = String::from(
            "# osbuilder.lock: the packages each guest is built from, per arch. Written by\n\
             # `osbuilder build`, `release` and `lock`; check it in. `--locked` builds exactly\n\
             # these, `osbuilder lock --update` re-resolves. Format: docs/release.md.\n",
        );
        let _ = writeln!(t, "version = {VERSION}");
        for e in entries {
            let _ = writeln!(t, "\n[[guest]]");
            let _ = writeln!(t, "name = {}", s(&e.guest));
            if let Some(v) = &e.variant {
                let _ = writeln!(t, "variant = {}", s(v));
            }
            let _ = writeln!(t, "arch = {}", s(e.arch.name()));
            let _ = writeln!(t, "distro = {}", s(&e.distro));
            let _ = writeln!(t, "release = {}", s(&e.release));
            let _ = writeln!(t, "format = {}", s(e.format.name()));
            let _ = writeln!(t, "init = {}", s(e.init.name()));
            let _ = writeln!(t, "requested = {}", list(&e.requested));
            if e.run_scripts {
                let _ = writeln!(t, "run_scripts = true");
            }
            let _ = writeln!(t, "repository = [");
            for r in &e.repository {
                let _ = writeln!(t, "  {{ url = {}, sha256 = {} }},", s(&r.url), s(&r.sha256));
            }
            let _ = writeln!(t, "]");
            let _ = writeln!(t, "packages = [");
            let mut pkgs = e.packages.clone();
            pkgs.sort();
            for p in pkgs {
                let _ = writeln!(
                    t,
                    "  {{ name = {}, version = {}, arch = {}, sha256 = {}, size = {}, url = {} }},",
                    s(&p.name),
                    s(&p.version),
                    s(&p.arch),
                    s(&p.sha256),
                    p.size,
                    s(&p.url)
                );
            }
            let _ = writeln!(t, "]");
        }
        t
    }
}

/// The packages of `plan` (fetched as `files`) as lock entries: what the index promised,
/// with the SHA-256 of the file actually fetched.
pub fn locked_packages(
    plan: &crate::pkg::backend::Plan,
    files: &[PathBuf],
) -> Result<Vec<LockedPackage>> {
    let refs = plan.refs();
    let installed = crate::pkg::record::installed_packages(&refs, files)?;
    let mut v: Vec<LockedPackage> = installed
        .into_iter()
        .map(|p| LockedPackage {
            name: p.name,
            version: p.version,
            arch: p.arch,
            sha256: p.sha256,
            size: p.size,
            url: p.url,
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Compare what a resolution chose (before anything is fetched) with what the lock pins:
/// names, versions and arches only (see [`check_same`] for the digests).
pub fn check_versions(
    entry: &Entry,
    resolved: &[crate::pkg::PackageRef],
    job: &str,
    lock: &Path,
) -> Result<()> {
    let as_locked: Vec<LockedPackage> = resolved
        .iter()
        .map(|p| {
            let pinned = entry
                .packages
                .iter()
                .find(|l| l.name == p.name && l.arch == p.arch && l.version == p.version);
            LockedPackage {
                name: p.name.clone(),
                version: p.version.clone(),
                arch: p.arch.clone(),
                // The digest is compared once the file is fetched.
                sha256: pinned.map(|l| l.sha256.clone()).unwrap_or_default(),
                size: p.size,
                url: p.url.clone(),
            }
        })
        .collect();
    check_same(entry, &as_locked, job, lock)
}

/// Compare what a resolution chose with what the lock pins: Ok when they are the same set;
/// otherwise an error naming each package that differs and what to do.
pub fn check_same(entry: &Entry, resolved: &[LockedPackage], job: &str, lock: &Path) -> Result<()> {
    let key = |p: &LockedPackage| (p.name.clone(), p.arch.clone());
    let locked: std::collections::BTreeMap<_, _> =
        entry.packages.iter().map(|p| (key(p), p)).collect();
    let now: std::collections::BTreeMap<_, _> = resolved.iter().map(|p| (key(p), p)).collect();
    let mut diffs = Vec::new();
    for (k, l) in &locked {
        match now.get(k) {
            None => diffs.push(format!(
                "{} is pinned but the repository's index no longer leads to it",
                Entry::describe(l)
            )),
            Some(n) if n.version != l.version => diffs.push(format!(
                "{} is pinned; the repository now offers {} and no longer {}",
                Entry::describe(l),
                n.version,
                l.version
            )),
            Some(n) if n.sha256 != l.sha256 => diffs.push(format!(
                "{} is pinned with sha256 {}, the repository's file has {}",
                Entry::describe(l),
                l.sha256,
                n.sha256
            )),
            Some(_) => {}
        }
    }
    for (k, n) in &now {
        if !locked.contains_key(k) {
            diffs.push(format!("{} is not in the lock", Entry::describe(n)));
        }
    }
    if diffs.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{job}: the locked package set cannot be had from the repository (and the index it was \
         locked from is not in the cache): {}. Run `osbuilder lock --update` to take what the \
         repository has now (then review {}), or restore the mirror state it was locked from",
        diffs.join("; "),
        lock.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            guest: "initrd".into(),
            variant: None,
            arch: Arch::X86_64,
            distro: "debian".into(),
            release: "trixie".into(),
            format: PackageFormat::Deb,
            init: InitMode::AgentInit,
            requested: vec!["app".into()],
            run_scripts: false,
            repository: vec![IndexDigest {
                url: "http://127.0.0.1/dists/trixie/InRelease".into(),
                sha256: "ab".repeat(32),
            }],
            packages: vec![LockedPackage {
                name: "app".into(),
                version: "1.0 \"quoted\"".into(),
                arch: "amd64".into(),
                sha256: "cd".repeat(32),
                size: 42,
                url: "http://127.0.0.1/pool/app.deb".into(),
            }],
        }
    }

    #[test]
    fn the_text_reads_back_to_the_same_lock() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("osbuilder.lock");
        let mut lock = Lock {
            path: path.clone(),
            entries: vec![entry()],
        };
        let mut other = entry();
        other.arch = Arch::Aarch64;
        lock.set(other);
        lock.save().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("{ name = \"app\", version = '1.0 \"quoted\"'"),
            "{text}"
        );
        let back = Lock::load(&path).unwrap();
        assert_eq!(back.entries.len(), 2);
        assert_eq!(back.to_text(), text);
        assert!(
            Lock::load(&d.path().join("none.lock"))
                .unwrap()
                .entries
                .is_empty()
        );
    }

    #[test]
    fn a_broken_lock_names_its_line_and_a_different_set_names_the_package() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("x.lock");
        std::fs::write(&path, "version = 1\n[[guest]]\nname = \"a\"\ncolour = 1\n").unwrap();
        let e = format!("{:#}", Lock::load(&path).unwrap_err());
        assert!(e.contains("x.lock:4: unknown field `colour`"), "{e}");
        let e = entry();
        let mut newer = e.packages.clone();
        newer[0].version = "1.1".into();
        let err = format!(
            "{:#}",
            check_same(&e, &newer, "initrd/x86_64", Path::new("osbuilder.lock")).unwrap_err()
        );
        assert!(
            err.contains("app 1.0 \"quoted\" (amd64) is pinned; the repository now offers 1.1"),
            "{err}"
        );
        assert!(check_same(&e, &e.packages, "j", Path::new("l")).is_ok());
    }
}
