//! Container builds against repositories built here and served on 127.0.0.1 (the builder
//! container shares the host's network):
//!
//! - Ubuntu: a signed repository whose Essential set is real enough for mmdebstrap to run
//!   dpkg in the chroot (this host's dpkg and its libraries, a static busybox as the shell),
//!   plus packages with maintainer scripts; native vs podman parity of the same request;
//!   a postinst that fails mid-way; an interrupted build. Nothing may be left behind.
//! - Alpine: the builder image is bootstrapped from a synthetic signed repository through
//!   the verified native backend and imported; its apk.static is a stand-in (no real one can
//!   be had without an Alpine mirror), which records how it was invoked and fails, so the
//!   test proves the image, the invocation (keys mounted, never --allow-untrusted) and the
//!   failure path, and stops there.
//!
//! The builder image (Debian's mmdebstrap) is bootstrapped from the Debian mirror once; the
//! Ubuntu tests are skipped, visibly, when it cannot be reached.

mod common;
mod container_support;
mod deb_support;

use std::path::Path;
use std::sync::OnceLock;

use common::{needs, open_tempdir};
use container_support::*;
use deb_support::{E, Gpg, Pkg, gpg_key, pkg_with_script, serve, write_repo};

const ARCH: &str = "amd64";
const SUITE: &str = "resolute";

/// A host file packed into a test package: (path on the host, path in the package, mode).
fn host_file(host: &str, inside: &str) -> (String, Vec<u8>, u32) {
    let data = std::fs::read(host).unwrap_or_else(|e| panic!("reading {host}: {e}"));
    (inside.to_string(), data, 0o755)
}

/// Entries for `files` (and every parent directory, parents first).
fn entries(files: &[(String, Vec<u8>, u32)], links: &[(&str, &str)]) -> Vec<String> {
    let mut dirs = std::collections::BTreeSet::new();
    for p in files
        .iter()
        .map(|f| f.0.as_str())
        .chain(links.iter().map(|l| l.0))
    {
        let mut acc = String::from(".");
        let parts: Vec<&str> = p.trim_start_matches("./").split('/').collect();
        for c in &parts[..parts.len() - 1] {
            acc = format!("{acc}/{c}");
            dirs.insert(format!("{acc}/"));
        }
    }
    dirs.into_iter().collect()
}

fn package(
    name: &str,
    extra: &str,
    files: &[(String, Vec<u8>, u32)],
    links: &[(&str, &str)],
    postinst: Option<&str>,
) -> Pkg {
    package_with_dirs(name, extra, &[], files, links, postinst)
}

fn package_with_dirs(
    name: &str,
    extra: &str,
    own_dirs: &[&str],
    files: &[(String, Vec<u8>, u32)],
    links: &[(&str, &str)],
    postinst: Option<&str>,
) -> Pkg {
    let mut dirs = entries(files, links);
    dirs.extend(own_dirs.iter().map(|d| d.to_string()));
    let mut es: Vec<E> = vec![E::Dir("./")];
    es.extend(dirs.iter().map(|d| E::Dir(d.as_str())));
    es.extend(
        files
            .iter()
            .map(|(p, d, m)| E::File(p.as_str(), d.as_slice(), *m, 0, 0)),
    );
    es.extend(links.iter().map(|(p, t)| E::Symlink(p, t)));
    pkg_with_script(name, "1.0-0test1", ARCH, extra, &es, postinst)
}

/// The busybox applets the chroot needs: dpkg's own checks (sh, rm, diff; tar is GNU tar,
/// dpkg-deb passes it GNU options), and what the maintainer scripts here use.
const APPLETS: &[&str] = &[
    "sh", "rm", "diff", "cat", "cp", "mv", "ln", "mkdir", "rmdir", "chmod", "chown", "ls", "touch",
    "sed", "grep", "env", "test", "[", "echo", "printf", "true", "false", "id", "readlink", "find",
    "sort", "head", "tail", "tr", "cut", "wc", "xargs", "uname", "date", "dirname", "basename",
    "mktemp", "sleep", "awk", "expr", "stat", "sync",
];

