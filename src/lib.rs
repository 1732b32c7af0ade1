//! osbuilder: build Kata-style guest OS artifacts, rootless and reproducible.
//!
//! Modules follow the pipeline (see README.md): `distro`/`matrix` plan and validate a
//! request, `tree` is the rootfs + metadata every packer reads, `initrd` packs it; `agent` is
//! the embedded reference agent and its systemd units, `boot` proves an artifact boots (QEMU).

pub mod agent;
pub mod arch;
pub mod boot;
pub mod cli;
pub mod compress;
pub mod distro;
pub mod error;
pub mod image;
pub mod initrd;
pub mod kernel;
pub mod matrix;
pub mod mirror;
pub mod oci;
pub mod output;
pub mod parallel;
pub mod pkg;
pub mod process;
pub mod provision;
pub mod rootfs;
pub mod show;
pub mod tree;
