//! The host's side of a container build: before the container starts, open the distro's
//! repository through the native backend interface (the same verified index a native build
//! reads: the build timestamp, and the plan the native resolver would install); after it,
//! read the package database the distro's tool left in the tree and turn it into the
//! package record (<rootfs>.packages.json) with the plan's sizes, URLs and digests.
//! The two are compared, so a resolver difference is shown, not hidden.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result};

use crate::distro::PackageFormat;
use crate::matrix::Target;
use crate::pkg::Digest;
use crate::pkg::backend::{self, RepoRequest, Request};
use crate::pkg::record::InstalledPackage;
use crate::rootfs::Options;

/// (name, version, arch) of an installed or planned package.
pub type Nva = (String, String, String);

/// What the host learned from the repository.
pub struct HostPlan {
    pub format: PackageFormat,
    /// The release as the record names it.
    pub release: String,
    /// For the record: the repository bases.
    pub mirrors: Vec<String>,
    /// The build timestamp (SOURCE_DATE_EPOCH, else the repository's own date).
    pub mtime: i64,
    /// What the native resolver would install for the same request (empty if it could not
    /// resolve it: then the distro's tool in the container has the last word).
    pub planned: BTreeSet<Nva>,
    by_nva: HashMap<Nva, InstalledPackage>,
    pub index_time: std::time::Duration,
}

/// Open the verified repository for `target` and resolve `roots` as the native backend would
/// with maintainer scripts to run (the container's installer runs them, which needs the
/// distro's required set).
pub fn plan(target: &Target<'_>, opts: &Options, roots: &[String]) -> Result<HostPlan> {
    let start = std::time::Instant::now();
    let version = crate::rootfs::os_version(target, opts);
    let fetcher = crate::pkg::fetch::Fetcher::new();
    let cache = crate::pkg::cache::Cache::open(opts.cache_dir.as_deref())?;
    let repo = backend::open(&RepoRequest {
        distro: target.distro,
        arch: target.arch,
        version: &version,
        mirror: opts.mirror.as_deref(),
        keyrings: &opts.keyrings,
        keys_dirs: &opts.keys_dirs,
        allow_unsigned: opts.allow_unsigned,
        host_apt_dir: opts.host_apt_dir.as_deref(),
        fetcher: &fetcher,
        cache: &cache,
    })?;
    for line in repo.verified() {
        eprintln!("osbuilder: {line}");
    }
    let request = Request {
        roots: roots.to_vec(),
        init: target.init,
        run_scripts: true,
    };
    let plan = match repo.resolve(&request) {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "osbuilder: note: the native resolver cannot resolve this request ({e:#}); the \
                 builder's own tool decides"
            );
            Default::default()
        }
    };
    let mut planned = BTreeSet::new();
    let mut by_nva = HashMap::new();
    for p in &plan.packages {
        let r = &p.package;
        let key = (r.name.clone(), r.version.clone(), r.arch.clone());
        planned.insert(key.clone());
        by_nva.insert(
            key,
            InstalledPackage {
                name: r.name.clone(),
                version: r.version.clone(),
                arch: r.arch.clone(),
                // The index's digest of the file where it is a SHA-256 (deb); apk indexes
                // hold only a SHA-1 of the control member, and the host downloaded nothing.
                sha256: match &r.digest {
                    Digest::Sha256(h) => h.clone(),
                    _ => String::new(),
                },
                size: r.size,
                url: r.url.clone(),
                // The distro's own installer ran every maintainer script.
                not_reproduced: Vec::new(),
                file_capabilities: Vec::new(),
            },
        );
    }
    let mtime = match crate::tree::source_date_epoch()? {
        Some(t) => t,
        None => repo.default_mtime(&plan),
    };
    Ok(HostPlan {
        format: repo.format(),
        release: repo.release(),
        mirrors: repo.mirrors(),
        mtime,
        planned,
        by_nva,
        index_time: start.elapsed(),
    })
}

