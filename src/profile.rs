//! Host profiles, loaded from `profiles/<name>.toml`: what makes a rootfs a machine's own OS
//! rather than a Kata guest — the packages to add per distro and arch, files to write, units
//! to enable, and how the disk boots (EFI system partition, boot program, kernel command
//! line). EWAOL's two images are the shipped profiles: `baremetal` (a container host) and
//! `virtualization` (the same plus Xen, inheriting from it).
//!
//! Data, not code: the files are embedded at build time (see build.rs) and
//! `$OSBUILDER_PROFILES_DIR` points at another folder of the same shape.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::arch::Arch;
use crate::error::refused;
use crate::image::uefi::{Loader, UefiBoot};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_profiles.rs"));
}

/// Packages a profile adds for one distro.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DistroPackages {
    /// For every arch.
    #[serde(default)]
    pub all: Vec<String>,
    /// Per arch (kernels, the hypervisor).
    #[serde(default)]
    pub arch: BTreeMap<Arch, Vec<String>>,
}

/// Units to enable (as `systemctl enable` would, from their [Install] sections).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Units {
    #[serde(default)]
    pub enable: Vec<String>,
}

/// A file the profile writes into the rootfs (owned by root).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Absolute path in the rootfs.
    pub path: String,
    /// Permission bits; default 0o644.
    #[serde(default = "default_mode")]
    pub mode: u32,
    /// The contents; a leading newline (TOML's multi-line strings) is dropped.
    pub content: String,
}

fn default_mode() -> u32 {
    0o644
}

/// How the host's disk boots (`osbuilder image --profile`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageSection {
    pub loader: Option<Loader>,
    /// Size of the EFI system partition, MiB.
    pub esp_mb: Option<u64>,
    /// Free space left in the root filesystem, MiB.
    pub free_mb: Option<u64>,
    /// Kernel command line per arch (after `root=PARTUUID=… rw`).
    #[serde(default)]
    pub cmdline: BTreeMap<Arch, String>,
    /// Xen's command line per arch (loader = "xen").
    #[serde(default)]
    pub xen_options: BTreeMap<Arch, String>,
}

/// One `profiles/<name>.toml` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileFile {
    name: String,
    description: String,
    /// A profile this one extends ("the same plus …").
    #[serde(default)]
    inherits: Option<String>,
    #[serde(default)]
    arches: Vec<Arch>,
    #[serde(default)]
    packages: BTreeMap<String, DistroPackages>,
    #[serde(default)]
    units: Units,
    #[serde(default)]
    files: Vec<File>,
    #[serde(default)]
    image: ImageSection,
}

/// A profile with what it inherits merged in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub name: String,
    pub description: String,
    /// The chain of profiles it is made of, base first (`["baremetal", "virtualization"]`).
    pub lineage: Vec<String>,
    pub arches: Vec<Arch>,
    pub packages: BTreeMap<String, DistroPackages>,
    pub units: Vec<String>,
    /// By path; a child's file replaces its parent's.
    pub files: Vec<File>,
    pub image: ImageSection,
}

/// Default ESP size when a profile names none (MiB).
pub const DEFAULT_ESP_MB: u64 = 128;

impl Profile {
    fn from_file(f: ProfileFile) -> Profile {
        Profile {
            lineage: vec![f.name.clone()],
            name: f.name,
            description: f.description,
            arches: f.arches,
            packages: f.packages,
            units: f.units.enable,
            files: f.files,
            image: f.image,
        }
    }

    /// `child` on top of `self`: lists extend, a child's scalar or per-arch value wins.
    fn extended_by(mut self, child: ProfileFile) -> Profile {
        self.lineage.push(child.name.clone());
        self.name = child.name;
        self.description = child.description;
        if !child.arches.is_empty() {
            self.arches = child.arches;
        }
        for (distro, p) in child.packages {
            let mine = self.packages.entry(distro).or_default();
            mine.all.extend(p.all);
            for (arch, list) in p.arch {
                mine.arch.entry(arch).or_default().extend(list);
            }
        }
        for u in child.units.enable {
            if !self.units.contains(&u) {
                self.units.push(u);
            }
        }
        for f in child.files {
            self.files.retain(|mine| mine.path != f.path);
            self.files.push(f);
        }
        let (mine, theirs) = (&mut self.image, child.image);
        mine.loader = theirs.loader.or(mine.loader);
        mine.esp_mb = theirs.esp_mb.or(mine.esp_mb);
        mine.free_mb = theirs.free_mb.or(mine.free_mb);
        mine.cmdline.extend(theirs.cmdline);
        mine.xen_options.extend(theirs.xen_options);
        self
    }