fn universe() -> Vec<Pkg> {
    let lib = "/lib/x86_64-linux-gnu";
    let ulib = "./usr/lib/x86_64-linux-gnu";
    let base_files = package_with_dirs(
        "base-files",
        "Essential: yes\nPriority: required\n",
        &["./dev/"],
        &[(
            "./usr/lib/os-release".into(),
            b"NAME=\"Ubuntu\"\nID=ubuntu\nVERSION_CODENAME=resolute\n".to_vec(),
            0o644,
        )],
        // The merged-/usr layout, as a real package ships it (and /dev, which mmdebstrap
        // fills in its archive).
        &[
            ("./bin", "usr/bin"),
            ("./sbin", "usr/sbin"),
            ("./lib", "usr/lib"),
            ("./lib64", "usr/lib64"),
            ("./etc/os-release", "../usr/lib/os-release"),
        ],
        // What Debian's base-files postinst makes (the native backend does it declaratively).
        Some(
            "#!/bin/sh\nset -e\n\
             for d in mnt srv opt etc/opt var/opt media usr/local usr/local/share \
             usr/local/share/man usr/local/bin usr/local/games usr/local/lib usr/local/libexec \
             usr/local/include usr/local/sbin usr/local/src usr/local/etc; do \
             mkdir -p /$d; chmod 755 /$d; done\n\
             mkdir -p /var/mail /run/lock /var/spool /var/log\nchmod 2775 /var/mail\n\
             chmod 1777 /run/lock\nln -s ../mail /var/spool/mail\nln -s share/man /usr/local/man\n\
             touch /var/log/wtmp /var/log/btmp /var/log/lastlog\n",
        ),
    );
    let base_passwd = package(
        "base-passwd",
        "Essential: yes\nPriority: required\n",
        &[
            (
                "./usr/share/base-passwd/passwd.master".into(),
                b"root:*:0:0:root:/root:/bin/sh\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n".to_vec(),
                0o644,
            ),
            (
                "./usr/share/base-passwd/group.master".into(),
                b"root:*:0:\nnogroup:*:65534:\n".to_vec(),
                0o644,
            ),
        ],
        &[],
        Some(
            "#!/bin/sh\nset -e\n[ -e /etc/passwd ] || cp /usr/share/base-passwd/passwd.master /etc/passwd\n\
             [ -e /etc/group ] || cp /usr/share/base-passwd/group.master /etc/group\n",
        ),
    );
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (Debian package busybox-static)");
    let shell_links: Vec<(String, String)> = APPLETS
        .iter()
        .map(|a| (format!("./usr/bin/{a}"), "busybox".to_string()))
        .collect();
    let shell_links: Vec<(&str, &str)> = shell_links
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let shell = package(
        "busybox-shell",
        "Essential: yes\nPriority: required\n",
        &[("./usr/bin/busybox".into(), bb, 0o755)],
        &shell_links,
        None,
    );
    let libc = package(
        "libc6",
        "Priority: required\nMulti-Arch: same\n",
        &[
            host_file(&format!("{lib}/libc.so.6"), &format!("{ulib}/libc.so.6")),
            host_file(
                "/lib64/ld-linux-x86-64.so.2",
                "./usr/lib64/ld-linux-x86-64.so.2",
            ),
        ],
        &[],
        None,
    );
    let mut dpkg_files: Vec<(String, Vec<u8>, u32)> = [
        "dpkg",
        "dpkg-deb",
        "dpkg-query",
        "dpkg-split",
        "dpkg-divert",
        "dpkg-trigger",
        "dpkg-statoverride",
        "update-alternatives",
    ]
    .iter()
    .map(|b| host_file(&format!("/usr/bin/{b}"), &format!("./usr/bin/{b}")))
    .collect();
    dpkg_files.push(host_file(
        "/usr/sbin/start-stop-daemon",
        "./usr/sbin/start-stop-daemon",
    ));
    for l in [
        "libbz2.so.1.0",
        "liblzma.so.5",
        "libmd.so.0",
        "libpcre2-8.so.0",
        "libselinux.so.1",
        "libz.so.1",
        "libzstd.so.1",
    ] {
        dpkg_files.push(host_file(&format!("{lib}/{l}"), &format!("{ulib}/{l}")));
    }
    let dpkg = package(
        "dpkg",
        "Essential: yes\nPriority: required\nPre-Depends: libc6\n",
        &dpkg_files,
        &[],
        None,
    );
    let tar = package(
        "tar",
        "Essential: yes\nPriority: required\nPre-Depends: libc6\n",
        &[
            host_file("/usr/bin/tar", "./usr/bin/tar"),
            host_file(
                &format!("{lib}/libacl.so.1"),
                &format!("{ulib}/libacl.so.1"),
            ),
        ],
        &[],
        None,
    );
    let libc_bin = package(
        "libc-bin",
        "Essential: yes\nPriority: required\nDepends: libc6\n",
        &[host_file("/usr/sbin/ldconfig", "./usr/sbin/ldconfig")],
        &[],
        None,
    );
    // mmdebstrap's required variant names apt explicitly; apt-get itself runs from the
    // builder (only dpkg runs in the chroot), so the target's apt is a placeholder here.
    let apt = package(
        "apt",
        "Priority: required\nDepends: libc6\n",
        &[(
            "./usr/share/doc/apt/README".into(),
            b"placeholder\n".to_vec(),
            0o644,
        )],
        &[],
        None,
    );
    let hello = package(
        "hello",
        "Priority: optional\nDepends: libc6\n",
        &[(
            "./usr/bin/hello".into(),
            b"#!/bin/sh\necho hello\n".to_vec(),
            0o755,
        )],
        &[],
        Some(
            "#!/bin/sh\nset -e\nmkdir -p /var/lib/hello\necho configured > /var/lib/hello/state\n",
        ),
    );
    let broken = package(
        "broken",
        "Priority: optional\n",
        &[("./usr/share/broken/readme".into(), b"x\n".to_vec(), 0o644)],
        &[],
        Some("#!/bin/sh\necho 'broken: postinst fails on purpose' >&2\nexit 1\n"),
    );
    let slow = package(
        "slow",
        "Priority: optional\n",
        &[("./usr/share/slow/readme".into(), b"x\n".to_vec(), 0o644)],
        &[],
        Some("#!/bin/sh\necho 'slow: configuring' >&2\nsleep 300\n"),
    );
    vec![
        base_files,
        base_passwd,
        shell,
        tar,
        libc,
        dpkg,
        libc_bin,
        apt,
        hello,
        broken,
        slow,
    ]
}

