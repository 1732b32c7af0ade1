//! The native Debian/Ubuntu backend: verified repository → resolver → parallel cached
//! downloads → safe extraction with the merged-/usr layout → dpkg database → declarative
//! configuration (or, with --run-scripts, the maintainer scripts in a chroot).
//!
//! No code of the target runs on the host by default, so every architecture builds on
//! any host, without root and without qemu.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::Options;
use crate::arch::Arch;
use crate::distro::{Distro, InitMode};
use crate::matrix::Target;
use crate::mirror::Mirror;
use crate::output::{DirKind, StagedDir};
use crate::pkg::PackageRef;
use crate::pkg::cache::Cache;
use crate::pkg::deb::configure::configure;
use crate::pkg::deb::debfile::{LoadedDeb, load_deb};
use crate::pkg::deb::dpkgdb::{InstalledDeb, write_database};
use crate::pkg::deb::index::{self, RepoSpec, Universe};
use crate::pkg::deb::release::{Keyring, parse_rfc2822};
use crate::pkg::deb::resolve::Resolver;
use crate::pkg::extract::{Attrs, ExtractOptions, Extractor};
use crate::pkg::fetch::Fetcher;
use crate::pkg::record::{PackageRecord, installed_packages};

/// Top-level directories that are symlinks into /usr in a merged-/usr system, per arch.
fn merged_usr_links(arch: Arch) -> Vec<&'static str> {
    let mut v = vec!["bin", "sbin", "lib"];
    // The 64-bit dynamic loader lives under /lib64 on these (ld-linux-x86-64.so.2, ld64.so.2).
    if matches!(arch, Arch::X86_64 | Arch::Ppc64le) {
        v.push("lib64");
    }
    v
}

/// The packages to install: `--packages` replaces the distro's set for the init mode,
/// `--extra-pkgs` adds to it.
pub fn requested_packages(target: &Target<'_>, opts: &Options) -> Vec<String> {
    let mut roots = match &opts.packages {
        Some(p) => p.clone(),
        None => {
            let mut v = target.distro.package_set(target.arch, target.init);
            if target.init == InitMode::AgentInit {
                // No Essential set in agent-init mode (see `needs_essential`), but the guest
                // still needs /etc/os-release and the system users' master files.
                v.extend(["base-files".to_string(), "base-passwd".to_string()]);
            }
            v
        }
    };
    roots.extend(opts.extra_pkgs.iter().cloned());
    let mut seen = std::collections::HashSet::new();
    roots.retain(|r| !r.trim().is_empty() && seen.insert(r.clone()));
    roots
}

/// A systemd guest is a full Debian system: it needs the Essential/required set (shell,
/// coreutils, dpkg…) that packages may use without declaring it. An agent-init guest runs
/// only the agent as PID 1; every binary it starts declares its libraries, and no
/// maintainer script runs, so the required set would only add size. Running the scripts
/// (--run-scripts) needs dpkg and a shell, so it brings the set back.
pub fn needs_essential(target: &Target<'_>, opts: &Options) -> bool {
    target.init == InitMode::Systemd || opts.run_scripts
}

