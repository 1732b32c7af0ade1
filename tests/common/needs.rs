//! "This test needs X": the one way a test says it cannot run here, so that a skip is never
//! mistaken for a pass.
//!
//! Each `needs::*` check returns whether the test can go on. When it cannot, the skip and its
//! reason are printed and appended to the run's skip log (`$OSBUILDER_TEST_SKIPS`, default
//! `target/tmp/skips/`), which `make test` summarises at the end of the run. Under `CI=true`
//! a missing host tool or a missing privilege is a failure, not a skip — CI installs the
//! tools and runs as root — and only an unreachable network resource may be skipped.
//!
//! Network probes never go through osbuilder's own fetcher: a fetcher bug must fail a test,
//! not turn it into a skip. They use a few lines of plain HTTP/1.1 over `TcpStream` here
//! (or `curl` for https mirrors).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a test could not run.
#[derive(Debug, Clone)]
pub enum Missing {
    /// A host program (and the Debian package that provides it).
    Tool { tool: String, package: String },
    /// The test must run as root (CI does).
    Root,
    /// A property of the host machine (its architecture, a kernel feature).
    Host(String),
    /// A resource on the network (mirror, pool files of an arch) is not reachable or not
    /// served. The only kind CI may skip.
    Network(String),
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Missing::Tool { tool, package } => {
                write!(f, "needs `{tool}` (Debian package {package})")
            }
            Missing::Root => f.write_str("needs root"),
            Missing::Host(what) => write!(f, "needs {what}"),
            Missing::Network(why) => write!(f, "network: {why}"),
        }
    }
}

fn in_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true") | Ok("1") | Ok("yes")
    )
}

/// The test's name as libtest runs it (each test runs on a thread named after it).
fn test_name() -> String {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| s.rsplit_once('-').map(|(a, _)| a.to_string()).unwrap_or(s))
        .unwrap_or_default();
    let thread = std::thread::current();
    match thread.name() {
        Some(n) if n != "main" => format!("{bin}::{n}"),
        _ => bin,
    }
}

fn skip_dir() -> PathBuf {
    match std::env::var_os("OSBUILDER_TEST_SKIPS") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skips"),
    }
}

/// Record that the running test is skipped, and why. Panics under CI for anything but an
/// unreachable network resource.
pub fn skip(missing: Missing) {
    let name = test_name();
    if in_ci() && !matches!(missing, Missing::Network(_)) {
        panic!(
            "{name} {missing}: under CI=true this is a failure (.ci/run installs the tools and \
             runs as root)"
        );
    }
    eprintln!("SKIP: {name}: {missing}");
    let dir = skip_dir();
    let _ = std::fs::create_dir_all(&dir);
    let line = format!("{name}\t{missing}\n").replace(['\r'], " ");
    // One file per test process, one write per line: lines never interleave.
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{}.tsv", std::process::id())))
    {
        let _ = f.write_all(line.as_bytes());
    }
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p).any(|d| {
                let f = d.join(tool);
                std::fs::metadata(&f)
                    .map(|m| {
                        use std::os::unix::fs::PermissionsExt;
                        m.is_file() && m.permissions().mode() & 0o111 != 0
                    })
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

/// The test needs these host programs: `(tool, Debian package)`.
pub fn tools(tools: &[(&str, &str)]) -> bool {
    for (tool, package) in tools {
        if !have(tool) {
            skip(Missing::Tool {
                tool: tool.to_string(),
                package: package.to_string(),
            });
            return false;
        }
    }
    true
}

/// The test needs to run as root.
pub fn root() -> bool {
    if super::is_root() {
        return true;
    }
    skip(Missing::Root);
    false
}

/// The Debian mirror: `$OSBUILDER_MIRROR`, else the host's APT sources; None (skipped) when
/// none is configured or it does not answer for `dists/trixie/InRelease`.
pub fn mirror() -> Option<String> {
    let url = match std::env::var("OSBUILDER_MIRROR") {
        Ok(m) if !m.is_empty() => m,
        _ => match osbuilder::mirror::debian_archive_from_apt(Path::new("/etc/apt")) {
            Some((u, _)) => u,
            None => {
                skip(Missing::Network(
                    "no Debian mirror configured: set OSBUILDER_MIRROR or the host's APT sources"
                        .into(),
                ));
                return None;
            }
        },
    };
    static PROBE: std::sync::Mutex<Option<Result<(), String>>> = std::sync::Mutex::new(None);
    let mut cached = PROBE.lock().unwrap_or_else(|e| e.into_inner());
    let result = cached
        .get_or_insert_with(|| {
            let probe = join(&url, "dists/trixie/InRelease");
            match status(&probe, "HEAD") {
                Ok(200) => Ok(()),
                Ok(code) => Err(format!("the Debian mirror answers {code} for {probe}")),
                Err(e) => Err(format!(
                    "the Debian mirror cannot be reached ({probe}: {e})"
                )),
            }
        })
        .clone();
    match result {
        Ok(()) => Some(url),
        Err(why) => {
            skip(Missing::Network(why));
            None
        }
    }
}

/// The mirror serves the pool files (.debs) that a build of `arch` (Debian's name, e.g.
/// "ppc64el") for `suite` needs: a HEAD of the file its signed index lists for each of
/// `plan`'s (package, version) pairs. An arch's indexes can be served while its pool answers
/// 404, wholly or for some files (as on our build machines for ppc64el and s390x since
/// 2026-12-01); that is an environment fact, so the test is skipped, visibly. When the probe
/// itself cannot tell, the test runs.
pub fn pool_served(mirror: &str, suite: &str, arch: &str, plan: &[(String, String)]) -> bool {
    match pool_unserved(mirror, suite, arch, plan) {
        Some(why) => {
            skip(Missing::Network(why));
            false
        }
        None => true,
    }
}

/// Why the mirror does not serve every pool file of `plan` (see [`pool_served`]), or None
/// when it does — or when the probe cannot tell (noted on stderr), so that the build is
/// tried rather than called unreachable.
pub fn pool_unserved(
    mirror: &str,
    suite: &str,
    arch: &str,
    plan: &[(String, String)],
) -> Option<String> {
    let index = join(
        mirror,
        &format!("dists/{suite}/main/binary-{arch}/Packages.xz"),
    );
    let files = match pool_files(&index, plan) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("note: could not probe the {arch} pool ({e}); trying the build");
            return None;
        }
    };
    for file in &files {
        let url = join(mirror, file);
        match status(&url, "HEAD") {
            Ok(200) => {}
            Ok(code) => {
                return Some(format!(
                    "the mirror lists the {arch} packages this build needs but does not serve \
                     them all (HEAD {url} → {code})"
                ));
            }
            Err(e) => return Some(format!("{url}: {e}")),
        }
    }
    None
}

