//! dpkg-style path filters (`dpkg --path-exclude` / `--path-include`, dpkg.cfg's
//! `path-exclude=GLOB` lines), applied while a package's payload is extracted, so a slim
//! guest never carries documentation, man pages or translations it will not read.
//!
//! The rules are dpkg's (dpkg(1), src/main/filters.c), so a filter written for dpkg means
//! the same here, whatever the package format:
//! - patterns are matched with fnmatch(3) without `FNM_PATHNAME` against the absolute path
//!   the package names (`/usr/share/doc/bash/README`): `*` matches `/` too;
//! - every rule is tried in order and the last one that matches decides;
//! - an excluded directory or symlink is kept when an include rule could match something
//!   below it (its name starts with the include pattern's literal part, up to the first
//!   wildcard), so `/usr/share/doc/*` + `/usr/share/doc/*/copyright` keeps the folders the
//!   copyright files live in.
//!
//! The packages still count as installed: their databases (dpkg's .list files, apk's
//! installed db, the rpm database) still name the left-out files, as dpkg's own filters do.

use std::fmt;

use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// One rule: `path-exclude=GLOB` or `path-include=GLOB`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub include: bool,
    /// An absolute glob (`/usr/share/doc/*`).
    pub pattern: String,
}

impl Rule {
    /// Parse a dpkg configuration line (`path-exclude=/usr/share/man/*`).
    pub fn parse(line: &str) -> Result<Rule> {
        let (include, pattern) = if let Some(p) = line.strip_prefix("path-exclude=") {
            (false, p)
        } else if let Some(p) = line.strip_prefix("path-include=") {
            (true, p)
        } else {
            bail!("path filter '{line}' is neither path-exclude=GLOB nor path-include=GLOB");
        };
        Rule::new(include, pattern)
    }

    pub fn new(include: bool, pattern: &str) -> Result<Rule> {
        if !pattern.starts_with('/') {
            bail!("path filter pattern '{pattern}' must be absolute (as dpkg's: /usr/share/doc/*)");
        }
        Ok(Rule {
            include,
            pattern: pattern.to_string(),
        })
    }

    /// The literal part of the pattern, up to its first wildcard, without trailing `/`.
    fn literal_prefix(&self) -> &[u8] {
        let p = self.pattern.as_bytes();
        let end = p
            .iter()
            .position(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'))
            .unwrap_or(p.len());
        let mut lit = &p[..end];
        while let [rest @ .., b'/'] = lit {
            lit = rest;
        }
        lit
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.include { "include" } else { "exclude" };
        write!(f, "path-{kind}={}", self.pattern)
    }
}

/// An ordered list of rules. Empty: everything is kept.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PathFilter {
    pub rules: Vec<Rule>,
}

impl PathFilter {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether the entry at `path` ("/a/b", as the package names it) is left out.
    /// `dir_or_link`: the entry is a directory or a symlink (see the module docs).
    pub fn skips(&self, path: &[u8], dir_or_link: bool) -> bool {
        let mut skip = false;
        for r in &self.rules {
            if fnmatch(r.pattern.as_bytes(), path) {
                skip = !r.include;
            }
        }
        if skip && dir_or_link {
            let parent_of_included = self.rules.iter().any(|r| {
                let lit = r.literal_prefix();
                r.include && path.len() >= lit.len() && &path[..lit.len()] == lit
            });
            if parent_of_included {
                return false;
            }
        }
        skip
    }

    /// The rules as dpkg configuration lines.
    pub fn lines(&self) -> Vec<String> {
        self.rules.iter().map(Rule::to_string).collect()
    }
}

/// What the filters left out of a rootfs (osbuilder.yaml's `path-filters`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Excluded {
    /// The rules in force, as dpkg configuration lines, in order.
    pub rules: Vec<String>,
    /// Entries left out (files, links, directories, device nodes); None when the distro's
    /// own installer applied the rules (dpkg in a builder container), which counts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Bytes of file content left out (None as for `entries`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// fnmatch(3) with no flags: `*` and `?` match any byte, `/` and a leading `.` included;
