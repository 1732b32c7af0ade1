//! Parity with Debian's own tools: the same package set built natively by osbuilder and by
//! mmdebstrap (Debian's package `mmdebstrap`, which runs dpkg and the maintainer scripts
//! in a chroot), compared path by path — type, mode, owner, size, content digest, link
//! target. A difference is allowed only when it is in the documented list of files that
//! differ by nature ([`BY_NATURE`], also in docs/deb.md) or when osbuilder itself reports
//! the package effect behind it as not reproduced (packages.json); the residual
//! differences are printed with their reason.
//!
//! - amd64: Debian trixie's systemd set, and the agent-init set plus what dpkg needs to
//!   run the scripts (Essential), against `mmdebstrap --variant=custom`.
//! - arm64: mmdebstrap cannot run arm64 scripts here without qemu, so it extracts the
//!   packages (`--variant=extract`), osbuilder's declarative step configures that tree,
//!   and the result must equal osbuilder's own arm64 build; the arm64 /etc/ld.so.cache is
//!   checked against the target's own ldconfig run under qemu-user.
//!
//! mmdebstrap's result is cached in the cargo target tmp dir, keyed by the plan (package
//! names and versions), the mirror and mmdebstrap's version, so a rerun costs only the
//! osbuilder builds.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::needs;
use sha2::Digest;

const SUITE: &str = "trixie";
/// Both sides get the same build timestamp (shadow's last-change day comes from it).
const EPOCH: &str = "1760000000";

/// Paths that differ by nature between osbuilder and mmdebstrap, with the reason. A
/// path is covered when it is the entry or below it.
const BY_NATURE: &[(&str, &str)] = &[
    (
        "/dev",
        "mmdebstrap populates /dev for its chroot (device nodes, /proc/self/fd links); osbuilder leaves it to devtmpfs at boot",
    ),
    (
        "/etc/apt/sources.list",
        "mmdebstrap writes the mirror it used",
    ),
    (
        "/etc/hostname",
        "mmdebstrap copies the build host's; osbuilder writes localhost",
    ),
    (
        "/etc/resolv.conf",
        "mmdebstrap copies the build host's; osbuilder leaves it to provisioning (the agent bind-mounts it)",
    ),
    (
        "/etc/machine-id",
        "the machine's identity: empty in both (made at first boot); mmdebstrap rewrites it 0644, systemd creates it 0444",
    ),
    (
        "/var/lib/dpkg/status-old",
        "dpkg's copy of its database at its previous checkpoint: depends on when dpkg happened to save during the run",
    ),
];

static HEAVY: Mutex<()> = Mutex::new(());

fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("osbuilder-test-deb-cache")
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    digest: String,
}

/// Every path of a tree (not `/` itself) with what the comparison looks at.
fn manifest(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    for e in walkdir::WalkDir::new(root).sort_by_file_name().min_depth(1) {
        let e = e.unwrap();
        let m = e.path().symlink_metadata().unwrap();
        let rel = format!("/{}", e.path().strip_prefix(root).unwrap().display());
        let ft = m.file_type();
        let (kind, size, digest) = if ft.is_symlink() {
            let t = std::fs::read_link(e.path()).unwrap();
            ("link", 0, t.display().to_string())
        } else if ft.is_dir() {
            ("dir", 0, String::new())
        } else if ft.is_file() {
            let data = std::fs::read(e.path()).unwrap();
            ("file", m.len(), hex::encode(sha2::Sha256::digest(&data)))
        } else if ft.is_char_device() || ft.is_block_device() {
            ("device", 0, format!("{}", m.rdev()))
        } else {
            ("other", 0, String::new())
        };
        out.insert(
            rel,
            Entry {
                kind,
                mode: if kind == "link" { 0 } else { m.mode() & 0o7777 },
                uid: m.uid(),
                gid: m.gid(),
                size,
                digest,
            },
        );
    }
    out
}

fn manifest_text(m: &BTreeMap<String, Entry>) -> String {
    m.iter()
        .map(|(p, e)| {
            format!(
                "{p}\t{}\t{:o}\t{}\t{}\t{}\t{}\n",
                e.kind, e.mode, e.uid, e.gid, e.size, e.digest
            )
        })
        .collect()
}

