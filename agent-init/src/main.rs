//! osbuilder's reference agent: the smallest useful stand-in for kata-agent.
//!
//! It proves that a guest built by osbuilder boots and reaches userspace: it prints one
//! ready line on the console (see `protocol.rs` for the format) and then does what an init
//! must do — reap orphans and shut down cleanly. osbuilder installs it as `/usr/bin/kata-agent`
//! (and `/sbin/init` in agent-as-init mode) when the user brings no agent of their own.
//!
//! Two modes, chosen by our PID:
//! - **PID 1** (initrd or `init=`): mount /proc, /sys, /dev (devtmpfs), /dev/pts, /dev/shm,
//!   /run and /tmp unless already mounted, reopen stdio on /dev/console, print the ready line,
//!   reap children. SIGTERM, SIGINT (Ctrl-Alt-Del), SIGUSR2 and SIGPWR power the guest off
//!   (sync, then reboot(RB_POWER_OFF)).
//! - **a service** (under systemd, `kata-agent.service`): touch nothing, print the ready line
//!   on stdout (the unit sends it to the console), keep running; SIGTERM exits.
//!
//! With `osbuilder.poweroff` (or `=1`) on the kernel command line it powers the guest off right
//! after the ready line — directly as PID 1, through `systemctl poweroff` as a service.
//!
//! `#![no_main]`: std's normal entry point aborts when fds 0-2 are closed and /dev/null does
//! not exist yet, which is exactly the state of an early initrd. Our own `main` skips that.

#![cfg_attr(not(test), no_main)]
// Unit tests build without our `main`, which leaves the runtime code unused there.
#![cfg_attr(test, allow(dead_code, unused_imports))]

mod protocol;
mod sys;

use std::ffi::{c_char, c_int};
use std::io::Write;
use std::process::Command;

use protocol::{POWEROFF_MARKER, POWEROFF_PARAM, READY_MARKER};

/// The kernel API filesystems PID 1 sets up: (source, target, type, flags, options).
const MOUNTS: &[(&str, &str, &str, u64, &str)] = &[
    (
        "proc",
        "/proc",
        "proc",
        sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
        "",
    ),
    (
        "sysfs",
        "/sys",
        "sysfs",
        sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
        "",
    ),
    ("devtmpfs", "/dev", "devtmpfs", sys::MS_NOSUID, "mode=0755"),
    (
        "devpts",
        "/dev/pts",
        "devpts",
        sys::MS_NOSUID | sys::MS_NOEXEC,
        "gid=5,mode=0620,ptmxmode=0666",
    ),
    (
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        sys::MS_NOSUID | sys::MS_NODEV,
        "mode=1777",
    ),
    (
        "tmpfs",
        "/run",
        "tmpfs",
        sys::MS_NOSUID | sys::MS_NODEV,
        "mode=0755",
    ),
    (
        "tmpfs",
        "/tmp",
        "tmpfs",
        sys::MS_NOSUID | sys::MS_NODEV | sys::MS_RELATIME,
        "mode=1777",
    ),
];

/// Conventional /dev symlinks that devtmpfs does not provide.
const DEV_LINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// Signals we handle synchronously (blocked, then collected with sigwaitinfo).
const SIGNALS: &[c_int] = &[
    sys::SIGCHLD,
    sys::SIGTERM,
    sys::SIGINT,
    sys::SIGUSR2,
    sys::SIGPWR,
    sys::SIGHUP,
];

#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn main(_argc: c_int, _argv: *const *const c_char) -> c_int {
    // Block first, so a signal sent while we start up waits for the loop below.
    let signals = sys::block_signals(SIGNALS);
    let as_init = std::process::id() == 1;
    if as_init {
        let warnings = set_up_as_init();
        for w in warnings {
            say_err(&format!("osbuilder-agent: warning: {w}"));
        }
    }

    let (release, machine) = sys::kernel_release_and_machine();
    say(&ready_line(
        &release,
        &machine,
        std::process::id(),
        uptime().as_deref(),
    ));

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if poweroff_requested(&cmdline) {
        shut_down(as_init);
    }
    loop {
        match sys::wait_signal(&signals) {
            sys::SIGCHLD => {
                sys::reap_children();
            }
            sys::SIGHUP => {} // nothing to reload
            _ if as_init => shut_down(true),
            _ => return 0, // systemd stops the service; its ExecStop powers off
        }
    }
}

