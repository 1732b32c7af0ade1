//! From a build file to the list of things to build: every guest × variant × arch becomes a
//! rootfs job with its artifacts, named as Kata's release names them. Everything that can be
//! refused is refused here, before any work, and all at once: cells the compatibility matrix
//! does not have, agents that cannot run on an arch, two artifacts with the same output
//! name, packer options that cannot work together, `--only` filters that match nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use super::file::{Agent, BuildFile, ImageKeys, InitrdKeys, Loc, RootfsKeys};
use crate::arch::Arch;
use crate::compress::Compression;
use crate::distro::{DistroSet, InitMode};
use crate::error::refused;
use crate::image::Format;
use crate::image::fs::FsType;
use crate::image::layout::Table;
use crate::matrix::{Matrix, Request};
use crate::provision::AgentRequest;

/// The two artifact kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Initrd,
    Image,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Initrd => "initrd",
            Kind::Image => "image",
        }
    }
}

/// An initrd's packer settings, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct InitrdSettings {
    pub compression: &'static str,
    #[serde(skip)]
    pub compression_kind: Compression,
    pub level: u32,
    pub all_root: bool,
}

/// A disk image's packer settings, defaults filled in.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageSettings {
    pub fs: &'static str,
    #[serde(skip)]
    pub fs_kind: FsType,
    pub table: &'static str,
    #[serde(skip)]
    pub table_kind: Table,
    pub dax: bool,
    pub measured: bool,
    pub format: &'static str,
    #[serde(skip)]
    pub format_kind: Format,
    pub size_mb: Option<u64>,
    pub free_mb: u64,
    pub align_mb: Option<u64>,
    pub block_size: u32,
    pub seed: Option<String>,
    pub skip_rootfs_check: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(untagged)]
pub enum Packer {
    Initrd(InitrdSettings),
    Image(ImageSettings),
}

/// One artifact of a rootfs job, with its names in Kata's release tree.
#[derive(Clone, Debug)]
pub struct ArtifactJob {
    pub kind: Kind,
    pub packer: Packer,
    pub guest: String,
    pub variant: Option<String>,
    pub arch: Arch,
    /// `kata-<distro>-<version>[-<variant>].initrd|.image`.
    pub file_name: String,
    /// `kata-containers[-initrd][-<variant>].img`.
    pub link_name: String,
    /// `root_hash_<variant|base>.txt` for measured images.
    pub root_hash: Option<String>,
    /// `kata-static-rootfs-image|initrd[-<variant>].tar.zst`.
    pub tarball: String,
    pub at: Loc,
}

impl ArtifactJob {
    /// `x86_64/kata-debian-trixie.initrd`: how events and the summary name it.
    pub fn name(&self) -> String {
        format!("{}/{}", self.arch, self.file_name)
    }
}

/// Which lock entry a rootfs job uses: variants that do not change what is resolved share
/// their guest's.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct LockKey {
    pub guest: String,
    pub variant: Option<String>,
    pub arch: Arch,
}

/// One rootfs (a guest, or one of its variants, on one arch) and what is packed from it.
#[derive(Clone, Debug)]
pub struct RootfsJob {
    /// `initrd/x86_64`, `image-confidential/aarch64`.
    pub name: String,
    pub guest: String,
    pub variant: Option<String>,
    pub arch: Arch,
    pub distro: String,
    pub version: String,
    pub init: InitMode,
    /// The package names asked for (the distro's set or `packages`, plus `extra_packages`).
    pub requested: Vec<String>,
    pub lock_key: LockKey,
    /// What `osbuilder rootfs` would be given (output, cache filled in by the runner).
    pub options: crate::rootfs::Options,
    pub at: Loc,
    pub artifacts: Vec<ArtifactJob>,
}

/// `--only KEY=VALUE` filters: values of one key are alternatives, keys all apply.
#[derive(Clone, Debug, Default)]
pub struct Only {
    filters: BTreeMap<String, Vec<String>>,
}

