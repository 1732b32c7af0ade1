//! One builder container run: the distro's installer runs in it, and the rootfs comes back
//! as a tar stream on the container's stdout, unpacked as it arrives by the same safe
//! extractor the native backends use (so ownership and device nodes survive a rootless
//! engine: they travel in the archive, and land on disk as root or in the .mtree
//! otherwise). Nothing of the host is mounted but the verification keys, read-only (plus
//! tmpfs scratch space); no `--privileged`, no /dev.
//!
//! The container never outlives the build: it runs with `--rm`, is removed with `rm -f`
//! when osbuilder is interrupted (a registered interrupt hook) or when the stream fails,
//! and the engine client gets a parent-death signal, so a killed osbuilder stops it too.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow, bail};

use super::engine::Engine;
use crate::pkg::extract::Extractor;

/// What to run.
pub struct RunSpec<'a> {
    pub engine: &'a Engine,
    pub image: &'a str,
    /// The `sh -c` script (see `BuilderDef::script`).
    pub script: &'a str,
    /// Mounted read-only at `definition::KEYS_MOUNT`.
    pub keys: &'a Path,
    /// Folders mounted as tmpfs (scratch space).
    pub tmpfs: &'a [String],
    pub env: Vec<(String, String)>,
    /// Shown in errors ("mmdebstrap").
    pub tool: &'a str,
}

/// How many of the container's last stderr lines an error quotes.
const TAIL: usize = 25;

/// A name no other build uses at the same time.
fn container_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "osbuilder-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// Run the container and unpack its stdout into `ex`. Returns the number of entries.
pub fn run_into(spec: &RunSpec<'_>, ex: &mut Extractor) -> Result<usize> {
    let engine = spec.engine;
    let name = container_name();
    let mut cmd = engine.command();
    cmd.args(engine.run_args(&name));
    cmd.arg("-v")
        .arg(engine.ro_mount(spec.keys, super::definition::KEYS_MOUNT));
    for t in spec.tmpfs {
        cmd.arg("--tmpfs").arg(format!("{t}:rw,exec"));
    }
    for (k, v) in &spec.env {
        cmd.arg("-e").arg(format!("{k}={v}"));
    }
    cmd.arg(spec.image).args(["sh", "-c", spec.script]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    parent_death_signal(&mut cmd);

    let hook = {
        let engine = engine.clone();
        let name = name.clone();
        crate::output::on_interrupt(move || engine.remove_container(&name))
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| anyhow!("starting {}: {e}", engine.binary.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
    let forward = {
        let tail = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("osbuilder: builder: {line}");
                let mut t = tail.lock().unwrap_or_else(|e| e.into_inner());
                if t.len() == TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        })
    };
    let mut stdout = child.stdout.take().expect("piped");
    let unpacked = ex.unpack(&mut stdout, "the builder's tar stream");
    if unpacked.is_ok() {
        // GNU tar pads the archive past its end marker (to a 10 KiB record): read the rest,
        // or the engine fails writing it into a closed pipe.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    } else {
        // Stop the installer now rather than let it write into a closed pipe.
        engine.remove_container(&name);
    }
    let status = child.wait();
    let _ = forward.join();
    engine.remove_container(&name);
    drop(hook);
    let status = status?;
    let quoted = || {
        let t = tail.lock().unwrap_or_else(|e| e.into_inner());
        t.iter().cloned().collect::<Vec<_>>().join("\n  ")
    };
    // A stream the extractor refused stopped the container: that refusal is the cause.
    if let Err(e) = unpacked {
        return Err(e.context(format!(
            "the {} builder container's archive (from {}) was refused; nothing was kept. Its \
             last lines:\n  {}",
            engine.kind.binary(),
            spec.tool,
            quoted()
        )));
    }
    if !status.success() {
        let code = status
            .code()
            .map(|c| format!("exit status {c}"))
            .unwrap_or_else(|| status.to_string());
        bail!(
            "the {} builder container failed ({code}) running {}; nothing was kept. Its last \
             lines:\n  {}",
            engine.kind.binary(),
            spec.tool,
            quoted()
        );
    }
    let entries = unpacked.expect("checked above");
    if entries.is_empty() {
        bail!(
            "the {} builder container succeeded but wrote no archive on stdout (does the last \
             `run` command of the builder definition write a tar stream?)",
            engine.kind.binary()
        );
    }
    Ok(entries.len())
}

/// The engine client gets SIGTERM, not the SIGKILL of [`crate::process::command`], if
/// osbuilder dies (even by SIGKILL): podman and docker pass SIGTERM on to the container,
/// which stops and is removed (`--rm`); a SIGKILLed client would leave it running until
/// its installer next writes to the closed pipe.
fn parent_death_signal(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the calling (child) process.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
}
