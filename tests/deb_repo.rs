//! Hermetic tests of the native Debian backend: a repository built and signed here,
//! served on 127.0.0.1, installed with `osbuilder rootfs`.

mod common;
mod deb_support;

use std::path::Path;

use deb_support::*;

const SUITE: &str = "testsuite";

/// A small universe: app → (libold (>= 2) | libnew), awk (virtual: mawk), base-passwd
/// with master files, an Essential package, a setuid file, a root:shadow file, a device.
fn universe() -> Vec<Pkg> {
    vec![
        pkg("app", "1.0-1", "amd64", "Depends: libold (>= 2) | libnew, awk\nPre-Depends: libc\n", &[
            E::Dir("./"),
            E::Dir("./usr/"),
            E::Dir("./usr/bin/"),
            E::File("./usr/bin/app", b"#!/bin/sh\necho app\n", 0o755, 0, 0),
            E::File("./usr/bin/app-suid", b"x", 0o4755, 0, 0),
            E::Dir("./etc/"),
            E::File("./etc/app.secret", b"s", 0o640, 0, 42),
            E::Dir("./dev/"),
            E::Char("./dev/appnull", 1, 3),
            E::Dir("./bin/"),
            E::Symlink("./bin/app-link", "/usr/bin/app"),
            E::HardLink("./usr/bin/app2", "./usr/bin/app"),
        ]),
        pkg("libold", "1.5", "amd64", "", &[E::File("./usr/lib/libold.so", b"old", 0o644, 0, 0)]),
        pkg("libnew", "3.0", "amd64", "Multi-Arch: same\n", &[E::File("./usr/lib/libnew.so", b"new", 0o644, 0, 0)]),
        pkg("libc", "2.41-1", "amd64", "", &[E::File("./usr/lib/libc.so.6", b"libc", 0o755, 0, 0)]),
        pkg_with_script("mawk", "1.3", "amd64", "Provides: awk\nPriority: required\n", &[
            E::File("./usr/bin/mawk", b"mawk", 0o755, 0, 0),
        ], Some("#!/bin/sh\nupdate-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5\n")),
        pkg("gawk", "5.0", "amd64", "Provides: awk\nPriority: optional\n", &[E::File("./usr/bin/gawk", b"gawk", 0o755, 0, 0)]),
        pkg("base-passwd", "3.6", "amd64", "Essential: yes\n", &[
            E::File("./usr/share/base-passwd/passwd.master", b"root:*:0:0:root:/root:/bin/sh\nnobody:*:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0o644, 0, 0),
            E::File("./usr/share/base-passwd/group.master", b"root:*:0:\nshadow:*:42:\nnogroup:*:65534:\n", 0o644, 0, 0),
        ]),
        pkg("ess", "1", "all", "Essential: yes\nPriority: required\n", &[E::File("./usr/bin/ess", b"e", 0o755, 0, 0)]),
    ]
}

fn repo(subdir: &str, arch: &str, pkgs: &[Pkg]) -> Repo {
    signed_repo(subdir, SUITE, arch, pkgs)
}

fn build(r: &Repo, distro: &str, arch: &str, extra: &[&str], out: &Path) -> (bool, String, String) {
    let mut c = osbuilder();
    c.args([
        "rootfs",
        "--distro",
        distro,
        "--arch",
        arch,
        "--os-version",
        SUITE,
    ])
    .arg("--mirror")
    .arg(&r.url)
    .arg("--keyring")
    .arg(&r.key.public)
    .arg("--cache-dir")
    .arg(r.dir.join("cache"))
    .args(extra)
    .arg("-o")
    .arg(out);
    run(&mut c)
}

#[test]
fn installs_from_a_signed_repository() {
    let r = repo("debian", "amd64", &universe());
    let out = r.dir.join("rootfs");
    let (ok, stdout, err) = build(
        &r,
        "debian",
        "amd64",
        &["--agent-init", "--packages", "app", "--dry-run"],
        &out,
    );
    assert!(ok, "{err}");
    let plan: Vec<&str> = stdout.lines().collect();
    assert_eq!(plan.len(), 4, "{stdout}");
    assert!(
        plan.contains(&"libnew 3.0 amd64 ".to_string().trim_end())
            || stdout.contains("libnew 3.0 amd64 "),
        "{stdout}"
    );
    assert!(stdout.contains("mawk 1.3 amd64"), "{stdout}");
    assert!(!out.exists(), "dry run must not create the rootfs");

    let (ok, _, err) = build(
        &r,
        "debian",
        "amd64",
        &["--agent-init", "--packages", "app,base-passwd"],
        &out,
    );
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(out.join("usr/bin/app2")).unwrap(),
        b"#!/bin/sh\necho app\n"
    );
    assert!(
        out.join("bin").is_symlink(),
        "merged /usr: /bin is a symlink"
    );
    assert_eq!(
        std::fs::read_link(out.join("usr/bin/app-link")).unwrap(),
        Path::new("/usr/bin/app")
    );
    assert_eq!(
        std::fs::read_link(out.join("usr/bin/awk")).unwrap(),
        Path::new("/etc/alternatives/awk")
    );
    assert_eq!(
        std::fs::read_link(out.join("etc/alternatives/awk")).unwrap(),
        Path::new("/usr/bin/mawk")
    );
    assert!(
        !out.join("usr/lib/libold.so").exists(),
        "libold 1.5 does not satisfy >= 2"
    );
    let passwd = std::fs::read_to_string(out.join("etc/passwd")).unwrap();
    assert!(
        passwd.starts_with("root:x:0:0:root:/root:/bin/sh\n"),
        "{passwd}"
    );
    assert_eq!(std::fs::read(out.join("etc/machine-id")).unwrap(), b"");

    // dpkg itself reads the database.
    let q = std::process::Command::new("dpkg-query")
        .arg(format!("--admindir={}", out.join("var/lib/dpkg").display()))
        .args(["-W", "-f", "${Package} ${Version} ${Status}\n"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&q.stdout);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    for want in [
        "app 1.0-1 install ok installed",
        "libnew 3.0 install ok installed",
        "mawk 1.3 install ok installed",
    ] {
        assert!(listed.contains(want), "{listed}");
    }
    let files = std::process::Command::new("dpkg-query")
        .arg(format!("--admindir={}", out.join("var/lib/dpkg").display()))
        .args(["-L", "libnew"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&files.stdout).contains("/usr/lib/libnew.so"));
    let audit = std::process::Command::new("dpkg")
        .arg(format!("--admindir={}", out.join("var/lib/dpkg").display()))
        .arg("--audit")
        .output()
        .unwrap();
    assert!(
        audit.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );

    // The record beside the rootfs.
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(r.dir.join("rootfs.packages.json")).unwrap())
            .unwrap();
    let pk = rec["packages"].as_array().unwrap();
    assert_eq!(pk.len(), 5);
    let app = pk.iter().find(|p| p["name"] == "app").unwrap();
    assert_eq!(
        app["sha256"],
        sha256(&std::fs::read(r.dir.join("www/debian/pool/main/app_1.0-1_amd64.deb")).unwrap())
    );

    // The default init mode (systemd) pulls in the Essential/required set.
    let out2 = r.dir.join("rootfs-systemd");
    let (ok, stdout, err) = build(
        &r,
        "debian",
        "amd64",
        &["--packages", "app", "--dry-run"],
        &out2,
    );
    assert!(ok, "{err}");
    assert!(
        stdout.contains("ess 1 all") && stdout.contains("base-passwd"),
        "{stdout}"
    );

    // An unsatisfiable request names the chain.
    let (ok, _, err) = build(
        &r,
        "debian",
        "amd64",
        &["--agent-init", "--packages", "nosuch", "--dry-run"],
        &out2,
    );
    assert!(!ok && err.contains("nosuch"), "{err}");
}

