//! Running a plan: for each rootfs job, the lock entry decides the packages, the stage cache
//! is asked for the rootfs and each artifact by key, and only what is missing is made —
//! resolve and download (only without a usable lock entry, or when the rootfs must be
//! rebuilt), install and provision, pack. Every job's packages are settled before any job
//! is built, so a job that cannot have them (an arch the mirror does not serve) stops the
//! run before any work is spent. Everything the user sees goes out as events.
//!
//! Keys (see [`super::stage`]): a rootfs is keyed by its lock entry (repository digests,
//! packages with their SHA-256) and its provisioning inputs (the agent's SHA-256, its
//! version, the kernel modules' content, init mode, unit pruning, SOURCE_DATE_EPOCH, the
//! package lists osbuilder.yaml records, root or not); an artifact by its rootfs's key, its
//! packer options, its names and its timestamp.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use super::lock::{self, Entry, Lock};
use super::plan::{ArtifactJob, Packer, Plan, RootfsJob};
use super::stage::{self, FileInfo, Meta, StageKind, Stages};
use crate::distro::DistroSet;
use crate::events::{Job, Sink, Stage};
use crate::matrix::{Matrix, Request, Target};
use crate::pkg::backend::Repository;
use crate::pkg::cache::Cache;
use crate::pkg::fetch::{Fetcher, IndexDigest};
use crate::provision::AgentRequest;

/// How to run a plan.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The download cache (and the stage cache in its `stages/`); default as for rootfs.
    pub cache_dir: Option<PathBuf>,
    pub lock_path: PathBuf,
    /// Build exactly what the lock file says; never write it.
    pub locked: bool,
}

/// One artifact that is in the stage cache, ready to publish.
#[derive(Clone, Debug)]
pub struct BuiltArtifact {
    pub job: ArtifactJob,
    pub entry: stage::Entry,
    /// Taken from the stage cache (not packed by this run).
    pub cached: bool,
    /// Time spent packing (0 when cached).
    pub seconds: f64,
}

/// What a run made.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub artifacts: Vec<BuiltArtifact>,
    /// SOURCE_DATE_EPOCH, if set.
    pub source_date_epoch: Option<i64>,
    /// Package bytes that came over the network.
    pub downloaded: u64,
}

fn target<'a>(set: &'a DistroSet, job: &RootfsJob) -> Result<Target<'a>> {
    Ok(Matrix::new(set).check(&Request {
        distro: &job.distro,
        arch: job.arch,
        init: Some(job.init),
    })?)
}

