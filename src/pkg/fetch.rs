//! Downloads: HTTP(S) through ureq (http_proxy/https_proxy/no_proxy from the environment),
//! file:// URLs, bounded retries with back-off, and parallel package downloads into the
//! cache with a progress bar (shown only when stderr is a terminal).
//!
//! A mirror that stops sending is given up on quickly and visibly: every read must bring
//! data within the idle timeout (30 s, `OSBUILDER_FETCH_IDLE_TIMEOUT` seconds), a transfer
//! that pauses for less goes on, each retry is announced with its reason in one line on
//! stderr, and no new attempt starts once a file has taken [`FILE_BUDGET`]; so a stalled
//! mirror fails a build in about two minutes, a trickling one in under half an hour.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

use super::PackageRef;
use super::cache::Cache;

/// Why a fetch failed; `NotFound` lets callers try an alternative (InRelease → Release).
#[derive(Debug)]
pub enum FetchError {
    NotFound(String),
    Other(anyhow::Error),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::NotFound(u) => write!(
                f,
                "{u}: not found (404): the mirror does not serve this file; check --mirror, the \
                 suite (--os-version) and --arch, or retry later if the mirror is mid-sync"
            ),
            FetchError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// The default idle timeout: how long one read may wait for data.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Whole-body limit of one attempt (a mirror that trickles rather than stalls).
const BODY_LIMIT: Duration = Duration::from_secs(600);
/// No new attempt starts once one file has taken this long.
pub const FILE_BUDGET: Duration = Duration::from_secs(900);

/// `OSBUILDER_FETCH_IDLE_TIMEOUT` (seconds, fractions allowed), else the default.
fn idle_timeout_from_env() -> Result<Duration> {
    parse_idle_timeout(
        std::env::var("OSBUILDER_FETCH_IDLE_TIMEOUT")
            .ok()
            .as_deref(),
    )
}

fn parse_idle_timeout(value: Option<&str>) -> Result<Duration> {
    match value {
        None => Ok(DEFAULT_IDLE_TIMEOUT),
        Some(v) if v.trim().is_empty() => Ok(DEFAULT_IDLE_TIMEOUT),
        Some(v) => v
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                crate::error::refused(format!(
                    "OSBUILDER_FETCH_IDLE_TIMEOUT='{v}' is not a positive number of seconds"
                ))
            }),
    }
}

/// What went wrong with one attempt, in words a user can act on.
#[derive(Debug)]
enum Failure {
    /// No data for the idle timeout.
    Stalled { got: u64, of: Option<u64> },
    /// The connection closed before the announced length.
    CutShort { got: u64, of: Option<u64> },
    /// Data kept coming, too slowly to finish within the body limit.
    TooSlow { got: u64, of: Option<u64> },
    /// Anything else (connection refused, TLS, DNS, local write errors…).
    Other(anyhow::Error),
}

fn bytes_of(got: u64, of: Option<u64>) -> String {
    match of {
        Some(m) => format!("{got} of {m} bytes"),
        None => format!("{got} bytes"),
    }
}

impl Failure {
    fn describe(&self, idle: Duration, body: Duration) -> String {
        match self {
            Failure::Stalled { got: 0, of: None } => {
                format!("the mirror did not answer for {} s", fmt_secs(idle))
            }
            Failure::Stalled { got, of } => format!(
                "the mirror sent no data for {} s after {}",
                fmt_secs(idle),
                bytes_of(*got, *of)
            ),
            Failure::CutShort { got, of } => format!(
                "the download was cut short after {} (the server closed the connection)",
                bytes_of(*got, *of)
            ),
            Failure::TooSlow { got, of } => format!(
                "the mirror is too slow: only {} in {} s",
                bytes_of(*got, *of),
                fmt_secs(body)
            ),
            Failure::Other(e) => format!("{e:#}"),
        }
    }

