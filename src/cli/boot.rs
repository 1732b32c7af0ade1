use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::arch::Arch;
use crate::boot::{self, DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_SECS, DiskBus, Options};

#[derive(clap::Args, Debug)]
#[command(
    group(clap::ArgGroup::new("media").required(true).multiple(true).args(["initrd", "image"])),
    after_help = "Starts qemu-system-<arch> with software emulation (TCG), no network, no \
reboot and the serial console on a pipe, and waits for the agent's ready line (by default \
the reference agent's 'osbuilder-agent: ready'). Prints the time to ready on stdout. On a \
timeout, a kernel panic or an early QEMU exit it fails (exit 1) and shows the last 30 console \
lines. The guest is always stopped when the command ends, also on Ctrl-C.\n\n\
Kernel command line: console=<ttyS0|ttyAMA0|hvc0|ttysclp0> panic=-1, then for --image \
root=<partition holding the first ext4/xfs/erofs filesystem> rootfstype=<type> ro (left out \
when --append has root=), then osbuilder.poweroff=1 with --poweroff, then --append.\n\n\
Disk images are attached read-only as NVMe by default (Debian's cloud kernels have NVMe and \
ext4 built in, so an image boots without an initramfs), or as Kata's runtime attaches them: \
--disk virtio-blk (root=/dev/vda1) or --disk nvdimm (QEMU memory-backend-file + nvdimm, the \
DAX header's pfn device, root=/dev/pmem0p1 rootflags=dax). A measured image (osbuilder image \
--measured: a hash partition and root_hash.txt beside it, or --root-hash) boots with \
dm-verity: dm-mod.create=… root=/dev/dm-0. When the kernel has the drivers this needs as \
modules (Debian's: virtio_blk, nfit/nd_pmem, dm_verity) and no --initrd is given, a boot \
initramfs is built with the dracut method (profiles image-boot, virtio, nvdimm, verity) from \
the kernel's modules (--modules, else the modules/<release> folder `osbuilder kernel fetch` \
writes beside it, else /lib/modules/<release>) and cached.\n\n\
--firmware uefi boots a disk as a machine would: OVMF (x86_64, package ovmf) or AAVMF \
(aarch64, package qemu-efi-aarch64) starts the boot program on the disk's EFI system partition \
(osbuilder image --profile), which brings its own kernel and command line: no --kernel. The \
disk is attached over NVMe as a snapshot (writable for the guest, the file unchanged). \
--virtualization (aarch64) exposes EL2 and the device tree so a hypervisor on the disk (Xen) \
runs; a host usually needs --expect (e.g. 'Reached target multi-user.target').\n\n\
Examples:\n  osbuilder boot --kernel vmlinuz --initrd kata-containers-initrd.img\n  \
osbuilder boot --kernel vmlinuz --image kata-containers.img --poweroff\n  \
osbuilder boot --kernel kernel/vmlinuz --image kata-containers.img --disk nvdimm --poweroff\n  \
osbuilder boot --arch aarch64 --kernel vmlinuz-arm64 --initrd initrd.img --verbose\n  \
osbuilder boot --kernel vmlinuz --image img --expect 'kata-agent' --timeout 300\n  \
osbuilder boot --firmware uefi --image host.img --expect 'Reached target multi-user.target'"
)]
pub struct Args {
    /// The kernel to boot (vmlinuz, bzImage or arm64 Image)
    #[arg(long, required_unless_present = "firmware")]
    kernel: Option<PathBuf>,
    /// Initrd (initramfs) to boot from, or to load before the disk's root
    #[arg(long, conflicts_with = "firmware")]
    initrd: Option<PathBuf>,
    /// Disk image to boot (attached read-only, root on its first recognised partition)
    #[arg(long)]
    image: Option<PathBuf>,
    /// Guest architecture; default: the kernel's own (from its header), else the host's
    #[arg(long)]
    arch: Option<Arch>,
    /// Seconds to wait for the ready line (and for the power-off with --poweroff)
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_SECS, value_name = "SECONDS")]
    timeout: u64,
    /// Extra kernel command-line arguments, added last
    #[arg(long, allow_hyphen_values = true, value_name = "ARGS")]
    append: Option<String>,
    /// Guest memory in MiB
    #[arg(long, default_value_t = DEFAULT_MEMORY_MB, value_name = "MB")]
    memory: u32,
    /// Text that means "ready" on the console [default: the reference agent's marker]
    #[arg(long, value_name = "TEXT")]
    expect: Option<String>,
    /// Ask the agent to power off after the ready line (osbuilder.poweroff=1) and require a
    /// clean power-off
    #[arg(long)]
    poweroff: bool,
    /// How the disk image is attached
    #[arg(
        long = "disk",
        visible_alias = "disk-bus",
        value_enum,
        default_value = "nvme"
    )]
    disk_bus: DiskBus,
    /// Kata's root hash file of a measured image [default: root_hash.txt beside the image]
    #[arg(long, value_name = "FILE")]
    root_hash: Option<PathBuf>,
    /// The kernel's modules folder, for the boot initramfs [default: modules/<release>
    /// beside the kernel, else /lib/modules/<release>]
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// Cache for the boot initramfs (default as for `osbuilder rootfs`)
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Show the console live (on stderr)
    #[arg(short, long)]
    verbose: bool,
    /// Boot the disk through firmware instead of a kernel given here
    #[arg(long, value_enum, requires = "image", conflicts_with_all = ["kernel", "append", "disk_bus"])]
    firmware: Option<Firmware>,
    /// aarch64, with --firmware: expose EL2 (virtualization=on) so a hypervisor can run
    #[arg(long, requires = "firmware")]
    virtualization: bool,
}

