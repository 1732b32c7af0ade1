//! What osbuilder may replace, and what a killed run leaves: the directory-output rules
//! (never a user's folder, never /, home, the current directory or a mount point), output
//! paths refused before any work, and children (mkfs…) that die with osbuilder.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A mirror that refuses connections: a command that gets as far as the network fails
/// with exit 1, so exit 2 proves the refusal came first.
const NO_MIRROR: &str = "http://127.0.0.1:9";

fn rootfs_cmd(out: &Path, extra: &[&str]) -> Command {
    let mut c = osbuilder();
    c.args([
        "rootfs",
        "--distro",
        "debian",
        "--no-agent",
        "--mirror",
        NO_MIRROR,
    ])
    .args(extra)
    .arg("-o")
    .arg(out);
    c
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_users_folder_is_never_replaced_without_force() {
    let d = tempfile::tempdir().unwrap();
    let project = d.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(project.join("main.rs"), "fn main() {}").unwrap();
    let cache = d.path().join("cache");

    let o = run(&mut rootfs_cmd(
        &project,
        &["--cache-dir", cache.to_str().unwrap()],
    ));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not empty") && err.contains("--force"),
        "{err}"
    );
    assert!(err.lines().count() == 1, "one line: {err}");
    assert_eq!(
        std::fs::read_to_string(project.join("main.rs")).unwrap(),
        "fn main() {}"
    );
    assert!(!cache.exists(), "refused after work had started");

    // The same for kernel fetch.
    let o = run(osbuilder()
        .args(["kernel", "fetch", "--mirror", NO_MIRROR, "-o"])
        .arg(&project));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(project.join("main.rs").exists());

    // --force gets past the rule (and then fails at the unreachable mirror, touching nothing).
    let o = run(&mut rootfs_cmd(
        &project,
        &["--force", "--cache-dir", cache.to_str().unwrap()],
    ));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        project.join("main.rs").exists(),
        "a failed build touched the folder"
    );
}

#[test]
fn root_home_cwd_and_mount_points_are_refused_even_with_force() {
    let d = tempfile::tempdir().unwrap();
    let inside = d.path().join("work");
    std::fs::create_dir(&inside).unwrap();
    std::fs::write(inside.join("keep"), "x").unwrap();
    for (out, cwd, why) in [
        ("/", d.path(), "root folder"),
        (".", inside.as_path(), "current directory"),
        ("..", inside.as_path(), "current directory"),
        ("/proc", d.path(), "mount point"),
    ] {
        let o = run(rootfs_cmd(Path::new(out), &["--force"]).current_dir(cwd));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "-o {out}: {err}");
        assert!(err.contains(why), "-o {out}: {err}");
    }
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let o = run(rootfs_cmd(&home, &["--force"]).env("HOME", &home));
    assert!(stderr(&o).contains("home folder"), "{}", stderr(&o));
    assert!(inside.join("keep").exists());
}

#[test]
fn bad_output_paths_are_refused_before_any_work() {
    let d = tempfile::tempdir().unwrap();
    let o = run(&mut rootfs_cmd(&d.path().join("missing/rootfs"), &[]));
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    let file = d.path().join("file");
    std::fs::write(&file, "mine").unwrap();
    let o = run(&mut rootfs_cmd(&file, &[]));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine");
}

/// A tree `osbuilder image` accepts.
fn tiny_rootfs(dir: &Path) -> PathBuf {
    let r = dir.join("rootfs");
    std::fs::create_dir_all(r.join("sbin")).unwrap();
    std::fs::write(r.join("sbin/init"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(r.join("sbin/init"), std::fs::Permissions::from_mode(0o755)).unwrap();
    r
}

/// A stand-in `mkfs.ext4` that records its pid and then runs for a minute, first on PATH.
fn slow_mkfs(dir: &Path) -> (PathBuf, PathBuf) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pidfile = dir.join("mkfs.pid");
    let script = bin.join("mkfs.ext4");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 60\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (PathBuf::from(path), pidfile)
}

fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string());
            !state.unwrap_or_default().starts_with('Z')
        })
        .unwrap_or(false)
}

fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "waited in vain: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".x.img."))
        .collect()
}

#[test]
fn children_die_with_osbuilder_and_leftovers_are_swept() {
    if !needs::tools(&[("debugfs", "e2fsprogs"), ("mkfs.ext4", "e2fsprogs")]) {
        return;
    }
    for signal in ["TERM", "INT", "KILL"] {
        let d = tempfile::tempdir().unwrap();
        let rootfs = tiny_rootfs(d.path());
        let (path, pidfile) = slow_mkfs(d.path());
        let out = d.path().join("out");
        std::fs::create_dir(&out).unwrap();
        let mut child = osbuilder()
            .arg("image")
            .arg(&rootfs)
            .arg("-o")
            .arg(out.join("x.img"))
            .env("PATH", &path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the stand-in mkfs to start", || {
            std::fs::read_to_string(&pidfile).is_ok_and(|p| !p.trim().is_empty())
        });
        let mkfs = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .to_string();
        assert!(running(&mkfs));
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        let st = child.wait().unwrap();
        assert!(!st.success(), "{signal}: osbuilder did not fail");
        wait_for(&format!("mkfs to die after SIG{signal}"), || {
            !running(&mkfs)
        });
        if signal == "KILL" {
            // Nothing could clean up; the next run for that output does.
            assert!(
                !leftovers(&out).is_empty(),
                "kill -9 left nothing to sweep?"
            );
            std::fs::remove_file(&pidfile).unwrap();
            let mut again = osbuilder();
            again
                .arg("image")
                .arg(&rootfs)
                .arg("-o")
                .arg(out.join("x.img"))
                .env("PATH", &path)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut again = again.spawn().unwrap();
            wait_for("the second run to start mkfs", || pidfile.exists());
            let mkfs2 = std::fs::read_to_string(&pidfile)
                .unwrap()
                .trim()
                .to_string();
            let names = leftovers(&out);
            assert!(
                names
                    .iter()
                    .all(|n| n.ends_with(&format!("-{}", again.id()))),
                "leftovers of the killed run were not swept: {names:?}"
            );
            again.kill().unwrap();
            again.wait().unwrap();
            wait_for("mkfs of the second run to die", || !running(&mkfs2));
        } else {
            assert!(
                leftovers(&out).is_empty(),
                "{signal}: {:?}",
                leftovers(&out)
            );
        }
    }
}

/// A missing mirror setting is a refused request for every distro (exit 2), before any work.
#[test]
fn no_mirror_is_refused_the_same_for_every_distro() {
    let d = tempfile::tempdir().unwrap();
    for distro in ["ubuntu", "alpine"] {
        let o = run(osbuilder()
            .args([
                "rootfs",
                "--distro",
                distro,
                "--no-agent",
                "--dry-run",
                "-o",
            ])
            .arg(d.path().join("r"))
            .env_remove("OSBUILDER_MIRROR"));
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{distro}: {err}");
        assert!(err.contains("--mirror"), "{distro}: {err}");
    }
}
