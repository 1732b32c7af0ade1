//! `osbuilder boot`: the smoke test that an artifact boots. Start the kernel with an initrd
//! and/or a disk image under QEMU (TCG), watch the serial console for the agent's ready line,
//! report how long it took, and never leave the guest running.
//!
//! Data flows one way: [`plan`] checks the inputs and builds the QEMU command line
//! (`qemu.rs`, `disk.rs`; how an image is attached and what the kernel needs for it:
//! `attach.rs`), [`run`] starts the guest and feeds its console (`console.rs`) into a small
//! state machine until the ready line, a panic, QEMU's exit or the deadline.

pub mod attach;
pub mod console;
pub mod disk;
pub mod qemu;
pub mod uefi;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::arch::Arch;
use console::{Console, PANIC_TEXT, RESTART_TEXT};
pub use qemu::DiskBus;
use qemu::{Disk, Machine};

/// Default for `--timeout`: a tiny initrd is ready in ~3 s under TCG, full systemd in ~25 s;
/// a busy machine can double that.
pub const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// Default for `--memory` (MiB): the initrd and its unpacked copy must fit.
pub const DEFAULT_MEMORY_MB: u32 = 1024;

/// After a panic banner, how long to keep reading the trace before giving up on QEMU exiting.
const PANIC_GRACE: Duration = Duration::from_secs(3);
/// After the expected text shows up mid-line, how long to wait for the rest of the line.
const LINE_GRACE: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct Options {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub image: Option<PathBuf>,
    /// None: the kernel's own architecture (read from its header), else the host's.
    pub arch: Option<Arch>,
    pub timeout: Duration,
    pub append: Option<String>,
    pub memory_mb: u32,
    /// Text that means "ready" (the reference agent's marker unless the user says otherwise).
    pub expect: String,
    /// Ask the agent to power off after the ready line and require a clean power-off.
    pub poweroff: bool,
    pub disk_bus: DiskBus,
    /// Kata's root_hash.txt for a measured image; None: the one beside the image, if any.
    pub root_hash: Option<PathBuf>,
    /// The kernel's modules folder; None: found beside the kernel or in /lib/modules.
    pub modules: Option<PathBuf>,
    /// Where the boot initramfs is cached (default: osbuilder's download cache).
    pub cache_dir: Option<PathBuf>,
}

impl Options {
    pub fn new(kernel: impl Into<PathBuf>) -> Options {
        Options {
            kernel: kernel.into(),
            initrd: None,
            image: None,
            arch: None,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
            append: None,
            memory_mb: DEFAULT_MEMORY_MB,
            expect: crate::agent::READY_MARKER.to_string(),
            poweroff: false,
            disk_bus: DiskBus::Nvme,
            root_hash: None,
            modules: None,
            cache_dir: None,
        }
    }
}