/// Refuse, before any work, a `--locked` run whose lock lacks an entry or has a stale one.
fn check_locked(plan: &Plan, lock: &Lock) -> Result<()> {
    let mut problems = Vec::new();
    for j in &plan.jobs {
        match lock.get(&j.lock_key) {
            None => problems.push(format!("{}: no entry in {}", j.name, lock.path.display())),
            Some(e) => {
                if let Some(why) = e.stale_for(j) {
                    problems.push(format!("{}: the entry is stale: {why}", j.name));
                }
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(crate::error::refused(format!(
        "--locked, but the lock file does not cover this build: {}. Run `osbuilder lock` \
         (or a build without --locked) to resolve, review and check in the result",
        problems.join("; ")
    )))
}

/// A resolution: what the repository gave for a job, fetched.
struct Resolved {
    opened: crate::rootfs::native::Opened,
    plan: crate::pkg::backend::Plan,
    files: Vec<PathBuf>,
    entry: Entry,
    downloaded: u64,
}

/// Repositories opened during a run, by what was asked (distro, release, arch, mirror,
/// keys, pins): guests of one distro and arch share one parsed index.
type Opened = std::collections::HashMap<String, (std::rc::Rc<dyn Repository>, Vec<IndexDigest>)>;

/// Open the job's repository (the `pins` served from the cache when it holds them),
/// resolve, fetch, and describe the result as a lock entry.
#[allow(clippy::too_many_arguments)]
fn resolve(
    job: &RootfsJob,
    target: &Target<'_>,
    opts: &crate::rootfs::Options,
    fetcher: &Fetcher,
    cache: &Cache,
    expect: Option<(&Entry, &Path)>,
    repos: &mut Opened,
    ev: Job<'_>,
) -> Result<Resolved> {
    let resolving = ev.start(Stage::Resolve, None);
    let pins = expect
        .map(|(e, _)| e.repository.clone())
        .unwrap_or_default();
    let id = json!({
        "distro": job.distro, "release": job.version, "arch": job.arch, "mirror": opts.mirror,
        "keyrings": opts.keyrings, "keys_dirs": opts.keys_dirs, "pins": pins,
    })
    .to_string();
    let opened = match repos.get(&id) {
        Some((repo, _)) => crate::rootfs::native::Opened {
            repo: repo.clone(),
            request: crate::rootfs::native::request(target, opts)?,
            version: job.version.clone(),
        },
        None => {
            let fetcher = fetcher.pinning(cache, &pins);
            let o = crate::rootfs::native::open(target, opts, &fetcher, cache, ev)?;
            repos.insert(id.clone(), (o.repo.clone(), fetcher.index_log()));
            o
        }
    };
    let plan = opened.repo.resolve(&opened.request)?;
    for n in &plan.notes {
        ev.note(n.clone());
    }
    let repository = repos[&id].1.clone();
    let from_cache = !pins.is_empty() && repository.iter().all(|r| pins.contains(r));
    // A locked build never takes other packages than the lock's (nor downloads them).
    if let Some((e, lock_path)) = expect {
        lock::check_versions(e, &plan.refs(), &job.name, lock_path)?;
    }
    resolving.finish(
        false,
        None,
        Some(format!(
            "{} packages{}",
            plan.packages.len(),
            if from_cache {
                ", index from the cache"
            } else {
                ""
            }
        )),
    );
    let total = plan.download_size();
    let downloading = ev.start(Stage::Download, Some(total));
    let done = std::sync::atomic::AtomicU64::new(0);
    let refs = plan.refs();
    let (files, downloaded) = fetcher
        .fetch_packages_quietly(cache, &refs, &|n| {
            let d = done.fetch_add(n, std::sync::atomic::Ordering::Relaxed) + n;
            ev.progress(Stage::Download, d.min(total));
        })
        .with_context(|| match expect {
            Some((_, l)) => format!(
                "{}: a package pinned by {} is not in the cache and cannot be fetched",
                job.name,
                l.display()
            ),
            None => format!("{}: fetching the packages", job.name),
        })?;
    downloading.finish(
        false,
        Some(downloaded),
        Some(format!(
            "{:.1} MiB, {:.1} MiB from the network",
            total as f64 / 1048576.0,
            downloaded as f64 / 1048576.0
        )),
    );
    let entry = Entry {
        guest: job.lock_key.guest.clone(),
        variant: job.lock_key.variant.clone(),
        arch: job.arch,
        distro: job.distro.clone(),
        release: job.version.clone(),
        format: target.distro.package_format,
        init: job.init,
        requested: job.requested.clone(),
        run_scripts: opts.run_scripts,
        repository,
        packages: lock::locked_packages(&plan, &files)?,
    };
    Ok(Resolved {
        opened,
        plan,
        files,
        entry,
        downloaded,
    })
}

/// What provisioning depends on, as key material.
fn provisioning_inputs(
    job: &RootfsJob,
    opts: &crate::rootfs::Options,
) -> Result<serde_json::Value> {
    let agent = match &opts.agent {
        None => json!(null),
        Some(a) => agent_inputs(a, job)?,
    };
    Ok(json!({
        "agent": agent,
        "packages": opts.packages,
        "extra_packages": opts.extra_pkgs,
        "source_date_epoch": crate::tree::source_date_epoch()?,
        "root": unsafe { libc::geteuid() } == 0,
    }))
}

fn agent_inputs(a: &AgentRequest, job: &RootfsJob) -> Result<serde_json::Value> {
    let source = match (&a.agent_bin, &a.agent_tarball) {
        (Some(p), _) => json!({"bin": crate::pkg::sha256_file(p)?}),
        (_, Some(p)) => json!({"tarball": crate::pkg::sha256_file(p)?}),
        _ => json!({"reference": crate::pkg::sha256_hex(crate::agent::reference_agent())}),
    };
    Ok(json!({
        "source": source,
        "version": a.agent_version,
        "kernel_modules": a.kernel_modules.as_deref().map(tree_digest).transpose()?,
        "prune_units": a.prune_units,
        "init": job.init,
    }))
}

/// A digest of a folder's names, kinds, modes, link targets and contents (sorted walk).
fn tree_digest(dir: &Path) -> Result<String> {
    use sha2::Digest as _;
    use std::os::unix::fs::PermissionsExt;
    let mut h = sha2::Sha256::new();
    for e in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let rel = e.path().strip_prefix(dir).unwrap_or(e.path());
        let md = e.path().symlink_metadata()?;
        h.update(rel.as_os_str().as_encoded_bytes());
        h.update(format!("\0{:o}\0", md.permissions().mode()).as_bytes());
        if md.file_type().is_symlink() {
            h.update(std::fs::read_link(e.path())?.as_os_str().as_encoded_bytes());
        } else if md.is_file() {
            h.update(crate::pkg::sha256_file(e.path())?.as_bytes());
        }
        h.update(b"\n");
    }
    Ok(hex::encode(h.finalize()))
}

fn rootfs_key(entry: &Entry, provisioning: &serde_json::Value) -> String {
    stage::key(&json!({
        "stage": "rootfs",
        "distro": entry.distro,
        "release": entry.release,
        "arch": entry.arch,
        "format": entry.format,
        "init": entry.init,
        "requested": entry.requested,
        "run_scripts": entry.run_scripts,
        "repository": entry.repository,
        "packages": entry.packages,
        "provisioning": provisioning,
    }))
}

fn artifact_key(rootfs: &str, a: &ArtifactJob, epoch: i64) -> String {
    stage::key(&json!({
        "stage": "artifact",
        "rootfs": rootfs,
        "kind": a.kind,
        "arch": a.arch,
        "packer": a.packer,
        "file": a.file_name,
        "link": a.link_name,
        "root_hash": a.root_hash,
        "tarball": a.tarball,
        "epoch": epoch,
    }))
}

/// Build every selected job (or take it from the stage cache); update the lock file unless
/// `--locked`.
pub fn run(plan: &Plan, settings: &Settings, sink: &dyn Sink) -> Result<Outcome> {
    let mut lock = Lock::load(&settings.lock_path)?;
    if settings.locked {
        check_locked(plan, &lock)?;
    }
    let set = DistroSet::load()?;
    let cache = Cache::open(settings.cache_dir.as_deref())?;
    let stages = Stages::open(&cache)?;
    let mut fetcher = Fetcher::from_env()?;
    fetcher.progress = false;
    let epoch = crate::tree::source_date_epoch()?;
    let mut outcome = Outcome {
        artifacts: Vec::new(),
        source_date_epoch: epoch,
        downloaded: 0,
    };
    let mut repos = Opened::new();
    // Agents and kernel modules are read now: a missing file fails before any download.
    let mut prepared = Vec::new();
    for job in &plan.jobs {
        let mut opts = job.options.clone();
        opts.cache_dir = settings.cache_dir.clone();
        let inputs = provisioning_inputs(job, &opts)
            .with_context(|| format!("{}: reading the agent and kernel modules", job.name))?;
        prepared.push((opts, inputs));
    }
    // First every job's packages are settled — taken from the stage cache, or resolved and
    // downloaded — and only then is anything built: a job whose packages cannot be had (an
    // arch whose pool the mirror does not serve, a pinned version gone) fails the run in
    // seconds, all such jobs named at once, before minutes go into the jobs that could be.
    let mut ready = Vec::new();
    let mut failed = Vec::new();
    for (job, (opts, prov)) in plan.jobs.iter().zip(prepared) {
        let ev = Job::new(&job.name, sink);
        match settle(
            job, &set, &opts, prov, settings, &mut lock, &stages, &fetcher, &cache, &mut repos, ev,
        ) {
            Ok((source, downloaded)) => {
                outcome.downloaded += downloaded;
                ready.push((job, opts, source));
            }
            Err(e) => failed.push((job, e)),
        }
    }
    if let Some(err) = cannot_build(plan.jobs.len(), failed) {
        return Err(err);
    }
    for (job, mut opts, source) in ready {
        let ev = Job::new(&job.name, sink);
        let rootfs = match source {
            Source::Cached(r) => r,
            Source::Build { key, res } => {
                let target = target(&set, job)?;
                build_rootfs(job, &target, &mut opts, &stages, &key, *res, ev)?
            }
        };
        let stamp = epoch.or(rootfs.meta.mtime).unwrap_or(0);
        for a in &job.artifacts {
            outcome
                .artifacts
                .push(pack(a, &rootfs, stamp, &stages, sink)?);
        }
    }
    Ok(outcome)
}

/// Where a job's rootfs comes from once its packages are settled.
enum Source {
    Cached(stage::Entry),
    Build { key: String, res: Box<Resolved> },
}

/// Settle one job's packages: its rootfs from the stage cache when the lock entry and the
/// provisioning inputs name one, else resolved (pinned by the lock entry when it has a
/// usable one) and downloaded, the lock file updated. Returns the bytes downloaded.
#[allow(clippy::too_many_arguments)]
fn settle(
    job: &RootfsJob,
    set: &DistroSet,
    opts: &crate::rootfs::Options,
    prov: serde_json::Value,
    settings: &Settings,
    lock: &mut Lock,
    stages: &Stages,
    fetcher: &Fetcher,
    cache: &Cache,
    repos: &mut Opened,
    ev: Job<'_>,
) -> Result<(Source, u64)> {
    let target = target(set, job)?;
    let locked_entry = lock
        .get(&job.lock_key)
        .filter(|e| e.stale_for(job).is_none())
        .cloned();
    if let Some(r) = locked_entry
        .as_ref()
        .and_then(|e| stages.get(StageKind::Rootfs, &rootfs_key(e, &prov)))
    {
        ev.cached(
            Stage::Extract,
            Some(format!("rootfs {} from the stage cache", &r.meta.key[..12])),
        );
        return Ok((Source::Cached(r), 0));
    }
    let expect = locked_entry
        .as_ref()
        .map(|e| (e, settings.lock_path.as_path()));
    let res = resolve(job, &target, opts, fetcher, cache, expect, repos, ev)?;
    let downloaded = res.downloaded;
    match &locked_entry {
        Some(e) => {
            lock::check_same(e, &res.entry.packages, &job.name, &settings.lock_path)?;
            if !settings.locked && e.repository != res.entry.repository {
                lock.set(res.entry.clone());
                lock.save()?;
            }
        }
        None => {
            lock.set(res.entry.clone());
            lock.save()?;
            ev.note(format!("locked in {}", settings.lock_path.display()));
        }
    }
    let key = rootfs_key(&res.entry, &prov);
    let source = match stages.get(StageKind::Rootfs, &key) {
        Some(r) => Source::Cached(r),
        None => Source::Build {
            key,
            res: Box::new(res),
        },
    };
    Ok((source, downloaded))
}

/// The error of a run some of whose `total` jobs cannot get their packages: one job's error
/// as it is (its kind decides the exit status), several named together with what to do.
fn cannot_build(
    total: usize,
    mut failed: Vec<(&RootfsJob, anyhow::Error)>,
) -> Option<anyhow::Error> {
    match failed.len() {
        0 => None,
        1 if total == 1 => Some(failed.remove(0).1),
        1 => {
            let (job, e) = failed.remove(0);
            Some(e.context(format!(
                "nothing was built: job {} (1 of {total}) cannot get its packages (leave it \
                 out with --only, e.g. --only arch={}, or fix the mirror)",
                job.name, job.arch
            )))
        }
        n => {
            let refused = failed.iter().all(|(_, e)| crate::error::is_refused(e));
            let names: Vec<&str> = failed.iter().map(|(j, _)| j.name.as_str()).collect();
            let msg = format!(
                "{n} of {total} jobs cannot get their packages, so nothing was built ({}): {}; \
                 leave them out with --only (e.g. --only arch=…), or fix the mirror",
                names.join(", "),
                failed
                    .iter()
                    .map(|(_, e)| format!("{e:#}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            Some(if refused {
                crate::error::refused(msg)
            } else {
                anyhow::anyhow!(msg)
            })
        }
    }
}

fn build_rootfs(
    job: &RootfsJob,
    target: &Target<'_>,
    opts: &mut crate::rootfs::Options,
    stages: &Stages,
    key: &str,
    res: Resolved,
    ev: Job<'_>,
) -> Result<stage::Entry> {
    let pending = stages.begin(StageKind::Rootfs, key)?;
    opts.output = pending.path().join("rootfs");
    let provisioning = match &opts.agent {
        Some(req) => Some(crate::rootfs::Provisioning::prepare(req, target, opts)?),
        None => None,
    };
    let built = crate::rootfs::native::install(
        target,
        opts,
        &res.opened,
        &res.plan,
        &res.files,
        provisioning,
        ev,
    )
    .with_context(|| format!("{}: building the rootfs", job.name))?;
    let meta = Meta {
        kind: StageKind::Rootfs,
        key: key.to_string(),
        job: job.name.clone(),
        mtime: Some(built.mtime),
        files: Default::default(),
        facts: [
            (
                "packages".to_string(),
                built.record.packages.len().to_string(),
            ),
            (
                "distro".to_string(),
                format!("{} {}", job.distro, job.version),
            ),
        ]
        .into(),
    };
    pending.publish(&meta)
}

/// Take `a` from the stage cache, or pack it from `rootfs`.
fn pack(
    a: &ArtifactJob,
    rootfs: &stage::Entry,
    epoch: i64,
    stages: &Stages,
    sink: &dyn Sink,
) -> Result<BuiltArtifact> {
    let name = a.name();
    let ev = Job::new(&name, sink);
    let key = artifact_key(&rootfs.meta.key, a, epoch);
    if let Some(e) = stages.get(StageKind::Artifact, &key) {
        match e.verify() {
            Ok(()) => {
                ev.cached(
                    Stage::Pack,
                    Some(format!("{} from the stage cache", &key[..12])),
                );
                return Ok(BuiltArtifact {
                    job: a.clone(),
                    entry: e,
                    cached: true,
                    seconds: 0.0,
                });
            }
            Err(err) => {
                ev.warn(format!("{err:#}; packing it again"));
                stages.discard(&e);
            }
        }
    }
    let started = Instant::now();
    let pending = stages.begin(StageKind::Artifact, &key)?;
    let dir = pending.path().to_path_buf();
    let root = rootfs.path.join("rootfs");
    let out = dir.join(&a.file_name);
    let mut facts = std::collections::BTreeMap::new();
    let packing = ev.start(Stage::Pack, None);
    match &a.packer {
        Packer::Initrd(s) => {
            let r = crate::initrd::build(&crate::initrd::Options {
                rootfs: root.clone(),
                output: out.clone(),
                compression: s.compression_kind,
                level: Some(s.level),
                metadata: None,
                all_root: s.all_root,
                source_date_epoch: Some(epoch),
            })
            .with_context(|| format!("{name}: packing the initrd"))?;
            for w in r.warnings {
                ev.warn(w);
            }
            facts.insert("entries".into(), r.entries.to_string());
        }
        Packer::Image(s) => {
            let mut o =
                super::plan::image_options(s, a.arch, root.clone(), out.clone(), Some(epoch));
            // What `osbuilder image -o <name>` derives under SOURCE_DATE_EPOCH.
            o.seed = Some(
                s.seed
                    .clone()
                    .unwrap_or_else(|| format!("{epoch}:{}", a.file_name)),
            );
            o.root_hash_file = a.root_hash.as_ref().map(|n| dir.join(n));
            let r =
                crate::image::build(&o).with_context(|| format!("{name}: packing the image"))?;
            for w in r.warnings {
                ev.warn(w);
            }
            facts.insert("kernel_params".into(), r.kernel_params);
        }
    }
    packing.finish(false, None, None);
    // The guest's own record, beside the artifact.
    for (from, to) in [
        ("var/lib/osbuilder/osbuilder.yaml", "osbuilder.yaml"),
        ("var/lib/osbuilder/sbom.spdx.json", "sbom.spdx.json"),
    ] {
        let src = root.join(from);
        if src.is_file() {
            std::fs::copy(&src, dir.join(to))
                .with_context(|| format!("copying {}", src.display()))?;
        }
    }
    let compressing = ev.start(Stage::Compress, None);
    super::tarball::write(a, &dir, epoch, &|d| ev.progress(Stage::Compress, d))
        .with_context(|| format!("{name}: writing {}", a.tarball))?;
    compressing.done();
    let mut files = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(&dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            let n = e.file_name().to_string_lossy().into_owned();
            files.insert(
                n,
                FileInfo {
                    sha256: crate::pkg::sha256_file(&e.path())?,
                    size: e.metadata()?.len(),
                },
            );
        }
    }
    let meta = Meta {
        kind: StageKind::Artifact,
        key: key.clone(),
        job: name.clone(),
        mtime: Some(epoch),
        files,
        facts,
    };
    let entry = pending.publish(&meta)?;
    Ok(BuiltArtifact {
        job: a.clone(),
        entry,
        cached: false,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// `osbuilder lock`: resolve (and download, so a later `--locked` build can run offline)
/// every selected job whose entry is missing or stale — or all of them with `update` —
/// and write the lock file. Returns the jobs whose entry changed.
pub fn lock(
    plan: &Plan,
    settings: &Settings,
    update: bool,
    sink: &dyn Sink,
) -> Result<Vec<String>> {
    let mut lock = Lock::load(&settings.lock_path)?;
    let set = DistroSet::load()?;
    let cache = Cache::open(settings.cache_dir.as_deref())?;
    let mut fetcher = Fetcher::from_env()?;
    fetcher.progress = false;
    let mut changed = Vec::new();
    let mut repos = Opened::new();
    for job in &plan.jobs {
        let ev = Job::new(&job.name, sink);
        let current = lock.get(&job.lock_key).cloned();
        if !update && current.as_ref().is_some_and(|e| e.stale_for(job).is_none()) {
            ev.cached(Stage::Resolve, Some("locked".into()));
            continue;
        }
        let target = target(&set, job)?;
        let mut opts = job.options.clone();
        opts.cache_dir = settings.cache_dir.clone();
        let res = resolve(job, &target, &opts, &fetcher, &cache, None, &mut repos, ev)?;
        if current.as_ref() != Some(&res.entry) {
            if let Some(old) = &current {
                for line in describe_change(old, &res.entry) {
                    ev.note(line);
                }
            }
            lock.set(res.entry);
            changed.push(job.name.clone());
        }
    }
    if !changed.is_empty() || !settings.lock_path.exists() {
        lock.save()?;
    }
    Ok(changed)
}

/// `name old → new` for each package whose version changed, added or removed.
fn describe_change(old: &Entry, new: &Entry) -> Vec<String> {
    let map = |e: &Entry| -> std::collections::BTreeMap<(String, String), String> {
        e.packages
            .iter()
            .map(|p| ((p.name.clone(), p.arch.clone()), p.version.clone()))
            .collect()
    };
    let (o, n) = (map(old), map(new));
    let mut out = Vec::new();
    for (k, v) in &n {
        match o.get(k) {
            Some(ov) if ov != v => out.push(format!("{} {ov} -> {v}", k.0)),
            None => out.push(format!("{} {v} (new)", k.0)),
            _ => {}
        }
    }
    for (k, v) in &o {
        if !n.contains_key(k) {
            out.push(format!("{} {v} (removed)", k.0));
        }
    }
    out
}
