use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::image::fs::FsType;
use crate::image::layout::Table;
use crate::image::{self, Format, Options};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Layout (default, Kata-compatible): MBR, one root partition, and the DAX \
header: 0: MBR#1 | 4 KiB: nd_pfn info block | 2 MiB: MBR#2 | 3 MiB: root partition. A guest \
on virtio-blk reads MBR#1 and mounts /dev/vda1; one that sees the image as an NVDIMM honours \
the info block and mounts /dev/pmem0p1. --no-dax: MBR, root partition from 1 MiB to the end.\n\n\
Size: computed from the tree (inodes, blocks, directories, journal, metadata), plus \
--free-mb, rounded up to --align-mb. The default alignment is 128 MiB with the DAX header \
(the image becomes an NVDIMM, whose size must be a multiple of the 128 MiB memory section; \
Kata's IMAGE_SIZE_ALIGNMENT_MB) and 1 MiB without it (nothing needs more).\n\n\
--measured: a dm-verity hash partition (sha256, 4 KiB blocks, no superblock) after the root \
partition; root_hash.txt is written beside the image (or --root-hash-file) and the kernel \
parameters are printed.\n\n\
Ownership, modes and device nodes come from ROOTFS.mtree (or --metadata); no privileges are \
needed. SOURCE_DATE_EPOCH fixes every timestamp; --seed fixes UUIDs, salts and hash seeds \
(default: derived from the content — the tree as packed, SOURCE_DATE_EPOCH and these options, \
never the output's name or folder — and random without SOURCE_DATE_EPOCH).\n\n\
Host tools: ext4: e2fsprogs; xfs: xfsprogs; erofs: erofs-utils, fakeroot; qcow2: qemu-utils.\n\n\
Examples:\n  osbuilder image rootfs/\n  osbuilder image rootfs/ --no-dax --table gpt -o root.img\n  \
osbuilder image rootfs/ --fs erofs --measured --no-dax"
)]
pub struct Args {
    /// The rootfs directory
    rootfs: PathBuf,
    /// Output file (written atomically)
    #[arg(short, long, default_value = image::DEFAULT_OUTPUT)]
    output: PathBuf,
    /// Root filesystem
    #[arg(long, value_enum, default_value = "ext4")]
    fs: FsType,
    /// Partition table; gpt uses the Discoverable Partitions root type for --arch
    #[arg(long, value_enum, default_value = "mbr")]
    table: Table,
    /// Write Kata's DAX header (the default)
    #[arg(long, overrides_with = "no_dax")]
    dax: bool,
    /// Plain layout without the DAX header
    #[arg(long)]
    no_dax: bool,
    /// Add a dm-verity hash partition and write the root hash file
    #[arg(long)]
    measured: bool,
    /// Output format
    #[arg(long, value_enum, default_value = "raw")]
    format: Format,
    /// Exact image size in MiB (an error if the rootfs does not fit)
    #[arg(long, conflicts_with = "free_mb")]
    size_mb: Option<u64>,
    /// Free space to leave in the root filesystem, in MiB
    #[arg(long, default_value_t = 0)]
    free_mb: u64,
    /// Round the image size up to a multiple of this many MiB [default: 128 with DAX, 1 without]
    #[arg(long)]
    align_mb: Option<u64>,
    /// Filesystem block size (ext4: 1024, 2048 or 4096)
    #[arg(long, default_value_t = 4096)]
    block_size: u32,
    /// Rootfs metadata (mtree) file; default: ROOTFS.mtree beside the rootfs, if present
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Seed for UUIDs, the dm-verity salt and directory hash seeds
    #[arg(long)]
    seed: Option<String>,
    /// Target architecture (GPT root partition type) [default: host]
    #[arg(long)]
    arch: Option<crate::arch::Arch>,
    /// Where --measured writes the root hash line [default: root_hash.txt beside the image]
    #[arg(long)]
    root_hash_file: Option<PathBuf>,
    /// Do not require /sbin/init (data-only images)
    #[arg(long)]
    skip_rootfs_check: bool,
}

pub fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let opts = Options {
        rootfs: a.rootfs,
        output: a.output,
        fs: a.fs,
        table: a.table,
        dax: !a.no_dax,
        measured: a.measured,
        format: a.format,
        size_mb: a.size_mb,
        free_mb: a.free_mb,
        align_mb: a.align_mb,
        block_size: a.block_size,
        metadata: a.metadata,
        seed: a.seed,
        arch: crate::arch::Arch::or_host(a.arch)?,
        source_date_epoch: crate::tree::source_date_epoch()?,
        root_hash_file: a.root_hash_file,
        skip_rootfs_check: a.skip_rootfs_check,
    };
    let _ = a.dax;
    let r = image::build(&opts)?;
    for w in &r.warnings {
        eprintln!("osbuilder: warning: {w}");
    }
    if let Some(m) = &r.metadata {
        eprintln!("metadata: {}", m.display());
    }
    let l = &r.layout;
    eprintln!(
        "wrote {}: {} MiB image ({} bytes on disk), {} entries / {:.1} MiB of files, \
         root partition {} MiB at {} MiB{} in {:.2} s",
        opts.output.display(),
        l.total >> 20,
        r.output_bytes,
        r.entries,
        r.content_bytes as f64 / 1048576.0,
        l.root.len >> 20,
        l.root.start >> 20,
        l.hash
            .map(|h| format!(", hash partition {} MiB", h.len.div_ceil(1 << 20)))
            .unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    if let Some(p) = &r.root_hash_file {
        eprintln!("root hash: {}", p.display());
    }
    println!("{}", r.kernel_params);
    Ok(())
}
