//! The rpm implementation of the package backend (Clear Linux, Azure Linux): verified
//! rpm-md repositories → resolver → packages verified (header signatures against the
//! distro's pinned keys, header digests, payload digest, every file's digest) and streamed
//! safely into the root → rpm's sqlite database. Scriptlets are never run: they are
//! named in the plan (`--dry-run`, from each package's signed header, read alone with a
//! range request up to primary.xml's `header-range` end) and in the build log, `<lua>`
//! ones too, and what a guest needs from them is made declaratively (device nodes for an
//! initrd). Nothing from the target runs on the host.
//!
//! Trust chain: `repomd.xml` (its detached `repomd.xml.asc` must verify against the
//! distro's metadata keys where the distro signs it, `repo_gpgcheck`) → the checksums of
//! primary/filelists → each package's checksum → the package's own header signature.
//! A distro that publishes unsigned packages says so in its distro.toml; the build then
//! warns and osbuilder.yaml records it. Otherwise an unsigned package is refused unless
//! the user passes `--allow-unsigned`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::install::{self, Accounts, Owners};
use super::package::{Meta, RpmFile};
use super::repomd::{self, RepoPackage};
use super::resolve::{self, Universe};
use super::verify::{self, HeadCheck};
use crate::arch::Arch;
use crate::distro::{Distro, PackageFormat, RpmConfig};
use crate::pkg::PackageRef;
use crate::pkg::backend::{InstallReport, Plan, Planned, RepoRequest, Repository, Request};
use crate::pkg::cache::Cache;
use crate::pkg::extract::{Attrs, Extractor};
use crate::pkg::fetch::{FetchError, Fetcher, join_url, required};
use crate::pkg::openpgp::{Keyring, parse_signatures, verify_detached};

/// One repository whose metadata verified.
pub struct RepoInfo {
    pub base: String,
    /// The key that signed repomd.xml (None: the distro does not sign it).
    pub signed_by: Option<String>,
    pub revision: Option<String>,
}

/// The verified repositories of an rpm distro release.
pub struct RpmRepository {
    distro: Distro,
    cfg: RpmConfig,
    arch: Arch,
    version: String,
    repos: Vec<RepoInfo>,
    universe: Universe,
    /// For each package of the universe: its repository.
    repo_of: Vec<usize>,
    package_keys: Keyring,
    allow_unsigned: bool,
    /// For the plan's package headers (`--dry-run`).
    fetcher: Fetcher,
}

/// The distro's key files plus the user's, checked against the pinned fingerprints.
fn keyring(
    distro: &Distro,
    cfg: &RpmConfig,
    files: &[String],
    extra: &[PathBuf],
) -> Result<Keyring> {
    let mut k = Keyring::default();
    for f in files {
        let mut one = Keyring::default();
        one.add(
            distro.file(f).unwrap_or_default(),
            &format!("distros/{}/{f}", distro.name),
        )?;
        if !cfg.fingerprints.is_empty() {
            for fp in one.fingerprints() {
                if !cfg.fingerprints.iter().any(|p| p.eq_ignore_ascii_case(&fp)) {
                    bail!(
                        "distros/{}/{f} holds key {fp}, which is not one of the fingerprints \
                         pinned in its distro.toml; refusing it",
                        distro.name
                    );
                }
            }
        }
        k.add(distro.file(f).unwrap_or_default(), f)?;
    }
    for p in extra {
        let data = std::fs::read(p).with_context(|| format!("reading key {}", p.display()))?;
        k.add(&data, &p.display().to_string())?;
    }
    Ok(k)
}

/// The release number `latest` stands for, read from `MIRROR/<latest_file>`.
fn resolve_version(
    cfg: &RpmConfig,
    version: &str,
    mirror: &str,
    fetcher: &Fetcher,
) -> Result<String> {
    let v = version.trim();
    match (&cfg.latest_file, v) {
        (Some(file), "latest") => {
            let url = join_url(mirror, file);
            let text = required(fetcher.get(&url))
                .with_context(|| format!("reading the latest release number from {url}"))?;
            let n = String::from_utf8_lossy(&text).trim().to_string();
            if n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.') {
                bail!("{url} does not hold a release number (got {n:?}); pass --os-version");
            }
            Ok(n)
        }
        _ => {
            if v.is_empty() || v.contains('/') || v.contains("..") {
                bail!("'{version}' is not a release (pass --os-version, e.g. 3.0)");
            }
            Ok(v.to_string())
        }
    }
}