/// Mount the API filesystems and put stdio on the console. Returns what did not work:
/// the agent keeps going, since a missing /dev/shm should not hide the ready line.
fn set_up_as_init() -> Vec<String> {
    let mut warnings = Vec::new();
    for &(source, target, fstype, flags, options) in MOUNTS {
        // /proc is mounted first, so later entries can be checked against /proc/self/mounts:
        // a kernel with CONFIG_DEVTMPFS_MOUNT has already put devtmpfs on /dev, for example.
        if is_mounted(target) {
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(target) {
            warnings.push(format!("cannot create {target}: {e}"));
            continue;
        }
        if let Err(e) = sys::mount_fs(source, target, fstype, flags as _, options) {
            warnings.push(format!("cannot mount {fstype} on {target}: {e}"));
        }
    }
    for &(dest, link) in DEV_LINKS {
        let _ = std::os::unix::fs::symlink(dest, link); // exists already: fine
    }
    sys::new_session();
    if let Err(e) = sys::reopen_stdio("/dev/console") {
        warnings.push(format!("cannot open /dev/console: {e}"));
    }
    if let Err(e) = sys::disable_ctrl_alt_del() {
        warnings.push(format!("cannot route Ctrl-Alt-Del to the agent: {e}"));
    }
    warnings
}

fn is_mounted(target: &str) -> bool {
    std::fs::read_to_string("/proc/self/mounts")
        .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(target)))
        .unwrap_or(false)
}

/// Seconds since the kernel started, from /proc/uptime ("12.34 5.67").
fn uptime() -> Option<String> {
    let s = std::fs::read_to_string("/proc/uptime").ok()?;
    s.split_whitespace().next().map(str::to_string)
}

fn ready_line(release: &str, machine: &str, pid: u32, uptime: Option<&str>) -> String {
    let mut line = format!(
        "{READY_MARKER} kernel={} arch={} pid={pid}",
        no_spaces(release),
        no_spaces(machine)
    );
    if let Some(u) = uptime {
        line.push_str(&format!(" uptime={}", no_spaces(u)));
    }
    line
}

/// Field values must not contain spaces (the format is space-separated key=value).
fn no_spaces(s: &str) -> String {
    if s.is_empty() {
        return "unknown".into();
    }
    s.replace(char::is_whitespace, "_")
}

/// Whether the kernel command line asks for a power-off after the ready line.
fn poweroff_requested(cmdline: &str) -> bool {
    let mut wanted = false;
    for word in cmdline.split_whitespace() {
        if word == POWEROFF_PARAM {
            wanted = true;
        } else if let Some(v) = word
            .strip_prefix(POWEROFF_PARAM)
            .and_then(|r| r.strip_prefix('='))
        {
            // The last occurrence wins, as for kernel parameters.
            wanted = matches!(v, "1" | "y" | "yes" | "true" | "on");
        }
    }
    wanted
}

/// Sync and power off. As PID 1 we do it ourselves; as a service we ask systemd, which
/// stops every unit (our ExecStop included) in order, and we wait for its SIGTERM. `-i`:
/// do not ask logind about inhibitors (a minimal guest has no D-Bus).
fn shut_down(as_init: bool) {
    say(POWEROFF_MARKER);
    if as_init {
        sys::sync_all();
        let e = sys::power_off();
        // Nothing else can be done: exiting makes the kernel panic, and with panic=-1 a
        // guest started with -no-reboot stops anyway.
        say_err(&format!("osbuilder-agent: power-off failed: {e}"));
        std::process::exit(1);
    }
    sys::sync_all();
    match Command::new("systemctl").args(["-i", "poweroff"]).status() {
        Ok(s) if s.success() => {}
        Ok(s) => say_err(&format!("osbuilder-agent: systemctl poweroff failed: {s}")),
        Err(e) => say_err(&format!(
            "osbuilder-agent: cannot run systemctl poweroff: {e}"
        )),
    }
}

/// Write a line to stdout, ignoring errors: there may be no console at all, and an agent
/// that dies because nobody is listening helps no one.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn say_err(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_has_the_documented_format() {
        let l = ready_line("6.1.0-28-cloud-amd64", "x86_64", 1, Some("1.84"));
        assert_eq!(
            l,
            "osbuilder-agent: ready kernel=6.1.0-28-cloud-amd64 arch=x86_64 pid=1 uptime=1.84"
        );
        let l = ready_line("6.1 odd", "", 7, None);
        assert_eq!(
            l,
            "osbuilder-agent: ready kernel=6.1_odd arch=unknown pid=7"
        );
    }

    #[test]
    fn poweroff_switch() {
        assert!(!poweroff_requested("console=ttyS0 panic=-1"));
        assert!(poweroff_requested("console=ttyS0 osbuilder.poweroff"));
        assert!(poweroff_requested("osbuilder.poweroff=1 quiet"));
        assert!(poweroff_requested("osbuilder.poweroff=yes"));
        assert!(!poweroff_requested("osbuilder.poweroff=0"));
        assert!(!poweroff_requested(
            "osbuilder.poweroff=1 osbuilder.poweroff=0"
        ));
        assert!(!poweroff_requested(
            "xosbuilder.poweroff=1 osbuilder.poweroffx=1"
        ));
    }
}
