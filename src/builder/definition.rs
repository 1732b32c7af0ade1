//! A distro's builder container, as data: the `[builder]` table of its distro.toml.
//!
//! Two halves. `[builder.image]` says what the builder image holds — a registry base plus
//! setup lines for users who can pull, or a native bootstrap (distro, version, packages) for
//! hosts that reach no registry — and only it is hashed into the image tag, so distros
//! sharing one builder (Debian and Ubuntu both run Debian's mmdebstrap) share one image.
//! `run` says how the distro's own installer is invoked inside it: argument vectors with
//! `{placeholders}` filled in from the request, the last of which writes the rootfs to
//! stdout as a tar stream.
//!
//! Definitions that switch off signature checks (`--allow-untrusted`, `trusted=yes`, …)
//! are refused when the distro is loaded: every repository is verified against the keys in
//! distros/, in the container as natively.

use std::collections::BTreeMap;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::arch::Arch;
use crate::distro::InitMode;

/// The `[builder]` table of a distro.toml.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BuilderDef {
    /// What the builder image contains (hashed into its tag).
    pub image: ImageDef,
    /// Commands run in order in the container, as argument vectors with placeholders (see
    /// [`PLACEHOLDERS`]). The last one writes the rootfs as a tar stream on stdout; the
    /// output of the others goes to stderr.
    pub run: Vec<Vec<String>>,
    /// The value of `{variant}` per init mode (e.g. mmdebstrap's --variant).
    #[serde(default)]
    pub variant: BTreeMap<InitMode, String>,
    /// Folders of the container mounted as tmpfs: the installer's scratch space (dpkg
    /// syncs every file it writes; in memory that costs nothing, which halves a build).
    #[serde(default)]
    pub tmpfs: Vec<String>,
}

/// The builder image: pulled (`base` + `setup`) or bootstrapped natively (`bootstrap`).
/// Both give an image with the same tag.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageDef {
    /// Registry image to start from when pulling (a short name: the user's registries.conf
    /// decides where it comes from).
    pub base: String,
    /// Shell lines run on top of `base` (one Containerfile RUN) when pulling.
    pub setup: Vec<String>,
    /// What osbuilder's native backend installs when it bootstraps the image offline.
    pub bootstrap: Bootstrap,
}

/// A native build of the builder's own root filesystem.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// A distro of distros/ (its default init mode is used: Debian's brings the Essential
    /// set, which dpkg and apt need).
    pub distro: String,
    pub version: String,
    pub packages: Vec<String>,
}

/// Placeholders a `run` argument may use. `{packages...}` and `{component}` expand to
/// several arguments (one per package; the argument repeated per component); an argument
/// with `{repo}` or `{repo_id}` is repeated per rpm-md repository (its base URL, and an id
/// for dnf: `repo0`, `repo1`…). `{gpgcheck}` and `{repo_gpgcheck}` are `1` or `0` from the
/// distro's `[rpm]` table (`0` only where the distro declares that it publishes unsigned
/// packages or metadata, or for `--allow-unsigned`, as the native backend decides);
/// `{gpgkeys}` lists the mounted key files as `file://` URLs, comma-separated.
pub const PLACEHOLDERS: &[&str] = &[
    "{arch}",
    "{suite}",
    "{release}",
    "{mirror}",
    "{components}",
    "{component}",
    "{packages}",
    "{packages...}",
    "{keys}",
    "{variant}",
    "{path_filter}",
    "{repo}",
    "{repo_id}",
    "{gpgcheck}",
    "{repo_gpgcheck}",
    "{gpgkeys}",
];

/// Words that would switch off a repository's signature or package checks.
const UNVERIFIED: &[&str] = &[
    "--allow-untrusted",
    "--allow-unauthenticated",
    "--allow-insecure-repositories",
    "allowunauthenticated",
    "allowinsecurerepositories",
    "trusted=yes",
    "--no-check-gpg",
    "--nogpgcheck",
    "--no-gpgcheck",
    "gpgcheck=0",
    "--no-verify",
];

/// Where the verification keys are mounted in the container (read-only).
pub const KEYS_MOUNT: &str = "/osbuilder/keys";

