use std::path::PathBuf;

use anyhow::Result;

use super::agent_args::AgentArgs;
use super::builder_image::BuilderArg;
use super::dracut_args::{self, DracutArgs, Method};
use crate::arch::Arch;
use crate::distro::InitMode;
use crate::rootfs::{self, Options};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Builds natively: packages are verified against the distro's signed \
repository, extracted without running any target code, so every architecture builds on any host \
without root or qemu. Rootless builds keep ownership and device nodes in OUTPUT.mtree; the \
installed packages are listed in OUTPUT.packages.json.\n\n\
--builder podman|docker (Kata's USE_PODMAN/USE_DOCKER) runs the distro's own installer (mmdebstrap, apk) in a builder container instead, maintainer scripts included; the tree comes back as a tar stream and gets the same provisioning and sidecars. See `osbuilder builder-image`.

Mirror: --mirror, else $OSBUILDER_MIRROR, else (debian on a Debian host) the host's APT \
sources, else distro.toml. Ubuntu serves amd64 from its primary archive and other arches from \
its ports archive: pass the matching URL.\n\n\
Examples:\n  osbuilder rootfs --distro debian --agent-init -o rootfs\n  \
osbuilder rootfs --distro debian --arch arm64 --profile virtualization -o host\n  \
osbuilder rootfs --distro debian --arch arm64 --extra-pkgs strace -o rootfs-arm64\n  \
osbuilder rootfs --distro debian --builder podman --agent-init -o rootfs\n  \
osbuilder rootfs --distro debian --agent-init --package-set minimal -o slim\n  \
osbuilder rootfs --distro ubuntu --arch arm64 --mirror http://MIRROR/ubuntu-ports --dry-run -o x\n  \
osbuilder rootfs --distro alpine --agent-init --arch aarch64 --os-version 3.22 --mirror http://MIRROR/alpine -o rootfs\n  \
osbuilder rootfs --method dracut --agent-init -o dracut_rootfs\n  \
osbuilder rootfs --from-initrd kata-containers-initrd.img -o rootfs\n\n\
Guests leave out docs, man pages and translations while unpacking (dpkg-style path filters from \
the distro's [slim] table; copyright files stay); --keep-docs keeps them, --path-exclude/--path-include \
add rules; osbuilder.yaml lists the rules and what they left out. Hosts (--profile) keep everything.\n\n\
--method dracut builds Kata's dracut initrd from the host (see `osbuilder initrd --help`) and \
unpacks it as the rootfs; --from-initrd unpacks an initrd you have (gzip, zstd, xz or none)."
)]
pub struct Args {
    /// Distro (see `osbuilder matrix`); not with --method dracut
    #[arg(long, required_unless_present_any = ["method", "from_initrd"])]
    distro: Option<String>,
    /// How the rootfs is made
    #[arg(long, value_enum)]
    method: Option<Method>,
    #[command(flatten)]
    dracut: DracutArgs,
    /// Unpack this initrd (compressed or not) as the rootfs, instead of building one
    #[arg(long, value_name = "FILE", conflicts_with_all = ["distro", "method"])]
    from_initrd: Option<std::path::PathBuf>,
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
    /// The distro's package set to start from: Kata's list, or only what an agent guest
    /// needs (docs/slim.md)
    #[arg(long, value_enum, default_value_t = PackageSetArg::Default, conflicts_with = "packages")]
    package_set: PackageSetArg,
    /// Keep the docs, man pages and translations the distro's path filters leave out of a
    /// guest ([slim] in its distro.toml)
    #[arg(long)]
    keep_docs: bool,
    /// Leave out package files matching this glob (dpkg's --path-exclude: absolute, `*`
    /// matches `/` too; repeatable; after the distro's filters)
    #[arg(long, value_name = "GLOB")]
    path_exclude: Vec<String>,
    /// Keep package files matching this glob although an exclude matches (dpkg's
    /// --path-include; repeatable; applied after every --path-exclude)
    #[arg(long, value_name = "GLOB")]
    path_include: Vec<String>,
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
    /// Where the rootfs is built: osbuilder's own installers, or the distro's in a container
    #[arg(long, value_enum, default_value_t = BuilderArg::Native)]
    builder: BuilderArg,
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

/// `--package-set` (the library's `distro::PackageSet` carries no clap derive).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum PackageSetArg {
    /// Kata's list for the distro (distro.toml [packages])
    Default,
    /// Only what an agent guest needs (distro.toml [packages.minimal])
    Minimal,
}

