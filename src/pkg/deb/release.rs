//! Repository trust: the Release file (InRelease, or Release + Release.gpg) must carry a
//! valid OpenPGP signature from a key in the distro's archive keyring (or a `--keyring`
//! the user trusts), must not be past its Valid-Until, and every index is then checked
//! against the SHA256 it lists.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};
use pgp::composed::{CleartextSignedMessage, Deserializable, DetachedSignature};

use super::control::parse_stanzas;

pub use crate::pkg::openpgp::Keyring;

/// Verify an InRelease (cleartext-signed) file; returns the signed text only.
pub fn verify_inrelease(data: &[u8], keyring: &Keyring) -> Result<String> {
    let text = std::str::from_utf8(data).context("InRelease is not UTF-8")?;
    let (msg, _) =
        CleartextSignedMessage::from_string(text).context("InRelease is not a signed message")?;
    let signed = msg.signed_text();
    let ok = msg
        .signatures()
        .iter()
        .any(|s| keyring.check(s, signed.as_bytes()).is_some());
    if !ok {
        bail!(
            "InRelease: no valid signature from a trusted key ({} keys tried); the file was \
             altered, or the repository is signed by a key you have not trusted (pass --keyring)",
            keyring.len()
        );
    }
    Ok(signed.replace("\r\n", "\n"))
}

/// Verify a Release file against its detached Release.gpg.
pub fn verify_detached(release: &[u8], sig: &[u8], keyring: &Keyring) -> Result<()> {
    let sigs: Vec<DetachedSignature> = if sig.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(sig).context("Release.gpg is not UTF-8")?;
        let (it, _) = DetachedSignature::from_string_many(text)?;
        it.collect::<Result<_, _>>()?
    } else {
        DetachedSignature::from_bytes_many(std::io::Cursor::new(sig.to_vec()))?
            .collect::<Result<_, _>>()?
    };
    if sigs
        .iter()
        .any(|s| keyring.check(&s.signature, release).is_some())
    {
        Ok(())
    } else {
        bail!(
            "Release.gpg: no valid signature from a trusted key over Release; the file was \
             altered, or the repository is signed by a key you have not trusted (pass --keyring)"
        )
    }
}

/// One index file listed in Release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub sha256: String,
    pub size: u64,
}

/// The fields of a verified Release file that matter here.
#[derive(Clone, Debug, Default)]
pub struct Release {
    pub suite: String,
    pub codename: String,
    pub architectures: Vec<String>,
    pub components: Vec<String>,
    pub valid_until: Option<String>,
    pub date: Option<String>,
    /// By path relative to dists/<suite>/.
    pub sha256: BTreeMap<String, IndexEntry>,
}

impl Release {
    pub fn parse(text: &str) -> Result<Release> {
        let stanzas = parse_stanzas(text);
        let s = stanzas.first().context("Release file is empty")?;
        let words = |k: &str| -> Vec<String> {
            s.get(k)
                .map(|v| v.split_whitespace().map(String::from).collect())
                .unwrap_or_default()
        };
        let mut sha256 = BTreeMap::new();
        for line in s.get("SHA256").unwrap_or("").lines() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let [h, size, path] = parts.as_slice() {
                sha256.insert(
                    path.to_string(),
                    IndexEntry {
                        sha256: h.to_ascii_lowercase(),
                        size: size.parse().context("bad size in Release SHA256")?,
                    },
                );
            }
        }
        if sha256.is_empty() {
            bail!("Release file lists no SHA256 index hashes; refusing an unverifiable repository");
        }
        Ok(Release {
            suite: s.get("Suite").unwrap_or("").trim().to_string(),
            codename: s.get("Codename").unwrap_or("").trim().to_string(),
            architectures: words("Architectures"),
            components: words("Components"),
            valid_until: s.get("Valid-Until").map(|v| v.trim().to_string()),
            date: s.get("Date").map(|v| v.trim().to_string()),
            sha256,
        })
    }

    /// Refuse a Release past its Valid-Until (a replayed, stale repository).
    pub fn check_valid_until(&self, now_unix: i64) -> Result<()> {
        if let Some(v) = &self.valid_until {
            let t = parse_rfc2822(v)
                .with_context(|| format!("cannot parse Valid-Until '{v}' in Release"))?;
            if now_unix > t {
                bail!(
                    "the repository's Release expired (Valid-Until: {v}); the mirror is stale or \
                     replaying old metadata — use an up-to-date mirror"
                );
            }
        }
        Ok(())
    }
}

/// "Sat, 22 Nov 2026 08:12:01 UTC" → seconds since the epoch (UTC/GMT/+0000 only).
pub fn parse_rfc2822(s: &str) -> Result<i64> {
    let s = s.trim();
    let s = s.split_once(',').map(|(_, r)| r.trim()).unwrap_or(s);
    let p: Vec<&str> = s.split_whitespace().collect();
    if p.len() < 4 {
        bail!("too few fields");
    }
    let day: i64 = p[0].parse()?;
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months
        .iter()
        .position(|m| m.eq_ignore_ascii_case(p[1]))
        .context("bad month")? as i64
        + 1;
    let year: i64 = p[2].parse()?;
    let hms: Vec<i64> = p[3]
        .split(':')
        .map(|x| x.parse())
        .collect::<Result<_, _>>()?;
    let offset = match p.get(4).copied() {
        None | Some("UTC") | Some("GMT") | Some("Z") => 0,
        Some(o) if o.len() == 5 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>()? * 3600 + o[3..5].parse::<i64>()? * 60)
        }
        Some(o) => bail!("unknown time zone {o}"),
    };
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if month <= 2 {
        (year - 1, month + 9)
    } else {
        (year, month - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Ok(days * 86400
        + hms.first().copied().unwrap_or(0) * 3600
        + hms.get(1).copied().unwrap_or(0) * 60
        + hms.get(2).copied().unwrap_or(0)
        - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_rfc2822("Thu, 01 Jan 1970 00:00:00 UTC").unwrap(), 0);
        assert_eq!(
            parse_rfc2822("Sat, 09 Aug 2025 09:13:04 UTC").unwrap(),
            1754730784
        );
        assert_eq!(
            parse_rfc2822("Sat, 09 Aug 2025 11:13:04 +0200").unwrap(),
            1754730784
        );
    }

    #[test]
    fn shipped_keyrings_load() {
        let set = crate::distro::DistroSet::embedded().unwrap();
        for d in ["debian", "ubuntu"] {
            let d = set.get(d).unwrap();
            let mut k = Keyring::default();
            for f in &d.keyrings {
                k.add(d.file(f).unwrap(), f).unwrap();
            }
            // As many keys as `gpg --show-keys` lists.
            let want = if d.name == "debian" { 9 } else { 3 };
            assert_eq!(k.len(), want, "{}", d.name);
        }
    }
}
