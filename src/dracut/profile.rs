//! dracut profiles: `dracut-profiles/<name>/`, dracut.conf.d sets kept as data. A profile is
//! a folder of `*.conf` files (dracut configuration, sourced by dracut in name order with
//! those of the other selected profiles) and optionally an `include/` tree of files added
//! to the initrd (the image-boot profile's `/init`). Adding a profile is adding a folder.
//!
//! The folder is embedded at build time (build.rs); `$OSBUILDER_DRACUT_PROFILES_DIR` points
//! at another folder of the same shape.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};

use crate::error::refused;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_dracut_profiles.rs"));
}

/// The profile used when none is named: Kata's own configuration.
pub const DEFAULT: &str = "kata";

/// One profile.
#[derive(Clone, Debug)]
pub struct Profile {
    pub name: String,
    /// `*.conf` files: (file name, contents).
    pub confs: Vec<(String, Vec<u8>)>,
    /// Files under `include/`: (path inside the initrd, contents).
    pub include: Vec<(String, Vec<u8>)>,
}

impl Profile {
    /// The first comment line of the first conf file, without the `#`.
    pub fn summary(&self) -> String {
        self.confs
            .first()
            .and_then(|(_, b)| {
                String::from_utf8_lossy(b)
                    .lines()
                    .find_map(|l| l.strip_prefix('#').map(|s| s.trim().to_string()))
            })
            .unwrap_or_default()
    }
}

/// Every profile known, by name.
#[derive(Clone, Debug)]
pub struct ProfileSet {
    profiles: BTreeMap<String, Profile>,
    source: String,
}

impl ProfileSet {
    /// The profiles from `$OSBUILDER_DRACUT_PROFILES_DIR` if set, else the built-in ones.
    pub fn load() -> Result<ProfileSet> {
        match std::env::var_os("OSBUILDER_DRACUT_PROFILES_DIR") {
            Some(dir) if !dir.is_empty() => ProfileSet::from_dir(Path::new(&dir)),
            _ => ProfileSet::embedded(),
        }
    }

    pub fn embedded() -> Result<ProfileSet> {
        let files = embedded::EMBEDDED_DRACUT_PROFILE_FILES
            .iter()
            .map(|(p, b)| (p.to_string(), b.to_vec()));
        ProfileSet::from_files(files, "built-in dracut-profiles/".into())
    }

    pub fn from_dir(dir: &Path) -> Result<ProfileSet> {
        let mut files = Vec::new();
        walk(dir, dir, &mut files)
            .with_context(|| format!("reading dracut profiles from {}", dir.display()))?;
        ProfileSet::from_files(files, format!("{}/", dir.display()))
    }

    fn from_files(
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
        source: String,
    ) -> Result<ProfileSet> {
        let mut profiles: BTreeMap<String, Profile> = BTreeMap::new();
        for (path, bytes) in files {
            let Some((name, rest)) = path.split_once('/') else {
                continue; // a file beside the folders (a README)
            };
            let p = profiles.entry(name.to_string()).or_insert_with(|| Profile {
                name: name.to_string(),
                confs: Vec::new(),
                include: Vec::new(),
            });
            if let Some(inc) = rest.strip_prefix("include/") {
                p.include.push((inc.to_string(), bytes));
            } else if rest.ends_with(".conf") && !rest.contains('/') {
                p.confs.push((rest.to_string(), bytes));
            }
        }
        profiles.retain(|_, p| !p.confs.is_empty());
        for p in profiles.values_mut() {
            p.confs.sort();
            p.include.sort();
        }
        if profiles.is_empty() {
            bail!("no dracut profiles found in {source} (expected <name>/*.conf folders)");
        }
        Ok(ProfileSet { profiles, source })
    }

    pub fn names(&self) -> Vec<&str> {
        self.profiles.keys().map(String::as_str).collect()
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.profiles.get(name)
    }

    /// The profiles named, in order, each once; an unknown name is refused with the list.
    pub fn select(&self, names: &[String]) -> Result<Vec<&Profile>> {
        let mut out: Vec<&Profile> = Vec::new();
        for n in names {
            let Some(p) = self.get(n) else {
                let known: Vec<String> = self
                    .profiles
                    .values()
                    .map(|p| format!("  {}: {}", p.name, p.summary()))
                    .collect();
                return Err(refused(format!(
                    "unknown dracut profile '{n}' (from {}). Known profiles:\n{}",
                    self.source,
                    known.join("\n")
                )));
            };
            if !out.iter().any(|q| q.name == p.name) {
                out.push(p);
            }
        }
        Ok(out)
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(root, &p, out)?;
        } else {
            let rel = p.strip_prefix(root)?.to_string_lossy().into_owned();
            out.push((rel, std::fs::read(&p)?));
        }
    }
    Ok(())
}

