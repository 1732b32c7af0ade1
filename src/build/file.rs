//! The build file, `osbuilder.toml`: which guests to build and which artifacts of each, as
//! data a release job can check in (schema in docs/release.md).
//!
//! Parsing keeps the position of every value, so each mistake — an unknown key, a value of
//! the wrong type or outside its choices, a duplicate name — is reported as
//! `FILE:LINE: what is wrong`, a refusal before any work. Paths in the file are relative to
//! the file's folder. What this module returns is still per guest; [`super::plan`] expands
//! it into jobs (arch × variant × artifact) and checks them against the matrix.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use toml::Spanned;

use crate::arch::Arch;
use crate::compress::Compression;
use crate::distro::InitMode;
use crate::error::refused;
use crate::image::Format;
use crate::image::fs::FsType;
use crate::image::layout::Table;

/// A place in the build file, for messages: `osbuilder.toml:12`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// Where the agent of a guest comes from (`agent_bin`, `agent_tarball`, `no_agent`;
/// nothing: osbuilder's reference agent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Agent {
    Reference,
    /// A bare rootfs (Kata's ROOTFS_ONLY).
    None,
    Bin(PathBuf),
    Tarball(PathBuf),
}

/// The rootfs settings of a guest that a variant or a per-arch table may replace. `None`:
/// not set at this level.
#[derive(Clone, Debug, Default)]
pub struct RootfsKeys {
    pub packages: Option<Vec<String>>,
    pub extra_packages: Option<Vec<String>>,
    pub mirror: Option<String>,
    pub keyrings: Option<Vec<PathBuf>>,
    pub keys_dirs: Option<Vec<PathBuf>>,
    pub agent: Option<Agent>,
    pub agent_version: Option<String>,
    pub kernel_modules: Option<PathBuf>,
    pub prune_units: Option<bool>,
    pub run_scripts: Option<bool>,
}

impl RootfsKeys {
    /// These settings with every key `over` sets replaced by its value.
    pub fn overlay(&self, over: &RootfsKeys) -> RootfsKeys {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            b.clone().or_else(|| a.clone())
        }
        RootfsKeys {
            packages: pick(&self.packages, &over.packages),
            extra_packages: pick(&self.extra_packages, &over.extra_packages),
            mirror: pick(&self.mirror, &over.mirror),
            keyrings: pick(&self.keyrings, &over.keyrings),
            keys_dirs: pick(&self.keys_dirs, &over.keys_dirs),
            agent: pick(&self.agent, &over.agent),
            agent_version: pick(&self.agent_version, &over.agent_version),
            kernel_modules: pick(&self.kernel_modules, &over.kernel_modules),
            prune_units: pick(&self.prune_units, &over.prune_units),
            run_scripts: pick(&self.run_scripts, &over.run_scripts),
        }
    }
}

/// `[guest.initrd]`: the keys of `osbuilder initrd`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitrdKeys {
    pub compression: Option<Compression>,
    pub level: Option<u32>,
    pub all_root: Option<bool>,
}

impl InitrdKeys {
    pub fn overlay(&self, o: &InitrdKeys) -> InitrdKeys {
        InitrdKeys {
            compression: o.compression.or(self.compression),
            level: o.level.or(self.level),
            all_root: o.all_root.or(self.all_root),
        }
    }
}

/// `[guest.image]`: the keys of `osbuilder image`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageKeys {
    pub fs: Option<FsType>,
    pub table: Option<Table>,
    pub dax: Option<bool>,
    pub measured: Option<bool>,
    pub format: Option<Format>,
    pub size_mb: Option<u64>,
    pub free_mb: Option<u64>,
    pub align_mb: Option<u64>,
    pub block_size: Option<u32>,
    pub seed: Option<String>,
    pub skip_rootfs_check: Option<bool>,
}

impl ImageKeys {
    pub fn overlay(&self, o: &ImageKeys) -> ImageKeys {
        ImageKeys {
            fs: o.fs.or(self.fs),
            table: o.table.or(self.table),
            dax: o.dax.or(self.dax),
            measured: o.measured.or(self.measured),
            format: o.format.or(self.format),
            size_mb: o.size_mb.or(self.size_mb),
            free_mb: o.free_mb.or(self.free_mb),
            align_mb: o.align_mb.or(self.align_mb),
            block_size: o.block_size.or(self.block_size),
            seed: o.seed.clone().or_else(|| self.seed.clone()),
            skip_rootfs_check: o.skip_rootfs_check.or(self.skip_rootfs_check),
        }
    }
}

