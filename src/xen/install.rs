//! `osbuilder xen install BUNDLE ROOTFS`: lay a bundle into a host rootfs as dom0 expects it
//! (meta-virtualization's `merge_installed_xen_bundles`):
//!
//! - images → `/var/lib/xen/images/`, configurations → `/etc/xen/<guest>.cfg`;
//! - autostart guests → the absolute link `/etc/xen/auto/<guest>.cfg` → `/etc/xen/<guest>.cfg`
//!   (xendomains starts what `XENDOMAINS_AUTO=/etc/xen/auto` holds);
//! - a guest with `kernel = "host"` gets a copy of the host's own newest kernel;
//! - recorded: `/var/lib/osbuilder/xen-guests.json` (every installed guest, merged by name),
//!   an `xen-guests:` section in osbuilder.yaml and the guests' files in the SPDX SBOM.
//!
//! The bundle's sums are checked first. All writes go through the in-root extractor (symlinks
//! followed inside the rootfs, never onto the host); unprivileged, ownership goes to
//! `ROOTFS.mtree`. Installing again replaces a guest of the same name.

use std::fmt::Write as _;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use super::bundle::{AUTO_DIR, CONFIG_DIR, IMAGES_DIR, Manifest};
use crate::error::refused;
use crate::pkg::extract::{Attrs, ExtractOptions, Extractor};
use crate::tree::Mtree;

const YAML: &str = "var/lib/osbuilder/osbuilder.yaml";
const SBOM: &str = "var/lib/osbuilder/sbom.spdx.json";
/// The record of installed guests.
pub const RECORD: &str = "var/lib/osbuilder/xen-guests.json";
/// SPDX ids of what this step adds to the SBOM start with this.
const SPDX_PREFIX: &str = "SPDXRef-xen-guest-";

/// `osbuilder xen install`.
#[derive(Clone, Debug)]
pub struct InstallOptions {
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Metadata file; default `ROOTFS.mtree`.
    pub metadata: Option<PathBuf>,
}

/// One installed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledFile {
    /// In dom0.
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// One installed guest, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstalledGuest {
    pub name: String,
    #[serde(rename = "type")]
    pub guest_type: String,
    pub autostart: bool,
    pub config: String,
    pub files: Vec<InstalledFile>,
}

/// `var/lib/osbuilder/xen-guests.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Sorted by name.
    pub guests: Vec<InstalledGuest>,
}

/// What an install did.
#[derive(Clone, Debug)]
pub struct Report {
    pub guests: Vec<InstalledGuest>,
    pub metadata: Option<PathBuf>,
}

