//! Container builds from the real Debian mirror, end to end: `osbuilder rootfs --builder
//! podman` with a builder image that osbuilder bootstrapped itself (no registry), for both
//! init modes; the rootfs boots under QEMU (initrd and disk image); the systemd one is
//! compared with a native build of the same request (same packages and versions by
//! dpkg-query, file trees equal apart from the documented maintainer-script outputs).
//! Also the refusals and engine problems, each a clear error that leaves nothing behind.

mod common;
mod container_support;

use std::path::Path;
use std::process::Output;
use std::sync::Mutex;

use common::*;
use container_support::*;

/// One QEMU guest at a time.
static BOOT: Mutex<()> = Mutex::new(());

fn boot(artifact: (&str, &Path), kernel: &Path) -> Output {
    let _one = BOOT.lock().unwrap_or_else(|e| e.into_inner());
    let t = std::time::Instant::now();
    let out = run(osbuilder()
        .args([
            "boot",
            "--poweroff",
            "--verbose",
            "--timeout",
            "400",
            "--kernel",
        ])
        .arg(kernel)
        .arg(artifact.0)
        .arg(artifact.1));
    assert!(
        out.status.success(),
        "boot failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "timing: boot {} {:.1} s",
        artifact.0,
        t.elapsed().as_secs_f64()
    );
    out
}

fn ready_line(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find(|l| l.starts_with("ready after"))
        .unwrap_or_else(|| panic!("no ready report in {stdout}"))
        .to_string()
}

