//! `osbuilder oci`, `osbuilder push` and `osbuilder pull`: flags → the library's options, and
//! the reports rendered on stdout (the digests) and stderr (what happened).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;

use crate::arch::Arch;
use crate::error::refused;
use crate::oci::layout::LinkMode;
use crate::oci::publish::{self, ArchArtifacts, Variant, VariantStyle};
use crate::oci::pull::{self, PlatformSpec};
use crate::oci::push;
use crate::oci::reference::Reference;
use crate::oci::registry::{DEFAULT_CHUNK, Settings};
use crate::oci::rootfs::RootfsFormat;

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum FormatArg {
    Ext4,
    Erofs,
    Xfs,
    Tar,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum StyleArg {
    Platform,
    Annotation,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum VariantArg {
    Baremetal,
    Virtualization,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Writes an OCI image layout (oci-layout, index.json, blobs/sha256/): one \
image index tagged --tag with, per arch, a baremetal manifest (kernel + initramfs + rootfs; \
only when both boot files are given) and a virtualization manifest (rootfs only). Layers carry \
ironcore-image's media types and an org.opencontainers.image.title (rootfs.img, vmlinuz, \
initramfs.img), the config ironcore's {\"commandLine\": …}. The SBOM of each manifest is an SPDX \
artifact whose subject is that manifest (never a layer).\n\n\
--artifacts (once per arch): arch=A,rootfs=FILE[,kernel=FILE|DIR][,initramfs=FILE][,sbom=FILE]. \
rootfs is a disk image from `osbuilder image` (or a tar with --rootfs-format tar); kernel may be \
the folder `osbuilder kernel fetch -o DIR` wrote.\n\n\
Order: per arch the --first variant (baremetal: the complete one, right for consumers that match \
only os/arch and take the first), arches in the order x86_64, aarch64, ppc64le, s390x. Blobs are \
reflinked or hard-linked from the artifacts when the filesystem allows (--copy to always copy). \
SOURCE_DATE_EPOCH fixes `created`: same inputs → same index digest.\n\n\
Example:\n  osbuilder oci -o layout --tag trixie \\\n    --artifacts arch=amd64,rootfs=amd64.img,kernel=kernels/amd64,initramfs=initrd-amd64.img,sbom=amd64.spdx.json \\\n    --artifacts arch=arm64,rootfs=arm64.img,kernel=kernels/arm64,initramfs=initrd-arm64.img\n  osbuilder push layout 127.0.0.1:5000/os/debian:trixie"
)]
pub struct OciArgs {
    /// The layout folder to write
    #[arg(short, long)]
    output: PathBuf,
    /// Tag of the image in the layout (and the default tag for `push`)
    #[arg(long, default_value = "latest")]
    tag: String,
    /// One arch's artifacts: arch=A,rootfs=FILE[,kernel=F][,initramfs=F][,sbom=F]
    #[arg(long = "artifacts", required = true, value_name = "LIST")]
    artifacts: Vec<String>,
    /// What the rootfs files are: a raw disk image with an ext4/erofs/xfs root, or a tar
    #[arg(long, value_enum, default_value = "ext4")]
    rootfs_format: FormatArg,
    /// Kernel command line in the config [default: root=UUID=<rootfs uuid> rootfstype=<fs> ro]
    #[arg(long, allow_hyphen_values = true)]
    cmdline: Option<String>,
    /// Where the variant goes: platform.variant, or only an annotation
    #[arg(long, value_enum, default_value = "platform")]
    variant_style: StyleArg,
    /// Which variant comes first for each arch
    #[arg(long, value_enum, default_value = "baremetal")]
    first: VariantArg,
    /// Always copy blobs (never reflink or hard-link the artifacts)
    #[arg(long)]
    copy: bool,
    /// Distro name, for the annotations
    #[arg(long)]
    distro: Option<String>,
    /// Distro version, for the annotations
    #[arg(long)]
    os_version: Option<String>,
    /// Image version (org.opencontainers.image.version)
    #[arg(long = "image-version")]
    image_version: Option<String>,
    /// Extra annotation KEY=VALUE on the index and every manifest (repeatable)
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// Replace a non-empty output folder that osbuilder did not write
    #[arg(long)]
    force: bool,
}

fn parse_artifacts(s: &str) -> Result<ArchArtifacts> {
    let mut arch = None;
    let mut a = ArchArtifacts {
        arch: Arch::X86_64,
        rootfs: PathBuf::new(),
        kernel: None,
        initramfs: None,
        sbom: None,
    };
    let mut rootfs = None;
    for part in s.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| refused(format!("--artifacts '{s}': '{part}' is not KEY=VALUE")))?;
        match k {
            "arch" => arch = Some(v.parse::<Arch>()?),
            "rootfs" => rootfs = Some(PathBuf::from(v)),
            "kernel" => a.kernel = Some(PathBuf::from(v)),
            "initramfs" | "initrd" => a.initramfs = Some(PathBuf::from(v)),
            "sbom" => a.sbom = Some(PathBuf::from(v)),
            _ => {
                return Err(refused(format!(
                    "--artifacts: unknown key '{k}' (arch, rootfs, kernel, initramfs, sbom)"
                )));
            }
        }
    }
    a.arch = arch.ok_or_else(|| refused(format!("--artifacts '{s}' has no arch=")))?;
    a.rootfs = rootfs.ok_or_else(|| refused(format!("--artifacts '{s}' has no rootfs=")))?;
    Ok(a)
}