/// The (package, version) pairs of `rootfs --dry-run` plan lines ("name version arch
/// size"), for [`pool_served`].
pub fn plan_pairs<S: AsRef<str>>(lines: impl IntoIterator<Item = S>) -> Vec<(String, String)> {
    lines
        .into_iter()
        .filter_map(|l| {
            let mut w = l.as_ref().split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect()
}

/// The `Filename:` of each (package, version) of `plan` in a Packages.xz.
fn pool_files(index_url: &str, plan: &[(String, String)]) -> Result<Vec<String>, String> {
    let rest = index_url
        .strip_prefix("http://")
        .ok_or("only http:// mirrors can be probed")?;
    let body = plain_http_body(rest).map_err(|e| e.to_string())?;
    let mut text = Vec::new();
    liblzma::read::XzDecoder::new(body)
        .read_to_end(&mut text)
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text);
    let wanted: std::collections::BTreeSet<(&str, &str)> =
        plan.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let mut files = Vec::new();
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
                .map(str::trim)
        };
        if let (Some(p), Some(v), Some(f)) = (field("Package"), field("Version"), field("Filename"))
        {
            if wanted.contains(&(p, v)) {
                files.push(f.to_string());
            }
        }
    }
    if files.len() < wanted.len() {
        return Err(format!(
            "{} of the plan's {} packages are not in {index_url}",
            wanted.len() - files.len(),
            wanted.len()
        ));
    }
    Ok(files)
}

fn join(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

/// The HTTP status of `method url`, by hand (http://) or with curl (https://).
pub fn status(url: &str, method: &str) -> Result<u16, String> {
    if let Some(rest) = url.strip_prefix("http://") {
        return plain_http(rest, method).map_err(|e| e.to_string());
    }
    if url.starts_with("https://") || url.starts_with("ftp://") {
        if !have("curl") {
            return Err("cannot probe an https mirror without curl".into());
        }
        let mut cmd = std::process::Command::new("curl");
        cmd.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "30",
        ]);
        if method == "HEAD" {
            cmd.arg("-I");
        }
        let out = cmd.arg(url).output().map_err(|e| e.to_string())?;
        return String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .map_err(|_| "curl gave no status".into());
    }
    if let Some(path) = url.strip_prefix("file://") {
        return Ok(if Path::new(path).exists() { 200 } else { 404 });
    }
    Err(format!("unsupported URL {url}"))
}

/// Connect to `host[:port]` of `rest` and send `method path`; the stream is positioned at
/// the start of the answer.
fn plain_request(rest: &str, method: &str) -> std::io::Result<TcpStream> {
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr_str = if hostport.contains(':') {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    let host = hostport.split(':').next().unwrap_or(hostport);
    let mut last = None;
    for addr in addr_str.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(15)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(30)))?;
                s.set_write_timeout(Some(Duration::from_secs(30)))?;
                write!(
                    s,
                    "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: osbuilder-tests\r\n\
                     Connection: close\r\n\r\n"
                )?;
                return Ok(s);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no address")))
}

/// Read the status line and headers of an answer: (status, headers in lower case).
fn read_head(s: &mut TcpStream) -> std::io::Result<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        if s.read(&mut byte)? == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:?}")))?;
    Ok((code, text.to_ascii_lowercase()))
}

fn plain_http(rest: &str, method: &str) -> std::io::Result<u16> {
    let mut s = plain_request(rest, method)?;
    Ok(read_head(&mut s)?.0)
}

/// The body of a 200 answer to GET (identity transfer encoding only).
fn plain_http_body(rest: &str) -> std::io::Result<TcpStream> {
    let mut s = plain_request(rest, "GET")?;
    let (code, headers) = read_head(&mut s)?;
    if code != 200 {
        return Err(std::io::Error::other(format!("GET answered {code}")));
    }
    if headers.contains("transfer-encoding: chunked") {
        return Err(std::io::Error::other("chunked answer"));
    }
    Ok(s)
}
