//! `osbuilder oci`: artifacts (rootfs disk image, kernel, initramfs, SBOM per arch) → an OCI
//! image layout holding one multi-arch image index.
//!
//! Per arch there are up to two manifests: **baremetal** (kernel + initramfs + rootfs, when
//! both boot files are given) and **virtualization** (the rootfs only). Their order in the
//! index is deliberate: consumers that match only os/arch (ironcore's `matchPlatform`,
//! `skopeo copy` without `--all`) take the first entry, so the complete one — baremetal,
//! usable by a VM as well as by a machine — comes first unless `first` says otherwise.
//! Arches follow the matrix's order (x86_64, aarch64, ppc64le, s390x), not the order of the
//! flags, so the same inputs give the same index digest however they are listed.
//!
//! The SBOM is never a layer (ironcore rejects unknown layer types): each manifest gets an
//! SPDX artifact manifest whose `subject` is that manifest, listed untagged in index.json
//! (as oras does) for `osbuilder push` to attach through the referrers API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::digest::Digest;
use super::layout::{LayoutWriter, LinkMode, Placement};
use super::rootfs::{self, RootfsFormat, RootfsInfo};
use super::spec::{self, Descriptor, Index, Manifest, Platform};
use crate::arch::Arch;
use crate::error::refused;

/// The two kinds of manifest per arch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    /// Kernel + initramfs + rootfs: what a machine (or a VM booting a kernel) needs.
    Baremetal,
    /// The rootfs only: the disk a hypervisor attaches (it brings its own kernel).
    Virtualization,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Baremetal => "baremetal",
            Variant::Virtualization => "virtualization",
        }
    }
}

/// Where the variant is written in the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VariantStyle {
    /// `platform.variant` (and the annotation): selectable with `--platform os/arch/variant`
    /// by osbuilder, oras, skopeo `--override-variant`.
    Platform,
    /// Only the `dev.osbuilder.variant` annotation: for consumers that cannot match a
    /// variant that is not a CPU variant (the spec defines `variant` as one).
    Annotation,
}

/// One arch's artifacts.
#[derive(Clone, Debug)]
pub struct ArchArtifacts {
    pub arch: Arch,
    pub rootfs: PathBuf,
    pub kernel: Option<PathBuf>,
    pub initramfs: Option<PathBuf>,
    pub sbom: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// The layout folder to write.
    pub output: PathBuf,
    /// The tag of the index in index.json (`org.opencontainers.image.ref.name`).
    pub tag: String,
    pub artifacts: Vec<ArchArtifacts>,
    pub rootfs_format: RootfsFormat,
    /// The kernel command line in each config; None: derived from the rootfs (root=UUID=…).
    pub cmdline: Option<String>,
    pub variant_style: VariantStyle,
    /// Which variant comes first for each arch.
    pub first: Variant,
    pub link: LinkMode,
    /// `org.opencontainers.image.created` (SOURCE_DATE_EPOCH, else now).
    pub created: i64,
    /// Extra annotations on the index and every manifest (distro, version, user's own).
    pub annotations: BTreeMap<String, String>,
    /// Replace a non-empty folder that osbuilder did not write.
    pub force: bool,
}

/// One manifest of the index.
#[derive(Clone, Debug)]
pub struct ManifestReport {
    pub arch: Arch,
    pub variant: Variant,
    pub descriptor: Descriptor,
    pub sbom: Option<Digest>,
}

#[derive(Clone, Debug)]
pub struct Report {
    /// The image index (the layout's tagged entry).
    pub index: Descriptor,
    pub manifests: Vec<ManifestReport>,
    /// Blobs taken from files: (reflinked, hard-linked, copied).
    pub placements: (usize, usize, usize),
    pub bytes: u64,
}

