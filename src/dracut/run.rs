//! dracut itself, run so that nothing of the host's dracut configuration reaches the
//! initrd: `--conf /dev/null` (no /etc/dracut.conf), `--confdir` our merged profiles (no
//! /etc/dracut.conf.d), and each file of dracut's own `/usr/lib/dracut/dracut.conf.d`
//! masked by an empty file of the same name in that folder (dracut sources both folders,
//! a name in `--confdir` shadowing the same name in its own). The environment is cleared
//! (dracut reads `dracutbasedir` and friends from it), the search path fixed, and every
//! path given relative to the scratch folder dracut runs in, so the command line dracut
//! records in the initrd (`build-parameter.txt`) is the same for every build.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Where dracut keeps its modules and its own configuration folder.
pub const DRACUT_BASEDIR: &str = "/usr/lib/dracut";
/// The search path dracut gets (it finds the binaries to install through it).
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// The host tools a dracut build needs, as (tool, Debian package).
pub fn tools(depmod: bool) -> Vec<(&'static str, &'static str)> {
    let mut t = vec![("dracut", "dracut-core"), ("cpio", "cpio")];
    if depmod {
        t.push(("depmod", "kmod"));
    }
    t
}

/// Write the merged profile configuration into `dir`, masking dracut's own defaults.
pub fn write_confdir(confs: &[(String, Vec<u8>)], dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let own = Path::new(DRACUT_BASEDIR).join("dracut.conf.d");
    for e in std::fs::read_dir(&own).into_iter().flatten().flatten() {
        let name = e.file_name();
        if name.to_string_lossy().ends_with(".conf") {
            std::fs::write(
                dir.join(&name),
                "# masks dracut's own file of this name: osbuilder uses only its profiles\n",
            )?;
        }
    }
    for (name, bytes) in confs {
        std::fs::write(dir.join(name), bytes)?;
    }
    Ok(())
}

/// One dracut run, in the scratch folder `work` (every path below is relative to it).
pub struct Invocation<'a> {
    pub dracut: PathBuf,
    pub work: &'a Path,
    pub confdir: &'a str,
    pub tmpdir: &'a str,
    pub output: &'a str,
    /// (kver, module folder): the kernel whose modules go in; None for `--no-kernel`.
    pub kernel: Option<(&'a str, &'a str)>,
    pub source_date_epoch: Option<i64>,
}

/// Run dracut; on success, the warnings it printed (missing optional binaries and the like).
pub fn dracut(inv: &Invocation) -> Result<Vec<String>> {
    let mut cmd = Command::new(&inv.dracut);
    cmd.current_dir(inv.work)
        .env_clear()
        .env("PATH", PATH)
        .env("LC_ALL", "C")
        .env("TMPDIR", inv.work.join(inv.tmpdir));
    if let Some(t) = inv.source_date_epoch {
        // dracut 059 clamps times to its own files; newer dracut honours this.
        cmd.env("SOURCE_DATE_EPOCH", t.to_string());
    }
    cmd.args([
        "--force",
        "--no-compress",
        "--reproducible",
        "--no-hostonly",
    ])
    .args(["--no-hostonly-cmdline", "--conf", "/dev/null", "--confdir"])
    .arg(inv.confdir)
    .arg("--tmpdir")
    .arg(inv.tmpdir);
    match inv.kernel {
        Some((kver, dir)) => {
            cmd.arg("--kver").arg(kver).arg("--kmoddir").arg(dir);
        }
        None => {
            cmd.arg("--no-kernel");
        }
    }
    cmd.arg(inv.output);
    let out = output(&mut cmd, "dracut")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        let tail: Vec<&str> = text.lines().rev().take(25).collect();
        bail!(
            "dracut failed ({}); its last lines:\n{}",
            out.status,
            tail.into_iter()
                .rev()
                .map(|l| format!("  | {l}"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(text
        .lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("warning") || l.contains("could not") || l.contains("failed")
        })
        .map(|l| l.trim().to_string())
        .collect())
}

/// Run `cmd` to completion with its output captured; it dies with osbuilder (see
/// [`crate::process`]), so an interrupted build leaves no dracut behind.
pub(crate) fn output(cmd: &mut Command, name: &str) -> Result<Output> {
    crate::process::output(cmd).with_context(|| format!("running {name}"))
}
