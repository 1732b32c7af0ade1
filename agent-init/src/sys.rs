//! The few C library calls the agent needs, declared by hand: the crate must build offline
//! with std only (no `libc` crate). Constants are the Linux values, which are the same on
//! every arch osbuilder targets (x86_64, aarch64, ppc64le, s390x).

use std::ffi::{CStr, CString, c_char, c_int, c_long, c_ulong, c_void};
use std::io;

pub const SIGHUP: c_int = 1;
pub const SIGINT: c_int = 2;
pub const SIGUSR2: c_int = 12;
pub const SIGTERM: c_int = 15;
pub const SIGCHLD: c_int = 17;
pub const SIGPWR: c_int = 30;

pub const MS_NOSUID: c_ulong = 2;
pub const MS_NODEV: c_ulong = 4;
pub const MS_NOEXEC: c_ulong = 8;
pub const MS_RELATIME: c_ulong = 1 << 21;

const RB_POWER_OFF: c_int = 0x4321_fedc_u32 as c_int;
const RB_DISABLE_CAD: c_int = 0;
const SIG_BLOCK: c_int = 0;
const WNOHANG: c_int = 1;
const O_RDWR: c_int = 2;
const O_NOCTTY: c_int = 0o400;

/// glibc's sigset_t: 1024 bits.
#[repr(C)]
pub struct SigSet([c_ulong; 1024 / (8 * std::mem::size_of::<c_ulong>())]);

/// glibc's siginfo_t is 128 bytes; only si_signo (the first int) is read.
#[repr(C)]
struct SigInfo {
    si_signo: c_int,
    _rest: [u8; 124],
}

#[repr(C)]
struct UtsName {
    sysname: [c_char; 65],
    nodename: [c_char; 65],
    release: [c_char; 65],
    version: [c_char; 65],
    machine: [c_char; 65],
    domainname: [c_char; 65],
}

unsafe extern "C" {
    fn mount(
        source: *const c_char,
        target: *const c_char,
        fstype: *const c_char,
        flags: c_ulong,
        data: *const c_void,
    ) -> c_int;
    fn reboot(cmd: c_int) -> c_int;
    fn sync();
    fn waitpid(pid: c_int, status: *mut c_int, options: c_int) -> c_int;
    fn uname(buf: *mut UtsName) -> c_int;
    fn open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn dup2(old: c_int, new: c_int) -> c_int;
    fn close(fd: c_int) -> c_int;
    fn sigemptyset(set: *mut SigSet) -> c_int;
    fn sigaddset(set: *mut SigSet, sig: c_int) -> c_int;
    fn sigprocmask(how: c_int, set: *const SigSet, old: *mut SigSet) -> c_int;
    fn sigwaitinfo(set: *const SigSet, info: *mut SigInfo) -> c_int;
    fn setsid() -> c_long;
}

fn check(rc: c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in constant strings")
}

pub fn mount_fs(
    source: &str,
    target: &str,
    fstype: &str,
    flags: c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source), cstr(target), cstr(fstype), cstr(data));
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    check(unsafe { mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) })
}

/// Flush every filesystem's dirty data to its device.
pub fn sync_all() {
    // SAFETY: no arguments.
    unsafe { sync() }
}

/// Power the machine off. Only returns on failure.
pub fn power_off() -> io::Error {
    // SAFETY: plain syscall wrapper.
    unsafe { reboot(RB_POWER_OFF) };
    io::Error::last_os_error()
}

/// Make Ctrl-Alt-Del send SIGINT to PID 1 instead of rebooting at once.
pub fn disable_ctrl_alt_del() -> io::Result<()> {
    // SAFETY: plain syscall wrapper.
    check(unsafe { reboot(RB_DISABLE_CAD) })
}

/// Collect every exited child without blocking; returns how many were reaped.
pub fn reap_children() -> usize {
    let mut n = 0;
    loop {
        let mut status = 0;
        // SAFETY: status points to a valid int.
        let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
        if pid <= 0 {
            return n; // 0: children left but none exited; -1: ECHILD (none at all)
        }
        n += 1;
    }
}

/// (release, machine) from uname(2).
pub fn kernel_release_and_machine() -> (String, String) {
    // SAFETY: UtsName is plain bytes; all-zero is a valid value.
    let mut u: UtsName = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    if unsafe { uname(&mut u) } < 0 {
        return ("unknown".into(), "unknown".into());
    }
    let field = |f: &[c_char; 65]| {
        // SAFETY: the kernel NUL-terminates every field, and u is zero-initialised.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (field(&u.release), field(&u.machine))
}

/// Point stdin, stdout and stderr at `path` (the console), without making it our
/// controlling terminal. The new descriptors survive exec (no O_CLOEXEC).
pub fn reopen_stdio(path: &str) -> io::Result<()> {
    let p = cstr(path);
    // SAFETY: p is a valid C string; open's mode argument is unused without O_CREAT.
    let fd = unsafe { open(p.as_ptr(), O_RDWR | O_NOCTTY) };
    check(fd)?;
    for target in 0..3 {
        if fd != target {
            // SAFETY: both are file descriptors; dup2 replaces `target` atomically.
            check(unsafe { dup2(fd, target) })?;
        }
    }
    if fd > 2 {
        // SAFETY: fd is ours and no longer needed.
        unsafe { close(fd) };
    }
    Ok(())
}

/// Start a new session (PID 1 is not a group leader of any terminal session yet).
pub fn new_session() {
    // SAFETY: plain syscall wrapper; failure (already a leader) is harmless.
    unsafe { setsid() };
}

/// Block `signals` so they queue up until [`wait_signal`] collects them: no handler runs
/// asynchronously, and nothing sent before the wait is lost.
pub fn block_signals(signals: &[c_int]) -> SigSet {
    // SAFETY: SigSet is plain bytes; sigemptyset initialises it.
    let mut set: SigSet = unsafe { std::mem::zeroed() };
    // SAFETY: set is valid and writable; the signal numbers are valid.
    unsafe {
        sigemptyset(&mut set);
        for &s in signals {
            sigaddset(&mut set, s);
        }
        sigprocmask(SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

/// Wait until one of the signals in `set` (blocked by [`block_signals`]) arrives.
pub fn wait_signal(set: &SigSet) -> c_int {
    loop {
        // SAFETY: SigInfo is plain bytes.
        let mut info: SigInfo = unsafe { std::mem::zeroed() };
        // SAFETY: set and info are valid.
        let sig = unsafe { sigwaitinfo(set, &mut info) };
        if sig > 0 {
            return sig;
        }
        // EINTR (a stop/continue or an unblocked signal): wait again.
    }
}
