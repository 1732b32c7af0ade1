use anyhow::Result;

use crate::arch::Arch;
use crate::distro::{DistroSet, InitMode};
use crate::matrix::{Matrix, Request};

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  osbuilder matrix\n  osbuilder matrix --json\n  \
    osbuilder matrix --check --distro clearlinux --arch s390x   # exits 2"
)]
pub struct Args {
    /// Print the matrix as JSON (one object per supported cell)
    #[arg(long)]
    json: bool,
    /// Check one combination instead of printing the matrix: exit 0 if supported, 2 if not
    #[arg(long, requires = "distro")]
    check: bool,
    /// Distro to check (with --check)
    #[arg(long, requires = "check")]
    distro: Option<String>,
    /// Target architecture (x86_64/amd64, aarch64/arm64, ppc64le/ppc64el, s390x); default: the host's
    #[arg(long, requires = "check")]
    arch: Option<Arch>,
    /// Init mode to check; default: the distro's own default
    #[arg(long, requires = "check")]
    init: Option<InitMode>,
}

pub fn run(a: Args) -> Result<()> {
    let distros = DistroSet::load()?;
    let m = Matrix::new(&distros);
    if a.check {
        let arch = crate::arch::Arch::or_host(a.arch)?;
        let distro = a.distro.as_deref().unwrap_or_default();
        let t = m.check(&Request {
            distro,
            arch,
            init: a.init,
        })?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({"supported": true, "distro": t.distro.name, "arch": t.arch,
                    "init": t.init, "version": t.distro.default_version})
            );
        } else {
            println!(
                "supported: {} {} on {} with init mode {}",
                t.distro.name, t.distro.default_version, t.arch, t.init
            );
        }
        return Ok(());
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m.cells())?);
    } else {
        print!("{}", m.table());
    }
    Ok(())
}
