//! A client for the OCI distribution API over ureq (the HTTP client the rest of osbuilder
//! uses): manifests, blob HEAD/GET, chunked blob uploads that resume where an interrupted
//! chunk stopped, cross-repository mounts, and the referrers API. Authentication follows the
//! registry's challenge (Basic, or a Bearer token from its token service) with credentials
//! from the podman/docker auth files. Transient failures (connection errors, 429, 5xx) are
//! retried a bounded number of times with back-off; every other answer becomes an error
//! that says what the registry said and what to do.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use ureq::http;

use super::auth::{self, Challenge, Lookup};
use super::digest::Digest;
use super::reference::Reference;
use super::spec::{self, Index};

/// Default size of one upload chunk (a PATCH request).
pub const DEFAULT_CHUNK: u64 = 32 << 20;
const MAX_DOCUMENT: u64 = 8 << 20;

/// Connection settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Plain HTTP (else HTTPS; loopback registries always use plain HTTP).
    pub plain_http: bool,
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// Upload chunk size in bytes.
    pub chunk: u64,
    /// Actions to ask a token service for (`pull`, or `pull,push`).
    pub actions: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            plain_http: false,
            attempts: 4,
            chunk: DEFAULT_CHUNK,
            actions: "pull",
        }
    }
}

/// One repository on one registry.
pub struct Registry {
    agent: ureq::Agent,
    base: String,
    pub reference: Reference,
    settings: Settings,
    creds: Lookup,
    /// The Authorization header once a challenge was answered.
    auth: Mutex<Option<String>>,
    /// Other repositories the token must cover (cross-repository mounts).
    extra_scopes: Vec<String>,
}

