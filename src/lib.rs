//! osbuilder: build Kata-style guest OS artifacts, rootless and reproducible.
//!
//! Modules follow the pipeline (see README.md): `distro`/`matrix` plan and validate a
//! request, `tree` is the rootfs + metadata every packer reads, `initrd` packs it; `agent` is
//! the embedded reference agent and its systemd units, `boot` proves an artifact boots (QEMU).
//! `build` runs release jobs from a build file (lock file, stage cache) and `release` writes
//! Kata's release tree; `events` is how long jobs report to the CLI.
//! `profile` holds the host profiles (baremetal, virtualization), `xen` the Xen guest bundles.

pub mod agent;
pub mod arch;
pub mod boot;
pub mod build;
pub mod builder;
pub mod cli;
pub mod compress;
pub mod distro;
pub mod dracut;
pub mod error;
pub mod events;
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
pub mod profile;
pub mod provision;
pub mod release;
pub mod rootfs;
pub mod show;
pub mod tree;
pub mod xen;