pub fn build(
    target: &Target<'_>,
    opts: &Options,
    provisioning: Option<super::Provisioning>,
) -> Result<()> {
    let start = Instant::now();
    let distro = target.distro;
    let arch = target.arch;
    let suite = opts
        .os_version
        .clone()
        .unwrap_or_else(|| distro.default_version.clone());
    if opts.run_scripts {
        check_can_run_scripts(arch)?;
    }
    eprintln!(
        "osbuilder: {} {suite} {} ({})",
        distro.name,
        arch.debian(),
        target.init
    );
    let repo = open_repository(&RepoRequest {
        distro,
        arch,
        suite: &suite,
        mirror: opts.mirror.as_deref(),
        keyrings: &opts.keyrings,
        cache_dir: opts.cache_dir.as_deref(),
        host_apt_dir: opts.host_apt_dir.as_deref(),
    })?;
    let Repository {
        universe,
        mirror,
        fetcher,
        cache,
    } = repo;
    let resolver = Resolver::new(&universe, arch.debian());
    let roots = requested_packages(target, opts);
    let plan = resolver.resolve(&roots, needs_essential(target, opts))?;
    let pkgs: Vec<_> = plan
        .packages
        .iter()
        .map(|&i| universe.packages[i].package_ref())
        .collect();

    if opts.dry_run {
        let mut out = std::io::stdout().lock();
        for p in &pkgs {
            writeln!(out, "{} {} {} {}", p.name, p.version, p.arch, p.size)?;
        }
        let total: u64 = pkgs.iter().map(|p| p.size).sum();
        eprintln!(
            "osbuilder: {} packages, {:.1} MiB to download (dry run: nothing fetched)",
            pkgs.len(),
            total as f64 / 1048576.0
        );
        return Ok(());
    }

    let files = fetcher.fetch_packages(&cache, &pkgs)?;
    let fetched = start.elapsed();

    let mtime = match crate::tree::source_date_epoch()? {
        Some(t) => t,
        None => universe
            .release
            .date
            .as_deref()
            .and_then(|d| parse_rfc2822(d).ok())
            .unwrap_or(0),
    };
    let staged = StagedDir::create(&opts.output, DirKind::Rootfs, opts.force)?;
    let mut ex = Extractor::new(staged.path(), ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    let dir = Attrs::root(0o755, mtime);
    ex.create_dir(b"usr", dir)?;
    for l in merged_usr_links(arch) {
        ex.create_dir(format!("usr/{l}").as_bytes(), dir)?;
        ex.symlink(
            l.as_bytes(),
            format!("usr/{l}").as_bytes(),
            Attrs::root(0o777, mtime),
        )?;
    }
    let installed = install_all(&mut ex, &pkgs, &files)?;
    // Other multilib loaders' folders, where a package put one under /usr.
    for l in ["lib32", "libx32", "lib64", "libo32"] {
        let usr = staged.path().join("usr").join(l);
        let top = staged.path().join(l);
        if usr.is_dir() && std::fs::symlink_metadata(&top).is_err() {
            ex.symlink(
                l.as_bytes(),
                format!("usr/{l}").as_bytes(),
                Attrs::root(0o777, mtime),
            )?;
        }
    }
    let status = if opts.run_scripts {
        "unpacked"
    } else {
        "installed"
    };
    write_database(&mut ex, &installed, arch.debian(), status, mtime)?;
    configure(&mut ex, &installed, mtime)?;
    let mtree = ex.finish()?;
    if opts.run_scripts {
        run_maintainer_scripts(staged.path())?;
    }

    let record = PackageRecord {
        schema: 1,
        distro: distro.name.clone(),
        version: suite.clone(),
        arch: arch.debian().to_string(),
        init: target.init.to_string(),
        mirrors: vec![mirror.url.clone()],
        packages: installed_packages(&pkgs, &files)?,
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
            packages: pkgs.len(),
        },
    )?;
    Ok(())
}

/// What to open: a deb distro's repository for one arch and suite.
pub struct RepoRequest<'a> {
    pub distro: &'a Distro,
    pub arch: Arch,
    pub suite: &'a str,
    pub mirror: Option<&'a str>,
    pub keyrings: &'a [PathBuf],
    pub cache_dir: Option<&'a Path>,
    pub host_apt_dir: Option<&'a Path>,
}

/// A verified repository index, with the means to fetch its packages.
pub struct Repository {
    pub universe: Universe,
    pub mirror: Mirror,
    pub fetcher: Fetcher,
    pub cache: Cache,
}

