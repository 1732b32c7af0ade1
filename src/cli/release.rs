//! `osbuilder release`: build (as `osbuilder build`) and write Kata's release tree, or
//! `--merge` the trees of split runs.

use std::path::PathBuf;

use anyhow::Result;

use super::build::{JobArgs, summary};
use super::render::Render;
use crate::build::run;

#[derive(clap::Args, Debug)]
#[command(after_help = "Writes DIR as Kata's release lays it out, per arch: \
<arch>/opt/kata/share/kata-containers/kata-<distro>-<version>[-<variant>].image|.initrd with the \
kata-containers[-initrd][-<variant>].img links and root_hash_<variant>.txt beside measured images \
(\"base\" for the base variant), <arch>/kata-static-rootfs-image|initrd[-<variant>].tar.zst, each \
artifact's osbuilder.yaml and SPDX SBOM, release.json and SHA256SUMS over everything \
(`cd DIR && sha256sum -c SHA256SUMS`). Every arch builds on this host natively (no emulation).\n\n\
Split across CI jobs: run `osbuilder release --only arch=<arch> -o out-<arch>` per job, then \
`osbuilder release --merge out-* -o DIR`, which checks each tree and writes what one run would \
have written, byte for byte.\n\n\
Examples:\n  osbuilder release -f examples/osbuilder.toml -o release\n  \
osbuilder release --only arch=aarch64 --locked -o out-aarch64\n  \
osbuilder release --merge out-x86_64 out-aarch64 -o release")]
pub struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// The release folder (created atomically; an earlier release there is replaced, any
    /// other non-empty folder refused)
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
    /// Replace the output folder even if osbuilder did not make it (never /, your home, the
    /// current directory or a mount point)
    #[arg(long)]
    force: bool,
    /// Combine these release trees (of `--only` runs of one build file) instead of building
    #[arg(long, value_name = "DIR", num_args = 1.., conflicts_with_all = ["only", "locked"])]
    merge: Vec<PathBuf>,
    /// With --merge: accept a result that lacks some of the build file's artifacts
    #[arg(long, requires = "merge")]
    partial: bool,
}

pub fn run(a: Args) -> Result<()> {
    let render = Render::new(a.job.json);
    let result = (|| {
        crate::output::check_destination(&a.output, crate::release::KIND, a.force)?;
        if !a.merge.is_empty() {
            let w = crate::release::merge::merge(&a.merge, &a.output, a.force, a.partial, &render)?;
            render.clear();
            if render.json() {
                render.json_line(&serde_json::json!({
                    "event": "summary",
                    "release": w.dir.display().to_string(),
                    "files": w.files.len(),
                    "merged": a.merge.len(),
                }));
            } else {
                println!(
                    "release {}: {} trees merged, {} files",
                    w.dir.display(),
                    a.merge.len(),
                    w.files.len()
                );
            }
            return Ok(());
        }
        let plan = a.job.plan()?;
        let outcome = run::run(&plan, &a.job.settings(), &render)?;
        let written = crate::release::write(&plan, &outcome, &a.output, a.force, &render)?;
        summary(&render, &outcome, Some(&written));
        Ok(())
    })();
    if let Err(e) = &result {
        render.error(e);
    }
    result
}
