//! Real-mirror tests: Debian trixie agent-init rootfs for amd64 and arm64, built natively
//! (the arm64 one without qemu). The mirror comes from $OSBUILDER_MIRROR or the host's APT
//! sources; the tests skip, saying why, only when no mirror is configured or reachable.
//! Both share one download cache, so a re-run costs only the index parse and extraction.

use std::path::{Path, PathBuf};
use std::process::Command;

fn mirror() -> Option<String> {
    let url = match std::env::var("OSBUILDER_MIRROR") {
        Ok(m) if !m.is_empty() => m,
        _ => match osbuilder::mirror::debian_archive_from_apt(Path::new("/etc/apt")) {
            Some((u, _)) => u,
            None => {
                eprintln!("SKIP: no Debian mirror: set OSBUILDER_MIRROR or configure APT sources");
                return None;
            }
        },
    };
    let mut f = osbuilder::pkg::fetch::Fetcher::new();
    f.attempts = 2;
    let probe = osbuilder::pkg::fetch::join_url(&url, "dists/trixie/InRelease");
    match f.get(&probe) {
        Ok(_) => Some(url),
        Err(e) => {
            eprintln!("SKIP: the Debian mirror cannot be reached ({e})");
            None
        }
    }
}

fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("osbuilder-test-deb-cache")
}

fn build_trixie(arch: &str, elf: &str) {
    let Some(url) = mirror() else { return };
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
    if unsafe { libc::geteuid() } != 0
        || osbuilder::arch::Arch::host() != Some(osbuilder::arch::Arch::X86_64)
    {
        eprintln!("SKIP: --run-scripts needs root on an x86_64 host");
        return;
    }
    let Some(url) = mirror() else { return };
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
fn debian_trixie_agent_init_ppc64el_and_s390x() {
    build_trixie("ppc64el", "64-bit PowerPC");
    build_trixie("s390x", "IBM S/390");
}
