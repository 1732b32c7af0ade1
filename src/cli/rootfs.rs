use std::path::PathBuf;

use anyhow::Result;

use super::agent_args::AgentArgs;
use crate::arch::Arch;
use crate::distro::InitMode;
use crate::rootfs::{self, Options};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Builds natively: packages are verified against the distro's signed \
repository, extracted without running any target code, so every architecture builds on any host \
without root or qemu. Rootless builds keep ownership and device nodes in OUTPUT.mtree; the \
installed packages are listed in OUTPUT.packages.json.\n\n\
Mirror: --mirror, else $OSBUILDER_MIRROR, else (debian on a Debian host) the host's APT \
sources, else distro.toml. Ubuntu serves amd64 from its primary archive and other arches from \
its ports archive: pass the matching URL.\n\n\
Examples:\n  osbuilder rootfs --distro debian --agent-init -o rootfs\n  \
osbuilder rootfs --distro debian --arch arm64 --extra-pkgs strace -o rootfs-arm64\n  \
osbuilder rootfs --distro ubuntu --arch arm64 --mirror http://MIRROR/ubuntu-ports --dry-run -o x\n  \
osbuilder rootfs --distro alpine --agent-init --arch aarch64 --os-version 3.22 --mirror http://MIRROR/alpine -o rootfs"
)]
pub struct Args {
    /// Distro (see `osbuilder matrix`)
    #[arg(long)]
    distro: String,
    /// Target architecture (x86_64/amd64, aarch64/arm64, ppc64le/ppc64el, s390x); default: host
    #[arg(long)]
    arch: Option<Arch>,
    /// Distro release / suite (default: the distro's default, e.g. trixie)
    #[arg(long)]
    os_version: Option<String>,
    /// The agent is PID 1 (no systemd)
    #[arg(long, conflicts_with = "systemd")]
    agent_init: bool,
    /// systemd is PID 1 and starts the agent
    #[arg(long)]
    systemd: bool,
    /// Packages added to the distro's set (comma-separated; Kata's EXTRA_PKGS)
    #[arg(long, value_delimiter = ',')]
    extra_pkgs: Vec<String>,
    /// Packages replacing the distro's set (comma-separated)
    #[arg(long, value_delimiter = ',')]
    packages: Option<Vec<String>>,
    /// Repository URL (Debian: the folder holding dists/ and pool/; Alpine: the folder
    /// holding v3.22/ and edge/; rpm distros: the root their distro.toml `repos` paths
    /// start from)
    #[arg(long)]
    mirror: Option<String>,
    /// Also trust this OpenPGP keyring (.gpg/.pgp/.asc): Debian Release files; rpm
    /// repository metadata and package signatures
    #[arg(long)]
    keyring: Vec<PathBuf>,
    /// Alpine: also trust the RSA keys (*.rsa.pub) in this folder (e.g. the s390x keys)
    #[arg(long)]
    keys_dir: Vec<PathBuf>,
    /// RPM: install packages that carry no signature (warned, recorded in osbuilder.yaml);
    /// not needed where the distro declares its packages unsigned (Clear Linux)
    #[arg(long)]
    allow_unsigned: bool,

    /// Download cache (default $OSBUILDER_CACHE_DIR, $XDG_CACHE_HOME/osbuilder, ~/.cache/osbuilder)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Resolve and print the install plan (name version arch size), download nothing
    #[arg(long)]
    dry_run: bool,
    /// Run maintainer scripts in a chroot (root; same arch, or qemu-user via binfmt)
    #[arg(long)]
    run_scripts: bool,
    /// Output rootfs folder (created atomically; an earlier osbuilder rootfs is replaced, any
    /// other non-empty folder refused)
    #[arg(short, long)]
    output: PathBuf,
    /// Replace the output folder even if osbuilder did not make it (never /, your home, the
    /// current directory or a mount point)
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    agent: AgentArgs,
    /// Build a bare rootfs without the agent (Kata's ROOTFS_ONLY)
    #[arg(long, conflicts_with_all = ["agent_bin", "agent_tarball"])]
    no_agent: bool,
}

pub fn run(a: Args) -> Result<()> {
    let init = if a.agent_init {
        Some(InitMode::AgentInit)
    } else if a.systemd {
        Some(InitMode::Systemd)
    } else {
        None
    };
    rootfs::build(&Options {
        distro: a.distro,
        arch: a.arch,
        os_version: a.os_version,
        init,
        extra_pkgs: a.extra_pkgs,
        packages: a.packages,
        mirror: a.mirror,
        keyrings: a.keyring,
        keys_dirs: a.keys_dir,
        allow_unsigned: a.allow_unsigned,
        cache_dir: a.cache_dir,
        dry_run: a.dry_run,
        run_scripts: a.run_scripts,
        output: a.output,
        force: a.force,
        host_apt_dir: None,
        agent: (!a.no_agent).then(|| a.agent.request()),
    })
}