impl HostPlan {
    /// The record entries for what the container installed. A package the index does not
    /// list (a local build, a diversion) keeps its name and version, with no URL or digest.
    pub fn record(&self, installed: &[Nva]) -> Vec<InstalledPackage> {
        installed
            .iter()
            .map(|k| {
                self.by_nva.get(k).cloned().unwrap_or(InstalledPackage {
                    name: k.0.clone(),
                    version: k.1.clone(),
                    arch: k.2.clone(),
                    sha256: String::new(),
                    size: 0,
                    url: String::new(),
                    not_reproduced: Vec::new(),
                    file_capabilities: Vec::new(),
                })
            })
            .collect()
    }

    /// One line on how the container's install differs from the native plan (None: same).
    pub fn compare(&self, installed: &[Nva]) -> Option<String> {
        if self.planned.is_empty() {
            return None;
        }
        let got: BTreeSet<Nva> = installed.iter().cloned().collect();
        let extra: Vec<String> = got
            .difference(&self.planned)
            .map(|(n, v, _)| format!("{n} {v}"))
            .collect();
        let missing: Vec<String> = self
            .planned
            .difference(&got)
            .map(|(n, v, _)| format!("{n} {v}"))
            .collect();
        if extra.is_empty() && missing.is_empty() {
            return None;
        }
        Some(format!(
            "the builder installed {} package(s) the native resolver would not ({}) and left out \
             {} it would install ({})",
            extra.len(),
            extra.join(", "),
            missing.len(),
            missing.join(", ")
        ))
    }
}

/// The packages the distro's tool recorded as installed in `root`.
pub fn installed(root: &Path, format: PackageFormat) -> Result<Vec<Nva>> {
    let (db, what) = match format {
        PackageFormat::Deb => ("var/lib/dpkg/status", "dpkg status"),
        PackageFormat::Apk => ("lib/apk/db/installed", "apk database"),
        PackageFormat::Rpm => {
            let mut out = crate::pkg::rpm::rpmdb::installed(root)?;
            out.sort();
            return Ok(out);
        }
    };
    let path = root.join(db);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "the builder left no {what} in the rootfs ({}): did its installer run?",
            crate::show::path(&path)
        )
    })?;
    let mut out = Vec::new();
    match format {
        PackageFormat::Deb => {
            for s in crate::pkg::deb::control::parse_stanzas(&text) {
                let get = |k: &str| s.get(k).unwrap_or("").trim().to_string();
                if get("Status").ends_with(" installed") {
                    out.push((get("Package"), get("Version"), get("Architecture")));
                }
            }
        }
        _ => {
            for block in text.split("\n\n") {
                let field = |k: &str| {
                    block
                        .lines()
                        .find_map(|l| l.strip_prefix(k))
                        .unwrap_or("")
                        .to_string()
                };
                let name = field("P:");
                if !name.is_empty() {
                    out.push((name, field("V:"), field("A:")));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_and_apk_database_are_read() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(
            d.path().join("var/lib/dpkg/status"),
            "Package: b\nStatus: install ok installed\nVersion: 2\nArchitecture: all\n\n\
             Package: a\nStatus: deinstall ok config-files\nVersion: 1\nArchitecture: amd64\n",
        )
        .unwrap();
        let got = installed(d.path(), PackageFormat::Deb).unwrap();
        assert_eq!(got, vec![("b".into(), "2".into(), "all".into())]);
        std::fs::create_dir_all(d.path().join("lib/apk/db")).unwrap();
        std::fs::write(
            d.path().join("lib/apk/db/installed"),
            "C:Q1x\nP:musl\nV:1.2.5-r10\nA:x86_64\n\nC:Q1y\nP:busybox\nV:1.37.0-r18\nA:x86_64\n",
        )
        .unwrap();
        let got = installed(d.path(), PackageFormat::Apk).unwrap();
        assert_eq!(got[0].0, "busybox");
        assert_eq!(got.len(), 2);
        let e = installed(&d.path().join("none"), PackageFormat::Deb).unwrap_err();
        assert!(format!("{e:#}").contains("dpkg status"));
    }
}