struct Repo {
    _dir: tempfile::TempDir,
    url: String,
    key: Gpg,
}

/// The repository, built once per test binary.
fn repo() -> &'static Repo {
    static R: OnceLock<Repo> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let key = gpg_key(dir.path(), "ubuntu-test");
        let www = dir.path().join("www");
        write_repo(&www.join("ubuntu"), SUITE, ARCH, &universe(), &key, "");
        let url = format!("{}/ubuntu", serve(&www));
        Repo {
            _dir: dir,
            url,
            key,
        }
    })
}

fn host_ready() -> bool {
    can_run_podman()
        && needs::tools(&[
            ("gpg", "gnupg"),
            ("dpkg-query", "dpkg"),
            ("busybox", "busybox-static"),
        ])
        && std::env::consts::ARCH == "x86_64"
        && debian_builder_image().is_some()
}

fn ubuntu(builder: &str, packages: &str, out: &Path) -> std::process::Command {
    let r = repo();
    let mut c = osb();
    c.args([
        "rootfs",
        "--distro",
        "ubuntu",
        "--arch",
        ARCH,
        "--systemd",
        "--no-agent",
    ])
    .args([
        "--builder",
        builder,
        "--packages",
        packages,
        "--mirror",
        &r.url,
    ])
    .arg("--keyring")
    .arg(&r.key.public)
    .arg("--cache-dir")
    .arg(cache_dir())
    .arg("-o")
    .arg(out)
    .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn ok_run(c: &mut std::process::Command) -> String {
    let (out, pid) = run_with_pid(c);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{c:?} failed:\n{err}");
    assert_eq!(containers_of(pid), Vec::<String>::new());
    err
}

/// Differences that come from this repository being synthetic, on top of the documented
/// list: in a real archive, apt, dpkg and base-files ship these folders, and netbase,
/// passwd, debianutils and systemd's scripts write these files.
const HERMETIC_EXTRAS: &[(&str, &[&str])] = &[
    (
        "this test's own postinst output",
        &["var/lib/hello", "var/lib/hello/**"],
    ),
    (
        "folders mmdebstrap makes that the synthetic apt, dpkg and base-files do not ship",
        &[
            "etc/apt",
            "etc/apt/**",
            "etc/dpkg",
            "etc/dpkg/**",
            "tmp",
            "var/cache",
            "var/cache/apt",
            "var/lib/apt",
        ],
    ),
    (
        "files of scripts the synthetic packages do not have (passwd, netbase, add-shell, systemd)",
        &[
            "etc/shadow",
            "etc/gshadow",
            "etc/hosts",
            "etc/shells",
            "etc/machine-id",
        ],
    ),
];

#[test]
fn ubuntu_native_and_podman_give_the_same_rootfs() {
    if !host_ready() {
        return;
    }
    let d = open_tempdir();
    let (n, c) = (d.path().join("native"), d.path().join("container"));
    ok_run(&mut ubuntu("native", "hello", &n));
    let log = ok_run(&mut ubuntu("podman", "hello", &c));
    assert!(!log.contains("note: the builder installed"), "{log}");
    // The postinst ran in the container (and only there: native runs no target code).
    assert_eq!(
        std::fs::read_to_string(c.join("var/lib/hello/state")).unwrap(),
        "configured\n"
    );
    let p = parity(&n, &c, HERMETIC_EXTRAS);
    eprintln!("{}", p.summary());
    assert_eq!(p.packages, 9, "{}", p.summary());
    assert!(p.unexplained.is_empty(), "{}", p.summary());
    // The record names the local repository's files and digests.
    let rec = std::fs::read_to_string(d.path().join("container.packages.json")).unwrap();
    assert!(
        rec.contains("\"distro\": \"ubuntu\"") && rec.contains("/pool/main/hello_"),
        "{rec}"
    );
}

#[test]
fn a_postinst_failing_mid_way_leaves_nothing() {
    if !host_ready() {
        return;
    }
    let d = open_tempdir();
    let out = d.path().join("rootfs");
    let (res, pid) = run_with_pid(&mut ubuntu("podman", "broken", &out));
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("builder container failed")
            && err.contains("broken: postinst fails on purpose"),
        "{err}"
    );
    assert_eq!(containers_of(pid), Vec::<String>::new());
    only_in(d.path(), &[]);
}

