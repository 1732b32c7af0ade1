//! `osbuilder xen bundle|install`: Xen guest bundles and their installation into a host.

use std::path::PathBuf;

use anyhow::Result;

use crate::arch::Arch;
use crate::xen::{self, BundleOptions, InstallOptions};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Make a bundle of Xen guests (disks, kernels, xl configs, checksummed manifest)
    Bundle(BundleArgs),
    /// Lay a bundle into a host rootfs (/var/lib/xen/images, /etc/xen, /etc/xen/auto)
    Install(InstallArgs),
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "SPEC is a TOML file of [[guest]] tables (see docs/xen.md):\n\n  \
arch = \"aarch64\"\n  [[guest]]\n  name = \"guest1\"\n  memory = 256\n  \
kernel = \"vmlinuz\"            # a file, \"host\" (dom0's kernel) or \"none\" (HVM)\n  \
ramdisk = \"initrd.img\"\n  autostart = true\n  [guest.disk]\n  \
type = \"rootfs_dir\"           # rootfs_dir | qcow2 | ext4 | raw\n  source = \"guest-rootfs\"\n\n\
Output: DIR/images/ (disks, kernels, ramdisks), DIR/configs/<guest>.cfg (type = \"pvh\", \
key=value disks with target= last, cmdline with console=hvc0 and the root device of the \
disk: /dev/xvda for a bare filesystem, /dev/xvda1 for a partitioned disk), \
DIR/manifest.json and DIR/SHA256SUMS. Paths in SPEC are relative to it. SOURCE_DATE_EPOCH \
makes the bundle reproducible.\n\n\
Host tools: rootfs_dir: e2fsprogs; qcow2: qemu-utils.\n\n\
Example:\n  osbuilder xen bundle guests.toml -o bundle"
)]
struct BundleArgs {
    /// The bundle spec (TOML)
    spec: PathBuf,
    /// Output folder (created atomically; an earlier bundle is replaced)
    #[arg(short, long)]
    output: PathBuf,
    /// The guests' architecture [default: the spec's arch, else the host's]
    #[arg(long)]
    arch: Option<Arch>,
    /// Replace the output folder even if osbuilder did not make it
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Checks the bundle's sums, then writes into ROOTFS (in place): \
images to /var/lib/xen/images/, configurations to /etc/xen/<guest>.cfg, and for autostart \
guests the link /etc/xen/auto/<guest>.cfg -> /etc/xen/<guest>.cfg, which xendomains starts at \
boot. Guests with kernel = \"host\" get a copy of the host's /boot/vmlinuz-*. The guests are \
recorded in /var/lib/osbuilder/xen-guests.json, osbuilder.yaml (xen-guests:) and the SBOM. \
Unprivileged, ownership goes to ROOTFS.mtree.\n\n\
Example:\n  osbuilder rootfs --distro debian --arch arm64 --profile virtualization -o host\n  \
osbuilder xen install bundle host"
)]
struct InstallArgs {
    /// A bundle made by `osbuilder xen bundle`
    bundle: PathBuf,
    /// The host rootfs (dom0)
    rootfs: PathBuf,
    /// Rootfs metadata (mtree) file [default: ROOTFS.mtree]
    #[arg(long)]
    metadata: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    match a.command {
        Command::Bundle(b) => {
            let r = xen::bundle(&BundleOptions {
                spec: b.spec,
                output: b.output,
                force: b.force,
                arch: b.arch,
            })?;
            let bytes: u64 = r.manifest.files.iter().map(|f| f.size).sum();
            eprintln!(
                "osbuilder: bundle {} ready: {} guest(s) for {}, {} files, {:.1} MiB",
                crate::show::path(&r.output),
                r.manifest.guests.len(),
                r.manifest.arch,
                r.manifest.files.len(),
                bytes as f64 / 1048576.0
            );
            for g in &r.manifest.guests {
                println!(
                    "{} {} {}{}",
                    g.name,
                    g.guest_type,
                    g.config,
                    if g.autostart { " autostart" } else { "" }
                );
            }
            Ok(())
        }
        Command::Install(i) => {
            let r = xen::install(&InstallOptions {
                bundle: i.bundle,
                rootfs: i.rootfs.clone(),
                metadata: i.metadata,
            })?;
            for g in &r.guests {
                println!(
                    "{} {}{}",
                    g.name,
                    g.config,
                    if g.autostart { " autostart" } else { "" }
                );
            }
            eprintln!(
                "osbuilder: installed {} guest(s) into {}{}",
                r.guests.len(),
                crate::show::path(&i.rootfs),
                r.metadata
                    .map(|m| format!("; ownership in {}", crate::show::path(&m)))
                    .unwrap_or_default()
            );
            Ok(())
        }
    }
}