pub fn install(o: &InstallOptions) -> Result<Report> {
    let manifest = Manifest::load(&o.bundle)?;
    let root = &o.rootfs;
    if !root.is_dir() {
        return Err(refused(format!(
            "host rootfs {} does not exist or is not a folder",
            crate::show::path(root)
        )));
    }
    let meta_path = o
        .metadata
        .clone()
        .unwrap_or_else(|| Mtree::default_path_for(root));
    let existing = if meta_path.exists() {
        Some(Mtree::load(&meta_path)?)
    } else {
        None
    };
    let had_metadata = existing.is_some();
    let mtime = crate::tree::source_date_epoch()?.unwrap_or_else(now);
    let started = std::time::SystemTime::now();
    let mut ex = Extractor::new(root, ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    *ex.mtree_mut() = existing.unwrap_or_default();

    // Refusals before anything is written.
    let Some(yaml) = ex.read_file(YAML.as_bytes())? else {
        return Err(refused(format!(
            "{} has no /{YAML}, so the guests could not be recorded: build the host with \
             `osbuilder rootfs --profile virtualization` (or provision it) first",
            crate::show::path(root)
        )));
    };
    let yaml = String::from_utf8_lossy(&yaml).into_owned();
    if let Some(a) = yaml_value(&yaml, "architecture") {
        if a != manifest.arch.name() {
            return Err(refused(format!(
                "the bundle's guests are {} but the host {} is {a}",
                manifest.arch,
                crate::show::path(root)
            )));
        }
    }
    let needs_host_kernel = manifest.guests.iter().any(|g| g.kernel_source == "host");
    let host_kernel = if needs_host_kernel {
        Some(host_kernel(root, &meta_path)?)
    } else {
        None
    };
    manifest.verify(&o.bundle)?;

    let dir = Attrs::root(0o755, mtime);
    for d in [
        "var/lib/xen",
        "var/lib/xen/images",
        "etc/xen",
        "etc/xen/auto",
    ] {
        ex.create_dir(d.as_bytes(), dir)?;
    }
    let mut installed = Vec::new();
    for g in &manifest.guests {
        let mut files = Vec::new();
        let mut put = |ex: &mut Extractor, src: &Path, name: &str, mode: u32| -> Result<()> {
            let dst = format!("{IMAGES_DIR}/{name}");
            copy_in(ex, src, &dst, mode, mtime)?;
            files.push(InstalledFile {
                path: dst,
                size: std::fs::metadata(src)?.len(),
                sha256: crate::pkg::sha256_file(src)?,
            });
            Ok(())
        };
        let in_bundle = |rel: &str| o.bundle.join(rel);
        match (g.kernel_source.as_str(), &g.kernel, &host_kernel) {
            ("file", Some(k), _) => put(&mut ex, &in_bundle(k), &file_name(k), 0o644)?,
            ("host", _, Some(k)) => put(&mut ex, k, &format!("{}-vmlinuz", g.name), 0o644)?,
            _ => {}
        }
        if let Some(r) = &g.ramdisk {
            put(&mut ex, &in_bundle(r), &file_name(r), 0o644)?;
        }
        if let Some(d) = &g.disk {
            // Guests write their disks; others need not read them.
            put(&mut ex, &in_bundle(&d.file), &file_name(&d.file), 0o600)?;
        }
        let cfg_src = in_bundle(&g.config);
        let cfg = format!("{CONFIG_DIR}/{}.cfg", g.name);
        let text = std::fs::read(&cfg_src)
            .with_context(|| format!("reading {}", crate::show::path(&cfg_src)))?;
        ex.write_file(
            rel(&cfg),
            &mut Cursor::new(&text),
            Attrs::root(0o644, mtime),
        )?;
        files.push(InstalledFile {
            path: cfg.clone(),
            size: text.len() as u64,
            sha256: crate::pkg::sha256_hex(&text),
        });
        let link = format!("{AUTO_DIR}/{}.cfg", g.name);
        if g.autostart {
            ex.symlink(rel(&link), cfg.as_bytes(), Attrs::root(0o777, mtime))?;
        } else {
            ex.remove_file(rel(&link))?;
        }
        installed.push(InstalledGuest {
            name: g.name.clone(),
            guest_type: g.guest_type.clone(),
            autostart: g.autostart,
            config: cfg,
            files,
        });
    }

    // The record: earlier guests of other names stay.
    let mut record: Record = match ex.read_file(RECORD.as_bytes())? {
        Some(b) => serde_json::from_slice(&b)
            .with_context(|| format!("reading /{RECORD} in {}", crate::show::path(root)))?,
        None => Record::default(),
    };
    record
        .guests
        .retain(|r| !installed.iter().any(|g| g.name == r.name));
    record.guests.extend(installed.iter().cloned());
    record.guests.sort_by(|a, b| a.name.cmp(&b.name));
    let mut json = serde_json::to_string_pretty(&record)?;
    json.push('\n');
    ex.write_file(
        RECORD.as_bytes(),
        &mut Cursor::new(json),
        Attrs::root(0o644, mtime),
    )?;
    let yaml = with_guest_section(&yaml, &record);
    ex.write_file(
        YAML.as_bytes(),
        &mut Cursor::new(&yaml),
        Attrs::root(0o644, mtime),
    )?;
    if let Some(sbom) = ex.read_file(SBOM.as_bytes())? {
        let sbom = sbom_with_guests(&sbom, &record, &yaml)?;
        ex.write_file(
            SBOM.as_bytes(),
            &mut Cursor::new(sbom),
            Attrs::root(0o644, mtime),
        )?;
    }

    let mtree = ex.finish()?;
    crate::provision::settle_dir_times(root, started, mtime)?;
    let metadata = if had_metadata || !mtree.is_empty() {
        mtree.save(&meta_path)?;
        Some(meta_path)
    } else {
        None
    };
    Ok(Report {
        guests: installed,
        metadata,
    })
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn rel(p: &str) -> &[u8] {
    p.trim_start_matches('/').as_bytes()
}

fn file_name(bundle_rel: &str) -> String {
    bundle_rel
        .rsplit('/')
        .next()
        .unwrap_or(bundle_rel)
        .to_string()
}

/// The host's newest kernel (/boot/vmlinuz-*), for guests that run dom0's kernel.
fn host_kernel(root: &Path, meta: &Path) -> Result<PathBuf> {
    let metadata = if meta.exists() {
        Some(Mtree::load(meta)?)
    } else {
        None
    };
    let tree = crate::tree::Tree::scan(
        root,
        &crate::tree::ScanOptions {
            metadata,
            ..Default::default()
        },
    )?;
    crate::image::uefi::boot_kernel(&tree)
        .map(|k| k.vmlinuz)
        .map_err(|_| {
            refused(format!(
                "a guest runs the host's kernel (kernel = \"host\"), but {} has no \
                 /boot/vmlinuz-*: install a kernel in the host (the profiles do) or give the \
                 guest a kernel file",
                crate::show::path(root)
            ))
        })
}

/// Write `src` at `dst` in the rootfs through the extractor (in-root, recorded), then fill
/// it with `src`'s data extents only, so a sparse disk stays sparse.
fn copy_in(ex: &mut Extractor, src: &Path, dst: &str, mode: u32, mtime: i64) -> Result<()> {
    let at = ex.write_file(rel(dst), &mut std::io::empty(), Attrs::root(mode, mtime))?;
    let path = ex.root().join(crate::tree::os_path(&at));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", crate::show::path(&path)))?;
    f.set_len(
        std::fs::metadata(src)
            .with_context(|| format!("reading {}", crate::show::path(src)))?
            .len(),
    )?;
    crate::image::copy_into(src, &f, 0)
        .with_context(|| format!("copying {} to {dst}", crate::show::path(src)))?;
    f.sync_all()?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
    f.set_times(std::fs::FileTimes::new().set_modified(t))?;
    Ok(())
}

/// A top-level `key: "value"` of osbuilder.yaml.
fn yaml_value(yaml: &str, key: &str) -> Option<String> {
    yaml.lines().find_map(|l| {
        l.strip_prefix(key)
            .and_then(|r| r.strip_prefix(':'))
            .map(|v| v.trim().trim_matches('"').to_string())
    })
}

fn q(s: &str) -> String {
    // YAML double-quoted scalar: JSON string escaping is a valid subset.
    serde_json::to_string(s).expect("string serialises")
}

/// osbuilder.yaml with its `xen-guests:` section (re)written from the record.
pub fn with_guest_section(yaml: &str, record: &Record) -> String {
    let mut out = String::new();
    let mut skipping = false;
    for line in yaml.lines() {
        if line == "xen-guests:" {
            skipping = true;
            continue;
        }
        if skipping && (line.starts_with(' ') || line.is_empty()) {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    let _ = writeln!(out, "xen-guests:");
    for g in &record.guests {
        let _ = writeln!(out, "  - name: {}", q(&g.name));
        let _ = writeln!(out, "    type: {}", q(&g.guest_type));
        let _ = writeln!(
            out,
            "    autostart: {}",
            q(if g.autostart { "yes" } else { "no" })
        );
        let _ = writeln!(out, "    config: {}", q(&g.config));
        let _ = writeln!(out, "    files:");
        for f in &g.files {
            let _ = writeln!(out, "      - path: {}", q(&f.path));
            let _ = writeln!(out, "        size: {}", f.size);
            let _ = writeln!(out, "        sha256: {}", q(&f.sha256));
        }
    }
    out
}

/// The SBOM with one package per installed guest and one per file of it (SHA-256), contained
/// in the rootfs; what an earlier install added is replaced. The document namespace is
/// derived from the new osbuilder.yaml, as provisioning derives it.
pub fn sbom_with_guests(sbom: &[u8], record: &Record, yaml: &str) -> Result<String> {
    use serde_json::{Value, json};
    let mut doc: Value = serde_json::from_slice(sbom).context("reading the SBOM")?;
    let ours = |v: &Value, key: &str| {
        v.get(key)
            .and_then(Value::as_str)
            .is_some_and(|s| s.starts_with(SPDX_PREFIX))
    };
    let Some(packages) = doc.get_mut("packages").and_then(Value::as_array_mut) else {
        bail!("the SBOM has no packages list");
    };
    packages.retain(|p| !ours(p, "SPDXID"));
    let mut rels = Vec::new();
    for (i, g) in record.guests.iter().enumerate() {
        let id = format!("{SPDX_PREFIX}{i}");
        packages.push(json!({
            "SPDXID": id,
            "name": format!("xen-guest-{}", g.name),
            "versionInfo": env!("CARGO_PKG_VERSION"),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "OPERATING-SYSTEM",
            "comment": format!("Xen {} guest, configuration {}", g.guest_type, g.config),
        }));
        rels.push(json!({"spdxElementId": "SPDXRef-rootfs", "relationshipType": "CONTAINS", "relatedSpdxElement": id}));
        for (j, f) in g.files.iter().enumerate() {
            let fid = format!("{id}-file-{j}");
            packages.push(json!({
                "SPDXID": fid,
                "name": f.path,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "primaryPackagePurpose": "FILE",
                "checksums": [{"algorithm": "SHA256", "checksumValue": f.sha256}],
            }));
            rels.push(json!({"spdxElementId": id, "relationshipType": "CONTAINS", "relatedSpdxElement": fid}));
        }
    }
    if let Some(r) = doc.get_mut("relationships").and_then(Value::as_array_mut) {
        r.retain(|x| !ours(x, "relatedSpdxElement"));
        r.extend(rels);
    }
    let ns = &crate::pkg::sha256_hex(yaml.as_bytes())[..32];
    doc["documentNamespace"] = json!(format!("urn:osbuilder:spdx:{ns}"));
    let mut s = serde_json::to_string_pretty(&doc)?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(names: &[&str]) -> Record {
        Record {
            guests: names
                .iter()
                .map(|n| InstalledGuest {
                    name: n.to_string(),
                    guest_type: "pvh".into(),
                    autostart: true,
                    config: format!("/etc/xen/{n}.cfg"),
                    files: vec![InstalledFile {
                        path: format!("/var/lib/xen/images/{n}.img"),
                        size: 4,
                        sha256: "ab".repeat(32),
                    }],
                })
                .collect(),
        }
    }

    #[test]
    fn the_yaml_section_is_replaced_not_repeated() {
        let base = "---\narchitecture: \"aarch64\"\nhost-profile: \"virtualization\"\n";
        let once = with_guest_section(base, &record(&["a"]));
        let twice = with_guest_section(&once, &record(&["a", "b"]));
        assert_eq!(twice.matches("xen-guests:").count(), 1);
        assert!(twice.starts_with(base), "{twice}");
        assert!(twice.contains("  - name: \"b\"\n    type: \"pvh\"\n    autostart: \"yes\""));
        assert_eq!(
            yaml_value(&twice, "architecture").as_deref(),
            Some("aarch64")
        );
    }

    #[test]
    fn sbom_entries_are_replaced_on_reinstall() {
        let sbom = br#"{"spdxVersion":"SPDX-2.3","documentNamespace":"urn:x","packages":[{"SPDXID":"SPDXRef-rootfs"}],"relationships":[]}"#;
        let one = sbom_with_guests(sbom, &record(&["a"]), "y1").unwrap();
        let two = sbom_with_guests(one.as_bytes(), &record(&["a"]), "y2").unwrap();
        let v: serde_json::Value = serde_json::from_str(&two).unwrap();
        assert_eq!(v["packages"].as_array().unwrap().len(), 3);
        assert_eq!(v["relationships"].as_array().unwrap().len(), 2);
        assert_ne!(v["documentNamespace"], "urn:x");
        assert_eq!(
            v["packages"][2]["checksums"][0]["checksumValue"],
            "ab".repeat(32)
        );
    }
}