    /// Classify an I/O or HTTP error met after `got` bytes.
    fn of_error(e: ureq::Error, got: u64, of: Option<u64>) -> Failure {
        match e {
            ureq::Error::Timeout(ureq::Timeout::PerRead) => Failure::Stalled { got, of },
            ureq::Error::Timeout(ureq::Timeout::RecvBody) => Failure::TooSlow { got, of },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => {
                Failure::Stalled { got, of }
            }
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Failure::CutShort { got, of }
            }
            e => Failure::Other(anyhow!(e)),
        }
    }
}

fn fmt_secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}")
    } else {
        format!("{s:.1}")
    }
}

impl std::error::Error for FetchError {}

/// A repository's top-level signed index as fetched: where from, and its SHA-256. The
/// lock file records these ([`Fetcher::get_index`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct IndexDigest {
    pub url: String,
    pub sha256: String,
}

/// Index pinning: the indexes a lock file recorded, served from the cache when it holds them,
/// and a log of the indexes actually used.
struct IndexState {
    cache: Cache,
    pins: std::collections::HashMap<String, String>,
    log: Mutex<Vec<IndexDigest>>,
}

#[derive(Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
    /// Set by [`Fetcher::pinning`]: index bytes are kept in the cache and logged.
    index: Option<std::sync::Arc<IndexState>>,
    /// Longest wait for data on one read (see the module docs).
    idle: Duration,
    /// Longest time one attempt may take to receive the body.
    body: Duration,
    /// Attempts per file (1 = no retry).
    pub attempts: u32,
    /// Parallel downloads.
    pub jobs: usize,
    /// Show a progress bar when stderr is a terminal.
    pub progress: bool,
}

impl Default for Fetcher {
    fn default() -> Self {
        Fetcher::new()
    }
}

impl Fetcher {
    /// A fetcher with the idle timeout of `OSBUILDER_FETCH_IDLE_TIMEOUT`; a malformed value
    /// is refused (`new` would fall back to the default).
    pub fn from_env() -> Result<Fetcher> {
        Ok(Fetcher::with_idle_timeout(idle_timeout_from_env()?))
    }

    /// A fetcher with the idle timeout of `OSBUILDER_FETCH_IDLE_TIMEOUT`, or the default.
    pub fn new() -> Fetcher {
        Fetcher::with_idle_timeout(idle_timeout_from_env().unwrap_or(DEFAULT_IDLE_TIMEOUT))
    }

    pub fn with_idle_timeout(idle: Duration) -> Fetcher {
        Fetcher::with_timeouts(idle, BODY_LIMIT)
    }

    /// Idle timeout per read and whole-body limit per attempt.
    fn with_timeouts(idle: Duration, body: Duration) -> Fetcher {
        // Mirrors throttle per connection more than per client; a few more parallel
        // downloads than cores pays off. $OSBUILDER_DOWNLOAD_JOBS overrides.
        let jobs = std::env::var("OSBUILDER_DOWNLOAD_JOBS")
            .ok()
            .and_then(|j| j.parse().ok())
            .filter(|j| *j > 0)
            .unwrap_or(8);
        // The default configuration reads http_proxy/https_proxy/all_proxy/no_proxy.
        // Every worker keeps its connection alive between packages: ureq's default pool
        // (3 idle per host) made most downloads open a new connection, and where new
        // connections are rate-limited (as on our build machines) that took 25 s for
        // Debian's 46 MiB systemd set instead of about 1 s.
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .timeout_per_read(Some(idle))
            .timeout_recv_body(Some(body))
            .max_idle_connections_per_host(jobs)
            .max_idle_connections(jobs * 4)
            .user_agent(concat!("osbuilder/", env!("CARGO_PKG_VERSION")))
            .build();
        Fetcher {
            agent: ureq::Agent::with_parts(
                config,
                ureq::unversioned::transport::DefaultConnector::default(),
                CachingResolver::default(),
            ),
            index: None,
            idle,
            body,
            attempts: 4,
            jobs,
            progress: true,
        }
    }

