//! Downloads: HTTP(S) through ureq (http_proxy/https_proxy/no_proxy from the environment),
//! file:// URLs, bounded retries with back-off, and parallel package downloads into the
//! cache with a progress bar (shown only when stderr is a terminal).

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
            FetchError::NotFound(u) => write!(f, "{u}: not found (404)"),
            FetchError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for FetchError {}

#[derive(Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
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
    pub fn new() -> Fetcher {
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
            .timeout_recv_body(Some(Duration::from_secs(600)))
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
            attempts: 4,
            jobs,
            progress: true,
        }
    }

    /// Stream `url` into `out`, retrying transient failures (the output is rewound by
    /// the caller-provided `reset` before each retry). A 404 is not retried.
    fn stream(
        &self,
        url: &str,
        reset: &mut dyn FnMut() -> Result<()>,
        out: &mut dyn Write,
        on_bytes: &dyn Fn(u64),
    ) -> Result<(), FetchError> {
        let mut last = None;
        for attempt in 0..self.attempts.max(1) {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300 << attempt.min(4)));
            }
            reset().map_err(FetchError::Other)?;
            match self.stream_once(url, out, on_bytes) {
                Ok(()) => return Ok(()),
                Err(FetchError::NotFound(u)) => return Err(FetchError::NotFound(u)),
                Err(FetchError::Other(e)) => last = Some(e),
            }
        }
        Err(FetchError::Other(last.unwrap().context(format!(
            "downloading {url} failed after {} attempts (check the mirror URL, the network and \
             http_proxy/https_proxy)",
            self.attempts
        ))))
    }

    fn stream_once(
        &self,
        url: &str,
        out: &mut dyn Write,
        on_bytes: &dyn Fn(u64),
    ) -> Result<(), FetchError> {
        let mut reader: Box<dyn Read> = if let Some(path) = url.strip_prefix("file://") {
            match File::open(path) {
                Ok(f) => Box::new(f),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(FetchError::NotFound(url.to_string()));
                }
                Err(e) => return Err(FetchError::Other(anyhow!(e).context(url.to_string()))),
            }
        } else if url.starts_with("http://") || url.starts_with("https://") {
            match self.agent.get(url).call() {
                Ok(resp) => Box::new(resp.into_body().into_reader()),
                Err(ureq::Error::StatusCode(404 | 410)) => {
                    return Err(FetchError::NotFound(url.to_string()));
                }
                Err(e) => return Err(FetchError::Other(anyhow!(e).context(url.to_string()))),
            }
        } else {
            return Err(FetchError::Other(anyhow!(
                "unsupported URL '{url}': use http://, https:// or file://"
            )));
        };
        let mut buf = vec![0u8; 128 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(FetchError::Other(
                        anyhow!(e).context(format!("reading {url}")),
                    ));
                }
            };
            out.write_all(&buf[..n])
                .map_err(|e| FetchError::Other(anyhow!(e).context("writing download")))?;
            on_bytes(n as u64);
        }
        out.flush()
            .map_err(|e| FetchError::Other(anyhow!(e).context("writing download")))?;
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
                    return Err(e.context(format!(
                        "fetching {} {} ({})",
                        pkg.name, pkg.version, pkg.url
                    )));
                }
            }
        }
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