/// Everything a `run` template is filled in from.
#[derive(Clone, Debug)]
pub struct RunValues {
    /// The target arch in the distro's own naming (amd64, aarch64…).
    pub arch: String,
    pub suite: String,
    /// Alpine's release folder (v3.22, edge); the suite elsewhere.
    pub release: String,
    pub mirror: String,
    pub components: Vec<String>,
    pub packages: Vec<String>,
    pub variant: String,
    /// The guest's path filters as dpkg configuration lines (`path-exclude=GLOB`): an
    /// argument holding `{path_filter}` is repeated once per rule (dropped without rules).
    pub path_filters: Vec<String>,
    /// rpm-md repository base URLs (rpm distros; empty otherwise).
    pub repos: Vec<String>,
    /// `1`: packages must carry a valid signature; `0`: the distro publishes them unsigned.
    pub gpgcheck: bool,
    /// `1`: repomd.xml must carry a valid detached signature.
    pub repo_gpgcheck: bool,
    /// The key files in the keys folder (names only).
    pub key_files: Vec<String>,
}

impl BuilderDef {
    /// Check the definition of distros/`folder`: known placeholders only, something to run,
    /// and no switch that turns off signature checks.
    pub fn validate(&self, folder: &str) -> Result<()> {
        if self.run.is_empty() || self.run.iter().any(Vec::is_empty) {
            bail!(
                "distros/{folder}/distro.toml: [builder] run needs at least one non-empty command"
            );
        }
        if let Some(t) = self
            .tmpfs
            .iter()
            .find(|t| !t.starts_with('/') || t.contains(':'))
        {
            bail!("distros/{folder}/distro.toml: [builder] tmpfs '{t}' must be an absolute path");
        }
        if self.image.bootstrap.packages.is_empty() {
            bail!("distros/{folder}/distro.toml: [builder.image] bootstrap.packages is empty");
        }
        let words = self
            .run
            .iter()
            .flatten()
            .chain(&self.image.setup)
            .chain(self.variant.values());
        for w in words {
            let lower = w.to_ascii_lowercase();
            if let Some(bad) = UNVERIFIED.iter().find(|b| lower.contains(*b)) {
                bail!(
                    "distros/{folder}/distro.toml: [builder] uses '{bad}', which switches off \
                     signature checks; osbuilder verifies every repository against the keys in \
                     distros/{folder}/ (pass --keyring/--keys-dir for private ones)"
                );
            }
            let mut rest = w.as_str();
            while let Some(i) = rest.find('{') {
                let end = rest[i..].find('}').map(|e| i + e + 1).unwrap_or(rest.len());
                let ph = &rest[i..end];
                if !PLACEHOLDERS.contains(&ph) {
                    bail!(
                        "distros/{folder}/distro.toml: [builder] uses unknown placeholder {ph} \
                         (known: {})",
                        PLACEHOLDERS.join(" ")
                    );
                }
                rest = &rest[end..];
            }
        }
        Ok(())
    }

    /// Whether the installer is handed the guest's path filters (`{path_filter}`): then it
    /// applies them itself, maintainer scripts included, and the host does not again.
    pub fn takes_path_filter(&self) -> bool {
        self.run
            .iter()
            .flatten()
            .any(|a| a.contains("{path_filter}"))
    }

    /// The commands for one request, placeholders filled in.
    pub fn commands(&self, v: &RunValues) -> Vec<Vec<String>> {
        self.run
            .iter()
            .map(|argv| {
                let mut out = Vec::new();
                for a in argv {
                    if a == "{packages...}" {
                        out.extend(v.packages.iter().cloned());
                    } else if a.contains("{path_filter}") {
                        for r in &v.path_filters {
                            out.push(fill(&a.replace("{path_filter}", r), v));
                        }
                    } else if a.contains("{repo}") || a.contains("{repo_id}") {
                        for (i, r) in v.repos.iter().enumerate() {
                            let one = a
                                .replace("{repo_id}", &format!("repo{i}"))
                                .replace("{repo}", r);
                            out.push(fill(&one, v));
                        }
                    } else if a.contains("{component}") {
                        for c in &v.components {
                            out.push(fill(&a.replace("{component}", c), v));
                        }
                    } else {
                        out.push(fill(a, v));
                    }
                }
                out
            })
            .collect()
    }

