//! Alpine version ordering and dependency constraints, with apk-tools' semantics.
//!
//! An Alpine version is `digit{.digit}...{letter}{_suffix{number}}...{~hash}{-rN}`.
//! Tokens are compared left to right: numbers numerically (but as strings when either has
//! a leading zero, as in Gentoo), letters by byte, suffixes in the order
//! `_alpha < _beta < _pre < _rc < (none) < _cvs < _svn < _git < _hg < _p`. When one
//! version runs out first, the longer one is newer, unless what follows is a pre-release
//! suffix. Invalid versions still compare (apk falls back to the token order), so a
//! broken version string in an index never panics.

use std::cmp::Ordering;
use std::fmt;

/// Token kinds in the order apk-tools gives them: a token may only be followed by one of
/// the same or a later kind (a digit may follow a letter: `1.2a.3` is not allowed but
/// `1a` is), and the kind order decides which of two diverging versions is newer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tok {
    InitialDigit,
    Digit,
    Letter,
    Suffix,
    SuffixNo,
    CommitHash,
    RevisionNo,
    End,
    Invalid,
}

/// Suffix ranks; `NONE` is the pivot between pre-release and post-release suffixes.
const SUFFIX_NONE: u8 = 5;

fn suffix_rank(s: &[u8]) -> Option<u8> {
    Some(match s {
        b"alpha" => 1,
        b"beta" => 2,
        b"pre" => 3,
        b"rc" => 4,
        b"cvs" => 6,
        b"svn" => 7,
        b"git" => 8,
        b"hg" => 9,
        b"p" => 10,
        _ => return None,
    })
}

struct Tokens<'a> {
    rest: &'a [u8],
    tok: Tok,
    value: &'a [u8],
    number: u64,
    suffix: u8,
}

impl<'a> Tokens<'a> {
    fn new(s: &'a [u8]) -> Self {
        let mut t = Tokens {
            rest: s,
            tok: Tok::InitialDigit,
            value: b"",
            number: 0,
            suffix: 0,
        };
        t.digits();
        t
    }

    fn take_while(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self.rest.iter().take_while(|c| f(**c)).count();
        let (v, r) = self.rest.split_at(n);
        self.rest = r;
        v
    }

    fn digits(&mut self) {
        let v = self.take_while(|c| c.is_ascii_digit());
        self.value = v;
        self.number = v.iter().fold(0u64, |n, d| {
            n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
        });
        if v.is_empty() {
            self.tok = Tok::Invalid;
        }
    }

    fn next(&mut self) {
        let Some(&c) = self.rest.first() else {
            self.tok = Tok::End;
            return;
        };
        match c {
            b'a'..=b'z' => {
                if self.tok > Tok::Digit {
                    return self.invalid();
                }
                self.value = &self.rest[..1];
                self.rest = &self.rest[1..];
                self.tok = Tok::Letter;
            }
            b'.' | b'0'..=b'9' => {
                if c == b'.' {
                    if self.tok > Tok::Digit {
                        return self.invalid();
                    }
                    self.rest = &self.rest[1..];
                }
                self.tok = match self.tok {
                    Tok::InitialDigit | Tok::Digit => Tok::Digit,
                    Tok::Suffix => Tok::SuffixNo,
                    _ => return self.invalid(),
                };
                self.digits();
            }
            b'_' => {
                if self.tok > Tok::SuffixNo {
                    return self.invalid();
                }
                self.rest = &self.rest[1..];
                self.value = self.take_while(|c| c.is_ascii_lowercase());
                match suffix_rank(self.value) {
                    Some(r) => {
                        self.suffix = r;
                        self.tok = Tok::Suffix;
                    }
                    None => self.invalid(),
                }
            }
            b'~' => {
                if self.tok >= Tok::CommitHash {
                    return self.invalid();
                }
                self.rest = &self.rest[1..];
                self.value = self.take_while(|c| c.is_ascii_hexdigit());
                if self.value.is_empty() {
                    return self.invalid();
                }
                self.tok = Tok::CommitHash;
            }
            b'-' => {
                if self.tok >= Tok::RevisionNo || !self.rest.starts_with(b"-r") {
                    return self.invalid();
                }
                self.rest = &self.rest[2..];
                self.tok = Tok::RevisionNo;
                self.digits();
            }
            _ => self.invalid(),
        }
    }

    fn invalid(&mut self) {
        self.tok = Tok::Invalid;
    }
}

