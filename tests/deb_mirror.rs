//! Real-mirror tests: Debian trixie agent-init rootfs for amd64 and arm64, built natively
//! (the arm64 one without qemu). The mirror comes from $OSBUILDER_MIRROR or the host's APT
//! sources; the tests skip (recorded by `needs`) only when no mirror is configured or reachable, or when it
//! does not serve an arch's pool files.
//! Both share one download cache, so a re-run costs only the index parse and extraction.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::needs;

fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("osbuilder-test-deb-cache")
}

fn build_trixie(arch: &str, elf: &str) {
    let Some(url) = needs::mirror() else { return };
    // The signed index of the arch verifies and the set resolves to packages of that arch;
    // checked first, as it is all that can be checked when the mirror does not serve the pool.
    let plan = Command::new(env!("CARGO_BIN_EXE_osbuilder"))
        .args(["rootfs", "--distro", "debian", "--os-version", "trixie"])
        .args(["--agent-init", "--no-agent", "--dry-run", "--arch", arch])
        .arg("--mirror")
        .arg(&url)
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg("-o")
        .arg(std::env::temp_dir().join("osbuilder-dry-run-unused"))
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("libc6 ") && l.contains(arch)),
        "{plan}"
    );
    let packages = needs::plan_pairs(plan.lines());
    if !needs::pool_served(&url, "trixie", arch, &packages) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("rootfs-{arch}"));
    let res = Command::new(env!("CARGO_BIN_EXE_osbuilder"))
        .args([
            "rootfs",
            "--distro",
            "debian",
            "--os-version",
            "trixie",
            "--agent-init",
            "--arch",
            arch,
        ])
        // The reference agent exists for the host's arch only; a foreign-arch package
        // install is what this test checks (tests/e2e.rs boots an arm64 guest with an agent).
        .args(if arch == "amd64" {
            &[][..]
        } else {
            &["--no-agent"][..]
        })
        .arg("--mirror")
        .arg(&url)
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );

    // Binaries of the target architecture, checked with file(1).
    let f = Command::new("file")
        .arg("-L")
        .arg(out.join("usr/sbin/chronyd"))
        .output()
        .unwrap();
    let desc = String::from_utf8_lossy(&f.stdout);
    assert!(desc.contains(elf), "{desc}");
    assert!(out.join("bin").is_symlink() && out.join("usr/lib/os-release").exists());

    // dpkg reads the database: everything installed, nothing half-configured.
    let admin = format!("--admindir={}", out.join("var/lib/dpkg").display());
    let q = Command::new("dpkg-query")
        .arg(&admin)
        .args(["-W", "-f", "${Package} ${db:Status-Abbrev}\n"])
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let listed = String::from_utf8_lossy(&q.stdout);
    for want in [
        "chrony ii",
        "iptables ii",
        "dbus ii",
        "cryptsetup-bin ii",
        "e2fsprogs ii",
        "libseccomp2 ii",
        "libc6 ii",
    ] {
        assert!(
            listed.lines().any(|l| l.trim() == want),
            "{want} missing:\n{listed}"
        );
    }
    let audit = Command::new("dpkg")
        .arg(&admin)
        .arg("--audit")
        .output()
        .unwrap();
    assert!(
        audit.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&audit.stdout)
    );
    let arch_out = Command::new("dpkg-query")
        .arg(&admin)
        .args(["-W", "-f", "${Architecture}\n", "libc6"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&arch_out.stdout).trim(), arch);

    // The record lists every installed package with its digest.
    let rec: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join(format!("rootfs-{arch}.packages.json"))).unwrap(),
    )
    .unwrap();
    let pkgs = rec["packages"].as_array().unwrap();
    assert_eq!(pkgs.len(), listed.lines().count());
    assert!(
        pkgs.iter()
            .all(|p| p["sha256"].as_str().unwrap().len() == 64)
    );
    let passwd = std::fs::read_to_string(out.join("etc/passwd")).unwrap();
    assert!(
        passwd.contains("_chrony:") && passwd.contains("messagebus:"),
        "{passwd}"
    );
}

#[test]
fn debian_trixie_agent_init_amd64() {
    build_trixie("amd64", "x86-64");
}

#[test]
fn debian_trixie_agent_init_arm64_without_qemu() {
    build_trixie("arm64", "ARM aarch64");
}

/// --run-scripts: the maintainer scripts run in a chroot (root, same-arch host).
#[test]
fn debian_trixie_run_scripts_amd64() {
    if osbuilder::arch::Arch::host() != Some(osbuilder::arch::Arch::X86_64) {
        // The test builds amd64 with the host's own chroot: a fact of the host, like a tool.
        needs::skip(needs::Missing::Host("an x86_64 host".into()));
        return;
    }
    if !needs::root() {
        return;
    }
    let Some(url) = needs::mirror() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rootfs");
    let res = Command::new(env!("CARGO_BIN_EXE_osbuilder"))
        .args([
            "rootfs",
            "--distro",
            "debian",
            "--os-version",
            "trixie",
            "--agent-init",
            "--arch",
            "amd64",
            "--run-scripts",
        ])
        .arg("--mirror")
        .arg(&url)
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let admin = format!("--admindir={}", out.join("var/lib/dpkg").display());
    let q = Command::new("dpkg-query")
        .arg(&admin)
        .args(["-W", "-f", "${db:Status-Abbrev}\n"])
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&q.stdout);
    assert!(
        st.lines().all(|l| l.trim() == "ii"),
        "not all configured:\n{st}"
    );
    // Written by chrony's postinst, not by osbuilder.
    assert!(
        out.join("etc/systemd/system/multi-user.target.wants/chrony.service")
            .is_symlink()
    );
    assert!(
        out.join("var/lib/systemd/deb-systemd-helper-enabled")
            .is_dir()
    );
}

#[test]
fn debian_trixie_agent_init_ppc64el() {
    build_trixie("ppc64el", "64-bit PowerPC");
}

#[test]
fn debian_trixie_agent_init_s390x() {
    build_trixie("s390x", "IBM S/390");
}
