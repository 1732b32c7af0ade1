//! End to end, hermetic: a synthetic signed Alpine repository (test key, packages built
//! here, Debian's static busybox inside) served on 127.0.0.1 → `osbuilder rootfs --distro
//! alpine` → a rootfs with apk's database and busybox links → `osbuilder initrd` →
//! checked with GNU cpio; booted under QEMU when a kernel is given.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::apkrepo;
use osbuilder::tree::{Kind, ScanOptions, Tree};

fn osbuilder() -> Command {
    Command::new(env!("CARGO_BIN_EXE_osbuilder"))
}

fn run_ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{c:?} failed:\n{stderr}");
    eprintln!("{stderr}");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn synthetic_repository_builds_an_agent_init_rootfs_that_packs_into_an_initrd() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    let e = apkrepo::sample(true);
    let out = e.dir.join("out/rootfs");
    std::fs::create_dir(e.dir.join("out")).unwrap();

    // The plan first.
    let plan = run_ok(e.rootfs(&out).arg("--dry-run"));
    let lines: Vec<&str> = plan.lines().collect();
    assert_eq!(lines.len(), 7, "{plan}");
    assert!(
        lines.iter().any(|l| l.starts_with("libosb 1.0-r0 x86_64 ")),
        "{plan}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("busybox-doc 1.35.0-r99 noarch ")),
        "{plan}"
    );
    let pos = |n: &str| {
        lines
            .iter()
            .position(|l| l.split(' ').next() == Some(n))
            .unwrap()
    };
    assert!(pos("busybox") < pos("alpine-base") && pos("alpine-baselayout") < pos("alpine-base"));
    assert!(pos("alpine-baselayout-data") < pos("alpine-baselayout"));
    assert!(pos("libosb") < pos("busybox") && pos("busybox") < pos("busybox-doc"));
    assert!(!out.exists(), "--dry-run wrote the rootfs");

    run_ok(&mut e.rootfs(&out));
    let r = |p: &str| out.join(p);
    assert!(r("bin/busybox").is_file());
    assert_eq!(
        std::fs::read_link(r("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    // Provisioned: the agent is PID 1 (/sbin/init, with /init), not busybox's init.
    assert_eq!(
        std::fs::read(r("sbin/init")).unwrap(),
        osbuilder::agent::reference_agent()
    );
    assert_eq!(
        std::fs::read_link(r("init")).unwrap(),
        Path::new("/sbin/init")
    );
    assert!(r("var/lib/osbuilder/osbuilder.yaml").is_file());
    assert_eq!(
        std::fs::read_link(r("bin/ls")).unwrap(),
        Path::new("/bin/busybox")
    );
    // A package's own file is never replaced by an applet link.
    assert!(r("etc/securetty").is_file());
    assert_eq!(
        std::fs::read_to_string(r("etc/apk/world")).unwrap(),
        "alpine-base\n"
    );
    assert_eq!(
        std::fs::read_to_string(r("etc/apk/repositories")).unwrap(),
        format!("{}/v3.22/main\n", e.mirror)
    );
    assert_eq!(
        std::fs::read_to_string(r("etc/apk/arch")).unwrap(),
        "x86_64\n"
    );
    assert!(r(&format!("etc/apk/keys/{}", apkrepo::KEY_NAME)).is_file());
    let db = std::fs::read_to_string(r("lib/apk/db/installed")).unwrap();
    assert_eq!(
        db.matches("\nP:").count() + db.starts_with("P:") as usize,
        7,
        "{db}"
    );
    assert!(db.contains("P:busybox\nV:1.35.0-r99\nA:x86_64\n"), "{db}");
    assert!(db.contains("F:bin\nR:busybox\na:0:0:755\nZ:Q1"), "{db}");
    assert!(db.contains("F:etc/crontabs\nR:root\na:0:0:600\n"), "{db}");
    assert!(db.contains("F:tmp\nM:0:0:1777\n"), "{db}");
    // Scripts are kept for apk, not run.
    let scripts = Command::new("tar")
        .arg("-tf")
        .arg(r("lib/apk/db/scripts.tar"))
        .output()
        .unwrap();
    let scripts = String::from_utf8_lossy(&scripts.stdout);
    assert!(
        scripts
            .lines()
            .any(|l| l.starts_with("busybox-1.35.0-r99.Q1") && l.ends_with(".post-install")),
        "{scripts}"
    );

    // Ownership and modes, through the metadata beside the rootfs (a root build applies
    // them on disk and writes none).
    let mtree = PathBuf::from(format!("{}.mtree", out.display()));
    let (metadata, _) = osbuilder::tree::load_metadata_for(&out, None).unwrap();
    let tree = Tree::scan(
        &out,
        &ScanOptions {
            metadata,
            all_root: false,
            clamp_mtime: None,
        },
    )
    .unwrap();
    let get = |p: &str| {
        tree.get(p.as_bytes())
            .unwrap_or_else(|| panic!("{p} not in tree"))
    };
    assert_eq!((get("etc/shadow").gid, get("etc/shadow").perm), (42, 0o640));
    assert_eq!(get("tmp").perm, 0o1777);
    assert_eq!(get("root").perm, 0o700);
    assert_eq!(get("bin/busybox").uid, 0);
    assert!(
        matches!(get("dev/console").kind, Kind::CharDev { .. }),
        "{:?}",
        get("dev/console").kind
    );

    // The package record beside it.
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.packages.json", out.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(rec["distro"], "alpine");
    assert_eq!(rec["arch"], "x86_64");
    assert_eq!(rec["packages"].as_array().unwrap().len(), 7);
    assert!(
        !e.dir.join("out").read_dir().unwrap().any(|f| f
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("partial"))
    );

    // Pack and check with GNU cpio.
    let initrd = e.dir.join("initrd.gz");
    run_ok(
        osbuilder()
            .arg("initrd")
            .arg(&out)
            .arg("-o")
            .arg(&initrd)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -dc {} | cpio -itv --quiet", initrd.display()))
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "cpio failed: {}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" bin/busybox") && l.starts_with("-rwxr-xr-x")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.ends_with(" sbin/init") && l.starts_with("-rwxr-xr-x")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("crw") && l.ends_with(" dev/console")),
        "{listing}"
    );
    assert!(
        listing.lines().any(|l| l.contains(" lib/apk/db/installed")),
        "{listing}"
    );

    boot_if_possible(&initrd);

    // Reproducible: the same inputs and SOURCE_DATE_EPOCH give the same initrd.
    let out2 = e.dir.join("out/rootfs2");
    run_ok(&mut e.rootfs(&out2));
    let initrd2 = e.dir.join("initrd2.gz");
    run_ok(
        osbuilder()
            .arg("initrd")
            .arg(&out2)
            .arg("-o")
            .arg(&initrd2)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
    );
    let read = |p: &Path| std::fs::read(p).unwrap();
    assert!(read(&initrd) == read(&initrd2), "initrd not reproducible");
    let mtree2 = PathBuf::from(format!("{}.mtree", out2.display()));
    assert!(
        mtree.exists() == mtree2.exists() && (!mtree.exists() || read(&mtree) == read(&mtree2)),
        "rootfs metadata not reproducible"
    );
    assert!(read(&out.join("lib/apk/db/installed")) == read(&out2.join("lib/apk/db/installed")));
}

/// Boot the initrd under QEMU (TCG) with Debian's kernel (`osbuilder kernel fetch`) and
/// wait for the agent's ready line: the Alpine rootfs boots to the agent.
fn boot_if_possible(initrd: &Path) {
    let Some(kernel) = common::kernel::kernel("x86_64") else {
        return;
    };
    let out = run_ok(
        osbuilder()
            .args(["boot", "--poweroff", "--timeout", "120", "--kernel"])
            .arg(&kernel)
            .arg("--initrd")
            .arg(initrd),
    );
    assert!(out.contains("ready after"), "{out}");
    eprintln!("booted the Alpine initrd to the agent: {out}");
}

#[test]
fn applet_links_come_from_the_binary_when_no_list_is_shipped() {
    let e = apkrepo::sample(false);
    let out = e.dir.join("rootfs");
    let stderr = {
        let o = e.rootfs(&out).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    assert!(stderr.contains("applet table"), "{stderr}");
    // (sbin/init is the agent: provisioning replaced busybox's init link.)
    for p in ["bin/sh", "bin/ls", "sbin/poweroff", "usr/bin/awk"] {
        assert_eq!(
            std::fs::read_link(out.join(p)).unwrap(),
            Path::new("/bin/busybox"),
            "{p}"
        );
    }
}

#[test]
fn a_tampered_index_stops_the_build() {
    let e = apkrepo::sample(true);
    let idx = e.dir.join("www/v3.22/main/x86_64/APKINDEX.tar.gz");
    // Re-sign the index with a key the build does not trust.
    let bytes = std::fs::read(&idx).unwrap();
    let members = osbuilder::pkg::apk::sign::gzip_members(&bytes).unwrap();
    let body = &bytes[members[1].clone()];
    let mut forged = apkrepo::sign_segment(apkrepo::other_key(), apkrepo::KEY_NAME, body);
    forged.extend_from_slice(body);
    std::fs::write(&idx, forged).unwrap();
    let out = e.dir.join("rootfs");
    let o = e.rootfs(&out).arg("--dry-run").output().unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("signature verification failed"), "{err}");
    assert!(!out.exists());
}

#[test]
fn systemd_is_refused_before_any_work() {
    let o = osbuilder()
        .args([
            "rootfs",
            "--distro",
            "alpine",
            "--systemd",
            "-o",
            "/nonexistent/x",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("systemd"), "{err}");
}

/// The same build as an unprivileged user (setpriv to nobody): ownership, modes and
/// device nodes go to the metadata, and the packed initrd still has them.
#[test]
fn unprivileged_build_records_ownership_in_the_metadata() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    if !common::needs::root() {
        return;
    }
    let e = apkrepo::sample(true);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&e.dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = e.dir.join("rootfs");
    let mut c = common::osbuilder_as_nobody();
    let inner = e.rootfs(&out);
    c.args(inner.get_args())
        .env("OSBUILDER_CACHE_DIR", e.dir.join("cache-nobody"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .env("HOME", &e.dir);
    run_ok(&mut c);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(out.join("bin/busybox")).unwrap().uid(),
        65534
    );
    assert!(
        !out.join("dev/console").exists(),
        "a rootless build cannot mknod"
    );
    let mtree = std::fs::read_to_string(format!("{}.mtree", out.display())).unwrap();
    let line = |p: &str| {
        mtree
            .lines()
            .find(|l| l.starts_with(&format!("./{p} ")))
            .unwrap_or_else(|| panic!("{p} not in the metadata:\n{mtree}"))
            .to_string()
    };
    let shadow = line("etc/shadow");
    assert!(
        shadow.contains("gid=42") && shadow.contains("mode=0640"),
        "{shadow}"
    );
    let console = line("dev/console");
    assert!(
        console.contains("type=char") && console.contains("device="),
        "{console}"
    );
    assert!(line("bin/busybox").contains("uid=0"));
    let initrd = e.dir.join("initrd.gz");
    run_ok(osbuilder().arg("initrd").arg(&out).arg("-o").arg(&initrd));
    let listing = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "gzip -dc {} | cpio -itv --quiet -n",
            initrd.display()
        ))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let find = |p: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {p}")))
            .unwrap_or_else(|| panic!("{p} not in:\n{listing}"))
            .to_string()
    };
    assert!(
        find("etc/shadow").starts_with("-rw-r-----   1 0        42 "),
        "{}",
        find("etc/shadow")
    );
    assert!(
        find("bin/busybox").contains(" 0        0 "),
        "{}",
        find("bin/busybox")
    );
    assert!(
        find("dev/console").starts_with("crw-------"),
        "{}",
        find("dev/console")
    );
}