/// `[[guest.variant]]`: a suffix for the artifact names and the settings that differ.
#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub at: Loc,
    /// Build the variant only for these of the guest's arches.
    pub arches: Option<Vec<Arch>>,
    pub rootfs: RootfsKeys,
    pub initrd: Option<(InitrdKeys, Loc)>,
    pub image: Option<(ImageKeys, Loc)>,
}

/// One `[[guest]]`: a rootfs configuration per arch, and the artifacts packed from it.
#[derive(Clone, Debug)]
pub struct Guest {
    pub name: String,
    pub at: Loc,
    pub distro: String,
    pub distro_at: Loc,
    pub version: Option<String>,
    pub arches: Vec<Arch>,
    pub arches_at: Loc,
    pub init: Option<InitMode>,
    pub rootfs: RootfsKeys,
    /// `[guest.arch.<arch>]`: settings for one arch (applied after the variant's).
    pub per_arch: BTreeMap<Arch, (RootfsKeys, Loc)>,
    pub initrd: Option<(InitrdKeys, Loc)>,
    pub image: Option<(ImageKeys, Loc)>,
    pub variants: Vec<Variant>,
}

/// A parsed build file.
#[derive(Clone, Debug)]
pub struct BuildFile {
    /// As given (for messages).
    pub path: PathBuf,
    /// The folder relative paths in the file are taken from.
    pub dir: PathBuf,
    /// SHA-256 of the file's bytes (recorded in releases; `--merge` compares it).
    pub sha256: String,
    pub guests: Vec<Guest>,
}