pub fn run_oci(a: OciArgs) -> Result<()> {
    let artifacts = a
        .artifacts
        .iter()
        .map(|s| parse_artifacts(s))
        .collect::<Result<Vec<_>>>()?;
    let mut annotations = BTreeMap::new();
    for kv in &a.annotations {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| refused(format!("--annotation '{kv}' is not KEY=VALUE")))?;
        annotations.insert(k.to_string(), v.to_string());
    }
    if let Some(d) = a.distro {
        annotations.insert("dev.osbuilder.distro".into(), d);
    }
    if let Some(v) = a.os_version {
        annotations.insert("dev.osbuilder.distro.version".into(), v);
    }
    if let Some(v) = a.image_version {
        annotations.insert(crate::oci::spec::VERSION.into(), v);
    }
    let created = match crate::tree::source_date_epoch()? {
        Some(t) => t,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    };
    let opts = publish::Options {
        output: a.output,
        tag: a.tag,
        artifacts,
        rootfs_format: match a.rootfs_format {
            FormatArg::Ext4 => RootfsFormat::Ext4,
            FormatArg::Erofs => RootfsFormat::Erofs,
            FormatArg::Xfs => RootfsFormat::Xfs,
            FormatArg::Tar => RootfsFormat::Tar,
        },
        cmdline: a.cmdline,
        variant_style: match a.variant_style {
            StyleArg::Platform => VariantStyle::Platform,
            StyleArg::Annotation => VariantStyle::Annotation,
        },
        first: match a.first {
            VariantArg::Baremetal => Variant::Baremetal,
            VariantArg::Virtualization => Variant::Virtualization,
        },
        link: if a.copy {
            LinkMode::Copy
        } else {
            LinkMode::Auto
        },
        created,
        annotations,
        force: a.force,
    };
    let r = publish::build(&opts)?;
    for m in &r.manifests {
        eprintln!(
            "  linux/{}/{}: {} ({} layers){}",
            m.arch.oci(),
            m.variant.name(),
            m.descriptor.digest,
            if m.variant == Variant::Baremetal {
                3
            } else {
                1
            },
            m.sbom
                .as_ref()
                .map(|s| format!(", sbom {s}"))
                .unwrap_or_default()
        );
    }
    let (rl, hl, cp) = r.placements;
    eprintln!(
        "wrote {} (tag {}): {} manifests, {:.1} MiB of artifacts ({rl} reflinked, {hl} hard-linked, {cp} copied)",
        opts.output.display(),
        opts.tag,
        r.manifests.len(),
        r.bytes as f64 / 1048576.0
    );
    println!("{}", r.index.digest);
    Ok(())
}

#[derive(clap::Args, Debug)]
struct RegistryArgs {
    /// Talk plain HTTP (default: HTTPS, except for loopback registries)
    #[arg(long)]
    plain_http: bool,
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Pushes the layout's tagged image (REF's tag names it when the layout \
has several; REF without a tag takes the layout's): blobs first (skipped when the registry has \
them, mounted from --mount-from repositories of the same registry, else uploaded in chunks that \
resume where an interrupted one stopped), then the manifests, then the tag. SBOMs in the layout \
are attached through the referrers API, or — for registries without it — listed in the fallback \
index under the tag sha256-<manifest hex>.\n\n\
Credentials: from $REGISTRY_AUTH_FILE, $XDG_RUNTIME_DIR/containers/auth.json, \
~/.config/containers/auth.json, $DOCKER_CONFIG/config.json or ~/.docker/config.json (what \
`podman login` / `docker login` write). Credential helpers are not run.\n\n\
Example:\n  osbuilder push layout 127.0.0.1:5000/os/debian:trixie"
)]
pub struct PushArgs {
    /// The OCI image layout (from `osbuilder oci`)
    layout: PathBuf,
    /// REGISTRY/REPOSITORY[:TAG]
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Mount blobs from this repository of the same registry when it has them (repeatable)
    #[arg(long, value_name = "REPOSITORY")]
    mount_from: Vec<String>,
    /// Upload chunk size in MiB
    #[arg(long, default_value_t = DEFAULT_CHUNK >> 20, value_name = "MIB")]
    chunk_mb: u64,
    /// Parallel blob uploads
    #[arg(long, default_value_t = 4)]
    jobs: usize,
}