/// What a request sends.
enum Payload<'a> {
    None,
    Bytes(&'a [u8]),
    /// `len` bytes of a file from `offset`.
    File(&'a File, u64, u64),
}

/// `Read` over a byte range of a file (positional reads: the file is shared by threads).
struct FileRange<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for FileRange<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "file shrank while uploading",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

type Response = http::Response<ureq::Body>;

/// Where a blob's bytes come from.
pub enum Source<'a> {
    /// Small blobs, sent in one request.
    Bytes(&'a [u8]),
    /// A file, sent in chunks.
    File(&'a File),
}

/// How a blob reached the registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// The registry had it (HEAD answered 200).
    Present,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Uploaded: `resumed` cut chunks were continued where the registry stopped,
    /// `restarted` times the registry had dropped the session and the blob began again.
    Uploaded { resumed: u32, restarted: u32 },
}

/// The answer to a manifest PUT.
#[derive(Clone, Debug)]
pub struct Put {
    pub digest: Option<String>,
    /// `OCI-Subject`: the registry indexed the manifest's subject (it has the referrers API).
    pub subject: Option<String>,
}

impl Registry {
    pub fn new(
        reference: &Reference,
        settings: Settings,
        mount_from: &[String],
    ) -> Result<Registry> {
        let plain = settings.plain_http || reference.is_loopback();
        let base = format!(
            "{}://{}",
            if plain { "http" } else { "https" },
            reference.api_host()
        );
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            // Idle timeouts: a registry that stops sending or taking bytes fails the request
            // (then retried) instead of hanging the push or pull; no cap on a whole transfer.
            .timeout_per_read(Some(Duration::from_secs(120)))
            .timeout_per_write(Some(Duration::from_secs(120)))
            .max_idle_connections_per_host(8)
            .user_agent(concat!("osbuilder/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Registry {
            agent: ureq::Agent::new_with_config(config),
            base,
            reference: reference.clone(),
            creds: auth::lookup(&reference.registry, &reference.repository)?,
            auth: Mutex::new(None),
            extra_scopes: mount_from
                .iter()
                .map(|r| format!("repository:{r}:pull"))
                .collect(),
            settings,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.reference.repository)
    }

    /// A Location header made absolute.
    fn absolute(&self, loc: &str) -> String {
        if loc.starts_with("http://") || loc.starts_with("https://") {
            loc.to_string()
        } else {
            format!(
                "{}{}{loc}",
                self.base,
                if loc.starts_with('/') { "" } else { "/" }
            )
        }
    }

    /// Send a request, answering an auth challenge once and retrying transient failures
    /// when `retry` (the payload is replayable: bytes or a file range).
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Payload,
        retry: bool,
    ) -> Result<Response> {
        let attempts = if retry {
            self.settings.attempts.max(1)
        } else {
            1
        };
        let mut authed = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut b = http::Request::builder().method(method).uri(url);
            if let Some(a) = self.auth.lock().unwrap().clone() {
                b = b.header("Authorization", a);
            }
            for (k, v) in headers {
                b = b.header(*k, v.as_str());
            }
            let result = match &body {
                Payload::None => {
                    let req = b
                        .header("Content-Length", "0")
                        .body(())
                        .context("building a request")?;
                    self.agent.run(req)
                }
                Payload::Bytes(bytes) => {
                    let req = b.body(*bytes).context("building a request")?;
                    self.agent.run(req)
                }
                Payload::File(f, off, len) => {
                    let mut r = FileRange {
                        file: f,
                        pos: *off,
                        end: off + len,
                    };
                    let req = b
                        .header("Content-Length", len.to_string())
                        .body(ureq::SendBody::from_reader(&mut r))
                        .context("building a request")?;
                    self.agent.run(req)
                }
            };
            match result {
                Ok(resp) if resp.status() == 401 && !authed => {
                    authed = true;
                    attempt -= 1;
                    let challenge = resp
                        .headers()
                        .get("www-authenticate")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    self.authenticate(challenge.as_deref())?;
                }
                Ok(resp) if resp.status() == 401 => return Err(self.unauthorized(true)),
                Ok(resp)
                    if matches!(resp.status().as_u16(), 429 | 500 | 502 | 503 | 504)
                        && attempt < attempts =>
                {
                    backoff(attempt);
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < attempts && transient(&e) => backoff(attempt),
                Err(e) => {
                    return Err(anyhow!(e).context(format!(
                        "cannot reach registry {} ({method} {url}) after {attempt} attempt(s): is it running and is \
                         the address right?{}",
                        self.reference.registry,
                        if self.base.starts_with("https") { " (for a registry without TLS pass --plain-http)" } else { "" }
                    )));
                }
            }
        }
    }

    fn unauthorized(&self, tried: bool) -> anyhow::Error {
        let r = &self.reference;
        match (&self.creds.credentials, tried) {
            (Some(c), _) => anyhow!(
                "registry {} refused the credentials for {} from {} (401): log in again with `podman login {}`",
                r.registry,
                c.username,
                c.source.display(),
                r.registry
            ),
            (None, _) => {
                let searched: Vec<_> = self
                    .creds
                    .searched
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                let helper = match &self.creds.helper {
                    Some(h) => format!(
                        " (a credential helper, docker-credential-{h}, is configured, but osbuilder does not run helpers)"
                    ),
                    None => String::new(),
                };
                anyhow!(
                    "registry {} requires credentials for {} (401) and none were found{helper}: log in with \
                     `podman login {}` or `docker login {}`, or set REGISTRY_AUTH_FILE (searched: {})",
                    r.registry,
                    r.repository,
                    r.registry,
                    r.registry,
                    searched.join(", ")
                )
            }
        }
    }

    /// Answer a `WWW-Authenticate` challenge: Basic with the stored credentials, or a
    /// Bearer token from the registry's token service.
    fn authenticate(&self, challenge: Option<&str>) -> Result<()> {
        let header = match challenge.and_then(auth::parse_challenge) {
            Some(Challenge::Basic) => match &self.creds.credentials {
                Some(c) => c.basic_header(),
                None => return Err(self.unauthorized(false)),
            },
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut url = realm.clone();
                let mut params = Vec::new();
                if let Some(s) = service {
                    params.push(format!("service={}", urlencode(&s)));
                }
                let own = format!(
                    "repository:{}:{}",
                    self.reference.repository, self.settings.actions
                );
                let mut scopes = vec![scope.unwrap_or(own.clone())];
                if !scopes.contains(&own) {
                    scopes.push(own);
                }
                scopes.extend(self.extra_scopes.iter().cloned());
                for s in scopes {
                    params.push(format!("scope={}", urlencode(&s)));
                }
                if !params.is_empty() {
                    url.push(if url.contains('?') { '&' } else { '?' });
                    url.push_str(&params.join("&"));
                }
                let mut b = http::Request::builder().method("GET").uri(&url);
                if let Some(c) = &self.creds.credentials {
                    b = b.header("Authorization", c.basic_header());
                }
                let resp = self
                    .agent
                    .run(b.body(()).context("building a token request")?)
                    .with_context(|| format!("cannot reach the token service {realm}"))?;
                if resp.status() == 401 || resp.status() == 403 {
                    return Err(self.unauthorized(false));
                }
                if !resp.status().is_success() {
                    bail!("the token service {realm} answered {}", resp.status());
                }
                let v: serde_json::Value = serde_json::from_slice(&read_small(resp)?)
                    .with_context(|| format!("the token service {realm} did not answer JSON"))?;
                let token = v
                    .get("token")
                    .or_else(|| v.get("access_token"))
                    .and_then(|t| t.as_str())
                    .with_context(|| format!("the token service {realm} gave no token"))?;
                format!("Bearer {token}")
            }
            None => bail!(
                "registry {} asked for an authentication scheme osbuilder does not speak ({})",
                self.reference.registry,
                challenge.unwrap_or("no WWW-Authenticate header")
            ),
        };
        *self.auth.lock().unwrap() = Some(header);
        Ok(())
    }

    /// An error for an unexpected answer, with the registry's own message.
    fn unexpected(&self, what: &str, resp: Response) -> anyhow::Error {
        let status = resp.status();
        let body = read_small(resp).unwrap_or_default();
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                let e = v.get("errors")?.get(0)?.clone();
                Some(format!(
                    "{}: {}",
                    e.get("code")?.as_str()?,
                    e.get("message").and_then(|m| m.as_str()).unwrap_or("")
                ))
            })
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&body[..body.len().min(200)])
                    .trim()
                    .to_string()
            });
        let hint = match status.as_u16() {
            403 => " (access denied: check the account's rights on this repository)",
            404 => " (not found: check the repository and tag)",
            _ => "",
        };
        anyhow!(
            "{what}: registry {} answered {status}{hint}: {detail}",
            self.reference.registry
        )
    }

    /// Whether the repository has the blob.
    pub fn has_blob(&self, d: &Digest) -> Result<bool> {
        self.has_blob_in(&self.reference.repository, d)
    }

    /// Whether `repository` (of the same registry) has the blob.
    fn has_blob_in(&self, repository: &str, d: &Digest) -> Result<bool> {
        let url = format!("{}/v2/{repository}/blobs/{d}", self.base);
        let resp = self.send("HEAD", &url, &[], Payload::None, true)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 | 401 | 403 => Ok(false),
            _ => Err(self.unexpected(&format!("checking blob {d} in {repository}"), resp)),
        }
    }

    /// Upload the blob `d` of `size` bytes unless the registry has it, mounting it from
    /// `mount_from` repositories when one of them has it. Small blobs go in one request,
    /// files in chunks.
    pub fn push_blob(
        &self,
        d: &Digest,
        size: u64,
        source: Source,
        mount_from: &[String],
    ) -> Result<BlobOutcome> {
        if self.has_blob(d)? {
            return Ok(BlobOutcome::Present);
        }
        // Mount from the first repository that has the blob; a registry that will not mount
        // answers 202 with an upload session, which is then used.
        let mut location = None;
        for from in mount_from {
            if !self.has_blob_in(from, d)? {
                continue;
            }
            let url = self.url(&format!(
                "blobs/uploads/?mount={d}&from={}",
                urlencode(from)
            ));
            let resp = self.send("POST", &url, &[], Payload::None, true)?;
            match resp.status().as_u16() {
                201 => return Ok(BlobOutcome::Mounted),
                202 => location = Some(self.location(&resp)?),
                _ => return Err(self.unexpected(&format!("mounting blob {d} from {from}"), resp)),
            }
            break;
        }
        let location = match location {
            Some(l) => l,
            None => self.start_upload(d)?,
        };
        match source {
            Source::Bytes(bytes) => {
                let sep = if location.contains('?') { '&' } else { '?' };
                let url = format!("{location}{sep}digest={d}");
                let headers = [("Content-Type", "application/octet-stream".to_string())];
                let resp = self.send("PUT", &url, &headers, Payload::Bytes(bytes), true)?;
                match resp.status().as_u16() {
                    201 | 204 => Ok(BlobOutcome::Uploaded {
                        resumed: 0,
                        restarted: 0,
                    }),
                    _ => Err(self.unexpected(&format!("uploading blob {d}"), resp)),
                }
            }
            Source::File(file) => self.upload_chunks(d, size, file, location),
        }
    }

    /// The chunked upload of a file into the session at `location`. After a failed chunk
    /// the session's status says how far the registry got: where it kept the session
    /// (204 with `Range`), the upload continues from there; where it dropped it
    /// (distribution 2.x/3.x cancel a session whose chunk was cut), the blob starts again
    /// in a new session. Either way at most `attempts` failures per blob.
    fn upload_chunks(
        &self,
        d: &Digest,
        size: u64,
        file: &File,
        mut location: String,
    ) -> Result<BlobOutcome> {
        let mut offset = 0u64;
        let mut failures = 0u32;
        let (mut resumed, mut restarted) = (0u32, 0u32);
        while offset < size {
            let len = self.settings.chunk.min(size - offset);
            let headers = [
                ("Content-Type", "application/octet-stream".to_string()),
                ("Content-Range", format!("{offset}-{}", offset + len - 1)),
            ];
            let sent = self.send(
                "PATCH",
                &location,
                &headers,
                Payload::File(file, offset, len),
                false,
            );
            let failure = match sent {
                Ok(resp) if resp.status() == 202 => {
                    location = self.location(&resp)?;
                    offset += len;
                    continue;
                }
                // The session is gone or out of step.
                Ok(resp) if matches!(resp.status().as_u16(), 404 | 416) => {
                    self.unexpected(&format!("uploading blob {d}"), resp)
                }
                Ok(resp) if resp.status().is_server_error() || resp.status() == 429 => {
                    self.unexpected(&format!("uploading blob {d}"), resp)
                }
                Ok(resp) => return Err(self.unexpected(&format!("uploading blob {d}"), resp)),
                Err(e) => e,
            };
            failures += 1;
            if failures >= self.settings.attempts.max(1) {
                return Err(failure.context(format!("uploading blob {d} failed {failures} times")));
            }
            backoff(failures);
            let status = self.send("GET", &location, &[], Payload::None, true)?;
            match (status.status().as_u16(), range_end(&status)) {
                (204 | 202, Some(end)) if end <= size => {
                    location = self.location(&status).unwrap_or(location);
                    offset = end;
                    resumed += 1;
                }
                _ => {
                    location = self.start_upload(d)?;
                    offset = 0;
                    restarted += 1;
                }
            }
        }
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={d}");
        let resp = self.send("PUT", &url, &[], Payload::None, false)?;
        match resp.status().as_u16() {
            201 | 204 => Ok(BlobOutcome::Uploaded { resumed, restarted }),
            400 => Err(self.unexpected(
                &format!(
                    "finishing blob {d} (the registry computed another digest: the layout's copy does not match \
                     its name; was the artifact changed after `osbuilder oci`?)"
                ),
                resp,
            )),
            _ => Err(self.unexpected(&format!("finishing blob {d}"), resp)),
        }
    }

    fn start_upload(&self, d: &Digest) -> Result<String> {
        let resp = self.send(
            "POST",
            &self.url("blobs/uploads/"),
            &[],
            Payload::None,
            true,
        )?;
        if resp.status() != 202 {
            return Err(self.unexpected(&format!("starting the upload of blob {d}"), resp));
        }
        self.location(&resp)
    }

    fn location(&self, resp: &Response) -> Result<String> {
        let loc = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("the registry's upload answer has no Location header")?;
        Ok(self.absolute(loc))
    }

    /// PUT a manifest or index under a tag or its digest.
    pub fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<Put> {
        let headers = [("Content-Type", media_type.to_string())];
        let resp = self.send(
            "PUT",
            &self.url(&format!("manifests/{reference}")),
            &headers,
            Payload::Bytes(bytes),
            true,
        )?;
        if resp.status() != 201 && resp.status() != 200 {
            return Err(self.unexpected(&format!("storing manifest {reference}"), resp));
        }
        let h = |k: &str| {
            resp.headers()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        Ok(Put {
            digest: h("docker-content-digest"),
            subject: h("oci-subject"),
        })
    }

    /// A manifest or index by tag or digest: (media type, bytes), verified against the digest
    /// asked for (or the one the registry names). None when the registry has no such thing.
    pub fn get_manifest(&self, reference: &str) -> Result<Option<(String, Vec<u8>)>> {
        let headers = [("Accept", spec::MANIFEST_ACCEPT.to_string())];
        let resp = self.send(
            "GET",
            &self.url(&format!("manifests/{reference}")),
            &headers,
            Payload::None,
            true,
        )?;
        if resp.status() == 404 {
            return Ok(None);
        }
        if resp.status() != 200 {
            return Err(self.unexpected(&format!("fetching manifest {reference}"), resp));
        }
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let named = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let bytes = read_small(resp)?;
        let actual = Digest::of(&bytes);
        let expected = reference
            .parse::<Digest>()
            .ok()
            .map(|d| d.to_string())
            .or(named);
        if let Some(e) = expected {
            if e != actual.as_str() {
                bail!(
                    "manifest {reference} from registry {} does not match its digest ({e} expected, got {actual}): \
                     the registry's copy is corrupt or was changed in transit",
                    self.reference.registry
                );
            }
        }
        // The media type in the document wins over Content-Type.
        let mt = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.get("mediaType")
                    .and_then(|m| m.as_str())
                    .map(String::from)
            })
            .unwrap_or(ctype);
        Ok(Some((mt, bytes)))
    }

    /// A blob's content, streaming (the caller verifies the digest as it reads).
    pub fn get_blob(&self, d: &Digest) -> Result<impl Read + use<>> {
        let resp = self.send(
            "GET",
            &self.url(&format!("blobs/{d}")),
            &[],
            Payload::None,
            true,
        )?;
        if resp.status() != 200 {
            return Err(self.unexpected(&format!("fetching blob {d}"), resp));
        }
        Ok(resp.into_body().into_reader())
    }

    /// The referrers of `d` through the referrers API; None when the registry lacks the API
    /// (404), so the caller reads the `sha256-<hex>` fallback tag instead.
    pub fn referrers_api(&self, d: &Digest, artifact_type: Option<&str>) -> Result<Option<Index>> {
        let mut path = format!("referrers/{d}");
        if let Some(t) = artifact_type {
            path.push_str(&format!("?artifactType={}", urlencode(t)));
        }
        let headers = [("Accept", spec::INDEX.to_string())];
        let resp = self.send("GET", &self.url(&path), &headers, Payload::None, true)?;
        match resp.status().as_u16() {
            200 => {
                let ctype = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let bytes = read_small(resp)?;
                if !ctype.starts_with(spec::INDEX) {
                    return Ok(None);
                }
                Ok(Some(
                    serde_json::from_slice(&bytes)
                        .context("the referrers answer is not an image index")?,
                ))
            }
            404 | 405 => Ok(None),
            _ => Err(self.unexpected(&format!("listing referrers of {d}"), resp)),
        }
    }
}

