//! The host as the base of a dracut build: its distro (for osbuilder.yaml's base-distro)
//! and the packages the files dracut copied from it belong to (for the SBOM), read from
//! `/etc/os-release` and dpkg's database. A host without dpkg gets an empty package list.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::Result;

use crate::pkg::record::InstalledPackage;

/// `ID` and `VERSION_CODENAME` (or `VERSION_ID`) of the host's os-release.
pub fn distro(root: &Path) -> (String, String) {
    let text = std::fs::read_to_string(root.join("etc/os-release"))
        .or_else(|_| std::fs::read_to_string(root.join("usr/lib/os-release")))
        .unwrap_or_default();
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(|v| v.trim().trim_matches('"').to_string())
            .filter(|v| !v.is_empty())
    };
    (
        get("ID").unwrap_or_else(|| "unknown".into()),
        get("VERSION_CODENAME")
            .or_else(|| get("VERSION_ID"))
            .unwrap_or_else(|| "unknown".into()),
    )
}

/// Which installed package owns which path, from dpkg's status file and file lists.
pub struct Dpkg {
    /// Path (absolute, as dpkg lists it) → index into `packages`.
    owner: HashMap<Vec<u8>, usize>,
    packages: Vec<InstalledPackage>,
}

impl Dpkg {
    /// dpkg's database under `dir` (`/var/lib/dpkg`); None when there is none.
    pub fn load(dir: &Path) -> Result<Option<Dpkg>> {
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            return Ok(None);
        };
        let mut packages = Vec::new();
        let mut by_name: HashMap<(String, String), usize> = HashMap::new();
        for stanza in status.split("\n\n") {
            let field = |k: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(k)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            let (Some(name), Some(version), Some(arch), Some(state)) = (
                field("Package"),
                field("Version"),
                field("Architecture"),
                field("Status"),
            ) else {
                continue;
            };
            if !state.ends_with(" installed") {
                continue;
            }
            by_name.insert((name.clone(), arch.clone()), packages.len());
            packages.push(InstalledPackage {
                name,
                version,
                arch,
                sha256: String::new(),
                size: 0,
                url: String::new(),
                // Installed on the host by dpkg, which ran their scripts.
                not_reproduced: Vec::new(),
                file_capabilities: Vec::new(),
            });
        }
        let mut owner = HashMap::new();
        let info = dir.join("info");
        let mut lists: Vec<_> = std::fs::read_dir(&info)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".list"))
            .collect();
        lists.sort();
        for list in lists {
            let stem = &list[..list.len() - 5];
            let idx = match stem.split_once(':') {
                Some((n, a)) => by_name.get(&(n.to_string(), a.to_string())),
                None => by_name
                    .get(&(stem.to_string(), "all".to_string()))
                    .or_else(|| {
                        // "pkg.list" for the native arch: any arch but "all".
                        by_name.iter().find(|((n, _), _)| n == stem).map(|(_, i)| i)
                    }),
            };
            let Some(&idx) = idx else { continue };
            let Ok(text) = std::fs::read(info.join(&list)) else {
                continue;
            };
            for line in text.split(|c| *c == b'\n').filter(|l| !l.is_empty()) {
                owner.entry(line.to_vec()).or_insert(idx);
            }
        }
        Ok(Some(Dpkg { owner, packages }))
    }

    /// The package owning `path` (relative to the root, as in an initrd), trying the
    /// merged-/usr aliases both ways (`usr/lib/x` is `/lib/x` in older file lists).
    fn owner_of(&self, path: &[u8]) -> Option<usize> {
        let abs = [b"/".as_slice(), path].concat();
        if let Some(i) = self.owner.get(&abs) {
            return Some(*i);
        }
        for top in [
            &b"bin/"[..],
            b"sbin/",
            b"lib/",
            b"lib64/",
            b"lib32/",
            b"libx32/",
        ] {
            if let Some(rest) = path.strip_prefix(b"usr/").filter(|r| r.starts_with(top)) {
                return self.owner.get(&[b"/".as_slice(), rest].concat()).copied();
            }
            if path.starts_with(top) {
                return self
                    .owner
                    .get(&[b"/usr/".as_slice(), path].concat())
                    .copied();
            }
        }
        None
    }

    /// The packages owning any of `paths`, sorted by name.
    pub fn owners<'a>(&self, paths: impl IntoIterator<Item = &'a [u8]>) -> Vec<InstalledPackage> {
        let mut found: BTreeMap<(String, String), InstalledPackage> = BTreeMap::new();
        for p in paths {
            if let Some(i) = self.owner_of(p) {
                let pkg = &self.packages[i];
                found
                    .entry((pkg.name.clone(), pkg.arch.clone()))
                    .or_insert_with(|| pkg.clone());
            }
        }
        found.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_through_merged_usr_aliases() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("info")).unwrap();
        std::fs::write(
            d.path().join("status"),
            "Package: libc6\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.36-9\n\n\
             Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n\
             Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("info/libc6:amd64.list"),
            "/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu/libc.so.6\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join("info/base-files.list"),
            "/etc/debian_version\n",
        )
        .unwrap();
        std::fs::write(d.path().join("info/gone.list"), "/usr/bin/gone\n").unwrap();
        let db = Dpkg::load(d.path()).unwrap().unwrap();
        let got = db.owners([
            &b"usr/lib/x86_64-linux-gnu/libc.so.6"[..],
            b"etc/debian_version",
            b"usr/bin/gone",
            b"usr/bin/kata-agent",
        ]);
        let names: Vec<_> = got.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["base-files", "libc6"]);
        assert_eq!(got[1].version, "2.36-9");
        assert!(Dpkg::load(&d.path().join("none")).unwrap().is_none());
    }

    #[test]
    fn the_host_distro_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/os-release"),
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_CODENAME=bookworm\n",
        )
        .unwrap();
        assert_eq!(distro(d.path()), ("debian".into(), "bookworm".into()));
    }
}
