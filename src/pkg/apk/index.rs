//! APKINDEX: the signed list of a repository's packages.
//!
//! The file is `APKINDEX.tar.gz`: a signature member, then a gzip member holding a tar
//! with `DESCRIPTION` and `APKINDEX`. `APKINDEX` is a text file of records separated by
//! blank lines, one `X:value` field per line (see apk-tools' database.c for the letters).

use anyhow::{Context, Result, bail};

use super::sign::{Keyring, SignedArchive, gunzip};
use super::version::Dep;

/// A package as an index (or a .PKGINFO) describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Package {
    /// `C:` `Q1` + base64(SHA-1 of the compressed control member).
    pub checksum: String,
    pub name: String,
    pub version: String,
    pub arch: String,
    /// `S:` size of the .apk file.
    pub size: u64,
    /// `I:` installed size.
    pub installed_size: u64,
    pub description: String,
    pub url: String,
    pub license: String,
    pub origin: String,
    pub maintainer: String,
    pub build_time: Option<u64>,
    pub commit: String,
    pub depends: Vec<Dep>,
    /// `p:` names this package provides, `name` or `name=version`.
    pub provides: Vec<Provide>,
    /// `i:` install this package once all of these are installed.
    pub install_if: Vec<Dep>,
    /// `k:` preference among providers of the same name.
    pub provider_priority: Option<u32>,
    /// `r:` packages whose files this one may overwrite.
    pub replaces: Vec<String>,
    /// `q:` replaces priority.
    pub replaces_priority: Option<u32>,
}

/// A provided name, with a version (`so:libc.so=1`) or without one (`cmd:sh`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Provide {
    pub name: String,
    pub version: Option<String>,
}

impl Provide {
    pub fn parse(s: &str) -> Provide {
        match s.split_once('=') {
            Some((n, v)) => Provide {
                name: n.to_string(),
                version: Some(v.to_string()),
            },
            None => Provide {
                name: s.to_string(),
                version: None,
            },
        }
    }
}

impl std::fmt::Display for Provide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.version {
            Some(v) => write!(f, "{}={v}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl Package {
    /// `name-version.apk`, the file name in the repository.
    pub fn file_name(&self) -> String {
        format!("{}-{}.apk", self.name, self.version)
    }

    fn set(&mut self, key: char, value: &str) -> Result<()> {
        let deps = |v: &str| -> Result<Vec<Dep>> {
            v.split_whitespace()
                .map(|d| Dep::parse(d).map_err(anyhow::Error::msg))
                .collect()
        };
        let num = |v: &str| -> Result<u64> {
            v.trim()
                .parse()
                .with_context(|| format!("field {key}: '{v}' is not a number"))
        };
        match key {
            'C' => self.checksum = value.to_string(),
            'P' => self.name = value.to_string(),
            'V' => self.version = value.to_string(),
            'A' => self.arch = value.to_string(),
            'S' => self.size = num(value)?,
            'I' => self.installed_size = num(value)?,
            'T' => self.description = value.to_string(),
            'U' => self.url = value.to_string(),
            'L' => self.license = value.to_string(),
            'o' => self.origin = value.to_string(),
            'm' => self.maintainer = value.to_string(),
            't' => self.build_time = Some(num(value)?),
            'c' => self.commit = value.to_string(),
            'D' => self.depends = deps(value)?,
            'p' => self.provides = value.split_whitespace().map(Provide::parse).collect(),
            'i' => self.install_if = deps(value)?,
            'k' => self.provider_priority = Some(num(value)? as u32),
            'r' => self.replaces = value.split_whitespace().map(str::to_string).collect(),
            'q' => self.replaces_priority = Some(num(value)? as u32),
            // Fields apk itself ignores in an index or we do not need.
            _ => {}
        }
        Ok(())
    }

    fn validate(&self) -> Result<()> {
        if self.name.is_empty() || self.version.is_empty() {
            bail!("a record has no P: (name) or V: (version)");
        }
        Ok(())
    }
}

/// Parse the text of an `APKINDEX` file.
pub fn parse_text(text: &str) -> Result<Vec<Package>> {
    let mut out = Vec::new();
    let mut cur = Package::default();
    let mut fields = 0;
    for (no, line) in text.lines().enumerate() {
        if line.is_empty() {
            if fields > 0 {
                cur.validate()
                    .with_context(|| format!("APKINDEX record ending at line {}", no + 1))?;
                out.push(std::mem::take(&mut cur));
                fields = 0;
            }
            continue;
        }
        let mut chars = line.chars();
        let key = chars.next().unwrap();
        if chars.next() != Some(':') {
            bail!("APKINDEX line {}: expected 'X:value', got '{line}'", no + 1);
        }
        cur.set(key, &line[2..])
            .with_context(|| format!("APKINDEX line {}", no + 1))?;
        fields += 1;
    }
    if fields > 0 {
        cur.validate().context("last APKINDEX record")?;
        out.push(cur);
    }
    Ok(out)
}

/// A verified, parsed index.
pub struct Index {
    pub description: String,
    pub packages: Vec<Package>,
    /// The key whose signature verified it.
    pub signed_by: String,
}

/// Verify an `APKINDEX.tar.gz` against the keyring, then parse it.
pub fn load(data: &[u8], keys: &Keyring, what: &str) -> Result<Index> {
    let ar = SignedArchive::parse(data, what)?;
    let signed_region = {
        // The signature covers everything after the signature member.
        let first = ar.members.first().unwrap().as_ptr() as usize - data.as_ptr() as usize;
        &data[first..]
    };
    let signed_by = keys.verify(&ar.signatures, signed_region, what)?;
    let mut description = String::new();
    let mut index_text = None;
    for m in &ar.members {
        let tar_bytes = gunzip(m)?;
        let mut t = tar::Archive::new(tar_bytes.as_slice());
        for e in t.entries()? {
            let mut e = e?;
            let name = e.path_bytes().into_owned();
            let mut body = String::new();
            use std::io::Read;
            match name.as_slice() {
                b"APKINDEX" => {
                    e.read_to_string(&mut body)
                        .with_context(|| format!("{what}: APKINDEX is not UTF-8"))?;
                    index_text = Some(body);
                }
                b"DESCRIPTION" => {
                    e.read_to_string(&mut body)?;
                    description = body.trim().to_string();
                }
                _ => {}
            }
        }
    }
    let Some(text) = index_text else {
        bail!("{what} has no APKINDEX file");
    };
    let packages = parse_text(&text).with_context(|| format!("parsing {what}"))?;
    Ok(Index {
        description,
        packages,
        signed_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_fields() {
        let text = "C:Q1abc=\nP:busybox\nV:1.35.0-r17\nA:x86_64\nS:123\nI:456\nT:Size optimized toolbox\n\
                    D:so:libc.musl-x86_64.so.1\np:cmd:busybox=1.35.0-r17 /bin/sh\nk:100\n\n\
                    P:ifupdown-ng-doc\nV:0.12-r0\ni:docs ifupdown-ng=0.12-r0\n";
        let p = parse_text(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].name, "busybox");
        assert_eq!(p[0].size, 123);
        assert_eq!(p[0].provider_priority, Some(100));
        assert_eq!(p[0].provides[0].version.as_deref(), Some("1.35.0-r17"));
        assert_eq!(p[0].provides[1].name, "/bin/sh");
        assert_eq!(p[1].install_if.len(), 2);
        assert!(parse_text("P:x\nbogus\n").is_err());
        assert!(parse_text("P:x\n\n").is_err(), "record without a version");
    }
}
