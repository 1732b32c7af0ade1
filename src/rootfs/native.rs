//! The native build: one driver for every package format. It opens the distro's verified
//! repository through [`crate::pkg::backend::open`], resolves the requested packages,
//! prints the plan (`--dry-run`) or fetches it in parallel into the cache, lets the
//! backend install it into a staged root, and hands the root to [`super::finish`].

use std::io::Write;
use std::time::Instant;

use anyhow::Result;

use super::Options;
use crate::distro::PackageFormat;
use crate::matrix::Target;
use crate::output::{DirKind, StagedDir};
use crate::pkg::backend::{self, RepoRequest, Request};
use crate::pkg::cache::Cache;
use crate::pkg::extract::{ExtractOptions, Extractor};
use crate::pkg::fetch::Fetcher;
use crate::pkg::record::{PackageRecord, installed_packages};

pub fn build(
    target: &Target<'_>,
    opts: &Options,
    provisioning: Option<super::Provisioning>,
) -> Result<()> {
    let start = Instant::now();
    let distro = target.distro;
    let format = distro.package_format;
    let arch = target.arch;
    let version = super::os_version(target, opts);
    if opts.run_scripts {
        match format {
            PackageFormat::Deb => crate::pkg::deb::backend::check_can_run_scripts(arch)?,
            other => {
                return Err(crate::error::refused(format!(
                    "--run-scripts runs Debian maintainer scripts; {} uses {} packages",
                    distro.name,
                    other.name()
                )));
            }
        }
    }
    let request = Request {
        roots: super::requested_packages(target, opts),
        init: target.init,
        run_scripts: opts.run_scripts,
    };
    eprintln!(
        "osbuilder: {} {version} {} ({})",
        distro.name,
        format.arch_name(arch),
        target.init
    );
    let fetcher = Fetcher::from_env()?;
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    let repo = backend::open(&RepoRequest {
        distro,
        arch,
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
    let plan = repo.resolve(&request)?;
    for note in &plan.notes {
        eprintln!("osbuilder: {note}");
    }
    if opts.dry_run {
        std::io::stdout()
            .lock()
            .write_all(plan.lines().as_bytes())?;
        eprintln!(
            "osbuilder: {} packages, {:.1} MiB to download (dry run: nothing fetched)",
            plan.packages.len(),
            plan.download_size() as f64 / 1048576.0
        );
        if !opts.run_scripts {
            let (notes, unchecked) = repo.plan_notes(&plan, &cache)?;
            if !notes.is_empty() {
                eprintln!(
                    "osbuilder: what the install scripts may do that is not reproduced without --run-scripts:"
                );
                for (pkg, what) in &notes {
                    eprintln!("osbuilder:   {pkg}: {}", what.join("; "));
                }
            }
            if unchecked > 0 {
                eprintln!(
                    "osbuilder: {unchecked} packages are not in the download cache yet: their scripts are checked when they are fetched (the build lists what it did not reproduce)"
                );
            }
        }
        return Ok(());
    }

    let refs = plan.refs();
    let files = fetcher.fetch_packages(&cache, &refs)?;
    let fetched = start.elapsed();

    let mtime = match crate::tree::source_date_epoch()? {
        Some(t) => t,
        None => repo.default_mtime(&plan),
    };
    let staged = StagedDir::create(&opts.output, DirKind::Rootfs, opts.force)?;
    let mut ex = Extractor::new(staged.path(), ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    let report = repo.install(&mut ex, &request, &plan, &files, mtime)?;
    let mtree = ex.finish()?;
    repo.post_install(staged.path(), &request)?;
    for note in &report.notes {
        eprintln!("osbuilder: {note}");
    }
    if !report.not_reproduced.is_empty() {
        eprintln!(
            "osbuilder: not reproduced without --run-scripts ({} packages; listed in osbuilder.yaml):",
            report.not_reproduced.len()
        );
        for (pkg, what) in &report.not_reproduced {
            eprintln!("osbuilder:   {pkg}: {}", what.join("; "));
        }
    }

    let record = PackageRecord {
        schema: 1,
        distro: distro.name.clone(),
        version: repo.release(),
        arch: format.arch_name(arch).to_string(),
        init: target.init.to_string(),
        format: Some(format),
        trust: report.trust,
        mirrors: repo.mirrors(),
        packages: {
            let mut v = installed_packages(&refs, &files)?;
            for p in &mut v {
                if let Some(n) = report.not_reproduced.get(&p.name) {
                    p.not_reproduced = n.clone();
                }
            }
            v
        },
    };
    super::finish(
        staged,
        mtree,
        &record,
        provisioning,
        mtime,
        super::Timing {
            start,
            fetched,
            packages: plan.packages.len(),
        },
    )
}
