//! Debian packages and repositories: version ordering, deb822 indexes, Release
//! verification, the resolver, .deb payload extraction and the dpkg database.
pub mod control;
pub mod version;