/// Fetch a repodata file through the cache, checked against repomd's checksum.
fn fetch_data(
    fetcher: &Fetcher,
    cache: &Cache,
    base: &str,
    d: &repomd::DataFile,
) -> Result<PathBuf> {
    if let Some(p) = cache.lookup(&d.checksum)? {
        return Ok(p);
    }
    let url = join_url(base, &d.location);
    let data = required(fetcher.get(&url)).with_context(|| format!("fetching {url}"))?;
    cache
        .insert_bytes(&d.checksum, &data)
        .with_context(|| format!("{url} does not match the checksum in repomd.xml"))
}

impl RpmRepository {
    /// Resolve the mirror and release, load and verify every repository's metadata.
    pub fn open(req: &RepoRequest<'_>) -> Result<RpmRepository> {
        let distro = req.distro;
        let cfg = distro
            .rpm
            .clone()
            .with_context(|| format!("distros/{}/distro.toml has no [rpm] table", distro.name))?;
        let mirror = crate::mirror::resolve(
            req.mirror,
            distro,
            req.arch,
            std::path::Path::new("/etc/apt"),
            false,
        )
        .map_err(|_| {
            crate::error::refused(format!(
                "no mirror for {}: pass --mirror URL (laid out as URL/{}/repodata/repomd.xml), \
                 set $OSBUILDER_MIRROR, or set mirror.default in distros/{}/distro.toml",
                distro.name,
                cfg.repos
                    .first()
                    .map(|r| r
                        .replace("{version}", req.version)
                        .replace("{arch}", req.arch.rpm()))
                    .unwrap_or_default(),
                distro.name
            ))
        })?;
        eprintln!("osbuilder: repository {mirror}");
        let version = resolve_version(&cfg, req.version, &mirror.url, req.fetcher)?;
        let package_keys = keyring(distro, &cfg, &cfg.package_keys, req.keyrings)?;
        let metadata_keys = keyring(distro, &cfg, &cfg.metadata_keys, req.keyrings)?;
        let arch_name = req.arch.rpm();
        let mut repos = Vec::new();
        let mut packages: Vec<RepoPackage> = Vec::new();
        let mut repo_of = Vec::new();
        let mut filelists = Vec::new();
        for template in &cfg.repos {
            let rel = template
                .replace("{version}", &version)
                .replace("{arch}", arch_name);
            let base = join_url(&mirror.url, &rel);
            let md_url = join_url(&base, "repodata/repomd.xml");
            let md_bytes = match req.fetcher.get(&md_url) {
                Ok(b) => b,
                Err(FetchError::NotFound(_)) => bail!(
                    "{md_url} not found: release '{version}' or arch {arch_name} is not on this \
                     mirror (a repository is laid out as MIRROR/{template}/repodata/repomd.xml)"
                ),
                Err(e) => return Err(anyhow::Error::from(e)),
            };
            let signed_by = if cfg.repo_gpgcheck {
                let asc_url = format!("{md_url}.asc");
                let asc = required(req.fetcher.get(&asc_url)).with_context(|| {
                    format!(
                        "{} signs its repository metadata (repo_gpgcheck) but {asc_url} could \
                         not be fetched; refusing unsigned metadata",
                        distro.pretty_name
                    )
                })?;
                if metadata_keys.is_empty() {
                    bail!(
                        "no metadata keys for {}: add metadata_keys to its distro.toml or pass --keyring",
                        distro.name
                    );
                }
                let sigs = parse_signatures(&asc, "repomd.xml.asc")?;
                Some(verify_detached(&metadata_keys, &sigs, &md_bytes, &md_url)?)
            } else {
                None
            };
            let md = repomd::parse_repomd(&md_bytes).with_context(|| md_url.clone())?;
            let primary = md
                .get("primary")
                .with_context(|| format!("{md_url} lists no primary metadata"))?;
            let file = fetch_data(req.fetcher, req.cache, &base, primary)?;
            let r = repos.len();
            let what = join_url(&base, &primary.location);
            let raw = std::fs::File::open(&file)?;
            repomd::parse_primary(repomd::decompress(raw)?, &what, &mut |p| {
                // Installable here: the target's arch and noarch; anything else is left
                // out rather than installed on the wrong machine.
                if p.arch == arch_name || p.arch == "noarch" {
                    packages.push(p);
                    repo_of.push(r);
                }
                Ok(())
            })?;
            if let Some(fl) = md.get("filelists") {
                filelists.push((base.clone(), fl.clone()));
            }
            repos.push(RepoInfo {
                base,
                signed_by,
                revision: md.revision.clone(),
            });
        }
        let mut universe = Universe::new(packages);
        // File requires that primary's file subset does not answer: read the full lists.
        let missing = universe.unanswered_file_requires();
        if !missing.is_empty() {
            let by_id: BTreeMap<String, usize> = universe
                .packages
                .iter()
                .enumerate()
                .filter_map(|(i, p)| p.checksum.as_ref().map(|c| (c.hex().to_string(), i)))
                .collect();
            for (base, fl) in &filelists {
                let file = fetch_data(req.fetcher, req.cache, base, fl)?;
                let raw = std::fs::File::open(&file)?;
                let mut found = Vec::new();
                repomd::parse_filelists(
                    repomd::decompress(raw)?,
                    &fl.location,
                    &mut |id, _, _, path| {
                        if missing.contains(path) {
                            if let Some(&i) = by_id.get(id) {
                                found.push((i, path.to_string()));
                            }
                        }
                    },
                )?;
                for (i, p) in found {
                    universe.add_file(i, &p);
                }
            }
        }
        Ok(RpmRepository {
            distro: distro.clone(),
            allow_unsigned: cfg.unsigned_packages || req.allow_unsigned,
            cfg,
            arch: req.arch,
            version,
            repos,
            universe,
            repo_of,
            package_keys,
            fetcher: req.fetcher.clone(),
        })
    }

