//! The Debian/Ubuntu implementation of the package backend: signed Release + Packages
//! indexes → resolver → safe extraction with the merged-/usr layout → dpkg database →
//! declarative configuration (or, with --run-scripts, the maintainer scripts in a chroot).
//!
//! No code of the target runs on the host by default, so every architecture builds on
//! any host, without root and without qemu.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::configure::{self, order::OrderPkg};
use super::debfile::load_deb;
use super::dpkgdb::{InstalledDeb, write_database};
use super::index::{self, RepoSpec, Universe};
use super::release::{Keyring, parse_rfc2822};
use super::resolve::Resolver;
use crate::arch::Arch;
use crate::distro::{Distro, InitMode, PackageFormat};
use crate::mirror::Mirror;
use crate::pkg::backend::{InstallReport, Plan, Planned, RepoRequest, Repository, Request};
use crate::pkg::extract::{Attrs, Extractor};

/// Top-level directories that are symlinks into /usr in a merged-/usr system, per arch.
fn merged_usr_links(arch: Arch) -> Vec<&'static str> {
    let mut v = vec!["bin", "sbin", "lib"];
    // The 64-bit dynamic loader lives under /lib64 on these (ld-linux-x86-64.so.2, ld64.so.2).
    if matches!(arch, Arch::X86_64 | Arch::Ppc64le) {
        v.push("lib64");
    }
    v
}

/// A systemd guest is a full Debian system: it needs the Essential/required set (shell,
/// coreutils, dpkg…) that packages may use without declaring it. An agent-init guest runs
/// only the agent as PID 1; every binary it starts declares its libraries, and no
/// maintainer script runs, so the required set would only add size. Running the scripts
/// (--run-scripts) needs dpkg and a shell, so it brings the set back.
pub fn needs_essential(req: &Request) -> bool {
    req.init == InitMode::Systemd || req.run_scripts
}

/// A verified Debian-format repository (one suite, one arch).
pub struct DebRepository {
    pub universe: Universe,
    pub mirror: Mirror,
    pub arch: Arch,
    pub suite: String,
}

/// What `kernel fetch` and `rootfs` need to open a deb repository.
pub struct DebRequest<'a> {
    pub distro: &'a Distro,
    pub arch: Arch,
    pub suite: &'a str,
    pub mirror: Option<&'a str>,
    pub keyrings: &'a [PathBuf],
    pub host_apt_dir: Option<&'a Path>,
    pub fetcher: &'a crate::pkg::fetch::Fetcher,
    pub cache: &'a crate::pkg::cache::Cache,
}

impl DebRepository {
    /// As [`DebRepository::load`], from the generic request.
    pub fn open(req: &RepoRequest<'_>) -> Result<DebRepository> {
        DebRepository::load(&DebRequest {
            distro: req.distro,
            arch: req.arch,
            suite: req.version,
            mirror: req.mirror,
            keyrings: req.keyrings,
            host_apt_dir: req.host_apt_dir,
            fetcher: req.fetcher,
            cache: req.cache,
        })
    }

    /// Resolve the mirror, assemble the keyring (the distro's plus the user's), and load
    /// the signed Release and its Packages indexes.
    pub fn load(req: &DebRequest<'_>) -> Result<DebRepository> {
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
            let data =
                std::fs::read(k).with_context(|| format!("reading keyring {}", k.display()))?;
            keyring.add(&data, &k.display().to_string())?;
        }
        if keyring.is_empty() {
            bail!(
                "no archive keyring for {}: add `keyrings` to its distro.toml or pass --keyring",
                req.distro.name
            );
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let universe = index::load(
            &RepoSpec {
                mirror: &mirror.url,
                suite: req.suite,
                components: &req.distro.components,
                arch: req.arch.debian(),
                keyring: &keyring,
                now,
            },
            req.fetcher,
            req.cache,
        )?;
        Ok(DebRepository {
            universe,
            mirror,
            arch: req.arch,
            suite: req.suite.to_string(),
        })
    }
}

impl Repository for DebRepository {
    fn format(&self) -> PackageFormat {
        PackageFormat::Deb
    }

    fn release(&self) -> String {
        self.suite.clone()
    }

    fn mirrors(&self) -> Vec<String> {
        vec![self.mirror.url.clone()]
    }

    fn verified(&self) -> Vec<String> {
        vec![
            format!("repository {}", self.mirror),
            format!(
                "Release of {} verified, {} packages indexed",
                self.suite,
                self.universe.packages.len()
            ),
        ]
    }

    fn resolve(&self, req: &Request) -> Result<Plan> {
        let resolver = Resolver::new(&self.universe, self.arch.debian());
        let res = resolver.resolve(&req.roots, needs_essential(req))?;
        // Install in the order apt hands the archives to dpkg: it decides which package's
        // files win where two ship the same path, and the order of trigger interests.
        let order: Vec<OrderPkg> = res
            .packages
            .iter()
            .map(|&i| order_pkg(&self.universe.packages[i]))
            .collect();
        Ok(Plan {
            packages: configure::unpack_order(&order)
                .into_iter()
                .map(|k| {
                    let i = res.packages[k];
                    Planned {
                        package: self.universe.packages[i].package_ref(),
                        id: i,
                    }
                })
                .collect(),
            notes: Vec::new(),
        })
    }

