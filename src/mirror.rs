//! Which repository mirror a build uses, in this order:
//! 1. the `--mirror` flag;
//! 2. `$OSBUILDER_MIRROR`;
//! 3. for Debian targets on a Debian host, the Debian archive entry of the host's APT
//!    sources (`/etc/apt/sources.list.d/*.sources` deb822, `*.list` and
//!    `/etc/apt/sources.list` one-line) — not -security/-updates, not third-party repos;
//! 4. `mirror.per_arch` / `mirror.default` in the distro's distro.toml;
//! 5. otherwise a clear error asking for `--mirror`.
//!
//! No registry host is written in this code: the URL always comes from the user or the host.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::arch::Arch;
use crate::distro::Distro;

/// Where the chosen mirror came from (shown to the user).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorSource {
    Flag,
    Env,
    HostApt(PathBuf),
    DistroToml,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    pub url: String,
    pub source: MirrorSource,
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let from = match &self.source {
            MirrorSource::Flag => "--mirror".to_string(),
            MirrorSource::Env => "$OSBUILDER_MIRROR".to_string(),
            MirrorSource::HostApt(p) => format!("host APT sources, {}", p.display()),
            MirrorSource::DistroToml => "distro.toml".to_string(),
        };
        write!(f, "{} (from {from})", self.url)
    }
}

/// Resolve the mirror for `distro` on `arch`. `host_apt_dir` is normally `/etc/apt`
/// (tests pass their own); host APT sources are consulted only for the `debian` distro
/// when the host itself is Debian (`host_is_debian`).
pub fn resolve(
    flag: Option<&str>,
    distro: &Distro,
    arch: Arch,
    host_apt_dir: &Path,
    host_is_debian: bool,
) -> Result<Mirror> {
    let clean = |s: &str| s.trim().trim_end_matches('/').to_string();
    if let Some(m) = flag.filter(|m| !m.trim().is_empty()) {
        return Ok(Mirror {
            url: clean(m),
            source: MirrorSource::Flag,
        });
    }
    if let Ok(m) = std::env::var("OSBUILDER_MIRROR") {
        if !m.trim().is_empty() {
            return Ok(Mirror {
                url: clean(&m),
                source: MirrorSource::Env,
            });
        }
    }
    if distro.name == "debian" && host_is_debian {
        if let Some((url, file)) = debian_archive_from_apt(host_apt_dir) {
            return Ok(Mirror {
                url: clean(&url),
                source: MirrorSource::HostApt(file),
            });
        }
    }
    if let Some(m) = distro.mirror.per_arch.get(&arch).filter(|m| !m.is_empty()) {
        return Ok(Mirror {
            url: clean(m),
            source: MirrorSource::DistroToml,
        });
    }
    if !distro.mirror.default.is_empty() {
        return Ok(Mirror {
            url: clean(&distro.mirror.default),
            source: MirrorSource::DistroToml,
        });
    }
    let hint = if distro.name == "ubuntu" {
        " Ubuntu serves amd64 from its primary archive and the other architectures from its \
         ports archive (a different URL): pass the one for the arch you build."
    } else {
        ""
    };
    // A missing setting, not a failure: refused before any work (exit 2), as for every distro.
    Err(crate::error::refused(format!(
        "no package mirror known for {} on {}: pass --mirror URL (the repository root, the folder \
         holding dists/ and pool/), set $OSBUILDER_MIRROR, or set mirror.default in \
         distros/{}/distro.toml.{hint}",
        distro.name,
        arch.name(),
        distro.name
    )))
}

/// True when /etc/os-release says this host is Debian.
pub fn host_is_debian() -> bool {
    std::fs::read_to_string("/etc/os-release")
        .map(|t| {
            t.lines()
                .any(|l| l.trim() == "ID=debian" || l.trim() == "ID=\"debian\"")
        })
        .unwrap_or(false)
}

/// Debian's release code names and aliases (suites of the main archive).
const DEBIAN_SUITES: &[&str] = &[
    "stable",
    "testing",
    "unstable",
    "oldstable",
    "oldoldstable",
    "sid",
    "experimental",
    "buster",
    "bullseye",
    "bookworm",
    "trixie",
    "forky",
    "duke",
];

/// One `deb` source from an APT configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AptSource {
    pub uris: Vec<String>,
    pub suites: Vec<String>,
    pub components: Vec<String>,
    pub signed_by: Option<String>,
}

impl AptSource {
    /// Is this the Debian archive itself (not security, updates, backports or a third party)?
    fn is_debian_archive(&self) -> bool {
        let signed_ok = self
            .signed_by
            .as_deref()
            .is_none_or(|s| s.contains("debian-archive-keyring"));
        let base_suite = self.suites.iter().any(|s| {
            !s.contains('-') && (DEBIAN_SUITES.contains(&s.as_str()) || self.signed_by.is_some())
        });
        let main = self.components.iter().any(|c| c == "main");
        let not_security = self.uris.iter().all(|u| !u.contains("security"));
        signed_ok && base_suite && main && not_security
    }
}

