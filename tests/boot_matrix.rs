//! The boot matrix (`make boot-matrix`): every cell that can be reached from this machine,
//! built and booted under QEMU (TCG) with Debian's kernel (`osbuilder kernel fetch`), one at
//! a time, and a markdown table at the end: cell, artifact size, time to ready, result.
//!
//! Cells: debian × {x86_64, aarch64, ppc64le, s390x} × {agent-init, systemd} × {initrd,
//! image} from the Debian mirror of the host's APT sources, then alpine and ubuntu
//! (agent-init, x86_64) from synthetic signed repositories served here. A cell whose
//! packages, kernel or QEMU this machine cannot get is listed as "not reachable here" with
//! the reason (the mirror's pool probed file by file with HEAD, `needs::pool_unserved`),
//! never as passed. The test fails when a reachable cell fails.
//!
//! Ignored by default (many minutes under TCG on a 2-core machine): run with
//! `make boot-matrix`.

mod common;
mod deb_support;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{apkrepo, needs};
use osbuilder::arch::Arch;

/// Seconds `osbuilder boot` waits for the ready line: aarch64, ppc64le and s390x are
/// emulated instruction by instruction (TCG) and systemd starts many units there.
fn boot_timeout(arch: Arch) -> u32 {
    if Some(arch) == Arch::host() {
        300
    } else {
        1200
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Init {
    AgentInit,
    Systemd,
}

impl Init {
    fn name(self) -> &'static str {
        match self {
            Init::AgentInit => "agent-init",
            Init::Systemd => "systemd",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Artifact {
    Initrd,
    Image,
}

impl Artifact {
    fn name(self) -> &'static str {
        match self {
            Artifact::Initrd => "initrd",
            Artifact::Image => "image",
        }
    }
}

enum Outcome {
    Pass { bytes: u64, ready: f64 },
    Fail { bytes: Option<u64>, why: String },
    Unreachable(String),
}

struct Row {
    cell: String,
    outcome: Outcome,
}

/// The rows so far; each is also printed when it is known, so a long run shows progress.
#[derive(Default)]
struct Matrix {
    rows: Vec<Row>,
}

impl Matrix {
    fn push(&mut self, cell: String, outcome: Outcome) {
        let row = Row { cell, outcome };
        eprintln!("boot-matrix: {}", row_summary(&row));
        self.rows.push(row);
    }

    /// The markdown table; reasons for "not reachable here" as numbered notes below it (a
    /// reason shared by several cells is written once).
    fn table(&self) -> String {
        let mut notes: Vec<&str> = Vec::new();
        let mut t = String::from(
            "| cell | artifact size (MiB) | time to ready (s) | result |\n|---|---|---|---|\n",
        );
        for r in &self.rows {
            let (size, ready, result) = match &r.outcome {
                Outcome::Pass { bytes, ready } => {
                    (mib(*bytes), format!("{ready:.1}"), "pass".into())
                }
                Outcome::Fail { bytes, why } => (
                    bytes.map(mib).unwrap_or_else(|| "–".into()),
                    "–".into(),
                    format!("**FAIL**: {}", why.lines().next().unwrap_or_default()),
                ),
                Outcome::Unreachable(why) => {
                    let n = match notes.iter().position(|n| n == why) {
                        Some(i) => i + 1,
                        None => {
                            notes.push(why);
                            notes.len()
                        }
                    };
                    ("–".into(), "–".into(), format!("not reachable here ({n})"))
                }
            };
            writeln!(t, "| {} | {size} | {ready} | {result} |", r.cell).unwrap();
        }
        if !notes.is_empty() {
            t.push('\n');
        }
        for (i, n) in notes.iter().enumerate() {
            writeln!(t, "({}) {n}", i + 1).unwrap();
        }
        t
    }
}

fn row_summary(r: &Row) -> String {
    match &r.outcome {
        Outcome::Pass { bytes, ready } => {
            format!(
                "{}: pass, {} MiB, ready after {ready:.2} s",
                r.cell,
                mib(*bytes)
            )
        }
        Outcome::Fail { why, .. } => format!("{}: FAIL: {why}", r.cell),
        Outcome::Unreachable(why) => format!("{}: not reachable here: {why}", r.cell),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1048576.0)
}

/// Run `cmd`; its stdout, or an error with the end of its stderr.
fn run(cmd: &mut std::process::Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("spawning {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    eprintln!("{cmd:?} failed ({}):\n{}", out.status, tail.join("\n"));
    let last = tail
        .iter()
        .rev()
        .find(|l| l.contains("error"))
        .or(tail.last())
        .copied()
        .unwrap_or_default();
    Err(format!("{} failed: {last}", subcommand(cmd)))
}

/// `osbuilder <subcommand>` of a command, for messages.
fn subcommand(cmd: &std::process::Command) -> String {
    let sub = cmd
        .get_args()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("osbuilder {sub}")
}

fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("boot-matrix-cache")
}

/// Pack `rootfs` as `artifact` into `dir`; the file written.
fn pack(rootfs: &Path, artifact: Artifact, arch: Arch, dir: &Path) -> Result<PathBuf, String> {
    let mut c = common::osbuilder();
    let out = match artifact {
        Artifact::Initrd => {
            let f = dir.join("kata-containers-initrd.img");
            c.arg("initrd").arg(rootfs).arg("-o").arg(&f);
            f
        }
        Artifact::Image => {
            let f = dir.join("kata-containers.img");
            c.arg("image")
                .arg(rootfs)
                .args(["--arch", arch.name()])
                .arg("-o")
                .arg(&f);
            f
        }
    };
    run(c.env("SOURCE_DATE_EPOCH", "1700000000"))?;
    Ok(out)
}

/// Boot `file` and check the ready line: the guest's arch, and the agent as PID 1 exactly
/// in agent-init mode. The time to ready as `osbuilder boot` reports it.
fn boot(
    kernel: &Path,
    file: &Path,
    artifact: Artifact,
    arch: Arch,
    init: Init,
) -> Result<f64, String> {
    let mut c = common::osbuilder();
    c.args(["boot", "--poweroff", "--arch", arch.name(), "--kernel"])
        .arg(kernel)
        .args(["--timeout", &boot_timeout(arch).to_string()]);
    match artifact {
        Artifact::Initrd => c.arg("--initrd").arg(file),
        Artifact::Image => c.args(["--disk", "nvme", "--image"]).arg(file),
    };
    let stdout = run(c.arg("--cache-dir").arg(cache_dir()))?;
    let line = stdout
        .lines()
        .find(|l| l.starts_with("ready after"))
        .ok_or_else(|| format!("no ready report in {stdout:?}"))?;
    let secs: f64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unreadable ready report {line:?}"))?;
    let fields = osbuilder::agent::parse_ready_line(line).unwrap_or_default();
    let field = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    if field("arch") != Some(arch.name()) {
        return Err(format!("ready line from the wrong arch: {line}"));
    }
    if (field("pid") == Some("1")) != (init == Init::AgentInit) {
        return Err(format!(
            "the agent's PID does not match {}: {line}",
            init.name()
        ));
    }
    Ok(secs)
}

/// Build a rootfs with `build`, then pack and boot it as each artifact, one row each. The
/// rootfs and artifacts are deleted as soon as they are used (the disk is shared).
fn build_and_boot(
    m: &mut Matrix,
    label: &str,
    arch: Arch,
    init: Init,
    kernel: &Path,
    build: &dyn Fn(&Path) -> Result<(), String>,
) {
    let d = common::open_tempdir();
    let rootfs = d.path().join("rootfs");
    let built = catch(|| build(&rootfs));
    for artifact in [Artifact::Initrd, Artifact::Image] {
        let cell = format!("{} {}", cell(label, arch, init), artifact.name());
        let outcome = match &built {
            Err(why) => Outcome::Fail {
                bytes: None,
                why: why.clone(),
            },
            Ok(()) => {
                let dir = d.path().join(artifact.name());
                std::fs::create_dir_all(&dir).unwrap();
                let r = catch(|| {
                    let f = pack(&rootfs, artifact, arch, &dir)?;
                    let bytes = std::fs::metadata(&f).map_err(|e| e.to_string())?.len();
                    Ok((bytes, boot(kernel, &f, artifact, arch, init)))
                });
                let _ = std::fs::remove_dir_all(&dir);
                match r {
                    Ok((bytes, Ok(ready))) => Outcome::Pass { bytes, ready },
                    Ok((bytes, Err(why))) => Outcome::Fail {
                        bytes: Some(bytes),
                        why,
                    },
                    Err(why) => Outcome::Fail { bytes: None, why },
                }
            }
        };
        m.push(cell, outcome);
    }
}

/// `f()`, with a panic turned into an error (a helper's assertion fails one cell, not the
/// whole matrix).
fn catch<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => Err(p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into())),
    }
}

