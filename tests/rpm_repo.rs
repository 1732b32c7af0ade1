//! The native rpm backend end to end, hermetic: rpm-md repositories built here with the
//! real tools (rpmbuild, rpmsign, createrepo_c, gpg) and served on 127.0.0.1 in the
//! layouts of Clear Linux (unsigned, as Clear publishes) and Azure Linux (packages and
//! repomd.xml signed), then `osbuilder rootfs --distro clearlinux --agent-init` (packed,
//! booted to the agent under QEMU, rebuilt identically, listed by `rpm -qa`) and
//! `--distro azurelinux` (Kata's package set resolved; a signed install checked with rpm),
//! and hostile packages written by hand refused with nothing written outside the root.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use common::needs;
use common::rpmrepo::{self, CEntry, F, Gpg, HFile, Spec};

const CLEAR_VERSION: &str = "43000";

struct Repos {
    dir: PathBuf,
    url: String,
    key: Gpg,
    /// A key that signed nothing here.
    other: Gpg,
}

/// Kata's `kata-packages-uvm` requirements (Azure Linux 3.0).
const UVM: [&str; 23] = [
    "bash",
    "ca-certificates",
    "chrony",
    "cpio",
    "cryptsetup",
    "curl",
    "dbus",
    "elfutils-libelf",
    "grep",
    "gzip",
    "iptables",
    "iproute",
    "iputils",
    "irqbalance",
    "lvm2",
    "lz4",
    "procps-ng",
    "readline",
    "sed",
    "tar",
    "tzdata",
    "util-linux",
    "zlib",
];

fn clear_specs() -> Vec<Spec<'static>> {
    let passwd: &'static [u8] =
        b"root:x:0:0:root:/root:/bin/sh\nchrony:x:992:991::/var/lib/chrony:/sbin/nologin\nnobody:x:65534:65534::/:/sbin/nologin\n";
    let group: &'static [u8] = b"root:x:0:\nchrony:x:991:\nnobody:x:65534:\n";
    vec![
        Spec::new("filesystem", "x86_64")
            .file(F::Dir("/usr"))
            .file(F::Dir("/usr/bin"))
            .file(F::Dir("/usr/sbin"))
            .file(F::Dir("/usr/lib64"))
            .file(F::Dir("/usr/share/defaults/etc"))
            .file(F::Dir("/etc"))
            .file(F::Dir("/var/lib"))
            .file(F::Symlink("/bin", "usr/bin"))
            .file(F::Symlink("/sbin", "usr/sbin"))
            .file(F::Symlink("/lib64", "usr/lib64"))
            .file(F::File(
                "/usr/share/defaults/etc/passwd",
                passwd,
                0o644,
                "root",
                "root",
            ))
            .file(F::File(
                "/usr/share/defaults/etc/group",
                group,
                0o644,
                "root",
                "root",
            ))
            .file(F::CharDev("/dev/console", 5, 1)),
        Spec {
            scripts: vec![("post", "<lua>", "print('filesystem done')")],
            ..Spec::new("busybox", "x86_64")
                .dep("Requires: filesystem")
                .dep("Provides: /bin/sh")
                .file(F::Host("/usr/bin/busybox", "/bin/busybox"))
                .file(F::Symlink("/usr/bin/sh", "busybox"))
        },
        Spec::new("libseccomp", "x86_64")
            .dep("Provides: libseccomp.so.2()(64bit)")
            .dep("Requires: filesystem")
            .file(F::File(
                "/usr/lib64/libseccomp.so.2",
                b"\x7fELF seccomp",
                0o755,
                "root",
                "root",
            )),
        Spec::new("iptables-bin", "x86_64")
            .dep("Requires: libseccomp.so.2()(64bit)")
            .dep("Requires: /usr/bin/sh")
            .dep("Requires: (busybox or toybox)")
            .file(F::File(
                "/usr/bin/iptables",
                b"#!/bin/sh\necho iptables\n",
                0o755,
                "root",
                "root",
            )),
        Spec::new("kmod-bin", "x86_64")
            .dep("Requires: filesystem")
            // A file require primary.xml does not list (only filelists.xml does).
            .dep("Requires: /usr/lib64/libkmod.so.2")
            .file(F::File(
                "/usr/bin/kmod",
                b"kmod binary",
                0o755,
                "root",
                "root",
            ))
            .file(F::HardLink("/usr/bin/modprobe", "/usr/bin/kmod")),
        Spec::new("libkmod", "x86_64").file(F::File(
            "/usr/lib64/libkmod.so.2",
            b"\x7fELF kmod",
            0o755,
            "root",
            "root",
        )),
        Spec::new("libudev0-shim", "x86_64")
            .dep("Requires: (filesystem if busybox)")
            .file(F::File(
                "/usr/lib64/libudev.so.0",
                b"udev shim",
                0o755,
                "root",
                "root",
            ))
            .file(F::File(
                "/var/lib/chrony/drift",
                b"0.0\n",
                0o640,
                "chrony",
                "chrony",
            ))
            .file(F::File(
                "/var/lib/shim/state",
                b"x",
                0o644,
                "nosuchuser",
                "root",
            ))
            .file(F::Config("/etc/udev/shim.conf", b"# shim\n"))
            .file(F::Ghost("/var/log/shim.log")),
        // Only when asked for: file capabilities and a <lua> scriptlet.
        Spec {
            scripts: vec![("post", "<lua>", "print('ping ready')")],
            ..Spec::new("iputils-ping", "x86_64")
                .dep("Requires: filesystem")
                .file(F::Caps("/usr/bin/ping", b"ping", "cap_net_raw=ep"))
        },
        // Never installed: a package the resolver must not pick for `toybox`.
        Spec::new("toybox", "x86_64").file(F::File(
            "/usr/bin/toybox",
            b"toybox",
            0o755,
            "root",
            "root",
        )),
    ]
}

