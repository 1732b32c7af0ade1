//! The Alpine implementation of the package backend: verified APKINDEX files → resolver →
//! packages verified (signature, control checksum, datahash) and extracted safely → apk's
//! database and the effects of busybox's and alpine-baselayout's install scripts, made
//! declaratively. Nothing from the target runs on the host, so all four architectures
//! build on any host without root.

use std::path::PathBuf;

use anyhow::Result;

use super::install::{self, Indexes};
use super::sign::Keyring;
use crate::distro::{Distro, PackageFormat};
use crate::pkg::PackageRef;
use crate::pkg::backend::{InstallReport, Plan, Planned, RepoRequest, Repository, Request};
use crate::pkg::extract::Extractor;

/// The verified indexes of an Alpine release, and the keys that verified them.
pub struct ApkRepository {
    distro: Distro,
    /// The mirror and where it was chosen from, for the log.
    mirror: String,
    opts: install::Options,
    keys: Keyring,
    indexes: Indexes,
}

impl ApkRepository {
    /// Resolve the mirror, assemble the keys (the distro's plus `--keys-dir`) and load
    /// every component's signed index.
    pub fn open(req: &RepoRequest<'_>) -> Result<ApkRepository> {
        let distro = req.distro;
        let mirror = crate::mirror::resolve(
            req.mirror,
            distro,
            req.arch,
            std::path::Path::new("/etc/apt"),
            false,
        )
        .map_err(|_| {
            crate::error::refused(format!(
                "no mirror for {}: pass --mirror URL (laid out as URL/v<version>/main/<arch>/\
                 APKINDEX.tar.gz), set $OSBUILDER_MIRROR, or set mirror.default in \
                 distros/{}/distro.toml",
                distro.name, distro.name
            ))
        })?;
        let opts = install::Options {
            arch: req.arch,
            version: req.version.to_string(),
            mirror: mirror.url.clone(),
            keys_dirs: req.keys_dirs.to_vec(),
        };
        let keys = install::keyring(distro, &opts.keys_dirs)?;
        let indexes = Indexes::load(distro, &opts, &keys, req.fetcher)?;
        Ok(ApkRepository {
            distro: distro.clone(),
            mirror: mirror.to_string(),
            opts,
            keys,
            indexes,
        })
    }

    fn plan<'a>(&'a self, req: &Request, plan: &Plan) -> Result<install::Plan<'a>> {
        let mut p = self.indexes.resolve(&req.roots)?;
        p.packages = plan.packages.iter().map(|p| p.id).collect();
        Ok(p)
    }
}

impl Repository for ApkRepository {
    fn format(&self) -> PackageFormat {
        PackageFormat::Apk
    }

    fn release(&self) -> String {
        self.opts.version.trim_start_matches('v').to_string()
    }

    fn mirrors(&self) -> Vec<String> {
        self.indexes.repos.iter().map(|r| r.base.clone()).collect()
    }

    fn verified(&self) -> Vec<String> {
        std::iter::once(format!("repository {}", self.mirror))
            .chain(
                self.indexes
                    .repos
                    .iter()
                    .map(|r| format!("index {} signed by {}", r.base, r.signed_by)),
            )
            .collect()
    }

    fn resolve(&self, req: &Request) -> Result<Plan> {
        let p = self.indexes.resolve(&req.roots)?;
        let packages = p
            .packages
            .iter()
            .map(|&i| {
                let pkg = &self.indexes.packages[i];
                Ok(Planned {
                    package: PackageRef {
                        name: pkg.name.clone(),
                        version: pkg.version.clone(),
                        arch: pkg.arch.clone(),
                        size: pkg.size,
                        url: self.indexes.url_of(i, self.opts.arch),
                        // Filed in the cache under the index's control checksum, verified
                        // over the downloaded file.
                        digest: install::control_digest(pkg)?,
                    },
                    id: i,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Plan {
            packages,
            notes: Vec::new(),
        })
    }

    fn default_mtime(&self, plan: &Plan) -> i64 {
        plan.packages
            .iter()
            .filter_map(|p| self.indexes.packages[p.id].build_time)
            .max()
            .unwrap_or(0) as i64
    }

    fn install(
        &self,
        ex: &mut Extractor,
        req: &Request,
        plan: &Plan,
        files: &[PathBuf],
        mtime: i64,
    ) -> Result<InstallReport> {
        let p = self.plan(req, plan)?;
        let done = install::populate(ex, &self.distro, &self.opts, &p, &self.keys, files, mtime)?;
        Ok(InstallReport {
            notes: vec![format!(
                "busybox: {} applet links from {}",
                done.busybox_links, done.busybox_source
            )],
            ..Default::default()
        })
    }
}