    fn package_ref(&self, i: usize) -> Result<PackageRef> {
        let p = &self.universe.packages[i];
        let base = p
            .base
            .clone()
            .unwrap_or_else(|| self.repos[self.repo_of[i]].base.clone());
        let digest = p.checksum.clone().with_context(|| {
            format!("{}: primary.xml gives no checksum; refusing it", p.nevra())
        })?;
        Ok(PackageRef {
            name: p.name.clone(),
            version: p.evr.to_string(),
            arch: p.arch.clone(),
            size: p.size,
            url: join_url(&base, &p.location),
            digest,
        })
    }
}

/// A package whose heads verified, read on a worker thread.
struct Checked {
    rpm: RpmFile,
    meta: Meta,
    heads: HeadCheck,
    v3: Vec<verify::GoodSignature>,
}

impl Repository for RpmRepository {
    fn format(&self) -> PackageFormat {
        PackageFormat::Rpm
    }

    fn release(&self) -> String {
        self.version.clone()
    }

    fn mirrors(&self) -> Vec<String> {
        self.repos.iter().map(|r| r.base.clone()).collect()
    }

    fn verified(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .repos
            .iter()
            .map(|r| match &r.signed_by {
                Some(k) => format!(
                    "repomd.xml of {} signed by {k}{}",
                    r.base,
                    r.revision
                        .as_ref()
                        .map(|x| format!(" (revision {x})"))
                        .unwrap_or_default()
                ),
                None => format!(
                    "warning: repomd.xml of {} is not signed ({} does not sign its metadata)",
                    r.base, self.distro.pretty_name
                ),
            })
            .collect();
        v.push(format!(
            "{} packages indexed for {}",
            self.universe.packages.len(),
            self.arch.rpm()
        ));
        v
    }

