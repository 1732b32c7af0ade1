use std::path::PathBuf;

use anyhow::Result;

use super::agent_args::AgentArgs;
use crate::arch::Arch;
use crate::distro::InitMode;
use crate::provision::{self, Options};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Makes a rootfs a Kata guest: installs the agent (as /sbin/init with --agent-init, \
or as /usr/bin/kata-agent started by kata-agent.service under systemd), Kata's units and config \
touches, an empty /etc/resolv.conf and /etc/machine-id, and /var/lib/osbuilder/osbuilder.yaml with \
an SPDX SBOM beside it. Run unprivileged, ownership goes to ROOTFS.mtree.\n\n\
Examples:\n  osbuilder provision rootfs/ --agent-init\n  \
osbuilder provision rootfs/ --agent-tarball kata-static-agent.tar.zst --prune-units"
)]
pub struct Args {
    /// The rootfs directory to provision (modified in place)
    rootfs: PathBuf,
    /// The agent is PID 1 (/sbin/init)
    #[arg(long, conflicts_with = "systemd")]
    agent_init: bool,
    /// systemd is PID 1 and starts the agent (the default, as in Kata)
    #[arg(long)]
    systemd: bool,
    /// Target architecture (checks the agent binary); default: the host's
    #[arg(long)]
    arch: Option<Arch>,
    #[command(flatten)]
    agent: AgentArgs,
    /// Rootfs metadata (mtree) file; default: ROOTFS.mtree beside the rootfs
    #[arg(long)]
    metadata: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let arch = crate::arch::Arch::or_host(a.arch)?;
    let init = if a.agent_init {
        InitMode::AgentInit
    } else {
        InitMode::Systemd
    };
    let opts = Options {
        rootfs: a.rootfs,
        spec: a.agent.spec(arch, init)?,
        metadata: a.metadata,
    };
    let r = provision::provision(&opts)?;
    report(&opts.rootfs, init, &r);
    Ok(())
}

pub(crate) fn report(rootfs: &std::path::Path, init: InitMode, r: &provision::Report) {
    for w in &r.warnings {
        eprintln!("osbuilder: warning: {w}");
    }
    eprintln!(
        "provisioned {} ({}): agent at {} (sha256 {})",
        rootfs.display(),
        init,
        r.agent_path,
        &r.agent_sha256[..16]
    );
    if !r.pruned.is_empty() {
        eprintln!("pruned {} systemd units/generators", r.pruned.len());
    }
    if let Some(m) = &r.metadata {
        eprintln!("metadata: {}", m.display());
    }
}
