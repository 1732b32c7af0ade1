use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use crate::arch::Arch;
use crate::kernel::{self, FetchOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: KernelCommand,
}

#[derive(Subcommand, Debug)]
enum KernelCommand {
    /// Fetch a distro kernel and its modules (verified, from the distro's repository)
    #[command(
        after_help = "Writes DIR/vmlinuz-<release> (and a vmlinuz link), DIR/config-<release> \
and DIR/modules/<release>/. The package is the [kernel] entry of distros/<distro>/distro.toml \
(Debian's cloud kernel on x86_64 and aarch64).\n\n\
Example:\n  osbuilder kernel fetch --arch arm64 -o kernels/arm64\n  \
osbuilder boot --kernel kernels/arm64/vmlinuz --initrd kata-containers-initrd.img"
    )]
    Fetch {
        /// Target architecture; default: the host's
        #[arg(long)]
        arch: Option<Arch>,
        /// Distro whose kernel to take
        #[arg(long, default_value = "debian")]
        distro: String,
        /// Suite / release (default: the distro's default)
        #[arg(long)]
        os_version: Option<String>,
        /// Repository URL (default as for `osbuilder rootfs`)
        #[arg(long)]
        mirror: Option<String>,
        /// Download cache (default as for `osbuilder rootfs`)
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Output folder (created atomically; an earlier kernel folder is replaced, any other
        /// non-empty folder refused). Default: kernels/<arch>
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the output folder even if osbuilder did not make it (never /, your home,
        /// the current directory or a mount point)
        #[arg(long)]
        force: bool,
    },
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        KernelCommand::Fetch {
            arch,
            distro,
            os_version,
            mirror,
            cache_dir,
            output,
            force,
        } => {
            let arch = crate::arch::Arch::or_host(arch)?;
            let f = kernel::fetch(&FetchOptions {
                distro,
                arch,
                os_version,
                mirror,
                cache_dir,
                output: output.unwrap_or_else(|| kernel::default_output(arch)),
                force,
            })?;
            eprintln!(
                "osbuilder: {} {} ({}) fetched",
                f.package, f.version, f.release
            );
            println!("{}", f.vmlinuz.display());
            println!("{}", f.modules.display());
            Ok(())
        }
    }
}