/// The keys `--only` knows.
pub const ONLY_KEYS: [&str; 5] = ["guest", "variant", "arch", "artifact", "distro"];

impl Only {
    /// Parse `KEY=VALUE` filters (refused: an unknown key, a missing `=`).
    pub fn parse(items: &[String]) -> Result<Only> {
        let mut filters: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for item in items {
            let Some((k, v)) = item.split_once('=') else {
                return Err(refused(format!(
                    "--only {item}: expected KEY=VALUE, KEY one of {}",
                    ONLY_KEYS.join(", ")
                )));
            };
            let (k, v) = (k.trim(), v.trim());
            if !ONLY_KEYS.contains(&k) {
                return Err(refused(format!(
                    "--only {item}: unknown key '{k}'; use one of {}",
                    ONLY_KEYS.join(", ")
                )));
            }
            let v = if k == "arch" {
                v.parse::<Arch>()?.to_string()
            } else {
                v.to_string()
            };
            filters.entry(k.to_string()).or_default().push(v);
        }
        Ok(Only { filters })
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    fn allows(&self, key: &str, value: &str) -> bool {
        self.filters
            .get(key)
            .is_none_or(|vs| vs.iter().any(|v| v == value))
    }

    fn artifact_allowed(&self, a: &ArtifactJob, distro: &str) -> bool {
        self.allows("guest", &a.guest)
            && self.allows("variant", a.variant.as_deref().unwrap_or("base"))
            && self.allows("arch", a.arch.name())
            && self.allows("artifact", a.kind.name())
            && self.allows("distro", distro)
    }
}

/// Everything a build file asks for, checked, and the part `--only` selects.
#[derive(Clone, Debug)]
pub struct Plan {
    pub file: BuildFile,
    /// The selected rootfs jobs, each with its selected artifacts, in file order.
    pub jobs: Vec<RootfsJob>,
    /// `<arch>/<file name>` of every artifact of the whole file (whatever `--only` says):
    /// what a complete release holds.
    pub planned: Vec<String>,
}

impl Plan {
    /// Expand and check `file`; refuse (listing every problem) before any work.
    pub fn new(file: BuildFile, only: &Only) -> Result<Plan> {
        let set = DistroSet::load()?;
        let matrix = Matrix::new(&set);
        let mut problems: Vec<String> = Vec::new();
        let mut jobs = Vec::new();
        for g in &file.guests {
            let base_keys = g.rootfs.clone();
            let mut variants: Vec<(Option<&super::file::Variant>, Vec<Arch>)> =
                vec![(None, g.arches.clone())];
            for v in &g.variants {
                variants.push((
                    Some(v),
                    v.arches.clone().unwrap_or_else(|| g.arches.clone()),
                ));
            }
            for (variant, arches) in variants {
                for &arch in &arches {
                    let target = match matrix.check(&Request {
                        distro: &g.distro,
                        arch,
                        init: g.init,
                    }) {
                        Ok(t) => t,
                        Err(e) => {
                            let msg = e
                                .to_string()
                                .replace("use --agent-init", "set init = \"agent-init\"");
                            let (first, rest) = msg.split_once('\n').unwrap_or((&msg, ""));
                            problems.push(format!(
                                "{}: guest \"{}\" on {arch}: {first}{}",
                                g.at,
                                g.name,
                                rest.lines()
                                    .map(|l| format!("\n    {l}"))
                                    .collect::<String>()
                            ));
                            continue;
                        }
                    };
                    let mut keys = base_keys.clone();
                    if let Some(v) = variant {
                        keys = keys.overlay(&v.rootfs);
                    }
                    if let Some((a, _)) = g.per_arch.get(&arch) {
                        keys = keys.overlay(a);
                    }
                    let at = variant
                        .map(|v| v.at.clone())
                        .unwrap_or_else(|| g.at.clone());
                    let version = g
                        .version
                        .clone()
                        .unwrap_or_else(|| target.distro.default_version.clone());
                    let requested = crate::pkg::backend::requested_packages(
                        target.distro,
                        arch,
                        target.init,
                        keys.packages.as_deref(),
                        keys.extra_packages.as_deref().unwrap_or_default(),
                    );
                    // A variant that resolves the same packages shares its guest's lock entry.
                    let base_requested = {
                        let mut b = base_keys.clone();
                        if let Some((a, _)) = g.per_arch.get(&arch) {
                            b = b.overlay(a);
                        }
                        crate::pkg::backend::requested_packages(
                            target.distro,
                            arch,
                            target.init,
                            b.packages.as_deref(),
                            b.extra_packages.as_deref().unwrap_or_default(),
                        )
                    };
                    let variant_name = variant.map(|v| v.name.clone());
                    let lock_key = LockKey {
                        guest: g.name.clone(),
                        variant: variant_name.clone().filter(|_| {
                            requested != base_requested || keys.run_scripts != base_keys.run_scripts
                        }),
                        arch,
                    };
                    if let Err(e) = check_agent(&keys, arch) {
                        problems.push(format!("{at}: guest \"{}\" on {arch}: {e:#}", g.name));
                    }
                    let options = rootfs_options(g, &keys, arch, target.init, &version);
                    let mut artifacts = Vec::new();
                    let initrd = merged(
                        g.initrd.as_ref(),
                        variant.and_then(|v| v.initrd.as_ref()),
                        InitrdKeys::overlay,
                    );
                    let image = merged(
                        g.image.as_ref(),
                        variant.and_then(|v| v.image.as_ref()),
                        ImageKeys::overlay,
                    );
                    for (kind, loc, packer) in [
                        initrd.map(|(k, l)| (Kind::Initrd, l, initrd_settings(&k))),
                        image.map(|(k, l)| (Kind::Image, l, image_settings(&k, arch))),
                    ]
                    .into_iter()
                    .flatten()
                    {
                        let packer = match packer {
                            Ok(p) => p,
                            Err(e) => {
                                problems.push(format!("{loc}: {e:#}"));
                                continue;
                            }
                        };
                        artifacts.push(artifact(
                            kind,
                            packer,
                            g,
                            variant_name.as_deref(),
                            arch,
                            &version,
                            loc,
                        ));
                    }
                    let name = match &variant_name {
                        Some(v) => format!("{}-{v}/{arch}", g.name),
                        None => format!("{}/{arch}", g.name),
                    };
                    jobs.push(RootfsJob {
                        name,
                        guest: g.name.clone(),
                        variant: variant_name,
                        arch,
                        distro: g.distro.clone(),
                        version,
                        init: target.init,
                        requested,
                        lock_key,
                        options,
                        at,
                        artifacts,
                    });
                }
            }
        }
        problems.extend(duplicate_names(&jobs));
        if !problems.is_empty() {
            return Err(refused(format!(
                "{} cannot be built as written (nothing was done):\n  {}",
                file.path.display(),
                problems.join("\n  ")
            )));
        }
        let mut planned: Vec<String> = jobs
            .iter()
            .flat_map(|j| j.artifacts.iter().map(|a| a.name()))
            .collect();
        planned.sort();
        // --only: keep what it selects, and refuse a filter that selects nothing.
        for (key, values) in &only.filters {
            for v in values {
                let hit = jobs.iter().any(|j| {
                    j.artifacts.iter().any(|a| {
                        let single = Only {
                            filters: BTreeMap::from([(key.clone(), vec![v.clone()])]),
                        };
                        single.artifact_allowed(a, &j.distro)
                    })
                });
                if !hit {
                    return Err(refused(format!(
                        "--only {key}={v} matches nothing in {}{}",
                        file.path.display(),
                        available(&jobs, key)
                    )));
                }
            }
        }
        let mut selected = Vec::new();
        for mut j in jobs {
            let distro = j.distro.clone();
            j.artifacts.retain(|a| only.artifact_allowed(a, &distro));
            if !j.artifacts.is_empty() {
                selected.push(j);
            }
        }
        if selected.is_empty() {
            return Err(refused(format!(
                "the --only filters together select nothing in {}",
                file.path.display()
            )));
        }
        let plan = Plan {
            file,
            jobs: selected,
            planned,
        };
        plan.check_tools()?;
        Ok(plan)
    }

