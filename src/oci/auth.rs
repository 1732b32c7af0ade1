//! Registry credentials, read from the files `podman login` and `docker login` write, and
//! the `WWW-Authenticate` challenges registries answer with (Basic, or Bearer with a token
//! service). Credential helpers (`credsStore`, `credHelpers`) are not run: osbuilder never
//! executes programs named in a config file; the error for a 401 says so.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;

/// A user name and password (or identity token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// Where they were found (for error messages).
    pub source: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials({} from {})",
            self.username,
            self.source.display()
        )
    }
}

impl Credentials {
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// The auth files searched, in podman's then docker's order.
pub fn auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        files.push(f);
    }
    if let Some(d) = env("XDG_RUNTIME_DIR") {
        files.push(d.join("containers/auth.json"));
    }
    let home = env("HOME");
    if let Some(h) = &home {
        files.push(h.join(".config/containers/auth.json"));
    }
    match env("DOCKER_CONFIG") {
        Some(d) => files.push(d.join("config.json")),
        None => {
            if let Some(h) = &home {
                files.push(h.join(".docker/config.json"));
            }
        }
    }
    files
}

/// What the auth files say about `registry` (`host[:port]`) for `repository`.
#[derive(Debug, Default)]
pub struct Lookup {
    pub credentials: Option<Credentials>,
    /// A credential helper is configured for this registry (not supported).
    pub helper: Option<String>,
    pub searched: Vec<PathBuf>,
}

pub fn lookup(registry: &str, repository: &str) -> Result<Lookup> {
    lookup_in(&auth_files(), registry, repository)
}

pub fn lookup_in(files: &[PathBuf], registry: &str, repository: &str) -> Result<Lookup> {
    let mut out = Lookup {
        searched: files.to_vec(),
        ..Lookup::default()
    };
    for f in files {
        let Ok(bytes) = std::fs::read(f) else {
            continue;
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is not JSON", f.display()))?;
        if let Some(c) = from_auths(&v, f, registry, repository)? {
            out.credentials = Some(c);
            return Ok(out);
        }
        if out.helper.is_none() {
            out.helper = v
                .get("credHelpers")
                .and_then(|h| h.get(registry))
                .or_else(|| v.get("credsStore"))
                .and_then(|h| h.as_str())
                .map(String::from);
        }
    }
    Ok(out)
}

/// The `auths` entry for the most specific key: `host/repo/…` (podman), `host`, and the
/// URL forms docker writes (`https://host/v1/`).
fn from_auths(
    v: &serde_json::Value,
    file: &Path,
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>> {
    let Some(auths) = v.get("auths").and_then(|a| a.as_object()) else {
        return Ok(None);
    };
    let normal = |k: &str| -> String {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let k = k.trim_end_matches('/');
        let k = k
            .strip_suffix("/v1")
            .or_else(|| k.strip_suffix("/v2"))
            .unwrap_or(k);
        match k {
            "index.docker.io" | "registry-1.docker.io" => "docker.io".to_string(),
            _ => k.to_string(),
        }
    };
    let full = format!("{registry}/{repository}");
    let mut best: Option<(usize, &serde_json::Value)> = None;
    for (k, entry) in auths {
        let k = normal(k);
        let matches = k == registry
            || (full.starts_with(&k) && full[k.len()..].starts_with('/'))
            || k == full;
        if matches && best.is_none_or(|(len, _)| k.len() > len) {
            best = Some((k.len(), entry));
        }
    }
    let Some((_, entry)) = best else {
        return Ok(None);
    };
    let (user, pass) = if let Some(a) = entry
        .get("auth")
        .and_then(|a| a.as_str())
        .filter(|a| !a.is_empty())
    {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.trim())
            .with_context(|| {
                format!(
                    "{}: the auth entry for {registry} is not base64",
                    file.display()
                )
            })?;
        let raw = String::from_utf8(raw)
            .with_context(|| format!("{}: bad auth entry for {registry}", file.display()))?;
        let (u, p) = raw.split_once(':').with_context(|| {
            format!(
                "{}: the auth entry for {registry} is not user:password",
                file.display()
            )
        })?;
        (u.to_string(), p.to_string())
    } else if let Some(t) = entry.get("identitytoken").and_then(|t| t.as_str()) {
        ("<token>".to_string(), t.to_string())
    } else {
        (
            entry
                .get("username")
                .and_then(|u| u.as_str())
                .unwrap_or_default()
                .to_string(),
            entry
                .get("password")
                .and_then(|u| u.as_str())
                .unwrap_or_default()
                .to_string(),
        )
    };
    if user.is_empty() && pass.is_empty() {
        return Ok(None);
    }
    Ok(Some(Credentials {
        username: user,
        password: pass,
        source: file.to_path_buf(),
    }))
}

/// A `WWW-Authenticate` challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let (scheme, rest) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = std::collections::BTreeMap::new();
    // key="value" pairs; values may hold commas (scopes with several actions).
    let mut s = rest.trim();
    while !s.is_empty() {
        let (k, after) = s.split_once('=')?;
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (
                &q[..end],
                q[end + 1..]
                    .trim_start()
                    .trim_start_matches(',')
                    .trim_start(),
            )
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v, n.trim_start()),
                None => (after, ""),
            }
        };
        params.insert(k.trim().to_ascii_lowercase(), v.to_string());
        s = next;
    }
    Some(Challenge::Bearer {
        realm: params.remove("realm")?,
        service: params.remove("service"),
        scope: params.remove("scope"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_auth_entry_wins_and_helpers_are_noticed() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("auth.json");
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        std::fs::write(
            &f,
            serde_json::json!({"auths": {
                "127.0.0.1:5000": {"auth": b64("a:1")},
                "127.0.0.1:5000/team": {"auth": b64("b:2")},
                "https://index.docker.io/v1/": {"auth": b64("c:3")},
            }, "credHelpers": {"ghcr.io": "gh"}})
            .to_string(),
        )
        .unwrap();
        let files = vec![d.path().join("missing.json"), f.clone()];
        let c = |reg, repo| {
            lookup_in(&files, reg, repo)
                .unwrap()
                .credentials
                .map(|c| c.username)
        };
        assert_eq!(c("127.0.0.1:5000", "other/x").as_deref(), Some("a"));
        assert_eq!(c("127.0.0.1:5000", "team/x").as_deref(), Some("b"));
        assert_eq!(c("docker.io", "library/alpine").as_deref(), Some("c"));
        let l = lookup_in(&files, "ghcr.io", "x").unwrap();
        assert!(l.credentials.is_none());
        assert_eq!(l.helper.as_deref(), Some("gh"));
    }

    #[test]
    fn challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:x/y:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:x/y:pull,push".into())
            })
        );
        assert_eq!(parse_challenge("Negotiate"), None);
    }
}