/// A checked boot: the QEMU binary and everything on its command line.
#[derive(Clone, Debug)]
pub struct Plan {
    pub qemu: PathBuf,
    pub machine: Machine,
    /// Whether the kernel's header is a format we know (else a failure hints at it).
    pub kernel_recognised: bool,
    /// A UEFI boot (uefi.rs): firmware and disk instead of a kernel and its command line.
    pub uefi: Option<uefi::UefiMachine>,
    /// What the plan decided that the user should hear (a boot initramfs built, an
    /// assumption made).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn args(&self) -> Vec<std::ffi::OsString> {
        match &self.uefi {
            Some(u) => u.qemu_args(),
            None => qemu::qemu_args(&self.machine),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Report {
    /// From starting QEMU to the ready line.
    pub ready_after: Duration,
    /// The console line that held the expected text.
    pub ready_line: String,
    /// With `poweroff`: from starting QEMU to its exit after a clean power-off.
    pub powered_off_after: Option<Duration>,
}

/// Why a boot failed, with the end of the console for the user to see what happened.
#[derive(Debug)]
pub struct BootFailed {
    pub reason: String,
    /// What the user might check, when we have a guess.
    pub hint: Option<String>,
    pub console_tail: Vec<String>,
    pub qemu_stderr: String,
}

impl std::fmt::Display for BootFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)?;
        if self.console_tail.is_empty() {
            f.write_str("\nthe guest printed nothing on its console")?;
        } else {
            write!(f, "\nlast {} console lines:", self.console_tail.len())?;
            for l in &self.console_tail {
                write!(f, "\n  | {l}")?;
            }
        }
        let err = self.qemu_stderr.trim();
        if !err.is_empty() {
            write!(f, "\nqemu said:")?;
            for l in err.lines() {
                write!(f, "\n  ! {l}")?;
            }
        }
        if let Some(h) = &self.hint {
            write!(f, "\nhint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BootFailed {}

/// Check the inputs and host tools before starting anything.
pub fn plan(o: &Options) -> Result<Plan> {
    check_file(&o.kernel, "kernel")?;
    if o.initrd.is_none() && o.image.is_none() {
        bail!("nothing to boot: give an initrd (--initrd), a disk image (--image), or both");
    }
    if let Some(i) = &o.initrd {
        check_file(i, "initrd")?;
    }
    if let Some(i) = &o.image {
        check_file(i, "disk image")?;
    }
    if o.expect.is_empty() {
        bail!("--expect must not be empty");
    }
    let from_kernel = qemu::kernel_arch(&o.kernel)?;
    let arch = match (o.arch, from_kernel) {
        (Some(a), Some(k)) if a != k => bail!(
            "{} is a kernel for {k}, not {a}: pass the {a} kernel, or --arch {k}",
            o.kernel.display()
        ),
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => crate::arch::Arch::or_host(None)?,
    };
    let target = arch.qemu();
    let qemu = qemu::find_binary(&target)?;

    let mut notes = Vec::new();
    let mut initrd = o.initrd.clone();
    let (disk, root) = match &o.image {
        Some(path) => {
            let mut info = disk::inspect(path)?;
            // `--append root=…` names the root device: a measured image then boots with its
            // root partition unverified (the user's root= comes last and wins).
            let user_root = o
                .append
                .as_deref()
                .is_some_and(|a| a.split_whitespace().any(|w| w.starts_with("root=")));
            if user_root && o.root_hash.is_none() && info.hash_partition.take().is_some() {
                notes.push(format!(
                    "{} is measured, but --append names the root device: booting it without \
                     dm-verity",
                    path.display()
                ));
            }
            let a = attach::plan(o.disk_bus, arch, path, &info, o.root_hash.as_deref())?;
            if initrd.is_none() {
                initrd = initramfs_for(o, arch, &a.modules, &mut notes)?;
            }
            let disk = Disk {
                path: path.clone(),
                format: info.format,
                bus: o.disk_bus,
                size: info.size,
            };
            (Some(disk), Some(a.root))
        }
        None => (None, None),
    };
    let cmdline = qemu::kernel_cmdline(arch, root.as_deref(), o.poweroff, o.append.as_deref());
    Ok(Plan {
        qemu,
        kernel_recognised: from_kernel.is_some(),
        uefi: None,
        notes,
        machine: Machine {
            arch,
            memory_mb: o.memory_mb,
            kernel: o.kernel.clone(),
            initrd,
            disk,
            cmdline,
        },
    })
}

/// The initramfs an attachment needs when the kernel has `modules` as loadable modules:
/// built with the dracut method from the kernel's own modules (and cached), or None when
/// the kernel has them built in (or has no modules folder to tell: Kata's kernels).
fn initramfs_for(
    o: &Options,
    arch: crate::arch::Arch,
    modules: &[String],
    notes: &mut Vec<String>,
) -> Result<Option<PathBuf>> {
    if modules.is_empty() {
        return Ok(None);
    }
    let Some(release) = attach::kernel_release(&o.kernel) else {
        notes.push(format!(
            "cannot tell the release of {}: assuming {} built in (else give --initrd)",
            o.kernel.display(),
            modules.join(" ")
        ));
        return Ok(None);
    };
    let Some(dir) = attach::modules_dir(&o.kernel, &release, o.modules.as_deref()) else {
        notes.push(format!(
            "no modules folder for kernel {release}: assuming {} built in (else give --modules \
             DIR or --initrd)",
            modules.join(" ")
        ));
        return Ok(None);
    };
    let missing = attach::not_built_in(&dir, modules)?;
    if missing.is_empty() {
        return Ok(None);
    }
    let host = crate::arch::Arch::host();
    if host != Some(arch) {
        // The boot initramfs is made by the host's dracut from the host's programs.
        return Err(crate::error::refused(format!(
            "the kernel has {} as modules, and the boot initramfs osbuilder builds holds this \
             host's programs ({}), not {arch} ones: give an {arch} initramfs with --initrd, or \
             --append 'root=…' to boot a measured image unverified",
            missing.join(" "),
            host.map_or("unknown arch".to_string(), |h| h.to_string())
        )));
    }
    let (path, built) = attach::boot_initramfs(&release, &dir, o.cache_dir.as_deref())?;
    notes.push(format!(
        "kernel {release} has {} as modules: boot initramfs {} ({})",
        missing.join(" "),
        path.display(),
        if built {
            "built with the dracut method"
        } else {
            "cached"
        }
    ));
    Ok(Some(path))
}

fn check_file(p: &Path, what: &str) -> Result<()> {
    let md =
        std::fs::metadata(p).with_context(|| format!("cannot read the {what} {}", p.display()))?;
    if !md.is_file() {
        bail!("the {what} {} is not a regular file", p.display());
    }
    if md.len() == 0 {
        bail!("the {what} {} is empty", p.display());
    }
    Ok(())
}

/// Boot and wait. `on_line` sees every console line as it arrives (for `--verbose`).
pub fn run(plan: &Plan, o: &Options, on_line: &mut dyn FnMut(&str)) -> Result<Report> {
    let start = Instant::now();
    let mut guest = Guest::spawn(plan)?;
    let mut console = Console::default();
    let mut deadline = start + o.timeout;
    let mut ready: Option<(Duration, Option<String>)> = None;
    let mut panic_line: Option<String> = None;
    let mut restarted = false;

    let hint = (!plan.kernel_recognised).then(|| {
        format!(
            "{} does not look like a kernel image (no bzImage, arm64 Image, PE or ELF header)",
            o.kernel.display()
        )
    });
    let fail = |guest: &mut Guest, console: &Console, reason: String| -> anyhow::Error {
        guest.stop();
        BootFailed {
            reason,
            hint: hint.clone(),
            console_tail: console.tail(),
            qemu_stderr: guest.stderr(),
        }
        .into()
    };

    loop {
        // While the ready text sits in an unfinished line, wait a moment for the rest of it.
        let wake = match &ready {
            Some((at, None)) => (start + *at + LINE_GRACE).min(deadline),
            _ => deadline,
        };
        let event = guest
            .events
            .recv_timeout(wake.saturating_duration_since(Instant::now()));
        match event {
            Ok(data) => {
                for line in console.feed(&data) {
                    on_line(&line);
                    if panic_line.is_none() && line.contains(PANIC_TEXT) {
                        panic_line = Some(line.clone());
                        deadline = deadline.min(Instant::now() + PANIC_GRACE);
                    }
                    restarted |= line.contains(RESTART_TEXT);
                    match &mut ready {
                        None if line.contains(&o.expect) => {
                            ready = Some((start.elapsed(), Some(line.clone())))
                        }
                        Some((_, l @ None)) => *l = Some(line.clone()),
                        _ => {}
                    }
                }
                if ready.is_none() && console.partial().contains(&o.expect) {
                    ready = Some((start.elapsed(), None));
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                // Either the rest of a ready line never came (take it as it is)…
                if let Some((_, line @ None)) = &mut ready {
                    *line = Some(console.partial());
                }
                // …or time is up.
                if Instant::now() >= deadline {
                    if let Some(p) = panic_line {
                        return Err(fail(
                            &mut guest,
                            &console,
                            panic_reason(&p, ready.is_some()),
                        ));
                    }
                    let reason = match &ready {
                        // Only with poweroff: the guest was ready but did not stop.
                        Some((at, line)) => format!(
                            "the guest was ready after {:.2} s ({}) but did not power off \
                             within the {} s timeout",
                            at.as_secs_f64(),
                            line.as_deref().unwrap_or_default(),
                            o.timeout.as_secs()
                        ),
                        None => format!(
                            "timed out after {} s waiting for '{}' on the console",
                            o.timeout.as_secs(),
                            o.expect
                        ),
                    };
                    return Err(fail(&mut guest, &console, reason));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                // QEMU closed its stdout: it exited (power-off, reboot after a panic, error).
                let elapsed = start.elapsed();
                let partial = console.partial();
                if !partial.is_empty() {
                    on_line(&partial);
                }
                let status = guest.wait();
                if let Some(p) = &panic_line {
                    return Err(fail(&mut guest, &console, panic_reason(p, ready.is_some())));
                }
                return match ready {
                    Some((at, line)) if o.poweroff => {
                        if restarted {
                            return Err(fail(
                                &mut guest,
                                &console,
                                "the guest restarted instead of powering off".into(),
                            ));
                        }
                        Ok(Report {
                            ready_after: at,
                            ready_line: line.unwrap_or(partial),
                            powered_off_after: Some(elapsed),
                        })
                    }
                    Some((at, line)) => Ok(Report {
                        ready_after: at,
                        ready_line: line.unwrap_or(partial),
                        powered_off_after: None,
                    }),
                    None => Err(fail(
                        &mut guest,
                        &console,
                        format!(
                            "{} exited ({status}) after {:.2} s, before '{}' appeared on the \
                             console",
                            plan.qemu.display(),
                            elapsed.as_secs_f64(),
                            o.expect
                        ),
                    )),
                };
            }
        }
        if let Some((at, Some(line))) = &ready {
            if !o.poweroff {
                guest.stop();
                return Ok(Report {
                    ready_after: *at,
                    ready_line: line.clone(),
                    powered_off_after: None,
                });
            }
        }
    }
}

fn panic_reason(line: &str, after_ready: bool) -> String {
    let text = line.find(PANIC_TEXT).map_or(line, |i| &line[i..]);
    if after_ready {
        format!("the guest kernel panicked after the ready line: {text}")
    } else {
        format!("the guest kernel panicked: {text}")
    }
}

/// The QEMU process. In its own process group (a Ctrl-C on the terminal reaches only
/// osbuilder) and killed with SIGKILL when osbuilder dies for any reason (PR_SET_PDEATHSIG);
/// dropping it kills the whole group. Either way the guest never outlives the command.
struct Guest {
    child: Child,
    reaped: bool,
    events: Receiver<Vec<u8>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    stderr_thread: Option<std::thread::JoinHandle<()>>,
}

/// QEMU's stderr is kept up to this size for error reports.
const STDERR_LIMIT: usize = 64 << 10;

impl Guest {
    fn spawn(plan: &Plan) -> Result<Guest> {
        use std::os::unix::process::CommandExt;
        let mut cmd = crate::process::command(&plan.qemu);
        cmd.args(plan.args())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", plan.qemu.display()))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr_pipe = child.stderr.take().expect("piped");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let stderr_thread = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                let room = STDERR_LIMIT.saturating_sub(s.len());
                s.extend_from_slice(&buf[..n.min(room)]);
            }
        });
        Ok(Guest {
            child,
            reaped: false,
            events,
            stderr,
            stderr_thread: Some(stderr_thread),
        })
    }

    /// Wait for QEMU to exit by itself (it closed stdout, so it is on its way out).
    fn wait(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(s)) => {
                    self.reaped = true;
                    self.join_stderr();
                    return s.to_string();
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        self.stop();
        "did not exit; killed".into()
    }

    /// Kill the process group and reap QEMU. Idempotent.
    fn stop(&mut self) {
        if !self.reaped {
            // The group id is QEMU's pid; it cannot be reused before we reap QEMU.
            // SAFETY: plain syscall wrapper.
            unsafe { libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = self.child.wait();
            self.reaped = true;
        }
        self.join_stderr();
    }

    fn join_stderr(&mut self) {
        if let Some(t) = self.stderr_thread.take() {
            let _ = t.join();
        }
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        self.stop();
    }
}
