//! The declarative configuration of a tree another tool extracted (e.g. `mmdebstrap
//! --variant=extract`, which unpacks a foreign architecture without qemu but runs no
//! maintainer script): the dpkg database and everything [`super::configure`] does, from
//! the same .deb files. Comparing the result with osbuilder's own build of the same
//! packages shows that extraction and configuration agree whoever unpacked the files.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::configure::{self, Mode, Report};
use super::debfile::load_deb;
use super::dpkgdb::{InstalledDeb, write_database};
use crate::arch::Arch;
use crate::pkg::extract::{ExtractOptions, Extractor, Installed};
use crate::tree::Mtree;

/// What a package's data archive lists, without extracting it.
fn listing(data_tar: &[u8], origin: &str) -> Result<Vec<Installed>> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(data_tar);
    for e in ar
        .entries()
        .with_context(|| format!("reading the payload of {origin}"))?
    {
        let e = e.with_context(|| format!("reading the payload of {origin}"))?;
        let raw = e.path_bytes().into_owned();
        let comps: Vec<&[u8]> = raw
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
            .collect();
        if comps.is_empty() {
            continue;
        }
        let kind = crate::pkg::extract::entry_kind(e.header().entry_type());
        let joined = comps.join(&b'/');
        out.push(Installed {
            path: [b"/".as_slice(), &joined].concat(),
            on_disk: joined,
            kind,
            left_out: false,
        });
    }
    Ok(out)
}

/// Write the dpkg database into `root` and configure it as osbuilder's own build does.
/// `debs` are the package files; they are put in apt's unpack order here. Returns the
/// rootfs metadata (unprivileged runs) and what was not reproduced.
pub fn configure_extracted(
    root: &Path,
    debs: &[PathBuf],
    arch: Arch,
    mtime: i64,
) -> Result<(Mtree, Report)> {
    let mut installed = Vec::new();
    for d in debs {
        let origin = d.display().to_string();
        let loaded = load_deb(d, &origin)?;
        let files = listing(&loaded.data_tar, &origin)?;
        installed.push(InstalledDeb {
            control: loaded.control,
            files,
        });
    }
    let order: Vec<configure::order::OrderPkg> = installed
        .iter()
        .map(|d| configure::pkg_of(d).order_pkg())
        .collect();
    let mut sorted: Vec<Option<InstalledDeb>> = installed.into_iter().map(Some).collect();
    let installed: Vec<InstalledDeb> = configure::unpack_order(&order)
        .into_iter()
        .filter_map(|i| sorted[i].take())
        .collect();
    let mut ex = Extractor::new(root, ExtractOptions::default())?;
    ex.set_default_mtime(mtime);
    write_database(&mut ex, &installed, arch.debian(), "installed", mtime)?;
    let report = configure::configure(&mut ex, &installed, arch, mtime, Mode::Full)?;
    Ok((ex.finish()?, report))
}
