//! Alpine's apk v2 format: signed indexes and packages, version ordering, resolution,
//! and the installed-package database that `apk` reads inside the guest.

pub mod backend;
pub mod busybox;
pub mod db;
pub mod index;
pub mod install;
pub mod package;
pub mod resolve;
pub mod sign;
pub mod version;
