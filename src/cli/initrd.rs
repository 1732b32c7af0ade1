use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::compress::Compression;
use crate::initrd::{self, Options};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The rootfs must have /sbin/init (executable, or a symlink). If it has no /init, \
the archive gets one pointing at /sbin/init's target; the rootfs itself is not modified.\n\n\
Ownership, modes and device nodes that a rootless build could not put on disk are read from \
ROOTFS.mtree beside the rootfs (or --metadata). SOURCE_DATE_EPOCH clamps every mtime.\n\n\
Examples:\n  osbuilder initrd rootfs/\n  osbuilder initrd rootfs/ -o initrd.zst --compression zstd"
)]
pub struct Args {
    /// The rootfs directory to pack
    rootfs: PathBuf,
    /// Output file (written atomically)
    #[arg(short, long, default_value = initrd::DEFAULT_OUTPUT)]
    output: PathBuf,
    /// Compression; Kata's runtime expects gzip
    #[arg(long, value_enum, default_value = "gzip")]
    compression: Compression,
    /// Compression level (gzip 1-9, default 9 as in Kata; zstd 1-19, default 3; xz 0-9, default 6)
    #[arg(long)]
    level: Option<u32>,
    /// Rootfs metadata (mtree) file; default: ROOTFS.mtree beside the rootfs, if present
    #[arg(long)]
    metadata: Option<PathBuf>,
    /// Make every file owned by root (0:0) before applying the metadata
    #[arg(long)]
    all_root: bool,
}

pub fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let opts = Options {
        rootfs: a.rootfs,
        output: a.output,
        compression: a.compression,
        level: a.level,
        metadata: a.metadata,
        all_root: a.all_root,
        source_date_epoch: crate::tree::source_date_epoch()?,
    };
    let r = initrd::build(&opts)?;
    for w in &r.warnings {
        eprintln!("osbuilder: warning: {w}");
    }
    if let Some(m) = &r.metadata {
        eprintln!("metadata: {}", m.display());
    }
    if let Some(t) = &r.added_init {
        eprintln!(
            "added /init -> {} (archive only)",
            String::from_utf8_lossy(t)
        );
    }
    eprintln!(
        "wrote {}: {} entries, {:.1} MiB -> {:.1} MiB ({}) in {:.2} s",
        opts.output.display(),
        r.entries,
        r.uncompressed as f64 / 1048576.0,
        r.compressed as f64 / 1048576.0,
        opts.compression.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
