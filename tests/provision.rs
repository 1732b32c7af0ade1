//! `osbuilder provision` on synthetic rootfs trees: where the agent goes in each init
//! mode, Kata's config touches, osbuilder.yaml (read by a real YAML parser), the SBOM,
//! unprivileged builds, and the clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn reference_agent() -> &'static [u8] {
    osbuilder::agent::reference_agent()
}

/// A rootfs with the bits provisioning looks at: merged /usr, os-release, chrony, systemd.
fn make_rootfs(dir: &Path, with_systemd: bool) -> PathBuf {
    let r = dir.join("rootfs");
    sh(&format!(
        r#"mkdir -p {r}/usr/bin {r}/usr/sbin {r}/usr/lib/systemd/system {r}/etc/chrony {r}/var/lib
ln -s usr/bin {r}/bin && ln -s usr/sbin {r}/sbin
printf 'ID=debian\nVERSION_CODENAME=trixie\n' > {r}/etc/os-release
printf 'pool 2.debian.pool.ntp.org iburst\nserver 10.0.0.1\nkeyfile /etc/chrony/chrony.keys\n' > {r}/etc/chrony/chrony.conf
ln -s /run/systemd/resolve/stub-resolv.conf {r}/etc/resolv.conf
printf 'host-machine-id\n' > {r}/etc/machine-id
printf '[Unit]\n' > {r}/usr/lib/systemd/system/dbus.socket
printf '[Unit]\n' > {r}/usr/lib/systemd/system/systemd-journald.service
"#,
        r = r.display()
    ));
    if with_systemd {
        sh(&format!(
            "printf systemd > {r}/usr/lib/systemd/systemd && chmod 755 {r}/usr/lib/systemd/systemd && \
             ln -s ../lib/systemd/systemd {r}/usr/sbin/init",
            r = r.display()
        ));
    }
    r
}

fn provision(r: &Path, args: &[&str]) -> std::process::Output {
    run(osbuilder()
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .arg("provision")
        .arg(r)
        .args(args))
}