    /// The `sh -c` script that runs the commands: stop at the first failure; only the last
    /// command's stdout (the tar stream) reaches osbuilder.
    pub fn script(&self, v: &RunValues) -> String {
        let cmds = self.commands(v);
        let mut s = String::from("set -e\n");
        for (i, argv) in cmds.iter().enumerate() {
            let line: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
            s.push_str(&line.join(" "));
            if i + 1 < cmds.len() {
                s.push_str(" >&2");
            }
            s.push('\n');
        }
        s
    }
}

fn fill(a: &str, v: &RunValues) -> String {
    a.replace("{arch}", &v.arch)
        .replace("{suite}", &v.suite)
        .replace("{release}", &v.release)
        .replace("{mirror}", &v.mirror)
        .replace("{components}", &v.components.join(","))
        .replace("{packages}", &v.packages.join(","))
        .replace("{keys}", KEYS_MOUNT)
        .replace("{variant}", &v.variant)
        .replace("{gpgcheck}", if v.gpgcheck { "1" } else { "0" })
        .replace("{repo_gpgcheck}", if v.repo_gpgcheck { "1" } else { "0" })
        .replace(
            "{gpgkeys}",
            &v.key_files
                .iter()
                .map(|k| format!("file://{KEYS_MOUNT}/{k}"))
                .collect::<Vec<_>>()
                .join(","),
        )
}