    /// Stream `url` into `out`, retrying transient failures (the output is rewound by
    /// the caller-provided `reset` before each retry). A 404 is not retried; each retry
    /// says why on stderr.
    fn stream(
        &self,
        url: &str,
        reset: &mut dyn FnMut() -> Result<()>,
        out: &mut dyn Write,
        on_bytes: &dyn Fn(u64),
    ) -> Result<(), FetchError> {
        let started = std::time::Instant::now();
        let attempts = self.attempts.max(1);
        let mut attempt = 0;
        loop {
            attempt += 1;
            reset().map_err(FetchError::Other)?;
            let failure = match self.stream_once(url, out, on_bytes) {
                Ok(()) => return Ok(()),
                Err(Attempt::NotFound) => return Err(FetchError::NotFound(url.to_string())),
                Err(Attempt::Local(e)) => return Err(FetchError::Other(e)),
                Err(Attempt::Failed(f)) => f,
            };
            let why = failure.describe(self.idle, self.body);
            if attempt >= attempts || started.elapsed() >= FILE_BUDGET {
                return Err(FetchError::Other(anyhow!(
                    "downloading {url} failed after {attempt} attempt{} in {:.0} s: {why}; \
                     retry later, or use another --mirror (check the network and \
                     http_proxy/https_proxy)",
                    if attempt == 1 { "" } else { "s" },
                    started.elapsed().as_secs_f64()
                )));
            }
            eprintln!(
                "osbuilder: {url}: {why}; retrying (attempt {} of {attempts})",
                attempt + 1
            );
            std::thread::sleep(Duration::from_millis(300 << attempt.min(4)));
        }
    }

