//! Distro definitions, loaded from `distros/<name>/distro.toml`.
//!
//! The files are embedded at build time (see build.rs); `$OSBUILDER_DISTROS_DIR` points at
//! another folder of the same shape, so a site can add or patch a distro without a rebuild.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_distros.rs"));
}

/// How the agent is started in the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InitMode {
    /// systemd is PID 1 and starts kata-agent.service.
    Systemd,
    /// The agent itself is PID 1 (/sbin/init).
    AgentInit,
}

impl InitMode {
    pub const ALL: [InitMode; 2] = [InitMode::Systemd, InitMode::AgentInit];

    pub fn name(self) -> &'static str {
        match self {
            InitMode::Systemd => "systemd",
            InitMode::AgentInit => "agent-init",
        }
    }
}

impl fmt::Display for InitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for InitMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "systemd" => Ok(InitMode::Systemd),
            "agent-init" | "agent" | "kata-agent" => Ok(InitMode::AgentInit),
            _ => Err(format!(
                "unknown init mode '{s}'; supported: systemd, agent-init"
            )),
        }
    }
}

/// Which package format (and so which native backend) a distro uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    Deb,
    Apk,
    Rpm,
}

impl PackageFormat {
    pub fn name(self) -> &'static str {
        match self {
            PackageFormat::Deb => "deb",
            PackageFormat::Apk => "apk",
            PackageFormat::Rpm => "rpm",
        }
    }

    /// The package-URL type of this format's packages (purl-spec: deb, apk, rpm).
    pub fn purl_type(self) -> &'static str {
        self.name()
    }

    /// The architecture as this format's packages and indexes name it.
    pub fn arch_name(self, arch: Arch) -> &'static str {
        match self {
            PackageFormat::Deb => arch.debian(),
            PackageFormat::Apk => arch.alpine(),
            PackageFormat::Rpm => arch.rpm(),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Used for every arch without a `per_arch` entry. Empty: none configured.
    #[serde(default)]
    pub default: String,
    #[serde(default)]
    pub per_arch: BTreeMap<Arch, String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSets {
    /// Installed in every init mode.
    #[serde(default)]
    pub base: Vec<String>,
    /// Added per init mode.
    #[serde(default)]
    pub init: BTreeMap<InitMode, Vec<String>>,
    /// Added per arch.
    #[serde(default)]
    pub arch: BTreeMap<Arch, Vec<String>>,
    /// `--package-set minimal`: the whole set per init mode, replacing base + init (the
    /// per-arch additions still apply). An init mode without one has no minimal set.
    #[serde(default)]
    pub minimal: BTreeMap<InitMode, Vec<String>>,
}

/// Which of a distro's package sets a guest gets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageSet {
    /// Kata's list for the distro (`[packages] base` + `[packages.init]`).
    #[default]
    Default,
    /// Only what an agent guest needs (`[packages.minimal]`).
    Minimal,
}

/// Slim guests (`[slim]` in distro.toml).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Slim {
    /// dpkg-style path filters applied to every package of a guest while it is unpacked
    /// (`path-exclude=GLOB`, `path-include=GLOB`, in order; the last match decides), unless
    /// `--keep-docs`. Hosts (`--profile`) keep everything.
    #[serde(default)]
    pub path_filters: Vec<String>,
}

