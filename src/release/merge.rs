//! `osbuilder release --merge DIR… -o OUT`: the release trees of split runs (one CI job per
//! arch, `--only arch=…`) combined into the tree a single run would have written, byte for
//! byte. Each input is checked first: it is a release tree osbuilder made, every file
//! matches its `SHA256SUMS` line and nothing else is there, and all inputs come from the
//! same build file, osbuilder version and SOURCE_DATE_EPOCH. Two inputs may hold the same
//! file only with the same bytes; the result must hold every artifact the build file plans
//! (unless `partial`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{Item, MANIFEST, Manifest, SUMS, Written};
use crate::error::refused;
use crate::events::{Event, Job, Sink, Stage};

/// One input tree, checked.
struct Input {
    dir: PathBuf,
    manifest: Manifest,
    /// Path → (sha256, size, link target if a symlink).
    files: BTreeMap<String, (String, u64, Option<String>)>,
}

fn read_input(dir: &Path) -> Result<Input> {
    let shown = dir.display();
    if !dir.is_dir() || !super::KIND.made_by_osbuilder(dir) {
        return Err(refused(format!(
            "{shown} is not a release tree osbuilder wrote (no {} marker naming a release): give \
             the -o folders of `osbuilder release`",
            crate::output::dir::MARKER
        )));
    }
    let manifest = super::read_manifest(dir)?;
    if manifest.schema != super::SCHEMA {
        return Err(refused(format!(
            "{shown}: release.json schema {} is not {}",
            manifest.schema,
            super::SCHEMA
        )));
    }
    let sums = std::fs::read_to_string(dir.join(SUMS))
        .with_context(|| format!("reading {shown}/{SUMS}"))?;
    let mut files = BTreeMap::new();
    for line in sums.lines() {
        let Some((hash, path)) = line.split_once("  ") else {
            anyhow::bail!("{shown}/{SUMS}: malformed line '{line}'");
        };
        let p = dir.join(path);
        let md = std::fs::symlink_metadata(&p)
            .with_context(|| format!("{shown}: {path} is listed in {SUMS} but missing"))?;
        let link = if md.file_type().is_symlink() {
            Some(std::fs::read_link(&p)?.to_string_lossy().into_owned())
        } else {
            None
        };
        let got = crate::pkg::sha256_file(&p)?;
        if got != hash {
            anyhow::bail!(
                "{shown}: {path} does not match {SUMS} (sha256 {got}, listed {hash}): the tree \
                 was changed after it was written; write it again"
            );
        }
        let size = std::fs::metadata(&p)?.len();
        files.insert(path.to_string(), (hash.to_string(), size, link));
    }
    // Nothing unlisted (a stray file would be lost or, worse, published unchecked).
    for e in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let e = e?;
        if e.file_type().is_dir() {
            continue;
        }
        let rel = e.path().strip_prefix(dir)?.to_string_lossy().into_owned();
        if rel == SUMS || rel == crate::output::dir::MARKER {
            continue;
        }
        if !files.contains_key(&rel) {
            anyhow::bail!(
                "{shown}: {rel} is not listed in {SUMS}; the tree was changed after it was written"
            );
        }
    }
    Ok(Input {
        dir: dir.to_path_buf(),
        manifest,
        files,
    })
}

/// Check and combine `inputs` into `out`.
pub fn merge(
    inputs: &[PathBuf],
    out: &Path,
    force: bool,
    partial: bool,
    sink: &dyn Sink,
) -> Result<Written> {
    if inputs.is_empty() {
        return Err(refused("--merge needs at least one release tree"));
    }
    let ev = Job::new("merge", sink);
    let checking = ev.start(Stage::Release, None);
    let mut read = Vec::new();
    for d in inputs {
        let canon = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
        if read.iter().any(|i: &Input| i.dir == canon) {
            return Err(refused(format!("{} is given twice", d.display())));
        }
        let mut i = read_input(d)?;
        i.dir = canon;
        read.push(i);
    }
    let first = &read[0];
    for i in &read[1..] {
        let (a, b) = (&first.manifest, &i.manifest);
        let mismatch = if a.build_file_sha256 != b.build_file_sha256 {
            Some(format!(
                "another build file (sha256 {} vs {})",
                &a.build_file_sha256[..12],
                &b.build_file_sha256[..12]
            ))
        } else if a.osbuilder != b.osbuilder {
            Some(format!(
                "another osbuilder ({} vs {})",
                a.osbuilder, b.osbuilder
            ))
        } else if a.source_date_epoch != b.source_date_epoch {
            Some(format!(
                "another SOURCE_DATE_EPOCH ({:?} vs {:?})",
                a.source_date_epoch, b.source_date_epoch
            ))
        } else {
            None
        };
        if let Some(m) = mismatch {
            return Err(refused(format!(
                "{} and {} come from {m}: merge the outputs of one release job",
                inputs[0].display(),
                i.dir.display()
            )));
        }
    }
    // The union, each path once; the same path must carry the same bytes.
    let mut items: BTreeMap<String, Item> = BTreeMap::new();
    let mut owner: BTreeMap<String, (&Path, String)> = BTreeMap::new();
    for i in &read {
        for (path, (hash, size, link)) in &i.files {
            if path == MANIFEST {
                continue;
            }
            if let Some((other, h)) = owner.get(path) {
                if h != hash {
                    return Err(refused(format!(
                        "{path} differs between {} and {}: the runs did not build the same thing",
                        other.display(),
                        i.dir.display()
                    )));
                }
                continue;
            }
            owner.insert(path.clone(), (&i.dir, hash.clone()));
            items.insert(
                path.clone(),
                match link {
                    Some(t) => Item::Link { target: t.clone() },
                    None => Item::File {
                        src: i.dir.join(path),
                        sha256: hash.clone(),
                        size: *size,
                    },
                },
            );
        }
    }
    let mut artifacts = Vec::new();
    for i in &read {
        for a in &i.manifest.artifacts {
            if !artifacts.contains(a) {
                artifacts.push(a.clone());
            }
        }
    }
    let manifest = Manifest {
        artifacts,
        ..first.manifest.clone()
    };
    let present = manifest.present();
    let missing: Vec<&String> = manifest
        .planned
        .iter()
        .filter(|p| !present.contains(p))
        .collect();
    if !missing.is_empty() && !partial {
        return Err(refused(format!(
            "the merged release lacks {} of the build file's artifacts: {} — merge the tree of \
             every job (or pass --partial)",
            missing.len(),
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    checking.finish(false, None, Some(format!("{} trees checked", read.len())));
    let written = super::assemble(out, force, &items, &manifest)?;
    for (path, size, sha256) in &written.files {
        sink.emit(Event::Artifact {
            job: "merge".into(),
            path: written.dir.join(path).display().to_string(),
            size: *size,
            sha256: sha256.clone(),
        });
    }
    Ok(written)
}