/// Quote one word for POSIX sh (single quotes; an embedded quote closes, escapes, reopens).
pub fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl ImageDef {
    /// The image's tag: a hash of this definition and the host arch the image is built for,
    /// so a changed definition gives a new image and an unchanged one is reused.
    pub fn tag(&self, host: Arch) -> String {
        let mut h = sha2::Sha256::new();
        h.update(b"osbuilder builder image v1\n");
        h.update(host.name().as_bytes());
        h.update(b"\n");
        h.update(serde_json::to_vec(self).expect("a builder definition serializes"));
        hex::encode(h.finalize())[..16].to_string()
    }

    /// `localhost/osbuilder/builder-<distro>-<version>:<hash>`.
    pub fn reference(&self, host: Arch) -> String {
        format!(
            "localhost/osbuilder/builder-{}-{}:{}",
            self.bootstrap.distro,
            self.bootstrap
                .version
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '.', "-"),
            self.tag(host)
        )
    }

    /// The Containerfile of the pull path: the base plus the setup lines in one layer.
    pub fn containerfile(&self) -> String {
        let mut s = format!("FROM {}\n", self.base);
        if !self.setup.is_empty() {
            s.push_str(&format!("RUN {}\n", self.setup.join(" && ")));
        }
        s.push_str("CMD [\"/bin/sh\"]\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def() -> BuilderDef {
        toml::from_str(
            r#"
run = [["mkdir", "-p", "/r"], ["tool", "--arch={arch}", "--repo={mirror}/{component}", "{packages...}", "--keys={keys}", "--v={variant}", "--dpkgopt={path_filter}", "it's"]]
variant = { systemd = "required" }
[image]
base = "debian:trixie-slim"
setup = ["apt-get update", "apt-get install -y mmdebstrap"]
bootstrap = { distro = "debian", version = "trixie", packages = ["mmdebstrap"] }
"#,
        )
        .unwrap()
    }

    fn values() -> RunValues {
        RunValues {
            arch: "amd64".into(),
            suite: "trixie".into(),
            release: "trixie".into(),
            mirror: "http://m.example/debian".into(),
            components: vec!["main".into(), "contrib".into()],
            packages: vec!["a".into(), "b".into()],
            variant: "required".into(),
            path_filters: vec!["path-exclude=/usr/share/man/*".into()],
            repos: Vec::new(),
            gpgcheck: true,
            repo_gpgcheck: true,
            key_files: Vec::new(),
        }
    }

    #[test]
    fn placeholders_expand_and_the_script_quotes() {
        let d = def();
        d.validate("debian").unwrap();
        let cmds = d.commands(&values());
        assert_eq!(
            cmds[1],
            vec![
                "tool",
                "--arch=amd64",
                "--repo=http://m.example/debian/main",
                "--repo=http://m.example/debian/contrib",
                "a",
                "b",
                "--keys=/osbuilder/keys",
                "--v=required",
                "--dpkgopt=path-exclude=/usr/share/man/*",
                "it's"
            ]
        );
        // Without rules the argument goes.
        let bare = RunValues {
            path_filters: Vec::new(),
            ..values()
        };
        assert!(
            !d.commands(&bare)[1]
                .iter()
                .any(|a| a.starts_with("--dpkgopt"))
        );
        let s = d.script(&values());
        assert!(s.starts_with("set -e\nmkdir -p /r >&2\ntool "), "{s}");
        assert!(s.ends_with(" 'it'\\''s'\n"), "{s}");
    }

    #[test]
    fn unverified_installs_and_unknown_placeholders_are_refused() {
        let mut d = def();
        d.run[1].push("--allow-untrusted".into());
        let e = d.validate("alpine").unwrap_err().to_string();
        assert!(
            e.contains("--allow-untrusted") && e.contains("signature"),
            "{e}"
        );
        let mut d = def();
        d.image
            .setup
            .push("echo 'deb [trusted=yes] http://x/ y main' > /etc/apt/sources.list".into());
        assert!(d.validate("x").is_err());
        let mut d = def();
        d.run[0].push("{sutie}".into());
        let e = d.validate("x").unwrap_err().to_string();
        assert!(e.contains("{sutie}"), "{e}");
    }

    #[test]
    fn rpm_repositories_and_signature_checks_expand() {
        let mut d = def();
        d.run = vec![vec![
            "dnf".into(),
            "--repofrompath={repo_id},{repo}".into(),
            "--setopt={repo_id}.gpgcheck={gpgcheck}".into(),
            "--setopt={repo_id}.repo_gpgcheck={repo_gpgcheck}".into(),
            "--setopt={repo_id}.gpgkey={gpgkeys}".into(),
            "--releasever={release}".into(),
        ]];
        d.validate("azurelinux").unwrap();
        let mut v = values();
        v.repos = vec!["http://m/a".into(), "http://m/b".into()];
        v.key_files = vec!["01-k.asc".into(), "02-l.asc".into()];
        v.repo_gpgcheck = false;
        assert_eq!(
            d.commands(&v)[0],
            vec![
                "dnf",
                "--repofrompath=repo0,http://m/a",
                "--repofrompath=repo1,http://m/b",
                "--setopt=repo0.gpgcheck=1",
                "--setopt=repo1.gpgcheck=1",
                "--setopt=repo0.repo_gpgcheck=0",
                "--setopt=repo1.repo_gpgcheck=0",
                "--setopt=repo0.gpgkey=file:///osbuilder/keys/01-k.asc,file:///osbuilder/keys/02-l.asc",
                "--setopt=repo1.gpgkey=file:///osbuilder/keys/01-k.asc,file:///osbuilder/keys/02-l.asc",
                "--releasever=trixie",
            ]
        );
        // A literal switch-off is still refused: only the distro's own declaration decides.
        d.run[0].push("--setopt=repo0.gpgcheck=0".into());
        assert!(d.validate("azurelinux").is_err());
    }

    #[test]
    fn the_tag_follows_the_image_definition_only() {
        let a = def();
        let mut b = def();
        b.run.clear();
        assert_eq!(a.image.tag(Arch::X86_64), b.image.tag(Arch::X86_64));
        assert_ne!(a.image.tag(Arch::X86_64), a.image.tag(Arch::Aarch64));
        b.image.bootstrap.packages.push("dnf".into());
        assert_ne!(a.image.tag(Arch::X86_64), b.image.tag(Arch::X86_64));
        let r = a.image.reference(Arch::X86_64);
        assert!(
            r.starts_with("localhost/osbuilder/builder-debian-trixie:"),
            "{r}"
        );
        assert!(
            a.image
                .containerfile()
                .contains("RUN apt-get update && apt-get install")
        );
    }
}
