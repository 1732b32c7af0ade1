//! `osbuilder builder-image`: make (or find) a distro's builder container image.

use std::path::PathBuf;

use anyhow::Result;

use crate::builder::{self, Builder, ImageOptions, image};

/// The container engines, as flags name them (the library's `Builder` has no clap derive).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BuilderArg {
    /// osbuilder's own installers: no root, no container, any arch
    Native,
    /// The distro's installer in a podman container
    Podman,
    /// The distro's installer in a docker container
    Docker,
}

impl From<BuilderArg> for Builder {
    fn from(b: BuilderArg) -> Builder {
        match b {
            BuilderArg::Native => Builder::Native,
            BuilderArg::Podman => Builder::Podman,
            BuilderArg::Docker => Builder::Docker,
        }
    }
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "The image is defined by [builder.image] in distros/<distro>/distro.toml and \
tagged localhost/osbuilder/builder-<distro>-<version>:<hash of the definition>, so it is made once \
and reused until the definition changes. By default it is bootstrapped natively (offline: \
osbuilder's verified backend installs the builder's packages, e.g. mmdebstrap, and the tree is \
imported); --pull builds it from the definition's registry base instead. `osbuilder rootfs \
--builder podman` makes it implicitly when it is missing.\n\n\
Examples:\n  osbuilder builder-image --distro debian\n  \
osbuilder builder-image --distro alpine --mirror http://MIRROR/alpine\n  \
osbuilder builder-image --distro debian --builder docker --pull"
)]
pub struct Args {
    /// Distro whose builder image to make
    #[arg(long)]
    distro: String,
    /// Container engine
    #[arg(long, value_enum, default_value_t = BuilderArg::Podman)]
    builder: BuilderArg,
    /// Build from the definition's registry base image instead of bootstrapping natively
    #[arg(long)]
    pull: bool,
    /// Make the image again even if the engine has it
    #[arg(long)]
    rebuild: bool,
    /// Repository of the builder's own packages (default as for `osbuilder rootfs` of the
    /// builder's distro: Debian's for the Debian and Ubuntu builders)
    #[arg(long)]
    mirror: Option<String>,
    /// Also trust this OpenPGP keyring for the builder's repository
    #[arg(long)]
    keyring: Vec<PathBuf>,
    /// Alpine: also trust the RSA keys in this folder
    #[arg(long)]
    keys_dir: Vec<PathBuf>,
    /// Download cache (default as for `osbuilder rootfs`)
    #[arg(long)]
    cache_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let img = builder::builder_image(
        &ImageOptions {
            distro: a.distro,
            builder: a.builder.into(),
            pull: a.pull,
            rebuild: a.rebuild,
            sources: image::Sources {
                mirror: a.mirror,
                keyrings: a.keyring,
                keys_dirs: a.keys_dir,
                cache_dir: a.cache_dir,
            },
        },
        &super::render::Lines,
    )?;
    eprintln!(
        "osbuilder: builder image {} ({})",
        img.reference,
        match img.origin {
            image::Origin::Reused => "already there",
            image::Origin::Bootstrapped => "bootstrapped natively",
            image::Origin::Pulled => "built from the registry base",
        }
    );
    println!("{}", img.reference);
    Ok(())
}