    /// Every external tool the selected artifacts need, checked up front.
    fn check_tools(&self) -> Result<()> {
        let mut tools: Vec<(&str, &str)> = Vec::new();
        for a in self.jobs.iter().flat_map(|j| &j.artifacts) {
            if let Packer::Image(s) = &a.packer {
                tools.extend_from_slice(s.fs_kind.tools());
                if s.format_kind == Format::Qcow2 {
                    tools.push(("qemu-img", "qemu-utils"));
                }
            }
        }
        tools.sort();
        tools.dedup();
        crate::image::fs::check_tools(&tools)
    }

    /// Every artifact selected, in job order.
    pub fn artifacts(&self) -> impl Iterator<Item = (&RootfsJob, &ArtifactJob)> {
        self.jobs
            .iter()
            .flat_map(|j| j.artifacts.iter().map(move |a| (j, a)))
    }
}

/// The values of `key` a filter could have used (for the "matches nothing" message).
fn available(jobs: &[RootfsJob], key: &str) -> String {
    let mut vals: Vec<String> = jobs
        .iter()
        .flat_map(|j| {
            j.artifacts.iter().map(move |a| match key {
                "guest" => a.guest.clone(),
                "variant" => a.variant.clone().unwrap_or_else(|| "base".into()),
                "arch" => a.arch.to_string(),
                "artifact" => a.kind.name().to_string(),
                _ => j.distro.clone(),
            })
        })
        .collect();
    vals.sort();
    vals.dedup();
    format!("; it has {key} {}", vals.join(", "))
}

fn merged<K: Clone>(
    base: Option<&(K, Loc)>,
    over: Option<&(K, Loc)>,
    overlay: fn(&K, &K) -> K,
) -> Option<(K, Loc)> {
    match (base, over) {
        (Some((b, _)), Some((o, l))) => Some((overlay(b, o), l.clone())),
        (Some(b), None) => Some(b.clone()),
        (None, Some(o)) => Some(o.clone()),
        (None, None) => None,
    }
}

fn initrd_settings(k: &InitrdKeys) -> Result<Packer> {
    let c = k.compression.unwrap_or(Compression::Gzip);
    let level = k.level.unwrap_or(c.default_level());
    let (lo, hi) = c.level_range();
    if c != Compression::None && !(lo..=hi).contains(&level) {
        return Err(refused(format!(
            "[initrd] level = {level} is out of range for {}: use {lo}..={hi}",
            c.name()
        )));
    }
    Ok(Packer::Initrd(InitrdSettings {
        compression: c.name(),
        compression_kind: c,
        level,
        all_root: k.all_root.unwrap_or(false),
    }))
}

fn image_settings(k: &ImageKeys, arch: Arch) -> Result<Packer> {
    let s = ImageSettings {
        fs_kind: k.fs.unwrap_or(FsType::Ext4),
        fs: k.fs.unwrap_or(FsType::Ext4).name(),
        table_kind: k.table.unwrap_or(Table::Mbr),
        table: match k.table.unwrap_or(Table::Mbr) {
            Table::Mbr => "mbr",
            Table::Gpt => "gpt",
            Table::None => "none",
        },
        dax: k.dax.unwrap_or(true),
        measured: k.measured.unwrap_or(false),
        format_kind: k.format.unwrap_or(Format::Raw),
        format: match k.format.unwrap_or(Format::Raw) {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        },
        size_mb: k.size_mb,
        free_mb: k.free_mb.unwrap_or(0),
        align_mb: k.align_mb,
        block_size: k.block_size.unwrap_or(4096),
        seed: k.seed.clone(),
        skip_rootfs_check: k.skip_rootfs_check.unwrap_or(false),
    };
    crate::image::validate(&image_options(
        &s,
        arch,
        PathBuf::new(),
        PathBuf::new(),
        None,
    ))
    .map_err(|e| refused(format!("[image]: {e:#}")))?;
    Ok(Packer::Image(s))
}

/// `osbuilder image`'s options for these settings.
pub fn image_options(
    s: &ImageSettings,
    arch: Arch,
    rootfs: PathBuf,
    output: PathBuf,
    epoch: Option<i64>,
) -> crate::image::Options {
    crate::image::Options {
        rootfs,
        output,
        fs: s.fs_kind,
        table: s.table_kind,
        dax: s.dax,
        measured: s.measured,
        format: s.format_kind,
        size_mb: s.size_mb,
        free_mb: s.free_mb,
        align_mb: s.align_mb,
        block_size: s.block_size,
        metadata: None,
        seed: s.seed.clone(),
        arch,
        source_date_epoch: epoch,
        root_hash_file: None,
        skip_rootfs_check: s.skip_rootfs_check,
        // Release jobs make guest disks; UEFI host disks come from `image --profile`.
        uefi: None,
    }
}

/// The reference agent exists for one arch; a file agent must exist.
fn check_agent(keys: &RootfsKeys, arch: Arch) -> Result<()> {
    match keys.agent.as_ref().unwrap_or(&Agent::Reference) {
        Agent::None => Ok(()),
        Agent::Reference => match crate::agent::reference_agent_arch() {
            Some(a) if a == arch => Ok(()),
            built => Err(refused(format!(
                "osbuilder's reference agent is built for {}, not {arch}: set agent_bin or \
                 agent_tarball for it (e.g. in [guest.arch.{arch}])",
                built
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "another architecture".into())
            ))),
        },
        Agent::Bin(p) | Agent::Tarball(p) => {
            if p.is_file() {
                Ok(())
            } else {
                Err(refused(format!(
                    "agent file {} does not exist",
                    p.display()
                )))
            }
        }
    }
}