/// Check every input before anything is written.
fn check(o: &Options) -> Result<Vec<(ArchArtifacts, RootfsInfo)>> {
    if o.artifacts.is_empty() {
        return Err(refused(
            "no artifacts given: pass --artifacts arch=A,rootfs=FILE[,kernel=F,initramfs=F,sbom=F] once per arch",
        ));
    }
    check_tag(&o.tag)?;
    for k in o.annotations.keys() {
        if k.is_empty() || k.contains(char::is_whitespace) {
            return Err(refused(format!(
                "annotation key '{k}' is empty or has spaces"
            )));
        }
    }
    let mut arts = o.artifacts.clone();
    arts.sort_by_key(|a| a.arch);
    for w in arts.windows(2) {
        if w[0].arch == w[1].arch {
            return Err(refused(format!(
                "--artifacts given twice for {}",
                w[0].arch.name()
            )));
        }
    }
    let mut out = Vec::new();
    for mut a in arts {
        let exists = |p: &Path, what: &str| -> Result<()> {
            if !p.is_file() {
                return Err(refused(format!(
                    "{} {what} {}: no such file",
                    a.arch.name(),
                    p.display()
                )));
            }
            Ok(())
        };
        // `kernel=DIR` takes what `osbuilder kernel fetch -o DIR` wrote.
        if let Some(k) = a.kernel.as_mut() {
            if k.is_dir() {
                *k = k.join("vmlinuz");
            }
        }
        exists(&a.rootfs, "rootfs")?;
        match (&a.kernel, &a.initramfs) {
            (Some(k), Some(i)) => {
                exists(k, "kernel")?;
                exists(i, "initramfs")?;
                if let Some(karch) = crate::boot::qemu::kernel_arch(k)? {
                    if karch != a.arch {
                        return Err(refused(format!(
                            "the kernel {} is for {}, not {}",
                            k.display(),
                            karch.name(),
                            a.arch.name()
                        )));
                    }
                }
            }
            (None, None) => {}
            _ => {
                return Err(refused(format!(
                    "{}: the baremetal variant needs both kernel= and initramfs= (or neither, for the \
                     virtualization variant only)",
                    a.arch.name()
                )));
            }
        }
        if let Some(s) = &a.sbom {
            exists(s, "sbom")?;
            let text = fs_err::read(s)?;
            let v: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("the SBOM {} is not JSON", s.display()))?;
            if v.get("spdxVersion").is_none() {
                return Err(refused(format!(
                    "{} is not an SPDX JSON document (no spdxVersion)",
                    s.display()
                )));
            }
        }
        let info = rootfs::inspect(&a.rootfs, o.rootfs_format)?;
        if o.cmdline.is_none() && info.default_cmdline().is_none() && a.kernel.is_some() {
            return Err(refused(format!(
                "{}: a {} rootfs has no filesystem UUID to boot from; pass --cmdline",
                a.arch.name(),
                o.rootfs_format.name()
            )));
        }
        out.push((a, info));
    }
    Ok(out)
}

/// A tag as the distribution spec allows it.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(refused(format!(
            "'{tag}' is not a valid tag ([A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})"
        )))
    }
}

