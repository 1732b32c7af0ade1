//! RPM version ordering and dependencies: `rpmvercmp` (alphanumeric segments, `~` sorting
//! before anything, `^` after the end but before anything else), epoch:version-release
//! comparison with rpm's release elision, versioned dependency matching (rpmdsCompare),
//! and rich (boolean) dependencies: `(a or b)`, `(a if b else c)`, `and`, `unless`,
//! `with`, `without`.

use std::cmp::Ordering;
use std::fmt;

use anyhow::{Result, bail};

use super::tags::sense;

/// rpm's `rpmvercmp` (lib/rpmvercmp.c), segment by segment.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        let (ca, cb) = (a.get(i).copied(), b.get(j).copied());
        // A tilde sorts before everything, even the end of the string.
        if ca == Some(b'~') || cb == Some(b'~') {
            if ca != Some(b'~') {
                return Ordering::Greater;
            }
            if cb != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // A caret sorts after the end of the string but before anything else.
        if ca == Some(b'^') || cb == Some(b'^') {
            if ca.is_none() {
                return Ordering::Less;
            }
            if cb.is_none() {
                return Ordering::Greater;
            }
            if ca != Some(b'^') {
                return Ordering::Greater;
            }
            if cb != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ca.is_none() || cb.is_none() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let class = |c: u8| {
            if numeric {
                c.is_ascii_digit()
            } else {
                c.is_ascii_alphabetic()
            }
        };
        let (si, sj) = (i, j);
        while i < a.len() && class(a[i]) {
            i += 1;
        }
        while j < b.len() && class(b[j]) {
            j += 1;
        }
        let (mut sa, mut sb) = (&a[si..i], &b[sj..j]);
        // Segments of different kinds: a number is newer than letters.
        if sb.is_empty() {
            return if numeric {
                Ordering::Greater
            } else {
                Ordering::Less
            };
        }
        if numeric {
            while sa.first() == Some(&b'0') {
                sa = &sa[1..];
            }
            while sb.first() == Some(&b'0') {
                sb = &sb[1..];
            }
            match sa.len().cmp(&sb.len()) {
                Ordering::Equal => {}
                o => return o,
            }
        }
        match sa.cmp(sb) {
            Ordering::Equal => {}
            o => return o,
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// An epoch:version-release. An empty release means "any release" when matching.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Evr {
    pub epoch: Option<u64>,
    pub version: String,
    pub release: String,
}

impl Evr {
    /// `[epoch:]version[-release]`, as dependency strings write it.
    pub fn parse(s: &str) -> Evr {
        let (epoch, rest) = match s.split_once(':') {
            Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => {
                (e.parse().ok(), r)
            }
            _ => (None, s),
        };
        let (version, release) = match rest.rsplit_once('-') {
            Some((v, r)) => (v.to_string(), r.to_string()),
            None => (rest.to_string(), String::new()),
        };
        Evr {
            epoch,
            version,
            release,
        }
    }

    /// Full ordering of two package EVRs (missing epoch = 0).
    pub fn cmp_full(&self, other: &Evr) -> Ordering {
        self.epoch
            .unwrap_or(0)
            .cmp(&other.epoch.unwrap_or(0))
            .then_with(|| rpmvercmp(&self.version, &other.version))
            .then_with(|| rpmvercmp(&self.release, &other.release))
    }

    /// Ordering for dependency matching: the release is compared only when both sides
    /// have one (`foo >= 1.2` is met by 1.2-3).
    pub fn cmp_dep(&self, other: &Evr) -> Ordering {
        let o = self
            .epoch
            .unwrap_or(0)
            .cmp(&other.epoch.unwrap_or(0))
            .then_with(|| rpmvercmp(&self.version, &other.version));
        if o != Ordering::Equal || self.release.is_empty() || other.release.is_empty() {
            return o;
        }
        rpmvercmp(&self.release, &other.release)
    }
}

impl fmt::Display for Evr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = self.epoch.filter(|e| *e > 0) {
            write!(f, "{e}:")?;
        }
        f.write_str(&self.version)?;
        if !self.release.is_empty() {
            write!(f, "-{}", self.release)?;
        }
        Ok(())
    }
}

/// One dependency (or provide): a name, and optionally a relation to an EVR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    /// RPMSENSE_LESS | GREATER | EQUAL bits; 0 = unversioned.
    pub flags: u32,
    pub evr: Evr,
}

impl Dep {
    pub fn new(name: &str, flags: u32, version: &str) -> Dep {
        Dep {
            name: name.to_string(),
            flags: flags & (sense::LESS | sense::GREATER | sense::EQUAL),
            evr: Evr::parse(version),
        }
    }

    /// `name`, `name >= 1.2`, `name = 1:2-3`, as users and rpm-md write them.
    pub fn parse(s: &str) -> Result<Dep> {
        let parts: Vec<&str> = s.split_whitespace().collect();
        match parts.as_slice() {
            [n] => Ok(Dep::new(n, 0, "")),
            [n, op, v] => Ok(Dep::new(n, op_flags(op)?, v)),
            _ => bail!("'{s}' is not a dependency (NAME or NAME OP VERSION)"),
        }
    }