/// The name of a cell, without its artifact: "debian aarch64 systemd".
fn cell(label: &str, arch: Arch, init: Init) -> String {
    format!("{label} {} {}", arch.name(), init.name())
}

/// Whether the run includes the cells of `label arch init`: `$BOOT_MATRIX_CELLS`, when set,
/// is a comma-separated list of words that must all appear in a cell's name ("debian
/// aarch64 systemd"), e.g. `alpine,ubuntu` or `debian x86_64`. Unset: every cell.
fn wanted(label: &str, arch: Arch, init: Init) -> bool {
    let name = cell(label, arch, init);
    match std::env::var("BOOT_MATRIX_CELLS") {
        Ok(f) if !f.trim().is_empty() => f
            .split(',')
            .any(|w| w.split_whitespace().all(|w| name.contains(w))),
        _ => true,
    }
}

/// Both artifacts of a cell that cannot be reached, with the reason.
fn unreachable(m: &mut Matrix, label: &str, arch: Arch, init: Init, why: &str) {
    for artifact in [Artifact::Initrd, Artifact::Image] {
        let cell = format!("{} {}", cell(label, arch, init), artifact.name());
        m.push(cell, Outcome::Unreachable(why.to_string()));
    }
}

/// Whether qemu-system-<arch> is here; else why not.
fn qemu_missing(arch: Arch) -> Option<String> {
    let q = arch.qemu();
    (!needs::have(q.binary)).then(|| {
        format!(
            "no `{}` on this machine (Debian package {})",
            q.binary, q.debian_package
        )
    })
}