#[test]
fn an_interrupted_build_removes_its_container_and_partial_rootfs() {
    if !host_ready() {
        return;
    }
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let d = open_tempdir();
        let out = d.path().join("rootfs");
        let mut child = ubuntu("podman", "slow", &out)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait until the slow postinst runs in the container (mmdebstrap shows dpkg's
        // output only on failure, so look at the container's processes).
        let t = std::time::Instant::now();
        let running = loop {
            let names = containers_of(pid);
            if let Some(name) = names.first() {
                let ps = podman()
                    .args(["exec", name, "sh", "-c"])
                    .arg("cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '")
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&ps.stdout).contains("sleep 300") {
                    break true;
                }
            }
            if t.elapsed().as_secs() > 300 || child.try_wait().unwrap().is_some() {
                break false;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        };
        if !running {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the slow postinst never ran in a builder container");
        }
        // The staged rootfs (and the keys folder) exist while it runs.
        assert!(std::fs::read_dir(d.path()).unwrap().count() > 0);
        // SAFETY: kill(2) on the child we spawned.
        unsafe { libc::kill(pid as i32, signal) };
        let st = child.wait().unwrap();
        assert_eq!(st.code(), Some(130), "signal {signal}");
        assert_eq!(containers_of(pid), Vec::<String>::new(), "signal {signal}");
        only_in(d.path(), &[]);
    }
}