/// Resolve the mirror, assemble the keyring (the distro's plus the user's), and load the
/// signed Release and its Packages indexes. Shared by `rootfs` and `kernel fetch`.
pub fn open_repository(req: &RepoRequest<'_>) -> Result<Repository> {
    let apt_dir = req.host_apt_dir.unwrap_or(Path::new("/etc/apt"));
    let mirror = crate::mirror::resolve(
        req.mirror,
        req.distro,
        req.arch,
        apt_dir,
        crate::mirror::host_is_debian(),
    )?;
    let mut keyring = Keyring::default();
    for k in &req.distro.keyrings {
        keyring.add(req.distro.file(k).unwrap_or_default(), k)?;
    }
    for k in req.keyrings {
        let data = std::fs::read(k).with_context(|| format!("reading keyring {}", k.display()))?;
        keyring.add(&data, &k.display().to_string())?;
    }
    if keyring.is_empty() {
        bail!(
            "no archive keyring for {}: add `keyrings` to its distro.toml or pass --keyring",
            req.distro.name
        );
    }
    let cache = Cache::open(req.cache_dir)?;
    let fetcher = Fetcher::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    eprintln!("osbuilder: repository {mirror}");
    let universe = index::load(
        &RepoSpec {
            mirror: &mirror.url,
            suite: req.suite,
            components: &req.distro.components,
            arch: req.arch.debian(),
            keyring: &keyring,
            now,
        },
        &fetcher,
        &cache,
    )?;
    Ok(Repository {
        universe,
        mirror,
        fetcher,
        cache,
    })
}

/// Decompress packages on worker threads, a batch at a time, and extract them in order on
/// this one (order matters when packages replace each other's files).
fn install_all(
    ex: &mut Extractor,
    pkgs: &[PackageRef],
    files: &[PathBuf],
) -> Result<Vec<InstalledDeb>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let batch = (workers * 4).max(8);
    let mut installed = Vec::with_capacity(pkgs.len());
    let items: Vec<(&PackageRef, &PathBuf)> = pkgs.iter().zip(files).collect();
    for chunk in items.chunks(batch) {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let slots: Vec<std::sync::Mutex<Option<Result<LoadedDeb>>>> =
            chunk.iter().map(|_| std::sync::Mutex::new(None)).collect();
        std::thread::scope(|s| {
            for _ in 0..workers.min(chunk.len()) {
                s.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((p, f)) = chunk.get(i) else { break };
                        let origin = format!("{} {}", p.name, p.version);
                        *slots[i].lock().unwrap() = Some(load_deb(f, &origin));
                    }
                });
            }
        });
        for ((p, _), slot) in chunk.iter().zip(slots) {
            let loaded = slot.into_inner().unwrap().expect("every slot is filled")?;
            let origin = format!("{} {}", p.name, p.version);
            let files = ex.unpack(&loaded.data_tar[..], &origin)?;
            installed.push(InstalledDeb {
                control: loaded.control,
                files,
            });
        }
    }
    Ok(installed)
}

/// --run-scripts needs root (chroot) and a host that executes the target's binaries.
fn check_can_run_scripts(arch: Arch) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "--run-scripts runs maintainer scripts in a chroot and needs root; drop it for a rootless build"
        );
    }
    for (tool, pkg) in [
        ("unshare", "util-linux"),
        ("chroot", "coreutils"),
        ("mount", "mount"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false);
        if !found {
            bail!("--run-scripts needs `{tool}` (Debian package {pkg})");
        }
    }
    if Arch::host() == Some(arch) {
        return Ok(());
    }
    let q = arch.qemu().binary.replace("qemu-system-", "qemu-");
    let entry = Path::new("/proc/sys/fs/binfmt_misc").join(&q);
    if !entry.exists() {
        bail!(
            "--run-scripts for {} on this {} host needs qemu-user through binfmt_misc ({} is missing): \
             apt-get install qemu-user-static binfmt-support, or drop --run-scripts",
            arch.name(),
            std::env::consts::ARCH,
            entry.display()
        );
    }
    Ok(())
}

fn run_maintainer_scripts(root: &Path) -> Result<()> {
    // In a private mount namespace, so /proc, /sys and /dev are seen by the scripts and
    // vanish with the namespace; nothing is left mounted in the rootfs.
    let script = r#"set -e
r=$1
for d in proc sys dev; do mkdir -p "$r/$d"; done
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys"
mount --rbind /dev "$r/dev"
exec chroot "$r" /usr/bin/dpkg --configure -a"#;
    let mut cmd = crate::process::command("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        script,
        "sh",
    ])
    .arg(root)
    .env_clear()
    .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    .env("DEBIAN_FRONTEND", "noninteractive")
    .env("LC_ALL", "C");
    let st = crate::process::status(&mut cmd)
        .context("running unshare and chroot (util-linux, coreutils)")?;
    if !st.success() {
        bail!("dpkg --configure -a in the new rootfs failed ({st})");
    }
    Ok(())
}
