//! Debian packages and repositories: version ordering, deb822 indexes, Release
//! verification, the resolver, .deb payload extraction and the dpkg database.
pub mod backend;
pub mod configure;
pub mod control;
pub mod debfile;
pub mod dpkgdb;
pub mod extracted;
pub mod index;
pub mod release;
pub mod resolve;
pub mod version;