// ---- Alpine ------------------------------------------------------------------------

use common::apkrepo::{self, Entry as AEntry, Pkg as APkg};

/// The stand-in apk.static: records its arguments and the mounted keys, then fails.
const APK_STUB: &[u8] = b"#!/bin/sh\n\
echo \"apk.static stand-in: $*\" >&2\n\
echo \"keys: $(ls /osbuilder/keys)\" >&2\n\
exit 3\n";

fn alpine_packages() -> Vec<APkg> {
    let bb = std::fs::read("/bin/busybox").expect("/bin/busybox (Debian package busybox-static)");
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list-full")
        .output()
        .unwrap()
        .stdout;
    let mut busybox = APkg::new("busybox", "1.37.0-r0", "x86_64");
    busybox.provides = vec!["/bin/sh".into()];
    busybox.files = vec![
        AEntry::dir("bin"),
        AEntry::file("bin/busybox", &bb, 0o755),
        AEntry::dir("etc"),
        AEntry::dir("etc/busybox-paths.d"),
        AEntry::file("etc/busybox-paths.d/busybox", &list, 0o644),
    ];
    let mut apk = APkg::new("apk-tools-static", "2.14.9-r0", "x86_64");
    apk.files = vec![
        AEntry::dir("sbin"),
        AEntry::file("sbin/apk.static", APK_STUB, 0o755),
    ];
    let mut base = APkg::new("alpine-base", "3.22.0-r0", "x86_64");
    base.depends = vec!["busybox".into()];
    vec![busybox, apk, base]
}

