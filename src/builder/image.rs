//! Builder images: found by tag, or made. Two ways to make one, both giving the same tag
//! (a hash of the `[builder.image]` definition):
//!
//! - **bootstrap** (the default, offline): osbuilder's native backend builds the builder's
//!   root filesystem from the distro's signed repository (mmdebstrap from Debian,
//!   apk-tools-static from Alpine), it is packed as a tar with root-owned files, ids below
//!   65536 and no device nodes, and `podman import` / `docker import` reads it from a pipe;
//! - **pull**: `podman build` of a one-line Containerfile from the definition's `base`
//!   image plus its `setup` lines, for hosts that reach a registry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};

use super::definition::ImageDef;
use super::engine::Engine;
use crate::arch::Arch;

/// How the builder image was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    Reused,
    Bootstrapped,
    Pulled,
}

/// What the bootstrap needs besides the definition: where the builder's own packages
/// come from.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub mirror: Option<String>,
    pub keyrings: Vec<PathBuf>,
    pub keys_dirs: Vec<PathBuf>,
    pub cache_dir: Option<PathBuf>,
}

/// The image and how it came to be.
#[derive(Clone, Debug)]
pub struct Image {
    pub reference: String,
    pub origin: Origin,
}

/// Whether the engine has `reference`.
pub fn exists(engine: &Engine, reference: &str) -> bool {
    crate::process::output(
        engine
            .command()
            .args(["image", "inspect", "--format", "{{.Id}}", reference]),
    )
    .is_ok_and(|o| o.status.success())
}

/// The builder image for `def`: reused when the engine has its tag, else made (`pull`:
/// from the registry; otherwise bootstrapped natively). `rebuild` makes it again.
pub fn ensure(
    engine: &Engine,
    def: &ImageDef,
    sources: &Sources,
    pull: bool,
    rebuild: bool,
    sink: &dyn crate::events::Sink,
) -> Result<Image> {
    let host = Arch::host().context("this host's architecture is not one osbuilder knows")?;
    let reference = def.reference(host);
    if !rebuild && exists(engine, &reference) {
        return Ok(Image {
            reference,
            origin: Origin::Reused,
        });
    }
    let origin = if pull {
        pull_build(engine, def, &reference)?;
        Origin::Pulled
    } else {
        bootstrap(engine, def, &reference, host, sources, sink)?;
        Origin::Bootstrapped
    };
    Ok(Image { reference, origin })
}

/// A folder removed when dropped (and on interruption).
struct TempDir(PathBuf);

impl TempDir {
    /// `$TMPDIR/.osbuilder-<what>.work-PID`: what a killed run leaves is swept by the next.
    fn new(what: &str) -> Result<TempDir> {
        let base = std::env::temp_dir();
        let name = std::ffi::OsString::from(format!("osbuilder-{what}"));
        crate::output::sweep::leftovers(&base, &name);
        let p = base.join(crate::output::temp_name(&name, "work"));
        if p.exists() {
            crate::output::dir::remove_tree(&p)?;
        }
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        crate::output::track(&p);
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = crate::output::dir::remove_tree(&self.0);
        crate::output::untrack(&self.0);
    }
}

fn bootstrap(
    engine: &Engine,
    def: &ImageDef,
    reference: &str,
    host: Arch,
    sources: &Sources,
    sink: &dyn crate::events::Sink,
) -> Result<()> {
    let b = &def.bootstrap;
    eprintln!(
        "osbuilder: bootstrapping builder image {reference} natively ({} {}: {})",
        b.distro,
        b.version,
        b.packages.join(" ")
    );
    let tmp = TempDir::new("builder")?;
    let root = tmp.0.join("rootfs");
    crate::rootfs::build(
        &crate::rootfs::Options {
            distro: b.distro.clone(),
            arch: Some(host),
            os_version: Some(b.version.clone()),
            packages: Some(b.packages.clone()),
            mirror: sources.mirror.clone(),
            keyrings: sources.keyrings.clone(),
            keys_dirs: sources.keys_dirs.clone(),
            cache_dir: sources.cache_dir.clone(),
            output: root.clone(),
            agent: None,
            ..Default::default()
        },
        sink,
    )
    .with_context(|| format!("bootstrapping the builder image {reference}"))?;
    import(engine, &root, reference)
}

/// Pack `root` (with its .mtree) and `import` it as `reference`.
fn import(engine: &Engine, root: &Path, reference: &str) -> Result<()> {
    let (metadata, _) = crate::tree::load_metadata_for(root, None)?;
    let tree = crate::tree::Tree::scan(
        root,
        &crate::tree::ScanOptions {
            // A rootless bootstrap's files are the user's on disk; the metadata has the
            // real owners of every entry.
            all_root: metadata.is_some(),
            metadata,
            clamp_mtime: None,
        },
    )?;
    let mut child = engine
        .command()
        .args([
            "import",
            "--change",
            "CMD [\"/bin/sh\"]",
            "--message",
            "osbuilder builder image, bootstrapped natively",
            "-",
            reference,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {} import", engine.kind.binary()))?;
    let stdin = child.stdin.take().expect("piped");
    let written =
        super::tarball::write_tree(&tree, std::io::BufWriter::with_capacity(1 << 20, stdin));
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} import of the builder image failed ({}): {}",
            engine.kind.binary(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let w = written.context("writing the builder image archive")?;
    eprintln!(
        "osbuilder: imported {reference} ({} entries{})",
        w.entries,
        if w.skipped_special > 0 {
            format!("; {} device nodes left to the engine", w.skipped_special)
        } else {
            String::new()
        }
    );
    Ok(())
}

fn pull_build(engine: &Engine, def: &ImageDef, reference: &str) -> Result<()> {
    eprintln!(
        "osbuilder: building builder image {reference} from {} (pulled)",
        def.base
    );
    let tmp = TempDir::new("containerfile")?;
    let file = tmp.0.join("Containerfile");
    std::fs::File::create(&file)?.write_all(def.containerfile().as_bytes())?;
    let mut c = engine.command();
    c.args(["build", "--network", "host", "-t", reference, "-f"])
        .arg(&file);
    for a in engine.run_args("unused").windows(2) {
        if a[0] == "--ulimit" {
            c.args(["--ulimit", &a[1]]);
        }
    }
    let st = crate::process::status(c.arg(&tmp.0).stdin(Stdio::null()).stdout(std::io::stderr()))
        .with_context(|| format!("running {} build", engine.kind.binary()))?;
    if !st.success() {
        bail!(
            "{} build of the builder image from {} failed ({st}); without a reachable registry, \
             drop --pull: osbuilder then bootstraps the image natively",
            engine.kind.binary(),
            def.base
        );
    }
    Ok(())
}
