//! `osbuilder matrix`: the table, JSON, and the up-front refusal of unsupported requests.

mod common;
use common::*;

#[test]
fn table_and_json() {
    let out = ok(osbuilder().arg("matrix"));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("debian (trixie)") && text.contains("ubuntu (resolute)"),
        "{text}"
    );
    let json = ok(osbuilder().args(["matrix", "--json"]));
    let cells: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let cells = cells.as_array().unwrap();
    assert_eq!(cells.len(), 26);
    assert!(
        cells.iter().any(|c| c["distro"] == "azurelinux"
            && c["arch"] == "aarch64"
            && c["init"] == "systemd")
    );
    assert!(
        cells
            .iter()
            .any(|c| c["distro"] == "alpine" && c["arch"] == "s390x" && c["init"] == "agent-init")
    );
}

#[test]
fn unsupported_requests_exit_2_and_list_what_is_supported() {
    let out = run(osbuilder().args([
        "matrix",
        "--check",
        "--distro",
        "clearlinux",
        "--arch",
        "s390x",
    ]));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("clearlinux does not support s390x")
            && err.contains("x86_64: systemd (default), agent-init"),
        "{err}"
    );

    let out = run(osbuilder().args([
        "matrix", "--check", "--distro", "alpine", "--arch", "x86_64", "--init", "systemd",
    ]));
    assert_eq!(out.status.code(), Some(2));

    let out = run(osbuilder().args([
        "matrix", "--check", "--distro", "fedora", "--arch", "x86_64",
    ]));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("known distros: alpine, azurelinux, clearlinux, debian, ubuntu")
    );

    let out = run(osbuilder().args(["matrix", "--check", "--distro", "debian", "--arch", "mips"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown architecture 'mips'"));
}

#[test]
fn supported_requests_exit_0_with_defaults_filled_in() {
    let out = ok(osbuilder().args(["matrix", "--check", "--distro", "alpine", "--arch", "arm64"]));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("alpine 3.22 on aarch64 with init mode agent-init")
    );
    let out = ok(osbuilder().args([
        "matrix", "--check", "--distro", "debian", "--arch", "ppc64el", "--json",
    ]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["init"], "systemd");
    assert_eq!(v["arch"], "ppc64le");
}
