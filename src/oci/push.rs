//! `osbuilder push DIR REF`: an OCI image layout's tagged image (an index and everything
//! under it) to a registry, then the SBOM artifacts that refer to its manifests.
//!
//! Order matters to registries and to readers: blobs first (each skipped when the registry
//! has it, mounted from `--mount-from` repositories when possible, else uploaded in
//! chunks), then the child manifests by digest, then the index under its tag — so the tag
//! never points at something incomplete — then the referrers. Where the registry does not
//! answer a subject-bearing PUT with `OCI-Subject` (distribution 2.x and 3.x do not), the
//! image-spec's fallback index under the tag `sha256-<subject hex>` is kept up to date.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use super::digest::Digest;
use super::layout::Layout;
use super::reference::Reference;
use super::registry::{BlobOutcome, Registry, Settings, Source};
use super::spec::{self, Descriptor, Index, Manifest};
use crate::error::refused;

/// Blobs up to this size are uploaded in one request.
const SMALL_BLOB: u64 = 256 << 10;

#[derive(Clone, Debug)]
pub struct Options {
    pub layout: PathBuf,
    pub reference: Reference,
    pub settings: Settings,
    /// Repositories of the same registry to mount blobs from.
    pub mount_from: Vec<String>,
    /// Parallel blob uploads.
    pub jobs: usize,
}

/// How an SBOM (or other referrer) was attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attached {
    /// The registry indexed it (OCI-Subject answered).
    ReferrersApi,
    /// Listed in the fallback index under this tag.
    FallbackTag(String),
}

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub tag: String,
    pub index: Option<Digest>,
    pub manifests: usize,
    pub present: usize,
    pub mounted: usize,
    pub uploaded: usize,
    /// Interrupted chunks that were continued where the registry had stopped.
    pub resumed: u32,
    /// Interrupted uploads the registry had dropped, begun again in a new session.
    pub restarted: u32,
    pub bytes_uploaded: u64,
    /// (subject, referrer, how it was attached).
    pub referrers: Vec<(Digest, Digest, Attached)>,
}