fn read_small(resp: Response) -> Result<Vec<u8>> {
    resp.into_body()
        .with_config()
        .limit(MAX_DOCUMENT)
        .read_to_vec()
        .context("reading the registry's answer")
}

/// The end of an upload's `Range: 0-N` header, as the next offset.
fn range_end(resp: &Response) -> Option<u64> {
    let r = resp.headers().get("range")?.to_str().ok()?;
    let end: u64 = r
        .trim_start_matches("bytes=")
        .split('-')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    // "0-0" is what distribution answers for an empty upload as well as for one byte.
    Some(if end == 0 { 0 } else { end + 1 })
}

fn transient(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_)
            | ureq::Error::ConnectionFailed
            | ureq::Error::HostNotFound
            | ureq::Error::Timeout(_)
            | ureq::Error::Protocol(_)
    )
}

fn backoff(attempt: u32) {
    std::thread::sleep(Duration::from_millis(250 << attempt.min(4)));
}

/// Percent-encode a query value.
fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;

    /// A registry that wants a Bearer token from its token service (as Docker Hub, GHCR and
    /// Harbor do): answers (method, path, authorization) → (status, headers, body).
    fn fake_registry(
        answer: impl Fn(&str, &str, Option<&str>, u16) -> (u16, Vec<String>, String) + Send + 'static,
    ) -> u16 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { break };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        break;
                    }
                    let mut parts = line.split_whitespace();
                    let (method, path) = (
                        parts.next().unwrap_or("").to_string(),
                        parts.next().unwrap_or("").to_string(),
                    );
                    let mut auth = None;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = h
                            .strip_prefix("authorization: ")
                            .or_else(|| h.strip_prefix("Authorization: "))
                        {
                            auth = Some(v.trim().to_string());
                        }
                    }
                    let (status, headers, body) = answer(&method, &path, auth.as_deref(), port);
                    let mut resp =
                        format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", body.len());
                    for h in headers {
                        resp.push_str(&format!("{h}\r\n"));
                    }
                    resp.push_str("\r\n");
                    resp.push_str(&body);
                    if conn.write_all(resp.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        });
        port
    }

    #[test]
    fn a_bearer_challenge_is_answered_with_a_token_for_the_repository() {
        let doc = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let port = fake_registry(move |method, path, auth, port| match (method, path, auth) {
            ("GET", "/v2/team/os/manifests/v1", Some("Bearer tok-123")) => (
                200,
                vec![format!("Content-Type: {}", spec::INDEX)],
                doc.to_string(),
            ),
            ("GET", "/v2/team/os/manifests/v1", _) => (
                401,
                vec![format!(
                    "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"fake\",scope=\"repository:team/os:pull\""
                )],
                String::new(),
            ),
            ("GET", "/token?service=fake&scope=repository%3Ateam%2Fos%3Apull", None) => {
                (200, vec![], r#"{"token":"tok-123"}"#.to_string())
            }
            _ => (404, vec![], String::new()),
        });
        let r = Reference::parse(&format!("127.0.0.1:{port}/team/os:v1")).unwrap();
        let reg = Registry::new(&r, Settings::default(), &[]).unwrap();
        let (mt, bytes) = reg.get_manifest("v1").unwrap().unwrap();
        assert_eq!(mt, spec::INDEX);
        assert_eq!(bytes, doc.as_bytes());
        // A 404 is "not there", not an error.
        assert!(reg.get_manifest("v2").unwrap().is_none());
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            urlencode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert_eq!(
            urlencode("application/spdx+json"),
            "application%2Fspdx%2Bjson"
        );
    }
}
