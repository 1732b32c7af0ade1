//! Native package installers, one submodule per package format.

pub mod apk;