/// The merged configuration of the selected profiles: each conf under a name that keeps
/// dracut's order (its number first) and cannot collide across profiles.
pub fn merged_confs(profiles: &[&Profile]) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = profiles
        .iter()
        .flat_map(|p| {
            p.confs.iter().map(move |(name, bytes)| {
                let stem = name.strip_suffix(".conf").unwrap_or(name);
                (format!("{stem}.{}.conf", p.name), bytes.clone())
            })
        })
        .collect();
    // dracut sources the folder in `sort -V` order; plain byte order agrees for the
    // NN-name files profiles use.
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The kernel modules the configuration asks for, in order: the words of `drivers=`,
/// `drivers+=`, `add_drivers+=` and `force_drivers+=` assignments (Kata's Makefile gets its
/// module list the same way, by sourcing 10-drivers.conf). Only literal values are
/// understood; a line that computes one is refused rather than misread.
pub fn drivers(confs: &[(String, Vec<u8>)]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for (file, bytes) in confs {
        for (i, line) in String::from_utf8_lossy(bytes).lines().enumerate() {
            let line = line.trim();
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let (key, append) = match key.strip_suffix('+') {
                Some(k) => (k.trim(), true),
                None => (key.trim(), false),
            };
            if !matches!(key, "drivers" | "add_drivers" | "force_drivers") {
                continue;
            }
            let value = value.trim();
            let inner = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            if inner.contains(['$', '`', '"', '\'', '(']) {
                bail!(
                    "{file}:{}: osbuilder reads driver lists as literal words; write the module names out",
                    i + 1
                );
            }
            if key == "drivers" && !append {
                out.clear();
            }
            for w in inner.split_whitespace() {
                if !out.iter().any(|o| o == w) {
                    out.push(w.to_string());
                }
            }
        }
    }
    Ok(out)
}

/// The mode a profile's `include/` file gets in the initrd: executable when it is a script.
pub fn include_mode(bytes: &[u8]) -> u32 {
    if bytes.starts_with(b"#!") {
        0o755
    } else {
        0o644
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_profiles_are_there_and_parse() {
        let set = ProfileSet::embedded().unwrap();
        for n in ["kata", "virtio", "nvdimm", "verity", "image-boot"] {
            assert!(set.get(n).is_some(), "{n} missing: {:?}", set.names());
        }
        let kata = set.select(&["kata".into()]).unwrap();
        let confs = merged_confs(&kata);
        assert_eq!(confs[0].0, "05-base.kata.conf");
        assert!(String::from_utf8_lossy(&confs[0].1).contains("hostonly=\"no\""));
        assert!(drivers(&confs).unwrap().is_empty());
        let boot = set
            .select(&[
                "image-boot".into(),
                "virtio".into(),
                "nvdimm".into(),
                "verity".into(),
                "virtio".into(),
            ])
            .unwrap();
        assert_eq!(boot.len(), 4);
        // dracut's order: by file name across profiles.
        assert_eq!(
            drivers(&merged_confs(&boot)).unwrap(),
            ["nfit", "nd_pmem", "dm_verity", "virtio_pci", "virtio_blk"]
        );
        let init = &set.get("image-boot").unwrap().include[0];
        assert_eq!(init.0, "init");
        assert_eq!(include_mode(&init.1), 0o755);
    }

    #[test]
    fn unknown_profiles_are_refused_with_the_list() {
        let set = ProfileSet::embedded().unwrap();
        let e = set.select(&["kata".into(), "nope".into()]).unwrap_err();
        assert!(crate::error::is_refused(&e));
        let msg = e.to_string();
        assert!(msg.contains("'nope'") && msg.contains("nvdimm:"), "{msg}");
    }

    #[test]
    fn driver_lists_are_read_like_the_shell_would() {
        let confs = vec![
            (
                "05.a.conf".into(),
                b"drivers=\"a b\"\n# drivers+=\" no \"\n".to_vec(),
            ),
            (
                "10.b.conf".into(),
                b"add_drivers+=\" c a \"\ndrivers+=' d'\n".to_vec(),
            ),
        ];
        assert_eq!(drivers(&confs).unwrap(), ["a", "b", "c", "d"]);
        let reset = vec![("x".into(), b"drivers+=\"a\"\ndrivers=\"z\"\n".to_vec())];
        assert_eq!(drivers(&reset).unwrap(), ["z"]);
        let computed = vec![("x.conf".into(), b"drivers+=\" $(ls) \"\n".to_vec())];
        assert!(drivers(&computed).is_err());
    }
}
