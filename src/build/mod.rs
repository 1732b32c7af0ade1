//! Release jobs from a declarative build file: [`file`] parses `osbuilder.toml`, [`plan`]
//! expands it into rootfs and artifact jobs (refusing what cannot be built before any
//! work), [`lock`] pins the packages of each guest and arch, [`stage`] caches finished
//! rootfs trees and artifacts by the digest of their inputs, [`run`] executes a plan
//! against both, and [`tarball`] writes Kata's release tarballs. The release tree itself
//! is [`crate::release`].

pub mod file;
pub mod lock;
pub mod plan;
pub mod run;
pub mod stage;
pub mod tarball;