#[test]
fn alpine_builder_image_comes_from_the_verified_native_backend() {
    if !can_run_podman() || !needs::tools(&[("busybox", "busybox-static")]) {
        return;
    }
    let d = open_tempdir();
    let www = d.path().join("www");
    apkrepo::write_repo(
        &www,
        "v3.22",
        "x86_64",
        &alpine_packages(),
        apkrepo::test_key(),
    );
    let keys = apkrepo::write_keys_dir(d.path());
    let mirror = apkrepo::serve(&www);
    // The image, bootstrapped from the signed synthetic repository (always rebuilt here: a
    // stand-in apk must not be reused under the real definition's tag by anything else).
    let mut c = osb();
    c.args([
        "builder-image",
        "--distro",
        "alpine",
        "--rebuild",
        "--mirror",
        &mirror,
    ])
    .arg("--keys-dir")
    .arg(&keys)
    .arg("--cache-dir")
    .arg(d.path().join("cache"));
    let out = c.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("bootstrapped natively") && err.contains("signed by"),
        "{err}"
    );
    let image = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        image.starts_with("localhost/osbuilder/builder-alpine-3.22:"),
        "{image}"
    );
    let listing = podman()
        .args(["run", "--rm", "--pull=never", "--network", "none"])
        .args([
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ])
        .args([
            &image,
            "sh",
            "-c",
            "stat -c '%u:%g %n' /sbin/apk.static; readlink /bin/sh",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert!(
        text.contains("0:0 /sbin/apk.static") && text.contains("busybox"),
        "{text}"
    );

    // A build reaches apk.static with the request and the keys, then fails cleanly.
    let out_dir = d.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut b = osb();
    b.args([
        "rootfs",
        "--distro",
        "alpine",
        "--agent-init",
        "--builder",
        "podman",
    ])
    .args([
        "--mirror",
        &mirror,
        "--packages",
        "alpine-base",
        "--keys-dir",
    ])
    .arg(&keys)
    .arg("-o")
    .arg(out_dir.join("rootfs"));
    let (res, pid) = run_with_pid(&mut b);
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    let call = err
        .lines()
        .find(|l| l.contains("apk.static stand-in:"))
        .unwrap_or_else(|| panic!("apk.static was not run:\n{err}"));
    for want in [
        "--root /rootfs",
        "--initdb",
        "--arch x86_64",
        "--keys-dir /osbuilder/keys",
        &format!("--repository={mirror}/v3.22/main"),
        "add alpine-base",
    ] {
        assert!(
            call.contains(want),
            "apk.static was not given {want}: {call}"
        );
    }
    assert!(!err.contains("--allow-untrusted"), "{err}");
    assert!(
        err.contains(apkrepo::KEY_NAME),
        "the test key was not mounted:\n{err}"
    );
    assert!(
        err.contains("builder container failed (exit status 3)"),
        "{err}"
    );
    assert_eq!(containers_of(pid), Vec::<String>::new());
    only_in(&out_dir, &[]);
    let _ = podman().args(["rmi", "-f", &image]).output();
}

// ---- rpm distros: dnf in a Debian builder -------------------------------------------

use common::rpmrepo::{self, F, Spec};

const CLEAR_VERSION: &str = "43000";

/// A small rpm universe with a real shell (the host's static busybox, so rpm can run a
/// %post in the chroot) and `hello`, whose %post writes /var/lib/hello/state.
fn rpm_specs() -> Vec<Spec<'static>> {
    vec![
        Spec::new("filesystem", "x86_64")
            .file(F::Dir("/usr"))
            .file(F::Dir("/usr/bin"))
            .file(F::Dir("/usr/sbin"))
            .file(F::Dir("/usr/lib64"))
            .file(F::Dir("/etc"))
            .file(F::Dir("/var"))
            .file(F::Dir("/var/lib"))
            .file(F::Symlink("/bin", "usr/bin"))
            .file(F::Symlink("/sbin", "usr/sbin"))
            .file(F::Symlink("/lib64", "usr/lib64"))
            .file(F::File(
                "/etc/passwd",
                b"root:x:0:0:root:/root:/bin/sh\n",
                0o644,
                "root",
                "root",
            ))
            .file(F::File("/etc/group", b"root:x:0:\n", 0o644, "root", "root")),
        Spec::new("busybox", "x86_64")
            .dep("Requires: filesystem")
            .dep("Provides: /bin/sh")
            .file(F::Host("/usr/bin/busybox", "/bin/busybox"))
            .file(F::Symlink("/usr/bin/sh", "busybox"))
            .file(F::Symlink("/usr/bin/mkdir", "busybox")),
        Spec {
            scripts: vec![(
                "post",
                "/bin/sh",
                "mkdir -p /var/lib/hello\necho configured > /var/lib/hello/state",
            )],
            ..Spec::new("hello", "x86_64")
                .dep("Requires: filesystem")
                .dep("Requires(post): /bin/sh")
                .file(F::File(
                    "/usr/bin/hello",
                    b"#!/bin/sh\necho hello\n",
                    0o755,
                    "root",
                    "root",
                ))
        },
    ]
}

struct RpmRepos {
    _dir: tempfile::TempDir,
    url: String,
    key: rpmrepo::Gpg,
}