/// How an rpm distro's repositories are laid out and trusted (`[rpm]` in distro.toml).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RpmConfig {
    /// Repository paths under the mirror; `{version}` and `{arch}` are substituted.
    pub repos: Vec<String>,
    /// OpenPGP keys (files in the distro folder) that sign packages (dnf's gpgcheck).
    #[serde(default)]
    pub package_keys: Vec<String>,
    /// OpenPGP keys that sign `repodata/repomd.xml` (its detached `repomd.xml.asc`).
    #[serde(default)]
    pub metadata_keys: Vec<String>,
    /// The primary-key fingerprints the shipped key files must have (a swapped key file
    /// is refused).
    #[serde(default)]
    pub fingerprints: Vec<String>,
    /// repomd.xml must carry a valid detached signature (dnf's repo_gpgcheck).
    #[serde(default)]
    pub repo_gpgcheck: bool,
    /// The distro publishes unsigned packages (installed with a warning, recorded in
    /// osbuilder.yaml); otherwise an unsigned package is refused.
    #[serde(default)]
    pub unsigned_packages: bool,
    /// When the version is `latest`, the release number is read from this file under
    /// the mirror.
    #[serde(default)]
    pub latest_file: Option<String>,
    /// Packages installed before all others when in the plan (the directory layout).
    #[serde(default)]
    pub install_first: Vec<String>,
    /// Folders holding `passwd` and `group`, in the order file owners are looked up.
    #[serde(default = "default_account_dirs")]
    pub account_dirs: Vec<String>,
}

fn default_account_dirs() -> Vec<String> {
    vec!["etc".into()]
}

/// One `distro.toml`, plus the folder it came from (for keys and keyrings).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Distro {
    pub name: String,
    /// Other names the distro answers to (`cbl-mariner` for azurelinux).
    #[serde(default)]
    pub aliases: Vec<String>,
    pub pretty_name: String,
    pub package_format: PackageFormat,
    pub default_version: String,
    /// ISO date after which the distro gets no updates; shown in the matrix.
    #[serde(default)]
    pub end_of_life: Option<String>,
    pub arches: Vec<Arch>,
    pub init_modes: Vec<InitMode>,
    pub default_init: InitMode,
    #[serde(default)]
    pub components: Vec<String>,
    /// OpenPGP keyrings (file names in the distro folder) for deb repositories.
    #[serde(default)]
    pub keyrings: Vec<String>,
    /// Folder (in the distro folder) of RSA public keys for apk repositories.
    #[serde(default)]
    pub keys_dir: Option<String>,
    #[serde(default)]
    pub mirror: MirrorConfig,
    #[serde(default)]
    pub packages: PackageSets,
    #[serde(default)]
    pub slim: Slim,
    /// rpm repositories: layout and trust.
    #[serde(default)]
    pub rpm: Option<RpmConfig>,
    /// The distro's kernel (meta)package per arch, for `osbuilder kernel fetch`.
    #[serde(default)]
    pub kernel: BTreeMap<Arch, String>,
    /// The builder container for `--builder podman|docker` (none: native only).
    #[serde(default)]
    pub builder: Option<crate::builder::definition::BuilderDef>,
    /// Files of the distro folder other than distro.toml, by relative path.
    #[serde(skip)]
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Distro {
    pub fn supports(&self, arch: Arch, init: InitMode) -> bool {
        self.arches.contains(&arch) && self.init_modes.contains(&init)
    }

    /// The package set Kata would install for this init mode and arch, in data order.
    pub fn package_set(&self, arch: Arch, init: InitMode) -> Vec<String> {
        let mut pkgs = self.packages.base.clone();
        pkgs.extend(self.packages.init.get(&init).cloned().unwrap_or_default());
        pkgs.extend(self.packages.arch.get(&arch).cloned().unwrap_or_default());
        pkgs
    }

    /// The packages of `set` for this init mode and arch; None when the distro has no
    /// such set for the init mode.
    pub fn package_set_of(
        &self,
        set: PackageSet,
        arch: Arch,
        init: InitMode,
    ) -> Option<Vec<String>> {
        match set {
            PackageSet::Default => Some(self.package_set(arch, init)),
            PackageSet::Minimal => {
                let mut pkgs = self.packages.minimal.get(&init)?.clone();
                pkgs.extend(self.packages.arch.get(&arch).cloned().unwrap_or_default());
                Some(pkgs)
            }
        }
    }

    /// The `[slim]` path filters for a guest.
    pub fn path_filter(&self) -> Result<crate::pkg::pathfilter::PathFilter> {
        let rules = self
            .slim
            .path_filters
            .iter()
            .map(|l| crate::pkg::pathfilter::Rule::parse(l))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("distros/{}/distro.toml [slim]", self.name))?;
        Ok(crate::pkg::pathfilter::PathFilter { rules })
    }

    /// A file shipped in the distro folder (a keyring, a key…).
    pub fn file(&self, rel: &str) -> Option<&[u8]> {
        self.files.get(rel).map(Vec::as_slice)
    }

    /// Files under a sub-folder, e.g. the apk keys, as (file name, contents).
    pub fn files_under<'a>(&'a self, dir: &'a str) -> impl Iterator<Item = (&'a str, &'a [u8])> {
        self.files.iter().filter_map(move |(k, v)| {
            k.strip_prefix(dir)
                .and_then(|r| r.strip_prefix('/'))
                .filter(|r| !r.contains('/'))
                .map(|r| (r, v.as_slice()))
        })
    }

    fn validate(&self, folder: &str) -> Result<()> {
        if self.name != folder {
            bail!(
                "distros/{folder}/distro.toml names itself '{}'; the name must match the folder",
                self.name
            );
        }
        if self.arches.is_empty() || self.init_modes.is_empty() {
            bail!("distros/{folder}/distro.toml: arches and init_modes must not be empty");
        }
        if !self.init_modes.contains(&self.default_init) {
            bail!(
                "distros/{folder}/distro.toml: default_init {} is not one of its init_modes",
                self.default_init
            );
        }
        if let Some(b) = &self.builder {
            b.validate(folder)?;
        }
        self.path_filter()?;
        let rpm_keys = self
            .rpm
            .iter()
            .flat_map(|r| r.package_keys.iter().chain(&r.metadata_keys));
        for k in self.keyrings.iter().chain(rpm_keys) {
            if !self.files.contains_key(k) {
                bail!(
                    "distros/{folder}/distro.toml lists keyring '{k}', which is not in the folder"
                );
            }
        }
        if self.package_format == PackageFormat::Rpm && self.rpm.is_none() {
            bail!("distros/{folder}/distro.toml: an rpm distro needs an [rpm] table (repos, keys)");
        }
        Ok(())
    }
}