/// Byte-wise comparison, shorter first on a common prefix (apk's `apk_blob_sort`).
fn blob_sort(a: &[u8], b: &[u8]) -> Ordering {
    a.cmp(b)
}

fn token_cmp(a: &Tokens, b: &Tokens) -> Ordering {
    match a.tok {
        Tok::Digit if a.value.first() == Some(&b'0') || b.value.first() == Some(&b'0') => {
            blob_sort(a.value, b.value)
        }
        Tok::Digit | Tok::InitialDigit | Tok::SuffixNo | Tok::RevisionNo => a.number.cmp(&b.number),
        Tok::Letter => a.value[0].cmp(&b.value[0]),
        Tok::Suffix => a.suffix.cmp(&b.suffix),
        _ => blob_sort(a.value, b.value),
    }
}

fn compare_fuzzy(a: &str, b: &str, fuzzy: bool) -> Ordering {
    let mut ta = Tokens::new(a.as_bytes());
    let mut tb = Tokens::new(b.as_bytes());
    while ta.tok == tb.tok && ta.tok < Tok::End {
        let r = token_cmp(&ta, &tb);
        if r != Ordering::Equal {
            return r;
        }
        ta.next();
        tb.next();
    }
    if ta.tok == tb.tok || (fuzzy && tb.tok == Tok::End) {
        return Ordering::Equal;
    }
    // Equal so far: the longer version is newer unless it continues with a pre-release.
    if ta.tok == Tok::Suffix && ta.suffix < SUFFIX_NONE {
        return Ordering::Less;
    }
    if tb.tok == Tok::Suffix && tb.suffix < SUFFIX_NONE {
        return Ordering::Greater;
    }
    tb.tok.cmp(&ta.tok)
}

/// Compare two Alpine versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    compare_fuzzy(a, b, false)
}

/// Whether a string is a well-formed Alpine version.
pub fn is_valid(v: &str) -> bool {
    let mut t = Tokens::new(v.as_bytes());
    while t.tok < Tok::End {
        t.next();
    }
    t.tok == Tok::End
}

/// A version operator: any subset of {<, =, >}, optionally fuzzy (`~`: prefix match).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    pub less: bool,
    pub equal: bool,
    pub greater: bool,
    pub fuzzy: bool,
}

impl Op {
    pub const EQ: Op = Op {
        less: false,
        equal: true,
        greater: false,
        fuzzy: false,
    };

    fn parse(s: &str) -> Option<Op> {
        let mut op = Op {
            less: false,
            equal: false,
            greater: false,
            fuzzy: false,
        };
        for c in s.chars() {
            match c {
                '<' => op.less = true,
                '>' => op.greater = true,
                '=' => op.equal = true,
                '~' => {
                    op.fuzzy = true;
                    op.equal = true
                }
                _ => return None,
            }
        }
        (op.less || op.equal || op.greater).then_some(op)
    }

    /// Does version `v` satisfy `v OP want`?
    pub fn matches(self, v: &str, want: &str) -> bool {
        match compare_fuzzy(v, want, self.fuzzy) {
            Ordering::Less => self.less,
            Ordering::Equal => self.equal,
            Ordering::Greater => self.greater,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match (self.less, self.equal, self.greater, self.fuzzy) {
            (true, false, false, _) => "<",
            (true, true, false, false) => "<=",
            (true, true, false, true) => "<~",
            (false, true, false, true) => "~",
            (false, true, false, false) => "=",
            (false, true, true, false) => ">=",
            (false, true, true, true) => ">~",
            (false, false, true, _) => ">",
            _ => "?",
        };
        f.write_str(s)
    }
}

/// A dependency as written in an index or a world file: `[!]name[OP version]`.
/// `name` may be a package name or a virtual one (`so:libc.musl-x86_64.so.1`, `cmd:sh`,
/// `pc:zlib`, `/bin/sh`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dep {
    pub name: String,
    pub constraint: Option<(Op, String)>,
    /// `!name`: nothing providing `name` (in the version range) may be installed.
    pub conflict: bool,
}