#[test]
fn tampering_is_rejected() {
    let r = repo("debian", "amd64", &universe());
    let root = r.dir.join("www/debian");
    let dists = root.join("dists").join(SUITE);
    let out = r.dir.join("rootfs");
    let args = ["--agent-init", "--packages", "app"];

    // A repository signed by a key nobody trusts.
    let mut c = osbuilder();
    c.args([
        "rootfs",
        "--distro",
        "debian",
        "--arch",
        "amd64",
        "--os-version",
        SUITE,
        "--mirror",
        &r.url,
    ])
    .arg("--cache-dir")
    .arg(r.dir.join("cache"))
    .args(args)
    .arg("-o")
    .arg(&out);
    let (ok, _, err) = run(&mut c);
    assert!(!ok && err.contains("signature"), "{err}");

    // InRelease altered after signing.
    let orig = std::fs::read_to_string(dists.join("InRelease")).unwrap();
    std::fs::write(
        dists.join("InRelease"),
        orig.replace("Origin: Test", "Origin: Evil"),
    )
    .unwrap();
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &out);
    assert!(!ok && err.contains("signature"), "{err}");
    std::fs::write(dists.join("InRelease"), &orig).unwrap();

    // A Packages index that is not the one Release lists.
    let idx = dists.join("main/binary-amd64/Packages.gz");
    let good_idx = std::fs::read(&idx).unwrap();
    let mut bad = good_idx.clone();
    let n = bad.len();
    bad[n - 5] ^= 0xff;
    std::fs::write(&idx, &bad).unwrap();
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &out);
    assert!(!ok && err.contains("mismatch"), "{err}");
    std::fs::write(&idx, &good_idx).unwrap();

    // A .deb swapped on the mirror.
    let deb = root.join("pool/main/app_1.0-1_amd64.deb");
    let mut d = std::fs::read(&deb).unwrap();
    let n = d.len();
    d[n - 10] ^= 0xff;
    std::fs::write(&deb, &d).unwrap();
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &out);
    assert!(!ok && err.contains("mismatch"), "{err}");
    assert!(
        !out.exists(),
        "a failed build leaves no rootfs under the final name"
    );

    // Expired metadata (Valid-Until in the past), correctly signed.
    let key = &r.key;
    let rel = std::fs::read_to_string(dists.join("Release")).unwrap();
    let stale = rel.replace("Date:", "Valid-Until: Sat, 01 Nov 2025 01:00:00 UTC\nDate:");
    std::fs::write(dists.join("InRelease"), clearsign(key, stale.as_bytes())).unwrap();
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &out);
    assert!(!ok && err.contains("Valid-Until"), "{err}");

    // No InRelease: Release + Release.gpg is used, and checked.
    std::fs::remove_file(dists.join("InRelease")).unwrap();
    let sig = std::process::Command::new("gpg")
        .env("GNUPGHOME", &key.home)
        .args(["--batch", "--quiet", "--detach-sign", "--armor", "-o", "-"])
        .arg(dists.join("Release"))
        .output()
        .unwrap();
    std::fs::write(dists.join("Release.gpg"), &sig.stdout).unwrap();
    std::fs::write(&deb, make_good_again(&r)).unwrap();
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &out);
    assert!(ok, "{err}");
    std::fs::write(
        dists.join("Release"),
        rel.replace("Origin: Test", "Origin: Evil"),
    )
    .unwrap();
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &r.dir.join("rootfs2"));
    assert!(!ok && err.contains("signature"), "{err}");
}

