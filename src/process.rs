//! External tools (mkfs.*, debugfs, qemu-img, fakeroot, unshare, QEMU…) run as children that
//! never outlive osbuilder. Killing osbuilder — SIGTERM from `timeout` or a supervisor,
//! Ctrl-C, or kill -9 — must not leave a `mkfs.ext4` writing into a deleted partial file:
//!
//! - every child gets a parent-death signal (SIGKILL), so even kill -9 of osbuilder stops it;
//! - [`output`] and [`status`] register the child while it runs, and the interrupt handler
//!   ([`crate::output::install_signal_cleanup`]) calls [`kill_all`] before it removes partial
//!   outputs, so nothing writes into them any more when they are removed.
//!
//! The parent-death signal is tied to the thread that spawned the child: spawn from a thread
//! that lives until the child is waited for (as `output`/`status` do).

use std::ffi::OsStr;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A `Command` for `program` whose process dies with osbuilder.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    die_with_parent(&mut cmd);
    cmd
}

/// Give `cmd` a parent-death signal (SIGKILL).
pub fn die_with_parent(cmd: &mut Command) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls are made (prctl, getppid),
    // nothing allocates or takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl: then nobody would stop us.
            if libc::getppid() != parent {
                return Err(io::Error::other("osbuilder exited while starting a tool"));
            }
            Ok(())
        });
    }
}

/// Registered while it runs, so the interrupt handler can stop it.
struct Registered(u32);

impl Registered {
    fn new(child: &Child) -> Registered {
        let pid = child.id();
        CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        Registered(pid)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        CHILDREN
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|p| *p != self.0);
    }
}

/// Run `cmd` to completion, capturing stdout and stderr (like `Command::output`).
pub fn output(cmd: &mut Command) -> io::Result<Output> {
    die_with_parent(cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let _reg = Registered::new(&child);
    child.wait_with_output()
}

/// Run `cmd` to completion with inherited stdio (like `Command::status`).
pub fn status(cmd: &mut Command) -> io::Result<ExitStatus> {
    die_with_parent(cmd);
    let mut child = cmd.spawn()?;
    let _reg = Registered::new(&child);
    child.wait()
}

/// Stop every registered child (SIGTERM, then SIGKILL after a moment) and wait until none
/// runs any more. Called from the interrupt handler.
pub fn kill_all() {
    let pids: Vec<u32> = CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if pids.is_empty() {
        return;
    }
    for &pid in &pids {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut sent_kill = false;
    while pids.iter().any(|&p| running(p)) {
        if Instant::now() > deadline && !sent_kill {
            for &pid in &pids {
                // SAFETY: as above.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            sent_kill = true;
        } else if Instant::now() > deadline + Duration::from_secs(3) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie (a zombie writes nothing any more).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_all_stops_registered_children() {
        let t = std::thread::spawn(|| status(Command::new("sleep").arg("30")));
        let start = Instant::now();
        while CHILDREN.lock().unwrap().is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "child never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        kill_all();
        let st = t.join().unwrap().unwrap();
        assert!(!st.success(), "sleep was not stopped");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert!(CHILDREN.lock().unwrap().is_empty());
    }
}
