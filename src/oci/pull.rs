//! `osbuilder pull REF --platform os/arch[/variant] -o DIR`: one manifest of an OS image
//! from a registry into a folder, each layer written under its title (`vmlinuz`,
//! `initramfs.img`, `rootfs.img`), with `config.json` and `manifest.json` beside them and,
//! with `sbom`, the SBOM found through the referrers API or its fallback tag.
//!
//! Every byte is verified: the manifest against its digest, each blob as it streams to
//! disk. The folder is staged and renamed into place only when everything matched, so a
//! corrupt blob or a lost connection leaves nothing under the output name.

use std::io::{Read as _, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::digest::{Digest, Hashing};
use super::reference::Reference;
use super::registry::{Registry, Settings};
use super::spec::{self, Descriptor, Index, Manifest};
use crate::arch::Arch;
use crate::error::refused;

/// The manifest, as fetched, beside the files.
pub const MANIFEST_FILE: &str = "manifest.json";
pub const CONFIG_FILE: &str = "config.json";
pub const SBOM_FILE: &str = "sbom.spdx.json";

/// `os/arch[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl PlatformSpec {
    pub fn parse(s: &str) -> Result<PlatformSpec> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            return Err(refused(format!(
                "--platform '{s}': write OS/ARCH[/VARIANT], e.g. linux/arm64/baremetal"
            )));
        }
        // Any usual arch name (x86_64, aarch64…) means the OCI one.
        let architecture = parts[1]
            .parse::<Arch>()
            .map(|a| a.oci().to_string())
            .unwrap_or_else(|_| parts[1].to_string());
        Ok(PlatformSpec {
            os: parts[0].to_string(),
            architecture,
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }

    /// linux/<host arch>.
    pub fn host() -> Result<PlatformSpec> {
        Ok(PlatformSpec {
            os: "linux".into(),
            architecture: Arch::or_host(None)?.oci().into(),
            variant: None,
        })
    }
}

impl std::fmt::Display for PlatformSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An index entry's platform as `os/arch[/variant]` (the variant from `platform.variant`
/// or osbuilder's annotation).
fn describe(d: &Descriptor) -> String {
    match &d.platform {
        Some(p) => {
            let v = p.variant.as_deref().or(d.annotation(spec::ANN_VARIANT));
            match v {
                Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                None => format!("{}/{}", p.os, p.architecture),
            }
        }
        None => format!("(no platform) {}", d.digest),
    }
}

/// The one entry of `index` for `want`; an ambiguous or missing platform is refused with
/// the choices.
pub fn select(index: &Index, want: &PlatformSpec) -> Result<Descriptor> {
    let hits: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|d| {
            let Some(p) = &d.platform else { return false };
            p.os == want.os
                && p.architecture == want.architecture
                && want.variant.as_ref().is_none_or(|v| {
                    p.variant.as_ref() == Some(v)
                        || d.annotation(spec::ANN_VARIANT) == Some(v.as_str())
                })
        })
        .collect();
    let choices = || {
        index
            .manifests
            .iter()
            .map(describe)
            .collect::<Vec<_>>()
            .join(", ")
    };
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(refused(format!(
            "no manifest for {want}; the image has: {}",
            choices()
        ))),
        many => Err(refused(format!(
            "{want} is ambiguous: it matches {}; add the variant, e.g. --platform {}",
            many.iter()
                .map(|d| describe(d))
                .collect::<Vec<_>>()
                .join(", "),
            describe(many[0])
        ))),
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub reference: Reference,
    /// None: linux/<host arch>.
    pub platform: Option<PlatformSpec>,
    pub output: PathBuf,
    /// Also fetch the SPDX SBOM that refers to the manifest.
    pub sbom: bool,
    pub settings: Settings,
    pub force: bool,
}

#[derive(Clone, Debug)]
pub struct Report {
    pub manifest: Digest,
    pub platform: String,
    /// (file name, size, digest).
    pub files: Vec<(String, u64, Digest)>,
    /// The SBOM manifest and where it was found (`referrers API` or the fallback tag).
    pub sbom: Option<(Digest, String)>,
}

pub fn pull(o: &Options) -> Result<Report> {
    // Before any network traffic: may the output go there at all?
    crate::output::check_destination(&o.output, super::PULL_KIND, o.force)?;
    let reg = Registry::new(&o.reference, o.settings.clone(), &[])?;
    let target = o.reference.target();
    let (mt, bytes) = reg.get_manifest(&target)?.with_context(|| {
        format!(
            "{} not found in registry {}",
            o.reference, o.reference.registry
        )
    })?;
    let (desc, man_bytes, platform) = if mt == spec::INDEX || mt == spec::DOCKER_LIST {
        let index: Index =
            serde_json::from_slice(&bytes).context("the image index is not valid JSON")?;
        let want = match &o.platform {
            Some(p) => p.clone(),
            None => PlatformSpec::host()?,
        };
        let d = select(&index, &want)?;
        let (_, b) = reg.get_manifest(d.digest.as_str())?.with_context(|| {
            format!(
                "the index names manifest {} but the registry does not have it",
                d.digest
            )
        })?;
        let p = describe(&d);
        (d, b, p)
    } else {
        let d = Descriptor::new(&mt, Digest::of(&bytes), bytes.len() as u64);
        (d, bytes, "(single manifest)".to_string())
    };
    let man: Manifest = serde_json::from_slice(&man_bytes)
        .with_context(|| format!("{} is not an image manifest", desc.digest))?;

    // File names from titles: plain names only, each once.
    let mut names = Vec::new();
    for l in &man.layers {
        let name = l
            .annotation(spec::TITLE)
            .map(String::from)
            .unwrap_or_else(|| format!("{}.blob", l.digest.hex()));
        let reserved = [MANIFEST_FILE, CONFIG_FILE, SBOM_FILE];
        if name.is_empty()
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.starts_with(".")
            || reserved.contains(&name.as_str())
        {
            bail!(
                "layer {} has the title '{name}', which osbuilder will not use as a file name",
                l.digest
            );
        }
        if names.contains(&name) {
            bail!("two layers of {} have the title '{name}'", desc.digest);
        }
        names.push(name);
    }

    let staged = crate::output::StagedDir::create(&o.output, super::PULL_KIND, o.force)?;
    let mut files = Vec::new();
    for (l, name) in man.layers.iter().zip(&names) {
        fetch_blob(&reg, l, &staged.path().join(name))?;
        files.push((name.clone(), l.size, l.digest.clone()));
    }
    fetch_blob(&reg, &man.config, &staged.path().join(CONFIG_FILE))?;
    fs_err::write(staged.path().join(MANIFEST_FILE), &man_bytes)?;
    let sbom = if o.sbom {
        let (d, via) = fetch_sbom(&reg, &desc.digest, &staged.path().join(SBOM_FILE))?;
        Some((d, via))
    } else {
        None
    };
    staged.commit(Vec::new())?;
    Ok(Report {
        manifest: desc.digest,
        platform,
        files,
        sbom,
    })
}