fn make_good_again(_r: &Repo) -> Vec<u8> {
    universe()
        .into_iter()
        .find(|p| p.name == "app")
        .unwrap()
        .deb
}

#[test]
fn hostile_packages_leave_nothing_outside_the_root() {
    let hostile: Vec<(&str, Vec<E>)> = vec![
        (
            "dotdot",
            vec![E::File("./../../outside-dotdot", b"x", 0o644, 0, 0)],
        ),
        (
            "absolute",
            vec![E::File(
                "/tmp/osbuilder-test-absolute-escape",
                b"x",
                0o644,
                0,
                0,
            )],
        ),
        (
            "symlink",
            vec![
                E::Symlink("./esc", "../../../../../../../../tmp"),
                E::File("./esc/osbuilder-test-symlink-escape", b"x", 0o644, 0, 0),
            ],
        ),
        (
            "hardlink",
            vec![E::HardLink(
                "./passwd-copy",
                "../../../../../../../../etc/passwd",
            )],
        ),
    ];
    let mut pkgs: Vec<Pkg> = hostile
        .iter()
        .map(|(n, e)| pkg(n, "1", "amd64", "", e))
        .collect();
    // A later package escaping through a symlink an earlier package planted.
    pkgs.push(pkg(
        "aplanter",
        "1",
        "amd64",
        "",
        &[E::Symlink("./usr/share/trap", "../../../../../../../tmp")],
    ));
    pkgs.push(pkg(
        "follower",
        "1",
        "amd64",
        "Depends: aplanter\n",
        &[E::File(
            "./usr/share/trap/osbuilder-test-planted",
            b"x",
            0o644,
            0,
            0,
        )],
    ));
    let r = repo("debian", "amd64", &pkgs);
    let before: Vec<_> = std::fs::read_dir(&r.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    for name in ["dotdot", "absolute", "symlink", "hardlink", "follower"] {
        let out = r.dir.join(format!("rootfs-{name}"));
        let (ok, _, err) = build(
            &r,
            "debian",
            "amd64",
            &["--agent-init", "--packages", name],
            &out,
        );
        assert!(!ok, "hostile package {name} was installed");
        assert!(
            err.contains("refus") || err.contains("climbs") || err.contains("outside"),
            "{name}: {err}"
        );
        assert!(!out.exists());
    }
    for p in [
        "/tmp/osbuilder-test-absolute-escape",
        "/tmp/osbuilder-test-symlink-escape",
        "/tmp/osbuilder-test-planted",
    ] {
        assert!(!Path::new(p).exists(), "{p} was written outside the root");
    }
    assert!(!r.dir.parent().unwrap().join("outside-dotdot").exists());
    let after: Vec<_> = std::fs::read_dir(&r.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "cache")
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "no stray output beside the repo: {after:?}"
    );
}

