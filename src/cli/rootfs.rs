use std::path::PathBuf;

use anyhow::Result;

use crate::arch::Arch;
use crate::distro::{DistroSet, InitMode, PackageFormat};
use crate::matrix::{Matrix, Request};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  osbuilder rootfs --distro alpine --agent-init -o rootfs/ --mirror URL\n  \
osbuilder rootfs --distro alpine --agent-init --arch aarch64 --os-version edge --dry-run"
)]
pub struct Args {
    /// Distro to build (see `osbuilder matrix`)
    #[arg(long, default_value = "debian")]
    distro: String,
    /// Target architecture (default: the host's)
    #[arg(long)]
    arch: Option<Arch>,
    /// Init mode: systemd or agent-init (default: the distro's)
    #[arg(long)]
    init: Option<InitMode>,
    /// The agent is PID 1 (same as --init agent-init)
    #[arg(long, conflicts_with = "init")]
    agent_init: bool,
    /// Distro release (Alpine: 3.22 or edge)
    #[arg(long)]
    os_version: Option<String>,
    /// Packages added to the distro's list (space or comma separated; repeatable)
    #[arg(long)]
    extra_pkgs: Vec<String>,
    /// Replace the distro's package list (space or comma separated; repeatable)
    #[arg(long)]
    packages: Vec<String>,
    /// Repository mirror root (else $OSBUILDER_MIRROR, else distro.toml)
    #[arg(long)]
    mirror: Option<String>,
    /// More trusted apk keys (*.rsa.pub) for Alpine (repeatable)
    #[arg(long)]
    keys_dir: Vec<PathBuf>,
    /// Download cache folder (else $OSBUILDER_CACHE_DIR, else ~/.cache/osbuilder)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Resolve and print `name version arch size` per package; write nothing
    #[arg(long)]
    dry_run: bool,
    /// Output rootfs folder
    #[arg(short, long)]
    output: Option<PathBuf>,
}

fn split_list(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split([',', ' ']))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

pub fn run(a: Args) -> Result<()> {
    let set = DistroSet::load()?;
    let arch = super::arch_or_host(a.arch)?;
    let init = if a.agent_init {
        Some(InitMode::AgentInit)
    } else {
        a.init
    };
    let target = Matrix::new(&set).check(&Request {
        distro: &a.distro,
        arch,
        init,
    })?;
    let d = target.distro;
    let mut packages = if a.packages.is_empty() {
        d.package_set(arch, target.init)
    } else {
        split_list(&a.packages)
    };
    packages.extend(split_list(&a.extra_pkgs));
    let mirror = crate::mirror::resolve(
        a.mirror.as_deref(),
        d,
        arch,
        std::path::Path::new("/etc/apt"),
        crate::mirror::host_is_debian(),
    );
    match d.package_format {
        PackageFormat::Apk => {
            let Ok(mirror) = mirror else {
                return Err(super::UsageError(format!(
                    "no mirror for {}: pass --mirror URL (laid out as URL/v<version>/main/<arch>/APKINDEX.tar.gz), \
                     set $OSBUILDER_MIRROR, or set mirror.default in distros/{}/distro.toml",
                    d.name, d.name
                ))
                .into());
            };
            eprintln!("mirror: {mirror}");
            let opts = crate::pkg::apk::install::Options {
                arch,
                version: a
                    .os_version
                    .clone()
                    .unwrap_or_else(|| d.default_version.clone()),
                mirror: mirror.url,
                packages,
                keys_dirs: a.keys_dir.clone(),
                cache_dir: a.cache_dir.clone(),
                source_date_epoch: crate::tree::source_date_epoch()?,
                init: target.init.to_string(),
            };
            crate::pkg::apk::install::run(d, &opts, a.output.as_deref(), a.dry_run)
        }
        other => anyhow::bail!("the native {other:?} backend is not on this branch"),
    }
}