/// Stream a blob to `dest`, verifying size and digest.
fn fetch_blob(reg: &Registry, d: &Descriptor, dest: &std::path::Path) -> Result<()> {
    let mut body = reg.get_blob(&d.digest)?;
    let mut out = Hashing::new(std::io::BufWriter::with_capacity(
        1 << 20,
        fs_err::File::create(dest)?,
    ));
    std::io::copy(&mut (&mut body).take(d.size + 1), &mut out)
        .with_context(|| format!("downloading blob {}", d.digest))?;
    out.flush()?;
    let (got, n, w) = out.finish();
    if n != d.size || got != d.digest {
        bail!(
            "blob {} from registry {} does not match its descriptor ({} bytes expected, got {n} bytes with digest {got}): \
             the registry's copy is corrupt; nothing was written",
            d.digest,
            reg.reference.registry,
            d.size
        );
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    Ok(())
}

/// The SPDX SBOM referring to `subject`: through the referrers API, else its fallback tag.
fn fetch_sbom(
    reg: &Registry,
    subject: &Digest,
    dest: &std::path::Path,
) -> Result<(Digest, String)> {
    let (index, via) = match reg.referrers_api(subject, Some(spec::SPDX))? {
        Some(i) => (i, "the referrers API".to_string()),
        None => {
            let tag = subject.fallback_tag();
            match reg.get_manifest(&tag)? {
                Some((_, b)) => (
                    serde_json::from_slice::<Index>(&b)
                        .with_context(|| format!("the referrers tag {tag} is not an index"))?,
                    format!("the fallback tag {tag}"),
                ),
                None => {
                    bail!("no SBOM refers to manifest {subject} (no referrers API, no tag {tag})")
                }
            }
        }
    };
    let Some(entry) = index
        .manifests
        .iter()
        .find(|m| m.artifact_type.as_deref() == Some(spec::SPDX))
    else {
        bail!("no SPDX SBOM among the referrers of {subject} (found through {via})");
    };
    let (_, b) = reg
        .get_manifest(entry.digest.as_str())?
        .with_context(|| format!("the SBOM manifest {} is listed but missing", entry.digest))?;
    let m: Manifest =
        serde_json::from_slice(&b).context("the SBOM manifest is not an image manifest")?;
    if m.subject.as_ref().map(|s| &s.digest) != Some(subject) {
        bail!(
            "the SBOM manifest {} does not refer to {subject}",
            entry.digest
        );
    }
    let layer = m.layers.first().context("the SBOM manifest has no layer")?;
    fetch_blob(reg, layer, dest)?;
    Ok((entry.digest.clone(), via))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::spec::Platform;

    fn entry(arch: &str, variant: Option<&str>, ann: Option<&str>) -> Descriptor {
        let mut d = Descriptor::new(
            spec::MANIFEST,
            Digest::of(format!("{arch}{variant:?}{ann:?}").as_bytes()),
            1,
        );
        d.platform = Some(Platform {
            architecture: arch.into(),
            os: "linux".into(),
            variant: variant.map(String::from),
        });
        if let Some(a) = ann {
            d.annotations.insert(spec::ANN_VARIANT.into(), a.into());
        }
        d
    }

    #[test]
    fn platforms_are_selected_by_variant_or_annotation_and_ambiguity_is_refused() {
        let idx = Index::new(vec![
            entry("amd64", Some("baremetal"), Some("baremetal")),
            entry("amd64", Some("virtualization"), Some("virtualization")),
            entry("arm64", None, Some("baremetal")),
            entry("arm64", None, Some("virtualization")),
        ]);
        let p = |s| PlatformSpec::parse(s).unwrap();
        assert_eq!(
            select(&idx, &p("linux/x86_64/baremetal")).unwrap(),
            idx.manifests[0]
        );
        assert_eq!(
            select(&idx, &p("linux/arm64/virtualization")).unwrap(),
            idx.manifests[3]
        );
        let e = select(&idx, &p("linux/amd64")).unwrap_err();
        assert!(crate::error::is_refused(&e));
        assert!(
            format!("{e}").contains("ambiguous")
                && format!("{e}").contains("linux/amd64/virtualization"),
            "{e}"
        );
        let e = select(&idx, &p("linux/s390x")).unwrap_err();
        assert!(format!("{e}").contains("linux/arm64/baremetal"), "{e}");
        assert!(PlatformSpec::parse("linux").is_err());
    }
}
