//! The native Alpine backend: verified APKINDEX → resolver → parallel cached downloads
//! (keyed by the index's control checksum) → verified packages extracted safely → apk's
//! database and the effects of busybox's and alpine-baselayout's install scripts, made
//! declaratively. Nothing from the target runs on the host, so all four architectures
//! build on any host without root. Alpine is agent-init only (see the matrix).

use std::io::Write;
use std::time::Instant;

use anyhow::Result;

use super::Options;
use crate::matrix::Target;
use crate::output::{DirKind, StagedDir};
use crate::pkg::PackageRef;
use crate::pkg::apk::install::{self, Plan};
use crate::pkg::cache::Cache;
use crate::pkg::extract::{ExtractOptions, Extractor};
use crate::pkg::fetch::Fetcher;
use crate::pkg::record::{PackageRecord, installed_packages};

/// The world: `--packages` replaces the distro's set, `--extra-pkgs` adds to it.
fn requested_packages(target: &Target<'_>, opts: &Options) -> Vec<String> {
    let mut roots = match &opts.packages {
        Some(p) => p.clone(),
        None => target.distro.package_set(target.arch, target.init),
    };
    roots.extend(opts.extra_pkgs.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    roots.retain(|r| !r.trim().is_empty() && seen.insert(r.clone()));
    roots
}

pub fn build(
    target: &Target<'_>,
    opts: &Options,
    provisioning: Option<super::Provisioning>,
) -> Result<()> {
    let start = Instant::now();
    let distro = target.distro;
    let arch = target.arch;
    let mirror = match crate::mirror::resolve(
        opts.mirror.as_deref(),
        distro,
        arch,
        std::path::Path::new("/etc/apt"),
        false,
    ) {
        Ok(m) => m,
        Err(_) => {
            return Err(crate::error::refused(format!(
                "no mirror for {}: pass --mirror URL (laid out as URL/v<version>/main/<arch>/\
                 APKINDEX.tar.gz), set $OSBUILDER_MIRROR, or set mirror.default in \
                 distros/{}/distro.toml",
                distro.name, distro.name
            )));
        }
    };
    let apk_opts = install::Options {
        arch,
        version: opts
            .os_version
            .clone()
            .unwrap_or_else(|| distro.default_version.clone()),
        mirror: mirror.url.clone(),
        packages: requested_packages(target, opts),
        keys_dirs: opts.keys_dirs.clone(),
    };
    let keys = install::keyring(distro, &apk_opts.keys_dirs)?;
    eprintln!(
        "osbuilder: {} {} {} ({}) from {mirror}",
        distro.name, apk_opts.version, arch, target.init
    );
    let fetcher = Fetcher::new();
    let plan = install::plan(distro, &apk_opts, &keys, &fetcher)?;
    for r in &plan.repos {
        eprintln!("osbuilder: index {} signed by {}", r.base, r.signed_by);
    }
    if opts.dry_run {
        let mut out = std::io::stdout().lock();
        out.write_all(plan.lines().as_bytes())?;
        let total: u64 = plan.packages.iter().map(|p| p.pkg.size).sum();
        eprintln!(
            "osbuilder: {} packages, {:.1} MiB to download (dry run: nothing fetched)",
            plan.packages.len(),
            total as f64 / 1048576.0
        );
        return Ok(());
    }

    let cache = Cache::open(opts.cache_dir.as_deref())?;
    let refs = package_refs(&plan, &apk_opts)?;
    let files = fetcher.fetch_packages(&cache, &refs)?;
    let fetched = start.elapsed();

    let t = install::default_mtime(&plan, crate::tree::source_date_epoch()?);
    let staged = StagedDir::create(&opts.output, DirKind::Rootfs, opts.force)?;
    let mut ex = Extractor::new(staged.path(), ExtractOptions::default())?;
    ex.set_default_mtime(t);
    let done = install::populate(&mut ex, distro, &apk_opts, &plan, &keys, &files, t)?;
    let mtree = ex.finish()?;

    let record = PackageRecord {
        schema: 1,
        distro: distro.name.clone(),
        version: apk_opts.version.trim_start_matches('v').to_string(),
        arch: arch.alpine().to_string(),
        init: target.init.to_string(),
        mirrors: plan.repos.iter().map(|r| r.base.clone()).collect(),
        packages: installed_packages(&refs, &files)?,
    };
    eprintln!(
        "osbuilder: busybox: {} applet links from {}",
        done.busybox_links, done.busybox_source
    );
    super::finish(
        staged,
        mtree,
        &record,
        provisioning,
        t,
        super::Timing {
            start,
            fetched,
            packages: plan.packages.len(),
        },
    )?;
    Ok(())
}

/// What the shared fetcher downloads: each package at its repository URL, filed in the
/// cache under the index's control checksum (verified over the downloaded file).
fn package_refs(plan: &Plan, opts: &install::Options) -> Result<Vec<PackageRef>> {
    plan.packages
        .iter()
        .map(|p| {
            Ok(PackageRef {
                name: p.pkg.name.clone(),
                version: p.pkg.version.clone(),
                arch: p.pkg.arch.clone(),
                size: p.pkg.size,
                url: plan.url_of(p, opts.arch),
                digest: install::control_digest(&p.pkg)?,
            })
        })
        .collect()
}
