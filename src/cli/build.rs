//! `osbuilder build`: every guest and artifact of a build file, into the stage cache, with
//! the lock file written beside the build file. The flags every build-file command shares
//! live here ([`JobArgs`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use super::render::{Render, mib};
use crate::build::file::{self, BuildFile};
use crate::build::plan::{Only, Plan};
use crate::build::run::{self, Outcome, Settings};

#[derive(clap::Args, Debug, Clone)]
pub struct JobArgs {
    /// The build file
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "osbuilder.toml"
    )]
    pub file: PathBuf,
    /// Build only what matches KEY=VALUE (keys: guest, variant, arch, artifact, distro);
    /// repeat a key for alternatives, give several keys to narrow down
    #[arg(long, value_name = "KEY=VALUE")]
    pub only: Vec<String>,
    /// Build exactly the packages of the lock file (offline when the cache holds them);
    /// fail rather than resolve or change it
    #[arg(long)]
    pub locked: bool,
    /// The lock file [default: the build file's name with .lock, e.g. osbuilder.lock]
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,
    /// Download and stage cache (default $OSBUILDER_CACHE_DIR, $XDG_CACHE_HOME/osbuilder,
    /// ~/.cache/osbuilder)
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// One JSON event per line on stdout (stage start/finish, artifacts, warnings, errors,
    /// a final summary) instead of progress bars
    #[arg(long)]
    pub json: bool,
}

impl JobArgs {
    /// Load and check the build file (every refusal before any work).
    pub fn plan(&self) -> Result<Plan> {
        let f = BuildFile::load(&self.file)?;
        Plan::new(f, &Only::parse(&self.only)?)
    }

    pub fn settings(&self) -> Settings {
        Settings {
            cache_dir: self.cache_dir.clone(),
            lock_path: self
                .lock
                .clone()
                .unwrap_or_else(|| file::default_lock_path(&self.file)),
            locked: self.locked,
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Builds every guest × variant × arch of the build file and packs its \
artifacts into the stage cache (CACHE/stages), reusing what an earlier build made: a rootfs is \
rebuilt only when its packages or provisioning inputs change, an artifact only when its rootfs or \
packer options do. The packages are pinned in the lock file beside the build file (written when \
a guest is first resolved). `osbuilder release -o DIR` does the same and writes Kata's release \
tree. Schema and examples: docs/release.md, examples/osbuilder.toml.\n\n\
Examples:\n  osbuilder build -f examples/osbuilder.toml\n  \
osbuilder build --only arch=aarch64 --only artifact=image --locked"
)]
pub struct Args {
    #[command(flatten)]
    pub job: JobArgs,
}

pub fn run(a: Args) -> Result<()> {
    let render = Render::new(a.job.json);
    let result = (|| {
        let plan = a.job.plan()?;
        let outcome = run::run(&plan, &a.job.settings(), &render)?;
        summary(&render, &outcome, None);
        Ok(())
    })();
    if let Err(e) = &result {
        render.error(e);
    }
    result
}

/// The closing table (or `summary` event): each artifact, its size, digest and pack time.
pub fn summary(render: &Render, outcome: &Outcome, release: Option<&crate::release::Written>) {
    render.clear();
    let total = render.started.elapsed().as_secs_f64();
    if render.json() {
        let artifacts: Vec<serde_json::Value> = outcome
            .artifacts
            .iter()
            .map(|b| {
                let info = b.entry.meta.files.get(&b.job.file_name);
                serde_json::json!({
                    "artifact": b.job.name(),
                    "size": info.map(|i| i.size),
                    "sha256": info.map(|i| i.sha256.clone()),
                    "cached": b.cached,
                    "seconds": b.seconds,
                    "stage": b.entry.path.display().to_string(),
                })
            })
            .collect();
        render.json_line(&serde_json::json!({
            "event": "summary",
            "artifacts": artifacts,
            "release": release.map(|r| r.dir.display().to_string()),
            "files": release.map(|r| r.files.len()),
            "downloaded": outcome.downloaded,
            "seconds": total,
        }));
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{:<48} {:>11}  {:<12}  {:>8}",
        "artifact", "size", "sha256", "time"
    );
    for b in &outcome.artifacts {
        let info = b.entry.meta.files.get(&b.job.file_name);
        let time = if b.cached {
            "cached".to_string()
        } else {
            format!("{:.1} s", b.seconds)
        };
        let _ = writeln!(
            out,
            "{:<48} {:>11}  {:<12}  {:>8}",
            b.job.name(),
            info.map(|i| mib(i.size)).unwrap_or_default(),
            info.map(|i| i.sha256[..12].to_string()).unwrap_or_default(),
            time
        );
    }
    let packed = outcome.artifacts.iter().filter(|b| !b.cached).count();
    match release {
        Some(r) => {
            let _ = writeln!(
                out,
                "release {}: {} files; {packed} of {} artifacts packed, {} downloaded, {total:.1} s",
                r.dir.display(),
                r.files.len(),
                outcome.artifacts.len(),
                mib(outcome.downloaded)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{packed} of {} artifacts packed, {} downloaded, {total:.1} s (stage cache: `osbuilder cache ls`)",
                outcome.artifacts.len(),
                mib(outcome.downloaded)
            );
        }
    }
}