    fn stream_once(
        &self,
        url: &str,
        out: &mut dyn Write,
        on_bytes: &dyn Fn(u64),
    ) -> Result<(), Attempt> {
        let (mut reader, length): (Box<dyn Read>, Option<u64>) =
            if let Some(path) = url.strip_prefix("file://") {
                match File::open(path) {
                    Ok(f) => (Box::new(f), None),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(Attempt::NotFound);
                    }
                    Err(e) => return Err(Attempt::Local(anyhow!(e).context(url.to_string()))),
                }
            } else if url.starts_with("http://") || url.starts_with("https://") {
                match self.agent.get(url).call() {
                    Ok(resp) => {
                        let length = resp.body().content_length();
                        (Box::new(resp.into_body().into_reader()), length)
                    }
                    Err(ureq::Error::StatusCode(404 | 410)) => return Err(Attempt::NotFound),
                    Err(e) => {
                        let f = match Failure::of_error(e, 0, None) {
                            Failure::Other(e) => Failure::Other(e.context(url.to_string())),
                            f => f,
                        };
                        return Err(Attempt::Failed(f));
                    }
                }
            } else {
                return Err(Attempt::Local(anyhow!(
                    "unsupported URL '{url}': use http://, https:// or file://"
                )));
            };
        let mut buf = vec![0u8; 128 * 1024];
        let mut got = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Attempt::Failed(Failure::of_error(
                        ureq::Error::from(e),
                        got,
                        length,
                    )));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| Attempt::Local(anyhow!(e).context("writing download")))?;
            got += n as u64;
            on_bytes(n as u64);
        }
        if length.is_some_and(|m| got < m) {
            return Err(Attempt::Failed(Failure::CutShort { got, of: length }));
        }
        out.flush()
            .map_err(|e| Attempt::Local(anyhow!(e).context("writing download")))?;
        Ok(())
    }

    /// The whole body of `url` in memory (for indexes). A 404 is `FetchError::NotFound`.
    pub fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        // Each attempt starts from an empty buffer (a retry restarts the download).
        let buf = std::cell::RefCell::new(Vec::new());
        struct Sink<'a>(&'a std::cell::RefCell<Vec<u8>>);
        impl Write for Sink<'_> {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.borrow_mut().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        self.stream(
            url,
            &mut || {
                buf.borrow_mut().clear();
                Ok(())
            },
            &mut Sink(&buf),
            &|_| {},
        )?;
        Ok(buf.into_inner())
    }

    /// The first `len` bytes of `url` (an HTTP range request; a server that ignores the
    /// range is read only that far), e.g. an rpm's lead and headers without its payload.
    /// Not cached: the caller verifies what it reads (a header's own signature).
    pub fn get_prefix(&self, url: &str, len: u64) -> Result<Vec<u8>, FetchError> {
        let mut last = None;
        for attempt in 1..=self.attempts.max(1) {
            let reader: Box<dyn Read> = if let Some(path) = url.strip_prefix("file://") {
                match File::open(path) {
                    Ok(f) => Box::new(f),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        return Err(FetchError::NotFound(url.to_string()));
                    }
                    Err(e) => return Err(FetchError::Other(anyhow!(e).context(url.to_string()))),
                }
            } else {
                match self
                    .agent
                    .get(url)
                    .header("Range", format!("bytes=0-{}", len.saturating_sub(1)))
                    .call()
                {
                    Ok(resp) => Box::new(resp.into_body().into_reader()),
                    Err(ureq::Error::StatusCode(404 | 410)) => {
                        return Err(FetchError::NotFound(url.to_string()));
                    }
                    Err(e) => {
                        last = Some(anyhow!(e));
                        std::thread::sleep(Duration::from_millis(300 << attempt.min(4)));
                        continue;
                    }
                }
            };
            let mut buf = Vec::with_capacity(len.min(1 << 24) as usize);
            match reader.take(len).read_to_end(&mut buf) {
                Ok(_) if buf.len() as u64 == len => return Ok(buf),
                Ok(_) => {
                    return Err(FetchError::Other(anyhow!(
                        "{url} is shorter than its first {len} bytes (got {})",
                        buf.len()
                    )));
                }
                Err(e) => last = Some(anyhow!(e)),
            }
        }
        Err(FetchError::Other(
            last.unwrap_or_else(|| anyhow!("no attempt"))
                .context(format!("reading the first {len} bytes of {url}")),
        ))
    }

    /// A fetcher sharing this one's connections that keeps every top-level index it fetches
    /// ([`Fetcher::get_index`]) in `cache`, serves the `pins` (url → sha256) from the cache
    /// without touching the network when it holds them, and logs what it used.
    pub fn pinning(&self, cache: &Cache, pins: &[IndexDigest]) -> Fetcher {
        Fetcher {
            index: Some(std::sync::Arc::new(IndexState {
                cache: cache.clone(),
                pins: pins
                    .iter()
                    .map(|p| (p.url.clone(), p.sha256.clone()))
                    .collect(),
                log: Mutex::new(Vec::new()),
            })),
            ..self.clone()
        }
    }

    /// A repository's top-level signed index (Debian's InRelease / Release / Release.gpg,
    /// Alpine's APKINDEX.tar.gz, an rpm repomd.xml and its signature): what the repository's
    /// content hangs from, and what a lock file pins. Backends fetch these with this method
    /// and everything else with [`Fetcher::get`] or through the content-addressed cache; the
    /// caller still verifies the bytes (signatures) as it would fetched ones. Without
    /// [`Fetcher::pinning`] this is [`Fetcher::get`].
    pub fn get_index(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let Some(state) = &self.index else {
            return self.get(url);
        };
        let pinned = state
            .pins
            .get(url)
            .map(|h| super::Digest::Sha256(h.clone()));
        let cached = match &pinned {
            Some(d) => state.cache.lookup(d).map_err(FetchError::Other)?,
            None => None,
        };
        let data = match cached {
            Some(p) => std::fs::read(&p).map_err(|e| {
                FetchError::Other(anyhow!(e).context(format!("reading {}", p.display())))
            })?,
            None => {
                let data = self.get(url)?;
                let d = super::Digest::Sha256(super::sha256_hex(&data));
                // Kept so that a later locked build can run offline; failing to keep it
                // only costs that.
                let _ = state.cache.insert_bytes(&d, &data);
                data
            }
        };
        state
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(IndexDigest {
                url: url.to_string(),
                sha256: super::sha256_hex(&data),
            });
        Ok(data)
    }

    /// The top-level indexes [`Fetcher::get_index`] returned, in order (empty without
    /// [`Fetcher::pinning`]).
    pub fn index_log(&self) -> Vec<IndexDigest> {
        match &self.index {
            Some(s) => s.log.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            None => Vec::new(),
        }
    }

    /// The verified cache entry for `pkg`, downloading it if the cache lacks it.
    pub fn fetch_one(&self, cache: &Cache, pkg: &PackageRef) -> Result<PathBuf> {
        self.fetch_one_counted(cache, pkg, &|_| {})
    }

    fn fetch_one_counted(
        &self,
        cache: &Cache,
        pkg: &PackageRef,
        on_bytes: &dyn Fn(u64),
    ) -> Result<PathBuf> {
        if let Some(p) = cache.lookup(&pkg.digest)? {
            on_bytes(pkg.size);
            return Ok(p);
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let res = cache.insert_with(&pkg.digest, |f| {
                let writer = f.try_clone()?;
                self.stream(
                    &pkg.url,
                    &mut || {
                        use std::io::Seek;
                        f.set_len(0)?;
                        f.rewind()?;
                        Ok(())
                    },
                    &mut &writer,
                    on_bytes,
                )
                .map_err(anyhow::Error::from)
            });
            match res {
                Ok(p) => return Ok(p),
                // A digest mismatch may be a mirror mid-sync; one more try, then fail.
                Err(e) if tries < 2 && format!("{e:#}").contains("mismatch") => continue,
                Err(e) => {
                    // Download errors name the URL already; others (a digest mismatch) get it.
                    let ctx = if format!("{e:#}").contains(&pkg.url) {
                        format!("fetching {} {}", pkg.name, pkg.version)
                    } else {
                        format!("fetching {} {} ({})", pkg.name, pkg.version, pkg.url)
                    };
                    return Err(e.context(ctx));
                }
            }
        }
    }

    /// Fetch every package (in parallel, cache first) without drawing anything; `on_bytes`
    /// hears every chunk, and the answer says how many bytes came over the network (not
    /// from the cache). Paths are returned in input order.
    pub fn fetch_packages_quietly(
        &self,
        cache: &Cache,
        pkgs: &[PackageRef],
        on_bytes: &(dyn Fn(u64) + Sync),
    ) -> Result<(Vec<PathBuf>, u64)> {
        let fetched = std::sync::atomic::AtomicU64::new(0);
        let out = crate::parallel::map(pkgs, self.jobs, |_, pkg| {
            if let Some(p) = cache.lookup(&pkg.digest)? {
                on_bytes(pkg.size);
                return Ok(p);
            }
            self.fetch_one_counted(cache, pkg, &|n| {
                fetched.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                on_bytes(n)
            })
        })?;
        Ok((out, fetched.into_inner()))
    }

    /// Fetch every package (in parallel, cache first); paths are returned in input order.
    pub fn fetch_packages(&self, cache: &Cache, pkgs: &[PackageRef]) -> Result<Vec<PathBuf>> {
        let total: u64 = pkgs.iter().map(|p| p.size).sum();
        let bar = if self.progress && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                )
                .unwrap()
                .progress_chars("=> "),
            );
            b.set_message("downloading");
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let out = crate::parallel::map(pkgs, self.jobs, |_, pkg| {
            self.fetch_one_counted(cache, pkg, &|n| bar.inc(n))
        });
        bar.finish_and_clear();
        out
    }
}

