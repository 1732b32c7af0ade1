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

use crate::output::DirKind;

/// The output kind of a layout written by `osbuilder oci` (its marker lets a later run
/// replace it; any other non-empty folder needs --force).
pub const LAYOUT_KIND: DirKind = DirKind::Marked("oci-layout");
/// The output kind of a folder written by `osbuilder pull`.
pub const PULL_KIND: DirKind = DirKind::Marked("oci-pull");
