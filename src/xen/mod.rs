//! Xen guest bundles (meta-virtualization's xen-guest-bundle, done without root): guests
//! built here or imported become a bundle of disks, kernels and xl configurations with a
//! checksummed manifest (`bundle`), and a bundle is laid into a host rootfs where dom0's
//! xendomains starts it (`install`). `spec` reads the user's guest definitions, `import`
//! makes their disks, `xl` writes their configurations.

pub mod bundle;
pub mod import;
pub mod install;
pub mod spec;
pub mod xl;

pub use bundle::{BundleOptions, Manifest, bundle};
pub use install::{InstallOptions, install};
