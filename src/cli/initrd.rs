use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use super::agent_args::AgentArgs;
use super::dracut_args::{self, DracutArgs, Method};
use crate::compress::Compression;
use crate::distro::InitMode;
use crate::initrd::{self, Options};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The rootfs must have /sbin/init (executable, or a symlink). If it has no /init, \
the archive gets one pointing at /sbin/init's target; the rootfs itself is not modified.\n\n\
Ownership, modes and device nodes that a rootless build could not put on disk are read from \
ROOTFS.mtree beside the rootfs (or --metadata). SOURCE_DATE_EPOCH clamps every mtime.\n\n\
--method dracut takes no ROOTFS: the host is the base. Kata's overlay (the agent as \
--agent-init or under --systemd, its units, osbuilder.yaml) is merged with what dracut \
gathers from the host under the dracut profiles (--profile, default kata; see \
dracut-profiles/), with the modules of --kver/--kmoddir when given. Needs dracut \
(Debian: dracut-core); works unprivileged.\n\n\
Examples:\n  osbuilder initrd rootfs/\n  osbuilder initrd rootfs/ -o initrd.zst --compression zstd\n  \
osbuilder initrd --method dracut --agent-init\n  \
osbuilder initrd --method dracut --no-agent --profile image-boot,virtio --kmoddir K/modules/6.12.1 -o boot.img"
)]
pub struct Args {
    /// The rootfs directory to pack (not with --method dracut)
    rootfs: Option<PathBuf>,
    /// How the initrd is made
    #[arg(long, value_enum, default_value = "distro")]
    method: Method,
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
    /// The agent is PID 1 (with --method dracut)
    #[arg(long, conflicts_with = "systemd")]
    agent_init: bool,
    /// systemd is PID 1 and starts the agent (with --method dracut; the default, as Kata)
    #[arg(long)]
    systemd: bool,
    #[command(flatten)]
    agent: AgentArgs,
    /// No agent, no provisioning: dracut's tree and the profiles' files only (with
    /// --method dracut; e.g. the image-boot initramfs)
    #[arg(long, conflicts_with_all = ["agent_bin", "agent_tarball"])]
    no_agent: bool,
    #[command(flatten)]
    dracut: DracutArgs,
}

pub fn run(a: Args) -> Result<()> {
    match a.method {
        Method::Distro => run_distro(a),
        Method::Dracut => run_dracut(a),
    }
}

fn run_distro(a: Args) -> Result<()> {
    let mut only_dracut = a.dracut.given();
    for (given, flag) in [
        (a.agent_init, "--agent-init"),
        (a.systemd, "--systemd"),
        (a.no_agent, "--no-agent"),
        (a.agent.agent_bin.is_some(), "--agent-bin"),
        (a.agent.agent_tarball.is_some(), "--agent-tarball"),
        (a.agent.agent_version.is_some(), "--agent-version"),
        (a.agent.kernel_modules.is_some(), "--kernel-modules"),
        (a.agent.prune_units, "--prune-units"),
    ] {
        if given {
            only_dracut.push(flag);
        }
    }
    dracut_args::refuse(
        &only_dracut,
        "build an initrd with --method dracut; to pack a rootfs, provision it first \
         (osbuilder rootfs / osbuilder provision)",
    )?;
    let Some(rootfs) = a.rootfs else {
        return Err(crate::error::refused(
            "give the ROOTFS to pack, or --method dracut to build the initrd from the host",
        ));
    };
    let start = Instant::now();
    let opts = Options {
        rootfs,
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

fn run_dracut(a: Args) -> Result<()> {
    let mut wrong = Vec::new();
    if a.rootfs.is_some() {
        wrong.push("ROOTFS");
    }
    if a.metadata.is_some() {
        wrong.push("--metadata");
    }
    if a.all_root {
        wrong.push("--all-root");
    }
    dracut_args::refuse(
        &wrong,
        "does not apply to --method dracut: the host is the base and the archive is root-owned",
    )?;
    let start = Instant::now();
    let init = if a.agent_init {
        InitMode::AgentInit
    } else {
        InitMode::Systemd
    };
    let opts = a
        .dracut
        .options(init, (!a.no_agent).then(|| a.agent.request()))?;
    let (r, packed) = crate::dracut::build_initrd(&opts, &a.output, a.compression, a.level)?;
    dracut_args::report(&r);
    for w in &packed.warnings {
        eprintln!("osbuilder: warning: {w}");
    }
    eprintln!(
        "wrote {}: {} entries, {:.1} MiB -> {:.1} MiB ({}) in {:.2} s",
        a.output.display(),
        packed.entries,
        packed.uncompressed as f64 / 1048576.0,
        packed.compressed as f64 / 1048576.0,
        a.compression.name(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
