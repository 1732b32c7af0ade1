//! Helpers shared by the integration tests: run the binary, make trees, compare trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn osbuilder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osbuilder"))
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawning command")
}

pub fn ok(cmd: &mut Command) -> Output {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "command {:?} failed: {}\nstdout: {}\nstderr: {}",
        cmd,
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn is_root() -> bool {
    unsafe { libc_geteuid() == 0 }
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

pub fn sh(script: &str) -> Output {
    ok(Command::new("sh").arg("-ec").arg(script))
}

/// Whether `tool` is on PATH (a test that cannot run without it uses `needs::tools`).
pub fn have(tool: &str) -> bool {
    needs::have(tool)
}

/// A temp dir that an unprivileged user (65534) can enter.
pub fn open_tempdir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// What a tree looks like, path by path, for comparisons.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub mtime: Option<i64>,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
}

pub fn snapshot(root: &Path) -> (BTreeMap<PathBuf, Node>, BTreeMap<PathBuf, u64>) {
    let mut out = BTreeMap::new();
    let mut inos = BTreeMap::new();
    fn walk(
        root: &Path,
        dir: &Path,
        out: &mut BTreeMap<PathBuf, Node>,
        inos: &mut BTreeMap<PathBuf, u64>,
    ) {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_path_buf();
            let ft = md.file_type();
            use std::os::unix::fs::FileTypeExt;
            let kind = if ft.is_dir() {
                "dir"
            } else if ft.is_symlink() {
                "symlink"
            } else if ft.is_file() {
                "file"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            out.insert(
                rel.clone(),
                Node {
                    kind,
                    mode: md.mode(),
                    uid: md.uid(),
                    gid: md.gid(),
                    rdev: md.rdev(),
                    // Symlink mtimes are not restored by every extractor.
                    mtime: if ft.is_symlink() {
                        None
                    } else {
                        Some(md.mtime())
                    },
                    content: ft.is_file().then(|| std::fs::read(&p).unwrap()),
                    link: ft.is_symlink().then(|| std::fs::read_link(&p).unwrap()),
                },
            );
            if ft.is_file() && md.nlink() > 1 {
                inos.insert(rel, md.ino());
            }
            if ft.is_dir() {
                walk(root, &p, out, inos);
            }
        }
    }
    walk(root, root, &mut out, &mut inos);
    (out, inos)
}

/// Extract a (compressed) newc archive with GNU cpio, as the caller (root keeps owners).
pub fn gnu_cpio_extract(archive: &Path, decompress: &str, dest: &Path) {
    std::fs::create_dir_all(dest).unwrap();
    sh(&format!(
        "cd '{}' && {decompress} < '{}' | cpio -idm --quiet --no-absolute-filenames",
        dest.display(),
        archive.display()
    ));
}

/// `cpio -itv` listing of a compressed archive.
pub fn cpio_list(archive: &Path, decompress: &str) -> String {
    String::from_utf8(
        sh(&format!(
            "{decompress} < '{}' | cpio -itv --quiet --numeric-uid-gid",
            archive.display()
        ))
        .stdout,
    )
    .unwrap()
}

pub fn set_mtime(p: &Path, secs: i64) {
    sh(&format!("touch -h -d @{secs} '{}'", p.display()));
}

/// Signed Alpine repositories built by the tests (apk v2 packages, APKINDEX, HTTP server).
pub mod apkrepo;
pub mod kernel;
pub mod needs;
pub mod rpmrepo;

/// `osbuilder` run as the unprivileged user nobody (uid/gid 65534, no groups), to check
/// rootless builds from a root test run.
pub fn osbuilder_as_nobody() -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        "--reuid",
        "65534",
        "--regid",
        "65534",
        "--clear-groups",
        "--",
    ])
    .arg(env!("CARGO_BIN_EXE_osbuilder"));
    c
}

/// Whether `elf` is a 64-bit little-endian ELF file without a program interpreter
/// (PT_INTERP), i.e. one that runs without a libc beside it. Reads the program headers
/// rather than looking for a loader's name: static busybox carries "ld-linux" as a string
/// for its ldd applet.
pub fn is_static_elf(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, n) = (u16_at(0x36), u16_at(0x38));
    (0..n).all(|i| {
        elf.get(phoff + i * size..phoff + i * size + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != PT_INTERP)
    })
}

/// An agent for guests of an arch the reference agent is not built for: a script run by
/// Debian's static busybox (package busybox-static, installed from the target's archive, so
/// no code of the target runs on the host). It prints the reference agent's ready line and
/// powers the guest off, as PID 1 or as systemd's kata-agent.service.
pub fn busybox_agent(dir: &Path) -> PathBuf {
    let agent = dir.join("agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n\
         echo \"osbuilder-agent: ready kernel=$(/bin/busybox uname -r) arch=$(/bin/busybox uname -m) pid=$$\"\n\
         echo 'osbuilder-agent: powering off'\n/bin/busybox poweroff -f\n",
    )
    .unwrap();
    agent
}

/// The host's Debian busybox-static binary (/bin/busybox), for synthetic x86_64 guests.
pub fn static_busybox() -> Vec<u8> {
    let b = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: install Debian's busybox-static package");
    assert!(
        is_static_elf(&b),
        "/bin/busybox is dynamically linked: install Debian's busybox-static package"
    );
    b
}
