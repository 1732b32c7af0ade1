//! A flaky mirror, simulated on 127.0.0.1 in front of a signed test repository: a package
//! download that stalls mid-body, pauses, is cut short or is not served. A stall is given
//! up on after the idle timeout (OSBUILDER_FETCH_IDLE_TIMEOUT), each retry is announced on
//! stderr, and every failure ends in one line saying what happened and what to do.

mod common;
mod deb_support;

use std::time::Duration;

use deb_support::*;

const SUITE: &str = "testsuite";

fn universe() -> Vec<Pkg> {
    vec![pkg(
        "app",
        "1.0-1",
        "amd64",
        "",
        &[
            E::Dir("./"),
            E::Dir("./usr/"),
            E::Dir("./usr/bin/"),
            E::File("./usr/bin/app", &[b'x'; 20000], 0o755, 0, 0),
        ],
    )]
}

/// Build `--packages app` from a mirror whose server applies `fault` to the app package;
/// returns (success, stderr).
fn build_through(fault: Fault, idle: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let key = gpg_key(dir.path(), "repo");
    let www = dir.path().join("www");
    write_repo(&www, SUITE, "amd64", &universe(), &key, "");
    let url = serve_with(&www, move |path| {
        if path.contains("/pool/") && path.contains("app_") {
            fault
        } else {
            Fault::None
        }
    });
    let mut cmd = osbuilder();
    cmd.args(["rootfs", "--distro", "debian", "--arch", "amd64"])
        .args(["--os-version", SUITE, "--no-agent", "--packages", "app"])
        .arg("--mirror")
        .arg(&url)
        .arg("--keyring")
        .arg(&key.public)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("-o")
        .arg(dir.path().join("rootfs"))
        .env("OSBUILDER_FETCH_IDLE_TIMEOUT", idle)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // A guard, not a timing check: a build that hangs on the stall (as with a whole-body
    // timeout of 10 minutes per attempt) fails the test instead of blocking the run.
    let mut child = cmd.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).unwrap();
        s
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("osbuilder still running after 180 s: a stalled mirror hangs the build");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status.success(), reader.join().unwrap())
}

/// The last line of stderr: the error, which must say what happened on one line.
fn error_line(err: &str) -> &str {
    let line = err.lines().last().unwrap_or("");
    assert!(line.starts_with("osbuilder: error: "), "{err}");
    line
}

#[test]
fn a_download_that_stalls_mid_body_is_retried_visibly_then_fails_clearly() {
    let (ok, err) = build_through(Fault::StallForever, "0.5");
    assert!(!ok, "{err}");
    let retries: Vec<&str> = err.lines().filter(|l| l.contains("retrying")).collect();
    assert_eq!(retries.len(), 3, "{err}");
    assert!(
        retries[0].contains("app_1.0-1_amd64.deb: the mirror sent no data for 0.5 s after")
            && retries[0].ends_with("retrying (attempt 2 of 4)"),
        "{}",
        retries[0]
    );
    let line = error_line(&err);
    assert!(
        line.contains("failed after 4 attempts")
            && line.contains("the mirror sent no data for 0.5 s")
            && line.contains("use another --mirror"),
        "{line}"
    );
}

#[test]
fn a_pause_shorter_than_the_idle_timeout_does_not_fail_the_build() {
    let (ok, err) = build_through(Fault::Pause(Duration::from_millis(400)), "5");
    assert!(ok, "{err}");
    assert!(!err.contains("retrying"), "{err}");
}

#[test]
fn a_download_cut_short_says_how_much_arrived() {
    let (ok, err) = build_through(Fault::Truncate, "5");
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("the download was cut short after") && line.contains(" bytes (the server"),
        "{line}"
    );
    assert!(!err.contains("Peer disconnected"), "{err}");
}

#[test]
fn a_package_the_mirror_does_not_serve_says_so() {
    let (ok, err) = build_through(Fault::NotFound, "5");
    assert!(!ok, "{err}");
    let line = error_line(&err);
    assert!(
        line.contains("not found (404): the mirror does not serve this file")
            && line.contains("--os-version")
            && line.contains("mid-sync"),
        "{line}"
    );
}

#[test]
fn a_malformed_idle_timeout_is_refused() {
    let (ok, err) = build_through(Fault::None, "soon");
    assert!(!ok);
    let line = error_line(&err);
    assert!(
        line.contains("OSBUILDER_FETCH_IDLE_TIMEOUT='soon' is not a positive number of seconds"),
        "{line}"
    );
}
