//! Kernels for boot tests, fetched once per arch with `osbuilder kernel fetch` (verified,
//! from the Debian mirror in the host's APT sources) into the cargo target's tmp dir.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static FETCHING: Mutex<()> = Mutex::new(());

/// `vmlinuz` for `arch` (e.g. "x86_64", "aarch64"), or None — with the reason printed —
/// when the mirror cannot be reached.
pub fn kernel(arch: &str) -> Option<PathBuf> {
    let _guard = FETCHING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("kernels")
        .join(arch);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.exists() {
        return Some(vmlinuz);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_osbuilder"))
        .args(["kernel", "fetch", "--arch", arch, "-o"])
        .arg(&dir)
        .output()
        .expect("running osbuilder kernel fetch");
    if out.status.success() {
        return Some(vmlinuz);
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if is_network_failure(&err) {
        eprintln!("SKIP: the Debian mirror cannot be reached, so no kernel to boot: {err}");
        return None;
    }
    panic!("osbuilder kernel fetch --arch {arch} failed:\n{err}");
}

/// Whether osbuilder failed because the mirror is unreachable (not because of a bug).
pub fn is_network_failure(stderr: &str) -> bool {
    [
        "Connection refused",
        "Network is unreachable",
        "failed to lookup",
        "dns error",
        "timed out",
        "No Debian mirror",
        "no mirror",
    ]
    .iter()
    .any(|s| stderr.to_lowercase().contains(&s.to_lowercase()))
}