/// How one attempt ended, when not with the whole file.
enum Attempt {
    /// 404/410 (or a missing file:// path): not retried.
    NotFound,
    /// Retried.
    Failed(Failure),
    /// Not the network's fault (the cache's disk, a bad URL): not retried.
    Local(anyhow::Error),
}

/// Looks each host up once per fetcher and reuses the answer. ureq resolves the host for
/// every request, even one sent on a pooled connection, and a single lost DNS datagram
/// costs glibc's 5 s retry timeout: on our build machines that was 20 s of a 25 s download
/// of 137 packages. (curl and apt resolve once, too.)
#[derive(Debug, Default)]
struct CachingResolver {
    inner: ureq::unversioned::resolver::DefaultResolver,
    answers:
        Mutex<std::collections::HashMap<String, ureq::unversioned::resolver::ResolvedSocketAddrs>>,
}

impl ureq::unversioned::resolver::Resolver for CachingResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: ureq::unversioned::transport::NextTimeout,
    ) -> Result<ureq::unversioned::resolver::ResolvedSocketAddrs, ureq::Error> {
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or(""),
            uri.authority().map(|a| a.as_str()).unwrap_or("")
        );
        if let Some(a) = self
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(a.clone());
        }
        let a = self.inner.resolve(uri, config, timeout)?;
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, a.clone());
        Ok(a)
    }
}