    pub fn versioned(&self) -> bool {
        self.flags != 0 && !self.evr.version.is_empty()
    }

    /// Whether the provide `self` satisfies the requirement `req` (names equal, and the
    /// ranges overlap as rpmdsCompare decides).
    pub fn satisfies(&self, req: &Dep) -> bool {
        if self.name != req.name {
            return false;
        }
        // An unversioned side matches anything.
        if !self.versioned() || !req.versioned() {
            return true;
        }
        let (a, b) = (self.flags, req.flags);
        match self.evr.cmp_dep(&req.evr) {
            Ordering::Less => a & sense::GREATER != 0 || b & sense::LESS != 0,
            Ordering::Greater => a & sense::LESS != 0 || b & sense::GREATER != 0,
            Ordering::Equal => {
                (a & sense::EQUAL != 0 && b & sense::EQUAL != 0)
                    || (a & sense::LESS != 0 && b & sense::LESS != 0)
                    || (a & sense::GREATER != 0 && b & sense::GREATER != 0)
            }
        }
    }
}

fn op_flags(op: &str) -> Result<u32> {
    Ok(match op {
        "=" | "==" | "EQ" => sense::EQUAL,
        "<" | "LT" => sense::LESS,
        "<=" | "=<" | "LE" => sense::LESS | sense::EQUAL,
        ">" | "GT" => sense::GREATER,
        ">=" | "=>" | "GE" => sense::GREATER | sense::EQUAL,
        _ => bail!("unknown version relation '{op}'"),
    })
}

/// The relation's symbol (`>=`…) for messages.
pub fn flags_symbol(flags: u32) -> &'static str {
    let f = flags & (sense::LESS | sense::GREATER | sense::EQUAL);
    match f {
        x if x == sense::EQUAL => "=",
        x if x == sense::LESS => "<",
        x if x == sense::LESS | sense::EQUAL => "<=",
        x if x == sense::GREATER => ">",
        x if x == sense::GREATER | sense::EQUAL => ">=",
        _ => "",
    }
}

impl fmt::Display for Dep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.versioned() {
            write!(f, "{} {} {}", self.name, flags_symbol(self.flags), self.evr)
        } else {
            f.write_str(&self.name)
        }
    }
}

/// A rich (boolean) dependency, or a plain one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rich {
    Dep(Dep),
    And(Vec<Rich>),
    Or(Vec<Rich>),
    /// `a if cond [else b]`: `a` is needed when `cond` is installed, else `b` (if any).
    If(Box<Rich>, Box<Rich>, Option<Box<Rich>>),
    /// `a unless cond [else b]`.
    Unless(Box<Rich>, Box<Rich>, Option<Box<Rich>>),
    /// `a with b`: one package satisfying both.
    With(Vec<Rich>),
    /// `a without b`: a package satisfying `a` but not `b`.
    Without(Box<Rich>, Box<Rich>),
}

impl Rich {
    /// A requirement as rpm-md or a header names it: `(…)` is a rich dependency; anything
    /// else a plain `name [op evr]` whose parts come separately (`flags`, `version`).
    pub fn from_parts(name: &str, flags: u32, version: &str) -> Result<Rich> {
        if name.starts_with('(') {
            return Rich::parse(name);
        }
        Ok(Rich::Dep(Dep::new(name, flags, version)))
    }

    /// Parse `(a or (b >= 2 and c))`.
    pub fn parse(s: &str) -> Result<Rich> {
        let tokens = tokenize(s);
        let mut pos = 0;
        let r = parse_term(&tokens, &mut pos, s)?;
        if pos != tokens.len() {
            bail!("rich dependency '{s}': unexpected '{}'", tokens[pos]);
        }
        Ok(r)
    }

    /// Every plain dependency named anywhere in the expression.
    pub fn atoms(&self) -> Vec<&Dep> {
        let mut out = Vec::new();
        fn walk<'a>(r: &'a Rich, out: &mut Vec<&'a Dep>) {
            match r {
                Rich::Dep(d) => out.push(d),
                Rich::And(v) | Rich::Or(v) | Rich::With(v) => v.iter().for_each(|x| walk(x, out)),
                Rich::If(a, b, c) | Rich::Unless(a, b, c) => {
                    walk(a, out);
                    walk(b, out);
                    if let Some(c) = c {
                        walk(c, out);
                    }
                }
                Rich::Without(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
            }
        }
        walk(self, &mut out);
        out
    }
}

fn tokenize(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' | ')' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            }
            c if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

const OPS: [&str; 7] = ["and", "or", "if", "else", "unless", "with", "without"];