fn azure_specs() -> Vec<Spec<'static>> {
    let mut uvm = Spec::new("kata-packages-uvm", "x86_64").dep("Requires: filesystem");
    for n in UVM {
        uvm = uvm.dep(&format!("Requires: {n}"));
    }
    let mut v = vec![
        Spec::new("filesystem", "x86_64")
            .file(F::Dir("/usr/bin"))
            .file(F::Dir("/usr/lib"))
            .file(F::Symlink("/bin", "usr/bin"))
            .file(F::Symlink("/lib", "usr/lib"))
            .file(F::File(
                "/etc/passwd",
                b"root:x:0:0:root:/root:/bin/bash\n",
                0o644,
                "root",
                "root",
            ))
            .file(F::File("/etc/group", b"root:x:0:\n", 0o644, "root", "root")),
        uvm.file(F::File(
            "/usr/share/kata-packages-uvm/README",
            b"meta\n",
            0o644,
            "root",
            "root",
        )),
        Spec::new("e2fsprogs", "x86_64").file(F::File(
            "/usr/sbin/mke2fs",
            b"mke2fs",
            0o755,
            "root",
            "root",
        )),
        Spec::new("libseccomp", "x86_64").file(F::File(
            "/usr/lib/libseccomp.so.2",
            b"seccomp",
            0o755,
            "root",
            "root",
        )),
        Spec::new("systemd", "x86_64")
            .dep("Requires: dbus")
            .dep("Requires: (util-linux >= 1.0 and bash)")
            .file(F::File(
                "/usr/lib/systemd/systemd",
                b"\x7fELF systemd",
                0o755,
                "root",
                "root",
            )),
    ];
    for n in UVM {
        let mut s = Spec::new(n, "x86_64").dep("Requires: filesystem");
        s = match n {
            "bash" => s.dep("Provides: /bin/sh").file(F::File(
                "/usr/bin/bash",
                b"bash",
                0o755,
                "root",
                "root",
            )),
            "curl" => s.dep("Requires: zlib").dep("Requires: ca-certificates"),
            "iputils" => s.file(F::Caps("/usr/bin/ping", b"ping", "cap_net_raw=ep")),
            "grep" | "sed" => s.dep("Requires: /bin/sh"),
            _ => s,
        };
        let doc: &'static str = Box::leak(format!("/usr/share/doc/{n}/README").into_boxed_str());
        v.push(s.file(F::File(doc, b"doc\n", 0o644, "root", "root")));
    }
    v
}