    /// Refuse an arch or distro the profile has no data for, naming what it has.
    pub fn check(&self, distro: &str, arch: Arch) -> Result<()> {
        if !self.arches.contains(&arch) {
            return Err(refused(format!(
                "profile {} is for {}, not {arch}",
                self.name,
                self.arches
                    .iter()
                    .map(|a| a.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if !self.packages.contains_key(distro) {
            return Err(refused(format!(
                "profile {} has no package list for {distro}; it has one for: {}",
                self.name,
                self.packages.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }

    /// The packages the profile adds for `distro` on `arch`, in data order, once each.
    pub fn packages_for(&self, distro: &str, arch: Arch) -> Result<Vec<String>> {
        self.check(distro, arch)?;
        let p = &self.packages[distro];
        let mut out: Vec<String> = Vec::new();
        for name in p.all.iter().chain(p.arch.get(&arch).into_iter().flatten()) {
            if !out.contains(name) {
                out.push(name.clone());
            }
        }
        Ok(out)
    }

    /// How a disk of this profile boots on `arch`; `cmdline` is added to the profile's own,
    /// `esp_mb` overrides its ESP size.
    pub fn uefi(&self, arch: Arch, cmdline: Option<&str>, esp_mb: Option<u64>) -> Result<UefiBoot> {
        let Some(loader) = self.image.loader else {
            return Err(refused(format!(
                "profile {} does not say how its disk boots ([image] loader)",
                self.name
            )));
        };
        if !self.arches.contains(&arch) {
            return Err(refused(format!(
                "profile {} is not for {arch}: pass --arch with one of its arches",
                self.name
            )));
        }
        let mut line = self.image.cmdline.get(&arch).cloned().unwrap_or_default();
        if let Some(extra) = cmdline.filter(|c| !c.trim().is_empty()) {
            line = format!("{line} {}", extra.trim()).trim().to_string();
        }
        Ok(UefiBoot {
            loader,
            esp_mb: esp_mb.or(self.image.esp_mb).unwrap_or(DEFAULT_ESP_MB),
            cmdline: line,
            xen_options: self
                .image
                .xen_options
                .get(&arch)
                .cloned()
                .unwrap_or_default(),
        })
    }

    /// The contents of a profile file as written into the rootfs.
    pub fn file_bytes(f: &File) -> &[u8] {
        f.content
            .strip_prefix('\n')
            .unwrap_or(&f.content)
            .as_bytes()
    }
}

/// All profiles, by name.
#[derive(Clone, Debug)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Profile>,
}

impl ProfileSet {
    /// The profiles from `$OSBUILDER_PROFILES_DIR` if set, else those built into the binary.
    pub fn load() -> Result<ProfileSet> {
        match std::env::var_os("OSBUILDER_PROFILES_DIR") {
            Some(dir) if !dir.is_empty() => ProfileSet::from_dir(Path::new(&dir)),
            _ => ProfileSet::from_files(
                embedded::EMBEDDED_PROFILE_FILES
                    .iter()
                    .map(|(p, b)| (p.to_string(), b.to_vec())),
                "built-in profiles/",
            ),
        }
    }

    pub fn from_dir(dir: &Path) -> Result<ProfileSet> {
        let mut files = Vec::new();
        let rd = std::fs::read_dir(dir)
            .with_context(|| format!("reading profiles from {}", crate::show::path(dir)))?;
        for e in rd {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "toml") {
                let name = p
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned();
                files.push((name, std::fs::read(&p)?));
            }
        }
        ProfileSet::from_files(files, &format!("{}/", crate::show::path(dir)))
    }

    fn from_files(
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
        source: &str,
    ) -> Result<ProfileSet> {
        let mut raw = BTreeMap::new();
        for (path, bytes) in files {
            let Some(stem) = path.strip_suffix(".toml").filter(|s| !s.contains('/')) else {
                continue;
            };
            let text =
                String::from_utf8(bytes).with_context(|| format!("{source}{path} is not UTF-8"))?;
            let f: ProfileFile =
                toml::from_str(&text).with_context(|| format!("parsing {source}{path}"))?;
            if f.name != stem {
                bail!(
                    "{source}{path} names itself '{}'; the name must match the file",
                    f.name
                );
            }
            raw.insert(stem.to_string(), f);
        }
        let mut profiles = BTreeMap::new();
        for name in raw.keys() {
            profiles.insert(name.clone(), resolve(&raw, name, source)?);
        }
        Ok(ProfileSet { profiles })
    }

    /// The profile called `name`, or a refusal listing the known ones.
    pub fn get(&self, name: &str) -> Result<&Profile> {
        self.profiles.get(name).ok_or_else(|| {
            refused(format!(
                "unknown profile '{name}'; known: {}",
                self.names().join(", ")
            ))
        })
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }
}

/// A profile with its ancestors merged, base first.
fn resolve(raw: &BTreeMap<String, ProfileFile>, name: &str, source: &str) -> Result<Profile> {
    let mut chain = vec![name.to_string()];
    while let Some(parent) = raw[chain.last().expect("non-empty")].inherits.clone() {
        if chain.contains(&parent) {
            bail!(
                "{source}: profiles inherit from each other in a loop: {}",
                chain.join(" → ")
            );
        }
        if !raw.contains_key(&parent) {
            bail!(
                "{source}{}.toml inherits from unknown profile '{parent}'",
                chain.last().unwrap()
            );
        }
        chain.push(parent);
    }
    let mut chain = chain.into_iter().rev();
    let base = chain.next().expect("non-empty");
    let mut p = Profile::from_file(raw[&base].clone());
    for child in chain {
        p = p.extended_by(raw[&child].clone());
    }
    for f in &p.files {
        if !f.path.starts_with('/') || f.path.split('/').any(|c| c == "..") {
            bail!(
                "{source}{}.toml: file path '{}' must be absolute, without '..'",
                p.name,
                f.path
            );
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profiles_virtualization_is_baremetal_plus_xen() {
        let set = ProfileSet::load().unwrap();
        assert_eq!(set.names(), ["baremetal", "virtualization"]);
        let bm = set.get("baremetal").unwrap();
        let virt = set.get("virtualization").unwrap();
        assert_eq!(virt.lineage, ["baremetal", "virtualization"]);
        let bm_pkgs = bm.packages_for("debian", Arch::Aarch64).unwrap();
        let virt_pkgs = virt.packages_for("debian", Arch::Aarch64).unwrap();
        for p in [
            "containerd",
            "runc",
            "systemd-boot-efi",
            "linux-image-cloud-arm64",
        ] {
            assert!(bm_pkgs.contains(&p.to_string()), "{p}");
        }
        assert!(bm_pkgs.iter().all(|p| virt_pkgs.contains(p)));
        assert!(virt_pkgs.contains(&"xen-system-arm64".to_string()));
        assert!(!virt_pkgs.contains(&"xen-system-amd64".to_string()));
        assert!(virt.units.contains(&"xendomains.service".to_string()));
        assert!(virt.files.iter().any(|f| f.path.ends_with("xenbr0.netdev")));
        // The child's file replaces the parent's at the same path.
        assert_eq!(
            virt.files
                .iter()
                .filter(|f| f.path == "/etc/systemd/network/80-wired.network")
                .count(),
            1
        );
        let u = virt.uefi(Arch::Aarch64, Some("nokaslr"), None).unwrap();
        assert_eq!(u.loader, Loader::Xen);
        assert_eq!(u.cmdline, "console=hvc0 nokaslr");
        assert!(u.xen_options.contains("dom0_mem="));
        assert_eq!(bm.uefi(Arch::X86_64, None, Some(200)).unwrap().esp_mb, 200);
    }

    #[test]
    fn unknown_names_and_cells_are_refused() {
        let set = ProfileSet::load().unwrap();
        let e = set.get("cloud").unwrap_err();
        assert!(crate::error::is_refused(&e));
        assert!(e.to_string().contains("baremetal, virtualization"), "{e}");
        let bm = set.get("baremetal").unwrap();
        let e = bm.packages_for("alpine", Arch::X86_64).unwrap_err();
        assert!(
            crate::error::is_refused(&e) && e.to_string().contains("debian"),
            "{e}"
        );
        assert!(bm.check("debian", Arch::S390x).is_err());
    }

    #[test]
    fn inheritance_loops_are_reported() {
        let d = tempfile::tempdir().unwrap();
        for (a, b) in [("a", "b"), ("b", "a")] {
            std::fs::write(
                d.path().join(format!("{a}.toml")),
                format!("name = \"{a}\"\ndescription = \"x\"\ninherits = \"{b}\"\n"),
            )
            .unwrap();
        }
        let e = format!("{:#}", ProfileSet::from_dir(d.path()).unwrap_err());
        assert!(e.contains("loop"), "{e}");
    }
}
