//! RPM packages and rpm-md repositories (Clear Linux, Azure Linux): headers and their
//! signatures, version ordering and rich dependencies, streaming cpio payloads, the
//! repository metadata, the resolver, the sqlite database `rpm -qa` reads, and the
//! backend that puts them behind the package-backend interface.

pub mod backend;
pub mod cpio;
pub mod header;
pub mod install;
pub mod package;
pub mod repomd;
pub mod resolve;
pub mod rpmdb;
pub mod tags;
pub mod verify;
pub mod version;