fn yaml(r: &Path) -> serde_json::Value {
    let out = ok(Command::new("/usr/bin/python3")
        .arg("-c")
        .arg("import sys, yaml, json; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))")
        .arg(r.join("var/lib/osbuilder/osbuilder.yaml")));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn agent_init_mode_makes_the_agent_pid_1() {
    let d = open_tempdir();
    let r = make_rootfs(d.path(), false);
    let out = provision(&r, &["--agent-init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // /sbin is a link to usr/sbin: the agent lands in usr/sbin/init, inside the rootfs.
    assert_eq!(
        std::fs::read(r.join("usr/sbin/init")).unwrap(),
        reference_agent()
    );
    assert_eq!(
        std::fs::read_link(r.join("init")).unwrap(),
        Path::new("/sbin/init")
    );
    // resolv.conf was a symlink leading out of the rootfs: replaced by an empty file.
    let rc = std::fs::symlink_metadata(r.join("etc/resolv.conf")).unwrap();
    assert!(rc.is_file() && rc.len() == 0);
    assert_eq!(
        std::fs::read(r.join("etc/machine-id")).unwrap(),
        b"",
        "the host's machine id must not survive"
    );
    let y = yaml(&r);
    assert_eq!(y["file-format-version"], "0.0.2");
    assert_eq!(y["architecture"], std::env::consts::ARCH);
    assert_eq!(y["base-distro"]["name"], "debian");
    assert_eq!(y["base-distro"]["version"], "trixie");
    assert_eq!(y["agent"]["agent-is-init-daemon"], "yes");
    assert_eq!(
        y["rootfs-creation-time"],
        "2023-11-14T22:13:20.000000000+0000Z"
    );
    let sha = String::from_utf8(ok(Command::new("sha256sum").arg(r.join("usr/sbin/init"))).stdout)
        .unwrap();
    assert_eq!(y["agent"]["sha256"], sha.split_whitespace().next().unwrap());
    let sbom: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.join("var/lib/osbuilder/sbom.spdx.json")).unwrap())
            .unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    // No systemd units in agent-init mode.
    assert!(!r.join("usr/lib/systemd/system/kata-agent.service").exists());
    // And it packs: the initrd keeps the /init we made.
    ok(osbuilder()
        .arg("initrd")
        .arg(&r)
        .arg("-o")
        .arg(d.path().join("i.img")));
}

#[test]
fn systemd_mode_installs_and_enables_the_units() {
    let d = open_tempdir();
    let r = make_rootfs(d.path(), true);
    let out = provision(&r, &["--prune-units"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(r.join("usr/bin/kata-agent")).unwrap(),
        reference_agent()
    );
    let unit =
        std::fs::read_to_string(r.join("usr/lib/systemd/system/kata-agent.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/bin/kata-agent"), "{unit}");
    assert_eq!(
        std::fs::read_link(r.join("etc/systemd/system/basic.target.wants/kata-containers.target"))
            .unwrap(),
        Path::new("/usr/lib/systemd/system/kata-containers.target")
    );
    assert!(
        r.join("etc/systemd/system/kata-containers.target.wants/dbus.socket")
            .is_symlink()
    );
    assert!(
        std::fs::read_to_string(r.join("etc/systemd/system/tmp.mount"))
            .unwrap()
            .contains("Type=tmpfs")
    );
    let chrony = std::fs::read_to_string(r.join("etc/chrony/chrony.conf")).unwrap();
    assert!(chrony.contains("refclock PHC /dev/ptp0 poll 3 dpoll -2 offset 0"));
    assert!(
        chrony.contains("# disabled by osbuilder (time comes from the host's PTP clock): pool")
    );
    assert!(
        chrony.contains("\nkeyfile /etc/chrony/chrony.keys"),
        "unrelated lines stay"
    );
    assert!(
        r.join("etc/systemd/system/chrony.service.d/10-kata-ptp.conf")
            .exists()
    );
    assert!(
        !r.join("usr/lib/systemd/system/systemd-journald.service")
            .exists(),
        "pruned"
    );
    // systemd stays init.
    assert_eq!(
        std::fs::read_link(r.join("usr/sbin/init")).unwrap(),
        Path::new("../lib/systemd/systemd")
    );
    assert_eq!(yaml(&r)["agent"]["agent-is-init-daemon"], "no");
}

#[test]
fn unprivileged_provisioning_records_root_ownership() {
    if !common::needs::tools(&[("cpio", "cpio")]) {
        return;
    }
    if !needs::root() || !needs::tools(&[("setpriv", "util-linux")]) {
        return;
    }
    let d = open_tempdir();
    let r = make_rootfs(d.path(), false);
    sh(&format!(
        "chown -R 65534:65534 {} {}",
        r.display(),
        d.path().display()
    ));
    ok(osbuilder_as_nobody()
        .args(["provision", "--agent-init"])
        .arg(&r));
    let mtree = osbuilder::tree::Mtree::load(&d.path().join("rootfs.mtree")).unwrap();
    let init = mtree
        .get(b"usr/sbin/init")
        .expect("the agent is in the metadata");
    assert_eq!(
        (init.uid, init.gid, init.mode),
        (Some(0), Some(0), Some(0o755))
    );
    let yaml = mtree.get(b"var/lib/osbuilder/osbuilder.yaml").unwrap();
    assert_eq!(yaml.uid, Some(0));
    // The packer honours it: the initrd says root.
    let img = d.path().join("i.img");
    ok(osbuilder().arg("initrd").arg(&r).arg("-o").arg(&img));
    let listing = cpio_list(&img, "gzip -dc");
    let line = listing
        .lines()
        .find(|l| l.ends_with("usr/sbin/init"))
        .unwrap();
    assert!(
        line.contains(" 0        0 ") || line.split_whitespace().nth(2) == Some("0"),
        "{line}"
    );
}

#[test]
fn agent_tarball_in_kata_layout() {
    let d = open_tempdir();
    let r = make_rootfs(d.path(), true);
    let stage = d.path().join("stage");
    std::fs::create_dir_all(stage.join("usr/bin")).unwrap();
    std::fs::create_dir_all(stage.join("usr/lib/systemd/system")).unwrap();
    std::fs::write(stage.join("usr/bin/kata-agent"), reference_agent()).unwrap();
    std::fs::write(
        stage.join("usr/lib/systemd/system/kata-agent.service"),
        "[Unit]\n# from the tarball\n",
    )
    .unwrap();
    let tarball = d.path().join("kata-static-agent.tar.zst");
    sh(&format!(
        "tar -C {} -c . | zstd -q -o {}",
        stage.display(),
        tarball.display()
    ));
    let out = provision(&r, &["--agent-tarball", tarball.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The tarball's own unit wins; the missing target comes from osbuilder.
    let unit =
        std::fs::read_to_string(r.join("usr/lib/systemd/system/kata-agent.service")).unwrap();
    assert!(unit.contains("from the tarball"));
    assert!(
        r.join("usr/lib/systemd/system/kata-containers.target")
            .exists()
    );
}

#[test]
fn kernel_modules_are_copied() {
    let d = open_tempdir();
    let r = make_rootfs(d.path(), false);
    let m = d.path().join("6.1.0-test");
    sh(&format!(
        "mkdir -p {m}/kernel/fs && printf ko > {m}/kernel/fs/x.ko && printf dep > {m}/modules.dep",
        m = m.display()
    ));
    let out = provision(
        &r,
        &["--agent-init", "--kernel-modules", m.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read(
            r.join("lib/modules/6.1.0-test/kernel/fs/x.ko")
                .canonicalize()
                .unwrap()
        )
        .unwrap(),
        b"ko"
    );
}

fn fake_elf(path: &Path, machine: u16, big_endian: bool) {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2;
    h[5] = if big_endian { 2 } else { 1 };
    let m = if big_endian {
        machine.to_be_bytes()
    } else {
        machine.to_le_bytes()
    };
    h[18..20].copy_from_slice(&m);
    std::fs::write(path, h).unwrap();
}

#[test]
fn clear_errors() {
    let d = open_tempdir();
    let r = make_rootfs(d.path(), false);

    let out = provision(
        &r,
        &["--agent-init", "--agent-bin", "/nonexistent/kata-agent"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("reading the agent binary /nonexistent/kata-agent")
    );

    let wrong = d.path().join("agent-s390x");
    fake_elf(&wrong, 22, true);
    let arch = if std::env::consts::ARCH == "x86_64" {
        "x86_64"
    } else {
        "aarch64"
    };
    let out = provision(
        &r,
        &[
            "--agent-init",
            "--arch",
            arch,
            "--agent-bin",
            wrong.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built for s390x") && err.contains(&format!("target architecture is {arch}")),
        "{err}"
    );
    assert!(
        !r.join("init").exists(),
        "a refused agent must not change the rootfs"
    );

    // No reference agent for a foreign arch: say what to pass instead.
    let out = provision(&r, &["--agent-init", "--arch", "s390x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--agent-bin"));

    // A foreign agent given explicitly is fine.
    let good = d.path().join("agent-s390x-ok");
    fake_elf(&good, 22, true);
    let out = provision(
        &r,
        &[
            "--agent-init",
            "--arch",
            "s390x",
            "--agent-bin",
            good.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A script is accepted with a warning.
    let script = d.path().join("agent.sh");
    std::fs::write(&script, "#!/bin/sh\necho ready\n").unwrap();
    let out = provision(
        &r,
        &["--agent-init", "--agent-bin", script.to_str().unwrap()],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: the agent is a script"));

    // systemd mode without systemd in the rootfs (no init system).
    let bare = make_rootfs(&d.path().join("b"), false);
    let out = provision(&bare, &["--systemd"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("has no systemd") && err.contains("--agent-init"),
        "{err}"
    );

    let out = provision(Path::new("/nonexistent/rootfs"), &["--agent-init"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