/// Hand-written signed packages that rpmbuild would never make.
fn hostile(key: &Gpg) -> Vec<(&'static str, Vec<u8>)> {
    let honest = |files: &[HFile]| -> Vec<CEntry> { files.iter().map(CEntry::of).collect() };
    let mut v = Vec::new();
    let f = [HFile::file(
        "/../../../../../../tmp/osbuilder-rpm-dotdot",
        b"x",
    )];
    v.push((
        "hostile-dotdot",
        rpmrepo::hand_rpm("hostile-dotdot", &f, &honest(&f), key),
    ));
    let f = [HFile::file("/tmp/osbuilder-rpm-absolute", b"x")];
    let mut c = honest(&f);
    c[0].name = "/tmp/osbuilder-rpm-absolute".into();
    v.push((
        "hostile-absolute",
        rpmrepo::hand_rpm("hostile-absolute", &f, &c, key),
    ));
    let f = [
        HFile::symlink("/esc", "../../../../../../../../tmp"),
        HFile::file("/esc/osbuilder-rpm-symlink", b"x"),
    ];
    v.push((
        "hostile-symlink",
        rpmrepo::hand_rpm("hostile-symlink", &f, &honest(&f), key),
    ));
    let f = [HFile::dir("/usr"), HFile::file("/usr/a", b"a")];
    let mut c = honest(&f);
    c.push(CEntry {
        name: "./usr/extra".into(),
        mode: 0o100644,
        data: b"smuggled".to_vec(),
    });
    v.push((
        "hostile-extra",
        rpmrepo::hand_rpm("hostile-extra", &f, &c, key),
    ));
    let f = [HFile::file("/usr/content", b"good")];
    let mut c = honest(&f);
    c[0].data = b"evil".to_vec();
    v.push((
        "hostile-content",
        rpmrepo::hand_rpm("hostile-content", &f, &c, key),
    ));
    let f = [HFile::file("/usr/kind", b"")];
    let mut c = honest(&f);
    c[0].mode = 0o120777;
    c[0].data = b"/etc/shadow".to_vec();
    v.push((
        "hostile-type",
        rpmrepo::hand_rpm("hostile-type", &f, &c, key),
    ));
    let f = [HFile::dir("/dev"), HFile::chardev("/dev/evil", 1, 3)];
    v.push((
        "hostile-device",
        rpmrepo::hand_rpm("hostile-device", &f, &honest(&f), key),
    ));
    v
}

fn repos() -> Option<&'static Repos> {
    static REPOS: OnceLock<Option<Repos>> = OnceLock::new();
    if !needs::tools(rpmrepo::TOOLS) {
        return None;
    }
    // The Clear Linux busybox rpm packages the host's: it must run without a libc beside it.
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox is missing: install Debian's busybox-static package");
    assert!(
        common::is_static_elf(&busybox),
        "/bin/busybox is dynamically linked: install Debian's busybox-static package"
    );
    REPOS
        .get_or_init(|| {
            // In the target's tmp dir, rebuilt each run: a static is never dropped, so a
            // tempdir here would outlive the test process.
            let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rpm-repos");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            let www = dir.join("www");
            let key = rpmrepo::gpg_key(&dir, "osbuilder-rpm-test");
            let other = rpmrepo::gpg_key(&dir, "osbuilder-rpm-other");
            // Clear Linux: MIRROR/latest, MIRROR/releases/<ver>/clear/x86_64/os, unsigned.
            let clear = www.join(format!("releases/{CLEAR_VERSION}/clear/x86_64/os"));
            let pkgs = clear.join("Packages");
            std::fs::create_dir_all(&pkgs).unwrap();
            rpmrepo::rpmbuild(&dir.join("clear"), &pkgs, &clear_specs(), "1.0", "w6.gzdio");
            rpmrepo::createrepo(&clear, None, "xz");
            std::fs::write(www.join("latest"), format!("{CLEAR_VERSION}\n")).unwrap();
            // Azure Linux: MIRROR/azurelinux/3.0/prod/base/x86_64, all signed.
            let azure = www.join("azurelinux/3.0/prod/base/x86_64");
            let apkgs = azure.join("Packages");
            std::fs::create_dir_all(&apkgs).unwrap();
            let built = rpmrepo::rpmbuild(
                &dir.join("azure"),
                &apkgs,
                &azure_specs(),
                "3.0",
                "w19.zstdio",
            );
            rpmrepo::rpmsign(&key, &built);
            for (name, bytes) in hostile(&key) {
                std::fs::write(apkgs.join(format!("{name}-1-1.x86_64.rpm")), bytes).unwrap();
            }
            rpmrepo::createrepo(&azure, Some(&key), "bz2");
            Some(Repos {
                url: common::apkrepo::serve(&www),
                dir,
                key,
                other,
            })
        })
        .as_ref()
}

fn rootfs(r: &Repos, distro: &str, args: &[&str], out: &Path) -> Command {
    let mut c = common::osbuilder();
    c.args([
        "rootfs", "--distro", distro, "--arch", "x86_64", "--mirror", &r.url,
    ])
    .args(args)
    .arg("-o")
    .arg(out)
    .env("OSBUILDER_CACHE_DIR", r.dir.join("cache"))
    .env("SOURCE_DATE_EPOCH", "1700000000");
    c
}

