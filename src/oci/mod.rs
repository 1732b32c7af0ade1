//! OS images as OCI artifacts: `osbuilder oci` writes an image layout (one multi-arch index,
//! per arch a baremetal and a virtualization manifest, SBOMs attached as referrers),
//! `osbuilder push` sends it to a registry, `osbuilder pull` takes one platform back.
//!
//! Data flows one way: artifacts → [`publish`] → layout ([`layout`], documents in [`spec`])
//! → [`push`] → registry ([`registry`], credentials in [`auth`]) → [`pull`] → files. The
//! publisher reads artifact files only (disk image, kernel, initramfs, SBOM), never a rootfs.
//! See docs/oci.md.

pub mod auth;
pub mod digest;
pub mod layout;
pub mod publish;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod rootfs;
pub mod spec;

use std::path::Path;

use anyhow::Result;

use crate::error::refused;

/// Whether osbuilder may put a new folder at `dest`: it does not exist, or is empty, or
/// holds `marker` (a file osbuilder writes into the outputs of this kind: then it is ours
/// and is replaced), or `force`. Never `/`, the home folder or the current folder.
pub fn check_output(dest: &Path, marker: &str, force: bool) -> Result<()> {
    let abs = std::path::absolute(dest)?;
    let forbidden = [
        Some(std::path::PathBuf::from("/")),
        std::env::var_os("HOME").map(Into::into),
        std::env::current_dir().ok(),
    ];
    if forbidden.iter().flatten().any(|f| f == &abs) {
        return Err(refused(format!(
            "will not replace {} with an output folder; give a new folder",
            abs.display()
        )));
    }
    let md = match std::fs::symlink_metadata(&abs) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if !md.is_dir() {
        return Err(refused(format!(
            "{} exists and is not a folder",
            abs.display()
        )));
    }
    let empty = std::fs::read_dir(&abs)?.next().is_none();
    if empty || force || abs.join(marker).exists() {
        return Ok(());
    }
    Err(refused(format!(
        "{} is a non-empty folder osbuilder did not make (no {marker}); give a new folder or pass --force to replace it",
        abs.display()
    )))
}