fn rootfs_options(
    g: &super::file::Guest,
    keys: &RootfsKeys,
    arch: Arch,
    init: InitMode,
    version: &str,
) -> crate::rootfs::Options {
    let agent = match keys.agent.as_ref().unwrap_or(&Agent::Reference) {
        Agent::None => None,
        a => Some(AgentRequest {
            agent_bin: match a {
                Agent::Bin(p) => Some(p.clone()),
                _ => None,
            },
            agent_tarball: match a {
                Agent::Tarball(p) => Some(p.clone()),
                _ => None,
            },
            agent_version: keys.agent_version.clone(),
            kernel_modules: keys.kernel_modules.clone(),
            prune_units: keys.prune_units.unwrap_or(false),
        }),
    };
    crate::rootfs::Options {
        distro: g.distro.clone(),
        arch: Some(arch),
        os_version: Some(version.to_string()),
        init: Some(init),
        extra_pkgs: keys.extra_packages.clone().unwrap_or_default(),
        packages: keys.packages.clone(),
        mirror: keys.mirror.clone(),
        keyrings: keys.keyrings.clone().unwrap_or_default(),
        keys_dirs: keys.keys_dirs.clone().unwrap_or_default(),
        allow_unsigned: false,
        cache_dir: None,
        dry_run: false,
        run_scripts: keys.run_scripts.unwrap_or(false),
        output: PathBuf::new(),
        force: false,
        host_apt_dir: None,
        agent,
        // Release jobs run the native backends (the stage cache keys their inputs).
        builder: Default::default(),
        // Release jobs build guests; hosts come from `rootfs --profile`.
        profile: None,
        // Guests as `osbuilder rootfs` makes them: Kata's set, the distro's path filters.
        package_set: Default::default(),
        keep_docs: false,
        path_filters: Vec::new(),
    }
}