fn run(c: &mut Command) -> (bool, String, String) {
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rpm_qa(root: &Path) -> Vec<String> {
    let out = Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args([
            "--dbpath",
            "/var/lib/rpm",
            "-qa",
            "--qf",
            "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\n",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rpm -qa: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// `osbuilder image ROOTFS -o IMG ARGS` run with `c`; the first partition's start sector
/// (sfdisk's reading of the image).
fn image_first_partition(mut c: Command, rootfs: &Path, img: &Path, args: &[&str]) -> u64 {
    c.arg("image")
        .arg(rootfs)
        .arg("-o")
        .arg(img)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let (ok, _, err) = run(&mut c);
    assert!(ok, "{err}");
    let parts: serde_json::Value = serde_json::from_str(&String::from_utf8_lossy(
        &Command::new("sfdisk")
            .arg("-J")
            .arg(img)
            .output()
            .unwrap()
            .stdout,
    ))
    .unwrap();
    parts["partitiontable"]["partitions"][0]["start"]
        .as_u64()
        .unwrap()
}

/// `rpm -q --qf FORMAT PKG` against the rootfs's database.
fn rpm_query(root: &Path, format: &str, pkg: &str) -> String {
    let o = Command::new("rpm")
        .arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm", "-q", "--qf", format, pkg])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `rpm -Va` in the rootfs: rpm checks every installed file against its database (digest,
/// size, mode, link target, device, time) and every package's dependencies. Owners are
/// compared only with `owners` and as root (a rootless build keeps them in the `.mtree`),
/// file capabilities only as root (a rootless build keeps them in the `.mtree` too; the
/// test of `%caps` checks that with debugfs).
fn rpm_verify_all(root: &Path, owners: bool) {
    let mut c = Command::new("rpm");
    c.arg("--root")
        .arg(root)
        .args(["--dbpath", "/var/lib/rpm", "-Va"]);
    if !common::is_root() {
        c.arg("--nocaps");
    }
    if !owners || !common::is_root() {
        c.args(["--nouser", "--nogroup"]);
    }
    let out = c.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Rootless, device nodes are only in the .mtree (checked from tree::Tree elsewhere).
    let differ: Vec<&str> = stdout
        .lines()
        .filter(|l| common::is_root() || !(l.starts_with("missing") && l.contains(" /dev/")))
        .collect();
    assert!(
        differ.is_empty() && (out.status.success() || !common::is_root()),
        "rpm -Va: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clearlinux_agent_init_rootfs_builds_boots_and_rebuilds_identically() {
    let Some(r) = repos() else { return };
    if !needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    let tmp = common::open_tempdir();
    let out = tmp.path().join("rootfs");
    let (ok, _, err) = run(&mut rootfs(r, "clearlinux", &["--agent-init"], &out));
    assert!(ok, "{err}");
    eprintln!("{err}");
    // Clear's packages are unsigned: the build says so, osbuilder.yaml records it.
    assert!(err.contains("publishes unsigned packages"), "{err}");
    let yaml = std::fs::read_to_string(out.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(
        yaml.contains("trust:") && yaml.contains("unsigned packages installed"),
        "{yaml}"
    );
    assert!(
        yaml.contains(&format!("version: \"{CLEAR_VERSION}\"")),
        "{yaml}"
    );
    let sbom = std::fs::read_to_string(out.join("var/lib/osbuilder/sbom.spdx.json")).unwrap();
    assert!(
        sbom.contains("pkg:rpm/clearlinux/busybox@1.0-1?arch=x86_64"),
        "{sbom}"
    );
    // The lua scriptlet is named, not run; unknown owners fall back to root, as rpm does.
    assert!(err.contains("<lua>: busybox %post"), "{err}");
    assert!(err.contains("user nosuchuser is not defined"), "{err}");

    // What rpm itself reads from the database: the resolved set, nothing else.
    let mut want: Vec<String> = [
        "filesystem",
        "busybox",
        "libseccomp",
        "iptables-bin",
        "kmod-bin",
        "libkmod",
        "libudev0-shim",
    ]
    .iter()
    .map(|n| format!("{n}-1.0-1.x86_64"))
    .collect();
    want.sort();
    assert_eq!(rpm_qa(&out), want);
    // Owners not compared: Clear's accounts live in usr/share/defaults/etc, where rpm does
    // not look, and nosuchuser's files went to root.
    rpm_verify_all(&out, false);
    let qf = Command::new("rpm")
        .arg("--root")
        .arg(&out)
        .args(["--dbpath", "/var/lib/rpm", "-qf", "/usr/bin/modprobe"])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&qf.stdout).trim(),
        "kmod-bin-1.0-1.x86_64"
    );

    // Files as the headers describe them.
    assert!(out.join("bin").is_symlink() && out.join("usr/bin/busybox").is_file());
    assert_eq!(
        std::fs::read(out.join("usr/bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    use std::os::unix::fs::MetadataExt;
    let kmod = std::fs::metadata(out.join("usr/bin/kmod")).unwrap();
    let probe = std::fs::metadata(out.join("usr/bin/modprobe")).unwrap();
    assert_eq!(kmod.ino(), probe.ino(), "hard links stay links");
    assert!(
        !out.join("var/log/shim.log").exists(),
        "ghost files are not extracted"
    );
    let (meta, _) = osbuilder::tree::load_metadata_for(&out, None).unwrap();
    let tree = osbuilder::tree::Tree::scan(
        &out,
        &osbuilder::tree::ScanOptions {
            metadata: meta,
            ..Default::default()
        },
    )
    .unwrap();
    let drift = tree.get(b"var/lib/chrony/drift").unwrap();
    assert_eq!(
        (drift.uid, drift.gid, drift.perm),
        (992, 991, 0o640),
        "owner names from passwd"
    );
    let console = tree.get(b"dev/console").unwrap();
    assert!(
        matches!(
            console.kind,
            osbuilder::tree::Kind::CharDev { major: 5, minor: 1 }
        ),
        "{console:?}"
    );

    // The same request again: the same tree, the same initrd.
    let out2 = tmp.path().join("again").join("rootfs-2");
    std::fs::create_dir_all(out2.parent().unwrap()).unwrap();
    let (ok, _, err) = run(&mut rootfs(r, "clearlinux", &["--agent-init"], &out2));
    assert!(ok, "{err}");
    let (a, b) = (common::snapshot(&out), common::snapshot(&out2));
    let differ: Vec<_> =
        a.0.iter()
            .filter(|(p, n)| b.0.get(*p) != Some(n))
            .map(|(p, n)| format!("{}: {n:?} vs {:?}", p.display(), b.0.get(p)))
            .chain(
                b.0.keys()
                    .filter(|p| !a.0.contains_key(*p))
                    .map(|p| format!("only in the rebuild: {}", p.display())),
            )
            .collect();
    assert!(differ.is_empty(), "rebuild differs:\n{}", differ.join("\n"));
    assert!(a.1.len() == b.1.len(), "hard links differ");
    let initrd = |root: &Path, name: &str| -> Vec<u8> {
        let img = tmp.path().join(name);
        let (ok, _, err) = run(common::osbuilder()
            .args(["initrd"])
            .arg(root)
            .arg("-o")
            .arg(&img)
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        assert!(ok, "{err}");
        std::fs::read(&img).unwrap()
    };
    let a = initrd(&out, "a.img");
    assert!(a == initrd(&out2, "b.img"), "initrds differ");
    // GNU cpio reads it, and it boots to the agent.
    let listing = common::cpio_list(&tmp.path().join("a.img"), "gzip -dc");
    assert!(
        listing.contains("usr/bin/busybox") && listing.contains("sbin/init"),
        "{listing}"
    );
    let Some(kernel) = common::kernel::kernel("x86_64") else {
        return;
    };
    let (ok, out, err) = run(common::osbuilder()
        .args(["boot", "--poweroff", "--timeout", "120", "--kernel"])
        .arg(&kernel)
        .arg("--initrd")
        .arg(tmp.path().join("a.img")));
    assert!(ok && out.contains("ready after"), "{out}{err}");
    eprintln!("booted the Clear Linux initrd to the agent: {out}");
}

#[test]
fn azurelinux_resolves_kata_packages_and_installs_signed_packages() {
    let Some(r) = repos() else { return };
    let tmp = common::open_tempdir();
    let keyring = r.key.public.to_str().unwrap();
    // Kata's cbl-mariner set with systemd, resolved only (the alias works too).
    let (ok, plan, err) = run(&mut rootfs(
        r,
        "cbl-mariner",
        &["--systemd", "--dry-run", "--keyring", keyring],
        &tmp.path().join("unused"),
    ));
    assert!(ok, "{err}");
    assert!(
        err.contains("repomd.xml of") && err.contains("signed by"),
        "{err}"
    );
    let names: Vec<&str> = plan.lines().map(|l| l.split(' ').next().unwrap()).collect();
    for n in UVM.iter().chain(&[
        "kata-packages-uvm",
        "e2fsprogs",
        "libseccomp",
        "systemd",
        "filesystem",
    ]) {
        assert!(names.contains(n), "{n} missing from the plan:\n{plan}");
    }
    assert_eq!(
        names[0], "filesystem",
        "the directory layout first:\n{plan}"
    );
    assert!(!names.iter().any(|n| n.starts_with("hostile")), "{plan}");
    // zlib before curl: dependencies first.
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        pos("zlib") < pos("curl") && pos("bash") < pos("grep"),
        "{plan}"
    );

    // A signed install; rpm reads the database, signatures included.
    let out = tmp.path().join("rootfs");
    let (ok, _, err) = run(&mut rootfs(
        r,
        "azurelinux",
        &["--systemd", "--no-agent", "--keyring", keyring],
        &out,
    ));
    assert!(ok, "{err}");
    assert!(
        err.contains("packages verified: header signature by"),
        "{err}"
    );
    assert!(err.contains("file capabilities"), "{err}");
    let qa = rpm_qa(&out);
    assert_eq!(qa.len(), names.len(), "{qa:?}");
    rpm_verify_all(&out, true);
    // The distro's path filters left the docs out; rpm knows them as "not installed" (as
    // with --excludedocs), so -V above passed them over.
    assert!(!out.join("usr/share/doc/bash/README").exists());
    let states = rpm_query(&out, "[%{FILESTATES:fstate} %{FILENAMES}\n]", "bash");
    assert!(
        states.contains("not installed /usr/share/doc/bash/README"),
        "{states}"
    );
    assert!(states.contains("normal /usr/bin/bash"), "{states}");
    let sigs = rpm_query(&out, "%{RSAHEADER:pgpsig}\n", "systemd");
    assert!(sigs.contains("RSA/SHA"), "{sigs:?}");
    let yaml = std::fs::read_to_string(tmp.path().join("rootfs.packages.json")).unwrap();
    assert!(
        yaml.contains("\"format\": \"rpm\"") && !yaml.contains("unsigned"),
        "{yaml}"
    );
}

#[test]
fn untrusted_keys_tampered_metadata_and_unsigned_packages_are_refused() {
    let Some(r) = repos() else { return };
    let tmp = common::open_tempdir();
    let out = tmp.path().join("rootfs");
    // Without the test key: repomd.xml.asc does not verify against Microsoft's keys.
    let (ok, _, err) = run(&mut rootfs(r, "azurelinux", &["--dry-run"], &out));
    assert!(
        !ok && err.contains("repomd.xml") && err.contains("no valid signature"),
        "{err}"
    );
    let other = r.other.public.to_str().unwrap();
    let (ok, _, err) = run(&mut rootfs(
        r,
        "azurelinux",
        &["--dry-run", "--keyring", other],
        &out,
    ));
    assert!(!ok && err.contains("no valid signature"), "{err}");

    // A copy of the repository with repomd.xml changed after signing, another without
    // its signature, and one whose packages are unsigned.
    let www = tmp.path().join("www");
    let base = "azurelinux/3.0/prod/base/x86_64";
    let copy = |name: &str| -> PathBuf {
        let d = www.join(name).join(base);
        std::fs::create_dir_all(d.parent().unwrap()).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(r.dir.join("www").join(base))
            .arg(&d)
            .status()
            .unwrap();
        assert!(st.success());
        d
    };
    let tampered = copy("tampered");
    let md = tampered.join("repodata/repomd.xml");
    let text = std::fs::read_to_string(&md)
        .unwrap()
        .replace("<revision>1700000000", "<revision>1700000001");
    std::fs::write(&md, text).unwrap();
    let unsigned_md = copy("nosig");
    std::fs::remove_file(unsigned_md.join("repodata/repomd.xml.asc")).unwrap();
    let unsigned = copy("unsigned");
    for f in std::fs::read_dir(unsigned.join("Packages")).unwrap() {
        let p = f.unwrap().path();
        let st = Command::new("rpmsign")
            .arg("--delsign")
            .arg(&p)
            .output()
            .unwrap();
        assert!(
            st.status.success(),
            "{}",
            String::from_utf8_lossy(&st.stderr)
        );
    }
    std::fs::remove_dir_all(unsigned.join("repodata")).unwrap();
    rpmrepo::createrepo(&unsigned, Some(&r.key), "gz");
    let url = common::apkrepo::serve(&www);
    let keyring = r.key.public.to_str().unwrap();
    let build = |mirror: &str, extra: &[&str]| {
        let mut c = common::osbuilder();
        c.args([
            "rootfs",
            "--distro",
            "azurelinux",
            "--arch",
            "x86_64",
            "--no-agent",
        ])
        .args([
            "--keyring",
            keyring,
            "--packages",
            "bash",
            "--mirror",
            mirror,
        ])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .env("OSBUILDER_CACHE_DIR", tmp.path().join("cache"));
        run(&mut c)
    };
    let (ok, _, err) = build(&format!("{url}/tampered"), &[]);
    assert!(!ok && err.contains("no valid signature"), "{err}");
    let (ok, _, err) = build(&format!("{url}/nosig"), &[]);
    assert!(!ok && err.contains("repomd.xml.asc"), "{err}");
    let (ok, _, err) = build(&format!("{url}/unsigned"), &[]);
    assert!(
        !ok && err.contains("not signed") && err.contains("--allow-unsigned"),
        "{err}"
    );
    assert!(!out.exists());
    // Unless the user says so, and then it is on record.
    let (ok, _, err) = build(&format!("{url}/unsigned"), &["--allow-unsigned"]);
    assert!(ok, "{err}");
    let rec = std::fs::read_to_string(tmp.path().join("rootfs.packages.json")).unwrap();
    assert!(
        rec.contains("unsigned packages installed (--allow-unsigned)"),
        "{rec}"
    );
}

#[test]
fn hostile_packages_are_refused_with_nothing_written_outside_the_root() {
    let Some(r) = repos() else { return };
    let tmp = common::open_tempdir();
    let keyring = r.key.public.to_str().unwrap();
    for (name, want) in [
        ("hostile-dotdot", "climbs out"),
        ("hostile-absolute", "absolute path"),
        ("hostile-symlink", "climb"),
        ("hostile-extra", "not in the package header"),
        ("hostile-content", "does not match its digest"),
        ("hostile-type", "header/payload mismatch"),
    ] {
        let out = tmp.path().join(format!("rootfs-{name}"));
        let (ok, _, err) = run(&mut rootfs(
            r,
            "azurelinux",
            &["--no-agent", "--keyring", keyring, "--packages", name],
            &out,
        ));
        assert!(!ok, "{name} was installed:\n{err}");
        assert!(err.contains(want), "{name}: expected '{want}' in:\n{err}");
        assert!(!out.exists(), "{name}: a rootfs was left behind");
    }
    for p in [
        "/tmp/osbuilder-rpm-dotdot",
        "/tmp/osbuilder-rpm-absolute",
        "/tmp/osbuilder-rpm-symlink",
    ] {
        assert!(!Path::new(p).exists(), "{p} was written outside the root");
    }
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != "cache")
        .collect();
    assert!(left.is_empty(), "stray output: {left:?}");

    // A device node, as an unprivileged user: kept in the metadata, never made on disk.
    if !needs::root() {
        return;
    }
    let mine = tmp.path().join("nobody");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let out = mine.join("rootfs-device");
    let mut c = common::osbuilder_as_nobody();
    c.args([
        "rootfs",
        "--distro",
        "azurelinux",
        "--arch",
        "x86_64",
        "--mirror",
        &r.url,
    ])
    .args([
        "--no-agent",
        "--keyring",
        keyring,
        "--packages",
        "hostile-device",
    ])
    .arg("-o")
    .arg(&out)
    .env("OSBUILDER_CACHE_DIR", mine.join("cache"));
    let (ok, _, err) = run(&mut c);
    assert!(ok, "{err}");
    assert!(
        std::fs::symlink_metadata(out.join("dev/evil")).is_err(),
        "a device node was created"
    );
    let mtree = std::fs::read_to_string(mine.join("rootfs-device.mtree")).unwrap();
    assert!(
        mtree.contains("./dev/evil type=char") && mtree.contains("device=native,1,3"),
        "{mtree}"
    );
}

/// `%caps(cap_net_raw=ep)` and a `%post -p <lua>`: the plan names the scriptlet (read
/// from the package header alone, nothing fetched); a build as root sets the real
/// `security.capability` (getcap reads it), a rootless one keeps it in the `.mtree`;
/// both record it in osbuilder.yaml; an ext4 image of the rootless rootfs carries it
/// (debugfs reads it), an initrd says it cannot.
#[test]
fn file_capabilities_are_kept_and_lua_scriptlets_named_in_the_plan() {
    let Some(r) = repos() else { return };
    if !needs::tools(&[
        ("sfdisk", "fdisk"),
        ("debugfs", "e2fsprogs"),
        ("getcap", "libcap2-bin"),
    ]) {
        return;
    }
    let tmp = common::open_tempdir();
    let mine = tmp.path().join("work");
    std::fs::create_dir(&mine).unwrap();
    std::fs::set_permissions(&mine, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let args = ["--agent-init", "--packages", "busybox,iputils-ping"];
    let build = |base: Command, out: &Path, extra: &[&str]| {
        let mut c = base;
        c.args([
            "rootfs",
            "--distro",
            "clearlinux",
            "--arch",
            "x86_64",
            "--mirror",
            &r.url,
        ])
        .args(args)
        .args(extra)
        .arg("-o")
        .arg(out)
        // a cache of its own: the plan must read headers, not cached packages
        .env("OSBUILDER_CACHE_DIR", mine.join("cache"))
        .env("SOURCE_DATE_EPOCH", "1700000000");
        run(&mut c)
    };
    let nobody = || {
        if common::is_root() {
            common::osbuilder_as_nobody()
        } else {
            common::osbuilder()
        }
    };

    // (a) The plan: both <lua> scriptlets named, from the headers alone.
    let (ok, plan, err) = build(nobody(), &mine.join("unused"), &["--dry-run"]);
    assert!(ok, "{err}");
    assert!(plan.contains("iputils-ping 1.0-1 x86_64"), "{plan}");
    assert!(err.contains("scriptlets that will not run"), "{err}");
    assert!(
        err.contains("  iputils-ping: %post (<lua>) not run"),
        "{err}"
    );
    assert!(err.contains("  busybox: %post (<lua>) not run"), "{err}");
    assert!(err.contains("nothing fetched"), "{err}");
    assert!(!mine.join("unused").exists());

    // (b) Rootless: the capability in the metadata, the build log and osbuilder.yaml.
    let out = mine.join("rootfs");
    let (ok, _, err) = build(nobody(), &out, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("1 files carry file capabilities, kept in the rootfs metadata")
            && err.contains("/usr/bin/ping cap_net_raw=ep"),
        "{err}"
    );
    let mtree = std::fs::read_to_string(mine.join("rootfs.mtree")).unwrap();
    let line = mtree
        .lines()
        .find(|l| l.starts_with("./usr/bin/ping "))
        .unwrap_or_else(|| panic!("{mtree}"));
    // base64 of 01 00 00 02 00 20 00 00 + 12 zero bytes (setcap cap_net_raw=ep)
    assert!(
        line.contains("xattr.security.capability=AQAAAgAgAAAAAAAAAAAAAAAAAAA="),
        "{line}"
    );
    let yaml = std::fs::read_to_string(out.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(
        yaml.contains("file-capabilities:\n          - \"/usr/bin/ping cap_net_raw=ep\""),
        "{yaml}"
    );

    // (c) An ext4 image of it carries the attribute; debugfs reads it.
    let img = mine.join("caps.img");
    let start = image_first_partition(nobody(), &out, &img, &[]) * 512;
    let ea = Command::new("debugfs")
        .arg("-R")
        .arg("ea_list /usr/bin/ping")
        .arg(format!("{}?offset={start}", img.display()))
        .output()
        .unwrap();
    let ea = String::from_utf8_lossy(&ea.stdout);
    assert!(
        ea.contains(
            "security.capability (20) = 01 00 00 02 00 20 00 00 00 00 00 00 00 00 00 00 00 00 00 00"
        ),
        "{ea}"
    );

    // So does an erofs image (setcap under fakeroot): dump.erofs sees an attribute on
    // ping only (its value: mounted, getcap reads cap_net_raw=ep; not done here).
    if needs::tools(&[
        ("mkfs.erofs", "erofs-utils"),
        ("dump.erofs", "erofs-utils"),
        ("fakeroot", "fakeroot"),
        ("setcap", "libcap2-bin"),
    ]) {
        let img = mine.join("caps-erofs.img");
        let start = image_first_partition(nobody(), &out, &img, &["--fs", "erofs"]);
        let part = mine.join("caps.erofs");
        assert!(
            Command::new("dd")
                .arg(format!("if={}", img.display()))
                .arg(format!("of={}", part.display()))
                .args(["bs=512", "status=none"])
                .arg(format!("skip={start}"))
                .status()
                .unwrap()
                .success()
        );
        let dump = |p: &str| {
            let o = Command::new("dump.erofs")
                .arg(format!("--path={p}"))
                .arg(&part)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).into_owned()
        };
        let ping = dump("/usr/bin/ping");
        assert!(
            ping.contains("Xattr size: ") && !ping.contains("Xattr size: 0"),
            "{ping}"
        );
        assert!(dump("/usr/bin/busybox").contains("Xattr size: 0"));
    }

    // An initrd cannot carry it, and says so.
    let mut c = nobody();
    c.arg("initrd")
        .arg(&out)
        .arg("-o")
        .arg(mine.join("caps.initrd"))
        .env("SOURCE_DATE_EPOCH", "1700000000");
    let (ok, _, err) = run(&mut c);
    assert!(ok, "{err}");
    assert!(
        err.contains("1 files lose their file capabilities in the initrd")
            && err.contains("/usr/bin/ping cap_net_raw=ep"),
        "{err}"
    );

    // As root: the real attribute, as getcap reads it.
    if !needs::root() {
        return;
    }
    let out = tmp.path().join("rootfs-root");
    let (ok, _, err) = build(common::osbuilder(), &out, &[]);
    assert!(ok, "{err}");
    assert!(
        err.contains("set as their security.capability attribute"),
        "{err}"
    );
    let getcap = Command::new("getcap")
        .arg(out.join("usr/bin/ping"))
        .output()
        .unwrap();
    let getcap = String::from_utf8_lossy(&getcap.stdout);
    assert!(getcap.trim_end().ends_with("cap_net_raw=ep"), "{getcap}");
    let yaml = std::fs::read_to_string(out.join("var/lib/osbuilder/osbuilder.yaml")).unwrap();
    assert!(yaml.contains("/usr/bin/ping cap_net_raw=ep"), "{yaml}");
}
