//! The embedded reference agent, checked with independent tools and run on the host in its
//! service mode (not PID 1: it must not mount anything, just report and wait).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use osbuilder::agent::{READY_MARKER, reference_agent, reference_agent_arch};
use osbuilder::arch::Arch;

fn agent_file(dir: &std::path::Path) -> std::path::PathBuf {
    let p = dir.join("kata-agent");
    std::fs::write(&p, reference_agent()).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Start a program that was written a moment ago. While another test thread forks, its
/// child briefly holds every open descriptor, including the one this file was written
/// through, and exec then fails with ETXTBSY ("Text file busy"): wait and try again.
fn spawn_fresh_executable(cmd: &mut Command) -> std::process::Child {
    for _ in 0..100 {
        match cmd.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.expect("starting the agent"),
        }
    }
    panic!("the agent stayed busy (ETXTBSY) for 2 s")
}

#[test]
fn file_says_static_executable_for_the_host_arch() {
    let tmp = tempfile::tempdir().unwrap();
    let p = agent_file(tmp.path());
    let out = Command::new("file")
        .arg(&p)
        .output()
        .expect("file (Debian package file)");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        s.contains("statically linked") || s.contains("static-pie linked"),
        "{s}"
    );
    let arch = match reference_agent_arch().unwrap() {
        Arch::X86_64 => "x86-64",
        Arch::Aarch64 => "ARM aarch64",
        Arch::Ppc64le => "64-bit PowerPC",
        Arch::S390x => "IBM S/390",
    };
    assert!(s.contains(arch), "{s}");
}

#[test]
fn as_a_service_it_reports_ready_and_exits_on_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let p = agent_file(tmp.path());
    let mut child = spawn_fresh_executable(
        Command::new(&p)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let fields = osbuilder::agent::parse_ready_line(&line)
        .unwrap_or_else(|| panic!("not a ready line: {line:?}"));
    assert!(line.starts_with(READY_MARKER));
    let get = |k: &str| fields.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(get("pid"), Some(child.id().to_string().as_str()));
    assert_eq!(get("arch"), Some(std::env::consts::ARCH));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(get("kernel"), Some(release.trim()));
    assert!(get("uptime").unwrap().parse::<f64>().unwrap() > 0.0);
    // Still running (it waits for its service manager), until SIGTERM ends it cleanly.
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(child.try_wait().unwrap().is_none());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