/// All known distros, by name.
#[derive(Clone, Debug)]
pub struct DistroSet {
    distros: BTreeMap<String, Distro>,
    source: String,
}

impl DistroSet {
    /// The distros from `$OSBUILDER_DISTROS_DIR` if set, else those built into the binary.
    pub fn load() -> Result<DistroSet> {
        match std::env::var_os("OSBUILDER_DISTROS_DIR") {
            Some(dir) if !dir.is_empty() => DistroSet::from_dir(Path::new(&dir)),
            _ => DistroSet::embedded(),
        }
    }

    pub fn embedded() -> Result<DistroSet> {
        let files = embedded::EMBEDDED_DISTRO_FILES
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()));
        DistroSet::from_files(files, "built-in distros/".into())
    }

    pub fn from_dir(dir: &Path) -> Result<DistroSet> {
        let mut files = Vec::new();
        walk_files(dir, dir, &mut files)
            .with_context(|| format!("reading distro definitions from {}", dir.display()))?;
        DistroSet::from_files(files, dir.display().to_string())
    }

    fn from_files(
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
        source: String,
    ) -> Result<DistroSet> {
        let mut by_folder: BTreeMap<String, BTreeMap<String, Vec<u8>>> = BTreeMap::new();
        for (path, bytes) in files {
            if let Some((folder, rest)) = path.split_once('/') {
                by_folder
                    .entry(folder.to_string())
                    .or_default()
                    .insert(rest.to_string(), bytes);
            }
        }
        let mut distros = BTreeMap::new();
        for (folder, mut files) in by_folder {
            let Some(toml_bytes) = files.remove("distro.toml") else {
                continue;
            };
            let text = String::from_utf8(toml_bytes)
                .with_context(|| format!("{source}{folder}/distro.toml is not UTF-8"))?;
            let mut d: Distro = toml::from_str(&text)
                .with_context(|| format!("parsing {source}/{folder}/distro.toml"))?;
            d.files = files;
            d.validate(&folder)?;
            distros.insert(folder, d);
        }
        if distros.is_empty() {
            bail!("no distro definitions found in {source} (expected <name>/distro.toml folders)");
        }
        Ok(DistroSet { distros, source })
    }

    /// The distro called `name`, or whose `aliases` include it.
    pub fn get(&self, name: &str) -> Option<&Distro> {
        self.distros.get(name).or_else(|| {
            self.distros
                .values()
                .find(|d| d.aliases.iter().any(|a| a == name))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Distro> {
        self.distros.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.distros.keys().map(String::as_str).collect()
    }

    pub fn source(&self) -> &str {
        &self.source
    }
}

fn walk_files(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk_files(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
            out.push((rel, std::fs::read(&p)?));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_distros_load_and_match_the_brief() {
        let set = DistroSet::embedded().unwrap();
        assert_eq!(
            set.names(),
            vec!["alpine", "azurelinux", "clearlinux", "debian", "ubuntu"]
        );
        let azure = set.get("cbl-mariner").unwrap();
        assert_eq!(azure.name, "azurelinux");
        assert_eq!(azure.arches, vec![Arch::X86_64, Arch::Aarch64]);
        assert!(azure.rpm.as_ref().unwrap().repo_gpgcheck);
        assert!(
            set.get("clearlinux")
                .unwrap()
                .rpm
                .as_ref()
                .unwrap()
                .unsigned_packages
        );
        let debian = set.get("debian").unwrap();
        assert_eq!(debian.default_version, "trixie");
        assert_eq!(debian.default_init, InitMode::Systemd);
        assert_eq!(set.get("ubuntu").unwrap().default_version, "resolute");
        let alpine = set.get("alpine").unwrap();
        assert_eq!(alpine.init_modes, vec![InitMode::AgentInit]);
        assert!(alpine.default_version.starts_with("3.2"));
        assert_eq!(alpine.files_under("keys").count(), 7);
        let clear = set.get("clearlinux").unwrap();
        assert_eq!(clear.arches, vec![Arch::X86_64]);
        assert!(clear.end_of_life.is_some());
    }

    #[test]
    fn package_sets_follow_kata() {
        let set = DistroSet::embedded().unwrap();
        let d = set.get("debian").unwrap();
        let systemd = d.package_set(Arch::X86_64, InitMode::Systemd);
        let agent = d.package_set(Arch::X86_64, InitMode::AgentInit);
        assert!(systemd.contains(&"init".to_string()));
        assert!(!agent.contains(&"init".to_string()));
        assert!(
            d.package_set(Arch::S390x, InitMode::AgentInit)
                .contains(&"libcurl4".to_string())
        );
    }

    #[test]
    fn a_new_folder_adds_a_distro_and_bad_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mini")).unwrap();
        let toml = r#"
name = "mini"
pretty_name = "Mini"
package_format = "apk"
default_version = "1"
arches = ["arm64"]
init_modes = ["agent-init"]
default_init = "agent-init"
"#;
        std::fs::write(dir.path().join("mini/distro.toml"), toml).unwrap();
        let set = DistroSet::from_dir(dir.path()).unwrap();
        assert_eq!(set.get("mini").unwrap().arches, vec![Arch::Aarch64]);

        std::fs::write(
            dir.path().join("mini/distro.toml"),
            toml.replace(
                "default_init = \"agent-init\"",
                "default_init = \"systemd\"",
            ),
        )
        .unwrap();
        let err = format!("{:#}", DistroSet::from_dir(dir.path()).unwrap_err());
        assert!(err.contains("default_init"), "{err}");

        std::fs::write(
            dir.path().join("mini/distro.toml"),
            toml.replace("arm64", "mips"),
        )
        .unwrap();
        let err = format!("{:#}", DistroSet::from_dir(dir.path()).unwrap_err());
        assert!(err.contains("mips"), "{err}");
    }
}