/// The first Debian archive URI in the APT configuration under `apt_dir`, and its file.
pub fn debian_archive_from_apt(apt_dir: &Path) -> Option<(String, PathBuf)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(apt_dir.join("sources.list.d"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files.insert(0, apt_dir.join("sources.list"));
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        let name = f.file_name().unwrap_or_default().to_string_lossy();
        let sources = if name.ends_with(".sources") {
            parse_deb822_sources(&text)
        } else if name.ends_with(".list") {
            parse_one_line_sources(&text)
        } else {
            continue;
        };
        if let Some(s) = sources.into_iter().find(AptSource::is_debian_archive) {
            if let Some(u) = s.uris.first() {
                return Some((u.clone(), f));
            }
        }
    }
    None
}

/// deb822 `.sources`: stanzas separated by blank lines; only `Types: deb` and enabled ones.
pub fn parse_deb822_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for stanza in crate::pkg::deb::control::parse_stanzas(text) {
        let get = |k: &str| {
            stanza
                .get(k)
                .map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
                .unwrap_or_default()
        };
        if !get("Types").iter().any(|t| t == "deb") {
            continue;
        }
        if stanza.get("Enabled").is_some_and(|v| v.trim() == "no") {
            continue;
        }
        out.push(AptSource {
            uris: get("URIs"),
            suites: get("Suites"),
            components: get("Components"),
            signed_by: stanza.get("Signed-By").map(|s| s.trim().to_string()),
        });
    }
    out
}

/// One-line `deb [opt=val …] URI suite component…`.
pub fn parse_one_line_sources(text: &str) -> Vec<AptSource> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(rest) = line
            .strip_prefix("deb ")
            .or_else(|| line.strip_prefix("deb\t"))
        else {
            continue;
        };
        let mut rest = rest.trim();
        let mut signed_by = None;
        if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = r.find(']') else { continue };
            for opt in r[..end].split_whitespace() {
                if let Some(v) = opt.strip_prefix("signed-by=") {
                    signed_by = Some(v.to_string());
                }
            }
            rest = r[end + 1..].trim();
        }
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.len() < 2 {
            continue;
        }
        out.push(AptSource {
            uris: vec![words[0].to_string()],
            suites: vec![words[1].to_string()],
            components: words[2..].iter().map(|s| s.to_string()).collect(),
            signed_by,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_the_debian_archive_not_security_or_third_party() {
        let d = tempfile::tempdir().unwrap();
        let sl = d.path().join("sources.list.d");
        std::fs::create_dir(&sl).unwrap();
        std::fs::write(
            sl.join("a-nodesource.sources"),
            "Types: deb\nURIs: https://node.example/node_20.x\nSuites: nodistro\nComponents: main\nSigned-By: /usr/share/keyrings/nodesource.gpg\n",
        )
        .unwrap();
        std::fs::write(
            sl.join("debian.sources"),
            "Types: deb\n# comment\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
             Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
        )
        .unwrap();
        let (u, f) = debian_archive_from_apt(d.path()).unwrap();
        assert_eq!(u, "http://mirror.example/debian");
        assert!(f.ends_with("debian.sources"));

        std::fs::remove_file(sl.join("debian.sources")).unwrap();
        std::fs::write(
            d.path().join("sources.list"),
            "deb http://mirror.example/debian-security bookworm-security main\n\
             deb [arch=amd64] https://download.example/linux/debian bookworm stable\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://m2.example/debian/ trixie main contrib\n",
        )
        .unwrap();
        let (u, _) = debian_archive_from_apt(d.path()).unwrap();
        assert_eq!(u, "http://m2.example/debian/");
    }

    #[test]
    fn resolution_order_and_error() {
        let set = crate::distro::DistroSet::embedded().unwrap();
        let deb = set.get("debian").unwrap();
        let d = tempfile::tempdir().unwrap();
        let m = resolve(
            Some("http://x.example/debian/"),
            deb,
            Arch::X86_64,
            d.path(),
            true,
        )
        .unwrap();
        assert_eq!(m.url, "http://x.example/debian");
        assert_eq!(m.source, MirrorSource::Flag);
        if std::env::var_os("OSBUILDER_MIRROR").is_none() {
            let err = format!(
                "{:#}",
                resolve(None, deb, Arch::X86_64, d.path(), true).unwrap_err()
            );
            assert!(err.contains("--mirror"), "{err}");
            let ub = set.get("ubuntu").unwrap();
            let err = format!(
                "{:#}",
                resolve(None, ub, Arch::Aarch64, Path::new("/etc/apt"), true).unwrap_err()
            );
            assert!(err.contains("ports"), "{err}");
        }
    }
}