/// `osbuilder rootfs --distro debian <args> -o out` (fixed SOURCE_DATE_EPOCH, shared cache);
/// asserts success and that no container of it is left.
fn rootfs(out: &Path, args: &[&str]) -> String {
    // One build at a time: two mmdebstrap containers started together on 2 cores have made
    // podman fail to start one (exit 126), a host limit rather than osbuilder's.
    static ONE_BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let t = std::time::Instant::now();
    let (res, pid) = run_with_pid(
        osb()
            .args(["rootfs", "--distro", "debian"])
            .args(args)
            .arg("--cache-dir")
            .arg(cache_dir())
            .arg("-o")
            .arg(out)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(
        res.status.success(),
        "osbuilder rootfs {args:?} failed:\n{err}"
    );
    assert_eq!(
        containers_of(pid),
        Vec::<String>::new(),
        "a builder container was left"
    );
    eprintln!("timing: rootfs {args:?} {:.1} s", t.elapsed().as_secs_f64());
    err
}

#[test]
fn debian_agent_init_built_in_podman_boots_from_an_initrd() {
    if !can_run_podman() || debian_builder_image().is_none() {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let d = open_tempdir();
    let r = d.path().join("rootfs");
    let log = rootfs(&r, &["--builder", "podman", "--agent-init"]);
    assert!(
        log.contains("with mmdebstrap in a podman builder container"),
        "{log}"
    );
    assert!(
        log.contains("(reused)"),
        "the builder image was not reused: {log}"
    );
    // The same provisioning as native: the agent is init, osbuilder.yaml lists what the
    // container installed, with the index's digests.
    assert_eq!(
        std::fs::read(r.join("usr/sbin/init")).unwrap(),
        osbuilder::agent::reference_agent()
    );
    let rec = std::fs::read_to_string(d.path().join("rootfs.packages.json")).unwrap();
    assert!(
        rec.contains("\"name\": \"dpkg\"") && rec.contains("\"sha256\": \""),
        "{rec}"
    );
    let yaml = std::fs::read_to_string(r.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(yaml.contains("name: \"chrony\""), "{yaml}");
    // Maintainer scripts ran in the container: chrony's postinst made its user.
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    assert!(passwd.contains("_chrony:"), "{passwd}");
    assert!(
        !r.join("etc/resolv.conf").exists()
            || std::fs::read(r.join("etc/resolv.conf")).unwrap().is_empty(),
        "the host's resolv.conf leaked into the rootfs"
    );
    let img = d.path().join("kata-containers-initrd.img");
    ok(osbuilder()
        .arg("initrd")
        .arg(&r)
        .args(["--compression", "zstd", "-o"])
        .arg(&img));
    let ready = ready_line(&boot(("--initrd", &img), &k));
    assert!(
        ready.contains("pid=1") && ready.contains("arch=x86_64"),
        "{ready}"
    );
}

#[test]
fn debian_systemd_built_in_podman_matches_native_and_boots_from_an_image() {
    if !can_run_podman() || !needs::tools(&[("dpkg-query", "dpkg")]) {
        return;
    }
    if debian_builder_image().is_none() {
        return;
    }
    let Some(k) = kernel::kernel("x86_64") else {
        return;
    };
    let d = open_tempdir();
    let (c, n) = (d.path().join("container"), d.path().join("native"));
    let (args_c, args_n) = (
        ["--builder", "podman", "--systemd", "--prune-units"],
        ["--builder", "native", "--systemd", "--prune-units"],
    );
    let log = rootfs(&c, &args_c);
    assert!(
        !log.contains("note: the builder installed"),
        "apt and the native resolver disagree: {log}"
    );
    rootfs(&n, &args_n);
    let p = parity(&n, &c, &[]);
    eprintln!("{}", p.summary());
    assert!(p.packages > 100, "{}", p.summary());
    assert!(p.unexplained.is_empty(), "{}", p.summary());

    let img = d.path().join("kata-containers.img");
    ok(osbuilder().arg("image").arg(&c).arg("-o").arg(&img));
    let out = boot(("--image", &img), &k);
    let ready = ready_line(&out);
    assert!(
        !ready.contains("pid=1 "),
        "the agent must run under systemd: {ready}"
    );
    let console = String::from_utf8_lossy(&out.stderr);
    assert!(
        console
            .lines()
            .any(|l| l.contains("Reached target") && l.contains("kata-containers.target")),
        "systemd never reported kata-containers.target:\n{console}"
    );
}

/// Run osbuilder expecting a failure; the error must contain every `needle`, and nothing
/// may be left: no container, nothing in `dir` but `keep`.
fn refused(cmd: &mut std::process::Command, dir: &Path, keep: &[&str], needles: &[&str]) -> i32 {
    let (out, pid) = run_with_pid(cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure, got success:\n{err}"
    );
    for n in needles {
        assert!(err.contains(n), "the error does not say '{n}':\n{err}");
    }
    if needs::have("podman") {
        assert_eq!(containers_of(pid), Vec::<String>::new());
    }
    only_in(dir, keep);
    out.status.code().unwrap_or(-1)
}

fn rootfs_cmd(out: &Path, args: &[&str]) -> std::process::Command {
    let mut c = osb();
    c.args(["rootfs", "--distro", "debian"])
        .args(args)
        .arg("-o")
        .arg(out);
    c
}

#[test]
fn engine_problems_are_clear_errors_and_leave_nothing() {
    let d = open_tempdir();
    let out = d.path().join("rootfs");

    // Unknown builder: refused by the flag parser (status 2).
    let code = refused(
        &mut rootfs_cmd(&out, &["--builder", "lxc"]),
        d.path(),
        &[],
        &["invalid value 'lxc'", "native", "podman", "docker"],
    );
    assert_eq!(code, 2);

    // Engine missing: a PATH without podman.
    let empty = d.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let code = refused(
        rootfs_cmd(&out, &["--builder", "podman"]).env("PATH", &empty),
        d.path(),
        &["bin"],
        &[
            "`podman` is not installed",
            "Debian package podman",
            "--builder native",
        ],
    );
    assert_eq!(code, 1);

    // The docker CLI with no engine behind it: a clear error, quickly (here the real CLI
    // when it is installed, else a stand-in that answers as the CLI does).
    let fake = d.path().join("fake");
    std::fs::create_dir(&fake).unwrap();
    let mut path = std::ffi::OsString::from(&fake);
    if !needs::have("docker") {
        std::fs::write(
            fake.join("docker"),
            "#!/bin/sh\necho 'Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?' >&2\nexit 1\n",
        )
        .unwrap();
        sh(&format!("chmod 755 '{}'", fake.join("docker").display()));
    }
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap());
    let docker_works = needs::have("docker")
        && std::process::Command::new("docker")
            .args(["version", "--format", "{{.Server.Version}}"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !docker_works {
        let t = std::time::Instant::now();
        let code = refused(
            rootfs_cmd(&out, &["--builder", "docker"])
                .env("PATH", &path)
                .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            d.path(),
            &["bin", "fake"],
            &["no Docker engine answers", "docker.io", "--builder podman"],
        );
        assert_eq!(code, 1);
        assert!(t.elapsed().as_secs() < 60, "the docker probe hung");
    }

    // A foreign arch without qemu-user in binfmt_misc: refused, native suggested.
    if !Path::new("/proc/sys/fs/binfmt_misc/qemu-s390x").exists() && needs::have("podman") {
        let code = refused(
            &mut rootfs_cmd(&out, &["--builder", "podman", "--arch", "s390x"]),
            d.path(),
            &["bin", "fake"],
            &["qemu-user-static", "--builder native"],
        );
        assert_eq!(code, 2);
    }

    // A distro without a builder definition (every shipped distro has one: a site's own).
    let distros = d.path().join("distros");
    std::fs::create_dir_all(distros.join("nobuilder")).unwrap();
    std::fs::write(
        distros.join("nobuilder/distro.toml"),
        "name = \"nobuilder\"\npretty_name = \"No builder\"\npackage_format = \"apk\"\n\
         default_version = \"1\"\narches = [\"x86_64\", \"aarch64\"]\n\
         init_modes = [\"agent-init\"]\ndefault_init = \"agent-init\"\n",
    )
    .unwrap();
    let code = refused(
        osb()
            .env("OSBUILDER_DISTROS_DIR", &distros)
            .args([
                "rootfs",
                "--distro",
                "nobuilder",
                "--builder",
                "podman",
                "-o",
            ])
            .arg(&out),
        d.path(),
        &["bin", "fake", "distros"],
        &["no builder container definition", "--builder native"],
    );
    assert_eq!(code, 2);
    std::fs::remove_dir_all(&distros).unwrap();

    // Rootless without subordinate ids: nobody has none here.
    if needs::root()
        && needs::tools(&[
            ("podman", "podman"),
            ("runc", "runc"),
            ("setpriv", "util-linux"),
        ])
    {
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap_or_default();
        if !subuid
            .lines()
            .any(|l| l.starts_with("nobody:") || l.starts_with("65534:"))
        {
            let code = refused(
                osbuilder_as_nobody()
                    .args(["rootfs", "--distro", "debian", "--builder", "podman", "-o"])
                    .arg(&out)
                    .env("HOME", d.path())
                    .env("CONTAINERS_STORAGE_CONF", storage_conf()),
                d.path(),
                &["bin", "fake"],
                &["rootless", "/etc/subuid", "65536", "usermod --add-subuids"],
            );
            assert_eq!(code, 1);
        }
    }
}

#[test]
fn make_maps_use_docker_and_use_podman_like_kata() {
    if !needs::tools(&[("make", "make")]) {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dry = |vars: &[&str], goal: &str| -> String {
        let out = ok(std::process::Command::new("make")
            .arg("-n")
            .arg("-C")
            .arg(root)
            .arg(goal)
            .args(vars)
            .args(["OSBUILDER=/bin/true", "ROOTFS_DIR=/nonexistent/rootfs"]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let line = |s: &str| {
        s.lines()
            .find(|l| l.contains(" rootfs "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line(&dry(&["USE_PODMAN=true"], "rootfs")).contains("--builder podman"));
    assert!(
        line(&dry(&["USE_PODMAN=true", "USE_DOCKER=yes"], "rootfs")).contains("--builder docker")
    );
    assert!(
        line(&dry(&["USE_DOCKER=false", "USE_PODMAN=1"], "rootfs")).contains("--builder podman")
    );
    for off in [
        &["USE_DOCKER=no"][..],
        &["USE_PODMAN="],
        &["USE_DOCKER=false", "USE_PODMAN=no"],
        &[],
    ] {
        let l = line(&dry(off, "rootfs"));
        assert!(l.contains("--builder native"), "{off:?}: {l}");
    }
    // Packing needs no container: said once, for image and initrd together.
    let both = dry(&["USE_PODMAN=true"], "all");
    assert_eq!(both.matches("packing runs natively").count(), 1, "{both}");
    assert_eq!(dry(&[], "all").matches("packing runs natively").count(), 0);
}

#[test]
fn the_documented_list_matcher() {
    glob_self_test();
}