#[test]
fn ubuntu_ports_layout_for_arm64() {
    let pkgs = vec![
        pkg_zst(
            "hello",
            "2.10-3",
            "arm64",
            "Depends: libc6 (>= 2.34)\n",
            &[E::File("./usr/bin/hello", b"\x7fELF", 0o755, 0, 0)],
        ),
        pkg_zst(
            "libc6",
            "2.42-0ubuntu1",
            "arm64",
            "Multi-Arch: same\n",
            &[E::File(
                "./usr/lib/aarch64-linux-gnu/libc.so.6",
                b"c",
                0o755,
                0,
                0,
            )],
        ),
        pkg(
            "base-files",
            "14ubuntu1",
            "arm64",
            "Essential: yes\n",
            &[E::File(
                "./usr/lib/os-release",
                b"NAME=\"Ubuntu\"\n",
                0o644,
                0,
                0,
            )],
        ),
    ];
    let r = repo("ubuntu-ports", "arm64", &pkgs);
    let out = r.dir.join("ubuntu-rootfs");
    let (ok, _, err) = build(
        &r,
        "ubuntu",
        "arm64",
        // arm64 on this host: no reference agent for it, and the packages are under test.
        &[
            "--agent-init",
            "--no-agent",
            "--packages",
            "hello,base-files",
        ],
        &out,
    );
    assert!(ok, "{err}");
    assert!(out.join("usr/bin/hello").exists());
    assert!(out.join("usr/lib/aarch64-linux-gnu/libc.so.6").exists());
    let rec = std::fs::read_to_string(r.dir.join("ubuntu-rootfs.packages.json")).unwrap();
    assert!(
        rec.contains("\"distro\": \"ubuntu\"") && rec.contains("ubuntu-ports/pool/main/hello"),
        "{rec}"
    );
    // The ports mirror has no amd64: the error says where amd64 lives.
    let (ok, _, err) = build(
        &r,
        "ubuntu",
        "amd64",
        &["--agent-init", "--packages", "hello"],
        &r.dir.join("x"),
    );
    assert!(!ok && err.contains("ports"), "{err}");
}

#[test]
fn unprivileged_build_records_ownership_in_the_mtree() {
    if !common::needs::root() {
        return;
    }
    let r = repo("debian", "amd64", &universe());
    let work = r.dir.join("nobody");
    std::fs::create_dir(&work).unwrap();
    std::process::Command::new("chown")
        .arg("65534:65534")
        .arg(&work)
        .status()
        .unwrap();
    let out = work.join("rootfs");
    let mut c = std::process::Command::new("setpriv");
    c.args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_osbuilder"))
        .args([
            "rootfs",
            "--distro",
            "debian",
            "--arch",
            "amd64",
            "--os-version",
            SUITE,
            "--agent-init",
            "--packages",
            "app,base-passwd",
        ])
        .arg("--mirror")
        .arg(&r.url)
        .arg("--keyring")
        .arg(&r.key.public)
        .arg("--cache-dir")
        .arg(work.join("cache"))
        .arg("-o")
        .arg(&out)
        .env("HOME", &work)
        .env_remove("OSBUILDER_MIRROR");
    let (ok, _, err) = run(&mut c);
    assert!(ok, "{err}");
    let mtree = std::fs::read_to_string(work.join("rootfs.mtree")).unwrap();
    let line = |p: &str| {
        mtree
            .lines()
            .find(|l| l.split_whitespace().next() == Some(p))
            .unwrap_or_else(|| panic!("{p} not in mtree"))
    };
    assert!(
        line("./usr/bin/app").contains("uid=0 gid=0 mode=0755"),
        "{}",
        line("./usr/bin/app")
    );
    assert!(line("./usr/bin/app-suid").contains("mode=4755"));
    assert!(line("./etc/app.secret").contains("gid=42 mode=0640"));
    assert!(
        line("./dev/appnull").contains("type=char")
            && line("./dev/appnull").contains("device=native,1,3")
    );
    assert!(line("./etc/shadow").contains("uid=0 gid=42 mode=0640"));
    assert!(
        !out.join("dev/appnull").exists(),
        "no device node on disk when unprivileged"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(out.join("usr/bin/app")).unwrap().uid(),
        65534
    );
    // The packers' view: the tree model merges the mtree and sees root ownership.
    let (meta, _) = osbuilder::tree::load_metadata_for(&out, None).unwrap();
    let tree = osbuilder::tree::Tree::scan(
        &out,
        &osbuilder::tree::ScanOptions {
            metadata: meta,
            ..Default::default()
        },
    )
    .unwrap();
    let app = tree.get(b"usr/bin/app").unwrap();
    assert_eq!((app.uid, app.gid), (0, 0));
}