fn parse_manifest(text: &str) -> BTreeMap<String, Entry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let kind = match *f.get(1)? {
                "link" => "link",
                "dir" => "dir",
                "file" => "file",
                "device" => "device",
                _ => "other",
            };
            Some((
                f[0].to_string(),
                Entry {
                    kind,
                    mode: u32::from_str_radix(f[2], 8).ok()?,
                    uid: f[3].parse().ok()?,
                    gid: f[4].parse().ok()?,
                    size: f[5].parse().ok()?,
                    digest: f.get(6).unwrap_or(&"").to_string(),
                },
            ))
        })
        .collect()
}

/// `osbuilder rootfs … --dry-run`: the plan lines (name version arch size).
fn plan(mirror: &str, arch: &str, args: &[&str]) -> Vec<String> {
    let out = common::ok(
        common::osbuilder()
            .args([
                "rootfs",
                "--distro",
                "debian",
                "--os-version",
                SUITE,
                "--arch",
                arch,
            ])
            .args(args)
            .args(["--no-agent", "--dry-run", "--mirror", mirror])
            .arg("--cache-dir")
            .arg(cache_dir())
            .arg("-o")
            .arg(std::env::temp_dir().join("osbuilder-parity-dry-run-unused")),
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn names(plan: &[String]) -> String {
    plan.iter()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(",")
}

/// The systemd set, or the agent-init set plus the Essential/required set dpkg needs
/// to run maintainer scripts (mmdebstrap cannot configure without dpkg and a shell).
fn reference_plan(mirror: &str, arch: &str, set: &str) -> Vec<String> {
    match set {
        "systemd" => plan(mirror, arch, &["--systemd"]),
        _ => {
            let agent = plan(mirror, arch, &["--agent-init"]);
            plan(mirror, arch, &["--systemd", "--packages", &names(&agent)])
        }
    }
}

/// osbuilder's native build of exactly these packages.
fn build(mirror: &str, arch: &str, packages: &str, out: &Path) {
    common::ok(
        common::osbuilder()
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args([
                "rootfs",
                "--distro",
                "debian",
                "--os-version",
                SUITE,
                "--arch",
                arch,
            ])
            // mmdebstrap runs dpkg without path filters: the guest keeps its docs here too
            // (tests/slim.rs checks the filters against dpkg's own).
            .args([
                "--keep-docs",
                "--agent-init",
                "--no-agent",
                "--packages",
                packages,
                "--mirror",
                mirror,
            ])
            .arg("--cache-dir")
            .arg(cache_dir())
            .arg("-o")
            .arg(out),
    );
}

fn mmdebstrap_version() -> String {
    let o = Command::new("mmdebstrap")
        .arg("--version")
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// mmdebstrap's tree of `plan`, as a manifest (cached by plan, mirror, variant, version).
fn mmdebstrap_manifest(mirror: &str, arch: &str, plan: &[String]) -> BTreeMap<String, Entry> {
    let key = {
        let mut h = sha2::Sha256::new();
        for part in [mirror, arch, EPOCH, &mmdebstrap_version(), &plan.join("\n")] {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        hex::encode(h.finalize())
    };
    let cached = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("mmdebstrap-parity")
        .join(format!("{arch}-{}.manifest", &key[..16]));
    if let Ok(t) = std::fs::read_to_string(&cached) {
        eprintln!("mmdebstrap result cached: {}", cached.display());
        return parse_manifest(&t);
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let root = dir.path().join("mm");
    let t0 = std::time::Instant::now();
    common::ok(
        Command::new("mmdebstrap")
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args(["--mode=root", "--variant=custom", "--quiet"])
            .arg(format!("--arch={arch}"))
            .arg(format!("--include={}", names(plan)))
            .arg(SUITE)
            .arg(&root)
            .arg(mirror),
    );
    eprintln!("mmdebstrap {arch}: {:.1} s", t0.elapsed().as_secs_f64());
    let m = manifest(&root);
    std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
    std::fs::write(&cached, manifest_text(&m)).unwrap();
    m
}

/// The paths the record's not-reproduced notes name, per package.
fn reported(rootfs: &Path) -> Vec<(String, String)> {
    let rec = PathBuf::from(format!("{}.packages.json", rootfs.display()));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rec).unwrap()).unwrap();
    let mut out = Vec::new();
    for p in v["packages"].as_array().unwrap() {
        for n in p["not_reproduced"].as_array().into_iter().flatten() {
            let n = n.as_str().unwrap_or("");
            for w in n.split_whitespace() {
                if w.starts_with('/') {
                    let path = w.trim_end_matches([',', ';', ')', '.']).to_string();
                    out.push((
                        path,
                        format!("{} (not reproduced: {n})", p["name"].as_str().unwrap_or("")),
                    ));
                }
            }
        }
    }
    out
}

fn reason(path: &str, reported: &[(String, String)]) -> Option<String> {
    let under = |p: &str, e: &str| p == e || p.starts_with(&format!("{e}/"));
    for (e, why) in BY_NATURE {
        if under(path, e) {
            return Some((*why).to_string());
        }
    }
    for (e, why) in reported {
        if under(path, e) || under(e, path) {
            return Some(why.clone());
        }
    }
    None
}

/// Compare osbuilder's tree with the reference; panic on any unexplained difference and
/// print the explained ones.
fn assert_parity(
    what: &str,
    ours: &BTreeMap<String, Entry>,
    theirs: &BTreeMap<String, Entry>,
    reported: &[(String, String)],
) {
    let mut unexplained = Vec::new();
    let mut residual: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut paths: Vec<&String> = ours.keys().chain(theirs.keys()).collect();
    paths.sort();
    paths.dedup();
    for p in paths {
        let (a, b) = (ours.get(p), theirs.get(p));
        if a == b {
            continue;
        }
        let how = match (a, b) {
            (Some(_), None) => "only osbuilder".to_string(),
            (None, Some(_)) => "only the reference".to_string(),
            (Some(x), Some(y)) => format!("osbuilder {x:?}, reference {y:?}"),
            _ => unreachable!(),
        };
        match reason(p, reported) {
            Some(r) => residual.entry(r).or_default().push(p.clone()),
            None => unexplained.push(format!("{p}: {how}")),
        }
    }
    eprintln!(
        "{what}: {} paths compared; residual differences:",
        ours.len().max(theirs.len())
    );
    for (r, ps) in &residual {
        let shown: Vec<&str> = ps.iter().take(4).map(String::as_str).collect();
        let more = if ps.len() > 4 {
            format!(" (+{} more)", ps.len() - 4)
        } else {
            String::new()
        };
        eprintln!("  {}{more}: {r}", shown.join(", "));
    }
    assert!(
        unexplained.is_empty(),
        "{what}: {} unexplained differences:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
}

fn can_run() -> Option<String> {
    if !needs::tools(&[("mmdebstrap", "mmdebstrap"), ("dpkg", "dpkg")]) || !needs::root() {
        return None;
    }
    needs::mirror()
}

fn amd64_parity(set: &str) {
    let Some(mirror) = can_run() else { return };
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let plan = reference_plan(&mirror, "amd64", set);
    let theirs = mmdebstrap_manifest(&mirror, "amd64", &plan);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let out = dir.path().join("rootfs");
    let t0 = std::time::Instant::now();
    build(&mirror, "amd64", &names(&plan), &out);
    eprintln!("osbuilder amd64 {set}: {:.1} s", t0.elapsed().as_secs_f64());
    assert_parity(
        &format!("amd64 {set} set ({} packages)", plan.len()),
        &manifest(&out),
        &theirs,
        &reported(&out),
    );
    if set == "systemd" {
        // The plan lists, before any build, what the record says was not reproduced (the
        // packages are in the download cache now).
        let dry = common::ok(
            common::osbuilder()
                .args(["rootfs", "--distro", "debian", "--os-version", SUITE])
                .args(["--arch", "amd64", "--agent-init", "--no-agent"])
                .args([
                    "--packages",
                    &names(&plan),
                    "--dry-run",
                    "--mirror",
                    &mirror,
                ])
                .arg("--cache-dir")
                .arg(cache_dir())
                .arg("-o")
                .arg(dir.path().join("unused")),
        );
        let stderr = String::from_utf8_lossy(&dry.stderr);
        for (pkg, note) in [
            ("systemd", "journal catalog"),
            ("base-passwd", "debconf database"),
        ] {
            assert!(
                stderr
                    .lines()
                    .any(|l| l.contains(&format!(" {pkg}: ")) && l.contains(note)),
                "--dry-run does not list {pkg}'s {note}:\n{stderr}"
            );
        }
        // Same request twice: the same bytes, times included.
        let again = dir.path().join("again");
        build(&mirror, "amd64", &names(&plan), &again);
        let snap = |p: &Path| common::snapshot(p).0;
        assert!(snap(&out) == snap(&again), "a rebuild differs");
        assert_eq!(
            std::fs::read(dir.path().join("rootfs.packages.json")).unwrap(),
            std::fs::read(dir.path().join("again.packages.json")).unwrap()
        );
    }
}

#[test]
fn systemd_set_amd64_matches_mmdebstrap() {
    amd64_parity("systemd");
}

#[test]
fn agent_init_set_amd64_matches_mmdebstrap() {
    amd64_parity("agent-init");
}

/// The arm64 agent-init reference plan, when the mirror serves every file of it.
fn arm64_plan(mirror: &str) -> Option<Vec<String>> {
    let plan = reference_plan(mirror, "arm64", "agent-init");
    needs::pool_served(mirror, SUITE, "arm64", &needs::plan_pairs(&plan)).then_some(plan)
}

/// osbuilder's arm64 build of the agent-init reference set, shared by the arm64 tests.
fn arm64_build(mirror: &str, plan: &[String]) -> PathBuf {
    static BUILT: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        build(mirror, "arm64", &names(plan), &dir.path().join("rootfs"));
        dir
    });
    dir.path().join("rootfs")
}

#[test]
fn agent_init_set_arm64_matches_mmdebstrap_extract() {
    let Some(mirror) = can_run() else { return };
    let Some(plan) = arm64_plan(&mirror) else {
        return;
    };
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let ours = arm64_build(&mirror, &plan);
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let x = dir.path().join("extract");
    common::ok(
        Command::new("mmdebstrap")
            .env("SOURCE_DATE_EPOCH", EPOCH)
            .args([
                "--mode=root",
                "--variant=extract",
                "--quiet",
                "--arch=arm64",
            ])
            .arg(format!("--include={}", names(&plan)))
            .arg(SUITE)
            .arg(&x)
            .arg(&mirror),
    );
    // osbuilder's declarative step on mmdebstrap's extraction, from the same .debs.
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.packages.json", ours.display())).unwrap(),
    )
    .unwrap();
    let cache = osbuilder::pkg::cache::Cache::at(&cache_dir()).unwrap();
    let debs: Vec<PathBuf> = rec["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let d = osbuilder::pkg::Digest::Sha256(p["sha256"].as_str().unwrap().to_string());
            cache
                .lookup(&d)
                .unwrap()
                .expect("package in the download cache")
        })
        .collect();
    osbuilder::pkg::deb::extracted::configure_extracted(
        &x,
        &debs,
        osbuilder::arch::Arch::Aarch64,
        EPOCH.parse().unwrap(),
    )
    .unwrap();
    assert_parity(
        &format!(
            "arm64 agent-init set ({} packages), mmdebstrap --variant=extract + osbuilder's configuration",
            plan.len()
        ),
        &manifest(&ours),
        &manifest(&x),
        &reported(&ours),
    );
}

#[test]
fn arm64_ld_so_cache_is_the_targets_own() {
    let Some(mirror) = needs::mirror() else {
        return;
    };
    if !needs::tools(&[("qemu-aarch64-static", "qemu-user-static")]) || !needs::root() {
        return;
    }
    let Some(plan) = arm64_plan(&mirror) else {
        return;
    };
    let _guard = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let ours = arm64_build(&mirror, &plan);
    // The target's own (static) ldconfig, emulated, chrooted into a copy of the tree.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let copy = dir.path().join("copy");
    common::ok(Command::new("cp").arg("-a").arg(&ours).arg(&copy));
    common::ok(
        Command::new("qemu-aarch64-static")
            .arg(copy.join("usr/sbin/ldconfig"))
            .arg("-r")
            .arg(&copy)
            .args(["-X", "-C", "/tmp/ld.so.cache.target"]),
    );
    let theirs = std::fs::read(copy.join("tmp/ld.so.cache.target")).unwrap();
    let mine = std::fs::read(ours.join("etc/ld.so.cache")).unwrap();
    assert!(theirs.len() > 1000, "the target's ldconfig found libraries");
    assert!(
        mine == theirs,
        "arm64 /etc/ld.so.cache differs from the target ldconfig's"
    );
}
