//! Kernels for boot tests, fetched once per arch with `osbuilder kernel fetch` (verified,
//! from the Debian mirror in the host's APT sources) into the cargo target's tmp dir.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

static FETCHING: Mutex<()> = Mutex::new(());

/// `vmlinuz` for `arch` (e.g. "x86_64", "aarch64"), or None — the skip recorded — when the
/// mirror cannot be reached (probed independently of osbuilder). Once the mirror answers, a
/// failed `kernel fetch` is a failure.
pub fn kernel(arch: &str) -> Option<PathBuf> {
    let qemu = arch
        .parse::<osbuilder::arch::Arch>()
        .unwrap_or_else(|e| panic!("{arch}: {e}"))
        .qemu();
    if !super::needs::tools(&[(qemu.binary, qemu.debian_package)]) {
        return None;
    }
    let _guard = FETCHING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("kernels")
        .join(arch);
    let vmlinuz = dir.join("vmlinuz");
    if vmlinuz.exists() {
        return Some(vmlinuz);
    }
    let mirror = super::needs::mirror()?;
    let out = Command::new(env!("CARGO_BIN_EXE_osbuilder"))
        .args(["kernel", "fetch", "--arch", arch, "--mirror", &mirror, "-o"])
        .arg(&dir)
        .output()
        .expect("running osbuilder kernel fetch");
    if out.status.success() {
        return Some(vmlinuz);
    }
    panic!(
        "osbuilder kernel fetch --arch {arch} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