impl Dep {
    pub fn parse(s: &str) -> Result<Dep, String> {
        let (conflict, body) = match s.strip_prefix('!') {
            Some(b) => (true, b),
            None => (false, s),
        };
        let split = body.find(['<', '>', '=', '~']);
        let (name, constraint) = match split {
            None => (body, None),
            Some(i) => {
                let (name, rest) = body.split_at(i);
                let op_len = rest
                    .find(|c: char| !matches!(c, '<' | '>' | '=' | '~'))
                    .unwrap_or(rest.len());
                let (op, ver) = rest.split_at(op_len);
                let op = Op::parse(op)
                    .ok_or_else(|| format!("dependency '{s}': bad operator '{op}'"))?;
                if ver.is_empty() {
                    return Err(format!("dependency '{s}': operator without a version"));
                }
                (name, Some((op, ver.to_string())))
            }
        };
        if name.is_empty() {
            return Err(format!("dependency '{s}' has no name"));
        }
        if name.contains('@') {
            return Err(format!(
                "dependency '{s}': repository tags (@tag) are not supported"
            ));
        }
        Ok(Dep {
            name: name.to_string(),
            constraint,
            conflict,
        })
    }

    /// Does a provider of `self.name` at version `v` (None: a provide without a version)
    /// satisfy the version part? A versionless provide satisfies only an unversioned dep.
    pub fn version_ok(&self, v: Option<&str>) -> bool {
        match (&self.constraint, v) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((op, want)), Some(v)) => op.matches(v, want),
        }
    }
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.conflict {
            f.write_str("!")?;
        }
        f.write_str(&self.name)?;
        if let Some((op, v)) = &self.constraint {
            write!(f, "{op}{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// apk-tools' own test vectors (test/version.data): "A OP B" per line, '#' comments.
    const VECTORS: &str = include_str!("version_vectors.txt");

    #[test]
    fn apk_tools_version_vectors() {
        let mut n = 0;
        for line in VECTORS.lines() {
            let line = line.split('#').next().unwrap().trim();
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            let (a, op, b) = (f[0], f[1], f[2]);
            let want = match op {
                "<" => Ordering::Less,
                "=" => Ordering::Equal,
                ">" => Ordering::Greater,
                _ => panic!("bad vector {line}"),
            };
            assert_eq!(compare(a, b), want, "{a} {op} {b}");
            assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
            n += 1;
        }
        assert!(n > 600, "only {n} vectors");
    }

    #[test]
    fn suffixes_revisions_and_hashes() {
        assert_eq!(compare("1.0_rc1", "1.0"), Ordering::Less);
        assert_eq!(compare("1.0_p1", "1.0"), Ordering::Greater);
        assert_eq!(compare("1.0-r1", "1.0"), Ordering::Greater);
        // apk ranks a commit hash below a revision: the hash-less build is older.
        assert_eq!(compare("1.0~abc-r0", "1.0-r0"), Ordering::Greater);
        assert_eq!(compare("1.0~abc", "1.0"), Ordering::Greater);
        assert_eq!(compare("1.0_git20220101-r0", "1.0-r0"), Ordering::Greater);
        assert!(is_valid("1.36.1-r29"));
        assert!(is_valid("2.4_pre20230101~1a2b-r3"));
        assert!(!is_valid("1.0bc"));
        assert!(!is_valid("1.0_foo"));
        assert!(!is_valid(""));
    }

    #[test]
    fn dependency_parsing_and_matching() {
        let d = Dep::parse("so:libc.musl-x86_64.so.1").unwrap();
        assert_eq!(d.name, "so:libc.musl-x86_64.so.1");
        assert!(d.constraint.is_none() && !d.conflict);
        let d = Dep::parse("alpine-baselayout-data=3.2.0-r23").unwrap();
        assert_eq!(d.name, "alpine-baselayout-data");
        assert!(d.version_ok(Some("3.2.0-r23")));
        assert!(!d.version_ok(Some("3.2.0-r22")));
        assert!(!d.version_ok(None));
        let d = Dep::parse("!busybox<1.30").unwrap();
        assert!(d.conflict);
        assert!(d.version_ok(Some("1.29.3")));
        assert!(!d.version_ok(Some("1.30")));
        let d = Dep::parse("musl>=1.2").unwrap();
        assert!(d.version_ok(Some("1.2.3-r0")));
        assert!(!d.version_ok(Some("1.1.24")));
        let d = Dep::parse("openssl~3.0").unwrap();
        assert!(d.version_ok(Some("3.0.8-r0")));
        assert!(!d.version_ok(Some("3.1.0-r0")));
        assert_eq!(d.to_string(), "openssl~3.0");
        assert!(Dep::parse("=1").is_err());
        assert!(Dep::parse("a>").is_err());
        assert!(Dep::parse("a@edge").is_err());
    }
}