pub fn run(mut a: Args) -> Result<()> {
    let init = if a.agent_init {
        Some(InitMode::AgentInit)
    } else if a.systemd {
        Some(InitMode::Systemd)
    } else {
        None
    };
    let distro_only = [
        (a.distro.is_some(), "--distro"),
        (a.arch.is_some(), "--arch"),
        (a.os_version.is_some(), "--os-version"),
        (!a.extra_pkgs.is_empty(), "--extra-pkgs"),
        (a.packages.is_some(), "--packages"),
        (a.package_set != PackageSetArg::Default, "--package-set"),
        (a.keep_docs, "--keep-docs"),
        (!a.path_exclude.is_empty(), "--path-exclude"),
        (!a.path_include.is_empty(), "--path-include"),
        (a.mirror.is_some(), "--mirror"),
        (!a.keyring.is_empty(), "--keyring"),
        (!a.keys_dir.is_empty(), "--keys-dir"),
        (a.cache_dir.is_some(), "--cache-dir"),
        (a.dry_run, "--dry-run"),
        (a.run_scripts, "--run-scripts"),
    ];
    let given = |flags: &[(bool, &'static str)]| -> Vec<&'static str> {
        flags.iter().filter(|(g, _)| *g).map(|(_, f)| *f).collect()
    };
    if let Some(initrd) = &a.from_initrd {
        let mut wrong = given(&distro_only);
        wrong.extend(a.dracut.given());
        if a.agent_init
            || a.systemd
            || a.agent.agent_bin.is_some()
            || a.agent.agent_tarball.is_some()
        {
            wrong.push("agent flags");
        }
        dracut_args::refuse(
            &wrong,
            "do not apply to --from-initrd: the rootfs is the initrd's content as it is",
        )?;
        let un = crate::dracut::rootfs_from_initrd(initrd, &a.output, a.force)?;
        eprintln!(
            "osbuilder: rootfs {} from {} ({}): {} entries{}",
            a.output.display(),
            initrd.display(),
            un.compression.name(),
            un.members,
            if un.skipped.is_empty() {
                String::new()
            } else {
                format!("; left out {}", un.skipped.join(", "))
            }
        );
        return Ok(());
    }
    if a.method == Some(Method::Dracut) {
        dracut_args::refuse(
            &given(&distro_only),
            "do not apply to --method dracut: the host is the base (its distro, arch and files)",
        )?;
        let opts = a.dracut.options(
            init.unwrap_or(InitMode::Systemd),
            (!a.no_agent).then(|| a.agent.request()),
        )?;
        let r = crate::dracut::build_rootfs(&opts, &a.output, a.force)?;
        dracut_args::report(&r);
        eprintln!("osbuilder: rootfs {} ready", a.output.display());
        return Ok(());
    }
    // Without --method dracut, `--profile` names a host profile (profiles/): a host, not a
    // guest, with the profile's packages, files and units, systemd as init and no agent.
    let profile = match std::mem::take(&mut a.dracut.profiles).as_slice() {
        [] => None,
        [one] => Some(one.clone()),
        many => {
            return Err(crate::error::refused(format!(
                "a host is built from one --profile (baremetal or virtualization), not {}; \
                 dracut profiles need --method dracut",
                many.join(", ")
            )));
        }
    };
    if profile.is_some() {
        let agent_flags = [
            (a.agent_init, "--agent-init"),
            (a.no_agent, "--no-agent"),
            (a.agent.agent_bin.is_some(), "--agent-bin"),
            (a.agent.agent_tarball.is_some(), "--agent-tarball"),
            (a.agent.kernel_modules.is_some(), "--kernel-modules"),
            (a.agent.prune_units, "--prune-units"),
        ];
        dracut_args::refuse(
            &given(&agent_flags),
            "do not apply to a host profile: a host runs systemd and has no agent",
        )?;
    }
    dracut_args::refuse(&a.dracut.given(), "only apply to --method dracut")?;
    let Some(distro) = a.distro else {
        return Err(crate::error::refused(
            "give --distro D (see `osbuilder matrix`), or --method dracut",
        ));
    };
    rootfs::build(
        &Options {
            distro,
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
            builder: a.builder.into(),
            profile,
            package_set: match a.package_set {
                PackageSetArg::Default => crate::distro::PackageSet::Default,
                PackageSetArg::Minimal => crate::distro::PackageSet::Minimal,
            },
            keep_docs: a.keep_docs,
            path_filters: a
                .path_exclude
                .iter()
                .map(|g| format!("path-exclude={g}"))
                .chain(a.path_include.iter().map(|g| format!("path-include={g}")))
                .collect(),
        },
        &super::render::Lines,
    )
}