// --- raw TOML shapes (serde, every value spanned) ---

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    guest: Vec<Spanned<RawGuest>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGuest {
    name: Spanned<String>,
    distro: Spanned<String>,
    version: Option<Spanned<String>>,
    arches: Option<Spanned<Vec<Spanned<String>>>>,
    init: Option<Spanned<String>>,
    packages: Option<Vec<String>>,
    extra_packages: Option<Vec<String>>,
    mirror: Option<String>,
    keyrings: Option<Vec<String>>,
    keys_dirs: Option<Vec<String>>,
    agent_bin: Option<Spanned<String>>,
    agent_tarball: Option<Spanned<String>>,
    no_agent: Option<Spanned<bool>>,
    agent_version: Option<String>,
    kernel_modules: Option<String>,
    prune_units: Option<bool>,
    run_scripts: Option<bool>,
    initrd: Option<Spanned<RawInitrd>>,
    image: Option<Spanned<RawImage>>,
    #[serde(default)]
    arch: BTreeMap<String, Spanned<RawArch>>,
    #[serde(default)]
    variant: Vec<Spanned<RawVariant>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArch {
    packages: Option<Vec<String>>,
    extra_packages: Option<Vec<String>>,
    mirror: Option<String>,
    keyrings: Option<Vec<String>>,
    keys_dirs: Option<Vec<String>>,
    agent_bin: Option<Spanned<String>>,
    agent_tarball: Option<Spanned<String>>,
    no_agent: Option<Spanned<bool>>,
    agent_version: Option<String>,
    kernel_modules: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: Spanned<String>,
    arches: Option<Vec<Spanned<String>>>,
    packages: Option<Vec<String>>,
    extra_packages: Option<Vec<String>>,
    mirror: Option<String>,
    keyrings: Option<Vec<String>>,
    keys_dirs: Option<Vec<String>>,
    agent_bin: Option<Spanned<String>>,
    agent_tarball: Option<Spanned<String>>,
    no_agent: Option<Spanned<bool>>,
    agent_version: Option<String>,
    kernel_modules: Option<String>,
    prune_units: Option<bool>,
    initrd: Option<Spanned<RawInitrd>>,
    image: Option<Spanned<RawImage>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInitrd {
    compression: Option<Spanned<String>>,
    level: Option<u32>,
    all_root: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    fs: Option<Spanned<String>>,
    table: Option<Spanned<String>>,
    dax: Option<bool>,
    measured: Option<bool>,
    format: Option<Spanned<String>>,
    size_mb: Option<u64>,
    free_mb: Option<u64>,
    align_mb: Option<u64>,
    block_size: Option<u32>,
    seed: Option<String>,
    skip_rootfs_check: Option<bool>,
}

/// Turns spans into `FILE:LINE` and resolves paths.
struct Ctx<'a> {
    shown: String,
    text: &'a str,
    dir: &'a Path,
}

impl Ctx<'_> {
    fn loc(&self, span: std::ops::Range<usize>) -> Loc {
        let upto = &self.text[..span.start.min(self.text.len())];
        Loc {
            file: self.shown.clone(),
            line: upto.bytes().filter(|&b| b == b'\n').count() + 1,
        }
    }

    fn err(&self, span: std::ops::Range<usize>, msg: impl fmt::Display) -> anyhow::Error {
        refused(format!("{}: {msg}", self.loc(span)))
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    fn paths(&self, v: &Option<Vec<String>>) -> Option<Vec<PathBuf>> {
        v.as_ref().map(|v| v.iter().map(|p| self.path(p)).collect())
    }

    fn choice<T: Copy>(
        &self,
        key: &str,
        v: &Option<Spanned<String>>,
        choices: &[(&str, T)],
    ) -> Result<Option<T>> {
        let Some(v) = v else { return Ok(None) };
        match choices.iter().find(|(n, _)| *n == v.get_ref().as_str()) {
            Some((_, t)) => Ok(Some(*t)),
            None => Err(self.err(
                v.span(),
                format!(
                    "{key} = \"{}\" is not one of {}",
                    v.get_ref(),
                    choices
                        .iter()
                        .map(|(n, _)| format!("\"{n}\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    fn arch(&self, v: &Spanned<String>) -> Result<Arch> {
        v.get_ref()
            .parse::<Arch>()
            .map_err(|e| self.err(v.span(), e))
    }

    fn agent(
        &self,
        bin: &Option<Spanned<String>>,
        tarball: &Option<Spanned<String>>,
        none: &Option<Spanned<bool>>,
    ) -> Result<Option<Agent>> {
        let none = none.as_ref().filter(|n| *n.get_ref());
        match (bin, tarball, none) {
            (None, None, None) => Ok(None),
            (Some(b), None, None) => Ok(Some(Agent::Bin(self.path(b.get_ref())))),
            (None, Some(t), None) => Ok(Some(Agent::Tarball(self.path(t.get_ref())))),
            (None, None, Some(_)) => Ok(Some(Agent::None)),
            (Some(b), Some(_), _) => Err(self.err(
                b.span(),
                "agent_bin and agent_tarball both given: choose one (as Kata's AGENT_SOURCE_BIN and AGENT_TARBALL)",
            )),
            (Some(b), None, Some(_)) | (None, Some(b), Some(_)) => Err(self.err(
                b.span(),
                "no_agent = true and an agent source both given: drop one",
            )),
        }
    }

    fn initrd(&self, r: &Spanned<RawInitrd>) -> Result<(InitrdKeys, Loc)> {
        let raw = r.get_ref();
        let compression = self.choice(
            "compression",
            &raw.compression,
            &[
                ("gzip", Compression::Gzip),
                ("zstd", Compression::Zstd),
                ("xz", Compression::Xz),
                ("none", Compression::None),
            ],
        )?;
        Ok((
            InitrdKeys {
                compression,
                level: raw.level,
                all_root: raw.all_root,
            },
            self.loc(r.span()),
        ))
    }

    fn image(&self, r: &Spanned<RawImage>) -> Result<(ImageKeys, Loc)> {
        let raw = r.get_ref();
        Ok((
            ImageKeys {
                fs: self.choice(
                    "fs",
                    &raw.fs,
                    &[
                        ("ext4", FsType::Ext4),
                        ("xfs", FsType::Xfs),
                        ("erofs", FsType::Erofs),
                    ],
                )?,
                table: self.choice(
                    "table",
                    &raw.table,
                    &[("mbr", Table::Mbr), ("gpt", Table::Gpt)],
                )?,
                dax: raw.dax,
                measured: raw.measured,
                format: self.choice(
                    "format",
                    &raw.format,
                    &[("raw", Format::Raw), ("qcow2", Format::Qcow2)],
                )?,
                size_mb: raw.size_mb,
                free_mb: raw.free_mb,
                align_mb: raw.align_mb,
                block_size: raw.block_size,
                seed: raw.seed.clone(),
                skip_rootfs_check: raw.skip_rootfs_check,
            },
            self.loc(r.span()),
        ))
    }
}

/// Names that end up in file names and `--only` values.
fn check_name(ctx: &Ctx<'_>, what: &str, v: &Spanned<String>) -> Result<()> {
    let s = v.get_ref();
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !s.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(ctx.err(
            v.span(),
            format!(
                "{what} \"{s}\" must be letters, digits, '-', '_' or '.' (it becomes part of file names)"
            ),
        ))
    }
}

impl BuildFile {
    /// Read and check `path`.
    pub fn load(path: &Path) -> Result<BuildFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                refused(format!(
                    "build file {} does not exist: give one with -f (see examples/osbuilder.toml \
                     and docs/release.md)",
                    path.display()
                ))
            } else {
                anyhow::Error::new(e).context(format!("reading {}", path.display()))
            }
        })?;
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        BuildFile::parse(path, &dir, &text)
    }

    /// Parse `text` as the build file `path`, resolving relative paths against `dir`.
    pub fn parse(path: &Path, dir: &Path, text: &str) -> Result<BuildFile> {
        let ctx = Ctx {
            shown: path.display().to_string(),
            text,
            dir,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let msg = e.message().trim().to_string();
            match e.span() {
                Some(s) => ctx.err(s, msg),
                None => refused(format!("{}: {msg}", ctx.shown)),
            }
        })?;
        if raw.guest.is_empty() {
            return Err(refused(format!(
                "{}: no [[guest]] tables: nothing to build (see docs/release.md)",
                ctx.shown
            )));
        }
        let mut guests: Vec<Guest> = Vec::new();
        for g in &raw.guest {
            let guest = Self::guest(&ctx, g)?;
            if let Some(first) = guests.iter().find(|x| x.name == guest.name) {
                return Err(refused(format!(
                    "{}: a second guest named \"{}\" (the first is at {}): guest names must differ",
                    guest.at, guest.name, first.at
                )));
            }
            guests.push(guest);
        }
        Ok(BuildFile {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
            sha256: crate::pkg::sha256_hex(text.as_bytes()),
            guests,
        })
    }

    fn guest(ctx: &Ctx<'_>, g: &Spanned<RawGuest>) -> Result<Guest> {
        let at = ctx.loc(g.span());
        let raw = g.get_ref();
        check_name(ctx, "guest name", &raw.name)?;
        let (arches, arches_at) = match &raw.arches {
            Some(a) => {
                let mut v = Vec::new();
                for s in a.get_ref() {
                    let arch = ctx.arch(s)?;
                    if v.contains(&arch) {
                        return Err(ctx.err(s.span(), format!("{arch} is listed twice")));
                    }
                    v.push(arch);
                }
                if v.is_empty() {
                    return Err(ctx.err(a.span(), "arches is empty: list at least one"));
                }
                (v, ctx.loc(a.span()))
            }
            None => (vec![Arch::or_host(None)?], at.clone()),
        };
        let init = match &raw.init {
            Some(i) => Some(
                i.get_ref()
                    .parse::<InitMode>()
                    .map_err(|e| ctx.err(i.span(), e))?,
            ),
            None => None,
        };
        let rootfs = RootfsKeys {
            packages: raw.packages.clone(),
            extra_packages: raw.extra_packages.clone(),
            mirror: raw.mirror.clone(),
            keyrings: ctx.paths(&raw.keyrings),
            keys_dirs: ctx.paths(&raw.keys_dirs),
            agent: ctx.agent(&raw.agent_bin, &raw.agent_tarball, &raw.no_agent)?,
            agent_version: raw.agent_version.clone(),
            kernel_modules: raw.kernel_modules.as_deref().map(|p| ctx.path(p)),
            prune_units: raw.prune_units,
            run_scripts: raw.run_scripts,
        };
        let mut per_arch = BTreeMap::new();
        for (name, a) in &raw.arch {
            let arch: Arch = name
                .parse()
                .map_err(|e| ctx.err(a.span(), format!("[guest.arch.{name}]: {e}")))?;
            if !arches.contains(&arch) {
                return Err(ctx.err(
                    a.span(),
                    format!(
                        "[guest.arch.{name}]: {arch} is not in this guest's arches ({})",
                        names(&arches)
                    ),
                ));
            }
            let r = a.get_ref();
            let keys = RootfsKeys {
                packages: r.packages.clone(),
                extra_packages: r.extra_packages.clone(),
                mirror: r.mirror.clone(),
                keyrings: ctx.paths(&r.keyrings),
                keys_dirs: ctx.paths(&r.keys_dirs),
                agent: ctx.agent(&r.agent_bin, &r.agent_tarball, &r.no_agent)?,
                agent_version: r.agent_version.clone(),
                kernel_modules: r.kernel_modules.as_deref().map(|p| ctx.path(p)),
                prune_units: None,
                run_scripts: None,
            };
            if per_arch.insert(arch, (keys, ctx.loc(a.span()))).is_some() {
                return Err(ctx.err(
                    a.span(),
                    format!("a second table for {arch} (under another of its names)"),
                ));
            }
        }
        let initrd = raw.initrd.as_ref().map(|r| ctx.initrd(r)).transpose()?;
        let image = raw.image.as_ref().map(|r| ctx.image(r)).transpose()?;
        let mut variants: Vec<Variant> = Vec::new();
        for v in &raw.variant {
            let r = v.get_ref();
            check_name(ctx, "variant name", &r.name)?;
            let name = r.name.get_ref().clone();
            if name == "base" {
                return Err(ctx.err(
                    r.name.span(),
                    "\"base\" names the guest itself (its artifacts have no suffix); give the variant another name",
                ));
            }
            if variants.iter().any(|x| x.name == name) {
                return Err(ctx.err(
                    r.name.span(),
                    format!(
                        "a second variant \"{name}\" in guest \"{}\"",
                        raw.name.get_ref()
                    ),
                ));
            }
            let arches_v = match &r.arches {
                Some(list) => {
                    let mut out = Vec::new();
                    for s in list {
                        let a = ctx.arch(s)?;
                        if !arches.contains(&a) {
                            return Err(ctx.err(
                                s.span(),
                                format!(
                                    "variant \"{name}\": {a} is not in the guest's arches ({})",
                                    names(&arches)
                                ),
                            ));
                        }
                        out.push(a);
                    }
                    Some(out)
                }
                None => None,
            };
            variants.push(Variant {
                name,
                at: ctx.loc(v.span()),
                arches: arches_v,
                rootfs: RootfsKeys {
                    packages: r.packages.clone(),
                    extra_packages: r.extra_packages.clone(),
                    mirror: r.mirror.clone(),
                    keyrings: ctx.paths(&r.keyrings),
                    keys_dirs: ctx.paths(&r.keys_dirs),
                    agent: ctx.agent(&r.agent_bin, &r.agent_tarball, &r.no_agent)?,
                    agent_version: r.agent_version.clone(),
                    kernel_modules: r.kernel_modules.as_deref().map(|p| ctx.path(p)),
                    prune_units: r.prune_units,
                    run_scripts: None,
                },
                initrd: r.initrd.as_ref().map(|x| ctx.initrd(x)).transpose()?,
                image: r.image.as_ref().map(|x| ctx.image(x)).transpose()?,
            });
        }
        if initrd.is_none()
            && image.is_none()
            && variants
                .iter()
                .all(|v| v.initrd.is_none() && v.image.is_none())
        {
            return Err(refused(format!(
                "{at}: guest \"{}\" has neither [guest.initrd] nor [guest.image]: nothing to build from it",
                raw.name.get_ref()
            )));
        }
        Ok(Guest {
            name: raw.name.get_ref().clone(),
            at,
            distro: raw.distro.get_ref().clone(),
            distro_at: ctx.loc(raw.distro.span()),
            version: raw.version.as_ref().map(|v| v.get_ref().clone()),
            arches,
            arches_at,
            init,
            rootfs,
            per_arch,
            initrd,
            image,
            variants,
        })
    }
}

fn names(arches: &[Arch]) -> String {
    arches
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where the lock file of a build file lives by default: beside it, `NAME.lock` for
/// `NAME.toml` (`osbuilder.lock` for `osbuilder.toml`).
pub fn default_lock_path(build_file: &Path) -> PathBuf {
    build_file.with_extension("lock")
}

/// Read the build file, with the error a missing default file deserves.
pub fn load_default(path: Option<&Path>) -> Result<BuildFile> {
    let p = path.unwrap_or(Path::new("osbuilder.toml"));
    BuildFile::load(p).with_context(|| format!("loading build file {}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<BuildFile> {
        BuildFile::parse(Path::new("osbuilder.toml"), Path::new("/b"), text)
    }

    fn err(text: &str) -> String {
        let e = parse(text).unwrap_err();
        assert!(crate::error::is_refused(&e), "{e:#}");
        format!("{e:#}")
    }

    const GOOD: &str = r#"
[[guest]]
name = "initrd"
distro = "debian"
arches = ["x86_64", "arm64"]
init = "agent-init"

[guest.initrd]
compression = "zstd"

[guest.arch.aarch64]
agent_bin = "agent.sh"
extra_packages = ["busybox-static"]

[[guest.variant]]
name = "confidential"
extra_packages = ["cryptsetup"]
[guest.variant.image]
measured = true
"#;

    #[test]
    fn a_good_file_parses_with_paths_from_its_folder() {
        let f = parse(GOOD).unwrap();
        let g = &f.guests[0];
        assert_eq!(g.arches, vec![Arch::X86_64, Arch::Aarch64]);
        assert_eq!(g.init, Some(InitMode::AgentInit));
        assert_eq!(
            g.initrd.as_ref().unwrap().0.compression,
            Some(Compression::Zstd)
        );
        let (a, at) = &g.per_arch[&Arch::Aarch64];
        assert_eq!(a.agent, Some(Agent::Bin(PathBuf::from("/b/agent.sh"))));
        assert_eq!(at.line, 11);
        assert_eq!(g.variants[0].image.as_ref().unwrap().0.measured, Some(true));
        assert_eq!(g.at.line, 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_line() {
        let e = err(
            "[[guest]]\nname = \"a\"\ndistro = \"debian\"\n[guest.initrd]\ncompresion = \"gzip\"\n",
        );
        assert!(
            e.starts_with("osbuilder.toml:5: unknown field `compresion`"),
            "{e}"
        );
        let e = err(
            "[[guest]]\nname = \"a\"\ndistro = \"debian\"\n[guest.initrd]\ncompression = \"lz4\"\n",
        );
        assert!(
            e.starts_with("osbuilder.toml:5: compression = \"lz4\" is not one of \"gzip\""),
            "{e}"
        );
        let e = err(
            "[[guest]]\nname = \"a\"\ndistro = \"debian\"\narches = [\"x86_64\", \"sparc\"]\n[guest.image]\n",
        );
        assert!(e.starts_with("osbuilder.toml:4: "), "{e}");
        assert!(e.contains("sparc"), "{e}");
        let e =
            err("[[guest]]\nname = \"a\"\ndistro = \"debian\"\n[guest.image]\nsize_mb = \"big\"\n");
        assert!(e.starts_with("osbuilder.toml:5: invalid type"), "{e}");
        let e = err("[[guest]]\nname = \"a b\"\ndistro = \"debian\"\n[guest.image]\n");
        assert!(e.starts_with("osbuilder.toml:2: guest name"), "{e}");
        let e = err("[[guest]]\nname = \"a\"\ndistro = \"debian\"\n");
        assert!(
            e.contains("neither [guest.initrd] nor [guest.image]"),
            "{e}"
        );
        let e = err(
            "[[guest]]\nname = \"a\"\ndistro = \"debian\"\n[guest.image]\n[[guest]]\nname = \"a\"\ndistro = \"debian\"\n[guest.image]\n",
        );
        assert!(
            e.starts_with(
                "osbuilder.toml:5: a second guest named \"a\" (the first is at osbuilder.toml:1)"
            ),
            "{e}"
        );
        let e = err(
            "[[guest]]\nname = \"a\"\ndistro = \"debian\"\narches = [\"x86_64\"]\n[guest.image]\n[guest.arch.s390x]\nmirror = \"x\"\n",
        );
        assert!(
            e.starts_with("osbuilder.toml:6: [guest.arch.s390x]: s390x is not in"),
            "{e}"
        );
    }

    #[test]
    fn overlays_replace_only_what_they_set() {
        let base = RootfsKeys {
            packages: Some(vec!["a".into()]),
            mirror: Some("m".into()),
            ..Default::default()
        };
        let over = RootfsKeys {
            packages: Some(vec!["b".into()]),
            ..Default::default()
        };
        let r = base.overlay(&over);
        assert_eq!(r.packages, Some(vec!["b".into()]));
        assert_eq!(r.mirror, Some("m".into()));
    }
}
