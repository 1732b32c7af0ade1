//! Provisioning for a host: a rootfs built with a host profile (`osbuilder rootfs --profile`)
//! becomes a machine's own OS rather than a Kata guest. No agent; instead the profile's files
//! and units, what two postinst scripts would have written — the kernel modules index
//! (depmod, from the kernel package's) and the hardware database (`systemd-hwdb update
//! --usr`, from udev's; without it every first boot spends minutes rebuilding it) — and
//! osbuilder.yaml + SBOM naming the profile.
//!
//! Both tools are the host's (kmod, udev): they read data files (module ELF headers, hwdb
//! text) and write index files whose format does not depend on the arch, so no target code
//! runs. Their outputs are rewritten through the in-root extractor so an unprivileged build
//! records them as root's.

use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::manifest::Manifest;
use crate::arch::Arch;
use crate::pkg::extract::{Attrs, ExtractOptions, Extractor};
use crate::pkg::record::PackageRecord;
use crate::profile::Profile;
use crate::tree::Mtree;

/// Host tools host provisioning runs, with their Debian packages.
pub const TOOLS: &[(&str, &str)] = &[("depmod", "kmod"), ("systemd-hwdb", "udev")];

/// What a host provisioning did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Kernel releases whose module index was written.
    pub depmod: Vec<String>,
    /// Whether /usr/lib/udev/hwdb.bin was written.
    pub hwdb: bool,
    /// Units enabled (those the rootfs has).
    pub enabled: Vec<String>,
    pub warnings: Vec<String>,
}

/// What to provision.
#[derive(Clone, Debug)]
pub struct HostSpec {
    pub profile: Profile,
    pub arch: Arch,
    /// The distro's package set plus the profile's, as requested (for osbuilder.yaml).
    pub default_packages: Vec<String>,
    pub extra_packages: Vec<String>,
    /// Build timestamp.
    pub mtime: i64,
}

/// Apply `spec` to the staged rootfs `root` with its metadata; return the new metadata.
pub fn provision_host(
    root: &Path,
    mtree: Mtree,
    spec: &HostSpec,
    record: &PackageRecord,
) -> Result<(Mtree, Report)> {
    crate::image::fs::check_tools(TOOLS)?;
    let started = std::time::SystemTime::now();
    let mtime = spec.mtime;
    let mut report = Report::default();
    let mut ex = Extractor::new(root, ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    *ex.mtree_mut() = mtree;

    for f in &spec.profile.files {
        let rel = f.path.trim_start_matches('/');
        ex.write_file(
            rel.as_bytes(),
            &mut Cursor::new(Profile::file_bytes(f)),
            Attrs::root(f.mode, mtime),
        )
        .with_context(|| format!("writing {} (profile {})", f.path, spec.profile.name))?;
    }
    for unit in &spec.profile.units {
        if crate::pkg::deb::configure::units::enable(&mut ex, unit, false, mtime)? {
            report.enabled.push(unit.clone());
        } else {
            report.warnings.push(format!(
                "profile {} enables {unit}, which the rootfs does not have",
                spec.profile.name
            ));
        }
    }
    report.depmod = depmod(root, &mut ex, mtime)?;
    report.hwdb = hwdb(root, &mut ex, mtime)?;

    let m = Manifest {
        osbuilder_version: env!("CARGO_PKG_VERSION").to_string(),
        created: mtime,
        architecture: spec.arch.name().to_string(),
        distro_name: record.distro.clone(),
        distro_version: record.version.clone(),
        default_packages: spec.default_packages.clone(),
        extra_packages: spec.extra_packages.clone(),
        resolved: record.packages.clone(),
        package_format: record.format,
        trust: record.trust.clone(),
        excluded: record.excluded.clone(),
        agent: None,
        profile: Some(spec.profile.name.clone()),
        // A host is always built from the distro's packages.
        build_method: "distro".into(),
    };
    ex.write_file(
        b"var/lib/osbuilder/osbuilder.yaml",
        &mut Cursor::new(m.to_yaml()),
        Attrs::root(0o644, mtime),
    )?;
    ex.write_file(
        b"var/lib/osbuilder/sbom.spdx.json",
        &mut Cursor::new(m.to_spdx()),
        Attrs::root(0o644, mtime),
    )?;
    let mtree = ex.finish()?;
    super::settle_dir_times(root, started, mtime)?;
    Ok((mtree, report))
}

/// `depmod -b ROOT RELEASE` for every kernel under /usr/lib/modules, then the index files
/// rewritten through `ex` (root-owned, the build's mtime).
fn depmod(root: &Path, ex: &mut Extractor, mtime: i64) -> Result<Vec<String>> {
    let modules = root.join("usr/lib/modules");
    let Ok(rd) = std::fs::read_dir(&modules) else {
        return Ok(Vec::new());
    };
    let mut releases: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("kernel").is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    releases.sort();
    for release in &releases {
        let dir = modules.join(release);
        let before: Vec<_> = index_files(&dir)?;
        let mut cmd = crate::image::fs::tool("depmod");
        // -b takes a root holding lib/modules; /lib is usr/lib in a merged-/usr rootfs, and
        // depmod resolves that symlink itself.
        cmd.arg("-b").arg(root).arg(release);
        let out = crate::process::output(&mut cmd).context("running depmod")?;
        if !out.status.success() {
            bail!(
                "depmod for kernel {release} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        // What depmod added (the package ships modules.order, modules.builtin…).
        for name in index_files(&dir)?
            .into_iter()
            .filter(|n| !before.contains(n))
        {
            let rel = format!("usr/lib/modules/{release}/{name}");
            let bytes = std::fs::read(dir.join(&name))?;
            ex.write_file(
                rel.as_bytes(),
                &mut Cursor::new(bytes),
                Attrs::root(0o644, mtime),
            )?;
        }
    }
    Ok(releases)
}

/// `systemd-hwdb --root ROOT update --usr` when the rootfs has hwdb sources but no database
/// (udev's postinst does the same); then systemd-hwdb-update.service has nothing to do at boot.
fn hwdb(root: &Path, ex: &mut Extractor, mtime: i64) -> Result<bool> {
    let rel = "usr/lib/udev/hwdb.bin";
    if !root.join("usr/lib/udev/hwdb.d").is_dir() || root.join(rel).exists() {
        return Ok(false);
    }
    let mut cmd = crate::image::fs::tool("systemd-hwdb");
    cmd.arg("--root").arg(root).args(["update", "--usr"]);
    let out = crate::process::output(&mut cmd).context("running systemd-hwdb")?;
    if !out.status.success() {
        bail!(
            "systemd-hwdb update failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let Ok(bytes) = std::fs::read(root.join(rel)) else {
        return Ok(false);
    };
    ex.write_file(
        rel.as_bytes(),
        &mut Cursor::new(bytes),
        Attrs::root(0o444, mtime),
    )?;
    Ok(true)
}

/// The `modules.*` files directly in a kernel's module folder, sorted.
fn index_files(dir: &Path) -> Result<Vec<String>> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", crate::show::path(dir)))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("modules."))
        .collect();
    v.sort();
    Ok(v)
}
