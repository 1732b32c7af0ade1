//! `osbuilder lock`: resolve the packages of a build file's guests and write the lock file,
//! without building.

use anyhow::Result;

use super::build::JobArgs;
use super::render::Render;
use crate::build::run;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Resolves every guest × variant × arch that has no entry in the lock \
file, or whose entry no longer matches the build file (other packages, release or init mode), \
downloads its packages into the cache (so that a `--locked` build can run offline) and writes \
the lock file. --update re-resolves every selected entry against the repositories as they are \
now, printing each version change.\n\n\
Examples:\n  osbuilder lock -f examples/osbuilder.toml\n  osbuilder lock --update --only guest=initrd"
)]
pub struct Args {
    #[command(flatten)]
    job: JobArgs,
    /// Re-resolve every selected entry, taking what the repositories have now
    #[arg(long)]
    update: bool,
}

pub fn run(a: Args) -> Result<()> {
    if a.job.locked {
        return Err(crate::error::refused(
            "`osbuilder lock --locked` would change nothing: drop --locked",
        ));
    }
    let render = Render::new(a.job.json);
    let result = (|| {
        let plan = a.job.plan()?;
        let settings = a.job.settings();
        let changed = run::lock(&plan, &settings, a.update, &render)?;
        render.clear();
        if render.json() {
            render.json_line(&serde_json::json!({
                "event": "summary", "lock": settings.lock_path.display().to_string(), "changed": changed,
            }));
        } else if changed.is_empty() {
            println!("{}: up to date", settings.lock_path.display());
        } else {
            println!(
                "{}: {} entries written ({})",
                settings.lock_path.display(),
                changed.len(),
                changed.join(", ")
            );
        }
        Ok(())
    })();
    if let Err(e) = &result {
        render.error(e);
    }
    result
}
