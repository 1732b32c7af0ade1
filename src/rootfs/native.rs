//! The native build: one driver for every package format. [`open`] opens the distro's
//! verified repository through [`crate::pkg::backend::open`], the caller resolves the
//! requested packages (or prints the plan, `--dry-run`) and fetches them into the cache,
//! and [`install`] lets the backend install them into a staged root, which
//! [`super::finish`] provisions and commits. [`build`] is the whole of `osbuilder rootfs`;
//! the release planner (`crate::build`) calls the steps itself, between which it keeps its
//! lock file and stage cache.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use super::Options;
use crate::distro::PackageFormat;
use crate::events::{Job, Sink, Stage};
use crate::matrix::Target;
use crate::output::{DirKind, StagedDir};
use crate::pkg::backend::{self, Plan, RepoRequest, Repository, Request};
use crate::pkg::cache::Cache;
use crate::pkg::extract::{ExtractOptions, Extractor};
use crate::pkg::fetch::Fetcher;
use crate::pkg::record::{PackageRecord, installed_packages};

/// A verified repository and what to install from it. The repository is shared: a release
/// run resolves several guests of one distro, release and arch against one opened index.
pub struct Opened {
    pub repo: std::rc::Rc<dyn Repository>,
    pub request: Request,
    /// The release as asked (or the distro's default).
    pub version: String,
}

/// A rootfs that is in place, and what it was made of.
pub struct Built {
    /// The build timestamp: SOURCE_DATE_EPOCH, else the repository's (a rebuild of the
    /// same plan gets the same one).
    pub mtime: i64,
    pub record: PackageRecord,
}

/// What to install for `opts` (checking that `--run-scripts` can work).
pub fn request(target: &Target<'_>, opts: &Options) -> Result<Request> {
    let distro = target.distro;
    let format = distro.package_format;
    if opts.run_scripts {
        match format {
            PackageFormat::Deb => crate::pkg::deb::backend::check_can_run_scripts(target.arch)?,
            other => {
                return Err(crate::error::refused(format!(
                    "--run-scripts runs Debian maintainer scripts; {} uses {} packages",
                    distro.name,
                    other.name()
                )));
            }
        }
    }
    Ok(Request {
        roots: super::requested_packages(target, opts)?,
        init: target.init,
        run_scripts: opts.run_scripts,
    })
}

/// Check the request, open the distro's verified repository (the fetcher's pins apply; see
/// [`Fetcher::pinning`]) and tell `job` what was verified.
pub fn open(
    target: &Target<'_>,
    opts: &Options,
    fetcher: &Fetcher,
    cache: &Cache,
    job: Job<'_>,
) -> Result<Opened> {
    let distro = target.distro;
    let version = super::os_version(target, opts);
    let request = request(target, opts)?;
    let repo = backend::open(&RepoRequest {
        distro,
        arch: target.arch,
        version: &version,
        mirror: opts.mirror.as_deref(),
        keyrings: &opts.keyrings,
        keys_dirs: &opts.keys_dirs,
        allow_unsigned: opts.allow_unsigned,
        host_apt_dir: opts.host_apt_dir.as_deref(),
        fetcher,
        cache,
    })?;
    for line in repo.verified() {
        job.note(line);
    }
    Ok(Opened {
        repo: std::rc::Rc::from(repo),
        request,
        version,
    })
}

