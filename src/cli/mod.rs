//! Command-line front end: argument parsing and dispatch. Each subcommand lives in its own
//! file with an `Args` struct and a `run` function; the work itself is in the library.

mod agent_args;
mod boot;
mod build;
mod builder_image;
mod cache;
mod dracut_args;
mod image;
mod initrd;
mod kernel;
mod lock;
mod matrix;
mod oci;
mod pkg;
mod provision;
mod release;
mod render;
mod rootfs;
mod xen;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "osbuilder",
    version,
    about = "Build Kata-style guest OS artifacts: rootfs, initrd and disk images, rootless and reproducible",
    long_about = None,
    after_help = "Run `osbuilder <command> --help` for the options of each command.\n\
                  SOURCE_DATE_EPOCH, when set, fixes every timestamp written into artifacts."
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the supported distro × arch × init combinations, or check one
    Matrix(matrix::Args),
    /// Build a distro rootfs: natively (verified packages, no root, any arch) or in a builder container
    Rootfs(Box<rootfs::Args>),
    /// Make or reuse a distro's builder container image (for `rootfs --builder podman|docker`)
    BuilderImage(builder_image::Args),
    /// Make a rootfs a Kata guest: agent, units, config, osbuilder.yaml and SBOM
    Provision(provision::Args),
    /// Pack a rootfs into a compressed newc cpio initrd
    Initrd(initrd::Args),
    /// Pack a rootfs into a bootable disk image (ext4/xfs/erofs, MBR/GPT, DAX, dm-verity)
    Image(image::Args),
    /// Boot a kernel with an initrd or disk image under QEMU and wait for the agent
    Boot(boot::Args),
    /// Get a distro kernel for boot checks
    Kernel(kernel::Args),
    /// Package files: verify signatures and digests
    Pkg(pkg::Args),
    /// Build every guest and artifact of a build file (osbuilder.toml) into the stage cache
    Build(build::Args),
    /// Build a build file's artifacts and write Kata's release tree, or merge split runs
    Release(release::Args),
    /// Resolve a build file's packages into its lock file (osbuilder.lock)
    Lock(lock::Args),
    /// List or clean the stage cache
    Cache(cache::Args),
    /// Xen guest bundles: make one (bundle), lay it into a host rootfs (install)
    Xen(xen::Args),
    /// Write an OCI image layout: a multi-arch index of baremetal and virtualization manifests
    Oci(oci::OciArgs),
    /// Push an OCI image layout to a registry (SBOMs attached as referrers)
    Push(oci::PushArgs),
    /// Pull one platform of an OS image from a registry into a folder (verified)
    Pull(oci::PullArgs),
}

/// Parse arguments, run, and map errors to exit codes: 0 ok, 1 failed, 2 refused request.
pub fn main() -> i32 {
    crate::output::install_signal_cleanup();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Matrix(a) => matrix::run(a),
        Command::Rootfs(a) => rootfs::run(*a),
        Command::BuilderImage(a) => builder_image::run(a),
        Command::Provision(a) => provision::run(a),
        Command::Initrd(a) => initrd::run(a),
        Command::Image(a) => image::run(a),
        Command::Boot(a) => boot::run(a),
        Command::Kernel(a) => kernel::run(a),
        Command::Pkg(a) => pkg::run(a),
        Command::Build(a) => build::run(a),
        Command::Release(a) => release::run(a),
        Command::Lock(a) => lock::run(a),
        Command::Cache(a) => cache::run(a),
        Command::Xen(a) => xen::run(a),
        Command::Oci(a) => oci::run_oci(a),
        Command::Push(a) => oci::run_push(a),
        Command::Pull(a) => oci::run_pull(a),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("osbuilder: error: {e:#}");
            exit_code(&e)
        }
    }
}

/// The one place exit statuses are decided: 2 for a request refused before any work (bad or
/// unsupported input, an output path osbuilder will not write), 1 for a failure.
pub fn exit_code(e: &anyhow::Error) -> i32 {
    if crate::error::is_refused(e) { 2 } else { 1 }
}