/// Firmware for `--firmware`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Firmware {
    /// UEFI: OVMF on x86_64, AAVMF on aarch64
    Uefi,
}

pub fn run(a: Args) -> Result<()> {
    if a.timeout == 0 {
        return Err(crate::error::refused("--timeout must be at least 1 second"));
    }
    let mut o = Options::new(a.kernel.clone().unwrap_or_default());
    o.initrd = a.initrd;
    o.image = a.image;
    o.arch = a.arch;
    o.timeout = Duration::from_secs(a.timeout);
    o.append = a.append;
    o.memory_mb = a.memory;
    if let Some(e) = a.expect {
        o.expect = e;
    }
    o.poweroff = a.poweroff;
    o.disk_bus = a.disk_bus;
    o.root_hash = a.root_hash;
    o.modules = a.modules;
    o.cache_dir = a.cache_dir;

    let plan = match a.firmware {
        Some(Firmware::Uefi) => boot::uefi::plan(&boot::uefi::UefiOptions {
            image: o.image.clone().unwrap_or_default(),
            arch: a.arch,
            memory_mb: a.memory,
            virtualization: a.virtualization,
        })?,
        None => boot::plan(&o)?,
    };
    for n in &plan.notes {
        eprintln!("osbuilder: {n}");
    }
    let m = &plan.machine;
    let what = match &plan.uefi {
        Some(u) => format!(
            "{} through UEFI ({})",
            u.image.display(),
            u.firmware.code.display()
        ),
        None => o.kernel.display().to_string(),
    };
    eprintln!(
        "booting {what} on {} ({}, TCG, {} MiB), timeout {} s, waiting for '{}'",
        plan.qemu.display(),
        m.arch,
        m.memory_mb,
        a.timeout,
        o.expect
    );
    if plan.uefi.is_none() {
        eprintln!("kernel command line: {}", m.cmdline);
    }
    let verbose = a.verbose;
    let r = boot::run(&plan, &o, &mut |line| {
        if verbose {
            eprintln!("{line}");
        }
    })?;
    println!(
        "ready after {:.2} s: {}",
        r.ready_after.as_secs_f64(),
        r.ready_line.trim()
    );
    if let Some(t) = r.powered_off_after {
        println!("powered off after {:.2} s", t.as_secs_f64());
    }
    Ok(())
}