    fn resolve(&self, req: &Request) -> Result<Plan> {
        let res = resolve::resolve(
            &self.universe,
            &req.roots,
            self.arch.rpm(),
            &self.cfg.install_first,
        )?;
        let packages = res
            .order
            .iter()
            .map(|&i| {
                Ok(Planned {
                    package: self.package_ref(i)?,
                    id: i,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut notes = Vec::new();
        if self.cfg.unsigned_packages {
            notes.push(format!(
                "warning: {} publishes unsigned packages: they are checked against the repository \
                 checksums only, and osbuilder.yaml records that they were installed unsigned",
                self.distro.pretty_name
            ));
        }
        Ok(Plan { packages, notes })
    }

    /// Per package, the scriptlets that will not run (`%post (<lua>)`), from its header:
    /// the cached package when the cache has it, else only the header's bytes (lead,
    /// signature header and header, up to primary.xml's `header-range` end), verified like
    /// an installed package's (its signature and header digests). Packages whose
    /// primary.xml entry gives no header range are counted, not read.
    fn plan_notes(
        &self,
        plan: &Plan,
        cache: &Cache,
    ) -> Result<(BTreeMap<String, Vec<String>>, usize)> {
        let check_sigs = !(self.allow_unsigned && self.package_keys.is_empty());
        let jobs = crate::parallel::cpu_jobs().max(4);
        let read = crate::parallel::map(&plan.packages, jobs, |_, p| {
            let what = format!(
                "{} ({})",
                crate::show::bytes(p.package.name.as_bytes()),
                crate::show::bytes(p.package.url.as_bytes())
            );
            let want = &self.universe.packages[p.id];
            let rpm = match cache.lookup(&p.package.digest)? {
                Some(path) => RpmFile::open(&path, &what)?.0,
                None => {
                    let Some(end) = want.header_end else {
                        return Ok(None);
                    };
                    let head = required(self.fetcher.get_prefix(&p.package.url, end))
                        .with_context(|| format!("{what}: reading its header"))?;
                    RpmFile::read(&mut &head[..], &what)?
                }
            };
            let meta = Meta::from_header(&rpm.header, &what)?;
            if meta.name != want.name
                || meta.evr.cmp_full(&want.evr).is_ne()
                || meta.arch != want.arch
            {
                bail!(
                    "{what}: the header is {} but the repository promised {}",
                    meta.nevra(),
                    want.nevra()
                );
            }
            let keys = check_sigs.then_some(&self.package_keys);
            verify::check_heads(&rpm, keys, self.allow_unsigned, &what)?;
            Ok(Some(
                meta.scriptlets
                    .iter()
                    .map(|s| format!("{} ({}) not run", s.when, s.prog))
                    .collect::<Vec<_>>(),
            ))
        })?;
        let mut notes = BTreeMap::new();
        let mut unchecked = 0;
        for (p, r) in plan.packages.iter().zip(read) {
            match r {
                None => unchecked += 1,
                Some(v) if !v.is_empty() => {
                    notes.insert(p.package.name.clone(), v);
                }
                Some(_) => {}
            }
        }
        Ok((notes, unchecked))
    }

    fn default_mtime(&self, plan: &Plan) -> i64 {
        plan.packages
            .iter()
            .map(|p| self.universe.packages[p.id].build_time)
            .max()
            .unwrap_or(0) as i64
    }

    fn install(
        &self,
        ex: &mut Extractor,
        _req: &Request,
        plan: &Plan,
        files: &[PathBuf],
        mtime: i64,
    ) -> Result<InstallReport> {
        let items: Vec<(&Planned, &PathBuf)> = plan.packages.iter().zip(files).collect();
        // Without any trusted key, a distro that declares unsigned packages cannot check
        // a signature either: the packages count as unsigned.
        let check_sigs = !(self.allow_unsigned && self.package_keys.is_empty());
        let checked = crate::parallel::map(&items, crate::parallel::cpu_jobs(), |_, (p, f)| {
            let what = format!(
                "{} ({})",
                crate::show::bytes(p.package.name.as_bytes()),
                crate::show::bytes(p.package.url.as_bytes())
            );
            let (rpm, _) = RpmFile::open(f, &what)?;
            let meta = Meta::from_header(&rpm.header, &what)?;
            let want = &self.universe.packages[p.id];
            if meta.name != want.name
                || meta.evr.cmp_full(&want.evr).is_ne()
                || meta.arch != want.arch
            {
                bail!(
                    "{what}: the file is {} but the repository promised {}",
                    meta.nevra(),
                    want.nevra()
                );
            }
            let keys = check_sigs.then_some(&self.package_keys);
            let heads =
                verify::check_heads(&rpm, keys, self.allow_unsigned, &what).map_err(|e| {
                    if format!("{e:#}").contains("not signed") {
                        e.context(format!(
                        "{} does not declare unsigned packages; pass --allow-unsigned to install \
                         it anyway",
                        self.distro.pretty_name
                    ))
                    } else {
                        e.context("trust the signing key with --keyring if it is yours")
                    }
                })?;
            let v3 = if heads.needs_v3 {
                let (_, mut payload) = RpmFile::open(f, &what)?;
                verify::check_payload(&rpm, &mut payload, &self.package_keys, &what)?.0
            } else {
                Vec::new()
            };
            Ok(Checked {
                rpm,
                meta,
                heads,
                v3,
            })
        })?;

        let mut owners = Owners::default();
        let mut report = InstallReport::default();
        let mut unsigned = Vec::new();
        let mut signers: BTreeMap<String, usize> = BTreeMap::new();
        let mut unknown: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut caps = Vec::new();
        let mut scriptlets = Vec::new();
        for (c, (_, f)) in checked.iter().zip(&items) {
            let accounts = Accounts::load(ex, &self.cfg.account_dirs)?;
            let what = crate::show::bytes(c.meta.nevra().as_bytes());
            let done = install::extract(ex, f, &c.rpm, &c.meta, &accounts, &mut owners, &what)?;
            for o in done.unknown_owners {
                unknown.entry(o).or_default().push(c.meta.name.clone());
            }
            if !done.capabilities.is_empty() {
                caps.extend(done.capabilities.iter().cloned());
                report.capabilities.insert(
                    c.meta.name.clone(),
                    done.capabilities
                        .iter()
                        .map(|(p, c)| format!("{p} {c}"))
                        .collect(),
                );
            }
            for s in c.heads.signatures.iter().chain(&c.v3) {
                *signers.entry(s.key.clone()).or_default() += 1;
            }
            if c.heads.unsigned {
                unsigned.push(c.meta.nevra());
            }
            for s in &c.meta.scriptlets {
                scriptlets.push(format!("{} {} ({})", c.meta.name, s.when, s.prog));
            }
        }
        device_nodes(ex, mtime)?;
        // The rpm database.
        // Files the path filter left out are "not installed" there, as rpm --excludedocs
        // records them (`rpm -V` passes them over).
        let rpms: Vec<(&RpmFile, Vec<u8>)> = checked
            .iter()
            .map(|c| {
                let states = c
                    .meta
                    .files
                    .iter()
                    .map(|f| {
                        if ex.was_left_out(f.path.as_bytes()) {
                            super::rpmdb::STATE_NOT_INSTALLED
                        } else {
                            super::rpmdb::STATE_NORMAL
                        }
                    })
                    .collect();
                (&c.rpm, states)
            })
            .collect();
        let db = super::rpmdb::build(&rpms, mtime)?;
        for d in ["var", "var/lib", "var/lib/rpm"] {
            ex.create_dir(d.as_bytes(), Attrs::root(0o755, mtime))?;
        }
        ex.write_file(
            b"var/lib/rpm/rpmdb.sqlite",
            &mut &db[..],
            Attrs::root(0o644, mtime),
        )?;

        for (k, n) in &signers {
            report
                .notes
                .push(format!("{n} packages verified: header signature by {k}"));
        }
        if !unsigned.is_empty() {
            let why = if self.cfg.unsigned_packages {
                format!("{} publishes unsigned packages", self.distro.pretty_name)
            } else {
                "--allow-unsigned".to_string()
            };
            report.notes.push(format!(
                "warning: {} packages installed without a signature ({why}); checked against the \
                 repository checksums and their header and file digests only",
                unsigned.len()
            ));
            report.trust.push(format!(
                "{} unsigned packages installed ({why}): {}",
                unsigned.len(),
                unsigned.join(" ")
            ));
        }
        for r in &self.repos {
            if r.signed_by.is_none() {
                report
                    .trust
                    .push(format!("repository metadata not signed: {}", r.base));
            }
        }
        if !scriptlets.is_empty() {
            let lua: Vec<&String> = scriptlets.iter().filter(|s| s.contains("<lua>")).collect();
            report.notes.push(format!(
                "{} scriptlets not run (their effects are made declaratively where a guest needs \
                 them){}",
                scriptlets.len(),
                if lua.is_empty() {
                    String::new()
                } else {
                    format!(
                        "; <lua>: {}",
                        lua.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }
            ));
        }
        for (o, pkgs) in &unknown {
            report.notes.push(format!(
                "warning: {o} is not defined in the rootfs; its files ({}) belong to root, as rpm does",
                pkgs.join(", ")
            ));
        }
        if !caps.is_empty() {
            report.notes.push(format!(
                "{} files carry file capabilities, {} (osbuilder.yaml lists them): {}",
                caps.len(),
                if ex.privileged() {
                    "set as their security.capability attribute"
                } else {
                    "kept in the rootfs metadata (xattr.security.capability) for the packers"
                },
                caps.iter()
                    .map(|(p, c)| format!("{p} {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(report)
    }
}

/// The two device nodes a guest needs before devtmpfs is mounted (the kernel opens
/// /dev/console for an initramfs's PID 1; early code writes to /dev/null), unless a
/// package made them. Rootless builds record them in the metadata only.
fn device_nodes(ex: &mut Extractor, mtime: i64) -> Result<()> {
    use crate::tree::mtree::MType;
    let root = ex.root().to_path_buf();
    ex.create_dir(b"dev", Attrs::root(0o755, mtime))?;
    for (path, dev, mode) in [
        (&b"dev/console"[..], (5, 1), 0o600),
        (b"dev/null", (1, 3), 0o666),
    ] {
        let on_disk = std::fs::symlink_metadata(root.join(crate::tree::os_path(path))).is_ok();
        let in_metadata = ex.mtree_mut().get(path).is_some();
        if !on_disk && !in_metadata {
            ex.special(path, MType::Char, dev, Attrs::root(mode, mtime))?;
        }
    }
    Ok(())
}