/// A term: `( expr )` or `name [op version]`.
fn parse_term(t: &[String], pos: &mut usize, s: &str) -> Result<Rich> {
    let Some(tok) = t.get(*pos) else {
        bail!("rich dependency '{s}' ends early");
    };
    if tok == "(" {
        *pos += 1;
        let first = parse_term(t, pos, s)?;
        let r = parse_ops(first, t, pos, s)?;
        if t.get(*pos).map(String::as_str) != Some(")") {
            bail!("rich dependency '{s}': missing ')'");
        }
        *pos += 1;
        return Ok(r);
    }
    if tok == ")" || OPS.contains(&tok.as_str()) {
        bail!("rich dependency '{s}': unexpected '{tok}'");
    }
    *pos += 1;
    let name = tok.clone();
    if let Some(op) = t.get(*pos).filter(|o| op_flags(o).is_ok()) {
        let flags = op_flags(op)?;
        let Some(v) = t.get(*pos + 1).filter(|v| *v != "(" && *v != ")") else {
            bail!("rich dependency '{s}': '{name} {op}' has no version");
        };
        *pos += 2;
        return Ok(Rich::Dep(Dep::new(&name, flags, v)));
    }
    Ok(Rich::Dep(Dep::new(&name, 0, "")))
}

/// The operators after the first term of a parenthesised expression. rpm allows one kind
/// of operator per level (`a and b and c`), and `if`/`unless` with an optional `else`.
fn parse_ops(first: Rich, t: &[String], pos: &mut usize, s: &str) -> Result<Rich> {
    let Some(op) = t.get(*pos).filter(|o| OPS.contains(&o.as_str())).cloned() else {
        return Ok(first);
    };
    *pos += 1;
    let second = parse_term(t, pos, s)?;
    match op.as_str() {
        "and" | "or" | "with" => {
            let mut items = vec![first, second];
            while t.get(*pos) == Some(&op) {
                *pos += 1;
                items.push(parse_term(t, pos, s)?);
            }
            Ok(match op.as_str() {
                "and" => Rich::And(items),
                "or" => Rich::Or(items),
                _ => Rich::With(items),
            })
        }
        "if" | "unless" => {
            let otherwise = if t.get(*pos).map(String::as_str) == Some("else") {
                *pos += 1;
                Some(Box::new(parse_term(t, pos, s)?))
            } else {
                None
            };
            let (a, c) = (Box::new(first), Box::new(second));
            Ok(if op == "if" {
                Rich::If(a, c, otherwise)
            } else {
                Rich::Unless(a, c, otherwise)
            })
        }
        "without" => Ok(Rich::Without(Box::new(first), Box::new(second))),
        _ => bail!("rich dependency '{s}': '{op}' without 'if' or 'unless'"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vercmp_follows_rpm() {
        use Ordering::*;
        for (a, b, o) in [
            ("1.0", "1.0", Equal),
            ("1.0", "2.0", Less),
            ("2.0.1", "2.0", Greater),
            ("1.0a", "1.0", Greater),
            ("1.0", "1.0a", Less),
            ("10", "9", Greater),
            ("001", "1", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~rc1", "1.0~rc2", Less),
            ("1.0^git1", "1.0", Greater),
            ("1.0^git1", "1.0.1", Less),
            ("1.0^", "1.0", Greater),
            ("a", "1", Less),
            ("1_0", "1.0", Equal),
            ("fc4", "fc.4", Equal),
            ("2.0", "2_0", Equal),
            ("5.5p1", "5.5p10", Less),
        ] {
            assert_eq!(rpmvercmp(a, b), o, "{a} vs {b}");
        }
    }

    #[test]
    fn deps_match_with_release_elision() {
        let p = Dep::new("foo", sense::EQUAL, "1:2.0-3.fc31");
        assert!(p.satisfies(&Dep::parse("foo").unwrap()));
        assert!(p.satisfies(&Dep::parse("foo >= 1:2.0").unwrap()));
        assert!(p.satisfies(&Dep::parse("foo = 1:2.0").unwrap()));
        // Epoch 1 is newer than any version without one.
        assert!(p.satisfies(&Dep::parse("foo >= 3.0").unwrap()));
        assert!(!p.satisfies(&Dep::parse("foo <= 3.0").unwrap()));
        assert!(!p.satisfies(&Dep::parse("foo < 1:2.0-3").unwrap()));
        assert!(!p.satisfies(&Dep::parse("foo > 1:2.0-3.fc31").unwrap()));
        assert!(!Dep::new("foo", sense::EQUAL, "1.0").satisfies(&Dep::parse("foo > 1.0").unwrap()));
        assert!(Dep::new("foo", 0, "").satisfies(&Dep::parse("foo > 9").unwrap()));
        assert!(!p.satisfies(&Dep::parse("bar").unwrap()));
    }

    #[test]
    fn rich_dependencies_parse() {
        let r = Rich::parse("(a or (b >= 2 and c))").unwrap();
        assert_eq!(
            r,
            Rich::Or(vec![
                Rich::Dep(Dep::parse("a").unwrap()),
                Rich::And(vec![
                    Rich::Dep(Dep::parse("b >= 2").unwrap()),
                    Rich::Dep(Dep::parse("c").unwrap())
                ])
            ])
        );
        let r = Rich::parse("(pam if systemd else shadow)").unwrap();
        assert!(matches!(r, Rich::If(_, _, Some(_))));
        assert_eq!(r.atoms().len(), 3);
        assert!(Rich::parse("(a or").is_err());
        assert!(Rich::parse("(a or b))").is_err());
        assert!(Rich::parse("(a >= )").is_err());
    }
}