    fn default_mtime(&self, _plan: &Plan) -> i64 {
        self.universe
            .release
            .date
            .as_deref()
            .and_then(|d| parse_rfc2822(d).ok())
            .unwrap_or(0)
    }

    fn install(
        &self,
        ex: &mut Extractor,
        req: &Request,
        plan: &Plan,
        files: &[PathBuf],
        mtime: i64,
    ) -> Result<InstallReport> {
        let root = ex.root().to_path_buf();
        let dir = Attrs::root(0o755, mtime);
        ex.create_dir(b"usr", dir)?;
        for l in merged_usr_links(self.arch) {
            ex.create_dir(format!("usr/{l}").as_bytes(), dir)?;
            ex.symlink(
                l.as_bytes(),
                format!("usr/{l}").as_bytes(),
                Attrs::root(0o777, mtime),
            )?;
        }
        let installed = install_all(ex, plan, files)?;
        // Other multilib loaders' folders, where a package put one under /usr.
        for l in ["lib32", "libx32", "lib64", "libo32"] {
            let usr = root.join("usr").join(l);
            let top = root.join(l);
            if usr.is_dir() && std::fs::symlink_metadata(&top).is_err() {
                ex.symlink(
                    l.as_bytes(),
                    format!("usr/{l}").as_bytes(),
                    Attrs::root(0o777, mtime),
                )?;
            }
        }
        let status = if req.run_scripts {
            "unpacked"
        } else {
            "installed"
        };
        write_database(ex, &installed, self.arch.debian(), status, mtime)?;
        let mode = if req.run_scripts {
            configure::Mode::UnpackOnly
        } else {
            configure::Mode::Full
        };
        let report = configure::configure(ex, &installed, self.arch, mtime, mode)?;
        Ok(InstallReport {
            not_reproduced: report.not_reproduced,
            ..Default::default()
        })
    }

    fn plan_notes(
        &self,
        plan: &Plan,
        cache: &crate::pkg::cache::Cache,
    ) -> Result<(std::collections::BTreeMap<String, Vec<String>>, usize)> {
        let mut notes = std::collections::BTreeMap::new();
        let mut unchecked = 0;
        for p in &plan.packages {
            let Some(path) = cache.lookup(&p.package.digest)? else {
                unchecked += 1;
                continue;
            };
            let origin = format!("{} {}", p.package.name, p.package.version);
            let control = super::debfile::load_control(&path, &origin)?;
            let n = configure::scan(&control.members);
            if !n.is_empty() {
                notes.insert(p.package.name.clone(), n);
            }
        }
        Ok((notes, unchecked))
    }

    fn post_install(&self, root: &Path, req: &Request) -> Result<()> {
        if req.run_scripts {
            run_maintainer_scripts(root)?;
        }
        Ok(())
    }
}

/// What ordering needs from an index entry (names only: the plan is consistent).
fn order_pkg(p: &super::index::DebPackage) -> OrderPkg {
    let names = |v: &str| -> Vec<Vec<String>> {
        super::resolve::parse_depends(v)
            .unwrap_or_default()
            .into_iter()
            .map(|alts| alts.into_iter().map(|d| d.name).collect())
            .collect()
    };
    let pre = names(&p.pre_depends);
    let dep = names(&p.depends);
    OrderPkg {
        name: p.name.clone(),
        essential: p.essential,
        priority: p.priority.clone(),
        control_depends: pre.iter().chain(&dep).cloned().collect(),
        pre_depends: pre,
        depends: dep,
        provides: p.provides.iter().map(|(n, _)| n.clone()).collect(),
        has_postinst: false,
    }
}

/// Decompress packages on worker threads, a window at a time, and extract them in order on
/// this one (order matters when packages replace each other's files).
fn install_all(ex: &mut Extractor, plan: &Plan, files: &[PathBuf]) -> Result<Vec<InstalledDeb>> {
    let jobs = crate::parallel::cpu_jobs();
    let mut installed = Vec::with_capacity(plan.packages.len());
    let items: Vec<(&Planned, &PathBuf)> = plan.packages.iter().zip(files).collect();
    crate::parallel::ordered(
        &items,
        jobs,
        (jobs * 4).max(8),
        |_, (p, f)| {
            let origin = format!("{} {}", p.package.name, p.package.version);
            load_deb(f, &origin)
        },
        |i, loaded| {
            let p = &items[i].0.package;
            let origin = format!("{} {}", p.name, p.version);
            let files = ex.unpack(&loaded.data_tar[..], &origin)?;
            installed.push(InstalledDeb {
                control: loaded.control,
                files,
            });
            Ok(())
        },
    )?;
    Ok(installed)
}

/// --run-scripts needs root (chroot) and a host that executes the target's binaries.
pub fn check_can_run_scripts(arch: Arch) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
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