/// `[...]` / `[!...]` / `[^...]` classes with ranges; `\` quotes the next byte.
pub fn fnmatch(pattern: &[u8], name: &[u8]) -> bool {
    // Iterative matcher with one backtrack point for the last `*` (linear in practice).
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => match class(&pattern[p..], name[n]) {
                Some((true, len)) => Some(p + len),
                Some((false, _)) => None,
                // An unterminated `[` is an ordinary byte.
                None => (name[n] == b'[').then_some(p + 1),
            },
            Some(b'\\') if p + 1 < pattern.len() => (pattern[p + 1] == name[n]).then_some(p + 2),
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    p = sp + 1;
                    n = sn + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// Match one byte against the class at the start of `pat` (`[...]`): Some((matched,
/// length of the class)), None if the class is not terminated.
fn class(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pat.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        let lo = if lo == b'\\' {
            i += 1;
            *pat.get(i)?
        } else {
            lo
        };
        if pat.get(i + 1) == Some(&b'-') && pat.get(i + 2).is_some_and(|b| *b != b']') {
            let hi = pat[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(lines: &[&str]) -> PathFilter {
        PathFilter {
            rules: lines.iter().map(|l| Rule::parse(l).unwrap()).collect(),
        }
    }

    #[test]
    fn fnmatch_as_without_fnm_pathname() {
        for (p, n, want) in [
            ("/usr/share/doc/*", "/usr/share/doc/bash/README", true),
            ("/usr/share/doc/*", "/usr/share/doc", false),
            (
                "/usr/share/doc/*/copyright",
                "/usr/share/doc/bash/copyright",
                true,
            ),
            (
                "/usr/share/doc/*/copyright",
                "/usr/share/doc/a/b/copyright",
                true,
            ),
            (
                "/usr/share/man/man[1-9]/*",
                "/usr/share/man/man8/x.8.gz",
                true,
            ),
            (
                "/usr/share/man/man[!1-9]/*",
                "/usr/share/man/man8/x.8.gz",
                false,
            ),
            ("/a?c", "/abc", true),
            ("/a?c", "/ac", false),
            ("/a\\*", "/a*", true),
            ("/a\\*", "/ab", false),
            ("/a[", "/a[", true),
            ("/[]]", "/]", true),
            ("*.mo", "/usr/share/locale/de/LC_MESSAGES/x.mo", true),
            ("/x/**/y", "/x/y", false),
            ("/x/*y*", "/x/aybyc", true),
        ] {
            assert_eq!(fnmatch(p.as_bytes(), n.as_bytes()), want, "{p} vs {n}");
        }
    }

    #[test]
    fn last_match_decides_and_parents_of_includes_stay() {
        let f = filter(&[
            "path-exclude=/usr/share/doc/*",
            "path-include=/usr/share/doc/*/copyright",
        ]);
        assert!(f.skips(b"/usr/share/doc/bash/README", false));
        assert!(!f.skips(b"/usr/share/doc/bash/copyright", false));
        // The folder (and a symlinked folder) of a copyright file is kept.
        assert!(!f.skips(b"/usr/share/doc/bash", true));
        assert!(!f.skips(b"/usr/share/doc/libfoo", true));
        // A symlinked file is not a folder, but dpkg cannot tell: it keeps links too.
        assert!(!f.skips(b"/usr/share/doc/bash/changelog.gz", true));
        assert!(!f.skips(b"/usr/bin/bash", false));
        let g = filter(&["path-exclude=/usr/share/man/*"]);
        assert!(g.skips(b"/usr/share/man/man1", true));
        assert!(!g.skips(b"/usr/share/man", true));
        // Order matters: an include before the exclude is overridden by it.
        let h = filter(&["path-include=/a/keep", "path-exclude=/a/*"]);
        assert!(h.skips(b"/a/keep", false));
    }

    #[test]
    fn rules_are_checked() {
        assert!(Rule::parse("path-exclude=usr/share/doc/*").is_err());
        assert!(Rule::parse("exclude=/usr").is_err());
        let r = Rule::parse("path-include=/usr/share/doc/*/copyright").unwrap();
        assert_eq!(r.to_string(), "path-include=/usr/share/doc/*/copyright");
        assert_eq!(r.literal_prefix(), b"/usr/share/doc");
    }
}
