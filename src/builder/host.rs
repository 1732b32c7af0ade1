//! The host's side of a container build: before the container starts, open the distro's
//! repository with the native backend's verified index (the mirror URL handed to the
//! container, the build timestamp, and the plan the native resolver would install); after
//! it, read the package database the distro's tool left in the tree and turn it into the
//! package record (<rootfs>.packages.json) with the index's sizes, URLs and digests.
//! The two plans are compared, so a resolver difference is shown, not hidden.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{Context, Result};

use crate::distro::PackageFormat;
use crate::matrix::Target;
use crate::pkg::record::InstalledPackage;
use crate::rootfs::Options;

/// (name, version, arch) of an installed or planned package.
pub type Nva = (String, String, String);

/// What the host learned from the repository.
pub struct HostPlan {
    pub format: PackageFormat,
    /// Passed to the container: the repository root (Debian) or the folder holding v3.22/
    /// (Alpine).
    pub mirror: String,
    /// For the record: the repository bases.
    pub mirrors: Vec<String>,
    /// The build timestamp (SOURCE_DATE_EPOCH, else the repository's own date).
    pub mtime: i64,
    /// What the native resolver would install for the same request.
    pub planned: BTreeSet<Nva>,
    by_nva: HashMap<Nva, InstalledPackage>,
    pub index_time: std::time::Duration,
}

/// Open the verified repository for `target` and resolve `roots` as the native backend would
/// (with the required set: the container's installer runs maintainer scripts, which need it).
pub fn plan(target: &Target<'_>, opts: &Options, roots: &[String]) -> Result<HostPlan> {
    let start = std::time::Instant::now();
    match target.distro.package_format {
        PackageFormat::Deb => plan_deb(target, opts, roots, start),
        PackageFormat::Apk => plan_apk(target, opts, roots, start),
        PackageFormat::Rpm => Err(crate::error::refused(format!(
            "--builder: {} has no builder definition for rpm repositories in this osbuilder yet",
            target.distro.name
        ))),
    }
}

fn plan_deb(
    target: &Target<'_>,
    opts: &Options,
    roots: &[String],
    start: std::time::Instant,
) -> Result<HostPlan> {
    use crate::pkg::deb::release::parse_rfc2822;
    let suite = suite_of(target, opts);
    let repo = crate::rootfs::deb::open_repository(&crate::rootfs::deb::RepoRequest {
        distro: target.distro,
        arch: target.arch,
        suite: &suite,
        mirror: opts.mirror.as_deref(),
        keyrings: &opts.keyrings,
        cache_dir: opts.cache_dir.as_deref(),
        host_apt_dir: opts.host_apt_dir.as_deref(),
    })?;
    let u = &repo.universe;
    let resolver = crate::pkg::deb::resolve::Resolver::new(u, target.arch.debian());
    // A resolver failure is reported by the distro's own tool in the container; the
    // comparison is only made when both plans exist.
    let planned = match resolver.resolve(roots, true) {
        Ok(r) => r
            .packages
            .iter()
            .map(|&i| {
                let p = &u.packages[i];
                (p.name.clone(), p.version.clone(), p.arch.clone())
            })
            .collect(),
        Err(_) => BTreeSet::new(),
    };
    let by_nva = u
        .packages
        .iter()
        .map(|p| {
            let r = p.package_ref();
            (
                (p.name.clone(), p.version.clone(), p.arch.clone()),
                InstalledPackage {
                    name: p.name.clone(),
                    version: p.version.clone(),
                    arch: p.arch.clone(),
                    sha256: p.sha256.clone(),
                    size: p.size,
                    url: r.url,
                },
            )
        })
        .collect();
    let mtime = match crate::tree::source_date_epoch()? {
        Some(t) => t,
        None => u
            .release
            .date
            .as_deref()
            .and_then(|d| parse_rfc2822(d).ok())
            .unwrap_or(0),
    };
    Ok(HostPlan {
        format: PackageFormat::Deb,
        mirror: repo.mirror.url.clone(),
        mirrors: vec![repo.mirror.url.clone()],
        mtime,
        planned,
        by_nva,
        index_time: start.elapsed(),
    })
}

fn plan_apk(
    target: &Target<'_>,
    opts: &Options,
    roots: &[String],
    start: std::time::Instant,
) -> Result<HostPlan> {
    use crate::pkg::apk::install;
    let distro = target.distro;
    let mirror = crate::mirror::resolve(
        opts.mirror.as_deref(),
        distro,
        target.arch,
        Path::new("/etc/apt"),
        false,
    )
    .map_err(|_| {
        crate::error::refused(format!(
            "no mirror for {}: pass --mirror URL (laid out as URL/v<version>/main/<arch>/\
             APKINDEX.tar.gz) or set mirror.default in distros/{}/distro.toml",
            distro.name, distro.name
        ))
    })?;
    let apk_opts = install::Options {
        arch: target.arch,
        version: suite_of(target, opts),
        mirror: mirror.url.clone(),
        packages: roots.to_vec(),
        keys_dirs: opts.keys_dirs.clone(),
    };
    let keys = install::keyring(distro, &apk_opts.keys_dirs)?;
    let plan = install::plan(distro, &apk_opts, &keys, &crate::pkg::fetch::Fetcher::new())?;
    let mut by_nva = HashMap::new();
    let mut planned = BTreeSet::new();
    for p in &plan.packages {
        let key = (
            p.pkg.name.clone(),
            p.pkg.version.clone(),
            p.pkg.arch.clone(),
        );
        planned.insert(key.clone());
        by_nva.insert(
            key,
            InstalledPackage {
                name: p.pkg.name.clone(),
                version: p.pkg.version.clone(),
                arch: p.pkg.arch.clone(),
                // The index holds only a SHA-1 of the control member; the host downloaded
                // nothing (apk in the container did, and verified it).
                sha256: String::new(),
                size: p.pkg.size,
                url: plan.url_of(p, target.arch),
            },
        );
    }
    Ok(HostPlan {
        format: PackageFormat::Apk,
        mirror: mirror.url.clone(),
        mirrors: plan.repos.iter().map(|r| r.base.clone()).collect(),
        mtime: install::default_mtime(&plan, crate::tree::source_date_epoch()?),
        planned,
        by_nva,
        index_time: start.elapsed(),
    })
}

/// The release asked for, else the distro's default.
pub fn suite_of(target: &Target<'_>, opts: &Options) -> String {
    opts.os_version
        .clone()
        .unwrap_or_else(|| target.distro.default_version.clone())
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
        PackageFormat::Rpm => unreachable!("refused in plan()"),
    };
    let path = root.join(db);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "the builder left no {what} in the rootfs ({}): did its installer run?",
            path.display()
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