/// The image to push: its tag in the layout and its descriptor.
fn choose(index: &Index, asked: Option<&str>) -> Result<(String, Descriptor)> {
    let tagged: Vec<(&str, &Descriptor)> = index
        .manifests
        .iter()
        .filter_map(|d| d.annotation(spec::REF_NAME).map(|t| (t, d)))
        .collect();
    if let Some(t) = asked {
        if let Some((_, d)) = tagged.iter().find(|(n, _)| *n == t) {
            return Ok((t.to_string(), (*d).clone()));
        }
    }
    match tagged.as_slice() {
        [(t, d)] => Ok((asked.unwrap_or(t).to_string(), (*d).clone())),
        [] => Err(refused(
            "the layout's index.json has no tagged image (org.opencontainers.image.ref.name)",
        )),
        many => Err(refused(format!(
            "the layout has several tagged images ({}); name one as the reference's tag",
            many.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// A document to PUT: where, its media type, its bytes.
struct Doc {
    desc: Descriptor,
    bytes: Vec<u8>,
}

/// Called after each blob with its descriptor and what happened (for progress lines).
pub type OnBlob<'a> = &'a (dyn Fn(&Descriptor, &BlobOutcome) + Sync);

pub fn push(o: &Options, on_blob: OnBlob) -> Result<Report> {
    if o.reference.digest.is_some() {
        return Err(refused("push to a tag (REGISTRY/REPO[:TAG]), not a digest"));
    }
    let layout = Layout::open(&o.layout)?;
    let top = layout.index()?;
    let (tag, root) = choose(&top, o.reference.tag.as_deref())?;
    super::publish::check_tag(&tag)?;

    // Walk the graph: documents in the order they must be PUT (children before parents).
    let mut docs: Vec<Doc> = Vec::new();
    let mut blobs: Vec<Descriptor> = Vec::new();
    let mut seen_blobs = BTreeSet::new();
    let mut add_blob = |d: &Descriptor, blobs: &mut Vec<Descriptor>| {
        if seen_blobs.insert(d.digest.clone()) {
            blobs.push(d.clone());
        }
    };
    let root_bytes = layout.read_blob(&root)?;
    let mut manifests = Vec::new();
    if root.is_index() {
        let idx: Index = serde_json::from_slice(&root_bytes)
            .context("the tagged image is not an image index")?;
        for m in &idx.manifests {
            if m.is_index() {
                bail!(
                    "nested index {} in the layout: osbuilder pushes one level of index",
                    m.digest
                );
            }
            manifests.push(m.clone());
        }
    } else {
        manifests.push(root.clone());
    }
    let mut in_graph = BTreeSet::new();
    for m in &manifests {
        let bytes = layout.read_blob(m)?;
        let man: Manifest = serde_json::from_slice(&bytes)
            .with_context(|| format!("manifest {} is not an image manifest", m.digest))?;
        add_blob(&man.config, &mut blobs);
        for l in &man.layers {
            add_blob(l, &mut blobs);
        }
        in_graph.insert(m.digest.clone());
        docs.push(Doc {
            desc: m.clone(),
            bytes,
        });
    }
    in_graph.insert(root.digest.clone());
    let mut root_desc = root.clone();
    root_desc.annotations.remove(spec::REF_NAME);

    // Referrers: untagged manifests in index.json whose subject is in this image.
    let mut referrers = Vec::new();
    for d in top
        .manifests
        .iter()
        .filter(|d| d.annotation(spec::REF_NAME).is_none())
    {
        if d.is_index() {
            continue;
        }
        let bytes = layout.read_blob(d)?;
        let Ok(man) = serde_json::from_slice::<Manifest>(&bytes) else {
            continue;
        };
        let Some(subject) = man.subject.clone() else {
            continue;
        };
        if !in_graph.contains(&subject.digest) {
            continue;
        }
        add_blob(&man.config, &mut blobs);
        for l in &man.layers {
            add_blob(l, &mut blobs);
        }
        let mut desc = d.clone();
        desc.artifact_type = man
            .artifact_type
            .clone()
            .or(Some(man.config.media_type.clone()));
        desc.annotations = man.annotations.clone();
        referrers.push((Doc { desc, bytes }, subject));
    }

    let reg = Registry::new(&o.reference, o.settings.clone(), &o.mount_from)?;
    let mut report = Report {
        tag: tag.clone(),
        ..Report::default()
    };
    upload_blobs(&reg, &layout, &blobs, o, &mut report, on_blob)?;
    for d in &docs {
        reg.put_manifest(d.desc.digest.as_str(), &d.desc.media_type, &d.bytes)?;
        report.manifests += 1;
    }
    reg.put_manifest(&tag, &root_desc.media_type, &root_bytes)?;
    report.index = Some(root_desc.digest.clone());
    for (doc, subject) in &referrers {
        let put = reg.put_manifest(doc.desc.digest.as_str(), &doc.desc.media_type, &doc.bytes)?;
        let how = if put.subject.as_deref() == Some(subject.digest.as_str()) {
            Attached::ReferrersApi
        } else {
            Attached::FallbackTag(add_to_fallback(&reg, &subject.digest, &doc.desc)?)
        };
        report
            .referrers
            .push((subject.digest.clone(), doc.desc.digest.clone(), how));
    }
    Ok(report)
}

/// Upload the blobs, `jobs` at a time.
fn upload_blobs(
    reg: &Registry,
    layout: &Layout,
    blobs: &[Descriptor],
    o: &Options,
    report: &mut Report,
    on_blob: OnBlob,
) -> Result<()> {
    // Check every blob is there before the first upload.
    for b in blobs {
        let p = layout.blob_path(&b.digest);
        let md = std::fs::metadata(&p)
            .with_context(|| format!("the layout lacks blob {} ({})", b.digest, p.display()))?;
        if md.len() != b.size {
            bail!(
                "blob {} in the layout is {} bytes, its descriptor says {}: the layout is corrupt",
                b.digest,
                md.len(),
                b.size
            );
        }
    }
    let outcomes = crate::parallel::map(blobs, o.jobs.clamp(1, 8), |_, b| {
        let p = layout.blob_path(&b.digest);
        let outcome = if b.size <= SMALL_BLOB {
            let bytes = fs_err::read(&p)?;
            reg.push_blob(&b.digest, b.size, Source::Bytes(&bytes), &o.mount_from)?
        } else {
            let f = fs_err::File::open(&p)?;
            reg.push_blob(&b.digest, b.size, Source::File(f.file()), &o.mount_from)?
        };
        on_blob(b, &outcome);
        Ok(outcome)
    })?;
    for (b, outcome) in blobs.iter().zip(outcomes) {
        match outcome {
            BlobOutcome::Present => report.present += 1,
            BlobOutcome::Mounted => report.mounted += 1,
            BlobOutcome::Uploaded { resumed, restarted } => {
                report.uploaded += 1;
                report.resumed += resumed;
                report.restarted += restarted;
                report.bytes_uploaded += b.size;
            }
        }
    }
    Ok(())
}

/// List `referrer` in the fallback index of `subject`; returns the tag.
fn add_to_fallback(reg: &Registry, subject: &Digest, referrer: &Descriptor) -> Result<String> {
    let tag = subject.fallback_tag();
    let mut idx = match reg.get_manifest(&tag)? {
        None => Index::new(Vec::new()),
        Some((mt, bytes)) if mt == spec::INDEX => serde_json::from_slice(&bytes)
            .with_context(|| format!("the referrers tag {tag} is not an image index"))?,
        Some((mt, _)) => bail!(
            "the tag {tag} holds a {mt}, not a referrers index; remove it or let osbuilder use another repository"
        ),
    };
    if idx.manifests.iter().any(|m| m.digest == referrer.digest) {
        return Ok(tag);
    }
    let mut entry = referrer.clone();
    entry.platform = None;
    idx.manifests.push(entry);
    reg.put_manifest(&tag, spec::INDEX, &spec::to_json(&idx))?;
    Ok(tag)
}