/// Every path with its type, mode, mtime, size and content digest.
fn fingerprint(root: &Path) -> Vec<String> {
    let out = std::process::Command::new("find")
        .arg(".")
        .args(["-printf", "%p %y %m %T@ %s %l\n"])
        .current_dir(root)
        .output()
        .unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let p = root.join(l.split(' ').next().unwrap());
            if p.is_file() && !p.is_symlink() {
                format!("{l} {}", sha256(&std::fs::read(&p).unwrap()))
            } else {
                l.to_string()
            }
        })
        .collect();
    lines.sort();
    lines
}

#[test]
fn rebuilds_are_identical_and_a_corrupt_cache_heals() {
    let r = repo("debian", "amd64", &universe());
    let a = r.dir.join("a");
    let b = r.dir.join("b");
    let args = ["--agent-init", "--packages", "app,base-passwd"];
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &a);
    assert!(ok, "{err}");
    // Corrupt every cached file: each must be discarded and fetched again.
    for entry in walk(&r.dir.join("cache")) {
        std::fs::write(&entry, b"garbage").unwrap();
    }
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &b);
    assert!(ok, "{err}");
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(fingerprint(&a), fingerprint(&b));
    assert_eq!(
        std::fs::read(r.dir.join("a.packages.json")).unwrap().len(),
        std::fs::read(r.dir.join("b.packages.json")).unwrap().len()
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn zstd_payloads_are_read() {
    // Guard against the ubuntu test silently using another compression.
    let p = pkg_zst("z", "1", "arm64", "", &[E::File("./z", b"z", 0o644, 0, 0)]);
    assert!(p.deb.windows(12).any(|w| w == b"data.tar.zst"));
}

#[test]
fn unsupported_combinations_are_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--distro", "clearlinux", "--arch", "s390x"][..],
        &["--distro", "alpine", "--systemd"][..],
        &["--distro", "nosuch"][..],
    ] {
        let out = osbuilder()
            .arg("rootfs")
            .args(args)
            .args(["--mirror", "http://127.0.0.1:9/unused", "-o"])
            .arg(dir.path().join("r"))
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// A killed rebuild leaves `.rootfs.partial-PID` and `.rootfs.old-PID` beside the output: the
/// next build sweeps them and succeeds, and the record beside the tree is the new tree's.
#[test]
fn leftovers_of_killed_builds_do_not_block_a_rebuild() {
    let r = repo("debian", "amd64", &universe());
    let out = r.dir.join("rootfs");
    let args = [
        "--agent-init",
        "--no-agent",
        "--packages",
        "app,base-passwd",
    ];
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &out);
    assert!(ok, "{err}");
    let dead = 999_999_999u32;
    for tag in ["partial", "old"] {
        let p = r.dir.join(format!(".rootfs.{tag}-{dead}"));
        std::fs::create_dir_all(p.join("usr/bin")).unwrap();
        std::fs::write(p.join("usr/bin/stale"), "x").unwrap();
    }
    std::fs::write(
        r.dir.join(format!(".rootfs.packages.json.partial-{dead}")),
        "{",
    )
    .unwrap();
    let (ok, _, err) = build(&r, "debian", "amd64", &args, &out);
    assert!(ok, "{err}");
    let names: Vec<String> = std::fs::read_dir(&r.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".rootfs"))
        .collect();
    assert!(names.is_empty(), "not swept: {names:?}");
    let rec = std::fs::read_to_string(r.dir.join("rootfs.packages.json")).unwrap();
    assert!(rec.contains("\"app\""), "{rec}");
    assert!(out.join("usr/bin/app").exists());
}