/// Install the fetched `files` of `plan` into a staged rootfs at `opts.output`, provision it
/// and commit it with its sidecars.
pub fn install(
    target: &Target<'_>,
    opts: &Options,
    opened: &Opened,
    plan: &Plan,
    files: &[PathBuf],
    provisioning: Option<super::Provisioning>,
    job: Job<'_>,
) -> Result<Built> {
    let repo = &opened.repo;
    let format = target.distro.package_format;
    let mtime = match crate::tree::source_date_epoch()? {
        Some(t) => t,
        None => repo.default_mtime(plan),
    };
    let staged = StagedDir::create(&opts.output, DirKind::Rootfs, opts.force)?;
    let extracting = job.start(Stage::Extract, None);
    let mut ex = Extractor::new(
        staged.path(),
        ExtractOptions {
            filter: super::path_filter(target, opts)?,
            ..Default::default()
        },
    )?;
    ex.set_default_mtime(mtime);
    let report = repo.install(&mut ex, &opened.request, plan, files, mtime)?;
    let excluded = ex.excluded().clone();
    let mtree = ex.finish()?;
    repo.post_install(staged.path(), &opened.request)?;
    extracting.finish(
        false,
        None,
        Some(format!("{} packages", plan.packages.len())),
    );
    for note in &report.notes {
        job.note(note.clone());
    }
    if let Some(note) = super::excluded_note(&excluded) {
        job.note(note);
    }
    if !report.not_reproduced.is_empty() {
        job.note(format!(
            "not reproduced without --run-scripts ({} packages; listed in osbuilder.yaml):",
            report.not_reproduced.len()
        ));
        for (pkg, what) in &report.not_reproduced {
            job.note(format!("  {pkg}: {}", what.join("; ")));
        }
    }
    let refs = plan.refs();
    let record = PackageRecord {
        schema: 1,
        distro: target.distro.name.clone(),
        version: repo.release(),
        arch: format.arch_name(target.arch).to_string(),
        init: target.init.to_string(),
        format: Some(format),
        trust: report.trust,
        mirrors: repo.mirrors(),
        packages: {
            let mut v = installed_packages(&refs, files)?;
            // By name, whatever order they were unpacked in: the same set gives the same
            // record (and SBOM), natively or from a builder container.
            v.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
            for p in &mut v {
                if let Some(n) = report.not_reproduced.get(&p.name) {
                    p.not_reproduced = n.clone();
                }
                if let Some(c) = report.capabilities.get(&p.name) {
                    p.file_capabilities = c.clone();
                }
            }
            v
        },
        excluded: (!excluded.rules.is_empty()).then_some(excluded),
    };
    super::finish(staged, mtree, &record, provisioning, mtime, job)?;
    Ok(Built { mtime, record })
}

/// `osbuilder rootfs`: open, resolve, print the plan (dry run) or fetch and install.
pub fn build(
    target: &Target<'_>,
    opts: &Options,
    provisioning: Option<super::Provisioning>,
    sink: &dyn Sink,
) -> Result<()> {
    let start = Instant::now();
    let job = Job::new("rootfs", sink);
    let version = super::os_version(target, opts);
    job.note(format!(
        "{} {version} {} ({})",
        target.distro.name,
        target.distro.package_format.arch_name(target.arch),
        target.init
    ));
    let fetcher = Fetcher::from_env()?;
    let cache = Cache::open(opts.cache_dir.as_deref())?;
    let opened = open(target, opts, &fetcher, &cache, job)?;
    let plan = opened.repo.resolve(&opened.request)?;
    for note in &plan.notes {
        job.note(note.clone());
    }
    if opts.dry_run {
        std::io::stdout()
            .lock()
            .write_all(plan.lines().as_bytes())?;
        job.note(format!(
            "{} packages, {:.1} MiB to download (dry run: nothing fetched)",
            plan.packages.len(),
            plan.download_size() as f64 / 1048576.0
        ));
        if !opts.run_scripts {
            let (notes, unchecked) = opened.repo.plan_notes(&plan, &cache)?;
            let rpm = opened.repo.format() == PackageFormat::Rpm;
            if !notes.is_empty() {
                job.note(if rpm {
                    "scriptlets that will not run (osbuilder runs none; what a guest needs from \
                     them is made declaratively):"
                } else {
                    "what the install scripts may do that is not reproduced without --run-scripts:"
                });
                for (pkg, what) in &notes {
                    job.note(format!("  {pkg}: {}", what.join("; ")));
                }
            }
            if unchecked > 0 {
                job.note(if rpm {
                    format!(
                        "{unchecked} packages have no header range in primary.xml: their \
                         scriptlets are named in the build log when they are installed"
                    )
                } else {
                    format!(
                        "{unchecked} packages are not in the download cache yet: their scripts \
                         are checked when they are fetched (the build lists what it did not \
                         reproduce)"
                    )
                });
            }
        }
        return Ok(());
    }
    let files = fetcher.fetch_packages(&cache, &plan.refs())?;
    let fetched = start.elapsed();
    install(target, opts, &opened, &plan, &files, provisioning, job)?;
    job.note(format!(
        "rootfs {} ready: {} packages in {:.1} s (index+download {:.1} s){}",
        opts.output.display(),
        plan.packages.len(),
        start.elapsed().as_secs_f64(),
        fetched.as_secs_f64(),
        match crate::tree::Mtree::default_path_for(&opts.output) {
            m if m.exists() => format!("; ownership and device metadata in {}", m.display()),
            _ => String::new(),
        }
    ));
    Ok(())
}