/// Join a repository base URL and a relative path with exactly one slash.
pub fn join_url(base: &str, rel: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        rel.trim_start_matches('/')
    )
}

/// `Result<T, FetchError>` → anyhow, for callers that treat 404 like any failure.
pub fn required<T>(r: Result<T, FetchError>) -> Result<T> {
    r.map_err(anyhow::Error::from)
}

/// Read a whole local file or URL given as a path (convenience for tests and keyrings).
pub fn read_local(path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pkg::{Digest, sha256_hex};
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// What the test server does with the body after the headers.
    #[derive(Clone, Copy)]
    enum Fault {
        /// Half the body, then nothing (the connection stays open).
        StallForever,
        /// Half the body, a pause, the rest.
        Pause(Duration),
        /// Half the body, then close.
        Truncate,
        /// One byte at a time, each after `Duration`.
        Trickle(Duration),
        NotFound,
    }

    /// An HTTP server on 127.0.0.1 serving `body` with `fault` on every request.
    fn serve(body: &'static [u8], fault: Fault) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/pool/x.deb", l.local_addr().unwrap());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut line = String::new();
                    while r.read_line(&mut line).is_ok_and(|n| n > 2) {
                        line.clear();
                    }
                    if let Fault::NotFound = fault {
                        let _ = s.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        return;
                    }
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    if let Fault::Trickle(d) = fault {
                        let _ = s.write_all(head.as_bytes());
                        for b in body {
                            std::thread::sleep(d);
                            if s.write_all(&[*b]).is_err() {
                                return;
                            }
                        }
                        return;
                    }
                    let half = body.len() / 2;
                    let _ = s.write_all(head.as_bytes());
                    let _ = s.write_all(&body[..half]);
                    let _ = s.flush();
                    match fault {
                        Fault::StallForever => std::thread::sleep(Duration::from_secs(3600)),
                        Fault::Pause(d) => {
                            std::thread::sleep(d);
                            let _ = s.write_all(&body[half..]);
                        }
                        Fault::Truncate | Fault::NotFound | Fault::Trickle(_) => {}
                    }
                });
            }
        });
        url
    }

    fn fetcher(idle_ms: u64) -> Fetcher {
        let mut f = Fetcher::with_idle_timeout(Duration::from_millis(idle_ms));
        f.attempts = 2;
        f
    }

    const BODY: &[u8] = &[7u8; 64 * 1024];

    #[test]
    fn a_pause_shorter_than_the_idle_timeout_is_waited_out() {
        let url = serve(BODY, Fault::Pause(Duration::from_millis(300)));
        assert_eq!(fetcher(3000).get(&url).unwrap(), BODY);
    }

    #[test]
    fn a_stalled_body_fails_after_the_idle_timeout_and_says_so() {
        let url = serve(BODY, Fault::StallForever);
        // Two attempts of 0.5 s and one back-off: about 2 s. The guard only turns a hang
        // (the old 10-minute body limit per attempt) into a failure.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || tx.send(fetcher(500).get(&url).map(|_| ())));
        let err = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a stalled download must be given up on")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("failed after 2 attempts")
                && err.contains("the mirror sent no data for 0.5 s after 32768 of 65536 bytes")
                && err.contains("another --mirror"),
            "{err}"
        );
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn a_trickle_is_bounded_by_the_body_limit_and_called_slow() {
        let url = serve(BODY, Fault::Trickle(Duration::from_millis(50)));
        let mut f = Fetcher::with_timeouts(Duration::from_secs(5), Duration::from_millis(700));
        f.attempts = 1;
        let err = f.get(&url).unwrap_err().to_string();
        assert!(
            err.contains("failed after 1 attempt in")
                && err.contains("the mirror is too slow: only ")
                && err.contains(" of 65536 bytes in 0.7 s"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_body_says_how_much_arrived() {
        let url = serve(BODY, Fault::Truncate);
        let err = fetcher(3000).get(&url).unwrap_err().to_string();
        assert!(
            err.contains("the download was cut short after 32768 of 65536 bytes"),
            "{err}"
        );
        assert!(!err.contains("Peer disconnected"), "{err}");
    }

    #[test]
    fn a_404_says_the_mirror_does_not_serve_the_file() {
        let url = serve(BODY, Fault::NotFound);
        let err = fetcher(3000).get(&url).unwrap_err();
        assert!(matches!(err, FetchError::NotFound(_)));
        let err = err.to_string();
        assert!(
            err.contains("not found (404): the mirror does not serve this file")
                && err.contains("--mirror")
                && err.contains("mid-sync"),
            "{err}"
        );
    }

    #[test]
    fn idle_timeout_values() {
        assert_eq!(
            parse_idle_timeout(Some("2.5")).unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(parse_idle_timeout(None).unwrap(), DEFAULT_IDLE_TIMEOUT);
        assert_eq!(parse_idle_timeout(Some("")).unwrap(), DEFAULT_IDLE_TIMEOUT);
        for bad in ["soon", "0", "-3", "inf"] {
            let err = parse_idle_timeout(Some(bad)).unwrap_err().to_string();
            assert!(
                err.contains(&format!("OSBUILDER_FETCH_IDLE_TIMEOUT='{bad}'")),
                "{err}"
            );
        }
    }

    #[test]
    fn file_urls_fetch_into_the_cache_and_bad_digests_fail() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("a.deb");
        std::fs::write(&src, b"payload").unwrap();
        let cache = Cache::at(&d.path().join("cache")).unwrap();
        let f = Fetcher::new();
        let good = PackageRef {
            name: "a".into(),
            version: "1".into(),
            arch: "all".into(),
            size: 7,
            url: format!("file://{}", src.display()),
            digest: Digest::Sha256(sha256_hex(b"payload")),
        };
        let bad = PackageRef {
            digest: Digest::Sha256(sha256_hex(b"other")),
            ..good.clone()
        };
        let paths = f
            .fetch_packages(&cache, std::slice::from_ref(&good))
            .unwrap();
        assert_eq!(std::fs::read(&paths[0]).unwrap(), b"payload");
        let err = format!("{:#}", f.fetch_packages(&cache, &[bad]).unwrap_err());
        assert!(err.contains("mismatch"), "{err}");
        let missing = PackageRef {
            url: format!("file://{}/nope", d.path().display()),
            digest: Digest::Sha256(sha256_hex(b"x")),
            ..good
        };
        assert!(f.fetch_one(&cache, &missing).is_err());
        assert!(matches!(f.get(&missing.url), Err(FetchError::NotFound(_))));
    }
}
