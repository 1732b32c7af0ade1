//! `osbuilder cache ls|gc`: what the stage cache holds, and removing what is no longer used.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::Subcommand;

use super::render::mib;
use crate::build::stage::Stages;
use crate::pkg::cache::Cache;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// List the stage cache's rootfs trees and artifacts (key, size, last use, job)
    Ls {
        /// The cache folder (default as for `osbuilder build`)
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// One JSON object per entry
        #[arg(long)]
        json: bool,
    },
    /// Remove stage entries not used for a while (refused while a build is running)
    #[command(
        after_help = "Downloads are kept unless --downloads is given. Examples:\n  \
osbuilder cache gc                      # entries unused for 30 days\n  \
osbuilder cache gc --older-than 0       # every stage entry\n  \
osbuilder cache gc --all --downloads    # everything"
    )]
    Gc {
        /// The cache folder (default as for `osbuilder build`)
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Remove entries last used more than this many days ago
        #[arg(long, value_name = "DAYS", default_value_t = 30)]
        older_than: u64,
        /// Remove every stage entry
        #[arg(long)]
        all: bool,
        /// Also remove downloaded packages and indexes fetched more than --older-than days
        /// ago (all of them with --all)
        #[arg(long)]
        downloads: bool,
    },
}

fn age(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .unwrap_or_default()
        .as_secs();
    match s {
        0..120 => format!("{s} s ago"),
        120..7200 => format!("{} min ago", s / 60),
        7200..172800 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        CacheCommand::Ls { cache_dir, json } => {
            let cache = Cache::open(cache_dir.as_deref())?;
            let stages = Stages::open(&cache)?;
            let list = stages.list();
            let mut total = 0;
            for (e, used, size) in &list {
                total += size;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "kind": e.meta.kind, "key": e.meta.key, "job": e.meta.job,
                            "bytes": size, "path": e.path.display().to_string(),
                            "last_used": used.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                        })
                    );
                } else {
                    println!(
                        "{:<9} {}  {:>11}  {:<14} {}",
                        format!("{:?}", e.meta.kind).to_lowercase(),
                        &e.meta.key[..12],
                        mib(*size),
                        age(*used),
                        e.meta.job
                    );
                }
            }
            if !json {
                println!(
                    "{} entries, {} in {}",
                    list.len(),
                    mib(total),
                    stages.dir().display()
                );
            }
            Ok(())
        }
        CacheCommand::Gc {
            cache_dir,
            older_than,
            all,
            downloads,
        } => {
            let cache = Cache::open(cache_dir.as_deref())?;
            let stages = Stages::open_exclusive(&cache)?;
            let cutoff =
                (!all).then(|| SystemTime::now() - Duration::from_secs(older_than * 86400));
            let (n, bytes) = stages.gc(cutoff)?;
            println!("removed {n} stage entries ({})", mib(bytes));
            if downloads {
                let (n, bytes) = cache.gc(cutoff)?;
                println!("removed {n} downloaded files ({})", mib(bytes));
            }
            Ok(())
        }
    }
}