/// `osbuilder rootfs --distro debian` flags of a cell. The reference agent is built for the
/// host only; other arches get the busybox script agent and Debian's busybox-static.
fn debian_flags(arch: Arch, init: Init, agent: &Path) -> Vec<String> {
    let mut f: Vec<String> = vec!["--arch".into(), arch.name().into()];
    f.push(format!("--{}", init.name()));
    if Some(arch) != Arch::host() {
        f.extend(["--extra-pkgs".into(), "busybox-static".into()]);
        f.extend(["--agent-bin".into(), agent.display().to_string()]);
    }
    f
}

fn debian_rootfs(mirror: &str, flags: &[String]) -> std::process::Command {
    let mut c = common::osbuilder();
    c.args(["rootfs", "--distro", "debian", "--mirror", mirror])
        .args(flags)
        .arg("--cache-dir")
        .arg(cache_dir())
        .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

/// Why a Debian cell cannot be built and booted here (every reason found), or None: QEMU,
/// then the pool files of the cell's plan and of the kernel's.
fn debian_unreachable(mirror: &str, arch: Arch, flags: &[String]) -> Option<String> {
    let mut why: Vec<String> = qemu_missing(arch).into_iter().collect();
    let sets = osbuilder::distro::DistroSet::embedded().unwrap();
    let debian = sets.get("debian").unwrap();
    let kernel = &debian.kernel[&arch];
    // Written as "MIRROR": the reason goes into README.md, which names no registry host.
    let relative = |s: String| s.replace(mirror.trim_end_matches('/'), "MIRROR");
    // The pool files of a `rootfs --dry-run` plan (its lines that `keep`), probed.
    let mut probe = |what: String, flags: &[String], keep: &dyn Fn(&str) -> bool| {
        let plan = run(debian_rootfs(mirror, flags)
            .args(["--dry-run", "-o"])
            .arg(std::env::temp_dir().join("boot-matrix-dry-run")));
        let unserved = plan.map(|p| {
            let pairs = needs::plan_pairs(p.lines().filter(|l| keep(l)));
            needs::pool_unserved(mirror, &debian.default_version, arch.debian(), &pairs)
        });
        match unserved {
            Ok(None) => {}
            Ok(Some(w)) => why.push(format!("{what}: {}", relative(w))),
            Err(e) => why.push(format!("{what}: {e}")),
        }
    };
    probe("packages".into(), flags, &|_| true);
    let kflags = [
        "--arch",
        arch.name(),
        "--agent-init",
        "--no-agent",
        "--packages",
        kernel,
    ];
    probe(
        format!("kernel ({kernel})"),
        &kflags.map(String::from),
        &|l| l.starts_with("linux-image"),
    );
    (!why.is_empty()).then(|| why.join("; "))
}

fn debian_cells(m: &mut Matrix, agent: &Path) {
    if !Arch::ALL
        .iter()
        .any(|a| wanted("debian", *a, Init::AgentInit) || wanted("debian", *a, Init::Systemd))
    {
        return;
    }
    let mirror = needs::mirror();
    for arch in Arch::ALL {
        for init in [Init::AgentInit, Init::Systemd] {
            if !wanted("debian", arch, init) {
                continue;
            }
            let Some(mirror) = &mirror else {
                unreachable(
                    m,
                    "debian",
                    arch,
                    init,
                    "no Debian mirror answers (see the skip above)",
                );
                continue;
            };
            let flags = debian_flags(arch, init, agent);
            if let Some(why) = debian_unreachable(mirror, arch, &flags) {
                unreachable(m, "debian", arch, init, &why);
                continue;
            }
            let Some(kernel) = common::kernel::kernel(arch.name()) else {
                unreachable(m, "debian", arch, init, "no kernel (see the skip above)");
                continue;
            };
            build_and_boot(m, "debian", arch, init, &kernel, &|out| {
                run(debian_rootfs(mirror, &flags).arg("-o").arg(out)).map(drop)
            });
        }
    }
}

const ALPINE: &str = "alpine (synthetic repository)";
const UBUNTU: &str = "ubuntu (synthetic repository)";

/// The hermetic cells need the host's busybox in an x86_64 guest and Debian's x86_64 kernel.
fn hermetic_kernel() -> Result<PathBuf, String> {
    if Arch::host() != Some(Arch::X86_64) {
        return Err(
            "the synthetic repositories carry the host's busybox: x86_64 hosts only".into(),
        );
    }
    if !Path::new("/bin/busybox").exists() {
        return Err(
            "no /bin/busybox (Debian package busybox-static) for the synthetic packages".into(),
        );
    }
    if let Some(q) = qemu_missing(Arch::X86_64) {
        return Err(q);
    }
    common::kernel::kernel("x86_64").ok_or_else(|| "no kernel (see the skip above)".into())
}

/// Alpine from tests/alpine_rootfs.rs's signed sample repository (apk v2, busybox inside).
fn alpine_cells(m: &mut Matrix, kernel: &Path) {
    if !wanted(ALPINE, Arch::X86_64, Init::AgentInit) {
        return;
    }
    let repo = apkrepo::sample(true);
    build_and_boot(m, ALPINE, Arch::X86_64, Init::AgentInit, kernel, &|out| {
        run(&mut repo.rootfs(out)).map(drop)
    });
}

/// The least an Ubuntu agent-init guest is: base-files (os-release, the merged-/usr links,
/// the mount points: without /dev an image's root gets no devtmpfs, so no /dev/console),
/// base-passwd's master files and a static busybox; the reference agent is PID 1 and static.
fn ubuntu_packages() -> Vec<deb_support::Pkg> {
    use deb_support::{E, pkg_zst};
    let os_release = b"PRETTY_NAME=\"Ubuntu 26.04 (synthetic)\"\nNAME=\"Ubuntu\"\nVERSION_ID=\"26.04\"\nID=ubuntu\nID_LIKE=debian\n";
    let busybox = common::static_busybox();
    vec![
        pkg_zst("base-files", "14ubuntu1", "amd64", "Essential: yes\nPriority: required\n", &[
            E::Dir("./"),
            E::Dir("./dev/"),
            E::Dir("./proc/"),
            E::Dir("./sys/"),
            E::Dir("./run/"),
            E::Dir("./root/"),
            E::Dir("./tmp/"),
            E::Dir("./var/"),
            E::Dir("./etc/"),
            E::Symlink("./etc/os-release", "../usr/lib/os-release"),
            E::File("./etc/hostname", b"ubuntu\n", 0o644, 0, 0),
            E::Dir("./usr/"),
            E::Dir("./usr/bin/"),
            E::Dir("./usr/sbin/"),
            E::Dir("./usr/lib/"),
            E::File("./usr/lib/os-release", os_release, 0o644, 0, 0),
            E::Symlink("./bin", "usr/bin"),
            E::Symlink("./sbin", "usr/sbin"),
            E::Symlink("./lib", "usr/lib"),
        ]),
        pkg_zst("base-passwd", "3.6.7", "amd64", "Essential: yes\nPriority: required\n", &[
            E::Dir("./usr/share/base-passwd/"),
            E::File("./usr/share/base-passwd/passwd.master", b"root:*:0:0:root:/root:/bin/sh\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0o644, 0, 0),
            E::File("./usr/share/base-passwd/group.master", b"root:*:0:\nnogroup:*:65534:\n", 0o644, 0, 0),
        ]),
        pkg_zst("busybox-static", "1:1.37.0-6ubuntu1", "amd64", "", &[
            E::File("./usr/bin/busybox", &busybox, 0o755, 0, 0),
        ]),
    ]
}

/// Ubuntu from a signed synthetic repository in the primary archive's layout (amd64).
fn ubuntu_cells(m: &mut Matrix, kernel: &Path) {
    if !wanted(UBUNTU, Arch::X86_64, Init::AgentInit) {
        return;
    }
    let repo = deb_support::signed_repo("ubuntu", "resolute", "amd64", &ubuntu_packages());
    build_and_boot(m, UBUNTU, Arch::X86_64, Init::AgentInit, kernel, &|out| {
        run(common::osbuilder()
            .args([
                "rootfs",
                "--distro",
                "ubuntu",
                "--agent-init",
                "--arch",
                "x86_64",
            ])
            .args(["--mirror", &repo.url])
            .arg("--keyring")
            .arg(&repo.key.public)
            .args(["--packages", "base-files,base-passwd,busybox-static"])
            .arg("--cache-dir")
            .arg(repo.dir.join("cache"))
            .arg("-o")
            .arg(out))
        .map(drop)
    });
}

#[test]
#[ignore = "many minutes under TCG: run by `make boot-matrix`"]
fn boot_matrix() {
    let started = std::time::Instant::now();
    let scratch = common::open_tempdir();
    let agent = common::busybox_agent(scratch.path());
    let mut m = Matrix::default();
    debian_cells(&mut m, &agent);
    match hermetic_kernel() {
        Ok(k) => {
            alpine_cells(&mut m, &k);
            ubuntu_cells(&mut m, &k);
        }
        Err(why) => {
            for label in [
                "alpine (synthetic repository)",
                "ubuntu (synthetic repository)",
            ] {
                unreachable(&mut m, label, Arch::X86_64, Init::AgentInit, &why);
            }
        }
    }
    let table = m.table();
    let took = Duration::from_secs(started.elapsed().as_secs());
    let head = format!(
        "Booted under QEMU TCG (one guest at a time), Debian's kernel per arch; {} cores; \
         the run took {} min.\n\n",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        (took.as_secs() + 30) / 60
    );
    let file = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("boot-matrix.md");
    std::fs::write(&file, format!("{head}{table}")).unwrap();
    println!("\n{head}{table}\n(written to {})", file.display());
    let failed: Vec<&str> = m
        .rows
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Fail { .. }))
        .map(|r| r.cell.as_str())
        .collect();
    assert!(failed.is_empty(), "reachable cells failed: {failed:?}");
}
