//! Embeds `distros/`, `profiles/` and `dracut-profiles/` into the binary so that one static
//! file carries all distro data, host profiles and dracut profiles. Adding a distro or a
//! dracut profile is adding a folder, adding a host profile adding a file: this script picks
//! up every file under all three.
//!
//! Also builds the reference agent (agent-init/) as a static executable for the target and
//! embeds it, so `osbuilder rootfs` can install an agent when the user brings none.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    embed_folder("distros", "EMBEDDED_DISTRO_FILES", "embedded_distros.rs");
    embed_folder("profiles", "EMBEDDED_PROFILE_FILES", "embedded_profiles.rs");
    embed_folder(
        "dracut-profiles",
        "EMBEDDED_DRACUT_PROFILE_FILES",
        "embedded_dracut_profiles.rs",
    );
    build_reference_agent();
}

/// `$OUT_DIR/<out>` defines `static <name>: &[(relative path, bytes)]` for every file under
/// the crate's `folder`.
fn embed_folder(folder: &str, name: &str, out: &str) {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join(folder);
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(&root, &mut files);
    let mut code = format!("pub static {name}: &[(&str, &[u8])] = &[\n");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
        let rel = f
            .strip_prefix(&root)
            .unwrap()
            .to_str()
            .expect("UTF-8 path under the embedded folder");
        writeln!(
            code,
            "    ({rel:?}, include_bytes!({:?})),",
            f.to_str().unwrap()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join(out);
    std::fs::write(out, code).unwrap();
}

/// Compile agent-init with a nested `cargo build` and copy the binary to
/// `$OUT_DIR/reference-agent` (src/agent.rs includes it).
///
/// - Its own target dir under OUT_DIR: the outer cargo holds the lock on ours, so sharing it
///   would deadlock.
/// - `--offline`: the crate has no dependencies; a build must never need the network here.
/// - Static (`+crt-static` on the gnu target, no extra rustup target needed): the agent runs
///   as PID 1 in guests that have no C library at all.
/// - The outer build's flags are removed from the environment (CARGO_ENCODED_RUSTFLAGS from
///   the outer cargo, clippy's wrapper…), so they cannot leak into the agent.
fn build_reference_agent() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let agent_dir = manifest_dir.join("agent-init");
    println!("cargo:rerun-if-changed={}", agent_dir.display());
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let target = std::env::var("TARGET").unwrap();
    let target_dir = out_dir.join("agent-target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());

    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--offline",
        "--quiet",
        "--bin",
        "agent-init",
    ])
    .arg("--manifest-path")
    .arg(agent_dir.join("Cargo.toml"))
    .arg("--target")
    .arg(&target)
    .arg("--target-dir")
    .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd.env(
        "CARGO_ENCODED_RUSTFLAGS",
        [
            "-Ctarget-feature=+crt-static",
            "-Cstrip=symbols",
            "-Cpanic=abort",
        ]
        .join("\x1f"),
    );
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running cargo to build agent-init: {e}"));
    if !out.status.success() {
        panic!(
            "building the reference agent (agent-init/) failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let built = target_dir.join(&target).join("release").join("agent-init");
    let bytes = std::fs::read(&built)
        .unwrap_or_else(|e| panic!("reading the built agent {}: {e}", built.display()));
    if let Some(why) = not_a_static_elf(&bytes) {
        panic!(
            "the reference agent {} is not usable as a guest init: {why}",
            built.display()
        );
    }
    std::fs::write(out_dir.join("reference-agent"), &bytes).unwrap();
}

/// Why `bytes` is not a statically linked ELF executable (None: it is one). A dynamically
/// linked binary has a PT_INTERP program header naming its loader.
fn not_a_static_elf(bytes: &[u8]) -> Option<String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" || bytes[4] != 2 {
        return Some("not a 64-bit ELF file".into());
    }
    let big = bytes[5] == 2;
    let rd = |off: usize, len: usize| -> u64 {
        let mut b = [0u8; 8];
        b[..len].copy_from_slice(&bytes[off..off + len]);
        if big {
            let mut v = 0u64;
            for &x in &bytes[off..off + len] {
                v = v << 8 | x as u64;
            }
            v
        } else {
            u64::from_le_bytes(b)
        }
    };
    let phoff = rd(0x20, 8) as usize;
    let phentsize = rd(0x36, 2) as usize;
    let phnum = rd(0x38, 2) as usize;
    for i in 0..phnum {
        let off = phoff + i * phentsize;
        if off + 4 > bytes.len() {
            return Some("truncated program headers".into());
        }
        if rd(off, 4) == 3 {
            return Some("dynamically linked (has an ELF interpreter)".into());
        }
    }
    None
}