/// Write the layout.
pub fn build(o: &Options) -> Result<Report> {
    let inputs = check(o)?;
    let staged = crate::output::StagedDir::create(&o.output, super::LAYOUT_KIND, o.force)?;
    let w = LayoutWriter::create(staged.path(), o.link)?;
    let mut placements = (0, 0, 0);
    let mut count = |p: Placement| match p {
        Placement::Reflinked => placements.0 += 1,
        Placement::HardLinked => placements.1 += 1,
        Placement::Copied => placements.2 += 1,
    };
    let created = spec::rfc3339(o.created);
    let mut common = o.annotations.clone();
    common.insert(spec::CREATED.into(), created.clone());
    common.insert(
        format!("{}version", spec::ANN_PREFIX),
        env!("CARGO_PKG_VERSION").into(),
    );

    let (empty, _) = w.add_bytes(spec::EMPTY_CONTENT)?;
    let mut entries = Vec::new();
    let mut reports = Vec::new();
    let mut sbom_entries = Vec::new();
    let mut bytes = 0u64;
    for (a, info) in &inputs {
        let layer = |path: &Path,
                     media: &str,
                     title: &str,
                     extra: &[(&str, String)]|
         -> Result<(Descriptor, Placement)> {
            let (d, n, how) = w
                .add_file(path)
                .with_context(|| format!("adding {} to the layout", path.display()))?;
            let mut desc = Descriptor::new(media, d, n);
            desc.annotations.insert(spec::TITLE.into(), title.into());
            for (k, v) in extra {
                desc.annotations
                    .insert(format!("{}{k}", spec::ANN_PREFIX), v.clone());
            }
            Ok((desc, how))
        };
        let mut fs_ann = vec![("rootfs.format", info.format.name().to_string())];
        if let Some(off) = info.fs_offset {
            fs_ann.push(("rootfs.fs-offset", off.to_string()));
        }
        if let Some(u) = &info.fs_uuid {
            fs_ann.push(("rootfs.fs-uuid", u.clone()));
        }
        let (rootfs_desc, how) = layer(
            &a.rootfs,
            info.format.media_type(),
            info.format.title(),
            &fs_ann,
        )?;
        count(how);
        let boot = match (&a.kernel, &a.initramfs) {
            (Some(k), Some(i)) => {
                let (kd, h1) = layer(k, spec::IRONCORE_KERNEL, "vmlinuz", &[])?;
                let (id, h2) = layer(i, spec::IRONCORE_INITRAMFS, "initramfs.img", &[])?;
                count(h1);
                count(h2);
                Some((kd, id))
            }
            _ => None,
        };
        let cmdline = o
            .cmdline
            .clone()
            .or_else(|| info.default_cmdline())
            .unwrap_or_default();
        // ironcore's config: {"commandLine": …}, the field left out when empty.
        let config_doc = if cmdline.is_empty() {
            serde_json::json!({})
        } else {
            serde_json::json!({ "commandLine": cmdline })
        };
        let config = w.add_json(spec::IRONCORE_CONFIG, &config_doc)?;
        let sbom = match &a.sbom {
            Some(s) => {
                let (d, how) = layer(s, spec::SPDX, "sbom.spdx.json", &[])?;
                count(how);
                Some(d)
            }
            None => None,
        };

        let mut variants = vec![Variant::Virtualization];
        if let Some(b) = &boot {
            variants.push(Variant::Baremetal);
            bytes += b.0.size + b.1.size;
        }
        bytes += rootfs_desc.size;
        variants.sort_by_key(|v| *v != o.first);
        for v in variants {
            let layers = match (v, &boot) {
                (Variant::Baremetal, Some((k, i))) => {
                    vec![k.clone(), i.clone(), rootfs_desc.clone()]
                }
                _ => vec![rootfs_desc.clone()],
            };
            let mut ann = common.clone();
            ann.insert(spec::ANN_VARIANT.into(), v.name().into());
            ann.insert(format!("{}arch", spec::ANN_PREFIX), a.arch.oci().into());
            let m = Manifest {
                schema_version: 2,
                media_type: spec::MANIFEST.into(),
                artifact_type: Some(spec::OS_IMAGE_ARTIFACT.into()),
                config: config.clone(),
                layers,
                subject: None,
                annotations: ann,
            };
            // No artifactType on the index entry (it is in the manifest): containers/image
            // before image-spec 1.1 drops it when it re-encodes the list, and then refuses
            // `skopeo copy --preserve-digests` because the bytes changed.
            let mut desc = w.add_json(spec::MANIFEST, &m)?;
            desc.platform = Some(Platform {
                architecture: a.arch.oci().into(),
                os: "linux".into(),
                variant: (o.variant_style == VariantStyle::Platform).then(|| v.name().to_string()),
            });
            desc.annotations
                .insert(spec::ANN_VARIANT.into(), v.name().into());
            let sbom_digest = match &sbom {
                Some(layer) => {
                    let subject = Descriptor::new(spec::MANIFEST, desc.digest.clone(), desc.size);
                    let sm = Manifest {
                        schema_version: 2,
                        media_type: spec::MANIFEST.into(),
                        artifact_type: Some(spec::SPDX.into()),
                        config: Descriptor::new(spec::EMPTY, empty.clone(), 2),
                        layers: vec![layer.clone()],
                        subject: Some(subject),
                        annotations: BTreeMap::from([(spec::CREATED.to_string(), created.clone())]),
                    };
                    let mut sd = w.add_json(spec::MANIFEST, &sm)?;
                    sd.artifact_type = Some(spec::SPDX.into());
                    sbom_entries.push(sd.clone());
                    Some(sd.digest)
                }
                None => None,
            };
            reports.push(ManifestReport {
                arch: a.arch,
                variant: v,
                descriptor: desc.clone(),
                sbom: sbom_digest,
            });
            entries.push(desc);
        }
    }
    let mut index = Index::new(entries);
    index.annotations = common;
    let mut index_desc = w.add_json(spec::INDEX, &index)?;
    let mut tagged = index_desc.clone();
    tagged
        .annotations
        .insert(spec::REF_NAME.into(), o.tag.clone());
    let mut top = Index::new(vec![tagged]);
    top.manifests.extend(sbom_entries);
    w.finish(&top)?;
    staged.commit(Vec::new())?;
    index_desc
        .annotations
        .insert(spec::REF_NAME.into(), o.tag.clone());
    Ok(Report {
        index: index_desc,
        manifests: reports,
        placements,
        bytes,
    })
}