/// Clear Linux's layout (unsigned, as Clear publishes) and Azure Linux's (packages and
/// repomd.xml signed with a test key), built once per test binary and served on 127.0.0.1.
fn rpm_repos() -> &'static RpmRepos {
    static R: OnceLock<RpmRepos> = OnceLock::new();
    R.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let www = dir.path().join("www");
        let key = rpmrepo::gpg_key(dir.path(), "osbuilder-container-rpm");
        let clear = www.join(format!("clear/releases/{CLEAR_VERSION}/clear/x86_64/os"));
        std::fs::create_dir_all(clear.join("Packages")).unwrap();
        rpmrepo::rpmbuild(
            &dir.path().join("clear"),
            &clear.join("Packages"),
            &rpm_specs(),
            "1.0",
            "w6.gzdio",
        );
        rpmrepo::createrepo(&clear, None, "xz");
        std::fs::write(www.join("clear/latest"), format!("{CLEAR_VERSION}\n")).unwrap();
        let azure = www.join("azure/azurelinux/3.0/prod/base/x86_64");
        std::fs::create_dir_all(azure.join("Packages")).unwrap();
        let built = rpmrepo::rpmbuild(
            &dir.path().join("azure"),
            &azure.join("Packages"),
            &rpm_specs(),
            "3.0",
            "w19.zstdio",
        );
        rpmrepo::rpmsign(&key, &built);
        rpmrepo::createrepo(&azure, Some(&key), "gz");
        // Metadata signed by the trusted key, packages by another: only dnf (rpm) in the
        // container can tell, since the host reads the metadata and downloads no package.
        let forged = www.join("forged/azurelinux/3.0/prod/base/x86_64");
        std::fs::create_dir_all(forged.join("Packages")).unwrap();
        let other = rpmrepo::gpg_key(dir.path(), "osbuilder-container-other");
        let built = rpmrepo::rpmbuild(
            &dir.path().join("forged"),
            &forged.join("Packages"),
            &rpm_specs(),
            "3.0",
            "w19.zstdio",
        );
        rpmrepo::rpmsign(&other, &built);
        rpmrepo::createrepo(&forged, Some(&key), "gz");
        RpmRepos {
            url: common::apkrepo::serve(&www),
            _dir: dir,
            key,
        }
    })
}

fn rpm_host_ready() -> bool {
    can_run_podman()
        && needs::tools(rpmrepo::TOOLS)
        && needs::tools(&[("busybox", "busybox-static")])
        && std::env::consts::ARCH == "x86_64"
        && needs::mirror().is_some()
}

fn rpm_rootfs(distro: &str, builder: &str, out: &Path) -> std::process::Command {
    rpm_rootfs_from(
        if distro == "clearlinux" {
            "clear"
        } else {
            "azure"
        },
        distro,
        builder,
        out,
    )
}

fn rpm_rootfs_from(sub: &str, distro: &str, builder: &str, out: &Path) -> std::process::Command {
    let r = rpm_repos();
    let mut c = osb();
    c.args(["rootfs", "--distro", distro, "--arch", "x86_64"])
        .args(["--systemd", "--no-agent", "--packages", "hello"])
        .args(["--builder", builder])
        .arg("--mirror")
        .arg(format!("{}/{sub}", r.url))
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg("-o")
        .arg(out)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    if distro == "azurelinux" {
        c.arg("--keyring").arg(&r.key.public);
    }
    c
}

/// The test's own difference, on top of the documented list (`RPM_OUTPUTS`).
const HELLO_STATE: &[(&str, &[&str])] = &[(
    "this test's own %post output",
    &["var/lib/hello", "var/lib/hello/**"],
)];