/// Kata's release names for one artifact.
fn artifact(
    kind: Kind,
    packer: Packer,
    g: &super::file::Guest,
    variant: Option<&str>,
    arch: Arch,
    version: &str,
    at: Loc,
) -> ArtifactJob {
    let suffix = variant.map(|v| format!("-{v}")).unwrap_or_default();
    let measured = matches!(&packer, Packer::Image(s) if s.measured);
    let (file_name, link_name, tarball) = match kind {
        Kind::Initrd => (
            format!("kata-{}-{version}{suffix}.initrd", g.distro),
            format!("kata-containers-initrd{suffix}.img"),
            format!("kata-static-rootfs-initrd{suffix}.tar.zst"),
        ),
        Kind::Image => (
            format!("kata-{}-{version}{suffix}.image", g.distro),
            format!("kata-containers{suffix}.img"),
            format!("kata-static-rootfs-image{suffix}.tar.zst"),
        ),
    };
    ArtifactJob {
        kind,
        packer,
        guest: g.name.clone(),
        variant: variant.map(str::to_string),
        arch,
        file_name,
        link_name,
        root_hash: measured.then(|| format!("root_hash_{}.txt", variant.unwrap_or("base"))),
        tarball,
        at,
    }
}

/// Two artifacts that would write the same file of the release tree.
fn duplicate_names(jobs: &[RootfsJob]) -> Vec<String> {
    let mut seen: BTreeMap<(Arch, String), &ArtifactJob> = BTreeMap::new();
    let mut problems = Vec::new();
    for a in jobs.iter().flat_map(|j| &j.artifacts) {
        let names = [
            Some(&a.file_name),
            Some(&a.link_name),
            a.root_hash.as_ref(),
            Some(&a.tarball),
        ];
        for n in names.into_iter().flatten() {
            if let Some(first) = seen.get(&(a.arch, n.clone())) {
                problems.push(format!(
                    "{}: the {} of guest \"{}\"{} writes {}/{n}, as does the {} of guest \"{}\"{} at {}: \
                     give one of them a variant (or another distro version)",
                    a.at,
                    a.kind.name(),
                    a.guest,
                    a.variant.as_ref().map(|v| format!(" (variant {v})")).unwrap_or_default(),
                    a.arch,
                    first.kind.name(),
                    first.guest,
                    first.variant.as_ref().map(|v| format!(" (variant {v})")).unwrap_or_default(),
                    first.at
                ));
                break;
            }
        }
        for n in [
            Some(&a.file_name),
            Some(&a.link_name),
            a.root_hash.as_ref(),
            Some(&a.tarball),
        ]
        .into_iter()
        .flatten()
        {
            seen.entry((a.arch, n.clone())).or_insert(a);
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn plan(text: &str, only: &[&str]) -> Result<Plan> {
        let f = BuildFile::parse(Path::new("b.toml"), Path::new("/nonexistent"), text)?;
        let only: Vec<String> = only.iter().map(|s| s.to_string()).collect();
        Plan::new(f, &Only::parse(&only)?)
    }

    const HOST: &str = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x86_64"
    };

    #[test]
    fn jobs_carry_kata_names_and_variants() {
        let text = format!(
            "[[guest]]\nname = \"img\"\ndistro = \"debian\"\narches = [\"{HOST}\"]\n\
             [guest.image]\nmeasured = true\n\
             [[guest.variant]]\nname = \"confidential\"\nextra_packages = [\"cryptsetup\"]\n\
             [[guest.variant]]\nname = \"plain\"\n[guest.variant.image]\nmeasured = false\n"
        );
        let p = plan(&text, &[]).unwrap();
        assert_eq!(p.jobs.len(), 3);
        let a = &p.jobs[0].artifacts[0];
        assert_eq!(a.file_name, "kata-debian-trixie.image");
        assert_eq!(a.link_name, "kata-containers.img");
        assert_eq!(a.root_hash.as_deref(), Some("root_hash_base.txt"));
        assert_eq!(a.tarball, "kata-static-rootfs-image.tar.zst");
        let c = &p.jobs[1].artifacts[0];
        assert_eq!(c.file_name, "kata-debian-trixie-confidential.image");
        assert_eq!(c.link_name, "kata-containers-confidential.img");
        assert_eq!(c.root_hash.as_deref(), Some("root_hash_confidential.txt"));
        // The confidential variant resolves other packages; "plain" shares the guest's entry.
        assert_eq!(p.jobs[1].lock_key.variant.as_deref(), Some("confidential"));
        assert_eq!(p.jobs[2].lock_key.variant, None);
        assert_eq!(p.jobs[2].artifacts[0].root_hash, None);
        let only = plan(&text, &["variant=confidential"]).unwrap();
        assert_eq!(only.jobs.len(), 1);
        assert_eq!(only.planned.len(), 3);
        let e = format!("{:#}", plan(&text, &["variant=nvidia"]).unwrap_err());
        assert!(
            e.contains("matches nothing") && e.contains("base, confidential, plain"),
            "{e}"
        );
        let e = format!("{:#}", plan(&text, &["colour=red"]).unwrap_err());
        assert!(e.contains("unknown key 'colour'"), "{e}");
    }

    #[test]
    fn every_problem_is_listed_with_its_line_before_any_work() {
        let text = format!(
            "[[guest]]\nname = \"a\"\ndistro = \"alpine\"\ninit = \"systemd\"\narches = [\"{HOST}\"]\n[guest.initrd]\n\
             [[guest]]\nname = \"b\"\ndistro = \"debian\"\narches = [\"{HOST}\"]\n[guest.image]\n\
             [[guest]]\nname = \"c\"\ndistro = \"debian\"\narches = [\"{HOST}\"]\n[guest.image]\ntable = \"gpt\"\n"
        );
        let e = plan(&text, &[]).unwrap_err();
        assert!(crate::error::is_refused(&e));
        let e = format!("{e:#}");
        assert!(e.contains("b.toml:1: guest \"a\""), "{e}");
        assert!(
            e.contains("alpine does not support init mode systemd"),
            "{e}"
        );
        assert!(
            e.contains("b.toml:16: [image]: --table gpt cannot carry the DAX header"),
            "{e}"
        );
        // b and c both want kata-containers.img (c's image was refused, so only b remains).
        let text = format!(
            "[[guest]]\nname = \"b\"\ndistro = \"debian\"\narches = [\"{HOST}\"]\n[guest.image]\n\
             [[guest]]\nname = \"c\"\ndistro = \"debian\"\narches = [\"{HOST}\"]\n[guest.image]\nmeasured = true\n"
        );
        let e = format!("{:#}", plan(&text, &[]).unwrap_err());
        assert!(
            e.contains(&format!("b.toml:10: the image of guest \"c\" writes {HOST}/kata-debian-trixie.image, as does the image of guest \"b\" at b.toml:5")),
            "{e}"
        );
    }

    #[test]
    fn a_foreign_arch_needs_an_agent() {
        let other = if HOST == "x86_64" {
            "aarch64"
        } else {
            "x86_64"
        };
        let text = format!(
            "[[guest]]\nname = \"a\"\ndistro = \"debian\"\narches = [\"{other}\"]\n[guest.initrd]\n"
        );
        let e = format!("{:#}", plan(&text, &[]).unwrap_err());
        assert!(
            e.contains("reference agent is built for")
                && e.contains(&format!("[guest.arch.{other}]")),
            "{e}"
        );
    }
}