pub fn run_push(a: PushArgs) -> Result<()> {
    if a.chunk_mb == 0 {
        return Err(refused("--chunk-mb must be at least 1"));
    }
    let reference = Reference::parse(&a.reference)?;
    let opts = push::Options {
        layout: a.layout,
        reference: reference.clone(),
        settings: Settings {
            plain_http: a.registry.plain_http,
            chunk: a.chunk_mb << 20,
            actions: "pull,push",
            ..Settings::default()
        },
        mount_from: a.mount_from,
        jobs: a.jobs,
    };
    // One line per blob of 1 MiB or more, as it completes (small ones are noise).
    let on_blob = |d: &crate::oci::spec::Descriptor, how: &crate::oci::registry::BlobOutcome| {
        use crate::oci::registry::BlobOutcome;
        if d.size < 1 << 20 {
            return;
        }
        let what = match how {
            BlobOutcome::Present => "already there",
            BlobOutcome::Mounted => "mounted",
            BlobOutcome::Uploaded { .. } => "uploaded",
        };
        let name = d.annotation(crate::oci::spec::TITLE).unwrap_or("blob");
        eprintln!(
            "  {name} {} ({:.1} MiB): {what}",
            &d.digest.as_str()[..19],
            d.size as f64 / 1048576.0
        );
    };
    let r = push::push(&opts, &on_blob)?;
    eprintln!(
        "pushed {}/{}:{}: {} blobs uploaded ({:.1} MiB{}), {} already there, {} mounted; {} manifests",
        reference.registry,
        reference.repository,
        r.tag,
        r.uploaded,
        r.bytes_uploaded as f64 / 1048576.0,
        match (r.resumed, r.restarted) {
            (0, 0) => String::new(),
            (a, b) => format!(
                "; after interruptions {a} chunk(s) resumed, {b} upload(s) begun again (the registry dropped them)"
            ),
        },
        r.present,
        r.mounted,
        r.manifests
    );
    for (subject, referrer, how) in &r.referrers {
        let how = match how {
            push::Attached::ReferrersApi => "through the referrers API".to_string(),
            push::Attached::FallbackTag(t) => format!("in the fallback tag {t}"),
        };
        eprintln!("  sbom {referrer} attached to {subject} {how}");
    }
    if let Some(d) = r.index {
        println!("{d}");
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Fetches the manifest of REF for --platform (default linux/<host arch>) and \
writes each layer under its title (vmlinuz, initramfs.img, rootfs.img…), with config.json \
(the kernel command line) and manifest.json. Every blob is verified as it streams; the folder \
appears only when all of it matched. An ambiguous platform (linux/amd64 when the image has a \
baremetal and a virtualization manifest) is refused with the choices.\n\n\
Examples:\n  osbuilder pull 127.0.0.1:5000/os/debian:trixie --platform linux/arm64/baremetal -o boot\n  \
osbuilder pull 127.0.0.1:5000/os/debian:trixie --platform linux/amd64/virtualization --sbom -o vm"
)]
pub struct PullArgs {
    /// REGISTRY/REPOSITORY[:TAG|@DIGEST]
    reference: String,
    /// OS/ARCH[/VARIANT], e.g. linux/arm64/baremetal
    #[arg(long)]
    platform: Option<String>,
    /// Output folder
    #[arg(short, long)]
    output: PathBuf,
    /// Also fetch the SPDX SBOM attached to the manifest (sbom.spdx.json)
    #[arg(long)]
    sbom: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    /// Replace a non-empty output folder that osbuilder did not pull into
    #[arg(long)]
    force: bool,
}

pub fn run_pull(a: PullArgs) -> Result<()> {
    let reference = Reference::parse(&a.reference)?;
    let platform = a.platform.as_deref().map(PlatformSpec::parse).transpose()?;
    let opts = pull::Options {
        reference,
        platform,
        output: a.output,
        sbom: a.sbom,
        settings: Settings {
            plain_http: a.registry.plain_http,
            ..Settings::default()
        },
        force: a.force,
    };
    let r = pull::pull(&opts)?;
    for (name, size, _) in &r.files {
        eprintln!("  {name}: {:.1} MiB", *size as f64 / 1048576.0);
    }
    if let Some((d, via)) = &r.sbom {
        eprintln!("  {}: sbom {d}, found through {via}", pull::SBOM_FILE);
    }
    eprintln!(
        "pulled {} ({}) into {}",
        r.manifest,
        r.platform,
        opts.output.display()
    );
    println!("{}", r.manifest);
    Ok(())
}