/// Build natively and with podman, check parity; returns the container build's record
/// (`.packages.json`).
fn rpm_parity(distro: &str) -> String {
    let _one = one_build();
    let d = open_tempdir();
    let (n, c) = (d.path().join("native"), d.path().join("container"));
    ok_run(&mut rpm_rootfs(distro, "native", &n));
    let log = ok_run(&mut rpm_rootfs(distro, "podman", &c));
    eprintln!("{log}");
    assert!(!log.contains("note: the builder installed"), "{log}");
    // The %post ran in the container (and only there).
    assert_eq!(
        std::fs::read_to_string(c.join("var/lib/hello/state")).unwrap(),
        "configured\n"
    );
    assert!(!n.join("var/lib/hello").exists());
    let p = parity_by(rpm_list, RPM_OUTPUTS, &n, &c, HELLO_STATE);
    eprintln!("{distro}: {}", p.summary());
    assert_eq!(p.packages, 3, "{}", p.summary());
    assert!(p.unexplained.is_empty(), "{}", p.summary());
    let rec = std::fs::read_to_string(d.path().join("container.packages.json")).unwrap();
    assert!(
        rec.contains(&format!("\"distro\": \"{distro}\"")) && rec.contains("/Packages/hello-"),
        "{rec}"
    );
    rec
}

#[test]
fn clearlinux_native_and_podman_give_the_same_rootfs() {
    if !rpm_host_ready() {
        return;
    }
    let rec = rpm_parity("clearlinux");
    // Clear publishes unsigned packages and metadata: dnf is told so by the distro's own
    // declaration, and the record says so, as a native build's does.
    assert!(
        rec.contains("3 unsigned packages installed (Clear Linux OS publishes unsigned packages)")
            && rec.contains("repository metadata not signed"),
        "{rec}"
    );
}

#[test]
fn azurelinux_native_and_podman_give_the_same_rootfs_with_signatures_checked() {
    if !rpm_host_ready() {
        return;
    }
    let rec = rpm_parity("azurelinux");
    assert!(
        !rec.contains("unsigned") && !rec.contains("not signed"),
        "{rec}"
    );
}

#[test]
fn packages_signed_by_an_untrusted_key_fail_in_the_container_and_leave_nothing() {
    if !rpm_host_ready() {
        return;
    }
    let _one = one_build();
    let d = open_tempdir();
    let out = d.path().join("rootfs");
    let (res, pid) = run_with_pid(&mut rpm_rootfs_from("forged", "azurelinux", "podman", &out));
    let err = String::from_utf8_lossy(&res.stderr);
    assert_eq!(res.status.code(), Some(1), "{err}");
    assert!(
        err.contains("signed by") && err.contains("GPG check FAILED"),
        "{err}"
    );
    assert_eq!(containers_of(pid), Vec::<String>::new());
    only_in(d.path(), &[]);
}

#[test]
fn rpm_builders_check_signatures_unless_the_distro_publishes_unsigned() {
    // The dry run prints the container's script: no engine run, no image.
    if !can_run_podman() || !needs::tools(rpmrepo::TOOLS) {
        return;
    }
    let d = open_tempdir();
    let script = |distro: &str| {
        let mut c = osb();
        c.args([
            "rootfs",
            "--distro",
            distro,
            "--arch",
            "x86_64",
            "--dry-run",
        ])
        .args(["--builder", "podman", "--mirror", "http://127.0.0.1:9/m"])
        .arg("-o")
        .arg(d.path().join("r"));
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let azure = script("azurelinux");
    for want in [
        "--setopt=repo0.gpgcheck=1",
        "--setopt=repo0.repo_gpgcheck=1",
        // The metadata key is not handed to dnf: rpm-sequoia refuses its SHA-1 bindings.
        "repo0.gpgkey=file:///osbuilder/keys/01-MICROSOFT-RPM-GPG-KEY.asc install",
        "--repofrompath=repo0,http://127.0.0.1:9/m/azurelinux/3.0/prod/base/x86_64",
        "--installroot=/tmp/rootfs",
    ] {
        assert!(azure.contains(want), "{want} missing:\n{azure}");
    }
    let clear = script("clearlinux");
    assert!(
        clear.contains("--setopt=repo0.gpgcheck=0") && clear.contains("repo_gpgcheck=0"),
        "{clear}"
    );
    assert!(!clear.contains("nogpgcheck"), "{clear}");
}
